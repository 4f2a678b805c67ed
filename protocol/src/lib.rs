//! Formats shared by every CADA component.
//!
//! * [`access_token`] — the RFC 9068 access tokens `cada-sts` issues.
//! * [`cli`] — what every command-line binary does alike at start (a closed stdout ends it
//!   quietly); the one module here that is not a format.
//! * [`binding`] — the CBOR key binding that attestation evidence carries, and the SEV-SNP
//!   `report_data` over it.
//! * [`jwk`] — public keys as JWK, RFC 7638 thumbprints and `did:key` identifiers.
//! * [`envelope`] — the evidence envelope `{platform, document, certs, binding, nonce}`.
//! * [`jws`] — compact JWS: splitting with limits, `crit`, signature verification.
//! * [`mcp`] — what a request to an MCP server does: body digest (`Content-Digest`) and the
//!   JSON-RPC calls of a body, bounded.
//! * [`trace`] — chain of custody: task identifiers and W3C `traceparent`, strictly checked.
//! * [`token`] — the CB-PoP (DPoP-profile JWS) header and claims.
//! * [`tpm`] — TPM 2.0 evidence (platform `tpm`): the document, the key binding rule
//!   (qualifyingData), AK certificates' EK binding, session keys.
//! * [`url`] — request URLs and URL prefixes, matched on origin and path segments, with
//!   strict paths (no dot segments, encoded separators, …).
//! * [`resource_uri`] — MCP resource URIs and resource grants, matched on segment
//!   boundaries (hierarchical) or exactly (opaque), under the same strict rules.
//! * [`wire`] — length-prefixed CBOR frames between the parent and the enclave.
//! * [`stepup`] — step-up requests an agent files with its owner's approval service, and
//!   the service's answers (issue 23).
//! * [`egress`] — `secret_call`: an HTTPS call the enclave makes with a sealed secret.
//! * [`cbor`] — bounded CBOR decoding used by all of the above.
//!
//! Every decoder here takes outside bytes and therefore has a hard size and nesting limit
//! and returns a [`ProtocolError`] instead of panicking.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod access_token;
pub mod b64;
pub mod binding;
pub mod cbor;
pub mod cli;
pub mod egress;
pub mod envelope;
pub mod error;
pub mod jwk;
pub mod jws;
pub mod mcp;
pub mod measurements;
pub mod resource_uri;
pub mod sealed;
pub mod stepup;
pub mod token;
pub mod tpm;
pub mod trace;
pub mod url;
pub mod wire;

pub use error::ProtocolError;
