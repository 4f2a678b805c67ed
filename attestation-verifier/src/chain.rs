//! Certificate path validation from pinned trust anchors, with a cache of verified CA
//! prefixes.
//!
//! A path is `[root, ca_1, …, ca_n]` plus a leaf. The root must be byte-identical to a trust
//! anchor held by the [`TrustStore`] (found by SHA-256 fingerprint): the root a document
//! carries is never trusted for what it says. Every later certificate must name its parent as
//! issuer, carry a valid signature by the parent's key, be valid at the verification time,
//! and — if it issues — be a CA whose path length allows it.
//!
//! The [`ChainCache`] remembers CA prefixes that verified. Its key is a hash over the whole
//! prefix (root fingerprint, then each certificate's DER), so an entry means "this exact
//! sequence of certificates chains to this anchor". An entry stores the intersection of the
//! prefix's validity windows, so the time check stays exact on every use.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;
use x509_cert::name::Name;
use x509_cert::spki::ObjectIdentifier;

use crate::checks::Checks;
use crate::x509::{CertProblem, ParsedCert, PublicKey};
use crate::{UnixTime, VerifyError};

/// A trusted root certificate.
#[derive(Clone)]
pub struct TrustAnchor {
    /// Human name, for messages.
    pub name: String,
    /// SHA-256 of the DER.
    pub fingerprint: [u8; 32],
    subject: Name,
    key: PublicKey,
    not_before: u64,
    not_after: u64,
    /// The anchor's own basicConstraints pathLenConstraint, when it is a CA with one.
    path_len: Option<u32>,
}

impl TrustAnchor {
    /// Builds an anchor from DER, refusing certificates that do not parse.
    pub fn from_der(name: impl Into<String>, der: &[u8]) -> Result<Self, VerifyError> {
        let problem = |p: CertProblem| match p {
            CertProblem::Parse(detail) | CertProblem::Algorithm(detail) => {
                VerifyError::CertificateParse {
                    index: 0,
                    role: "trust anchor",
                    detail,
                }
            }
        };
        let cert = ParsedCert::parse(der).map_err(problem)?;
        let key = cert.public_key().map_err(problem)?;
        // RFC 5280 leaves an anchor's own constraints to the verifier; enforcing its
        // pathLenConstraint is what OpenSSL does and what the anchor's issuer asked for.
        let path_len = match cert.basic_constraints().map_err(problem)? {
            Some((true, Some(pl))) => Some(u32::from(pl)),
            _ => None,
        };
        Ok(TrustAnchor {
            name: name.into(),
            fingerprint: sha256(der),
            subject: cert.subject().clone(),
            key,
            not_before: cert.not_before(),
            not_after: cert.not_after(),
            path_len,
        })
    }

    /// Fingerprint as lowercase hex.
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint)
    }

    /// The subject name.
    pub fn subject(&self) -> &Name {
        &self.subject
    }

    /// The public key.
    pub(crate) fn key(&self) -> &PublicKey {
        &self.key
    }
}

/// The set of roots a verifier trusts: the pinned vendor roots plus what configuration adds.
#[derive(Clone, Default)]
pub struct TrustStore {
    anchors: Vec<TrustAnchor>,
}

impl TrustStore {
    /// An empty store.
    pub fn empty() -> Self {
        TrustStore::default()
    }

    /// Adds an anchor (never replaces one: the pinned roots stay).
    pub fn add(&mut self, anchor: TrustAnchor) {
        if !self
            .anchors
            .iter()
            .any(|a| a.fingerprint == anchor.fingerprint)
        {
            self.anchors.push(anchor);
        }
    }

    /// Finds an anchor by fingerprint.
    pub fn find(&self, fingerprint: &[u8; 32]) -> Option<&TrustAnchor> {
        self.anchors.iter().find(|a| &a.fingerprint == fingerprint)
    }

    /// All anchors.
    pub fn anchors(&self) -> &[TrustAnchor] {
        &self.anchors
    }
}

/// A verified CA prefix.
#[derive(Clone)]
struct CaState {
    subject: Name,
    key: PublicKey,
    /// Intersection of validity windows along the prefix (seconds).
    valid_from: u64,
    valid_until: u64,
    /// How many more CAs may follow below this one (None: unlimited).
    path_len_left: Option<u32>,
}

/// Cache of verified CA prefixes, bounded in size; expired entries are dropped first.
pub struct ChainCache {
    entries: Mutex<HashMap<[u8; 32], Arc<CaState>>>,
    capacity: usize,
}

impl ChainCache {
    /// A cache holding at most `capacity` prefixes (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        ChainCache {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Number of cached prefixes.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every entry.
    pub fn clear(&self) {
        if let Ok(mut m) = self.entries.lock() {
            m.clear();
        }
    }

    fn get(&self, key: &[u8; 32]) -> Option<Arc<CaState>> {
        self.entries.lock().ok()?.get(key).cloned()
    }

    fn put(&self, key: [u8; 32], state: CaState, at_secs: u64) {
        if self.capacity == 0 {
            return;
        }
        let Ok(mut m) = self.entries.lock() else {
            return;
        };
        if m.len() >= self.capacity {
            m.retain(|_, v| v.valid_until >= at_secs);
        }
        if m.len() >= self.capacity {
            // Still full of live entries: drop the one that expires first.
            if let Some(k) = m.iter().min_by_key(|(_, v)| v.valid_until).map(|(k, _)| *k) {
                m.remove(&k);
            }
        }
        m.insert(key, Arc::new(state));
    }
}

impl Default for ChainCache {
    fn default() -> Self {
        ChainCache::new(4096)
    }
}

/// What a verified path yields.
#[derive(Debug, Clone)]
pub struct VerifiedPath {
    /// The leaf's public key.
    pub leaf_key: PublicKey,
    /// Fingerprint (hex) of the anchor the path ends at.
    pub anchor_fingerprint: String,
    /// Name of that anchor.
    pub anchor_name: String,
    /// Start of the window in which the whole path is valid (seconds).
    pub valid_from: u64,
    /// End of that window (seconds).
    pub valid_until: u64,
}

/// Rules that differ between uses of path validation.
pub struct PathRules<'a> {
    /// Extra critical extensions the caller understands (and checks itself).
    pub understood_critical: &'a [ObjectIdentifier],
    /// Whether the leaf must not be a CA.
    pub leaf_must_not_be_ca: bool,
    /// What a leaf's key usage extension, when present, must allow.
    pub leaf_usage: LeafUsage,
}

/// What the leaf's key is for, as its key usage extension must allow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafUsage {
    /// Signatures (attestation documents, reports, TPM attestation keys).
    DigitalSignature,
    /// Key establishment: keyEncipherment (RSA) or keyAgreement (ECC), as TPM endorsement
    /// keys, which never sign, are certified.
    KeyEstablishment,
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn prefix_key(parent: &[u8; 32], der: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(parent);
    ctx.update(der);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn parse_problem(index: usize, role: &'static str, p: CertProblem) -> VerifyError {
    match p {
        CertProblem::Parse(detail) => VerifyError::CertificateParse {
            index,
            role,
            detail,
        },
        CertProblem::Algorithm(oid) => VerifyError::CertificateAlgorithm { index, oid },
    }
}

fn check_validity(
    checks: &mut Checks,
    index: usize,
    cert: &ParsedCert<'_>,
    at: UnixTime,
) -> Result<(), VerifyError> {
    check_window(
        checks,
        index,
        || cert.subject().to_string(),
        (cert.not_before(), cert.not_after()),
        at,
    )
}

/// The validity window check shared by anchors and certificates. Certificates have second
/// precision: a time inside the notBefore second or the notAfter second is valid. Not yet
/// valid and expired are different failures (one is usually a clock or a premature
/// rollout, the other a certificate to renew) and are reported as such.
fn check_window(
    checks: &mut Checks,
    index: usize,
    subject: impl Fn() -> String,
    (not_before, not_after): (u64, u64),
    at: UnixTime,
) -> Result<(), VerifyError> {
    let at_s = at.as_secs();
    if at_s < not_before {
        checks.fail(VerifyError::CertificateNotYetValid {
            index,
            subject: subject(),
            not_before: UnixTime::from_secs(not_before).to_string(),
            at: at.to_string(),
        })?;
    }
    if at_s > not_after {
        checks.fail(VerifyError::CertificateExpired {
            index,
            subject: subject(),
            not_after: UnixTime::from_secs(not_after).to_string(),
            at: at.to_string(),
        })?;
    }
    Ok(())
}

/// Verifies `root, cas…` then `leaf` at time `at`.
pub(crate) fn verify_path(
    store: &TrustStore,
    cache: &ChainCache,
    chain: &[&[u8]],
    leaf: &[u8],
    rules: &PathRules<'_>,
    at: UnixTime,
    checks: &mut Checks,
) -> Result<VerifiedPath, VerifyError> {
    let at_s = at.as_secs();
    let Some(root_der) = chain.first() else {
        return Err(VerifyError::Field {
            field: "cabundle",
            rule: "must hold at least the root certificate".into(),
        });
    };
    let root_fp = sha256(root_der);
    let Some(anchor) = store.find(&root_fp) else {
        return Err(VerifyError::UntrustedRoot {
            fingerprint: hex::encode(root_fp),
        });
    };
    check_window(
        checks,
        0,
        || format!("{}, {}", anchor.name, anchor.subject),
        (anchor.not_before, anchor.not_after),
        at,
    )?;
    let mut parent = Arc::new(CaState {
        subject: anchor.subject.clone(),
        key: anchor.key.clone(),
        valid_from: anchor.not_before,
        valid_until: anchor.not_after,
        // The anchor's own pathLenConstraint bounds the CAs below it (review tpm-1 finding 2).
        path_len_left: anchor.path_len,
    });
    let mut key = root_fp;
    for (i, der) in chain.iter().enumerate().skip(1) {
        key = prefix_key(&key, der);
        if let Some(hit) = cache.get(&key) {
            if hit.valid_from <= at_s && at_s <= hit.valid_until {
                parent = hit;
                continue;
            }
        }
        let before = checks.count();
        let cert = ParsedCert::parse(der).map_err(|p| parse_problem(i, "intermediate", p))?;
        let state = verify_one(&parent, &cert, i, true, rules, at, checks)?;
        let next = CaState {
            valid_from: parent.valid_from.max(cert.not_before()),
            valid_until: parent.valid_until.min(cert.not_after()),
            ..state
        };
        if checks.count() == before {
            cache.put(key, next.clone(), at_s);
        }
        parent = Arc::new(next);
    }
    let index = chain.len();
    let cert = ParsedCert::parse(leaf).map_err(|p| parse_problem(index, "leaf", p))?;
    let state = verify_one(&parent, &cert, index, false, rules, at, checks)?;
    Ok(VerifiedPath {
        leaf_key: state.key,
        anchor_fingerprint: anchor.fingerprint_hex(),
        anchor_name: anchor.name.clone(),
        valid_from: parent.valid_from.max(cert.not_before()),
        valid_until: parent.valid_until.min(cert.not_after()),
    })
}

fn verify_one(
    parent: &CaState,
    cert: &ParsedCert<'_>,
    index: usize,
    is_ca: bool,
    rules: &PathRules<'_>,
    at: UnixTime,
    checks: &mut Checks,
) -> Result<CaState, VerifyError> {
    let role = if is_ca { "intermediate" } else { "leaf" };
    let alg = cert
        .sig_algorithm()
        .map_err(|p| parse_problem(index, role, p))?;
    let key = cert
        .public_key()
        .map_err(|p| parse_problem(index, role, p))?;
    checks.ensure(cert.issuer() == &parent.subject, || {
        VerifyError::IssuerMismatch { index }
    })?;
    checks.ensure(cert.signed_by(&parent.key, alg), || {
        VerifyError::CertificateSignature { index }
    })?;
    check_validity(checks, index, cert, at)?;
    // The parent issued this certificate: its path length must allow one more CA below it.
    if is_ca && parent.path_len_left == Some(0) {
        checks.fail(VerifyError::CaConstraint {
            index: index - 1,
            rule: "its path length constraint forbids another CA below it",
        })?;
    }
    let bc = cert
        .basic_constraints()
        .map_err(|p| parse_problem(index, role, p))?;
    let ku = cert
        .key_usage()
        .map_err(|p| parse_problem(index, role, p))?;
    let mut path_len_left = parent.path_len_left.map(|n| n.saturating_sub(1));
    if is_ca {
        match bc {
            Some((true, pl)) => {
                if let Some(pl) = pl {
                    path_len_left =
                        Some(path_len_left.map_or(u32::from(pl), |n| n.min(u32::from(pl))));
                }
            }
            _ => checks.fail(VerifyError::CaConstraint {
                index,
                rule: "it is not marked as a CA (basicConstraints cA)",
            })?,
        }
        if let Some(ku) = &ku {
            checks.ensure(ku.key_cert_sign(), || VerifyError::KeyUsage {
                index,
                usage: "certificate signing",
            })?;
        }
    } else {
        if rules.leaf_must_not_be_ca && matches!(bc, Some((true, _))) {
            checks.fail(VerifyError::CaConstraint {
                index,
                rule: "it is a CA certificate in the leaf position",
            })?;
        }
        if let Some(ku) = &ku {
            match rules.leaf_usage {
                LeafUsage::DigitalSignature => {
                    checks.ensure(ku.digital_signature(), || VerifyError::KeyUsage {
                        index,
                        usage: "digital signatures",
                    })?;
                }
                LeafUsage::KeyEstablishment => {
                    checks.ensure(ku.key_encipherment() || ku.key_agreement(), || {
                        VerifyError::KeyUsage {
                            index,
                            usage: "key encipherment or key agreement (an endorsement key)",
                        }
                    })?;
                }
            }
        }
    }
    if let Some(oid) = cert.unknown_critical(rules.understood_critical) {
        checks.fail(VerifyError::UnknownCriticalExtension {
            index,
            oid: oid.to_string(),
        })?;
    }
    Ok(CaState {
        subject: cert.subject().clone(),
        key,
        valid_from: 0,
        valid_until: u64::MAX,
        path_len_left,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        PKCS_ECDSA_P384_SHA384,
    };

    const T0: i64 = 1_800_000_000;

    fn params(cn: &str, ca: bool, from: i64, until: i64) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(until).unwrap();
        if ca {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        } else {
            p.is_ca = IsCa::ExplicitNoCa;
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        }
        p
    }

    /// `[root, intermediate]` and a leaf, each with its own validity window.
    struct Chain {
        root: Vec<u8>,
        ca: Vec<u8>,
        leaf: Vec<u8>,
    }

    fn chain(root_w: (i64, i64), ca_w: (i64, i64), leaf_w: (i64, i64)) -> Chain {
        chain_under(params("test root", true, root_w.0, root_w.1), ca_w, leaf_w)
    }

    fn chain_under(rp: CertificateParams, ca_w: (i64, i64), leaf_w: (i64, i64)) -> Chain {
        let gen = || KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let (rk, ck, lk) = (gen(), gen(), gen());
        let root = rp.self_signed(&rk).unwrap().der().to_vec();
        let cp = params("test intermediate", true, ca_w.0, ca_w.1);
        let ca = cp
            .signed_by(&ck, &Issuer::from_params(&rp, &rk))
            .unwrap()
            .der()
            .to_vec();
        let leaf = params("test leaf", false, leaf_w.0, leaf_w.1)
            .signed_by(&lk, &Issuer::from_params(&cp, &ck))
            .unwrap()
            .der()
            .to_vec();
        Chain { root, ca, leaf }
    }

    fn verify(c: &Chain, at: UnixTime, cache: &ChainCache) -> Result<VerifiedPath, VerifyError> {
        let mut store = TrustStore::empty();
        store.add(TrustAnchor::from_der("test root", &c.root).unwrap());
        let rules = PathRules {
            understood_critical: &[],
            leaf_must_not_be_ca: true,
            leaf_usage: LeafUsage::DigitalSignature,
        };
        verify_path(
            &store,
            cache,
            &[&c.root, &c.ca],
            &c.leaf,
            &rules,
            at,
            &mut Checks::fail_fast(),
        )
    }

    fn at_s(s: i64) -> UnixTime {
        UnixTime::from_secs(u64::try_from(s).unwrap())
    }

    #[test]
    fn a_root_not_yet_valid_is_not_reported_as_expired() {
        let wide = (T0 - 1000, T0 + 100_000);
        let c = chain((T0, T0 + 100_000), wide, wide);
        let err = verify(&c, at_s(T0 - 1), &ChainCache::new(0)).unwrap_err();
        match &err {
            VerifyError::CertificateNotYetValid {
                index,
                subject,
                not_before,
                ..
            } => {
                assert_eq!(*index, 0);
                assert!(subject.contains("test root"), "{subject}");
                assert_eq!(not_before, &at_s(T0).to_string());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(err.code(), "chain.not_yet_valid");
        assert!(err.to_string().contains("not valid before"), "{}", err);
        // Exactly at notBefore (and anywhere inside that second) it is valid.
        verify(&c, at_s(T0), &ChainCache::new(0)).unwrap();
        verify(
            &c,
            UnixTime::from_millis(at_s(T0).as_millis() + 999),
            &ChainCache::new(0),
        )
        .unwrap();
    }

    #[test]
    fn a_root_past_not_after_is_expired() {
        let wide = (T0 - 1000, T0 + 100_000);
        let c = chain((T0 - 1000, T0), wide, wide);
        verify(&c, at_s(T0), &ChainCache::new(0)).unwrap();
        verify(
            &c,
            UnixTime::from_millis(at_s(T0).as_millis() + 999),
            &ChainCache::new(0),
        )
        .unwrap();
        let err = verify(&c, at_s(T0 + 1), &ChainCache::new(0)).unwrap_err();
        assert!(
            matches!(err, VerifyError::CertificateExpired { index: 0, .. }),
            "{err:?}"
        );
        assert_eq!(err.code(), "chain.expired");
    }

    #[test]
    fn an_intermediate_not_yet_valid_names_itself_and_its_start() {
        let wide = (T0 - 1000, T0 + 200_000);
        let c = chain(wide, (T0, T0 + 100_000), wide);
        let cache = ChainCache::new(16);
        let err = verify(&c, at_s(T0 - 1), &cache).unwrap_err();
        match &err {
            VerifyError::CertificateNotYetValid {
                index,
                subject,
                not_before,
                ..
            } => {
                assert_eq!(*index, 1);
                assert!(subject.contains("test intermediate"), "{subject}");
                assert_eq!(not_before, &at_s(T0).to_string());
            }
            other => panic!("{other:?}"),
        }
        // Valid from its first second; the cached prefix then must not hide the window.
        verify(&c, at_s(T0), &cache).unwrap();
        assert_eq!(cache.len(), 1);
        let err = verify(&c, at_s(T0 - 1), &cache).unwrap_err();
        assert!(
            matches!(err, VerifyError::CertificateNotYetValid { index: 1, .. }),
            "{err:?}"
        );
        // One second past its notAfter it is expired, not "not yet valid".
        let err = verify(&c, at_s(T0 + 100_001), &cache).unwrap_err();
        assert!(
            matches!(err, VerifyError::CertificateExpired { index: 1, .. }),
            "{err:?}"
        );
    }

    /// Review tpm-1 finding 2: the anchor's own pathLenConstraint bounds the CAs below it.
    #[test]
    fn a_roots_path_length_constraint_is_enforced() {
        let wide = (T0 - 1000, T0 + 100_000);
        for (pl, ok) in [(0u8, false), (1, true)] {
            let mut rp = params("test root", true, wide.0, wide.1);
            rp.is_ca = IsCa::Ca(BasicConstraints::Constrained(pl));
            let c = chain_under(rp, wide, wide);
            let got = verify(&c, at_s(T0), &ChainCache::new(16));
            if ok {
                got.unwrap();
            } else {
                let err = got.unwrap_err();
                assert!(
                    matches!(err, VerifyError::CaConstraint { index: 0, .. }),
                    "{err:?}"
                );
            }
        }
    }

    #[test]
    fn a_leaf_not_yet_valid_is_its_own_failure() {
        let wide = (T0 - 1000, T0 + 100_000);
        let c = chain(wide, wide, (T0, T0 + 10));
        let err = verify(&c, at_s(T0 - 1), &ChainCache::new(0)).unwrap_err();
        assert!(
            matches!(err, VerifyError::CertificateNotYetValid { index: 2, .. }),
            "{err:?}"
        );
        verify(&c, at_s(T0 + 10), &ChainCache::new(0)).unwrap();
        let err = verify(&c, at_s(T0 + 11), &ChainCache::new(0)).unwrap_err();
        assert!(
            matches!(err, VerifyError::CertificateExpired { index: 2, .. }),
            "{err:?}"
        );
    }
}
