//! The sealed-secret operations between parent and enclave: `secret_install` (an
//! owner-sealed bundle, `cada-parent secret install`) and `open` (data a service encrypted
//! to the enclave, `cada-parent open`). The formats of the bundle and the envelope are
//! `cada-secrets`'; here they are opaque bytes.
use serde::{Deserialize, Serialize};

/// `secret_install` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretInstallRequest {
    /// The bundle (`COSE_Sign1` of `cada-owner seal`).
    #[serde(with = "serde_bytes")]
    pub bundle: Vec<u8>,
}

/// `secret_install` answer: what was installed; never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretInstallResponse {
    /// The secret's name.
    pub name: String,
    /// base64url SHA-256 of the bundle's `COSE_Encrypt0` (as chained).
    pub digest: String,
    /// When the secret's usage expires (unix seconds).
    pub expires_at: u64,
    /// The chain sequence number of the install event.
    pub seq: u64,
}

/// `open` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenRequest {
    /// The envelope (`COSE_Encrypt0` of `cada-verify seal`).
    #[serde(with = "serde_bytes")]
    pub envelope: Vec<u8>,
    /// The label the envelope was sealed for, granted by a contract's `opens`.
    pub label: String,
}

/// `open` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenResponse {
    /// The decrypted data.
    #[serde(with = "serde_bytes")]
    pub plaintext: Vec<u8>,
    /// The digest of the contract whose grant allowed the open.
    pub dtc: String,
    /// Opens of this label under that contract so far, this one included.
    pub used: u64,
    /// The grant's budget.
    pub budget: u64,
    /// The chain sequence number of the open event.
    pub seq: u64,
}
