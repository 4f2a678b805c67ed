#!/usr/bin/env bash
# A software TPM 2.0 (swtpm) for tests and development of `cada-enclave --platform tpm`, kept
# wholly inside a state directory the caller owns: the TPM's state, its EK certificates
# (issued by swtpm's own local CA, created in the same directory) and the running process.
#
#   scripts/swtpm.sh start DIR   provision (once) and start; prints the TCTI string, e.g.
#                                swtpm:host=127.0.0.1,port=40123 (also in DIR/tcti)
#   scripts/swtpm.sh stop DIR    stop the TPM started in DIR (its state is kept)
#
# DIR/ca/swtpm-localca-rootca-cert.pem is the root of the EK certificates and
# DIR/ca/issuercert.pem the intermediate that signs them: a verifier trusts swtpm evidence
# only when given that root explicitly (e.g. as a [tpm] EK root of a test policy).
# Needs Debian's swtpm and swtpm-tools (scripts/test.sh installs them).
set -euo pipefail

usage() {
  echo "usage: scripts/swtpm.sh start|stop DIR" >&2
  exit 2
}
[ $# -eq 2 ] || usage
cmd=$1
mkdir -p "$2"
dir=$(cd "$2" && pwd)

for tool in swtpm swtpm_setup swtpm_localca; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "swtpm.sh: $tool is missing: apt-get install swtpm swtpm-tools" >&2
    exit 1
  }
done

provision() {
  mkdir -p "$dir/state" "$dir/ca"
  # swtpm_setup's and swtpm_localca's configuration, pointing into DIR only (the defaults in
  # /etc write to /var/lib/swtpm-localca, shared by every user of the machine).
  cat >"$dir/swtpm-localca.conf" <<EOF
statedir = $dir/ca
signingkey = $dir/ca/signkey.pem
issuercert = $dir/ca/issuercert.pem
certserial = $dir/ca/certserial
EOF
  cat >"$dir/swtpm-localca.options" <<EOF
--platform-manufacturer CADA
--platform-version 1.0
--platform-model swtpm-test
EOF
  cat >"$dir/swtpm_setup.conf" <<EOF
create_certs_tool = $(command -v swtpm_localca)
create_certs_tool_config = $dir/swtpm-localca.conf
create_certs_tool_options = $dir/swtpm-localca.options
active_pcr_banks = sha256
EOF
  swtpm_setup --tpm2 --tpmstate "$dir/state" --config "$dir/swtpm_setup.conf" \
    --create-ek-cert --create-platform-cert --overwrite \
    --logfile "$dir/swtpm_setup.log" >/dev/null 2>&1 || {
    echo "swtpm.sh: swtpm_setup failed; its log follows" >&2
    cat "$dir/swtpm_setup.log" >&2
    exit 1
  }
  touch "$dir/.provisioned"
}

running() {
  [ -f "$dir/swtpm.pid" ] && kill -0 "$(cat "$dir/swtpm.pid")" 2>/dev/null
}

case "$cmd" in
  start)
    if running; then
      cat "$dir/tcti"
      exit 0
    fi
    [ -f "$dir/.provisioned" ] || provision
    # A free loopback port pair: the TPM port and, next to it, the control port the swtpm
    # TCTI uses for power-on and reset, below Linux's ephemeral range (32768–60999) so that
    # no outgoing connection holds them. A port taken meanwhile makes swtpm fail: try another.
    for _ in $(seq 1 20); do
      port=$(( 10000 + RANDOM % 22000 ))
      rm -f "$dir/swtpm.pid"
      if swtpm socket --tpm2 --tpmstate dir="$dir/state" \
          --server type=tcp,port="$port",bindaddr=127.0.0.1 \
          --ctrl type=tcp,port=$((port + 1)),bindaddr=127.0.0.1 \
          --flags not-need-init,startup-clear \
          --pid file="$dir/swtpm.pid" --log file="$dir/swtpm.log" \
          --daemon 2>>"$dir/swtpm.log"; then
        for _ in $(seq 1 50); do
          running && break
          sleep 0.1
        done
        if running; then
          echo "swtpm:host=127.0.0.1,port=$port" >"$dir/tcti"
          cat "$dir/tcti"
          exit 0
        fi
      fi
    done
    echo "swtpm.sh: swtpm did not start; its log follows" >&2
    cat "$dir/swtpm.log" >&2
    exit 1
    ;;
  stop)
    if running; then
      pid=$(cat "$dir/swtpm.pid")
      kill "$pid"
      for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
    fi
    rm -f "$dir/swtpm.pid" "$dir/tcti"
    ;;
  *) usage ;;
esac
