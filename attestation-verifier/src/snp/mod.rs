//! AMD SEV-SNP attestation reports.
//!
//! Verification: parse the report (exact size, reserved fields); find the signing key's
//! chain — VCEK → ASK → ARK or VLEK → ASVK → ARK, with the ARK pinned per generation (or an
//! explicitly configured software root) — and validate it at the injected time; check that
//! the VCEK's hwID equals the report's chip_id and that its TCB extensions equal the
//! report's reported_tcb; verify the report signature (ECDSA P-384/SHA-384, little-endian
//! r and s); check revocation against the CRL held for the chain's root and key kind
//! ([`SnpVerifier::with_crls`]); apply the [`SnpPolicy`].
pub mod policy;
pub mod report;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use const_oid::ObjectIdentifier;
use der::Decode;
use serde::Serialize;

use crate::chain::{
    sha256, verify_path, ChainCache, PathRules, TrustAnchor, TrustStore, VerifiedPath,
};
use crate::checks::Checks;
use crate::crl::{check_generation, Crl, CrlSet};
use crate::roots_amd::{amd_cert, amd_fingerprint, AmdCert, Generation};
use crate::x509::ParsedCert;
use crate::{UnixTime, VerifyError};
pub use policy::{MinTcb, SnpPolicy};
pub use report::{SigningKey, SnpReport, Tcb, REPORT_LEN};

const HWID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.4");
const TCB_BL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.1");
const TCB_TEE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.2");
const TCB_SNP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.3");
const TCB_UCODE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.8");
const TCB_FMC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.9");

/// A report that passed every check.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedSnpReport {
    /// All fields.
    pub report: SnpReport,
    /// The key hierarchy it chains to.
    pub generation: Generation,
    /// VCEK or VLEK.
    pub signer: SigningKey,
    /// SHA-256 (hex) of the root.
    pub root_fingerprint: String,
    /// Name of the root.
    pub root_name: String,
    /// Whether the root is AMD's (false: an explicitly trusted software root, `sim-snp`).
    pub amd_root: bool,
    /// When the certificate path stops being valid.
    #[serde(serialize_with = "ser_time")]
    pub valid_until: UnixTime,
    /// Whether, and against which CRL, the chain was checked for revocation.
    pub revocation: Revocation,
}

/// The revocation check a verified report went through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Revocation {
    /// No certificate of the chain is listed in this CRL, which is current.
    Checked(CrlSummary),
    /// No CRL is configured for the chain's root and key kind, and the policy does not
    /// require one.
    NotChecked,
}

/// What identifies a CRL in reports and status listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrlSummary {
    /// Where it came from.
    pub source: String,
    /// The root that signed it.
    pub root: String,
    /// SHA-256 of its DER, hex.
    pub sha256: String,
    /// CRL number, hex.
    pub number: Option<String>,
    /// thisUpdate, RFC 3339.
    pub this_update: String,
    /// nextUpdate, RFC 3339.
    pub next_update: String,
    /// How many certificates it lists.
    pub entries: usize,
}

/// One configured CRL slot of a verifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrlStatus {
    /// The generation it was configured for.
    pub generation: Generation,
    /// The hierarchy it covers.
    pub kind: SigningKey,
    /// The CRL held, or `None` while the slot awaits one (chains refused meanwhile).
    pub crl: Option<CrlSummary>,
}

#[derive(Clone)]
struct HeldCrl {
    generation: Generation,
    root: String,
    /// `None`: declared, awaiting a CRL.
    crl: Option<Arc<Crl>>,
}

impl HeldCrl {
    fn summary(&self) -> Option<CrlSummary> {
        self.crl.as_ref().map(|c| CrlSummary {
            source: c.source().to_string(),
            root: self.root.clone(),
            sha256: c.fingerprint_hex(),
            number: c.number().map(String::from),
            this_update: c.this_update().to_string(),
            next_update: c.next_update().to_string(),
            entries: c.len(),
        })
    }
}

/// CRL slots keyed by the root (SHA-256 hex of the anchor) and the key kind below it.
type CrlSlots = HashMap<(String, SigningKey), HeldCrl>;

fn kind_name(k: SigningKey) -> &'static str {
    match k {
        SigningKey::Vcek => "VCEK",
        SigningKey::Vlek => "VLEK",
    }
}

fn ser_time<S: serde::Serializer>(t: &UnixTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_string())
}

/// Every check's outcome, for report mode.
#[derive(Debug)]
pub struct SnpOutcome {
    /// The decoded report, when parsing got that far.
    pub report: Option<SnpReport>,
    /// Every failed rule. Empty means valid.
    pub failures: Vec<VerifyError>,
}

/// Verifies SEV-SNP reports; caches verified ASK/ASVK prefixes; holds the CRLs it checks
/// chains against.
pub struct SnpVerifier {
    store: TrustStore,
    extra: TrustStore,
    cache: ChainCache,
    crls: RwLock<CrlSlots>,
}

impl Default for SnpVerifier {
    fn default() -> Self {
        SnpVerifier::new(TrustStore::empty())
    }
}

fn cn(name: &x509_cert::name::Name) -> Option<String> {
    name.common_name().ok().flatten().map(String::from)
}

fn ext_u8(cert: &ParsedCert<'_>, oid: ObjectIdentifier) -> Option<u8> {
    cert.extension(oid).and_then(|v| u8::from_der(v).ok())
}

/// The hwID extension: raw bytes, or the KDS "new" form wrapping them in an OCTET STRING.
fn hwid(cert: &ParsedCert<'_>) -> Option<Vec<u8>> {
    let v = cert.extension(HWID)?;
    match der::asn1::OctetString::from_der(v) {
        Ok(inner) if matches!(inner.as_bytes().len(), 8 | 64) => Some(inner.as_bytes().to_vec()),
        _ => Some(v.to_vec()),
    }
}

/// AMD's pinned ARKs, parsed once per process: every verifier built (one per policy load)
/// shares them instead of parsing three RSA-4096 certificates again.
fn amd_arks() -> &'static [TrustAnchor] {
    static ARKS: std::sync::OnceLock<Vec<TrustAnchor>> = std::sync::OnceLock::new();
    ARKS.get_or_init(|| {
        Generation::ALL
            .into_iter()
            .filter_map(|g| {
                let der = amd_cert(g, AmdCert::Ark)?;
                TrustAnchor::from_der(format!("ARK-{}", g.name()), &der).ok()
            })
            .collect()
    })
}

impl SnpVerifier {
    /// A verifier trusting AMD's pinned roots plus `extra` (e.g. a `sim-snp` root).
    pub fn new(extra: TrustStore) -> Self {
        let mut store = extra.clone();
        for a in amd_arks() {
            store.add(a.clone());
        }
        SnpVerifier {
            store,
            extra,
            cache: ChainCache::default(),
            crls: RwLock::new(HashMap::new()),
        }
    }

    /// Takes the CRLs of `set`: each is checked now against the trusted root its issuer
    /// names (the pinned ARK of its generation, or an explicitly trusted extra root) and
    /// refused if that root did not sign it (`snp.crl_signature`) or no trusted root has that
    /// name (`snp.crl_issuer`). A declared empty slot must name an AMD generation; its
    /// chains are refused until [`SnpVerifier::update_crl`] fills it.
    pub fn with_crls(self, set: &CrlSet) -> Result<Self, VerifyError> {
        let mut slots = CrlSlots::new();
        for (generation, kind, crl) in set.slots() {
            let (key, held) = match crl {
                Some(c) => self.admit(generation, Arc::new(c.clone()))?,
                None => {
                    let fp = amd_fingerprint(generation, AmdCert::Ark).unwrap_or_default();
                    let held = HeldCrl {
                        generation,
                        root: format!("ARK-{}", generation.name()),
                        crl: None,
                    };
                    (fp.to_string(), held)
                }
            };
            slots.insert((key, kind), held);
        }
        *self
            .crls
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = slots;
        Ok(self)
    }

    /// Replaces (or adds) the CRL of one slot while the verifier is in use — what a fetcher
    /// calls with a fresh list. The list is checked as in [`SnpVerifier::with_crls`]; one
    /// older than the list held (by thisUpdate) is refused (`snp.crl_rollback`), so a
    /// replayed old list cannot undo a revocation. On any error the held list stays.
    pub fn update_crl(
        &self,
        generation: Generation,
        kind: SigningKey,
        crl: Crl,
    ) -> Result<(), VerifyError> {
        let (key, held) = self.admit(generation, Arc::new(crl))?;
        let mut slots = self
            .crls
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = (key, kind);
        if let (Some(old), Some(new)) = (
            slots.get(&slot).and_then(|h| h.crl.as_ref()),
            held.crl.as_ref(),
        ) {
            if new.this_update() < old.this_update() {
                return Err(VerifyError::CrlRollback {
                    crl: new.source().to_string(),
                    offered: new.this_update().to_string(),
                    held: old.this_update().to_string(),
                });
            }
        }
        slots.insert(slot, held);
        Ok(())
    }

    /// Every configured CRL slot, in a stable order.
    pub fn crl_status(&self) -> Vec<CrlStatus> {
        let slots = self
            .crls
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<CrlStatus> = slots
            .iter()
            .map(|((_, kind), h)| CrlStatus {
                generation: h.generation,
                kind: *kind,
                crl: h.summary(),
            })
            .collect();
        out.sort_by(|a, b| {
            (a.generation, a.kind, &a.crl.as_ref().map(|c| &c.root)).cmp(&(
                b.generation,
                b.kind,
                &b.crl.as_ref().map(|c| &c.root),
            ))
        });
        out
    }

    /// Finds the trusted root that issued and signed `crl`; returns its slot key part.
    fn admit(
        &self,
        generation: Generation,
        crl: Arc<Crl>,
    ) -> Result<(String, HeldCrl), VerifyError> {
        check_generation(generation, &crl)?;
        let named: Vec<&TrustAnchor> = self
            .store
            .anchors()
            .iter()
            .filter(|a| a.subject() == crl.issuer())
            .collect();
        let Some(first) = named.first() else {
            return Err(VerifyError::CrlIssuer {
                crl: crl.source().to_string(),
                detail: format!(
                    "its issuer \"{}\" is not a trusted root (AMD's ARK of that generation, or a configured root)",
                    crl.issuer()
                ),
            });
        };
        let Some(anchor) = named.iter().find(|a| crl.signed_by(a.key())) else {
            return Err(VerifyError::CrlSignature {
                crl: crl.source().to_string(),
                root: first.name.clone(),
            });
        };
        let held = HeldCrl {
            generation,
            root: anchor.name.clone(),
            crl: Some(crl),
        };
        Ok((anchor.fingerprint_hex(), held))
    }

    /// Checks the chain `root → intermediate → leaf` that `path` verified against the CRL
    /// held for its root and `kind`.
    #[allow(clippy::too_many_arguments)]
    fn check_revocation(
        &self,
        path: &VerifiedPath,
        certs: [&[u8]; 2],
        leaf: &ParsedCert<'_>,
        kind: SigningKey,
        policy: &SnpPolicy,
        at: UnixTime,
        checks: &mut Checks,
    ) -> Result<Revocation, VerifyError> {
        let held = self
            .crls
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(path.anchor_fingerprint.clone(), kind))
            .cloned();
        let missing = || VerifyError::CrlMissing {
            scope: format!("the {} chain under {}", kind_name(kind), path.anchor_name),
        };
        let Some(held) = held else {
            if policy.require_crl {
                checks.fail(missing())?;
            }
            return Ok(Revocation::NotChecked);
        };
        let Some(crl) = &held.crl else {
            checks.fail(missing())?;
            return Ok(Revocation::NotChecked);
        };
        if let Err(e) = crl.check_current(at, policy.crl_grace_secs) {
            checks.fail(e)?;
        }
        let mut parsed = Vec::with_capacity(2);
        for (index, der) in certs.into_iter().enumerate() {
            parsed.push(
                ParsedCert::parse(der).map_err(|p| VerifyError::CertificateParse {
                    index,
                    role: if index == 0 { "root" } else { "ASK/ASVK" },
                    detail: format!("{p:?}"),
                })?,
            );
        }
        for (index, cert) in parsed.iter().chain(std::iter::once(leaf)).enumerate() {
            if crl.is_revoked(cert.issuer(), cert.serial()) {
                checks.fail(VerifyError::Revoked {
                    index,
                    subject: cert.subject().to_string(),
                    serial: hex::encode(cert.serial()),
                    crl: crl.source().to_string(),
                })?;
            }
        }
        Ok(held
            .summary()
            .map_or(Revocation::NotChecked, Revocation::Checked))
    }

    /// Replaces the chain cache (`ChainCache::new(0)` disables it).
    pub fn with_cache(mut self, cache: ChainCache) -> Self {
        self.cache = cache;
        self
    }

    /// Verifies `report` signed by `signer_cert` (VCEK/VLEK DER). `chain` may carry the ASK
    /// or ASVK and the ARK (DER, any order); missing ones come from the pinned AMD set.
    pub fn verify(
        &self,
        report: &[u8],
        signer_cert: &[u8],
        chain: &[Vec<u8>],
        policy: &SnpPolicy,
        at: UnixTime,
    ) -> Result<VerifiedSnpReport, VerifyError> {
        self.run(
            report,
            signer_cert,
            chain,
            policy,
            at,
            &mut Checks::fail_fast(),
            &mut None,
        )
    }

    /// Runs every check that can run and lists every failure.
    pub fn report(
        &self,
        report: &[u8],
        signer_cert: &[u8],
        chain: &[Vec<u8>],
        policy: &SnpPolicy,
        at: UnixTime,
    ) -> SnpOutcome {
        let mut checks = Checks::collect_all();
        let mut seen = None;
        if let Err(e) = self.run(
            report,
            signer_cert,
            chain,
            policy,
            at,
            &mut checks,
            &mut seen,
        ) {
            checks.failures.push(e);
        }
        SnpOutcome {
            report: seen,
            failures: checks.failures,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        bytes: &[u8],
        signer_der: &[u8],
        chain: &[Vec<u8>],
        policy: &SnpPolicy,
        at: UnixTime,
        checks: &mut Checks,
        seen: &mut Option<SnpReport>,
    ) -> Result<VerifiedSnpReport, VerifyError> {
        if bytes.len() != REPORT_LEN {
            return Err(VerifyError::SnpReport(format!(
                "a report is exactly {REPORT_LEN} bytes, got {}",
                bytes.len()
            )));
        }
        let leaf = ParsedCert::parse(signer_der).map_err(|p| VerifyError::CertificateParse {
            index: 2,
            role: "VCEK/VLEK",
            detail: format!("{p:?}"),
        })?;
        let issuer_cn = cn(leaf.issuer()).unwrap_or_default();
        // AMD names: ASK "SEV-<Gen>", ASVK "SEV-VLEK-<Gen>".
        let amd = Generation::ALL.into_iter().find_map(|g| {
            if issuer_cn == format!("SEV-{}", g.name()) {
                Some((g, AmdCert::Ask))
            } else if issuer_cn == format!("SEV-VLEK-{}", g.name()) {
                Some((g, AmdCert::Asvk))
            } else {
                None
            }
        });
        // The intermediate: a given certificate whose subject is the leaf's issuer, else the
        // pinned one. The root: a given certificate that is a trusted anchor, else the ARK.
        let given_parsed: Vec<(usize, ParsedCert<'_>)> = chain
            .iter()
            .enumerate()
            .filter_map(|(i, d)| ParsedCert::parse(d).ok().map(|c| (i, c)))
            .collect();
        let intermediate: Vec<u8> = match given_parsed
            .iter()
            .find(|(_, c)| c.subject() == leaf.issuer())
        {
            Some((i, _)) => chain[*i].clone(),
            None => match amd.and_then(|(g, which)| amd_cert(g, which)) {
                Some(d) => d,
                None => {
                    return Err(VerifyError::UntrustedRoot {
                        fingerprint: format!("(no ASK/ASVK for issuer {issuer_cn:?})"),
                    })
                }
            },
        };
        let root: Vec<u8> = match chain.iter().find(|d| self.store.find(&sha256(d)).is_some()) {
            Some(d) => d.clone(),
            None => match chain
                .iter()
                .find(|d| ParsedCert::parse(d).is_ok_and(|c| c.subject() == c.issuer()))
            {
                // a self-signed certificate that is not trusted: say so
                Some(d) => d.clone(),
                None => match amd.and_then(|(g, _)| amd_cert(g, AmdCert::Ark)) {
                    Some(d) => d,
                    None => {
                        return Err(VerifyError::UntrustedRoot {
                            fingerprint: format!("(no ARK for issuer {issuer_cn:?})"),
                        })
                    }
                },
            },
        };
        let rules = PathRules {
            understood_critical: &[],
            leaf_must_not_be_ca: true,
            leaf_usage: crate::chain::LeafUsage::DigitalSignature,
        };
        let path = verify_path(
            &self.store,
            &self.cache,
            &[&root, &intermediate],
            signer_der,
            &rules,
            at,
            checks,
        )?;
        let root_generation = Generation::ALL
            .into_iter()
            .find(|g| amd_fingerprint(*g, AmdCert::Ark) == Some(path.anchor_fingerprint.as_str()));
        let amd_root = root_generation.is_some();
        if let (Some(rg), Some((ig, _))) = (root_generation, amd) {
            if rg != ig {
                return Err(VerifyError::SnpGeneration(format!(
                    "the signing key was issued for {} but the chain ends at ARK-{}",
                    ig.name(),
                    rg.name()
                )));
            }
        }
        // The leaf's kind: AMD names VLEKs "SEV-VLEK" (and VCEKs "SEV-VCEK").
        let leaf_kind = match cn(leaf.subject()).as_deref() {
            Some("SEV-VLEK") => SigningKey::Vlek,
            _ => SigningKey::Vcek,
        };
        let revocation = self.check_revocation(
            &path,
            [&root, &intermediate],
            &leaf,
            leaf_kind,
            policy,
            at,
            checks,
        )?;
        let r = SnpReport::parse(bytes, root_generation)?;
        *seen = Some(r.clone());
        // The leaf's kind must be the one the report names.
        if leaf_kind != r.signing_key {
            checks.fail(VerifyError::SnpReport(format!(
                "the report says it is signed by the {:?} but the certificate is a {leaf_kind:?}",
                r.signing_key
            )))?;
        }
        if r.signing_key == SigningKey::Vcek && !r.mask_chip_key {
            match hwid(&leaf) {
                Some(id)
                    if r.chip_id.starts_with(&id)
                        && r.chip_id[id.len()..].iter().all(|b| *b == 0) => {}
                Some(_) => checks.fail(VerifyError::ChipIdMismatch)?,
                None => checks.fail(VerifyError::SnpReport(
                    "the VCEK has no hwID extension".into(),
                ))?,
            }
        }
        let t = &r.reported_tcb;
        let mut tcb_checks = vec![
            ("bootloader", TCB_BL, t.bootloader),
            ("tee", TCB_TEE, t.tee),
            ("snp", TCB_SNP, t.snp),
            ("microcode", TCB_UCODE, t.microcode),
        ];
        if let Some(f) = t.fmc {
            tcb_checks.push(("fmc", TCB_FMC, f));
        }
        for (name, oid, got) in tcb_checks {
            match ext_u8(&leaf, oid) {
                Some(v) if v == got => {}
                Some(v) => checks.fail(VerifyError::TcbMismatch {
                    component: name,
                    cert: v,
                    report: got,
                })?,
                None => checks.fail(VerifyError::SnpReport(format!(
                    "the signing certificate lacks the {name} TCB extension"
                )))?,
            }
        }
        checks.ensure(
            path.leaf_key
                .verify_es384_fixed(&bytes[..report::SIGNED_LEN], &r.signature_fixed()),
            || VerifyError::SnpSignature,
        )?;
        policy.check(&r, checks)?;
        Ok(VerifiedSnpReport {
            generation: r.generation,
            signer: r.signing_key,
            report: r,
            root_fingerprint: path.anchor_fingerprint,
            root_name: path.anchor_name,
            amd_root,
            valid_until: UnixTime::from_secs(path.valid_until),
            revocation,
        })
    }

    /// The extra (non-AMD) roots this verifier trusts.
    pub fn extra_roots(&self) -> &TrustStore {
        &self.extra
    }
}
