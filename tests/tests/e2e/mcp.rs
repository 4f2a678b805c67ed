//! MCP agents end to end, with the official MCP Python SDK (PyPI `mcp`, installed here,
//! pinned) as real processes: an unmodified MCP client → `cada-parent proxy` → `cada-gate`
//! → an SDK server, over streamable HTTP with server-sent events and with JSON answers.
//! Each HTTP request carries a fresh enclave proof bound to its body and calls; the owner's
//! contract grants two of the server's three tools. Refused, each with a JSON-RPC error
//! naming the rule: a tool outside the contract (by the enclave, and by the gate when the
//! proof does not name the call), a replayed request, a proof moved onto another body, an
//! untrusted measurement, an untrusted owner. The gate survives oversized bodies, slow
//! clients and an upstream that is down or hangs; the audit log lists every call with its
//! tool, and the server sees the verified agent, never a header the client made up.
use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use cada_e2e::mcp_interop::*;
use cada_e2e::*;
use cada_protocol::mcp;

const TOOL_CALL: &[u8] = br#"{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{"name":"echo","arguments":{"text":"raw"}}}"#;

#[test]
fn mcp_sdk_client_through_proxy_and_gate_per_tool_with_body_bound_proofs() {
    let py = python(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")));
    let dir = TempDir::new("mcp");
    let d = &dir.0;
    let agent = LockedAgent::start(d, &[]);
    let (sock, enclave_did, pcr0, owner_did) = (
        agent.sock.clone(),
        agent.did.clone(),
        agent.pcr0.clone(),
        agent.owner_did.clone(),
    );
    // The owner locks the enclave and grants echo, add and whoami (not delete_all) at the gates.
    let (mallory_did, _) = keygen(d, "mallory");
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let (g_sse, g_json, g_badm, g_badowner, g_down, g_hang) =
        (ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]);
    let mut grant = vec![
        "--method", "POST", "--method", "GET", "--method", "DELETE", "--tool", "echo", "--tool",
        "add", "--tool", "whoami",
    ];
    let audiences: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}/"))
        .collect();
    for a in &audiences {
        grant.extend(["--audience", a.as_str()]);
    }
    agent.grant(d, &grant);

    // Policies: the gates require body-bound proofs; one allows another image, one trusts
    // another owner.
    let roots = format!(
        "[roots]\nnitro = [{:?}]\n[token]\nrequire_body_digest = true\n",
        d.join("state/sim-root.der").display().to_string()
    );
    let policy = |port: u16, pcr: &str, owner: &str| {
        let p = d.join(format!("policy-{port}.toml"));
        std::fs::write(
            &p,
            format!("{roots}[[audience]]\nprefix = \"http://127.0.0.1:{port}/\"\nmeasurements = [{{ PCR0 = \"{pcr}\" }}]\nowners = [\"{owner}\"]\n"),
        )
        .unwrap();
        p
    };
    let other_pcr = "0".repeat(pcr0.len());

    // Two SDK servers: server-sent events, and JSON answers.
    let (s_sse, s_json) = (free_port(), free_port());
    let _srv_sse = start_server(&py, d, "server-sse", s_sse, false);
    // The JSON server runs behind clients/python's middleware: its whoami tool names the
    // agent the gate verified.
    let _srv_json = start_server_with(&py, d, "server-json", s_json, true, &["--cada-middleware"]);
    let up = |p: u16| format!("http://127.0.0.1:{p}");
    let _gate_sse = start_gate(
        d,
        "gate-sse",
        g_sse,
        &up(s_sse),
        &policy(g_sse, &pcr0, &owner_did),
        &[],
    );
    let _gate_json = start_gate(
        d,
        "gate-json",
        g_json,
        &up(s_json),
        &policy(g_json, &pcr0, &owner_did),
        &[],
    );
    let _gate_badm = start_gate(
        d,
        "gate-badm",
        g_badm,
        &up(s_json),
        &policy(g_badm, &other_pcr, &owner_did),
        &[],
    );
    let _gate_bado = start_gate(
        d,
        "gate-bado",
        g_badowner,
        &up(s_json),
        &policy(g_badowner, &pcr0, &mallory_did),
        &[],
    );
    // An upstream nobody listens on, and one that accepts and never answers.
    let dead = free_port();
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_port = hang.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = vec![];
        for s in hang.incoming().flatten() {
            held.push(s);
        }
    });
    let _gate_down = start_gate(
        d,
        "gate-down",
        g_down,
        &up(dead),
        &policy(g_down, &pcr0, &owner_did),
        &[],
    );
    let _gate_hang = start_gate(
        d,
        "gate-hang",
        g_hang,
        &up(hang_port),
        &policy(g_hang, &pcr0, &owner_did),
        &[
            "--upstream-timeout-ms",
            "1500",
            "--header-timeout-ms",
            "1000",
        ],
    );

    // The proxy: one local path per gate.
    let p_port = free_port();
    let listen = format!("127.0.0.1:{p_port}");
    let routes = [
        format!("/sse=http://127.0.0.1:{g_sse}/mcp"),
        format!("/json=http://127.0.0.1:{g_json}/mcp"),
        format!("/badm=http://127.0.0.1:{g_badm}/mcp"),
        format!("/bado=http://127.0.0.1:{g_badowner}/mcp"),
    ];
    let mut args = vec![
        "proxy",
        "--socket",
        sock.to_str().unwrap(),
        "--listen",
        &listen,
    ];
    for r in &routes {
        args.extend(["--upstream", r.as_str()]);
    }
    let _proxy = spawn_ready("cada-parent", &args, &d.join("proxy.log"));
    let local = |p: &str| format!("http://127.0.0.1:{p_port}{p}");

    // 1. initialize, tools/list and tools/call through proxy → gate → server, SSE and JSON,
    //    with the SDK's default connection (2026 protocol, server/discover) and its legacy
    //    one (initialize, session, GET event stream, DELETE).
    for (path, mode) in [
        ("/sse", "auto"),
        ("/sse", "legacy"),
        ("/json", "auto"),
        ("/json", "legacy"),
    ] {
        let r = client_with(
            &py,
            &local(path),
            &["--mode", mode],
            &[
                r#"echo:{"text":"hi"}"#,
                r#"add:{"a":2,"b":3}"#,
                "delete_all:{}",
            ],
        );
        assert_eq!(r["initialize"]["ok"], true, "{path}: {r}");
        let tools: Vec<&str> = r["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert!(
            tools.contains(&"echo") && tools.contains(&"delete_all"),
            "{r}"
        );
        assert_eq!(r["calls"][0]["ok"], true, "{path}: {r}");
        assert_eq!(r["calls"][0]["result"], "hi", "{r}");
        assert_eq!(r["calls"][1]["result"], "5", "{r}");
        // The enclave refused to sign for a tool outside the contract; the rule reaches the app.
        assert_eq!(r["calls"][2]["ok"], false, "{r}");
        let err = r["calls"][2]["error"].as_str().unwrap();
        assert!(err.contains("contract.not_permitted.tool"), "{path}: {err}");
    }
    // The server behind the middleware sees the verified agent as the SDK's user.
    let r = client(&py, &local("/json"), &["whoami:{}"]);
    assert_eq!(r["calls"][0]["result"], enclave_did.as_str(), "{r}");
    // clients/python's CadaAuth, straight to the gate (no proxy): the same calls, signed.
    let gate_json_url = format!("http://127.0.0.1:{g_json}/mcp");
    let r = client_with(
        &py,
        &gate_json_url,
        &["--mode", "legacy", "--cada-socket", sock.to_str().unwrap()],
        &[r#"echo:{"text":"direct"}"#, "whoami:{}", "delete_all:{}"],
    );
    assert_eq!(r["initialize"]["ok"], true, "{r}");
    assert_eq!(r["calls"][0]["result"], "direct", "{r}");
    assert_eq!(r["calls"][1]["result"], enclave_did.as_str(), "{r}");
    assert_eq!(r["calls"][2]["ok"], false, "{r}");
    assert!(
        r["calls"][2]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("contract.not_permitted.tool"),
        "{r}"
    );
    // Without the gate, the middleware admits no one.
    let r = client(&py, &format!("http://127.0.0.1:{s_json}/mcp"), &[]);
    assert_eq!(r["initialize"]["ok"], false, "{r}");
    assert!(
        r["initialize"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("gate.required"),
        "{r}"
    );

    // 2. Untrusted measurement, untrusted owner: the gate refuses initialize, naming the rule.
    let r = client(&py, &local("/badm"), &[]);
    assert_eq!(r["initialize"]["ok"], false, "{r}");
    assert!(
        r["initialize"]["error"]
            .as_str()
            .unwrap()
            .contains("policy.measurements"),
        "{r}"
    );
    let r = client(&py, &local("/bado"), &[]);
    assert_eq!(r["initialize"]["ok"], false, "{r}");
    assert!(
        r["initialize"]["error"]
            .as_str()
            .unwrap()
            .contains("contract.untrusted_owner"),
        "{r}"
    );

    // 3. Raw requests at the JSON gate (stateless answers need no session for tools/call
    //    in the SDK's JSON mode? the server decides; the gate's refusals come first).
    let url = format!("http://127.0.0.1:{g_json}/mcp");
    let p = proof_for(&sock, &url, TOOL_CALL, true);
    let h = mcp_headers(&p, TOOL_CALL);
    let (st, _, _) = send(g_json, "POST", "/mcp", &refs(&h), TOOL_CALL);
    assert_ne!(st, 401, "a fresh proof passes the gate");
    // The same request again: a replay.
    let (st, head, body) = send(g_json, "POST", "/mcp", &refs(&h), TOOL_CALL);
    assert_eq!(st, 401, "{body}");
    assert!(
        rpc_error(&body).starts_with("[pop.replay] rule 14:"),
        "{body}"
    );
    assert!(
        head.contains("www-authenticate: dpop resource_metadata=\""),
        "{head}"
    );
    // A fresh proof moved onto another body.
    let p = proof_for(&sock, &url, TOOL_CALL, true);
    let other = br#"{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{"name":"echo","arguments":{"text":"swapped"}}}"#;
    let mut h = mcp_headers(&p, TOOL_CALL);
    h.retain(|(k, _)| k != "Content-Digest");
    let (st, _, body) = send(g_json, "POST", "/mcp", &refs(&h), other);
    assert_eq!(st, 401, "{body}");
    assert!(rpc_error(&body).starts_with("[pop.body] rule 6:"), "{body}");
    // A Content-Digest that is not the body's.
    let p = proof_for(&sock, &url, TOOL_CALL, true);
    let mut h = mcp_headers(&p, TOOL_CALL);
    h.retain(|(k, _)| k != "Content-Digest");
    h.push(("Content-Digest".into(), mcp::content_digest(other)));
    let (st, _, body) = send(g_json, "POST", "/mcp", &refs(&h), TOOL_CALL);
    assert_eq!(st, 400, "{body}");
    assert!(
        rpc_error(&body).starts_with("[request.content_digest]"),
        "{body}"
    );
    // A tool outside the contract, with a proof that does not name the call (a host that
    // left cada.mcp out): the gate reads the body and refuses it itself, unforwarded.
    let evil = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"delete_all","arguments":{}}}"#;
    let p = proof_for(&sock, &url, evil, false);
    let h = mcp_headers(&p, evil);
    let (st, head, body) = send(g_json, "POST", "/mcp", &refs(&h), evil);
    assert_eq!(st, 403, "{body}");
    assert!(
        head.contains("error=\"insufficient_scope\"") && head.contains("scope=\"tool:delete_all\""),
        "{head}"
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["id"], 7);
    assert!(
        rpc_error(&body).starts_with("[contract.not_permitted.tool] rule 13:"),
        "{body}"
    );
    // MCP routing headers that name another call than the body's.
    let p = proof_for(&sock, &url, TOOL_CALL, true);
    let mut h = mcp_headers(&p, TOOL_CALL);
    h.push(("Mcp-Method".into(), "tools/call".into()));
    h.push(("Mcp-Name".into(), "delete_all".into()));
    let (st, _, body) = send(g_json, "POST", "/mcp", &refs(&h), TOOL_CALL);
    assert_eq!(st, 400, "{body}");
    assert!(
        rpc_error(&body).starts_with("[request.mcp_headers]"),
        "{body}"
    );
    // No proof at all: a bare challenge naming the metadata, which is served.
    let (st, head, body) = send(
        g_json,
        "POST",
        "/mcp",
        &[("Content-Type", "application/json")],
        TOOL_CALL,
    );
    assert_eq!(st, 401, "{body}");
    assert!(head.contains(&format!("resource_metadata=\"http://127.0.0.1:{g_json}/.well-known/oauth-protected-resource/mcp\"")), "{head}");
    let (st, _, meta) = send(
        g_json,
        "GET",
        "/.well-known/oauth-protected-resource/mcp",
        &[],
        b"",
    );
    assert_eq!(st, 200);
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(meta["resource"], format!("http://127.0.0.1:{g_json}/mcp"));
    assert_eq!(meta["dpop_bound_access_tokens_required"], true);
    assert_eq!(meta["cada_body_digest_required"], true);
    // A forged identity header from the client never reaches the server.
    let p = proof_for(&sock, &url, TOOL_CALL, true);
    let mut h = mcp_headers(&p, TOOL_CALL);
    h.push(("CADA-Agent".into(), "did:key:forged".into()));
    let (st, _, _) = send(g_json, "POST", "/mcp", &refs(&h), TOOL_CALL);
    assert_ne!(st, 401);
    let seen = std::fs::read_to_string(d.join("server-json.log")).unwrap();
    assert!(
        seen.contains(&enclave_did),
        "the server saw the verified agent"
    );
    assert!(
        !seen.contains("did:key:forged"),
        "a client's CADA-Agent was stripped"
    );

    // 4. Oversized bodies, upstream down or hanging, slow clients.
    let big = vec![b' '; 2 * 1024 * 1024];
    let (st, _, body) = send(
        g_json,
        "POST",
        "/mcp",
        &[("Content-Type", "application/json")],
        &big,
    );
    assert_eq!(st, 413, "{body}");
    for (port, status, code) in [
        (g_down, 502, "[upstream.unreachable]"),
        (g_hang, 504, "[upstream.timeout]"),
    ] {
        let url = format!("http://127.0.0.1:{port}/mcp");
        let p = proof_for(&sock, &url, TOOL_CALL, true);
        let h = mcp_headers(&p, TOOL_CALL);
        let t = Instant::now();
        let (st, _, body) = send(port, "POST", "/mcp", &refs(&h), TOOL_CALL);
        assert_eq!(st, status, "{body}");
        assert!(rpc_error(&body).starts_with(code), "{body}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }
    // A client that hangs up while the upstream still works on its call: the call was
    // forwarded, so its outcome (here the 504 after the 1.5 s deadline) is still audited.
    let hung_up = {
        let url = format!("http://127.0.0.1:{g_hang}/mcp");
        let p = proof_for(&sock, &url, TOOL_CALL, true);
        let h = mcp_headers(&p, TOOL_CALL);
        let head = request_head(g_hang, "POST", "/mcp", &refs(&h), TOOL_CALL.len());
        let mut s = std::net::TcpStream::connect(("127.0.0.1", g_hang)).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(TOOL_CALL).unwrap();
        std::thread::sleep(Duration::from_millis(400));
        drop(s);
        let jws =
            cada_protocol::jws::split_compact("DPoP proof", p["dpop"].as_str().unwrap(), 1 << 16)
                .unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&jws.payload).unwrap();
        claims["jti"].as_str().unwrap().to_owned()
    };
    // Half a request head: the gate closes the connection after its header deadline.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", g_hang)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /mcp HTTP/1.1\r\nHost: x\r\n").unwrap();
    let t = Instant::now();
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "a slow client is cut off"
    );
    // ... while the gate keeps serving others.
    let (st, _, _) = send(
        g_hang,
        "GET",
        "/.well-known/oauth-protected-resource/mcp",
        &[],
        b"",
    );
    assert_eq!(st, 200);

    // The hung-up call's outcome reaches the gate's audit log.
    let audit = d.join("gate-hang-audit");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let records = audit_records(&audit);
        let found = records.iter().any(|r| {
            r["kind"] == "gate.upstream"
                && r["jti"] == hung_up.as_str()
                && r["upstream_status"] == 504
        });
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no gate.upstream record for the call whose client hung up ({hung_up}): {records:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // 5. The audit trail: every call with its tool and decision, in a chain that verifies.
    for name in ["gate-sse", "gate-json"] {
        let audit = d.join(format!("{name}-audit"));
        let out = Command::new(bin("cada-verify"))
            .args(["audit", "verify", audit.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut lines = String::new();
        for f in std::fs::read_dir(&audit).unwrap().flatten() {
            lines.push_str(&std::fs::read_to_string(f.path()).unwrap());
        }
        let records: Vec<serde_json::Value> = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let tool_calls: Vec<&serde_json::Value> = records
            .iter()
            .filter(|r| {
                r["kind"] == "gate"
                    && r["rpc"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c["method"] == "tools/call"))
            })
            .collect();
        assert!(
            tool_calls.iter().any(|r| r["decision"] == "accept"
                && r["rpc"][0]["target"] == "echo"
                && r["rpc"][0]["arguments"].is_string()),
            "{name}: {lines}"
        );
        assert!(
            tool_calls
                .iter()
                .any(|r| r["decision"] == "accept" && r["rpc"][0]["target"] == "add"),
            "{name}"
        );
        assert!(records
            .iter()
            .all(|r| r["kind"] != "gate" || r["did"].is_string() || r["decision"] == "reject"));
        assert!(
            records.iter().any(|r| r["kind"] == "gate.upstream"
                && r["upstream_status"].is_u64()
                && r["latency_us"].is_u64()),
            "{name}"
        );
        if name == "gate-json" {
            // Unauthenticated refusals (a replay is one) are written as short records
            // within the client's rate, or counted in an audit.dropped record.
            let audited = |reason: &str| {
                records
                    .iter()
                    .any(|r| r["reason"] == reason || r["dropped"][reason].is_u64())
            };
            assert!(audited("pop.missing"), "unproven calls are audited");
            assert!(audited("request.too_large"));
            assert!(audited("pop.replay"));
            assert!(records
                .iter()
                .any(|r| r["reason"] == "contract.not_permitted.tool"
                    && r["rpc"][0]["target"] == "delete_all"));
        }
    }
}
