//! MCP resource URIs and the resource grants of trust contracts, matched one way by the
//! contract check (enclave and verifiers alike) and by access-token grants (`cada.resources`).
//!
//! A grant used to be a raw string prefix, so `file:///srv/public/` admitted
//! `file:///srv/public/../secret/key`. Now a [`ResourcePrefix`] is one of two kinds:
//!
//! * **hierarchical** — `scheme://authority/path` or `scheme:/path` (`file:///srv/public/`,
//!   `https://api.example.com/docs`, `git://repo/src`): a URI matches when its scheme and
//!   authority are the grant's, byte for byte, and the grant's path is a prefix of the URI's
//!   path on a segment boundary (`file:///srv/public` covers `file:///srv/public` and
//!   `file:///srv/public/a`, never `file:///srv/publicity`; a grant ending in `/` covers only
//!   what lies below it). An empty grant path (`mem://notes`) covers the whole authority.
//!   `file:/srv` and `file:///srv` are different spellings and never match each other.
//! * **opaque** — anything else (`urn:isbn:0451450523`, `mem:notes/1`, custom schemes without
//!   `/` after the colon): it matches exactly that URI, byte for byte, or nothing.
//!
//! Both the grant and the URI a request names keep the strict-path rules of
//! [`crate::url`] over everything after the authority — query included, since a server
//! that does not split off a query reads it as path: no dot segments (nor a segment whose
//! part before a `?` is one), no encoded `/ \ ? # . % ;`, no encoded controls, invalid or
//! overlong UTF-8 or separator look-alikes, no `;`, no empty segments, no raw `\`, spaces,
//! controls or non-ASCII, no fragment. A raw `?` is an ordinary character here.
//!
//! Nothing is normalised: a server that looks resources up by their exact string would see
//! `%7E` and `~` as two resources, so the grant and the request are compared as written,
//! and both must already be in normal form (lower-case scheme, upper-case hex, no needless
//! encoding, characters a URI may not hold raw encoded) — `url.not_normal` otherwise,
//! naming the form to use. The authority holds letters, digits and `-._~!$&'()*+,=:[]`
//! only (`url.authority`), and no userinfo (`url.userinfo`).
use crate::url::{check_path, path_under, PathFault, PathRule, UrlError};
use crate::ProtocolError;

/// Longest resource URI (the MCP target limit, [`crate::mcp::MAX_TARGET_LEN`]).
pub const MAX_RESOURCE_URI_LEN: usize = crate::mcp::MAX_TARGET_LEN;

/// A resource URI in normal form that keeps the strict-path rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceUri {
    text: String,
    /// `scheme:` length.
    scheme_end: usize,
    /// For a hierarchical URI, where its authority ends (`None`: `scheme:/path`, or
    /// `Some(scheme_end)` when there is no authority) and so its path begins.
    hier: Option<Hier>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Hier {
    /// Whether `//authority` is present.
    has_authority: bool,
    /// Where the path (and query) begins.
    path_start: usize,
}

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

fn authority_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:[]".contains(&b)
}

impl ResourceUri {
    /// Parses a resource URI as a request names it (`resources/read` …): strict rules,
    /// and already in normal form.
    pub fn parse(s: &str) -> Result<Self, ProtocolError> {
        Self::parse_inner(s).map_err(ProtocolError::Url)
    }

    fn parse_inner(s: &str) -> Result<Self, UrlError> {
        if s.len() > MAX_RESOURCE_URI_LEN {
            return Err(UrlError::TooLong {
                len: s.len(),
                max: MAX_RESOURCE_URI_LEN,
            });
        }
        if s.contains('#') {
            return Err(UrlError::Fragment);
        }
        if s.contains('\\') {
            return Err(UrlError::Path {
                rule: PathRule::Backslash,
                segment: String::new(),
            });
        }
        if s.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(UrlError::Characters);
        }
        if !s.is_ascii() {
            return Err(UrlError::Path {
                rule: PathRule::NonAscii,
                segment: String::new(),
            });
        }
        let Some((scheme, rest)) = s.split_once(':') else {
            return Err(UrlError::NotAbsolute(
                "a resource URI starts with its scheme (file:, https:, urn: …)".into(),
            ));
        };
        let sb = scheme.as_bytes();
        if !sb.first().is_some_and(u8::is_ascii_alphabetic)
            || !sb
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            return Err(UrlError::NotAbsolute(format!(
                "{:?} is not a URI scheme (a letter, then letters, digits, + - .)",
                clip(scheme)
            )));
        }
        let mut normal = scheme.to_ascii_lowercase();
        normal.push(':');
        let scheme_end = normal.len();
        let (hier, path) = if let Some(after) = rest.strip_prefix("//") {
            let end = after.find(['/', '?']).unwrap_or(after.len());
            let authority = after.get(..end).unwrap_or("");
            if authority.contains('@') {
                return Err(UrlError::Userinfo);
            }
            if !authority.bytes().all(authority_ok) {
                return Err(UrlError::Authority(clip(authority)));
            }
            normal.push_str("//");
            normal.push_str(authority);
            (
                Some(Hier {
                    has_authority: true,
                    path_start: normal.len(),
                }),
                after.get(end..).unwrap_or(""),
            )
        } else if rest.starts_with('/') {
            (
                Some(Hier {
                    has_authority: false,
                    path_start: normal.len(),
                }),
                rest,
            )
        } else if rest.is_empty() {
            return Err(UrlError::NotAbsolute(format!(
                "{:?} names nothing after its scheme",
                clip(s)
            )));
        } else {
            (None, rest)
        };
        // A path after an authority starts with `/`, or is a bare query (`mem://x?q`).
        match check_path(path, true) {
            Ok(p) => normal.push_str(&p),
            Err(PathFault::Error(e)) => return Err(e),
            Err(PathFault::Dots(_)) => {
                return Err(UrlError::DotSegment {
                    input: clip(s),
                    normal: None,
                })
            }
        }
        if normal != s {
            return Err(UrlError::NotNormal {
                input: clip(s),
                normal,
            });
        }
        Ok(ResourceUri {
            text: normal,
            scheme_end,
            hier,
        })
    }

    /// The URI (as given: it is in normal form).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether it has a path hierarchy (`scheme://…` or `scheme:/…`).
    pub fn is_hierarchical(&self) -> bool {
        self.hier.is_some()
    }

    /// `scheme:` and, when present, `//authority`: what must be equal for a match.
    fn base(&self) -> &str {
        match self.hier {
            Some(h) => &self.text[..h.path_start],
            None => &self.text[..self.scheme_end],
        }
    }

    fn path(&self) -> &str {
        match self.hier {
            Some(h) => &self.text[h.path_start..],
            None => &self.text[self.scheme_end..],
        }
    }
}

impl std::fmt::Display for ResourceUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A resource grant: a hierarchical prefix matched on segment boundaries, or an opaque URI
/// matched exactly (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourcePrefix {
    uri: ResourceUri,
}

impl ResourcePrefix {
    /// Parses a grant (`credentialSubject.resources`, `cada-owner grant --resource`, an
    /// access token's `cada.resources`): the same rules as [`ResourceUri::parse`].
    pub fn parse(s: &str) -> Result<Self, ProtocolError> {
        ResourceUri::parse(s).map(|uri| ResourcePrefix { uri })
    }

    /// Whether `uri` lies under this grant.
    pub fn matches(&self, uri: &ResourceUri) -> bool {
        match (self.uri.hier, uri.hier) {
            (Some(p), Some(u)) => {
                p.has_authority == u.has_authority
                    && self.uri.base() == uri.base()
                    && path_under(self.uri.path(), uri.path())
            }
            (None, None) => self.uri.text == uri.text,
            _ => false,
        }
    }

    /// [`ResourcePrefix::matches`] for a URI not yet parsed: a URI that does not parse
    /// matches nothing.
    pub fn matches_str(&self, uri: &str) -> bool {
        ResourceUri::parse(uri).is_ok_and(|u| self.matches(&u))
    }

    /// Whether completions for the resource template `template` (RFC 6570, as
    /// `completion/complete` names it in `params.ref.uri`) are granted: a template without
    /// an expression is a URI and must match; otherwise its literal part up to the first
    /// `{` must be a URI this grant matches that ends in `/`, so that every expansion lies
    /// below a granted segment boundary (`file:///srv/public/{path}` under
    /// `file:///srv/public/`; never `file:///srv/pub{x}`, `file://{path}`).
    ///
    /// Only simple expressions (`{name}`, `{a,b}`: RFC 6570 level 1, which percent-encodes
    /// `/` and every reserved character of a value) are allowed; `{+path}`, `{/path}`,
    /// `{#x}` and the like, which expand to raw separators, are refused. The template with
    /// every expression read as one plain segment character must itself be a URI this grant
    /// matches (so `file:///srv/public/{path}/../x` is refused). A value can still expand
    /// to `..` on its own; completion reads nothing, and a `resources/read` of the expanded
    /// URI is checked on its own.
    pub fn matches_template(&self, template: &str) -> bool {
        let Some((literal, _)) = template.split_once('{') else {
            return self.matches_str(template);
        };
        if !literal.ends_with('/') || !self.matches_str(literal) {
            return false;
        }
        let mut plain = String::with_capacity(template.len());
        let mut rest = template;
        while let Some((before, after)) = rest.split_once('{') {
            plain.push_str(before);
            let Some((expr, tail)) = after.split_once('}') else {
                return false;
            };
            let simple = !expr.is_empty()
                && expr.split(',').all(|v| {
                    !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                });
            if !simple {
                return false;
            }
            plain.push('x');
            rest = tail;
        }
        if rest.contains('}') {
            return false;
        }
        plain.push_str(rest);
        self.matches_str(&plain)
    }

    /// Whether every URI (and template) this grant covers is also covered by `wider`:
    /// two hierarchical grants of the same scheme and authority (spelt alike) whose paths
    /// nest on a segment boundary (`file:///srv/public/docs` within `file:///srv/public/`,
    /// never `file:///srv/publicity` within `file:///srv/public`), or two equal opaque
    /// URIs. The attenuation rule of delegated contracts.
    pub fn is_within(&self, wider: &ResourcePrefix) -> bool {
        match (wider.uri.hier, self.uri.hier) {
            (Some(w), Some(n)) => {
                w.has_authority == n.has_authority
                    && wider.uri.base() == self.uri.base()
                    && path_under(wider.uri.path(), self.uri.path())
            }
            (None, None) => wider.uri.text == self.uri.text,
            _ => false,
        }
    }

    /// The grant as written.
    pub fn as_str(&self) -> &str {
        self.uri.as_str()
    }
}

impl std::fmt::Display for ResourcePrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.uri.as_str())
    }
}

/// Whether any of `grants` (unparsed, e.g. an access token's `cada.resources`) covers `uri`.
/// A grant that does not parse covers nothing.
pub fn granted(grants: &[String], uri: &str) -> bool {
    let Ok(u) = ResourceUri::parse(uri) else {
        return false;
    };
    grants
        .iter()
        .any(|g| ResourcePrefix::parse(g).is_ok_and(|p| p.matches(&u)))
}

/// Whether any of `grants` (unparsed) grants completions for `template`
/// ([`ResourcePrefix::matches_template`]).
pub fn template_granted(grants: &[String], template: &str) -> bool {
    grants
        .iter()
        .any(|g| ResourcePrefix::parse(g).is_ok_and(|p| p.matches_template(template)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(grant: &str, uri: &str) -> bool {
        ResourcePrefix::parse(grant).unwrap().matches_str(uri)
    }

    fn code(s: &str) -> &'static str {
        match ResourceUri::parse(s) {
            Ok(_) => "ok",
            Err(e) => e.code(),
        }
    }

    #[test]
    fn hierarchical_grants_match_on_segment_boundaries() {
        let g = "file:///srv/public/";
        assert!(m(g, "file:///srv/public/"));
        assert!(m(g, "file:///srv/public/a.txt"));
        assert!(m(g, "file:///srv/public/a/b%20c.txt"));
        assert!(m(g, "file:///srv/public/a?rev=2"));
        assert!(!m(g, "file:///srv/public"));
        assert!(!m(g, "file:///srv/publicity"));
        assert!(!m(g, "file:///srv/secret/key"));
        assert!(!m(g, "file://host/srv/public/a"));
        assert!(!m(g, "file:/srv/public/a"));
        assert!(!m(g, "https:///srv/public/a"));
        let g = "file:///srv/public";
        assert!(m(g, "file:///srv/public"));
        assert!(m(g, "file:///srv/public/a"));
        assert!(!m(g, "file:///srv/publicity"));
        assert!(!m(g, "file:///srv/public?x"));
        let g = "mem://notes";
        assert!(m(g, "mem://notes"));
        assert!(m(g, "mem://notes/1"));
        assert!(!m(g, "mem://notes?x"));
        assert!(!m(g, "mem://notesx/1"));
        assert!(!m(g, "mem://NOTES/1"));
        assert!(m("file:/srv/", "file:/srv/x"));
        assert!(m(
            "https://api.example.com/docs",
            "https://api.example.com/docs/7"
        ));
        assert!(!m(
            "https://api.example.com/docs",
            "https://api.example.com:443/docs/7"
        ));
    }

    #[test]
    fn opaque_grants_match_exactly() {
        assert!(m("urn:isbn:0451450523", "urn:isbn:0451450523"));
        assert!(!m("urn:isbn:0451450523", "urn:isbn:04514505230"));
        assert!(!m("urn:isbn:", "urn:isbn:0451450523"));
        assert!(m("mem:notes/1", "mem:notes/1"));
        assert!(!m("mem:notes", "mem:notes/1"));
        assert!(!m("mem:notes/", "mem:notes/1"));
        // An opaque grant never covers a hierarchical URI of its scheme, nor the reverse.
        assert!(!m("custom:x", "custom:/x"));
        assert!(!m("custom:/", "custom:x"));
    }

    /// Issue 21 item 3: every spelling that leaves a granted directory at some server is
    /// refused, in grants and requests alike (before, `file:///srv/public/../secret/key`
    /// started with `file:///srv/public/`).
    #[test]
    fn strict_rules_refuse_each_confusing_spelling() {
        let g = "file:///srv/public/";
        for (uri, want) in [
            ("file:///srv/public/../secret/key", "url.dot_segment"),
            ("file:///srv/public/./a", "url.dot_segment"),
            ("file:///srv/public/..", "url.dot_segment"),
            ("file:///srv/public/..?x", "url.dot_segment"),
            ("file:///srv/public/x?/../../etc/shadow", "url.dot_segment"),
            ("file:///srv/public/..%20/x", "url.dot_segment"),
            (
                "file:///srv/public/%2e%2e/%2e%2e/etc/shadow",
                "url.encoded_dot",
            ),
            ("file:///srv/public/..%2Fsecret", "url.encoded_slash"),
            ("file:///srv/public/..%5csecret", "url.encoded_slash"),
            ("file:///srv/public/%252e%252e/x", "url.double_encoding"),
            ("file:///srv/public/a%00", "url.encoded_control"),
            ("file:///srv/public/%C0%AE%C0%AE/x", "url.bad_utf8"),
            ("file:///srv/public/%EF%BC%8F", "url.lookalike"),
            ("file:///srv/public/a%3F", "url.encoded_delimiter"),
            ("file:///srv/public/%", "url.bad_percent"),
            ("file:///srv/public/..;/x", "url.path_parameter"),
            ("file:///srv/public//etc/shadow", "url.empty_segment"),
            ("file:///srv/public/\u{e9}", "url.non_ascii"),
            ("file:///srv/public\\..\\x", "url.backslash"),
            ("file:///srv/public/a b", "url.characters"),
            ("file:///srv/public/a#b", "url.fragment"),
            ("file://user@host/srv/public/a", "url.userinfo"),
            ("file://h%6Fst/srv/public/a", "url.authority"),
            ("file:///srv/public/%7Ea", "url.not_normal"),
            ("file:///srv/public/a%c3%a9", "url.not_normal"),
            ("FILE:///srv/public/a", "url.not_normal"),
            ("file:///srv/public/a|b", "url.not_normal"),
            ("urn:a/../b", "url.dot_segment"),
            ("urn:a//b", "url.empty_segment"),
            ("urn:", "url.not_absolute"),
            ("/srv/public/a", "url.not_absolute"),
            ("1x:/a", "url.not_absolute"),
        ] {
            assert_eq!(code(uri), want, "{uri}");
            assert_eq!(
                ResourcePrefix::parse(uri).map(|_| ()).unwrap_err().code(),
                want,
                "{uri}"
            );
            assert!(!m(g, uri), "{uri}");
        }
        assert_eq!(
            code(&format!("file:///{}", "a".repeat(MAX_RESOURCE_URI_LEN))),
            "url.too_long"
        );
        // Still legal: encoded spaces and valid UTF-8, upper-case hex, sub-delimiters.
        for ok in [
            "file:///srv/public/a%20b",
            "file:///srv/public/caf%C3%A9",
            "file:///srv/public/a,b=c&d+e!'()*$",
            "file:///srv/public/...x/.hidden",
            "file:///C:/Users/x",
            "mem://x?q=1",
            "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
        ] {
            assert_eq!(code(ok), "ok", "{ok}");
        }
        let e = ResourceUri::parse("file:///srv/public/%7Ea").unwrap_err();
        assert!(e.to_string().contains("file:///srv/public/~a"), "{e}");
    }

    #[test]
    fn templates_are_granted_by_their_literal_part() {
        let g = ResourcePrefix::parse("file:///srv/public/").unwrap();
        assert!(g.matches_template("file:///srv/public/{path}"));
        assert!(g.matches_template("file:///srv/public/docs/{name}.txt"));
        assert!(g.matches_template("file:///srv/public/{a,b}"));
        // Operators that expand to raw separators, and literal traversal after a variable.
        for t in [
            "file:///srv/public/docs/{+path}",
            "file:///srv/public/{/path}",
            "file:///srv/public/{#x}",
            "file:///srv/public/{.x}",
            "file:///srv/public/{path}/../x",
            "file:///srv/public/{path}/%2e%2e/x",
            "file:///srv/public/{path*}",
            "file:///srv/public/{path:3}",
            "file:///srv/public/{}",
            "file:///srv/public/{x",
            "file:///srv/public/x}",
        ] {
            assert!(!g.matches_template(t), "{t}");
        }
        assert!(g.matches_template("file:///srv/public/a.txt"));
        assert!(!g.matches_template("file:///srv/pub{x}"));
        assert!(!g.matches_template("file:///srv/public{/path}"));
        assert!(!g.matches_template("file://{path}"));
        assert!(!g.matches_template("file:///srv/public/../{x}"));
        assert!(!g.matches_template("{uri}"));
        let g = ResourcePrefix::parse("file:///srv/public").unwrap();
        assert!(g.matches_template("file:///srv/public/{path}"));
        assert!(!g.matches_template("file:///srv/public{x}"));
        assert!(template_granted(
            &["file:///srv/public/".into()],
            "file:///srv/public/{p}"
        ));
    }

    #[test]
    fn granted_reads_unparsed_grants() {
        let grants = vec!["bad grant".to_string(), "file:///srv/public/".to_string()];
        assert!(granted(&grants, "file:///srv/public/a"));
        assert!(!granted(&grants, "file:///srv/public/../secret"));
        assert!(!granted(&grants, "bad grant"));
    }

    #[test]
    fn is_within_nests_on_segment_boundaries() {
        let p = |s: &str| ResourcePrefix::parse(s).unwrap();
        let within = |n: &str, w: &str| p(n).is_within(&p(w));
        assert!(within("file:///srv/public/", "file:///srv/public/"));
        assert!(within("file:///srv/public/docs", "file:///srv/public/"));
        assert!(within("file:///srv/public/docs/", "file:///srv/public"));
        assert!(within("file:///srv/public", "file:///srv/public"));
        assert!(!within("file:///srv/publicity", "file:///srv/public"));
        assert!(!within("file:///srv/public", "file:///srv/public/"));
        assert!(!within("file:///srv/", "file:///srv/public/"));
        assert!(!within("file:/srv/public/a", "file:///srv/public/"));
        assert!(!within("file://other/srv/public/a", "file:///srv/public/"));
        assert!(within("mem://notes/a", "mem://notes"));
        assert!(within("urn:isbn:0451450523", "urn:isbn:0451450523"));
        assert!(!within("urn:isbn:04514505231", "urn:isbn:0451450523"));
        assert!(!within("urn:isbn:0451450523", "file:///srv/"));
        assert!(!within("file:///srv/a", "urn:isbn:0451450523"));
    }

    #[test]
    fn within_means_every_covered_uri_is_covered_by_the_wider_grant() {
        let grants = [
            "file:///srv/public/",
            "file:///srv/public",
            "file:///srv/public/docs",
            "file:///srv/publicity",
            "file:///srv/",
            "file:///",
            "mem://notes",
            "mem://notes/a",
            "urn:x:1",
        ];
        let uris = [
            "file:///srv/public",
            "file:///srv/public/",
            "file:///srv/public/docs",
            "file:///srv/public/docs/a",
            "file:///srv/publicity",
            "file:///srv/x",
            "file:///",
            "mem://notes",
            "mem://notes/a",
            "mem://notes/b",
            "urn:x:1",
        ];
        for n in grants {
            for w in grants {
                let (n, w) = (
                    ResourcePrefix::parse(n).unwrap(),
                    ResourcePrefix::parse(w).unwrap(),
                );
                if !n.is_within(&w) {
                    continue;
                }
                for u in uris {
                    if n.matches_str(u) {
                        assert!(w.matches_str(u), "{n} within {w} but {u} escapes");
                    }
                }
            }
        }
    }
}
