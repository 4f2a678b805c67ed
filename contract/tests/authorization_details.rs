//! Contract schema 2 and one-transaction grants (issue 23): `cadaSchema`, RFC 9396
//! `authorization_details` of type `mcp_tool_call` and `stepUp`, through issue and
//! verification, each refusal with its stable code.
use std::collections::BTreeMap;

use aws_lc_rs::signature::Ed25519KeyPair;
use cada_contract::{
    AuthorizationDetail, CallArguments, Contract, ContractError, Grant, OpenGrant, OwnerAlg,
    OwnerKey, RequestView, Subject, TrustedOwners, VerifiedContract, CONTRACT_SCHEMA, GRANT_CODES,
    MAX_CONTRACT_LEN,
};
use cada_protocol::b64;
use cada_protocol::mcp::McpCall;
use cada_protocol::url::HttpUrl;
use serde_json::{json, Value};

const NOW: u64 = 1_750_000_000;
const MCP: &str = "https://mcp.example/mcp";

fn url(s: &str) -> HttpUrl {
    HttpUrl::parse_canonical(s).unwrap()
}

fn owner() -> (OwnerKey, TrustedOwners) {
    let o = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let t = TrustedOwners::from_did_key(o.did()).unwrap();
    (o, t)
}

fn agent() -> String {
    OwnerKey::generate(OwnerAlg::Ed25519)
        .unwrap()
        .did()
        .to_owned()
}

fn transfer(identifier: &str, single_use: bool) -> AuthorizationDetail {
    let mut d = AuthorizationDetail::parse_draft(
        &json!({
            "type": "mcp_tool_call",
            "locations": [MCP],
            "actions": ["tools/call"],
            "tool": "transfer",
            "arguments": {
                "amount": {"max": 500},
                "currency": {"eq": "USD"},
                "to": {"one_of": ["alice", "bob"]},
                "memo": {"prefix": "inv-"}
            },
            "single_use": single_use
        })
        .to_string(),
    )
    .unwrap();
    d.identifier = identifier.into();
    d
}

/// A one-transaction grant: subject the agent key, no audiences, no tools, a few minutes.
fn one_transaction(details: Vec<AuthorizationDetail>) -> Grant {
    let mut g = Grant::new(
        Subject::Key(agent()),
        vec![],
        vec!["POST".into()],
        NOW - 10,
        NOW + 300,
    );
    g.authorization_details = details;
    g
}

fn call(tool: &str) -> McpCall {
    McpCall {
        method: "tools/call".into(),
        target: Some(tool.into()),
    }
}

fn permits(c: &VerifiedContract, method: &str, u: &str, call: Option<&McpCall>) -> &'static str {
    let ctx = BTreeMap::new();
    let u = url(u);
    let r = c.permits(
        &RequestView {
            method,
            url: &u,
            ctx: &ctx,
            scopes: &[],
            call,
        },
        NOW,
    );
    r.map(|()| "ok").unwrap_or_else(|e| e.code())
}

fn code<T>(r: Result<T, ContractError>) -> &'static str {
    r.map(|_| "ok").unwrap_or_else(|e| e.code())
}

/// Signs a payload as the library would not (to test what a verifier refuses).
fn sign_raw(owner: &OwnerKey, header: &Value, payload: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64::encode(header.to_string()),
        b64::encode(payload.to_string())
    );
    let kp = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&owner.to_pkcs8()).unwrap();
    format!(
        "{input}.{}",
        b64::encode(kp.sign(input.as_bytes()).as_ref())
    )
}

fn parts(jwt: &str) -> (Value, Value) {
    let mut it = jwt.split('.');
    let h = b64::decode("h", it.next().unwrap(), 1 << 20).unwrap();
    let p = b64::decode("p", it.next().unwrap(), 1 << 20).unwrap();
    (
        serde_json::from_slice(&h).unwrap(),
        serde_json::from_slice(&p).unwrap(),
    )
}

fn edited(owner: &OwnerKey, jwt: &str, edit: impl FnOnce(&mut Value)) -> String {
    let (h, mut p) = parts(jwt);
    edit(&mut p);
    sign_raw(owner, &h, &p)
}

#[test]
fn issue_writes_schema_2_and_the_rfc_member_names() {
    let (o, t) = owner();
    let mut g = one_transaction(vec![transfer("urn:uuid:1", true)]);
    g.step_up = Some("http://localhost:8470".into());
    let jwt = g.issue(&o, NOW).unwrap();
    let (_, p) = parts(&jwt);
    assert_eq!(p["cadaSchema"], json!(2));
    let d = &p["credentialSubject"]["authorization_details"][0];
    assert_eq!(d["type"], "mcp_tool_call");
    assert_eq!(d["actions"], json!(["tools/call"]));
    assert_eq!(d["arguments"]["amount"], json!({"max": 500}));
    assert_eq!(d["single_use"], true);
    assert_eq!(d["additional_arguments"], false);
    assert_eq!(d["identifier"], "urn:uuid:1");
    assert_eq!(p["credentialSubject"]["stepUp"], "http://localhost:8470");
    let c = Contract::verify(&jwt, &t, NOW).unwrap();
    assert_eq!(c.schema(), CONTRACT_SCHEMA);
    assert_eq!(c.authorization_details(), &[transfer("urn:uuid:1", true)]);
    assert_eq!(c.step_up().unwrap().as_str(), "http://localhost:8470/");
    assert!(c.tools().is_empty() && c.audiences().is_empty());
    // Every contract issued now is schema 2, even one with nothing new in it.
    let plain = Grant::new(
        Subject::Key(agent()),
        vec![MCP.into()],
        vec!["POST".into()],
        NOW,
        NOW + 60,
    )
    .issue(&o, NOW)
    .unwrap();
    assert_eq!(Contract::verify(&plain, &t, NOW).unwrap().schema(), 2);
}

#[test]
fn schema_1_contracts_verify_but_carry_none_of_the_new_members() {
    let (o, t) = owner();
    let mut g = Grant::new(
        Subject::Key(agent()),
        vec![MCP.into()],
        vec!["POST".into()],
        NOW - 10,
        NOW + 300,
    );
    g.tools = vec!["search".into()];
    let jwt = g.issue(&o, NOW).unwrap();
    let v1 = edited(&o, &jwt, |p| {
        p.as_object_mut().unwrap().remove("cadaSchema");
    });
    let c = Contract::verify(&v1, &t, NOW).unwrap();
    assert_eq!(c.schema(), 1);
    assert!(c.authorization_details().is_empty() && c.step_up().is_none());
    assert_eq!(permits(&c, "POST", MCP, Some(&call("search"))), "ok");

    let mut rich = one_transaction(vec![transfer("urn:uuid:1", false)]);
    rich.audiences = vec![MCP.into()];
    rich.opens = vec![OpenGrant {
        label: "report".into(),
        budget: 1,
    }];
    rich.step_up = Some("https://owner.example/".into());
    let rich = rich.issue(&o, NOW).unwrap();
    for member in ["authorization_details", "stepUp", "opens"] {
        let jwt = edited(&o, &rich, |p| {
            p.as_object_mut().unwrap().remove("cadaSchema");
            let s = p["credentialSubject"].as_object_mut().unwrap();
            for other in ["authorization_details", "stepUp", "opens"] {
                if other != member {
                    s.remove(other);
                }
            }
        });
        let e = Contract::verify(&jwt, &t, NOW).unwrap_err();
        assert_eq!(e.code(), "contract.schema", "{member}");
        assert!(e.to_string().contains(member), "{e}");
    }
    let secrets = edited(&o, &jwt, |p| {
        p.as_object_mut().unwrap().remove("cadaSchema");
        p["credentialSubject"]["secrets"] =
            json!([{"name": "gh", "prefix": "https://api.github.com/", "methods": ["GET"]}]);
    });
    assert_eq!(code(Contract::verify(&secrets, &t, NOW)), "contract.schema");
    // The same with cadaSchema 2 verifies.
    let secrets2 = edited(&o, &jwt, |p| {
        p["credentialSubject"]["secrets"] =
            json!([{"name": "gh", "prefix": "https://api.github.com/", "methods": ["GET"]}]);
    });
    assert_eq!(code(Contract::verify(&secrets2, &t, NOW)), "ok");
}

#[test]
fn an_unknown_schema_is_refused_naming_the_known_ones() {
    let (o, t) = owner();
    let jwt = one_transaction(vec![transfer("urn:uuid:1", true)])
        .issue(&o, NOW)
        .unwrap();
    for v in [
        json!(3),
        json!(1),
        json!(0),
        json!("2"),
        json!(2.5),
        json!(null),
        json!(-2),
        json!([2]),
    ] {
        let bad = edited(&o, &jwt, |p| p["cadaSchema"] = v.clone());
        let e = Contract::verify(&bad, &t, NOW).unwrap_err();
        assert_eq!(e.code(), "contract.schema", "{v}");
        assert!(e.to_string().contains("schemas 1"), "{e}");
    }
    // Only the integer 2 is schema 2, not 2.0.
    let float = edited(&o, &jwt, |p| p["cadaSchema"] = json!(2.0));
    assert_eq!(code(Contract::verify(&float, &t, NOW)), "contract.schema");
}

/// An edit of one detail's JSON.
type Edit = Box<dyn Fn(&mut Value)>;

#[test]
fn unknown_detail_shapes_are_refused_at_verification_too() {
    let (o, t) = owner();
    let jwt = one_transaction(vec![transfer("urn:uuid:1", true)])
        .issue(&o, NOW)
        .unwrap();
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|d| d["type"] = json!("payment_initiation")),
            "contract.schema",
        ),
        (
            Box::new(|d| d["actions"] = json!(["tools/call", "resources/read"])),
            "contract.schema",
        ),
        (
            Box::new(|d| d["arguments"]["amount"] = json!({"lt": 500})),
            "contract.schema",
        ),
        (
            Box::new(|d| d["privileges"] = json!(["x"])),
            "contract.schema",
        ),
        (
            Box::new(|d| d["locations"] = json!(["https://mcp.example/a/%2e%2e/b"])),
            "contract.malformed",
        ),
        (
            Box::new(|d| d["arguments"]["amount"] = json!({"max": "500"})),
            "contract.malformed",
        ),
        (
            Box::new(|d| {
                d.as_object_mut().unwrap().remove("identifier");
            }),
            "contract.malformed",
        ),
    ];
    for (i, (edit, want)) in cases.into_iter().enumerate() {
        let bad = edited(&o, &jwt, |p| {
            edit(&mut p["credentialSubject"]["authorization_details"][0]);
        });
        assert_eq!(code(Contract::verify(&bad, &t, NOW)), want, "case {i}");
    }
    // Two details with one identifier: the single-use key would be shared.
    let twice = edited(&o, &jwt, |p| {
        let d = p["credentialSubject"]["authorization_details"][0].clone();
        p["credentialSubject"]["authorization_details"] = json!([d.clone(), d]);
    });
    assert_eq!(
        code(Contract::verify(&twice, &t, NOW)),
        "contract.malformed"
    );
    // Not an array.
    let obj = edited(&o, &jwt, |p| {
        let d = p["credentialSubject"]["authorization_details"][0].clone();
        p["credentialSubject"]["authorization_details"] = d;
    });
    assert_eq!(code(Contract::verify(&obj, &t, NOW)), "contract.malformed");
}

#[test]
fn a_repeated_member_inside_a_detail_is_refused() {
    // serde_json would keep the last "max"; this contract's reader refuses it. Spliced as
    // text, since a JSON value cannot hold a repeated member.
    let (o, t) = owner();
    let jwt = one_transaction(vec![transfer("urn:uuid:1", true)])
        .issue(&o, NOW)
        .unwrap();
    let (h, p) = parts(&jwt);
    let text = p
        .to_string()
        .replace(r#"{"max":500}"#, r#"{"max":5,"max":500}"#);
    assert!(text.contains(r#""max":5,"max""#));
    let input = format!("{}.{}", b64::encode(h.to_string()), b64::encode(&text));
    let kp = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&o.to_pkcs8()).unwrap();
    let bad = format!(
        "{input}.{}",
        b64::encode(kp.sign(input.as_bytes()).as_ref())
    );
    assert_eq!(code(Contract::verify(&bad, &t, NOW)), "contract.malformed");
}

#[test]
fn a_detail_alone_authorizes_its_tool_at_its_locations() {
    let (o, t) = owner();
    let jwt = one_transaction(vec![transfer("urn:uuid:1", true)])
        .issue(&o, NOW)
        .unwrap();
    let c = Contract::verify(&jwt, &t, NOW).unwrap();
    assert_eq!(permits(&c, "POST", MCP, Some(&call("transfer"))), "ok");
    assert_eq!(
        permits(
            &c,
            "POST",
            "https://mcp.example/mcp/sub",
            Some(&call("transfer"))
        ),
        "ok"
    );
    for (method, u, tool, want) in [
        ("POST", MCP, Some("refund"), "grant.tool"),
        (
            "POST",
            "https://mcp.example/mcpx",
            Some("transfer"),
            "grant.tool",
        ),
        (
            "POST",
            "https://other.example/mcp",
            Some("transfer"),
            "grant.tool",
        ),
        ("POST", MCP, None, "grant.tool"),
        (
            "GET",
            MCP,
            Some("transfer"),
            "contract.not_permitted.method",
        ),
    ] {
        let c1 = tool.map(call);
        assert_eq!(
            permits(&c, method, u, c1.as_ref()),
            want,
            "{method} {u} {tool:?}"
        );
    }
    // Other MCP calls under the grant alone are refused too.
    let list = McpCall {
        method: "tools/list".into(),
        target: None,
    };
    assert_eq!(permits(&c, "POST", MCP, Some(&list)), "grant.tool");
    let prompt = McpCall {
        method: "prompts/get".into(),
        target: Some("transfer".into()),
    };
    assert_eq!(permits(&c, "POST", MCP, Some(&prompt)), "grant.tool");
    // Its minutes: expired is the contract's own time rule.
    let ctx = BTreeMap::new();
    let u = url(MCP);
    let c2 = call("transfer");
    let view = RequestView {
        method: "POST",
        url: &u,
        ctx: &ctx,
        scopes: &[],
        call: Some(&c2),
    };
    assert_eq!(code(c.permits(&view, NOW + 300)), "contract.expired");
    assert_eq!(code(c.permits(&view, NOW - 11)), "contract.not_yet_valid");
    assert_eq!(
        code(Contract::verify(&jwt, &t, NOW + 300)),
        "contract.expired"
    );
}

#[test]
fn a_detail_adds_a_tool_beside_a_contracts_audiences_and_tools() {
    let (o, t) = owner();
    let mut g = one_transaction(vec![transfer("urn:uuid:1", false)]);
    g.audiences = vec!["https://mcp.example/".into()];
    g.tools = vec!["search".into()];
    let c = Contract::verify(&g.issue(&o, NOW).unwrap(), &t, NOW).unwrap();
    assert_eq!(permits(&c, "POST", MCP, Some(&call("search"))), "ok");
    assert_eq!(permits(&c, "POST", MCP, Some(&call("transfer"))), "ok");
    // Outside the detail's location, the tool falls back to the tools list.
    assert_eq!(
        permits(
            &c,
            "POST",
            "https://mcp.example/other",
            Some(&call("transfer"))
        ),
        "contract.not_permitted.tool"
    );
    assert_eq!(
        permits(&c, "POST", MCP, Some(&call("delete"))),
        "contract.not_permitted.tool"
    );
    // A tool in `tools` is granted without argument limits; a detail never narrows it.
    let args = CallArguments::parse(r#"{"anything": 1}"#).unwrap();
    assert!(c
        .check_tool_arguments(&url(MCP), "search", &args)
        .unwrap()
        .is_none());
    assert!(c
        .check_tool_without_arguments(&url(MCP), "search")
        .unwrap()
        .is_none());
}

#[test]
fn the_gate_checks_arguments_against_the_covering_detail() {
    let (o, t) = owner();
    let mut small = transfer("urn:uuid:small", true);
    small.arguments.insert(
        "amount".into(),
        cada_contract::ArgConstraint::Range {
            min: None,
            max: Some(cada_contract::JsonNumber::parse("10").unwrap()),
        },
    );
    let jwt = one_transaction(vec![small, transfer("urn:uuid:big", true)])
        .issue(&o, NOW)
        .unwrap();
    let c = Contract::verify(&jwt, &t, NOW).unwrap();
    let u = url(MCP);
    let args = |s: &str| CallArguments::parse(s).unwrap();
    let d = c
        .check_tool_arguments(
            &u,
            "transfer",
            &args(r#"{"amount":5,"currency":"USD","to":"bob","memo":"inv-1"}"#),
        )
        .unwrap()
        .unwrap();
    assert_eq!(d.identifier, "urn:uuid:small");
    let d = c
        .check_tool_arguments(
            &u,
            "transfer",
            &args(r#"{"amount":50,"currency":"USD","to":"bob","memo":"inv-1"}"#),
        )
        .unwrap()
        .unwrap();
    assert_eq!(d.identifier, "urn:uuid:big");
    // Refused by both: the first covering detail's rule is named.
    assert_eq!(
        code(c.check_tool_arguments(
            &u,
            "transfer",
            &args(r#"{"amount":501,"currency":"USD","to":"bob","memo":"inv-1"}"#),
        )),
        "grant.arguments.max"
    );
    assert_eq!(
        code(c.check_tool_arguments(&u, "transfer", &CallArguments::empty())),
        "grant.arguments.missing"
    );
    assert_eq!(
        code(c.check_tool_arguments(&u, "refund", &CallArguments::empty())),
        "grant.tool"
    );
    assert_eq!(
        code(c.check_tool_arguments(
            &url("https://evil.example/mcp"),
            "transfer",
            &args(r#"{"amount":5,"currency":"USD","to":"bob","memo":"inv-1"}"#),
        )),
        "grant.tool"
    );
    // Without the body nobody can check these arguments.
    assert_eq!(
        code(c.check_tool_without_arguments(&u, "transfer")),
        "grant.arguments_unchecked"
    );
    assert!(GRANT_CODES.contains(&"grant.arguments_unchecked"));
}

#[test]
fn a_detail_without_argument_limits_needs_no_body() {
    let (o, t) = owner();
    let d = AuthorizationDetail::parse(
        &json!({"type": "mcp_tool_call", "locations": [MCP], "tool": "search",
                "additional_arguments": true, "identifier": "urn:uuid:s"})
        .to_string(),
    )
    .unwrap();
    let c = Contract::verify(&one_transaction(vec![d]).issue(&o, NOW).unwrap(), &t, NOW).unwrap();
    let found = c
        .check_tool_without_arguments(&url(MCP), "search")
        .unwrap()
        .unwrap();
    assert_eq!(found.identifier, "urn:uuid:s");
}

#[test]
fn step_up_is_a_url_of_the_owners_service_and_permits_its_two_endpoints() {
    let (o, t) = owner();
    let mut g = Grant::new(
        Subject::Key(agent()),
        vec![MCP.into()],
        vec!["POST".into()],
        NOW - 10,
        NOW + 300,
    );
    g.step_up = Some("http://localhost:8470".into());
    let c = Contract::verify(&g.issue(&o, NOW).unwrap(), &t, NOW).unwrap();
    let ok = |m: &str, u: &str| code(c.permits_step_up(m, &url(u), NOW));
    assert_eq!(ok("POST", "http://localhost:8470/v1/step-up"), "ok");
    assert_eq!(ok("GET", "http://localhost:8470/v1/step-up/abc"), "ok");
    assert_eq!(
        ok("POST", "http://localhost:8470/v1/other"),
        "contract.not_permitted.audience"
    );
    assert_eq!(
        ok("DELETE", "http://localhost:8470/v1/step-up/abc"),
        "contract.not_permitted.audience"
    );
    assert_eq!(
        code(c.permits_step_up("POST", &url("http://localhost:8470/v1/step-up"), NOW + 300)),
        "contract.expired"
    );
    // Only https, or http to localhost / loopback; a contract with stepUp alone is valid
    // (an agent that can only ask).
    for (su, want) in [
        ("https://owner.example/cada", "ok"),
        ("http://127.0.0.1:8470", "ok"),
        ("http://owner.example", "contract.malformed"),
        ("ftp://owner.example", "contract.malformed"),
        ("https://owner.example/a/../b", "contract.malformed"),
        ("https://owner.example/?q=1", "contract.malformed"),
        ("not a url", "contract.malformed"),
    ] {
        let mut g = Grant::new(
            Subject::Key(agent()),
            vec![],
            vec!["POST".into()],
            NOW - 10,
            NOW + 300,
        );
        g.step_up = Some(su.into());
        assert_eq!(code(g.issue(&o, NOW)), want, "{su}");
    }
    // A contract without stepUp permits no step-up request.
    let mut plain = g.clone();
    plain.step_up = None;
    let c = Contract::verify(&plain.issue(&o, NOW).unwrap(), &t, NOW).unwrap();
    assert_eq!(
        code(c.permits_step_up("POST", &url("http://localhost:8470/v1/step-up"), NOW)),
        "contract.not_permitted.audience"
    );
}

#[test]
fn sixteen_full_details_fit_and_seventeen_do_not() {
    let (o, t) = owner();
    let details: Vec<AuthorizationDetail> = (0..16)
        .map(|i| transfer(&format!("urn:uuid:{i}"), true))
        .collect();
    let jwt = one_transaction(details.clone()).issue(&o, NOW).unwrap();
    assert!(jwt.len() <= MAX_CONTRACT_LEN);
    assert_eq!(
        Contract::verify(&jwt, &t, NOW)
            .unwrap()
            .authorization_details()
            .len(),
        16
    );
    let mut more = details;
    more.push(transfer("urn:uuid:16", true));
    assert_eq!(
        code(one_transaction(more).issue(&o, NOW)),
        "contract.malformed"
    );
    // Issue refuses a detail without an identifier.
    assert_eq!(
        code(one_transaction(vec![transfer("", true)]).issue(&o, NOW)),
        "contract.malformed"
    );
}

#[test]
fn a_tampered_grant_fails_its_signature() {
    let (o, t) = owner();
    let jwt = one_transaction(vec![transfer("urn:uuid:1", true)])
        .issue(&o, NOW)
        .unwrap();
    let (h, mut p) = parts(&jwt);
    p["credentialSubject"]["authorization_details"][0]["arguments"]["amount"]["max"] = json!(50000);
    let sig = jwt.rsplit('.').next().unwrap();
    let forged = format!(
        "{}.{}.{sig}",
        b64::encode(h.to_string()),
        b64::encode(p.to_string())
    );
    assert_eq!(
        code(Contract::verify(&forged, &t, NOW)),
        "contract.signature"
    );
    // Signed by another owner.
    let (other, _) = owner();
    let theirs = one_transaction(vec![transfer("urn:uuid:1", true)])
        .issue(&other, NOW)
        .unwrap();
    assert_eq!(
        code(Contract::verify(&theirs, &t, NOW)),
        "contract.untrusted_owner"
    );
}

#[test]
fn the_documented_example_file_is_a_valid_draft() {
    let text = include_str!("../../docs/examples/authorization-details.json");
    let details = AuthorizationDetail::parse_draft_list(text).unwrap();
    assert_eq!(details.len(), 2);
    assert!(details[0].single_use && details[0].has_argument_limits());
    assert!(!details[1].has_argument_limits());
    assert!(details.iter().all(|d| d.identifier.is_empty()));
}
