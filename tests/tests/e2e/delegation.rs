//! Issue 24 acceptance, the happy path, with the real binaries on `sim` and `sim-snp`:
//! three enclaves locked to one owner, owner → planner → worker → helper. The owner's
//! contract lets the planner delegate two levels; the planner delegates a subset to the
//! worker with `cada-parent delegate`, the worker a smaller one to the helper; each installs
//! its chain. Their calls succeed within their subset at a gated MCP server and at a
//! CADA-aware resource server (`cada-verify serve`), and stop at its edge (refused by their
//! own enclave); proofs name the chain (`cada.dch`); the STS token of the helper names the
//! owner as principal (`sub`) and nests the actors helper → worker → planner in `act`,
//! with the chain's digests; and `cada-verify audit trace` prints the whole tree of the
//! task from the logs alone.
use std::path::Path;

use cada_e2e::delegation::*;
use cada_e2e::*;

const TASK: &str = "task-24.happy";

#[test]
fn owner_planner_worker_helper_on_sim() {
    happy_path("sim");
}

#[test]
fn owner_planner_worker_helper_on_sim_snp() {
    happy_path("sim-snp");
}

fn happy_path(platform: &str) {
    // Install the stock library before any clock starts.
    cada_e2e::stock_jwt::jose_package();
    let dir = TempDir::new(&format!("deleg-{platform}"));
    let d = &dir.0;
    let fleet = Fleet::start(d, platform, &["planner", "worker", "helper"], &[]);
    let (planner, worker, helper) = (
        fleet.agent("planner"),
        fleet.agent("worker"),
        fleet.agent("helper"),
    );
    let status = StatusList::new(&fleet, "owner");

    // The servers: a gate in front of an MCP upstream, a resource server, an STS.
    let (up_port, seen) = mcp_upstream();
    let (g_port, sts_port) = (free_port(), free_port());
    let gate_aud = format!("http://127.0.0.1:{g_port}/");
    let issuer = format!("http://127.0.0.1:{sts_port}");
    let api = "https://api.example.com/v1";
    let policy = fleet.policy(
        "policy.toml",
        &format!(
            "{}{}",
            fleet.audience_toml(&gate_aud, 2, ""),
            fleet.audience_toml("https://api.example.com/", 2, "")
        ),
    );
    let _gate = status_gate(d, "gate", g_port, up_port, &policy, &status, &[]);
    let (_verifier, v_port) = status_verifier(d, "verifier", &policy, &status, &[]);
    let _sts = start_sts(
        d,
        "sts",
        sts_port,
        &issuer,
        &policy,
        &["--status-list", &status.url],
    );

    // The owner's contract: the planner may call echo, add and delete_all at the gate,
    // POST and GET at the API, exchange at the STS, and delegate two levels.
    let args = root_flags(
        &[
            "--audience",
            &gate_aud,
            "--audience",
            api,
            "--audience",
            &issuer,
            "--method",
            "POST",
            "--method",
            "GET",
            "--tool",
            "echo",
            "--tool",
            "add",
            "--tool",
            "delete_all",
        ],
        &status,
        "1",
        2,
        (100, 200),
    );
    let c0 = fleet.grant(planner, "c0.jwt", &args, Some(&status.current));
    let dtc0 = cada_contract::digest_of(&c0);

    // Planner → worker: echo and add, POST only, 30 minutes, one more level.
    let narrow = |tools: &[&str], minutes: &str, max_depth: Option<&str>| {
        let mut a = vec![
            "--audience",
            gate_aud.as_str(),
            "--audience",
            api,
            "--audience",
            issuer.as_str(),
            "--method",
            "POST",
            "--minutes",
            minutes,
            "--task",
            TASK,
        ];
        for t in tools {
            a.extend(["--tool", t]);
        }
        if let Some(k) = max_depth {
            a.extend(["--max-depth", k]);
        }
        a.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let a1 = narrow(&["echo", "add"], "30", Some("1"));
    let a1: Vec<&str> = a1.iter().map(String::as_str).collect();
    let d1 = planner
        .delegate(&worker.did, &dtc0, &a1)
        .expect("the planner delegates a subset");
    assert_eq!(links(&d1).len(), 2, "{d1}");
    assert_eq!(links(&d1)[0], c0.as_str(), "the chain starts at the root");
    worker
        .install("d1.jwt", &d1, &[&status.current])
        .expect("the worker installs its chain");

    // Worker → helper: echo only, 20 minutes, no further delegation.
    let a2 = narrow(&["echo"], "20", None);
    let a2: Vec<&str> = a2.iter().map(String::as_str).collect();
    let d2 = worker
        .delegate(&helper.did, &leaf_dtc(&d1), &a2)
        .expect("the worker delegates a subset of its subset");
    helper
        .install("d2.jwt", &d2, &[&status.current])
        .expect("the helper installs its chain");

    // The chain's format (docs/delegation.md): each link names its parent, the root and the
    // owner, its depth, its delegator as issuer and its delegatee as subject.
    let ls = links(&d2);
    assert_eq!(ls.len(), 3);
    assert_eq!(
        &ls[..2],
        &links(&d1)[..],
        "the helper's chain extends the worker's"
    );
    let ds = digests(&d2);
    for (depth, (link, issuer_did, subject_did)) in [
        (ls[1], &planner.did, &worker.did),
        (ls[2], &worker.did, &helper.did),
    ]
    .into_iter()
    .enumerate()
    {
        let p = payload(link);
        let depth = depth + 1;
        assert_eq!(p["iss"], issuer_did.as_str(), "link {depth}: {p}");
        assert_eq!(p["sub"], subject_did.as_str(), "link {depth}: {p}");
        assert_eq!(p["cadaDelegation"]["depth"], depth, "{p}");
        assert_eq!(p["cadaDelegation"]["parent"], ds[depth - 1].as_str(), "{p}");
        assert_eq!(p["cadaDelegation"]["root"], dtc0.as_str(), "{p}");
        assert_eq!(
            p["cadaDelegation"]["owner"],
            fleet.owner_did.as_str(),
            "{p}"
        );
        assert!(
            p["credentialStatus"].is_object(),
            "every link is revocable: {p}"
        );
        assert!(
            p["type"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == "CadaDelegation"),
            "{p}"
        );
    }

    // The servers fetch the owner's list (every second).
    std::thread::sleep(std::time::Duration::from_millis(1500));

    // 1. The gate: within the subset, through; proofs name the chain.
    let tp = traceparent(0x24);
    for (agent, tool) in [
        (planner, "delete_all"),
        (worker, "add"),
        (worker, "echo"),
        (helper, "echo"),
    ] {
        let a = gate_call(agent, g_port, tool, Some(TASK), Some(&tp))
            .unwrap_or_else(|e| panic!("{} {tool}: refused by its enclave {e:?}", agent.name));
        assert_eq!(a.status, 200, "{} {tool}: {}", agent.name, a.body);
        assert_eq!(a.result_text().as_deref(), Some(tool), "{}", a.body);
    }
    let p = helper
        .proof(
            "POST",
            &format!("{gate_aud}mcp"),
            Some(&tool_call(1, "echo")),
            None,
            None,
        )
        .unwrap();
    let claims = proof_claims(&p);
    assert_eq!(claims["cada"]["dtc"], ds[2].as_str(), "{claims}");
    assert_eq!(
        claims["cada"]["dch"],
        serde_json::json!([ds[0], ds[1]]),
        "{claims}"
    );
    assert_eq!(p["contract"], d2.as_str(), "the daemon hands out the chain");
    // Outside the subset, each agent's own enclave refuses.
    for (agent, tool) in [(worker, "delete_all"), (helper, "add")] {
        let (st, problem) = gate_call(agent, g_port, tool, Some(TASK), None)
            .err()
            .unwrap_or_else(|| panic!("{} signed for {tool}", agent.name));
        assert_eq!(st, 403, "{problem}");
        assert_eq!(
            problem_code(&problem),
            "contract.not_permitted.tool",
            "{problem}"
        );
    }
    // The gate forwards the task and the trace (its own span) to the upstream.
    let heads = seen.lock().unwrap().clone();
    assert_eq!(heads.len(), 4, "{heads:?}");
    let trace_id = tp.split('-').nth(1).unwrap();
    for (head, _) in &heads {
        assert!(
            head.contains(&format!("cada-task: {}", TASK.to_ascii_lowercase())),
            "{head}"
        );
        let fwd = head
            .lines()
            .find_map(|l| l.strip_prefix("traceparent: "))
            .unwrap_or_else(|| panic!("no traceparent forwarded: {head}"));
        assert_eq!(fwd.split('-').nth(1), Some(trace_id), "{fwd}");
        assert_ne!(fwd, tp, "the gate forwards its own span id");
    }

    // 2. The resource server: the worker's chain accepted, the chain named.
    let url = "https://api.example.com/v1/orders";
    let p = worker
        .proof("POST", url, None, Some(TASK), Some(&tp))
        .unwrap();
    let (st, r) = verify_at(v_port, &p, "POST", url, Some(&d1));
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["owner"], fleet.owner_did.as_str(), "{r}");
    assert_eq!(r["cada"]["dtc"], leaf_dtc(&d1).as_str(), "{r}");
    // GET is the planner's, not the worker's: its enclave refuses.
    let (st, problem) = worker.proof("GET", url, None, None, None).unwrap_err();
    assert_eq!(
        (st, problem_code(&problem).as_str()),
        (403, "contract.not_permitted.method"),
        "{problem}"
    );

    // 3. The STS: the helper's token names the owner as principal and nests the actors.
    let (st, tok) = sts_exchange(helper, sts_port, &issuer, &d2, api, Some(TASK));
    assert_eq!(st, 200, "{tok}");
    let token = tok["access_token"].as_str().unwrap();
    let claims = payload(token);
    assert_eq!(claims["sub"], fleet.owner_did.as_str(), "{claims}");
    assert_eq!(
        actors(&claims),
        vec![helper.did.clone(), worker.did.clone(), planner.did.clone()],
        "{claims}"
    );
    assert_eq!(claims["cada_dch"], serde_json::json!(ds), "{claims}");
    assert!(claims["cnf"]["jkt"].is_string(), "{claims}");
    stock_library_accepts(token, &issuer, api, &claims);
    // The worker's, one level up: the worker acting for the planner, for the owner.
    let (st, tok) = sts_exchange(worker, sts_port, &issuer, &d1, api, Some(TASK));
    assert_eq!(st, 200, "{tok}");
    let token = tok["access_token"].as_str().unwrap();
    let claims = payload(token);
    assert_eq!(claims["sub"], fleet.owner_did.as_str(), "{claims}");
    assert_eq!(
        claims["act"],
        serde_json::json!({"sub": worker.did, "act": {"sub": planner.did}}),
        "{claims}"
    );
    assert_eq!(
        claims["cada_dch"],
        serde_json::json!(digests(&d1)),
        "{claims}"
    );
    stock_library_accepts(token, &issuer, api, &claims);

    // 4. The trace, from the logs alone.
    trace_tree(d, &fleet, &[planner, worker, helper]);
}

/// `cada-verify audit trace` over the gate's, verifier's and STS's audit logs and the
/// enclaves' exported hash chains prints the tree owner → planner → worker → helper with
/// each call and decision.
fn trace_tree(d: &Path, fleet: &Fleet, agents: &[&Agent]) {
    let exports: Vec<std::path::PathBuf> = agents
        .iter()
        .map(|a| a.export_events("events.json"))
        .collect();
    let exports: Vec<&Path> = exports.iter().map(std::path::PathBuf::as_path).collect();
    let logs = [
        d.join("gate-audit"),
        d.join("verifier-audit"),
        d.join("sts-audit"),
    ];
    let logs: Vec<&Path> = logs.iter().map(std::path::PathBuf::as_path).collect();
    let (code, out, err) = audit_trace(TASK, &logs, &exports, &[]);
    assert_eq!(code, 0, "{err}{out}");
    // Every party, in the order of the tree, and the calls with their decisions.
    let mut at = 0;
    for who in [
        &fleet.owner_did,
        &agents[0].did,
        &agents[1].did,
        &agents[2].did,
    ] {
        let i = out[at..]
            .find(who.as_str())
            .unwrap_or_else(|| panic!("{who} missing (or out of order) in the tree:\n{out}"));
        at += i;
    }
    // Each call under the actor that made it: the planner's delete_all before the worker's
    // node, the worker's add and token before the helper's node, the helper's token under it.
    let at = |needle: &str| {
        out.find(needle)
            .unwrap_or_else(|| panic!("{needle} missing from the tree:\n{out}"))
    };
    let order = [
        at(&agents[0].did),
        at("[tools/call delete_all] → accept"),
        at(&agents[1].did),
        at("[tools/call add] → accept"),
        at("token POST"),
        at(&agents[2].did),
        out.rfind("token POST").unwrap(),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}:\n{out}");
    assert!(out.contains("chain intact"), "{out}");
    assert!(out.contains("accept"), "{out}");
    let (code, json, err) = audit_trace(TASK, &logs, &exports, &["--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v.is_object() || v.is_array(), "{json}");
}

/// A stock RFC 9068 library (npm `jose`, pinned; the STS tests' harness) accepts the token
/// for `audience` from the STS's JWKS, and reads the same principal and actors.
fn stock_library_accepts(token: &str, issuer: &str, audience: &str, claims: &serde_json::Value) {
    use cada_e2e::stock_jwt::{jose_verify, Case};
    let got = jose_verify(
        issuer,
        &format!("{issuer}/jwks"),
        &[Case {
            name: "worker",
            token,
            audience,
        }],
    );
    let ok = &got[0];
    assert_eq!(ok["ok"], true, "{got:?}");
    assert_eq!(ok["header"]["typ"], "at+jwt", "{ok}");
    assert_eq!(&ok["payload"]["sub"], &claims["sub"], "{ok}");
    assert_eq!(&ok["payload"]["act"], &claims["act"], "{ok}");
    assert_eq!(actors(&ok["payload"]), actors(claims), "{ok}");
}

/// A contract digest is base64url: one in 64 begins with '-'. `cada-parent delegate
/// --contract <DTC>` must take it as the value (as `--contract=<DTC>` does), not refuse it as
/// an unknown option before reaching the daemon.
#[test]
fn delegate_takes_a_digest_that_begins_with_a_dash() {
    let dtc = "-7DI0cPbbB7bS0n8hQ3vVJx3mNq2zXWm7lS9yQeJ4Kk";
    let joined = format!("--contract={dtc}");
    for args in [vec!["--contract", dtc], vec![joined.as_str()]] {
        let mut all = vec!["delegate", "--to", "did:key:z6Mkabc"];
        all.extend(args.iter().copied());
        all.extend(["--socket", "/nonexistent/cada/agent.sock"]);
        let out = std::process::Command::new(bin("cada-parent"))
            .args(&all)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // Parsed: it tries the daemon (exit 1), not a usage error (exit 2).
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("cannot reach the daemon"), "{err}");
    }
}
