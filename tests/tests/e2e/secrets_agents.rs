//! Agents without code changes (issue 22 part 5): `cada-parent run --env-file .env.cada --
//! python3 agent.py` on `sim`, with the real binaries — the enclave with `--egress`, two
//! secrets sealed by the owner to its attested key and installed through the host, the
//! daemon relaying its TLS, the endpoint `run` starts itself (`proxy --secret github
//! --secret stripe`) — against a real HTTPS upstream on loopback with a throwaway CA that
//! records what it receives.
//!
//! The agent (tests/interop/agents/agent.py) is ordinary Python: it reads `GITHUB_API_URL`,
//! `GITHUB_TOKEN`, `STRIPE_API_BASE`, `STRIPE_API_KEY` from its environment and calls with
//! urllib, the token in `Authorization` as the vendors' SDKs send it.
//!
//! What the tests prove:
//! * the upstream receives each secret in its sealed header format, for its own prefix, and
//!   never a placeholder;
//! * the agent's environment holds base URLs at the endpoint and `cada:NAME` placeholders;
//!   neither it nor anything `run`, the agent, the endpoint or the daemon printed holds a
//!   secret (raw, base64, base64url, hex, percent-encoded);
//! * GitHub's placeholder sent to Stripe's path is refused `secret.placeholder_elsewhere`
//!   (in the Authorization header, inside Basic credentials, in the body) and reaches no
//!   upstream;
//! * `run` returns the agent's exit status, forwards SIGTERM (the agent's handler runs and
//!   its status comes back), works with a running endpoint (`--proxy`), and refuses an env
//!   file holding a real-looking token (`run.secret_in_env_file`) before starting anything.
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use cada_e2e::{
    bin, free_port, http, keygen, owner_to, parent, spawn_ready, start_enclave_on, start_parent,
    Proc, TempDir,
};

type Seen = Arc<Mutex<Vec<String>>>;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A fresh secret in a real token format (so that the env-file check would catch it).
fn secret(tag: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}Agents{n:x}Q{:x}", std::process::id())
}

fn spellings(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let pct: String = b
        .iter()
        .map(|c| {
            if c.is_ascii_alphanumeric() || b"-._~".contains(c) {
                char::from(*c).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect();
    vec![
        s.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(b),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
        hex::encode(b),
        hex::encode_upper(b),
        pct,
    ]
}

fn assert_absent(what: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        for form in spellings(s) {
            assert!(!text.contains(&form), "{what} holds a secret (as {form:?})");
        }
    }
}

/// An HTTPS/1.1 upstream on loopback that records each request (head and body) and answers
/// 200 JSON with the path.
fn upstream(server: Arc<rustls::ServerConfig>) -> (u16, Seen) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    cada_e2e::allow_egress(l.local_addr().unwrap().port());
    let port = l.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let (cfg, seen) = (server.clone(), s2.clone());
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
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .and_then(|v| v.trim().parse::<usize>().ok())
                        })
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    if tls.read_exact(&mut body).is_err() {
                        return;
                    }
                    seen.lock()
                        .unwrap()
                        .push(format!("{head}{}", String::from_utf8_lossy(&body)));
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let answer = serde_json::json!({"ok": true, "path": path}).to_string();
                    let out = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                        answer.len()
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
    (port, seen)
}

/// A secret to seal: name, path prefix, value.
struct ToSeal<'a>(&'a str, &'a str, &'a str);

/// The enclave (egress relay; `--dev-secrets`, since sim keys live in host memory), the
/// daemon, the owner's lock, the secrets sealed by the owner to the enclave's attested HPKE
/// key (`cada_secrets::seal_bundle`, the library under `cada-owner seal`) and installed
/// through the host (`cada-parent secret install`), and a contract granting github under
/// /repos/acme/ and stripe under /v1/ (GET, POST).
struct Stack {
    _enclave: Proc,
    _parent: Proc,
    sock: std::path::PathBuf,
}

fn stack(d: &Path, up_port: u16, ca_pem: &str, secrets: &[ToSeal<'_>]) -> Stack {
    let relay = format!("unix:{}", d.join("relay.sock").display());
    let enclave = start_enclave_on(d, "sim", &["--egress", &relay, "--dev-secrets"]);
    let parent_proc = start_parent(d, &["--egress-listen", &relay]);
    let sock = d.join("agent.sock");
    let (_, id) = http(&sock, "GET", "/v1/identity", None, Duration::from_secs(5)).unwrap();
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    let did = id["did"].as_str().unwrap().to_owned();
    let (_, key) = keygen(d, "owner");
    owner_to(d, "lock.jwt", &["lock", "--key", &key, "--enclave", &did]);
    let (c, _, err) = parent(
        &sock,
        &["owner", "lock", d.join("lock.jwt").to_str().unwrap()],
    );
    assert_eq!(c, 0, "{err}");
    let target = cada_secrets::SealTarget {
        hpke: cada_secrets::HpkePublicKey::from_b64(id["hpke"]["key"].as_str().unwrap()).unwrap(),
        jkt: id["jkt"].as_str().unwrap().to_owned(),
    };
    let owner =
        cada_contract::OwnerKey::from_key_file(&std::fs::read_to_string(&key).unwrap()).unwrap();
    let ca: String = ca_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    for ToSeal(name, prefix, value) in secrets {
        let usage: cada_secrets::SecretUsage = serde_json::from_value(serde_json::json!({
            "name": name,
            "upstream": format!("https://localhost:{up_port}"),
            "path_prefix": prefix,
            "header": "authorization",
            "format": "Bearer {}",
            "cas": [ca],
            "expires_at": unix_now() + 3600,
        }))
        .unwrap();
        let b = cada_secrets::seal_bundle(&owner, &target, &usage, value.as_bytes(), unix_now())
            .unwrap();
        let f = d.join(format!("{name}.sealed"));
        std::fs::write(&f, &b.bytes).unwrap();
        let (c, out, err) = parent(&sock, &["secret", "install", f.to_str().unwrap()]);
        assert_eq!(c, 0, "{out}{err}");
    }
    owner_to(
        d,
        "grant.jwt",
        &[
            "grant",
            "--key",
            &key,
            "--subject",
            &did,
            "--secret",
            &format!("github=https://localhost:{up_port}/repos/acme/"),
            "--secret",
            &format!("stripe=https://localhost:{up_port}/v1/"),
            "--method",
            "GET",
            "--method",
            "POST",
            "--valid-for",
            "1h",
            "--no-revocation",
        ],
    );
    let (c, out, err) = parent(
        &sock,
        &["contract", "install", d.join("grant.jwt").to_str().unwrap()],
    );
    assert_eq!(c, 0, "{out}{err}");
    Stack {
        _enclave: enclave,
        _parent: parent_proc,
        sock,
    }
}

fn agent_script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("interop/agents/agent.py")
        .display()
        .to_string()
}

const ENV_CADA: &str = "\
# The agent's environment: a template, no secret in it.
GITHUB_API_URL={{cada.url:github}}
GITHUB_TOKEN={{cada.placeholder:github}}
STRIPE_API_BASE={{cada.url:stripe}}
STRIPE_API_KEY=cada:stripe
AGENT_EXIT=7
";

/// `cada-parent run` with `args` before `--` and the agent after it; (status, stdout,
/// stderr).
fn run(args: &[&str], agent: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("cada-parent"))
        .arg("run")
        .args(args)
        .arg("--")
        .args(agent)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The problem code at the end of a problem JSON's `type`.
fn problem_code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["type"]
        .as_str()
        .unwrap_or("")
        .rsplit(':')
        .next()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn run_gives_the_agent_placeholders_and_the_upstream_the_credential() {
    let dir = TempDir::new("secrets-agents");
    let d = &dir.0;
    let (gh_secret, st_secret) = (secret("ghp_"), secret("sk_live_"));
    let tls = cada_net::test_tls::issue(&["localhost"]);
    let (up_port, seen) = upstream(tls.server.clone());
    let st = stack(
        d,
        up_port,
        &tls.ca_pem,
        &[
            ToSeal("github", "/repos/acme/", &gh_secret),
            ToSeal("stripe", "/v1/", &st_secret),
        ],
    );
    let env_file = d.join(".env.cada");
    std::fs::write(&env_file, ENV_CADA).unwrap();
    let audit = d.join("audit");
    let (code, stdout, stderr) = run(
        &[
            "--env-file",
            env_file.to_str().unwrap(),
            "--socket",
            st.sock.to_str().unwrap(),
            "--audit-dir",
            audit.to_str().unwrap(),
        ],
        &["python3", &agent_script(), "calls"],
    );
    assert_eq!(code, 7, "the agent's own exit status\n{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("agent output is not JSON ({e}): {stdout}\n{stderr}"));

    // The agent's environment: base URLs at the endpoint run started, placeholders.
    let env = &report["env"];
    let base = env["CADA_PROXY"].as_str().unwrap();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    assert_eq!(env["GITHUB_API_URL"], format!("{base}/github"));
    assert_eq!(env["GITHUB_TOKEN"], "cada:github");
    assert_eq!(env["STRIPE_API_BASE"], format!("{base}/stripe"));
    assert_eq!(env["STRIPE_API_KEY"], "cada:stripe");
    // The caller's environment passes through.
    assert!(env["PATH"].as_str().is_some_and(|p| !p.is_empty()));

    // Each call reached its upstream with its own credential, the placeholder removed.
    assert_eq!(report["github"]["status"], 200, "{report}");
    assert_eq!(report["stripe"]["status"], 200, "{report}");
    let seen = seen.lock().unwrap().clone();
    let issues = seen
        .iter()
        .find(|r| r.starts_with("GET /repos/acme/app/issues?state=open "))
        .unwrap_or_else(|| panic!("github call not received: {seen:?}"));
    assert!(
        issues.to_ascii_lowercase().contains(&format!(
            "authorization: bearer {}",
            gh_secret.to_ascii_lowercase()
        )),
        "{issues}"
    );
    let charge = seen
        .iter()
        .find(|r| r.starts_with("POST /v1/charges ") && r.ends_with("{\"amount\":100}"))
        .unwrap_or_else(|| panic!("stripe call not received: {seen:?}"));
    assert!(charge.contains(&format!("Bearer {st_secret}")), "{charge}");
    assert!(
        !charge.contains(&gh_secret),
        "each secret only to its own grant"
    );
    for r in &seen {
        assert!(
            !r.contains("cada:"),
            "a placeholder reached the upstream: {r}"
        );
    }

    // GitHub's placeholder at Stripe's path: refused, whichever way it is carried.
    for case in ["elsewhere_header", "elsewhere_basic", "elsewhere_body"] {
        let c = &report[case];
        assert_eq!(c["status"], 403, "{case}: {c}");
        assert_eq!(
            problem_code(c["body"].as_str().unwrap()),
            "secret.placeholder_elsewhere",
            "{case}: {c}"
        );
    }
    assert_eq!(
        seen.len(),
        2,
        "the refused calls reached no upstream: {seen:?}"
    );

    // Nothing the agent or the operator sees holds a secret.
    let secrets = [gh_secret.as_str(), st_secret.as_str()];
    assert_absent("the agent's output and environment", &stdout, &secrets);
    assert_absent("run's and the endpoint's stderr", &stderr, &secrets);
    for log in ["parent.log", "enclave.log"] {
        let text = std::fs::read_to_string(d.join(log)).unwrap_or_default();
        assert_absent(log, &text, &secrets);
    }
    let records = cada_e2e::audit_records(&audit);
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "secret_call" && r["reason"] == "secret.placeholder_elsewhere"),
        "the endpoint run started audits each call: {records:?}"
    );
    assert_absent(
        "the audit log",
        &serde_json::to_string(&records).unwrap(),
        &secrets,
    );
}

#[test]
fn run_forwards_signals_uses_a_running_endpoint_and_refuses_secrets_in_the_env_file() {
    let dir = TempDir::new("secrets-agents-run");
    let d = &dir.0;
    let gh_secret = secret("ghp_");
    let tls = cada_net::test_tls::issue(&["localhost"]);
    let (up_port, _seen) = upstream(tls.server.clone());
    let st = stack(
        d,
        up_port,
        &tls.ca_pem,
        &[ToSeal("github", "/repos/acme/", &gh_secret)],
    );
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _proxy = spawn_ready(
        "cada-parent",
        &[
            "proxy",
            "--socket",
            st.sock.to_str().unwrap(),
            "--listen",
            &listen,
            "--secret",
            "github",
        ],
        &d.join("proxy.log"),
    );
    let env_file = d.join(".env.cada");
    std::fs::write(&env_file, "GITHUB_TOKEN={{cada.placeholder:github}}\n").unwrap();

    // SIGTERM to run reaches the agent, whose own status comes back.
    let mut child = Command::new(bin("cada-parent"))
        .args(["run", "--env-file", env_file.to_str().unwrap(), "--proxy"])
        .arg(format!("http://{listen}"))
        .args(["--", "python3", &agent_script(), "wait"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "waiting");
    let k = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(k.success());
    let status = child.wait().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest.trim(), "got SIGTERM", "the agent's handler ran");
    assert_eq!(status.code(), Some(42), "the agent's status: {status:?}");

    // --check prints the agent's variables with the running endpoint.
    let (code, stdout, stderr) = {
        let o = Command::new(bin("cada-parent"))
            .args([
                "run",
                "--check",
                "--env-file",
                env_file.to_str().unwrap(),
                "--proxy",
            ])
            .arg(format!("http://{listen}"))
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("GITHUB_TOKEN=cada:github\n"), "{stdout}");
    assert!(
        stdout.contains(&format!("CADA_PROXY=http://{listen}\n")),
        "{stdout}"
    );

    // An env file holding a real-looking token: refused before the agent starts, the value
    // not repeated.
    let leaky = d.join("leaky.env");
    std::fs::write(
        &leaky,
        format!("GITHUB_API_URL={{{{cada.url:github}}}}\nGITHUB_TOKEN={gh_secret}\n"),
    )
    .unwrap();
    let marker = d.join("agent-started");
    let (code, stdout, stderr) = run(
        &[
            "--env-file",
            leaky.to_str().unwrap(),
            "--socket",
            st.sock.to_str().unwrap(),
        ],
        &[
            "python3",
            &agent_script(),
            "touch",
            marker.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("run.secret_in_env_file"), "{stderr}");
    assert!(
        stderr.contains("line 2") && stderr.contains("GITHUB_TOKEN"),
        "{stderr}"
    );
    assert_absent("the refusal", &stderr, &[gh_secret.as_str()]);
    assert!(!marker.exists(), "the agent was not started");

    // A --proxy that is not a loopback http origin is refused too.
    let (code, _, stderr) = run(
        &[
            "--env-file",
            env_file.to_str().unwrap(),
            "--proxy",
            "https://example.com",
        ],
        &[
            "python3",
            &agent_script(),
            "touch",
            marker.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("run.proxy"), "{stderr}");
    assert!(!marker.exists());
}
