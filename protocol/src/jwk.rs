//! Public keys as JWK (RFC 7517), their RFC 7638 thumbprints and `did:key` identifiers.
use serde::{Deserialize, Serialize};

use crate::{b64, ProtocolError};

/// A JWS signature algorithm CADA signs and verifies with, by its JOSE `alg` name.
///
/// Ed25519 has two names: `EdDSA` (RFC 8037, what today's DPoP libraries send and accept)
/// and the fully specified `Ed25519` (RFC 9864). Both mean the same signature over the same
/// key type; verifiers accept either, and a signer emits the one it was configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SigAlg {
    /// Ed25519 (RFC 8037), under the polymorphic name `EdDSA`.
    EdDSA,
    /// Ed25519 under its fully specified name (RFC 9864).
    Ed25519,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
}

impl SigAlg {
    /// Every algorithm, by its JOSE name.
    pub const ALL: [SigAlg; 4] = [SigAlg::EdDSA, SigAlg::Ed25519, SigAlg::ES256, SigAlg::ES384];

    /// The JOSE `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            SigAlg::EdDSA => "EdDSA",
            SigAlg::Ed25519 => "Ed25519",
            SigAlg::ES256 => "ES256",
            SigAlg::ES384 => "ES384",
        }
    }

    /// Parses a JOSE `alg` name (exact, case-sensitive as RFC 7515 §4.1.1 says); anything
    /// else (including `none`) is refused.
    pub fn parse(s: &str) -> Result<Self, ProtocolError> {
        SigAlg::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                ProtocolError::invalid(
                    "alg",
                    format!(
                        "unsupported algorithm {:?} (supported: EdDSA, Ed25519, ES256, ES384)",
                        s.chars().take(32).collect::<String>()
                    ),
                )
            })
    }

    /// The JWK curve (`crv`) of the keys this algorithm signs with.
    pub fn curve(self) -> &'static str {
        match self {
            SigAlg::EdDSA | SigAlg::Ed25519 => "Ed25519",
            SigAlg::ES256 => "P-256",
            SigAlg::ES384 => "P-384",
        }
    }

    /// Whether this is Ed25519 under either name.
    pub fn is_ed25519(self) -> bool {
        matches!(self, SigAlg::EdDSA | SigAlg::Ed25519)
    }

    /// Length of one EC coordinate, or of the Ed25519 key.
    fn coord_len(self) -> usize {
        match self {
            SigAlg::EdDSA | SigAlg::Ed25519 | SigAlg::ES256 => 32,
            SigAlg::ES384 => 48,
        }
    }
}

impl std::str::FromStr for SigAlg {
    type Err = ProtocolError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SigAlg::parse(s)
    }
}

/// A public JWK of one of the [`SigAlg`] key types. Private members are never part of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwk {
    /// `OKP` or `EC`.
    pub kty: String,
    /// `Ed25519`, `P-256` or `P-384`.
    pub crv: String,
    /// base64url x coordinate (or the Ed25519 key).
    pub x: String,
    /// base64url y coordinate (EC only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

impl Jwk {
    /// The JWK of an Ed25519 public key.
    pub fn ed25519(public_key: &[u8; 32]) -> Self {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: b64::encode(public_key),
            y: None,
        }
    }

    /// The JWK of an uncompressed SEC1 EC point (`04 ‖ x ‖ y`) for ES256 or ES384.
    pub fn ec(alg: SigAlg, uncompressed: &[u8]) -> Result<Self, ProtocolError> {
        let n = alg.coord_len();
        let crv = match alg {
            SigAlg::ES256 => "P-256",
            SigAlg::ES384 => "P-384",
            SigAlg::EdDSA | SigAlg::Ed25519 => {
                return Err(ProtocolError::invalid("jwk", "Ed25519 is not an EC key"))
            }
        };
        if uncompressed.len() != 1 + 2 * n || uncompressed[0] != 0x04 {
            return Err(ProtocolError::invalid(
                "jwk",
                "not an uncompressed SEC1 point",
            ));
        }
        Ok(Jwk {
            kty: "EC".into(),
            crv: crv.into(),
            x: b64::encode(&uncompressed[1..1 + n]),
            y: Some(b64::encode(&uncompressed[1 + n..])),
        })
    }

    /// The default algorithm name for this key (`EdDSA` for Ed25519 keys). A JWS may also
    /// name an Ed25519 key's algorithm `Ed25519`: use [`Jwk::check_alg`] to check a header.
    pub fn alg(&self) -> Result<SigAlg, ProtocolError> {
        match (self.kty.as_str(), self.crv.as_str(), self.y.is_some()) {
            ("OKP", "Ed25519", false) => Ok(SigAlg::EdDSA),
            ("EC", "P-256", true) => Ok(SigAlg::ES256),
            ("EC", "P-384", true) => Ok(SigAlg::ES384),
            (kty, crv, _) => Err(ProtocolError::invalid(
                "jwk",
                format!("unsupported key type {kty:?} / curve {crv:?}"),
            )),
        }
    }

    /// Checks that `alg` signs with this key's type and curve (RFC 7515 §4.1.1, RFC 9449
    /// §4.3 check 5): `EdDSA`/`Ed25519` only with OKP Ed25519 keys, `ES256` only with P-256,
    /// `ES384` only with P-384.
    pub fn check_alg(&self, alg: SigAlg) -> Result<(), ProtocolError> {
        if self.alg()?.curve() == alg.curve() {
            Ok(())
        } else {
            Err(ProtocolError::AlgKeyMismatch {
                alg: alg.as_str().into(),
                kty: self.kty.chars().take(16).collect(),
                crv: self.crv.chars().take(16).collect(),
            })
        }
    }

    /// The raw public key as signature libraries take it: 32 bytes for Ed25519, an
    /// uncompressed SEC1 point for EC keys. Checks every coordinate length.
    pub fn public_key_bytes(&self) -> Result<Vec<u8>, ProtocolError> {
        let alg = self.alg()?;
        let n = alg.coord_len();
        let x = b64::decode("jwk.x", &self.x, n)?;
        if x.len() != n {
            return Err(ProtocolError::invalid(
                "jwk",
                format!("x must be {n} bytes"),
            ));
        }
        match (alg, &self.y) {
            (SigAlg::EdDSA | SigAlg::Ed25519, _) => Ok(x),
            (_, Some(y)) => {
                let y = b64::decode("jwk.y", y, n)?;
                if y.len() != n {
                    return Err(ProtocolError::invalid(
                        "jwk",
                        format!("y must be {n} bytes"),
                    ));
                }
                let mut out = Vec::with_capacity(1 + 2 * n);
                out.push(0x04);
                out.extend_from_slice(&x);
                out.extend_from_slice(&y);
                Ok(out)
            }
            (_, None) => Err(ProtocolError::invalid("jwk", "EC key without y")),
        }
    }

    /// The RFC 7638 JWK SHA-256 thumbprint, base64url (the `jkt` of RFC 9449).
    pub fn thumbprint(&self) -> String {
        // Required members only, in lexicographic order, no whitespace (RFC 7638 §3.2).
        // The member values are base64url or fixed names, so they need no JSON escaping,
        // but serde_json escapes anyway for safety.
        let q = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
        let canonical = match &self.y {
            None => format!(
                r#"{{"crv":{},"kty":{},"x":{}}}"#,
                q(&self.crv),
                q(&self.kty),
                q(&self.x)
            ),
            Some(y) => format!(
                r#"{{"crv":{},"kty":{},"x":{},"y":{}}}"#,
                q(&self.crv),
                q(&self.kty),
                q(&self.x),
                q(y)
            ),
        };
        b64::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            canonical.as_bytes(),
        ))
    }

    /// The `did:key` identifier of this key (multicodec + base58btc multibase; EC keys compressed).
    pub fn did_key(&self) -> Result<String, ProtocolError> {
        let alg = self.alg()?;
        let raw = self.public_key_bytes()?;
        let mut bytes: Vec<u8> = match alg {
            SigAlg::EdDSA | SigAlg::Ed25519 => vec![0xed, 0x01],
            SigAlg::ES256 => vec![0x80, 0x24],
            SigAlg::ES384 => vec![0x81, 0x24],
        };
        match alg {
            SigAlg::EdDSA | SigAlg::Ed25519 => bytes.extend_from_slice(&raw),
            SigAlg::ES256 | SigAlg::ES384 => {
                let n = alg.coord_len();
                let y_odd = raw[2 * n] & 1 == 1;
                bytes.push(if y_odd { 0x03 } else { 0x02 });
                bytes.extend_from_slice(&raw[1..1 + n]);
            }
        }
        Ok(format!("did:key:z{}", bs58::encode(bytes).into_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 8037 §A.3: the thumbprint of the Ed25519 example key.
        let jwk = Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
            y: None,
        };
        assert_eq!(
            jwk.thumbprint(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
        assert_eq!(jwk.alg().unwrap(), SigAlg::EdDSA);
    }

    #[test]
    fn did_key_ed25519_known_vector() {
        // A did:key from the did:key method spec's examples: base58btc of 0xed 0x01 ‖ key.
        let did = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp";
        let raw = bs58::decode(&did["did:key:z".len()..]).into_vec().unwrap();
        assert_eq!(&raw[..2], &[0xed, 0x01]);
        let jwk = Jwk::ed25519(&raw[2..].try_into().unwrap());
        assert_eq!(jwk.did_key().unwrap(), did);
    }

    #[test]
    fn did_key_p256_uses_compressed_point() {
        let mut point = vec![4u8];
        point.extend_from_slice(&[1u8; 32]);
        point.extend_from_slice(&[3u8; 32]); // odd y
        let did = Jwk::ec(SigAlg::ES256, &point).unwrap().did_key().unwrap();
        assert!(did.starts_with("did:key:zDn"), "{did}");
        let raw = bs58::decode(&did["did:key:z".len()..]).into_vec().unwrap();
        assert_eq!(&raw[..3], &[0x80, 0x24, 0x03]);
        assert_eq!(raw.len(), 2 + 33);
    }

    #[test]
    fn rejects_bad_keys() {
        let mut jwk = Jwk::ed25519(&[7u8; 32]);
        jwk.x = b64::encode([1u8; 31]);
        assert!(jwk.public_key_bytes().is_err());
        jwk.crv = "X25519".into();
        assert!(jwk.alg().is_err());
        assert!(SigAlg::parse("none").is_err());
        assert!(SigAlg::parse("eddsa").is_err());
        assert!(SigAlg::parse("ed25519").is_err());
        assert!(Jwk::ec(SigAlg::ES256, &[4u8; 64]).is_err());
        assert!(Jwk::ec(SigAlg::Ed25519, &[4u8; 65]).is_err());
    }

    #[test]
    fn both_ed25519_names_and_alg_key_agreement() {
        for a in SigAlg::ALL {
            assert_eq!(SigAlg::parse(a.as_str()).unwrap(), a);
        }
        let ed = Jwk::ed25519(&[7u8; 32]);
        let mut point = vec![4u8];
        point.extend_from_slice(&[1u8; 32]);
        point.extend_from_slice(&[3u8; 32]);
        let p256 = Jwk::ec(SigAlg::ES256, &point).unwrap();
        let mut point = vec![4u8];
        point.extend_from_slice(&[1u8; 96]);
        let p384 = Jwk::ec(SigAlg::ES384, &point).unwrap();
        let ok = [
            (&ed, SigAlg::EdDSA),
            (&ed, SigAlg::Ed25519),
            (&p256, SigAlg::ES256),
            (&p384, SigAlg::ES384),
        ];
        for k in [&ed, &p256, &p384] {
            for a in SigAlg::ALL {
                let expected = ok.iter().any(|(k2, a2)| *k2 == k && *a2 == a);
                assert_eq!(k.check_alg(a).is_ok(), expected, "{a:?} with {}", k.crv);
                if !expected {
                    assert_eq!(k.check_alg(a).unwrap_err().code(), "jws.alg_key_mismatch");
                }
            }
        }
        // Both names give the same did:key and the same thumbprint: one key.
        assert_eq!(ed.alg().unwrap(), SigAlg::EdDSA);
    }
}
