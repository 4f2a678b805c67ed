//! The proxy's step-up flow end to end against a stand-in daemon (unix socket) and a
//! stand-in MCP server: which answer each client gets, what a retry does, wait mode.
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cada_net::Problem;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::Mode;
use crate::access::Access;
use crate::proxy::{ProxyState, Route};

const ID: &str = "AAAAAAAAAAAAAAAAAAAAAA";
const PAGE: &str = "http://localhost:8470/r/AAAAAAAAAAAAAAAAAAAAAA";

/// What the stand-in daemon does and saw.
#[derive(Default)]
struct Daemon {
    /// The grant is installed: the enclave signs `transfer`.
    granted: bool,
    /// No contract names a stepUp.
    no_step_up: bool,
    /// An installed contract grants the calls a server refuses (`stepup-granted`).
    held: bool,
    /// What successive polls answer (`pending`, `approved`, `denied`, `expired`).
    polls: VecDeque<&'static str>,
    filed: Vec<Value>,
    polled: usize,
}

type Shared = Arc<Mutex<Daemon>>;

fn problem(status: StatusCode, code: &str, detail: &str) -> Response {
    Problem::new(status, code, detail).into_response()
}

async fn pop(State(d): State<Shared>, Json(b): Json<Value>) -> Response {
    let wants_transfer = b["mcp"]
        .as_array()
        .is_some_and(|a| a.iter().any(|c| c["target"] == "transfer"));
    if wants_transfer && !d.lock().unwrap().granted {
        return problem(
            StatusCode::FORBIDDEN,
            "contract-denied",
            "contract.not_permitted.tool: MCP tool \"transfer\" is not granted by any contract",
        );
    }
    Json(json!({"dpop": "proof"})).into_response()
}

async fn file(State(d): State<Shared>, Json(b): Json<Value>) -> Response {
    let mut d = d.lock().unwrap();
    if d.no_step_up {
        return problem(StatusCode::NOT_FOUND, "stepup-unavailable", "no stepUp");
    }
    if d.held && b["refusal"]["by"] == "server" {
        return problem(
            StatusCode::CONFLICT,
            "stepup-granted",
            "the installed contract dtc already grants it",
        );
    }
    d.filed.push(b);
    Json(
        json!({"step_up": "http://localhost:8470", "contract": "dtc",
        "id": ID, "url": PAGE, "poll": format!("http://localhost:8470/v1/step-up/{ID}"),
        "expires_at": 4_000_000_000_u64, "interval": 1}),
    )
    .into_response()
}

async fn poll(State(d): State<Shared>, Json(b): Json<Value>) -> Response {
    assert_eq!(b["id"], ID);
    assert_eq!(b["step_up"], "http://localhost:8470");
    let mut d = d.lock().unwrap();
    d.polled += 1;
    let status = d.polls.pop_front().unwrap_or("pending");
    if status == "approved" {
        d.granted = true;
        return Json(json!({"status": "approved", "installed": "grant-dtc"})).into_response();
    }
    let code = match status {
        "denied" => Some("stepup.denied"),
        "expired" => Some("stepup.expired"),
        _ => None,
    };
    Json(json!({"status": status, "code": code})).into_response()
}

async fn stand_in_daemon(dir: &Path, d: Shared) -> PathBuf {
    let sock = dir.join("daemon.sock");
    let _ = std::fs::remove_file(&sock);
    let app = axum::Router::new()
        .route("/v1/pop", axum::routing::post(pop))
        .route("/v1/step-up", axum::routing::post(file))
        .route("/v1/step-up/poll", axum::routing::post(poll))
        .with_state(d);
    let l = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    sock
}

/// The MCP server: `gated` is refused like a gate refuses (403 insufficient_scope) until
/// `open`; every other call is answered; bodies are kept.
#[derive(Default)]
struct Upstream {
    bodies: Vec<Value>,
}

async fn mcp(State(u): State<Arc<Mutex<Upstream>>>, body: axum::body::Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap();
    let mut u = u.lock().unwrap();
    u.bodies.push(v.clone());
    if v["method"] == "initialize" {
        return (
            [("mcp-session-id", "S1")],
            Json(json!({"jsonrpc": "2.0", "id": v["id"], "result": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "serverInfo": {"name": "s", "version": "1"}}})),
        )
            .into_response();
    }
    let tool = v["params"]["name"].as_str().unwrap_or("").to_owned();
    if tool == "gated" {
        let doc = json!({"jsonrpc": "2.0", "id": v["id"], "error": {"code": -32003,
            "message": "[contract.not_permitted.tool] rule 13: MCP tool \"gated\" is not granted",
            "data": {"code": "contract.not_permitted.tool", "rule": 13, "status": 403}}});
        return (
            StatusCode::FORBIDDEN,
            [(
                "www-authenticate",
                "DPoP error=\"insufficient_scope\", scope=\"tool:gated\"",
            )],
            Json(doc),
        )
            .into_response();
    }
    Json(json!({"jsonrpc": "2.0", "id": v["id"], "result": {
        "content": [{"type": "text", "text": format!("did {tool}")}]}}))
    .into_response()
}

struct Rig {
    addr: SocketAddr,
    daemon: Shared,
    upstream: Arc<Mutex<Upstream>>,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn rig(tag: &str, mode: Mode, keepalive: Duration) -> Rig {
    let dir = std::env::temp_dir().join(format!("cada-stepup-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let daemon = Shared::default();
    let sock = stand_in_daemon(&dir, daemon.clone()).await;
    let upstream = Arc::new(Mutex::new(Upstream::default()));
    let app = axum::Router::new()
        .route("/mcp", axum::routing::post(mcp))
        .with_state(upstream.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    let mut st = ProxyState::with_step_up(
        sock,
        vec![Route::parse(&format!("http://{up}/mcp")).unwrap()],
        cada_net::upstream::Upstream::new(&cada_net::fetch::Fetcher::mozilla().unwrap()),
        Duration::from_secs(5),
        false,
        mode,
    );
    Arc::get_mut(&mut st).unwrap().step_up.keepalive = keepalive;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let app = crate::proxy::router(st.clone(), Access::tcp(addr, &[], None).unwrap());
    let stats = st.conn_stats();
    tokio::spawn(async move {
        cada_net::serve_tcp(
            l,
            app,
            &cada_net::ServeLimits::local(),
            stats,
            std::future::pending(),
        )
        .await
    });
    Rig {
        addr,
        daemon,
        upstream,
        _dir: TempDir(dir),
    }
}

impl Rig {
    /// One POST to the proxy: (status, headers, body text).
    async fn post(&self, headers: &[(&str, &str)], body: &Value) -> (u16, HeaderMap, String) {
        let s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut r = hyper::Request::post("/mcp")
            .header("host", self.addr.to_string())
            .header("content-type", "application/json");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let r = r
            .body(http_body_util::Full::new(axum::body::Bytes::from(
                body.to_string(),
            )))
            .unwrap();
        let resp = tx.send_request(r).await.unwrap();
        let status = resp.status().as_u16();
        let h = resp.headers().clone();
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        (status, h, String::from_utf8_lossy(&b).into_owned())
    }

    /// The proxy's metrics text.
    async fn metrics(&self) -> String {
        let s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        let r = hyper::Request::get("/_cada/metrics")
            .header("host", self.addr.to_string())
            .body(http_body_util::Empty::<axum::body::Bytes>::new())
            .unwrap();
        let resp = tx.send_request(r).await.unwrap();
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&b).into_owned()
    }

    async fn call(&self, headers: &[(&str, &str)], body: &Value) -> Value {
        let (_, _, b) = self.post(headers, body).await;
        serde_json::from_str(&b).unwrap_or_else(|e| panic!("{e}: {b}"))
    }

    fn polls(&self, p: &[&'static str]) {
        self.daemon.lock().unwrap().polls.extend(p);
    }
}

fn transfer(id: u64, meta: Option<Value>) -> Value {
    let mut params = json!({"name": "transfer", "arguments": {"to": "alice", "amount": 500}});
    if let Some(m) = meta {
        params["_meta"] = m;
    }
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
}

fn modern_meta() -> Value {
    json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
           "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"url": {}}}})
}

#[tokio::test]
async fn a_2025_11_25_client_gets_url_elicitation_required_then_succeeds() {
    let r = rig("2025", Mode::Ask, super::KEEPALIVE_EVERY).await;
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {"elicitation": {"form": {}, "url": {}}},
        "clientInfo": {"name": "c", "version": "1"}}});
    let a = r.call(&[], &init).await;
    assert_eq!(a["result"]["protocolVersion"], "2025-11-25");
    let h = [
        ("mcp-session-id", "S1"),
        ("mcp-protocol-version", "2025-11-25"),
    ];

    let a = r.call(&h, &transfer(1, None)).await;
    assert_eq!(a["id"], 1);
    assert_eq!(a["error"]["code"], -32042, "{a}");
    let el = &a["error"]["data"]["elicitations"][0];
    assert_eq!(
        (
            el["mode"].as_str(),
            el["elicitationId"].as_str(),
            el["url"].as_str()
        ),
        (Some("url"), Some(ID), Some(PAGE))
    );
    {
        let d = r.daemon.lock().unwrap();
        assert_eq!(d.filed.len(), 1);
        let f = &d.filed[0];
        assert_eq!(f["tool"], "transfer");
        assert_eq!(f["arguments"], json!({"to": "alice", "amount": 500}));
        assert_eq!(f["refusal"]["code"], "contract.not_permitted.tool");
        assert_eq!(f["refusal"]["by"], "enclave");
        assert_eq!(f["want"], "once");
    }

    // The retry while the owner has not answered: the same elicitation, not a second filing.
    r.polls(&["pending", "approved"]);
    let a = r.call(&h, &transfer(2, None)).await;
    assert_eq!(a["error"]["code"], -32042, "{a}");
    assert_eq!(a["error"]["data"]["elicitations"][0]["elicitationId"], ID);
    // Another session's identical call is its own request.
    let other = [("mcp-session-id", "S2")];
    let a = r.call(&other, &transfer(3, None)).await;
    assert_eq!(a["error"]["data"]["code"], "stepup.required", "{a}");
    assert_eq!(r.daemon.lock().unwrap().filed.len(), 2);

    // Approved: the grant is installed and the call goes through.
    let a = r.call(&h, &transfer(4, None)).await;
    assert_eq!(a["result"]["content"][0]["text"], "did transfer", "{a}");
    assert_eq!(a["id"], 4);
    assert_eq!(r.daemon.lock().unwrap().filed.len(), 2);
}

#[tokio::test]
async fn a_2026_07_28_client_gets_input_required_and_its_retry_goes_through_clean() {
    let r = rig("2026", Mode::Ask, super::KEEPALIVE_EVERY).await;
    let a = r.call(&[], &transfer(1, Some(modern_meta()))).await;
    assert!(a.get("error").is_none(), "{a}");
    let res = &a["result"];
    assert_eq!(res["resultType"], "input_required");
    let state = res["requestState"].as_str().unwrap().to_owned();
    assert!(state.starts_with("cada-step-up:"));
    let req = &res["inputRequests"]["cada-step-up"];
    assert_eq!(req["method"], "elicitation/create");
    assert_eq!(req["params"]["mode"], "url");
    assert_eq!(req["params"]["url"], PAGE);

    // The retry (another connection, no session): found by its requestState; approved.
    r.polls(&["approved"]);
    let mut retry = transfer(2, Some(modern_meta()));
    retry["params"]["requestState"] = json!(state);
    retry["params"]["inputResponses"] = json!({"cada-step-up": {"action": "accept"}});
    let a = r.call(&[], &retry).await;
    assert_eq!(a["result"]["content"][0]["text"], "did transfer", "{a}");
    // The upstream never sees the proxy's own input members.
    let up = r.upstream.lock().unwrap();
    let last = up.bodies.last().unwrap();
    assert_eq!(last["id"], 2);
    assert!(last["params"].get("requestState").is_none(), "{last}");
    assert!(last["params"].get("inputResponses").is_none(), "{last}");
    assert_eq!(
        last["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
        "2026-07-28"
    );
}

#[tokio::test]
async fn a_state_moved_onto_other_arguments_is_not_followed() {
    let r = rig("moved", Mode::Ask, super::KEEPALIVE_EVERY).await;
    let a = r.call(&[], &transfer(1, Some(modern_meta()))).await;
    let state = a["result"]["requestState"].as_str().unwrap().to_owned();
    r.polls(&["approved"]);
    let mut other = transfer(2, Some(modern_meta()));
    other["params"]["arguments"]["amount"] = json!(50_000);
    other["params"]["requestState"] = json!(state);
    let a = r.call(&[], &other).await;
    // Not the approved request: a new one is filed for these arguments, nothing polled.
    assert_eq!(a["result"]["resultType"], "input_required", "{a}");
    let d = r.daemon.lock().unwrap();
    assert_eq!(d.polled, 0);
    assert_eq!(d.filed.len(), 2);
    assert_eq!(d.filed[1]["arguments"]["amount"], 50_000);
}

#[tokio::test]
async fn a_client_without_url_elicitation_gets_a_plain_error_and_denial_names_its_rule() {
    let r = rig("plain", Mode::Ask, super::KEEPALIVE_EVERY).await;
    let (status, h, b) = r.post(&[], &transfer(1, None)).await;
    assert_eq!(status, 200);
    assert_eq!(h["cada-refused-status"], "403");
    let a: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(a["error"]["code"], -32000);
    let m = a["error"]["message"].as_str().unwrap();
    assert!(
        m.starts_with("[stepup.required]") && m.contains(PAGE),
        "{m}"
    );
    assert_eq!(a["error"]["data"]["url"], PAGE);
    assert_eq!(
        a["error"]["data"]["refusal"]["code"],
        "contract.not_permitted.tool"
    );

    r.polls(&["denied"]);
    let a = r.call(&[], &transfer(2, None)).await;
    assert_eq!(a["error"]["data"]["code"], "stepup.denied", "{a}");
    assert!(a["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("[stepup.denied]"));
    // Ended: the next call asks again.
    let a = r.call(&[], &transfer(3, None)).await;
    assert_eq!(a["error"]["data"]["code"], "stepup.required", "{a}");
    assert_eq!(r.daemon.lock().unwrap().filed.len(), 2);

    r.polls(&["expired"]);
    let a = r.call(&[], &transfer(4, None)).await;
    assert_eq!(a["error"]["data"]["code"], "stepup.expired", "{a}");
}

#[tokio::test]
async fn a_declined_elicitation_ends_the_request() {
    let r = rig("declined", Mode::Ask, super::KEEPALIVE_EVERY).await;
    let a = r.call(&[], &transfer(1, Some(modern_meta()))).await;
    let state = a["result"]["requestState"].as_str().unwrap().to_owned();
    let mut retry = transfer(2, Some(modern_meta()));
    retry["params"]["requestState"] = json!(state);
    retry["params"]["inputResponses"] = json!({"cada-step-up": {"action": "decline"}});
    let a = r.call(&[], &retry).await;
    assert_eq!(a["error"]["data"]["code"], "stepup.declined", "{a}");
    assert_eq!(r.daemon.lock().unwrap().polled, 0);
}

#[tokio::test]
async fn a_gate_refusal_is_put_to_the_owner_too() {
    let r = rig("gate", Mode::Ask, super::KEEPALIVE_EVERY).await;
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "gated", "arguments": {}}});
    let a = r.call(&[], &call).await;
    assert_eq!(a["error"]["data"]["code"], "stepup.required", "{a}");
    let f = r.daemon.lock().unwrap().filed[0].clone();
    // The server's own claim (a gate there or the server itself): marked as such.
    assert_eq!(f["refusal"]["by"], "server");
    assert_eq!(f["refusal"]["code"], "contract.not_permitted.tool");
    assert!(f["refusal"]["message"]
        .as_str()
        .unwrap()
        .contains("not granted"));
    // Approved, but the gate still refuses: answered with its code, never filed twice.
    r.polls(&["approved"]);
    let mut again = call.clone();
    again["id"] = json!(2);
    let a = r.call(&[], &again).await;
    assert_eq!(
        a["error"]["data"]["code"], "contract.not_permitted.tool",
        "{a}"
    );
    assert_eq!(r.daemon.lock().unwrap().filed.len(), 1);
}

/// Review stepup-1, finding 4: a server's refusal of a call the agent's contract already
/// grants is not put to the owner (the daemon answers `stepup-granted`): the client gets
/// the server's answer unchanged, and the proxy counts it.
#[tokio::test]
async fn a_servers_refusal_of_a_granted_call_is_passed_on_unfiled() {
    let r = rig("held", Mode::Ask, super::KEEPALIVE_EVERY).await;
    r.daemon.lock().unwrap().held = true;
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "gated", "arguments": {}}});
    let (status, h, b) = r.post(&[], &call).await;
    let a: Value = serde_json::from_str(&b).unwrap();
    // The server's own answer: its JSON-RPC error and its 403 (as every relayed refusal).
    assert_eq!(a["error"]["code"], -32003, "{a}");
    assert_eq!(a["error"]["data"]["code"], "contract.not_permitted.tool");
    assert!(a["error"]["data"].get("url").is_none(), "{a}");
    assert!(
        status == 403 || h["cada-refused-status"] == "403",
        "{status} {h:?}"
    );
    assert!(r.daemon.lock().unwrap().filed.is_empty());
    let m = r.metrics().await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("cada_parent_proxy_step_up_total{event=\"passed_granted\"} 1")),
        "{m}"
    );
    // The enclave's own refusal is still put to the owner.
    let a = r.call(&[], &transfer(2, None)).await;
    assert_eq!(a["error"]["data"]["code"], "stepup.required", "{a}");
    assert_eq!(r.daemon.lock().unwrap().filed.len(), 1);
}

/// Review stepup-1, I6: calls held for one request share its polls — five held calls poll
/// as one would (first poll, pending, approved: three), and all five go through.
#[tokio::test]
async fn held_calls_for_one_request_share_its_polls() {
    let r = Arc::new(
        rig(
            "wait-many",
            Mode::Wait(Duration::from_secs(60)),
            Duration::from_secs(3600),
        )
        .await,
    );
    r.polls(&["pending", "pending", "approved"]);
    let first = {
        let r = Arc::clone(&r);
        tokio::spawn(async move { r.call(&[], &transfer(1, None)).await })
    };
    // Held: filed and polled once (the request is pending in the proxy from then on).
    while r.daemon.lock().unwrap().polled == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut calls = vec![first];
    for n in 2..=5 {
        let r = Arc::clone(&r);
        calls.push(tokio::spawn(async move {
            r.call(&[], &transfer(n, None)).await
        }));
    }
    for c in calls {
        let a = c.await.unwrap();
        assert_eq!(a["result"]["content"][0]["text"], "did transfer", "{a}");
    }
    let d = r.daemon.lock().unwrap();
    assert_eq!(d.filed.len(), 1);
    assert_eq!(d.polled, 3, "one poll per interval for five held calls");
}

#[tokio::test]
async fn without_an_approval_service_the_refusal_is_as_before() {
    let r = rig("none", Mode::Ask, super::KEEPALIVE_EVERY).await;
    r.daemon.lock().unwrap().no_step_up = true;
    let a = r.call(&[], &transfer(1, None)).await;
    assert_eq!(a["error"]["data"]["code"], "proxy.sign", "{a}");
    assert!(a["error"]["message"]
        .as_str()
        .unwrap()
        .contains("contract.not_permitted.tool"));
    // And with --step-up off nothing is filed at all.
    let r = rig("off", Mode::Off, super::KEEPALIVE_EVERY).await;
    let a = r.call(&[], &transfer(1, None)).await;
    assert_eq!(a["error"]["data"]["code"], "proxy.sign", "{a}");
    assert!(r.daemon.lock().unwrap().filed.is_empty());
}

#[tokio::test]
async fn wait_mode_holds_an_sse_answer_alive_and_finishes_it() {
    let r = rig(
        "wait-sse",
        Mode::Wait(Duration::from_secs(60)),
        Duration::from_millis(20),
    )
    .await;
    // First poll pending, the second (one interval later) approved.
    r.polls(&["pending", "approved"]);
    let (status, h, b) = r
        .post(
            &[("accept", "application/json, text/event-stream")],
            &transfer(1, None),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(h["content-type"], "text/event-stream");
    assert!(b.starts_with(": cada step-up pending\n\n"), "{b}");
    let (comments, event) = b.split_at(b.find("event: message\n").expect(&b));
    assert!(comments
        .split("\n\n")
        .all(|c| c.is_empty() || c == ": cada step-up pending"));
    let data: String = event
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    let a: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(a["result"]["content"][0]["text"], "did transfer", "{a}");
    assert_eq!(r.daemon.lock().unwrap().polled, 2);
}

#[tokio::test]
async fn wait_mode_without_sse_answers_a_denial_as_an_error() {
    let r = rig(
        "wait-json",
        Mode::Wait(Duration::from_secs(60)),
        Duration::from_millis(20),
    )
    .await;
    r.polls(&["denied"]);
    let (status, h, b) = r.post(&[], &transfer(1, None)).await;
    assert_eq!(status, 200);
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let a: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(a["error"]["data"]["code"], "stepup.denied", "{a}");
}
