//! Public keys and the two DID methods CADA uses for owners and agents.
//!
//! * `did:key` (W3C CCG did:key method): the multibase (`z` = base58btc) of a multicodec
//!   varint prefix and the public key — `0xed` ed25519-pub (32 bytes), `0x1200` p256-pub
//!   and `0x1201` p384-pub (compressed SEC1 points). Encoded *and* decoded here; the DID
//!   URL of its key is `did:key:z…#z…` (the fragment repeats the multibase value).
//! * `did:web`: a DID document published at an HTTPS URL. [`did_web_url`] gives that URL,
//!   [`PublicKey::did_web_document`] writes the document; publishing it is the owner's job
//!   and fetching it is the verifier's (this crate does no I/O).
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ParsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED};
use cada_protocol::jwk::{Jwk, SigAlg};
use serde_json::json;

use crate::error::clip;
use crate::ContractError;

/// Longest DID accepted.
pub const MAX_DID_LEN: usize = 512;

/// The multicodec varint prefixes of the key types `did:key` carries here.
const ED25519_PUB: [u8; 2] = [0xed, 0x01];
const P256_PUB: [u8; 2] = [0x80, 0x24];
const P384_PUB: [u8; 2] = [0x81, 0x24];

/// A public signature key: Ed25519, P-256 or P-384.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// `EdDSA`, `ES256` or `ES384`.
    alg: SigAlg,
    /// 32 bytes for Ed25519; the uncompressed SEC1 point for EC keys.
    raw: Vec<u8>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({}, {})", self.alg.as_str(), self.multibase())
    }
}

fn did_err(msg: impl Into<String>) -> ContractError {
    ContractError::Did(msg.into())
}

impl PublicKey {
    /// An Ed25519 key from its 32 bytes.
    pub fn ed25519(raw: [u8; 32]) -> Self {
        PublicKey {
            alg: SigAlg::EdDSA,
            raw: raw.to_vec(),
        }
    }

    /// An EC key (`ES256` or `ES384`) from a SEC1 point, compressed or not; the point is
    /// checked to be on the curve.
    pub fn ec(alg: SigAlg, sec1: &[u8]) -> Result<Self, ContractError> {
        let (verify_alg, n) = match alg {
            SigAlg::ES256 => (&ECDSA_P256_SHA256_FIXED, 32),
            SigAlg::ES384 => (&ECDSA_P384_SHA384_FIXED, 48),
            SigAlg::EdDSA | SigAlg::Ed25519 => {
                return Err(did_err("an Ed25519 key is not an EC point"))
            }
        };
        if sec1.len() != 1 + n && sec1.len() != 1 + 2 * n {
            return Err(did_err(format!(
                "a {} point is {} (compressed) or {} bytes, not {}",
                alg.curve(),
                1 + n,
                1 + 2 * n,
                sec1.len()
            )));
        }
        let parsed = ParsedPublicKey::new(verify_alg, sec1)
            .map_err(|_| did_err(format!("not a point on {}", alg.curve())))?;
        // The SubjectPublicKeyInfo aws-lc writes ends with the uncompressed point.
        let spki = parsed
            .as_der()
            .map_err(|_| did_err("cannot encode the EC point"))?;
        let spki = spki.as_ref();
        let raw = spki
            .get(spki.len().saturating_sub(1 + 2 * n)..)
            .filter(|p| p.len() == 1 + 2 * n && p[0] == 0x04)
            .ok_or_else(|| did_err("cannot decompress the EC point"))?;
        if raw[1..1 + n] != sec1[1..1 + n] {
            return Err(did_err("cannot decompress the EC point"));
        }
        Ok(PublicKey {
            alg,
            raw: raw.to_vec(),
        })
    }

    /// The key of a public JWK (OKP Ed25519, EC P-256 or P-384).
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, ContractError> {
        let alg = jwk.alg().map_err(|e| did_err(e.to_string()))?;
        let raw = jwk.public_key_bytes().map_err(|e| did_err(e.to_string()))?;
        match alg {
            SigAlg::EdDSA | SigAlg::Ed25519 => {
                let raw: [u8; 32] = raw
                    .try_into()
                    .map_err(|_| did_err("an Ed25519 key is 32 bytes"))?;
                Ok(PublicKey::ed25519(raw))
            }
            SigAlg::ES256 | SigAlg::ES384 => PublicKey::ec(alg, &raw),
        }
    }

    /// The JOSE algorithm family of the key (`EdDSA`, `ES256` or `ES384`).
    pub fn alg(&self) -> SigAlg {
        self.alg
    }

    /// 32 bytes for Ed25519; the uncompressed SEC1 point for EC keys.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The public JWK.
    pub fn jwk(&self) -> Jwk {
        match self.alg {
            SigAlg::EdDSA | SigAlg::Ed25519 => {
                let mut k = [0u8; 32];
                k.copy_from_slice(&self.raw);
                Jwk::ed25519(&k)
            }
            // The point was checked on construction; its length fits the algorithm.
            SigAlg::ES256 | SigAlg::ES384 => Jwk::ec(self.alg, &self.raw).unwrap_or(Jwk {
                kty: "EC".into(),
                crv: self.alg.curve().into(),
                x: String::new(),
                y: None,
            }),
        }
    }

    /// The multicodec bytes `did:key` encodes (EC points compressed).
    fn multicodec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + 49);
        match self.alg {
            SigAlg::EdDSA | SigAlg::Ed25519 => {
                out.extend_from_slice(&ED25519_PUB);
                out.extend_from_slice(&self.raw);
            }
            SigAlg::ES256 | SigAlg::ES384 => {
                out.extend_from_slice(if self.alg == SigAlg::ES256 {
                    &P256_PUB
                } else {
                    &P384_PUB
                });
                let n = (self.raw.len() - 1) / 2;
                let y_odd = self.raw[2 * n] & 1 == 1;
                out.push(if y_odd { 0x03 } else { 0x02 });
                out.extend_from_slice(&self.raw[1..1 + n]);
            }
        }
        out
    }

    /// The multibase (`z…`, base58btc) of the key: the method-specific id of its did:key
    /// and the `publicKeyMultibase` of a Multikey verification method.
    pub fn multibase(&self) -> String {
        format!("z{}", bs58::encode(self.multicodec()).into_string())
    }

    /// The `did:key` of this key.
    pub fn did_key(&self) -> String {
        format!("did:key:{}", self.multibase())
    }

    /// The DID URL of this key inside its did:key document (`did:key:z…#z…`).
    pub fn did_key_url(&self) -> String {
        let m = self.multibase();
        format!("did:key:{m}#{m}")
    }

    /// Decodes a `publicKeyMultibase` value (`z` + base58btc multicodec key).
    pub fn from_multibase(m: &str) -> Result<Self, ContractError> {
        if m.len() > MAX_DID_LEN {
            return Err(did_err("multibase key longer than the limit"));
        }
        let Some(b58) = m.strip_prefix('z') else {
            return Err(did_err(format!(
                "{:?} is not base58btc multibase (it must start with z)",
                clip(m)
            )));
        };
        let bytes = bs58::decode(b58)
            .into_vec()
            .map_err(|_| did_err(format!("{:?} is not base58btc", clip(m))))?;
        let key = if let Some(k) = bytes.strip_prefix(&ED25519_PUB) {
            let k: [u8; 32] = k
                .try_into()
                .map_err(|_| did_err("an ed25519-pub key is 32 bytes"))?;
            PublicKey::ed25519(k)
        } else if let Some(p) = bytes.strip_prefix(&P256_PUB) {
            if p.len() != 33 {
                return Err(did_err("a p256-pub key is a 33-byte compressed point"));
            }
            PublicKey::ec(SigAlg::ES256, p)?
        } else if let Some(p) = bytes.strip_prefix(&P384_PUB) {
            if p.len() != 49 {
                return Err(did_err("a p384-pub key is a 49-byte compressed point"));
            }
            PublicKey::ec(SigAlg::ES384, p)?
        } else {
            return Err(did_err(
                "unsupported key type (did:key here carries ed25519-pub 0xed, p256-pub 0x1200 or p384-pub 0x1201)",
            ));
        };
        // One key, one spelling: refuse anything that does not re-encode to itself.
        if key.multibase() != m {
            return Err(did_err("the multibase key is not in canonical form"));
        }
        Ok(key)
    }

    /// Decodes a `did:key` (a DID URL with a fragment is refused: pass the DID).
    pub fn from_did_key(did: &str) -> Result<Self, ContractError> {
        if did.len() > MAX_DID_LEN {
            return Err(did_err("DID longer than the limit"));
        }
        let Some(m) = did.strip_prefix("did:key:") else {
            return Err(did_err(format!("{:?} is not a did:key", clip(did))));
        };
        PublicKey::from_multibase(m)
    }

    /// The DID document of this key's did:key (as the did:key method resolves it), with a
    /// Multikey verification method usable for authentication and assertions.
    pub fn did_key_document(&self) -> serde_json::Value {
        let did = self.did_key();
        document(&did, &self.did_key_url(), self)
    }

    /// A did:web DID document for `did` (`did:web:…`) naming this key, to publish at
    /// [`did_web_url`]. The key's DID URL is `did#<multibase>`.
    pub fn did_web_document(&self, did: &str) -> Result<serde_json::Value, ContractError> {
        did_web_url(did)?;
        Ok(document(did, &format!("{did}#{}", self.multibase()), self))
    }
}

fn document(did: &str, vm_id: &str, key: &PublicKey) -> serde_json::Value {
    json!({
        "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
        "id": did,
        "verificationMethod": [{
            "id": vm_id,
            "type": "Multikey",
            "controller": did,
            "publicKeyMultibase": key.multibase(),
        }],
        "authentication": [vm_id],
        "assertionMethod": [vm_id],
    })
}

/// The HTTPS URL a `did:web` DID document is published at (did:web method §3.2):
/// `did:web:example.com` → `https://example.com/.well-known/did.json`,
/// `did:web:example.com%3A8443:owners:alice` → `https://example.com:8443/owners/alice/did.json`.
pub fn did_web_url(did: &str) -> Result<String, ContractError> {
    if did.len() > MAX_DID_LEN {
        return Err(did_err("DID longer than the limit"));
    }
    let Some(rest) = did.strip_prefix("did:web:") else {
        return Err(did_err(format!("{:?} is not a did:web", clip(did))));
    };
    let mut parts = rest.split(':');
    let host = parts.next().unwrap_or("");
    let host = match host.split_once("%3A") {
        Some((h, port)) => {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return Err(did_err("a did:web port is %3A followed by digits"));
            }
            check_host(h)?;
            format!("{h}:{port}")
        }
        None => {
            check_host(host)?;
            host.to_owned()
        }
    };
    let path: Vec<&str> = parts.collect();
    for seg in &path {
        if seg.is_empty()
            || !seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
            || *seg == "."
            || *seg == ".."
        {
            return Err(did_err(format!(
                "did:web path segment {:?} must be letters, digits, - . _ ~",
                clip(seg)
            )));
        }
    }
    Ok(if path.is_empty() {
        format!("https://{host}/.well-known/did.json")
    } else {
        format!("https://{host}/{}/did.json", path.join("/"))
    })
}

fn check_host(h: &str) -> Result<(), ContractError> {
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(did_err(format!(
            "did:web host {:?} must be a lower-case DNS name",
            clip(h)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    #[test]
    fn did_key_ed25519_spec_vector_round_trips() {
        // From the did:key method specification's test vectors.
        let did = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp";
        let k = PublicKey::from_did_key(did).unwrap();
        assert_eq!(k.alg(), SigAlg::EdDSA);
        assert_eq!(k.did_key(), did);
        // Same spelling as the protocol crate's encoder.
        assert_eq!(k.jwk().did_key().unwrap(), did);
    }

    #[test]
    fn did_key_p256_spec_vector_round_trips() {
        // From the did:key method specification's P-256 test vectors.
        let did = "did:key:zDnaerDaTF5BXEavCrfRZEk316dpbLsfPDZ3WJ5hRTPFU2169";
        let k = PublicKey::from_did_key(did).unwrap();
        assert_eq!(k.alg(), SigAlg::ES256);
        assert_eq!(k.raw().len(), 65);
        assert_eq!(k.did_key(), did);
        assert_eq!(k.jwk().did_key().unwrap(), did);
    }

    #[test]
    fn p256_decompression_matches_the_real_point() {
        for _ in 0..8 {
            let kp = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
            let point = kp.public_key().as_ref().to_vec();
            let mut compressed = vec![if point[64] & 1 == 1 { 3 } else { 2 }];
            compressed.extend_from_slice(&point[1..33]);
            let k = PublicKey::ec(SigAlg::ES256, &compressed).unwrap();
            assert_eq!(k.raw(), point.as_slice());
            let back = PublicKey::from_did_key(&k.did_key()).unwrap();
            assert_eq!(back, k);
        }
    }

    #[test]
    fn bad_did_keys_are_refused() {
        for bad in [
            "did:key:",
            "did:key:6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
            "did:key:z0OIl",
            "did:web:example.com",
            "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp#x",
        ] {
            assert_eq!(
                PublicKey::from_did_key(bad).unwrap_err().code(),
                "contract.did",
                "{bad}"
            );
        }
        // ed25519-pub prefix with a 31-byte key; p256 prefix with an off-curve point.
        let mut short = ED25519_PUB.to_vec();
        short.extend_from_slice(&[1u8; 31]);
        let did = format!("did:key:z{}", bs58::encode(short).into_string());
        assert!(PublicKey::from_did_key(&did).is_err());
        let mut off = P256_PUB.to_vec();
        off.push(2);
        off.extend_from_slice(&[0xffu8; 32]);
        let did = format!("did:key:z{}", bs58::encode(off).into_string());
        assert!(PublicKey::from_did_key(&did).is_err());
        assert!(PublicKey::from_did_key(&format!("did:key:z{}", "1".repeat(600))).is_err());
    }

    #[test]
    fn did_web_urls_and_documents() {
        assert_eq!(
            did_web_url("did:web:example.com").unwrap(),
            "https://example.com/.well-known/did.json"
        );
        assert_eq!(
            did_web_url("did:web:example.com%3A8443:owners:alice").unwrap(),
            "https://example.com:8443/owners/alice/did.json"
        );
        for bad in [
            "did:web:",
            "did:web:Example.com",
            "did:web:exa mple.com",
            "did:web:example.com:..",
            "did:web:example.com%3Ax",
            "did:web:user@example.com",
            "did:key:z6Mk",
        ] {
            assert!(did_web_url(bad).is_err(), "{bad}");
        }
        let k = PublicKey::from_did_key("did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp")
            .unwrap();
        let doc = k.did_web_document("did:web:example.com").unwrap();
        assert_eq!(doc["id"], "did:web:example.com");
        let vm = &doc["verificationMethod"][0];
        assert_eq!(vm["id"], format!("did:web:example.com#{}", k.multibase()));
        assert_eq!(doc["assertionMethod"][0], vm["id"]);
        let kd = k.did_key_document();
        assert_eq!(kd["verificationMethod"][0]["id"], k.did_key_url());
    }
}
