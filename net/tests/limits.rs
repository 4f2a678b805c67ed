//! The listener's limits as a client meets them: small limits (hundreds of ms, caps of 8)
//! and a tiny router, over real loopback TCP and unix sockets. Every wait is bounded; no
//! assertion is about speed, only about what happens (closed, answered, not answered).
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use axum::Router;
use cada_net::{serve_tcp, serve_unix, ConnStats, NetError, ServeLimits, UnixPeer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::{sleep, timeout, Instant};

/// The longest any single step may take before the test fails.
const BOUND: Duration = Duration::from_secs(10);

fn router() -> Router {
    Router::new()
        .route("/hello", get(|| async { "hi" }))
        .route(
            "/slow",
            get(|| async {
                sleep(Duration::from_millis(500)).await;
                "slow"
            }),
        )
        .route(
            "/peer",
            get(|ConnectInfo(p): ConnectInfo<SocketAddr>| async move { p.to_string() }),
        )
        .route(
            "/who",
            get(|ConnectInfo(p): ConnectInfo<UnixPeer>| async move {
                format!("uid={}", p.uid.map_or(-1, i64::from))
            }),
        )
        .route(
            "/echo",
            post(
                |b: Result<Bytes, axum::extract::rejection::BytesRejection>| async move {
                    match b {
                        Ok(b) => format!("len={}", b.len()),
                        Err(e) => format!("bad body: {e}"),
                    }
                },
            ),
        )
}

fn limits(cap: usize, header_ms: u64, idle_ms: u64, body_ms: u64) -> ServeLimits {
    ServeLimits {
        max_connections: cap,
        header_read_timeout: Duration::from_millis(header_ms),
        idle_timeout: Duration::from_millis(idle_ms),
        body_timeout: Duration::from_millis(body_ms),
        shutdown_grace: Duration::from_millis(500),
        ..ServeLimits::public()
    }
}

struct Server {
    addr: SocketAddr,
    stats: ConnStats,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<(), NetError>>,
}

impl Server {
    async fn start(l: ServeLimits) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = ConnStats::default();
        let (tx, rx) = oneshot::channel::<()>();
        let s = stats.clone();
        let done = tokio::spawn(async move {
            serve_tcp(listener, router(), &l, s, async {
                let _ = rx.await;
            })
            .await
        });
        Server {
            addr,
            stats,
            stop: Some(tx),
            done,
        }
    }

    /// Waits (bounded) until `open` connections are being served.
    async fn wait_open(&self, open: i64) {
        let t = Instant::now();
        while self.stats.open.get() != open {
            assert!(
                t.elapsed() < BOUND,
                "open stayed {} (wanted {open})",
                self.stats.open.get()
            );
            sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        timeout(BOUND, self.done)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

/// An HTTP answer: status, head, body.
type Answer = (u16, String, String);

/// Reads one answer (head plus Content-Length body) from `s`; None if the connection
/// closed or `wait` passed first.
async fn read_answer<S: tokio::io::AsyncRead + Unpin>(s: &mut S, wait: Duration) -> Option<Answer> {
    let deadline = Instant::now() + wait;
    let mut buf = Vec::new();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let status = head.split_whitespace().nth(1)?.parse().ok()?;
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                return Some((status, head, body));
            }
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

/// True once the server has closed `s` (EOF or reset), reading and discarding anything
/// before that; false if still open after `wait`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(s: &mut S, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// One request on a fresh connection (`Connection: close`).
async fn get_once(addr: SocketAddr, path: &str) -> Answer {
    let mut s = timeout(BOUND, TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_answer(&mut s, BOUND)
        .await
        .unwrap_or_else(|| panic!("no answer to GET {path}"))
}

const HALF_HEAD: &[u8] = b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Slow: ";
const KEEP_ALIVE_GET: &[u8] = b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_headers_and_silent_connections_are_closed_while_honest_clients_are_answered() {
    let srv = Server::start(limits(64, 300, 5_000, 5_000)).await;
    let mut slow = Vec::new();
    for i in 0..36 {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        if i % 9 != 0 {
            s.write_all(HALF_HEAD).await.unwrap(); // 32 send half a head, 4 send nothing
        }
        slow.push(s);
    }
    srv.wait_open(36).await;
    // Honest clients are answered all along, while the slow ones are being cut.
    let addr = srv.addr;
    let honest = tokio::spawn(async move {
        for _ in 0..12 {
            let (status, _, body) = get_once(addr, "/hello").await;
            assert_eq!((status, body.as_str()), (200, "hi"));
            sleep(Duration::from_millis(50)).await;
        }
    });
    for s in &mut slow {
        assert!(
            closed_within(s, BOUND).await,
            "a half-header connection was not closed"
        );
    }
    timeout(BOUND, honest).await.unwrap().unwrap();
    assert_eq!(srv.stats.header_timeouts.get(), 36);
    assert_eq!(get_once(srv.addr, "/hello").await.0, 200);
    srv.wait_open(0).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_beyond_the_cap_waits_its_turn_and_the_honest_client_still_gets_through() {
    let srv = Server::start(limits(8, 300, 5_000, 5_000)).await;
    let mut slow = Vec::new();
    for _ in 0..24 {
        // Beyond the cap the handshake completes in the kernel's accept queue.
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(HALF_HEAD).await.unwrap();
        slow.push(s);
    }
    let (status, _, body) = get_once(srv.addr, "/hello").await;
    assert_eq!((status, body.as_str()), (200, "hi"));
    for s in &mut slow {
        assert!(closed_within(s, BOUND).await);
    }
    assert_eq!(srv.stats.header_timeouts.get(), 24);
    assert!(srv.stats.cap_waits.get() >= 1);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_cap_new_connections_are_not_served_until_others_close() {
    let srv = Server::start(limits(8, 30_000, 30_000, 30_000)).await;
    let mut holders = Vec::new();
    for _ in 0..8 {
        holders.push(TcpStream::connect(srv.addr).await.unwrap());
    }
    srv.wait_open(8).await;
    let mut honest = TcpStream::connect(srv.addr).await.unwrap();
    honest
        .write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_answer(&mut honest, Duration::from_millis(300)).await,
        None,
        "served beyond the cap"
    );
    assert_eq!(srv.stats.open.get(), 8);
    assert!(srv.stats.cap_waits.get() >= 1);
    holders.pop(); // one slot frees
    let (status, _, body) = read_answer(&mut honest, BOUND)
        .await
        .expect("served after a slot freed");
    assert_eq!((status, body.as_str()), (200, "hi"));
    drop(holders);
    srv.wait_open(0).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_idle_keep_alive_connections_make_room() {
    let srv = Server::start(limits(8, 30_000, 30_000, 30_000)).await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(KEEP_ALIVE_GET).await.unwrap();
        assert_eq!(read_answer(&mut s, BOUND).await.unwrap().0, 200);
        idle.push(s);
    }
    srv.wait_open(8).await;
    // Without eviction this would wait 30 s for the idle deadline.
    let (status, _, _) = get_once(srv.addr, "/hello").await;
    assert_eq!(status, 200);
    assert!(srv.stats.evicted_idle.get() >= 1);
    let mut closed = 0;
    for s in &mut idle {
        if closed_within(s, Duration::from_millis(200)).await {
            closed += 1;
        }
    }
    assert!(closed >= 1, "no idle connection was closed");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_a_connection_that_goes_idle_after_its_answer_makes_room_at_once() {
    // Both slots busy when the third client arrives; the first to finish its answer goes
    // idle at the cap and must make room then, not at its 30 s idle deadline (the driver is
    // not woken by ordinary phase changes, only by this one).
    let srv = Server::start(limits(2, 30_000, 30_000, 30_000)).await;
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        busy.push(s);
    }
    srv.wait_open(2).await;
    let third = tokio::spawn({
        let addr = srv.addr;
        async move { get_once(addr, "/hello").await }
    });
    for s in &mut busy {
        let (status, _, body) = read_answer(s, BOUND).await.expect("the slow answer");
        assert_eq!((status, body.as_str()), (200, "slow"));
    }
    let (status, _, body) = timeout(BOUND, third)
        .await
        .expect("served well before the idle deadline")
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "hi"));
    assert!(srv.stats.evicted_idle.get() >= 1);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_gets_408_and_a_closed_connection() {
    let srv = Server::start(limits(8, 5_000, 5_000, 300)).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    let (mut rd, mut wr) = s.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if wr.write_all(b"x").await.is_err() {
                break;
            }
            sleep(Duration::from_millis(100)).await;
        }
    });
    let (status, head, body) = read_answer(&mut rd, BOUND).await.expect("an answer");
    assert_eq!(status, 408, "{head}\n{body}");
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: application/problem+json"));
    assert!(head.to_ascii_lowercase().contains("connection: close"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["type"], "urn:cada:problem:body-timeout");
    assert_eq!(v["status"], 408);
    assert!(closed_within(&mut rd, BOUND).await);
    trickle.abort();
    assert_eq!(srv.stats.body_timeouts.get(), 1);
    // A body sent at once is unaffected.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let (status, _, body) = read_answer(&mut s, BOUND).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "len=5"));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_are_reused_then_closed_after_the_idle_timeout() {
    let srv = Server::start(limits(8, 5_000, 1_000, 5_000)).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    for _ in 0..3 {
        s.write_all(KEEP_ALIVE_GET).await.unwrap();
        let (status, _, body) = read_answer(&mut s, BOUND).await.expect("keep-alive reuse");
        assert_eq!((status, body.as_str()), (200, "hi"));
    }
    assert!(
        closed_within(&mut s, BOUND).await,
        "idle connection left open"
    );
    assert_eq!(srv.stats.idle_timeouts.get(), 1);
    assert_eq!(srv.stats.header_timeouts.get(), 0);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_clock_of_a_later_request_starts_at_its_first_byte_not_at_idle() {
    // hyper's own header timeout would count the idle gap and cut this connection.
    let srv = Server::start(limits(8, 300, 5_000, 5_000)).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(KEEP_ALIVE_GET).await.unwrap();
    assert_eq!(read_answer(&mut s, BOUND).await.unwrap().0, 200);
    sleep(Duration::from_millis(900)).await; // idle, three header deadlines long
    s.write_all(KEEP_ALIVE_GET).await.unwrap();
    assert_eq!(
        read_answer(&mut s, BOUND).await.expect("second request").0,
        200
    );
    // ... but half a head after idling is still cut at the header deadline.
    s.write_all(HALF_HEAD).await.unwrap();
    assert!(closed_within(&mut s, BOUND).await);
    assert_eq!(srv.stats.header_timeouts.get(), 1);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_see_the_peer_address_and_oversized_heads_are_refused() {
    let srv = Server::start(limits(8, 5_000, 5_000, 5_000)).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let me = s.local_addr().unwrap();
    s.write_all(b"GET /peer HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let (status, _, body) = read_answer(&mut s, BOUND).await.unwrap();
    assert_eq!((status, body), (200, me.to_string()));
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let big = format!(
        "GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(cada_net::DEFAULT_MAX_HEADER_BYTES + 1)
    );
    let _ = s.write_all(big.as_bytes()).await; // the server may close before all is sent
                                               // Closed without an answer (a reset may overtake it) is a refusal too.
    if let Some((status, _, _)) = read_answer(&mut s, BOUND).await {
        assert_eq!(status, 431);
    }
    assert!(closed_within(&mut s, BOUND).await);
    srv.stop().await;
}

/// Review delegation-1, finding 2: a server that takes a delegation chain
/// ([`ServeLimits::with_chain`]) reads a `CADA-Contract` as large as the format allows
/// (`MAX_CHAIN_LEN`, 256 KiB) beside 60 KiB of other headers; any other header keeps the
/// default limit (`431 request.header_too_large`), and a head beyond both is refused by hyper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_header_gets_room_of_its_own_and_other_headers_keep_the_limit() {
    let l = limits(8, 5_000, 5_000, 5_000).with_chain();
    assert_eq!(
        l.head_bytes(),
        cada_net::DEFAULT_MAX_HEADER_BYTES + cada_net::CHAIN_HEADER_BYTES
    );
    let srv = Server::start(l).await;
    let addr = srv.addr;
    let send = |head: String| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(head.as_bytes()).await;
        read_answer(&mut s, BOUND).await
    };
    let chain = "c".repeat(cada_net::CHAIN_HEADER_BYTES);
    let other = "o".repeat(60 * 1024);
    let ok = format!(
        "GET /hello HTTP/1.1\r\nHost: t\r\nCADA-Contract: {chain}\r\nX-Other: {other}\r\n\r\n"
    );
    let (status, _, body) = send(ok).await.expect("answered");
    assert_eq!((status, body.as_str()), (200, "hi"));
    // The same bytes in another header: refused, naming the rule.
    let wide = format!("GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: {chain}\r\n\r\n");
    let (status, _, body) = send(wide).await.expect("answered");
    assert_eq!(status, 431, "{body}");
    assert!(body.contains("request.header_too_large"), "{body}");
    // Beyond the whole head: refused before any handler (or the connection cut).
    let over = format!(
        "GET /hello HTTP/1.1\r\nHost: t\r\nCADA-Contract: {chain}\r\nX-Other: {}\r\n\r\n",
        "o".repeat(cada_net::DEFAULT_MAX_HEADER_BYTES + 1)
    );
    if let Some((status, _, _)) = send(over).await {
        assert_eq!(status, 431);
    }
    // Without with_chain, the chain alone is too large.
    let plain = Server::start(limits(8, 5_000, 5_000, 5_000)).await;
    let mut s = TcpStream::connect(plain.addr).await.unwrap();
    let head = format!("GET /hello HTTP/1.1\r\nHost: t\r\nCADA-Contract: {chain}\r\n\r\n");
    let _ = s.write_all(head.as_bytes()).await;
    if let Some((status, _, _)) = read_answer(&mut s, BOUND).await {
        assert_eq!(status, 431);
    }
    plain.stop().await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_listener_has_the_same_limits_and_reports_peer_credentials() {
    let dir = std::env::temp_dir().join(format!("cada-net-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("t.sock");
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let stats = ConnStats::default();
    let (tx, rx) = oneshot::channel::<()>();
    let l = limits(8, 300, 5_000, 5_000);
    let st = stats.clone();
    let done = tokio::spawn(async move {
        serve_unix(listener, router(), &l, st, async {
            let _ = rx.await;
        })
        .await
    });
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata(&path).unwrap().uid();
    let mut slow = tokio::net::UnixStream::connect(&path).await.unwrap();
    slow.write_all(HALF_HEAD).await.unwrap();
    let mut s = tokio::net::UnixStream::connect(&path).await.unwrap();
    s.write_all(b"GET /who HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let (status, _, body) = read_answer(&mut s, BOUND).await.unwrap();
    assert_eq!((status, body), (200, format!("uid={uid}")));
    assert!(closed_within(&mut slow, BOUND).await);
    assert_eq!(stats.header_timeouts.get(), 1);
    let _ = tx.send(());
    timeout(BOUND, done).await.unwrap().unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_lets_idle_connections_go() {
    let srv = Server::start(limits(8, 30_000, 30_000, 30_000)).await;
    let addr = srv.addr;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(KEEP_ALIVE_GET).await.unwrap();
    assert_eq!(read_answer(&mut s, BOUND).await.unwrap().0, 200);
    srv.stop().await; // returns within the bound although the connection was kept alive
    assert!(closed_within(&mut s, BOUND).await);
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}

#[test]
fn limits_out_of_range_are_refused_with_a_reason() {
    let mut l = ServeLimits::public();
    assert_eq!(l.validate(), Ok(()));
    assert_eq!(ServeLimits::local().validate(), Ok(()));
    l.max_header_bytes = 1024; // hyper would panic below 8 KiB
    let e = l.validate().unwrap_err();
    assert_eq!(e.code(), "net.bad_limit");
    assert!(e.to_string().contains("max_header_bytes"), "{e}");
    let mut l = ServeLimits::public();
    l.header_read_timeout = Duration::ZERO;
    assert!(l
        .validate()
        .unwrap_err()
        .to_string()
        .contains("header_read_timeout"));
    let mut l = ServeLimits::public();
    l.max_connections = 0;
    assert!(l
        .validate()
        .unwrap_err()
        .to_string()
        .contains("max_connections"));
}
