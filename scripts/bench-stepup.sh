#!/usr/bin/env bash
# Step-up benchmarks (issue 23; not tests): the round trip from a refused tools/call to the
# successful retry after an automated owner approved it on the passkey page (sim enclaves,
# daemons, cada-parent proxy --step-up, cada-owner serve, a stand-in MCP server), in ask
# mode and wait mode; then cada-owner serve's filings and polls per second with real proofs
# and evidence from many enclave keys. Prints /proc/loadavg before and after: other work on
# the machine moves the figures (mostly through fdatasync of the audit log).
# Usage: scripts/bench-stepup.sh [ROUNDS_PER_ENCLAVE=25] [ENCLAVES=4] [WAIT_ROUNDS=5] [CONNECTIONS=32] [POLLS=10000] [AUDIT=fsync]
#   AUDIT is the approval service's --audit-durability (fsync, its default; none; batch-ms:N).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
echo "machine: $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo build --release -p cada-enclave -p cada-parent -p cada-owner --bins --quiet
cargo bench -p cada-e2e --bench stepup_round_trip --quiet -- "${1:-25}" "${2:-4}" "${3:-5}" "${6:-fsync}"
cargo bench -p cada-e2e --bench approval_load --quiet -- "${4:-32}" "${5:-10000}" "${6:-fsync}"
