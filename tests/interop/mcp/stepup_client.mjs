// Step-up test client (issue 23) on the official TypeScript SDK (npm @modelcontextprotocol/sdk,
// pinned by the test that installs it; 2025-11-25 is the newest version it speaks):
//
//   node stepup_client.mjs URL TOOL JSONARGS APPROVER_URL approve|deny
//
// Declares URL-mode elicitation, calls TOOL through `cada-parent proxy`, expects the SDK's
// UrlElicitationRequiredError (-32042), hands the page's URL to the test's approver (POST
// {"url", "decision"}; it answers once the owner decided), then calls again. Prints one JSON
// document: {"protocol_version", "elicitations": [{mode, elicitationId, url, message}],
// "first": CALL, "final": CALL}, CALL = {ok: true, result} | {ok: false, error, code, data,
// type}. 60 s watchdog.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ElicitRequestSchema, UrlElicitationRequiredError } from "@modelcontextprotocol/sdk/types.js";

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
  { name: "cada-stepup-node-client", version: "1.0.0" },
  { capabilities: { elicitation: { url: {} } } },
);
// The proxy never sends elicitation/create; declining keeps the capability honest.
client.setRequestHandler(ElicitRequestSchema, async () => ({ action: "decline" }));
const transport = new StreamableHTTPClientTransport(new URL(url));

const call = async () => {
  try {
    const r = await client.callTool({ name: tool, arguments: args });
    const text = (r.content ?? []).filter((c) => c.type === "text").map((c) => c.text).join("");
    return r.isError ? { ok: false, error: text, isError: true } : { ok: true, result: text };
  } catch (e) {
    return { ...failure(e), elicitations: e instanceof UrlElicitationRequiredError ? e.elicitations : null };
  }
};

try {
  await client.connect(transport);
  out.protocol_version = transport.protocolVersion ?? null;
  const first = await call();
  out.first = first;
  if (!first.ok && first.elicitations) {
    out.elicitations = first.elicitations;
    const res = await fetch(approver, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ url: first.elicitations[0].url, decision }),
    });
    if (!res.ok) throw new Error(`approver answered ${res.status}`);
    out.final = await call();
  } else {
    out.final = first;
  }
} catch (e) {
  out.crash = failure(e);
}
clearTimeout(watchdog);
emit();
await client.close().catch(() => {});
process.exit(0);
