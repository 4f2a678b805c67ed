//! Nitro document verification: cold (no cache), warm (CA prefixes cached), and the peer
//! crate `attestation-doc-validation` on the same document in the same run.
//!
//! The peer reads the wall clock and has no time parameter; its own tests override the
//! clock with `cfg(test)`, which a dependency cannot use. `scripts/bench-nitro.sh` therefore
//! runs this binary under libfaketime (wall clock set to the document's timestamp, monotonic
//! clock untouched, so the timings are real). Run without it, the peer is reported as
//! "clock not pinned" and skipped.
#[path = "../../attestation-verifier/tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use cada_attestation_verifier::chain::ChainCache;
use cada_attestation_verifier::nitro::{NitroPolicy, NitroVerifier};
use cada_attestation_verifier::UnixTime;
use criterion::{criterion_group, Criterion};

const DOC: &str = "nitro/N03_evervault_beta_us-east-1_2022-10-13.cbor";
const DOC_TIME_MS: u64 = 1_665_651_482_136;

/// The benchmarked document, found like the tests find fixtures (`$CADA_FIXTURES`, else the
/// vendored `testdata/`), failing loudly when it is missing.
fn fixture() -> Vec<u8> {
    common::read(DOC)
}

fn policy() -> NitroPolicy {
    NitroPolicy::default()
}

fn peer_ok(doc: &[u8]) -> bool {
    attestation_doc_validation::validate_and_parse_attestation_doc(doc).is_ok()
}

fn benches(c: &mut Criterion) {
    let doc = fixture();
    let at = UnixTime::from_millis(DOC_TIME_MS);
    let mut g = c.benchmark_group("nitro_verify");
    let cold = NitroVerifier::default().with_cache(ChainCache::new(0));
    cold.verify(&doc, &policy(), at).expect("fixture verifies");
    g.bench_function("cada_cold", |b| {
        b.iter(|| cold.verify(&doc, &policy(), at).is_ok());
    });
    let warm = NitroVerifier::default();
    warm.verify(&doc, &policy(), at).expect("fixture verifies");
    g.bench_function("cada_warm", |b| {
        b.iter(|| warm.verify(&doc, &policy(), at).is_ok());
    });
    if peer_ok(&doc) {
        g.bench_function("peer_attestation_doc_validation", |b| {
            b.iter(|| peer_ok(&doc));
        });
    } else {
        eprintln!("peer attestation-doc-validation: clock not pinned (run scripts/bench-nitro.sh); skipped");
    }
    g.finish();
}

/// Docs/s over about one second, for the summary ratios.
fn rate(mut f: impl FnMut() -> bool) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        assert!(f());
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn summary() {
    let doc = fixture();
    let at = UnixTime::from_millis(DOC_TIME_MS);
    let cold = NitroVerifier::default().with_cache(ChainCache::new(0));
    let warm = NitroVerifier::default();
    let c = rate(|| cold.verify(&doc, &policy(), at).is_ok());
    let w = rate(|| warm.verify(&doc, &policy(), at).is_ok());
    println!("summary: cada cold {c:.0} docs/s, warm {w:.0} docs/s (one core)");
    if peer_ok(&doc) {
        let p = rate(|| peer_ok(&doc));
        println!(
            "summary: peer attestation-doc-validation {p:.0} docs/s; cold {:.2}x, warm {:.2}x the peer",
            c / p,
            w / p
        );
    } else {
        println!("summary: peer skipped (clock not pinned)");
    }
}

criterion_group! {
    name = group;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}

fn main() {
    group();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
