#!/usr/bin/env bash
# SEV-SNP verification benchmark: CADA cold/warm and the sev crate's verification, same run.
# Fixtures: the vendored testdata/ unless $CADA_FIXTURES names another set.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/compare}" cargo bench --manifest-path compare/Cargo.toml --bench snp "$@"
