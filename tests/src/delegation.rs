//! Shared by the delegation end-to-end tests (issue 24): several enclaves, each with its
//! signing daemon, locked to one owner (owner → planner → worker → …), on `sim` or
//! `sim-snp`; the owner's status list served on loopback; delegations made with
//! `cada-parent delegate` and installed with `cada-parent contract install`; a recording
//! MCP upstream behind `cada-gate`, `cada-verify serve` as the CADA-aware resource server,
//! `cada-sts` and its token exchange; the stable code of every kind of refusal.
#![allow(clippy::missing_panics_doc)] // test helpers: a failure is a failed test
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cada_protocol::mcp;

use crate::{http, keygen, owner_to, parent, start_enclave_on, start_parent, Proc};

/// One agent: an enclave and its daemon in their own directory, locked to the fleet's owner.
pub struct Agent {
    /// Its name (`planner`, `worker`, …), also its directory's.
    pub name: String,
    /// Its directory (enclave socket, state, daemon socket, logs).
    pub dir: PathBuf,
    /// The daemon's agent socket.
    pub sock: PathBuf,
    /// The enclave key's did:key.
    pub did: String,
    /// The image's measurement (PCR0 on `sim`, MEASUREMENT on `sim-snp`).
    pub measurement: String,
    /// The platform's software root (DER file) of this enclave.
    pub root: PathBuf,
    /// The daemon (dropped before the enclave).
    pub daemon: Proc,
    /// The enclave.
    pub enclave: Proc,
}

impl Agent {
    /// A proof from this agent's daemon for `method url`, with evidence and contract (chain),
    /// bound to `body` when given (`bd`, and the MCP calls it makes), carrying `task` and
    /// `traceparent` when given: the daemon's answer, or its refusal (status and body).
    pub fn proof(
        &self,
        method: &str,
        url: &str,
        body: Option<&[u8]>,
        task: Option<&str>,
        traceparent: Option<&str>,
    ) -> Result<serde_json::Value, (u16, serde_json::Value)> {
        let mut ask = serde_json::json!({"method": method, "url": url, "with_evidence": true});
        if let Some(b) = body {
            ask["bd"] = mcp::body_digest(b).into();
            if !b.is_empty() {
                if let Ok(parsed) = mcp::parse_body(b) {
                    ask["mcp"] = serde_json::to_value(parsed.calls()).unwrap();
                }
            }
        }
        if let Some(t) = task {
            ask["task"] = t.into();
        }
        if let Some(tp) = traceparent {
            ask["traceparent"] = tp.into();
        }
        let (st, text) = http(
            &self.sock,
            "POST",
            "/v1/pop",
            Some(&ask.to_string()),
            Duration::from_secs(10),
        )
        .unwrap();
        let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        if st == 200 {
            Ok(v)
        } else {
            Err((st, v))
        }
    }

    /// Exports the enclave's owner, contracts and authority events (`cada-parent contract
    /// list`, JSON) to `file` in its directory, for `cada-verify audit trace --enclave`.
    pub fn export_events(&self, file: &str) -> PathBuf {
        let (code, out, err) = self.cli(&["contract", "list"]);
        assert_eq!(code, 0, "{}: contract list: {err}", self.name);
        let path = self.dir.join(file);
        std::fs::write(&path, out).unwrap();
        path
    }

    /// `cada-parent <args>` against this agent's daemon: (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        parent(&self.sock, args)
    }

    /// Installs a contract or chain (`C0~D1~…`) written to `file` in this agent's directory,
    /// with the owner's status lists (files) when given: the daemon's answer or stderr.
    pub fn install(
        &self,
        file: &str,
        contract: &str,
        status_lists: &[&Path],
    ) -> Result<serde_json::Value, String> {
        let path = self.dir.join(file);
        std::fs::write(&path, contract).unwrap();
        let mut args = vec!["contract", "install", path.to_str().unwrap()];
        for l in status_lists {
            args.extend(["--status-list", l.to_str().unwrap()]);
        }
        let (code, out, err) = self.cli(&args);
        if code == 0 {
            Ok(serde_json::from_str(&out).unwrap_or(serde_json::Value::Null))
        } else {
            Err(err)
        }
    }

    /// `cada-parent delegate --to <to> --contract <parent_dtc> <args>`: the chain it prints
    /// (`root~…~D`), or the refusal's stderr.
    pub fn delegate(&self, to: &str, parent_dtc: &str, args: &[&str]) -> Result<String, String> {
        // `--contract=DTC`: a base64url digest may begin with '-'.
        let contract = format!("--contract={parent_dtc}");
        let mut all = vec!["delegate", "--to", to, &contract];
        all.extend_from_slice(args);
        let (code, out, err) = self.cli(&all);
        if code == 0 {
            Ok(chain_of(&out))
        } else {
            Err(format!("exit {code}: {err}{out}"))
        }
    }
}

/// The chain in `cada-parent delegate`'s output: the compact chain itself, or the `chain`
/// member when it prints JSON.
pub fn chain_of(out: &str) -> String {
    let t = out.trim();
    if t.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(t).unwrap();
        v["chain"].as_str().unwrap().to_owned()
    } else {
        t.lines().last().unwrap_or_default().trim().to_owned()
    }
}

/// The links of a chain, root first.
pub fn links(chain: &str) -> Vec<&str> {
    chain.split('~').collect()
}

/// The digest (`cada.dtc`) of every link of a chain, root first.
pub fn digests(chain: &str) -> Vec<String> {
    links(chain)
        .into_iter()
        .map(cada_contract::digest_of)
        .collect()
}

/// The leaf's digest.
pub fn leaf_dtc(chain: &str) -> String {
    cada_contract::digest_of(links(chain).last().unwrap())
}

/// The JSON payload of a compact JWS.
pub fn payload(compact: &str) -> serde_json::Value {
    let p = compact.split('.').nth(1).unwrap();
    serde_json::from_slice(&cada_protocol::b64::decode("payload", p, 1 << 20).unwrap()).unwrap()
}

/// Several agents locked to one owner, on one platform.
pub struct Fleet {
    /// `sim` or `sim-snp`.
    pub platform: String,
    /// The test's directory.
    pub dir: PathBuf,
    /// The owner's did:key.
    pub owner_did: String,
    /// The owner's key file.
    pub owner_key: String,
    /// The agents, in the order given.
    pub agents: Vec<Agent>,
}

impl Fleet {
    /// Starts one agent per name, each in `d/<name>` (daemon with `daemon_extra`), makes an
    /// owner key and locks every enclave to it.
    pub fn start(d: &Path, platform: &str, names: &[&str], daemon_extra: &[&str]) -> Fleet {
        let (owner_did, owner_key) = keygen(d, "owner");
        let agents = names
            .iter()
            .map(|n| start_agent(d, platform, n, &[], daemon_extra, &owner_key))
            .collect();
        Fleet {
            platform: platform.to_owned(),
            dir: d.to_owned(),
            owner_did,
            owner_key,
            agents,
        }
    }

    /// The agent named `name`.
    pub fn agent(&self, name: &str) -> &Agent {
        self.agents
            .iter()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("no agent {name}"))
    }

    /// The measurement's name in policies and evidence: PCR0 (`sim`), MEASUREMENT (`sim-snp`).
    pub fn measurement_name(&self) -> &'static str {
        if self.platform == "sim" {
            "PCR0"
        } else {
            "MEASUREMENT"
        }
    }

    /// A measurement of the same length that no agent has (an image the policy rejects).
    pub fn other_measurement(&self) -> String {
        "0".repeat(self.agents[0].measurement.len())
    }

    /// The `[roots]` section trusting every agent's software root (and on `sim-snp`,
    /// first-sighting freshness), for a verifier's, gate's or STS's policy.
    pub fn roots_toml(&self) -> String {
        let roots: Vec<String> = self
            .agents
            .iter()
            .map(|a| format!("{:?}", a.root.display().to_string()))
            .collect();
        if self.platform == "sim" {
            format!("[roots]\nnitro = [{}]\n", roots.join(", "))
        } else {
            format!(
                "[roots]\nsev_snp = [{}]\n[snp]\nfreshness = \"first_seen\"\n",
                roots.join(", ")
            )
        }
    }

    /// One `[[audience]]` for `prefix`: the agents' image, the fleet's owner,
    /// `max_delegation_depth = max_depth`, plus `extra` lines (e.g.
    /// `delegator_measurements = …`).
    pub fn audience_toml(&self, prefix: &str, max_depth: u32, extra: &str) -> String {
        self.audience_with(prefix, &self.agents[0].measurement, max_depth, extra)
    }

    /// [`Self::audience_toml`] requiring the image `measurement`.
    pub fn audience_with(
        &self,
        prefix: &str,
        measurement: &str,
        max_depth: u32,
        extra: &str,
    ) -> String {
        format!(
            "[[audience]]\nprefix = \"{prefix}\"\nmeasurements = [{{ {} = \"{measurement}\" }}]\nowners = [\"{}\"]\nmax_delegation_depth = {max_depth}\n{extra}",
            self.measurement_name(),
            self.owner_did
        )
    }

    /// Writes a policy file `name` = roots + `body`; returns its path.
    pub fn policy(&self, name: &str, body: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, format!("{}{body}", self.roots_toml())).unwrap();
        p
    }

    /// The owner grants `to` a contract (`cada-owner grant` with `args`: audiences, methods,
    /// tools, delegation rules, validity, status entry …), written to `d/<file>`; the agent
    /// installs it with `status_list` when given. Returns the compact contract.
    pub fn grant(
        &self,
        to: &Agent,
        file: &str,
        args: &[impl AsRef<str>],
        status_list: Option<&Path>,
    ) -> String {
        let c = self.owner_contract(&to.did, file, args);
        let lists: Vec<&Path> = status_list.into_iter().collect();
        to.install(file, &c, &lists)
            .unwrap_or_else(|e| panic!("{} installs {file}: {e}", to.name));
        c
    }

    /// An owner contract for `subject` (not installed), written to `d/<file>`.
    pub fn owner_contract(&self, subject: &str, file: &str, args: &[impl AsRef<str>]) -> String {
        let mut all = vec!["grant", "--key", &self.owner_key, "--subject", subject];
        all.extend(args.iter().map(AsRef::as_ref));
        owner_to(&self.dir, file, &all)
    }
}

/// One agent in `d/<name>` on `platform` (its enclave started with `enclave_extra`, its
/// daemon with `daemon_extra`), locked to the owner whose key file is `key`.
pub fn start_agent(
    d: &Path,
    platform: &str,
    name: &str,
    enclave_extra: &[&str],
    daemon_extra: &[&str],
    key: &str,
) -> Agent {
    let dir = d.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let enclave = start_enclave_on(&dir, platform, enclave_extra);
    let daemon = start_parent(&dir, daemon_extra);
    let sock = dir.join("agent.sock");
    let (_, id) = http(&sock, "GET", "/v1/identity", None, Duration::from_secs(5)).unwrap();
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    let did = id["did"].as_str().unwrap().to_owned();
    let mname = if platform == "sim" {
        "PCR0"
    } else {
        "MEASUREMENT"
    };
    let measurement = id["measurements"][mname].as_str().unwrap().to_owned();
    let lock = dir.join("lock.jwt");
    owner_to(&dir, "lock.jwt", &["lock", "--key", key, "--enclave", &did]);
    let (code, _, err) = parent(&sock, &["owner", "lock", lock.to_str().unwrap()]);
    assert_eq!(code, 0, "{name} locks: {err}");
    Agent {
        name: name.to_owned(),
        root: dir.join(format!("state/{platform}-root.der")),
        dir,
        sock,
        did,
        measurement,
        daemon,
        enclave,
    }
}

/// The owner's status list, published on a loopback HTTP server (every GET answers the
/// current file).
pub struct StatusList {
    /// Its URL (what contracts name).
    pub url: String,
    /// The owner's current list (a vc+jwt file; what daemons install with).
    pub current: PathBuf,
    /// What the server publishes.
    published: PathBuf,
    dir: PathBuf,
    key: String,
    version: std::cell::Cell<u32>,
}

impl StatusList {
    /// A new, empty list of the fleet's owner, published at once.
    pub fn new(fleet: &Fleet, name: &str) -> StatusList {
        let published = fleet.dir.join(format!("{name}-published.jwt"));
        std::fs::write(&published, b"").unwrap();
        let port = crate::serve_status_file(published.clone(), None);
        let url = format!("http://127.0.0.1:{port}/status/{name}");
        let file = format!("{name}-0.jwt");
        owner_to(
            &fleet.dir,
            &file,
            &[
                "status-list",
                "new",
                "--key",
                &fleet.owner_key,
                "--url",
                &url,
            ],
        );
        let current = fleet.dir.join(&file);
        std::fs::copy(&current, &published).unwrap();
        StatusList {
            url,
            current,
            published,
            dir: fleet.dir.clone(),
            key: fleet.owner_key.clone(),
            version: std::cell::Cell::new(0),
        }
    }

    /// The owner revokes `index` (`cada-owner revoke`) and publishes the new list; returns
    /// the new list's file.
    pub fn revoke(&mut self, index: u64) -> PathBuf {
        let v = self.version.get() + 1;
        self.version.set(v);
        let name = format!(
            "{}-{v}.jwt",
            self.published
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches("-published.jwt")
        );
        owner_to(
            &self.dir,
            &name,
            &[
                "revoke",
                "--key",
                &self.key,
                "--list",
                self.current.to_str().unwrap(),
                "--index",
                &index.to_string(),
            ],
        );
        self.current = self.dir.join(&name);
        std::fs::copy(&self.current, &self.published).unwrap();
        self.current.clone()
    }
}

/// What a recording MCP upstream saw: each request's lower-cased head and its body.
pub type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A stand-in MCP server behind a gate: answers every JSON-RPC request with a result naming
/// the tool called (`{"content":[{"type":"text","text":"<tool>"}]}`), metadata GETs 404,
/// and records each request's head and body (to check what the gate forwards:
/// `traceparent`, `CADA-Task`, the verified agent).
pub fn mcp_upstream() -> (u16, Seen) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let rec = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let rec = rec.clone();
            std::thread::spawn(move || serve_one(&mut s, &rec));
        }
    });
    (port, seen)
}

fn serve_one(s: &mut std::net::TcpStream, rec: &Seen) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < end + 4 + len {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8_lossy(&buf[end + 4..]).into_owned();
    if head.contains("/.well-known/") {
        let _ = s
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    }
    let req: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let tool = req["params"]["name"].as_str().unwrap_or("none").to_owned();
    let answer = serde_json::json!({
        "jsonrpc": "2.0", "id": req["id"].clone(),
        "result": {"content": [{"type": "text", "text": tool}]},
    })
    .to_string();
    rec.lock().unwrap().push((head, body));
    let _ = write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
}

/// A `tools/call` of `tool` (JSON-RPC id `id`).
pub fn tool_call(id: u64, tool: &str) -> Vec<u8> {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": tool, "arguments": {}}})
    .to_string()
    .into_bytes()
}

/// What a gate answered a call: its status and body (JSON-RPC result or error).
pub struct GateAnswer {
    /// HTTP status.
    pub status: u16,
    /// Lower-cased response head.
    pub head: String,
    /// Body.
    pub body: String,
}

impl GateAnswer {
    /// The tool name the upstream answered with, when the call went through.
    pub fn result_text(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        v["result"]["content"][0]["text"]
            .as_str()
            .map(str::to_owned)
    }

    /// The refusal's rule code: `[code] …` in the JSON-RPC error message.
    pub fn code(&self) -> String {
        bracket_code(&crate::mcp_interop::rpc_error(&self.body))
    }
}

/// The code in a gate message of the form `[code] rule N: …`.
pub fn bracket_code(message: &str) -> String {
    message
        .strip_prefix('[')
        .and_then(|m| m.split_once(']'))
        .map(|(c, _)| c.to_owned())
        .unwrap_or_default()
}

/// `agent` calls `tool` at the gate on `port` (`POST /mcp`) with a fresh proof from its
/// daemon (bound to the body and naming the call, with evidence and its chain in
/// `CADA-Contract`), carrying `task` and `traceparent` when given. A refusal by the enclave
/// comes back as `Err` (status, problem).
pub fn gate_call(
    agent: &Agent,
    port: u16,
    tool: &str,
    task: Option<&str>,
    traceparent: Option<&str>,
) -> Result<GateAnswer, (u16, serde_json::Value)> {
    let url = format!("http://127.0.0.1:{port}/mcp");
    let body = tool_call(7, tool);
    let p = agent.proof("POST", &url, Some(&body), task, traceparent)?;
    Ok(gate_send(port, &p, &body, &[]))
}

/// Sends `body` to the gate on `port` with the proof answer `p` (its `dpop`, `evidence`,
/// `contract`) and extra headers (e.g. a forged `CADA-Contract` replaces the proof's).
pub fn gate_send(
    port: u16,
    p: &serde_json::Value,
    body: &[u8],
    extra: &[(&str, &str)],
) -> GateAnswer {
    let mut h = crate::mcp_interop::mcp_headers(p, body);
    for (k, v) in extra {
        h.retain(|(hk, _)| !hk.eq_ignore_ascii_case(k));
        h.push(((*k).to_owned(), (*v).to_owned()));
    }
    let (status, head, body) =
        crate::mcp_interop::send(port, "POST", "/mcp", &crate::mcp_interop::refs(&h), body);
    GateAnswer { status, head, body }
}

/// The code of a daemon or enclave refusal (a problem document): the detail's first word
/// (`delegation.wider.tool: …`), else the type's last segment.
pub fn problem_code(problem: &serde_json::Value) -> String {
    let detail = problem["detail"].as_str().unwrap_or_default();
    let first = detail
        .split(|c: char| c == ':' || c.is_whitespace())
        .next()
        .unwrap_or_default();
    if first.contains('.') {
        return first.to_owned();
    }
    problem["type"]
        .as_str()
        .unwrap_or_default()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// `cada-verify serve`'s `POST /v1/pop/verify` for a proof answer `p` of `method url`, with
/// `contract` (a chain) when given: (status, answer).
pub fn verify_at(
    port: u16,
    p: &serde_json::Value,
    method: &str,
    url: &str,
    contract: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut body = serde_json::json!({
        "dpop": p["dpop"], "method": method, "url": url, "evidence": p["evidence"], "body": "",
    });
    if let Some(c) = contract {
        body["contract"] = c.into();
    }
    crate::pop_verify(port, &body)
}

/// The first reason's code of a verifier's refusal.
pub fn verifier_code(answer: &serde_json::Value) -> String {
    answer["reasons"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Starts `cada-sts serve` on `port` as `issuer` with `policy`, audit log in
/// `d/<name>-audit`, reading status lists every second, plus `extra`.
pub fn start_sts(
    d: &Path,
    name: &str,
    port: u16,
    issuer: &str,
    policy: &Path,
    extra: &[&str],
) -> Proc {
    let mut args = vec!["--status-refresh", "1"];
    args.extend_from_slice(extra);
    crate::sts_serve(d, name, port, issuer, policy, &args)
}

/// `cada-verify serve` named `name` with `policy`, reading `status` every second, plus
/// `extra`: (the verifier, its port).
pub fn status_verifier(
    d: &Path,
    name: &str,
    policy: &Path,
    status: &StatusList,
    extra: &[&str],
) -> (Proc, u16) {
    let mut args = vec![
        "--policy",
        policy.to_str().unwrap(),
        "--status-refresh",
        "1",
        "--status-list",
        &status.url,
    ];
    args.extend_from_slice(extra);
    crate::start_verifier(d, name, &args)
}

/// `cada-gate` named `name` on `port` in front of the upstream on `up_port`, with `policy`,
/// reading `status` every second, plus `extra`.
pub fn status_gate(
    d: &Path,
    name: &str,
    port: u16,
    up_port: u16,
    policy: &Path,
    status: &StatusList,
    extra: &[&str],
) -> Proc {
    let mut args = vec!["--status-refresh", "1", "--status-list", &status.url];
    args.extend_from_slice(extra);
    crate::mcp_interop::start_gate(
        d,
        name,
        port,
        &format!("http://127.0.0.1:{up_port}"),
        policy,
        &args,
    )
}

/// `agent` exchanges its proof, evidence and `chain` for an access token for `resource`
/// at the STS `issuer` (listening on `port`): (status, JSON answer).
pub fn sts_exchange(
    agent: &Agent,
    port: u16,
    issuer: &str,
    chain: &str,
    resource: &str,
    task: Option<&str>,
) -> (u16, serde_json::Value) {
    use cada_protocol::access_token::{GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_CONTRACT};
    let p = agent
        .proof("POST", &format!("{issuer}/token"), None, task, None)
        .unwrap_or_else(|e| panic!("{} proof for the STS: {e:?}", agent.name));
    let form = [
        ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
        ("subject_token", chain),
        ("subject_token_type", TOKEN_TYPE_CONTRACT),
        ("resource", resource),
    ];
    let (status, _, b) = crate::http_tcp_with(
        port,
        "POST",
        "/token",
        "application/x-www-form-urlencoded",
        &[
            ("DPoP", p["dpop"].as_str().unwrap()),
            ("CADA-Evidence", p["evidence"].as_str().unwrap()),
        ],
        crate::form_body(&form).as_bytes(),
    );
    (status, serde_json::from_str(&b).unwrap_or_default())
}

/// The `act` chain of token claims, outermost first: the `sub` of each nested `act`.
pub fn actors(claims: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut a = &claims["act"];
    while let Some(s) = a["sub"].as_str() {
        out.push(s.to_owned());
        a = &a["act"];
    }
    out
}

/// A W3C traceparent with fixed, non-zero trace and span ids derived from `seed`.
pub fn traceparent(seed: u8) -> String {
    format!(
        "00-{}-{}-01",
        hex::encode([seed.max(1); 16]),
        hex::encode([seed.max(1).wrapping_add(1).max(1); 8])
    )
}

/// The `cada-owner grant` arguments that let a contract's subject delegate: at most
/// `max_depth` more levels, in the owner's status list the contract names, indexes
/// `from..to` for the delegations below it.
pub fn may_delegate(max_depth: u32, from: u64, to: u64) -> Vec<String> {
    vec![
        "--max-depth".into(),
        max_depth.to_string(),
        "--status-range".into(),
        format!("{from}..{to}"),
    ]
}

/// The `cada-owner grant` arguments of a root contract that may be delegated: `flags`
/// (audiences, methods, tools, limits …), valid one hour, at index `index` of `status`,
/// delegable `max_depth` levels with indexes in `range` ([`may_delegate`]).
pub fn root_flags(
    flags: &[&str],
    status: &StatusList,
    index: &str,
    max_depth: u32,
    range: (u64, u64),
) -> Vec<String> {
    let mut args: Vec<String> = flags.iter().map(|s| (*s).to_owned()).collect();
    for f in [
        "--valid-for",
        "1h",
        "--status-list",
        &status.url,
        "--status-index",
        index,
    ] {
        args.push(f.to_owned());
    }
    args.extend(may_delegate(max_depth, range.0, range.1));
    args
}

/// [`root_flags`] of a contract for POST and tool echo at each of `audiences`, plus `extra`.
pub fn contract_flags(
    audiences: &[&str],
    status: &StatusList,
    index: &str,
    extra: &[&str],
    max_depth: u32,
    range: (u64, u64),
) -> Vec<String> {
    let mut flags: Vec<&str> = Vec::new();
    for a in audiences {
        flags.extend(["--audience", a]);
    }
    flags.extend(["--method", "POST", "--tool", "echo"]);
    flags.extend_from_slice(extra);
    root_flags(&flags, status, index, max_depth, range)
}

/// The audit trace of `task`: (exit code, stdout, stderr) of `cada-verify audit trace
/// <task> --log DIR … --enclave FILE …` plus `extra` (e.g. `--json`); `enclaves` are exports
/// of `cada-parent contract list` (see [`Agent::export_events`]).
pub fn audit_trace(
    task: &str,
    logs: &[&Path],
    enclaves: &[&Path],
    extra: &[&str],
) -> (i32, String, String) {
    let mut args: Vec<String> = vec!["audit".into(), "trace".into(), task.into()];
    for l in logs {
        args.push("--log".into());
        args.push(l.display().to_string());
    }
    for e in enclaves {
        args.push("--enclave".into());
        args.push(e.display().to_string());
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let out = std::process::Command::new(crate::bin("cada-verify"))
        .args(&args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The decoded claims of a proof answer's `dpop`.
pub fn proof_claims(p: &serde_json::Value) -> serde_json::Value {
    payload(p["dpop"].as_str().unwrap())
}

/// A compact JWS of `payload` signed by `key` (a software key, never an enclave's), with
/// the `vc+jwt` header a delegation has (`kid` = the key's DID URL): what a forger outside
/// any enclave can make.
pub fn forge(key: &cada_contract::OwnerKey, payload: &serde_json::Value) -> String {
    let alg = if key.did().starts_with("did:key:z6Mk") {
        "EdDSA"
    } else {
        "ES256"
    };
    let header = serde_json::json!({"alg": alg, "typ": "vc+jwt", "kid": key.kid()});
    let input = format!(
        "{}.{}",
        cada_protocol::b64::encode(header.to_string().as_bytes()),
        cada_protocol::b64::encode(payload.to_string().as_bytes())
    );
    let sig = key.sign_bytes(input.as_bytes()).unwrap();
    format!("{input}.{}", cada_protocol::b64::encode(&sig))
}

/// `compact` with its payload re-encoded after `edit`, its header and signature kept (a
/// real enclave's signature over other bytes).
pub fn reencode(compact: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut parts = compact.split('.');
    let (h, _, s) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let mut p = payload(compact);
    edit(&mut p);
    format!(
        "{h}.{}.{s}",
        cada_protocol::b64::encode(p.to_string().as_bytes())
    )
}

/// The owner key in a `cada-owner keygen` key file, in this process.
pub fn load_key(file: &str) -> cada_contract::OwnerKey {
    cada_contract::OwnerKey::from_key_file(&std::fs::read_to_string(file).unwrap()).unwrap()
}

/// A chain of compacts, root first.
pub fn join(links: &[&str]) -> String {
    links.join("~")
}
