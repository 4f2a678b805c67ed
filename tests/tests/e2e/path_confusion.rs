//! What the gate authorizes is what the server receives (issue 21: items 1, 2, 5 and 10),
//! shown differentially: the same crafted request targets, written byte for byte on a
//! `TcpStream` (HTTP clients normalize targets), sent through `cada-gate` to real servers
//! that resolve paths in different ways, each recording what it served
//! (`tests/interop/paths/upstream.py`):
//!
//! * Starlette on uvicorn routes the percent-decoded path with its dot segments, so
//!   `/admin/%2e%2e/mcp` reaches its `/admin` mount;
//! * Python's `http.server` decodes and then removes dot segments, so `/pub/..%2Fsecret.txt`
//!   opens a file outside `/pub`;
//! * nginx (Debian's) in front of the gate in forward-auth mode, with the configuration
//!   `docs/gate.md` documents (read from that file), forwarding to both.
//!
//! The assertions read the servers' records, not only statuses: nothing outside the granted
//! prefix is ever reached, and the control requests are. The crafted requests carry proofs
//! the enclave signed for the canonical granted URL (via the daemon) and proofs whose `htu` is
//! itself crafted: asked of the enclave (which must refuse to sign them) and minted with a
//! test key whose evidence the gates trust (what an attacker holding such a proof would send).
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cada_e2e::mcp_interop::*;
use cada_e2e::*;
use cada_enclave::key::SigningKey;
use cada_enclave::platform::sim::Sim;
use cada_enclave::platform::Platform;
use cada_protocol::jwk::SigAlg;
use cada_protocol::token::{CadaClaim, PopClaims, PopHeader};
use cada_protocol::{b64, mcp, token};
use serde_json::Value;

const ECHO: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
const DELETE_ALL: &[u8] =
    br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_all","arguments":{}}}"#;

/// Targets that differ from the granted `/mcp` only in ways some parser resolves (dot
/// segments, encoded `.` `/` `\` `%`, `;` parameters, empty segments, NUL, overlong UTF-8,
/// backslashes, needless encoding), each sent with a proof the enclave made for `/mcp`.
const MCP_TARGETS: &[&[u8]] = &[
    b"/admin/../mcp",
    b"/admin/%2e%2e/mcp",
    b"/admin/%2E%2e/mcp",
    b"/admin/.%2E/mcp",
    b"/./mcp",
    b"/%6Dcp",
    b"/%6dcp",
    b"/admin/..%2Fmcp",
    b"/admin/..%2fmcp",
    b"/admin/..%5Cmcp",
    b"/admin/..%5cmcp",
    b"/admin\\..\\mcp",
    b"/admin/..;/mcp",
    b"//mcp",
    b"/admin/%252e%252e/mcp",
    b"/mcp%00",
    b"/admin/%C0%AE%C0%AE/mcp",
    b"/admin/\xC0\xAE\xC0\xAE/mcp",
    b"/adm\xC3\xAFn/../mcp",
];

/// Proofs whose `htu` is itself crafted under the granted `/mcp` (path in the proof, raw
/// targets sent with it).
const MCP_CRAFTED: &[(&str, &[&[u8]])] = &[
    (
        "/mcp/..%2Fadmin/x",
        &[
            b"/mcp/..%2Fadmin/x",
            b"/mcp/..%2fadmin/x",
            b"/mcp/%2e%2e%2fadmin/x",
        ],
    ),
    (
        "/mcp/%5C..%5Cadmin",
        &[b"/mcp/%5C..%5Cadmin", b"/mcp/%5c..%5cadmin"],
    ),
    ("/mcp/%252e%252e/admin", &[b"/mcp/%252e%252e/admin"]),
    ("/mcp/..;/admin", &[b"/mcp/..;/admin"]),
    ("/mcp//admin", &[b"/mcp//admin"]),
    ("/mcp/%00", &[b"/mcp/%00"]),
    ("/mcp/%C0%AE%C0%AE/admin", &[b"/mcp/%C0%AE%C0%AE/admin"]),
];

/// The same under the granted `/pub` of the file server (`secret.txt` lies beside `pub/`).
const PUB_CRAFTED: &[(&str, &[&[u8]])] = &[
    (
        "/pub/..%2Fsecret.txt",
        &[
            b"/pub/..%2Fsecret.txt",
            b"/pub/..%2fsecret.txt",
            b"/pub/%2e%2e%2fsecret.txt",
            b"/pub/%2E%2E%2Fsecret.txt",
        ],
    ),
    ("/pub/..%5Csecret.txt", &[b"/pub/..%5Csecret.txt"]),
    (
        "/pub/%252e%252e%252fsecret.txt",
        &[b"/pub/%252e%252e%252fsecret.txt"],
    ),
    ("/pub/..;/secret.txt", &[b"/pub/..;/secret.txt"]),
    ("/pub//secret.txt", &[b"/pub//secret.txt"]),
    ("/pub/%00", &[b"/pub/%00"]),
];

/// The crafted `htu`s the enclave is asked to sign (it must refuse every one).
const ENCLAVE_CRAFTED: &[&str] = &[
    "/pub/..%2Fsecret.txt",
    "/pub/..%5Csecret.txt",
    "/pub/%252e%252e%252fsecret.txt",
    "/pub/..;/secret.txt",
    "/pub//secret.txt",
    "/pub/%00",
];

/// A key outside any enclave whose `sim` evidence the gates trust: it signs proofs for any
/// `htu`, as an attacker holding a proof for a crafted URL would have one.
struct TestKey {
    key: SigningKey,
    evidence: String,
    att: String,
    root: PathBuf,
    pcr0: String,
}

impl TestKey {
    fn new(d: &Path) -> Self {
        let sim = Sim::new(None).unwrap();
        let key = SigningKey::generate(SigAlg::EdDSA).unwrap();
        let env = sim
            .attest(&key.binding().to_cbor(), b"path-confusion")
            .unwrap();
        let root = d.join("test-key-root.der");
        std::fs::write(&root, sim.root_der()).unwrap();
        let pcr0 = sim.measurements().unwrap()["PCR0"].clone();
        TestKey {
            att: env.att_digest(),
            evidence: env.to_header(),
            key,
            root,
            pcr0,
        }
    }

    /// A proof for `htm htu` bound to `body` (its digest and calls).
    fn proof(&self, htm: &str, htu: &str, body: &[u8]) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = PopHeader {
            typ: token::TYP.into(),
            alg: self.key.alg().as_str().into(),
            jwk: self.key.jwk().clone(),
        };
        let claims = PopClaims {
            jti: format!(
                "test-key-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ),
            htm: htm.into(),
            htu: htu.into(),
            iat,
            exp: iat + 30,
            ath: None,
            nonce: None,
            cada: CadaClaim {
                att: self.att.clone(),
                seq: 1,
                chain: b64::encode([0u8; 32]),
                bd: Some(mcp::body_digest(body)),
                mcp: if body.is_empty() {
                    vec![]
                } else {
                    mcp::parse_body(body).unwrap().calls()
                },
                ..CadaClaim::default()
            },
        };
        let input = token::signing_input(&header, &claims).unwrap();
        let sig = self.key.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", b64::encode(sig))
    }

    fn headers(&self, htm: &str, htu: &str, body: &[u8]) -> Vec<(String, String)> {
        vec![
            ("Content-Type".into(), "application/json".into()),
            ("DPoP".into(), self.proof(htm, htu, body)),
            ("CADA-Evidence".into(), self.evidence.clone()),
            ("Content-Digest".into(), mcp::content_digest(body)),
        ]
    }
}

/// A proof the daemon (the enclave) signed for `method url` bound to `body`, as headers.
fn daemon_headers(sock: &Path, method: &str, url: &str, body: &[u8]) -> Vec<(String, String)> {
    let p = ask_proof(sock, method, url, body, true).unwrap_or_else(|e| panic!("{url}: {e}"));
    mcp_headers(&p, body)
}

/// What an upstream served, from its JSON-lines record.
struct Served(PathBuf);

impl Served {
    fn all(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// One request's outcome: the status, the refusal's code when the gate answered one, and
/// what the upstream served for it.
struct Outcome {
    status: u16,
    code: String,
    reached: Vec<Value>,
}

fn attempt(
    port: u16,
    method: &str,
    target: &[u8],
    headers: &[(String, String)],
    body: &[u8],
    up: &Served,
) -> Outcome {
    let before = up.all().len();
    let (status, _, text) = send_raw(port, method, target, &refs(headers), body);
    let code = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| {
            let m = if v.is_array() { &v[0] } else { &v };
            m["error"]["data"]["code"].as_str().map(str::to_owned)
        })
        .unwrap_or_default();
    Outcome {
        status,
        code,
        reached: up.all().split_off(before),
    }
}

/// Headers a client adds to redirect what the server acts on: forwarding headers (the client's
/// address, host, scheme), method and URL overrides that some frameworks honour (Symfony and
/// IIS read `X-Original-URL`, method-override middleware `X-HTTP-Method-Override`), and `_`
/// look-alikes that CGI, WSGI and PHP servers read as the `-` names (`Mcp_Name` as
/// `Mcp-Name`). None of them may reach the server as the client wrote it.
const CLIENT_REDIRECTS: &[(&str, &str)] = &[
    ("Forwarded", "for=203.0.113.9;host=evil.example;proto=https"),
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Proto", "gopher"),
    ("X-Forwarded-Prefix", "/admin"),
    ("X-Real-IP", "203.0.113.9"),
    ("X-Original-URL", "/admin"),
    ("X-Rewrite-URL", "/admin"),
    ("X-HTTP-Method-Override", "DELETE"),
    ("Mcp_Name", "delete_all"),
    ("X_Forwarded_For", "203.0.113.9"),
];

/// Which of [`CLIENT_REDIRECTS`] reached the server with the client's value (an upstream
/// record's `headers`).
fn redirects_received(r: &Value) -> Vec<String> {
    let got: Vec<(String, String)> = r["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
        .collect();
    CLIENT_REDIRECTS
        .iter()
        .filter(|(k, v)| {
            got.iter()
                .any(|(n, w)| n.eq_ignore_ascii_case(k) && (w == v || w.contains("evil.example")))
        })
        .map(|(k, v)| format!("{k}: {v}"))
        .collect()
}

/// Standard base64 of the SHA-512 of `b` (a `Content-Digest` `sha-512` member's value).
fn sha512_b64(b: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, b);
    let mut s = b64::encode(d.as_ref()).replace('-', "+").replace('_', "/");
    while s.len() % 4 != 0 {
        s.push('=');
    }
    s
}

fn show(target: &[u8]) -> String {
    String::from_utf8_lossy(&target.escape_ascii().collect::<Vec<u8>>()).into_owned()
}

/// Records a failure unless a crafted request was refused before anything reached the
/// upstream (400, and the gate's `request.url_not_normal` when the gate wrote the answer;
/// hyper or nginx may refuse some bytes themselves).
fn expect_refused(failures: &mut Vec<String>, what: &str, target: &[u8], o: &Outcome) {
    eprintln!("{what} {}: {} {:?}", show(target), o.status, o.code);
    if !o.reached.is_empty() {
        failures.push(format!(
            "{what} {}: REACHED the upstream ({}), which served {:?}",
            show(target),
            o.status,
            o.reached
        ));
    } else if !matches!(o.status, 400 | 500)
        || !matches!(o.code.as_str(), "" | "request.url_not_normal")
    {
        failures.push(format!(
            "{what} {}: answered {} {:?}, not 400 request.url_not_normal",
            show(target),
            o.status,
            o.code
        ));
    }
}

/// Starts `upstream.py KIND ARGS` with the MCP interop venv's Python; waits for `ready`.
fn upstream(py: &Path, d: &Path, kind: &str, port: u16, log: &Served, extra: &[&str]) -> Py {
    let script = interop().join("../paths/upstream.py");
    let mut child = Command::new(py)
        .arg(script)
        .arg(kind)
        .args(["--port", &port.to_string(), "--log"])
        .arg(&log.0)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(d.join(format!("{kind}.log"))).unwrap())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 5];
    out.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ready", "{kind}");
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = out.read_to_end(&mut sink);
    });
    Py(child)
}

/// A document root with `pub/file.txt` (granted) and `secret.txt` beside `pub/` (not).
fn website(d: &Path) -> PathBuf {
    let root = d.join("www");
    std::fs::create_dir_all(root.join("pub")).unwrap();
    std::fs::write(root.join("pub/file.txt"), "public\n").unwrap();
    std::fs::write(root.join("secret.txt"), "SECRET\n").unwrap();
    root
}

/// A gate policy trusting the enclave's and the test key's roots, with one audience per
/// `(prefix, owners)`: `owners` names the agent's owner (contracts govern) or none.
fn policy(
    d: &Path,
    name: &str,
    agent: &LockedAgent,
    tk: &TestKey,
    auds: &[(String, bool)],
) -> PathBuf {
    let mut text = format!(
        "[roots]\nnitro = [{:?}, {:?}]\n",
        d.join("state/sim-root.der").display().to_string(),
        tk.root.display().to_string()
    );
    for (prefix, owners) in auds {
        text.push_str(&format!(
            "[[audience]]\nprefix = \"{prefix}\"\nmeasurements = [{{ PCR0 = \"{}\" }}, {{ PCR0 = \"{}\" }}]\n",
            agent.pcr0, tk.pcr0
        ));
        if *owners {
            text.push_str(&format!("owners = [\"{}\"]\n", agent.owner_did));
        }
    }
    let p = d.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

#[test]
fn the_gate_forwards_only_the_target_it_authorized() {
    let py = python(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let dir = TempDir::new("paths-gate");
    let d = &dir.0;
    let agent = LockedAgent::start(d, &[]);
    let tk = TestKey::new(d);
    let (g_mcp, g_base, g_pub) = (free_port(), free_port(), free_port());
    let (a_mcp, a_base, a_pub) = (url(g_mcp, "/mcp"), url(g_base, "/mcp"), url(g_pub, "/pub"));
    agent.grant(
        d,
        &[
            "--method",
            "POST",
            "--method",
            "GET",
            "--tool",
            "echo",
            "--audience",
            &a_mcp,
            "--audience",
            &a_base,
            "--audience",
            &a_pub,
        ],
    );
    let www = website(d);
    let (s_port, f_port) = (free_port(), free_port());
    let starlette = Served(d.join("starlette.jsonl"));
    let files = Served(d.join("files.jsonl"));
    let _s = upstream(&py, d, "starlette", s_port, &starlette, &[]);
    let _f = upstream(
        &py,
        d,
        "files",
        f_port,
        &files,
        &["--root", www.to_str().unwrap()],
    );
    let p_mcp = policy(d, "mcp", &agent, &tk, &[(a_mcp.clone(), false)]);
    let p_base = policy(d, "base", &agent, &tk, &[(a_base.clone(), false)]);
    let p_pub = policy(d, "pub", &agent, &tk, &[(a_pub.clone(), false)]);
    let _g1 = start_gate(d, "gate-mcp", g_mcp, &url(s_port, ""), &p_mcp, &[]);
    let _g2 = start_gate(d, "gate-base", g_base, &url(s_port, "/base"), &p_base, &[]);
    let _g3 = start_gate(d, "gate-pub", g_pub, &url(f_port, ""), &p_pub, &[]);
    let sock = &agent.sock;
    let mut failures = Vec::new();

    // Controls: the granted URLs are reached, with the gate's identity headers only (none of
    // the client's look-alikes) and X-Forwarded-For naming the peer alone.
    let mut h = daemon_headers(sock, "POST", &a_mcp, ECHO);
    for (k, v) in [
        ("Cada_Agent", "did:key:forged"),
        ("cada_agent_claims", "e30"),
        ("CADA-Agent-Extra", "forged"),
        ("X-Forwarded-For", "203.0.113.9"),
    ]
    .iter()
    .chain(CLIENT_REDIRECTS)
    {
        h.push(((*k).into(), (*v).into()));
    }
    let o = attempt(g_mcp, "POST", b"/mcp", &h, ECHO, &starlette);
    assert_eq!(o.status, 200, "control /mcp: {:?}", o.code);
    assert_eq!(o.reached.len(), 1);
    let r = &o.reached[0];
    // Forwarding, override and look-alike headers of a client (not a trusted proxy) are
    // removed; the gate's Content-Digest is the body's sha-256 alone.
    let received = redirects_received(r);
    if !received.is_empty() {
        failures.push(format!(
            "a client's forwarding, override or look-alike headers reached the upstream: \
             {received:?}"
        ));
    }
    assert_eq!(
        (r["served"].as_str(), r["raw_path"].as_str()),
        (Some("mcp"), Some("/mcp"))
    );
    let mut identity: Vec<(String, String)> = r["identity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
        .collect();
    identity.sort();
    let names: Vec<&str> = identity.iter().map(|(n, _)| n.as_str()).collect();
    if names != ["cada-agent", "cada-agent-claims"] || identity[0].1 != agent.did {
        failures.push(format!(
            "identity headers at the upstream: {identity:?} (only the gate's cada-agent and \
             cada-agent-claims may arrive)"
        ));
    }
    if r["x-forwarded-for"] != serde_json::json!(["127.0.0.1"]) {
        failures.push(format!(
            "X-Forwarded-For at the upstream: {} (the client's value must be replaced by the peer)",
            r["x-forwarded-for"]
        ));
    }
    let h = daemon_headers(sock, "POST", &a_base, ECHO);
    let o = attempt(g_base, "POST", b"/mcp", &h, ECHO, &starlette);
    assert_eq!(o.status, 200, "control base: {:?}", o.code);
    assert_eq!(o.reached[0]["served"], "base/mcp");
    assert_eq!(o.reached[0]["raw_path"], "/base/mcp");
    let h = daemon_headers(sock, "GET", &url(g_pub, "/pub/file.txt"), b"");
    let o = attempt(g_pub, "GET", b"/pub/file.txt", &h, b"", &files);
    assert_eq!(o.status, 200, "control file: {:?}", o.code);
    assert_eq!(o.reached[0]["file"], "pub/file.txt");

    // The metadata names only resources a request could reach: a path in normal form.
    for path in [
        "/../../mcp",
        "/%2e%2e/admin",
        "//evil.example/x",
        "/mcp/./x",
    ] {
        let target = format!("/.well-known/oauth-protected-resource{path}");
        let (status, _, body) = send(g_mcp, "GET", &target, &[], b"");
        if status != 400 || !body.contains("request.url_not_normal") {
            failures.push(format!("metadata for {path}: {status} {body}"));
        }
    }
    let (status, _, body) = send(
        g_mcp,
        "GET",
        "/.well-known/oauth-protected-resource/mcp",
        &[],
        b"",
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("\"resource\":\"{a_mcp}\"")),
        "{body}"
    );

    // 1. Proofs the enclave made for the canonical /mcp, sent with crafted targets.
    for target in MCP_TARGETS {
        let h = daemon_headers(sock, "POST", &a_mcp, ECHO);
        let o = attempt(g_mcp, "POST", target, &h, ECHO, &starlette);
        expect_refused(&mut failures, "proof for /mcp, target", target, &o);
    }
    // The upstream's base path cannot be climbed out of.
    for target in [
        b"/../../mcp".as_slice(),
        b"/%2e%2e/%2e%2e/mcp",
        b"/..%2F..%2Fmcp",
        b"/./../mcp",
    ] {
        let h = daemon_headers(sock, "POST", &a_base, ECHO);
        let o = attempt(g_base, "POST", target, &h, ECHO, &starlette);
        expect_refused(&mut failures, "upstream /base, target", target, &o);
    }

    // 2. Proofs whose htu is itself crafted: the enclave refuses to sign them …
    for path in ENCLAVE_CRAFTED {
        if let Ok(p) = ask_proof(sock, "GET", &url(g_pub, path), b"", true) {
            failures.push(format!("the enclave signed GET {path}"));
            let o = attempt(
                g_pub,
                "GET",
                path.as_bytes(),
                &mcp_headers(&p, b""),
                b"",
                &files,
            );
            expect_refused(
                &mut failures,
                "enclave-signed crafted htu",
                path.as_bytes(),
                &o,
            );
        }
    }
    // … and the gate refuses them from a key that signs anything.
    for (path, targets) in MCP_CRAFTED {
        for target in *targets {
            let h = tk.headers("POST", &url(g_mcp, path), ECHO);
            let o = attempt(g_mcp, "POST", target, &h, ECHO, &starlette);
            expect_refused(&mut failures, &format!("htu {path}, target"), target, &o);
        }
    }
    for (path, targets) in PUB_CRAFTED {
        for target in *targets {
            let h = tk.headers("GET", &url(g_pub, path), b"");
            let o = attempt(g_pub, "GET", target, &h, b"", &files);
            expect_refused(&mut failures, &format!("htu {path}, target"), target, &o);
        }
    }
    // The test key's proofs are otherwise good: the control passes with one.
    let h = tk.headers("GET", &url(g_pub, "/pub/file.txt"), b"");
    let o = attempt(g_pub, "GET", b"/pub/file.txt", &h, b"", &files);
    assert_eq!(o.status, 200, "test-key control: {:?}", o.code);

    // Whatever happened above, the servers only ever served the granted resources.
    for r in starlette.all() {
        if !matches!(r["served"].as_str(), Some("mcp" | "base/mcp"))
            || !matches!(r["raw_path"].as_str(), Some("/mcp" | "/base/mcp"))
        {
            failures.push(format!("starlette served outside the grant: {r}"));
        }
    }
    for r in files.all() {
        if r["raw_path"] != "/pub/file.txt" || r["file"] != "pub/file.txt" {
            failures.push(format!("http.server served outside the grant: {r}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The nginx `server` block documented in docs/gate.md, for the gate at `gate`, the MCP
/// server at `upstream`, listening on `listen`.
pub(crate) fn documented_nginx_server(listen: u16, gate: &str, upstream: &str) -> String {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/gate.md"))
            .unwrap();
    let block = doc
        .split_once("<!-- forward-auth nginx: begin -->")
        .and_then(|(_, rest)| rest.split_once("<!-- forward-auth nginx: end -->"))
        .map(|(b, _)| b.trim())
        .expect("docs/gate.md holds the forward-auth nginx block between its markers");
    let block = block
        .strip_prefix("```nginx")
        .and_then(|b| b.strip_suffix("```"))
        .expect("a fenced nginx block");
    for placeholder in ["listen 8080;", "127.0.0.1:8402", "127.0.0.1:9000"] {
        assert!(
            block.contains(placeholder),
            "the documented block names {placeholder}"
        );
    }
    block
        .replace("listen 8080;", &format!("listen 127.0.0.1:{listen};"))
        .replace("127.0.0.1:8402", gate)
        .replace("127.0.0.1:9000", upstream)
}

/// Debian's nginx with `servers` (from [`documented_nginx_server`]), in the foreground
/// with its files in `d`; killed on drop.
pub(crate) fn start_nginx(d: &Path, servers: &[String], ports: &[u16]) -> Proc {
    let n = d.join("nginx");
    std::fs::create_dir_all(n.join("tmp")).unwrap();
    let nd = n.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {nd}/nginx.pid;\nerror_log {nd}/error.log info;\n\
         events {{ worker_connections 64; }}\nhttp {{\n  access_log {nd}/access.log;\n  \
         client_body_temp_path {nd}/tmp/body;\n  proxy_temp_path {nd}/tmp/proxy;\n  \
         fastcgi_temp_path {nd}/tmp/fastcgi;\n  uwsgi_temp_path {nd}/tmp/uwsgi;\n  \
         scgi_temp_path {nd}/tmp/scgi;\n{}\n}}\n",
        servers.join("\n")
    );
    std::fs::write(n.join("nginx.conf"), conf).unwrap();
    // Debian puts it in /usr/sbin, which a test's PATH may lack.
    let nginx = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .unwrap_or("nginx");
    let child = Command::new(nginx)
        .arg("-p")
        .arg(&n)
        .arg("-c")
        .arg(n.join("nginx.conf"))
        .arg("-e")
        .arg(n.join("error.log"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(n.join("stderr.log")).unwrap())
        .spawn()
        .expect("nginx is installed by scripts/test.sh (Debian's nginx)");
    let p = Proc {
        child,
        name: "nginx".into(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    for port in ports {
        while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {port}: {}",
                std::fs::read_to_string(n.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    p
}

#[test]
fn nginx_forward_auth_forwards_only_what_the_gate_authorized() {
    let py = python(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let dir = TempDir::new("paths-nginx");
    let d = &dir.0;
    let agent = LockedAgent::start(d, &[]);
    let tk = TestKey::new(d);
    let (n_mcp, n_pub, gate) = (free_port(), free_port(), free_port());
    let (a_mcp, a_pub) = (url(n_mcp, "/mcp"), url(n_pub, "/pub"));
    agent.grant(
        d,
        &[
            "--method",
            "POST",
            "--method",
            "GET",
            "--tool",
            "echo",
            "--audience",
            &a_mcp,
            "--audience",
            &a_pub,
        ],
    );
    let www = website(d);
    let (s_port, f_port) = (free_port(), free_port());
    let starlette = Served(d.join("starlette.jsonl"));
    let files = Served(d.join("files.jsonl"));
    let _s = upstream(&py, d, "starlette", s_port, &starlette, &[]);
    let _f = upstream(
        &py,
        d,
        "files",
        f_port,
        &files,
        &["--root", www.to_str().unwrap()],
    );
    // The MCP server's audience names the owner: contracts govern its tools.
    let p = policy(
        d,
        "fwd",
        &agent,
        &tk,
        &[(a_mcp.clone(), true), (a_pub.clone(), false)],
    );
    let _g = start_gate(
        d,
        "gate-fwd",
        gate,
        &url(s_port, ""),
        &p,
        &["--trusted-proxy", "127.0.0.1"],
    );
    let gate_addr = format!("127.0.0.1:{gate}");
    let _nginx = start_nginx(
        d,
        &[
            documented_nginx_server(n_mcp, &gate_addr, &format!("127.0.0.1:{s_port}")),
            documented_nginx_server(n_pub, &gate_addr, &format!("127.0.0.1:{f_port}")),
        ],
        &[n_mcp, n_pub],
    );
    let sock = &agent.sock;
    let mut failures = Vec::new();

    // Controls, through nginx: the granted call and file are reached, with the gate's
    // identity.
    let h = daemon_headers(sock, "POST", &a_mcp, ECHO);
    let o = attempt(n_mcp, "POST", b"/mcp", &h, ECHO, &starlette);
    assert_eq!(o.status, 200, "control /mcp through nginx: {:?}", o.code);
    let r = &o.reached[0];
    assert_eq!(
        (r["served"].as_str(), r["tool"].as_str()),
        (Some("mcp"), Some("echo"))
    );
    assert_eq!(r["content_digest_ok"], true, "{r}");
    assert!(
        r["identity"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(["cada-agent", agent.did])),
        "{r}"
    );
    let h = daemon_headers(sock, "GET", &url(n_pub, "/pub/file.txt"), b"");
    let o = attempt(n_pub, "GET", b"/pub/file.txt", &h, b"", &files);
    assert_eq!(o.status, 200, "control file through nginx: {:?}", o.code);
    assert_eq!(o.reached[0]["file"], "pub/file.txt");

    // 1. What the gate checks (X-Original-URI: $request_uri) is what nginx forwards.
    for target in MCP_TARGETS {
        let h = daemon_headers(sock, "POST", &a_mcp, ECHO);
        let o = attempt(n_mcp, "POST", target, &h, ECHO, &starlette);
        expect_refused(&mut failures, "nginx, proof for /mcp, target", target, &o);
    }
    for (path, targets) in PUB_CRAFTED {
        for target in *targets {
            let h = tk.headers("GET", &url(n_pub, path), b"");
            let o = attempt(n_pub, "GET", target, &h, b"", &files);
            expect_refused(
                &mut failures,
                &format!("nginx, htu {path}, target"),
                target,
                &o,
            );
        }
    }
    // A client cannot pick the URI the gate checks: a proof for /pub/secret.txt (granted,
    // though no such file) and headers that would make the gate check that URL while nginx
    // forwards /secret.txt.
    for (k, v) in [
        ("X-Forwarded-Prefix", "/pub"),
        ("X-Forwarded-Uri", "/pub/secret.txt"),
        ("X-Original-URI", "/pub/secret.txt"),
    ] {
        let mut h = daemon_headers(sock, "GET", &url(n_pub, "/pub/secret.txt"), b"");
        h.push((k.into(), v.into()));
        let o = attempt(n_pub, "GET", b"/secret.txt", &h, b"", &files);
        if !o.reached.is_empty() || o.status == 200 {
            failures.push(format!(
                "{k}: {v} from the client made /secret.txt reachable ({}): {:?}",
                o.status, o.reached
            ));
        }
    }

    // 5. Forward auth cannot read the body, so the proof must name the calls and the digest.
    // A proof that names no calls, sent with a call the contract does not grant:
    let p = ask_proof(sock, "POST", &a_mcp, DELETE_ALL, false).unwrap();
    let o = attempt(
        n_mcp,
        "POST",
        b"/mcp",
        &mcp_headers(&p, DELETE_ALL),
        DELETE_ALL,
        &starlette,
    );
    if !o.reached.is_empty() || o.status != 401 {
        failures.push(format!(
            "a proof naming no calls was admitted ({}), the upstream ran {:?}",
            o.status, o.reached
        ));
    }
    // A proof naming the granted echo, a Content-Digest of the body really sent (not cada.bd):
    let p = ask_proof(sock, "POST", &a_mcp, ECHO, true).unwrap();
    let mut h = mcp_headers(&p, ECHO);
    for (k, v) in &mut h {
        if k == "Content-Digest" {
            *v = mcp::content_digest(DELETE_ALL);
        }
    }
    let o = attempt(n_mcp, "POST", b"/mcp", &h, DELETE_ALL, &starlette);
    if !o.reached.is_empty() || o.status == 200 {
        failures.push(format!(
            "a Content-Digest other than the proof's cada.bd was admitted ({}): {:?}",
            o.status, o.reached
        ));
    }
    // The same proof with its own digest but another body: nginx cannot tell, the server can
    // (the Content-Digest it receives is not its body's).
    let h = daemon_headers(sock, "POST", &a_mcp, ECHO);
    let o = attempt(n_mcp, "POST", b"/mcp", &h, DELETE_ALL, &starlette);
    for r in &o.reached {
        if r["content_digest_ok"] != false {
            failures.push(format!(
                "a swapped body arrived with a matching Content-Digest: {r}"
            ));
        }
    }
    // 10. A look-alike identity header is refused, since forward auth cannot remove it.
    let mut h = daemon_headers(sock, "POST", &a_mcp, ECHO);
    h.push(("CADA-Agent-Extra".into(), "forged".into()));
    let o = attempt(n_mcp, "POST", b"/mcp", &h, ECHO, &starlette);
    if !o.reached.is_empty() {
        failures.push(format!(
            "a client's CADA-Agent-Extra reached the upstream: {:?}",
            o.reached
        ));
    }
    // Method and URL overrides, which the gate cannot remove here, are refused; the
    // documented configuration replaces the client's forwarding headers.
    for (k, v) in [
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
    ] {
        let mut h = daemon_headers(sock, "POST", &a_mcp, ECHO);
        h.push((k.into(), v.into()));
        let o = attempt(n_mcp, "POST", b"/mcp", &h, ECHO, &starlette);
        if !o.reached.is_empty() {
            failures.push(format!("{k}: {v} reached the upstream: {:?}", o.reached));
        }
    }
    let mut h = daemon_headers(sock, "POST", &a_mcp, ECHO);
    // (nginx drops `_` names itself, and the gate refuses overrides; the forwarding ones:)
    for (k, v) in CLIENT_REDIRECTS {
        if k.starts_with("Forwarded") || k.starts_with("X-Forwarded-") || *k == "X-Real-IP" {
            h.push(((*k).into(), (*v).into()));
        }
    }
    let o = attempt(n_mcp, "POST", b"/mcp", &h, ECHO, &starlette);
    assert_eq!(
        o.status, 200,
        "forwarding headers through nginx: {:?}",
        o.code
    );
    let received = redirects_received(&o.reached[0]);
    if !received.is_empty() {
        failures.push(format!(
            "the documented nginx configuration passed the client's forwarding headers: \
             {received:?}"
        ));
    }
    // Content-Digest with a second algorithm: the sha-256 member is the proof's body, a
    // sha-512 member (which a server may prefer, RFC 9530) the body really sent.
    let p = ask_proof(sock, "POST", &a_mcp, ECHO, true).unwrap();
    let mut h = mcp_headers(&p, ECHO);
    for (k, v) in &mut h {
        if k == "Content-Digest" {
            *v = format!("sha-512=:{}:, {v}", sha512_b64(DELETE_ALL));
        }
    }
    let o = attempt(n_mcp, "POST", b"/mcp", &h, DELETE_ALL, &starlette);
    if !o.reached.is_empty() {
        failures.push(format!(
            "a Content-Digest naming another body under sha-512 was admitted ({}): {:?}",
            o.status, o.reached
        ));
    }

    // Nothing outside the grant was ever served, and no ungranted tool ran with a body that
    // matched its digest.
    for r in starlette.all() {
        if r["served"] != "mcp" || r["raw_path"] != "/mcp" {
            failures.push(format!("starlette served outside the grant: {r}"));
        }
        if r["tool"] == "delete_all" && r["content_digest_ok"] == true {
            failures.push(format!(
                "an ungranted tool reached the server undetectably: {r}"
            ));
        }
    }
    for r in files.all() {
        if r["file"] != "pub/file.txt" {
            failures.push(format!("http.server served outside the grant: {r}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
