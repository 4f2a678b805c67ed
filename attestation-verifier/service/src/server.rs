//! `cada-verify serve`: the HTTP verification endpoint, a thin adapter over the library's
//! one decision ([`cada_attestation_verifier::Verifier`]).
//!
//! Answers: `POST /v1/pop/verify` (RFC 7662-shaped), `POST /v1/evidence/verify`,
//! `GET /v1/nonce`, `/metrics`, `/healthz`, `/readyz`. Every answer that is not an
//! acceptance is an error status with an RFC 9457 problem document naming the rule
//! (`code`): 400 malformed request (JSON, evidence encoding, request URL, evidence of the
//! other platform's format, a `body` that is not JSON-RPC `request.jsonrpc` or that
//! `body_digest` contradicts `request.body_digest`); 401 a proof or evidence refused
//! (among them `pop.calls_required`: where contracts or tokens govern MCP calls, the
//! request's `body` was not sent and the proof does not name the calls of the body whose
//! `body_digest` was sent), with
//! `WWW-Authenticate: DPoP error="invalid_dpop_proof" | "use_attestation" | "use_dpop_nonce",
//! error_description="…"`; 403 the key's measurements are not allowed for the URL; 413 body
//! too large; 415 not `application/json`, or the MCP request's `content_type` /
//! `content_encoding` passed on are not the gate's (`mcp.content_type`,
//! `mcp.content_encoding`: the body must be read as UTF-8 JSON, uncompressed); 429
//! per-client rate exceeded; 503 overloaded,
//! replay store or audit log unavailable (nothing is accepted then: fail closed).
//! Owners: `GET /v1/contracts/{dtc}/suspension` (the suspension in force and its id),
//! `POST /v1/contracts/reinstate` (404 not suspended, 409 `contract.reinstate.replayed` or
//! `contract.reinstate.other_suspension`, 403 not the owner's or not valid).
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cada_attestation_verifier::calls;
use cada_attestation_verifier::decide::{Admission, Decision, Refusal, Request, RequestBody};
use cada_attestation_verifier::{UnixTime, VerifyError};
use cada_audit::AuditRecord;
use cada_net::Problem;
use cada_pipeline::{measurement_digest, AppState, Busy, OfDecision};
use cada_protocol::envelope::EvidenceEnvelope;
use serde::Deserialize;
use serde_json::json;

// A delegation chain travels in `/v1/pop/verify`'s body and, at the gate, in the
// `CADA-Contract` header: both give it the room the format allows.
const _: () = assert!(cada_net::CHAIN_HEADER_BYTES == cada_contract::delegation::MAX_CHAIN_LEN);

/// The largest body of `endpoint`: `--max-body`, and for `POST /v1/pop/verify` (whose
/// `contract` may be a delegation chain) that much beside the largest chain the format
/// accepts (`MAX_CHAIN_LEN`, 256 KiB), so that `--max-body` bounds the rest of the request.
pub fn body_limit(max_body: usize, endpoint: &str) -> usize {
    if endpoint == "pop" {
        max_body.saturating_add(cada_contract::delegation::MAX_CHAIN_LEN)
    } else {
        max_body
    }
}

fn problem(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Response {
    Problem::new(status, code, detail).into_response()
}

/// Admission (in-flight limit, per-client rate), content type and JSON decoding shared by
/// the POST endpoints. The permit is held until the answer is built.
fn admit<'a, T: serde::de::DeserializeOwned>(
    st: &'a AppState,
    endpoint: &'static str,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(tokio::sync::SemaphorePermit<'a>, T), Problem> {
    let fail = |p: Problem| {
        st.count_request(endpoint, p.status.as_u16());
        p
    };
    let permit = match st.try_admit(peer.ip()) {
        Ok(p) => p,
        Err(Busy::Overloaded) => {
            return Err(fail(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many verifications in flight",
            )))
        }
        Err(Busy::RateLimited) => {
            return Err(fail(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "too many requests from this client",
            )))
        }
    };
    cada_net::require_json(headers).map_err(fail)?;
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(fail(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                format!(
                    "bodies are limited to {} bytes here",
                    body_limit(st.max_body(), endpoint)
                ),
            )))
        }
        Err(e) => {
            return Err(fail(Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-body",
                e.body_text(),
            )))
        }
    };
    serde_json::from_slice(&body)
        .map(|b| (permit, b))
        .map_err(|e| {
            fail(Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed-json",
                e.to_string(),
            ))
        })
}

fn decode_evidence(text: &str) -> Result<EvidenceEnvelope, Problem> {
    EvidenceEnvelope::from_header(text).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-evidence",
            format!("evidence does not decode: {e}"),
        )
    })
}

/// `POST /v1/pop/verify` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PopBody {
    dpop: String,
    method: String,
    url: String,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    evidence: Option<String>,
    /// The `CADA-Contract` header value (compact trust contract), once per server.
    #[serde(default)]
    contract: Option<String>,
    /// base64url SHA-256 of the request's body, to check the proof's `cada.bd` (rule 6;
    /// needed when the policy says `require_body_digest`). Where calls are governed and
    /// `body` is not sent, the proof must name the body's calls (`cada.mcp`) and digest.
    #[serde(default)]
    body_digest: Option<String>,
    /// The request's body, exactly as received (an MCP JSON-RPC message or batch; `""` for
    /// none): its digest is checked against `cada.bd` and its calls against `cada.mcp` and,
    /// where calls are governed, against the contract or token (rules 6 and 13).
    #[serde(default)]
    body: Option<String>,
    /// `false`: the resource server is not an MCP server and runs no JSON-RPC calls from
    /// this body (a REST API): the body (or its digest) is checked against `cada.bd`, but
    /// not read as JSON-RPC, and the proof need not name calls. Default `true`.
    #[serde(default = "yes")]
    mcp: bool,
    /// The request's `Content-Type` header (a string, or a list when it came several
    /// times), as received: held to the gate's rule (`cada_protocol::mcp::headers`: exactly
    /// one, `application/json`, no parameter but `charset=utf-8`; 415 `mcp.content_type`) so
    /// that the server reads the JSON the proof was checked on. Without it, the server must
    /// itself read the body as UTF-8 JSON. Not checked with `mcp: false`.
    #[serde(default)]
    content_type: Option<HeaderValues>,
    /// The request's `Content-Encoding` header, as received: absent or `identity` (415
    /// `mcp.content_encoding`). Not checked with `mcp: false`.
    #[serde(default)]
    content_encoding: Option<HeaderValues>,
}

/// A header's value, or its values when it came several times.
#[derive(Deserialize)]
#[serde(untagged)]
enum HeaderValues {
    One(String),
    Many(Vec<String>),
}

impl HeaderValues {
    fn bytes(&self) -> Vec<&[u8]> {
        match self {
            HeaderValues::One(v) => vec![v.as_bytes()],
            HeaderValues::Many(v) => v.iter().map(String::as_bytes).collect(),
        }
    }
}

/// The body headers the resource server passed on, by the gate's rule: a body read as
/// JSON-RPC must be `application/json` in UTF-8, uncompressed.
fn body_headers(b: &PopBody) -> Result<(), Problem> {
    use cada_protocol::mcp::headers;
    let fail = |e: cada_protocol::ProtocolError| {
        let status =
            StatusCode::from_u16(headers::http_status(&e)).unwrap_or(StatusCode::BAD_REQUEST);
        Problem::new(status, e.code(), e.to_string())
    };
    if !b.mcp {
        return Ok(());
    }
    if let Some(e) = &b.content_encoding {
        headers::check_content_encoding(e.bytes()).map_err(fail)?;
    }
    if let Some(t) = &b.content_type {
        headers::check_content_type(t.bytes()).map_err(fail)?;
    }
    Ok(())
}

fn yes() -> bool {
    true
}

/// What the resource server says of the request's body: the body itself (its digest and
/// its MCP calls, read with the gate's parser), or only its digest; both must agree. A
/// server that declares `mcp: false` runs no calls from the body: it has none.
fn request_body(b: &PopBody) -> Result<Option<RequestBody>, Problem> {
    if !b.mcp {
        let digest = match (b.body.as_deref(), b.body_digest.as_deref()) {
            (Some(text), d) => {
                let digest = cada_protocol::mcp::body_digest(text.as_bytes());
                if d.is_some_and(|d| d != digest) {
                    return Err(Problem::new(
                        StatusCode::BAD_REQUEST,
                        "request.body_digest",
                        "body_digest is not the SHA-256 of body: send one of them, or both for \
                         the same bytes",
                    ));
                }
                digest
            }
            (None, Some(d)) => d.to_owned(),
            (None, None) => cada_protocol::mcp::body_digest(b""),
        };
        return Ok(Some(RequestBody {
            digest,
            calls: Some(Vec::new()),
            tool_arguments: Some(Vec::new()),
        }));
    }
    let Some(text) = b.body.as_deref() else {
        return Ok(b.body_digest.clone().map(|digest| RequestBody {
            digest,
            calls: None,
            tool_arguments: None,
        }));
    };
    let read = calls::read_body(text.as_bytes()).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "request.jsonrpc",
            format!(
                "body is not a JSON-RPC message or batch the verifier can read ({e}); an MCP \
                 server must not run a body it cannot read the same way"
            ),
        )
    })?;
    if b.body_digest.as_ref().is_some_and(|d| *d != read.digest) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "request.body_digest",
            "body_digest is not the SHA-256 of body: send one of them, or both for the same \
             bytes",
        ));
    }
    Ok(Some(read))
}

async fn pop_verify(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let endpoint = "pop";
    let (_permit, body): (_, PopBody) = match admit(&st, endpoint, peer, &headers, body) {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };
    let evidence = match body.evidence.as_deref().map(decode_evidence).transpose() {
        Ok(e) => e,
        Err(p) => return p.into_response(),
    };
    let request_body = match body_headers(&body).and_then(|()| request_body(&body)) {
        Ok(b) => b,
        Err(p) => {
            st.count_request(endpoint, p.status.as_u16());
            return p.into_response();
        }
    };
    let engine = st.engine.load();
    let now = UnixTime::now();
    let req = Request {
        method: &body.method,
        url: &body.url,
        dpop: &body.dpop,
        access_token: body.access_token.as_deref(),
        evidence: evidence.as_ref(),
        contract: body.contract.as_deref(),
        body: request_body.as_ref(),
    };
    let decision = st.decide(&engine, &req, now).await;
    if let Some(r) = decision.refusal() {
        if r.is_unavailable() {
            st.count_decision(endpoint, "error", r.code());
            // Logged once per outage by the store layer (cada_store_outage), not per request.
            tracing::debug!(error = %r, "shared store unavailable: proof refused");
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "replay-store-unavailable",
                format!(
                    "the replay store cannot be reached, so no proof is accepted: {}",
                    r.error
                ),
            );
        }
    }
    let record = AuditRecord::of_decision(
        endpoint,
        now,
        &decision,
        &body.method,
        &body.url,
        &body.dpop,
    );
    if let Err(e) = st.audit_decision(peer.ip(), &decision, record).await {
        tracing::error!(error = %e, "audit log unavailable: refusing to answer");
        return problem(StatusCode::SERVICE_UNAVAILABLE, "audit-unavailable", e);
    }
    let mut resp = match &decision {
        Decision::Accept(a) => {
            let reason = match a.admission {
                Admission::Audience { .. } => "audience",
                Admission::AnyMeasurement => "any_measurement",
                Admission::Token { .. } => "token",
            };
            st.count_decision(endpoint, "accept", reason);
            Json(json!({
                "active": true,
                "jkt": a.key.jkt, "did": a.key.did, "platform": a.key.platform,
                "measurements": a.key.measurements, "module_id": a.key.module_id,
                "iat": a.claims.iat, "exp": a.claims.exp, "jti": a.claims.jti,
                "htm": a.claims.htm, "htu": a.claims.htu, "cada": a.claims.cada,
                "emulated": a.key.emulated, "admission": a.admission,
                "owner": a.key.owner, "contract": a.contract, "token": a.token,
            }))
            .into_response()
        }
        Decision::Refuse(r) => {
            st.count_decision(endpoint, "reject", r.code());
            refusal_response(r)
        }
    };
    st.count_request(endpoint, resp.status().as_u16());
    if engine.policy().token.require_nonce {
        if let Ok(v) = HeaderValue::from_str(&st.issue_nonce(now)) {
            resp.headers_mut().insert("DPoP-Nonce", v);
        }
    }
    resp
}

/// The HTTP answer to a refusal: 400 for malformed requests, 403 for measurement rules,
/// calls the contract or a one-transaction grant does not permit (`insufficient_scope`
/// codes) and argument-limited grants checked without the body
/// (`grant.arguments_unchecked`), 401 with a DPoP challenge for everything about the proof
/// and its evidence. The body is an RFC 9457 problem document naming the code and the rule
/// (`rule`, its number in the decision's table) that also carries the introspection shape
/// (`active: false`, `reasons`).
fn refusal_response(r: &Refusal) -> Response {
    let code = r.code();
    let message = r.error.to_string();
    let status = if r.is_bad_request() {
        StatusCode::BAD_REQUEST
    } else if matches!(
        r.error,
        VerifyError::NoAudience(_) | VerifyError::MeasurementsNotAllowed(_)
    ) || r.dpop_error() == "insufficient_scope"
        || code == "grant.arguments_unchecked"
    {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::UNAUTHORIZED
    };
    let dpop_error = (status == StatusCode::UNAUTHORIZED).then(|| r.dpop_error());
    let mut p = Problem::new(status, code, message.clone())
        .with("active", false.into())
        .with("rule", r.rule().into())
        .with("error", dpop_error.into())
        .with("reasons", json!([{"code": code, "message": message}]));
    if let Some(err) = dpop_error {
        // error_description is a quoted-string: keep it to printable ASCII without quotes.
        let desc: String = format!("[{code}] {message}")
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .map(|c| if c == '"' || c == '\\' { '\'' } else { c })
            .take(300)
            .collect();
        p.challenge = HeaderValue::from_str(&format!(
            "DPoP error=\"{err}\", error_description=\"{desc}\", algs=\"EdDSA Ed25519 ES256 ES384\""
        ))
        .ok();
    }
    p.into_response()
}

/// `POST /v1/evidence/verify` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EvidenceBody {
    evidence: String,
    /// Hex nonce the evidence must carry.
    #[serde(default)]
    nonce: Option<String>,
}

async fn evidence_verify(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let endpoint = "evidence";
    let (_permit, body): (_, EvidenceBody) = match admit(&st, endpoint, peer, &headers, body) {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };
    let env = match decode_evidence(&body.evidence) {
        Ok(e) => e,
        Err(p) => return p.into_response(),
    };
    let Ok(nonce) = body.nonce.as_deref().map(hex::decode).transpose() else {
        return problem(
            StatusCode::BAD_REQUEST,
            "invalid-nonce",
            "nonce must be hex",
        );
    };
    let engine = st.engine.load();
    let now = UnixTime::now();
    let t = Instant::now();
    let res = engine
        .verifier
        .admit_evidence(&env, nonce.as_deref(), now, Some(st.nonces()));
    st.observe_stage("evidence", t);
    let record = AuditRecord {
        time: now.to_string(),
        kind: endpoint,
        jkt: res.as_ref().ok().map(|k| k.jkt.clone()),
        did: res.as_ref().ok().map(|k| k.did.clone()),
        platform: Some(env.platform.to_string()),
        measurement_digest: res.as_ref().ok().map(measurement_digest),
        decision: if res.is_ok() { "accept" } else { "reject" },
        reason: res.as_ref().err().map(|r| r.code().to_string()),
        ..AuditRecord::default()
    };
    // Evidence that does not verify costs its sender nothing: a short, rate-limited record.
    let audited = if res.is_ok() {
        st.audit_log().append(record).await
    } else {
        st.audit_unauthenticated(peer.ip(), record).await
    };
    if let Err(e) = audited {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "audit-unavailable", e);
    }
    let resp = match res {
        Ok(k) => {
            st.count_decision(endpoint, "accept", "ok");
            Json(json!({
                "valid": true, "platform": k.platform, "jkt": k.jkt, "did": k.did,
                "measurements": k.measurements, "module_id": k.module_id, "att": k.att,
                "expires": k.expires.to_string(), "emulated": k.emulated,
            }))
            .into_response()
        }
        Err(r) => {
            st.count_decision(endpoint, "reject", r.code());
            let mut resp = refusal_response(&r);
            // Evidence is not a DPoP proof: no DPoP challenge on this endpoint.
            resp.headers_mut().remove(header::WWW_AUTHENTICATE);
            resp
        }
    };
    st.count_request(endpoint, resp.status().as_u16());
    resp
}

async fn nonce(State(st): State<Arc<AppState>>) -> Response {
    let n = st.issue_nonce(UnixTime::now());
    let mut r = Json(json!({ "nonce": n })).into_response();
    if let Ok(v) = HeaderValue::from_str(&n) {
        r.headers_mut().insert("DPoP-Nonce", v);
    }
    r
}

async fn ready(State(st): State<Arc<AppState>>) -> Response {
    match st.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            format!("replay store: {e}"),
        ),
    }
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    cada_net::metrics_response(st.registry())
}

/// The router.
pub fn router(st: Arc<AppState>) -> Router {
    let max_body = st.max_body();
    Router::new()
        .route(
            "/v1/pop/verify",
            post(pop_verify).layer(axum::extract::DefaultBodyLimit::max(body_limit(
                max_body, "pop",
            ))),
        )
        .route("/v1/contracts/reinstate", post(reinstate))
        .route("/v1/contracts/{dtc}/suspension", get(suspension))
        .route("/v1/evidence/verify", post(evidence_verify))
        .route("/v1/nonce", get(nonce))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "not-found", "no such endpoint") })
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(st)
}

/// `POST /v1/contracts/reinstate` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReinstateBody {
    reinstatement: String,
}

/// `POST /v1/contracts/reinstate`: the owner's signed reinstatement lifts a suspension for
/// every instance of the fleet.
async fn reinstate(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let endpoint = "reinstate";
    let (_permit, body): (_, ReinstateBody) = match admit(&st, endpoint, peer, &headers, body) {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };
    match st.reinstate(&body.reinstatement, UnixTime::now()).await {
        Ok(v) => {
            st.count_decision(endpoint, "accept", "reinstated");
            Json(json!({"reinstated": v.dtc, "owner": v.owner})).into_response()
        }
        Err(e) => {
            let status = match &e {
                cada_pipeline::PipelineError::NotSuspended(_) => StatusCode::NOT_FOUND,
                cada_pipeline::PipelineError::Replayed(_)
                | cada_pipeline::PipelineError::OtherSuspension { .. } => StatusCode::CONFLICT,
                cada_pipeline::PipelineError::StoreUnavailable(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ => StatusCode::FORBIDDEN,
            };
            problem(status, e.code(), e.to_string())
        }
    }
}

/// `GET /v1/contracts/{dtc}/suspension`: the suspension in force (its id, owner, reason,
/// since), which the owner's reinstatement must name; 404 `contract.not_suspended`.
async fn suspension(
    State(st): State<Arc<AppState>>,
    axum::extract::Path(dtc): axum::extract::Path<String>,
) -> Response {
    let dtc: String = dtc.chars().take(128).collect();
    match st.suspension(&dtc).await {
        Ok(Some(s)) => Json(json!({"contract": dtc, "suspension": s})).into_response(),
        Ok(None) => problem(
            StatusCode::NOT_FOUND,
            "contract.not_suspended",
            format!("contract {dtc} is not suspended"),
        ),
        Err(e) => problem(StatusCode::SERVICE_UNAVAILABLE, e.code(), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(extra: serde_json::Value) -> Result<(), (u16, String)> {
        let mut doc = json!({"dpop": "x", "method": "POST", "url": "https://a.example/mcp"});
        for (k, v) in extra.as_object().unwrap() {
            doc[k] = v.clone();
        }
        let b: PopBody = serde_json::from_value(doc).unwrap();
        body_headers(&b).map_err(|p| (p.status.as_u16(), p.code.clone()))
    }

    #[test]
    fn the_body_headers_passed_on_are_held_to_the_gates_rule() {
        let ct = |c: &str| Err((415, c.to_owned()));
        assert_eq!(checked(json!({})), Ok(()));
        assert_eq!(checked(json!({"content_type": "application/json"})), Ok(()));
        assert_eq!(
            checked(json!({"content_type": ["application/json; charset=\"UTF-8\""]})),
            Ok(())
        );
        for bad in [
            json!({"content_type": "application/json; charset=utf-7"}),
            json!({"content_type": "application/json; charset=utf-16"}),
            json!({"content_type": ["application/json", "application/json"]}),
            json!({"content_type": []}),
        ] {
            assert_eq!(checked(bad.clone()), ct("mcp.content_type"), "{bad}");
        }
        assert_eq!(
            checked(json!({"content_type": "application/json", "content_encoding": "gzip"})),
            ct("mcp.content_encoding")
        );
        // A server that runs no JSON-RPC from the body (mcp: false) reads it its own way.
        assert_eq!(
            checked(
                json!({"mcp": false, "content_type": "text/plain; charset=utf-16",
                "content_encoding": "gzip"})
            ),
            Ok(())
        );
    }
}
