#!/usr/bin/env bash
# Verification endpoint benchmark: /v1/pop/verify over HTTP (memory and Redis replay
# stores; saturation and paced; each audit durability mode asked for), the in-process
# library rate, and replay-cache memory.
# Usage: scripts/bench-verify.sh [CONNECTIONS=64] [SECONDS=5] [DURABILITIES=fsync] [RATES=5000,8000]
#   e.g. scripts/bench-verify.sh 64 5 fsync,batch-ms:5,none 2000,5000,8000
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
cargo build --release --workspace --bins --quiet
cargo bench -p cada-e2e --bench verify_load --quiet -- "${1:-64}" "${2:-5}" "${3:-fsync}" "${4:-5000,8000}"
