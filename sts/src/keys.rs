//! The STS's token-signing keys: ES256 (P-256), the algorithm every JOSE library and
//! resource server supports. One key signs; older keys stay published in the JWKS (and
//! accepted by introspection) while tokens they signed may still live — rotation without
//! a gap.
//!
//! A key file is a PEM PKCS#8 P-256 private key (`-----BEGIN PRIVATE KEY-----`), as
//! `cada-sts keygen` or `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`
//! write it. The `kid` is the key's RFC 7638 thumbprint.
use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::Engine;
use cada_protocol::jwk::{Jwk, SigAlg};
use cada_protocol::{b64, jws};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::StsError;

/// Largest key file read.
const MAX_KEY_FILE_LEN: usize = 16 * 1024;

/// One ES256 signing key.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    public: Vec<u8>,
    kid: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints private material.
        write!(f, "SigningKey(ES256, {})", self.kid)
    }
}

impl SigningKey {
    /// A fresh key and its PKCS#8 PEM (wiped when dropped).
    pub fn generate() -> Result<(Self, Zeroizing<String>), StsError> {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| StsError::Key("key generation failed".into()))?;
        let key = Self::from_pkcs8(doc.as_ref())?;
        Ok((key, to_pem(doc.as_ref())))
    }

    /// Reads a PEM PKCS#8 P-256 private key.
    pub fn from_pem_file(path: &Path) -> Result<Self, StsError> {
        let bad = |why: String| StsError::Key(format!("{}: {why}", path.display()));
        let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
        if meta.len() > MAX_KEY_FILE_LEN as u64 {
            return Err(bad(format!("larger than {MAX_KEY_FILE_LEN} bytes")));
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?);
        let der = from_pem(&text).map_err(bad)?;
        Self::from_pkcs8(&der).map_err(|e| bad(e.to_string()))
    }

    /// Reads a PKCS#8 P-256 private key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, StsError> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).map_err(|_| {
                StsError::Key(
                    "not a PKCS#8 P-256 private key (token keys are ES256: cada-sts keygen)".into(),
                )
            })?;
        let public = pair.public_key().as_ref().to_vec();
        let jwk = Jwk::ec(SigAlg::ES256, &public).map_err(|e| StsError::Key(e.to_string()))?;
        Ok(SigningKey {
            kid: jwk.thumbprint(),
            pair,
            public,
            rng: SystemRandom::new(),
        })
    }

    /// The key id: its RFC 7638 thumbprint.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWKS entry.
    pub fn public_jwk(&self) -> PublicJwk {
        // The point came from aws-lc-rs as an uncompressed P-256 point.
        let (x, y) = self.public[1..].split_at(32);
        PublicJwk {
            kty: "EC",
            crv: "P-256",
            x: b64::encode(x),
            y: b64::encode(y),
            kid: self.kid.clone(),
            alg: "ES256",
            use_: "sig",
        }
    }

    /// A compact JWS of `claims` with header `{alg: ES256, typ, kid}`.
    pub fn sign_jwt<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, StsError> {
        let header = serde_json::json!({"alg": "ES256", "typ": typ, "kid": self.kid});
        let header = serde_json::to_vec(&header).map_err(|e| StsError::Key(e.to_string()))?;
        let payload = serde_json::to_vec(claims).map_err(|e| StsError::Key(e.to_string()))?;
        let input = jws::signing_input(&header, &payload);
        let sig = self
            .pair
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| StsError::Key("signing failed".into()))?;
        Ok(format!("{input}.{}", b64::encode(sig.as_ref())))
    }

    /// Whether `sig` is this key's signature over `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.public)
            .verify(msg, sig)
            .is_ok()
    }
}

/// A public key as published in the JWKS.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PublicJwk {
    kty: &'static str,
    crv: &'static str,
    x: String,
    y: String,
    kid: String,
    alg: &'static str,
    #[serde(rename = "use")]
    use_: &'static str,
}

/// The active key and the previous ones still published.
#[derive(Debug)]
pub struct KeySet {
    active: SigningKey,
    previous: Vec<SigningKey>,
}

impl KeySet {
    /// `active` signs; `previous` are published and verified only.
    pub fn new(active: SigningKey, previous: Vec<SigningKey>) -> Self {
        KeySet { active, previous }
    }

    /// The key that signs new tokens.
    pub fn active(&self) -> &SigningKey {
        &self.active
    }

    /// The key with this `kid`, active or previous.
    pub fn by_kid(&self, kid: &str) -> Option<&SigningKey> {
        std::iter::once(&self.active)
            .chain(&self.previous)
            .find(|k| k.kid == kid)
    }

    /// `{"keys": [...]}`, active first.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<PublicJwk> = std::iter::once(&self.active)
            .chain(&self.previous)
            .map(SigningKey::public_jwk)
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

fn to_pem(der: &[u8]) -> Zeroizing<String> {
    let b = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    let mut out = Zeroizing::new(String::from("-----BEGIN PRIVATE KEY-----\n"));
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

fn from_pem(text: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let begin = "-----BEGIN PRIVATE KEY-----";
    let end = "-----END PRIVATE KEY-----";
    let start = text
        .find(begin)
        .ok_or("no -----BEGIN PRIVATE KEY----- block (PKCS#8 PEM expected)")?;
    let body = &text[start + begin.len()..];
    let stop = body.find(end).ok_or("no -----END PRIVATE KEY----- line")?;
    let b64: Zeroizing<String> = Zeroizing::new(
        body[..stop]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect(),
    );
    base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map(Zeroizing::new)
        .map_err(|e| format!("bad base64 in the PEM block: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_pem_and_sign_verifiable_jwts() {
        let (k, pem) = SigningKey::generate().unwrap();
        let dir = std::env::temp_dir().join(format!("cada-sts-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("k.pem");
        std::fs::write(&f, pem.as_bytes()).unwrap();
        let back = SigningKey::from_pem_file(&f).unwrap();
        assert_eq!(back.kid(), k.kid());
        let jwt = back
            .sign_jwt("at+jwt", &serde_json::json!({"a": 1}))
            .unwrap();
        let (input, sig) = jwt.rsplit_once('.').unwrap();
        assert!(k.verify(input.as_bytes(), &b64::decode("sig", sig, 128).unwrap()));
        assert!(!k.verify(b"other", &b64::decode("sig", sig, 128).unwrap()));
        // Not a key: refused with the file named.
        std::fs::write(
            &f,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = SigningKey::from_pem_file(&f).unwrap_err().to_string();
        assert!(e.contains("k.pem") && e.contains("P-256"), "{e}");
        std::fs::write(&f, "hello").unwrap();
        assert!(SigningKey::from_pem_file(&f)
            .unwrap_err()
            .to_string()
            .contains("BEGIN PRIVATE KEY"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_jwks_lists_the_active_key_first_then_previous_ones() {
        let (a, _) = SigningKey::generate().unwrap();
        let (b, _) = SigningKey::generate().unwrap();
        let (ka, kb) = (a.kid().to_owned(), b.kid().to_owned());
        let set = KeySet::new(a, vec![b]);
        let jwks = set.jwks();
        assert_eq!(jwks["keys"][0]["kid"], ka.as_str());
        assert_eq!(jwks["keys"][1]["kid"], kb.as_str());
        assert_eq!(jwks["keys"][0]["alg"], "ES256");
        assert_eq!(jwks["keys"][0]["use"], "sig");
        assert!(set.by_kid(&kb).is_some());
        assert!(set.by_kid("nope").is_none());
    }
}
