//! The agent-facing HTTP API (on a 0600 unix socket, optionally 127.0.0.1):
//! `POST /v1/pop`, `GET /v1/evidence?nonce=`, `GET /v1/identity`, `/healthz`, `/readyz`,
//! `/metrics`. A bounded number of requests are in flight; beyond it the answer is 503 with
//! `Retry-After`, so memory stays bounded under any load.
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cada_protocol::envelope::EvidenceEnvelope;
use cada_protocol::wire::{
    ops, AttestRequest, AttestResponse, DescribeResponse, ErrorCode, SignPopRequest,
    SignPopResponse,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::client::EnclaveClient;
use crate::ParentError;

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
    requests: Family<RouteLabels, Counter>,
    pop_latency: Histogram,
    registry: Registry,
}

impl AppState {
    /// State with at most `max_in_flight` concurrent requests.
    pub fn new(client: EnclaveClient, max_in_flight: usize) -> Arc<Self> {
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
        Arc::new(AppState {
            client,
            queue: Semaphore::new(max_in_flight),
            evidence: Mutex::new(HashMap::new()),
            requests,
            pop_latency,
            registry,
        })
    }
}

/// A JSON error answer.
#[derive(Serialize)]
struct ErrorBody {
    error: &'static str,
    message: String,
}

fn error_response(route: &'static str, st: &AppState, e: ParentError) -> Response {
    let (status, code) = match &e {
        ParentError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        ParentError::EnclaveUnavailable(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "enclave_unavailable")
        }
        ParentError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "enclave_timeout"),
        ParentError::Enclave {
            code: ErrorCode::PolicyDenied,
            ..
        } => (StatusCode::FORBIDDEN, "policy_denied"),
        ParentError::Enclave {
            code: ErrorCode::BadRequest,
            ..
        } => (StatusCode::BAD_REQUEST, "bad_request"),
        ParentError::Enclave {
            code: ErrorCode::Busy,
            ..
        } => (StatusCode::SERVICE_UNAVAILABLE, "enclave_busy"),
        _ => (StatusCode::BAD_GATEWAY, "enclave_error"),
    };
    st.requests
        .get_or_create(&RouteLabels {
            route,
            status: status.as_u16(),
        })
        .inc();
    let mut resp = (
        status,
        Json(ErrorBody {
            error: code,
            message: e.to_string(),
        }),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    resp
}

fn ok(route: &'static str, st: &AppState) {
    st.requests
        .get_or_create(&RouteLabels { route, status: 200 })
        .inc();
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
    /// Also return the evidence (`CADA-Evidence` value) binding the key.
    #[serde(default)]
    pub with_evidence: bool,
}

/// `POST /v1/pop` answer.
#[derive(Serialize, Deserialize)]
pub struct PopAnswer {
    /// The `DPoP` header value.
    pub dpop: String,
    /// The `CADA-Evidence` header value, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

async fn evidence_for(st: &AppState, att: &str) -> Result<String, ParentError> {
    if let Some(e) = st.evidence.lock().ok().and_then(|m| m.get(att).cloned()) {
        return Ok(e);
    }
    // Ask for the current evidence (an empty nonce makes none new).
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
    if digest == att {
        Ok(header)
    } else {
        Err(ParentError::Protocol(
            "evidence changed while signing; retry".into(),
        ))
    }
}

async fn pop(State(st): State<Arc<AppState>>, Json(body): Json<PopBody>) -> Response {
    let Ok(_permit) = st.queue.try_acquire() else {
        return error_response("pop", &st, ParentError::Overloaded);
    };
    let start = Instant::now();
    let req = SignPopRequest {
        htm: body.method,
        htu: body.url,
        access_token: body.access_token,
        nonce: body.nonce,
        ctx: body.ctx,
    };
    let signed: SignPopResponse = match st.client.call(ops::SIGN_POP, &req).await {
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
    Json(PopAnswer {
        dpop: signed.dpop,
        evidence,
    })
    .into_response()
}

#[derive(Deserialize)]
struct NonceQuery {
    nonce: Option<String>,
}

async fn evidence(State(st): State<Arc<AppState>>, Query(q): Query<NonceQuery>) -> Response {
    let Ok(_permit) = st.queue.try_acquire() else {
        return error_response("evidence", &st, ParentError::Overloaded);
    };
    let nonce = match q.nonce.as_deref().map(hex::decode).transpose() {
        Ok(n) => n.unwrap_or_default(),
        Err(_) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(ErrorBody {
                    error: "bad_request",
                    message: "nonce must be hex".into(),
                }),
            )
                .into_response()
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

async fn identity(State(st): State<Arc<AppState>>) -> Response {
    match st
        .client
        .call::<_, DescribeResponse>(ops::DESCRIBE, &serde_json::Value::Null)
        .await
    {
        Ok(d) => {
            ok("identity", &st);
            let jwk: serde_json::Value = serde_json::from_str(&d.jwk).unwrap_or_default();
            Json(serde_json::json!({
                "platform": d.platform, "did": d.did, "jkt": d.jkt, "jwk": jwk,
                "measurements": d.measurements, "signatures": d.seq,
            }))
            .into_response()
        }
        Err(e) => error_response("identity", &st, e),
    }
}

async fn ready(State(st): State<Arc<AppState>>) -> Response {
    match st
        .client
        .call::<_, DescribeResponse>(ops::DESCRIBE, &serde_json::Value::Null)
        .await
    {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response(),
    }
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &st.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
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

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/pop", post(pop))
        .route("/v1/evidence", get(evidence))
        .route("/v1/identity", get(identity))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}
