"""The independent side of the COSE-HPKE interoperability test (python-cwt, which
implements draft-ietf-cose-hpke-23). Every value in and out is hex.

  cose_hpke.py seal X KID EXTERNAL_AAD PLAINTEXT       -> COSE_Encrypt0 (HPKE-4) to X
  cose_hpke.py open D X KID EXTERNAL_AAD MESSAGE       -> plaintext
  cose_hpke.py bundle OWNER_X OWNER_KID D X BUNDLE     -> plaintext of a CADA sealed bundle:
      the owner's COSE_Sign1 (Ed25519) verified, then the inner COSE_Encrypt0 opened with the
      bundle's context as external_aad

X/D: the raw X25519 public/private key; KID: the key id the message names (CADA: SHA-256
of X); OWNER_X: the owner's raw Ed25519 public key; OWNER_KID: its DID URL (UTF-8).
"""
import hashlib
import sys

import cbor2
from cwt import COSE, COSEAlgs, COSEHeaders, COSEKey


def hpke_key(x: bytes, d: bytes = b"", kid: bytes = b"") -> COSEKey:
    # COSE_Key: kty OKP (1), alg HPKE-4 (42), crv X25519 (4), x, d, kid.
    key = {1: 1, 3: COSEAlgs.HPKE_4, -1: 4, -2: x}
    if d:
        key[-4] = d
    if kid:
        key[2] = kid
    return COSEKey.new(key)


def main() -> None:
    cmd, args = sys.argv[1], [bytes.fromhex(a) for a in sys.argv[2:]]
    if cmd == "seal":
        x, kid, aad, pt = args
        out = COSE.new().encode(
            pt,
            hpke_key(x),
            protected={COSEHeaders.ALG: COSEAlgs.HPKE_4},
            unprotected={COSEHeaders.KID: kid},
            external_aad=aad,
        )
        print(out.hex())
    elif cmd == "open":
        d, x, kid, aad, msg = args
        print(COSE.new().decode(msg, hpke_key(x, d, kid), external_aad=aad).hex())
    elif cmd == "bundle":
        owner_x, owner_kid, d, x, bundle = args
        # COSE_Key: kty OKP (1), kid, alg EdDSA (-8), crv Ed25519 (6), x.
        owner = COSEKey.new({1: 1, 2: owner_kid, 3: -8, -1: 6, -2: owner_x})
        payload = COSE.new().decode(bundle, owner)
        inner = cbor2.loads(payload)
        kid = hashlib.sha256(x).digest()
        print(COSE.new().decode(inner["ct"], hpke_key(x, d, kid), external_aad=inner["ctx"]).hex())
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
