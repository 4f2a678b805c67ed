//! SEV-SNP report verification: cold (nothing cached), warm (ASK→ARK cached), warm with
//! the chain checked against AMD's real Milan CRL (testdata/amd), and the `sev` crate's own
//! report verification (virtee/sev, `crypto_nossl`) on the same report and chain in the
//! same run.
#[path = "../../attestation-verifier/tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use cada_attestation_verifier::chain::ChainCache;
use cada_attestation_verifier::crl::{Crl, CrlSet};
use cada_attestation_verifier::roots_amd::{amd_cert, AmdCert, Generation};
use cada_attestation_verifier::snp::{Revocation, SigningKey, SnpPolicy, SnpVerifier};
use cada_attestation_verifier::UnixTime;
use criterion::{criterion_group, Criterion};
use sev::certs::snp::{Chain, Verifiable};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;

/// A fixture found like the tests find them (`$CADA_FIXTURES`, else the vendored
/// `testdata/`), failing loudly when it is missing.
fn fixture(rel: &str) -> Vec<u8> {
    common::read(rel)
}

struct Input {
    report: Vec<u8>,
    vcek: Vec<u8>,
    ark: Vec<u8>,
    ask: Vec<u8>,
    at: UnixTime,
}

fn input() -> Input {
    Input {
        report: fixture("sev-snp/S01_milan_virtee_report.bin"),
        vcek: fixture("sev-snp/S01_milan_virtee_vcek.der"),
        ark: amd_cert(Generation::Milan, AmdCert::Ark).expect("ARK"),
        ask: amd_cert(Generation::Milan, AmdCert::Ask).expect("ASK"),
        at: UnixTime::parse_rfc3339("2026-11-01T00:00:00Z").expect("time"),
    }
}

/// A warm verifier holding AMD's Milan CRL, and a time inside that list's window.
fn with_crl() -> (SnpVerifier, UnixTime) {
    let crl = Crl::from_der(
        include_bytes!("../../testdata/amd/milan_vcek.crl"),
        "KDS /vcek/v1/Milan/crl",
    )
    .expect("CRL");
    let mut set = CrlSet::new();
    set.insert(Generation::Milan, SigningKey::Vcek, crl)
        .expect("Milan CRL");
    let v = SnpVerifier::default()
        .with_crls(&set)
        .expect("CRL verifies");
    (
        v,
        UnixTime::parse_rfc3339("2026-09-01T00:00:00Z").expect("time"),
    )
}

fn peer(i: &Input) -> bool {
    let Ok(report) = AttestationReport::from_bytes(&i.report) else {
        return false;
    };
    let Ok(chain) = Chain::from_der(&i.ark, &i.ask, &i.vcek) else {
        return false;
    };
    (&chain, &report).verify().is_ok()
}

fn benches(c: &mut Criterion) {
    let i = input();
    let p = SnpPolicy::default();
    let cold = SnpVerifier::default().with_cache(ChainCache::new(0));
    let warm = SnpVerifier::default();
    cold.verify(&i.report, &i.vcek, &[], &p, i.at)
        .expect("fixture verifies");
    warm.verify(&i.report, &i.vcek, &[], &p, i.at)
        .expect("fixture verifies");
    assert!(peer(&i), "the peer verifies the fixture");
    let (crl, crl_at) = with_crl();
    let checked = crl
        .verify(&i.report, &i.vcek, &[], &p, crl_at)
        .expect("fixture verifies with the CRL");
    assert!(matches!(checked.revocation, Revocation::Checked(_)));
    let mut g = c.benchmark_group("snp_verify");
    g.bench_function("cada_cold", |b| {
        b.iter(|| cold.verify(&i.report, &i.vcek, &[], &p, i.at).is_ok());
    });
    g.bench_function("cada_warm", |b| {
        b.iter(|| warm.verify(&i.report, &i.vcek, &[], &p, i.at).is_ok());
    });
    g.bench_function("cada_warm_crl", |b| {
        b.iter(|| crl.verify(&i.report, &i.vcek, &[], &p, crl_at).is_ok());
    });
    g.bench_function("peer_sev_crate", |b| b.iter(|| peer(&i)));
    g.finish();
}

fn mean_us(mut f: impl FnMut() -> bool) -> f64 {
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < Duration::from_secs(2) {
        assert!(f());
        n += 1;
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

fn summary() {
    let i = input();
    let p = SnpPolicy::default();
    let cold = SnpVerifier::default().with_cache(ChainCache::new(0));
    let warm = SnpVerifier::default();
    let c = mean_us(|| cold.verify(&i.report, &i.vcek, &[], &p, i.at).is_ok());
    let w = mean_us(|| warm.verify(&i.report, &i.vcek, &[], &p, i.at).is_ok());
    let s = mean_us(|| peer(&i));
    let (crl, crl_at) = with_crl();
    let wc = mean_us(|| crl.verify(&i.report, &i.vcek, &[], &p, crl_at).is_ok());
    let w2 = mean_us(|| warm.verify(&i.report, &i.vcek, &[], &p, crl_at).is_ok());
    println!(
        "summary: warm with the Milan CRL {wc:.0} µs, without {w2:.0} µs at the same time (+{:.1} µs)",
        wc - w2
    );
    println!("summary: cada cold {c:.0} µs ({:.2}x the 380 µs computed limit), warm {w:.0} µs ({:.2}x the 225 µs limit)", c / 380.0, w / 225.0);
    println!(
        "summary: peer sev crate {s:.0} µs/report; cada cold is {:.1}x faster, warm {:.1}x",
        s / c,
        s / w
    );
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
