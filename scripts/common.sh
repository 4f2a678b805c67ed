# Shared by build-eif.sh and emulate-nitro.sh: cache location, pinned inputs, apt helpers.
# Everything built or downloaded is cached outside the clone, keyed by version.
CACHE="${CADA_CACHE:-$HOME/.cache/cada}"
KVER="6.12.57+deb12-amd64"                     # Debian bookworm-backports kernel
QEMU_VERSION="10.0.2"
QEMU_DEB_VERSION="1:10.0.2+ds-2+deb13u1~bpo12+1"
VDV_VERSION="0.3.0"                            # vhost-device-vsock
MODULES=(drivers/virtio/virtio_mmio net/vmw_vsock/vsock net/vmw_vsock/vmw_vsock_virtio_transport_common
         net/vmw_vsock/vmw_vsock_virtio_transport drivers/misc/nsm)
export DEBIAN_FRONTEND=noninteractive

log() { printf '==> %s\n' "$*" >&2; }

ensure_backports() {
  local f=/etc/apt/sources.list.d/cada-backports.sources
  if [ ! -f "$f" ]; then
    log "adding Debian bookworm-backports (deb, deb-src)"
    cat > "$f" <<'SRC'
Types: deb deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -qq >/dev/null
  fi
}

apt_need() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
      apt-get update -qq >/dev/null
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    }
  fi
}

# The Debian kernel and its five modules, uncompressed, in $CACHE/kernel-$KVER.
fetch_kernel() {
  local dir="$CACHE/kernel-$KVER"
  if [ -f "$dir/ready" ]; then echo "$dir"; return; fi
  ensure_backports
  apt_need xz-utils
  mkdir -p "$dir" && cd "$dir"
  log "downloading linux-image-$KVER"
  apt-get download "linux-image-$KVER" >/dev/null 2>&1
  rm -rf root && dpkg-deb -x linux-image-"$KVER"_*.deb root
  mkdir -p modules
  for m in "${MODULES[@]}"; do
    xz -dc "root/lib/modules/$KVER/kernel/$m.ko.xz" > "modules/$(basename "$m").ko"
  done
  cp "root/boot/vmlinuz-$KVER" vmlinuz
  rm -rf root linux-image-*.deb
  touch ready
  cd - >/dev/null
  echo "$dir"
}
