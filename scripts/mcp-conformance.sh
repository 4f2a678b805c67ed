#!/usr/bin/env bash
# Transparency of cada-parent proxy + cada-gate, measured with the MCP conformance suite:
# its server scenarios run against @modelcontextprotocol/server-everything directly and
# through proxy → gate → server (sim enclave, an owner's contract granting every tool the
# server lists); a table compares them. Exits non-zero if a scenario that passes directly
# fails through the pair. Installs Node 22 (npm `node@22`, the suite needs it), the suite
# and the server, pinned, into target/mcp-conformance (once).
# Usage: scripts/mcp-conformance.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export CARGO_TERM_COLOR=never
PINS=(node@22.23.3 @modelcontextprotocol/conformance@0.1.16 @modelcontextprotocol/server-everything@2026.8.31)
dir=$root/target/mcp-conformance
if [ "$(cat "$dir/.installed" 2>/dev/null)" != "${PINS[*]}" ]; then
  rm -rf "$dir" && mkdir -p "$dir"
  npm install --silent --no-audit --no-fund --prefix "$dir" "${PINS[@]}"
  echo "${PINS[*]}" >"$dir/.installed"
fi
node22=$dir/node_modules/node/bin/node
cargo build --workspace --bins --quiet
bin=$root/target/debug
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
start() {
  local log=$1; shift
  "$@" >"$work/$log.out" 2>"$work/$log.log" &
  pids+=($!)
  for _ in $(seq 1 300); do grep -q '^ready' "$work/$log.out" 2>/dev/null && return 0; sleep 0.1; done
  echo "$log did not start; its log:" >&2; cat "$work/$log.log" >&2; exit 1
}

srv=$(free_port); gate_port=$(free_port); proxy_port=$(free_port)
PORT=$srv "$node22" "$dir/node_modules/.bin/mcp-server-everything" streamableHttp >"$work/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do grep -q listening "$work/server.log" && break; sleep 0.1; done

# The tools the server lists (the contract grants them all: the pair is meant to be transparent).
hdr=(-H 'content-type: application/json' -H 'accept: application/json, text/event-stream')
sid=$(curl -s -D - -o /dev/null "${hdr[@]}" "http://127.0.0.1:$srv/mcp" -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}' | tr -d '\r' | sed -n 's/^mcp-session-id: //Ip')
tools=$(curl -s "${hdr[@]}" -H "mcp-session-id: $sid" "http://127.0.0.1:$srv/mcp" -d '{"jsonrpc":"2.0","id":2,"method":"tools/list"}' \
  | sed -n 's/^data: //p' | python3 -c 'import json,sys; print(" ".join(t["name"] for t in json.load(sys.stdin)["result"]["tools"]))')
prompts=$(curl -s "${hdr[@]}" -H "mcp-session-id: $sid" "http://127.0.0.1:$srv/mcp" -d '{"jsonrpc":"2.0","id":3,"method":"prompts/list"}' \
  | sed -n 's/^data: //p' | python3 -c 'import json,sys; print(" ".join(p["name"] for p in json.load(sys.stdin)["result"]["prompts"]))')
echo "server-everything tools: $tools"
echo "server-everything prompts: $prompts"

start enclave "$bin/cada-enclave" --platform sim --unix "$work/enclave.sock" --hybrid-port 5005 --state-dir "$work/state"
start parent "$bin/cada-parent" serve --enclave "unix:$work/enclave.sock:5005" --socket "$work/agent.sock"
identity=$(curl -s --unix-socket "$work/agent.sock" http://cada/v1/identity)
did=$(echo "$identity" | python3 -c 'import json,sys; print(json.load(sys.stdin)["did"])')
pcr0=$(echo "$identity" | python3 -c 'import json,sys; print(json.load(sys.stdin)["measurements"]["PCR0"])')
owner_did=$("$bin/cada-owner" keygen --out "$work/owner" 2>/dev/null | tail -1)
"$bin/cada-owner" lock --key "$work/owner/owner-key.json" --enclave "$did" >"$work/lock.jwt" 2>/dev/null
"$bin/cada-parent" owner lock "$work/lock.jwt" --socket "$work/agent.sock" >/dev/null
# The suite also calls tools of its own reference server (test_simple_text, test_error_handling
# …); server-everything answers those with an isError result, which some scenarios accept.
# Granted too (as tools and prompts), so that the same calls reach the server both ways; so are
# the resource schemes the server and the suite use.
suite_tools=$(grep -rhoE "test_[a-z_0-9]+" "$dir/node_modules/@modelcontextprotocol/conformance/dist/" | sort -u)
# Resource grants match on segment boundaries under one authority (never a whole scheme): each
# test:// authority the suite uses, and the server's demo://resource/ tree.
grant=(--method POST --method GET --method DELETE --resource demo://resource/)
for r in $(grep -rhoE "test://[a-z0-9-]+" "$dir/node_modules/@modelcontextprotocol/conformance/dist/" | sort -u); do
  grant+=(--resource "$r" --resource "$r/")
done
for t in $tools $suite_tools; do grant+=(--tool "$t"); done
for p in $prompts $suite_tools; do grant+=(--prompt "$p"); done
"$bin/cada-owner" grant --key "$work/owner/owner-key.json" --subject "$did" --audience "http://127.0.0.1:$gate_port/" \
  "${grant[@]}" --valid-for 1h --no-revocation >"$work/contract.jwt" 2>/dev/null
"$bin/cada-parent" contract install "$work/contract.jwt" --socket "$work/agent.sock" >/dev/null
cat >"$work/policy.toml" <<EOF
[roots]
nitro = ["$work/state/sim-root.der"]
[token]
require_body_digest = true
[[audience]]
prefix = "http://127.0.0.1:$gate_port/"
measurements = [ { PCR0 = "$pcr0" } ]
owners = ["$owner_did"]
EOF
start gate "$bin/cada-gate" --listen "127.0.0.1:$gate_port" --upstream "http://127.0.0.1:$srv" \
  --policy "$work/policy.toml" --audit-dir "$work/audit" --audit-durability none --log-format text
start proxy "$bin/cada-parent" proxy --socket "$work/agent.sock" --listen "127.0.0.1:$proxy_port" \
  --upstream "http://127.0.0.1:$gate_port/mcp"

run() { "$node22" "$dir/node_modules/.bin/conformance" server --url "$1" >"$2" 2>&1 || true; }
t0=$(date +%s)
run "http://127.0.0.1:$srv/mcp" "$work/direct.txt"
run "http://127.0.0.1:$proxy_port/mcp" "$work/pair.txt"
echo "suite runs: $(( $(date +%s) - t0 )) s"
python3 - "$work/direct.txt" "$work/pair.txt" <<'EOF'
import re, sys
def results(path):
    out = {}
    for line in open(path, encoding="utf-8", errors="replace"):
        m = re.match(r"^([✓✗]) (\S+): (\d+) passed, (\d+) failed", line.strip())
        if m:
            out[m.group(2)] = m.group(1) == "✓"
    return out
direct, pair = results(sys.argv[1]), results(sys.argv[2])
if not direct:
    sys.exit("the suite printed no summary; see its output")
print(f"{'scenario':<34} {'direct':<8} proxy+gate")
regressions = []
for name, ok in direct.items():
    p = pair.get(name)
    print(f"{name:<34} {'pass' if ok else 'fail':<8} {'pass' if p else 'fail' if p is not None else 'missing'}")
    if ok and not p:
        regressions.append(name)
print(f"passed: {sum(direct.values())} of {len(direct)} directly, {sum(1 for v in pair.values() if v)} through the pair")
if regressions:
    sys.exit("passes directly but not through proxy + gate: " + ", ".join(regressions))
EOF
