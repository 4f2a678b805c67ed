//! The harness both adversarial reviews of sealed secrets (issue 22) run against the real
//! binaries on `sim`: a recording HTTPS upstream with a throwaway CA, the enclave + daemon
//! stack with the parent's relay, sealing/installing/granting through the real CLIs, the
//! agent's endpoint, raw HTTP, and the search for the secret in every spelling.
//! Used by `secrets_attack` and `secrets_attack2`.
pub(super) use std::io::{BufRead, BufReader, Read, Write};
pub(super) use std::path::{Path, PathBuf};
pub(super) use std::sync::{Arc, Mutex};
pub(super) use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(super) use base64::Engine as _;
pub(super) use cada_e2e::{
    free_port, http, keygen, owner_to, parent, spawn_ready, start_enclave_on, start_parent, Proc,
    TempDir,
};

pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(super) fn nonce() -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{n:x}{:x}", std::process::id())
}

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub(super) struct Req {
    pub(super) method: String,
    pub(super) target: String,
    pub(super) head: String,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

impl Req {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub(super) fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

pub(super) type Seen = Arc<Mutex<Vec<Req>>>;
pub(super) type Handler = Arc<dyn Fn(&Req) -> Vec<u8> + Send + Sync>;

pub(super) fn respond(status: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// An HTTPS/1.1 keep-alive upstream on loopback presenting `server`'s certificate; each
/// request is recorded and answered by `h` (raw answer bytes; an empty answer closes).
pub(super) fn upstream(server: Arc<rustls::ServerConfig>, h: Handler) -> (u16, Seen) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    cada_e2e::allow_egress(l.local_addr().unwrap().port());
    let port = l.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let (cfg, seen, h) = (server.clone(), s2.clone(), h.clone());
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
                    let mut lines = head.lines();
                    let first = lines.next().unwrap_or("").to_owned();
                    let mut parts = first.split(' ');
                    let method = parts.next().unwrap_or("").to_owned();
                    let target = parts.next().unwrap_or("").to_owned();
                    let headers: Vec<(String, String)> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                        .collect();
                    let len = headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    if tls.read_exact(&mut body).is_err() {
                        return;
                    }
                    let r = Req {
                        method,
                        target,
                        head,
                        headers,
                        body,
                    };
                    seen.lock().unwrap().push(r.clone());
                    let out = h(&r);
                    if out.is_empty() {
                        return;
                    }
                    let w = tls.get_mut();
                    // A NUL-delimited "PAUSE" splits the answer into two writes 2 s apart.
                    let marker = b"\0PAUSE\0";
                    let parts: Vec<&[u8]> =
                        match out.windows(marker.len()).position(|x| x == marker) {
                            Some(i) => vec![&out[..i], &out[i + marker.len()..]],
                            None => vec![&out[..]],
                        };
                    let n = parts.len();
                    for (i, part) in parts.into_iter().enumerate() {
                        if w.write_all(part).and_then(|()| w.flush()).is_err() {
                            return;
                        }
                        if i + 1 < n {
                            std::thread::sleep(Duration::from_secs(2));
                        }
                    }
                    if out.windows(marker.len()).any(|x| x == marker) {
                        w.conn.send_close_notify();
                        let _ = w.flush();
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

pub(super) fn pem_b64(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

/// Every spelling of `secret` an agent might decode (raw, base64, base64url, hex, percent,
/// JSON with `/` escaped, lowercase percent).
pub(super) fn spellings(secret: &str) -> Vec<String> {
    let b = secret.as_bytes();
    let pct = |lower: bool| -> String {
        b.iter()
            .map(|c| {
                if c.is_ascii_alphanumeric() || b"-._~".contains(c) {
                    char::from(*c).to_string()
                } else if lower {
                    format!("%{c:02x}")
                } else {
                    format!("%{c:02X}")
                }
            })
            .collect()
    };
    let mut v = vec![
        secret.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(b),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
        hex::encode(b),
        hex::encode_upper(b),
        pct(false),
        pct(true),
        secret.replace('/', "\\/"),
    ];
    v.sort();
    v.dedup();
    v
}

/// What the agent can trivially undo: JSON string escapes of `/`, `+` as written by
/// PHP/Go encoders, before searching.
pub(super) fn unescape(text: &str) -> String {
    text.replace("\\/", "/")
        .replace("\\u002b", "+")
        .replace("\\u002B", "+")
        .replace("\\u0026", "&")
}

pub(super) fn leaks(bytes: &[u8], secret: &str) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let plain = unescape(&text);
    spellings(secret)
        .into_iter()
        .find(|s| text.contains(s.as_str()) || plain.contains(s.as_str()))
}

pub(super) fn assert_absent(what: &str, bytes: &[u8], secret: &str) {
    if let Some(s) = leaks(bytes, secret) {
        panic!("{what} holds the secret (as {s:?})");
    }
}

/// The enclave (sim, `--dev-secrets` unless `dev` is false, egress relay on a unix socket
/// served by the parent unless `relay_by_parent` is false), the daemon, an owner lock.
pub(super) struct Stack {
    pub(super) _enclave: Proc,
    pub(super) _parent: Proc,
    pub(super) d: PathBuf,
    pub(super) sock: PathBuf,
    pub(super) key: String,
}

pub(super) fn stack(d: &Path, dev: bool, relay_by_parent: bool) -> Stack {
    let relay = d.join("relay.sock");
    let relay_arg = format!("unix:{}", relay.display());
    let mut args = vec!["--egress", relay_arg.as_str()];
    if dev {
        args.push("--dev-secrets");
    }
    let enclave = start_enclave_on(d, "sim", &args);
    let parent_proc = if relay_by_parent {
        start_parent(d, &["--egress-listen", &relay_arg])
    } else {
        start_parent(d, &[])
    };
    let sock = d.join("agent.sock");
    let (_, key) = keygen(d, "owner");
    let st = Stack {
        _enclave: enclave,
        _parent: parent_proc,
        d: d.to_owned(),
        sock,
        key,
    };
    let did = st.identity()["did"].as_str().unwrap().to_owned();
    owner_to(
        d,
        "lock.jwt",
        &["lock", "--key", &st.key, "--enclave", &did],
    );
    let (c, _, err) = parent(
        &st.sock,
        &["owner", "lock", d.join("lock.jwt").to_str().unwrap()],
    );
    assert_eq!(c, 0, "{err}");
    st
}

impl Stack {
    pub(super) fn identity(&self) -> serde_json::Value {
        let (_, id) = http(
            &self.sock,
            "GET",
            "/v1/identity",
            None,
            Duration::from_secs(5),
        )
        .unwrap();
        serde_json::from_str(&id).unwrap()
    }

    /// Seals `value` under `usage` (JSON of a SecretUsage) at `iat`; the bundle's path.
    pub(super) fn seal(
        &self,
        file: &str,
        usage: &serde_json::Value,
        value: &[u8],
        iat: u64,
    ) -> PathBuf {
        let id = self.identity();
        let target = cada_secrets::SealTarget {
            hpke: cada_secrets::HpkePublicKey::from_b64(id["hpke"]["key"].as_str().unwrap())
                .unwrap(),
            jkt: id["jkt"].as_str().unwrap().to_owned(),
        };
        let owner =
            cada_contract::OwnerKey::from_key_file(&std::fs::read_to_string(&self.key).unwrap())
                .unwrap();
        let usage: cada_secrets::SecretUsage = serde_json::from_value(usage.clone()).unwrap();
        let b = cada_secrets::seal_bundle(&owner, &target, &usage, value, iat).unwrap();
        let f = self.d.join(file);
        std::fs::write(&f, &b.bytes).unwrap();
        f
    }

    pub(super) fn install_bundle(&self, f: &Path) -> (i32, String) {
        let (c, out, err) = parent(&self.sock, &["secret", "install", f.to_str().unwrap()]);
        (c, format!("{out}{err}"))
    }

    pub(super) fn seal_install(&self, usage: &serde_json::Value, value: &[u8]) {
        let name = usage["name"].as_str().unwrap().to_owned();
        let f = self.seal(&format!("{name}.sealed"), usage, value, now());
        let (c, out) = self.install_bundle(&f);
        assert_eq!(c, 0, "{out}");
    }

    /// Grants `secret=prefix` for `methods`, valid 1 h, and installs it.
    pub(super) fn grant(&self, file: &str, grants: &[(&str, String)], methods: &[&str]) {
        let did = self.identity()["did"].as_str().unwrap().to_owned();
        let mut all = vec![
            "grant".to_owned(),
            "--key".into(),
            self.key.clone(),
            "--subject".into(),
            did,
        ];
        for (n, p) in grants {
            all.push("--secret".into());
            all.push(format!("{n}={p}"));
        }
        for m in methods {
            all.push("--method".into());
            all.push((*m).to_owned());
        }
        all.extend(
            ["--valid-for", "1h", "--no-revocation"]
                .iter()
                .map(|s| (*s).to_owned()),
        );
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        owner_to(&self.d, file, &refs);
        let (c, out, err) = parent(
            &self.sock,
            &["contract", "install", self.d.join(file).to_str().unwrap()],
        );
        assert_eq!(c, 0, "{out}{err}");
    }

    /// `POST /v1/secrets/call` on the daemon (what a malicious host or agent with the
    /// socket can do directly).
    pub(super) fn call(
        &self,
        secret: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        let body = serde_json::json!({
            "secret": secret, "method": method, "path_and_query": path,
            "headers": headers,
            "body": base64::engine::general_purpose::STANDARD.encode(body),
        });
        http(
            &self.sock,
            "POST",
            "/v1/secrets/call",
            Some(&body.to_string()),
            Duration::from_secs(30),
        )
        .unwrap()
    }

    pub(super) fn proxy(&self, secrets: &[&str]) -> (Proc, u16) {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let audit = self.d.join("proxy-audit");
        let mut args = vec![
            "proxy",
            "--socket",
            self.sock.to_str().unwrap(),
            "--listen",
            &listen,
            "--audit-dir",
            audit.to_str().unwrap(),
        ];
        for s in secrets {
            args.extend(["--secret", s]);
        }
        (
            spawn_ready("cada-parent", &args, &self.d.join("proxy.log")),
            port,
        )
    }

    /// Every log the host and agent can read.
    pub(super) fn assert_logs_clean(&self, secret: &str) {
        for log in ["parent.log", "enclave.log", "proxy.log"] {
            if let Ok(b) = std::fs::read(self.d.join(log)) {
                assert_absent(log, &b, secret);
            }
        }
        if let Ok(rd) = std::fs::read_dir(self.d.join("proxy-audit")) {
            for e in rd.flatten() {
                assert_absent("the audit log", &std::fs::read(e.path()).unwrap(), secret);
            }
        }
    }
}

pub(super) fn static_usage(name: &str, port: u16, ca: &str, format: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "upstream": format!("https://localhost:{port}"),
        "path_prefix": "/repos/acme/",
        "header": "authorization",
        "format": format,
        "cas": [ca],
        "expires_at": now() + 3600,
    })
}

/// One raw HTTP/1.1 exchange with the proxy; the whole answer.
pub(super) fn raw(port: u16, req: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn raw_bytes(port: u16, req: &[u8]) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

pub(super) fn get(port: u16, path: &str, extra: &str) -> String {
    raw(
        port,
        format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
}

pub(super) fn status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

pub(super) fn body_of(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// What most findings start from: a TLS upstream on `localhost` answering with a handler, and
/// a stack (dev sim, relay by the parent) holding one sealed static secret for it, granted
/// under `/repos/acme/`.
pub(super) struct Sealed {
    pub(super) dir: TempDir,
    pub(super) st: Stack,
    pub(super) up: u16,
    pub(super) seen: Seen,
    pub(super) ca: String,
    pub(super) tls: cada_net::test_tls::TestCa,
}

/// Builds [`Sealed`]: the upstream answers with `h`; the secret `name` holds `value`, is
/// sent as `Authorization: <format>` and granted for `methods` under `/repos/acme/`.
pub(super) fn sealed(
    tag: &str,
    h: Handler,
    name: &str,
    format: &str,
    value: &[u8],
    methods: &[&str],
) -> Sealed {
    let dir = TempDir::new(tag);
    let tls = cada_net::test_tls::issue(&["localhost"]);
    let ca = pem_b64(&tls.ca_pem);
    let (up, seen) = upstream(tls.server.clone(), h);
    let st = stack(&dir.0, true, true);
    st.seal_install(&static_usage(name, up, &ca, format), value);
    st.grant(
        "c.jwt",
        &[(name, format!("https://localhost:{up}/repos/acme/"))],
        methods,
    );
    Sealed {
        dir,
        st,
        up,
        seen,
        ca,
        tls,
    }
}
