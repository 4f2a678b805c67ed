//! COSE_Sign1 (RFC 9052 §4.2), tagged (18) or untagged, decoded over the bounded CBOR reader.
//!
//! Only what attestation documents use is accepted: a protected header that is a map with
//! integer or text labels, an unprotected map, an attached payload and a signature. The
//! to-be-signed bytes are rebuilt from the protected header and payload bytes exactly as
//! received.
use ciborium::Value;

use crate::VerifyError;
use cada_protocol::{cbor, ProtocolError};

/// COSE header label `alg`.
const LABEL_ALG: i128 = 1;
/// COSE header label `crit`.
const LABEL_CRIT: i128 = 2;
/// CBOR tag of COSE_Sign1.
const TAG_SIGN1: u64 = 18;

/// The COSE algorithm ES384.
pub const ALG_ES384: i128 = -35;
/// The algorithm QEMU's emulated NSM writes into unsigned documents.
pub const ALG_EMULATOR_UNSIGNED: i128 = -1;

/// A decoded COSE_Sign1.
#[derive(Debug, Clone)]
pub struct Sign1 {
    /// Protected header bytes as received.
    pub protected: Vec<u8>,
    /// The `alg` of the protected header, if any.
    pub alg: Option<i128>,
    /// Whether any header marks parameters critical.
    pub has_crit: bool,
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// The signature bytes.
    pub signature: Vec<u8>,
}

fn malformed(detail: impl Into<String>) -> VerifyError {
    VerifyError::Cose(detail.into())
}

fn protocol_to_cose(e: ProtocolError) -> VerifyError {
    match e {
        ProtocolError::TooLarge { what, len, max } => VerifyError::TooLarge { what, len, max },
        other => VerifyError::Cose(other.to_string()),
    }
}

/// Decodes a COSE_Sign1 of at most `max_len` bytes.
pub fn decode(bytes: &[u8], max_len: usize) -> Result<Sign1, VerifyError> {
    let value = cbor::decode_value("COSE_Sign1", bytes, max_len).map_err(protocol_to_cose)?;
    let value = match value {
        Value::Tag(TAG_SIGN1, inner) => *inner,
        Value::Tag(t, _) => return Err(malformed(format!("CBOR tag {t} is not COSE_Sign1 (18)"))),
        v => v,
    };
    let Value::Array(items) = value else {
        return Err(malformed("expected an array of 4 elements"));
    };
    let [protected, unprotected, payload, signature]: [Value; 4] = items
        .try_into()
        .map_err(|v: Vec<Value>| malformed(format!("expected 4 elements, found {}", v.len())))?;
    let Value::Bytes(protected) = protected else {
        return Err(malformed("protected header is not a byte string"));
    };
    let (alg, crit_p) = if protected.is_empty() {
        (None, false)
    } else {
        let map = cbor::decode_value("COSE protected header", &protected, protected.len())
            .map_err(protocol_to_cose)?;
        let Value::Map(entries) = map else {
            return Err(malformed("protected header is not a map"));
        };
        header_fields(&entries)?
    };
    let Value::Map(unprotected) = unprotected else {
        return Err(malformed("unprotected header is not a map"));
    };
    // An algorithm in the unprotected header is not covered by the signature: ignored.
    let (_, crit_u) = header_fields(&unprotected)?;
    let payload = match payload {
        Value::Bytes(b) if !b.is_empty() => b,
        Value::Bytes(_) | Value::Null => return Err(VerifyError::MissingPayload),
        _ => return Err(malformed("payload is not a byte string")),
    };
    let Value::Bytes(signature) = signature else {
        return Err(malformed("signature is not a byte string"));
    };
    Ok(Sign1 {
        protected,
        alg,
        has_crit: crit_p || crit_u,
        payload,
        signature,
    })
}

fn header_fields(entries: &[(Value, Value)]) -> Result<(Option<i128>, bool), VerifyError> {
    let mut alg = None;
    let mut crit = false;
    for (k, v) in entries {
        match k {
            Value::Integer(i) if i128::from(*i) == LABEL_ALG => match v {
                Value::Integer(a) => alg = Some(i128::from(*a)),
                Value::Text(t) => return Err(VerifyError::UnsupportedAlgorithm(format!("{t:?}"))),
                _ => return Err(malformed("alg is neither an integer nor text")),
            },
            Value::Integer(i) if i128::from(*i) == LABEL_CRIT => crit = true,
            Value::Integer(_) | Value::Text(_) => {}
            _ => return Err(malformed("header label is neither an integer nor text")),
        }
    }
    Ok((alg, crit))
}

impl Sign1 {
    /// The Sig_structure `["Signature1", protected, h'', payload]` the signature covers.
    pub fn to_be_signed(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + self.protected.len() + 32);
        out.push(0x84);
        out.push(0x6a);
        out.extend_from_slice(b"Signature1");
        bstr(&mut out, &self.protected);
        out.push(0x40);
        bstr(&mut out, &self.payload);
        out
    }
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "each arm's range fits the type it casts to"
)]
fn bstr(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = bytes.len() as u64;
    match len {
        0..=23 => out.push(0x40 | len as u8),
        24..=0xff => out.extend_from_slice(&[0x58, len as u8]),
        0x100..=0xffff => {
            out.push(0x59);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0x5a);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
        _ => {
            out.push(0x5b);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    out.extend_from_slice(bytes);
}

/// Encodes a COSE_Sign1 (untagged). Used by the software (`sim`) platform to produce
/// documents in exactly the Nitro format.
pub fn encode_sign1(protected: &[u8], payload: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + signature.len() + 32);
    out.push(0x84);
    bstr(&mut out, protected);
    out.push(0xa0);
    bstr(&mut out, payload);
    bstr(&mut out, signature);
    out
}

/// The Sig_structure for a protected header and payload (for signers).
pub fn to_be_signed(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    Sign1 {
        protected: protected.to_vec(),
        alg: None,
        has_crit: false,
        payload: payload.to_vec(),
        signature: Vec::new(),
    }
    .to_be_signed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_shape_errors() {
        let protected = [0xa1, 0x01, 0x38, 0x22]; // {1: -35}
        let enc = encode_sign1(&protected, b"payload", &[7u8; 96]);
        let s = decode(&enc, 1 << 16).unwrap();
        assert_eq!(s.alg, Some(ALG_ES384));
        assert!(!s.has_crit);
        assert_eq!(s.payload, b"payload");
        let mut tagged = vec![0xd2];
        tagged.extend_from_slice(&enc);
        assert_eq!(decode(&tagged, 1 << 16).unwrap().payload, b"payload");
        let mut wrong_tag = vec![0xd1];
        wrong_tag.extend_from_slice(&enc);
        assert!(matches!(
            decode(&wrong_tag, 1 << 16),
            Err(VerifyError::Cose(_))
        ));
        assert!(matches!(
            decode(&[0x83, 0x40, 0xa0, 0x40], 64),
            Err(VerifyError::Cose(_))
        ));
        let detached = encode_sign1(&protected, b"", &[0u8; 96]);
        assert!(matches!(
            decode(&detached, 1 << 16),
            Err(VerifyError::MissingPayload)
        ));
        // {1: -35, 2: [1]}
        let crit = encode_sign1(
            &[0xa2, 0x01, 0x38, 0x22, 0x02, 0x81, 0x01],
            b"p",
            &[0u8; 96],
        );
        assert!(decode(&crit, 1 << 16).unwrap().has_crit);
        assert!(matches!(
            decode(&enc, 10),
            Err(VerifyError::TooLarge { .. })
        ));
    }
}
