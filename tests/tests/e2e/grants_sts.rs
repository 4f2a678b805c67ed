//! One-transaction tokens with a real agent (issue 23): a sim enclave locked to its owner,
//! holding only a bare grant from `cada-owner grant --authorization-details` (no audiences,
//! so not the STS's either), gets an access token for exactly that transaction from the
//! real `cada-sts` through its daemon — the MCP call goes through `cada-parent proxy`, which
//! reads the gate's RFC 9728 metadata and asks the daemon for a token — and the real
//! `cada-gate` admits the call once. Before, the enclave signed a token-endpoint proof only
//! under a contract whose audiences covered the STS and the daemon never sent
//! `authorization_details`, so such a call could get no token at all.
//!
//! Also through the daemon (`POST /v1/pop` with the agent's own `authorization_details`):
//! an ask wider than the grant is refused by the enclave before any exchange
//! (`grant.not_within`); a narrower one yields a token of that narrower transaction, held
//! apart from the token of the grant's own detail.
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cada_e2e::mcp_interop::*;
use cada_e2e::*;
use cada_protocol::{b64, mcp};
use serde_json::Value;

/// A plain MCP server: answers every POST with one JSON-RPC result, counting them.
struct Upstream {
    port: u16,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&bodies);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut c) = conn else { continue };
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let body_at = loop {
                        match c.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..body_at]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < body_at + len {
                        match c.read(&mut chunk) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[body_at..]).into_owned());
                    let answer = r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"sent"}]}}"#;
                    let _ = write!(
                        c,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                        answer.len()
                    );
                });
            }
        });
        Upstream { port, bodies }
    }

    fn count(&self) -> usize {
        self.bodies.lock().unwrap().len()
    }
}

/// A `tools/call` of `transfer` with `amount` USD.
fn transfer(amount: u64) -> Vec<u8> {
    format!(
        r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"transfer","arguments":{{"amount":{amount},"currency":"USD"}}}}}}"#
    )
    .into_bytes()
}

/// "transfer at most `max` USD at `location`", single use or not, as a details file.
fn details(location: &str, max: u64, single_use: bool) -> String {
    format!(
        r#"[{{"type":"mcp_tool_call","locations":["{location}"],"tool":"transfer",
             "arguments":{{"amount":{{"min":1,"max":{max}}},"currency":{{"eq":"USD"}}}},
             "single_use":{single_use}}}]"#
    )
}

/// The owner's CLI issues a ten-minute grant of `details` only; the daemon installs it.
/// Returns the grant (compact) and its detail as the CLI wrote it (identifier filled in).
fn install_grant(d: &Path, agent: &LockedAgent, name: &str, details: &str) -> (String, Value) {
    let file = d.join(format!("{name}.json"));
    std::fs::write(&file, details).unwrap();
    let out = format!("{name}.jwt");
    owner_to(
        d,
        &out,
        &[
            "grant",
            "--key",
            &agent.key,
            "--subject",
            &agent.did,
            "--authorization-details",
            file.to_str().unwrap(),
            "--minutes",
            "10",
        ],
    );
    let path = d.join(&out);
    let (code, _, err) = parent(
        &agent.sock,
        &["contract", "install", path.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let compact = std::fs::read_to_string(&path).unwrap().trim().to_owned();
    let payload: Value = serde_json::from_slice(
        &b64::decode("payload", compact.split('.').nth(1).unwrap(), 65536).unwrap(),
    )
    .unwrap();
    let subject = &payload["credentialSubject"];
    assert!(
        subject
            .get("audiences")
            .is_none_or(|a| a == &Value::Array(vec![])),
        "a bare grant: {subject}"
    );
    (compact, subject["authorization_details"][0].clone())
}

/// The records of `kind` in an audit directory, once at least `n` are there (the log
/// commits in groups).
fn records(dir: &Path, kind: &str, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let r: Vec<Value> = audit_records(dir)
            .into_iter()
            .filter(|r| r["kind"] == kind)
            .collect();
        if r.len() >= n {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("fewer than {n} {kind} records in {}", dir.display())
}

#[test]
fn a_bare_grant_gets_a_token_for_exactly_its_transaction_through_the_daemon() {
    let dir = TempDir::new("grants-sts-agent");
    let d = &dir.0;
    let sts_port = free_port();
    let issuer = format!("http://127.0.0.1:{sts_port}");
    let agent = LockedAgent::start(d, &["--sts", &issuer]);
    let up = Upstream::start();
    let g = free_port();
    let gate_url = format!("http://127.0.0.1:{g}/mcp");
    let roots = format!(
        "[roots]\nnitro = [{:?}]\n",
        d.join("state/sim-root.der").display().to_string()
    );
    // A CADA gate sits at g: the STS may mint argument-limited, single-use details for it.
    let audience = format!(
        "[[audience]]\nprefix = \"http://127.0.0.1:{g}/\"\nmeasurements = [{{ PCR0 = \"{}\" }}]\nowners = [\"{}\"]\nchecks_arguments = true\n",
        agent.pcr0, agent.owner_did
    );
    let sts_policy = d.join("sts.toml");
    std::fs::write(&sts_policy, format!("{roots}{audience}")).unwrap();
    let sts_audit = d.join("sts-audit");
    let _sts = spawn_ready(
        "cada-sts",
        &[
            "serve",
            "--listen",
            &format!("127.0.0.1:{sts_port}"),
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
    // The gate trusts the STS's keys (pinned from its JWKS) and names it in its metadata.
    let (st, _, jwks) = http_tcp(sts_port, "GET", "/jwks", "application/json", b"").unwrap();
    assert_eq!(st, 200);
    let jwks_file = d.join("sts-jwks.json");
    std::fs::write(&jwks_file, jwks).unwrap();
    let gate_policy = d.join("gate.toml");
    std::fs::write(
        &gate_policy,
        format!(
            "{roots}{audience}[[issuer]]\nissuer = \"{issuer}\"\njwks = {:?}\n",
            jwks_file.display().to_string()
        ),
    )
    .unwrap();
    let _gate = start_gate(
        d,
        "gate",
        g,
        &format!("http://127.0.0.1:{}", up.port),
        &gate_policy,
        &["--authorization-server", &issuer],
    );
    let p = free_port();
    let _proxy = spawn_ready(
        "cada-parent",
        &[
            "proxy",
            "--socket",
            agent.sock.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{p}"),
            "--upstream",
            &format!("/mcp={gate_url}"),
        ],
        &d.join("proxy.log"),
    );
    let via_proxy = |body: &[u8]| {
        send(
            p,
            "POST",
            "/mcp",
            &[
                ("Content-Type", "application/json"),
                ("Accept", "application/json, text/event-stream"),
            ],
            body,
        )
    };

    // 1. The bare grant: "transfer 1..=500 USD at the gate, once", from the owner's CLI.
    let (grant, detail) = install_grant(
        d,
        &agent,
        "grant",
        &details(&format!("http://127.0.0.1:{g}/"), 500, true),
    );
    let dtc = cada_contract::digest_of(&grant);
    // The call through the proxy: a token for exactly that transaction, admitted once.
    let (st, _, text) = via_proxy(&transfer(500));
    assert_eq!(st, 200, "{text}");
    assert!(text.contains("sent"), "{text}");
    assert_eq!(up.count(), 1);
    let minted = records(&sts_audit, "token", 1);
    assert_eq!(minted[0]["decision"], "accept", "{}", minted[0]);
    assert_eq!(minted[0]["contract"], dtc.as_str());
    let token_jti = minted[0]["token"].as_str().unwrap().to_owned();
    let admitted = records(&d.join("gate-audit"), "gate", 1);
    assert!(
        admitted.iter().any(|r| r["decision"] == "accept"
            && r["token"] == token_jti.as_str()
            && r["contract"] == dtc.as_str()),
        "the gate admitted the call by the one-transaction token: {admitted:?}"
    );
    // Once: the same call again is refused, naming the rule; nothing reaches the server,
    // and no second token is minted for a used transaction.
    let (st, _, text) = via_proxy(&transfer(500));
    assert!(text.contains("grant.used"), "{st} {text}");
    assert_eq!(up.count(), 1);
    assert_eq!(
        audit_records(&sts_audit)
            .iter()
            .filter(|r| r["kind"] == "token")
            .count(),
        1
    );
    assert_eq!(detail["single_use"], true);

    // 2. The agent's own ask through the daemon, under a second single-use grant.
    let (grant2, detail2) = install_grant(
        d,
        &agent,
        "grant2",
        &details(&format!("http://127.0.0.1:{g}/"), 500, true),
    );
    let pop = |body: &[u8], asked: &str| {
        let ask = format!(
            r#"{{"method":"POST","url":"{gate_url}","resource":"{gate_url}","bd":"{}","mcp":{},"authorization_details":{asked}}}"#,
            mcp::body_digest(body),
            serde_json::to_string(&mcp::parse_body(body).unwrap().calls()).unwrap()
        );
        http(
            &agent.sock,
            "POST",
            "/v1/pop",
            Some(&ask),
            Duration::from_secs(15),
        )
        .unwrap()
    };
    let with_max = |d: &Value, max: u64| {
        let mut d = d.clone();
        d["arguments"]["amount"]["max"] = max.into();
        d["locations"] = serde_json::json!([gate_url]);
        format!("[{d}]")
    };
    let tokens_before = records(&sts_audit, "token", 1).len();
    // Wider than the grant: the enclave refuses to sign the exchange; the STS never hears
    // of it.
    let (st, text) = pop(&transfer(900), &with_max(&detail2, 1000));
    assert_eq!(st, 403, "{text}");
    assert!(text.contains("grant.not_within"), "{text}");
    // Not a bit wider either: the grant's own detail located at another server.
    let mut elsewhere = detail2.clone();
    elsewhere["locations"] = serde_json::json!([format!("http://127.0.0.1:{}/mcp", free_port())]);
    let (st, text) = pop(&transfer(100), &format!("[{elsewhere}]"));
    assert_eq!(st, 403, "{text}");
    assert!(text.contains("grant.not_within"), "{text}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        audit_records(&sts_audit)
            .iter()
            .filter(|r| r["kind"] == "token")
            .count(),
        tokens_before
    );
    // Narrower (at most 100): a token of that transaction; the gate admits 100 under it.
    let hundred = transfer(100);
    let (st, text) = pop(&hundred, &with_max(&detail2, 100));
    assert_eq!(st, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    let authorization = answer["authorization"].as_str().unwrap().to_owned();
    let at = authorization.strip_prefix("DPoP ").unwrap();
    let claims: Value =
        serde_json::from_slice(&b64::decode("at", at.split('.').nth(1).unwrap(), 16384).unwrap())
            .unwrap();
    assert_eq!(claims["authorization_details"].as_array().unwrap().len(), 1);
    assert_eq!(
        claims["authorization_details"][0]["arguments"]["amount"]["max"], 100,
        "{claims}"
    );
    assert_eq!(
        claims["authorization_details"][0]["identifier"],
        detail2["identifier"]
    );
    assert_eq!(claims["cada"]["dtc"], cada_contract::digest_of(&grant2));
    let headers = |dpop: &str, body: &[u8]| {
        vec![
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("DPoP".to_owned(), dpop.to_owned()),
            ("Authorization".to_owned(), authorization.clone()),
            ("Content-Digest".to_owned(), mcp::content_digest(body)),
        ]
    };
    let h = headers(answer["dpop"].as_str().unwrap(), &hundred);
    let (st, _, text) = send(g, "POST", "/mcp", &refs(&h), &hundred);
    assert_eq!(st, 200, "{text}");
    assert_eq!(up.count(), 2);

    // 3. A reusable grant: the token for the narrower ask is held apart from the token for
    // the grant's own detail (the proxy's automatic ask), and each checks its own bound.
    let (_grant3, detail3) = install_grant(
        d,
        &agent,
        "grant3",
        &details(&format!("http://127.0.0.1:{g}/"), 500, false),
    );
    let five_hundred = transfer(500);
    let (st, text) = pop(&five_hundred, &with_max(&detail3, 100));
    assert_eq!(st, 200, "{text}");
    let narrow: Value = serde_json::from_str(&text).unwrap();
    let narrow_token = narrow["authorization"].as_str().unwrap().to_owned();
    let h = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        (
            "DPoP".to_owned(),
            narrow["dpop"].as_str().unwrap().to_owned(),
        ),
        ("Authorization".to_owned(), narrow_token.clone()),
        (
            "Content-Digest".to_owned(),
            mcp::content_digest(&five_hundred),
        ),
    ];
    let (st, _, text) = send(g, "POST", "/mcp", &refs(&h), &five_hundred);
    assert_eq!(st, 403, "{text}");
    assert!(
        rpc_error(&text).starts_with("[grant.arguments.max]"),
        "{text}"
    );
    // The same narrower ask again: the held token.
    let (st, text) = pop(&hundred, &with_max(&detail3, 100));
    assert_eq!(st, 200, "{text}");
    let again: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(again["authorization"].as_str().unwrap(), narrow_token);
    // The proxy's own ask (the grant's detail, up to 500): another token, which admits 500,
    // and again (reusable).
    let before = up.count();
    for _ in 0..2 {
        let (st, _, text) = via_proxy(&five_hundred);
        assert_eq!(st, 200, "{text}");
    }
    assert_eq!(up.count(), before + 2);
    let minted: Vec<Value> = records(&sts_audit, "token", tokens_before + 3)
        .into_iter()
        .filter(|r| r["decision"] == "accept")
        .collect();
    assert_eq!(
        minted.len(),
        tokens_before + 3,
        "one token per distinct ask, held after: {minted:?}"
    );
}
