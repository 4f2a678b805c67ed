//! The CADA relay and agent signing daemon on the (untrusted) parent host: it can ask the
//! enclave for proofs, never forge them.
//!
//! * [`client`] — pooled, multiplexed connections to the enclave (vsock, hybrid vsock, TCP).
//! * [`api`] — the HTTP API agents call, with admission control, metrics and problem answers.
//! * [`auth`] — the bearer token that guards the TCP listener.
//! * [`daemon`] — a client of the daemon's API over its unix socket (CLI, proxy).
//! * [`delegate`] — `POST /v1/delegate` and `cada-parent delegate`: a delegated contract
//!   signed by the enclave for another agent's key (issue 24).
//! * [`access`] — who may use the proxy's own listener (Host, Origin, bearer token).
//! * [`placeholder`] — the placeholders agents hold instead of secrets (`cada:<name>`) and
//!   the local secrets endpoint's rule for them.
//! * [`run`] — `cada-parent run`: an agent started with base URLs and placeholders from a
//!   `.env.cada` template, no secret in its environment.
//! * [`proxy`] — `cada-parent proxy`: a local endpoint for unmodified MCP clients that adds
//!   a proof bound to each request (body and MCP calls), evidence and tokens as asked.
//! * [`stepup`] — step-up consent: a call refused for want of a grant is put to the owner's
//!   approval service and the MCP client answered with a URL elicitation in its version.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod access;
pub mod api;
pub mod auth;
pub mod client;
pub mod daemon;
pub mod delegate;
pub mod error;
pub mod placeholder;
pub mod proxy;
pub mod relay;
pub mod run;
pub mod secret_cli;
pub mod secrets_proxy;
pub mod stepup;
pub mod tokens;

pub use error::ParentError;
