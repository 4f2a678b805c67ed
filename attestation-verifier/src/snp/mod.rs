//! AMD SEV-SNP attestation reports.
//!
//! Verification: parse the report (exact size, reserved fields); find the signing key's
//! chain — VCEK → ASK → ARK or VLEK → ASVK → ARK, with the ARK pinned per generation (or an
//! explicitly configured software root) — and validate it at the injected time; check that
//! the VCEK's hwID equals the report's chip_id and that its TCB extensions equal the
//! report's reported_tcb; verify the report signature (ECDSA P-384/SHA-384, little-endian
//! r and s); apply the [`SnpPolicy`].
pub mod policy;
pub mod report;

use const_oid::ObjectIdentifier;
use der::Decode;
use serde::Serialize;

use crate::chain::{sha256, verify_path, ChainCache, PathRules, TrustAnchor, TrustStore};
use crate::checks::Checks;
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

/// Verifies SEV-SNP reports; caches verified ASK/ASVK prefixes.
pub struct SnpVerifier {
    store: TrustStore,
    extra: TrustStore,
    cache: ChainCache,
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

impl SnpVerifier {
    /// A verifier trusting AMD's pinned roots plus `extra` (e.g. a `sim-snp` root).
    pub fn new(extra: TrustStore) -> Self {
        let mut store = extra.clone();
        for g in Generation::ALL {
            if let Some(der) = amd_cert(g, AmdCert::Ark) {
                if let Ok(a) = TrustAnchor::from_der(format!("ARK-{}", g.name()), &der) {
                    store.add(a);
                }
            }
        }
        SnpVerifier {
            store,
            extra,
            cache: ChainCache::default(),
        }
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
        let r = SnpReport::parse(bytes, root_generation)?;
        *seen = Some(r.clone());
        // The leaf's kind must be the one the report names.
        let leaf_cn = cn(leaf.subject()).unwrap_or_default();
        let leaf_kind = match leaf_cn.as_str() {
            "SEV-VLEK" => SigningKey::Vlek,
            _ => SigningKey::Vcek,
        };
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
        })
    }

    /// The extra (non-AMD) roots this verifier trusts.
    pub fn extra_roots(&self) -> &TrustStore {
        &self.extra
    }
}
