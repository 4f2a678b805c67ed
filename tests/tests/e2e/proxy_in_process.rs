//! `cada-parent proxy --enclave`: the proxy signs in process (no daemon and no socket
//! between it and the enclave) and serves the daemon's API at its own socket. The official
//! SDK's calls go through it and a gate as through proxy + daemon, a tool outside the
//! contract is refused with the same rule, and the flags that need a separate daemon are
//! refused at the command line.
use std::path::Path;
use std::process::Command;

use cada_e2e::mcp_interop::*;
use cada_e2e::*;

#[test]
fn a_proxy_signing_in_process_serves_the_sdk_and_the_daemon_api() {
    let py = python(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let dir = TempDir::new("proxy-in-process");
    let d = &dir.0;
    let (g, p, srv) = (free_port(), free_port(), free_port());
    let listen = format!("127.0.0.1:{p}");
    let route = format!("http://127.0.0.1:{g}/mcp");
    // No `cada-parent serve`: the lock and the contract go through the proxy's own socket.
    let agent =
        LockedAgent::start_proxy_in_process(d, &["--listen", &listen, "--upstream", &route]);
    let aud = format!("http://127.0.0.1:{g}/");
    agent.grant(
        d,
        &[
            "--method",
            "POST",
            "--method",
            "GET",
            "--method",
            "DELETE",
            "--tool",
            "echo",
            "--tool",
            "whoami",
            "--audience",
            &aud,
        ],
    );
    let _server = start_server_with(&py, d, "server", srv, true, &["--cada-middleware"]);
    let policy = d.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "{}[token]\nrequire_body_digest = true\n",
            agent.policy_toml(d, &[&aud])
        ),
    )
    .unwrap();
    let _gate = start_gate(
        d,
        "gate",
        g,
        &format!("http://127.0.0.1:{srv}"),
        &policy,
        &[],
    );
    for mode in ["auto", "legacy"] {
        let r = client_with(
            &py,
            &format!("http://127.0.0.1:{p}/mcp"),
            &["--mode", mode],
            &[
                r#"echo:{"text":"in process"}"#,
                "whoami:{}",
                "delete_all:{}",
            ],
        );
        assert_eq!(r["initialize"]["ok"], true, "{mode}: {r}");
        assert_eq!(r["calls"][0]["result"], "in process", "{mode}: {r}");
        // The gate verified the enclave's key: the server sees the agent.
        assert_eq!(r["calls"][1]["result"], agent.did.as_str(), "{mode}: {r}");
        assert_eq!(r["calls"][2]["ok"], false, "{mode}: {r}");
        let err = r["calls"][2]["error"].as_str().unwrap_or_default();
        assert!(err.contains("contract.not_permitted.tool"), "{mode}: {err}");
    }
    // The daemon API at the socket is the proxy's: it lists the owner and the contract.
    let (code, out, err) = parent(&agent.sock, &["contract", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&agent.owner_did), "{out}");
    let (code, out, err) = parent(
        &agent.sock,
        &["sign", "--method", "GET", "--url", &format!("{aud}mcp")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("eyJ"), "a proof: {out}");
    // `secret install` and `open` are served as by `serve` (here: a body that is no
    // envelope, refused by the handler, not a missing route).
    let (status, body) = http(
        &agent.sock,
        "POST",
        "/v1/open",
        Some("{}"),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    assert!(status == 400 || status == 422, "{status}: {body}");
}

#[test]
fn flags_that_need_a_separate_daemon_are_refused_with_enclave() {
    for (args, names) in [
        (
            vec!["proxy", "--enclave", "tcp:127.0.0.1:1", "--secret", "gh"],
            "--secret",
        ),
        (
            vec![
                "proxy",
                "--sts",
                "http://127.0.0.1:1",
                "--upstream",
                "http://127.0.0.1:1/mcp",
            ],
            "--enclave",
        ),
    ] {
        let out = Command::new(bin("cada-parent"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(names), "{args:?}: {err}");
    }
}

/// `proxy --enclave … --socket S --listen 127.0.0.1:0` plus `extra`: the exit status and stderr
/// when it exits within 10 s, else (None, …) after killing it (it took the socket).
fn proxy_exit(endpoint: &str, socket: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(bin("cada-parent"))
        .args([
            "proxy",
            "--enclave",
            endpoint,
            "--socket",
            socket.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "http://127.0.0.1:1/mcp",
        ])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    (code, err)
}

/// The daemon API socket of `proxy --enclave` never takes the place of a live one (a
/// `serve` daemon's or another proxy's: that process would be cut off and its clients'
/// `sign`, `owner lock` and `contract install` would reach this proxy's enclave instead) nor
/// of a file that is no socket (it would be destroyed): each is refused naming the rule,
/// and what was there stays. A stale socket (its process ended) is replaced.
#[test]
fn a_proxy_signing_in_process_replaces_no_live_socket_and_no_file() {
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new("proxy-in-process-socket");
    let d = &dir.0;
    let _enclave = start_enclave(d, &[]);
    let endpoint = format!("unix:{}:5005", d.join("enclave.sock").display());
    let sock = d.join("agent.sock");
    let mut daemon = start_parent(d, &[]);
    let ino = std::fs::metadata(&sock).unwrap().ino();
    let (code, err) = proxy_exit(&endpoint, &sock, &[]);
    assert_eq!(code, Some(1), "a live daemon's socket: {err}");
    assert!(err.contains("socket.in_use"), "{err}");
    assert_eq!(
        std::fs::metadata(&sock).unwrap().ino(),
        ino,
        "still the daemon's"
    );
    let (status, _) = http(
        &sock,
        "GET",
        "/v1/identity",
        None,
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(status, 200);

    let notes = d.join("notes.txt");
    std::fs::write(&notes, "keep me").unwrap();
    let (code, err) = proxy_exit(&endpoint, &notes, &[]);
    assert_eq!(code, Some(1), "a regular file: {err}");
    assert!(err.contains("socket.not_a_socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "keep me");
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no temporary socket left: {leftovers:?}"
    );

    // The daemon ended (its socket left behind): a proxy takes the path, and a second
    // proxy on the same --socket is refused while the first runs.
    daemon.kill();
    let args = [
        "proxy",
        "--enclave",
        &endpoint,
        "--socket",
        sock.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "http://127.0.0.1:1/mcp",
    ];
    let _first = spawn_ready("cada-parent", &args, &d.join("proxy.log"));
    let (code, out, err) = parent(&sock, &["contract", "list"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, err) = proxy_exit(&endpoint, &sock, &[]);
    assert_eq!(code, Some(1), "a live proxy's socket: {err}");
    assert!(err.contains("socket.in_use"), "{err}");
    let (code, out, err) = parent(&sock, &["contract", "list"]);
    assert_eq!(code, 0, "the first proxy still answers: {out}{err}");
}

/// `--sts URL` names the STS's issuer: its token endpoint is URL/token, so a URL with a
/// query or fragment (which would swallow the "/token") is refused at the start, before the
/// proxy listens, not on the first call that needs a token.
#[test]
fn an_sts_url_with_a_query_or_fragment_is_refused_at_the_start() {
    let dir = TempDir::new("proxy-in-process-sts");
    let sock = dir.0.join("agent.sock");
    for sts in ["https://sts.example/a?x=1", "https://sts.example/#f"] {
        let (code, err) = proxy_exit("tcp:127.0.0.1:1", &sock, &["--sts", sts]);
        assert_eq!(code, Some(1), "{sts}: {err}");
        assert!(
            err.contains("--sts") && err.contains("query or fragment"),
            "{err}"
        );
    }
}
