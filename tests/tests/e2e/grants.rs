//! One-transaction grants (issue 23, RFC 9396 `authorization_details`) end to end with the
//! real `cada-gate`, `cada-sts`, `cada-enclave`, `cada-parent` and `redis-server`
//! processes: a grant to "transfer at most 500 USD to alice or bob, memo inv-…, once" is
//! admitted once and refused the second time (`grant.used`), also by a second gate sharing
//! Redis and also when the first use failed upstream; refused with other arguments (each
//! constraint kind), for another tool, at another server, after its minutes, tampered with,
//! and where nobody reads the arguments (forward auth); issued by `cada-owner grant
//! --authorization-details`, signed by the enclave, checked by the gate; and exchanged at
//! `cada-sts` for a token of exactly that transaction, which the gate admits once, under the
//! same single-use key as the grant itself.
//!
//! Most cases sign with a key outside any enclave whose `sim` evidence names the owner (as
//! an enclave locked to the owner would), so that the gate's own checks are what is tested:
//! the enclave refuses before signing what it can see (tool, server, time, single use), and
//! the last test shows it doing so.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use cada_contract::{AuthorizationDetail, Grant, OwnerKey, Subject};
use cada_e2e::mcp_interop::*;
use cada_e2e::*;
use cada_protocol::access_token::{GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_CONTRACT};
use cada_protocol::{b64, mcp};
use serde_json::Value;

use super::grants_attack::{Signer, Upstream};

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The issue's transaction, at the servers `locations`: amount 1..=500, currency USD, to
/// alice or bob, memo starting `inv-`, nothing else, once.
fn transfer_details(locations: &[String], identifier: Option<&str>) -> String {
    let id = identifier.map_or(String::new(), |i| format!(r#","identifier":"{i}""#));
    format!(
        r#"[{{"type":"mcp_tool_call","locations":{},"actions":["tools/call"],"tool":"transfer",
            "arguments":{{"amount":{{"min":1,"max":500}},"currency":{{"eq":"USD"}},
                          "to":{{"one_of":["alice","bob"]}},"memo":{{"prefix":"inv-"}}}},
            "additional_arguments":false,"single_use":true{id}}}]"#,
        serde_json::to_string(locations).unwrap()
    )
}

const GOOD: &str = r#"{"amount":500,"currency":"USD","to":"alice","memo":"inv-42"}"#;

/// A `tools/call` body.
fn call_body(tool: &str, arguments: &str) -> Vec<u8> {
    format!(
        r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{tool}","arguments":{arguments}}}}}"#
    )
    .into_bytes()
}

/// The outcome of one call: status, refusal code and rule (from the JSON-RPC error's
/// data), the challenge, and whether the upstream got the request.
#[derive(Debug)]
struct Outcome {
    status: u16,
    code: String,
    rule: u64,
    challenge: String,
    reached: bool,
}

fn attempt(port: u16, headers: &[(String, String)], body: &[u8], up: &Upstream) -> Outcome {
    let before = up.count();
    let (status, head, text) = send(port, "POST", "/mcp", &refs(headers), body);
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let data = &v["error"]["data"];
    Outcome {
        status,
        code: data["code"].as_str().unwrap_or_default().to_owned(),
        rule: data["rule"].as_u64().unwrap_or(0),
        challenge: head
            .lines()
            .find_map(|l| l.strip_prefix("www-authenticate: "))
            .unwrap_or_default()
            .to_owned(),
        reached: up.count() > before,
    }
}

/// A policy trusting the agent's sim root, with one `[[audience]]` per prefix naming
/// `owner` (and `extra` TOML first).
fn policy(
    d: &Path,
    name: &str,
    agent: &Signer,
    owner: &str,
    prefixes: &[(String, bool)],
    extra: &str,
) -> PathBuf {
    let mut text = format!(
        "[roots]\nnitro = [{:?}]\n{extra}",
        agent.root.display().to_string()
    );
    for (p, checks) in prefixes {
        text.push_str(&format!(
            "[[audience]]\nprefix = \"{p}\"\nmeasurements = [{{ PCR0 = \"{}\" }}]\nowners = [\"{owner}\"]\nchecks_arguments = {checks}\n",
            agent.pcr0
        ));
    }
    let path = d.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The owner signs a one-transaction grant for `subject` with `details` (JSON array),
/// valid from `from` to `until`.
fn issue(owner: &OwnerKey, subject: &str, details: &str, from: u64, until: u64) -> String {
    let mut g = Grant::new(
        Subject::Key(subject.into()),
        vec![],
        vec!["POST".into()],
        from,
        until,
    );
    g.authorization_details = AuthorizationDetail::parse_draft_list(details).unwrap();
    static N: AtomicU64 = AtomicU64::new(0);
    for d in &mut g.authorization_details {
        if d.identifier.is_empty() {
            d.identifier = format!(
                "urn:uuid:00000000-{:04x}-4000-8000-{:012}",
                std::process::id() & 0xffff,
                N.fetch_add(1, Ordering::Relaxed)
            );
        }
    }
    g.issue(owner, from).unwrap()
}

fn owner_key(d: &Path) -> (String, OwnerKey, String) {
    let (did, file) = keygen(d, "owner");
    let key = OwnerKey::from_key_file(&std::fs::read_to_string(&file).unwrap()).unwrap();
    (did, key, file)
}

#[test]
fn a_one_transaction_grant_is_admitted_once_across_gates_and_only_for_its_transaction() {
    let dir = TempDir::new("grants-gates");
    let d = &dir.0;
    let (owner_did, owner, _) = owner_key(d);
    let agent = Signer::new(d, "agent", &owner_did);
    let (_redis, redis_port) = start_redis(d);
    let redis = format!("redis://127.0.0.1:{redis_port}");
    let up = Upstream::start();
    let (ga, gb, gc, gd) = (free_port(), free_port(), free_port(), free_port());
    let prefix = |p: u16| format!("http://127.0.0.1:{p}/");
    // A and B: one fleet behind one Redis; C: another server, not in the grant's locations;
    // D: a gate whose upstream is down.
    let fleet_policy = policy(
        d,
        "fleet.toml",
        &agent,
        &owner_did,
        &[(prefix(ga), true), (prefix(gb), true)],
        "",
    );
    let _a = start_gate(
        d,
        "gate-a",
        ga,
        &up.url(),
        &fleet_policy,
        &["--replay-store", &redis, "--trusted-proxy", "127.0.0.1"],
    );
    let _b = start_gate(
        d,
        "gate-b",
        gb,
        &up.url(),
        &fleet_policy,
        &["--replay-store", &redis],
    );
    let c_policy = policy(d, "c.toml", &agent, &owner_did, &[(prefix(gc), true)], "");
    let _c = start_gate(d, "gate-c", gc, &up.url(), &c_policy, &[]);
    let d_policy = policy(d, "d.toml", &agent, &owner_did, &[(prefix(gd), true)], "");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let _d = start_gate(
        d,
        "gate-d",
        gd,
        &dead,
        &d_policy,
        &["--replay-store", &redis],
    );
    let url = |p: u16| format!("http://127.0.0.1:{p}/mcp");

    // The grant covers gates A, B and D (not C), for ten minutes.
    let t = now_s();
    let locations = [prefix(ga), prefix(gb), prefix(gd)];
    let grant = issue(
        &owner,
        agent.did(),
        &transfer_details(&locations, None),
        t - 5,
        t + 600,
    );
    let go = |port: u16, body: &[u8], contract: &str| {
        attempt(port, &agent.headers(&url(port), body, contract), body, &up)
    };

    // 1. Other arguments, each constraint kind: refused at rule 13 with the detail's code,
    // 403 insufficient_scope naming the tool, nothing forwarded, the grant not used up.
    for (args, code) in [
        (GOOD.replace("500", "500.01"), "grant.arguments.max"),
        (GOOD.replace("500", "0"), "grant.arguments.min"),
        (GOOD.replace("USD", "EUR"), "grant.arguments.eq"),
        (GOOD.replace("alice", "mallory"), "grant.arguments.one_of"),
        (GOOD.replace("inv-42", "INV-42"), "grant.arguments.prefix"),
        (
            GOOD.replace(r#","memo":"inv-42""#, ""),
            "grant.arguments.missing",
        ),
        (
            GOOD.replace('}', r#","cc":"eve"}"#),
            "grant.arguments.unlisted",
        ),
        (GOOD.replace("500", "\"500\""), "grant.arguments.type"),
        (
            GOOD.replace(r#""amount":500"#, r#""amount":5,"amount":50000"#),
            "grant.arguments.malformed",
        ),
    ] {
        let o = go(ga, &call_body("transfer", &args), &grant);
        assert_eq!(
            (o.status, o.code.as_str(), o.rule),
            (403, code, 13),
            "{args}: {o:?}"
        );
        assert!(!o.reached, "{code}");
        assert!(
            o.challenge.contains("error=\"insufficient_scope\"")
                && o.challenge.contains("scope=\"tool:transfer\""),
            "{code}: {}",
            o.challenge
        );
    }
    // 2. Another tool under the grant: grant.tool.
    let o = go(ga, &call_body("delete_all", "{}"), &grant);
    assert_eq!(
        (o.status, o.code.as_str(), o.reached),
        (403, "grant.tool", false),
        "{o:?}"
    );
    // 3. Another server (C is not among the locations): grant.tool.
    let o = go(gc, &call_body("transfer", GOOD), &grant);
    assert_eq!(
        (o.status, o.code.as_str(), o.reached),
        (403, "grant.tool", false),
        "{o:?}"
    );
    // 4. Forward auth cannot read the arguments: grant.arguments_unchecked (not a matter of
    // a wider grant: no insufficient_scope), even with the body's digest bound.
    let body = call_body("transfer", GOOD);
    let mut fwd = agent.headers(&url(ga), &body, &grant);
    fwd.push(("X-Original-Method".into(), "POST".into()));
    fwd.push(("X-Original-URI".into(), "/mcp".into()));
    let (st, head, text) = send(ga, "GET", "/_cada/auth", &refs(&fwd), b"");
    assert_eq!(st, 403, "{text}");
    assert!(text.contains("grant.arguments_unchecked"), "{text}");
    assert!(head.contains("error=\"invalid_request\""), "{head}");

    // 5. The transaction itself: admitted once at A, the exact bytes forwarded.
    let before = up.count();
    let o = go(ga, &body, &grant);
    assert_eq!((o.status, o.reached), (200, true), "{o:?}");
    assert_eq!(
        String::from_utf8_lossy(&up.nth(before).unwrap().body),
        String::from_utf8_lossy(&body)
    );
    // 6. Again, with a fresh proof: at A, and at B which shares the store.
    for port in [ga, gb] {
        let o = go(port, &body, &grant);
        assert_eq!(
            (o.status, o.code.as_str(), o.rule, o.reached),
            (403, "grant.used", 14, false),
            "gate {port}: {o:?}"
        );
        assert!(
            o.challenge.contains("insufficient_scope"),
            "{}",
            o.challenge
        );
    }
    // 7. A second grant, first used at B: A refuses it (the fleet shares one store).
    let grant2 = issue(
        &owner,
        agent.did(),
        &transfer_details(&locations, None),
        t - 5,
        t + 600,
    );
    assert_eq!(go(gb, &body, &grant2).status, 200);
    assert_eq!(go(ga, &body, &grant2).code, "grant.used");

    // 8. Used up when accepted, even if the upstream then fails: D admits the call, its
    // upstream is down (502); the grant is spent, at D and across the fleet.
    let grant3 = issue(
        &owner,
        agent.did(),
        &transfer_details(&locations, None),
        t - 5,
        t + 600,
    );
    let o = go(gd, &body, &grant3);
    assert_eq!(
        (o.status, o.code.as_str()),
        (502, "upstream.unreachable"),
        "{o:?}"
    );
    assert_eq!(go(gd, &body, &grant3).code, "grant.used");
    assert_eq!(go(ga, &body, &grant3).code, "grant.used");

    // 9. After its minutes (validUntil passed): refused as expired, nothing consumed.
    let expired = issue(
        &owner,
        agent.did(),
        &transfer_details(&locations, None),
        t - 120,
        t - 60,
    );
    let o = go(ga, &body, &expired);
    assert_eq!(
        (o.status, o.code.as_str(), o.reached),
        (401, "contract.expired", false),
        "{o:?}"
    );

    // 10. Tampered: the payload raised to 5,000 under the owner's signature; and forged: a
    // grant signed by another key with the owner's name is not the owner's.
    let fresh = issue(
        &owner,
        agent.did(),
        &transfer_details(&locations, None),
        t - 5,
        t + 600,
    );
    let mut parts: Vec<String> = fresh.split('.').map(str::to_owned).collect();
    let payload = String::from_utf8(b64::decode("p", &parts[1], 65536).unwrap()).unwrap();
    assert!(payload.contains("\"max\":500"));
    parts[1] = b64::encode(payload.replace("\"max\":500", "\"max\":5000"));
    let tampered = parts.join(".");
    let big = call_body("transfer", &GOOD.replace("500", "5000"));
    let o = go(ga, &big, &tampered);
    assert_eq!(
        (o.status, o.code.as_str(), o.reached),
        (401, "contract.signature", false),
        "{o:?}"
    );
    let mallory = OwnerKey::generate(cada_contract::OwnerAlg::Ed25519).unwrap();
    let forged = issue(
        &mallory,
        agent.did(),
        &transfer_details(&locations, None),
        t - 5,
        t + 600,
    );
    let o = go(ga, &big, &forged);
    assert!(
        o.status == 401 && o.code.starts_with("contract.") && !o.reached,
        "{o:?}"
    );
    // The genuine grant still works once (refusals before rule 14 did not consume it).
    assert_eq!(go(ga, &body, &fresh).status, 200);

    // 11. cada-verify serve, asked by a resource server on the same Redis: with the body it
    // checks the arguments and consumes the grant for the fleet; with only the body's
    // digest it cannot read them.
    let (_v, vport) = start_verifier(
        d,
        "verify",
        &[
            "--policy",
            fleet_policy.to_str().unwrap(),
            "--replay-store",
            &redis,
        ],
    );
    let grant4 = issue(
        &owner,
        agent.did(),
        &transfer_details(&locations, None),
        t - 5,
        t + 600,
    );
    let dtc4 = cada_contract::digest_of(&grant4);
    let verify = |body: &[u8], send_body: bool| {
        let mut q = serde_json::json!({
            "dpop": agent.proof("POST", &url(ga), body, Some(&dtc4), None),
            "method": "POST", "url": url(ga), "evidence": agent.evidence, "contract": grant4,
        });
        if send_body {
            q["body"] = String::from_utf8_lossy(body).into_owned().into();
        } else {
            q["body_digest"] = mcp::body_digest(body).into();
        }
        let (st, v) = pop_verify(vport, &q);
        (
            st,
            v["code"].as_str().unwrap_or_default().to_owned(),
            v["rule"].as_u64(),
        )
    };
    assert_eq!(
        verify(&body, false),
        (403, "grant.arguments_unchecked".to_owned(), Some(13))
    );
    assert_eq!(
        verify(&big, true),
        (403, "grant.arguments.max".to_owned(), Some(13))
    );
    assert_eq!(verify(&body, true).0, 200);
    assert_eq!(
        verify(&body, true),
        (403, "grant.used".to_owned(), Some(14))
    );
    assert_eq!(go(ga, &body, &grant4).code, "grant.used");

    // The audit log names the rule of each refusal.
    let records = audit_records(&d.join("gate-a-audit"));
    for code in [
        "grant.arguments.max",
        "grant.tool",
        "grant.used",
        "grant.arguments_unchecked",
    ] {
        assert!(
            records.iter().any(|r| r["reason"] == code),
            "no audit record for {code}"
        );
    }
}

/// `POST /token` with a form and headers; (status, JSON).
fn post_token(port: u16, form: &[(&str, &str)], headers: &[(&str, &str)]) -> (u16, Value) {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut h = vec![("Content-Type", "application/x-www-form-urlencoded")];
    h.extend_from_slice(headers);
    let (st, _, text) = send(port, "POST", "/token", &h, body.as_bytes());
    (st, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn an_sts_token_carries_exactly_one_transaction_which_the_gate_admits_once() {
    let dir = TempDir::new("grants-sts");
    let d = &dir.0;
    let (owner_did, owner, _) = owner_key(d);
    let agent = Signer::new(d, "agent", &owner_did);
    let (_redis, redis_port) = start_redis(d);
    let redis = format!("redis://127.0.0.1:{redis_port}");
    let up = Upstream::start();
    let (sts_port, g, plain) = (free_port(), free_port(), free_port());
    let issuer = format!("http://127.0.0.1:{sts_port}");
    let prefix = |p: u16| format!("http://127.0.0.1:{p}/");
    // The STS knows that a CADA gate checks arguments at g, not at `plain` (a stock
    // resource server).
    let sts_policy = policy(
        d,
        "sts.toml",
        &agent,
        &owner_did,
        &[(prefix(g), true), (prefix(plain), false)],
        "",
    );
    let listen = format!("127.0.0.1:{sts_port}");
    let sts_audit = d.join("sts-audit");
    let _sts = spawn_ready(
        "cada-sts",
        &[
            "serve",
            "--listen",
            &listen,
            "--issuer",
            &issuer,
            "--policy",
            sts_policy.to_str().unwrap(),
            "--audit-dir",
            sts_audit.to_str().unwrap(),
            "--log-format",
            "text",
            "--replay-store",
            &redis,
        ],
        &d.join("sts.log"),
    );
    // The gate trusts the STS's keys, pinned from its JWKS (no fetch to wait for).
    let (st, _, jwks) = http_tcp(sts_port, "GET", "/jwks", "application/json", b"").unwrap();
    assert_eq!(st, 200);
    let jwks_file = d.join("sts-jwks.json");
    std::fs::write(&jwks_file, jwks).unwrap();
    let gate_policy = policy(
        d,
        "gate.toml",
        &agent,
        &owner_did,
        &[(prefix(g), true)],
        &format!(
            "[[issuer]]\nissuer = \"{issuer}\"\njwks = {:?}\n",
            jwks_file.display().to_string()
        ),
    );
    let _gate = start_gate(
        d,
        "gate",
        g,
        &up.url(),
        &gate_policy,
        &["--replay-store", &redis],
    );
    let gate_url = format!("http://127.0.0.1:{g}/mcp");

    let t = now_s();
    let id = format!("urn:uuid:5d6f0000-0000-4000-8000-{t:012}");
    let details = transfer_details(&[prefix(g), prefix(plain)], Some(&id));
    let grant = issue(&owner, agent.did(), &details, t - 5, t + 600);
    let dtc = cada_contract::digest_of(&grant);
    let exchange = |resource: &str, asked: &str| {
        let proof = agent.proof("POST", &format!("{issuer}/token"), b"", Some(&dtc), None);
        post_token(
            sts_port,
            &[
                ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
                ("subject_token", &grant),
                ("subject_token_type", TOKEN_TYPE_CONTRACT),
                ("resource", resource),
                ("authorization_details", asked),
            ],
            &[("DPoP", &proof), ("CADA-Evidence", &agent.evidence)],
        )
    };
    // Narrower than the grant: at most 100, at the gate only.
    let narrower = transfer_details(&[prefix(g)], Some(&id)).replace("\"max\":500", "\"max\":100");

    // Refused: a stock resource server cannot check arguments or single use; a detail
    // wider than the grant; one located outside the token's resource.
    let (st, v) = exchange(
        &prefix(plain),
        &transfer_details(&[prefix(plain)], Some(&id)),
    );
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"], "invalid_authorization_details", "{v}");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .starts_with("[grant.arguments_unchecked]"),
        "{v}"
    );
    let wider = narrower.replace("\"max\":100", "\"max\":1000");
    let (st, v) = exchange(&prefix(g), &wider);
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("invalid_authorization_details")),
        "{v}"
    );
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .starts_with("[grant.not_within]"),
        "{v}"
    );
    let (st, v) = exchange(&prefix(g), &details);
    assert!(
        v["error_description"]
            .as_str()
            .unwrap_or_default()
            .starts_with("[grant.not_within]"),
        "{st} {v}"
    );

    // The token: exactly the transaction asked for, nothing else of the contract's.
    let (st, v) = exchange(&prefix(g), &narrower);
    assert_eq!(st, 200, "{v}");
    let at = v["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        v["authorization_details"][0]["arguments"]["amount"]["max"], 100,
        "{v}"
    );
    let claims: Value =
        serde_json::from_slice(&b64::decode("at", at.split('.').nth(1).unwrap(), 8192).unwrap())
            .unwrap();
    assert_eq!(claims["authorization_details"], v["authorization_details"]);
    assert_eq!(
        claims["authorization_details"][0]["identifier"],
        id.as_str()
    );
    assert!(claims["cada"].get("tools").is_none(), "{claims}");
    assert_eq!(claims["cada"]["dtc_exp"], t + 600);
    assert!(claims["exp"].as_u64().unwrap() <= t + 600);

    let call = |body: &[u8], token: Option<&str>| {
        let mut h = vec![
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("Content-Digest".to_owned(), mcp::content_digest(body)),
        ];
        match token {
            Some(at) => {
                h.push(("Authorization".into(), format!("DPoP {at}")));
                h.push((
                    "DPoP".into(),
                    agent.proof("POST", &gate_url, body, None, Some(at)),
                ));
            }
            None => h = agent.headers(&gate_url, body, &grant),
        }
        attempt(g, &h, body, &up)
    };
    // Under the token: 100 passes the token's narrower bound, 500 (the grant's) does not.
    let o = call(&call_body("transfer", GOOD), Some(&at));
    assert_eq!(
        (o.status, o.code.as_str(), o.reached),
        (403, "grant.arguments.max", false),
        "{o:?}"
    );
    let o = call(&call_body("delete_all", "{}"), Some(&at));
    assert_eq!((o.status, o.code.as_str()), (403, "token.tool"), "{o:?}");
    let hundred = call_body("transfer", &GOOD.replace("500", "100"));
    let o = call(&hundred, Some(&at));
    assert_eq!((o.status, o.reached), (200, true), "{o:?}");
    // Once: neither the token again, nor the grant itself (one key for both ways).
    let o = call(&hundred, Some(&at));
    assert_eq!(
        (o.status, o.code.as_str(), o.rule),
        (403, "grant.used", 14),
        "{o:?}"
    );
    let o = call(&hundred, None);
    assert_eq!(
        (o.status, o.code.as_str(), o.reached),
        (403, "grant.used", false),
        "{o:?}"
    );
}

#[test]
fn the_enclave_signs_under_a_grant_from_cada_owner_and_the_gate_checks_what_it_cannot() {
    let dir = TempDir::new("grants-enclave");
    let d = &dir.0;
    let agent = LockedAgent::start(d, &[]);
    let up = Upstream::start();
    let g = free_port();
    let gate_url = format!("http://127.0.0.1:{g}/mcp");
    let policy_path = d.join("gate.toml");
    std::fs::write(
        &policy_path,
        format!(
            "[roots]\nnitro = [{:?}]\n[[audience]]\nprefix = \"http://127.0.0.1:{g}/\"\nmeasurements = [{{ PCR0 = \"{}\" }}]\nowners = [\"{}\"]\n",
            d.join("state/sim-root.der").display().to_string(),
            agent.pcr0,
            agent.owner_did
        ),
    )
    .unwrap();
    let _gate = start_gate(d, "gate", g, &up.url(), &policy_path, &[]);
    // The owner's CLI: a ten-minute grant from a file of details (identifier filled in).
    let file = d.join("transfer.json");
    std::fs::write(
        &file,
        transfer_details(&[format!("http://127.0.0.1:{g}/")], None),
    )
    .unwrap();
    let grant_file = d.join("grant.jwt");
    owner_to(
        d,
        "grant.jwt",
        &[
            "grant",
            "--key",
            &agent.key,
            "--subject",
            &agent.did,
            "--authorization-details",
            file.to_str().unwrap(),
            "--minutes",
            "10",
        ],
    );
    let (code, _, err) = parent(
        &agent.sock,
        &["contract", "install", grant_file.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let ask = |body: &[u8]| ask_proof(&agent.sock, "POST", &gate_url, body, true);
    // The enclave cannot see arguments: it signs a call with 5,000; the gate refuses it,
    // and the refused proof did use the enclave's one signature under the grant.
    let over = call_body("transfer", &GOOD.replace("500", "5000"));
    let p = ask(&over).unwrap();
    assert!(p["contract"].is_string(), "{p}");
    let (st, _, text) = send(g, "POST", "/mcp", &refs(&mcp_headers(&p, &over)), &over);
    assert_eq!(st, 403, "{text}");
    assert!(
        rpc_error(&text).starts_with("[grant.arguments.max] rule 13:"),
        "{text}"
    );
    // The enclave refuses what it can see: another tool, another server, and any second
    // proof under the single-use grant.
    let other_tool = ask(&call_body("delete_all", "{}")).unwrap_err();
    assert!(other_tool.contains("grant.tool"), "{other_tool}");
    let elsewhere = format!("http://127.0.0.1:{}/mcp", free_port());
    let other_server = ask_proof(
        &agent.sock,
        "POST",
        &elsewhere,
        &call_body("transfer", GOOD),
        true,
    )
    .unwrap_err();
    assert!(other_server.contains("grant.tool"), "{other_server}");
    let again = ask(&call_body("transfer", GOOD)).unwrap_err();
    assert!(again.contains("grant.used"), "{again}");
    assert_eq!(up.count(), 0);

    // A second grant: the right arguments pass the gate once.
    let file2 = d.join("transfer2.json");
    std::fs::write(
        &file2,
        transfer_details(&[format!("http://127.0.0.1:{g}/")], None),
    )
    .unwrap();
    owner_to(
        d,
        "grant2.jwt",
        &[
            "grant",
            "--key",
            &agent.key,
            "--subject",
            &agent.did,
            "--authorization-details",
            file2.to_str().unwrap(),
            "--minutes",
            "10",
        ],
    );
    let g2 = d.join("grant2.jwt");
    let (code, _, err) = parent(&agent.sock, &["contract", "install", g2.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let good = call_body("transfer", GOOD);
    let p = ask(&good).unwrap();
    let (st, _, text) = send(g, "POST", "/mcp", &refs(&mcp_headers(&p, &good)), &good);
    assert_eq!(st, 200, "{text}");
    assert_eq!(up.count(), 1);
}
