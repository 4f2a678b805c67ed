#!/usr/bin/env bash
# Secret-call benchmark (issue 22): an injected call (agent → proxy → daemon → enclave's own
# TLS through the parent's relay → upstream) vs the same call made directly from the host with
# the credential, warm keep-alive connections; injected calls/s; the enclave's TLS handshake
# cost; memory per pooled upstream connection. Prints /proc/loadavg before and after (other
# work on the machine moves the figures).
# Usage: scripts/bench-secrets.sh [CLIENTS=16] [SECONDS=10]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
cargo build --release -p cada-enclave -p cada-parent -p cada-owner --bins --quiet
cargo bench -p cada-e2e --bench secret_calls --quiet -- "${1:-16}" "${2:-10}"
