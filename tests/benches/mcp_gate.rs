//! Benchmark of the MCP path (not a test), release binaries: the latency that
//! `cada-parent proxy` + `cada-gate` add to one `tools/call` against calling the server
//! directly (one client, back to back), and the gate's throughput at saturation with
//! proofs minted beforehand (each request a fresh proof bound to its body).
//!
//! The MCP server is a minimal in-process HTTP server answering every call with a fixed
//! JSON-RPC result, so that the figures are the pair's own cost.
//!
//! Run with `scripts/bench-mcp.sh [SECONDS=5] [CONNECTIONS=64] [DURABILITIES=fsync,none]`.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)] // bench code: casts of measured values, no outside bytes
use std::sync::Arc;
use std::time::Duration;

use cada_e2e::loadgen::{self, Target};
use cada_e2e::{
    free_port, http, keygen, owner_to, parent, spawn_ready, start_enclave, start_parent, TempDir,
};
use cada_protocol::mcp;
use http_body_util::Full;
use hyper::body::Bytes;

const RESULT: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}],"isError":false}}"#;

fn call_body(n: usize) -> Vec<u8> {
    format!(
        r#"{{"jsonrpc":"2.0","id":{n},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"call {n}"}}}}}}"#
    )
    .into_bytes()
}

/// The stand-in MCP server: every request gets `RESULT`.
fn upstream(rt: &tokio::runtime::Runtime) -> u16 {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = axum::Router::new().fallback(|| async {
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            RESULT,
        )
    });
    rt.spawn(async move { axum::serve(listener, app).await });
    port
}

/// A POST to `127.0.0.1:port` (the proxy answers only to its own address as Host).
fn request(port: u16, path: &'static str, body: Vec<u8>) -> hyper::Request<Full<Bytes>> {
    hyper::Request::post(path)
        .header("host", format!("127.0.0.1:{port}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(Full::new(Bytes::from(body)))
        .expect("request")
}

/// One POST to the gate with extra headers; its status.
fn raw_post(port: u16, body: &[u8], headers: &[(&str, &str)]) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut head = format!(
        "POST /mcp HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("write");
    s.write_all(body).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let secs: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let conns: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(64);
    let durabilities: Vec<String> = args
        .get(3)
        .map_or("fsync,none", String::as_str)
        .split(',')
        .map(str::to_owned)
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = TempDir::new("mcp-bench");
    let d = &dir.0;
    let _enclave = start_enclave(d, &[]);
    let _parent = start_parent(d, &[]);
    let sock = d.join("agent.sock");
    let (_, id) =
        http(&sock, "GET", "/v1/identity", None, Duration::from_secs(5)).expect("identity");
    let id: serde_json::Value = serde_json::from_str(&id).expect("json");
    let did = id["did"].as_str().expect("did").to_owned();
    let pcr0 = id["measurements"]["PCR0"]
        .as_str()
        .expect("pcr0")
        .to_owned();
    let (owner_did, key) = keygen(d, "owner");
    owner_to(d, "lock.jwt", &["lock", "--key", &key, "--enclave", &did]);
    assert_eq!(
        parent(
            &sock,
            &["owner", "lock", d.join("lock.jwt").to_str().expect("utf8")]
        )
        .0,
        0
    );
    let up = upstream(&rt);

    println!("MCP tools/call, release binaries, sim enclave (Ed25519), policy with require_body_digest and an owner's contract");
    for durability in &durabilities {
        let g = free_port();
        owner_to(
            d,
            "contract.jwt",
            &[
                "grant",
                "--key",
                &key,
                "--subject",
                &did,
                "--valid-for",
                "1h",
                "--no-revocation",
                "--method",
                "POST",
                "--tool",
                "echo",
                "--audience",
                &format!("http://127.0.0.1:{g}/"),
            ],
        );
        let (code, _, err) = parent(
            &sock,
            &[
                "contract",
                "install",
                d.join("contract.jwt").to_str().expect("utf8"),
            ],
        );
        assert_eq!(code, 0, "{err}");
        let policy = d.join(format!("policy-{g}.toml"));
        std::fs::write(
            &policy,
            format!(
                "[roots]\nnitro = [{:?}]\n[token]\nrequire_body_digest = true\n[[audience]]\nprefix = \"http://127.0.0.1:{g}/\"\nmeasurements = [{{ PCR0 = \"{pcr0}\" }}]\nowners = [\"{owner_did}\"]\n",
                d.join("state/sim-root.der").display().to_string()
            ),
        )
        .expect("policy");
        let listen = format!("127.0.0.1:{g}");
        let audit = d.join(format!("audit-{g}"));
        let _gate = spawn_ready(
            "cada-gate",
            &[
                "--listen",
                &listen,
                "--upstream",
                &format!("http://127.0.0.1:{up}"),
                "--policy",
                policy.to_str().expect("utf8"),
                "--audit-dir",
                audit.to_str().expect("utf8"),
                "--audit-durability",
                durability,
                "--log-format",
                "text",
            ],
            &d.join(format!("gate-{g}.log")),
        );
        let p = free_port();
        let plisten = format!("127.0.0.1:{p}");
        let _proxy = spawn_ready(
            "cada-parent",
            &[
                "proxy",
                "--socket",
                sock.to_str().expect("utf8"),
                "--listen",
                &plisten,
                "--upstream",
                &format!("http://127.0.0.1:{g}/mcp"),
            ],
            &d.join(format!("proxy-{p}.log")),
        );
        let to_up: loadgen::RequestFn = Arc::new(move |n| request(up, "/mcp", call_body(n)));
        let to_proxy: loadgen::RequestFn = Arc::new(move |n| request(p, "/mcp", call_body(n)));
        let direct = loadgen::run_requests(&rt, &Target::Tcp(up), to_up, 1, secs, None);
        let through = loadgen::run_requests(&rt, &Target::Tcp(p), to_proxy, 1, secs, None);
        println!("audit {durability}:");
        println!("  1 client, direct to the server:        {direct}");
        println!("  1 client, through proxy + gate:        {through}");
        println!(
            "  added by proxy + gate: p50 {:.3} ms, p99 {:.3} ms",
            through.p50_ms - direct.p50_ms,
            through.p99_ms - direct.p99_ms
        );

        // Saturation of the gate alone: proofs minted first (fresh for 30 s), one per call.
        let url = format!("http://127.0.0.1:{g}/mcp");
        let want = 60_000usize.min(8_000 * secs as usize);
        let t = std::time::Instant::now();
        let minted: Vec<(String, Vec<u8>)> = std::thread::scope(|s| {
            let per = want / 4;
            let handles: Vec<_> = (0..4)
                .map(|w| {
                    let (sock, url) = (sock.clone(), url.clone());
                    s.spawn(move || {
                        (w * per..(w + 1) * per)
                            .map(|n| {
                                let body = call_body(n);
                                let ask = serde_json::json!({
                                    "method": "POST", "url": url, "with_evidence": n == 0,
                                    "bd": mcp::body_digest(&body),
                                    "mcp": mcp::parse_body(&body).expect("body").calls(),
                                });
                                let (st, text) = http(
                                    &sock,
                                    "POST",
                                    "/v1/pop",
                                    Some(&ask.to_string()),
                                    Duration::from_secs(10),
                                )
                                .expect("mint");
                                assert_eq!(st, 200, "{text}");
                                let v: serde_json::Value =
                                    serde_json::from_str(&text).expect("json");
                                (v["dpop"].as_str().expect("dpop").to_owned(), body)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("minter"))
                .collect()
        });
        let mint_rate = minted.len() as f64 / t.elapsed().as_secs_f64();
        // The gate learns the evidence and the contract once.
        let first = serde_json::json!({"method": "POST", "url": url, "with_evidence": true, "bd": mcp::body_digest(&call_body(0)),
            "mcp": mcp::parse_body(&call_body(0)).expect("body").calls()});
        let (_, text) = http(
            &sock,
            "POST",
            "/v1/pop",
            Some(&first.to_string()),
            Duration::from_secs(10),
        )
        .expect("mint");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        let (ev, contract) = (
            v["evidence"].as_str().expect("ev").to_owned(),
            v["contract"].as_str().expect("contract").to_owned(),
        );
        let body = call_body(0);
        let status = raw_post(
            g,
            &body,
            &[
                ("DPoP", v["dpop"].as_str().expect("dpop")),
                ("CADA-Evidence", &ev),
                ("CADA-Contract", &contract),
            ],
        );
        assert_eq!(
            status, 200,
            "the gate refused the introduction (see its log)"
        );
        let minted = Arc::new(minted);
        let blast: loadgen::RequestFn = {
            let minted = minted.clone();
            Arc::new(move |n| {
                let (dpop, body) = &minted[n % minted.len()];
                let mut r = request(g, "/mcp", body.clone());
                r.headers_mut().insert("dpop", dpop.parse().expect("dpop"));
                r
            })
        };
        let sat_secs = (minted.len() as f64 / 9_000.0).clamp(1.0, secs as f64) as u64;
        let sat = loadgen::run_requests(&rt, &Target::Tcp(g), blast, conns, sat_secs, None);
        println!("  gate saturation, {conns} connections, {sat_secs} s (proofs minted beforehand at {mint_rate:.0}/s): {sat}");
        if sat.errors > 0 {
            println!("  (errors: replays once the {} minted proofs ran out, or refusals; see the gate log)", minted.len());
        }
    }
}
