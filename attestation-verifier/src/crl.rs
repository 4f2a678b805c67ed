//! Certificate revocation lists (RFC 5280 §5) for the SEV-SNP key hierarchy.
//!
//! AMD's key distribution service publishes, per product generation, a CRL issued and
//! signed by that generation's ARK (RSASSA-PSS with SHA-384, like its certificates):
//! `/vcek/v1/{product}/crl` for the VCEK hierarchy (revoked ASKs) and
//! `/vlek/v1/{product}/crl` for the VLEK hierarchy (revoked ASVKs).
//!
//! * [`Crl`] parses one list within hard limits ([`MAX_CRL_LEN`], [`MAX_CRL_ENTRIES`]) and
//!   refuses what it cannot interpret (v1 lists, no nextUpdate, critical extensions,
//!   unsupported algorithms). Parsing trusts nothing: the signature is checked by
//!   [`SnpVerifier::with_crls`](crate::snp::SnpVerifier::with_crls) or
//!   [`SnpVerifier::update_crl`](crate::snp::SnpVerifier::update_crl) under the trusted root
//!   its issuer names, once, when the list is handed over.
//! * [`CrlSet`] is what a caller hands over: one slot per generation and key kind, filled
//!   from files today; a slot can also be declared and left empty
//!   ([`CrlSet::expect`]) for a fetcher to fill later through `update_crl`, and until it
//!   is filled, chains of that slot are refused (`snp.crl_missing`).
//!
//! Entries apply to certificates issued by the CRL issuer, or — for an entry carrying the
//! certificateIssuer extension (an indirect CRL, RFC 5280 §5.3.3) — by the issuer it names.
//! That is the only way a VCEK/VLEK can be listed: it is issued by the ASK/ASVK, not by the
//! ARK, and every VCEK and VLEK AMD issues has serial number 0, so matching a leaf against
//! the ARK's own entries would compare it with ASK serials, and one entry for serial 0 would
//! revoke every chip.
use std::collections::BTreeMap;
use std::sync::Arc;

use const_oid::ObjectIdentifier;
use der::Decode;
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::Name;

use crate::chain::sha256;
use crate::roots_amd::Generation;
use crate::snp::SigningKey;
use crate::x509::{sig_algorithm_of, tbs_slice, CertProblem, PublicKey, SigAlgorithm};
use crate::{UnixTime, VerifyError};

/// Largest CRL accepted. AMD's lists are under 1 KiB (866–890 bytes, 0–1 entries).
pub const MAX_CRL_LEN: usize = 256 * 1024;
/// Most entries accepted in one CRL.
pub const MAX_CRL_ENTRIES: usize = 4096;
/// Default staleness allowed past a CRL's nextUpdate: 7 days. AMD's lists carry a window of
/// about 46 days (thisUpdate 2026-08-19, nextUpdate 2026-10-04) and are reissued before it
/// ends, so a refresh job that runs daily has a week to recover from an outage before every
/// chain of that generation is refused.
pub const DEFAULT_CRL_GRACE_SECS: u64 = 7 * 86_400;

const CRL_NUMBER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.20");
const CERTIFICATE_ISSUER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.29");

/// One entry: a serial number and the issuer of the certificate it revokes.
#[derive(Debug, Clone)]
struct Entry {
    /// `None`: the CRL issuer.
    issuer: Option<Name>,
    serial: Vec<u8>,
}

/// A parsed certificate revocation list, not yet trusted.
#[derive(Debug, Clone)]
pub struct Crl {
    source: String,
    der: Vec<u8>,
    issuer: Name,
    this_update: u64,
    next_update: u64,
    number: Option<String>,
    sig_alg: SigAlgorithm,
    signature: Vec<u8>,
    entries: Vec<Entry>,
    fingerprint: [u8; 32],
}

fn malformed(source: &str, detail: impl Into<String>) -> VerifyError {
    VerifyError::CrlMalformed {
        crl: source.to_string(),
        detail: detail.into(),
    }
}

impl Crl {
    /// Parses a CRL from DER, or from PEM text holding one `X509 CRL` block. `source` names
    /// it in every message (a file path, a URL).
    pub fn from_pem_or_der(bytes: &[u8], source: impl Into<String>) -> Result<Self, VerifyError> {
        let source = source.into();
        if bytes.len() > MAX_CRL_LEN {
            return Err(malformed(
                &source,
                format!("{} bytes is over the {MAX_CRL_LEN}-byte limit", bytes.len()),
            ));
        }
        match pem_body(bytes) {
            Some(Ok(der)) => Self::from_der(&der, source),
            Some(Err(detail)) => Err(malformed(&source, detail)),
            None => Self::from_der(bytes, source),
        }
    }

    /// Parses a DER CRL. `source` names it in every message.
    pub fn from_der(der: &[u8], source: impl Into<String>) -> Result<Self, VerifyError> {
        let source = source.into();
        let bad = |d: String| malformed(&source, d);
        if der.len() > MAX_CRL_LEN {
            return Err(bad(format!(
                "{} bytes is over the {MAX_CRL_LEN}-byte limit",
                der.len()
            )));
        }
        let list: CertificateList = CertificateList::from_der(der)
            .map_err(|e| bad(format!("not a DER certificate revocation list ({e})")))?;
        let tbs = &list.tbs_cert_list;
        if tbs.version != x509_cert::Version::V2 {
            return Err(bad("not a version 2 CRL".into()));
        }
        if list.signature_algorithm != tbs.signature {
            return Err(bad("outer and inner signature algorithms differ".into()));
        }
        let sig_alg = sig_algorithm_of(&list.signature_algorithm).map_err(|p| match p {
            CertProblem::Parse(d) => bad(d),
            CertProblem::Algorithm(d) => bad(format!("unsupported signature algorithm {d}")),
        })?;
        let signature = list
            .signature
            .as_bytes()
            .ok_or_else(|| bad("the signature bit string has unused bits".into()))?
            .to_vec();
        if tbs_slice(der).is_none() {
            return Err(bad("cannot locate TBSCertList".into()));
        }
        let this_update = tbs.this_update.to_unix_duration().as_secs();
        let next_update = tbs
            .next_update
            .ok_or_else(|| bad("it has no nextUpdate, so its staleness cannot be bounded".into()))?
            .to_unix_duration()
            .as_secs();
        if next_update < this_update {
            return Err(bad("its nextUpdate is before its thisUpdate".into()));
        }
        let mut number = None;
        for ext in tbs.crl_extensions.iter().flatten() {
            if ext.critical {
                // Delta CRL indicators, issuing distribution points: scope rules this
                // verifier does not interpret. Using the list anyway could miss revocations.
                return Err(bad(format!(
                    "it carries the critical extension {}, which this verifier does not interpret",
                    ext.extn_id
                )));
            }
            if ext.extn_id == CRL_NUMBER {
                number = der::asn1::Int::from_der(ext.extn_value.as_bytes())
                    .ok()
                    .map(|n| hex::encode(n.as_bytes()));
            }
        }
        let revoked = tbs.revoked_certificates.as_deref().unwrap_or_default();
        if revoked.len() > MAX_CRL_ENTRIES {
            return Err(bad(format!(
                "{} entries is over the {MAX_CRL_ENTRIES}-entry limit",
                revoked.len()
            )));
        }
        let mut entries = Vec::with_capacity(revoked.len());
        // RFC 5280 §5.3.3: the certificate issuer of an entry without the extension is that
        // of the entry before it (the CRL issuer for the first).
        let mut current: Option<Name> = None;
        for r in revoked {
            for ext in r.crl_entry_extensions.iter().flatten() {
                if ext.extn_id == CERTIFICATE_ISSUER {
                    let names = x509_cert::ext::pkix::name::GeneralNames::from_der(
                        ext.extn_value.as_bytes(),
                    )
                    .map_err(|e| bad(format!("an entry's certificateIssuer is malformed ({e})")))?;
                    let dn = names.into_iter().find_map(|n| match n {
                        GeneralName::DirectoryName(dn) => Some(dn),
                        _ => None,
                    });
                    current = Some(dn.ok_or_else(|| {
                        bad("an entry's certificateIssuer names no directory name".into())
                    })?);
                } else if ext.critical {
                    return Err(bad(format!(
                        "an entry carries the critical extension {}, which this verifier does not interpret",
                        ext.extn_id
                    )));
                }
            }
            entries.push(Entry {
                issuer: current.clone(),
                serial: r.serial_number.as_bytes().to_vec(),
            });
        }
        Ok(Crl {
            fingerprint: sha256(der),
            der: der.to_vec(),
            issuer: tbs.issuer.clone(),
            this_update,
            next_update,
            number,
            sig_alg,
            signature,
            entries,
            source,
        })
    }

    /// Where it came from, as given to the parser.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The issuer name.
    pub fn issuer(&self) -> &Name {
        &self.issuer
    }

    /// thisUpdate.
    pub fn this_update(&self) -> UnixTime {
        UnixTime::from_secs(self.this_update)
    }

    /// nextUpdate.
    pub fn next_update(&self) -> UnixTime {
        UnixTime::from_secs(self.next_update)
    }

    /// The CRL number extension, hex, if present.
    pub fn number(&self) -> Option<&str> {
        self.number.as_deref()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it lists nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// SHA-256 of the DER, hex.
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint)
    }

    /// The DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Whether it lists the certificate with `serial` (DER INTEGER content bytes) issued by
    /// `cert_issuer`. Says nothing about whether the list itself is authentic or current.
    pub fn is_revoked(&self, cert_issuer: &Name, serial: &[u8]) -> bool {
        self.entries
            .iter()
            .any(|e| e.serial == serial && e.issuer.as_ref().unwrap_or(&self.issuer) == cert_issuer)
    }

    /// Whether `key` signed it.
    pub(crate) fn signed_by(&self, key: &PublicKey) -> bool {
        tbs_slice(&self.der).is_some_and(|tbs| key.verify_x509(self.sig_alg, tbs, &self.signature))
    }

    /// Checks thisUpdate ≤ `at` ≤ nextUpdate + `grace_secs` (second precision, as the
    /// times in the list).
    pub fn check_current(&self, at: UnixTime, grace_secs: u64) -> Result<(), VerifyError> {
        let at_s = at.as_secs();
        if at_s < self.this_update {
            return Err(VerifyError::CrlNotYetValid {
                crl: self.source.clone(),
                this_update: self.this_update().to_string(),
                at: at.to_string(),
            });
        }
        if at_s > self.next_update.saturating_add(grace_secs) {
            return Err(VerifyError::CrlStale {
                crl: self.source.clone(),
                next_update: self.next_update().to_string(),
                grace_secs,
                at: at.to_string(),
            });
        }
        Ok(())
    }
}

/// The body of the one `X509 CRL` PEM block in `bytes`: `None` when the bytes are not PEM
/// text, `Some(Err)` when they are but do not decode.
fn pem_body(bytes: &[u8]) -> Option<Result<Vec<u8>, String>> {
    use base64::Engine;
    const BEGIN: &str = "-----BEGIN X509 CRL-----";
    const END: &str = "-----END X509 CRL-----";
    let text = std::str::from_utf8(bytes).ok()?;
    let start = text.find(BEGIN)? + BEGIN.len();
    let Some(len) = text[start..].find(END) else {
        return Some(Err("the PEM block has no END line".into()));
    };
    let b64: String = text[start..start + len]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    Some(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("the PEM block is not base64 ({e})")),
    )
}

/// The CRLs a caller supplies to an SEV-SNP verifier, one slot per generation and key kind.
///
/// A slot holds the CRL of that generation's ARK for the VCEK hierarchy
/// ([`SigningKey::Vcek`], KDS `/vcek/v1/{product}/crl`) or the VLEK hierarchy
/// ([`SigningKey::Vlek`], `/vlek/v1/{product}/crl`). For a configured non-AMD root (the
/// `sim-snp` software root) the generation is the one its reports claim and the issuer must
/// be that root. A slot may be declared empty with [`CrlSet::expect`], for a fetcher to
/// fill later.
#[derive(Debug, Clone, Default)]
pub struct CrlSet {
    slots: BTreeMap<(Generation, SigningKey), Option<Arc<Crl>>>,
}

impl CrlSet {
    /// An empty set: no chain is checked for revocation, unless the policy requires it.
    pub fn new() -> Self {
        CrlSet::default()
    }

    /// Puts `crl` in the slot of `generation` and `kind` (replacing what was there). A list
    /// issued by another generation's ARK is refused here (`snp.crl_issuer`).
    pub fn insert(
        &mut self,
        generation: Generation,
        kind: SigningKey,
        crl: Crl,
    ) -> Result<(), VerifyError> {
        check_generation(generation, &crl)?;
        self.slots.insert((generation, kind), Some(Arc::new(crl)));
        Ok(())
    }

    /// Declares the slot of `generation` and `kind` without a CRL yet: chains of that slot
    /// are refused (`snp.crl_missing`) until one is supplied.
    pub fn expect(&mut self, generation: Generation, kind: SigningKey) {
        self.slots.entry((generation, kind)).or_insert(None);
    }

    /// The CRL of a slot, if held.
    pub fn get(&self, generation: Generation, kind: SigningKey) -> Option<&Crl> {
        self.slots.get(&(generation, kind))?.as_deref()
    }

    /// Every slot, in a stable order, with its CRL if held.
    pub fn slots(&self) -> impl Iterator<Item = (Generation, SigningKey, Option<&Crl>)> {
        self.slots.iter().map(|((g, k), c)| (*g, *k, c.as_deref()))
    }

    /// Number of slots (held or expected).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no slot is configured.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// Refuses a CRL whose issuer is the AMD ARK of a generation other than `generation`.
pub(crate) fn check_generation(generation: Generation, crl: &Crl) -> Result<(), VerifyError> {
    let cn = crl
        .issuer()
        .common_name()
        .ok()
        .flatten()
        .map(String::from)
        .unwrap_or_default();
    match Generation::ALL
        .into_iter()
        .find(|g| cn == format!("ARK-{}", g.name()))
    {
        Some(g) if g != generation => Err(VerifyError::CrlIssuer {
            crl: crl.source().to_string(),
            detail: format!(
                "it is issued by ARK-{}, so it is the {} CRL, not the {} one",
                g.name(),
                g.name(),
                generation.name()
            ),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_oversize_are_typed_errors() {
        for bytes in [
            &b""[..],
            &[0x30, 0x00][..],
            &[0xff; 64][..],
            b"-----BEGIN X509 CRL-----\n!!!\n-----END X509 CRL-----\n",
            b"-----BEGIN X509 CRL-----\nAAAA\n",
        ] {
            let err = Crl::from_pem_or_der(bytes, "t").unwrap_err();
            assert_eq!(err.code(), "snp.crl_malformed", "{bytes:?}: {err}");
        }
        let big = vec![0x30; MAX_CRL_LEN + 1];
        let err = Crl::from_pem_or_der(&big, "big").unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
        let err = Crl::from_der(&big, "big").unwrap_err();
        assert_eq!(err.code(), "snp.crl_malformed");
    }
}
