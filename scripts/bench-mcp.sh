#!/usr/bin/env bash
# MCP path benchmark (release): latency that cada-parent proxy + cada-gate add to one
# tools/call against calling the server directly, and the gate's throughput at saturation,
# for each audit durability asked for. CLIENTS picks who calls:
#   rust  the bench's own client against an in-process stand-in server (the pair's own cost),
#         then the gate's saturation with proofs minted beforehand;
#   sdk   the official MCP Python SDK's client against the SDK's server (SSE answers and JSON
#         answers, each behind its own gate), direct and through calls interleaved.
# Each latency is given for the proxy beside a daemon and for the proxy signing in process
# (cada-parent proxy --enclave).
# The SDK (tests/interop/mcp/install.sh, pinned) is installed once into a directory this
# script owns, target/bench-mcp/python (BENCH_MCP_PYTHON_DIR overrides).
# Usage: scripts/bench-mcp.sh [SECONDS=5] [CONNECTIONS=64] [DURABILITIES=fsync,none] [CLIENTS=rust,sdk]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
clients=${4:-rust,sdk}
if [[ $clients == *sdk* ]]; then
  pydir=${BENCH_MCP_PYTHON_DIR:-$PWD/target/bench-mcp/python}
  bash tests/interop/mcp/install.sh "$pydir"
  export CADA_BENCH_PYTHON=$pydir/bin/python
fi
echo "machine: $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo build --release --workspace --bins --quiet
cargo bench -p cada-e2e --bench mcp_gate --quiet -- "${1:-5}" "${2:-64}" "${3:-fsync,none}" "$clients"
