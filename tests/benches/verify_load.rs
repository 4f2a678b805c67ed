//! Load benchmark of `cada-verify serve` (not a test): warm `/v1/pop/verify` over HTTP with
//! the memory replay store and with Redis — saturation and paced — for each audit durability
//! mode asked for, beside the in-process library verification rate, and the memory of
//! 1 million live replay-cache entries.
//!
//! Run with `scripts/bench-verify.sh [CONNECTIONS] [SECONDS] [DURABILITIES] [RATES]`, e.g.
//! `scripts/bench-verify.sh 64 5 fsync,batch-ms:5,none 2000,8000` (defaults: 64, 5, `fsync`,
//! `5000,8000`).
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)] // test code: casts of generated values, no outside bytes
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use cada_attestation_verifier::pop::PopRequest;
use cada_attestation_verifier::replay::{MemoryReplayStore, ReplayStore};
use cada_attestation_verifier::UnixTime;
use cada_e2e::{http_tcp, loadgen, start_redis, start_verifier, TempDir};
use cada_enclave::key::SigningKey;
use cada_enclave::platform::sim::Sim;
use cada_enclave::signer::{DelegationPolicy, Signer};
use cada_protocol::jwk::SigAlg;
use cada_protocol::wire::SignPopRequest;
use hyper::body::Bytes;

const URL: &str = "https://api.example.com/v1/orders";

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let conns: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let secs: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let durabilities: Vec<String> = args
        .get(3)
        .map_or("fsync", String::as_str)
        .split(',')
        .map(str::to_owned)
        .collect();
    let paces: Vec<u32> = args
        .get(4)
        .map_or("5000,8000", String::as_str)
        .split(',')
        .map(|r| {
            r.parse()
                .expect("RATES: comma-separated requests per second")
        })
        .collect();
    // Memory of the replay cache with 1 million live entries, measured first, in a fresh heap.
    let before = loadgen::self_rss_kib();
    let big = MemoryReplayStore::new(1_100_000);
    let now = UnixTime::now();
    let exp = UnixTime::from_secs(now.as_secs() + 3600);
    for i in 0..1_000_000u64 {
        let key = format!("jkt-of-some-key-43-chars-long-xxxxxxxxxxxxx {i:022}");
        assert_eq!(big.insert_new(key.as_bytes(), exp, now), Ok(true));
    }
    let after = loadgen::self_rss_kib();
    println!(
        "memory replay store: 1,000,000 live entries add {:.1} MiB RSS = {:.0} bytes/entry",
        (after - before) as f64 / 1024.0,
        (after - before) as f64 * 1024.0 / 1e6
    );
    assert_eq!(big.len(), 1_000_000);
    drop(big);

    let dir = TempDir::new("verify-bench");
    let sim = Sim::new(Some(&dir.0.join("state"))).expect("sim");
    let root = sim.root_der().to_vec();
    let signer = Signer::new(
        SigningKey::generate(SigAlg::EdDSA).expect("key"),
        Box::new(sim),
        DelegationPolicy::default(),
    )
    .expect("signer");
    let env = signer.attest(&[]).expect("evidence");
    let req = SignPopRequest {
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
    };
    // Proofs live 30 s: each run gets a fresh pool, minted just before it, large enough that
    // no proof is sent twice (a replay would be a rejection, not the accept path measured).
    let mint = |n: usize| -> loadgen::BodyFn {
        let t = Instant::now();
        let bodies: Vec<Bytes> = (0..n)
            .map(|_| {
                let dpop = signer.sign_pop(&req).expect("sign").dpop;
                Bytes::from(
                    serde_json::json!({"dpop": dpop, "method": "POST", "url": URL}).to_string(),
                )
            })
            .collect();
        eprintln!("minted {n} proofs in {:.1} s", t.elapsed().as_secs_f64());
        Arc::new(move |i| bodies[i % bodies.len()].clone())
    };
    let window = secs as usize + 1;
    std::fs::write(
        dir.0.join("policy.toml"),
        format!(
            "[roots]\nnitro = [{:?}]\n[[audience]]\nprefix = \"https://api.example.com/\"\nmeasurements = [{{ PCR0 = \"{}\" }}]\n",
            dir.0.join("state/sim-root.der").display().to_string(),
            signer.measurements().expect("measurements")["PCR0"]
        ),
    )
    .expect("policy");
    let policy = dir.0.join("policy.toml");
    let policy = policy.to_str().expect("utf8");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (_redis, rport) = start_redis(&dir.0);
    let redis_url = format!("redis://127.0.0.1:{rport}");
    let mut http_rates = Vec::new();
    let runs = durabilities.iter().flat_map(|d| {
        [("memory", "memory"), ("redis", redis_url.as_str())].map(|(s, url)| (d.as_str(), s, url))
    });
    for (durability, store_name, store) in runs {
        let name = format!("{store_name} replay store, audit {durability}");
        let tag = format!("{store_name}-{}", durability.replace(':', "-"));
        // `fsync` is the default: no flag, so a build from before the flag can be compared.
        let mut flags = vec!["--policy", policy, "--replay-store", store];
        if durability != "fsync" {
            flags.extend(["--audit-durability", durability]);
        }
        let (server, port) = start_verifier(&dir.0, &tag, &flags);
        let ev = serde_json::json!({"evidence": env.to_header()}).to_string();
        let (st, _, b) = http_tcp(
            port,
            "POST",
            "/v1/evidence/verify",
            "application/json",
            ev.as_bytes(),
        )
        .expect("evidence");
        assert_eq!(st, 200, "{b}");
        let target = loadgen::Target::Tcp(port);
        let sat = loadgen::run(
            &rt,
            &target,
            "/v1/pop/verify",
            mint(15_000 * window),
            conns,
            secs,
            None,
        );
        println!(
            "HTTP /v1/pop/verify, {name}, {conns} connections, closed loop (saturation): {sat}"
        );
        http_rates.push((name.clone(), sat.rate));
        for &pace in &paces {
            let r = loadgen::run(
                &rt,
                &target,
                "/v1/pop/verify",
                mint(pace as usize * window + 1000),
                conns,
                secs,
                Some(pace),
            );
            println!("HTTP /v1/pop/verify, {name}, {conns} connections, paced at {pace}/s: {r}");
        }
        let (_, _, m) = http_tcp(port, "GET", "/metrics", "text/plain", b"").expect("metrics");
        println!("  server-side stage p99 over all runs: {}", stage_p99(&m));
        let reject: u64 = m
            .lines()
            .filter(|l| {
                l.starts_with("cada_verify_decisions_total") && l.contains("decision=\"reject\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        println!(
            "  rejected during the {name} runs: {reject} (0 expected: each proof is sent once); server peak RSS {:.1} MiB",
            server.peak_rss_kib().unwrap_or(0) as f64 / 1024.0
        );
    }

    // In-process: the same checks through the library, one core.
    let v = cada_e2e::verifier_trusting(std::slice::from_ref(&root), cada_e2e::test_pop_config());
    let now = UnixTime::now();
    v.admit_evidence(&env, now).expect("admit");
    let replay = MemoryReplayStore::default();
    let tokens: Vec<String> = (0..100_000)
        .map(|_| signer.sign_pop(&req).expect("sign").dpop)
        .collect();
    let pr = PopRequest {
        method: "POST",
        url: URL,
        ..PopRequest::default()
    };
    let t = Instant::now();
    for tok in &tokens {
        v.verify(tok, &pr, &replay, now).expect("verify");
    }
    let lib_rate = tokens.len() as f64 / t.elapsed().as_secs_f64();
    println!(
        "in-process library verification: {lib_rate:.0}/s per core ({:.1} µs/token)",
        1e6 / lib_rate
    );
    for (name, r) in &http_rates {
        println!("  HTTP ({name}) / in-process one core: {:.2}", r / lib_rate);
    }
}

/// The upper bucket bound holding the 99th percentile of each `cada_verify_stage_seconds`.
fn stage_p99(metrics: &str) -> String {
    let mut stages: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for l in metrics
        .lines()
        .filter(|l| l.starts_with("cada_verify_stage_seconds_bucket"))
    {
        let le = l
            .split("le=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("+Inf");
        let stage = l
            .split("stage=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?");
        let count: f64 = l
            .rsplit(' ')
            .next()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0.0);
        let le: f64 = le.parse().unwrap_or(f64::INFINITY);
        stages
            .entry(stage.to_owned())
            .or_default()
            .push((le, count));
    }
    stages
        .iter()
        .map(|(stage, buckets)| {
            let total = buckets.iter().map(|b| b.1).fold(0.0, f64::max);
            let p = buckets
                .iter()
                .find(|(_, c)| *c >= total * 0.99)
                .map_or(f64::INFINITY, |(le, _)| *le);
            format!("{stage} ≤ {:.0} µs", p * 1e6)
        })
        .collect::<Vec<_>>()
        .join(", ")
}
