//! Replay stores for the server: in memory (one instance) or Redis (shared by instances,
//! one atomic `SET key 1 NX PX ttl` per proof, and per single-use grant at its acceptance).
//! Any store failure fails closed.
use std::time::Duration;

use cada_attestation_verifier::replay::{MemoryReplayStore, ReplayStore};
use cada_attestation_verifier::UnixTime;
use tokio::sync::Mutex;

/// Where `jti`s are remembered.
pub enum Replay {
    /// This process only.
    Memory(MemoryReplayStore),
    /// Shared through Redis.
    Redis(RedisReplay),
}

/// Redis-backed replay store with a lazily (re)established connection.
pub struct RedisReplay {
    client: redis::Client,
    conn: Mutex<Option<redis::aio::ConnectionManager>>,
    timeout: Duration,
}

impl RedisReplay {
    /// For a `redis://` or `redis+unix://` URL.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("--replay-store {url}: {e}"))?;
        Ok(RedisReplay {
            client,
            conn: Mutex::new(None),
            timeout,
        })
    }

    /// The connection (established on first use) and the per-command timeout.
    pub(crate) async fn connection(&self) -> Result<redis::aio::ConnectionManager, String> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1);
        let c = tokio::time::timeout(
            self.timeout * 2,
            redis::aio::ConnectionManager::new_with_config(self.client.clone(), cfg),
        )
        .await
        .map_err(|_| "Redis connection timed out".to_string())?
        .map_err(|e| format!("Redis unreachable: {e}"))?;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// The per-command timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The Redis key of `key`.
    fn redis_key(key: &[u8]) -> String {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key);
        format!("cada:jti:{}", hex::encode(&digest.as_ref()[..20]))
    }

    /// `EXISTS key`.
    pub async fn contains(&self, key: &[u8]) -> Result<bool, String> {
        let mut c = self.connection().await?;
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(Self::redis_key(key));
        match tokio::time::timeout(self.timeout, cmd.query_async::<u64>(&mut c)).await {
            Ok(Ok(n)) => Ok(n > 0),
            Ok(Err(e)) => Err(format!("Redis error: {e}")),
            Err(_) => Err("Redis did not answer in time".into()),
        }
    }

    /// `SET key 1 NX PX ttl`: `Ok(true)` when new.
    pub async fn insert_new(&self, key: &[u8], ttl_ms: u64) -> Result<bool, String> {
        self.set_nx(&Self::redis_key(key), ttl_ms).await
    }

    /// `SET k 1 NX PX ttl` of the Redis key `k` as given: `Ok(true)` when new.
    async fn set_nx(&self, k: &str, ttl_ms: u64) -> Result<bool, String> {
        let mut c = self.connection().await?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(k).arg(1).arg("NX").arg("PX").arg(ttl_ms.max(1));
        match tokio::time::timeout(self.timeout, cmd.query_async::<Option<String>>(&mut c)).await {
            Ok(Ok(r)) => Ok(r.is_some()),
            Ok(Err(e)) => Err(format!("Redis error: {e}")),
            Err(_) => Err("Redis did not answer in time".into()),
        }
    }

    /// `PING`, for readiness.
    pub async fn ping(&self) -> Result<(), String> {
        let mut c = self.connection().await?;
        match tokio::time::timeout(
            self.timeout,
            redis::cmd("PING").query_async::<String>(&mut c),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("Redis did not answer in time".into()),
        }
    }
}

impl Replay {
    /// The store a `--replay-store` option names: `memory` (holding at most `capacity` live
    /// entries) or a Redis URL (`redis://HOST:PORT`, `redis+unix:///PATH`).
    pub fn from_option(option: &str, capacity: usize, timeout: Duration) -> Result<Self, String> {
        if option == "memory" {
            Ok(Replay::Memory(MemoryReplayStore::new(capacity)))
        } else if option.starts_with("redis") {
            RedisReplay::new(option, timeout).map(Replay::Redis)
        } else {
            Err(format!(
                "--replay-store {option:?}: use memory or redis://HOST:PORT"
            ))
        }
    }

    /// Records `key` until `until`.
    pub async fn insert_new(
        &self,
        key: &[u8],
        until: UnixTime,
        now: UnixTime,
    ) -> Result<bool, String> {
        match self {
            Replay::Memory(m) => m.insert_new(key, until, now),
            Replay::Redis(r) => {
                r.insert_new(key, until.as_millis().saturating_sub(now.as_millis()))
                    .await
            }
        }
    }

    /// Consumes a single-use grant ([`cada_attestation_verifier::grants::SingleUse`]): its
    /// key (`cada:grant:…`, stored under that very name in Redis) is set until `until` if it
    /// was not set; `Ok(true)` for the first use in the fleet, `Ok(false)` when it was used.
    pub async fn consume_grant(
        &self,
        key: &str,
        until: UnixTime,
        now: UnixTime,
    ) -> Result<bool, String> {
        match self {
            Replay::Memory(m) => m.insert_new(key.as_bytes(), until, now),
            Replay::Redis(r) => {
                r.set_nx(key, until.as_millis().saturating_sub(now.as_millis()))
                    .await
            }
        }
    }

    /// Whether `key` is held (and not expired).
    pub async fn contains(&self, key: &[u8], now: UnixTime) -> Result<bool, String> {
        match self {
            Replay::Memory(m) => m.contains(key, now),
            Replay::Redis(r) => r.contains(key).await,
        }
    }

    /// Whether the store answers.
    pub async fn ready(&self) -> Result<(), String> {
        match self {
            Replay::Memory(_) => Ok(()),
            Replay::Redis(r) => r.ping().await,
        }
    }
}
