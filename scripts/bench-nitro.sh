#!/usr/bin/env bash
# Nitro verification benchmark: CADA cold/warm and the peer crate in the same run.
# The peer reads the wall clock, so the bench binary runs under libfaketime with the wall
# clock at the fixture document's timestamp (monotonic clock untouched: timings are real).
# Fixtures: the vendored testdata/ unless $CADA_FIXTURES names another set.
set -euo pipefail
cd "$(dirname "$0")/.."
faketime_lib=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
if ! [ -e "$faketime_lib" ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime) >/dev/null
fi
# Build first, with the compiler's messages on stderr (json-render-diagnostics keeps only the
# artifact records on stdout): a failed build stops the script and shows why.
json=$(mktemp)
trap 'rm -f "$json"' EXIT
if ! CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/compare}" cargo bench --manifest-path compare/Cargo.toml --bench nitro --no-run \
     --message-format=json-render-diagnostics >"$json"; then
  echo "FAIL: building the nitro benchmark failed (compiler output above)" >&2
  exit 1
fi
bin=$(python3 - "$json" <<'PY'
import json, sys
exe = ""
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "nitro" and m.get("executable"):
        exe = m["executable"]
print(exe)
PY
)
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "FAIL: cargo reported no executable for the nitro benchmark" >&2
  exit 1
fi
LD_PRELOAD="$faketime_lib" \
FAKETIME="@2022-10-13 08:58:05" FAKETIME_DONT_FAKE_MONOTONIC=1 FAKETIME_NO_CACHE=1 \
  "$bin" --bench "$@"
