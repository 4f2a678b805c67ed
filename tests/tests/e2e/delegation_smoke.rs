//! Issue 24, the enclave and parent side alone (the full acceptance is `delegation.rs`):
//! two sim enclaves locked to one owner; the owner's contract lets the planner delegate;
//! `cada-parent delegate` has the planner's enclave sign a narrower contract for the
//! worker's key; the worker's host installs the chain with `cada-parent contract install`;
//! the worker's proofs name the chain (`cada.dtc` the leaf, `cada.dch` the root) and carry
//! the whole chain as `CADA-Contract`; anything wider is refused by the planner's enclave,
//! and anything outside the delegation by the worker's.
use cada_e2e::delegation::*;
use cada_e2e::*;

#[test]
fn a_planner_delegates_to_a_worker_whose_proofs_name_the_chain() {
    let dir = TempDir::new("deleg-smoke");
    let d = &dir.0;
    let fleet = Fleet::start(d, "sim", &["planner", "worker"], &[]);
    let (planner, worker) = (fleet.agent("planner"), fleet.agent("worker"));
    let status = StatusList::new(&fleet, "owner");
    let rules = may_delegate(2, 1000, 2000);
    let mut args = vec![
        "--audience",
        "https://api.example.com/",
        "--method",
        "GET",
        "--method",
        "POST",
        "--tool",
        "search",
        "--tool",
        "fetch",
        "--budget",
        "100",
        "--valid-for",
        "30m",
        "--status-list",
        &status.url,
        "--status-index",
        "7",
    ];
    args.extend(rules.iter().map(String::as_str));
    let root = fleet.grant(planner, "planner.jwt", &args, Some(&status.current));
    let root_dtc = cada_contract::digest_of(&root);

    // Wider than the owner's contract: refused by the planner's own enclave, with the
    // dimension's stable code.
    for (wider, code) in [
        (vec!["--method", "DELETE"], "delegation.wider.method"),
        (
            vec!["--audience", "https://api.example.com.evil.net/"],
            "delegation.wider.audience",
        ),
        (vec!["--budget", "101"], "delegation.wider.budget"),
        (vec!["--max-depth", "2"], "delegation.depth"),
    ] {
        let e = planner
            .delegate(&worker.did, &root_dtc, &wider)
            .unwrap_err();
        assert!(e.contains(code), "{wider:?}: {e}");
    }

    let chain = planner
        .delegate(
            &worker.did,
            &root_dtc,
            &[
                "--audience",
                "https://api.example.com/v1",
                "--method",
                "GET",
                "--tool",
                "search",
                "--budget",
                "10",
                "--minutes",
                "10",
                "--task",
                "smoke-24",
            ],
        )
        .unwrap();
    assert_eq!(links(&chain).len(), 2);
    assert_eq!(links(&chain)[0], root);
    let leaf = leaf_dtc(&chain);
    let p = payload(links(&chain)[1]);
    assert_eq!(p["iss"], planner.did.as_str());
    assert_eq!(p["sub"], worker.did.as_str());
    assert_eq!(p["cadaDelegation"]["parent"], root_dtc.as_str());
    assert_eq!(p["credentialStatus"]["statusListIndex"], "1000");

    // The planner's hash chain records the delegation and its task.
    let (code, out, err) = planner.cli(&["contract", "list"]);
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let events = listed["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["kind"] == "delegate"
            && e["detail"] == format!("{leaf} {} {root_dtc} smoke-24", worker.did).as_str()),
        "{events:?}"
    );

    // The planner's chain is not the worker's own: its leaf names the worker's key.
    let e = planner
        .install("stolen.txt", &chain, &[&status.current])
        .unwrap_err();
    assert!(e.contains("contract.subject"), "{e}");

    // The worker installs the chain; proofs under it name it.
    let installed = worker
        .install("chain.txt", &chain, &[&status.current])
        .unwrap();
    assert_eq!(installed["digest"], leaf.as_str());
    assert_eq!(installed["chain"], serde_json::json!([root_dtc]));
    let proof = worker
        .proof("GET", "https://api.example.com/v1/items", None, None, None)
        .unwrap();
    let claims = proof_claims(&proof);
    assert_eq!(claims["cada"]["dtc"], leaf.as_str());
    assert_eq!(claims["cada"]["dch"], serde_json::json!([root_dtc]));
    assert_eq!(
        proof["contract"],
        chain.as_str(),
        "CADA-Contract: the chain"
    );
    let (code, out, err) = worker.cli(&[
        "sign",
        "--method",
        "GET",
        "--url",
        "https://api.example.com/v1/items",
        "--with-evidence",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().any(|l| l == format!("CADA-Contract: {chain}")),
        "{out}"
    );

    // Outside the delegation (though inside the owner's contract): the worker's enclave
    // refuses.
    for (method, url, code) in [
        (
            "GET",
            "https://api.example.com/v2/items",
            "contract.not_permitted.audience",
        ),
        (
            "POST",
            "https://api.example.com/v1/items",
            "contract.not_permitted.method",
        ),
    ] {
        let (st, body) = worker.proof(method, url, None, None, None).unwrap_err();
        assert_eq!((st, problem_code(&body).as_str()), (403, code), "{body}");
    }
}
