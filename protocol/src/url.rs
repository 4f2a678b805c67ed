//! Request URLs and URL prefixes, matched one way everywhere: the enclave's delegation
//! flags, trust contracts, the verifier's policy audiences, access-token audiences and the
//! gate.
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
//! or host, default port, needless or lower-case percent-encoding), so that what a person
//! configures or what an enclave signs is exactly what is compared.
//! [`HttpUrl::parse_normalized`] instead normalises those (RFC 3986 §6.2.2) — for a URL a
//! resource server reports about its own request; [`HttpUrl::parse_request`] normalises
//! the origin only and refuses a path that is not already normal (what a gate forwards).
//!
//! # Strict paths
//!
//! Servers and proxies disagree about what a path means once it holds dot segments,
//! encoded separators or odd bytes: the URL a matcher checked would not be the one the
//! server routes. So every parser here (canonical, normalised and prefixes alike, and
//! [`crate::resource_uri`] for MCP resource URIs) reads the **raw bytes** of the path, before
//! and besides the `url` crate (which silently resolves dot segments, reads `\` as `/` and
//! strips tabs), and refuses, each with its own code ([`PathRule::code`]):
//!
//! | refused in the path | code |
//! |---|---|
//! | a raw `\` (anywhere in the URL) | `url.backslash` |
//! | `%2F` `%5C` (encoded `/` `\`, any hex case) | `url.encoded_slash` |
//! | `%3F` `%23` (encoded `?` `#`: a decoder that re-parses would cut the path there) | `url.encoded_delimiter` |
//! | `%2E` (encoded `.`) | `url.encoded_dot` |
//! | `%25` (encoded `%`: double encoding) | `url.double_encoding` |
//! | `%00`–`%1F`, `%7F` and encoded C1 controls (`%C2%80`–`%C2%9F`) | `url.encoded_control` |
//! | `%` not followed by two hex digits | `url.bad_percent` |
//! | encoded bytes ≥ `%80` that are not valid shortest-form UTF-8 (overlong `%C0%AE`, surrogates, truncated) | `url.bad_utf8` |
//! | encoded characters that Unicode compatibility normalisation (NFKC) or a Windows best-fit code page turns into `/ \ . % ? # ;` (`%EF%BC%8F` fullwidth solidus, `%E2%80%A5` two-dot leader, `%C2%A5` yen sign …) | `url.lookalike` |
//! | `;` or `%3B` (path parameters, `..;/`) | `url.path_parameter` |
//! | an empty segment (`//` inside the path) | `url.empty_segment` |
//! | raw bytes ≥ 0x80 (send UTF-8 percent-encoded) | `url.non_ascii` |
//! | a segment that is `.` or `..`, or decodes to dots and spaces only (`..%20`, which Windows reads as `..`) | `url.dot_segment` |
//!
//! Still legal, because no decoder turns them into a separator, a dot segment or another
//! encoding: raw unreserved characters, sub-delimiters other than `;`, `:` and `@`;
//! percent-encoded printable ASCII other than the above (`%20`, `%22`, `%2B`, `%40` …,
//! normalised to upper-case hex; encoded unreserved characters such as `%7E` decode to
//! themselves in normal form); and percent-encoded valid UTF-8 of non-control characters
//! (`%C3%A9` for `é`). A matcher that admits a URL under a prefix therefore agrees with any
//! server that decodes (once or repeatedly), reads `\` as `/` and removes dot segments
//! (`fuzz/fuzz_targets/url_prefix.rs` checks exactly this against an independent oracle).
//! A query is not part of matching; its bytes never reach the path, because the path ends
//! at the first raw `?` here and at every server, and an encoded `?` is refused.
use crate::ProtocolError;

/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 4096;

/// Which strict-path rule a URL or resource URI broke (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathRule {
    /// A raw `\`.
    Backslash,
    /// `%2F` or `%5C`.
    EncodedSlash,
    /// `%3F` or `%23`.
    EncodedDelimiter,
    /// `%2E`.
    EncodedDot,
    /// `%25`.
    DoubleEncoding,
    /// An encoded control character.
    EncodedControl,
    /// `%` without two hex digits.
    BadPercent,
    /// Encoded bytes that are not valid shortest-form UTF-8.
    BadUtf8,
    /// An encoded character that normalises to `/ \ . % ? # ;`.
    Lookalike,
    /// `;` or `%3B`.
    PathParameter,
    /// `//` inside the path.
    EmptySegment,
    /// A raw byte ≥ 0x80.
    NonAscii,
}

impl PathRule {
    /// A stable short code.
    pub fn code(self) -> &'static str {
        match self {
            PathRule::Backslash => "url.backslash",
            PathRule::EncodedSlash => "url.encoded_slash",
            PathRule::EncodedDelimiter => "url.encoded_delimiter",
            PathRule::EncodedDot => "url.encoded_dot",
            PathRule::DoubleEncoding => "url.double_encoding",
            PathRule::EncodedControl => "url.encoded_control",
            PathRule::BadPercent => "url.bad_percent",
            PathRule::BadUtf8 => "url.bad_utf8",
            PathRule::Lookalike => "url.lookalike",
            PathRule::PathParameter => "url.path_parameter",
            PathRule::EmptySegment => "url.empty_segment",
            PathRule::NonAscii => "url.non_ascii",
        }
    }

    /// What is wrong and what to do instead.
    fn explain(self) -> &'static str {
        match self {
            PathRule::Backslash => {
                "a backslash, which some parsers read as `/`, is not allowed; use `/` or %5C \
                 nowhere"
            }
            PathRule::EncodedSlash => {
                "an encoded `/` or `\\` (%2F, %5C) is not allowed: servers disagree on whether \
                 it separates segments"
            }
            PathRule::EncodedDelimiter => {
                "an encoded `?` or `#` (%3F, %23) is not allowed: a server that decodes and \
                 re-parses would end the path there"
            }
            PathRule::EncodedDot => {
                "an encoded `.` (%2E) is not allowed: write `.` (and no `.` or `..` segments)"
            }
            PathRule::DoubleEncoding => {
                "an encoded `%` (%25, double encoding) is not allowed: a server decoding twice \
                 would see another path"
            }
            PathRule::EncodedControl => {
                "an encoded control character (%00-%1F, %7F, C1) is not allowed"
            }
            PathRule::BadPercent => "`%` must be followed by two hex digits",
            PathRule::BadUtf8 => {
                "percent-encoded bytes above %7F must be valid shortest-form UTF-8 (no overlong \
                 forms such as %C0%AE)"
            }
            PathRule::Lookalike => {
                "an encoded character that Unicode normalisation or a Windows code page turns \
                 into / \\ . % ? # or ; is not allowed"
            }
            PathRule::PathParameter => "`;` (path parameters, as in `..;/`) is not allowed",
            PathRule::EmptySegment => "an empty segment (`//`) is not allowed inside the path",
            PathRule::NonAscii => "raw non-ASCII bytes are not allowed: percent-encode UTF-8",
        }
    }
}

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
    /// Control characters or spaces, which parsers disagree about.
    #[error("control characters and spaces are not allowed")]
    Characters,
    /// Not an absolute URL (`scheme://host…`).
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
    /// A resource URI's authority holds characters other than letters, digits and
    /// `-._~!$&'()*+,=:[]` (see [`crate::resource_uri`]).
    #[error("the authority {0:?} may hold letters, digits and -._~!$&'()*+,=:[] only")]
    Authority(String),
    /// Not already in normal form (upper-case scheme or host, default port, needless or
    /// lower-case percent-encoding, missing path).
    #[error("{input:?} is not in normal form; use {normal:?}")]
    NotNormal {
        /// What was given (at most 200 characters).
        input: String,
        /// The same URL in normal form.
        normal: String,
    },
    /// The path breaks a strict-path rule (see the [module docs](self)).
    #[error("{}{}", rule.explain(), if segment.is_empty() { String::new() } else { format!(" (in {segment:?})") })]
    Path {
        /// The rule.
        rule: PathRule,
        /// The segment that broke it (at most 64 characters; empty when not in the path).
        segment: String,
    },
    /// A `.` or `..` segment (or one of dots and spaces only). Never resolved: a server
    /// may resolve it against another base, or not at all.
    #[error(
        "{input:?} has a `.` or `..` segment (or one of dots and spaces only), which is never \
         resolved here{}",
        normal.as_deref().map(|n| format!("; its normal form is {n:?}")).unwrap_or_default()
    )]
    DotSegment {
        /// What was given (at most 200 characters).
        input: String,
        /// The URL with dot segments removed (RFC 3986 §5.2.4) and in normal form, when
        /// that is well defined.
        normal: Option<String>,
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
            UrlError::Authority(_) => "url.authority",
            UrlError::NotNormal { .. } => "url.not_normal",
            UrlError::Path { rule, .. } => rule.code(),
            UrlError::DotSegment { .. } => "url.dot_segment",
        }
    }

    /// The normal form, when the input was refused only for not being in it
    /// ([`UrlError::NotNormal`], or a [`UrlError::DotSegment`] that resolves cleanly).
    pub fn normal_form(&self) -> Option<&str> {
        match self {
            UrlError::NotNormal { normal, .. } => Some(normal),
            UrlError::DotSegment { normal, .. } => normal.as_deref(),
            _ => None,
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

fn clip(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn not_normal(input: &str, normal: &str) -> ProtocolError {
    UrlError::NotNormal {
        input: clip(input, 200),
        normal: normal.to_owned(),
    }
    .into()
}

/// Characters that some decoder turns into `/ \ . % ? # ;`: every code point whose NFKC
/// form contains one of them (Unicode 14 data, 52 code points), and the slash and backslash
/// look-alikes without a decomposition that best-fit code pages map to `/` or `\`
/// (U+2044, U+2215, U+2216, U+29F5, U+29F8, U+29F9, and ¥ U+00A5 / ₩ U+20A9, which are `\`
/// in the Japanese and Korean code pages).
const LOOKALIKES: &[(u32, u32)] = &[
    (0x00A5, 0x00A5),
    (0x037E, 0x037E),
    (0x2024, 0x2026),
    (0x2044, 0x2044),
    (0x2047, 0x2049),
    (0x20A9, 0x20A9),
    (0x2100, 0x2101),
    (0x2105, 0x2106),
    (0x2215, 0x2216),
    (0x2488, 0x249B),
    (0x29F5, 0x29F5),
    (0x29F8, 0x29F9),
    (0x33C2, 0x33C2),
    (0x33C7, 0x33C7),
    (0x33D8, 0x33D8),
    (0xFE14, 0xFE14),
    (0xFE16, 0xFE16),
    (0xFE19, 0xFE19),
    (0xFE30, 0xFE30),
    (0xFE52, 0xFE52),
    (0xFE54, 0xFE54),
    (0xFE56, 0xFE56),
    (0xFE5F, 0xFE5F),
    (0xFE68, 0xFE68),
    (0xFE6A, 0xFE6A),
    (0xFF03, 0xFF03),
    (0xFF05, 0xFF05),
    (0xFF0E, 0xFF0F),
    (0xFF1B, 0xFF1B),
    (0xFF1F, 0xFF1F),
    (0xFF3C, 0xFF3C),
    (0x1F100, 0x1F100),
];

fn is_lookalike(c: char) -> bool {
    let c = u32::from(c);
    LOOKALIKES.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte `%XX` at `b[i..]` encodes, if `b[i]` is `%` followed by two hex digits.
fn percent_at(b: &[u8], i: usize) -> Option<u8> {
    if b.get(i) != Some(&b'%') {
        return None;
    }
    let hi = hex_digit(*b.get(i + 1)?)?;
    let lo = hex_digit(*b.get(i + 2)?)?;
    Some((hi << 4) | lo)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn push_encoded(out: &mut String, v: u8) {
    out.push('%');
    out.push(char::from(HEX[usize::from(v >> 4)]));
    out.push(char::from(HEX[usize::from(v & 15)]));
}

/// Why a path was refused, before the caller knows the whole URL.
pub(crate) enum PathFault {
    /// A URL error other than a dot segment.
    Error(UrlError),
    /// Only dot segments are wrong: the path in normal form with them removed, when that is
    /// well defined (no segment of dots and spaces that is not exactly `.` or `..`).
    Dots(Option<String>),
}

fn rule(rule: PathRule, segment: &str) -> PathFault {
    PathFault::Error(UrlError::Path {
        rule,
        segment: clip(segment, 64),
    })
}

/// Checks one segment's raw bytes and appends its normal form to `out`. Returns whether
/// it decodes to dots and spaces only, with at least one dot.
fn check_segment(seg: &str, raw_question_mark: bool, out: &mut String) -> Result<bool, PathFault> {
    let b = seg.as_bytes();
    let mut dots = 0usize;
    let mut only_dots_and_spaces = true;
    // Where a raw `?` is allowed (a resource URI), a server that cuts the query off sees
    // only what comes before it: that part must not be a dot segment either.
    let mut before_query = true;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'?' && raw_question_mark && before_query {
            before_query = false;
            out.push('?');
            i += 1;
            continue;
        }
        if !before_query {
            // Past the `?`: the same rules, but it no longer decides whether the segment
            // is a dot segment.
            let mut sink = String::new();
            let rest = seg.get(i..).unwrap_or("");
            check_segment_rest(rest, &mut sink)?;
            out.push_str(&sink);
            break;
        }
        match c {
            0x80..=0xFF => return Err(rule(PathRule::NonAscii, seg)),
            b'\\' => return Err(rule(PathRule::Backslash, seg)),
            b';' => return Err(rule(PathRule::PathParameter, seg)),
            b'#' => return Err(PathFault::Error(UrlError::Fragment)),
            // Never in an HTTP path: it ends at the first `?`.
            b'?' => return Err(PathFault::Error(UrlError::Fragment)),
            0..=0x20 | 0x7F => return Err(PathFault::Error(UrlError::Characters)),
            b'%' => {
                let Some(v) = percent_at(b, i) else {
                    return Err(rule(PathRule::BadPercent, seg));
                };
                match v {
                    0..=0x1F | 0x7F => return Err(rule(PathRule::EncodedControl, seg)),
                    b'/' | b'\\' => return Err(rule(PathRule::EncodedSlash, seg)),
                    b'?' | b'#' => return Err(rule(PathRule::EncodedDelimiter, seg)),
                    b'.' => return Err(rule(PathRule::EncodedDot, seg)),
                    b'%' => return Err(rule(PathRule::DoubleEncoding, seg)),
                    b';' => return Err(rule(PathRule::PathParameter, seg)),
                    0x80..=0xFF => {
                        // A run of encoded bytes ≥ 0x80: one or more UTF-8 characters.
                        let mut run = Vec::new();
                        while let Some(v) = percent_at(b, i).filter(|v| *v >= 0x80) {
                            run.push(v);
                            i += 3;
                        }
                        let Ok(text) = std::str::from_utf8(&run) else {
                            return Err(rule(PathRule::BadUtf8, seg));
                        };
                        if text.chars().any(char::is_control) {
                            return Err(rule(PathRule::EncodedControl, seg));
                        }
                        if text.chars().any(is_lookalike) {
                            return Err(rule(PathRule::Lookalike, seg));
                        }
                        let hidden = text.chars().all(is_space_or_ignorable);
                        for v in run {
                            push_encoded(out, v);
                        }
                        // `..%E3%80%80` or `..%E2%80%8B`: a server that maps Unicode
                        // spaces to ASCII (best fit, NFKC) or drops ignorable characters
                        // and trims would read a dot segment.
                        only_dots_and_spaces &= hidden;
                        continue;
                    }
                    v if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'_' | b'~') => {
                        only_dots_and_spaces = false;
                        out.push(char::from(v));
                    }
                    v => {
                        only_dots_and_spaces &= v == b' ';
                        push_encoded(out, v);
                    }
                }
                i += 3;
                continue;
            }
            b'.' => {
                dots += 1;
                out.push('.');
            }
            c if c.is_ascii_alphanumeric() || b"-_~!$&'()*+,=:@".contains(&c) => {
                only_dots_and_spaces = false;
                out.push(char::from(c));
            }
            // Printable ASCII that a path may not hold raw (`"<>[]^`{|}`): normal form
            // encodes it.
            c => {
                only_dots_and_spaces = false;
                push_encoded(out, c);
            }
        }
        i += 1;
    }
    Ok(dots > 0 && only_dots_and_spaces)
}

/// Unicode white space (`U+00A0`, `U+3000`, …) and default-ignorable characters (soft
/// hyphen, zero-width characters, joiners, BOM, variation selectors, tags): what servers
/// map to a space or drop, so that a segment of dots and these reads as a dot segment.
fn is_space_or_ignorable(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            u32::from(c),
            0x00AD
                | 0x034F
                | 0x061C
                | 0x115F..=0x1160
                | 0x17B4..=0x17B5
                | 0x180B..=0x180F
                | 0x200B..=0x200F
                | 0x202A..=0x202E
                | 0x2060..=0x206F
                | 0x3164
                | 0xFE00..=0xFE0F
                | 0xFEFF
                | 0xFFA0
                | 0xFFF0..=0xFFF8
                | 0x1BCA0..=0x1BCA3
                | 0x1D173..=0x1D17A
                | 0xE0000..=0xE0FFF
        )
}

/// The rest of a resource URI segment after its first raw `?`: every rule but the dot
/// segment one.
fn check_segment_rest(rest: &str, out: &mut String) -> Result<(), PathFault> {
    // Each further `?` is an ordinary character; split on them and check each piece.
    for (k, piece) in rest.split('?').enumerate() {
        if k > 0 {
            out.push('?');
        }
        check_segment(piece, false, out)?;
    }
    Ok(())
}

/// Checks a raw path under the strict-path rules and returns its normal form (unreserved
/// characters decoded, other encodings in upper-case hex, characters a path may not hold
/// raw encoded). `path` is empty, starts with `/`, or (`rootless`) is the rootless path of
/// an opaque URI. `raw_question_mark`: whether a raw `?` is an ordinary character (in a
/// resource URI, where nothing after it is spared the rules) rather than refused.
pub(crate) fn check_path(path: &str, raw_question_mark: bool) -> Result<String, PathFault> {
    let mut normal = String::with_capacity(path.len());
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len() - 1;
    let rooted = path.starts_with('/');
    let mut dot_segments = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        if i > 0 {
            normal.push('/');
        }
        let leading = i == 0 && rooted;
        if seg.is_empty() && !leading && i != last {
            return Err(rule(PathRule::EmptySegment, path));
        }
        let start = normal.len();
        if check_segment(seg, raw_question_mark, &mut normal)? {
            dot_segments.push((i, normal.get(start..).unwrap_or("").to_owned()));
        }
    }
    if dot_segments.is_empty() {
        return Ok(normal);
    }
    // Say what the path would resolve to, when only `.` and `..` segments are wrong.
    if !rooted || dot_segments.iter().any(|(_, s)| s != "." && s != "..") {
        return Err(PathFault::Dots(None));
    }
    Err(PathFault::Dots(Some(remove_dot_segments(&normal))))
}

/// RFC 3986 §5.2.4 on a rooted path without empty segments.
fn remove_dot_segments(path: &str) -> String {
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let mut out: Vec<&str> = Vec::new();
    let n = segs.len();
    for (i, s) in segs.into_iter().enumerate() {
        let last = i + 1 == n;
        match s {
            "." => {}
            ".." => {
                out.pop();
            }
            s => {
                out.push(s);
                continue;
            }
        }
        if last {
            out.push("");
        }
    }
    format!("/{}", out.join("/"))
}

/// How far the input already was the normal form.
struct Canonical {
    /// The input less its query is exactly the normal form.
    whole: bool,
    /// The input's path is exactly the normal form's (an empty path counts as `/`).
    path: bool,
}

/// Parses, checks the raw path and normalises; `Err` for anything that is not an http(s)
/// URL we can match.
fn parse_parts(s: &str) -> Result<(HttpUrl, Canonical), ProtocolError> {
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
    if s.contains('\\') {
        return Err(UrlError::Path {
            rule: PathRule::Backslash,
            segment: String::new(),
        }
        .into());
    }
    if s.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(UrlError::Characters.into());
    }
    let url = url::Url::parse(s).map_err(|e| UrlError::NotAbsolute(e.to_string()))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(UrlError::Scheme(clip(url.scheme(), 32)).into());
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(UrlError::NoHost.into());
    }
    if !url.username().is_empty() || url.password().is_some() || authority_has_at(s) {
        return Err(UrlError::Userinfo.into());
    }
    // The raw split, not the `url` crate's: `scheme://authority` then the path up to the
    // first `?` (no `#` or `\` is left to end it otherwise).
    let scheme_len = url.scheme().len();
    let rest = match s.get(..scheme_len) {
        Some(sch) if sch.eq_ignore_ascii_case(url.scheme()) => s.get(scheme_len..).unwrap_or(""),
        _ => "",
    };
    let Some(rest) = rest.strip_prefix("://") else {
        return Err(UrlError::NotAbsolute(format!("write {}://host/path", url.scheme())).into());
    };
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    if auth_end == 0 {
        return Err(UrlError::NoHost.into());
    }
    let after = rest.get(auth_end..).unwrap_or("");
    let raw_path = after.split('?').next().unwrap_or("");
    let origin = &url[..url::Position::BeforePath];
    let input_no_query = s.split_once('?').map_or(s, |(a, _)| a);
    let path = match check_path(raw_path, false) {
        Ok(p) => p,
        Err(PathFault::Error(e)) => return Err(e.into()),
        Err(PathFault::Dots(normal)) => {
            return Err(UrlError::DotSegment {
                input: clip(input_no_query, 200),
                normal: normal.map(|p| format!("{origin}{p}")),
            }
            .into())
        }
    };
    let path_canonical = raw_path == path || raw_path.is_empty();
    let text = if path.is_empty() {
        format!("{origin}/")
    } else {
        format!("{origin}{path}")
    };
    let whole = input_no_query == text;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    };
    // No userinfo: the host follows `scheme://` directly.
    let host_start = scheme_len + 3;
    let host_len = url.host_str().map_or(0, str::len);
    Ok((
        HttpUrl {
            origin_len: origin.len(),
            host: host_start..host_start + host_len,
            loopback,
            text,
        },
        Canonical {
            whole,
            path: path_canonical,
        },
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
        if !canonical.whole {
            return Err(not_normal(s.split_once('?').map_or(s, |(a, _)| a), &u.text));
        }
        Ok(u)
    }

    /// Parses and normalises (scheme and host lower-cased, default port dropped,
    /// percent-encoding normalised, query dropped). Dot segments and the other strict-path
    /// refusals of the [module docs](self) are refused, not resolved.
    pub fn parse_normalized(s: &str) -> Result<Self, ProtocolError> {
        parse_parts(s).map(|(u, _)| u)
    }

    /// Parses a request URL as a server received it: the origin is normalised (a proxy may
    /// spell the host in upper case or name the default port), the path must already be in
    /// normal form, since it is what the server routes ([`UrlError::NotNormal`] naming the
    /// normal form otherwise), and the query is dropped.
    pub fn parse_request(s: &str) -> Result<Self, ProtocolError> {
        let (u, canonical) = parse_parts(s)?;
        if !canonical.path {
            return Err(not_normal(s.split_once('?').map_or(s, |(a, _)| a), &u.text));
        }
        Ok(u)
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

/// Whether `path` equals `prefix` or continues it past a segment boundary (both in normal
/// form, free of dot and empty segments).
pub(crate) fn path_under(prefix: &str, path: &str) -> bool {
    if prefix.is_empty() || prefix.ends_with('/') {
        return path.starts_with(prefix)
            && (!prefix.is_empty() || path.is_empty() || path.starts_with('/'));
    }
    path == prefix || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// An origin and a path prefix matched on segment boundaries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UrlPrefix {
    url: HttpUrl,
}

impl UrlPrefix {
    /// Parses a prefix. It must be in normal form, keep the strict-path rules and carry no
    /// query; `https://host` and `https://host/` both mean the whole origin.
    pub fn parse(s: &str) -> Result<Self, ProtocolError> {
        if s.contains('?') {
            return Err(UrlError::QueryInPrefix.into());
        }
        // `https://host` has the normal form `https://host/`: accept both spellings.
        let (u, canonical) = parse_parts(s)?;
        if !canonical.whole && format!("{s}/") != u.text {
            return Err(not_normal(s, &u.text));
        }
        Ok(UrlPrefix { url: u })
    }

    /// Whether `url` lies under this prefix: same origin, and the prefix path equals the
    /// URL's path or ends where a path segment of the URL ends.
    pub fn matches(&self, url: &HttpUrl) -> bool {
        self.url.origin() == url.origin() && path_under(self.url.path(), url.path())
    }

    /// Whether every URL this prefix matches is also matched by `wider`: the same origin,
    /// and this prefix's path lies under `wider`'s on a segment boundary (`/mcp/tools`
    /// and `/mcp` are within `/mcp`; `/mcpx` is not; `/mcp` is not within `/mcp/`, which
    /// does not match `/mcp` itself). The attenuation rule of delegated contracts.
    pub fn is_within(&self, wider: &UrlPrefix) -> bool {
        wider.url.origin() == self.url.origin() && path_under(wider.url.path(), self.url.path())
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
        // Dot segments are refused, not resolved (and so never matched).
        assert!(HttpUrl::parse_normalized("https://api.example.com/v1/../admin").is_err());
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
            "https://api.example.com/%7Euser",
            "https://api.example.com/%c3%a9",
            "https://api.example.com/a|b",
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
        let u = HttpUrl::parse_normalized("https://h.example/%7euser/%c3%a9%20x/a%3a|").unwrap();
        assert_eq!(u.path(), "/~user/%C3%A9%20x/a%3A%7C");
        // Legal encodings stay legal in every parser.
        for ok in [
            "https://h.example/a%20b",
            "https://h.example/caf%C3%A9",
            "https://h.example/%F0%9F%A6%80",
            "https://h.example/a%2Bb%40c%22",
            "https://h.example/v1/",
            "https://h.example/...x/a..b/.hidden",
        ] {
            assert_eq!(HttpUrl::parse_canonical(ok).unwrap().as_str(), ok);
            assert!(UrlPrefix::parse(ok).is_ok(), "{ok}");
            assert!(HttpUrl::parse_request(ok).is_ok(), "{ok}");
        }
    }

    fn path_code(s: &str) -> &'static str {
        let code = |r: Result<(), ProtocolError>| match r {
            Err(ProtocolError::Url(e)) => e.code(),
            other => panic!("{s}: {other:?}"),
        };
        // The same code from every parser used for matching.
        let c = code(HttpUrl::parse_canonical(s).map(|_| ()));
        assert_eq!(code(HttpUrl::parse_normalized(s).map(|_| ())), c, "{s}");
        assert_eq!(code(HttpUrl::parse_request(s).map(|_| ())), c, "{s}");
        assert_eq!(code(UrlPrefix::parse(s).map(|_| ())), c, "{s}");
        c
    }

    /// Issue 21 item 2: every spelling that moves a path outside a prefix at some server is
    /// refused, with its own code (before, `..%2F` and friends matched `/pub`).
    #[test]
    fn strict_paths_refuse_each_confusing_spelling() {
        let h = "http://127.0.0.1:18408";
        let c = |p: &str| path_code(&format!("{h}{p}"));
        assert_eq!(c("/pub/..%2Fsecret.txt"), "url.encoded_slash");
        assert_eq!(c("/pub/..%2fsecret.txt"), "url.encoded_slash");
        assert_eq!(c("/pub/..%5Csecret.txt"), "url.encoded_slash");
        assert_eq!(c("/pub/..%5csecret.txt"), "url.encoded_slash");
        assert_eq!(c("/pub/x%3F/../y"), "url.encoded_delimiter");
        assert_eq!(c("/pub/x%23y"), "url.encoded_delimiter");
        assert_eq!(c("/admin/%2e%2e/mcp"), "url.encoded_dot");
        assert_eq!(c("/pub/%2E%2E/secret"), "url.encoded_dot");
        assert_eq!(c("/pub/%252e%252e/secret"), "url.double_encoding");
        assert_eq!(c("/pub/%25"), "url.double_encoding");
        assert_eq!(c("/pub/a%00.txt"), "url.encoded_control");
        assert_eq!(c("/pub/a%0d%0aX:1"), "url.encoded_control");
        assert_eq!(c("/pub/a%7f"), "url.encoded_control");
        assert_eq!(c("/pub/a%C2%85"), "url.encoded_control");
        assert_eq!(c("/pub/%"), "url.bad_percent");
        assert_eq!(c("/pub/%2"), "url.bad_percent");
        assert_eq!(c("/pub/%zz"), "url.bad_percent");
        assert_eq!(c("/pub/%+1"), "url.bad_percent");
        assert_eq!(c("/pub/%C0%AE%C0%AE/secret"), "url.bad_utf8");
        assert_eq!(c("/pub/%c0%af"), "url.bad_utf8");
        assert_eq!(c("/pub/%E0%80%AE"), "url.bad_utf8");
        assert_eq!(c("/pub/%ED%A0%80"), "url.bad_utf8");
        assert_eq!(c("/pub/%C3"), "url.bad_utf8");
        assert_eq!(c("/pub/%C3x"), "url.bad_utf8");
        assert_eq!(c("/pub/%FF"), "url.bad_utf8");
        assert_eq!(c("/pub/%EF%BC%8E%EF%BC%8E%EF%BC%8Fsecret"), "url.lookalike");
        assert_eq!(c("/pub/%E2%80%A5/secret"), "url.lookalike");
        assert_eq!(c("/pub/%E2%88%95secret"), "url.lookalike");
        assert_eq!(c("/pub/..%C2%A5secret"), "url.lookalike");
        assert_eq!(c("/pub/..;/secret"), "url.path_parameter");
        assert_eq!(c("/pub;x=1/a"), "url.path_parameter");
        assert_eq!(c("/pub/..%3B/secret"), "url.path_parameter");
        assert_eq!(c("/pub//secret"), "url.empty_segment");
        assert_eq!(c("//pub"), "url.empty_segment");
        assert_eq!(c("/pub/caf\u{e9}"), "url.non_ascii");
        assert_eq!(c("/pub/\u{ff0e}\u{ff0e}/x"), "url.non_ascii");
        assert_eq!(c("/pub/../secret.txt"), "url.dot_segment");
        assert_eq!(c("/pub/./secret.txt"), "url.dot_segment");
        assert_eq!(c("/../../mcp"), "url.dot_segment");
        assert_eq!(c("/admin/../mcp"), "url.dot_segment");
        assert_eq!(c("/pub/.."), "url.dot_segment");
        assert_eq!(c("/pub/..%20/secret"), "url.dot_segment");
        assert_eq!(c("/pub/.%20./secret"), "url.dot_segment");
        // Unicode spaces and ignorable characters that servers map to a space or drop.
        for hidden in ["%E3%80%80", "%C2%A0", "%C2%AD", "%E2%80%8B", "%EF%BB%BF"] {
            assert_eq!(c(&format!("/mcp/..{hidden}/admin")), "url.dot_segment");
            assert_eq!(c(&format!("/mcp/.{hidden}./admin")), "url.dot_segment");
        }
        // Not a dot segment: a dot beside a letter stays a name.
        assert!(HttpUrl::parse_canonical("https://h.example/a/..%C3%A9/b").is_ok());
        assert_eq!(c("/pub\\..\\secret"), "url.backslash");
        assert_eq!(path_code("http://127.0.0.1:18408\\pub"), "url.backslash");
        // The `url` crate strips tabs and newlines and resolves what is left; the raw bytes
        // are refused first.
        assert_eq!(c("/pub/.\t./secret"), "url.characters");
        assert_eq!(c("/pub/.\n./secret"), "url.characters");
        // An empty authority would let the `url` crate read the first path segment as host.
        assert_eq!(path_code("http:///127.0.0.1/pub"), "url.no_host");
        assert_eq!(path_code("http:127.0.0.1/pub"), "url.not_absolute");
    }

    #[test]
    fn dot_segments_name_their_normal_form() {
        let e = |s: &str| match HttpUrl::parse_request(s).unwrap_err() {
            ProtocolError::Url(e) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            e("http://127.0.0.1:18407/admin/../mcp?x=1").normal_form(),
            Some("http://127.0.0.1:18407/mcp")
        );
        assert_eq!(
            e("http://127.0.0.1:18407/../../mcp").normal_form(),
            Some("http://127.0.0.1:18407/mcp")
        );
        assert_eq!(
            e("http://h.example/a/b/./c/..").normal_form(),
            Some("http://h.example/a/b/")
        );
        assert_eq!(e("http://h.example/a/..%20/b").normal_form(), None);
        // Not normal, but nothing strict: the normal form is named, and only
        // `parse_normalized` accepts it.
        let u = "http://h.example/%7Euser";
        assert_eq!(e(u).normal_form(), Some("http://h.example/~user"));
        assert_eq!(e(u).code(), "url.not_normal");
        assert!(HttpUrl::parse_normalized(u).is_ok());
        // The origin may be in any spelling; the query is dropped and not checked.
        let r = HttpUrl::parse_request("HTTP://H.example:80/mcp?a=/../b&c=%2F%00").unwrap();
        assert_eq!(r.as_str(), "http://h.example/mcp");
    }

    /// A query never reaches the path: the path ends at the first raw `?`, an encoded `?`
    /// is refused, and what follows `?` is not matched.
    #[test]
    fn a_query_cannot_smuggle_path_bytes() {
        let p = UrlPrefix::parse("https://h.example/pub").unwrap();
        for (url, ok) in [
            ("https://h.example/pub?/../secret", true),
            ("https://h.example/pub/a?x=..%2F..%2Fsecret", true),
            ("https://h.example/secret?/pub", false),
            ("https://h.example/secret?https://h.example/pub", false),
        ] {
            let u = HttpUrl::parse_request(url).unwrap();
            assert_eq!(p.matches(&u), ok, "{url}");
            assert!(!u.path().contains('?'));
        }
        assert!(HttpUrl::parse_request("https://h.example/pub%3F/../secret").is_err());
        assert!(HttpUrl::parse_request("https://h.example/pub%3f").is_err());
    }

    #[test]
    fn prefix_is_within_on_segment_boundaries() {
        let w = |n: &str, wide: &str| {
            UrlPrefix::parse(n)
                .unwrap()
                .is_within(&UrlPrefix::parse(wide).unwrap())
        };
        assert!(w("https://a.example/mcp", "https://a.example/mcp"));
        assert!(w("https://a.example/mcp/tools", "https://a.example/mcp"));
        assert!(w("https://a.example/mcp/", "https://a.example/mcp"));
        assert!(w("https://a.example/mcp/x", "https://a.example/mcp/"));
        assert!(w("https://a.example/mcp", "https://a.example/"));
        assert!(w("https://a.example/", "https://a.example"));
        assert!(!w("https://a.example/mcpx", "https://a.example/mcp"));
        assert!(!w("https://a.example/mcp", "https://a.example/mcp/"));
        assert!(!w("https://a.example/", "https://a.example/mcp"));
        assert!(!w("https://b.example/mcp", "https://a.example/mcp"));
        assert!(!w("http://a.example/mcp", "https://a.example/mcp"));
        assert!(!w("https://a.example:8443/mcp", "https://a.example/mcp"));
    }

    #[test]
    fn within_means_every_matched_url_is_matched_by_the_wider_prefix() {
        let prefixes = [
            "https://a.example/",
            "https://a.example/mcp",
            "https://a.example/mcp/",
            "https://a.example/mcp/tools",
            "https://a.example/mcpx",
            "https://b.example/mcp",
        ];
        let urls = [
            "https://a.example/",
            "https://a.example/mcp",
            "https://a.example/mcp/",
            "https://a.example/mcp/tools",
            "https://a.example/mcp/tools/x",
            "https://a.example/mcpx",
            "https://b.example/mcp/x",
        ];
        for n in prefixes {
            for wide in prefixes {
                let (n, wide) = (
                    UrlPrefix::parse(n).unwrap(),
                    UrlPrefix::parse(wide).unwrap(),
                );
                if !n.is_within(&wide) {
                    continue;
                }
                for u in urls {
                    let u = HttpUrl::parse_normalized(u).unwrap();
                    if n.matches(&u) {
                        assert!(wide.matches(&u), "{n} within {wide} but {u} escapes");
                    }
                }
            }
        }
    }
}
