#!/usr/bin/env bash
# `--platform tpm` on swtpm (issue 25): TPM2_Sign latency with and without the PolicyPCR
# binding, evidence (quote + certify) latency, and proofs/s per signature in the TPM and with
# a TPM-certified session key. Starts its own swtpm (scripts/swtpm.sh); needs swtpm,
# swtpm-tools and libtss2-dev (scripts/test.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p cada-enclave --features tpm --bench tpm_sign
