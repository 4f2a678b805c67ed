//! The enclave binary inside QEMU's nitro-enclave machine (run by scripts/emulate-nitro.sh,
//! which boots the project's EIF and starts the daemon; ignored by a plain `cargo test`).
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cada_attestation_verifier::evidence::{EvidencePolicy, EvidenceVerifier};
use cada_attestation_verifier::nitro::{NitroPolicy, NitroVerifier};
use cada_attestation_verifier::pop::{PopConfig, PopRequest, PopVerifier};
use cada_attestation_verifier::replay::MemoryReplayStore;
use cada_attestation_verifier::{UnixTime, VerifyError};
use cada_e2e::{http, mint};
use cada_protocol::envelope::EvidenceEnvelope;

const URL: &str = "https://api.example.com/v1/orders";

#[test]
#[ignore = "needs the QEMU nitro-enclave emulator: run scripts/emulate-nitro.sh"]
fn evidence_and_1000_proofs_from_the_emulated_enclave() {
    let sock = PathBuf::from(
        std::env::var("CADA_EMULATOR_SOCKET")
            .expect("CADA_EMULATOR_SOCKET (set by emulate-nitro.sh)"),
    );
    let pcrs: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(std::env::var("CADA_EMULATOR_PCRS").expect("CADA_EMULATOR_PCRS"))
            .expect("pcrs file"),
    )
    .expect("pcrs JSON");
    let set: BTreeMap<u8, Vec<u8>> = (0u8..3)
        .map(|i| {
            (
                i,
                hex::decode(pcrs[format!("PCR{i}")].as_str().expect("PCR")).expect("hex"),
            )
        })
        .collect();
    let nonce = "5eed0123456789abcdef";
    let (st, body) = http(
        &sock,
        "GET",
        &format!("/v1/evidence?nonce={nonce}"),
        None,
        Duration::from_secs(60),
    )
    .expect("evidence");
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let env = EvidenceEnvelope::from_header(v["evidence"].as_str().unwrap()).unwrap();
    let now = UnixTime::now();
    let policy = NitroPolicy {
        pcr_sets: vec![set.clone()],
        expected_nonce: Some(hex::decode(nonce).unwrap()),
        max_future_skew_ms: 120_000,
        ..NitroPolicy::default()
    };
    // The default policy refuses emulated evidence, saying why.
    let policy = EvidencePolicy {
        nitro: policy,
        ..EvidencePolicy::default()
    };
    let strict = EvidenceVerifier::new(NitroVerifier::default(), Default::default());
    assert!(matches!(
        strict.verify_with(&env, &policy, now),
        Err(VerifyError::UnsignedEmulatorDocument)
    ));
    // Emulator mode: PCRs equal `cada-verify pcrs` of the EIF, nonce and binding checked.
    let emu = EvidenceVerifier::new(
        NitroVerifier::default().insecure_accept_emulator_documents(),
        Default::default(),
    );
    let key = emu
        .verify_with(&env, &policy, now)
        .expect("emulated evidence verifies with the EIF's PCRs");
    assert!(key.emulated);
    println!(
        "emulated evidence: jkt {} PCR0 {}",
        key.jkt, key.measurements["PCR0"]
    );

    let verifier = PopVerifier::new(
        EvidenceVerifier::new(
            NitroVerifier::default().insecure_accept_emulator_documents(),
            Default::default(),
        ),
        PopConfig {
            evidence_policy: NitroPolicy {
                pcr_sets: vec![set],
                max_future_skew_ms: 120_000,
                ..NitroPolicy::default()
            },
            skew_secs: 60,
            ..PopConfig::default()
        },
    );
    let replay = MemoryReplayStore::default();
    let first = mint(&sock, "POST", URL, None, true);
    let env = EvidenceEnvelope::from_header(first["evidence"].as_str().unwrap()).unwrap();
    let start = Instant::now();
    let mut proofs = vec![first["dpop"].as_str().unwrap().to_owned()];
    for _ in 1..1000 {
        proofs.push(
            mint(&sock, "POST", URL, None, false)["dpop"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let minted = start.elapsed();
    for (i, p) in proofs.iter().enumerate() {
        let req = PopRequest {
            method: "POST",
            url: URL,
            evidence: (i == 0).then_some(&env),
            ..PopRequest::default()
        };
        verifier
            .verify(p, &req, &replay, UnixTime::now())
            .unwrap_or_else(|e| panic!("proof {i}: {e}"));
    }
    println!(
        "1000 proofs minted inside the emulated enclave in {:.2} s ({:.0} proofs/s), all verified",
        minted.as_secs_f64(),
        1000.0 / minted.as_secs_f64()
    );
}
