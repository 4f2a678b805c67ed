#!/usr/bin/env bash
# Token exchange benchmark: cada-sts over HTTP with warm evidence (saturation, each audit
# durability asked for), the in-process lower bound (proof + contract decision and one token
# signature), and a resource server's in-process check of a token with its proof.
# Usage: scripts/bench-sts.sh [CONNECTIONS=64] [SECONDS=5] [DURABILITIES=fsync,batch-ms:5]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
cargo build --release --workspace --bins --quiet
cargo bench -p cada-e2e --bench sts_load --quiet -- "${1:-64}" "${2:-5}" "${3:-fsync,batch-ms:5}"
