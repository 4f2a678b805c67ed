//! The `cada-verify` service: policy file, HTTP verification endpoint, replay stores,
//! audit log, on top of the `cada-attestation-verifier` library, whose `Policy` and
//! `Verifier::decide` make every decision.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod audit;
pub mod did;
pub mod error;
pub mod fleet;
pub mod replay;
pub mod server;

pub use error::ServiceError;
