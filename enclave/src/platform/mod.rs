//! Evidence backends. Each produces an [`EvidenceEnvelope`] binding the signer's key.
pub mod nitro;
mod nitro_document;
pub mod sim;
pub mod sim_snp;
pub mod snp;
mod softca;
#[cfg(feature = "tpm")]
pub mod tpm;
#[cfg(feature = "tpm")]
pub mod tpm_enroll;

use std::collections::BTreeMap;

use cada_protocol::envelope::EvidenceEnvelope;

use crate::EnclaveError;

/// A TEE platform the signer can run on.
pub trait Platform: Send + Sync {
    /// Wire name (`nitro`, `sev-snp`, `sim`, `sim-snp`, `tpm`).
    fn name(&self) -> &'static str;
    /// Measurements, name → hex.
    fn measurements(&self) -> Result<BTreeMap<String, String>, EnclaveError>;
    /// Fresh evidence binding `binding` for the caller's `nonce`.
    fn attest(&self, binding: &[u8], nonce: &[u8]) -> Result<EvidenceEnvelope, EnclaveError>;
}
