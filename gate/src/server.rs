//! The gate's state, metrics and router: `/.well-known/oauth-protected-resource[/…]`,
//! `/_cada/auth` (forward auth), `/_cada/healthz`, `/_cada/metrics`, and everything else
//! through [`crate::proxy`].
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use cada_net::upstream::Upstream;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::metadata::{self, WELL_KNOWN};
use crate::public::PublicBase;

/// What the gate was started with.
#[derive(Debug, Clone)]
pub struct GateConfig {
    /// The MCP server: `scheme://host[:port][/prefix]` in normal form, without a trailing
    /// slash ([`crate::target::base_url`]); a request for `/p?q` goes to `upstream/p?q`, the
    /// target's exact bytes, once [`crate::target`] found it normal.
    pub upstream: String,
    /// The URL clients call (what proofs bind to).
    pub public: PublicBase,
    /// Authorization servers (`cada-sts` issuers) named in the metadata.
    pub authorization_servers: Vec<String>,
    /// Largest request body forwarded (bigger: 413, not forwarded).
    pub max_body: usize,
    /// Time the upstream gets to answer a request's head (then 504).
    pub upstream_timeout: Duration,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CallLabels {
    pub(crate) status: u16,
    pub(crate) decision: &'static str,
    pub(crate) reason: String,
}

/// The gate's own metrics (the decision pipeline's are `cada_verify_*`).
pub(crate) struct GateMetrics {
    registry: Registry,
    pub(crate) calls: Family<CallLabels, Counter>,
    /// Time from a request's arrival to its forwarding (the gate's own cost).
    pub(crate) gate_seconds: Histogram,
    /// Time the upstream took to answer the head.
    pub(crate) upstream_seconds: Histogram,
}

/// Shared state of the gate.
pub struct GateState {
    /// The decision pipeline (policy, replay store, fleet, audit), `cada-pipeline`'s.
    pub verify: Arc<cada_pipeline::AppState>,
    /// The pooled client to the MCP server.
    pub upstream: Upstream,
    /// Configuration.
    pub config: GateConfig,
    pub(crate) metrics: GateMetrics,
}

impl GateState {
    /// Assembles the state.
    pub fn new(
        verify: Arc<cada_pipeline::AppState>,
        upstream: Upstream,
        config: GateConfig,
    ) -> Arc<Self> {
        let mut registry = Registry::default();
        let calls = Family::<CallLabels, Counter>::default();
        let gate_seconds = Histogram::new(exponential_buckets(0.000_02, 2.0, 18));
        let upstream_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 20));
        registry.register(
            "cada_gate_calls",
            "requests by HTTP status, decision and the rule that refused",
            calls.clone(),
        );
        registry.register(
            "cada_gate_decision_seconds",
            "time from arrival to forwarding: body, decision, audit",
            gate_seconds.clone(),
        );
        registry.register(
            "cada_gate_upstream_seconds",
            "time the MCP server took to answer a request's head",
            upstream_seconds.clone(),
        );
        Arc::new(GateState {
            verify,
            upstream,
            config,
            metrics: GateMetrics {
                registry,
                calls,
                gate_seconds,
                upstream_seconds,
            },
        })
    }

    pub(crate) fn count(&self, status: StatusCode, decision: &'static str, reason: &str) {
        self.metrics
            .calls
            .get_or_create(&CallLabels {
                status: status.as_u16(),
                decision,
                reason: reason.to_owned(),
            })
            .inc();
    }
}

async fn metrics(State(st): State<Arc<GateState>>) -> Response {
    use prometheus_client::encoding::text::{encode_eof, encode_registry};
    let mut out = String::new();
    let ok = encode_registry(&mut out, &st.metrics.registry).is_ok()
        && encode_registry(&mut out, st.verify.registry()).is_ok()
        && encode_eof(&mut out).is_ok();
    if !ok {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

async fn resource_metadata(
    State(st): State<Arc<GateState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    req: Request,
) -> Response {
    let base = match st.config.public.for_request(peer.ip(), req.headers()) {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, e.0).into_response(),
    };
    let path = req
        .uri()
        .path()
        .strip_prefix(WELL_KNOWN)
        .unwrap_or("")
        .to_owned();
    // The resource named is one a request could reach: a path in normal form, as a
    // proxied target must be (not `/../../mcp` or `//evil.example/x` echoed back).
    if !path.is_empty() {
        if let Err(r) = crate::target::request_url(&base, &path) {
            st.count(r.status, "reject", &r.code);
            return r.answer(None, &metadata::metadata_url(&base, "/"));
        }
    }
    let policy = st.verify.engine.load();
    axum::Json(metadata::document(
        &base,
        if path.is_empty() { "/" } else { &path },
        &st.config.authorization_servers,
        policy.policy().token.require_body_digest,
        policy.policy().token.require_nonce,
    ))
    .into_response()
}

/// The router.
pub fn router(st: Arc<GateState>) -> Router {
    Router::new()
        .route(WELL_KNOWN, get(resource_metadata))
        .route(&format!("{WELL_KNOWN}/{{*rest}}"), get(resource_metadata))
        .route("/_cada/auth", any(crate::forward_auth::check))
        .route("/_cada/auth/{*rest}", any(crate::forward_auth::check))
        .route("/_cada/healthz", get(|| async { "ok\n" }))
        .route("/_cada/metrics", get(metrics))
        .fallback(crate::proxy::forward)
        .with_state(st)
}
