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

/// A single-use grant consumed by this instance ([`Replay::claim_grant`]), to give back if
/// its request is refused after all ([`Replay::release_grant`]).
#[derive(Debug)]
pub struct GrantClaim {
    key: String,
    /// The value the Redis claim wrote (memory: none).
    value: Option<String>,
}

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

    /// Consumes a single-use grant as [`Replay::consume_grant`] does, keeping what is needed
    /// to give it back ([`Replay::release_grant`]) should the request that took it be
    /// refused after all (another of its grants used: nothing of a refused request is
    /// consumed). `Ok(None)` when it was used.
    pub async fn claim_grant(
        &self,
        key: &str,
        until: UnixTime,
        now: UnixTime,
    ) -> Result<Option<GrantClaim>, String> {
        match (&self.memory, self.store.redis()) {
            (Some(m), _) => Ok(m
                .insert_new(key.as_bytes(), until, now)?
                .then(|| GrantClaim {
                    key: key.to_owned(),
                    value: None,
                })),
            (None, Some(r)) => {
                if !keys::is_grant(key) {
                    return Err(format!("store.unavailable: {key:?} is not a grant's key"));
                }
                let held = r
                    .claim_held(
                        "claim of a single-use grant",
                        key,
                        until.as_millis().saturating_sub(now.as_millis()),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(held.map(|value| GrantClaim {
                    key: key.to_owned(),
                    value: Some(value),
                }))
            }
            (None, None) => Err("no store".into()),
        }
    }

    /// Gives back a grant this instance claimed ([`Replay::claim_grant`]): in Redis only
    /// while the key still holds this claim's value. An error leaves it used (fails
    /// closed).
    pub async fn release_grant(&self, claim: GrantClaim) -> Result<(), String> {
        match (&self.memory, self.store.redis(), claim.value) {
            (Some(m), _, _) => m.forget(claim.key.as_bytes()).map(|_| ()),
            (None, Some(r), Some(value)) => r
                .release("release of a single-use grant", &claim.key, &value)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            _ => Err("no store holds this claim".into()),
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

    /// The start (Unix ms) of the store's latest epoch when it is known to have lost its
    /// memory ([`Store::epoch_start`]).
    pub fn epoch_start(&self) -> Option<u64> {
        self.store.epoch_start()
    }

    /// The epoch start (Unix ms) of the slot holding the proof id `key`
    /// ([`Store::epoch_for`]), if that slot lost its memory.
    pub fn epoch_of_jti(&self, key: &[u8]) -> Option<u64> {
        self.store.epoch_for(&keys::jti(key))
    }

    /// The epoch start (Unix ms) of the slot holding the grant key `key`
    /// ([`Store::epoch_for`]), if that slot lost its memory.
    pub fn epoch_of_grant(&self, key: &str) -> Option<u64> {
        self.store.epoch_for(key)
    }

    /// Whether the store answers.
    pub async fn ready(&self) -> Result<(), String> {
        self.store.ping().await.map_err(|e| e.to_string())
    }
}
