//! Adversarial review of the chain of custody (issue 24 §4; docs/reviews/custody-1.md)
//! against the real binaries on `sim`: `cada-verify serve`, `cada-gate`, `cada-parent`
//! daemon and `cada-verify audit trace`. Each finding's test failed before its fix (all
//! seven fixed: see the review); the others are attacks that held.
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cada_e2e::mcp_interop::*;
use cada_e2e::*;
use cada_enclave::key::SigningKey;
use cada_enclave::platform::sim::Sim;
use cada_enclave::signer::{DelegationPolicy, Signer};
use cada_protocol::jwk::SigAlg;
use cada_protocol::wire::SignPopRequest;

const VICTIM: &str = "victim-task.7";
const TP_VICTIM: &str = "00-11111111111111111111111111111111-00f067aa0ba902b7-01";
/// Another trace: calls of the same agent made outside the victim's task.
const OTHER_TRACE: &str = "22222222222222222222222222222222";
const TP_OTHER: &str = "00-22222222222222222222222222222222-00f067aa0ba902b7-01";
const API: &str = "https://api.example.com/";

/// A proof signed by a software key the policy does not trust (a `Sim` of its own root):
/// anyone can make one, and it names whatever task and traceparent it likes.
fn forged_proof(htm: &str, htu: &str, task: &str, tp: &str) -> String {
    let s = Signer::new(
        SigningKey::generate(SigAlg::EdDSA).unwrap(),
        Box::new(Sim::new(None).unwrap()),
        DelegationPolicy::default(),
    )
    .unwrap();
    let r = SignPopRequest {
        htm: htm.into(),
        htu: htu.into(),
        access_token: None,
        nonce: None,
        ctx: BTreeMap::new(),
        bd: None,
        mcp: vec![],
        exchange: None,
        task: Some(task.into()),
        traceparent: Some(tp.into()),
    };
    s.sign_pop(&r).unwrap().dpop
}

/// A locked agent with a contract for [`API`] and `cada-verify serve` trusting it.
struct VerifyRig {
    dir: TempDir,
    agent: LockedAgent,
    _verify: Proc,
    port: u16,
}

impl VerifyRig {
    fn start(tag: &str) -> Self {
        Self::start_with(tag, &[])
    }

    fn start_with(tag: &str, extra: &[&str]) -> Self {
        let dir = TempDir::new(tag);
        let d = &dir.0;
        let agent = LockedAgent::start(d, &[]);
        agent.grant(
            d,
            &["--method", "POST", "--method", "GET", "--audience", API],
        );
        let policy = agent.write_policy(d, "policy.toml", &[API]);
        let mut args = vec!["--policy", policy.to_str().unwrap()];
        args.extend_from_slice(extra);
        let (verify, port) = start_verifier(d, "verify", &args);
        VerifyRig {
            dir,
            agent,
            _verify: verify,
            port,
        }
    }

    fn audit(&self) -> std::path::PathBuf {
        self.dir.0.join("verify-audit")
    }

    /// The agent's own proof for `POST url` (task and traceparent as given), verified.
    fn genuine_call(&self, url: &str, task: Option<&str>, tp: &str) -> serde_json::Value {
        let mut ask = serde_json::json!({"method": "POST", "url": url, "with_evidence": true,
            "traceparent": tp});
        if let Some(t) = task {
            ask["task"] = t.into();
        }
        let (st, a) = daemon_pop(&self.agent.sock, &ask);
        assert_eq!(st, 200, "{a}");
        let (st, r) = pop_verify(
            self.port,
            &serde_json::json!({"dpop": a["dpop"], "method": "POST", "url": url,
                "evidence": a["evidence"], "contract": a["contract"], "body": ""}),
        );
        assert_eq!(st, 200, "{r}");
        a
    }

    /// Waits until the log holds `n` records (the verifier appends before it answers, but
    /// short records of unauthenticated requests may be written after).
    fn wait_records(&self, n: usize) -> Vec<serde_json::Value> {
        let t0 = Instant::now();
        loop {
            let r: Vec<_> = audit_records(&self.audit())
                .into_iter()
                .filter(|r| r["kind"] != "checkpoint")
                .collect();
            if r.len() >= n {
                return r;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "{r:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The jti of a compact DPoP proof.
fn jti(dpop: &str) -> String {
    cada_protocol::token::parse_compact(dpop)
        .unwrap()
        .claims
        .jti
        .clone()
}

/// Finding 1: the trace join reads trace ids from REFUSED records, whose task and
/// traceparent nobody authenticated. A proof anyone can forge (a software key, no trusted
/// evidence) naming the victim's task and the trace id of some other traffic makes
/// `audit trace VICTIM` show that other traffic's ACCEPTED calls as calls of the victim's
/// task, with their actors, under "chain intact".
#[test]
fn a_refused_proof_cannot_pull_other_traffic_into_a_task() {
    let rig = VerifyRig::start("custody-atk-join");
    let url = format!("{API}v1/orders");
    // The victim's task: one genuine call.
    let victim = rig.genuine_call(&url, Some(VICTIM), TP_VICTIM);
    // Traffic outside the task: the same agent's call in another trace, no task.
    let other = rig.genuine_call(&format!("{API}v1/private"), None, TP_OTHER);
    // The attacker: no key the policy trusts, no evidence; it claims the victim's task and
    // the other trace.
    let forged = forged_proof(
        "POST",
        &url,
        VICTIM,
        &format!("00-{OTHER_TRACE}-0102030405060708-01"),
    );
    let (st, r) = pop_verify(
        rig.port,
        &serde_json::json!({"dpop": forged, "method": "POST", "url": url, "body": ""}),
    );
    assert_ne!(st, 200, "{r}");
    let recs = rig.wait_records(3);
    assert!(
        recs.iter()
            .any(|r| r["task"] == VICTIM && r["decision"] == "reject"),
        "the refusal is recorded with the claimed task: {recs:?}"
    );
    let audit = rig.audit();
    let (code, out, err) = trace_cmd(&[VICTIM, "--log", audit.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let t: serde_json::Value = serde_json::from_str(&out).unwrap();
    let text = t.to_string();
    assert!(
        text.contains(&jti(victim["dpop"].as_str().unwrap())),
        "{text}"
    );
    assert!(
        !text.contains(&jti(other["dpop"].as_str().unwrap())) && !text.contains("v1/private"),
        "a call of another trace, never signed under the task, is shown in the task's tree \
         because an unauthenticated refusal named its trace id: {text}"
    );
    assert_eq!(
        t["trace_ids"],
        serde_json::json!(["11111111111111111111111111111111"]),
        "only accepted records' trace ids are the task's"
    );
}

/// Finding 2: the tree is printed to a terminal with attacker-written bytes unescaped. A
/// refused request (forged proof naming the victim's task) whose URL holds ESC and BEL
/// characters puts an OSC/CSI sequence into `cada-verify audit trace VICTIM`'s output.
#[test]
fn the_trace_prints_no_control_characters_from_records() {
    let rig = VerifyRig::start("custody-atk-esc");
    let url = format!("{API}v1/orders");
    rig.genuine_call(&url, Some(VICTIM), TP_VICTIM);
    // ESC ] 0 ; title BEL (sets the terminal title), ESC [ 2 J (clears the screen), and a
    // forged line break that draws a fake accepted call.
    let evil = format!(
        "{API}v1/x\u{1b}]0;owned\u{7}\u{1b}[2J\n   └─ 2026-01-01T00:00:00Z gate POST https://bank/transfer → accept"
    );
    let forged = forged_proof("POST", &url, VICTIM, TP_VICTIM);
    let (st, r) = pop_verify(
        rig.port,
        &serde_json::json!({"dpop": forged, "method": "POST", "url": evil, "body": ""}),
    );
    assert_ne!(st, 200, "{r}");
    rig.wait_records(2);
    let audit = rig.audit();
    let (code, out, err) = trace_cmd(&[VICTIM, "--log", audit.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("v1/x"),
        "the refused record is in the tree: {out}"
    );
    assert!(
        !out.contains('\u{1b}') && !out.contains('\u{7}'),
        "terminal control characters printed raw: {out:?}"
    );
    assert!(
        !out.lines()
            .any(|l| l.trim_start().starts_with("└─ 2026-01-01T00:00:00Z gate")),
        "a record's URL drew a line of its own in the tree: {out}"
    );
}

/// A loopback upstream (or OTLP collector) that records each request and answers a
/// JSON-RPC result.
fn upstream() -> (u16, Recorded) {
    recorder(r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#)
}

/// A recorded request as it was sent: head, blank line, body.
fn whole((head, body): &(String, String)) -> String {
    format!("{head}\r\n\r\n{body}")
}

/// Finding 3: `CADA_Task` (underscore) is not removed by the gate, although the gate now
/// SETS `CADA-Task` and removes look-alikes of every other header it sets. Servers that read
/// `_` as `-` (CGI/WSGI/PHP: both become `HTTP_CADA_TASK`; nginx with
/// `underscores_in_headers on`) see the client's task beside — or instead of — the signed
/// one.
#[test]
fn a_lookalike_of_the_task_header_is_not_forwarded() {
    let dir = TempDir::new("custody-atk-hdr");
    let d = &dir.0;
    let (up, seen) = upstream();
    let (agent, g, aud, _gate) = echo_gate(d, up, &[]);
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;
    let url = format!("{aud}mcp");
    let ask = serde_json::json!({
        "method": "POST", "url": url, "with_evidence": true,
        "bd": cada_protocol::mcp::body_digest(body),
        "mcp": cada_protocol::mcp::parse_body(body).unwrap().calls(),
        "task": "signed-task", "traceparent": TP_VICTIM,
    });
    let (st, p) = daemon_pop(&agent.sock, &ask);
    assert_eq!(st, 200, "{p}");
    let mut h = mcp_headers(&p, body);
    h.push(("CADA_Task".into(), VICTIM.into()));
    h.push(("cada-task".into(), "client-task".into()));
    let (st, _, b) = send(g, "POST", "/mcp", &refs(&h), body);
    assert_eq!(st, 200, "{b}");
    let head = seen.lock().unwrap().last().map(whole).unwrap();
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("\r\ncada-task: signed-task"), "{head}");
    assert!(!lower.contains("client-task"), "{head}");
    assert!(
        !lower.contains(VICTIM),
        "the client's unsigned task reached the upstream under a look-alike name: {head}"
    );
}

/// `dpop` with its claims edited by `f` and signed again by `key` (the proof's own key, so
/// the signature is valid; nothing attests the key).
fn resign(dpop: &str, key: &SigningKey, f: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut parts = dpop.split('.');
    let (h, c) = (parts.next().unwrap(), parts.next().unwrap());
    let mut claims: serde_json::Value =
        serde_json::from_slice(&cada_protocol::b64::decode("claims", c, 1 << 20).unwrap()).unwrap();
    f(&mut claims);
    let input = format!("{h}.{}", cada_protocol::b64::encode(claims.to_string()));
    let sig = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", cada_protocol::b64::encode(sig))
}

/// Held: malformed tasks and traceparents are refused by the daemon before signing and by
/// the verifier at decode (a proof re-signed by a software key), with the trace.* codes,
/// and the refusal's record carries none of the refused values.
#[test]
fn malformed_custody_values_are_refused_at_the_daemon_and_the_verifier() {
    let rig = VerifyRig::start("custody-atk-valid");
    let url = format!("{API}v1/orders");
    let tid = "4bf92f3577b34da6a3ce929d0e0e4736";
    let bad_tps = [
        format!("ff-{tid}-00f067aa0ba902b7-01"),
        format!("01-{tid}-00f067aa0ba902b7-01"),
        format!("00-{}-00f067aa0ba902b7-01", tid.to_uppercase()),
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_owned(),
        format!("00-{tid}-0000000000000000-01"),
        format!("00-{tid}-00f067aa0ba902b7-01-extra"),
        format!("00-{tid}-00f067aa0ba902b7-0"),
        format!("00-{tid}-00f067aa0ba902b7-01 "),
        format!(" 00-{tid}-00f067aa0ba902b7-01"),
        format!("00_{tid}_00f067aa0ba902b7_01"),
        format!("00-{tid}-00f067aa0ba902b7-0g"),
        format!("00-{tid}-00f067aa0ba902b7-\u{ff10}1"),
    ];
    let bad_tasks = [
        "a".repeat(129),
        "task\u{2010}1".to_owned(), // Unicode hyphen
        "t\u{430}sk".to_owned(),    // Cyrillic a
        "task\u{200b}".to_owned(),
        "task\n1".to_owned(),
        "task 1".to_owned(),
        "task/1".to_owned(),
        String::new(),
        "\u{1b}[2J".to_owned(),
    ];
    let ok = "a".repeat(128);
    let (st, a) = daemon_pop(
        &rig.agent.sock,
        &serde_json::json!({"method": "POST", "url": url, "task": ok}),
    );
    assert_eq!(st, 200, "128 bytes is the limit: {a}");
    for tp in &bad_tps {
        let (st, a) = daemon_pop(
            &rig.agent.sock,
            &serde_json::json!({"method": "POST", "url": url, "traceparent": tp}),
        );
        assert_eq!(st, 400, "{tp:?}: {a}");
        assert!(a.to_string().contains("trace.traceparent"), "{tp:?}: {a}");
    }
    for task in &bad_tasks {
        let (st, a) = daemon_pop(
            &rig.agent.sock,
            &serde_json::json!({"method": "POST", "url": url, "task": task}),
        );
        assert_eq!(st, 400, "{task:?}: {a}");
        assert!(a.to_string().contains("trace.task"), "{task:?}: {a}");
    }
    // The verifier, given proofs that a software key signed with each bad value.
    let key = SigningKey::generate(SigAlg::EdDSA).unwrap();
    let s = Signer::new(
        key,
        Box::new(Sim::new(None).unwrap()),
        DelegationPolicy::default(),
    )
    .unwrap();
    let base = s
        .sign_pop(&SignPopRequest {
            htm: "POST".into(),
            htu: url.clone(),
            access_token: None,
            nonce: None,
            ctx: BTreeMap::new(),
            bd: None,
            mcp: vec![],
            exchange: None,
            task: Some("x".into()),
            traceparent: Some(TP_VICTIM.into()),
        })
        .unwrap()
        .dpop;
    // The signer does not give its key back: sign again with one we hold, whose JWK goes
    // into the header.
    let key = SigningKey::generate(SigAlg::EdDSA).unwrap();
    let header = serde_json::json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": key.jwk()});
    let body = base.split('.').nth(1).unwrap();
    let own = {
        let input = format!("{}.{body}", cada_protocol::b64::encode(header.to_string()));
        let sig = key.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", cada_protocol::b64::encode(sig))
    };
    let mut cases: Vec<(String, &str, String)> = Vec::new();
    for tp in &bad_tps {
        let tp2 = tp.clone();
        cases.push((
            resign(&own, &key, |c| c["cada"]["tp"] = tp2.into()),
            "trace.traceparent",
            tp.clone(),
        ));
    }
    for task in &bad_tasks {
        let t2 = task.clone();
        cases.push((
            resign(&own, &key, |c| c["cada"]["task"] = t2.into()),
            "trace.task",
            task.clone(),
        ));
    }
    cases.push((
        resign(&own, &key, |c| c["cada"]["task"] = serde_json::json!(["a"])),
        "",
        "[\"a\"]".into(),
    ));
    cases.push((
        resign(&own, &key, |c| c["cada"]["tp"] = serde_json::json!(7)),
        "",
        "7".into(),
    ));
    for (dpop, code, what) in &cases {
        let (st, r) = pop_verify(
            rig.port,
            &serde_json::json!({"dpop": dpop, "method": "POST", "url": url, "body": ""}),
        );
        assert_ne!(st, 200, "{what:?}: {r}");
        if !code.is_empty() {
            assert!(r.to_string().contains(code), "{what:?}: {r}");
        }
    }
    // None of the refused values is in the log.
    std::thread::sleep(Duration::from_millis(300));
    for r in audit_records(&rig.audit()) {
        let t = r["task"].as_str().unwrap_or_default();
        assert!(t.is_empty() || t == "x", "{r}");
        assert!(
            r["tp"].is_null() || r["tp"] == TP_VICTIM,
            "a refused traceparent was written: {r}"
        );
        assert!(r.to_string().len() < 4096, "{r}");
    }
}

/// The echo tool call the OTLP findings make.
const ECHO_BODY: &[u8] =
    br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;

/// An agent holding a contract for POST, tool echo, scope mcp at a gate on a free port in
/// front of the upstream on `up`, started with `gate_args`: (the agent, the gate's port,
/// its prefix, the gate).
fn echo_gate(d: &Path, up: u16, gate_args: &[&str]) -> (LockedAgent, u16, String, Proc) {
    let g = free_port();
    let aud = format!("http://127.0.0.1:{g}/");
    let agent = LockedAgent::start(d, &[]);
    agent.grant(
        d,
        &[
            "--method",
            "POST",
            "--tool",
            "echo",
            "--scope",
            "mcp",
            "--audience",
            &aud,
        ],
    );
    let policy = agent.write_policy(d, "policy.toml", &[&aud]);
    let gate = start_gate(
        d,
        "gate",
        g,
        &format!("http://127.0.0.1:{up}"),
        &policy,
        gate_args,
    );
    (agent, g, aud, gate)
}

/// [`echo_gate`] exporting its spans to the collector on `collector`.
fn otlp_gate(d: &Path, up: u16, collector: u16) -> (LockedAgent, u16, String, Proc) {
    let otlp = format!("http://127.0.0.1:{collector}");
    echo_gate(d, up, &["--otlp-endpoint", &otlp])
}

/// What the agent's daemon is asked for an [`ECHO_BODY`] call at `aud`, in task `t1` of the
/// victim's trace.
fn echo_ask(aud: &str) -> serde_json::Value {
    serde_json::json!({
        "method": "POST", "url": format!("{aud}mcp"), "with_evidence": true,
        "bd": cada_protocol::mcp::body_digest(ECHO_BODY),
        "mcp": cada_protocol::mcp::parse_body(ECHO_BODY).unwrap().calls(),
        "task": "t1", "traceparent": TP_VICTIM,
    })
}

/// Finding 4: OTLP spans export the full request URL, query included, as `url.full`: a
/// secret a client puts in the query (`?sig=`, `?api_key=`, an OAuth `code`) goes to the
/// collector, a party the issue adds and that otherwise needs no secrets. The semantic
/// conventions ask for `url.full` with credentials and sensitive query values redacted.
#[test]
fn spans_do_not_carry_the_query_string() {
    let dir = TempDir::new("custody-atk-otlp");
    let d = &dir.0;
    let (up, _seen) = upstream();
    let (collector, spans) = upstream();
    let (agent, g, aud, _gate) = otlp_gate(d, up, collector);
    let body = ECHO_BODY;
    let ask = echo_ask(&aud);
    let (st, p) = daemon_pop(&agent.sock, &ask);
    assert_eq!(st, 200, "{p}");
    let h = mcp_headers(&p, body);
    let (st, _, b) = send(g, "POST", "/mcp?sig=SECRET-SIGNATURE-42", &refs(&h), body);
    let t0 = Instant::now();
    let got = loop {
        let got: Vec<String> = spans
            .lock()
            .unwrap()
            .iter()
            .map(whole)
            .filter(|r| r.starts_with("POST /v1/traces"))
            .collect();
        if got
            .iter()
            .any(|r| r.contains("11111111111111111111111111111111"))
        {
            break got.join("\n");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no span (gate answered {st}: {b})"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(got.contains("url.full"), "{got}");
    assert!(
        !got.contains("SECRET-SIGNATURE-42"),
        "the query's secret went to the collector: {got}"
    );
}

/// A collector that accepts, reads a request head, then answers one byte every 2 s for
/// ever (each read of the sender succeeds within its 5 s timeout). Counts the requests.
fn trickling_collector() -> (u16, Arc<Mutex<usize>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let n: Arc<Mutex<usize>> = Arc::default();
    let m = Arc::clone(&n);
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 65536];
                let _ = conn.read(&mut buf);
                *m.lock().unwrap() += 1;
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\n");
                for _ in 0..300 {
                    std::thread::sleep(Duration::from_secs(2));
                    if conn.write_all(b"x").is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, n)
}

/// Finding 5: the OTLP sender's "5 s deadline" is a timeout per read, not per request. A
/// collector (or whatever answers at its address) that sends one byte every few seconds
/// holds the single sender thread for up to 64 KiB of answer (about a day and a half at
/// one byte per 2 s): every later span is dropped meanwhile. Decisions are not delayed
/// (that held); the export is stalled far beyond the documented deadline.
#[test]
fn a_trickling_collector_does_not_hold_the_exporter_past_its_deadline() {
    let dir = TempDir::new("custody-atk-trickle");
    let d = &dir.0;
    let (up, _seen) = upstream();
    let (collector, posts) = trickling_collector();
    let (agent, g, aud, _gate) = otlp_gate(d, up, collector);
    let body = ECHO_BODY;
    let call = || {
        let ask = echo_ask(&aud);
        let (st, p) = daemon_pop(&agent.sock, &ask);
        assert_eq!(st, 200, "{p}");
        let (st, _, b) = send(g, "POST", "/mcp", &refs(&mcp_headers(&p, body)), body);
        assert_eq!(st, 200, "decisions are not delayed: {b}");
    };
    call();
    let wait = |want: usize, secs: u64| {
        let t0 = Instant::now();
        while *posts.lock().unwrap() < want {
            if t0.elapsed() > Duration::from_secs(secs) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    };
    assert!(wait(1, 30), "the first batch was sent");
    call();
    // The first request's deadline is 5 s; allow six times that for the second batch.
    assert!(
        wait(2, 30),
        "the exporter is still reading the first answer, byte by byte"
    );
}

/// Finding 6: records cut from the end of a log are not detectable from the hash chain
/// alone; `audit verify` therefore prints the head (seq and hash) to compare with a copy
/// kept elsewhere. `audit trace`'s text output prints no head: a log whose last records
/// (here the task's refusal) were cut reads "chain intact" with nothing to compare.
#[test]
fn the_trace_prints_each_logs_head_so_a_cut_tail_can_be_found() {
    let rig = VerifyRig::start("custody-atk-tail");
    let url = format!("{API}v1/orders");
    rig.genuine_call(&url, Some(VICTIM), TP_VICTIM);
    // The task's later call, refused (a URL outside the contract's audiences).
    let (st, a) = daemon_pop(
        &rig.agent.sock,
        &serde_json::json!({"method": "POST", "url": url, "with_evidence": true,
            "task": VICTIM, "traceparent": TP_VICTIM}),
    );
    assert_eq!(st, 200, "{a}");
    let (st, r) = pop_verify(
        rig.port,
        &serde_json::json!({"dpop": a["dpop"], "method": "POST", "url": format!("{url}/other"),
            "evidence": a["evidence"], "contract": a["contract"], "body": ""}),
    );
    assert_ne!(st, 200, "{r}");
    let recs = rig.wait_records(2);
    assert_eq!(recs.last().unwrap()["decision"], "reject", "{recs:?}");
    // Cut the last line: the refusal.
    let audit = rig.audit();
    let mut files: Vec<_> = std::fs::read_dir(&audit)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let last = files.last().unwrap();
    let text = std::fs::read_to_string(last).unwrap();
    let cut = text.trim_end_matches('\n');
    let cut = &cut[..=cut.rfind('\n').unwrap()];
    std::fs::write(last, cut).unwrap();
    let (code, out, err) = trace_cmd(&[VICTIM, "--log", audit.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("chain intact"), "{out}");
    let v = Command::new(bin("cada-verify"))
        .args(["audit", "verify", audit.to_str().unwrap()])
        .output()
        .unwrap();
    let v = String::from_utf8_lossy(&v.stdout).into_owned();
    let head = v
        .lines()
        .find_map(|l| l.strip_prefix("head: seq "))
        .unwrap_or_else(|| panic!("{v}"));
    let hash = head.split_whitespace().last().unwrap();
    assert!(
        out.contains(hash),
        "the trace gives no head to compare with a kept copy ({head}):\n{out}"
    );
}

/// Finding 7: `audit trace` keeps every record of the task (up to 1,000,000), each with its
/// clipped fields, and builds the whole text in memory: about 31 KB per record with fields
/// at their clip limits (measured: 20,000 records, 626 MB peak RSS; `--json` 791 MB), so the
/// documented cap allows ~30 GB. Any agent a gate admits can put records with long URLs,
/// 16 actors and 16 calls into any task id. Here 20,000 such records (a 200 MB log) under
/// a 256 MiB address-space limit: the command aborts on a failed allocation.
#[test]
fn a_task_with_many_large_records_is_traced_in_bounded_memory() {
    let dir = TempDir::new("custody-atk-fan");
    let log = dir.0.join("log");
    std::fs::create_dir_all(&log).unwrap();
    {
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(log.join("audit-000001.jsonl")).unwrap());
        for i in 0..20_000u32 {
            let r = serde_json::json!({
                "seq": i + 1, "prev": "0".repeat(64), "time": "2026-12-06T20:00:00Z",
                "kind": "gate", "decision": "accept", "method": "POST",
                "url": format!("https://api.example.com/{i:05}{}", "x".repeat(1990)),
                "did": format!("did:key:z{}", "k".repeat(120)), "jti": "j".repeat(120),
                "contract": "c".repeat(60), "token": "t".repeat(120), "task": "T",
                "tp": TP_VICTIM, "span": "0102030405060708",
                "actors": (0..16).map(|j| format!("did:key:z{j:03}{}", "a".repeat(110))).collect::<Vec<_>>(),
                "dch": (0..16).map(|_| "d".repeat(60)).collect::<Vec<_>>(),
                "rpc": (0..16).map(|_| serde_json::json!({"method": "tools/call", "target": "n".repeat(250)})).collect::<Vec<_>>(),
            });
            writeln!(f, "{r}").unwrap();
        }
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v 262144; exec {} audit trace T --log {}",
            bin("cada-verify").display(),
            log.display()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // Exit 1: this synthetic log's chain does not verify, which is reported, not fatal.
    assert!(
        matches!(out.status.code(), Some(0 | 1)) && text.contains("records in 1 logs"),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Finding 3 in forward-auth mode: the gate answers `/_cada/auth` 200 for a request carrying
/// `CADA_Task`, which the reverse proxy then passes on (the answer can only override the
/// hyphen form). Held: the answer carries only the signed task, and no traceparent when the
/// proof signed none (the nginx recipe then clears the client's).
#[test]
fn forward_auth_refuses_a_lookalike_of_the_task_header() {
    let dir = TempDir::new("custody-atk-fwd");
    let d = &dir.0;
    let (up, _seen) = upstream();
    let g = free_port();
    let aud = format!("http://127.0.0.1:{g}/");
    let agent = LockedAgent::start(d, &[]);
    agent.grant(
        d,
        &["--method", "GET", "--scope", "mcp", "--audience", &aud],
    );
    let policy = agent.write_policy(d, "policy.toml", &[&aud]);
    let _gate = start_gate(
        d,
        "gate",
        g,
        &format!("http://127.0.0.1:{up}"),
        &policy,
        &["--trusted-proxy", "127.0.0.1"],
    );
    let auth = |extra: &[(&str, &str)]| {
        let ask = serde_json::json!({"method": "GET", "url": format!("{aud}items"),
            "with_evidence": true, "task": "signed-task",
            "bd": cada_protocol::mcp::body_digest(b""), "mcp": []});
        let (st, p) = daemon_pop(&agent.sock, &ask);
        assert_eq!(st, 200, "{p}");
        let digest = cada_protocol::mcp::content_digest(b"");
        let mut h: Vec<(&str, &str)> = vec![
            ("DPoP", p["dpop"].as_str().unwrap()),
            ("CADA-Evidence", p["evidence"].as_str().unwrap()),
            ("CADA-Contract", p["contract"].as_str().unwrap()),
            ("X-Original-Method", "GET"),
            ("X-Original-URI", "/items"),
            ("Content-Digest", &digest),
        ];
        h.extend_from_slice(extra);
        send(g, "GET", "/_cada/auth", &h, b"")
    };
    // Held: the answer names the signed task only, and sends no traceparent of the client's.
    let (st, head, b) = auth(&[("CADA-Task", "client-task"), ("traceparent", TP_OTHER)]);
    assert_eq!(st, 200, "{b}");
    assert!(head.contains("\r\ncada-task: signed-task"), "{head}");
    assert!(
        !head.contains("client-task") && !head.contains(OTHER_TRACE),
        "{head}"
    );
    // The finding: a look-alike is admitted.
    let (st, head, b) = auth(&[("CADA_Task", VICTIM)]);
    assert_ne!(
        st, 200,
        "forward auth admitted a request carrying CADA_Task: {head}{b}"
    );
}

/// Held: records moved between the files of a rotated log are found. Each of six calls of
/// the task lands in a file of its own (`--audit-max-bytes 600`); removing a middle file,
/// or swapping two, breaks the chain (`CHAIN BROKEN`, exit 1). Removing the OLDEST file is
/// what retention does: the trace says where the proved chain starts ("from the checkpoint
/// of …") and shows fewer records; removing the NEWEST is finding 6.
#[test]
fn records_moved_between_rotated_files_break_the_trace() {
    let rig = VerifyRig::start_with("custody-atk-rot", &["--audit-max-bytes", "600"]);
    let url = format!("{API}v1/orders");
    for _ in 0..6 {
        rig.genuine_call(&url, Some(VICTIM), TP_VICTIM);
    }
    rig.wait_records(6);
    let audit = rig.audit();
    let files = || audit_files(&audit);
    let all = files();
    assert!(all.len() >= 5, "{all:?}");
    let run = || trace_cmd(&[VICTIM, "--log", audit.to_str().unwrap()]);
    let (code, out, _) = run();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("6 records of the task"), "{out}");
    let keep = dir_copy(&audit);
    // A middle file removed.
    std::fs::remove_file(&all[2]).unwrap();
    let (code, out, _) = run();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("CHAIN BROKEN"), "{out}");
    restore(&keep, &audit);
    // Two middle files swapped.
    let (a, b) = (
        std::fs::read(&all[1]).unwrap(),
        std::fs::read(&all[2]).unwrap(),
    );
    std::fs::write(&all[1], &b).unwrap();
    std::fs::write(&all[2], &a).unwrap();
    let (code, out, _) = run();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("CHAIN BROKEN"), "{out}");
    restore(&keep, &audit);
    // The oldest file removed (retention): said, not hidden.
    std::fs::remove_file(&all[0]).unwrap();
    let (_, out, _) = run();
    assert!(out.contains("from the checkpoint of"), "{out}");
}

/// The files of a directory, by name.
fn dir_copy(dir: &Path) -> Vec<(std::ffi::OsString, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| (e.file_name(), std::fs::read(e.path()).unwrap()))
        .collect()
}

/// Puts back exactly the files of `copy`.
fn restore(copy: &[(std::ffi::OsString, Vec<u8>)], dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        std::fs::remove_file(e.path()).unwrap();
    }
    for (n, b) in copy {
        std::fs::write(dir.join(n), b).unwrap();
    }
}
