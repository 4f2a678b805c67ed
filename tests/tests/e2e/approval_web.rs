//! The owner's approval page in a real browser (issue 23 acceptance): headless Chromium
//! (Debian's `chromium` + `chromium-driver`) driven by Selenium with a virtual WebAuthn
//! authenticator registers a passkey with the one-time code, signs out and in, approves one
//! request and denies another; a page without a session and a form posted from another site
//! are refused. The page is `cada_approval::web` served on a loopback port as
//! `http://localhost:PORT`, over a step-up store that records the decisions it is handed.
//! Screenshots: `target/tmp/approval-web-screenshots/` (artifacts, not committed).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cada_approval::web::{
    DecideError, Decision, DecisionOutcome, RefusalView, RegistrationCode, RequestStatus,
    RequestView, Requests, Web, WebConfig,
};

#[derive(Default)]
struct Store {
    requests: Mutex<Vec<RequestView>>,
    decided: Mutex<Vec<(String, Decision, String)>>,
}

impl Requests for Store {
    fn pending(&self) -> Vec<RequestView> {
        let rs = self.requests.lock().unwrap();
        rs.iter()
            .filter(|r| r.status == RequestStatus::Pending)
            .cloned()
            .collect()
    }
    fn get(&self, id: &str) -> Option<RequestView> {
        let rs = self.requests.lock().unwrap();
        rs.iter().find(|r| r.id == id).cloned()
    }
    fn decide(&self, id: &str, d: Decision, who: &str) -> Result<DecisionOutcome, DecideError> {
        let mut rs = self.requests.lock().unwrap();
        let Some(r) = rs.iter_mut().find(|r| r.id == id) else {
            return Err(DecideError {
                code: "stepup.unknown".into(),
                message: "no such request".into(),
            });
        };
        if r.status != RequestStatus::Pending {
            return Err(DecideError {
                code: "stepup.decided".into(),
                message: "already answered".into(),
            });
        }
        r.status = match d {
            Decision::Deny => RequestStatus::Denied,
            _ => RequestStatus::Approved,
        };
        self.decided
            .lock()
            .unwrap()
            .push((id.to_owned(), d, who.to_owned()));
        Ok(DecisionOutcome {
            status: r.status,
            message: format!("request {id} {}", r.status.as_str()),
        })
    }
}

fn request(id: &str, tool: &str, arguments: serde_json::Value) -> RequestView {
    RequestView {
        id: id.into(),
        agent_did: "did:key:zDnaerx9CtbPJ1q36T5Ln5wYt3MQYeGRG5ehnPAmxcf5mDZpv".into(),
        platform: "sim".into(),
        measurement: "5e".repeat(48),
        contract: "sha-256:8c2f0a1d".into(),
        contract_summary: Some(
            serde_json::json!({"tools": ["search"], "validUntil": "2030-01-01T00:00:00Z"}),
        ),
        audience: "https://mcp.example/mcp".into(),
        method: "POST".into(),
        tool: tool.into(),
        arguments,
        refusal: RefusalView {
            code: "contract.not_permitted.tool".into(),
            by: "enclave".into(),
            server: "https://mcp.example/mcp".into(),
            message: "the contract does not grant this tool".into(),
        },
        want: "once".into(),
        created_at: now(),
        expires_at: now() + 600,
        status: RequestStatus::Pending,
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Chromium, chromedriver and the pinned Selenium, installed by the project's script.
pub(crate) struct Browser {
    pub python: PathBuf,
    pub chromium: String,
    pub chromedriver: String,
}

pub(crate) fn install_browser(tmp: &Path) -> Browser {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/browser/install.sh");
    let dir = tmp.join("browser-python");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "installing Chromium/chromedriver (apt) and Selenium (PyPI) failed; the test does not skip:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let get = |k: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("install.sh printed no {k}: {stdout}"))
            .to_owned()
    };
    Browser {
        python: dir.join("bin/python"),
        chromium: get("chromium="),
        chromedriver: get("chromedriver="),
    }
}

/// Runs the Selenium driver; returns its JSON report and how long it took.
pub(crate) fn drive(
    b: &Browser,
    url: &str,
    code: &str,
    approve: &str,
    deny: &str,
    csrf_target: &str,
    shots: &Path,
) -> (serde_json::Value, f64) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/browser/approval.py");
    let t = Instant::now();
    let out = Command::new(&b.python)
        .arg(&script)
        // `--name=value`: request ids are base64url and may begin with '-', which argparse
        // would read as an option.
        .args([
            format!("--url={url}"),
            format!("--code={code}"),
            format!("--approve={approve}"),
            format!("--deny={deny}"),
            format!("--csrf-target={csrf_target}"),
        ])
        .arg("--screenshots")
        .arg(shots)
        .args(["--chromium", &b.chromium, "--chromedriver", &b.chromedriver])
        .output()
        .expect("python");
    let secs = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "the browser driver printed no report:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        out.status.success() && report["ok"] == true,
        "browser run failed: {}\nstderr: {}",
        serde_json::to_string_pretty(&report).unwrap(),
        String::from_utf8_lossy(&out.stderr)
    );
    (report, secs)
}

#[test]
fn a_browser_registers_a_passkey_signs_in_approves_and_denies() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let browser = install_browser(tmp);
    let state_dir = tmp.join(format!("approval-web-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state_dir);
    let shots = tmp.join("approval-web-screenshots");
    let _ = std::fs::remove_dir_all(&shots);

    let store = Arc::new(Store::default());
    store.requests.lock().unwrap().extend([
        request(
            "req-approve",
            "transfer",
            serde_json::json!({"amount": 500, "currency": "USD", "to": "alice",
                               "memo": "<script>alert(1)</script>\u{202E}txt.exe"}),
        ),
        request(
            "req-deny",
            "tr\u{430}nsfer",
            serde_json::json!({"amount": 900000, "to": "\u{430}lice\u{200D}"}),
        ),
        request(
            "req-csrf",
            "delete_repo",
            serde_json::json!({"name": "prod"}),
        ),
    ]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = format!("http://localhost:{port}");
    let codes: Arc<Mutex<Vec<RegistrationCode>>> = Arc::default();
    let sink = Arc::clone(&codes);
    let web = Web::new(
        &WebConfig {
            public_url: url.clone(),
            state_dir: state_dir.clone(),
        },
        store.clone(),
        Arc::new(now),
        Arc::new(move |c: &RegistrationCode| sink.lock().unwrap().push(c.clone())),
    )
    .unwrap();
    let router = web.router();
    rt.spawn(async move { axum::serve(listener, router).await });
    let code = codes.lock().unwrap()[0].code.clone();

    let (report, secs) = drive(
        &browser,
        &url,
        &code,
        "req-approve",
        "req-deny",
        "req-csrf",
        &shots,
    );
    eprintln!(
        "approval_web: browser run {secs:.1} s ({}), screenshots in {}",
        report["browser"],
        shots.display()
    );
    // What the browser saw: the hostile strings escaped, not executed or hidden.
    let shown = &report["shown"];
    assert!(
        shown["arguments"]
            .as_str()
            .unwrap()
            .contains("<script>alert(1)</script>\\u{202e}txt.exe"),
        "{shown}"
    );
    assert_eq!(shown["tool"], "transfer");
    // The decisions reached the store, each under the passkey that signed in.
    let decided = store.decided.lock().unwrap().clone();
    assert_eq!(decided.len(), 2, "{decided:?}");
    assert_eq!(decided[0].0, "req-approve");
    assert_eq!(decided[0].1, Decision::ApproveOnce);
    assert_eq!(decided[1].0, "req-deny");
    assert_eq!(decided[1].1, Decision::Deny);
    assert!(decided[0].2.starts_with("passkey:"));
    // The cross-site POST decided nothing.
    let status = |id: &str| store.get(id).unwrap().status;
    assert_eq!(status("req-approve"), RequestStatus::Approved);
    assert_eq!(status("req-deny"), RequestStatus::Denied);
    assert_eq!(status("req-csrf"), RequestStatus::Pending);
    // The passkey was persisted, 0600.
    let meta = std::fs::metadata(state_dir.join("webauthn-credentials.json")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    assert!(
        std::fs::read_dir(&shots).unwrap().count() >= 8,
        "screenshots kept"
    );
    let _ = std::fs::remove_dir_all(&state_dir);
}

/// `POST` `body` to the daemon at `sock`; (status, JSON answer).
fn daemon_post(sock: &Path, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let (st, text) = cada_e2e::http(
        sock,
        "POST",
        path,
        Some(&body.to_string()),
        std::time::Duration::from_secs(15),
    )
    .unwrap();
    (
        st,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

fn file_step_up(sock: &Path, tool: &str, arguments: serde_json::Value) -> serde_json::Value {
    let (st, v) = daemon_post(
        sock,
        "/v1/step-up",
        &serde_json::json!({
            "audience": "https://mcp.example/mcp",
            "tool": tool,
            "arguments": arguments,
            "refusal": {"code": "contract.not_permitted.tool", "by": "enclave",
                        "server": "https://mcp.example/mcp",
                        "message": format!("MCP tool {tool:?} is not granted")},
            "want": "once"
        }),
    );
    assert_eq!(st, 200, "filing through the daemon: {v}");
    v
}

#[test]
fn through_cada_owner_serve_an_approval_installs_a_grant_and_a_denial_is_final() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let browser = install_browser(tmp);
    let dir = cada_e2e::TempDir::new("approval-web-serve");
    let d = &dir.0;
    let shots = tmp.join("approval-web-serve-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let agent = cada_e2e::mcp_interop::LockedAgent::start(d, &[]);
    let port = cada_e2e::free_port();
    let public = format!("http://localhost:{port}");
    // A standing contract naming the approval service: the enclave signs step-up proofs
    // for it and nothing else.
    cada_e2e::owner_to(
        d,
        "standing.jwt",
        &[
            "grant",
            "--key",
            &agent.key,
            "--subject",
            &agent.did,
            "--audience",
            "https://mcp.example/mcp",
            "--method",
            "POST",
            "--tool",
            "search",
            "--step-up",
            &public,
            "--valid-for",
            "1h",
            "--no-revocation",
        ],
    );
    let (code, _, err) = cada_e2e::parent(
        &agent.sock,
        &[
            "contract",
            "install",
            d.join("standing.jwt").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let policy = d.join("approval-policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[roots]\nnitro = [{:?}]\n[[audience]]\nprefix = \"{public}/\"\nmeasurements = [{{ PCR0 = \"{}\" }}]\n",
            d.join("state/sim-root.der").display().to_string(),
            agent.pcr0
        ),
    )
    .unwrap();
    let serve = cada_e2e::owner_serve::start(
        &[
            "serve",
            "--key",
            &agent.key,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--public-url",
            &public,
            "--policy",
            policy.to_str().unwrap(),
            "--audit-dir",
            d.join("audit").to_str().unwrap(),
            "--state-dir",
            d.join("approval-state").to_str().unwrap(),
        ],
        &d.join("serve.log"),
    );

    // Three requests filed by the enclave through its daemon (real proofs and evidence).
    let approve = file_step_up(
        &agent.sock,
        "transfer",
        serde_json::json!({"amount": 500, "to": "alice"}),
    );
    let deny = file_step_up(
        &agent.sock,
        "tr\u{430}nsfer",
        serde_json::json!({"amount": 900_000, "to": "\u{430}lice\u{202E}"}),
    );
    let untouched = file_step_up(
        &agent.sock,
        "delete_repo",
        serde_json::json!({"name": "prod"}),
    );
    let id = |v: &serde_json::Value| v["id"].as_str().unwrap().to_owned();
    assert_eq!(approve["url"], format!("{public}/r/{}", id(&approve)));

    let (report, secs) = drive(
        &browser,
        &public,
        &serve.code,
        &id(&approve),
        &id(&deny),
        &id(&untouched),
        &shots,
    );
    eprintln!(
        "approval_web (cada-owner serve): browser run {secs:.1} s ({}), screenshots in {}",
        report["browser"],
        shots.display()
    );
    assert_eq!(report["shown"]["agent-did"], agent.did.as_str());
    assert!(
        report["shown"]["measurement"]
            .as_str()
            .unwrap()
            .contains(&agent.pcr0),
        "{}",
        report["shown"]
    );

    // Through the API: the approved request's grant is handed to the enclave and installed;
    // the denied one answers stepup.denied; the one the cross-site form named still waits.
    let poll = |v: &serde_json::Value| {
        daemon_post(
            &agent.sock,
            "/v1/step-up/poll",
            &serde_json::json!({"step_up": v["step_up"], "id": v["id"]}),
        )
    };
    let (st, p) = poll(&approve);
    assert_eq!(st, 200, "{p}");
    assert_eq!(p["status"], "approved", "{p}");
    assert!(
        p["installed"].as_str().is_some_and(|s| !s.is_empty()),
        "{p}"
    );
    let (_, p) = poll(&deny);
    assert_eq!(p["status"], "denied", "{p}");
    assert_eq!(p["code"], "stepup.denied", "{p}");
    let (_, p) = poll(&untouched);
    assert_eq!(p["status"], "pending", "{p}");
    drop(serve.proc);
}
