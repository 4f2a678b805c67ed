//! Issue 24, budgets of a delegation tree under STS access tokens: a worker that calls with
//! a token minted under its chain is charged to every link of the tree, as when it calls
//! with the chain itself. The token carries the limits the STS verified in each link
//! (`cada_tree`, docs/sts.md), so two siblings' token calls through two gates sharing one
//! Redis cannot add up past their parent's budget, and a token call after the store lost its
//! memory is not given the budget again.
use std::time::Duration;

use cada_e2e::delegation::*;
use cada_e2e::mcp_interop::{refs, rpc_error, send, start_gate};
use cada_e2e::*;
use cada_protocol::mcp;

/// Two gates (A and B) and an STS sharing one Redis, the owner's status list, an MCP
/// upstream, and the owner's contract for the planner: POST, tool echo at both gates and the
/// STS, a budget of 4 over its whole tree, delegation one level deep in indexes 100..200.
struct World {
    fleet: Fleet,
    status: StatusList,
    redis: Option<Proc>,
    rport: u16,
    seen: Seen,
    ga: u16,
    gb: u16,
    sp: u16,
    issuer: String,
    dtc0: String,
    _procs: Vec<Proc>,
}

fn aud(p: u16) -> String {
    format!("http://127.0.0.1:{p}/")
}

impl World {
    fn new(d: &std::path::Path, names: &[&str]) -> World {
        let fleet = Fleet::start(d, "sim", names, &[]);
        let status = StatusList::new(&fleet, "owner");
        let (redis, rport) = start_redis(d);
        let store = format!("redis://127.0.0.1:{rport}");
        let (up_port, seen) = mcp_upstream();
        let (ga, gb, sp) = (free_port(), free_port(), free_port());
        let issuer = format!("http://127.0.0.1:{sp}");
        let audiences = format!(
            "{}{}",
            fleet.audience_toml(&aud(ga), 1, ""),
            fleet.audience_toml(&aud(gb), 1, "")
        );
        let sts_policy = fleet.policy("sts.toml", &audiences);
        let sts = start_sts(
            d,
            "sts",
            sp,
            &issuer,
            &sts_policy,
            &["--replay-store", &store, "--status-list", &status.url],
        );
        let gate_policy = fleet.policy(
            "gates.toml",
            &format!(
                "{audiences}[[issuer]]\nissuer = \"{issuer}\"\njwks_uri = \"{issuer}/jwks\"\n"
            ),
        );
        let up = format!("http://127.0.0.1:{up_port}");
        let extra = [
            "--replay-store",
            store.as_str(),
            "--status-refresh",
            "1",
            "--status-list",
            status.url.as_str(),
        ];
        let a = start_gate(d, "gate-a", ga, &up, &gate_policy, &extra);
        let b = start_gate(d, "gate-b", gb, &up, &gate_policy, &extra);
        let mut args: Vec<String> = [
            "--audience",
            &aud(ga),
            "--audience",
            &aud(gb),
            "--audience",
            &issuer,
            "--method",
            "POST",
            "--tool",
            "echo",
            "--valid-for",
            "1h",
            "--status-list",
            &status.url,
            "--status-index",
            "1",
            "--budget",
            "4",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(may_delegate(1, 100, 200));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let c0 = fleet.grant(
            fleet.agent("planner"),
            "c0.jwt",
            &args,
            Some(&status.current),
        );
        World {
            dtc0: cada_contract::digest_of(&c0),
            fleet,
            status,
            redis: Some(redis),
            rport,
            seen,
            ga,
            gb,
            sp,
            issuer,
            _procs: vec![sts, a, b],
        }
    }

    /// The planner delegates to `name` with a budget of 4 (its enclave signs the exchange
    /// and three calls), which installs the chain; returns it.
    fn delegate(&self, name: &str) -> String {
        let a = self.fleet.agent(name);
        let c = self
            .fleet
            .agent("planner")
            .delegate(&a.did, &self.dtc0, &["--budget", "4"])
            .unwrap();
        a.install(&format!("{name}.chain"), &c, &[&self.status.current])
            .unwrap();
        c
    }

    /// `agent`'s access token for `resource`, exchanged with `chain` at the STS (retried
    /// until the STS holds the owner's list).
    fn token(&self, agent: &Agent, chain: &str, resource: &str) -> String {
        let mut last = serde_json::Value::Null;
        for _ in 0..40 {
            let (st, answer) = sts_exchange(agent, self.sp, &self.issuer, chain, resource, None);
            if st == 200 {
                return answer["access_token"].as_str().unwrap().to_owned();
            }
            last = answer;
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("{} got no token: {last}", agent.name);
    }
}

/// `agent` calls tool echo at the gate on `port` with `token` and a fresh proof of its key
/// naming the call and carrying the token's `ath`: (status, the refusal's code or "").
fn token_call(agent: &Agent, token: &str, port: u16, id: u64) -> (u16, String) {
    let url = format!("{}mcp", aud(port));
    let body = tool_call(id, "echo");
    let parsed = mcp::parse_body(&body).unwrap();
    let ask = serde_json::json!({
        "method": "POST", "url": url, "access_token": token,
        "bd": mcp::body_digest(&body),
        "mcp": serde_json::to_value(parsed.calls()).unwrap(),
    });
    let (st, text) = http(
        &agent.sock,
        "POST",
        "/v1/pop",
        Some(&ask.to_string()),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(st, 200, "{} proof: {text}", agent.name);
    let p: serde_json::Value = serde_json::from_str(&text).unwrap();
    let h = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        (
            "Accept".to_owned(),
            "application/json, text/event-stream".to_owned(),
        ),
        ("DPoP".to_owned(), p["dpop"].as_str().unwrap().to_owned()),
        ("Authorization".to_owned(), format!("DPoP {token}")),
        ("Content-Digest".to_owned(), mcp::content_digest(&body)),
    ];
    let (status, _, answer) = send(port, "POST", "/mcp", &refs(&h), &body);
    if status == 200 {
        (status, String::new())
    } else {
        (status, bracket_code(&rpc_error(&answer)))
    }
}

/// Before the fix, calls admitted by a token minted under a chain were charged to no link
/// (the pipeline charged only proofs carrying the chain): the siblings' six calls all
/// passed a parent that allows four.
#[test]
fn sibling_tokens_cannot_add_up_past_their_parent_across_two_gates() {
    let dir = TempDir::new("deleg-tokens");
    let w = World::new(&dir.0, &["planner", "worker", "helper"]);
    let (worker, helper) = (w.fleet.agent("worker"), w.fleet.agent("helper"));
    let (cw_chain, ch_chain) = (w.delegate("worker"), w.delegate("helper"));
    // The worker's token is for gate A, the helper's for gate B.
    let tw = w.token(worker, &cw_chain, &aud(w.ga));
    let th = w.token(helper, &ch_chain, &aud(w.gb));
    let cw: serde_json::Value = serde_json::from_slice(
        &cada_protocol::b64::decode("at", tw.split('.').nth(1).unwrap(), 16384).unwrap(),
    )
    .unwrap();
    assert_eq!(cw["cada_tree"][0]["dtc"], w.dtc0.as_str(), "{cw}");
    assert_eq!(cw["cada_tree"][0]["budget"], 4, "{cw}");
    assert_eq!(
        cw["cada_tree"][1]["dtc"],
        leaf_dtc(&cw_chain).as_str(),
        "{cw}"
    );
    // Each link's issue time and end, as signed in the chain.
    for (i, link) in links(&cw_chain).into_iter().enumerate() {
        assert_eq!(cw["cada_tree"][i]["iat"], payload(link)["iat"], "{cw}");
        assert_eq!(cw["cada_tree"][i]["until"], payload(link)["exp"], "{cw}");
    }
    let mut accepted = 0;
    let mut codes = Vec::new();
    for (i, (a, t, port)) in [
        (worker, &tw, w.ga),
        (helper, &th, w.gb),
        (worker, &tw, w.ga),
        (helper, &th, w.gb),
        (worker, &tw, w.ga),
        (helper, &th, w.gb),
    ]
    .into_iter()
    .enumerate()
    {
        let (status, code) = token_call(a, t, port, 10 + u64::try_from(i).unwrap());
        if status == 200 {
            accepted += 1;
        } else {
            codes.push(code);
        }
    }
    assert_eq!(
        accepted, 4,
        "the parent's budget of 4 holds for both siblings' tokens: {codes:?}"
    );
    assert_eq!(codes, vec!["delegation.budget"; 2], "{codes:?}");
    assert_eq!(
        w.seen.lock().unwrap().len(),
        4,
        "refused calls never reach the upstream"
    );
}

/// A token call after the shared store lost its memory (Redis restarted without
/// persistence): the tree's counts are gone, and a link issued before the loss is refused
/// `delegation.store_epoch` — by token as by chain — rather than given its budget again.
/// Without the links' `iat` in the token (`cada_tree`), the worker's third call was
/// admitted against counters that started again from zero.
#[test]
fn a_token_call_after_the_store_lost_its_memory_is_not_given_the_budget_again() {
    let dir = TempDir::new("deleg-tokens-epoch");
    let d = &dir.0;
    let mut w = World::new(d, &["planner", "worker", "probe"]);
    let worker = w.fleet.agent("worker");
    let chain = w.delegate("worker");
    let token = w.token(worker, &chain, &aud(w.ga));
    for id in 0..2 {
        assert_eq!(token_call(worker, &token, w.ga, id), (200, String::new()));
    }
    // A bystander outside the tree (its own owner contract, which may not delegate).
    let probe = w.fleet.agent("probe");
    w.fleet.grant(
        probe,
        "probe.jwt",
        &[
            "--audience",
            &aud(w.ga),
            "--method",
            "POST",
            "--tool",
            "echo",
            "--valid-for",
            "1h",
            "--status-list",
            &w.status.url,
            "--status-index",
            "2",
        ],
        Some(&w.status.current),
    );
    // Redis restarts without persistence; the probe waits for the gate to reach it and for
    // the epoch rule to pass its fresh proofs.
    drop(w.redis.take());
    std::thread::sleep(Duration::from_millis(300));
    let _redis2 = start_redis_on(d, w.rport);
    let mut ok = false;
    for _ in 0..80 {
        if gate_call(probe, w.ga, "echo", None, None).unwrap().status == 200 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(ok, "the gate never reached the restarted Redis");
    let seen = w.seen.lock().unwrap().len();
    let (status, code) = token_call(worker, &token, w.ga, 9);
    assert_ne!(status, 200, "a token call after the loss was admitted");
    assert_eq!(
        code, "delegation.store_epoch",
        "a token call after the loss"
    );
    assert_eq!(
        w.seen.lock().unwrap().len(),
        seen,
        "it never reached the upstream"
    );
}
