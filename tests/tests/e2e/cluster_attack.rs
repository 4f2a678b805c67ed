//! Adversarial review of the shared store on Redis Cluster (issue 26, review stores-1,
//! docs/reviews/stores-1.md). One test per attack, each asserting the SECURE behaviour;
//! an attack that succeeds is `#[ignore = "finding N: …"]`. Each test starts its own
//! local cluster (`cada_e2e::redis_cluster`); the module runs in well under 90 s.
//!
//! Store-level tests open the store the way each binary does (`Store::open` with the
//! flags' options): two `Store`s are two instances (own connections, own slot map, own
//! epoch state). The epoch tests use the real `cada-verify serve`.
use std::time::{Duration, Instant};

use cada_attestation_verifier::UnixTime;
use cada_e2e::redis_cluster::Cluster;
use cada_e2e::TempDir;
use cada_pipeline::replay::Replay;
use cada_pipeline::store::{keys, Ack, Store, StoreOptions};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn client(url: &str, ack: &str, max_in_flight: usize, timeout_ms: u64) -> Store {
    Store::open(
        url,
        &StoreOptions {
            ack: Ack::parse(ack).expect("ack"),
            max_in_flight,
            timeout: Duration::from_millis(timeout_ms),
            ..StoreOptions::default()
        },
    )
    .expect("the URL is read")
}

fn ranges_of(c: &Cluster, port: u16) -> Vec<(u16, u16)> {
    c.nodes_info()
        .into_iter()
        .find(|n| n.port == port)
        .map(|n| n.slots)
        .unwrap_or_default()
}

fn within(ranges: &[(u16, u16)], slot: u16) -> bool {
    ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot))
}

/// `n` proof ids whose `cada:jti:` keys land in `ranges` (or outside them).
fn ids(ranges: &[(u16, u16)], inside: bool, tag: &str, n: usize) -> Vec<Vec<u8>> {
    (0u64..)
        .map(|i| format!("{tag}-{i}").into_bytes())
        .filter(|id| within(ranges, keys::slot(keys::jti(id).as_bytes())) == inside)
        .take(n)
        .collect()
}

fn later() -> UnixTime {
    UnixTime::from_secs(UnixTime::now().as_secs() + 300)
}

/// Calls of `SET` the masters have run (INFO commandstats; scripts' calls included).
fn set_calls(c: &Cluster) -> u64 {
    c.nodes_info()
        .iter()
        .filter(|n| n.master && !n.failed)
        .map(|n| {
            c.cli(n.port, &["info", "commandstats"])
                .lines()
                .find_map(|l| l.strip_prefix("cmdstat_set:calls="))
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// The master that does not serve slot 0 (whose epoch sentinel anchors every rewrite).
fn a_master_without_slot_0(c: &Cluster) -> u16 {
    let m0 = c.master_of(0);
    c.nodes_info()
        .iter()
        .find(|n| n.master && !n.failed && n.port != m0 && !n.slots.is_empty())
        .map(|n| n.port)
        .expect("three masters")
}

// ---------------------------------------------------------------------------------------
// The epoch rule with the real binaries.

/// Two `cada-verify serve` on one cluster, with an enclave minting proofs.
struct Fleet {
    c: Cluster,
    sock: std::path::PathBuf,
    a: u16,
    b: u16,
    _procs: Vec<cada_e2e::Proc>,
}

const URL: &str = "https://api.example.com/v1/orders";

fn fleet(dir: &TempDir) -> Fleet {
    let c = Cluster::start(&dir.0);
    let e = cada_e2e::start_enclave(&dir.0, &[]);
    let p = cada_e2e::start_parent(&dir.0, &[]);
    let sock = dir.0.join("agent.sock");
    let (_, id) =
        cada_e2e::http(&sock, "GET", "/v1/identity", None, Duration::from_secs(5)).unwrap();
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    let policy = dir.0.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[roots]\nnitro = [{:?}]\n[[audience]]\nprefix = \"https://api.example.com/\"\nmeasurements = [{{ PCR0 = {:?} }}]\n",
            dir.0.join("state/sim-root.der").display().to_string(),
            id["measurements"]["PCR0"].as_str().unwrap()
        ),
    )
    .unwrap();
    let store = c.url();
    let args = [
        "--policy",
        policy.to_str().unwrap(),
        "--replay-store",
        &store,
        "--store-ack",
        "replicas=1,timeout=200",
    ];
    let (va, a) = cada_e2e::start_verifier(&dir.0, "a", &args);
    let (vb, b) = cada_e2e::start_verifier(&dir.0, "b", &args);
    Fleet {
        c,
        sock,
        a,
        b,
        _procs: vec![e, p, va, vb],
    }
}

impl Fleet {
    /// A fresh proof (the verify request's body) and the slot of its replay key.
    fn proof(&self) -> (serde_json::Value, u16) {
        let m = cada_e2e::mint(&self.sock, "POST", URL, None, true);
        let dpop = m["dpop"].as_str().unwrap().to_owned();
        let p = cada_protocol::token::parse_compact(&dpop).unwrap();
        let rk =
            cada_attestation_verifier::pop::replay_key(&p.header.jwk.thumbprint(), &p.claims.jti);
        let slot = keys::slot(keys::jti(&rk).as_bytes());
        let body = serde_json::json!({"dpop": dpop, "method": "POST", "url": URL, "evidence": m["evidence"]});
        (body, slot)
    }

    /// A fresh proof whose replay key is (or is not) served by `master`.
    fn proof_on(&self, master: u16, on: bool) -> serde_json::Value {
        let r = ranges_of(&self.c, master);
        for _ in 0..200 {
            let (b, s) = self.proof();
            if within(&r, s) == on {
                return b;
            }
        }
        panic!("no proof landed where wanted");
    }

    fn verify(&self, port: u16, body: &serde_json::Value) -> (u16, String) {
        let (st, v) = cada_e2e::pop_verify(port, body);
        (
            st,
            v["reasons"][0]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    }

    /// Both verifiers have met the store (their epoch state is "seen"); a proof `p` is
    /// accepted at A on the master `mt` (not slot 0's); then `mt` loses its memory
    /// (FLUSHALL, replicated to its replica: what a restart of the shard without
    /// persistence does) and A finds the loss with a proof of its own there.
    fn lose_a_shard_after_an_acceptance(&self) -> (serde_json::Value, u16) {
        for port in [self.a, self.b] {
            let (b, _) = self.proof();
            assert_eq!(self.verify(port, &b).0, 200, "warm-up");
        }
        let mt = a_master_without_slot_0(&self.c);
        let p = self.proof_on(mt, true);
        assert_eq!(self.verify(self.a, &p).0, 200, "first acceptance at A");
        assert_eq!(self.c.cli(mt, &["flushall"]), "OK");
        let q = self.proof_on(mt, true);
        assert_eq!(
            self.verify(self.a, &q),
            (401, "pop.store_epoch".to_owned()),
            "A finds the loss and starts an epoch"
        );
        (p, mt)
    }
}

/// Attack: one shard loses its memory; instance A notices and starts an epoch; the proof
/// accepted at A before the loss is replayed at instance B. B must refuse it (pop.replay
/// or pop.store_epoch): it may not accept a proof a second time.
#[test]
fn a_replay_at_another_instance_after_one_shard_lost_its_memory_is_refused() {
    let dir = TempDir::new("attack-epoch-b");
    let f = fleet(&dir);
    let (p, _) = f.lose_a_shard_after_an_acceptance();
    let (st, code) = f.verify(f.b, &p);
    assert!(
        st == 401 && (code == "pop.replay" || code == "pop.store_epoch"),
        "the proof accepted at A before the loss was accepted again at B: {st} {code}"
    );
}

/// Attack (availability): one shard of three loses its memory. Proofs whose replay keys
/// land on the two healthy shards cannot have been forgotten; they must keep being
/// accepted ("503 for requests touching that slot only", issue 26).
#[test]
fn a_shard_that_lost_its_memory_does_not_refuse_proofs_on_the_other_shards() {
    let dir = TempDir::new("attack-epoch-wide");
    let f = fleet(&dir);
    let (_, mt) = f.lose_a_shard_after_an_acceptance();
    let healthy = f.proof_on(mt, false);
    let (st, code) = f.verify(f.a, &healthy);
    assert_eq!(
        (st, code.as_str()),
        (200, ""),
        "a proof on a healthy shard was refused"
    );
}

// ---------------------------------------------------------------------------------------
// The store layer.

/// Attack (amplification): after a shard loses its memory, every claim in flight that
/// finds its sentinel gone rewrites all 16,384 sentinels itself. N concurrent claims
/// must not cost N × 16,384 writes: the rewrite is done once per instance (plus a few).
#[test]
fn concurrent_claims_after_a_loss_rewrite_the_sentinels_about_once() {
    let dir = TempDir::new("attack-storm");
    let c = Cluster::start(&dir.0);
    let rt = runtime();
    let s = client(&c.url(), "none", 1024, 2000);
    let r = Replay::new(&s, 10);
    let mt = a_master_without_slot_0(&c);
    let on = ranges_of(&c, mt);
    rt.block_on(async {
        // First contact (writes the sentinels once).
        assert!(r
            .insert_new(b"warm", later(), UnixTime::now())
            .await
            .unwrap());
    });
    assert_eq!(c.cli(mt, &["flushall"]), "OK");
    let before = set_calls(&c);
    let n = 24;
    let outcomes = rt.block_on(async {
        let futs = ids(&on, true, "storm", n)
            .into_iter()
            .map(|id| {
                let r = &r;
                async move { r.insert_new(&id, later(), UnixTime::now()).await }
            })
            .collect::<Vec<_>>();
        futures_join_all(futs).await
    });
    let sets = set_calls(&c) - before;
    let failed = outcomes.iter().filter(|o| o.is_err()).count();
    println!("{n} claims after a loss: {sets} SET calls, {failed} failed");
    assert!(
        sets <= 2 * u64::from(keys::SLOTS) + 4 * n as u64,
        "{n} concurrent claims after a loss cost {sets} SET calls ({failed} of them failed)"
    );
}

/// Runs the futures concurrently on this task (no extra crate); their outputs in order.
async fn futures_join_all<T>(futs: Vec<impl std::future::Future<Output = T>>) -> Vec<T> {
    let mut pinned: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<T>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if done[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => done[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    done.into_iter().flatten().collect()
}

/// Attack: a master that hangs (paused) under a flood: `--store-max-in-flight` holds
/// (operations beyond it refused at once, `store.busy`), nothing is accepted, and the
/// store serves again once the master answers, with no permit leaked.
#[test]
fn a_flood_against_a_hung_master_is_bounded_and_recovers() {
    let dir = TempDir::new("attack-busy");
    let c = Cluster::start(&dir.0);
    let rt = runtime();
    let s = client(&c.url(), "replicas=1,timeout=100", 4, 300);
    let r = Replay::new(&s, 10);
    let m = c.master_of(0);
    let on = ranges_of(&c, m);
    rt.block_on(async {
        assert!(r
            .insert_new(b"warm-busy", later(), UnixTime::now())
            .await
            .unwrap());
    });
    let pauser = {
        let port = m;
        std::thread::spawn(move || {
            std::process::Command::new("redis-cli")
                .args(["-p", &port.to_string(), "client", "pause", "1500", "ALL"])
                .output()
                .ok();
        })
    };
    pauser.join().unwrap();
    let outcomes = rt.block_on(async {
        let futs = ids(&on, true, "flood", 32)
            .into_iter()
            .map(|id| {
                let r = &r;
                async move { r.insert_new(&id, later(), UnixTime::now()).await }
            })
            .collect::<Vec<_>>();
        futures_join_all(futs).await
    });
    assert!(
        outcomes.iter().all(Result::is_err),
        "nothing is accepted while the master hangs"
    );
    let busy = outcomes
        .iter()
        .filter(|o| {
            o.as_ref()
                .err()
                .is_some_and(|e| e.starts_with("store.busy"))
        })
        .count();
    assert!(busy >= 28, "the bound of 4 held: {busy} of 32 busy");
    // Recovers once the pause ends (bounded wait, no timed assertion on how long).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    loop {
        i += 1;
        let id = ids(&on, true, &format!("after-{i}"), 1).remove(0);
        let ok = rt.block_on(r.insert_new(&id, later(), UnixTime::now()));
        if ok == Ok(true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store did not recover: {ok:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // No place leaked: the whole bound is usable again at once.
    let again = rt.block_on(async {
        let futs = ids(&on, true, "again", 4)
            .into_iter()
            .map(|id| {
                let r = &r;
                async move { r.insert_new(&id, later(), UnixTime::now()).await }
            })
            .collect::<Vec<_>>();
        futures_join_all(futs).await
    });
    assert!(again.iter().all(|o| *o == Ok(true)), "{again:?}");
}

/// Attack (availability): one master hangs; were `--store-max-in-flight` one bound for the
/// whole process (finding 4, fixed: it is per master), requests waiting on that master
/// would fill it and requests for healthy slots be refused `store.busy` too. Secure (and
/// issue 26's "503 for that slot only"): a claim on a healthy master is served while
/// another master hangs.
#[test]
fn a_hung_master_does_not_make_healthy_slots_busy() {
    let dir = TempDir::new("attack-busy-wide");
    let c = Cluster::start(&dir.0);
    let rt = runtime();
    let s = client(&c.url(), "replicas=1,timeout=100", 8, 1000);
    let r = Replay::new(&s, 10);
    let m = c.master_of(0);
    let on = ranges_of(&c, m);
    rt.block_on(async {
        assert!(r
            .insert_new(b"warm-wide", later(), UnixTime::now())
            .await
            .unwrap());
    });
    assert_eq!(c.cli(m, &["client", "pause", "1500", "ALL"]), "OK");
    let healthy = ids(&on, false, "healthy", 1).remove(0);
    let result = rt.block_on(async {
        let hung: Vec<_> = ids(&on, true, "hung", 8)
            .into_iter()
            .map(|id| {
                let r = &r;
                async move { r.insert_new(&id, later(), UnixTime::now()).await }
            })
            .collect();
        let healthy_claim = async {
            // Once the hung claims hold their places.
            tokio::time::sleep(Duration::from_millis(100)).await;
            r.insert_new(&healthy, later(), UnixTime::now()).await
        };
        let (_, h) = tokio::join!(futures_join_all(hung), healthy_claim);
        h
    });
    assert_eq!(
        result,
        Ok(true),
        "a claim on a healthy master was refused while another master hung"
    );
}

/// Attack: a claim written to a master whose replica link was just cut, then the master
/// killed before it could replicate (the lost-write window). With `--store-ack
/// replicas=1` the claim does not count (store.unacknowledged); after the failover the same
/// jti is accepted at most once in total.
#[test]
fn an_unreplicated_claim_does_not_count_and_no_jti_is_accepted_twice_after_failover() {
    let dir = TempDir::new("attack-lostwrite");
    let mut c = Cluster::start(&dir.0);
    let rt = runtime();
    let a = client(&c.url(), "replicas=1,timeout=100", 256, 500);
    let b = client(&c.url(), "none", 256, 500);
    let (ra, rb) = (Replay::new(&a, 10), Replay::new(&b, 10));
    let m = a_master_without_slot_0(&c);
    let on = ranges_of(&c, m);
    let slot = on[0].0;
    let id = ids(&on, true, "lost", 1).remove(0);
    rt.block_on(async {
        assert!(ra
            .insert_new(b"warm-a", later(), UnixTime::now())
            .await
            .unwrap());
        assert!(rb
            .insert_new(b"warm-b", later(), UnixTime::now())
            .await
            .unwrap());
    });
    // Cut the replica off, write, kill the master at once.
    c.cli(m, &["client", "kill", "type", "replica"]);
    let first = rt.block_on(ra.insert_new(&id, later(), UnixTime::now()));
    c.kill(m);
    let _new = c.wait_for_new_master(slot, m);
    let mut accepted = usize::from(first == Ok(true));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match rt.block_on(rb.insert_new(&id, later(), UnixTime::now())) {
            Ok(fresh) => {
                accepted += usize::from(fresh);
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "no answer after failover: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        first
            .as_ref()
            .is_err_and(|e| e.starts_with("store.unacknowledged"))
            || first == Ok(true),
        "{first:?}"
    );
    assert!(accepted <= 1, "the jti was accepted {accepted} times");
}

/// Attack: credentials in the URL must never reach an error, a log or a metric; a
/// `rediss+cluster://` URL against nodes without TLS fails closed (no plaintext fallback).
#[test]
fn credentials_stay_hidden_and_tls_never_falls_back_to_plaintext() {
    let dir = TempDir::new("attack-creds");
    let c = Cluster::start(&dir.0);
    let rt = runtime();
    let port = c.ports()[0];
    let secret = "S3cretPw-attack";
    for url in [
        format!("redis+cluster://cada:{secret}@127.0.0.1:{port}"),
        format!("redis://cada:{secret}@127.0.0.1:{port}"),
        format!("redis+cluster://cada:{secret}@127.0.0.1:1"),
    ] {
        let s = client(&url, "none", 16, 300);
        assert!(!s.url().to_string().contains(secret));
        assert!(!format!("{:?}", s.url()).contains(secret));
        let r = Replay::new(&s, 10);
        let e = rt
            .block_on(r.insert_new(b"creds", later(), UnixTime::now()))
            .expect_err("no such user: refused");
        assert!(!e.contains(secret), "the password leaked: {e}");
    }
    // A bad URL's refusal hides it too.
    let e = Store::open(
        &format!("redis+cluster://cada:{secret}@127.0.0.1:{port}?x=1"),
        &StoreOptions::default(),
    )
    .err()
    .unwrap();
    assert!(!e.to_string().contains(secret), "{e}");
    // TLS asked, plaintext nodes: refused, never served.
    for url in [
        format!("rediss+cluster://127.0.0.1:{port}"),
        format!("rediss://127.0.0.1:{port}"),
    ] {
        if let Ok(s) = Store::open(&url, &StoreOptions::default()) {
            let r = Replay::new(&s, 10);
            let got = rt.block_on(r.insert_new(b"tls", later(), UnixTime::now()));
            assert!(got.is_err(), "{url} served over plaintext: {got:?}");
        }
    }
}
