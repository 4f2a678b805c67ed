//! Decode cost of our own parsers against the design-card crates, on every real fixture:
//! COSE_Sign1 of each Nitro document (`cose::decode` + Sig_structure against
//! `coset::CoseSign1::from_slice` + `tbs_data`), and each real SEV-SNP report
//! (`SnpReport::parse` against `sev`'s `AttestationReport::from_bytes`). The hostile-input
//! half of the evaluation is `tests/parser_hardening.rs`; the decision is in ARCHITECTURE.md
//! ("Why our own COSE and SNP parsers (measured)").
#[path = "../../attestation-verifier/tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use cada_attestation_verifier::cose;
use cada_attestation_verifier::nitro::MAX_DOCUMENT_LEN;
use cada_attestation_verifier::snp::SnpReport;
use coset::{CborSerializable, CoseSign1};
use criterion::{criterion_group, Criterion, Throughput};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;

fn nitro() -> Vec<Vec<u8>> {
    common::nitro_docs().into_iter().map(|(_, b)| b).collect()
}

fn snp() -> Vec<Vec<u8>> {
    let idx = common::index();
    idx["snp_reports"]
        .as_array()
        .expect("snp_reports")
        .iter()
        .map(|r| common::read(r["file"].as_str().expect("file")))
        .collect()
}

/// Decodes and builds the to-be-signed bytes; the length keeps the work observable.
fn cada_cose(doc: &[u8]) -> usize {
    let s = cose::decode(doc, MAX_DOCUMENT_LEN).expect("cada decodes a real document");
    s.to_be_signed().len() + s.signature.len()
}

fn coset_cose(doc: &[u8]) -> usize {
    let s = CoseSign1::from_slice(doc).expect("coset decodes a real document");
    s.tbs_data(b"").len() + s.signature.len()
}

fn cada_snp(r: &[u8]) -> u32 {
    SnpReport::parse(r, None)
        .expect("cada parses a real report")
        .vmpl
}

fn sev_snp(r: &[u8]) -> u32 {
    AttestationReport::from_bytes(r)
        .expect("sev parses a real report")
        .vmpl
}

fn benches(c: &mut Criterion) {
    let docs = nitro();
    let reports = snp();
    let n_docs = u64::try_from(docs.len()).expect("count");
    let n_reports = u64::try_from(reports.len()).expect("count");
    // Both sides must agree on what they decoded before their speed means anything.
    for d in &docs {
        assert_eq!(cada_cose(d), coset_cose(d), "same Sig_structure length");
    }
    for r in &reports {
        assert_eq!(cada_snp(r), sev_snp(r), "same VMPL");
    }
    let mut g = c.benchmark_group("cose_sign1_all_nitro_docs");
    g.throughput(Throughput::Elements(n_docs));
    g.bench_function("cada_cose_decode_tbs", |b| {
        b.iter(|| docs.iter().map(|d| cada_cose(black_box(d))).sum::<usize>());
    });
    g.bench_function("coset_from_slice_tbs", |b| {
        b.iter(|| docs.iter().map(|d| coset_cose(black_box(d))).sum::<usize>());
    });
    g.finish();
    let mut g = c.benchmark_group("snp_report_all_reports");
    g.throughput(Throughput::Elements(n_reports));
    g.bench_function("cada_snp_report_parse", |b| {
        b.iter(|| reports.iter().map(|r| cada_snp(black_box(r))).sum::<u32>());
    });
    g.bench_function("sev_attestation_report_from_bytes", |b| {
        b.iter(|| reports.iter().map(|r| sev_snp(black_box(r))).sum::<u32>());
    });
    g.finish();
}

/// Mean nanoseconds per single decode over about one second, all fixtures in turn.
fn ns_per_decode<T>(inputs: &[Vec<u8>], f: impl Fn(&[u8]) -> T) -> f64 {
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < Duration::from_secs(1) {
        for i in inputs {
            black_box(f(black_box(i)));
            n += 1;
        }
    }
    start.elapsed().as_secs_f64() * 1e9 / f64::from(n)
}

fn summary() {
    let docs = nitro();
    let reports = snp();
    let a = ns_per_decode(&docs, cada_cose);
    let b = ns_per_decode(&docs, coset_cose);
    println!(
        "summary: COSE_Sign1 over {} Nitro documents: cada {a:.0} ns/decode, coset {b:.0} ns/decode (coset/cada {:.2}x)",
        docs.len(),
        b / a
    );
    let a = ns_per_decode(&reports, cada_snp);
    let b = ns_per_decode(&reports, sev_snp);
    println!(
        "summary: SNP report over {} reports: cada {a:.0} ns/decode, sev {b:.0} ns/decode (sev/cada {:.2}x)",
        reports.len(),
        b / a
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
