//! Shared pieces of the CADA fuzz targets: where the fixtures are, how multi-part inputs are
//! split, the fixed verification times, and the seed-corpus writer.
//!
//! Every target calls the production entry point of one parser of outside bytes. Targets
//! that need real evidence (the structure-aware modes) load it once from the fixtures:
//! `$CADA_FIXTURES`, else `testdata/` in the repository.
//! Without fixtures those modes do nothing; the raw-bytes modes still run.
//!
//! Seeds: run a target binary with `CADA_FUZZ_WRITE_SEEDS=<dir>` and it writes its seed
//! corpus (built from the fixtures and from in-process encoders) into `<dir>` and exits
//! before fuzzing. `scripts/fuzz.sh` does this into a git-ignored directory.
#![forbid(unsafe_code)]

pub mod contract_setup;
pub mod delegation_setup;
pub mod pop_setup;
pub mod sealed_setup;
pub mod seeds;
pub mod token_setup;

use std::path::PathBuf;
use std::sync::OnceLock;

use cada_attestation_verifier::{cose, nitro, x509, UnixTime};

/// Verification time of the raw-bytes Nitro mode: N03's own `timestamp`
/// (2022-10-13T08:58:02.136Z), inside the validity of N03's whole chain.
pub const NITRO_AT: UnixTime = UnixTime::from_millis(1_665_651_482_136);
/// Inside every paired VCEK's validity (2025-12-05 … 2030-04-03 covers all but the VLEK).
pub const SNP_AT: UnixTime = UnixTime::from_secs(1_793_491_200); // 2026-11-01T00:00:00Z
/// Inside the S04 VLEK's validity (2024-12-10 → 2025-12-10) and most VCEKs'.
pub const SNP_AT_VLEK: UnixTime = UnixTime::from_secs(1_748_736_000); // 2025-06-01T00:00:00Z

/// The fixture directory, if one is present.
pub fn fixtures_dir() -> Option<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::env::var_os("CADA_FIXTURES")
        .map(PathBuf::from)
        .into_iter()
        .chain([manifest.join("../testdata")])
        .find(|d| d.join("index.json").is_file())
}

fn read(rel: &str) -> Option<Vec<u8>> {
    std::fs::read(fixtures_dir()?.join(rel)).ok()
}

/// A fixture file's bytes (`tpm/…` and the others), if the fixtures are present.
pub fn fixture(rel: &str) -> Option<Vec<u8>> {
    read(rel)
}

/// A real Nitro document and the time it verifies at (its own `timestamp`).
pub struct NitroFixture {
    /// COSE_Sign1 bytes.
    pub bytes: Vec<u8>,
    /// Its `timestamp`.
    pub at: UnixTime,
}

/// Every `nitro/*.cbor` fixture whose payload decodes, in file-name order.
pub fn nitro_fixtures() -> &'static [NitroFixture] {
    static CELL: OnceLock<Vec<NitroFixture>> = OnceLock::new();
    CELL.get_or_init(|| {
        let Some(dir) = fixtures_dir() else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("nitro"))
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "cbor"));
        files.sort();
        files
            .into_iter()
            .filter_map(|p| {
                let bytes = std::fs::read(p).ok()?;
                let s = cose::decode(&bytes, nitro::MAX_DOCUMENT_LEN).ok()?;
                let doc = nitro::AttestationDocument::from_payload(&s.payload).ok()?;
                Some(NitroFixture {
                    bytes,
                    at: doc.timestamp,
                })
            })
            .collect()
    })
}

/// A real SEV-SNP report, its signing certificate, the rest of its chain and a time inside
/// the signing certificate's validity.
pub struct SnpFixture {
    /// The 1184-byte report.
    pub report: Vec<u8>,
    /// VCEK or VLEK, DER.
    pub signer: Vec<u8>,
    /// Further certificates that came with the signer (DER).
    pub chain: Vec<Vec<u8>>,
    /// Whether it verifies at [`SNP_AT_VLEK`] (else [`SNP_AT`]).
    pub at_vlek_time: bool,
}

/// Every report of `index.json` `snp_reports` with its certificate.
pub fn snp_fixtures() -> &'static [SnpFixture] {
    static CELL: OnceLock<Vec<SnpFixture>> = OnceLock::new();
    CELL.get_or_init(|| {
        let Some(index) = read("index.json") else {
            return Vec::new();
        };
        let Ok(index) = serde_json::from_slice::<serde_json::Value>(&index) else {
            return Vec::new();
        };
        let list = index["snp_reports"].as_array().cloned().unwrap_or_default();
        list.iter()
            .filter_map(|meta| {
                let file = meta["file"].as_str()?;
                let report = read(file)?;
                let mut certs = x509::certs_from_pem_or_der(&read(meta["cert"].as_str()?)?)?;
                if certs.is_empty() {
                    return None;
                }
                let signer = certs.remove(0);
                Some(SnpFixture {
                    report,
                    signer,
                    chain: certs,
                    at_vlek_time: file.contains("S04"),
                })
            })
            .collect()
    })
}

/// AMD's certificates of one generation as the fixtures ship them: (ARK, ASK, ASVK).
pub fn amd_chain(generation: &str) -> Option<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let one = |name: &str| {
        x509::certs_from_pem_or_der(&read(&format!("sev-snp/amd/{generation}/{name}.pem"))?)?
            .into_iter()
            .next()
    };
    Some((one("ark")?, one("ask")?, one("asvk")?))
}

/// Splits concatenated DER TLVs (any tag, definite lengths of up to 4 bytes). A TLV whose
/// length runs past the end takes the rest of the input. At most `max` parts.
pub fn split_der(mut data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !data.is_empty() && out.len() < max {
        let total = tlv_len(data)
            .filter(|n| *n <= data.len())
            .unwrap_or(data.len());
        let total = total.max(1);
        out.push(&data[..total]);
        data = &data[total..];
    }
    out
}

fn tlv_len(b: &[u8]) -> Option<usize> {
    let first = *b.get(1)?;
    if first < 0x80 {
        return Some(2 + usize::from(first));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 {
        return None;
    }
    let mut len = 0usize;
    for i in 0..n {
        len = (len << 8) | usize::from(*b.get(2 + i)?);
    }
    (2 + n).checked_add(len)
}

/// Writes this target's seeds and exits when `CADA_FUZZ_WRITE_SEEDS` names a directory.
pub fn write_seeds_if_asked(target: &str) {
    let Some(dir) = std::env::var_os("CADA_FUZZ_WRITE_SEEDS") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let n = seeds::write(target, &dir);
    eprintln!("{target}: wrote {n} seeds to {}", dir.display());
    std::process::exit(0);
}
