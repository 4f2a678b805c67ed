#!/usr/bin/env bash
# A local Redis Cluster for tests and benchmarks: Debian's redis-server in cluster mode,
# three masters with one replica each, on free loopback ports, its data in a directory the
# caller names. (cada_e2e::redis_cluster::Cluster starts the same cluster from Rust tests.)
#
# Usage:
#   scripts/redis-cluster.sh start  --dir DIR [--node-timeout MS] [--masters N] [--spares N]
#        prints the seed URL on stdout (redis+cluster://127.0.0.1:P1,…), the rest on stderr.
#        --spares N adds N more replicas: after a failover, Redis moves one to the master
#        left without a replica (replica migration, about 5 s later), so that
#        --store-ack replicas=1 is acknowledged again without restarting the killed node.
#   scripts/redis-cluster.sh status --dir DIR     cluster_state and CLUSTER NODES
#   scripts/redis-cluster.sh url    --dir DIR     the seed URL again
#   scripts/redis-cluster.sh kill-master --dir DIR SLOT|PORT
#        SIGKILLs the master serving SLOT (0–16383), or the node on PORT (a port of this
#        cluster); prints its port. Its replica is promoted after --node-timeout.
#   scripts/redis-cluster.sh restart-node --dir DIR PORT
#        starts a killed node again (same port, same nodes file: it rejoins, as a replica
#        if it was replaced)
#   scripts/redis-cluster.sh stop   --dir DIR     stops every node (data stays in DIR)
#
# Nodes: bind 127.0.0.1 only, no persistence (save "", appendonly no; a replica's first
# sync starts at once: repl-diskless-sync-delay 0), cluster-node-timeout
# 1000 ms by default, cluster-require-full-coverage no (a slot without a master fails
# alone, the others keep serving), cluster-replica-validity-factor 0 (a replica always
# stands for election). Each node's port and bus port (cluster-port) are free ports chosen
# at start; DIR/cluster.env records them.
set -euo pipefail

die() { echo "redis-cluster.sh: $*" >&2; exit 2; }
log() { echo "==> $*" >&2; }

cmd="${1:-}"; [ -n "$cmd" ] || die "usage: $0 start|status|url|kill-master|restart-node|stop --dir DIR …"
shift
dir=""; node_timeout=1000; masters=3; spares=0; arg=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="${2:?--dir needs a directory}"; shift 2 ;;
    --node-timeout) node_timeout="${2:?--node-timeout needs milliseconds}"; shift 2 ;;
    --masters) masters="${2:?--masters needs a number}"; shift 2 ;;
    --spares) spares="${2:?--spares needs a number}"; shift 2 ;;
    -*) die "unknown option $1" ;;
    *) [ -z "$arg" ] || die "one argument only (got $arg and $1)"; arg="$1"; shift ;;
  esac
done
[ -n "$dir" ] || die "--dir DIR is required (the cluster's data and state live there)"
case "$node_timeout" in ''|*[!0-9]*) die "--node-timeout: milliseconds, e.g. 1000" ;; esac
case "$masters" in 3|4|5|6|7|8) ;; *) die "--masters: 3 to 8 (a cluster needs three)" ;; esac
case "$spares" in 0|1|2|3) ;; *) die "--spares: 0 to 3" ;; esac

ensure_redis() {
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    log "apt-get install redis-server (redis-cli comes with it)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null
  fi
}

# A loopback TCP port nobody listens on (and that we have not handed out already), below
# the kernel's ephemeral range, so that no outgoing connection holds it either.
eph_low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
taken=" "
free_port() {
  local p span=$((eph_low - 10000))
  [ "$span" -gt 1000 ] || span=20000
  for _ in $(seq 1 500); do
    p=$((10000 + (RANDOM * 32768 + RANDOM) % span))
    case "$taken" in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      taken="$taken$p "
      echo "$p"; return
    fi
  done
  die "no free loopback port found"
}

state="$dir/cluster.env"
load_state() {
  [ -f "$state" ] || die "$dir holds no cluster (no cluster.env): start one with $0 start --dir $dir"
  # shellcheck disable=SC1090
  . "$state"
}

start_node() { # PORT BUSPORT
  local p="$1" b="$2" d="$dir/node-$1"
  mkdir -p "$d"
  redis-server --port "$p" --cluster-port "$b" --bind 127.0.0.1 --protected-mode no \
    --cluster-enabled yes --cluster-config-file "$d/nodes.conf" \
    --cluster-node-timeout "$node_timeout" --cluster-require-full-coverage no \
    --cluster-replica-validity-factor 0 --save "" --appendonly no --repl-diskless-sync-delay 0 \
    --dir "$d" \
    --daemonize yes --pidfile "$d/redis.pid" --logfile "$d/redis.log"
}

wait_ping() { # PORT
  for _ in $(seq 1 100); do
    [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ] && return 0
    sleep 0.05
  done
  die "node $1 did not answer PING (log: $dir/node-$1/redis.log)"
}

seed_url() {
  local url="redis+cluster://" first=1
  for p in $PORTS; do
    [ $first = 1 ] || url="$url,"
    url="${url}127.0.0.1:$p"; first=0
  done
  echo "$url"
}

cluster_ok_everywhere() {
  for p in $PORTS; do
    redis-cli -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
  done
}

case "$cmd" in
  start)
    ensure_redis
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    state="$dir/cluster.env"
    [ ! -f "$state" ] || die "$dir holds a cluster already: $0 stop --dir $dir, and remove $state"
    n=$((masters * 2 + spares))
    PORTS=""; BUSPORTS=""
    for _ in $(seq 1 "$n"); do
      PORTS="$PORTS $(free_port)"; BUSPORTS="$BUSPORTS $(free_port)"
    done
    PORTS="${PORTS# }"; BUSPORTS="${BUSPORTS# }"
    printf 'PORTS="%s"\nBUSPORTS="%s"\nNODE_TIMEOUT=%s\n' "$PORTS" "$BUSPORTS" "$node_timeout" > "$state"
    # A start that fails leaves nothing running.
    trap 'for p in $PORTS; do f="$dir/node-$p/redis.pid"; [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null; rm -f "$f"; done; rm -f "$state"' EXIT
    set -- $BUSPORTS
    for p in $PORTS; do start_node "$p" "$1"; shift; done
    for p in $PORTS; do wait_ping "$p"; done
    addrs=""; for p in $PORTS; do addrs="$addrs 127.0.0.1:$p"; done
    log "creating the cluster:$addrs ($masters masters, one replica each, $spares spare)"
    # shellcheck disable=SC2086
    redis-cli --cluster create $addrs --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 \
      || { cat "$dir/create.log" >&2; die "redis-cli --cluster create failed"; }
    # Every node sees every slot served, and every replica is online at its master (its
    # first sync done: before it, WAIT counts no acknowledgement).
    for _ in $(seq 1 400); do
      if cluster_ok_everywhere; then
        online=0
        for p in $PORTS; do
          n=$(redis-cli -p "$p" info replication | grep -c '^slave[0-9]*:.*state=online' || true)
          online=$((online + n))
        done
        [ "$online" -ge $((masters + spares)) ] && break
      fi
      sleep 0.05
    done
    cluster_ok_everywhere || die "the cluster did not reach cluster_state:ok (logs: $dir/node-*/redis.log)"
    trap - EXIT
    log "cluster up in $dir (node timeout $node_timeout ms)"
    seed_url
    ;;
  url)
    load_state; seed_url ;;
  status)
    load_state
    for p in $PORTS; do
      if redis-cli -p "$p" ping >/dev/null 2>&1; then
        echo "127.0.0.1:$p $(redis-cli -p "$p" cluster info | grep '^cluster_state' | tr -d '\r')"
      else
        echo "127.0.0.1:$p down"
      fi
    done
    for p in $PORTS; do
      if redis-cli -p "$p" ping >/dev/null 2>&1; then redis-cli -p "$p" cluster nodes; break; fi
    done
    ;;
  kill-master)
    load_state
    [ -n "$arg" ] || die "kill-master SLOT|PORT"
    case "$arg" in *[!0-9]*) die "kill-master: a slot (0–16383) or a port of this cluster, not $arg" ;; esac
    port=""
    for p in $PORTS; do [ "$p" = "$arg" ] && port="$p"; done
    if [ -z "$port" ]; then
      [ "$arg" -lt 16384 ] || die "kill-master: $arg is neither a slot (0–16383) nor a port of this cluster ($PORTS)"
      for p in $PORTS; do
        if redis-cli -p "$p" ping >/dev/null 2>&1; then
          # CLUSTER NODES: "id ip:port@bus flags master-id … link-state slot-ranges…".
          port=$(redis-cli -p "$p" cluster nodes | awk -v s="$arg" '
            $3 ~ /master/ && $3 !~ /fail/ {
              for (i = 9; i <= NF; i++) {
                if ($i ~ /^\[/) continue
                n = split($i, r, "-"); lo = r[1]; hi = (n == 2) ? r[2] : r[1]
                if (s + 0 >= lo + 0 && s + 0 <= hi + 0) { split($2, a, "[:@]"); print a[2]; exit }
              }
            }')
          break
        fi
      done
      [ -n "$port" ] || die "kill-master: no master serves slot $arg"
    fi
    pid=$(cat "$dir/node-$port/redis.pid" 2>/dev/null || true)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || die "node $port is not running"
    kill -9 "$pid"
    rm -f "$dir/node-$port/redis.pid"
    log "killed 127.0.0.1:$port (pid $pid)"
    echo "$port"
    ;;
  restart-node)
    load_state
    [ -n "$arg" ] || die "restart-node PORT"
    node_timeout="$NODE_TIMEOUT"
    set -- $BUSPORTS; bus=""
    for p in $PORTS; do [ "$p" = "$arg" ] && bus="$1"; shift; done
    [ -n "$bus" ] || die "restart-node: $arg is not a port of this cluster ($PORTS)"
    start_node "$arg" "$bus"
    wait_ping "$arg"
    echo "$arg"
    ;;
  stop)
    load_state
    for p in $PORTS; do
      pidf="$dir/node-$p/redis.pid"
      if [ -f "$pidf" ]; then
        pid=$(cat "$pidf"); kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$pidf"
      fi
    done
    rm -f "$state"
    log "stopped; data left in $dir"
    ;;
  *) die "unknown command $cmd: start|status|url|kill-master|restart-node|stop" ;;
esac
