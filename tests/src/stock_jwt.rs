//! A stock JWT library checks CADA access tokens (issue 24): panva's `jose` for Node,
//! installed pinned into the target directory the first time, run over a list of tokens
//! against an STS's JWKS (which the library fetches itself). No CADA code on that side: what
//! it accepts and the claims it returns are what any RFC 9068 resource server would see.
#![allow(clippy::missing_panics_doc)] // test helpers: a failure is a failed test
use std::path::{Path, PathBuf};
use std::process::Command;

/// The pinned library.
pub const JOSE: &str = "jose@6.2.19";

/// Installs [`JOSE`] once per target directory (in its `tmp`, the tests'
/// `CARGO_TARGET_TMPDIR`); returns its `node_modules`' parent.
pub fn jose_package() -> PathBuf {
    crate::npm_package(&target_tmp(), "node-interop-jose-6.2.19", JOSE)
}

/// `<target>/tmp`, found from the running test binary (`<target>/<profile>/deps/…`), as
/// Cargo's `CARGO_TARGET_TMPDIR` (set for integration tests only, not this library).
fn target_tmp() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test binary lies in <target>/<profile>/deps");
    let tmp = target.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    tmp
}

/// One token for `jose` to verify for `audience`.
pub struct Case<'a> {
    /// The case's name (echoed back).
    pub name: &'a str,
    /// The compact access token.
    pub token: &'a str,
    /// The audience the resource server expects.
    pub audience: &'a str,
}

/// Verifies each case with `jose`'s `jwtVerify` against the JWKS at `jwks_uri` (fetched by
/// the library), expecting `issuer`, `typ: at+jwt` and `ES256`: one JSON object per case,
/// in order, `{name, ok: true, header, payload}` or `{name, ok: false, error}`.
pub fn jose_verify(issuer: &str, jwks_uri: &str, cases: &[Case<'_>]) -> Vec<serde_json::Value> {
    let pkgs = jose_package();
    // ESM resolves `jose` from the script's own directory's node_modules.
    let script = pkgs.join("verify_jose.mjs");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/verify_jose.mjs"),
        &script,
    )
    .unwrap();
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let input = pkgs.join(format!(
        "jose-cases-{}-{}.json",
        std::process::id(),
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let cases: Vec<serde_json::Value> = cases
        .iter()
        .map(|c| serde_json::json!({"name": c.name, "token": c.token, "audience": c.audience}))
        .collect();
    std::fs::write(
        &input,
        serde_json::json!({"issuer": issuer, "jwks_uri": jwks_uri, "cases": cases}).to_string(),
    )
    .unwrap();
    let out = Command::new("node")
        .arg(&script)
        .arg(&input)
        .output()
        .expect("node must be installed for the interop tests (they do not skip)");
    let _ = std::fs::remove_file(&input);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "node (jose) failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
