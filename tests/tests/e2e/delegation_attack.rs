//! Adversarial review of issue 24 (docs/reviews/delegation-1.md): attacks on delegation
//! chains with the real binaries on loopback. Each `#[ignore = "finding N"]` test fails on
//! the code reviewed and passes once the finding is fixed.
use std::time::Duration;

use cada_e2e::delegation::*;
use cada_e2e::*;

/// Finding 1: a delegator may delegate to its own key. The enclave counts a contract's
/// opens (and signatures) per contract digest, so each self-delegation is a fresh budget:
/// the owner granted ONE open of `report`, the planner opens the same envelope again under
/// a delegation to itself. Expected: the enclave refuses a delegation to its own key (or any
/// key already in the chain), or counts opens across the tree.
#[test]
fn a_delegator_cannot_multiply_its_open_budget_by_delegating_to_itself() {
    let dir = TempDir::new("deleg-attack-self");
    let d = &dir.0;
    let (owner_did, owner_key) = keygen(d, "owner");
    let planner = start_agent(d, "sim", "planner", &["--dev-secrets"], &[], &owner_key);
    let fleet = Fleet {
        platform: "sim".into(),
        dir: d.to_owned(),
        owner_did,
        owner_key: owner_key.clone(),
        agents: Vec::new(),
    };
    let status = StatusList::new(&fleet, "owner");
    let args = root_flags(
        &[
            "--audience",
            "https://reports.example/",
            "--method",
            "GET",
            "--open",
            "report=1",
        ],
        &status,
        "1",
        2,
        (100, 200),
    );
    let c0 = fleet.owner_contract(&planner.did, "c0.jwt", &args);
    planner
        .install("c0.jwt", &c0, &[&status.current])
        .expect("the planner installs its contract");

    // A service seals data for the planner, label `report`.
    let policy = d.join("seal.toml");
    std::fs::write(
        &policy,
        format!(
            "[roots]\nnitro = [{:?}]\n[[audience]]\nprefix = \"https://reports.example/\"\nmeasurements = [{{ PCR0 = \"{}\" }}]\n",
            planner.root.display().to_string(),
            planner.measurement
        ),
    )
    .unwrap();
    let (st, ev) = http(
        &planner.sock,
        "GET",
        "/v1/evidence",
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(st, 200);
    let ev: serde_json::Value = serde_json::from_str(&ev).unwrap();
    std::fs::write(d.join("evidence.b64"), ev["evidence"].as_str().unwrap()).unwrap();
    std::fs::write(d.join("data.txt"), "the numbers").unwrap();
    let out = std::process::Command::new(bin("cada-verify"))
        .args([
            "seal",
            "--evidence",
            d.join("evidence.b64").to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            "--audience",
            "https://reports.example/q3",
            "--label",
            "report",
            "--in",
            d.join("data.txt").to_str().unwrap(),
            "--allow-dev-platform",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::write(d.join("report.env"), &out.stdout).unwrap();
    let open = || {
        planner.cli(&[
            "open",
            "--label",
            "report",
            d.join("report.env").to_str().unwrap(),
        ])
    };
    let (code, data, err) = open();
    assert_eq!((code, data.as_str()), (0, "the numbers"), "{err}");
    let (code, _, err) = open();
    assert!(code != 0 && err.contains("secret.open_budget"), "{err}");

    // The planner delegates to ITSELF and installs the delegation: a fresh budget.
    let self_chain = planner.delegate(&planner.did, &cada_contract::digest_of(&c0), &[]);
    if let Ok(chain) = &self_chain {
        let _ = planner.install("self.chain", chain, &[&status.current]);
    }
    assert!(
        matches!(&self_chain, Err(e) if e.contains("delegation.cycle")),
        "the planner's enclave refuses to delegate to its own key: {self_chain:?}"
    );
    let (code, data, err) = open();
    assert!(
        code != 0,
        "the owner granted one open; the planner opened the envelope again ({data:?}) under a \
         delegation to itself (signed: {}) {err}",
        self_chain.is_ok()
    );
}

/// Finding 2: a chain the contract format and the policy allow (8 delegations,
/// `MAX_CHAIN_LINKS`, `MAX_CHAIN_LEN` = 256 KiB) does not reach the rules. Each link carries
/// its delegator's evidence base64url inside a base64url payload (about 7.5 KB on `sim`), so
/// 8 links make a ~62 KB chain: the gate's default header limit (64 KiB for all headers:
/// DPoP, CADA-Evidence, CADA-Contract) answers 431 and `cada-verify serve`'s body limit
/// (64 KiB) answers 413, before any rule runs. Expected: both accept the proof of a chain
/// every limit of the format allows (or the format's limits and the servers' agree).
#[test]
fn a_chain_of_eight_delegations_reaches_the_rules_at_the_gate_and_cada_verify_serve() {
    eight_links("sim", 0);
}

/// The same on `sim-snp`, each link granting 24 more audiences (every delegation keeps
/// them), so that the chain alone is beyond the 64 KiB the servers read before the fix —
/// in the gate's head, `cada-verify serve`'s body and the STS's exchange body.
#[test]
fn a_chain_of_eight_wide_sim_snp_delegations_reaches_the_gate_cada_verify_serve_and_the_sts() {
    eight_links("sim-snp", 24);
}

fn eight_links(platform: &str, more_audiences: usize) {
    let dir = TempDir::new(&format!("deleg-attack-deep-{platform}"));
    let d = &dir.0;
    let names = ["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8"];
    let fleet = Fleet::start(d, platform, &names, &[]);
    let status = StatusList::new(&fleet, "owner");
    let (up_port, _seen) = mcp_upstream();
    let g_port = free_port();
    let gate_aud = format!("http://127.0.0.1:{g_port}/");
    // nginx in front of the same gate (forward auth), with the block docs/gate.md documents.
    let n_port = free_port();
    let nginx_aud = format!("http://127.0.0.1:{n_port}/");
    let policy = fleet.policy(
        "policy.toml",
        &format!(
            "{}{}",
            fleet.audience_toml(&gate_aud, 8, ""),
            fleet.audience_toml(&nginx_aud, 8, "")
        ),
    );
    let _gate = status_gate(
        d,
        "gate",
        g_port,
        up_port,
        &policy,
        &status,
        &["--trusted-proxy", "127.0.0.1"],
    );
    let _nginx = crate::path_confusion::start_nginx(
        d,
        &[crate::path_confusion::documented_nginx_server(
            n_port,
            &format!("127.0.0.1:{g_port}"),
            &format!("127.0.0.1:{up_port}"),
        )],
        &[n_port],
    );
    let (_v, v_port) = status_verifier(d, "v", &policy, &status, &[]);
    // The STS's token endpoint is an audience too: the agents sign proofs for it.
    let s_port = free_port();
    let issuer = format!("http://127.0.0.1:{s_port}");
    let more: Vec<String> = (0..more_audiences)
        .map(|i| {
            format!("https://audience-{i:02}.example.com/a/long/path/that/every/delegation/keeps/")
        })
        .collect();
    let mut flags = vec![
        "--audience",
        &gate_aud,
        "--audience",
        &issuer,
        "--audience",
        &nginx_aud,
        "--method",
        "POST",
        "--tool",
        "echo",
    ];
    for a in &more {
        flags.extend(["--audience", a]);
    }
    let args = root_flags(&flags, &status, "1", 8, (100, 10_000));
    let mut chain = fleet.grant(fleet.agent("a0"), "c0.jwt", &args, Some(&status.current));
    for i in 1..names.len() {
        let from = fleet.agent(names[i - 1]);
        let to = fleet.agent(names[i]);
        let depth = (8 - i).to_string();
        let mut a = vec!["--tool", "echo"];
        if i + 1 < names.len() {
            a.extend(["--max-depth", depth.as_str()]);
        }
        chain = from
            .delegate(&to.did, &leaf_dtc(&chain), &a)
            .unwrap_or_else(|e| panic!("{} delegates: {e}", from.name));
        to.install(&format!("{}.chain", to.name), &chain, &[&status.current])
            .unwrap_or_else(|e| panic!("{} installs: {e}", to.name));
    }
    let leaf = fleet.agent(names[names.len() - 1]);
    let url = format!("http://127.0.0.1:{g_port}/mcp");
    let body = tool_call(7, "echo");
    // cada-verify serve: the leaf's proof (retried while the status list is fetched).
    let mut r = (0, serde_json::Value::Null);
    for _ in 0..20 {
        let p = leaf.proof("POST", &url, None, None, None).unwrap();
        r = verify_at(v_port, &p, "POST", &url, p["contract"].as_str());
        if r.0 == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let verified = r.clone();
    let p = leaf.proof("POST", &url, Some(&body), None, None).unwrap();
    let sizes = format!(
        "chain {} bytes, evidence {} bytes, proof {} bytes",
        p["contract"].as_str().map_or(0, str::len),
        p["evidence"].as_str().map_or(0, str::len),
        p["dpop"].as_str().map_or(0, str::len)
    );
    let a = std::panic::catch_unwind(|| gate_send(g_port, &p, &body, &[]));
    match a {
        Ok(a) => assert_eq!(
            (a.status, a.result_text().as_deref(), verified.0),
            (200, Some("echo"), 200),
            "an 8-link chain the policy allows ({sizes}): gate {} {}; cada-verify serve {}",
            a.head.lines().next().unwrap_or_default(),
            a.body,
            verified.1
        ),
        Err(_) => panic!("the gate dropped the request of an 8-link chain ({sizes})"),
    }
    // Through nginx: the chain in CADA-Contract passes nginx's header buffers and reaches
    // the gate's /_cada/auth, then the upstream.
    let n_url = format!("http://127.0.0.1:{n_port}/mcp");
    let p = leaf.proof("POST", &n_url, Some(&body), None, None).unwrap();
    let a = gate_send(n_port, &p, &body, &[]);
    assert_eq!(
        (a.status, a.result_text().as_deref()),
        (200, Some("echo")),
        "an 8-link chain through nginx ({sizes}): {} {}",
        a.head.lines().next().unwrap_or_default(),
        a.body
    );
    // The STS: the chain in the exchange's body (subject_token). With wider links the chain
    // alone is beyond the 64 KiB the STS (and cada-verify serve) read before the fix.
    if more_audiences > 0 {
        assert!(chain.len() > 64 * 1024, "{sizes}");
    }
    let _sts = start_sts(
        d,
        "sts",
        s_port,
        &issuer,
        &policy,
        &["--status-list", &status.url],
    );
    let (st, answer) = sts_exchange(leaf, s_port, &issuer, &chain, &url, None);
    assert_eq!(
        (st, answer["access_token"].is_string()),
        (200, true),
        "the STS exchange of an 8-link chain ({sizes}): {answer}"
    );
}

/// Finding 3: anyone who receives one proof of a delegatee can suspend the whole tree. A
/// resource server the worker calls (it gets the worker's DPoP proof, and checks it at the
/// fleet's `cada-verify serve`) submits the same proof again a few times: each replay is a
/// refusal counted in the refusal window of EVERY link of the chain, so the planner's own
/// owner contract crosses its `--max-refusals` and is suspended fleet-wide — the planner
/// and every sibling stop, though neither they nor the worker did anything wrong.
/// Expected: a replayed proof (which the prover's enclave did not sign twice) is not the
/// chain's behaviour and does not count against its links (at least not against the
/// ancestors), so the planner's next call is accepted.
#[test]
fn a_replayed_worker_proof_does_not_suspend_the_planners_contract() {
    let dir = TempDir::new("deleg-attack-replay");
    let d = &dir.0;
    let fleet = Fleet::start(d, "sim", &["planner", "worker"], &[]);
    let (planner, worker) = (fleet.agent("planner"), fleet.agent("worker"));
    let mut status = StatusList::new(&fleet, "owner");
    let url = "https://api.example.com/v1/orders";
    let args = root_flags(
        &[
            "--audience",
            "https://api.example.com/v1",
            "--method",
            "POST",
            "--max-refusals",
            "3/5m",
        ],
        &status,
        "1",
        1,
        (100, 200),
    );
    let c0 = fleet.grant(planner, "c0.jwt", &args, Some(&status.current));
    let chain = planner
        .delegate(&worker.did, &cada_contract::digest_of(&c0), &[])
        .expect("the planner delegates");
    worker
        .install("d1.chain", &chain, &[&status.current])
        .expect("the worker installs");
    let policy = fleet.policy(
        "v.toml",
        &fleet.audience_toml("https://api.example.com/", 1, ""),
    );
    let (_v, port) = status_verifier(d, "v", &policy, &status, &[]);
    // The planner's own call is accepted (retried while the verifier fetches the list).
    let planner_call = || {
        let p = planner.proof("POST", url, None, None, None).unwrap();
        verify_at(port, &p, "POST", url, Some(&c0))
    };
    let mut r = planner_call();
    for _ in 0..20 {
        if r.0 == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        r = planner_call();
    }
    assert_eq!(r.0, 200, "{}", r.1);
    // The worker makes ONE call; the resource server that received it replays it.
    let p = worker.proof("POST", url, None, None, None).unwrap();
    assert_eq!(verify_at(port, &p, "POST", url, Some(&chain)).0, 200);
    let mut codes = Vec::new();
    for _ in 0..4 {
        let (_, a) = verify_at(port, &p, "POST", url, Some(&chain));
        codes.push(verifier_code(&a));
    }
    // The planner, who did nothing wrong, calls again.
    let r = planner_call();
    assert_eq!(
        r.0, 200,
        "after 4 replays of one worker proof by a third party ({codes:?}), the planner's own \
         contract is refused: {}",
        r.1
    );
    // The same with a refusal before the replay check: the owner revokes the worker's link,
    // and the party holding the worker's proof sends it four more times (refused
    // contract.revoked at rule 13, so its jti is never spent). One proof the worker's
    // enclave signed counts at most once.
    let p1 = payload(links(&chain)[1]);
    let index: u64 = p1["credentialStatus"]["statusListIndex"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| p1["credentialStatus"]["statusListIndex"].as_u64())
        .unwrap();
    status.revoke(index);
    let mut codes = Vec::new();
    for _ in 0..40 {
        let (_, a) = verify_at(port, &p, "POST", url, Some(&chain));
        let c = verifier_code(&a);
        if c == "contract.revoked" {
            codes.push(c);
            if codes.len() == 4 {
                break;
            }
        } else {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert_eq!(
        codes.len(),
        4,
        "the verifier refuses the revoked link: {codes:?}"
    );
    let r = planner_call();
    assert_eq!(
        r.0, 200,
        "after one worker proof refused 4 times ({codes:?}), the planner's own contract is \
         refused: {}",
        r.1
    );
}
