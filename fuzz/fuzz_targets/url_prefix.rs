//! The URL prefix matcher (`cada_protocol::url`: `UrlPrefix`, `HttpUrl`) and the resource
//! grant matcher (`cada_protocol::resource_uri`: `ResourcePrefix`, `ResourceUri`), checked
//! against an independent oracle of how a lenient server reads a path.
//!
//! Input: a mode byte, then UTF-8 text. Mode bit 0: resource URIs instead of http(s) URLs;
//! bit 1: the candidate is the prefix followed by the rest of the text (so that most inputs
//! are "under" the prefix and the suffix explores traversal spellings), else prefix and
//! candidate are separated by the first newline; bit 2: the candidate is also read as a
//! resource template (`completion/complete`).
//!
//! Oracle (written here, sharing no code with the matchers): take the raw path, decode
//! percent-encoding repeatedly until nothing changes, read `\` as `/`, repeat both until
//! stable, then remove dot segments (RFC 3986 §5.2.4). Whatever a matcher admits under a
//! prefix, the oracle must also place under that prefix's path on a segment boundary (for
//! resource URIs both for a server that cuts off a query at `?` and for one that does not),
//! with an equal origin where both are plain `host[:port]`. Also: parsers agree with each
//! other (a canonical URL normalises to itself, a request URL's path is already normal, a
//! prefix matches itself) and nothing panics.
#![no_main]

use cada_protocol::resource_uri::{ResourcePrefix, ResourceUri};
use cada_protocol::url::{HttpUrl, UrlPrefix};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        cada_fuzz::write_seeds_if_asked("url_prefix");
    },
    |data: &[u8]| {
        let Some((&mode, rest)) = data.split_first() else {
            return;
        };
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        let (prefix, candidate) = if mode & 2 != 0 {
            // The prefix is the first line; the candidate continues it.
            let (p, suffix) = text.split_once('\n').unwrap_or((text, ""));
            (p.to_owned(), format!("{p}{suffix}"))
        } else {
            let (p, c) = text.split_once('\n').unwrap_or((text, ""));
            (p.to_owned(), c.to_owned())
        };
        if mode & 1 == 0 {
            http(&prefix, &candidate);
        } else {
            resource(&prefix, &candidate, mode & 4 != 0);
        }
    }
);

fn http(prefix: &str, candidate: &str) {
    // The parsers agree with each other.
    let normalized = HttpUrl::parse_normalized(candidate);
    if let Ok(c) = HttpUrl::parse_canonical(candidate) {
        assert_eq!(normalized.as_ref().ok(), Some(&c), "{candidate:?}");
        assert_eq!(
            c.as_str(),
            candidate.split_once('?').map_or(candidate, |(a, _)| a)
        );
    }
    if let Ok(r) = HttpUrl::parse_request(candidate) {
        assert_eq!(normalized.as_ref().ok(), Some(&r), "{candidate:?}");
        let raw = raw_http_path(candidate).unwrap_or("");
        assert!(raw.is_empty() || raw == r.path(), "{candidate:?}");
    }
    let Ok(p) = UrlPrefix::parse(prefix) else {
        return;
    };
    let own = HttpUrl::parse_normalized(p.as_str()).expect("a prefix parses as a URL");
    assert!(p.matches(&own), "{prefix:?} does not match itself");
    let Ok(u) = normalized else {
        return;
    };
    if !p.matches(&u) {
        return;
    }
    // Admitted: the oracle must agree, from the raw input bytes.
    let pp = oracle(raw_http_path(prefix).unwrap_or(""));
    let up = oracle(raw_http_path(candidate).unwrap_or(""));
    assert!(
        under(&pp, &up),
        "{candidate:?} admitted under {prefix:?}, but a lenient server reads {:?} outside {:?}",
        String::from_utf8_lossy(&up),
        String::from_utf8_lossy(&pp)
    );
    if let (Some(a), Some(b)) = (plain_origin(prefix), plain_origin(candidate)) {
        assert_eq!(
            a, b,
            "{candidate:?} admitted under {prefix:?} from another origin"
        );
    }
}

fn resource(prefix: &str, candidate: &str, template: bool) {
    if let Ok(u) = ResourceUri::parse(candidate) {
        // Never normalised: what parses is exactly what was given.
        assert_eq!(u.as_str(), candidate);
    }
    let Ok(p) = ResourcePrefix::parse(prefix) else {
        return;
    };
    assert!(p.matches_str(prefix), "{prefix:?} does not match itself");
    let admitted = p.matches_str(candidate);
    if admitted {
        check_resource(prefix, candidate);
    }
    if template && p.matches_template(candidate) {
        let literal = candidate.split_once('{').map_or(candidate, |(l, _)| l);
        check_resource(prefix, literal);
    }
}

/// `candidate` was admitted under the resource grant `prefix`.
fn check_resource(prefix: &str, candidate: &str) {
    match (hier_parts(prefix), hier_parts(candidate)) {
        (Some((pb, pp)), Some((ub, up))) => {
            assert_eq!(pb, ub, "{candidate:?} admitted under {prefix:?}");
            // A server that reads the whole rest as path, and one that cuts off a query.
            let cut = |s: &str| s.split('?').next().unwrap_or("").to_owned();
            for (p, u) in [(pp.to_owned(), up.to_owned()), (cut(pp), cut(up))] {
                let (po, uo) = (oracle(&p), oracle(&u));
                assert!(
                    under(&po, &uo),
                    "{candidate:?} admitted under {prefix:?}, but a lenient server reads {:?} \
                     outside {:?}",
                    String::from_utf8_lossy(&uo),
                    String::from_utf8_lossy(&po)
                );
            }
        }
        // Opaque grants match exactly.
        _ => assert_eq!(prefix, candidate),
    }
}

/// The raw path of an http(s) URL: after `scheme://authority`, up to `?` or `#`.
fn raw_http_path(s: &str) -> Option<&str> {
    let (_, rest) = s.split_once("://")?;
    let start = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let path = &rest[start..];
    let end = path.find(['?', '#']).unwrap_or(path.len());
    Some(&path[..end])
}

/// `scheme://host[:port]` lower-cased with the default port dropped, when the authority is
/// plain (letters, digits, dots, hyphens, an optional numeric port).
fn plain_origin(s: &str) -> Option<String> {
    let (scheme, rest) = s.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let auth = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let (host, port) = match auth.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (auth, None),
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return None;
    }
    let port = port
        .map(|p| p.trim_start_matches('0'))
        .filter(|p| !((scheme == "http" && *p == "80") || (scheme == "https" && *p == "443")));
    Some(match port {
        Some(p) => format!("{scheme}://{}:{p}", host.to_ascii_lowercase()),
        None => format!("{scheme}://{}", host.to_ascii_lowercase()),
    })
}

/// `(scheme:[//authority], rest)` of a hierarchical resource URI.
fn hier_parts(s: &str) -> Option<(String, &str)> {
    let (scheme, rest) = s.split_once(':')?;
    if let Some(after) = rest.strip_prefix("//") {
        let end = after.find(['/', '?']).unwrap_or(after.len());
        Some((
            format!("{}://{}", scheme.to_ascii_lowercase(), &after[..end]),
            &after[end..],
        ))
    } else if rest.starts_with('/') {
        Some((format!("{}:", scheme.to_ascii_lowercase()), rest))
    } else {
        None
    }
}

/// How a lenient server could read a path: percent-decoded until stable, `\` read as `/`
/// (both repeated until nothing changes), then dot segments removed (RFC 3986 §5.2.4).
fn oracle(path: &str) -> Vec<u8> {
    let mut p = path.as_bytes().to_vec();
    loop {
        let mut next = decode_once(&p);
        for b in &mut next {
            if *b == b'\\' {
                *b = b'/';
            }
        }
        if next == p {
            break;
        }
        p = next;
    }
    remove_dot_segments(&p)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_once(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// RFC 3986 §5.2.4, step by step on the input buffer.
fn remove_dot_segments(path: &[u8]) -> Vec<u8> {
    let mut input = path.to_vec();
    let mut output: Vec<u8> = Vec::new();
    while !input.is_empty() {
        if input.starts_with(b"../") {
            input.drain(..3);
        } else if input.starts_with(b"./") {
            input.drain(..2);
        } else if input.starts_with(b"/./") {
            input.drain(..2);
        } else if input == b"/." {
            input = b"/".to_vec();
        } else if input.starts_with(b"/../") {
            input.drain(..3);
            truncate_last_segment(&mut output);
        } else if input == b"/.." {
            input = b"/".to_vec();
            truncate_last_segment(&mut output);
        } else if input == b"." || input == b".." {
            input.clear();
        } else {
            let start = usize::from(input.first() == Some(&b'/'));
            let end = input[start..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(input.len(), |n| n + start);
            output.extend(input.drain(..end));
        }
    }
    output
}

fn truncate_last_segment(out: &mut Vec<u8>) {
    let cut = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
    out.truncate(cut);
}

/// Whether path `u` is `p` or lies below it on a segment boundary (an empty path is `/`).
fn under(p: &[u8], u: &[u8]) -> bool {
    let root: &[u8] = b"/";
    let p = if p.is_empty() { root } else { p };
    let u = if u.is_empty() { root } else { u };
    u == p || (u.starts_with(p) && (p.ends_with(b"/") || u.get(p.len()) == Some(&b'/')))
}
