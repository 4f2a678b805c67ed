//! The end-to-end suite: every module runs the real CADA binaries (built by
//! `cargo build --workspace --bins`) as separate processes and talks to them over their real
//! sockets. One test binary instead of one per file: the suite links once, and a cold build
//! writes one ~60 MB executable instead of fourteen.
//!
//! Run one module with a filter, e.g. `cargo test -p cada-e2e --test e2e mcp_modes::`.
//! The emulated Nitro Enclave test is `#[ignore]`d; `scripts/emulate-nitro.sh` runs it.

mod algorithms;
mod approval_web;
mod cluster_attack;
mod cluster_fleet;
mod cluster_store;
mod custody;
mod custody_attack;
mod daemon_and_flags;
mod decide;
mod delegation;
mod delegation_attack;
mod delegation_attack2;
mod delegation_attack3;
mod delegation_props;
mod delegation_refusals;
mod delegation_smoke;
mod delegation_tokens;
mod emulated_nitro;
mod grants;
mod grants_attack;
mod grants_sts;
mod identity;
mod mcp;
mod mcp_modes;
mod mcp_node;
mod owner_contracts;
mod path_confusion;
mod proxy_in_process;
mod sealing;
mod secrets;
mod secrets_agents;
mod secrets_attack;
mod secrets_attack2;
mod secrets_harness;
mod secrets_oauth;
mod signing_path;
mod slow_clients;
mod snp_path;
mod stepup_agent;
mod stepup_api;
mod stepup_attack;
mod stepup_attack2;
mod sts;
mod sts_act;
mod tpm;
mod tpm_attack;
mod verify_service;
