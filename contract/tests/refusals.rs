//! Every refusal of the contract library, one test per code, each beside the accepted
//! case it differs from.
use cada_protocol::mcp::McpCall;
use std::collections::BTreeMap;

use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use cada_contract::{
    digest_of, AuditLevel, BehaviourLimits, Contract, ContractError, Denied, Grant, OwnerAlg,
    OwnerKey, RequestView, StatusEntry, StatusList, Subject, Succession, TrustedOwners,
    VerifiedContract, WindowLimit, MAX_CONTRACT_LEN, MIN_BITSTRING_BYTES,
};
use cada_protocol::b64;
use cada_protocol::url::HttpUrl;
use serde_json::{json, Value};

const NOW: u64 = 1_750_000_000;
const LIST: &str = "https://owner.example/status/1";

fn agent() -> String {
    OwnerKey::generate(OwnerAlg::Ed25519)
        .unwrap()
        .did()
        .to_owned()
}

fn grant(subject: Subject) -> Grant {
    let mut g = Grant::new(
        subject,
        vec![
            "https://api.example.com/v1".into(),
            "https://mcp.example.com/".into(),
        ],
        vec!["GET".into(), "POST".into()],
        NOW - 60,
        NOW + 3600,
    );
    g.scopes = vec!["docs:read".into()];
    g.tools = vec!["search".into()];
    g.resources = vec!["file:///srv/public/".into()];
    g.prompts = vec!["summarize".into()];
    g.required_ctx = vec!["task".into()];
    g.budget = Some(1000);
    g.rate_per_second = Some(5);
    g.audit = AuditLevel::Full;
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
    g.status = Some(StatusEntry::new(LIST, 42).unwrap());
    g.name = Some("research agent".into());
    g
}

fn setup(alg: OwnerAlg) -> (OwnerKey, TrustedOwners, String, String) {
    let owner = OwnerKey::generate(alg).unwrap();
    let trusted = TrustedOwners::from_did_key(owner.did()).unwrap();
    let agent = agent();
    let jwt = grant(Subject::Key(agent.clone()))
        .issue(&owner, NOW)
        .unwrap();
    (owner, trusted, agent, jwt)
}

/// Signs `payload` with `owner`'s key under `header`, with aws-lc directly (not the
/// library's signer), so tests can sign what the library would refuse to issue.
fn sign_raw(owner: &OwnerKey, header: &Value, payload: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64::encode(header.to_string()),
        b64::encode(payload.to_string())
    );
    let pkcs8 = owner.to_pkcs8();
    let sig = match owner.alg() {
        OwnerAlg::Ed25519 => Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8)
            .unwrap()
            .sign(input.as_bytes())
            .as_ref()
            .to_vec(),
        OwnerAlg::Es256 => {
            let mut sig = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
                .unwrap()
                .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec();
            // Low-s, the one spelling verifiers accept (as the library signs).
            cada_protocol::jws::ecdsa_low_s(cada_protocol::jwk::SigAlg::ES256, &mut sig);
            sig
        }
    };
    format!("{input}.{}", b64::encode(sig))
}

/// The header and payload of a compact JWT, as JSON.
fn parts(jwt: &str) -> (Value, Value) {
    let mut it = jwt.split('.');
    let h = b64::decode("h", it.next().unwrap(), 1 << 20).unwrap();
    let p = b64::decode("p", it.next().unwrap(), 1 << 20).unwrap();
    (
        serde_json::from_slice(&h).unwrap(),
        serde_json::from_slice(&p).unwrap(),
    )
}

/// Re-signs `jwt` after `edit` changed its payload.
fn edited(owner: &OwnerKey, jwt: &str, edit: impl FnOnce(&mut Value)) -> String {
    let (h, mut p) = parts(jwt);
    edit(&mut p);
    sign_raw(owner, &h, &p)
}

/// An edit of a credential's JSON.
type Edit = Box<dyn Fn(&mut Value)>;

fn code(r: Result<VerifiedContract, ContractError>) -> &'static str {
    r.map(|_| "accepted").unwrap_or_else(|e| e.code())
}

#[test]
fn a_valid_contract_verifies_for_both_owner_algorithms() {
    for alg in [OwnerAlg::Ed25519, OwnerAlg::Es256] {
        let (owner, trusted, agent, jwt) = setup(alg);
        let c = Contract::verify(&jwt, &trusted, NOW).unwrap();
        assert_eq!(c.owner(), owner.did());
        assert_eq!(c.kid(), owner.kid());
        assert_eq!(c.subject(), &Subject::Key(agent.clone()));
        assert_eq!(c.digest(), digest_of(&jwt));
        assert_eq!(c.digest().len(), 43);
        assert!(c.id().starts_with("urn:uuid:"));
        assert_eq!(c.valid_until(), NOW + 3600);
        assert_eq!(c.remaining(NOW), 3600);
        assert_eq!(c.budget(), Some(1000));
        assert_eq!(c.rate_per_second(), Some(5));
        assert_eq!(c.audit(), AuditLevel::Full);
        assert_eq!(c.limits().refusals.unwrap().max, 5);
        assert_eq!(c.status_entry().unwrap().index, 42);
        assert_eq!(c.name(), Some("research agent"));
        // Audiences are normalised to the prefix form and sorted most specific first.
        assert_eq!(c.audiences()[0].as_str(), "https://api.example.com/v1");
        let (h, p) = parts(&jwt);
        assert_eq!(h["typ"], "vc+jwt");
        assert_eq!(h["cty"], "vc");
        assert_eq!(h["kid"], owner.kid());
        assert_eq!(p["iss"], owner.did());
        assert_eq!(p["issuer"], owner.did());
        assert_eq!(p["sub"], agent.as_str());
        assert_eq!(p["jti"], p["id"]);
        assert_eq!(p["credentialStatus"]["statusListIndex"], "42");
        assert!(c.check_subject(&agent, &BTreeMap::new()).is_ok());
    }
}

#[test]
fn too_large() {
    let (_, trusted, _, _) = setup(OwnerAlg::Ed25519);
    let big = "a".repeat(MAX_CONTRACT_LEN + 1);
    assert_eq!(
        code(Contract::verify(&big, &trusted, NOW)),
        "contract.too_large"
    );
}

#[test]
fn malformed_shapes_and_fields() {
    let (owner, trusted, _, jwt) = setup(OwnerAlg::Ed25519);
    let m = |j: &str| code(Contract::verify(j, &trusted, NOW));
    assert_eq!(m("a.b"), "contract.malformed");
    assert_eq!(m("!!.b.c"), "contract.malformed");
    // Header: typ, cty, crit, alg.
    let (h, p) = parts(&jwt);
    for (k, v) in [
        ("typ", json!("JWT")),
        ("cty", json!("json")),
        ("crit", json!(["exp"])),
        ("alg", json!("none")),
        ("alg", json!("ES256")),
    ] {
        let mut h2 = h.clone();
        h2[k] = v;
        assert_eq!(
            m(&sign_raw(&owner, &h2, &p)),
            "contract.malformed",
            "header {k}"
        );
    }
    // Payload: each edit would otherwise verify.
    let edits: Vec<(&str, Edit)> = vec![
        (
            "unknown member",
            Box::new(|p| p["allowEverything"] = json!(true)),
        ),
        (
            "unknown subject member",
            Box::new(|p| p["credentialSubject"]["deny"] = json!([])),
        ),
        (
            "context",
            Box::new(|p| p["@context"] = json!(["https://example.com/ctx"])),
        ),
        (
            "type",
            Box::new(|p| p["type"] = json!(["VerifiableCredential"])),
        ),
        ("jti", Box::new(|p| p["jti"] = json!("urn:uuid:other"))),
        (
            "validFrom",
            Box::new(|p| p["validFrom"] = json!("yesterday")),
        ),
        ("nbf", Box::new(|p| p["nbf"] = json!(0))),
        ("exp", Box::new(|p| p["exp"] = json!(NOW + 7200))),
        (
            "window",
            Box::new(|p| {
                p["validUntil"] = p["validFrom"].clone();
                p["exp"] = p["nbf"].clone();
            }),
        ),
        (
            "no audiences",
            Box::new(|p| p["credentialSubject"]["audiences"] = json!([])),
        ),
        (
            "audience userinfo",
            Box::new(|p| {
                p["credentialSubject"]["audiences"] = json!(["https://api.example.com@evil.net/"]);
            }),
        ),
        (
            "audience http",
            Box::new(|p| p["credentialSubject"]["audiences"] = json!(["http://api.example.com/"])),
        ),
        (
            "audience not normal",
            Box::new(|p| p["credentialSubject"]["audiences"] = json!(["https://API.example.com/"])),
        ),
        (
            "audience twice",
            Box::new(|p| {
                p["credentialSubject"]["audiences"] =
                    json!(["https://a.example/", "https://a.example"]);
            }),
        ),
        (
            "method lower",
            Box::new(|p| p["credentialSubject"]["methods"] = json!(["get"])),
        ),
        (
            "no methods",
            Box::new(|p| p["credentialSubject"]["methods"] = json!([])),
        ),
        (
            "method twice",
            Box::new(|p| p["credentialSubject"]["methods"] = json!(["GET", "GET"])),
        ),
        (
            "scope space",
            Box::new(|p| p["credentialSubject"]["scopes"] = json!(["a b"])),
        ),
        (
            "tool",
            Box::new(|p| p["credentialSubject"]["tools"] = json!(["rm -rf"])),
        ),
        (
            "ctx",
            Box::new(|p| p["credentialSubject"]["requiredCtx"] = json!([""])),
        ),
        (
            "budget 0",
            Box::new(|p| p["credentialSubject"]["budget"] = json!(0)),
        ),
        (
            "rate 0",
            Box::new(|p| p["credentialSubject"]["ratePerSecond"] = json!(0)),
        ),
        (
            "audit",
            Box::new(|p| p["credentialSubject"]["audit"] = json!("none")),
        ),
        (
            "limit window",
            Box::new(|p| p["credentialSubject"]["limits"]["requests"]["windowSeconds"] = json!(0)),
        ),
        (
            "subject both",
            Box::new(|p| {
                p["credentialSubject"]["measurements"] = json!([{"PCR0": "00".repeat(48)}]);
            }),
        ),
        (
            "subject none",
            Box::new(|p| {
                p["credentialSubject"].as_object_mut().unwrap().remove("id");
            }),
        ),
        (
            "subject not did:key",
            Box::new(|p| {
                p["credentialSubject"]["id"] = json!("did:web:agent.example");
                p["sub"] = json!("did:web:agent.example");
            }),
        ),
        (
            "sub differs",
            Box::new(|p| {
                p["sub"] = json!("did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp");
            }),
        ),
        (
            "status type",
            Box::new(|p| p["credentialStatus"]["type"] = json!("StatusList2021Entry")),
        ),
        (
            "status purpose",
            Box::new(|p| p["credentialStatus"]["statusPurpose"] = json!("suspension")),
        ),
        (
            "status index",
            Box::new(|p| p["credentialStatus"]["statusListIndex"] = json!("042")),
        ),
        (
            "status index number",
            Box::new(|p| p["credentialStatus"]["statusListIndex"] = json!(42)),
        ),
        (
            "status url",
            Box::new(|p| {
                p["credentialStatus"]["statusListCredential"] = json!("ftp://owner.example/s");
            }),
        ),
    ];
    // Control: re-signing an unedited payload verifies, so each refusal below is the edit's.
    assert_eq!(m(&edited(&owner, &jwt, |_| {})), "accepted");
    for (what, edit) in edits {
        assert_eq!(
            m(&edited(&owner, &jwt, edit)),
            "contract.malformed",
            "{what}"
        );
    }
    // A JSON object with a repeated member is refused, not resolved one way or another.
    let (h, p) = parts(&jwt);
    let raw = p.to_string().replacen(
        "\"methods\":[\"GET\",\"POST\"]",
        "\"methods\":[\"GET\"],\"methods\":[\"GET\",\"POST\",\"DELETE\"]",
        1,
    );
    assert!(raw.contains("DELETE"));
    let input = format!("{}.{}", b64::encode(h.to_string()), b64::encode(&raw));
    let sig = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&owner.to_pkcs8())
        .unwrap()
        .sign(input.as_bytes());
    let dup = format!("{input}.{}", b64::encode(sig.as_ref()));
    assert_eq!(m(&dup), "contract.malformed");
}

#[test]
fn malformed_measurement_sets() {
    let (owner, trusted, _, _) = setup(OwnerAlg::Ed25519);
    let h48 = "ab".repeat(48);
    let good = grant(Subject::Measurements(vec![BTreeMap::from([(
        "PCR0".to_string(),
        h48.clone(),
    )])]))
    .issue(&owner, NOW)
    .unwrap();
    assert!(Contract::verify(&good, &trusted, NOW).is_ok());
    for sets in [
        json!([]),
        json!([{}]),
        json!([{"PCR32": h48}]),
        json!([{"PCR0": "ab"}]),
        json!([{"PCR0": h48.to_uppercase()}]),
        json!([{"PCR0": h48, "MEASUREMENT": h48}]),
        json!([{"HOST_DATA": "00".repeat(32)}]),
    ] {
        let j = edited(&owner, &good, |p| {
            p["credentialSubject"]["measurements"] = sets.clone();
        });
        assert_eq!(
            code(Contract::verify(&j, &trusted, NOW)),
            "contract.malformed",
            "{sets}"
        );
    }
    // A repeated measurement name inside one set.
    let (h, p) = parts(&good);
    let raw = p.to_string().replacen(
        "{\"PCR0\":",
        &format!("{{\"PCR0\":\"{}\",\"PCR0\":", "00".repeat(48)),
        1,
    );
    let input = format!("{}.{}", b64::encode(h.to_string()), b64::encode(&raw));
    let sig = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&owner.to_pkcs8())
        .unwrap()
        .sign(input.as_bytes());
    let dup = format!("{input}.{}", b64::encode(sig.as_ref()));
    assert_eq!(
        code(Contract::verify(&dup, &trusted, NOW)),
        "contract.malformed"
    );
    // Issuing refuses what verifying would.
    let bad = grant(Subject::Measurements(vec![BTreeMap::from([(
        "PCR0".to_string(),
        "zz".into(),
    )])]));
    assert_eq!(
        bad.issue(&owner, NOW).unwrap_err().code(),
        "contract.malformed"
    );
}

#[test]
fn signature() {
    let (owner, trusted, _, jwt) = setup(OwnerAlg::Es256);
    // One flipped signature character.
    let mut b = jwt.clone().into_bytes();
    let last = b.len() - 3;
    b[last] = if b[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(b).unwrap();
    assert_eq!(
        code(Contract::verify(&tampered, &trusted, NOW)),
        "contract.signature"
    );
    // A payload changed after signing (the scope widened), old signature kept.
    let (h, mut p) = parts(&jwt);
    p["credentialSubject"]["scopes"] = json!(["admin"]);
    let sig = jwt.rsplit('.').next().unwrap();
    let forged = format!(
        "{}.{}.{sig}",
        b64::encode(h.to_string()),
        b64::encode(p.to_string())
    );
    assert_eq!(
        code(Contract::verify(&forged, &trusted, NOW)),
        "contract.signature"
    );
    // Signed by another key that claims the owner's kid.
    let other = OwnerKey::generate(OwnerAlg::Es256).unwrap();
    let (h, p) = parts(&jwt);
    assert_eq!(
        code(Contract::verify(&sign_raw(&other, &h, &p), &trusted, NOW)),
        "contract.signature"
    );
    let _ = owner;
}

#[test]
fn untrusted_owner() {
    let (owner, trusted, agent, _) = setup(OwnerAlg::Ed25519);
    // A contract signed by a non-owner.
    let stranger = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let jwt = grant(Subject::Key(agent)).issue(&stranger, NOW).unwrap();
    let e = Contract::verify(&jwt, &trusted, NOW).unwrap_err();
    assert_eq!(e.code(), "contract.untrusted_owner");
    assert!(e.to_string().contains(owner.did()), "{e}");
    // Nobody trusted at all.
    let (_, _, _, jwt) = setup(OwnerAlg::Ed25519);
    assert_eq!(
        code(Contract::verify(&jwt, &TrustedOwners::new(), NOW)),
        "contract.untrusted_owner"
    );
    // The owner's key, but the credential names another issuer.
    let jwt = grant(Subject::Key(agent_did())).issue(&owner, NOW).unwrap();
    let j = edited(&owner, &jwt, |p| {
        p["issuer"] = json!(stranger.did());
        p["iss"] = json!(stranger.did());
    });
    assert_eq!(
        code(Contract::verify(&j, &trusted, NOW)),
        "contract.untrusted_owner"
    );
    // A did:web owner: trusted through its document, and its kid must be in it.
    let mut web = OwnerKey::generate(OwnerAlg::Es256).unwrap();
    web.use_did_web("did:web:owner.example").unwrap();
    let mut t = TrustedOwners::new();
    t.add_did_document(&serde_json::to_vec(&web.did_document()).unwrap())
        .unwrap();
    let jwt = grant(Subject::Key(agent_did())).issue(&web, NOW).unwrap();
    assert_eq!(
        Contract::verify(&jwt, &t, NOW).unwrap().owner(),
        "did:web:owner.example"
    );
    let (mut h, p) = parts(&jwt);
    h["kid"] = json!("did:web:owner.example#other");
    assert_eq!(
        code(Contract::verify(&sign_raw(&web, &h, &p), &t, NOW)),
        "contract.untrusted_owner"
    );
}

fn agent_did() -> String {
    agent()
}

#[test]
fn expired_and_not_yet_valid() {
    let (_, trusted, _, jwt) = setup(OwnerAlg::Ed25519);
    assert_eq!(
        code(Contract::verify(&jwt, &trusted, NOW - 61)),
        "contract.not_yet_valid"
    );
    assert_eq!(code(Contract::verify(&jwt, &trusted, NOW - 60)), "accepted");
    assert_eq!(
        code(Contract::verify(&jwt, &trusted, NOW + 3599)),
        "accepted"
    );
    assert_eq!(
        code(Contract::verify(&jwt, &trusted, NOW + 3600)),
        "contract.expired"
    );
    // A cached contract is checked again at each use.
    let c = Contract::verify(&jwt, &trusted, NOW).unwrap();
    assert_eq!(
        c.check_time(NOW + 4000).unwrap_err().code(),
        "contract.expired"
    );
}

#[test]
fn subject() {
    let (_, trusted, agent, jwt) = setup(OwnerAlg::Ed25519);
    let c = Contract::verify(&jwt, &trusted, NOW).unwrap();
    assert!(c.check_subject(&agent, &BTreeMap::new()).is_ok());
    assert_eq!(
        c.check_subject(&agent_did(), &BTreeMap::new())
            .unwrap_err()
            .code(),
        "contract.subject"
    );
    // A measurement set: met, not met, and a missing PCR counting as zeros.
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let t = TrustedOwners::from_did_key(owner.did()).unwrap();
    let a = "ab".repeat(48);
    let zero = "00".repeat(48);
    let jwt = grant(Subject::Measurements(vec![
        BTreeMap::from([("PCR0".into(), a.clone()), ("PCR8".into(), zero)]),
        BTreeMap::from([("MEASUREMENT".into(), "cd".repeat(48))]),
    ]))
    .issue(&owner, NOW)
    .unwrap();
    let c = Contract::verify(&jwt, &t, NOW).unwrap();
    let m = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
    assert!(c.check_subject(&agent, &m("PCR0", &a)).is_ok());
    assert!(c
        .check_subject(&agent, &m("PCR0", &a.to_uppercase()))
        .is_ok());
    assert!(c
        .check_subject(&agent, &m("MEASUREMENT", &"cd".repeat(48)))
        .is_ok());
    let e = c
        .check_subject(&agent, &m("PCR0", &"ef".repeat(48)))
        .unwrap_err();
    assert_eq!(e.code(), "contract.subject");
    assert!(e.to_string().contains("none of its 2 sets"), "{e}");
    let mut with8 = m("PCR0", &a);
    with8.insert("PCR8".into(), "11".repeat(48));
    assert_eq!(
        c.check_subject(&agent, &with8).unwrap_err().code(),
        "contract.subject"
    );
}

fn view<'a>(
    method: &'a str,
    url: &'a HttpUrl,
    ctx: &'a BTreeMap<String, String>,
    scopes: &'a [String],
    tool: Option<&'a str>,
) -> RequestView<'a> {
    // A `tools/call` of `tool` (leaked: a test's few bytes).
    let call: Option<&'a McpCall> = tool.map(|t| {
        &*Box::leak(Box::new(McpCall {
            method: "tools/call".into(),
            target: Some(t.into()),
        }))
    });
    RequestView {
        method,
        url,
        ctx,
        scopes,
        call,
    }
}

#[test]
fn mcp_resources_and_prompts_need_a_grant_like_tools() {
    let (_, trusted, _, jwt) = setup(OwnerAlg::Ed25519);
    let c = Contract::verify(&jwt, &trusted, NOW).unwrap();
    let call = |m: &str, t: &str| McpCall {
        method: m.into(),
        target: Some(t.into()),
    };
    let code = |m: &str, t: &str| {
        c.check_call(&call(m, t))
            .map(|()| "ok")
            .unwrap_or_else(|e| e.code())
    };
    assert_eq!(code("tools/call", "search"), "ok");
    assert_eq!(code("tools/call", "shell"), "contract.not_permitted.tool");
    assert_eq!(code("resources/read", "file:///srv/public/a.txt"), "ok");
    assert_eq!(code("resources/subscribe", "file:///srv/public/"), "ok");
    assert_eq!(
        code("resources/read", "file:///etc/passwd"),
        "contract.not_permitted.resource"
    );
    assert_eq!(
        code("resources/unsubscribe", "file:///srv/publicity"),
        "contract.not_permitted.resource"
    );
    assert_eq!(code("prompts/get", "summarize"), "ok");
    assert_eq!(
        code("prompts/get", "jailbreak"),
        "contract.not_permitted.prompt"
    );
    // Methods that name nothing need no grant.
    for m in ["tools/list", "initialize", "ping", "resources/list"] {
        let nothing = McpCall {
            method: m.into(),
            target: None,
        };
        assert_eq!(c.check_call(&nothing).map(|()| "ok").unwrap(), "ok");
    }
    assert_eq!(c.resources(), ["file:///srv/public/".to_string()]);
    assert_eq!(c.prompts(), ["summarize".to_string()]);
}

/// Issue 21 item 3: a grant of `file:///srv/public/` let `resources/read` of
/// `file:///srv/public/../secret/key` and `…/%2e%2e/%2e%2e/etc/shadow` through (a raw
/// string prefix). Resources now match on segment boundaries under the strict URL rules;
/// opaque URIs match exactly.
#[test]
fn resource_grants_match_on_segments_and_refuse_traversal() {
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let trusted = TrustedOwners::from_did_key(owner.did()).unwrap();
    let mut g = grant(Subject::Key(agent()));
    g.resources = vec![
        "file:///srv/public/".into(),
        "urn:isbn:0451450523".into(),
        "mem://notes".into(),
    ];
    let c = Contract::verify(&g.issue(&owner, NOW).unwrap(), &trusted, NOW).unwrap();
    let code = |t: &str| {
        c.check_call(&McpCall {
            method: "resources/read".into(),
            target: Some(t.into()),
        })
        .map(|()| "ok")
        .unwrap_or_else(|e| e.code())
    };
    for ok in [
        "file:///srv/public/a.txt",
        "file:///srv/public/docs/a%20b.md",
        "urn:isbn:0451450523",
        "mem://notes",
        "mem://notes/1",
    ] {
        assert_eq!(code(ok), "ok", "{ok}");
    }
    for bad in [
        "file:///srv/public/../secret/key",
        "file:///srv/public/%2e%2e/%2e%2e/etc/shadow",
        "file:///srv/public/..%2Fsecret/key",
        "file:///srv/public/..%5Csecret",
        "file:///srv/public/%252e%252e/secret",
        "file:///srv/public/..;/secret",
        "file:///srv/public//etc/shadow",
        "file:///srv/public/x?/../../etc/shadow",
        "file:///srv/public/%C0%AE%C0%AE/secret",
        "file:///srv/publicity/a",
        "file:///srv/public",
        "urn:isbn:04514505230",
        "urn:isbn:0451450523/../x",
        "mem://notesx/1",
        "FILE:///srv/public/a",
    ] {
        assert_eq!(code(bad), "contract.not_permitted.resource", "{bad}");
    }
    // A grant the matcher would refuse is refused when written, with the URL rule.
    for (bad, rule) in [
        ("file:///srv/public/../", "url.dot_segment"),
        ("file:///srv/%2e%2e/", "url.encoded_dot"),
        ("file:///srv/a%2Fb/", "url.encoded_slash"),
        ("file:///srv//public/", "url.empty_segment"),
        ("file:///srv/%7Epublic/", "url.not_normal"),
        ("/srv/public/", "url.not_absolute"),
    ] {
        let mut g = grant(Subject::Key(agent()));
        g.resources = vec![bad.into()];
        let e = g.issue(&owner, NOW).unwrap_err();
        assert_eq!(e.code(), "contract.malformed", "{bad}");
        assert!(e.to_string().contains(rule), "{bad}: {e}");
    }
}

/// Issue 21 (suspected item): `completion/complete` names a prompt or a resource template
/// and 2026-07-28's `subscriptions/listen` names resources; both passed without a grant.
#[test]
fn completion_and_subscriptions_need_the_grants_they_name() {
    let (_, trusted, _, jwt) = setup(OwnerAlg::Ed25519);
    let c = Contract::verify(&jwt, &trusted, NOW).unwrap();
    let code = |body: &str| {
        let calls = cada_protocol::mcp::parse_body(body.as_bytes())
            .unwrap()
            .calls();
        calls
            .iter()
            .try_for_each(|call| c.check_call(call))
            .map(|()| "ok")
            .unwrap_or_else(|e| e.code())
    };
    let complete = |r: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{{"ref":{r},"argument":{{"name":"a","value":"x"}}}}}}"#
        )
    };
    assert_eq!(
        code(&complete(r#"{"type":"ref/prompt","name":"summarize"}"#)),
        "ok"
    );
    assert_eq!(
        code(&complete(r#"{"type":"ref/prompt","name":"jailbreak"}"#)),
        "contract.not_permitted.prompt"
    );
    assert_eq!(
        code(&complete(
            r#"{"type":"ref/resource","uri":"file:///srv/public/{path}"}"#
        )),
        "ok"
    );
    for t in [
        "file:///{path}",
        "file:///srv/pub{x}",
        "file:///srv/public/../{x}",
    ] {
        assert_eq!(
            code(&complete(&format!(
                r#"{{"type":"ref/resource","uri":"{t}"}}"#
            ))),
            "contract.not_permitted.resource",
            "{t}"
        );
    }
    let listen = |uris: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{{"notifications":{{"toolsListChanged":true,"resourceSubscriptions":[{uris}]}}}}}}"#
        )
    };
    assert_eq!(code(&listen(r#""file:///srv/public/a""#)), "ok");
    assert_eq!(code(&listen("")), "ok");
    assert_eq!(
        code(&listen(r#""file:///srv/public/a","file:///etc/shadow""#)),
        "contract.not_permitted.resource"
    );
    // A target the table has no rule for (from a proof, not a body) is refused.
    assert_eq!(
        c.check_call(&McpCall {
            method: "tools/list".into(),
            target: Some("search".into()),
        })
        .unwrap_err()
        .code(),
        "contract.not_permitted.resource"
    );
}

#[test]
fn not_permitted_each_rule_in_order() {
    let (_, trusted, _, jwt) = setup(OwnerAlg::Ed25519);
    let c = Contract::verify(&jwt, &trusted, NOW).unwrap();
    let ctx = BTreeMap::from([("task".to_string(), "t1".to_string())]);
    let no_ctx = BTreeMap::new();
    let read = vec!["docs:read".to_string()];
    let admin = vec!["docs:read".to_string(), "admin".to_string()];
    let u = |s: &str| HttpUrl::parse_normalized(s).unwrap();
    let ok = u("https://api.example.com/v1/docs");
    let p = |r: RequestView<'_>| {
        c.permits(&r, NOW)
            .map(|_| "ok")
            .unwrap_or_else(|e| e.code())
    };
    assert_eq!(p(view("GET", &ok, &ctx, &read, Some("search"))), "ok");
    assert_eq!(p(view("POST", &ok, &ctx, &[], None)), "ok");
    assert_eq!(
        p(view(
            "POST",
            &u("https://mcp.example.com/rpc"),
            &ctx,
            &[],
            None
        )),
        "ok"
    );
    // Audience: the prefix tricks of the issue, other origins, segment boundaries.
    for bad in [
        "https://api.example.com.evil.net/v1/x",
        "https://api.example.com/v10",
        "https://api.example.com/v2/x",
        "http://api.example.com/v1/x",
        "https://api.example.com:8443/v1/x",
    ] {
        assert_eq!(
            p(view("GET", &u(bad), &ctx, &read, None)),
            "contract.not_permitted.audience",
            "{bad}"
        );
    }
    assert!(HttpUrl::parse_normalized("https://api.example.com@evil.net/v1/x").is_err());
    // Dot segments and encoded separators never reach the matcher (issue 21).
    for bad in [
        "https://api.example.com/v1/../admin",
        "https://api.example.com/v1/..%2Fadmin",
        "https://api.example.com/v1/%2e%2e/admin",
    ] {
        assert!(HttpUrl::parse_normalized(bad).is_err(), "{bad}");
    }
    // Then method, tool, scope, ctx — each alone.
    assert_eq!(
        p(view("DELETE", &ok, &ctx, &read, None)),
        "contract.not_permitted.method"
    );
    assert_eq!(
        p(view("get", &ok, &ctx, &read, None)),
        "contract.not_permitted.method"
    );
    assert_eq!(
        p(view("GET", &ok, &ctx, &read, Some("shell"))),
        "contract.not_permitted.tool"
    );
    assert_eq!(
        p(view("GET", &ok, &ctx, &admin, None)),
        "contract.not_permitted.scope"
    );
    assert_eq!(
        p(view("GET", &ok, &no_ctx, &read, None)),
        "contract.not_permitted.ctx"
    );
    // Order: a request wrong in every way is refused for its audience first.
    assert_eq!(
        p(view(
            "DELETE",
            &u("https://x.example/"),
            &no_ctx,
            &admin,
            Some("shell")
        )),
        "contract.not_permitted.audience"
    );
    assert_eq!(
        p(view("DELETE", &ok, &no_ctx, &admin, Some("shell"))),
        "contract.not_permitted.method"
    );
    // Time first of all.
    assert_eq!(
        c.permits(&view("GET", &ok, &ctx, &read, None), NOW + 3600)
            .unwrap_err()
            .code(),
        "contract.expired"
    );
    // The counted rules share the codes.
    for d in [Denied::Budget, Denied::Rate, Denied::Behaviour] {
        assert_eq!(
            ContractError::not_permitted(d, "x").code(),
            format!("contract.not_permitted.{}", d.as_str())
        );
    }
}

fn list_jwt(owner: &OwnerKey, revoke: &[u64], now: u64) -> String {
    let mut l = StatusList::new(LIST, 0).unwrap();
    for i in revoke {
        l.revoke(*i).unwrap();
    }
    l.issue(owner, now, Some(now + 86_400)).unwrap()
}

#[test]
fn revoked_and_status_list_checks() {
    let (owner, trusted, _, jwt) = setup(OwnerAlg::Ed25519);
    let c = Contract::verify(&jwt, &trusted, NOW).unwrap();
    let live = StatusList::verify(&list_jwt(&owner, &[41, 43], NOW), &trusted, NOW).unwrap();
    assert_eq!(live.entries(), (MIN_BITSTRING_BYTES * 8) as u64);
    assert_eq!(live.revoked_count(), 2);
    assert!(c.check_status(&live, NOW, NOW, 300).is_ok());
    let revoked = StatusList::verify(&list_jwt(&owner, &[42], NOW), &trusted, NOW).unwrap();
    let e = c.check_status(&revoked, NOW, NOW, 300).unwrap_err();
    assert_eq!(e.code(), "contract.revoked");
    // Revocation survives re-issuing from the verified list (what `cada-owner revoke` does).
    let mut again = StatusList::from_verified(&revoked);
    again.revoke(7).unwrap();
    let again = StatusList::verify(
        &again.issue(&owner, NOW + 5, None).unwrap(),
        &trusted,
        NOW + 5,
    )
    .unwrap();
    assert!(again.is_revoked(42).unwrap() && again.is_revoked(7).unwrap());
    assert_eq!(again.valid_until(), None);
}

#[test]
fn status_rollback_an_older_or_clearing_list_never_succeeds_a_newer_one() {
    let (owner, trusted, _, _) = setup(OwnerAlg::Ed25519);
    let v = |jwt: &str| StatusList::verify(jwt, &trusted, NOW + 10).unwrap();
    let old = v(&list_jwt(&owner, &[], NOW));
    let revoking = v(&list_jwt(&owner, &[42], NOW + 5));
    assert_eq!(revoking.succeeds(&old).unwrap(), Succession::Newer);
    assert_eq!(revoking.succeeds(&revoking).unwrap(), Succession::Same);
    // The older, unrevoked list after the revoking one: refused.
    let e = old.succeeds(&revoking).unwrap_err();
    assert_eq!(e.code(), "contract.status_rollback");
    assert!(e.to_string().contains("older"), "{e}");
    // Two lists within one second: the one that keeps every revocation wins; the one that
    // clears index 42 is refused, whichever arrives second.
    let same_second_more = v(&list_jwt(&owner, &[42, 7], NOW + 5));
    let same_second_less = v(&list_jwt(&owner, &[7], NOW + 5));
    assert_eq!(
        same_second_more.succeeds(&revoking).unwrap(),
        Succession::Newer
    );
    let e = same_second_less.succeeds(&revoking).unwrap_err();
    assert_eq!(e.code(), "contract.status_rollback");
    assert!(e.to_string().contains("index 42"), "{e}");
    // Another URL is not a successor at all.
    let mut other = StatusList::new("https://owner.example/status/2", 0).unwrap();
    other.revoke(1).unwrap();
    let other = v(&other.issue(&owner, NOW + 6, None).unwrap());
    assert_eq!(
        other.succeeds(&revoking).unwrap_err().code(),
        "contract.status_mismatch"
    );
}

#[test]
fn status_stale() {
    let (owner, trusted, _, jwt) = setup(OwnerAlg::Ed25519);
    let c = Contract::verify(&jwt, &trusted, NOW).unwrap();
    let list = StatusList::verify(&list_jwt(&owner, &[], NOW), &trusted, NOW).unwrap();
    assert!(c.check_status(&list, NOW, NOW + 300, 300).is_ok());
    assert_eq!(
        c.check_status(&list, NOW, NOW + 301, 300)
            .unwrap_err()
            .code(),
        "contract.status_stale"
    );
    // Past the list's own validUntil, whatever the fetch time.
    assert_eq!(
        c.check_status(&list, NOW + 86_400, NOW + 86_400, 300)
            .unwrap_err()
            .code(),
        "contract.status_stale"
    );
    assert_eq!(
        StatusList::verify(&list_jwt(&owner, &[], NOW), &trusted, NOW + 86_400)
            .unwrap_err()
            .code(),
        "contract.status_stale"
    );
    // A list from (more than a minute in) the future.
    assert_eq!(
        StatusList::verify(&list_jwt(&owner, &[], NOW + 120), &trusted, NOW)
            .unwrap_err()
            .code(),
        "contract.status_stale"
    );
    assert!(StatusList::verify(&list_jwt(&owner, &[], NOW + 30), &trusted, NOW).is_ok());
}

#[test]
fn status_forged() {
    let (owner, trusted, _, jwt) = setup(OwnerAlg::Ed25519);
    let c = Contract::verify(&jwt, &trusted, NOW).unwrap();
    // A list whose bit was cleared after signing.
    let revoked = list_jwt(&owner, &[42], NOW);
    let clean = list_jwt(&owner, &[], NOW);
    let (h, _) = parts(&revoked);
    let (_, p) = parts(&clean);
    let sig = revoked.rsplit('.').next().unwrap();
    let forged = format!(
        "{}.{}.{sig}",
        b64::encode(h.to_string()),
        b64::encode(p.to_string())
    );
    assert_eq!(
        StatusList::verify(&forged, &trusted, NOW)
            .unwrap_err()
            .code(),
        "contract.status_forged"
    );
    // A list signed by a stranger.
    let stranger = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    assert_eq!(
        StatusList::verify(&list_jwt(&stranger, &[], NOW), &trusted, NOW)
            .unwrap_err()
            .code(),
        "contract.status_forged"
    );
    // A list by another trusted owner, at the same URL: it cannot speak for this contract.
    let mut both = trusted.clone();
    both.add_did_key(stranger.did()).unwrap();
    let theirs = StatusList::verify(&list_jwt(&stranger, &[], NOW), &both, NOW).unwrap();
    assert_eq!(
        c.check_status(&theirs, NOW, NOW, 300).unwrap_err().code(),
        "contract.status_forged"
    );
}

#[test]
fn status_mismatch_and_malformed() {
    let (owner, trusted, _, jwt) = setup(OwnerAlg::Ed25519);
    let c = Contract::verify(&jwt, &trusted, NOW).unwrap();
    let other = StatusList::new("https://owner.example/status/2", 0)
        .unwrap()
        .issue(&owner, NOW, None)
        .unwrap();
    let other = StatusList::verify(&other, &trusted, NOW).unwrap();
    assert_eq!(
        c.check_status(&other, NOW, NOW, 300).unwrap_err().code(),
        "contract.status_mismatch"
    );
    // A contract whose index lies beyond the list.
    let mut g = grant(Subject::Key(agent_did()));
    g.status = Some(StatusEntry::new(LIST, (MIN_BITSTRING_BYTES * 8) as u64).unwrap());
    let far = Contract::verify(&g.issue(&owner, NOW).unwrap(), &trusted, NOW).unwrap();
    let list = StatusList::verify(&list_jwt(&owner, &[], NOW), &trusted, NOW).unwrap();
    assert_eq!(
        far.check_status(&list, NOW, NOW, 300).unwrap_err().code(),
        "contract.status_mismatch"
    );
    // Purpose suspension: mismatch. Malformed lists: each edit re-signed by the owner.
    let good = list_jwt(&owner, &[], NOW);
    assert!(StatusList::verify(&edited(&owner, &good, |_| {}), &trusted, NOW).is_ok());
    let j = edited(&owner, &good, |p| {
        p["credentialSubject"]["statusPurpose"] = json!("suspension");
    });
    assert_eq!(
        StatusList::verify(&j, &trusted, NOW).unwrap_err().code(),
        "contract.status_mismatch"
    );
    let edits: Vec<Edit> = vec![
        Box::new(|p| p["credentialSubject"]["encodedList"] = json!("H4sIAAAA")),
        Box::new(|p| p["credentialSubject"]["encodedList"] = json!("uH4sIAAAA")),
        Box::new(|p| p["credentialSubject"]["type"] = json!("StatusList2021")),
        Box::new(|p| p["type"] = json!(["VerifiableCredential"])),
        Box::new(|p| p["jti"] = json!("https://owner.example/other")),
        Box::new(|p| p["id"] = json!("ftp://owner.example/s")),
        Box::new(|p| p["extra"] = json!(1)),
        Box::new(|p| p["nbf"] = json!(1)),
    ];
    for (i, e) in edits.into_iter().enumerate() {
        let j = edited(&owner, &good, e);
        assert_eq!(
            StatusList::verify(&j, &trusted, NOW).unwrap_err().code(),
            "contract.status_malformed",
            "edit {i}"
        );
    }
    assert_eq!(
        StatusList::verify("x.y", &trusted, NOW).unwrap_err().code(),
        "contract.status_malformed"
    );
}

#[test]
fn key_and_did_codes() {
    assert_eq!(
        OwnerKey::from_pkcs8(b"not a key").unwrap_err().code(),
        "contract.key"
    );
    assert_eq!(
        OwnerKey::from_key_file("{}").unwrap_err().code(),
        "contract.key"
    );
    assert_eq!(
        TrustedOwners::from_did_key("did:key:zNotAKey")
            .unwrap_err()
            .code(),
        "contract.did"
    );
    let mut k = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    assert_eq!(
        k.use_did_web("did:web:Owner.Example").unwrap_err().code(),
        "contract.did"
    );
}

#[test]
fn grants_refuse_what_verification_would() {
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let mut g = grant(Subject::Key(agent_did()));
    g.audiences = vec!["https://api.example.com.evil.net@x/".into()];
    assert_eq!(
        g.issue(&owner, NOW).unwrap_err().code(),
        "contract.malformed"
    );
    let mut g = grant(Subject::Key("did:key:zBad".into()));
    g.methods = vec!["GET".into()];
    assert_eq!(
        g.issue(&owner, NOW).unwrap_err().code(),
        "contract.malformed"
    );
    let mut g = grant(Subject::Key(agent_did()));
    g.valid_until = g.valid_from;
    assert_eq!(
        g.issue(&owner, NOW).unwrap_err().code(),
        "contract.malformed"
    );
    assert!(StatusEntry::new("https://owner.example/s#frag", 1).is_err());
    assert!(StatusEntry::new("https://owner.example/s", u64::MAX).is_err());
}

#[test]
fn every_truncation_and_byte_flip_is_refused_without_panic() {
    let (owner, trusted, _, jwt) = setup(OwnerAlg::Ed25519);
    let list = list_jwt(&owner, &[3], NOW);
    for i in 0..jwt.len() {
        assert!(
            Contract::verify(&jwt[..i], &trusted, NOW).is_err(),
            "prefix {i}"
        );
        let mut b = jwt.clone().into_bytes();
        b[i] ^= 0x01;
        if let Ok(t) = String::from_utf8(b) {
            // A flip in the last character's unused low bits can decode to the same bytes.
            if let Ok(c) = Contract::verify(&t, &trusted, NOW) {
                assert_eq!(i, jwt.len() - 1, "flip at {i} accepted");
                assert_ne!(c.digest(), digest_of(&jwt));
            }
        }
    }
    for i in (0..list.len()).step_by(97) {
        assert!(
            StatusList::verify(&list[..i], &trusted, NOW).is_err(),
            "prefix {i}"
        );
    }
}
