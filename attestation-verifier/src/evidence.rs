//! Evidence envelopes: verify the platform evidence, then the key binding it carries.
use std::collections::BTreeMap;

use cada_protocol::binding::KeyBinding;
use cada_protocol::envelope::{EvidenceEnvelope, Platform};
use serde::Serialize;

use crate::nitro::{NitroPolicy, NitroVerifier};
use crate::roots::AWS_NITRO_ROOT_G1_SHA256;
use crate::{UnixTime, VerifyError};

/// A key whose binding was verified through attestation evidence.
#[derive(Debug, Clone, Serialize)]
pub struct AttestedKey {
    /// RFC 7638 thumbprint of the bound key.
    pub jkt: String,
    /// `did:key` of the bound key.
    pub did: String,
    /// Platform, as determined by the root the evidence chains to.
    pub platform: Platform,
    /// Measurements (`PCR0` … → hex).
    pub measurements: BTreeMap<String, String>,
    /// `module_id` (Nitro) or chip id (SNP).
    pub module_id: String,
    /// base64url SHA-384 of the evidence document (`cada.att` of the key's proofs).
    pub att: String,
    /// Until when the evidence may be relied on.
    #[serde(serialize_with = "ser_time")]
    pub expires: UnixTime,
    /// Whether the evidence came from an emulator (never in production).
    pub emulated: bool,
}

fn ser_time<S: serde::Serializer>(t: &UnixTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_string())
}

/// Verifies evidence envelopes of every supported platform.
pub struct EvidenceVerifier {
    /// Nitro (and `sim`, which uses the Nitro format) verification.
    pub nitro: NitroVerifier,
}

impl EvidenceVerifier {
    /// Wraps a Nitro verifier (whose trust store decides whether sim roots are trusted).
    pub fn new(nitro: NitroVerifier) -> Self {
        EvidenceVerifier { nitro }
    }

    /// Verifies `env` at `at` under `policy`; `expected_nonce` adds a freshness check.
    pub fn verify(
        &self,
        env: &EvidenceEnvelope,
        policy: &NitroPolicy,
        at: UnixTime,
    ) -> Result<AttestedKey, VerifyError> {
        match env.platform {
            Platform::Nitro | Platform::Sim => {}
            other => {
                return Err(VerifyError::PlatformMismatch {
                    claimed: other.to_string(),
                    actual: "unsupported by this verifier build".into(),
                })
            }
        }
        let v = self.nitro.verify(&env.document, policy, at)?;
        let actual = if v.emulated || v.root_fingerprint == AWS_NITRO_ROOT_G1_SHA256 {
            Platform::Nitro
        } else {
            Platform::Sim
        };
        if actual != env.platform {
            return Err(VerifyError::PlatformMismatch {
                claimed: env.platform.to_string(),
                actual: actual.to_string(),
            });
        }
        // The binding is exactly user_data; the nonce is exactly the document's nonce.
        if v.document.user_data.as_deref() != Some(env.binding.as_slice()) {
            return Err(VerifyError::Binding(
                "the document's user_data is not the envelope's binding".into(),
            ));
        }
        if v.document.nonce.as_deref().unwrap_or_default() != env.nonce.as_slice() {
            return Err(VerifyError::Binding(
                "the document's nonce is not the envelope's nonce".into(),
            ));
        }
        let binding = KeyBinding::from_cbor(&env.binding)?;
        let measurements = v
            .document
            .pcrs
            .iter()
            .filter(|(_, val)| val.iter().any(|b| *b != 0))
            .map(|(i, val)| (format!("PCR{i}"), hex::encode(val)))
            .collect();
        Ok(AttestedKey {
            jkt: binding.jkt,
            did: binding.did,
            platform: actual,
            measurements,
            module_id: v.document.module_id.clone(),
            att: env.att_digest(),
            expires: v.valid_until,
            emulated: v.emulated,
        })
    }
}
