//! Slow clients against the real binaries, with the listener flags set small: half-header
//! and silent connections are cut at the header deadline while an honest client is
//! answered, a trickled body gets 408, idle keep-alive connections are closed, and the
//! parent's agent socket has the same protection.
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use cada_e2e::*;

/// The longest any single wait may take before the test fails.
const BOUND: Duration = Duration::from_secs(10);
const HALF_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ";

/// True once the peer closed `s` (EOF or reset), discarding anything read before.
fn closed_within<S: Read>(s: &mut S, set_timeout: impl Fn(&S, Duration)) -> bool {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    while start.elapsed() < BOUND {
        set_timeout(
            s,
            BOUND
                .saturating_sub(start.elapsed())
                .max(Duration::from_millis(1)),
        );
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
    false
}

fn tcp_closed(s: &mut TcpStream) -> bool {
    closed_within(s, |s, d| s.set_read_timeout(Some(d)).unwrap())
}

/// Reads one answer (head and Content-Length body): (status, head, body).
fn read_answer(s: &mut TcpStream) -> (u16, String, String) {
    s.set_read_timeout(Some(BOUND)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
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
                let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                return (status, head, body);
            }
        }
        let n = s.read(&mut chunk).expect("an answer in time");
        assert!(
            n > 0,
            "closed before answering: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn verify_serve_cuts_slow_clients_and_keeps_answering_honest_ones() {
    let help = Command::new(bin("cada-verify"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--max-connections",
        "--header-timeout-ms",
        "--idle-timeout-ms",
        "--body-timeout-ms",
    ] {
        assert!(
            help.contains(flag),
            "{flag} missing from serve --help:\n{help}"
        );
    }

    let dir = TempDir::new("slow");
    let (_v, port) = start_verifier(
        &dir.0,
        "v",
        &[
            // Only the listener is under test here; no proof is decided.
            "--allow-any-measurement",
            "--max-connections",
            "8",
            "--header-timeout-ms",
            "300",
            "--idle-timeout-ms",
            "1500",
            "--body-timeout-ms",
            "300",
        ],
    );
    // Twice the cap of half heads and silent connections: the excess waits its turn.
    let mut slow: Vec<TcpStream> = (0..16)
        .map(|i| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            if i % 2 == 0 {
                s.write_all(HALF_HEAD).unwrap();
            }
            s
        })
        .collect();
    for _ in 0..3 {
        let (status, _, body) = http_tcp(port, "GET", "/healthz", "text/plain", b"").unwrap();
        assert_eq!((status, body.as_str()), (200, "ok\n"));
    }
    for s in &mut slow {
        assert!(tcp_closed(s), "a slow connection is still open");
    }

    // A body trickled one byte per 100 ms misses the 300 ms body deadline: 408.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(
        b"POST /v1/pop/verify HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
    )
    .unwrap();
    let mut w = s.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for _ in 0..30 {
            if w.write_all(b" ").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let (status, head, body) = read_answer(&mut s);
    assert_eq!(status, 408, "{head}\n{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["type"], "urn:cada:problem:body-timeout");
    assert!(tcp_closed(&mut s));
    trickle.join().unwrap();

    // Keep-alive: reused while busy, closed once idle past 1.5 s.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        assert_eq!(read_answer(&mut s).0, 200);
    }
    assert!(tcp_closed(&mut s), "idle keep-alive connection left open");

    let (status, _, _) = http_tcp(port, "GET", "/healthz", "text/plain", b"").unwrap();
    assert_eq!(status, 200);
}

#[test]
fn parent_agent_socket_cuts_half_headers() {
    let dir = TempDir::new("slowparent");
    let _e = start_enclave(&dir.0, &[]);
    let _p = start_parent(
        &dir.0,
        &["--header-timeout-ms", "300", "--max-connections", "4"],
    );
    let sock = dir.0.join("agent.sock");
    let mut slow: Vec<UnixStream> = (0..8)
        .map(|_| {
            let mut s = UnixStream::connect(&sock).unwrap();
            s.write_all(HALF_HEAD).unwrap();
            s
        })
        .collect();
    let (status, body) = http(&sock, "GET", "/healthz", None, BOUND).unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    for s in &mut slow {
        assert!(
            closed_within(s, |s, d| s.set_read_timeout(Some(d)).unwrap()),
            "a half-header agent connection is still open"
        );
    }
}
