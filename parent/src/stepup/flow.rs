//! The proxy's step-up flow (`--step-up ask|wait=DURATION`): which refusals are put to the
//! owner, what the client is answered, and what a retry does.
//!
//! * A body that is one `tools/call` request is relayed as usual; when the enclave refuses
//!   to sign it (`contract-denied` with a code that names a missing grant) or a CADA gate
//!   refuses it (403 `insufficient_scope`, `grant.*`), the daemon files a step-up request
//!   and the client is answered in its shape ([`super::Shape`]), or, in `wait` mode, held.
//! * The same call again (same session, server, tool and arguments; for 2026-07-28 the
//!   `requestState` the proxy handed out) polls the request once: approved → the grant is
//!   installed (by the daemon) and the call signed and forwarded, without the proxy's own
//!   `requestState`/`inputResponses`; still pending → the same answer again; denied or
//!   expired → `stepup.denied` / `stepup.expired`. A call refused again after the approval
//!   is answered with that refusal's code, never filed twice.
//! * An `initialize` is relayed and, once answered, its declarations are remembered for the
//!   session (`Mcp-Session-Id`) or, without one, the connection.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cada_net::UnixPeer;
use cada_protocol::stepup::{codes as service_codes, Refusal, RefusedBy, Status, Want};
use http_body_util::BodyExt;
use hyper::body::Frame;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::daemon::{FileBody, Filed, PollBody, Polled};
use super::{
    codes, elicitation_answer, error_answer, names_missing_grant, strip_own_input, ClientProfile,
    Elicitation, Mode, Pending, PendingKey, SessionInfo, Shape, ToolCall, KEEPALIVE, MAX_INTERVAL,
    STATE_PREFIX,
};
use crate::proxy::{challenge, Outgoing, ProxyState, Relayed};

/// Largest refusal body read to find its code.
const MAX_REFUSAL: usize = 64 * 1024;
/// Largest JSON answer re-framed as an SSE event in `wait` mode.
const MAX_SSE_ANSWER: usize = 4 * 1024 * 1024;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The session key of requests without `Mcp-Session-Id`: a server without sessions
/// (2025-11-25 stateless, every 2026-07-28 server).
pub(crate) const SESSIONLESS: &str = "sessionless";

/// The session a request belongs to: `session:<Mcp-Session-Id>`, else [`SESSIONLESS`] —
/// not the connection: a client's pool closes idle connections within seconds (httpx: 5 s)
/// while the owner decides, and a retry on a new connection would file a second request;
/// whoever reaches the proxy acts as the same agent anyway.
fn session_key(parts: &axum::http::request::Parts) -> String {
    match parts
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
    {
        Some(id) => format!("session:{}", id.chars().take(128).collect::<String>()),
        None => SESSIONLESS.to_owned(),
    }
}

/// What the session (or, without one, the connection; else the latest sessionless client)
/// declared in `initialize`.
fn declared(
    st: &ProxyState,
    parts: &axum::http::request::Parts,
    session: &str,
) -> Option<SessionInfo> {
    if session != SESSIONLESS {
        return st.step_up.sessions.get(session);
    }
    st.step_up
        .sessions
        .get(&conn_key(parts))
        .or_else(|| st.step_up.sessions.get(SESSIONLESS))
}

fn conn_key(parts: &axum::http::request::Parts) -> String {
    if let Some(ConnectInfo(a)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        return format!("conn:tcp:{a}");
    }
    if let Some(ConnectInfo(p)) = parts.extensions.get::<ConnectInfo<UnixPeer>>() {
        return format!("conn:unix:{}", p.pid.unwrap_or(0));
    }
    "conn:unknown".to_owned()
}

/// Whether the body is exactly one `tools/call` request (cheap: from the parsed messages).
fn is_single_tool_call(out: &Outgoing) -> bool {
    out.rpc.as_ref().is_some_and(|b| {
        !b.batch
            && b.messages.len() == 1
            && b.messages[0].id.is_some()
            && b.messages[0]
                .call
                .as_ref()
                .is_some_and(|c| c.method == "tools/call")
    })
}

fn is_initialize(out: &Outgoing) -> bool {
    out.rpc.as_ref().is_some_and(|b| {
        b.messages
            .iter()
            .any(|m| m.call.as_ref().is_some_and(|c| c.method == "initialize"))
    })
}

/// `cada-parent proxy`'s handler while step-up is on.
pub(crate) async fn forward(st: &Arc<ProxyState>, out: Outgoing) -> Response {
    if !is_single_tool_call(&out) {
        let init = if is_initialize(&out) {
            SessionInfo::of_initialize(&out.bytes)
        } else {
            None
        };
        let relayed = crate::proxy::relay(st, &out).await;
        if let (Some(info), Relayed::Answered(resp)) = (init, &relayed) {
            if resp.status().is_success() {
                match resp
                    .headers()
                    .get("mcp-session-id")
                    .and_then(|v| v.to_str().ok())
                {
                    Some(id) => st.step_up.sessions.record(
                        format!("session:{}", id.chars().take(128).collect::<String>()),
                        info,
                    ),
                    None => {
                        st.step_up
                            .sessions
                            .record(conn_key(&out.parts), info.clone());
                        st.step_up.sessions.record(SESSIONLESS.to_owned(), info);
                    }
                }
            }
        }
        return relayed.finish(st, out.rpc.as_ref()).await;
    }
    // The body is read as a value only when it may be a retry (something is pending, or it
    // carries the proxy's own input members) or once it was refused: a granted call with
    // nothing pending costs one substring search.
    let mut out = out;
    let mut read = None;
    if !st.step_up.pending.is_empty() || carries_own_input(&out.bytes) {
        let Some(call) = ToolCall::parse(&out.bytes) else {
            return crate::proxy::relay(st, &out)
                .await
                .finish(st, out.rpc.as_ref())
                .await;
        };
        let (key, profile) = describe(st, &out, &call);
        if let Some((k, p)) = st.step_up.pending.find(&key, call.our_state()) {
            return retry(st, out, &call, &profile, k, p).await;
        }
        // A retry naming a state this proxy no longer holds (restarted, forgotten) goes on
        // without the proxy's own members and, refused again, is filed again.
        out = without_own_input(out);
        read = Some((call, key, profile));
    }
    let relayed = crate::proxy::relay(st, &out).await;
    let denial = match refusal_of(relayed).await {
        Ok(d) => d,
        Err(relayed) => return relayed.finish(st, out.rpc.as_ref()).await,
    };
    let read = read.or_else(|| {
        let call = ToolCall::parse(&out.bytes)?;
        let (key, profile) = describe(st, &out, &call);
        Some((call, key, profile))
    });
    match read {
        Some((call, key, profile)) => file(st, out, &call, &profile, key, denial).await,
        None => denial.original.finish(st, out.rpc.as_ref()).await,
    }
}

/// The pending-request key of `call` and what its client declared.
fn describe(st: &ProxyState, out: &Outgoing, call: &ToolCall) -> (PendingKey, ClientProfile) {
    let key = PendingKey {
        session: session_key(&out.parts),
        audience: out.htu.clone(),
        tool: call.tool.clone(),
        arguments: call.arguments_digest(),
    };
    let session = declared(st, &out.parts, &key.session);
    let profile = ClientProfile::of(call, &out.parts.headers, session.as_ref());
    (key, profile)
}

/// Whether the body may carry the proxy's own `requestState` / `inputResponses` member.
fn carries_own_input(bytes: &[u8]) -> bool {
    // `cada-step-up` is in both (the state's prefix, the input key); JSON is UTF-8.
    std::str::from_utf8(bytes).is_ok_and(|s| s.contains(super::INPUT_KEY))
}

fn without_own_input(out: Outgoing) -> Outgoing {
    if !carries_own_input(&out.bytes) {
        return out;
    }
    match strip_own_input(&out.bytes) {
        Some(b) => out.with_body(Bytes::from(b)),
        None => out,
    }
}

/// A refusal that names a missing grant.
struct Denial {
    code: String,
    by: RefusedBy,
    message: String,
    /// The refusal as it would have been answered.
    original: Relayed,
}

/// The rule code and message of a daemon error naming the enclave's refusal
/// (`daemon answered 403 Forbidden: contract-denied: <code>: <message>`).
pub(crate) fn enclave_refusal(e: &str) -> Option<(&str, &str)> {
    let rest = &e[e.find("contract-denied: ")? + "contract-denied: ".len()..];
    let code = rest
        .split(|c: char| c == ':' || c.is_whitespace())
        .next()
        .filter(|c| !c.is_empty())?;
    Some((code, rest))
}

/// The code a daemon error names after `problem: ` (e.g. `stepup-refused: stepup.rate_limited:
/// …` → `stepup.rate_limited`), when it is a `stepup.*` code.
fn service_code(e: &str) -> Option<&str> {
    let rest = &e[e.find("stepup-refused: ")? + "stepup-refused: ".len()..];
    rest.split(':')
        .next()
        .filter(|c| c.starts_with("stepup.") && c.len() <= 64)
}

/// Whether `relayed` is a refusal the owner can lift; the relayed answer back otherwise.
async fn refusal_of(relayed: Relayed) -> Result<Denial, Relayed> {
    match relayed {
        Relayed::NotSigned(e) => match enclave_refusal(&e) {
            Some((code, msg)) if names_missing_grant(code) => Ok(Denial {
                code: code.to_owned(),
                by: RefusedBy::Enclave,
                message: msg.to_owned(),
                original: Relayed::NotSigned(e.clone()),
            }),
            _ => Err(Relayed::NotSigned(e)),
        },
        Relayed::Answered(resp)
            if matches!(
                resp.status(),
                StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED
            ) =>
        {
            let (parts, body) = resp.into_parts();
            let Ok(bytes) = http_body_util::Limited::new(body, MAX_REFUSAL)
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
            else {
                return Err(Relayed::Failed(
                    (parts.status, "the refusal could not be read").into_response(),
                ));
            };
            let doc: Option<Value> = serde_json::from_slice(&bytes).ok();
            let error = doc.as_ref().and_then(|d| match d {
                Value::Array(a) => a.iter().find_map(|m| m.get("error")).cloned(),
                m => m.get("error").cloned(),
            });
            let data_code = error
                .as_ref()
                .and_then(|e| e.get("data"))
                .and_then(|d| d.get("code"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            let challenged = challenge(&parts.headers).get("error").cloned();
            let code = match (data_code, challenged.as_deref()) {
                (Some(c), _) if names_missing_grant(&c) => Some(c),
                (_, Some("insufficient_scope")) => Some("insufficient_scope".to_owned()),
                _ => None,
            };
            let message = error
                .as_ref()
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let rebuilt = Relayed::Answered(Response::from_parts(parts, Body::from(bytes)));
            match code {
                // The upstream's own claim: a CADA gate there or the MCP server itself
                // answers at this URL, and nothing in the answer is signed.
                Some(code) => Ok(Denial {
                    code,
                    by: RefusedBy::Server,
                    message,
                    original: rebuilt,
                }),
                None => Err(rebuilt),
            }
        }
        other => Err(other),
    }
}

/// One JSON-RPC answer document, status 200 (`status` in `CADA-Refused-Status` for an
/// error, or as the status itself with `--pass-refusals`).
fn json_answer(st: &ProxyState, doc: &Value, refused: Option<StatusCode>) -> Response {
    let status = match refused {
        Some(s) if st.pass_refusals => s,
        _ => StatusCode::OK,
    };
    let mut r = (status, axum::Json(doc)).into_response();
    if let (Some(s), false) = (refused, st.pass_refusals) {
        if let Ok(v) = HeaderValue::from_str(s.as_str()) {
            r.headers_mut()
                .insert(HeaderName::from_static("cada-refused-status"), v);
        }
    }
    r
}

fn error_response(st: &ProxyState, call: &ToolCall, code: &str, message: &str) -> Response {
    st.count_step_up(match code {
        codes::DENIED => "denied",
        codes::EXPIRED => "expired",
        codes::DECLINED => "declined",
        c if c.starts_with("stepup.") => "failed",
        _ => "refused_again",
    });
    json_answer(
        st,
        &error_answer(&call.id, code, message, Map::new()),
        Some(StatusCode::FORBIDDEN),
    )
}

fn elicitation_of(p: &Pending, call: &ToolCall) -> Elicitation {
    Elicitation {
        id: p.id.clone(),
        url: p.url.clone(),
        state: format!("{STATE_PREFIX}{}", p.local),
        tool: call.tool.clone(),
        refusal: p.refusal.clone(),
        by: p.by.as_str().to_owned(),
        expires_at: p.expires_at,
    }
}

/// The answer telling the client to have the owner approve.
fn ask_answer(st: &ProxyState, call: &ToolCall, profile: &ClientProfile, p: &Pending) -> Response {
    st.count_step_up("asked");
    let shape = profile.shape();
    let doc = elicitation_answer(shape, &call.id, &elicitation_of(p, call));
    let refused = (shape == Shape::Plain).then_some(StatusCode::FORBIDDEN);
    json_answer(st, &doc, refused)
}

fn local_id() -> String {
    let mut b = [0u8; 16];
    // Without randomness the id is still unique per process (the time), only guessable,
    // and it only finds a call the same agent made.
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = n.to_le_bytes();
    }
    cada_protocol::b64::encode(b)
}

/// Files a step-up request for a refused call and answers (or holds) the client.
async fn file(
    st: &Arc<ProxyState>,
    out: Outgoing,
    call: &ToolCall,
    profile: &ClientProfile,
    key: PendingKey,
    denial: Denial,
) -> Response {
    let ask = FileBody {
        audience: out.htu.clone(),
        tool: call.tool.clone(),
        arguments: call.arguments.clone(),
        refusal: Refusal {
            code: denial.code.clone(),
            by: denial.by,
            server: out.htu.clone(),
            message: denial.message.clone(),
        },
        want: Want::Once,
    };
    let Ok(ask) = serde_json::to_value(&ask) else {
        return denial.original.finish(st, out.rpc.as_ref()).await;
    };
    let filed = match st
        .daemon
        .call(&st.socket, "POST", "/v1/step-up", Some(ask))
        .await
    {
        Ok(b) => match serde_json::from_slice::<Filed>(&b) {
            Ok(f) => f,
            Err(e) => {
                return error_response(
                    st,
                    call,
                    codes::UNAVAILABLE,
                    &format!("the daemon's step-up answer does not decode: {e}"),
                )
            }
        },
        // No approval service named: the refusal as it always was.
        Err(e) if e.contains("stepup-unavailable") => {
            return denial.original.finish(st, out.rpc.as_ref()).await
        }
        // The server refused a call an installed contract grants: no approval lifts that,
        // so the owner is not asked; the server's answer goes back unchanged.
        Err(e) if e.contains("stepup-granted") => {
            st.count_step_up("passed_granted");
            tracing::warn!(
                server = %out.htu, code = %denial.code,
                "the server refused a call the agent's contract grants; passed on, not put to the owner"
            );
            return denial.original.finish(st, out.rpc.as_ref()).await;
        }
        Err(e) => {
            let code = service_code(&e).unwrap_or(codes::UNAVAILABLE);
            return error_response(
                st,
                call,
                code,
                &format!(
                    "the call was refused ({}) and could not be put to the owner: {e}",
                    denial.code
                ),
            );
        }
    };
    let p = Pending {
        local: local_id(),
        step_up: filed.step_up,
        id: filed.created.id,
        url: filed.created.url,
        expires_at: filed.created.expires_at,
        interval: Duration::from_secs(filed.created.interval.max(1)).min(MAX_INTERVAL),
        last_poll: None,
        refusal: denial.code,
        by: denial.by,
    };
    st.step_up
        .pending
        .insert(key.clone(), p.clone(), unix_now());
    st.count_step_up("filed");
    match st.step_up.mode() {
        Mode::Wait(d) => hold(st, out, call.clone(), profile.clone(), key, d).await,
        _ => ask_answer(st, call, profile, &p),
    }
}

/// What a poll said.
#[derive(Debug, Clone)]
pub(crate) enum Polling {
    /// Approved; the grant is installed.
    Approved,
    /// Not answered yet.
    Pending,
    /// Ended without approval: the code and message to answer.
    Ended(String, String),
    /// The poll failed (the request stays pending): why.
    Failed(String),
}

/// A poll of the request of `key` newer than `since`: the one another call held for the
/// same request got meanwhile, else one made now (one at a time per request id).
async fn shared_poll(
    st: &ProxyState,
    route_ix: usize,
    key: &PendingKey,
    p: &Pending,
    since: Instant,
) -> (Instant, Polling) {
    st.step_up
        .polls
        .poll_since(&p.id, since, || poll(st, route_ix, key, p))
        .await
}

/// What a call hears when its request is gone without an answer it can see.
const NO_LONGER_HELD: &str = "the step-up request is no longer held; call again to ask again";

fn no_longer_held() -> Polling {
    Polling::Ended(codes::EXPIRED.into(), NO_LONGER_HELD.into())
}

/// When the next poll of a request may be made.
enum Due {
    /// Now: the request as it stands.
    Now(Pending),
    /// The request is no longer held (a poll of another call ended it).
    Ended,
    /// The deadline came first.
    TimedOut,
    /// The client went away (a keep-alive could not be written).
    Gone,
}

/// Sleeps until the request of `key` may be polled again: its interval after the latest
/// poll of any call for it (CIBA: no two polls closer), read afresh at each wake, so that
/// calls held for one request do not each poll. Stops at `deadline`; writes keep-alives on
/// `keep` (the sender and when the next is due) meanwhile.
async fn until_due(
    st: &ProxyState,
    key: &PendingKey,
    deadline: Option<Instant>,
    mut keep: Option<(&mpsc::Sender<Bytes>, &mut Instant)>,
) -> Due {
    loop {
        let Some((_, p)) = st.step_up.pending.find(key, None) else {
            return Due::Ended;
        };
        let due = p.last_poll.map_or_else(Instant::now, |l| l + p.interval);
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Due::TimedOut;
        }
        if now >= due {
            return Due::Now(p);
        }
        let mut wake = due.min(now + MAX_INTERVAL);
        if let Some(d) = deadline {
            wake = wake.min(d);
        }
        if let Some((_, next)) = &keep {
            wake = wake.min(**next);
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(wake)).await;
        if let Some((tx, next)) = keep.as_mut() {
            if Instant::now() >= **next {
                if tx.send(Bytes::from_static(KEEPALIVE)).await.is_err() {
                    return Due::Gone;
                }
                st.count_step_up("keepalive");
                **next += st.step_up.keepalive;
            }
        }
    }
}

/// Polls the request of `key` once through the daemon.
async fn poll(st: &ProxyState, route_ix: usize, key: &PendingKey, p: &Pending) -> Polling {
    st.step_up
        .pending
        .update(key, |p| p.last_poll = Some(Instant::now()));
    let ask = PollBody {
        step_up: p.step_up.clone(),
        id: p.id.clone(),
    };
    let Ok(ask) = serde_json::to_value(&ask) else {
        return Polling::Failed("the poll could not be written".into());
    };
    let polled = match st
        .daemon
        .call(&st.socket, "POST", "/v1/step-up/poll", Some(ask))
        .await
    {
        Ok(b) => match serde_json::from_slice::<Polled>(&b) {
            Ok(p) => p,
            Err(e) => return Polling::Failed(format!("the daemon's answer does not decode: {e}")),
        },
        Err(e) => {
            // The approved grant was refused by the enclave (forged, another key's…): ended.
            if let Some((code, msg)) = enclave_refusal(&e) {
                st.step_up.pending.remove(key);
                return Polling::Ended(
                    code.to_owned(),
                    format!("the approved grant was not installed: {msg}"),
                );
            }
            if let Some(code) = service_code(&e) {
                if code == service_codes::UNKNOWN || code == service_codes::OTHER_KEY {
                    st.step_up.pending.remove(key);
                    return Polling::Ended(code.to_owned(), e);
                }
            }
            return Polling::Failed(e);
        }
    };
    let message = polled.status.message.clone().unwrap_or_default();
    match polled.status.status {
        Status::Approved => {
            st.count_step_up("approved");
            st.step_up.pending.remove(key);
            // Proofs under the new grant name it: send it with the next call.
            st.peer(route_ix, |peer| peer.introduced = false);
            Polling::Approved
        }
        Status::Pending => {
            if polled.status.code.as_deref() == Some(service_codes::SLOW_DOWN) {
                let next = polled
                    .status
                    .interval
                    .map_or(p.interval + Duration::from_secs(5), Duration::from_secs)
                    .min(MAX_INTERVAL);
                st.step_up.pending.update(key, |p| p.interval = next);
            }
            Polling::Pending
        }
        Status::Denied => {
            st.step_up.pending.remove(key);
            Polling::Ended(
                codes::DENIED.into(),
                format!(
                    "the owner denied the call of tool {:?}{}",
                    key.tool,
                    suffix(&message)
                ),
            )
        }
        Status::Expired => {
            st.step_up.pending.remove(key);
            Polling::Ended(
                codes::EXPIRED.into(),
                format!(
                    "nobody approved the call of tool {:?} before the request expired; call again to ask again{}",
                    key.tool,
                    suffix(&message)
                ),
            )
        }
    }
}

fn suffix(message: &str) -> String {
    let m: String = message
        .chars()
        .filter(|c| !c.is_control())
        .take(256)
        .collect();
    if m.is_empty() {
        String::new()
    } else {
        format!(" ({m})")
    }
}

/// The same call again while its request is pending.
async fn retry(
    st: &Arc<ProxyState>,
    out: Outgoing,
    call: &ToolCall,
    profile: &ClientProfile,
    key: PendingKey,
    p: Pending,
) -> Response {
    if call.declined() {
        st.step_up.pending.remove(&key);
        return error_response(
            st,
            call,
            codes::DECLINED,
            &format!(
                "the user declined to open the approval page ({}); the call was not made",
                p.url
            ),
        );
    }
    if let Mode::Wait(d) = st.step_up.mode() {
        return hold(st, out, call.clone(), profile.clone(), key, d).await;
    }
    // CIBA: no two polls closer than the interval (of any call for this request); a poll
    // another call made meanwhile answers this one too.
    let since = Instant::now();
    let polled = match until_due(st, &key, None, None).await {
        Due::Now(p) => shared_poll(st, out.route_ix, &key, &p, since).await.1,
        Due::Ended | Due::TimedOut | Due::Gone => st
            .step_up
            .polls
            .answered_since(&p.id, since)
            .unwrap_or_else(no_longer_held),
    };
    match polled {
        Polling::Approved => go(st, out, call).await,
        Polling::Pending => {
            let p = st.step_up.pending.find(&key, None).map_or(p, |(_, p)| p);
            ask_answer(st, call, profile, &p)
        }
        Polling::Ended(code, message) => error_response(st, call, &code, &message),
        Polling::Failed(e) => error_response(
            st,
            call,
            codes::UNAVAILABLE,
            &format!(
                "the step-up request could not be polled (call again to retry): {e}; the owner's page: {}",
                p.url
            ),
        ),
    }
}

/// Sends an approved call (without the proxy's own input members); a refusal now is
/// answered with its own code, not filed again.
async fn go(st: &Arc<ProxyState>, out: Outgoing, call: &ToolCall) -> Response {
    let out = without_own_input(out);
    let relayed = crate::proxy::relay(st, &out).await;
    match refusal_of(relayed).await {
        Ok(d) => error_response(
            st,
            call,
            &d.code,
            &format!(
                "the owner approved, but the call was refused again ({} by the {}): {}",
                d.code,
                d.by.as_str(),
                d.message
            ),
        ),
        Err(relayed) => relayed.finish(st, out.rpc.as_ref()).await,
    }
}

/// How a hold ended.
enum Held {
    Approved,
    /// `wait=DURATION` passed with the request still pending.
    TimedOut,
    Ended(String, String),
    /// The client went away.
    Gone,
}

fn accepts_sse(parts: &axum::http::request::Parts) -> bool {
    parts
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// `wait` mode: holds the call, polling at the service's interval, until it is decided or
/// `d` passed; with an SSE answer (when the client accepts one) a comment line every
/// [`super::KEEPALIVE_EVERY`] keeps it alive past the SDK's read timeouts.
async fn hold(
    st: &Arc<ProxyState>,
    out: Outgoing,
    call: ToolCall,
    profile: ClientProfile,
    key: PendingKey,
    d: Duration,
) -> Response {
    let deadline = Instant::now() + d;
    if !accepts_sse(&out.parts) {
        let end = wait_loop(st, out.route_ix, &key, deadline, None).await;
        return conclude(st, out, &call, &profile, &key, end).await;
    }
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let st = Arc::clone(st);
    tokio::spawn(async move {
        if tx.send(Bytes::from_static(KEEPALIVE)).await.is_err() {
            return;
        }
        let end = wait_loop(&st, out.route_ix, &key, deadline, Some(&tx)).await;
        if matches!(end, Held::Gone) {
            return;
        }
        let resp = conclude(&st, out, &call, &profile, &key, end).await;
        pipe_as_sse(resp, &tx).await;
    });
    let mut r = Response::new(Body::new(ChannelBody(rx)));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn wait_loop(
    st: &ProxyState,
    route_ix: usize,
    key: &PendingKey,
    deadline: Instant,
    tx: Option<&mpsc::Sender<Bytes>>,
) -> Held {
    let mut next_keepalive = Instant::now() + st.step_up.keepalive;
    // When this call last saw an answer: a newer one (another held call's) is taken
    // instead of polling again.
    let mut seen = Instant::now();
    let Some((_, first)) = st.step_up.pending.find(key, None) else {
        return held_of(no_longer_held());
    };
    let id = first.id;
    loop {
        let keep = tx.map(|t| (t, &mut next_keepalive));
        let polled = match until_due(st, key, Some(deadline), keep).await {
            Due::Now(p) => {
                let (at, polled) = shared_poll(st, route_ix, key, &p, seen).await;
                seen = at;
                polled
            }
            // Ended by another call's poll: how it ended, when that is known.
            Due::Ended => {
                return held_of(
                    st.step_up
                        .polls
                        .answered_since(&id, seen)
                        .unwrap_or_else(no_longer_held),
                )
            }
            Due::TimedOut => return Held::TimedOut,
            Due::Gone => return Held::Gone,
        };
        match polled {
            Polling::Pending => {}
            Polling::Failed(e) => {
                tracing::warn!(error = %e, "step-up poll failed; polling again at the interval");
            }
            ended => return held_of(ended),
        }
    }
}

/// A poll's answer as the end of a hold (pending or failed: the request is gone).
fn held_of(p: Polling) -> Held {
    match p {
        Polling::Approved => Held::Approved,
        Polling::Ended(code, message) => Held::Ended(code, message),
        Polling::Pending | Polling::Failed(_) => {
            Held::Ended(codes::EXPIRED.into(), NO_LONGER_HELD.into())
        }
    }
}

async fn conclude(
    st: &Arc<ProxyState>,
    out: Outgoing,
    call: &ToolCall,
    profile: &ClientProfile,
    key: &PendingKey,
    end: Held,
) -> Response {
    match end {
        Held::Approved => go(st, out, call).await,
        // Still pending when the wait ends: the client hears what `ask` would say.
        Held::TimedOut => match st.step_up.pending.find(key, None) {
            Some((_, p)) => ask_answer(st, call, profile, &p),
            None => error_response(
                st,
                call,
                codes::EXPIRED,
                "the step-up request is no longer held",
            ),
        },
        Held::Ended(code, message) => error_response(st, call, &code, &message),
        Held::Gone => StatusCode::NO_CONTENT.into_response(),
    }
}

/// Writes `resp` after the keep-alive comments: an SSE answer's events as they come, a JSON
/// answer as one `message` event.
async fn pipe_as_sse(resp: Response, tx: &mpsc::Sender<Bytes>) {
    let is_sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut body = resp.into_body();
    if is_sse {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                if tx.send(data).await.is_err() {
                    return;
                }
            }
        }
        return;
    }
    let Ok(bytes) = http_body_util::Limited::new(body, MAX_SSE_ANSWER)
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
    else {
        return;
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    let _ = tx.send(Bytes::from(sse_event(&bytes))).await;
}

/// `bytes` (a JSON document) as one SSE `message` event, a `data:` line per line.
pub(crate) fn sse_event(bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(bytes);
    let mut ev = String::from("event: message\n");
    for line in text.trim_end().split('\n') {
        ev.push_str("data: ");
        ev.push_str(line.trim_end_matches('\r'));
        ev.push('\n');
    }
    ev.push('\n');
    ev.into_bytes()
}

/// A response body fed from a channel.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enclave_refusals_are_read_from_the_daemons_error() {
        let e = "daemon answered 403 Forbidden: contract-denied: contract.not_permitted.tool: \
                 MCP tool \"transfer\" is not granted";
        let (code, msg) = enclave_refusal(e).unwrap();
        assert_eq!(code, "contract.not_permitted.tool");
        assert!(msg.contains("transfer"));
        assert!(enclave_refusal("daemon answered 502 Bad Gateway: enclave-error: x").is_none());
        assert_eq!(
            service_code("daemon answered 429 Too Many Requests: stepup-refused: stepup.rate_limited: the approval service …"),
            Some("stepup.rate_limited")
        );
        assert_eq!(
            service_code("daemon answered 403 Forbidden: stepup-refused: other.code: x"),
            None
        );
        // A filing of a call the owner denied within the cool-off (review stepup-2,
        // finding 1) reaches the client as the JSON-RPC error `stepup.denied`.
        assert_eq!(
            service_code("daemon answered 403 Forbidden: stepup-refused: stepup.denied: the approval service (u) answered 403: the owner denied this call …"),
            Some(codes::DENIED)
        );
    }

    #[test]
    fn json_answers_become_one_sse_event() {
        let ev = sse_event(b"{\n  \"jsonrpc\": \"2.0\",\r\n  \"id\": 1\n}\n");
        assert_eq!(
            String::from_utf8(ev).unwrap(),
            "event: message\ndata: {\ndata:   \"jsonrpc\": \"2.0\",\ndata:   \"id\": 1\ndata: }\n\n"
        );
    }

    #[tokio::test]
    async fn a_channel_body_streams_what_is_sent() {
        let (tx, rx) = mpsc::channel(2);
        tx.send(Bytes::from_static(KEEPALIVE)).await.unwrap();
        tx.send(Bytes::from_static(b"event: message\ndata: {}\n\n"))
            .await
            .unwrap();
        drop(tx);
        let all = Body::new(ChannelBody(rx))
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(
            &all[..],
            b": cada step-up pending\n\nevent: message\ndata: {}\n\n"
        );
    }

    #[test]
    fn elicitations_carry_the_proxys_state() {
        let p = Pending {
            local: "L".into(),
            step_up: "http://localhost:8470".into(),
            id: "I".into(),
            url: "http://localhost:8470/r/I".into(),
            expires_at: 5,
            interval: Duration::from_secs(2),
            last_poll: None,
            refusal: "grant.used".into(),
            by: RefusedBy::Server,
        };
        let call = ToolCall::parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}"#,
        )
        .unwrap();
        let e = elicitation_of(&p, &call);
        assert_eq!(e.state, "cada-step-up:L");
        assert_eq!(e.by, "server");
    }
}
