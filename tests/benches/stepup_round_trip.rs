//! Step-up round trip (issue 23's benchmark, not a test; goal ≤ 300 ms): from the refusal of
//! a `tools/call` to the successful retry, with an automated owner, on the real path.
//!
//! Release binaries: sim enclaves, each with its daemon (`cada-parent serve`) and its
//! `cada-parent proxy --step-up ask`, all locked to one owner; `cada-owner serve` (the
//! approval service: step-up API and passkey page, audit `fsync`, default limits) with a
//! webhook; an in-process stand-in MCP server answering every call at once. The bench is
//! the MCP client (raw JSON-RPC over HTTP, 2025-11-25, declaring URL elicitation) and the
//! owner, who signs in once with a software passkey (Ed25519, registered with the one-time
//! code the CLI printed) and then, for each request, loads its page (the CSRF token is in
//! it) and posts "Approve once", as a browser would. Per round trip:
//!
//! 1. **filing**: the call is sent; the enclave refuses to sign it
//!    (`contract.not_permitted.tool`), the proxy has the daemon file a step-up request (the
//!    enclave signs a proof for the service, evidence and contract attached; the service
//!    verifies them, checks the owner lock, audits, files, fires the webhook) and answers
//!    `-32042` with the page's URL;
//! 2. **approval**: the owner's page GET and the "Approve once" POST (session, CSRF, the
//!    service signs the single-use grant with the owner key, audits);
//! 3. **retry**: the same call again; the proxy polls once through the daemon (a fresh
//!    proof, the service hands out the grant and audits the hand-out), the daemon installs
//!    it in the enclave (which verifies it), the enclave signs the call under it, the proxy
//!    forwards it and answers the result.
//!
//! In `ask` mode no poll interval is waited for: the proxy's first poll of a request is the
//! one the retry makes. The poll interval (CIBA, 2 s by default) is what `--step-up
//! wait=DURATION` waits between polls: a few round trips in that mode are timed too, the
//! owner approving when the webhook arrives. Then the pieces alone, through the daemon's
//! own routes (a filing; a poll of a pending request; a poll of an approved one, which
//! installs the grant again; installing one-transaction grants the owner's CLI signed), a
//! granted call through the proxy (sign + forward, interleaved with the round trips), and
//! the service's own stage timings. AUDIT (default `fsync`, the service's default) is the
//! service's `--audit-durability`: `none` shows what the audit's disk writes cost.
//!
//! An enclave holds at most 32 live contracts, and a used approve-once grant stays installed
//! until it expires (5 minutes): each enclave does at most 25 round trips here (and files
//! at most 26 requests, under the service's default 30 per key per hour), so the ≥ 50 round
//! trips come from several enclaves, one after the other.
//!
//! Run with `scripts/bench-stepup.sh` or
//! `cargo bench -p cada-e2e --bench stepup_round_trip -- [ROUNDS_PER_ENCLAVE=25] [ENCLAVES=4] [WAIT_ROUNDS=5] [AUDIT=fsync]`
//! after `cargo build --release -p cada-enclave -p cada-parent -p cada-owner`.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)] // bench code: casts of measured values, no outside bytes
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use cada_e2e::{free_port, http, keygen, owner_to, parent, spawn_ready, Proc, TempDir};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{json, Value};

/// A keep-alive HTTP/1.1 connection to a loopback port, with the `Host` it sends.
struct Conn {
    port: u16,
    host: String,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(port: u16, host: &str) -> Conn {
        let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let _ = s.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
            .await
            .expect("HTTP handshake");
        tokio::spawn(conn);
        Conn {
            port,
            host: host.to_owned(),
            sender,
        }
    }

    /// One request; (status, headers, body). Reconnects once if the server closed.
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, hyper::HeaderMap, Bytes) {
        if self.sender.ready().await.is_err() {
            *self = Conn::open(self.port, &self.host).await;
        }
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = self
            .sender
            .send_request(b.body(Full::new(Bytes::from(body))).expect("request"))
            .await
            .expect("send");
        let status = resp.status().as_u16();
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        (status, parts.headers, bytes)
    }
}

/// The stand-in MCP server: `initialize` and every `tools/call` answered at once, the
/// request's id echoed.
async fn upstream_answer(body: Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(id) = req.get("id").cloned() else {
        return axum::http::StatusCode::ACCEPTED.into_response();
    };
    let result = if req["method"] == "initialize" {
        json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
               "serverInfo": {"name": "stand-in", "version": "1"}})
    } else {
        json!({"content": [{"type": "text", "text": "ok"}], "isError": false})
    };
    axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
}

/// A software passkey (Ed25519, UP + UV): what a browser's authenticator sends.
struct Passkey {
    key: Ed25519KeyPair,
    id: Vec<u8>,
}

impl Passkey {
    fn new() -> Passkey {
        Passkey {
            key: Ed25519KeyPair::generate().expect("key"),
            id: b"cada-bench-passkey".to_vec(),
        }
    }

    fn attestation_object(&self, rp_id: &str) -> Vec<u8> {
        use ciborium::Value as C;
        let cose = C::Map(vec![
            (C::Integer(1.into()), C::Integer(1.into())), // kty OKP
            (C::Integer(3.into()), C::Integer((-8).into())), // alg EdDSA
            (C::Integer((-1).into()), C::Integer(6.into())), // crv Ed25519
            (
                C::Integer((-2).into()),
                C::Bytes(self.key.public_key().as_ref().to_vec()),
            ),
        ]);
        let mut cose_bytes = Vec::new();
        ciborium::ser::into_writer(&cose, &mut cose_bytes).expect("cbor");
        let mut auth = digest(&SHA256, rp_id.as_bytes()).as_ref().to_vec();
        auth.push(0x01 | 0x04 | 0x40); // UP, UV, attested credential data
        auth.extend_from_slice(&0u32.to_be_bytes());
        auth.extend_from_slice(&[0; 16]); // AAGUID
        auth.extend_from_slice(&(self.id.len() as u16).to_be_bytes());
        auth.extend_from_slice(&self.id);
        auth.extend_from_slice(&cose_bytes);
        let obj = C::Map(vec![
            (C::Text("fmt".into()), C::Text("none".into())),
            (C::Text("attStmt".into()), C::Map(vec![])),
            (C::Text("authData".into()), C::Bytes(auth)),
        ]);
        let mut out = Vec::new();
        ciborium::ser::into_writer(&obj, &mut out).expect("cbor");
        out
    }
}

/// The owner at the approval page: a session (registered passkey) and a connection.
struct Owner {
    conn: Conn,
    origin: String,
    cookie: String,
}

impl Owner {
    /// Registers a passkey with the one-time `code`: the session it opens.
    async fn register(port: u16, code: &str) -> Owner {
        let host = format!("localhost:{port}");
        let origin = format!("http://{host}");
        let mut conn = Conn::open(port, &host).await;
        let json_headers = [
            ("origin", origin.as_str()),
            ("sec-fetch-site", "same-origin"),
            ("content-type", "application/json"),
        ];
        let (st, _, b) = conn
            .send(
                "POST",
                "/webauthn/register/options",
                &json_headers,
                json!({"code": code, "csrf": ""}).to_string().into_bytes(),
            )
            .await;
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
        let opts: Value = serde_json::from_slice(&b).expect("options");
        let challenge = opts["publicKey"]["challenge"].as_str().expect("challenge");
        let cd = json!({"type": "webauthn.create", "challenge": challenge, "origin": origin,
                        "crossOrigin": false})
        .to_string();
        let pk = Passkey::new();
        let id = URL_SAFE_NO_PAD.encode(&pk.id);
        let (st, h, b) = conn
            .send(
                "POST",
                "/webauthn/register",
                &json_headers,
                json!({"id": id, "rawId": id, "type": "public-key", "csrf": "",
                       "response": {"clientDataJSON": URL_SAFE_NO_PAD.encode(cd.as_bytes()),
                                    "attestationObject": URL_SAFE_NO_PAD.encode(pk.attestation_object("localhost"))}})
                .to_string()
                .into_bytes(),
            )
            .await;
        assert_eq!(st, 200, "registration: {}", String::from_utf8_lossy(&b));
        let cookie = h
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("a session cookie")
            .to_owned();
        Owner {
            conn,
            origin,
            cookie,
        }
    }

    /// Opens the request page `path` (`/r/{id}`): its CSRF token, and the time it took.
    async fn open(&mut self, path: &str) -> (String, Duration) {
        let t = Instant::now();
        let (st, _, b) = self
            .conn
            .send("GET", path, &[("cookie", &self.cookie)], Vec::new())
            .await;
        let took = t.elapsed();
        let page = String::from_utf8_lossy(&b);
        assert_eq!(st, 200, "{page}");
        let at = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
        (page[at..at + 43].to_owned(), took)
    }

    /// Posts the decision `action` (`once`, `deny`) on the page `path`; the time it took.
    async fn decide(&mut self, path: &str, csrf: &str, action: &str) -> Duration {
        let t = Instant::now();
        let (st, _, b) = self
            .conn
            .send(
                "POST",
                path,
                &[
                    ("cookie", &self.cookie),
                    ("origin", &self.origin),
                    ("sec-fetch-site", "same-origin"),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                format!("csrf={csrf}&action={action}").into_bytes(),
            )
            .await;
        let took = t.elapsed();
        let page = String::from_utf8_lossy(&b);
        assert_eq!(st, 200, "decision {action} on {path}: {page}");
        let class = if action == "deny" {
            "denied"
        } else {
            "approved"
        };
        assert!(
            page.contains(&format!("id=\"result\" class=\"{class}\"")),
            "{page}"
        );
        took
    }
}

/// `cada-owner serve` (stdout read here: the registration code follows `ready`).
fn start_serve(args: &[&str], log: &Path) -> (Proc, String) {
    let logf = std::fs::File::create(log).expect("log");
    let mut child = Command::new(cada_e2e::bin("cada-owner"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(logf)
        .spawn()
        .expect("spawn cada-owner serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let proc = Proc {
        child,
        name: "cada-owner".into(),
    };
    loop {
        let l = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| {
                panic!(
                    "cada-owner serve printed no registration code ({e}):\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            });
        if let Some(code) = l
            .split_once("registration code ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
        {
            return (proc, code.to_owned());
        }
    }
}

/// A webhook receiver: each notice's body and when it arrived.
fn webhook() -> (u16, mpsc::Receiver<(Instant, Value)>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut r = BufReader::new(c);
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut b = vec![0u8; len];
            let _ = r.read_exact(&mut b);
            let at = Instant::now();
            let _ = r
                .get_mut()
                .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            let _ = tx.send((at, serde_json::from_slice(&b).unwrap_or(Value::Null)));
        }
    });
    (port, rx)
}

/// A sim enclave and its daemon, locked to the owner.
struct Agent {
    _enclave: Proc,
    _daemon: Proc,
    dir: PathBuf,
    sock: PathBuf,
    did: String,
    pcr0: String,
}

impl Agent {
    fn start(dir: PathBuf, owner_key: &str) -> Agent {
        std::fs::create_dir_all(&dir).expect("dir");
        let enclave = cada_e2e::start_enclave(&dir, &[]);
        let daemon = cada_e2e::start_parent(&dir, &[]);
        let sock = dir.join("agent.sock");
        let (_, id) =
            http(&sock, "GET", "/v1/identity", None, Duration::from_secs(5)).expect("identity");
        let id: Value = serde_json::from_str(&id).expect("json");
        let did = id["did"].as_str().expect("did").to_owned();
        let pcr0 = id["measurements"]["PCR0"]
            .as_str()
            .expect("pcr0")
            .to_owned();
        owner_to(
            &dir,
            "lock.jwt",
            &["lock", "--key", owner_key, "--enclave", &did],
        );
        let lock = dir.join("lock.jwt");
        assert_eq!(
            parent(&sock, &["owner", "lock", lock.to_str().expect("utf8")]).0,
            0
        );
        Agent {
            _enclave: enclave,
            _daemon: daemon,
            dir,
            sock,
            did,
            pcr0,
        }
    }

    /// The owner's standing contract: `echo` on `audience`, and the approval service.
    fn grant(&self, owner_key: &str, audience: &str, step_up: &str) {
        owner_to(
            &self.dir,
            "standing.jwt",
            &[
                "grant",
                "--key",
                owner_key,
                "--subject",
                &self.did,
                "--audience",
                audience,
                "--method",
                "POST",
                "--method",
                "GET",
                "--method",
                "DELETE",
                "--tool",
                "echo",
                "--step-up",
                step_up,
                "--valid-for",
                "1h",
                "--no-revocation",
            ],
        );
        let (code, _, err) = parent(
            &self.sock,
            &[
                "contract",
                "install",
                self.dir.join("standing.jwt").to_str().expect("utf8"),
            ],
        );
        assert_eq!(code, 0, "{err}");
    }

    /// `cada-parent proxy --step-up MODE` in front of `upstream`: the process and its port.
    fn proxy(&self, upstream: &str, mode: &str) -> (Proc, u16) {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let p = spawn_ready(
            "cada-parent",
            &[
                "proxy",
                "--socket",
                self.sock.to_str().expect("utf8"),
                "--listen",
                &listen,
                "--upstream",
                upstream,
                "--step-up",
                mode,
            ],
            &self.dir.join(format!("proxy-{port}.log")),
        );
        (p, port)
    }

    /// `POST path` on the daemon: (status, answer, time).
    fn daemon(&self, path: &str, body: &Value) -> (u16, Value, Duration) {
        let t = Instant::now();
        let (st, text) = http(
            &self.sock,
            "POST",
            path,
            Some(&body.to_string()),
            Duration::from_secs(15),
        )
        .expect("daemon");
        let took = t.elapsed();
        (
            st,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            took,
        )
    }
}

const MCP_HEADERS: [(&str, &str); 3] = [
    ("content-type", "application/json"),
    ("accept", "application/json, text/event-stream"),
    ("mcp-protocol-version", "2025-11-25"),
];

fn call(id: u64, tool: &str, args: &Value) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": args}})
    .to_string()
    .into_bytes()
}

/// The JSON-RPC document of an answer (JSON, or the last `data:` event of an SSE stream).
fn answer(body: &[u8]) -> Value {
    let text = String::from_utf8_lossy(body);
    if let Ok(v) = serde_json::from_str(&text) {
        return v;
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .next_back()
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or_else(|| panic!("not a JSON-RPC answer: {text}"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// (p50, p95, max) in ms.
fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let at = |p: f64| s[((s.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.95), at(1.0))
}

fn line(name: &str, v: &[f64]) {
    let (p50, p95, max) = stats(v);
    println!(
        "  {name:<58} p50 {p50:>8.2} ms   p95 {p95:>8.2} ms   max {max:>8.2} ms   (n = {})",
        v.len()
    );
}

/// p50 and p90 (ms) of appending 400 bytes to a file in `dir` and `fdatasync`ing it.
fn fdatasync_probe(dir: &Path) -> (f64, f64) {
    let path = dir.join("fdatasync-probe");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("probe file");
    let mut v: Vec<f64> = (0..100)
        .map(|_| {
            let t = Instant::now();
            f.write_all(&[b'x'; 400]).expect("write");
            f.sync_data().expect("fdatasync");
            ms(t.elapsed())
        })
        .collect();
    let _ = std::fs::remove_file(&path);
    v.sort_by(f64::total_cmp);
    (v[50], v[90])
}

/// Mean per stage of `cada_verify_stage_seconds` (sum / count) in the service's metrics.
fn stage_means(metrics: &str) -> String {
    let mut sums = std::collections::BTreeMap::<String, (f64, f64)>::new();
    for l in metrics.lines() {
        let (kind, rest) = if let Some(r) = l.strip_prefix("cada_verify_stage_seconds_sum{") {
            (0, r)
        } else if let Some(r) = l.strip_prefix("cada_verify_stage_seconds_count{") {
            (1, r)
        } else {
            continue;
        };
        let labels = rest.split('}').next().unwrap_or_default().to_owned();
        let v: f64 = rest
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0);
        let e = sums.entry(labels).or_default();
        if kind == 0 {
            e.0 = v;
        } else {
            e.1 = v;
        }
    }
    sums.iter()
        .filter(|(_, (_, n))| *n > 0.0)
        .map(|(l, (s, n))| format!("{l}: {:.3} ms (n = {n})", s / n * 1000.0))
        .collect::<Vec<_>>()
        .join("; ")
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[derive(Default)]
struct Rounds {
    total: Vec<f64>,
    filing: Vec<f64>,
    notice: Vec<f64>,
    page: Vec<f64>,
    decide: Vec<f64>,
    retry: Vec<f64>,
    granted: Vec<f64>,
}

#[allow(clippy::too_many_lines)]
fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(25);
    let enclaves: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(4);
    let wait_rounds: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(5);
    let durability = args.get(4).map_or("fsync", String::as_str);
    assert!(
        rounds <= 25,
        "at most 25 round trips per enclave: 32 live contracts, and 30 filings per key per hour"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = TempDir::new("stepup-bench");
    let d = &dir.0;
    println!(
        "step-up round trip, release binaries, sim enclaves (Ed25519), the service's audit {durability}; load average before: {}",
        load_average()
    );

    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let up = listener.local_addr().expect("addr").port();
    rt.spawn(async move {
        let app = axum::Router::new().fallback(axum::routing::post(upstream_answer));
        axum::serve(listener, app).await
    });
    let upstream = format!("http://127.0.0.1:{up}/mcp");
    let audience = format!("http://127.0.0.1:{up}/");

    let (_, owner_key) = keygen(d, "owner");
    // The round-trip enclaves, one for wait mode, one for the pieces alone.
    let agents: Vec<Agent> = (0..enclaves + 2)
        .map(|k| Agent::start(d.join(format!("e{k}")), &owner_key))
        .collect();
    let ap = free_port();
    let public = format!("http://localhost:{ap}");
    let roots: Vec<String> = agents
        .iter()
        .map(|a| {
            format!(
                "{:?}",
                a.dir.join("state/sim-root.der").display().to_string()
            )
        })
        .collect();
    let mut pcr0s: Vec<&str> = agents.iter().map(|a| a.pcr0.as_str()).collect();
    pcr0s.sort_unstable();
    pcr0s.dedup();
    let policy = d.join("approval-policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[roots]\nnitro = [{}]\n[[audience]]\nprefix = \"{public}/\"\nmeasurements = [{}]\n",
            roots.join(", "),
            pcr0s
                .iter()
                .map(|p| format!("{{ PCR0 = \"{p}\" }}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
    .expect("policy");
    let (hook_port, notices) = webhook();
    let hook = format!("http://127.0.0.1:{hook_port}/hook");
    let audit = d.join("approval-audit");
    let (_serve, code) = start_serve(
        &[
            "serve",
            "--key",
            &owner_key,
            "--listen",
            &format!("127.0.0.1:{ap}"),
            "--public-url",
            &public,
            "--policy",
            policy.to_str().expect("utf8"),
            "--audit-dir",
            audit.to_str().expect("utf8"),
            "--state-dir",
            d.join("approval-state").to_str().expect("utf8"),
            "--webhook",
            &hook,
            "--audit-durability",
            durability,
        ],
        &d.join("serve.log"),
    );
    for a in &agents {
        a.grant(&owner_key, &audience, &public);
    }
    let mut owner = rt.block_on(Owner::register(ap, &code));
    let (p50, p90) = fdatasync_probe(d);
    println!(
        "  fdatasync of a 400-byte append to a new file on this disk now: p50 {p50:.3} ms, p90 {p90:.3} ms \
         (with audit fsync, each of the service's records is on disk before its answer)"
    );

    // Ask mode: the round trips.
    let mut r = Rounds::default();
    let mut first: Vec<String> = Vec::new();
    for (k, a) in agents[..enclaves].iter().enumerate() {
        let (_proxy, port) = a.proxy(&upstream, "ask");
        let host = format!("127.0.0.1:{port}");
        let mut c = rt.block_on(Conn::open(port, &host));
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {"elicitation": {"form": {}, "url": {}}},
            "clientInfo": {"name": "stepup-bench", "version": "1"}}});
        let (st, _, b) =
            rt.block_on(c.send("POST", "/mcp", &MCP_HEADERS, init.to_string().into_bytes()));
        assert_eq!(st, 200, "initialize: {}", String::from_utf8_lossy(&b));
        let mut n = 1u64;
        for i in 0..=rounds {
            let args = json!({"amount": k * 1000 + i, "to": "alice"});
            let t0 = Instant::now();
            let (st, _, b) =
                rt.block_on(c.send("POST", "/mcp", &MCP_HEADERS, call(n, "transfer", &args)));
            let filing = t0.elapsed();
            let v = answer(&b);
            assert_eq!(
                (st, v["error"]["code"].as_i64()),
                (200, Some(-32042)),
                "expected URLElicitationRequiredError: {v}"
            );
            let id = v["error"]["data"]["elicitationId"]
                .as_str()
                .expect("elicitationId")
                .to_owned();
            let url = v["error"]["data"]["url"].as_str().expect("url");
            let path = url
                .strip_prefix(&public)
                .expect("the page's URL")
                .to_owned();
            let (csrf, page) = rt.block_on(owner.open(&path));
            let decide = rt.block_on(owner.decide(&path, &csrf, "once"));
            let t3 = Instant::now();
            let (st, _, b) =
                rt.block_on(c.send("POST", "/mcp", &MCP_HEADERS, call(n + 1, "transfer", &args)));
            let retry = t3.elapsed();
            let total = t0.elapsed();
            let v = answer(&b);
            assert_eq!(
                (st, v["result"]["content"][0]["text"].as_str()),
                (200, Some("ok")),
                "the retry after approval must succeed: {v}"
            );
            // A granted call through the same proxy: sign + forward, nothing else.
            let t = Instant::now();
            let (st, _, b) = rt.block_on(c.send(
                "POST",
                "/mcp",
                &MCP_HEADERS,
                call(n + 2, "echo", &json!({"text": "x"})),
            ));
            let granted = t.elapsed();
            assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
            assert!(answer(&b)["result"].is_object());
            n += 3;
            let notice = notices
                .recv_timeout(Duration::from_secs(10))
                .map(|(at, v)| {
                    assert_eq!(v["id"], id.as_str(), "{v}");
                    at.saturating_duration_since(t0)
                })
                .expect("the webhook's notice");
            if i == 0 {
                first.push(format!(
                    "{:.1} ms (filing {:.1}, approval {:.1}, retry {:.1})",
                    ms(total),
                    ms(filing),
                    ms(page + decide),
                    ms(retry)
                ));
                continue;
            }
            r.total.push(ms(total));
            r.filing.push(ms(filing));
            r.notice.push(ms(notice));
            r.page.push(ms(page));
            r.decide.push(ms(decide));
            r.retry.push(ms(retry));
            r.granted.push(ms(granted));
        }
    }
    println!(
        "ask mode (the 2025-11-25 client gets -32042, the owner approves at once, the client retries at once), {} enclaves × {rounds} round trips (the first of each enclave, cold, apart: {}):",
        enclaves,
        first.join("; ")
    );
    line(
        "ROUND TRIP: call → -32042 → approve → retry → result",
        &r.total,
    );
    line(
        "1 filing: call → -32042 (refusal, file, elicitation)",
        &r.filing,
    );
    line(
        "  (webhook notice reached the owner, from the call)",
        &r.notice,
    );
    line("2a approval: the owner opens the request page", &r.page);
    line("2b approval: the owner posts Approve once", &r.decide);
    println!(
        "  3  poll interval waited: none in ask mode (the retry's poll is the request's first)"
    );
    line(
        "4 retry: poll + install + sign + forward → result",
        &r.retry,
    );
    line(
        "  (a granted call through the same proxy: sign + forward)",
        &r.granted,
    );

    // The pieces alone, through the daemon's routes (the probe enclave).
    let probe = &agents[enclaves + 1];
    let file_body = |i: usize| {
        json!({"audience": upstream, "tool": "transfer",
               "arguments": {"amount": 900_000 + i, "to": "bob"},
               "refusal": {"code": "contract.not_permitted.tool", "by": "enclave",
                           "server": upstream, "message": "MCP tool \"transfer\" is not granted"}})
    };
    // Five at a time (the per-key limit of pending requests), then denied.
    let mut filing = Vec::new();
    for batch in 0..2 {
        let mut filed = Vec::new();
        for i in 0..5 {
            let (st, v, took) = probe.daemon("/v1/step-up", &file_body(batch * 5 + i));
            assert_eq!(st, 200, "{v}");
            filing.push(ms(took));
            filed.push(format!("/r/{}", v["id"].as_str().expect("id")));
        }
        for path in filed {
            let (csrf, _) = rt.block_on(owner.open(&path));
            rt.block_on(owner.decide(&path, &csrf, "deny"));
            let _ = notices.recv_timeout(Duration::from_secs(10));
        }
    }
    let (st, filed, _) = probe.daemon("/v1/step-up", &file_body(100));
    assert_eq!(st, 200, "{filed}");
    let _ = notices.recv_timeout(Duration::from_secs(10));
    let poll = json!({"step_up": filed["step_up"], "id": filed["id"]});
    let mut pending = Vec::new();
    for _ in 0..20 {
        let (st, v, took) = probe.daemon("/v1/step-up/poll", &poll);
        assert_eq!((st, v["status"].as_str()), (200, Some("pending")), "{v}");
        pending.push(ms(took));
    }
    let path = format!("/r/{}", filed["id"].as_str().expect("id"));
    let (csrf, _) = rt.block_on(owner.open(&path));
    rt.block_on(owner.decide(&path, &csrf, "once"));
    let mut approved = Vec::new();
    for _ in 0..20 {
        let (st, v, took) = probe.daemon("/v1/step-up/poll", &poll);
        assert_eq!((st, v["status"].as_str()), (200, Some("approved")), "{v}");
        approved.push(ms(took));
    }
    println!("the pieces alone, through the daemon's own routes (one more enclave):");
    line(
        "filing: POST /v1/step-up (sign, evidence, service, 201)",
        &filing,
    );
    line("poll of a pending request: POST /v1/step-up/poll", &pending);
    line(
        "poll of an approved request (hand-out, install again)",
        &approved,
    );
    // Installing a one-transaction grant alone: grants signed beforehand by the owner's CLI
    // (the shape the service signs: one single-use detail, every argument pinned).
    let mut install = Vec::new();
    for i in 0..20 {
        let details = probe.dir.join(format!("details-{i}.json"));
        std::fs::write(
            &details,
            json!([{"type": "mcp_tool_call", "locations": [upstream], "actions": ["tools/call"],
                    "tool": "transfer",
                    "arguments": {"amount": {"eq": 700_000 + i}, "to": {"eq": "bob"}},
                    "single_use": true}])
            .to_string(),
        )
        .expect("details");
        let grant = owner_to(
            &probe.dir,
            "grant.jwt",
            &[
                "grant",
                "--key",
                &owner_key,
                "--subject",
                &probe.did,
                "--authorization-details",
                details.to_str().expect("utf8"),
                "--minutes",
                "5",
            ],
        );
        let (st, v, took) = probe.daemon("/v1/contracts", &json!({"contract": grant.trim()}));
        assert_eq!(st, 200, "{v}");
        install.push(ms(took));
    }
    line(
        "install a one-transaction grant: POST /v1/contracts",
        &install,
    );

    // Wait mode: the call is held; the owner approves when the webhook arrives.
    if wait_rounds > 0 {
        let a = &agents[enclaves];
        let (_proxy, port) = a.proxy(&upstream, "wait=1m");
        let host = format!("127.0.0.1:{port}");
        let mut held = Vec::new();
        let mut decided_at = Vec::new();
        for i in 0..=wait_rounds {
            let args = json!({"amount": 50_000 + i, "to": "carol"});
            let host = host.clone();
            let t0 = Instant::now();
            let task = rt.spawn(async move {
                let mut c = Conn::open(port, &host).await;
                let (st, _, b) = c
                    .send(
                        "POST",
                        "/mcp",
                        &MCP_HEADERS,
                        call(i as u64 + 1, "transfer", &args),
                    )
                    .await;
                (st, b, Instant::now())
            });
            let (_, notice) = notices
                .recv_timeout(Duration::from_secs(10))
                .expect("the webhook's notice");
            let path = format!("/r/{}", notice["id"].as_str().expect("id"));
            let (csrf, _) = rt.block_on(owner.open(&path));
            rt.block_on(owner.decide(&path, &csrf, "once"));
            let decided = t0.elapsed();
            let (st, b, done) = rt.block_on(task).expect("held call");
            let v = answer(&b);
            assert_eq!(
                (st, v["result"]["content"][0]["text"].as_str()),
                (200, Some("ok")),
                "{v}"
            );
            if i > 0 {
                held.push(ms(done.duration_since(t0)));
                decided_at.push(ms(decided));
            }
        }
        println!("wait mode (--step-up wait=1m, the service's default poll interval 2 s; the owner approves on the webhook):");
        line("ROUND TRIP: call held → result", &held);
        line("  the owner had approved after", &decided_at);
        println!("  (the proxy polls once right after filing, then every interval: the approval waits for the next poll)");
    }

    let (st, _, m) = rt.block_on(async {
        let mut c = Conn::open(ap, &format!("localhost:{ap}")).await;
        c.send("GET", "/metrics", &[], Vec::new()).await
    });
    assert_eq!(st, 200);
    println!(
        "the service's verification stages, mean over every proof it decided: {}",
        stage_means(&String::from_utf8_lossy(&m))
    );
    println!("load average after: {}", load_average());
    // CADA_BENCH_KEEP_LOGS=DIR keeps every process's log (the run's directory is removed).
    if let Some(keep) = std::env::var_os("CADA_BENCH_KEEP_LOGS") {
        let keep = PathBuf::from(keep);
        for (sub, logs) in
            std::iter::once((PathBuf::new(), d.clone())).chain(agents.iter().map(|a| {
                (
                    PathBuf::from(a.dir.file_name().expect("name")),
                    a.dir.clone(),
                )
            }))
        {
            let _ = std::fs::create_dir_all(keep.join(&sub));
            for f in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
                if f.path().extension().is_some_and(|e| e == "log") {
                    let _ = std::fs::copy(f.path(), keep.join(&sub).join(f.file_name()));
                }
            }
        }
    }
}
