//! The URL a client called: what its proof's `htu` names. The gate knows it from
//! `--public-url`; behind a reverse proxy listed in `--trusted-proxy`, from that proxy's
//! `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Forwarded-Prefix`. The same headers from
//! anyone else are ignored, so a client cannot choose the URL its proof is checked against.
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
        let get = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                // A proxy chain appends: the first value is the client-facing one.
                .map(|v| v.split(',').next().unwrap_or("").trim().to_owned())
        };
        let (Some(proto), Some(host)) = (get("x-forwarded-proto"), get("x-forwarded-host")) else {
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
        let prefix = get("x-forwarded-prefix").unwrap_or_default();
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
            ("x-forwarded-host", "public.example, inner"),
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
