#!/usr/bin/env bash
# What a flood of unauthenticated requests costs cada-gate's audit log (issue 21, item 6):
# for SECS seconds (default 15), CONNS keep-alive connections (default 16, each from its own
# loopback address 127.0.0.N, so both the per-client rate and the per-second cap apply) send
# MCP requests with no proof, each a 64-call tools/call batch, to a cada-gate on loopback. Prints the
# requests answered, the bytes and records the audit log gained (short records, the
# audit.dropped records that count the rest) and the bound (--audit-unauth-per-second),
# then checks the chain with `cada-verify audit verify`.
#
# Usage: scripts/audit-flood.sh [SECS] [CONNS]
# Binaries: target/release if built there (cargo build --release -p cada-gate -p cada-verify),
# else target/debug (cargo build -p cada-gate -p cada-verify). Set BIN=dir to choose.
# Extra gate flags: GATE_FLAGS="--audit-unauth-per-second 50 --audit-unauth-per-client 5".
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
conns=${2:-16}
if [[ -z "${BIN:-}" ]]; then
    if [[ -x target/release/cada-gate && -x target/release/cada-verify ]]; then
        BIN=target/release
    else
        BIN=target/debug
    fi
fi
for b in cada-gate cada-verify; do
    [[ -x "$BIN/$b" ]] || { echo "no $BIN/$b: cargo build -p cada-gate -p cada-verify" >&2; exit 2; }
done

work=$(mktemp -d /tmp/cada-audit-flood.XXXXXX)
gate_pid=
cleanup() {
    [[ -n "$gate_pid" ]] && kill "$gate_pid" 2>/dev/null && wait "$gate_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Any policy: no request here carries a proof, so every one is refused before the decision.
cat > "$work/policy.toml" <<EOF
[[audience]]
prefix = "http://127.0.0.1:$port/"
measurements = [{ PCR0 = "$(printf '0%.0s' {1..96})" }]
EOF
# The upstream is never reached (nothing is admitted): a closed port is enough.
# shellcheck disable=SC2086
"$BIN/cada-gate" --listen "127.0.0.1:$port" --upstream "http://127.0.0.1:9/" \
    --policy "$work/policy.toml" --audit-dir "$work/audit" --log-format text \
    ${GATE_FLAGS:-} > "$work/gate.log" 2>&1 &
gate_pid=$!
for _ in $(seq 100); do
    grep -q '^ready' "$work/gate.log" 2>/dev/null && break
    kill -0 "$gate_pid" 2>/dev/null || { cat "$work/gate.log" >&2; exit 1; }
    sleep 0.1
done
grep -q '^ready' "$work/gate.log" || { echo "cada-gate did not start" >&2; cat "$work/gate.log" >&2; exit 1; }
before=$(du -sb "$work/audit" | cut -f1)

python3 - "$port" "$secs" "$conns" <<'EOF'
import json, socket, sys, threading, time
port, secs, conns = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
batch = json.dumps([
    {"jsonrpc": "2.0", "id": i, "method": "tools/call",
     "params": {"name": f"tool_{i}", "arguments": {"x": "y" * 200}}}
    for i in range(64)
]).encode()
head = (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: application/json, text/event-stream\r\nContent-Length: {len(batch)}\r\n\r\n").encode()
deadline = time.monotonic() + secs
counts = []

def worker(i):
    n = 0
    while time.monotonic() < deadline:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5,
                                         source_address=(f"127.0.0.{i % 250 + 1}", 0))
            f = s.makefile("rb")
            while time.monotonic() < deadline:
                s.sendall(head + batch)
                status = f.readline()
                length = 0
                while True:
                    line = f.readline()
                    if line in (b"\r\n", b""):
                        break
                    k, _, v = line.decode("latin-1").partition(":")
                    if k.strip().lower() == "content-length":
                        length = int(v.strip())
                f.read(length)
                if not status:
                    break
                n += 1
            s.close()
        except OSError:
            time.sleep(0.01)
    counts.append(n)

threads = [threading.Thread(target=worker, args=(i,)) for i in range(conns)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"requests answered: {sum(counts)} in {secs:.0f} s over {conns} connections from "
      f"{min(conns, 250)} addresses ({len(batch)}-byte 64-call batches, no proof)")
EOF
# Let the writer record the last interval's drops (it does within a second of idling).
sleep 2
after=$(du -sb "$work/audit" | cut -f1)
python3 - "$work/audit" "$((after - before))" "$secs" <<'EOF'
import json, os, sys
d, added, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
short = dropped_records = dropped = other = 0
longest = 0
for name in sorted(os.listdir(d)):
    for line in open(os.path.join(d, name), encoding="utf-8"):
        r = json.loads(line)
        if r.get("decision") == "dropped":
            dropped_records += 1
            dropped += sum(r["dropped"].values())
        elif "peer" in r:
            short += 1
            longest = max(longest, len(line) - 1)
        else:
            other += 1
print(f"audit log grew by {added} bytes ({added / secs:.0f} B/s): {short} short records "
      f"(longest {longest} B), {dropped_records} audit.dropped records counting {dropped} more, "
      f"{other} other (checkpoints)")
print("bound: --audit-unauth-per-second N gives at most N x 2049 + 4097 bytes per second "
      "(106,496 B/s with the default 50)")
EOF
"$BIN/cada-verify" audit verify "$work/audit"
