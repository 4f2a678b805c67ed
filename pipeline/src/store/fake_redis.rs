//! A stand-in Redis on loopback for the store layer's tests: it reads RESP commands
//! (`*N`, then N times `$len` and `len` bytes) and answers each by its name, as the test
//! tells it to. One reader of the protocol for every test that needs a Redis that misbehaves
//! in a known way (hangs, has no replica, …), so that a fix to the reader reaches them all.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// What the stand-in answers to a command, by its name in upper case: `Some(bytes)` is
/// written back as they are (RESP), `None` is never answered (the connection stays open).
pub(crate) type Answers = dyn Fn(&[u8]) -> Option<&'static [u8]> + Send + Sync;

/// Starts a stand-in Redis that answers every command with `answer(name)`; its port.
pub(crate) async fn serve(answer: Arc<Answers>) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((sock, _)) = l.accept().await {
            let answer = Arc::clone(&answer);
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut r = BufReader::new(r);
                let mut head = String::new();
                while r.read_line(&mut head).await.is_ok_and(|n| n > 0) {
                    let n: usize = head.trim().trim_start_matches('*').parse().unwrap_or(0);
                    head.clear();
                    let mut name = Vec::new();
                    for i in 0..n {
                        let mut len = String::new();
                        let _ = r.read_line(&mut len).await;
                        let len: usize = len.trim().trim_start_matches('$').parse().unwrap_or(0);
                        let mut arg = vec![0u8; len + 2];
                        let _ = r.read_exact(&mut arg).await;
                        if i == 0 {
                            name = arg[..len].to_ascii_uppercase();
                        }
                    }
                    if let Some(bytes) = answer(&name) {
                        let _ = w.write_all(bytes).await;
                    }
                }
            });
        }
    });
    port
}

/// A Redis that answers `+OK` to every command but never answers `EVAL` or `WAIT` (a store
/// that hangs mid-operation).
pub(crate) async fn hanging() -> u16 {
    serve(Arc::new(|name: &[u8]| match name {
        b"EVAL" | b"WAIT" => None,
        _ => Some(b"+OK\r\n".as_slice()),
    }))
    .await
}

/// A master without its replica: answers `EVAL` with `eval` (RESP), `WAIT` with 0 replicas,
/// anything else `+OK`.
pub(crate) async fn without_replicas(eval: &'static [u8]) -> u16 {
    serve(Arc::new(move |name: &[u8]| match name {
        b"EVAL" => Some(eval),
        b"WAIT" => Some(b":0\r\n".as_slice()),
        _ => Some(b"+OK\r\n".as_slice()),
    }))
    .await
}
