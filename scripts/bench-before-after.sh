#!/usr/bin/env bash
# Before/after comparison of two revisions on one benchmark: builds both in release (each in
# its own git worktree and target dir, one after the other, niced), then runs each one's own
# benchmark harness alternately, A B A B …, in the same session, so both see the same machine.
# Every result line is stamped with the time and the load average; the summary at the end
# lists each run and then the median per revision.
#
# Usage: scripts/bench-before-after.sh [--bench verify|signing|mcp] A B [ROUNDS] [SECONDS] [ARGS…]
#   --bench verify (default): tests/benches/verify_load.rs, the verification endpoint
#       A B [ROUNDS=2] [SECONDS=5] [CONNECTIONS=64] [DURABILITIES=fsync,batch-ms:5,none]
#           [RATES=8000]
#   --bench signing: tests/benches/signing_load.rs, the daemon's signing path (proofs/s at
#       saturation, p99 paced at 10,000 and 20,000/s, peak RSS of daemon and enclave)
#       A B [ROUNDS=4] [SECONDS=5] [CLIENTS=32]
#   --bench mcp: tests/benches/mcp_gate.rs, the latency cada-parent proxy + cada-gate add to
#       a tools/call (the Rust client and the official MCP Python SDK's client and server,
#       SSE and JSON answers), per audit durability
#       A B [ROUNDS=3] [SECONDS=5] [DURABILITIES=none,fsync] [CLIENTS=rust,sdk]
#       (the SDK is installed once into $BENCH_WORKDIR/mcp-python, or BENCH_MCP_PYTHON_DIR;
#       the gate's saturation run uses 16 connections)
#   A, B: a git revision (checked out into $BENCH_WORKDIR/wt-<rev>) or the path of an
#         existing checkout (built as it is, uncommitted changes included).
#   e.g. scripts/bench-before-after.sh b56ec4a HEAD 2 5
#        scripts/bench-before-after.sh --bench signing fecf112 HEAD 4 5
#
# verify: DURABILITIES and RATES are passed on to revisions whose harness takes them (since
# --audit-durability existed); older harnesses ignore them and run their fixed set (memory
# and Redis stores, saturation and 5,000 and 8,000 req/s, audit fsync per decision).
# Environment: BENCH_WORKDIR (default ${TMPDIR:-/tmp}/cada-bench-ab) for worktrees, target
# dirs of revisions given by name, and the results; BENCH_SEED_TARGET, a target dir whose
# release dependencies are hard-linked into a cold target dir first (saves the dependency
# build; cargo rebuilds whatever differs); BENCH_PATCH_A / BENCH_PATCH_B, a patch of harness
# fixes applied to that tree before building (the server code must stay as the revision has
# it), e.g. BENCH_PATCH_A=scripts/bench-b56ec4a-harness.patch for b56ec4a; BENCH_HARNESS=A or
# B runs that revision's harness against both revisions' binaries (default: each its own), to
# tell a change of the servers from a change of the load generator; BENCH_NICE (default 10),
# the niceness the benchmark runs at (builds always run at 10); CARGO_BUILD_JOBS (default 2).
set -euo pipefail
bench=verify
if [ "${1:-}" = "--bench" ]; then
  bench=${2:-}
  shift 2 || true
fi
case $bench in
  verify) harness=verify_load ;;
  signing) harness=signing_load ;;
  mcp) harness=mcp_gate ;;
  *) echo "FAIL: --bench verify|signing|mcp, not '$bench'" >&2; exit 2 ;;
esac
# Patch files are named relative to the caller's directory.
for v in BENCH_PATCH_A BENCH_PATCH_B; do
  if [ -n "${!v:-}" ]; then
    [ -f "${!v}" ] || { echo "FAIL: $v=${!v} is not a file" >&2; exit 2; }
    printf -v "$v" '%s' "$(cd "$(dirname "${!v}")" && pwd)/$(basename "${!v}")"
  fi
done
case ${BENCH_HARNESS:-own} in
  own | A | B) ;;
  *) echo "FAIL: BENCH_HARNESS=own|A|B, not '$BENCH_HARNESS'" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
repo=$(pwd)
export CARGO_TERM_COLOR=never
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
[ $# -ge 2 ] || { sed -n '2,37p' "$0" >&2; exit 2; }
rev_a=$1 rev_b=$2
if [ "$bench" = verify ]; then
  rounds=${3:-2} secs=${4:-5} conns=${5:-64}
  durabilities=${6:-fsync,batch-ms:5,none} rates=${7:-8000}
  bench_args=("$conns" "$secs" "$durabilities" "$rates")
  servers=(cada-verify)
  what="$conns connections, durabilities $durabilities, rates $rates"
elif [ "$bench" = signing ]; then
  rounds=${3:-4} secs=${4:-5} clients=${5:-32}
  bench_args=("$clients" "$secs")
  servers=(cada-parent cada-enclave)
  what="$clients clients"
else
  rounds=${3:-3} secs=${4:-5} durabilities=${5:-none,fsync} mcp_clients=${6:-rust,sdk}
  bench_args=("$secs" 16 "$durabilities" "$mcp_clients")
  servers=(cada-parent cada-enclave cada-gate)
  what="durabilities $durabilities, clients $mcp_clients"
fi
work=${BENCH_WORKDIR:-${TMPDIR:-/tmp}/cada-bench-ab}
mkdir -p "$work/results"
if [ "$bench" = verify ]; then
  command -v redis-server >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  }
fi

if [ "$bench" = mcp ] && [[ $mcp_clients == *sdk* ]]; then
  pydir=${BENCH_MCP_PYTHON_DIR:-$work/mcp-python}
  bash "$repo/tests/interop/mcp/install.sh" "$pydir" >&2
  export CADA_BENCH_PYTHON=$pydir/bin/python
fi

# tree_of REV: the checkout to build for REV (a directory as given, else a detached worktree).
tree_of() {
  if [ -d "$1" ]; then
    (cd "$1" && pwd)
    return
  fi
  local sha
  sha=$(git -C "$repo" rev-parse --verify --quiet "$1^{commit}") || {
    echo "FAIL: $1 is neither a directory nor a revision of $repo" >&2
    exit 1
  }
  local dir="$work/wt-${sha:0:12}"
  if [ ! -d "$dir" ]; then
    git -C "$repo" worktree add --detach "$dir" "$sha" >&2
  fi
  echo "$dir"
}

# patch TREE FILE: applies FILE (harness fixes for an old revision) to TREE unless applied.
patch_tree() {
  local tree=$1 file=$2
  if git -C "$tree" apply --reverse --check "$file" 2>/dev/null; then
    return
  fi
  git -C "$tree" apply "$file" || { echo "FAIL: $2 does not apply to $tree" >&2; exit 1; }
  echo "== applied $2 to $tree" >&2
}

# build TREE LABEL: release binaries and the benchmark harness of TREE; prints the harness
# executable. Compiler output goes to the terminal; any failure stops the script.
build() {
  local tree=$1 label=$2 target
  target=${CARGO_TARGET_DIR_OVERRIDE:-$tree/target}
  if [ -n "${BENCH_SEED_TARGET:-}" ] && [ ! -d "$target/release" ] && [ -d "$BENCH_SEED_TARGET/release" ]; then
    mkdir -p "$target/release"
    for d in deps build .fingerprint; do
      [ -d "$BENCH_SEED_TARGET/release/$d" ] && cp -al "$BENCH_SEED_TARGET/release/$d" "$target/release/$d"
    done
    find "$target/release" -name .cargo-lock -delete
  fi
  echo "== building $label ($tree, $(git -C "$tree" log -1 --format='%h %s'))" >&2
  if ! (cd "$tree" && CARGO_TARGET_DIR=$target nice -n 10 cargo build --release --workspace --bins >&2); then
    echo "FAIL: building the binaries of $label failed (compiler output above)" >&2
    exit 1
  fi
  local json
  json=$(mktemp)
  if ! (cd "$tree" && CARGO_TARGET_DIR=$target nice -n 10 cargo bench -p cada-e2e --bench "$harness" \
          --no-run --message-format=json-render-diagnostics >"$json"); then
    rm -f "$json"
    echo "FAIL: building the $harness benchmark of $label failed (compiler output above)" >&2
    exit 1
  fi
  local exe
  exe=$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[2] and m.get("executable"):
        print(m["executable"])' "$json" "$harness" | tail -n 1)
  rm -f "$json"
  if [ -z "$exe" ] || [ ! -x "$exe" ]; then
    echo "FAIL: no $harness executable for $label under $target" >&2
    exit 1
  fi
  for s in "${servers[@]}"; do
    [ -x "$target/release/$s" ] || { echo "FAIL: no $s binary for $label under $target" >&2; exit 1; }
  done
  echo "$exe"
}

tree_a=$(tree_of "$rev_a")
tree_b=$(tree_of "$rev_b")
[ -z "${BENCH_PATCH_A:-}" ] || patch_tree "$tree_a" "$BENCH_PATCH_A"
[ -z "${BENCH_PATCH_B:-}" ] || patch_tree "$tree_b" "$BENCH_PATCH_B"
exe_a=$(build "$tree_a" A)
exe_b=$(build "$tree_b" B)
# One harness for both: a copy beside the other revision's binaries (a harness finds the
# servers in the target dir it runs from).
case ${BENCH_HARNESS:-own} in
  A) cp -f "$exe_a" "$(dirname "$exe_b")/$harness-harness-of-A"; exe_b=$(dirname "$exe_b")/$harness-harness-of-A ;;
  B) cp -f "$exe_b" "$(dirname "$exe_a")/$harness-harness-of-B"; exe_a=$(dirname "$exe_a")/$harness-harness-of-B ;;
esac
desc_a="A = $rev_a ($(git -C "$tree_a" log -1 --format=%h))"
desc_b="B = $rev_b ($(git -C "$tree_b" log -1 --format=%h))"
stamp=$(date +%Y%m%d-%H%M%S)
echo "$bench: $desc_a; $desc_b; harness ${BENCH_HARNESS:-own}; $rounds rounds of ${secs} s runs, $what"
echo "machine: $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg); benchmark at nice ${BENCH_NICE:-10}"

# run LABEL EXE TREE ROUND: one harness run, each output line stamped with time and load.
run() {
  local label=$1 exe=$2 tree=$3 round=$4
  local out="$work/results/$stamp-$label-$round.txt"
  echo "== $label round $round: $(uptime)"
  # The harness finds the servers next to its own target dir; it runs from its tree.
  # A harness that fails (panic, a server that does not start) fails the comparison.
  if ! (cd "$tree" && nice -n "${BENCH_NICE:-10}" "$exe" "${bench_args[@]}") 2>&1 |
    while IFS= read -r line; do
      printf '%s load %s | %s\n' "$(date +%T)" "$(cut -d' ' -f1 /proc/loadavg)" "$line"
    done | tee "$out"; then
    echo "FAIL: $label round $round (output in $out)" >&2
    exit 1
  fi
}
for ((r = 1; r <= rounds; r++)); do
  run A "$exe_a" "$tree_a" "$r"
  run B "$exe_b" "$tree_b" "$r"
done

echo
echo "== summary ($desc_a; $desc_b); results in $work/results/$stamp-*"
if [ "$bench" = verify ]; then
  printf '%-3s %-5s %-32s %-12s %9s %9s %9s %6s %s\n' rev round "store, audit" mode "req/s" "p50 ms" "p99 ms" load errors
  for f in "$work/results/$stamp"-*.txt; do
    base=${f##*/$stamp-}
    label=${base%%-*} round=${base#*-}
    round=${round%.txt}
    grep 'HTTP /v1/pop/verify' "$f" | python3 -c '
import re, sys
label, rnd = sys.argv[1], sys.argv[2]
for line in sys.stdin:
    load = line.split()[2]
    body = line.split("| ", 1)[1]
    m = re.match(r"HTTP /v1/pop/verify, (.*?), \d+ connections, (.*?): (\d+)/s, p50 ([\d.]+) ms, p99 ([\d.]+) ms, max [\d.]+ ms, errors (\d+)", body)
    if not m:
        continue
    store = m.group(1).replace(" replay store", "")
    if "audit" not in store:
        store += ", audit fsync (fixed)"
    mode = "saturation" if "saturation" in m.group(2) else m.group(2).replace("paced at ", "")
    print(f"{label:<3} {rnd:<5} {store:<32} {mode:<12} {m.group(3):>9} {m.group(4):>9} {m.group(5):>9} {load:>6} {m.group(6)}")
' "$label" "$round"
  done
  grep -h 'rejected during' "$work/results/$stamp"-*.txt | sed 's/^/  /' || true
  exit 0
fi

# mcp: one row per run, durability and client, then the medians per revision.
if [ "$bench" = mcp ]; then
  python3 - "$work/results" "$stamp" "$desc_a" "$desc_b" <<'EOF'
import glob, os, re, statistics, sys
results, stamp, desc = sys.argv[1], sys.argv[2], {"A": sys.argv[3], "B": sys.argv[4]}
line_re = re.compile(r"^\S+ load (\S+) \| (.*)$")
rust_re = re.compile(r"added by proxy \+ gate: p50 ([-\d.]+) ms, p99 ([-\d.]+) ms")
sdk_re = re.compile(r"SDK client \+ SDK server, (\w+) answers.*?added by proxy \+ gate: p50 ([-\d.]+) ms(?:, p90 ([-\w.]+) ms)? \(median of pairs ([-\d.]+) ms\); load (\S+)")
sync_re = re.compile(r"fdatasync of a 400-byte append here now: p50 ([\d.]+) ms, p90 ([\d.]+) ms")
rows, syncs = [], []
for f in sorted(glob.glob(os.path.join(results, f"{stamp}-*.txt"))):
    label, rnd = os.path.basename(f)[len(stamp) + 1:-4].split("-", 1)
    durability = "?"
    for line in open(f):
        m = line_re.match(line.rstrip("\n"))
        if not m:
            continue
        load, body = m.groups()
        r = sync_re.search(body)
        if r:
            syncs.append(f"{label}{rnd} {r.group(1)}/{r.group(2)}")
        d = re.match(r"audit (\S+):", body)
        if d:
            durability = d.group(1)
        r = rust_re.search(body)
        if r:
            rows.append((label, int(rnd), durability, "rust", float(r.group(1)), float("nan"), float(r.group(2)), load))
        r = sdk_re.search(body)
        if r:
            p90 = float(r.group(3)) if r.group(3) else float("nan")
            rows.append((label, int(rnd), durability, "sdk " + r.group(1), float(r.group(2)), p90, float(r.group(4)), r.group(5)))
rows.sort(key=lambda r: (r[2], r[3], r[1], r[0]))
fmt = "{:<3} {:<5} {:<8} {:<9} {:>10} {:>10} {:>16} {:>6}"
print(fmt.format("rev", "round", "audit", "client", "added p50", "added p90", "p99 | pairs p50", "load"))
for r in rows:
    print(fmt.format(r[0], r[1], r[2], r[3], f"{r[4]:.3f}", f"{r[5]:.3f}", f"{r[6]:.3f}", r[7]))
print()
print("medians per revision of the added latency, ms (rust: p50, p99; sdk: p50, p90, median of pairs)")
for key in sorted({(r[2], r[3]) for r in rows}):
    for rev in ("A", "B"):
        mine = [r for r in rows if (r[2], r[3]) == key and r[0] == rev]
        if not mine:
            continue
        med = lambda i: statistics.median(r[i] for r in mine)
        third = "p99" if key[1] == "rust" else "pairs"
        print(f"  audit {key[0]:<6} {key[1]:<9} {rev}: p50 {med(4):.3f}, p90 {med(5):.3f}, {third} {med(6):.3f} over {len(mine)} runs (p50s {', '.join(f'{r[4]:.3f}' for r in mine)}; loads {', '.join(r[7] for r in mine)})")
if syncs:
    print("  fdatasync of a 400-byte append before each fsync run, p50/p90 ms: " + ", ".join(syncs))
print("  " + desc["A"] + "; " + desc["B"])
EOF
  exit 0
fi

# signing: one row per run, then the medians per revision.
python3 - "$work/results" "$stamp" "$desc_a" "$desc_b" <<'EOF'
import glob, os, re, statistics, sys
results, stamp, desc = sys.argv[1], sys.argv[2], {"A": sys.argv[3], "B": sys.argv[4]}
line_re = re.compile(r"^\S+ load (\S+) \| (.*)$")
run_re = re.compile(r"daemon over unix socket, \d+ clients, (.*?): (\d+)/s, p50 ([\d.]+) ms, p99 ([\d.]+) ms")
rss_re = re.compile(r"peak RSS: daemon ([\d.]+) MiB, enclave ([\d.]+) MiB(?:; private \(anon\) daemon ([\d.]+) MiB, enclave ([\d.]+) MiB)?")
rows = []
for f in sorted(glob.glob(os.path.join(results, f"{stamp}-*.txt"))):
    label, rnd = os.path.basename(f)[len(stamp) + 1:-4].split("-", 1)
    row = {"rev": label, "round": int(rnd)}
    for line in open(f):
        m = line_re.match(line.rstrip("\n"))
        if not m:
            continue
        load, body = m.groups()
        r = run_re.match(body)
        if r:
            mode = "sat" if "saturation" in r.group(1) else r.group(1).replace("paced at ", "").replace("/s", "")
            row[mode] = (float(r.group(2)), float(r.group(3)), float(r.group(4)))
            row.setdefault("load", load)
        r = rss_re.match(body)
        if r:
            row["rss"] = float(r.group(1))
            row["anon"] = float(r.group(3)) if r.group(3) else None
    rows.append(row)
rows.sort(key=lambda r: (r["round"], r["rev"]))
fmt = "{:<3} {:<5} {:>9} {:>8} {:>8} {:>10} {:>10} {:>10} {:>9} {:>6}"
print(fmt.format("rev", "round", "proofs/s", "p50 ms", "p99 ms", "p99@10000", "p99@20000", "RSS MiB", "anon MiB", "load"))
get = lambda r, k, i: r[k][i] if k in r else float("nan")
for r in rows:
    anon = r.get("anon")
    print(fmt.format(r["rev"], r["round"], f"{get(r, 'sat', 0):.0f}", f"{get(r, 'sat', 1):.3f}",
                     f"{get(r, 'sat', 2):.3f}", f"{get(r, '10000', 2):.3f}", f"{get(r, '20000', 2):.3f}",
                     f"{r.get('rss', float('nan')):.1f}", "-" if anon is None else f"{anon:.1f}", r.get("load", "?")))
print()
print("medians per revision (saturation proofs/s; p99 at saturation, 10,000/s and 20,000/s; daemon peak RSS)")
for rev in ("A", "B"):
    mine = [r for r in rows if r["rev"] == rev and "sat" in r]
    if not mine:
        continue
    med = lambda xs: statistics.median(xs) if xs else float("nan")
    print(f"  {desc[rev]}: {med([r['sat'][0] for r in mine]):.0f} proofs/s over {len(mine)} runs "
          f"(each: {', '.join(str(round(r['sat'][0])) for r in mine)}); "
          f"p99 {med([r['sat'][2] for r in mine]):.3f} ms; "
          f"p99 at 10,000/s {med([r['10000'][2] for r in mine if '10000' in r]):.3f} ms; "
          f"p99 at 20,000/s {med([r['20000'][2] for r in mine if '20000' in r]):.3f} ms; "
          f"daemon RSS {med([r['rss'] for r in mine if 'rss' in r]):.1f} MiB")
EOF
