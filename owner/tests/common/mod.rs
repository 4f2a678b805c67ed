//! Running the real `cada-owner` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh directory under the target dir for one test.
pub fn workdir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `cada-owner args…`: (exit code, stdout, stderr).
pub fn owner(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cada-owner"))
        .args(args)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .output()
        .expect("run cada-owner");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `cada-owner args…`, which must succeed; its stdout.
pub fn ok(args: &[&str]) -> String {
    let (code, out, err) = owner(args);
    assert_eq!(code, 0, "cada-owner {args:?} failed:\n{out}\n{err}");
    out
}

/// Runs `cada-owner args…` and writes its stdout to `path`.
pub fn ok_to(path: &Path, args: &[&str]) {
    std::fs::write(path, ok(args)).unwrap();
}

/// A path as &str.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
