//! Issue 24: property tests on the meaning of delegation, not on the subset function.
//!
//! For random owner contracts C (audiences, methods, tools), candidate delegations D (each
//! member kept, narrowed, or widened, and a lifetime inside or past C's) and requests r
//! (method, URL, tool call), with real enclaves in process (the `cada-enclave` library on
//! the `sim` platform, locked to one owner) and a real verifier:
//!
//! 1. whenever the planner's enclave signs D and the worker's enclave, holding the chain
//!    C~D, signs r, the planner's enclave (holding C alone) signs r: a delegation never
//!    lets anyone do what its parent could not;
//! 2. `Verifier::decide` agrees with the enclaves on every (D, r): it accepts the worker's
//!    proof for r exactly when the planner's enclave signed D and the worker's enclave
//!    signed r. Where an enclave refused, the test plays a compromised one: it signs D (or
//!    the proof for r) with that enclave's own key and real evidence, outside the rules,
//!    and the verifier must refuse what the enclave would not have signed.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cada_attestation_verifier::chain::TrustAnchor;
use cada_attestation_verifier::decide::{Request, RequestBody, Stores};
use cada_attestation_verifier::replay::MemoryReplayStore;
use cada_attestation_verifier::{Policy, UnixTime, Verifier, VerifierOptions};
use cada_contract::{
    narrow_grant, verify_chain, DelegationRules, Draft, Grant, OwnerAlg, OwnerKey, OwnerLock,
    StatusList, Subject, TrustedOwners,
};
use cada_enclave::key::SigningKey;
use cada_enclave::platform::sim::Sim;
use cada_enclave::platform::Platform;
use cada_enclave::signer::{DelegationPolicy, Signer};
use cada_enclave::EnclaveError;
use cada_protocol::b64;
use cada_protocol::envelope::EvidenceEnvelope;
use cada_protocol::jwk::SigAlg;
use cada_protocol::mcp;
use cada_protocol::token::{signing_input, CadaClaim, PopClaims, PopHeader};
use cada_protocol::wire::{DelegateRequest, SignPopRequest};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Audiences an owner contract may hold.
const AUDS: [&str; 4] = [
    "https://a.example/v1",
    "https://a.example/v1/x",
    "https://a.example/v2",
    "https://b.example/",
];
/// Audiences a candidate delegation may hold: the owner's and two wider or beside them.
const CHILD_AUDS: [&str; 6] = [
    "https://a.example/v1",
    "https://a.example/v1/x",
    "https://a.example/v2",
    "https://b.example/",
    "https://a.example/v10",
    "https://a.example/",
];
const METHODS: [&str; 3] = ["GET", "POST", "DELETE"];
const TOOLS: [&str; 3] = ["t1", "t2", "t3"];
/// Request URLs: under each audience, beside one on a non-boundary, outside all.
const URLS: [&str; 7] = [
    "https://a.example/v1/items",
    "https://a.example/v1/x/y",
    "https://a.example/v2/z",
    "https://a.example/v10",
    "https://b.example/q",
    "https://a.example/other",
    "https://c.example/",
];
const STATUS_URL: &str = "https://owner.example/status/1";

fn pick(all: &[&str], mask: u8) -> Vec<String> {
    all.iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, s)| (*s).to_owned())
        .collect()
}

/// One generated case.
#[derive(Debug, Clone)]
struct Case {
    /// C: non-empty audiences and methods, any tools.
    c_auds: u8,
    c_methods: u8,
    c_tools: u8,
    /// D: each member absent (the parent's) or a set from the child universe.
    d_auds: Option<u8>,
    d_methods: Option<u8>,
    d_tools: Option<u8>,
    /// D's lifetime in minutes (C lives 60).
    d_minutes: u64,
    /// Requests: (method index, URL index, tool index or none).
    requests: Vec<(usize, usize, Option<usize>)>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1u8..16,
        1u8..8,
        0u8..8,
        proptest::option::of(1u8..64),
        proptest::option::of(1u8..8),
        proptest::option::of(0u8..8),
        prop_oneof![Just(10u64), Just(59), Just(120)],
        proptest::collection::vec(
            (
                0..METHODS.len(),
                0..URLS.len(),
                proptest::option::of(0..TOOLS.len()),
            ),
            6..10,
        ),
    )
        .prop_map(
            |(c_auds, c_methods, c_tools, d_auds, d_methods, d_tools, d_minutes, requests)| Case {
                c_auds,
                c_methods,
                c_tools,
                d_auds,
                d_methods,
                d_tools,
                d_minutes,
                requests,
            },
        )
}

/// One `sim` platform for every enclave of the run: each `Sim::new` hashes the running
/// executable (its PCR0), which is slow and fails if the binary is rebuilt meanwhile.
struct SharedSim(Arc<Sim>);

impl Platform for SharedSim {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn measurements(&self) -> Result<BTreeMap<String, String>, EnclaveError> {
        self.0.measurements()
    }
    fn attest(&self, binding: &[u8], nonce: &[u8]) -> Result<EvidenceEnvelope, EnclaveError> {
        self.0.attest(binding, nonce)
    }
}

/// A sim enclave in process (a fresh key on the shared platform) locked to `owner`: the
/// signer and its evidence.
fn enclave(sim: &Arc<Sim>, owner: &OwnerKey, now: u64) -> (Signer, EvidenceEnvelope) {
    let signer = Signer::new(
        SigningKey::generate(SigAlg::EdDSA).unwrap(),
        Box::new(SharedSim(Arc::clone(sim))),
        DelegationPolicy::default(),
    )
    .unwrap();
    let lock = OwnerLock::issue(owner, signer.key().did(), now, 300).unwrap();
    let env = EvidenceEnvelope::from_cbor(&signer.lock_owner(&lock).unwrap().envelope).unwrap();
    (signer, env)
}

/// A request: its sign_pop ask and what the verifier is told of its body.
struct Req {
    method: String,
    url: String,
    body: RequestBody,
    ask: SignPopRequest,
}

fn request(m: usize, u: usize, t: Option<usize>) -> Req {
    let body = match t {
        Some(t) => serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": TOOLS[t], "arguments": {}}})
        .to_string(),
        None => String::new(),
    };
    let calls = if body.is_empty() {
        vec![]
    } else {
        mcp::parse_body(body.as_bytes()).unwrap().calls()
    };
    let digest = mcp::body_digest(body.as_bytes());
    Req {
        method: METHODS[m].to_owned(),
        url: URLS[u].to_owned(),
        body: RequestBody {
            digest: digest.clone(),
            calls: Some(calls.clone()),
            tool_arguments: None,
        },
        ask: SignPopRequest {
            htm: METHODS[m].into(),
            htu: URLS[u].into(),
            access_token: None,
            nonce: None,
            ctx: BTreeMap::new(),
            bd: Some(digest),
            mcp: calls,
            exchange: None,
            task: None,
            traceparent: None,
        },
    }
}

/// A proof for `ask` made with `signer`'s own key outside its rules (a compromised
/// enclave): naming contract `dtc` under the chain `dch`, with the evidence `env` binds.
fn rogue_proof(
    signer: &Signer,
    env: &EvidenceEnvelope,
    ask: &SignPopRequest,
    dtc: &str,
    dch: &[String],
) -> String {
    let key = signer.key();
    let header = PopHeader {
        typ: "dpop+jwt".into(),
        alg: "EdDSA".into(),
        jwk: key.jwk().clone(),
    };
    let mut jti = [0u8; 16];
    aws_lc_rs::rand::fill(&mut jti).unwrap();
    let iat = UnixTime::now().as_secs();
    let claims = PopClaims {
        jti: b64::encode(jti),
        htm: ask.htm.clone(),
        htu: ask.htu.clone(),
        iat,
        exp: iat + 30,
        ath: None,
        nonce: None,
        cada: CadaClaim {
            att: env.att_digest(),
            seq: 1_000_000,
            chain: b64::encode([7u8; 32]),
            dtc: Some(dtc.to_owned()),
            bd: ask.bd.clone(),
            mcp: ask.mcp.clone(),
            dch: dch.to_vec(),
            ..CadaClaim::default()
        },
    };
    let input = signing_input(&header, &claims).unwrap();
    let sig = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", b64::encode(sig))
}

/// The planner's key signs `grant` as a delegation under `c0` outside its enclave's rules
/// (a compromised planner), with real evidence binding the delegation.
fn rogue_delegation(
    planner: &Signer,
    owners: &TrustedOwners,
    c0: &str,
    grant: Grant,
    now: u64,
    index: u64,
) -> Option<String> {
    let chain = verify_chain(&[c0], owners, now).ok()?;
    let mut grant = grant;
    grant.status = Some(cada_contract::StatusEntry::new(STATUS_URL, index).ok()?);
    let draft = Draft::under(&chain, grant, planner.key().did(), now).ok()?;
    let env = planner.attest(&draft.evidence_nonce().ok()?).ok()?;
    let payload = draft.payload_bytes(&env.to_cbor()).ok()?;
    let kid = cada_contract::PublicKey::from_did_key(planner.key().did())
        .ok()?
        .did_key_url();
    let input = draft.signing_input(&payload, SigAlg::EdDSA, &kid).ok()?;
    let sig = planner.key().sign(input.as_bytes()).ok()?;
    let link = draft.assemble(&payload, SigAlg::EdDSA, &kid, &sig).ok()?;
    Some(format!("{c0}~{link}"))
}

/// The first stable code (`delegation.…`, `contract.…`) in an enclave's refusal.
fn code_in(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_lowercase() || c == '.' || c == '_'))
        .find(|w| {
            (w.starts_with("delegation.") || w.starts_with("contract."))
                && w.len() > "contract.".len()
        })
        .map(|w| w.trim_end_matches('.').to_owned())
}

/// How often each side of the properties was exercised (the run must reach all of them).
static SIGNED_D: AtomicUsize = AtomicUsize::new(0);
static REFUSED_D: AtomicUsize = AtomicUsize::new(0);
static ACCEPTED_R: AtomicUsize = AtomicUsize::new(0);
static REFUSED_R: AtomicUsize = AtomicUsize::new(0);

fn check(sim: &Arc<Sim>, c: &Case) -> Result<(), TestCaseError> {
    let now = UnixTime::now().as_secs();
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let (planner, _planner_env) = enclave(sim, &owner, now);
    let (worker, worker_env) = enclave(sim, &owner, now);
    let list = StatusList::new(STATUS_URL, 1 << 12)
        .unwrap()
        .issue(&owner, now, None)
        .unwrap();

    // C: the owner's contract for the planner, which may delegate one level.
    let mut g = Grant::new(
        Subject::Key(planner.key().did().into()),
        pick(&AUDS, c.c_auds),
        pick(&METHODS, c.c_methods),
        now - 10,
        now + 3600,
    );
    g.tools = pick(&TOOLS, c.c_tools);
    g.delegation = Some(DelegationRules {
        max_depth: 1,
        status_list: STATUS_URL.into(),
        status_range: [100, 200],
    });
    let c0 = g.issue(&owner, now).unwrap();
    planner.install_contract(&c0, None).unwrap();

    // D: the candidate.
    let mut members = serde_json::Map::new();
    if let Some(m) = c.d_auds {
        members.insert("audiences".into(), pick(&CHILD_AUDS, m).into());
    }
    if let Some(m) = c.d_methods {
        members.insert("methods".into(), pick(&METHODS, m).into());
    }
    if let Some(m) = c.d_tools {
        members.insert("tools".into(), pick(&TOOLS, m).into());
    }
    let grant_json = serde_json::Value::Object(members).to_string();
    let valid_until = now + c.d_minutes * 60;
    let signed = planner.delegate(&DelegateRequest {
        parent: cada_contract::digest_of(&c0),
        subject: worker.key().did().into(),
        grant: grant_json.clone(),
        valid_until,
        status_index: None,
        task: None,
    });
    let owners = TrustedOwners::from_did_key(owner.did()).unwrap();
    let mut d_refusal = None;
    let (chain, enclave_signed_d) = match signed {
        Ok(r) => {
            SIGNED_D.fetch_add(1, Ordering::Relaxed);
            (r.chain, true)
        }
        Err(e) => {
            d_refusal = code_in(&e.to_string());
            // The compromised planner signs it anyway (when it is a contract at all).
            let parent = verify_chain(&[&c0], &owners, now).unwrap();
            let Ok(grant) = narrow_grant(
                parent.leaf(),
                worker.key().did(),
                &grant_json,
                now,
                valid_until,
            ) else {
                return Ok(());
            };
            let Some(chain) = rogue_delegation(&planner, &owners, &c0, grant, now, 150) else {
                return Ok(());
            };
            // The worker's enclave refuses to install what the planner's would not sign.
            prop_assert!(
                worker.install_contract(&chain, Some(&list)).is_err(),
                "the worker installed a delegation the planner's enclave refused: {grant_json}"
            );
            REFUSED_D.fetch_add(1, Ordering::Relaxed);
            (chain, false)
        }
    };
    if enclave_signed_d {
        worker.install_contract(&chain, Some(&list)).unwrap();
    }
    let links: Vec<&str> = chain.split('~').collect();
    let dtc = cada_contract::digest_of(links[1]);
    let dch = vec![cada_contract::digest_of(links[0])];

    // The verifier: the enclaves' image and roots, the owner, chains one deep.
    let pcr0 = worker.measurements().unwrap()["PCR0"].clone();
    let mut toml = String::new();
    for prefix in [
        "https://a.example/",
        "https://b.example/",
        "https://c.example/",
    ] {
        toml.push_str(&format!(
            "[[audience]]\nprefix = \"{prefix}\"\nmeasurements = [{{ PCR0 = \"{pcr0}\" }}]\nowners = [\"{}\"]\nmax_delegation_depth = 1\n",
            owner.did()
        ));
    }
    let mut policy = Policy::from_toml(&toml, std::path::Path::new("."), "props").unwrap();
    policy
        .nitro_roots
        .add(TrustAnchor::from_der("sim", sim.root_der()).unwrap());
    let verifier = Verifier::new(policy, VerifierOptions::default());
    verifier
        .install_status_list(&list, now, UnixTime::now())
        .unwrap();
    let replay = MemoryReplayStore::new(1 << 16);

    for &(m, u, t) in &c.requests {
        let r = request(m, u, t);
        let (worker_signed, r_refusal) = if enclave_signed_d {
            match worker.sign_pop(&r.ask) {
                Ok(p) => (Some(p), None),
                Err(e) => (None, code_in(&e.to_string())),
            }
        } else {
            (None, None)
        };
        // 1. What the worker may do, its parent may do.
        if worker_signed.is_some() {
            prop_assert!(
                planner.sign_pop(&r.ask).is_ok(),
                "the worker signed {} {} {t:?} under D={grant_json}, the planner may not under C",
                r.method,
                r.url
            );
        }
        // 2. The verifier agrees with the enclaves.
        let enclave_accepts = worker_signed.is_some();
        if enclave_accepts {
            ACCEPTED_R.fetch_add(1, Ordering::Relaxed);
        } else {
            REFUSED_R.fetch_add(1, Ordering::Relaxed);
        }
        let dpop = match worker_signed {
            Some(p) => p.dpop,
            None => rogue_proof(&worker, &worker_env, &r.ask, &dtc, &dch),
        };
        let d = verifier.decide(
            &Request {
                method: &r.method,
                url: &r.url,
                dpop: &dpop,
                access_token: None,
                evidence: Some(&worker_env),
                contract: Some(&chain),
                body: Some(&r.body),
            },
            UnixTime::now(),
            Stores {
                replay: &replay,
                nonces: None,
            },
        );
        prop_assert_eq!(
            d.accepted().is_some(),
            enclave_accepts,
            "{} {} {:?}: enclave signed D: {}, D = {}, verifier: {:?}",
            r.method,
            r.url,
            t,
            enclave_signed_d,
            grant_json,
            d.refusal().map(|x| x.error.to_string())
        );
        // And refuses with the rule the enclave named: the delegation's, else the request's.
        if let Some(refusal) = d.refusal() {
            if let Some(want) = d_refusal.as_deref().or(r_refusal.as_deref()) {
                prop_assert_eq!(
                    refusal.code(),
                    want,
                    "{} {} {:?} under D = {}: {}",
                    r.method,
                    r.url,
                    t,
                    grant_json,
                    refusal.error
                );
            }
        }
    }
    Ok(())
}

#[test]
fn delegation_never_widens_and_the_verifier_agrees_with_the_enclaves() {
    let mut runner = TestRunner::new(Config {
        // More with CADA_PROPTEST_CASES=N (a longer search; 256 by default).
        cases: std::env::var("CADA_PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..Config::default()
    });
    let sim = Arc::new(Sim::new(None).unwrap());
    runner
        .run(&case(), |c| check(&sim, &c))
        .unwrap_or_else(|e| panic!("{e}"));
    let counts =
        [&SIGNED_D, &REFUSED_D, &ACCEPTED_R, &REFUSED_R].map(|c| c.load(Ordering::Relaxed));
    assert!(
        counts.iter().all(|&n| n > 0),
        "every side exercised (D signed, D refused, r accepted, r refused): {counts:?}"
    );
}
