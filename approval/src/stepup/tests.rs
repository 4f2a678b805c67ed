//! The service above the store: decisions, grants handed out to the filing key only,
//! expiry by the injected clock, the rate limit's answer, audit records, and the HTTP
//! refusals that need no enclave (the e2e module `stepup_api` runs real proofs).
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use cada_attestation_verifier::nonce::NonceIssuer;
use cada_attestation_verifier::{Policy, UnixTime};
use cada_contract::{Contract, OwnerAlg, OwnerKey, TrustedOwners};
use cada_pipeline::fleet::Fleet;
use cada_pipeline::replay::Replay;
use cada_pipeline::{AppState, Limits as PipelineLimits};
use cada_protocol::stepup::{Status, StepUpRequest};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;

const T0: u64 = 1_800_000_000_000;
const PUBLIC: &str = "http://localhost:8470";

struct Fixture {
    svc: Arc<Service>,
    clock: Arc<AtomicU64>,
    owner: OwnerKey,
    audit_dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.audit_dir);
    }
}

fn pipeline(audit_dir: &std::path::Path, policy: &str) -> Arc<AppState> {
    let policy = Policy::from_toml(policy, std::path::Path::new("."), "test policy").unwrap();
    AppState::new(
        policy,
        Replay::from_option("memory", 1000, Duration::from_millis(300)).unwrap(),
        cada_audit::AuditLog::open(audit_dir, 1 << 20).unwrap(),
        NonceIssuer::random(),
        PipelineLimits {
            max_body: 1 << 20,
            max_concurrency: 64,
            rate_per_client: 0,
        },
        false,
        Fleet::from_option("memory", Duration::from_millis(300)).unwrap(),
    )
}

fn policy() -> String {
    format!(
        "[[audience]]\nprefix = \"{PUBLIC}/\"\nmeasurements = [{{ PCR0 = \"{}\" }}]\n",
        "00".repeat(48)
    )
}

fn fixture(limits: Limits) -> Fixture {
    let n = {
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    };
    let audit_dir =
        std::env::temp_dir().join(format!("cada-approval-svc-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&audit_dir);
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let clock = Arc::new(AtomicU64::new(T0));
    let c = Arc::clone(&clock);
    let svc = Service::new(
        Config {
            public_url: PUBLIC.into(),
            limits,
            revocation: Revocation::None,
            webhook: None,
        },
        OwnerKey::from_key_file(&owner.to_key_file()).unwrap(),
        pipeline(&audit_dir, &policy()),
        Arc::new(move || UnixTime::from_millis(c.load(Ordering::SeqCst))),
    )
    .unwrap();
    Fixture {
        svc,
        clock,
        owner,
        audit_dir,
    }
}

fn filer(jkt: &str) -> Filer {
    let agent = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    Filer {
        jkt: jkt.into(),
        did: agent.did().to_owned(),
        platform: "sim".into(),
        measurements: BTreeMap::from([("PCR0".into(), "ab".repeat(48))]),
        measurement_digest: "cd".repeat(32),
        emulated: false,
    }
}

fn request(amount: u64) -> StepUpRequest {
    StepUpRequest::parse(
        json!({
            "contract": "dtc1",
            "request": {"audience": "https://mcp.example/mcp", "method": "POST",
                        "tool": "transfer", "arguments": {"amount": amount, "to": "alice"}},
            "refusal": {"code": "contract.not_permitted.tool", "by": "gate",
                        "server": "https://mcp.example/mcp", "message": "tool not granted"},
            "want": "once"
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap()
}

async fn records(f: &Fixture) -> Vec<Value> {
    // Every append was awaited (fsync durability): the files hold them.
    let mut files: Vec<_> = std::fs::read_dir(&f.audit_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect::<Vec<Value>>()
        })
        .collect()
}

fn kinds(recs: &[Value]) -> Vec<(String, String)> {
    recs.iter()
        .filter(|r| r["kind"].as_str().is_some_and(|k| k.starts_with("stepup")))
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_owned(),
                r["decision"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_signs_a_grant_that_only_the_filing_key_receives() {
    let f = fixture(Limits::default());
    let agent = filer("k1");
    let (created, new) = f.svc.file(agent.clone(), request(500), None).await.unwrap();
    assert!(new);
    assert_eq!(created.id.len(), 22);
    assert_eq!(created.url, format!("{PUBLIC}/r/{}", created.id));
    assert_eq!(created.poll, format!("{PUBLIC}/v1/step-up/{}", created.id));
    assert_eq!(created.expires_at, T0 / 1000 + 600);
    assert_eq!(created.interval, 2);

    // The page sees it with what the agent sent and what the evidence showed.
    let pending = f.svc.pending();
    assert_eq!(pending.len(), 1);
    let v = &pending[0];
    assert_eq!(v.agent_did, agent.did);
    assert_eq!(v.measurement, "ab".repeat(48));
    assert_eq!(v.tool, "transfer");
    assert_eq!(v.arguments, json!({"amount": 500, "to": "alice"}));
    assert_eq!(v.refusal.by, "gate");
    assert_eq!(v.status, RequestStatus::Pending);

    // Pending until the owner answers; another key may not poll.
    let st = f.svc.poll(&created.id, &agent).await.unwrap();
    assert_eq!(st.status, Status::Pending);
    let e = f.svc.poll(&created.id, &filer("k2")).await.unwrap_err();
    assert_eq!((e.code(), e.status().as_u16()), ("stepup.other_key", 403));

    let out = f
        .svc
        .decide(&created.id, Decision::ApproveOnce, "passkey:abc")
        .await
        .unwrap();
    assert_eq!(out.status, RequestStatus::Approved);
    assert!(out.message.contains("approved once"), "{}", out.message);
    assert!(f.svc.pending().is_empty());
    assert_eq!(
        f.svc.get(&created.id).unwrap().status,
        RequestStatus::Approved
    );

    // Answered twice: refused, nothing changes.
    let again = f
        .svc
        .decide(&created.id, Decision::Deny, "passkey:abc")
        .await
        .unwrap_err();
    assert_eq!(again.code(), "stepup.decided");

    // Still not for another key; for the filer, the grant.
    assert_eq!(
        f.svc
            .poll(&created.id, &filer("k2"))
            .await
            .unwrap_err()
            .code(),
        "stepup.other_key"
    );
    f.clock.fetch_add(3000, Ordering::SeqCst);
    let st = f.svc.poll(&created.id, &agent).await.unwrap();
    assert_eq!(st.status, Status::Approved);
    let jwt = st.grant.unwrap();
    let mut trust = TrustedOwners::new();
    trust.add_did_key(f.owner.did()).unwrap();
    let c = Contract::verify(&jwt, &trust, T0 / 1000 + 10).unwrap();
    c.check_subject(&agent.did, &BTreeMap::new()).unwrap();
    let [d] = c.authorization_details() else {
        panic!("one detail")
    };
    assert!(d.single_use);
    d.check_arguments(json!({"to": "alice", "amount": 500}).as_object().unwrap())
        .unwrap();
    assert_eq!(
        d.check_arguments(json!({"to": "bob", "amount": 500}).as_object().unwrap())
            .unwrap_err()
            .code(),
        "grant.arguments.eq"
    );

    let recs = records(&f).await;
    assert_eq!(
        kinds(&recs),
        [
            ("stepup.request".into(), "filed".into()),
            ("stepup.poll".into(), "reject".into()),
            ("stepup.answer".into(), "approve_once".into()),
            ("stepup.poll".into(), "reject".into()),
            ("stepup.delivered".into(), "deliver".into()),
        ]
    );
    let answer = recs.iter().find(|r| r["kind"] == "stepup.answer").unwrap();
    assert_eq!(answer["contract"], c.digest());
    assert!(answer["reason"]
        .as_str()
        .unwrap()
        .contains("by passkey:abc"));
    assert_eq!(answer["rpc"][0]["target"], "transfer");
    // Arguments only as a digest.
    assert!(!recs.iter().any(|r| r.to_string().contains("alice")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denial_and_minutes_and_their_refusals() {
    let f = fixture(Limits::default());
    let agent = filer("k1");
    let (a, _) = f.svc.file(agent.clone(), request(1), None).await.unwrap();
    let (b, _) = f.svc.file(agent.clone(), request(2), None).await.unwrap();
    f.svc.decide(&a.id, Decision::Deny, "me").await.unwrap();
    let st = f.svc.poll(&a.id, &agent).await.unwrap();
    assert_eq!(
        (st.status, st.code.as_deref()),
        (Status::Denied, Some("stepup.denied"))
    );
    assert!(st.grant.is_none());

    for bad in [0, MAX_MINUTES + 1] {
        let e = f
            .svc
            .decide(&b.id, Decision::ApproveMinutes(bad), "me")
            .await
            .unwrap_err();
        assert_eq!(e.code(), "stepup.minutes");
    }
    // The refused decisions left it pending.
    assert_eq!(f.svc.get(&b.id).unwrap().status, RequestStatus::Pending);
    f.svc
        .decide(&b.id, Decision::ApproveMinutes(90), "me")
        .await
        .unwrap();
    let grant = f.svc.poll(&b.id, &agent).await.unwrap().grant.unwrap();
    let mut trust = TrustedOwners::new();
    trust.add_did_key(f.owner.did()).unwrap();
    let c = Contract::verify(&grant, &trust, T0 / 1000).unwrap();
    assert_eq!(c.valid_until(), T0 / 1000 + 90 * 60);
    assert!(!c.authorization_details()[0].single_use);

    assert_eq!(
        f.svc
            .decide("AAAAAAAAAAAAAAAAAAAAAA", Decision::Deny, "me")
            .await
            .unwrap_err()
            .code(),
        "stepup.unknown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_expire_by_the_clock_and_are_audited_once() {
    let f = fixture(Limits {
        ttl_ms: 60_000,
        ..Limits::default()
    });
    let agent = filer("k1");
    let (a, _) = f.svc.file(agent.clone(), request(1), None).await.unwrap();
    f.clock.fetch_add(59_999, Ordering::SeqCst);
    f.svc.sweep().await;
    assert_eq!(f.svc.pending().len(), 1);
    f.clock.fetch_add(1, Ordering::SeqCst);
    // The page stops offering it at once, even before the sweeper ran.
    assert!(f.svc.pending().is_empty());
    assert_eq!(f.svc.get(&a.id).unwrap().status, RequestStatus::Expired);
    f.svc.sweep().await;
    f.svc.sweep().await;
    let e = f
        .svc
        .decide(&a.id, Decision::ApproveOnce, "me")
        .await
        .unwrap_err();
    assert_eq!(e.code(), "stepup.expired");
    let st = f.svc.poll(&a.id, &agent).await.unwrap();
    assert_eq!(
        (st.status, st.code.as_deref()),
        (Status::Expired, Some("stepup.expired"))
    );
    let recs = records(&f).await;
    assert_eq!(
        kinds(&recs)
            .iter()
            .filter(|(k, _)| k == "stepup.expired")
            .count(),
        1
    );
    // Forgotten an hour after it ended.
    f.clock.fetch_add(3_600_000, Ordering::SeqCst);
    f.svc.sweep().await;
    assert_eq!(
        f.svc.poll(&a.id, &agent).await.unwrap_err().code(),
        "stepup.unknown"
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, f.svc.registry()).unwrap();
    assert!(
        text.contains("cada_approval_stepup_events_total{event=\"expired\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_answers_429_with_retry_after_and_is_audited() {
    let f = fixture(Limits::default());
    let agent = filer("k1");
    let mut first = None;
    for i in 0..5 {
        let (c, _) = f.svc.file(agent.clone(), request(i), None).await.unwrap();
        first.get_or_insert(c.id);
    }
    // The same call again is the same request, not a sixth.
    let (again, new) = f.svc.file(agent.clone(), request(0), None).await.unwrap();
    assert!(!new);
    assert_eq!(Some(again.id), first);
    let e = f
        .svc
        .file(agent.clone(), request(9), None)
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.status().as_u16()),
        ("stepup.rate_limited", 429)
    );
    let resp = e.into_response();
    assert_eq!(resp.headers()["retry-after"], "600");
    let recs = records(&f).await;
    let limited = recs
        .iter()
        .find(|r| r["reason"] == "stepup.rate_limited")
        .unwrap();
    assert_eq!(limited["kind"], "stepup.request");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, f.svc.registry()).unwrap();
    assert!(text.contains("event=\"rate_limited\"} 1"), "{text}");
    assert!(text.contains("event=\"filed\"} 5"), "{text}");
    assert!(text.contains("cada_approval_stepup_pending 5"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_synchronous_decide_works_from_a_blocking_thread() {
    let f = fixture(Limits::default());
    let (a, _) = f.svc.file(filer("k1"), request(1), None).await.unwrap();
    let svc: Arc<dyn crate::web::Requests> = f.svc.clone();
    let id = a.id.clone();
    let out = tokio::task::spawn_blocking(move || {
        svc.decide(&id, Decision::ApproveMinutes(5), "passkey:x")
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(out.status, RequestStatus::Approved);
    let svc: Arc<dyn crate::web::Requests> = f.svc.clone();
    let id = a.id.clone();
    let e = tokio::task::spawn_blocking(move || svc.decide(&id, Decision::Deny, "passkey:x"))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code, "stepup.decided");
}

async fn call(
    svc: &Arc<Service>,
    req: Request<Body>,
) -> (StatusCode, Value, axum::http::HeaderMap) {
    let resp = router(Arc::clone(svc)).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
        headers,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_refusals_without_a_proof_name_their_rule() {
    let f = fixture(Limits::default());
    let body = serde_json::to_vec(&request(1)).unwrap();
    let post = |b: Vec<u8>, headers: &[(&str, &str)]| {
        let mut r = Request::post("/v1/step-up");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(Body::from(b)).unwrap()
    };
    let (st, v, h) = call(&f.svc, post(body.clone(), &[])).await;
    assert_eq!(
        (st.as_u16(), v["code"].as_str()),
        (401, Some("pop.missing"))
    );
    assert!(h["www-authenticate"].to_str().unwrap().starts_with("DPoP"));
    let (st, v, _) = call(
        &f.svc,
        post(
            body.clone(),
            &[("dpop", "x.y.z"), ("authorization", "DPoP t")],
        ),
    )
    .await;
    assert_eq!(
        (st.as_u16(), v["code"].as_str()),
        (401, Some("stepup.evidence"))
    );
    let (st, v, _) = call(
        &f.svc,
        post(body.clone(), &[("dpop", "x.y.z"), ("cada-evidence", "%%%")]),
    )
    .await;
    assert_eq!(
        (st.as_u16(), v["code"].as_str()),
        (401, Some("stepup.evidence"))
    );
    let (st, v, _) = call(&f.svc, post(body.clone(), &[("dpop", "a"), ("dpop", "b")])).await;
    assert_eq!(
        (st.as_u16(), v["code"].as_str()),
        (400, Some("request.header"))
    );
    // A proof that binds no body is refused before any verification.
    let (st, v, _) = call(&f.svc, post(body.clone(), &[("dpop", "x.y.z")])).await;
    assert_eq!((st.as_u16(), v["code"].as_str()), (401, Some("pop.body")));
    let (st, v, _) = call(
        &f.svc,
        post(
            body.clone(),
            &[("dpop", "x.y.z"), ("content-digest", "sha-256=:AAAA:")],
        ),
    )
    .await;
    assert_eq!((st.as_u16(), v["code"].as_str()), (400, Some("pop.body")));
    let (st, v, _) = call(&f.svc, post(vec![b' '; 16 * 1024 + 1], &[])).await;
    assert_eq!(
        (st.as_u16(), v["code"].as_str()),
        (413, Some("stepup.too_large"))
    );
    let (st, v, _) = call(
        &f.svc,
        Request::get("/v1/step-up/AAAAAAAAAAAAAAAAAAAAAA")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        (st.as_u16(), v["code"].as_str()),
        (401, Some("pop.missing"))
    );
    // Unauthenticated refusals are in the log too (short records).
    let recs = records(&f).await;
    assert!(recs
        .iter()
        .any(|r| r["kind"] == "stepup.proof" && r["reason"] == "pop.missing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_must_cover_the_service_without_naming_owners() {
    let dir = std::env::temp_dir().join(format!("cada-approval-pol-{}", std::process::id()));
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let start = |policy: &str, public: &str| {
        Service::new(
            Config {
                public_url: public.into(),
                limits: Limits::default(),
                revocation: Revocation::None,
                webhook: None,
            },
            OwnerKey::from_key_file(&owner.to_key_file()).unwrap(),
            pipeline(&dir, policy),
            system_clock(),
        )
        .map(|_| ())
    };
    let m = "00".repeat(48);
    let with_owners = format!(
        "[[audience]]\nprefix = \"{PUBLIC}/\"\nmeasurements = [{{ PCR0 = \"{m}\" }}]\nowners = [\"{}\"]\n",
        owner.did()
    );
    let e = start(&with_owners, PUBLIC).unwrap_err();
    assert!(e.to_string().contains("names owners"), "{e}");
    let elsewhere =
        format!("[[audience]]\nprefix = \"https://other.example/\"\nmeasurements = [{{ PCR0 = \"{m}\" }}]\n");
    let e = start(&elsewhere, PUBLIC).unwrap_err();
    assert!(e.to_string().contains("no [[audience]] covers"), "{e}");
    for bad in [
        "http://owner.example",
        "https://owner.example/?x",
        "ftp://x",
    ] {
        assert_eq!(
            start(&policy(), bad).unwrap_err().code(),
            "stepup.config",
            "{bad}"
        );
    }
    assert!(start(&policy(), PUBLIC).is_ok());
    assert!(start(&policy(), &format!("{PUBLIC}/")).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Review stepup-1, finding 3: a contract summary is shown only beside requests of a key
/// the contract was verified for; another enclave naming its digest gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_summary_is_only_shown_to_the_key_it_was_verified_for() {
    let f = fixture(Limits::default());
    let a = filer("kA");
    let c = filer("kC");
    let now = T0 / 1000;
    let mut g = cada_contract::Grant::new(
        cada_contract::Subject::Key(a.did.clone()),
        vec!["https://mcp.example/mcp".into()],
        vec!["POST".into()],
        now - 60,
        now + 3600,
    );
    g.tools = vec!["only_for_a".into()];
    let jwt = g.issue(&f.owner, now).unwrap();
    let digest = cada_contract::digest_of(&jwt);
    let with_contract = |amount: u64| {
        let mut r = request(amount);
        r.contract.clone_from(&digest);
        r
    };
    let summary = |id: &str| f.svc.get(id).unwrap().contract_summary;
    let (ra, _) = f
        .svc
        .file(a.clone(), with_contract(1), Some(&jwt))
        .await
        .unwrap();
    assert_eq!(summary(&ra.id).unwrap()["tools"], json!(["only_for_a"]));
    // Another enclave naming the digest, without the contract, or with A's copy.
    let (rc, _) = f.svc.file(c.clone(), with_contract(2), None).await.unwrap();
    assert_eq!(summary(&rc.id), None, "C is not shown A's contract");
    let (rc, _) = f
        .svc
        .file(c.clone(), with_contract(3), Some(&jwt))
        .await
        .unwrap();
    assert_eq!(summary(&rc.id), None, "A's contract is not for C's key");
    // A again, naming the digest only: the summary verified for A.
    let (ra, _) = f.svc.file(a, with_contract(4), None).await.unwrap();
    assert_eq!(summary(&ra.id).unwrap()["tools"], json!(["only_for_a"]));
}

/// Review stepup-1, finding 5: the page's events reach the audit log — registrations,
/// sign-ins, fresh codes, sign-outs and a cloned passkey in full; refusals anyone can
/// cause (a wrong code, a bad signature) short, with the client's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_events_are_audit_records() {
    use crate::web::{PageEvent, Requests as _};
    let f = fixture(Limits::default());
    let peer = Some("192.0.2.7".parse().unwrap());
    for e in [
        PageEvent::Registered {
            credential: "cred1".into(),
            first: true,
        },
        PageEvent::SignedIn {
            credential: "cred1".into(),
        },
        PageEvent::CodeIssued {
            credential: "cred1".into(),
        },
        PageEvent::Registered {
            credential: "cred2".into(),
            first: false,
        },
        PageEvent::Refused {
            code: "webauthn.sign_count",
            credential: Some("cred2".into()),
        },
        PageEvent::Refused {
            code: "webauthn.signature",
            credential: Some("cred1".into()),
        },
        PageEvent::Refused {
            code: "web.code",
            credential: None,
        },
        PageEvent::SignedOut {
            credential: "cred1".into(),
        },
    ] {
        f.svc.page_event(&e, peer).unwrap();
    }
    let recs = records(&f).await;
    let got: Vec<(String, String, String, String, Option<String>)> = recs
        .iter()
        .filter(|r| {
            r["kind"]
                .as_str()
                .is_some_and(|k| k.starts_with("passkey."))
        })
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_owned(),
                r["decision"].as_str().unwrap().to_owned(),
                r["url"].as_str().unwrap_or("").to_owned(),
                r["reason"].as_str().unwrap_or("").to_owned(),
                r["peer"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let first = "the first passkey, with the start-up registration code";
    let other = "another passkey, by a signed-in session with a fresh registration code";
    let ip = Some("192.0.2.7".to_owned());
    let p = |c: &str| format!("cada:passkey:{c}");
    assert_eq!(
        got,
        vec![
            (
                "passkey.register".into(),
                "register".into(),
                p("cred1"),
                first.into(),
                None
            ),
            (
                "passkey.signin".into(),
                "accept".into(),
                p("cred1"),
                "signed in to the approval page".into(),
                None
            ),
            (
                "passkey.code".into(),
                "issue".into(),
                p("cred1"),
                "a fresh registration code, asked for by this passkey's session".into(),
                None
            ),
            (
                "passkey.register".into(),
                "register".into(),
                p("cred2"),
                other.into(),
                None
            ),
            (
                "passkey.refused".into(),
                "reject".into(),
                p("cred2"),
                "webauthn.sign_count".into(),
                None
            ),
            (
                "passkey.refused".into(),
                "reject".into(),
                p("cred1"),
                "webauthn.signature".into(),
                ip.clone()
            ),
            (
                "passkey.refused".into(),
                "reject".into(),
                String::new(),
                "web.code".into(),
                ip
            ),
            (
                "passkey.signout".into(),
                "signout".into(),
                p("cred1"),
                "signed out".into(),
                None
            ),
        ]
    );
}

/// Review stepup-1, finding 2: the refused call's audience is the refusing server, except
/// for an STS (it refuses at its token endpoint); a filing naming two servers is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filing_whose_refusing_server_is_not_its_audience_is_refused() {
    let f = fixture(Limits::default());
    let with = |by: &str, server: &str| {
        StepUpRequest::parse(
            json!({
                "contract": "dtc1",
                "request": {"audience": "https://bank.example/", "method": "POST",
                            "tool": "get_balance", "arguments": {}},
                "refusal": {"code": "grant.tool", "by": by, "server": server},
                "want": "once"
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    };
    for by in ["enclave", "gate"] {
        let e = f
            .svc
            .file(filer("k1"), with(by, "https://mcp.example/mcp"), None)
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.status().as_u16()),
            ("stepup.invalid", 400),
            "{by}"
        );
    }
    assert!(f.svc.pending().is_empty(), "nothing filed");
    f.svc
        .file(filer("k2"), with("sts", "https://sts.example/token"), None)
        .await
        .unwrap();
    f.svc
        .file(filer("k3"), with("gate", "https://bank.example/"), None)
        .await
        .unwrap();
}
