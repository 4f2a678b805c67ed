"""Independent check of cada-owner's output with PyJWT + cryptography (Python).

Usage: verify_with_pyjwt.py CONTRACT_JWT STATUS_JWT REVOKED_INDEX [FORGED_STATUS_JWT]

Resolves the issuer's did:key with its own base58btc/multicodec decoder, verifies the
contract and the status list with PyJWT, decodes the Bitstring Status List (multibase
base64url of GZIP) and checks the revoked bit. Prints one "OK ..." line per check and exits
non-zero on the first failure. Nothing here comes from the CADA code base.
"""
import base64
import gzip
import sys

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58decode(s: str) -> bytes:
    n = 0
    for ch in s:
        n = n * 58 + B58.index(ch)
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    pad = len(s) - len(s.lstrip("1"))
    return b"\x00" * pad + body


def key_from_did_key(did: str):
    assert did.startswith("did:key:z"), did
    raw = b58decode(did[len("did:key:z"):])
    if raw[:2] == b"\xed\x01":
        assert len(raw) == 34
        return "EdDSA", ed25519.Ed25519PublicKey.from_public_bytes(raw[2:])
    if raw[:2] == b"\x80\x24":
        assert len(raw) == 35
        return "ES256", ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw[2:])
    raise AssertionError("unknown multicodec %r" % raw[:2])


def b64url(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def verify(token: str, did: str):
    alg, key = key_from_did_key(did)
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "vc+jwt", header
    assert header["cty"] == "vc", header
    assert header["alg"] == alg, header
    assert header["kid"] == did + "#" + did[len("did:key:"):], header
    claims = jwt.decode(
        token,
        key=key,
        algorithms=[alg],
        issuer=did,
        options={"require": ["iss", "jti", "iat", "nbf"]},
    )
    assert claims["issuer"] == did
    assert "VerifiableCredential" in claims["type"]
    assert claims["@context"][0] == "https://www.w3.org/ns/credentials/v2"
    return alg, claims


def main() -> None:
    contract = open(sys.argv[1]).read().strip()
    status = open(sys.argv[2]).read().strip()
    index = int(sys.argv[3])
    issuer = jwt.decode(contract, options={"verify_signature": False})["iss"]

    alg, c = verify(contract, issuer)
    assert "CadaTrustContract" in c["type"]
    assert c["jti"] == c["id"]
    assert c["sub"] == c["credentialSubject"]["id"]
    entry = c["credentialStatus"]
    assert entry["type"] == "BitstringStatusListEntry"
    assert entry["statusPurpose"] == "revocation"
    assert int(entry["statusListIndex"]) == index
    print("OK contract signature valid %s issuer %s subject %s" % (alg, issuer, c["sub"]))

    # One changed character in the signature: PyJWT must refuse.
    head, body, sig = contract.split(".")
    flipped = ("A" if sig[5] != "A" else "B")
    try:
        jwt.decode(".".join([head, body, sig[:5] + flipped + sig[6:]]),
                   key=key_from_did_key(issuer)[1], algorithms=[alg], issuer=issuer)
        raise AssertionError("a tampered contract verified")
    except jwt.InvalidSignatureError:
        print("OK tampered contract refused: InvalidSignatureError")

    _, s = verify(status, issuer)
    assert "BitstringStatusListCredential" in s["type"]
    assert s["id"] == entry["statusListCredential"]
    subject = s["credentialSubject"]
    assert subject["type"] == "BitstringStatusList"
    assert subject["statusPurpose"] == "revocation"
    encoded = subject["encodedList"]
    assert encoded.startswith("u"), "multibase base64url starts with u"
    bits = gzip.decompress(b64url(encoded[1:]))
    assert len(bits) >= 16 * 1024, len(bits)
    revoked = [i for i in range(len(bits) * 8) if bits[i // 8] & (0x80 >> (i % 8))]
    assert revoked == [index], revoked
    print("OK status list signature valid, %d entries, revoked %s" % (len(bits) * 8, revoked))

    if len(sys.argv) > 4:
        forged = open(sys.argv[4]).read().strip()
        try:
            verify(forged, issuer)
            raise AssertionError("a status list by another key verified under the owner")
        except jwt.InvalidSignatureError:
            print("OK status list signed by another key refused: InvalidSignatureError")

    if len(sys.argv) > 5:
        # An owner lock: typ cada-lock+jwt, same owner key, subject = the enclave key.
        lock = open(sys.argv[5]).read().strip()
        header = jwt.get_unverified_header(lock)
        assert header["typ"] == "cada-lock+jwt", header
        assert "cty" not in header, header
        assert header["kid"] == issuer + "#" + issuer[len("did:key:"):], header
        claims = jwt.decode(lock, key=key_from_did_key(issuer)[1], algorithms=[alg],
                            issuer=issuer, options={"require": ["iss", "sub", "iat", "exp"]})
        assert claims["sub"].startswith("did:key:"), claims
        assert 0 < claims["exp"] - claims["iat"] <= 3600, claims
        print("OK lock signature valid, subject %s" % claims["sub"])

    print("OK pyjwt %s" % jwt.__version__)


if __name__ == "__main__":
    main()
