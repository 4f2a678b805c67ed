//! The owner's notification (`--webhook URL`): one `POST` of
//! `{"id", "url", "agent", "tool"}` (JSON) per new request — the request's id, its page,
//! the enclave key's DID and the tool's name; never the arguments, which may be private and
//! travel to whatever the webhook forwards to. https to any host, plain http only to a
//! loopback host; [`TIMEOUT`] for the answer's head; a failure is logged and counted, never
//! fatal (the page still shows the request).
//!
//! The tool's name is the agent's text: the notice carries it in the page's escaped form
//! ([`notice_tool`]), printable ASCII only, so a bidi override or an invisible character
//! reaches a chat message or a phone notification as a visible `\u{202e}`, never as a
//! disguise (review stepup-1, finding 6).
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request};
use cada_net::upstream::Upstream;
use serde::Serialize;

use super::error::StepUpError;

/// How long the webhook gets to answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// What the webhook receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notice {
    /// The request's id.
    pub id: String,
    /// The owner's page for it.
    pub url: String,
    /// The enclave key's DID.
    pub agent: String,
    /// The tool asked for, escaped ([`notice_tool`]).
    pub tool: String,
}

/// The tool's name as the notice carries it: the page's escaped form
/// ([`crate::web::render::escaped_form`]) — printable ASCII as it is with `\` doubled,
/// every other character (bidi controls, zero-width and tag characters, look-alikes) as a
/// visible `\u{…}`. A tool name is at most 256 bytes, so it is never clipped.
#[must_use]
pub fn notice_tool(tool: &str) -> String {
    crate::web::render::escaped_form(tool, cada_protocol::stepup::MAX_TOOL_LEN)
}

/// A webhook target.
#[derive(Clone)]
pub struct Webhook {
    url: String,
    client: Upstream,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").field("url", &self.url).finish()
    }
}

impl Webhook {
    /// A webhook at `url` (https, or http to `localhost`/loopback), its TLS trusting what
    /// `fetcher` trusts.
    pub fn new(url: &str, fetcher: &cada_net::fetch::Fetcher) -> Result<Self, StepUpError> {
        cada_net::fetch::target(url).map_err(|e| StepUpError::Config(format!("--webhook: {e}")))?;
        url.parse::<axum::http::Uri>()
            .map_err(|e| StepUpError::Config(format!("--webhook {url:?}: {e}")))?;
        Ok(Webhook {
            url: url.to_owned(),
            client: Upstream::new(fetcher),
        })
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends `notice`; `Err` names what failed (for the log).
    pub async fn send(&self, notice: &Notice) -> Result<u16, String> {
        let body = serde_json::to_vec(notice).map_err(|e| e.to_string())?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(&self.url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, "cada-owner-serve")
            .body(Body::from(body))
            .map_err(|e| e.to_string())?;
        let resp = self
            .client
            .send(req, TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        // The answer's body is not read: dropping it closes the stream.
        if resp.status().is_success() {
            Ok(status)
        } else {
            Err(format!("the webhook answered {status}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http() {
        let f = cada_net::fetch::Fetcher::mozilla().unwrap();
        for ok in [
            "https://hooks.example/cada",
            "http://127.0.0.1:9000/hook",
            "http://localhost:9000/hook",
            "http://[::1]:9000/hook",
        ] {
            assert!(Webhook::new(ok, &f).is_ok(), "{ok}");
        }
        for bad in [
            "http://hooks.example/cada",
            "ftp://hooks.example/x",
            "https://user:pw@hooks.example/x",
            "not a url",
        ] {
            assert_eq!(
                Webhook::new(bad, &f).unwrap_err().code(),
                "stepup.config",
                "{bad}"
            );
        }
    }

    #[test]
    fn the_tool_is_sent_escaped_in_printable_ascii() {
        assert_eq!(notice_tool("transfer"), "transfer");
        assert_eq!(
            notice_tool("read_file\u{202E}txt.exe\u{200B}"),
            "read_file\\u{202e}txt.exe\\u{200b}"
        );
        // A look-alike, and a literal backslash-u typed by the agent (doubled: not an escape).
        assert_eq!(notice_tool("tr\u{430}nsfer"), "tr\\u{430}nsfer");
        assert_eq!(notice_tool("a\\u{202e}"), "a\\\\u{202e}");
        let long = "\u{200B}".repeat(85);
        let shown = notice_tool(&long);
        assert!(shown.is_ascii() && !shown.contains('…'), "{shown}");
        assert!(shown.chars().all(|c| (' '..='~').contains(&c)));
    }

    #[tokio::test]
    async fn posts_the_notice_without_arguments_and_survives_failures() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            loop {
                let n = s.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some((_, body)) = text.split_once("\r\n\r\n") {
                    if body.ends_with('}') {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&got).to_string()
        });
        let f = cada_net::fetch::Fetcher::mozilla().unwrap();
        let w = Webhook::new(&format!("http://127.0.0.1:{port}/hook"), &f).unwrap();
        let n = Notice {
            id: "abc".into(),
            url: "http://localhost:8470/r/abc".into(),
            agent: "did:key:z6Mk".into(),
            tool: "transfer".into(),
        };
        assert_eq!(w.send(&n).await.unwrap(), 204);
        let req = server.await.unwrap();
        assert!(req.starts_with("POST /hook HTTP/1.1"), "{req}");
        let body = req.split_once("\r\n\r\n").unwrap().1;
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": "abc", "url": "http://localhost:8470/r/abc",
                               "agent": "did:key:z6Mk", "tool": "transfer"})
        );
        // Nobody listening: an error to log, not a panic.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let w = Webhook::new(&format!("http://127.0.0.1:{port}/hook"), &f).unwrap();
        assert!(w.send(&n).await.is_err());
    }
}
