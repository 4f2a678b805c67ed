//! Shared-store benchmark of `cada-verify serve` (issue 26; not a test): `/v1/pop/verify` at an
//! offered rate (open loop, paced) on the memory store, one Redis (with one replica, so that
//! `--store-ack replicas=1` can be acknowledged) and a Redis Cluster, each with
//! `--store-ack none` and (Redis, cluster) `replicas=1`; then saturation (closed loop) of one
//! instance against two instances sharing the cluster, with the machine's CPU use during it.
//!
//! Run by `scripts/bench-cluster.sh`, which starts the stores and passes their URLs in
//! `CADA_BENCH_REDIS_URL` and `CADA_BENCH_CLUSTER_URL`. Arguments:
//! `[RATE=8000] [SECONDS=10] [CONNECTIONS=64] [SAT_SECONDS=10] [AUDIT=none]`.
//!
//! Every proof is minted before its run (outside the timing), after the instance accepted a
//! warm-up proof: a store that starts empty refuses proofs issued before its first contact
//! (`pop.store_epoch`) for about the clock skew allowed, so each row first sends fresh proofs
//! until one is accepted.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)] // bench code: casts of generated values, no outside bytes
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cada_e2e::{http_tcp, loadgen, start_verifier, Proc, TempDir};
use cada_enclave::key::SigningKey;
use cada_enclave::platform::sim::Sim;
use cada_enclave::signer::{DelegationPolicy, Signer};
use cada_protocol::jwk::SigAlg;
use cada_protocol::wire::SignPopRequest;
use hyper::body::Bytes;

const URL: &str = "https://api.example.com/v1/orders";

struct Bench {
    signer: Signer,
    req: SignPopRequest,
    evidence: String,
    policy: String,
    audit: String,
    dir: std::path::PathBuf,
}

impl Bench {
    fn proof_body(&self) -> Bytes {
        let dpop = self.signer.sign_pop(&self.req).expect("sign").dpop;
        Bytes::from(serde_json::json!({"dpop": dpop, "method": "POST", "url": URL}).to_string())
    }

    /// `n` fresh proofs, minted now (outside any timing).
    fn mint(&self, n: usize) -> Vec<Bytes> {
        let t = Instant::now();
        let v: Vec<Bytes> = (0..n).map(|_| self.proof_body()).collect();
        eprintln!("  minted {n} proofs in {:.1} s", t.elapsed().as_secs_f64());
        v
    }

    /// Starts an instance on `store` with `ack`, admits the evidence, and sends fresh proofs
    /// until one is accepted (the store's epoch rule may refuse the first ones).
    fn start(&self, tag: &str, store: &str, ack: &str) -> (Proc, u16) {
        let mut flags = vec![
            "--policy",
            self.policy.as_str(),
            "--replay-store",
            store,
            "--audit-durability",
            self.audit.as_str(),
        ];
        if ack != "-" {
            flags.extend(["--store-ack", ack]);
        }
        let (p, port) = start_verifier(&self.dir, tag, &flags);
        let ev = serde_json::json!({"evidence": self.evidence}).to_string();
        let (st, _, b) = http_tcp(
            port,
            "POST",
            "/v1/evidence/verify",
            "application/json",
            ev.as_bytes(),
        )
        .expect("evidence");
        assert_eq!(st, 200, "evidence refused: {b}");
        let t = Instant::now();
        let mut last = String::new();
        loop {
            let body = self.proof_body();
            let (st, _, b) =
                http_tcp(port, "POST", "/v1/pop/verify", "application/json", &body).expect("pop");
            if st == 200 {
                break;
            }
            last = format!("{st} {b}");
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{tag}: no proof accepted within 60 s; last answer: {last}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        if !last.is_empty() {
            eprintln!(
                "  {tag}: warmed up in {:.1} s (refused before: {})",
                t.elapsed().as_secs_f64(),
                last.chars().take(160).collect::<String>()
            );
        }
        (p, port)
    }
}

/// Busy and total jiffies of the whole machine (/proc/stat's first line).
fn machine_cpu() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// CPU jiffies (user + system) a process used so far.
fn proc_cpu(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command: state is [0], utime [11], stime [12].
    f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn server_errors(port: u16) -> String {
    let (_, _, m) = http_tcp(port, "GET", "/metrics", "text/plain", b"").expect("metrics");
    let errs: Vec<String> = m
        .lines()
        .filter(|l| l.starts_with("cada_store_errors_total{") && !l.ends_with(" 0"))
        .map(str::to_owned)
        .collect();
    if errs.is_empty() {
        "no store errors".into()
    } else {
        errs.join("; ")
    }
}

#[allow(clippy::too_many_lines)]
fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let rate: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(8000);
    let secs: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let conns: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(64);
    let sat_secs: u64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(10);
    let audit = args.get(5).cloned().unwrap_or_else(|| "none".into());
    let redis = std::env::var("CADA_BENCH_REDIS_URL").ok();
    let cluster = std::env::var("CADA_BENCH_CLUSTER_URL").ok();

    let dir = TempDir::new("store-bench");
    let sim = Sim::new(Some(&dir.0.join("state"))).expect("sim");
    let signer = Signer::new(
        SigningKey::generate(SigAlg::EdDSA).expect("key"),
        Box::new(sim),
        DelegationPolicy::default(),
    )
    .expect("signer");
    let evidence = signer.attest(&[]).expect("evidence").to_header();
    std::fs::write(
        dir.0.join("policy.toml"),
        format!(
            "[roots]\nnitro = [{:?}]\n[[audience]]\nprefix = \"https://api.example.com/\"\nmeasurements = [{{ PCR0 = \"{}\" }}]\n",
            dir.0.join("state/sim-root.der").display().to_string(),
            signer.measurements().expect("measurements")["PCR0"]
        ),
    )
    .expect("policy");
    let bench = Bench {
        signer,
        req: SignPopRequest {
            htm: "POST".into(),
            htu: URL.into(),
            access_token: None,
            nonce: None,
            ctx: BTreeMap::new(),
            bd: None,
            mcp: vec![],
            exchange: None,
            task: None,
            traceparent: None,
        },
        evidence,
        policy: dir.0.join("policy.toml").display().to_string(),
        audit,
        dir: dir.0.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    println!(
        "machine: {} cores; offered {rate}/s open loop, {conns} connections, {secs} s per row (after 1 s warm-up); audit {}",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        bench.audit
    );
    let mut rows: Vec<(&str, &str, String)> = vec![("memory", "memory", "none".into())];
    if let Some(r) = &redis {
        rows.push(("one Redis (+1 replica)", r, "none".into()));
        rows.push(("one Redis (+1 replica)", r, "replicas=1".into()));
    }
    if let Some(c) = &cluster {
        rows.push(("cluster 3+3", c, "none".into()));
        rows.push(("cluster 3+3", c, "replicas=1".into()));
    }
    println!("ROW | store | ack | achieved/s | p50 ms | p99 ms | max ms | errors | load | server");
    for (i, (name, url, ack)) in rows.iter().enumerate() {
        let (proc_, port) = bench.start(&format!("row{i}"), url, ack);
        let pool = bench.mint(rate as usize * (secs as usize + 1) + 2000);
        let body: loadgen::BodyFn = Arc::new(move |n| pool[n % pool.len()].clone());
        let r = loadgen::run(
            &rt,
            &loadgen::Target::Tcp(port),
            "/v1/pop/verify",
            body,
            conns,
            secs,
            Some(rate),
        );
        println!(
            "ROW | {name} | {ack} | {:.0} | {:.3} | {:.3} | {:.3} | {} | {} | {}",
            r.rate,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.errors,
            loadavg(),
            server_errors(port)
        );
        drop(proc_);
    }

    // Saturation: closed loop, one instance, then two instances sharing the store; the
    // machine's busy share says whether the CPU (not the store) is the ceiling.
    let Some(c) = cluster.as_deref() else { return };
    if sat_secs == 0 {
        return; // SAT_SECONDS=0: the paced rows only
    }
    let mut sat_rows: Vec<(String, &str, &str)> = vec![("memory".into(), "memory", "none")];
    for ack in ["none", "replicas=1"] {
        sat_rows.push((format!("cluster 3+3, {ack}"), c, ack));
    }
    println!("SAT | setup | instances | achieved/s (sum) | p50 ms | p99 ms | errors | machine busy | verifier CPU | load");
    for (label, url, ack) in &sat_rows {
        for n in [1usize, 2] {
            if n == 2 && *url == "memory" {
                continue; // two memory stores share nothing: not the question asked
            }
            let insts: Vec<(Proc, u16)> = (0..n)
                .map(|k| bench.start(&format!("sat-{ack}-{n}-{k}"), url, ack))
                .collect();
            // Generous pools: closed loop on two cores stays far below 15,000/s in all.
            let pools: Vec<Vec<Bytes>> = (0..n)
                .map(|_| bench.mint(15_000 * (sat_secs as usize + 1) / n))
                .collect();
            let (b0, t0) = machine_cpu();
            let p0: u64 = insts.iter().map(|(p, _)| proc_cpu(p.child.id())).sum();
            let started = Instant::now();
            let results: Vec<loadgen::LoadResult> = std::thread::scope(|s| {
                let hs: Vec<_> = insts
                    .iter()
                    .zip(pools)
                    .map(|((_, port), pool)| {
                        let port = *port;
                        let per = conns / n;
                        s.spawn(move || {
                            let rt = tokio::runtime::Builder::new_multi_thread()
                                .worker_threads(2)
                                .enable_all()
                                .build()
                                .expect("runtime");
                            let body: loadgen::BodyFn =
                                Arc::new(move |i| pool[i % pool.len()].clone());
                            loadgen::run(
                                &rt,
                                &loadgen::Target::Tcp(port),
                                "/v1/pop/verify",
                                body,
                                per,
                                sat_secs,
                                None,
                            )
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().expect("load")).collect()
            });
            let wall = started.elapsed().as_secs_f64();
            let (b1, t1) = machine_cpu();
            let p1: u64 = insts.iter().map(|(p, _)| proc_cpu(p.child.id())).sum();
            let busy = (b1 - b0) as f64 / (t1 - t0).max(1) as f64 * 100.0;
            // jiffies are 1/100 s on Linux; as a share of one core.
            let verifier = (p1 - p0) as f64 / 100.0 / wall * 100.0;
            let sum: f64 = results.iter().map(|r| r.rate).sum();
            let p50 = results.iter().map(|r| r.p50_ms).fold(0.0, f64::max);
            let p99 = results.iter().map(|r| r.p99_ms).fold(0.0, f64::max);
            let errors: u64 = results.iter().map(|r| r.errors).sum();
            println!(
                "SAT | {label} | {n} | {sum:.0} ({}) | {p50:.3} | {p99:.3} | {errors} | {busy:.0}% of all cores | {verifier:.0}% of one core | {}",
                results
                    .iter()
                    .map(|r| format!("{:.0}", r.rate))
                    .collect::<Vec<_>>()
                    .join(" + "),
                loadavg()
            );
            for (_, port) in &insts {
                eprintln!("  instance :{port}: {}", server_errors(*port));
            }
        }
    }
}
