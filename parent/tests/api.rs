//! The daemon's HTTP API in process, against a fake enclave: every error is an RFC 9457
//! problem with a stable code, a stalled enclave gives 504 by the deadline, and the TCP
//! router takes only the bearer token.
use std::sync::Arc;
use std::time::{Duration, Instant};

use cada_parent::api::{router, with_bearer, AppState};
use cada_parent::auth::BearerToken;
use cada_parent::client::{EnclaveClient, Endpoint};
use cada_protocol::wire::{self, ErrorCode, Request, Response, SignPopRequest, WireError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";
const TIMEOUT: Duration = Duration::from_millis(300);

/// A fake enclave: `sign_pop` for a URL containing `stall` is never answered, `deny` is
/// refused by policy, `bad` is a bad request; everything else is signed (a dummy proof).
async fn fake_enclave() -> Endpoint {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut rd, mut wr) = s.into_split();
                loop {
                    let mut hdr = [0u8; 4];
                    if rd.read_exact(&mut hdr).await.is_err() {
                        return;
                    }
                    let mut buf = vec![0u8; wire::frame_len(hdr).unwrap()];
                    if rd.read_exact(&mut buf).await.is_err() {
                        return;
                    }
                    let req: Request = wire::decode_payload(&buf).unwrap();
                    let htu = wire::body::<SignPopRequest>(&req.body)
                        .map(|b| b.htu)
                        .unwrap_or_default();
                    let err = |code, message: &str| Response {
                        id: req.id,
                        ok: None,
                        err: Some(WireError {
                            code,
                            message: message.into(),
                        }),
                    };
                    let resp = if htu.contains("stall") {
                        continue;
                    } else if htu.contains("deny") {
                        err(
                            ErrorCode::PolicyDenied,
                            "outside the delegated URL prefixes",
                        )
                    } else if htu.contains("bad") {
                        err(
                            ErrorCode::BadRequest,
                            "htu: userinfo (user@host) is not allowed",
                        )
                    } else {
                        Response {
                            id: req.id,
                            ok: Some(
                                wire::to_value(&wire::SignPopResponse {
                                    dpop: "h.c.s".into(),
                                    att: "a".into(),
                                    dtc: None,
                                })
                                .unwrap(),
                            ),
                            err: None,
                        }
                    };
                    if wr
                        .write_all(&wire::encode_frame(&resp).unwrap())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Endpoint::Tcp(addr)
}

/// Serves the API (plain, or behind the bearer token) on a loopback port.
async fn daemon(bearer: bool) -> u16 {
    let client = EnclaveClient::new(fake_enclave().await, 1, TIMEOUT);
    let mut app = router(AppState::new(client, 64));
    if bearer {
        app = with_bearer(app, Arc::new(BearerToken::new(TOKEN).unwrap()));
    }
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await });
    port
}

struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The problem's (status, code), checking the media type and the members.
    fn problem(&self) -> (u16, String) {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}\n{}",
            self.head,
            self.body
        );
        let v: serde_json::Value = serde_json::from_str(&self.body).unwrap();
        assert_eq!(v["status"], self.status, "{v}");
        assert!(v["title"].is_string() && v["detail"].is_string(), "{v}");
        let code = v["type"]
            .as_str()
            .unwrap()
            .strip_prefix("urn:cada:problem:")
            .unwrap()
            .to_owned();
        (self.status, code)
    }
}

async fn send(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: cada\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (413) before reading a large body.
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let out = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    Answer {
        status: head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

async fn pop(port: u16, body: &str) -> Answer {
    send(port, "POST", "/v1/pop", &[JSON], body.as_bytes()).await
}

#[tokio::test]
async fn every_refusal_is_a_problem_with_a_stable_code() {
    let port = daemon(false).await;
    let ok = pop(
        port,
        r#"{"method":"GET","url":"https://api.example.com/x"}"#,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let cases: Vec<(Answer, (u16, &str))> = vec![
        (pop(port, "{not json").await, (400, "malformed-json")),
        (pop(port, "").await, (400, "malformed-json")),
        (pop(port, "[]").await, (400, "invalid-body")),
        (
            pop(port, r#"{"method":"GET"}"#).await,
            (400, "invalid-body"),
        ),
        (
            pop(port, r#"{"method":"GET","url":"u","extra":1}"#).await,
            (400, "invalid-body"),
        ),
        (
            send(
                port,
                "POST",
                "/v1/pop",
                &[("Content-Type", "text/plain")],
                b"{}",
            )
            .await,
            (415, "unsupported-media-type"),
        ),
        (
            send(port, "POST", "/v1/pop", &[], b"{}").await,
            (415, "unsupported-media-type"),
        ),
        (
            send(port, "POST", "/v1/pop", &[JSON], &vec![b' '; 100 * 1024]).await,
            (413, "body-too-large"),
        ),
        (
            send(port, "GET", "/v2/nothing", &[], b"").await,
            (404, "not-found"),
        ),
        (
            send(port, "GET", "/v1/pop", &[], b"").await,
            (405, "method-not-allowed"),
        ),
        (
            send(port, "POST", "/v1/identity", &[JSON], b"{}").await,
            (405, "method-not-allowed"),
        ),
        (
            send(port, "GET", "/v1/evidence?nonce=zz", &[], b"").await,
            (400, "bad-query"),
        ),
        (
            send(port, "GET", "/v1/evidence?nonce=00&nonce=01", &[], b"").await,
            (400, "bad-query"),
        ),
        (
            pop(port, r#"{"method":"GET","url":"https://deny.example/x"}"#).await,
            (403, "policy-denied"),
        ),
        (
            pop(port, r#"{"method":"GET","url":"https://u@bad.example/x"}"#).await,
            (400, "bad-request"),
        ),
    ];
    for (i, (answer, (status, code))) in cases.into_iter().enumerate() {
        assert_eq!(answer.problem(), (status, code.to_owned()), "case {i}");
    }
    let a = send(port, "GET", "/v1/pop", &[], b"").await;
    assert_eq!(
        a.header("allow"),
        Some("POST"),
        "405 keeps its Allow header"
    );
}

#[tokio::test]
async fn a_stalled_enclave_is_a_504_problem_by_the_deadline_and_later_calls_work() {
    let port = daemon(false).await;
    let t = Instant::now();
    let a = pop(port, r#"{"method":"GET","url":"https://stall.example/x"}"#).await;
    let took = t.elapsed();
    assert_eq!(a.problem(), (504, "enclave-timeout".into()));
    // Bounded, not fast: the deadline is 300 ms; a loaded machine gets 2 s of slack.
    assert!(took < TIMEOUT + Duration::from_secs(2), "{took:?}");
    let ok = pop(
        port,
        r#"{"method":"GET","url":"https://api.example.com/x"}"#,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
}

#[tokio::test]
async fn the_tcp_router_takes_only_the_bearer_token() {
    let port = daemon(true).await;
    let body = br#"{"method":"GET","url":"https://api.example.com/x"}"#;
    let bearer = format!("Bearer {TOKEN}");
    let lower = format!("bearer {TOKEN}");
    let wrong = format!("Bearer {}", &TOKEN[1..]);
    let basic = format!("Basic {TOKEN}");
    for auth in [
        None,
        Some(wrong.as_str()),
        Some(basic.as_str()),
        Some("Bearer"),
    ] {
        let mut h = vec![JSON];
        if let Some(a) = auth {
            h.push(("Authorization", a));
        }
        let a = send(port, "POST", "/v1/pop", &h, body).await;
        assert_eq!(a.problem(), (401, "unauthorized".into()), "{auth:?}");
        assert!(a.header("www-authenticate").unwrap().starts_with("Bearer"));
        // Unknown routes are no different: nothing is revealed without the token.
        let a = send(port, "GET", "/nothing", &h, b"").await;
        assert_eq!(a.problem(), (401, "unauthorized".into()), "{auth:?}");
    }
    for auth in [&bearer, &lower] {
        let a = send(
            port,
            "POST",
            "/v1/pop",
            &[JSON, ("Authorization", auth)],
            body,
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.body);
        let a = send(port, "GET", "/nothing", &[("Authorization", auth)], b"").await;
        assert_eq!(a.problem(), (404, "not-found".into()));
    }
}
