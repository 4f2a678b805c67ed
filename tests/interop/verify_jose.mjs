// A stock JOSE library (panva's `jose`, installed and pinned by the test) verifies CADA STS
// access tokens as any RFC 9068 resource server would, with no CADA code: the signature with
// a key of the STS's JWKS (fetched by the library from jwks_uri), the header's typ at+jwt
// (RFC 9068 §2.1), alg ES256, iss, aud, exp/iat, and the claims RFC 9068 §2.2 requires.
//
// Input (argv[2]): a JSON file {issuer, jwks_uri, cases: [{name, token, audience}]}.
// Output: one JSON line per case, {name, ok, header?, payload?, error?}: the verified
// protected header and claims as the library returns them, or its error code and message.
import { readFileSync } from 'node:fs';
import { createRemoteJWKSet, jwtVerify } from 'jose';

const input = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const jwks = createRemoteJWKSet(new URL(input.jwks_uri));

for (const c of input.cases) {
  try {
    const { payload, protectedHeader } = await jwtVerify(c.token, jwks, {
      issuer: input.issuer,
      audience: c.audience,
      typ: 'at+jwt',
      algorithms: ['ES256'],
      requiredClaims: ['iss', 'exp', 'aud', 'sub', 'client_id', 'iat', 'jti'],
      clockTolerance: 0,
    });
    console.log(JSON.stringify({ name: c.name, ok: true, header: protectedHeader, payload }));
  } catch (e) {
    console.log(JSON.stringify({ name: c.name, ok: false, error: `${e.code ?? e.name}: ${e.message}` }));
  }
}
