#!/usr/bin/env bash
# MCP path benchmark (release): latency that cada-parent proxy + cada-gate add to one
# tools/call against calling the server directly, and the gate's throughput at saturation,
# for each audit durability asked for.
# Usage: scripts/bench-mcp.sh [SECONDS=5] [CONNECTIONS=64] [DURABILITIES=fsync,none]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
cargo build --release --workspace --bins --quiet
cargo bench -p cada-e2e --bench mcp_gate --quiet -- "${1:-5}" "${2:-64}" "${3:-fsync,none}"
