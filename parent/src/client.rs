//! A pool of multiplexed connections to the enclave. Each connection carries many requests
//! at once (ids match answers to callers); a lost connection is re-established with
//! exponential backoff, and callers fail fast while the enclave is down.
//!
//! Every call ends by its deadline (`timeout` after it starts; the wait for the answer at
//! most [`cada_net::deadline::GRANULARITY`] late), whatever the enclave does:
//! waiting for a pool slot, connecting (and the hybrid-vsock handshake), writing the frame
//! and waiting for the answer are all bounded by the same deadline, and a call that misses
//! it returns [`ParentError::Timeout`]. A connection on which a call timed out without any
//! answer arriving since that call was sent is stalled: it is closed (its other callers fail
//! at once) and the next call connects afresh, so a wedged enclave connection never holds
//! later calls. A connection that keeps answering others is kept; one whose frame was cut
//! off midway by the deadline is closed, since the enclave would misread what follows.
//!
//! Each call writes its own frame (callers take turns on the write half): a writer task fed
//! by a queue cost a task wake-up, and often a second worker thread's, on every call.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cada_protocol::wire::{self, ErrorCode, Request, Response};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, WriteHalf,
};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tokio::time::{timeout_at, Instant};

use crate::ParentError;

/// Where the enclave listens.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// AF_VSOCK `cid:port`.
    Vsock {
        /// Enclave CID.
        cid: u32,
        /// Port.
        port: u32,
    },
    /// Hybrid vsock: a unix socket plus `CONNECT <port>`.
    Hybrid {
        /// Socket path.
        path: std::path::PathBuf,
        /// Port.
        port: u32,
    },
    /// TCP (sim only).
    Tcp(std::net::SocketAddr),
}

impl std::str::FromStr for Endpoint {
    type Err = String;
    /// `vsock:CID:PORT`, `unix:PATH:PORT` or `tcp:HOST:PORT`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected vsock:CID:PORT, unix:PATH:PORT or tcp:HOST:PORT");
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        match kind {
            "tcp" => rest.parse().map(Endpoint::Tcp).map_err(|_| bad()),
            "vsock" | "unix" => {
                let (a, p) = rest.rsplit_once(':').ok_or_else(bad)?;
                let port: u32 = p.parse().map_err(|_| bad())?;
                if kind == "vsock" {
                    Ok(Endpoint::Vsock {
                        cid: a.parse().map_err(|_| bad())?,
                        port,
                    })
                } else {
                    Ok(Endpoint::Hybrid {
                        path: a.into(),
                        port,
                    })
                }
            }
            _ => Err(bad()),
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

async fn connect(ep: &Endpoint) -> std::io::Result<Box<dyn Stream>> {
    match ep {
        Endpoint::Tcp(a) => {
            let s = tokio::net::TcpStream::connect(a).await?;
            s.set_nodelay(true)?;
            Ok(Box::new(s))
        }
        Endpoint::Vsock { cid, port } => {
            let s =
                tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(*cid, *port)).await?;
            Ok(Box::new(s))
        }
        Endpoint::Hybrid { path, port } => {
            let mut s = tokio::net::UnixStream::connect(path).await?;
            s.write_all(format!("CONNECT {port}\n").as_bytes()).await?;
            let mut rd = BufReader::new(s);
            let mut line = Vec::new();
            (&mut rd).take(64).read_until(b'\n', &mut line).await?;
            if !line.starts_with(b"OK ") {
                return Err(std::io::Error::other(format!(
                    "hybrid vsock handshake refused: {:?}",
                    String::from_utf8_lossy(&line)
                )));
            }
            Ok(Box::new(rd))
        }
    }
}

type Pending = Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<Response>>>>;

struct Conn {
    /// The write half, taken in turn by the calls (`None` once closed).
    writer: tokio::sync::Mutex<Option<WriteHalf<Box<dyn Stream>>>>,
    pending: Pending,
    alive: Arc<AtomicBool>,
    /// Answers received so far (progress, to tell a stalled connection from a slow call).
    answers: Arc<AtomicU64>,
    reader: AbortHandle,
}

/// How writing a call's frame ended.
enum Sent {
    /// Whole.
    Done,
    /// The connection failed or is closed.
    Lost,
    /// The deadline passed before the frame could be started (others' frames ahead).
    Waited,
    /// The deadline passed midway through the frame.
    Cut,
}

impl Conn {
    fn start(stream: Box<dyn Stream>) -> Arc<Conn> {
        let (rd, wr) = tokio::io::split(stream);
        let pending: Pending = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let answers = Arc::new(AtomicU64::new(0));
        let a2 = alive.clone();
        let (p, n) = (pending.clone(), answers.clone());
        let reader = tokio::spawn(async move {
            let mut rd = BufReader::with_capacity(64 * 1024, rd);
            let mut buf = Vec::new();
            loop {
                let mut hdr = [0u8; 4];
                if rd.read_exact(&mut hdr).await.is_err() {
                    break;
                }
                let Ok(len) = wire::frame_len(hdr) else { break };
                buf.resize(len, 0);
                if rd.read_exact(&mut buf).await.is_err() {
                    break;
                }
                let Ok(resp) = wire::decode_payload::<Response>(&buf) else {
                    break;
                };
                n.fetch_add(1, Ordering::AcqRel);
                let waiter = p.lock().ok().and_then(|mut m| m.remove(&resp.id));
                if let Some(w) = waiter {
                    let _ = w.send(resp);
                }
            }
            a2.store(false, Ordering::Release);
            // Dropping the senders wakes every waiter with "connection lost".
            if let Ok(mut m) = p.lock() {
                m.clear();
            }
        });
        Arc::new(Conn {
            writer: tokio::sync::Mutex::new(Some(wr)),
            pending,
            alive,
            answers,
            reader: reader.abort_handle(),
        })
    }

    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Writes one frame by `deadline`, after the frames of calls ahead of it.
    async fn send(&self, frame: &[u8], deadline: Instant) -> Sent {
        let mut started = false;
        let write = async {
            let mut w = self.writer.lock().await;
            let Some(w) = w.as_mut() else {
                return false;
            };
            started = true;
            w.write_all(frame).await.is_ok()
        };
        let written = timeout_at(deadline, write).await;
        match written {
            Ok(true) => Sent::Done,
            Ok(false) => Sent::Lost,
            Err(_) if started => Sent::Cut,
            Err(_) => Sent::Waited,
        }
    }

    /// Closes the connection: the reader stops, the socket is dropped (at once unless a
    /// call is writing; then when it gives up) and every waiter is woken with "connection
    /// lost".
    fn close(&self) {
        self.alive.store(false, Ordering::Release);
        self.reader.abort();
        if let Ok(mut w) = self.writer.try_lock() {
            w.take();
        }
        if let Ok(mut m) = self.pending.lock() {
            m.clear();
        }
    }

    /// After a call sent when `answers_then` answers had arrived timed out: close the
    /// connection when nothing has arrived since (the enclave side is stalled).
    fn timed_out(&self, answers_then: u64) -> bool {
        let stalled = self.answers.load(Ordering::Acquire) == answers_then;
        if stalled {
            tracing::warn!("no answer on an enclave connection before the deadline; closing it");
            self.close();
        }
        stalled
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Removes a call's waiter when the call ends in any way (answer, timeout, cancellation).
struct Waiter<'a> {
    conn: &'a Conn,
    id: u64,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if let Ok(mut p) = self.conn.pending.lock() {
            p.remove(&self.id);
        }
    }
}

struct Slot {
    conn: Option<Arc<Conn>>,
    retry_at: Option<Instant>,
    backoff: Duration,
}

/// The enclave client.
pub struct EnclaveClient {
    endpoint: Endpoint,
    slots: Vec<tokio::sync::Mutex<Slot>>,
    next: AtomicUsize,
    next_id: AtomicU64,
    timeout: Duration,
}

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl EnclaveClient {
    /// A pool of `connections` connections to `endpoint`; calls time out after `timeout`.
    pub fn new(endpoint: Endpoint, connections: usize, timeout: Duration) -> Self {
        EnclaveClient {
            endpoint,
            slots: (0..connections.max(1))
                .map(|_| {
                    tokio::sync::Mutex::new(Slot {
                        conn: None,
                        retry_at: None,
                        backoff: MIN_BACKOFF,
                    })
                })
                .collect(),
            next: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            timeout,
        }
    }

    async fn conn(&self, deadline: Instant) -> Result<Arc<Conn>, ParentError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = timeout_at(deadline, self.slots[i].lock())
            .await
            .map_err(|_| ParentError::Timeout)?;
        if let Some(c) = &slot.conn {
            if c.is_alive() {
                return Ok(c.clone());
            }
        }
        slot.conn = None;
        if let Some(t) = slot.retry_at {
            if Instant::now() < t {
                return Err(ParentError::EnclaveUnavailable(
                    "reconnecting (backoff)".into(),
                ));
            }
        }
        let result = timeout_at(deadline, connect(&self.endpoint)).await;
        if let Ok(Ok(stream)) = result {
            let c = Conn::start(stream);
            slot.conn = Some(c.clone());
            slot.retry_at = None;
            slot.backoff = MIN_BACKOFF;
            return Ok(c);
        }
        slot.retry_at = Some(Instant::now() + slot.backoff);
        slot.backoff = (slot.backoff * 2).min(MAX_BACKOFF);
        match result {
            Ok(Err(e)) => Err(ParentError::EnclaveUnavailable(e.to_string())),
            _ => Err(ParentError::Timeout),
        }
    }

    /// Calls `op` with `body`, returning the `ok` value. Ends by the client's timeout with
    /// [`ParentError::Timeout`] whatever the enclave does (see the module documentation).
    pub async fn call<T: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        op: &str,
        body: &T,
    ) -> Result<R, ParentError> {
        let deadline = Instant::now() + self.timeout;
        let req = Request {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            op: op.to_owned(),
            body: wire::to_value(body).map_err(|e| ParentError::Protocol(e.to_string()))?,
        };
        let frame = wire::encode_frame(&req).map_err(|e| ParentError::Protocol(e.to_string()))?;
        let conn = self.conn(deadline).await?;
        let (tx, rx) = oneshot::channel();
        let answers_then = conn.answers.load(Ordering::Acquire);
        if let Ok(mut p) = conn.pending.lock() {
            p.insert(req.id, tx);
        }
        let _waiter = Waiter {
            conn: &conn,
            id: req.id,
        };
        match conn.send(&frame, deadline).await {
            Sent::Done => {}
            Sent::Lost => {
                conn.close();
                return Err(ParentError::EnclaveUnavailable("connection lost".into()));
            }
            Sent::Waited => {
                // Others' frames are stuck behind a peer that does not read.
                conn.timed_out(answers_then);
                return Err(ParentError::Timeout);
            }
            Sent::Cut => {
                // Half a frame went out: the enclave would read the next one wrongly.
                tracing::warn!(
                    "a frame to the enclave was cut off by the deadline; closing the connection"
                );
                conn.close();
                return Err(ParentError::Timeout);
            }
        }
        // The answer's wait is bounded by the process's deadline sweeper (at most 100 ms
        // late), not a tokio timer: arming one per call woke the runtime's driver, and often
        // a second worker thread, on every call. (The waits above end at once unless the
        // pool or the connection is stuck, so their timers are not armed on this path.)
        let resp = match cada_net::deadline::timeout_at(deadline.into_std(), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => return Err(ParentError::EnclaveUnavailable("connection lost".into())),
            Err(_) => {
                conn.timed_out(answers_then);
                return Err(ParentError::Timeout);
            }
        };
        match (resp.ok, resp.err) {
            (Some(v), _) => v
                .deserialized()
                .map_err(|e| ParentError::Protocol(e.to_string())),
            (None, Some(e)) => Err(ParentError::Enclave {
                code: e.code,
                message: e.message,
            }),
            (None, None) => Err(ParentError::Enclave {
                code: ErrorCode::Malformed,
                message: "empty answer".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// How a fake enclave treats the requests on one connection.
    #[derive(Clone, Copy)]
    enum Fake {
        /// Reads requests, never answers.
        Silent,
        /// Answers every request at once (its `ok` is the op name).
        Answer,
        /// Answers every request after this long.
        Late(Duration),
        /// Answers `attest` after this long, everything else at once.
        SlowAttest(Duration),
    }

    /// A fake enclave on loopback TCP: connection `n` behaves as `plan[n]` (the last entry
    /// for later ones). Returns its endpoint and the count of accepted connections.
    async fn fake_enclave(plan: Vec<Fake>) -> (Endpoint, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let n = accepted.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let i = n.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_fake(s, plan[i.min(plan.len() - 1)]));
            }
        });
        (Endpoint::Tcp(addr), accepted)
    }

    async fn serve_fake(s: tokio::net::TcpStream, how: Fake) {
        let (mut rd, wr) = s.into_split();
        let wr = Arc::new(tokio::sync::Mutex::new(wr));
        loop {
            let mut hdr = [0u8; 4];
            if rd.read_exact(&mut hdr).await.is_err() {
                return;
            }
            let mut buf = vec![0u8; wire::frame_len(hdr).unwrap()];
            if rd.read_exact(&mut buf).await.is_err() {
                return;
            }
            let req: Request = wire::decode_payload(&buf).unwrap();
            let delay = match how {
                Fake::Silent => continue,
                Fake::Answer => Duration::ZERO,
                Fake::Late(d) => d,
                Fake::SlowAttest(d) if req.op == wire::ops::ATTEST => d,
                Fake::SlowAttest(_) => Duration::ZERO,
            };
            let wr = wr.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let f = wire::encode_frame(&Response {
                    id: req.id,
                    ok: Some(ciborium::Value::Text(req.op)),
                    err: None,
                })
                .unwrap();
                let _ = wr.lock().await.write_all(&f).await;
            });
        }
    }

    const TIMEOUT: Duration = Duration::from_millis(300);
    /// Generous bound on how long past its deadline a call may take to return on a loaded
    /// machine (the property tested is "bounded", not "fast").
    const SLACK: Duration = Duration::from_secs(2);

    async fn call(c: &EnclaveClient, op: &str) -> (Result<String, ParentError>, Duration) {
        let t = Instant::now();
        let r = c.call::<_, String>(op, &ciborium::Value::Null).await;
        (r, t.elapsed())
    }

    /// Runs a test body with an overall bound, so a regression fails instead of hanging.
    async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
        tokio::time::timeout(Duration::from_secs(30), f)
            .await
            .expect("the test finished in time");
    }

    #[tokio::test]
    async fn a_frame_cut_off_by_the_deadline_is_told_from_one_that_waited_its_turn() {
        bounded(async {
            // The enclave side never reads: the first frame stops after 64 bytes.
            let (ours, _theirs) = tokio::io::duplex(64);
            let conn = Conn::start(Box::new(ours));
            let big = vec![0u8; 4096];
            let first = conn.send(&big, Instant::now() + Duration::from_millis(400));
            let second = async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                conn.send(&[0u8; 8], Instant::now() + Duration::from_millis(100))
                    .await
            };
            let (first, second) = tokio::join!(first, second);
            // Half a frame went out: the caller must close the connection.
            assert!(matches!(first, Sent::Cut));
            // Nothing of this one went out: the connection may be fine.
            assert!(matches!(second, Sent::Waited));
            conn.close();
            assert!(matches!(
                conn.send(&[0u8; 8], Instant::now() + TIMEOUT).await,
                Sent::Lost
            ));
        })
        .await;
    }

    #[tokio::test]
    async fn a_silent_enclave_times_out_by_the_deadline_and_its_connection_is_replaced() {
        bounded(async {
            let (ep, accepted) = fake_enclave(vec![Fake::Silent, Fake::Answer]).await;
            let c = EnclaveClient::new(ep, 1, TIMEOUT);
            let (r, took) = call(&c, wire::ops::DESCRIBE).await;
            assert!(matches!(r, Err(ParentError::Timeout)), "{r:?}");
            assert!(took >= TIMEOUT && took < TIMEOUT + SLACK, "{took:?}");
            // The stalled connection was dropped: the next call connects afresh and succeeds.
            let (r, _) = call(&c, wire::ops::DESCRIBE).await;
            assert_eq!(r.unwrap(), "describe");
            assert_eq!(accepted.load(Ordering::SeqCst), 2);
        })
        .await;
    }

    #[tokio::test]
    async fn an_answer_after_the_deadline_is_a_timeout_and_does_not_wedge_later_calls() {
        bounded(async {
            let (ep, accepted) =
                fake_enclave(vec![Fake::Late(Duration::from_millis(900)), Fake::Answer]).await;
            let c = EnclaveClient::new(ep, 1, TIMEOUT);
            let (r, took) = call(&c, wire::ops::ATTEST).await;
            assert!(matches!(r, Err(ParentError::Timeout)), "{r:?}");
            assert!(took < TIMEOUT + SLACK, "{took:?}");
            for _ in 0..3 {
                let (r, _) = call(&c, wire::ops::DESCRIBE).await;
                assert_eq!(r.unwrap(), "describe");
            }
            assert_eq!(accepted.load(Ordering::SeqCst), 2);
        })
        .await;
    }

    #[tokio::test]
    async fn one_slow_call_on_a_connection_that_keeps_answering_keeps_the_connection() {
        bounded(async {
            let (ep, accepted) = fake_enclave(vec![Fake::SlowAttest(Duration::from_secs(3))]).await;
            let c = EnclaveClient::new(ep, 1, TIMEOUT);
            // Connect first, so the slow call and the quick ones share one connection.
            assert_eq!(call(&c, wire::ops::DESCRIBE).await.0.unwrap(), "describe");
            let slow = call(&c, wire::ops::ATTEST);
            let quick = async {
                for _ in 0..4 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    assert_eq!(call(&c, wire::ops::DESCRIBE).await.0.unwrap(), "describe");
                }
            };
            let ((r, _), ()) = tokio::join!(slow, quick);
            assert!(matches!(r, Err(ParentError::Timeout)), "{r:?}");
            assert_eq!(call(&c, wire::ops::DESCRIBE).await.0.unwrap(), "describe");
            assert_eq!(
                accepted.load(Ordering::SeqCst),
                1,
                "the healthy connection was kept"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn a_stalled_handshake_and_callers_queued_behind_it_end_by_their_deadlines() {
        bounded(async {
            let dir = std::env::temp_dir().join(format!("cada-parent-hs-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join("enclave.sock");
            let _ = std::fs::remove_file(&path);
            let l = tokio::net::UnixListener::bind(&path).unwrap();
            // Accepts, reads the CONNECT line, never answers it.
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((s, _)) = l.accept().await {
                    held.push(s);
                }
            });
            let c = EnclaveClient::new(Endpoint::Hybrid { path, port: 5005 }, 1, TIMEOUT);
            let (a, b) = tokio::join!(call(&c, wire::ops::DESCRIBE), call(&c, wire::ops::DESCRIBE));
            assert!(matches!(a.0, Err(ParentError::Timeout)), "{:?}", a.0);
            // The second waited for the pool slot behind the first: a timeout, or the
            // backoff the first one's failure set.
            for (r, took) in [a, b] {
                assert!(
                    matches!(
                        r,
                        Err(ParentError::Timeout | ParentError::EnclaveUnavailable(_))
                    ),
                    "{r:?}"
                );
                assert!(took < TIMEOUT + SLACK, "{took:?}");
            }
            let _ = std::fs::remove_dir_all(&dir);
        })
        .await;
    }
}
