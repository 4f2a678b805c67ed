//! Replay detection for proof `jti`s.
//!
//! The in-memory store keeps a 128-bit digest of `(jkt, jti)` and an expiry per entry in a
//! sharded hash map (about 32 bytes per live entry). When full of live entries it refuses new
//! proofs rather than forgetting old ones: a replay cache that drops entries lets replays in.
use std::collections::HashMap;
use std::sync::Mutex;

use aws_lc_rs::digest;

use crate::UnixTime;

/// Where used `jti`s are remembered.
pub trait ReplayStore: Send + Sync {
    /// Records `key` until `expires`. `Ok(true)` if it was new, `Ok(false)` if seen before,
    /// `Err` if the store cannot answer (callers then refuse the proof: fail closed).
    fn insert_new(&self, key: &[u8], expires: UnixTime, now: UnixTime) -> Result<bool, String>;

    /// Forgets `key`, which this caller's [`ReplayStore::insert_new`] set a moment ago: a
    /// single-use grant given back by a request refused before it was accepted (nothing of a
    /// refused request is consumed). `Err` when the store cannot; the key then stays set
    /// (fails closed). A store that cannot give keys back keeps this default.
    fn remove(&self, key: &[u8]) -> Result<(), String> {
        let _ = key;
        Err("this replay store cannot give a key back".into())
    }
}

const SHARDS: usize = 16;

/// Bounded in-memory replay store.
pub struct MemoryReplayStore {
    shards: Vec<Mutex<HashMap<u128, u64>>>,
    per_shard_capacity: usize,
}

impl MemoryReplayStore {
    /// A store for at most `capacity` live entries.
    pub fn new(capacity: usize) -> Self {
        MemoryReplayStore {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard_capacity: capacity.div_ceil(SHARDS).max(1),
        }
    }

    /// Live and not-yet-swept entries.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `key` is held and not expired at `now` (for marks such as revoked token ids).
    pub fn contains(&self, key: &[u8], now: UnixTime) -> Result<bool, String> {
        let h = digest128(key);
        let shard = &self.shards[(h as usize) % SHARDS];
        let m = shard
            .lock()
            .map_err(|_| "replay store lock poisoned".to_string())?;
        Ok(m.get(&h).is_some_and(|exp| *exp >= now.as_millis()))
    }
}

impl MemoryReplayStore {
    /// Forgets `key` (see [`ReplayStore::remove`]): whether it was held.
    pub fn forget(&self, key: &[u8]) -> Result<bool, String> {
        let h = digest128(key);
        let shard = &self.shards[(h as usize) % SHARDS];
        let mut m = shard
            .lock()
            .map_err(|_| "replay store lock poisoned".to_string())?;
        Ok(m.remove(&h).is_some())
    }
}

impl Default for MemoryReplayStore {
    fn default() -> Self {
        MemoryReplayStore::new(1 << 20)
    }
}

fn digest128(key: &[u8]) -> u128 {
    let d = digest::digest(&digest::SHA256, key);
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    u128::from_le_bytes(b)
}

impl ReplayStore for MemoryReplayStore {
    fn insert_new(&self, key: &[u8], expires: UnixTime, now: UnixTime) -> Result<bool, String> {
        let h = digest128(key);
        let shard = &self.shards[(h as usize) % SHARDS];
        let mut m = shard
            .lock()
            .map_err(|_| "replay store lock poisoned".to_string())?;
        if let Some(&exp) = m.get(&h) {
            if exp >= now.as_millis() {
                return Ok(false);
            }
        }
        if m.len() >= self.per_shard_capacity {
            let now_ms = now.as_millis();
            m.retain(|_, exp| *exp >= now_ms);
            if m.len() >= self.per_shard_capacity {
                return Err("replay cache is full of live entries; refusing new proofs".into());
            }
        }
        m.insert(h, expires.as_millis());
        Ok(true)
    }

    fn remove(&self, key: &[u8]) -> Result<(), String> {
        self.forget(key).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_insert_is_a_replay_until_expiry() {
        let s = MemoryReplayStore::new(64);
        let t = UnixTime::from_secs(100);
        assert_eq!(s.insert_new(b"a", UnixTime::from_secs(130), t), Ok(true));
        assert_eq!(
            s.insert_new(b"a", UnixTime::from_secs(130), UnixTime::from_secs(129)),
            Ok(false)
        );
        assert_eq!(
            s.insert_new(b"a", UnixTime::from_secs(200), UnixTime::from_secs(131)),
            Ok(true)
        );
    }

    #[test]
    fn full_store_refuses_instead_of_forgetting() {
        let s = MemoryReplayStore::new(SHARDS); // one entry per shard
        let t = UnixTime::from_secs(100);
        let exp = UnixTime::from_secs(1000);
        let mut refused = 0;
        for i in 0..200u32 {
            match s.insert_new(&i.to_be_bytes(), exp, t) {
                Ok(true) => {}
                Err(_) => refused += 1,
                Ok(false) => panic!("distinct keys collided"),
            }
        }
        assert!(refused > 150, "{refused}");
        // once entries expire, room comes back
        assert_eq!(
            s.insert_new(b"new", UnixTime::from_secs(3000), UnixTime::from_secs(2000)),
            Ok(true)
        );
    }
}
