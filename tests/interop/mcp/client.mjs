// MCP test client on the official TypeScript SDK (npm @modelcontextprotocol/sdk, pinned by the
// test that installs it), for the CADA interop tests: the same CLI and output as client.py.
//
//   node client.mjs URL [--list] [--call TOOL:JSONARGS]... [--cada-socket PATH]
//
// Prints one JSON document: {"initialize": {"ok", ...}, "tools": [...], "calls": [{tool, ok,
// result | error, code}]}. A refused call is recorded and the run goes on. --cada-socket signs
// every request with clients/typescript's cadaFetch (no proxy; CADA_FETCH names its index.js
// when this script is run from elsewhere). 30 s watchdog.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const args = process.argv.slice(2);
const url = args.shift();
const calls = [];
let list = false;
let socket = null;
while (args.length) {
  const a = args.shift();
  if (a === "--list") list = true;
  else if (a === "--call") {
    const spec = args.shift();
    const i = spec.indexOf(":");
    calls.push([spec.slice(0, i), JSON.parse(spec.slice(i + 1))]);
  } else if (a === "--cada-socket") socket = args.shift();
  else throw new Error(`unknown argument ${a}`);
}

const out = {};
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
}, 30_000);

const failure = (e) => ({ ok: false, error: String(e?.message ?? e), code: e?.code ?? null });

let fetchImpl;
if (socket) {
  // CADA_FETCH: clients/typescript/index.js (the test copies this script next to the SDK).
  const where = process.env.CADA_FETCH
    ? new URL(`file://${process.env.CADA_FETCH}`)
    : new URL("../../../clients/typescript/index.js", import.meta.url);
  const { cadaFetch } = await import(where);
  fetchImpl = cadaFetch({ socket });
}
const transport = new StreamableHTTPClientTransport(new URL(url), fetchImpl ? { fetch: fetchImpl } : {});
const client = new Client({ name: "cada-interop-node-client", version: "1.0.0" });
try {
  await client.connect(transport);
  out.initialize = { ok: true, server: client.getServerVersion()?.name ?? null };
} catch (e) {
  out.initialize = failure(e);
}
if (out.initialize.ok) {
  if (list) {
    try {
      out.tools = (await client.listTools()).tools.map((t) => t.name);
    } catch (e) {
      out.tools = null;
      out.list_error = failure(e);
    }
  }
  out.calls = [];
  for (const [tool, params] of calls) {
    try {
      const r = await client.callTool({ name: tool, arguments: params });
      const text = (r.content ?? []).filter((c) => c.type === "text").map((c) => c.text).join("");
      out.calls.push(r.isError ? { tool, ok: false, error: text } : { tool, ok: true, result: text });
    } catch (e) {
      out.calls.push({ tool, ...failure(e) });
    }
  }
  await client.close().catch(() => {});
}
clearTimeout(watchdog);
emit();
process.exit(0);
