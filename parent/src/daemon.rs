//! A client of the daemon's own API over its unix socket, for the CLI subcommands (`sign`,
//! `owner lock`, `contract …`) and the client proxy.
use std::path::Path;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

use crate::api::PROBLEM_TYPE_PREFIX;

/// One request to the daemon over its unix socket; the body of a 2xx answer, or an error
/// naming the problem code and detail.
pub async fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<Bytes, String> {
    let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| {
        format!(
            "cannot reach the daemon at {}: {e} (is `cada-parent serve` running?)",
            socket.display()
        )
    })?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "cada-parent");
    let req = match body {
        Some(b) => builder
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(b.to_string()))),
        None => builder.body(Full::new(Bytes::new())),
    }
    .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
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
        return Err(format!(
            "daemon answered {status}: {}",
            problem.unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned())
        ));
    }
    Ok(bytes)
}
