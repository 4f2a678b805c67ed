//! `cada-sts`: a security token service that exchanges an attested CB-PoP and an owner's
//! trust contract for a short-lived, DPoP-bound access token (RFC 8693 token exchange,
//! RFC 9068 JWT access tokens, RFC 9449 DPoP).
//!
//! A thin adapter over the verifier library: [`server`] reads HTTP and answers OAuth;
//! every rule is [`cada_attestation_verifier::Verifier::evaluate_exchange`]'s.
//!
//! * [`exchange`] — the token request form and the minting of tokens.
//! * [`keys`] — the ES256 signing keys and the JWKS (rotation: one active, older ones
//!   published).
//! * [`oauth`] — OAuth errors, and which one each refusal of the decision becomes.
//! * [`server`] — the endpoints.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod exchange;
pub mod keys;
pub mod oauth;
pub mod server;

/// Why the STS cannot start or sign.
#[derive(Debug, thiserror::Error)]
pub enum StsError {
    /// A signing key could not be read, made or used.
    #[error("signing key: {0}")]
    Key(String),
    /// A command-line or configuration value is unusable.
    #[error("{0}")]
    Usage(String),
}
