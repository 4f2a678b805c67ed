// @cada/fetch: a fetch for MCP clients that signs each request inside the CADA enclave.
// No dependencies: node:http (the daemon's unix socket) and node:crypto.
import { request as httpRequest } from "node:http";
import { createHash } from "node:crypto";

// The methods whose params name a target, and the member that names it (as cada-gate reads it).
const TARGETS = {
  "tools/call": "name",
  "prompts/get": "name",
  "resources/read": "uri",
  "resources/subscribe": "uri",
  "resources/unsubscribe": "uri",
};

function bytesOf(body) {
  if (body === undefined || body === null) return new Uint8Array();
  if (typeof body === "string") return new TextEncoder().encode(body);
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  throw new TypeError("@cada/fetch signs string or byte bodies only (the MCP SDK sends strings)");
}

/** The JSON-RPC calls of a body: [{method, target?}] in order, responses left out. */
export function bodyCalls(body) {
  const bytes = bytesOf(body);
  if (bytes.length === 0) return [];
  let doc;
  try {
    doc = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return [];
  }
  const out = [];
  for (const m of Array.isArray(doc) ? doc : [doc]) {
    if (!m || typeof m !== "object" || typeof m.method !== "string") continue;
    const call = { method: m.method };
    const member = TARGETS[m.method];
    if (member && m.params && typeof m.params[member] === "string") call.target = m.params[member];
    out.push(call);
  }
  return out;
}

function daemonPop(socket, ask) {
  const payload = JSON.stringify(ask);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        socketPath: socket,
        path: "/v1/pop",
        method: "POST",
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(payload) },
      },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let answer;
          if (res.statusCode !== 200) {
            let detail = text;
            try {
              const p = JSON.parse(text);
              detail = `${String(p.type || "").replace("urn:cada:problem:", "")}: ${p.detail}`;
            } catch {}
            reject(new Error(`the CADA daemon refused to sign (${res.statusCode}): ${detail}`));
            return;
          }
          try {
            answer = JSON.parse(text);
          } catch {
            reject(new Error("the CADA daemon's answer is not JSON"));
            return;
          }
          resolve(answer);
        });
      },
    );
    req.on("error", (e) => reject(new Error(`cannot reach the CADA daemon at ${socket}: ${e.message}`)));
    // A daemon that never answers must not hang the request.
    req.setTimeout(10_000, () => req.destroy(new Error("the CADA daemon did not answer within 10 s")));
    req.end(payload);
  });
}

/** The parameters of a `WWW-Authenticate: DPoP ...` challenge. */
function challenge(headers) {
  const out = {};
  const v = headers.get("www-authenticate");
  if (!v || !v.trim().startsWith("DPoP")) return out;
  const re = /([A-Za-z_]+)="([^"]*)"/g;
  let m;
  while ((m = re.exec(v)) !== null) out[m[1]] = m[2];
  return out;
}

export function cadaFetch(options) {
  const { socket, resource, scope } = options;
  const send = options.fetch ?? globalThis.fetch;
  const introduced = new Set();
  const nonces = new Map();
  return async function fetchWithCada(input, init = {}) {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const method = (init.method ?? (input instanceof Request ? input.method : "GET")).toUpperCase();
    // A Request's body, when the body is not in init.
    const bytes =
      init.body === undefined && input instanceof Request
        ? new Uint8Array(await input.arrayBuffer())
        : bytesOf(init.body);
    const sha = createHash("sha256").update(bytes).digest();
    const bd = sha.toString("base64url");
    const contentDigest = `sha-256=:${sha.toString("base64")}:`;
    const calls = bodyCalls(bytes);
    const htu = `${url.origin}${url.pathname}`;
    let force = false;
    let response;
    for (let attempt = 0; attempt < 3; attempt++) {
      const withEvidence = resource === undefined && (force || !introduced.has(url.origin));
      const ask = { method, url: htu, nonce: nonces.get(url.origin) ?? null, with_evidence: withEvidence, bd, mcp: calls };
      if (resource !== undefined) {
        ask.resource = resource;
        if (scope) ask.scope = scope;
      }
      const pop = await daemonPop(socket, ask);
      const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
      headers.set("DPoP", pop.dpop);
      headers.set("Content-Digest", contentDigest);
      for (const [key, name] of [["evidence", "CADA-Evidence"], ["contract", "CADA-Contract"], ["authorization", "Authorization"]]) {
        if (pop[key]) headers.set(name, pop[key]);
        else if (name !== "Authorization") headers.delete(name);
      }
      response = await send(url, { ...init, method, headers, body: bytes.length ? bytes : init.body });
      const nonce = response.headers.get("dpop-nonce");
      if (nonce) nonces.set(url.origin, nonce);
      if (response.ok && withEvidence) introduced.add(url.origin);
      if (response.status !== 401) return response;
      const c = challenge(response.headers);
      let retry = false;
      if (c.error === "use_dpop_nonce" && nonce) retry = true;
      else if (c.error === "use_attestation" || (c.error_description ?? "").includes("contract.required")) {
        force = true;
        retry = true;
      }
      if (!retry) return response;
      await response.arrayBuffer().catch(() => {});
    }
    return response;
  };
}
