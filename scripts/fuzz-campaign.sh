#!/usr/bin/env bash
# A long fuzzing campaign: every target to N executions, then a memory-error and leak check.
#
#   scripts/fuzz-campaign.sh [--runs N] [--lanes L] [target…]     (default: 10,000,000, 2 lanes)
#
# 1. Each target runs to N executions on its persisted corpus (fuzz/corpus/<target>) with the
#    sanitizer-free build (scripts/fuzz.sh --sanitizer none), L targets at a time, under nice 19.
# 2. The grown corpus of every target is replayed once under the AddressSanitizer build
#    (scripts/fuzz.sh --replay): memory errors and leaks that the fast build cannot see.
# Results: fuzz/artifacts/campaign-lane<i>.txt (step 1), fuzz/artifacts/campaign-replay.txt
# (step 2), both tab-separated like summary.txt. Exits non-zero if any step found anything.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=10000000
lanes=2
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=${2:?--runs needs a number}; shift 2 ;;
    --lanes) lanes=${2:?--lanes needs a number}; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    -*) echo "fuzz-campaign.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[[ "$lanes" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz-campaign.sh: --lanes takes a positive integer" >&2; exit 2; }
[ ${#targets[@]} -gt 0 ] || targets=(decide nitro_document x509_chain snp_report jws_pop policy_toml envelope wire_frame eif contract access_token mcp_body)

# Build once, before the lanes start (two lanes building the same target dir would wait on
# each other's lock anyway).
scripts/fuzz.sh --sanitizer none --seconds 1 --summary fuzz/artifacts/campaign-build.txt eif >/dev/null

export CADA_FUZZ_NICE=19
pids=()
for ((i = 0; i < lanes; i++)); do
  lane=()
  for ((j = i; j < ${#targets[@]}; j += lanes)); do lane+=("${targets[j]}"); done
  [ ${#lane[@]} -gt 0 ] || continue
  scripts/fuzz.sh --sanitizer none --runs "$runs" --summary "fuzz/artifacts/campaign-lane$i.txt" \
    "${lane[@]}" >"fuzz/artifacts/campaign-lane$i.log" 2>&1 &
  pids+=($!)
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=1; done
scripts/fuzz.sh --replay --summary fuzz/artifacts/campaign-replay.txt "${targets[@]}" \
  >fuzz/artifacts/campaign-replay.log 2>&1 || failed=1
cat fuzz/artifacts/campaign-lane*.txt fuzz/artifacts/campaign-replay.txt
exit "$failed"
