//! Evidence envelopes: `EvidenceEnvelope::from_cbor` and `from_header` (base64url of the
//! CBOR, the `CADA-Evidence` header), the key binding, then `EvidenceVerifier::verify_with`
//! for every platform — production roots, and once more with emulator documents accepted
//! so that mutated bindings and nonces reach the binding checks without a signature.
//!
//! Input: CBOR of an envelope; or `0xff` then header text. Verification time: inside N03's
//! chain for Nitro, inside the VCEKs' for SEV-SNP.
//! Oracles: an envelope that decodes re-encodes to itself in both forms; production
//! verification never returns an emulated key.
#![no_main]

use std::sync::OnceLock;

use cada_attestation_verifier::evidence::{EvidencePolicy, EvidenceVerifier};
use cada_attestation_verifier::nitro::{NitroPolicy, NitroVerifier};
use cada_attestation_verifier::snp::SnpPolicy;
use cada_fuzz::{NITRO_AT, SNP_AT};
use cada_protocol::binding::KeyBinding;
use cada_protocol::envelope::{EvidenceEnvelope, Platform};
use libfuzzer_sys::fuzz_target;

fn production() -> &'static EvidenceVerifier {
    static V: OnceLock<EvidenceVerifier> = OnceLock::new();
    V.get_or_init(|| EvidenceVerifier::new(NitroVerifier::default(), Default::default()))
}

fn emulator() -> &'static EvidenceVerifier {
    static V: OnceLock<EvidenceVerifier> = OnceLock::new();
    V.get_or_init(|| {
        EvidenceVerifier::new(
            NitroVerifier::default().insecure_accept_emulator_documents(),
            Default::default(),
        )
    })
}

fuzz_target!(
    init: {
        cada_fuzz::write_seeds_if_asked("envelope");
    },
    |data: &[u8]| {
        let env = match data.split_first() {
            Some((0xff, text)) => match std::str::from_utf8(text) {
                Ok(t) => EvidenceEnvelope::from_header(t),
                Err(_) => return,
            },
            _ => EvidenceEnvelope::from_cbor(data),
        };
        let Ok(env) = env else {
            return;
        };
        assert_eq!(EvidenceEnvelope::from_cbor(&env.to_cbor()).as_ref(), Ok(&env));
        assert_eq!(EvidenceEnvelope::from_header(&env.to_header()).as_ref(), Ok(&env));
        let _ = KeyBinding::from_cbor(&env.binding);
        let policy = EvidencePolicy {
            nitro: NitroPolicy {
                allow_debug: true,
                ..NitroPolicy::default()
            },
            snp: SnpPolicy {
                allow_debug: true,
                ..SnpPolicy::default()
            },
            max_age_ms: None,
        };
        let at = match env.platform {
            Platform::Nitro | Platform::Sim => NITRO_AT,
            Platform::SevSnp | Platform::SimSnp | Platform::Tpm => SNP_AT,
        };
        if let Ok(key) = production().verify_with(&env, &policy, at) {
            assert!(!key.emulated, "production verification accepted an emulator document");
        }
        let _ = emulator().verify_with(&env, &policy, at);
    }
);
