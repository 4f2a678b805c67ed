#!/usr/bin/env bash
# Nitro verification benchmark: CADA cold/warm and the peer crate in the same run.
# The peer reads the wall clock, so the bench binary runs under libfaketime with the wall
# clock at the fixture document's timestamp (monotonic clock untouched: timings are real).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! [ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ]; then
  (apt-get update -qq && apt-get install -y -qq faketime) >/dev/null
fi
export CADA_FIXTURES="${CADA_FIXTURES:-$(cd .. && pwd)/shared/fixtures}"
bin=$(cargo bench -p cada-attestation-verifier --bench nitro --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import sys,json
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="nitro" and m.get("executable"): print(m["executable"])' | tail -1)
LD_PRELOAD=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 \
FAKETIME="@2022-10-13 08:58:05" FAKETIME_DONT_FAKE_MONOTONIC=1 FAKETIME_NO_CACHE=1 \
  "$bin" --bench "$@"
