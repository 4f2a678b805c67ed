//! CADA sealed secrets.
//!
//! * [`SecretUsage`] — how the enclave may use a secret (upstream origin and path prefix,
//!   header and format, the CAs of the upstream, expiry, OAuth details). The owner signs it
//!   together with the sealed value, so that the host cannot pair a secret with another
//!   upstream.
//!
//! No I/O and no clock: every time is a parameter. Every refusal is a [`SecretsError`] with a
//! stable [`SecretsError::code`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod usage;

pub use error::SecretsError;
pub use usage::{
    ClientAuth, OAuthGrant, OAuthUsage, SecretKind, SecretUsage, MAX_CAS, MAX_CA_LEN,
    MAX_CREDENTIAL_ENDPOINTS, MAX_NAME_LEN,
};
