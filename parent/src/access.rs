//! Who may use `cada-parent proxy`'s own listener. Whoever reaches it acts as the agent: the
//! proxy has the enclave sign for every request it forwards. So, before any body is read:
//!
//! * **Host** (loopback TCP only): the request's `Host` (and the authority of an
//!   absolute-form target) must name the address the proxy listens on — exactly its
//!   `IP:PORT`, or `localhost:PORT` when that IP is a loopback address. A web page that
//!   reaches the port through DNS rebinding sends its own name (`evil.example:8765`) and is
//!   refused `proxy.host`. Over a unix socket the `Host` is not checked: no browser connects
//!   to one, and clients put any name there.
//! * **Origin**: absent is fine (MCP clients that are not browsers send none); `null` is
//!   always refused; any other value must be the listener's own origin
//!   (`http://IP:PORT`, `http://localhost:PORT`) or one given with `--allow-origin`
//!   (a browser-based client such as an inspector), else `proxy.origin` (HTTP 403, as the
//!   MCP Streamable HTTP transport asks of local servers). A unix socket has no origin of its
//!   own: only `--allow-origin` ones pass.
//! * **Sec-Fetch-Site**: a browser names the site that asks, where the page cannot change
//!   it, and also for requests that carry no `Origin` (an `<img>`, a form, a `no-cors`
//!   `fetch`: each can spend the contract's budget or open an event stream). Absent (MCP
//!   clients that are not browsers), `same-origin` or `none` (typed by the user) pass; any
//!   other value (`cross-site`, `same-site`, one repeated or unknown) passes only with an
//!   `Origin` that passed above, else `proxy.fetch_site` (403).
//! * **Bearer token** (`--auth-token-file`, the same file rules as the daemon's TCP
//!   listener, [`crate::auth::BearerToken`]): every request needs
//!   `Authorization: Bearer <token>`, else `proxy.unauthorized` (401, `WWW-Authenticate:
//!   Bearer`). The header is removed before forwarding: the token never leaves the host.
//!
//! Host and Origin stop web pages; only the token (or a 0600 unix socket) stops other local
//! users. Refusals are JSON-RPC error bodies with `id: null` (no body was read), like the
//! proxy's other refusals, and are counted in `/_cada/metrics`
//! (`cada_parent_proxy_refused_total{code}`).
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::BearerToken;
use crate::proxy::ProxyState;

/// Where the proxy listens: `HOST:PORT` on loopback TCP, or `unix:PATH` (created 0600).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A loopback TCP address.
    Tcp(SocketAddr),
    /// A unix socket path.
    Unix(PathBuf),
}

impl std::str::FromStr for Listen {
    type Err = String;
    /// `unix:/path/to/sock` or `IP:PORT` (loopback only).
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("unix: needs a path, e.g. unix:/run/user/1000/cada/proxy.sock".into());
            }
            return Ok(Listen::Unix(PathBuf::from(p)));
        }
        let a: SocketAddr = s
            .parse()
            .map_err(|_| format!("{s:?}: expected IP:PORT (loopback) or unix:PATH"))?;
        if !a.ip().is_loopback() {
            return Err(format!(
                "{s}: loopback only; whoever reaches the port has the enclave sign for the \
                 upstreams (use unix:PATH, or forward a unix socket over SSH)"
            ));
        }
        Ok(Listen::Tcp(a))
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A refusal of the local client, before the request is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status (403 or 401).
    pub status: StatusCode,
    /// Stable code: `proxy.host`, `proxy.origin`, `proxy.fetch_site` or
    /// `proxy.unauthorized`.
    pub code: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// The rules of one listener (see the module documentation).
#[derive(Debug, Clone)]
pub struct Access {
    /// `host:port` a request may name (lower case, IPv6 in brackets); `None`: not checked.
    hosts: Option<Vec<String>>,
    /// Serialized origins (`http://host:port`) a browser request may come from.
    origins: Vec<String>,
    /// The bearer token every request must carry, if any.
    token: Option<Arc<BearerToken>>,
}

/// `scheme://host[:port]` of `s` as a browser serializes it (RFC 6454), or why not.
fn serialize_origin(s: &str) -> Result<String, String> {
    let u = url::Url::parse(s).map_err(|e| format!("{s:?}: {e}"))?;
    let o = u.origin();
    if !o.is_tuple() || !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "{s:?}: an http(s) origin, e.g. http://localhost:6274"
        ));
    }
    let ser = o.ascii_serialization();
    if ser != s.trim_end_matches('/') || !u.username().is_empty() {
        return Err(format!(
            "{s:?} is not an origin (scheme://host[:port] only); did you mean {ser}?"
        ));
    }
    Ok(ser)
}

/// `host:port` of a `Host` value or request-target authority, normalized (lower case, the
/// port explicit: 80 when absent, as the proxy speaks plain HTTP); `None` if malformed or
/// with userinfo. Exact, not lenient: the host is a name or IPv4 address (letters, digits,
/// `.`, `-`) or a bracketed IPv6 address, and the port is 1 to 5 digits without a sign, a
/// leading zero or surrounding white space (`127.0.0.1:+8765`, `:08765` and a trailing tab
/// are not this listener's name).
fn authority(s: &str) -> Option<String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if v6.is_empty()
            || !v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (&s[..v6.len() + 2], port)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if !host.starts_with('[')
        && (host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
    {
        return None;
    }
    let port = match port {
        None => 80,
        Some(p) => {
            if p.is_empty()
                || p.len() > 5
                || p.starts_with('0')
                || !p.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            p.parse::<u16>().ok()?
        }
    };
    Some(format!("{}:{port}", host.to_ascii_lowercase()))
}

/// A header value as text for a message (lossy, at most 256 characters).
fn shown(v: &HeaderValue) -> String {
    String::from_utf8_lossy(v.as_bytes())
        .chars()
        .take(256)
        .collect()
}

impl Access {
    /// The rules of a loopback TCP listener bound at `bound`: its own `Host`s and origin,
    /// plus `allow_origins`, and the token if one is given.
    pub fn tcp(
        bound: SocketAddr,
        allow_origins: &[String],
        token: Option<Arc<BearerToken>>,
    ) -> Result<Self, String> {
        let mut hosts = vec![bound.to_string()];
        if bound.ip().is_loopback() {
            hosts.push(format!("localhost:{}", bound.port()));
        }
        let mut origins = Vec::new();
        for h in &hosts {
            // As a browser serializes it: without the default port (`:80`).
            let own = url::Url::parse(&format!("http://{h}")).map_err(|e| format!("{h}: {e}"))?;
            origins.push(own.origin().ascii_serialization());
        }
        for o in allow_origins {
            origins.push(serialize_origin(o).map_err(|e| format!("--allow-origin {e}"))?);
        }
        Ok(Access {
            hosts: Some(hosts),
            origins,
            token,
        })
    }

    /// The rules of a unix-socket listener: any `Host`, only `allow_origins`, and the token
    /// if one is given.
    pub fn unix(allow_origins: &[String], token: Option<Arc<BearerToken>>) -> Result<Self, String> {
        let origins = allow_origins
            .iter()
            .map(|o| serialize_origin(o).map_err(|e| format!("--allow-origin {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Access {
            hosts: None,
            origins,
            token,
        })
    }

    /// Whether requests must carry the bearer token.
    pub fn needs_token(&self) -> bool {
        self.token.is_some()
    }

    /// The `Host` values this listener answers (empty for a unix socket).
    pub fn hosts(&self) -> &[String] {
        self.hosts.as_deref().unwrap_or_default()
    }

    /// Checks one request head: Host, then Origin and Sec-Fetch-Site, then the token.
    pub fn check(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), Refusal> {
        if let Some(hosts) = &self.hosts {
            let refuse = |what: String| Refusal {
                status: StatusCode::FORBIDDEN,
                code: "proxy.host",
                message: format!(
                    "{what}; this proxy answers only to {} (a web page reaching a local port \
                     through DNS rebinding names its own host): point the client at http://{}",
                    hosts.join(", "),
                    hosts.first().map_or("", String::as_str)
                ),
            };
            let mut values = headers.get_all(header::HOST).iter();
            let host = match (values.next(), values.next()) {
                (Some(v), None) => v,
                (None, _) => return Err(refuse("the request has no Host header".into())),
                (Some(_), Some(_)) => {
                    return Err(refuse("the request has two Host headers".into()))
                }
            };
            let ours = |a: Option<String>| a.is_some_and(|n| hosts.contains(&n));
            if !ours(host.to_str().ok().and_then(authority)) {
                return Err(refuse(format!(
                    "Host {:?} is not this proxy's address",
                    shown(host)
                )));
            }
            // An absolute-form target names a host too (RFC 9112 §3.2.2): it must be ours.
            if let Some(a) = uri.authority() {
                if !ours(authority(a.as_str())) {
                    return Err(refuse(format!(
                        "the request target names {:?}, not this proxy",
                        a.as_str()
                    )));
                }
            }
        }
        let mut values = headers.get_all(header::ORIGIN).iter();
        let with_origin = headers.contains_key(header::ORIGIN);
        match (values.next(), values.next()) {
            (None, _) => {}
            (Some(_), Some(_)) => {
                return Err(Refusal {
                    status: StatusCode::FORBIDDEN,
                    code: "proxy.origin",
                    message: "the request has two Origin headers".into(),
                })
            }
            (Some(v), None) => {
                let allowed = v
                    .to_str()
                    .is_ok_and(|o| self.origins.iter().any(|a| a.eq_ignore_ascii_case(o)));
                if !allowed {
                    let shown = shown(v);
                    let why = if shown == "null" {
                        "Origin null (a sandboxed page, a file: page or a redirect) is never \
                         allowed"
                            .to_owned()
                    } else {
                        format!(
                            "Origin {shown:?} may not use this proxy (a web page of another \
                             origin would act as the agent); for a browser-based MCP client you \
                             trust, start the proxy with --allow-origin {shown}"
                        )
                    };
                    return Err(Refusal {
                        status: StatusCode::FORBIDDEN,
                        code: "proxy.origin",
                        message: why,
                    });
                }
            }
        }
        // An Origin that passed is the browser's word for who asks; without one, the site
        // the browser names must be this one (or the user, typing the URL).
        if !with_origin {
            fetch_site(headers)?;
        }
        if let Some(token) = &self.token {
            let presented = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    let (scheme, credentials) = v.split_once(' ')?;
                    scheme
                        .eq_ignore_ascii_case("bearer")
                        .then(|| credentials.trim())
                });
            let message = match presented {
                Some(t) if token.matches(t) => return Ok(()),
                Some(_) => "the bearer token is not the one in the proxy's --auth-token-file",
                None => {
                    "this proxy needs Authorization: Bearer <the token in its --auth-token-file> \
                     (set it as a header in the MCP client's configuration)"
                }
            };
            return Err(Refusal {
                status: StatusCode::UNAUTHORIZED,
                code: "proxy.unauthorized",
                message: message.into(),
            });
        }
        Ok(())
    }
}

/// `Sec-Fetch-Site` of a request without `Origin`: absent, `same-origin` or `none`, else a
/// page of another site is asking (see the module documentation).
fn fetch_site(headers: &HeaderMap) -> Result<(), Refusal> {
    let mut values = headers.get_all("sec-fetch-site").iter();
    let site = match (values.next(), values.next()) {
        (None, _) => return Ok(()),
        (Some(v), None) if matches!(v.as_bytes(), b"same-origin" | b"none") => return Ok(()),
        (Some(v), None) => shown(v),
        (Some(_), Some(_)) => "two values".to_owned(),
    };
    Err(Refusal {
        status: StatusCode::FORBIDDEN,
        code: "proxy.fetch_site",
        message: format!(
            "Sec-Fetch-Site {site:?} without an allowed Origin: a page of another site (an \
             <img>, a form, a no-cors fetch) would act as the agent; MCP clients that are not \
             browsers send no Sec-Fetch-Site, and a browser-based client you trust must send \
             its Origin and be allowed with --allow-origin"
        ),
    })
}

/// The middleware: refuses what [`Access::check`] refuses, with a JSON-RPC error body, and
/// removes the proxy's own bearer token before the request goes on.
pub(crate) async fn guard(
    State((st, access)): State<(Arc<ProxyState>, Arc<Access>)>,
    mut req: Request,
    next: Next,
) -> Response {
    match access.check(req.uri(), req.headers()) {
        Ok(()) => {
            if access.needs_token() {
                req.headers_mut().remove(header::AUTHORIZATION);
            }
            next.run(req).await
        }
        Err(r) => {
            st.count_refusal(r.code);
            tracing::warn!(code = r.code, "{}", r.message);
            let mut resp = crate::proxy::local_error(r.status, r.code, &r.message, None);
            if r.status == StatusCode::UNAUTHORIZED {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="cada-parent proxy""#),
                );
            }
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use axum::http::HeaderName;
    use axum::response::IntoResponse;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";

    fn head(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn code(a: &Access, pairs: &[(&str, &str)]) -> Option<&'static str> {
        a.check(&Uri::from_static("/mcp"), &head(pairs))
            .err()
            .map(|r| r.code)
    }

    #[test]
    fn listen_takes_loopback_or_a_unix_path() {
        assert_eq!(
            "127.0.0.1:8765".parse::<Listen>().unwrap(),
            Listen::Tcp("127.0.0.1:8765".parse().unwrap())
        );
        assert_eq!(
            "unix:/run/user/1/cada/proxy.sock"
                .parse::<Listen>()
                .unwrap(),
            Listen::Unix("/run/user/1/cada/proxy.sock".into())
        );
        assert!("0.0.0.0:8765"
            .parse::<Listen>()
            .unwrap_err()
            .contains("loopback"));
        assert!("unix:".parse::<Listen>().is_err());
        assert!("localhost:8765".parse::<Listen>().is_err());
    }

    #[test]
    fn tcp_hosts_must_name_the_listener() {
        let a = Access::tcp("127.0.0.1:18765".parse().unwrap(), &[], None).unwrap();
        for ok in ["127.0.0.1:18765", "localhost:18765", "LOCALHOST:18765"] {
            assert_eq!(code(&a, &[("host", ok)]), None, "{ok}");
        }
        for bad in [
            "evil.example:18765",
            "127.0.0.1:18766",
            "127.0.0.1",
            "localhost",
            "localhost.:18765",
            "u@127.0.0.1:18765",
            "127.0.0.2:18765",
            "",
        ] {
            assert_eq!(code(&a, &[("host", bad)]), Some("proxy.host"), "{bad:?}");
        }
        assert_eq!(code(&a, &[]), Some("proxy.host"));
        assert_eq!(
            code(&a, &[("host", "127.0.0.1:18765"), ("host", "evil.example")]),
            Some("proxy.host")
        );
        // An absolute-form target naming another host.
        let r = a.check(
            &Uri::from_static("http://evil.example:18765/mcp"),
            &head(&[("host", "127.0.0.1:18765")]),
        );
        assert_eq!(r.unwrap_err().code, "proxy.host");
        // IPv6 loopback.
        let a = Access::tcp("[::1]:18765".parse().unwrap(), &[], None).unwrap();
        assert_eq!(code(&a, &[("host", "[::1]:18765")]), None);
        assert_eq!(code(&a, &[("host", "localhost:18765")]), None);
        assert_eq!(code(&a, &[("host", "127.0.0.1:18765")]), Some("proxy.host"));
    }

    #[test]
    fn host_ports_are_exact_digits() {
        let a = Access::tcp("127.0.0.1:18765".parse().unwrap(), &[], None).unwrap();
        for bad in [
            "127.0.0.1:+18765",
            "127.0.0.1:018765",
            "127.0.0.1:0018765",
            "127.0.0.1:18765\t",
            "127.0.0.1:18765 ",
            " 127.0.0.1:18765",
            "localhost:+18765",
            "127.0.0.1:18765:1",
            "127.0.0.1:",
            "127.0.0.1:118765",
            "127.0.0.1%2e:18765",
        ] {
            assert_eq!(code(&a, &[("host", bad)]), Some("proxy.host"), "{bad:?}");
        }
        let a = Access::tcp("[::1]:18765".parse().unwrap(), &[], None).unwrap();
        for bad in [
            "[::1]:+18765",
            "[::1]:018765",
            "[::1]18765",
            "[::1]:18765\t",
        ] {
            assert_eq!(code(&a, &[("host", bad)]), Some("proxy.host"), "{bad:?}");
        }
        assert_eq!(
            code(&a, &[("host", "[0:0:0:0:0:0:0:1]:18765")]),
            Some("proxy.host")
        );
        // Port 80 is implied when absent, as for any plain HTTP Host.
        let a = Access::tcp("127.0.0.1:80".parse().unwrap(), &[], None).unwrap();
        assert_eq!(code(&a, &[("host", "127.0.0.1")]), None);
        assert_eq!(code(&a, &[("host", "localhost")]), None);
        assert_eq!(code(&a, &[("host", "127.0.0.1:080")]), Some("proxy.host"));
        // Its own origin as a browser sends it, without the default port.
        assert_eq!(
            code(&a, &[("host", "127.0.0.1"), ("origin", "http://127.0.0.1")]),
            None
        );
    }

    #[test]
    fn cross_site_requests_without_an_allowed_origin_are_refused() {
        let allow = ["http://localhost:6274".to_owned()];
        let a = Access::tcp("127.0.0.1:18765".parse().unwrap(), &allow, None).unwrap();
        let host = ("host", "127.0.0.1:18765");
        // What a page's <img>, form or no-cors fetch sends: no Origin, the browser's word
        // that another site asks.
        for bad in [
            "cross-site",
            "same-site",
            "Cross-Site",
            "",
            "none, cross-site",
        ] {
            assert_eq!(
                code(&a, &[host, ("sec-fetch-site", bad)]),
                Some("proxy.fetch_site"),
                "{bad:?}"
            );
        }
        assert_eq!(
            code(
                &a,
                &[
                    host,
                    ("sec-fetch-site", "none"),
                    ("sec-fetch-site", "cross-site")
                ]
            ),
            Some("proxy.fetch_site")
        );
        // MCP clients (no Sec-Fetch-Site), the user typing the URL, the proxy's own pages.
        assert_eq!(code(&a, &[host]), None);
        for ok in ["same-origin", "none"] {
            assert_eq!(code(&a, &[host, ("sec-fetch-site", ok)]), None, "{ok}");
        }
        // An allowed Origin says who asks: a trusted browser-based client on another port
        // (same-site or cross-site to the browser) passes; a foreign one is refused for its
        // Origin.
        for site in ["same-site", "cross-site"] {
            assert_eq!(
                code(
                    &a,
                    &[
                        host,
                        ("origin", "http://localhost:6274"),
                        ("sec-fetch-site", site)
                    ]
                ),
                None,
                "{site}"
            );
            assert_eq!(
                code(
                    &a,
                    &[
                        host,
                        ("origin", "http://evil.example"),
                        ("sec-fetch-site", site)
                    ]
                ),
                Some("proxy.origin"),
                "{site}"
            );
        }
        // Over a unix socket too.
        let u = Access::unix(&[], None).unwrap();
        assert_eq!(
            code(&u, &[("host", "cada"), ("sec-fetch-site", "cross-site")]),
            Some("proxy.fetch_site")
        );
        // Host is still checked first, and the token after.
        let t = Arc::new(BearerToken::new(TOKEN).unwrap());
        let a = Access::tcp("127.0.0.1:18765".parse().unwrap(), &[], Some(t)).unwrap();
        assert_eq!(
            code(
                &a,
                &[
                    ("host", "evil.example:18765"),
                    ("sec-fetch-site", "cross-site")
                ]
            ),
            Some("proxy.host")
        );
        assert_eq!(
            code(&a, &[host, ("sec-fetch-site", "cross-site")]),
            Some("proxy.fetch_site")
        );
    }

    #[test]
    fn foreign_and_null_origins_are_refused() {
        let allow = ["http://localhost:6274".to_owned()];
        let a = Access::tcp("127.0.0.1:18765".parse().unwrap(), &allow, None).unwrap();
        let host = ("host", "127.0.0.1:18765");
        for ok in [
            "http://127.0.0.1:18765",
            "http://localhost:18765",
            "http://localhost:6274",
        ] {
            assert_eq!(code(&a, &[host, ("origin", ok)]), None, "{ok}");
        }
        for bad in [
            "http://evil.example:18765",
            "null",
            "https://127.0.0.1:18765",
            "http://127.0.0.1:18766",
            "http://localhost:6274.evil.example",
            "",
        ] {
            assert_eq!(
                code(&a, &[host, ("origin", bad)]),
                Some("proxy.origin"),
                "{bad:?}"
            );
        }
        assert_eq!(
            code(
                &a,
                &[
                    host,
                    ("origin", "http://127.0.0.1:18765"),
                    ("origin", "http://evil.example")
                ]
            ),
            Some("proxy.origin")
        );
        // The issue's request: both foreign.
        assert_eq!(
            code(
                &a,
                &[
                    ("host", "evil.example:18765"),
                    ("origin", "http://evil.example:18765")
                ]
            ),
            Some("proxy.host")
        );
        // --allow-origin takes origins only.
        for bad in ["null", "http://x.example/path", "file:///tmp/x", "x"] {
            assert!(
                Access::tcp("127.0.0.1:1".parse().unwrap(), &[bad.into()], None).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_unix_socket_takes_any_host_but_no_foreign_origin() {
        let a = Access::unix(&[], None).unwrap();
        assert_eq!(code(&a, &[("host", "cada")]), None);
        assert_eq!(code(&a, &[]), None);
        assert_eq!(
            code(&a, &[("host", "cada"), ("origin", "http://localhost:8765")]),
            Some("proxy.origin")
        );
    }

    #[test]
    fn the_token_is_required_when_configured() {
        let t = Arc::new(BearerToken::new(TOKEN).unwrap());
        let a = Access::tcp("127.0.0.1:18765".parse().unwrap(), &[], Some(t)).unwrap();
        let host = ("host", "127.0.0.1:18765");
        assert_eq!(code(&a, &[host]), Some("proxy.unauthorized"));
        assert_eq!(
            code(&a, &[host, ("authorization", "Bearer wrong")]),
            Some("proxy.unauthorized")
        );
        assert_eq!(
            code(&a, &[host, ("authorization", &format!("Basic {TOKEN}"))]),
            Some("proxy.unauthorized")
        );
        assert_eq!(
            code(&a, &[host, ("authorization", &format!("Bearer {TOKEN}"))]),
            None
        );
        // Host is checked first: a rebinding page learns nothing about the token.
        assert_eq!(
            code(&a, &[("host", "evil.example:18765")]),
            Some("proxy.host")
        );
    }

    // ---- The router in process: a stub daemon and a recording upstream. ----

    /// A daemon that signs anything (a dummy proof) and records what it was asked.
    async fn stub_daemon(dir: &std::path::Path) -> (PathBuf, Arc<Mutex<Vec<serde_json::Value>>>) {
        let asks = Arc::new(Mutex::new(Vec::new()));
        let seen = asks.clone();
        let app = axum::Router::new().route(
            "/v1/pop",
            axum::routing::post(move |axum::Json(v): axum::Json<serde_json::Value>| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(v);
                    axum::Json(serde_json::json!({"dpop": "h.c.s"}))
                }
            }),
        );
        let path = dir.join("daemon.sock");
        let l = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        (path, asks)
    }

    /// An upstream that records every request head and answers a JSON-RPC result.
    async fn recording_upstream() -> (SocketAddr, Arc<Mutex<Vec<HeaderMap>>>) {
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let seen = seen.clone();
            async move {
                if req.uri().path().starts_with("/.well-known/") {
                    return StatusCode::NOT_FOUND.into_response();
                }
                seen.lock().unwrap().push(req.headers().clone());
                axum::Json(serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {}}))
                    .into_response()
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        (addr, heads)
    }

    fn proxy_state(daemon: PathBuf, upstream: SocketAddr) -> Arc<ProxyState> {
        ProxyState::new(
            daemon,
            vec![crate::proxy::Route::parse(&format!("http://{upstream}/mcp")).unwrap()],
            cada_net::upstream::Upstream::new(&cada_net::fetch::Fetcher::mozilla().unwrap()),
            std::time::Duration::from_secs(5),
            false,
        )
    }

    /// One raw HTTP/1.1 request; (status, head, body).
    async fn raw<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        s: S,
        head_lines: &[&str],
        body: &str,
    ) -> (u16, String, String) {
        raw_to(s, "POST /mcp", head_lines, body).await
    }

    async fn raw_to<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        mut s: S,
        request_line: &str,
        head_lines: &[&str],
        body: &str,
    ) -> (u16, String, String) {
        let mut req = format!("{request_line} HTTP/1.1\r\nConnection: close\r\n");
        for l in head_lines {
            req.push_str(l);
            req.push_str("\r\n");
        }
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let out = String::from_utf8_lossy(&out).into_owned();
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let (h, b) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        (status, h.to_ascii_lowercase(), b.to_owned())
    }

    const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#;

    fn rpc_code(body: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert!(v["id"].is_null(), "{body}");
        v["error"]["data"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cada-proxy-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn dns_rebinding_and_foreign_origins_never_reach_the_daemon_or_the_upstream() {
        let dir = temp_dir("rebind");
        let (daemon, asks) = stub_daemon(&dir).await;
        let (up, heads) = recording_upstream().await;
        let st = proxy_state(daemon, up);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bound = l.local_addr().unwrap();
        let app = crate::proxy::router(st.clone(), Access::tcp(bound, &[], None).unwrap());
        let stats = st.conn_stats();
        tokio::spawn(async move {
            cada_net::serve_tcp(
                l,
                app,
                &cada_net::ServeLimits::local(),
                stats,
                std::future::pending(),
            )
            .await
        });
        let port = bound.port();
        let connect = || tokio::net::TcpStream::connect(bound);
        // The issue's request: a page on evil.example after DNS rebinding.
        let evil_host = format!("Host: evil.example:{port}");
        let evil_origin = format!("Origin: http://evil.example:{port}");
        let (s, _, b) = raw(connect().await.unwrap(), &[&evil_host, &evil_origin], CALL).await;
        assert_eq!((s, rpc_code(&b).as_str()), (403, "proxy.host"), "{b}");
        // Our Host, a foreign Origin (a cross-site page, or rebinding with a spoofed Host).
        let host = format!("Host: 127.0.0.1:{port}");
        let (s, _, b) = raw(connect().await.unwrap(), &[&host, &evil_origin], CALL).await;
        assert_eq!((s, rpc_code(&b).as_str()), (403, "proxy.origin"), "{b}");
        let (s, _, b) = raw(connect().await.unwrap(), &[&host, "Origin: null"], CALL).await;
        assert_eq!((s, rpc_code(&b).as_str()), (403, "proxy.origin"), "{b}");
        // A page of another site with no Origin: a form POST, an <img> GET (an event stream).
        let cross = "Sec-Fetch-Site: cross-site";
        let (s, _, b) = raw(connect().await.unwrap(), &[&host, cross], CALL).await;
        assert_eq!((s, rpc_code(&b).as_str()), (403, "proxy.fetch_site"), "{b}");
        let (s, _, b) = raw_to(
            connect().await.unwrap(),
            "GET /mcp",
            &[
                &host,
                "Sec-Fetch-Site: same-site",
                "Accept: text/event-stream",
            ],
            "",
        )
        .await;
        assert_eq!((s, rpc_code(&b).as_str()), (403, "proxy.fetch_site"), "{b}");
        assert!(asks.lock().unwrap().is_empty(), "the daemon signed nothing");
        assert!(heads.lock().unwrap().is_empty(), "the upstream saw nothing");
        // An MCP client (no Origin) and a page of the proxy's own origin are served.
        let own = format!("Origin: http://localhost:{port}");
        let localhost = format!("Host: localhost:{port}");
        for lines in [vec![host.as_str()], vec![localhost.as_str(), own.as_str()]] {
            let (s, _, b) = raw(connect().await.unwrap(), &lines, CALL).await;
            assert_eq!(s, 200, "{b}");
        }
        assert_eq!(asks.lock().unwrap().len(), 2);
        // The upstream gets its own name as Host, not the proxy's.
        for h in heads.lock().unwrap().iter() {
            assert_eq!(h[header::HOST], up.to_string().as_str());
            assert_eq!(h["dpop"], "h.c.s");
        }
        // Counted by code.
        let (s, _, text) =
            raw_to(connect().await.unwrap(), "GET /_cada/metrics", &[&host], "").await;
        assert_eq!(s, 200, "{text}");
        assert!(
            text.contains(r#"cada_parent_proxy_refused_total{code="proxy.host"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"cada_parent_proxy_refused_total{code="proxy.origin"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"cada_parent_proxy_refused_total{code="proxy.fetch_site"} 2"#),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn the_bearer_token_and_the_unix_socket_keep_other_local_users_out() {
        let dir = temp_dir("token");
        let (daemon, asks) = stub_daemon(&dir).await;
        let (up, heads) = recording_upstream().await;
        // TCP with a token.
        let st = proxy_state(daemon.clone(), up);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bound = l.local_addr().unwrap();
        let token = Arc::new(BearerToken::new(TOKEN).unwrap());
        let app = crate::proxy::router(st.clone(), Access::tcp(bound, &[], Some(token)).unwrap());
        let stats = st.conn_stats();
        tokio::spawn(async move {
            cada_net::serve_tcp(
                l,
                app,
                &cada_net::ServeLimits::local(),
                stats,
                std::future::pending(),
            )
            .await
        });
        let host = format!("Host: {bound}");
        let connect = || tokio::net::TcpStream::connect(bound);
        let (s, h, b) = raw(connect().await.unwrap(), &[&host], CALL).await;
        assert_eq!(
            (s, rpc_code(&b).as_str()),
            (401, "proxy.unauthorized"),
            "{b}"
        );
        assert!(h.contains("www-authenticate: bearer"), "{h}");
        let wrong = "Authorization: Bearer 1123456789abcdef0123456789abcdef0123456789abcdef";
        let (s, _, b) = raw(connect().await.unwrap(), &[&host, wrong], CALL).await;
        assert_eq!(
            (s, rpc_code(&b).as_str()),
            (401, "proxy.unauthorized"),
            "{b}"
        );
        assert!(asks.lock().unwrap().is_empty() && heads.lock().unwrap().is_empty());
        let right = format!("Authorization: Bearer {TOKEN}");
        let (s, _, b) = raw(connect().await.unwrap(), &[&host, &right], CALL).await;
        assert_eq!(s, 200, "{b}");
        // The proxy's token is not forwarded.
        let seen = heads.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].get(header::AUTHORIZATION).is_none(), "{seen:?}");

        // A unix socket: any Host, no token needed, only its user can connect (0600 is
        // main.rs's bind; here the rules of the listener).
        let st = proxy_state(daemon, up);
        let path = dir.join("proxy.sock");
        let l = tokio::net::UnixListener::bind(&path).unwrap();
        let app = crate::proxy::router(st.clone(), Access::unix(&[], None).unwrap());
        let stats = st.conn_stats();
        tokio::spawn(async move {
            cada_net::serve_unix(
                l,
                app,
                &cada_net::ServeLimits::local(),
                stats,
                std::future::pending(),
            )
            .await
        });
        let unix = || tokio::net::UnixStream::connect(&path);
        let (s, _, b) = raw(unix().await.unwrap(), &["Host: cada"], CALL).await;
        assert_eq!(s, 200, "{b}");
        let (s, _, b) = raw(
            unix().await.unwrap(),
            &["Host: cada", "Origin: http://127.0.0.1:8765"],
            CALL,
        )
        .await;
        assert_eq!((s, rpc_code(&b).as_str()), (403, "proxy.origin"), "{b}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
