//! The URL a client called: what its proof's `htu` names. The gate knows it from
//! `--public-url`; behind a reverse proxy listed in `--trusted-proxy`, from that proxy's
//! `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Forwarded-Prefix`. The same headers from
//! anyone else are ignored, so a client cannot choose the URL its proof is checked against.
//! Nor can it through a trusted proxy that appends to the client's header instead of
//! replacing it: values that disagree (several lines, or comma-separated values that
//! differ) are refused (`request.forwarded`), never resolved by taking one of them.
//! The host is normalized (a proxy may spell it in upper case or name the default port);
//! the prefix, a path the proxy removed, must already be in normal form
//! ([`cada_protocol::url`]), as a request target must.
use std::net::IpAddr;

use axum::http::HeaderMap;
use cada_protocol::url::HttpUrl;

use crate::GateError;

/// Where the gate is reached from outside.
#[derive(Debug, Clone)]
pub struct PublicBase {
    /// `scheme://host[:port][/prefix]`, without a trailing slash.
    base: String,
    trusted: Vec<IpAddr>,
}

/// Why the URL of a request cannot be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadForwarded(pub String);

/// The one value a trusted proxy reports in header `name`, if it sends one. Every line and
/// every comma-separated value must be the same ([`crate::forward_auth::agreed`]): a proxy
/// that appends to what the client sent, rather than replacing it, would otherwise let the
/// client choose the URL its proof is checked against (the first value, or the last,
/// depending on who reads it).
fn forwarded(headers: &HeaderMap, name: &str) -> Result<Option<String>, BadForwarded> {
    let mut values = Vec::new();
    for (line, v) in headers.get_all(name).iter().enumerate() {
        let text = v.to_str().map_err(|_| {
            BadForwarded(format!(
                "{name} is not visible ASCII: a trusted proxy reports a host, a scheme or a path"
            ))
        })?;
        for (i, part) in text.split(',').enumerate() {
            values.push((
                format!("{name} (line {}, value {})", line + 1, i + 1),
                part.trim(),
            ));
        }
    }
    let sources: Vec<(&str, Option<&str>)> = values
        .iter()
        .map(|(source, v)| (source.as_str(), Some(*v)))
        .collect();
    crate::forward_auth::agreed(&sources)
        .map(|v| v.map(str::to_owned))
        .map_err(|r| {
            BadForwarded(format!(
                "{}; a trusted proxy must replace the client's {name}, not append to it",
                r.message
            ))
        })
}

impl PublicBase {
    /// `public_url` (an absolute http(s) URL in normal form, without query or fragment) and
    /// the proxies whose `X-Forwarded-*` headers are believed.
    pub fn new(public_url: &str, trusted: Vec<IpAddr>) -> Result<Self, GateError> {
        let base = crate::target::base_url("--public-url", public_url)?;
        Ok(PublicBase { base, trusted })
    }

    /// The configured base.
    pub fn configured(&self) -> &str {
        &self.base
    }

    /// Whether `peer` is a trusted proxy.
    pub fn is_trusted(&self, peer: IpAddr) -> bool {
        self.trusted.contains(&peer)
    }

    /// The base for a request from `peer` with `headers`.
    pub fn for_request(&self, peer: IpAddr, headers: &HeaderMap) -> Result<String, BadForwarded> {
        if !self.is_trusted(peer) {
            return Ok(self.base.clone());
        }
        let get = |n: &str| forwarded(headers, n);
        let (Some(proto), Some(host)) = (get("x-forwarded-proto")?, get("x-forwarded-host")?)
        else {
            return Ok(self.base.clone());
        };
        if !matches!(proto.as_str(), "http" | "https") {
            return Err(BadForwarded(format!(
                "X-Forwarded-Proto {proto:?} is neither http nor https"
            )));
        }
        if host.is_empty()
            || host.len() > 255
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        {
            return Err(BadForwarded(format!(
                "X-Forwarded-Host {:?} is not a host[:port]",
                host.chars().take(64).collect::<String>()
            )));
        }
        let origin = HttpUrl::parse_normalized(&format!("{proto}://{host}/"))
            .map_err(|e| {
                BadForwarded(format!(
                    "X-Forwarded-Host {:?} is not a host[:port]: {e}",
                    host.chars().take(64).collect::<String>()
                ))
            })?
            .origin()
            .to_owned();
        let prefix = get("x-forwarded-prefix")?.unwrap_or_default();
        if !prefix.is_empty() {
            let bad = |why: String| {
                BadForwarded(format!(
                    "X-Forwarded-Prefix {:?} is not a path in normal form: {why}",
                    prefix.chars().take(64).collect::<String>()
                ))
            };
            if !prefix.starts_with('/') || prefix.len() > 512 || prefix.contains(['?', '#']) {
                return Err(bad("a path starts with / and holds no ? or #".into()));
            }
            HttpUrl::parse_canonical(&format!("{origin}{prefix}"))
                .map_err(|e| bad(e.to_string()))?;
        }
        Ok(format!("{origin}{}", prefix.trim_end_matches('/')))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let p = PublicBase::new("https://mcp.example.com/", vec![proxy]).unwrap();
        let fwd = headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "public.example"),
            ("x-forwarded-prefix", "/tools/"),
        ]);
        assert_eq!(
            p.for_request(proxy, &fwd).unwrap(),
            "https://public.example/tools"
        );
        // A client sending the same headers gets the configured URL.
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(
            p.for_request(client, &fwd).unwrap(),
            "https://mcp.example.com"
        );
        assert_eq!(
            p.for_request(proxy, &HeaderMap::new()).unwrap(),
            "https://mcp.example.com"
        );
        // The origin is normalized: a host in upper case, the default port.
        let fwd = headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "Public.Example:443"),
        ]);
        assert_eq!(
            p.for_request(proxy, &fwd).unwrap(),
            "https://public.example"
        );
        for bad in [
            headers(&[("x-forwarded-proto", "gopher"), ("x-forwarded-host", "a")]),
            headers(&[
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "a/b@c"),
            ]),
            headers(&[
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "a"),
                ("x-forwarded-prefix", "/../x"),
            ]),
            headers(&[
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "a"),
                ("x-forwarded-prefix", "/tools/%2e%2e"),
            ]),
            headers(&[
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "a"),
                ("x-forwarded-prefix", "/tools/./x"),
            ]),
            headers(&[
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "a"),
                ("x-forwarded-prefix", "tools"),
            ]),
        ] {
            assert!(p.for_request(proxy, &bad).is_err());
        }
    }

    #[test]
    fn a_trusted_proxy_that_appends_cannot_let_the_client_choose_the_host() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let p = PublicBase::new("https://mcp.example.com/", vec![proxy]).unwrap();
        let lines = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            h
        };
        let proto = ("x-forwarded-proto", "https");
        // What a client sent, with the proxy's value appended (as a second value or as a
        // second line): the gate would have checked the proof against the client's host.
        for bad in [
            lines(&[proto, ("x-forwarded-host", "evil.example, mcp.example.com")]),
            lines(&[proto, ("x-forwarded-host", "mcp.example.com,evil.example")]),
            lines(&[
                proto,
                ("x-forwarded-host", "evil.example"),
                ("x-forwarded-host", "mcp.example.com"),
            ]),
            lines(&[proto, ("x-forwarded-host", ", mcp.example.com")]),
            lines(&[
                ("x-forwarded-proto", "http, https"),
                ("x-forwarded-host", "a"),
            ]),
            lines(&[
                ("x-forwarded-proto", "https"),
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "a"),
            ]),
            lines(&[
                proto,
                ("x-forwarded-host", "a"),
                ("x-forwarded-prefix", "/admin, /tools"),
            ]),
            lines(&[
                proto,
                ("x-forwarded-host", "a"),
                ("x-forwarded-prefix", "/admin"),
                ("x-forwarded-prefix", "/tools"),
            ]),
        ] {
            let e = p.for_request(proxy, &bad).unwrap_err();
            assert!(e.0.contains("not append"), "{bad:?}: {e:?}");
        }
        // Values that agree (a chain of proxies that each append the same) are one value.
        let agree = lines(&[
            ("x-forwarded-proto", "https, https"),
            ("x-forwarded-host", "public.example"),
            ("x-forwarded-host", "public.example ,public.example"),
        ]);
        assert_eq!(
            p.for_request(proxy, &agree).unwrap(),
            "https://public.example"
        );
        // A client's headers still count for nothing when it is not a trusted proxy.
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(
            p.for_request(client, &lines(&[proto, ("x-forwarded-host", "a, b")]))
                .unwrap(),
            "https://mcp.example.com"
        );
    }

    #[test]
    fn public_url_must_be_plain() {
        for bad in [
            "ftp://a",
            "https://a/?q",
            "https://u@a",
            "not a url",
            "https://a/x/../y",
            "https://a/%7Ex",
        ] {
            assert!(PublicBase::new(bad, vec![]).is_err(), "{bad}");
        }
        assert_eq!(
            PublicBase::new("http://127.0.0.1:8401", vec![])
                .unwrap()
                .configured(),
            "http://127.0.0.1:8401"
        );
    }
}
