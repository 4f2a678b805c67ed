//! The owner's signing key: Ed25519 (default) or ES256 (P-256), its DID and its key file.
//!
//! Private key material lives in aws-lc key pairs, whose free routine cleanses the memory;
//! the PKCS#8 bytes this type also keeps (to write the key file) are held in
//! [`Zeroizing`] buffers and wiped on drop, and so is every key file text it produces.
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use cada_protocol::b64;
use cada_protocol::jwk::SigAlg;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::did::{did_web_url, PublicKey};
use crate::ContractError;

/// Largest key file accepted.
pub const MAX_KEY_FILE_LEN: usize = 8 * 1024;

/// The `type` member of a key file.
const KEY_FILE_TYPE: &str = "cada-owner-key";

/// The owner key algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OwnerAlg {
    /// Ed25519, JOSE `EdDSA` (the default).
    Ed25519,
    /// ECDSA P-256 with SHA-256, JOSE `ES256`.
    Es256,
}

impl OwnerAlg {
    /// The JOSE `alg` the owner signs with.
    pub fn jose(self) -> SigAlg {
        match self {
            OwnerAlg::Ed25519 => SigAlg::EdDSA,
            OwnerAlg::Es256 => SigAlg::ES256,
        }
    }
}

enum Inner {
    Ed25519(Ed25519KeyPair),
    Es256(EcdsaKeyPair),
}

/// An owner's private key with its DID (`did:key` of the key, or a `did:web` the owner
/// publishes) and the DID URL (`kid`) that its signatures name.
pub struct OwnerKey {
    alg: OwnerAlg,
    inner: Inner,
    pkcs8: Zeroizing<Vec<u8>>,
    public: PublicKey,
    did: String,
    kid: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for OwnerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints private material.
        write!(f, "OwnerKey({:?}, {})", self.alg, self.kid)
    }
}

fn key_err(msg: impl Into<String>) -> ContractError {
    ContractError::Key(msg.into())
}

/// The key file: JSON, written with mode 0600 by `cada-owner keygen`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    alg: String,
    did: String,
    kid: String,
    /// base64url of the PKCS#8 document.
    pkcs8: String,
}

impl OwnerKey {
    /// Generates a fresh key. Its DID is its `did:key` until [`OwnerKey::use_did_web`].
    pub fn generate(alg: OwnerAlg) -> Result<Self, ContractError> {
        let rng = SystemRandom::new();
        let doc = match alg {
            OwnerAlg::Ed25519 => Ed25519KeyPair::generate_pkcs8(&rng),
            OwnerAlg::Es256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng),
        }
        .map_err(|_| key_err("key generation failed"))?;
        Self::from_pkcs8(doc.as_ref())
    }

    /// Reads a PKCS#8 private key (Ed25519, v1 or v2; or P-256). Its DID is its `did:key`.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, ContractError> {
        if der.len() > MAX_KEY_FILE_LEN {
            return Err(ContractError::TooLarge {
                what: "PKCS#8 key",
                len: der.len(),
                max: MAX_KEY_FILE_LEN,
            });
        }
        let (alg, inner, public) = if let Ok(kp) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            let pk: [u8; 32] = kp
                .public_key()
                .as_ref()
                .try_into()
                .map_err(|_| key_err("Ed25519 public key length"))?;
            (
                OwnerAlg::Ed25519,
                Inner::Ed25519(kp),
                PublicKey::ed25519(pk),
            )
        } else if let Ok(kp) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der) {
            let public = PublicKey::ec(SigAlg::ES256, kp.public_key().as_ref())?;
            (OwnerAlg::Es256, Inner::Es256(kp), public)
        } else {
            return Err(key_err(
                "not a PKCS#8 Ed25519 or P-256 private key (owner keys are Ed25519 or ES256)",
            ));
        };
        let did = public.did_key();
        let kid = public.did_key_url();
        Ok(OwnerKey {
            alg,
            inner,
            pkcs8: Zeroizing::new(der.to_vec()),
            public,
            did,
            kid,
            rng: SystemRandom::new(),
        })
    }

    /// The PKCS#8 document of the private key (wiped when dropped).
    pub fn to_pkcs8(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.pkcs8.to_vec())
    }

    /// Makes `did` (a `did:web`) the owner's DID: contracts then name `did` as issuer and
    /// `did#<multibase key>` as `kid`. Publish [`OwnerKey::did_document`] at
    /// [`did_web_url`]`(did)`.
    pub fn use_did_web(&mut self, did: &str) -> Result<(), ContractError> {
        did_web_url(did)?;
        self.did = did.to_owned();
        self.kid = format!("{did}#{}", self.public.multibase());
        Ok(())
    }

    /// The algorithm.
    pub fn alg(&self) -> OwnerAlg {
        self.alg
    }

    /// The owner's DID (the issuer of everything this key signs).
    pub fn did(&self) -> &str {
        &self.did
    }

    /// The DID URL of the key (the JWS `kid`).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The owner's DID document: did:key resolution, or the did:web document to publish.
    pub fn did_document(&self) -> serde_json::Value {
        if self.did.starts_with("did:web:") {
            // `use_did_web` checked the DID.
            self.public
                .did_web_document(&self.did)
                .unwrap_or_else(|_| self.public.did_key_document())
        } else {
            self.public.did_key_document()
        }
    }

    /// Signs `msg` as it is, giving the signature bytes (Ed25519, or ECDSA as fixed
    /// `r ‖ s` in its low-s form, the form JWS and COSE both use). For formats other than this crate's JWTs,
    /// e.g. the COSE_Sign1 of a sealed secret (`cada-secrets`): the caller builds the exact
    /// bytes its format signs.
    pub fn sign_bytes(&self, msg: &[u8]) -> Result<Vec<u8>, ContractError> {
        self.sign(msg)
    }

    /// Signs `msg`, giving the JWS signature bytes (ECDSA as fixed `r ‖ s`, low-s: the
    /// one spelling [`crate::Contract::verify`] accepts).
    pub(crate) fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, ContractError> {
        match &self.inner {
            Inner::Ed25519(kp) => Ok(kp.sign(msg).as_ref().to_vec()),
            Inner::Es256(kp) => {
                let mut sig = kp
                    .sign(&self.rng, msg)
                    .map(|s| s.as_ref().to_vec())
                    .map_err(|_| key_err("ECDSA signing failed"))?;
                // The one spelling verifiers accept (docs/contracts.md, "The digest").
                cada_protocol::jws::ecdsa_low_s(SigAlg::ES256, &mut sig);
                Ok(sig)
            }
        }
    }

    /// The key file text (JSON holding the DID, the `kid` and the PKCS#8 key); wiped when
    /// dropped. Store it with mode 0600.
    pub fn to_key_file(&self) -> Zeroizing<String> {
        let mut file = KeyFile {
            kind: KEY_FILE_TYPE.into(),
            alg: self.alg.jose().as_str().into(),
            did: self.did.clone(),
            kid: self.kid.clone(),
            pkcs8: b64::encode(self.pkcs8.as_slice()),
        };
        // Serializing a struct of strings cannot fail.
        let text = Zeroizing::new(serde_json::to_string_pretty(&file).unwrap_or_default());
        file.pkcs8.zeroize();
        text
    }

    /// Reads a key file written by [`OwnerKey::to_key_file`].
    pub fn from_key_file(text: &str) -> Result<Self, ContractError> {
        if text.len() > MAX_KEY_FILE_LEN {
            return Err(ContractError::TooLarge {
                what: "owner key file",
                len: text.len(),
                max: MAX_KEY_FILE_LEN,
            });
        }
        let file: KeyFile = serde_json::from_str(text)
            .map_err(|e| key_err(format!("not a cada-owner key file: {e}")))?;
        let KeyFile {
            kind,
            alg,
            did,
            kid,
            pkcs8,
        } = file;
        let pkcs8 = Zeroizing::new(pkcs8);
        if kind != KEY_FILE_TYPE {
            return Err(key_err(format!("type must be {KEY_FILE_TYPE:?}")));
        }
        let der = Zeroizing::new(
            b64::decode("pkcs8", &pkcs8, MAX_KEY_FILE_LEN).map_err(|e| key_err(e.to_string()))?,
        );
        let mut key = OwnerKey::from_pkcs8(&der)?;
        if alg != key.alg.jose().as_str() {
            return Err(key_err(format!(
                "the file says alg {alg:?} but holds a {} key",
                key.alg.jose().as_str()
            )));
        }
        if did.starts_with("did:web:") {
            key.use_did_web(&did)?;
        } else if did != key.did {
            return Err(key_err("the file's did:key is not the did:key of its key"));
        }
        if kid != key.kid {
            return Err(key_err("the file's kid is not the DID URL of its key"));
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_for_both_algorithms() {
        for alg in [OwnerAlg::Ed25519, OwnerAlg::Es256] {
            let mut k = OwnerKey::generate(alg).unwrap();
            assert!(k.did().starts_with(match alg {
                OwnerAlg::Ed25519 => "did:key:z6Mk",
                OwnerAlg::Es256 => "did:key:zDn",
            }));
            assert_eq!(k.kid(), k.public_key().did_key_url());
            let back = OwnerKey::from_key_file(&k.to_key_file()).unwrap();
            assert_eq!(back.kid(), k.kid());
            assert_eq!(back.public_key(), k.public_key());
            k.use_did_web("did:web:owner.example").unwrap();
            let back = OwnerKey::from_key_file(&k.to_key_file()).unwrap();
            assert_eq!(back.did(), "did:web:owner.example");
            assert!(back.kid().starts_with("did:web:owner.example#z"));
            assert!(!format!("{back:?}").contains(&b64::encode(k.to_pkcs8().as_slice())));
        }
    }

    #[test]
    fn bad_key_files_are_refused() {
        let k = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let text = k.to_key_file().to_string();
        let other = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        for bad in [
            text.replace("cada-owner-key", "x"),
            text.replace("\"EdDSA\"", "\"ES256\""),
            text.replace(k.did(), other.did()),
            "{}".to_owned(),
            "x".repeat(MAX_KEY_FILE_LEN + 1),
        ] {
            assert!(OwnerKey::from_key_file(&bad).is_err());
        }
        assert_eq!(
            OwnerKey::from_pkcs8(b"junk").unwrap_err().code(),
            "contract.key"
        );
    }
}
