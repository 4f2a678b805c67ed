//! Delegated contracts (issue 24 §1): chains root~D1~D2 signed by enclave keys (EdDSA,
//! ES256, ES384), attenuation in every dimension — each refusal beside the acceptance at
//! its boundary, by the enclave before it signs and by a verifier of a link forged outside
//! an enclave — and every chain failure with its stable code.
mod common;

use std::collections::BTreeMap;

use cada_contract::delegation::{
    evidence_nonce, narrow_grant, split_chain, DelegationRules, Draft, CODES, MAX_CHAIN_LEN,
    MAX_CHAIN_LINKS, MAX_DELEGATION_LEN,
};
use cada_contract::{
    digest_of, AuditLevel, AuthorizationDetail, BehaviourLimits, Contract, Grant, OpenGrant,
    RequestView, SecretGrant, StatusList, Subject, WindowLimit,
};
use cada_protocol::jwk::SigAlg;
use cada_protocol::mcp::McpCall;
use cada_protocol::url::HttpUrl;
use common::*;
use serde_json::{json, Value};

const DEPLOY_ID: &str = "urn:uuid:00000000-0000-4000-8000-0000000000d1";

fn deploy_detail(location: &str, env: Option<&str>, single_use: bool) -> AuthorizationDetail {
    let mut d = json!({
        "type": "mcp_tool_call",
        "locations": [location],
        "actions": ["tools/call"],
        "tool": "deploy",
        "single_use": single_use,
        "identifier": DEPLOY_ID,
    });
    match env {
        Some(e) => d["arguments"] = json!({"env": {"eq": e}}),
        None => d["additional_arguments"] = json!(true),
    }
    AuthorizationDetail::parse(&d.to_string()).unwrap()
}

fn rules(max_depth: u8, start: u64, end: u64) -> Option<DelegationRules> {
    Some(DelegationRules {
        max_depth,
        status_list: LIST.into(),
        status_range: [start, end],
    })
}

/// The owner's contract for the planner: something in every dimension.
fn root_grant(planner: &str) -> Grant {
    let mut g = Grant::new(
        Subject::Key(planner.into()),
        vec![
            "https://mcp.example.com/mcp".into(),
            "https://api.example.com/v1/".into(),
        ],
        vec!["GET".into(), "POST".into()],
        NOW - 600,
        NOW + 3600,
    );
    g.scopes = vec!["docs:read".into(), "docs:write".into()];
    g.tools = vec!["search".into(), "fetch".into()];
    g.resources = vec!["file:///srv/public/".into(), "urn:x:report".into()];
    g.prompts = vec!["summarize".into(), "plan".into()];
    g.secrets = vec![SecretGrant {
        name: "gh".into(),
        prefix: "https://api.github.com/repos/acme".into(),
        methods: vec!["GET".into(), "POST".into()],
    }];
    g.opens = vec![OpenGrant {
        label: "notes".into(),
        budget: 10,
    }];
    g.required_ctx = vec!["task".into()];
    g.budget = Some(1000);
    g.rate_per_second = Some(10);
    g.audit = AuditLevel::Standard;
    g.limits = BehaviourLimits {
        requests: Some(WindowLimit {
            max: 600,
            window_seconds: 60,
        }),
        refusals: Some(WindowLimit {
            max: 5,
            window_seconds: 300,
        }),
    };
    g.status = status(5);
    g.step_up = Some("https://approve.example.com/".into());
    g.authorization_details = vec![deploy_detail("https://ops.example.com/mcp", None, false)];
    g.delegation = rules(2, 1000, 2000);
    g.name = Some("planner".into());
    g
}

struct World {
    owner: Owner,
    planner: Enclave,
    worker: Enclave,
    helper: Enclave,
    root: String,
}

impl World {
    fn new() -> Self {
        Self::with(SigAlg::EdDSA, SigAlg::EdDSA)
    }

    fn with(planner_alg: SigAlg, worker_alg: SigAlg) -> Self {
        let owner = Owner::new();
        let planner = Enclave::new(planner_alg);
        let root = owner.issue(&root_grant(&planner.did()));
        World {
            owner,
            planner,
            worker: Enclave::new(worker_alg),
            helper: Enclave::ed(),
            root,
        }
    }

    /// The planner's grant for the worker: its own, narrowed by `json`, at status `index`.
    fn grant(&self, chain: &str, to: &Enclave, json: Value, index: u64) -> Grant {
        let vc = self.owner.verify(chain, NOW).unwrap();
        let mut g = narrow_grant(
            vc.leaf(),
            &to.did(),
            &json.to_string(),
            NOW - 60,
            NOW + 1800,
        )
        .unwrap();
        g.status = status(index);
        g
    }

    fn planner_delegates(&self, json: Value) -> Result<String, cada_contract::ContractError> {
        let g = self.grant(&self.root, &self.worker, json, 1500);
        self.owner
            .delegate(&self.root, &self.planner, g, NOW - 10, true)
    }

    /// The same delegation signed without the enclave's checks, then verified.
    fn forged(&self, json: Value) -> Result<String, cada_contract::ContractError> {
        let g = self.grant(&self.root, &self.worker, json, 1500);
        let chain = self
            .owner
            .delegate(&self.root, &self.planner, g, NOW - 10, false)?;
        self.owner.verify(&chain, NOW).map(|_| chain)
    }
}

fn url(s: &str) -> HttpUrl {
    HttpUrl::parse_canonical(s).unwrap()
}

#[test]
fn a_chain_of_two_verifies_under_each_enclave_algorithm() {
    for (a, b) in [
        (SigAlg::EdDSA, SigAlg::ES256),
        (SigAlg::ES256, SigAlg::ES384),
        (SigAlg::ES384, SigAlg::EdDSA),
    ] {
        let w = World::with(a, b);
        let mut g = w.grant(
            &w.root,
            &w.worker,
            json!({"tools": ["search"], "delegation": {"maxDepth": 1, "statusList": LIST, "statusRange": [1600, 1700]}}),
            1500,
        );
        g.budget = Some(100);
        let d1 = w
            .owner
            .delegate(&w.root, &w.planner, g, NOW - 10, true)
            .unwrap();
        let g2 = w.grant(&d1, &w.helper, json!({"tools": []}), 1650);
        let d2 = w.owner.delegate(&d1, &w.worker, g2, NOW - 5, true).unwrap();
        let chain = w.owner.verify(&d2, NOW).unwrap();
        assert_eq!(chain.depth(), 2);
        let parts = split_chain(&d2).unwrap();
        let digests: Vec<String> = parts.iter().map(|p| digest_of(p)).collect();
        assert_eq!(chain.digests(), digests);
        assert_eq!(chain.ancestor_digests(), digests[..2].to_vec());
        assert_eq!(chain.owner(), w.owner.key.did());
        let leaf = chain.leaf();
        assert_eq!(leaf.subject(), &Subject::Key(w.helper.did()));
        assert_eq!(
            leaf.owner(),
            w.owner.key.did(),
            "a link's owner is the root owner"
        );
        assert_eq!(leaf.issuer(), w.worker.did());
        assert_eq!(leaf.kid(), w.worker.kid());
        assert_eq!(chain.links[0].issuer, *w.planner.public());
        assert_eq!(chain.links[1].issuer, *w.worker.public());
        let claim = leaf.delegation().unwrap();
        assert_eq!(claim.depth, 2);
        assert_eq!(claim.parent, digests[1]);
        assert_eq!(claim.root, digests[0]);
        assert_eq!(
            claim.evidence,
            evidence(&evidence_nonce(
                &digests[1],
                &w.helper.did(),
                leaf.id(),
                leaf.issued_at()
            ))
        );
        assert!(leaf.delegation_rules().is_none());
        assert!(chain.root.delegation().is_none());
        assert_eq!(chain.root.delegation_rules(), rules(2, 1000, 2000).as_ref());
        // The leaf permits what it was narrowed to, and nothing its parent does not.
        let ctx = BTreeMap::from([("task".to_string(), "t1".to_string())]);
        let u = url("https://mcp.example.com/mcp");
        let search = McpCall {
            method: "tools/call".into(),
            target: Some("search".into()),
        };
        let req = |call| RequestView {
            method: "POST",
            url: &u,
            ctx: &ctx,
            scopes: &[],
            call,
        };
        assert!(leaf.permits(&req(None), NOW).is_ok());
        assert_eq!(
            code(leaf.permits(&req(Some(&search)), NOW)),
            "contract.not_permitted.tool",
            "tools were cleared"
        );
        assert!(chain.links[0]
            .contract
            .permits(&req(Some(&search)), NOW)
            .is_ok());
    }
}

#[test]
fn the_evidence_nonce_is_the_documented_hash() {
    let n = evidence_nonce("PARENT", "did:key:zX", "urn:uuid:1", 1_750_000_000);
    let mut m = b"cada-delegation-v1\0".to_vec();
    m.extend_from_slice(b"PARENT\x00did:key:zX\x00urn:uuid:1\x001750000000");
    let want = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &m);
    assert_eq!(n.as_slice(), want.as_ref());
    assert_ne!(
        n,
        evidence_nonce("PARENT", "did:key:zX", "urn:uuid:1", 1_750_000_001)
    );
    assert_ne!(
        n,
        evidence_nonce("PARENT", "did:key:zY", "urn:uuid:1", 1_750_000_000)
    );
}

/// One dimension: a narrowing at its boundary that must be accepted, and one step wider
/// that must be refused with `code`, by the enclave and by a verifier of a forged link.
struct Case {
    dim: &'static str,
    accepted: Value,
    refused: Value,
}

fn cases() -> Vec<Case> {
    let secret = |prefix: &str, methods: &[&str]| json!([{"name": "gh", "prefix": prefix, "methods": methods}]);
    let detail = |loc: &str, env: Option<&str>, single: bool| {
        json!([
            serde_json::from_str::<Value>(&deploy_detail(loc, env, single).to_json_text()).unwrap()
        ])
    };
    vec![
        Case {
            dim: "audience",
            accepted: json!({"audiences": ["https://mcp.example.com/mcp/tools", "https://api.example.com/v1/x"]}),
            refused: json!({"audiences": ["https://mcp.example.com/mcpx"]}),
        },
        Case {
            dim: "audience",
            accepted: json!({"audiences": ["https://mcp.example.com/mcp"]}),
            refused: json!({"audiences": ["https://api.example.com/v1"]}),
        },
        Case {
            dim: "audience",
            accepted: json!({"audiences": ["https://api.example.com/v1/"]}),
            refused: json!({"audiences": ["https://other.example.com/mcp"]}),
        },
        Case {
            dim: "method",
            accepted: json!({"methods": ["POST"]}),
            refused: json!({"methods": ["POST", "DELETE"]}),
        },
        Case {
            dim: "scope",
            accepted: json!({"scopes": ["docs:read", "docs:write"]}),
            refused: json!({"scopes": ["docs:admin"]}),
        },
        Case {
            dim: "tool",
            accepted: json!({"tools": ["fetch"]}),
            refused: json!({"tools": ["fetch", "deploy"]}),
        },
        Case {
            dim: "resource",
            accepted: json!({"resources": ["file:///srv/public/docs", "urn:x:report"]}),
            refused: json!({"resources": ["file:///srv/publicity"]}),
        },
        Case {
            dim: "resource",
            accepted: json!({"resources": ["file:///srv/public/"]}),
            refused: json!({"resources": ["urn:x:report2"]}),
        },
        Case {
            dim: "prompt",
            accepted: json!({"prompts": ["plan"]}),
            refused: json!({"prompts": ["plan", "exfiltrate"]}),
        },
        Case {
            dim: "secret",
            accepted: json!({"secrets": secret("https://api.github.com/repos/acme/app", &["GET"])}),
            refused: json!({"secrets": secret("https://api.github.com/repos/acmex", &["GET"])}),
        },
        Case {
            dim: "secret",
            accepted: json!({"secrets": secret("https://api.github.com/repos/acme", &["GET", "POST"])}),
            refused: json!({"secrets": secret("https://api.github.com/repos/acme", &["DELETE"])}),
        },
        Case {
            dim: "secret",
            accepted: json!({"secrets": []}),
            refused: json!({"secrets": [{"name": "db", "prefix": "https://api.github.com/repos/acme", "methods": ["GET"]}]}),
        },
        Case {
            dim: "open",
            accepted: json!({"opens": [{"label": "notes", "budget": 10}]}),
            refused: json!({"opens": [{"label": "notes", "budget": 11}]}),
        },
        Case {
            dim: "open",
            accepted: json!({"opens": null}),
            refused: json!({"opens": [{"label": "mail", "budget": 1}]}),
        },
        Case {
            dim: "ctx",
            accepted: json!({"requiredCtx": ["task", "user"]}),
            refused: json!({"requiredCtx": ["user"]}),
        },
        Case {
            dim: "budget",
            accepted: json!({"budget": 1000}),
            refused: json!({"budget": 1001}),
        },
        Case {
            dim: "budget",
            accepted: json!({"budget": 1}),
            refused: json!({"budget": null}),
        },
        Case {
            dim: "rate",
            accepted: json!({"ratePerSecond": 10}),
            refused: json!({"ratePerSecond": 11}),
        },
        Case {
            dim: "rate",
            accepted: json!({"ratePerSecond": 1}),
            refused: json!({"ratePerSecond": null}),
        },
        Case {
            dim: "limits",
            accepted: json!({"limits": {"requests": {"max": 600, "windowSeconds": 60}, "refusals": {"max": 5, "windowSeconds": 300}}}),
            refused: json!({"limits": {"requests": {"max": 601, "windowSeconds": 60}, "refusals": {"max": 5, "windowSeconds": 300}}}),
        },
        Case {
            dim: "limits",
            accepted: json!({"limits": {"requests": {"max": 10, "windowSeconds": 3600}, "refusals": {"max": 1, "windowSeconds": 300}}}),
            refused: json!({"limits": {"requests": {"max": 600, "windowSeconds": 59}, "refusals": {"max": 5, "windowSeconds": 300}}}),
        },
        Case {
            dim: "limits",
            accepted: json!({"limits": {"requests": {"max": 600, "windowSeconds": 60}, "refusals": {"max": 5, "windowSeconds": 300}}}),
            refused: json!({"limits": {"requests": {"max": 600, "windowSeconds": 60}}}),
        },
        Case {
            dim: "audit",
            accepted: json!({"audit": "standard"}),
            refused: json!({"audit": "minimal"}),
        },
        Case {
            dim: "audit",
            accepted: json!({"audit": "full"}),
            refused: json!({"audit": "minimal"}),
        },
        Case {
            dim: "details",
            accepted: json!({"authorization_details": detail("https://ops.example.com/mcp/prod", Some("staging"), true)}),
            refused: json!({"authorization_details": detail("https://ops.example.com/mcpx", Some("staging"), true)}),
        },
        Case {
            dim: "details",
            accepted: json!({"authorization_details": detail("https://ops.example.com/mcp", None, false)}),
            refused: json!({"authorization_details": [{
                "type": "mcp_tool_call", "locations": ["https://ops.example.com/mcp"],
                "actions": ["tools/call"], "tool": "deploy", "additional_arguments": true,
                "identifier": "urn:uuid:00000000-0000-4000-8000-0000000000d2"}]}),
        },
        Case {
            dim: "step_up",
            accepted: json!({"stepUp": null}),
            refused: json!({"stepUp": "https://approve.example.com/other"}),
        },
    ]
}

#[test]
fn each_dimension_is_refused_one_step_wider_and_accepted_at_its_boundary() {
    let w = World::new();
    for (i, c) in cases().into_iter().enumerate() {
        let want = format!("delegation.wider.{}", c.dim);
        assert!(CODES.contains(&want.as_str()), "{want} is listed");
        let ok = w.planner_delegates(c.accepted.clone());
        assert!(
            ok.is_ok(),
            "case {i} ({}): {:?} refused: {ok:?}",
            c.dim,
            c.accepted
        );
        w.owner.verify(&ok.unwrap(), NOW).unwrap();
        let by_enclave = w.planner_delegates(c.refused.clone()).unwrap_err();
        assert_eq!(by_enclave.code(), want, "case {i}: {by_enclave}");
        let by_verifier = w.forged(c.refused.clone()).unwrap_err();
        assert_eq!(by_verifier.code(), want, "case {i} forged: {by_verifier}");
        assert_eq!(by_enclave, by_verifier, "case {i}: one rule, one message");
        // The message says what to narrow.
        assert!(
            by_enclave.to_string().len() > want.len() + 20,
            "{by_enclave}"
        );
    }
}

#[test]
fn time_is_refused_outside_the_parents_window_and_accepted_at_its_edges() {
    let w = World::new();
    let vc = w.owner.verify(&w.root, NOW).unwrap();
    let (from, until) = (vc.root.valid_from(), vc.root.valid_until());
    for (vf, vu, want) in [
        (from, until, "accepted"),
        (from - 1, until, "delegation.wider.time"),
        (from, until + 1, "delegation.wider.time"),
    ] {
        let mut g = narrow_grant(vc.leaf(), &w.worker.did(), "{}", vf, vu).unwrap();
        g.status = status(1500);
        let enclave = w
            .owner
            .delegate(&w.root, &w.planner, g.clone(), NOW - 10, true);
        assert_eq!(code(enclave), want);
        let forged = w
            .owner
            .delegate(&w.root, &w.planner, g, NOW - 10, false)
            .and_then(|c| w.owner.verify(&c, NOW));
        assert_eq!(code(forged), want);
    }
    // Issued (iat) before the parent's validity began.
    let mut g = narrow_grant(vc.leaf(), &w.worker.did(), "{}", from, until).unwrap();
    g.status = status(1500);
    let vc = w.owner.verify(&w.root, NOW).unwrap();
    let draft = Draft::under(&vc, g, &w.planner.did(), from - 1).unwrap();
    assert_eq!(code(draft.check(&vc)), "delegation.wider.time");
}

#[test]
fn a_child_may_delegate_only_shallower_and_inside_its_parents_range() {
    let w = World::new();
    let d = |json: Value| code(w.planner_delegates(json));
    let r = |depth: u8, s: u64, e: u64| json!({"maxDepth": depth, "statusList": LIST, "statusRange": [s, e]});
    assert_eq!(d(json!({"delegation": r(1, 1000, 1500)})), "accepted");
    assert_eq!(d(json!({"delegation": r(1, 1501, 2000)})), "accepted");
    assert_eq!(
        d(json!({"delegation": r(2, 1600, 1700)})),
        "delegation.depth"
    );
    assert_eq!(
        d(json!({"delegation": r(1, 999, 1400)})),
        "delegation.status"
    );
    assert_eq!(
        d(json!({"delegation": r(1, 1600, 2001)})),
        "delegation.status"
    );
    // Its own index (1500) inside its own range.
    assert_eq!(
        d(json!({"delegation": r(1, 1400, 1600)})),
        "delegation.status"
    );
    let other = json!({"maxDepth": 1, "statusList": "https://owner.example/status/2", "statusRange": [1600, 1700]});
    assert_eq!(d(json!({"delegation": other})), "delegation.status");
    // The same by a verifier.
    assert_eq!(
        code(w.forged(json!({"delegation": r(2, 1600, 1700)}))),
        "delegation.depth"
    );
}

#[test]
fn the_status_entry_must_lie_in_the_parents_range_of_the_owners_list() {
    let w = World::new();
    let vc = w.owner.verify(&w.root, NOW).unwrap();
    for (entry, want) in [
        (status(1000), "accepted"),
        (status(1999), "accepted"),
        (status(999), "delegation.status"),
        (status(2000), "delegation.status"),
        (
            Some(cada_contract::StatusEntry::new("https://owner.example/status/2", 1500).unwrap()),
            "delegation.status",
        ),
        (None, "delegation.status"),
    ] {
        let mut g = narrow_grant(vc.leaf(), &w.worker.did(), "{}", NOW - 60, NOW + 60).unwrap();
        g.status = entry;
        assert_eq!(
            code(
                w.owner
                    .delegate(&w.root, &w.planner, g.clone(), NOW - 10, true)
            ),
            want
        );
        let forged = w
            .owner
            .delegate(&w.root, &w.planner, g, NOW - 10, false)
            .and_then(|c| w.owner.verify(&c, NOW));
        assert_eq!(code(forged), want);
    }
}

#[test]
fn depth_is_bounded_by_every_ancestor() {
    let w = World::new();
    let r = |depth: u8, s: u64, e: u64| json!({"maxDepth": depth, "statusList": LIST, "statusRange": [s, e]});
    // Root maxDepth 2: root → worker (maxDepth 1) → helper (may not delegate).
    let g1 = w.grant(
        &w.root,
        &w.worker,
        json!({"delegation": r(1, 1600, 1700)}),
        1500,
    );
    let d1 = w
        .owner
        .delegate(&w.root, &w.planner, g1, NOW - 10, true)
        .unwrap();
    let g2 = w.grant(&d1, &w.helper, json!({}), 1650);
    let d2 = w.owner.delegate(&d1, &w.worker, g2, NOW - 9, true).unwrap();
    w.owner.verify(&d2, NOW).unwrap();
    // A third level: the helper has no delegation rules (not allowed) …
    let third = Enclave::ed();
    let g3 = w.grant(&d2, &third, json!({}), 1660);
    let e = w
        .owner
        .delegate(&d2, &w.helper, g3.clone(), NOW - 8, true)
        .unwrap_err();
    assert_eq!(e.code(), "delegation.not_allowed");
    // … and forging rules into the helper's link does not help: the root's maxDepth 2
    // bounds depth 3 (a forged link is refused as soon as it is wider than its parent).
    let g2 = w.grant(
        &d1,
        &w.helper,
        json!({"delegation": r(1, 1650, 1660)}),
        1640,
    );
    let forged2 = w
        .owner
        .delegate(&d1, &w.worker, g2, NOW - 9, false)
        .unwrap();
    assert_eq!(code(w.owner.verify(&forged2, NOW)), "delegation.depth");
    // A parent with maxDepth 1 whose child names maxDepth 1 too.
    let g1 = w.grant(
        &w.root,
        &w.worker,
        json!({"delegation": r(2, 1600, 1700)}),
        1500,
    );
    let forged1 = w
        .owner
        .delegate(&w.root, &w.planner, g1, NOW - 10, false)
        .unwrap();
    assert_eq!(code(w.owner.verify(&forged1, NOW)), "delegation.depth");
}

#[test]
fn a_root_without_delegation_rules_cannot_be_delegated() {
    let owner = Owner::new();
    let planner = Enclave::ed();
    let mut g = root_grant(&planner.did());
    g.delegation = None;
    let root = owner.issue(&g);
    let vc = owner.verify(&root, NOW).unwrap();
    let mut child =
        narrow_grant(vc.leaf(), &Enclave::ed().did(), "{}", NOW - 60, NOW + 60).unwrap();
    child.status = status(1500);
    let e = owner
        .delegate(&root, &planner, child.clone(), NOW - 10, true)
        .unwrap_err();
    assert_eq!(e.code(), "delegation.not_allowed");
    let forged = owner
        .delegate(&root, &planner, child, NOW - 10, false)
        .and_then(|c| owner.verify(&c, NOW));
    assert_eq!(code(forged), "delegation.not_allowed");
}

#[test]
fn chain_failures_each_have_their_code() {
    let w = World::new();
    let good = w.planner_delegates(json!({})).unwrap();
    let (root, d1) = good.split_once('~').unwrap();

    // A flipped signature byte.
    let mut bad = d1.as_bytes().to_vec();
    let at = bad.len() - 10;
    bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
    let bad = String::from_utf8(bad).unwrap();
    assert_eq!(
        code(w.owner.verify(&format!("{root}~{bad}"), NOW)),
        "delegation.signature"
    );

    // A payload altered after signing.
    let (h, mut p) = parts(d1);
    p["credentialSubject"]["methods"] = json!(["GET", "POST"]);
    let sig = d1.rsplit('.').next().unwrap();
    let altered = format!(
        "{}.{}.{sig}",
        cada_protocol::b64::encode(h.to_string()),
        cada_protocol::b64::encode(p.to_string())
    );
    assert_eq!(
        code(w.owner.verify(&format!("{root}~{altered}"), NOW)),
        "delegation.signature"
    );

    // Signed by another key than the parent's subject.
    let (_, p) = parts(d1);
    let mut p2 = p.clone();
    p2["issuer"] = json!(w.helper.did());
    p2["iss"] = json!(w.helper.did());
    let by_helper = w.helper.sign_payload(&p2);
    assert_eq!(
        code(w.owner.verify(&format!("{root}~{by_helper}"), NOW)),
        "delegation.issuer"
    );
    // A kid that does not match the payload's issuer.
    let by_helper = w.helper.sign_payload(&p);
    assert_eq!(
        code(w.owner.verify(&format!("{root}~{by_helper}"), NOW)),
        "delegation.issuer"
    );

    // Wrong parent digest, root digest, owner, depth: delegation.link.
    for (member, value) in [
        ("parent", json!(digest_of("something else"))),
        ("root", json!(digest_of("another root"))),
        (
            "owner",
            json!("did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"),
        ),
        ("depth", json!(2)),
    ] {
        let mut q = p.clone();
        q["cadaDelegation"][member] = value;
        let forged = w.planner.sign_payload(&q);
        assert_eq!(
            code(w.owner.verify(&format!("{root}~{forged}"), NOW)),
            "delegation.link",
            "{member}"
        );
    }

    // Reordered: the link before its root.
    assert_eq!(
        code(w.owner.verify(&format!("{d1}~{root}"), NOW)),
        "contract.untrusted_owner"
    );

    // A link that is not a delegation (an owner contract as link 1; this owner's DID is
    // a did:key, so its signature verifies).
    assert_eq!(
        code(w.owner.verify(&format!("{root}~{root}"), NOW)),
        "delegation.malformed"
    );

    // A measurement subject.
    let mut q = p.clone();
    q["credentialSubject"].as_object_mut().unwrap().remove("id");
    q.as_object_mut().unwrap().remove("sub");
    q["credentialSubject"]["measurements"] = json!([{"PCR0": "00".repeat(48)}]);
    let forged = w.planner.sign_payload(&q);
    assert_eq!(
        code(w.owner.verify(&format!("{root}~{forged}"), NOW)),
        "delegation.subject"
    );

    // No cadaDelegation, or no CadaDelegation type.
    let mut q = p.clone();
    q.as_object_mut().unwrap().remove("cadaDelegation");
    let forged = w.planner.sign_payload(&q);
    assert_eq!(
        code(w.owner.verify(&format!("{root}~{forged}"), NOW)),
        "delegation.malformed"
    );
    let mut q = p.clone();
    q["type"] = json!(["VerifiableCredential", "CadaTrustContract"]);
    let forged = w.planner.sign_payload(&q);
    assert_eq!(
        code(w.owner.verify(&format!("{root}~{forged}"), NOW)),
        "delegation.malformed"
    );
    // Schema 1.
    let mut q = p.clone();
    q.as_object_mut().unwrap().remove("cadaSchema");
    let forged = w.planner.sign_payload(&q);
    assert_eq!(
        code(w.owner.verify(&format!("{root}~{forged}"), NOW)),
        "delegation.malformed"
    );
    // An unknown member in cadaDelegation, empty evidence.
    let mut q = p.clone();
    q["cadaDelegation"]["extra"] = json!(1);
    let forged = w.planner.sign_payload(&q);
    assert_eq!(
        code(w.owner.verify(&format!("{root}~{forged}"), NOW)),
        "contract.malformed"
    );
    let mut q = p.clone();
    q["cadaDelegation"]["evidence"] = json!("");
    let forged = w.planner.sign_payload(&q);
    assert_eq!(
        code(w.owner.verify(&format!("{root}~{forged}"), NOW)),
        "delegation.malformed"
    );

    // Evidence one byte over the limit, in a link that is still under 48 KiB.
    let mut q = p.clone();
    let big = vec![1u8; cada_contract::delegation::MAX_EVIDENCE_LEN + 1];
    q["cadaDelegation"]["evidence"] = json!(cada_protocol::b64::encode(&big));
    let forged = w.planner.sign_payload(&q);
    assert!(forged.len() <= MAX_DELEGATION_LEN, "{}", forged.len());
    assert_eq!(
        code(w.owner.verify(&format!("{root}~{forged}"), NOW)),
        "delegation.malformed"
    );

    // The delegation alone, where an owner contract is expected.
    assert_eq!(
        code(Contract::verify(d1, &w.owner.owners, NOW)),
        "contract.untrusted_owner"
    );
    // An owner contract carrying cadaDelegation is refused even when the owner signs it.
    let (oh, mut op) = parts(root);
    op["cadaDelegation"] = p["cadaDelegation"].clone();
    op["type"] = json!([
        "VerifiableCredential",
        "CadaTrustContract",
        "CadaDelegation"
    ]);
    let input = format!(
        "{}.{}",
        cada_protocol::b64::encode(oh.to_string()),
        cada_protocol::b64::encode(op.to_string())
    );
    let sig = w.owner.key.sign_bytes(input.as_bytes()).unwrap();
    let owner_signed = format!("{input}.{}", cada_protocol::b64::encode(sig));
    assert_eq!(
        code(Contract::verify(&owner_signed, &w.owner.owners, NOW)),
        "delegation.malformed"
    );
}

#[test]
fn a_chain_spliced_from_two_owners_is_refused() {
    let a = World::new();
    let b = World::new();
    let a_chain = a.planner_delegates(json!({})).unwrap();
    let (_, a_link) = a_chain.split_once('~').unwrap();
    // B's root (trusted by B), A's link: the parent digest names A's root.
    let spliced = format!("{}~{a_link}", b.root);
    assert_eq!(code(b.owner.verify(&spliced, NOW)), "delegation.link");
    // Even with the planner of A re-signing a link that names B's root and parent but
    // A's owner, the owner must be the root's.
    let (_, mut p) = parts(a_link);
    p["issuer"] = json!(b.planner.did());
    p["iss"] = json!(b.planner.did());
    p["cadaDelegation"]["parent"] = json!(digest_of(&b.root));
    p["cadaDelegation"]["root"] = json!(digest_of(&b.root));
    let forged = b.planner.sign_payload(&p);
    let e = b
        .owner
        .verify(&format!("{}~{forged}", b.root), NOW)
        .unwrap_err();
    assert_eq!(e.code(), "delegation.link");
    assert!(e.to_string().contains(b.owner.key.did()), "{e}");
}

#[test]
fn an_expired_link_or_parent_refuses_the_chain() {
    let w = World::new();
    let vc = w.owner.verify(&w.root, NOW).unwrap();
    let mut g = narrow_grant(vc.leaf(), &w.worker.did(), "{}", NOW - 60, NOW + 60).unwrap();
    g.status = status(1500);
    let chain = w
        .owner
        .delegate(&w.root, &w.planner, g, NOW - 10, true)
        .unwrap();
    assert_eq!(code(w.owner.verify(&chain, NOW + 59)), "accepted");
    assert_eq!(code(w.owner.verify(&chain, NOW + 60)), "contract.expired");
    // The parent expires at NOW + 3600; a leaf cannot outlive it.
    assert_eq!(code(w.owner.verify(&chain, NOW + 3600)), "contract.expired");
    assert_eq!(
        code(w.owner.verify(&chain, NOW - 61)),
        "contract.not_yet_valid"
    );
}

#[test]
fn a_revoked_link_is_revoked_by_the_root_owners_list() {
    let w = World::new();
    let chain = w.planner_delegates(json!({})).unwrap();
    let vc = w.owner.verify(&chain, NOW).unwrap();
    let mut list = StatusList::new(LIST, 131_072).unwrap();
    let issued = list.issue(&w.owner.key, NOW - 5, None).unwrap();
    let verified = StatusList::verify(&issued, &w.owner.owners, NOW).unwrap();
    for c in vc.contracts() {
        c.check_status(&verified, NOW, NOW, 300).unwrap();
    }
    list.revoke(1500).unwrap();
    let issued = list.issue(&w.owner.key, NOW - 4, None).unwrap();
    let verified = StatusList::verify(&issued, &w.owner.owners, NOW).unwrap();
    vc.root.check_status(&verified, NOW, NOW, 300).unwrap();
    let e = vc
        .leaf()
        .check_status(&verified, NOW, NOW, 300)
        .unwrap_err();
    assert_eq!(e.code(), "contract.revoked");
}

#[test]
fn the_worker_cannot_present_the_planners_contract_as_its_own() {
    let w = World::new();
    let vc = w.owner.verify(&w.root, NOW).unwrap();
    let e = vc
        .leaf()
        .check_subject(&w.worker.did(), &BTreeMap::new())
        .unwrap_err();
    assert_eq!(e.code(), "contract.subject");
    let chain = w.planner_delegates(json!({})).unwrap();
    let vc = w.owner.verify(&chain, NOW).unwrap();
    vc.leaf()
        .check_subject(&w.worker.did(), &BTreeMap::new())
        .unwrap();
    assert_eq!(
        code(vc.leaf().check_subject(&w.planner.did(), &BTreeMap::new())),
        "contract.subject"
    );
}

#[test]
fn split_chain_keeps_its_limits() {
    assert_eq!(split_chain("a").unwrap(), vec!["a"]);
    assert_eq!(split_chain("a~b~c").unwrap(), vec!["a", "b", "c"]);
    assert_eq!(code(split_chain("")), "delegation.malformed");
    assert_eq!(code(split_chain("a~")), "delegation.malformed");
    assert_eq!(code(split_chain("a~~b")), "delegation.malformed");
    let nine = ["x"; MAX_CHAIN_LINKS + 1].join("~");
    assert_eq!(split_chain(&nine).unwrap().len(), MAX_CHAIN_LINKS + 1);
    let ten = ["x"; MAX_CHAIN_LINKS + 2].join("~");
    assert_eq!(code(split_chain(&ten)), "delegation.too_large");
    let big_link = format!("a~{}", "x".repeat(MAX_DELEGATION_LEN + 1));
    assert_eq!(code(split_chain(&big_link)), "delegation.too_large");
    let at_limit = format!("a~{}", "x".repeat(MAX_DELEGATION_LEN));
    assert!(split_chain(&at_limit).is_ok());
    let huge = "x".repeat(MAX_CHAIN_LEN + 1);
    assert_eq!(code(split_chain(&huge)), "delegation.too_large");
    let w = World::new();
    let owners = &w.owner.owners;
    assert_eq!(
        code(cada_contract::verify_chain(&[], owners, NOW)),
        "delegation.malformed"
    );
    let many: Vec<&str> = vec![w.root.as_str(); MAX_CHAIN_LINKS + 2];
    assert_eq!(
        code(cada_contract::verify_chain(&many, owners, NOW)),
        "delegation.too_large"
    );
}

#[test]
fn narrow_grant_replaces_clears_and_keeps() {
    let w = World::new();
    let vc = w.owner.verify(&w.root, NOW).unwrap();
    let g = narrow_grant(
        vc.leaf(),
        &w.worker.did(),
        r#"{"tools": ["search"], "budget": null, "name": "worker"}"#,
        NOW,
        NOW + 60,
    )
    .unwrap();
    assert_eq!(g.tools, vec!["search".to_string()]);
    assert_eq!(g.budget, None);
    assert_eq!(g.methods, vec!["GET".to_string(), "POST".to_string()]);
    assert_eq!(g.rate_per_second, Some(10));
    assert_eq!(g.name.as_deref(), Some("worker"));
    assert_eq!(g.delegation, None);
    assert_eq!(g.status, None);
    assert_eq!(g.subject, Subject::Key(w.worker.did()));
    for bad in [r#"{"id": "x"}"#, r#"[1]"#, r#"{"tools": "search"}"#, "{"] {
        assert_eq!(
            code(narrow_grant(vc.leaf(), &w.worker.did(), bad, NOW, NOW + 60)),
            "delegation.malformed",
            "{bad}"
        );
    }
    let huge = format!(r#"{{"name": "{}"}}"#, "x".repeat(MAX_DELEGATION_LEN));
    assert_eq!(
        code(narrow_grant(
            vc.leaf(),
            &w.worker.did(),
            &huge,
            NOW,
            NOW + 60
        )),
        "delegation.too_large"
    );
}

#[test]
fn assemble_checks_key_and_signature() {
    let w = World::new();
    let vc = w.owner.verify(&w.root, NOW).unwrap();
    let mut g = narrow_grant(vc.leaf(), &w.worker.did(), "{}", NOW - 60, NOW + 60).unwrap();
    g.status = status(1500);
    let draft = Draft::under(&vc, g, &w.planner.did(), NOW - 10).unwrap();
    let payload = draft.payload_bytes(b"e").unwrap();
    let (alg, kid) = (w.planner.alg(), w.planner.kid());
    assert_eq!(
        code(draft.signing_input(&payload, alg, &w.worker.kid())),
        "delegation.issuer"
    );
    assert_eq!(
        code(draft.signing_input(&payload, SigAlg::ES256, &kid)),
        "delegation.malformed"
    );
    let input = draft.signing_input(&payload, alg, &kid).unwrap();
    let wrong = w.worker.sign(input.as_bytes());
    assert_eq!(
        code(draft.assemble(&payload, alg, &kid, &wrong)),
        "delegation.signature"
    );
    let sig = w.planner.sign(input.as_bytes());
    draft.assemble(&payload, alg, &kid, &sig).unwrap();
    assert_eq!(code(draft.payload_bytes(b"")), "delegation.malformed");
    let big = vec![0u8; cada_contract::delegation::MAX_EVIDENCE_LEN + 1];
    assert_eq!(code(draft.payload_bytes(&big)), "delegation.malformed");
    // The largest evidence still fits the delegation limit with a modest grant.
    let max = vec![7u8; cada_contract::delegation::MAX_EVIDENCE_LEN];
    let p = draft.payload_bytes(&max).unwrap();
    let input = draft.signing_input(&p, alg, &kid).unwrap();
    let sig = w.planner.sign(input.as_bytes());
    let compact = draft.assemble(&p, alg, &kid, &sig).unwrap();
    assert!(compact.len() <= MAX_DELEGATION_LEN, "{}", compact.len());
    // A measurement subject cannot be drafted.
    let mut m = draft.clone();
    m.grant.subject = Subject::Measurements(vec![BTreeMap::from([(
        "PCR0".to_string(),
        "00".repeat(48),
    )])]);
    assert_eq!(code(m.payload_bytes(b"e")), "delegation.subject");
    assert_eq!(code(m.evidence_nonce()), "delegation.subject");
}

#[test]
fn owner_contract_delegation_rules_are_checked_when_issued() {
    let owner = Owner::new();
    let planner = Enclave::ed();
    for (r, own, want) in [
        (rules(0, 1000, 2000), 5, "contract.malformed"),
        (rules(9, 1000, 2000), 5, "contract.malformed"),
        (rules(8, 1000, 1000), 5, "contract.malformed"),
        (rules(8, 0, (1 << 20) + 1), 5_000_000, "contract.malformed"),
        (rules(8, 0, 1 << 20), 5_000_000, "accepted"),
        (rules(1, 0, 10), 5, "delegation.status"),
        (rules(1, 0, 5), 5, "accepted"),
    ] {
        let mut g = root_grant(&planner.did());
        g.delegation = r;
        g.status = status(own);
        assert_eq!(code(g.issue(&owner.key, NOW)), want, "{:?}", g.delegation);
    }
    let mut g = root_grant(&planner.did());
    g.delegation = Some(DelegationRules {
        max_depth: 1,
        status_list: "ftp://owner.example/list".into(),
        status_range: [1000, 2000],
    });
    assert_eq!(code(g.issue(&owner.key, NOW)), "contract.malformed");
}

#[test]
fn every_code_is_a_delegation_code() {
    for c in CODES {
        assert!(c.starts_with("delegation."), "{c}");
        let e = cada_contract::ContractError::delegation(c, "x");
        assert_eq!(e.code(), *c);
    }
}

#[test]
fn eight_links_verify_and_a_ninth_is_refused() {
    let owner = Owner::new();
    let keys: Vec<Enclave> = (0..10).map(|_| Enclave::ed()).collect();
    let mut g = root_grant(&keys[0].did());
    g.delegation = rules(8, 1000, 2000);
    let mut chain = owner.issue(&g);
    for depth in 1..=8u8 {
        let index = 1000 + u64::from(depth);
        let json = if depth < 8 {
            json!({"delegation": {"maxDepth": 8 - depth, "statusList": LIST,
                                  "statusRange": [index + 1, 2000]}})
        } else {
            json!({})
        };
        let vc = owner.verify(&chain, NOW).unwrap();
        let mut next = narrow_grant(
            vc.leaf(),
            &keys[usize::from(depth)].did(),
            &json.to_string(),
            NOW - 60,
            NOW + 600,
        )
        .unwrap();
        next.status = status(index);
        chain = owner
            .delegate(&chain, &keys[usize::from(depth) - 1], next, NOW - 10, true)
            .unwrap();
    }
    let vc = owner.verify(&chain, NOW).unwrap();
    assert_eq!(vc.depth(), 8);
    assert_eq!(vc.leaf().subject(), &Subject::Key(keys[8].did()));
    // The eighth may not delegate (no rules left), and a ninth link is too many to carry.
    let mut ninth = narrow_grant(vc.leaf(), &keys[9].did(), "{}", NOW - 60, NOW + 600).unwrap();
    ninth.status = status(1999);
    assert_eq!(
        code(owner.delegate(&chain, &keys[8], ninth, NOW - 10, true)),
        "delegation.not_allowed"
    );
    let (_, last) = chain.rsplit_once('~').unwrap();
    assert_eq!(
        code(owner.verify(&format!("{chain}~{last}"), NOW)),
        "delegation.too_large"
    );
}

#[test]
fn under_a_measurement_root_any_delegator_key_is_accepted_here() {
    // The owner's contract names an image, not a key: whichever enclave runs it may
    // delegate, and the verifier holds the delegator's evidence to the set (the library
    // cannot: it sees no evidence).
    let owner = Owner::new();
    let mut g = root_grant("did:key:unused");
    g.subject = Subject::Measurements(vec![BTreeMap::from([(
        "PCR0".to_string(),
        "ab".repeat(48),
    )])]);
    let root = owner.issue(&g);
    let (a, worker) = (Enclave::ed(), Enclave::ed());
    let vc = owner.verify(&root, NOW).unwrap();
    let mut child = narrow_grant(vc.leaf(), &worker.did(), "{}", NOW - 60, NOW + 60).unwrap();
    child.status = status(1500);
    let chain = owner.delegate(&root, &a, child, NOW - 10, true).unwrap();
    let vc = owner.verify(&chain, NOW).unwrap();
    assert_eq!(vc.leaf().issuer(), a.did());
    assert_eq!(vc.links[0].issuer, *a.public());
}

/// Review delegation-1, finding 1: a delegation to a key already in its chain — the
/// delegator's own (a self-delegation), the root's subject, or any link's issuer or subject
/// (a cycle planner → worker → planner) — is refused `delegation.cycle`, by the enclave
/// before it signs and by a verifier of the same link forged outside an enclave. Each such
/// delegation would start again the budgets only an enclave counts (opens, secret calls).
#[test]
fn a_delegation_to_a_key_already_in_its_chain_is_refused() {
    let w = World::new();
    let wide =
        json!({"delegation": {"maxDepth": 1, "statusList": LIST, "statusRange": [1600, 1700]}});
    // The planner to itself.
    for checked in [true, false] {
        let g = w.grant(&w.root, &w.planner, json!({}), 1500);
        let r = w.owner.delegate(&w.root, &w.planner, g, NOW - 10, checked);
        let r = r.and_then(|c| w.owner.verify(&c, NOW).map(|_| c));
        assert_eq!(code(r), "delegation.cycle", "self, checked {checked}");
    }
    // planner → worker → planner (and → worker itself).
    let g = w.grant(&w.root, &w.worker, wide.clone(), 1500);
    let d1 = w
        .owner
        .delegate(&w.root, &w.planner, g, NOW - 10, true)
        .unwrap();
    for (to, checked) in [
        (&w.planner, true),
        (&w.planner, false),
        (&w.worker, true),
        (&w.worker, false),
    ] {
        let g = w.grant(&d1, to, json!({}), 1650);
        let r = w.owner.delegate(&d1, &w.worker, g, NOW - 5, checked);
        let r = r.and_then(|c| w.owner.verify(&c, NOW).map(|_| c));
        let e = r.unwrap_err();
        assert_eq!(e.code(), "delegation.cycle", "to {}: {e}", to.did());
    }
    // Another key is accepted at the same place.
    let g = w.grant(&d1, &w.helper, json!({}), 1650);
    let d2 = w.owner.delegate(&d1, &w.worker, g, NOW - 5, true).unwrap();
    assert_eq!(w.owner.verify(&d2, NOW).unwrap().depth(), 2);
}

/// Under a root made for measurements (no subject key), the keys in the chain are its links'
/// issuers and subjects: the delegator of link 1 cannot get a delegation back from its
/// delegatee.
#[test]
fn under_a_measurement_root_a_delegation_back_to_the_first_delegator_is_refused() {
    let owner = Owner::new();
    let mut g = root_grant("did:key:unused");
    g.subject = Subject::Measurements(vec![BTreeMap::from([(
        "PCR0".to_string(),
        "ab".repeat(48),
    )])]);
    let root = owner.issue(&g);
    let (a, worker) = (Enclave::ed(), Enclave::ed());
    let vc = owner.verify(&root, NOW).unwrap();
    let mut child = narrow_grant(
        vc.leaf(),
        &worker.did(),
        &json!({"delegation": {"maxDepth": 1, "statusList": LIST, "statusRange": [1600, 1700]}})
            .to_string(),
        NOW - 60,
        NOW + 60,
    )
    .unwrap();
    child.status = status(1500);
    let d1 = owner.delegate(&root, &a, child, NOW - 10, true).unwrap();
    let vc = owner.verify(&d1, NOW).unwrap();
    for checked in [true, false] {
        let mut back = narrow_grant(vc.leaf(), &a.did(), "{}", NOW - 60, NOW + 60).unwrap();
        back.status = status(1650);
        let r = owner.delegate(&d1, &worker, back, NOW - 5, checked);
        let r = r.and_then(|c| owner.verify(&c, NOW).map(|_| c));
        assert_eq!(code(r), "delegation.cycle", "checked {checked}");
    }
}
