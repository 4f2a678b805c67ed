// Step-up test client (issue 23) on the official TypeScript SDK's 2026-07-28 client (npm
// @modelcontextprotocol/client, pinned by the test that installs it):
//
//   node stepup_client_modern.mjs URL TOOL JSONARGS APPROVER_URL approve|deny
//
// Pins protocol 2026-07-28, declares URL-mode elicitation and handles `elicitation/create`
// as a user would (the page's URL goes to the test's approver, POST {"url", "decision"},
// which answers once the owner decided; then "accept"). The SDK fulfils the proxy's
// input_required result through that handler and retries the call by itself. Prints one
// JSON document: {"protocol_version", "elicitations": [params], "first": CALL}, CALL =
// {ok: true, result} | {ok: false, error, code, data, type}. 60 s watchdog.
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";

const [url, tool, rawArgs, approver, decision] = process.argv.slice(2);
const args = JSON.parse(rawArgs);
const out = { elicitations: [] };
let printed = false;
const emit = () => {
  if (printed) return;
  printed = true;
  process.stdout.write(JSON.stringify(out) + "\n");
};
const watchdog = setTimeout(() => {
  out.watchdog = "timeout";
  emit();
  process.exit(0);
}, 60_000);

const failure = (e) => ({
  ok: false,
  error: String(e?.message ?? e),
  code: e?.code ?? null,
  data: e?.data ?? null,
  type: e?.constructor?.name ?? null,
});

const client = new Client(
  { name: "cada-stepup-node-modern-client", version: "1.0.0" },
  {
    capabilities: { elicitation: { url: {} } },
    versionNegotiation: { mode: { pin: "2026-07-28" } },
  },
);
client.setRequestHandler("elicitation/create", async (request) => {
  const params = request.params ?? {};
  out.elicitations.push(params);
  if (params.mode !== "url") return { action: "decline" };
  const res = await fetch(approver, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ url: params.url, decision }),
  });
  if (!res.ok) throw new Error(`approver answered ${res.status}`);
  return { action: "accept" };
});
const transport = new StreamableHTTPClientTransport(new URL(url));

try {
  await client.connect(transport);
  out.protocol_version = client.getNegotiatedProtocolVersion?.() ?? transport.protocolVersion ?? null;
  try {
    const r = await client.callTool({ name: tool, arguments: args });
    const text = (r.content ?? []).filter((c) => c.type === "text").map((c) => c.text).join("");
    out.first = r.isError ? { ok: false, error: text, isError: true } : { ok: true, result: text };
  } catch (e) {
    out.first = failure(e);
  }
} catch (e) {
  out.crash = failure(e);
}
clearTimeout(watchdog);
emit();
await client.close().catch(() => {});
process.exit(0);
