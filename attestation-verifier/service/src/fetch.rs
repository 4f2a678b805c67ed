//! One bounded GET, for the documents a verifier fetches itself: did:web documents
//! (`cada-verify did resolve`) and owners' status lists (`serve`'s refresher).
//!
//! At most `max_len` bytes, redirects refused (a 3xx answer is a failure, never followed),
//! only a 200 answer is read. Transport: the URLs are https, which this build does not
//! include yet; a non-loopback host is refused ([`Failure::HttpsUnsupported`]). A loopback
//! host (`localhost`, `127.0.0.0/8`) is fetched over plain HTTP on the URL's port (80 when
//! none), for tests and local development: no network attacker sits between a process and
//! its own loopback interface. Callers bound the whole fetch with a timeout.
use std::net::{Ipv4Addr, SocketAddr};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header;
use hyper_util::rt::TokioIo;

/// Why a fetch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Not an https URL, or a bad port.
    Malformed,
    /// A host other than loopback: HTTPS is not built in.
    HttpsUnsupported,
    /// No connection or no answer.
    Unreachable,
    /// A 3xx answer.
    Redirect,
    /// An answer other than 200.
    HttpStatus,
    /// A body over the limit.
    TooLarge,
}

impl Failure {
    /// The `did.*` code of this failure.
    pub fn did_code(self) -> &'static str {
        match self {
            Failure::Malformed => "did.malformed",
            Failure::HttpsUnsupported => "did.https_unsupported",
            Failure::Unreachable => "did.unreachable",
            Failure::Redirect => "did.redirect",
            Failure::HttpStatus => "did.http_status",
            Failure::TooLarge => "did.too_large",
        }
    }

    /// The metric label of this failure (status-list fetches).
    pub fn label(self) -> &'static str {
        match self {
            Failure::Malformed => "malformed",
            Failure::HttpsUnsupported => "https_unsupported",
            Failure::Unreachable => "unreachable",
            Failure::Redirect => "redirect",
            Failure::HttpStatus => "http_status",
            Failure::TooLarge => "too_large",
        }
    }

    /// Whether nothing usable came back at all (as opposed to an answer that is refused).
    pub fn is_unresolved(self) -> bool {
        matches!(self, Failure::HttpsUnsupported | Failure::Unreachable)
    }
}

/// A failed fetch: what kind, and what happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct FetchError {
    /// The kind of failure.
    pub failure: Failure,
    /// What happened, for people.
    pub detail: String,
}

fn fail(failure: Failure, detail: impl Into<String>) -> FetchError {
    FetchError {
        failure,
        detail: detail.into(),
    }
}

/// At most 64 characters of outside text, for messages.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Where an https URL is fetched from: a loopback socket address, the `Host` header and
/// the path; anything but loopback is refused (HTTPS is not built in).
pub fn loopback_target(url: &str) -> Result<(SocketAddr, String, String), FetchError> {
    let rest = url.strip_prefix("https://").ok_or_else(|| {
        fail(
            Failure::Malformed,
            format!("{:?} is not an https URL", clip(url)),
        )
    })?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| fail(Failure::Malformed, format!("bad port in {:?}", clip(url))))?,
        ),
        None => (authority, 80),
    };
    let ip = if host == "localhost" {
        Some(Ipv4Addr::LOCALHOST)
    } else {
        host.parse::<Ipv4Addr>().ok().filter(Ipv4Addr::is_loopback)
    };
    let Some(ip) = ip else {
        return Err(fail(
            Failure::HttpsUnsupported,
            format!(
                "fetching from {:?} needs HTTPS, which this build of cada-verify does not include \
                 yet; fetch {url} yourself and hand the result over instead (only loopback hosts \
                 are fetched, over plain HTTP)",
                clip(host)
            ),
        ));
    };
    let path = if path.is_empty() { "/" } else { path };
    Ok((
        SocketAddr::from((ip, port)),
        authority.to_owned(),
        path.to_owned(),
    ))
}

/// One GET of `url` (no redirects), the body at most `max_len` bytes; `what` names the
/// document in messages.
pub async fn get(url: &str, max_len: usize, what: &str) -> Result<Vec<u8>, FetchError> {
    let (addr, authority, path) = loopback_target(url)?;
    let plain = format!("http://{authority}{path}");
    let unreachable = |e: String| fail(Failure::Unreachable, format!("{plain}: {e}"));
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| unreachable(format!("cannot connect: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(max_len.max(8192))
        .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(header::HOST, authority)
        .header(
            header::ACCEPT,
            "application/did+json, application/json, application/vc+jwt, */*",
        )
        .header(header::USER_AGENT, "cada-verify")
        .body(Empty::new())
        .map_err(|e| fail(Failure::Malformed, format!("{plain}: {e}")))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = resp.status();
    if status.is_redirection() {
        let to = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(clip)
            .unwrap_or_default();
        conn.abort();
        return Err(fail(
            Failure::Redirect,
            format!(
                "{plain} answered {status} to {to:?}: redirects are refused (publish the {what} at the URL itself)"
            ),
        ));
    }
    if status != hyper::StatusCode::OK {
        conn.abort();
        return Err(fail(
            Failure::HttpStatus,
            format!("{plain} answered {status}, not 200"),
        ));
    }
    let declared = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| usize::try_from(*n).map_or(true, |n| n > max_len)) {
        conn.abort();
        return Err(fail(
            Failure::TooLarge,
            format!("{plain} announces a {n}-byte {what}, more than {max_len}"),
        ));
    }
    let body = Limited::new(resp.into_body(), max_len)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                fail(
                    Failure::TooLarge,
                    format!("the {what} at {plain} is more than {max_len} bytes"),
                )
            } else {
                unreachable(e.to_string())
            }
        })?;
    conn.abort();
    Ok(body.to_bytes().to_vec())
}
