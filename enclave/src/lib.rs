//! The CADA signer that runs inside the TEE.
//!
//! * [`key`] — the signing key, generated inside, never exported.
//! * [`platform`] — evidence backends behind one trait: `nitro` (`/dev/nsm`) and `sim`.
//! * `authority` — the owner lock and the installed trust contracts (`cada-contract`), and
//!   the delegations this enclave signs under them and the chains it installs (issue 24).
//! * [`signer`] — the delegation policy, the signature hash chain, CB-PoP signing.
//! * [`server`] — length-prefixed CBOR frames over vsock, hybrid vsock (unix) and TCP.
//! * [`egress`] — secret calls: TLS from inside the enclave through the parent's relay,
//!   the sealed credential added only where a contract and the sealed usage allow it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod authority;
#[cfg(test)]
mod delegation_tests;
pub mod egress;
pub mod error;
pub mod init;
pub mod key;
pub mod platform;
pub mod secrets;
pub mod server;
pub mod signer;

pub use error::EnclaveError;
