//! Emulator mode: QEMU's `nitro-enclave` NSM answers unsigned documents (protected alg −1,
//! zero signature, 64 zero bytes as certificate and cabundle). They are refused by default,
//! saying why; in explicit emulator mode every payload rule and the policy still apply and
//! the result is marked emulated.
mod nitro_encode;

use std::collections::BTreeMap;

use cada_attestation_verifier::cose;
use cada_attestation_verifier::nitro::{AttestationDocument, NitroPolicy, NitroVerifier};
use cada_attestation_verifier::{UnixTime, VerifyError};

fn qemu_document(pcr0: u8, nonce: &[u8]) -> Vec<u8> {
    let doc = AttestationDocument {
        module_id: "i-emulated-enc0123456789abcdef".into(),
        digest: "SHA384".into(),
        timestamp: UnixTime::from_secs(1_795_000_000),
        pcrs: BTreeMap::from([(0, vec![pcr0; 48]), (1, vec![2; 48]), (2, vec![3; 48])]),
        certificate: vec![0; 64],
        cabundle: vec![vec![0; 64]],
        public_key: None,
        user_data: Some(b"binding".to_vec()),
        nonce: Some(nonce.to_vec()),
    };
    // {1: -1}: the algorithm QEMU writes into unsigned documents
    cose::encode_sign1(
        &[0xa1, 0x01, 0x20],
        &nitro_encode::encode_payload(&doc),
        &[0u8; 96],
    )
}

#[test]
fn unsigned_documents_only_in_explicit_emulator_mode_and_policy_still_applies() {
    let at = UnixTime::from_secs(1_795_000_001);
    let doc = qemu_document(1, b"n");
    let policy = NitroPolicy {
        pcr_sets: vec![BTreeMap::from([(0u8, vec![1u8; 48])])],
        expected_nonce: Some(b"n".to_vec()),
        ..NitroPolicy::default()
    };
    assert_eq!(
        NitroVerifier::default()
            .verify(&doc, &policy, at)
            .unwrap_err(),
        VerifyError::UnsignedEmulatorDocument
    );
    let emu = NitroVerifier::default().insecure_accept_emulator_documents();
    let ok = emu.verify(&doc, &policy, at).unwrap();
    assert!(ok.emulated);
    assert!(ok.root_fingerprint.is_empty());
    assert!(matches!(
        emu.verify(&qemu_document(9, b"n"), &policy, at),
        Err(VerifyError::PcrMismatch(_))
    ));
    assert!(matches!(
        emu.verify(&qemu_document(1, b"x"), &policy, at),
        Err(VerifyError::NonceMismatch { .. })
    ));
    // Payload rules still apply: a broken payload is refused even in emulator mode.
    let broken = cose::encode_sign1(&[0xa1, 0x01, 0x20], &[0xa1, 0x61, b'x', 0x01], &[0u8; 96]);
    assert!(emu.verify(&broken, &policy, at).is_err());
    // The same payload claiming ES384 is not "emulated": it must chain to a trusted root.
    let payload = cose::decode(&doc, 1 << 16).unwrap().payload;
    let forged = cose::encode_sign1(&nitro_encode::PROTECTED_ES384, &payload, &[0u8; 96]);
    assert!(matches!(
        emu.verify(&forged, &policy, at),
        Err(VerifyError::UntrustedRoot { .. })
    ));
}
