//! A client of the daemon's own API over its unix socket, for the CLI subcommands (`sign`,
//! `owner lock`, `contract …`) and the client proxy.
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

use crate::api::PROBLEM_TYPE_PREFIX;

/// The environment variable that names the daemon's socket when `--socket` is not given.
pub const SOCKET_ENV: &str = "CADA_SOCKET";
/// The daemon's socket for root when neither `--socket` nor [`SOCKET_ENV`] is given.
pub const ROOT_SOCKET: &str = "/run/cada/agent.sock";

/// Where the daemon's socket is when neither `--socket` nor `$CADA_SOCKET` names it, the
/// same for every subcommand: `/run/cada/agent.sock` for root, else
/// `$XDG_RUNTIME_DIR/cada/agent.sock` (the user's private runtime directory, as rootless
/// container engines use). Never a path relative to the working directory, which would
/// differ between the daemon and its clients.
pub fn default_socket() -> Result<PathBuf, String> {
    default_socket_for(
        nix::unistd::geteuid().is_root(),
        std::env::var_os("XDG_RUNTIME_DIR").as_deref(),
    )
}

fn default_socket_for(root: bool, runtime_dir: Option<&OsStr>) -> Result<PathBuf, String> {
    if root {
        return Ok(PathBuf::from(ROOT_SOCKET));
    }
    match runtime_dir.map(Path::new) {
        Some(d) if d.is_absolute() => Ok(d.join("cada").join("agent.sock")),
        _ => Err(format!(
            "where is the daemon's socket? No --socket, no ${SOCKET_ENV}, and no \
             $XDG_RUNTIME_DIR (the default for users other than root is \
             $XDG_RUNTIME_DIR/cada/agent.sock; root's is {ROOT_SOCKET}): pass --socket PATH \
             or set {SOCKET_ENV}"
        )),
    }
}

/// The socket `given` by `--socket`/`$CADA_SOCKET`, else [`default_socket`].
pub fn socket_or_default(given: Option<PathBuf>) -> Result<PathBuf, String> {
    match given {
        Some(p) if !p.as_os_str().is_empty() => Ok(p),
        _ => default_socket(),
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Keep-alive connections to the daemon, reused across calls (the proxy makes one call per
/// request it forwards; a new connection each time costs a connect and a handshake), or the
/// daemon's own router in this process ([`Pool::in_process`], `cada-parent proxy
/// --enclave`): the same handlers, with no socket, no HTTP and no other process between.
#[derive(Default)]
pub struct Pool {
    idle: std::sync::Mutex<Vec<Sender>>,
    local: std::sync::OnceLock<axum::Router>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("in_process", &self.local.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Most idle connections kept.
    const MAX_IDLE: usize = 32;

    /// From now on, calls go to `daemon` (the router of [`crate::api::router`] over this
    /// process's own connection to the enclave) instead of a socket. Set once; `false` if it
    /// was already set.
    pub fn in_process(&self, daemon: axum::Router) -> bool {
        self.local.set(daemon).is_ok()
    }

    /// As [`call`], over a pooled connection (or in process, see [`Pool::in_process`]).
    pub async fn call(
        &self,
        socket: &Path,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Bytes, String> {
        if let Some(router) = self.local.get() {
            return in_process(router, method, path, body).await;
        }
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
    let req = match request(method, path, body) {
        Ok(r) => r.map(Full::new),
        Err(e) => return (Some(sender), Err(e)),
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
    (Some(sender), answer(status, bytes))
}

/// One request to the daemon's router in this process: what [`exchange`] sends and reads,
/// without the socket.
async fn in_process(
    router: &axum::Router,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<Bytes, String> {
    use tower::ServiceExt;
    let req = request(method, path, body)?.map(axum::body::Body::from);
    let resp = match router.clone().oneshot(req).await {
        Ok(r) => r,
        Err(e) => match e {},
    };
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    answer(status, bytes)
}

/// A request to the daemon's API, the same over the socket and in process: `body` as JSON.
fn request(
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<hyper::Request<Bytes>, String> {
    let builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "cada-parent");
    match body {
        Some(b) => builder
            .header("content-type", "application/json")
            .body(Bytes::from(b.to_string())),
        None => builder.body(Bytes::new()),
    }
    .map_err(|e| e.to_string())
}

/// The body of a 2xx answer, else an error naming the problem's code and detail.
fn answer(status: hyper::StatusCode, bytes: Bytes) -> Result<Bytes, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// In process, a call reaches the router (never the socket, which does not exist) with
    /// the method, path and JSON body it names, and a problem answer becomes the same error
    /// as over the socket: its code and detail.
    #[tokio::test]
    async fn in_process_calls_reach_the_router_and_read_problems_as_over_the_socket() {
        use axum::routing::post;
        let router = axum::Router::new()
            .route(
                "/v1/echo",
                post(|body: String| async move { format!("got {body}") }),
            )
            .route(
                "/v1/refuse",
                post(|| async {
                    (
                        hyper::StatusCode::FORBIDDEN,
                        format!(
                            r#"{{"type":"{PROBLEM_TYPE_PREFIX}contract.not_permitted.tool","detail":"not granted"}}"#
                        ),
                    )
                }),
            );
        let pool = Pool::default();
        let nowhere = Path::new("/nonexistent/agent.sock");
        assert!(pool.call(nowhere, "POST", "/v1/echo", None).await.is_err());
        assert!(pool.in_process(router.clone()));
        assert!(!pool.in_process(router), "set once");
        let got = pool
            .call(
                nowhere,
                "POST",
                "/v1/echo",
                Some(serde_json::json!({"a": 1})),
            )
            .await
            .unwrap();
        assert_eq!(&got[..], br#"got {"a":1}"#);
        let e = pool
            .call(nowhere, "POST", "/v1/refuse", None)
            .await
            .unwrap_err();
        assert_eq!(
            e,
            "daemon answered 403 Forbidden: contract.not_permitted.tool: not granted"
        );
        let e = pool
            .call(nowhere, "GET", "/v1/echo", None)
            .await
            .unwrap_err();
        assert!(e.starts_with("daemon answered 405"), "{e}");
    }

    #[test]
    fn the_default_socket_is_absolute_for_root_and_for_users() {
        assert_eq!(
            default_socket_for(true, Some(OsStr::new("/run/user/0"))).unwrap(),
            PathBuf::from("/run/cada/agent.sock")
        );
        assert_eq!(
            default_socket_for(false, Some(OsStr::new("/run/user/1000"))).unwrap(),
            PathBuf::from("/run/user/1000/cada/agent.sock")
        );
        for missing in [None, Some(OsStr::new("")), Some(OsStr::new("run/user"))] {
            let e = default_socket_for(false, missing).unwrap_err();
            assert!(e.contains("--socket") && e.contains("CADA_SOCKET"), "{e}");
        }
        assert_eq!(
            socket_or_default(Some(PathBuf::from("/tmp/x.sock"))).unwrap(),
            PathBuf::from("/tmp/x.sock")
        );
    }
}
