#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz / libFuzzer) of every parser of outside bytes.
#
#   scripts/fuzz.sh [--seconds S] [--runs N] [--replay] [--sanitizer address|none]
#                   [--jobs J] [--summary FILE] [target…]
#
# Builds every target in fuzz/ (stable toolchain with RUSTC_BOOTSTRAP=1), writes each target's
# seed corpus from the fixtures ($CADA_FIXTURES, else testdata/) into
# fuzz/corpus/<target> (git-ignored), then runs each target in turn, under nice, with the
# rss/timeout limits below: for S seconds (default 20 when --runs is not given), for N
# executions, or with both until whichever comes first. Crash, leak and timeout inputs land
# in fuzz/artifacts/<target>/. Exits non-zero if any target fails; prints one line per target
# (executions, exec/s, coverage, features, corpus size, result) and writes the same lines,
# tab-separated, to fuzz/artifacts/summary.txt (or --summary FILE).
#
# --sanitizer none builds without AddressSanitizer (target dir .../fuzz-nosan): 4-6x more
# executions per second on these allocation-heavy targets, for long campaigns. It cannot see
# leaks or memory errors, so a campaign ends with --replay under the default ASan build:
# every input of the grown corpus executed once, with leak detection (scripts/fuzz-campaign.sh).
#
# --jobs J runs J targets at a time (default 1), each its own single-process libFuzzer run:
# with --seconds the wall time divides by J; each target gets one core instead of all of it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

CARGO_FUZZ_VERSION=0.13.2
TARGETS_ALL=(nitro_document snp_report x509_chain envelope jws_pop wire_frame eif policy_toml decide contract access_token mcp_body url_prefix sealed_envelope grant_arguments tpm_attest tpm_public tpm_eventlog delegation_chain)

seconds=""
runs=""
replay=""
sanitizer=address
summary_file="fuzz/artifacts/summary.txt"
jobs=1
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
    --runs) runs=${2:?--runs needs a number}; shift 2 ;;
    --replay) replay=1; shift ;;
    --sanitizer) sanitizer=${2:?--sanitizer needs address or none}; shift 2 ;;
    --summary) summary_file=${2:?--summary needs a file}; shift 2 ;;
    --jobs) jobs=${2:?--jobs needs a number}; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
for n in "$seconds" "$runs" "$jobs"; do
  [[ -z "$n" || "$n" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: --seconds and --runs and --jobs take a positive integer, not $n" >&2; exit 2; }
done
case "$sanitizer" in
  address|none) ;;
  *) echo "fuzz.sh: --sanitizer takes address or none, not $sanitizer" >&2; exit 2 ;;
esac
if [ -n "$replay" ] && [ -n "$seconds$runs" ]; then
  echo "fuzz.sh: --replay runs each corpus input once; it takes no --seconds/--runs" >&2; exit 2
fi
[ -n "$seconds$runs$replay" ] || seconds=20
[ ${#targets[@]} -gt 0 ] || targets=("${TARGETS_ALL[@]}")
for t in "${targets[@]}"; do
  [ -f "fuzz/fuzz_targets/$t.rs" ] || { echo "fuzz.sh: no target $t (have: ${TARGETS_ALL[*]})" >&2; exit 2; }
done

export CADA_FIXTURES="${CADA_FIXTURES:-$root/testdata}"
if [ ! -f "$CADA_FIXTURES/index.json" ]; then
  echo "fuzz.sh: no fixtures at $CADA_FIXTURES (restore testdata/ or set CADA_FIXTURES)" >&2
  exit 1
fi

if [ "$(cargo fuzz --version 2>/dev/null | awk '{print $2}')" != "$CARGO_FUZZ_VERSION" ]; then
  echo "==> cargo install cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked --quiet --force "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi

target_dir="${CARGO_TARGET_DIR:-$root/target}/fuzz"
[ "$sanitizer" = address ] || target_dir+="-nosan"
bin="$target_dir/x86_64-unknown-linux-gnu/release"
echo "==> cargo fuzz build -s $sanitizer (target dir $target_dir)"
(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build -s "$sanitizer" --target-dir "$target_dir")

failed=0
summary=()
mkdir -p "$(dirname "$summary_file")"
printf '# %s %s scripts/fuzz.sh -s %s%s%s%s\n# target\texecutions\texec/s\tcov\tft\tcorpus\tresult\n' \
  "$(date -u +%FT%TZ)" "$(git rev-parse --short HEAD 2>/dev/null || echo '?')" "$sanitizer" \
  "${runs:+ --runs $runs}" "${seconds:+ --seconds $seconds}" "${replay:+ --replay}" >"$summary_file"
limit=()
[ -z "$runs" ] || limit+=(-runs="$runs")
[ -z "$seconds" ] || limit+=(-max_total_time="$seconds")
[ -z "$replay" ] || limit+=(-runs=0)
what="${runs:+$runs executions}${runs:+${seconds:+ or }}${seconds:+$seconds s}"
[ -z "$runs" ] || [ -z "$seconds" ] || what+=", whichever comes first"
[ -z "$replay" ] || what="each corpus input once"
# One target: its seed corpus, its run, and its result in $results/<target>.{out,tsv,line}
# (read back in target order below, so parallel runs print as sequential ones do).
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
run_target() {
  local t=$1 corpus="fuzz/corpus/$1" artifacts="fuzz/artifacts/$1" out="$results/$1.out"
  mkdir -p "$corpus" "$artifacts"
  CADA_FUZZ_WRITE_SEEDS="$corpus" "$bin/$t" 2>&1 | tail -n 1 >"$out"
  local log="$artifacts/last-run-$(basename "$summary_file" .txt)-$sanitizer${replay:+-replay}.log"
  echo "==> $t ($what)" >>"$out"
  local rc=0
  nice -n "${CADA_FUZZ_NICE:-10}" "$bin/$t" "${limit[@]}" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$corpus" >"$log" 2>&1 || rc=$?
  # The last status line (DONE, or the last pulse before a failure) has cov/ft/corpus.
  local status execs rate cov ft corp result line
  status=$(grep -E '^#[0-9]+[[:space:]].*cov: ' "$log" | tail -n 1 || true)
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
  [ -n "$execs" ] || execs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$status")
  rate=$(awk '/stat::average_exec_per_sec/ {print $2}' "$log")
  cov=$(sed -nE 's/.* cov: ([0-9]+) .*/\1/p' <<<"$status")
  ft=$(sed -nE 's/.* ft: ([0-9]+) .*/\1/p' <<<"$status")
  corp=$(sed -nE 's/.* corp: ([0-9]+)\/.*/\1/p' <<<"$status")
  if [ "$rc" -eq 0 ]; then
    result=ok
  elif grep -q 'ERROR: LeakSanitizer' "$log"; then
    result=leak
  elif grep -q 'ERROR: libFuzzer: timeout' "$log"; then
    result=timeout
  elif grep -q -- '-rss_limit_mb\|out-of-memory' "$log"; then
    result=oom
  else
    result=crash
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" \
    "${corp:-?}" "$result" >"$results/$t.tsv"
  line="$t: ${execs:-?} executions, ${rate:-?} exec/s, cov ${cov:-?} ft ${ft:-?} corpus ${corp:-?}"
  if [ "$result" != ok ]; then
    echo "FAIL $line — $result (exit $rc), see $log and $artifacts/" >"$results/$t.line"
    grep -E 'ERROR: |panicked at|Test unit written' "$log" | head -n 5 >>"$out" || true
  else
    echo "ok   $line" >"$results/$t.line"
  fi
  return 0
}
running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
  run_target "$t" &
  running=$((running + 1))
done
wait
for t in "${targets[@]}"; do
  cat "$results/$t.out"
  cat "$results/$t.tsv" >>"$summary_file"
  line=$(cat "$results/$t.line")
  summary+=("$line")
  case "$line" in FAIL*) failed=1 ;; esac
done

echo
printf '%s\n' "${summary[@]}"
echo "(also in $summary_file)"
exit "$failed"
