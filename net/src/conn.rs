//! One connection: hyper's HTTP/1 state machine plus a clock that knows which deadline
//! applies (header read, keep-alive idle, or none while a request is being answered).
//!
//! hyper's own `header_read_timeout` starts whenever hyper waits for a head, including
//! between keep-alive requests, so it would cut idle keep-alive connections at the header
//! deadline; the clock here tells "waiting for a request" (idle deadline) from "a request
//! has started arriving" (header deadline), from the bytes the connection reads and the
//! requests it answers.
//!
//! The clock does not wake the driver when its phase changes (that costs a reschedule of the
//! connection's task, and often a wake-up of another worker thread, on every request): the
//! driver instead looks at the clock at least every `min(header, idle)` deadline. Every
//! deadline lies at least that long after the change that set it, so none is missed, and the
//! driver then sleeps until it exactly. The one change that is told at once is a connection
//! going idle while the listener is at its cap: it is closed to make room right away.
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::body::{body_timeout_response, DeadlineBody, GuardBody};
use crate::{ServeLimits, Shared};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Accepted, first request head not complete yet (clock from accept).
    First,
    /// Bytes of a later request have arrived, its head is not complete yet.
    Head,
    /// Requests being answered (head parsed, answer not fully handed to hyper).
    Busy(u32),
    /// Last answer done, no byte of a next request yet.
    Idle,
}

/// Which deadline closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    Header,
    Idle,
}

struct ClockState {
    phase: Phase,
    since: Instant,
}

/// The connection's clock, shared by its IO, its service and its driver.
pub(crate) struct Clock {
    state: Mutex<ClockState>,
    /// Signalled when the connection goes idle while the listener is at its cap.
    changed: Notify,
    /// Whether the listener is at its cap (then idle connections make room).
    at_cap: watch::Receiver<bool>,
}

impl Clock {
    fn new(at_cap: watch::Receiver<bool>) -> Self {
        Clock {
            state: Mutex::new(ClockState {
                phase: Phase::First,
                since: Instant::now(),
            }),
            changed: Notify::new(),
            at_cap,
        }
    }

    fn lock(&self) -> MutexGuard<'_, ClockState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Bytes arrived. (The header deadline this may start is at least the driver's
    /// look-again interval away: no need to wake it.)
    fn on_read(&self) {
        let mut s = self.lock();
        if s.phase == Phase::Idle {
            s.phase = Phase::Head;
            s.since = Instant::now();
        }
    }

    /// A request head was parsed.
    fn begin(self: &Arc<Self>) -> RequestGuard {
        let mut s = self.lock();
        s.phase = match s.phase {
            Phase::Busy(n) => Phase::Busy(n.saturating_add(1)),
            _ => Phase::Busy(1),
        };
        RequestGuard(Arc::clone(self))
    }

    fn end(&self) {
        let mut s = self.lock();
        if let Phase::Busy(n) = s.phase {
            if n > 1 {
                s.phase = Phase::Busy(n - 1);
            } else {
                s.phase = Phase::Idle;
                s.since = Instant::now();
                drop(s);
                // At the cap an idle connection makes room at once; otherwise the idle
                // deadline is at least the driver's look-again interval away.
                if *self.at_cap.borrow() {
                    self.changed.notify_one();
                }
            }
        }
    }

    /// The deadline in force, if any, and whether the connection is idle.
    fn deadline(&self, l: &ServeLimits) -> Option<(Instant, Deadline)> {
        let s = self.lock();
        match s.phase {
            Phase::First | Phase::Head => Some((s.since + l.header_read_timeout, Deadline::Header)),
            Phase::Idle => Some((s.since + l.idle_timeout, Deadline::Idle)),
            Phase::Busy(_) => None,
        }
    }
}

/// Held while a request is being answered; its drop starts the idle clock.
pub(crate) struct RequestGuard(Arc<Clock>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// The socket, reporting reads to the clock.
struct TrackedIo<T> {
    inner: T,
    clock: Arc<Clock>,
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.clock.on_read();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Answers one request: peer info in, body deadline on, 408 if it passed, guard on the
/// answer.
async fn handle<P: Clone + Send + Sync + 'static>(
    req: Request<Incoming>,
    peer: P,
    clock: Arc<Clock>,
    sh: Arc<Shared>,
) -> Result<axum::http::Response<GuardBody>, Infallible> {
    let guard = clock.begin();
    if sh.limits.chain_header_bytes > 0 {
        let other = head_without_chain(&req);
        if other > sh.limits.max_header_bytes {
            let resp = axum::response::IntoResponse::into_response(crate::Problem::new(
                axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request.header_too_large",
                format!(
                    "the request head without CADA-Contract is {other} bytes, more than the \
                     limit of {} (only CADA-Contract, a delegation chain, may use {} bytes more)",
                    sh.limits.max_header_bytes, sh.limits.chain_header_bytes
                ),
            ));
            return Ok(resp.map(|inner| GuardBody {
                inner,
                _guard: guard,
            }));
        }
    }
    let expired = Arc::new(AtomicBool::new(false));
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(ConnectInfo(peer));
    let deadline = Instant::now() + sh.limits.body_timeout;
    let body = axum::body::Body::new(DeadlineBody::new(body, deadline, Arc::clone(&expired)));
    let resp = match sh
        .router
        .clone()
        .oneshot(Request::from_parts(parts, body))
        .await
    {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let resp = if expired.load(std::sync::atomic::Ordering::Acquire) {
        sh.stats.body_timeouts.inc();
        tracing::debug!("request body deadline passed: 408");
        body_timeout_response(sh.limits.body_timeout)
    } else {
        resp
    };
    Ok(resp.map(|inner| GuardBody {
        inner,
        _guard: guard,
    }))
}

/// The size of a request head as sent, without its `CADA-Contract` lines: the request line
/// and each other header as `name: value\r\n` (hyper has parsed them within the whole
/// head's limit already).
fn head_without_chain<B>(req: &Request<B>) -> usize {
    let line = req.method().as_str().len() + req.uri().to_string().len() + " HTTP/1.1\r\n ".len();
    req.headers()
        .iter()
        .filter(|(name, _)| name.as_str() != crate::CHAIN_HEADER)
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + line
        + 2
}

/// Serves one connection until it ends, a deadline passes, it is evicted while idle at the
/// cap, or shutdown (then it gets the grace period). Returns how many times the driver
/// looked at the clock (a measure of its overhead: requests alone do not make it look).
pub(crate) async fn drive<T, P>(
    io: T,
    peer: P,
    sh: Arc<Shared>,
    permit: OwnedSemaphorePermit,
) -> u64
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    P: Clone + Send + Sync + 'static,
{
    sh.stats.open.inc();
    let clock = Arc::new(Clock::new(sh.at_cap.clone()));
    let io = TokioIo::new(TrackedIo {
        inner: io,
        clock: Arc::clone(&clock),
    });
    let svc = {
        let clock = Arc::clone(&clock);
        let sh = Arc::clone(&sh);
        hyper::service::service_fn(move |req| {
            handle(req, peer.clone(), Arc::clone(&clock), Arc::clone(&sh))
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // The clock above runs the header deadline (hyper's would also cut idle
        // keep-alive connections at it).
        .header_read_timeout(None)
        .keep_alive(true)
        .max_header_size(sh.limits.head_bytes())
        .max_buf_size(sh.limits.head_bytes());
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let mut at_cap = sh.at_cap.clone();
    let mut stop = sh.stop.clone();
    // Phase changes do not wake this loop (see the module documentation): it looks at the
    // clock at least this often, and every deadline is at least this far from the change
    // that set it.
    let look_again = look_again(&sh.limits);
    let mut turns = 0u64;
    loop {
        turns += 1;
        let due = clock.deadline(&sh.limits);
        let idle = matches!(due, Some((_, Deadline::Idle)));
        let wake = due.map_or_else(
            || Instant::now() + look_again,
            |d| d.0.min(Instant::now() + look_again),
        );
        tokio::select! {
            // The connection first: a deadline only counts if, polled, it made no progress
            // (a starved task must not cut a client whose bytes are already here).
            biased;
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            _ = clock.changed.notified() => {}
            () = tokio::time::sleep_until(wake) => {
                // The phase may have moved on since `due` was read; only a deadline still
                // in force closes the connection.
                if let Some((when, kind)) = clock.deadline(&sh.limits) {
                    if when <= Instant::now() {
                        match kind {
                            Deadline::Header => sh.stats.header_timeouts.inc(),
                            Deadline::Idle => sh.stats.idle_timeouts.inc(),
                        };
                        tracing::debug!(deadline = ?kind, "closing connection: deadline passed");
                        break;
                    }
                }
            }
            // Waits for the cap while idle, or (busy) for the cap to be reached: a busy
            // connection at the cap is woken by its clock once it goes idle.
            open = async { at_cap.wait_for(|&b| b).await.is_ok() }, if idle || !*sh.at_cap.borrow() => {
                if open && matches!(clock.deadline(&sh.limits), Some((_, Deadline::Idle))) {
                    sh.stats.evicted_idle.inc();
                    tracing::debug!("closing idle keep-alive connection: at the connection cap");
                    break;
                }
                if !open {
                    graceful(conn.as_mut(), &sh.limits).await;
                    break;
                }
            }
            _ = async { stop.wait_for(|&b| b).await.is_ok() } => {
                graceful(conn.as_mut(), &sh.limits).await;
                break;
            }
        }
    }
    sh.stats.open.dec();
    drop(permit);
    turns
}

/// How long the driver may go without looking at the clock: the shorter of the header and
/// idle deadlines (a deadline set by a phase change is never closer than that to the change).
fn look_again(l: &ServeLimits) -> Duration {
    l.header_read_timeout.min(l.idle_timeout)
}

/// Lets the current answer finish (no new request), for at most the shutdown grace.
async fn graceful<C>(mut conn: Pin<&mut C>, l: &ServeLimits)
where
    C: GracefulConn,
{
    conn.as_mut().shut();
    let _ = tokio::time::timeout(l.shutdown_grace, conn).await;
}

/// hyper's connection type, named through what this module needs of it.
trait GracefulConn: std::future::Future {
    fn shut(self: Pin<&mut Self>);
}

impl<I, S> GracefulConn for http1::Connection<I, S>
where
    S: hyper::service::HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S::ResBody: 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn shut(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::Semaphore;

    /// Keep-alive requests answered one after the other do not wake the connection's driver:
    /// before, every request woke it twice (its first byte and the end of its answer), each
    /// time rescheduling the connection's task (and often waking a second worker thread).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_on_a_keep_alive_connection_do_not_wake_the_driver() {
        let (_at_cap_tx, at_cap) = watch::channel(false);
        let (_stop_tx, stop) = watch::channel(false);
        let sh = Arc::new(Shared {
            router: axum::Router::new().route("/", axum::routing::get(|| async { "hi" })),
            limits: ServeLimits::local(),
            stats: crate::ConnStats::default(),
            at_cap,
            stop,
        });
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let driver = tokio::spawn(drive(server, (), sh, permit));
        let mut buf = vec![0u8; 4096];
        for _ in 0..100 {
            client
                .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                .await
                .unwrap();
            let mut got = Vec::new();
            while !got.ends_with(b"hi") {
                let n = client.read(&mut buf).await.unwrap();
                assert!(n > 0, "connection closed early");
                got.extend_from_slice(&buf[..n]);
            }
        }
        drop(client);
        let turns = tokio::time::timeout(std::time::Duration::from_secs(30), driver)
            .await
            .expect("the connection ends when the client goes")
            .unwrap();
        // One look at the start, at most a few more for the close: not one per request.
        assert!(
            turns <= 5,
            "the driver looked at the clock {turns} times for 100 requests"
        );
    }
}
