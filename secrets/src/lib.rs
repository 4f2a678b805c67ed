//! CADA sealed secrets.
//!
//! * [`SecretUsage`] — how the enclave may use a secret (upstream origin and path prefix,
//!   header and format, the CAs of the upstream, expiry, OAuth details). The owner signs it
//!   together with the sealed value, so that the host cannot pair a secret with another
//!   upstream.
//!
//! * [`hpke`] — the enclave's HPKE key (RFC 9180, COSE-HPKE suite `HPKE-4`).
//! * [`cose`] — the HPKE `COSE_Encrypt0` of draft-ietf-cose-hpke-23 and the owner's
//!   `COSE_Sign1`, bounded.
//! * [`sealed`] — the owner-signed bundle that carries one secret to one enclave.
//! * [`data`] — data a service encrypts to an agent's attested key.
//! * [`placeholder`] — the `cada:<name>` placeholders agents hold, found in any spelling (one
//!   matcher for the parent's endpoint and the enclave).
//!
//! No I/O and no clock: every time is a parameter. Every refusal is a [`SecretsError`] with a
//! stable [`SecretsError::code`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cose;
pub mod data;
mod error;
pub mod hpke;
pub mod placeholder;
pub mod sealed;
mod usage;

pub use error::SecretsError;
pub use hpke::{HpkeKeyPair, HpkePublicKey, COSE_ALG_HPKE_4, HPKE_SUITE};
pub use sealed::{
    inspect_bundle, inspect_signed_bundle, open_bundle, seal_bundle, BundleInfo, OpenedSecret,
    Recipient, SealTarget, SealedBundle, MAX_BUNDLE_LEN, MAX_VALUE_LEN,
};
pub use usage::{
    ClientAuth, OAuthGrant, OAuthUsage, SecretKind, SecretUsage, MAX_CAS, MAX_CA_LEN,
    MAX_CREDENTIAL_ENDPOINTS, MAX_NAME_LEN, MIN_CREDENTIAL_LEN,
};
