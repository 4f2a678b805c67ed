//! `--platform tpm` end to end on swtpm (issue 25): a software TPM started by the test in a
//! directory it owns (scripts/swtpm.sh: an EK certificate from swtpm's own local CA), the
//! TPM enrolled (`cada-enclave tpm enroll`: AK under the EK, credential activation, an AK
//! certificate naming the EK), the signer on it with its proof key made in the TPM, the
//! daemon in front; its proofs and TPM evidence are accepted by `cada-verify`, `cada-sts`
//! and `cada-gate` under a policy that adds swtpm's CA as a TPM root (and the enrollment CA
//! as an AK root) for the tpm platform only, and refused under the default policy.
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cada_e2e::mcp_interop::{send, start_gate};
use cada_e2e::swtpm::{enroll, Swtpm};
use cada_e2e::*;
use cada_protocol::access_token::{GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_CONTRACT};
use cada_protocol::envelope::{EvidenceEnvelope, Platform};
use cada_protocol::tpm::TpmDocument;

fn run(name: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin(name)).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// swtpm in `d/swtpm`, enrolled into `d/state` by the enrollment CA in `d/ca`.
fn enrolled_swtpm(d: &Path) -> Swtpm {
    let tpm = Swtpm::start(&d.join("swtpm"));
    let (code, out, err) = enroll(&tpm, &d.join("state"), &d.join("ca"));
    assert_eq!(code, 0, "cada-enclave tpm enroll: {err}");
    assert!(out.starts_with("enrolled: EK "), "{out}");
    tpm
}

fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn a_signer_on_swtpm_is_accepted_by_verify_sts_and_gate_only_where_swtpm_is_trusted() {
    let dir = TempDir::new("tpm");
    let d = &dir.0;
    let tpm = enrolled_swtpm(d);
    let _enclave = start_enclave_on(d, "tpm", &["--tpm-tcti", &tpm.tcti]);
    let gate_port = free_port();
    let sts_port = free_port();
    let issuer = format!("http://127.0.0.1:{sts_port}");
    let _parent = start_parent(d, &["--sts", &issuer]);
    let sock = d.join("agent.sock");

    // The signer's identity: an ES256 key (a TPM has no Ed25519), platform tpm, PCRs.
    let (_, id) = http(&sock, "GET", "/v1/identity", None, Duration::from_secs(5)).unwrap();
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    assert_eq!(id["platform"], "tpm", "{id}");
    assert!(
        id["did"].as_str().unwrap().starts_with("did:key:zDn"),
        "{id}"
    );
    let pcr0 = id["measurements"]["TPM_PCR0"].as_str().unwrap().to_owned();
    let pcr7 = id["measurements"]["TPM_PCR7"].as_str().unwrap().to_owned();
    let enclave_did = id["did"].as_str().unwrap().to_owned();

    // The owner locks it and grants the gate's API and the STS's token endpoint.
    let (owner_did, key) = keygen(d, "owner");
    owner_to(
        d,
        "lock.jwt",
        &["lock", "--key", &key, "--enclave", &enclave_did],
    );
    let lock = d.join("lock.jwt");
    assert_eq!(
        parent(&sock, &["owner", "lock", lock.to_str().unwrap()]).0,
        0
    );
    let api = format!("http://127.0.0.1:{gate_port}/v1");
    let contract = owner_to(
        d,
        "contract.jwt",
        &[
            "grant",
            "--key",
            &key,
            "--subject",
            &enclave_did,
            "--audience",
            &issuer,
            "--audience",
            &api,
            "--audience",
            "https://api.example.com/",
            "--method",
            "GET",
            "--method",
            "POST",
            "--valid-for",
            "1h",
            "--no-revocation",
        ],
    );
    let installed = d.join("contract.jwt");
    let (code, _, err) = parent(&sock, &["contract", "install", installed.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");

    // A proof with TPM evidence, in the format of cada_protocol::tpm.
    let url = "https://api.example.com/v1/orders";
    let a = mint(&sock, "POST", url, None, true);
    let ev_b64 = a["evidence"].as_str().unwrap().to_owned();
    let env = EvidenceEnvelope::from_header(&ev_b64).unwrap();
    assert_eq!(env.platform, Platform::Tpm);
    let doc = TpmDocument::from_cbor(&env.document).unwrap();
    assert_eq!(doc.pcrs.len(), 8, "PCRs 0–7 of the SHA-256 bank by default");
    assert!(doc.session.is_none(), "each proof signed in the TPM");
    assert_eq!(
        env.certs.len(),
        3,
        "AK certificate, EK certificate, swtpm's intermediate"
    );
    let ev_file = d.join("evidence.b64");
    std::fs::write(&ev_file, &ev_b64).unwrap();

    // cada-verify tpm evidence: valid with swtpm's CA and the enrollment CA given, refused
    // on the pinned roots alone.
    let ak_root = d.join("ca/tpm-enroll-ca.pem");
    let (code, out, err) = run(
        "cada-verify",
        &[
            "tpm",
            "evidence",
            ev_file.to_str().unwrap(),
            "--ek-root",
            tpm.root().to_str().unwrap(),
            "--ak-root",
            ak_root.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("VALID"), "{out}");
    let (code, out, err) = run(
        "cada-verify",
        &["tpm", "evidence", ev_file.to_str().unwrap()],
    );
    assert_ne!(
        code, 0,
        "the default roots refuse swtpm evidence: {out}{err}"
    );
    assert!(out.contains("tpm.ak_untrusted_root"), "{out}{err}");
    // The enrollment CA alone is not enough: the EK must chain to a trusted TPM root.
    let (code, out, err) = run(
        "cada-verify",
        &[
            "tpm",
            "evidence",
            ev_file.to_str().unwrap(),
            "--ak-root",
            ak_root.to_str().unwrap(),
        ],
    );
    assert_ne!(code, 0, "{out}{err}");
    assert!(out.contains("tpm.ek_untrusted_root"), "{out}{err}");

    // One policy for the three services: swtpm's CA as a TPM root for the tpm platform only.
    let measurements = format!("[{{ TPM_PCR0 = \"{pcr0}\", TPM_PCR7 = \"{pcr7}\" }}]");
    let tpm_roots = format!(
        "[tpm]\nroots = [{:?}]\nak_roots = [{:?}]\nfreshness = \"first_seen\"\n",
        tpm.root().display().to_string(),
        ak_root.display().to_string()
    );
    let audiences = format!(
        "[[audience]]\nprefix = \"https://api.example.com/\"\nmeasurements = {measurements}\nowners = [\"{owner_did}\"]\n\
         [[audience]]\nprefix = \"http://127.0.0.1:{gate_port}/\"\nmeasurements = {measurements}\n"
    );
    let policy = d.join("policy.toml");
    std::fs::write(&policy, format!("{tpm_roots}{audiences}")).unwrap();
    // The same audiences without the TPM roots: what a default deployment trusts.
    let default_policy = d.join("default-policy.toml");
    std::fs::write(&default_policy, &audiences).unwrap();
    // swtpm's CA given as a Nitro root does not make TPM evidence pass.
    let wrong_policy = d.join("wrong-policy.toml");
    std::fs::write(
        &wrong_policy,
        format!(
            "[roots]\nnitro = [{:?}]\n{audiences}",
            tpm.root().display().to_string()
        ),
    )
    .unwrap();

    // cada-verify serve.
    let (_v, vport) = start_verifier(d, "verify", &["--policy", policy.to_str().unwrap()]);
    let (_vd, vdport) = start_verifier(
        d,
        "verify-default",
        &["--policy", default_policy.to_str().unwrap()],
    );
    let (_vw, vwport) = start_verifier(
        d,
        "verify-wrong",
        &["--policy", wrong_policy.to_str().unwrap()],
    );
    let body = |a: &serde_json::Value| {
        serde_json::json!({
            "dpop": a["dpop"], "method": "POST", "url": url, "evidence": a["evidence"],
            "contract": contract, "body": "",
        })
    };
    let (st, v) = pop_verify(vport, &body(&a));
    assert_eq!((st, v["active"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(v["platform"], "tpm", "{v}");
    for port in [vdport, vwport] {
        let (st, v) = pop_verify(port, &body(&mint(&sock, "POST", url, None, true)));
        assert_ne!(st, 200, "{v}");
        assert_eq!(v["active"], false, "{v}");
        let code = v["reasons"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(code.starts_with("tpm."), "refused for the TPM roots: {v}");
    }

    // cada-gate in front of an upstream: a GET with the proof and the evidence passes.
    let upstream_file = d.join("upstream.txt");
    std::fs::write(&upstream_file, "hello from upstream").unwrap();
    let upstream = format!(
        "http://127.0.0.1:{}",
        serve_status_file(upstream_file, None)
    );
    let _gate = start_gate(d, "gate", gate_port, &upstream, &policy, &[]);
    let gate_url = format!("http://127.0.0.1:{gate_port}/v1/items");
    let g = mint(&sock, "GET", &gate_url, None, true);
    let headers = [
        ("DPoP", g["dpop"].as_str().unwrap()),
        ("CADA-Evidence", g["evidence"].as_str().unwrap()),
    ];
    let (st, _, b) = send(gate_port, "GET", "/v1/items", &headers, b"");
    assert_eq!(st, 200, "{b}");
    assert_eq!(b, "hello from upstream");
    let default_gate_port = free_port();
    let _gate_default = start_gate(
        d,
        "gate-default",
        default_gate_port,
        &upstream,
        &default_policy,
        &[],
    );
    let g = mint(&sock, "GET", &gate_url, None, true);
    let headers = [
        ("DPoP", g["dpop"].as_str().unwrap()),
        ("CADA-Evidence", g["evidence"].as_str().unwrap()),
        ("Host", &format!("127.0.0.1:{gate_port}")),
    ];
    let (st, h, b) = send(default_gate_port, "GET", "/v1/items", &headers[..2], b"");
    assert_eq!(st, 401, "the default policy refuses swtpm evidence: {h}{b}");
    assert!(h.contains("tpm."), "{h}{b}");

    // cada-sts: the exchange of (evidence + proof + contract) for a token for the API.
    let _sts = spawn_ready(
        "cada-sts",
        &[
            "serve",
            "--listen",
            &format!("127.0.0.1:{sts_port}"),
            "--issuer",
            &issuer,
            "--policy",
            policy.to_str().unwrap(),
            "--audit-dir",
            d.join("sts-audit").to_str().unwrap(),
            "--log-format",
            "text",
        ],
        &d.join("sts.log"),
    );
    let exchange = |port: u16| {
        let p = mint(&sock, "POST", &format!("{issuer}/token"), None, true);
        let form = [
            ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
            ("subject_token", contract.as_str()),
            ("subject_token_type", TOKEN_TYPE_CONTRACT),
            ("resource", "https://api.example.com/v1"),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&");
        let head = format!(
            "POST /token HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nDPoP: {}\r\nCADA-Evidence: {}\r\n\r\n",
            form.len(),
            p["dpop"].as_str().unwrap(),
            p["evidence"].as_str().unwrap()
        );
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(form.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status: u16 = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (
            status,
            serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default(),
        )
    };
    let (st, t) = exchange(sts_port);
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["token_type"], "DPoP", "{t}");
    // An STS on the default policy refuses the same exchange.
    let sts_default_port = free_port();
    let _sts_default = spawn_ready(
        "cada-sts",
        &[
            "serve",
            "--listen",
            &format!("127.0.0.1:{sts_default_port}"),
            "--issuer",
            &issuer,
            "--policy",
            default_policy.to_str().unwrap(),
            "--audit-dir",
            d.join("sts-default-audit").to_str().unwrap(),
            "--log-format",
            "text",
        ],
        &d.join("sts-default.log"),
    );
    let (st, t) = exchange(sts_default_port);
    assert_ne!(st, 200, "{t}");
    assert!(
        t["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("tpm."),
        "{t}"
    );
}

#[test]
fn a_session_key_certified_by_the_tpm_key_is_accepted_until_a_policy_refuses_session_keys() {
    let dir = TempDir::new("tpm-session");
    let d = &dir.0;
    let tpm = enrolled_swtpm(d);
    let _enclave = start_enclave_on(
        d,
        "tpm",
        &[
            "--tpm-tcti",
            &tpm.tcti,
            "--tpm-session",
            "600",
            "--alg",
            "EdDSA",
        ],
    );
    let _parent = start_parent(d, &[]);
    let sock = d.join("agent.sock");
    let (_, id) = http(&sock, "GET", "/v1/identity", None, Duration::from_secs(5)).unwrap();
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    assert!(
        id["did"].as_str().unwrap().starts_with("did:key:z6Mk"),
        "the proof key is the EdDSA session key: {id}"
    );
    let url = "https://api.example.com/v1/orders";
    let a = mint(&sock, "POST", url, None, true);
    let env = EvidenceEnvelope::from_header(a["evidence"].as_str().unwrap()).unwrap();
    let doc = TpmDocument::from_cbor(&env.document).unwrap();
    let s = doc
        .session
        .expect("the evidence carries the session statement");
    assert_eq!(s.exp - s.nbf, 600);
    let ev_file = d.join("evidence.b64");
    std::fs::write(&ev_file, a["evidence"].as_str().unwrap()).unwrap();
    let ak_root = d.join("ca/tpm-enroll-ca.pem");
    let (code, out, err) = run(
        "cada-verify",
        &[
            "tpm",
            "evidence",
            ev_file.to_str().unwrap(),
            "--ek-root",
            tpm.root().to_str().unwrap(),
            "--ak-root",
            ak_root.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("VALID"), "{out}");

    let pcr0 = id["measurements"]["TPM_PCR0"].as_str().unwrap().to_owned();
    let policy = |tpm_extra: &str| {
        let p = d.join(format!("policy-{}.toml", tpm_extra.len()));
        std::fs::write(
            &p,
            format!(
                "[tpm]\nroots = [{:?}]\nak_roots = [{:?}]\nfreshness = \"first_seen\"\n{tpm_extra}\
                 [[audience]]\nprefix = \"https://api.example.com/\"\nmeasurements = [{{ TPM_PCR0 = \"{pcr0}\" }}]\n",
                tpm.root().display().to_string(),
                ak_root.display().to_string()
            ),
        )
        .unwrap();
        p
    };
    let allow = policy("");
    let refuse = policy("session_keys = false\n");
    let too_short = policy("max_session_secs = 300\n");
    let (_v, port) = start_verifier(d, "v", &["--policy", allow.to_str().unwrap()]);
    let (_r, rport) = start_verifier(d, "r", &["--policy", refuse.to_str().unwrap()]);
    let (_s, sport) = start_verifier(d, "s", &["--policy", too_short.to_str().unwrap()]);
    let body = |a: &serde_json::Value| serde_json::json!({"dpop": a["dpop"], "method": "POST", "url": url, "evidence": a["evidence"]});
    let (st, v) = pop_verify(port, &body(&a));
    assert_eq!((st, v["active"].as_bool()), (200, Some(true)), "{v}");
    for (port, code) in [
        (rport, "tpm.session_refused"),
        (sport, "tpm.session_too_long"),
    ] {
        let (st, v) = pop_verify(port, &body(&mint(&sock, "POST", url, None, true)));
        assert_ne!(st, 200, "{v}");
        assert_eq!(v["reasons"][0]["code"], code, "{v}");
    }
}

#[test]
fn a_firmware_event_log_replayed_into_swtpm_travels_with_the_evidence_and_must_match_the_quote() {
    use cada_attestation_verifier::tpm::eventlog::parse_event_log;
    let dir = TempDir::new("tpm-log");
    let d = &dir.0;
    let tpm = enrolled_swtpm(d);
    // A real machine's firmware log (keylime's fixture, with secure boot): its SHA-256
    // extends are replayed into swtpm, as that machine's firmware did into its TPM.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/tpm/eventlog");
    let log_path = fixtures.join("EL02_binary_bios_measurements-secureboot");
    let log = parse_event_log(&std::fs::read(&log_path).unwrap()).unwrap();
    const EV_NO_ACTION: u32 = 3;
    let mut specs = Vec::new();
    for e in log.events.iter().filter(|e| e.event_type != EV_NO_ACTION) {
        if let Some((_, dg)) = e.digests.iter().find(|(h, _)| *h == 0x000B) {
            specs.push(format!("{}:sha256={}", e.pcr, hex::encode(dg)));
        }
    }
    assert!(specs.len() > 10, "{} SHA-256 extends", specs.len());
    let out = Command::new("tpm2_pcrextend")
        .args(["-T", &tpm.tcti])
        .args(&specs)
        .output()
        .expect("tpm2_pcrextend (tpm2-tools, installed by scripts/test.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // swtpm starts PCR 0 at locality 0; a log whose firmware started at another locality
    // cannot match it there, so PCR 0 is quoted only when the localities agree.
    let pcrs = if log.startup_locality == 0 {
        "0,1,2,3,4,5,6,7"
    } else {
        "1,2,3,4,5,6,7"
    };
    let _enclave = start_enclave_on(
        d,
        "tpm",
        &[
            "--tpm-tcti",
            &tpm.tcti,
            "--tpm-pcrs",
            pcrs,
            "--tpm-event-log",
            log_path.to_str().unwrap(),
        ],
    );
    let _parent = start_parent(d, &[]);
    let a = mint(
        &d.join("agent.sock"),
        "GET",
        "https://api.example.com/v1",
        None,
        true,
    );
    let env = EvidenceEnvelope::from_header(a["evidence"].as_str().unwrap()).unwrap();
    let ak_root = d.join("ca/tpm-enroll-ca.pem");
    let verify = |env: &EvidenceEnvelope, name: &str| {
        let f = d.join(name);
        std::fs::write(&f, env.to_header()).unwrap();
        run(
            "cada-verify",
            &[
                "tpm",
                "evidence",
                f.to_str().unwrap(),
                "--ek-root",
                tpm.root().to_str().unwrap(),
                "--ak-root",
                ak_root.to_str().unwrap(),
            ],
        )
    };
    let (code, out, err) = verify(&env, "ev.b64");
    assert_eq!(code, 0, "{out}{err}");
    let want = format!("replay matches PCRs [{}]", pcrs.replace(',', ", "));
    assert!(
        out.contains("event log:") && out.contains(&want),
        "{want}: {out}"
    );
    // Another machine's log does not replay to these PCRs: refused.
    let mut doc = TpmDocument::from_cbor(&env.document).unwrap();
    doc.log = Some(std::fs::read(fixtures.join("EL01_binary_bios_measurements")).unwrap());
    let mut other = env.clone();
    other.document = doc.to_cbor();
    let (code, out, err) = verify(&other, "other.b64");
    assert_ne!(code, 0, "{out}{err}");
    assert!(out.contains("tpm.eventlog_mismatch"), "{out}{err}");
}

/// `cada-verify tpm evidence --require-key-policy` (the library's `[tpm] require_key_policy`
/// from the command line): a signer's key made without a policy (`--tpm-key-policy none`:
/// the TPM signs with it in any boot state) is refused `tpm.key_policy`; the key
/// `cada-enclave` makes by default (PolicyPCR then PolicyAuthValue over the quoted PCRs) is
/// accepted. Without the flag both are valid.
#[test]
fn cada_verify_tpm_require_key_policy_refuses_a_key_without_policy_and_accepts_the_default() {
    let dir = TempDir::new("tpm-key-policy");
    let d = &dir.0;
    let tpm = enrolled_swtpm(d);
    let ak_root = d.join("ca/tpm-enroll-ca.pem");
    let ek_root = tpm.root();
    for (key_policy, refused) in [("none", true), ("pcr", false)] {
        let ev_file = d.join(format!("evidence-{key_policy}.b64"));
        {
            let _enclave = start_enclave_on(
                d,
                "tpm",
                &["--tpm-tcti", &tpm.tcti, "--tpm-key-policy", key_policy],
            );
            let _parent = start_parent(d, &[]);
            let a = mint(
                &d.join("agent.sock"),
                "POST",
                "https://api.example.com/v1/orders",
                None,
                true,
            );
            std::fs::write(&ev_file, a["evidence"].as_str().unwrap()).unwrap();
        }
        let verify = |extra: &[&str]| {
            let mut args = vec![
                "tpm",
                "evidence",
                ev_file.to_str().unwrap(),
                "--ek-root",
                ek_root.to_str().unwrap(),
                "--ak-root",
                ak_root.to_str().unwrap(),
                "--json",
            ];
            args.extend_from_slice(extra);
            let (code, out, err) = run("cada-verify", &args);
            let v: serde_json::Value =
                serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
            (code, v)
        };
        let (code, v) = verify(&[]);
        assert_eq!(
            (code, &v["valid"]),
            (0, &serde_json::json!(true)),
            "--tpm-key-policy {key_policy}, no flag: {v}"
        );
        let (code, v) = verify(&["--require-key-policy"]);
        if refused {
            assert_ne!(code, 0, "{v}");
            assert_eq!(v["errors"][0]["code"], "tpm.key_policy", "{v}");
        } else {
            assert_eq!(
                (code, &v["valid"]),
                (0, &serde_json::json!(true)),
                "the default key, with the flag: {v}"
            );
            assert_ne!(v["tpm"]["key_auth_policy"], "", "{v}");
        }
    }
}
