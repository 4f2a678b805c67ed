//! The bound on store operations in flight (`--store-max-in-flight`), kept per master
//! (review stores-1 finding 4): a master that hangs (partitioned, paused, swapping) holds
//! each of its operations for the whole deadline, and with one bound for the process those
//! operations filled it, so that requests for healthy slots were refused `store.busy` too —
//! one slot down failed the instance. Here each master of a cluster has its own `N` places,
//! found by the slot of the operation's key in the cluster's slot map (`CLUSTER SLOTS`,
//! read when the first connection is made and again at most every [`REFRESH`] while
//! operations run); operations whose master is not known (one Redis, a cluster whose map
//! could not be read yet, a slot no master serves, a command without a key) share one more
//! group of `N`. The process holds at most `N` × (masters + 1) operations in all.
//!
//! A map read before a failover or a resharding counts a moved slot's operations against
//! its former master until the next read (at most [`REFRESH`] plus one round trip later):
//! the bound still holds; only which group pays for them lags.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How often the slot map is read again while operations run.
pub(crate) const REFRESH: Duration = Duration::from_secs(1);

/// Most ranges a `CLUSTER SLOTS` answer may hold (one per slot at worst).
const MAX_RANGES: usize = 16_384;

/// The slot map as last read, and the places of each master in it.
struct Map {
    /// `(first slot, last slot, master)`, sorted by first slot.
    ranges: Vec<(u16, u16, String)>,
    /// Places per master (by its node id, or `ip:port` when the answer has no id).
    groups: HashMap<String, Arc<Semaphore>>,
    /// When the map was last read (or a read was last tried); `None`: never.
    read_at: Option<Instant>,
    /// A read is under way.
    reading: bool,
}

/// The places of every master, and of operations whose master is not known.
pub(crate) struct Bounds {
    per_master: usize,
    unknown: Arc<Semaphore>,
    map: Mutex<Map>,
}

/// A place among the operations in flight, until dropped.
pub(crate) struct Place {
    _permit: OwnedSemaphorePermit,
}

/// The group of the operation's master (or the shared group) has no place free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Full {
    /// The bound of that group (`--store-max-in-flight`).
    pub max: usize,
}

impl Bounds {
    /// `per_master` places (at least one) for each master, and as many for operations whose
    /// master is not known.
    pub(crate) fn new(per_master: usize) -> Self {
        let per_master = per_master.max(1);
        Bounds {
            per_master,
            unknown: Arc::new(Semaphore::new(per_master)),
            map: Mutex::new(Map {
                ranges: Vec::new(),
                groups: HashMap::new(),
                read_at: None,
                reading: false,
            }),
        }
    }

    /// A place for an operation on `slot` (`None`: no key, or one Redis), refused at once
    /// when the group of the slot's master is full.
    pub(crate) fn acquire(&self, slot: Option<u16>) -> Result<Place, Full> {
        let places = self.group_of(slot);
        places
            .try_acquire_owned()
            .map(|p| Place { _permit: p })
            .map_err(|_| Full {
                max: self.per_master,
            })
    }

    /// The places of the group `slot` falls in.
    fn group_of(&self, slot: Option<u16>) -> Arc<Semaphore> {
        let Some(slot) = slot else {
            return self.unknown.clone();
        };
        let Ok(m) = self.map.lock() else {
            return self.unknown.clone();
        };
        let i = m.ranges.partition_point(|(first, _, _)| *first <= slot);
        i.checked_sub(1)
            .and_then(|i| m.ranges.get(i))
            .filter(|(_, last, _)| slot <= *last)
            .and_then(|(_, _, node)| m.groups.get(node))
            .map_or_else(|| self.unknown.clone(), Arc::clone)
    }

    /// Places free in the group of `slot`.
    #[cfg(test)]
    pub(crate) fn available(&self, slot: Option<u16>) -> usize {
        self.group_of(slot).available_permits()
    }

    /// Whether the slot map was never read.
    pub(crate) fn never_read(&self) -> bool {
        self.map.lock().map_or(true, |m| m.read_at.is_none())
    }

    /// Whether a read of the map is due (never read, or read [`REFRESH`] ago, and none
    /// under way); if so the caller reads it and calls [`Self::install`] or
    /// [`Self::read_failed`].
    pub(crate) fn start_read(&self, now: Instant) -> bool {
        let Ok(mut m) = self.map.lock() else {
            return false;
        };
        let due = m
            .read_at
            .is_none_or(|at| now.saturating_duration_since(at) >= REFRESH);
        if m.reading || !due {
            return false;
        }
        m.reading = true;
        true
    }

    /// A read of the map failed: the groups stay as they were; the next read is due
    /// [`REFRESH`] later (operations meanwhile count as before).
    pub(crate) fn read_failed(&self, now: Instant) {
        if let Ok(mut m) = self.map.lock() {
            m.reading = false;
            m.read_at = Some(now);
        }
    }

    /// The map read: each master keeps its places (and the operations holding them); a
    /// master new to the map gets `N`, one gone from it loses its group (operations still
    /// holding its places give them back to nobody).
    pub(crate) fn install(&self, mut ranges: Vec<(u16, u16, String)>, now: Instant) {
        let Ok(mut m) = self.map.lock() else { return };
        ranges.sort_unstable_by_key(|r| r.0);
        let mut groups = HashMap::new();
        for (_, _, node) in &ranges {
            if groups.contains_key(node) {
                continue;
            }
            let g = m
                .groups
                .remove(node)
                .unwrap_or_else(|| Arc::new(Semaphore::new(self.per_master)));
            groups.insert(node.clone(), g);
        }
        m.ranges = ranges;
        m.groups = groups;
        m.read_at = Some(now);
        m.reading = false;
    }
}

/// The masters' slot ranges in a `CLUSTER SLOTS` answer: `(first, last, master)` where the
/// master is named by its node id (Redis 4+), else by `ip:port`. Entries that do not have
/// that shape are skipped; `None` when the answer is not an array.
pub(crate) fn parse_cluster_slots(v: &redis::Value) -> Option<Vec<(u16, u16, String)>> {
    let redis::Value::Array(entries) = v else {
        return None;
    };
    let mut out = Vec::new();
    for e in entries.iter().take(MAX_RANGES) {
        let redis::Value::Array(fields) = e else {
            continue;
        };
        let (Some(first), Some(last), Some(redis::Value::Array(master))) = (
            slot_of(fields.first()),
            slot_of(fields.get(1)),
            fields.get(2),
        ) else {
            continue;
        };
        let text = |v: Option<&redis::Value>| match v {
            Some(redis::Value::BulkString(b)) => std::str::from_utf8(b).ok().map(str::to_owned),
            Some(redis::Value::SimpleString(s)) => Some(s.clone()),
            _ => None,
        };
        let name = text(master.get(2)).filter(|id| !id.is_empty()).or_else(|| {
            let port = match master.get(1) {
                Some(redis::Value::Int(p)) => Some(*p),
                _ => None,
            }?;
            Some(format!("{}:{port}", text(master.first())?))
        });
        if let (Some(name), true) = (name, first <= last) {
            out.push((first, last, name));
        }
    }
    Some(out)
}

fn slot_of(v: Option<&redis::Value>) -> Option<u16> {
    match v {
        Some(redis::Value::Int(n)) => u16::try_from(*n).ok().filter(|s| *s < super::keys::SLOTS),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    fn node(ip: &str, port: i64, id: &str) -> Value {
        Value::Array(vec![
            Value::BulkString(ip.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(id.as_bytes().to_vec()),
        ])
    }

    fn range(first: i64, last: i64, master: Value) -> Value {
        Value::Array(vec![Value::Int(first), Value::Int(last), master])
    }

    #[test]
    fn a_hung_master_fills_its_own_places_only() {
        let b = Bounds::new(2);
        b.install(
            vec![
                (0, 5460, "a".into()),
                (5461, 10922, "b".into()),
                (10923, 16383, "c".into()),
            ],
            Instant::now(),
        );
        let held: Vec<_> = (0..2).map(|_| b.acquire(Some(7)).unwrap()).collect();
        assert_eq!(b.acquire(Some(100)).err(), Some(Full { max: 2 }));
        // Other masters, and operations without a key, still have their places.
        assert!(b.acquire(Some(6000)).is_ok());
        assert!(b.acquire(Some(16383)).is_ok());
        assert!(b.acquire(None).is_ok());
        drop(held);
        assert_eq!(b.available(Some(0)), 2);
    }

    #[test]
    fn a_reread_map_keeps_each_masters_places_and_moves_a_slot() {
        let b = Bounds::new(1);
        b.install(
            vec![(0, 99, "a".into()), (100, 16383, "b".into())],
            Instant::now(),
        );
        let held = b.acquire(Some(50)).unwrap();
        // Slot 50 moved to b (a failover or a resharding): a's operation keeps its place.
        b.install(
            vec![(0, 49, "a".into()), (50, 16383, "b".into())],
            Instant::now(),
        );
        assert_eq!(b.available(Some(0)), 0);
        assert!(b.acquire(Some(50)).is_ok());
        drop(held);
        assert_eq!(b.available(Some(0)), 1);
    }

    #[test]
    fn an_unmapped_slot_or_no_map_shares_one_group() {
        let b = Bounds::new(1);
        let held = b.acquire(Some(3)).unwrap();
        assert!(b.acquire(None).is_err());
        drop(held);
        b.install(vec![(10, 20, "a".into())], Instant::now());
        let _held = b.acquire(Some(3)).unwrap();
        assert!(b.acquire(Some(30)).is_err());
        assert!(b.acquire(Some(15)).is_ok());
    }

    #[test]
    fn reads_of_the_map_are_one_at_a_time_and_spaced() {
        let b = Bounds::new(1);
        let t = Instant::now();
        assert!(b.never_read());
        assert!(b.start_read(t));
        assert!(!b.start_read(t), "one read at a time");
        b.read_failed(t);
        assert!(!b.never_read());
        assert!(!b.start_read(t + Duration::from_millis(10)));
        assert!(b.start_read(t + REFRESH));
        b.install(Vec::new(), t + REFRESH);
        assert!(!b.start_read(t + REFRESH));
    }

    #[test]
    fn cluster_slots_answers_are_read_by_node_id_or_address() {
        let v = Value::Array(vec![
            range(0, 5460, node("127.0.0.1", 7000, "id-a")),
            range(5461, 10922, node("127.0.0.1", 7001, "")),
            // Malformed entries are skipped.
            range(10923, 70000, node("127.0.0.1", 7002, "id-c")),
            range(9, 3, node("127.0.0.1", 7002, "id-c")),
            Value::Int(4),
            Value::Array(vec![Value::Int(1)]),
        ]);
        assert_eq!(
            parse_cluster_slots(&v),
            Some(vec![
                (0, 5460, "id-a".to_owned()),
                (5461, 10922, "127.0.0.1:7001".to_owned()),
            ])
        );
        assert_eq!(parse_cluster_slots(&Value::Nil), None);
    }
}
