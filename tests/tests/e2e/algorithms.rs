//! Every signing algorithm the enclave offers produces proofs the verifier accepts, bound
//! through sim evidence; the delegation's URL prefixes match on origin and path segments;
//! a proof whose header names another algorithm than its key's, or carries `crit`, is
//! refused (in-process: same code as the binaries, no processes needed).
use std::collections::BTreeMap;

use cada_attestation_verifier::chain::TrustAnchor;
use cada_attestation_verifier::evidence::EvidenceVerifier;
use cada_attestation_verifier::nitro::{NitroPolicy, NitroVerifier};
use cada_attestation_verifier::pop::{PopConfig, PopRequest, PopVerifier};
use cada_attestation_verifier::replay::MemoryReplayStore;
use cada_attestation_verifier::{roots, UnixTime, VerifyError};
use cada_enclave::key::SigningKey;
use cada_enclave::platform::sim::Sim;
use cada_enclave::signer::{DelegationPolicy, Signer};
use cada_enclave::EnclaveError;
use cada_protocol::jwk::SigAlg;
use cada_protocol::url::{UrlError, UrlPrefix};
use cada_protocol::wire::SignPopRequest;
use cada_protocol::ProtocolError;

#[test]
fn eddsa_ed25519_es256_and_es384_proofs_verify() {
    for alg in SigAlg::ALL {
        let sim = Sim::new(None).unwrap();
        let mut store = roots::nitro_store();
        store.add(TrustAnchor::from_der("sim", sim.root_der()).unwrap());
        let signer = Signer::new(
            SigningKey::generate(alg).unwrap(),
            Box::new(sim),
            DelegationPolicy::default(),
        )
        .unwrap();
        let env = signer.attest(b"verifier nonce").unwrap();
        let v = PopVerifier::new(
            EvidenceVerifier::new(NitroVerifier::new(store), Default::default()),
            PopConfig {
                evidence_policy: NitroPolicy {
                    expected_nonce: Some(b"verifier nonce".to_vec()),
                    max_future_skew_ms: 10_000,
                    ..NitroPolicy::default()
                },
                ..PopConfig::default()
            },
        );
        let req = SignPopRequest {
            htm: "GET".into(),
            htu: "https://api.example.com/x".into(),
            access_token: Some("t".into()),
            nonce: Some("server-nonce".into()),
            ctx: BTreeMap::from([("task".into(), "42".into())]),
            bd: None,
            mcp: vec![],
            exchange: None,
            task: None,
            traceparent: None,
        };
        let dpop = signer.sign_pop(&req).unwrap().dpop;
        let header = cada_protocol::token::parse_compact(&dpop).unwrap().header;
        assert_eq!(
            header.alg,
            alg.as_str(),
            "the proof names the configured alg"
        );
        let pr = PopRequest {
            method: "GET",
            url: "https://api.example.com/x?page=2",
            access_token: Some("t"),
            expected_nonce: Some("server-nonce"),
            evidence: Some(&env),
        };
        let ok = v
            .verify(&dpop, &pr, &MemoryReplayStore::default(), UnixTime::now())
            .unwrap();
        assert_eq!(ok.claims.cada.ctx["task"], "42", "{alg:?}");
        let wrong_nonce = PopRequest {
            expected_nonce: Some("other"),
            ..pr.clone()
        };
        assert_eq!(
            v.verify(
                &dpop,
                &wrong_nonce,
                &MemoryReplayStore::default(),
                UnixTime::now()
            )
            .unwrap_err(),
            VerifyError::PopNonce("does not match the nonce this server issued"),
            "{alg:?}"
        );
    }
}

fn get(u: &str) -> SignPopRequest {
    SignPopRequest {
        htm: "GET".into(),
        htu: u.into(),
        access_token: None,
        nonce: None,
        ctx: BTreeMap::new(),
        bd: None,
        mcp: vec![],
        exchange: None,
        task: None,
        traceparent: None,
    }
}

fn signer_for(prefixes: &[&str]) -> Signer {
    let policy = DelegationPolicy {
        url_prefixes: prefixes
            .iter()
            .map(|p| UrlPrefix::parse(p).unwrap())
            .collect(),
        ..DelegationPolicy::default()
    };
    Signer::new(
        SigningKey::generate(SigAlg::EdDSA).unwrap(),
        Box::new(Sim::new(None).unwrap()),
        policy,
    )
    .unwrap()
}

#[test]
fn the_enclave_enforces_its_delegation() {
    let policy = DelegationPolicy {
        url_prefixes: vec![UrlPrefix::parse("https://api.example.com/").unwrap()],
        methods: vec!["GET".into()],
        budget: Some(2),
        ..DelegationPolicy::default()
    };
    let signer = Signer::new(
        SigningKey::generate(SigAlg::EdDSA).unwrap(),
        Box::new(Sim::new(None).unwrap()),
        policy,
    )
    .unwrap();
    let mut post = get("https://api.example.com/x");
    post.htm = "POST".into();
    assert!(signer.sign_pop(&post).is_err());
    assert!(signer.sign_pop(&get("https://api.example.org/x")).is_err());
    assert!(signer
        .sign_pop(&get("https://api.example.com.evil/x"))
        .is_err());
    assert!(signer.sign_pop(&get("https://api.example.com/a")).is_ok());
    assert!(signer.sign_pop(&get("https://api.example.com/b")).is_ok());
    let spent = signer
        .sign_pop(&get("https://api.example.com/c"))
        .unwrap_err();
    assert!(spent.to_string().contains("budget"), "{spent}");
}

#[test]
fn a_url_prefix_is_an_origin_and_whole_path_segments() {
    let s = signer_for(&["https://api.example.com", "https://other.example/v1"]);
    let denied = |u: &str| match s.sign_pop(&get(u)) {
        Err(EnclaveError::PolicyDenied(m)) => m,
        other => panic!("{u}: {other:?}"),
    };
    // A lookalike host that merely starts with the prefix's text.
    denied("https://api.example.com.evil.net/x");
    denied("https://api.example.community/x");
    // Another port or scheme is another origin.
    denied("https://api.example.com:8443/x");
    // A path prefix covers its own segment only.
    denied("https://other.example/v10");
    denied("https://other.example/v1x/y");
    denied("https://other.example/");
    for ok in [
        "https://api.example.com/",
        "https://api.example.com/x/y?q=1",
        "https://other.example/v1",
        "https://other.example/v1/",
        "https://other.example/v1/orders",
    ] {
        let p = s.sign_pop(&get(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
        let claims = cada_protocol::token::parse_compact(&p.dpop).unwrap().claims;
        assert_eq!(
            claims.htu,
            ok.split('?').next().unwrap(),
            "htu is exactly what was asked"
        );
    }
}

#[test]
fn userinfo_fragments_and_unnormalised_urls_are_refused_not_rewritten() {
    let s = signer_for(&["https://api.example.com"]);
    let refused = |u: &str| match s.sign_pop(&get(u)) {
        Err(EnclaveError::Htu(e)) => e,
        other => panic!("{u}: {other:?}"),
    };
    // Before: signed, with the userinfo kept in htu; the real host is evil.net.
    assert_eq!(
        refused("https://api.example.com@evil.net/x"),
        UrlError::Userinfo
    );
    assert_eq!(
        refused("https://user:pw@api.example.com/x"),
        UrlError::Userinfo
    );
    assert_eq!(
        refused("https://api.example.com/x#frag"),
        UrlError::Fragment
    );
    for (u, normal) in [
        ("https://API.EXAMPLE.com/x", "https://api.example.com/x"),
        ("HTTPS://api.example.com/x", "https://api.example.com/x"),
        ("https://api.example.com:443/x", "https://api.example.com/x"),
        (
            "https://api.example.com/a/../x",
            "https://api.example.com/x",
        ),
        ("https://api.example.com", "https://api.example.com/"),
    ] {
        // Dot segments have their own code (`url.dot_segment`, issue 21); every refusal
        // still names the normal form.
        let e = refused(u);
        assert_eq!(e.normal_form(), Some(normal), "{u}: {e:?}");
    }
    // Nothing was signed for any of them.
    assert_eq!(s.describe().unwrap().seq, 0);
}

#[test]
fn a_proof_whose_alg_is_not_its_keys_or_that_carries_crit_is_refused() {
    use cada_enclave::platform::Platform;
    use cada_protocol::token::{self, CadaClaim, PopClaims};
    let sim = Sim::new(None).unwrap();
    let v = cada_e2e::verifier_trusting(&[sim.root_der().to_vec()], cada_e2e::test_pop_config());
    let now = UnixTime::now();
    // A proof with a raw header, signed by `key`.
    let proof = |key: &SigningKey, header: serde_json::Value, jti: &str| {
        let env = sim.attest(&key.binding().to_cbor(), b"n").unwrap();
        let claims = PopClaims {
            jti: jti.into(),
            htm: "GET".into(),
            htu: "https://api.example.com/x".into(),
            iat: now.as_secs(),
            exp: now.as_secs() + 30,
            ath: None,
            nonce: None,
            cada: CadaClaim {
                att: env.att_digest(),
                ..CadaClaim::default()
            },
        };
        let si = format!(
            "{}.{}",
            cada_protocol::b64::encode(header.to_string()),
            cada_protocol::b64::encode(serde_json::to_vec(&claims).unwrap())
        );
        let sig = cada_protocol::b64::encode(key.sign(si.as_bytes()).unwrap());
        (format!("{si}.{sig}"), env)
    };
    let check = |dpop: &str, env: &cada_protocol::envelope::EvidenceEnvelope| {
        v.verify(
            dpop,
            &PopRequest {
                method: "GET",
                url: "https://api.example.com/x",
                access_token: None,
                expected_nonce: None,
                evidence: Some(env),
            },
            &MemoryReplayStore::default(),
            now,
        )
    };
    let ed = SigningKey::generate(SigAlg::EdDSA).unwrap();
    let p256 = SigningKey::generate(SigAlg::ES256).unwrap();
    let p384 = SigningKey::generate(SigAlg::ES384).unwrap();
    let hdr = |alg: &str, key: &SigningKey| serde_json::json!({"typ": token::TYP, "alg": alg, "jwk": key.jwk()});
    // Both names of Ed25519 verify over the same key.
    for (i, name) in ["EdDSA", "Ed25519"].into_iter().enumerate() {
        let (dpop, env) = proof(&ed, hdr(name, &ed), &format!("ok{i}"));
        check(&dpop, &env).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // A header naming another algorithm than the key's is refused before any signature
    // check, whatever signed it.
    for (i, (alg, key)) in [
        ("Ed25519", &p256),
        ("EdDSA", &p256),
        ("ES256", &p384),
        ("ES384", &p256),
        ("ES256", &ed),
    ]
    .into_iter()
    .enumerate()
    {
        let (dpop, env) = proof(key, hdr(alg, key), &format!("mismatch{i}"));
        match check(&dpop, &env).unwrap_err() {
            VerifyError::Protocol(ProtocolError::AlgKeyMismatch { .. }) => {}
            other => panic!("{alg} with {}: {other:?}", key.jwk().crv),
        }
    }
    // crit, even naming a registered header, refuses a correctly signed proof.
    let mut h = hdr("EdDSA", &ed);
    h["crit"] = serde_json::json!(["b64"]);
    h["b64"] = false.into();
    let (dpop, env) = proof(&ed, h, "crit");
    assert_eq!(
        check(&dpop, &env).unwrap_err(),
        VerifyError::Protocol(ProtocolError::CriticalHeader {
            names: vec!["b64".into()]
        })
    );
    // Unknown non-critical members are ignored (RFC 7515 §4).
    let mut h = hdr("EdDSA", &ed);
    h["kid"] = "k1".into();
    let (dpop, env) = proof(&ed, h, "kid");
    check(&dpop, &env).unwrap();
}

#[test]
fn a_binding_whose_did_is_not_the_keys_is_refused_and_checked_once_per_binding() {
    use cada_enclave::platform::Platform;
    use cada_protocol::binding::KeyBinding;
    use cada_protocol::token::{self, CadaClaim, PopClaims, PopHeader};
    let sim = Sim::new(None).unwrap();
    let root = sim.root_der().to_vec();
    let key = SigningKey::generate(SigAlg::EdDSA).unwrap();
    let other = SigningKey::generate(SigAlg::EdDSA).unwrap();
    let v = cada_e2e::verifier_trusting(&[root], cada_e2e::test_pop_config());
    let now = UnixTime::now();
    let proof = |env: &cada_protocol::envelope::EvidenceEnvelope, jti: &str| {
        let header = PopHeader {
            typ: token::TYP.into(),
            alg: "EdDSA".into(),
            jwk: key.jwk().clone(),
        };
        let claims = PopClaims {
            jti: jti.into(),
            htm: "GET".into(),
            htu: "https://api.example.com/x".into(),
            iat: now.as_secs(),
            exp: now.as_secs() + 30,
            ath: None,
            nonce: None,
            cada: CadaClaim {
                att: env.att_digest(),
                ..CadaClaim::default()
            },
        };
        let si = token::signing_input(&header, &claims).unwrap();
        format!(
            "{si}.{}",
            cada_protocol::b64::encode(key.sign(si.as_bytes()).unwrap())
        )
    };
    let req = |env| PopRequest {
        method: "GET",
        url: "https://api.example.com/x",
        access_token: None,
        expected_nonce: None,
        evidence: Some(env),
    };
    // Genuine evidence whose binding pairs this key's jkt with another key's did:key.
    let lying = KeyBinding {
        v: 1,
        jkt: key.jkt().into(),
        did: other.did().into(),
        hpke: None,
        owner: None,
    };
    let env = sim.attest(&lying.to_cbor(), b"n").unwrap();
    let err = v
        .verify(
            &proof(&env, "a"),
            &req(&env),
            &MemoryReplayStore::default(),
            now,
        )
        .unwrap_err();
    assert_eq!(
        err,
        VerifyError::Binding("the bound did:key is not the proof key's".into())
    );
    // An honest binding passes, and keeps passing once checked.
    let env = sim.attest(&key.binding().to_cbor(), b"n").unwrap();
    let store = MemoryReplayStore::default();
    v.verify(&proof(&env, "b"), &req(&env), &store, now)
        .unwrap();
    v.verify(&proof(&env, "c"), &req(&env), &store, now)
        .unwrap();
}
