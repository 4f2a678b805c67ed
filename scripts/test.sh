#!/usr/bin/env bash
# Runs every check and test of the workspace on a fresh machine of this kind.
# Installs what it needs (Debian packages with apt-get, cargo tools with cargo install, each
# at a pinned version). The fixtures are vendored in testdata/ ($CADA_FIXTURES overrides);
# fails loudly — never skips — when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

export CADA_FIXTURES="${CADA_FIXTURES:-$root/testdata}"
if [ ! -f "$CADA_FIXTURES/index.json" ]; then
  echo "FATAL: fixtures not found: $CADA_FIXTURES/index.json does not exist." >&2
  echo "       Restore the vendored set with 'git checkout -- testdata', or point CADA_FIXTURES" >&2
  echo "       at a directory holding index.json, nitro/ and sev-snp/." >&2
  exit 1
fi
export CARGO_TERM_COLOR=never
# No incremental compilation: a one-shot run gains nothing from it, and its per-crate caches
# were the largest part of target/ (a CI run once ran out of disk while linking the tests).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
mkdir -p target
# Free space where target/ lives, in MiB.
free_mib() { df -Pm target | awk 'NR == 2 { print $4 }'; }
# A cold run needs about this much (measured on a fresh clone; README, "Running the tests").
# Too little is said up front, so that a run dying mid-link with "No space left on device"
# has its cause in the log.
NEED_MIB=6000
if [ "$(free_mib)" -lt "$NEED_MIB" ]; then
  echo "WARNING: only $(free_mib) MiB free where target/ lives; a cold run needs about $NEED_MIB MiB." >&2
  echo "         An old target/ is the usual culprit: 'cargo clean' frees it." >&2
fi
# Each step's wall time and the size of target/ after it, printed at the end (where a CI
# run's 30 minutes and its disk go).
timings=()
t_step=$(date +%s); name_step="setup"
step() {
  local now; now=$(date +%s)
  timings+=("$(printf '%5d s  target/ %6s MiB, %6s MiB free  %s' $((now - t_step)) \
    "$(du -sm target 2>/dev/null | cut -f1)" "$(free_mib)" "$name_step")")
  t_step=$now; name_step="$*"
  printf '\n==> %s\n' "$*"
}

# ---- tools -------------------------------------------------------------------------------
apt_need=()
command -v redis-server >/dev/null 2>&1 || apt_need+=(redis-server)
# The path-confusion test runs Debian's nginx in front of cada-gate (forward auth).
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || apt_need+=(nginx)
# The interop tests run peers from other ecosystems: PyJWT (pip) and oauth4webapi (npm).
command -v python3 >/dev/null 2>&1 || apt_need+=(python3 python3-pip)
command -v npm >/dev/null 2>&1 || apt_need+=(nodejs npm)
command -v curl >/dev/null 2>&1 || apt_need+=(curl)
# `--platform tpm` (issue 25): the system TSS that cada-enclave's `tpm` feature links (found
# with pkg-config), and swtpm with its local CA for the TPM end-to-end test.
command -v pkg-config >/dev/null 2>&1 || apt_need+=(pkg-config)
[ -f /usr/include/tss2/tss2_esys.h ] || apt_need+=(libtss2-dev)
command -v swtpm >/dev/null 2>&1 || apt_need+=(swtpm)
command -v swtpm_setup >/dev/null 2>&1 || apt_need+=(swtpm-tools)
command -v tpm2_getcap >/dev/null 2>&1 || apt_need+=(tpm2-tools)
if [ ${#apt_need[@]} -gt 0 ]; then
  step "apt-get install ${apt_need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${apt_need[@]}" >/dev/null
fi
# cargo-deny at a pinned version: a different or missing one is (re)installed.
CARGO_DENY_VERSION="0.20.2"
have_deny=$(cargo deny --version 2>/dev/null || true)
if [ "$have_deny" != "cargo-deny $CARGO_DENY_VERSION" ]; then
  step "cargo install cargo-deny@$CARGO_DENY_VERSION (found: ${have_deny:-none})"
  # cargo-deny's own release profile is fat LTO with one codegen unit: half of its cold
  # install (278 s of a cold run here). A thin build runs the three checks just as well.
  CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    cargo install --locked --force "cargo-deny@$CARGO_DENY_VERSION"
fi

# The emulator's prerequisites (QEMU with the nitro-enclave machine built from source,
# vhost-device-vsock, the guest kernel; cached in ~/.cache/cada) are built in the background,
# at low priority, while the Rust steps below run: their single-threaded phases leave a core
# idle that the QEMU build fills.
prep_log=target/emulator-prepare.log
nice -n 15 scripts/emulate-nitro.sh --prepare >"$prep_log" 2>&1 &
prep_pid=$!
trap 'kill "$prep_pid" 2>/dev/null || true' EXIT

# ---- static checks -------------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
step "cargo deny (bans, licenses, sources; advisories need the advisory DB, which this network cannot reach)"
cargo deny --log-level error check bans licenses sources

# ---- tests ---------------------------------------------------------------------------------
step "cargo build (binaries used by the end-to-end tests)"
cargo build --workspace --bins --quiet
step "cargo test (workspace)"
cargo test --workspace --quiet 2>&1 | tee target/test-output.txt

# ---- MCP transparency: the conformance suite directly and through proxy + gate ---------------
step "MCP conformance suite: server-everything directly and through cada-parent proxy + cada-gate"
scripts/mcp-conformance.sh

# ---- coverage-guided fuzzing: every target, a short bounded run -----------------------------
step "cargo fuzz: every target for 10 s with its seed corpus (scripts/fuzz.sh installs cargo-fuzz, pinned)"
scripts/fuzz.sh --seconds 10 --jobs "$(nproc)"

# ---- the enclave binary inside an emulated Nitro Enclave ------------------------------------
step "emulated Nitro Enclave (QEMU nitro-enclave, TCG): boot the EIF, evidence, 1,000 proofs"
if ! wait "$prep_pid"; then
  echo "FATAL: building the emulator's prerequisites failed; the log follows ($prep_log)" >&2
  tail -n 40 "$prep_log" >&2
  exit 1
fi
cat "$prep_log"
scripts/emulate-nitro.sh 2>&1 | tee -a target/test-output.txt

# ---- one closing line over every test run above ---------------------------------------------
step "done"
printf '%s\n' "${timings[@]}"
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' target/test-output.txt
