//! A software TPM for the `--platform tpm` end-to-end tests: swtpm started with
//! scripts/swtpm.sh in a directory the test owns, and `cada-enclave tpm enroll` on it.
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bin;

/// A swtpm started with scripts/swtpm.sh in `dir`, stopped when dropped.
pub struct Swtpm {
    dir: PathBuf,
    /// The TCTI string that reaches it (`swtpm:host=…,port=…`).
    pub tcti: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/swtpm.sh")
}

impl Swtpm {
    /// Starts swtpm in `dir` (its state and local CA there); panics if the script fails.
    pub fn start(dir: &Path) -> Self {
        let out = Command::new(script())
            .arg("start")
            .arg(dir)
            .output()
            .expect(
                "scripts/swtpm.sh runs (swtpm and swtpm-tools are installed by scripts/test.sh)",
            );
        assert!(
            out.status.success(),
            "scripts/swtpm.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Swtpm {
            dir: dir.to_owned(),
            tcti: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        }
    }

    /// swtpm's local CA: the root of its EK certificates.
    pub fn root(&self) -> PathBuf {
        self.dir.join("ca/swtpm-localca-rootca-cert.pem")
    }

    /// The intermediate of swtpm's local CA that signs its EK certificates.
    pub fn intermediate(&self) -> PathBuf {
        self.dir.join("ca/issuercert.pem")
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(&self.dir).status();
    }
}

/// `cada-enclave tpm enroll` of `tpm` into `state` with the enrollment CA in `ca` (swtpm's
/// intermediate given): (exit code, stdout, stderr).
pub fn enroll(tpm: &Swtpm, state: &Path, ca: &Path) -> (i32, String, String) {
    let out = Command::new(bin("cada-enclave"))
        .args([
            "tpm",
            "enroll",
            "--tpm-tcti",
            &tpm.tcti,
            "--state-dir",
            state.to_str().unwrap(),
            "--ca-dir",
            ca.to_str().unwrap(),
            "--ek-intermediates",
            tpm.intermediate().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
