//! Secret-call benchmark (issue 22; not a test): an injected call — agent → `cada-parent
//! proxy --secret` → daemon → enclave (`secret_call`) → the enclave's own TLS through the
//! parent's relay → upstream — against the same call made directly from the host with the
//! credential over TLS, both on warm keep-alive connections; injected calls/s; the cost of
//! the enclave's TLS handshake (its HTTPS client with and without a pool); memory per pooled
//! upstream connection in the enclave process.
//!
//! Run with `scripts/bench-secrets.sh [CLIENTS] [SECONDS]` (release binaries first).
#![allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cada_e2e::{
    free_port, http, keygen, loadgen, owner_to, parent, spawn_ready, start_enclave, start_parent,
    TempDir,
};
use http_body_util::Full;
use hyper::body::Bytes;

const SECRET: &str = "ghp_BenchSecretValue0123456789abcdefXYZ";

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A keep-alive HTTPS/1.1 upstream: `/slow` answers after 300 ms, anything else at once
/// with a small JSON body.
fn upstream(server: Arc<rustls::ServerConfig>) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    cada_e2e::allow_egress(l.local_addr().unwrap().port());
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let _ = c.set_nodelay(true);
            let cfg = server.clone();
            std::thread::spawn(move || {
                let mut tls = BufReader::new(cada_net::test_tls::accept(&cfg, c));
                loop {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if tls.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        head.push_str(&line);
                        if line == "\r\n" {
                            break;
                        }
                    }
                    if head.contains(" /repos/acme/app/slow ") {
                        std::thread::sleep(Duration::from_millis(300));
                    }
                    let body = "{\"id\":1,\"title\":\"an issue\",\"state\":\"open\"}";
                    let out = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let w = tls.get_mut();
                    if w.write_all(out.as_bytes())
                        .and_then(|()| w.flush())
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn pcts(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[(v.len() * 99) / 100])
}

/// The same call made directly from the host with the credential, over one warm TLS
/// connection (rustls, keep-alive): p50 and p99, ms.
fn direct(port: u16, ca_pem: &str, n: usize) -> (f64, f64) {
    let mut roots = rustls::RootCertStore::empty();
    let der = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        ca_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>(),
    )
    .unwrap();
    roots.add(der.into()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_nodelay(true).unwrap();
    let conn =
        rustls::ClientConnection::new(Arc::new(cfg), "localhost".try_into().unwrap()).unwrap();
    let mut s = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    let req = format!(
        "GET /repos/acme/app/issues HTTP/1.1\r\nHost: localhost:{port}\r\nAuthorization: Bearer {SECRET}\r\nAccept: application/json\r\n\r\n"
    );
    let mut lat = Vec::with_capacity(n);
    for i in 0..n + 200 {
        let t = Instant::now();
        s.get_mut().write_all(req.as_bytes()).unwrap();
        let mut len = 0;
        loop {
            let mut line = String::new();
            s.read_line(&mut line).unwrap();
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; len];
        s.read_exact(&mut body).unwrap();
        if i >= 200 {
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    pcts(lat)
}

/// The enclave's HTTPS client in this process, through a relay task like the parent's:
/// p50 of one call with a pool (warm) and without (a new TCP + TLS handshake each).
fn handshake_cost(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    port: u16,
    ca_pem: &str,
    n: usize,
) -> (f64, f64) {
    let relay = dir.join("bench-relay.sock");
    let usage: cada_secrets::SecretUsage = serde_json::from_value(serde_json::json!({
        "name": "github", "upstream": format!("https://localhost:{port}"),
        "path_prefix": "/repos/acme/", "header": "authorization", "format": "Bearer {}",
        "cas": [ca_pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>()],
        "expires_at": 4_000_000_000u64,
    }))
    .unwrap();
    rt.block_on(async {
        let l = tokio::net::UnixListener::bind(&relay).unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let allow = vec![format!("localhost:{port}").parse().unwrap()];
                let policy = cada_parent::relay::RelayPolicy::new(allow);
                tokio::spawn(cada_parent::relay::relay_one(
                    s,
                    std::sync::Arc::new(policy),
                ));
            }
        });
        let mut out = Vec::new();
        for max_idle in [16usize, 0] {
            let c = cada_enclave::egress::Client::new(
                cada_enclave::egress::Relay::Unix(relay.clone()),
                max_idle,
                Duration::from_secs(10),
            );
            let mut lat = Vec::with_capacity(n);
            for i in 0..n + 20 {
                let req = http::Request::get("/repos/acme/app/issues")
                    .header("host", format!("localhost:{port}"))
                    .header("authorization", format!("Bearer {SECRET}"))
                    .body(Bytes::new())
                    .unwrap();
                let t = Instant::now();
                let r = c.send(&usage, req).await.unwrap();
                assert_eq!(r.status(), 200);
                if i >= 20 {
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
            out.push(pcts(lat).0);
        }
        (out[0], out[1])
    })
}

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let clients: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(16);
    let secs: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    println!("loadavg at start: {}", loadavg());
    let dir = TempDir::new("bench-secrets");
    let d = &dir.0;
    let tls = cada_net::test_tls::issue(&["localhost"]);
    let up = upstream(tls.server.clone());
    let ca = tls
        .ca_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>();
    let dev = d.join("dev-github.json");
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    std::fs::write(
        &dev,
        serde_json::json!({"usage": {
            "name": "github", "upstream": format!("https://localhost:{up}"),
            "path_prefix": "/repos/acme/", "header": "authorization", "format": "Bearer {}",
            "cas": [ca], "expires_at": exp}, "value": SECRET})
        .to_string(),
    )
    .unwrap();
    let relay = format!("unix:{}", d.join("relay.sock").display());
    let dev_s = dev.display().to_string();
    let enclave = start_enclave(
        d,
        &[
            "--egress",
            &relay,
            "--dev-secret",
            &dev_s,
            "--egress-max-idle",
            "512",
            "--egress-max-per-origin",
            "512",
        ],
    );
    let _parent = start_parent(d, &["--egress-listen", &relay, "--connections", "2"]);
    let sock = d.join("agent.sock");
    let (_, id) = http(&sock, "GET", "/v1/identity", None, Duration::from_secs(5)).unwrap();
    let did = serde_json::from_str::<serde_json::Value>(&id).unwrap()["did"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, key) = keygen(d, "owner");
    owner_to(d, "lock.jwt", &["lock", "--key", &key, "--enclave", &did]);
    assert_eq!(
        parent(
            &sock,
            &["owner", "lock", d.join("lock.jwt").to_str().unwrap()]
        )
        .0,
        0
    );
    owner_to(
        d,
        "c.jwt",
        &[
            "grant",
            "--key",
            &key,
            "--subject",
            &did,
            "--secret",
            &format!("github=https://localhost:{up}/repos/acme/app/"),
            "--method",
            "GET",
            "--valid-for",
            "1h",
            "--no-revocation",
        ],
    );
    assert_eq!(
        parent(
            &sock,
            &["contract", "install", d.join("c.jwt").to_str().unwrap()]
        )
        .0,
        0
    );
    let pport = free_port();
    let listen = format!("127.0.0.1:{pport}");
    let _proxy = spawn_ready(
        "cada-parent",
        &[
            "proxy",
            "--socket",
            sock.to_str().unwrap(),
            "--listen",
            &listen,
            "--secret",
            "github",
        ],
        &d.join("proxy.log"),
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let host = format!("127.0.0.1:{pport}");
    let make: loadgen::RequestFn = Arc::new(move |_| {
        hyper::Request::get("/github/repos/acme/app/issues")
            .header("host", host.as_str())
            .header("accept", "application/json")
            .body(Full::new(Bytes::new()))
            .unwrap()
    });
    let target = loadgen::Target::Tcp(pport);

    // Latency, one client, warm connections everywhere.
    let (d50, d99) = direct(up, &tls.ca_pem, 3000);
    println!(
        "direct from the host with the credential (warm TLS): p50 {d50:.3} ms, p99 {d99:.3} ms"
    );
    let one = loadgen::run_requests(&rt, &target, make.clone(), 1, secs.min(5), None);
    println!("injected through proxy → daemon → enclave → relay (1 client): {one}");
    println!(
        "added p50 {:.3} ms (goal ≤ 1 ms), ratio {:.1}×",
        one.p50_ms - d50,
        one.p50_ms / d50
    );
    // Throughput on this machine's 2 cores.
    let sat = loadgen::run_requests(&rt, &target, make, clients, secs, None);
    println!("injected calls, {clients} clients, closed loop: {sat} (goal ≥ 2,000/s)");

    // The enclave's TLS handshake: its client in process, pooled vs one handshake per call.
    let (pooled, fresh) = handshake_cost(&rt, d, up, &tls.ca_pem, 500);
    println!(
        "enclave HTTPS client in process: pooled p50 {pooled:.3} ms, new TCP+TLS each call p50 {fresh:.3} ms → handshake ≈ {:.3} ms",
        fresh - pooled
    );

    // Memory per pooled connection in the enclave process: N calls in flight at once (the
    // upstream holds each 300 ms), so N connections, all kept idle afterwards.
    let n = 200usize;
    let before = rss_kib(enclave.child.id());
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let body = serde_json::json!({"secret": "github", "method": "GET",
                    "path_and_query": "/repos/acme/app/slow", "headers": [], "body": ""});
                http(
                    &sock,
                    "POST",
                    "/v1/secrets/call",
                    Some(&body.to_string()),
                    Duration::from_secs(60),
                )
                .map(|(s, _)| s)
                .unwrap_or(0)
            })
        })
        .collect();
    let ok = threads
        .into_iter()
        .map(|t| t.join().unwrap_or(0))
        .filter(|s| *s == 200)
        .count();
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(enclave.child.id());
    println!(
        "enclave RSS {before} KiB → {after} KiB after {ok} concurrent calls left ≤{n} pooled connections: ≈ {:.1} KiB per pooled connection",
        (after.saturating_sub(before)) as f64 / ok.max(1) as f64
    );
    println!("loadavg at end: {}", loadavg());
}
