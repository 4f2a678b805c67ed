//! TPM 2.0 evidence (envelope platform `tpm`): what the envelope's `document` and `certs`
//! hold, and the key binding rule. Formats only; verification lives in
//! `cada-attestation-verifier`'s `tpm` module.
//!
//! # The signing key
//!
//! The signer creates its proof key **in the TPM**: ECC NIST P-256, scheme ECDSA/SHA-256 (or
//! `TPM_ALG_NULL`), nameAlg SHA-256, attributes `sign` and `fixedTPM`, `fixedParent`,
//! `sensitiveDataOrigin` set; `restricted`, `decrypt`, `encryptedDuplication` clear (see
//! [`KEY_ATTRS_REQUIRED`], [`KEY_ATTRS_FORBIDDEN`]). Proofs are ES256 JWS signed with it (a
//! TPM has no Ed25519), so the key binding's `jkt` is the RFC 7638 thumbprint of that P-256
//! key — unless a session key is used (below).
//!
//! # `document`: a CBOR map with text keys (deterministic encoding, RFC 8949 §4.2.1)
//!
//! | key | type | content |
//! |---|---|---|
//! | `"v"` | uint | 1 |
//! | `"ak"` | bstr | the attestation key's `TPMT_PUBLIC` (marshalled, without the `TPM2B` size) |
//! | `"ak_certs"` | uint | AK bound by certificate: how many of the envelope's `certs`, from the first, are the AK certificate chain (leaf first); the rest are the EK certificate chain (leaf first). Roots may be included or left out. |
//! | `"hcl"` | bstr | AK bound by an Azure confidential VM's HCL report instead: the report (its SNP report's `report_data[0..32]` = SHA-256 of its runtime claims, which hold the AK public key as `HCLAkPub`); the envelope's `certs` are then VCEK, ASK, ARK |
//! | `"key"` | bstr | the certified key's `TPMT_PUBLIC` |
//! | `"certify"` | bstr | `TPMS_ATTEST` of `TPM2_Certify(key, AK)` (`certifyInfo`) |
//! | `"certify_sig"` | bstr | its `TPMT_SIGNATURE` by the AK |
//! | `"quote"` | bstr | `TPMS_ATTEST` of `TPM2_Quote(AK, selection)` |
//! | `"quote_sig"` | bstr | its `TPMT_SIGNATURE` by the AK |
//! | `"pcrs"` | [bstr] | the PCR values the quote selects, in the quote's order: each `TPMS_PCR_SELECTION` of its `TPML_PCR_SELECTION` in turn, PCR indices ascending (the order `TPM2_PCR_Read` returns and the quote's `pcrDigest` hashes) |
//! | `"log"` | bstr | optional: the TCG event log (crypto-agile format, as `/sys/kernel/security/tpm0/binary_bios_measurements` holds it), at most [`MAX_EVENT_LOG_LEN`] bytes |
//! | `"session"` | map | optional: a session key ([`SessionKey`]): `{"nbf": uint, "exp": uint, "sig": bstr}` |
//!
//! Exactly one of `ak_certs` (≥ 1) and `hcl` is present; unknown keys are refused.
//!
//! # Key binding
//!
//! Both `TPMS_ATTEST` structures carry `extraData` (the command's `qualifyingData`) =
//! [`qualifying_data`] = SHA-256(binding bytes ‖ verifier nonce), 32 bytes — the binding
//! and nonce travel in the envelope, as for SEV-SNP. TPMS_ATTEST has no wall-clock time:
//! freshness comes from the nonce (a verifier-issued nonce, or first-seen).
//!
//! # AK ↔ EK: an AK certificate issued at enrollment
//!
//! The AK is bound to the TPM's endorsement key by an X.509 **AK certificate** whose
//! SubjectPublicKeyInfo is the AK's public key, issued after credential activation
//! (`TPM2_MakeCredential` to the EK with the AK's name, `TPM2_ActivateCredential` in the
//! TPM) by a CA the verifier trusts for AK certificates: the owner's or operator's
//! enrollment CA, or a cloud's (Google's vTPM AK certificates). Credential activation itself
//! is interactive and convinces only the party that ran it, so verifiers that were not there
//! (a gate, an STS) rely on the certificate the enrollment CA issued after it.
//!
//! An enrollment CA names the EK it activated against: a SubjectAltName `otherName`
//! `hardwareModuleName` (RFC 4108: `hwType` = [`EK_HW_TYPE`] tcg-kp-EKCertificate,
//! `hwSerialNum` = SHA-256 of the EK's DER SubjectPublicKeyInfo), built by
//! [`ek_binding_san`]; its certificate carries the extended key usage
//! tcg-kp-AIKCertificate ([`AK_CERT_EKU`]), and its subjectKeyIdentifier is the AK's TPM
//! name (nameAlg ‖ H(TPMT_PUBLIC), 34 bytes for SHA-256: RFC 5280 lets a CA choose how it
//! derives the identifier), so that the AK's attributes the verifier checks are those the
//! CA activated. The verifier then requires the EK certificate
//! chain in the envelope, checks it to the pinned manufacturer roots (or roots the policy
//! adds, e.g. swtpm's local CA), and that its key is the EK the AK certificate names.
//! Firmware TPMs without an EK certificate cannot be enrolled this way: they need an
//! enrollment CA that vouches for the TPM by other means and issues an AK certificate
//! without `hardwareModuleName`; the verifier then reports no EK and accepts such an AK
//! certificate only from a root that vouches for the TPM alone: a pinned cloud AK root, or
//! one the policy lists as `[tpm] ak_roots_without_ek`.
//!
//! # Session keys
//!
//! A TPM signs in tens to hundreds of milliseconds. With `"session"`, the proof key is a
//! short-lived software key (any CADA algorithm) whose thumbprint is the binding's `jkt`;
//! the certified TPM key signs [`session_digest`] (`TPM2_Sign`, ECDSA/SHA-256: the
//! SHA-256 of [`session_message`], its validity `nbf`..`exp` in Unix seconds, at most
//! [`MAX_SESSION_SECS`] apart, and the same qualifying data); `sig` is that
//! `TPMT_SIGNATURE`. The session key lives in process memory: whoever reads that memory can
//! sign until `exp`. Verifiers cap the evidence at `exp` and a policy can refuse session
//! keys altogether.
use ciborium::Value;

use crate::{cbor, ProtocolError};

/// Format version of the TPM document.
pub const TPM_DOCUMENT_VERSION: u64 = 1;
/// Largest encoded TPM document accepted (the envelope as a whole is bounded by
/// [`crate::envelope::MAX_ENVELOPE_LEN`]).
pub const MAX_TPM_DOCUMENT_LEN: usize = 56 * 1024;
/// Largest TPM structure (`TPMT_PUBLIC`, `TPMS_ATTEST`, `TPMT_SIGNATURE`) carried.
pub const MAX_TPM_STRUCT_LEN: usize = 1024;
/// Largest TCG event log carried.
pub const MAX_EVENT_LOG_LEN: usize = 48 * 1024;
/// Largest Azure HCL report carried.
pub const MAX_HCL_REPORT_LEN: usize = 8 * 1024;
/// Most PCR values carried (24 PCRs in up to four banks).
pub const MAX_PCR_VALUES: usize = 96;
/// Largest PCR value (SHA-512).
pub const MAX_PCR_VALUE_LEN: usize = 64;
/// Most certificates in an AK chain.
pub const MAX_AK_CERTS: u64 = 4;
/// Longest session-key lifetime the format allows (a policy may allow less).
pub const MAX_SESSION_SECS: u64 = 24 * 3600;

/// `TPMA_OBJECT` bits (TPM 2.0 Library Part 2, §8.3).
pub mod attrs {
    /// fixedTPM: the object cannot be duplicated out of this TPM.
    pub const FIXED_TPM: u32 = 1 << 1;
    /// stClear.
    pub const ST_CLEAR: u32 = 1 << 2;
    /// fixedParent: the object cannot be duplicated to another parent.
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// sensitiveDataOrigin: the TPM generated the private key.
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// userWithAuth.
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    /// adminWithPolicy.
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    /// noDA.
    pub const NO_DA: u32 = 1 << 10;
    /// encryptedDuplication.
    pub const ENCRYPTED_DUPLICATION: u32 = 1 << 11;
    /// restricted: signs only TPM-generated data (an attestation key) or is a parent.
    pub const RESTRICTED: u32 = 1 << 16;
    /// decrypt.
    pub const DECRYPT: u32 = 1 << 17;
    /// sign / encrypt.
    pub const SIGN: u32 = 1 << 18;
    /// x509sign.
    pub const X509_SIGN: u32 = 1 << 19;
}

/// Attributes the certified (proof) key must have.
pub const KEY_ATTRS_REQUIRED: u32 =
    attrs::SIGN | attrs::FIXED_TPM | attrs::FIXED_PARENT | attrs::SENSITIVE_DATA_ORIGIN;
/// Attributes the certified (proof) key must not have.
pub const KEY_ATTRS_FORBIDDEN: u32 =
    attrs::RESTRICTED | attrs::DECRYPT | attrs::ENCRYPTED_DUPLICATION | attrs::X509_SIGN;
/// Attributes the attestation key must have.
pub const AK_ATTRS_REQUIRED: u32 = attrs::RESTRICTED
    | attrs::SIGN
    | attrs::FIXED_TPM
    | attrs::FIXED_PARENT
    | attrs::SENSITIVE_DATA_ORIGIN;
/// Attributes the attestation key must not have.
pub const AK_ATTRS_FORBIDDEN: u32 = attrs::DECRYPT;

/// Extended key usage an enrollment CA's AK certificate carries: tcg-kp-AIKCertificate.
pub const AK_CERT_EKU: &str = "2.23.133.8.3";
/// `hwType` of the `hardwareModuleName` naming the EK in an AK certificate:
/// tcg-kp-EKCertificate (the serial identifies the TPM by its endorsement key).
pub const EK_HW_TYPE: &str = "2.23.133.8.1";
/// RFC 4108 id-on-hardwareModuleName.
pub const HARDWARE_MODULE_NAME: &str = "1.3.6.1.5.5.7.8.4";
/// Domain separation of the session-key statement.
pub const SESSION_CONTEXT: &[u8] = b"CADA-TPM-session-v1\0";

/// The `qualifyingData` of `TPM2_Certify` and `TPM2_Quote`: SHA-256(binding ‖ nonce).
pub fn qualifying_data(binding: &[u8], nonce: &[u8]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(binding);
    ctx.update(nonce);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The statement a session key's certificate covers: [`SESSION_CONTEXT`] ‖ nbf as u64
/// big-endian ‖ exp as u64 big-endian ‖ the qualifying data (76 bytes). The certified key
/// signs its SHA-256 ([`session_digest`]) with `TPM2_Sign`; a verifier checks an ordinary
/// ECDSA P-256/SHA-256 signature over these bytes.
pub fn session_message(qualifying: &[u8; 32], nbf: u64, exp: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(SESSION_CONTEXT.len() + 16 + 32);
    m.extend_from_slice(SESSION_CONTEXT);
    m.extend_from_slice(&nbf.to_be_bytes());
    m.extend_from_slice(&exp.to_be_bytes());
    m.extend_from_slice(qualifying);
    m
}

/// The digest the certified TPM key signs (`TPM2_Sign`) for a session key valid
/// `nbf`..`exp` (Unix seconds): SHA-256 of [`session_message`].
pub fn session_digest(qualifying: &[u8; 32], nbf: u64, exp: u64) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &session_message(qualifying, nbf, exp),
    );
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// How the AK is bound to the TPM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AkBinding {
    /// An AK certificate chain: the first `n` envelope certificates (leaf first); the rest
    /// are the EK certificate chain.
    Certificate {
        /// Length of the AK chain in the envelope's `certs`.
        ak_certs: usize,
    },
    /// An Azure confidential VM's HCL report, whose runtime claims hold the AK public key;
    /// the envelope's `certs` are the VCEK chain of its SNP report.
    AzureHcl {
        /// The HCL report bytes.
        report: Vec<u8>,
    },
}

/// A short-lived session key certified by the TPM key (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionKey {
    /// Not valid before (Unix seconds).
    pub nbf: u64,
    /// Not valid after (Unix seconds).
    pub exp: u64,
    /// `TPMT_SIGNATURE` of the certified key over [`session_digest`].
    pub sig: Vec<u8>,
}

/// The decoded TPM document (structures still marshalled; the verifier parses them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmDocument {
    /// The AK's `TPMT_PUBLIC`.
    pub ak: Vec<u8>,
    /// How the AK is bound to the TPM.
    pub ak_binding: AkBinding,
    /// The certified key's `TPMT_PUBLIC`.
    pub key: Vec<u8>,
    /// `TPMS_ATTEST` of `TPM2_Certify`.
    pub certify: Vec<u8>,
    /// Its `TPMT_SIGNATURE`.
    pub certify_sig: Vec<u8>,
    /// `TPMS_ATTEST` of `TPM2_Quote`.
    pub quote: Vec<u8>,
    /// Its `TPMT_SIGNATURE`.
    pub quote_sig: Vec<u8>,
    /// PCR values in the quote's selection order.
    pub pcrs: Vec<Vec<u8>>,
    /// The TCG event log, if sent.
    pub log: Option<Vec<u8>>,
    /// The session key, if the proof key is one.
    pub session: Option<SessionKey>,
}

fn t(s: &str) -> Value {
    Value::Text(s.into())
}

fn b(v: &[u8]) -> Value {
    Value::Bytes(v.to_vec())
}

/// Sorts map entries with text keys in RFC 8949 §4.2.1 order (shorter first, then bytes).
fn canonical(mut entries: Vec<(Value, Value)>) -> Value {
    entries.sort_by(|(a, _), (b, _)| match (a, b) {
        (Value::Text(a), Value::Text(b)) => a.len().cmp(&b.len()).then(a.cmp(b)),
        _ => std::cmp::Ordering::Equal,
    });
    Value::Map(entries)
}

const KEYS: [&str; 12] = [
    "v",
    "ak",
    "ak_certs",
    "hcl",
    "key",
    "certify",
    "certify_sig",
    "quote",
    "quote_sig",
    "pcrs",
    "log",
    "session",
];

impl TpmDocument {
    /// Deterministic CBOR encoding.
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut e = vec![
            (t("v"), Value::Integer(TPM_DOCUMENT_VERSION.into())),
            (t("ak"), b(&self.ak)),
            (t("key"), b(&self.key)),
            (t("certify"), b(&self.certify)),
            (t("certify_sig"), b(&self.certify_sig)),
            (t("quote"), b(&self.quote)),
            (t("quote_sig"), b(&self.quote_sig)),
            (
                t("pcrs"),
                Value::Array(self.pcrs.iter().map(|p| b(p)).collect()),
            ),
        ];
        match &self.ak_binding {
            AkBinding::Certificate { ak_certs } => {
                e.push((
                    t("ak_certs"),
                    Value::Integer(u64::try_from(*ak_certs).unwrap_or(u64::MAX).into()),
                ));
            }
            AkBinding::AzureHcl { report } => e.push((t("hcl"), b(report))),
        }
        if let Some(log) = &self.log {
            e.push((t("log"), b(log)));
        }
        if let Some(s) = &self.session {
            e.push((
                t("session"),
                canonical(vec![
                    (t("nbf"), Value::Integer(s.nbf.into())),
                    (t("exp"), Value::Integer(s.exp.into())),
                    (t("sig"), b(&s.sig)),
                ]),
            ));
        }
        let mut out = Vec::with_capacity(2048);
        // Writing a Value into a Vec cannot fail.
        let _ = ciborium::ser::into_writer(&canonical(e), &mut out);
        out
    }

    /// Decodes a TPM document with every limit: size, nesting, duplicate and unknown keys,
    /// each structure's size, the PCR count, exactly one AK binding.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, ProtocolError> {
        const W: &str = "TPM document";
        let bad = |d: String| ProtocolError::invalid(W, d);
        let value = cbor::decode_value(W, bytes, MAX_TPM_DOCUMENT_LEN)?;
        let Value::Map(entries) = value else {
            return Err(bad("not a CBOR map".into()));
        };
        for (k, _) in &entries {
            match k {
                Value::Text(k) if KEYS.contains(&k.as_str()) => {}
                Value::Text(k) => {
                    return Err(bad(format!(
                        "unknown key {:?}",
                        k.chars().take(32).collect::<String>()
                    )))
                }
                _ => return Err(bad("map keys must be text".into())),
            }
        }
        let get = |k: &str| cbor::map_get(&entries, k);
        match get("v") {
            Some(Value::Integer(i)) if u64::try_from(*i).ok() == Some(TPM_DOCUMENT_VERSION) => {}
            Some(_) => return Err(bad("unsupported version (v must be 1)".into())),
            None => return Err(bad("missing v".into())),
        }
        let bytes_of = |k: &'static str, max: usize| -> Result<Vec<u8>, ProtocolError> {
            match get(k) {
                Some(Value::Bytes(v)) if !v.is_empty() && v.len() <= max => Ok(v.clone()),
                Some(Value::Bytes(v)) if v.is_empty() => Err(bad(format!("{k} is empty"))),
                Some(Value::Bytes(v)) => Err(ProtocolError::TooLarge {
                    what: k,
                    len: v.len(),
                    max,
                }),
                Some(_) => Err(bad(format!("{k} must be a byte string"))),
                None => Err(bad(format!("missing {k}"))),
            }
        };
        let ak_binding = match (get("ak_certs"), get("hcl")) {
            (Some(Value::Integer(n)), None) => match u64::try_from(*n) {
                Ok(n) if (1..=MAX_AK_CERTS).contains(&n) => AkBinding::Certificate {
                    ak_certs: usize::try_from(n).map_err(|_| bad("ak_certs".into()))?,
                },
                _ => {
                    return Err(bad(format!(
                        "ak_certs must be 1..={MAX_AK_CERTS} (the AK certificate chain's length)"
                    )))
                }
            },
            (Some(_), None) => return Err(bad("ak_certs must be an unsigned integer".into())),
            (None, Some(_)) => AkBinding::AzureHcl {
                report: bytes_of("hcl", MAX_HCL_REPORT_LEN)?,
            },
            (None, None) => {
                return Err(bad(
                    "no AK binding: give ak_certs (an AK certificate chain) or hcl (an Azure HCL report)"
                        .into(),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(bad("two AK bindings: give ak_certs or hcl, not both".into()))
            }
        };
        let pcrs = match get("pcrs") {
            Some(Value::Array(items)) if items.len() <= MAX_PCR_VALUES => items
                .iter()
                .map(|v| match v {
                    Value::Bytes(p) if !p.is_empty() && p.len() <= MAX_PCR_VALUE_LEN => {
                        Ok(p.clone())
                    }
                    _ => Err(bad(format!(
                        "each PCR value must be a byte string of 1..={MAX_PCR_VALUE_LEN} bytes"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(Value::Array(_)) => {
                return Err(bad(format!("more than {MAX_PCR_VALUES} PCR values")))
            }
            Some(_) => return Err(bad("pcrs must be an array of byte strings".into())),
            None => return Err(bad("missing pcrs".into())),
        };
        let log = match get("log") {
            None => None,
            Some(_) => Some(bytes_of("log", MAX_EVENT_LOG_LEN)?),
        };
        let session = match get("session") {
            None => None,
            Some(Value::Map(s)) => {
                if s.len() != 3 {
                    return Err(bad("session must be {nbf, exp, sig}".into()));
                }
                let secs = |k: &str| match cbor::map_get(s, k) {
                    Some(Value::Integer(i)) => u64::try_from(*i)
                        .map_err(|_| bad(format!("session {k} must be Unix seconds"))),
                    _ => Err(bad(format!("session {k} must be Unix seconds"))),
                };
                let (nbf, exp) = (secs("nbf")?, secs("exp")?);
                if exp <= nbf || exp - nbf > MAX_SESSION_SECS {
                    return Err(bad(format!(
                        "session lifetime {nbf}..{exp} must be positive and at most {MAX_SESSION_SECS} s"
                    )));
                }
                let sig = match cbor::map_get(s, "sig") {
                    Some(Value::Bytes(v)) if !v.is_empty() && v.len() <= MAX_TPM_STRUCT_LEN => {
                        v.clone()
                    }
                    _ => return Err(bad("session sig must be a TPMT_SIGNATURE".into())),
                };
                Some(SessionKey { nbf, exp, sig })
            }
            Some(_) => return Err(bad("session must be a map".into())),
        };
        Ok(TpmDocument {
            ak: bytes_of("ak", MAX_TPM_STRUCT_LEN)?,
            ak_binding,
            key: bytes_of("key", MAX_TPM_STRUCT_LEN)?,
            certify: bytes_of("certify", MAX_TPM_STRUCT_LEN)?,
            certify_sig: bytes_of("certify_sig", MAX_TPM_STRUCT_LEN)?,
            quote: bytes_of("quote", MAX_TPM_STRUCT_LEN)?,
            quote_sig: bytes_of("quote_sig", MAX_TPM_STRUCT_LEN)?,
            pcrs,
            log,
            session,
        })
    }
}

fn der_len(len: usize, out: &mut Vec<u8>) {
    // The structures built here are far below 64 KiB.
    let len = u16::try_from(len).unwrap_or(u16::MAX);
    match u8::try_from(len) {
        Ok(l) if l < 0x80 => out.push(l),
        Ok(l) => out.extend_from_slice(&[0x81, l]),
        Err(_) => {
            out.push(0x82);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    der_len(content.len(), &mut out);
    out.extend_from_slice(content);
    out
}

/// DER of an OID's content octets (dotted text).
fn oid_der(dotted: &str) -> Vec<u8> {
    let arcs: Vec<u64> = dotted.split('.').filter_map(|a| a.parse().ok()).collect();
    let mut body = Vec::new();
    if let [a, b, rest @ ..] = arcs.as_slice() {
        let mut push = |mut v: u64| {
            let low = |v: u64| u8::try_from(v & 0x7f).unwrap_or(0);
            let mut tmp = vec![low(v)];
            v >>= 7;
            while v > 0 {
                tmp.push(0x80 | low(v));
                v >>= 7;
            }
            tmp.reverse();
            body.extend_from_slice(&tmp);
        };
        push(a * 40 + b);
        for r in rest {
            push(*r);
        }
    }
    der(0x06, &body)
}

/// The value (DER `SubjectAltName`) of the extension an enrollment CA puts in an AK
/// certificate to name the EK it activated the AK against: one `otherName`
/// `hardwareModuleName { hwType tcg-kp-EKCertificate, hwSerialNum SHA-256(EK SPKI DER) }`.
/// Add it as extension 2.5.29.17 (not critical).
pub fn ek_binding_san(ek_spki_der: &[u8]) -> Vec<u8> {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, ek_spki_der);
    let hmn = der(
        0x30,
        &[oid_der(EK_HW_TYPE), der(0x04, digest.as_ref())].concat(),
    );
    let other_name = der(
        0xa0,
        &[oid_der(HARDWARE_MODULE_NAME), der(0xa0, &hmn)].concat(),
    );
    der(0x30, &other_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TpmDocument {
        TpmDocument {
            ak: vec![1; 90],
            ak_binding: AkBinding::Certificate { ak_certs: 1 },
            key: vec![2; 90],
            certify: vec![3; 120],
            certify_sig: vec![4; 72],
            quote: vec![5; 140],
            quote_sig: vec![6; 72],
            pcrs: vec![vec![0; 32], vec![7; 32]],
            log: None,
            session: None,
        }
    }

    #[test]
    fn round_trip_is_deterministic() {
        let mut d = sample();
        let bytes = d.to_cbor();
        assert_eq!(TpmDocument::from_cbor(&bytes).unwrap(), d);
        assert_eq!(d.to_cbor(), bytes);
        // Shortest keys first: "v" leads.
        assert_eq!(&bytes[1..3], &[0x61, b'v']);
        d.ak_binding = AkBinding::AzureHcl {
            report: vec![9; 2600],
        };
        d.log = Some(vec![8; 100]);
        d.session = Some(SessionKey {
            nbf: 10,
            exp: 910,
            sig: vec![1; 72],
        });
        assert_eq!(TpmDocument::from_cbor(&d.to_cbor()).unwrap(), d);
    }

    fn with(edit: impl FnOnce(&mut Vec<(Value, Value)>)) -> Vec<u8> {
        let v: Value = ciborium::de::from_reader(sample().to_cbor().as_slice()).unwrap();
        let Value::Map(mut e) = v else { panic!() };
        edit(&mut e);
        let mut out = Vec::new();
        ciborium::ser::into_writer(&Value::Map(e), &mut out).unwrap();
        out
    }

    #[test]
    fn refuses_bad_shapes() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (with(|e| e.push((t("x"), Value::Null))), "unknown key"),
            (with(|e| e.push((t("hcl"), b(&[1])))), "two AK bindings"),
            (
                with(|e| e.retain(|(k, _)| k != &t("ak_certs"))),
                "no AK binding",
            ),
            (
                with(|e| {
                    for (k, v) in e.iter_mut() {
                        if k == &t("ak_certs") {
                            *v = Value::Integer(0.into());
                        }
                    }
                }),
                "ak_certs must be",
            ),
            (
                with(|e| {
                    for (k, v) in e.iter_mut() {
                        if k == &t("v") {
                            *v = Value::Integer(2.into());
                        }
                    }
                }),
                "version",
            ),
            (
                with(|e| {
                    for (k, v) in e.iter_mut() {
                        if k == &t("pcrs") {
                            *v = Value::Array(vec![b(&[0; 32]); MAX_PCR_VALUES + 1]);
                        }
                    }
                }),
                "PCR values",
            ),
            (
                with(|e| e.push((t("log"), b(&vec![0; MAX_EVENT_LOG_LEN + 1])))),
                "too",
            ),
            (
                with(|e| {
                    e.push((
                        t("session"),
                        Value::Map(vec![
                            (t("nbf"), Value::Integer(5.into())),
                            (t("exp"), Value::Integer(5.into())),
                            (t("sig"), b(&[1])),
                        ]),
                    ));
                }),
                "lifetime",
            ),
            (
                with(|e| e.retain(|(k, _)| k != &t("quote"))),
                "missing quote",
            ),
        ];
        for (bytes, want) in cases {
            let err = TpmDocument::from_cbor(&bytes).unwrap_err();
            assert!(
                err.to_string().contains(want) || err.code() == "too_large",
                "{want}: {err}"
            );
        }
        assert!(TpmDocument::from_cbor(&[0x80]).is_err());
        let big = vec![0u8; MAX_TPM_DOCUMENT_LEN + 1];
        assert_eq!(
            TpmDocument::from_cbor(&big).unwrap_err().code(),
            "too_large"
        );
    }

    #[test]
    fn every_truncation_and_flip_is_an_error_or_a_document() {
        let bytes = sample().to_cbor();
        for n in 0..bytes.len() {
            assert!(TpmDocument::from_cbor(&bytes[..n]).is_err(), "prefix {n}");
        }
        for i in 0..bytes.len() {
            let mut f = bytes.clone();
            f[i] ^= 0x01;
            let _ = TpmDocument::from_cbor(&f);
        }
    }

    #[test]
    fn qualifying_data_and_session_digest_are_separated() {
        // FIPS 180-2 SHA-256("abc"): binding first, then nonce.
        assert_eq!(
            qualifying_data(b"ab", b"c").to_vec(),
            vec![
                0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae,
                0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61,
                0xf2, 0x00, 0x15, 0xad
            ]
        );
        let q = qualifying_data(b"b", b"n");
        assert_ne!(session_digest(&q, 1, 2), session_digest(&q, 1, 3));
        assert_ne!(session_digest(&q, 1, 2), q);
    }

    #[test]
    fn ek_binding_san_is_der() {
        let san = ek_binding_san(b"spki");
        // SEQUENCE { [0] { OID 1.3.6.1.5.5.7.8.4, [0] { SEQUENCE { OID, OCTET STRING(32) } } } }
        assert_eq!(san[0], 0x30);
        assert_eq!(usize::from(san[1]), san.len() - 2);
        assert_eq!(
            &san[4..14],
            &[0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x08, 0x04]
        );
        let ek_oid = oid_der(EK_HW_TYPE);
        assert_eq!(ek_oid, vec![0x06, 0x05, 0x67, 0x81, 0x05, 0x08, 0x01]);
        assert!(san.windows(ek_oid.len()).any(|w| w == ek_oid));
    }
}
