//! One pooled HTTP/1.1 client for the proxies (`cada-gate` to its MCP server, `cada-parent
//! proxy` to remote MCP servers): keep-alive connections, TLS through rustls with the same
//! roots as [`crate::fetch::Fetcher`], a deadline for the answer's head, bodies streamed both
//! ways, and the hop-by-hop headers of RFC 9110 §7.6.1 removed in both directions.
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Why a request to the upstream got no answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No answer head within the deadline (answer 504).
    #[error("the upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed or broke (answer 502).
    #[error("the upstream is unreachable: {0}")]
    Unreachable(String),
}

/// A pooled client for one or more upstreams.
#[derive(Clone)]
pub struct Upstream {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upstream")
    }
}

impl Upstream {
    /// A client whose HTTPS connections trust what `fetcher` trusts.
    pub fn new(fetcher: &crate::fetch::Fetcher) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        // hyper-rustls sets ALPN itself (from the HTTP versions enabled).
        let mut tls = (*fetcher.tls_config()).clone();
        tls.alpn_protocols.clear();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(https);
        Upstream { client }
    }

    /// Sends `req` (its URI absolute) and waits at most `deadline` for the answer's head
    /// (enforced at most [`crate::deadline::GRANULARITY`] late); the body then streams
    /// without a deadline (server-sent events may last).
    pub async fn send(
        &self,
        req: Request<Body>,
        deadline: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        // The process's deadline sweeper, not a timer per request (see crate::deadline).
        match crate::deadline::timeout(deadline, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout(deadline)),
            Ok(Err(e)) => {
                // The cause chain says what broke (refused, reset, TLS …).
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg.push_str(": ");
                    msg.push_str(&s.to_string());
                    src = s.source();
                }
                Err(UpstreamError::Unreachable(msg))
            }
            Ok(Ok(r)) => Ok(r),
        }
    }
}

/// Largest answer body [`Upstream::send_coalesced`] reads whole before relaying it.
pub const COALESCE_MAX: u64 = 64 * 1024;

impl Upstream {
    /// As [`Upstream::send`], but an answer with a `Content-Length` of at most
    /// [`COALESCE_MAX`] bytes (a JSON answer; not server-sent events, which have none) is
    /// read whole within the same `deadline`, so that the relaying server writes its head and
    /// body in one write: servers that write head and body apart (uvicorn, Starlette)
    /// otherwise cost every hop behind the relay a second write and a second wake-up. A body
    /// that breaks off or misses the deadline is [`UpstreamError::Unreachable`] or
    /// [`UpstreamError::Timeout`]. Other answers stream as with [`Upstream::send`].
    pub async fn send_coalesced(
        &self,
        req: Request<Body>,
        deadline: Duration,
    ) -> Result<Response<Body>, UpstreamError> {
        let bodyless = req.method() == axum::http::Method::HEAD;
        let at = std::time::Instant::now() + deadline;
        let resp = self.send(req, deadline).await?;
        let status = resp.status();
        let small = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n <= COALESCE_MAX);
        let (parts, body) = resp.into_parts();
        if !small
            || bodyless
            || status.is_informational()
            || status == axum::http::StatusCode::NO_CONTENT
            || status == axum::http::StatusCode::NOT_MODIFIED
        {
            return Ok(Response::from_parts(parts, Body::new(body)));
        }
        let limited =
            http_body_util::Limited::new(body, usize::try_from(COALESCE_MAX).unwrap_or(usize::MAX));
        match crate::deadline::timeout_at(at, http_body_util::BodyExt::collect(limited)).await {
            Err(_) => Err(UpstreamError::Timeout(deadline)),
            Ok(Err(e)) => Err(UpstreamError::Unreachable(format!(
                "the answer's body broke off: {e}"
            ))),
            Ok(Ok(c)) => Ok(Response::from_parts(parts, Body::from(c.to_bytes()))),
        }
    }
}

/// Removes the hop-by-hop headers (`Connection` and those it names, `Keep-Alive`,
/// `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`) and `Host`: a proxy never
/// forwards them.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::HOST,
    ] {
        headers.remove(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_the_rest_stays() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::HOST, "a".parse().unwrap());
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        h.insert("mcp-session-id", "s".parse().unwrap());
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str().to_owned()).collect();
        left.sort();
        assert_eq!(left, vec!["content-type", "mcp-session-id"]);
    }

    /// A one-connection server that writes `parts` (raw HTTP) one write at a time once the
    /// client's request has arrived, then closes, or with `hold` keeps the connection open.
    async fn raw_server(parts: Vec<&'static [u8]>, hold: bool) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await.unwrap();
            for p in parts {
                s.write_all(p).await.unwrap();
                s.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            if hold {
                std::future::pending::<()>().await;
            }
        });
        addr
    }

    async fn coalesced(
        parts: Vec<&'static [u8]>,
        hold: bool,
    ) -> Result<Response<Body>, UpstreamError> {
        let up = Upstream::new(&crate::fetch::Fetcher::mozilla().unwrap());
        let addr = raw_server(parts, hold).await;
        let req = Request::post(format!("http://{addr}/mcp"))
            .body(Body::from("{}"))
            .unwrap();
        up.send_coalesced(req, Duration::from_millis(300)).await
    }

    const JSON_HEAD: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n";

    #[tokio::test]
    async fn a_small_answer_is_read_whole_before_it_is_relayed_and_a_stream_is_not() {
        // Head and body written apart: one answer, whole.
        let r = coalesced(vec![JSON_HEAD, b"{\"ok\":true}"], false)
            .await
            .unwrap();
        let bytes = http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap();
        assert_eq!(&bytes.to_bytes()[..], b"{\"ok\":true}");
        // The body is part of the wait: a head alone is not relayed, and the deadline
        // covers the body.
        let r = coalesced(vec![JSON_HEAD], true).await;
        assert!(matches!(r, Err(UpstreamError::Timeout(_))), "{r:?}");
        // Server-sent events (no Content-Length) are relayed as they come: the head alone.
        let r = coalesced(
            vec![b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"],
            true,
        )
        .await;
        assert!(r.is_ok(), "{r:?}");
    }

    #[tokio::test]
    async fn a_small_answer_whose_body_breaks_off_is_unreachable() {
        let r = coalesced(
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n", b"{\"cut"],
            false,
        )
        .await;
        assert!(matches!(r, Err(UpstreamError::Unreachable(_))), "{r:?}");
    }

    #[tokio::test]
    async fn unreachable_and_timeout_are_told_apart() {
        let up = Upstream::new(&crate::fetch::Fetcher::mozilla().unwrap());
        // A port nobody listens on.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let req = Request::get(format!("http://{addr}/x"))
            .body(Body::empty())
            .unwrap();
        assert!(matches!(
            up.send(req, Duration::from_secs(5)).await,
            Err(UpstreamError::Unreachable(_))
        ));
        // A listener that accepts and never answers.
        let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = hang.local_addr().unwrap();
        let keep = tokio::spawn(async move {
            let (_s, _) = hang.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        let req = Request::get(format!("http://{addr}/x"))
            .body(Body::empty())
            .unwrap();
        assert!(matches!(
            up.send(req, Duration::from_millis(300)).await,
            Err(UpstreamError::Timeout(_))
        ));
        keep.abort();
    }
}
