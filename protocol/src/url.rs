//! Request URLs and URL prefixes, matched one way everywhere: the enclave's delegation
//! flags, trust contracts and the verifier's policy audiences.
//!
//! A URL is split into its origin (scheme, host, port) and its path. A [`UrlPrefix`]
//! matches a [`HttpUrl`] when the origins are equal and the prefix's path is a prefix of
//! the URL's path on a segment boundary: `https://api.example.com/v1` matches
//! `https://api.example.com/v1` and `https://api.example.com/v1/x`, never
//! `https://api.example.com/v10`, `https://api.example.com.evil.net/v1` or
//! `https://api.example.com@evil.net/v1`.
//!
//! Userinfo and fragments are refused outright. [`HttpUrl::parse_canonical`] and
//! [`UrlPrefix::parse`] also refuse any form that is not already normal (upper-case scheme
//! or host, default port, dot segments, needless percent-encoding), so that what a person
//! configures or what an enclave signs is exactly what is compared.
//! [`HttpUrl::parse_normalized`] instead normalises (RFC 3986 §6) — for a URL a resource
//! server reports about its own request.
use crate::ProtocolError;

/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 4096;

/// Why a URL or URL prefix is refused. Each variant has a stable [`UrlError::code`].
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// Longer than [`MAX_URL_LEN`].
    #[error("the URL is {len} bytes, more than the limit of {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A fragment (`#…`): never part of a request target.
    #[error("a fragment (#…) is not allowed")]
    Fragment,
    /// Userinfo (`user@host`): it hides the real host from a reader.
    #[error("userinfo (user@host) is not allowed")]
    Userinfo,
    /// Control characters, spaces or backslashes, which parsers disagree about.
    #[error("control characters, spaces and backslashes are not allowed")]
    Characters,
    /// Not an absolute URL.
    #[error("not an absolute URL: {0}")]
    NotAbsolute(String),
    /// A scheme other than `http`/`https`.
    #[error("scheme {0:?} is not http(s)")]
    Scheme(String),
    /// No host.
    #[error("the URL has no host")]
    NoHost,
    /// A prefix with a query.
    #[error("a URL prefix cannot carry a query")]
    QueryInPrefix,
    /// Not already in normal form (upper-case scheme or host, default port, dot segments,
    /// needless or lower-case percent-encoding, missing path).
    #[error("{input:?} is not in normal form; use {normal:?}")]
    NotNormal {
        /// What was given (at most 200 characters).
        input: String,
        /// The same URL in normal form.
        normal: String,
    },
}

impl UrlError {
    /// A stable short code.
    pub fn code(&self) -> &'static str {
        match self {
            UrlError::TooLong { .. } => "url.too_long",
            UrlError::Fragment => "url.fragment",
            UrlError::Userinfo => "url.userinfo",
            UrlError::Characters => "url.characters",
            UrlError::NotAbsolute(_) => "url.not_absolute",
            UrlError::Scheme(_) => "url.scheme",
            UrlError::NoHost => "url.no_host",
            UrlError::QueryInPrefix => "url.query",
            UrlError::NotNormal { .. } => "url.not_normal",
        }
    }
}

/// An absolute `http`/`https` URL with a host, no userinfo, no fragment, its query removed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpUrl {
    /// The serialised URL (normal form, no query).
    text: String,
    /// Length of the origin (`scheme://host[:port]`) at the start of `text`.
    origin_len: usize,
    /// Where the host is in `text`.
    host: std::ops::Range<usize>,
    /// Whether the host is `localhost` or a loopback address.
    loopback: bool,
}

fn not_normal(input: &str, normal: &str) -> ProtocolError {
    UrlError::NotNormal {
        input: input.chars().take(200).collect(),
        normal: normal.to_owned(),
    }
    .into()
}

/// Decodes percent-encoded unreserved characters and upper-cases the hex of the rest
/// (RFC 3986 §6.2.2.1–2).
fn normalize_percent(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(v) = path
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                    out.push(char::from(v));
                } else {
                    out.push('%');
                    out.push_str(&path[i + 1..i + 3].to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
        }
        out.push(char::from(b[i]));
        i += 1;
    }
    out
}

/// Parses and normalises; `Err` for anything that is not an http(s) URL we can match.
/// Also says whether the input (less its query) was already the normal form.
fn parse_parts(s: &str) -> Result<(HttpUrl, bool), ProtocolError> {
    if s.len() > MAX_URL_LEN {
        return Err(UrlError::TooLong {
            len: s.len(),
            max: MAX_URL_LEN,
        }
        .into());
    }
    if s.contains('#') {
        return Err(UrlError::Fragment.into());
    }
    if s.bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'\\')
    {
        return Err(UrlError::Characters.into());
    }
    let mut url = url::Url::parse(s).map_err(|e| UrlError::NotAbsolute(e.to_string()))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(UrlError::Scheme(url.scheme().chars().take(32).collect()).into());
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(UrlError::NoHost.into());
    }
    if !url.username().is_empty() || url.password().is_some() || authority_has_at(s) {
        return Err(UrlError::Userinfo.into());
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    };
    url.set_query(None);
    let path = normalize_percent(url.path());
    url.set_path(&path);
    let text = url.to_string();
    let origin_len = text.len() - url.path().len();
    // No userinfo: the host follows `scheme://` directly.
    let host_start = url.scheme().len() + 3;
    let host_len = url.host_str().map_or(0, str::len);
    // Canonical when the input (less its query) is exactly the normal form.
    let input_no_query = s.split_once('?').map_or(s, |(a, _)| a);
    let canonical = input_no_query == text;
    Ok((
        HttpUrl {
            text,
            origin_len,
            host: host_start..host_start + host_len,
            loopback,
        },
        canonical,
    ))
}

/// Whether the authority part of `s` holds an `@` (userinfo), whatever the parser made of it.
fn authority_has_at(s: &str) -> bool {
    let rest = s.split_once("://").map_or("", |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    authority.contains('@')
}

impl HttpUrl {
    /// Parses a URL that must already be in normal form (what an enclave signs as `htu`).
    /// A query is allowed and dropped.
    pub fn parse_canonical(s: &str) -> Result<Self, ProtocolError> {
        let (u, canonical) = parse_parts(s)?;
        if !canonical {
            return Err(not_normal(s.split_once('?').map_or(s, |(a, _)| a), &u.text));
        }
        Ok(u)
    }

    /// Parses and normalises (scheme and host lower-cased, default port dropped, dot
    /// segments resolved, percent-encoding normalised, query dropped).
    pub fn parse_normalized(s: &str) -> Result<Self, ProtocolError> {
        parse_parts(s).map(|(u, _)| u)
    }

    /// The URL in normal form, without query.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `scheme://host[:port]`.
    pub fn origin(&self) -> &str {
        &self.text[..self.origin_len]
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &str {
        if self.text.starts_with("https:") {
            "https"
        } else {
            "http"
        }
    }

    /// The host as serialised (lower case, punycode, IPv6 in brackets).
    pub fn host(&self) -> &str {
        self.text.get(self.host.clone()).unwrap_or("")
    }

    /// Whether the host is `localhost` or a loopback address (`127.0.0.0/8`, `::1`).
    pub fn has_loopback_host(&self) -> bool {
        self.loopback
    }

    /// The path, starting with `/`.
    pub fn path(&self) -> &str {
        &self.text[self.origin_len..]
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// An origin and a path prefix matched on segment boundaries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UrlPrefix {
    url: HttpUrl,
}

impl UrlPrefix {
    /// Parses a prefix. It must be in normal form and carry no query; `https://host` and
    /// `https://host/` both mean the whole origin.
    pub fn parse(s: &str) -> Result<Self, ProtocolError> {
        if s.contains('?') {
            return Err(UrlError::QueryInPrefix.into());
        }
        // `https://host` has the normal form `https://host/`: accept both spellings.
        let (u, canonical) = parse_parts(s)?;
        if !canonical && format!("{s}/") != u.text {
            return Err(not_normal(s, &u.text));
        }
        Ok(UrlPrefix { url: u })
    }

    /// Whether `url` lies under this prefix: same origin, and the prefix path equals the
    /// URL's path or ends where a path segment of the URL ends.
    pub fn matches(&self, url: &HttpUrl) -> bool {
        if self.url.origin() != url.origin() {
            return false;
        }
        let (p, u) = (self.url.path(), url.path());
        if p.ends_with('/') {
            return u.starts_with(p);
        }
        u == p || (u.starts_with(p) && u.as_bytes().get(p.len()) == Some(&b'/'))
    }

    /// The prefix in normal form.
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The prefix as a URL (its origin, host and path).
    pub fn url(&self) -> &HttpUrl {
        &self.url
    }

    /// How specific the prefix is (longer paths win when several match).
    pub fn specificity(&self) -> usize {
        self.url.as_str().len()
    }
}

impl std::fmt::Display for UrlPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.url.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(prefix: &str, url: &str) -> bool {
        UrlPrefix::parse(prefix)
            .unwrap()
            .matches(&HttpUrl::parse_normalized(url).unwrap())
    }

    #[test]
    fn origin_then_segment_prefix() {
        assert!(m("https://api.example.com", "https://api.example.com/x"));
        assert!(m("https://api.example.com/", "https://api.example.com/"));
        assert!(m(
            "https://api.example.com/v1",
            "https://api.example.com/v1"
        ));
        assert!(m(
            "https://api.example.com/v1",
            "https://api.example.com/v1/x"
        ));
        assert!(m(
            "https://api.example.com/v1/",
            "https://api.example.com/v1/x"
        ));
        assert!(!m(
            "https://api.example.com/v1",
            "https://api.example.com/v10"
        ));
        assert!(!m(
            "https://api.example.com/v1/",
            "https://api.example.com/v1"
        ));
        assert!(!m(
            "https://api.example.com",
            "https://api.example.com.evil.net/x"
        ));
        assert!(!m("https://api.example.com", "http://api.example.com/x"));
        assert!(!m(
            "https://api.example.com",
            "https://api.example.com:8443/x"
        ));
        assert!(m(
            "https://api.example.com",
            "HTTPS://API.example.com:443/x?q=1"
        ));
        assert!(!m(
            "https://api.example.com/v1",
            "https://api.example.com/v1/../admin"
        ));
    }

    #[test]
    fn userinfo_fragments_and_odd_forms_are_refused() {
        for bad in [
            "https://api.example.com@evil.net/x",
            "https://user:pw@api.example.com/x",
            "https://@api.example.com/x",
            "https://api.example.com/x#frag",
            "ftp://api.example.com/x",
            "/relative",
            "https://api.example.com/a b",
            "https://api.example.com\\@evil.net/",
        ] {
            assert!(HttpUrl::parse_normalized(bad).is_err(), "{bad}");
            assert!(UrlPrefix::parse(bad).is_err(), "{bad}");
        }
        for not_normal in [
            "HTTPS://api.example.com/x",
            "https://API.example.com/x",
            "https://api.example.com:443/x",
            "https://api.example.com/a/../x",
            "https://api.example.com/%7Euser",
            "https://api.example.com/./x",
        ] {
            assert!(
                HttpUrl::parse_canonical(not_normal).is_err(),
                "{not_normal}"
            );
            assert!(UrlPrefix::parse(not_normal).is_err(), "{not_normal}");
            assert!(
                HttpUrl::parse_normalized(not_normal).is_ok(),
                "{not_normal}"
            );
        }
        assert!(UrlPrefix::parse("https://api.example.com/x?y=1").is_err());
        let u = HttpUrl::parse_canonical("https://api.example.com/x?y=1").unwrap();
        assert_eq!(u.as_str(), "https://api.example.com/x");
        assert_eq!(u.origin(), "https://api.example.com");
        assert_eq!(u.path(), "/x");
    }

    #[test]
    fn refusals_are_typed() {
        let code = |s: &str| match HttpUrl::parse_canonical(s).unwrap_err() {
            ProtocolError::Url(e) => e.code(),
            other => panic!("{other:?}"),
        };
        assert_eq!(code("https://api.example.com@evil.net/x"), "url.userinfo");
        assert_eq!(code("https://api.example.com/x#f"), "url.fragment");
        assert_eq!(code("ftp://api.example.com/x"), "url.scheme");
        assert_eq!(code("/x"), "url.not_absolute");
        assert_eq!(code("https://a.example/\tx"), "url.characters");
        assert_eq!(
            code(&format!("https://a.example/{}", "a".repeat(MAX_URL_LEN))),
            "url.too_long"
        );
        assert_eq!(
            UrlPrefix::parse("https://a.example/?q").unwrap_err(),
            ProtocolError::Url(UrlError::QueryInPrefix)
        );
        assert_eq!(
            HttpUrl::parse_canonical("https://API.example.com:443/x?q=1").unwrap_err(),
            ProtocolError::Url(UrlError::NotNormal {
                input: "https://API.example.com:443/x".into(),
                normal: "https://api.example.com/x".into(),
            })
        );
        assert_eq!(
            UrlPrefix::parse("https://API.example.com").unwrap_err(),
            ProtocolError::Url(UrlError::NotNormal {
                input: "https://API.example.com".into(),
                normal: "https://api.example.com/".into(),
            })
        );
    }

    #[test]
    fn host_scheme_and_loopback() {
        let u = HttpUrl::parse_canonical("http://127.0.0.1:8080/x").unwrap();
        assert_eq!((u.scheme(), u.host()), ("http", "127.0.0.1"));
        assert!(u.has_loopback_host());
        let u = HttpUrl::parse_canonical("http://[::1]/x").unwrap();
        assert_eq!(u.host(), "[::1]");
        assert!(u.has_loopback_host());
        assert!(HttpUrl::parse_canonical("http://localhost/")
            .unwrap()
            .has_loopback_host());
        let u = HttpUrl::parse_canonical("https://localhost.evil.net/").unwrap();
        assert_eq!((u.scheme(), u.host()), ("https", "localhost.evil.net"));
        assert!(!u.has_loopback_host());
        assert!(!HttpUrl::parse_canonical("http://128.0.0.1/")
            .unwrap()
            .has_loopback_host());
    }

    #[test]
    fn percent_normalisation() {
        let u = HttpUrl::parse_normalized("https://h.example/%7euser/%2f").unwrap();
        assert_eq!(u.path(), "/~user/%2F");
        assert!(HttpUrl::parse_normalized("https://h.example/%").is_ok());
    }
}
