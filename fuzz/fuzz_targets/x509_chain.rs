//! Certificate parsing and path validation: `x509::certs_from_pem_or_der`,
//! `TrustAnchor::from_der` and the production `verify_path` (through the `fuzzing`-feature
//! hook), the same code the Nitro and SEV-SNP verifiers run.
//!
//! Input: a flag byte, a signed 32-bit big-endian time offset in seconds, then DER
//! certificates back to back: the first is the trust anchor (and the chain's root), the last
//! the leaf. Validation time: the leaf's notBefore plus the offset. Flags: bit 0 — use the
//! shared prefix cache for the fail-fast run; bit 1 — trust no anchor.
//! Oracle: the fail-fast run (cached or not) succeeds exactly when the uncached
//! collect-all run succeeds with no failure.
#![no_main]

use std::sync::OnceLock;

use cada_attestation_verifier::chain::{ChainCache, TrustAnchor};
use cada_attestation_verifier::fuzz_hooks::verify_chain;
use cada_attestation_verifier::{x509, UnixTime};
use cada_fuzz::{split_der, NITRO_AT};
use der::Decode;
use libfuzzer_sys::fuzz_target;

fn shared_cache() -> &'static ChainCache {
    static C: OnceLock<ChainCache> = OnceLock::new();
    C.get_or_init(|| ChainCache::new(64))
}

fn not_before(der: &[u8]) -> Option<u64> {
    let c = x509_cert::Certificate::from_der(der).ok()?;
    Some(
        c.tbs_certificate()
            .validity()
            .not_before
            .to_unix_duration()
            .as_secs(),
    )
}

fuzz_target!(
    init: {
        cada_fuzz::write_seeds_if_asked("x509_chain");
    },
    |data: &[u8]| {
        if data.len() < 5 {
            return;
        }
        let flags = data[0];
        let offset = i32::from_be_bytes([data[1], data[2], data[3], data[4]]);
        let body = &data[5..];
        let _ = x509::certs_from_pem_or_der(body);
        let certs = split_der(body, 8);
        for c in &certs {
            let _ = TrustAnchor::from_der("fuzz", c);
        }
        let Some((leaf, chain)) = certs.split_last() else {
            return;
        };
        let at = match not_before(leaf) {
            Some(s) => UnixTime::from_secs(s.saturating_add_signed(i64::from(offset))),
            None => NITRO_AT,
        };
        let anchors: Vec<&[u8]> = if flags & 2 == 2 {
            vec![]
        } else {
            chain.first().copied().into_iter().collect()
        };
        let none = ChainCache::new(0);
        let cache = if flags & 1 == 1 { shared_cache() } else { &none };
        let (fast, _) = verify_chain(&anchors, chain, leaf, at, cache, false);
        let (all, failures) = verify_chain(&anchors, chain, leaf, at, &none, true);
        assert_eq!(
            fast.is_ok(),
            all.is_ok() && failures.is_empty(),
            "fail-fast {:?} vs collect-all {:?} / {:?}",
            fast.err(),
            all.err(),
            failures
        );
    }
);
