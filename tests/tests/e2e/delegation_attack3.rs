//! Issue 24, adversarial review 3 (docs/reviews/delegation-3.md): the fixes of reviews
//! delegation-1 and delegation-2 (the tree store epoch, `cada_tree` in tokens, refusals
//! counted once per proof, the chain header's room) attacked with the real binaries on
//! `sim` over loopback (real `redis-server`). Each test is a reproduced finding, ignored
//! until it is fixed: it fails on the code reviewed and passes once the finding is fixed.
use std::time::Duration;

use cada_e2e::delegation::*;
use cada_e2e::mcp_interop::start_gate;
use cada_e2e::*;

use crate::delegation_attack2::{delegate, grant_probe, root_contract};

/// Calls through the gate on `port` as `probe` until one is admitted (the gate reached the
/// store and the epoch rule passes fresh proofs).
fn wait_admitted(probe: &Agent, port: u16) {
    for _ in 0..80 {
        if gate_call(probe, port, "echo", None, None)
            .map(|r| r.status == 200)
            .unwrap_or(false)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("the gate on {port} never admitted the bystander");
}

/// Finding 1. The tree store epoch lives in each process's memory: a process's baseline is
/// the sentinel value it meets first, so a gate that starts AFTER another instance found
/// the loss (a restart, a rolling deploy, a new instance) reads the rewritten sentinel as
/// "the store as it was" and charges the pre-loss links from zero: the parent's budget is
/// given again, although the first gate refuses the same call `delegation.store_epoch`.
#[test]
fn a_gate_started_after_the_loss_does_not_refill_a_parents_budget() {
    let dir = TempDir::new("deleg3-epoch-restart");
    let d = &dir.0;
    let fleet = Fleet::start(d, "sim", &["planner", "worker", "helper", "probe"], &[]);
    let status = StatusList::new(&fleet, "owner");
    let (redis, rport) = start_redis(d);
    let mut redis = Some(redis);
    let store = format!("redis://127.0.0.1:{rport}");
    let (up_port, seen) = mcp_upstream();
    let g_port = free_port();
    let gate_aud = format!("http://127.0.0.1:{g_port}/");
    let policy = fleet.policy(
        "policy.toml",
        &format!(
            "[token]\nskew_secs = 2\n{}",
            fleet.audience_toml(&gate_aud, 1, "")
        ),
    );
    let upstream = format!("http://127.0.0.1:{up_port}");
    let gate_args = [
        "--replay-store",
        store.as_str(),
        "--status-refresh",
        "1",
        "--status-list",
        status.url.as_str(),
    ];
    let mut gate = Some(start_gate(
        d, "gate-a", g_port, &upstream, &policy, &gate_args,
    ));
    // The parent allows 4 calls in its life; each sibling's delegation 4.
    let c0 = root_contract(&fleet, &status, &[&gate_aud], &["--budget", "4"]);
    delegate(&fleet, &status, &c0, "worker", &["--budget", "4"]);
    delegate(&fleet, &status, &c0, "helper", &["--budget", "4"]);
    grant_probe(&fleet, &status, &gate_aud);
    let (worker, helper, probe) = (
        fleet.agent("worker"),
        fleet.agent("helper"),
        fleet.agent("probe"),
    );
    for _ in 0..4 {
        let r = gate_call(worker, g_port, "echo", None, None).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = gate_call(helper, g_port, "echo", None, None).unwrap();
    assert_eq!(r.code(), "delegation.budget", "{}", r.body);

    // Redis restarts without persistence; gate A finds the loss (the fix of review 2).
    drop(redis.take());
    std::thread::sleep(Duration::from_millis(300));
    let _redis2 = start_redis_on(d, rport);
    std::thread::sleep(Duration::from_secs(3));
    wait_admitted(probe, g_port);
    let r = gate_call(helper, g_port, "echo", None, None).unwrap();
    assert_eq!(
        r.code(),
        "delegation.store_epoch",
        "gate A, which met the store before the loss: {} {}",
        r.status,
        r.body
    );

    // Gate A restarts (same policy, same store, same port): it meets the store afresh.
    drop(gate.take());
    std::thread::sleep(Duration::from_millis(300));
    let _gate_b = start_gate(d, "gate-b", g_port, &upstream, &policy, &gate_args);
    wait_admitted(probe, g_port);
    let seen_before = seen.lock().unwrap().len();
    let r = gate_call(helper, g_port, "echo", None, None).unwrap();
    assert!(
        ["delegation.budget", "delegation.store_epoch"].contains(&r.code().as_str()),
        "a gate started after the loss gave the parent's budget of 4 (all used before the \
         loss) again: {} {}",
        r.status,
        r.body
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        seen_before,
        "no call reached the upstream"
    );
}

/// `agent` calls tool echo at the gate on `port` WITHOUT `CADA-Contract` (the gate holds the
/// chain from an earlier request: "sent once").
fn call_without_chain(agent: &Agent, port: u16) -> GateAnswer {
    let url = format!("http://127.0.0.1:{port}/mcp");
    let body = tool_call(7, "echo");
    let p = agent.proof("POST", &url, Some(&body), None, None).unwrap();
    let mut h = cada_e2e::mcp_interop::mcp_headers(&p, &body);
    h.retain(|(k, _)| !k.eq_ignore_ascii_case("cada-contract"));
    let (status, head, body) = cada_e2e::mcp_interop::send(
        port,
        "POST",
        "/mcp",
        &cada_e2e::mcp_interop::refs(&h),
        &body,
    );
    GateAnswer { status, head, body }
}

/// Finding 2. Once the store has lost its memory (any time in the gate's life), a tree
/// issued AFTER the loss is refused `delegation.store_epoch` ("iat 0 s") on every request
/// that does not carry the chain: the gate decides such a request on the chain it cached
/// (the contract is "sent once": `cada-parent proxy` sends evidence and contract on first
/// contact only, docs/gate.md), but the epoch rule reads the links' issue times from the
/// request's `CADA-Contract` header alone, finds none and takes every link as issued
/// before the loss. The refusal tells the agent to ask for a new delegation, which is
/// refused the same way.
#[test]
fn a_tree_issued_after_the_loss_is_admitted_without_its_chain_header() {
    let dir = TempDir::new("deleg3-once");
    let d = &dir.0;
    let fleet = Fleet::start(d, "sim", &["planner", "worker", "probe"], &[]);
    let status = StatusList::new(&fleet, "owner");
    let (redis, rport) = start_redis(d);
    let mut redis = Some(redis);
    let store = format!("redis://127.0.0.1:{rport}");
    let (up_port, _seen) = mcp_upstream();
    let g_port = free_port();
    let gate_aud = format!("http://127.0.0.1:{g_port}/");
    let policy = fleet.policy(
        "policy.toml",
        &format!(
            "[token]\nskew_secs = 2\n{}",
            fleet.audience_toml(&gate_aud, 1, "")
        ),
    );
    let _gate = start_gate(
        d,
        "gate",
        g_port,
        &format!("http://127.0.0.1:{up_port}"),
        &policy,
        &[
            "--replay-store",
            store.as_str(),
            "--status-refresh",
            "1",
            "--status-list",
            status.url.as_str(),
        ],
    );
    grant_probe(&fleet, &status, &gate_aud);
    let probe = fleet.agent("probe");
    wait_admitted(probe, g_port);
    drop(redis.take());
    std::thread::sleep(Duration::from_millis(300));
    let _redis2 = start_redis_on(d, rport);
    std::thread::sleep(Duration::from_secs(3));
    wait_admitted(probe, g_port);
    std::thread::sleep(Duration::from_secs(3));
    // A tree issued after the loss.
    let c0 = root_contract(&fleet, &status, &[&gate_aud], &["--budget", "10"]);
    delegate(&fleet, &status, &c0, "worker", &["--budget", "10"]);
    let worker = fleet.agent("worker");
    // First contact carries the chain: admitted (its links were issued after the loss).
    let r = gate_call(worker, g_port, "echo", None, None).unwrap();
    assert_eq!(r.status, 200, "with the chain: {}", r.body);
    // An owner contract alone is admitted without its header (the gate cached it)...
    let r = call_without_chain(probe, g_port);
    assert_eq!(
        r.status, 200,
        "the bystander without its contract: {}",
        r.body
    );
    // ...and so must be the fresh chain.
    let r = call_without_chain(worker, g_port);
    assert_eq!(
        r.status,
        200,
        "a chain issued after the loss, cached by the gate, refused on a request without the \
         header: {} {}",
        r.code(),
        r.body
    );
}

/// `compact` with its ES256 signature's `s` replaced by `n − s` (P-256 order): the other
/// valid spelling of the same signature over the same header and payload.
fn high_s(compact: &str) -> String {
    const N: [u8; 32] = [
        0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xFF, 0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63,
        0x25, 0x51,
    ];
    let (input, sig) = compact.rsplit_once('.').unwrap();
    let mut sig = cada_protocol::b64::decode("sig", sig, 64).unwrap();
    assert_eq!(sig.len(), 64);
    let s: Vec<u8> = sig[32..].to_vec();
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut v = i16::from(N[i]) - i16::from(s[i]) - borrow;
        borrow = 0;
        if v < 0 {
            v += 256;
            borrow = 1;
        }
        sig[32 + i] = u8::try_from(v).unwrap();
    }
    format!("{input}.{}", cada_protocol::b64::encode(&sig))
}

/// The rig of the finding 4 tests: an ES256 owner, a signer, an upstream and a gate on
/// Redis whose one audience trusts the signer's image and the owner (plus `audience_extra`,
/// more lines of that `[[audience]]`), and the grant to build on: POST at the gate, tool
/// echo, issued at `t - 5` for ten minutes. Bind `_gate` and `_redis` by name: dropping
/// them stops the gate and Redis.
struct EsRig {
    owner: cada_contract::OwnerKey,
    signer: crate::grants_attack::Signer,
    up: crate::grants_attack::Upstream,
    port: u16,
    t: u64,
    g: cada_contract::Grant,
    /// The gate's MCP endpoint.
    url: String,
    _gate: Proc,
    _redis: Proc,
}

impl EsRig {
    fn start(d: &std::path::Path, audience_extra: &str) -> EsRig {
        use crate::grants_attack::{now_s, Signer, Upstream};
        use cada_contract::{Grant, OwnerAlg, OwnerKey, Subject};
        let owner = OwnerKey::generate(OwnerAlg::Es256).unwrap();
        let signer = Signer::new(d, "signer", owner.did());
        let up = Upstream::start();
        let (redis, rport) = start_redis(d);
        let store = format!("redis://127.0.0.1:{rport}");
        let port = free_port();
        let prefix = format!("http://127.0.0.1:{port}/");
        let policy = d.join("policy.toml");
        std::fs::write(
            &policy,
            format!(
                "[roots]\nnitro = [{:?}]\n[[audience]]\nprefix = \"{prefix}\"\nmeasurements = [{{ PCR0 = \"{}\" }}]\nowners = [\"{}\"]\n{audience_extra}",
                signer.root.display().to_string(),
                signer.pcr0,
                owner.did()
            ),
        )
        .unwrap();
        let gate = start_gate(
            d,
            "gate",
            port,
            &up.url(),
            &policy,
            &["--replay-store", &store],
        );
        let t = now_s();
        let mut g = Grant::new(
            Subject::Key(signer.did().into()),
            vec![prefix.clone()],
            vec!["POST".into()],
            t - 5,
            t + 600,
        );
        g.tools = vec!["echo".into()];
        EsRig {
            owner,
            signer,
            up,
            port,
            t,
            g,
            url: format!("{prefix}mcp"),
            _gate: gate,
            _redis: redis,
        }
    }
}

/// Finding 4. An owner key may be ES256 (`cada-owner keygen --alg es256`), and ECDSA
/// signatures have two valid spellings (`s` and `n − s`); the verifiers accept both. A
/// contract's identity everywhere — `cada.dtc`, the fleet's counters and suspension records,
/// the enclave's own counts — is the digest of its compact text, signature included, so the
/// other spelling is another contract with counters of its own: its fleet-wide budget is
/// given twice (and a tree's, when the root is respelled before delegating).
#[test]
fn a_respelled_es256_contract_does_not_get_its_budget_again() {
    use crate::grants_attack::{attempt, call_body};
    use cada_contract::DelegationRules;
    let dir = TempDir::new("deleg3-high-s");
    let EsRig {
        owner,
        signer,
        up,
        port,
        t,
        mut g,
        url,
        _gate,
        _redis,
    } = EsRig::start(&dir.0, "max_delegation_depth = 1\n");
    g.budget = Some(2);
    // It may delegate, so the fleet counts its budget (its tree's root).
    g.delegation = Some(DelegationRules {
        max_depth: 1,
        status_list: "https://owner.example/status/1".into(),
        status_range: [100, 200],
    });
    let c = g.issue(&owner, t - 5).unwrap();
    let c2 = high_s(&c);
    assert_ne!(c, c2);
    let body = call_body("echo", "{}");
    for i in 0..2 {
        let o = attempt(port, "/mcp", &signer.headers(&url, &body, &c), &body, &up);
        assert_eq!(o.status, 200, "call {i}: {o:?}");
    }
    let o = attempt(port, "/mcp", &signer.headers(&url, &body, &c), &body, &up);
    assert_eq!(o.code, "delegation.budget", "{o:?}");
    // The same contract, its signature spelled the other way.
    let o = attempt(port, "/mcp", &signer.headers(&url, &body, &c2), &body, &up);
    assert!(
        !o.reached,
        "the budget of 2 was given again to the other spelling of the same contract: {o:?}"
    );
}

/// Finding 4, the suspension: a contract the fleet suspended (its requests window crossed)
/// is admitted again under the other ECDSA spelling of its signature, whose digest names no
/// suspension record.
#[test]
fn a_respelled_es256_contract_is_still_suspended() {
    use crate::grants_attack::{attempt, call_body};
    use cada_contract::WindowLimit;
    let dir = TempDir::new("deleg3-high-s-susp");
    let EsRig {
        owner,
        signer,
        up,
        port,
        t,
        mut g,
        url,
        _gate,
        _redis,
    } = EsRig::start(&dir.0, "");
    g.limits.requests = Some(WindowLimit {
        max: 2,
        window_seconds: 3600,
    });
    let c = g.issue(&owner, t - 5).unwrap();
    let body = call_body("echo", "{}");
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(attempt(port, "/mcp", &signer.headers(&url, &body, &c), &body, &up).code);
    }
    assert_eq!(
        codes.last().map(String::as_str),
        Some("contract.not_permitted.behaviour"),
        "{codes:?}"
    );
    let o = attempt(
        port,
        "/mcp",
        &signer.headers(&url, &body, &high_s(&c)),
        &body,
        &up,
    );
    assert!(
        !o.reached,
        "the suspended contract, its signature spelled the other way, was admitted: {o:?}"
    );
}

/// Finding 4, with an honest enclave: its host installs the other spelling of an ES256
/// owner's contract whose budget the enclave has counted to the end; the enclave takes it
/// as a new contract (same `id`, another digest, `used: 0`) and signs the budget again.
#[test]
fn the_enclave_does_not_count_a_respelled_contract_afresh() {
    let dir = TempDir::new("deleg3-high-s-enclave");
    let d = &dir.0;
    let _enclave = start_enclave(d, &[]);
    let _parent = start_parent(d, &[]);
    let sock = d.join("agent.sock");
    let (_, id) = http(&sock, "GET", "/v1/identity", None, Duration::from_secs(5)).unwrap();
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    let did = id["did"].as_str().unwrap().to_owned();
    let out = d.join("owner");
    let (code, _, err) = owner(&["keygen", "--alg", "es256", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let key = out.join("owner-key.json").display().to_string();
    owner_to(d, "lock.jwt", &["lock", "--key", &key, "--enclave", &did]);
    let lock = d.join("lock.jwt");
    assert_eq!(
        parent(&sock, &["owner", "lock", lock.to_str().unwrap()]).0,
        0
    );
    let c = owner_to(
        d,
        "c.jwt",
        &[
            "grant",
            "--key",
            &key,
            "--subject",
            &did,
            "--audience",
            "https://api.example.com/",
            "--method",
            "POST",
            "--valid-for",
            "1h",
            "--no-revocation",
            "--budget",
            "2",
        ],
    );
    let c = c.trim().to_owned();
    let r = parent(
        &sock,
        &["contract", "install", d.join("c.jwt").to_str().unwrap()],
    );
    assert_eq!(r.0, 0, "{r:?}");
    let ask = serde_json::json!({"method": "POST", "url": "https://api.example.com/x"}).to_string();
    let pop = || {
        http(
            &sock,
            "POST",
            "/v1/pop",
            Some(&ask),
            Duration::from_secs(10),
        )
        .unwrap()
    };
    for i in 0..2 {
        let (st, t) = pop();
        assert_eq!(st, 200, "proof {i}: {t}");
    }
    let (st, t) = pop();
    assert!(
        st == 403 && t.contains("budget"),
        "the budget of 2 is spent: {st} {t}"
    );
    // The host installs the other spelling (refusing the install is a fix too).
    std::fs::write(d.join("c2.jwt"), high_s(&c)).unwrap();
    let _ = parent(
        &sock,
        &["contract", "install", d.join("c2.jwt").to_str().unwrap()],
    );
    let (st, t) = pop();
    assert_ne!(
        st, 200,
        "the enclave signed again under the other spelling of its spent contract: {t}"
    );
}
