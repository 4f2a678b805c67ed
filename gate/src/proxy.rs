//! The request path: read the body (bounded), parse its JSON-RPC calls, check the proof
//! with the library's one decision against the exact bytes, audit, then forward to the MCP
//! server and stream its answer back. Nothing is forwarded unless the decision accepted it
//! and its audit record is written.
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use cada_attestation_verifier::decide::{
    Accepted, Decision, Request as DecideRequest, RequestBody,
};
use cada_attestation_verifier::UnixTime;
use cada_audit::{AuditRecord, RpcRecord};
use cada_net::upstream::{strip_hop_by_hop, UpstreamError};
use cada_pipeline::OfDecision;
use cada_protocol::envelope::EvidenceEnvelope;
use cada_protocol::mcp::{self, Body as RpcBody};
use http_body_util::BodyExt;

use crate::metadata::metadata_url;
use crate::refusal::{no_proof, Refused};
use crate::server::GateState;
use crate::target;

/// The verified identity, forwarded to the MCP server (any such header from the client is
/// removed first): the agent's `did:key`.
pub const AGENT_HEADER: &str = "cada-agent";
/// base64url JSON of what the gate verified: `{did, jkt, platform, measurement_digest,
/// owner, contract, tools, token_issuer, calls, bd, actors, chain}` (`actors`: who acted
/// for whom, the owner first and the agent last, with every delegator between; `chain`: the
/// digests of the contracts that govern the request, root first, `contract` last).
pub const CLAIMS_HEADER: &str = "cada-agent-claims";

/// Stable code of a request carrying a header that reads as an identity header (forward
/// auth, where the gate cannot remove it).
pub const IDENTITY_HEADER: &str = "request.identity_header";

/// Stable code of a request carrying a header that makes some servers act on another method
/// or URL than the one authorized ([`OVERRIDE_HEADERS`]; forward auth, where the gate cannot
/// remove it).
pub const OVERRIDE_HEADER: &str = "request.override_header";

/// Stable code of a request carrying a header spelled with `_` where a header the gate checks
/// or sets has `-` ([`is_lookalike`]; forward auth, where the gate cannot remove it).
pub const LOOKALIKE_HEADER: &str = "request.lookalike_header";

/// Credentials and CADA headers a client sends the gate; never forwarded.
const CREDENTIAL_HEADERS: [&str; 4] = ["authorization", "dpop", "cada-evidence", "cada-contract"];

/// Headers with which some servers act on another method or URL than the request line's:
/// method overrides (the method-override middlewares of Express, Rails, Spring, ASP.NET) and
/// the rewritten URL of IIS and Symfony/Zend. The gate authorizes the request line, so these
/// never reach the server (removed; refused in forward auth).
pub(crate) const OVERRIDE_HEADERS: [&str; 5] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
];

/// Headers (besides every `x-forwarded-*`) by which a proxy tells the server behind it the
/// client's address, host, scheme or original URI. The server trusts the gate for them, so
/// they pass only from a `--trusted-proxy`, who vouches for them.
const FORWARDING_HEADERS: [&str; 7] = [
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "x-original-uri",
    "x-envoy-original-path",
];

fn is_forwarding(name: &str) -> bool {
    name.starts_with("x-forwarded-") || FORWARDING_HEADERS.contains(&name)
}

/// Whether `name` is spelled with `_` where a header the gate checks or sets has `-`
/// (`Mcp_Name`, `X_Forwarded_For`, `Content_Digest`): CGI, WSGI and PHP servers (and nginx
/// with `underscores_in_headers on`) read both spellings as one variable, so such a copy
/// could be read instead of the one the gate checked or wrote.
pub(crate) fn is_lookalike(name: &str) -> bool {
    if !name.contains('_') {
        return false;
    }
    let folded = name.to_ascii_lowercase().replace('_', "-");
    is_identity_header(&folded)
        || is_forwarding(&folded)
        || OVERRIDE_HEADERS.contains(&folded.as_str())
        || CREDENTIAL_HEADERS.contains(&folded.as_str())
        || matches!(
            folded.as_str(),
            "mcp-method" | "mcp-name" | "content-digest" | "content-type" | "content-encoding"
        )
        // The gate sets `CADA-Task` (issue 24): `CADA_Task` would be read as the signed task.
        // (`traceparent` and `tracestate` have no `-` to imitate.)
        || folded == cada_protocol::trace::TASK_HEADER
        || folded.starts_with(mcp::headers::PARAM_PREFIX)
}

/// Every header as (name, value), as [`mcp::headers`] takes them.
pub(crate) fn header_pairs(h: &HeaderMap) -> impl Iterator<Item = (&str, &[u8])> {
    h.iter().map(|(n, v)| (n.as_str(), v.as_bytes()))
}

/// The status of a [`mcp::headers`] refusal.
pub(crate) fn header_status(e: &cada_protocol::ProtocolError) -> StatusCode {
    StatusCode::from_u16(mcp::headers::http_status(e)).unwrap_or(StatusCode::BAD_REQUEST)
}

/// A request as the decision needs it.
pub(crate) struct Checked<'a> {
    pub(crate) method: &'a str,
    pub(crate) url: &'a str,
    pub(crate) resource_metadata: &'a str,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: Option<&'a RequestBody>,
    pub(crate) rpc: Option<&'a RpcBody>,
    pub(crate) kind: &'static str,
    /// The client's address: unauthenticated refusals are audited within its rate.
    pub(crate) peer: IpAddr,
}

/// The single value of header `name`; two values refuse (a proxy chain could otherwise
/// check one and forward the other).
pub(crate) fn single<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, Refused> {
    let mut all = headers.get_all(name).iter();
    let (Some(v), None) = (all.next(), all.next()) else {
        return match headers.get(name) {
            None => Ok(None),
            Some(_) => Err(Refused::gate(
                StatusCode::BAD_REQUEST,
                "request.header",
                format!("send one {name} header, not several"),
            )),
        };
    };
    v.to_str().map(Some).map_err(|_| {
        Refused::gate(
            StatusCode::BAD_REQUEST,
            "request.header",
            format!("the {name} header is not ASCII"),
        )
    })
}

/// Credentials, decision, audit: the accepted identity, or the complete refusal answer
/// (already audited and counted).
pub(crate) async fn decide(st: &GateState, c: &Checked<'_>) -> Result<Accepted, Response> {
    let refuse = |r: Refused| {
        st.count(r.status, "reject", &r.code);
        audit_early(st, c.peer, c.kind, c.method, c.url, &r.code, c.rpc);
        r.answer(c.rpc, c.resource_metadata)
    };
    let dpop = match single(c.headers, "dpop") {
        Ok(Some(d)) => d,
        Ok(None) => {
            st.count(StatusCode::UNAUTHORIZED, "reject", "pop.missing");
            audit_early(st, c.peer, c.kind, c.method, c.url, "pop.missing", c.rpc);
            return Err(no_proof(c.rpc, c.resource_metadata));
        }
        Err(r) => return Err(refuse(r)),
    };
    let access_token = match single(c.headers, "authorization") {
        Ok(None) => None,
        Ok(Some(v)) => match v.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("DPoP") => Some(t.trim()),
            _ => {
                let mut r = Refused::gate(
                    StatusCode::UNAUTHORIZED,
                    "token.scheme",
                    "only DPoP-bound access tokens are accepted (Authorization: DPoP <token>)",
                );
                r.challenge = Some("invalid_token");
                return Err(refuse(r));
            }
        },
        Err(r) => return Err(refuse(r)),
    };
    let evidence = match single(c.headers, "cada-evidence") {
        Ok(None) => None,
        Ok(Some(text)) => match EvidenceEnvelope::from_header(text) {
            Ok(e) => Some(e),
            Err(e) => {
                return Err(refuse(Refused::gate(
                    StatusCode::BAD_REQUEST,
                    "evidence.encoding",
                    format!("CADA-Evidence does not decode: {e}"),
                )))
            }
        },
        Err(r) => return Err(refuse(r)),
    };
    let contract = match single(c.headers, "cada-contract") {
        Ok(v) => v,
        Err(r) => return Err(refuse(r)),
    };
    let engine = st.verify.engine.load();
    let now = UnixTime::now();
    let decision = st
        .verify
        .decide(
            &engine,
            &DecideRequest {
                method: c.method,
                url: c.url,
                dpop,
                access_token,
                evidence: evidence.as_ref(),
                contract,
                body: c.body,
            },
            now,
        )
        .await;
    let mut record = AuditRecord::of_decision(c.kind, now, &decision, c.method, c.url, dpop);
    record.rpc = rpc_records(c.rpc);
    if let Err(e) = st.verify.audit_decision(c.peer, &decision, record).await {
        tracing::error!(error = %e, "audit log unavailable: nothing is forwarded");
        st.count(
            StatusCode::SERVICE_UNAVAILABLE,
            "reject",
            "audit.unavailable",
        );
        return Err(Refused::gate(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit.unavailable",
            "the audit log cannot be written, so no call is forwarded; retry later",
        )
        .answer(c.rpc, c.resource_metadata));
    }
    match decision {
        Decision::Accept(a) => Ok(*a),
        Decision::Refuse(r) => {
            // What the calls would need granted: tool:NAME, resource:URI, prompt:NAME.
            let wanted: Vec<String> = c
                .body
                .and_then(|b| b.calls.as_ref())
                .map(|calls| {
                    calls
                        .iter()
                        .filter_map(|call| {
                            let kind = match call.method.as_str() {
                                "tools/call" => "tool",
                                "prompts/get" => "prompt",
                                m if m.starts_with("resources/") => "resource",
                                _ => return None,
                            };
                            call.target.as_deref().map(|t| format!("{kind}:{t}"))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let refused = Refused::of(&r, &wanted);
            tracing::info!(code = refused.code, url = c.url, "refused");
            // Audited above with the decision: only counted here.
            st.count(refused.status, "reject", &refused.code);
            let mut resp = refused.answer(c.rpc, c.resource_metadata);
            if engine.policy().token.require_nonce || r.code() == "pop.nonce" {
                if let Ok(v) = HeaderValue::from_str(&st.verify.issue_nonce(now)) {
                    resp.headers_mut().insert("dpop-nonce", v);
                }
            }
            Err(resp)
        }
    }
}

/// The record of a request refused before the decision (no proof, malformed, too large):
/// written beside the answer, since nothing was forwarded; short, and within `peer`'s rate
/// of unauthenticated records (`cada_pipeline::AppState::audit_unauthenticated`).
pub(crate) fn audit_early(
    st: &GateState,
    peer: IpAddr,
    kind: &'static str,
    method: &str,
    url: &str,
    code: &str,
    rpc: Option<&RpcBody>,
) {
    let record = AuditRecord {
        time: UnixTime::now().to_string(),
        kind,
        method: Some(method.chars().take(32).collect()),
        url: Some(url.chars().take(2048).collect()),
        decision: "reject",
        reason: Some(code.to_owned()),
        rpc: rpc_records(rpc),
        ..AuditRecord::default()
    };
    let verify = Arc::clone(&st.verify);
    tokio::spawn(async move {
        if let Err(e) = verify.audit_unauthenticated(peer, record).await {
            tracing::error!(error = %e, "audit log unavailable");
        }
    });
}

/// The calls of a body as the audit log holds them (arguments only as a digest).
fn rpc_records(rpc: Option<&RpcBody>) -> Vec<RpcRecord> {
    rpc.map(|b| {
        b.messages
            .iter()
            .filter_map(|m| {
                m.call.as_ref().map(|call| RpcRecord {
                    method: call.method.clone(),
                    target: call
                        .target
                        .as_deref()
                        .map(|t| t.chars().take(256).collect()),
                    arguments: m.arguments_digest.clone(),
                })
            })
            .collect()
    })
    .unwrap_or_default()
}

/// The identity headers for an accepted request making `calls`, whose body has the digest
/// `bd` (base64url SHA-256: checked against the body in proxy mode, the proof's `cada.bd` in
/// forward auth, for the server to check).
pub(crate) fn identity_headers(
    a: &Accepted,
    calls: &[mcp::McpCall],
    bd: Option<&str>,
) -> [(HeaderName, HeaderValue); 2] {
    let claims = serde_json::json!({
        "did": a.key.did,
        "jkt": a.key.jkt,
        "platform": a.key.platform,
        "measurement_digest": match &a.token {
            Some(t) => t.cada.msr.clone(),
            None => cada_protocol::access_token::measurement_digest(&a.key.measurements),
        },
        "owner": a.key.owner,
        "contract": a.contract.as_ref().map(|c| &c.digest).or(a.token.as_ref().map(|t| &t.cada.dtc)),
        "tools": a.contract.as_ref().map(|c| &c.tools).or(a.token.as_ref().map(|t| &t.cada.tools)),
        "token_issuer": a.token.as_ref().map(|t| &t.iss),
        "calls": calls,
        "bd": bd,
        "actors": cada_pipeline::actors(a),
        "chain": chain_digests(a),
    });
    let encoded = cada_protocol::b64::encode(claims.to_string());
    [
        (
            HeaderName::from_static(AGENT_HEADER),
            HeaderValue::from_str(&a.key.did).unwrap_or(HeaderValue::from_static("invalid")),
        ),
        (
            HeaderName::from_static(CLAIMS_HEADER),
            HeaderValue::from_str(&encoded).unwrap_or(HeaderValue::from_static("e30")),
        ),
    ]
}

/// Chain of custody (issue 24): the upstream gets the task the proof signed as `CADA-Task`
/// and, when the proof signed a traceparent, a `traceparent` with the same trace id and the
/// gate's own new span id as parent id. A `CADA-Task` the client sent itself is removed (only
/// a signed task is passed on); the client's own `traceparent` passes unchanged when the
/// proof signed none. Returns the gate's span id (hex) when it made one.
pub(crate) fn custody_headers(a: &Accepted, h: &mut HeaderMap) -> Option<String> {
    use cada_protocol::trace::{self, TraceParent};
    h.remove(trace::TASK_HEADER);
    if let Some(v) = a
        .claims
        .cada
        .task
        .as_deref()
        .and_then(|t| HeaderValue::from_str(t).ok())
    {
        h.insert(HeaderName::from_static(trace::TASK_HEADER), v);
    }
    let tp = TraceParent::parse(a.claims.cada.tp.as_deref()?).ok()?;
    let span = trace::new_span_id();
    let child = HeaderValue::from_str(&tp.child(span).to_string()).ok()?;
    h.remove(trace::TRACEPARENT_HEADER);
    h.insert(HeaderName::from_static(trace::TRACEPARENT_HEADER), child);
    Some(trace::hex_lower(&span))
}

/// The digests of the contracts that govern an accepted request, root first and its own
/// contract last: the delegation chain's, or the token's `cada_dch`; the contract alone
/// when it is an owner's (or the token's `cada.dtc`, from an older STS); empty without one.
fn chain_digests(a: &Accepted) -> Vec<String> {
    match (&a.contract, &a.token) {
        (Some(c), _) if c.chain.is_empty() => vec![c.digest.clone()],
        (Some(c), _) => c.chain.iter().map(|l| l.digest.clone()).collect(),
        (None, Some(t)) if t.cada_dch.is_empty() => vec![t.cada.dtc.clone()],
        (None, Some(t)) => t.cada_dch.clone(),
        (None, None) => Vec::new(),
    }
}

/// Whether a header name reads as an identity header: lower-cased, with `_` read as `-`
/// (as CGI, WSGI and PHP servers, and nginx with `underscores_in_headers on`, do), it starts
/// with `cada-agent`.
pub(crate) fn is_identity_header(name: &str) -> bool {
    name.len() >= AGENT_HEADER.len()
        && name
            .bytes()
            .zip(AGENT_HEADER.bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
}

/// Removes what a client must not pass through: credentials, any header it made up that
/// reads as an identity header, method and URL overrides ([`OVERRIDE_HEADERS`]) and `_`
/// look-alikes of the headers the gate checks or sets ([`is_lookalike`]).
pub(crate) fn strip_client_headers(h: &mut HeaderMap) {
    strip_hop_by_hop(h);
    for n in CREDENTIAL_HEADERS.iter().chain(&OVERRIDE_HEADERS) {
        h.remove(*n);
    }
    let forged: Vec<HeaderName> = h
        .keys()
        .filter(|k| is_identity_header(k.as_str()) || is_lookalike(k.as_str()))
        .cloned()
        .collect();
    for n in forged {
        h.remove(n);
    }
}

/// The forwarding headers as the upstream gets them. `X-Forwarded-For`: the peer alone,
/// replacing whatever a client wrote; from a trusted proxy, the chain it sent with the peer
/// appended. The others (`Forwarded`, `X-Forwarded-Host`, `-Proto`, `-Prefix`, `X-Real-IP`
/// …): removed unless a trusted proxy sent them, since the server believes the gate about the
/// client's address and the URL it called.
pub(crate) fn set_forwarded_for(h: &mut HeaderMap, peer: IpAddr, trusted: bool) {
    if !trusted {
        let sent: Vec<HeaderName> = h
            .keys()
            .filter(|k| is_forwarding(k.as_str()))
            .cloned()
            .collect();
        for n in sent {
            h.remove(n);
        }
    }
    let name = HeaderName::from_static("x-forwarded-for");
    let mut chain: Vec<String> = if trusted {
        h.get_all(&name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect()
    } else {
        Vec::new()
    };
    h.remove(&name);
    chain.push(peer.to_string());
    if let Ok(v) = HeaderValue::from_str(&chain.join(", ")) {
        h.insert(name, v);
    }
}

/// `Mcp-Method` and `Mcp-Name`, when sent, must name the body's one call.
pub(crate) fn routing_headers_match(h: &HeaderMap, calls: &[mcp::McpCall]) -> Result<(), String> {
    // One value each: a server could route by another copy than the one checked.
    let get = |n: &str| match single(h, n) {
        Ok(v) => Ok(v),
        Err(r) => Err(r.message),
    };
    let (method, name) = (get("mcp-method")?, get("mcp-name")?);
    if method.is_none() && name.is_none() {
        return Ok(());
    }
    // Without Mcp-Name, Mcp-Method may stand for several calls of that one method (a
    // 2026-07-28 `subscriptions/listen` is one call per resource URI it names).
    if name.is_none() {
        let m = method.unwrap_or_default();
        if calls.is_empty() || calls.iter().any(|c| c.method != m) {
            return Err(format!(
                "Mcp-Method ({m}) is not the method of every call in the body ({})",
                calls
                    .iter()
                    .map(|c| c.method.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        return Ok(());
    }
    let [call] = calls else {
        return Err("Mcp-Name names one call, but the body holds none or several".into());
    };
    if method.is_some_and(|m| m != call.method)
        || name.is_some_and(|n| Some(n) != call.target.as_deref())
    {
        return Err(format!(
            "Mcp-Method/Mcp-Name ({} {}) are not the body's call ({} {})",
            method.unwrap_or("-"),
            name.unwrap_or("-"),
            call.method,
            call.target.as_deref().unwrap_or("-")
        ));
    }
    Ok(())
}

/// The fallback route: every request that is not the gate's own.
pub async fn forward(
    State(st): State<Arc<GateState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let t0 = Instant::now();
    let (parts, body) = req.into_parts();
    // The target exactly as it arrived: what is checked is what is forwarded.
    let path_q = match target::origin_form(&parts.uri) {
        Ok(t) => t.to_owned(),
        Err(r) => {
            st.count(r.status, "reject", &r.code);
            let configured = st.config.public.configured();
            audit_early(
                &st,
                peer.ip(),
                "gate",
                parts.method.as_str(),
                configured,
                &r.code,
                None,
            );
            return r.answer(None, &metadata_url(configured, "/"));
        }
    };
    let path = path_q.split('?').next().unwrap_or("/").to_owned();
    let base = match st.config.public.for_request(peer.ip(), &parts.headers) {
        Ok(b) => b,
        Err(e) => {
            let r = Refused::gate(StatusCode::BAD_REQUEST, "request.forwarded", e.0);
            st.count(r.status, "reject", &r.code);
            return r.answer(None, &metadata_url(st.config.public.configured(), &path));
        }
    };
    let resource_metadata = metadata_url(&base, &path);
    let url = match target::request_url(&base, &path_q) {
        Ok(u) => u,
        Err(r) => {
            st.count(r.status, "reject", &r.code);
            let raw = format!("{base}{path_q}");
            audit_early(
                &st,
                peer.ip(),
                "gate",
                parts.method.as_str(),
                &raw,
                &r.code,
                None,
            );
            return r.answer(None, &resource_metadata);
        }
    };
    let bad = |status: StatusCode, code: &str, msg: String| {
        let r = Refused::gate(status, code, msg);
        st.count(r.status, "reject", &r.code);
        audit_early(
            &st,
            peer.ip(),
            "gate",
            parts.method.as_str(),
            &url,
            code,
            None,
        );
        r.answer(None, &resource_metadata)
    };
    // The body, whole and bounded: the proof is checked against these exact bytes, and
    // these bytes are what is forwarded.
    let bytes: Bytes = match http_body_util::Limited::new(body, st.config.max_body)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return bad(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request.too_large",
                format!("request bodies are limited to {} bytes", st.config.max_body),
            )
        }
        Err(e) => {
            return bad(
                StatusCode::BAD_REQUEST,
                "request.body",
                format!("the body could not be read: {e}"),
            )
        }
    };
    // The server must read the JSON the gate reads: UTF-8, not compressed (one rule for
    // every CADA component, cada_protocol::mcp::headers).
    if let Err(e) =
        mcp::headers::check_body_headers(header_pairs(&parts.headers), !bytes.is_empty())
    {
        return bad(header_status(&e), e.code(), e.to_string());
    }
    let rpc = if bytes.is_empty() {
        None
    } else {
        match mcp::parse_body(&bytes) {
            Ok(b) => Some(b),
            Err(e) => {
                return bad(
                    StatusCode::BAD_REQUEST,
                    "request.jsonrpc",
                    format!("the body is not a JSON-RPC message or batch the gate can read: {e}"),
                )
            }
        }
    };
    let (digest, content_digest) = mcp::digests(&bytes);
    match parts.headers.get("content-digest").map(|v| {
        v.to_str()
            .map_err(|_| ())
            .and_then(|v| mcp::content_digest_sha256(v).map_err(|_| ()))
    }) {
        None | Some(Ok(None)) => {}
        Some(Ok(Some(d))) if d == digest => {}
        Some(_) => {
            return bad(
                StatusCode::BAD_REQUEST,
                "request.content_digest",
                "Content-Digest is malformed or is not the sha-256 of the body received".into(),
            )
        }
    }
    let calls = rpc.as_ref().map(RpcBody::calls).unwrap_or_default();
    // MCP 2026 routing headers name the call too: they must say what the body says, or a
    // server routing by header would run a call the gate did not check.
    if let Err(msg) = routing_headers_match(&parts.headers, &calls) {
        return bad(StatusCode::BAD_REQUEST, "request.mcp_headers", msg);
    }
    // So do the 2026-07-28 `Mcp-Param-*` headers: each is the body's value of the
    // argument it names, or the request is refused.
    if let Err(e) = mcp::headers::check_param_headers(header_pairs(&parts.headers), rpc.as_ref()) {
        return bad(header_status(&e), e.code(), e.to_string());
    }
    // The arguments of its tools/calls, for one-transaction grants (rule 13): found in the
    // very bytes forwarded.
    let tool_arguments = if bytes.is_empty() {
        Vec::new()
    } else {
        match cada_attestation_verifier::grants::tool_arguments(&bytes) {
            Ok(a) => a,
            Err(e) => {
                return bad(
                    StatusCode::BAD_REQUEST,
                    "request.jsonrpc",
                    format!("the body's tool calls cannot be read: {e}"),
                )
            }
        }
    };
    let request_body = RequestBody {
        digest,
        calls: Some(calls.clone()),
        tool_arguments: Some(tool_arguments),
    };
    let accepted = match decide(
        &st,
        &Checked {
            method: parts.method.as_str(),
            url: &url,
            resource_metadata: &resource_metadata,
            headers: &parts.headers,
            body: Some(&request_body),
            rpc: rpc.as_ref(),
            kind: "gate",
            peer: peer.ip(),
        },
    )
    .await
    {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    // Forward.
    let mut headers = parts.headers.clone();
    strip_client_headers(&mut headers);
    // The one spelling of what was checked: JSON in UTF-8.
    if headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(mcp::headers::JSON),
        );
    }
    for (n, v) in identity_headers(&accepted, &calls, Some(&request_body.digest)) {
        headers.insert(n, v);
    }
    let span = custody_headers(&accepted, &mut headers);
    set_forwarded_for(
        &mut headers,
        peer.ip(),
        st.config.public.is_trusted(peer.ip()),
    );
    // The digest checked, alone: a member of another algorithm, which the server might
    // check instead (RFC 9530), would describe a body nobody checked.
    if headers.contains_key("content-digest") {
        if let Ok(v) = HeaderValue::from_str(&content_digest) {
            headers.insert(HeaderName::from_static("content-digest"), v);
        }
    }
    // The target's exact bytes, below the upstream's base path.
    let target = match target::upstream_url(&st.config.upstream, &path_q) {
        Ok(t) => t,
        Err(r) => return bad(r.status, &r.code, r.message),
    };
    let mut up = axum::http::Request::new(Body::from(bytes));
    *up.method_mut() = parts.method.clone();
    *up.headers_mut() = headers;
    match target.parse() {
        Ok(uri) => *up.uri_mut() = uri,
        Err(e) => {
            return bad(
                StatusCode::BAD_REQUEST,
                "request.url",
                format!("the upstream URL {target} is not usable: {e}"),
            )
        }
    }
    st.metrics.gate_seconds.observe(t0.elapsed().as_secs_f64());
    // The upstream call and its outcome record run in a task of their own. A client that
    // hangs up mid-call drops this handler; the call has been made all the same, and its
    // outcome is still waited for and audited.
    let outcome = AuditRecord {
        time: String::new(),
        kind: "gate.upstream",
        jti: Some(accepted.claims.jti.clone()),
        did: Some(accepted.key.did.clone()),
        method: Some(parts.method.as_str().to_owned()),
        url: Some(url.chars().take(2048).collect()),
        decision: "forwarded",
        contract: accepted.contract.as_ref().map(|c| c.digest.clone()),
        task: accepted.claims.cada.task.clone(),
        tp: accepted.claims.cada.tp.clone(),
        span,
        actors: cada_pipeline::actors(&accepted),
        dch: accepted.claims.cada.dch.clone(),
        ..AuditRecord::default()
    };
    let call = tokio::spawn(call_upstream(
        Arc::clone(&st),
        up,
        target,
        rpc,
        resource_metadata.clone(),
        outcome,
        t0,
    ));
    match call.await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::error!(error = %e, "the upstream call's task failed");
            let r = Refused::gate(
                StatusCode::BAD_GATEWAY,
                "upstream.failed",
                "the gate could not complete the upstream call",
            );
            r.answer(None, &resource_metadata)
        }
    }
}

/// Sends one admitted request upstream and returns the answer to relay (or the 502/504
/// refusal); writes the outcome record beside it, with the status and the latency since
/// the request arrived at `t0`.
async fn call_upstream(
    st: Arc<GateState>,
    up: axum::http::Request<Body>,
    target: String,
    rpc: Option<RpcBody>,
    resource_metadata: String,
    mut outcome: AuditRecord,
    t0: Instant,
) -> Response {
    let t_up = Instant::now();
    // A small JSON answer is relayed whole, head and body in one write.
    let sent = st
        .upstream
        .send_coalesced(up, st.config.upstream_timeout)
        .await;
    st.metrics
        .upstream_seconds
        .observe(t_up.elapsed().as_secs_f64());
    let (status, resp) = match sent {
        Ok(r) => {
            let (mut rp, body) = r.into_parts();
            strip_hop_by_hop(&mut rp.headers);
            let status = rp.status;
            (status, Response::from_parts(rp, body))
        }
        Err(e) => {
            let (status, code) = match e {
                UpstreamError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "upstream.timeout"),
                UpstreamError::Unreachable(_) => (StatusCode::BAD_GATEWAY, "upstream.unreachable"),
            };
            tracing::warn!(error = %e, %target, "upstream failed");
            let r = Refused::gate(status, code, e.to_string());
            (status, r.answer(rpc.as_ref(), &resource_metadata))
        }
    };
    st.count(status, "accept", "");
    outcome.time = UnixTime::now().to_string();
    outcome.upstream_status = Some(status.as_u16());
    outcome.latency_us = u64::try_from(t0.elapsed().as_micros()).ok();
    // Written beside the answer, not before it: the call has happened either way.
    let verify = Arc::clone(&st.verify);
    tokio::spawn(async move {
        if let Err(e) = verify.audit(outcome).await {
            tracing::error!(error = %e, "audit log unavailable after forwarding");
        }
    });
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn mcp_method_may_stand_for_several_calls_of_its_method_mcp_name_for_one() {
        let call = |m: &str, t: Option<&str>| mcp::McpCall {
            method: m.to_owned(),
            target: t.map(str::to_owned),
        };
        let listen = [
            call("subscriptions/listen", Some("file:///a")),
            call("subscriptions/listen", Some("file:///b")),
        ];
        let m = |v: &str| headers(&[("mcp-method", v)]);
        assert!(routing_headers_match(&m("subscriptions/listen"), &listen).is_ok());
        assert!(routing_headers_match(&m("tools/call"), &listen).is_err());
        let mixed = [listen[0].clone(), call("tools/call", Some("delete_all"))];
        assert!(routing_headers_match(&m("subscriptions/listen"), &mixed).is_err());
        assert!(routing_headers_match(&m("tools/list"), &[]).is_err());
        // Mcp-Name names exactly one call.
        let named = headers(&[
            ("mcp-method", "subscriptions/listen"),
            ("mcp-name", "file:///a"),
        ]);
        assert!(routing_headers_match(&named, &listen).is_err());
        assert!(routing_headers_match(&named, &listen[..1]).is_ok());
        assert!(routing_headers_match(&HeaderMap::new(), &mixed).is_ok());
    }

    fn accepted(
        contract: Option<cada_attestation_verifier::decide::ContractInfo>,
        token: Option<cada_protocol::access_token::AccessTokenClaims>,
    ) -> Accepted {
        Accepted {
            key: cada_attestation_verifier::AttestedKey {
                jkt: "jkt".into(),
                did: "did:key:zWorker".into(),
                hpke: None,
                owner: Some("did:key:zOwner".into()),
                platform: cada_protocol::envelope::Platform::Sim,
                measurements: std::collections::BTreeMap::new(),
                module_id: String::new(),
                att: "att".into(),
                expires: UnixTime::from_secs(10),
                emulated: false,
            },
            claims: cada_protocol::token::PopClaims {
                jti: "j".into(),
                htm: "POST".into(),
                htu: "https://mcp.example/mcp".into(),
                iat: 1,
                exp: 2,
                ath: None,
                nonce: None,
                cada: cada_protocol::token::CadaClaim::default(),
            },
            admission: cada_attestation_verifier::decide::Admission::AnyMeasurement,
            contract,
            token,
            single_use: vec![],
        }
    }

    /// Issue 24: the claims the gate forwards name who acted for whom (owner first, agent
    /// last) and the chain of contracts, whether a delegation chain or a token carrying one
    /// admitted the request.
    #[test]
    fn the_forwarded_claims_name_the_actors_and_the_chain() {
        let claims_of = |a: &Accepted| {
            let [_, (_, v)] = identity_headers(a, &[], None);
            let raw = cada_protocol::b64::decode("claims", v.to_str().unwrap(), 8192).unwrap();
            serde_json::from_slice::<serde_json::Value>(&raw).unwrap()
        };
        let link = |depth: usize, issuer: &str, subject: &str| {
            cada_attestation_verifier::decide::LinkInfo {
                digest: format!("d{depth}"),
                issuer: issuer.into(),
                subject: subject.into(),
                depth,
                budget: None,
                rate_per_second: None,
                limits: Default::default(),
                valid_until: 10,
                iat: 1,
            }
        };
        let info = cada_attestation_verifier::decide::ContractInfo {
            owner: "did:key:zOwner".into(),
            id: "urn:uuid:c".into(),
            digest: "d1".into(),
            scopes: vec![],
            tools: vec!["echo".into()],
            resources: vec![],
            prompts: vec![],
            required_ctx: vec![],
            remaining_secs: 60,
            limits: Default::default(),
            authorization_details: vec![],
            chain: vec![
                link(0, "did:key:zOwner", "did:key:zPlanner"),
                link(1, "did:key:zPlanner", "did:key:zWorker"),
            ],
        };
        let want_actors =
            serde_json::json!(["did:key:zOwner", "did:key:zPlanner", "did:key:zWorker"]);
        let c = claims_of(&accepted(Some(info.clone()), None));
        assert_eq!(c["actors"], want_actors, "{c}");
        assert_eq!(c["chain"], serde_json::json!(["d0", "d1"]), "{c}");
        assert_eq!(c["did"], "did:key:zWorker");
        let mut alone = info;
        alone.chain.clear();
        let c = claims_of(&accepted(Some(alone), None));
        assert_eq!(
            c["actors"],
            serde_json::json!(["did:key:zOwner", "did:key:zWorker"])
        );
        assert_eq!(c["chain"], serde_json::json!(["d1"]));
        let mut t: cada_protocol::access_token::AccessTokenClaims =
            serde_json::from_value(serde_json::json!({
                "iss": "https://sts.example", "sub": "did:key:zOwner",
                "client_id": "did:key:zWorker", "aud": "https://mcp.example/", "iat": 1,
                "exp": 2, "jti": "j", "cnf": {"jkt": "jkt"},
                "act": {"sub": "did:key:zWorker", "act": {"sub": "did:key:zPlanner"}},
                "cada_dch": ["d0", "d1"],
                "cada": {"platform": "sim", "msr": "m", "att": "a", "dtc": "d1"},
            }))
            .unwrap();
        let c = claims_of(&accepted(None, Some(t.clone())));
        assert_eq!(c["actors"], want_actors, "{c}");
        assert_eq!(c["chain"], serde_json::json!(["d0", "d1"]), "{c}");
        t.cada_dch.clear();
        t.act = cada_protocol::access_token::Actor::nest(&["did:key:zOwner"]);
        t.sub = "did:key:zWorker".into();
        let c = claims_of(&accepted(None, Some(t)));
        assert_eq!(
            c["actors"],
            serde_json::json!(["did:key:zOwner", "did:key:zWorker"]),
            "an older STS's token: {c}"
        );
        assert_eq!(c["chain"], serde_json::json!(["d1"]));
        let c = claims_of(&accepted(None, None));
        assert_eq!(
            (c["actors"].clone(), c["chain"].clone()),
            (serde_json::json!([]), serde_json::json!([]))
        );
    }

    #[test]
    fn look_alike_identity_headers_are_identity_headers() {
        for name in [
            "cada-agent",
            "cada-agent-claims",
            "cada_agent",
            "cada_agent_claims",
            "CADA_Agent",
            "Cada-Agent-Extra",
            "cada-agent_claims",
            "cada-agentx",
        ] {
            assert!(is_identity_header(name), "{name}");
        }
        for name in [
            "cada-agen",
            "cada-evidence",
            "x-cada-agent",
            "cada--agent",
            "cadaagent",
        ] {
            assert!(!is_identity_header(name), "{name}");
        }
    }

    #[test]
    fn client_identity_headers_and_credentials_never_pass() {
        let mut h = headers(&[
            ("cada-agent", "did:key:forged"),
            ("cada_agent", "did:key:forged"),
            ("cada_agent_claims", "e30"),
            ("CADA-Agent-Whatever", "x"),
            ("dpop", "proof"),
            ("authorization", "DPoP t"),
            ("cada-evidence", "e"),
            ("cada-contract", "c"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("accept", "application/json"),
            ("mcp-session-id", "s"),
        ]);
        strip_client_headers(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "mcp-session-id"]);
    }

    /// What a client adds so that the server acts on another method or URL than the one
    /// authorized, or reads a checked header from a copy the gate did not check: removed
    /// from every client (a trusted proxy included: the gate authorizes the request line).
    #[test]
    fn override_and_lookalike_headers_never_pass() {
        let mut h = headers(&[
            ("x-http-method-override", "DELETE"),
            ("x-http-method", "DELETE"),
            ("x-method-override", "DELETE"),
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("mcp_name", "delete_all"),
            ("Mcp_Method", "tools/call"),
            ("x_forwarded_for", "203.0.113.9"),
            ("X_Forwarded_Host", "evil.example"),
            ("content_digest", "sha-256=:AAAA:"),
            ("content_type", "application/json; charset=utf-7"),
            ("Content_Encoding", "gzip"),
            ("mcp_param_region", "us"),
            ("CADA_Task", "victim-task"),
            ("cada_agent_claims", "e30"),
            ("mcp-name", "echo"),
            ("x_custom", "kept"),
            ("accept", "application/json"),
        ]);
        strip_client_headers(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "mcp-name", "x_custom"]);
    }

    /// Forwarding headers tell a server behind the gate (its trusted proxy) who the client
    /// is and which URL it called: a client's own are removed; a trusted proxy's are kept.
    #[test]
    fn forwarding_headers_pass_only_from_a_trusted_proxy() {
        let peer: IpAddr = "192.0.2.7".parse().unwrap();
        let sent = [
            ("forwarded", "for=203.0.113.9;host=evil.example"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/admin"),
            ("x-forwarded-uri", "/admin"),
            ("x-real-ip", "203.0.113.9"),
            ("x-client-ip", "203.0.113.9"),
            ("true-client-ip", "203.0.113.9"),
            ("x-original-uri", "/admin"),
            ("accept", "application/json"),
        ];
        let mut h = headers(&sent);
        set_forwarded_for(&mut h, peer, false);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "x-forwarded-for"]);
        let mut h = headers(&sent);
        set_forwarded_for(&mut h, peer, true);
        assert_eq!(h.len(), sent.len() + 1);
        assert_eq!(h["x-forwarded-host"], "evil.example");
    }

    #[test]
    fn x_forwarded_for_is_the_peer_unless_a_trusted_proxy_sent_a_chain() {
        let peer: IpAddr = "192.0.2.7".parse().unwrap();
        let get = |h: &HeaderMap| {
            h.get_all("x-forwarded-for")
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        // A client's own value never stays leftmost: replaced.
        let mut h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "198.51.100.1"),
        ]);
        set_forwarded_for(&mut h, peer, false);
        assert_eq!(get(&h), ["192.0.2.7"]);
        let mut h = HeaderMap::new();
        set_forwarded_for(&mut h, peer, false);
        assert_eq!(get(&h), ["192.0.2.7"]);
        // A trusted proxy's chain is kept, the proxy appended, in one field.
        let mut h = headers(&[
            ("x-forwarded-for", "203.0.113.9, 10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
        ]);
        set_forwarded_for(&mut h, peer, true);
        assert_eq!(get(&h), ["203.0.113.9, 10.0.0.1, 10.0.0.2, 192.0.2.7"]);
    }
}
