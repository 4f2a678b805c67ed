//! Issue 24, the token's parties (RFC 8693 §4.1) checked by a stock library: an agent gets
//! an access token from the real `cada-sts` and panva's `jose` (pinned, installed by the
//! test) verifies it as any RFC 9068 resource server would — signature under the STS's JWKS,
//! `typ: at+jwt`, issuer, audience — and the test asserts what that library returns: the
//! owner as the principal (`sub`), the agent acting for it (`act.sub`, and nothing nested
//! under an owner's contract), `client_id`, `cnf.jkt` and `cada_dch`. A token altered after
//! signing (the pre-issue-24 shape forged back: agent in `sub`, owner in `act.sub`), or
//! presented for another audience, is refused by the library. Under a delegation chain
//! the helper's request (token and DPoP proof) is also accepted by Node's oauth4webapi,
//! and introspection (RFC 7662) answers the same parties.
use std::path::Path;
use std::time::Duration;

use cada_e2e::mcp_interop::LockedAgent;
use cada_e2e::stock_jwt::{jose_package, jose_verify, Case};
use cada_e2e::*;
use cada_protocol::b64;

/// The STS trusting `agent`'s image and owner for `api`, started on `port` as `issuer`.
fn start_sts(d: &Path, agent: &LockedAgent, port: u16, issuer: &str, api: &str) -> Proc {
    agent.start_sts(d, port, issuer, &[api], &[]).0
}

/// The token the daemon obtained from the STS for a `GET url` under `resource`.
fn daemon_token(sock: &Path, url: &str, resource: &str) -> String {
    let ask = serde_json::json!({"method": "GET", "url": url, "resource": resource});
    let (st, p) = daemon_pop(sock, &ask);
    assert_eq!(st, 200, "{p}");
    p["authorization"]
        .as_str()
        .unwrap()
        .strip_prefix("DPoP ")
        .unwrap()
        .to_owned()
}

/// Under an owner's contract: `sub` = the owner, `act` = exactly `{"sub": <agent>}`,
/// `client_id` the agent, `cnf.jkt` the agent's key, `cada_dch` = `[cada.dtc]` — as `jose`
/// returns them after verifying the token. Before issue 24 the token said `sub` = agent,
/// `act.sub` = owner (the reverse of RFC 8693 §4.1); that shape, forged back into a real
/// token, no longer verifies.
#[test]
fn a_stock_jwt_library_reads_the_owner_as_principal_and_the_agent_as_actor() {
    // Install the library before any clock starts.
    jose_package();
    let dir = TempDir::new("sts-act-owner");
    let d = &dir.0;
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let agent = LockedAgent::start(d, &["--sts", &issuer]);
    let api = "https://api.example.com/";
    agent.grant(
        d,
        &[
            "--audience",
            issuer.as_str(),
            "--audience",
            api,
            "--method",
            "POST",
            "--method",
            "GET",
        ],
    );
    let contract = std::fs::read_to_string(d.join("contract.jwt")).unwrap();
    let dtc = cada_contract::digest_of(contract.trim());
    let _sts = start_sts(d, &agent, port, &issuer, api);
    let (_, id) = http(
        &agent.sock,
        "GET",
        "/v1/identity",
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    let jkt = id["jkt"].as_str().unwrap().to_owned();

    let resource = "https://api.example.com/v1";
    let token = daemon_token(&agent.sock, "https://api.example.com/v1/orders", resource);
    // The same token with its claims rewritten to the old shape, the signature kept.
    let parts: Vec<&str> = token.split('.').collect();
    let mut old: serde_json::Value =
        serde_json::from_slice(&b64::decode("at", parts[1], 8192).unwrap()).unwrap();
    old["sub"] = agent.did.clone().into();
    old["act"] = serde_json::json!({"sub": agent.owner_did});
    let forged = format!("{}.{}.{}", parts[0], b64::encode(old.to_string()), parts[2]);
    let jwks = format!("{issuer}/jwks");
    let got = jose_verify(
        &issuer,
        &jwks,
        &[
            Case {
                name: "token",
                token: &token,
                audience: resource,
            },
            Case {
                name: "another audience",
                token: &token,
                audience: "https://other.example.com/",
            },
            Case {
                name: "old shape forged",
                token: &forged,
                audience: resource,
            },
        ],
    );
    let ok = &got[0];
    assert_eq!(ok["ok"], true, "{got:?}");
    assert_eq!(ok["header"]["typ"], "at+jwt", "{ok}");
    assert_eq!(ok["header"]["alg"], "ES256", "{ok}");
    let c = &ok["payload"];
    assert_eq!(c["iss"], issuer.as_str());
    assert_eq!(c["aud"], resource);
    assert_eq!(
        c["sub"],
        agent.owner_did.as_str(),
        "the owner is the principal"
    );
    assert_eq!(
        c["act"],
        serde_json::json!({"sub": agent.did}),
        "the agent acts, and nobody before it: {c}"
    );
    assert_eq!(c["client_id"], agent.did.as_str());
    assert_eq!(c["cnf"], serde_json::json!({"jkt": jkt}));
    assert_eq!(c["cada_dch"], serde_json::json!([dtc]));
    assert_eq!(c["cada"]["dtc"], dtc.as_str());
    assert_eq!(cada_e2e::delegation::actors(c), vec![agent.did.as_str()]);

    assert_eq!(got[1]["ok"], false, "{got:?}");
    let e = got[1]["error"].as_str().unwrap();
    assert!(e.starts_with("ERR_JWT_CLAIM_VALIDATION_FAILED"), "{e}");
    assert!(e.contains("aud"), "{e}");
    assert_eq!(got[2]["ok"], false, "{got:?}");
    let e = got[2]["error"].as_str().unwrap();
    assert!(
        e.starts_with("ERR_JWS_SIGNATURE_VERIFICATION_FAILED"),
        "{e}"
    );
}

/// Under delegation chains, with three enclaves locked to one owner (owner → planner →
/// worker → helper): the worker's token (chain `C0~D1`) names the owner as principal and
/// `act` = `{"sub": worker, "act": {"sub": planner}}`; the helper's (chain `C0~D1~D2`)
/// `{"sub": helper, "act": {"sub": worker, "act": {"sub": planner}}}` — every nested `act`
/// exactly, as the stock library returns it after verifying the token — with `cada_dch`
/// the chain's digests root first, `cada.dtc` the leaf and `cnf.jkt` the holder's key.
#[test]
fn a_stock_jwt_library_reads_every_nested_actor_of_a_delegation_chain() {
    use cada_e2e::delegation::{digests, leaf_dtc, root_flags, sts_exchange, Fleet, StatusList};
    jose_package();
    super::sts::node_packages();
    let dir = TempDir::new("sts-act-chain");
    let d = &dir.0;
    let fleet = Fleet::start(d, "sim", &["planner", "worker", "helper"], &[]);
    let (planner, worker, helper) = (
        fleet.agent("planner"),
        fleet.agent("worker"),
        fleet.agent("helper"),
    );
    let status = StatusList::new(&fleet, "owner");
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let api = "https://api.example.com/v1";
    let policy = fleet.policy(
        "sts-policy.toml",
        &fleet.audience_toml("https://api.example.com/", 2, ""),
    );
    let secret = "s3cret-for-introspection-0123456789abcdef";
    let secret_file = d.join("admin-secret");
    std::fs::write(&secret_file, secret).unwrap();
    let _sts = cada_e2e::delegation::start_sts(
        d,
        "sts",
        port,
        &issuer,
        &policy,
        &["--admin-secret-file", secret_file.to_str().unwrap()],
    );

    let args = root_flags(
        &[
            "--audience",
            api,
            "--audience",
            &issuer,
            "--method",
            "POST",
            "--method",
            "GET",
        ],
        &status,
        "1",
        2,
        (100, 200),
    );
    let c0 = fleet.grant(planner, "c0.jwt", &args, Some(&status.current));
    let dtc0 = cada_contract::digest_of(&c0);
    // Each link ends before its parent (a child may not outlive it: delegation.wider.time).
    let narrow = |minutes: &'static str, max_depth: Option<&'static str>| {
        let mut a = vec![
            "--audience",
            api,
            "--audience",
            issuer.as_str(),
            "--method",
            "POST",
            "--minutes",
            minutes,
        ];
        if let Some(k) = max_depth {
            a.extend(["--max-depth", k]);
        }
        a
    };
    let d1 = planner
        .delegate(&worker.did, &dtc0, &narrow("20", Some("1")))
        .expect("the planner delegates");
    worker
        .install("d1.jwt", &d1, &[&status.current])
        .expect("the worker installs its chain");
    let d2 = worker
        .delegate(&helper.did, &leaf_dtc(&d1), &narrow("10", None))
        .expect("the worker delegates");
    helper
        .install("d2.jwt", &d2, &[&status.current])
        .expect("the helper installs its chain");

    // Each exchanges its proof and chain at the real STS (the first exchange names the
    // owner's status list, which the STS then fetches: retried until it holds it).
    let token_of = |agent: &cada_e2e::delegation::Agent, chain: &str| {
        let mut last = serde_json::Value::Null;
        for _ in 0..40 {
            let (st, answer) = sts_exchange(agent, port, &issuer, chain, api, None);
            if st == 200 {
                return answer["access_token"].as_str().unwrap().to_owned();
            }
            last = answer;
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("{} got no token: {last}", agent.name);
    };
    let worker_token = token_of(worker, &d1);
    let helper_token = token_of(helper, &d2);
    let jkt = |agent: &cada_e2e::delegation::Agent| {
        let (_, id) = http(
            &agent.sock,
            "GET",
            "/v1/identity",
            None,
            Duration::from_secs(5),
        )
        .unwrap();
        serde_json::from_str::<serde_json::Value>(&id).unwrap()["jkt"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let got = jose_verify(
        &issuer,
        &format!("{issuer}/jwks"),
        &[
            Case {
                name: "worker",
                token: &worker_token,
                audience: api,
            },
            Case {
                name: "helper",
                token: &helper_token,
                audience: api,
            },
        ],
    );
    for (i, (agent, chain, act)) in [
        (
            worker,
            &d1,
            serde_json::json!({"sub": worker.did, "act": {"sub": planner.did}}),
        ),
        (
            helper,
            &d2,
            serde_json::json!({"sub": helper.did,
                "act": {"sub": worker.did, "act": {"sub": planner.did}}}),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let ok = &got[i];
        assert_eq!(ok["ok"], true, "{got:?}");
        assert_eq!(ok["header"]["typ"], "at+jwt", "{ok}");
        let c = &ok["payload"];
        assert_eq!(c["sub"], fleet.owner_did.as_str(), "the root owner: {c}");
        assert_eq!(c["act"], act, "{}: {c}", agent.name);
        assert_eq!(c["client_id"], agent.did.as_str(), "{c}");
        assert_eq!(c["cnf"], serde_json::json!({"jkt": jkt(agent)}), "{c}");
        assert_eq!(c["cada_dch"], serde_json::json!(digests(chain)), "{c}");
        assert_eq!(c["cada"]["dtc"], leaf_dtc(chain).as_str(), "{c}");
    }
    // A stock RFC 9068 + DPoP resource server (oauth4webapi, the STS tests' harness)
    // accepts the helper's request — its token and a fresh proof of the helper's key
    // carrying the token's ath — and reads the same principal and nested actors.
    let url = "https://api.example.com/v1/orders";
    let proof = mint(&helper.sock, "POST", url, Some(&helper_token), false);
    let rs = super::sts::node_rs(
        &issuer,
        &[
            serde_json::json!({"name": "helper", "method": "POST", "url": url,
            "token": helper_token, "dpop": proof["dpop"], "audience": api,
            "foreign_key": false}),
        ],
    );
    assert_eq!(rs[0]["ok"], true, "{rs:?}");
    assert_eq!(rs[0]["sub"], fleet.owner_did.as_str(), "{rs:?}");
    assert_eq!(rs[0]["act"], got[1]["payload"]["act"], "{rs:?}");
    // Introspection (RFC 7662) answers the same parties.
    let body = format!("token={helper_token}");
    let (st, _, answer) = http_tcp_with(
        port,
        "POST",
        "/introspect",
        "application/x-www-form-urlencoded",
        &[("Authorization", &format!("Bearer {secret}"))],
        body.as_bytes(),
    );
    assert_eq!(st, 200, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["sub"], fleet.owner_did.as_str(), "{v}");
    assert_eq!(v["act"], got[1]["payload"]["act"], "{v}");
    assert_eq!(v["cada_dch"], serde_json::json!(digests(&d2)), "{v}");
}
