//! The two COSE structures of a sealed secret, encoded and decoded with hard limits:
//!
//! * `COSE_Encrypt0` in the HPKE Integrated Encryption mode of draft-ietf-cose-hpke-23
//!   (§3.1 of that revision): protected `{1: 42}` (`HPKE-4`), unprotected `{4: kid,
//!   -4: ek}`, the HPKE ciphertext; HPKE `aad` = the RFC 9052 §5.3 `Enc_structure`
//!   `["Encrypt0", protected, external_aad]`, HPKE `info` empty unless given.
//! * `COSE_Sign1` (RFC 9052 §4.2) by the owner's key: protected `{1: alg, 4: kid}` with
//!   `alg` EdDSA (-8, or the fully specified Ed25519, -19) or ES256 (-7), and `kid` the
//!   owner's DID URL.
use ciborium::Value;
use zeroize::Zeroizing;

use crate::hpke::{self, HpkeKeyPair, HpkePublicKey, COSE_ALG_HPKE_4, HPKE_PUBLIC_KEY_LEN};
use crate::SecretsError;

/// CBOR tag of `COSE_Encrypt0`.
pub const TAG_ENCRYPT0: u64 = 16;
/// CBOR tag of `COSE_Sign1`.
pub const TAG_SIGN1: u64 = 18;
/// COSE `alg` EdDSA (RFC 9053).
pub const COSE_ALG_EDDSA: i64 = -8;
/// COSE `alg` Ed25519 (fully specified, RFC 9864).
pub const COSE_ALG_ED25519: i64 = -19;
/// COSE `alg` ES256.
pub const COSE_ALG_ES256: i64 = -7;

const LABEL_ALG: i64 = 1;
const LABEL_CRIT: i64 = 2;
const LABEL_KID: i64 = 4;
const LABEL_EK: i64 = -4;
const LABEL_PSK_ID: i64 = -5;
/// Longest `kid` accepted (an owner DID URL, or a 32-byte key id).
const MAX_KID_LEN: usize = 512;

pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> SecretsError {
    SecretsError::Malformed {
        what,
        detail: detail.into(),
    }
}

pub(crate) fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Writing a Value into a Vec cannot fail.
    let _ = ciborium::ser::into_writer(value, &mut out);
    out
}

pub(crate) fn decode(what: &'static str, bytes: &[u8], max: usize) -> Result<Value, SecretsError> {
    cada_protocol::cbor::decode_value(what, bytes, max).map_err(|e| match e {
        cada_protocol::ProtocolError::TooLarge { what, len, max } => {
            SecretsError::TooLarge { what, len, max }
        }
        other => malformed(what, other.to_string()),
    })
}

fn int(i: i64) -> Value {
    Value::Integer(i.into())
}

fn label_of(k: &Value) -> Option<i64> {
    match k {
        Value::Integer(i) => i64::try_from(*i).ok(),
        _ => None,
    }
}

/// Strips an optional tag `tag` and returns the array of `n` items.
fn tagged_array(
    what: &'static str,
    v: Value,
    tag: u64,
    n: usize,
) -> Result<Vec<Value>, SecretsError> {
    let v = match v {
        Value::Tag(t, inner) if t == tag => *inner,
        Value::Tag(t, _) => return Err(malformed(what, format!("CBOR tag {t}, expected {tag}"))),
        other => other,
    };
    match v {
        Value::Array(items) if items.len() == n => Ok(items),
        _ => Err(malformed(what, format!("not an array of {n} items"))),
    }
}

fn bstr(what: &'static str, v: Value) -> Result<Vec<u8>, SecretsError> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => Err(malformed(what, "not a byte string")),
    }
}

/// The protected header map inside its byte string (an empty bstr is an empty map).
fn header_map(what: &'static str, protected: &[u8]) -> Result<Vec<(Value, Value)>, SecretsError> {
    if protected.is_empty() {
        return Ok(vec![]);
    }
    match decode(what, protected, protected.len())? {
        Value::Map(m) => Ok(m),
        _ => Err(malformed(what, "the protected header is not a map")),
    }
}

fn get(map: &[(Value, Value)], label: i64) -> Option<&Value> {
    map.iter()
        .find(|(k, _)| label_of(k) == Some(label))
        .map(|(_, v)| v)
}

/// `Enc_structure` (RFC 9052 §5.3) for `COSE_Encrypt0`.
pub fn enc_structure(protected: &[u8], external_aad: &[u8]) -> Vec<u8> {
    encode(&Value::Array(vec![
        Value::Text("Encrypt0".into()),
        Value::Bytes(protected.to_vec()),
        Value::Bytes(external_aad.to_vec()),
    ]))
}

/// `Sig_structure` (RFC 9052 §4.4) for `COSE_Sign1` with empty external_aad.
pub fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    encode(&Value::Array(vec![
        Value::Text("Signature1".into()),
        Value::Bytes(protected.to_vec()),
        Value::Bytes(vec![]),
        Value::Bytes(payload.to_vec()),
    ]))
}

/// A decoded HPKE-4 `COSE_Encrypt0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encrypt0 {
    /// The protected header bytes as received (they enter the `Enc_structure`).
    pub protected: Vec<u8>,
    /// The unprotected `kid`, if any.
    pub kid: Option<Vec<u8>>,
    /// The encapsulated key (`ek`, 32 bytes).
    pub ek: Vec<u8>,
    /// The HPKE ciphertext.
    pub ciphertext: Vec<u8>,
}

/// Seals `plaintext` to `pk` as a tagged HPKE-4 `COSE_Encrypt0` whose `kid` is the key's id
/// ([`HpkePublicKey::kid`]).
pub fn seal_encrypt0(
    pk: &HpkePublicKey,
    plaintext: &[u8],
    external_aad: &[u8],
    info: &[u8],
) -> Result<Vec<u8>, SecretsError> {
    let protected = encode(&Value::Map(vec![(int(LABEL_ALG), int(COSE_ALG_HPKE_4))]));
    let aad = enc_structure(&protected, external_aad);
    let (ek, ct) = hpke::seal(pk, info, plaintext, &aad)?;
    // Deterministic key order (RFC 8949 §4.2.1): 4 (0x04) before -4 (0x23).
    let unprotected = Value::Map(vec![
        (int(LABEL_KID), Value::Bytes(pk.kid())),
        (int(LABEL_EK), Value::Bytes(ek)),
    ]);
    Ok(encode(&Value::Tag(
        TAG_ENCRYPT0,
        Box::new(Value::Array(vec![
            Value::Bytes(protected),
            unprotected,
            Value::Bytes(ct),
        ])),
    )))
}

impl Encrypt0 {
    /// Decodes a `COSE_Encrypt0` (tagged or not) of at most `max` bytes. Refused: any
    /// algorithm but HPKE-4 or one in the unprotected header, `crit`, `psk_id` (CADA uses
    /// base mode only), a missing or wrong-size `ek`, a detached ciphertext, an unknown
    /// unprotected label.
    pub fn decode(bytes: &[u8], max: usize) -> Result<Self, SecretsError> {
        const W: &str = "COSE_Encrypt0";
        let items = tagged_array(W, decode(W, bytes, max)?, TAG_ENCRYPT0, 3)?;
        let mut it = items.into_iter();
        let (Some(p), Some(u), Some(c)) = (it.next(), it.next(), it.next()) else {
            return Err(malformed(W, "not an array of 3 items"));
        };
        let protected = bstr(W, p)?;
        let ph = header_map(W, &protected)?;
        match get(&ph, LABEL_ALG).and_then(label_of) {
            Some(COSE_ALG_HPKE_4) => {}
            Some(a) => {
                return Err(SecretsError::Unknown(format!(
                    "COSE alg {a}: this envelope is HPKE-4 (42) only"
                )))
            }
            None => return Err(malformed(W, "no alg in the protected header")),
        }
        for (k, _) in &ph {
            match label_of(k) {
                Some(LABEL_ALG | LABEL_KID) => {}
                Some(LABEL_CRIT) => return Err(malformed(W, "crit is not supported")),
                Some(LABEL_PSK_ID) => {
                    return Err(malformed(W, "psk_id: only HPKE base mode is used"))
                }
                _ => return Err(malformed(W, "unknown protected header label")),
            }
        }
        let Value::Map(um) = u else {
            return Err(malformed(W, "the unprotected header is not a map"));
        };
        let mut kid = get(&ph, LABEL_KID).cloned();
        let mut ek = None;
        for (k, v) in um {
            match label_of(&k) {
                Some(LABEL_KID) if kid.is_none() => kid = Some(v),
                Some(LABEL_EK) => ek = Some(v),
                Some(LABEL_ALG) => return Err(malformed(W, "alg must be protected")),
                _ => return Err(malformed(W, "unknown or repeated unprotected header label")),
            }
        }
        let kid = match kid {
            None => None,
            Some(Value::Bytes(b)) if b.len() <= MAX_KID_LEN => Some(b),
            Some(_) => return Err(malformed(W, "kid is a byte string of at most 512 bytes")),
        };
        let ek = match ek {
            Some(Value::Bytes(b)) if b.len() == HPKE_PUBLIC_KEY_LEN => b,
            Some(_) => return Err(malformed(W, "ek is a 32-byte string")),
            None => return Err(malformed(W, "ek (-4) is missing")),
        };
        let ciphertext = match c {
            Value::Bytes(b) => b,
            Value::Null => return Err(malformed(W, "detached ciphertexts are not accepted")),
            _ => return Err(malformed(W, "the ciphertext is not a byte string")),
        };
        Ok(Encrypt0 {
            protected,
            kid,
            ek,
            ciphertext,
        })
    }

    /// Opens under `kp` with `external_aad` and HPKE `info`. A `kid` that is not `kp`'s
    /// key id is `secret.sealed_for_other_enclave`; a failed open is `secret.tampered`.
    pub fn open(
        &self,
        kp: &HpkeKeyPair,
        external_aad: &[u8],
        info: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        self.check_kid(kp)?;
        let aad = enc_structure(&self.protected, external_aad);
        kp.open(&self.ek, info, &self.ciphertext, &aad)
    }

    /// Opens without looking at `kid` (the draft's vectors name keys by other ids).
    pub fn open_any_kid(
        &self,
        kp: &HpkeKeyPair,
        external_aad: &[u8],
        info: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        let aad = enc_structure(&self.protected, external_aad);
        kp.open(&self.ek, info, &self.ciphertext, &aad)
    }

    fn check_kid(&self, kp: &HpkeKeyPair) -> Result<(), SecretsError> {
        match &self.kid {
            Some(k) if *k != kp.public().kid() => Err(SecretsError::SealedForOtherEnclave(
                "the envelope names another HPKE key (kid); seal to this enclave's key".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// A decoded `COSE_Sign1` (signature not yet verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sign1 {
    /// The protected header bytes as received.
    pub protected: Vec<u8>,
    /// The `alg`.
    pub alg: i64,
    /// The `kid` as text (the signer's DID URL).
    pub kid: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// The signature.
    pub signature: Vec<u8>,
}

impl Sign1 {
    /// Builds and encodes a tagged `COSE_Sign1`: `sign` receives the `Sig_structure`.
    pub fn sign(
        alg: i64,
        kid: &str,
        payload: &[u8],
        sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, SecretsError>,
    ) -> Result<Vec<u8>, SecretsError> {
        let protected = encode(&Value::Map(vec![
            (int(LABEL_ALG), int(alg)),
            (int(LABEL_KID), Value::Bytes(kid.as_bytes().to_vec())),
        ]));
        let sig = sign(&sig_structure(&protected, payload))?;
        Ok(encode(&Value::Tag(
            TAG_SIGN1,
            Box::new(Value::Array(vec![
                Value::Bytes(protected),
                Value::Map(vec![]),
                Value::Bytes(payload.to_vec()),
                Value::Bytes(sig),
            ])),
        )))
    }

    /// Decodes a `COSE_Sign1` (tagged or not) of at most `max` bytes: `alg` and `kid` in
    /// the protected header, nothing else there, an empty unprotected header, an attached
    /// payload.
    pub fn decode(bytes: &[u8], max: usize) -> Result<Self, SecretsError> {
        const W: &str = "COSE_Sign1";
        let items = tagged_array(W, decode(W, bytes, max)?, TAG_SIGN1, 4)?;
        let mut it = items.into_iter();
        let (Some(p), Some(u), Some(pl), Some(s)) = (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(malformed(W, "not an array of 4 items"));
        };
        let protected = bstr(W, p)?;
        let ph = header_map(W, &protected)?;
        if ph.len() != 2 {
            return Err(malformed(
                W,
                "the protected header holds exactly alg and kid",
            ));
        }
        let alg = match get(&ph, LABEL_ALG).and_then(label_of) {
            Some(a @ (COSE_ALG_EDDSA | COSE_ALG_ED25519 | COSE_ALG_ES256)) => a,
            Some(a) => {
                return Err(SecretsError::Unknown(format!(
                    "COSE alg {a}: owners sign with EdDSA (-8), Ed25519 (-19) or ES256 (-7)"
                )))
            }
            None => return Err(malformed(W, "no alg in the protected header")),
        };
        let kid = match get(&ph, LABEL_KID) {
            Some(Value::Bytes(b)) if b.len() <= MAX_KID_LEN => String::from_utf8(b.clone())
                .map_err(|_| malformed(W, "kid is the owner's DID URL in UTF-8"))?,
            _ => return Err(malformed(W, "kid (the owner's DID URL) is missing")),
        };
        match u {
            Value::Map(m) if m.is_empty() => {}
            _ => return Err(malformed(W, "the unprotected header must be empty")),
        }
        let Value::Bytes(payload) = pl else {
            return Err(malformed(W, "the payload is not an attached byte string"));
        };
        let signature = bstr(W, s)?;
        Ok(Sign1 {
            protected,
            alg,
            kid,
            payload,
            signature,
        })
    }

    /// The bytes the signature covers.
    pub fn to_be_signed(&self) -> Vec<u8> {
        sig_structure(&self.protected, &self.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The HPKE-4 Integrated Encryption vectors of draft-ietf-cose-hpke-23 (its
    /// testvectors.txt): the COSE_Key's private key `d` opens all four COSE_Encrypt0
    /// messages, with the default or external aad and info.
    #[test]
    fn draft_23_hpke_4_encrypt0_vectors() {
        let cose_key = hex::decode("a60101024e626f622d68706b655f342d696e7403182a20042158200191a45e7240233a4bda72ac8b38283aea336c863c7d5856b7df263038bc69072358200838e90c3407649faf0bd7eeb3e5a9fd7c643e4cb72b91997fc81d26d2f1de49").unwrap();
        let Value::Map(key) = decode("key", &cose_key, 1024).unwrap() else {
            panic!("map")
        };
        let x = match get(&key, -2) {
            Some(Value::Bytes(b)) => b.clone(),
            _ => panic!("x"),
        };
        let d = match get(&key, -4) {
            Some(Value::Bytes(b)) => b.clone(),
            _ => panic!("d"),
        };
        let kp = HpkeKeyPair::from_private_bytes(&d).unwrap();
        assert_eq!(kp.public().as_bytes().to_vec(), x);
        let vectors = [
            ("", "", "d08344a101182aa2044e626f622d68706b655f342d696e7423582081cbeefeef0b8a8b736f700fe52ff25f0cfc7302e5075a44b95e7cf5a82a96775821e5c0ebf3de1016b0fd33f41c0774d6b283dd494537c729ad7decab64bd5c1f43e5"),
            ("external-aad", "", "d08344a101182aa2044e626f622d68706b655f342d696e742358204c41250100e5f505dd0acf8830ff1d22e7954d8f6d88d59c809c95d903849c4658218c99cbbe71f8f695e6e79dc6f412793c3ea9d1464066e2d08aaa27b5fef24ec144"),
            ("", "external-info", "d08344a101182aa2044e626f622d68706b655f342d696e7423582004aa6884ce80e188a0ef5496c24f6798afde8c8dc623bc2654ce836bb2b9be4158211bc91f4db16f81fdab012e74c00ae5353eb258e433b8ea4b28893d7436fe7615f2"),
            ("external-aad", "external-info", "d08344a101182aa2044e626f622d68706b655f342d696e74235820bcf1e847f43e3f4244751ce5e4ac782fc5270310590a3cf8fb825e5ad6be54145821e9c1313608956f65a12558a94ce3fa04ec84ecdeb2eed4eee2a4fbbe783cfcfdd7"),
        ];
        for (aad, info, msg) in vectors {
            let e = Encrypt0::decode(&hex::decode(msg).unwrap(), 4096).unwrap();
            assert_eq!(e.kid.as_deref(), Some(b"bob-hpke_4-int".as_slice()));
            let pt = e
                .open_any_kid(&kp, aad.as_bytes(), info.as_bytes())
                .unwrap();
            assert_eq!(pt.as_slice(), b"hpke test payload");
            // The same message with the other aad does not open.
            let wrong = if aad.is_empty() { "external-aad" } else { "" };
            assert_eq!(
                e.open_any_kid(&kp, wrong.as_bytes(), info.as_bytes())
                    .unwrap_err()
                    .code(),
                "secret.tampered"
            );
            // The kid names another key: refused before any decryption.
            assert_eq!(
                e.open(&kp, aad.as_bytes(), info.as_bytes())
                    .unwrap_err()
                    .code(),
                "secret.sealed_for_other_enclave"
            );
        }
    }

    #[test]
    fn encrypt0_round_trip_and_header_rules() {
        let kp = HpkeKeyPair::generate();
        let msg = seal_encrypt0(&kp.public(), b"secret", b"ctx", b"").unwrap();
        let e = Encrypt0::decode(&msg, 4096).unwrap();
        assert_eq!(e.open(&kp, b"ctx", b"").unwrap().as_slice(), b"secret");
        assert_eq!(
            e.open(&kp, b"ctX", b"").unwrap_err().code(),
            "secret.tampered"
        );
        // Untagged is accepted too.
        let Value::Tag(_, inner) = decode("t", &msg, 4096).unwrap() else {
            panic!("tag")
        };
        assert!(Encrypt0::decode(&encode(&inner), 4096).is_ok());
        // Another algorithm in the protected header.
        let other_alg = encode(&Value::Array(vec![
            Value::Bytes(encode(&Value::Map(vec![(int(1), int(41))]))),
            Value::Map(vec![(int(-4), Value::Bytes(vec![0; 32]))]),
            Value::Bytes(vec![0; 20]),
        ]));
        assert_eq!(
            Encrypt0::decode(&other_alg, 4096).unwrap_err().code(),
            "secret.unknown"
        );
        // ek missing, detached ciphertext, too large.
        let no_ek = encode(&Value::Array(vec![
            Value::Bytes(encode(&Value::Map(vec![(int(1), int(42))]))),
            Value::Map(vec![]),
            Value::Bytes(vec![0; 20]),
        ]));
        assert_eq!(
            Encrypt0::decode(&no_ek, 4096).unwrap_err().code(),
            "secret.malformed"
        );
        assert_eq!(
            Encrypt0::decode(&msg, 10).unwrap_err().code(),
            "secret.too_large"
        );
    }

    #[test]
    fn sign1_round_trip() {
        let s = Sign1::sign(COSE_ALG_EDDSA, "did:key:z6Mk#z6Mk", b"payload", |m| {
            Ok(m.len().to_be_bytes().to_vec())
        })
        .unwrap();
        let d = Sign1::decode(&s, 4096).unwrap();
        assert_eq!(d.kid, "did:key:z6Mk#z6Mk");
        assert_eq!(d.payload, b"payload");
        assert_eq!(d.signature, d.to_be_signed().len().to_be_bytes().to_vec());
        assert_eq!(
            Sign1::decode(&s[..s.len() - 1], 4096).unwrap_err().code(),
            "secret.malformed"
        );
    }
}
