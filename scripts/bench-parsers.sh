#!/usr/bin/env bash
# Decode cost of CADA's COSE, CBOR and SEV-SNP parsers against coset and the sev crate, on
# every real fixture, in the same run. Fixtures: the vendored testdata/ unless $CADA_FIXTURES
# names another set.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/compare}" cargo bench --manifest-path compare/Cargo.toml --bench parsers "$@"
