#!/usr/bin/env bash
# SEV-SNP verification benchmark: CADA cold/warm and the sev crate's verification, same run.
# Fixtures: the vendored testdata/ unless $CADA_FIXTURES names another set.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p cada-attestation-verifier --bench snp "$@"
