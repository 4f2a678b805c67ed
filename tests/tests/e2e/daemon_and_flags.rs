//! The real binaries' boot-time rules and the daemon's answers: URL prefixes checked at
//! boot, algorithms chosen at boot, the TCP listener behind a private bearer token, every
//! error a problem document, and a stalled enclave answered 504 by the deadline.
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cada_attestation_verifier::pop::PopRequest;
use cada_attestation_verifier::replay::MemoryReplayStore;
use cada_attestation_verifier::UnixTime;
use cada_e2e::*;
use cada_protocol::envelope::EvidenceEnvelope;

const TOKEN: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// Runs a binary that must exit on its own; returns (exit code, stderr). Killed (and the
/// test failed) if it is still running after 20 s.
fn run_to_exit(name: &str, args: &[&str]) -> (i32, String) {
    let mut child = Command::new(bin(name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            let mut out = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            return (status.code().unwrap_or(-1), format!("{out}{err}"));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{name} {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn token_file(dir: &Path, name: &str, mode: u32) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p.to_str().unwrap().to_owned()
}

/// One HTTP/1.1 request over loopback TCP with extra headers; (status, headers, body).
fn tcp_request(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: cada\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let (h, b) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = h.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, h.to_owned(), b.to_owned())
}

/// The problem's (status, code) and detail, from a JSON body.
fn problem(status: u16, body: &str) -> (u16, String, String) {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert_eq!(v["status"], status, "{v}");
    (
        status,
        v["type"]
            .as_str()
            .unwrap()
            .trim_start_matches("urn:cada:problem:")
            .to_owned(),
        v["detail"].as_str().unwrap().to_owned(),
    )
}

fn pop_body(url: &str) -> String {
    serde_json::json!({"method": "GET", "url": url}).to_string()
}

#[test]
fn a_bad_url_prefix_refuses_to_start_naming_the_flag_and_the_normal_form() {
    let dir = TempDir::new("prefix-boot");
    let sock = dir.0.join("e.sock");
    for (prefix, expect) in [
        (
            "https://API.example.com:443/v1",
            "\"https://api.example.com/v1\"",
        ),
        (
            "https://api.example.com/a/../v1",
            "\"https://api.example.com/v1\"",
        ),
        ("https://u@api.example.com/", "userinfo"),
        ("https://api.example.com/v1#x", "fragment"),
        ("https://api.example.com/v1?x=1", "query"),
        ("http://api.example.com/", "https://api.example.com/"),
        ("api.example.com", "absolute"),
    ] {
        let (code, out) = run_to_exit(
            "cada-enclave",
            &[
                "--platform",
                "sim",
                "--unix",
                sock.to_str().unwrap(),
                "--allow-url-prefix",
                prefix,
            ],
        );
        assert_eq!(code, 2, "{prefix}: {out}");
        assert!(out.contains("--allow-url-prefix"), "{prefix}: {out}");
        assert!(out.contains(expect), "{prefix}: {out}");
    }
}

#[test]
fn the_enclave_help_lists_every_algorithm_chosen_at_boot() {
    let (code, help) = run_to_exit("cada-enclave", &["--help"]);
    assert_eq!(code, 0);
    for alg in ["EdDSA", "Ed25519", "ES256", "ES384"] {
        assert!(help.contains(alg), "--help does not mention {alg}:\n{help}");
    }
    let (code, out) = run_to_exit("cada-enclave", &["--alg", "RS256", "--platform", "sim"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("ES256"), "{out}");
}

#[test]
fn es256_at_boot_and_prefixes_matched_by_origin_and_segment_through_the_daemon() {
    let dir = TempDir::new("es256");
    let _e = start_enclave(
        &dir.0,
        &[
            "--alg",
            "ES256",
            "--allow-url-prefix",
            "https://api.example.com/v1",
        ],
    );
    let _p = start_parent(&dir.0, &[]);
    let sock = dir.0.join("agent.sock");
    let url = "https://api.example.com/v1/orders";
    let ans = mint(&sock, "GET", url, None, true);
    let dpop = ans["dpop"].as_str().unwrap();
    let parsed = cada_protocol::token::parse_compact(dpop).unwrap();
    assert_eq!(parsed.header.alg, "ES256");
    assert_eq!(parsed.header.jwk.crv, "P-256");
    let env = EvidenceEnvelope::from_header(ans["evidence"].as_str().unwrap()).unwrap();
    let root = std::fs::read(dir.0.join("state/sim-root.der")).unwrap();
    let v = verifier_trusting(&[root], test_pop_config());
    v.verify(
        dpop,
        &PopRequest {
            method: "GET",
            url,
            access_token: None,
            expected_nonce: None,
            evidence: Some(&env),
        },
        &MemoryReplayStore::default(),
        UnixTime::now(),
    )
    .expect("an ES256 proof verifies");
    let post = |u: &str| {
        let (st, body) = http(
            &sock,
            "POST",
            "/v1/pop",
            Some(&pop_body(u)),
            Duration::from_secs(10),
        )
        .unwrap();
        problem(st, &body)
    };
    for u in [
        "https://api.example.com.evil.net/v1/x",
        "https://api.example.com/v10",
        "https://api.example.com/",
    ] {
        let (st, code, _) = post(u);
        assert_eq!((st, code.as_str()), (403, "policy-denied"), "{u}");
    }
    let (st, code, detail) = post("https://api.example.com@evil.net/v1/x");
    assert_eq!((st, code.as_str()), (400, "bad-request"));
    assert!(detail.contains("userinfo"), "{detail}");
    let (st, code, detail) = post("https://API.example.com:443/v1/x");
    assert_eq!((st, code.as_str()), (400, "bad-request"));
    assert!(detail.contains("https://api.example.com/v1/x"), "{detail}");
    let (_, code, detail) = post("https://api.example.com/v1/x#frag");
    assert_eq!(code, "bad-request");
    assert!(detail.contains("fragment"), "{detail}");
}

#[test]
fn the_tcp_listener_needs_a_private_token_file_and_a_loopback_address() {
    let dir = TempDir::new("tcp-auth");
    let sock = dir.0.join("agent.sock");
    let sock = sock.to_str().unwrap();
    let good = token_file(&dir.0, "token", 0o600);
    let loose = token_file(&dir.0, "loose", 0o644);
    let listen = format!("127.0.0.1:{}", free_port());
    let serve = |extra: &[&str]| {
        let mut a = vec!["serve", "--enclave", "tcp:127.0.0.1:9", "--socket", sock];
        a.extend_from_slice(extra);
        run_to_exit("cada-parent", &a)
    };
    let (code, out) = serve(&["--listen", &listen]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("--auth-token-file") && out.contains("every local user"),
        "{out}"
    );
    let (code, out) = serve(&["--listen", &listen, "--auth-token-file", &loose]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("chmod 600"), "{out}");
    let (code, out) = serve(&["--listen", "0.0.0.0:8787", "--auth-token-file", &good]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("loopback") && out.contains("in clear"),
        "{out}"
    );
    assert!(!Path::new(sock).exists(), "nothing was bound");

    // With a private token file: TCP takes only the token, the unix socket needs none.
    let _e = start_enclave(&dir.0, &[]);
    let port: u16 = listen.rsplit(':').next().unwrap().parse().unwrap();
    let _p = start_parent(&dir.0, &["--listen", &listen, "--auth-token-file", &good]);
    let body = pop_body("https://api.example.com/x");
    let (st, h, b) = tcp_request(port, "/v1/pop", &[], &body);
    assert_eq!(problem(st, &b).1, "unauthorized");
    assert!(
        h.to_ascii_lowercase().contains("www-authenticate: bearer"),
        "{h}"
    );
    let (st, _, b) = tcp_request(
        port,
        "/v1/pop",
        &[("Authorization", "Bearer not-the-token")],
        &body,
    );
    assert_eq!(problem(st, &b).1, "unauthorized");
    let auth = format!("Bearer {TOKEN}");
    let (st, _, b) = tcp_request(port, "/v1/pop", &[("Authorization", &auth)], &body);
    assert_eq!(st, 200, "{b}");
    mint(
        &dir.0.join("agent.sock"),
        "GET",
        "https://api.example.com/x",
        None,
        false,
    );
}

#[test]
fn a_stalled_enclave_is_answered_504_by_the_deadline_and_does_not_wedge_the_daemon() {
    let dir = TempDir::new("stall");
    // A fake enclave that accepts connections and never answers.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let enclave = format!("tcp:{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming() {
            held.push(s);
        }
    });
    let sock = dir.0.join("agent.sock");
    let _p = spawn_ready(
        "cada-parent",
        &[
            "serve",
            "--enclave",
            &enclave,
            "--socket",
            sock.to_str().unwrap(),
            "--timeout-ms",
            "300",
        ],
        &dir.0.join("parent.log"),
    );
    let body = pop_body("https://api.example.com/x");
    for _ in 0..3 {
        let t = Instant::now();
        let (st, b) = http(
            &sock,
            "POST",
            "/v1/pop",
            Some(&body),
            Duration::from_secs(10),
        )
        .unwrap();
        let took = t.elapsed();
        assert_eq!(problem(st, &b).1, "enclave-timeout");
        // Bounded, not fast: 300 ms deadline, 2.5 s of slack for a loaded machine.
        assert!(took < Duration::from_millis(2800), "{took:?}");
    }
    let (st, b) = http(&sock, "GET", "/readyz", None, Duration::from_secs(10)).unwrap();
    assert_eq!(problem(st, &b).1, "not-ready");
}

/// Issue 21: every CLI writes into a pipe whose reader is gone (`cada-verify … | head -1`)
/// and exits quietly with status 141 (128 + SIGPIPE), where before it panicked (status 101,
/// "failed printing to stdout", a backtrace hint). The reader is a socket pair's far end,
/// closed before the child starts, so the first write fails every time.
#[test]
fn every_cli_exits_quietly_into_a_closed_pipe() {
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;

    let dir = TempDir::new("closed-pipe");
    let d = &dir.0;
    let p = |name: &str| d.join(name).to_str().unwrap().to_owned();
    std::fs::write(d.join("kernel"), [7u8; 512]).unwrap();
    std::fs::write(d.join("init"), [9u8; 512]).unwrap();
    std::fs::write(
        d.join("policy.toml"),
        format!(
            "[[audience]]\nprefix = \"http://127.0.0.1/\"\nmeasurements = [{{ PCR0 = \"{}\" }}]\n",
            "0".repeat(96)
        ),
    )
    .unwrap();
    let cases: [(&str, Vec<String>); 6] = [
        (
            "cada-verify",
            vec![
                "did".into(),
                "resolve".into(),
                "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp".into(),
            ],
        ),
        (
            "cada-owner",
            vec!["keygen".into(), "--out".into(), p("owner")],
        ),
        (
            "cada-eif",
            vec![
                "--kernel".into(),
                p("kernel"),
                "--init".into(),
                p("init"),
                "--output".into(),
                p("out.eif"),
            ],
        ),
        (
            "cada-sts",
            vec!["keygen".into(), "--out".into(), p("sts.pem")],
        ),
        (
            "cada-parent",
            vec![
                "proxy".into(),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--upstream".into(),
                "http://127.0.0.1:9/mcp".into(),
                "--socket".into(),
                p("absent.sock"),
            ],
        ),
        (
            "cada-gate",
            vec![
                "--upstream".into(),
                "http://127.0.0.1:9".into(),
                "--policy".into(),
                p("policy.toml"),
                "--audit-dir".into(),
                p("gate-audit"),
                "--listen".into(),
                "127.0.0.1:0".into(),
            ],
        ),
    ];
    for (name, args) in cases {
        let (ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        let mut child = Command::new(bin(name))
            .args(&args)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(OwnedFd::from(ours)))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{name} {args:?} kept running with its stdout closed");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(status.code(), Some(141), "{name} {args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{name}: {err}"
        );
    }
}
