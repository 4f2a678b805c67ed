//! The gate's other modes, end to end with the official Python SDK: access tokens (the
//! gate's RFC 9728 metadata names a `cada-sts`; the proxy finds it and the daemon exchanges
//! the proof and contract for a token, which carries the contract's tools), required DPoP
//! nonces (the proxy answers `use_dpop_nonce` itself), and forward auth for a reverse proxy
//! that forwards on its own (only from a trusted proxy, with the identity headers).
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
