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
