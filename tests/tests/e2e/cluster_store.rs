//! The shared store on a real six-node Redis Cluster (issue 26): two store clients stand
//! for two instances of a fleet (each its own connections and slot map, as two processes
//! have). Replays, single-use grants and behaviour counters are shared; a resharded slot
//! (ASK, then MOVED) is followed; a killed master's replica takes over without a restart
//! and no jti acknowledged before is accepted again; a write no replica holds is refused;
//! a slot whose master and replica are both down fails alone.
//!
//! Each test starts its own cluster (`cada_e2e::redis_cluster`, about 2 s) with
//! `cluster-node-timeout` 1000 ms (a failover takes 1–3 s).
use std::time::{Duration, Instant};

use cada_attestation_verifier::UnixTime;
use cada_contract::WindowLimit;
use cada_e2e::redis_cluster::{Cluster, Options};
use cada_e2e::TempDir;
use cada_pipeline::fleet::{Count, Fleet};
use cada_pipeline::replay::Replay;
use cada_pipeline::store::{keys, Ack, Store, StoreOptions};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A store client of the cluster, as one instance opens it.
/// One replica's acknowledgement, as `auto` asks on a cluster, within 2 s instead of auto's
/// 100 ms: the tests that use it are about sharing and resharding, not about how fast a
/// replica answers on a loaded 2-core CI machine.
const TEST_ACK: &str = "replicas=1,timeout=2000";

fn client(c: &Cluster, ack: &str) -> Store {
    Store::open(
        &c.url(),
        &StoreOptions {
            ack: Ack::parse(ack).expect("ack"),
            max_in_flight: 256,
            timeout: Duration::from_millis(500),
            ..StoreOptions::default()
        },
    )
    .expect("the cluster URL is read")
}

/// The slot ranges the master on `port` serves.
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

/// `n` proof ids (`tag-i`) whose `cada:jti:` keys land in `ranges`.
fn ids_in(ranges: &[(u16, u16)], tag: &str, n: usize) -> Vec<Vec<u8>> {
    (0u64..)
        .map(|i| format!("{tag}-{i}").into_bytes())
        .filter(|id| within(ranges, keys::slot(keys::jti(id).as_bytes())))
        .take(n)
        .collect()
}

/// A proof id whose key lands in `slot` exactly.
fn id_in_slot(slot: u16, tag: &str) -> Vec<u8> {
    ids_in(&[(slot, slot)], tag, 1).remove(0)
}

/// A single-use grant's key (as the verifier names them) in `ranges`.
fn grant_in(ranges: &[(u16, u16)], tag: &str) -> String {
    (0u64..)
        .map(|i| {
            let d = aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                format!("{tag}-{i}").as_bytes(),
            );
            format!("cada:grant:{}", hex::encode(d.as_ref()))
        })
        .find(|k| within(ranges, keys::slot(k.as_bytes())))
        .expect("some key lands there")
}

fn now() -> UnixTime {
    UnixTime::now()
}

fn later() -> UnixTime {
    UnixTime::from_secs(UnixTime::now().as_secs() + 300)
}

#[test]
fn instances_sharing_a_cluster_refuse_replays_use_grants_once_and_count_together() {
    let dir = TempDir::new("cluster-share");
    let c = Cluster::start(&dir.0);
    let rt = runtime();
    assert_eq!(
        client(&c, "auto").ack(),
        Ack::Replicas {
            replicas: 1,
            timeout_ms: 100
        },
        "a cluster waits for one replica unless told otherwise"
    );
    // One replica's acknowledgement as `auto` asks, with room for a loaded CI machine,
    // where a replica is not always scheduled within auto's 100 ms (a CI run failed so).
    let (a, b) = (client(&c, TEST_ACK), client(&c, TEST_ACK));
    let (ra, rb) = (Replay::new(&a, 1000), Replay::new(&b, 1000));
    let (fa, fb) = (Fleet::new(&a), Fleet::new(&b));
    rt.block_on(async {
        // Proof ids spread over every master: accepted once, a replay at the other
        // instance refused.
        for i in 0..60 {
            let id = format!("jkt jti-{i}");
            assert!(ra.insert_new(id.as_bytes(), later(), now()).await.unwrap());
            assert!(!rb.insert_new(id.as_bytes(), later(), now()).await.unwrap());
            assert!(!ra.insert_new(id.as_bytes(), later(), now()).await.unwrap());
            assert!(rb.contains(id.as_bytes(), now()).await.unwrap());
        }
        // A single-use grant: the first use anywhere consumes it.
        let grant = format!("cada:grant:{}", "ab".repeat(32));
        assert!(rb.consume_grant(&grant, later(), now()).await.unwrap());
        assert!(!ra.consume_grant(&grant, later(), now()).await.unwrap());
        assert!(!rb.consume_grant(&grant, later(), now()).await.unwrap());
        // A grant claimed by a request refused after all is given back, once, and only by
        // the claim that holds it.
        let other = format!("cada:grant:{}", "cd".repeat(32));
        let claim = ra
            .claim_grant(&other, later(), now())
            .await
            .unwrap()
            .unwrap();
        assert!(rb
            .claim_grant(&other, later(), now())
            .await
            .unwrap()
            .is_none());
        ra.release_grant(claim).await.unwrap();
        let again = rb
            .claim_grant(&other, later(), now())
            .await
            .unwrap()
            .unwrap();
        assert!(ra
            .claim_grant(&other, later(), now())
            .await
            .unwrap()
            .is_none());
        assert!(!ra.consume_grant(&other, later(), now()).await.unwrap());
        drop(again);
        // Behaviour counters: one count for the fleet, whichever instance counts.
        let dtc = "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU";
        let limit = WindowLimit {
            max: 3,
            window_seconds: 60,
        };
        let t = 1_800_000_000;
        let mut counts = Vec::new();
        for f in [&fa, &fb, &fa, &fb] {
            counts.push(f.count(Count::Requests, dtc, limit, t).await.unwrap());
        }
        assert_eq!(counts, [1, 2, 3, 4]);
        // Refusals are counted apart; the next window starts again.
        assert_eq!(fb.count(Count::Refusals, dtc, limit, t).await.unwrap(), 1);
        assert_eq!(
            fa.count(Count::Requests, dtc, limit, t + 60).await.unwrap(),
            1
        );
        // An instance's clock one window behind counts in the newer window, never resets it.
        assert_eq!(fb.count(Count::Requests, dtc, limit, t).await.unwrap(), 2);
        // A suspension by one instance holds at the other; reinstated by either, gone
        // for both, with its counters.
        assert!(fa.suspend(dtc, r#"{"id":"s1"}"#).await.unwrap());
        assert!(!fb.suspend(dtc, r#"{"id":"s2"}"#).await.unwrap());
        assert_eq!(
            fb.suspended(dtc).await.unwrap().as_deref(),
            Some(r#"{"id":"s1"}"#)
        );
        assert!(fb.reinstate(dtc).await.unwrap());
        assert_eq!(fa.suspended(dtc).await.unwrap(), None);
        assert!(!fa.reinstate(dtc).await.unwrap());
        assert_eq!(
            fa.count(Count::Requests, dtc, limit, t + 60).await.unwrap(),
            1
        );
    });
    // Our key builder and the cluster agree on every family's slot, and the keys a
    // reinstatement deletes together share one.
    let dtc = "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU";
    for key in [
        keys::jti(b"jkt jti-0"),
        format!("cada:grant:{}", "ab".repeat(32)),
        keys::counters(dtc),
        keys::suspension(dtc),
        keys::counters("{}"),
    ] {
        assert_eq!(c.keyslot(&key), keys::slot(key.as_bytes()), "{key}");
    }
    for (name, keys_of) in keys::MULTI_KEY_OPERATIONS {
        let ks = keys_of(dtc);
        let slots: Vec<u16> = ks.iter().map(|k| c.keyslot(k)).collect();
        assert!(
            slots.windows(2).all(|w| w[0] == w[1]),
            "{name}: {ks:?} in {slots:?}"
        );
    }
    // The jti keys expire: the lifetime asked for is set on the master.
    let k = keys::jti(b"jkt jti-0");
    let ttl: i64 = c
        .cli(c.master_of(keys::slot(k.as_bytes())), &["pttl", &k])
        .parse()
        .unwrap();
    assert!(ttl > 0 && ttl <= 300_000, "PTTL {ttl}");
}

#[test]
fn a_resharded_slot_answers_ask_then_moved_and_both_instances_follow() {
    let dir = TempDir::new("cluster-reshard");
    let c = Cluster::start(&dir.0);
    let rt = runtime();
    let (a, b) = (client(&c, TEST_ACK), client(&c, TEST_ACK));
    let (ra, rb) = (Replay::new(&a, 10), Replay::new(&b, 10));
    let slot = 4242;
    let from = c.master_of(slot);
    let to = c
        .nodes_info()
        .iter()
        .find(|n| n.master && n.port != from)
        .map(|n| n.port)
        .unwrap();
    let first = id_in_slot(slot, "first");
    rt.block_on(async {
        // Both instances have their slot maps (and connections) before the resharding.
        assert!(ra.insert_new(&first, later(), now()).await.unwrap());
        assert!(!rb.insert_new(&first, later(), now()).await.unwrap());
    });
    // Mid-resharding: a key the old master does not hold is answered ASK.
    c.begin_migration(slot, to);
    let during = ids_in(&[(slot, slot)], "during", 2);
    rt.block_on(async {
        assert!(rb.insert_new(&during[0], later(), now()).await.unwrap());
        assert!(!ra.insert_new(&during[0], later(), now()).await.unwrap());
        // A key still on the old master is served there.
        assert!(!rb.insert_new(&first, later(), now()).await.unwrap());
    });
    // The slot moves with its keys: the old master answers MOVED.
    c.migrate_slot(slot, to);
    assert_eq!(c.master_of(slot), to);
    assert_eq!(c.cli(to, &["exists", &keys::jti(&first)]), "1");
    assert_eq!(c.cli(to, &["exists", &keys::jti(&during[0])]), "1");
    rt.block_on(async {
        for r in [&ra, &rb] {
            assert!(!r.insert_new(&first, later(), now()).await.unwrap());
            assert!(!r.insert_new(&during[0], later(), now()).await.unwrap());
            assert!(r.contains(&first, now()).await.unwrap());
        }
        assert!(ra.insert_new(&during[1], later(), now()).await.unwrap());
        assert!(!rb.insert_new(&during[1], later(), now()).await.unwrap());
    });
    assert!(!a.is_out() && !b.is_out(), "redirections are no outage");
}

#[test]
fn a_killed_masters_replica_takes_over_and_no_acknowledged_jti_is_accepted_twice() {
    let dir = TempDir::new("cluster-failover");
    // One spare replica: after the failover Redis gives it to the promoted master, so
    // that replicas=1 is acknowledged again without restarting the killed node.
    let mut c = Cluster::start_with(
        &dir.0,
        Options {
            spares: 1,
            ..Options::default()
        },
    );
    let rt = runtime();
    let ack = "replicas=1,timeout=500";
    let (a, b) = (client(&c, ack), client(&c, ack));
    let (ra, rb) = (Replay::new(&a, 10), Replay::new(&b, 10));
    // A master with one replica (the spare went to another).
    let victim = c
        .nodes_info()
        .iter()
        .filter(|n| n.master)
        .map(|n| n.port)
        .find(|p| c.replicas_of(*p).len() == 1)
        .unwrap();
    let replica = c.replicas_of(victim);
    let ranges = ranges_of(&c, victim);
    let accepted = ids_in(&ranges, "before", 50);
    let grant = grant_in(&ranges, "grant");
    rt.block_on(async {
        for id in &accepted {
            assert!(ra.insert_new(id, later(), now()).await.unwrap());
        }
        assert!(ra.consume_grant(&grant, later(), now()).await.unwrap());
        // B knows the topology too (its slot map names the victim).
        assert!(!rb.insert_new(&accepted[0], later(), now()).await.unwrap());
    });
    let killed = Instant::now();
    c.kill(victim);
    // Until the replica is promoted (unavailable, timeout) and has a replica of its own
    // (unacknowledged), B's writes to the victim's slots fail closed; then they are served
    // again by the same client, without a restart.
    let fresh = ids_in(&ranges, "after", 2000);
    let mut refused = Vec::new();
    let mut served_at = None;
    let mut promoted_at = None;
    rt.block_on(async {
        for id in &fresh {
            match rb.insert_new(id, later(), now()).await {
                Ok(true) => {
                    served_at = Some(killed.elapsed());
                    break;
                }
                Ok(false) => panic!("a fresh id was refused as a replay"),
                Err(e) => {
                    // The new master answers, but has no replica yet.
                    if e.starts_with("store.unacknowledged") && promoted_at.is_none() {
                        promoted_at = Some(killed.elapsed());
                    }
                    refused.push(e);
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });
    let window = served_at.expect("the store serves the victim's slots again after failover");
    eprintln!(
        "failover: writes to the killed master's slots refused for {} ms, the promoted \
         replica answering (unacknowledged) after {:?} ms ({} attempts: {:?})",
        window.as_millis(),
        promoted_at.map(|d| d.as_millis()),
        refused.len(),
        refused
            .iter()
            .map(|e| e.split(':').next().unwrap_or_default().to_owned())
            .collect::<std::collections::BTreeSet<_>>()
    );
    assert!(!refused.is_empty(), "the master was down for a while");
    for e in &refused {
        assert!(
            ["store.unavailable", "store.timeout", "store.unacknowledged"]
                .iter()
                .any(|code| e.starts_with(code)),
            "{e}"
        );
    }
    let promoted = c.wait_for_new_master(ranges[0].0, victim);
    assert_eq!(vec![promoted], replica, "its replica took over");
    c.wait_until("the promoted master has the spare replica", |c| {
        c.replicas_of(promoted).len() == 1
    });
    rt.block_on(async {
        // Nothing acknowledged before the failover is accepted again, at either instance.
        for id in &accepted {
            assert!(!ra.insert_new(id, later(), now()).await.unwrap());
            assert!(!rb.insert_new(id, later(), now()).await.unwrap());
        }
        assert!(!rb.consume_grant(&grant, later(), now()).await.unwrap());
        // A write refused during the failover was never accepted; new ones are, once.
        let id = ids_in(&ranges, "later", 1).remove(0);
        assert!(ra.insert_new(&id, later(), now()).await.unwrap());
        assert!(!rb.insert_new(&id, later(), now()).await.unwrap());
    });
    // One outage for B however many requests it refused (logged once at its start and
    // once at its end); A, which sent nothing meanwhile, saw none.
    assert_eq!(b.metrics().outages_started(), 1);
    assert_eq!(
        b.metrics().errors("store.unavailable")
            + b.metrics().errors("store.timeout")
            + b.metrics().errors("store.unacknowledged"),
        u64::try_from(refused.len()).unwrap()
    );
    assert_eq!(a.metrics().outages_started(), 0);
}

#[test]
fn a_slot_without_master_and_replica_fails_alone_and_an_unreplicated_write_never_counts() {
    let dir = TempDir::new("cluster-slot-down");
    let mut c = Cluster::start(&dir.0);
    let rt = runtime();
    let (acked, unacked) = (client(&c, "replicas=1,timeout=100"), client(&c, "none"));
    let (ra, rn) = (Replay::new(&acked, 10), Replay::new(&unacked, 10));
    let victim = c.master_of(9000);
    let replica = c.replicas_of(victim)[0];
    let down = ranges_of(&c, victim);
    let other_master = c
        .nodes_info()
        .iter()
        .find(|n| n.master && n.port != victim)
        .map(|n| n.port)
        .unwrap();
    let up = ranges_of(&c, other_master);
    rt.block_on(async {
        // Both clients know the topology.
        assert!(ra.insert_new(b"warm", later(), now()).await.unwrap());
        assert!(!rn.insert_new(b"warm", later(), now()).await.unwrap());
    });
    // The replica dies: the master alone holds a write, which a failover would lose.
    c.kill(replica);
    let ids = ids_in(&down, "alone", 2);
    rt.block_on(async {
        let e = ra.insert_new(&ids[0], later(), now()).await.unwrap_err();
        assert!(e.starts_with("store.unacknowledged"), "{e}");
        assert!(e.contains("0 of 1 replicas"), "{e}");
        // With --store-ack none the master's word counts (the documented risk).
        assert!(rn.insert_new(&ids[1], later(), now()).await.unwrap());
    });
    // Then the master dies too: its slots have nobody.
    c.kill(victim);
    let down_ids = ids_in(&down, "down", 5);
    let up_ids = ids_in(&up, "up", 5);
    rt.block_on(async {
        for id in &down_ids {
            for r in [&ra, &rn] {
                let e = r.insert_new(id, later(), now()).await.unwrap_err();
                assert!(
                    e.starts_with("store.unavailable") || e.starts_with("store.timeout"),
                    "{e}"
                );
            }
        }
        // Other slots keep being served.
        for id in &up_ids {
            assert!(ra.insert_new(id, later(), now()).await.unwrap());
            assert!(!rn.insert_new(id, later(), now()).await.unwrap());
        }
    });
    assert!(
        acked.is_out() && unacked.is_out(),
        "a slot down is an outage"
    );
    // A message names the slot that failed.
    rt.block_on(async {
        let e = rn
            .insert_new(&down_ids[0], later(), now())
            .await
            .unwrap_err();
        let slot = keys::slot(keys::jti(&down_ids[0]).as_bytes());
        assert!(e.contains(&format!("slot {slot}")), "{e}");
    });
    // Both come back (empty: nothing persisted) and the slot is served again, by the
    // same clients.
    c.restart(victim);
    c.restart(replica);
    c.wait_until("the slot's master is back", |c| {
        c.live_ports()
            .iter()
            .all(|p| c.cli(*p, &["cluster", "info"]).contains("cluster_state:ok"))
            && c.replicas_of(victim) == vec![replica]
            && c.replicas_in_sync()
    });
    rt.block_on(async {
        let id = ids_in(&down, "back", 1).remove(0);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match ra.insert_new(&id, later(), now()).await {
                Ok(fresh) => {
                    assert!(fresh);
                    break;
                }
                Err(e) => assert!(Instant::now() < deadline, "not served again: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!rn.insert_new(&id, later(), now()).await.unwrap());
    });
}

/// Figures for docs/stores.md, not a test (`cargo test -p cada-e2e --test e2e
/// cluster_store::claim_latency -- --ignored --nocapture`): the latency of one claim (a
/// proof id's SET NX, with and without WAIT 1) one at a time, and the claims per second
/// of 64 concurrent claimers, on one Redis and on the local cluster. Loopback, debug-free
/// dependencies, a shared 2-core machine: compare the rows, not the absolute values.
#[test]
#[ignore = "measurement for docs/stores.md"]
fn claim_latency() {
    let dir = TempDir::new("cluster-latency");
    let c = Cluster::start(&dir.0);
    let (_redis, port) = cada_e2e::start_redis(&dir.0);
    let rt = runtime();
    let single = format!("redis://127.0.0.1:{port}");
    let cases: Vec<(&str, String, &str, usize)> = vec![
        ("memory", "memory".into(), "none", 1),
        ("one Redis, none, 1 conn", single.clone(), "none", 1),
        ("one Redis, none, 4 conns", single.clone(), "none", 4),
        ("cluster, none, 1 conn", c.url(), "none", 1),
        ("cluster, none, 4 conns", c.url(), "none", 4),
        (
            "cluster, replicas=1, 1 conn",
            c.url(),
            "replicas=1,timeout=100",
            1,
        ),
        (
            "cluster, replicas=1, 4 conns",
            c.url(),
            "replicas=1,timeout=100",
            4,
        ),
        (
            "cluster, replicas=1, 8 conns",
            c.url(),
            "replicas=1,timeout=100",
            8,
        ),
    ];
    for (name, url, ack, connections) in cases {
        let store = Store::open(
            &url,
            &StoreOptions {
                ack: Ack::parse(ack).unwrap(),
                max_in_flight: 1024,
                timeout: Duration::from_millis(1000),
                connections,
            },
        )
        .unwrap();
        let replay = std::sync::Arc::new(Replay::new(&store, 1 << 20));
        rt.block_on(async {
            // Warm up (connections, slot map).
            for i in 0..200 {
                let id = format!("{name}-warm-{i}");
                replay.insert_new(id.as_bytes(), later(), now()).await.unwrap();
            }
            let mut lat = Vec::new();
            for i in 0..3000 {
                let id = format!("{name}-seq-{i}");
                let t = Instant::now();
                assert!(replay.insert_new(id.as_bytes(), later(), now()).await.unwrap());
                lat.push(t.elapsed());
            }
            lat.sort();
            let p = |percent: usize| lat[(lat.len() * percent / 100).min(lat.len() - 1)].as_micros();
            let n = 20_000;
            let t = Instant::now();
            let mut tasks = Vec::new();
            for w in 0..64 {
                let r = replay.clone();
                let name = name.to_owned();
                tasks.push(tokio::spawn(async move {
                    for i in (w..n).step_by(64) {
                        let id = format!("{name}-par-{i}");
                        assert!(r.insert_new(id.as_bytes(), later(), now()).await.unwrap());
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            let rate = f64::from(n) / t.elapsed().as_secs_f64();
            eprintln!(
                "{name:30} one at a time: p50 {:>5} µs  p99 {:>5} µs   64 at once: {:>7.0} claims/s",
                p(50),
                p(99),
                rate
            );
        });
    }
}

/// On one Redis, a suspension written before issue 26 (`cada:susp:<dtc>`, no hash tag) stays
/// in force after the upgrade: read, never replaced, lifted by a reinstatement.
#[test]
fn a_suspension_under_its_old_name_holds_on_one_redis_until_reinstated() {
    let dir = TempDir::new("store-legacy");
    let (_redis, port) = cada_e2e::start_redis(&dir.0);
    let rt = runtime();
    let store = Store::open(
        &format!("redis://127.0.0.1:{port}"),
        &StoreOptions::default(),
    )
    .unwrap();
    let fleet = Fleet::new(&store);
    let dtc = "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU";
    let old = r#"{"owner":"did:key:z6Mk","reason":"before","id":"s0","since":1}"#;
    let out = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &port.to_string(),
            "set",
            &keys::legacy_suspension(dtc),
            old,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    rt.block_on(async {
        assert_eq!(fleet.suspended(dtc).await.unwrap().as_deref(), Some(old));
        assert!(!fleet.suspend(dtc, r#"{"id":"s1"}"#).await.unwrap());
        assert_eq!(fleet.suspended(dtc).await.unwrap().as_deref(), Some(old));
        assert!(fleet.reinstate(dtc).await.unwrap());
        assert_eq!(fleet.suspended(dtc).await.unwrap(), None);
        assert!(fleet.suspend(dtc, r#"{"id":"s2"}"#).await.unwrap());
        assert_eq!(
            fleet.suspended(dtc).await.unwrap().as_deref(),
            Some(r#"{"id":"s2"}"#)
        );
    });
    let cli = |args: &[&str]| {
        let o = std::process::Command::new("redis-cli")
            .arg("-p")
            .arg(port.to_string())
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    assert_eq!(cli(&["exists", &keys::legacy_suspension(dtc)]), "0");
    assert_eq!(cli(&["exists", &keys::suspension(dtc)]), "1");
}

/// The binaries take the cluster URL and the store flags: two `cada-verify serve` instances
/// on the cluster refuse each other's proofs as replays, are ready, and show the store's
/// metrics in `/metrics`; a malformed URL or ack setting stops a binary at start with the
/// rule it breaks. (The fleet e2e — gates, STS, failover under load — builds on this.)
#[test]
fn verifiers_on_the_cluster_share_replays_and_show_the_store_in_their_metrics() {
    let dir = TempDir::new("cluster-verify");
    let c = Cluster::start(&dir.0);
    let _e = cada_e2e::start_enclave(&dir.0, &[]);
    let _p = cada_e2e::start_parent(&dir.0, &[]);
    let sock = dir.0.join("agent.sock");
    let (_, id) =
        cada_e2e::http(&sock, "GET", "/v1/identity", None, Duration::from_secs(5)).unwrap();
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    let url = "https://api.example.com/v1/orders";
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
    let (_a, pa) = cada_e2e::start_verifier(&dir.0, "a", &args);
    let (_b, pb) = cada_e2e::start_verifier(&dir.0, "b", &args);
    for (first, second) in [(pa, pb), (pb, pa)] {
        let a = cada_e2e::mint(&sock, "POST", url, None, true);
        let body = serde_json::json!({"dpop": a["dpop"], "method": "POST", "url": url, "evidence": a["evidence"]});
        let (st, v) = cada_e2e::pop_verify(first, &body);
        assert_eq!((st, v["active"].as_bool()), (200, Some(true)), "{v}");
        let (st, v) = cada_e2e::pop_verify(second, &body);
        assert_eq!(
            (st, v["reasons"][0]["code"].as_str()),
            (401, Some("pop.replay")),
            "{v}"
        );
    }
    for port in [pa, pb] {
        let (st, _, _) = cada_e2e::http_tcp(port, "GET", "/readyz", "text/plain", b"").unwrap();
        assert_eq!(st, 200);
        let (_, _, m) = cada_e2e::http_tcp(port, "GET", "/metrics", "text/plain", b"").unwrap();
        for line in [
            "cada_store_outage 0",
            "cada_store_outages_total 0",
            "cada_store_operation_seconds_count{op=\"claim\"}",
        ] {
            assert!(m.contains(line), "{line} missing from /metrics:\n{m}");
        }
    }
    // Start-up refusals name the rule.
    for (flag, value, says) in [
        (
            "--replay-store",
            "redis+cluster://127.0.0.1:1,,127.0.0.1:2",
            "store.url",
        ),
        (
            "--replay-store",
            "redis-cluster://127.0.0.1:1",
            "unknown scheme",
        ),
        ("--store-ack", "replicas=0", "from 1 to 16"),
    ] {
        let mut cmd = std::process::Command::new(cada_e2e::bin("cada-verify"));
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--policy",
            policy.to_str().unwrap(),
        ]);
        cmd.args(["--audit-dir", dir.0.join("bad-audit").to_str().unwrap()]);
        if flag == "--store-ack" {
            cmd.args(["--replay-store", &store]);
        }
        let out = cmd.args([flag, value]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{flag} {value}: {err}"
        );
    }
}
