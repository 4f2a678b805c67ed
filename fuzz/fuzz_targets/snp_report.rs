//! SEV-SNP reports with their VCEK/VLEK and chain through `SnpVerifier::verify` / `report`
//! (AMD's pinned roots), and `SnpReport::parse` alone.
//!
//! Input: one selector byte, the report (1184 bytes), then DER certificates back to back:
//! the VCEK/VLEK first, then any ASK/ASVK/ARK. Selector bits: 0 — verify at the VLEK time
//! instead of the VCEK time; 1 — also run report mode; 2 — without the chain cache; 3..4 —
//! generation hint for the bare parser. Oracle: a report that verifies has the signed bytes
//! of a real fixture; report mode agrees with verify.
#![no_main]

use std::sync::OnceLock;

use cada_attestation_verifier::chain::ChainCache;
use cada_attestation_verifier::roots_amd::Generation;
use cada_attestation_verifier::snp::{SnpPolicy, SnpReport, SnpVerifier, REPORT_LEN};
use cada_fuzz::{snp_fixtures, split_der, SNP_AT, SNP_AT_VLEK};
use libfuzzer_sys::fuzz_target;

const SIGNED_LEN: usize = 0x2A0;

fn cached() -> &'static SnpVerifier {
    static V: OnceLock<SnpVerifier> = OnceLock::new();
    V.get_or_init(SnpVerifier::default)
}

fn uncached() -> &'static SnpVerifier {
    static V: OnceLock<SnpVerifier> = OnceLock::new();
    V.get_or_init(|| SnpVerifier::default().with_cache(ChainCache::new(0)))
}

fn genuine_signed_parts() -> &'static [Vec<u8>] {
    static G: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    G.get_or_init(|| {
        snp_fixtures()
            .iter()
            .filter(|f| f.report.len() == REPORT_LEN)
            .map(|f| f.report[..SIGNED_LEN].to_vec())
            .collect()
    })
}

fuzz_target!(
    init: {
        cada_fuzz::write_seeds_if_asked("snp_report");
    },
    |data: &[u8]| {
        let Some((&sel, rest)) = data.split_first() else {
            return;
        };
        let (report, certs) = rest.split_at(rest.len().min(REPORT_LEN));
        let hint = match (sel >> 3) & 3 {
            0 => None,
            1 => Some(Generation::Milan),
            2 => Some(Generation::Genoa),
            _ => Some(Generation::Turin),
        };
        let _ = SnpReport::parse(report, hint);
        let certs = split_der(certs, 8);
        let Some((signer, chain)) = certs.split_first() else {
            return;
        };
        let chain: Vec<Vec<u8>> = chain.iter().map(|c| c.to_vec()).collect();
        let at = if sel & 1 == 1 { SNP_AT_VLEK } else { SNP_AT };
        let v = if sel & 4 == 4 { uncached() } else { cached() };
        let policy = SnpPolicy {
            allow_debug: true,
            ..SnpPolicy::default()
        };
        let result = v.verify(report, signer, &chain, &policy, at);
        if result.is_ok() {
            let g = genuine_signed_parts();
            assert!(
                g.is_empty() || g.iter().any(|s| s[..] == report[..SIGNED_LEN]),
                "a report that is not a fixture verified"
            );
        }
        if sel & 2 == 2 {
            let outcome = v.report(report, signer, &chain, &policy, at);
            assert_eq!(
                outcome.failures.is_empty(),
                result.is_ok(),
                "report mode and verify disagree: {:?} vs {:?}",
                outcome.failures,
                result.err()
            );
        }
    }
);
