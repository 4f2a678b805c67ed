//! The one accept loop every CADA HTTP server uses (`cada-verify serve`, `cada-parent`, and
//! the coming STS and gate), so that a slow or silent client costs a bounded slot for a
//! bounded time:
//!
//! - **connection cap** ([`ServeLimits::max_connections`]): at the cap the loop stops
//!   accepting, so new connections wait in the kernel's accept queue (the TCP handshake
//!   completes there; one more waits accepted but unread) and are served as soon as a slot
//!   frees; while a connection waits, keep-alive connections idle between requests are
//!   closed to make room (an idle keep-alive connection is a convenience, not a right).
//!   Waiting rather than refusing: a refused honest client must retry blindly, a waiting
//!   one is served in turn, and the attacker gains nothing from either since each of its
//!   connections is cut at the header deadline;
//! - **header-read deadline** ([`ServeLimits::header_read_timeout`]): a new connection must
//!   deliver its first complete request head within it (clock from `accept`), and a
//!   keep-alive connection within it of the first byte of each later request;
//! - **idle deadline** ([`ServeLimits::idle_timeout`]): a keep-alive connection with no
//!   request for this long after its last answer is closed;
//! - **body deadline** ([`ServeLimits::body_timeout`]): a request whose body has not fully
//!   arrived this long after its head is answered `408` (problem JSON) and the connection
//!   closed (enforced by the process's [`deadline`] sweeper, at most
//!   [`deadline::GRANULARITY`] late, not by a timer per request);
//! - **head size** ([`ServeLimits::max_header_bytes`]): hyper's read buffer, so a request
//!   head larger than it is refused and a connection never buffers more; a server that
//!   takes a delegation chain in `CADA-Contract` ([`ServeLimits::with_chain`]) gives that one
//!   header [`CHAIN_HEADER_BYTES`] more, the other headers keeping the limit (431).
//!
//! Handlers see the peer as `axum::extract::ConnectInfo<SocketAddr>` (TCP) or
//! `ConnectInfo<UnixPeer>` (unix socket). Counters ([`ConnStats`]) are Prometheus types the
//! binaries register in their own registry.
//!
//! Bodies are not size-limited here: each router keeps its own `DefaultBodyLimit` (and its
//! own 413 answer); the body deadline bounds how long any body can take.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod body;
pub mod cli;
mod conn;
pub mod deadline;
mod fdlimit;
pub mod fetch;
pub mod problem;
mod stats;
#[cfg(any(test, feature = "test-tls"))]
pub mod test_tls;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};

pub use problem::{require_json, Problem};
pub use stats::ConnStats;

/// Default header-read deadline: 10 s.
///
/// An honest client sends its request head (well under one TCP segment for every CADA
/// request) in one burst right after connecting; 10 s still covers three consecutive
/// retransmissions of it (1 + 2 + 4 s of initial TCP RTO backoff). A silent or
/// half-header connection thus holds a slot for at most 10 s: to keep 4,096 slots full an
/// attacker must open 410 new connections per second, every second.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;

/// Default keep-alive idle deadline: 60 s.
///
/// Long enough that a pooled client reuses its connection across bursts of requests (the
/// connection set-up is the expensive part of a short request); the value load balancers
/// commonly use. A client that keeps idle connections longer (90 s pools are common) finds
/// the connection closed on reuse, as with any server-side idle limit. At the cap, idle
/// connections are closed at once to make room, so this bound only matters when there is
/// room.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;

/// Default whole-body deadline: 10 s.
///
/// CADA bodies are at most 64 KiB (the routers' limits); 10 s lets even a 52 kbit/s link
/// deliver that, while a body trickled at one byte per second holds its request (and, in
/// `cada-verify`, the admission slot taken after the body) for at most 10 s.
pub const DEFAULT_BODY_TIMEOUT_MS: u64 = 10_000;

/// Default largest request head (and per-connection read buffer): 64 KiB.
///
/// Enough for a `DPoP` proof plus a `CADA-Evidence` header (a Nitro document with its
/// certificate chain is about 6 KiB in base64url) with ample room; 4,096 connections then
/// buffer at most 256 MiB even if every one sends a maximal head.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;

/// Room a server that takes a delegation chain in `CADA-Contract` gives that one header
/// beyond [`ServeLimits::max_header_bytes`] ([`ServeLimits::with_chain`]): 256 KiB, the
/// largest chain the format accepts (`cada_contract::delegation::MAX_CHAIN_LEN`; the gate
/// tests that the two agree).
///
/// The request head may then be [`DEFAULT_MAX_HEADER_BYTES`] + 256 KiB = 320 KiB, but only
/// `CADA-Contract` may use the extra room: the rest of the head is held to
/// `max_header_bytes` (`431 request.header_too_large` otherwise). 4,096 connections then
/// buffer at most 1.25 GiB if every one sends a maximal head within the header deadline.
pub const CHAIN_HEADER_BYTES: usize = 256 * 1024;

/// The header that may use [`ServeLimits::chain_header_bytes`]: `CADA-Contract`.
pub const CHAIN_HEADER: &str = "cada-contract";

/// Default connection cap of a public listener (`cada-verify serve`): 4,096.
///
/// A verifier behind a load balancer sees few, long-lived connections; one exposed directly
/// sees many short ones. 4,096 open connections cost under 100 MiB in the common case
/// (about 20 KiB each: hyper's buffers and the task) and need 4,096 file descriptors,
/// which the loop raises the soft limit for (see [`serve_tcp`]).
pub const DEFAULT_MAX_CONNECTIONS_PUBLIC: usize = 4096;

/// Default connection cap of a host-local listener (`cada-parent`, per listener): 512.
///
/// Its clients are the agents on one host; 512 is far above what they open, and the
/// daemon's own in-flight limit (1,024 requests) stays the bound on work, while the unix
/// socket and the loopback port each have their own cap, so a flood on one cannot starve
/// the other.
pub const DEFAULT_MAX_CONNECTIONS_LOCAL: usize = 512;

/// Default time connections get to finish after shutdown is asked for: 10 s.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;

/// Limits of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeLimits {
    /// Most connections open at once; beyond it new ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Time for a complete request head: from `accept` for the first request, from its
    /// first byte for later requests on a keep-alive connection.
    pub header_read_timeout: Duration,
    /// Time a keep-alive connection may sit without a request after its last answer.
    pub idle_timeout: Duration,
    /// Time for a whole request body, from the end of its head; then `408`.
    pub body_timeout: Duration,
    /// Largest request head in bytes (hyper's per-connection read buffer), 8 KiB..=1 MiB;
    /// without `CADA-Contract` when [`Self::chain_header_bytes`] is not 0.
    pub max_header_bytes: usize,
    /// Extra room for a `CADA-Contract` header (a delegation chain, up to
    /// [`CHAIN_HEADER_BYTES`]) beyond `max_header_bytes`: the head may be
    /// `max_header_bytes + chain_header_bytes`, its other headers at most
    /// `max_header_bytes` (else `431 request.header_too_large`). 0 (the default): none.
    pub chain_header_bytes: usize,
    /// After shutdown: time open connections get to finish before they are dropped.
    pub shutdown_grace: Duration,
}

impl ServeLimits {
    /// Defaults for a listener open to a network (`cada-verify serve`).
    pub const fn public() -> Self {
        ServeLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS_PUBLIC,
            header_read_timeout: Duration::from_millis(DEFAULT_HEADER_READ_TIMEOUT_MS),
            idle_timeout: Duration::from_millis(DEFAULT_IDLE_TIMEOUT_MS),
            body_timeout: Duration::from_millis(DEFAULT_BODY_TIMEOUT_MS),
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            chain_header_bytes: 0,
            shutdown_grace: Duration::from_millis(DEFAULT_SHUTDOWN_GRACE_MS),
        }
    }

    /// These limits with room for a delegation chain in `CADA-Contract`
    /// ([`CHAIN_HEADER_BYTES`]): for every server that takes one (the gate, `cada-verify
    /// serve`, `cada-sts`).
    #[must_use]
    pub const fn with_chain(mut self) -> Self {
        self.chain_header_bytes = CHAIN_HEADER_BYTES;
        self
    }

    /// The largest request head hyper reads: `max_header_bytes + chain_header_bytes`.
    pub const fn head_bytes(&self) -> usize {
        self.max_header_bytes
            .saturating_add(self.chain_header_bytes)
    }

    /// Defaults for a host-local listener (`cada-parent`'s unix socket and loopback port).
    pub const fn local() -> Self {
        let mut l = Self::public();
        l.max_connections = DEFAULT_MAX_CONNECTIONS_LOCAL;
        l
    }

    /// Checks every limit is in its range (the loop refuses to start otherwise).
    pub fn validate(&self) -> Result<(), NetError> {
        let bad = |what: &'static str, why: String| Err(NetError::BadLimit { what, why });
        if !(1..=MAX_CONNECTIONS_CEILING).contains(&self.max_connections) {
            return bad(
                "max_connections (--max-connections)",
                format!(
                    "{} is outside 1..={MAX_CONNECTIONS_CEILING}",
                    self.max_connections
                ),
            );
        }
        for (what, d) in [
            (
                "header_read_timeout (--header-timeout-ms)",
                self.header_read_timeout,
            ),
            ("idle_timeout (--idle-timeout-ms)", self.idle_timeout),
            ("body_timeout (--body-timeout-ms)", self.body_timeout),
        ] {
            if d.is_zero() || d > MAX_TIMEOUT {
                return bad(
                    what,
                    format!(
                        "{} ms is outside 1..={} ms",
                        d.as_millis(),
                        MAX_TIMEOUT.as_millis()
                    ),
                );
            }
        }
        if self.shutdown_grace > MAX_TIMEOUT {
            return bad(
                "shutdown_grace",
                format!(
                    "{} ms is above {} ms",
                    self.shutdown_grace.as_millis(),
                    MAX_TIMEOUT.as_millis()
                ),
            );
        }
        if self.chain_header_bytes > CHAIN_HEADER_BYTES
            || self.head_bytes() > MAX_HEADER_BYTES_CEILING
        {
            return bad(
                "chain_header_bytes",
                format!(
                    "{} is above {CHAIN_HEADER_BYTES}, or the head with it above \
                     {MAX_HEADER_BYTES_CEILING}",
                    self.chain_header_bytes
                ),
            );
        }
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES_CEILING).contains(&self.max_header_bytes) {
            return bad(
                "max_header_bytes",
                format!(
                    "{} is outside {MIN_HEADER_BYTES}..={MAX_HEADER_BYTES_CEILING}",
                    self.max_header_bytes
                ),
            );
        }
        Ok(())
    }
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self::public()
    }
}

/// Highest accepted `max_connections`.
pub const MAX_CONNECTIONS_CEILING: usize = 1_000_000;
/// Longest accepted timeout (one hour).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Smallest accepted `max_header_bytes` (hyper's minimum read buffer).
pub const MIN_HEADER_BYTES: usize = 8 * 1024;
/// Largest accepted `max_header_bytes`.
pub const MAX_HEADER_BYTES_CEILING: usize = 1024 * 1024;

/// Why a listener could not start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetError {
    /// A limit is out of range.
    #[error("listener limit {what}: {why}")]
    BadLimit {
        /// Which limit.
        what: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// The process may not open enough file descriptors for its connection caps.
    #[error(
        "the connection caps need {needed} file descriptors but the hard limit is {hard}: \
         raise it (`ulimit -Hn`, systemd `LimitNOFILE=`) or lower --max-connections"
    )]
    FdLimit {
        /// Descriptors needed (all caps plus a reserve for files, Redis and the enclave).
        needed: u64,
        /// The hard `RLIMIT_NOFILE`.
        hard: u64,
    },
    /// The file-descriptor limit could not be read or raised.
    #[error("file descriptor limit: {0}")]
    Rlimit(String),
    /// The CA certificates given for outgoing HTTPS could not be used.
    #[error("HTTPS roots: {0} (give PEM files of CA certificates)")]
    Roots(String),
}

impl NetError {
    /// Stable code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            NetError::BadLimit { .. } => "net.bad_limit",
            NetError::FdLimit { .. } => "net.fd_limit",
            NetError::Rlimit(_) => "net.rlimit",
            NetError::Roots(_) => "net.roots",
        }
    }
}

/// Who is on the other end of a unix-socket connection (inserted as
/// `ConnectInfo<UnixPeer>`): the kernel's peer credentials where it has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixPeer {
    /// Peer user id.
    pub uid: Option<u32>,
    /// Peer group id.
    pub gid: Option<u32>,
    /// Peer process id.
    pub pid: Option<i32>,
}

/// A listener the loop can accept from.
trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    type Peer: Clone + Send + Sync + 'static;
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Io, Self::Peer)>> + Send;
}

impl Accept for TcpListener {
    type Io = tokio::net::TcpStream;
    type Peer = SocketAddr;
    async fn accept(&self) -> std::io::Result<(Self::Io, SocketAddr)> {
        let (s, peer) = TcpListener::accept(self).await?;
        // Answers are one small write; never wait for the peer's delayed ACK.
        let _ = s.set_nodelay(true);
        Ok((s, peer))
    }
}

impl Accept for UnixListener {
    type Io = UnixStream;
    type Peer = UnixPeer;
    async fn accept(&self) -> std::io::Result<(UnixStream, UnixPeer)> {
        let (s, _) = UnixListener::accept(self).await?;
        let cred = s.peer_cred().ok();
        let peer = UnixPeer {
            uid: cred.map(|c| c.uid()),
            gid: cred.map(|c| c.gid()),
            pid: cred.and_then(|c| c.pid()),
        };
        Ok((s, peer))
    }
}

/// Serves `router` on a TCP listener until `shutdown` resolves, then stops accepting, lets
/// open connections finish for [`ServeLimits::shutdown_grace`] and returns.
///
/// Handlers get `ConnectInfo<SocketAddr>`. Before accepting, the soft file-descriptor
/// limit is raised (up to the hard limit) to cover every running listener's cap plus a
/// reserve; if the hard limit is too low this returns [`NetError::FdLimit`].
pub async fn serve_tcp(
    listener: TcpListener,
    router: axum::Router,
    limits: &ServeLimits,
    stats: ConnStats,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), NetError> {
    serve(listener, router, limits, stats, shutdown).await
}

/// Serves `router` on a unix-socket listener; as [`serve_tcp`], with handlers getting
/// `ConnectInfo<UnixPeer>`.
pub async fn serve_unix(
    listener: UnixListener,
    router: axum::Router,
    limits: &ServeLimits,
    stats: ConnStats,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), NetError> {
    serve(listener, router, limits, stats, shutdown).await
}

/// What every connection of one listener shares.
pub(crate) struct Shared {
    pub(crate) router: axum::Router,
    pub(crate) limits: ServeLimits,
    pub(crate) stats: ConnStats,
    /// True while the accept loop waits for a slot.
    pub(crate) at_cap: watch::Receiver<bool>,
    /// True once shutdown was asked for.
    pub(crate) stop: watch::Receiver<bool>,
}

/// Pause after an accept error that is not about one connection (e.g. out of descriptors),
/// so the loop neither spins nor floods the log.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

async fn serve<L: Accept>(
    listener: L,
    router: axum::Router,
    limits: &ServeLimits,
    stats: ConnStats,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), NetError> {
    limits.validate()?;
    let _fds = fdlimit::reserve(limits.max_connections)?;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (at_cap_tx, at_cap) = watch::channel(false);
    let (stop_tx, stop) = watch::channel(false);
    let shared = Arc::new(Shared {
        router,
        limits: limits.clone(),
        stats: stats.clone(),
        at_cap,
        stop,
    });
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = &mut shutdown => break,
        };
        let (io, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                if !per_connection_error(&e) {
                    stats.accept_errors.inc();
                    tracing::warn!(error = %e, "accept failed; pausing");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
                continue;
            }
        };
        stats.accepted.inc();
        // At the cap this one connection waits here, unread (its clocks not started), and
        // every later one waits in the kernel's accept queue; meanwhile idle keep-alive
        // connections are asked to make room.
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                stats.cap_waits.inc();
                tracing::debug!(cap = limits.max_connections, "connection cap reached");
                at_cap_tx.send_replace(true);
                let p = tokio::select! {
                    p = Arc::clone(&slots).acquire_owned() => p,
                    _ = &mut shutdown => break,
                };
                at_cap_tx.send_replace(false);
                match p {
                    Ok(p) => p,
                    Err(_) => break, // never closed; stop rather than spin
                }
            }
        };
        tokio::spawn(conn::drive(io, peer, Arc::clone(&shared), permit));
    }
    drop(listener);
    stop_tx.send_replace(true);
    // Every connection holds one slot until it ends: all slots back means all done.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let wait = limits.shutdown_grace + Duration::from_secs(1);
    if tokio::time::timeout(wait, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace");
    }
    Ok(())
}

/// Accept errors that concern only the one connection being accepted.
fn per_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    )
}

/// Resolves on SIGINT or SIGTERM: when a CADA server stops accepting and drains.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        } => {}
    }
}

/// Logs of a server to stderr: JSON lines, or plain text when `format` is `text`; the level
/// from `RUST_LOG` (default `info`). Call once, at start.
pub fn init_logs(format: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "text" {
        b.init();
    } else {
        b.json().init();
    }
}

/// A `/metrics` answer: `registry` in the OpenMetrics text format (500 if it cannot be
/// encoded).
pub fn metrics_response(
    registry: &prometheus_client::registry::Registry,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
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
