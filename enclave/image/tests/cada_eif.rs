//! `cada-eif` as `scripts/build-eif.sh` runs it: the image it writes parses, its printed
//! PCRs are the image's, the same inputs give the same bytes, and bad inputs are refused
//! with exit code 2 and a reason.
use std::path::{Path, PathBuf};
use std::process::Command;

use cada_image::eif;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("cada-eif-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cada_eif(args: &[&str], epoch: Option<&str>) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cada-eif"));
    c.args(args).env_remove("SOURCE_DATE_EPOCH");
    if let Some(e) = epoch {
        c.env("SOURCE_DATE_EPOCH", e);
    }
    let out = c.output().expect("run cada-eif");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn build(dir: &TempDir, init: &str, out: &str, epoch: Option<&str>) -> serde_json::Value {
    let kernel = dir.file("vmlinuz", b"bzImage bytes");
    let m1 = dir.file("vsock.ko", b"module a");
    let m2 = dir.file("nsm.ko", b"module b");
    let (code, stdout, stderr) = cada_eif(
        &[
            "--kernel", &kernel, "--module", &m1, "--module", &m2, "--init", init, "--output", out,
        ],
        epoch,
    );
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(&stdout).expect("PCR JSON on stdout")
}

fn read(p: &str) -> Vec<u8> {
    std::fs::read(Path::new(p)).unwrap()
}

#[test]
fn writes_a_reproducible_image_and_prints_its_pcrs() {
    let dir = TempDir::new("ok");
    let init = dir.file("cada-enclave", b"cada-enclave v1");
    let (a, b) = (
        dir.0.join("a.eif").to_str().unwrap().to_owned(),
        dir.0.join("b.eif").to_str().unwrap().to_owned(),
    );
    let printed = build(&dir, &init, &a, Some("1700000000"));
    let pcrs = eif::pcrs(&read(&a)).expect("the written image parses");
    assert_eq!(printed, serde_json::to_value(&pcrs).unwrap());
    assert_eq!(printed.as_object().unwrap().len(), 3, "PCR0..2, no PCR8");
    // Same inputs, same bytes; another archive time moves PCR1 and PCR2.
    build(&dir, &init, &b, Some("1700000000"));
    assert_eq!(read(&a), read(&b));
    let other = build(&dir, &init, &b, None);
    assert_ne!(other["PCR1"], printed["PCR1"]);
    assert_ne!(other["PCR2"], printed["PCR2"]);
}

#[test]
fn bad_inputs_exit_2_with_the_reason() {
    let dir = TempDir::new("bad");
    let kernel = dir.file("vmlinuz", b"k");
    let init = dir.file("init", b"i");
    let out = dir.0.join("x.eif").to_str().unwrap().to_owned();
    let args = ["--kernel", &kernel, "--init", &init, "--output", &out];
    let (code, _, err) = cada_eif(&args, Some("yesterday"));
    assert_eq!(code, 2);
    assert!(err.contains("SOURCE_DATE_EPOCH"), "{err}");
    let missing = dir.0.join("absent").to_str().unwrap().to_owned();
    let (code, _, err) = cada_eif(
        &["--kernel", &missing, "--init", &init, "--output", &out],
        None,
    );
    assert_eq!(code, 2);
    assert!(err.contains("absent"), "{err}");
    assert!(!Path::new(&out).exists(), "nothing written on failure");
}
