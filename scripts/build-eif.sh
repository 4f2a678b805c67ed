#!/usr/bin/env bash
# Docker-free, reproducible enclave image: Debian's kernel, an initramfs with the vsock and
# NSM modules and a statically linked cada-enclave as /init, written as an EIF by cada-eif.
# Prints PCR0/1/2 as JSON (also written next to the image as <eif>.pcrs.json).
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/build-eif.sh [--check] [OUTPUT.eif]

Builds the enclave image and prints its PCRs as JSON. OUTPUT is relative to the current
directory; without it the image is <repository>/target/eif/cada.eif.

Options:
  --check     also prove reproducibility: a second build gives identical bytes, and one
              changed byte of cada-enclave moves PCR0 and PCR2 but not PCR1
              (CADA_EIF_CHECK=1 in the environment does the same)
  -h, --help  show this help and exit
USAGE
}

check="${CADA_EIF_CHECK:-}"
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --check) check=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) echo "build-eif.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *)
      if [ -n "$out" ]; then
        echo "build-eif.sh: more than one output given ('$out' and '$1'; see --help)" >&2
        exit 2
      fi
      out="$1" ;;
  esac
  shift
done
# Anything after `--` is an output path, even if it starts with '-'.
while [ $# -gt 0 ]; do
  if [ -n "$out" ]; then
    echo "build-eif.sh: more than one output given ('$out' and '$1'; see --help)" >&2
    exit 2
  fi
  out="$1"
  shift
done
# A given OUTPUT is relative to the caller's directory; the default is inside the repository.
case "$out" in
  "") out="target/eif/cada.eif" ;;
  /*) ;;
  *) out="$PWD/$out" ;;
esac

cd "$(dirname "$0")/.."
root=$(pwd)
source scripts/common.sh
mkdir -p "$(dirname "$out")"
kdir=$(fetch_kernel)

# A static, reproducible signer: fixed paths in the binary, locked dependencies, no symbols.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-1700000000}"
log "building the static cada-enclave"
# cada-eif (crate cada-image, not linked into the enclave) is built in the same command with
# the same target and flags, so the dependencies the two share compile once.
RUSTFLAGS="-C target-feature=+crt-static -C strip=symbols --remap-path-prefix=$HOME/.cargo=/cargo --remap-path-prefix=$root=/cada" \
  cargo build --release --locked --quiet -p cada-enclave --bin cada-enclave -p cada-image --bin cada-eif \
    --target x86_64-unknown-linux-gnu
init="target/x86_64-unknown-linux-gnu/release/cada-enclave"
eifw="target/x86_64-unknown-linux-gnu/release/cada-eif"
mods=()
for m in "${MODULES[@]}"; do mods+=(--module "$kdir/modules/$(basename "$m").ko"); done
log "writing $out"
"$eifw" --kernel "$kdir/vmlinuz" "${mods[@]}" --init "$init" --output "$out" | tee "$out.pcrs.json"

# With --check (or CADA_EIF_CHECK=1): building twice gives the same bytes and PCRs, and one
# changed byte of cada-enclave moves PCR0 and PCR2 (not PCR1).
if [ -n "$check" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$eifw" --kernel "$kdir/vmlinuz" "${mods[@]}" --init "$init" --output "$tmp/again.eif" > "$tmp/again.json"
  cmp "$out" "$tmp/again.eif" || { echo "FAIL: two builds of the EIF differ" >&2; exit 1; }
  cp "$init" "$tmp/init"
  printf '\xAA' | dd of="$tmp/init" bs=1 seek=$(( $(stat -c %s "$tmp/init") / 2 )) conv=notrunc status=none
  "$eifw" --kernel "$kdir/vmlinuz" "${mods[@]}" --init "$tmp/init" --output "$tmp/changed.eif" > "$tmp/changed.json"
  python3 - "$out.pcrs.json" "$tmp/changed.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert a["PCR0"] != b["PCR0"] and a["PCR2"] != b["PCR2"], "one changed byte of cada-enclave must move PCR0 and PCR2"
assert a["PCR1"] == b["PCR1"], "the bootstrap (kernel, cmdline, modules) did not change: PCR1 must not move"
print("reproducible: identical bytes twice; one changed byte of cada-enclave moves PCR0 and PCR2, not PCR1", file=sys.stderr)
PY
fi
