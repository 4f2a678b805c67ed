//! Writing attestation documents in exactly the Nitro format, for the software `sim`
//! platform: the payload map with the NSM's nine keys in the NSM's order, inside an untagged
//! COSE_Sign1 with an ES384 signature. Only producers need this; the verifier library only
//! decodes. A document written here verifies only against a trust store that was explicitly
//! given the software root: the pinned AWS root never signs it.
use std::collections::BTreeMap;

use aws_lc_rs::signature::EcdsaKeyPair;
use ciborium::Value;

use crate::EnclaveError;

/// The protected header `{1: -35}` (alg ES384) as the NSM writes it.
pub const PROTECTED_ES384: [u8; 4] = [0xa1, 0x01, 0x38, 0x22];

/// The fields of a document to write.
#[derive(Debug, Clone)]
pub struct NitroDocument {
    /// `module_id`.
    pub module_id: String,
    /// `digest`, always `SHA384` on Nitro.
    pub digest: String,
    /// `timestamp`, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// `pcrs`, index → 48-byte value.
    pub pcrs: BTreeMap<u8, Vec<u8>>,
    /// `certificate`, DER of the leaf that signs the document.
    pub certificate: Vec<u8>,
    /// `cabundle`, DER, root first.
    pub cabundle: Vec<Vec<u8>>,
    /// `public_key`.
    pub public_key: Option<Vec<u8>>,
    /// `user_data`.
    pub user_data: Option<Vec<u8>>,
    /// `nonce`.
    pub nonce: Option<Vec<u8>>,
}

fn opt(v: &Option<Vec<u8>>) -> Value {
    v.as_ref().map_or(Value::Null, |b| Value::Bytes(b.clone()))
}

fn to_cbor(v: &Value) -> Result<Vec<u8>, EnclaveError> {
    let mut out = Vec::with_capacity(4096);
    ciborium::ser::into_writer(v, &mut out).map_err(|_| EnclaveError::Crypto("CBOR encoding"))?;
    Ok(out)
}

impl NitroDocument {
    /// The payload: a definite-length map with the nine keys in the NSM's order.
    pub fn encode_payload(&self) -> Result<Vec<u8>, EnclaveError> {
        let t = |s: &str| Value::Text(s.to_owned());
        let pcrs = self
            .pcrs
            .iter()
            .map(|(k, v)| (Value::Integer((*k).into()), Value::Bytes(v.clone())))
            .collect();
        to_cbor(&Value::Map(vec![
            (t("module_id"), t(&self.module_id)),
            (t("digest"), t(&self.digest)),
            (t("timestamp"), Value::Integer(self.timestamp_ms.into())),
            (t("pcrs"), Value::Map(pcrs)),
            (t("certificate"), Value::Bytes(self.certificate.clone())),
            (
                t("cabundle"),
                Value::Array(
                    self.cabundle
                        .iter()
                        .map(|c| Value::Bytes(c.clone()))
                        .collect(),
                ),
            ),
            (t("public_key"), opt(&self.public_key)),
            (t("user_data"), opt(&self.user_data)),
            (t("nonce"), opt(&self.nonce)),
        ]))
    }

    /// The whole document: the payload signed with the leaf's ES384 key into an untagged
    /// COSE_Sign1 `[protected, {}, payload, signature]`, as the NSM writes it.
    pub fn sign_es384(&self, leaf_key: &EcdsaKeyPair) -> Result<Vec<u8>, EnclaveError> {
        let payload = self.encode_payload()?;
        // The COSE Sig_structure (RFC 9052 §4.4) with no external data.
        let tbs = to_cbor(&Value::Array(vec![
            Value::Text("Signature1".into()),
            Value::Bytes(PROTECTED_ES384.to_vec()),
            Value::Bytes(Vec::new()),
            Value::Bytes(payload.clone()),
        ]))?;
        let sig = leaf_key
            .sign(&aws_lc_rs::rand::SystemRandom::new(), &tbs)
            .map_err(|_| EnclaveError::Crypto("document signing"))?;
        to_cbor(&Value::Array(vec![
            Value::Bytes(PROTECTED_ES384.to_vec()),
            Value::Map(Vec::new()),
            Value::Bytes(payload),
            Value::Bytes(sig.as_ref().to_vec()),
        ]))
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::signature::{
        KeyPair, UnparsedPublicKey, ECDSA_P384_SHA384_FIXED, ECDSA_P384_SHA384_FIXED_SIGNING,
    };

    use super::*;

    fn doc() -> NitroDocument {
        NitroDocument {
            module_id: "sim-0011223344556677".into(),
            digest: "SHA384".into(),
            timestamp_ms: 1_795_000_000_123,
            pcrs: (0u8..3).map(|i| (i, vec![i; 48])).collect(),
            certificate: b"leaf DER".to_vec(),
            cabundle: vec![b"root DER".to_vec(), b"ca DER".to_vec()],
            public_key: None,
            user_data: Some(b"binding".to_vec()),
            nonce: Some(b"nonce".to_vec()),
        }
    }

    fn decode(bytes: &[u8]) -> Value {
        ciborium::de::from_reader(bytes).unwrap()
    }

    #[test]
    fn payload_has_the_nsm_keys_in_the_nsm_order() {
        let payload = doc().encode_payload().unwrap();
        assert_eq!(payload[0], 0xa9, "a definite-length map of nine entries");
        let Value::Map(m) = decode(&payload) else {
            panic!("not a map")
        };
        let keys: Vec<&str> = m.iter().map(|(k, _)| k.as_text().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "module_id",
                "digest",
                "timestamp",
                "pcrs",
                "certificate",
                "cabundle",
                "public_key",
                "user_data",
                "nonce"
            ]
        );
        assert_eq!(m[2].1, Value::Integer(1_795_000_000_123u64.into()));
        assert_eq!(m[6].1, Value::Null, "absent public_key is null");
        assert_eq!(m[8].1, Value::Bytes(b"nonce".to_vec()));
    }

    #[test]
    fn the_signature_covers_the_sig_structure_of_exactly_these_bytes() {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let bytes = doc().sign_es384(&key).unwrap();
        assert_eq!(bytes[0], 0x84, "an untagged array of four");
        let Value::Array(parts) = decode(&bytes) else {
            panic!("not an array")
        };
        let (
            Value::Bytes(protected),
            Value::Map(unprotected),
            Value::Bytes(payload),
            Value::Bytes(sig),
        ) = (&parts[0], &parts[1], &parts[2], &parts[3])
        else {
            panic!("not [bstr, map, bstr, bstr]")
        };
        assert_eq!(protected.as_slice(), PROTECTED_ES384);
        assert!(unprotected.is_empty());
        assert_eq!(payload, &doc().encode_payload().unwrap());
        assert_eq!(sig.len(), 96, "fixed-size r ‖ s");
        assert!(
            (256..65_536).contains(&payload.len()),
            "a two-byte bstr length"
        );
        // Sig_structure written out by hand: ["Signature1", h'a1013822', h'', payload].
        let mut tbs = vec![0x84, 0x6a];
        tbs.extend_from_slice(b"Signature1");
        tbs.extend_from_slice(&[0x44, 0xa1, 0x01, 0x38, 0x22, 0x40]);
        tbs.push(0x59);
        tbs.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        tbs.extend_from_slice(payload);
        let public = UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, key.public_key().as_ref());
        public.verify(&tbs, sig).unwrap();
        let mut other = tbs.clone();
        *other.last_mut().unwrap() ^= 1;
        assert!(public.verify(&other, sig).is_err());
    }
}
