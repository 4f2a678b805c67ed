//! The owners a verifier or an enclave trusts, pinned by DID and key.
use std::collections::BTreeMap;

use cada_protocol::jwk::Jwk;
use serde::Deserialize;

use crate::did::{did_web_url, PublicKey, MAX_DID_LEN};
use crate::error::clip;
use crate::ContractError;

/// Largest DID document accepted.
pub const MAX_DID_DOCUMENT_LEN: usize = 64 * 1024;
/// Most keys one set of trusted owners holds.
pub const MAX_TRUSTED_KEYS: usize = 1024;

/// Trusted owners: each an owner DID and the keys (by DID URL, the JWS `kid`) that may sign
/// for it. A contract or status list verifies only under one of these keys, and only when
/// its issuer is the DID that key belongs to.
#[derive(Debug, Clone, Default)]
pub struct TrustedOwners {
    /// kid → (owner DID, key).
    keys: BTreeMap<String, (String, PublicKey)>,
}

fn did_err(msg: impl Into<String>) -> ContractError {
    ContractError::Did(msg.into())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DidDocument {
    id: String,
    #[serde(default)]
    verification_method: Vec<VerificationMethod>,
    #[serde(default)]
    assertion_method: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerificationMethod {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    controller: String,
    #[serde(default)]
    public_key_multibase: Option<String>,
    #[serde(default)]
    public_key_jwk: Option<Jwk>,
}

impl TrustedOwners {
    /// No owner trusted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts one owner by its `did:key` (the DID is the key).
    pub fn from_did_key(did: &str) -> Result<Self, ContractError> {
        let mut t = Self::new();
        t.add_did_key(did)?;
        Ok(t)
    }

    fn insert(&mut self, kid: String, did: &str, key: PublicKey) -> Result<(), ContractError> {
        if self.keys.len() >= MAX_TRUSTED_KEYS && !self.keys.contains_key(&kid) {
            return Err(did_err(format!(
                "more than {MAX_TRUSTED_KEYS} trusted owner keys"
            )));
        }
        if let Some((d, k)) = self.keys.get(&kid) {
            if d != did || *k != key {
                return Err(did_err(format!(
                    "{} is already trusted with another key",
                    clip(&kid)
                )));
            }
        }
        self.keys.insert(kid, (did.to_owned(), key));
        Ok(())
    }

    /// Trusts every key of `other` too (e.g. the owners of several audiences at once). A
    /// `kid` trusted with another key on either side refuses.
    pub fn extend_from(&mut self, other: &TrustedOwners) -> Result<(), ContractError> {
        for (kid, (did, key)) in &other.keys {
            self.insert(kid.clone(), did, key.clone())?;
        }
        Ok(())
    }

    /// Trusts the owner `did` (a `did:key`).
    pub fn add_did_key(&mut self, did: &str) -> Result<(), ContractError> {
        let key = PublicKey::from_did_key(did)?;
        let kid = key.did_key_url();
        self.insert(kid, did, key)
    }

    /// Trusts the key `jwk` as `kid` (a DID URL `did#fragment`) of the owner `did` — a
    /// did:web owner pinned by its key rather than by its published document.
    pub fn add_jwk(&mut self, did: &str, kid: &str, jwk: &Jwk) -> Result<(), ContractError> {
        check_kid(did, kid)?;
        if let Some(m) = did.strip_prefix("did:key:") {
            if kid != format!("{did}#{m}") {
                return Err(did_err("a did:key's kid is did:key:z…#z… (the key itself)"));
            }
        } else {
            did_web_url(did)?;
        }
        let key = PublicKey::from_jwk(jwk)?;
        if did.starts_with("did:key:") && key.did_key() != did {
            return Err(did_err("the JWK is not the key of this did:key"));
        }
        self.insert(kid.to_owned(), did, key)
    }

    /// Trusts the owner described by a DID document (a did:web document the operator
    /// fetched or pinned, or a did:key document): every verification method the document
    /// lists under `assertionMethod`, given as `Multikey` (`publicKeyMultibase`) or
    /// `JsonWebKey` (`publicKeyJwk`), controlled by the document's DID. Returns the DID.
    pub fn add_did_document(&mut self, json: &[u8]) -> Result<String, ContractError> {
        if json.len() > MAX_DID_DOCUMENT_LEN {
            return Err(ContractError::TooLarge {
                what: "DID document",
                len: json.len(),
                max: MAX_DID_DOCUMENT_LEN,
            });
        }
        let doc: DidDocument = serde_json::from_slice(json)
            .map_err(|e| did_err(format!("not a DID document: {e}")))?;
        if doc.id.starts_with("did:key:") {
            PublicKey::from_did_key(&doc.id)?;
        } else {
            did_web_url(&doc.id)?;
        }
        let asserting: Vec<String> = doc
            .assertion_method
            .iter()
            .filter_map(|v| match v {
                serde_json::Value::String(s) => Some(absolute(&doc.id, s)),
                serde_json::Value::Object(o) => o
                    .get("id")
                    .and_then(|i| i.as_str())
                    .map(|s| absolute(&doc.id, s)),
                _ => None,
            })
            .collect();
        let mut added = 0;
        for vm in &doc.verification_method {
            let id = absolute(&doc.id, &vm.id);
            if !asserting.contains(&id) {
                continue;
            }
            if vm.controller != doc.id {
                return Err(did_err(format!(
                    "verification method {} is controlled by {}, not by {}",
                    clip(&id),
                    clip(&vm.controller),
                    clip(&doc.id)
                )));
            }
            let key = match (vm.kind.as_str(), &vm.public_key_multibase, &vm.public_key_jwk) {
                ("Multikey", Some(m), None) => PublicKey::from_multibase(m)?,
                ("JsonWebKey" | "JsonWebKey2020", None, Some(j)) => PublicKey::from_jwk(j)?,
                (t, _, _) => {
                    return Err(did_err(format!(
                        "verification method {} of type {:?}: only Multikey (publicKeyMultibase) and JsonWebKey (publicKeyJwk) are read",
                        clip(&id),
                        clip(t)
                    )))
                }
            };
            if doc.id.starts_with("did:key:") && key.did_key() != doc.id {
                return Err(did_err("a did:key document names another key"));
            }
            check_kid(&doc.id, &id)?;
            self.insert(id, &doc.id, key)?;
            added += 1;
        }
        if added == 0 {
            return Err(did_err(format!(
                "{} lists no assertionMethod key this verifier can read",
                clip(&doc.id)
            )));
        }
        Ok(doc.id)
    }

    /// Whether `did` is a trusted owner.
    pub fn is_trusted(&self, did: &str) -> bool {
        self.keys.values().any(|(d, _)| d == did)
    }

    /// The trusted owner DIDs.
    pub fn dids(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.keys.values().map(|(d, _)| d.as_str()).collect();
        v.dedup();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The key `kid` names and the owner it belongs to, when trusted.
    pub(crate) fn key(&self, kid: &str) -> Option<(&str, &PublicKey)> {
        self.keys.get(kid).map(|(d, k)| (d.as_str(), k))
    }
}

/// `did#frag` from a relative (`#frag`) or absolute reference.
fn absolute(did: &str, id: &str) -> String {
    if id.starts_with('#') {
        format!("{did}{id}")
    } else {
        id.to_owned()
    }
}

fn check_kid(did: &str, kid: &str) -> Result<(), ContractError> {
    if kid.len() > MAX_DID_LEN * 2 {
        return Err(did_err("kid longer than the limit"));
    }
    match kid.split_once('#') {
        Some((d, frag)) if d == did && !frag.is_empty() => Ok(()),
        _ => Err(did_err(format!(
            "kid {:?} must be a DID URL of {} (did#fragment)",
            clip(kid),
            clip(did)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OwnerAlg, OwnerKey};

    #[test]
    fn documents_keys_and_jwks() {
        let mut k = OwnerKey::generate(OwnerAlg::Es256).unwrap();
        k.use_did_web("did:web:owner.example").unwrap();
        let doc = serde_json::to_vec(&k.did_document()).unwrap();
        let mut t = TrustedOwners::new();
        assert_eq!(t.add_did_document(&doc).unwrap(), "did:web:owner.example");
        assert!(t.is_trusted("did:web:owner.example"));
        assert_eq!(t.key(k.kid()).unwrap().1, k.public_key());
        // The same key as a pinned JWK.
        let mut t2 = TrustedOwners::new();
        t2.add_jwk(k.did(), k.kid(), &k.public_key().jwk()).unwrap();
        assert_eq!(t2.key(k.kid()).unwrap().0, "did:web:owner.example");
        // A kid of another DID, a did:key JWK that is not that key, trusting a kid twice.
        assert!(t2
            .add_jwk(
                "did:web:owner.example",
                "did:web:x.example#k",
                &k.public_key().jwk()
            )
            .is_err());
        let other = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let d = other.did().to_owned();
        assert!(t2.add_jwk(&d, other.kid(), &k.public_key().jwk()).is_err());
        assert!(t2
            .add_jwk(k.did(), k.kid(), &other.public_key().jwk())
            .is_err());
        // A document without assertionMethod trusts nothing.
        let mut v = k.did_document();
        v["assertionMethod"] = serde_json::json!([]);
        assert!(TrustedOwners::new()
            .add_did_document(&serde_json::to_vec(&v).unwrap())
            .is_err());
        // A method controlled by someone else.
        let mut v = k.did_document();
        v["verificationMethod"][0]["controller"] = "did:web:evil.example".into();
        assert!(TrustedOwners::new()
            .add_did_document(&serde_json::to_vec(&v).unwrap())
            .is_err());
        assert_eq!(
            TrustedOwners::new()
                .add_did_document(&vec![b' '; MAX_DID_DOCUMENT_LEN + 1])
                .unwrap_err()
                .code(),
            "contract.too_large"
        );
    }
}
