//! Behaviour limits of trust contracts, enforced by a fleet of verifiers together: requests
//! and refusals per window are counted in the store the fleet shares (Redis, or memory for a
//! single instance), and a contract that crosses a limit is suspended for every instance
//! until its owner signs a reinstatement (`cada-owner reinstate`, `POST
//! /v1/contracts/reinstate`).
//!
//! Windows are fixed: window `n` of a limit of `w` seconds is `[n·w, (n+1)·w)`. Keys:
//! `cada:cnt:{req|ref}:<dtc>:<n>` (INCR, expiring after two windows) and `cada:susp:<dtc>`
//! (the reason, kept until reinstated). A store failure fails closed (the caller refuses).
use std::collections::HashMap;
use std::sync::Mutex;

use cada_contract::WindowLimit;

use crate::replay::RedisReplay;

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Accepted proofs.
    Requests,
    /// Refused proofs that named the contract.
    Refusals,
}

impl Count {
    fn tag(self) -> &'static str {
        match self {
            Count::Requests => "req",
            Count::Refusals => "ref",
        }
    }
}

#[derive(Default)]
struct Memory {
    counters: HashMap<String, u64>,
    suspended: HashMap<String, String>,
}

/// Where the fleet's counters and suspensions live.
pub enum Fleet {
    /// This process only.
    Memory(Mutex<MemoryState>),
    /// Shared through Redis.
    Redis(RedisReplay),
}

/// The in-memory state (opaque).
pub struct MemoryState(Memory);

/// Most counters held in memory before old ones are dropped.
const MAX_MEMORY_COUNTERS: usize = 100_000;

fn counter_key(kind: Count, dtc: &str, window: u64) -> String {
    format!("cada:cnt:{}:{dtc}:{window}", kind.tag())
}

fn suspension_key(dtc: &str) -> String {
    format!("cada:susp:{dtc}")
}

/// Awaits one Redis command within `timeout`; errors as text.
async fn within<T>(
    timeout: std::time::Duration,
    run: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("Redis error: {e}")),
        Err(_) => Err("Redis did not answer in time".into()),
    }
}

impl Fleet {
    /// The store a `--replay-store` option names (the same store the fleet shares for
    /// replays): `memory` or a Redis URL.
    pub fn from_option(option: &str, timeout: std::time::Duration) -> Result<Self, String> {
        if option == "memory" {
            Ok(Fleet::Memory(Mutex::new(MemoryState(Memory::default()))))
        } else {
            RedisReplay::new(option, timeout).map(Fleet::Redis)
        }
    }

    /// Why `dtc` is suspended, if it is.
    pub async fn suspended(&self, dtc: &str) -> Result<Option<String>, String> {
        match self {
            Fleet::Memory(m) => Ok(m
                .lock()
                .map_err(|_| "fleet state unavailable".to_string())?
                .0
                .suspended
                .get(dtc)
                .cloned()),
            Fleet::Redis(r) => {
                let mut c = r.connection().await?;
                let cmd = redis::cmd("GET").arg(suspension_key(dtc)).clone();
                within(r.timeout(), cmd.query_async::<Option<String>>(&mut c)).await
            }
        }
    }

    /// Counts one event against `limit` in the window of `now_s`; returns the count so far
    /// in that window (this one included).
    pub async fn count(
        &self,
        kind: Count,
        dtc: &str,
        limit: WindowLimit,
        now_s: u64,
    ) -> Result<u64, String> {
        let window = now_s / limit.window_seconds.max(1);
        let key = counter_key(kind, dtc, window);
        match self {
            Fleet::Memory(m) => {
                let mut g = m
                    .lock()
                    .map_err(|_| "fleet state unavailable".to_string())?;
                if g.0.counters.len() >= MAX_MEMORY_COUNTERS && !g.0.counters.contains_key(&key) {
                    g.0.counters.clear();
                }
                let n = g.0.counters.entry(key).or_insert(0);
                *n += 1;
                Ok(*n)
            }
            Fleet::Redis(r) => {
                let mut c = r.connection().await?;
                let ttl = limit.window_seconds.saturating_mul(2).max(1);
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .incr(&key, 1u64)
                    .expire(&key, i64::try_from(ttl).unwrap_or(i64::MAX));
                within(r.timeout(), pipe.query_async::<(u64, i64)>(&mut c))
                    .await
                    .map(|(n, _)| n)
            }
        }
    }

    /// Suspends `dtc` for every instance, with `reason`, unless it is suspended already:
    /// `Ok(true)` if this call suspended it. A suspension in force is never replaced, so
    /// that its id — what the owner's reinstatement names — stays the same until it is
    /// lifted (refusals past the limit kept replacing it with a new id, and the owner's
    /// reinstatement of the id it had read was refused as another suspension's).
    pub async fn suspend(&self, dtc: &str, reason: &str) -> Result<bool, String> {
        match self {
            Fleet::Memory(m) => {
                let mut g = m
                    .lock()
                    .map_err(|_| "fleet state unavailable".to_string())?;
                match g.0.suspended.entry(dtc.to_owned()) {
                    std::collections::hash_map::Entry::Occupied(_) => Ok(false),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(reason.to_owned());
                        Ok(true)
                    }
                }
            }
            Fleet::Redis(r) => {
                let mut c = r.connection().await?;
                let cmd = redis::cmd("SET")
                    .arg(suspension_key(dtc))
                    .arg(reason)
                    .arg("NX")
                    .clone();
                within(r.timeout(), cmd.query_async::<Option<String>>(&mut c))
                    .await
                    .map(|set| set.is_some())
            }
        }
    }

    /// Lifts the suspension of `dtc` and forgets its counters; `Ok(true)` if it was
    /// suspended.
    pub async fn reinstate(&self, dtc: &str) -> Result<bool, String> {
        match self {
            Fleet::Memory(m) => {
                let mut g = m
                    .lock()
                    .map_err(|_| "fleet state unavailable".to_string())?;
                let marker = format!(":{dtc}:");
                g.0.counters.retain(|k, _| !k.contains(&marker));
                Ok(g.0.suspended.remove(dtc).is_some())
            }
            Fleet::Redis(r) => {
                let mut c = r.connection().await?;
                let t = r.timeout();
                let mut keys: Vec<String> = Vec::new();
                // SCAN, not KEYS: reinstatement must not block a shared Redis.
                for kind in [Count::Requests, Count::Refusals] {
                    let pattern = format!("cada:cnt:{}:{dtc}:*", kind.tag());
                    let mut cursor = 0u64;
                    for _ in 0..10_000 {
                        let cmd = redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(1000)
                            .clone();
                        match tokio::time::timeout(t, cmd.query_async::<(u64, Vec<String>)>(&mut c))
                            .await
                        {
                            Ok(Ok((next, k))) => {
                                keys.extend(k);
                                cursor = next;
                            }
                            Ok(Err(e)) => return Err(format!("Redis error: {e}")),
                            Err(_) => return Err("Redis did not answer in time".into()),
                        }
                        if cursor == 0 {
                            break;
                        }
                    }
                }
                keys.push(suspension_key(dtc));
                let cmd = redis::cmd("DEL").arg(&keys[..keys.len() - 1]).clone();
                if keys.len() > 1 {
                    match tokio::time::timeout(t, cmd.query_async::<i64>(&mut c)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(format!("Redis error: {e}")),
                        Err(_) => return Err("Redis did not answer in time".into()),
                    }
                }
                let cmd = redis::cmd("DEL").arg(suspension_key(dtc)).clone();
                match tokio::time::timeout(t, cmd.query_async::<i64>(&mut c)).await {
                    Ok(Ok(n)) => Ok(n > 0),
                    Ok(Err(e)) => Err(format!("Redis error: {e}")),
                    Err(_) => Err("Redis did not answer in time".into()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_suspension_in_force_keeps_its_id_until_it_is_lifted() {
        let f = Fleet::from_option("memory", std::time::Duration::from_secs(1)).unwrap();
        assert!(f.suspend("d", r#"{"id":"s1"}"#).await.unwrap());
        // More refusals past the limit suspend it again: the first suspension stays, so
        // the owner's reinstatement of s1 still names the one in force.
        assert!(!f.suspend("d", r#"{"id":"s2"}"#).await.unwrap());
        assert_eq!(f.suspended("d").await.unwrap().unwrap(), r#"{"id":"s1"}"#);
        assert!(f.reinstate("d").await.unwrap());
        assert!(f.suspend("d", r#"{"id":"s3"}"#).await.unwrap());
        assert_eq!(f.suspended("d").await.unwrap().unwrap(), r#"{"id":"s3"}"#);
    }
}
