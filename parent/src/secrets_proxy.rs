//! Secret calls from the agent's side (issue 22): the agent calls
//! `http://127.0.0.1:PORT/{secret}/{path}` on `cada-parent proxy --secret NAME` with no
//! credential; the proxy hands the request to the daemon (`POST /v1/secrets/call`), the
//! daemon to the enclave (`secret_call`), and the enclave makes the HTTPS call itself with
//! the sealed secret. The answer comes back the same way; the credential never does.
//!
//! * [`daemon_router`]: the daemon's `POST /v1/secrets/call` (JSON, body base64) over an
//!   enclave client of its own, whose timeout covers the upstream's answer.
//! * [`router`]: the proxy's `/{secret}/…` routes, one per `--secret`, behind the same
//!   access guard as the rest of the proxy (Host, Origin, bearer token); each call —
//!   answered or refused — is audited (`--audit-dir`, one `cada-audit` record:
//!   `kind: "secret_call"`, the method, `secret:NAME/path`, the decision and its code, the
//!   contract, the upstream's status, the latency).
//!
//! Refusals reach the agent as problem JSON naming the rule (`secret.*`, `contract.*`):
//! 403 for what the contract or the sealed usage does not allow, 404 for a secret the
//! enclave does not hold, 502 when the upstream cannot be reached or its certificate does
//! not verify (`secret.tls`), 400 for a malformed request.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::Router;
use base64::Engine as _;
use cada_net::problem::Problem;
use cada_protocol::egress::{SecretCallRequest, SecretCallResponse, MAX_CALL_BODY};
use cada_protocol::wire::ops;
use http_body_util::BodyExt;
use hyper::body::Bytes;
use serde::{Deserialize, Serialize};

use crate::client::EnclaveClient;

/// The daemon's JSON form of a secret call (`body` base64, standard alphabet).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallJson {
    /// The secret's name.
    pub secret: String,
    /// HTTP method.
    pub method: String,
    /// Path and query below the secret's upstream.
    pub path_and_query: String,
    /// Request headers.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Request body, base64.
    #[serde(default)]
    pub body: String,
}

/// The daemon's JSON form of the answer (`body` base64).
#[derive(Debug, Serialize, Deserialize)]
pub struct AnswerJson {
    /// Upstream status.
    pub status: u16,
    /// Answer headers (without Set-Cookie and hop-by-hop headers).
    pub headers: Vec<(String, String)>,
    /// Answer body, base64.
    pub body: String,
    /// What the enclave removed (see [`SecretCallResponse::stripped`]).
    #[serde(default)]
    pub stripped: Vec<String>,
    /// The contract that granted the call.
    #[serde(default)]
    pub dtc: Option<String>,
    /// The call's entry in the enclave's hash chain.
    pub seq: u64,
    /// The chain head after it.
    pub head: String,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The daemon's `POST /v1/secrets/call` over `client` (an enclave client whose timeout
/// covers an upstream's answer).
pub fn daemon_router(client: Arc<EnclaveClient>) -> Router {
    Router::new()
        .route("/v1/secrets/call", post(daemon_call))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_CALL_BODY * 2))
        .with_state(client)
}

async fn daemon_call(State(client): State<Arc<EnclaveClient>>, body: Bytes) -> Response {
    let j: CallJson = match serde_json::from_slice(&body) {
        Ok(j) => j,
        Err(e) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-body",
                format!("a secret call is {{secret, method, path_and_query, headers, body}}: {e}"),
            )
            .into_response()
        }
    };
    let Ok(body) = B64.decode(j.body.as_bytes()) else {
        return Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-body",
            "body is not base64",
        )
        .into_response();
    };
    let req = SecretCallRequest {
        secret: j.secret,
        method: j.method,
        path_and_query: j.path_and_query,
        headers: j.headers,
        body,
    };
    if let Err(e) = req.check_limits() {
        return Problem::new(StatusCode::BAD_REQUEST, "bad-request", e).into_response();
    }
    match client
        .call::<_, SecretCallResponse>(ops::SECRET_CALL, &req)
        .await
    {
        Ok(r) => axum::Json(AnswerJson {
            status: r.status,
            headers: r.headers,
            body: B64.encode(&r.body),
            stripped: r.stripped,
            dtc: r.dtc,
            seq: r.seq,
            head: r.head,
        })
        .into_response(),
        Err(e) => crate::api::problem_of(&e).into_response(),
    }
}

/// The proxy's side: which secrets it serves, the daemon, the audit log.
pub struct SecretsProxy {
    socket: PathBuf,
    names: Vec<String>,
    daemon: crate::daemon::Pool,
    audit: Option<cada_audit::AuditLog>,
}

impl SecretsProxy {
    /// Serves `/{name}/…` for each of `names` through the daemon at `socket`, auditing
    /// into `audit` when given.
    pub fn new(
        socket: PathBuf,
        names: Vec<String>,
        audit: Option<cada_audit::AuditLog>,
    ) -> Result<Arc<Self>, String> {
        for n in &names {
            if !cada_contract::is_secret_name(n) {
                return Err(format!(
                    "--secret {n:?}: a secret name is 1 to 64 of a-z 0-9 _ - starting with a \
                     letter or digit"
                ));
            }
        }
        Ok(Arc::new(SecretsProxy {
            socket,
            names,
            daemon: crate::daemon::Pool::default(),
            audit,
        }))
    }

    /// The names served.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// The routes `/{name}` and `/{name}/{*rest}` for each secret, behind `access` (the same
/// guard as the proxy's other routes). Merge it with [`crate::proxy::router`].
pub fn router(
    sp: Arc<SecretsProxy>,
    guard_state: Arc<crate::proxy::ProxyState>,
    access: crate::access::Access,
) -> Router {
    let mut r = Router::new();
    for n in &sp.names {
        r = r
            .route(&format!("/{n}"), any(agent_call))
            .route(&format!("/{n}/{{*rest}}"), any(agent_call));
    }
    r.with_state(sp).layer(axum::middleware::from_fn_with_state(
        (guard_state, Arc::new(access)),
        crate::access::guard,
    ))
}

/// The first `secret.*`/`contract.*`/`url.*` code in a daemon error, else its problem code.
fn rule_of(msg: &str) -> String {
    msg.split(|c: char| c.is_whitespace() || c == ':' || c == '(' || c == '[')
        .find(|t| (t.starts_with("secret.") || t.starts_with("contract.")) && t.len() > 7)
        .map(|t| t.trim_end_matches(['.', ',', ')']).to_owned())
        .unwrap_or_else(|| "proxy.daemon".into())
}

fn status_of(code: &str, msg: &str) -> StatusCode {
    match code {
        "secret.tls"
        | "secret.upstream"
        | "secret.answer"
        | "secret.reflected"
        | "secret.credential_in_answer"
        | "secret.value_too_short"
        | "secret.no_egress"
        | "secret.oauth_unavailable" => StatusCode::BAD_GATEWAY,
        "secret.unknown" => StatusCode::NOT_FOUND,
        "proxy.daemon" if msg.contains("400") => StatusCode::BAD_REQUEST,
        "proxy.daemon" => StatusCode::BAD_GATEWAY,
        _ => StatusCode::FORBIDDEN,
    }
}

async fn agent_call(State(sp): State<Arc<SecretsProxy>>, req: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let rest = path.strip_prefix('/').unwrap_or(path);
    let (name, sub) = rest.split_once('/').map_or((rest, ""), |(n, s)| (n, s));
    let name = name.to_owned();
    let mut path_and_query = format!("/{sub}");
    if let Some(q) = parts.uri.query() {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    let method = parts.method.as_str().to_owned();
    let outcome = forward(&sp, &name, &method, &path_and_query, &parts.headers, body).await;
    let (resp, decision, reason, dtc, status) = match outcome {
        Ok((a, resp)) => (resp, "accept", None, a.dtc, Some(a.status)),
        Err((code, p)) => (p.into_response(), "reject", Some(code), None, None),
    };
    if let Some(log) = &sp.audit {
        let rec = cada_audit::AuditRecord {
            time: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            kind: "secret_call",
            method: Some(method),
            url: Some(format!("secret:{name}{path_and_query}")),
            decision,
            reason,
            contract: dtc,
            upstream_status: status,
            latency_us: Some(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)),
            ..Default::default()
        };
        if let Err(e) = log.append(rec).await {
            tracing::error!(error = %e, "secret call not audited");
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "proxy.audit",
                "the call could not be audited",
            )
            .into_response();
        }
    }
    resp
}

type Refusal = (String, Problem);

async fn forward(
    sp: &SecretsProxy,
    name: &str,
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<(AnswerJson, Response), Refusal> {
    let bad = |code: &str, detail: String| {
        (
            code.to_owned(),
            Problem::new(StatusCode::BAD_REQUEST, code, detail),
        )
    };
    let body = http_body_util::Limited::new(body, MAX_CALL_BODY)
        .collect()
        .await
        .map_err(|e| {
            (
                "proxy.body".to_owned(),
                Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "proxy.body",
                    format!("the body could not be read within {MAX_CALL_BODY} bytes: {e}"),
                ),
            )
        })?
        .to_bytes();
    // Another secret's placeholder anywhere (also inside Basic credentials, percent-encoded,
    // in the body) is refused; headers carrying this secret's own are removed.
    let mut headers = headers.clone();
    crate::placeholder::check_and_strip(name, &mut headers, path_and_query, &body).map_err(
        |e| {
            let (code, message) = match e {
                crate::ParentError::Refused { code, message } => (code, message),
                other => ("proxy.placeholder", other.to_string()),
            };
            (
                code.to_owned(),
                Problem::new(StatusCode::FORBIDDEN, code, message),
            )
        },
    )?;
    let mut hs = Vec::with_capacity(headers.len());
    for (k, v) in &headers {
        let v = v.to_str().map_err(|_| {
            bad(
                "secret.header",
                format!("the value of {k} is not visible ASCII"),
            )
        })?;
        hs.push((k.as_str().to_owned(), v.to_owned()));
    }
    let call = CallJson {
        secret: name.to_owned(),
        method: method.to_owned(),
        path_and_query: path_and_query.to_owned(),
        headers: hs,
        body: B64.encode(&body),
    };
    let json = serde_json::to_value(&call).map_err(|e| bad("proxy.body", e.to_string()))?;
    let out = sp
        .daemon
        .call(&sp.socket, "POST", "/v1/secrets/call", Some(json))
        .await
        .map_err(|e| {
            let code = rule_of(&e);
            let status = status_of(&code, &e);
            (code.clone(), Problem::new(status, code, e))
        })?;
    let a: AnswerJson = serde_json::from_slice(&out)
        .map_err(|e| bad("proxy.daemon", format!("the daemon's answer: {e}")))?;
    let body = B64
        .decode(a.body.as_bytes())
        .map_err(|_| bad("proxy.daemon", "the daemon's answer body".into()))?;
    let mut resp = Response::new(axum::body::Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (k, v) in &a.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            resp.headers_mut().append(k, v);
        }
    }
    if !a.stripped.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&a.stripped.join(", ")) {
            resp.headers_mut()
                .insert(HeaderName::from_static("cada-stripped"), v);
        }
    }
    Ok((a, resp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_errors_map_to_their_rule_and_status() {
        for (msg, code, status) in [
            (
                "daemon answered 403 Forbidden: secret-denied: secret.method: the trust contract …",
                "secret.method",
                403,
            ),
            (
                "daemon answered 403 Forbidden: secret-denied: secret.tls: TLS to x failed",
                "secret.tls",
                502,
            ),
            (
                "daemon answered 403 Forbidden: contract-denied: contract.expired: the trust …",
                "contract.expired",
                403,
            ),
            (
                "daemon answered 403 Forbidden: secret-denied: secret.path: url.encoded_slash …",
                "secret.path",
                403,
            ),
            ("cannot reach the daemon at /x", "proxy.daemon", 502),
            (
                "daemon answered 403 Forbidden: secret-denied: secret.oauth_unavailable: \
                 secret api: the token endpoint answered HTTP 503",
                "secret.oauth_unavailable",
                502,
            ),
            (
                "daemon answered 403 Forbidden: secret-denied: secret.oauth_refused: secret \
                 api: the token endpoint refused the grant (invalid_grant, HTTP 400)",
                "secret.oauth_refused",
                403,
            ),
        ] {
            assert_eq!(rule_of(msg), code, "{msg}");
            assert_eq!(status_of(code, msg).as_u16(), status, "{msg}");
        }
    }
}
