//! The Nitro attestation document payload and its syntactic rules, as AWS's attestation
//! process documentation states them.
use std::collections::BTreeMap;

use ciborium::Value;
use serde::Serialize;

use crate::{UnixTime, VerifyError};
use cada_protocol::{cbor, ProtocolError};

/// Largest `public_key`.
pub const MAX_PUBLIC_KEY_LEN: usize = 1024;
/// Largest `user_data`.
pub const MAX_USER_DATA_LEN: usize = 512;
/// Largest `nonce`.
pub const MAX_NONCE_LEN: usize = 512;
/// Largest certificate in `certificate` / `cabundle`.
pub const MAX_DOC_CERT_LEN: usize = 1024;
/// Most PCRs a document may carry (NSM has 32).
pub const MAX_PCRS: usize = 32;
/// Most certificates in `cabundle`.
pub const MAX_CABUNDLE: usize = 16;

/// A decoded attestation document: every field, syntactically checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttestationDocument {
    /// Enclave id (`i-…-enc…`), or `sim-…` for the software platform.
    pub module_id: String,
    /// Digest algorithm of the PCRs (`SHA384`).
    pub digest: String,
    /// When the NSM produced the document.
    #[serde(serialize_with = "ser_time")]
    pub timestamp: UnixTime,
    /// PCR index → value.
    #[serde(serialize_with = "ser_pcrs")]
    pub pcrs: BTreeMap<u8, Vec<u8>>,
    /// Leaf certificate (DER) whose key signed the document.
    #[serde(serialize_with = "hex::serde::serialize")]
    pub certificate: Vec<u8>,
    /// CA bundle, root first (DER).
    #[serde(skip)]
    pub cabundle: Vec<Vec<u8>>,
    /// Optional public key (absent: `None`; empty byte string: `Some(vec![])`).
    #[serde(serialize_with = "ser_opt")]
    pub public_key: Option<Vec<u8>>,
    /// Optional user data.
    #[serde(serialize_with = "ser_opt")]
    pub user_data: Option<Vec<u8>>,
    /// Optional nonce.
    #[serde(serialize_with = "ser_opt")]
    pub nonce: Option<Vec<u8>>,
}

fn ser_time<S: serde::Serializer>(t: &UnixTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_string())
}

fn ser_pcrs<S: serde::Serializer>(p: &BTreeMap<u8, Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    let m: BTreeMap<String, String> = p
        .iter()
        .map(|(k, v)| (k.to_string(), hex::encode(v)))
        .collect();
    m.serialize(s)
}

fn ser_opt<S: serde::Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    v.as_ref().map(hex::encode).serialize(s)
}

fn field(field: &'static str, rule: impl Into<String>) -> VerifyError {
    VerifyError::Field {
        field,
        rule: rule.into(),
    }
}

fn bytes_in(name: &'static str, v: &Value, min: usize, max: usize) -> Result<Vec<u8>, VerifyError> {
    match v {
        Value::Bytes(b) if (min..=max).contains(&b.len()) => Ok(b.clone()),
        Value::Bytes(b) => Err(field(
            name,
            format!("length {} is outside {min}..={max}", b.len()),
        )),
        _ => Err(field(name, "must be a byte string")),
    }
}

fn optional_bytes(
    name: &'static str,
    v: Option<&Value>,
    max: usize,
) -> Result<Option<Vec<u8>>, VerifyError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => bytes_in(name, v, 0, max).map(Some),
    }
}

impl AttestationDocument {
    /// Decodes and checks the payload of a COSE_Sign1 attestation document.
    pub fn from_payload(payload: &[u8]) -> Result<Self, VerifyError> {
        let value = cbor::decode_value("attestation document", payload, payload.len()).map_err(
            |e| match e {
                ProtocolError::DuplicateKey { key, .. } => VerifyError::DuplicateKey(key),
                other => VerifyError::Payload(other.to_string()),
            },
        )?;
        let Value::Map(entries) = value else {
            return Err(VerifyError::Payload("the payload is not a CBOR map".into()));
        };
        let mut get = BTreeMap::new();
        for (k, v) in &entries {
            let Value::Text(k) = k else {
                return Err(VerifyError::Payload("a map key is not text".into()));
            };
            match k.as_str() {
                "nitrotpm_pcrs" => return Err(VerifyError::NotAnEnclaveDocument),
                "module_id" | "digest" | "timestamp" | "pcrs" | "certificate" | "cabundle"
                | "public_key" | "user_data" | "nonce" => {
                    get.insert(k.as_str(), v);
                }
                other => return Err(VerifyError::UnknownField(other.chars().take(64).collect())),
            }
        }
        let need = |k: &'static str| get.get(k).copied().ok_or(VerifyError::MissingField(k));

        let module_id = match need("module_id")? {
            Value::Text(t) if !t.is_empty() && t.len() <= 256 => t.clone(),
            _ => {
                return Err(field(
                    "module_id",
                    "must be non-empty text of at most 256 bytes",
                ))
            }
        };
        let digest = match need("digest")? {
            Value::Text(t) if t == "SHA384" => t.clone(),
            Value::Text(t) => return Err(field("digest", format!("{t:?} is not SHA384"))),
            _ => return Err(field("digest", "must be text")),
        };
        let timestamp = match need("timestamp")? {
            Value::Integer(i) => match u64::try_from(*i) {
                Ok(ms) if ms > 0 => UnixTime::from_millis(ms),
                _ => {
                    return Err(field(
                        "timestamp",
                        "must be a positive integer (ms since the epoch)",
                    ))
                }
            },
            _ => return Err(field("timestamp", "must be an unsigned integer")),
        };
        let pcrs = match need("pcrs")? {
            Value::Map(m) if !m.is_empty() && m.len() <= MAX_PCRS => {
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    let idx = match k {
                        Value::Integer(i) => u8::try_from(*i)
                            .ok()
                            .filter(|i| usize::from(*i) < MAX_PCRS)
                            .ok_or_else(|| field("pcrs", "index must be in 0..32"))?,
                        _ => return Err(field("pcrs", "index must be an integer")),
                    };
                    out.insert(idx, bytes_in("pcrs", v, 48, 48)?);
                }
                out
            }
            Value::Map(m) => {
                return Err(field(
                    "pcrs",
                    format!("must hold 1..=32 entries, holds {}", m.len()),
                ))
            }
            _ => return Err(field("pcrs", "must be a map")),
        };
        let certificate = bytes_in("certificate", need("certificate")?, 1, MAX_DOC_CERT_LEN)?;
        let cabundle = match need("cabundle")? {
            Value::Array(a) if !a.is_empty() && a.len() <= MAX_CABUNDLE => a
                .iter()
                .map(|c| bytes_in("cabundle", c, 1, MAX_DOC_CERT_LEN))
                .collect::<Result<Vec<_>, _>>()?,
            Value::Array(a) => {
                return Err(field(
                    "cabundle",
                    format!("must hold 1..=16 certificates, holds {}", a.len()),
                ))
            }
            _ => return Err(field("cabundle", "must be an array")),
        };
        Ok(AttestationDocument {
            module_id,
            digest,
            timestamp,
            pcrs,
            certificate,
            cabundle,
            public_key: optional_bytes(
                "public_key",
                get.get("public_key").copied(),
                MAX_PUBLIC_KEY_LEN,
            )?,
            user_data: optional_bytes(
                "user_data",
                get.get("user_data").copied(),
                MAX_USER_DATA_LEN,
            )?,
            nonce: optional_bytes("nonce", get.get("nonce").copied(), MAX_NONCE_LEN)?,
        })
    }

    /// Debug-mode enclaves report PCR0, PCR1 and PCR2 as all zeros.
    pub fn is_debug(&self) -> bool {
        (0u8..3).all(|i| self.pcrs.get(&i).is_none_or(|v| v.iter().all(|b| *b == 0)))
    }
}
