//! Bounded outgoing requests of CADA services: a GET of the documents a service fetches
//! itself (did:web documents, owners' status lists, issuers' JWKS) and a form POST (the
//! daemon's token exchange with a `cada-sts`).
//!
//! - **Transport.** An `https` URL is fetched over TLS 1.2/1.3 (rustls, aws-lc-rs), the
//!   server's certificate checked against the [`Fetcher`]'s roots for the URL's host (a DNS
//!   name, or an IP address in the certificate's SANs). An `http` URL is fetched in the
//!   clear only when its host is loopback (`localhost`, `127.0.0.0/8`, `::1`): no network
//!   attacker sits between a process and its own loopback interface, and CADA's contract
//!   format allows `http` status lists only there. Any other URL is refused.
//! - **Roots.** By default the Mozilla CA set compiled into the binary (`webpki-roots`): the
//!   same on every host and in a container without `/etc/ssl`. Given CA files instead
//!   ([`Fetcher::with_ca_files`]), only those are trusted — for an owner who publishes behind
//!   a private CA, or to pin one CA.
//! - **Bounds.** At most `max_len` body bytes (announced or streamed), redirects refused (a
//!   3xx answer is a failure, never followed), only a 200 answer is read, HTTP/1.1 only.
//!   Callers bound the whole fetch (resolve, connect, handshake, answer) with a timeout.
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::NetError;

/// Why a fetch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Not a URL this fetcher takes: not `https`, `http` to a host that is not loopback, or
    /// a bad host or port.
    Malformed,
    /// No connection or no answer.
    Unreachable,
    /// The TLS handshake failed: most often a certificate that does not chain to the roots
    /// or does not name the host.
    Tls,
    /// A 3xx answer.
    Redirect,
    /// An answer other than 200.
    HttpStatus,
    /// A body over the limit.
    TooLarge,
}

impl Failure {
    /// The label of this failure, for metrics and codes (`did.<label>`).
    pub fn label(self) -> &'static str {
        match self {
            Failure::Malformed => "malformed",
            Failure::Unreachable => "unreachable",
            Failure::Tls => "tls",
            Failure::Redirect => "redirect",
            Failure::HttpStatus => "http_status",
            Failure::TooLarge => "too_large",
        }
    }

    /// Whether no authentic answer came back at all (as opposed to an answer that is
    /// refused): the server could not be reached, or could not prove it is the host.
    pub fn is_unresolved(self) -> bool {
        matches!(self, Failure::Unreachable | Failure::Tls)
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

/// Where a URL is fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The host as written in the URL (brackets removed from an IPv6 address).
    pub host: String,
    /// The port (the scheme's default when the URL has none).
    pub port: u16,
    /// The `Host` header: the URL's authority.
    pub authority: String,
    /// Path and query.
    pub path: String,
}

/// Splits `url` into a [`Target`]: `https` to any host, `http` only to a loopback host.
pub fn target(url: &str) -> Result<Target, FetchError> {
    let u = url::Url::parse(url)
        .map_err(|e| fail(Failure::Malformed, format!("{:?}: {e}", clip(url))))?;
    if !u.username().is_empty() || u.password().is_some() {
        return Err(fail(
            Failure::Malformed,
            format!("{:?} carries user information, which is refused", clip(url)),
        ));
    }
    let (host, loopback) = match u.host() {
        Some(url::Host::Domain(d)) => (d.to_owned(), d.eq_ignore_ascii_case("localhost")),
        Some(url::Host::Ipv4(ip)) => (ip.to_string(), ip.is_loopback()),
        Some(url::Host::Ipv6(ip)) => (ip.to_string(), ip.is_loopback()),
        None => {
            return Err(fail(
                Failure::Malformed,
                format!("{:?} has no host", clip(url)),
            ))
        }
    };
    let tls = match u.scheme() {
        "https" => true,
        "http" if loopback => false,
        "http" => {
            return Err(fail(
                Failure::Malformed,
                format!(
                    "{:?} is plain http to a host that is not loopback: publish it over https",
                    clip(url)
                ),
            ))
        }
        other => {
            return Err(fail(
                Failure::Malformed,
                format!(
                    "{:?}: scheme {other:?} is not fetched (https, or http to loopback)",
                    clip(url)
                ),
            ))
        }
    };
    let port = u
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    let authority = match u.port() {
        Some(p) => format!("{}:{p}", u.host_str().unwrap_or_default()),
        None => u.host_str().unwrap_or_default().to_owned(),
    };
    let mut path = u.path().to_owned();
    if let Some(q) = u.query() {
        path.push('?');
        path.push_str(q);
    }
    Ok(Target {
        tls,
        host,
        port,
        authority,
        path,
    })
}

/// Fetches documents over HTTPS with one set of roots (and plain HTTP to loopback).
#[derive(Clone)]
pub struct Fetcher {
    tls: Arc<rustls::ClientConfig>,
    roots: String,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("roots", &self.roots)
            .finish()
    }
}

impl Fetcher {
    /// A fetcher that trusts the Mozilla CA set compiled into the binary.
    pub fn mozilla() -> Result<Self, NetError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Self::from_roots(
            roots,
            format!(
                "the {} Mozilla CAs built in",
                webpki_roots::TLS_SERVER_ROOTS.len()
            ),
        )
    }

    /// A fetcher that trusts exactly the CA certificates in `files` (PEM, one or more
    /// certificates each); with no files, the built-in Mozilla set ([`Fetcher::mozilla`]).
    pub fn with_ca_files(files: &[PathBuf]) -> Result<Self, NetError> {
        if files.is_empty() {
            return Self::mozilla();
        }
        let mut roots = rustls::RootCertStore::empty();
        for f in files {
            let bad = |why: String| NetError::Roots(format!("{}: {why}", f.display()));
            let pem = std::fs::read(f).map_err(|e| bad(e.to_string()))?;
            let mut n = 0usize;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| bad(format!("not PEM certificates: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
                n += 1;
            }
            if n == 0 {
                return Err(bad(
                    "holds no certificate (expected -----BEGIN CERTIFICATE-----)".into(),
                ));
            }
        }
        let what = files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Self::from_roots(roots, format!("the CAs in {what}"))
    }

    fn from_roots(roots: rustls::RootCertStore, what: String) -> Result<Self, NetError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| NetError::Roots(format!("TLS provider: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: Arc::new(config),
            roots: what,
        })
    }

    /// The TLS client configuration (these roots, aws-lc-rs, TLS 1.2/1.3, ALPN http/1.1),
    /// for other clients that must trust exactly what this fetcher trusts.
    pub fn tls_config(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.tls)
    }

    /// Which roots this fetcher trusts, for logs and `--help`-style messages.
    pub fn roots(&self) -> &str {
        &self.roots
    }

    /// One GET of `url` (no redirects), the body at most `max_len` bytes; `what` names the
    /// document in messages. Only a 200 answer's body is returned.
    pub async fn get(&self, url: &str, max_len: usize, what: &str) -> Result<Vec<u8>, FetchError> {
        let shown = clip(url);
        let a = self
            .send(url, hyper::Method::GET, Bytes::new(), &[], max_len, what)
            .await?;
        if (300..400).contains(&a.status) {
            let to = a
                .headers
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(clip)
                .unwrap_or_default();
            return Err(fail(
                Failure::Redirect,
                format!(
                    "{shown} answered {} to {to:?}: redirects are refused (publish the {what} at the URL itself)",
                    a.status
                ),
            ));
        }
        if a.status != 200 {
            return Err(fail(
                Failure::HttpStatus,
                format!("{shown} answered {}, not 200", a.status),
            ));
        }
        Ok(a.body)
    }

    /// One `POST` of an `application/x-www-form-urlencoded` body to `url` with extra
    /// `headers`; the answer whatever its status (an OAuth error is an answer too), its body
    /// at most `max_len` bytes. Redirects are not followed.
    pub async fn post_form(
        &self,
        url: &str,
        form: String,
        headers: &[(&str, &str)],
        max_len: usize,
    ) -> Result<Answer, FetchError> {
        let mut all = vec![("content-type", "application/x-www-form-urlencoded")];
        all.extend_from_slice(headers);
        self.send(
            url,
            hyper::Method::POST,
            Bytes::from(form),
            &all,
            max_len,
            "answer",
        )
        .await
    }

    /// Connects (TLS for https) and sends one request.
    async fn send(
        &self,
        url: &str,
        method: hyper::Method,
        body: Bytes,
        headers: &[(&str, &str)],
        max_len: usize,
        what: &str,
    ) -> Result<Answer, FetchError> {
        let t = target(url)?;
        let shown = clip(url);
        let unreachable = |e: String| fail(Failure::Unreachable, format!("{shown}: {e}"));
        let tcp = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| unreachable(format!("cannot connect: {e}")))?;
        let out = Outgoing {
            method,
            body,
            headers,
            max_len,
            what,
            shown: &shown,
        };
        if !t.tls {
            return request(tcp, &t, out).await;
        }
        let name = match t.host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(t.host.clone())
                .map_err(|e| fail(Failure::Malformed, format!("{shown}: host: {e}")))?,
        };
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
            .connect(name, tcp)
            .await
            .map_err(|e| {
                fail(
                    Failure::Tls,
                    format!(
                        "{shown}: TLS handshake failed: {e} (this fetcher trusts {}; \
                         `--fetch-ca FILE` trusts a private CA instead)",
                        self.roots
                    ),
                )
            })?;
        request(tls, &t, out).await
    }
}

/// An answer: status, headers and the (bounded) body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: hyper::HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

/// What to send.
struct Outgoing<'a> {
    method: hyper::Method,
    body: Bytes,
    headers: &'a [(&'a str, &'a str)],
    max_len: usize,
    what: &'a str,
    shown: &'a str,
}

/// One request over a connected stream; the body read up to the limit.
async fn request<S>(io: S, t: &Target, out: Outgoing<'_>) -> Result<Answer, FetchError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Outgoing {
        method,
        body,
        headers,
        max_len,
        what,
        shown,
    } = out;
    let unreachable = |e: String| fail(Failure::Unreachable, format!("{shown}: {e}"));
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(max_len.max(8192))
        .handshake::<_, Full<Bytes>>(TokioIo::new(io))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let conn = tokio::spawn(conn);
    let answer = async {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(t.path.as_str())
            .header(header::HOST, t.authority.as_str())
            .header(
                header::ACCEPT,
                "application/did+json, application/json, application/vc+jwt, */*",
            )
            .header(header::USER_AGENT, "cada");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| fail(Failure::Malformed, format!("{shown}: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        let declared = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = declared.filter(|n| usize::try_from(*n).map_or(true, |n| n > max_len)) {
            return Err(fail(
                Failure::TooLarge,
                format!("{shown} announces a {n}-byte {what}, more than {max_len}"),
            ));
        }
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, max_len).collect().await.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                fail(
                    Failure::TooLarge,
                    format!("the {what} at {shown} is more than {max_len} bytes"),
                )
            } else {
                unreachable(e.to_string())
            }
        })?;
        Ok(Answer {
            status,
            headers: parts.headers,
            body: body.to_bytes().to_vec(),
        })
    }
    .await;
    conn.abort();
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_http_only_to_loopback() {
        let t = target("https://owner.example:8443/owners/alice/did.json").unwrap();
        assert!(t.tls);
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.authority.as_str(),
                t.path.as_str()
            ),
            (
                "owner.example",
                8443,
                "owner.example:8443",
                "/owners/alice/did.json"
            )
        );
        let t = target("https://owner.example/.well-known/did.json").unwrap();
        assert_eq!((t.port, t.authority.as_str()), (443, "owner.example"));
        for plain in [
            "http://127.0.0.1:8080/status/1",
            "http://localhost/s",
            "http://[::1]:9/s",
        ] {
            let t = target(plain).unwrap();
            assert!(!t.tls, "{plain}");
        }
        assert_eq!(target("http://[::1]:9/s").unwrap().host, "::1");
        for bad in [
            "http://owner.example/status/1",
            "http://10.0.0.1/s",
            "http://localhost.evil.net/s",
            "ftp://127.0.0.1/s",
            "https://user@owner.example/s",
            "https://owner.example:99999/s",
            "not a url",
        ] {
            assert_eq!(
                target(bad).unwrap_err().failure,
                Failure::Malformed,
                "{bad}"
            );
        }
    }

    #[test]
    fn ca_files_must_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("cada-net-fetch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let e = Fetcher::with_ca_files(&[empty]).unwrap_err();
        assert!(e.to_string().contains("holds no certificate"), "{e}");
        let e = Fetcher::with_ca_files(&[dir.join("missing.pem")]).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
        assert!(Fetcher::with_ca_files(&[])
            .unwrap()
            .roots()
            .contains("Mozilla"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A loopback HTTPS server (std thread) answering every request with `answer`.
    fn serve_tls(config: Arc<rustls::ServerConfig>, answer: Vec<u8>) -> u16 {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for tcp in l.incoming() {
                let Ok(tcp) = tcp else { continue };
                let mut s = crate::test_tls::accept(&config, tcp);
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                if req.is_empty() {
                    continue;
                }
                let _ = s.write_all(&answer);
                let _ = s.flush();
                s.conn.send_close_notify();
                let _ = s.flush();
            }
        });
        port
    }

    fn ok(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn ca_file(ca: &crate::test_tls::TestCa, name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("cada-net-{}-{name}.pem", std::process::id()));
        std::fs::write(&p, &ca.ca_pem).unwrap();
        p
    }

    #[tokio::test]
    async fn fetches_over_tls_only_from_a_certificate_that_chains_to_the_roots() {
        let ca = crate::test_tls::loopback_ca();
        let port = serve_tls(Arc::clone(&ca.server), ok("hello"));
        let trusting = Fetcher::with_ca_files(&[ca_file(&ca, "good")]).unwrap();
        for host in ["127.0.0.1", "localhost"] {
            let url = format!("https://{host}:{port}/doc");
            assert_eq!(
                trusting.get(&url, 100, "doc").await.unwrap(),
                b"hello",
                "{url}"
            );
        }
        let url = format!("https://127.0.0.1:{port}/doc");
        assert_eq!(
            trusting.get(&url, 3, "doc").await.unwrap_err().failure,
            Failure::TooLarge
        );
        // The built-in Mozilla roots do not know the test CA.
        let e = Fetcher::mozilla()
            .unwrap()
            .get(&url, 100, "doc")
            .await
            .unwrap_err();
        assert_eq!(e.failure, Failure::Tls, "{e}");
        assert!(e.detail.contains("--fetch-ca"), "{e}");
        // Another CA's certificate for the same names.
        let other = crate::test_tls::loopback_ca();
        let e = Fetcher::with_ca_files(&[ca_file(&other, "other")])
            .unwrap()
            .get(&url, 100, "doc")
            .await
            .unwrap_err();
        assert_eq!(e.failure, Failure::Tls, "{e}");
        // The right CA, but a certificate for another name.
        let elsewhere = crate::test_tls::issue(&["owner.example"]);
        let port = serve_tls(Arc::clone(&elsewhere.server), ok("hello"));
        let e = Fetcher::with_ca_files(&[ca_file(&elsewhere, "elsewhere")])
            .unwrap()
            .get(&format!("https://127.0.0.1:{port}/doc"), 100, "doc")
            .await
            .unwrap_err();
        assert_eq!(e.failure, Failure::Tls, "{e}");
        // Plain HTTP where TLS is expected.
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let pport = plain.local_addr().unwrap().port();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            for mut s in plain.incoming().flatten() {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(&ok("hello"));
            }
        });
        let e = trusting
            .get(&format!("https://127.0.0.1:{pport}/doc"), 100, "doc")
            .await
            .unwrap_err();
        assert_eq!(e.failure, Failure::Tls, "{e}");
        // ...and http to loopback is plain.
        assert_eq!(
            trusting
                .get(&format!("http://127.0.0.1:{pport}/doc"), 100, "doc")
                .await
                .unwrap(),
            b"hello"
        );
    }

    #[tokio::test]
    async fn redirects_and_other_statuses_are_refused_over_tls() {
        let ca = crate::test_tls::loopback_ca();
        let f = Fetcher::with_ca_files(&[ca_file(&ca, "redir")]).unwrap();
        let moved = b"HTTP/1.1 302 Found\r\nlocation: https://elsewhere.example/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec();
        let port = serve_tls(Arc::clone(&ca.server), moved);
        let e = f
            .get(&format!("https://127.0.0.1:{port}/d"), 100, "doc")
            .await
            .unwrap_err();
        assert_eq!(e.failure, Failure::Redirect, "{e}");
        let gone =
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec();
        let port = serve_tls(Arc::clone(&ca.server), gone);
        let e = f
            .get(&format!("https://127.0.0.1:{port}/d"), 100, "doc")
            .await
            .unwrap_err();
        assert_eq!(e.failure, Failure::HttpStatus, "{e}");
    }
}
