//! CADA attestation verifier: one verifier for AWS Nitro Enclaves attestation documents and
//! AMD SEV-SNP reports, and for the CB-PoP proofs their keys sign, checked from public vendor
//! roots at an injected time. No HTTP, no async, no clock: a resource server links it alone.
//!
//! **The front door** — what a resource server, `cada-verify` and the coming STS and gate use:
//! * [`Policy`] — one TOML file, validated on load: roots per platform, measurement sets per
//!   audience, SEV-SNP rules, freshness and context rules.
//! * [`Verifier::decide`] — every check in a fixed, documented order ([`decide::RULES`]);
//!   a [`Decision`] is the accepted identity ([`decide::Accepted`]) or one [`Refusal`] whose
//!   [`Refusal::code`] is stable and whose [`Refusal::rule`] names the rule.
//!   [`Verifier::admit_evidence`] and [`Verifier::check_audience`] decide evidence alone;
//!   [`calls`] is what a caller that does not read the body's MCP calls adds (rule 6).
//! * [`Stores`] — the replay store ([`ReplayStore`], [`MemoryReplayStore`] in memory; a
//!   shared one such as Redis implements the trait) and the nonce issuer ([`NonceIssuer`]).
//! * [`VerifyError`] — every failure, each with a stable [`VerifyError::code`];
//!   [`UnixTime`] — time, always a parameter.
//!
//! **Building blocks**, for tools that verify one layer alone (`cada-verify nitro|snp`):
//! [`nitro`], [`snp`] and [`tpm`] (platform rules, policy and verifier), [`evidence`] (envelope and
//! key binding across platforms), [`pop`] (the CB-PoP checks), [`chain`] (path validation
//! from pinned anchors, with a cache of verified CA prefixes), [`roots`], [`roots_amd`] and
//! [`roots_tpm`] (the pinned roots: AMD's per generation, TPM manufacturers' and clouds'),
//! [`crl`] (AMD's revocation lists).
//!
//! **Internals**, public for the fuzz targets, the Wycheproof vectors and the fixture tests:
//! [`cose`] (COSE_Sign1 decoding), [`x509`] (certificates), [`signature`] (the signature
//! algorithms, on aws-lc-rs). Their shape may change without notice.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod access_token;
pub mod calls;
pub mod chain;
mod checks;
pub mod cose;
pub mod crl;
pub mod decide;
pub mod delegation;
pub mod error;
pub mod evidence;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz_hooks;
pub mod grants;
pub mod nitro;
pub mod nonce;
pub mod policy;
pub mod pop;
pub mod replay;
pub mod roots;
pub mod roots_amd;
pub mod roots_tpm;
pub mod seal;
pub mod signature;
pub mod snp;
pub mod time;
pub mod tpm;
pub mod x509;

pub use decide::{Decision, Refusal, Request, Stores, Verifier, VerifierOptions};
pub use error::VerifyError;
pub use evidence::AttestedKey;
pub use nonce::NonceIssuer;
pub use policy::Policy;
pub use replay::{MemoryReplayStore, ReplayStore};
pub use time::UnixTime;
