//! CADA enclave images, kept out of both the verifier library and the measured enclave
//! binary (neither needs to write images).
//!
//! * [`eif`] — the Enclave Image File format: parsing with hard limits, the PCRs an enclave
//!   booted from an image reports, and writing. `cada-verify pcrs` reads images through it.
//! * [`image`] — deterministic newc cpio archives and the CADA image layout (bootstrap and
//!   application ramdisks), used by the `cada-eif` binary and `scripts/build-eif.sh`.
//! * [`ImageError`] — every failure, each with a stable [`ImageError::code`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod eif;
pub mod error;
pub mod image;

pub use error::ImageError;
