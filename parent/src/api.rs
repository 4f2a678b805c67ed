//! The agent-facing HTTP API (on a 0600 unix socket, optionally on loopback TCP behind a
//! bearer token, see [`with_bearer`]): `POST /v1/pop`, `GET /v1/evidence?nonce=`,
//! `GET /v1/identity`, `POST /v1/owner/lock`, `POST|GET /v1/contracts` (a contract or a
//! delegation chain `root~…~leaf`), `POST /v1/delegate` ([`crate::delegate`]), `POST /v1/step-up`,
//! `POST /v1/step-up/poll` ([`crate::stepup::daemon`]), `/healthz`, `/readyz`, `/metrics`. A bounded number of requests are
//! in flight; beyond it the answer is 503 with `Retry-After`, so memory stays bounded under
//! any load.
//!
//! Every error answer is an RFC 9457 problem document (`application/problem+json`, the
//! same shape as `cada-verify serve`): `{"type": "urn:cada:problem:<code>", "title",
//! "status", "detail"}`, where `<code>` is stable: `malformed-json`, `invalid-body` (400),
//! `bad-query` (400), `unauthorized` (401), `policy-denied` (403), `contract-denied` (403:
//! an owner lock or contract refused, or no live contract permits the request; the detail
//! starts with the rule's `contract.*` code), `not-found` (404),
//! `method-not-allowed` (405), `body-too-large` (413), `unsupported-media-type` (415),
//! `bad-request` (400, the enclave refused the request: bad URL or method),
//! `enclave-error` (502), `overloaded`, `enclave-unavailable`, `enclave-busy`, `not-ready`
//! (503, with `Retry-After`), `enclave-timeout` (504), `internal` (500).
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cada_contract::PublicKey;
use cada_protocol::envelope::EvidenceEnvelope;
use cada_protocol::jwk::Jwk;
use cada_protocol::wire::{
    ops, AttestRequest, AttestResponse, ContractSummary, ContractsResponse, DescribeResponse,
    ErrorCode, InstallContractRequest, LockOwnerRequest, LockOwnerResponse, SignPopRequest,
    SignPopResponse,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::auth::BearerToken;
use crate::client::EnclaveClient;
use crate::ParentError;

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// Largest `POST /v1/contracts` body: a delegation chain (at most 256 KiB) with its status
/// lists, within one enclave frame.
pub const MAX_CONTRACT_BODY: usize = 960 * 1024;
/// The `type` of every problem answer is this prefix followed by the code.
pub use cada_net::problem::PROBLEM_TYPE_PREFIX;
pub use cada_net::Problem;

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route.
    pub route: &'static str,
    /// HTTP status.
    pub status: u16,
}

/// Shared state of the API.
pub struct AppState {
    /// The enclave.
    pub client: EnclaveClient,
    /// Admission control.
    pub queue: Semaphore,
    /// Recent evidence by its `att` digest (bounded).
    evidence: Mutex<HashMap<String, String>>,
    /// Contracts installed through this daemon, by digest (`cada.dtc`), bounded.
    contracts: Mutex<HashMap<String, String>>,
    /// The STS that access tokens come from (`--sts`), if any.
    sts: Option<crate::tokens::Sts>,
    /// Step-up requests to the owner's approval service.
    pub(crate) step_up: crate::stepup::daemon::StepUpClient,
    requests: Family<RouteLabels, Counter>,
    pop_latency: Histogram,
    registry: Registry,
    conn: cada_net::ConnStats,
}

impl AppState {
    /// State with at most `max_in_flight` concurrent requests.
    pub fn new(client: EnclaveClient, max_in_flight: usize) -> Arc<Self> {
        Self::with_sts(client, max_in_flight, None)
    }

    /// State that also obtains access tokens from `sts` for `POST /v1/pop` with a
    /// `resource`.
    pub fn with_sts(
        client: EnclaveClient,
        max_in_flight: usize,
        sts: Option<crate::tokens::Sts>,
    ) -> Arc<Self> {
        let mut registry = Registry::default();
        let requests = Family::<RouteLabels, Counter>::default();
        let pop_latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "cada_parent_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "cada_parent_pop_latency_seconds",
            "time to mint one proof through the enclave",
            pop_latency.clone(),
        );
        let conn = cada_net::ConnStats::default();
        conn.register(&mut registry, "cada_parent");
        Arc::new(AppState {
            conn,
            client,
            queue: Semaphore::new(max_in_flight),
            evidence: Mutex::new(HashMap::new()),
            contracts: Mutex::new(HashMap::new()),
            sts,
            step_up: crate::stepup::daemon::StepUpClient::default(),
            requests,
            pop_latency,
            registry,
        })
    }
}

impl AppState {
    /// The compact contract of digest `dtc`, if this daemon installed it.
    pub fn contract(&self, dtc: &str) -> Option<String> {
        self.contracts.lock().ok().and_then(|m| m.get(dtc).cloned())
    }

    /// The compact contracts installed through this daemon (what step-up checks an
    /// upstream's refusal against: [`crate::stepup::daemon`]).
    pub(crate) fn installed_contracts(&self) -> Vec<(String, String)> {
        self.contracts.lock().map_or_else(
            |_| Vec::new(),
            |m| m.iter().map(|(d, c)| (d.clone(), c.clone())).collect(),
        )
    }

    /// The connection counters every listener updates (registered in `/metrics`).
    pub fn conn_stats(&self) -> cada_net::ConnStats {
        self.conn.clone()
    }

    /// The step-up client (which roots it trusts for approval services:
    /// [`crate::stepup::daemon::StepUpClient::set_roots`]).
    pub fn step_up(&self) -> &crate::stepup::daemon::StepUpClient {
        &self.step_up
    }
}

/// The answer for an error of the enclave client.
pub fn problem_of(e: &ParentError) -> Problem {
    let (status, code) = match e {
        ParentError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        ParentError::EnclaveUnavailable(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "enclave-unavailable")
        }
        ParentError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "enclave-timeout"),
        ParentError::Enclave {
            code: ErrorCode::PolicyDenied,
            ..
        } => (StatusCode::FORBIDDEN, "policy-denied"),
        ParentError::Enclave {
            code: ErrorCode::ContractDenied,
            ..
        } => (StatusCode::FORBIDDEN, "contract-denied"),
        ParentError::Enclave {
            code: ErrorCode::SecretDenied,
            ..
        } => (StatusCode::FORBIDDEN, "secret-denied"),
        ParentError::Enclave {
            code: ErrorCode::BadRequest,
            ..
        } => (StatusCode::BAD_REQUEST, "bad-request"),
        ParentError::Enclave {
            code: ErrorCode::Busy,
            ..
        } => (StatusCode::SERVICE_UNAVAILABLE, "enclave-busy"),
        ParentError::Config(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        ParentError::Sts { .. } => (StatusCode::FORBIDDEN, "sts-refused"),
        ParentError::StsUnavailable(_) => (StatusCode::BAD_GATEWAY, "sts-unavailable"),
        _ => (StatusCode::BAD_GATEWAY, "enclave-error"),
    };
    if let ParentError::Enclave {
        code: ErrorCode::ContractDenied | ErrorCode::SecretDenied,
        message,
    } = e
    {
        // The enclave's message starts with the rule's stable code (`contract.*`).
        return Problem::new(status, code, message.clone());
    }
    Problem::new(status, code, e.to_string())
}

fn count(route: &'static str, st: &AppState, status: StatusCode) {
    st.requests
        .get_or_create(&RouteLabels {
            route,
            status: status.as_u16(),
        })
        .inc();
}

pub(crate) fn problem_response(route: &'static str, st: &AppState, p: Problem) -> Response {
    count(route, st, p.status);
    p.into_response()
}

pub(crate) fn error_response(route: &'static str, st: &AppState, e: ParentError) -> Response {
    problem_response(route, st, problem_of(&e))
}

pub(crate) fn ok(route: &'static str, st: &AppState) {
    count(route, st, StatusCode::OK);
}

/// Decodes a JSON body: `application/json`, within [`MAX_BODY`], well-formed, of the shape
/// `T` (unknown members refused where `T` says so).
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Problem> {
    cada_net::require_json(headers)?;
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                format!("bodies are limited to {MAX_BODY} bytes"),
            ))
        }
        Err(e) => {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed-json",
                format!("the body could not be read: {}", e.body_text()),
            ))
        }
    };
    serde_json::from_slice(&body).map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-body",
                format!("the JSON body does not have the expected shape: {e}"),
            )
        } else {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed-json",
                format!("the body is not JSON: {e}"),
            )
        }
    })
}

/// `POST /v1/pop` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopBody {
    /// HTTP method of the request to prove.
    pub method: String,
    /// Its absolute URL.
    pub url: String,
    /// Access token the request will carry.
    #[serde(default)]
    pub access_token: Option<String>,
    /// DPoP nonce the server demanded.
    #[serde(default)]
    pub nonce: Option<String>,
    /// Context digests.
    #[serde(default)]
    pub ctx: BTreeMap<String, String>,
    /// Also return the evidence (`CADA-Evidence` value) binding the key, and the trust
    /// contract the proof names (`CADA-Contract` value), for a server that has not seen them.
    #[serde(default)]
    pub with_evidence: bool,
    /// The resource (RFC 8707) the request goes to, when it needs an access token from the
    /// daemon's STS (`--sts`): the daemon obtains one just in time (or reuses the one it
    /// holds), the proof carries its `ath`, and the answer its `Authorization` value.
    #[serde(default)]
    pub resource: Option<String>,
    /// Scopes for that token, space-separated (default: all the contract grants).
    #[serde(default)]
    pub scope: Option<String>,
    /// The RFC 9396 `authorization_details` (a JSON array, sent exactly as written) that
    /// token asks for, with `resource`: a token for exactly that transaction, e.g. narrower
    /// than the owner's grant. Without it the daemon asks for the detail of the grant that
    /// alone covers the request's `tools/call`s, if any (`crate::tokens`).
    #[serde(default)]
    pub authorization_details: Option<Box<serde_json::value::RawValue>>,
    /// base64url SHA-256 of the request body: the proof binds it (`cada.bd`).
    #[serde(default)]
    pub bd: Option<String>,
    /// The MCP calls of that body: the enclave checks each tool against the contract and
    /// the proof names them (`cada.mcp`).
    #[serde(default)]
    pub mcp: Vec<cada_protocol::mcp::McpCall>,
    /// The task the request is part of (chain of custody): signed as `cada.task`; 1 to 128
    /// bytes of `[A-Za-z0-9._:-]`, else refused `trace.task`.
    #[serde(default)]
    pub task: Option<String>,
    /// The request's W3C `traceparent` (version 00): signed as `cada.tp`; else refused
    /// `trace.traceparent`.
    #[serde(default)]
    pub traceparent: Option<String>,
}

/// What a `resource` must be, for people: said wherever one is refused.
pub const RESOURCE_HINT: &str = "name the resource as its server publishes it, an absolute \
    http(s) URL in normal form without query, e.g. https://api.example.com/v1 (a whole origin \
    is https://api.example.com/ or https://api.example.com)";

/// `POST /v1/pop` answer.
#[derive(Serialize, Deserialize)]
pub struct PopAnswer {
    /// The `DPoP` header value.
    pub dpop: String,
    /// The `CADA-Evidence` header value, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// `cada.dtc` of the proof: the trust contract that authorized it (locked enclaves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtc: Option<String>,
    /// The `CADA-Contract` header value (the compact contract `dtc` names), with
    /// `with_evidence`, when this daemon installed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<String>,
    /// The `Authorization` header value (`DPoP <access token>`), when a `resource` was
    /// asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<String>,
    /// Seconds the access token has left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires_in: Option<u64>,
}

pub(crate) async fn evidence_for(st: &AppState, att: &str) -> Result<String, ParentError> {
    if let Some(e) = st.evidence.lock().ok().and_then(|m| m.get(att).cloned()) {
        return Ok(e);
    }
    let (digest, header) = latest_evidence(st).await?;
    if digest == att {
        Ok(header)
    } else {
        Err(ParentError::Protocol(
            "evidence changed while signing; retry".into(),
        ))
    }
}

async fn pop(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(_permit) = st.queue.try_acquire() else {
        return error_response("pop", &st, ParentError::Overloaded);
    };
    let body: PopBody = match json_body(&headers, body) {
        Ok(b) => b,
        Err(p) => return problem_response("pop", &st, p),
    };
    if let Err(e) =
        cada_protocol::trace::check_pair(body.task.as_deref(), body.traceparent.as_deref())
    {
        return problem_response(
            "pop",
            &st,
            Problem::new(StatusCode::BAD_REQUEST, e.code(), e.to_string()),
        );
    }
    let start = Instant::now();
    let sts = match body.resource.as_deref() {
        None => None,
        Some(resource) => {
            let Some(sts) = &st.sts else {
                return problem_response(
                    "pop",
                    &st,
                    Problem::new(
                        StatusCode::BAD_REQUEST,
                        "no-sts",
                        "`resource` asks for an access token, but this daemon has no STS: \
                         start it with --sts <issuer URL>",
                    ),
                );
            };
            if body.access_token.is_some() {
                return problem_response(
                    "pop",
                    &st,
                    Problem::new(
                        StatusCode::BAD_REQUEST,
                        "bad-request",
                        "give either access_token or resource, not both",
                    ),
                );
            }
            // One rule for a whole origin, as for audiences: `https://host` and
            // `https://host/` both name it, and the STS is asked for the normal form (which
            // the token's `aud` says); anything else must already be in normal form.
            let resource = match cada_protocol::url::UrlPrefix::parse(resource) {
                Ok(p) => p.as_str().to_owned(),
                Err(e) => {
                    return problem_response(
                        "pop",
                        &st,
                        Problem::new(
                            StatusCode::BAD_REQUEST,
                            "bad-request",
                            format!("resource: {e}: {RESOURCE_HINT}"),
                        ),
                    )
                }
            };
            Some((sts, resource))
        }
    };
    let details = match (&body.authorization_details, &sts) {
        (None, _) => None,
        (Some(_), None) => {
            return problem_response(
                "pop",
                &st,
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    "authorization_details are asked of the STS for a token: give `resource` \
                     too",
                ),
            )
        }
        (Some(d), Some(_)) => {
            let text = d.get();
            if text.len() > cada_protocol::wire::TokenExchange::MAX_AUTHORIZATION_DETAILS_LEN
                || !text.starts_with('[')
            {
                return problem_response(
                    "pop",
                    &st,
                    Problem::new(
                        StatusCode::BAD_REQUEST,
                        "bad-request",
                        format!(
                            "authorization_details is a JSON array (RFC 9396) of at most {} \
                             bytes",
                            cada_protocol::wire::TokenExchange::MAX_AUTHORIZATION_DETAILS_LEN
                        ),
                    ),
                );
            }
            Some(crate::tokens::DetailsAsk::explicit(text))
        }
    };
    let req = SignPopRequest {
        htm: body.method,
        htu: body.url,
        access_token: body.access_token,
        nonce: body.nonce,
        ctx: body.ctx,
        bd: body.bd,
        mcp: body.mcp,
        exchange: None,
        task: body.task,
        traceparent: body.traceparent,
    };
    // With a resource, the token and the proof come from one enclave key (tokens.rs).
    let signed = match sts {
        Some((sts, resource)) => {
            let scope = body.scope.as_deref().unwrap_or("");
            sts.sign(&st, &resource, scope, details, req)
                .await
                .map(|(s, t)| (s, Some(t)))
        }
        None => st
            .client
            .call::<_, SignPopResponse>(ops::SIGN_POP, &req)
            .await
            .map(|s| (s, None)),
    };
    let (signed, token) = match signed {
        Ok(s) => s,
        Err(e) => return error_response("pop", &st, e),
    };
    let evidence = if body.with_evidence {
        match evidence_for(&st, &signed.att).await {
            Ok(e) => Some(e),
            Err(e) => return error_response("pop", &st, e),
        }
    } else {
        None
    };
    st.pop_latency.observe(start.elapsed().as_secs_f64());
    ok("pop", &st);
    let contract = match (&signed.dtc, body.with_evidence) {
        (Some(d), true) => st.contracts.lock().ok().and_then(|m| m.get(d).cloned()),
        _ => None,
    };
    let answer = PopAnswer {
        dpop: signed.dpop,
        evidence,
        dtc: signed.dtc,
        contract,
        authorization: token.as_ref().map(|t| format!("DPoP {}", t.value)),
        token_expires_in: token.as_ref().map(|t| {
            t.exp.saturating_sub(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            )
        }),
    };
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        pop_answer_json(&answer),
    )
        .into_response()
}

/// `answer` as JSON, byte for byte what serde_json writes. Its strings are compact JWSs,
/// base64url digests and `DPoP <token>`, with nothing to escape: they are copied as they are
/// into a buffer of the right size (serde_json looks at every byte for escapes and grows its
/// buffer several times, about a sixth of the daemon's instructions per proof). Should any
/// string need escaping, serde_json writes the whole answer.
fn pop_answer_json(answer: &PopAnswer) -> Vec<u8> {
    /// Printable ASCII other than a quote and a backslash: JSON as it is. No early exit, so the
    /// check runs over whole words.
    fn plain(s: &str) -> bool {
        s.bytes().fold(true, |ok, b| {
            ok & (0x20..0x7f).contains(&b) & (b != b'"') & (b != b'\\')
        })
    }
    let strings = [
        ("dpop", Some(&answer.dpop)),
        ("evidence", answer.evidence.as_ref()),
        ("dtc", answer.dtc.as_ref()),
        ("contract", answer.contract.as_ref()),
        ("authorization", answer.authorization.as_ref()),
    ];
    if !strings.iter().all(|(_, v)| v.is_none_or(|v| plain(v))) {
        return serde_json::to_vec(answer).unwrap_or_default();
    }
    let len: usize = strings
        .iter()
        .map(|(k, v)| v.map_or(0, |v| k.len() + v.len() + 6))
        .sum();
    let mut out = Vec::with_capacity(len + 48);
    out.push(b'{');
    for (k, v) in strings {
        if let Some(v) = v {
            if out.len() > 1 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"\":\"");
            out.extend_from_slice(v.as_bytes());
            out.push(b'"');
        }
    }
    if let Some(n) = answer.token_expires_in {
        out.extend_from_slice(format!(",\"token_expires_in\":{n}").as_bytes());
    }
    out.push(b'}');
    out
}

/// `POST /v1/owner/lock` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LockBody {
    lock: String,
}

/// `POST /v1/owner/lock`: relays an owner-signed lock (`cada-owner lock`). The enclave
/// locks itself to that owner once; the answer carries the new evidence, whose key binding
/// names the owner.
async fn owner_lock(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(_permit) = st.queue.try_acquire() else {
        return error_response("owner_lock", &st, ParentError::Overloaded);
    };
    let body: LockBody = match json_body(&headers, body) {
        Ok(b) => b,
        Err(p) => return problem_response("owner_lock", &st, p),
    };
    let r: LockOwnerResponse = match st
        .client
        .call(ops::LOCK_OWNER, &LockOwnerRequest { lock: body.lock })
        .await
    {
        Ok(r) => r,
        Err(e) => return error_response("owner_lock", &st, e),
    };
    match EvidenceEnvelope::from_cbor(&r.envelope) {
        Ok(env) => {
            ok("owner_lock", &st);
            Json(serde_json::json!({
                "owner": r.owner, "att": env.att_digest(), "evidence": env.to_header(),
            }))
            .into_response()
        }
        Err(e) => error_response("owner_lock", &st, ParentError::Protocol(e.to_string())),
    }
}

/// `POST /v1/contracts` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContractBody {
    contract: String,
    #[serde(default)]
    status_list: Option<String>,
    /// More status lists, for a chain whose links name other lists (issue 24).
    #[serde(default)]
    status_lists: Vec<String>,
}

/// `POST /v1/contracts`: installs an owner's trust contract (and its status list) in the
/// enclave, which checks owner, signature, subject, validity and status itself.
async fn install_contract(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(_permit) = st.queue.try_acquire() else {
        return error_response("contracts", &st, ParentError::Overloaded);
    };
    let body: ContractBody = match json_body(&headers, body) {
        Ok(b) => b,
        Err(p) => return problem_response("contracts", &st, p),
    };
    match install_with_lists(&st, body.contract, body.status_list, body.status_lists).await {
        Ok(r) => {
            ok("contracts", &st);
            Json(r).into_response()
        }
        Err(e) => error_response("contracts", &st, e),
    }
}

/// Installs `contract` (and `status_list`) in the enclave, which checks it; remembers it to
/// send with proofs, and its `stepUp` when it names one.
pub(crate) async fn install(
    st: &AppState,
    contract: String,
    status_list: Option<String>,
) -> Result<ContractSummary, ParentError> {
    install_with_lists(st, contract, status_list, Vec::new()).await
}

/// [`install`] of a contract or a delegation chain (`root~…~leaf`, issue 24) with more
/// status lists: a chain is kept under its leaf's digest (what proofs name as `cada.dtc`),
/// so that every `CADA-Contract` and STS exchange of this daemon sends the whole chain.
pub(crate) async fn install_with_lists(
    st: &AppState,
    contract: String,
    status_list: Option<String>,
    status_lists: Vec<String>,
) -> Result<ContractSummary, ParentError> {
    let req = InstallContractRequest {
        contract,
        status_list,
        status_lists,
    };
    let r = st
        .client
        .call::<_, ContractSummary>(ops::INSTALL_CONTRACT, &req)
        .await?;
    // Kept so that proofs can carry it to servers that have not seen it; the enclave
    // checked it, and the digest it answers is of exactly these bytes (a chain's leaf).
    let leaf = req.contract.rsplit('~').next().unwrap_or_default();
    if cada_contract::digest_of(leaf) == r.digest {
        st.step_up.note_contract(&req.contract, &r.digest);
        if let Some(sts) = &st.sts {
            sts.note_contract(&req.contract);
        }
        if let Ok(mut m) = st.contracts.lock() {
            if m.len() >= 64 {
                m.clear();
            }
            m.insert(r.digest.clone(), req.contract);
        }
    }
    Ok(r)
}

/// `GET /v1/contracts`: the owner, the installed contracts and the latest authority events
/// of the enclave's hash chain.
async fn contracts(State(st): State<Arc<AppState>>) -> Response {
    let Ok(_permit) = st.queue.try_acquire() else {
        return error_response("contracts", &st, ParentError::Overloaded);
    };
    match st
        .client
        .call::<_, ContractsResponse>(ops::CONTRACTS, &serde_json::Value::Null)
        .await
    {
        Ok(r) => {
            ok("contracts", &st);
            Json(r).into_response()
        }
        Err(e) => error_response("contracts", &st, e),
    }
}

#[derive(Deserialize)]
struct NonceQuery {
    nonce: Option<String>,
}

async fn evidence(
    State(st): State<Arc<AppState>>,
    q: Result<Query<NonceQuery>, QueryRejection>,
) -> Response {
    let Ok(_permit) = st.queue.try_acquire() else {
        return error_response("evidence", &st, ParentError::Overloaded);
    };
    let bad_query = |detail: String| Problem::new(StatusCode::BAD_REQUEST, "bad-query", detail);
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return problem_response("evidence", &st, bad_query(e.body_text())),
    };
    let nonce = match q.nonce.as_deref().map(hex::decode).transpose() {
        Ok(n) => n.unwrap_or_default(),
        Err(_) => {
            return problem_response(
                "evidence",
                &st,
                bad_query("nonce must be hex (at most 512 bytes)".into()),
            )
        }
    };
    match st
        .client
        .call::<_, AttestResponse>(ops::ATTEST, &AttestRequest { nonce })
        .await
    {
        Ok(r) => match EvidenceEnvelope::from_cbor(&r.envelope) {
            Ok(env) => {
                ok("evidence", &st);
                Json(serde_json::json!({
                    "platform": env.platform,
                    "att": env.att_digest(),
                    "evidence": env.to_header(),
                }))
                .into_response()
            }
            Err(e) => error_response("evidence", &st, ParentError::Protocol(e.to_string())),
        },
        Err(e) => error_response("evidence", &st, e),
    }
}

/// `GET /v1/identity`: who the enclave's signing key is.
///
/// The answer keeps its original fields — `platform`, `did` (the key's `did:key`), `jkt`
/// (RFC 7638 thumbprint), `jwk`, `measurements`, `signatures` — and adds:
///
/// * `did_document`: the DID document of `did` exactly as the did:key method resolves it
///   (one `Multikey` verification method, used for `authentication` and
///   `assertionMethod`), so it equals what `cada-verify did resolve <did>` prints. It is
///   checked here against `jwk` before it is returned.
/// * `evidence`: the enclave's latest evidence linked to that key, as a top-level field
///   `{"att": <digest>, "platform": …, "value": <CADA-Evidence header>, "href":
///   "/v1/evidence"}`. It is *not* a `service` entry of the DID document: a did:key document
///   is fully determined by the key, and adding a service would make ours differ from every
///   other resolver's. The evidence's key binding names the same key (`jkt`), which is what
///   a verifier checks (`cada-verify evidence`); `href` gets fresh evidence for a nonce.
/// * `owner`: the owner DID the enclave is locked to (also in the evidence's key binding),
///   or null; `contracts`: the installed trust contracts (`href`: `/v1/contracts`).
async fn identity(State(st): State<Arc<AppState>>) -> Response {
    let Ok(_permit) = st.queue.try_acquire() else {
        return error_response("identity", &st, ParentError::Overloaded);
    };
    let d = match st
        .client
        .call::<_, DescribeResponse>(ops::DESCRIBE, &serde_json::Value::Null)
        .await
    {
        Ok(d) => d,
        Err(e) => return error_response("identity", &st, e),
    };
    let jwk: Jwk = match serde_json::from_str(&d.jwk) {
        Ok(j) => j,
        Err(e) => {
            let e = ParentError::Protocol(format!("the enclave's jwk is not a public JWK: {e}"));
            return error_response("identity", &st, e);
        }
    };
    let did_document = match did_document(&d.did, &jwk) {
        Ok(doc) => doc,
        Err(e) => return error_response("identity", &st, e),
    };
    let (att, evidence) = match latest_evidence(&st).await {
        Ok(e) => e,
        Err(e) => return error_response("identity", &st, e),
    };
    let authority = match st
        .client
        .call::<_, ContractsResponse>(ops::CONTRACTS, &serde_json::Value::Null)
        .await
    {
        Ok(c) => c,
        Err(e) => return error_response("identity", &st, e),
    };
    ok("identity", &st);
    Json(serde_json::json!({
        "platform": d.platform, "did": d.did, "jkt": d.jkt, "jwk": jwk,
        "measurements": d.measurements, "signatures": d.seq,
        "did_document": did_document,
        // The HPKE key owners seal secrets to (bound in the evidence beside the signing
        // key); on a platform whose keys live in host memory (sim), secrets are refused
        // unless the enclave runs with --dev-secrets, and this says so.
        "hpke": d.hpke.as_ref().map(|k| serde_json::json!({ "key": k, "suite": "HPKE-4" })),
        "secrets": {
            "keys_in_host_memory": d.keys_in_host_memory,
            "dev_secrets": d.dev_secrets,
            "accepted": !d.keys_in_host_memory || d.dev_secrets,
        },
        "evidence": {
            "att": att, "platform": d.platform, "value": evidence, "href": "/v1/evidence",
        },
        "owner": authority.owner,
        "contracts": {
            "installed": authority.contracts, "href": "/v1/contracts",
        },
    }))
    .into_response()
}

/// The did:key document of the enclave's key, after checking that `did` is the did:key of
/// `jwk` (the enclave reports both; a mismatch is a protocol error, never papered over).
fn did_document(did: &str, jwk: &Jwk) -> Result<serde_json::Value, ParentError> {
    let bad = |what: &str, e: cada_contract::ContractError| {
        ParentError::Protocol(format!("the enclave's {what} is not usable: {e}"))
    };
    let from_did = PublicKey::from_did_key(did).map_err(|e| bad("did", e))?;
    let from_jwk = PublicKey::from_jwk(jwk).map_err(|e| bad("jwk", e))?;
    if from_did != from_jwk {
        return Err(ParentError::Protocol(
            "the enclave's did and jwk name different keys".into(),
        ));
    }
    Ok(from_did.did_key_document())
}

/// The enclave's current evidence (`att` digest, `CADA-Evidence` header), remembered by
/// digest like the evidence `POST /v1/pop` returns. An empty nonce makes no new evidence.
async fn latest_evidence(st: &AppState) -> Result<(String, String), ParentError> {
    let r: AttestResponse = st
        .client
        .call(ops::ATTEST, &AttestRequest { nonce: vec![] })
        .await?;
    let env = EvidenceEnvelope::from_cbor(&r.envelope)
        .map_err(|e| ParentError::Protocol(e.to_string()))?;
    let digest = env.att_digest();
    let header = env.to_header();
    if let Ok(mut m) = st.evidence.lock() {
        if m.len() >= 16 {
            m.clear();
        }
        m.insert(digest.clone(), header.clone());
    }
    Ok((digest, header))
}

async fn ready(State(st): State<Arc<AppState>>) -> Response {
    match st
        .client
        .call::<_, DescribeResponse>(ops::DESCRIBE, &serde_json::Value::Null)
        .await
    {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            format!("not ready: {e}"),
        )
        .into_response(),
    }
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &st.registry).is_err() {
        return Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "metrics could not be encoded",
        )
        .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// The router's own 404: a problem document naming the endpoints.
async fn not_found() -> Response {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "no such endpoint (POST /v1/pop, GET /v1/evidence, GET /v1/identity, \
         POST /v1/owner/lock, POST|GET /v1/contracts, POST /v1/delegate, POST /v1/step-up, \
         POST /v1/step-up/poll, POST /v1/secrets/install, \
         POST /v1/secrets/call, POST /v1/open, /healthz, /readyz, /metrics)",
    )
    .into_response()
}

/// The router's own 405: a problem document; the router adds the `Allow` header (the
/// methods the endpoint takes).
async fn method_not_allowed(method: axum::http::Method) -> Response {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!(
            "this endpoint does not take {method}; its Allow header lists the methods it takes"
        ),
    )
    .into_response()
}

/// The router (no authentication: for the 0600 unix socket; wrap it with [`with_bearer`]
/// for any TCP listener).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/pop", post(pop))
        .route("/v1/evidence", get(evidence))
        .route("/v1/identity", get(identity))
        .route("/v1/owner/lock", post(owner_lock))
        .route(
            "/v1/contracts",
            post(install_contract)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_CONTRACT_BODY))
                .get(contracts),
        )
        .route("/v1/delegate", post(crate::delegate::delegate))
        .route("/v1/step-up", post(crate::stepup::daemon::file))
        .route("/v1/step-up/poll", post(crate::stepup::daemon::poll))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        // Every error answer is a problem document: the handlers write their own, and the
        // router's 404 and 405 come from these (not from a middleware that would box every
        // request's future to look at every answer).
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// `router` behind `Authorization: Bearer <token>`: any other request (no header, another
/// scheme, a wrong token) gets 401 `unauthorized` with `WWW-Authenticate: Bearer` before
/// any route runs or any body is read. The token is compared in constant time.
pub fn with_bearer(router: Router, token: Arc<BearerToken>) -> Router {
    router.layer(axum::middleware::from_fn_with_state(token, require_bearer))
}

async fn require_bearer(
    State(token): State<Arc<BearerToken>>,
    req: Request,
    next: Next,
) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, credentials) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| credentials.trim())
        });
    match presented {
        Some(t) if token.matches(t) => next.run(req).await,
        other => {
            let (detail, challenge) = match other {
                None => (
                    "this listener needs Authorization: Bearer <the token in --auth-token-file>",
                    r#"Bearer realm="cada-parent""#,
                ),
                Some(_) => (
                    "the bearer token is not the one in --auth-token-file",
                    r#"Bearer realm="cada-parent", error="invalid_token""#,
                ),
            };
            let mut r =
                Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail).into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(dpop: &str) -> PopAnswer {
        PopAnswer {
            dpop: dpop.into(),
            evidence: None,
            dtc: None,
            contract: None,
            authorization: None,
            token_expires_in: None,
        }
    }

    /// The copied-as-is JSON of a proof's answer is serde_json's, byte for byte, for every
    /// field combination, and strings that need escaping go through serde_json.
    #[test]
    fn the_answer_is_written_exactly_as_serde_json_writes_it() {
        let jws = "eyJ0eXAiOiJkcG9wK2p3dCJ9.eyJqdGkiOiJ4In0.c2ln-_";
        let mut cases = vec![answer(jws), answer(""), answer("a\"b"), answer("a\\b")];
        cases.push(answer("line\nbreak"));
        cases.push(answer("del\u{7f}é"));
        let mut full = answer(jws);
        full.evidence = Some("ZXZpZGVuY2U".into());
        full.dtc = Some("c1fe3vn7bL0Nv6jIkAWt1MWd5mP9w59xwBnpneEWUmw".into());
        full.contract = Some("a.b.c".into());
        full.authorization = Some(format!("DPoP {jws}"));
        full.token_expires_in = Some(299);
        cases.push(full);
        let mut some = answer(jws);
        some.authorization = Some("DPoP \"quoted\"".into());
        some.token_expires_in = Some(0);
        cases.push(some);
        for a in &cases {
            let ours = pop_answer_json(a);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(a).unwrap()
            );
        }
    }
}
