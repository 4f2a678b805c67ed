//! A fixed STS key (a test key, not a secret) and issuer for the `access_token` target, so
//! that seeds written by one process verify in another.
use std::collections::HashMap;
use std::sync::OnceLock;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use cada_attestation_verifier::access_token::{parse_jwks, IssuerKey};
use cada_protocol::{b64, jws};

/// Verification time of the target (2026-11-28T00:00:00Z).
pub const TOKEN_AT: u64 = 1_795_824_000;
/// The trusted issuer.
pub const ISSUER: &str = "https://sts.example.com";
/// The key id of the fixed key.
pub const KID: &str = "5kHc6qtAbZ_zwLpt8L2qYKd5S8anRMyiKxkMV_MWpjE";

const PKCS8: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgYd3FgxLe1fjefSMftVk-CAoH2qK16v9kf3xL1Rp8TR-hRANCAARqWR3PWDDFKvU9Y8ctlWn6CotkI8NHhldgx4TpyOO3rjaU07gmMhSxgyvIBqO02qsUjAkDJ81DoeNtRBiepAjP";

/// The fixed STS key.
pub fn key() -> &'static EcdsaKeyPair {
    static K: OnceLock<EcdsaKeyPair> = OnceLock::new();
    K.get_or_init(|| {
        let der = b64::decode("key", PKCS8, 512).expect("embedded key");
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).expect("embedded key")
    })
}

/// The fixed key's JWKS.
pub fn jwks() -> Vec<u8> {
    let p = key().public_key().as_ref();
    serde_json::to_vec(&serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "x": b64::encode(&p[1..33]), "y": b64::encode(&p[33..]),
        "kid": KID, "alg": "ES256", "use": "sig",
    }]}))
    .unwrap_or_default()
}

/// The trusted issuers as a verifier holds them.
pub fn issuers() -> &'static HashMap<String, Vec<IssuerKey>> {
    static I: OnceLock<HashMap<String, Vec<IssuerKey>>> = OnceLock::new();
    I.get_or_init(|| {
        HashMap::from([(
            ISSUER.to_owned(),
            parse_jwks(&jwks()).expect("the fixed JWKS"),
        )])
    })
}

/// A compact JWS of `payload` under `header`, signed with the fixed key.
pub fn sign(header: &[u8], payload: &[u8]) -> String {
    let input = jws::signing_input(header, payload);
    let sig = key()
        .sign(&SystemRandom::new(), input.as_bytes())
        .map(|s| b64::encode(s.as_ref()))
        .unwrap_or_default();
    format!("{input}.{sig}")
}
