//! The signature checks every verification path ends in, as small public functions so that
//! test vectors (Wycheproof) run through exactly the code the verifier uses.
//!
//! * [`verify_jws`] — CB-PoP proofs (JWS `EdDSA`, `ES256`, `ES384`; raw `r ‖ s` ECDSA).
//! * [`verify_certificate_signature`] — X.509 certificate signatures (DER ECDSA), as chain
//!   validation checks them with the issuer's key.
//! * [`verify_es384_fixed`] — COSE ES384 (Nitro documents) and SEV-SNP report signatures.
use cada_protocol::jwk::SigAlg;

use crate::x509::{KeyKind, PublicKey, SigAlgorithm};

/// Verifies a JWS signature: `public_key` is the raw Ed25519 key or an uncompressed SEC1
/// point, `sig` the JWS signature bytes (ECDSA as fixed-length `r ‖ s`).
/// The one implementation is [`cada_protocol::jws::verify_signature`] (the enclave-side
/// contract checks use it too); this name keeps the Wycheproof vectors on the verifier's path.
pub fn verify_jws(alg: SigAlg, public_key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    cada_protocol::jws::verify_signature(alg, public_key, msg, sig)
}

/// Verifies a certificate signature (`sig` as in the certificate: DER for ECDSA) made with
/// `alg` by a key of `kind` (`public_key`: SEC1 point or PKCS#1 RSA key), exactly as chain
/// validation does. A key that does not parse verifies nothing.
pub fn verify_certificate_signature(
    kind: KeyKind,
    public_key: &[u8],
    alg: SigAlgorithm,
    msg: &[u8],
    sig: &[u8],
) -> bool {
    PublicKey::new(kind, public_key.to_vec()).is_some_and(|k| k.verify_x509(alg, msg, sig))
}

/// Verifies a raw `r ‖ s` ECDSA P-384/SHA-384 signature under an uncompressed P-384 point,
/// as the COSE (Nitro) and SEV-SNP report checks do.
pub fn verify_es384_fixed(public_key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    PublicKey::new(KeyKind::EcP384, public_key.to_vec())
        .is_some_and(|k| k.verify_es384_fixed(msg, sig))
}
