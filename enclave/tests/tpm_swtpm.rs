//! `--platform tpm` against swtpm (scripts/swtpm.sh, in a temporary directory): credential
//! activation releases the enrollment CA's secret only for the AK it was made for and only
//! to the EK of the certificate, and the PolicyPCR-bound proof key stops signing once a
//! quoted PCR changes (the key without policy does not). Needs swtpm and swtpm-tools.
#![cfg(feature = "tpm")]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use cada_enclave::platform::tpm::{KeyPolicy, Tpm, TpmOptions, DEFAULT_PCRS};
use cada_enclave::platform::tpm_enroll::{
    cert_spki, check_ak_public, enroll, make_credential, object_name, tpm_activate, tpm_request,
    EnrollOptions,
};
use cada_enclave::platform::Platform;
use cada_protocol::jwk::SigAlg;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Digest, DigestValues};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::Context;

struct Swtpm {
    dir: PathBuf,
    tcti: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/swtpm.sh")
}

impl Swtpm {
    fn start(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cada-swtpm-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new(script())
            .arg("start")
            .arg(dir.join("swtpm"))
            .output()
            .expect("scripts/swtpm.sh (apt-get install swtpm swtpm-tools)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tcti = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        Swtpm { dir, tcti }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.dir.join("swtpm"))
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn activation_answers_only_for_this_ak_and_this_ek() {
    let tpm = Swtpm::start("activate");
    let mut ctx = Context::new(TctiNameConf::from_str(&tpm.tcti).unwrap()).unwrap();
    let req = tpm_request(&mut ctx).unwrap();
    let spki = cert_spki(&req.ek_cert).unwrap();
    check_ak_public(&req.ak_public).unwrap();
    let name = object_name(&req.ak_public);
    let secret = [0x5au8; 32];

    let ok = make_credential(&spki, &name, &secret).unwrap();
    assert_eq!(
        tpm_activate(&mut ctx, &req, &ok).unwrap().as_slice(),
        &secret
    );

    // Made for another object's name: the TPM's integrity check fails.
    let mut other_name = name.clone();
    other_name[5] ^= 1;
    let wrong = make_credential(&spki, &other_name, &secret).unwrap();
    let e = tpm_activate(&mut ctx, &req, &wrong).unwrap_err();
    assert!(e.to_string().contains("ActivateCredential"), "{e}");

    // Made for another EK (a key the CA would have got from a forged certificate).
    let other = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let other_spki = {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::signature::KeyPair as _;
        other.public_key().as_der().unwrap().as_ref().to_vec()
    };
    let wrong = make_credential(&other_spki, &name, &secret).unwrap();
    assert!(tpm_activate(&mut ctx, &req, &wrong).is_err());

    // A tampered challenge is refused as well.
    let mut flipped = make_credential(&spki, &name, &secret).unwrap();
    let last = flipped.id_object.len() - 1;
    flipped.id_object[last] ^= 1;
    assert!(tpm_activate(&mut ctx, &req, &flipped).is_err());
}

#[test]
fn the_ca_refuses_an_ak_that_is_not_a_restricted_key_fixed_to_its_tpm() {
    let tpm = Swtpm::start("akcheck");
    enroll(&EnrollOptions {
        tcti: tpm.tcti.clone(),
        state_dir: tpm.dir.join("state"),
        ca_dir: tpm.dir.join("ca"),
        ek_intermediates: None,
        days: 1,
    })
    .unwrap();
    let (t, _) = open(&tpm, KeyPolicy::None);
    // The proof key's public area: a signing key, but not restricted.
    let e = check_ak_public(t.key_public()).unwrap_err();
    assert!(e.to_string().contains("restricted"), "{e}");
    let ak = std::fs::read(tpm.dir.join("state/tpm-ak.pub")).unwrap();
    check_ak_public(&ak).unwrap();
}

fn open(tpm: &Swtpm, policy: KeyPolicy) -> (Tpm, cada_enclave::key::SigningKey) {
    open_with_log(tpm, policy, None)
}

fn open_with_log(
    tpm: &Swtpm,
    policy: KeyPolicy,
    event_log: Option<PathBuf>,
) -> (Tpm, cada_enclave::key::SigningKey) {
    Tpm::open(
        &TpmOptions {
            tcti: tpm.tcti.clone(),
            state_dir: tpm.dir.join("state"),
            pcrs: DEFAULT_PCRS.to_vec(),
            key_policy: policy,
            session_secs: None,
            event_log,
        },
        SigAlg::ES256,
    )
    .unwrap()
}

fn extend_pcr7(t: &Tpm) {
    t.with_tpm(|ctx| {
        let mut v = DigestValues::new();
        v.set(
            HashingAlgorithm::Sha256,
            Digest::try_from(vec![0x42u8; 32]).unwrap(),
        );
        ctx.execute_with_session(Some(AuthSession::Password), |c| {
            c.pcr_extend(tss_esapi::handles::PcrHandle::Pcr7, v)
        })
        .unwrap();
        Ok(())
    })
    .unwrap();
}

#[test]
fn the_pcr_bound_key_stops_signing_when_a_quoted_pcr_changes() {
    let tpm = Swtpm::start("pcr");
    enroll(&EnrollOptions {
        tcti: tpm.tcti.clone(),
        state_dir: tpm.dir.join("state"),
        ca_dir: tpm.dir.join("ca"),
        ek_intermediates: None,
        days: 1,
    })
    .unwrap();
    {
        let (t, key) = open(&tpm, KeyPolicy::Pcr);
        assert_eq!(key.sign(b"before").unwrap().len(), 64);
        let before = t.measurements().unwrap()["TPM_PCR7"].clone();
        extend_pcr7(&t);
        assert_ne!(t.measurements().unwrap()["TPM_PCR7"], before);
        let e = key.sign(b"after").unwrap_err();
        assert!(e.to_string().contains("PolicyPCR"), "{e}");
        // The quote still works and shows the new value: evidence tells the truth.
        t.attest(b"binding", b"nonce").unwrap();
    }
    // Without the policy the same change does not stop the key.
    let (t, key) = open(&tpm, KeyPolicy::None);
    extend_pcr7(&t);
    assert_eq!(key.sign(b"after").unwrap().len(), 64);
}

/// Issue 24: a TPM delegator configured with a real TCG event log (48 KiB) attests its
/// delegations without it — the quote of the PCRs and the nonce stay, the log goes — so
/// its evidence fits a delegation (`MAX_EVIDENCE_LEN`, 24 KiB); its other evidence keeps
/// the log.
#[test]
fn a_tpm_attests_a_delegation_without_its_event_log() {
    let tpm = Swtpm::start("deleg");
    enroll(&EnrollOptions {
        tcti: tpm.tcti.clone(),
        state_dir: tpm.dir.join("state"),
        ca_dir: tpm.dir.join("ca"),
        ek_intermediates: None,
        days: 1,
    })
    .unwrap();
    let log = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/tpm/eventlog/EL01_binary_bios_measurements");
    let (t, _key) = open_with_log(&tpm, KeyPolicy::None, Some(log.clone()));
    let doc = |e: &cada_protocol::envelope::EvidenceEnvelope| {
        cada_protocol::tpm::TpmDocument::from_cbor(&e.document).unwrap()
    };
    let full = t.attest(b"binding", b"nonce").unwrap();
    assert_eq!(doc(&full).log, Some(std::fs::read(&log).unwrap()));
    assert!(full.to_cbor().len() > cada_contract::delegation::MAX_EVIDENCE_LEN);
    let compact = t.attest_for_delegation(b"binding", b"nonce").unwrap();
    let d = doc(&compact);
    assert_eq!(d.log, None);
    assert_eq!(d.pcrs, doc(&full).pcrs, "the same boot state is quoted");
    assert_eq!(compact.nonce, b"nonce");
    assert!(
        compact.to_cbor().len() <= cada_contract::delegation::MAX_EVIDENCE_LEN,
        "{} bytes",
        compact.to_cbor().len()
    );
}
