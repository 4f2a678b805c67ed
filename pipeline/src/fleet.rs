//! Behaviour limits of trust contracts, enforced by a fleet of verifiers together: requests
//! and refusals per window are counted in the store the fleet shares (Redis or Redis
//! Cluster through [`crate::store`], or memory for a single instance), and a contract that
//! crosses a limit is suspended for every instance until its owner signs a reinstatement
//! (`cada-owner reinstate`, `POST /v1/contracts/reinstate`).
//!
//! Windows are fixed: window `n` of a limit of `w` seconds is `[n·w, (n+1)·w)`. Keys (one
//! hash tag per contract, so a reinstatement deletes both in one slot):
//! `cada:cnt:{T}` (a hash: per kind `req`/`ref`, the current window and its count, kept two
//! windows) and `cada:susp:{T}` (the suspension record, kept until reinstated); `T` is
//! [`crate::store::keys::contract_tag`]. A store failure fails closed (the caller refuses).
use std::collections::HashMap;
use std::sync::Mutex;

use cada_contract::WindowLimit;

use crate::store::{keys, Store, StoreOptions};

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
pub struct Fleet {
    memory: Option<Mutex<Memory>>,
    store: Store,
}

/// Most counters held in memory before old ones are dropped.
const MAX_MEMORY_COUNTERS: usize = 100_000;

/// The key of a counter in memory.
fn memory_counter_key(kind: Count, dtc: &str, window: u64) -> String {
    format!("{}:{dtc}:{window}", kind.tag())
}

impl Fleet {
    /// The fleet state of `store`: memory, or its Redis.
    pub fn new(store: &Store) -> Self {
        Fleet {
            memory: store
                .redis()
                .is_none()
                .then(|| Mutex::new(Memory::default())),
            store: store.clone(),
        }
    }

    /// The store a `--replay-store` option names (the same store the fleet shares for
    /// replays): `memory` or a Redis URL (see [`crate::store::url`]), with default options
    /// and a deadline of `timeout` per operation. A server opens its [`Store`] once and
    /// builds its replay store and fleet from it ([`Fleet::new`]).
    pub fn from_option(option: &str, timeout: std::time::Duration) -> Result<Self, String> {
        let store = Store::open(
            option,
            &StoreOptions {
                timeout,
                ..StoreOptions::default()
            },
        )
        .map_err(|e| e.to_string())?;
        Ok(Fleet::new(&store))
    }

    fn memory(&self) -> Result<Option<std::sync::MutexGuard<'_, Memory>>, String> {
        match &self.memory {
            None => Ok(None),
            Some(m) => m
                .lock()
                .map(Some)
                .map_err(|_| "fleet state unavailable".to_string()),
        }
    }

    /// Why `dtc` is suspended, if it is.
    pub async fn suspended(&self, dtc: &str) -> Result<Option<String>, String> {
        if let Some(m) = self.memory()? {
            return Ok(m.suspended.get(dtc).cloned());
        }
        let Some(r) = self.store.redis() else {
            return Err("no store".into());
        };
        r.get(&keys::suspension(dtc), Some(&keys::legacy_suspension(dtc)))
            .await
            .map_err(|e| e.to_string())
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
        if let Some(mut g) = self.memory()? {
            let key = memory_counter_key(kind, dtc, window);
            if g.counters.len() >= MAX_MEMORY_COUNTERS && !g.counters.contains_key(&key) {
                g.counters.clear();
            }
            let n = g.counters.entry(key).or_insert(0);
            *n += 1;
            return Ok(*n);
        }
        let Some(r) = self.store.redis() else {
            return Err("no store".into());
        };
        let ttl_ms = limit
            .window_seconds
            .max(1)
            .saturating_mul(2)
            .saturating_mul(1000);
        r.count(&keys::counters(dtc), kind.tag(), window, ttl_ms)
            .await
            .map_err(|e| e.to_string())
    }

    /// Suspends `dtc` for every instance, with `reason`, unless it is suspended already:
    /// `Ok(true)` if this call suspended it. A suspension in force is never replaced, so
    /// that its id — what the owner's reinstatement names — stays the same until it is
    /// lifted (refusals past the limit kept replacing it with a new id, and the owner's
    /// reinstatement of the id it had read was refused as another suspension's).
    pub async fn suspend(&self, dtc: &str, reason: &str) -> Result<bool, String> {
        if let Some(mut g) = self.memory()? {
            return match g.suspended.entry(dtc.to_owned()) {
                std::collections::hash_map::Entry::Occupied(_) => Ok(false),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(reason.to_owned());
                    Ok(true)
                }
            };
        }
        let Some(r) = self.store.redis() else {
            return Err("no store".into());
        };
        // On a single Redis a suspension under the name from before issue 26 stays in
        // force: it is not replaced either.
        if self.store.url().is_cluster() {
            return r
                .set_new("suspension", &keys::suspension(dtc), reason)
                .await
                .map_err(|e| e.to_string());
        }
        if r.get(&keys::suspension(dtc), Some(&keys::legacy_suspension(dtc)))
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Ok(false);
        }
        r.set_new("suspension", &keys::suspension(dtc), reason)
            .await
            .map_err(|e| e.to_string())
    }

    /// Lifts the suspension of `dtc` and forgets its counters; `Ok(true)` if it was
    /// suspended.
    pub async fn reinstate(&self, dtc: &str) -> Result<bool, String> {
        if let Some(mut g) = self.memory()? {
            let marker = format!(":{dtc}:");
            g.counters.retain(|k, _| !k.contains(&marker));
            return Ok(g.suspended.remove(dtc).is_some());
        }
        let Some(r) = self.store.redis() else {
            return Err("no store".into());
        };
        // One DEL of the contract's two keys (one slot); the suspension's old name too on a
        // single Redis.
        let was = self.suspended(dtc).await.map(|s| s.is_some())?;
        r.delete(
            &[keys::counters(dtc), keys::suspension(dtc)],
            &[keys::legacy_suspension(dtc)],
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(was)
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
