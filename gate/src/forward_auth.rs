//! Forward auth, for those who already run a reverse proxy: the proxy asks the gate about
//! each request and forwards it itself. The gate answers 200 with the `CADA-Agent` headers
//! (copy them upstream) or the same refusal it would answer as a proxy.
//!
//! * nginx `auth_request /_cada/auth;` with `proxy_set_header X-Original-Method
//!   $request_method; proxy_set_header X-Original-URI $request_uri;` (and `X-Forwarded-Proto`
//!   / `X-Forwarded-Host`);
//! * Traefik `forwardAuth` (`X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri`);
//! * Envoy `ext_authz` (HTTP service) with `path_prefix: /_cada/auth`: the check request
//!   carries the original method, path (after the prefix) and headers.
//!
//! Only peers listed in `--trusted-proxy` may ask (others: 403), since the answer trusts the
//! URL they report. The body does not travel with these checks, so proofs are not checked
//! against it; a policy with `require_body_digest` refuses them all (use the gate as the
//! proxy instead).
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::metadata::metadata_url;
use crate::proxy::{decide, identity_headers, Checked};
use crate::refusal::Refused;
use crate::server::GateState;

fn header<'h>(h: &'h HeaderMap, n: &str) -> Option<&'h str> {
    h.get(n).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// `/_cada/auth[/…]`.
pub async fn check(
    State(st): State<Arc<GateState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let configured = st.config.public.configured().to_owned();
    if !st.config.public.is_trusted(peer.ip()) {
        let r = Refused::gate(
            StatusCode::FORBIDDEN,
            "forward_auth.untrusted",
            format!(
                "{} is not a trusted proxy: list it with --trusted-proxy to use forward auth",
                peer.ip()
            ),
        );
        st.count(r.status, "reject", &r.code);
        return r.answer(None, &metadata_url(&configured, "/"));
    }
    let h = req.headers();
    let method = header(h, "x-original-method")
        .or_else(|| header(h, "x-forwarded-method"))
        .unwrap_or(req.method().as_str())
        .to_owned();
    let uri = header(h, "x-original-uri")
        .or_else(|| header(h, "x-forwarded-uri"))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            // Envoy: the original path follows the prefix.
            let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let rest = pq.strip_prefix("/_cada/auth").unwrap_or(pq);
            if rest.starts_with('/') {
                rest.to_owned()
            } else {
                format!("/{rest}")
            }
        });
    let base = match st.config.public.for_request(peer.ip(), h) {
        Ok(b) => b,
        Err(e) => {
            let r = Refused::gate(StatusCode::BAD_REQUEST, "request.forwarded", e.0);
            st.count(r.status, "reject", &r.code);
            return r.answer(None, &metadata_url(&configured, "/"));
        }
    };
    if !uri.starts_with('/') {
        let r = Refused::gate(
            StatusCode::BAD_REQUEST,
            "request.url",
            "the original URI must be a path (X-Original-URI / X-Forwarded-Uri)",
        );
        st.count(r.status, "reject", &r.code);
        return r.answer(None, &metadata_url(&base, "/"));
    }
    let path = uri.split('?').next().unwrap_or("/").to_owned();
    let resource_metadata = metadata_url(&base, &path);
    let url = format!("{base}{uri}");
    match decide(
        &st,
        &Checked {
            method: &method,
            url: &url,
            resource_metadata: &resource_metadata,
            headers: h,
            body: None,
            rpc: None,
            kind: "forward_auth",
        },
    )
    .await
    {
        Ok(a) => {
            st.count(StatusCode::OK, "accept", "");
            let mut resp = StatusCode::OK.into_response();
            for (n, v) in identity_headers(&a, &[]) {
                resp.headers_mut().insert(n, v);
            }
            resp
        }
        Err(resp) => resp,
    }
}
