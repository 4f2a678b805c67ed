//! `decide()` rule by rule: one test per refusal code, in the documented order, with real
//! evidence and proofs from the enclave's signer on the `sim` and `sim-snp` platforms
//! (in-process: the same code as the binaries).
use std::collections::BTreeMap;

use cada_attestation_verifier::chain::TrustAnchor;
use cada_attestation_verifier::decide::{Admission, Decision, Request, RequestBody, Stores, RULES};
use cada_attestation_verifier::nonce::NonceIssuer;
use cada_attestation_verifier::replay::{MemoryReplayStore, ReplayStore};
use cada_attestation_verifier::{Policy, UnixTime, Verifier, VerifierOptions};
use cada_enclave::key::SigningKey;
use cada_enclave::platform::sim::Sim;
use cada_enclave::platform::sim_snp::SimSnp;
use cada_enclave::signer::{DelegationPolicy, Signer};
use cada_protocol::envelope::EvidenceEnvelope;
use cada_protocol::jwk::SigAlg;
use cada_protocol::wire::SignPopRequest;
use cada_protocol::{mcp, token};

const URL: &str = "https://api.example.com/v1/orders";

struct Setup {
    signer: Signer,
    root: Vec<u8>,
    env: EvidenceEnvelope,
    pcr0: String,
}

fn sim() -> Setup {
    let sim = Sim::new(None).unwrap();
    let root = sim.root_der().to_vec();
    let signer = Signer::new(
        SigningKey::generate(SigAlg::EdDSA).unwrap(),
        Box::new(sim),
        DelegationPolicy::default(),
    )
    .unwrap();
    let env = signer.attest(b"n").unwrap();
    let pcr0 = signer.measurements().unwrap()["PCR0"].clone();
    Setup {
        signer,
        root,
        env,
        pcr0,
    }
}

/// A policy trusting `root` for Nitro-format evidence, with `extra` TOML and an audience
/// for `https://api.example.com/v1` allowing PCR0 = `pcr0`.
fn policy(root: &[u8], pcr0: &str, extra: &str) -> Policy {
    let mut p = Policy::from_toml(
        &format!(
            "{extra}\n[[audience]]\nprefix = \"https://api.example.com/v1\"\nmeasurements = [{{ PCR0 = \"{pcr0}\" }}]\n"
        ),
        std::path::Path::new("."),
        "test",
    )
    .unwrap();
    p.nitro_roots
        .add(TrustAnchor::from_der("sim", root).unwrap());
    p
}

fn sign(s: &Signer, htm: &str, htu: &str, f: impl FnOnce(&mut SignPopRequest)) -> String {
    let mut r = SignPopRequest {
        htm: htm.into(),
        htu: htu.into(),
        access_token: None,
        nonce: None,
        ctx: BTreeMap::new(),
        bd: None,
        mcp: vec![],
        exchange: None,
        task: None,
        traceparent: None,
    };
    f(&mut r);
    s.sign_pop(&r).unwrap().dpop
}

struct Judge {
    v: Verifier,
    replay: MemoryReplayStore,
    nonces: NonceIssuer,
}

impl Judge {
    fn new(p: Policy) -> Self {
        Judge {
            v: Verifier::new(p, VerifierOptions::default()),
            replay: MemoryReplayStore::new(1024),
            nonces: NonceIssuer::new(&[7u8; 32]),
        }
    }

    /// `POST URL` with `dpop` and `env`, now.
    fn post(&self, dpop: &str, env: &EvidenceEnvelope) -> Decision {
        self.decide("POST", URL, dpop, None, Some(env), now())
    }

    fn decide(
        &self,
        method: &str,
        url: &str,
        dpop: &str,
        at: Option<&str>,
        env: Option<&EvidenceEnvelope>,
        now: UnixTime,
    ) -> Decision {
        self.v.decide(
            &Request {
                method,
                url,
                dpop,
                access_token: at,
                evidence: env,
                contract: None,
                body: None,
            },
            now,
            Stores {
                replay: &self.replay,
                nonces: Some(&self.nonces),
            },
        )
    }
}

/// Asserts a refusal with `code` by rule number `rule`.
#[track_caller]
fn refused(d: &Decision, code: &str, rule: usize) {
    match d {
        Decision::Refuse(r) => {
            assert_eq!(r.code(), code, "{r}");
            assert_eq!(r.rule(), rule, "{r}");
            assert!(rule <= RULES.len());
            assert!(
                RULES[rule - 1]
                    .1
                    .contains(code.split('.').next().unwrap_or(code)),
                "rule {rule} does not list {code}"
            );
        }
        Decision::Accept(a) => panic!("accepted, expected {code}: {a:?}"),
    }
}

fn now() -> UnixTime {
    UnixTime::now()
}

#[test]
fn accepts_and_names_the_admitting_rule() {
    let s = sim();
    let j = Judge::new(policy(&s.root, &s.pcr0, ""));
    let dpop = sign(&s.signer, "POST", URL, |_| {});
    let d = j.post(&dpop, &s.env);
    let a = d.accepted().expect("accepted");
    assert_eq!(
        a.admission,
        Admission::Audience {
            audience: "https://api.example.com/v1".into(),
            set: 0
        }
    );
    // The key is now remembered: the next proof needs no evidence.
    let dpop2 = sign(&s.signer, "POST", URL, |_| {});
    assert!(j
        .decide("POST", URL, &dpop2, None, None, now())
        .accepted()
        .is_some());
}

#[test]
fn rule_01_request_url() {
    let s = sim();
    let j = Judge::new(policy(&s.root, &s.pcr0, ""));
    let dpop = sign(&s.signer, "POST", URL, |_| {});
    for bad in [
        "/v1/orders",
        "https://u@api.example.com/v1/orders",
        "ftp://x/",
    ] {
        let d = j.decide("POST", bad, &dpop, None, Some(&s.env), now());
        refused(&d, "request.url", 1);
        assert!(d.refusal().unwrap().is_bad_request());
    }
}

/// Issue 21 item 1: a proof for `/v1/orders` sent as `/v1/x/../orders` (or `%2e%2e`, `..%2F`)
/// was decided as `/v1/orders` while a gate forwarded the raw path. Rule 1 now refuses a
/// path that is not already its normal form, naming that form, before any other rule.
#[test]
fn rule_01_request_path_must_be_its_normal_form() {
    let s = sim();
    let j = Judge::new(policy(&s.root, &s.pcr0, ""));
    for (url, code) in [
        (
            "https://api.example.com/v1/x/../orders",
            "request.url_not_normal",
        ),
        (
            "https://api.example.com/v1/./orders",
            "request.url_not_normal",
        ),
        (
            "https://api.example.com/v1/%6Frders",
            "request.url_not_normal",
        ),
        ("https://api.example.com/v1/x/%2e%2e/orders", "request.url"),
        ("https://api.example.com/v1/x/..%2Forders", "request.url"),
        ("https://api.example.com/v1/x/..;/orders", "request.url"),
        ("https://api.example.com/v1//orders", "request.url"),
    ] {
        let dpop = sign(&s.signer, "POST", URL, |_| {});
        let d = j.decide("POST", url, &dpop, None, Some(&s.env), now());
        refused(&d, code, 1);
        let r = d.refusal().unwrap();
        assert!(r.is_bad_request());
        if code == "request.url_not_normal" {
            assert!(r.to_string().contains(&format!("{URL:?}")), "{r}");
        }
    }
    // The origin may be spelled otherwise and a query added: the path is what is routed.
    let dpop = sign(&s.signer, "POST", URL, |_| {});
    let d = j.decide(
        "POST",
        "HTTPS://API.example.com:443/v1/orders?page=/../admin",
        &dpop,
        None,
        Some(&s.env),
        now(),
    );
    assert!(d.accepted().is_some(), "{:?}", d.refusal());
}

#[test]
fn rule_02_malformed_proof() {
    let s = sim();
    let j = Judge::new(policy(&s.root, &s.pcr0, ""));
    refused(
        &j.decide("POST", URL, "not.a.jws", None, Some(&s.env), now()),
        "protocol",
        2,
    );
    // A `crit` header we do not understand is refused (RFC 7515 §4.1.11).
    let dpop = sign(&s.signer, "POST", URL, |_| {});
    let (h, rest) = dpop.split_once('.').unwrap();
    let mut header: serde_json::Value =
        serde_json::from_slice(&cada_protocol::b64::decode("h", h, 4096).unwrap()).unwrap();
    header["crit"] = serde_json::json!(["exp"]);
    let forged = format!(
        "{}.{rest}",
        cada_protocol::b64::encode(serde_json::to_vec(&header).unwrap())
    );
    refused(
        &j.decide("POST", URL, &forged, None, Some(&s.env), now()),
        "protocol",
        2,
    );
}

#[test]
fn rule_03_signature() {
    let s = sim();
    let j = Judge::new(policy(&s.root, &s.pcr0, ""));
    let dpop = sign(&s.signer, "POST", URL, |_| {});
    let (head, sig) = dpop.rsplit_once('.').unwrap();
    let mut sig = sig.as_bytes().to_vec();
    sig[3] = if sig[3] == b'A' { b'B' } else { b'A' };
    let forged = format!("{head}.{}", String::from_utf8(sig).unwrap());
    refused(
        &j.decide("POST", URL, &forged, None, Some(&s.env), now()),
        "pop.signature",
        3,
    );
}

#[test]
fn rule_04_evidence_untrusted_unbound_or_stale() {
    let s = sim();
    let other = sim();
    // Evidence from a sim whose root this policy does not trust.
    let j = Judge::new(policy(&s.root, &s.pcr0, ""));
    let dpop = sign(&other.signer, "POST", URL, |_| {});
    refused(
        &j.decide("POST", URL, &dpop, None, Some(&other.env), now()),
        "chain.untrusted_root",
        4,
    );
    // Trusted evidence that binds another key.
    let mut p = policy(&s.root, &s.pcr0, "");
    p.nitro_roots
        .add(TrustAnchor::from_der("other", &other.root).unwrap());
    let j = Judge::new(p);
    let dpop = sign(&s.signer, "POST", URL, |_| {});
    refused(
        &j.decide("POST", URL, &dpop, None, Some(&other.env), now()),
        "pop.binding_mismatch",
        4,
    );
    // Evidence older than evidence.max_age_secs.
    let j = Judge::new(policy(&s.root, &s.pcr0, "[evidence]\nmax_age_secs = 60"));
    let later = UnixTime::from_millis(now().as_millis() + 61_000);
    refused(
        &j.decide("POST", URL, &dpop, None, Some(&s.env), later),
        "policy.too_old",
        4,
    );
}

#[test]
fn rule_04_snp_evidence_needs_a_verifier_nonce() {
    let snp = SimSnp::new(None).unwrap();
    let root = snp.root_der().to_vec();
    let signer = Signer::new(
        SigningKey::generate(SigAlg::ES256).unwrap(),
        Box::new(snp),
        DelegationPolicy::default(),
    )
    .unwrap();
    let measurement = signer.measurements().unwrap()["MEASUREMENT"].clone();
    let mk = |extra: &str| {
        let mut p = Policy::from_toml(
            &format!("{extra}\n[[audience]]\nprefix = \"https://api.example.com/v1\"\nmeasurements = [{{ MEASUREMENT = \"{measurement}\" }}]\n"),
            std::path::Path::new("."),
            "test",
        )
        .unwrap();
        p.snp_roots
            .add(TrustAnchor::from_der("sim-snp", &root).unwrap());
        Judge::new(p)
    };
    let j = mk("");
    // Evidence for a nonce the agent chose itself: no proof of age.
    let own = signer.attest(b"agent-chosen").unwrap();
    let dpop = sign(&signer, "POST", URL, |_| {});
    refused(
        &j.decide("POST", URL, &dpop, None, Some(&own), now()),
        "evidence.not_fresh",
        4,
    );
    // Evidence for a nonce this verifier issued: accepted, and it expires with the nonce.
    let t0 = now();
    let nonce = j.nonces.issue(t0.as_secs());
    let fresh = signer.attest(nonce.as_bytes()).unwrap();
    let dpop = sign(&signer, "POST", URL, |_| {});
    let d = j.decide("POST", URL, &dpop, None, Some(&fresh), t0);
    let key = &d.accepted().expect("fresh SNP evidence accepted").key;
    assert!(key.expires.as_millis() <= t0.as_secs() * 1000 + 3 * 3600 * 1000);
    // The same evidence presented after max_age is refused, not re-admitted as new.
    let j = mk("[evidence]\nmax_age_secs = 60");
    let nonce = j.nonces.issue(t0.as_secs());
    let fresh = signer.attest(nonce.as_bytes()).unwrap();
    let dpop = sign(&signer, "POST", URL, |_| {});
    refused(
        &j.decide(
            "POST",
            URL,
            &dpop,
            None,
            Some(&fresh),
            UnixTime::from_millis(t0.as_millis() + 62_000),
        ),
        "evidence.not_fresh",
        4,
    );
    // first_seen mode accepts agent-chosen nonces, bounded from first sight.
    let j = mk("[snp]\nfreshness = \"first_seen\"");
    // (Proofs name the enclave's latest evidence: attest again, then sign.)
    let own = signer.attest(b"agent-chosen-2").unwrap();
    let dpop = sign(&signer, "POST", URL, |_| {});
    assert!(j
        .decide("POST", URL, &dpop, None, Some(&own), now())
        .accepted()
        .is_some());
    // A sim-snp root given only for Nitro evidence does not verify SNP evidence.
    let mut p = Policy::from_toml(
        &format!("[snp]\nfreshness = \"first_seen\"\n[[audience]]\nprefix = \"https://api.example.com/v1\"\nmeasurements = [{{ MEASUREMENT = \"{measurement}\" }}]\n"),
        std::path::Path::new("."),
        "test",
    )
    .unwrap();
    p.nitro_roots
        .add(TrustAnchor::from_der("sim-snp", &root).unwrap());
    let j = Judge::new(p);
    let d = j.decide("POST", URL, &dpop, None, Some(&own), now());
    assert_eq!(d.refusal().expect("refused").rule(), 4, "{d:?}");
}

#[test]
fn rule_05_key_not_attested() {
    let s = sim();
    let j = Judge::new(policy(&s.root, &s.pcr0, ""));
    let dpop = sign(&s.signer, "POST", URL, |_| {});
    refused(
        &j.decide("POST", URL, &dpop, None, None, now()),
        "pop.evidence_required",
        5,
    );
    assert_eq!(
        j.decide("POST", URL, &dpop, None, None, now())
            .refusal()
            .unwrap()
            .dpop_error(),
        "use_attestation"
    );
}

#[test]
fn rule_06_method_and_url() {
    let s = sim();
    let j = Judge::new(policy(&s.root, &s.pcr0, ""));
    let dpop = sign(&s.signer, "POST", URL, |_| {});
    refused(
        &j.decide("GET", URL, &dpop, None, Some(&s.env), now()),
        "pop.htm",
        6,
    );
    let dpop = sign(&s.signer, "POST", URL, |_| {});
    refused(
        &j.decide(
            "POST",
            "https://api.example.com/v1/other",
            &dpop,
            None,
            Some(&s.env),
            now(),
        ),
        "pop.htu",
        6,
    );
}

/// A decision with what the caller knows of the body.
fn decide_body(
    j: &Judge,
    dpop: &str,
    env: &EvidenceEnvelope,
    body: Option<&RequestBody>,
) -> Decision {
    j.v.decide(
        &Request {
            method: "POST",
            url: URL,
            dpop,
            access_token: None,
            evidence: Some(env),
            contract: None,
            body,
        },
        now(),
        Stores {
            replay: &j.replay,
            nonces: Some(&j.nonces),
        },
    )
}

fn tool_body(tool: &str) -> (Vec<u8>, RequestBody) {
    let bytes = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#
    )
    .into_bytes();
    let parsed = mcp::parse_body(&bytes).unwrap();
    let body = RequestBody {
        digest: mcp::body_digest(&bytes),
        calls: Some(parsed.calls()),
        tool_arguments: None,
    };
    (bytes, body)
}

#[test]
fn rule_06_body_digest_and_mcp_calls() {
    let s = sim();
    let j = Judge::new(policy(&s.root, &s.pcr0, ""));
    let (_, echo) = tool_body("echo");
    let (_, other) = tool_body("delete_all");
    let bound = |body: &RequestBody| {
        sign(&s.signer, "POST", URL, |r| {
            r.bd = Some(body.digest.clone());
            r.mcp = body.calls.clone().unwrap();
        })
    };
    // Bound to its body: accepted, and the claims say so.
    let d = decide_body(&j, &bound(&echo), &s.env, Some(&echo));
    let a = d.accepted().expect("accepted");
    assert_eq!(a.claims.cada.bd.as_deref(), Some(echo.digest.as_str()));
    assert_eq!(a.claims.cada.mcp[0].tool(), Some("echo"));
    // The same proof moved onto another body.
    refused(
        &decide_body(&j, &bound(&echo), &s.env, Some(&other)),
        "pop.body",
        6,
    );
    // A host that asked for a proof of the right body but named other calls.
    let lying = sign(&s.signer, "POST", URL, |r| {
        r.bd = Some(other.digest.clone());
        r.mcp = echo.calls.clone().unwrap();
    });
    refused(&decide_body(&j, &lying, &s.env, Some(&other)), "pop.mcp", 6);
    // A caller that does not know the body cannot check it: accepted, unless required.
    assert!(decide_body(&j, &bound(&echo), &s.env, None)
        .accepted()
        .is_some());
    let strict = Judge::new(policy(
        &s.root,
        &s.pcr0,
        "[token]\nrequire_body_digest = true\n",
    ));
    refused(
        &decide_body(&strict, &bound(&echo), &s.env, None),
        "pop.body",
        6,
    );
    let unbound = sign(&s.signer, "POST", URL, |_| {});
    refused(
        &decide_body(&strict, &unbound, &s.env, Some(&echo)),
        "pop.body",
        6,
    );
    assert!(decide_body(&strict, &bound(&echo), &s.env, Some(&echo))
        .accepted()
        .is_some());
}

#[test]
fn rule_07_freshness_at_millisecond_resolution() {
    let s = sim();
    let j = Judge::new(policy(&s.root, &s.pcr0, "[token]\nskew_secs = 10"));
    let dpop = sign(&s.signer, "POST", URL, |_| {});
    let claims = token::parse_compact(&dpop).unwrap().claims;
    let last = (claims.exp + 10) * 1000;
    // Admit the key first, at a time the proof is fresh (a different proof).
    let first = sign(&s.signer, "POST", URL, |_| {});
    assert!(j
        .decide("POST", URL, &first, None, Some(&s.env), now())
        .accepted()
        .is_some());
    // Half a second past exp + skew: refused (whole-second comparison used to accept it).
    refused(
        &j.decide(
            "POST",
            URL,
            &dpop,
            None,
            None,
            UnixTime::from_millis(last + 500),
        ),
        "pop.not_fresh",
        7,
    );
    refused(
        &j.decide(
            "POST",
            URL,
            &dpop,
            None,
            None,
            UnixTime::from_millis(last + 1),
        ),
        "pop.not_fresh",
        7,
    );
    // At the last acceptable millisecond: accepted once, and remembered past it.
    assert!(j
        .decide("POST", URL, &dpop, None, None, UnixTime::from_millis(last))
        .accepted()
        .is_some());
    refused(
        &j.decide("POST", URL, &dpop, None, None, UnixTime::from_millis(last)),
        "pop.replay",
        14,
    );
    // Issued in the future beyond the skew.
    refused(
        &j.decide(
            "POST",
            URL,
            &sign(&s.signer, "POST", URL, |_| {}),
            None,
            None,
            UnixTime::from_millis(claims.iat * 1000 - 11_000),
        ),
        "pop.not_fresh",
        7,
    );
}

#[test]
fn rule_08_access_token_hash() {
    let s = sim();
    let j = Judge::new(policy(&s.root, &s.pcr0, ""));
    let dpop = sign(&s.signer, "POST", URL, |r| {
        r.access_token = Some("tok".into());
    });
    refused(
        &j.decide("POST", URL, &dpop, Some("other"), Some(&s.env), now()),
        "pop.ath",
        8,
    );
    let dpop = sign(&s.signer, "POST", URL, |_| {});
    refused(
        &j.decide("POST", URL, &dpop, Some("tok"), Some(&s.env), now()),
        "pop.ath",
        8,
    );
}

#[test]
fn rule_09_context() {
    let s = sim();
    let j = Judge::new(policy(
        &s.root,
        &s.pcr0,
        "[context]\nrequired = [\"task\"]\nallowed = { model = [\"m-1\"] }",
    ));
    let dpop = sign(&s.signer, "POST", URL, |_| {});
    refused(&j.post(&dpop, &s.env), "pop.ctx", 9);
    let dpop = sign(&s.signer, "POST", URL, |r| {
        r.ctx = BTreeMap::from([("task".into(), "1".into()), ("model".into(), "m-2".into())]);
    });
    refused(&j.post(&dpop, &s.env), "pop.ctx", 9);
}

#[test]
fn rule_10_server_nonce() {
    let s = sim();
    let j = Judge::new(policy(&s.root, &s.pcr0, "[token]\nrequire_nonce = true"));
    let dpop = sign(&s.signer, "POST", URL, |_| {});
    let d = j.post(&dpop, &s.env);
    refused(&d, "pop.nonce", 10);
    assert_eq!(d.refusal().unwrap().dpop_error(), "use_dpop_nonce");
    let forged = sign(&s.signer, "POST", URL, |r| r.nonce = Some("made-up".into()));
    refused(
        &j.decide("POST", URL, &forged, None, Some(&s.env), now()),
        "pop.nonce",
        10,
    );
    let n = j.nonces.issue(now().as_secs());
    let good = sign(&s.signer, "POST", URL, |r| r.nonce = Some(n.clone()));
    assert!(j
        .decide("POST", URL, &good, None, Some(&s.env), now())
        .accepted()
        .is_some());
}

#[test]
fn rule_11_audience() {
    let s = sim();
    let j = Judge::new(policy(&s.root, &s.pcr0, ""));
    for url in [
        "https://api.example.com/v10",
        "https://api.example.com.evil.net/v1/orders",
        "https://other.example/v1/orders",
    ] {
        let dpop = sign(&s.signer, "POST", url, |_| {});
        refused(
            &j.decide("POST", url, &dpop, None, Some(&s.env), now()),
            "policy.audience",
            11,
        );
    }
    // --allow-any-measurement covers URLs no audience names, and says so.
    let mut p = policy(&s.root, &s.pcr0, "");
    p.allow_any_measurement = true;
    let j = Judge::new(p);
    let url = "https://other.example/x";
    let dpop = sign(&s.signer, "POST", url, |_| {});
    let d = j.decide("POST", url, &dpop, None, Some(&s.env), now());
    assert_eq!(d.accepted().unwrap().admission, Admission::AnyMeasurement);
}

#[test]
fn rule_12_measurements() {
    let s = sim();
    let j = Judge::new(policy(&s.root, &"ab".repeat(48), ""));
    let dpop = sign(&s.signer, "POST", URL, |_| {});
    refused(&j.post(&dpop, &s.env), "policy.measurements", 12);
}

struct DownStore;
impl ReplayStore for DownStore {
    fn insert_new(&self, _: &[u8], _: UnixTime, _: UnixTime) -> Result<bool, String> {
        Err("connection refused".into())
    }
}

#[test]
fn rule_14_replay_and_store_outage() {
    let s = sim();
    let j = Judge::new(policy(&s.root, &s.pcr0, ""));
    let dpop = sign(&s.signer, "POST", URL, |_| {});
    assert!(j
        .decide("POST", URL, &dpop, None, Some(&s.env), now())
        .accepted()
        .is_some());
    refused(&j.post(&dpop, &s.env), "pop.replay", 14);
    let dpop = sign(&s.signer, "POST", URL, |_| {});
    let d = j.v.decide(
        &Request {
            method: "POST",
            url: URL,
            dpop: &dpop,
            access_token: None,
            evidence: Some(&s.env),
            contract: None,
            body: None,
        },
        now(),
        Stores {
            replay: &DownStore,
            nonces: None,
        },
    );
    refused(&d, "pop.replay_store_unavailable", 14);
    assert!(d.refusal().unwrap().is_unavailable());
}

#[test]
fn the_earliest_failing_rule_decides() {
    let s = sim();
    let j = Judge::new(policy(&s.root, &"ab".repeat(48), ""));
    // Wrong method (6), outside every audience (11), wrong measurements (12): rule 6 speaks.
    let url = "https://other.example/x";
    let dpop = sign(&s.signer, "POST", url, |_| {});
    refused(
        &j.decide("GET", url, &dpop, None, Some(&s.env), now()),
        "pop.htm",
        6,
    );
    // A refused proof does not consume its jti: fixed, it is accepted later.
    let j = Judge::new(policy(&s.root, &s.pcr0, ""));
    let dpop = sign(&s.signer, "POST", URL, |_| {});
    refused(
        &j.decide("GET", URL, &dpop, None, Some(&s.env), now()),
        "pop.htm",
        6,
    );
    assert!(j
        .decide("POST", URL, &dpop, None, Some(&s.env), now())
        .accepted()
        .is_some());
}

mod rule_13_contracts {
    use super::*;
    use cada_contract::{Grant, OwnerAlg, OwnerKey, OwnerLock, StatusEntry, StatusList, Subject};
    use cada_enclave::platform::Platform;
    use cada_protocol::token::{CadaClaim, PopClaims, PopHeader};

    const CONTRACT_URL: &str = "https://api.example.com/v1/orders";

    fn secs() -> u64 {
        now().as_secs()
    }

    /// A sim signer locked to `owner`.
    fn locked(owner: &OwnerKey) -> Setup {
        let s = sim();
        let lock = OwnerLock::issue(owner, s.signer.key().did(), secs(), 300).unwrap();
        let r = s.signer.lock_owner(&lock).unwrap();
        let env = EvidenceEnvelope::from_cbor(&r.envelope).unwrap();
        Setup { env, ..s }
    }

    fn grant(s: &Setup, owner: &OwnerKey, f: impl FnOnce(&mut Grant)) -> String {
        let mut g = Grant::new(
            Subject::Key(s.signer.key().did().into()),
            vec!["https://api.example.com/v1".into()],
            vec!["POST".into()],
            secs() - 10,
            secs() + 600,
        );
        f(&mut g);
        g.issue(owner, secs()).unwrap()
    }

    /// The policy of `super::policy` with `owners` on the audience.
    fn policy_with_owners(root: &[u8], pcr0: &str, owners: &[&str]) -> Policy {
        let list = owners
            .iter()
            .map(|o| format!("\"{o}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut p = Policy::from_toml(
            &format!(
                "[[audience]]\nprefix = \"https://api.example.com/v1\"\nmeasurements = [{{ PCR0 = \"{pcr0}\" }}]\nowners = [{list}]\n[contracts]\nstatus_max_staleness_secs = 60\n"
            ),
            std::path::Path::new("."),
            "test",
        )
        .unwrap();
        p.nitro_roots
            .add(TrustAnchor::from_der("sim", root).unwrap());
        p
    }

    fn with_contract(
        j: &Judge,
        dpop: &str,
        env: &EvidenceEnvelope,
        contract: Option<&str>,
        at: UnixTime,
    ) -> Decision {
        j.v.decide(
            &Request {
                method: "POST",
                url: CONTRACT_URL,
                dpop,
                access_token: None,
                evidence: Some(env),
                contract,
                body: None,
            },
            at,
            Stores {
                replay: &j.replay,
                nonces: Some(&j.nonces),
            },
        )
    }

    #[test]
    fn a_live_contract_of_the_evidences_owner_admits_and_is_cached() {
        let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let s = locked(&owner);
        let c = grant(&s, &owner, |g| {
            g.scopes = vec!["orders:write".into()];
        });
        s.signer.install_contract(&c, None).unwrap();
        let j = Judge::new(policy_with_owners(&s.root, &s.pcr0, &[owner.did()]));
        let dpop = sign(&s.signer, "POST", CONTRACT_URL, |_| {});
        // Not sent and not known: ask for it.
        refused(
            &with_contract(&j, &dpop, &s.env, None, now()),
            "contract.required",
            13,
        );
        // Another contract in the header than the one the proof names.
        let other = grant(&s, &owner, |g| g.methods = vec!["GET".into()]);
        refused(
            &with_contract(&j, &dpop, &s.env, Some(&other), now()),
            "contract.dtc_mismatch",
            13,
        );
        let d = with_contract(&j, &dpop, &s.env, Some(&c), now());
        let a = d.accepted().expect("accepted");
        let info = a.contract.as_ref().expect("contract info");
        assert_eq!(info.owner, owner.did());
        assert_eq!(info.digest, cada_contract::digest_of(&c));
        assert_eq!(info.scopes, vec!["orders:write".to_string()]);
        assert!(info.remaining_secs > 500 && info.remaining_secs <= 600);
        assert_eq!(a.key.owner.as_deref(), Some(owner.did()));
        // Cached by digest: the next proof needs no header.
        let dpop = sign(&s.signer, "POST", CONTRACT_URL, |_| {});
        assert!(with_contract(&j, &dpop, &s.env, None, now())
            .accepted()
            .is_some());
        // ... but a header that is not the named contract is still refused.
        let dpop = sign(&s.signer, "POST", CONTRACT_URL, |_| {});
        refused(
            &with_contract(&j, &dpop, &s.env, Some(&other), now()),
            "contract.dtc_mismatch",
            13,
        );
        // Past its validUntil (the proof itself still fresh): expired.
        let short = grant(&s, &owner, |g| g.valid_until = secs() + 5);
        s.signer.install_contract(&short, None).unwrap();
        let dpop = sign(&s.signer, "POST", CONTRACT_URL, |_| {});
        let j2 = Judge::new(policy_with_owners(&s.root, &s.pcr0, &[owner.did()]));
        let later = UnixTime::from_millis((secs() + 5) * 1000 + 500);
        refused(
            &with_contract(&j2, &dpop, &s.env, Some(&short), later),
            "contract.expired",
            13,
        );
    }

    #[test]
    fn every_mcp_tool_a_request_calls_must_be_granted() {
        let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let s = locked(&owner);
        let c = grant(&s, &owner, |g| g.tools = vec!["echo".into()]);
        s.signer.install_contract(&c, None).unwrap();
        let j = Judge::new(policy_with_owners(&s.root, &s.pcr0, &[owner.did()]));
        let call = |body: &RequestBody| {
            let dpop = sign(&s.signer, "POST", CONTRACT_URL, |r| {
                r.bd = Some(body.digest.clone());
            });
            j.v.decide(
                &Request {
                    method: "POST",
                    url: CONTRACT_URL,
                    dpop: &dpop,
                    access_token: None,
                    evidence: Some(&s.env),
                    contract: Some(&c),
                    body: Some(body),
                },
                now(),
                Stores {
                    replay: &j.replay,
                    nonces: Some(&j.nonces),
                },
            )
        };
        let (_, echo) = tool_body("echo");
        let a = call(&echo);
        assert_eq!(
            a.accepted()
                .expect("granted tool")
                .contract
                .as_ref()
                .unwrap()
                .tools,
            vec!["echo".to_string()]
        );
        // The proof names no calls (the host left cada.mcp out): the body's calls decide.
        let (_, other) = tool_body("delete_all");
        refused(&call(&other), "contract.not_permitted.tool", 13);
        // The enclave itself refuses to sign for a tool outside the contract.
        let err = s
            .signer
            .sign_pop(&SignPopRequest {
                htm: "POST".into(),
                htu: CONTRACT_URL.into(),
                access_token: None,
                nonce: None,
                ctx: BTreeMap::new(),
                bd: Some(other.digest.clone()),
                mcp: other.calls.clone().unwrap(),
                exchange: None,
                task: None,
                traceparent: None,
            })
            .unwrap_err();
        assert!(
            err.to_string().contains("contract.not_permitted.tool"),
            "{err}"
        );
        // A batch: one call outside the contract refuses the whole request.
        let bytes = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_all"}}]"#;
        let batch = RequestBody {
            digest: mcp::body_digest(bytes),
            calls: Some(mcp::parse_body(bytes).unwrap().calls()),
            tool_arguments: None,
        };
        refused(&call(&batch), "contract.not_permitted.tool", 13);
        // Resources and prompts need grants of their own (none in this contract).
        for (bytes, code) in [
            (&br#"{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"file:///etc/passwd"}}"#[..], "contract.not_permitted.resource"),
            (br#"{"jsonrpc":"2.0","id":4,"method":"prompts/get","params":{"name":"jailbreak"}}"#, "contract.not_permitted.prompt"),
        ] {
            let body = RequestBody {
                digest: mcp::body_digest(bytes),
                calls: Some(mcp::parse_body(bytes).unwrap().calls()),
                tool_arguments: None,
            };
            refused(&call(&body), code, 13);
        }
        // Calls that name nothing (initialize, tools/list) need no grant.
        let bytes = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        let list = RequestBody {
            digest: mcp::body_digest(bytes),
            calls: Some(mcp::parse_body(bytes).unwrap().calls()),
            tool_arguments: None,
        };
        assert!(call(&list).accepted().is_some());
    }

    #[test]
    fn no_contract_or_an_untrusted_owner_is_refused() {
        // An enclave that is not locked names no contract.
        let s = sim();
        let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let j = Judge::new(policy_with_owners(&s.root, &s.pcr0, &[owner.did()]));
        let dpop = sign(&s.signer, "POST", CONTRACT_URL, |_| {});
        refused(
            &with_contract(&j, &dpop, &s.env, None, now()),
            "contract.missing",
            13,
        );
        // Owner B's enclave, with B's contract, where only owner A is trusted.
        let b = OwnerKey::generate(OwnerAlg::Es256).unwrap();
        let s = locked(&b);
        let c = grant(&s, &b, |_| {});
        s.signer.install_contract(&c, None).unwrap();
        let j = Judge::new(policy_with_owners(&s.root, &s.pcr0, &[owner.did()]));
        let dpop = sign(&s.signer, "POST", CONTRACT_URL, |_| {});
        refused(
            &with_contract(&j, &dpop, &s.env, Some(&c), now()),
            "contract.untrusted_owner",
            13,
        );
        // Audiences without owners are unchanged: attestation and measurements decide.
        let j = Judge::new(policy(&s.root, &s.pcr0, ""));
        let d = with_contract(&j, &dpop, &s.env, None, now());
        assert!(d.accepted().is_some_and(|a| a.contract.is_none()));
    }

    #[test]
    fn revocation_and_status_freshness_fail_closed() {
        let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let s = locked(&owner);
        let url = "https://owner.example/status/1";
        let mut list = StatusList::new(url, 131_072).unwrap();
        let c = grant(&s, &owner, |g| {
            g.status = Some(StatusEntry::new(url, 9).unwrap());
        });
        let live = list.issue(&owner, secs(), None).unwrap();
        s.signer.install_contract(&c, Some(&live)).unwrap();
        let j = Judge::new(policy_with_owners(&s.root, &s.pcr0, &[owner.did()]));
        // No list held: revocation cannot be checked.
        let dpop = sign(&s.signer, "POST", CONTRACT_URL, |_| {});
        refused(
            &with_contract(&j, &dpop, &s.env, Some(&c), now()),
            "contract.status_stale",
            13,
        );
        // A list signed by someone else is refused on arrival.
        let mallory = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let forged = list.issue(&mallory, secs(), None).unwrap();
        assert_eq!(
            j.v.install_status_list(&forged, secs(), now())
                .unwrap_err()
                .code(),
            "contract.status_forged"
        );
        // The owner's list, fetched now: accepted.
        j.v.install_status_list(&live, secs(), now()).unwrap();
        let dpop = sign(&s.signer, "POST", CONTRACT_URL, |_| {});
        assert!(with_contract(&j, &dpop, &s.env, Some(&c), now())
            .accepted()
            .is_some());
        // The same list, fetched longer ago than the staleness bound: fails closed.
        let j_old = Judge::new(policy_with_owners(&s.root, &s.pcr0, &[owner.did()]));
        j_old
            .v
            .install_status_list(&live, secs() - 61, now())
            .unwrap();
        let dpop = sign(&s.signer, "POST", CONTRACT_URL, |_| {});
        refused(
            &with_contract(&j_old, &dpop, &s.env, Some(&c), now()),
            "contract.status_stale",
            13,
        );
        // Revoked.
        list.revoke(9).unwrap();
        let revoked = list.issue(&owner, secs() + 1, None).unwrap();
        j.v.install_status_list(&revoked, secs(), now()).unwrap();
        let dpop = sign(&s.signer, "POST", CONTRACT_URL, |_| {});
        refused(
            &with_contract(&j, &dpop, &s.env, None, now()),
            "contract.revoked",
            13,
        );
    }

    /// A proof made outside the enclave (a test key, the same sim CA): what a verifier must
    /// refuse even if an enclave were wrong.
    fn crafted(
        binding_owner: &str,
        dtc: &str,
        htm: &str,
    ) -> (String, EvidenceEnvelope, Vec<u8>, String) {
        let sim = Sim::new(None).unwrap();
        let key = SigningKey::generate(SigAlg::EdDSA).unwrap();
        let mut b = key.binding();
        b.owner = Some(binding_owner.into());
        let env = sim.attest(&b.to_cbor(), b"n").unwrap();
        let claims = PopClaims {
            jti: format!("j-{}", secs()),
            htm: htm.into(),
            htu: CONTRACT_URL.into(),
            iat: secs(),
            exp: secs() + 30,
            ath: None,
            nonce: None,
            cada: CadaClaim {
                att: env.att_digest(),
                dtc: Some(dtc.into()),
                ..CadaClaim::default()
            },
        };
        let header = PopHeader {
            typ: token::TYP.into(),
            alg: "EdDSA".into(),
            jwk: key.jwk().clone(),
        };
        let si = token::signing_input(&header, &claims).unwrap();
        let sig = cada_protocol::b64::encode(key.sign(si.as_bytes()).unwrap());
        let pcr0 = sim.measurements().unwrap()["PCR0"].clone();
        (format!("{si}.{sig}"), env, sim.root_der().to_vec(), pcr0)
    }

    #[test]
    fn a_verifier_refuses_what_no_honest_enclave_would_sign() {
        let a = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let b = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let subject_key = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let g = |owner: &OwnerKey, methods: &[&str], subject: &str| {
            Grant::new(
                Subject::Key(subject.into()),
                vec!["https://api.example.com/v1".into()],
                methods.iter().map(|m| (*m).to_string()).collect(),
                secs() - 10,
                secs() + 600,
            )
            .issue(owner, secs())
            .unwrap()
        };
        // Owner A's contract on an enclave locked to owner B (both trusted).
        let c = g(&a, &["POST"], subject_key.did());
        let (dpop, env, root, pcr0) = crafted(b.did(), &cada_contract::digest_of(&c), "POST");
        let j = Judge::new(policy_with_owners(&root, &pcr0, &[a.did(), b.did()]));
        refused(
            &with_contract(&j, &dpop, &env, Some(&c), now()),
            "contract.owner_mismatch",
            13,
        );
        // A's contract for another key, on A's enclave.
        let (dpop, env, root, pcr0) = crafted(a.did(), &cada_contract::digest_of(&c), "POST");
        let j = Judge::new(policy_with_owners(&root, &pcr0, &[a.did()]));
        refused(
            &with_contract(&j, &dpop, &env, Some(&c), now()),
            "contract.subject",
            13,
        );
        // A request the contract does not permit (its subject is the image's PCR0 here).
        let sim_pcr0 = crafted(a.did(), "x", "POST").3;
        let set: BTreeMap<String, String> = [("PCR0".to_string(), sim_pcr0)].into_iter().collect();
        let by_image = Grant::new(
            Subject::Measurements(vec![set]),
            vec!["https://api.example.com/v1".into()],
            vec!["GET".into()],
            secs() - 10,
            secs() + 600,
        )
        .issue(&a, secs())
        .unwrap();
        let (dpop, env, root, pcr0) =
            crafted(a.did(), &cada_contract::digest_of(&by_image), "POST");
        let j = Judge::new(policy_with_owners(&root, &pcr0, &[a.did()]));
        refused(
            &with_contract(&j, &dpop, &env, Some(&by_image), now()),
            "contract.not_permitted.method",
            13,
        );
        // Not yet valid at the verifier's time (the enclave would not have installed it).
        let early = Grant::new(
            Subject::Key(subject_key.did().into()),
            vec!["https://api.example.com/v1".into()],
            vec!["POST".into()],
            secs() + 100,
            secs() + 600,
        )
        .issue(&a, secs())
        .unwrap();
        let (dpop, env, root, pcr0) = crafted(a.did(), &cada_contract::digest_of(&early), "POST");
        let j = Judge::new(policy_with_owners(&root, &pcr0, &[a.did()]));
        refused(
            &with_contract(&j, &dpop, &env, Some(&early), now()),
            "contract.not_yet_valid",
            13,
        );
        // A contract signed by a non-owner, presented with the digest the proof names.
        let m = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let c = g(&m, &["POST"], subject_key.did());
        let (dpop, env, root, pcr0) = crafted(a.did(), &cada_contract::digest_of(&c), "POST");
        let j = Judge::new(policy_with_owners(&root, &pcr0, &[a.did()]));
        refused(
            &with_contract(&j, &dpop, &env, Some(&c), now()),
            "contract.untrusted_owner",
            13,
        );
    }
}

/// What a verifier holds between requests (status lists, an issuer's keys) and what a token
/// carries from its contract: none of it may be rolled back, outlive its bound, or drop a
/// rule of the contract.
mod held_state_and_tokens {
    use super::*;
    use cada_attestation_verifier::decide::Exchange;
    use cada_contract::{Grant, OwnerAlg, OwnerKey, OwnerLock, StatusEntry, StatusList, Subject};
    use cada_protocol::access_token::{AccessTokenClaims, Actor, CadaAt, Confirmation, TYP};
    use cada_sts::exchange::{Minter, TokenRequest};
    use cada_sts::keys::{KeySet, SigningKey as StsKey};

    const ISS: &str = "https://sts.example.com";
    const API: &str = "https://api.example.com/v1";

    fn secs() -> u64 {
        now().as_secs()
    }

    fn locked(owner: &OwnerKey) -> Setup {
        let s = sim();
        let lock = OwnerLock::issue(owner, s.signer.key().did(), secs(), 300).unwrap();
        let r = s.signer.lock_owner(&lock).unwrap();
        let env = EvidenceEnvelope::from_cbor(&r.envelope).unwrap();
        Setup { env, ..s }
    }

    /// `extra` TOML, then the API's audience allowing the sim image, its owners `owners`.
    fn toml_policy(s: &Setup, owners: &[&str], extra: &str) -> Policy {
        let owners = owners
            .iter()
            .map(|o| format!("\"{o}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let owners = if owners.is_empty() {
            String::new()
        } else {
            format!("owners = [{owners}]\n")
        };
        let mut p = Policy::from_toml(
            &format!(
                "{extra}\n[[audience]]\nprefix = \"{API}\"\nmeasurements = [{{ PCR0 = \"{}\" }}]\n{owners}",
                s.pcr0
            ),
            std::path::Path::new("."),
            "test",
        )
        .unwrap();
        p.nitro_roots
            .add(TrustAnchor::from_der("sim", &s.root).unwrap());
        p
    }

    fn issuer_toml(max_stale: u64) -> String {
        format!(
            "[[issuer]]\nissuer = \"{ISS}\"\njwks_uri = \"{ISS}/jwks\"\njwks_max_stale_secs = {max_stale}\n"
        )
    }

    fn sts_keys() -> KeySet {
        KeySet::new(StsKey::generate().unwrap().0, vec![])
    }

    fn jwks(keys: &KeySet) -> Vec<u8> {
        serde_json::to_vec(&keys.jwks()).unwrap()
    }

    /// A token of `keys` for the sim signer's key, for [`API`].
    fn token(keys: &KeySet, s: &Setup, required_ctx: &[&str]) -> String {
        let now = secs();
        let claims = AccessTokenClaims {
            iss: ISS.into(),
            sub: "did:key:z6MkOwner".into(),
            client_id: s.signer.key().did().into(),
            aud: API.into(),
            scope: String::new(),
            iat: now,
            exp: now + 300,
            jti: format!("t{now}"),
            cnf: Confirmation {
                jkt: s.signer.key().jkt().into(),
            },
            act: Actor::nest(&[s.signer.key().did()]),
            cada_dch: vec!["d".into()],
            cada_tree: vec![],
            cada: CadaAt {
                platform: "sim".into(),
                msr: "m".into(),
                att: "a".into(),
                dtc: "d".into(),
                tools: vec![],
                resources: vec![],
                prompts: vec![],
                required_ctx: required_ctx.iter().map(|k| (*k).to_owned()).collect(),
                dtc_exp: None,
            },
            authorization_details: None,
        };
        keys.active().sign_jwt(TYP, &claims).unwrap()
    }

    fn with_token(j: &Judge, s: &Setup, token: &str, ctx: &[(&str, &str)]) -> Decision {
        let url = format!("{API}/orders");
        let dpop = sign(&s.signer, "POST", &url, |r| {
            r.access_token = Some(token.to_owned());
            r.ctx = ctx
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
        });
        j.decide("POST", &url, &dpop, Some(token), None, now())
    }

    /// Issue 21 (suspected, decided: bound it): a JWKS fetched from `jwks_uri` is used
    /// until `jwks_max_stale_secs` after the last fetch that succeeded, then tokens signed
    /// by its keys are refused (`token.jwks_stale`, rule 5) until a fetch succeeds again.
    /// The clock is injected: the fetch time is passed in.
    #[test]
    fn fetched_issuer_keys_are_used_until_max_stale_then_refused() {
        let s = sim();
        let keys = sts_keys();
        let t = token(&keys, &s, &[]);
        let fresh = Judge::new(toml_policy(&s, &[], &issuer_toml(120)));
        // Never fetched: nothing to check the token with.
        let d = with_token(&fresh, &s, &t, &[]);
        refused(&d, "token.jwks_stale", 5);
        if let Decision::Refuse(r) = &d {
            assert!(r.to_string().contains("never fetched"), "{r}");
        }
        // Fetched 100 s ago: within the bound.
        let t0 = secs();
        fresh
            .v
            .install_jwks_at(ISS, &jwks(&keys), UnixTime::from_secs(t0 - 100))
            .unwrap();
        assert!(with_token(&fresh, &s, &t, &[]).accepted().is_some());
        assert_eq!(fresh.v.jwks_fetched_at(ISS), Some(t0 - 100));
        // The issuer stops answering (or answers garbage): the keys age past the bound.
        let stale = Judge::new(toml_policy(&s, &[], &issuer_toml(120)));
        stale
            .v
            .install_jwks_at(ISS, &jwks(&keys), UnixTime::from_secs(t0 - 121))
            .unwrap();
        assert!(stale
            .v
            .install_jwks_at(ISS, b"<html>503</html>", now())
            .is_err());
        let d = with_token(&stale, &s, &t, &[]);
        refused(&d, "token.jwks_stale", 5);
        if let Decision::Refuse(r) = &d {
            assert!(r.to_string().contains("were last fetched 12"), "{r}");
        }
        // A fetch that succeeds again restores it.
        stale.v.install_jwks_at(ISS, &jwks(&keys), now()).unwrap();
        assert!(with_token(&stale, &s, &t, &[]).accepted().is_some());
        // Keys pinned in the policy file never go stale.
        let dir = cada_e2e::TempDir::new("pinned-jwks");
        let file = dir.0.join("jwks.json");
        std::fs::write(&file, jwks(&keys)).unwrap();
        let pinned = Judge::new(toml_policy(
            &s,
            &[],
            &format!("{}jwks = {:?}\n", issuer_toml(120), file.to_str().unwrap()),
        ));
        assert!(with_token(&pinned, &s, &t, &[]).accepted().is_some());
        // The bound is checked when the policy is read.
        for bad in ["jwks_max_stale_secs = 0", "jwks_max_stale_secs = 86401"] {
            let e = Policy::from_toml(
                &format!("[[issuer]]\nissuer = \"{ISS}\"\njwks_uri = \"{ISS}/jwks\"\n{bad}\n"),
                std::path::Path::new("."),
                "test",
            )
            .unwrap_err();
            assert!(e.message.contains("jwks_max_stale_secs"), "{e}");
        }
    }

    /// Issue 21 (suspected, decided: check it): the STS checks the contract's `requiredCtx`
    /// on the exchange proof only; the token now carries the keys (`cada.required_ctx`) and
    /// a resource server refuses a request under the token whose proof lacks one
    /// (`contract.not_permitted.ctx`, rule 13) — here a proof the enclave signed under a
    /// second contract without that requirement.
    #[test]
    fn a_token_carries_its_contracts_required_ctx_to_every_request() {
        let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let s = locked(&owner);
        let mut g = Grant::new(
            Subject::Key(s.signer.key().did().into()),
            vec![API.into(), ISS.into()],
            vec!["POST".into()],
            secs() - 10,
            secs() + 600,
        );
        g.required_ctx = vec!["task".into()];
        let with_ctx = g.issue(&owner, secs()).unwrap();
        s.signer.install_contract(&with_ctx, None).unwrap();
        // The exchange at the STS: the library's evaluate_exchange, then the STS's minter.
        let sts = Judge::new(toml_policy(&s, &[owner.did()], ""));
        let token_url = format!("{ISS}/token");
        let dpop = sign(&s.signer, "POST", &token_url, |r| {
            r.ctx = BTreeMap::from([("task".to_string(), "t-1".to_string())]);
        });
        let pending = sts
            .v
            .evaluate_exchange(
                &Request {
                    method: "POST",
                    url: &token_url,
                    dpop: &dpop,
                    access_token: None,
                    evidence: Some(&s.env),
                    contract: Some(&with_ctx),
                    body: None,
                },
                &Exchange {
                    resource: API,
                    scopes: &[],
                    authorization_details: &[],
                },
                now(),
                Some(&sts.nonces),
            )
            .expect("the exchange is accepted");
        let keys = sts_keys();
        let minter = Minter {
            issuer: ISS.into(),
            ttl_secs: 300,
            keys,
        };
        let (token, claims) = minter
            .mint(
                pending.accepted(),
                &TokenRequest {
                    resource: API.into(),
                    scopes: vec![],
                    subject_token: with_ctx.clone(),
                    authorization_details: vec![],
                },
                now(),
            )
            .unwrap();
        assert_eq!(claims.cada.required_ctx, vec!["task".to_string()]);
        // The resource server, trusting the STS.
        let rs = Judge::new(toml_policy(&s, &[], &issuer_toml(300)));
        rs.v.install_jwks_at(
            ISS,
            &serde_json::to_vec(&minter.keys.jwks()).unwrap(),
            now(),
        )
        .unwrap();
        assert!(with_token(&rs, &s, &token, &[("task", "t-1")])
            .accepted()
            .is_some());
        // A second contract of the same owner for the API, without the requirement: the
        // enclave signs under it a proof without `task`, and sends it with the token.
        let mut g2 = Grant::new(
            Subject::Key(s.signer.key().did().into()),
            vec![API.into()],
            vec!["POST".into()],
            secs() - 10,
            secs() + 600,
        );
        g2.name = Some("no ctx".into());
        s.signer
            .install_contract(&g2.issue(&owner, secs()).unwrap(), None)
            .unwrap();
        let d = with_token(&rs, &s, &token, &[]);
        refused(&d, "contract.not_permitted.ctx", 13);
        if let Decision::Refuse(r) = &d {
            assert!(r.to_string().contains("\"task\""), "{r}");
        }
    }

    /// Issue 21, item 9 at the verifier: a fetched older list, or one of the same second
    /// that clears a revocation, never replaces the newest list held (it is refused with
    /// `contract.status_rollback` and the held list keeps its fetch time); a URL serving
    /// another URL's list is refused; a policy reload keeps the lists held.
    #[test]
    fn a_verifier_never_takes_an_older_status_list() {
        let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let s = locked(&owner);
        let url = "https://owner.example/status/1";
        let mut g = Grant::new(
            Subject::Key(s.signer.key().did().into()),
            vec![API.into()],
            vec!["POST".into()],
            secs() - 10,
            secs() + 600,
        );
        g.status = Some(StatusEntry::new(url, 9).unwrap());
        let c = g.issue(&owner, secs()).unwrap();
        let mut list = StatusList::new(url, 0).unwrap();
        let live = list.issue(&owner, secs() - 20, None).unwrap();
        s.signer.install_contract(&c, Some(&live)).unwrap();
        list.revoke(9).unwrap();
        let revoked = list.issue(&owner, secs() - 10, None).unwrap();
        let j = Judge::new(toml_policy(&s, &[owner.did()], ""));
        let decide = |j: &Judge| {
            let dpop = sign(&s.signer, "POST", URL, |_| {});
            j.v.decide(
                &Request {
                    method: "POST",
                    url: URL,
                    dpop: &dpop,
                    access_token: None,
                    evidence: Some(&s.env),
                    contract: Some(&c),
                    body: None,
                },
                now(),
                Stores {
                    replay: &j.replay,
                    nonces: Some(&j.nonces),
                },
            )
        };
        let t0 = secs();
        j.v.install_fetched_status_list(url, &live, t0, now())
            .unwrap();
        assert!(decide(&j).accepted().is_some());
        j.v.install_fetched_status_list(url, &revoked, t0, now())
            .unwrap();
        refused(&decide(&j), "contract.revoked", 13);
        // The owner's server (or a cache before it) serves the older list again.
        let e =
            j.v.install_fetched_status_list(url, &live, t0 + 1, now())
                .unwrap_err();
        assert_eq!(e.code(), "contract.status_rollback");
        assert_eq!(j.v.status_list_fetched_at(url), Some(t0));
        refused(&decide(&j), "contract.revoked", 13);
        // The same list again: fetched anew.
        j.v.install_fetched_status_list(url, &revoked, t0 + 2, now())
            .unwrap();
        assert_eq!(j.v.status_list_fetched_at(url), Some(t0 + 2));
        // A list issued in the same second that clears the bit.
        let mut cleared = StatusList::new(url, 0).unwrap();
        cleared.revoke(3).unwrap();
        let cleared = cleared.issue(&owner, secs() - 10, None).unwrap();
        assert_eq!(
            j.v.install_fetched_status_list(url, &cleared, secs(), now())
                .unwrap_err()
                .code(),
            "contract.status_rollback"
        );
        // Another URL's list, served at this one.
        let other = StatusList::new("https://owner.example/status/2", 0)
            .unwrap()
            .issue(&owner, secs(), None)
            .unwrap();
        assert_eq!(
            j.v.install_fetched_status_list(url, &other, secs(), now())
                .unwrap_err()
                .code(),
            "contract.status_mismatch"
        );
        // A reload builds a new verifier: it keeps the newest list, so the older one is
        // still refused there.
        let reloaded = Judge::new(toml_policy(&s, &[owner.did()], ""));
        reloaded.v.keep_status_lists_from(&j.v);
        assert_eq!(
            reloaded
                .v
                .install_fetched_status_list(url, &live, secs(), now())
                .unwrap_err()
                .code(),
            "contract.status_rollback"
        );
        refused(&decide(&reloaded), "contract.revoked", 13);
    }
}
