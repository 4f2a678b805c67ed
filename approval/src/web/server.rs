//! The page's routes: sign-in and registration (JSON endpoints the script calls), the
//! request list and request pages, decisions, sign-out; and the guard every route passes
//! (Host, CSRF origin checks, security headers).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;

use super::credentials::{self, CredentialStore, StoredCredential};
use super::error::WebError;
use super::pages;
use super::requests::{Decision, PageEvent, Requests, MAX_MINUTES};
use super::state::{csrf_matches, Purpose, RegistrationCode, Session, State};
use super::webauthn::{self, Ceremony, RelyingParty};

/// Largest request body the page takes.
pub const MAX_BODY: usize = 64 * 1024;

/// The Content-Security-Policy of every answer: scripts and styles only from the page's own
/// files, no inline code, forms only to the page itself, never framed. `connect-src 'self'`
/// lets the script call the sign-in endpoints.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                       base-uri 'none'";

/// The Referrer-Policy of every answer. `same-origin`, not `no-referrer`: under
/// `no-referrer` browsers send `Origin: null` with the page's own form POSTs (Fetch, "append
/// a request Origin header"; seen in Chromium 156: the sign-out and decision forms were
/// refused `web.csrf`), and the CSRF check needs the real origin. `same-origin` still sends
/// no referrer to any other site.
pub const REFERRER_POLICY: &str = "same-origin";

const JS: &str = include_str!("../../assets/webauthn.js");
const CSS: &str = include_str!("../../assets/style.css");

/// The clock the page reads, Unix seconds (injected so tests control time).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;
/// Where a new one-time registration code goes: only the owner must see it (the terminal
/// or log of `cada-owner serve`), never the page.
pub type CodeSink = Arc<dyn Fn(&RegistrationCode) + Send + Sync>;

/// The page's configuration.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// `--public-url`: the origin browsers use (`http://localhost:PORT` or `https://HOST`).
    pub public_url: String,
    /// Where the passkey file lives (created if missing).
    pub state_dir: PathBuf,
}

struct Inner {
    rp: RelyingParty,
    requests: Arc<dyn Requests>,
    state: Mutex<State>,
    creds: Mutex<CredentialStore>,
    clock: Clock,
    sink: CodeSink,
    cookie: &'static str,
}

/// The approval page. Cheap to clone.
#[derive(Clone)]
pub struct Web(Arc<Inner>);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Web {
    /// Opens the passkey file and, when no passkey is registered yet, issues the first
    /// one-time registration code to `sink`.
    ///
    /// # Errors
    /// `web.public_url` for an unusable public URL, `webauthn.store` for the passkey file.
    pub fn new(
        config: &WebConfig,
        requests: Arc<dyn Requests>,
        clock: Clock,
        sink: CodeSink,
    ) -> Result<Self, WebError> {
        let rp = RelyingParty::from_public_url(&config.public_url)?;
        let creds = CredentialStore::open(&config.state_dir, &rp)?;
        let mut state = State::new()?;
        if creds.is_empty() {
            let code = state.issue_code(clock(), false)?;
            sink(&code);
        }
        let cookie = if rp.secure() {
            "__Host-cada-session"
        } else {
            "cada-session"
        };
        Ok(Self(Arc::new(Inner {
            rp,
            requests,
            state: Mutex::new(state),
            creds: Mutex::new(creds),
            clock,
            sink,
            cookie,
        })))
    }

    /// The relying party (rp id, origin).
    #[must_use]
    pub fn relying_party(&self) -> &RelyingParty {
        &self.0.rp
    }

    /// The page's routes, guarded. Merge them with the step-up API's.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(list))
            .route("/signin", get(signin_page))
            .route("/signout", post(signout))
            .route("/passkeys/add", get(add_passkey_page))
            .route("/passkeys/code", post(new_code))
            .route("/r/{id}", get(request_page).post(decide))
            .route("/assets/webauthn.js", get(js))
            .route("/assets/style.css", get(css))
            .route("/webauthn/register/options", post(register_options))
            .route("/webauthn/register", post(register_finish))
            .route("/webauthn/signin/options", post(signin_options))
            .route("/webauthn/signin", post(signin_finish))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .layer(axum::middleware::from_fn_with_state(self.clone(), guard))
            .with_state(self.clone())
    }

    /// Records an event that is about to take effect (a registration, a sign-in, a fresh
    /// code): if the service cannot record it, it does not happen (`audit.unavailable`).
    fn record(&self, e: &PageEvent, peer: Option<IpAddr>) -> Result<(), WebError> {
        self.0.requests.page_event(e, peer).map_err(|r| {
            tracing::error!(error = %r, event = ?e, "the audit log cannot record a page event");
            WebError::Audit(r.0)
        })
    }

    /// Records an event that already happened (a sign-out, a refusal): a failure is logged.
    fn event(&self, e: &PageEvent, peer: Option<IpAddr>) {
        if let Err(r) = self.0.requests.page_event(e, peer) {
            tracing::error!(error = %r, event = ?e, "the audit log cannot record a page event");
        }
    }

    /// Hands a refused ceremony to the audit hook when it matters: a wrong registration
    /// code, a signature that does not verify, a counter that went back (possible clone).
    /// Other refusals (malformed bodies, stale challenges) are only logged: anyone can
    /// cause them without holding anything.
    fn refused(&self, e: &WebError, credential: Option<String>, peer: Option<IpAddr>) {
        if matches!(
            e,
            WebError::Code(_) | WebError::Signature | WebError::SignCount { .. }
        ) {
            self.event(
                &PageEvent::Refused {
                    code: e.code(),
                    credential,
                },
                peer,
            );
        }
    }

    fn now(&self) -> u64 {
        (self.0.clock)()
    }

    fn session(&self, headers: &HeaderMap) -> Option<([u8; 32], Session)> {
        let id = cookie(headers, self.0.cookie)?;
        lock(&self.0.state).session(id, self.now())
    }

    fn set_cookie(&self, id: &str) -> String {
        format!(
            "{}={id}; Path=/; HttpOnly; SameSite=Strict{}",
            self.0.cookie,
            if self.0.rp.secure() { "; Secure" } else { "" }
        )
    }

    fn clear_cookie(&self) -> String {
        format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
            self.0.cookie,
            if self.0.rp.secure() { "; Secure" } else { "" }
        )
    }
}

/// The value of cookie `name` (the first one), if any.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `next` location after sign-in: the list or one request page, nothing else.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.strip_prefix("/r/").is_some_and(|id| {
                !id.is_empty() && id.len() <= 64 && id.bytes().all(is_id_byte)
            }) =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// The client's address, when the listener records it.
type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

fn peer_ip(p: Peer) -> Option<IpAddr> {
    p.map(|Extension(ConnectInfo(a))| a.ip())
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn refusal_html(base: &str, e: &WebError) -> Response {
    tracing::info!(code = e.code(), "approval page refused: {e}");
    html(
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
        pages::error(base, e),
    )
}

fn refusal_json(e: &WebError) -> Response {
    tracing::info!(code = e.code(), "approval page refused: {e}");
    (
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
        axum::Json(serde_json::json!({"code": e.code(), "message": e.to_string()})),
    )
        .into_response()
}

/// A 303 to `path` (a route) under the public URL's `base`.
fn redirect(base: &str, path: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, format!("{base}{path}"))],
    )
        .into_response()
}

/// Checks that a POST comes from the page itself: `Sec-Fetch-Site` (when the browser sends
/// it) is `same-origin`, and `Origin` is the public origin exactly. A form on another site,
/// a sandboxed frame (`Origin: null`) and a client that sends no Origin are refused.
fn check_origin(rp: &RelyingParty, headers: &HeaderMap) -> Result<(), WebError> {
    if let Some(site) = headers.get("sec-fetch-site") {
        if site.as_bytes() != b"same-origin" {
            return Err(WebError::Csrf(format!(
                "the browser says this form was posted from {:?} (Sec-Fetch-Site); the \
                 approval page only takes forms posted from its own pages",
                String::from_utf8_lossy(site.as_bytes())
            )));
        }
    }
    match headers.get(header::ORIGIN) {
        Some(o) if o.as_bytes() == rp.origin().as_bytes() => Ok(()),
        Some(o) => Err(WebError::Csrf(format!(
            "the form was posted from origin {:?}, not {}; the approval page only takes \
             forms posted from its own pages",
            String::from_utf8_lossy(o.as_bytes()),
            rp.origin()
        ))),
        None => Err(WebError::Csrf(format!(
            "no Origin header; post from the page at {}",
            rp.origin()
        ))),
    }
}

/// Every route: the Host must be the public URL's (a DNS-rebinding page cannot use the
/// service under its own name), POSTs must come from the page itself, and every answer gets
/// the security headers.
async fn guard(AxState(web): AxState<Web>, req: Request, next: Next) -> Response {
    let rp = &web.0.rp;
    let json = req.uri().path().starts_with("/webauthn/");
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        .unwrap_or_default();
    let refused = if !host.eq_ignore_ascii_case(rp.host()) {
        Some(WebError::Host {
            expected: rp.host().to_owned(),
            got: host,
        })
    } else if req.method() == Method::POST {
        check_origin(rp, req.headers()).err()
    } else {
        None
    };
    let mut resp = match refused {
        Some(e) if json => refusal_json(&e),
        Some(e) => refusal_html(rp.base(), &e),
        None => next.run(req).await,
    };
    let h = resp.headers_mut();
    for (k, v) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", REFERRER_POLICY),
        ("cache-control", "no-store"),
        ("x-frame-options", "DENY"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    resp
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        JS,
    )
        .into_response()
}

async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn signin_page(
    AxState(web): AxState<Web>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    if web.session(&headers).is_some() {
        return redirect(web.0.rp.base(), &next);
    }
    let has = !lock(&web.0.creds).is_empty();
    html(StatusCode::OK, pages::signin(web.0.rp.base(), has, &next))
}

/// A GET without a session goes to the sign-in page (and back here afterwards).
fn to_signin(base: &str, path: &str) -> Response {
    let next = safe_next(Some(path));
    if next == "/" {
        redirect(base, "/signin")
    } else {
        redirect(base, &format!("/signin?next={next}"))
    }
}

async fn list(AxState(web): AxState<Web>, headers: HeaderMap) -> Response {
    let Some((_, s)) = web.session(&headers) else {
        return to_signin(web.0.rp.base(), "/");
    };
    let mut pending = web.0.requests.pending();
    pending.truncate(200);
    html(
        StatusCode::OK,
        pages::list(web.0.rp.base(), &s, &pending, web.now()),
    )
}

async fn request_page(
    AxState(web): AxState<Web>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(is_id_byte) {
        return refusal_html(
            web.0.rp.base(),
            &WebError::NotFound("no such request".into()),
        );
    }
    let Some((_, s)) = web.session(&headers) else {
        return to_signin(web.0.rp.base(), &format!("/r/{id}"));
    };
    match web.0.requests.get(&id) {
        Some(r) => html(
            StatusCode::OK,
            pages::request(web.0.rp.base(), &s, &r, web.now()),
        ),
        None => refusal_html(
            web.0.rp.base(),
            &WebError::NotFound("no such request (it may have expired and been dropped)".into()),
        ),
    }
}

/// Parses an urlencoded form body: each field at most once.
fn form(body: &[u8]) -> Result<Vec<(String, String)>, WebError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(WebError::Request(format!("field {k:?} given twice")));
        }
        if out.len() >= 16 {
            return Err(WebError::Request("too many fields".into()));
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

fn field<'a>(f: &'a [(String, String)], name: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The session of a form POST and its CSRF token check.
fn form_session(
    web: &Web,
    headers: &HeaderMap,
    fields: &[(String, String)],
) -> Result<([u8; 32], Session), WebError> {
    let (key, s) = web.session(headers).ok_or_else(|| {
        WebError::Session(
            "not signed in, or the session ended (15 min idle, 8 h at most); sign in again".into(),
        )
    })?;
    if !csrf_matches(&s, field(fields, "csrf").unwrap_or("")) {
        return Err(WebError::Csrf(
            "the form's CSRF token is not this session's; reload the page and try again".into(),
        ));
    }
    Ok((key, s))
}

async fn decide(
    AxState(web): AxState<Web>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let fields = match form(&body) {
        Ok(f) => f,
        Err(e) => return refusal_html(web.0.rp.base(), &e),
    };
    let s = match form_session(&web, &headers, &fields) {
        Ok((_, s)) => s,
        Err(e) => return refusal_html(web.0.rp.base(), &e),
    };
    if id.is_empty() || id.len() > 64 || !id.bytes().all(is_id_byte) {
        return refusal_html(
            web.0.rp.base(),
            &WebError::NotFound("no such request".into()),
        );
    }
    let decision = match field(&fields, "action") {
        Some("once") => Decision::ApproveOnce,
        Some("deny") => Decision::Deny,
        Some("minutes") => match field(&fields, "minutes").map(str::parse::<u32>) {
            Some(Ok(n)) if (1..=MAX_MINUTES).contains(&n) => Decision::ApproveMinutes(n),
            _ => {
                return refusal_html(
                    web.0.rp.base(),
                    &WebError::Request(format!(
                        "minutes must be a whole number from 1 to {MAX_MINUTES}"
                    )),
                )
            }
        },
        _ => {
            return refusal_html(
                web.0.rp.base(),
                &WebError::Request("no decision in the form".into()),
            )
        }
    };
    let who = format!("passkey:{}", s.credential);
    let requests = Arc::clone(&web.0.requests);
    let id2 = id.clone();
    let who2 = who.clone();
    let outcome =
        match tokio::task::spawn_blocking(move || requests.decide(&id2, decision, &who2)).await {
            Ok(o) => o,
            Err(e) => Err(super::DecideError {
                code: "web.internal".into(),
                message: format!("the decision did not complete: {e}"),
            }),
        };
    match &outcome {
        Ok(o) => {
            tracing::info!(request = %id, %who, ?decision, status = o.status.as_str(), "owner decided");
        }
        Err(e) => {
            tracing::info!(request = %id, %who, ?decision, code = %e.code, "decision not applied");
        }
    }
    let status = if outcome.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    html(status, pages::result(web.0.rp.base(), &s, &id, &outcome))
}

async fn signout(
    AxState(web): AxState<Web>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = match form(&body) {
        Ok(f) => f,
        Err(e) => return refusal_html(web.0.rp.base(), &e),
    };
    let (key, s) = match form_session(&web, &headers, &fields) {
        Ok(ks) => ks,
        Err(e) => return refusal_html(web.0.rp.base(), &e),
    };
    lock(&web.0.state).end_session(&key);
    web.event(
        &PageEvent::SignedOut {
            credential: s.credential,
        },
        peer_ip(peer),
    );
    let mut r = redirect(web.0.rp.base(), "/signin");
    if let Ok(v) = HeaderValue::from_str(&web.clear_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn add_passkey_page(AxState(web): AxState<Web>, headers: HeaderMap) -> Response {
    let Some((_, s)) = web.session(&headers) else {
        return to_signin(web.0.rp.base(), "/");
    };
    html(
        StatusCode::OK,
        pages::add_passkey(web.0.rp.base(), &s, false),
    )
}

async fn new_code(
    AxState(web): AxState<Web>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = match form(&body) {
        Ok(f) => f,
        Err(e) => return refusal_html(web.0.rp.base(), &e),
    };
    let s = match form_session(&web, &headers, &fields) {
        Ok((_, s)) => s,
        Err(e) => return refusal_html(web.0.rp.base(), &e),
    };
    // On the record before the code exists: a code nobody can account for is never issued.
    if let Err(e) = web.record(
        &PageEvent::CodeIssued {
            credential: s.credential.clone(),
        },
        peer_ip(peer),
    ) {
        return refusal_html(web.0.rp.base(), &e);
    }
    let code = lock(&web.0.state).issue_code(web.now(), true);
    match code {
        Ok(c) => {
            tracing::info!(credential = %s.credential, "a new registration code was asked for");
            (web.0.sink)(&c);
            html(
                StatusCode::OK,
                pages::add_passkey(web.0.rp.base(), &s, true),
            )
        }
        Err(e) => refusal_html(web.0.rp.base(), &e),
    }
}

fn parse_json<T: for<'de> Deserialize<'de>>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, WebError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    if !ct.starts_with(b"application/json") {
        return Err(WebError::Csrf(
            "the sign-in endpoints take application/json from the page's script only".into(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| WebError::Request(e.to_string()))
}

fn b64(field: &str, s: &str, max: usize) -> Result<Vec<u8>, WebError> {
    if s.len() > max * 4 / 3 + 4 {
        return Err(WebError::Request(format!("{field} is too large")));
    }
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| WebError::Request(format!("{field} is not base64url")))
}

#[derive(Deserialize)]
struct RegisterOptionsBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    csrf: String,
}

async fn register_options(
    AxState(web): AxState<Web>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match register_options_inner(&web, &headers, &body) {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => {
            web.refused(&e, None, peer_ip(peer));
            refusal_json(&e)
        }
    }
}

fn register_options_inner(
    web: &Web,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<serde_json::Value, WebError> {
    let b: RegisterOptionsBody = parse_json(headers, body)?;
    let now = web.now();
    let session = web.session(headers);
    let state = lock(&web.0.state);
    let creds = lock(&web.0.creds);
    let session_key = if creds.is_empty() {
        None
    } else {
        let (key, s) = session.ok_or_else(|| {
            WebError::Session(
                "a passkey is already registered: sign in with it, then use \"Add a passkey\" \
                 for a fresh code"
                    .into(),
            )
        })?;
        if !csrf_matches(&s, &b.csrf) {
            return Err(WebError::Csrf(
                "the CSRF token is not this session's; reload the page".into(),
            ));
        }
        Some(key)
    };
    let generation = state.check_code(&b.code, now)?;
    let challenge = state.new_challenge(
        &Purpose::Register {
            code: generation,
            session: session_key.map(|k| state.bind_session(&k)),
        },
        now,
    )?;
    let exclude: Vec<serde_json::Value> = creds
        .ids()
        .into_iter()
        .map(|id| serde_json::json!({"type": "public-key", "id": id}))
        .collect();
    Ok(serde_json::json!({"publicKey": {
        "rp": {"id": web.0.rp.id(), "name": "CADA approvals"},
        "user": {"id": URL_SAFE_NO_PAD.encode(creds.user_id()), "name": "owner",
                 "displayName": "CADA owner"},
        "challenge": URL_SAFE_NO_PAD.encode(challenge),
        "pubKeyCredParams": [{"type": "public-key", "alg": -8},
                             {"type": "public-key", "alg": -7}],
        "timeout": 300_000,
        "attestation": "none",
        "authenticatorSelection": {"residentKey": "required", "requireResidentKey": true,
                                   "userVerification": "required"},
        "excludeCredentials": exclude,
    }}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AttestationResponse {
    #[serde(rename = "clientDataJSON")]
    client_data_json: String,
    attestation_object: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegisterBody {
    raw_id: String,
    response: AttestationResponse,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: Option<String>,
}

async fn register_finish(
    AxState(web): AxState<Web>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer = peer_ip(peer);
    match register_finish_inner(&web, &headers, &body, peer) {
        Err(e) => {
            web.refused(&e, None, peer);
            refusal_json(&e)
        }
        Ok((next, cookie)) => {
            let mut r = axum::Json(serde_json::json!({"ok": true, "next": next})).into_response();
            if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
                r.headers_mut().insert(header::SET_COOKIE, c);
            }
            r
        }
    }
}

fn register_finish_inner(
    web: &Web,
    headers: &HeaderMap,
    body: &[u8],
    peer: Option<IpAddr>,
) -> Result<(String, Option<String>), WebError> {
    let b: RegisterBody = parse_json(headers, body)?;
    let rp = &web.0.rp;
    let now = web.now();
    let client_data = b64(
        "clientDataJSON",
        &b.response.client_data_json,
        webauthn::MAX_CLIENT_DATA,
    )?;
    let att = b64(
        "attestationObject",
        &b.response.attestation_object,
        webauthn::MAX_ATTESTATION_OBJECT,
    )?;
    let raw_id = credentials::decode_id(&b.raw_id)?;
    let challenge = webauthn::check_client_data(rp, Ceremony::Create, &client_data)?;
    let session = web.session(headers);
    let mut state = lock(&web.0.state);
    let Purpose::Register {
        code: generation,
        session: asked_by,
    } = state.check_challenge(&challenge, false, now)?
    else {
        return Err(WebError::Challenge("not a registration challenge".into()));
    };
    if let Some(asked_by) = asked_by {
        match &session {
            Some((key, s)) if state.bind_session(key) == asked_by && csrf_matches(s, &b.csrf) => {}
            _ => {
                return Err(WebError::Session(
                    "the session that asked for this registration ended; sign in again".into(),
                ))
            }
        }
    }
    let reg = webauthn::check_registration(rp, &att)?;
    let cred = reg
        .credential()
        .ok_or_else(|| WebError::AuthData("no attested credential".into()))?;
    if cred.id != raw_id {
        return Err(WebError::AuthData(
            "rawId is not the attested credential id".into(),
        ));
    }
    let id_b64 = URL_SAFE_NO_PAD.encode(&cred.id);
    let mut creds = lock(&web.0.creds);
    // The first passkey needs no session; once one exists, only a session can add one (a
    // code issued before the first registration cannot register a second passkey).
    if asked_by.is_none() && !creds.is_empty() {
        return Err(WebError::Session(
            "a passkey was registered meanwhile: sign in with it to add another".into(),
        ));
    }
    state.check_code_generation(generation, now)?;
    // Every check passed: the challenge is used up (single use) before the passkey is kept.
    state.use_challenge(&challenge, false, now)?;
    // On the record before the passkey can sign anything: a new signer of grants that the
    // audit log cannot hold is not added.
    let first = asked_by.is_none();
    web.record(
        &PageEvent::Registered {
            credential: id_b64.clone(),
            first,
        },
        peer,
    )?;
    let added = creds.add(StoredCredential {
        id: id_b64.clone(),
        cose_key: URL_SAFE_NO_PAD.encode(&cred.cose_key),
        alg: cred.key.alg.cose(),
        sign_count: reg.auth_data.sign_count,
        backup_eligible: reg.auth_data.backup_eligible(),
        fmt: reg.fmt.clone(),
        created_at: now,
        last_used_at: None,
    });
    if let Err(e) = added {
        // The record above says it was being registered: say that it was not.
        web.event(
            &PageEvent::Refused {
                code: e.code(),
                credential: Some(id_b64.clone()),
            },
            peer,
        );
        return Err(e);
    }
    state.use_code(generation, now)?;
    tracing::warn!(credential = %id_b64, fmt = %reg.fmt, "a passkey was registered for the approval page");
    let cookie = if first {
        Some(web.set_cookie(&state.new_session(id_b64, now)?))
    } else {
        None
    };
    Ok((
        format!("{}{}", rp.base(), safe_next(b.next.as_deref())),
        cookie,
    ))
}

async fn signin_options(AxState(web): AxState<Web>, headers: HeaderMap, body: Bytes) -> Response {
    let r = (|| {
        let _: serde_json::Value = parse_json(&headers, &body)?;
        let creds = lock(&web.0.creds);
        if creds.is_empty() {
            return Err(WebError::UnknownCredential);
        }
        // Stateless: anyone may ask for any number without taking room from the owner.
        let challenge = lock(&web.0.state).new_challenge(&Purpose::SignIn, web.now())?;
        let allow: Vec<serde_json::Value> = creds
            .ids()
            .into_iter()
            .map(|id| serde_json::json!({"type": "public-key", "id": id}))
            .collect();
        Ok(serde_json::json!({"publicKey": {
            "challenge": URL_SAFE_NO_PAD.encode(challenge),
            "rpId": web.0.rp.id(),
            "allowCredentials": allow,
            "userVerification": "required",
            "timeout": 300_000,
        }}))
    })();
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => refusal_json(&e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AssertionResponse {
    #[serde(rename = "clientDataJSON")]
    client_data_json: String,
    authenticator_data: String,
    signature: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SigninBody {
    raw_id: String,
    response: AssertionResponse,
    #[serde(default)]
    next: Option<String>,
}

async fn signin_finish(
    AxState(web): AxState<Web>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer = peer_ip(peer);
    match signin_finish_inner(&web, &headers, &body, peer) {
        Err(e) => {
            let credential = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["rawId"].as_str().map(str::to_owned))
                .filter(|id| id.len() <= 2 * webauthn::MAX_CREDENTIAL_ID);
            web.refused(&e, credential, peer);
            refusal_json(&e)
        }
        Ok((next, cookie)) => {
            let mut r = axum::Json(serde_json::json!({"ok": true, "next": next})).into_response();
            if let Ok(c) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, c);
            }
            r
        }
    }
}

fn signin_finish_inner(
    web: &Web,
    headers: &HeaderMap,
    body: &[u8],
    peer: Option<IpAddr>,
) -> Result<(String, String), WebError> {
    let b: SigninBody = parse_json(headers, body)?;
    let rp = &web.0.rp;
    let now = web.now();
    let client_data = b64(
        "clientDataJSON",
        &b.response.client_data_json,
        webauthn::MAX_CLIENT_DATA,
    )?;
    let auth_data = b64(
        "authenticatorData",
        &b.response.authenticator_data,
        webauthn::MAX_AUTH_DATA,
    )?;
    let sig = b64("signature", &b.response.signature, webauthn::MAX_SIGNATURE)?;
    let raw_id = credentials::decode_id(&b.raw_id)?;
    let id_b64 = URL_SAFE_NO_PAD.encode(&raw_id);
    let challenge = webauthn::check_client_data(rp, Ceremony::Get, &client_data)?;
    let mut state = lock(&web.0.state);
    state.check_challenge(&challenge, true, now)?;
    let mut creds = lock(&web.0.creds);
    let (key, stored) = creds.get(&id_b64).ok_or(WebError::UnknownCredential)?;
    let count = match webauthn::check_assertion(rp, &key, stored, &client_data, &auth_data, &sig) {
        Ok(c) => {
            // A valid signature over it: the challenge is used up (single use).
            state.use_challenge(&challenge, true, now)?;
            c
        }
        Err(e @ WebError::SignCount { .. }) => {
            state.use_challenge(&challenge, true, now)?;
            tracing::error!(credential = %id_b64, "possible cloned passkey: {e}");
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    creds.used(&id_b64, count, now)?;
    // On the record before the session exists.
    web.record(
        &PageEvent::SignedIn {
            credential: id_b64.clone(),
        },
        peer,
    )?;
    let sid = state.new_session(id_b64.clone(), now)?;
    tracing::info!(credential = %id_b64, "owner signed in to the approval page");
    Ok((
        format!("{}{}", rp.base(), safe_next(b.next.as_deref())),
        web.set_cookie(&sid),
    ))
}
