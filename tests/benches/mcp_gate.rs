//! Benchmark of the MCP path (not a test), release binaries: the latency that
//! `cada-parent proxy` + `cada-gate` add to one `tools/call` against calling the server
//! directly (one client, back to back), and the gate's throughput at saturation with
//! proofs minted beforehand (each request a fresh proof bound to its body).
//!
//! The MCP server is a minimal in-process HTTP server answering every call with a fixed
//! JSON-RPC result, so that the figures are the pair's own cost. With the client `sdk`, the
//! same is measured with the official MCP Python SDK on both ends: its client
//! (`tests/benches/mcp_sdk_latency.py`, direct and through calls interleaved) against its
//! server (`tests/interop/mcp/server.py`, SSE and JSON answers), each server behind a gate of
//! its own.
//!
//! Each latency is measured for two proxies in turn, in front of the same gates: one asking
//! a `cada-parent serve` daemon for proofs over its socket, and one signing in process
//! (`cada-parent proxy --enclave`). Beside each SDK figure: each CADA process's CPU time and
//! context switches per proxied call (from `/proc/PID/task/*`), which move far less between
//! runs than latency does on a shared VM.
//!
//! Run with `scripts/bench-mcp.sh [SECONDS=5] [CONNECTIONS=64] [DURABILITIES=fsync,none]
//! [CLIENTS=rust,sdk]`; the SDK is the pinned one of `tests/interop/mcp/install.sh`, from
//! `CADA_BENCH_PYTHON` (its interpreter) or installed under the bench's target tmp dir.
//!
//! `CADA_BENCH_HOLD=SECS` keeps the rig up for SECS seconds once it stands (for each audit
//! durability, before measuring) and prints the ports of the proxy, the gates and the servers,
//! so that other clients can be pointed at it: `scripts/mcp-latency-probe.py` is one.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)] // bench code: casts of measured values, no outside bytes
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cada_e2e::loadgen::{self, Target};
use cada_e2e::mcp_interop;
use cada_e2e::{
    enclave_endpoint, free_port, http, keygen, owner_to, parent, spawn_ready, start_enclave,
    start_parent, Proc, TempDir,
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

/// A gate on `port` in front of `upstream`, its policy trusting the sim root, the image and
/// the owner, requiring body-bound proofs.
fn start_gate(
    d: &Path,
    port: u16,
    upstream: &str,
    durability: &str,
    pcr0: &str,
    owner: &str,
) -> Proc {
    let policy = d.join(format!("policy-{port}.toml"));
    std::fs::write(
        &policy,
        format!(
            "[roots]\nnitro = [{:?}]\n[token]\nrequire_body_digest = true\n[[audience]]\nprefix = \"http://127.0.0.1:{port}/\"\nmeasurements = [{{ PCR0 = \"{pcr0}\" }}]\nowners = [\"{owner}\"]\n",
            d.join("state/sim-root.der").display().to_string()
        ),
    )
    .expect("policy");
    let listen = format!("127.0.0.1:{port}");
    let audit = d.join(format!("audit-{port}"));
    spawn_ready(
        "cada-gate",
        &[
            "--listen",
            &listen,
            "--upstream",
            upstream,
            "--policy",
            policy.to_str().expect("utf8"),
            "--audit-dir",
            audit.to_str().expect("utf8"),
            "--audit-durability",
            durability,
            "--log-format",
            "text",
        ],
        &d.join(format!("gate-{port}.log")),
    )
}

/// The interpreter of the pinned MCP Python SDK: `CADA_BENCH_PYTHON`, or installed (once)
/// under the bench's target tmp dir.
fn sdk_python() -> PathBuf {
    match std::env::var_os("CADA_BENCH_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => mcp_interop::python(Path::new(env!("CARGO_TARGET_TMPDIR"))),
    }
}

/// The SDK client's interleaved echo calls, direct and through: its JSON report.
fn sdk_latency(py: &Path, direct: &str, through: &str, calls: u64) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/mcp_sdk_latency.py");
    let out = std::process::Command::new(py)
        .arg(&script)
        .args(["--direct", direct, "--through", through])
        .args(["--calls", &calls.to_string(), "--warmup", "100"])
        .output()
        .expect("run the SDK client");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "the SDK client's report is not JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success() && v.get("error").is_none(),
        "SDK client: {v}"
    );
    v
}

/// p50 and p90 (ms) of appending 400 bytes to a file in `dir` and `fdatasync`ing it, 100
/// times: what one audit record with durability `fsync` costs at least on this disk now.
fn fdatasync_probe(dir: &Path) -> (f64, f64) {
    use std::io::Write;
    let path = dir.join("fdatasync-probe");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("probe file");
    let mut ms: Vec<f64> = (0..100)
        .map(|_| {
            let t = std::time::Instant::now();
            f.write_all(&[b'x'; 400]).expect("write");
            f.sync_data().expect("fdatasync");
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    let _ = std::fs::remove_file(&path);
    ms.sort_by(f64::total_cmp);
    (ms[50], ms[90])
}

/// The 1-minute load average, for the figures' context.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
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
    let clients = args.get(4).map_or("rust,sdk", String::as_str);
    let (rust, sdk) = (clients.contains("rust"), clients.contains("sdk"));
    let py = sdk.then(sdk_python);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = TempDir::new("mcp-bench");
    let d = &dir.0;
    let enclave_proc = start_enclave(d, &[]);
    let parent_proc = start_parent(d, &[]);
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
    // The SDK's servers: server-sent events (the SDK's default) and JSON answers.
    let (s_sse, s_json) = (free_port(), free_port());
    let _sdk_servers = py.as_ref().map(|py| {
        (
            mcp_interop::start_server(py, d, "sdk-server-sse", s_sse, false),
            mcp_interop::start_server(py, d, "sdk-server-json", s_json, true),
        )
    });

    println!("MCP tools/call, release binaries, sim enclave (Ed25519), policy with require_body_digest and an owner's contract; load average {}", load_average());
    for durability in &durabilities {
        let (g, g_sse, g_json) = (free_port(), free_port(), free_port());
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
                "--audience",
                &format!("http://127.0.0.1:{g_sse}/"),
                "--audience",
                &format!("http://127.0.0.1:{g_json}/"),
            ],
        );
        // Installed through a daemon API socket (the daemon's, then the in-process proxy's).
        let install = |socket: &Path| {
            let contract = d.join("contract.jwt");
            let contract = contract.to_str().expect("utf8");
            let (code, _, err) = parent(socket, &["contract", "install", contract]);
            assert_eq!(code, 0, "{err}");
        };
        install(&sock);
        let _gate = start_gate(
            d,
            g,
            &format!("http://127.0.0.1:{up}"),
            durability,
            &pcr0,
            &owner_did,
        );
        let sdk_gates = py.as_ref().map(|_| {
            (
                start_gate(
                    d,
                    g_sse,
                    &format!("http://127.0.0.1:{s_sse}"),
                    durability,
                    &pcr0,
                    &owner_did,
                ),
                start_gate(
                    d,
                    g_json,
                    &format!("http://127.0.0.1:{s_json}"),
                    durability,
                    &pcr0,
                    &owner_did,
                ),
            )
        });
        // Two proxies with the same routes: one asking the daemon at `sock`, and one
        // signing in process (`--enclave`) with its own daemon API socket, through which
        // the contract is installed.
        let routes = [
            format!("http://127.0.0.1:{g}/mcp"),
            format!("/sse=http://127.0.0.1:{g_sse}/mcp"),
            format!("/json=http://127.0.0.1:{g_json}/mcp"),
        ];
        let start_proxy = |signer: &[&str], name: &str| {
            let port = free_port();
            let listen = format!("127.0.0.1:{port}");
            let mut args = vec!["proxy", "--listen", &listen];
            args.extend_from_slice(signer);
            for r in &routes {
                args.extend(["--upstream", r.as_str()]);
            }
            let log = d.join(format!("{name}-{port}.log"));
            (port, spawn_ready("cada-parent", &args, &log))
        };
        let (p, proxy) = start_proxy(&["--socket", sock.to_str().expect("utf8")], "proxy");
        let esock = d.join("agent-in.sock");
        let enclave = enclave_endpoint(d);
        let (e, proxy_in) = start_proxy(
            &[
                "--enclave",
                &enclave,
                "--socket",
                esock.to_str().expect("utf8"),
            ],
            "proxy-in",
        );
        install(&esock);
        if let Ok(h) = std::env::var("CADA_BENCH_HOLD") {
            // The proxy routes /mcp to the stand-in's gate, /sse and /json to the SDK servers'.
            println!(
                "holding the rig: proxy 127.0.0.1:{p} (/mcp, /sse, /json), signing in process 127.0.0.1:{e}; stand-in server {up}; SDK servers {s_sse} (SSE), {s_json} (JSON); gates {g}, {g_sse}, {g_json}; files in {}",
                d.display()
            );
            std::thread::sleep(Duration::from_secs(h.parse().unwrap_or(600)));
        }
        println!("audit {durability}:");
        if durability == "fsync" {
            let (p50, p90) = fdatasync_probe(d);
            println!("  fdatasync of a 400-byte append here now: p50 {p50:.3} ms, p90 {p90:.3} ms (each fsync decision waits for at least one)");
        }
        // Each proxy in turn: beside a daemon (`--socket`), then signing in process.
        let proxies = [(p, "proxy + daemon"), (e, "proxy signing in process")];
        if rust {
            for (port, how) in proxies {
                let to_up: loadgen::RequestFn =
                    Arc::new(move |n| request(up, "/mcp", call_body(n)));
                let to_proxy: loadgen::RequestFn =
                    Arc::new(move |n| request(port, "/mcp", call_body(n)));
                let direct = loadgen::run_requests(&rt, &Target::Tcp(up), to_up, 1, secs, None);
                let through =
                    loadgen::run_requests(&rt, &Target::Tcp(port), to_proxy, 1, secs, None);
                println!("  1 client, direct to the server:        {direct}");
                println!("  1 client, through {how} + gate: {through}");
                println!(
                    "  added by {how} + gate: p50 {:.3} ms, p99 {:.3} ms",
                    through.p50_ms - direct.p50_ms,
                    through.p99_ms - direct.p99_ms
                );
            }
        }
        if let Some(py) = &py {
            // About 150 interleaved pairs a second at a few ms a call.
            let calls = 150 * secs.max(1);
            for (answers, server, path) in [("SSE", s_sse, "/sse"), ("JSON", s_json, "/json")] {
                for (port, how) in proxies {
                    let direct = format!("http://127.0.0.1:{server}/mcp");
                    let through = format!("http://127.0.0.1:{port}{path}");
                    let load = load_average();
                    // Each process's CPU and context switches over the run, per through call
                    // (direct calls cost these processes nothing).
                    let gates = sdk_gates.as_ref().expect("the SDK servers' gates");
                    let gate = if path == "/sse" { &gates.0 } else { &gates.1 };
                    let procs: Vec<(&str, &Proc)> = if port == p {
                        vec![
                            ("proxy", &proxy),
                            ("daemon", &parent_proc),
                            ("enclave", &enclave_proc),
                            ("gate", gate),
                        ]
                    } else {
                        vec![
                            ("proxy", &proxy_in),
                            ("enclave", &enclave_proc),
                            ("gate", gate),
                        ]
                    };
                    let before: Vec<_> =
                        procs.iter().map(|(_, q)| q.cpu_ns_and_switches()).collect();
                    let r = sdk_latency(py, &direct, &through, calls);
                    let costs: Vec<String> = procs
                        .iter()
                        .zip(&before)
                        .filter_map(|((name, q), b)| {
                            let ((ns0, sw0), (ns1, sw1)) = ((*b)?, q.cpu_ns_and_switches()?);
                            Some(format!(
                                "{name} {:.0} µs/{:.1}",
                                (ns1 - ns0) as f64 / 1e3 / calls as f64,
                                (sw1 - sw0) as f64 / calls as f64
                            ))
                        })
                        .collect();
                    let added_p90 = r["through"]["p90_ms"].as_f64().unwrap_or(f64::NAN)
                        - r["direct"]["p90_ms"].as_f64().unwrap_or(f64::NAN);
                    println!(
                        "  SDK client + SDK server, {answers} answers, {how}, {calls} interleaved pairs: direct p50 {} ms, p90 {} ms, p99 {} ms; through p50 {} ms, p90 {} ms, p99 {} ms; added by {how} + gate: p50 {} ms, p90 {added_p90:.3} ms (median of pairs {} ms); load {load}",
                        r["direct"]["p50_ms"], r["direct"]["p90_ms"], r["direct"]["p99_ms"],
                        r["through"]["p50_ms"], r["through"]["p90_ms"], r["through"]["p99_ms"],
                        r["added_p50_ms"], r["paired_added_p50_ms"]
                    );
                    println!(
                        "    CPU/context switches per through call: {}",
                        costs.join(", ")
                    );
                }
            }
        }

        if !rust {
            continue;
        }
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
