//! Property tests on the MEANING of attenuation (issue 24), not on the subset function:
//! for a random parent contract P, a random candidate D (mostly narrowed, sometimes one
//! step wider in a few random dimensions) and random requests r, whenever the enclave
//! would sign D (its `Draft::check` accepts) and D permits r, P permits r — for requests,
//! token exchanges, MCP calls, argument-checked tool calls, secrets, opens and step-up —
//! and a verifier of D forged outside an enclave (`verify_chain`) decides exactly as the
//! enclave did.
mod common;

use std::collections::BTreeMap;

use cada_contract::delegation::{split_chain, verify_chain, DelegationRules, Draft};
use cada_contract::{
    AuditLevel, AuthorizationDetail, BehaviourLimits, CallArguments, ContractError, Grant,
    OpenGrant, RequestView, SecretGrant, Subject, VerifiedContract, WindowLimit,
};
use cada_protocol::mcp::McpCall;
use cada_protocol::url::HttpUrl;
use common::*;
use proptest::prelude::*;
use serde_json::json;

const AUDIENCES: [&str; 7] = [
    "https://a.example/",
    "https://a.example/mcp",
    "https://a.example/mcp/",
    "https://a.example/mcp/tools",
    "https://a.example/mcpx",
    "https://b.example/v1",
    "http://127.0.0.1:8080/api",
];
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];
const SCOPES: [&str; 4] = ["s1", "s2", "s3", "s4"];
const TOOLS: [&str; 4] = ["search", "fetch", "deploy", "wipe"];
const RESOURCES: [&str; 6] = [
    "file:///srv/public/",
    "file:///srv/public/docs",
    "file:///srv/publicity",
    "file:///srv/",
    "urn:x:1",
    "mem://notes",
];
const PROMPTS: [&str; 4] = ["p1", "p2", "p3", "p4"];
/// (name, prefix, methods)
const SECRETS: [(&str, &str, &[&str]); 5] = [
    ("gh", "https://api.github.com/repos", &["GET"]),
    ("gh", "https://api.github.com/repos/acme", &["GET", "POST"]),
    ("gh", "https://api.github.com/repos/acme", &["GET"]),
    ("gh", "https://api.github.com/reposx", &["GET", "POST"]),
    ("db", "https://db.example/", &["POST"]),
];
const LABELS: [&str; 3] = ["notes", "logs", "mail"];
const CTX: [&str; 3] = ["task", "user", "tenant"];
const STEP_UP: [Option<&str>; 3] = [
    None,
    Some("https://approve.example/"),
    Some("https://approve.example/x"),
];
const URLS: [&str; 16] = [
    "https://a.example/",
    "https://a.example/mcp",
    "https://a.example/mcp/",
    "https://a.example/mcp/tools",
    "https://a.example/mcp/tools/x",
    "https://a.example/mcpx",
    "https://b.example/v1",
    "https://b.example/v1/y",
    "https://b.example/v2",
    "http://127.0.0.1:8080/api/q",
    "https://ops.example/run",
    "https://approve.example/v1/step-up",
    "https://approve.example/x/v1/step-up",
    "https://api.github.com/repos/acme/app",
    "https://api.github.com/reposx/y",
    "https://db.example/q",
];
const URIS: [&str; 8] = [
    "file:///srv/public/a",
    "file:///srv/public/docs/x",
    "file:///srv/public/docs",
    "file:///srv/publicity",
    "file:///srv/x",
    "urn:x:1",
    "mem://notes/1",
    "file:///srv/public/../secret",
];
const TEMPLATES: [&str; 3] = [
    "file:///srv/public/{p}",
    "file:///srv/{p}",
    "file:///srv/public/docs/{p}",
];
const ARGS: [&str; 4] = [
    "{}",
    r#"{"env": "staging"}"#,
    r#"{"env": "prod"}"#,
    r#"{"env": "staging", "force": true}"#,
];

fn detail(i: usize) -> AuthorizationDetail {
    let id = |n: u32| format!("urn:uuid:00000000-0000-4000-8000-00000000000{n}");
    let j = match i {
        0 => json!({"locations": ["https://a.example/mcp"], "tool": "deploy",
                    "additional_arguments": true, "identifier": id(1)}),
        1 => json!({"locations": ["https://a.example/mcp/tools"], "tool": "deploy",
                    "arguments": {"env": {"eq": "staging"}}, "single_use": true,
                    "identifier": id(1)}),
        2 => json!({"locations": ["https://b.example/v1"], "tool": "search",
                    "additional_arguments": true, "identifier": id(2)}),
        3 => json!({"locations": ["https://ops.example/"], "tool": "deploy",
                    "arguments": {"env": {"one_of": ["staging", "prod"]}}, "identifier": id(3)}),
        _ => json!({"locations": ["https://ops.example/"], "tool": "deploy",
                    "arguments": {"env": {"eq": "staging"}}, "identifier": id(3)}),
    };
    let mut j = j;
    j["type"] = json!("mcp_tool_call");
    j["actions"] = json!(["tools/call"]);
    AuthorizationDetail::parse(&j.to_string()).unwrap()
}
const DETAILS: usize = 5;

/// One contract, as choices from the pools.
#[derive(Debug, Clone)]
struct Spec {
    audiences: u8,
    methods: u8,
    scopes: u8,
    tools: u8,
    resources: u8,
    prompts: u8,
    secrets: u8,
    opens: u8,
    open_budgets: [u64; 3],
    ctx: u8,
    budget: Option<u64>,
    rate: Option<u32>,
    audit: u8,
    limits: Option<(u64, u64)>,
    from_off: u64,
    until_off: u64,
    details: u8,
    step_up: u8,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        (
            any::<u8>(),
            1u8..16,
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
        ),
        (
            [1u64..20, 1u64..20, 1u64..20],
            any::<u8>(),
            proptest::option::of(1u64..100),
            proptest::option::of(1u32..10),
            0u8..3,
            proptest::option::of((1u64..100, 1u64..600)),
            0u64..100,
            100u64..3600,
            any::<u8>(),
            0u8..3,
        ),
    )
        .prop_map(
            |(
                (audiences, methods, scopes, tools, resources, prompts, secrets, opens),
                (
                    open_budgets,
                    ctx,
                    budget,
                    rate,
                    audit,
                    limits,
                    from_off,
                    until_off,
                    details,
                    step_up,
                ),
            )| Spec {
                audiences,
                methods,
                scopes,
                tools,
                resources,
                prompts,
                secrets,
                opens,
                open_budgets,
                ctx,
                budget,
                rate,
                audit,
                limits,
                from_off,
                until_off,
                details,
                step_up,
            },
        )
}

fn pick<T: Copy>(pool: &[T], mask: u8) -> Vec<T> {
    pool.iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, v)| *v)
        .collect()
}

fn strings(pool: &[&str], mask: u8) -> Vec<String> {
    pick(pool, mask).into_iter().map(String::from).collect()
}

fn grant(s: &Spec, subject: &str) -> Grant {
    let mut g = Grant::new(
        Subject::Key(subject.into()),
        strings(&AUDIENCES, s.audiences),
        strings(&METHODS, s.methods),
        NOW - 1000 + s.from_off,
        NOW + s.until_off,
    );
    g.scopes = strings(&SCOPES, s.scopes);
    g.tools = strings(&TOOLS, s.tools);
    g.resources = strings(&RESOURCES, s.resources);
    g.prompts = strings(&PROMPTS, s.prompts);
    g.secrets = pick(&SECRETS, s.secrets)
        .into_iter()
        .map(|(n, p, m)| SecretGrant {
            name: n.into(),
            prefix: p.into(),
            methods: m.iter().map(|x| (*x).to_string()).collect(),
        })
        .collect();
    g.opens = LABELS
        .iter()
        .zip(s.open_budgets)
        .enumerate()
        .filter(|(i, _)| s.opens & (1 << i) != 0)
        .map(|(_, (l, b))| OpenGrant {
            label: (*l).into(),
            budget: b,
        })
        .collect();
    g.required_ctx = strings(&CTX, s.ctx);
    g.budget = s.budget;
    g.rate_per_second = s.rate;
    g.audit = [AuditLevel::Minimal, AuditLevel::Standard, AuditLevel::Full][usize::from(s.audit)];
    g.limits = BehaviourLimits {
        requests: s.limits.map(|(max, window_seconds)| WindowLimit {
            max,
            window_seconds,
        }),
        refusals: None,
    };
    g.authorization_details = (0..DETAILS)
        .filter(|i| s.details & (1 << i) != 0)
        .map(detail)
        .collect();
    g.step_up = STEP_UP[usize::from(s.step_up)].map(String::from);
    g
}

/// A dimension of [`derive`]: `wide` when its `widen` bit is set, else the narrowed value
/// (both are pure, so computing both changes nothing).
fn wide_or<T>(take_wide: bool, wide: T, narrowed: T) -> T {
    if take_wide {
        wide
    } else {
        narrowed
    }
}

/// D from P: each dimension narrowed by `keep`, except those whose bit in `widen` is set,
/// taken from `wide` (which may or may not be wider).
fn derive(p: &Spec, keep: &Spec, wide: &Spec, widen: u32) -> Spec {
    let w = |bit: u32| widen & (1 << bit) != 0;
    let min_opt = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (Some(a), None) => Some(a),
        (None, b) => b,
    };
    Spec {
        audiences: wide_or(w(0), wide.audiences, p.audiences & keep.audiences),
        methods: wide_or(w(1), wide.methods, {
            let m = p.methods & keep.methods;
            if m == 0 {
                p.methods
            } else {
                m
            }
        }),
        scopes: wide_or(w(2), wide.scopes, p.scopes & keep.scopes),
        tools: wide_or(w(3), wide.tools, p.tools & keep.tools),
        resources: wide_or(w(4), wide.resources, p.resources & keep.resources),
        prompts: wide_or(w(5), wide.prompts, p.prompts & keep.prompts),
        secrets: wide_or(w(6), wide.secrets, p.secrets & keep.secrets),
        opens: wide_or(w(7), wide.opens, p.opens & keep.opens),
        open_budgets: wide_or(
            w(8),
            wide.open_budgets,
            [0, 1, 2].map(|i| p.open_budgets[i].min(keep.open_budgets[i])),
        ),
        ctx: wide_or(w(9), wide.ctx, p.ctx | keep.ctx),
        budget: wide_or(w(10), wide.budget, min_opt(p.budget, keep.budget)),
        rate: wide_or(w(11), wide.rate, {
            min_opt(p.rate.map(u64::from), keep.rate.map(u64::from))
                .and_then(|r| u32::try_from(r).ok())
        }),
        audit: wide_or(w(12), wide.audit, p.audit.max(keep.audit)),
        limits: wide_or(
            w(13),
            wide.limits,
            match (p.limits, keep.limits) {
                (Some((pm, pw)), Some((km, kw))) => Some((pm.min(km), pw.max(kw))),
                (Some(l), None) => Some(l),
                (None, k) => k,
            },
        ),
        from_off: wide_or(w(14), wide.from_off, p.from_off.max(keep.from_off)),
        until_off: wide_or(w(14), wide.until_off, p.until_off.min(keep.until_off)),
        details: wide_or(w(15), wide.details, {
            // Narrowed: a subset, or detail 1 (within 0) for 0, detail 4 (within 3) for 3.
            let mut d = p.details & keep.details;
            if keep.details & 0x20 != 0 && p.details & 1 != 0 && d & 1 == 0 {
                d |= 2;
            }
            if keep.details & 0x40 != 0 && p.details & 8 != 0 && d & 8 == 0 {
                d |= 16;
            }
            d
        }),
        step_up: if w(16) {
            wide.step_up
        } else if keep.step_up == 0 {
            0
        } else {
            p.step_up
        },
    }
}

/// One request, as choices from the pools.
#[derive(Debug, Clone)]
struct Req {
    method: usize,
    url: usize,
    ctx: u8,
    scopes: u8,
    call: usize,
    args: usize,
    secret: usize,
    label: usize,
    at: usize,
}

fn req() -> impl Strategy<Value = Req> {
    (
        0..METHODS.len(),
        0..URLS.len(),
        // Biased towards requests a contract can permit: every ctx key, no scope, a time
        // inside every window — else D would refuse almost everything and prove nothing.
        prop_oneof![Just(0xff_u8), any::<u8>()],
        prop_oneof![Just(0_u8), any::<u8>()],
        prop_oneof![
            2usize..(2 + TOOLS.len()),
            0usize..(2 + TOOLS.len() + PROMPTS.len() + URIS.len() + TEMPLATES.len())
        ],
        0..ARGS.len(),
        0usize..3,
        0..LABELS.len(),
        prop_oneof![0usize..2, 0usize..11],
    )
        .prop_map(
            |(method, url, ctx, scopes, call, args, secret, label, at)| Req {
                method,
                url,
                ctx,
                scopes,
                call,
                args,
                secret,
                label,
                at,
            },
        )
}

fn call_of(i: usize) -> Option<McpCall> {
    let c = |m: &str, t: Option<String>| McpCall {
        method: m.into(),
        target: t,
    };
    let mut i = i;
    if i == 0 {
        return None;
    }
    i -= 1;
    if i == 0 {
        return Some(c("initialize", None));
    }
    i -= 1;
    if let Some(t) = TOOLS.get(i) {
        return Some(c("tools/call", Some((*t).into())));
    }
    i -= TOOLS.len();
    if let Some(p) = PROMPTS.get(i) {
        return Some(c("prompts/get", Some((*p).into())));
    }
    i -= PROMPTS.len();
    if let Some(u) = URIS.get(i) {
        return Some(c("resources/read", Some((*u).into())));
    }
    i -= URIS.len();
    TEMPLATES
        .get(i)
        .map(|t| c("completion/complete", Some(format!("ref/resource {t}"))))
}

/// Every "D permits ⇒ P permits" for one request.
fn implies(p: &VerifiedContract, d: &VerifiedContract, r: &Req) -> Result<(), String> {
    let now = [
        NOW,
        NOW + 50,
        NOW - 1000,
        NOW - 990,
        NOW - 950,
        NOW - 901,
        NOW + 150,
        NOW + 1000,
        NOW + 2500,
        NOW + 3599,
        NOW + 3700,
    ][r.at];
    let url = HttpUrl::parse_canonical(URLS[r.url]).unwrap();
    let method = METHODS[r.method];
    let ctx: BTreeMap<String, String> = pick(&CTX, r.ctx)
        .into_iter()
        .map(|k| (k.to_string(), "v".to_string()))
        .collect();
    let scopes = strings(&SCOPES, r.scopes);
    let call = call_of(r.call);
    let view = RequestView {
        method,
        url: &url,
        ctx: &ctx,
        scopes: &scopes,
        call: call.as_ref(),
    };
    let fail = |what: &str, e: &ContractError| {
        Err(format!(
            "D permits {what} for {r:?} but P refuses: {} ({e})",
            e.code()
        ))
    };
    if d.permits(&view, now).is_ok() {
        if let Err(e) = p.permits(&view, now) {
            return fail("the request", &e);
        }
    }
    if d.permits_token(&url, &scopes, &ctx, now).is_ok() {
        if let Err(e) = p.permits_token(&url, &scopes, &ctx, now) {
            return fail("the token", &e);
        }
    }
    if let Some(c) = &call {
        if d.check_call(c).is_ok() {
            if let Err(e) = p.check_call(c) {
                return fail("the call", &e);
            }
        }
        if let Some(tool) = c.tool() {
            let args = CallArguments::parse(ARGS[r.args]).unwrap();
            if d.check_tool_arguments(&url, tool, &args).is_ok() {
                if let Err(e) = p.check_tool_arguments(&url, tool, &args) {
                    return fail("the tool arguments", &e);
                }
            }
            if d.check_tool_without_arguments(&url, tool).is_ok() {
                if let Err(e) = p.check_tool_without_arguments(&url, tool) {
                    return fail("the tool without arguments", &e);
                }
            }
        }
    }
    let secret = ["gh", "db", "other"][r.secret];
    if d.permits_secret(secret, method, &url, now).is_ok() {
        if let Err(e) = p.permits_secret(secret, method, &url, now) {
            return fail("the secret", &e);
        }
    }
    if let Ok(db) = d.permits_open(LABELS[r.label], now) {
        match p.permits_open(LABELS[r.label], now) {
            Ok(pb) if db <= pb => {}
            Ok(pb) => return Err(format!("D's open budget {db} > P's {pb}")),
            Err(e) => return fail("the open", &e),
        }
    }
    if d.permits_step_up(method, &url, now).is_ok() {
        if let Err(e) = p.permits_step_up(method, &url, now) {
            return fail("the step-up", &e);
        }
    }
    Ok(())
}

/// What happened to one candidate.
enum Outcome {
    /// P itself could not be issued (an invalid combination of choices).
    NoParent,
    /// The enclave refused D with this code (and the verifier agreed).
    Refused(&'static str),
    /// The enclave signed D, which verified; every request implication held.
    Signed,
}

fn run(p: &Spec, d: &Spec, reqs: &[Req]) -> Result<Outcome, String> {
    let owner = Owner::new();
    let planner = Enclave::ed();
    let worker = Enclave::ed();
    let mut pg = grant(p, &planner.did());
    pg.status = status(5);
    pg.delegation = Some(DelegationRules {
        max_depth: 2,
        status_list: LIST.into(),
        status_range: [1000, 2000],
    });
    let Ok(root) = pg.issue(&owner.key, NOW - 100) else {
        return Ok(Outcome::NoParent);
    };
    let chain = owner.verify(&root, NOW).map_err(|e| e.to_string())?;
    let mut dg = grant(d, &worker.did());
    dg.status = status(1500);
    let iat = NOW - 10;
    let draft = Draft::under(&chain, dg.clone(), &planner.did(), iat).map_err(|e| e.to_string())?;
    let by_enclave = draft.check(&chain);
    // The same D signed without the enclave's checks, verified as a verifier does.
    let forged = owner
        .delegate(&root, &planner, dg, iat, false)
        .map_err(|e| e.to_string())?;
    let by_verifier = verify_chain(&split_chain(&forged).unwrap(), &owner.owners, NOW);
    match (&by_enclave, &by_verifier) {
        (Err(a), Err(b)) if a == b => return Ok(Outcome::Refused(a.code())),
        (Ok(_), Ok(_)) => {}
        _ => {
            return Err(format!(
                "the enclave and the verifier disagree: {:?} vs {:?}",
                by_enclave.as_ref().map(|_| ()),
                by_verifier.as_ref().map(|_| ())
            ))
        }
    }
    let verified = by_verifier.unwrap();
    let (pc, dc) = (&verified.root, verified.leaf());
    for r in reqs {
        implies(pc, dc, r)?;
    }
    Ok(Outcome::Signed)
}

fn case() -> impl Strategy<Value = (Spec, Spec, Vec<Req>)> {
    (
        spec(),
        spec(),
        spec(),
        [any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()],
        proptest::collection::vec(req(), 64),
    )
        .prop_map(|(mut p, keep, wide, [a, b, c, e], reqs)| {
            // A parent never holds two grants the contract rules refuse together (details
            // 0 and 1, 3 and 4 share identifiers; secrets 1 and 2 name and prefix).
            p.details &= !0b1_0010;
            p.secrets &= !0b100;
            let d = derive(&p, &keep, &wide, a & b & c & e);
            (p, d, reqs)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn what_a_signed_delegation_permits_its_parent_permits((p, d, reqs) in case()) {
        if let Err(e) = run(&p, &d, &reqs) {
            prop_assert!(false, "P = {:?}\nD = {:?}\n{}", p, d, e);
        }
    }
}

/// The generator is worth something only if many candidates are signed and many are
/// refused: count both over a fixed sample.
#[test]
fn the_generator_reaches_both_outcomes() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut signed, mut refused, mut no_parent) = (0, 0, 0);
    let mut codes = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let (p, d, _) = case().new_tree(&mut runner).unwrap().current();
        match run(&p, &d, &[]).unwrap() {
            Outcome::Signed => signed += 1,
            Outcome::Refused(c) => {
                refused += 1;
                codes.insert(c);
            }
            Outcome::NoParent => no_parent += 1,
        }
    }
    assert!(
        signed >= 40,
        "signed {signed}, refused {refused}, no parent {no_parent}"
    );
    assert!(
        refused >= 20,
        "signed {signed}, refused {refused}, no parent {no_parent}"
    );
    assert!(codes.len() >= 8, "{codes:?}");
    eprintln!("signed {signed}, refused {refused}: {codes:?}");
}
