//! The signing path on `sim-snp`: SEV-SNP-format evidence through the real enclave and
//! daemon binaries, verified by the same verifier and policy; the key-binding and replay
//! rejections of the Nitro path hold for SNP too.
use cada_attestation_verifier::chain::{TrustAnchor, TrustStore};
use cada_attestation_verifier::evidence::EvidenceVerifier;
use cada_attestation_verifier::nitro::NitroVerifier;
use cada_attestation_verifier::pop::{PopConfig, PopRequest, PopVerifier};
use cada_attestation_verifier::replay::MemoryReplayStore;
use cada_attestation_verifier::snp::{SnpPolicy, SnpVerifier};
use cada_attestation_verifier::{roots, UnixTime, VerifyError};
use cada_e2e::*;
use cada_protocol::envelope::{EvidenceEnvelope, Platform};

const URL: &str = "https://api.example.com/v1/orders";

fn verifier(trusted: &[&std::path::Path], snp: SnpPolicy) -> PopVerifier {
    let mut store = TrustStore::empty();
    for d in trusted {
        let der = std::fs::read(d.join("state/sim-snp-root.der")).expect("sim-snp root");
        store.add(TrustAnchor::from_der("sim-snp", &der).unwrap());
    }
    PopVerifier::new(
        EvidenceVerifier::new(
            NitroVerifier::new(roots::nitro_store()),
            SnpVerifier::new(store),
        ),
        PopConfig {
            snp_policy: snp,
            ..PopConfig::default()
        },
    )
}

fn req<'a>(at: Option<&'a str>, ev: Option<&'a EvidenceEnvelope>) -> PopRequest<'a> {
    PopRequest {
        method: "POST",
        url: URL,
        access_token: at,
        expected_nonce: None,
        evidence: ev,
    }
}

#[test]
fn sim_snp_end_to_end_with_binding_and_replay_rejections() {
    let a = TempDir::new("snp-a");
    let b = TempDir::new("snp-b");
    let _ea = start_enclave_on(&a.0, "sim-snp", &[]);
    let _pa = start_parent(&a.0, &[]);
    let _eb = start_enclave_on(&b.0, "sim-snp", &[]);
    let _pb = start_parent(&b.0, &[]);
    let now = UnixTime::now();
    let ans = mint(&a.0.join("agent.sock"), "POST", URL, Some("tok"), true);
    let dpop = ans["dpop"].as_str().unwrap();
    let env = EvidenceEnvelope::from_header(ans["evidence"].as_str().unwrap()).unwrap();
    assert_eq!(env.platform, Platform::SimSnp);
    assert_eq!(env.document.len(), 1184, "a real-format SNP report");
    let env_b = EvidenceEnvelope::from_header(
        mint(&b.0.join("agent.sock"), "GET", URL, None, true)["evidence"]
            .as_str()
            .unwrap(),
    )
    .unwrap();

    // Default policy: the sim-snp root is not AMD's.
    let strict = verifier(&[], SnpPolicy::default());
    let err = strict
        .verify(
            dpop,
            &req(Some("tok"), Some(&env)),
            &MemoryReplayStore::default(),
            now,
        )
        .unwrap_err();
    assert!(matches!(err, VerifyError::UntrustedRoot { .. }), "{err:?}");

    let v = verifier(&[&a.0, &b.0], SnpPolicy::default());
    let store = MemoryReplayStore::default();
    // Another enclave's evidence does not bind this key.
    let err = v
        .verify(dpop, &req(Some("tok"), Some(&env_b)), &store, now)
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::BindingMismatch { .. }),
        "{err:?}"
    );
    // Evidence relabelled as real SEV-SNP is refused.
    let mut relabelled = env.clone();
    relabelled.platform = Platform::SevSnp;
    let err = v
        .verify(dpop, &req(Some("tok"), Some(&relabelled)), &store, now)
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::PlatformMismatch { .. }),
        "{err:?}"
    );
    // A nonce or binding swapped in the envelope no longer matches report_data.
    let mut other_nonce = env.clone();
    other_nonce.nonce = vec![1, 2, 3];
    let err = v
        .verify(dpop, &req(Some("tok"), Some(&other_nonce)), &store, now)
        .unwrap_err();
    assert!(matches!(err, VerifyError::Binding(_)), "{err:?}");
    let mut other_binding = env.clone();
    other_binding.binding = env_b.binding.clone();
    let err = v
        .verify(dpop, &req(Some("tok"), Some(&other_binding)), &store, now)
        .unwrap_err();
    assert!(matches!(err, VerifyError::Binding(_)), "{err:?}");
    // A stripped access-token binding is caught.
    let no_ath = mint(&a.0.join("agent.sock"), "POST", URL, None, false);
    // (the key is not known yet: send the evidence with it)
    let err = v
        .verify(
            no_ath["dpop"].as_str().unwrap(),
            &req(Some("tok"), Some(&env)),
            &store,
            now,
        )
        .unwrap_err();
    assert_eq!(
        err,
        VerifyError::AccessTokenHash("is missing but an access token was sent")
    );
    // The genuine proof passes once, then is a replay.
    let ok = v
        .verify(dpop, &req(Some("tok"), Some(&env)), &store, now)
        .unwrap();
    assert_eq!(ok.key.platform, Platform::SimSnp);
    assert!(ok.key.measurements.contains_key("MEASUREMENT"));
    let err = v
        .verify(dpop, &req(Some("tok"), None), &store, now)
        .unwrap_err();
    assert!(matches!(err, VerifyError::Replay { .. }), "{err:?}");
    // SNP policy applies through the same verifier: a measurement that is not allowed.
    let picky = verifier(
        &[&a.0],
        SnpPolicy {
            measurements: vec![vec![7u8; 48]],
            ..SnpPolicy::default()
        },
    );
    let p2 = mint(&a.0.join("agent.sock"), "POST", URL, None, false);
    let err = picky
        .verify(
            p2["dpop"].as_str().unwrap(),
            &req(None, Some(&env)),
            &MemoryReplayStore::default(),
            now,
        )
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::MeasurementNotAllowed(_)),
        "{err:?}"
    );
}
