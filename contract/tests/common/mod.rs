//! Shared by the delegation tests: enclave keys of each algorithm, an owner, and the steps
//! an enclave takes to sign a delegation (with and without its own checks).
#![allow(dead_code)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    ECDSA_P384_SHA384_FIXED_SIGNING,
};
use cada_contract::delegation::{split_chain, verify_chain, Draft, VerifiedChain};
use cada_contract::{
    ContractError, Grant, OwnerAlg, OwnerKey, PublicKey, StatusEntry, TrustedOwners,
};
use cada_protocol::b64;
use cada_protocol::jwk::SigAlg;
use serde_json::Value;

pub const NOW: u64 = 1_750_000_000;
pub const LIST: &str = "https://owner.example/status/1";

/// An enclave's signing key (what `enclave/src/key.rs` holds), by algorithm.
pub enum EnclaveKey {
    Ed(Ed25519KeyPair),
    P256(EcdsaKeyPair),
    P384(EcdsaKeyPair),
}

pub struct Enclave {
    key: EnclaveKey,
    public: PublicKey,
}

impl Enclave {
    pub fn new(alg: SigAlg) -> Self {
        match alg {
            SigAlg::ES256 => {
                let k = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
                let public = PublicKey::ec(SigAlg::ES256, k.public_key().as_ref()).unwrap();
                Enclave {
                    key: EnclaveKey::P256(k),
                    public,
                }
            }
            SigAlg::ES384 => {
                let k = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap();
                let public = PublicKey::ec(SigAlg::ES384, k.public_key().as_ref()).unwrap();
                Enclave {
                    key: EnclaveKey::P384(k),
                    public,
                }
            }
            SigAlg::EdDSA | SigAlg::Ed25519 => {
                let k = Ed25519KeyPair::generate().unwrap();
                let raw: [u8; 32] = k.public_key().as_ref().try_into().unwrap();
                Enclave {
                    key: EnclaveKey::Ed(k),
                    public: PublicKey::ed25519(raw),
                }
            }
        }
    }

    pub fn ed() -> Self {
        Enclave::new(SigAlg::EdDSA)
    }

    pub fn did(&self) -> String {
        self.public.did_key()
    }

    pub fn kid(&self) -> String {
        self.public.did_key_url()
    }

    pub fn alg(&self) -> SigAlg {
        match self.key {
            EnclaveKey::Ed(_) => SigAlg::EdDSA,
            EnclaveKey::P256(_) => SigAlg::ES256,
            EnclaveKey::P384(_) => SigAlg::ES384,
        }
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match &self.key {
            EnclaveKey::Ed(k) => k.sign(msg).as_ref().to_vec(),
            EnclaveKey::P256(k) | EnclaveKey::P384(k) => {
                let mut sig = k.sign(&SystemRandom::new(), msg).unwrap().as_ref().to_vec();
                // Low-s, as the enclave's key signs (the one spelling verifiers accept).
                cada_protocol::jws::ecdsa_low_s(self.alg(), &mut sig);
                sig
            }
        }
    }

    /// Signs arbitrary payload JSON as a delegation header of this key would (for
    /// forgeries the library refuses to build).
    pub fn sign_payload(&self, payload: &Value) -> String {
        let header = serde_json::json!({
            "alg": self.alg().as_str(), "typ": "vc+jwt", "cty": "vc", "kid": self.kid()
        });
        let input = format!(
            "{}.{}",
            b64::encode(header.to_string()),
            b64::encode(payload.to_string())
        );
        let sig = self.sign(input.as_bytes());
        format!("{input}.{}", b64::encode(sig))
    }
}

/// The header and payload of a compact JWS, as JSON.
pub fn parts(jwt: &str) -> (Value, Value) {
    let mut it = jwt.split('.');
    let h = b64::decode("h", it.next().unwrap(), 1 << 20).unwrap();
    let p = b64::decode("p", it.next().unwrap(), 1 << 20).unwrap();
    (
        serde_json::from_slice(&h).unwrap(),
        serde_json::from_slice(&p).unwrap(),
    )
}

pub struct Owner {
    pub key: OwnerKey,
    pub owners: TrustedOwners,
}

impl Owner {
    pub fn new() -> Self {
        let key = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let owners = TrustedOwners::from_did_key(key.did()).unwrap();
        Owner { key, owners }
    }

    pub fn issue(&self, g: &Grant) -> String {
        g.issue(&self.key, NOW - 100).unwrap()
    }

    pub fn verify(&self, chain: &str, now: u64) -> Result<VerifiedChain, ContractError> {
        verify_chain(&split_chain(chain)?, &self.owners, now)
    }

    /// What an enclave does to extend `chain` with `grant` (its subject the delegatee):
    /// verify the chain, draft, check (when `checked`: the enclave refuses anything wider
    /// before it signs; unchecked = a forgery made outside an enclave), attest, sign.
    pub fn delegate(
        &self,
        chain: &str,
        from: &Enclave,
        grant: Grant,
        iat: u64,
        checked: bool,
    ) -> Result<String, ContractError> {
        let vc = self.verify(chain, iat)?;
        let draft = if checked {
            let d = Draft::under(&vc, grant, &from.did(), iat)?;
            d.check(&vc)?;
            d
        } else {
            // Built by hand: none of the enclave's refusals apply.
            Draft {
                grant,
                issuer: from.did(),
                parent: vc.leaf().digest().to_owned(),
                root: vc.root.digest().to_owned(),
                owner: vc.owner().to_owned(),
                depth: u8::try_from(vc.depth() + 1).unwrap(),
                id: cada_contract::new_urn_uuid()?,
                iat,
            }
        };
        let nonce = draft.evidence_nonce()?;
        let payload = draft.payload_bytes(&evidence(&nonce))?;
        let input = draft.signing_input(&payload, from.alg(), &from.kid())?;
        let sig = from.sign(input.as_bytes());
        let compact = draft.assemble(&payload, from.alg(), &from.kid(), &sig)?;
        Ok(format!("{chain}~{compact}"))
    }
}

/// Stand-in evidence: a fixed prefix and the nonce (the verifier checks real evidence).
pub fn evidence(nonce: &[u8; 32]) -> Vec<u8> {
    let mut e = b"evidence:".to_vec();
    e.extend_from_slice(nonce);
    e
}

pub fn status(index: u64) -> Option<StatusEntry> {
    Some(StatusEntry::new(LIST, index).unwrap())
}

pub fn code<T>(r: Result<T, ContractError>) -> &'static str {
    r.map(|_| "accepted").unwrap_or_else(|e| e.code())
}
