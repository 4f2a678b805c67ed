//! What a one-transaction grant adds to a warm `Verifier::decide` (not a test; issue 23's
//! goal: ≤ 10 µs over a plain contract check, measured in the same run).
//!
//! Two sim enclaves locked to one owner. Enclave A works under a plain contract granting the
//! tool `transfer`; enclave B under a one-transaction grant for the same tool whose
//! authorization detail limits all four arguments (max, eq, one_of, prefix). Both sign the
//! same `tools/call` body, and one verifier (the audience names the owner, so rule 13 runs)
//! decides each proof with the body, as a gate does. The grant side also reads the call's
//! arguments from the body bytes inside the timing (`grants::tool_arguments`), since a gate
//! must; the plain side does not need to. The grant is not single use here (a single-use
//! grant signs one proof): single use adds one `SET NX` in the replay store.
//! Blocks of 500 proofs alternate between the two for 15 rounds, timed by the thread's CPU
//! clock; the medians per proof and their difference come from the same stretch of time.
//!
//!   cargo bench -p cada-e2e --bench grant_decide
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::cast_precision_loss)]

use std::collections::BTreeMap;
use std::hint::black_box;

use cada_attestation_verifier::chain::TrustAnchor;
use cada_attestation_verifier::decide::{Request, RequestBody, Stores};
use cada_attestation_verifier::grants::tool_arguments;
use cada_attestation_verifier::replay::MemoryReplayStore;
use cada_attestation_verifier::{Policy, UnixTime, Verifier, VerifierOptions};
use cada_contract::{AuthorizationDetail, Grant, OwnerAlg, OwnerKey, OwnerLock, Subject};
use cada_enclave::key::SigningKey;
use cada_enclave::platform::sim::Sim;
use cada_enclave::signer::{DelegationPolicy, Signer};
use cada_protocol::envelope::EvidenceEnvelope;
use cada_protocol::jwk::SigAlg;
use cada_protocol::mcp;
use cada_protocol::wire::SignPopRequest;
use nix::time::{clock_gettime, ClockId};

const URL: &str = "https://api.example.com/v1/mcp";
const BODY: &[u8] = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"transfer","arguments":{"amount":500,"currency":"USD","to":"alice","memo":"inv-2026-0042"}}}"#;
const DETAILS: &str = r#"[{"type":"mcp_tool_call","locations":["https://api.example.com/v1"],"tool":"transfer",
  "arguments":{"amount":{"max":500},"currency":{"eq":"USD"},"to":{"one_of":["alice","bob"]},"memo":{"prefix":"inv-"}},
  "identifier":"urn:uuid:6f1c3e0a-0000-4000-8000-000000000001"}]"#;
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

/// A sim enclave locked to `owner` with `contract(did)` installed; its evidence and root.
fn enclave(
    owner: &OwnerKey,
    now: u64,
    contract: impl Fn(&str) -> String,
) -> (Signer, EvidenceEnvelope, Vec<u8>, String) {
    let sim = Sim::new(None).unwrap();
    let root = sim.root_der().to_vec();
    let signer = Signer::new(
        SigningKey::generate(SigAlg::EdDSA).unwrap(),
        Box::new(sim),
        DelegationPolicy::default(),
    )
    .unwrap();
    let lock = OwnerLock::issue(owner, signer.key().did(), now, 300).unwrap();
    let env = EvidenceEnvelope::from_cbor(&signer.lock_owner(&lock).unwrap().envelope).unwrap();
    let c = contract(signer.key().did());
    signer.install_contract(&c, None).unwrap();
    (signer, env, root, c)
}

fn main() {
    let now = UnixTime::now().as_secs();
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let plain = enclave(&owner, now, |did| {
        let mut g = Grant::new(
            Subject::Key(did.into()),
            vec!["https://api.example.com/v1".into()],
            vec!["POST".into()],
            now - 10,
            now + 3600,
        );
        g.tools = vec!["transfer".into()];
        g.issue(&owner, now).unwrap()
    });
    let grant = enclave(&owner, now, |did| {
        let mut g = Grant::new(
            Subject::Key(did.into()),
            vec![],
            vec!["POST".into()],
            now - 10,
            now + 3600,
        );
        g.authorization_details = AuthorizationDetail::parse_draft_list(DETAILS).unwrap();
        g.issue(&owner, now).unwrap()
    });
    let pcr0 = plain.0.measurements().unwrap()["PCR0"].clone();
    let mut policy = Policy::from_toml(
        &format!(
            "[[audience]]\nprefix = \"https://api.example.com/v1\"\nmeasurements = [{{ PCR0 = \"{pcr0}\" }}]\nowners = [\"{}\"]\nchecks_arguments = true\n",
            owner.did()
        ),
        std::path::Path::new("."),
        "bench",
    )
    .unwrap();
    for root in [&plain.2, &grant.2] {
        policy
            .nitro_roots
            .add(TrustAnchor::from_der("sim", root).unwrap());
    }
    let verifier = Verifier::new(policy, VerifierOptions::default());
    let replay = MemoryReplayStore::new(1 << 20);
    let parsed = mcp::parse_body(BODY).unwrap();
    let calls = parsed.calls();
    let digest = mcp::body_digest(BODY);
    let mint = |s: &Signer| {
        s.sign_pop(&SignPopRequest {
            htm: "POST".into(),
            htu: URL.into(),
            access_token: None,
            nonce: None,
            ctx: BTreeMap::new(),
            bd: Some(digest.clone()),
            mcp: calls.clone(),
            exchange: None,
            task: None,
            traceparent: None,
        })
        .unwrap()
        .dpop
    };
    // The plain side: what a gate knows without reading arguments.
    let plain_body = RequestBody {
        digest: digest.clone(),
        calls: Some(calls.clone()),
        tool_arguments: None,
    };
    let decide = |dpop: &str,
                  evidence: Option<&EvidenceEnvelope>,
                  contract: Option<&str>,
                  body: &RequestBody| {
        verifier.decide(
            &Request {
                method: "POST",
                url: URL,
                dpop,
                access_token: None,
                evidence,
                contract,
                body: Some(body),
            },
            UnixTime::now(),
            Stores {
                replay: &replay,
                nonces: None,
            },
        )
    };
    let grant_body = || RequestBody {
        digest: digest.clone(),
        calls: Some(calls.clone()),
        tool_arguments: Some(tool_arguments(BODY).unwrap()),
    };
    // Warm: evidence admitted once per key, each contract sent once.
    let d = decide(&mint(&plain.0), Some(&plain.1), Some(&plain.3), &plain_body);
    assert!(d.accepted().is_some(), "plain: {:?}", d.refusal());
    let d = decide(
        &mint(&grant.0),
        Some(&grant.1),
        Some(&grant.3),
        &grant_body(),
    );
    assert!(d.accepted().is_some(), "grant: {:?}", d.refusal());
    // The grant is checked: other arguments are refused.
    let other = RequestBody {
        digest: digest.clone(),
        calls: Some(calls.clone()),
        tool_arguments: Some(
            tool_arguments(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"transfer","arguments":{"amount":501,"currency":"USD","to":"alice","memo":"inv-1"}}}"#).unwrap(),
        ),
    };
    let d = decide(&mint(&grant.0), None, None, &other);
    assert!(d.accepted().is_none(), "a grant must refuse amount 501");

    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        let proofs: Vec<String> = (0..BLOCK).map(|_| mint(&plain.0)).collect();
        let start = cpu_ns();
        for p in &proofs {
            let d = decide(p, None, None, &plain_body);
            assert!(black_box(d).accepted().is_some());
        }
        times[0].push((cpu_ns() - start) as f64 / 1000.0 / BLOCK as f64);
        let proofs: Vec<String> = (0..BLOCK).map(|_| mint(&grant.0)).collect();
        let start = cpu_ns();
        for p in &proofs {
            let body = grant_body();
            let d = decide(p, None, None, &body);
            assert!(black_box(d).accepted().is_some());
        }
        times[1].push((cpu_ns() - start) as f64 / 1000.0 / BLOCK as f64);
    }
    let [without, with] = times.map(median);
    println!(
        "warm decide with body, median µs per proof over {ROUNDS} rounds of {BLOCK}: plain contract (tool granted) {without:.2} | one-transaction grant (4 argument limits, arguments read from the body) {with:.2} | added {:.2} µs ({:.3}x)",
        with - without,
        with / without
    );
}
