//! The MCP path with the official TypeScript SDK (npm `@modelcontextprotocol/sdk`, installed
//! here, pinned) as the client: through `cada-parent proxy` → `cada-gate` → a Python SDK
//! server (server-sent events and JSON answers), and straight to the gate with
//! `clients/typescript`'s `cadaFetch` in the SDK's `StreamableHTTPClientTransport`. Granted
//! tools answer; a tool outside the owner's contract is refused, naming the rule.
use std::path::{Path, PathBuf};
use std::process::Command;

use cada_e2e::mcp_interop::*;
use cada_e2e::*;

/// The pinned SDK.
const SDK: &str = "@modelcontextprotocol/sdk@1.32.2";

/// Installs the SDK once per target dir, with the client script beside it.
fn node_client() -> PathBuf {
    let dir = npm_package(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "node-mcp-sdk-1.32.2",
        SDK,
    );
    // The script resolves the SDK from its own directory.
    let script = dir.join("client.mjs");
    std::fs::copy(interop().join("client.mjs"), &script).unwrap();
    script
}

fn node(script: &Path, url: &str, opts: &[&str], calls: &[&str]) -> serde_json::Value {
    let mut cmd = Command::new("node");
    cmd.arg(script).arg(url).arg("--list").args(opts);
    for c in calls {
        cmd.args(["--call", c]);
    }
    let fetch = Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/typescript/index.js");
    let out = cmd
        .env("CADA_FETCH", fetch.canonicalize().unwrap())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "node client output is not JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn typescript_sdk_client_through_proxy_and_with_cada_fetch() {
    let script = node_client();
    let py = python(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let dir = TempDir::new("mcp-node");
    let d = &dir.0;
    let agent = LockedAgent::start(d, &[]);
    let (sock, pcr0, owner_did) = (&agent.sock, &agent.pcr0, &agent.owner_did);
    let (g_sse, g_json) = (free_port(), free_port());
    let (a_sse, a_json) = (
        format!("http://127.0.0.1:{g_sse}/"),
        format!("http://127.0.0.1:{g_json}/"),
    );
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
            "add",
            "--audience",
            &a_sse,
            "--audience",
            &a_json,
        ],
    );
    let policy = |port: u16| {
        let p = d.join(format!("policy-{port}.toml"));
        std::fs::write(
            &p,
            format!(
                "[roots]\nnitro = [{:?}]\n[token]\nrequire_body_digest = true\n[[audience]]\nprefix = \"http://127.0.0.1:{port}/\"\nmeasurements = [{{ PCR0 = \"{pcr0}\" }}]\nowners = [\"{owner_did}\"]\n",
                d.join("state/sim-root.der").display().to_string()
            ),
        )
        .unwrap();
        p
    };
    let (s_sse, s_json) = (free_port(), free_port());
    let _srv_sse = start_server(&py, d, "server-sse", s_sse, false);
    let _srv_json = start_server(&py, d, "server-json", s_json, true);
    let _gs = start_gate(
        d,
        "gate-sse",
        g_sse,
        &format!("http://127.0.0.1:{s_sse}"),
        &policy(g_sse),
        &[],
    );
    let _gj = start_gate(
        d,
        "gate-json",
        g_json,
        &format!("http://127.0.0.1:{s_json}"),
        &policy(g_json),
        &[],
    );
    let p = free_port();
    let listen = format!("127.0.0.1:{p}");
    let (r_sse, r_json) = (
        format!("/sse=http://127.0.0.1:{g_sse}/mcp"),
        format!("/json=http://127.0.0.1:{g_json}/mcp"),
    );
    let _proxy = spawn_ready(
        "cada-parent",
        &[
            "proxy",
            "--socket",
            sock.to_str().unwrap(),
            "--listen",
            &listen,
            "--upstream",
            &r_sse,
            "--upstream",
            &r_json,
        ],
        &d.join("proxy.log"),
    );
    let calls = [
        r#"echo:{"text":"hi"}"#,
        r#"add:{"a":2,"b":3}"#,
        "delete_all:{}",
    ];
    let sock_arg = sock.to_str().unwrap();
    for (url, opts) in [
        (format!("http://127.0.0.1:{p}/sse"), vec![]),
        (format!("http://127.0.0.1:{p}/json"), vec![]),
        (
            format!("http://127.0.0.1:{g_sse}/mcp"),
            vec!["--cada-socket", sock_arg],
        ),
        (
            format!("http://127.0.0.1:{g_json}/mcp"),
            vec!["--cada-socket", sock_arg],
        ),
    ] {
        let r = node(&script, &url, &opts, &calls);
        assert_eq!(r["initialize"]["ok"], true, "{url}: {r}");
        let tools = r["tools"].as_array().unwrap();
        assert!(tools.iter().any(|t| t == "echo"), "{r}");
        assert_eq!(r["calls"][0]["result"], "hi", "{url}: {r}");
        assert_eq!(r["calls"][1]["result"], "5", "{url}: {r}");
        assert_eq!(r["calls"][2]["ok"], false, "{url}: {r}");
        let err = r["calls"][2]["error"].as_str().unwrap();
        assert!(err.contains("contract.not_permitted.tool"), "{url}: {err}");
    }
}
