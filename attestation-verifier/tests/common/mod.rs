//! Fixture access for tests: `$CADA_FIXTURES`, else `../shared/fixtures` beside the
//! repository root. Missing fixtures fail the test loudly; they are never skipped.
#![allow(dead_code)]
use std::path::PathBuf;

/// The workspace root: the nearest ancestor of this crate holding `Cargo.lock`.
fn workspace_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("Cargo.lock").is_file() {
        if !dir.pop() {
            return PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        }
    }
    dir
}

pub fn fixtures_dir() -> PathBuf {
    let dir = std::env::var_os("CADA_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/fixtures"));
    assert!(
        dir.join("index.json").is_file(),
        "fixtures not found at {} — set CADA_FIXTURES or put shared/ beside the repository",
        dir.display()
    );
    dir
}

pub fn index() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures_dir().join("index.json")).expect("read index.json");
    serde_json::from_str(&text).expect("parse index.json")
}

pub fn read(rel: &str) -> Vec<u8> {
    let p = fixtures_dir().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Every Nitro document of the index, with its raw bytes.
pub fn nitro_docs() -> Vec<(serde_json::Value, Vec<u8>)> {
    let idx = index();
    let docs = idx["nitro_documents"]
        .as_array()
        .expect("nitro_documents")
        .clone();
    assert!(
        docs.len() >= 6,
        "expected at least 6 Nitro fixtures, found {}",
        docs.len()
    );
    docs.into_iter()
        .map(|d| {
            let bytes = read(d["file"].as_str().expect("file"));
            (d, bytes)
        })
        .collect()
}

pub fn iso_to_ms(s: &str) -> u64 {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .expect("iso time");
    u64::try_from(t.unix_timestamp()).expect("positive") * 1000
}

/// Certificates of a PEM or DER file, in order.
pub fn certs(rel: &str) -> Vec<Vec<u8>> {
    cada_attestation_verifier::x509::certs_from_pem_or_der(&read(rel)).expect("PEM decodes")
}
