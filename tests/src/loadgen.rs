//! A small HTTP load generator for the benchmarks: N agents with keep-alive connections,
//! either closed loop (back to back: saturation) or paced open loop at a total rate.
//! Paced agents are spread evenly over one interval; when an answer arrives after the next
//! request was due, that request's latency counts from its due time (no coordinated
//! omission); tokio's timer wakes up to 1 ms late, so otherwise latency counts from the send.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)] // test code: casts of generated values, no outside bytes
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

/// Where the server listens.
#[derive(Clone, Debug)]
pub enum Target {
    /// A unix socket.
    Unix(PathBuf),
    /// A loopback TCP port.
    Tcp(u16),
}

/// Builds the body of the n-th request.
pub type BodyFn = Arc<dyn Fn(usize) -> Bytes + Send + Sync>;

/// Builds the whole n-th request (method, path, headers, body).
pub type RequestFn = Arc<dyn Fn(usize) -> hyper::Request<Full<Bytes>> + Send + Sync>;

/// Outcome of one run.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Successful requests per second, over the measured window up to the last answer: a
    /// paced run the server cannot keep up with reports what it achieved, not the pace.
    pub rate: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
    /// Requests that failed (transport error or non-2xx).
    pub errors: u64,
}

impl std::fmt::Display for LoadResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0}/s, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms, errors {}",
            self.rate, self.p50_ms, self.p99_ms, self.max_ms, self.errors
        )
    }
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(t: &Target) -> Sender {
    macro_rules! hs {
        ($s:expr) => {{
            let (sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new($s))
                    .await
                    .expect("HTTP handshake");
            tokio::spawn(conn);
            sender
        }};
    }
    match t {
        Target::Unix(p) => hs!(tokio::net::UnixStream::connect(p)
            .await
            .expect("connect unix socket")),
        Target::Tcp(port) => {
            let s = tokio::net::TcpStream::connect(("127.0.0.1", *port))
                .await
                .expect("connect tcp");
            let _ = s.set_nodelay(true);
            hs!(s)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn agent(
    target: Target,
    make: RequestFn,
    counter: Arc<AtomicUsize>,
    until: Instant,
    warm_until: Instant,
    interval: Option<Duration>,
    phase: f64,
) -> (Vec<u32>, u64) {
    let mut sender = connect(&target).await;
    let mut lat = Vec::with_capacity(100_000);
    let mut errors = 0u64;
    let first = Instant::now() + interval.map_or(Duration::ZERO, |iv| iv.mul_f64(phase));
    let mut k = 0u32;
    loop {
        let t = match interval {
            Some(iv) => {
                let due = first + iv * k;
                k += 1;
                if Instant::now() >= due {
                    due
                } else {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                }
            }
            None => Instant::now(),
        };
        if t >= until {
            break;
        }
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let req = make(n);
        let ok = match sender.send_request(req).await {
            Ok(resp) => {
                let ok = resp.status().is_success();
                let _ = resp.into_body().collect().await;
                ok
            }
            Err(_) => false,
        };
        if !ok {
            errors += 1;
            if sender.is_closed() {
                sender = connect(&target).await;
            }
        } else if t >= warm_until {
            lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
        }
    }
    (lat, errors)
}

/// Runs `clients` agents against `target` for one warm-up second plus `secs` seconds.
pub fn run(
    rt: &tokio::runtime::Runtime,
    target: &Target,
    path: &'static str,
    body: BodyFn,
    clients: usize,
    secs: u64,
    pace_per_sec: Option<u32>,
) -> LoadResult {
    let make: RequestFn = Arc::new(move |n| {
        hyper::Request::post(path)
            .header("host", "cada")
            .header("content-type", "application/json")
            .body(Full::new(body(n)))
            .expect("request")
    });
    run_requests(rt, target, make, clients, secs, pace_per_sec)
}

/// [`run`] with whole requests built by `make` (headers of one's own, other methods).
pub fn run_requests(
    rt: &tokio::runtime::Runtime,
    target: &Target,
    make: RequestFn,
    clients: usize,
    secs: u64,
    pace_per_sec: Option<u32>,
) -> LoadResult {
    let counter = Arc::new(AtomicUsize::new(0));
    let warm_until = Instant::now() + Duration::from_secs(1);
    let until = warm_until + Duration::from_secs(secs);
    let interval = pace_per_sec.map(|r| Duration::from_secs_f64(clients as f64 / f64::from(r)));
    let (mut lat, errors) = rt.block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|i| {
                let phase = i as f64 / clients as f64;
                tokio::spawn(agent(
                    target.clone(),
                    make.clone(),
                    counter.clone(),
                    until,
                    warm_until,
                    interval,
                    phase,
                ))
            })
            .collect();
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (l, e) = t.await.expect("agent");
            all.extend(l);
            errors += e;
        }
        (all, errors)
    });
    // Requests due before the end are still answered after it: the window ends with the last
    // answer, so an overloaded paced run shows its backlog as a lower rate.
    let window = warm_until.elapsed().as_secs_f64().max(secs as f64);
    lat.sort_unstable();
    LoadResult {
        rate: lat.len() as f64 / window,
        p50_ms: pct(&lat, 0.50),
        p99_ms: pct(&lat, 0.99),
        max_ms: pct(&lat, 1.0),
        errors,
    }
}

/// Resident set size (VmRSS) of this process, KiB.
pub fn self_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
