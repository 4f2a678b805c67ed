//! Secret calls in process: a real HTTPS upstream (throwaway CA) that records what it gets,
//! the parent's relay played by a task on a unix socket, a locked sim signer with a contract.
#![allow(clippy::cast_possible_truncation)]
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use cada_contract::{Grant, OwnerAlg, OwnerKey, OwnerLock, SecretGrant, Subject};
use cada_protocol::egress::{parse_relay_hello, SecretCallRequest};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use super::*;
use crate::key::SigningKey;
use crate::signer::{DelegationPolicy, Signer};

const SECRET: &str = "ghp_TESTsecretVALUE0123456789abcdef";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A CA (DER) and a server config for `localhost` it signed.
fn tls_server() -> (Vec<u8>, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "egress test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    (ca_cert.der().to_vec(), Arc::new(cfg))
}

/// What the upstream received: each request's head and body, as text.
type Seen = Arc<Mutex<Vec<String>>>;

/// A keep-alive HTTPS/1.1 server on loopback: `/…/echo` answers the request head,
/// `/…/redirect` a 302 to another host, `/…/cookie` sets a cookie, `/…/gzip` answers
/// compressed, anything else 200 `ok`.
fn upstream(cfg: Arc<rustls::ServerConfig>) -> (u16, Seen) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let (cfg, seen) = (cfg.clone(), s2.clone());
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(cfg).unwrap();
                let mut tls = BufReader::new(rustls::StreamOwned::new(conn, c));
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
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    tls.read_exact(&mut body).unwrap();
                    seen.lock()
                        .unwrap()
                        .push(format!("{head}{}", String::from_utf8_lossy(&body)));
                    let target = head.split_whitespace().nth(1).unwrap_or("");
                    let path = target.split('?').next().unwrap_or("").to_owned();
                    let (extra, body) = if path.ends_with("/echo") {
                        (String::new(), head.clone())
                    } else if path.ends_with("/redirect") {
                        (
                            "Location: https://agent.example/steal\r\n".into(),
                            String::new(),
                        )
                    } else if path.ends_with("/cookie") {
                        ("Set-Cookie: session=abc\r\n".into(), "ok".into())
                    } else if path.ends_with("/slow") {
                        std::thread::sleep(Duration::from_millis(200));
                        (String::new(), "ok".into())
                    } else if path.ends_with("/gzip") {
                        ("Content-Encoding: gzip\r\n".into(), "xxxx".into())
                    } else {
                        (String::new(), "ok".into())
                    };
                    let status = if path.ends_with("/redirect") {
                        "302 Found"
                    } else {
                        "200 OK"
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

/// The parent's relay on a unix socket: connects the hello's host:port on loopback, or
/// `divert` whatever the hello names (a hostile parent); counts connections.
async fn relay(dir: &std::path::Path, divert: Option<u16>) -> (PathBuf, Arc<Mutex<u32>>) {
    let path = dir.join(format!("relay-{}.sock", divert.unwrap_or(0)));
    let _ = std::fs::remove_file(&path);
    let l = tokio::net::UnixListener::bind(&path).unwrap();
    let count = Arc::new(Mutex::new(0u32));
    let c2 = count.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            *c2.lock().unwrap() += 1;
            tokio::spawn(async move {
                let mut rd = tokio::io::BufReader::new(s);
                let mut line = Vec::new();
                rd.read_until(b'\n', &mut line).await.unwrap();
                let (_, port) = parse_relay_hello(&line).unwrap();
                let mut up = tokio::net::TcpStream::connect(("127.0.0.1", divert.unwrap_or(port)))
                    .await
                    .unwrap();
                rd.get_mut().write_all(b"OK\n").await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut rd, &mut up).await;
            });
        }
    });
    (path, count)
}

struct Fixture {
    signer: Arc<Signer>,
    seen: Seen,
    relay_count: Arc<Mutex<u32>>,
    _dir: TempDir,
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn usage_json(port: u16, ca: &[u8], expires_at: u64) -> serde_json::Value {
    serde_json::json!({
        "usage": {
            "name": "github",
            "upstream": format!("https://localhost:{port}"),
            "path_prefix": "/repos/acme/",
            "header": "authorization",
            "format": "Bearer {}",
            "cas": [base64::engine::general_purpose::STANDARD.encode(ca)],
            "expires_at": expires_at,
            "credential_endpoints": ["/repos/acme/app/oauth2/ok"],
        },
        "value": SECRET,
    })
}

/// A locked signer whose contract grants `github` GET/POST under /repos/acme/app/.
async fn fixture(divert: Option<u16>, expires_at: u64, max_idle: usize) -> (Fixture, u16) {
    let (ca, cfg) = tls_server();
    let (port, seen) = upstream(cfg);
    let dir = std::env::temp_dir().join(format!(
        "cada-egress-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (path, relay_count) = relay(&dir, divert).await;
    let key = SigningKey::generate(cada_protocol::jwk::SigAlg::EdDSA).unwrap();
    let sim = crate::platform::sim::Sim::new(None).unwrap();
    let signer = Arc::new(Signer::new(key, Box::new(sim), DelegationPolicy::default()).unwrap());
    let egress = Egress::new(Client::new(
        Relay::Unix(path),
        max_idle,
        Duration::from_secs(10),
    ));
    egress
        .add_dev_secret(usage_json(port, &ca, expires_at).to_string().as_bytes())
        .unwrap();
    signer.set_egress(Arc::new(egress));
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let lock = OwnerLock::issue(&owner, signer.key().did(), now(), 300).unwrap();
    signer.lock_owner(&lock).unwrap();
    let mut g = Grant::new(
        Subject::Key(signer.key().did().into()),
        vec![],
        vec!["GET".into()],
        now() - 10,
        now() + 600,
    );
    g.secrets = vec![SecretGrant {
        name: "github".into(),
        prefix: format!("https://localhost:{port}/repos/acme/app/"),
        methods: vec!["GET".into(), "POST".into()],
    }];
    signer
        .install_contract(&g.issue(&owner, now()).unwrap(), None)
        .unwrap();
    (
        Fixture {
            signer,
            seen,
            relay_count,
            _dir: TempDir(dir),
        },
        port,
    )
}

fn call(path: &str) -> SecretCallRequest {
    SecretCallRequest {
        secret: "github".into(),
        method: "GET".into(),
        path_and_query: path.into(),
        headers: vec![("accept".into(), "application/json".into())],
        body: vec![],
    }
}

impl Fixture {
    async fn call(&self, req: &SecretCallRequest) -> Result<SecretCallResponse, EnclaveError> {
        self.signer
            .egress()
            .unwrap()
            .call(&self.signer, req, now())
            .await
    }
}

fn code_of(r: Result<SecretCallResponse, EnclaveError>) -> String {
    match r {
        Ok(a) => format!("ok {}", a.status),
        Err(e) => e
            .rule_code()
            .map_or_else(|| format!("other: {e}"), str::to_owned),
    }
}

/// Every spelling of the secret an agent might decode.
fn leaks(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET);
    [
        SECRET.to_owned(),
        b64,
        hex::encode(SECRET),
        percent_encode(SECRET.as_bytes()),
    ]
    .iter()
    .any(|f| text.contains(f.as_str()))
}

#[tokio::test]
async fn the_upstream_gets_the_credential_and_the_agent_never_does() {
    let (f, _) = fixture(None, now() + 600, 4).await;
    let mut req = call("/repos/acme/app/x?x=1");
    req.headers.extend([
        ("Host".into(), "agent.example".into()),
        ("X-Forwarded-Host".into(), "agent.example".into()),
        ("Authorization".into(), "Bearer cada:github".into()),
        ("Accept-Encoding".into(), "gzip".into()),
        ("Range".into(), "bytes=0-5".into()),
        ("If-Range".into(), "\"e\"".into()),
    ]);
    let a = f.call(&req).await.unwrap();
    assert_eq!(a.status, 200);
    let seen = f.seen.lock().unwrap().clone();
    let head = &seen[0];
    // The upstream got the credential once, the usage's Host, no forwarding header.
    assert!(
        head.contains(&format!("authorization: Bearer {SECRET}")),
        "{head}"
    );
    assert_eq!(head.matches("authorization").count(), 1, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("host: localhost:"),
        "{head}"
    );
    assert!(!head.contains("agent.example"), "{head}");
    assert!(head.contains("accept-encoding: identity"), "{head}");
    assert!(
        head.starts_with("GET /repos/acme/app/x?x=1 HTTP/1.1"),
        "{head}"
    );
    assert!(!leaks(&a.body), "{}", String::from_utf8_lossy(&a.body));
    for s in [
        "host",
        "x-forwarded-host",
        "authorization",
        "accept-encoding",
        "range",
        "if-range",
    ] {
        assert!(a.stripped.iter().any(|x| x == s), "{s} in {:?}", a.stripped);
    }
    // The call is in the chain, with its dtc.
    let events = f.signer.contracts().unwrap().events;
    let last = events.last().unwrap();
    assert_eq!(last.kind, "secret_call");
    assert!(last
        .detail
        .starts_with("secret=github GET https://localhost:"));
    assert!(last
        .detail
        .ends_with(&format!("status=200 bytes={}", a.body.len())));
    assert_eq!(a.seq, last.seq);
    assert!(a.dtc.is_some());
    // An endpoint that echoes the request: the whole answer is refused, never rewritten, and
    // the refusal names no part of the credential.
    let e = f.call(&call("/repos/acme/app/echo")).await.unwrap_err();
    assert_eq!(e.rule_code(), Some("secret.reflected"), "{e}");
    assert!(!leaks(e.to_string().as_bytes()), "{e}");
    let events = f.signer.contracts().unwrap().events;
    let last = events.last().unwrap();
    assert_eq!(last.kind, "refusal");
    assert!(last
        .detail
        .starts_with("secret.reflected secret=github GET"));
}

#[tokio::test]
async fn connections_are_pooled_per_upstream() {
    let (f, _) = fixture(None, now() + 600, 4).await;
    for _ in 0..5 {
        assert_eq!(code_of(f.call(&call("/repos/acme/app/x")).await), "ok 200");
    }
    assert_eq!(*f.relay_count.lock().unwrap(), 1);
    assert_eq!(f.signer.egress().unwrap().client().handshakes(), 1);
    // Without a pool, one handshake per call.
    let (g, _) = fixture(None, now() + 600, 0).await;
    for _ in 0..3 {
        assert_eq!(code_of(g.call(&call("/repos/acme/app/x")).await), "ok 200");
    }
    assert_eq!(g.signer.egress().unwrap().client().handshakes(), 3);
}

#[tokio::test]
async fn redirects_cookies_and_compressed_answers() {
    let (f, _) = fixture(None, now() + 600, 4).await;
    // The 3xx comes back as is; nothing followed it (one request upstream).
    let a = f.call(&call("/repos/acme/app/redirect")).await.unwrap();
    assert_eq!(a.status, 302);
    assert!(a
        .headers
        .iter()
        .any(|(k, v)| k == "location" && v == "https://agent.example/steal"));
    assert_eq!(f.seen.lock().unwrap().len(), 1);
    let a = f.call(&call("/repos/acme/app/cookie")).await.unwrap();
    assert!(!a.headers.iter().any(|(k, _)| k.starts_with("set-cookie")));
    assert!(a.stripped.iter().any(|s| s == "set-cookie"));
    assert_eq!(
        code_of(f.call(&call("/repos/acme/app/gzip")).await),
        "secret.answer"
    );
}

#[tokio::test]
async fn refusals_each_name_their_rule() {
    let (f, port) = fixture(None, now() + 600, 4).await;
    let with = |m: &str, p: &str, h: Vec<(&str, &str)>| SecretCallRequest {
        secret: "github".into(),
        method: m.into(),
        path_and_query: p.into(),
        headers: h
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        body: vec![],
    };
    let mut other = call("/repos/acme/app/x");
    other.secret = "stripe".into();
    assert_eq!(code_of(f.call(&other).await), "secret.unknown");
    for (req, want) in [
        (with("DELETE", "/repos/acme/app/x", vec![]), "secret.method"),
        (
            with(
                "POST",
                "/repos/acme/app/x",
                vec![("X-HTTP-Method-Override", "DELETE")],
            ),
            "secret.method",
        ),
        (
            with(
                "POST",
                "/repos/acme/app/x",
                vec![("x-method-override", "POST")],
            ),
            "secret.method",
        ),
        // Inside the sealed usage (/repos/acme/) but outside the contract's grant.
        (with("GET", "/repos/acme/other/x", vec![]), "secret.path"),
        // Outside the sealed usage.
        (with("GET", "/orgs/acme", vec![]), "secret.path"),
        (
            with("GET", "/repos/acme/app/..%2F..%2Fx", vec![]),
            "secret.path",
        ),
        (
            with("GET", "/repos/acme/app/../../x", vec![]),
            "secret.path",
        ),
        (with("GET", "/repos/acme/app//x", vec![]), "secret.path"),
        (with("GET", "@evil.example/x", vec![]), "secret.path"),
        (
            with("GET", "/repos/acme/app/oauth/token", vec![]),
            "secret.credential_endpoint",
        ),
        (
            with("GET", "/repos/acme/app/x", vec![("x-a", "1\r\nHost: evil")]),
            "secret.header",
        ),
        (
            with("GET", "/repos/acme/app/x", vec![("x-a\n", "1")]),
            "secret.header",
        ),
        (
            with(
                "GET",
                "/repos/acme/app/x",
                vec![("authorization", "Bearer cada:stripe")],
            ),
            "secret.placeholder_elsewhere",
        ),
    ] {
        let p = req.path_and_query.clone();
        assert_eq!(code_of(f.call(&req).await), want, "{} {p}", req.method);
    }
    // The url.* code of a path trick is named in the message.
    let e = f
        .call(&with("GET", "/repos/acme/app/%2e%2e/x", vec![]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("url.encoded_dot"), "{e}");
    // An owner-marked credential endpoint is allowed.
    assert_eq!(
        code_of(
            f.call(&with("GET", "/repos/acme/app/oauth2/ok", vec![]))
                .await
        ),
        "ok 200"
    );
    // Nothing refused reached the upstream.
    assert_eq!(f.seen.lock().unwrap().len(), 1);
    // Every refusal is in the chain.
    let refusals = f
        .signer
        .contracts()
        .unwrap()
        .events
        .iter()
        .filter(|e| e.kind == "refusal" && e.detail.contains("secret="))
        .count();
    assert!(refusals >= 12, "{refusals}");
    let _ = port;
}

#[tokio::test]
async fn a_man_in_the_middle_relay_is_refused_and_gets_nothing() {
    // The hostile relay sends every connection to a server whose certificate another CA
    // signed, for the very host name the usage names.
    let (_, mitm_cfg) = tls_server();
    let (mitm_port, mitm_seen) = upstream(mitm_cfg);
    let (f, _) = fixture(Some(mitm_port), now() + 600, 4).await;
    let e = f.call(&call("/repos/acme/app/x")).await.unwrap_err();
    assert_eq!(e.rule_code(), Some("secret.tls"), "{e}");
    assert!(!leaks(e.to_string().as_bytes()));
    assert!(mitm_seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn expired_usages_and_unlocked_or_uncontracted_enclaves_refuse() {
    let (f, _) = fixture(None, now() - 1, 4).await;
    assert_eq!(
        code_of(f.call(&call("/repos/acme/app/x")).await),
        "secret.expired"
    );
    // Not locked: no contract, so no secret.
    let key = SigningKey::generate(cada_protocol::jwk::SigAlg::EdDSA).unwrap();
    let sim = crate::platform::sim::Sim::new(None).unwrap();
    let s = Signer::new(key, Box::new(sim), DelegationPolicy::default()).unwrap();
    let url = HttpUrl::parse_canonical("https://localhost:1/repos/acme/app/x").unwrap();
    assert_eq!(
        s.authorize_secret("github", "GET", &url, now())
            .unwrap_err()
            .rule_code(),
        Some("secret.not_granted")
    );
    // A frame without an egress relay.
    let r = handle_call(
        &s,
        &Request {
            id: 7,
            op: "secret_call".into(),
            body: wire::to_value(&call("/x")).unwrap(),
        },
        now(),
    )
    .await;
    let err = r.err.unwrap();
    assert_eq!(err.code, ErrorCode::SecretDenied);
    assert!(err.message.starts_with("secret.no_egress"));
}

#[test]
fn credential_endpoints_compare_by_segment_stem() {
    let mut u: SecretUsage =
        serde_json::from_value(usage_json(8443, b"x", now() + 600)["usage"].clone()).unwrap();
    u.credential_endpoints = vec!["/repos/acme/app/keys".into()];
    u.kind = SecretKind::OAuth(cada_secrets::OAuthUsage {
        token_endpoint: "https://localhost:8443/repos/acme/oauth/refresh".into(),
        client_id: "c".into(),
        grant: cada_secrets::OAuthGrant::ClientCredentials,
        scope: None,
        client_auth: cada_secrets::ClientAuth::Basic,
    });
    let is = |p: &str| {
        is_credential_endpoint(
            &u,
            &HttpUrl::parse_canonical(&format!("https://localhost:8443{p}")).unwrap(),
        )
    };
    for p in [
        "/repos/acme/oauth/refresh",
        "/repos/acme/oauth/refresh/",
        "/repos/acme/OAuth/Refresh.json",
        "/repos/acme/oauth/refresh.",
        "/repos/acme/oauth/refresh%20",
        "/repos/acme/oauth/refresh/x",
        "/repos/acme/x/token.json",
        "/repos/acme/x/Access-Tokens",
        "/repos/acme/api/oauth.v2.access",
        "/repos/acme/api/v4/personal_access_tokens/self/rotate",
        "/repos/acme/groups/1/deploy_tokens",
        "/repos/acme/v1/ephemeral_keys",
        "/repos/acme/Accounts/AC1/Keys.json",
        // Any stem starting with oauth (a false positive accepted).
        "/repos/acme/oauthish",
    ] {
        assert!(is(p), "{p}");
    }
    for p in [
        "/repos/acme/app/issues",
        // Owner-marked.
        "/repos/acme/app/keys",
        "/repos/acme/app/keys/1",
        "/repos/acme/v1/checkout/sessions",
        "/repos/acme/tokenizer",
    ] {
        assert!(!is(p), "{p}");
    }
    assert_eq!(segment_stem("Token%2Ejson"), "token");
    assert_eq!(
        cada_secrets::placeholder::header_names(b"Bearer CADA:github, cada%3Ax-1"),
        vec![b"github".to_vec(), b"x-1".to_vec()]
    );
}

#[tokio::test]
async fn a_sealed_secret_is_used_before_a_development_one_of_the_same_name() {
    let (f, port) = fixture(None, now() + 600, 4).await;
    // The sealed store gets "github" with another value (as secret_install would put it).
    let dev: serde_json::Value = usage_json(port, &[], now() + 600);
    let mut usage: cada_secrets::SecretUsage =
        serde_json::from_value(dev["usage"].clone()).unwrap();
    // The same CA as the development secret's (the fixture's), taken from the dev map.
    usage.cas = f
        .signer
        .egress()
        .unwrap()
        .lookup(&f.signer, "github")
        .unwrap()
        .usage
        .cas
        .clone();
    f.signer
        .secrets()
        .insert(InstalledSecret {
            usage,
            value: Zeroizing::new(b"sealed-value-0123456789".to_vec()),
            digest: "d".into(),
            owner: String::new(),
            iat: now(),
        })
        .unwrap();
    let a = f.call(&call("/repos/acme/app/x")).await.unwrap();
    assert_eq!(a.status, 200);
    let head = f.seen.lock().unwrap().last().cloned().unwrap();
    assert!(
        head.contains("authorization: Bearer sealed-value-0123456789"),
        "{head}"
    );
    assert!(!head.contains(SECRET), "{head}");
}

#[tokio::test]
async fn calls_beyond_the_per_origin_cap_wait_and_reuse_a_connection() {
    let (ca, cfg) = tls_server();
    let (port, seen) = upstream(cfg);
    let dir = std::env::temp_dir().join(format!("cada-egress-cap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _d = TempDir(dir.clone());
    let (path, _) = relay(&dir, None).await;
    let usage: SecretUsage =
        serde_json::from_value(usage_json(port, &ca, now() + 600)["usage"].clone()).unwrap();
    let get = || {
        http::Request::get("/repos/acme/app/slow")
            .header("host", format!("localhost:{port}"))
            .body(Bytes::new())
            .unwrap()
    };
    for (cap, want_handshakes) in [(1usize, 1u64), (2, 2)] {
        let c = Arc::new(
            Client::new(Relay::Unix(path.clone()), 4, Duration::from_secs(10))
                .with_max_per_origin(cap),
        );
        let (a, b) = tokio::join!(c.send(&usage, get()), c.send(&usage, get()));
        assert_eq!(a.unwrap().status(), 200);
        assert_eq!(b.unwrap().status(), 200);
        // With a cap of 1 the second call waited for the first and took its connection.
        assert_eq!(c.handshakes(), want_handshakes, "cap {cap}");
    }
    assert_eq!(seen.lock().unwrap().len(), 4);
}
