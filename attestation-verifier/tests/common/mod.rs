//! Fixture access for tests: `$CADA_FIXTURES`, else `../shared/fixtures` beside the
//! repository root. Missing fixtures fail the test loudly; they are never skipped.
#![allow(dead_code)]
use std::path::PathBuf;

pub fn fixtures_dir() -> PathBuf {
    let dir = std::env::var_os("CADA_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
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
    use base64::Engine;
    let raw = read(rel);
    match std::str::from_utf8(&raw) {
        Ok(text) if text.contains("-----BEGIN CERTIFICATE-----") => text
            .split("-----BEGIN CERTIFICATE-----")
            .skip(1)
            .map(|block| {
                let b64: String = block
                    .lines()
                    .take_while(|l| !l.starts_with("-----END"))
                    .collect::<Vec<_>>()
                    .concat();
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .expect("PEM base64")
            })
            .collect(),
        _ => vec![raw],
    }
}
