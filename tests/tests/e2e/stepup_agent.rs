//! Step-up on the agent's side with the official MCP SDKs (issue 23 acceptance): an
//! unmodified client calls a tool the owner's contract does not grant through
//! `cada-parent proxy`; the enclave refuses to sign, the daemon files a step-up request with
//! the owner's approval service (the real `cada_approval::stepup` API, served in process,
//! deciding real enclave proofs and evidence), and the client receives a URL elicitation in
//! the version it speaks — Python `mcp` 2.3.0 in 2025-11-25 (`-32042`) and in 2026-07-28
//! (`InputRequiredResult`, driven by the SDK itself), without an elicitation capability (the
//! plain error), the TypeScript `@modelcontextprotocol/sdk` 1.32.2 (`-32042`) and its
//! 2026-07-28 client `@modelcontextprotocol/client` 2.4.0 (`InputRequiredResult`). The test
//! plays the owner through the service's own decision API (`Service::decide`, what the
//! passkey page calls; the page itself is the browser test's): approved, the retry goes
//! through under a one-transaction grant signed by the owner key; denied, it fails with
//! `stepup.denied`. With `--step-up wait=…` the SDK's call is held, kept alive past a
//! keep-alive comment, and completes once approved, with no retry by the client.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cada_approval::stepup::{self as approval, Config, Decision, Limits, Revocation, Service};
use cada_attestation_verifier::nonce::NonceIssuer;
use cada_attestation_verifier::Policy;
use cada_e2e::mcp_interop::*;
use cada_e2e::*;
use cada_pipeline::fleet::Fleet;
use cada_pipeline::replay::Replay;
use serde_json::{json, Value};

/// The pinned TypeScript SDK (2025-11-25).
const TS_SDK: &str = "@modelcontextprotocol/sdk@1.32.2";
/// The pinned TypeScript SDK's 2026-07-28 client package.
const TS_CLIENT: &str = "@modelcontextprotocol/client@2.4.0";

/// The owner's approval service in process, and an approver endpoint for the clients: POST
/// `{"url": PAGE, "decision": "approve"|"deny"}` decides the request of that page.
struct Approval {
    rt: tokio::runtime::Runtime,
    svc: Arc<Service>,
    approver: String,
}

impl Approval {
    fn start(d: &Path, agent: &LockedAgent, port: u16) -> Approval {
        let policy = d.join("approval-policy.toml");
        std::fs::write(
            &policy,
            format!(
                "[roots]\nnitro = [{:?}]\n[[audience]]\nprefix = \"http://localhost:{port}/\"\nmeasurements = [{{ PCR0 = \"{}\" }}]\n",
                d.join("state/sim-root.der").display().to_string(),
                agent.pcr0
            ),
        )
        .unwrap();
        let key =
            cada_contract::OwnerKey::from_key_file(&std::fs::read_to_string(&agent.key).unwrap())
                .unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let audit_dir = d.join("approval-audit");
        let (svc, approver) = rt.block_on(async {
            let policy = Policy::load(&policy).unwrap();
            let pipeline = cada_pipeline::AppState::new(
                policy,
                Replay::from_option("memory", 10_000, Duration::from_millis(300)).unwrap(),
                cada_audit::AuditLog::open(&audit_dir, 16 * 1024 * 1024).unwrap(),
                NonceIssuer::random(),
                cada_pipeline::Limits {
                    max_body: cada_protocol::stepup::MAX_REQUEST_BODY,
                    max_concurrency: 64,
                    rate_per_client: 0,
                },
                false,
                Fleet::from_option("memory", Duration::from_millis(300)).unwrap(),
            );
            let svc = Service::new(
                Config {
                    public_url: format!("http://localhost:{port}"),
                    limits: Limits::default(),
                    revocation: Revocation::None,
                    webhook: None,
                },
                key,
                pipeline,
                approval::system_clock(),
            )
            .unwrap();
            let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            let app = approval::router(Arc::clone(&svc));
            tokio::spawn(async move { axum::serve(l, app).await });
            let decider = Arc::clone(&svc);
            let app = axum::Router::new().route(
                "/decide",
                axum::routing::post(move |axum::Json(b): axum::Json<Value>| {
                    let svc = Arc::clone(&decider);
                    async move {
                        let url = b["url"].as_str().unwrap_or_default();
                        let id = url.rsplit('/').next().unwrap_or_default().to_owned();
                        let d = match b["decision"].as_str() {
                            Some("deny") => Decision::Deny,
                            _ => Decision::ApproveOnce,
                        };
                        match svc.decide(&id, d, "test:owner").await {
                            Ok(_) => (axum::http::StatusCode::OK, String::new()),
                            Err(e) => (axum::http::StatusCode::CONFLICT, e.to_string()),
                        }
                    }
                }),
            );
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let approver = format!("http://{}/decide", l.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(l, app).await });
            (svc, approver)
        });
        Approval { rt, svc, approver }
    }
}

/// An enclave locked to its owner, a contract granting `echo` and naming the approval
/// service, a Python SDK server, the service, and a proxy for each step-up mode asked.
struct Rig {
    _dir: TempDir,
    d: PathBuf,
    agent: LockedAgent,
    py: PathBuf,
    approval: Approval,
    _server: Py,
    server: u16,
}

impl Rig {
    fn start(tag: &str) -> Rig {
        let py = python(Path::new(env!("CARGO_TARGET_TMPDIR")));
        let dir = TempDir::new(tag);
        let d = dir.0.clone();
        let agent = LockedAgent::start(&d, &[]);
        let (server, ap) = (free_port(), free_port());
        let step_up = format!("http://localhost:{ap}");
        let audience = format!("http://127.0.0.1:{server}/");
        agent.grant(
            &d,
            &[
                "--audience",
                &audience,
                "--method",
                "POST",
                "--method",
                "GET",
                "--method",
                "DELETE",
                "--tool",
                "echo",
                "--step-up",
                &step_up,
            ],
        );
        let srv = start_server(&py, &d, "server", server, false);
        let approval = Approval::start(&d, &agent, ap);
        Rig {
            _dir: dir,
            d,
            agent,
            py,
            approval,
            _server: srv,
            server,
        }
    }

    /// `cada-parent proxy --step-up MODE` in front of the server: its process, URL and port.
    fn proxy(&self, mode: &str) -> (Proc, String, u16) {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let upstream = format!("http://127.0.0.1:{}/mcp", self.server);
        let p = spawn_ready(
            "cada-parent",
            &[
                "proxy",
                "--socket",
                self.agent.sock.to_str().unwrap(),
                "--listen",
                &listen,
                "--upstream",
                &upstream,
                "--step-up",
                mode,
            ],
            &self.d.join(format!("proxy-{port}.log")),
        );
        (p, format!("http://127.0.0.1:{port}/mcp"), port)
    }

    fn py_client(
        &self,
        url: &str,
        mode: &str,
        args: &Value,
        decision: &str,
        extra: &[&str],
    ) -> Value {
        let out = Command::new(&self.py)
            .arg(interop().join("stepup_client.py"))
            .arg(url)
            .args(["--tool", "add", "--args", &args.to_string(), "--mode", mode])
            .args([
                "--approver",
                &self.approval.approver,
                "--decision",
                decision,
            ])
            .args(extra)
            .output()
            .unwrap();
        report(&out)
    }

    /// Grants installed in the enclave so far (their digests), from the daemon.
    fn installed(&self) -> usize {
        let (_, text) = http(
            &self.agent.sock,
            "GET",
            "/v1/contracts",
            None,
            Duration::from_secs(5),
        )
        .unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        v["contracts"].as_array().map_or(0, Vec::len)
    }
}

fn report(out: &std::process::Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "client output is not JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `cada_parent_proxy_step_up_total{event}` of the proxy on `port`.
fn step_up_events(port: u16, event: &str) -> u64 {
    let (st, _, text) = send(port, "GET", "/_cada/metrics", &[], b"");
    assert_eq!(st, 200, "{text}");
    let line = format!("cada_parent_proxy_step_up_total{{event=\"{event}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |n| n.trim().parse().unwrap())
}

fn data_code(call: &Value) -> &str {
    call["data"]["code"].as_str().unwrap_or_default()
}

#[test]
fn python_and_typescript_sdks_receive_the_url_elicitation_and_retry_after_approval() {
    let rig = Rig::start("stepup-agent");
    let (_proxy, url, _) = rig.proxy("ask");
    let before = rig.installed();

    // 1. Python, 2025-11-25 (initialize handshake): URLElicitationRequiredError (-32042)
    //    read by the SDK's own error type; approved; the same call again succeeds.
    let r = rig.py_client(&url, "legacy", &json!({"a": 1, "b": 2}), "approve", &[]);
    assert_eq!(r["protocol_version"], "2025-11-25", "{r}");
    assert_eq!(r["first"]["code"], -32042, "{r}");
    let e = &r["elicitations"][0];
    assert_eq!(
        (e["mode"].as_str(), e["via"].as_str()),
        (Some("url"), Some("error")),
        "{r}"
    );
    let page = e["url"].as_str().unwrap();
    assert!(
        page.starts_with(&rig.approval.svc.public_url().to_string()),
        "{page}"
    );
    assert!(
        e["elicitation_id"]
            .as_str()
            .is_some_and(|i| page.ends_with(i)),
        "{r}"
    );
    assert_eq!(r["final"], json!({"ok": true, "result": "3"}), "{r}");
    assert_eq!(rig.installed(), before + 1, "the grant is installed");

    // 2. The same, denied: a clean failure naming the rule.
    let r = rig.py_client(&url, "legacy", &json!({"a": 1, "b": 3}), "deny", &[]);
    assert_eq!(r["first"]["code"], -32042, "{r}");
    assert_eq!(r["final"]["ok"], false, "{r}");
    assert_eq!(data_code(&r["final"]), "stepup.denied", "{r}");
    assert!(
        r["final"]["error"]
            .as_str()
            .unwrap()
            .starts_with("[stepup.denied]"),
        "{r}"
    );

    // 3. Python, 2026-07-28: the SDK receives the InputRequiredResult, runs the elicitation
    //    callback (the user opens the page, the owner approves) and retries by itself.
    let r = rig.py_client(&url, "2026-07-28", &json!({"a": 2, "b": 2}), "approve", &[]);
    assert_eq!(r["protocol_version"], "2026-07-28", "{r}");
    let e = &r["elicitations"][0];
    assert_eq!(
        (e["mode"].as_str(), e["via"].as_str()),
        (Some("url"), Some("callback")),
        "{r}"
    );
    assert!(
        e["elicitation_id"].is_null(),
        "2026-07-28 has no elicitationId: {r}"
    );
    assert!(e["url"].as_str().unwrap().contains("/r/"), "{r}");
    assert_eq!(r["first"], json!({"ok": true, "result": "4"}), "{r}");

    // 4. 2026-07-28, denied: the SDK's retry fails with stepup.denied.
    let r = rig.py_client(&url, "2026-07-28", &json!({"a": 2, "b": 3}), "deny", &[]);
    assert_eq!(r["elicitations"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["final"]["ok"], false, "{r}");
    assert_eq!(data_code(&r["final"]), "stepup.denied", "{r}");

    // 5. A client that declared no URL elicitation: the plain error carries the URL.
    let r = rig.py_client(
        &url,
        "legacy",
        &json!({"a": 3, "b": 3}),
        "approve",
        &["--no-elicitation"],
    );
    assert_eq!(r["first"]["code"], -32000, "{r}");
    assert_eq!(data_code(&r["first"]), "stepup.required", "{r}");
    assert_eq!(r["elicitations"][0]["via"], "plain-error", "{r}");
    assert_eq!(r["final"], json!({"ok": true, "result": "6"}), "{r}");

    // 6. The TypeScript SDK (2025-11-25): UrlElicitationRequiredError, approve, retry.
    let dir = npm_package(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "node-mcp-sdk-1.32.2",
        TS_SDK,
    );
    let script = dir.join("stepup_client.mjs");
    std::fs::copy(interop().join("stepup_client.mjs"), &script).unwrap();
    let node = |args: &Value, decision: &str| {
        let out = Command::new("node")
            .arg(&script)
            .args([
                url.as_str(),
                "add",
                &args.to_string(),
                &rig.approval.approver,
                decision,
            ])
            .stderr(Stdio::piped())
            .output()
            .expect("node (the interop test does not skip)");
        report(&out)
    };
    let r = node(&json!({"a": 4, "b": 4}), "approve");
    assert_eq!(r["first"]["type"], "UrlElicitationRequiredError", "{r}");
    assert_eq!(r["first"]["code"], -32042, "{r}");
    assert_eq!(r["elicitations"][0]["mode"], "url", "{r}");
    assert!(r["elicitations"][0]["elicitationId"].is_string(), "{r}");
    assert_eq!(r["final"], json!({"ok": true, "result": "8"}), "{r}");
    let r = node(&json!({"a": 4, "b": 5}), "deny");
    assert_eq!(r["first"]["code"], -32042, "{r}");
    assert_eq!(r["final"]["ok"], false, "{r}");
    assert_eq!(data_code(&r["final"]), "stepup.denied", "{r}");

    // 7. The TypeScript SDK's 2026-07-28 client: it fulfils the InputRequiredResult through
    //    its elicitation/create handler and retries by itself.
    let dir = npm_package(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "node-mcp-client-2.4.0",
        TS_CLIENT,
    );
    let script = dir.join("stepup_client_modern.mjs");
    std::fs::copy(interop().join("stepup_client_modern.mjs"), &script).unwrap();
    let modern = |args: &Value, decision: &str| {
        let out = Command::new("node")
            .arg(&script)
            .args([
                url.as_str(),
                "add",
                &args.to_string(),
                &rig.approval.approver,
                decision,
            ])
            .stderr(Stdio::piped())
            .output()
            .expect("node (the interop test does not skip)");
        report(&out)
    };
    let r = modern(&json!({"a": 5, "b": 5}), "approve");
    assert_eq!(r["protocol_version"], "2026-07-28", "{r}");
    assert_eq!(r["elicitations"][0]["mode"], "url", "{r}");
    assert!(r["elicitations"][0].get("elicitationId").is_none(), "{r}");
    assert_eq!(r["first"], json!({"ok": true, "result": "10"}), "{r}");
    let r = modern(&json!({"a": 5, "b": 6}), "deny");
    assert_eq!(r["first"]["ok"], false, "{r}");
    assert_eq!(data_code(&r["first"]), "stepup.denied", "{r}");

    // Every request was answered: none is left for the owner.
    assert!(rig.approval.svc.pending().is_empty());
}

#[test]
fn wait_mode_holds_the_sdk_call_and_completes_it_after_approval() {
    let rig = Rig::start("stepup-wait");
    let (_proxy, url, port) = rig.proxy("wait=2m");
    // An SDK client without any elicitation support (a headless agent), 2026-07-28: its
    // call is held while the owner decides.
    let child = Command::new(&rig.py)
        .arg(interop().join("stepup_client.py"))
        .arg(&url)
        .args([
            "--tool",
            "add",
            "--args",
            r#"{"a": 20, "b": 22}"#,
            "--mode",
            "2026-07-28",
        ])
        .args([
            "--approver",
            &rig.approval.approver,
            "--no-elicitation",
            "--timeout",
            "100",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let svc = Arc::clone(&rig.approval.svc);
    let id = rig.approval.rt.block_on(async move {
        loop {
            if let Some(r) = svc.pending().first() {
                return r.id.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // Decided after the first keep-alive comment (every 10 s): the SDK must read past it.
    std::thread::sleep(Duration::from_secs(11));
    let svc = Arc::clone(&rig.approval.svc);
    rig.approval
        .rt
        .block_on(async move { svc.decide(&id, Decision::ApproveOnce, "test:owner").await })
        .unwrap();
    let r = report(&child.wait_with_output().unwrap());
    assert!(r["elicitations"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(r["first"], json!({"ok": true, "result": "42"}), "{r}");
    // The answer was an SSE stream kept alive by at least one comment before the result.
    assert!(step_up_events(port, "keepalive") >= 1);
    assert_eq!(step_up_events(port, "approved"), 1);

    // Denied while held: the call fails with the rule, no retry needed.
    let child = Command::new(&rig.py)
        .arg(interop().join("stepup_client.py"))
        .arg(&url)
        .args([
            "--tool",
            "add",
            "--args",
            r#"{"a": 1, "b": 1}"#,
            "--mode",
            "legacy",
        ])
        .args(["--approver", &rig.approval.approver, "--no-elicitation"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let svc = Arc::clone(&rig.approval.svc);
    rig.approval.rt.block_on(async move {
        loop {
            if let Some(r) = svc.pending().first() {
                svc.decide(&r.id, Decision::Deny, "test:owner")
                    .await
                    .unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let r = report(&child.wait_with_output().unwrap());
    assert_eq!(r["first"]["ok"], false, "{r}");
    assert_eq!(data_code(&r["first"]), "stepup.denied", "{r}");
}
