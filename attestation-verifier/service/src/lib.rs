//! The `cada-verify` service: policy file, HTTP verification endpoint, replay stores,
//! audit log and DPoP nonces, on top of the `cada-attestation-verifier` library.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod audit;
pub mod error;
pub mod nonce;
pub mod policy;
pub mod replay;
pub mod server;

pub use error::ServiceError;
