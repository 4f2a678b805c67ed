//! Load benchmark of the signing path (not a test): N concurrent agents with keep-alive
//! connections ask the daemon for proofs over its unix socket for a fixed time; reports
//! proofs/s and p50/p99 latency, the in-process cost of the same JWS (the lower bound),
//! warm proof verification, and peak RSS of the daemon and the enclave.
//!
//! Run with `scripts/bench-signing.sh [CLIENTS] [SECONDS]` (builds release binaries first).
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use cada_attestation_verifier::pop::PopRequest;
use cada_attestation_verifier::replay::MemoryReplayStore;
use cada_attestation_verifier::UnixTime;
use cada_e2e::{loadgen, start_enclave, start_parent, TempDir};
use cada_enclave::key::SigningKey;
use cada_enclave::platform::sim::Sim;
use cada_enclave::signer::{DelegationPolicy, Signer};
use cada_protocol::jwk::SigAlg;
use cada_protocol::wire::SignPopRequest;
use hyper::body::Bytes;

const URL: &str = "https://api.example.com/v1/orders";

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let clients: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(32);
    let secs: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let dir = TempDir::new("bench");
    let enclave = start_enclave(&dir.0, &[]);
    let parent = start_parent(&dir.0, &["--connections", "2"]);
    let sock = dir.0.join("agent.sock");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let target = loadgen::Target::Unix(sock.clone());
    let body = Bytes::from(serde_json::json!({"method": "POST", "url": URL}).to_string());
    let body: loadgen::BodyFn = Arc::new(move |_| body.clone());
    let sat = loadgen::run(&rt, &target, "/v1/pop", body.clone(), clients, secs, None);
    println!("daemon over unix socket, {clients} clients, closed loop (saturation): {sat}");
    for pace in [10_000u32, 20_000] {
        let r = loadgen::run(
            &rt,
            &target,
            "/v1/pop",
            body.clone(),
            clients,
            secs,
            Some(pace),
        );
        println!("daemon over unix socket, {clients} clients, paced at {pace}/s: {r}");
    }
    let rate = sat.rate;
    let daemon_rss = parent.peak_rss_kib().unwrap_or(0);
    let enclave_rss = enclave.peak_rss_kib().unwrap_or(0);
    // Peak RSS counts the binary's code pages too (shared, clean, and more of them with a
    // larger binary and a warm page cache); the private part is the memory the process uses.
    println!(
        "peak RSS: daemon {:.1} MiB, enclave {:.1} MiB; private (anon) daemon {:.1} MiB, enclave {:.1} MiB",
        daemon_rss as f64 / 1024.0,
        enclave_rss as f64 / 1024.0,
        anon_kib(&parent) as f64 / 1024.0,
        anon_kib(&enclave) as f64 / 1024.0
    );

    // The lower bound: the same JWS made in-process by the same signer code.
    let sim = Sim::new(None).expect("sim platform");
    let root = sim.root_der().to_vec();
    let key = SigningKey::generate(SigAlg::EdDSA).expect("key");
    let signer =
        Arc::new(Signer::new(key, Box::new(sim), DelegationPolicy::default()).expect("signer"));
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
    let n = 50_000;
    let t = Instant::now();
    let tokens: Vec<String> = (0..n)
        .map(|_| signer.sign_pop(&req).expect("sign").dpop)
        .collect();
    let sign_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!(
        "in-process JWS (sign_pop, Ed25519): {sign_us:.1} µs/proof = {:.0} proofs/s per core; daemon path reaches {:.1}% of one core's lower bound",
        1e6 / sign_us,
        rate / (1e6 / sign_us) * 100.0
    );

    // Warm verification: evidence admitted once, then every token checked (unique jti).
    let verifier =
        cada_e2e::verifier_trusting(std::slice::from_ref(&root), cada_e2e::test_pop_config());
    let env = signer.attest(&[]).expect("evidence");
    let now = UnixTime::now();
    verifier.admit_evidence(&env, now).expect("admit");
    let replay = MemoryReplayStore::default();
    let pr = PopRequest {
        method: "POST",
        url: URL,
        ..PopRequest::default()
    };
    let t = Instant::now();
    for tok in &tokens {
        verifier.verify(tok, &pr, &replay, now).expect("verify");
    }
    let verify_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let t = Instant::now();
    let pk = signer.key().jwk().public_key_bytes().expect("pk");
    let (si, sig) = tokens[0].rsplit_once('.').expect("jws");
    let sig = cada_protocol::b64::decode("sig", sig, 128).expect("sig");
    for _ in 0..n {
        aws_lc_rs_verify(&pk, si.as_bytes(), &sig);
    }
    let raw_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!(
        "warm proof verification: {verify_us:.1} µs/token ({:.0}/s per core); raw Ed25519 verify {raw_us:.1} µs ({:.2}x)",
        1e6 / verify_us,
        verify_us / raw_us
    );
}

/// Resident private memory (`RssAnon`) of a child, in KiB (0 if unreadable).
fn anon_kib(p: &cada_e2e::Proc) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", p.child.id()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("RssAnon:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The same primitive the verifier uses, without any of its checks.
fn aws_lc_rs_verify(pk: &[u8], msg: &[u8], sig: &[u8]) {
    let ok = aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, pk)
        .verify(msg, sig)
        .is_ok();
    assert!(ok);
}
