#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz / libFuzzer) of every parser of outside bytes.
#
#   scripts/fuzz.sh [--seconds N] [--runs N] [target…]
#
# Builds every target in fuzz/ (stable toolchain with RUSTC_BOOTSTRAP=1), writes each target's
# seed corpus from the fixtures ($CADA_FIXTURES, else testdata/) into
# fuzz/corpus/<target> (git-ignored), then runs each target in turn for N seconds (default 20)
# or N executions, under nice, with the rss/timeout limits below. Crash, leak and timeout
# inputs land in fuzz/artifacts/<target>/. Exits non-zero if any target fails; prints one line
# per target with its executions, exec/s, coverage and corpus size.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

CARGO_FUZZ_VERSION=0.13.2
TARGETS_ALL=(nitro_document snp_report x509_chain envelope jws_pop wire_frame eif)

seconds=20
runs=""
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
    --runs) runs=${2:?--runs needs a number}; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
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
bin="$target_dir/x86_64-unknown-linux-gnu/release"
echo "==> cargo fuzz build (target dir $target_dir)"
(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build --target-dir "$target_dir")

failed=0
summary=()
for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t"
  artifacts="fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  CADA_FUZZ_WRITE_SEEDS="$corpus" "$bin/$t" 2>&1 | tail -n 1
  if [ -n "$runs" ]; then
    limit=(-runs="$runs"); what="$runs executions"
  else
    limit=(-max_total_time="$seconds"); what="$seconds s"
  fi
  log="$artifacts/last-run.log"
  echo "==> $t ($what)"
  rc=0
  nice -n 10 "$bin/$t" "${limit[@]}" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$corpus" >"$log" 2>&1 || rc=$?
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
  rate=$(awk '/stat::average_exec_per_sec/ {print $2}' "$log")
  cov=$(sed -nE 's/.*cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+)\/.*/cov \1 ft \2 corpus \3/p' <<<"$done_line")
  if [ "$rc" -ne 0 ]; then
    failed=1
    summary+=("FAIL $t: exit $rc after ${execs:-?} executions — see $log and $artifacts/")
    grep -E 'ERROR: |panicked at|Test unit written' "$log" | head -n 5 >&2 || true
  else
    summary+=("ok   $t: ${execs:-?} executions, ${rate:-?} exec/s, ${cov:-no coverage line}")
  fi
done

echo
printf '%s\n' "${summary[@]}"
exit "$failed"
