#!/usr/bin/env bash
# Signing-path load benchmark: daemon throughput and latency over the unix socket with N
# concurrent clients, the in-process JWS lower bound, warm verification, peak RSS.
# Usage: scripts/bench-signing.sh [CLIENTS=32] [SECONDS=10]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
cargo build --release --workspace --bins --quiet
cargo bench -p cada-e2e --bench signing_load --quiet -- "${1:-32}" "${2:-10}"
