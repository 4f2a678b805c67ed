//! Shared by the MCP end-to-end tests: the official Python SDK's server and client (the
//! scripts in `tests/interop/mcp/`, installed pinned), raw requests to a gate, proofs from
//! the daemon bound to a body, and starting `cada-gate`.
#![allow(clippy::missing_panics_doc)] // test helpers: a failure is a failed test
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cada_protocol::mcp;

use crate::{http, Proc};

/// The Python side: SDK server and client scripts and their pinned installer.
pub fn interop() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/mcp")
}

/// The venv with the pinned SDK, installed once under `tmp` (the test's
/// `CARGO_TARGET_TMPDIR`) by the project's script.
pub fn python(tmp: &Path) -> PathBuf {
    let dir = tmp.join("mcp-python");
    let out = Command::new("bash")
        .arg(interop().join("install.sh"))
        .arg(&dir)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "installing the MCP Python SDK failed (the test needs PyPI; it does not skip):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("bin/python")
}

/// A Python process that printed `ready`.
pub struct Py(pub std::process::Child);

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn start_server(py: &Path, d: &Path, name: &str, port: u16, json: bool) -> Py {
    start_server_with(py, d, name, port, json, &[])
}

pub fn start_server_with(
    py: &Path,
    d: &Path,
    name: &str,
    port: u16,
    json: bool,
    extra: &[&str],
) -> Py {
    let log = std::fs::File::create(d.join(format!("{name}.log"))).unwrap();
    let mut cmd = Command::new(py);
    cmd.arg(interop().join("server.py"))
        .args(["--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(log);
    if json {
        cmd.arg("--json");
    }
    cmd.args(extra);
    let mut child = cmd.spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 5];
    let t = Instant::now();
    out.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ready", "server {name}");
    assert!(t.elapsed() < Duration::from_secs(60));
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = out.read_to_end(&mut sink);
    });
    Py(child)
}

/// The SDK client against `url`: its JSON report.
pub fn client(py: &Path, url: &str, calls: &[&str]) -> serde_json::Value {
    client_with(py, url, &[], calls)
}

/// The SDK client with extra options (`--mode legacy`, `--cada-socket PATH`).
pub fn client_with(py: &Path, url: &str, opts: &[&str], calls: &[&str]) -> serde_json::Value {
    let mut args = vec![
        interop().join("client.py").display().to_string(),
        url.to_owned(),
        "--list".to_owned(),
    ];
    args.extend(opts.iter().map(|o| (*o).to_owned()));
    for c in calls {
        args.push("--call".into());
        args.push((*c).to_owned());
    }
    let out = Command::new(py).args(&args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "client output is not JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// An HTTP/1.1 request head for `127.0.0.1:port` with `Connection: close` and the body's
/// length.
pub fn request_head(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body_len: usize,
) -> String {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {body_len}\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// One raw HTTP/1.1 request to the gate with these headers; (status, head, body).
pub fn send(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    send_raw(port, method, path.as_bytes(), headers, body)
}

/// [`send`] with the request target written byte for byte, whatever the bytes (clients
/// normalize targets: this does not).
pub fn send_raw(
    port: u16,
    method: &str,
    target: &[u8],
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let head = request_head(port, method, "/", headers, body.len());
    let rest = head.split_once("\r\n").map_or("", |(_, r)| r);
    let mut bytes = format!("{method} ").into_bytes();
    bytes.extend_from_slice(target);
    bytes.extend_from_slice(b" HTTP/1.1\r\n");
    bytes.extend_from_slice(rest.as_bytes());
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&bytes).unwrap();
    let _ = s.write_all(body);
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

/// A proof from the daemon for `POST url` bound to `body` (`bd`, and `mcp` when
/// `name_calls`), with evidence and contract.
pub fn proof_for(sock: &Path, url: &str, body: &[u8], name_calls: bool) -> serde_json::Value {
    match ask_proof(sock, "POST", url, body, name_calls) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// Asks the daemon for a proof for `method url` bound to `body` (`bd`, and `mcp` when
/// `name_calls`), with evidence and contract: the proof, or the daemon's refusal.
pub fn ask_proof(
    sock: &Path,
    method: &str,
    url: &str,
    body: &[u8],
    name_calls: bool,
) -> Result<serde_json::Value, String> {
    let calls = if name_calls && !body.is_empty() {
        mcp::parse_body(body).unwrap().calls()
    } else {
        vec![]
    };
    let ask = serde_json::json!({
        "method": method, "url": url, "with_evidence": true,
        "bd": mcp::body_digest(body), "mcp": calls,
    });
    let (st, text) = http(
        sock,
        "POST",
        "/v1/pop",
        Some(&ask.to_string()),
        Duration::from_secs(10),
    )
    .unwrap();
    if st != 200 {
        return Err(format!("{st} {text}"));
    }
    Ok(serde_json::from_str(&text).unwrap())
}

pub fn mcp_headers(p: &serde_json::Value, body: &[u8]) -> Vec<(String, String)> {
    let mut h = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        (
            "Accept".to_owned(),
            "application/json, text/event-stream".to_owned(),
        ),
        ("DPoP".to_owned(), p["dpop"].as_str().unwrap().to_owned()),
        (
            "CADA-Evidence".to_owned(),
            p["evidence"].as_str().unwrap().to_owned(),
        ),
        ("Content-Digest".to_owned(), mcp::content_digest(body)),
    ];
    if let Some(c) = p["contract"].as_str() {
        h.push(("CADA-Contract".to_owned(), c.to_owned()));
    }
    h
}

pub fn refs(h: &[(String, String)]) -> Vec<(&str, &str)> {
    h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The JSON-RPC error message of a gate answer's body (single or first of a batch).
pub fn rpc_error(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let m = if v.is_array() { &v[0] } else { &v };
    m["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Starts `cada-gate` in front of `upstream` on `port` with `policy`, audit log in
/// `d/<name>-audit`, log `d/<name>.log`, plus `extra`.
pub fn start_gate(
    d: &Path,
    name: &str,
    port: u16,
    upstream: &str,
    policy: &Path,
    extra: &[&str],
) -> Proc {
    crate::spawn_policy_server(
        "cada-gate",
        &["--upstream", upstream],
        d,
        name,
        port,
        policy,
        extra,
    )
}

/// A sim enclave locked to a fresh owner, with its signing daemon: where every MCP test
/// starts.
pub struct LockedAgent {
    /// The enclave process.
    pub enclave: Proc,
    /// The daemon process.
    pub parent: Proc,
    /// The daemon's socket.
    pub sock: PathBuf,
    /// The enclave key's did:key.
    pub did: String,
    /// The image's PCR0.
    pub pcr0: String,
    /// The owner's did:key.
    pub owner_did: String,
    /// The owner's key file.
    pub key: String,
}

impl LockedAgent {
    /// Starts both in `d` (the daemon with `parent_extra`) and locks the enclave to a new
    /// owner.
    pub fn start(d: &Path, parent_extra: &[&str]) -> Self {
        let enclave = crate::start_enclave(d, &[]);
        let parent = crate::start_parent(d, parent_extra);
        Self::lock(d, enclave, parent)
    }

    /// As [`Self::start`], with `cada-parent proxy --enclave … --socket d/agent.sock` plus
    /// `proxy_extra` (its listener and upstreams) in place of the daemon: the proxy signs in
    /// process and serves the daemon's API at the socket itself.
    pub fn start_proxy_in_process(d: &Path, proxy_extra: &[&str]) -> Self {
        let enclave = crate::start_enclave(d, &[]);
        let endpoint = crate::enclave_endpoint(d);
        let sock = d.join("agent.sock");
        let mut args = vec![
            "proxy",
            "--enclave",
            &endpoint,
            "--socket",
            sock.to_str().unwrap(),
        ];
        args.extend_from_slice(proxy_extra);
        let proxy = crate::spawn_ready("cada-parent", &args, &d.join("proxy.log"));
        Self::lock(d, enclave, proxy)
    }

    /// Locks the enclave behind `parent` (whose daemon API is at `d/agent.sock`) to a new
    /// owner.
    fn lock(d: &Path, enclave: Proc, parent: Proc) -> Self {
        let sock = d.join("agent.sock");
        let (_, id) = http(&sock, "GET", "/v1/identity", None, Duration::from_secs(5)).unwrap();
        let id: serde_json::Value = serde_json::from_str(&id).unwrap();
        let did = id["did"].as_str().unwrap().to_owned();
        let pcr0 = id["measurements"]["PCR0"].as_str().unwrap().to_owned();
        let (owner_did, key) = crate::keygen(d, "owner");
        crate::owner_to(d, "lock.jwt", &["lock", "--key", &key, "--enclave", &did]);
        let lock = d.join("lock.jwt");
        assert_eq!(
            crate::parent(&sock, &["owner", "lock", lock.to_str().unwrap()]).0,
            0
        );
        LockedAgent {
            enclave,
            parent,
            sock,
            did,
            pcr0,
            owner_did,
            key,
        }
    }

    /// A policy trusting the sim root in `d` and, for each of `prefixes`, this agent's image
    /// (PCR0) and owner: the `[roots]` section and one `[[audience]]` each.
    pub fn policy_toml(&self, d: &Path, prefixes: &[&str]) -> String {
        let mut t = format!(
            "[roots]\nnitro = [{:?}]\n",
            d.join("state/sim-root.der").display().to_string()
        );
        for prefix in prefixes {
            t.push_str(&format!(
                "[[audience]]\nprefix = \"{prefix}\"\nmeasurements = [{{ PCR0 = \"{}\" }}]\nowners = [\"{}\"]\n",
                self.pcr0, self.owner_did
            ));
        }
        t
    }

    /// Writes [`Self::policy_toml`] to `d/<file>`; its path.
    pub fn write_policy(&self, d: &Path, file: &str, prefixes: &[&str]) -> PathBuf {
        let path = d.join(file);
        std::fs::write(&path, self.policy_toml(d, prefixes)).unwrap();
        path
    }

    /// `cada-sts` named `sts` on `port` as `issuer` (plus `extra`), its policy
    /// [`Self::policy_toml`] for `apis` written to `d/sts-policy.toml`: the STS process and
    /// the policy text (a verifier's policy may add the STS as an issuer to it).
    pub fn start_sts(
        &self,
        d: &Path,
        port: u16,
        issuer: &str,
        apis: &[&str],
        extra: &[&str],
    ) -> (Proc, String) {
        let policy = self.policy_toml(d, apis);
        let path = d.join("sts-policy.toml");
        std::fs::write(&path, &policy).unwrap();
        (
            crate::sts_serve(d, "sts", port, issuer, &path, extra),
            policy,
        )
    }

    /// The owner grants a one-hour, unrevocable contract (`cada-owner grant` with `args`:
    /// audiences, methods, tools …) and the daemon installs it.
    pub fn grant(&self, d: &Path, args: &[&str]) {
        let mut all = vec![
            "grant",
            "--key",
            &self.key,
            "--subject",
            &self.did,
            "--valid-for",
            "1h",
            "--no-revocation",
        ];
        all.extend_from_slice(args);
        crate::owner_to(d, "contract.jwt", &all);
        let contract = d.join("contract.jwt");
        let (code, _, err) = crate::parent(
            &self.sock,
            &["contract", "install", contract.to_str().unwrap()],
        );
        assert_eq!(code, 0, "{err}");
    }
}
