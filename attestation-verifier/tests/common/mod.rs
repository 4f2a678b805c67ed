//! Fixture access for tests: `$CADA_FIXTURES` if set, else `testdata/` at the repository
//! root (vendored; see `testdata/README.md`). A missing directory or file, or a file whose
//! bytes differ from the `sha256` that `index.json` records for it, fails the test loudly with
//! the path and the fix; nothing is ever skipped.
#![allow(dead_code)]
use std::path::PathBuf;

/// The repository root: the nearest ancestor of the including crate that holds
/// `ARCHITECTURE.md` (found from the verifier's tests and from `compare/`, which is its own
/// workspace with its own `Cargo.lock`).
fn workspace_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("ARCHITECTURE.md").is_file() {
        if !dir.pop() {
            return PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        }
    }
    dir
}

/// How to get fixtures back, for every failure message.
const FIX_HINT: &str = "restore them with `git checkout -- testdata` (they are vendored in the \
     repository) or point CADA_FIXTURES at a directory holding index.json, nitro/ and sev-snp/";

/// The fixture directory: `$CADA_FIXTURES`, else `<repository>/testdata`.
pub fn fixtures_dir() -> PathBuf {
    let (dir, origin) = match std::env::var_os("CADA_FIXTURES") {
        Some(d) if !d.is_empty() => (PathBuf::from(d), "from CADA_FIXTURES"),
        _ => (workspace_root().join("testdata"), "the default"),
    };
    assert!(
        dir.join("index.json").is_file(),
        "fixtures not found: {} ({origin}) has no index.json; {FIX_HINT}",
        dir.display()
    );
    dir
}

/// The parsed `index.json` of the fixture directory.
pub fn index() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures_dir().join("index.json")).expect("read index.json");
    serde_json::from_str(&text).expect("parse index.json")
}

/// The bytes of fixture `rel` (a path relative to the fixture directory). When `index.json`
/// lists the file with a `sha256`, the bytes must match it.
pub fn read(rel: &str) -> Vec<u8> {
    let dir = fixtures_dir();
    let p = dir.join(rel);
    let bytes = std::fs::read(&p)
        .unwrap_or_else(|e| panic!("fixture {} cannot be read ({e}); {FIX_HINT}", p.display()));
    let idx = index();
    let listed = idx["files"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["file"].as_str() == Some(rel));
    if let Some(want) = listed.and_then(|f| f["sha256"].as_str()) {
        let got = hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &bytes,
        ));
        assert_eq!(
            got,
            want,
            "fixture {} differs from the sha256 in {}; {FIX_HINT}",
            p.display(),
            dir.join("index.json").display()
        );
    }
    bytes
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
