#!/usr/bin/env bash
# Shared-store benchmark (issue 26; not a test): cada-verify serve's /v1/pop/verify at an
# offered rate (open loop, proofs minted before each run) on the memory store, one Redis
# (with one replica, so that --store-ack replicas=1 can be acknowledged) and the local
# six-node Redis Cluster (scripts/redis-cluster.sh), with --store-ack none and replicas=1;
# then saturation (closed loop) of one cada-verify against two sharing the cluster, with the
# machine's CPU use. Prints the load average before and after: other work on the machine
# moves the figures. Release build of cada-verify and of the bench (tests/examples/store_load.rs).
# Usage: scripts/bench-cluster.sh [RATE=8000] [SECONDS=10] [CONNECTIONS=64] [SAT_SECONDS=10] [AUDIT=none]
#   SAT_SECONDS=0 skips the saturation runs; AUDIT is --audit-durability (fsync, batch-ms:N, none).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
cargo build --release -p cada-verify --bins --quiet
cargo build --release -p cada-e2e --example store_load --quiet

work=$(mktemp -d /tmp/cada-bench-cluster.XXXXXX)
pids=()
cleanup() {
  scripts/redis-cluster.sh stop --dir "$work/cluster" >/dev/null 2>&1 || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_pong() {
  for _ in $(seq 1 100); do
    [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ] && return 0
    sleep 0.1
  done
  echo "redis-server on $1 did not start" >&2; exit 1
}

# One Redis and its replica, no persistence, on free loopback ports.
master=$(free_port); replica=$(free_port)
mkdir -p "$work/m" "$work/r"
redis-server --port "$master" --bind 127.0.0.1 --save "" --appendonly no --dir "$work/m" \
  --maxmemory-policy noeviction >"$work/m.log" 2>&1 & pids+=($!)
redis-server --port "$replica" --bind 127.0.0.1 --save "" --appendonly no --dir "$work/r" \
  --replicaof 127.0.0.1 "$master" --repl-diskless-sync-delay 0 >"$work/r.log" 2>&1 & pids+=($!)
wait_pong "$master"; wait_pong "$replica"
for _ in $(seq 1 100); do
  redis-cli -p "$master" info replication | grep -q 'connected_slaves:1' && break
  sleep 0.1
done
export CADA_BENCH_REDIS_URL="redis://127.0.0.1:$master"
CADA_BENCH_CLUSTER_URL=$(scripts/redis-cluster.sh start --dir "$work/cluster")
export CADA_BENCH_CLUSTER_URL

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(redis-server --version | cut -d' ' -f1-3)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
target/release/examples/store_load "${1:-8000}" "${2:-10}" "${3:-64}" "${4:-10}" "${5:-none}"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
