#!/usr/bin/env bash
# SEV-SNP verification benchmark: CADA cold/warm and the sev crate's verification, same run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CADA_FIXTURES="${CADA_FIXTURES:-$(cd .. && pwd)/shared/fixtures}"
cargo bench -p cada-attestation-verifier --bench snp "$@"
