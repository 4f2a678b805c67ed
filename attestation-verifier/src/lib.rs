//! CADA attestation verifier: one verifier for AWS Nitro Enclaves documents (and, later in
//! the same shape, AMD SEV-SNP reports), checked from public vendor roots at an injected time.
//!
//! Layout, from the bytes up:
//! * [`cose`] — COSE_Sign1 decoding; [`x509`] — certificates; [`chain`] — path validation
//!   from pinned anchors with a cache of verified CA prefixes; [`roots`] — the pinned roots.
//! * [`nitro`] — the Nitro document rules, policy and verifier; [`snp`] — the same for
//!   AMD SEV-SNP reports, with [`roots_amd`] pinning AMD's roots per generation and [`crl`]
//!   the revocation lists AMD publishes for them.
//! * [`error::VerifyError`] — every failure, each naming its rule ([`VerifyError::code`]).
//!
//! Time is always a parameter ([`UnixTime`]); nothing here reads the clock.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod chain;
mod checks;
pub mod cose;
pub mod crl;
pub mod decide;
pub mod error;
pub mod evidence;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz_hooks;
pub mod nitro;
pub mod nonce;
pub mod policy;
pub mod pop;
pub mod replay;
pub mod roots;
pub mod roots_amd;
pub mod signature;
pub mod snp;
pub mod time;
pub mod x509;

pub use decide::{Decision, Refusal, Request, Stores, Verifier, VerifierOptions};
pub use error::VerifyError;
pub use policy::Policy;
pub use time::UnixTime;
