//! Evidence envelopes: verify the platform evidence, then the key binding it carries.
use std::collections::BTreeMap;

use cada_protocol::binding::{snp_report_data, KeyBinding};
use cada_protocol::envelope::{EvidenceEnvelope, Platform};
use serde::Serialize;

use crate::nitro::{NitroPolicy, NitroVerifier};
use crate::roots::AWS_NITRO_ROOT_G1_SHA256;
use crate::snp::{SnpPolicy, SnpVerifier};
use crate::tpm::TpmVerifier;
use crate::{UnixTime, VerifyError};

/// A key whose binding was verified through attestation evidence.
#[derive(Debug, Clone, Serialize)]
pub struct AttestedKey {
    /// RFC 7638 thumbprint of the bound key.
    pub jkt: String,
    /// `did:key` of the bound key.
    pub did: String,
    /// The owner the enclave is locked to (its DID, from the key binding), if locked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The enclave's HPKE public key (base64url of the 32 raw X25519 bytes, COSE-HPKE suite
    /// `HPKE-4`) from the key binding: owners seal secrets to it (`cada-owner seal`) and
    /// services encrypt data to it (`cada-verify seal`) once this evidence is verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hpke: Option<String>,
    /// Platform, as determined by the root the evidence chains to.
    pub platform: Platform,
    /// Measurements (`PCR0` … for Nitro, `MEASUREMENT` / `HOST_DATA` for SEV-SNP,
    /// `TPM_PCR0` … for TPM → hex).
    pub measurements: BTreeMap<String, String>,
    /// `module_id` (Nitro), chip id (SNP) or the TPM's identifier (`tpm-…`, from its EK).
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

/// Policy for evidence of every platform, in one place.
#[derive(Debug, Clone, Default)]
pub struct EvidencePolicy {
    /// Nitro (and `sim`) rules.
    pub nitro: NitroPolicy,
    /// SEV-SNP (and `sim-snp`) rules.
    pub snp: SnpPolicy,
    /// How long verified evidence is relied on (SNP reports carry no time; Nitro documents
    /// are also bounded by `nitro.max_age_ms`). Default: three hours.
    pub max_age_ms: Option<u64>,
}

/// Verifies evidence envelopes of every supported platform through one call.
pub struct EvidenceVerifier {
    /// Nitro (and `sim`, which uses the Nitro format) verification.
    pub nitro: NitroVerifier,
    /// SEV-SNP (and `sim-snp`) verification.
    pub snp: SnpVerifier,
    /// TPM 2.0 verification (pinned roots only unless [`EvidenceVerifier::with_tpm`]).
    pub tpm: TpmVerifier,
}

const DEFAULT_EVIDENCE_AGE_MS: u64 = 3 * 3600 * 1000;

impl EvidenceVerifier {
    /// Joins a Nitro verifier (Nitro and `sim` evidence; its trust store decides whether
    /// the sim root is trusted) and an SEV-SNP verifier (its own roots: AMD's pinned ARKs
    /// plus the extra ones it was given). Roots are never shared between platforms.
    pub fn new(nitro: NitroVerifier, snp: SnpVerifier) -> Self {
        EvidenceVerifier {
            nitro,
            snp,
            tpm: TpmVerifier::default(),
        }
    }

    /// Uses `tpm` (its roots and rules) for TPM evidence.
    pub fn with_tpm(mut self, tpm: TpmVerifier) -> Self {
        self.tpm = tpm;
        self
    }

    /// Verifies `env` at `at` under `policy`, whatever its platform.
    pub fn verify_with(
        &self,
        env: &EvidenceEnvelope,
        policy: &EvidencePolicy,
        at: UnixTime,
    ) -> Result<AttestedKey, VerifyError> {
        let max_age = policy.max_age_ms.unwrap_or(DEFAULT_EVIDENCE_AGE_MS);
        // A document in the other platform's format is evidence of the wrong platform, not
        // merely invalid evidence: SNP reports are exactly 1184 bytes; Nitro documents are
        // COSE_Sign1 (a CBOR array, tagged or not).
        let looks_snp = env.document.len() == crate::snp::REPORT_LEN;
        let looks_cose = matches!(env.document.first(), Some(0x84 | 0xd2));
        let actual = match (looks_snp, looks_cose) {
            (true, false) => Some("an SEV-SNP report"),
            (false, true) => Some("a Nitro attestation document"),
            _ => None,
        };
        let snp_claimed = matches!(env.platform, Platform::SevSnp | Platform::SimSnp);
        if let Some(actual) = actual {
            if snp_claimed != looks_snp || env.platform == Platform::Tpm {
                return Err(VerifyError::PlatformMismatch {
                    claimed: env.platform.to_string(),
                    actual: actual.into(),
                });
            }
        }
        match env.platform {
            Platform::Nitro | Platform::Sim => self.verify_nitro(env, &policy.nitro, at, max_age),
            Platform::SevSnp | Platform::SimSnp => self.verify_snp(env, &policy.snp, at, max_age),
            Platform::Tpm => self.verify_tpm(env, &policy.snp, at, max_age),
        }
    }

    fn verify_tpm(
        &self,
        env: &EvidenceEnvelope,
        snp_policy: &SnpPolicy,
        at: UnixTime,
        max_age: u64,
    ) -> Result<AttestedKey, VerifyError> {
        let v = self.tpm.verify(env, &self.snp, snp_policy, at)?;
        let binding = KeyBinding::from_cbor(&env.binding)?;
        let mut expires = v.valid_until.min(UnixTime::from_millis(
            at.as_millis().saturating_add(max_age),
        ));
        if let Some((_, exp)) = v.session {
            expires = expires.min(UnixTime::from_secs(exp));
        }
        Ok(AttestedKey {
            jkt: binding.jkt,
            did: binding.did,
            hpke: binding.hpke.as_ref().map(cada_protocol::b64::encode),
            owner: binding.owner,
            platform: Platform::Tpm,
            measurements: v.measurements(),
            module_id: v.tpm_id,
            att: env.att_digest(),
            expires,
            emulated: false,
        })
    }

    fn verify_snp(
        &self,
        env: &EvidenceEnvelope,
        policy: &SnpPolicy,
        at: UnixTime,
        max_age: u64,
    ) -> Result<AttestedKey, VerifyError> {
        let Some((signer, chain)) = env.certs.split_first() else {
            return Err(VerifyError::Binding(
                "SEV-SNP evidence must carry the VCEK or VLEK".into(),
            ));
        };
        let chain: Vec<Vec<u8>> = chain.iter().map(|c| c.to_vec()).collect();
        let v = self.snp.verify(&env.document, signer, &chain, policy, at)?;
        let actual = if v.amd_root {
            Platform::SevSnp
        } else {
            Platform::SimSnp
        };
        if actual != env.platform {
            return Err(VerifyError::PlatformMismatch {
                claimed: env.platform.to_string(),
                actual: actual.to_string(),
            });
        }
        if v.report.report_data != snp_report_data(&env.binding, &env.nonce) {
            return Err(VerifyError::Binding(
                "report_data is not SHA-512(binding ‖ nonce)".into(),
            ));
        }
        let binding = KeyBinding::from_cbor(&env.binding)?;
        let mut measurements = BTreeMap::new();
        measurements.insert("MEASUREMENT".to_string(), hex::encode(v.report.measurement));
        if v.report.host_data.iter().any(|b| *b != 0) {
            measurements.insert("HOST_DATA".to_string(), hex::encode(v.report.host_data));
        }
        Ok(AttestedKey {
            jkt: binding.jkt,
            did: binding.did,
            hpke: binding.hpke.as_ref().map(cada_protocol::b64::encode),
            owner: binding.owner,
            platform: actual,
            measurements,
            module_id: format!("chip-{}", hex::encode(&v.report.chip_id[..8])),
            att: env.att_digest(),
            expires: v.valid_until.min(UnixTime::from_millis(
                at.as_millis().saturating_add(max_age),
            )),
            emulated: false,
        })
    }

    fn verify_nitro(
        &self,
        env: &EvidenceEnvelope,
        policy: &NitroPolicy,
        at: UnixTime,
        max_age: u64,
    ) -> Result<AttestedKey, VerifyError> {
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
            hpke: binding.hpke.as_ref().map(cada_protocol::b64::encode),
            owner: binding.owner,
            platform: actual,
            measurements,
            module_id: v.document.module_id.clone(),
            att: env.att_digest(),
            expires: v.valid_until.min(UnixTime::from_millis(
                v.document.timestamp.as_millis().saturating_add(max_age),
            )),
            emulated: v.emulated,
        })
    }
}
