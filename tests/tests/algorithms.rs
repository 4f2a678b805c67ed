//! Every signing algorithm the enclave offers produces proofs the verifier accepts, bound
//! through sim evidence (in-process: same code as the binaries, no processes needed).
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
use cada_protocol::jwk::SigAlg;
use cada_protocol::wire::SignPopRequest;

#[test]
fn eddsa_es256_and_es384_proofs_verify() {
    for alg in [SigAlg::EdDSA, SigAlg::ES256, SigAlg::ES384] {
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
        };
        let dpop = signer.sign_pop(&req).unwrap().dpop;
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

#[test]
fn the_enclave_enforces_its_delegation() {
    let policy = DelegationPolicy {
        url_prefixes: vec![cada_protocol::url::UrlPrefix::parse("https://api.example.com/").unwrap()],
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
    let req = |m: &str, u: &str| SignPopRequest {
        htm: m.into(),
        htu: u.into(),
        access_token: None,
        nonce: None,
        ctx: BTreeMap::new(),
    };
    assert!(signer
        .sign_pop(&req("POST", "https://api.example.com/x"))
        .is_err());
    assert!(signer
        .sign_pop(&req("GET", "https://api.example.org/x"))
        .is_err());
    assert!(signer
        .sign_pop(&req("GET", "https://api.example.com.evil/x"))
        .is_err());
    assert!(signer
        .sign_pop(&req("GET", "https://api.example.com/a"))
        .is_ok());
    assert!(signer
        .sign_pop(&req("GET", "https://api.example.com/b"))
        .is_ok());
    let spent = signer
        .sign_pop(&req("GET", "https://api.example.com/c"))
        .unwrap_err();
    assert!(spent.to_string().contains("budget"), "{spent}");
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
        let si = token::signing_input(&header, &claims);
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
