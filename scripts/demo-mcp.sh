#!/usr/bin/env bash
# MCP demo on the `sim` platform: a real MCP server (the official Python SDK) behind
# cada-gate, an unmodified MCP client (the same SDK) through cada-parent proxy; one allowed
# tool call, one refused by the owner's contract, and the gate's audit trail.
# Installs the pinned SDK into target/mcp-python (once); everything else runs in a
# temporary directory and is stopped when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export CARGO_TERM_COLOR=never
echo "==> building, and installing the MCP Python SDK (pinned) once"
cargo build --workspace --bins --quiet
bash tests/interop/mcp/install.sh "$root/target/mcp-python"
py=$root/target/mcp-python/bin/python
bin=$root/target/debug
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Starts a program in the background and waits for its line starting with `ready`.
start() {
  local log=$1; shift
  "$@" >"$work/$log.out" 2>"$work/$log.log" &
  pids+=($!)
  for _ in $(seq 1 300); do grep -q '^ready' "$work/$log.out" 2>/dev/null && return 0; sleep 0.1; done
  echo "$log did not start; its log:" >&2; cat "$work/$log.log" >&2; exit 1
}

say "1. The enclave signer (sim) and the agent's signing daemon"
start enclave "$bin/cada-enclave" --platform sim --unix "$work/enclave.sock" --hybrid-port 5005 --state-dir "$work/state"
start parent "$bin/cada-parent" serve --enclave "unix:$work/enclave.sock:5005" --socket "$work/agent.sock"
identity=$(curl -s --unix-socket "$work/agent.sock" http://cada/v1/identity)
did=$(echo "$identity" | python3 -c 'import json,sys; print(json.load(sys.stdin)["did"])')
pcr0=$(echo "$identity" | python3 -c 'import json,sys; print(json.load(sys.stdin)["measurements"]["PCR0"])')
echo "   agent: $did"

gate_port=$(free_port); server_port=$(free_port); proxy_port=$(free_port)
gate="http://127.0.0.1:$gate_port"
say "2. The owner locks the enclave and grants: tools echo and add at $gate (not delete_all)"
owner_did=$("$bin/cada-owner" keygen --out "$work/owner" 2>/dev/null | tail -1)
"$bin/cada-owner" lock --key "$work/owner/owner-key.json" --enclave "$did" >"$work/lock.jwt" 2>/dev/null
"$bin/cada-parent" owner lock "$work/lock.jwt" --socket "$work/agent.sock" >/dev/null
"$bin/cada-owner" grant --key "$work/owner/owner-key.json" --subject "$did" --audience "$gate/" \
  --method POST --method GET --method DELETE --tool echo --tool add --valid-for 1h --no-revocation \
  >"$work/contract.jwt" 2>/dev/null
"$bin/cada-parent" contract install "$work/contract.jwt" --socket "$work/agent.sock" >/dev/null
echo "   owner: $owner_did"

say "3. An MCP server (Python SDK) behind cada-gate, whose policy trusts this image and owner"
cat >"$work/policy.toml" <<EOF
[roots]
nitro = ["$work/state/sim-root.der"]

[token]
require_body_digest = true     # every proof names the body it came with

[[audience]]
prefix = "$gate/"
measurements = [ { PCR0 = "$pcr0" } ]
owners = ["$owner_did"]
EOF
start server "$py" tests/interop/mcp/server.py --port "$server_port"
start gate "$bin/cada-gate" --listen "127.0.0.1:$gate_port" --upstream "http://127.0.0.1:$server_port" \
  --policy "$work/policy.toml" --audit-dir "$work/audit" --log-format text
echo "   server http://127.0.0.1:$server_port/mcp, gate $gate/mcp"
echo "   metadata: $(curl -s "$gate/.well-known/oauth-protected-resource/mcp")"

say "4. The agent's side: cada-parent proxy, and an unmodified MCP client pointed at it"
start proxy "$bin/cada-parent" proxy --socket "$work/agent.sock" --listen "127.0.0.1:$proxy_port" \
  --upstream "$gate/mcp"
echo "   client → http://127.0.0.1:$proxy_port/mcp → $gate/mcp → server"
"$py" tests/interop/mcp/client.py "http://127.0.0.1:$proxy_port/mcp" --list \
  --call 'echo:{"text":"hello from an attested agent"}' --call 'delete_all:{}' >"$work/client.json"
python3 - "$work/client.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"   initialize: ok={r['initialize']['ok']}, tools listed: {', '.join(r.get('tools') or [])}")
for c in r["calls"]:
    print(f"   tools/call {c['tool']}: " + (f"ok → {c['result']!r}" if c["ok"] else f"REFUSED → {c['error']}"))
EOF

echo "   (delete_all never left the host: the enclave refused to sign for it)"

say "5. A request without a proof, straight to the gate"
curl -s -D "$work/h" -o "$work/b" -X POST "$gate/mcp" -H 'content-type: application/json' \
  -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}' || true
echo "   $(head -1 "$work/h" | tr -d '\r')"
echo "   $(grep -i '^www-authenticate' "$work/h" | tr -d '\r')"
echo "   $(cat "$work/b")"

say "6. The gate's audit trail (hash-chained; cada-verify audit verify checks it)"
"$bin/cada-verify" audit verify "$work/audit" | sed 's/^/   /'
cat "$work"/audit/*.jsonl | python3 -c "$(cat <<'EOF'
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    calls = ", ".join(c["method"] + (" " + c["target"] if c.get("target") else "") for c in r.get("rpc", []))
    if r["kind"] == "audit":
        continue  # the checkpoint at the head of each file
    if r["kind"] == "gate.upstream":
        extra = "upstream {} in {} us".format(r["upstream_status"], r["latency_us"])
    else:
        extra = r.get("reason") or "agent " + (r.get("did") or "?")[:24] + "..."
    print("   #{:<3} {:<14} {:<9} {:<6} {:<28} {}".format(r["seq"], r["kind"], r.get("decision") or "-", r.get("method") or "-", calls, extra))
EOF
)"
