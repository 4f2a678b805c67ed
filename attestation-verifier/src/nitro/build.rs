//! Producing documents in exactly the Nitro format, for software platforms (`sim`) and
//! tests. A document built here verifies only against a trust store that was explicitly
//! given the software root: the pinned AWS root never signs it.
use ciborium::Value;

use super::AttestationDocument;
use crate::cose;

/// The protected header `{1: -35}` (ES384) as the NSM writes it.
pub const PROTECTED_ES384: [u8; 4] = [0xa1, 0x01, 0x38, 0x22];

fn opt(v: &Option<Vec<u8>>) -> Value {
    v.as_ref().map_or(Value::Null, |b| Value::Bytes(b.clone()))
}

/// Encodes the payload map with the nine keys in the NSM's order (definite-length map).
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
    let mut out = Vec::with_capacity(4096);
    // Writing a Value into a Vec cannot fail.
    let _ = ciborium::ser::into_writer(&map, &mut out);
    out
}

/// Signs a payload with an ES384 key into an untagged COSE_Sign1, as the NSM does.
pub fn sign_es384(
    payload: &[u8],
    key: &aws_lc_rs::signature::EcdsaKeyPair,
) -> Result<Vec<u8>, aws_lc_rs::error::Unspecified> {
    let tbs = cose::to_be_signed(&PROTECTED_ES384, payload);
    let sig = key.sign(&aws_lc_rs::rand::SystemRandom::new(), &tbs)?;
    Ok(cose::encode_sign1(&PROTECTED_ES384, payload, sig.as_ref()))
}
