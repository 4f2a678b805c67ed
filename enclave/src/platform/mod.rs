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

    /// Fresh evidence for a delegation this enclave signs (`cadaDelegation.evidence`, at
    /// most [`cada_contract::delegation::MAX_EVIDENCE_LEN`] inside a link of at most 48 KiB): what
    /// [`Platform::attest`] makes, without the parts a verifier may do without. The same
    /// by default; a TPM leaves its TCG event log out (40–48 KiB on real machines), the
    /// quote of the PCRs still binding the boot state and the nonce.
    fn attest_for_delegation(
        &self,
        binding: &[u8],
        nonce: &[u8],
    ) -> Result<EvidenceEnvelope, EnclaveError> {
        self.attest(binding, nonce)
    }
}
