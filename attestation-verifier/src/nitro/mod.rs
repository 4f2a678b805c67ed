//! AWS Nitro Enclaves attestation documents.
//!
//! Verification follows AWS's attestation process: decode the COSE_Sign1 (ES384 only),
//! check every payload field's syntax, validate the certificate path from the pinned root
//! through `cabundle` to `certificate` at the injected time, verify the COSE signature with
//! the leaf key, then apply the caller's [`NitroPolicy`].
pub mod document;
pub mod policy;

use serde::Serialize;

use crate::chain::{verify_path, ChainCache, PathRules, TrustStore};
use crate::checks::Checks;
use crate::cose::{self, ALG_EMULATOR_UNSIGNED, ALG_ES384};
use crate::{roots, UnixTime, VerifyError};
pub use document::AttestationDocument;
pub use policy::{NitroPolicy, PcrSet};

/// Largest document accepted (real ones are about 4.5 KiB).
pub const MAX_DOCUMENT_LEN: usize = 32 * 1024;

/// A document that passed every check.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedNitroDocument {
    /// All fields of the document.
    #[serde(flatten)]
    pub document: AttestationDocument,
    /// Whether the enclave runs in debug mode.
    pub debug: bool,
    /// Whether this is an unsigned emulator document accepted in emulator mode.
    pub emulated: bool,
    /// SHA-256 (hex) of the root the chain ends at (empty when emulated).
    pub root_fingerprint: String,
    /// Name of that root.
    pub root_name: String,
    /// When the certificate path stops being valid (evidence must be refreshed by then).
    #[serde(serialize_with = "ser_time")]
    pub valid_until: UnixTime,
}

fn ser_time<S: serde::Serializer>(t: &UnixTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_string())
}

/// Every check's outcome, for report mode.
#[derive(Debug)]
pub struct NitroReport {
    /// The decoded document, when decoding got that far.
    pub document: Option<AttestationDocument>,
    /// Every failed rule, in the order checked. Empty means valid.
    pub failures: Vec<VerifyError>,
}

/// Verifies Nitro attestation documents against a trust store, caching verified CA prefixes.
pub struct NitroVerifier {
    trust: TrustStore,
    cache: ChainCache,
    accept_unsigned_emulator: bool,
}

impl Default for NitroVerifier {
    fn default() -> Self {
        NitroVerifier::new(roots::nitro_store())
    }
}

impl NitroVerifier {
    /// A verifier over `trust` (use [`roots::nitro_store`] and add to it).
    pub fn new(trust: TrustStore) -> Self {
        NitroVerifier {
            trust,
            cache: ChainCache::default(),
            accept_unsigned_emulator: false,
        }
    }

    /// Replaces the CA cache (e.g. `ChainCache::new(0)` to disable caching).
    pub fn with_cache(mut self, cache: ChainCache) -> Self {
        self.cache = cache;
        self
    }

    /// INSECURE: accept QEMU's unsigned emulator documents (alg −1), still applying every
    /// payload rule and the policy, and mark them `emulated`. For the emulator tests only.
    pub fn insecure_accept_emulator_documents(mut self) -> Self {
        self.accept_unsigned_emulator = true;
        self
    }

    /// The trust store.
    pub fn trust(&self) -> &TrustStore {
        &self.trust
    }

    /// The CA cache.
    pub fn cache(&self) -> &ChainCache {
        &self.cache
    }

    /// Verifies a document (raw COSE_Sign1 bytes) at time `at`, stopping at the first failure.
    pub fn verify(
        &self,
        bytes: &[u8],
        policy: &NitroPolicy,
        at: UnixTime,
    ) -> Result<VerifiedNitroDocument, VerifyError> {
        let mut checks = Checks::fail_fast();
        self.run(bytes, policy, at, &mut checks, &mut None)
    }

    /// Runs every check that can run and lists every failure.
    pub fn report(&self, bytes: &[u8], policy: &NitroPolicy, at: UnixTime) -> NitroReport {
        let mut checks = Checks::collect_all();
        let mut document = None;
        if let Err(e) = self.run(bytes, policy, at, &mut checks, &mut document) {
            checks.failures.push(e);
        }
        NitroReport {
            document,
            failures: checks.failures,
        }
    }

    fn run(
        &self,
        bytes: &[u8],
        policy: &NitroPolicy,
        at: UnixTime,
        checks: &mut Checks,
        seen: &mut Option<AttestationDocument>,
    ) -> Result<VerifiedNitroDocument, VerifyError> {
        let sign1 = cose::decode(bytes, MAX_DOCUMENT_LEN)?;
        let emulated = match sign1.alg {
            Some(ALG_ES384) => false,
            Some(ALG_EMULATOR_UNSIGNED) if self.accept_unsigned_emulator => true,
            Some(ALG_EMULATOR_UNSIGNED) => return Err(VerifyError::UnsignedEmulatorDocument),
            Some(other) => return Err(VerifyError::UnsupportedAlgorithm(other.to_string())),
            None => return Err(VerifyError::MissingAlgorithm),
        };
        if sign1.has_crit {
            checks.fail(VerifyError::CriticalHeader)?;
        }
        let doc = AttestationDocument::from_payload(&sign1.payload)?;
        *seen = Some(doc.clone());

        let (root_fingerprint, root_name, valid_until) = if emulated {
            (
                String::new(),
                String::new(),
                UnixTime::from_millis(u64::MAX),
            )
        } else {
            let chain: Vec<&[u8]> = doc.cabundle.iter().map(Vec::as_slice).collect();
            let rules = PathRules {
                understood_critical: &[],
                leaf_must_not_be_ca: true,
                leaf_usage: crate::chain::LeafUsage::DigitalSignature,
            };
            let path = verify_path(
                &self.trust,
                &self.cache,
                &chain,
                &doc.certificate,
                &rules,
                at,
                checks,
            )?;
            checks.ensure(
                sign1.signature.len() == 96
                    && path
                        .leaf_key
                        .verify_es384_fixed(&sign1.to_be_signed(), &sign1.signature),
                || VerifyError::DocumentSignature,
            )?;
            (
                path.anchor_fingerprint,
                path.anchor_name,
                UnixTime::from_secs(path.valid_until),
            )
        };
        policy.check(&doc, at, checks)?;
        Ok(VerifiedNitroDocument {
            debug: doc.is_debug(),
            document: doc,
            emulated,
            root_fingerprint,
            root_name,
            valid_until,
        })
    }
}
