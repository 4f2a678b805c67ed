//! The gate's other modes, end to end with the official Python SDK: access tokens (the
//! gate's RFC 9728 metadata names a `cada-sts`; the proxy finds it and the daemon exchanges
//! the proof and contract for a token, which carries the contract's tools), required DPoP
//! nonces (the proxy answers `use_dpop_nonce` itself), and forward auth for a reverse proxy
//! that forwards on its own (only from a trusted proxy, with the identity headers).
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use cada_e2e::mcp_interop::*;
use cada_e2e::*;
use cada_protocol::mcp;

const CALL: &[u8] = br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"fa"}}}"#;

#[test]
fn tokens_nonces_and_forward_auth() {
    let py = python(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let dir = TempDir::new("mcp-modes");
    let d = &dir.0;
    let sts_port = free_port();
    let issuer = format!("http://127.0.0.1:{sts_port}");
    let agent = LockedAgent::start(d, &["--sts", &issuer]);
    let (sock, did, pcr0, owner_did) = (
        agent.sock.clone(),
        agent.did.clone(),
        agent.pcr0.clone(),
        agent.owner_did.clone(),
    );
    let (g_token, g_nonce, g_fwd) = (free_port(), free_port(), free_port());
    let aud = |p: u16| format!("http://127.0.0.1:{p}/");
    let mut grant = vec![
        "--method", "POST", "--method", "GET", "--method", "DELETE", "--tool", "echo", "--scope",
        "mcp",
    ];
    let public = "https://mcp.example.com/".to_owned();
    let auds = [
        issuer.clone(),
        aud(g_token),
        aud(g_nonce),
        aud(g_fwd),
        public.clone(),
    ];
    for a in &auds {
        grant.extend(["--audience", a.as_str()]);
    }
    agent.grant(d, &grant);
    let roots = format!(
        "[roots]\nnitro = [{:?}]\n",
        d.join("state/sim-root.der").display().to_string()
    );
    let audience = |p: u16| {
        format!(
            "[[audience]]\nprefix = \"http://127.0.0.1:{p}/\"\nmeasurements = [{{ PCR0 = \"{pcr0}\" }}]\nowners = [\"{owner_did}\"]\n"
        )
    };
    let write = |name: &str, text: String| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    // The STS issues tokens for the token gate's resource.
    let sts_policy = write("sts.toml", format!("{roots}{}", audience(g_token)));
    let sts_listen = format!("127.0.0.1:{sts_port}");
    let sts_audit = d.join("sts-audit");
    let _sts = spawn_ready(
        "cada-sts",
        &[
            "serve",
            "--listen",
            &sts_listen,
            "--issuer",
            &issuer,
            "--policy",
            sts_policy.to_str().unwrap(),
            "--audit-dir",
            sts_audit.to_str().unwrap(),
            "--log-format",
            "text",
        ],
        &d.join("sts.log"),
    );
    // The gates: tokens of that issuer only (its JWKS fetched), nonces required, forward auth.
    let token_policy = write(
        "token.toml",
        format!(
            "{roots}[token]\nrequire_body_digest = true\n{}[[issuer]]\nissuer = \"{issuer}\"\njwks_uri = \"{issuer}/jwks\"\n",
            audience(g_token)
        ),
    );
    let nonce_policy = write(
        "nonce.toml",
        format!(
            "{roots}[token]\nrequire_body_digest = true\nrequire_nonce = true\n{}",
            audience(g_nonce)
        ),
    );
    let fwd_policy = write(
        "fwd.toml",
        format!(
            "{roots}{}[[audience]]\nprefix = \"{public}\"\nmeasurements = [{{ PCR0 = \"{pcr0}\" }}]\nowners = [\"{owner_did}\"]\n",
            audience(g_fwd)
        ),
    );
    let srv = free_port();
    let _server = start_server(&py, d, "server", srv, true);
    let up = format!("http://127.0.0.1:{srv}");
    let _gt = start_gate(
        d,
        "gate-token",
        g_token,
        &up,
        &token_policy,
        &["--authorization-server", &issuer, "--status-refresh", "1"],
    );
    let _gn = start_gate(d, "gate-nonce", g_nonce, &up, &nonce_policy, &[]);
    let _gf = start_gate(
        d,
        "gate-fwd",
        g_fwd,
        &up,
        &fwd_policy,
        &["--trusted-proxy", "127.0.0.1"],
    );
    let p_port = free_port();
    let listen = format!("127.0.0.1:{p_port}");
    let routes = [
        format!("/token=http://127.0.0.1:{g_token}/mcp"),
        format!("/nonce=http://127.0.0.1:{g_nonce}/mcp"),
    ];
    let _proxy = spawn_ready(
        "cada-parent",
        &[
            "proxy",
            "--socket",
            sock.to_str().unwrap(),
            "--listen",
            &listen,
            "--upstream",
            &routes[0],
            "--upstream",
            &routes[1],
        ],
        &d.join("proxy.log"),
    );
    // The token gate's metadata names the STS.
    let (st, _, meta) = send(
        g_token,
        "GET",
        "/.well-known/oauth-protected-resource/mcp",
        &[],
        b"",
    );
    assert_eq!(st, 200);
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(meta["authorization_servers"][0], issuer.as_str());
    // Wait for the gate's first JWKS fetch.
    std::thread::sleep(Duration::from_millis(1500));

    // 1. Tokens: the proxy reads the metadata; every call carries a token and its proof.
    for mode in ["auto", "legacy"] {
        let r = client_with(
            &py,
            &format!("http://127.0.0.1:{p_port}/token"),
            &["--mode", mode],
            &[r#"echo:{"text":"with a token"}"#, "delete_all:{}"],
        );
        assert_eq!(r["initialize"]["ok"], true, "{mode}: {r}");
        assert_eq!(r["calls"][0]["result"], "with a token", "{mode}: {r}");
        assert_eq!(r["calls"][1]["ok"], false, "{r}");
        assert!(
            r["calls"][1]["error"]
                .as_str()
                .unwrap()
                .contains("contract.not_permitted.tool"),
            "{r}"
        );
    }
    let audit = std::fs::read_dir(d.join("gate-token-audit"))
        .unwrap()
        .flatten()
        .map(|f| std::fs::read_to_string(f.path()).unwrap())
        .collect::<String>();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"decision\":\"accept\"") && l.contains("\"token\":\"")),
        "the gate admitted calls by token: {audit}"
    );
    // A token whose contract does not grant the tool: the gate refuses it (token.tool), even
    // when the host asks the enclave for a proof that does not name the call.
    let url = format!("http://127.0.0.1:{g_token}/mcp");
    let evil = br#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"delete_all"}}"#;
    let ask = serde_json::json!({"method": "POST", "url": url, "resource": url,
        "bd": mcp::body_digest(evil)});
    let (st, text) = http(
        &sock,
        "POST",
        "/v1/pop",
        Some(&ask.to_string()),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(st, 200, "{text}");
    let p: serde_json::Value = serde_json::from_str(&text).unwrap();
    let h = [
        ("Content-Type", "application/json"),
        ("DPoP", p["dpop"].as_str().unwrap()),
        ("Authorization", p["authorization"].as_str().unwrap()),
    ];
    let (st, head, body) = send(g_token, "POST", "/mcp", &h, evil);
    assert_eq!(st, 403, "{body}");
    assert!(head.contains("error=\"insufficient_scope\""), "{head}");
    assert!(
        rpc_error(&body).starts_with("[token.tool] rule 13:"),
        "{body}"
    );

    // 2. Nonces: the proxy answers use_dpop_nonce itself.
    let r = client(
        &py,
        &format!("http://127.0.0.1:{p_port}/nonce"),
        &[r#"echo:{"text":"nonce"}"#],
    );
    assert_eq!(r["calls"][0]["result"], "nonce", "{r}");
    let gate_log = std::fs::read_to_string(d.join("gate-nonce.log")).unwrap();
    assert!(
        gate_log.contains("pop.nonce"),
        "the first proof had no nonce and was refused"
    );

    // 3. Forward auth, from a trusted proxy: the original method and URI in headers.
    let url = format!("http://127.0.0.1:{g_fwd}/mcp");
    let p = proof_for(&sock, &url, CALL, true);
    let mut h = mcp_headers(&p, CALL);
    h.push(("X-Original-Method".into(), "POST".into()));
    h.push(("X-Original-URI".into(), "/mcp".into()));
    let (st, head, body) = send(g_fwd, "GET", "/_cada/auth", &refs(&h), b"");
    assert_eq!(st, 200, "{body}");
    assert!(
        head.contains(&format!("cada-agent: {}", did.to_ascii_lowercase())),
        "{head}"
    );
    assert!(head.contains("cada-agent-claims: "), "{head}");
    // The same proof again: a replay, refused with the challenge.
    let (st, head, body) = send(g_fwd, "GET", "/_cada/auth", &refs(&h), b"");
    assert_eq!(st, 401, "{body}");
    assert!(head.contains("www-authenticate: dpop"), "{head}");
    // Behind a proxy that reports the public host, the proof must be for that URL.
    let p = proof_for(&sock, "https://mcp.example.com/mcp", CALL, true);
    let mut h = mcp_headers(&p, CALL);
    h.extend([
        ("X-Forwarded-Method".into(), "POST".into()),
        ("X-Forwarded-Proto".into(), "https".into()),
        ("X-Forwarded-Host".into(), "mcp.example.com".into()),
        ("X-Forwarded-Uri".into(), "/mcp".into()),
    ]);
    let (st, _, body) = send(g_fwd, "GET", "/_cada/auth", &refs(&h), b"");
    assert_eq!(st, 200, "{body}");
    // A proof for the gate's own URL does not pass for the public one.
    let p = proof_for(&sock, &url, CALL, true);
    let mut h2 = mcp_headers(&p, CALL);
    h2.extend(h.iter().filter(|(k, _)| k.starts_with("X-")).cloned());
    let (st, _, body) = send(g_fwd, "GET", "/_cada/auth", &refs(&h2), b"");
    assert_eq!(st, 401, "{body}");
    assert!(rpc_error(&body).starts_with("[pop.htu]"), "{body}");
}

/// A stand-in MCP server that records each request head it gets (metadata GETs answered
/// 404, everything else a JSON-RPC result), one request per connection.
fn recording_upstream() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(i);
                }
            };
            let Some(end) = head_end else { continue };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let answer: &[u8] = if head.contains("/.well-known/") {
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            } else {
                seen.lock().unwrap().push(head);
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 36\r\nConnection: close\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}"
            };
            let _ = s.write_all(answer);
        }
    });
    (port, heads)
}

/// One raw request to `port` with exactly these header lines (no Host added).
fn raw(port: u16, lines: &[&str], body: &[u8]) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = String::from("POST /mcp HTTP/1.1\r\nConnection: close\r\n");
    for l in lines {
        head.push_str(l);
        head.push_str("\r\n");
    }
    head.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    ));
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (h, b) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (status, h.to_ascii_lowercase(), b.to_owned())
}

/// The code of a refusal the proxy wrote itself (`error.data.code`).
fn proxy_code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["error"]["data"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Issue 21, item 4: the proxy served any Host and any Origin, so a web page using DNS
/// rebinding (or any local user) acted as the agent. The real binaries: a foreign Host or
/// Origin is refused before the daemon signs or the upstream hears of it; the bearer token
/// and the unix socket keep other local users out.
#[test]
fn proxy_refuses_dns_rebinding_foreign_origins_and_callers_without_its_token() {
    let dir = TempDir::new("proxy-access");
    let d = &dir.0;
    let _enclave = start_enclave(d, &[]);
    let _parent = start_parent(d, &[]);
    let sock = d.join("agent.sock");
    let (up, heads) = recording_upstream();
    let upstream = format!("http://127.0.0.1:{up}/mcp");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _proxy = spawn_ready(
        "cada-parent",
        &[
            "proxy",
            "--socket",
            sock.to_str().unwrap(),
            "--listen",
            &listen,
            "--upstream",
            &upstream,
        ],
        &d.join("proxy.log"),
    );
    // The issue's request.
    let (evil_host, evil_origin) = (
        format!("Host: evil.example:{port}"),
        format!("Origin: http://evil.example:{port}"),
    );
    let (st, _, body) = raw(port, &[&evil_host, &evil_origin], CALL);
    assert_eq!(
        (st, proxy_code(&body).as_str()),
        (403, "proxy.host"),
        "{body}"
    );
    let host = format!("Host: 127.0.0.1:{port}");
    let (st, _, body) = raw(port, &[&host, &evil_origin], CALL);
    assert_eq!(
        (st, proxy_code(&body).as_str()),
        (403, "proxy.origin"),
        "{body}"
    );
    let (st, _, body) = raw(port, &[&host, "Origin: null"], CALL);
    assert_eq!(
        (st, proxy_code(&body).as_str()),
        (403, "proxy.origin"),
        "{body}"
    );
    assert!(heads.lock().unwrap().is_empty(), "nothing was forwarded");
    // An MCP client (no Origin) is served; the upstream sees its own Host and a proof.
    let (st, _, body) = raw(port, &[&host], CALL);
    assert_eq!(st, 200, "{body}");
    {
        let seen = heads.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(
            seen[0]
                .lines()
                .any(|l| l.trim_end() == format!("host: 127.0.0.1:{up}")),
            "{}",
            seen[0]
        );
        assert!(seen[0].contains("\r\ndpop: "), "{}", seen[0]);
    }

    // A token: other local users are refused; the token does not travel upstream.
    let token_file = d.join("proxy-token");
    std::fs::write(
        &token_file,
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822c\n",
    )
    .unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port2 = free_port();
    let listen2 = format!("127.0.0.1:{port2}");
    let _proxy2 = spawn_ready(
        "cada-parent",
        &[
            "proxy",
            "--socket",
            sock.to_str().unwrap(),
            "--listen",
            &listen2,
            "--auth-token-file",
            token_file.to_str().unwrap(),
            "--upstream",
            &upstream,
        ],
        &d.join("proxy2.log"),
    );
    let host2 = format!("Host: localhost:{port2}");
    let (st, head, body) = raw(port2, &[&host2], CALL);
    assert_eq!(
        (st, proxy_code(&body).as_str()),
        (401, "proxy.unauthorized"),
        "{body}"
    );
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    let bearer = "Authorization: Bearer 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822c";
    let (st, _, body) = raw(port2, &[&host2, bearer], CALL);
    assert_eq!(st, 200, "{body}");
    {
        let seen = heads.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert!(!seen[1].contains("9f86d081884c7d"), "{}", seen[1]);
    }

    // A unix socket: created 0600, any Host.
    let proxy_sock = d.join("proxy.sock");
    let listen3 = format!("unix:{}", proxy_sock.display());
    let _proxy3 = spawn_ready(
        "cada-parent",
        &[
            "proxy",
            "--socket",
            sock.to_str().unwrap(),
            "--listen",
            &listen3,
            "--upstream",
            &upstream,
        ],
        &d.join("proxy3.log"),
    );
    let mode = std::fs::metadata(&proxy_sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (st, body) = http(
        &proxy_sock,
        "POST",
        "/mcp",
        Some(std::str::from_utf8(CALL).unwrap()),
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(st, 200, "{body}");
    assert_eq!(heads.lock().unwrap().len(), 3);
    // Refusals are counted.
    let (st, _, metrics) = send(port, "GET", "/_cada/metrics", &[], b"");
    assert_eq!(st, 200);
    assert!(
        metrics.contains(r#"cada_parent_proxy_refused_total{code="proxy.host"} 1"#),
        "{metrics}"
    );
}
