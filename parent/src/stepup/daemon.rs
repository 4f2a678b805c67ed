//! The daemon's side of step-up: `POST /v1/step-up` files a request with the owner's
//! approval service, `POST /v1/step-up/poll` asks how it stands and installs an approved
//! grant in the enclave. Each request to the service carries a proof the enclave signs for
//! exactly that URL and method (`POST {stepUp}/v1/step-up`, `GET {stepUp}/v1/step-up/{id}`,
//! the body's digest bound), with the evidence (`CADA-Evidence`) and the contract it names
//! (`CADA-Contract`): the service admits enclaves locked to its owner only
//! (`docs/approval.md`), and the enclave signs such proofs only while a live contract of its
//! owner names that `stepUp` (`docs/contracts.md`).
//!
//! Where to file: the daemon remembers, from the contracts installed through it, which name
//! a `stepUp` (`credentialSubject.stepUp`, schema 2), and files with the newest one whose
//! audiences cover the refused server, else the newest one naming any (an enclave has one
//! owner, so one approval service). The daemon forgets them when it restarts, like the
//! contracts it hands out with proofs: install the contract again.
//!
//! A refusal the agent only heard from the server it called (`refusal.by` `server`, or
//! `gate`) is not filed when an installed contract already grants that call — the tool at
//! that URL by the contract's `tools` list, or by a reusable authorization detail whose
//! argument limits the arguments meet: no approval could lift such a refusal, and filing it
//! would let any server the agent talks to ask the owner in CADA's name and spend the
//! agent's quota of requests (review stepup-1, finding 4). The page URL the service answers
//! must lie under the contract's `stepUp` (same origin, path below it), so that the user is
//! only ever sent to the owner's service.
//!
//! Problem codes (besides the API's own, e.g. `contract-denied` when the enclave refuses to
//! sign for the service): `stepup-unavailable` (404, no installed contract names a
//! `stepUp`), `stepup-invalid` (400, the call cannot be put to the owner: the limits of
//! `cada_protocol::stepup`), `stepup-granted` (409, a server's refusal of a call an
//! installed contract grants: nothing filed), `stepup-refused` (the service refused: 403, or
//! 429 when it rate limits; the detail starts with the service's code, e.g.
//! `stepup.rate_limited`), `stepup-page` (502, the service answered a page URL outside its
//! `stepUp`), `stepup-unreachable` (502).
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cada_contract::{Contract, TrustedOwners, VerifiedContract};
use cada_net::fetch::Fetcher;
use cada_net::upstream::Upstream;
use cada_net::Problem;
use cada_protocol::mcp;
use cada_protocol::stepup::{
    is_request_id, poll_path, Refusal, RefusedBy, RequestedCall, Status, StepUpCreated,
    StepUpRequest, StepUpStatus, Want, MAX_ANSWER_BODY, MAX_MESSAGE_LEN, STEP_UP_PATH,
};
use cada_protocol::url::{HttpUrl, UrlPrefix};
use cada_protocol::wire::{ops, ContractsResponse, SignPopRequest, SignPopResponse};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::api::{self, AppState};

/// Most `stepUp` contracts remembered.
const MAX_CONTRACTS: usize = 16;
/// Time the approval service gets to answer one request, body included.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(10);

/// `POST /v1/step-up` body (from the proxy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBody {
    /// The refused request's URL (its `htu`).
    pub audience: String,
    /// The tool.
    pub tool: String,
    /// Its arguments, as the agent sent them.
    #[serde(default)]
    pub arguments: Map<String, Value>,
    /// Who refused and why.
    pub refusal: Refusal,
    /// One call or some minutes.
    #[serde(default = "once")]
    pub want: Want,
}

fn once() -> Want {
    Want::Once
}

/// `POST /v1/step-up` answer: the service's 201 answer, and where it was filed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filed {
    /// The approval service's base URL (the contract's `stepUp`).
    pub step_up: String,
    /// The digest of the contract that names it (the request's `contract`).
    pub contract: String,
    /// The service's answer.
    #[serde(flatten)]
    pub created: StepUpCreated,
}

/// `POST /v1/step-up/poll` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollBody {
    /// The approval service's base URL (as [`Filed::step_up`]).
    pub step_up: String,
    /// The request id.
    pub id: String,
}

/// `POST /v1/step-up/poll` answer: the service's status (without the grant), and the
/// digest of the grant installed when it was approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Polled {
    /// The service's answer (`grant` left out: it is installed, not handed on).
    #[serde(flatten)]
    pub status: StepUpStatus,
    /// With `approved`: the digest of the grant now installed in the enclave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed: Option<String>,
}

/// A contract that names an approval service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUpContract {
    /// Its digest (`cada.dtc`).
    pub digest: String,
    /// Its `stepUp`, without a trailing slash.
    pub step_up: String,
    /// Its audiences.
    pub audiences: Vec<String>,
}

/// The daemon's step-up state: how it reaches approval services, and which contracts name
/// one.
#[derive(Default)]
pub struct StepUpClient {
    http: OnceLock<Upstream>,
    contracts: Mutex<Vec<StepUpContract>>,
    /// The last `DPoP-Nonce` each service gave.
    nonces: Mutex<HashMap<String, String>>,
}

impl StepUpClient {
    /// Reach approval services over HTTPS trusting what `fetcher` trusts (default: the
    /// Mozilla roots). Only the first call counts.
    pub fn set_roots(&self, fetcher: &Fetcher) {
        let _ = self.http.set(Upstream::new(fetcher));
    }

    fn http(&self) -> Result<&Upstream, Problem> {
        if let Some(h) = self.http.get() {
            return Ok(h);
        }
        let f = Fetcher::mozilla().map_err(|e| unreachable(format!("TLS roots: {e}")))?;
        Ok(self.http.get_or_init(|| Upstream::new(&f)))
    }

    /// Notes the contract `compact` (of digest `digest`, just installed) if it names a
    /// `stepUp`.
    pub fn note_contract(&self, compact: &str, digest: &str) {
        let Some(c) = step_up_of(compact, digest) else {
            return;
        };
        let Ok(mut v) = self.contracts.lock() else {
            return;
        };
        v.retain(|x| x.digest != c.digest);
        if v.len() >= MAX_CONTRACTS {
            v.remove(0);
        }
        v.push(c);
    }

    /// The contract to file a refusal of `audience` under: the newest whose audiences
    /// cover it, else the newest naming a `stepUp`.
    pub fn contract_for(&self, audience: &str) -> Option<StepUpContract> {
        let v = self.contracts.lock().ok()?;
        let url = HttpUrl::parse_canonical(audience).ok();
        let covers = |c: &&StepUpContract| {
            url.as_ref().is_some_and(|u| {
                c.audiences
                    .iter()
                    .filter_map(|a| UrlPrefix::parse(a).ok())
                    .any(|p| p.matches(u))
            })
        };
        v.iter().rev().find(covers).or_else(|| v.last()).cloned()
    }

    /// Whether `step_up` is named by a remembered contract.
    fn knows(&self, step_up: &str) -> Option<StepUpContract> {
        self.contracts
            .lock()
            .ok()?
            .iter()
            .rev()
            .find(|c| c.step_up == step_up)
            .cloned()
    }
}

/// The `stepUp` of a compact contract (decoded, not verified: the enclave verified it, and
/// signs for the service only under a contract that names it), when it has a usable one.
pub fn step_up_of(compact: &str, digest: &str) -> Option<StepUpContract> {
    let (_, payload) = cada_contract::Contract::decode_unverified(compact).ok()?;
    let subject = payload.get("credentialSubject")?;
    let raw = subject.get("stepUp")?.as_str()?;
    let step_up = raw.trim_end_matches('/').to_owned();
    let u = url::Url::parse(&step_up).ok()?;
    if u.query().is_some() || u.fragment().is_some() {
        return None;
    }
    cada_net::fetch::target(&step_up).ok()?;
    let audiences = subject
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Some(StepUpContract {
        digest: digest.to_owned(),
        step_up,
        audiences,
    })
}

fn unreachable(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::BAD_GATEWAY, "stepup-unreachable", detail)
}

/// An answer of the approval service.
struct Answer {
    status: StatusCode,
    body: Bytes,
}

/// Sends `method url` (with `body`, JSON) to the approval service `base` with a proof the
/// enclave signs for exactly that, the evidence and the contract it names; answers one
/// `use_dpop_nonce` challenge.
async fn send_signed(
    st: &AppState,
    base: &str,
    method: &'static str,
    url: &str,
    body: Option<Vec<u8>>,
) -> Result<Answer, Problem> {
    let http = st.step_up.http()?;
    let digests = body.as_deref().map(mcp::digests);
    for attempt in 0..2 {
        let nonce = st
            .step_up
            .nonces
            .lock()
            .ok()
            .and_then(|m| m.get(base).cloned());
        let req = SignPopRequest {
            htm: method.to_owned(),
            htu: url.to_owned(),
            access_token: None,
            nonce,
            ctx: std::collections::BTreeMap::new(),
            bd: digests.as_ref().map(|(bd, _)| bd.clone()),
            mcp: Vec::new(),
            exchange: None,
            task: None,
            traceparent: None,
        };
        let signed: SignPopResponse = st
            .client
            .call(ops::SIGN_POP, &req)
            .await
            .map_err(|e| api::problem_of(&e))?;
        let evidence = api::evidence_for(st, &signed.att)
            .await
            .map_err(|e| api::problem_of(&e))?;
        let mut r = axum::http::Request::builder()
            .method(method)
            .uri(url)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, "cada-parent");
        let mut put = |n: &'static str, v: &str| {
            if let Ok(v) = HeaderValue::from_str(v) {
                r.headers_mut()
                    .map(|h| h.insert(HeaderName::from_static(n), v));
            }
        };
        put("dpop", &signed.dpop);
        put("cada-evidence", &evidence);
        if let Some(c) = signed.dtc.as_deref().and_then(|d| st.contract(d)) {
            put("cada-contract", &c);
        }
        if let Some((_, cd)) = &digests {
            put("content-digest", cd);
            put("content-type", "application/json");
        }
        let req = r
            .body(Body::from(body.clone().unwrap_or_default()))
            .map_err(|e| unreachable(format!("{url}: {e}")))?;
        let answered = async {
            let resp = http
                .send(req, SERVICE_TIMEOUT)
                .await
                .map_err(|e| unreachable(format!("{url}: {e}")))?;
            let (parts, incoming) = resp.into_parts();
            let body = http_body_util::Limited::new(incoming, MAX_ANSWER_BODY)
                .collect()
                .await
                .map_err(|e| unreachable(format!("{url}: the answer could not be read: {e}")))?
                .to_bytes();
            Ok::<_, Problem>((parts, body))
        };
        let (parts, body) = tokio::time::timeout(SERVICE_TIMEOUT, answered)
            .await
            .map_err(|_| unreachable(format!("{url} did not answer within 10 s")))??;
        if let Some(n) = parts
            .headers
            .get("dpop-nonce")
            .and_then(|v| v.to_str().ok())
        {
            if let Ok(mut m) = st.step_up.nonces.lock() {
                if m.len() >= MAX_CONTRACTS {
                    m.clear();
                }
                m.insert(base.to_owned(), n.to_owned());
            }
        }
        let asks_nonce = parts.status == StatusCode::UNAUTHORIZED
            && parts.headers.contains_key("dpop-nonce")
            && crate::proxy::challenge(&parts.headers)
                .get("error")
                .is_some_and(|e| e == "use_dpop_nonce");
        if asks_nonce && attempt == 0 {
            continue;
        }
        return Ok(Answer {
            status: parts.status,
            body,
        });
    }
    Err(unreachable(format!(
        "{url} kept asking for a new DPoP nonce"
    )))
}

/// The service's refusal as the daemon's problem: `stepup-refused` with the service's code
/// first in the detail.
fn refused(url: &str, a: &Answer) -> Problem {
    let doc: Option<Value> = serde_json::from_slice(&a.body).ok();
    let code = doc
        .as_ref()
        .and_then(|d| {
            d.get("code").and_then(Value::as_str).or_else(|| {
                d.get("type")
                    .and_then(Value::as_str)
                    .and_then(|t| t.strip_prefix(api::PROBLEM_TYPE_PREFIX))
            })
        })
        .filter(|c| {
            c.len() <= 64
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
        .unwrap_or("stepup.unknown_refusal")
        .to_owned();
    let detail: String = doc
        .as_ref()
        .and_then(|d| d.get("detail").or_else(|| d.get("message")))
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(512)
        .collect();
    let status = match a.status {
        StatusCode::TOO_MANY_REQUESTS => StatusCode::TOO_MANY_REQUESTS,
        s if s.is_client_error() => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_GATEWAY,
    };
    Problem::new(
        status,
        "stepup-refused",
        format!(
            "{code}: the approval service ({url}) answered {}: {detail}",
            a.status.as_u16()
        ),
    )
}

/// `POST /v1/step-up`: files a step-up request for a refused call.
pub(crate) async fn file(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let route = "step_up";
    let Ok(_permit) = st.queue.try_acquire() else {
        return api::error_response(route, &st, crate::ParentError::Overloaded);
    };
    let body: FileBody = match api::json_body(&headers, body) {
        Ok(b) => b,
        Err(p) => return api::problem_response(route, &st, p),
    };
    match file_request(&st, body).await {
        Ok(f) => {
            api::ok(route, &st);
            Json(f).into_response()
        }
        Err(p) => api::problem_response(route, &st, p),
    }
}

async fn file_request(st: &AppState, body: FileBody) -> Result<Filed, Problem> {
    let c = st.step_up.contract_for(&body.audience).ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "stepup-unavailable",
            "no contract installed through this daemon names a stepUp (the owner's approval \
             service: cada-owner grant --step-up URL, then cada-parent contract install)",
        )
    })?;
    // A refusal only the server reported: not for a call the agent already holds.
    if matches!(body.refusal.by, RefusedBy::Server | RefusedBy::Gate) {
        if let Some(held) = held_by(st, &body.audience, &body.tool, &body.arguments).await? {
            tracing::warn!(
                server = %body.refusal.server, tool = %clip(&body.tool),
                code = %clip(&body.refusal.code), contract = %held,
                "a server refused a call an installed contract grants: not put to the owner"
            );
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "stepup-granted",
                format!(
                    "the installed contract {held} already grants tool {:?} at {}: the \
                     server's refusal ({}) names no grant the owner could give, so it is not \
                     put to the owner",
                    clip(&body.tool),
                    clip(&body.audience),
                    clip(&body.refusal.code)
                ),
            ));
        }
    }
    let mut refusal = body.refusal;
    if refusal.message.len() > MAX_MESSAGE_LEN {
        refusal.message = refusal
            .message
            .chars()
            .scan(0, |n, ch| {
                *n += ch.len_utf8();
                (*n <= MAX_MESSAGE_LEN).then_some(ch)
            })
            .collect();
    }
    let req = StepUpRequest {
        contract: c.digest.clone(),
        request: RequestedCall {
            audience: body.audience,
            method: "POST".into(),
            tool: body.tool,
            arguments: body.arguments,
        },
        refusal,
        want: body.want,
    };
    req.check().map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "stepup-invalid",
            format!(
                "{}: the call cannot be put to the owner: {e}",
                cada_protocol::stepup::parse_error_code(&e)
            ),
        )
    })?;
    let bytes = serde_json::to_vec(&req)
        .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let url = format!("{}{STEP_UP_PATH}", c.step_up);
    let a = send_signed(st, &c.step_up, "POST", &url, Some(bytes)).await?;
    // 201; a service may answer 200 with the same answer for a call already pending.
    if a.status != StatusCode::CREATED && a.status != StatusCode::OK {
        return Err(refused(&url, &a));
    }
    let created: StepUpCreated = serde_json::from_slice(&a.body)
        .map_err(|e| unreachable(format!("{url}: the 201 answer does not decode: {e}")))?;
    if !is_request_id(&created.id) {
        return Err(unreachable(format!(
            "{url}: the answer's id is not a request id"
        )));
    }
    let created = match page_under(&c.step_up, &created.url) {
        Ok(page) => StepUpCreated {
            url: page,
            ..created
        },
        Err(why) => {
            tracing::warn!(
                service = %c.step_up, page = %clip(&created.url), id = %created.id,
                "the approval service answered a page URL outside its stepUp: not shown"
            );
            return Err(Problem::new(
                StatusCode::BAD_GATEWAY,
                "stepup-page",
                format!(
                    "{url}: the answer's page URL {:?} {why}; the user is sent only to pages \
                     under the contract's stepUp {}",
                    clip(&created.url),
                    c.step_up
                ),
            ));
        }
    };
    tracing::info!(
        id = %created.id, page = %created.url, service = %c.step_up,
        "step-up request filed: the owner decides at the page"
    );
    Ok(Filed {
        step_up: c.step_up,
        contract: c.digest,
        created,
    })
}

/// At most 128 characters of `s`, for messages and logs.
fn clip(s: &str) -> String {
    s.chars().take(128).collect()
}

/// The page URL `answered` (normal form) when it is an http(s) URL without user info, of
/// at most 2048 bytes, under `step_up` (the contract's, without a trailing slash): the same
/// origin (scheme, host, port) and a path below `step_up`'s (after the URL parser resolved
/// dot segments, `%2e` included). Else why not.
fn page_under(step_up: &str, answered: &str) -> Result<String, &'static str> {
    if answered.len() > 2048 {
        return Err("is longer than 2048 bytes");
    }
    let base = url::Url::parse(&format!("{step_up}/")).map_err(|_| "cannot be checked")?;
    let page = url::Url::parse(answered).map_err(|_| "is not a URL")?;
    if !matches!(page.scheme(), "https" | "http") {
        return Err("is not an http(s) URL");
    }
    if !page.username().is_empty() || page.password().is_some() {
        return Err("carries user info");
    }
    if page.origin() != base.origin() {
        return Err("is not at the approval service's origin");
    }
    if page.path().len() <= base.path().len() || !page.path().starts_with(base.path()) {
        return Err("is not under the approval service's path");
    }
    Ok(page.into())
}

/// Which installed contract already grants a `tools/call` of `tool` with `args` at
/// `audience`, when one does (`<digest> (how)`): one the enclave holds now, valid now, whose
/// methods include POST and that grants the tool by its `tools` list at one of its
/// audiences, or by a reusable authorization detail there whose argument limits `args`
/// meet. Single-use details do not count: a gate refuses a second use (`grant.used`), and
/// a new approval is then what the agent needs.
async fn held_by(
    st: &AppState,
    audience: &str,
    tool: &str,
    args: &Map<String, Value>,
) -> Result<Option<String>, Problem> {
    let Ok(url) = HttpUrl::parse_canonical(audience) else {
        return Ok(None);
    };
    let installed = st.installed_contracts();
    if installed.is_empty() {
        return Ok(None);
    }
    // Only those the enclave holds now (it may have restarted since the install).
    let live: ContractsResponse = st
        .client
        .call(ops::CONTRACTS, &Value::Null)
        .await
        .map_err(|e| api::problem_of(&e))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for (digest, compact) in installed {
        if !live.contracts.iter().any(|c| c.digest == digest) {
            continue;
        }
        let Some(c) = read_contract(&compact, now) else {
            continue;
        };
        if let Some(how) = grants_call(&c, &url, tool, args) {
            return Ok(Some(format!("{digest} ({how})")));
        }
    }
    Ok(None)
}

/// `compact` verified under the owner key its issuer names (the enclave already verified
/// it against its owner when it was installed), at `now`.
fn read_contract(compact: &str, now: u64) -> Option<VerifiedContract> {
    let (_, payload) = Contract::decode_unverified(compact).ok()?;
    let issuer = payload.get("issuer")?.as_str()?;
    let owners = TrustedOwners::from_did_key(issuer).ok()?;
    Contract::verify(compact, &owners, now).ok()
}

/// How `c` grants a `tools/call` of `tool` with `args` at `url` without asking anyone: its
/// `tools` list at one of its audiences, or a reusable detail whose limits `args` meet.
fn grants_call(
    c: &VerifiedContract,
    url: &HttpUrl,
    tool: &str,
    args: &Map<String, Value>,
) -> Option<String> {
    if !c.methods().iter().any(|m| m == "POST") {
        return None;
    }
    if c.grants_tool(tool) && c.audiences().iter().any(|a| a.matches(url)) {
        return Some("its tools list".into());
    }
    c.details_for(url, tool)
        .find(|d| !d.single_use && d.check_arguments(args).is_ok())
        .map(|d| format!("its reusable grant {}", clip(&d.identifier)))
}

/// `POST /v1/step-up/poll`: how a filed request stands; an approved grant is installed in
/// the enclave before the answer.
pub(crate) async fn poll(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let route = "step_up_poll";
    let Ok(_permit) = st.queue.try_acquire() else {
        return api::error_response(route, &st, crate::ParentError::Overloaded);
    };
    let body: PollBody = match api::json_body(&headers, body) {
        Ok(b) => b,
        Err(p) => return api::problem_response(route, &st, p),
    };
    match poll_request(&st, body).await {
        Ok(p) => {
            api::ok(route, &st);
            Json(p).into_response()
        }
        Err(p) => api::problem_response(route, &st, p),
    }
}

async fn poll_request(st: &AppState, body: PollBody) -> Result<Polled, Problem> {
    let Some(c) = st.step_up.knows(&body.step_up) else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "stepup-unavailable",
            "no contract installed through this daemon names this stepUp",
        ));
    };
    if !is_request_id(&body.id) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-body",
            "id is not a step-up request id (22 base64url characters)",
        ));
    }
    let url = format!("{}{}", c.step_up, poll_path(&body.id));
    let a = send_signed(st, &c.step_up, "GET", &url, None).await?;
    if a.status != StatusCode::OK {
        return Err(refused(&url, &a));
    }
    let mut status: StepUpStatus = serde_json::from_slice(&a.body)
        .map_err(|e| unreachable(format!("{url}: the answer does not decode: {e}")))?;
    let grant = status.grant.take();
    if status.status != Status::Approved {
        return Ok(Polled {
            status,
            installed: None,
        });
    }
    let Some(grant) = grant else {
        return Err(unreachable(format!(
            "{url}: approved without a grant to install"
        )));
    };
    // The enclave checks owner, signature, subject and time; its refusal (a grant for
    // another key, a forged one) is the answer.
    let summary = api::install(st, grant, None)
        .await
        .map_err(|e| api::problem_of(&e))?;
    tracing::info!(id = %body.id, grant = %summary.digest, "step-up approved: grant installed");
    Ok(Polled {
        status,
        installed: Some(summary.digest),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compact_with(subject_extra: &[(&str, Value)]) -> String {
        // A contract-shaped JWS (the daemon decodes it unverified, as the enclave already
        // verified it): header.payload.signature.
        let mut subject = serde_json::json!({"audiences": ["http://127.0.0.1:9000/mcp"]});
        for (k, v) in subject_extra {
            subject[*k] = v.clone();
        }
        let payload = serde_json::json!({"credentialSubject": subject});
        let b = |v: &Value| cada_protocol::b64::encode(v.to_string());
        format!(
            "{}.{}.c2ln",
            b(&serde_json::json!({"alg": "EdDSA", "typ": "vc+jwt"})),
            b(&payload)
        )
    }

    #[test]
    fn contracts_naming_a_step_up_are_remembered_and_chosen_by_audience() {
        let s = StepUpClient::default();
        s.note_contract(&compact_with(&[]), "plain");
        assert!(s.contract_for("http://127.0.0.1:9000/mcp").is_none());
        s.note_contract(
            &compact_with(&[("stepUp", Value::from("http://localhost:8470/"))]),
            "d1",
        );
        let c = s.contract_for("http://127.0.0.1:9000/mcp").unwrap();
        assert_eq!(c.step_up, "http://localhost:8470");
        assert_eq!(c.digest, "d1");
        // Any contract naming one serves a server none covers (one owner, one service).
        assert_eq!(
            s.contract_for("https://other.example/mcp").unwrap().digest,
            "d1"
        );
        assert!(s.knows("http://localhost:8470").is_some());
        assert!(s.knows("http://localhost:8471").is_none());
        // A remote plain-http or odd stepUp is not used.
        for bad in [
            "http://approval.example",
            "ftp://localhost",
            "http://localhost:8470/?x=1",
            "not a url",
        ] {
            assert!(
                step_up_of(&compact_with(&[("stepUp", Value::from(bad))]), "x").is_none(),
                "{bad}"
            );
        }
        assert!(step_up_of("not.a.jws", "x").is_none());
    }

    /// Review stepup-1, I4: the user is sent only under the contract's `stepUp`.
    #[test]
    fn the_page_url_must_lie_under_the_step_up() {
        let id = "AAAAAAAAAAAAAAAAAAAAAA";
        for (base, page) in [
            (
                "http://localhost:8470",
                format!("http://localhost:8470/r/{id}"),
            ),
            (
                "http://localhost:8470",
                format!("HTTP://LOCALHOST:8470/r/{id}"),
            ),
            (
                "https://ok.example/approval",
                format!("https://ok.example/approval/r/{id}"),
            ),
            (
                "https://ok.example",
                format!("https://ok.example:443/r/{id}"),
            ),
        ] {
            let got = page_under(base, &page).unwrap_or_else(|e| panic!("{page}: {e}"));
            assert!(got.starts_with(&format!("{base}/")), "{got}");
        }
        for page in [
            "https://evil.example/r/x",
            "http://localhost:8471/r/x",
            "https://localhost:8470/r/x",
            "http://localhost:8470@evil.example/r/x",
            "http://user:pw@localhost:8470/r/x",
            "http://localhost:8470",
            "http://localhost:8470/",
            "javascript:alert(1)",
            "not a url",
        ] {
            assert!(page_under("http://localhost:8470", page).is_err(), "{page}");
        }
        for page in [
            "https://ok.example/approvalx/r/x",
            "https://ok.example/other/r/x",
            "https://ok.example/approval/../r/x",
            "https://ok.example/approval/%2e%2e/r/x",
            "https://ok.example/approval",
        ] {
            assert!(
                page_under("https://ok.example/approval", page).is_err(),
                "{page}"
            );
        }
        let long = format!("http://localhost:8470/r/{}", "a".repeat(2048));
        assert!(page_under("http://localhost:8470", &long).is_err());
    }

    /// Review stepup-1, finding 4: what the agent already holds is never put to the owner.
    #[test]
    fn a_call_held_by_the_tools_list_or_a_reusable_detail_is_granted() {
        use cada_contract::{AuthorizationDetail, Grant, OwnerAlg, OwnerKey, Subject};
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let agent = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK";
        let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let url = HttpUrl::parse_canonical("http://127.0.0.1:9000/mcp").unwrap();
        let other = HttpUrl::parse_canonical("http://127.0.0.1:9001/mcp").unwrap();
        let args = |v: Value| v.as_object().unwrap().clone();

        let mut g = Grant::new(
            Subject::Key(agent.into()),
            vec!["http://127.0.0.1:9000/".into()],
            vec!["POST".into()],
            now - 5,
            now + 600,
        );
        g.tools = vec!["search".into()];
        let standing = read_contract(&g.issue(&owner, now - 5).unwrap(), now).unwrap();
        assert!(grants_call(&standing, &url, "search", &Map::new()).is_some());
        assert!(grants_call(&standing, &url, "transfer", &Map::new()).is_none());
        assert!(grants_call(&standing, &other, "search", &Map::new()).is_none());
        // Expired: not held (and not read).
        assert!(read_contract(&g.issue(&owner, now - 5).unwrap(), now + 601).is_none());

        let detail = |single_use: bool| {
            let mut g = Grant::new(
                Subject::Key(agent.into()),
                vec![],
                vec!["POST".into()],
                now - 5,
                now + 600,
            );
            g.authorization_details = AuthorizationDetail::parse_draft_list(&format!(
                r#"[{{"type":"mcp_tool_call","locations":["http://127.0.0.1:9000/mcp"],
                    "tool":"transfer","arguments":{{"amount":{{"max":500}}}},
                    "single_use":{single_use},"identifier":"urn:uuid:t-{single_use}"}}]"#
            ))
            .unwrap();
            read_contract(&g.issue(&owner, now - 5).unwrap(), now).unwrap()
        };
        let reusable = detail(false);
        // Within its limits: held; beyond them (the gate's grant.arguments.max): not.
        assert!(grants_call(&reusable, &url, "transfer", &args(json!({"amount": 500}))).is_some());
        assert!(grants_call(&reusable, &url, "transfer", &args(json!({"amount": 5000}))).is_none());
        assert!(grants_call(
            &reusable,
            &url,
            "transfer",
            &args(json!({"amount": 5, "cc": "x"}))
        )
        .is_none());
        // Single use: a gate refuses its second use, so a new approval is what is needed.
        let once = detail(true);
        assert!(grants_call(&once, &url, "transfer", &args(json!({"amount": 500}))).is_none());
        // Another owner's key did not sign it: not read.
        let forged = {
            let mut parts: Vec<String> = g
                .issue(&owner, now - 5)
                .unwrap()
                .split('.')
                .map(str::to_owned)
                .collect();
            parts[2] = cada_protocol::b64::encode([0u8; 64]);
            parts.join(".")
        };
        assert!(read_contract(&forged, now).is_none());
    }

    #[test]
    fn refusals_of_the_service_keep_its_code() {
        let a = Answer {
            status: StatusCode::TOO_MANY_REQUESTS,
            body: Bytes::from(
                r#"{"type":"urn:cada:problem:stepup.rate_limited","detail":"5 pending"}"#,
            ),
        };
        let p = refused("http://localhost:8470/v1/step-up", &a);
        assert_eq!(p.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(p.code, "stepup-refused");
        assert!(
            p.detail.starts_with("stepup.rate_limited: "),
            "{}",
            p.detail
        );
        let a = Answer {
            status: StatusCode::FORBIDDEN,
            body: Bytes::from(r#"{"code":"stepup.not_owner","detail":"x\u0007y"}"#),
        };
        let p = refused("u", &a);
        assert!(p.detail.starts_with("stepup.not_owner: "), "{}", p.detail);
        assert!(!p.detail.contains('\u{7}'));
        let a = Answer {
            status: StatusCode::BAD_GATEWAY,
            body: Bytes::from("<html>"),
        };
        assert!(refused("u", &a)
            .detail
            .starts_with("stepup.unknown_refusal: "));
    }
}
