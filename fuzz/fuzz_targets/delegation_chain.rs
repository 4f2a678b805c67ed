//! Delegation chains (`cada_contract::delegation`): the chain splitter with its limits, each
//! link's JWS under the `did:key` of its issuer, the delegation members, the linkage to the
//! chain, depth, status ranges and attenuation in every dimension.
//!
//! Input: a mode byte. Mode 0: the rest is a chain `root~D1~…` as text, verified under the
//! fixed owner at the fixed time. Mode 1 (structure-aware): the rest is a list of edits, three
//! bytes each (link: bit 0 picks D1 or D2, bit 7 leaves the next link's `parent` digest
//! stale; edit kind; value), applied to the payloads of the genuine chain owner → planner →
//! worker → helper, each edited link re-signed by the key its `iss` names (when it is one of
//! the three fixed enclave keys), so that edits reach past the signature.
//!
//! Oracle: whatever verifies is linked (depth, parent, root, owner), issued by its parent's
//! subject key, within its parent in every dimension (`check_within` again), and grants
//! nothing its parent does not on a fixed set of requests, secrets and opens; refusals carry
//! a `delegation.*` or `contract.*` code.
#![no_main]

use std::collections::BTreeMap;

use cada_contract::delegation::{check_within, split_chain, verify_chain, CODES};
use cada_contract::{digest_of, RequestView, Subject, VerifiedContract};
use cada_fuzz::contract_setup::{owner, owners};
use cada_fuzz::delegation_setup::{chains, enclaves, CHAIN_AT, LIST};
use cada_protocol::b64;
use cada_protocol::mcp::McpCall;
use cada_protocol::url::HttpUrl;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fuzz_target!(
    init: {
        cada_fuzz::write_seeds_if_asked("delegation_chain");
    },
    |data: &[u8]| {
        let Some((&mode, rest)) = data.split_first() else {
            return;
        };
        if mode % 2 == 0 {
            if let Ok(text) = std::str::from_utf8(rest) {
                check(text);
            }
        } else if let Some(text) = edited(rest) {
            check(&text);
        }
    }
);

fn check(text: &str) {
    let parts = match split_chain(text) {
        Ok(p) => p,
        Err(e) => {
            assert!(CODES.contains(&e.code()), "{}", e.code());
            return;
        }
    };
    let chain = match verify_chain(&parts, owners(), CHAIN_AT) {
        Ok(c) => c,
        Err(e) => {
            let c = e.code();
            assert!(
                c.starts_with("contract.") || c.starts_with("grant.") || CODES.contains(&c),
                "{c}"
            );
            return;
        }
    };
    assert_eq!(chain.depth() + 1, parts.len());
    assert_eq!(chain.owner(), owner().did());
    let digests: Vec<String> = parts.iter().map(|p| digest_of(p)).collect();
    assert_eq!(chain.digests(), digests);
    let contracts: Vec<&VerifiedContract> = chain.contracts().collect();
    for (i, link) in chain.links.iter().enumerate() {
        let depth = i + 1;
        let (parent, child) = (contracts[i], &link.contract);
        assert_eq!(usize::from(link.claim.depth), depth);
        assert_eq!(link.claim.parent, digests[i]);
        assert_eq!(link.claim.root, digests[0]);
        assert_eq!(link.claim.owner, owner().did());
        assert_eq!(child.owner(), owner().did());
        assert_eq!(link.issuer.did_key(), child.issuer());
        assert!(parts[depth].len() <= cada_contract::MAX_DELEGATION_LEN);
        if let Subject::Key(d) = parent.subject() {
            assert_eq!(d, child.issuer());
        }
        assert!(matches!(child.subject(), Subject::Key(_)));
        let rules = parent.delegation_rules().expect("a parent that delegates");
        let entry = child.status_entry().expect("a status entry");
        assert!(entry.list == LIST && rules.contains(entry.index));
        let allowed = contracts[..depth].iter().enumerate().all(|(a, c)| {
            c.delegation_rules()
                .is_some_and(|r| usize::from(r.max_depth) >= depth - a)
        });
        assert!(allowed, "depth {depth} beyond an ancestor's maxDepth");
        assert!(check_within(parent, child).is_ok());
        assert!(child.check_time(CHAIN_AT).is_ok());
        implies(parent, child);
    }
}

/// The fixed requests: whatever the child permits, the parent permits.
fn implies(parent: &VerifiedContract, child: &VerifiedContract) {
    let ctx = BTreeMap::from([("task".to_string(), "t".to_string())]);
    let calls = [
        None,
        Some(("tools/call", "search")),
        Some(("tools/call", "deploy")),
        Some(("tools/call", "wipe")),
        Some(("prompts/get", "plan")),
        Some(("resources/read", "file:///srv/public/a")),
        Some(("resources/read", "file:///srv/publicity")),
    ];
    for u in [
        "https://mcp.example.com/mcp",
        "https://mcp.example.com/mcp/tools/x",
        "https://mcp.example.com/mcpx",
        "https://api.example.com/v1/x",
        "https://api.example.com/v1",
        "https://ops.example.com/mcp",
        "https://approve.example.com/v1/step-up",
        "https://api.github.com/repos/acme/app",
        "https://evil.example/",
    ] {
        let Ok(url) = HttpUrl::parse_canonical(u) else {
            continue;
        };
        for method in ["GET", "POST", "DELETE"] {
            for call in calls {
                let call = call.map(|(m, t)| McpCall {
                    method: m.into(),
                    target: Some(t.into()),
                });
                let view = RequestView {
                    method,
                    url: &url,
                    ctx: &ctx,
                    scopes: &[],
                    call: call.as_ref(),
                };
                if child.permits(&view, CHAIN_AT).is_ok() {
                    assert!(
                        parent.permits(&view, CHAIN_AT).is_ok(),
                        "{method} {u} {call:?}"
                    );
                }
            }
            if child.permits_secret("gh", method, &url, CHAIN_AT).is_ok() {
                assert!(parent.permits_secret("gh", method, &url, CHAIN_AT).is_ok());
            }
            if child.permits_step_up(method, &url, CHAIN_AT).is_ok() {
                assert!(parent.permits_step_up(method, &url, CHAIN_AT).is_ok());
            }
        }
    }
    for label in ["notes", "mail"] {
        if let Ok(b) = child.permits_open(label, CHAIN_AT) {
            assert!(parent.permits_open(label, CHAIN_AT).is_ok_and(|p| b <= p));
        }
    }
}

fn payload_of(compact: &str) -> Option<Value> {
    let p = compact.split('.').nth(1)?;
    serde_json::from_slice(&b64::decode("payload", p, 1 << 20).ok()?).ok()
}

/// The genuine three-level chain with `edits` applied and every edited link re-signed.
fn edited(edits: &[u8]) -> Option<String> {
    let full = chains().get(2)?;
    let parts: Vec<&str> = full.split('~').collect();
    let mut payloads: Vec<Value> = parts[1..].iter().filter_map(|p| payload_of(p)).collect();
    if payloads.len() != 2 {
        return None;
    }
    let mut stale = [false; 2];
    for e in edits.chunks_exact(3).take(16) {
        let link = usize::from(e[0] & 1);
        if e[0] & 0x80 != 0 {
            stale[link] = true;
        }
        edit(&mut payloads[link], e[1], e[2]);
    }
    let keys = enclaves();
    let mut out = vec![parts[0].to_owned()];
    for (i, p) in payloads.iter_mut().enumerate() {
        if i > 0 && !stale[i - 1] {
            p["cadaDelegation"]["parent"] = json!(digest_of(&out[i]));
        }
        let iss = p["iss"].as_str().unwrap_or("");
        let key = keys
            .iter()
            .find(|k| k.public.did_key() == iss)
            .unwrap_or(&keys[i]);
        out.push(key.sign_payload(p.to_string().as_bytes()));
    }
    Some(out.join("~"))
}

fn edit(p: &mut Value, kind: u8, v: u8) {
    let keys = enclaves();
    let pick = |pool: &[Value]| pool[usize::from(v) % pool.len()].clone();
    let s = &mut p["credentialSubject"];
    match kind % 24 {
        0 => {
            s["audiences"] = pick(&[
                json!(["https://mcp.example.com/mcp"]),
                json!(["https://mcp.example.com/mcpx"]),
                json!(["https://mcp.example.com/"]),
                json!(["https://api.example.com/v1"]),
                json!([
                    "https://api.example.com/v1/a",
                    "https://mcp.example.com/mcp/t"
                ]),
                json!([]),
            ])
        }
        1 => s["methods"] = pick(&[json!(["GET"]), json!(["DELETE"]), json!(["GET", "POST"])]),
        2 => {
            s["tools"] = pick(&[
                json!(["fetch"]),
                json!(["wipe"]),
                json!([]),
                json!(["deploy"]),
            ])
        }
        3 => s["scopes"] = pick(&[json!(["docs:read"]), json!(["admin"]), json!([])]),
        4 => {
            s["resources"] = pick(&[
                json!(["file:///srv/public/a"]),
                json!(["file:///srv/publicity"]),
                json!(["file:///srv/"]),
            ])
        }
        5 => s["prompts"] = pick(&[json!(["plan"]), json!(["other"])]),
        6 => {
            s["secrets"] = pick(&[
                json!([{"name": "gh", "prefix": "https://api.github.com/repos/acme/x", "methods": ["GET"]}]),
                json!([{"name": "gh", "prefix": "https://api.github.com/repos/acmex", "methods": ["GET"]}]),
                json!([{"name": "gh", "prefix": "https://api.github.com/repos/acme", "methods": ["POST"]}]),
            ])
        }
        7 => {
            s["opens"] = pick(&[
                json!([{"label": "notes", "budget": 10}]),
                json!([{"label": "notes", "budget": 11}]),
                json!([{"label": "mail", "budget": 1}]),
            ])
        }
        8 => s["requiredCtx"] = pick(&[json!([]), json!(["task", "user"]), json!(["user"])]),
        9 => s["budget"] = pick(&[json!(1000), json!(1001), json!(1), Value::Null]),
        10 => s["ratePerSecond"] = pick(&[json!(10), json!(11), Value::Null]),
        11 => s["audit"] = pick(&[json!("minimal"), json!("standard"), json!("full")]),
        12 => {
            s["limits"] = pick(&[
                json!({"requests": {"max": 10, "windowSeconds": 60}}),
                json!({"refusals": {"max": 10, "windowSeconds": 1}}),
            ])
        }
        13 => {
            let t = CHAIN_AT - 600 - 60 + u64::from(v);
            p["nbf"] = json!(t);
            p["validFrom"] = json!(cada_contract::time::format(t));
        }
        14 => {
            let t = CHAIN_AT + 3600 - 128 + u64::from(v);
            p["exp"] = json!(t);
            p["validUntil"] = json!(cada_contract::time::format(t));
        }
        15 => {
            s["stepUp"] = pick(&[
                json!("https://approve.example.com/"),
                json!("https://evil.example/"),
            ])
        }
        16 => {
            s["delegation"] = pick(&[
                json!({"maxDepth": 1, "statusList": LIST, "statusRange": [1600, 1700]}),
                json!({"maxDepth": 2, "statusList": LIST, "statusRange": [1600, 1700]}),
                json!({"maxDepth": 1, "statusList": LIST, "statusRange": [999, 1100]}),
                Value::Null,
            ])
        }
        17 => {
            let i = [999u64, 1000, 1500, 1650, 1699, 1700, 1999, 2000][usize::from(v) % 8];
            p["credentialStatus"]["statusListIndex"] = json!(i.to_string());
            p["credentialStatus"]["id"] = json!(format!("{LIST}#{i}"));
        }
        18 => p["cadaDelegation"]["depth"] = json!(v % 4),
        19 => p["cadaDelegation"]["parent"] = json!(digest_of(&v.to_string())),
        20 => p["cadaDelegation"]["owner"] = json!(keys[usize::from(v) % 3].public.did_key()),
        21 => {
            let d = keys[usize::from(v) % 3].public.did_key();
            s["id"] = json!(d);
            p["sub"] = json!(d);
        }
        22 => {
            s["authorization_details"] = pick(&[
                json!([{"type": "mcp_tool_call", "locations": ["https://ops.example.com/mcp/x"],
                        "actions": ["tools/call"], "tool": "deploy",
                        "arguments": {"env": {"eq": "staging"}}, "single_use": true,
                        "identifier": "urn:uuid:00000000-0000-4000-8000-0000000000d1"}]),
                json!([{"type": "mcp_tool_call", "locations": ["https://ops.example.com/mcp"],
                        "actions": ["tools/call"], "tool": "deploy", "additional_arguments": true,
                        "identifier": "urn:uuid:00000000-0000-4000-8000-0000000000d1"}]),
            ])
        }
        _ => {
            let d = keys[usize::from(v) % 3].public.did_key();
            p["issuer"] = json!(d);
            p["iss"] = json!(d);
        }
    }
}
