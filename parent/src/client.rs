//! A pool of multiplexed connections to the enclave. Each connection carries many requests
//! at once (ids match answers to callers); every call has a timeout; a lost connection is
//! re-established with exponential backoff, and callers fail fast while the enclave is down.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cada_protocol::wire::{self, ErrorCode, Request, Response};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter,
};
use tokio::sync::{mpsc, oneshot};

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
    tx: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    alive: Arc<AtomicBool>,
}

impl Conn {
    fn start(stream: Box<dyn Stream>) -> Arc<Conn> {
        let (rd, wr) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
        let pending: Pending = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let (a1, a2) = (alive.clone(), alive.clone());
        tokio::spawn(async move {
            let mut wr = BufWriter::with_capacity(64 * 1024, wr);
            while let Some(f) = rx.recv().await {
                if wr.write_all(&f).await.is_err() || (rx.is_empty() && wr.flush().await.is_err()) {
                    break;
                }
            }
            a1.store(false, Ordering::Release);
        });
        let p = pending.clone();
        tokio::spawn(async move {
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
        Arc::new(Conn { tx, pending, alive })
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
        let mut slot = self.slots[i].lock().await;
        if let Some(c) = &slot.conn {
            if c.alive.load(Ordering::Acquire) {
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
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, connect(&self.endpoint)).await {
            Ok(Ok(stream)) => {
                let c = Conn::start(stream);
                slot.conn = Some(c.clone());
                slot.retry_at = None;
                slot.backoff = MIN_BACKOFF;
                Ok(c)
            }
            Ok(Err(e)) => {
                slot.retry_at = Some(Instant::now() + slot.backoff);
                slot.backoff = (slot.backoff * 2).min(MAX_BACKOFF);
                Err(ParentError::EnclaveUnavailable(e.to_string()))
            }
            Err(_) => Err(ParentError::Timeout),
        }
    }

    /// Calls `op` with `body`, returning the `ok` value.
    pub async fn call<T: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        op: &str,
        body: &T,
    ) -> Result<R, ParentError> {
        let deadline = Instant::now() + self.timeout;
        let conn = self.conn(deadline).await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let req = Request {
            id,
            op: op.to_owned(),
            body: wire::to_value(body).map_err(|e| ParentError::Protocol(e.to_string()))?,
        };
        let frame = wire::encode_frame(&req).map_err(|e| ParentError::Protocol(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = conn.pending.lock() {
            p.insert(id, tx);
        }
        if conn.tx.send(frame).await.is_err() {
            conn.alive.store(false, Ordering::Release);
            return Err(ParentError::EnclaveUnavailable("connection lost".into()));
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let resp = match tokio::time::timeout(remaining, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => return Err(ParentError::EnclaveUnavailable("connection lost".into())),
            Err(_) => {
                if let Ok(mut p) = conn.pending.lock() {
                    p.remove(&id);
                }
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
