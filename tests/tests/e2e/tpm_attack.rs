//! Review tpm-2 (issue 25): adversarial end-to-end attacks on `--platform tpm` with the real
//! binaries on swtpm (loopback only). One test per attack, asserting the SECURE behaviour;
//! attacks that succeed are `#[ignore = "finding N: …"]` (see docs/reviews/tpm-2.md).
//!
//! The attacker is another process on the same machine with access to the TPM (here: swtpm's
//! loopback port, which any local user can reach), driving it with tpm2-tools.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use cada_e2e::mcp_interop::{send, start_gate};
use cada_e2e::swtpm::Swtpm;
use cada_e2e::*;
use cada_protocol::access_token::{GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_CONTRACT};
use cada_protocol::envelope::EvidenceEnvelope;
use cada_protocol::tpm::{qualifying_data, TpmDocument};

const URL: &str = "https://api.example.com/v1/orders";

fn run(name: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin(name)).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A tpm2-tools command against `tcti` (the attacker's own connection to the TPM).
fn tool(tcti: &str, name: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(name)
        .env("TPM2TOOLS_TCTI", tcti)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name} (tpm2-tools): {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Enrolls the TPM into `state` with the enrollment CA in `ca`: (exit code, its output).
fn enroll(tpm: &Swtpm, state: &Path, ca: &Path) -> (i32, String) {
    let (code, out, err) = cada_e2e::swtpm::enroll(tpm, state, ca);
    (code, format!("{out}{err}"))
}

/// swtpm in `d/swtpm`, enrolled into `d/state` by the enrollment CA in `d/ca`.
fn enrolled_swtpm(d: &Path) -> Swtpm {
    let tpm = Swtpm::start(&d.join("swtpm"));
    let (code, out) = enroll(&tpm, &d.join("state"), &d.join("ca"));
    assert_eq!(code, 0, "cada-enclave tpm enroll: {out}");
    tpm
}

/// A signer on a fresh enrolled swtpm: the TPM, `cada-enclave --platform tpm` and its parent.
struct Signer {
    tpm: Swtpm,
    _enclave: Proc,
    _parent: Proc,
    /// The agent socket.
    sock: PathBuf,
    /// The signer's `TPM_PCR0`, as its identity reports it.
    pcr0: String,
}

/// Starts a [`Signer`] under `d` on [`enrolled_swtpm`], the enclave with `extra` flags.
fn tpm_signer(d: &Path, extra: &[&str]) -> Signer {
    let tpm = enrolled_swtpm(d);
    let mut args = vec!["--tpm-tcti", tpm.tcti.as_str()];
    args.extend_from_slice(extra);
    let _enclave = start_enclave_on(d, "tpm", &args);
    let _parent = start_parent(d, &[]);
    let sock = d.join("agent.sock");
    let pcr0 = identity(&sock)["measurements"]["TPM_PCR0"]
        .as_str()
        .unwrap()
        .to_owned();
    Signer {
        tpm,
        _enclave,
        _parent,
        sock,
        pcr0,
    }
}

/// A policy trusting swtpm's CA (EK root) and the enrollment CA (AK root), for the audience
/// of [`URL`] with the signer's PCR 0.
fn policy(d: &Path, name: &str, ek_root: &Path, pcr0: &str, extra_tpm: &str) -> PathBuf {
    let p = d.join(name);
    std::fs::write(
        &p,
        format!(
            "[tpm]\nroots = [{:?}]\nak_roots = [{:?}]\n{extra_tpm}\
             [[audience]]\nprefix = \"https://api.example.com/\"\nmeasurements = [{{ TPM_PCR0 = \"{pcr0}\" }}]\n",
            ek_root.display().to_string(),
            d.join("ca/tpm-enroll-ca.pem").display().to_string()
        ),
    )
    .unwrap();
    p
}

/// `cada-verify serve` (`verify`) under a [`policy`] written to `d/<file>` for `tpm`'s EK
/// root and `pcr0`, `extra_tpm` added to its `[tpm]` table: (process, port).
fn verifier(d: &Path, file: &str, tpm: &Swtpm, pcr0: &str, extra_tpm: &str) -> (Proc, u16) {
    let pol = policy(d, file, &tpm.root(), pcr0, extra_tpm);
    start_verifier(d, "verify", &["--policy", pol.to_str().unwrap()])
}

fn identity(sock: &Path) -> serde_json::Value {
    let (_, id) = http(sock, "GET", "/v1/identity", None, Duration::from_secs(5)).unwrap();
    serde_json::from_str(&id).unwrap()
}

/// A nonce from `cada-verify serve` on `port` (its text, as the envelope carries it).
fn verifier_nonce(port: u16) -> String {
    let (st, _, b) = http_tcp(port, "GET", "/v1/nonce", "application/json", b"").unwrap();
    assert_eq!(st, 200, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    v["nonce"].as_str().unwrap().to_owned()
}

/// Evidence from the daemon for `nonce` (it becomes the signer's current evidence).
fn evidence_for(sock: &Path, nonce: &str) -> String {
    let (st, b) = http(
        sock,
        "GET",
        &format!("/v1/evidence?nonce={}", hex::encode(nonce)),
        None,
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(st, 200, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    v["evidence"].as_str().unwrap().to_owned()
}

fn verify_body(dpop: &str, evidence: &str) -> serde_json::Value {
    serde_json::json!({"dpop": dpop, "method": "POST", "url": URL, "evidence": evidence})
}

fn code_of(v: &serde_json::Value) -> String {
    v["reasons"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The transient handles whose public area is the signer's proof key (sign, fixedTPM,
/// fixedParent, sensitiveDataOrigin, noDA: 0x00040432 under PolicyPCR).
fn proof_key_handles(tcti: &str) -> Vec<String> {
    let (ok, out) = tool(tcti, "tpm2_getcap", &["handles-transient"]);
    assert!(ok, "{out}");
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(str::to_owned)
        .filter(|h| {
            let (ok, p) = tool(tcti, "tpm2_readpublic", &["-c", h]);
            ok && p.contains("raw: 0x40432")
        })
        .collect()
}

/// The attacker: TPM2_Sign of `digest` with the object at `handle`, in its own PolicyPCR
/// session over PCRs 0–7 (anyone can satisfy PolicyPCR: it only checks the TPM's PCRs).
/// JOSE r ‖ s when the TPM signed.
fn attacker_sign(tcti: &str, work: &Path, handle: &str, digest: &[u8; 32]) -> Option<Vec<u8>> {
    let dg = work.join("attacker.digest");
    let sig = work.join("attacker.sig");
    let sess = work.join("attacker.session");
    std::fs::write(&dg, digest).unwrap();
    let _ = std::fs::remove_file(&sig);
    let (ok, out) = tool(
        tcti,
        "tpm2_startauthsession",
        &["--policy-session", "-S", sess.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    let (ok, out) = tool(
        tcti,
        "tpm2_policypcr",
        &["-S", sess.to_str().unwrap(), "-l", "sha256:0,1,2,3,4,5,6,7"],
    );
    assert!(ok, "{out}");
    let session = format!("session:{}", sess.display());
    let (signed, _) = tool(
        tcti,
        "tpm2_sign",
        &[
            "-c",
            handle,
            "-g",
            "sha256",
            "-s",
            "ecdsa",
            "-d",
            "-p",
            &session,
            "-o",
            sig.to_str().unwrap(),
            dg.to_str().unwrap(),
        ],
    );
    let _ = tool(tcti, "tpm2_flushcontext", &[sess.to_str().unwrap()]);
    if !signed {
        return None;
    }
    // TPMT_SIGNATURE: sigAlg ECDSA (0x0018), hash, TPM2B r, TPM2B s.
    let t = std::fs::read(&sig).unwrap();
    assert_eq!(&t[..2], &[0x00, 0x18], "an ECDSA signature");
    let rl = usize::from(u16::from_be_bytes([t[4], t[5]]));
    let r = &t[6..6 + rl];
    let sl = usize::from(u16::from_be_bytes([t[6 + rl], t[7 + rl]]));
    let s = &t[8 + rl..8 + rl + sl];
    let mut out = Vec::new();
    for part in [r, s] {
        out.extend(std::iter::repeat_n(0u8, 32 - part.len()));
        out.extend_from_slice(part);
    }
    Some(out)
}

fn handle(h: &str) -> u32 {
    u32::from_str_radix(h.trim_start_matches("0x"), 16).unwrap()
}

/// The attacker: `TPM2_Certify(object = key, signHandle = ak)` with its own qualifyingData,
/// sent raw with `tpm2_send` (both objects have an empty authValue: password sessions).
/// (TPMS_ATTEST, TPMT_SIGNATURE) when the TPM answered.
fn attacker_certify(
    tcti: &str,
    work: &Path,
    key: &str,
    ak: &str,
    q: &[u8],
) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut body = Vec::new();
    body.extend_from_slice(&0x0000_0148u32.to_be_bytes()); // TPM_CC_Certify
    body.extend_from_slice(&handle(key).to_be_bytes());
    body.extend_from_slice(&handle(ak).to_be_bytes());
    body.extend_from_slice(&18u32.to_be_bytes()); // two password sessions
    for _ in 0..2 {
        body.extend_from_slice(&0x4000_0009u32.to_be_bytes());
        body.extend_from_slice(&[0, 0, 0, 0, 0]);
    }
    body.extend_from_slice(&u16::try_from(q.len()).unwrap().to_be_bytes());
    body.extend_from_slice(q);
    body.extend_from_slice(&0x0010u16.to_be_bytes()); // inScheme TPM_ALG_NULL
    let mut cmd = vec![0x80, 0x02];
    cmd.extend_from_slice(&u32::try_from(body.len() + 6).unwrap().to_be_bytes());
    cmd.extend_from_slice(&body);
    let (cin, cout) = (work.join("certify.cmd"), work.join("certify.rsp"));
    std::fs::write(&cin, &cmd).unwrap();
    let (ok, _) = tool(
        tcti,
        "tpm2_send",
        &["-o", cout.to_str().unwrap(), cin.to_str().unwrap()],
    );
    let r = std::fs::read(&cout).ok()?;
    if !ok || r.len() < 16 || r[6..10] != [0, 0, 0, 0] {
        return None;
    }
    let p = &r[14..]; // after tag, size, rc, parameterSize
    let al = usize::from(u16::from_be_bytes([p[0], p[1]]));
    let attest = p[2..2 + al].to_vec();
    let s = &p[2 + al..];
    let rl = usize::from(u16::from_be_bytes([s[4], s[5]]));
    let sl = usize::from(u16::from_be_bytes([s[6 + rl], s[7 + rl]]));
    Some((attest, s[..8 + rl + sl].to_vec()))
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Attack (finding 1): another process with TPM access — no memory read, no root, no file of
/// the signer — uses the proof key and the AK the signer left loaded as transient objects
/// (no resource manager: swtpm, mssim, /dev/tpm0): it quotes and certifies for a verifier
/// nonce of its choice and signs a DPoP proof of its choice. `cada-verify serve` with nonce
/// freshness must not accept that as the signer.
#[test]
fn a_tpm_client_cannot_forge_fresh_evidence_and_proofs_with_the_signers_key() {
    let dir = TempDir::new("tpma-forge");
    let d = &dir.0;
    let Signer {
        tpm,
        _enclave,
        _parent,
        sock,
        pcr0,
    } = tpm_signer(d, &[]);
    let (_v, vport) = verifier(d, "policy.toml", &tpm, &pcr0, "");

    // The honest flow works (verifier nonce → evidence → proof).
    let n = verifier_nonce(vport);
    let ev = evidence_for(&sock, &n);
    let honest = mint(&sock, "POST", URL, None, false);
    let (st, v) = pop_verify(vport, &verify_body(honest["dpop"].as_str().unwrap(), &ev));
    assert_eq!((st, v["active"].as_bool()), (200, Some(true)), "{v}");

    // The attacker: public bytes of an old evidence (binding, certs, key), a fresh nonce of
    // the verifier, and the TPM.
    let env = EvidenceEnvelope::from_header(&ev).unwrap();
    let mut doc = TpmDocument::from_cbor(&env.document).unwrap();
    let nonce = verifier_nonce(vport);
    let q = hex::encode(qualifying_data(&env.binding, nonce.as_bytes()));
    let keys = proof_key_handles(&tpm.tcti);
    assert_eq!(keys.len(), 1, "the signer's proof key is visible: {keys:?}");
    let key = &keys[0];
    let ak = "0x80000001";
    let f = |n: &str| d.join(n).to_str().unwrap().to_owned();
    let (ok, out) = tool(
        &tpm.tcti,
        "tpm2_quote",
        &[
            "-c",
            ak,
            "-l",
            "sha256:0,1,2,3,4,5,6,7",
            "-q",
            &q,
            "-m",
            &f("q.msg"),
            "-s",
            &f("q.sig"),
            "-g",
            "sha256",
        ],
    );
    // tpm2_certify has no qualifying data option: the attacker sends TPM2_Certify raw.
    let certified = attacker_certify(&tpm.tcti, d, key, ak, &hex::decode(&q).unwrap());
    let (ok2, out2) = (certified.is_some(), "TPM2_Certify refused".to_owned());
    if let Some((att, sig)) = &certified {
        std::fs::write(d.join("c.msg"), att).unwrap();
        std::fs::write(d.join("c.sig"), sig).unwrap();
    }
    let forged_env = if ok && ok2 {
        doc.quote = std::fs::read(d.join("q.msg")).unwrap();
        doc.quote_sig = std::fs::read(d.join("q.sig")).unwrap();
        doc.certify = std::fs::read(d.join("c.msg")).unwrap();
        doc.certify_sig = std::fs::read(d.join("c.sig")).unwrap();
        let mut e = env.clone();
        e.document = doc.to_cbor();
        e.nonce = nonce.as_bytes().to_vec();
        Some(e)
    } else {
        eprintln!("quote: {out}\ncertify: {out2}");
        None
    };
    // A DPoP proof of the attacker's choice, signed in the TPM with the signer's key.
    let forged = forged_env.and_then(|e| {
        let header = honest["dpop"].as_str().unwrap().split('.').next().unwrap();
        let iat = now_secs();
        let claims = serde_json::json!({
            "jti": b64url(&sha256(format!("forged-{iat}").as_bytes())[..16]),
            "htm": "POST", "htu": URL, "iat": iat, "exp": iat + 30,
            "cada": {"att": e.att_digest(), "seq": 1, "chain": b64url(&[7u8; 32])},
        });
        let input = format!("{header}.{}", b64url(claims.to_string().as_bytes()));
        attacker_sign(&tpm.tcti, d, key, &sha256(input.as_bytes()))
            .map(|sig| (format!("{input}.{}", b64url(&sig)), e.to_header()))
    });
    if let Some((dpop, evidence)) = forged {
        let (st, v) = pop_verify(vport, &verify_body(&dpop, &evidence));
        assert_ne!(
            (st, v["active"].as_bool()),
            (200, Some(true)),
            "a TPM client forged fresh evidence and a proof the verifier accepts as the signer's: {v}"
        );
    }
}

/// Attack (finding 1): after the signer is stopped (SIGKILL, as a crash or an OOM kill would),
/// its proof key stays loaded in a TPM without a resource manager until the next signer
/// start; docs/tpm.md says the key "dies with the process like an enclave key".
#[test]
fn a_stopped_signers_key_cannot_be_used_by_another_process() {
    let dir = TempDir::new("tpma-kill");
    let d = &dir.0;
    let tpm = enrolled_swtpm(d);
    let mut enclave = start_enclave_on(d, "tpm", &["--tpm-tcti", &tpm.tcti]);
    let jwk = {
        let _parent = start_parent(d, &[]);
        identity(&d.join("agent.sock"))["jkt"].clone()
    };
    assert!(jwk.is_string());
    enclave.kill();
    let left: Vec<Option<Vec<u8>>> = proof_key_handles(&tpm.tcti)
        .iter()
        .map(|h| attacker_sign(&tpm.tcti, d, h, &[0x11; 32]))
        .collect();
    assert!(
        left.iter().all(Option::is_none),
        "the dead signer's proof key still signs for another process ({} handle(s) left)",
        left.len()
    );
}

/// Attack: a TPM that presents another TPM's EK certificate (copied from its NV index, it is
/// public) to enrollment: the enrollment CA's credential is encrypted to that other EK, so
/// this TPM cannot answer it and `tpm enroll` must fail; a signer on TPM B given TPM A's
/// enrolled state must not start (A's AK blob does not load in B).
#[test]
fn a_tpm_with_another_tpms_ek_certificate_or_state_is_not_enrolled_nor_started() {
    let dir = TempDir::new("tpma-ek");
    let d = &dir.0;
    let a = enrolled_swtpm(d);
    let b = Swtpm::start(&d.join("swtpm-b"));
    // A's EK certificate, read from A's NV index, written into B's.
    let ek_a = d.join("ek-a.der");
    let (ok, out) = tool(
        &a.tcti,
        "tpm2_nvread",
        &["0x01c00002", "-C", "o", "-o", ek_a.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    let (ok, out) = tool(&b.tcti, "tpm2_nvundefine", &["0x01c00002", "-C", "p"]);
    assert!(ok, "{out}");
    let size = std::fs::metadata(&ek_a).unwrap().len().to_string();
    let (ok, out) = tool(
        &b.tcti,
        "tpm2_nvdefine",
        &[
            "0x01c00002",
            "-C",
            "p",
            "-s",
            &size,
            "-a",
            "ppwrite|ppread|ownerread|authread|no_da|platformcreate",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = tool(
        &b.tcti,
        "tpm2_nvwrite",
        &["0x01c00002", "-C", "p", "-i", ek_a.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    let (code, out) = enroll(&b, &d.join("state-b"), &d.join("ca"));
    assert_ne!(code, 0, "B enrolled with A's EK certificate: {out}");
    assert!(
        !d.join("state-b/tpm-ak-certs.pem").exists(),
        "no AK certificate issued: {out}"
    );
    // B driving A's enrolled state.
    let (code, out, err) = run(
        "cada-enclave",
        &[
            "--platform",
            "tpm",
            "--tpm-tcti",
            &b.tcti,
            "--state-dir",
            d.join("state").to_str().unwrap(),
            "--unix",
            d.join("b.sock").to_str().unwrap(),
        ],
    );
    assert_ne!(code, 0, "a signer on B started with A's AK: {out}{err}");
    assert!(err.contains("load the AK"), "{err}");
}

/// Attack: evidence of swtpm A presented with swtpm B's AK certificate (both enrolled by the
/// same CA, both EK roots trusted), and with A's AK certificate but B's EK chain.
#[test]
fn evidence_of_one_tpm_with_another_tpms_certificates_is_refused() {
    let dir = TempDir::new("tpma-mix");
    let d = &dir.0;
    let a = enrolled_swtpm(d);
    let b = Swtpm::start(&d.join("swtpm-b"));
    let (code, out) = enroll(&b, &d.join("state-b"), &d.join("ca"));
    assert_eq!(code, 0, "{out}");
    let _enclave = start_enclave_on(d, "tpm", &["--tpm-tcti", &a.tcti]);
    let _parent = start_parent(d, &[]);
    let sock = d.join("agent.sock");
    let pcr0 = identity(&sock)["measurements"]["TPM_PCR0"]
        .as_str()
        .unwrap()
        .to_owned();
    let p = d.join("policy.toml");
    std::fs::write(
        &p,
        format!(
            "[tpm]\nroots = [{:?}, {:?}]\nak_roots = [{:?}]\nfreshness = \"first_seen\"\n\
             [[audience]]\nprefix = \"https://api.example.com/\"\nmeasurements = [{{ TPM_PCR0 = \"{pcr0}\" }}]\n",
            a.root().display().to_string(),
            b.root().display().to_string(),
            d.join("ca/tpm-enroll-ca.pem").display().to_string()
        ),
    )
    .unwrap();
    let (_v, port) = start_verifier(d, "verify", &["--policy", p.to_str().unwrap()]);
    let m = mint(&sock, "POST", URL, None, true);
    let ev = m["evidence"].as_str().unwrap();
    let (st, v) = pop_verify(port, &verify_body(m["dpop"].as_str().unwrap(), ev));
    assert_eq!((st, v["active"].as_bool()), (200, Some(true)), "{v}");
    let env = EvidenceEnvelope::from_header(ev).unwrap();
    let pem = |p: PathBuf| -> Vec<Vec<u8>> {
        std::fs::read_to_string(p)
            .unwrap()
            .split("-----BEGIN CERTIFICATE-----")
            .filter_map(|c| c.split("-----END CERTIFICATE-----").next())
            .map(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.split_whitespace().collect::<String>())
                    .unwrap()
            })
            .filter(|c| !c.is_empty())
            .collect()
    };
    let ak_b = pem(d.join("state-b/tpm-ak-certs.pem"));
    let ek_b = pem(d.join("state-b/tpm-ek-certs.pem"));
    let ak_a = pem(d.join("state/tpm-ak-certs.pem"));
    let ek_a = pem(d.join("state/tpm-ek-certs.pem"));
    for (what, certs, want) in [
        (
            "B's AK and EK certificates",
            [&ak_b[..], &ek_b[..]].concat(),
            "tpm.ak_cert_key",
        ),
        (
            "B's AK certificate, A's EK",
            [&ak_b[..], &ek_a[..]].concat(),
            "tpm.ak_cert_key",
        ),
        (
            "A's AK certificate, B's EK",
            [&ak_a[..], &ek_b[..]].concat(),
            "tpm.ak_not_bound",
        ),
    ] {
        let mut e = env.clone();
        e.certs = certs.into_iter().map(Into::into).collect();
        let f = d.join("mixed.b64");
        std::fs::write(&f, e.to_header()).unwrap();
        let (code, out, err) = run(
            "cada-verify",
            &[
                "tpm",
                "evidence",
                f.to_str().unwrap(),
                "--ek-root",
                a.root().to_str().unwrap(),
                "--ek-root",
                b.root().to_str().unwrap(),
                "--ak-root",
                d.join("ca/tpm-enroll-ca.pem").to_str().unwrap(),
            ],
        );
        assert_ne!(code, 0, "{what}: {out}{err}");
        assert!(out.contains(want), "{what}: want {want}: {out}{err}");
    }
}

/// Attack: `--tpm-tcti` pointed at the attacker's software TPM (its own swtpm with its own
/// "manufacturer" CA), even enrolled by the real enrollment CA (which does not judge the EK
/// issuer): under a policy pinning only the real swtpm's CA, its evidence is refused at
/// cada-verify and cada-gate.
#[test]
fn a_signer_on_a_lying_software_tpm_is_refused_where_only_the_real_tpms_ca_is_pinned() {
    let dir = TempDir::new("tpma-fake");
    let d = &dir.0;
    let real = Swtpm::start(&d.join("swtpm-real"));
    let fake = enrolled_swtpm(d); // d/swtpm, own CA, enrolled by d/ca
    let _enclave = start_enclave_on(d, "tpm", &["--tpm-tcti", &fake.tcti]);
    let _parent = start_parent(d, &[]);
    let sock = d.join("agent.sock");
    let pcr0 = identity(&sock)["measurements"]["TPM_PCR0"]
        .as_str()
        .unwrap()
        .to_owned();
    let pinned = policy(
        d,
        "real.toml",
        &real.root(),
        &pcr0,
        "freshness = \"first_seen\"\n",
    );
    let (_v, port) = start_verifier(d, "verify", &["--policy", pinned.to_str().unwrap()]);
    let m = mint(&sock, "POST", URL, None, true);
    let (st, v) = pop_verify(
        port,
        &verify_body(m["dpop"].as_str().unwrap(), m["evidence"].as_str().unwrap()),
    );
    assert_ne!(st, 200, "{v}");
    // swtpm's local CAs all share one subject name: the chain is matched to the pinned root
    // by name, which did not sign it — another root, `tpm.ek_untrusted_root` (review tpm-2
    // finding 3: it was `tpm.ek_chain`).
    assert_eq!(code_of(&v), "tpm.ek_untrusted_root", "{v}");
    // cada-gate on the same policy.
    let upstream_file = d.join("upstream.txt");
    std::fs::write(&upstream_file, "upstream").unwrap();
    let upstream = format!(
        "http://127.0.0.1:{}",
        serve_status_file(upstream_file, None)
    );
    let gate_port = free_port();
    let gpol = d.join("gate.toml");
    std::fs::write(
        &gpol,
        std::fs::read_to_string(&pinned).unwrap().replace(
            "https://api.example.com/",
            &format!("http://127.0.0.1:{gate_port}/"),
        ),
    )
    .unwrap();
    let _gate = start_gate(d, "gate", gate_port, &upstream, &gpol, &[]);
    let g = mint(
        &sock,
        "GET",
        &format!("http://127.0.0.1:{gate_port}/v1/items"),
        None,
        true,
    );
    let headers = [
        ("DPoP", g["dpop"].as_str().unwrap()),
        ("CADA-Evidence", g["evidence"].as_str().unwrap()),
    ];
    let (st, h, b) = send(gate_port, "GET", "/v1/items", &headers, b"");
    assert_eq!(st, 401, "{h}{b}");
    assert!(h.contains("tpm.ek_"), "{h}{b}");
}

/// Attack: a restarted signer. Its proof key is new (a new DID: contracts and owner locks
/// naming the old DID do not carry over), the old key's transient object is flushed at
/// start, and the old evidence certifies a key that no TPM holds any more.
#[test]
fn a_restarted_signer_has_a_new_key_and_flushes_the_old_one() {
    let dir = TempDir::new("tpma-restart");
    let d = &dir.0;
    let tpm = enrolled_swtpm(d);
    let name_of = |h: &str| {
        let (ok, p) = tool(&tpm.tcti, "tpm2_readpublic", &["-c", h]);
        assert!(ok, "{p}");
        p.lines()
            .find_map(|l| l.strip_prefix("name: "))
            .unwrap()
            .to_owned()
    };
    let (old_did, old_name) = {
        let _enclave = start_enclave_on(d, "tpm", &["--tpm-tcti", &tpm.tcti]);
        let _parent = start_parent(d, &[]);
        let keys = proof_key_handles(&tpm.tcti);
        assert_eq!(keys.len(), 1, "{keys:?}");
        (
            identity(&d.join("agent.sock"))["did"].clone(),
            name_of(&keys[0]),
        )
    };
    let _enclave = start_enclave_on(d, "tpm", &["--tpm-tcti", &tpm.tcti]);
    let _parent = start_parent(d, &[]);
    let new_did = identity(&d.join("agent.sock"))["did"].clone();
    assert_ne!(old_did, new_did, "a new key at every start");
    let keys = proof_key_handles(&tpm.tcti);
    assert_eq!(
        keys.len(),
        1,
        "only the new signer's key is loaded: {keys:?}"
    );
    assert_ne!(name_of(&keys[0]), old_name, "the old proof key was flushed");
    let log = std::fs::read_to_string(d.join("enclave.log")).unwrap();
    assert!(log.contains("flushed transient objects"), "{log}");
}

/// Attack: replay of TPM evidence at `cada-verify serve` under `freshness = "verifier_nonce"`
/// (the default): evidence over a nonce the agent chose, over another verifier's nonce, and
/// over this verifier's nonce once `evidence.max_age_secs` has passed, is refused.
#[test]
fn tpm_evidence_over_an_old_or_foreign_nonce_is_refused_under_nonce_freshness() {
    let dir = TempDir::new("tpma-nonce");
    let d = &dir.0;
    let Signer {
        tpm,
        _enclave,
        _parent,
        sock,
        pcr0,
    } = tpm_signer(d, &[]);
    let pol = policy(d, "p.toml", &tpm.root(), &pcr0, "");
    let short = d.join("short.toml");
    std::fs::write(
        &short,
        format!(
            "[evidence]\nmax_age_secs = 2\n{}",
            std::fs::read_to_string(&pol).unwrap()
        ),
    )
    .unwrap();
    let (_v, port) = start_verifier(d, "verify", &["--policy", short.to_str().unwrap()]);
    let (_o, other) = start_verifier(d, "other", &["--policy", pol.to_str().unwrap()]);
    let try_with = |evidence: &str| {
        let p = mint(&sock, "POST", URL, None, false);
        pop_verify(port, &verify_body(p["dpop"].as_str().unwrap(), evidence))
    };
    // Agent-chosen nonce.
    let own = evidence_for(&sock, "agent-chosen-nonce");
    let (st, v) = try_with(&own);
    assert_ne!(st, 200, "{v}");
    assert_eq!(code_of(&v), "evidence.not_fresh", "{v}");
    // Another verifier's nonce.
    let foreign = evidence_for(&sock, &verifier_nonce(other));
    let (st, v) = try_with(&foreign);
    assert_ne!(st, 200, "{v}");
    assert_eq!(code_of(&v), "evidence.not_fresh", "{v}");
    // This verifier's nonce: accepted, then refused once older than max_age.
    let ev = evidence_for(&sock, &verifier_nonce(port));
    let (st, v) = try_with(&ev);
    assert_eq!((st, v["active"].as_bool()), (200, Some(true)), "{v}");
    std::thread::sleep(Duration::from_millis(3200));
    let (st, v) = try_with(&ev);
    assert_ne!(st, 200, "the evidence of an old nonce replayed: {v}");
    assert_eq!(code_of(&v), "evidence.not_fresh", "{v}");
}

/// Extend a quoted PCR from another process (what a changed boot state, or an attacker
/// measuring something, does).
fn extend_pcr7(tcti: &str) {
    let (ok, out) = tool(
        tcti,
        "tpm2_pcrextend",
        &[&format!("7:sha256={}", "42".repeat(32))],
    );
    assert!(ok, "{out}");
}

/// Attack: a quoted PCR extended after the signer started. The PolicyPCR-bound key must stop
/// signing: no more proofs, no more evidence.
#[test]
fn a_pcr_extended_after_start_stops_tpm_signed_proofs() {
    let dir = TempDir::new("tpma-pcr");
    let d = &dir.0;
    let tpm = enrolled_swtpm(d);
    let _enclave = start_enclave_on(d, "tpm", &["--tpm-tcti", &tpm.tcti]);
    let _parent = start_parent(d, &[]);
    let sock = d.join("agent.sock");
    mint(&sock, "POST", URL, None, true);
    extend_pcr7(&tpm.tcti);
    let body = serde_json::json!({"method": "POST", "url": URL, "with_evidence": false});
    let (st, text) = http(
        &sock,
        "POST",
        "/v1/pop",
        Some(&body.to_string()),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_ne!(st, 200, "a proof signed after the PCR changed: {text}");
}

/// Attack (finding 2): the same with a session key (`--tpm-session`): the TPM key stops, but
/// the software session key keeps signing proofs, and the daemon keeps handing out the
/// evidence quoting the old PCRs, which verifiers (first_seen) accept until `exp` — up to
/// 24 h by the format. Secure: the signer stops (or re-attests) when the PCRs move.
#[test]
fn a_pcr_extended_after_start_stops_session_key_proofs() {
    let dir = TempDir::new("tpma-pcr-session");
    let d = &dir.0;
    let Signer {
        tpm,
        _enclave,
        _parent,
        sock,
        pcr0,
    } = tpm_signer(d, &["--tpm-session", "600"]);
    let (_v, port) = verifier(d, "p.toml", &tpm, &pcr0, "freshness = \"first_seen\"\n");
    let before = mint(&sock, "POST", URL, None, true);
    let (st, v) = pop_verify(
        port,
        &verify_body(
            before["dpop"].as_str().unwrap(),
            before["evidence"].as_str().unwrap(),
        ),
    );
    assert_eq!(st, 200, "{v}");
    extend_pcr7(&tpm.tcti);
    // The signer re-reads the quoted PCRs before a session-key signature at most every second
    // (enclave::platform::tpm::PCR_CHECK_EVERY, the documented bound): wait past it.
    std::thread::sleep(Duration::from_millis(1100));
    let body = serde_json::json!({"method": "POST", "url": URL, "with_evidence": true});
    let (st, text) = http(
        &sock,
        "POST",
        "/v1/pop",
        Some(&body.to_string()),
        Duration::from_secs(10),
    )
    .unwrap();
    if st == 200 {
        let after: serde_json::Value = serde_json::from_str(&text).unwrap();
        let (st, v) = pop_verify(
            port,
            &verify_body(
                after["dpop"].as_str().unwrap(),
                after["evidence"].as_str().unwrap(),
            ),
        );
        assert_ne!(
            (st, v["active"].as_bool()),
            (200, Some(true)),
            "a proof signed after the boot state changed is accepted with the old PCRs: {v}"
        );
    }
}

/// Attack: a session key longer than the policy allows, at cada-verify, cada-gate and
/// cada-sts (same policy file, default `max_session_secs` 900); and longer than the format
/// allows at the signer. Also: `--tcp` on a non-loopback address is refused on tpm.
#[test]
fn a_session_key_longer_than_the_policy_allows_is_refused_everywhere() {
    let dir = TempDir::new("tpma-session-max");
    let d = &dir.0;
    let tpm = enrolled_swtpm(d);
    // Format cap, and the --tcp listener: loopback only.
    let state = d.join("state");
    for (extra, why) in [
        (
            &["--tpm-session", "86401", "--unix", "x.sock"][..],
            "--tpm-session must be 1..=86400",
        ),
        (&["--tcp", "0.0.0.0:45999"][..], "only loopback addresses"),
        (&["--tcp", "[::]:45999"][..], "only loopback addresses"),
    ] {
        let mut args = vec![
            "--platform",
            "tpm",
            "--tpm-tcti",
            &tpm.tcti,
            "--state-dir",
            state.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = run("cada-enclave", &args);
        assert_ne!(code, 0, "{extra:?}: {out}{err}");
        assert!(err.contains(why), "{extra:?}: want {why:?}: {err}");
    }
    let _enclave = start_enclave_on(
        d,
        "tpm",
        &["--tpm-tcti", &tpm.tcti, "--tpm-session", "3600"],
    );
    let gate_port = free_port();
    let sts_port = free_port();
    let issuer = format!("http://127.0.0.1:{sts_port}");
    let _parent = start_parent(d, &[]);
    let sock = d.join("agent.sock");
    let pcr0 = identity(&sock)["measurements"]["TPM_PCR0"]
        .as_str()
        .unwrap()
        .to_owned();
    let pol = d.join("p.toml");
    std::fs::write(
        &pol,
        format!(
            "[tpm]\nroots = [{:?}]\nak_roots = [{:?}]\nfreshness = \"first_seen\"\n\
             [[audience]]\nprefix = \"https://api.example.com/\"\nmeasurements = [{{ TPM_PCR0 = \"{pcr0}\" }}]\n\
             [[audience]]\nprefix = \"http://127.0.0.1:{gate_port}/\"\nmeasurements = [{{ TPM_PCR0 = \"{pcr0}\" }}]\n",
            tpm.root().display().to_string(),
            d.join("ca/tpm-enroll-ca.pem").display().to_string()
        ),
    )
    .unwrap();
    let (_v, port) = start_verifier(d, "verify", &["--policy", pol.to_str().unwrap()]);
    let m = mint(&sock, "POST", URL, None, true);
    let (st, v) = pop_verify(
        port,
        &verify_body(m["dpop"].as_str().unwrap(), m["evidence"].as_str().unwrap()),
    );
    assert_ne!(st, 200, "{v}");
    assert_eq!(code_of(&v), "tpm.session_too_long", "{v}");
    // cada-gate.
    let upstream_file = d.join("upstream.txt");
    std::fs::write(&upstream_file, "upstream").unwrap();
    let upstream = format!(
        "http://127.0.0.1:{}",
        serve_status_file(upstream_file, None)
    );
    let _gate = start_gate(d, "gate", gate_port, &upstream, &pol, &[]);
    let g = mint(
        &sock,
        "GET",
        &format!("http://127.0.0.1:{gate_port}/v1/items"),
        None,
        true,
    );
    let headers = [
        ("DPoP", g["dpop"].as_str().unwrap()),
        ("CADA-Evidence", g["evidence"].as_str().unwrap()),
    ];
    let (st, h, b) = send(gate_port, "GET", "/v1/items", &headers, b"");
    assert_eq!(st, 401, "{h}{b}");
    assert!(h.contains("tpm.session_too_long"), "{h}{b}");
    // cada-sts: the token exchange needs evidence; it is refused the same way.
    let _sts = spawn_ready(
        "cada-sts",
        &[
            "serve",
            "--listen",
            &format!("127.0.0.1:{sts_port}"),
            "--issuer",
            &issuer,
            "--policy",
            pol.to_str().unwrap(),
            "--audit-dir",
            d.join("sts-audit").to_str().unwrap(),
            "--log-format",
            "text",
        ],
        &d.join("sts.log"),
    );
    let did = identity(&sock)["did"].as_str().unwrap().to_owned();
    let (_, key) = keygen(d, "owner");
    let contract = owner_to(
        d,
        "contract.jwt",
        &[
            "grant",
            "--key",
            &key,
            "--subject",
            &did,
            "--audience",
            &issuer,
            "--audience",
            "https://api.example.com/",
            "--method",
            "POST",
            "--valid-for",
            "1h",
            "--no-revocation",
        ],
    );
    let p = mint(&sock, "POST", &format!("{issuer}/token"), None, true);
    let form = format!(
        "grant_type={}&subject_token={contract}&subject_token_type={}&resource=https%3A%2F%2Fapi.example.com%2Fv1",
        GRANT_TYPE_TOKEN_EXCHANGE.replace(':', "%3A"),
        TOKEN_TYPE_CONTRACT.replace(':', "%3A"),
    );
    let headers = [
        ("DPoP", p["dpop"].as_str().unwrap()),
        ("CADA-Evidence", p["evidence"].as_str().unwrap()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let (st, h, b) = send(sts_port, "POST", "/token", &headers, form.as_bytes());
    assert_ne!(st, 200, "{h}{b}");
    assert!(
        b.contains("tpm.session_too_long"),
        "the STS names the session rule: {st} {b}"
    );
}

/// Attack: a proof minted while the session key was valid, presented after the session's
/// `exp` with evidence a verifier already saw (first_seen): verifiers rely on the evidence
/// only until `exp` (docs/tpm.md), so it is refused.
#[test]
fn a_session_keys_proof_is_not_accepted_after_the_sessions_exp() {
    let dir = TempDir::new("tpma-session-exp");
    let d = &dir.0;
    let Signer {
        tpm,
        _enclave,
        _parent,
        sock,
        pcr0,
    } = tpm_signer(d, &["--tpm-session", "4"]);
    let (_v, port) = verifier(d, "p.toml", &tpm, &pcr0, "freshness = \"first_seen\"\n");
    let first = mint(&sock, "POST", URL, None, true);
    let ev = first["evidence"].as_str().unwrap().to_owned();
    let exp = {
        let env = EvidenceEnvelope::from_header(&ev).unwrap();
        TpmDocument::from_cbor(&env.document)
            .unwrap()
            .session
            .unwrap()
            .exp
    };
    let (st, v) = pop_verify(port, &verify_body(first["dpop"].as_str().unwrap(), &ev));
    assert_eq!(st, 200, "{v}");
    let later = mint(&sock, "POST", URL, None, false);
    while now_secs() <= exp {
        std::thread::sleep(Duration::from_millis(250));
    }
    let (st, v) = pop_verify(port, &verify_body(later["dpop"].as_str().unwrap(), &ev));
    assert_ne!(st, 200, "a session-key proof accepted after exp: {v}");
}
