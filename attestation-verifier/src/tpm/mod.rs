//! TPM 2.0 evidence (platform `tpm`, format in [`cada_protocol::tpm`]): what a TPM can
//! prove about a key, checked from pinned manufacturer and cloud roots at an injected time.
//!
//! [`TpmVerifier::verify`] applies, in this order (each refusal a stable `tpm.*` code):
//!
//! | # | rule | code |
//! |---|------|------|
//! | 1 | the document decodes within its limits, every TPM structure parses (bounded, no trailing bytes) | `tpm.document`, `tpm.structure` |
//! | 2 | the AK is a restricted signing key that cannot leave its TPM (restricted, sign, fixedTPM, fixedParent, sensitiveDataOrigin; not decrypt), RSA ≥ 2048 or ECC P-256/P-384 | `tpm.ak_attributes`, `tpm.ak_algorithm` |
//! | 3 | the AK is bound to a genuine TPM: an AK certificate chain to a trusted AK root whose key is the AK and, from an enrollment CA, which names the EK (`hardwareModuleName`) whose certificate chain ends at a pinned manufacturer root (or one the policy adds); or an Azure HCL report whose SNP report verifies to AMD's roots and whose runtime claims (bound by `report_data`) hold the AK | `tpm.ak_chain`, `tpm.ak_untrusted_root`, `tpm.ak_cert_key`, `tpm.ak_cert_usage`, `tpm.ak_not_bound`, `tpm.ek_chain`, `tpm.ek_untrusted_root`, `tpm.hcl`, `tpm.hcl_snp`, `tpm.hcl_report_data`, `tpm.hcl_ak` |
//! | 4 | both attestation structures carry `TPM_GENERATED_VALUE` and the expected type, and verify under the AK with its scheme | `tpm.magic`, `tpm.attest_type`, `tpm.signature_scheme`, `tpm.certify_signature`, `tpm.quote_signature` |
//! | 5 | both carry `extraData` = SHA-256(binding ‖ nonce) | `tpm.nonce` |
//! | 6 | the certify names exactly the certified key (name = nameAlg ‖ H(TPMT_PUBLIC)) | `tpm.certify_name` |
//! | 7 | the certified key is an ECC P-256 signing key generated in the TPM that cannot leave it (sign; fixedTPM, fixedParent, sensitiveDataOrigin; not restricted, decrypt or encryptedDuplication) | `tpm.key_algorithm`, `tpm.key_attributes`, `tpm.key_duplicable`, `tpm.key_not_tpm_generated` |
//! | 8 | the key binding's `jkt` is the certified key — or, with a session key, the certified key signed the session statement, which is valid now, allowed and not longer than the policy allows | `tpm.key_binding`, `tpm.session_refused`, `tpm.session_too_long`, `tpm.session_signature`, `tpm.session_expired` |
//! | 9 | the PCR values hash to the quote's `pcrDigest` (hash of the signing scheme), one value of the bank's size per selected PCR | `tpm.pcr_values`, `tpm.pcr_digest` |
//! | 10 | the certify and the quote come from the same AK and the same boot (qualifiedSigner, resetCount, restartCount) | `tpm.attest_mismatch` |
//! | 11 | an event log, when sent, parses (every event with one digest per bank its Spec ID event declares) and replays, in every bank it declares and the quote selects, to the quoted PCRs it extends | `tpm.eventlog`, `tpm.eventlog_mismatch` |
//! | 12 | with `[tpm] require_key_policy`: the certified key's authPolicy is PolicyPCR over the quoted SHA-256 PCRs and `userWithAuth` is clear | `tpm.key_policy` |
//!
//! Which PCR values an audience allows is the policy's measurement rule (`TPM_PCR0` …
//! `TPM_PCR23`, SHA-256 bank; a PCR a set names but the quote did not select never
//! matches), applied by [`crate::decide`] like Nitro PCRs and SNP measurements.
//! Freshness is the nonce's (a verifier nonce, or first-seen; TPMS_ATTEST carries no
//! wall-clock time): see `[tpm] freshness` in [`crate::policy`].
pub mod eventlog;
pub mod structs;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use cada_protocol::binding::KeyBinding;
use cada_protocol::envelope::EvidenceEnvelope;
use cada_protocol::jwk::{Jwk, SigAlg};
use cada_protocol::tpm::{self as fmt, AkBinding, TpmDocument};
use der::{Decode, Encode, Reader as _};
use serde::Serialize;
use x509_cert::spki::ObjectIdentifier;

use crate::chain::{verify_path, ChainCache, LeafUsage, PathRules, TrustAnchor, TrustStore};
use crate::checks::Checks;
use crate::snp::{SnpPolicy, SnpVerifier};
use crate::x509::{KeyKind, ParsedCert};
use crate::{UnixTime, VerifyError};
use structs::{alg, curve, Attest, Attested, ClockInfo};
pub use structs::{Public, PublicKey, Signature};

const SAN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
const SKI: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
/// Reserved `TPMA_OBJECT` bits: a TPM never creates an object with one of them set.
const RESERVED_ATTRS: u32 = 0xfff0_f309;
const EKU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const CERT_POLICIES: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.32");
const SUBJECT_DIR_ATTRS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.9");
const HW_MODULE_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap(fmt::HARDWARE_MODULE_NAME);
const EK_HW_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap(fmt::EK_HW_TYPE);
const AK_CERT_EKU: ObjectIdentifier = ObjectIdentifier::new_unwrap(fmt::AK_CERT_EKU);
/// Critical extensions TPM certificates carry that this module understands: an EK
/// certificate's SAN is critical when its subject is empty (TCG EK credential profile).
const UNDERSTOOD: &[ObjectIdentifier] = &[SAN, EKU, CERT_POLICIES, SUBJECT_DIR_ATTRS];

/// Most certificates in an EK chain.
pub const MAX_EK_CERTS: usize = 4;

fn refuse(code: &'static str, detail: impl Into<String>) -> VerifyError {
    VerifyError::Tpm {
        code,
        detail: detail.into(),
    }
}

fn structure(e: &structs::TpmParseError) -> VerifyError {
    refuse("tpm.structure", format!("malformed {e}"))
}

/// TPM evidence rules of a policy (`[tpm]`).
#[derive(Debug, Clone, Serialize)]
pub struct TpmPolicy {
    /// Accept evidence whose proof key is a session key certified by the TPM key
    /// (default `true`); `false` requires every proof to be signed in the TPM.
    pub allow_session_keys: bool,
    /// Longest session-key lifetime accepted, seconds (default 900).
    pub max_session_secs: u64,
    /// Require the certified key to sign only under `TPM2_PolicyPCR` over the quoted SHA-256
    /// PCRs: its authPolicy is that PolicyPCR digest and `userWithAuth` is clear (default
    /// `false`; `cada-enclave --tpm-key-policy pcr` makes such keys).
    pub require_key_policy: bool,
}

impl Default for TpmPolicy {
    fn default() -> Self {
        TpmPolicy {
            allow_session_keys: true,
            max_session_secs: DEFAULT_MAX_SESSION_SECS,
            require_key_policy: false,
        }
    }
}

/// `TPM_CC_PolicyPCR`.
const TPM_CC_POLICY_PCR: u32 = 0x0000_017F;

/// `TPM_CC_PolicyAuthValue`.
const TPM_CC_POLICY_AUTH_VALUE: u32 = 0x0000_016B;

/// The authPolicy of a key usable only under `TPM2_PolicyPCR` (from an empty policy) over
/// the SHA-256 bank PCRs of `pcrs` with their values: SHA-256(0³² ‖ TPM_CC_PolicyPCR ‖
/// TPML_PCR_SELECTION (one SHA-256 bank, three select octets) ‖ SHA-256(values…)), the
/// values in selection order. `None` when `pcrs` holds no SHA-256 PCR.
pub fn pcr_policy_digest(pcrs: &[QuotedPcr]) -> Option<Vec<u8>> {
    use aws_lc_rs::digest::{Context, SHA256};
    let mut bits = [0u8; 3];
    let mut values = Context::new(&SHA256);
    let mut any = false;
    for p in pcrs.iter().filter(|p| p.bank == "sha256") {
        let slot = bits.get_mut(usize::from(p.index / 8))?;
        *slot |= 1 << (p.index % 8);
        values.update(&hex::decode(&p.value).ok()?);
        any = true;
    }
    if !any {
        return None;
    }
    let mut h = Context::new(&SHA256);
    h.update(&[0u8; 32]);
    h.update(&TPM_CC_POLICY_PCR.to_be_bytes());
    h.update(&1u32.to_be_bytes());
    h.update(&alg::SHA256.to_be_bytes());
    h.update(&[3]);
    h.update(&bits);
    h.update(values.finish().as_ref());
    Some(h.finish().as_ref().to_vec())
}

/// Rule 12: the certified key signs only under PolicyPCR over the quoted SHA-256 PCRs.
fn check_key_policy(key: &Public, pcrs: &[QuotedPcr]) -> Result<(), VerifyError> {
    const WHY: &str = "this policy requires keys that sign only in the quoted boot state ([tpm] require_key_policy; cada-enclave --tpm-key-policy pcr)";
    if key.auth_policy.is_empty() {
        return Err(refuse(
            "tpm.key_policy",
            format!("the certified key has no authPolicy, so it signs in any boot state: {WHY}"),
        ));
    }
    if key.attributes & fmt::attrs::USER_WITH_AUTH != 0 {
        return Err(refuse(
            "tpm.key_policy",
            format!("the certified key has userWithAuth set, so it signs with its authValue alone, without its policy: {WHY}"),
        ));
    }
    let want = pcr_policy_digest(pcrs).ok_or_else(|| {
        refuse(
            "tpm.key_policy",
            format!("the quote selects no SHA-256 PCR to bind the key's policy to: {WHY}"),
        )
    })?;
    // PolicyPCR alone, or PolicyPCR then PolicyAuthValue (the signer's key: only the process
    // holding its random authValue can satisfy it, review tpm-2 finding 1).
    let with_auth = {
        let mut m = want.clone();
        m.extend_from_slice(&TPM_CC_POLICY_AUTH_VALUE.to_be_bytes());
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &m)
            .as_ref()
            .to_vec()
    };
    if key.auth_policy != want && key.auth_policy != with_auth {
        return Err(refuse(
            "tpm.key_policy",
            format!(
                "the certified key's authPolicy {} is not PolicyPCR (optionally then PolicyAuthValue) over the quoted SHA-256 PCRs ({}): {WHY}",
                hex::encode(&key.auth_policy),
                hex::encode(&want)
            ),
        ));
    }
    Ok(())
}

/// Default longest session-key lifetime.
pub const DEFAULT_MAX_SESSION_SECS: u64 = 900;

/// A set of trust anchors with their DER (a chain whose root is left out is completed
/// with the anchor that issued its top certificate).
#[derive(Clone, Default)]
struct Anchors {
    store: TrustStore,
    ders: Vec<(TrustAnchor, Vec<u8>)>,
}

impl Anchors {
    fn add(&mut self, a: TrustAnchor, der: Vec<u8>) {
        if self.store.find(&a.fingerprint).is_none() {
            self.store.add(a.clone());
            self.ders.push((a, der));
        }
    }
}

/// The roots TPM evidence is checked against: pinned ones ([`crate::roots_tpm`]) plus
/// what a policy adds, in three separate sets.
#[derive(Clone)]
pub struct TpmRoots {
    /// Where EK certificate chains may end.
    ek: Anchors,
    /// AK certificate issuers whose certificates must name the EK (enrollment CAs).
    ak_with_ek: Anchors,
    /// AK certificate issuers that vouch for the TPM alone (clouds' vTPM CAs).
    ak_alone: Anchors,
    /// What was added beyond the pinned roots, in order: (use, name).
    added: Vec<(TpmRootUse, String)>,
    /// Fingerprints (hex) of the pinned EK roots.
    pinned_ek: Vec<String>,
}

/// What a root added to [`TpmRoots`] anchors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TpmRootUse {
    /// EK certificate chains (`[tpm] roots`).
    Ek,
    /// Enrollment CAs' AK certificates, which name the EK (`[tpm] ak_roots`).
    Ak,
    /// AK certificates of a CA that vouches for the TPM alone (`[tpm] ak_roots_without_ek`).
    AkWithoutEk,
}

impl Default for TpmRoots {
    fn default() -> Self {
        Self::pinned()
    }
}

impl TpmRoots {
    /// The pinned roots only.
    pub fn pinned() -> Self {
        let mut r = TpmRoots {
            ek: Anchors::default(),
            ak_with_ek: Anchors::default(),
            ak_alone: Anchors::default(),
            added: Vec::new(),
            pinned_ek: Vec::new(),
        };
        for (a, der) in crate::roots_tpm::tpm_anchors(false) {
            r.pinned_ek.push(a.fingerprint_hex());
            r.ek.add(a, der);
        }
        for (a, der) in crate::roots_tpm::tpm_anchors(true) {
            r.ak_alone.add(a, der);
        }
        r
    }

    /// Adds an EK root (e.g. swtpm's local CA, for tests and CI).
    pub fn add_ek_root(&mut self, name: &str, der: &[u8]) -> Result<(), VerifyError> {
        self.ek.add(TrustAnchor::from_der(name, der)?, der.to_vec());
        self.added.push((TpmRootUse::Ek, name.to_owned()));
        Ok(())
    }

    /// The roots added beyond the pinned ones, in the order they were added.
    pub fn added(&self) -> &[(TpmRootUse, String)] {
        &self.added
    }

    /// Adds an AK certificate issuer: an enrollment CA whose AK certificates name the EK
    /// (`vouches_alone = false`), or one that vouches for the TPM by itself.
    pub fn add_ak_root(
        &mut self,
        name: &str,
        der: &[u8],
        vouches_alone: bool,
    ) -> Result<(), VerifyError> {
        let a = TrustAnchor::from_der(name, der)?;
        if vouches_alone {
            self.ak_alone.add(a, der.to_vec());
            self.added.push((TpmRootUse::AkWithoutEk, name.to_owned()));
        } else {
            self.ak_with_ek.add(a, der.to_vec());
            self.added.push((TpmRootUse::Ak, name.to_owned()));
        }
        Ok(())
    }

    /// A summary for `cada-verify policy check`.
    pub fn describe(&self) -> serde_json::Value {
        let list = |a: &Anchors| {
            a.ders
                .iter()
                .map(|(a, _)| serde_json::json!({"name": a.name, "sha256": a.fingerprint_hex()}))
                .collect::<Vec<_>>()
        };
        serde_json::json!({
            "ek": list(&self.ek),
            "ak": list(&self.ak_with_ek),
            "ak_without_ek": list(&self.ak_alone),
        })
    }
}

/// Verifies TPM evidence.
pub struct TpmVerifier {
    roots: TpmRoots,
    policy: TpmPolicy,
    cache: ChainCache,
}

impl Default for TpmVerifier {
    fn default() -> Self {
        TpmVerifier::new(TpmRoots::pinned(), TpmPolicy::default())
    }
}

/// How the AK was found bound to a genuine TPM.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AkBound {
    /// By an AK certificate.
    Certificate {
        /// The root the AK certificate chains to.
        ak_root: String,
        /// The AK certificate's subject.
        ak_subject: String,
        /// The EK the certificate names, when it names one.
        #[serde(skip_serializing_if = "Option::is_none")]
        ek: Option<EkInfo>,
    },
    /// By an Azure confidential VM's HCL report.
    AzureHcl {
        /// SNP launch measurement (hex).
        measurement: String,
        /// Chip id, first 8 bytes (hex).
        chip_id: String,
        /// The VM's unique id from the runtime claims, when present.
        #[serde(skip_serializing_if = "Option::is_none")]
        vm_id: Option<String>,
        /// Whether the SNP report chains to AMD's roots (false: a root the policy added).
        amd_root: bool,
    },
}

/// The endorsement key an AK certificate names, verified to a manufacturer root.
#[derive(Debug, Clone, Serialize)]
pub struct EkInfo {
    /// SHA-256 of the EK's SubjectPublicKeyInfo DER (hex): the TPM's identity.
    pub spki_sha256: String,
    /// The root the EK certificate chains to.
    pub root: String,
    /// Whether that root is pinned (a manufacturer or cloud) rather than added by policy.
    pub pinned_root: bool,
}

/// One quoted PCR value.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QuotedPcr {
    /// Bank (`sha256`, …).
    pub bank: String,
    /// PCR index.
    pub index: u8,
    /// Value, hex.
    pub value: String,
}

/// What verified TPM evidence says.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedTpm {
    /// How the AK is bound.
    pub ak: AkBound,
    /// The AK's name (hex).
    pub ak_name: String,
    /// The certified key as a JWK (ES256).
    pub key_jwk: Jwk,
    /// RFC 7638 thumbprint of the certified key.
    pub key_jkt: String,
    /// The certified key's authPolicy (hex; empty: usable without a policy, e.g. PolicyPCR).
    pub key_auth_policy: String,
    /// The session key's validity (Unix seconds), when the proof key is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<(u64, u64)>,
    /// Quoted PCR values, in the quote's order.
    pub pcrs: Vec<QuotedPcr>,
    /// The quote's clock.
    pub clock: ClockInfo,
    /// The TPM's firmware version (obfuscated unless the AK is in the endorsement
    /// hierarchy).
    pub firmware_version: String,
    /// Event log: events read and the PCRs whose replay matched the quote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_log: Option<EventLogSummary>,
    /// A stable identifier of the TPM: `tpm-` and 16 hex digits of the EK's SPKI hash, or of
    /// the AK's name when no EK is known.
    pub tpm_id: String,
    /// Until when the certificate paths are valid.
    #[serde(serialize_with = "ser_time")]
    pub valid_until: UnixTime,
}

/// What the event log contributed.
#[derive(Debug, Clone, Serialize)]
pub struct EventLogSummary {
    /// Number of events.
    pub events: usize,
    /// PCRs whose replay equals the quoted value (in every bank compared), ascending.
    pub matched: Vec<u32>,
    /// The banks replayed and compared: those the log declares and the quote selects
    /// (SHA-1, SHA-256, SHA-384, SHA-512).
    pub banks: Vec<String>,
}

fn ser_time<S: serde::Serializer>(t: &UnixTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_string())
}

/// Verifies `sig` (a TPM signature) over `msg` under the TPM public key `key`.
pub fn verify_tpm_signature(key: &PublicKey, msg: &[u8], sig: &Signature) -> bool {
    use aws_lc_rs::signature as s;
    match (key, sig) {
        (PublicKey::Rsa { n, e, .. }, Signature::Rsa { scheme, hash, sig }) => {
            let params = match (*scheme, *hash) {
                (alg::RSASSA, alg::SHA256) => &s::RSA_PKCS1_2048_8192_SHA256,
                (alg::RSASSA, alg::SHA384) => &s::RSA_PKCS1_2048_8192_SHA384,
                (alg::RSASSA, alg::SHA512) => &s::RSA_PKCS1_2048_8192_SHA512,
                (alg::RSAPSS, alg::SHA256) => &s::RSA_PSS_2048_8192_SHA256,
                (alg::RSAPSS, alg::SHA384) => &s::RSA_PSS_2048_8192_SHA384,
                (alg::RSAPSS, alg::SHA512) => &s::RSA_PSS_2048_8192_SHA512,
                _ => return false,
            };
            let e = e.to_be_bytes();
            let comp = s::RsaPublicKeyComponents {
                n: strip(n),
                e: strip(&e),
            };
            comp.verify(params, msg, sig).is_ok()
        }
        (PublicKey::Ecc { curve: c, x, y }, Signature::Ecdsa { hash, r, s: ss }) => {
            let (len, a): (usize, &'static dyn s::VerificationAlgorithm) = match (*c, *hash) {
                (curve::NIST_P256, alg::SHA256) => (32, &s::ECDSA_P256_SHA256_ASN1),
                (curve::NIST_P256, alg::SHA384) => (32, &s::ECDSA_P256_SHA384_ASN1),
                (curve::NIST_P384, alg::SHA256) => (48, &s::ECDSA_P384_SHA256_ASN1),
                (curve::NIST_P384, alg::SHA384) => (48, &s::ECDSA_P384_SHA384_ASN1),
                _ => return false,
            };
            let (Some(point), Some(der)) = (ec_point(len, x, y), ecdsa_der(r, ss)) else {
                return false;
            };
            s::UnparsedPublicKey::new(a, &point)
                .verify(msg, &der)
                .is_ok()
        }
        _ => false,
    }
}

fn strip(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[i..]
}

/// An uncompressed SEC1 point of a curve with `len`-byte coordinates.
fn ec_point(len: usize, x: &[u8], y: &[u8]) -> Option<Vec<u8>> {
    let (x, y) = (strip(x), strip(y));
    if x.len() > len || y.len() > len {
        return None;
    }
    let mut p = vec![0x04];
    p.extend(std::iter::repeat_n(0, len - x.len()));
    p.extend_from_slice(x);
    p.extend(std::iter::repeat_n(0, len - y.len()));
    p.extend_from_slice(y);
    Some(p)
}

fn der_uint(v: &[u8]) -> Option<Vec<u8>> {
    let v = strip(v);
    let mut body = Vec::with_capacity(v.len() + 1);
    if v.is_empty() || v[0] & 0x80 != 0 {
        body.push(0);
    }
    body.extend_from_slice(v);
    let mut out = vec![0x02];
    der_len(body.len(), &mut out)?;
    out.extend_from_slice(&body);
    Some(out)
}

fn der_len(len: usize, out: &mut Vec<u8>) -> Option<()> {
    match len {
        0..=0x7f => out.push(u8::try_from(len).ok()?),
        0x80..=0xff => out.extend_from_slice(&[0x81, u8::try_from(len).ok()?]),
        _ => {
            out.push(0x82);
            out.extend_from_slice(&u16::try_from(len).ok()?.to_be_bytes());
        }
    }
    Some(())
}

fn der_seq(parts: &[Vec<u8>]) -> Option<Vec<u8>> {
    let body = parts.concat();
    let mut out = vec![0x30];
    der_len(body.len(), &mut out)?;
    out.extend_from_slice(&body);
    Some(out)
}

fn ecdsa_der(r: &[u8], s: &[u8]) -> Option<Vec<u8>> {
    der_seq(&[der_uint(r)?, der_uint(s)?])
}

/// The key bytes a certificate carries for this TPM key (SEC1 point, PKCS#1 RSAPublicKey).
fn cert_key_bytes(key: &PublicKey) -> Option<(KeyKind, Vec<u8>)> {
    match key {
        PublicKey::Rsa { n, e, .. } => Some((
            KeyKind::Rsa,
            der_seq(&[der_uint(n)?, der_uint(&e.to_be_bytes())?])?,
        )),
        PublicKey::Ecc { curve: c, x, y } => match *c {
            curve::NIST_P256 => Some((KeyKind::EcP256, ec_point(32, x, y)?)),
            curve::NIST_P384 => Some((KeyKind::EcP384, ec_point(48, x, y)?)),
            _ => None,
        },
    }
}

/// The SHA-256 PCR digest of `values` with `hash`.
fn pcr_digest(hash: u16, values: &[Vec<u8>]) -> Option<Vec<u8>> {
    let d = match hash {
        alg::SHA256 => &aws_lc_rs::digest::SHA256,
        alg::SHA384 => &aws_lc_rs::digest::SHA384,
        alg::SHA512 => &aws_lc_rs::digest::SHA512,
        _ => return None,
    };
    let mut ctx = aws_lc_rs::digest::Context::new(d);
    for v in values {
        ctx.update(v);
    }
    Some(ctx.finish().as_ref().to_vec())
}

/// Checks a quote's PCR values: one value of its bank's size per selected PCR, in
/// selection order, hashing (with `hash`, the signing scheme's) to its `pcrDigest`.
pub fn check_quote_pcrs(
    quote: &Attest,
    values: &[Vec<u8>],
    hash: u16,
) -> Result<Vec<QuotedPcr>, VerifyError> {
    let Attested::Quote {
        selection,
        pcr_digest: want,
    } = &quote.attested
    else {
        return Err(refuse("tpm.attest_type", "not a quote"));
    };
    let mut out = Vec::new();
    let mut it = values.iter();
    for bank in selection {
        let size = structs::digest_len(bank.hash).unwrap_or(0);
        for idx in &bank.pcrs {
            let Some(v) = it.next() else {
                return Err(refuse(
                    "tpm.pcr_values",
                    format!(
                        "the quote selects more PCRs than the {} values sent (send every selected PCR, in the quote's order)",
                        values.len()
                    ),
                ));
            };
            if v.len() != size {
                return Err(refuse(
                    "tpm.pcr_values",
                    format!(
                        "{} PCR {idx} is {} bytes, the bank's digests are {size}",
                        structs::hash_name(bank.hash),
                        v.len()
                    ),
                ));
            }
            out.push(QuotedPcr {
                bank: structs::hash_name(bank.hash),
                index: *idx,
                value: hex::encode(v),
            });
        }
    }
    if it.next().is_some() {
        return Err(refuse(
            "tpm.pcr_values",
            format!(
                "{} PCR values were sent, the quote selects {}",
                values.len(),
                out.len()
            ),
        ));
    }
    let got = pcr_digest(hash, values).ok_or_else(|| {
        refuse(
            "tpm.signature_scheme",
            format!("hash {} cannot make a PCR digest", structs::hash_name(hash)),
        )
    })?;
    if &got != want {
        return Err(refuse(
            "tpm.pcr_digest",
            format!(
                "the PCR values hash to {}, the quote's pcrDigest is {}: they are not the values the TPM quoted",
                hex::encode(&got),
                hex::encode(want)
            ),
        ));
    }
    Ok(out)
}

/// Parses and checks an attestation structure: magic, type, signature under the AK.
fn attested(
    what: &'static str,
    bytes: &[u8],
    sig: &[u8],
    kind: u16,
    ak: &Public,
) -> Result<(Attest, Signature), VerifyError> {
    let a = structs::parse_attest(bytes).map_err(|e| {
        if e.detail.starts_with("magic") {
            refuse("tpm.magic", format!("the {what} {}", e.detail))
        } else if e.detail.starts_with("type") {
            refuse("tpm.attest_type", format!("the {what} {}", e.detail))
        } else {
            structure(&e)
        }
    })?;
    if a.kind != kind {
        return Err(refuse(
            "tpm.attest_type",
            format!(
                "the {what} has type 0x{:04x}, 0x{kind:04x} is required",
                a.kind
            ),
        ));
    }
    let sig = structs::parse_signature(sig).map_err(|e| structure(&e))?;
    let scheme = sig.scheme();
    if ak.scheme.alg != alg::NULL && ak.scheme != scheme {
        return Err(refuse(
            "tpm.signature_scheme",
            format!(
                "the {what} is signed with scheme 0x{:04x}/{}, the AK's scheme is 0x{:04x}/{}",
                scheme.alg,
                structs::hash_name(scheme.hash),
                ak.scheme.alg,
                structs::hash_name(ak.scheme.hash)
            ),
        ));
    }
    if !matches!(scheme.hash, alg::SHA256 | alg::SHA384 | alg::SHA512) {
        return Err(refuse(
            "tpm.signature_scheme",
            format!(
                "the {what} is signed with {}; SHA-256, SHA-384 or SHA-512 is required",
                structs::hash_name(scheme.hash)
            ),
        ));
    }
    if !verify_tpm_signature(&ak.key, bytes, &sig) {
        let code = if kind == structs::ST_ATTEST_QUOTE {
            "tpm.quote_signature"
        } else {
            "tpm.certify_signature"
        };
        return Err(refuse(
            code,
            format!("the {what} signature does not verify under the AK (altered, or signed by another key)"),
        ));
    }
    Ok((a, sig))
}

/// Checks the AK's attributes and algorithm (rule 2).
pub fn check_ak(ak: &Public) -> Result<(), VerifyError> {
    let a = ak.attributes;
    let missing = fmt::AK_ATTRS_REQUIRED & !a;
    if missing != 0 || a & (fmt::AK_ATTRS_FORBIDDEN | RESERVED_ATTRS) != 0 {
        return Err(refuse(
            "tpm.ak_attributes",
            format!(
                "the AK's attributes 0x{a:08x} are not those of a restricted signing key fixed to its TPM (restricted, sign, fixedTPM, fixedParent, sensitiveDataOrigin set; decrypt clear): an attestation not signed by a restricted AK proves nothing"
            ),
        ));
    }
    match &ak.key {
        PublicKey::Rsa { bits, .. } if *bits >= 2048 => Ok(()),
        PublicKey::Ecc { curve: c, .. } if matches!(*c, curve::NIST_P256 | curve::NIST_P384) => {
            Ok(())
        }
        _ => Err(refuse(
            "tpm.ak_algorithm",
            "the AK is neither RSA of at least 2048 bits nor ECC P-256/P-384",
        )),
    }
}

/// Checks the certified key's algorithm and attributes (rule 7).
pub fn check_certified_key(key: &Public) -> Result<(), VerifyError> {
    let a = key.attributes;
    if !matches!(&key.key, PublicKey::Ecc { curve: c, .. } if *c == curve::NIST_P256)
        || key.name_alg != alg::SHA256
        || !matches!(key.scheme.alg, alg::NULL | alg::ECDSA)
        || (key.scheme.alg == alg::ECDSA && key.scheme.hash != alg::SHA256)
    {
        return Err(refuse(
            "tpm.key_algorithm",
            "the certified key is not an ECC NIST P-256 key with nameAlg SHA-256 and scheme ECDSA/SHA-256 (or none): proofs from a TPM are ES256",
        ));
    }
    // The point itself: coordinates of the curve's size, on the curve (found by the
    // tpm_public fuzz target: a 33-byte x passed this rule and failed only later).
    let on_curve = match &key.key {
        PublicKey::Ecc { x, y, .. } => ec_point(32, x, y).is_some_and(|p| {
            aws_lc_rs::signature::ParsedPublicKey::new(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
                &p,
            )
            .is_ok()
        }),
        PublicKey::Rsa { .. } => false,
    };
    if !on_curve {
        return Err(refuse(
            "tpm.key_algorithm",
            "the certified key's point is not a P-256 point (coordinates of 32 bytes, on the curve)",
        ));
    }
    use fmt::attrs;
    if a & attrs::FIXED_TPM == 0
        || a & attrs::FIXED_PARENT == 0
        || a & attrs::ENCRYPTED_DUPLICATION != 0
    {
        return Err(refuse(
            "tpm.key_duplicable",
            format!("the certified key may be duplicated out of its TPM (attributes 0x{a:08x}: fixedTPM and fixedParent must be set)"),
        ));
    }
    if a & attrs::SENSITIVE_DATA_ORIGIN == 0 {
        return Err(refuse(
            "tpm.key_not_tpm_generated",
            format!("the certified key was not generated in the TPM (attributes 0x{a:08x}: sensitiveDataOrigin is clear, so it was imported and existed outside)"),
        ));
    }
    if a & fmt::KEY_ATTRS_REQUIRED != fmt::KEY_ATTRS_REQUIRED
        || a & (fmt::KEY_ATTRS_FORBIDDEN | RESERVED_ATTRS) != 0
    {
        return Err(refuse(
            "tpm.key_attributes",
            format!("the certified key's attributes 0x{a:08x} are not a signing key's (sign set; restricted, decrypt, x509sign clear)"),
        ));
    }
    Ok(())
}

/// The JWK (ES256) of a certified P-256 TPM key.
pub fn key_jwk(key: &Public) -> Result<Jwk, VerifyError> {
    let PublicKey::Ecc { x, y, .. } = &key.key else {
        return Err(refuse("tpm.key_algorithm", "the certified key is not ECC"));
    };
    let point = ec_point(32, x, y).ok_or_else(|| {
        refuse(
            "tpm.key_algorithm",
            "the certified key's point is not P-256",
        )
    })?;
    Jwk::ec(SigAlg::ES256, &point).map_err(|e| refuse("tpm.key_algorithm", e.to_string()))
}

/// The runtime claims of an Azure HCL report, verified.
#[derive(Debug, Clone)]
pub struct VerifiedHcl {
    /// The AK (`HCLAkPub`, RSA).
    pub ak: PublicKey,
    /// The verified SNP report.
    pub snp: crate::snp::VerifiedSnpReport,
    /// The VM's unique id (`vm-configuration.vmUniqueId`).
    pub vm_id: Option<String>,
    /// The claims JSON.
    pub claims: serde_json::Value,
}

/// Largest HCL runtime-claims JSON read.
const MAX_CLAIMS: usize = 8 * 1024;
const HCL_HEADER: usize = 0x20;
const SNP_END: usize = HCL_HEADER + crate::snp::REPORT_LEN;

/// Verifies an Azure confidential VM's HCL report: its SNP report (signed by the VCEK
/// `certs[0]`, chain to AMD's roots, `policy`), `report_data` = H(runtime claims) ‖ zeros,
/// and returns the AK public key the claims hold (`HCLAkPub`).
pub fn verify_hcl(
    report: &[u8],
    certs: &[Vec<u8>],
    snp: &SnpVerifier,
    policy: &SnpPolicy,
    at: UnixTime,
) -> Result<VerifiedHcl, VerifyError> {
    let bad = |d: String| refuse("tpm.hcl", format!("HCL report: {d}"));
    if report.len() > fmt::MAX_HCL_REPORT_LEN || report.len() < SNP_END + 20 {
        return Err(bad(format!("{} bytes is not an HCL report", report.len())));
    }
    if &report[..4] != b"HCLA" {
        return Err(bad("it does not start with \"HCLA\"".into()));
    }
    let le = |at: usize| {
        u32::from_le_bytes([report[at], report[at + 1], report[at + 2], report[at + 3]])
    };
    let (hash_type, var_size) = (le(SNP_END + 12), le(SNP_END + 16));
    let var_size = usize::try_from(var_size).unwrap_or(usize::MAX);
    if var_size > MAX_CLAIMS || SNP_END + 20 + var_size > report.len() {
        return Err(bad(format!(
            "runtime claims of {var_size} bytes do not fit"
        )));
    }
    let claims = &report[SNP_END + 20..SNP_END + 20 + var_size];
    let Some((signer, chain)) = certs.split_first() else {
        return Err(refuse(
            "tpm.hcl_snp",
            "Azure HCL evidence must carry the VCEK (then ASK and ARK if known) in certs",
        ));
    };
    let v = snp
        .verify(&report[HCL_HEADER..SNP_END], signer, chain, policy, at)
        .map_err(|e| {
            refuse(
                "tpm.hcl_snp",
                format!("the HCL report's SNP report: {e} ({})", e.code()),
            )
        })?;
    let digest: &'static aws_lc_rs::digest::Algorithm = match hash_type {
        1 => &aws_lc_rs::digest::SHA256,
        2 => &aws_lc_rs::digest::SHA384,
        3 => &aws_lc_rs::digest::SHA512,
        t => return Err(bad(format!("report_data hash type {t} is unknown"))),
    };
    let h = aws_lc_rs::digest::digest(digest, claims);
    let rd = &v.report.report_data;
    let n = h.as_ref().len();
    if rd[..n] != *h.as_ref() || rd[n..].iter().any(|b| *b != 0) {
        return Err(refuse(
            "tpm.hcl_report_data",
            "the SNP report's report_data is not the hash of the HCL runtime claims: the claims (and the AK in them) are not the ones the platform reported",
        ));
    }
    let json: serde_json::Value = serde_json::from_slice(claims)
        .map_err(|e| bad(format!("runtime claims are not JSON: {e}")))?;
    let key = json
        .get("keys")
        .and_then(|k| k.as_array())
        .and_then(|ks| {
            ks.iter()
                .find(|k| k.get("kid").and_then(|v| v.as_str()) == Some("HCLAkPub"))
        })
        .ok_or_else(|| bad("the runtime claims hold no HCLAkPub key".into()))?;
    let field = |k: &str| {
        key.get(k)
            .and_then(|v| v.as_str())
            .and_then(|s| cada_protocol::b64::decode("HCLAkPub", s, 1024).ok())
            .ok_or_else(|| bad(format!("HCLAkPub has no usable {k}")))
    };
    if key.get("kty").and_then(|v| v.as_str()) != Some("RSA") {
        return Err(bad("HCLAkPub is not an RSA key".into()));
    }
    let (n, e) = (field("n")?, field("e")?);
    if e.is_empty() || e.len() > 4 {
        return Err(bad("HCLAkPub's exponent is not a 32-bit number".into()));
    }
    let e = e.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
    let n = strip(&n).to_vec();
    let bits = u16::try_from(n.len() * 8).map_err(|_| bad("HCLAkPub is too large".into()))?;
    let vm_id = json
        .get("vm-configuration")
        .and_then(|c| c.get("vmUniqueId"))
        .and_then(|v| v.as_str())
        .map(|s| s.chars().take(64).collect());
    Ok(VerifiedHcl {
        ak: PublicKey::Rsa { n, e, bits },
        snp: v,
        vm_id,
        claims: json,
    })
}

/// Whether two TPM public keys are the same key.
fn same_key(a: &PublicKey, b: &PublicKey) -> bool {
    match (a, b) {
        (PublicKey::Rsa { n: n1, e: e1, .. }, PublicKey::Rsa { n: n2, e: e2, .. }) => {
            strip(n1) == strip(n2) && e1 == e2
        }
        (
            PublicKey::Ecc {
                curve: c1,
                x: x1,
                y: y1,
            },
            PublicKey::Ecc {
                curve: c2,
                x: x2,
                y: y2,
            },
        ) => c1 == c2 && strip(x1) == strip(x2) && strip(y1) == strip(y2),
        _ => false,
    }
}

/// The `hwSerialNum` of the EK named in an AK certificate's SAN `hardwareModuleName`.
fn named_ek(cert: &ParsedCert<'_>) -> Result<Option<Vec<u8>>, VerifyError> {
    let Some(san) = cert.extension(SAN) else {
        return Ok(None);
    };
    let bad = |d: String| refuse("tpm.ak_chain", format!("the AK certificate's SAN: {d}"));
    let names =
        x509_cert::ext::pkix::SubjectAltName::from_der(san).map_err(|e| bad(e.to_string()))?;
    for n in names.0 {
        let x509_cert::ext::pkix::name::GeneralName::OtherName(o) = n else {
            continue;
        };
        if o.type_id != HW_MODULE_NAME {
            continue;
        }
        let inner = o.value.to_der().map_err(|e| bad(e.to_string()))?;
        let mut r = der::SliceReader::new(&inner).map_err(|e| bad(e.to_string()))?;
        let (t, serial) = r
            .sequence(
                |r| -> der::Result<(ObjectIdentifier, der::asn1::OctetString)> {
                    let t = ObjectIdentifier::decode(r)?;
                    let s = der::asn1::OctetString::decode(r)?;
                    Ok((t, s))
                },
            )
            .map_err(|e| bad(format!("hardwareModuleName: {e}")))?;
        if t == EK_HW_TYPE {
            return Ok(Some(serial.as_bytes().to_vec()));
        }
    }
    Ok(None)
}

fn chain_refusal(which: &'static str, e: VerifyError) -> VerifyError {
    let (code, fix) = match (which, &e) {
        ("EK", VerifyError::UntrustedRoot { .. }) => (
            "tpm.ek_untrusted_root",
            "the TPM's manufacturer root is not pinned; a test TPM's CA (swtpm) must be added to the policy as [tpm] roots",
        ),
        ("EK", _) => ("tpm.ek_chain", "send the EK certificate and its intermediates, leaf first"),
        (_, VerifyError::UntrustedRoot { .. }) => (
            "tpm.ak_untrusted_root",
            "the AK certificate's issuer is not trusted: add the enrollment CA as [tpm] ak_roots",
        ),
        _ => ("tpm.ak_chain", "send the AK certificate and its intermediates, leaf first"),
    };
    refuse(
        code,
        format!("the {which} certificate chain: {e} ({}); {fix}", e.code()),
    )
}

/// Verifies a leaf-first chain against `anchors`, completing it with the anchor that
/// issued its top certificate when the root is left out.
fn verify_chain(
    anchors: &Anchors,
    cache: &ChainCache,
    presented: &[&[u8]],
    usage: LeafUsage,
    at: UnixTime,
) -> Result<(crate::chain::VerifiedPath, ParsedCertOwned), VerifyError> {
    let Some((leaf, rest)) = presented.split_first() else {
        return Err(VerifyError::Field {
            field: "certs",
            rule: "no certificate".into(),
        });
    };
    fn parse(i: usize, d: &[u8]) -> Result<ParsedCert<'_>, VerifyError> {
        ParsedCert::parse(d).map_err(|_| VerifyError::CertificateParse {
            index: i,
            role: if i == 0 { "leaf" } else { "intermediate" },
            detail: "not a DER X.509 v3 certificate".into(),
        })
    }
    let leaf_cert = parse(0, leaf)?;
    // Walk up the presented certificates until one is a trust anchor.
    let mut path: Vec<&[u8]> = Vec::new();
    let mut root: Option<Vec<u8>> = None;
    for d in rest {
        let fp = crate::chain::sha256(d);
        if let Some((_, der)) = anchors.ders.iter().find(|(a, _)| a.fingerprint == fp) {
            root = Some(der.clone());
            break;
        }
        path.push(d);
    }
    let mut candidates: Vec<Vec<u8>> = Vec::new();
    // The top certificate, when the chain is completed with anchors chosen by name.
    let mut by_name: Option<ParsedCert<'_>> = None;
    if let Some(r) = root {
        candidates.push(r);
    } else {
        let top = match path.last() {
            Some(d) => parse(path.len(), d)?,
            None => parse(0, leaf)?,
        };
        let issuer = top.issuer().clone();
        candidates.extend(
            anchors
                .ders
                .iter()
                .filter(|(a, _)| *a.subject() == issuer)
                .map(|(_, d)| d.clone()),
        );
        by_name = Some(top);
        if candidates.is_empty() {
            return Err(VerifyError::UntrustedRoot {
                fingerprint: format!(
                    "{} (no trusted root is named {issuer})",
                    hex::encode(crate::chain::sha256(path.last().copied().unwrap_or(leaf)))
                ),
            });
        }
    }
    let rules = PathRules {
        understood_critical: UNDERSTOOD,
        leaf_must_not_be_ca: true,
        leaf_usage: usage,
    };
    let mut first_err = None;
    for root in &candidates {
        let mut chain: Vec<&[u8]> = vec![root.as_slice()];
        chain.extend(path.iter().rev());
        match verify_path(
            &anchors.store,
            cache,
            &chain,
            leaf,
            &rules,
            at,
            &mut Checks::fail_fast(),
        ) {
            Ok(p) => {
                return Ok((
                    p,
                    ParsedCertOwned {
                        spki_der: leaf_cert
                            .cert
                            .tbs_certificate()
                            .subject_public_key_info()
                            .to_der()
                            .unwrap_or_default(),
                    },
                ))
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    // A chain matched to anchors by name only, none of which signed its top certificate,
    // leads to another root of the same name (swtpm's local CAs all share one subject name;
    // review tpm-2 finding 3): an untrusted root, not a broken chain.
    if let Some(top) = &by_name {
        let signed = top.sig_algorithm().is_ok_and(|alg| {
            anchors
                .ders
                .iter()
                .any(|(a, _)| *a.subject() == *top.issuer() && top.signed_by(a.key(), alg))
        });
        if !signed {
            return Err(VerifyError::UntrustedRoot {
                fingerprint: format!(
                    "{} (its issuer {} is named like a trusted root, but no trusted root of that name signed it)",
                    hex::encode(crate::chain::sha256(path.last().copied().unwrap_or(leaf))),
                    top.issuer()
                ),
            });
        }
    }
    Err(first_err.unwrap_or(VerifyError::UntrustedRoot {
        fingerprint: String::new(),
    }))
}

/// What the caller keeps of a leaf certificate.
struct ParsedCertOwned {
    spki_der: Vec<u8>,
}

impl TpmVerifier {
    /// A verifier with these roots and rules.
    pub fn new(roots: TpmRoots, policy: TpmPolicy) -> Self {
        TpmVerifier {
            roots,
            policy,
            cache: ChainCache::default(),
        }
    }

    /// The roots.
    pub fn roots(&self) -> &TpmRoots {
        &self.roots
    }

    /// The rules.
    pub fn policy(&self) -> &TpmPolicy {
        &self.policy
    }

    /// Verifies an AK certificate chain (`ak_chain`, leaf first) and, when the certificate
    /// names an EK, the EK chain (`ek_chain`, leaf first): rule 3 for AK certificates.
    /// Returns how the AK is bound and until when the paths are valid.
    pub fn verify_ak_certificate(
        &self,
        ak: &PublicKey,
        ak_name: &[u8],
        ak_chain: &[&[u8]],
        ek_chain: &[&[u8]],
        at: UnixTime,
    ) -> Result<(AkBound, UnixTime, String), VerifyError> {
        let leaf = ak_chain
            .first()
            .ok_or_else(|| refuse("tpm.ak_chain", "no AK certificate"))?;
        // Which set of AK roots: try the ones that vouch alone first, then enrollment CAs.
        let (path, alone) = match verify_chain(
            &self.roots.ak_alone,
            &self.cache,
            ak_chain,
            LeafUsage::DigitalSignature,
            at,
        ) {
            Ok((p, _)) => (p, true),
            Err(alone_err) => match verify_chain(
                &self.roots.ak_with_ek,
                &self.cache,
                ak_chain,
                LeafUsage::DigitalSignature,
                at,
            ) {
                Ok((p, _)) => (p, false),
                Err(e) => {
                    let e = if matches!(e, VerifyError::UntrustedRoot { .. }) {
                        alone_err
                    } else {
                        e
                    };
                    return Err(chain_refusal("AK", e));
                }
            },
        };
        let cert = ParsedCert::parse(leaf)
            .map_err(|_| refuse("tpm.ak_chain", "the AK certificate does not parse"))?;
        let (kind, bytes) = cert_key_bytes(ak)
            .ok_or_else(|| refuse("tpm.ak_algorithm", "the AK's key cannot be compared"))?;
        if path.leaf_key.kind() != kind || path.leaf_key.bytes() != bytes.as_slice() {
            return Err(refuse(
                "tpm.ak_cert_key",
                "the AK certificate certifies another key than the AK that signed the attestations",
            ));
        }
        let subject = cert.subject().to_string();
        let named = named_ek(&cert)?;
        let mut valid_until = path.valid_until;
        if !alone {
            let ekus = cert
                .extension(EKU)
                .and_then(|v| x509_cert::ext::pkix::ExtendedKeyUsage::from_der(v).ok())
                .map(|e| e.0)
                .unwrap_or_default();
            if !ekus.contains(&AK_CERT_EKU) {
                return Err(refuse(
                    "tpm.ak_cert_usage",
                    format!("the AK certificate from an enrollment CA lacks the extended key usage tcg-kp-AIKCertificate ({})", fmt::AK_CERT_EKU),
                ));
            }
            // The enrollment CA names the AK by its TPM name, which covers its attributes
            // (the CA checked them when it activated the credential against that name).
            let ski = cert
                .extension(SKI)
                .and_then(|v| der::asn1::OctetString::from_der(v).ok());
            if ski.as_ref().map(der::asn1::OctetString::as_bytes) != Some(ak_name) {
                return Err(refuse(
                    "tpm.ak_cert_key",
                    format!(
                        "the AK certificate's subjectKeyIdentifier is not the AK's TPM name {}: an enrollment CA names the AK it activated (nameAlg ‖ H(TPMT_PUBLIC)), so the AK's public area sent is not the one enrolled",
                        hex::encode(ak_name)
                    ),
                ));
            }
        }
        let ek = match (&named, alone) {
            (None, false) => {
                return Err(refuse(
                    "tpm.ak_not_bound",
                    "the AK certificate names no EK (SAN hardwareModuleName) and its CA does not vouch for the TPM alone: the AK is not bound to an endorsement key",
                ))
            }
            (None, true) if ek_chain.is_empty() => None,
            (None, true) => {
                // An EK chain the AK certificate does not name proves nothing about this
                // AK's TPM, and would lend the evidence another TPM's identity.
                return Err(refuse(
                    "tpm.ak_not_bound",
                    "the evidence carries EK certificates, but the AK certificate names no EK: they are not this AK's TPM",
                ));
            }
            _ => {
                if ek_chain.len() > MAX_EK_CERTS {
                    return Err(refuse("tpm.ek_chain", format!("more than {MAX_EK_CERTS} EK certificates")));
                }
                if ek_chain.is_empty() {
                    return Err(refuse(
                        "tpm.ak_not_bound",
                        "the AK certificate names an EK but the evidence carries no EK certificate",
                    ));
                }
                let (ek_path, leaf) = verify_chain(
                    &self.roots.ek,
                    &self.cache,
                    ek_chain,
                    LeafUsage::KeyEstablishment,
                    at,
                )
                .map_err(|e| chain_refusal("EK", e))?;
                let spki_hash = crate::chain::sha256(&leaf.spki_der);
                if let Some(want) = &named {
                    if want.as_slice() != spki_hash.as_slice() {
                        return Err(refuse(
                            "tpm.ak_not_bound",
                            format!(
                                "the AK certificate names the EK {}, the EK certificate sent is for {}: the AK was enrolled on another TPM",
                                hex::encode(want),
                                hex::encode(spki_hash)
                            ),
                        ));
                    }
                }
                valid_until = valid_until.min(ek_path.valid_until);
                let pinned_root = self.roots.pinned_ek.contains(&ek_path.anchor_fingerprint);
                Some(EkInfo {
                    spki_sha256: hex::encode(spki_hash),
                    root: ek_path.anchor_name,
                    pinned_root,
                })
            }
        };
        let id = match &ek {
            Some(e) => format!("tpm-{}", &e.spki_sha256[..16]),
            None => format!("tpm-ak-{}", &hex::encode(crate::chain::sha256(leaf))[..16]),
        };
        Ok((
            AkBound::Certificate {
                ak_root: path.anchor_name,
                ak_subject: subject,
                ek,
            },
            UnixTime::from_secs(valid_until),
            id,
        ))
    }

    /// Verifies a TPM evidence envelope at `at`: rules 1–11 of the module docs. `snp` and
    /// `snp_policy` verify an Azure HCL report's SNP report.
    pub fn verify(
        &self,
        env: &EvidenceEnvelope,
        snp: &SnpVerifier,
        snp_policy: &SnpPolicy,
        at: UnixTime,
    ) -> Result<VerifiedTpm, VerifyError> {
        // 1. The document and its structures.
        let doc = TpmDocument::from_cbor(&env.document)
            .map_err(|e| refuse("tpm.document", format!("the TPM document: {e}")))?;
        let ak = structs::parse_public(&doc.ak).map_err(|e| structure(&e))?;
        let key = structs::parse_public(&doc.key).map_err(|e| structure(&e))?;
        // 2. The AK is a restricted signing key fixed to its TPM.
        check_ak(&ak)?;
        let ak_name = ak.name(&doc.ak).ok_or_else(|| {
            refuse(
                "tpm.ak_algorithm",
                "the AK's nameAlg is not SHA-256/384/512",
            )
        })?;
        // 3. The AK is bound to a genuine TPM.
        let certs: Vec<&[u8]> = env.certs.iter().map(|c| c.as_slice()).collect();
        let (bound, valid_until, tpm_id) = match &doc.ak_binding {
            AkBinding::Certificate { ak_certs } => {
                if *ak_certs > certs.len() {
                    return Err(refuse(
                        "tpm.document",
                        format!(
                            "ak_certs is {ak_certs} but the envelope carries {} certificates",
                            certs.len()
                        ),
                    ));
                }
                let (akc, ekc) = certs.split_at(*ak_certs);
                self.verify_ak_certificate(&ak.key, &ak_name, akc, ekc, at)?
            }
            AkBinding::AzureHcl { report } => {
                let owned: Vec<Vec<u8>> = env.certs.iter().map(|c| c.to_vec()).collect();
                let h = verify_hcl(report, &owned, snp, snp_policy, at)?;
                if !same_key(&h.ak, &ak.key) {
                    return Err(refuse(
                        "tpm.hcl_ak",
                        "the AK is not the HCLAkPub of the HCL report's runtime claims",
                    ));
                }
                let id = format!("tpm-azure-{}", &hex::encode(h.snp.report.chip_id)[..16]);
                (
                    AkBound::AzureHcl {
                        measurement: hex::encode(h.snp.report.measurement),
                        chip_id: hex::encode(&h.snp.report.chip_id[..8]),
                        vm_id: h.vm_id,
                        amd_root: h.snp.amd_root,
                    },
                    h.snp.valid_until,
                    id,
                )
            }
        };
        // 4–5. Both attestations: made by the TPM, signed by the AK, for this binding and nonce.
        let qualifying = fmt::qualifying_data(&env.binding, &env.nonce);
        let (certify, _) = attested(
            "certify",
            &doc.certify,
            &doc.certify_sig,
            structs::ST_ATTEST_CERTIFY,
            &ak,
        )?;
        let (quote, quote_sig) = attested(
            "quote",
            &doc.quote,
            &doc.quote_sig,
            structs::ST_ATTEST_QUOTE,
            &ak,
        )?;
        for (what, a) in [("certify", &certify), ("quote", &quote)] {
            if a.extra_data != qualifying {
                return Err(refuse(
                    "tpm.nonce",
                    format!(
                        "the {what}'s qualifying data is {}, not SHA-256(binding ‖ nonce) = {}: it was made for another nonce or key binding",
                        hex::encode(&a.extra_data),
                        hex::encode(qualifying)
                    ),
                ));
            }
        }
        // 6. The certify names exactly the certified key.
        let key_name = key.name(&doc.key).ok_or_else(|| {
            refuse(
                "tpm.key_algorithm",
                "the certified key's nameAlg is not SHA-256",
            )
        })?;
        let Attested::Certify { name, .. } = &certify.attested else {
            return Err(refuse("tpm.attest_type", "the certify is not a certify"));
        };
        if *name != key_name {
            return Err(refuse(
                "tpm.certify_name",
                format!(
                    "the certify is for the object {}, not the certified key {} sent: it certifies another key",
                    hex::encode(name),
                    hex::encode(&key_name)
                ),
            ));
        }
        // 7. The certified key cannot leave the TPM and signs ES256.
        check_certified_key(&key)?;
        let jwk = key_jwk(&key)?;
        let key_jkt = jwk.thumbprint();
        // 8. The proof key: the certified key, or a session key it certified.
        let binding = KeyBinding::from_cbor(&env.binding)?;
        let mut session = None;
        match &doc.session {
            None => {
                if binding.jkt != key_jkt {
                    return Err(refuse(
                        "tpm.key_binding",
                        format!(
                            "the key binding names key {}, the TPM certified key {}",
                            binding.jkt, key_jkt
                        ),
                    ));
                }
            }
            Some(s) => {
                if !self.policy.allow_session_keys {
                    return Err(refuse(
                        "tpm.session_refused",
                        "the proof key is a session key, and this policy requires proofs signed in the TPM ([tpm] session_keys = false)",
                    ));
                }
                if s.exp - s.nbf > self.policy.max_session_secs {
                    return Err(refuse(
                        "tpm.session_too_long",
                        format!(
                            "the session key is valid for {} s, this policy allows at most {} s",
                            s.exp - s.nbf,
                            self.policy.max_session_secs
                        ),
                    ));
                }
                let sig = structs::parse_signature(&s.sig).map_err(|e| structure(&e))?;
                let msg = fmt::session_message(&qualifying, s.nbf, s.exp);
                if !matches!(
                    sig,
                    Signature::Ecdsa {
                        hash: alg::SHA256,
                        ..
                    }
                ) || !verify_tpm_signature(&key.key, &msg, &sig)
                {
                    return Err(refuse(
                        "tpm.session_signature",
                        "the session statement is not signed (ECDSA P-256/SHA-256) by the certified TPM key",
                    ));
                }
                let now = at.as_secs();
                if now < s.nbf || now > s.exp {
                    return Err(refuse(
                        "tpm.session_expired",
                        format!(
                            "the session key is valid {}..{} (Unix seconds), not at {now}",
                            s.nbf, s.exp
                        ),
                    ));
                }
                session = Some((s.nbf, s.exp));
            }
        }
        // 9. PCR values against the quote's digest.
        let pcrs = check_quote_pcrs(&quote, &doc.pcrs, quote_sig.scheme().hash)?;
        // 10. The same AK and boot.
        if certify.qualified_signer != quote.qualified_signer
            || certify.clock.reset_count != quote.clock.reset_count
            || certify.clock.restart_count != quote.clock.restart_count
        {
            return Err(refuse(
                "tpm.attest_mismatch",
                "the certify and the quote were made by different keys or in different boots",
            ));
        }
        // 11. The event log replays to the quoted values.
        let event_log = match &doc.log {
            None => None,
            Some(log) => {
                let log = eventlog::parse_event_log(log)
                    .map_err(|e| refuse("tpm.eventlog", format!("malformed {e}")))?;
                // Every bank the log declares and the quote selects is replayed and compared:
                // a log that contradicts any quoted bank is not this boot's log.
                let mut matched = Vec::new();
                let mut banks = Vec::new();
                for (hash, _) in &log.banks {
                    let name = structs::hash_name(*hash);
                    if !eventlog::can_replay(*hash) || !pcrs.iter().any(|p| p.bank == name) {
                        continue;
                    }
                    let replay = log.replay(*hash);
                    for p in pcrs.iter().filter(|p| p.bank == name) {
                        if let Some(v) = replay.get(&u32::from(p.index)) {
                            if hex::encode(v) != p.value {
                                return Err(refuse(
                                    "tpm.eventlog_mismatch",
                                    format!(
                                        "the event log replays {name} PCR {} to {}, the TPM quoted {}",
                                        p.index,
                                        hex::encode(v),
                                        p.value
                                    ),
                                ));
                            }
                            matched.push(u32::from(p.index));
                        }
                    }
                    banks.push(name);
                }
                matched.sort_unstable();
                matched.dedup();
                Some(EventLogSummary {
                    events: log.events.len(),
                    matched,
                    banks,
                })
            }
        };
        // 12. When the policy asks, the key signs only under PolicyPCR over the quoted PCRs.
        if self.policy.require_key_policy {
            check_key_policy(&key, &pcrs)?;
        }
        Ok(VerifiedTpm {
            ak: bound,
            ak_name: hex::encode(&ak_name),
            key_jwk: jwk,
            key_jkt,
            key_auth_policy: hex::encode(&key.auth_policy),
            session,
            pcrs,
            clock: quote.clock,
            firmware_version: format!("{:016x}", quote.firmware_version),
            event_log,
            tpm_id,
            valid_until,
        })
    }
}

impl VerifiedTpm {
    /// The measurements decide() matches audience sets against: `TPM_PCR<i>` → hex, for
    /// every quoted SHA-256 PCR (zeros included: a PCR that was not quoted is absent).
    pub fn measurements(&self) -> BTreeMap<String, String> {
        self.pcrs
            .iter()
            .filter(|p| p.bank == "sha256")
            .map(|p| (format!("TPM_PCR{}", p.index), p.value.clone()))
            .collect()
    }
}

/// An ECDSA signature in DER (`SEQUENCE { r, s }`, as X.509 and some tools write TPM
/// signatures) as a TPM signature with `hash`.
pub fn ecdsa_signature_from_der(der_sig: &[u8], hash: u16) -> Result<Signature, VerifyError> {
    let bad = || {
        refuse(
            "tpm.structure",
            "the signature is not a DER ECDSA signature",
        )
    };
    if der_sig.len() > 160 {
        return Err(bad());
    }
    let mut r = der::SliceReader::new(der_sig).map_err(|_| bad())?;
    let (rr, ss) = r
        .sequence(|r| -> der::Result<(Vec<u8>, Vec<u8>)> {
            let a = der::asn1::UintRef::decode(r)?;
            let b = der::asn1::UintRef::decode(r)?;
            Ok((a.as_bytes().to_vec(), b.as_bytes().to_vec()))
        })
        .map_err(|_| bad())?;
    if !r.is_finished() {
        return Err(bad());
    }
    Ok(Signature::Ecdsa { hash, r: rr, s: ss })
}

/// A TPM public key from an X.509 SubjectPublicKeyInfo (DER): RSA, or ECC P-256/P-384.
pub fn public_key_from_spki(spki: &[u8]) -> Result<PublicKey, VerifyError> {
    let bad = |d: &str| refuse("tpm.ak_algorithm", format!("the SubjectPublicKeyInfo: {d}"));
    let info = x509_cert::spki::SubjectPublicKeyInfoOwned::from_der(spki)
        .map_err(|e| bad(&e.to_string()))?;
    let bits = info
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| bad("unused bits"))?;
    match info.algorithm.oid.to_string().as_str() {
        "1.2.840.113549.1.1.1" => {
            let mut r = der::SliceReader::new(bits).map_err(|e| bad(&e.to_string()))?;
            let (n, e) = r
                .sequence(|r| -> der::Result<(Vec<u8>, Vec<u8>)> {
                    let n = der::asn1::UintRef::decode(r)?;
                    let e = der::asn1::UintRef::decode(r)?;
                    Ok((n.as_bytes().to_vec(), e.as_bytes().to_vec()))
                })
                .map_err(|e| bad(&e.to_string()))?;
            if e.is_empty() || e.len() > 4 {
                return Err(bad("RSA exponent is not a 32-bit number"));
            }
            let e = e.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
            let bits = u16::try_from(n.len() * 8).map_err(|_| bad("RSA modulus too large"))?;
            Ok(PublicKey::Rsa { n, e, bits })
        }
        "1.2.840.10045.2.1" => {
            let curve_oid: ObjectIdentifier = info
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as().ok())
                .ok_or_else(|| bad("EC key without a named curve"))?;
            let (c, len) = match curve_oid.to_string().as_str() {
                "1.2.840.10045.3.1.7" => (curve::NIST_P256, 32),
                "1.3.132.0.34" => (curve::NIST_P384, 48),
                other => return Err(bad(&format!("curve {other}"))),
            };
            if bits.len() != 1 + 2 * len || bits[0] != 4 {
                return Err(bad("not an uncompressed point"));
            }
            Ok(PublicKey::Ecc {
                curve: c,
                x: bits[1..=len].to_vec(),
                y: bits[1 + len..].to_vec(),
            })
        }
        other => Err(bad(&format!("algorithm {other}"))),
    }
}

/// What [`verify_quote`] verified.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedQuote {
    /// The quote's `extraData` (the caller's qualifying data), hex.
    pub extra_data: String,
    /// The quoted PCR values.
    pub pcrs: Vec<QuotedPcr>,
    /// The TPM's clock.
    pub clock: ClockInfo,
    /// Firmware version, hex.
    pub firmware_version: String,
    /// The signing key's qualified name, hex.
    pub qualified_signer: String,
}

/// Verifies a raw `TPM2_Quote`: `attest` (TPMS_ATTEST) carries `TPM_GENERATED_VALUE` and
/// the quote type, `sig` verifies under `ak`, `pcrs` are the selected values hashing to the
/// quote's digest, and, when given, `extraData` equals `expected_extra`. For artefacts that
/// are not CADA evidence (cloud vTPM quotes, `cada-verify tpm quote`): whether `ak` is a
/// restricted key bound to a genuine TPM is the caller's to establish.
pub fn verify_quote(
    attest: &[u8],
    sig: &Signature,
    ak: &PublicKey,
    pcrs: &[Vec<u8>],
    expected_extra: Option<&[u8]>,
) -> Result<VerifiedQuote, VerifyError> {
    let a = structs::parse_attest(attest).map_err(|e| {
        if e.detail.starts_with("magic") {
            refuse("tpm.magic", format!("the quote {}", e.detail))
        } else if e.detail.starts_with("type") {
            refuse("tpm.attest_type", format!("the quote {}", e.detail))
        } else {
            structure(&e)
        }
    })?;
    if a.kind != structs::ST_ATTEST_QUOTE {
        return Err(refuse(
            "tpm.attest_type",
            "the structure is a certify, not a quote",
        ));
    }
    if !verify_tpm_signature(ak, attest, sig) {
        return Err(refuse(
            "tpm.quote_signature",
            "the quote signature does not verify under the AK (altered, or signed by another key)",
        ));
    }
    if let Some(want) = expected_extra {
        if a.extra_data != want {
            return Err(refuse(
                "tpm.nonce",
                format!(
                    "the quote's extraData is {}, {} was expected",
                    hex::encode(&a.extra_data),
                    hex::encode(want)
                ),
            ));
        }
    }
    let quoted = check_quote_pcrs(&a, pcrs, sig.scheme().hash)?;
    Ok(VerifiedQuote {
        extra_data: hex::encode(&a.extra_data),
        pcrs: quoted,
        clock: a.clock,
        firmware_version: format!("{:016x}", a.firmware_version),
        qualified_signer: hex::encode(&a.qualified_signer),
    })
}

/// The TPM public key a certificate (DER) certifies.
pub fn public_key_from_cert(der_cert: &[u8]) -> Result<PublicKey, VerifyError> {
    let cert = ParsedCert::parse(der_cert)
        .map_err(|_| refuse("tpm.ak_chain", "the certificate does not parse"))?;
    let spki = cert
        .cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|e| refuse("tpm.ak_chain", e.to_string()))?;
    public_key_from_spki(&spki)
}
