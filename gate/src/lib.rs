//! `cada-gate`: a reverse proxy in front of any HTTP MCP server. Every request must carry a
//! CB-PoP (and, once per gate, the evidence and the owner's contract) or an STS access
//! token with its DPoP proof; the gate reads the JSON-RPC body, and the library's one
//! decision ([`cada_attestation_verifier::Verifier`], through `cada-verify`'s pipeline with
//! its replay store, fleet limits and audit log) checks the proof against the exact bytes
//! forwarded and every tool the body calls against the contract. Only then is the request
//! forwarded, with the verified identity in `CADA-Agent` headers; the answer streams back
//! (JSON or server-sent events).
//!
//! * [`public`] — the URL a client called (what proofs bind to), behind trusted proxies.
//! * [`target`] — the request target: refused unless already in the protocol's normal form,
//!   then forwarded byte for byte below the upstream's base path.
//! * [`refusal`] — how a refusal is answered: HTTP status, `WWW-Authenticate: DPoP`, and a
//!   JSON-RPC error whose message names the rule.
//! * [`metadata`] — RFC 9728 protected resource metadata.
//! * [`proxy`] — the request path: body, decision, audit, forwarding.
//! * [`forward_auth`] — the same decision for nginx `auth_request`, Envoy `ext_authz` and
//!   Traefik `ForwardAuth`.
//! * [`server`] — state, metrics and the router.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod error;
pub mod forward_auth;
pub mod metadata;
pub mod proxy;
pub mod public;
pub mod refusal;
pub mod server;
pub mod target;

pub use error::GateError;
