//! The page through its router, with a software authenticator and a fake step-up store:
//! registration with the code, sign-in, sessions, CSRF, decisions, hostile requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use super::webauthn::tests::{client_data, SoftKey};
use super::webauthn::Alg;
use super::*;

const ORIGIN: &str = "http://localhost:8470";

#[derive(Default)]
struct Fake {
    requests: Mutex<Vec<RequestView>>,
    decided: Mutex<Vec<(String, Decision, String)>>,
    events: Mutex<Vec<PageEvent>>,
    audit_down: Mutex<bool>,
}

fn view(id: &str, tool: &str, args: serde_json::Value) -> RequestView {
    RequestView {
        id: id.into(),
        agent_did: "did:key:zDnaeExample".into(),
        platform: "sim".into(),
        measurement: "ab".repeat(48),
        contract: "sha-256:0123".into(),
        contract_summary: Some(serde_json::json!({"tools": ["search"]})),
        audience: "https://mcp.example/mcp".into(),
        method: "POST".into(),
        tool: tool.into(),
        arguments: args,
        refusal: RefusalView {
            code: "contract.not_permitted.tool".into(),
            by: "enclave".into(),
            server: "https://mcp.example/mcp".into(),
            message: "the contract does not grant this tool".into(),
        },
        want: "once".into(),
        created_at: 1000,
        expires_at: 1600,
        status: RequestStatus::Pending,
    }
}

impl Requests for Fake {
    fn pending(&self) -> Vec<RequestView> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.status == RequestStatus::Pending)
            .cloned()
            .collect()
    }
    fn get(&self, id: &str) -> Option<RequestView> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.id == id)
            .cloned()
    }
    fn decide(&self, id: &str, d: Decision, who: &str) -> Result<DecisionOutcome, DecideError> {
        let mut rs = self.requests.lock().unwrap();
        let r = rs.iter_mut().find(|r| r.id == id).ok_or(DecideError {
            code: "stepup.unknown".into(),
            message: "no such request".into(),
        })?;
        if r.status != RequestStatus::Pending {
            return Err(DecideError {
                code: "stepup.decided".into(),
                message: "already answered".into(),
            });
        }
        r.status = if d == Decision::Deny {
            RequestStatus::Denied
        } else {
            RequestStatus::Approved
        };
        self.decided
            .lock()
            .unwrap()
            .push((id.into(), d, who.into()));
        Ok(DecisionOutcome {
            status: r.status,
            message: format!("request {id}: {}", r.status.as_str()),
        })
    }
    fn page_event(
        &self,
        e: &PageEvent,
        _peer: Option<std::net::IpAddr>,
    ) -> Result<(), RecordError> {
        if *self.audit_down.lock().unwrap() {
            return Err(RecordError("the audit log is down".into()));
        }
        self.events.lock().unwrap().push(e.clone());
        Ok(())
    }
}

struct Harness {
    web: Web,
    fake: Arc<Fake>,
    now: Arc<AtomicU64>,
    codes: Arc<Mutex<Vec<RegistrationCode>>>,
    dir: std::path::PathBuf,
}

impl Harness {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cada-web-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self::in_dir(dir)
    }

    fn in_dir(dir: std::path::PathBuf) -> Self {
        Self::with_url(dir, ORIGIN)
    }

    fn with_url(dir: std::path::PathBuf, public_url: &str) -> Self {
        let fake = Arc::new(Fake::default());
        fake.requests.lock().unwrap().extend([
            view(
                "req1",
                "transfer",
                serde_json::json!({"amount": 500, "to": "alice"}),
            ),
            view("req2", "delete_repo", serde_json::json!({"name": "x"})),
        ]);
        let now = Arc::new(AtomicU64::new(1_000));
        let codes = Arc::new(Mutex::new(Vec::new()));
        let n = Arc::clone(&now);
        let c = Arc::clone(&codes);
        let web = Web::new(
            &WebConfig {
                public_url: public_url.into(),
                state_dir: dir.clone(),
            },
            fake.clone(),
            Arc::new(move || n.load(Ordering::SeqCst)),
            Arc::new(move |code: &RegistrationCode| c.lock().unwrap().push(code.clone())),
        )
        .unwrap();
        Self {
            web,
            fake,
            now,
            codes,
            dir,
        }
    }

    fn code(&self) -> String {
        self.codes.lock().unwrap().last().unwrap().code.clone()
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
        let resp = self.web.router().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    async fn get(
        &self,
        path: &str,
        cookie: Option<&str>,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let mut b = Request::get(path).header(header::HOST, "localhost:8470");
        if let Some(c) = cookie {
            b = b.header(header::COOKIE, c);
        }
        self.send(b.body(Body::empty()).unwrap()).await
    }

    async fn post_json(
        &self,
        path: &str,
        cookie: Option<&str>,
        body: &serde_json::Value,
    ) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let mut b = Request::post(path)
            .header(header::HOST, "localhost:8470")
            .header(header::ORIGIN, ORIGIN)
            .header("sec-fetch-site", "same-origin")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(c) = cookie {
            b = b.header(header::COOKIE, c);
        }
        let (s, h, body) = self
            .send(b.body(Body::from(body.to_string())).unwrap())
            .await;
        (
            s,
            h,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    async fn post_form(
        &self,
        path: &str,
        cookie: Option<&str>,
        origin: Option<&str>,
        site: Option<&str>,
        form: &str,
    ) -> (StatusCode, String) {
        let mut b = Request::post(path)
            .header(header::HOST, "localhost:8470")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            b = b.header(header::COOKIE, c);
        }
        if let Some(o) = origin {
            b = b.header(header::ORIGIN, o);
        }
        if let Some(s) = site {
            b = b.header("sec-fetch-site", s);
        }
        let (s, _, body) = self
            .send(b.body(Body::from(form.to_owned())).unwrap())
            .await;
        (s, body)
    }

    /// Registers `key` with `code`; returns the status, body and the session cookie.
    async fn register(
        &self,
        key: &SoftKey,
        code: &str,
        cookie: Option<&str>,
        csrf: &str,
    ) -> (StatusCode, serde_json::Value, Option<String>) {
        let (s, _, opts) = self
            .post_json(
                "/webauthn/register/options",
                cookie,
                &serde_json::json!({"code": code, "csrf": csrf}),
            )
            .await;
        if s != StatusCode::OK {
            return (s, opts, None);
        }
        let ch = URL_SAFE_NO_PAD
            .decode(opts["publicKey"]["challenge"].as_str().unwrap())
            .unwrap();
        assert_eq!(opts["publicKey"]["rp"]["id"], "localhost");
        assert_eq!(
            opts["publicKey"]["authenticatorSelection"]["userVerification"],
            "required"
        );
        let cd = client_data("webauthn.create", &ch, ORIGIN);
        let (s, h, body) = self
            .post_json(
                "/webauthn/register",
                cookie,
                &serde_json::json!({
                    "id": URL_SAFE_NO_PAD.encode(&key.id),
                    "rawId": URL_SAFE_NO_PAD.encode(&key.id),
                    "type": "public-key",
                    "csrf": csrf,
                    "response": {
                        "clientDataJSON": URL_SAFE_NO_PAD.encode(&cd),
                        "attestationObject": URL_SAFE_NO_PAD.encode(key.attestation_object("localhost")),
                    }
                }),
            )
            .await;
        (s, body, set_cookie(&h))
    }

    async fn signin(&self, key: &mut SoftKey) -> (StatusCode, serde_json::Value, Option<String>) {
        let (s, _, opts) = self
            .post_json("/webauthn/signin/options", None, &serde_json::json!({}))
            .await;
        assert_eq!(s, StatusCode::OK, "{opts}");
        let ch = URL_SAFE_NO_PAD
            .decode(opts["publicKey"]["challenge"].as_str().unwrap())
            .unwrap();
        let (cd, ad, sig) = key.assert("localhost", ORIGIN, &ch);
        self.finish_signin(key, &cd, &ad, &sig).await
    }

    async fn finish_signin(
        &self,
        key: &SoftKey,
        cd: &[u8],
        ad: &[u8],
        sig: &[u8],
    ) -> (StatusCode, serde_json::Value, Option<String>) {
        let (s, h, body) = self
            .post_json(
                "/webauthn/signin",
                None,
                &serde_json::json!({
                    "id": URL_SAFE_NO_PAD.encode(&key.id),
                    "rawId": URL_SAFE_NO_PAD.encode(&key.id),
                    "type": "public-key",
                    "next": "/r/req1",
                    "response": {
                        "clientDataJSON": URL_SAFE_NO_PAD.encode(cd),
                        "authenticatorData": URL_SAFE_NO_PAD.encode(ad),
                        "signature": URL_SAFE_NO_PAD.encode(sig),
                    }
                }),
            )
            .await;
        (s, body, set_cookie(&h))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn set_cookie(h: &axum::http::HeaderMap) -> Option<String> {
    h.get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
}

fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").unwrap() + 19;
    page[at..at + 43].to_owned()
}

#[tokio::test]
async fn first_registration_signs_in_and_an_approval_reaches_the_store() {
    let h = Harness::new("flow");
    let key = SoftKey::new(Alg::Es256);
    let (s, body, cookie) = h.register(&key, &h.code(), None, "").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let cookie = cookie.expect("a session cookie");
    assert!(cookie.starts_with("cada-session="));
    let (s, _, page) = h.get("/", Some(&cookie)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("id=\"requests\""));
    assert_eq!(page.matches("class=\"request\"").count(), 2);
    let (s, _, page) = h.get("/r/req1", Some(&cookie)).await;
    assert_eq!(s, StatusCode::OK);
    for id in [
        "agent-did",
        "measurement",
        "contract",
        "tool",
        "arguments",
        "refusal",
        "approve-once",
        "approve-minutes",
        "minutes",
        "deny",
    ] {
        assert!(page.contains(&format!("id=\"{id}\"")), "#{id} missing");
    }
    let csrf = csrf_of(&page);
    let (s, page) = h
        .post_form(
            "/r/req1",
            Some(&cookie),
            Some(ORIGIN),
            Some("same-origin"),
            &format!("csrf={csrf}&action=minutes&minutes=30"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(page.contains("id=\"result\" class=\"approved\""));
    let (s, page) = h
        .post_form(
            "/r/req2",
            Some(&cookie),
            Some(ORIGIN),
            None,
            &format!("csrf={csrf}&action=deny"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(page.contains("id=\"result\" class=\"denied\""));
    let decided = h.fake.decided.lock().unwrap().clone();
    let who = format!("passkey:{}", URL_SAFE_NO_PAD.encode(&key.id));
    assert_eq!(
        decided,
        vec![
            ("req1".into(), Decision::ApproveMinutes(30), who.clone()),
            ("req2".into(), Decision::Deny, who)
        ]
    );
    // A second decision on the same request: refused by the store, shown with its code.
    let (s, page) = h
        .post_form(
            "/r/req1",
            Some(&cookie),
            Some(ORIGIN),
            None,
            &format!("csrf={csrf}&action=once"),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(page.contains("stepup.decided"));
    assert_eq!(
        h.fake.events.lock().unwrap().clone(),
        vec![PageEvent::Registered {
            credential: URL_SAFE_NO_PAD.encode(&key.id),
            first: true
        }]
    );
}

#[tokio::test]
async fn pages_without_a_session_are_refused() {
    let h = Harness::new("nosession");
    let (s, hd, _) = h.get("/r/req1", None).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(hd[header::LOCATION], "/signin?next=/r/req1");
    let (s, hd, _) = h.get("/", None).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(hd[header::LOCATION], "/signin");
    let (s, hd, _) = h
        .get(
            "/r/req1",
            Some("cada-session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "a forged session id");
    assert!(hd[header::LOCATION]
        .to_str()
        .unwrap()
        .starts_with("/signin"));
    let (s, page) = h
        .post_form("/r/req1", None, Some(ORIGIN), None, "csrf=x&action=once")
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(page.contains("web.session"));
    assert!(h.fake.decided.lock().unwrap().is_empty());
    // The sign-in page and the assets need none.
    let (s, _, page) = h.get("/signin", None).await;
    assert_eq!(s, StatusCode::OK);
    for id in ["code", "register", "signin"] {
        assert!(page.contains(&format!("id=\"{id}\"")), "#{id}");
    }
    assert!(page.contains("src=\"/assets/webauthn.js\""));
    assert!(!page.contains("<script>"), "no inline script");
    let (s, hd, js) = h.get("/assets/webauthn.js", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(hd[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert!(js.contains("navigator.credentials.create"));
}

#[tokio::test]
async fn a_cross_site_post_is_refused_naming_the_rule() {
    let h = Harness::new("csrf");
    let key = SoftKey::new(Alg::EdDsa);
    let (_, _, cookie) = h.register(&key, &h.code(), None, "").await;
    let cookie = cookie.unwrap();
    let (_, _, page) = h.get("/r/req1", Some(&cookie)).await;
    let csrf = csrf_of(&page);
    let form = format!("csrf={csrf}&action=once");
    for (origin, site) in [
        (Some("http://evil.example"), Some("cross-site")),
        (Some("http://localhost:8470"), Some("cross-site")),
        (Some("http://evil.example"), None),
        (Some("null"), None),
        (None, None),
        (Some("http://localhost:8471"), Some("same-site")),
    ] {
        let (s, page) = h
            .post_form("/r/req1", Some(&cookie), origin, site, &form)
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{origin:?} {site:?}");
        assert!(
            page.contains("<code id=\"error-code\">web.csrf</code>"),
            "{page}"
        );
    }
    // The right origin with a wrong token.
    let (s, page) = h
        .post_form(
            "/r/req1",
            Some(&cookie),
            Some(ORIGIN),
            Some("same-origin"),
            "csrf=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&action=once",
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(page.contains("web.csrf"));
    // A JSON endpoint posted as a form (no preflight) is refused too.
    let (s, page) = h
        .post_form("/webauthn/signin/options", None, Some(ORIGIN), None, "x=1")
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{page}");
    assert!(h.fake.decided.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_code_is_needed_once_and_a_second_passkey_needs_a_session_and_a_fresh_code() {
    let h = Harness::new("code");
    let k1 = SoftKey::new(Alg::Es256);
    let (s, body, _) = h.register(&k1, "0000-0000-0000-0000-0000", None, "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "web.code");
    let first = h.code();
    let (s, _, cookie) = h.register(&k1, &first, None, "").await;
    assert_eq!(s, StatusCode::OK);
    let cookie = cookie.unwrap();
    // The same code again, without a session: a passkey exists now.
    let mut k2 = SoftKey::new(Alg::EdDsa);
    k2.id = vec![8; 20];
    let (s, body, _) = h.register(&k2, &first, None, "").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "web.session");
    // With the session but the used code.
    let (_, _, page) = h.get("/passkeys/add", Some(&cookie)).await;
    let csrf = csrf_of(&page);
    let (s, body, _) = h.register(&k2, &first, Some(&cookie), &csrf).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "web.code");
    // A fresh code, printed to the sink (never on the page).
    let (s, page) = h
        .post_form(
            "/passkeys/code",
            Some(&cookie),
            Some(ORIGIN),
            None,
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let fresh = h.code();
    assert_ne!(fresh, first);
    assert!(h.codes.lock().unwrap().last().unwrap().needs_session);
    assert!(!page.contains(&fresh));
    let (s, body, new_cookie) = h.register(&k2, &fresh, Some(&cookie), &csrf).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(new_cookie.is_none(), "the session stays");
    let id1 = URL_SAFE_NO_PAD.encode(&k1.id);
    let wrong_code = PageEvent::Refused {
        code: "web.code",
        credential: None,
    };
    assert_eq!(
        h.fake.events.lock().unwrap().clone(),
        vec![
            wrong_code.clone(),
            PageEvent::Registered {
                credential: id1.clone(),
                first: true
            },
            wrong_code,
            PageEvent::CodeIssued { credential: id1 },
            PageEvent::Registered {
                credential: URL_SAFE_NO_PAD.encode(&k2.id),
                first: false
            },
        ]
    );
    // Both passkeys survive a restart; no code is issued when passkeys exist.
    let dir = h.dir.clone();
    let n_codes = h.codes.lock().unwrap().len();
    assert_eq!(n_codes, 2);
    let h2 = Harness::in_dir(dir);
    assert!(h2.codes.lock().unwrap().is_empty());
    let mut k1 = k1;
    k1.count = 10;
    let (s, body, cookie) = h2.signin(&mut k1).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["next"], "/r/req1");
    assert!(cookie.is_some());
    let (s, _, _) = h2.signin(&mut k2).await;
    assert_eq!(s, StatusCode::OK);
    std::mem::forget(h); // h2 removes the directory
}

#[tokio::test]
async fn sign_in_refuses_replays_clones_and_other_origins() {
    let h = Harness::new("signin");
    let mut key = SoftKey::new(Alg::Es256);
    let (s, _, _) = h.register(&key, &h.code(), None, "").await;
    assert_eq!(s, StatusCode::OK);
    key.count = 5;
    let (_, _, opts) = h
        .post_json("/webauthn/signin/options", None, &serde_json::json!({}))
        .await;
    let ch = URL_SAFE_NO_PAD
        .decode(opts["publicKey"]["challenge"].as_str().unwrap())
        .unwrap();
    let (cd, ad, sig) = key.assert("localhost", ORIGIN, &ch);
    let (s, body, _) = h.finish_signin(&key, &cd, &ad, &sig).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // The same assertion again: its challenge is used up.
    let (s, body, _) = h.finish_signin(&key, &cd, &ad, &sig).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "webauthn.challenge");
    // A clone with an older counter, on a fresh challenge.
    let (_, _, opts) = h
        .post_json("/webauthn/signin/options", None, &serde_json::json!({}))
        .await;
    let ch = URL_SAFE_NO_PAD
        .decode(opts["publicKey"]["challenge"].as_str().unwrap())
        .unwrap();
    key.count = 2;
    let (cd, ad, sig) = key.assert("localhost", ORIGIN, &ch);
    let (s, body, cookie) = h.finish_signin(&key, &cd, &ad, &sig).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "webauthn.sign_count");
    assert!(cookie.is_none());
    let id = URL_SAFE_NO_PAD.encode(&key.id);
    assert_eq!(
        h.fake.events.lock().unwrap()[1..].to_vec(),
        vec![
            PageEvent::SignedIn {
                credential: id.clone()
            },
            PageEvent::Refused {
                code: "webauthn.sign_count",
                credential: Some(id)
            }
        ],
        "the replayed challenge is only logged; the clone is recorded"
    );
    // Another origin signed by the browser.
    let (_, _, opts) = h
        .post_json("/webauthn/signin/options", None, &serde_json::json!({}))
        .await;
    let ch = URL_SAFE_NO_PAD
        .decode(opts["publicKey"]["challenge"].as_str().unwrap())
        .unwrap();
    key.count = 50;
    let (cd, ad, sig) = key.assert("localhost", "http://localhost:9999", &ch);
    let (s, body, _) = h.finish_signin(&key, &cd, &ad, &sig).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "webauthn.origin");
}

#[tokio::test]
async fn sessions_expire_when_idle() {
    let h = Harness::new("idle");
    let key = SoftKey::new(Alg::Es256);
    let (_, _, cookie) = h.register(&key, &h.code(), None, "").await;
    let cookie = cookie.unwrap();
    let (s, _, _) = h.get("/", Some(&cookie)).await;
    assert_eq!(s, StatusCode::OK);
    h.now.fetch_add(state::SESSION_IDLE, Ordering::SeqCst);
    let (s, _, _) = h.get("/", Some(&cookie)).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn headers_host_and_hostile_requests() {
    let h = Harness::new("headers");
    h.fake.requests.lock().unwrap().push(view(
        "evil",
        "tr\u{430}nsfer\u{202E}",
        serde_json::json!({"memo": "<script>alert(1)</script>", "\"><img src=x onerror=alert(1)>": "\u{2066}x\u{2069}"}),
    ));
    let key = SoftKey::new(Alg::Es256);
    let (_, _, cookie) = h.register(&key, &h.code(), None, "").await;
    let cookie = cookie.unwrap();
    let (s, hd, page) = h.get("/r/evil", Some(&cookie)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(hd["content-security-policy"], CSP);
    assert_eq!(hd["x-content-type-options"], "nosniff");
    assert_eq!(hd["referrer-policy"], REFERRER_POLICY);
    assert_eq!(hd["cache-control"], "no-store");
    assert_eq!(hd["x-frame-options"], "DENY");
    assert!(!page.contains("<script>alert"));
    assert!(!page.contains("<img"));
    assert!(!page.contains('\u{202E}') && !page.contains('\u{2066}'));
    assert!(page.contains("id=\"warning\""), "the banner");
    assert!(page.contains("tr\\u{430}nsfer\\\\u{202e}") || page.contains("tr\\u{430}nsfer"));
    // The session cookie's attributes.
    let key2 = SoftKey::new(Alg::Es256);
    let h2 = Harness::new("cookie");
    let (s, _, opts) = h2
        .post_json(
            "/webauthn/register/options",
            None,
            &serde_json::json!({"code": h2.code()}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let ch = URL_SAFE_NO_PAD
        .decode(opts["publicKey"]["challenge"].as_str().unwrap())
        .unwrap();
    let cd = client_data("webauthn.create", &ch, ORIGIN);
    let req = Request::post("/webauthn/register")
        .header(header::HOST, "localhost:8470")
        .header(header::ORIGIN, ORIGIN)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            serde_json::json!({"rawId": URL_SAFE_NO_PAD.encode(&key2.id), "response": {
                "clientDataJSON": URL_SAFE_NO_PAD.encode(&cd),
                "attestationObject": URL_SAFE_NO_PAD.encode(key2.attestation_object("localhost"))}})
            .to_string(),
        ))
        .unwrap();
    let (s, hd, _) = h2.send(req).await;
    assert_eq!(s, StatusCode::OK);
    let sc = hd[header::SET_COOKIE].to_str().unwrap();
    assert!(
        sc.contains("HttpOnly") && sc.contains("SameSite=Strict") && sc.contains("Path=/"),
        "{sc}"
    );
    // Another Host (DNS rebinding): refused.
    let req = Request::get("/signin")
        .header(header::HOST, "rebind.example:8470")
        .body(Body::empty())
        .unwrap();
    let (s, hd, page) = h.send(req).await;
    assert_eq!(s, StatusCode::MISDIRECTED_REQUEST);
    assert!(page.contains("web.host"));
    assert_eq!(hd["content-security-policy"], CSP);
}

#[test]
fn an_ip_literal_public_url_is_refused_at_start() {
    let r = Web::new(
        &WebConfig {
            public_url: "http://127.0.0.1:8470".into(),
            state_dir: std::env::temp_dir().join("cada-web-never"),
        },
        Arc::new(Fake::default()),
        Arc::new(|| 0),
        Arc::new(|_: &RegistrationCode| {}),
    );
    assert_eq!(r.err().map(|e| e.code()), Some("web.public_url"));
}

#[tokio::test]
async fn below_a_base_path_every_link_and_redirect_carries_it() {
    let dir = std::env::temp_dir().join(format!("cada-web-base-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let h = Harness::with_url(dir, "http://localhost:8470/approval");
    // The proxy strips /approval: routes are at the root, links and redirects are not.
    let (s, hd, _) = h.get("/r/req1", None).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(hd[header::LOCATION], "/approval/signin?next=/r/req1");
    let (_, _, page) = h.get("/signin", None).await;
    assert!(page.contains("href=\"/approval/assets/style.css\""));
    assert!(page.contains("src=\"/approval/assets/webauthn.js\""));
    assert!(page.contains("id=\"base\" value=\"/approval\""));
    let key = SoftKey::new(Alg::Es256);
    let (s, body, cookie) = h.register(&key, &h.code(), None, "").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["next"], "/approval/");
    let cookie = cookie.unwrap();
    let (_, _, page) = h.get("/", Some(&cookie)).await;
    assert!(page.contains("href=\"/approval/r/req1\""), "{page}");
    assert!(page.contains("action=\"/approval/signout\""));
    let (_, _, page) = h.get("/r/req1", Some(&cookie)).await;
    assert!(page.contains("action=\"/approval/r/req1\""));
    // The origin check is on the origin, not the path.
    let csrf = csrf_of(&page);
    let (s, page) = h
        .post_form(
            "/r/req1",
            Some(&cookie),
            Some(ORIGIN),
            None,
            &format!("csrf={csrf}&action=deny"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(page.contains("href=\"/approval/\""));
}

/// Review stepup-1, finding 1: sign-in challenges are stateless, so any number asked for
/// by anyone leaves the owner's sign-in working; a challenge is used up only by a ceremony
/// that succeeded over it, and then never again.
#[tokio::test]
async fn anonymous_challenges_cannot_lock_the_owner_out() {
    let h = Harness::new("flood");
    let mut key = SoftKey::new(Alg::Es256);
    let (s, _, _) = h.register(&key, &h.code(), None, "").await;
    assert_eq!(s, StatusCode::OK);
    for _ in 0..2_000 {
        let (s, _, _) = h
            .post_json("/webauthn/signin/options", None, &serde_json::json!({}))
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    let (_, _, opts) = h
        .post_json("/webauthn/signin/options", None, &serde_json::json!({}))
        .await;
    let ch = URL_SAFE_NO_PAD
        .decode(opts["publicKey"]["challenge"].as_str().unwrap())
        .unwrap();
    // A bogus signature over it (anyone can send one) does not use it up.
    let (cd, ad, mut sig) = key.assert("localhost", ORIGIN, &ch);
    let last = sig.len() - 1;
    sig[last] ^= 1;
    let (s, body, _) = h.finish_signin(&key, &cd, &ad, &sig).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("webauthn.signature"))
    );
    let (cd, ad, sig) = key.assert("localhost", ORIGIN, &ch);
    let (s, body, cookie) = h.finish_signin(&key, &cd, &ad, &sig).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(cookie.is_some());
    // The owner's successful ceremony used it up.
    let (cd, ad, sig) = key.assert("localhost", ORIGIN, &ch);
    let (s, body, _) = h.finish_signin(&key, &cd, &ad, &sig).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("webauthn.challenge"))
    );
    // A challenge made up by the client, or one from before a restart: not this page's.
    let forged = [7u8; webauthn::CHALLENGE_LEN];
    let (cd, ad, sig) = key.assert("localhost", ORIGIN, &forged);
    let (s, body, _) = h.finish_signin(&key, &cd, &ad, &sig).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("webauthn.challenge"))
    );
    // Expired after five minutes.
    let (_, _, opts) = h
        .post_json("/webauthn/signin/options", None, &serde_json::json!({}))
        .await;
    let ch = URL_SAFE_NO_PAD
        .decode(opts["publicKey"]["challenge"].as_str().unwrap())
        .unwrap();
    h.now.fetch_add(state::CHALLENGE_TTL, Ordering::SeqCst);
    let (cd, ad, sig) = key.assert("localhost", ORIGIN, &ch);
    let (s, body, _) = h.finish_signin(&key, &cd, &ad, &sig).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("webauthn.challenge"))
    );
}

/// Review stepup-1, finding 5: a registration, a sign-in or a fresh code that the
/// service cannot put on its audit record does not take effect (`audit.unavailable`).
#[tokio::test]
async fn passkey_events_that_cannot_be_recorded_do_not_take_effect() {
    let h = Harness::new("audit-down");
    let mut key = SoftKey::new(Alg::Es256);
    *h.fake.audit_down.lock().unwrap() = true;
    let (s, body, cookie) = h.register(&key, &h.code(), None, "").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "audit.unavailable");
    assert!(cookie.is_none());
    let (s, _, _) = h
        .post_json("/webauthn/signin/options", None, &serde_json::json!({}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "no passkey was registered");
    // With the log back the same code still registers it, on the record.
    *h.fake.audit_down.lock().unwrap() = false;
    let (s, body, cookie) = h.register(&key, &h.code(), None, "").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let cookie = cookie.unwrap();
    let id = URL_SAFE_NO_PAD.encode(&key.id);
    assert_eq!(
        h.fake.events.lock().unwrap().clone(),
        vec![PageEvent::Registered {
            credential: id.clone(),
            first: true
        }]
    );
    *h.fake.audit_down.lock().unwrap() = true;
    let (s, body, cookie2) = h.signin(&mut key).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("audit.unavailable"))
    );
    assert!(cookie2.is_none(), "no session without the record");
    // No fresh code either.
    let (_, _, page) = h.get("/passkeys/add", Some(&cookie)).await;
    let csrf = csrf_of(&page);
    let n = h.codes.lock().unwrap().len();
    let (s, page) = h
        .post_form(
            "/passkeys/code",
            Some(&cookie),
            Some(ORIGIN),
            Some("same-origin"),
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{page}");
    assert!(page.contains("audit.unavailable"));
    assert_eq!(h.codes.lock().unwrap().len(), n, "no code was issued");
    *h.fake.audit_down.lock().unwrap() = false;
    let (s, _, cookie2) = h.signin(&mut key).await;
    assert_eq!(s, StatusCode::OK);
    assert!(cookie2.is_some());
}
