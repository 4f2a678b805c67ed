// An independent resource server from another ecosystem: Node's oauth4webapi
// (validateJwtAccessToken with requireDPoP) checks CADA agents' requests — an STS access
// token (signature through the STS's JWKS, typ, iss, aud, exp, cnf.jkt) and its DPoP proof
// (signature, htm, htu, iat, ath) — with no CADA code.
//
// Input (argv[2]): a JSON file {issuer, jwks_uri, cases: [{name, method, url, token, dpop,
// audience, foreign_key?}]}. With foreign_key, the script replaces the proof by one it signs
// itself with a fresh key (an attacker holding a stolen token). Output: one JSON line per
// case, {name, ok, sub?, act?, scope?, error?}.
import { readFileSync } from 'node:fs';
import * as oauth from 'oauth4webapi';

const input = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const as = { issuer: input.issuer, jwks_uri: input.jwks_uri };

const b64u = (buf) => Buffer.from(buf).toString('base64url');

async function foreignProof(method, url, token) {
  const kp = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const jwk = await crypto.subtle.exportKey('jwk', kp.publicKey);
  const header = { typ: 'dpop+jwt', alg: 'ES256', jwk: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y } };
  const ath = b64u(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(token)));
  const payload = { htm: method, htu: url, iat: Math.floor(Date.now() / 1000), jti: crypto.randomUUID(), ath };
  const input = `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(payload))}`;
  const sig = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, kp.privateKey, new TextEncoder().encode(input));
  return `${input}.${b64u(sig)}`;
}

for (const c of input.cases) {
  const dpop = c.foreign_key ? await foreignProof(c.method, c.url, c.token) : c.dpop;
  const request = new Request(c.url, {
    method: c.method,
    headers: { authorization: `DPoP ${c.token}`, dpop },
  });
  try {
    const claims = await oauth.validateJwtAccessToken(as, request, c.audience, {
      requireDPoP: true,
      [oauth.clockTolerance]: 0, // strict: an expired token is refused at once (default 30 s)
      [oauth.allowInsecureRequests]: true, // the test STS listens on loopback http
    });
    console.log(JSON.stringify({ name: c.name, ok: true, sub: claims.sub, act: claims.act ?? null, scope: claims.scope }));
  } catch (e) {
    console.log(JSON.stringify({ name: c.name, ok: false, error: `${e.code ?? e.name}: ${e.message}` }));
  }
}
