//! Secret calls end to end (issue 22 acceptance, E's part): the real binaries on `sim` and
//! `sim-snp` — `cada-enclave --egress` with development secrets (sim only; see the note
//! below), `cada-parent serve --egress-listen` relaying the enclave's TLS, `cada-parent proxy
//! --secret` as the agent's endpoint — against a real HTTPS upstream on loopback with a
//! throwaway CA (cada-net's `test-tls`) that records every request it receives.
//!
//! What each test proves:
//! * the upstream receives the credential, in the sealed format, with `Host` = the sealed
//!   origin; every byte the agent can see — every answer and refusal from the proxy and the
//!   daemon, the logs of the daemon, the proxy and the enclave, the proxy's audit log, the
//!   proxy's and the test's environment — is searched for the secret raw, base64, base64url,
//!   hex and percent-encoded: it appears nowhere;
//! * the agent's attempts to draw the secret out, each with what happens to it: a redirect
//!   to the agent's own host (the 3xx is returned, never followed: the agent's listener gets
//!   no connection), a `Host` override (daemon API: stripped; through the proxy the proxy's
//!   own Host rule applies and `X-Forwarded-Host`/`Forwarded` are stripped), CR/LF in a
//!   header (through the proxy: a bare CR is refused by its HTTP parser, 400; through the
//!   daemon API: `secret.header`), an upstream endpoint that echoes request headers (the
//!   whole answer is refused, 502 `secret.reflected`: never rewritten);
//! * refusals, each with its stable code: a secret the enclave does not hold
//!   (`secret.unknown`), one it holds but no contract grants (`secret.not_granted`), a method
//!   or a path outside the grant (`secret.method`, `secret.path`, the path tricks of issue 21
//!   with their `url.*` code in the detail), a credential endpoint (`secret.credential_endpoint`),
//!   a placeholder for another secret (`secret.placeholder_elsewhere`), an expired contract
//!   (`contract.expired`), a revoked one (`contract.revoked` at install, then the call
//!   `secret.not_granted`: a revoked contract is gone), an upstream that answers plain HTTP on
//!   the https port (`secret.tls`, no downgrade: nothing reaches it in clear);
//! * a hostile relay that answers with a certificate from a CA the owner did not name (a man
//!   in the middle): `secret.tls`, and the relay gets no plaintext.
//!
//! The secrets are real sealed bundles: sealed by the owner to the enclave's attested HPKE
//! key with `cada_secrets::seal_bundle` (the library under `cada-owner seal`) and installed
//! through the host with `cada-parent secret install`; sim and sim-snp accept them only with
//! the enclave's `--dev-secrets` (their keys live in host memory).
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use cada_e2e::{
    free_port, http, keygen, owner_to, parent, spawn_ready, start_enclave_on, start_parent, Proc,
    TempDir,
};

/// What the upstream received: one request head (and body) per entry.
type Seen = Arc<Mutex<Vec<String>>>;

fn secret_value() -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("ghp_E2e{n:x}Zq{:x}", std::process::id())
}

/// Every spelling of `secret` an agent might decode.
fn spellings(secret: &str) -> Vec<String> {
    let b = secret.as_bytes();
    let pct: String = b
        .iter()
        .map(|c| {
            if c.is_ascii_alphanumeric() || b"-._~".contains(c) {
                char::from(*c).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect();
    vec![
        secret.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(b),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
        hex::encode(b),
        hex::encode_upper(b),
        pct,
    ]
}

fn assert_absent(what: &str, bytes: &[u8], secret: &str) {
    let text = String::from_utf8_lossy(bytes);
    for s in spellings(secret) {
        assert!(!text.contains(&s), "{what} holds the secret (as {s:?})");
    }
}

/// The base64 DER of a PEM certificate (what a usage's `cas` holds).
fn pem_b64(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

/// An HTTPS/1.1 upstream (keep-alive) on loopback whose certificate `server` presents.
/// `…/echo` answers the request head; `…/redirect` a 302 to `redirect_to`; `…/cookie`
/// sets a cookie; anything else answers 200 JSON.
fn upstream(server: Arc<rustls::ServerConfig>, redirect_to: String) -> (u16, Seen) {
    upstream_on(
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        server,
        redirect_to,
    )
}

/// [`upstream`] on a given listener (the emulator script allows its port in advance).
fn upstream_on(
    l: std::net::TcpListener,
    server: Arc<rustls::ServerConfig>,
    redirect_to: String,
) -> (u16, Seen) {
    cada_e2e::allow_egress(l.local_addr().unwrap().port());
    let port = l.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let (cfg, seen, redirect_to) = (server.clone(), s2.clone(), redirect_to.clone());
            std::thread::spawn(move || {
                let mut tls = BufReader::new(cada_net::test_tls::accept(&cfg, c));
                loop {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if tls.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        head.push_str(&line);
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .and_then(|v| v.trim().parse::<usize>().ok())
                        })
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    if tls.read_exact(&mut body).is_err() {
                        return;
                    }
                    seen.lock()
                        .unwrap()
                        .push(format!("{head}{}", String::from_utf8_lossy(&body)));
                    let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let path = target.split('?').next().unwrap_or("").to_owned();
                    let (status, extra, body) = if path.ends_with("/echo") {
                        ("200 OK", String::new(), head.clone())
                    } else if path.ends_with("/redirect") {
                        (
                            "302 Found",
                            format!("Location: {redirect_to}\r\n"),
                            String::new(),
                        )
                    } else if path.ends_with("/cookie") {
                        (
                            "200 OK",
                            "Set-Cookie: session=s3cr3t; HttpOnly\r\n".into(),
                            "{}".into(),
                        )
                    } else {
                        (
                            "200 OK",
                            "Content-Type: application/json\r\n".into(),
                            format!("{{\"ok\":true,\"path\":\"{path}\"}}"),
                        )
                    };
                    let out = format!(
                        "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let w = tls.get_mut();
                    if w.write_all(out.as_bytes())
                        .and_then(|()| w.flush())
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

/// One raw HTTP/1.1 request to the proxy (`Connection: close`); the whole answer.
fn raw(port: u16, req: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The problem code of a refusal (`urn:cada:problem:<code>`).
fn code(answer: &str) -> String {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    // Problem JSON, or the proxy's own JSON-RPC error for its access rules.
    match v["error"]["data"]["code"].as_str() {
        Some(c) => c.to_owned(),
        None => v["type"]
            .as_str()
            .unwrap_or("")
            .rsplit(':')
            .next()
            .unwrap_or("")
            .to_owned(),
    }
}

/// A secret to seal: its name, the upstream's port, the CA (base64 DER) and the value.
struct ToSeal<'a> {
    name: &'a str,
    port: u16,
    ca: &'a str,
    value: &'a str,
}

/// The owner seals each secret to the enclave's attested HPKE key (cada-secrets'
/// `seal_bundle`, the library under `cada-owner seal`) and the host installs the bundle
/// with `cada-parent secret install`: the value exists only in the test (the owner's side)
/// and inside the enclave.
fn seal_and_install(st: &Stack, d: &Path, secrets: &[ToSeal<'_>]) {
    let (_, id) = http(
        &st.sock,
        "GET",
        "/v1/identity",
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    let target = cada_secrets::SealTarget {
        hpke: cada_secrets::HpkePublicKey::from_b64(id["hpke"]["key"].as_str().unwrap()).unwrap(),
        jkt: id["jkt"].as_str().unwrap().to_owned(),
    };
    let owner =
        cada_contract::OwnerKey::from_key_file(&std::fs::read_to_string(&st.key).unwrap()).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for s in secrets {
        let usage: cada_secrets::SecretUsage = serde_json::from_value(serde_json::json!({
            "name": s.name,
            "upstream": format!("https://localhost:{}", s.port),
            "path_prefix": "/repos/acme/",
            "header": "authorization",
            "format": "Bearer {}",
            "cas": [s.ca],
            "expires_at": now + 3600,
        }))
        .unwrap();
        let b =
            cada_secrets::seal_bundle(&owner, &target, &usage, s.value.as_bytes(), now).unwrap();
        let f = d.join(format!("{}.sealed", s.name));
        std::fs::write(&f, &b.bytes).unwrap();
        let (c, out, err) = parent(&st.sock, &["secret", "install", f.to_str().unwrap()]);
        assert_eq!(c, 0, "{out}{err}");
    }
}
struct Stack {
    _enclave: Option<Proc>,
    _parent: Option<Proc>,
    sock: std::path::PathBuf,
    key: String,
}

fn stack(d: &Path, platform: &str, relay_by_parent: bool) -> Stack {
    let relay = d.join("relay.sock");
    let relay_arg = format!("unix:{}", relay.display());
    // sim and sim-snp keep keys in host memory: sealed secrets only with --dev-secrets.
    let args = vec!["--egress", relay_arg.as_str(), "--dev-secrets"];
    let enclave = start_enclave_on(d, platform, &args);
    let parent_proc = if relay_by_parent {
        start_parent(d, &["--egress-listen", &relay_arg])
    } else {
        start_parent(d, &[])
    };
    let sock = d.join("agent.sock");
    let (_, id) = http(&sock, "GET", "/v1/identity", None, Duration::from_secs(5)).unwrap();
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    let enclave_did = id["did"].as_str().unwrap().to_owned();
    let (_, key) = keygen(d, "owner");
    owner_to(
        d,
        "lock.jwt",
        &["lock", "--key", &key, "--enclave", &enclave_did],
    );
    let (c, _, err) = parent(
        &sock,
        &["owner", "lock", d.join("lock.jwt").to_str().unwrap()],
    );
    assert_eq!(c, 0, "{err}");
    Stack {
        _enclave: Some(enclave),
        _parent: Some(parent_proc),
        sock,
        key,
    }
}

impl Stack {
    fn grant(&self, d: &Path, file: &str, args: &[&str]) -> String {
        let mut all = vec!["grant", "--key", self.key.as_str()];
        all.extend_from_slice(args);
        owner_to(d, file, &all);
        d.join(file).display().to_string()
    }

    fn install(&self, file: &str, status_list: Option<&str>) -> (i32, String) {
        let mut args = vec!["contract", "install", file];
        if let Some(s) = status_list {
            args.extend(["--status-list", s]);
        }
        let (c, out, err) = parent(&self.sock, &args);
        (c, format!("{out}{err}"))
    }

    fn subject(&self) -> String {
        let (_, id) = http(
            &self.sock,
            "GET",
            "/v1/identity",
            None,
            Duration::from_secs(5),
        )
        .unwrap();
        let id: serde_json::Value = serde_json::from_str(&id).unwrap();
        id["did"].as_str().unwrap().to_owned()
    }

    /// `POST /v1/secrets/call` on the daemon (what the proxy does), with raw headers.
    fn daemon_call(&self, secret: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let body = serde_json::json!({
            "secret": secret, "method": "GET", "path_and_query": path,
            "headers": headers, "body": "",
        });
        http(
            &self.sock,
            "POST",
            "/v1/secrets/call",
            Some(&body.to_string()),
            Duration::from_secs(30),
        )
        .unwrap()
    }
}

fn start_proxy(d: &Path, sock: &Path, secrets: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let audit = d.join("proxy-audit");
    let mut args = vec![
        "proxy",
        "--socket",
        sock.to_str().unwrap(),
        "--listen",
        &listen,
        "--audit-dir",
        audit.to_str().unwrap(),
    ];
    for s in secrets {
        args.extend(["--secret", s]);
    }
    (
        spawn_ready("cada-parent", &args, &d.join("proxy.log")),
        port,
    )
}

fn get(port: u16, path: &str, extra: &str) -> String {
    raw(
        port,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}Connection: close\r\n\r\n"
        ),
    )
}

/// The acceptance run on one platform; `full` adds every refusal (run on `sim`).
fn secret_calls_on(platform: &str, full: bool) {
    let dir = TempDir::new(&format!("secrets-{platform}"));
    let d = &dir.0;
    let secret = secret_value();
    let tls = cada_net::test_tls::issue(&["localhost"]);
    let ca = pem_b64(&tls.ca_pem);
    // The agent's own host: where a redirect would draw the credential to.
    let agent_host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let agent_port = agent_host.local_addr().unwrap().port();
    agent_host.set_nonblocking(true).unwrap();
    let (up_port, seen) = upstream(
        tls.server.clone(),
        format!("https://127.0.0.1:{agent_port}/steal"),
    );
    // A port that answers plain HTTP, for the no-downgrade check.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let plain_port = plain.local_addr().unwrap().port();
    cada_e2e::allow_egress(plain_port);
    let plain_seen: Seen = Arc::default();
    {
        let plain_seen = plain_seen.clone();
        std::thread::spawn(move || {
            for c in plain.incoming() {
                let Ok(mut c) = c else { continue };
                let mut b = [0u8; 4096];
                let n = c.read(&mut b).unwrap_or(0);
                plain_seen
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&b[..n]).into_owned());
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            }
        });
    }
    let st = stack(d, platform, true);
    let sealed = |name, port| ToSeal {
        name,
        port,
        ca: &ca,
        value: &secret,
    };
    seal_and_install(
        &st,
        d,
        &[
            sealed("github", up_port),
            sealed("gh-exp", up_port),
            sealed("gh-rev", up_port),
            sealed("gh-nogrant", up_port),
            sealed("gh-plain", plain_port),
        ],
    );
    let subject = st.subject();
    let prefix = format!("https://localhost:{up_port}/repos/acme/");
    let c1 = st.grant(
        d,
        "c1.jwt",
        &[
            "--subject",
            &subject,
            "--secret",
            &format!("github={prefix}"),
            "--secret",
            &format!("gh-plain=https://localhost:{plain_port}/repos/acme/"),
            "--method",
            "GET",
            "--method",
            "POST",
            "--valid-for",
            "1h",
            "--no-revocation",
        ],
    );
    let (c, out) = st.install(&c1, None);
    assert_eq!(c, 0, "{out}");
    let (proxy, port) = start_proxy(
        d,
        &st.sock,
        &[
            "github",
            "gh-exp",
            "gh-rev",
            "gh-nogrant",
            "stripe",
            "gh-plain",
        ],
    );
    // Everything the agent sees, to search at the end.
    let mut agent_saw = Vec::<u8>::new();

    // 1. The injected call: the upstream gets the credential; the agent gets the answer.
    let a = get(
        port,
        "/github/repos/acme/app/issues?state=open",
        "Accept: application/json\r\n",
    );
    agent_saw.extend_from_slice(a.as_bytes());
    assert_eq!(status(&a), 200, "{a}");
    assert!(a.contains("\"ok\":true"), "{a}");
    {
        let seen = seen.lock().unwrap();
        let head = seen.last().unwrap();
        assert!(
            head.starts_with("GET /repos/acme/app/issues?state=open HTTP/1.1"),
            "{head}"
        );
        assert!(
            head.contains(&format!("authorization: Bearer {secret}")),
            "{head}"
        );
        assert!(
            head.contains(&format!("host: localhost:{up_port}")),
            "{head}"
        );
    }

    // 2. A redirect to the agent's own host: returned as is, never followed.
    let before = seen.lock().unwrap().len();
    let a = get(port, "/github/repos/acme/app/redirect", "");
    agent_saw.extend_from_slice(a.as_bytes());
    assert_eq!(status(&a), 302, "{a}");
    assert!(
        a.to_ascii_lowercase()
            .contains(&format!("location: https://127.0.0.1:{agent_port}/steal")),
        "{a}"
    );
    assert_eq!(seen.lock().unwrap().len(), before + 1);
    assert!(
        agent_host.accept().is_err(),
        "the redirect was followed to the agent's host"
    );

    // 3. An endpoint that echoes the request headers: the whole answer is refused.
    let a = get(port, "/github/repos/acme/app/echo", "");
    agent_saw.extend_from_slice(a.as_bytes());
    assert_eq!(status(&a), 502, "{a}");
    assert_eq!(code(&a), "secret.reflected", "{a}");
    assert!(seen.lock().unwrap().last().unwrap().contains(&secret));

    if full {
        // 4. Host overrides: through the proxy, forwarding headers are stripped (its own Host
        // rule refuses another Host: proxy.host); through the daemon, Host is stripped.
        let a = get(
            port,
            "/github/repos/acme/app/x",
            "X-Forwarded-Host: agent.example\r\nForwarded: host=agent.example\r\nX-Forwarded-For: 10.0.0.1\r\n",
        );
        agent_saw.extend_from_slice(a.as_bytes());
        assert_eq!(status(&a), 200, "{a}");
        let wrong_host = raw(
            port,
            "GET /github/repos/acme/app/x HTTP/1.1\r\nHost: agent.example\r\nConnection: close\r\n\r\n",
        );
        agent_saw.extend_from_slice(wrong_host.as_bytes());
        assert_eq!(code(&wrong_host), "proxy.host", "{wrong_host}");
        let (s, body) = st.daemon_call("github", "/repos/acme/app/x", &[("Host", "agent.example")]);
        agent_saw.extend_from_slice(body.as_bytes());
        assert_eq!(s, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["stripped"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == "host"),
            "{v}"
        );
        for h in seen.lock().unwrap().iter() {
            assert!(
                !h.contains("agent.example") && !h.contains("10.0.0.1"),
                "{h}"
            );
            assert!(h.contains(&format!("host: localhost:{up_port}")), "{h}");
        }

        // 5. CR/LF in a header: through the proxy a bare CR breaks its HTTP parser (400);
        // through the daemon's API the enclave refuses it (secret.header).
        let a = raw(
            port,
            &format!("GET /github/repos/acme/app/x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-A: 1\rInjected: 1\r\nConnection: close\r\n\r\n"),
        );
        agent_saw.extend_from_slice(a.as_bytes());
        assert_eq!(status(&a), 400, "{a}");
        let before = seen.lock().unwrap().len();
        let (s, body) = st.daemon_call(
            "github",
            "/repos/acme/app/x",
            &[("X-A", "1\r\nHost: agent.example")],
        );
        agent_saw.extend_from_slice(body.as_bytes());
        assert_eq!(s, 403, "{body}");
        assert!(body.contains("secret.header"), "{body}");
        assert_eq!(
            seen.lock().unwrap().len(),
            before,
            "a refused call reached the upstream"
        );

        // 6. Set-Cookie never reaches the agent.
        let a = get(port, "/github/repos/acme/app/cookie", "");
        agent_saw.extend_from_slice(a.as_bytes());
        assert_eq!(status(&a), 200, "{a}");
        assert!(
            !a.to_ascii_lowercase().contains("\r\nset-cookie:") && !a.contains("s3cr3t"),
            "{a}"
        );
        assert!(a.contains("set-cookie"), "CADA-Stripped names it: {a}");

        // 7. Refusals, each with its code; none reaches the upstream.
        let before = seen.lock().unwrap().len();
        for (req, want, status_want) in [
            ("GET /stripe/v1/charges", "secret.unknown", 404),
            (
                "GET /gh-nogrant/repos/acme/app/x",
                "secret.not_granted",
                403,
            ),
            ("DELETE /github/repos/acme/app/x", "secret.method", 403),
            ("GET /github/repos/other/x", "secret.path", 403),
            ("GET /github/orgs/acme", "secret.path", 403),
            (
                "GET /github/repos/acme/app/..%2F..%2Fother",
                "secret.path",
                403,
            ),
            ("GET /github/repos/acme/app/../../other", "secret.path", 403),
            ("GET /github/repos/acme/app/%2e%2e/x", "secret.path", 403),
            ("GET /github/repos/acme/app//x", "secret.path", 403),
            ("GET /github/repos/acme/app/..;/x", "secret.path", 403),
            (
                "GET /github/repos/acme/app/oauth/token",
                "secret.credential_endpoint",
                403,
            ),
        ] {
            let (m, p) = req.split_once(' ').unwrap();
            let a = raw(
                port,
                &format!("{m} {p} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
            );
            agent_saw.extend_from_slice(a.as_bytes());
            assert_eq!(code(&a), want, "{req}: {a}");
            assert_eq!(status(&a), status_want, "{req}: {a}");
        }
        let a = get(port, "/github/repos/acme/app/..%2Fx", "");
        assert!(a.contains("url.encoded_slash"), "{a}");
        let a = get(
            port,
            "/github/repos/acme/app/x",
            "Authorization: Bearer cada:stripe\r\n",
        );
        agent_saw.extend_from_slice(a.as_bytes());
        assert_eq!(code(&a), "secret.placeholder_elsewhere", "{a}");
        assert_eq!(
            seen.lock().unwrap().len(),
            before,
            "a refused call reached the upstream"
        );

        // 8. No downgrade: an upstream port that speaks plain HTTP gets a TLS ClientHello,
        // never a request in clear.
        let a = get(port, "/gh-plain/repos/acme/x", "");
        agent_saw.extend_from_slice(a.as_bytes());
        assert_eq!(code(&a), "secret.tls", "{a}");
        assert_eq!(status(&a), 502, "{a}");
        for got in plain_seen.lock().unwrap().iter() {
            assert!(
                !got.contains("HTTP/1.1") && !got.contains("repos"),
                "{got:?}"
            );
            assert_absent("the plain-HTTP port", got.as_bytes(), &secret);
        }

        // 9. Expired and revoked contracts.
        let short = st.grant(
            d,
            "exp.jwt",
            &[
                "--subject",
                &subject,
                "--secret",
                &format!("gh-exp={prefix}"),
                "--method",
                "GET",
                "--valid-for",
                "2s",
                "--no-revocation",
            ],
        );
        assert_eq!(st.install(&short, None).0, 0);
        let status_url = "https://owner.example/status/1";
        owner_to(
            d,
            "status.jwt",
            &["status-list", "new", "--key", &st.key, "--url", status_url],
        );
        let rev = st.grant(
            d,
            "rev.jwt",
            &[
                "--subject",
                &subject,
                "--secret",
                &format!("gh-rev={prefix}"),
                "--method",
                "GET",
                "--valid-for",
                "1h",
                "--status-list",
                status_url,
                "--status-index",
                "3",
            ],
        );
        let status0 = d.join("status.jwt").display().to_string();
        let (c, out) = st.install(&rev, Some(&status0));
        assert_eq!(c, 0, "{out}");
        let a = get(port, "/gh-rev/repos/acme/app/x", "");
        assert_eq!(status(&a), 200, "{a}");
        owner_to(
            d,
            "status2.jwt",
            &[
                "revoke", "--key", &st.key, "--list", &status0, "--index", "3",
            ],
        );
        let (c, out) = st.install(&rev, Some(&d.join("status2.jwt").display().to_string()));
        assert_ne!(c, 0);
        assert!(out.contains("contract.revoked"), "{out}");
        let a = get(port, "/gh-rev/repos/acme/app/x", "");
        agent_saw.extend_from_slice(a.as_bytes());
        assert_eq!(code(&a), "secret.not_granted", "{a}");
        std::thread::sleep(Duration::from_millis(2500));
        let a = get(port, "/gh-exp/repos/acme/app/x", "");
        agent_saw.extend_from_slice(a.as_bytes());
        assert_eq!(code(&a), "contract.expired", "{a}");
    }

    // Every call is in the proxy's audit log, with its decision and code.
    let audit = std::fs::read_dir(d.join("proxy-audit"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect::<Vec<_>>()
        .concat();
    let audit_text = String::from_utf8_lossy(&audit);
    assert!(
        audit_text.contains("\"kind\":\"secret_call\""),
        "{audit_text}"
    );
    assert!(audit_text.contains("\"decision\":\"accept\""));
    if full {
        assert!(
            audit_text.contains("\"reason\":\"secret.method\""),
            "{audit_text}"
        );
    }
    // The enclave chained each call.
    let (_, contracts, _) = parent(&st.sock, &["contract", "list"]);
    assert!(contracts.contains("secret_call"), "{contracts}");

    // Nowhere the agent can look holds the secret.
    assert_absent("the agent's answers", &agent_saw, &secret);
    assert_absent("the proxy's audit log", &audit, &secret);
    assert_absent("the contract list", contracts.as_bytes(), &secret);
    for log in ["parent.log", "proxy.log", "enclave.log"] {
        assert_absent(log, &std::fs::read(d.join(log)).unwrap(), &secret);
    }
    let environ = std::fs::read(format!("/proc/{}/environ", proxy.child.id())).unwrap_or_default();
    assert_absent("the proxy's environment", &environ, &secret);
    let env: String = std::env::vars()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    assert_absent("the agent's environment", env.as_bytes(), &secret);
}

#[test]
fn injected_calls_and_every_refusal_on_sim() {
    secret_calls_on("sim", true);
}

#[test]
fn injected_calls_on_sim_snp() {
    secret_calls_on("sim-snp", false);
}

/// A hostile parent: its relay terminates the enclave's TLS itself with a certificate for
/// the right host name from a CA the owner did not name.
#[test]
fn a_man_in_the_middle_relay_is_refused() {
    let dir = TempDir::new("secrets-mitm");
    let d = &dir.0;
    let secret = secret_value();
    let owner_ca = cada_net::test_tls::issue(&["localhost"]);
    let (up_port, seen) = upstream(owner_ca.server.clone(), String::new());
    // The hostile relay listens where the enclave dials.
    let mitm = cada_net::test_tls::issue(&["localhost"]);
    let relay = d.join("relay.sock");
    let l = std::os::unix::net::UnixListener::bind(&relay).unwrap();
    let got: Seen = Arc::default();
    {
        let (got, cfg) = (got.clone(), mitm.server.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                let mut hello = Vec::new();
                let mut b = [0u8; 1];
                while b[0] != b'\n' && c.read_exact(&mut b).is_ok() {
                    hello.push(b[0]);
                }
                c.write_all(b"OK\n").unwrap();
                let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, c);
                let mut buf = [0u8; 4096];
                let n = tls.read(&mut buf).unwrap_or(0);
                got.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
    }
    let st = stack(d, "sim", false);
    let ca = pem_b64(&owner_ca.ca_pem);
    seal_and_install(
        &st,
        d,
        &[ToSeal {
            name: "github",
            port: up_port,
            ca: &ca,
            value: &secret,
        }],
    );
    let subject = st.subject();
    let c1 = st.grant(
        d,
        "c1.jwt",
        &[
            "--subject",
            &subject,
            "--secret",
            &format!("github=https://localhost:{up_port}/repos/acme/"),
            "--method",
            "GET",
            "--valid-for",
            "1h",
            "--no-revocation",
        ],
    );
    assert_eq!(st.install(&c1, None).0, 0);
    let (s, body) = st.daemon_call("github", "/repos/acme/app/issues", &[]);
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("secret.tls"), "{body}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "the real upstream was reached"
    );
    for g in got.lock().unwrap().iter() {
        assert!(g.is_empty(), "the man in the middle read plaintext: {g:?}");
    }
    assert_absent("the refusal", body.as_bytes(), &secret);
    for log in ["parent.log", "enclave.log"] {
        assert_absent(log, &std::fs::read(d.join(log)).unwrap(), &secret);
    }
}

/// Issue 22 part 7: the enclave inside QEMU's nitro-enclave machine (real `nitro` platform,
/// virtio-nsm) makes one injected HTTPS call: its TLS leaves the guest over vsock to the
/// parent's relay (`serve --egress-listen unix:…/vm.vsock_8001`, vhost-device-vsock's host
/// side of guest port 8001), which connects the upstream on the host. The secret is sealed
/// to the emulated enclave's attested HPKE key and installed without any development flag.
/// Run by scripts/emulate-nitro.sh after the evidence test (this one locks the enclave).
#[test]
#[ignore = "needs the QEMU nitro-enclave emulator: run scripts/emulate-nitro.sh"]
fn emulated_nitro_makes_one_injected_https_call_through_the_parent_relay() {
    let sock = std::path::PathBuf::from(
        std::env::var("CADA_EMULATOR_SOCKET").expect("CADA_EMULATOR_SOCKET (emulate-nitro.sh)"),
    );
    let dir = TempDir::new("secrets-nitro");
    let d = &dir.0;
    let secret = secret_value();
    let tls = cada_net::test_tls::issue(&["localhost"]);
    let ca = pem_b64(&tls.ca_pem);
    // The script started the parent with `--egress-allow localhost:PORT` for this port
    // (the relay refuses loopback destinations otherwise, finding 14).
    let port: u16 = std::env::var("CADA_EMULATOR_UPSTREAM_PORT")
        .expect("CADA_EMULATOR_UPSTREAM_PORT (emulate-nitro.sh)")
        .parse()
        .unwrap();
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (up_port, seen) = upstream_on(l, tls.server.clone(), String::new());
    let (_, id) = http(&sock, "GET", "/v1/identity", None, Duration::from_secs(60)).unwrap();
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    assert_eq!(id["platform"], "nitro", "{id}");
    let did = id["did"].as_str().unwrap().to_owned();
    let (_, key) = keygen(d, "owner");
    owner_to(d, "lock.jwt", &["lock", "--key", &key, "--enclave", &did]);
    let (c, out, err) = parent(
        &sock,
        &["owner", "lock", d.join("lock.jwt").to_str().unwrap()],
    );
    assert_eq!(c, 0, "{out}{err}");
    let st = Stack {
        _enclave: None,
        _parent: None,
        sock: sock.clone(),
        key,
    };
    seal_and_install(
        &st,
        d,
        &[ToSeal {
            name: "github",
            port: up_port,
            ca: &ca,
            value: &secret,
        }],
    );
    // The emulated guest's clock (TCG) runs behind the host's by seconds: the contract
    // starts five minutes back so that the enclave's clock is inside it.
    let from = time::OffsetDateTime::from_unix_timestamp(
        i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap()
            - 300,
    )
    .unwrap()
    .format(&time::format_description::well_known::Rfc3339)
    .unwrap();
    let c1 = st.grant(
        d,
        "c1.jwt",
        &[
            "--valid-from",
            &from,
            "--subject",
            &did,
            "--secret",
            &format!("github=https://localhost:{up_port}/repos/acme/"),
            "--method",
            "GET",
            "--valid-for",
            "1h",
            "--no-revocation",
        ],
    );
    let (c, out) = st.install(&c1, None);
    assert_eq!(c, 0, "{out}");
    let (s, body) = st.daemon_call("github", "/repos/acme/app/issues", &[]);
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], 200, "{v}");
    let head = seen.lock().unwrap().last().cloned().unwrap_or_default();
    assert!(
        head.contains(&format!("authorization: Bearer {secret}")),
        "{head}"
    );
    assert_absent("the answer", body.as_bytes(), &secret);
    // What the host holds: the parent's log (daemon and relay), the guest console (the
    // enclave's own log) and vhost-device-vsock's; and this process's environment.
    let logs = std::env::var("CADA_EMULATOR_LOGS").expect("CADA_EMULATOR_LOGS (emulate-nitro.sh)");
    for log in logs.split(':') {
        let bytes = std::fs::read(log).unwrap_or_else(|e| panic!("{log}: {e}"));
        assert_absent(log, &bytes, &secret);
    }
    let env: String = std::env::vars()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    assert_absent("the environment", env.as_bytes(), &secret);
    println!(
        "emulated Nitro enclave: injected HTTPS call through the parent relay answered {} (chain seq {})",
        v["status"], v["seq"]
    );
}
