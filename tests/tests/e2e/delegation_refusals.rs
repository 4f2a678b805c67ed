//! Issue 24 acceptance, the refusals, with the real binaries: every way a delegation chain
//! can be wrong is refused with its stable code (docs/delegation.md) — wider than its
//! parent in each dimension (by the delegator's enclave before it signs; by the worker's
//! enclave and by verifiers when forged outside an enclave), too deep, a revoked middle
//! link (at every instance), an expired parent, a delegator whose image the policy
//! rejects, a chain spliced from two owners, a worker presenting the planner's contract as
//! its own; and sibling delegations that together exceed their parent's budget or rate,
//! over two gates sharing one Redis.
use std::path::Path;
use std::time::Duration;

use cada_e2e::delegation::*;
use cada_e2e::mcp_interop::start_gate;
use cada_e2e::*;

const API: &str = "https://api.example.com/v1";
const URL: &str = "https://api.example.com/v1/orders";

/// A fleet on `platform` with its owner's status list, and the owner's contract `c0` for
/// the first agent (the planner): POST at the API, tools echo and add, one hour, index 1 of
/// the list, delegation allowed `max_depth` levels in indexes 100..200, plus `extra`.
struct World {
    fleet: Fleet,
    status: StatusList,
    c0: String,
}

impl World {
    fn new(d: &Path, platform: &str, names: &[&str], max_depth: u32, extra: &[&str]) -> World {
        let fleet = Fleet::start(d, platform, names, &[]);
        let status = StatusList::new(&fleet, "owner");
        let mut flags = vec![
            "--audience",
            API,
            "--method",
            "POST",
            "--tool",
            "echo",
            "--tool",
            "add",
        ];
        flags.extend_from_slice(extra);
        let args = root_flags(&flags, &status, "1", max_depth, (100, 200));
        let planner = &fleet.agents[0];
        let c0 = fleet.grant(planner, "c0.jwt", &args, Some(&status.current));
        World { fleet, status, c0 }
    }

    fn agent(&self, name: &str) -> &Agent {
        self.fleet.agent(name)
    }

    /// `from` delegates to `to` under the leaf of `chain` with `args`, and `to` installs
    /// the new chain; returns it.
    fn delegate_installed(&self, from: &str, to: &str, chain: &str, args: &[&str]) -> String {
        let to = self.agent(to);
        let c = self
            .agent(from)
            .delegate(&to.did, &leaf_dtc(chain), args)
            .unwrap_or_else(|e| panic!("{from} delegates to {}: {e}", to.name));
        to.install(&format!("{}.chain", to.name), &c, &[&self.status.current])
            .unwrap_or_else(|e| panic!("{} installs: {e}", to.name));
        c
    }

    /// A `cada-verify serve` with one audience for the API (`max_delegation_depth`, `extra`
    /// lines), following the owner's list.
    fn verifier(&self, name: &str, max_depth: u32, extra: &str, more: &[&str]) -> (Proc, u16) {
        let policy = self.fleet.policy(
            &format!("{name}.toml"),
            &self
                .fleet
                .audience_toml("https://api.example.com/", max_depth, extra),
        );
        status_verifier(&self.fleet.dir, name, &policy, &self.status, more)
    }
}

/// `agent` proves `POST URL` with its installed chain and the verifier on `port` answers.
fn verify(agent: &Agent, port: u16, chain: &str) -> (u16, serde_json::Value) {
    let p = agent
        .proof("POST", URL, None, None, None)
        .unwrap_or_else(|e| panic!("{} proof: {e:?}", agent.name));
    verify_at(port, &p, "POST", URL, Some(chain))
}

fn assert_refused(got: Result<String, String>, code: &str, what: &str) {
    match got {
        Ok(c) => panic!("{what}: signed a delegation that should be refused {code}: {c}"),
        Err(e) => assert!(e.contains(code), "{what}: expected {code}, got: {e}"),
    }
}

fn assert_verifier(answer: (u16, serde_json::Value), code: &str, what: &str) {
    let (st, r) = answer;
    assert_eq!((st, verifier_code(&r).as_str()), (401, code), "{what}: {r}");
}

/// Each dimension of a contract, one member wider than the planner's contract (which has
/// every dimension), as `cada-parent delegate --grant` JSON; the code it is refused with.
fn wider_cases() -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    vec![
        (
            "delegation.wider.audience",
            json!({"audiences": ["https://api.example.com/v10"]}),
        ),
        (
            "delegation.wider.audience",
            json!({"audiences": ["https://api.example.com/"]}),
        ),
        (
            "delegation.wider.method",
            json!({"methods": ["POST", "DELETE"]}),
        ),
        ("delegation.wider.scope", json!({"scopes": ["s1", "admin"]})),
        (
            "delegation.wider.tool",
            json!({"tools": ["echo", "delete_all"]}),
        ),
        ("delegation.wider.prompt", json!({"prompts": ["p1", "p2"]})),
        (
            "delegation.wider.resource",
            json!({"resources": ["file:///srv/"]}),
        ),
        (
            "delegation.wider.secret",
            json!({"secrets": [{"name": "gh", "prefix": "https://api.github.com/repos/", "methods": ["POST"]}]}),
        ),
        (
            "delegation.wider.secret",
            json!({"secrets": [{"name": "gh", "prefix": "https://api.github.com/repos/acme/", "methods": ["POST", "DELETE"]}]}),
        ),
        (
            "delegation.wider.open",
            json!({"opens": [{"label": "report", "budget": 11}]}),
        ),
        ("delegation.wider.ctx", json!({"requiredCtx": []})),
        ("delegation.wider.budget", json!({"budget": 101})),
        ("delegation.wider.rate", json!({"ratePerSecond": 51})),
        (
            "delegation.wider.limits",
            json!({"limits": {"requests": {"max": 101, "windowSeconds": 3600},
                               "refusals": {"max": 10, "windowSeconds": 3600}}}),
        ),
        (
            "delegation.wider.limits",
            json!({"limits": {"requests": {"max": 100, "windowSeconds": 60},
                               "refusals": {"max": 10, "windowSeconds": 3600}}}),
        ),
        ("delegation.wider.audit", json!({"audit": "minimal"})),
        (
            "delegation.wider.step_up",
            json!({"stepUp": "http://localhost:9999"}),
        ),
    ]
}

/// The planner's contract for [`wider_cases`]: every dimension set.
const EVERY_DIMENSION: &[&str] = &[
    "--method",
    "GET",
    "--scope",
    "s1",
    "--prompt",
    "p1",
    "--resource",
    "file:///srv/public/",
    "--secret",
    "gh=https://api.github.com/repos/acme/",
    "--open",
    "report=10",
    "--ctx",
    "task",
    "--budget",
    "100",
    "--rate",
    "50",
    "--max-requests",
    "100/1h",
    "--max-refusals",
    "10/1h",
    "--step-up",
    "http://localhost:8470",
];

#[test]
fn the_enclave_refuses_to_sign_a_delegation_wider_than_its_parent_in_every_dimension() {
    let dir = TempDir::new("deleg-wider");
    let d = &dir.0;
    let w = World::new(d, "sim", &["planner", "worker"], 2, EVERY_DIMENSION);
    let (planner, worker) = (w.agent("planner"), w.agent("worker"));
    let dtc0 = cada_contract::digest_of(&w.c0);
    for (i, (code, grant)) in wider_cases().into_iter().enumerate() {
        let file = d.join(format!("wider-{i}.json"));
        std::fs::write(&file, grant.to_string()).unwrap();
        assert_refused(
            planner.delegate(&worker.did, &dtc0, &["--grant", file.to_str().unwrap()]),
            code,
            &grant.to_string(),
        );
    }
    // The flags narrow the same way, and refuse the same way.
    for (flags, code) in [
        (
            &["--audience", "https://api.example.com/v10"][..],
            "delegation.wider.audience",
        ),
        (&["--method", "DELETE"][..], "delegation.wider.method"),
        (&["--scope", "admin"][..], "delegation.wider.scope"),
        (&["--tool", "delete_all"][..], "delegation.wider.tool"),
        (&["--prompt", "p2"][..], "delegation.wider.prompt"),
        (&["--budget", "101"][..], "delegation.wider.budget"),
        (&["--rate", "51"][..], "delegation.wider.rate"),
        // The parent lives one hour.
        (&["--minutes", "120"][..], "delegation.wider.time"),
        // The parent allows two more levels: a child must allow fewer.
        (&["--max-depth", "2"][..], "delegation.depth"),
        // Outside the parent's status range.
        (&["--status-index", "5"][..], "delegation.status"),
    ] {
        assert_refused(
            planner.delegate(&worker.did, &dtc0, flags),
            code,
            &format!("{flags:?}"),
        );
    }
    // One-transaction grants (RFC 9396 authorization details): a child's detail must lie
    // within one of its parent's (tool, locations, argument limits).
    let detail = |max: u32, location: &str| {
        serde_json::json!([{
            "type": "mcp_tool_call", "locations": [location], "tool": "transfer",
            "arguments": {"amount": {"max": max}, "currency": {"eq": "USD"}},
            "identifier": "urn:uuid:6f1c3e0a-0000-4000-8000-00000000d24a",
        }])
    };
    let details_file = d.join("details.json");
    std::fs::write(
        &details_file,
        detail(500, "https://mcp.example.com/mcp").to_string(),
    )
    .unwrap();
    let mut args: Vec<String> = [
        "--authorization-details",
        details_file.to_str().unwrap(),
        "--minutes",
        "60",
        "--status-list",
        &w.status.url,
        "--status-index",
        "2",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(may_delegate(1, 300, 400));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let details = w
        .fleet
        .grant(planner, "details.jwt", &args, Some(&w.status.current));
    let dtc_details = cada_contract::digest_of(&details);
    for (i, wider) in [
        detail(600, "https://mcp.example.com/mcp"),
        detail(500, "https://mcp.example.com/"),
    ]
    .into_iter()
    .enumerate()
    {
        let file = d.join(format!("wider-details-{i}.json"));
        std::fs::write(
            &file,
            serde_json::json!({ "authorization_details": wider }).to_string(),
        )
        .unwrap();
        assert_refused(
            planner.delegate(
                &worker.did,
                &dtc_details,
                &["--grant", file.to_str().unwrap()],
            ),
            "delegation.wider.details",
            &wider.to_string(),
        );
    }
    let file = d.join("narrow-details.json");
    std::fs::write(
        &file,
        serde_json::json!({ "authorization_details": detail(100, "https://mcp.example.com/mcp") })
            .to_string(),
    )
    .unwrap();
    planner
        .delegate(
            &worker.did,
            &dtc_details,
            &["--grant", file.to_str().unwrap()],
        )
        .expect("a detail within the parent's is signed");

    // A delegation to a measurement set or to a non-key is refused.
    assert_refused(
        planner.delegate("did:web:example.com", &dtc0, &["--tool", "echo"]),
        "delegation.subject",
        "did:web subject",
    );
    // Within the parent in every dimension: signed.
    let narrow = d.join("narrow.json");
    std::fs::write(
        &narrow,
        serde_json::json!({
            "audiences": ["https://api.example.com/v1/orders"], "methods": ["POST"],
            "scopes": ["s1"], "tools": ["echo"], "prompts": [], "resources": ["file:///srv/public/a/"],
            "secrets": [{"name": "gh", "prefix": "https://api.github.com/repos/acme/x/", "methods": ["POST"]}],
            "opens": [{"label": "report", "budget": 3}], "requiredCtx": ["task", "step"],
            "budget": 10, "ratePerSecond": 5,
            "limits": {"requests": {"max": 10, "windowSeconds": 7200},
                       "refusals": {"max": 2, "windowSeconds": 3600}},
            "audit": "full", "stepUp": "http://localhost:8470",
        })
        .to_string(),
    )
    .unwrap();
    let chain = planner
        .delegate(
            &worker.did,
            &dtc0,
            &[
                "--grant",
                narrow.to_str().unwrap(),
                "--minutes",
                "30",
                "--max-depth",
                "1",
            ],
        )
        .expect("a delegation within its parent is signed");
    let leaf = payload(links(&chain)[1]);
    assert_eq!(
        leaf["credentialSubject"]["tools"],
        serde_json::json!(["echo"]),
        "{leaf}"
    );
    assert_eq!(
        leaf["credentialSubject"]["delegation"]["maxDepth"], 1,
        "{leaf}"
    );
    // The same index again is refused (each delegation its own revocation entry).
    let index = leaf["credentialStatus"]["statusListIndex"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            leaf["credentialStatus"]["statusListIndex"]
                .as_u64()
                .map(|n| n.to_string())
        })
        .unwrap();
    assert_refused(
        planner.delegate(&worker.did, &dtc0, &["--status-index", &index]),
        "delegation.status",
        "a reused index",
    );
}

#[test]
fn chains_forged_outside_an_enclave_are_refused_by_the_worker_and_by_verifiers() {
    let dir = TempDir::new("deleg-forged");
    let d = &dir.0;
    let w = World::new(d, "sim", &["planner", "worker", "helper"], 2, &[]);
    let (planner, worker, helper) = (w.agent("planner"), w.agent("worker"), w.agent("helper"));
    let (_v, v_port) = w.verifier("verifier", 2, "", &[]);
    let dtc0 = cada_contract::digest_of(&w.c0);

    // A real chain planner → worker → helper, to forge from.
    let d1 = w.delegate_installed(
        "planner",
        "worker",
        &w.c0,
        &["--tool", "echo", "--max-depth", "1"],
    );
    let d2 = w.delegate_installed("worker", "helper", &d1, &["--tool", "echo"]);
    assert_eq!(
        verify(helper, v_port, &d2).0,
        200,
        "the real chain is accepted"
    );

    // 1. A software key (no enclave) made the subject of an owner contract that allows
    //    delegating signs, for the worker, a delegation wider than that contract: the
    //    worker's enclave refuses to install it, naming the dimension.
    let (soft_did, soft_file) = keygen(d, "soft");
    let soft = load_key(&soft_file);
    let args = contract_flags(&[API], &w.status, "2", &[], 2, (300, 400));
    let c0s = w.fleet.owner_contract(&soft_did, "c0s.jwt", &args);
    let template = payload(links(&d1)[1]);
    let forged_link = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut p = template.clone();
        p["iss"] = soft_did.as_str().into();
        p["issuer"] = soft_did.as_str().into();
        p["cadaDelegation"]["parent"] = cada_contract::digest_of(&c0s).into();
        p["cadaDelegation"]["root"] = cada_contract::digest_of(&c0s).into();
        p["credentialStatus"]["statusListIndex"] = "301".into();
        p["credentialStatus"]["id"] = format!("{}#301", w.status.url).into();
        // Its window inside the software key's contract.
        let root = payload(&c0s);
        for k in ["validFrom", "validUntil", "iat", "nbf", "exp"] {
            p[k] = root[k].clone();
        }
        if let Some(cs) = p["credentialSubject"].as_object_mut() {
            cs.remove("delegation");
        }
        p["jti"] = "urn:uuid:5e1f7a52-0000-4000-8000-000000000001".into();
        p["id"] = p["jti"].clone();
        edit(&mut p);
        forge(&soft, &p)
    };
    for (code, grant) in wider_cases().into_iter().take(5) {
        let link = forged_link(&|p| {
            for (k, v) in grant.as_object().unwrap() {
                p["credentialSubject"][k] = v.clone();
            }
        });
        let chain = join(&[&c0s, &link]);
        let err = worker
            .install("forged.chain", &chain, &[&w.status.current])
            .expect_err("a wider forged delegation is installed");
        assert!(err.contains(code), "{grant}: expected {code}: {err}");
    }
    // 2. Within the contract, the software key's delegation is installed (the enclave
    //    cannot check a delegator's evidence), but verifiers refuse it: no enclave signed it.
    let honest_shape = forged_link(&|_| {});
    let chain = join(&[&c0s, &honest_shape]);
    worker
        .install("soft.chain", &chain, &[&w.status.current])
        .expect("the worker installs a within-bounds delegation it cannot check the evidence of");
    assert_verifier(
        verify(worker, v_port, &chain),
        "delegation.evidence",
        "software delegator",
    );
    // A software key naming the planner as issuer: its signature does not verify.
    let mut p = payload(links(&d1)[1]);
    p["credentialSubject"]["tools"] = serde_json::json!(["echo", "add"]);
    let posing = {
        let header = links(&d1)[1].split('.').next().unwrap();
        let body = cada_protocol::b64::encode(p.to_string().as_bytes());
        let sig = soft
            .sign_bytes(format!("{header}.{body}").as_bytes())
            .unwrap();
        format!("{header}.{body}.{}", cada_protocol::b64::encode(&sig))
    };
    let err = worker
        .install(
            "posing.chain",
            &join(&[&w.c0, &posing]),
            &[&w.status.current],
        )
        .expect_err("a delegation signed by another key than its issuer's");
    assert!(err.contains("delegation.signature"), "{err}");

    // 3. The planner enclave's real signature over a re-encoded, wider payload.
    let widened = reencode(links(&d1)[1], |p| {
        p["credentialSubject"]["tools"] = serde_json::json!(["echo", "add"]);
    });
    let err = worker
        .install(
            "reencoded.chain",
            &join(&[&w.c0, &widened]),
            &[&w.status.current],
        )
        .expect_err("a re-encoded delegation");
    assert!(err.contains("delegation.signature"), "{err}");
    // At a verifier that has not seen the helper's chain, as its middle link.
    let (_cold, cold_port) = w.verifier("cold", 2, "", &[]);
    let spliced = join(&[&w.c0, &widened, links(&d2)[2]]);
    assert_verifier(
        verify(helper, cold_port, &spliced),
        "delegation.signature",
        "re-encoded middle link",
    );

    // 4. A delegator cannot skip its own place: the helper's link presented under the
    //    planner's contract directly (its parent digest names the worker's link).
    assert_verifier(
        verify(helper, cold_port, &join(&[&w.c0, links(&d2)[2]])),
        "delegation.link",
        "a link moved up the chain",
    );
    // The real chain is still accepted there afterwards.
    assert_eq!(verify(helper, cold_port, &d2).0, 200);
    assert!(!dtc0.is_empty() && !planner.did.is_empty());
}

#[test]
fn chains_deeper_than_the_contract_or_the_policy_allows_are_refused() {
    let dir = TempDir::new("deleg-depth");
    let d = &dir.0;
    let w = World::new(d, "sim", &["planner", "worker", "helper"], 2, &[]);
    let (worker, helper) = (w.agent("worker"), w.agent("helper"));
    // A delegation without --max-depth may not delegate further.
    let leaf_only = w
        .agent("planner")
        .delegate(
            &worker.did,
            &cada_contract::digest_of(&w.c0),
            &["--tool", "echo"],
        )
        .unwrap();
    worker
        .install("leaf-only.chain", &leaf_only, &[&w.status.current])
        .unwrap();
    assert_refused(
        worker.delegate(&helper.did, &leaf_dtc(&leaf_only), &["--tool", "echo"]),
        "delegation.not_allowed",
        "a leaf without delegation rules",
    );
    // With one more level: the worker delegates once, the helper may not.
    let d1 = w.delegate_installed(
        "planner",
        "worker",
        &w.c0,
        &["--tool", "echo", "--max-depth", "1"],
    );
    let d2 = w.delegate_installed("worker", "helper", &d1, &["--tool", "echo"]);
    assert_refused(
        helper.delegate(&worker.did, &leaf_dtc(&d2), &["--tool", "echo"]),
        "delegation.not_allowed",
        "below the last level",
    );
    // The policy bounds depth too: 0 (the default) refuses any chain, 1 a chain of two.
    let (_v0, p0) = w.verifier("v0", 0, "", &[]);
    let (_v1, p1) = w.verifier("v1", 1, "", &[]);
    let (_v2, p2) = w.verifier("v2", 2, "", &[]);
    assert_verifier(
        verify(worker, p0, &d1),
        "delegation.depth",
        "depth 1 under policy 0",
    );
    assert_eq!(verify(worker, p1, &d1).0, 200, "depth 1 under policy 1");
    assert_verifier(
        verify(helper, p1, &d2),
        "delegation.depth",
        "depth 2 under policy 1",
    );
    assert_eq!(verify(helper, p2, &d2).0, 200, "depth 2 under policy 2");
}

#[test]
fn revoking_a_middle_link_revokes_every_contract_below_it_everywhere() {
    let dir = TempDir::new("deleg-revoke");
    let d = &dir.0;
    let mut w = World::new(d, "sim", &["planner", "worker", "helper"], 2, &[]);
    let (up_port, _seen) = mcp_upstream();
    let (g_port, g2_port) = (free_port(), free_port());
    let gate_aud = |p: u16| format!("http://127.0.0.1:{p}/");
    // The owner's contract covers both gates too.
    let args = contract_flags(
        &[API, &gate_aud(g_port), &gate_aud(g2_port)],
        &w.status,
        "2",
        &[],
        2,
        (500, 600),
    );
    let planner = w.fleet.agent("planner");
    let c0 = w
        .fleet
        .grant(planner, "c0-gates.jwt", &args, Some(&w.status.current));
    let gate_policy = w.fleet.policy(
        "gates.toml",
        &format!(
            "{}{}",
            w.fleet.audience_toml(&gate_aud(g_port), 2, ""),
            w.fleet.audience_toml(&gate_aud(g2_port), 2, "")
        ),
    );
    let up = format!("http://127.0.0.1:{up_port}");
    let status_args = [
        "--status-refresh",
        "1",
        "--status-list",
        w.status.url.as_str(),
    ];
    let _g1 = start_gate(d, "gate1", g_port, &up, &gate_policy, &status_args);
    let _g2 = start_gate(d, "gate2", g2_port, &up, &gate_policy, &status_args);
    let (_va, pa) = w.verifier("va", 2, "", &[]);
    let (_vb, pb) = w.verifier("vb", 2, "", &[]);
    let d1 = w.delegate_installed("planner", "worker", &c0, &["--max-depth", "1"]);
    let d2 = w.delegate_installed("worker", "helper", &d1, &[]);
    let (worker, helper) = (w.fleet.agent("worker"), w.fleet.agent("helper"));
    for port in [g_port, g2_port] {
        for a in [worker, helper] {
            let r = gate_call(a, port, "echo", None, None).unwrap();
            assert_eq!(r.status, 200, "{}: {}", a.name, r.body);
        }
    }
    for port in [pa, pb] {
        assert_eq!(verify(helper, port, &d2).0, 200);
    }

    // The owner revokes the worker's link (the middle one) in its list.
    let p1 = payload(links(&d1)[1]);
    let index = p1["credentialStatus"]["statusListIndex"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| p1["credentialStatus"]["statusListIndex"].as_u64())
        .unwrap();
    let revoked = w.status.revoke(index);
    std::thread::sleep(Duration::from_millis(2500));
    // Every instance refuses the worker and the helper below it; the planner is untouched.
    for port in [g_port, g2_port] {
        for a in [worker, helper] {
            let r = gate_call(a, port, "echo", None, None).unwrap();
            assert_eq!(
                (r.status, r.code().as_str()),
                (401, "contract.revoked"),
                "{}: {}",
                a.name,
                r.body
            );
        }
        let r = gate_call(planner, port, "echo", None, None).unwrap();
        assert_eq!(r.status, 200, "planner: {}", r.body);
    }
    for port in [pa, pb] {
        let (st, r) = verify(helper, port, &d2);
        assert_eq!(
            (st, verifier_code(&r).as_str()),
            (401, "contract.revoked"),
            "{r}"
        );
        let msg = r["reasons"][0]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("depth 1") || msg.contains("link 1"),
            "names the link: {r}"
        );
        assert_eq!(verify(worker, port, &d1).0, 401);
    }
    // The enclaves given the new list refuse too, and refuse to delegate under it.
    for (a, c) in [(worker, &d1), (helper, &d2)] {
        let err = a.install("again.chain", c, &[&revoked]).unwrap_err();
        assert!(err.contains("contract.revoked"), "{}: {err}", a.name);
        let (st, problem) = a.proof("POST", URL, None, None, None).unwrap_err();
        assert_eq!(st, 403, "{problem}");
    }
}

#[test]
fn an_expired_parent_ends_every_delegation_below_it() {
    let dir = TempDir::new("deleg-expired");
    let d = &dir.0;
    let w = World::new(d, "sim", &["planner", "worker", "helper"], 2, &[]);
    let (worker, helper) = (w.agent("worker"), w.agent("helper"));
    let d1 = w.delegate_installed(
        "planner",
        "worker",
        &w.c0,
        &["--minutes", "1", "--max-depth", "1"],
    );
    let d2 = w.delegate_installed("worker", "helper", &d1, &["--minutes", "1"]);
    let until = payload(links(&d1)[1])["exp"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::thread::sleep(Duration::from_secs(until.saturating_sub(now) + 2));
    // The worker's enclave no longer delegates or signs under it; nor does the helper's.
    assert_refused(
        worker.delegate(&helper.did, &leaf_dtc(&d1), &[]),
        "contract.expired",
        "delegating under an expired contract",
    );
    for a in [worker, helper] {
        let (st, problem) = a.proof("POST", URL, None, None, None).unwrap_err();
        assert_eq!(st, 403, "{}: {problem}", a.name);
    }
    // A fresh enclave refuses to install the expired chain.
    let err = helper
        .install("late.chain", &d2, &[&w.status.current])
        .unwrap_err();
    assert!(err.contains("contract.expired"), "{err}");
}

#[test]
fn a_delegator_whose_image_the_policy_rejects_is_refused_on_sim_and_sim_snp() {
    for platform in ["sim", "sim-snp"] {
        let dir = TempDir::new(&format!("deleg-image-{platform}"));
        let d = &dir.0;
        let w = World::new(d, platform, &["planner", "worker"], 2, &[]);
        let d1 = w.delegate_installed("planner", "worker", &w.c0, &["--tool", "echo"]);
        let name = w.fleet.measurement_name();
        let good = &w.fleet.agents[0].measurement;
        let bad = w.fleet.other_measurement();
        let (_ok, p_ok) = w.verifier(
            "v-ok",
            2,
            &format!("delegator_measurements = [{{ {name} = \"{good}\" }}]\n"),
            &[],
        );
        let (_no, p_no) = w.verifier(
            "v-no",
            2,
            &format!("delegator_measurements = [{{ {name} = \"{bad}\" }}]\n"),
            &[],
        );
        let worker = w.agent("worker");
        assert_eq!(verify(worker, p_ok, &d1).0, 200, "{platform}");
        assert_verifier(
            verify(worker, p_no, &d1),
            "delegation.delegator_image",
            platform,
        );
    }
}

#[test]
fn a_chain_spliced_from_two_owners_is_refused() {
    let dir = TempDir::new("deleg-splice");
    let d = &dir.0;
    let w = World::new(d, "sim", &["planner", "worker"], 2, &[]);
    let worker = w.agent("worker");
    // Another owner, with its own planner.
    let db = d.join("b");
    std::fs::create_dir_all(&db).unwrap();
    let other = World::new(&db, "sim", &["planner-b"], 2, &[]);
    // B's planner delegates to A's worker: the worker is locked to A.
    let chain_b = other
        .agent("planner-b")
        .delegate(
            &worker.did,
            &cada_contract::digest_of(&other.c0),
            &["--tool", "echo"],
        )
        .unwrap();
    let err = worker
        .install("b.chain", &chain_b, &[&other.status.current])
        .unwrap_err();
    assert!(err.contains("delegation.owner"), "{err}");
    // A's link under B's root: its parent is not that root.
    let d1 = w.delegate_installed("planner", "worker", &w.c0, &["--tool", "echo"]);
    let err = worker
        .install(
            "spliced.chain",
            &join(&[&other.c0, links(&d1)[1]]),
            &[&other.status.current],
        )
        .unwrap_err();
    assert!(
        err.contains("delegation.link") || err.contains("delegation.owner"),
        "{err}"
    );
    // At a verifier trusting both owners: the worker's real leaf under B's root.
    let roots: Vec<String> = w
        .fleet
        .agents
        .iter()
        .chain(other.fleet.agents.iter())
        .map(|a| format!("{:?}", a.root.display().to_string()))
        .collect();
    let roots = format!("[roots]\nnitro = [{}]\n", roots.join(", "));
    let policy = d.join("both.toml");
    std::fs::write(
        &policy,
        format!(
            "{roots}[[audience]]\nprefix = \"https://api.example.com/\"\nmeasurements = [{{ {} = \"{}\" }}]\nowners = [\"{}\", \"{}\"]\nmax_delegation_depth = 2\n",
            w.fleet.measurement_name(),
            worker.measurement,
            w.fleet.owner_did,
            other.fleet.owner_did
        ),
    )
    .unwrap();
    let (_v, port) = start_verifier(d, "v-both", &["--policy", policy.to_str().unwrap()]);
    assert_verifier(
        verify(worker, port, &join(&[&other.c0, links(&d1)[1]])),
        "delegation.link",
        "A's link under B's root",
    );
}

#[test]
fn a_worker_presenting_the_planners_contract_as_its_own_is_refused() {
    let dir = TempDir::new("deleg-posing");
    let d = &dir.0;
    let w = World::new(d, "sim", &["planner", "worker"], 2, &[]);
    let worker = w.agent("worker");
    let d1 = w.delegate_installed("planner", "worker", &w.c0, &["--tool", "echo"]);
    let (_v, port) = w.verifier("verifier", 2, "", &[]);
    // Its enclave will not install the planner's contract: another key's.
    let err = worker
        .install("planners.jwt", &w.c0, &[&w.status.current])
        .unwrap_err();
    assert!(err.contains("contract.subject"), "{err}");
    // Its proofs name its own chain; the planner's contract beside them is refused.
    assert_verifier(
        verify(worker, port, &w.c0),
        "contract.dtc_mismatch",
        "the planner's contract",
    );
    // Its own link without the root above it is not a contract of a trusted owner.
    let (st, r) = verify(worker, port, links(&d1)[1]);
    assert_eq!(st, 401, "{r}");
    // And the planner's own proof does not pass with the worker's chain.
    let planner = w.agent("planner");
    let p = planner.proof("POST", URL, None, None, None).unwrap();
    let (st, r) = verify_at(port, &p, "POST", URL, Some(&d1));
    assert_eq!(
        (st, verifier_code(&r).as_str()),
        (401, "contract.dtc_mismatch"),
        "{r}"
    );
}

#[test]
fn sibling_delegations_cannot_add_up_past_their_parent_across_two_gates() {
    let dir = TempDir::new("deleg-siblings");
    let d = &dir.0;
    let fleet = Fleet::start(d, "sim", &["planner", "worker", "helper"], &[]);
    let status = StatusList::new(&fleet, "owner");
    let (_redis, rport) = start_redis(d);
    let store = format!("redis://127.0.0.1:{rport}");
    let (up_port, seen) = mcp_upstream();
    let (ga, gb) = (free_port(), free_port());
    let aud = |p: u16| format!("http://127.0.0.1:{p}/");
    let policy = fleet.policy(
        "gates.toml",
        &format!(
            "{}{}",
            fleet.audience_toml(&aud(ga), 1, ""),
            fleet.audience_toml(&aud(gb), 1, "")
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
    let _a = start_gate(d, "gate-a", ga, &up, &policy, &extra);
    let _b = start_gate(d, "gate-b", gb, &up, &policy, &extra);
    let (planner, worker, helper) = (
        fleet.agent("planner"),
        fleet.agent("worker"),
        fleet.agent("helper"),
    );
    let grant = |file: &str, budget: &str, rate: &str, index: &str, range: (u64, u64)| {
        let args = contract_flags(
            &[&aud(ga), &aud(gb)],
            &status,
            index,
            &["--budget", budget, "--rate", rate],
            1,
            range,
        );
        fleet.grant(planner, file, &args, Some(&status.current))
    };

    // Budget: the parent allows 4 calls, each sibling 3.
    let c_budget = grant("c-budget.jwt", "4", "50", "1", (100, 200));
    let dtc = cada_contract::digest_of(&c_budget);
    for (a, file) in [(worker, "w-budget.chain"), (helper, "h-budget.chain")] {
        let c = planner.delegate(&a.did, &dtc, &["--budget", "3"]).unwrap();
        a.install(file, &c, &[&status.current]).unwrap();
    }
    let mut accepted = 0;
    let mut codes = Vec::new();
    for (a, port) in [
        (worker, ga),
        (worker, gb),
        (worker, ga),
        (helper, gb),
        (helper, ga),
        (helper, gb),
    ] {
        let r = gate_call(a, port, "echo", None, None).unwrap();
        if r.status == 200 {
            accepted += 1;
        } else {
            codes.push(r.code());
        }
    }
    assert_eq!(
        accepted, 4,
        "the parent's budget of 4 holds for both siblings: {codes:?}"
    );
    assert_eq!(codes, vec!["delegation.budget"; 2], "{codes:?}");
    assert_eq!(
        seen.lock().unwrap().len(),
        4,
        "refused calls never reach the upstream"
    );

    // Rate: the parent allows 1 call per second, each sibling 1. Both siblings sign in the
    // same round and call through different gates: past the first call of a second, the
    // parent's counter refuses (a round may straddle a second boundary: then both pass).
    let c_rate = grant("c-rate.jwt", "1000", "1", "2", (300, 400));
    let dtc = cada_contract::digest_of(&c_rate);
    for (a, file) in [(worker, "w-rate.chain"), (helper, "h-rate.chain")] {
        let c = planner.delegate(&a.did, &dtc, &["--rate", "1"]).unwrap();
        a.install(file, &c, &[&status.current]).unwrap();
    }
    let mut refused = Vec::new();
    for round in 0..5 {
        std::thread::sleep(Duration::from_millis(1100));
        let body = tool_call(round, "echo");
        let pw = worker
            .proof("POST", &format!("{}mcp", aud(ga)), Some(&body), None, None)
            .unwrap();
        let ph = helper
            .proof("POST", &format!("{}mcp", aud(gb)), Some(&body), None, None)
            .unwrap();
        let rw = gate_send(ga, &pw, &body, &[]);
        let rh = gate_send(gb, &ph, &body, &[]);
        assert_eq!(rw.status, 200, "the first call of the round: {}", rw.body);
        if rh.status != 200 {
            refused.push(rh.code());
        }
    }
    assert!(
        !refused.is_empty(),
        "no round was refused past the parent's rate"
    );
    assert!(
        refused.iter().all(|c| c == "delegation.rate"),
        "{refused:?}"
    );
}

/// A verifier that has the helper's chain cached by its leaf's digest must refuse a
/// request whose `CADA-Contract` carries that leaf under other links (a re-encoded middle
/// link, a link moved up), as a verifier that has not seen it does: the chain sent must be
/// the one the proof names (`cada.dch`), cached or not — as a single contract sent must be
/// the one `cada.dtc` names.
#[test]
fn a_warm_verifier_refuses_a_chain_whose_upper_links_are_not_the_ones_the_proof_names() {
    let dir = TempDir::new("deleg-warm");
    let d = &dir.0;
    let w = World::new(d, "sim", &["planner", "worker", "helper"], 2, &[]);
    let helper = w.agent("helper");
    let (_v, port) = w.verifier("verifier", 2, "", &[]);
    let d1 = w.delegate_installed(
        "planner",
        "worker",
        &w.c0,
        &["--tool", "echo", "--max-depth", "1"],
    );
    let d2 = w.delegate_installed("worker", "helper", &d1, &["--tool", "echo"]);
    assert_eq!(verify(helper, port, &d2).0, 200, "warm: the chain cached");
    let widened = reencode(links(&d1)[1], |p| {
        p["credentialSubject"]["tools"] = serde_json::json!(["echo", "add"]);
    });
    assert_verifier(
        verify(helper, port, &join(&[&w.c0, &widened, links(&d2)[2]])),
        "delegation.signature",
        "re-encoded middle link, warm",
    );
    assert_verifier(
        verify(helper, port, &join(&[&w.c0, links(&d2)[2]])),
        "delegation.link",
        "a link moved up the chain, warm",
    );
}
