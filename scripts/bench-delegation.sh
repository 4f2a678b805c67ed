#!/usr/bin/env bash
# Delegation chain benchmark (issue 24, not a test): a warm `Verifier::decide` on proofs
# whose contract is an owner contract (depth 0) and delegation chains of depth 1, 2 and 4,
# in-process sim enclaves, the chains cached by leaf digest as a resource server holds them
# after the first request. Prints the median µs per proof at each depth and per extra link
# (goal: each extra link ≤ 10 µs).
# Measured 2026-12-06 on the shared 2-core VM (release, others building): owner contract
# 45.1 µs, depth 1 46.7, depth 2 48.3, depth 4 51.0 — about 1.4 µs per extra link warm.
# Usage: scripts/bench-delegation.sh [ROUNDS=15] [BLOCK=500]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
cargo bench -p cada-e2e --bench chain_decide --quiet -- "${1:-15}" "${2:-500}"
