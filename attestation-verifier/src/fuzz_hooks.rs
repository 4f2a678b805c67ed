//! Entry points for the coverage-guided fuzz targets in `fuzz/`, compiled only with the
//! `fuzzing` feature (never in a production build). Each is a thin wrapper that reaches a
//! crate-private production function with no logic of its own.
use crate::chain::{verify_path, ChainCache, PathRules, TrustAnchor, TrustStore, VerifiedPath};
use crate::checks::Checks;
use crate::{UnixTime, VerifyError};

/// Runs path validation exactly as the Nitro and SEV-SNP verifiers do: `anchors` become
/// the trust store (those that do not parse are skipped), then `chain` (root first) and
/// `leaf` are validated at `at`. With `collect_all`, every failure is listed (report mode);
/// otherwise the first one stops validation.
pub fn verify_chain(
    anchors: &[&[u8]],
    chain: &[&[u8]],
    leaf: &[u8],
    at: UnixTime,
    cache: &ChainCache,
    collect_all: bool,
) -> (Result<VerifiedPath, VerifyError>, Vec<VerifyError>) {
    let mut store = TrustStore::empty();
    for (i, der) in anchors.iter().enumerate() {
        if let Ok(a) = TrustAnchor::from_der(format!("fuzz anchor {i}"), der) {
            store.add(a);
        }
    }
    let rules = PathRules {
        understood_critical: &[],
        leaf_must_not_be_ca: true,
        leaf_usage: crate::chain::LeafUsage::DigitalSignature,
    };
    let mut checks = if collect_all {
        Checks::collect_all()
    } else {
        Checks::fail_fast()
    };
    let result = verify_path(&store, cache, chain, leaf, &rules, at, &mut checks);
    (result, checks.failures)
}
