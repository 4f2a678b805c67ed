//! Issue 24, adversarial review 2 (docs/reviews/delegation-2.md): the fleet tree counters,
//! the STS under a chain and the chain of custody, attacked with the real binaries on `sim`
//! over loopback (real `redis-server`). Each test is a reproduced finding, ignored until it
//! is fixed: it fails on the code reviewed and passes once the finding is fixed (one
//! regression test of a defect fixed during the review is not ignored).
use std::time::Duration;

use cada_e2e::delegation::*;
use cada_e2e::mcp_interop::start_gate;
use cada_e2e::*;

/// The owner's contract for `planner`: POST at each of `audiences`, tool echo, one hour,
/// index 1 of `status`, delegation one level in 100..200, plus `extra` (also used by
/// `delegation_attack3`).
pub(crate) fn root_contract(
    fleet: &Fleet,
    status: &StatusList,
    audiences: &[&str],
    extra: &[&str],
) -> String {
    let args = contract_flags(audiences, status, "1", extra, 1, (100, 200));
    fleet.grant(
        fleet.agent("planner"),
        "c0.jwt",
        &args,
        Some(&status.current),
    )
}

/// `planner` delegates to `to` under `c0` with `args`, `to` installs the chain (also used
/// by `delegation_attack3`).
pub(crate) fn delegate(
    fleet: &Fleet,
    status: &StatusList,
    c0: &str,
    to: &str,
    args: &[&str],
) -> String {
    let to = fleet.agent(to);
    let c = fleet
        .agent("planner")
        .delegate(&to.did, &cada_contract::digest_of(c0), args)
        .unwrap_or_else(|e| panic!("planner delegates to {}: {e}", to.name));
    to.install(&format!("{}.chain", to.name), &c, &[&status.current])
        .unwrap_or_else(|e| panic!("{} installs: {e}", to.name));
    c
}

/// The probe's own contract (a bystander that shows when the gate admits fresh calls):
/// POST at `gate_aud`, tool echo, one hour, index 2 of `status` (also used by
/// `delegation_attack3`).
pub(crate) fn grant_probe(fleet: &Fleet, status: &StatusList, gate_aud: &str) {
    fleet.grant(
        fleet.agent("probe"),
        "probe.jwt",
        &[
            "--audience",
            gate_aud,
            "--method",
            "POST",
            "--tool",
            "echo",
            "--valid-for",
            "1h",
            "--status-list",
            &status.url,
            "--status-index",
            "2",
        ],
        Some(&status.current),
    );
}

fn start_gates_policy(
    fleet: &Fleet,
    name: &str,
    auds: &[String],
    head: &str,
) -> std::path::PathBuf {
    let body: String = auds.iter().map(|a| fleet.audience_toml(a, 1, "")).collect();
    fleet.policy(name, &format!("{head}{body}"))
}

/// A gate on a free port in front of the upstream on `up_port`, its policy the gate's own
/// prefix (depth 1), reading `status` every second: (the gate, its port, its prefix).
fn start_status_gate(
    d: &std::path::Path,
    fleet: &Fleet,
    status: &StatusList,
    up_port: u16,
) -> (Proc, u16, String) {
    let g_port = free_port();
    let gate_aud = format!("http://127.0.0.1:{g_port}/");
    let policy = start_gates_policy(fleet, "policy.toml", std::slice::from_ref(&gate_aud), "");
    let gate = status_gate(d, "gate", g_port, up_port, &policy, status, &[]);
    (gate, g_port, gate_aud)
}

/// A verifier whose policy is `https://api.example.com/` (depth 1), reading `status` every
/// second, with `extra` flags: (the verifier, its port).
fn start_api_verifier(
    d: &std::path::Path,
    fleet: &Fleet,
    status: &StatusList,
    extra: &[&str],
) -> (Proc, u16) {
    let policy = start_gates_policy(
        fleet,
        "policy.toml",
        &["https://api.example.com/".to_owned()],
        "",
    );
    status_verifier(d, "verifier", &policy, status, extra)
}

/// What the upstream was handed for a call answered `status`: if the gate admitted it
/// (200), `check` is given the head of the first request the upstream saw; otherwise the
/// upstream must have seen none.
fn if_forwarded(status: u16, seen: &Seen, check: impl FnOnce(&str)) {
    let heads: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(h, _)| h.clone())
        .collect();
    if status == 200 {
        check(&heads[0]);
    } else {
        assert!(heads.is_empty(), "{heads:?}");
    }
}

/// Held (fixed in 0640941 while this review ran; a regression test over the real STS and
/// gate sharing Redis): the STS mints no token under a chain one of whose upper links the
/// fleet has suspended. It used to read only the leaf's suspension (and only when the
/// leaf had behaviour limits); a CADA verifier would refuse such a token later, any other
/// RFC 9068 resource server would not.
#[test]
fn the_sts_mints_no_token_under_a_suspended_upper_link() {
    let dir = TempDir::new("deleg2-sts-suspended");
    let d = &dir.0;
    let fleet = Fleet::start(d, "sim", &["planner", "worker"], &[]);
    let status = StatusList::new(&fleet, "owner");
    let (_redis, rport) = start_redis(d);
    let store = format!("redis://127.0.0.1:{rport}");
    let (up_port, seen) = mcp_upstream();
    let (g_port, sts_port) = (free_port(), free_port());
    let gate_aud = format!("http://127.0.0.1:{g_port}/");
    let issuer = format!("http://127.0.0.1:{sts_port}");
    let api = "https://api.example.com/v1";
    let policy = start_gates_policy(
        &fleet,
        "policy.toml",
        &[gate_aud.clone(), "https://api.example.com/".to_owned()],
        "",
    );
    let _gate = status_gate(
        d,
        "gate",
        g_port,
        up_port,
        &policy,
        &status,
        &["--replay-store", store.as_str()],
    );
    let _sts = start_sts(
        d,
        "sts",
        sts_port,
        &issuer,
        &policy,
        &[
            "--replay-store",
            store.as_str(),
            "--status-list",
            status.url.as_str(),
        ],
    );
    // The planner's contract may delegate and has a requests limit of 2 a minute; the
    // worker's delegation keeps it (a child must).
    let c0 = root_contract(
        &fleet,
        &status,
        &[&gate_aud, api, &issuer],
        &["--max-requests", "2/1m"],
    );
    let d1 = delegate(&fleet, &status, &c0, "worker", &[]);
    let (planner, worker) = (fleet.agent("planner"), fleet.agent("worker"));

    // Before: the worker gets a token; the planner presenting the worker's chain does not
    // (the leaf is not its key).
    let (st, tok) = sts_exchange(worker, sts_port, &issuer, &d1, api, None);
    assert_eq!(st, 200, "a token before any suspension: {tok}");
    let (st, tok) = sts_exchange(planner, sts_port, &issuer, &d1, api, None);
    assert_ne!(
        st, 200,
        "the planner got a token under its worker's chain: {tok}"
    );

    // The planner's own calls cross the root's limit: the root is suspended fleet-wide.
    let mut last = None;
    for _ in 0..3 {
        last = Some(gate_call(planner, g_port, "echo", None, None).unwrap());
    }
    let last = last.unwrap();
    assert_eq!(
        last.code(),
        "contract.not_permitted.behaviour",
        "the third call crosses 2/1m: {}",
        last.body
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
    // Every call below the suspended root is refused at the gate (held).
    let w = gate_call(worker, g_port, "echo", None, None).unwrap();
    assert_eq!(w.code(), "contract.not_permitted.behaviour", "{}", w.body);

    // The STS, sharing the fleet store, must not mint a token under the suspended root.
    let (st, tok) = sts_exchange(worker, sts_port, &issuer, &d1, api, None);
    assert_eq!(
        (st, tok["error"].as_str().unwrap_or_default()),
        (400, "invalid_grant"),
        "a token minted under a chain whose root the fleet suspended: {tok}"
    );
}

/// Finding 1. A Redis restart without persistence (the store losing its memory, which the
/// epoch sentinel detects for replays and single-use grants) gives every link of every
/// delegation tree its whole budget again: siblings spend past their parent's budget.
#[test]
fn a_store_that_lost_its_memory_does_not_refill_a_parents_budget() {
    let dir = TempDir::new("deleg2-budget-epoch");
    let d = &dir.0;
    let fleet = Fleet::start(d, "sim", &["planner", "worker", "helper", "probe"], &[]);
    let status = StatusList::new(&fleet, "owner");
    let (redis, rport) = start_redis(d);
    let mut redis = Some(redis);
    let store = format!("redis://127.0.0.1:{rport}");
    let (up_port, seen) = mcp_upstream();
    let g_port = free_port();
    let gate_aud = format!("http://127.0.0.1:{g_port}/");
    // A short clock skew, so that proofs signed after the restart pass the epoch rule soon.
    let policy = start_gates_policy(
        &fleet,
        "policy.toml",
        std::slice::from_ref(&gate_aud),
        "[token]\nskew_secs = 2\n",
    );
    let _gate = status_gate(
        d,
        "gate",
        g_port,
        up_port,
        &policy,
        &status,
        &["--replay-store", store.as_str()],
    );
    // The parent allows 4 calls in its life; each sibling's delegation 4 (≤ its parent's).
    let c0 = root_contract(&fleet, &status, &[&gate_aud], &["--budget", "4"]);
    delegate(&fleet, &status, &c0, "worker", &["--budget", "4"]);
    delegate(&fleet, &status, &c0, "helper", &["--budget", "4"]);
    grant_probe(&fleet, &status, &gate_aud);
    let (worker, helper) = (fleet.agent("worker"), fleet.agent("helper"));
    for _ in 0..4 {
        let r = gate_call(worker, g_port, "echo", None, None).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = gate_call(helper, g_port, "echo", None, None).unwrap();
    assert_eq!(
        r.code(),
        "delegation.budget",
        "the parent's 4 are used: {}",
        r.body
    );
    assert_eq!(seen.lock().unwrap().len(), 4);

    // Redis restarts without persistence.
    drop(redis.take());
    std::thread::sleep(Duration::from_millis(300));
    let _redis2 = start_redis_on(d, rport);
    std::thread::sleep(Duration::from_secs(3));
    // A bystander outside the tree (its own owner contract, which may not delegate) waits
    // for the gate to reach the new Redis and for the epoch rule to pass its proofs.
    let probe = fleet.agent("probe");
    let mut ok = false;
    for _ in 0..80 {
        if gate_call(probe, g_port, "echo", None, None).unwrap().status == 200 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(ok, "the gate never reached the restarted Redis");
    let seen_before = seen.lock().unwrap().len();
    // Refused: the budget is used up, or (the fix) the store cannot tell how much of it was
    // used, since the parent was issued before the loss (`delegation.store_epoch`). (The
    // worker's own enclave refuses to sign past its own budget of 4.)
    let r = gate_call(helper, g_port, "echo", None, None).unwrap();
    assert!(
        ["delegation.budget", "delegation.store_epoch"].contains(&r.code().as_str()),
        "after the store lost its memory a sibling spent past its parent's budget of 4 \
         (upstream saw {} calls): {} {}",
        seen.lock().unwrap().len() - seen_before + 4,
        r.status,
        r.body
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        seen_before,
        "no call reached the upstream"
    );
}

/// Finding 3. The gate strips a client's `CADA-Task` (only the task the proof signed is
/// passed on) and every `_` look-alike of the identity headers, but not `CADA_Task`: an
/// upstream that reads `_` as `-` (CGI, WSGI, PHP, nginx with underscores_in_headers) is
/// handed a task id the client made up, beside or instead of the signed one.
#[test]
fn a_client_cada_task_look_alike_never_reaches_the_upstream() {
    let dir = TempDir::new("deleg2-task-lookalike");
    let d = &dir.0;
    let fleet = Fleet::start(d, "sim", &["planner"], &[]);
    let status = StatusList::new(&fleet, "owner");
    let (up_port, seen) = mcp_upstream();
    let (_gate, g_port, gate_aud) = start_status_gate(d, &fleet, &status, up_port);
    root_contract(&fleet, &status, &[&gate_aud], &[]);
    let planner = fleet.agent("planner");
    let url = format!("{gate_aud}mcp");
    let body = tool_call(7, "echo");
    let p = planner
        .proof("POST", &url, Some(&body), Some("T-signed"), None)
        .unwrap();
    let r = gate_send(
        g_port,
        &p,
        &body,
        &[("CADA_Task", "T-forged"), ("cada-task", "T-forged-too")],
    );
    if_forwarded(r.status, &seen, |head| {
        assert!(head.contains("cada-task: t-signed"), "{head}");
        assert!(
            !head.contains("forged"),
            "a task id the client made up reached the upstream: {head}"
        );
    });
}

/// Finding 2. The owner's reinstatement of a suspended link, on Redis, deletes the link's
/// whole counter hash — its behaviour windows and also its budget (`b`) and second: the
/// tree gets the link's whole budget again. In memory the budget is kept (only the windows
/// and the rate are forgotten), so one fleet's budget depends on its store. A budget is a
/// cap for the link's life; lifting a suspension for crossing a requests-per-window limit
/// is not a grant of more calls.
#[test]
fn reinstating_a_suspended_link_does_not_refill_its_budget() {
    const API: &str = "https://api.example.com/v1";
    const URL: &str = "https://api.example.com/v1/orders";
    let dir = TempDir::new("deleg2-reinstate-budget");
    let d = &dir.0;
    let fleet = Fleet::start(d, "sim", &["planner", "worker"], &[]);
    let status = StatusList::new(&fleet, "owner");
    let (_redis, rport) = start_redis(d);
    let store = format!("redis://127.0.0.1:{rport}");
    let (_verifier, v_port) = start_api_verifier(d, &fleet, &status, &["--replay-store", &store]);
    // The root: 4 calls in its life (its own and its delegation's), 3 requests a minute.
    let c0 = root_contract(
        &fleet,
        &status,
        &[API],
        &["--budget", "4", "--max-requests", "3/1m"],
    );
    let d1 = delegate(&fleet, &status, &c0, "worker", &["--budget", "4"]);
    let (planner, worker) = (fleet.agent("planner"), fleet.agent("worker"));
    let call = |a: &Agent, chain: &str| {
        let p = a.proof("POST", URL, None, None, None).unwrap();
        let (st, r) = verify_at(v_port, &p, "POST", URL, Some(chain));
        (st, verifier_code(&r))
    };
    for _ in 0..3 {
        assert_eq!(call(planner, &c0).0, 200);
    }
    // The fourth call of the minute under the root crosses 3/1m: refused, root suspended;
    // it is charged (refused after its charge), so the root's 4 calls are all used.
    let (st, code) = call(worker, &d1);
    assert_eq!(
        (st, code.as_str()),
        (401, "contract.not_permitted.behaviour")
    );

    // The owner reinstates the root.
    let dtc = cada_contract::digest_of(&c0);
    let (st, _, b) = http_tcp(
        v_port,
        "GET",
        &format!("/v1/contracts/{dtc}/suspension"),
        "application/json",
        b"",
    )
    .unwrap();
    assert_eq!(st, 200, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    let sid = v["suspension"]["id"].as_str().unwrap().to_owned();
    let r = owner_to(
        d,
        "reinstate.jwt",
        &[
            "reinstate",
            "--key",
            &fleet.owner_key,
            "--contract",
            d.join("c0.jwt").to_str().unwrap(),
            "--suspension",
            &sid,
        ],
    );
    let body = serde_json::json!({ "reinstatement": r });
    let (st, _, b) = http_tcp(
        v_port,
        "POST",
        "/v1/contracts/reinstate",
        "application/json",
        body.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(st, 200, "{b}");

    // The root's budget of 4 is used (by the crossing call, charged, or at the latest by the
    // next one): the worker's second call after the reinstatement is refused past it.
    let first = call(worker, &d1);
    let (st, code) = call(worker, &d1);
    assert_eq!(
        (st, code.as_str()),
        (401, "delegation.budget"),
        "the owner lifted a suspension and the tree got its budget again (first call after \
         it: {first:?})"
    );
}

/// Finding 4. A call refused by the tree's own flow control (`delegation.rate`: siblings
/// together past their parent's rate; `delegation.budget` likewise) is counted as a refusal
/// in every link's refusals window, the root's included: two honest siblings, each within
/// its own delegation, that happen to call in the same second a few times suspend the
/// owner's contract fleet-wide — every agent of the tree stops until the owner reinstates
/// it. Under an owner's contract alone the same flow control is the enclave's (a signature
/// refused before any request), never a refusal counted at the verifiers.
#[test]
fn siblings_contending_for_their_parents_rate_do_not_suspend_the_tree() {
    const API: &str = "https://api.example.com/v1";
    const URL: &str = "https://api.example.com/v1/orders";
    let dir = TempDir::new("deleg2-rate-refusals");
    let d = &dir.0;
    let fleet = Fleet::start(d, "sim", &["planner", "worker", "helper"], &[]);
    let status = StatusList::new(&fleet, "owner");
    let (_verifier, v_port) = start_api_verifier(d, &fleet, &status, &[]);
    // The root: 1 call a second for the whole tree, at most 2 refusals a minute.
    let c0 = root_contract(
        &fleet,
        &status,
        &[API],
        &["--rate", "1", "--max-refusals", "2/1m"],
    );
    let dw = delegate(&fleet, &status, &c0, "worker", &["--rate", "1"]);
    let dh = delegate(&fleet, &status, &c0, "helper", &["--rate", "1"]);
    let (worker, helper) = (fleet.agent("worker"), fleet.agent("helper"));
    let mut rate_refusals = 0;
    let mut codes = Vec::new();
    for _ in 0..10 {
        if rate_refusals == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1100));
        let pw = worker.proof("POST", URL, None, None, None).unwrap();
        let ph = helper.proof("POST", URL, None, None, None).unwrap();
        let (_, rw) = verify_at(v_port, &pw, "POST", URL, Some(&dw));
        let (_, rh) = verify_at(v_port, &ph, "POST", URL, Some(&dh));
        for r in [rw, rh] {
            let c = verifier_code(&r);
            if c == "delegation.rate" {
                rate_refusals += 1;
            }
            codes.push(c);
        }
    }
    assert_eq!(
        rate_refusals, 3,
        "the siblings never met in one second: {codes:?}"
    );
    let dtc = cada_contract::digest_of(&c0);
    let (st, _, b) = http_tcp(
        v_port,
        "GET",
        &format!("/v1/contracts/{dtc}/suspension"),
        "application/json",
        b"",
    )
    .unwrap();
    assert_eq!(
        st, 404,
        "the owner's contract was suspended fleet-wide by its tree's own rate limiting \
         (calls: {codes:?}): {b}"
    );
}

/// Held: siblings firing every call they may at once, through two gates on one Redis
/// Cluster, never get past their parent's budget (one script on the root's slot checks and
/// charges every link: no race between check and charge, no CROSSSLOT).
#[test]
fn concurrent_siblings_on_a_cluster_stop_at_their_parents_budget() {
    let dir = TempDir::new("deleg2-cluster-race");
    let d = &dir.0;
    let cluster = cada_e2e::redis_cluster::Cluster::start(&d.join("cluster"));
    let fleet = Fleet::start(d, "sim", &["planner", "worker", "helper"], &[]);
    let status = StatusList::new(&fleet, "owner");
    let store = cluster.url();
    let (up_port, seen) = mcp_upstream();
    let (ga, gb) = (free_port(), free_port());
    let aud = |p: u16| format!("http://127.0.0.1:{p}/");
    let policy = start_gates_policy(&fleet, "policy.toml", &[aud(ga), aud(gb)], "");
    let up = format!("http://127.0.0.1:{up_port}");
    let extra = [
        "--replay-store",
        store.as_str(),
        "--status-refresh",
        "1",
        "--status-list",
        status.url.as_str(),
    ];
    let _a = start_gate(d, "gate-a", ga, &up, &policy, &extra);
    let _b = start_gate(d, "gate-b", gb, &up, &policy, &extra);
    let c0 = root_contract(&fleet, &status, &[&aud(ga), &aud(gb)], &["--budget", "6"]);
    delegate(&fleet, &status, &c0, "worker", &["--budget", "6"]);
    delegate(&fleet, &status, &c0, "helper", &["--budget", "6"]);
    // Each sibling signs all six of its calls first (three per gate), then all twelve go
    // at once.
    let mut sends = Vec::new();
    for name in ["worker", "helper"] {
        let a = fleet.agent(name);
        for i in 0..6u64 {
            let port = if i % 2 == 0 { ga } else { gb };
            let body = tool_call(i, "echo");
            let p = a
                .proof(
                    "POST",
                    &format!("{}mcp", aud(port)),
                    Some(&body),
                    None,
                    None,
                )
                .unwrap();
            sends.push((port, p, body));
        }
    }
    let handles: Vec<_> = sends
        .into_iter()
        .map(|(port, p, body)| {
            std::thread::spawn(move || {
                let r = gate_send(port, &p, &body, &[]);
                (r.status, r.code())
            })
        })
        .collect();
    let got: Vec<(u16, String)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let accepted = got.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(accepted, 6, "{got:?}");
    assert!(
        got.iter()
            .all(|(s, c)| *s == 200 || c == "delegation.budget"),
        "{got:?}"
    );
    assert_eq!(seen.lock().unwrap().len(), 6);
}

/// Held: a client cannot hand the upstream actors of its own: `CADA-Agent-Claims` (which
/// now carries `actors` and `chain`), `CADA-Agent` and their `_` forms sent by the client
/// never reach it beside the gate's own, for a worker's call under a chain.
#[test]
fn a_client_never_injects_actors_into_the_upstream() {
    let dir = TempDir::new("deleg2-actors-injection");
    let d = &dir.0;
    let fleet = Fleet::start(d, "sim", &["planner", "worker"], &[]);
    let status = StatusList::new(&fleet, "owner");
    let (up_port, seen) = mcp_upstream();
    let (_gate, g_port, gate_aud) = start_status_gate(d, &fleet, &status, up_port);
    let c0 = root_contract(&fleet, &status, &[&gate_aud], &[]);
    delegate(&fleet, &status, &c0, "worker", &[]);
    let worker = fleet.agent("worker");
    let url = format!("{gate_aud}mcp");
    let body = tool_call(7, "echo");
    let p = worker.proof("POST", &url, Some(&body), None, None).unwrap();
    let forged = cada_protocol::b64::encode(
        serde_json::json!({"actors": ["did:key:zForgedOwner", "did:key:zForged"],
            "chain": ["forged"], "did": "did:key:zForged"})
        .to_string()
        .as_bytes(),
    );
    let r = gate_send(
        g_port,
        &p,
        &body,
        &[
            ("CADA-Agent-Claims", forged.as_str()),
            ("CADA_Agent_Claims", forged.as_str()),
            ("CADA-Agent", "did:key:zForged"),
            ("cada_agent", "did:key:zForged"),
        ],
    );
    if_forwarded(r.status, &seen, |head| {
        let forged_lc = forged.to_ascii_lowercase();
        assert!(
            !head.contains("zforged") && !head.contains(&forged_lc),
            "{head}"
        );
        assert_eq!(head.matches("cada-agent-claims:").count(), 1, "{head}");
        assert!(!head.contains("cada_agent"), "{head}");
    });
}

/// Finding 5. The owner cannot reinstate a suspended delegation with the file it has:
/// `cada-owner reinstate --contract worker.chain` (the chain `cada-parent delegate` prints,
/// what docs/delegation.md installs) reads the whole chain as one contract, so the
/// reinstatement names a digest that is no contract (`--dtc <leaf digest>` works): the
/// verifier answers that the contract is not suspended, and the worker stays suspended.
#[test]
fn the_owner_reinstates_a_suspended_delegation_from_its_chain_file() {
    const API: &str = "https://api.example.com/v1";
    const URL: &str = "https://api.example.com/v1/orders";
    let dir = TempDir::new("deleg2-reinstate-chain");
    let d = &dir.0;
    let fleet = Fleet::start(d, "sim", &["planner", "worker"], &[]);
    let status = StatusList::new(&fleet, "owner");
    let (_verifier, v_port) = start_api_verifier(d, &fleet, &status, &[]);
    let c0 = root_contract(&fleet, &status, &[API], &["--max-requests", "10/1m"]);
    let narrow = d.join("narrow.json");
    std::fs::write(
        &narrow,
        r#"{"limits": {"requests": {"max": 2, "windowSeconds": 60}}}"#,
    )
    .unwrap();
    let d1 = delegate(
        &fleet,
        &status,
        &c0,
        "worker",
        &["--grant", narrow.to_str().unwrap()],
    );
    let worker = fleet.agent("worker");
    let call = || {
        let p = worker.proof("POST", URL, None, None, None).unwrap();
        let (st, r) = verify_at(v_port, &p, "POST", URL, Some(&d1));
        (st, verifier_code(&r))
    };
    assert_eq!(call().0, 200);
    assert_eq!(call().0, 200);
    assert_eq!(
        call(),
        (401, "contract.not_permitted.behaviour".to_owned()),
        "the third call crosses the delegation's 2/1m"
    );
    let leaf = leaf_dtc(&d1);
    let (st, _, b) = http_tcp(
        v_port,
        "GET",
        &format!("/v1/contracts/{leaf}/suspension"),
        "application/json",
        b"",
    )
    .unwrap();
    assert_eq!(st, 200, "the delegation is suspended: {b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    let sid = v["suspension"]["id"].as_str().unwrap().to_owned();
    // The owner reinstates it from the chain file the worker's host installed.
    let (code, out, err) = owner(&[
        "reinstate",
        "--key",
        &fleet.owner_key,
        "--contract",
        worker.dir.join("worker.chain").to_str().unwrap(),
        "--suspension",
        &sid,
    ]);
    assert_eq!(
        code, 0,
        "cada-owner reinstate --contract worker.chain: {err}"
    );
    let body = serde_json::json!({ "reinstatement": out.trim() });
    let (st, _, b) = http_tcp(
        v_port,
        "POST",
        "/v1/contracts/reinstate",
        "application/json",
        body.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(st, 200, "the reinstatement made from the chain file: {b}");
}
