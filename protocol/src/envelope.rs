//! The evidence envelope `{ platform, document, certs[], binding, nonce }`.
//!
//! It travels as CBOR, and in HTTP as base64url of that CBOR (header `CADA-Evidence`).
use serde::{Deserialize, Serialize};

use crate::{b64, cbor, ProtocolError};

/// Largest encoded envelope accepted.
pub const MAX_ENVELOPE_LEN: usize = 64 * 1024;

/// Which TEE produced the evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Platform {
    /// AWS Nitro Enclaves (`/dev/nsm`).
    #[serde(rename = "nitro")]
    Nitro,
    /// AMD SEV-SNP (`/dev/sev-guest`).
    #[serde(rename = "sev-snp")]
    SevSnp,
    /// Software simulation in the Nitro document format; never trusted by default.
    #[serde(rename = "sim")]
    Sim,
    /// Software simulation in the SEV-SNP report format; never trusted by default.
    #[serde(rename = "sim-snp")]
    SimSnp,
    /// TPM 2.0 (discrete, firmware or a cloud vTPM; also swtpm, trusted only where a policy
    /// adds its CA): the document is a [`crate::tpm::TpmDocument`].
    #[serde(rename = "tpm")]
    Tpm,
}

impl Platform {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Nitro => "nitro",
            Platform::SevSnp => "sev-snp",
            Platform::Sim => "sim",
            Platform::SimSnp => "sim-snp",
            Platform::Tpm => "tpm",
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Attestation evidence plus what a verifier needs beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceEnvelope {
    /// Producing platform.
    pub platform: Platform,
    /// The attestation document (Nitro COSE_Sign1), report (SNP, 1184 bytes) or TPM
    /// document (CBOR, [`crate::tpm`]).
    #[serde(with = "serde_bytes")]
    pub document: Vec<u8>,
    /// DER certificates a verifier may need (SNP: VCEK/VLEK, then ASK/ASVK and ARK if known;
    /// TPM: the AK certificate chain, then the EK certificate chain, see [`crate::tpm`]).
    pub certs: Vec<serde_bytes::ByteBuf>,
    /// The key binding bytes (see [`crate::binding`]).
    #[serde(with = "serde_bytes")]
    pub binding: Vec<u8>,
    /// The caller's nonce the evidence was produced for.
    #[serde(with = "serde_bytes")]
    pub nonce: Vec<u8>,
}

impl EvidenceEnvelope {
    /// CBOR encoding.
    pub fn to_cbor(&self) -> Vec<u8> {
        // A struct of byte strings always serializes.
        cbor::encode("envelope", self).unwrap_or_default()
    }

    /// Decodes CBOR with the size and nesting limits.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, ProtocolError> {
        cbor::decode("envelope", bytes, MAX_ENVELOPE_LEN)
    }

    /// base64url(CBOR), the `CADA-Evidence` header value.
    pub fn to_header(&self) -> String {
        b64::encode(self.to_cbor())
    }

    /// Decodes a `CADA-Evidence` header value.
    pub fn from_header(text: &str) -> Result<Self, ProtocolError> {
        let bytes = b64::decode("CADA-Evidence", text.trim(), MAX_ENVELOPE_LEN)?;
        Self::from_cbor(&bytes)
    }

    /// SHA-384 of the document, base64url: the `cada.att` claim of tokens signed by the bound key.
    pub fn att_digest(&self) -> String {
        att_digest(&self.document)
    }
}

/// SHA-384 of an evidence document, base64url.
pub fn att_digest(document: &[u8]) -> String {
    b64::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA384,
        document,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_garbage() {
        let env = EvidenceEnvelope {
            platform: Platform::Sim,
            document: vec![1, 2, 3],
            certs: vec![serde_bytes::ByteBuf::from(vec![9u8; 4])],
            binding: vec![0xa0],
            nonce: vec![5; 8],
        };
        let h = env.to_header();
        assert_eq!(EvidenceEnvelope::from_header(&h).unwrap(), env);
        assert!(EvidenceEnvelope::from_header("!!!").is_err());
        assert!(EvidenceEnvelope::from_header(&b64::encode([0xa1, 0x61, b'x', 0x01])).is_err());
    }
}
