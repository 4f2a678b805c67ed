//! Chain of custody end to end (issue 24 §5) with the real binaries: a task id and a W3C
//! traceparent go from the client through `cada-parent proxy` into the enclave's proof, the
//! gate forwards them upstream (same trace id, the gate's own span), the gate's, the STS's
//! and `cada-verify serve`'s audit records carry them, `cada-verify audit trace` joins the
//! three logs into the tree of who called what for whom, and each server's OTLP spans reach
//! a receiver this test runs itself. Malformed ones are refused with their codes.
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use cada_e2e::mcp_interop::*;
use cada_e2e::*;

const TASK: &str = "task-e2e.42";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;

/// The value of header `name` in a request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// One POST to the proxy with `extra` headers: (status, body).
fn via_proxy(port: u16, extra: &[(&str, &str)]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
        CALL.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(CALL.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, out.split_once("\r\n\r\n").unwrap().1.to_owned())
}

/// The records of the task in an audit directory.
fn task_records(dir: &Path) -> Vec<serde_json::Value> {
    audit_records(dir)
        .into_iter()
        .filter(|r| r["task"] == TASK)
        .collect()
}

#[test]
fn a_task_and_its_traceparent_travel_through_every_hop_into_every_log_and_span() {
    let dir = TempDir::new("custody");
    let d = &dir.0;
    let (otlp_port, spans) = recorder("{}");
    let otlp = format!("http://127.0.0.1:{otlp_port}");
    let (up_port, upstream) =
        recorder(r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hi"}]}}"#);
    let sts_port = free_port();
    let issuer = format!("http://127.0.0.1:{sts_port}");
    let agent = LockedAgent::start(d, &["--sts", &issuer]);
    let g = free_port();
    let gate_aud = format!("http://127.0.0.1:{g}/");
    let api = "https://api.example.com/";
    agent.grant(
        d,
        &[
            "--method",
            "POST",
            "--method",
            "GET",
            "--tool",
            "echo",
            "--scope",
            "mcp",
            "--audience",
            &gate_aud,
            "--audience",
            &issuer,
            "--audience",
            api,
        ],
    );
    let policy = agent.write_policy(d, "policy.toml", &[&gate_aud, api]);
    let p = policy.to_str().unwrap();
    let sts_audit = d.join("sts-audit");
    let _sts = sts_serve(
        d,
        "sts",
        sts_port,
        &issuer,
        &policy,
        &["--otlp-endpoint", &otlp, "--otlp-service-name", "sts"],
    );
    let _gate = start_gate(
        d,
        "gate",
        g,
        &format!("http://127.0.0.1:{up_port}"),
        &policy,
        &["--otlp-endpoint", &otlp, "--otlp-service-name", "gate"],
    );
    let (_verify, vport) = start_verifier(
        d,
        "verify",
        &[
            "--policy",
            p,
            "--otlp-endpoint",
            &otlp,
            "--otlp-service-name",
            "verify",
        ],
    );
    let pport = free_port();
    let route = format!("/mcp=http://127.0.0.1:{g}/mcp");
    let _proxy = spawn_ready(
        "cada-parent",
        &[
            "proxy",
            "--socket",
            agent.sock.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{pport}"),
            "--upstream",
            &route,
            "--task",
            "proxy-default",
        ],
        &d.join("proxy.log"),
    );

    // 1. Client → proxy → gate → upstream, with the client's traceparent and task.
    let (st, body) = via_proxy(pport, &[("traceparent", TP), ("CADA-Task", TASK)]);
    assert_eq!(st, 200, "{body}");
    let (head, _) = upstream.lock().unwrap().last().cloned().unwrap();
    let forwarded = header(&head, "traceparent").expect("the upstream got a traceparent");
    let fwd = cada_protocol::trace::TraceParent::parse(forwarded).unwrap();
    assert_eq!(fwd.trace_id_hex(), TRACE_ID, "{head}");
    assert_ne!(
        forwarded, TP,
        "the gate's own span id is the parent: {head}"
    );
    assert_eq!(header(&head, "cada-task"), Some(TASK), "{head}");

    // 2. Without a traceparent the proxy's --task applies and the proxy starts the trace.
    let (st, body) = via_proxy(pport, &[]);
    assert_eq!(st, 200, "{body}");
    let (head, _) = upstream.lock().unwrap().last().cloned().unwrap();
    assert_eq!(header(&head, "cada-task"), Some("proxy-default"), "{head}");
    let started =
        cada_protocol::trace::TraceParent::parse(header(&head, "traceparent").unwrap()).unwrap();
    assert_ne!(started.trace_id_hex(), TRACE_ID);

    // 3. Malformed ones are refused before anything is signed, naming the rule.
    let sent = upstream.lock().unwrap().len();
    for (name, value, code) in [
        (
            "traceparent",
            &TP.replace("00-", "01-")[..],
            "trace.traceparent",
        ),
        ("traceparent", &TP.to_uppercase()[..], "trace.traceparent"),
        ("CADA-Task", "has space", "trace.task"),
    ] {
        let (st, body) = via_proxy(pport, &[(name, value)]);
        assert_eq!(st, 400, "{name}: {value}: {body}");
        assert!(body.contains(code), "{name}: {body}");
    }
    assert_eq!(
        upstream.lock().unwrap().len(),
        sent,
        "nothing was forwarded"
    );
    for (body, code) in [
        (
            serde_json::json!({"method": "GET", "url": format!("{api}x"), "task": "a/b"}),
            "trace.task",
        ),
        (
            serde_json::json!({"method": "GET", "url": format!("{api}x"), "traceparent": "00-00"}),
            "trace.traceparent",
        ),
    ] {
        let (st, a) = daemon_pop(&agent.sock, &body);
        assert_eq!(st, 400, "{a}");
        assert!(a.to_string().contains(code), "{a}");
    }

    // 4. The daemon's STS exchange carries them to cada-sts.
    let (st, a) = daemon_pop(
        &agent.sock,
        &serde_json::json!({
            "method": "GET", "url": format!("{api}v1/items"), "resource": api,
            "task": TASK, "traceparent": TP,
        }),
    );
    assert_eq!(st, 200, "{a}");
    assert!(a["authorization"].is_string(), "{a}");

    // 5. A proof verified by cada-verify serve.
    let url = format!("{api}v1/orders");
    let (st, a) = daemon_pop(
        &agent.sock,
        &serde_json::json!({
            "method": "POST", "url": url, "with_evidence": true,
            "task": TASK, "traceparent": TP,
        }),
    );
    assert_eq!(st, 200, "{a}");
    let (st, r) = pop_verify(
        vport,
        &serde_json::json!({
            "dpop": a["dpop"], "method": "POST", "url": url, "evidence": a["evidence"],
            "contract": a["contract"], "body": "",
        }),
    );
    assert_eq!(st, 200, "{r}");

    // Every hop's record of the task carries task, traceparent and who acted for whom.
    let gate_audit = d.join("gate-audit");
    let verify_audit = d.join("verify-audit");
    let wait_for = |dir: &Path, kind: &str| {
        let t0 = Instant::now();
        loop {
            let r = task_records(dir);
            if let Some(x) = r.iter().find(|x| x["kind"] == kind) {
                return x.clone();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "no {kind} record: {r:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let actors = serde_json::json!([agent.owner_did, agent.did]);
    for (dir, kind, decision) in [
        (&gate_audit, "gate", "accept"),
        (&gate_audit, "gate.upstream", "forwarded"),
        (&sts_audit, "token", "accept"),
        (&verify_audit, "pop", "accept"),
    ] {
        let r = wait_for(dir, kind);
        assert_eq!(r["decision"], decision, "{r}");
        assert_eq!(r["tp"], TP, "{r}");
        assert_eq!(r["actors"], actors, "{r}");
    }
    let upstream_rec = wait_for(&gate_audit, "gate.upstream");
    assert_eq!(
        upstream_rec["span"].as_str(),
        Some(fwd.parent_id_hex().as_str()),
        "the record names the span the upstream got as parent"
    );

    // 6. The trace command joins the three logs into the tree.
    let logs = [&gate_audit, &sts_audit, &verify_audit].map(|p| p.to_str().unwrap().to_owned());
    let mut args = vec![TASK];
    for l in &logs {
        args.extend(["--log", l.as_str()]);
    }
    let (code, out, err) = trace_cmd(&args);
    assert_eq!(code, 0, "{out}{err}");
    let principal = format!("{} (principal)", agent.owner_did);
    let actor = format!("└─ {} (acting for the one above)", agent.did);
    for want in [
        &principal[..],
        &actor[..],
        "gate POST http://127.0.0.1",
        "[tools/call echo] → accept",
        "gate.upstream POST",
        "→ forwarded (upstream 200)",
        "token POST",
        "pop POST https://api.example.com/v1/orders → accept",
        TRACE_ID,
        "chain intact",
    ] {
        assert!(out.contains(want), "{want:?} not in\n{out}");
    }
    assert!(!out.contains("proxy-default"), "{out}");
    let mut json_args = args.clone();
    json_args.push("--json");
    let (code, out, err) = trace_cmd(&json_args);
    assert_eq!(code, 0, "{err}");
    let t: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(t["tree"][0]["actor"], agent.owner_did);
    assert_eq!(t["tree"][0]["children"][0]["actor"], agent.did);
    let kinds: Vec<&str> = t["tree"][0]["children"][0]["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    for k in ["gate", "gate.upstream", "token", "pop"] {
        assert!(kinds.contains(&k), "{k} not in {kinds:?}");
    }

    // 7. OTLP spans of the task's trace reached the receiver from the three servers.
    let t0 = Instant::now();
    let services = loop {
        let got: Vec<String> = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|(h, b)| h.starts_with("POST /v1/traces ") && b.contains(TRACE_ID))
            .map(|(_, b)| b.clone())
            .collect();
        let services: Vec<&str> = ["gate", "sts", "verify"]
            .into_iter()
            .filter(|s| {
                got.iter()
                    .any(|b| b.contains(&format!("{{\"stringValue\":\"{s}\"}}")))
            })
            .collect();
        if services.len() == 3 {
            let all = got.join("\n");
            assert!(all.contains("\"cada.task\""), "{all}");
            let v: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
            let span = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
            assert_eq!(span["traceId"], TRACE_ID, "{v}");
            break services;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "spans from {services:?} only"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(services, ["gate", "sts", "verify"]);

    // 8. An edited record breaks the trace's proof: reported, exit 1.
    let file = audit_files(&gate_audit).pop().unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replacen("\"forwarded\"", "\"rejected\"", 1)).unwrap();
    let (code, out, _) = trace_cmd(&args);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("CHAIN BROKEN"), "{out}");
}
