//! What a caller requires of a Nitro document beyond its authenticity.
use std::collections::BTreeMap;

use super::document::AttestationDocument;
use crate::checks::Checks;
use crate::{UnixTime, VerifyError};

/// A set of PCR values that must all match (any PCR index).
pub type PcrSet = BTreeMap<u8, Vec<u8>>;

/// Policy for Nitro attestation documents.
#[derive(Debug, Clone, Default)]
pub struct NitroPolicy {
    /// Allowed PCR sets; a document passes if it matches any one of them. Empty: any PCRs.
    pub pcr_sets: Vec<PcrSet>,
    /// Accept debug-mode enclaves (PCR0–2 all zero). Off by default.
    pub allow_debug: bool,
    /// The nonce the document must carry.
    pub expected_nonce: Option<Vec<u8>>,
    /// The user_data the document must carry.
    pub expected_user_data: Option<Vec<u8>>,
    /// The public_key the document must carry.
    pub expected_public_key: Option<Vec<u8>>,
    /// Maximum age of the document at the verification time.
    pub max_age_ms: Option<u64>,
    /// How far the document's timestamp may lie after the verification time (clock skew).
    pub max_future_skew_ms: u64,
}

fn describe_mismatch(set: &PcrSet, doc: &AttestationDocument) -> String {
    for (idx, want) in set {
        match doc.pcrs.get(idx) {
            None => return format!("PCR{idx} is absent"),
            Some(got) if got != want => {
                return format!(
                    "PCR{idx} is {} but {} is required",
                    hex::encode(got),
                    hex::encode(want)
                )
            }
            _ => {}
        }
    }
    "matches".into()
}

impl NitroPolicy {
    pub(crate) fn check(
        &self,
        doc: &AttestationDocument,
        at: UnixTime,
        checks: &mut Checks,
    ) -> Result<(), VerifyError> {
        if doc.is_debug() && !self.allow_debug {
            checks.fail(VerifyError::DebugMode)?;
        }
        if !self.pcr_sets.is_empty() {
            let matched = self
                .pcr_sets
                .iter()
                .any(|set| set.iter().all(|(i, v)| doc.pcrs.get(i) == Some(v)));
            if !matched {
                let why: Vec<String> = self
                    .pcr_sets
                    .iter()
                    .enumerate()
                    .map(|(n, s)| format!("set {n}: {}", describe_mismatch(s, doc)))
                    .collect();
                checks.fail(VerifyError::PcrMismatch(why.join("; ")))?;
            }
        }
        if let Some(want) = &self.expected_nonce {
            if doc.nonce.as_ref() != Some(want) {
                checks.fail(VerifyError::NonceMismatch {
                    expected: hex::encode(want),
                    found: doc
                        .nonce
                        .as_ref()
                        .map_or_else(|| "none".into(), hex::encode),
                })?;
            }
        }
        if let Some(want) = &self.expected_user_data {
            checks.ensure(doc.user_data.as_ref() == Some(want), || {
                VerifyError::UserDataMismatch
            })?;
        }
        if let Some(want) = &self.expected_public_key {
            checks.ensure(doc.public_key.as_ref() == Some(want), || {
                VerifyError::PublicKeyMismatch
            })?;
        }
        let ts = doc.timestamp.as_millis();
        let now = at.as_millis();
        if ts > now.saturating_add(self.max_future_skew_ms) {
            checks.fail(VerifyError::DocumentFromFuture { ahead_ms: ts - now })?;
        }
        if let Some(max) = self.max_age_ms {
            let age = now.saturating_sub(ts);
            if age > max {
                checks.fail(VerifyError::DocumentTooOld {
                    age_ms: age,
                    max_ms: max,
                })?;
            }
        }
        Ok(())
    }
}
