#!/usr/bin/env bash
# Chain-of-custody trace join benchmark (issue 24; not a test): `cada-verify audit trace`'s
# work — three logs' hash chains verified, one task's records joined, the tree built — over
# 100,000 records, and the chain verification alone for comparison. Release build.
# Usage: scripts/bench-trace.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
echo "machine: $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench -p cada-audit --bench trace_join --quiet
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
