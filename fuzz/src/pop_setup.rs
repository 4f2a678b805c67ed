//! Fixed keys and an admitted binding for the `jws_pop` target and its seeds: three keys
//! (Ed25519, P-256, P-384) made from constant private keys, each bound by an unsigned
//! emulator Nitro document that a `PopVerifier` accepting emulator documents admits.
use std::collections::BTreeMap;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    ECDSA_P384_SHA384_FIXED_SIGNING,
};
use cada_protocol::binding::KeyBinding;
use cada_protocol::envelope::{EvidenceEnvelope, Platform};
use cada_protocol::jwk::{Jwk, SigAlg};
use cada_protocol::{b64, token};
use ciborium::Value;

/// Evidence time (ms): documents say they were made then, proofs are checked around it.
pub const EVIDENCE_AT_MS: u64 = 1_700_000_000_000;
/// The URL and method the fixed request names.
pub const URL: &str = "https://api.example/v1/items?q=1";
/// The method of the fixed request.
pub const METHOD: &str = "POST";

/// A signing key of one algorithm with its public JWK.
pub enum Signer {
    /// Ed25519.
    Ed(Ed25519KeyPair),
    /// ECDSA P-256 or P-384 (fixed r ‖ s signatures).
    Ec(EcdsaKeyPair, SigAlg),
}

impl Signer {
    /// The public JWK.
    pub fn jwk(&self) -> Jwk {
        match self {
            Signer::Ed(k) => {
                let mut pk = [0u8; 32];
                pk.copy_from_slice(k.public_key().as_ref());
                Jwk::ed25519(&pk)
            }
            Signer::Ec(k, alg) => Jwk::ec(*alg, k.public_key().as_ref()).expect("uncompressed"),
        }
    }

    /// The JOSE alg.
    pub fn alg(&self) -> SigAlg {
        match self {
            Signer::Ed(_) => SigAlg::EdDSA,
            Signer::Ec(_, a) => *a,
        }
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match self {
            Signer::Ed(k) => k.sign(msg).as_ref().to_vec(),
            Signer::Ec(k, _) => k
                .sign(&SystemRandom::new(), msg)
                .expect("ECDSA signing")
                .as_ref()
                .to_vec(),
        }
    }
}

/// SEC1 ECPrivateKey DER of a constant scalar on the named curve.
fn sec1(scalar: &[u8], curve_oid: &[u8]) -> Vec<u8> {
    let mut inner = vec![0x02, 0x01, 0x01, 0x04, scalar.len() as u8];
    inner.extend_from_slice(scalar);
    inner.extend_from_slice(&[0xa0, curve_oid.len() as u8]);
    inner.extend_from_slice(curve_oid);
    let mut out = vec![0x30, inner.len() as u8];
    out.extend_from_slice(&inner);
    out
}

/// The three fixed signers: Ed25519, ES256, ES384.
pub fn signers() -> Vec<Signer> {
    let p256_oid = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let p384_oid = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
    vec![
        Signer::Ed(Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).expect("Ed25519 seed")),
        Signer::Ec(
            EcdsaKeyPair::from_private_key_der(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &sec1(&[0x11u8; 32], &p256_oid),
            )
            .expect("P-256 key"),
            SigAlg::ES256,
        ),
        Signer::Ec(
            EcdsaKeyPair::from_private_key_der(
                &ECDSA_P384_SHA384_FIXED_SIGNING,
                &sec1(&[0x22u8; 48], &p384_oid),
            )
            .expect("P-384 key"),
            SigAlg::ES384,
        ),
    ]
}

fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(v, &mut out).expect("encoding a Value into a Vec");
    out
}

/// An unsigned emulator (alg −1) Nitro document whose `user_data` is `binding`.
pub fn emulator_document(binding: &[u8], timestamp_ms: u64) -> Vec<u8> {
    let t = |s: &str| Value::Text(s.into());
    let pcrs = (0u8..3)
        .map(|i| (Value::Integer(i.into()), Value::Bytes(vec![i + 1; 48])))
        .collect();
    let payload = encode(&Value::Map(vec![
        (t("module_id"), t("i-fuzz-enc0000")),
        (t("digest"), t("SHA384")),
        (t("timestamp"), Value::Integer(timestamp_ms.into())),
        (t("pcrs"), Value::Map(pcrs)),
        (t("certificate"), Value::Bytes(vec![0x30])),
        (t("cabundle"), Value::Array(vec![Value::Bytes(vec![0x30])])),
        (t("public_key"), Value::Null),
        (t("user_data"), Value::Bytes(binding.to_vec())),
        (t("nonce"), Value::Null),
    ]));
    encode(&Value::Array(vec![
        Value::Bytes(vec![0xa1, 0x01, 0x20]),
        Value::Map(vec![]),
        Value::Bytes(payload),
        Value::Bytes(vec![]),
    ]))
}

/// The envelope binding `jwk` with an emulator document made at [`EVIDENCE_AT_MS`].
pub fn envelope_for(jwk: &Jwk) -> EvidenceEnvelope {
    envelope_at(jwk, EVIDENCE_AT_MS)
}

/// The envelope binding `jwk` with an emulator document made at `timestamp_ms`.
pub fn envelope_at(jwk: &Jwk, timestamp_ms: u64) -> EvidenceEnvelope {
    let binding = KeyBinding {
        v: 1,
        jkt: jwk.thumbprint(),
        did: jwk.did_key().expect("did:key of a valid key"),
        hpke: None,
        owner: None,
    }
    .to_cbor();
    EvidenceEnvelope {
        platform: Platform::Nitro,
        document: emulator_document(&binding, timestamp_ms),
        certs: vec![],
        binding,
        nonce: vec![],
    }
}

/// A compact proof for the fixed request signed by `signer`, issued at `iat`.
pub fn proof(signer: &Signer, jti: &str, iat: u64) -> String {
    let jwk = signer.jwk();
    let header = token::PopHeader {
        typ: token::TYP.into(),
        alg: signer.alg().as_str().into(),
        jwk: jwk.clone(),
    };
    let claims = token::PopClaims {
        jti: jti.into(),
        htm: METHOD.into(),
        htu: URL.into(),
        iat,
        exp: iat + 20,
        ath: None,
        nonce: None,
        cada: token::CadaClaim {
            att: envelope_for(&jwk).att_digest(),
            ctx: BTreeMap::new(),
            seq: 1,
            chain: b64::encode([0u8; 32]),
            dtc: None,
            bd: None,
            mcp: vec![],
            ..token::CadaClaim::default()
        },
    };
    let input = token::signing_input(&header, &claims).expect("plain claims serialize");
    let sig = signer.sign(input.as_bytes());
    format!("{input}.{}", b64::encode(sig))
}
