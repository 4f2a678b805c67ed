//! The key binding: `{ "v": 1, "jkt": <RFC 7638 thumbprint>, "did": <did:key> }` in CBOR,
//! plus `"hpke": <the enclave's HPKE public key, 32 raw X25519 bytes>` (the COSE-HPKE suite
//! `HPKE-4`, see `cada-secrets`) and `"owner": <owner did:key>` once an owner has locked the
//! enclave. The HPKE key is covered exactly like the signing key: Nitro `user_data` holds
//! these bytes, SEV-SNP `report_data` their hash.
//!
//! Nitro puts these bytes in `user_data`; SEV-SNP puts SHA-512(binding ‖ nonce) in
//! `report_data`. Verifiers compare the bytes as received, then read `jkt` and `did`.
use ciborium::Value;

use crate::{cbor, ProtocolError};

/// Largest binding accepted (Nitro's `user_data` limit).
pub const MAX_BINDING_LEN: usize = 512;

/// The decoded key binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyBinding {
    /// Format version, 1.
    pub v: u64,
    /// RFC 7638 SHA-256 thumbprint (base64url) of the signing key.
    pub jkt: String,
    /// `did:key` of the signing key.
    pub did: String,
    /// The enclave's HPKE public key (32 raw X25519 bytes, suite `HPKE-4`), to which owners
    /// seal secrets and services encrypt data. Absent in bindings of older enclaves.
    pub hpke: Option<Vec<u8>>,
    /// The owner the enclave is locked to (its `did:key`), once locked: the enclave then
    /// signs only under that owner's contracts.
    pub owner: Option<String>,
}

/// Length of the binding's HPKE key (X25519).
pub const HPKE_KEY_LEN: usize = 32;

impl KeyBinding {
    /// Encodes as deterministic CBOR (RFC 8949 §4.2.1 key order: "v", "did", "jkt",
    /// "hpke", "owner").
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut entries = vec![
            (Value::Text("v".into()), Value::Integer(self.v.into())),
            (Value::Text("did".into()), Value::Text(self.did.clone())),
            (Value::Text("jkt".into()), Value::Text(self.jkt.clone())),
        ];
        if let Some(hpke) = &self.hpke {
            entries.push((Value::Text("hpke".into()), Value::Bytes(hpke.clone())));
        }
        if let Some(owner) = &self.owner {
            entries.push((Value::Text("owner".into()), Value::Text(owner.clone())));
        }
        let map = Value::Map(entries);
        let mut out = Vec::with_capacity(128);
        // Writing a Value into a Vec cannot fail.
        let _ = ciborium::ser::into_writer(&map, &mut out);
        out
    }

    /// Decodes binding bytes. Unknown extra fields are allowed (later versions add e.g. an
    /// HPKE key); `v` must be 1 and `jkt` / `did` must be present text.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let value = cbor::decode_value("binding", bytes, MAX_BINDING_LEN)?;
        let Value::Map(entries) = value else {
            return Err(ProtocolError::invalid("binding", "not a CBOR map"));
        };
        let v = match cbor::map_get(&entries, "v") {
            Some(Value::Integer(i)) => u64::try_from(*i)
                .map_err(|_| ProtocolError::invalid("binding", "v out of range"))?,
            _ => return Err(ProtocolError::invalid("binding", "missing integer field v")),
        };
        if v != 1 {
            return Err(ProtocolError::invalid(
                "binding",
                format!("unsupported version {v}"),
            ));
        }
        let text = |key: &'static str| match cbor::map_get(&entries, key) {
            Some(Value::Text(t)) if !t.is_empty() && t.len() <= 256 => Ok(t.clone()),
            _ => Err(ProtocolError::invalid(
                "binding",
                format!("missing text field {key}"),
            )),
        };
        let owner = match cbor::map_get(&entries, "owner") {
            None => None,
            Some(Value::Text(t)) if t.starts_with("did:") && t.len() <= 256 => Some(t.clone()),
            Some(_) => {
                return Err(ProtocolError::invalid(
                    "binding",
                    "owner must be a DID of at most 256 bytes",
                ))
            }
        };
        let hpke = match cbor::map_get(&entries, "hpke") {
            None => None,
            Some(Value::Bytes(b)) if b.len() == HPKE_KEY_LEN => Some(b.clone()),
            Some(_) => {
                return Err(ProtocolError::invalid(
                    "binding",
                    "hpke must be the 32-byte X25519 public key",
                ))
            }
        };
        Ok(KeyBinding {
            v,
            jkt: text("jkt")?,
            did: text("did")?,
            hpke,
            owner,
        })
    }
}

/// The SEV-SNP `report_data` that binds `binding` to a verifier's `nonce`:
/// SHA-512(binding ‖ nonce), the 64 bytes the guest asks the firmware to sign. The enclave
/// computes it when it requests a report; verifiers recompute it from the envelope's
/// `binding` and `nonce` and compare.
pub fn snp_report_data(binding: &[u8], nonce: &[u8]) -> [u8; 64] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA512);
    ctx.update(binding);
    ctx.update(nonce);
    let mut out = [0u8; 64];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snp_report_data_is_sha512_of_binding_then_nonce() {
        // FIPS 180-2's SHA-512("abc"): binding first, then nonce, nothing between.
        assert_eq!(
            hex(&snp_report_data(b"ab", b"c")),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
        assert_ne!(snp_report_data(b"ab", b"c"), snp_report_data(b"c", b"ab"));
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn round_trip_is_deterministic() {
        let mut b = KeyBinding {
            v: 1,
            jkt: "abc".into(),
            did: "did:key:z6Mk".into(),
            hpke: None,
            owner: None,
        };
        let bytes = b.to_cbor();
        assert_eq!(&bytes[..3], &[0xa3, 0x61, b'v']);
        assert_eq!(KeyBinding::from_cbor(&bytes).unwrap(), b);
        assert_eq!(b.to_cbor(), bytes);
        b.owner = Some("did:key:z6MkOwner".into());
        let locked = b.to_cbor();
        assert_eq!(&locked[..3], &[0xa4, 0x61, b'v']);
        assert_eq!(KeyBinding::from_cbor(&locked).unwrap(), b);
        assert_ne!(locked, bytes, "the owner changes the binding bytes");
        // An owner that is not a DID is refused, not dropped.
        let bad = locked
            .windows(5)
            .position(|w| w == b"did:k")
            .map(|_| {
                let mut v = locked.clone();
                let at = v.len() - "did:key:z6MkOwner".len();
                v[at] = b'x';
                v
            })
            .unwrap();
        assert!(KeyBinding::from_cbor(&bad).is_err());
    }

    #[test]
    fn hpke_key_is_bound_in_key_order_and_checked() {
        let mut b = KeyBinding {
            v: 1,
            jkt: "j".into(),
            did: "d".into(),
            hpke: Some(vec![7; 32]),
            owner: Some("did:key:o".into()),
        };
        let bytes = b.to_cbor();
        let keys: Vec<usize> = ["did", "jkt", "hpke", "owner"]
            .iter()
            .map(|k| {
                bytes
                    .windows(k.len())
                    .position(|w| w == k.as_bytes())
                    .unwrap()
            })
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        assert_eq!(KeyBinding::from_cbor(&bytes).unwrap(), b);
        let without = KeyBinding {
            hpke: None,
            ..b.clone()
        };
        assert_ne!(
            without.to_cbor(),
            bytes,
            "the HPKE key changes the binding bytes"
        );
        b.hpke = Some(vec![7; 31]);
        assert!(KeyBinding::from_cbor(&b.to_cbor()).is_err());
    }

    #[test]
    fn rejects_wrong_version_and_shape() {
        let mut b = KeyBinding {
            v: 2,
            jkt: "a".into(),
            did: "d".into(),
            hpke: None,
            owner: None,
        };
        assert!(KeyBinding::from_cbor(&b.to_cbor()).is_err());
        b.v = 1;
        b.jkt.clear();
        assert!(KeyBinding::from_cbor(&b.to_cbor()).is_err());
        assert!(KeyBinding::from_cbor(&[0x80]).is_err());
    }
}
