#!/usr/bin/env bash
# Verification endpoint benchmark: /v1/pop/verify over HTTP (memory and Redis replay
# stores; saturation and paced), the in-process library rate, and replay-cache memory.
# Usage: scripts/bench-verify.sh [CONNECTIONS=64] [SECONDS=5]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
cargo build --release --workspace --bins --quiet
cargo bench -p cada-e2e --bench verify_load --quiet -- "${1:-64}" "${2:-5}"
