//! Helpers for the end-to-end tests: locate the built binaries, run them as child processes
//! (killed on drop), talk HTTP over unix sockets and raw frames over hybrid vsock.
#![forbid(unsafe_code)]

pub mod delegation;
pub mod loadgen;
pub mod mcp_interop;
pub mod owner_serve;
pub mod redis_cluster;
pub mod stock_jwt;
pub mod swtpm;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of a workspace binary (built by `cargo build --workspace --bins`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        p.display()
    );
    p
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc {
    /// The child.
    pub child: Child,
    /// Its name, for messages.
    pub name: String,
}

impl Proc {
    /// Kills the process now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// CPU time (ns, all threads, from `/proc/PID/task/*/schedstat`) and context switches
    /// (voluntary and not, from each thread's `status`) so far; a benchmark's deltas over
    /// N calls give each process's cost per call. Threads that ended are not counted.
    pub fn cpu_ns_and_switches(&self) -> Option<(u64, u64)> {
        let (mut ns, mut switches) = (0u64, 0u64);
        for t in std::fs::read_dir(format!("/proc/{}/task", self.child.id())).ok()? {
            let t = t.ok()?.path();
            let sched = std::fs::read_to_string(t.join("schedstat")).ok()?;
            ns += sched.split_whitespace().next()?.parse::<u64>().ok()?;
            let status = std::fs::read_to_string(t.join("status")).ok()?;
            for l in status.lines() {
                if l.starts_with("voluntary_ctxt_switches:")
                    || l.starts_with("nonvoluntary_ctxt_switches:")
                {
                    switches += l.split_whitespace().nth(1)?.parse::<u64>().ok()?;
                }
            }
        }
        Some((ns, switches))
    }

    /// Peak resident set size (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        s.lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a binary and waits until it prints a line starting with `ready`.
pub fn spawn_ready(name: &str, args: &[&str], log: &Path) -> Proc {
    let logf = std::fs::File::create(log).expect("log file");
    let mut child = Command::new(bin(name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(logf)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(l)) = lines.next() {
            let _ = tx.send(l);
        }
        for _ in lines {}
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(l) if l.starts_with("ready") => {}
        other => {
            let _ = child.kill();
            panic!(
                "{name} did not become ready ({other:?}); log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
    Proc {
        child,
        name: name.into(),
    }
}

/// Starts a sim enclave on a hybrid-vsock unix socket in `dir`; its root DER is at
/// `dir/state/sim-root.der`.
pub fn start_enclave(dir: &Path, extra: &[&str]) -> Proc {
    start_enclave_on(dir, "sim", extra)
}

/// Starts an enclave of `platform` (`sim` or `sim-snp`) on a hybrid-vsock unix socket in
/// `dir`; its root DER is at `dir/state/<platform>-root.der`.
pub fn start_enclave_on(dir: &Path, platform: &str, extra: &[&str]) -> Proc {
    let sock = dir.join("enclave.sock");
    let state = dir.join("state");
    let mut args = vec![
        "--platform",
        platform,
        "--unix",
        sock.to_str().expect("utf8"),
        "--hybrid-port",
        "5005",
        "--state-dir",
        state.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    spawn_ready("cada-enclave", &args, &dir.join("enclave.log"))
}

thread_local! {
    /// The loopback upstreams this test thread started ([`allow_egress`]).
    static EGRESS_ALLOW: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Registers a loopback upstream port of this test: a daemon started afterwards by
/// [`start_parent`] with `--egress-listen` gets `--egress-allow localhost:PORT` and
/// `--egress-allow 127.0.0.1:PORT` (the relay refuses loopback destinations otherwise,
/// `relay.destination`).
pub fn allow_egress(port: u16) {
    EGRESS_ALLOW.with(|a| {
        let mut a = a.borrow_mut();
        for host in ["localhost", "127.0.0.1"] {
            a.push(format!("{host}:{port}"));
        }
    });
}

/// The endpoint of the enclave [`start_enclave`] started in `dir` (hybrid vsock), as
/// `cada-parent serve|proxy --enclave` take it.
pub fn enclave_endpoint(dir: &Path) -> String {
    format!("unix:{}:5005", dir.join("enclave.sock").display())
}

/// Starts the daemon against the enclave in `dir`, agent socket `dir/agent.sock`.
/// With `--egress-listen`, the upstreams registered by [`allow_egress`] are allowed.
pub fn start_parent(dir: &Path, extra: &[&str]) -> Proc {
    let enclave = enclave_endpoint(dir);
    let sock = dir.join("agent.sock");
    let mut args = vec![
        "serve",
        "--enclave",
        &enclave,
        "--socket",
        sock.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    let allowed: Vec<String> = if extra.contains(&"--egress-listen") {
        EGRESS_ALLOW.with(|a| a.borrow().clone())
    } else {
        Vec::new()
    };
    for a in &allowed {
        args.extend_from_slice(&["--egress-allow", a]);
    }
    spawn_ready("cada-parent", &args, &dir.join("parent.log"))
}

/// A fresh temporary directory under the target dir (removed on drop).
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates it.
    pub fn new(tag: &str) -> Self {
        let base = std::env::temp_dir().join(format!(
            "cada-e2e-{tag}-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).expect("temp dir");
        TempDir(base)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One HTTP/1.1 request over a unix socket (`Connection: close`), with a read timeout.
/// Returns (status, body).
pub fn http(
    sock: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let mut s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(timeout))?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: cada\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP answer {out:?}")))?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Asks the daemon for a proof; returns the JSON answer.
pub fn mint(
    sock: &Path,
    method: &str,
    url: &str,
    access_token: Option<&str>,
    with_evidence: bool,
) -> serde_json::Value {
    let body = serde_json::json!({"method": method, "url": url, "access_token": access_token, "with_evidence": with_evidence});
    let (status, text) = http(
        sock,
        "POST",
        "/v1/pop",
        Some(&body.to_string()),
        Duration::from_secs(10),
    )
    .expect("POST /v1/pop");
    assert_eq!(status, 200, "POST /v1/pop: {text}");
    serde_json::from_str(&text).expect("JSON answer")
}

/// A raw hybrid-vsock connection to the enclave.
pub fn hybrid_connect(sock: &Path, port: u32) -> UnixStream {
    let mut s = UnixStream::connect(sock).expect("connect enclave socket");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .expect("write CONNECT");
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while b[0] != b'\n' {
        s.read_exact(&mut b).expect("read OK line");
        line.push(b[0]);
    }
    assert_eq!(line, format!("OK {port}\n").as_bytes());
    s
}

/// Writes one raw frame: length prefix + payload.
pub fn write_frame(s: &mut UnixStream, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("a test frame under 4 GiB");
    s.write_all(&len.to_be_bytes()).expect("write len");
    s.write_all(payload).expect("write payload");
}

/// Reads one response frame; `None` on EOF.
pub fn read_response(s: &mut UnixStream) -> Option<cada_protocol::wire::Response> {
    let mut hdr = [0u8; 4];
    s.read_exact(&mut hdr).ok()?;
    let len = cada_protocol::wire::frame_len(hdr).expect("sane length");
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).ok()?;
    Some(cada_protocol::wire::decode_payload(&buf).expect("response decodes"))
}

/// A free loopback TCP port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Starts `redis-server` on a free loopback port, without persistence; killed on drop.
pub fn start_redis(dir: &Path) -> (Proc, u16) {
    let port = free_port();
    (start_redis_on(dir, port), port)
}

/// Starts `redis-server` on `port` (e.g. again after stopping it) and waits for PONG.
pub fn start_redis_on(dir: &Path, port: u16) -> Proc {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed by scripts/test.sh");
    let p = Proc {
        child,
        name: "redis-server".into(),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"PING\r\n");
            let mut b = [0u8; 7];
            if s.read_exact(&mut b).is_ok() && &b == b"+PONG\r\n" {
                return p;
            }
        }
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `cada-verify serve` on a free port with its audit log in `dir/<name>-audit`.
pub fn start_verifier(dir: &Path, name: &str, extra: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let audit = dir.join(format!("{name}-audit"));
    let mut args = vec![
        "serve",
        "--listen",
        &listen,
        "--audit-dir",
        audit.to_str().expect("utf8"),
        "--log-format",
        "text",
    ];
    args.extend_from_slice(extra);
    (
        spawn_ready("cada-verify", &args, &dir.join(format!("{name}.log"))),
        port,
    )
}

/// One HTTP/1.1 request over loopback TCP (`Connection: close`). Returns (status, headers, body).
pub fn http_tcp(
    port: u16,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<(u16, String, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: cada\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    // A server may answer (413) before reading a large body; ignore a reset while writing.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP answer {out:?}")))?;
    let (h, b) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    Ok((status, h.to_owned(), b.to_owned()))
}

/// `POST /v1/pop/verify` with JSON; returns (status, parsed body or Null).
pub fn pop_verify(port: u16, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let (st, _, b) = http_tcp(
        port,
        "POST",
        "/v1/pop/verify",
        "application/json",
        body.to_string().as_bytes(),
    )
    .expect("verify request");
    (
        st,
        serde_json::from_str(&b).unwrap_or(serde_json::Value::Null),
    )
}

/// A proof verifier that trusts the pinned roots plus the given software (`sim`, `sim-snp`)
/// roots, with `config` (its Nitro evidence policy tolerating 10 s of clock skew by default).
pub fn verifier_trusting(
    roots_der: &[Vec<u8>],
    config: cada_attestation_verifier::pop::PopConfig,
) -> cada_attestation_verifier::pop::PopVerifier {
    use cada_attestation_verifier::chain::TrustAnchor;
    use cada_attestation_verifier::evidence::EvidenceVerifier;
    use cada_attestation_verifier::nitro::NitroVerifier;
    // The test roots are given to both platforms explicitly (a `sim` root and a `sim-snp`
    // root each only ever verify their own platform's chains).
    let mut store = cada_attestation_verifier::roots::nitro_store();
    let mut snp_store = cada_attestation_verifier::chain::TrustStore::empty();
    for der in roots_der {
        store.add(TrustAnchor::from_der("software root", der).expect("root parses"));
        snp_store.add(TrustAnchor::from_der("software root", der).expect("root parses"));
    }
    cada_attestation_verifier::pop::PopVerifier::new(
        EvidenceVerifier::new(
            NitroVerifier::new(store),
            cada_attestation_verifier::snp::SnpVerifier::new(snp_store),
        ),
        config,
    )
}

/// The default proof configuration of the tests: defaults with 10 s of evidence clock skew.
pub fn test_pop_config() -> cada_attestation_verifier::pop::PopConfig {
    cada_attestation_verifier::pop::PopConfig {
        evidence_policy: cada_attestation_verifier::nitro::NitroPolicy {
            max_future_skew_ms: 10_000,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A tiny status-list server on loopback: every GET answers the current contents of
/// `file` (what the owner published), over HTTPS when `tls` is given (a certificate for the
/// loopback names), else plain HTTP. Returns its port.
pub fn serve_status_file(
    file: std::path::PathBuf,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
) -> u16 {
    use std::io::{Read, Write};
    fn answer(c: &mut (impl Read + Write), file: &std::path::Path) {
        let mut buf = [0u8; 4096];
        let _ = c.read(&mut buf);
        let body = std::fs::read(file).unwrap_or_default();
        let _ = write!(
            c,
            "HTTP/1.1 200 OK\r\nContent-Type: application/vc+jwt\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = c.write_all(&body);
        let _ = c.flush();
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(c) = conn else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
            match &tls {
                Some(config) => {
                    let mut s = cada_net::test_tls::accept(config, c);
                    answer(&mut s, &file);
                    s.conn.send_close_notify();
                    let _ = s.flush();
                }
                None => answer(&mut { c }, &file),
            }
        }
    });
    port
}

/// Runs `cada-owner` and returns (exit code, stdout, stderr).
pub fn owner(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("cada-owner")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `cada-owner` that must succeed, writing stdout to `dir/file`.
pub fn owner_to(dir: &Path, file: &str, args: &[&str]) -> String {
    let (code, out, err) = owner(args);
    assert_eq!(code, 0, "cada-owner {args:?}: {err}");
    std::fs::write(dir.join(file), &out).unwrap();
    out
}

/// Runs `cada-parent` (a client subcommand) against the daemon; (exit code, stdout, stderr).
pub fn parent(sock: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--socket", sock.to_str().unwrap()]);
    let out = Command::new(bin("cada-parent"))
        .args(&all)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Makes an owner key in `dir/name` with `cada-owner keygen`; returns (DID, key file).
pub fn keygen(dir: &Path, name: &str) -> (String, String) {
    let out = dir.join(name);
    let (code, did, err) = owner(&["keygen", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let did = did.lines().last().unwrap().trim().to_owned();
    (did, out.join("owner-key.json").display().to_string())
}

/// Installs the npm package `spec` once under `tmp/dir_name` (partial installs never count);
/// returns the directory holding its `node_modules`.
pub fn npm_package(tmp: &Path, dir_name: &str, spec: &str) -> PathBuf {
    let dir = tmp.join(dir_name);
    if dir.join(".installed").exists() {
        return dir;
    }
    // Per process and per call: tests of one process install the same package at once,
    // and two npm runs in one directory break each other.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let partial = dir.with_extension(format!(
        "partial-{}-{}",
        std::process::id(),
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).unwrap();
    let out = Command::new("npm")
        .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
        .arg(&partial)
        .arg(spec)
        .output()
        .expect("npm must be installed for the interop tests (they do not skip)");
    assert!(
        out.status.success(),
        "npm install {spec} failed; the interop tests need the npm registry:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(partial.join(".installed"), spec).unwrap();
    if std::fs::rename(&partial, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    assert!(dir.join(".installed").exists());
    dir
}

/// Every complete record of an audit directory, files in name order (a line still being
/// written is skipped, not an error).
pub fn audit_records(dir: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect::<Vec<serde_json::Value>>()
        })
        .collect()
}

/// One HTTP/1.1 request over loopback TCP to `port` (`Connection: close`) with extra
/// `headers`: (status, head, body); status 0 when the answer is not HTTP.
pub fn http_tcp_with(
    port: u16,
    method: &str,
    path: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (h, b) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (status, h.to_owned(), b.to_owned())
}

/// `application/x-www-form-urlencoded` of `form` (every byte but the unreserved ones
/// percent-encoded).
pub fn form_body(form: &[(&str, &str)]) -> String {
    let encode = |v: &str| -> String {
        v.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    form.iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Starts `cada-sts serve` on `port` as `issuer` with `policy`, audit log in
/// `d/<name>-audit`, log `d/<name>.log`, plus `extra`.
pub fn sts_serve(
    d: &Path,
    name: &str,
    port: u16,
    issuer: &str,
    policy: &Path,
    extra: &[&str],
) -> Proc {
    spawn_policy_server(
        "cada-sts",
        &["serve", "--issuer", issuer],
        d,
        name,
        port,
        policy,
        extra,
    )
}

/// Starts one of the servers that take a policy and write an audit log (`cada-gate`,
/// `cada-sts`, `cada-verify`): `lead` (a subcommand, then flags of its own) first, then
/// `--listen 127.0.0.1:<port> --policy <policy> --audit-dir d/<name>-audit --log-format
/// text`, then `extra`; its log goes to `d/<name>.log`.
pub fn spawn_policy_server(
    bin: &str,
    lead: &[&str],
    d: &Path,
    name: &str,
    port: u16,
    policy: &Path,
    extra: &[&str],
) -> Proc {
    let listen = format!("127.0.0.1:{port}");
    let audit = d.join(format!("{name}-audit"));
    let mut args = lead.to_vec();
    args.extend_from_slice(&[
        "--listen",
        &listen,
        "--policy",
        policy.to_str().unwrap(),
        "--audit-dir",
        audit.to_str().unwrap(),
        "--log-format",
        "text",
    ]);
    args.extend_from_slice(extra);
    spawn_ready(bin, &args, &d.join(format!("{name}.log")))
}

/// `POST /v1/pop` to the daemon on `sock` with `body`: (status, JSON answer or null).
pub fn daemon_pop(sock: &Path, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let (st, text) = http(
        sock,
        "POST",
        "/v1/pop",
        Some(&body.to_string()),
        Duration::from_secs(20),
    )
    .unwrap();
    (st, serde_json::from_str(&text).unwrap_or_default())
}

/// `cada-verify audit trace <args>`: (exit code, stdout, stderr).
pub fn trace_cmd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("cada-verify"))
        .args(["audit", "trace"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The requests a [`recorder`] received: (head, body) each, in order.
pub type Recorded = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// A loopback HTTP/1.1 server that records every request (head as sent, body by its
/// `Content-Length`) and answers `answer` (JSON) with `Connection: close`.
pub fn recorder(answer: &'static str) -> (u16, Recorded) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen: Recorded = std::sync::Arc::default();
    let s = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let s = std::sync::Arc::clone(&s);
            std::thread::spawn(move || {
                let mut conn = conn;
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let (head, body) = loop {
                    let Ok(n) = conn.read(&mut chunk) else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    let Some(i) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let len: usize = text[..i]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= i + 4 + len {
                        break (
                            text[..i].to_owned(),
                            String::from_utf8_lossy(&buf[i + 4..i + 4 + len]).into_owned(),
                        );
                    }
                };
                s.lock().unwrap().push((head, body));
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                        answer.len()
                    )
                    .as_bytes(),
                );
            });
        }
    });
    (port, seen)
}

/// The audit files (`*.jsonl`) of a directory, in name order.
pub fn audit_files(dir: &Path) -> Vec<PathBuf> {
    let mut f: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    f.sort();
    f
}
