//! Replay stores for the server, over the one store layer ([`crate::store`]): in memory
//! (one instance), or Redis / Redis Cluster shared by instances — one `SET NX PX ttl` per
//! proof `jti` (`cada:jti:…`), per single-use grant at its acceptance (`cada:grant:…`) and
//! per revoked token id, followed by `WAIT` when `--store-ack` asks replicas to hold it.
//! Any store failure fails closed: the error (its text starts with the store's code,
//! e.g. `store.unavailable`) refuses the request.
use std::time::Duration;

use cada_attestation_verifier::replay::{MemoryReplayStore, ReplayStore};
use cada_attestation_verifier::UnixTime;

use crate::store::{keys, Store, StoreOptions};

/// Where `jti`s are remembered.
pub struct Replay {
    memory: Option<MemoryReplayStore>,
    store: Store,
}

impl Replay {
    /// The replay store of `store`: memory (holding at most `capacity` live entries) or its
    /// Redis.
    pub fn new(store: &Store, capacity: usize) -> Self {
        Replay {
            memory: store
                .redis()
                .is_none()
                .then(|| MemoryReplayStore::new(capacity)),
            store: store.clone(),
        }
    }

    /// The store a `--replay-store` option names (see [`crate::store::url`]) with default
    /// store options and a deadline of `timeout` per operation. A server opens its
    /// [`Store`] once (`StoreArgs::open`) and builds its replay store and fleet from it.
    pub fn from_option(option: &str, capacity: usize, timeout: Duration) -> Result<Self, String> {
        let store = Store::open(
            option,
            &StoreOptions {
                timeout,
                ..StoreOptions::default()
            },
        )
        .map_err(|e| e.to_string())?;
        Ok(Replay::new(&store, capacity))
    }

    /// The store underneath (its URL, metrics, health).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Records `key` until `until`: `Ok(true)` when new.
    pub async fn insert_new(
        &self,
        key: &[u8],
        until: UnixTime,
        now: UnixTime,
    ) -> Result<bool, String> {
        match (&self.memory, self.store.redis()) {
            (Some(m), _) => m.insert_new(key, until, now),
            (None, Some(r)) => r
                .claim(
                    "claim of a proof id",
                    &keys::jti(key),
                    until.as_millis().saturating_sub(now.as_millis()),
                )
                .await
                .map_err(|e| e.to_string()),
            (None, None) => Err("no store".into()),
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
        match (&self.memory, self.store.redis()) {
            (Some(m), _) => m.insert_new(key.as_bytes(), until, now),
            (None, Some(r)) => {
                if !keys::is_grant(key) {
                    return Err(format!("store.unavailable: {key:?} is not a grant's key"));
                }
                r.claim(
                    "claim of a single-use grant",
                    key,
                    until.as_millis().saturating_sub(now.as_millis()),
                )
                .await
                .map_err(|e| e.to_string())
            }
            (None, None) => Err("no store".into()),
        }
    }

    /// Whether `key` is held (and not expired).
    pub async fn contains(&self, key: &[u8], now: UnixTime) -> Result<bool, String> {
        match (&self.memory, self.store.redis()) {
            (Some(m), _) => m.contains(key, now),
            (None, Some(r)) => r.exists(&keys::jti(key)).await.map_err(|e| e.to_string()),
            (None, None) => Err("no store".into()),
        }
    }

    /// Whether the store answers.
    pub async fn ready(&self) -> Result<(), String> {
        self.store.ping().await.map_err(|e| e.to_string())
    }
}
