//! Interop: an independent library from another ecosystem — Python's PyJWT with
//! `cryptography` — verifies a contract, a status list and an owner lock made by the real `cada-owner`,
//! for both owner algorithms, and refuses a tampered contract and a forged status list.
//!
//! The Python packages are installed by this test, pinned, into a directory under the
//! target dir (`pip install --target`), as a clean CI machine would. If python3, pip or the
//! install fails, the test fails: it never skips.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use cada_contract::{OwnerAlg, OwnerKey};
use cada_protocol::b64;
use common::{ok, ok_to, s, workdir};

/// Exact pins: PyJWT and its crypto backend, binary wheels only, no resolver surprises.
const PINS: [&str; 4] = [
    "pyjwt==2.10.1",
    "cryptography==44.0.3",
    "cffi==1.17.1",
    "pycparser==2.22",
];

/// Installs the pinned packages once per target dir; returns the directory for PYTHONPATH.
fn python_packages() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("py-interop-pyjwt-2.10.1");
    let marker = dir.join(".installed");
    if marker.exists() {
        return dir;
    }
    let tmp = dir.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--no-deps", "--only-binary=:all:", "--target"])
        .arg(&tmp)
        .args(PINS)
        .output()
        .expect("python3 must be installed for the interop test (it does not skip)");
    assert!(
        out.status.success(),
        "pip install {PINS:?} failed; the interop test needs PyPI:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(tmp.join(".installed"), PINS.join("\n")).unwrap();
    // Another test process may have won the race; either copy is complete.
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    assert!(
        marker.exists(),
        "the pinned packages are not in {}",
        dir.display()
    );
    dir
}

fn python(pkgs: &Path, args: &[&str]) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/verify_with_pyjwt.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .env("PYTHONPATH", pkgs)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A status list that claims to be `owner`'s (its kid and issuer) and carries the bitstring
/// of `clean` (nothing revoked), signed by `forger`'s key.
fn forged_list(genuine: &str, clean: &str, owner_did: &str, forger: &OwnerKey) -> String {
    let payload_of = |jwt: &str| -> serde_json::Value {
        let p = b64::decode("p", jwt.trim().split('.').nth(1).unwrap(), 1 << 22).unwrap();
        serde_json::from_slice(&p).unwrap()
    };
    let mut it = genuine.trim().split('.');
    let header = it.next().unwrap();
    let mut p = payload_of(genuine);
    assert_eq!(p["iss"], owner_did);
    p["credentialSubject"]["encodedList"] =
        payload_of(clean)["credentialSubject"]["encodedList"].clone();
    let input = format!("{header}.{}", b64::encode(p.to_string()));
    let pkcs8 = forger.to_pkcs8();
    let sig = match forger.alg() {
        OwnerAlg::Ed25519 => Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8)
            .unwrap()
            .sign(input.as_bytes())
            .as_ref()
            .to_vec(),
        OwnerAlg::Es256 => EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
            .unwrap()
            .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec(),
    };
    format!("{input}.{}", b64::encode(sig))
}

#[test]
fn pyjwt_verifies_contracts_and_status_lists_from_cada_owner() {
    let pkgs = python_packages();
    for alg in ["ed25519", "es256"] {
        let dir = workdir(&format!("interop-{alg}"));
        let did = ok(&["keygen", "--alg", alg, "--out", s(&dir.join("owner"))]);
        let did = did.trim();
        let key = dir.join("owner/owner-key.json");
        let agent = ok(&["keygen", "--out", s(&dir.join("agent"))]);
        let list_url = "https://owner.example/status/1";
        let status = dir.join("status.jwt");
        ok_to(
            &status,
            &["status-list", "new", "--key", s(&key), "--url", list_url],
        );
        let contract = dir.join("contract.jwt");
        ok_to(
            &contract,
            &[
                "grant",
                "--key",
                s(&key),
                "--subject",
                agent.trim(),
                "--audience",
                "https://api.example.com/v1",
                "--method",
                "GET",
                "--scope",
                "docs:read",
                "--tool",
                "search",
                "--valid-for",
                "1h",
                "--status-list",
                list_url,
                "--status-index",
                "5",
            ],
        );
        let revoked = dir.join("revoked.jwt");
        ok_to(
            &revoked,
            &[
                "revoke",
                "--key",
                s(&key),
                "--list",
                s(&status),
                "--index",
                "5",
                "--valid-for",
                "1d",
            ],
        );
        // A list in the owner's name, signed by another key of the same algorithm.
        let forger_dir = dir.join("forger");
        ok(&["keygen", "--alg", alg, "--out", s(&forger_dir)]);
        let forger = OwnerKey::from_key_file(
            &std::fs::read_to_string(forger_dir.join("owner-key.json")).unwrap(),
        )
        .unwrap();
        let forged = dir.join("forged.jwt");
        std::fs::write(
            &forged,
            forged_list(
                &std::fs::read_to_string(&revoked).unwrap(),
                &std::fs::read_to_string(&status).unwrap(),
                did,
                &forger,
            ),
        )
        .unwrap();

        let lock = dir.join("lock.jwt");
        ok_to(
            &lock,
            &[
                "lock",
                "--key",
                s(&key),
                "--enclave",
                agent.trim(),
                "--valid-for",
                "5m",
            ],
        );
        let (passed, out) = python(
            &pkgs,
            &[s(&contract), s(&revoked), "5", s(&forged), s(&lock)],
        );
        assert!(passed, "PyJWT refused cada-owner's output ({alg}):\n{out}");
        let jose = if alg == "ed25519" { "EdDSA" } else { "ES256" };
        for line in [
            format!("OK contract signature valid {jose} issuer {did}"),
            "OK tampered contract refused: InvalidSignatureError".into(),
            "OK status list signature valid, 131072 entries, revoked [5]".into(),
            "OK status list signed by another key refused: InvalidSignatureError".into(),
            format!("OK lock signature valid, subject {}", agent.trim()),
            "OK pyjwt 2.10.1".into(),
        ] {
            assert!(out.contains(&line), "missing {line:?} in:\n{out}");
        }
        // The unrevoked list fails the script's revoked-index check: the check can fail.
        let (passed, out) = python(&pkgs, &[s(&contract), s(&status), "5"]);
        assert!(!passed, "an unrevoked list passed as revoked:\n{out}");
        assert!(out.contains("AssertionError"), "{out}");
    }
}
