//! Writing Nitro documents for the verifier's own tests (re-encoded real documents,
//! self-made chains, QEMU-style unsigned documents). The library only decodes; the
//! producer the `sim` platform uses lives in the enclave crate
//! (`enclave/src/platform/nitro_document.rs`). This copy stays here so the verifier's tests
//! build without the enclave and its Linux-only dependencies, and so a test can re-encode
//! any decoded [`AttestationDocument`] after editing one field.
#![allow(dead_code)]
use cada_attestation_verifier::cose;
use cada_attestation_verifier::nitro::AttestationDocument;
use ciborium::Value;

/// The protected header `{1: -35}` (ES384) as the NSM writes it.
pub const PROTECTED_ES384: [u8; 4] = [0xa1, 0x01, 0x38, 0x22];

fn opt(v: &Option<Vec<u8>>) -> Value {
    v.as_ref().map_or(Value::Null, |b| Value::Bytes(b.clone()))
}

/// The payload map with the nine keys in the NSM's order (definite length).
pub fn encode_payload(doc: &AttestationDocument) -> Vec<u8> {
    let t = |s: &str| Value::Text(s.to_owned());
    let pcrs = doc
        .pcrs
        .iter()
        .map(|(k, v)| (Value::Integer((*k).into()), Value::Bytes(v.clone())))
        .collect();
    let map = Value::Map(vec![
        (t("module_id"), t(&doc.module_id)),
        (t("digest"), t(&doc.digest)),
        (
            t("timestamp"),
            Value::Integer(doc.timestamp.as_millis().into()),
        ),
        (t("pcrs"), Value::Map(pcrs)),
        (t("certificate"), Value::Bytes(doc.certificate.clone())),
        (
            t("cabundle"),
            Value::Array(
                doc.cabundle
                    .iter()
                    .map(|c| Value::Bytes(c.clone()))
                    .collect(),
            ),
        ),
        (t("public_key"), opt(&doc.public_key)),
        (t("user_data"), opt(&doc.user_data)),
        (t("nonce"), opt(&doc.nonce)),
    ]);
    let mut out = Vec::new();
    ciborium::ser::into_writer(&map, &mut out).unwrap();
    out
}

/// Signs `payload` (any bytes, e.g. an indefinite-length map) into an untagged ES384
/// COSE_Sign1, as the NSM does.
pub fn sign_es384(payload: &[u8], key: &aws_lc_rs::signature::EcdsaKeyPair) -> Vec<u8> {
    let tbs = cose::to_be_signed(&PROTECTED_ES384, payload);
    let sig = key
        .sign(&aws_lc_rs::rand::SystemRandom::new(), &tbs)
        .unwrap();
    cose::encode_sign1(&PROTECTED_ES384, payload, sig.as_ref())
}
