// A real OAuth 2.0 authorization server (npm `oidc-provider`, pinned by the test) and a
// protected resource server that checks bearer tokens through the provider's RFC 7662
// introspection endpoint, both over HTTPS with the test's throwaway CA on loopback.
//
//   node server.mjs CONFIG.json
//
// CONFIG: {cert, key, ca (PEM file paths), clients: [{client_id, client_secret,
// grant_types, token_endpoint_auth_method, scope}], access_token_ttl, refresh_for:
// [client_id...]}. Node must run with NODE_EXTRA_CA_CERTS=<ca> so that the resource server
// trusts the provider.
//
// Prints one line `ready {json}` with the issuer, the token endpoint, the resource origin
// and, for each client in refresh_for, a refresh token that the provider's own RefreshToken
// model issued for a consented grant (what the authorization-code flow would have issued
// after a browser login; no browser here). The provider's /token code then handles every
// refresh: rotation (rotateRefreshToken: true) and reuse detection (a rotated token used
// again is invalid_grant and revokes the grant).
//
// Resource server: GET /api/whoami with `Authorization: Bearer <token>` answers 200
// {active, client_id, sub, scope, auth_header_scheme} when the provider says the token is
// active, else 401 with WWW-Authenticate. GET /stats answers {token_requests, token_errors,
// by_grant: {...}}: how often the token endpoint issued or refused, so that a test can see
// caching and single-flight from the server's side.
import { readFileSync } from 'node:fs';
import https from 'node:https';
import Provider from 'oidc-provider';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const tls = { cert: readFileSync(cfg.cert), key: readFileSync(cfg.key) };

// Listen first on ephemeral ports so that the issuer names the real one.
const asServer = https.createServer(tls);
const rsServer = https.createServer(tls);
await new Promise((r) => asServer.listen(0, '127.0.0.1', r));
await new Promise((r) => rsServer.listen(0, '127.0.0.1', r));
const issuer = `https://127.0.0.1:${asServer.address().port}`;
const resource = `https://127.0.0.1:${rsServer.address().port}`;

const RS_CLIENT = { client_id: 'resource-server', client_secret: cfg.rs_secret };
const clients = cfg.clients.map((c) => ({
  redirect_uris: c.grant_types.includes('refresh_token') ? ['https://127.0.0.1/cb'] : [],
  response_types: c.grant_types.includes('refresh_token') ? ['code'] : [],
  ...c,
}));
clients.push({ ...RS_CLIENT, grant_types: [], redirect_uris: [], response_types: [] });

const provider = new Provider(issuer, {
  clients,
  features: {
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      // Only the resource server may introspect.
      allowedPolicy: async (ctx, client) => client.clientId === RS_CLIENT.client_id,
    },
    devInteractions: { enabled: false },
  },
  scopes: ['openid', 'offline_access', 'api:read'],
  rotateRefreshToken: true,
  ttl: {
    AccessToken: cfg.access_token_ttl,
    ClientCredentials: cfg.access_token_ttl,
    RefreshToken: 86400,
    Grant: 86400,
    Session: 86400,
    Interaction: 600,
  },
  findAccount: async (ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  cookies: { keys: ['cada-oauth-interop-cookie-key'] },
});

const stats = { token_requests: 0, token_errors: 0, by_grant: {} };
provider.on('grant.success', (ctx) => {
  stats.token_requests += 1;
  const g = ctx.oidc.params.grant_type;
  stats.by_grant[g] = (stats.by_grant[g] || 0) + 1;
});
provider.on('grant.error', (ctx, err) => {
  stats.token_errors += 1;
  stats.last_error = err.error;
});
asServer.on('request', provider.callback());

// Refresh tokens for consented grants, issued by the provider's own models.
const refresh = {};
for (const clientId of cfg.refresh_for) {
  const client = await provider.Client.find(clientId);
  const grant = new provider.Grant({ accountId: 'alice', clientId });
  grant.addOIDCScope('openid offline_access api:read');
  const grantId = await grant.save();
  const rt = new provider.RefreshToken({
    accountId: 'alice',
    client,
    grantId,
    gty: 'authorization_code',
    scope: 'openid offline_access api:read',
  });
  refresh[clientId] = await rt.save();
}

async function introspect(token) {
  const basic = Buffer.from(`${RS_CLIENT.client_id}:${RS_CLIENT.client_secret}`).toString('base64');
  const res = await fetch(`${issuer}/token/introspection`, {
    method: 'POST',
    headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token }),
  });
  if (res.status !== 200) throw new Error(`introspection answered ${res.status}`);
  return res.json();
}

rsServer.on('request', async (req, res) => {
  const send = (status, body, headers = {}) => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };
  try {
    if (req.url === '/stats') return send(200, stats);
    if (!req.url.startsWith('/api/')) return send(404, { error: 'not_found' });
    const auth = req.headers.authorization || '';
    const m = /^(\S+) (\S+)$/.exec(auth);
    if (!m || m[1].toLowerCase() !== 'bearer') {
      return send(401, { error: 'invalid_request' }, { 'www-authenticate': 'Bearer' });
    }
    const info = await introspect(m[2]);
    if (!info.active) {
      return send(401, { error: 'invalid_token' }, { 'www-authenticate': 'Bearer error="invalid_token"' });
    }
    return send(200, {
      active: true,
      client_id: info.client_id,
      sub: info.sub ?? null,
      scope: info.scope ?? null,
      auth_header_scheme: m[1],
      path: req.url,
    });
  } catch (e) {
    return send(500, { error: String(e) });
  }
});

console.log(`ready ${JSON.stringify({ issuer, token_endpoint: `${issuer}/token`, resource, refresh })}`);
