#!/usr/bin/env bash
# Docker-free, reproducible enclave image: Debian's kernel, an initramfs with the vsock and
# NSM modules and a statically linked cada-enclave as /init, written as an EIF by cada-eif.
# Prints PCR0/1/2 as JSON (also written next to the image as <eif>.pcrs.json).
# Usage: scripts/build-eif.sh [OUTPUT.eif]      (default target/eif/cada.eif)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
source scripts/common.sh
out="${1:-target/eif/cada.eif}"
mkdir -p "$(dirname "$out")"
kdir=$(fetch_kernel)

# A static, reproducible signer: fixed paths in the binary, locked dependencies, no symbols.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-1700000000}"
log "building the static cada-enclave"
RUSTFLAGS="-C target-feature=+crt-static -C strip=symbols --remap-path-prefix=$HOME/.cargo=/cargo --remap-path-prefix=$root=/cada" \
  cargo build --release --locked --quiet -p cada-enclave --bin cada-enclave --target x86_64-unknown-linux-gnu
cargo build --release --locked --quiet -p cada-enclave --bin cada-eif
init="target/x86_64-unknown-linux-gnu/release/cada-enclave"
mods=()
for m in "${MODULES[@]}"; do mods+=(--module "$kdir/modules/$(basename "$m").ko"); done
log "writing $out"
target/release/cada-eif --kernel "$kdir/vmlinuz" "${mods[@]}" --init "$init" --output "$out" | tee "$out.pcrs.json"
