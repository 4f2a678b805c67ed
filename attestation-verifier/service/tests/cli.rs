//! `cada-verify nitro` as scripts use it: input encodings, flags and exit codes.
#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cada-verify"))
        .args(args)
        .output()
        .expect("run cada-verify");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn exit_codes_and_input_encodings() {
    let dir = common::fixtures_dir().join("nitro");
    let n03 = dir.join("N03_evervault_beta_us-east-1_2022-10-13.cbor");
    let n03 = n03.to_str().unwrap();
    let pcr0 = "0=f4d48b81a460c9916d1e685119074bf24660afd3e34fae9fca0a0d28d9d5599936332687e6f66fc890ac8cf150142d8b";
    let (code, out) = run(&["nitro", n03, "--at", "document", "--pcr", pcr0]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("VALID"), "{out}");
    // hex and base64 inputs
    let hex = dir.join("N01_nitrite_us-east-2_2021-10-28.hex");
    assert_eq!(
        run(&[
            "nitro",
            hex.to_str().unwrap(),
            "--at",
            "document",
            "--allow-debug"
        ])
        .0,
        0
    );
    let b64 = dir.join("N08_evervault_ga_us-east-1_2023-09-18.b64");
    assert_eq!(
        run(&[
            "nitro",
            b64.to_str().unwrap(),
            "--at",
            "document",
            "--allow-debug"
        ])
        .0,
        0
    );
    // rejected: expired now, wrong PCR, debug under the default policy — exit 1 with the rule
    let (code, out) = run(&["nitro", n03]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("chain.expired"), "{out}");
    let (code, out) = run(&["nitro", n03, "--at", "document", "--pcr", "0=00", "--json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON output");
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"][0]["code"], "policy.pcr");
    let (code, out) = run(&[
        "nitro",
        hex.to_str().unwrap(),
        "--at",
        "document",
        "--report",
        "--nonce",
        "00",
    ]);
    assert_eq!(code, 1);
    assert!(
        out.contains("policy.debug") && out.contains("policy.nonce"),
        "{out}"
    );
    // usage and I/O errors: exit 2
    assert_eq!(run(&["nitro", "/nonexistent/doc"]).0, 2);
    assert_eq!(run(&["nitro", n03, "--at", "yesterday"]).0, 2);
    assert_eq!(run(&["nitro", n03, "--pcr", "99=00"]).0, 2);
    assert_eq!(run(&["nitro"]).0, 2);
}

#[test]
fn snp_subcommand_exit_codes() {
    let dir = common::fixtures_dir().join("sev-snp");
    let p = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    let (code, out) = run(&[
        "snp",
        &p("S01_milan_virtee_report.bin"),
        "--vcek",
        &p("S01_milan_virtee_vcek.der"),
        "--at",
        "2026-11-01T00:00:00Z",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Milan"), "{out}");
    // hex input, explicit chain
    let (code, out) = run(&[
        "snp",
        &p("S01_milan_virtee_report.hex"),
        "--vcek",
        &p("S01_milan_virtee_vcek.der"),
        "--chain",
        &p("S01_milan_virtee_cert_chain.pem"),
        "--at",
        "2026-11-01T00:00:00Z",
    ]);
    assert_eq!(code, 0, "{out}");
    // another chip's VCEK; a debug guest; a measurement that is not allowed
    let (code, out) = run(&[
        "snp",
        &p("S01_milan_virtee_report.bin"),
        "--vcek",
        &p("S03_milan_trustee_vcek.der"),
        "--json",
    ]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["errors"][0]["code"], "snp.chip_id");
    let (code, out) = run(&[
        "snp",
        &p("S02_milan_gsg_attestation.bin"),
        "--vcek",
        &p("S02_milan_gsg_vcek.der"),
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("policy.debug"), "{out}");
    let (code, out) = run(&[
        "snp",
        &p("S01_milan_virtee_report.bin"),
        "--vcek",
        &p("S01_milan_virtee_vcek.der"),
        "--measurement",
        &"00".repeat(48),
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("policy.measurement"), "{out}");
    assert_eq!(
        run(&[
            "snp",
            &p("S01_milan_virtee_report.bin"),
            "--vcek",
            "/nonexistent"
        ])
        .0,
        2
    );
    assert_eq!(
        run(&[
            "snp",
            &p("S01_milan_virtee_report.bin"),
            "--vcek",
            &p("S01_milan_virtee_vcek.der"),
            "--min-tcb",
            "cpu=1"
        ])
        .0,
        2
    );
}

#[test]
fn pcrs_prints_an_images_pcrs_and_names_a_corrupt_one() {
    use cada_image::eif::{self, SectionType};
    let image = eif::write(
        &[
            (SectionType::Kernel, b"kernel"),
            (SectionType::Cmdline, b"console=ttyS0"),
            (SectionType::Ramdisk, b"bootstrap"),
            (SectionType::Ramdisk, b"application"),
        ],
        512,
        2,
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("cada-verify-pcrs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.eif");
    std::fs::write(&good, &image).unwrap();
    let (code, out) = run(&["pcrs", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let printed: serde_json::Value = serde_json::from_str(&out).expect("PCR JSON");
    let expected = serde_json::to_value(eif::pcrs(&image).unwrap()).unwrap();
    assert_eq!(printed, expected);
    let mut corrupt = image.clone();
    *corrupt.last_mut().unwrap() ^= 1;
    let bad = dir.join("bad.eif");
    std::fs::write(&bad, &corrupt).unwrap();
    let (code, out) = run(&["pcrs", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("INVALID [eif]") && out.contains("CRC-32"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tpm_quote_subcommand_on_real_vtpm_artefacts() {
    let t = common::fixtures_dir();
    let p = |rel: &str| t.join(rel).to_str().unwrap().to_owned();
    let azure = |nonce: &str| {
        run(&[
            "tpm",
            "quote",
            "--quote",
            &p("tpm/azure/AZ01_quote.msg"),
            "--sig",
            &p("tpm/azure/AZ01_quote.sig"),
            "--pcrs",
            &p("tpm/azure/AZ01_pcrs.bin"),
            "--hcl",
            &p("sev-snp/azure-vtpm/AZ01_hcl-report.bin"),
            "--vcek-chain",
            &p("sev-snp/azure-vtpm/AZ01_vcek-chain.pem"),
            "--nonce",
            nonce,
            "--at",
            "2026-11-01T00:00:00Z",
            "--json",
        ])
    };
    let (code, out) = azure("6368616c6c656e6765");
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["quote"]["pcrs"].as_array().unwrap().len(), 24);
    assert!(v["ak"].as_str().unwrap().contains("HCLAkPub"), "{out}");
    let (code, out) = azure("00");
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["errors"][0]["code"], "tpm.nonce");
    // Google: the AK certificate chain to the pinned root, then with another chain's AK.
    let gcp = |chain: &str| {
        run(&[
            "tpm",
            "quote",
            "--quote",
            &p("tpm/gcp/G01_quote.msg"),
            "--sig",
            &p("tpm/gcp/G01_quote.sig.der"),
            "--pcrs",
            &p("tpm/gcp/G01_pcrs.bin"),
            "--ak-chain",
            &p(chain),
            "--at",
            "2026-11-01T00:00:00Z",
        ])
    };
    let (code, out) = gcp("tpm/gcp/G01_ak-chain.pem");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Google") && out.contains("sha256 PCR 23"),
        "{out}"
    );
    let (code, out) = gcp("tpm/gcp/G02_ak-chain.pem");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[tpm.quote_signature]"), "{out}");
    // No AK at all is a usage error; an evidence file that is not one, too.
    let (code, _) = run(&[
        "tpm",
        "quote",
        "--quote",
        &p("tpm/gcp/G01_quote.msg"),
        "--sig",
        &p("tpm/gcp/G01_quote.sig.der"),
        "--pcrs",
        &p("tpm/gcp/G01_pcrs.bin"),
    ]);
    assert_eq!(code, 2);
    let (code, _) = run(&["tpm", "evidence", &p("tpm/gcp/G01_quote.msg")]);
    assert_eq!(code, 2);
}
