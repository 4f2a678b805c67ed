//! The step-up API of `cada-owner serve` against real sim enclaves: a request filed and
//! polled with real proofs (the enclave signs them under a contract naming the service,
//! `grant --step-up`), the webhook's notice, the per-key limit, the audit chain; refused
//! with their codes: an enclave of another owner, a first proof without evidence, a
//! replayed proof, a poll by another enclave of the same owner, an unbound body.
//! Approving through the page needs a passkey: the browser test does that.
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::time::Duration;

use cada_e2e::mcp_interop::LockedAgent;
use cada_e2e::*;
use serde_json::{json, Value};

/// One HTTP/1.1 request to 127.0.0.1:`port` with `headers`; (status, head, body).
fn call(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, String, Value) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (h, b) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        status,
        h.to_ascii_lowercase(),
        serde_json::from_str(b).unwrap_or(Value::Null),
    )
}

/// A proof from the daemon at `sock` for `method url`, bound to `body` when given; with
/// the evidence (and the contract) when `with_evidence`.
fn proof(sock: &Path, method: &str, url: &str, body: Option<&[u8]>, with_evidence: bool) -> Value {
    let mut req = json!({"method": method, "url": url, "with_evidence": with_evidence});
    if let Some(b) = body {
        req["bd"] = cada_protocol::mcp::body_digest(b).into();
    }
    let (st, text) = http(
        sock,
        "POST",
        "/v1/pop",
        Some(&req.to_string()),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(st, 200, "POST /v1/pop {method} {url}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// The headers of a step-up request made with `p` (a `proof` answer) for `body`.
fn headers(p: &Value, body: Option<&[u8]>) -> Vec<(String, String)> {
    let mut h = vec![("DPoP".to_owned(), p["dpop"].as_str().unwrap().to_owned())];
    for (name, field) in [("CADA-Evidence", "evidence"), ("CADA-Contract", "contract")] {
        if let Some(v) = p[field].as_str() {
            h.push((name.to_owned(), v.to_owned()));
        }
    }
    if let Some(b) = body {
        h.push((
            "Content-Digest".to_owned(),
            cada_protocol::mcp::content_digest(b),
        ));
        h.push(("Content-Type".to_owned(), "application/json".to_owned()));
    }
    h
}

fn body(dtc: &str, tool: &str, amount: u64) -> Vec<u8> {
    json!({
        "contract": dtc,
        "request": {"audience": "https://mcp.example/mcp", "method": "POST", "tool": tool,
                    "arguments": {"amount": amount, "to": "alice"}},
        "refusal": {"code": "contract.not_permitted.tool", "by": "enclave",
                    "server": "https://mcp.example/mcp",
                    "message": "MCP tool \"transfer\" is not granted"},
        "want": "once"
    })
    .to_string()
    .into_bytes()
}

/// Files `body` from the daemon at `sock`: (status, head, answer).
fn file(port: u16, sock: &Path, body: &[u8], with_evidence: bool) -> (u16, String, Value) {
    let p = proof(
        sock,
        "POST",
        &format!("http://localhost:{port}/v1/step-up"),
        Some(body),
        with_evidence,
    );
    call(port, "POST", "/v1/step-up", &headers(&p, Some(body)), body)
}

fn poll(port: u16, sock: &Path, id: &str) -> (u16, Value) {
    let path = format!("/v1/step-up/{id}");
    let p = proof(
        sock,
        "GET",
        &format!("http://localhost:{port}{path}"),
        None,
        true,
    );
    let (st, _, v) = call(port, "GET", &path, &headers(&p, None), b"");
    (st, v)
}

/// An enclave and daemon in `d` locked to the owner whose key file is `key`: the
/// processes, the daemon's socket, the enclave key's DID and the image's PCR0.
fn locked_to(d: &Path, key: &str) -> (Proc, Proc, std::path::PathBuf, String, String) {
    let enclave = start_enclave(d, &[]);
    let parent_proc = start_parent(d, &[]);
    let sock = d.join("agent.sock");
    let (_, id) = http(&sock, "GET", "/v1/identity", None, Duration::from_secs(5)).unwrap();
    let id: Value = serde_json::from_str(&id).unwrap();
    let did = id["did"].as_str().unwrap().to_owned();
    let pcr0 = id["measurements"]["PCR0"].as_str().unwrap().to_owned();
    owner_to(d, "lock.jwt", &["lock", "--key", key, "--enclave", &did]);
    let lock = d.join("lock.jwt");
    assert_eq!(
        parent(&sock, &["owner", "lock", lock.to_str().unwrap()]).0,
        0
    );
    (enclave, parent_proc, sock, did, pcr0)
}

/// The owner grants `did` a standing contract naming the approval service; installed.
fn grant_step_up(d: &Path, sock: &Path, key: &str, did: &str, port: u16) -> String {
    let service = format!("http://localhost:{port}");
    let contract = owner_to(
        d,
        "standing.jwt",
        &[
            "grant",
            "--key",
            key,
            "--subject",
            did,
            "--audience",
            "https://mcp.example/mcp",
            "--method",
            "POST",
            "--tool",
            "search",
            "--step-up",
            &service,
            "--valid-for",
            "1h",
            "--no-revocation",
        ],
    );
    let (code, _, err) = parent(
        sock,
        &[
            "contract",
            "install",
            d.join("standing.jwt").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    cada_contract::digest_of(&contract)
}

/// A webhook receiver: the first request's body, sent on the channel.
fn webhook() -> (u16, std::sync::mpsc::Receiver<String>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
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
            let _ = r
                .get_mut()
                .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            let _ = tx.send(String::from_utf8_lossy(&b).into_owned());
        }
    });
    (port, rx)
}

#[test]
fn step_up_requests_from_the_owners_enclaves_only() {
    let dir = TempDir::new("stepup-api");
    let d = &dir.0;
    let (da, db, dc) = (d.join("a"), d.join("b"), d.join("c"));
    for x in [&da, &db, &dc] {
        std::fs::create_dir_all(x).unwrap();
    }
    let port = free_port();
    // A: locked to the owner; B: locked to mallory; C: a second enclave of the owner.
    let a = LockedAgent::start(&da, &[]);
    let (mallory_did, mallory_key) = keygen(&db, "mallory");
    let (_eb, _pb, sock_b, did_b, pcr0_b) = locked_to(&db, &mallory_key);
    let (_ec, _pc, sock_c, did_c, pcr0_c) = locked_to(&dc, &a.key);
    let dtc_a = grant_step_up(&da, &a.sock, &a.key, &a.did, port);
    grant_step_up(&db, &sock_b, &mallory_key, &did_b, port);
    grant_step_up(&dc, &sock_c, &a.key, &did_c, port);
    assert_ne!(mallory_did, a.owner_did);

    let roots: Vec<String> = [&da, &db, &dc]
        .iter()
        .map(|x| format!("{:?}", x.join("state/sim-root.der").display().to_string()))
        .collect();
    let policy = d.join("approval-policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[roots]\nnitro = [{}]\n[[audience]]\nprefix = \"http://localhost:{port}/\"\nmeasurements = [{}]\n",
            roots.join(", "),
            [&a.pcr0, &pcr0_b, &pcr0_c]
                .iter()
                .map(|p| format!("{{ PCR0 = \"{p}\" }}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
    .unwrap();
    let (hook_port, hook) = webhook();
    let audit = d.join("approval-audit");
    let listen = format!("127.0.0.1:{port}");
    let public = format!("http://localhost:{port}");
    let hook_url = format!("http://127.0.0.1:{hook_port}/hook");
    let state = d.join("approval-state");
    let _serve = cada_e2e::owner_serve::start(
        &[
            "serve",
            "--key",
            &a.key,
            "--listen",
            &listen,
            "--public-url",
            &public,
            "--policy",
            policy.to_str().unwrap(),
            "--audit-dir",
            audit.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--webhook",
            &hook_url,
        ],
        &d.join("serve.log"),
    );

    // B first, without evidence: its key was never attested here.
    let b_body = body("x", "transfer", 1);
    let (st, _, v) = file(port, &sock_b, &b_body, false);
    assert_eq!(
        (st, v["code"].as_str()),
        (401, Some("stepup.evidence")),
        "{v}"
    );
    assert_eq!(v["rule_code"], "pop.evidence_required", "{v}");
    // With evidence: verified, but locked to another owner.
    let (st, _, v) = file(port, &sock_b, &b_body, true);
    assert_eq!(
        (st, v["code"].as_str()),
        (403, Some("stepup.not_owner")),
        "{v}"
    );
    assert!(v["detail"].as_str().unwrap().contains(&mallory_did), "{v}");

    // A files a request with a real proof and evidence.
    let a_body = body(&dtc_a, "transfer", 500);
    let p = proof(
        &a.sock,
        "POST",
        &format!("{public}/v1/step-up"),
        Some(&a_body),
        true,
    );
    let h = headers(&p, Some(&a_body));
    let (st, head, created) = call(port, "POST", "/v1/step-up", &h, &a_body);
    assert_eq!(st, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 22);
    assert_eq!(created["url"], format!("{public}/r/{id}"));
    assert_eq!(created["poll"], format!("{public}/v1/step-up/{id}"));
    assert_eq!(created["interval"], 2);
    assert!(head.contains(&format!("location: {public}/v1/step-up/{id}").to_ascii_lowercase()));

    // The same proof again: a replay.
    let (st, _, v) = call(port, "POST", "/v1/step-up", &h, &a_body);
    assert_eq!(
        (st, v["code"].as_str()),
        (401, Some("stepup.replay")),
        "{v}"
    );
    // A proof for one body with another body.
    let p = proof(
        &a.sock,
        "POST",
        &format!("{public}/v1/step-up"),
        Some(&a_body),
        true,
    );
    let other = body(&dtc_a, "transfer", 5000);
    let mut h = headers(&p, Some(&other));
    h.retain(|(k, _)| k != "Content-Digest");
    let (st, _, v) = call(port, "POST", "/v1/step-up", &h, &other);
    assert_eq!((st, v["code"].as_str()), (401, Some("pop.body")), "{v}");

    // The webhook names the request, never its arguments.
    let notice: Value =
        serde_json::from_str(&hook.recv_timeout(Duration::from_secs(10)).unwrap()).unwrap();
    assert_eq!(
        notice,
        json!({"id": id, "url": format!("{public}/r/{id}"), "agent": a.did, "tool": "transfer"})
    );

    // Filed again (a retry): the same request, not a second one.
    let (st, _, again) = file(port, &a.sock, &a_body, true);
    assert_eq!(
        (st, again["id"].as_str()),
        (201, Some(id.as_str())),
        "{again}"
    );

    // Polled by the filing key: pending; by C (same owner, another key): refused.
    let (st, v) = poll(port, &a.sock, &id);
    assert_eq!((st, v["status"].as_str()), (200, Some("pending")), "{v}");
    let (st, v) = poll(port, &sock_c, &id);
    assert_eq!(
        (st, v["code"].as_str()),
        (403, Some("stepup.other_key")),
        "{v}"
    );
    // B may not even poll.
    let (st, v) = poll(port, &sock_b, &id);
    assert_eq!(
        (st, v["code"].as_str()),
        (403, Some("stepup.not_owner")),
        "{v}"
    );
    let (st, v) = poll(port, &a.sock, "AAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(
        (st, v["code"].as_str()),
        (404, Some("stepup.unknown")),
        "{v}"
    );

    // The agent side's own route (the daemon signs, posts and reads the answer) files with
    // this service, and polls it.
    let (st, text) = http(
        &a.sock,
        "POST",
        "/v1/step-up",
        Some(
            &json!({"audience": "https://mcp.example/mcp", "tool": "transfer",
                    "arguments": {"amount": 42, "to": "alice"},
                    "refusal": {"code": "contract.not_permitted.tool", "by": "enclave",
                                "server": "https://mcp.example/mcp", "message": "not granted"}})
            .to_string(),
        ),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(st, 200, "{text}");
    let filed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(filed["step_up"], public.as_str(), "{filed}");
    assert_eq!(filed["contract"], dtc_a.as_str(), "{filed}");
    let via_daemon = filed["id"].as_str().unwrap().to_owned();
    assert_ne!(via_daemon, id);
    let (st, text) = http(
        &a.sock,
        "POST",
        "/v1/step-up/poll",
        Some(&json!({"step_up": public, "id": via_daemon}).to_string()),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(st, 200, "{text}");
    let polled: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(polled["status"], "pending", "{polled}");

    // At most five pending per enclave key: three more, then 429 with Retry-After.
    for amount in 1..=3 {
        let (st, _, v) = file(port, &a.sock, &body(&dtc_a, "transfer", amount), true);
        assert_eq!(st, 201, "{v}");
    }
    let (st, head, v) = file(port, &a.sock, &body(&dtc_a, "transfer", 9), true);
    assert_eq!(
        (st, v["code"].as_str()),
        (429, Some("stepup.rate_limited")),
        "{v}"
    );
    let retry: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((1..=600).contains(&retry), "{retry}");
    // C, another key of the same owner, still may.
    let (st, _, v) = file(port, &sock_c, &body("y", "transfer", 9), true);
    assert_eq!(st, 201, "{v}");

    // Metrics and the audit log.
    let (st, _, _) = call(port, "GET", "/healthz", &[], b"");
    assert_eq!(st, 200);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut m = String::new();
    s.read_to_string(&mut m).unwrap();
    assert!(
        m.contains("cada_approval_stepup_events_total{event=\"filed\"} 6"),
        "{m}"
    );
    assert!(
        m.contains("cada_approval_stepup_events_total{event=\"rate_limited\"} 1"),
        "{m}"
    );
    assert!(m.contains("cada_approval_stepup_pending 6"), "{m}");
    let recs = audit_records(&audit);
    let count = |kind: &str, decision: &str| {
        recs.iter()
            .filter(|r| r["kind"] == kind && r["decision"] == decision)
            .count()
    };
    assert_eq!(count("stepup.request", "filed"), 6);
    assert!(recs
        .iter()
        .any(|r| r["kind"] == "stepup.proof" && r["reason"] == "stepup.not_owner"));
    assert!(recs
        .iter()
        .any(|r| r["kind"] == "stepup.proof" && r["reason"] == "stepup.replay"));
    assert!(
        !recs.iter().any(|r| r.to_string().contains("alice")),
        "arguments are logged only as a digest"
    );
    let out = std::process::Command::new(bin("cada-verify"))
        .args(["audit", "verify"])
        .arg(&audit)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
