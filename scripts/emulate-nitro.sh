#!/usr/bin/env bash
# Hardware-free Nitro Enclave: QEMU's nitro-enclave machine (TCG) boots the project's own
# EIF; cada-enclave runs as PID 1 with the real `nitro` platform over QEMU's virtio-nsm;
# cada-parent reaches it through vhost-device-vsock (hybrid vsock on a unix socket); the
# emulated end-to-end test then verifies evidence in --insecure-emulator mode with the PCRs
# of the same EIF and mints and verifies 1,000 proofs; a second one makes one injected HTTPS
# call (a sealed secret) from inside the enclave through the parent's egress relay.
# QEMU (with the nitro machine), vhost-device-vsock and the kernel are built or fetched once
# and cached in $CADA_CACHE (default ~/.cache/cada), keyed by version.
#
#   scripts/emulate-nitro.sh            build what is missing, then run the emulated test
#   scripts/emulate-nitro.sh --prepare  only build/fetch QEMU, vhost-device-vsock and the kernel
#                                       (scripts/test.sh starts this early, in the background)
set -euo pipefail
prepare_only=""
case "${1:-}" in
  --prepare) prepare_only=1 ;;
  "") ;;
  -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
  *) echo "emulate-nitro.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
source scripts/common.sh
t0=$(date +%s)
QEMU_PREFIX="$CACHE/qemu-$QEMU_VERSION-nitro"
QEMU="$QEMU_PREFIX/bin/qemu-system-x86_64"
VDV="$CACHE/vhost-device-vsock-$VDV_VERSION/bin/vhost-device-vsock"

build_qemu() (
  # A subshell: the build changes directory.
  [ -x "$QEMU" ] && exit 0
  ensure_backports
  apt_need dpkg-dev ninja-build pkg-config libglib2.0-dev libcbor-dev libgnutls28-dev zlib1g-dev \
    libfdt-dev python3-venv flex bison libpixman-1-dev xz-utils
  # Debian's +ds tarball leaves out QEMU's bundled meson wheel: take it from PyPI.
  python3 -m pip install -q "meson==1.5.0" "pycotap==1.3.1" >/dev/null 2>&1
  local src="$CACHE/qemu-src"
  mkdir -p "$src" && cd "$src"
  if [ ! -f "qemu_$QEMU_VERSION+ds.orig.tar.xz" ]; then
    log "downloading Debian's QEMU $QEMU_VERSION source"
    apt-get source --download-only "qemu=$QEMU_DEB_VERSION" >/dev/null 2>&1 || true
  fi
  [ -f "qemu_$QEMU_VERSION+ds.orig.tar.xz" ] || { echo "could not download qemu_$QEMU_VERSION+ds.orig.tar.xz" >&2; exit 1; }
  rm -rf "qemu-$QEMU_VERSION" && tar xf "qemu_$QEMU_VERSION+ds.orig.tar.xz" && cd "qemu-$QEMU_VERSION"
  # Only the nitro-enclave machine; the +ds tarball has no firmware blobs to unpack.
  echo "CONFIG_NITRO_ENCLAVE=y" > configs/devices/x86_64-softmmu/nitro.mak
  sed -i "s/unpack_edk2_blobs = bzip2.found()/unpack_edk2_blobs = false/" meson.build
  log "building QEMU $QEMU_VERSION with the nitro-enclave machine (several minutes, once)"
  ./configure --prefix="$QEMU_PREFIX" --target-list=x86_64-softmmu --without-default-devices \
    --with-devices-x86_64=nitro --enable-libcbor --enable-gnutls --enable-fdt=system \
    --disable-install-blobs --disable-docs --disable-werror --disable-user >/dev/null
  make -j"$(nproc)" >/dev/null && make install >/dev/null
  # The build tree is 1.3 GB and nothing reads it after the install.
  cd "$src" && rm -rf "qemu-$QEMU_VERSION"
)

build_vdv() {
  [ -x "$VDV" ] && return
  log "building vhost-device-vsock $VDV_VERSION (once)"
  cargo install --locked --quiet vhost-device-vsock --version "$VDV_VERSION" --root "$CACHE/vhost-device-vsock-$VDV_VERSION"
}

build_qemu
build_vdv
apt_need seabios qemu-system-data
if [ -n "$prepare_only" ]; then
  fetch_kernel >/dev/null
  log "emulator prerequisites ready in $CACHE ($(( $(date +%s) - t0 )) s)"
  exit 0
fi
scripts/build-eif.sh target/eif/cada.eif --check >/dev/null
# The same package set as scripts/test.sh: a subset would unify features differently and
# rebuild both binaries.
cargo build --quiet --workspace --bins
t_ready=$(date +%s)

W=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true;
            [ -n "${KEEP:-}" ] || rm -rf "$W"; }
trap cleanup EXIT

# The parent's side of vsock: vhost-device-vsock in uds-path mode. Guest connections to the
# host (CID 2) port P arrive on $W/vm.vsock_P; host connections use "CONNECT <port>".
"$VDV" --vm "guest-cid=4,socket=$W/vhost.sock,uds-path=$W/vm.vsock" >"$W/vdv.log" 2>&1 </dev/null &
pids+=($!)
khz=$(awk -F: '/cpu MHz/ {printf "%d", $2*1000; exit}' /proc/cpuinfo)
for _ in $(seq 1 100); do [ -S "$W/vhost.sock" ] && break; sleep 0.1; done

# Boots the EIF and waits for its heartbeat (0xB7, echoed as the Nitro parent does).
# Returns non-zero when no heartbeat came within 60 s.
boot_enclave() {
  rm -f "$W/vm.vsock_9000"
  python3 - "$W/vm.vsock_9000" >"$W/heartbeat.log" 2>&1 </dev/null <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)
c, _ = s.accept(); b = c.recv(1); c.sendall(b); c.close()
print("heartbeat", b.hex())
PY
  hb=$!
  pids+=($hb)
  boot=$(date +%s.%N)
  # TCG (no usable KVM here); acpi=on for the virtio-mmio devices; tsc_early_khz avoids
  # hangs under load; CADA_HEARTBEAT_CID=2 because the host side is CID 2 here (appended at
  # run time, these do not change the PCRs, which QEMU computes from the EIF).
  "$QEMU" -M "nitro-enclave,vsock=c,id=i-cada-emulated-enc0000000000000001,acpi=on" \
    -m 512M -smp 2 -accel tcg -cpu max -nographic -L /usr/share/qemu -L /usr/share/seabios -bios bios-microvm.bin \
    -kernel target/eif/cada.eif -append "tsc_early_khz=$khz CADA_HEARTBEAT_CID=2 CADA_EGRESS=vsock:2:8001" \
    -chardev "socket,id=c,path=$W/vhost.sock" >"$W/qemu.log" 2>&1 </dev/null &
  qemu=$!
  pids+=($qemu)
  for _ in $(seq 1 600); do kill -0 "$hb" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$hb" 2>/dev/null; then
    kill "$qemu" "$hb" 2>/dev/null || true
    wait "$qemu" "$hb" 2>/dev/null || true
    return 1
  fi
  hb_s=$(awk -v a="$(date +%s.%N)" -v b="$boot" 'BEGIN { printf "%.1f", a - b }')
}

if ! boot_enclave; then
  log "no heartbeat within 60 s (TCG boots can stall under load); booting once more"
  tail -5 "$W/qemu.log" >&2
  if ! boot_enclave; then
    echo "the enclave did not send its heartbeat within 60 s, twice; QEMU log:" >&2
    tail -40 "$W/qemu.log" >&2
    exit 1
  fi
fi
log "heartbeat after ${hb_s}s"
# --egress-listen: the enclave's secret calls dial host port 8001, which vhost-device-vsock
# hands to the unix socket $W/vm.vsock_8001. The injected call's upstream is on loopback,
# which the relay refuses unless --egress-allow names it: a free port, picked now, that the
# test binds (CADA_EMULATOR_UPSTREAM_PORT).
up_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
target/debug/cada-parent serve --enclave "unix:$W/vm.vsock:5005" --socket "$W/agent.sock" --timeout-ms 20000 \
  --egress-listen "unix:$W/vm.vsock_8001" --egress-allow "localhost:$up_port" --secret-timeout-ms 120000 \
  >"$W/parent.log" 2>&1 </dev/null &
pids+=($!)
for _ in $(seq 1 300); do
  curl -sf --unix-socket "$W/agent.sock" http://cada/readyz >/dev/null 2>&1 && break; sleep 0.2
done
# The policy's PCRs come from the verifier's own reading of the same EIF.
target/debug/cada-verify pcrs target/eif/cada.eif > "$W/pcrs.json"
# --workspace, not -p cada-e2e: the same feature resolution as scripts/test.sh, so nothing
# is rebuilt for this one test.
CADA_EMULATOR_SOCKET="$W/agent.sock" CADA_EMULATOR_PCRS="$W/pcrs.json" \
  cargo test --quiet --workspace --test e2e -- --ignored --nocapture emulated_nitro::
# After the evidence test, which needs the enclave unlocked: one injected HTTPS call through
# the parent's relay (issue 22 part 7; this test locks the enclave to its owner).
CADA_EMULATOR_SOCKET="$W/agent.sock" CADA_EMULATOR_UPSTREAM_PORT="$up_port" \
  CADA_EMULATOR_LOGS="$W/parent.log:$W/qemu.log:$W/vdv.log" \
  cargo test --quiet --workspace --test e2e -- --ignored --nocapture \
  secrets::emulated_nitro_makes_one_injected_https_call_through_the_parent_relay
echo "emulator: build/cache $(( t_ready - t0 ))s, heartbeat ${hb_s}s after QEMU start, total $(( $(date +%s) - t0 ))s"
