//! `cada-parent proxy`: a local HTTP endpoint for MCP clients that know nothing of CADA.
//! Each request is forwarded to its upstream with a fresh proof from the daemon (and so
//! from the enclave) bound to the upstream URL, the body's digest (`Content-Digest`,
//! `cada.bd`) and the body's JSON-RPC calls (`cada.mcp`, which the enclave checks against
//! the owner's contract before it signs). The proxy answers the server's challenges itself:
//!
//! * `error="use_dpop_nonce"`: the `DPoP-Nonce` is kept per upstream, the call retried;
//! * `error="use_attestation"` or an unknown contract: retried with `CADA-Evidence` and
//!   `CADA-Contract` (sent on the first call to each upstream anyway);
//! * an upstream whose RFC 9728 metadata names `authorization_servers`: its calls carry an
//!   access token the daemon obtains from its STS (`cada-parent serve --sts`).
//!
//! Refusals reach the MCP client as the JSON-RPC errors the gate wrote (HTTP 200, the
//! original status in `CADA-Refused-Status`), so the client app shows the rule instead of a
//! bare "error response"; `--pass-refusals` keeps the HTTP status instead.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cada_net::upstream::{strip_hop_by_hop, Upstream, UpstreamError};
use cada_protocol::mcp;
use cada_protocol::trace::TraceParent;
use http_body_util::BodyExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};

use crate::api::PopAnswer;

/// Largest request body the proxy reads (the whole body is digested before it is sent).
pub const MAX_BODY: usize = mcp::MAX_BODY;

/// One upstream: requests whose path starts with `prefix` go to `upstream` + the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Local path prefix (`/` … ), without a trailing slash unless it is `/`.
    pub prefix: String,
    /// Upstream base URL, without a trailing slash.
    pub upstream: String,
}

impl Route {
    /// `[PREFIX=]URL`: without a prefix, the URL's own path is the local prefix (only the
    /// origin changes). `http` upstreams are allowed for loopback hosts only: proofs and
    /// tokens should not cross a network in clear.
    pub fn parse(s: &str) -> Result<Route, String> {
        let (prefix, url) = match s.split_once('=') {
            Some((p, u)) if p.starts_with('/') => (Some(p.to_owned()), u),
            _ => (None, s),
        };
        let u = url::Url::parse(url).map_err(|e| format!("--upstream {s}: {e}"))?;
        let loopback = match u.host() {
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        match u.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(format!(
                    "--upstream {s}: https, or http to a loopback host only"
                ))
            }
        }
        if u.query().is_some() || u.fragment().is_some() || !u.username().is_empty() {
            return Err(format!("--upstream {s}: no query, fragment or user"));
        }
        let upstream = u.as_str().trim_end_matches('/').to_owned();
        let prefix = prefix.unwrap_or_else(|| u.path().to_owned());
        let prefix = match prefix.trim_end_matches('/') {
            "" => "/".to_owned(),
            p => p.to_owned(),
        };
        Ok(Route { prefix, upstream })
    }

    /// The upstream URL for local `path` (and query), if this route takes it.
    fn map(&self, path: &str, query: Option<&str>) -> Option<(String, String)> {
        let rest = if self.prefix == "/" {
            path
        } else {
            let r = path.strip_prefix(&self.prefix)?;
            if !(r.is_empty() || r.starts_with('/')) {
                return None;
            }
            r
        };
        let htu = format!("{}{rest}", self.upstream);
        let full = match query {
            Some(q) => format!("{htu}?{q}"),
            None => htu.clone(),
        };
        Some((htu, full))
    }
}

/// What the proxy remembers per route.
#[derive(Default)]
pub(crate) struct Peer {
    /// Evidence (and contract) went with an answered call.
    pub(crate) introduced: bool,
    /// The last `DPoP-Nonce` the upstream gave.
    nonce: Option<String>,
    /// `Some(resource)` when the upstream's metadata names authorization servers (then
    /// calls carry an access token for `resource`); `Some(None)` when it names none;
    /// `None` before the metadata was read.
    token_resource: Option<Option<String>>,
}

/// Labels of the local-refusal counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: &'static str,
}

/// Labels of the step-up counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
}

/// The proxy's metrics (`/_cada/metrics`).
struct Metrics {
    registry: Registry,
    refused: Family<CodeLabels, Counter>,
    step_up: Family<EventLabels, Counter>,
    metadata_ignored: Counter,
    conn: cada_net::ConnStats,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let refused = Family::<CodeLabels, Counter>::default();
        registry.register(
            "cada_parent_proxy_refused",
            "requests the proxy refused before forwarding (Host, Origin, bearer token), by code",
            refused.clone(),
        );
        let step_up = Family::<EventLabels, Counter>::default();
        registry.register(
            "cada_parent_proxy_step_up",
            "step-up events: filed, asked (an elicitation answered), approved, denied, expired, \
             declined, failed (filing or polling), refused_again (refused after approval), \
             keepalive (an SSE comment of a held call)",
            step_up.clone(),
        );
        let metadata_ignored = Counter::default();
        registry.register(
            "cada_parent_proxy_metadata_ignored",
            "RFC 9728 metadata ignored because its resource is not the URL it was fetched for",
            metadata_ignored.clone(),
        );
        let conn = cada_net::ConnStats::default();
        conn.register(&mut registry, "cada_parent_proxy");
        Metrics {
            registry,
            refused,
            step_up,
            metadata_ignored,
            conn,
        }
    }
}

/// Shared state.
pub struct ProxyState {
    pub(crate) socket: PathBuf,
    routes: Vec<Route>,
    upstream: Upstream,
    peers: Mutex<HashMap<usize, Peer>>,
    pub(crate) daemon: crate::daemon::Pool,
    timeout: Duration,
    pub(crate) pass_refusals: bool,
    metrics: Metrics,
    /// Step-up consent (`--step-up`): sessions, pending requests.
    pub(crate) step_up: crate::stepup::StepUp,
    /// The task of requests without a `CADA-Task` header (`--task`).
    task: std::sync::OnceLock<String>,
    /// The trace this proxy starts for requests of a task that come without a
    /// `traceparent` (one trace id for the proxy's life, a new parent id per request).
    trace: TraceParent,
}

/// The chain of custody of one request: its task and traceparent, as the proof signs them
/// and the upstream gets them (kept in the request's extensions).
#[derive(Clone, Debug, Default)]
pub(crate) struct Custody {
    task: Option<String>,
    traceparent: Option<String>,
}

impl ProxyState {
    /// A proxy asking the daemon at `socket` for proofs, forwarding by `routes`, with
    /// step-up in its default mode (`ask`).
    pub fn new(
        socket: PathBuf,
        routes: Vec<Route>,
        upstream: Upstream,
        timeout: Duration,
        pass_refusals: bool,
    ) -> Arc<Self> {
        Self::with_step_up(
            socket,
            routes,
            upstream,
            timeout,
            pass_refusals,
            crate::stepup::Mode::Ask,
        )
    }

    /// As [`ProxyState::new`], with the step-up mode (`--step-up`, [`crate::stepup`]).
    pub fn with_step_up(
        socket: PathBuf,
        mut routes: Vec<Route>,
        upstream: Upstream,
        timeout: Duration,
        pass_refusals: bool,
        step_up: crate::stepup::Mode,
    ) -> Arc<Self> {
        // The longest prefix wins.
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Arc::new(ProxyState {
            socket,
            routes,
            upstream,
            peers: Mutex::new(HashMap::new()),
            daemon: crate::daemon::Pool::default(),
            timeout,
            pass_refusals,
            metrics: Metrics::new(),
            step_up: crate::stepup::StepUp::new(step_up),
            task: std::sync::OnceLock::new(),
            trace: TraceParent::new_root(),
        })
    }

    /// Asks for proofs (and step-up filings) of `daemon`, the daemon's router in this
    /// process (`cada-parent proxy --enclave`), instead of the socket. Once; `false` if set.
    pub fn sign_in_process(&self, daemon: axum::Router) -> bool {
        self.daemon.in_process(daemon)
    }

    /// Sets the task of requests that name none (`--task`), once; refused `trace.task`
    /// unless it is 1 to 128 bytes of `[A-Za-z0-9._:-]`.
    pub fn set_task(&self, task: &str) -> Result<(), cada_protocol::trace::TraceError> {
        cada_protocol::trace::check_task(task)?;
        let _ = self.task.set(task.to_owned());
        Ok(())
    }

    /// The custody of a request with these headers: the `CADA-Task` header or `--task`; the
    /// client's `traceparent`, or, for a task without one, a new span of this proxy's
    /// trace. A malformed one is refused (`trace.task`, `trace.traceparent`): the proof
    /// would sign it.
    fn custody(&self, h: &HeaderMap) -> Result<Custody, cada_protocol::trace::TraceError> {
        use cada_protocol::trace::{self, TraceError};
        let one = |name: &str, err: TraceError| -> Result<Option<String>, TraceError> {
            let mut all = h.get_all(name).iter();
            match (all.next(), all.next()) {
                (None, _) => Ok(None),
                (Some(v), None) => v.to_str().map(|s| Some(s.to_owned())).map_err(|_| err),
                (Some(_), Some(_)) => Err(err),
            }
        };
        let task = one(
            trace::TASK_HEADER,
            TraceError::Task("CADA-Task is repeated or not ASCII"),
        )?
        .or_else(|| self.task.get().cloned());
        if let Some(t) = &task {
            trace::check_task(t)?;
        }
        let traceparent = match one(
            trace::TRACEPARENT_HEADER,
            TraceError::Traceparent("traceparent is repeated or not ASCII"),
        )? {
            Some(tp) => Some(TraceParent::parse(&tp)?.to_string()),
            None if task.is_some() => Some(self.trace.child(trace::new_span_id()).to_string()),
            None => None,
        };
        Ok(Custody { task, traceparent })
    }

    /// The connection counters the proxy's listener updates (in `/_cada/metrics`).
    pub fn conn_stats(&self) -> cada_net::ConnStats {
        self.metrics.conn.clone()
    }

    /// Counts one request refused before forwarding.
    pub(crate) fn count_refusal(&self, code: &'static str) {
        self.metrics
            .refused
            .get_or_create(&CodeLabels { code })
            .inc();
    }

    /// Counts one step-up event (`cada_parent_proxy_step_up_total{event}`).
    pub(crate) fn count_step_up(&self, event: &'static str) {
        self.metrics
            .step_up
            .get_or_create(&EventLabels { event })
            .inc();
    }

    pub(crate) fn peer<T>(&self, route: usize, f: impl FnOnce(&mut Peer) -> T) -> Option<T> {
        self.peers
            .lock()
            .ok()
            .map(|mut m| f(m.entry(route).or_default()))
    }
}

/// The router: `/_cada/metrics` and `/_cada/healthz` answered here, every other path
/// proxied; every request first passes `access` (Host, Origin, bearer token; see
/// [`crate::access`]).
pub fn router(st: Arc<ProxyState>, access: crate::access::Access) -> axum::Router {
    let guard_state = (st.clone(), Arc::new(access));
    axum::Router::new()
        .route("/_cada/healthz", axum::routing::get(|| async { "ok\n" }))
        .route("/_cada/metrics", axum::routing::get(metrics))
        .fallback(forward)
        .with_state(st)
        .layer(axum::middleware::from_fn_with_state(
            guard_state,
            crate::access::guard,
        ))
}

async fn metrics(State(st): State<Arc<ProxyState>>) -> Response {
    cada_net::metrics_response(&st.metrics.registry)
}

/// A local answer in the shape a client shows: one JSON-RPC error for the request.
pub(crate) fn local_error(
    status: StatusCode,
    code: &str,
    message: &str,
    body: Option<&mcp::Body>,
) -> Response {
    let id = body
        .and_then(|b| b.messages.iter().find_map(|m| m.id.as_ref()))
        .and_then(|id| serde_json::from_str::<Value>(id.get()).ok())
        .unwrap_or(Value::Null);
    let doc = json!({"jsonrpc": "2.0", "id": id, "error": {
        "code": -32000, "message": format!("[{code}] {message}"),
        "data": {"code": code, "status": status.as_u16(), "by": "cada-parent proxy"}}});
    (status, axum::Json(doc)).into_response()
}

/// The parameters of a `WWW-Authenticate: DPoP …` challenge.
pub(crate) fn challenge(h: &HeaderMap) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for v in h.get_all(header::WWW_AUTHENTICATE) {
        let Ok(v) = v.to_str() else { continue };
        let Some(params) = v.trim().strip_prefix("DPoP") else {
            continue;
        };
        // name="value" pairs; values are quoted strings without escapes (the gate's).
        let mut rest = params;
        while let Some(eq) = rest.find('=') {
            let name = rest[..eq].trim().trim_start_matches(',').trim().to_owned();
            let after = &rest[eq + 1..];
            let (value, next) = match after.strip_prefix('"') {
                Some(q) => match q.find('"') {
                    Some(end) => (&q[..end], &q[end + 1..]),
                    None => (q, ""),
                },
                None => match after.find(',') {
                    Some(end) => (&after[..end], &after[end..]),
                    None => (after, ""),
                },
            };
            out.insert(name, value.trim().to_owned());
            rest = next;
        }
    }
    out
}

/// One request on its way upstream: where it goes, its body and what the proof binds.
pub(crate) struct Outgoing {
    /// The client's request head.
    pub(crate) parts: axum::http::request::Parts,
    /// Index of the route that takes it.
    pub(crate) route_ix: usize,
    /// The upstream URL without query (the proof's `htu`).
    pub(crate) htu: String,
    /// The upstream URL with query.
    pub(crate) target: String,
    /// The body as sent upstream.
    pub(crate) bytes: Bytes,
    /// Its JSON-RPC messages, when it is JSON-RPC.
    pub(crate) rpc: Option<mcp::Body>,
    calls: Vec<mcp::McpCall>,
    bd: String,
    content_digest: String,
}

impl Outgoing {
    fn new(
        parts: axum::http::request::Parts,
        route_ix: usize,
        htu: String,
        target: String,
        bytes: Bytes,
    ) -> Self {
        let rpc = if bytes.is_empty() {
            None
        } else {
            mcp::parse_body(&bytes).ok()
        };
        let calls = rpc.as_ref().map(mcp::Body::calls).unwrap_or_default();
        let (bd, content_digest) = mcp::digests(&bytes);
        Outgoing {
            parts,
            route_ix,
            htu,
            target,
            bytes,
            rpc,
            calls,
            bd,
            content_digest,
        }
    }

    /// The same request with another body (digests, calls and `Content-Length` anew).
    pub(crate) fn with_body(mut self, bytes: Bytes) -> Self {
        self.parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        Outgoing::new(self.parts, self.route_ix, self.htu, self.target, bytes)
    }
}

/// What became of a request sent on with a proof.
pub(crate) enum Relayed {
    /// The daemon (the enclave, usually) refused to sign: its message, which names the rule.
    NotSigned(String),
    /// The upstream's answer, not yet presented ([`present`]).
    Answered(Response),
    /// A local failure, already the answer.
    Failed(Response),
}

impl Relayed {
    /// The answer the client gets.
    pub(crate) async fn finish(self, st: &ProxyState, rpc: Option<&mcp::Body>) -> Response {
        match self {
            Relayed::NotSigned(e) => {
                let status = if e.contains("contract-denied") || e.contains("policy-denied") {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::BAD_GATEWAY
                };
                present(st, local_error(status, "proxy.sign", &e, rpc), rpc).await
            }
            Relayed::Answered(resp) => present(st, resp, rpc).await,
            Relayed::Failed(resp) => resp,
        }
    }
}

async fn forward(State(st): State<Arc<ProxyState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let Some((route_ix, (htu, target))) = st
        .routes
        .iter()
        .enumerate()
        .find_map(|(i, r)| r.map(&path, parts.uri.query()).map(|m| (i, m)))
    else {
        return local_error(
            StatusCode::NOT_FOUND,
            "proxy.no_route",
            &format!("no --upstream serves {path}"),
            None,
        );
    };
    let bytes: Bytes = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            return local_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "proxy.body",
                &format!("the body could not be read within {MAX_BODY} bytes: {e}"),
                None,
            )
        }
    };
    // The upstream must read the JSON the enclave signs for: the gate's rule
    // (cada_protocol::mcp::headers), checked before anything is signed.
    let pairs = || {
        parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
    };
    if let Err(e) = mcp::headers::check_body_headers(pairs(), !bytes.is_empty()) {
        return header_refusal(&st, &e);
    }
    let mut parts = parts;
    match st.custody(&parts.headers) {
        Ok(c) => {
            parts.extensions.insert(c);
        }
        Err(e) => {
            st.count_refusal(e.code());
            return local_error(StatusCode::BAD_REQUEST, e.code(), &e.to_string(), None);
        }
    }
    let out = Outgoing::new(parts, route_ix, htu, target, bytes);
    let pairs = || {
        out.parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
    };
    if let Err(e) = mcp::headers::check_param_headers(pairs(), out.rpc.as_ref()) {
        return header_refusal(&st, &e);
    }
    if st.step_up.active() {
        // Step-up (crate::stepup): a refused tool call is put to the owner; an `initialize`
        // tells which answer the client understands.
        return crate::stepup::flow::forward(&st, out).await;
    }
    let relayed = relay(&st, &out).await;
    relayed.finish(&st, out.rpc.as_ref()).await
}

/// A request whose headers would make the upstream read its body otherwise than it is
/// signed for ([`mcp::headers`]): answered here, nothing signed.
fn header_refusal(st: &ProxyState, e: &cada_protocol::ProtocolError) -> Response {
    let code = e.code();
    st.count_refusal(code);
    let status =
        StatusCode::from_u16(mcp::headers::http_status(e)).unwrap_or(StatusCode::BAD_REQUEST);
    local_error(status, code, &e.to_string(), None)
}

/// Sends `out` upstream with a proof from the daemon, answering the upstream's nonce and
/// evidence challenges (at most 3 attempts).
pub(crate) async fn relay(st: &ProxyState, out: &Outgoing) -> Relayed {
    let (parts, route_ix, htu, rpc) = (&out.parts, out.route_ix, &out.htu, out.rpc.as_ref());
    // The upstream's metadata, read once: does it want access tokens?
    let known = st.peer(route_ix, |p| p.token_resource.clone()).flatten();
    let token_resource = match known {
        Some(t) => t,
        None => {
            // Remembered once known; an unreachable or failing metadata endpoint is asked
            // again on the next request.
            match discover_token_resource(st, htu).await {
                Some(t) => {
                    st.peer(route_ix, |p| p.token_resource = Some(t.clone()));
                    t
                }
                None => None,
            }
        }
    };

    let mut force_evidence = false;
    for _attempt in 0..3 {
        let (introduced, nonce) = st
            .peer(route_ix, |p| (p.introduced, p.nonce.clone()))
            .unwrap_or((false, None));
        let with_evidence = token_resource.is_none() && (!introduced || force_evidence);
        let mut ask = json!({
            "method": parts.method.as_str(), "url": htu, "nonce": nonce,
            "with_evidence": with_evidence, "bd": out.bd, "mcp": out.calls,
        });
        if let Some(r) = &token_resource {
            ask["resource"] = json!(r);
        }
        let custody = parts
            .extensions
            .get::<Custody>()
            .cloned()
            .unwrap_or_default();
        if let Some(t) = &custody.task {
            ask["task"] = json!(t);
        }
        if let Some(tp) = &custody.traceparent {
            ask["traceparent"] = json!(tp);
        }
        let pop = match st
            .daemon
            .call(&st.socket, "POST", "/v1/pop", Some(ask))
            .await
        {
            Ok(b) => match serde_json::from_slice::<PopAnswer>(&b) {
                Ok(p) => p,
                Err(e) => {
                    return Relayed::Failed(local_error(
                        StatusCode::BAD_GATEWAY,
                        "proxy.daemon",
                        &format!("the daemon's answer does not decode: {e}"),
                        rpc,
                    ))
                }
            },
            // The enclave (or the daemon) refused to sign: its message names the rule.
            Err(e) => return Relayed::NotSigned(e),
        };
        let mut headers = parts.headers.clone();
        strip_hop_by_hop(&mut headers);
        // `host` too: the upstream's comes from the URL (the client named this proxy).
        for n in [
            "host",
            "dpop",
            "cada-evidence",
            "cada-contract",
            "content-digest",
            "cada-task",
            "traceparent",
        ] {
            headers.remove(n);
        }
        let put = |h: &mut HeaderMap, n: &'static str, v: &str| {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(HeaderName::from_static(n), v);
            }
        };
        put(&mut headers, "dpop", &pop.dpop);
        // What the proof signed, for servers that read the headers (the gate reads the
        // proof).
        if let Some(t) = &custody.task {
            put(&mut headers, "cada-task", t);
        }
        if let Some(tp) = &custody.traceparent {
            put(&mut headers, "traceparent", tp);
        }
        put(&mut headers, "content-digest", &out.content_digest);
        // The one spelling of what was checked (forward): JSON in UTF-8.
        if headers.contains_key(header::CONTENT_TYPE) {
            put(&mut headers, "content-type", mcp::headers::JSON);
        }
        if let Some(a) = &pop.authorization {
            put(&mut headers, "authorization", a);
        }
        if let Some(e) = &pop.evidence {
            put(&mut headers, "cada-evidence", e);
        }
        if let Some(c) = &pop.contract {
            put(&mut headers, "cada-contract", c);
        }
        let mut up = axum::http::Request::new(Body::from(out.bytes.clone()));
        *up.method_mut() = parts.method.clone();
        *up.headers_mut() = headers;
        match out.target.parse() {
            Ok(u) => *up.uri_mut() = u,
            Err(e) => {
                return Relayed::Failed(local_error(
                    StatusCode::BAD_GATEWAY,
                    "proxy.url",
                    &format!("{}: {e}", out.target),
                    rpc,
                ))
            }
        }
        // A small JSON answer is relayed whole, head and body in one write.
        let resp = match st.upstream.send_coalesced(up, st.timeout).await {
            Ok(r) => r,
            Err(e) => {
                let status = match e {
                    UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                    UpstreamError::Unreachable(_) => StatusCode::BAD_GATEWAY,
                };
                return Relayed::Failed(local_error(status, "proxy.upstream", &e.to_string(), rpc));
            }
        };
        let (mut rp, incoming) = resp.into_parts();
        if let Some(n) = rp.headers.get("dpop-nonce").and_then(|v| v.to_str().ok()) {
            let n = n.to_owned();
            st.peer(route_ix, |p| p.nonce = Some(n));
        }
        if rp.status == StatusCode::UNAUTHORIZED {
            let c = challenge(&rp.headers);
            let error = c.get("error").map(String::as_str);
            let desc = c.get("error_description").map(String::as_str).unwrap_or("");
            let retry = match error {
                Some("use_dpop_nonce") => rp.headers.contains_key("dpop-nonce"),
                Some("use_attestation") => {
                    force_evidence = true;
                    true
                }
                _ if desc.contains("contract.required") => {
                    force_evidence = true;
                    true
                }
                _ => false,
            };
            if retry {
                // Drain the refusal before the next attempt (the connection is reused).
                let _ = incoming.collect().await;
                continue;
            }
        }
        if rp.status.is_success() && with_evidence {
            st.peer(route_ix, |p| p.introduced = true);
        }
        strip_hop_by_hop(&mut rp.headers);
        return Relayed::Answered(Response::from_parts(rp, incoming));
    }
    Relayed::Failed(local_error(
        StatusCode::BAD_GATEWAY,
        "proxy.retries",
        "the upstream kept asking for a nonce or evidence; gave up after 3 attempts",
        rpc,
    ))
}

/// A refusal (4xx/5xx with a JSON-RPC error body) becomes a 200 answer carrying those
/// errors, unless `--pass-refusals`; other answers pass unchanged (streamed).
pub(crate) async fn present(st: &ProxyState, resp: Response, rpc: Option<&mcp::Body>) -> Response {
    let status = resp.status();
    let asks = rpc.is_some_and(|b| {
        b.messages
            .iter()
            .any(|m| m.call.is_some() && m.id.is_some())
    });
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if st.pass_refusals || status.is_success() || !asks || !is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = http_body_util::Limited::new(body, 256 * 1024)
        .collect()
        .await
    else {
        return local_error(
            status,
            "proxy.refusal",
            "the refusal could not be read",
            rpc,
        );
    };
    let bytes = bytes.to_bytes();
    let has_error = serde_json::from_slice::<Value>(&bytes).is_ok_and(|v| match &v {
        Value::Array(a) => a.iter().any(|m| m.get("error").is_some()),
        m => m.get("error").is_some(),
    });
    if !has_error {
        return Response::from_parts(parts, Body::from(bytes));
    }
    // A single error answering a single request carries its id (an MCP client drops an
    // answer whose id matches no request, and the call would hang).
    let ids: Vec<&str> = rpc
        .map(|b| {
            b.messages
                .iter()
                .filter(|m| m.call.is_some())
                .filter_map(|m| m.id.as_ref())
                .map(|i| i.get())
                .collect()
        })
        .unwrap_or_default();
    let bytes = match (serde_json::from_slice::<Value>(&bytes), ids.as_slice()) {
        (Ok(Value::Object(mut m)), [id]) if m.get("id").is_none_or(Value::is_null) => {
            m.insert("id".into(), serde_json::from_str(id).unwrap_or(Value::Null));
            Bytes::from(Value::Object(m).to_string())
        }
        _ => bytes,
    };
    parts.status = StatusCode::OK;
    if let Ok(v) = HeaderValue::from_str(status.as_str()) {
        parts
            .headers
            .insert(HeaderName::from_static("cada-refused-status"), v);
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

/// The resource an upstream wants access tokens for, from its RFC 9728 metadata (one GET,
/// 5 s): `Some(Some(resource))` when it names authorization servers, `Some(None)` when it
/// names none or serves no metadata (404 and other 4xx), `None` when that could not be told
/// (unreachable, 5xx, a malformed document): ask again later.
async fn discover_token_resource(st: &ProxyState, htu: &str) -> Option<Option<String>> {
    // 5 s for the whole answer, body included: an upstream that answers the metadata GET
    // with an endless stream has no metadata (and must not hold the first request).
    tokio::time::timeout(Duration::from_secs(5), read_metadata(st, htu))
        .await
        .unwrap_or(Some(None))
}

async fn read_metadata(st: &ProxyState, htu: &str) -> Option<Option<String>> {
    let u = url::Url::parse(htu).ok()?;
    let origin = u.origin().ascii_serialization();
    let path = match u.path() {
        "/" => "",
        p => p,
    };
    let meta = format!("{origin}/.well-known/oauth-protected-resource{path}");
    let req = axum::http::Request::get(meta.as_str())
        .body(Body::empty())
        .ok()?;
    let resp = st.upstream.send(req, Duration::from_secs(5)).await.ok()?;
    if resp.status().is_client_error() {
        return Some(None);
    }
    if !resp.status().is_success() {
        return None;
    }
    let json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Some(None);
    }
    let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
        .collect()
        .await
        .ok()?
        .to_bytes();
    let doc: Value = serde_json::from_slice(&body).ok()?;
    let servers = doc.get("authorization_servers").and_then(Value::as_array);
    if servers.is_none_or(Vec::is_empty) {
        return Some(None);
    }
    let resource = doc.get("resource")?.as_str()?.to_owned();
    if !same_resource(&resource, htu) {
        // RFC 9728 §3.3: metadata naming another resource MUST NOT be used, or any server
        // could name a resource it is not (the gate behind it, another tenant) and have the
        // daemon mint a token for that resource, then receive it.
        st.metrics.metadata_ignored.inc();
        tracing::warn!(
            %resource, fetched_for = %htu, metadata = %meta,
            "protected-resource metadata names another resource than the one it was fetched \
             for (RFC 9728 §3.3): ignored; calls to this upstream carry proofs, no access tokens"
        );
        return Some(None);
    }
    tracing::info!(%resource, "upstream asks for access tokens: calls will carry the daemon's STS tokens");
    Some(Some(resource))
}

/// Whether the `resource` of metadata is the resource identifier it was fetched for
/// (RFC 9728 §3.3: identical), reading an empty path as `/` (`https://a.example` and
/// `https://a.example/` derive the same metadata URL).
fn same_resource(resource: &str, fetched_for: &str) -> bool {
    fn root_less(s: &str) -> &str {
        match s.strip_suffix('/') {
            Some(b)
                if b.split_once("://")
                    .is_some_and(|(_, rest)| !rest.contains('/')) =>
            {
                b
            }
            _ => s,
        }
    }
    root_less(resource) == root_less(fetched_for)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chain of custody: the client's `CADA-Task` wins over `--task`, its traceparent is
    /// kept as is, a task without one gets a span of the proxy's own trace, and malformed,
    /// repeated or non-ASCII values are refused with their codes.
    #[test]
    fn custody_comes_from_the_client_or_the_flag_and_is_checked() {
        const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let st = ProxyState::new(
            PathBuf::from("/nonexistent"),
            vec![],
            Upstream::new(&cada_net::fetch::Fetcher::mozilla().unwrap()),
            Duration::from_secs(5),
            false,
        );
        let h = |pairs: &[(&str, &[u8])]| {
            let mut h = HeaderMap::new();
            for (n, v) in pairs {
                h.append(
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    HeaderValue::from_bytes(v).unwrap(),
                );
            }
            h
        };
        let none = st.custody(&h(&[])).unwrap();
        assert_eq!((none.task, none.traceparent), (None, None));
        let c = st.custody(&h(&[("traceparent", TP.as_bytes())])).unwrap();
        assert_eq!((c.task, c.traceparent.as_deref()), (None, Some(TP)));
        assert_eq!(st.set_task("a b").unwrap_err().code(), "trace.task");
        st.set_task("flag-task").unwrap();
        let c = st.custody(&h(&[])).unwrap();
        assert_eq!(c.task.as_deref(), Some("flag-task"));
        let started = TraceParent::parse(c.traceparent.as_deref().unwrap()).unwrap();
        let again = st.custody(&h(&[])).unwrap();
        let again = TraceParent::parse(again.traceparent.as_deref().unwrap()).unwrap();
        assert_eq!(started.trace_id, again.trace_id, "one trace for the proxy");
        assert_ne!(started.parent_id, again.parent_id, "a new span per request");
        let c = st
            .custody(&h(&[
                ("cada-task", b"header-task"),
                ("traceparent", TP.as_bytes()),
            ]))
            .unwrap();
        assert_eq!(
            (c.task.as_deref(), c.traceparent.as_deref()),
            (Some("header-task"), Some(TP))
        );
        for (pairs, code) in [
            (vec![("cada-task", &b"a/b"[..])], "trace.task"),
            (vec![("cada-task", &b"t\xe9"[..])], "trace.task"),
            (
                vec![("cada-task", &b"a"[..]), ("cada-task", &b"b"[..])],
                "trace.task",
            ),
            (vec![("traceparent", &b"00-x"[..])], "trace.traceparent"),
            (
                vec![
                    ("traceparent", TP.as_bytes()),
                    ("traceparent", TP.as_bytes()),
                ],
                "trace.traceparent",
            ),
        ] {
            let e = st.custody(&h(&pairs)).unwrap_err();
            assert_eq!(e.code(), code, "{pairs:?}");
        }
    }

    #[test]
    fn routes_map_prefixes_and_refuse_clear_text_to_remote_hosts() {
        let r = Route::parse("http://127.0.0.1:9000/mcp").unwrap();
        assert_eq!(r.prefix, "/mcp");
        assert_eq!(
            r.map("/mcp", Some("a=1")),
            Some((
                "http://127.0.0.1:9000/mcp".into(),
                "http://127.0.0.1:9000/mcp?a=1".into()
            ))
        );
        assert_eq!(r.map("/mcpx", None), None);
        let r = Route::parse("/gh=https://gh.example/mcp/").unwrap();
        assert_eq!(r.prefix, "/gh");
        assert_eq!(r.map("/gh/x", None).unwrap().0, "https://gh.example/mcp/x");
        assert!(Route::parse("http://mcp.example.com/mcp").is_err());
        assert!(Route::parse("https://u@mcp.example.com").is_err());
        assert!(Route::parse("ftp://a").is_err());
    }

    #[tokio::test]
    async fn metadata_answered_with_an_endless_stream_is_no_metadata() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n9\r\ndata: x\n\n\r\n")
                        .await;
                    tokio::time::sleep(Duration::from_secs(30)).await;
                });
            }
        });
        let st = ProxyState::new(
            PathBuf::from("/nonexistent"),
            vec![],
            Upstream::new(&cada_net::fetch::Fetcher::mozilla().unwrap()),
            Duration::from_secs(5),
            false,
        );
        let url = format!("http://{addr}/mcp");
        let asked = discover_token_resource(&st, &url);
        // Answered without waiting for a stream that never ends.
        let got = tokio::time::timeout(Duration::from_secs(4), asked).await;
        assert_eq!(got.expect("no hang"), Some(None));
    }

    /// An upstream that answers every metadata GET with `doc` (JSON).
    async fn metadata_server(doc: Value) -> std::net::SocketAddr {
        let app = axum::Router::new().fallback(move || {
            let doc = doc.clone();
            async move { axum::Json(doc) }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        addr
    }

    /// Finding 1 of docs/reviews/grants-1.md: a charset the upstream would decode by is
    /// refused before anything is signed (the daemon here does not exist: a request that
    /// got as far as signing answers `proxy.sign`).
    #[tokio::test]
    async fn body_headers_that_change_how_the_server_reads_the_body_are_refused_before_signing() {
        let st = ProxyState::new(
            PathBuf::from("/nonexistent"),
            vec![Route::parse("/mcp=http://127.0.0.1:9/mcp").unwrap()],
            Upstream::new(&cada_net::fetch::Fetcher::mozilla().unwrap()),
            Duration::from_secs(5),
            true,
        );
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"transfer","arguments":{"to":"alice"}}}"#;
        let send = |headers: &[(&str, &str)]| {
            let mut r = Request::new(Body::from(body));
            *r.method_mut() = axum::http::Method::POST;
            *r.uri_mut() = "/mcp".parse().unwrap();
            for (n, v) in headers {
                r.headers_mut().append(
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            forward(State(Arc::clone(&st)), r)
        };
        let code = |resp: Response| async move {
            let status = resp.status();
            let b = resp.into_body().collect().await.unwrap().to_bytes();
            let v: Value = serde_json::from_slice(&b).unwrap();
            (
                status.as_u16(),
                v["error"]["data"]["code"].as_str().unwrap_or("").to_owned(),
            )
        };
        for ct in [
            "application/json; charset=utf-7",
            "application/json;charset=\"UTF-7\"",
            "application/json; charset=utf-16le",
            "Application/JSON; Charset=UTF7",
            "application/json; charset=utf-8; x=y",
            "text/plain",
        ] {
            assert_eq!(
                code(send(&[("content-type", ct)]).await).await,
                (415, mcp::headers::CONTENT_TYPE.to_owned()),
                "{ct}"
            );
        }
        assert_eq!(
            code(send(&[]).await).await,
            (415, mcp::headers::CONTENT_TYPE.to_owned())
        );
        assert_eq!(
            code(
                send(&[
                    ("content-type", "application/json"),
                    ("content-encoding", "gzip")
                ])
                .await
            )
            .await,
            (415, mcp::headers::CONTENT_ENCODING.to_owned())
        );
        assert_eq!(
            code(
                send(&[
                    ("content-type", "application/json"),
                    ("mcp-param-to", "bob")
                ])
                .await
            )
            .await,
            (400, mcp::headers::PARAM_HEADER.to_owned())
        );
        // What the rule admits goes on to be signed.
        for ok in [
            &[("content-type", "application/json")][..],
            &[("content-type", "application/json; charset=\"utf-8\"")],
            &[
                ("content-type", "application/json"),
                ("mcp-param-to", "alice"),
            ],
        ] {
            assert_eq!(code(send(ok).await).await.1, "proxy.sign", "{ok:?}");
        }
    }

    fn test_state() -> Arc<ProxyState> {
        ProxyState::new(
            PathBuf::from("/nonexistent"),
            vec![],
            Upstream::new(&cada_net::fetch::Fetcher::mozilla().unwrap()),
            Duration::from_secs(5),
            false,
        )
    }

    #[tokio::test]
    async fn metadata_naming_another_resource_is_ignored_and_counted() {
        // A third-party server whose metadata names the gate as its resource, to have the
        // daemon mint (and the proxy send it) a token for the gate.
        let gate = "https://gate.example/mcp";
        let hostile = metadata_server(json!({
            "resource": gate,
            "authorization_servers": ["https://sts.example"],
        }))
        .await;
        let st = test_state();
        let url = format!("http://{hostile}/mcp");
        assert_eq!(discover_token_resource(&st, &url).await, Some(None));
        assert_eq!(st.metrics.metadata_ignored.get(), 1);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &st.metrics.registry).unwrap();
        assert!(
            text.contains("cada_parent_proxy_metadata_ignored_total 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn metadata_naming_its_own_resource_is_used() {
        // The port is known only once bound: serve a document naming the server itself.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let own = format!("http://{addr}/mcp");
        let doc = json!({"resource": own, "authorization_servers": ["https://sts.example"]});
        let app = axum::Router::new().fallback(move || {
            let doc = doc.clone();
            async move { axum::Json(doc) }
        });
        tokio::spawn(async move { axum::serve(l, app).await });
        let st = test_state();
        assert_eq!(
            discover_token_resource(&st, &own).await,
            Some(Some(own.clone()))
        );
        assert_eq!(st.metrics.metadata_ignored.get(), 0);
    }

    #[test]
    fn resources_compare_as_rfc_9728_asks() {
        assert!(same_resource(
            "https://g.example/mcp",
            "https://g.example/mcp"
        ));
        assert!(same_resource("https://g.example", "https://g.example/"));
        assert!(same_resource("https://g.example/", "https://g.example"));
        assert!(!same_resource(
            "https://g.example/mcp/",
            "https://g.example/mcp"
        ));
        assert!(!same_resource(
            "https://g.example/",
            "https://g.example/mcp"
        ));
        assert!(!same_resource(
            "https://gate.example/mcp",
            "https://g.example/mcp"
        ));
        assert!(!same_resource(
            "https://g.example/x/../mcp",
            "https://g.example/mcp"
        ));
        assert!(!same_resource(
            "http://g.example/mcp",
            "https://g.example/mcp"
        ));
    }

    #[test]
    fn challenges_are_read() {
        let mut h = HeaderMap::new();
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(
                "DPoP resource_metadata=\"https://g/.well-known/x\", error=\"use_dpop_nonce\", error_description=\"[pop.nonce] rule 10: x, y\", algs=\"EdDSA ES256\"",
            ),
        );
        let c = challenge(&h);
        assert_eq!(c["error"], "use_dpop_nonce");
        assert_eq!(c["error_description"], "[pop.nonce] rule 10: x, y");
        assert_eq!(c["resource_metadata"], "https://g/.well-known/x");
    }
}
