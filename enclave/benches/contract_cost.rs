//! What a trust contract adds to `sign_pop`: the same request signed by an unlocked signer
//! (boot flags only) and by a signer locked to an owner with several contracts installed,
//! the matching one installed first (so the others are tried before it), for Ed25519 and
//! ES256 keys.
//!
//! Criterion measures each case on its own; on a shared 2-core VM the cases drift by ±25%
//! between runs, so the bench first prints an interleaved A/B table: blocks of 2,000 calls
//! alternate between the unlocked and the locked signer for 15 rounds, and the medians
//! per call and their ratio come from the same stretch of time.
//!
//!   cargo bench -p cada-enclave --bench contract_cost
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use cada_contract::{Grant, OwnerAlg, OwnerKey, OwnerLock, Subject};
use cada_enclave::key::SigningKey;
use cada_enclave::platform::sim::Sim;
use cada_enclave::signer::{DelegationPolicy, Signer};
use cada_protocol::jwk::SigAlg;
use cada_protocol::wire::SignPopRequest;
use criterion::{criterion_group, criterion_main, Criterion};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn signer(alg: SigAlg) -> Signer {
    let key = SigningKey::generate(alg).unwrap();
    Signer::new(
        key,
        Box::new(Sim::new(None).unwrap()),
        DelegationPolicy::default(),
    )
    .unwrap()
}

fn locked(alg: SigAlg, others: usize) -> Signer {
    let s = signer(alg);
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let lock = OwnerLock::issue(&owner, s.key().did(), now(), 600).unwrap();
    s.lock_owner(&lock).unwrap();
    let grant = |aud: &str| {
        let mut g = Grant::new(
            Subject::Key(s.key().did().into()),
            vec![aud.into()],
            vec!["GET".into(), "POST".into()],
            now() - 10,
            now() + 3600,
        );
        g.budget = Some(u64::MAX / 2);
        g.rate_per_second = Some(u32::MAX);
        g.issue(&owner, now()).unwrap()
    };
    s.install_contract(&grant("https://api.example.com/v1"), None)
        .unwrap();
    for i in 0..others {
        s.install_contract(&grant(&format!("https://other{i}.example.com/")), None)
            .unwrap();
    }
    s
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Interleaved A/B: median µs per call of each signer, same stretch of time.
fn interleaved(req: &SignPopRequest) {
    const BLOCK: u32 = 2_000;
    const ROUNDS: usize = 15;
    println!("interleaved A/B, {ROUNDS} rounds of {BLOCK} calls each (median µs per call)");
    for (name, alg) in [("Ed25519", SigAlg::EdDSA), ("ES256", SigAlg::ES256)] {
        let signers = [signer(alg), locked(alg, 0), locked(alg, 7)];
        let mut times = vec![Vec::new(); signers.len()];
        for _ in 0..ROUNDS {
            for (s, t) in signers.iter().zip(times.iter_mut()) {
                let start = std::time::Instant::now();
                for _ in 0..BLOCK {
                    std::hint::black_box(s.sign_pop(req).unwrap());
                }
                t.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(BLOCK));
            }
        }
        let m: Vec<f64> = times.into_iter().map(median).collect();
        println!(
            "  {name:8} unlocked {:6.2} | 1 contract {:6.2} ({:.3}x) | 8 contracts, match last {:6.2} ({:.3}x)",
            m[0],
            m[1],
            m[1] / m[0],
            m[2],
            m[2] / m[0]
        );
    }
}

fn bench(c: &mut Criterion) {
    let req = SignPopRequest {
        htm: "GET".into(),
        htu: "https://api.example.com/v1/items/42".into(),
        access_token: None,
        nonce: None,
        ctx: BTreeMap::new(),
        bd: None,
        mcp: vec![],
        exchange: None,
        task: None,
        traceparent: None,
    };
    interleaved(&req);
    for (name, alg) in [("Ed25519", SigAlg::EdDSA), ("ES256", SigAlg::ES256)] {
        let mut g = c.benchmark_group(format!("sign_pop/{name}"));
        let plain = signer(alg);
        g.bench_function("unlocked", |b| b.iter(|| plain.sign_pop(&req).unwrap()));
        let one = locked(alg, 0);
        g.bench_function("contract, 1 installed", |b| {
            b.iter(|| one.sign_pop(&req).unwrap());
        });
        let many = locked(alg, 7);
        g.bench_function("contract, 8 installed", |b| {
            b.iter(|| many.sign_pop(&req).unwrap());
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
