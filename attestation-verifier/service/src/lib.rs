//! The `cada-verify` service: policy file, HTTP verification endpoint and DID resolution,
//! on top of the decision pipeline (`cada-pipeline`: the library's `Verifier::decide`,
//! replay store, fleet limits) and the audit log (`cada-audit`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod did;
pub mod error;
pub mod server;

pub use error::ServiceError;
