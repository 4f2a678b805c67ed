#!/usr/bin/env bash
# `--platform tpm` on swtpm (issue 25): TPM2_Sign latency with and without the key's
# PolicyPCR + PolicyAuthValue binding (an HMAC or policy session per signature, as without a
# resource manager), evidence (quote + certify) latency, and proofs/s per signature in the TPM
# and with a TPM-certified session key. Starts its own swtpm (scripts/swtpm.sh); needs swtpm,
# swtpm-tools and libtss2-dev (scripts/test.sh installs them). Bounded: 2 × 520 signatures,
# 2 × 50 evidences, 4 × 6 s of proofs on 2 threads (about a minute after the build); run at
# lower priority (nice) so that it can share a small machine — its figures then carry that
# machine's noise (docs/tpm.md says how they were taken).
set -euo pipefail
cd "$(dirname "$0")/.."
nice -n 10 cargo bench -p cada-enclave --features tpm --bench tpm_sign
