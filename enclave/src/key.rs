//! The signing key. It is generated inside the enclave process and has no operation that
//! exports private material. The key pairs live in aws-lc, whose free routine cleanses
//! the memory (zeroization on drop); no private key bytes ever exist in Rust memory.
//! On `--platform tpm` the key is a [`DeviceKey`]: generated in the TPM, which signs, so
//! its private part never exists in process memory at all.
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    ECDSA_P384_SHA384_FIXED_SIGNING,
};
use cada_protocol::binding::KeyBinding;
use cada_protocol::jwk::{Jwk, SigAlg};

use crate::EnclaveError;

enum Inner {
    Ed25519(Ed25519KeyPair),
    Ecdsa(EcdsaKeyPair),
    Device(Box<dyn DeviceKey>),
}

/// A signing key held by a device (a TPM): the process holds a handle, the device signs.
pub trait DeviceKey: Send + Sync {
    /// Signs `msg` as a JWS signature of the key's algorithm (ES256: fixed-width r ‖ s).
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, EnclaveError>;
}

/// A signing key plus its public identity.
pub struct SigningKey {
    alg: SigAlg,
    inner: Inner,
    rng: SystemRandom,
    jwk: Jwk,
    jkt: String,
    did: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints private material.
        write!(f, "SigningKey({}, {})", self.alg.as_str(), self.jkt)
    }
}

impl SigningKey {
    /// Generates a fresh key for `alg` (`EdDSA` and `Ed25519` both make an Ed25519 key; the
    /// name is what the key's proofs carry as `alg`).
    pub fn generate(alg: SigAlg) -> Result<Self, EnclaveError> {
        let (inner, jwk) = match alg {
            SigAlg::EdDSA | SigAlg::Ed25519 => {
                let kp = Ed25519KeyPair::generate()
                    .map_err(|_| EnclaveError::Crypto("Ed25519 key generation"))?;
                let pk: [u8; 32] = kp
                    .public_key()
                    .as_ref()
                    .try_into()
                    .map_err(|_| EnclaveError::Crypto("Ed25519 public key length"))?;
                (Inner::Ed25519(kp), Jwk::ed25519(&pk))
            }
            SigAlg::ES256 | SigAlg::ES384 => {
                let a = if alg == SigAlg::ES256 {
                    &ECDSA_P256_SHA256_FIXED_SIGNING
                } else {
                    &ECDSA_P384_SHA384_FIXED_SIGNING
                };
                let kp = EcdsaKeyPair::generate(a)
                    .map_err(|_| EnclaveError::Crypto("ECDSA key generation"))?;
                let jwk = Jwk::ec(alg, kp.public_key().as_ref())
                    .map_err(|_| EnclaveError::Crypto("EC public key"))?;
                (Inner::Ecdsa(kp), jwk)
            }
        };
        let jkt = jwk.thumbprint();
        let did = jwk
            .did_key()
            .map_err(|_| EnclaveError::Crypto("did:key encoding"))?;
        Ok(SigningKey {
            alg,
            inner,
            rng: SystemRandom::new(),
            jwk,
            jkt,
            did,
        })
    }

    /// A key held by a device, whose public key is `jwk` (the device signs as `alg`).
    pub fn from_device(
        alg: SigAlg,
        jwk: Jwk,
        device: Box<dyn DeviceKey>,
    ) -> Result<Self, EnclaveError> {
        let jkt = jwk.thumbprint();
        let did = jwk
            .did_key()
            .map_err(|_| EnclaveError::Crypto("did:key encoding"))?;
        Ok(SigningKey {
            alg,
            inner: Inner::Device(device),
            rng: SystemRandom::new(),
            jwk,
            jkt,
            did,
        })
    }

    /// JWS algorithm.
    pub fn alg(&self) -> SigAlg {
        self.alg
    }

    /// Public JWK.
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// RFC 7638 thumbprint.
    pub fn jkt(&self) -> &str {
        &self.jkt
    }

    /// did:key.
    pub fn did(&self) -> &str {
        &self.did
    }

    /// The key binding CBOR of DESIGN.md.
    pub fn binding(&self) -> KeyBinding {
        KeyBinding {
            v: 1,
            jkt: self.jkt.clone(),
            did: self.did.clone(),
            hpke: None,
            owner: None,
        }
    }

    /// Signs `msg` (JWS signature bytes: Ed25519, or fixed-width r ‖ s in its low-s form,
    /// whoever signed: aws-lc or a device). An ECDSA signature has two valid spellings;
    /// delegations are identified by the digest of their text, and verifiers accept only
    /// the low-s one (docs/contracts.md, "The digest").
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, EnclaveError> {
        let mut sig = match &self.inner {
            Inner::Ed25519(kp) => return Ok(kp.sign(msg).as_ref().to_vec()),
            Inner::Ecdsa(kp) => kp
                .sign(&self.rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| EnclaveError::Crypto("ECDSA signing"))?,
            Inner::Device(d) => d.sign(msg)?,
        };
        cada_protocol::jws::ecdsa_low_s(self.alg, &mut sig);
        Ok(sig)
    }
}
