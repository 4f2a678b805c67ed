//! Real AMD SEV-SNP reports from `$CADA_FIXTURES`: each verifies with its VCEK/VLEK to the
//! pinned AMD root of its generation and reports the indexed fields; tampering, another
//! chip's VCEK, the wrong generation's ARK, an expired VLEK, debug guests, disallowed
//! measurements, low TCBs and wrong sizes are rejected with their own errors.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)] // test code: casts of generated values, no outside bytes
mod common;

use cada_attestation_verifier::chain::ChainCache;
use cada_attestation_verifier::roots_amd::{amd_cert, AmdCert, Generation};
use cada_attestation_verifier::snp::{MinTcb, SigningKey, SnpPolicy, SnpVerifier, REPORT_LEN};
use cada_attestation_verifier::{UnixTime, VerifyError};

/// Inside every VCEK's validity and the S04 VLEK's (2024-12-10 → 2025-12-10).
fn at_for(file: &str) -> UnixTime {
    if file.contains("S04") {
        UnixTime::parse_rfc3339("2025-06-01T00:00:00Z").unwrap()
    } else {
        UnixTime::parse_rfc3339("2026-11-01T00:00:00Z").unwrap()
    }
}

struct Case {
    meta: serde_json::Value,
    report: Vec<u8>,
    signer: Vec<u8>,
    chain: Vec<Vec<u8>>,
}

fn cases() -> Vec<Case> {
    let idx = common::index();
    let list = idx["snp_reports"].as_array().expect("snp_reports").clone();
    assert!(
        list.len() >= 8,
        "expected at least 8 SNP reports, found {}",
        list.len()
    );
    list.into_iter()
        .map(|meta| {
            let report = common::read(meta["file"].as_str().unwrap());
            let mut certs = common::certs(meta["cert"].as_str().unwrap());
            let signer = certs.remove(0);
            Case {
                meta,
                report,
                signer,
                chain: certs,
            }
        })
        .collect()
}

/// Debug guests and every VMPL (three fixtures were requested at VMPL 1).
fn lenient() -> SnpPolicy {
    SnpPolicy {
        allow_debug: true,
        max_vmpl: None,
        ..SnpPolicy::default()
    }
}

#[test]
fn every_report_verifies_and_reports_the_indexed_fields() {
    let v = SnpVerifier::default();
    for c in cases() {
        let f = c.meta["file"].as_str().unwrap();
        let ok = v
            .verify(&c.report, &c.signer, &c.chain, &lenient(), at_for(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"));
        let r = &ok.report;
        assert_eq!(
            u64::from(r.version),
            c.meta["version"].as_u64().unwrap(),
            "{f}"
        );
        assert_eq!(
            hex::encode(r.measurement),
            c.meta["measurement"].as_str().unwrap(),
            "{f}"
        );
        assert_eq!(
            hex::encode(r.report_data),
            c.meta["report_data"].as_str().unwrap(),
            "{f}"
        );
        assert_eq!(
            hex::encode(r.chip_id),
            c.meta["chip_id"].as_str().unwrap(),
            "{f}"
        );
        assert_eq!(u64::from(r.vmpl), c.meta["vmpl"].as_u64().unwrap(), "{f}");
        assert_eq!(
            format!("{:#x}", r.policy.raw),
            c.meta["policy"].as_str().unwrap(),
            "{f}"
        );
        assert_eq!(
            format!("{:#018x}", r.reported_tcb.raw),
            c.meta["reported_tcb"]["raw"].as_str().unwrap(),
            "{f}"
        );
        let mg = &c.meta["reported_tcb"]["milan_genoa"];
        assert_eq!(
            (
                r.reported_tcb.bootloader,
                r.reported_tcb.tee,
                r.reported_tcb.snp,
                r.reported_tcb.microcode
            ),
            (
                mg["bl"].as_u64().unwrap() as u8,
                mg["tee"].as_u64().unwrap() as u8,
                mg["snp"].as_u64().unwrap() as u8,
                mg["ucode"].as_u64().unwrap() as u8
            ),
            "{f}"
        );
        assert_eq!(
            r.policy.debug,
            c.meta["policy_decoded"]["debug"].as_u64() == Some(1),
            "{f}"
        );
        let signer = if c.meta["signer"] == "VLEK" {
            SigningKey::Vlek
        } else {
            SigningKey::Vcek
        };
        assert_eq!(ok.signer, signer, "{f}");
        assert_eq!(ok.generation, Generation::Milan, "{f}");
        assert!(ok.amd_root);
    }
}

#[test]
fn the_azure_hcl_report_carries_a_verifiable_snp_report() {
    let hcl = common::read("sev-snp/azure-vtpm/AZ01_hcl-report.bin");
    assert_eq!(&hcl[..4], b"HCLA");
    let report = &hcl[0x20..0x20 + REPORT_LEN];
    let mut certs = common::certs("sev-snp/azure-vtpm/AZ01_vcek-chain.pem");
    let vcek = certs.remove(0);
    let ok = SnpVerifier::default()
        .verify(report, &vcek, &certs, &SnpPolicy::default(), at_for("AZ01"))
        .unwrap();
    assert_eq!(
        hex::encode(ok.report.measurement),
        "9ac48fcac8a2d88aeeff8d427ad4f2be0e3917c748a18bdf52cc317e7fe20308b459d5ef1a12e0c22944eb386d17c315"
    );
}

#[test]
fn every_flipped_byte_of_body_or_signature_is_rejected() {
    let v = SnpVerifier::default();
    for c in cases() {
        let f = c.meta["file"].as_str().unwrap();
        for pos in 0..REPORT_LEN {
            let mut m = c.report.clone();
            m[pos] ^= 0x01;
            let Err(err) = v.verify(&m, &c.signer, &c.chain, &lenient(), at_for(f)) else {
                panic!("{f}: flipping byte {pos:#x} was accepted")
            };
            let ok = matches!(
                err,
                VerifyError::SnpSignature
                    | VerifyError::SnpReport(_)
                    | VerifyError::SnpGeneration(_)
            ) || (err.code().starts_with("snp.")
                || err.code() == "snp.tcb_mismatch"
                || err == VerifyError::ChipIdMismatch);
            assert!(ok, "{f}: byte {pos:#x} gave {err:?}");
        }
    }
}

#[test]
fn another_chips_vcek_is_refused() {
    let all = cases();
    let s01 = all
        .iter()
        .find(|c| c.meta["file"].as_str().unwrap().contains("S01"))
        .unwrap();
    let s03 = all
        .iter()
        .find(|c| c.meta["file"].as_str().unwrap().contains("S03"))
        .unwrap();
    // Same generation and same reported TCB: only the hwID tells them apart.
    assert_eq!(
        s01.meta["reported_tcb"]["raw"],
        s03.meta["reported_tcb"]["raw"]
    );
    let err = SnpVerifier::default()
        .verify(&s01.report, &s03.signer, &[], &lenient(), at_for("S01"))
        .unwrap_err();
    assert_eq!(err, VerifyError::ChipIdMismatch);
    // And with the hwID check passing in report mode, the signature still fails.
    let out =
        SnpVerifier::default().report(&s01.report, &s03.signer, &[], &lenient(), at_for("S01"));
    assert!(
        out.failures.contains(&VerifyError::SnpSignature),
        "{:?}",
        out.failures
    );
}

#[test]
fn the_wrong_generations_ark_is_refused() {
    let s01 = cases()
        .into_iter()
        .find(|c| c.meta["file"].as_str().unwrap().contains("S01"))
        .unwrap();
    let genoa_ark = amd_cert(Generation::Genoa, AmdCert::Ark).unwrap();
    let milan_ask = amd_cert(Generation::Milan, AmdCert::Ask).unwrap();
    let genoa_ask = amd_cert(Generation::Genoa, AmdCert::Ask).unwrap();
    for chain in [
        vec![milan_ask.clone(), genoa_ark.clone()],
        vec![genoa_ask, genoa_ark],
    ] {
        let err = SnpVerifier::default()
            .verify(&s01.report, &s01.signer, &chain, &lenient(), at_for("S01"))
            .unwrap_err();
        assert!(err.code().starts_with("chain."), "{err:?}");
    }
}

#[test]
fn the_vlek_is_expired_now_and_valid_inside_its_window() {
    let s04 = cases()
        .into_iter()
        .find(|c| c.meta["file"].as_str().unwrap().contains("S04"))
        .unwrap();
    let v = SnpVerifier::default();
    v.verify(&s04.report, &s04.signer, &[], &lenient(), at_for("S04"))
        .unwrap();
    let now = UnixTime::parse_rfc3339("2026-11-23T00:00:00Z").unwrap();
    let err = v
        .verify(&s04.report, &s04.signer, &[], &lenient(), now)
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::CertificateExpired { index: 2, .. }),
        "{err:?}"
    );
}

#[test]
fn policy_debug_measurement_tcb_vmpl() {
    let v = SnpVerifier::default();
    for c in cases() {
        let f = c.meta["file"].as_str().unwrap();
        let at = at_for(f);
        let strict = v.verify(&c.report, &c.signer, &c.chain, &SnpPolicy::default(), at);
        if c.meta["policy_decoded"]["debug"].as_u64() == Some(1) {
            assert_eq!(strict.unwrap_err(), VerifyError::DebugMode, "{f}");
            continue;
        }
        // The default policy accepts VMPL 0 only; the rest runs at the report's own VMPL.
        let vmpl = u32::try_from(c.meta["vmpl"].as_u64().unwrap()).unwrap();
        if vmpl > 0 {
            let err = strict.unwrap_err();
            assert_eq!(err.code(), "policy.guest", "{f}: {err}");
            assert!(err.to_string().contains("VMPL"), "{f}: {err}");
        }
        let base = SnpPolicy {
            max_vmpl: Some(vmpl),
            ..SnpPolicy::default()
        };
        let r = v
            .verify(&c.report, &c.signer, &c.chain, &base, at)
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .report;
        let mut p = SnpPolicy {
            measurements: vec![vec![0u8; 48], r.measurement.to_vec()],
            ..base.clone()
        };
        v.verify(&c.report, &c.signer, &c.chain, &p, at).unwrap();
        p.measurements = vec![vec![0u8; 48]];
        assert!(matches!(
            v.verify(&c.report, &c.signer, &c.chain, &p, at)
                .unwrap_err(),
            VerifyError::MeasurementNotAllowed(_)
        ));
        let p = SnpPolicy {
            min_tcb: MinTcb {
                microcode: Some(r.reported_tcb.microcode + 1),
                ..MinTcb::default()
            },
            ..base.clone()
        };
        assert!(matches!(
            v.verify(&c.report, &c.signer, &c.chain, &p, at)
                .unwrap_err(),
            VerifyError::TcbTooLow {
                component: "microcode",
                ..
            }
        ));
        let p = SnpPolicy {
            min_tcb: MinTcb {
                snp: Some(r.reported_tcb.snp),
                bootloader: Some(r.reported_tcb.bootloader),
                ..MinTcb::default()
            },
            max_vmpl: Some(r.vmpl),
            ..base.clone()
        };
        v.verify(&c.report, &c.signer, &c.chain, &p, at).unwrap();
        if r.vmpl > 0 {
            let p = SnpPolicy {
                max_vmpl: Some(0),
                ..base.clone()
            };
            assert!(matches!(
                v.verify(&c.report, &c.signer, &c.chain, &p, at)
                    .unwrap_err(),
                VerifyError::GuestPolicy(_)
            ));
        }
    }
}

#[test]
fn truncations_wrong_sizes_and_garbage_certificates() {
    let v = SnpVerifier::default().with_cache(ChainCache::new(0));
    let c = cases().remove(0);
    let at = at_for("S01");
    for len in (0..REPORT_LEN).chain([REPORT_LEN + 1, 2 * REPORT_LEN]) {
        let mut r = c.report.clone();
        r.resize(len, 0);
        assert!(
            matches!(
                v.verify(&r, &c.signer, &[], &lenient(), at),
                Err(VerifyError::SnpReport(_))
            ),
            "len {len}"
        );
    }
    for len in [0, 1, 100, c.signer.len() - 1] {
        assert!(matches!(
            v.verify(&c.report, &c.signer[..len], &[], &lenient(), at),
            Err(VerifyError::CertificateParse { .. })
        ));
    }
    // A flipped VCEK byte (trustee's check_vcek_signature_failure flips byte 42).
    let mut vcek = c.signer.clone();
    vcek[42] = vcek[42].wrapping_add(1);
    assert!(v.verify(&c.report, &vcek, &[], &lenient(), at).is_err());
    let mut vcek = c.signer.clone();
    let n = vcek.len();
    vcek[n - 5] ^= 1;
    assert_eq!(
        v.verify(&c.report, &vcek, &[], &lenient(), at).unwrap_err(),
        VerifyError::CertificateSignature { index: 2 }
    );
    // virtee/sev's negative: bit 7 of byte 21 of S01.
    let mut r = c.report.clone();
    r[21] ^= 0x80;
    assert!(v.verify(&r, &c.signer, &[], &lenient(), at).is_err());
}
