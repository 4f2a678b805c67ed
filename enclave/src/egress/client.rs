//! The enclave's own HTTPS client: TLS from inside the enclave over a stream the parent
//! relays (it carries only ciphertext), HTTP/1.1 by hyper over that TLS stream, and
//! keep-alive connections pooled per upstream origin and CA set.
//!
//! * The relay: each new connection dials the parent's egress listener (`--egress
//!   vsock:CID:PORT | unix:PATH | tcp:127.0.0.1:PORT`), sends one hello line naming the
//!   upstream (`CADA-EGRESS/1 host:port`, [`cada_protocol::egress::relay_hello`]) and reads
//!   `OK`; every later byte is the enclave's TLS session.
//! * The server certificate is verified here against the CAs the owner named in the sealed
//!   usage (`cas`), or the Mozilla roots built into the image (webpki-roots) when it names
//!   none — never a CA the host supplies. Validity is checked at the enclave's clock.
//! * The pool: at most [`Client::max_idle`] idle connections per key (origin + CA set), each
//!   reused only once hyper says it is ready; a connection that closed is dropped. A request
//!   that a pooled connection could not even send goes once more on a fresh connection.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::digest::{digest, SHA256};
use base64::Engine as _;
use cada_protocol::egress::{
    codes, relay_hello, MAX_CALL_BODY, MAX_CALL_HEADERS, MAX_HEADER_BYTES, MAX_RELAY_ANSWER,
};
use cada_protocol::url::HttpUrl;
use cada_secrets::SecretUsage;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::EnclaveError;

/// The errors of [`Client::send`] (the crate's one error type; refusals carry `secret.*`).
pub type EgressError = EnclaveError;

/// Where the parent's egress relay listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relay {
    /// AF_VSOCK (Nitro: the parent is CID 3).
    Vsock {
        /// The parent's CID.
        cid: u32,
        /// The relay's port.
        port: u32,
    },
    /// A unix socket (development, or an emulator's host side).
    Unix(PathBuf),
    /// Loopback TCP (`sim` only).
    Tcp(std::net::SocketAddr),
}

impl std::str::FromStr for Relay {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("vsock:") {
            let (cid, port) = rest
                .split_once(':')
                .ok_or_else(|| format!("{s}: expected vsock:CID:PORT"))?;
            return Ok(Relay::Vsock {
                cid: cid.parse().map_err(|_| format!("{s}: bad CID"))?,
                port: port.parse().map_err(|_| format!("{s}: bad port"))?,
            });
        }
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(format!("{s}: expected unix:PATH"));
            }
            return Ok(Relay::Unix(PathBuf::from(p)));
        }
        if let Some(a) = s.strip_prefix("tcp:") {
            let addr: std::net::SocketAddr = a
                .parse()
                .map_err(|_| format!("{s}: expected tcp:IP:PORT"))?;
            if !addr.ip().is_loopback() {
                return Err(format!("{s}: only a loopback relay address is allowed"));
            }
            return Ok(Relay::Tcp(addr));
        }
        Err(format!(
            "{s}: expected vsock:CID:PORT, unix:PATH or tcp:127.0.0.1:PORT"
        ))
    }
}

/// A byte stream to the relay.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

fn upstream_err(msg: impl Into<String>) -> EnclaveError {
    EnclaveError::secret(codes::UPSTREAM, msg)
}

impl Relay {
    /// Opens a stream to `host:port` through the relay: hello, then `OK`.
    async fn open(&self, host: &str, port: u16) -> Result<Box<dyn Io>, EnclaveError> {
        let io: Box<dyn Io> = match self {
            Relay::Vsock { cid, port } => Box::new(
                tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(*cid, *port))
                    .await
                    .map_err(|e| upstream_err(format!("the egress relay (vsock): {e}")))?,
            ),
            Relay::Unix(p) => Box::new(
                tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(|e| upstream_err(format!("the egress relay (unix): {e}")))?,
            ),
            Relay::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a)
                    .await
                    .map_err(|e| upstream_err(format!("the egress relay (tcp): {e}")))?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
        };
        let mut rd = BufReader::new(io);
        rd.get_mut()
            .write_all(relay_hello(host, port).as_bytes())
            .await
            .map_err(|e| upstream_err(format!("the egress relay: {e}")))?;
        let mut line = Vec::with_capacity(16);
        // One line only, and the reader keeps no bytes past it: reading byte by byte up to
        // the newline (the answer is a few bytes) leaves the TLS stream untouched.
        loop {
            let b = rd
                .read_u8()
                .await
                .map_err(|e| upstream_err(format!("the egress relay closed: {e}")))?;
            line.push(b);
            if b == b'\n' || line.len() >= MAX_RELAY_ANSWER {
                break;
            }
        }
        if line != b"OK\n" {
            let text: String = String::from_utf8_lossy(&line)
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect();
            return Err(upstream_err(format!(
                "the egress relay did not connect {host}:{port}: {text}"
            )));
        }
        debug_assert!(rd.buffer().is_empty());
        Ok(rd.into_inner())
    }
}

type Sender = SendRequest<Full<Bytes>>;

/// The client (see the [module docs](self)).
pub struct Client {
    relay: Relay,
    /// Idle connections per pool key.
    idle: Mutex<HashMap<String, Vec<Sender>>>,
    /// TLS configurations per CA set.
    tls: Mutex<HashMap<String, Arc<rustls::ClientConfig>>>,
    max_idle: usize,
    /// Calls in flight per pool key (each on its own connection), and so connections in
    /// use: at most `max_per_origin`; more wait (within the timeout) for one to finish.
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    max_per_origin: usize,
    timeout: Duration,
    handshakes: std::sync::atomic::AtomicU64,
}

/// The origin's host (brackets removed from IPv6) and port.
fn host_port(upstream: &str) -> Result<(String, String, u16), EnclaveError> {
    let url = HttpUrl::parse_canonical(&format!("{upstream}/"))
        .map_err(|e| EnclaveError::secret(codes::PATH, format!("the upstream {upstream}: {e}")))?;
    if url.scheme() != "https" {
        return Err(EnclaveError::secret(
            codes::TLS,
            "the upstream is not https: a secret is never sent in clear",
        ));
    }
    let host = url.host().to_owned();
    let after = &url.origin()["https://".len() + host.len()..];
    let port = match after.strip_prefix(':') {
        Some(p) => p
            .parse()
            .map_err(|_| EnclaveError::secret(codes::PATH, "the upstream's port"))?,
        None => 443,
    };
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(&host)
        .to_owned();
    Ok((host, bare, port))
}

impl Client {
    /// Default most idle connections kept per upstream (and CA set).
    pub const DEFAULT_MAX_IDLE: usize = 16;
    /// Default most calls in flight (connections in use) per upstream (and CA set).
    pub const DEFAULT_MAX_PER_ORIGIN: usize = 64;

    /// A client dialing `relay`; `max_idle` idle connections kept per upstream (0: none,
    /// every call makes a new TLS connection); `timeout` bounds connecting, the handshake
    /// and the answer.
    pub fn new(relay: Relay, max_idle: usize, timeout: Duration) -> Self {
        Client {
            relay,
            idle: Mutex::new(HashMap::new()),
            tls: Mutex::new(HashMap::new()),
            max_idle,
            in_flight: Mutex::new(HashMap::new()),
            max_per_origin: Self::DEFAULT_MAX_PER_ORIGIN,
            timeout,
            handshakes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// At most `n` (≥ 1) calls in flight, so connections in use, per upstream and CA set.
    #[must_use]
    pub fn with_max_per_origin(mut self, n: usize) -> Self {
        self.max_per_origin = n.max(1);
        self
    }

    fn slot(&self, key: &str) -> Arc<tokio::sync::Semaphore> {
        let mut m = match self.in_flight.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if m.len() >= 1024 && !m.contains_key(key) {
            // Keys of past usages whose calls have all ended go first.
            m.retain(|_, s| s.available_permits() < self.max_per_origin);
        }
        m.entry(key.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.max_per_origin)))
            .clone()
    }

    /// Most idle connections kept per upstream.
    pub fn max_idle(&self) -> usize {
        self.max_idle
    }

    /// TLS handshakes made so far (new upstream connections).
    pub fn handshakes(&self) -> u64 {
        self.handshakes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The pool key: the origin and the digest of the CA set, so that a connection verified
    /// under one owner's CAs never serves a usage that names others.
    fn key(usage: &SecretUsage) -> String {
        format!("{}|{}", usage.upstream, cas_digest(&usage.cas))
    }

    fn tls_config(&self, usage: &SecretUsage) -> Result<Arc<rustls::ClientConfig>, EnclaveError> {
        let k = cas_digest(&usage.cas);
        if let Some(c) = self.tls.lock().ok().and_then(|m| m.get(&k).cloned()) {
            return Ok(c);
        }
        let mut roots = rustls::RootCertStore::empty();
        if usage.cas.is_empty() {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        } else {
            for (i, ca) in usage.cas.iter().enumerate() {
                let der = base64::engine::general_purpose::STANDARD
                    .decode(ca)
                    .map_err(|_| {
                        EnclaveError::secret(
                            codes::TLS,
                            format!("CA {i} of the usage is not base64"),
                        )
                    })?;
                roots.add(CertificateDer::from(der)).map_err(|e| {
                    EnclaveError::secret(codes::TLS, format!("CA {i} of the usage: {e}"))
                })?;
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| EnclaveError::secret(codes::TLS, e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let cfg = Arc::new(cfg);
        if let Ok(mut m) = self.tls.lock() {
            if m.len() < 256 {
                m.insert(k, cfg.clone());
            }
        }
        Ok(cfg)
    }

    /// A new connection: relay, TLS (verified here), HTTP/1.1 handshake.
    async fn connect(&self, usage: &SecretUsage) -> Result<Sender, EnclaveError> {
        let (host, bare, port) = host_port(&usage.upstream)?;
        let cfg = self.tls_config(usage)?;
        let name = ServerName::try_from(bare.clone()).map_err(|_| {
            EnclaveError::secret(codes::TLS, format!("{bare} is not a TLS server name"))
        })?;
        let io = self.relay.open(&host, port).await?;
        let tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, io)
            .await
            .map_err(|e| {
                EnclaveError::secret(
                    codes::TLS,
                    format!(
                        "TLS to {host}:{port} failed inside the enclave: {e} (the certificate must \
                         verify against the CAs named in the sealed usage, or the built-in roots \
                         when it names none; no plain-HTTP fallback)"
                    ),
                )
            })?;
        self.handshakes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(MAX_HEADER_BYTES.max(8192) * 4)
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| upstream_err(format!("HTTP/1.1 to {host}:{port}: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// An idle connection that is ready, if any (closed ones are dropped).
    async fn take_idle(&self, key: &str) -> Option<Sender> {
        loop {
            let s = self
                .idle
                .lock()
                .ok()
                .and_then(|mut m| m.get_mut(key).and_then(Vec::pop))?;
            if s.is_closed() {
                continue;
            }
            let mut s = s;
            if tokio::time::timeout(Duration::from_secs(1), s.ready())
                .await
                .is_ok_and(|r| r.is_ok())
            {
                return Some(s);
            }
        }
    }

    fn put_idle(&self, key: String, s: Sender) {
        if self.max_idle == 0 || s.is_closed() {
            return;
        }
        if let Ok(mut m) = self.idle.lock() {
            if m.len() >= 1024 && !m.contains_key(&key) {
                return;
            }
            let v = m.entry(key).or_default();
            if v.len() < self.max_idle {
                v.push(s);
            }
        }
    }

    /// Sends `req` (origin-form URI: path and query) to the usage's upstream over TLS made
    /// and verified inside the enclave, on a pooled connection; the whole answer, its body
    /// bounded by [`MAX_CALL_BODY`] (larger: `secret.answer`). Redirects are not followed.
    /// The caller sets every header (Host included); nothing is added here.
    pub async fn send(
        &self,
        usage: &SecretUsage,
        req: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, EgressError> {
        let key = Self::key(usage);
        let (parts, body) = req.into_parts();
        let mut req = http::Request::from_parts(parts, Full::new(body));
        let deadline = tokio::time::Instant::now() + self.timeout;
        let _permit = tokio::time::timeout_at(deadline, self.slot(&key).acquire_owned())
            .await
            .map_err(|_| {
                upstream_err(format!(
                    "{} calls to this upstream are in flight; none ended in time",
                    self.max_per_origin
                ))
            })?
            .map_err(|_| upstream_err("the connection limit is closed"))?;
        let mut pooled = self.take_idle(&key).await;
        let resp = loop {
            let (mut sender, reused) = match pooled.take() {
                Some(s) => (s, true),
                None => (
                    tokio::time::timeout_at(deadline, self.connect(usage))
                        .await
                        .map_err(|_| upstream_err("connecting to the upstream timed out"))??,
                    false,
                ),
            };
            match tokio::time::timeout_at(deadline, sender.try_send_request(req)).await {
                Err(_) => return Err(upstream_err("the upstream did not answer in time")),
                Ok(Ok(resp)) => break (resp, sender),
                Ok(Err(mut e)) => match e.take_message() {
                    // Never sent on a pooled connection that had closed: once more, fresh.
                    Some(r) if reused => req = r,
                    _ => {
                        return Err(upstream_err(format!(
                            "the upstream broke off: {}",
                            e.into_error()
                        )))
                    }
                },
            }
        };
        let (resp, sender) = resp;
        let (parts, body) = resp.into_parts();
        if parts.headers.len() > MAX_CALL_HEADERS {
            return Err(EnclaveError::secret(
                codes::ANSWER,
                format!("the answer has more than {MAX_CALL_HEADERS} headers"),
            ));
        }
        let body = tokio::time::timeout_at(deadline, Limited::new(body, MAX_CALL_BODY).collect())
            .await
            .map_err(|_| upstream_err("the upstream's answer body did not arrive in time"))?
            .map_err(|e| {
                EnclaveError::secret(
                    codes::ANSWER,
                    format!("the answer body could not be read within {MAX_CALL_BODY} bytes: {e}"),
                )
            })?
            .to_bytes();
        self.put_idle(key, sender);
        Ok(http::Response::from_parts(parts, body))
    }
}

/// base64url SHA-256 over the CA list (empty: the built-in roots).
fn cas_digest(cas: &[String]) -> String {
    if cas.is_empty() {
        return "webpki-roots".into();
    }
    let mut all = Vec::new();
    for c in cas {
        all.extend_from_slice(&(c.len() as u64).to_be_bytes());
        all.extend_from_slice(c.as_bytes());
    }
    cada_protocol::b64::encode(digest(&SHA256, &all))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_addresses_parse_strictly() {
        assert_eq!(
            "vsock:3:8001".parse::<Relay>().unwrap(),
            Relay::Vsock { cid: 3, port: 8001 }
        );
        assert_eq!(
            "unix:/run/x.sock".parse::<Relay>().unwrap(),
            Relay::Unix("/run/x.sock".into())
        );
        assert!("tcp:127.0.0.1:9".parse::<Relay>().is_ok());
        for bad in ["tcp:10.0.0.1:9", "unix:", "vsock:3", "http://x", "tcp:x:1"] {
            assert!(bad.parse::<Relay>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_pool_key_separates_ca_sets() {
        let u = |cas: Vec<String>| SecretUsage {
            name: "a".into(),
            upstream: "https://api.example.com".into(),
            path_prefix: "/".into(),
            header: "authorization".into(),
            format: "Bearer {}".into(),
            cas,
            expires_at: 1,
            credential_endpoints: vec![],
            kind: cada_secrets::SecretKind::Static,
        };
        assert_ne!(
            Client::key(&u(vec![])),
            Client::key(&u(vec!["MAo=".into()]))
        );
        assert_ne!(
            Client::key(&u(vec!["MAo=".into()])),
            Client::key(&u(vec!["MAs=".into()]))
        );
        assert_eq!(
            host_port("https://[::1]:8443").unwrap(),
            ("[::1]".into(), "::1".into(), 8443)
        );
        assert_eq!(host_port("https://api.example.com").unwrap().2, 443);
    }
}
