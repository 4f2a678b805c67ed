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
    /// Calls charged to each link's budget, and until when the link lives.
    budgets: HashMap<String, (u64, u64)>,
    /// Each link's current second and its calls.
    rates: HashMap<String, (u64, u64)>,
}

/// One link of a delegation chain, as [`Fleet::charge`] charges it.
#[derive(Debug, Clone, Copy)]
pub struct Link<'a> {
    /// Its `cada.dtc`.
    pub digest: &'a str,
    /// Most calls under it and every contract below it, if limited.
    pub budget: Option<u64>,
    /// Most calls per second under it and below it, if limited.
    pub rate: Option<u32>,
    /// Its behaviour limit of the kind charged (requests or refusals), if any.
    pub window: Option<WindowLimit>,
    /// When it ends (Unix seconds): its budget is kept until then.
    pub until: u64,
}

/// What a tree charge found ([`Fleet::charge`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charged {
    /// Every link was charged; per link (in order), the count so far in its behaviour
    /// window (0 for a link without one).
    Counted(Vec<u64>),
    /// Link `link` (index in the chain) has used its budget (`used` calls): nothing was
    /// charged.
    OverBudget {
        /// The link's index, root 0.
        link: usize,
        /// Calls charged to it so far.
        used: u64,
    },
    /// Link `link` had `used` calls in this second already, its rate: nothing was charged.
    OverRate {
        /// The link's index, root 0.
        link: usize,
        /// Calls in this second.
        used: u64,
    },
}

/// Where the fleet's counters and suspensions live.
pub struct Fleet {
    memory: Option<Mutex<Memory>>,
    store: Store,
}

/// The fields of a counter hash that hold behaviour windows (per kind, the window and its
/// count): what a reinstatement forgets. The budget (`b`) and the second (`s`, `s:n`) of a
/// tree's link are kept.
const WINDOW_FIELDS: [&str; 4] = ["req", "req:n", "ref", "ref:n"];

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

    /// The first suspended contract among those governing a request (`info`): its own,
    /// or under a delegation chain any link's (a suspended link refuses every call below
    /// it) — only those with behaviour limits can be suspended, so only they are read.
    /// `Some((digest, depth, record))`; depth 0 for a contract alone.
    pub async fn suspended_in(
        &self,
        info: &cada_attestation_verifier::decide::ContractInfo,
    ) -> Result<Option<(String, usize, String)>, String> {
        let links: Vec<(&str, &cada_contract::BehaviourLimits, usize)> = if info.chain.len() > 1 {
            info.chain
                .iter()
                .map(|l| (l.digest.as_str(), &l.limits, l.depth))
                .collect()
        } else {
            vec![(info.digest.as_str(), &info.limits, 0)]
        };
        for (digest, limits, depth) in links {
            if limits.requests.is_none() && limits.refusals.is_none() {
                continue;
            }
            if let Some(record) = self.suspended(digest).await? {
                return Ok(Some((digest.to_owned(), depth, record)));
            }
        }
        Ok(None)
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

    /// Charges one call (`Count::Requests`: an accepted one) or one refusal under a
    /// delegation chain to EVERY link of it, `links` root first (`root` is the root's
    /// digest): each link counts the calls of all its descendants. For an accepted call,
    /// every link's budget and rate is checked first and nothing is charged when one is
    /// used up ([`Charged::OverBudget`], [`Charged::OverRate`]); then each link's budget,
    /// second and behaviour window are charged together — one script on one Redis slot
    /// (every key carries the root's hash tag), or under one lock in memory: all links or
    /// none. A refusal charges only the refusal windows.
    pub async fn charge(
        &self,
        kind: Count,
        root: &str,
        links: &[Link<'_>],
        now_s: u64,
    ) -> Result<Charged, String> {
        let req = kind == Count::Requests;
        let window_of = |l: &Link<'_>| l.window.map(|w| now_s / w.window_seconds.max(1));
        if let Some(mut g) = self.memory()? {
            if req {
                for (i, l) in links.iter().enumerate() {
                    if let Some(b) = l.budget {
                        let used = g.budgets.get(l.digest).map_or(0, |(u, _)| *u);
                        if used >= b {
                            return Ok(Charged::OverBudget { link: i, used });
                        }
                    }
                    if let Some(r) = l.rate {
                        let used = match g.rates.get(l.digest) {
                            Some((s, n)) if *s >= now_s => *n,
                            _ => 0,
                        };
                        if used >= u64::from(r) {
                            return Ok(Charged::OverRate { link: i, used });
                        }
                    }
                }
                let full = |m: &HashMap<String, (u64, u64)>, k: &str| {
                    m.len() >= MAX_MEMORY_COUNTERS && !m.contains_key(k)
                };
                for l in links {
                    if l.budget.is_some() && full(&g.budgets, l.digest) {
                        g.budgets.retain(|_, (_, until)| *until >= now_s);
                        if full(&g.budgets, l.digest) {
                            return Err("too many delegation budgets held in memory".into());
                        }
                    }
                    if l.rate.is_some() && full(&g.rates, l.digest) {
                        g.rates.retain(|_, (s, _)| *s >= now_s);
                    }
                }
                for l in links {
                    if l.budget.is_some() {
                        let e = g.budgets.entry(l.digest.to_owned()).or_insert((0, l.until));
                        e.0 += 1;
                    }
                    if l.rate.is_some() {
                        let e = g.rates.entry(l.digest.to_owned()).or_insert((now_s, 0));
                        if now_s > e.0 {
                            *e = (now_s, 0);
                        }
                        e.1 += 1;
                    }
                }
            }
            let mut counts = Vec::with_capacity(links.len());
            for l in links {
                let Some(window) = window_of(l) else {
                    counts.push(0);
                    continue;
                };
                let key = memory_counter_key(kind, l.digest, window);
                if g.counters.len() >= MAX_MEMORY_COUNTERS && !g.counters.contains_key(&key) {
                    g.counters.clear();
                }
                let n = g.counters.entry(key).or_insert(0);
                *n += 1;
                counts.push(*n);
            }
            return Ok(Charged::Counted(counts));
        }
        let Some(r) = self.store.redis() else {
            return Err("no store".into());
        };
        let args: Vec<crate::store::tree::LinkArgs> = links
            .iter()
            .filter(|l| req || l.window.is_some())
            .map(|l| {
                let window_ms = l
                    .window
                    .map_or(0, |w| w.window_seconds.max(1).saturating_mul(2000));
                let life_ms = l
                    .until
                    .saturating_sub(now_s)
                    .saturating_add(60)
                    .saturating_mul(1000);
                crate::store::tree::LinkArgs {
                    key: keys::tree_counters(root, l.digest),
                    budget: if req { l.budget } else { None },
                    rate: if req { l.rate } else { None },
                    window: window_of(l),
                    ttl_ms: window_ms
                        .max(if req && l.budget.is_some() {
                            life_ms
                        } else {
                            0
                        })
                        .max(2000),
                }
            })
            .collect();
        let answer = r
            .tree_charge(kind.tag(), now_s, &args)
            .await
            .map_err(|e| e.to_string())?;
        let num = |i: usize| answer.get(i).map_or(0, |v| u64::try_from(*v).unwrap_or(0));
        // The script's link index among the links sent, back to the chain's.
        let sent: Vec<usize> = links
            .iter()
            .enumerate()
            .filter(|(_, l)| req || l.window.is_some())
            .map(|(i, _)| i)
            .collect();
        let link_of = |n: u64| {
            usize::try_from(n)
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|n| sent.get(n).copied())
                .unwrap_or(0)
        };
        match answer.first().copied() {
            Some(0) => {
                let mut counts = vec![0; links.len()];
                for (j, i) in sent.iter().enumerate() {
                    counts[*i] = num(j + 1);
                }
                Ok(Charged::Counted(counts))
            }
            Some(1) => Ok(Charged::OverBudget {
                link: link_of(num(1)),
                used: num(2),
            }),
            Some(2) => Ok(Charged::OverRate {
                link: link_of(num(1)),
                used: num(2),
            }),
            _ => Err(format!("unexpected answer of the tree script: {answer:?}")),
        }
    }

    /// The start (Unix ms) of the epoch of the store slot that holds the counters of the
    /// delegation tree of `root` (every link's budget), if that slot is known to have lost
    /// its memory: a budget charged before then is forgotten, so a link issued before then
    /// may have used it already (docs/stores.md). On a cluster the slot's sentinel is read
    /// first (one round trip); memory never loses its counters while the process lives.
    pub async fn tree_epoch(&self, root: &str) -> Result<Option<u64>, String> {
        let key = keys::tree_counters(root, root);
        if let Some(r) = self.store.redis() {
            r.check_epoch(&key).await.map_err(|e| e.to_string())?;
        }
        Ok(self.store.epoch_for(&key))
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

    /// Lifts the suspension of `dtc` and forgets its behaviour windows (requests and
    /// refusals); `Ok(true)` if it was suspended. A link's budget and its second's calls
    /// are kept, on either store: lifting a suspension is no grant of more calls.
    pub async fn reinstate(&self, dtc: &str) -> Result<bool, String> {
        if let Some(mut g) = self.memory()? {
            let marker = format!(":{dtc}:");
            g.counters.retain(|k, _| !k.contains(&marker));
            return Ok(g.suspended.remove(dtc).is_some());
        }
        let Some(r) = self.store.redis() else {
            return Err("no store".into());
        };
        let record = self.suspended(dtc).await?;
        // The windows of the contract's own hash (for the root of a tree, the tree's hash
        // of the root: its budget `b` and second `s` stay), then the suspension, and its old
        // name too on a single Redis.
        r.forget_fields(&keys::counters(dtc), &WINDOW_FIELDS)
            .await
            .map_err(|e| e.to_string())?;
        // A link of a delegation tree counts in its root's slot (the record names the root).
        let root = record
            .as_deref()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
            .and_then(|v| v.get("root").and_then(|r| r.as_str()).map(str::to_owned));
        if let Some(root) = root.filter(|r| r != dtc) {
            r.forget_fields(&keys::tree_counters(&root, dtc), &WINDOW_FIELDS)
                .await
                .map_err(|e| e.to_string())?;
        }
        r.delete(&[keys::suspension(dtc)], &[keys::legacy_suspension(dtc)])
            .await
            .map_err(|e| e.to_string())?;
        Ok(record.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(digest: &str, budget: Option<u64>, rate: Option<u32>) -> Link<'_> {
        Link {
            digest,
            budget,
            rate,
            window: Some(WindowLimit {
                max: 1000,
                window_seconds: 60,
            }),
            until: 10_000,
        }
    }

    /// Issue 24: two sibling delegations under one parent (budget 5, rate 3/s), each
    /// with a budget of 4 of its own: together they are refused past the parent's
    /// budget and rate, a refused call charges no link, and every link counts its
    /// descendants' calls in its behaviour window.
    async fn siblings_share_their_parents_budget_and_rate(f: &Fleet) {
        let root = "root-dtc";
        let a = [link(root, Some(5), None), link("child-a", Some(4), None)];
        let b = [link(root, Some(5), None), link("child-b", Some(4), None)];
        let t = 1_000;
        for i in 1..=3u64 {
            assert_eq!(
                f.charge(Count::Requests, root, &a, t).await.unwrap(),
                Charged::Counted(vec![i, i])
            );
        }
        for i in 1..=2u64 {
            assert_eq!(
                f.charge(Count::Requests, root, &b, t).await.unwrap(),
                Charged::Counted(vec![3 + i, i])
            );
        }
        // The parent's budget is spent: each sibling is refused, though under its own.
        for x in [&a, &b] {
            assert_eq!(
                f.charge(Count::Requests, root, x, t).await.unwrap(),
                Charged::OverBudget { link: 0, used: 5 }
            );
        }
        // A sibling's own budget, with room in the parent (another tree's root).
        let root2 = "root-2";
        let c = [link(root2, Some(100), None), link("child-c", Some(1), None)];
        assert!(matches!(
            f.charge(Count::Requests, root2, &c, t).await.unwrap(),
            Charged::Counted(_)
        ));
        assert_eq!(
            f.charge(Count::Requests, root2, &c, t).await.unwrap(),
            Charged::OverBudget { link: 1, used: 1 }
        );
        // Rate: 3 per second for the parent, over both siblings; the next second again.
        let root3 = "root-3";
        let d = [link(root3, None, Some(3)), link("child-d", None, None)];
        let e = [link(root3, None, Some(3)), link("child-e", None, Some(10))];
        for x in [&d, &e, &d] {
            assert!(matches!(
                f.charge(Count::Requests, root3, x, t).await.unwrap(),
                Charged::Counted(_)
            ));
        }
        assert_eq!(
            f.charge(Count::Requests, root3, &e, t).await.unwrap(),
            Charged::OverRate { link: 0, used: 3 }
        );
        assert!(matches!(
            f.charge(Count::Requests, root3, &e, t + 1).await.unwrap(),
            Charged::Counted(_)
        ));
        // Refusals count in every link's refusal window, never against a budget.
        let r = [link(root, Some(5), None), link("child-a", Some(4), None)];
        assert_eq!(
            f.charge(Count::Refusals, root, &r, t).await.unwrap(),
            Charged::Counted(vec![1, 1])
        );
        // A reinstatement forgets the behaviour windows only: the root's (its own hash)
        // and a lower link's (in the root's slot) budgets stay used up.
        assert!(f.suspend(root, r#"{"id":"s-root"}"#).await.unwrap());
        assert!(f.reinstate(root).await.unwrap());
        assert_eq!(
            f.charge(Count::Requests, root, &a, t).await.unwrap(),
            Charged::OverBudget { link: 0, used: 5 }
        );
        assert_eq!(
            f.charge(Count::Refusals, root, &r, t).await.unwrap(),
            Charged::Counted(vec![1, 2])
        );
        let record = format!(r#"{{"id":"s-c","root":"{root2}"}}"#);
        assert!(f.suspend("child-c", &record).await.unwrap());
        assert!(f.reinstate("child-c").await.unwrap());
        assert_eq!(
            f.charge(Count::Requests, root2, &c, t).await.unwrap(),
            Charged::OverBudget { link: 1, used: 1 }
        );
    }

    #[tokio::test]
    async fn memory_tree_counters_hold_for_the_whole_tree() {
        let f = Fleet::from_option("memory", std::time::Duration::from_secs(1)).unwrap();
        siblings_share_their_parents_budget_and_rate(&f).await;
    }

    /// The same with the one script on a Redis (`redis-server`, which scripts/test.sh
    /// installs, started on a free loopback port without persistence).
    #[tokio::test]
    async fn redis_tree_counters_hold_for_the_whole_tree() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed by scripts/test.sh");
        let f = Fleet::from_option(
            &format!("redis://127.0.0.1:{port}"),
            std::time::Duration::from_secs(2),
        )
        .unwrap();
        // Wait until it answers (a charge of an empty chain touches nothing).
        let mut up = false;
        for _ in 0..100 {
            if f.store.ping().await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(up, "redis-server did not start");
        siblings_share_their_parents_budget_and_rate(&f).await;
        let _ = child.kill();
        let _ = child.wait();
    }

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
