#!/usr/bin/env bash
# End-to-end demo on the `sim` platform: starts the enclave signer and the agent signing
# daemon, mints a proof for one request, verifies it, and shows what gets rejected.
# Everything runs in a temporary directory and is stopped when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
echo "==> building (first run compiles the workspace; later runs are instant)"
# The test crate (cada-e2e) is left out: it turns on cada-enclave's `tpm` feature, which links
# the system TSS (libtss2-dev), and the demo needs nothing installed beyond Rust.
cargo build --workspace --exclude cada-e2e --bins --quiet
bin=$(pwd)/target/debug
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
wait_for() { for _ in $(seq 1 100); do [ -S "$1" ] && return 0; sleep 0.1; done; echo "timed out waiting for $1" >&2; exit 1; }
say() { printf '\n\033[1m%s\033[0m\n' "$*"; }

say "1. Start the signer (platform sim) — its key is generated inside and never leaves"
"$bin/cada-enclave" --platform sim --unix "$work/enclave.sock" --hybrid-port 5005 \
  --export-root "$work/sim-root.pem" --allow-url-prefix https://api.example.com >"$work/enclave.log" 2>&1 &
pids+=($!)
wait_for "$work/enclave.sock"
echo "   enclave listening on hybrid vsock $work/enclave.sock (port 5005); sim root exported"

say "2. Start the agent signing daemon (unix socket, mode 0600; loopback TCP behind a bearer token)"
(umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/token")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin/cada-parent" serve --enclave "unix:$work/enclave.sock:5005" --socket "$work/agent.sock" \
  --listen "127.0.0.1:$port" --auth-token-file "$work/token" >"$work/parent.log" 2>&1 &
pids+=($!)
wait_for "$work/agent.sock"
curl -s --unix-socket "$work/agent.sock" http://cada/v1/identity | python3 -m json.tool | sed 's/^/   /'

url=https://api.example.com/v1/orders
say "3. The agent asks for a proof for: POST $url (with an access token)"
"$bin/cada-parent" sign --socket "$work/agent.sock" --method POST --url "$url" \
  --access-token demo-token --ctx task=demo-42 --with-evidence >"$work/headers"
dpop=$(sed -n 's/^DPoP: //p' "$work/headers")
evidence=$(sed -n 's/^CADA-Evidence: //p' "$work/headers")
echo "   DPoP: ${dpop:0:60}…  (${#dpop} chars)"
echo "   CADA-Evidence: ${evidence:0:60}…  (${#evidence} chars)"
echo "   claims: $(echo "$dpop" | cut -d. -f2 | tr '_-' '/+' | base64 -d 2>/dev/null || true)"

verify() { "$bin/cada-verify" pop --method "$1" --url "$2" --access-token demo-token --evidence "$evidence" "${@:3}" | sed 's/^/   /' || true; }

say "4. The resource server's policy: trust the sim root and this enclave image for api.example.com/v1"
pcr0=$(curl -s --unix-socket "$work/agent.sock" http://cada/v1/identity | python3 -c 'import json,sys; print(json.load(sys.stdin)["measurements"]["PCR0"])')
cat >"$work/policy.toml" <<EOF
[roots]
nitro = ["sim-root.pem"]

[[audience]]
prefix = "https://api.example.com/v1"
measurements = [ { PCR0 = "$pcr0" } ]
EOF
"$bin/cada-verify" policy check "$work/policy.toml" >"$work/policy-check.txt"
head -1 "$work/policy-check.txt" | sed 's/^/   /'

say "5. The resource server verifies the proof under that policy"
verify POST "$url" --dpop "$dpop" --policy "$work/policy.toml"

say "6. The same proof under a policy that trusts only AWS's pinned root: rejected"
sed '/^\[roots\]/,/^$/d' "$work/policy.toml" >"$work/aws-only.toml"
verify POST "$url" --dpop "$dpop" --policy "$work/aws-only.toml"

say "7. The same proof presented twice to one verifier: the second is a replay"
verify POST "$url" --dpop "$dpop" --dpop "$dpop" --policy "$work/policy.toml"

say "8. The proof presented for another URL: rejected"
verify POST https://api.example.com/v1/admin --dpop "$dpop" --policy "$work/policy.toml"

say "9. The proof presented 60 s later: expired (proofs live at most 30 s)"
later=$(date -u -d '+60 seconds' +%Y-%m-%dT%H:%M:%SZ)
verify POST "$url" --dpop "$dpop" --policy "$work/policy.toml" --at "$later"

say "10. Which rule decided, rule by rule (cada-verify policy explain)"
"$bin/cada-verify" policy explain --policy "$work/policy.toml" --method POST \
  --url https://api.example.com/v1/admin --access-token demo-token --dpop "$dpop" \
  --evidence "$evidence" | sed 's/^/   /' || true

say "11. A verifier whose policy names no audience refuses to start (it would trust any image)"
"$bin/cada-verify" pop --method POST --url "$url" --dpop "$dpop" --evidence "$evidence" \
  --trust-root "$work/sim-root.pem" 2>&1 | sed 's/^/   /' || true

say "12. The enclave refuses what the owner did not delegate: another host, a look-alike host, a userinfo trick"
for bad in https://evil.example/steal https://api.example.com.evil.net/steal https://api.example.com@evil.net/steal; do
  "$bin/cada-parent" sign --socket "$work/agent.sock" --method GET --url "$bad" 2>&1 | sed 's/^/   /' || true
done

say "13. Over loopback TCP the daemon wants its bearer token"
body='{"method":"GET","url":"https://api.example.com/v1/orders"}'
echo "   without it: $(curl -s -H 'Content-Type: application/json' -d "$body" "http://127.0.0.1:$port/v1/pop")"
echo "   with it:    $(curl -s -H 'Content-Type: application/json' -H "Authorization: Bearer $(cat "$work/token")" \
  -d "$body" "http://127.0.0.1:$port/v1/pop" | cut -c1-70)…"

say "14. The owner: a key and its DID; a lock that makes this enclave the owner's (once)"
owner_dir="$work/owner"
owner_did=$("$bin/cada-owner" keygen --out "$owner_dir" 2>/dev/null | tail -n 1)
okey="$owner_dir/owner-key.json"
enclave_did=$(curl -s --unix-socket "$work/agent.sock" http://cada/v1/identity | python3 -c 'import json,sys; print(json.load(sys.stdin)["did"])')
echo "   owner:   $owner_did"
echo "   enclave: $enclave_did"
"$bin/cada-owner" lock --key "$okey" --enclave "$enclave_did" >"$work/lock.jwt" 2>/dev/null
"$bin/cada-parent" owner lock "$work/lock.jwt" --socket "$work/agent.sock" \
  | python3 -c 'import json,sys; a=json.load(sys.stdin); print("   locked to", a["owner"], "- new evidence", a["evidence"][:40] + "…")'
echo "   locked, with no contract yet:"
"$bin/cada-parent" sign --socket "$work/agent.sock" --method POST --url "$url" 2>&1 | sed 's/^/   /' || true

say "15. The owner grants a contract: POST under api.example.com/v1 for 1 h, revocable (status list entry 0)"
list_url=https://owner.example/status/1
"$bin/cada-owner" status-list new --key "$okey" --url "$list_url" >"$work/status.jwt" 2>/dev/null
"$bin/cada-owner" grant --key "$okey" --subject "$enclave_did" --audience https://api.example.com/v1 \
  --method POST --valid-for 1h --status-list "$list_url" --status-index 0 >"$work/contract.jwt" 2>/dev/null
"$bin/cada-parent" contract install "$work/contract.jwt" --status-list "$work/status.jwt" \
  --socket "$work/agent.sock" | sed 's/^/   /'

say "16. A proof under the contract names it (cada.dtc); the verifier checks it for an audience that names the owner"
"$bin/cada-parent" sign --socket "$work/agent.sock" --method POST --url "$url" \
  --access-token demo-token --with-evidence >"$work/headers2"
dpop=$(sed -n 's/^DPoP: //p' "$work/headers2")
evidence=$(sed -n 's/^CADA-Evidence: //p' "$work/headers2")
contract=$(sed -n 's/^CADA-Contract: //p' "$work/headers2")
echo "   claims: $(echo "$dpop" | cut -d. -f2 | tr '_-' '/+' | base64 -d 2>/dev/null || true)"
echo "   CADA-Contract: ${contract:0:60}…  (${#contract} chars)"
printf 'owners = ["%s"]\n[contracts]\nstatus_max_staleness_secs = 300\n' "$owner_did" >>"$work/policy.toml"
verify POST "$url" --dpop "$dpop" --policy "$work/policy.toml" --contract "$contract" \
  --status-list "@$work/status.jwt"

say "17. A request outside the contract: the enclave refuses to sign it"
"$bin/cada-parent" sign --socket "$work/agent.sock" --method DELETE --url "$url" 2>&1 | sed 's/^/   /' || true

say "18. The owner revokes the contract: the verifier refuses the next proof"
"$bin/cada-owner" revoke --key "$okey" --list "$work/status.jwt" --index 0 >"$work/status-revoked.jwt" 2>/dev/null
"$bin/cada-parent" sign --socket "$work/agent.sock" --method POST --url "$url" \
  --access-token demo-token >"$work/headers3"
dpop=$(sed -n 's/^DPoP: //p' "$work/headers3")
verify POST "$url" --dpop "$dpop" --policy "$work/policy.toml" --contract "@$work/contract.jwt" \
  --status-list "@$work/status-revoked.jwt"

say "19. ... and the enclave drops it when the revoking list reaches it"
"$bin/cada-parent" contract install "$work/contract.jwt" --status-list "$work/status-revoked.jwt" \
  --socket "$work/agent.sock" 2>&1 | sed 's/^/   /' || true
"$bin/cada-parent" sign --socket "$work/agent.sock" --method POST --url "$url" 2>&1 | sed 's/^/   /' || true

say "Done: enclave and daemon stopped."
