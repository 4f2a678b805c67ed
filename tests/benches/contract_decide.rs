//! What trust-contract checking (rule 13) adds to a warm `Verifier::decide` (not a test).
//!
//! One sim enclave, locked to an owner, with one contract installed. The same kind of
//! proof (fresh `jti`, minted outside the timing) is decided under two policies that differ
//! only in `owners = [...]` on the audience: without it rule 13 is skipped; with it the
//! contract is found by digest in the verifier's cache (sent once beforehand, as a
//! resource server sees it after the first request), its owner, subject, validity and
//! request permissions checked. Blocks of 500 proofs alternate between the two verifiers
//! for 15 rounds, timed by the thread's CPU clock, and the medians per proof and their
//! difference come from the same stretch of time.
//!
//!   cargo bench -p cada-e2e --bench contract_decide
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::cast_precision_loss)]

use std::collections::BTreeMap;
use std::hint::black_box;

use cada_attestation_verifier::chain::TrustAnchor;
use cada_attestation_verifier::decide::{Request, Stores};
use cada_attestation_verifier::replay::MemoryReplayStore;
use cada_attestation_verifier::{Policy, UnixTime, Verifier, VerifierOptions};
use cada_contract::{Grant, OwnerAlg, OwnerKey, OwnerLock, Subject};
use cada_enclave::key::SigningKey;
use cada_enclave::platform::sim::Sim;
use cada_enclave::signer::{DelegationPolicy, Signer};
use cada_protocol::envelope::EvidenceEnvelope;
use cada_protocol::jwk::SigAlg;
use cada_protocol::wire::SignPopRequest;
use nix::time::{clock_gettime, ClockId};

const URL: &str = "https://api.example.com/v1/orders";
const BLOCK: usize = 500;
const ROUNDS: usize = 15;

fn cpu_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap();
    u64::try_from(t.tv_sec()).unwrap() * 1_000_000_000 + u64::try_from(t.tv_nsec()).unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let sim = Sim::new(None).unwrap();
    let root = sim.root_der().to_vec();
    let signer = Signer::new(
        SigningKey::generate(SigAlg::EdDSA).unwrap(),
        Box::new(sim),
        DelegationPolicy::default(),
    )
    .unwrap();
    let now = UnixTime::now().as_secs();
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let lock = OwnerLock::issue(&owner, signer.key().did(), now, 300).unwrap();
    let env = EvidenceEnvelope::from_cbor(&signer.lock_owner(&lock).unwrap().envelope).unwrap();
    let contract = Grant::new(
        Subject::Key(signer.key().did().into()),
        vec!["https://api.example.com/v1".into()],
        vec!["POST".into()],
        now - 10,
        now + 3600,
    )
    .issue(&owner, now)
    .unwrap();
    signer.install_contract(&contract, None).unwrap();
    let pcr0 = signer.measurements().unwrap()["PCR0"].clone();
    let policy = |owners: &str| {
        let mut p = Policy::from_toml(
            &format!(
                "[[audience]]\nprefix = \"https://api.example.com/v1\"\nmeasurements = [{{ PCR0 = \"{pcr0}\" }}]\n{owners}"
            ),
            std::path::Path::new("."),
            "bench",
        )
        .unwrap();
        p.nitro_roots
            .add(TrustAnchor::from_der("sim", &root).unwrap());
        p
    };
    let verifiers = [
        Verifier::new(policy(""), VerifierOptions::default()),
        Verifier::new(
            policy(&format!("owners = [\"{}\"]\n", owner.did())),
            VerifierOptions::default(),
        ),
    ];
    let replay = MemoryReplayStore::new(1 << 20);
    let mint = || {
        signer
            .sign_pop(&SignPopRequest {
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
            })
            .unwrap()
            .dpop
    };
    let decide =
        |v: &Verifier, dpop: &str, evidence: Option<&EvidenceEnvelope>, contract: Option<&str>| {
            v.decide(
                &Request {
                    method: "POST",
                    url: URL,
                    dpop,
                    access_token: None,
                    evidence,
                    contract,
                    body: None,
                },
                UnixTime::now(),
                Stores {
                    replay: &replay,
                    nonces: None,
                },
            )
        };
    // Warm both: evidence admitted once, the contract sent once.
    for v in &verifiers {
        let d = decide(v, &mint(), Some(&env), Some(&contract));
        assert!(d.accepted().is_some(), "{:?}", d.refusal());
    }
    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (v, t) in verifiers.iter().zip(times.iter_mut()) {
            let proofs: Vec<String> = (0..BLOCK).map(|_| mint()).collect();
            let start = cpu_ns();
            for p in &proofs {
                let d = decide(v, p, None, None);
                assert!(black_box(d).accepted().is_some());
            }
            t.push((cpu_ns() - start) as f64 / 1000.0 / BLOCK as f64);
        }
    }
    let [without, with] = times.map(median);
    println!(
        "warm decide, median µs per proof over {ROUNDS} rounds of {BLOCK}: no contract rule {without:.2} | contract rule (cached) {with:.2} | added {:.2} µs ({:.3}x)",
        with - without,
        with / without
    );
}
