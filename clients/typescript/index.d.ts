/** Options of {@link cadaFetch}. */
export interface CadaFetchOptions {
  /** The `cada-parent serve` daemon's unix socket. */
  socket: string;
  /** Ask the daemon's STS for an access token for this RFC 8707 resource (daemon started with --sts). */
  resource?: string;
  /** Scopes for that token, space-separated. */
  scope?: string;
  /** The fetch that sends the signed requests (default: globalThis.fetch). */
  fetch?: typeof globalThis.fetch;
}

/** The JSON-RPC calls of an MCP body, as a proof's `cada.mcp` names them. */
export function bodyCalls(body: string | Uint8Array | undefined | null): Array<{ method: string; target?: string }>;

/**
 * A fetch that adds to each request a proof minted inside the enclave (through the daemon),
 * bound to the URL, the body (Content-Digest, cada.bd) and its JSON-RPC calls (cada.mcp);
 * it sends the evidence and contract on first contact and answers use_dpop_nonce and
 * use_attestation challenges itself.
 */
export function cadaFetch(options: CadaFetchOptions): typeof globalThis.fetch;
