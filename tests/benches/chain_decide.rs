//! What each link of a delegation chain adds to a warm `Verifier::decide` (not a test;
//! issue 24's goal: each extra link ≤ 10 µs).
//!
//! Five sim enclaves in process, locked to one owner. The owner's contract (it may
//! delegate four levels) goes to enclave 0; enclave 0 delegates to 1, 1 to 2, 2 to 3, 3 to
//! 4, each with the enclave's `delegate` op (real evidence, real signatures), and each
//! installs its chain with the owner's status list. One verifier (the audience names the
//! owner and allows chains four deep; the status list installed) decides proofs of enclave
//! 0 (the owner's contract: depth 0), 1, 2 and 4. Each chain is sent once beforehand, as a
//! resource server sees it on the first request, then found by the leaf's digest: a warm
//! decide checks each link's status bit and the leaf's permissions, not the signatures
//! again. Blocks of BLOCK proofs (minted outside the timing) rotate over the four depths for
//! ROUNDS rounds, timed by the thread's CPU clock; the medians per proof and the cost per
//! extra link come from the same stretch of time.
//!
//!   cargo bench -p cada-e2e --bench chain_decide [-- ROUNDS BLOCK]
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::cast_precision_loss)]

use std::collections::BTreeMap;
use std::hint::black_box;

use cada_attestation_verifier::chain::TrustAnchor;
use cada_attestation_verifier::decide::{Request, Stores};
use cada_attestation_verifier::replay::MemoryReplayStore;
use cada_attestation_verifier::{Policy, UnixTime, Verifier, VerifierOptions};
use cada_contract::{DelegationRules, Grant, OwnerAlg, OwnerKey, OwnerLock, StatusList, Subject};
use cada_enclave::key::SigningKey;
use cada_enclave::platform::sim::Sim;
use cada_enclave::signer::{DelegationPolicy, Signer};
use cada_protocol::envelope::EvidenceEnvelope;
use cada_protocol::jwk::SigAlg;
use cada_protocol::wire::{DelegateRequest, SignPopRequest};
use nix::time::{clock_gettime, ClockId};

const URL: &str = "https://api.example.com/v1/orders";
const STATUS_URL: &str = "https://owner.example/status/1";
const DEPTHS: [usize; 4] = [0, 1, 2, 4];

fn cpu_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap();
    u64::try_from(t.tv_sec()).unwrap() * 1_000_000_000 + u64::try_from(t.tv_nsec()).unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .filter_map(|a| a.parse::<usize>().ok());
    let rounds = args.next().unwrap_or(15);
    let block = args.next().unwrap_or(500);
    let now = UnixTime::now().as_secs();
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let list = StatusList::new(STATUS_URL, 1 << 12)
        .unwrap()
        .issue(&owner, now, None)
        .unwrap();
    let mut enclaves = Vec::new();
    let mut roots = Vec::new();
    let mut envs = Vec::new();
    for _ in 0..5 {
        let sim = Sim::new(None).unwrap();
        roots.push(sim.root_der().to_vec());
        let s = Signer::new(
            SigningKey::generate(SigAlg::EdDSA).unwrap(),
            Box::new(sim),
            DelegationPolicy::default(),
        )
        .unwrap();
        let lock = OwnerLock::issue(&owner, s.key().did(), now, 300).unwrap();
        envs.push(EvidenceEnvelope::from_cbor(&s.lock_owner(&lock).unwrap().envelope).unwrap());
        enclaves.push(s);
    }
    let mut g = Grant::new(
        Subject::Key(enclaves[0].key().did().into()),
        vec!["https://api.example.com/v1".into()],
        vec!["POST".into()],
        now - 10,
        now + 3600,
    );
    g.delegation = Some(DelegationRules {
        max_depth: 4,
        status_list: STATUS_URL.into(),
        status_range: [100, 1000],
    });
    let c0 = g.issue(&owner, now).unwrap();
    enclaves[0].install_contract(&c0, None).unwrap();
    // chains[k]: what enclave k installed (the owner's contract for k = 0).
    let mut chains = vec![c0.clone()];
    for k in 1..5u64 {
        let parent = &enclaves[usize::try_from(k).unwrap() - 1];
        let child = &enclaves[usize::try_from(k).unwrap()];
        let leaf = chains
            .last()
            .unwrap()
            .rsplit('~')
            .next()
            .unwrap()
            .to_owned();
        let grant = if k < 4 {
            serde_json::json!({"delegation": {"maxDepth": 4 - k, "statusList": STATUS_URL,
                "statusRange": [100 * (k + 1), 1000]}})
        } else {
            serde_json::json!({})
        };
        let r = parent
            .delegate(&DelegateRequest {
                parent: cada_contract::digest_of(&leaf),
                subject: child.key().did().into(),
                grant: grant.to_string(),
                valid_until: now + 3000,
                status_index: Some(100 * k + 50),
                task: None,
            })
            .unwrap();
        child.install_contract(&r.chain, Some(&list)).unwrap();
        chains.push(r.chain);
    }
    let pcr0 = enclaves[0].measurements().unwrap()["PCR0"].clone();
    let mut policy = Policy::from_toml(
        &format!(
            "[[audience]]\nprefix = \"https://api.example.com/v1\"\nmeasurements = [{{ PCR0 = \"{pcr0}\" }}]\nowners = [\"{}\"]\nmax_delegation_depth = 4\n",
            owner.did()
        ),
        std::path::Path::new("."),
        "bench",
    )
    .unwrap();
    for root in &roots {
        policy
            .nitro_roots
            .add(TrustAnchor::from_der("sim", root).unwrap());
    }
    let verifier = Verifier::new(policy, VerifierOptions::default());
    verifier
        .install_status_list(&list, now, UnixTime::now())
        .unwrap();
    let replay = MemoryReplayStore::new(1 << 22);
    let mint = |s: &Signer| {
        s.sign_pop(&SignPopRequest {
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
    let decide = |dpop: &str, evidence: Option<&EvidenceEnvelope>, contract: Option<&str>| {
        verifier.decide(
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
    // Warm: each enclave's evidence admitted once, each chain sent once.
    for &k in &DEPTHS {
        let d = decide(&mint(&enclaves[k]), Some(&envs[k]), Some(&chains[k]));
        assert!(d.accepted().is_some(), "depth {k}: {:?}", d.refusal());
        let d = decide(&mint(&enclaves[k]), None, None);
        assert!(d.accepted().is_some(), "depth {k}, warm: {:?}", d.refusal());
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); DEPTHS.len()];
    for _ in 0..rounds {
        for (i, &k) in DEPTHS.iter().enumerate() {
            let proofs: Vec<String> = (0..block).map(|_| mint(&enclaves[k])).collect();
            let start = cpu_ns();
            for p in &proofs {
                let d = decide(p, None, None);
                assert!(black_box(d).accepted().is_some());
            }
            times[i].push((cpu_ns() - start) as f64 / 1000.0 / block as f64);
        }
    }
    let m: Vec<f64> = times.into_iter().map(median).collect();
    println!(
        "warm decide, median µs per proof over {rounds} rounds of {block}: owner contract {:.2} | depth 1 {:.2} | depth 2 {:.2} | depth 4 {:.2}",
        m[0], m[1], m[2], m[3]
    );
    println!(
        "per extra link: depth 0→1 {:.2} µs, 1→2 {:.2} µs, 2→4 {:.2} µs per link, 1→4 {:.2} µs per link (goal ≤ 10)",
        m[1] - m[0],
        m[2] - m[1],
        (m[3] - m[2]) / 2.0,
        (m[3] - m[1]) / 3.0
    );
}
