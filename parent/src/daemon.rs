//! A client of the daemon's own API over its unix socket, for the CLI subcommands (`sign`,
//! `owner lock`, `contract …`) and the client proxy.
use std::path::Path;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

use crate::api::PROBLEM_TYPE_PREFIX;

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Keep-alive connections to the daemon, reused across calls (the proxy makes one call per
/// request it forwards; a new connection each time costs a connect and a handshake).
#[derive(Debug, Default)]
pub struct Pool {
    idle: std::sync::Mutex<Vec<Sender>>,
}

impl Pool {
    /// Most idle connections kept.
    const MAX_IDLE: usize = 32;

    /// As [`call`], over a pooled connection.
    pub async fn call(
        &self,
        socket: &Path,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Bytes, String> {
        let reused = self.idle.lock().ok().and_then(|mut v| {
            while let Some(s) = v.pop() {
                if s.is_ready() {
                    return Some(s);
                }
            }
            None
        });
        let (sender, result) = match reused {
            Some(s) => match exchange(s, method, path, body.clone()).await {
                // The daemon closed the idle connection as it was reused: once more, fresh.
                (None, Err(_)) => exchange(connect(socket).await?, method, path, body).await,
                done => done,
            },
            None => exchange(connect(socket).await?, method, path, body).await,
        };
        if let Some(s) = sender {
            if let Ok(mut v) = self.idle.lock() {
                if v.len() < Self::MAX_IDLE {
                    v.push(s);
                }
            }
        }
        result
    }
}

async fn connect(socket: &Path) -> Result<Sender, String> {
    let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| {
        format!(
            "cannot reach the daemon at {}: {e} (is `cada-parent serve` running?)",
            socket.display()
        )
    })?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One request to the daemon over its unix socket; the body of a 2xx answer, or an error
/// naming the problem code and detail.
pub async fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<Bytes, String> {
    exchange(connect(socket).await?, method, path, body).await.1
}

/// One request on `sender`; the sender back when the connection can be reused.
async fn exchange(
    mut sender: Sender,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (Option<Sender>, Result<Bytes, String>) {
    let builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "cada-parent");
    let req = match body {
        Some(b) => builder
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(b.to_string()))),
        None => builder.body(Full::new(Bytes::new())),
    };
    let req = match req {
        Ok(r) => r,
        Err(e) => return (Some(sender), Err(e.to_string())),
    };
    let resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => return (None, Err(e.to_string())),
    };
    let status = resp.status();
    let bytes = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return (None, Err(e.to_string())),
    };
    if !status.is_success() {
        // A problem document: print its code and detail; anything else as it came.
        let problem = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                let code = v["type"]
                    .as_str()?
                    .strip_prefix(PROBLEM_TYPE_PREFIX)?
                    .to_owned();
                Some(format!("{code}: {}", v["detail"].as_str()?))
            });
        return (
            Some(sender),
            Err(format!(
                "daemon answered {status}: {}",
                problem.unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned())
            )),
        );
    }
    (Some(sender), Ok(bytes))
}
