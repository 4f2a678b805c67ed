//! Real TPM artefacts from public repositories (`testdata/tpm/`, provenance in its README):
//! two Azure confidential VM vTPM quotes bound to their SEV-SNP reports through the HCL
//! report, two Google Shielded VM vTPM quotes with their AK certificate chains to Google's
//! pinned EK/AK CA root, and a libtpms quote. None certifies a CADA key: each exercises the
//! rules its artefacts allow, and every alteration is refused with its `tpm.*` code.
mod common;

use cada_attestation_verifier::snp::{SnpPolicy, SnpVerifier};
use cada_attestation_verifier::tpm::structs::{alg, parse_attest, parse_public, parse_signature};
use cada_attestation_verifier::tpm::{
    ecdsa_signature_from_der, public_key_from_cert, public_key_from_spki, verify_hcl, verify_quote,
    AkBound, PublicKey, Signature, TpmVerifier,
};
use cada_attestation_verifier::UnixTime;

fn at() -> UnixTime {
    UnixTime::parse_rfc3339("2026-11-01T00:00:00Z").unwrap()
}

fn pcrs(rel: &str) -> Vec<Vec<u8>> {
    common::read(rel).chunks(32).map(<[u8]>::to_vec).collect()
}

fn rsassa(rel: &str) -> Signature {
    Signature::Rsa {
        scheme: alg::RSASSA,
        hash: alg::SHA256,
        sig: common::read(rel),
    }
}

fn azure_policy() -> SnpPolicy {
    SnpPolicy {
        max_vmpl: Some(0),
        ..SnpPolicy::default()
    }
}

fn azure_ak(hcl: &str, certs: &[Vec<u8>]) -> PublicKey {
    verify_hcl(
        &common::read(hcl),
        certs,
        &SnpVerifier::default(),
        &azure_policy(),
        at(),
    )
    .unwrap()
    .ak
}

fn code<T: std::fmt::Debug>(r: Result<T, cada_attestation_verifier::VerifyError>) -> &'static str {
    r.map(|_| "ok").unwrap_or_else(|e| e.code())
}

#[test]
fn az01_azure_vtpm_quote_by_the_ak_of_its_hcl_report() {
    let certs = common::certs("sev-snp/azure-vtpm/AZ01_vcek-chain.pem");
    let v = verify_hcl(
        &common::read("sev-snp/azure-vtpm/AZ01_hcl-report.bin"),
        &certs,
        &SnpVerifier::default(),
        &azure_policy(),
        at(),
    )
    .unwrap();
    assert!(v.snp.amd_root);
    assert_eq!(
        v.vm_id.as_deref(),
        Some("911B0EF8-9DBA-48B0-B275-4E4DF2D39252")
    );
    let PublicKey::Rsa { bits, e, .. } = &v.ak else {
        panic!()
    };
    assert_eq!((*bits, *e), (2048, 65537));
    let msg = common::read("tpm/azure/AZ01_quote.msg");
    let q = verify_quote(
        &msg,
        &rsassa("tpm/azure/AZ01_quote.sig"),
        &v.ak,
        &pcrs("tpm/azure/AZ01_pcrs.bin"),
        Some(b"challenge"),
    )
    .unwrap();
    assert_eq!(q.pcrs.len(), 24);
    assert!(q.pcrs.iter().all(|p| p.bank == "sha256"));
    // The bincode original holds the same message, signature and PCRs.
    let raw = common::read("tpm/azure/AZ01_quote.bin");
    assert!(raw.windows(msg.len()).any(|w| w == msg.as_slice()));

    // Refusals: another nonce, altered PCRs, another VM's AK, every flipped byte.
    let sig = rsassa("tpm/azure/AZ01_quote.sig");
    let p = pcrs("tpm/azure/AZ01_pcrs.bin");
    assert_eq!(
        code(verify_quote(&msg, &sig, &v.ak, &p, Some(b"other"))),
        "tpm.nonce"
    );
    let mut bad = p.clone();
    bad[7][0] ^= 1;
    assert_eq!(
        code(verify_quote(&msg, &sig, &v.ak, &bad, None)),
        "tpm.pcr_digest"
    );
    let genoa = azure_ak(
        "tpm/azure/AZ02_hcl-report.bin",
        &common::certs("tpm/azure/AZ02_vcek.pem"),
    );
    assert_eq!(
        code(verify_quote(&msg, &sig, &genoa, &p, None)),
        "tpm.quote_signature"
    );
    for i in 0..msg.len() {
        let mut m = msg.clone();
        m[i] ^= 0x01;
        assert!(verify_quote(&m, &sig, &v.ak, &p, None).is_err(), "byte {i}");
    }
}

#[test]
fn az01_hcl_report_alterations_are_refused() {
    let certs = common::certs("sev-snp/azure-vtpm/AZ01_vcek-chain.pem");
    let hcl = common::read("sev-snp/azure-vtpm/AZ01_hcl-report.bin");
    let run = |h: &[u8]| {
        code(verify_hcl(
            h,
            &certs,
            &SnpVerifier::default(),
            &azure_policy(),
            at(),
        ))
    };
    assert_eq!(run(&hcl), "ok");
    // The runtime claims (holding the AK) are bound by report_data: change one claim byte.
    let at_claims = hcl.windows(7).position(|w| w == b"HCLAkPu").unwrap();
    let mut h = hcl.clone();
    h[at_claims + 20] ^= 0x01;
    assert_eq!(run(&h), "tpm.hcl_report_data");
    // The SNP report inside: its signature.
    let mut h = hcl.clone();
    h[0x20 + 0x90] ^= 0x01;
    assert_eq!(run(&h), "tpm.hcl_snp");
    let mut h = hcl.clone();
    h[0] = b'X';
    assert_eq!(run(&h), "tpm.hcl");
    assert_eq!(run(&hcl[..1300]), "tpm.hcl");
    // Without the VCEK.
    assert_eq!(
        code(verify_hcl(
            &hcl,
            &[],
            &SnpVerifier::default(),
            &azure_policy(),
            at()
        )),
        "tpm.hcl_snp"
    );
}

#[test]
fn az02_azure_genoa_vtpm_quote() {
    let ak = azure_ak(
        "tpm/azure/AZ02_hcl-report.bin",
        &common::certs("tpm/azure/AZ02_vcek.pem"),
    );
    let q = verify_quote(
        &common::read("tpm/azure/AZ02_quote.msg"),
        &rsassa("tpm/azure/AZ02_quote.sig"),
        &ak,
        &pcrs("tpm/azure/AZ02_pcrs.bin"),
        None,
    )
    .unwrap();
    assert_eq!(q.pcrs.len(), 24);
    assert_eq!(q.extra_data.len(), 2 * 48);
}

fn gcp(tag: &str) {
    let chain = common::certs(&format!("tpm/gcp/{tag}_ak-chain.pem"));
    let ak = public_key_from_cert(&chain[0]).unwrap();
    let refs: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
    let v = TpmVerifier::default();
    let (bound, _, id) = v.verify_ak_certificate(&ak, &[], &refs, &[], at()).unwrap();
    let AkBound::Certificate { ak_root, ek, .. } = &bound else {
        panic!("{bound:?}")
    };
    assert!(ak_root.contains("Google"), "{ak_root}");
    assert!(ek.is_none());
    assert!(id.starts_with("tpm-ak-"));
    // The pinned root completes a chain sent without it.
    v.verify_ak_certificate(&ak, &[], &refs[..2], &[], at())
        .unwrap();
    let msg = common::read(&format!("tpm/gcp/{tag}_quote.msg"));
    let sig = ecdsa_signature_from_der(
        &common::read(&format!("tpm/gcp/{tag}_quote.sig.der")),
        alg::SHA256,
    )
    .unwrap();
    let nonce = common::read(&format!("tpm/gcp/{tag}_nonce.bin"));
    let p = pcrs(&format!("tpm/gcp/{tag}_pcrs.bin"));
    let q = verify_quote(&msg, &sig, &ak, &p, Some(&nonce)).unwrap();
    assert_eq!(q.pcrs.len(), 24);
    // Refusals.
    assert_eq!(
        code(verify_quote(&msg, &sig, &ak, &p, Some(b"x"))),
        "tpm.nonce"
    );
    let mut bad = p.clone();
    bad[0][31] ^= 1;
    assert_eq!(
        code(verify_quote(&msg, &sig, &ak, &bad, None)),
        "tpm.pcr_digest"
    );
    assert_eq!(
        code(verify_quote(&msg, &sig, &ak, &p[..23], None)),
        "tpm.pcr_values"
    );
    // Before the AK certificate was issued; an AK certificate of another key.
    let early = UnixTime::parse_rfc3339("2025-01-01T00:00:00Z").unwrap();
    assert_eq!(
        code(v.verify_ak_certificate(&ak, &[], &refs, &[], early)),
        "tpm.ak_chain"
    );
    let other = public_key_from_cert(&common::certs("tpm/gcp/G01_ak-chain.pem")[0]).unwrap();
    if tag != "G01" {
        assert_eq!(
            code(v.verify_ak_certificate(&other, &[], &refs, &[], at())),
            "tpm.ak_cert_key"
        );
    }
    for i in 0..msg.len() {
        let mut m = msg.clone();
        m[i] ^= 0x80;
        assert!(
            verify_quote(&m, &sig, &ak, &p, None).is_err(),
            "{tag} byte {i}"
        );
    }
}

#[test]
fn g01_gcp_sev_vtpm_quote_and_ak_certificate_chain() {
    gcp("G01");
}

#[test]
fn g02_gcp_tdx_vtpm_quote_and_ak_certificate_chain() {
    gcp("G02");
}

#[test]
fn l01_libtpms_quote_with_a_tpmt_signature() {
    let ak = public_key_from_spki(&common::read("tpm/libtpms/L01_ak.spki.der")).unwrap();
    let sig = parse_signature(&common::read("tpm/libtpms/L01_quote.sig")).unwrap();
    assert!(matches!(
        sig,
        Signature::Rsa {
            scheme: alg::RSASSA,
            hash: alg::SHA256,
            ..
        }
    ));
    let q = verify_quote(
        &common::read("tpm/libtpms/L01_quote.msg"),
        &sig,
        &ak,
        &pcrs("tpm/libtpms/L01_pcrs.bin"),
        None,
    )
    .unwrap();
    assert_eq!(q.pcrs.len(), 24);
    assert_eq!(q.firmware_version, "2019102300163636", "libtpms");
}

#[test]
fn every_real_structure_parses_and_survives_flips_and_truncation() {
    for rel in [
        "tpm/azure/AZ01_quote.msg",
        "tpm/azure/AZ02_quote.msg",
        "tpm/gcp/G01_quote.msg",
        "tpm/gcp/G02_quote.msg",
        "tpm/libtpms/L01_quote.msg",
    ] {
        let b = common::read(rel);
        parse_attest(&b).unwrap_or_else(|e| panic!("{rel}: {e}"));
        for n in 0..b.len() {
            assert!(parse_attest(&b[..n]).is_err(), "{rel} prefix {n}");
        }
        for i in 0..b.len() {
            let mut f = b.clone();
            f[i] ^= 0xff;
            let _ = parse_attest(&f);
        }
        // Not a TPMT_PUBLIC or TPMT_SIGNATURE either, and no panic trying.
        let _ = parse_public(&b);
        let _ = parse_signature(&b);
    }
}

#[test]
fn el01_el02_real_event_logs_parse_replay_and_survive_flips() {
    use cada_attestation_verifier::tpm::eventlog::parse_event_log;
    for rel in [
        "tpm/eventlog/EL01_binary_bios_measurements",
        "tpm/eventlog/EL02_binary_bios_measurements-secureboot",
    ] {
        let b = common::read(rel);
        let log = parse_event_log(&b).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(log.events.len() > 20, "{rel}");
        assert!(log.banks.iter().any(|(h, _)| *h == alg::SHA256));
        let sha256 = log.replay(alg::SHA256);
        let sha1 = log.replay(alg::SHA1);
        assert!(sha256.contains_key(&0) && sha256.contains_key(&7), "{rel}");
        if log.banks.iter().any(|(h, _)| *h == alg::SHA1) {
            assert_eq!(
                sha256.keys().collect::<Vec<_>>(),
                sha1.keys().collect::<Vec<_>>()
            );
        } else {
            assert!(sha1.is_empty(), "{rel}: no SHA-1 bank, nothing to replay");
        }
        assert!(sha256.values().all(|v| v.len() == 32));
        // Every cut inside the log is refused or a shorter log; flips never panic.
        for n in (0..b.len()).step_by(97) {
            if let Ok(l) = parse_event_log(&b[..n]) {
                assert!(l.events.len() <= log.events.len());
            }
        }
        for i in (0..b.len()).step_by(13) {
            let mut f = b.clone();
            f[i] ^= 0xff;
            let _ = parse_event_log(&f);
        }
    }
}
