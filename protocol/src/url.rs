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

/// An absolute `http`/`https` URL with a host, no userinfo, no fragment, its query removed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpUrl {
    /// The serialised URL (normal form, no query).
    text: String,
    /// Length of the origin (`scheme://host[:port]`) at the start of `text`.
    origin_len: usize,
}

fn invalid(detail: impl Into<String>) -> ProtocolError {
    ProtocolError::invalid("URL", detail)
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
fn parse_parts(s: &str) -> Result<(HttpUrl, bool), ProtocolError> {
    if s.len() > MAX_URL_LEN {
        return Err(ProtocolError::TooLarge {
            what: "URL",
            len: s.len(),
            max: MAX_URL_LEN,
        });
    }
    if s.contains('#') {
        return Err(invalid("a fragment (#…) is not allowed"));
    }
    if s.bytes().any(|b| b.is_ascii_control() || b == b' ' || b == b'\\') {
        return Err(invalid(
            "control characters, spaces and backslashes are not allowed",
        ));
    }
    let mut url = url::Url::parse(s).map_err(|e| invalid(format!("not an absolute URL: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(invalid(format!("scheme {:?} is not http(s)", url.scheme())));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(invalid("the URL has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() || authority_has_at(s) {
        return Err(invalid("userinfo (user@host) is not allowed"));
    }
    url.set_query(None);
    let path = normalize_percent(url.path());
    url.set_path(&path);
    let text = url.to_string();
    let origin_len = text.len() - url.path().len();
    // Canonical when the input (less its query) is exactly the normal form.
    let input_no_query = s.split_once('?').map_or(s, |(a, _)| a);
    let canonical = input_no_query == text;
    Ok((HttpUrl { text, origin_len }, canonical))
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
            return Err(invalid(format!(
                "{:?} is not in normal form; use {:?}",
                s.chars().take(200).collect::<String>(),
                u.text
            )));
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
            return Err(invalid("a URL prefix cannot carry a query"));
        }
        // `https://host` has the normal form `https://host/`: accept both spellings.
        let (u, canonical) = parse_parts(s)?;
        if !canonical && format!("{s}/") != u.text {
            return Err(invalid(format!(
                "prefix {:?} is not in normal form; use {:?}",
                s.chars().take(200).collect::<String>(),
                u.text
            )));
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
        assert!(m("https://api.example.com/v1", "https://api.example.com/v1"));
        assert!(m("https://api.example.com/v1", "https://api.example.com/v1/x"));
        assert!(m("https://api.example.com/v1/", "https://api.example.com/v1/x"));
        assert!(!m("https://api.example.com/v1", "https://api.example.com/v10"));
        assert!(!m("https://api.example.com/v1/", "https://api.example.com/v1"));
        assert!(!m("https://api.example.com", "https://api.example.com.evil.net/x"));
        assert!(!m("https://api.example.com", "http://api.example.com/x"));
        assert!(!m("https://api.example.com", "https://api.example.com:8443/x"));
        assert!(m("https://api.example.com", "HTTPS://API.example.com:443/x?q=1"));
        assert!(!m("https://api.example.com/v1", "https://api.example.com/v1/../admin"));
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
            assert!(HttpUrl::parse_canonical(not_normal).is_err(), "{not_normal}");
            assert!(UrlPrefix::parse(not_normal).is_err(), "{not_normal}");
            assert!(HttpUrl::parse_normalized(not_normal).is_ok(), "{not_normal}");
        }
        assert!(UrlPrefix::parse("https://api.example.com/x?y=1").is_err());
        let u = HttpUrl::parse_canonical("https://api.example.com/x?y=1").unwrap();
        assert_eq!(u.as_str(), "https://api.example.com/x");
        assert_eq!(u.origin(), "https://api.example.com");
        assert_eq!(u.path(), "/x");
    }

    #[test]
    fn percent_normalisation() {
        let u = HttpUrl::parse_normalized("https://h.example/%7euser/%2f").unwrap();
        assert_eq!(u.path(), "/~user/%2F");
        assert!(HttpUrl::parse_normalized("https://h.example/%").is_ok());
    }
}
