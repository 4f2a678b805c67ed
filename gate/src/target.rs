//! The request target the gate authorizes and forwards: exactly the bytes that arrived,
//! held to the one normal form of [`cada_protocol::url`] (the rule the enclave applies
//! before it signs an `htu`). A target that is not already normal is refused, never
//! normalized: every server decodes and resolves paths its own way, so only a target that
//! all of them read alike is forwarded, byte for byte, below the upstream's base path.
//! What is normal is the protocol's rule; this module only maps it to HTTP.
use axum::http::{StatusCode, Uri};
use cada_protocol::url::{HttpUrl, UrlPrefix};
use cada_protocol::ProtocolError;

use crate::refusal::Refused;

/// Stable code of a request whose target is not in normal form (400).
pub const NOT_NORMAL: &str = "request.url_not_normal";

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

fn refusal(target: &str, why: &str) -> Refused {
    Refused::gate(
        StatusCode::BAD_REQUEST,
        NOT_NORMAL,
        format!(
            "the request target {:?} is not in the normal form every CADA component uses, so \
             the gate would not know how the server reads it: {why}; send the target exactly \
             as the proof's htu names it",
            clip(target)
        ),
    )
}

fn explain(e: &ProtocolError) -> String {
    match e {
        ProtocolError::Url(u) => format!("{u} ({})", u.code()),
        other => other.to_string(),
    }
}

/// The request's target as it arrived: origin form (`/path?query`), the bytes of the
/// request line. An absolute-form (`http://host/path`), authority-form or `*` target is
/// refused: what the server would make of it is not the gate's to guess.
pub fn origin_form(uri: &Uri) -> Result<&str, Refused> {
    let target = uri.path_and_query().map_or("", |p| p.as_str());
    if uri.scheme().is_some() || uri.authority().is_some() || !target.starts_with('/') {
        return Err(refusal(
            &uri.to_string(),
            "only an origin-form target (/path?query) is accepted",
        ));
    }
    Ok(target)
}

/// The URL a proof for `target` must name: `base` (the public URL, `scheme://host[:port]
/// [/prefix]` with its origin normalized, no trailing slash) followed by `target` (or an
/// original URI reported by a trusted proxy), refused unless its path is already in normal
/// form. The query is part of the target but not of the match.
pub fn request_url(base: &str, target: &str) -> Result<String, Refused> {
    if !target.starts_with('/') {
        return Err(refusal(target, "the target must start with /"));
    }
    let url = format!("{base}{target}");
    HttpUrl::parse_canonical(&url)
        .map(|_| url)
        .map_err(|e| refusal(target, &explain(&e)))
}

/// Where an admitted `target` is forwarded: the upstream's base URL (normal form, no
/// trailing slash) followed by the target's exact bytes. Checked once more: the result must
/// be normal and lie under the base, so that no target climbs out of the base path.
pub fn upstream_url(upstream: &str, target: &str) -> Result<String, Refused> {
    let out = format!("{upstream}{target}");
    let under = UrlPrefix::parse(upstream)
        .ok()
        .zip(HttpUrl::parse_canonical(&out).ok())
        .is_some_and(|(base, url)| base.matches(&url));
    if under {
        Ok(out)
    } else {
        Err(refusal(
            target,
            &format!("below the upstream {upstream} it would not stay under its path"),
        ))
    }
}

/// Checks `--upstream` or `--public-url` at start-up: an http(s) URL with a host, in normal
/// form, without query or fragment; returns it without a trailing slash.
pub fn base_url(flag: &str, s: &str) -> Result<String, crate::GateError> {
    let usage = |why: String| {
        crate::GateError::Usage(format!(
            "{flag} {s}: {why} (an http(s) URL with a host, in normal form, without query, \
             fragment or user, e.g. http://127.0.0.1:9000 or https://mcp.example.com/base)"
        ))
    };
    let prefix = UrlPrefix::parse(s).map_err(|e| usage(explain(&e)))?;
    Ok(prefix.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_origin_form_targets_pass() {
        let u: Uri = "/mcp?x=1".parse().unwrap();
        assert_eq!(origin_form(&u).unwrap(), "/mcp?x=1");
        for bad in ["http://evil.example/mcp", "*"] {
            let u: Uri = bad.parse().unwrap();
            assert_eq!(origin_form(&u).unwrap_err().code, NOT_NORMAL, "{bad}");
        }
    }

    #[test]
    fn the_url_is_the_base_and_the_exact_target() {
        assert_eq!(
            request_url("http://127.0.0.1:8402", "/mcp?q=%2F").unwrap(),
            "http://127.0.0.1:8402/mcp?q=%2F"
        );
        assert_eq!(
            request_url("https://g.example/tools", "/mcp").unwrap(),
            "https://g.example/tools/mcp"
        );
        // Dot segments are refused, not resolved (the protocol's rule decides the rest).
        for bad in ["/admin/../mcp", "/./mcp", "mcp", "/%6Dcp"] {
            let r = request_url("http://127.0.0.1:8402", bad).unwrap_err();
            assert_eq!(
                (r.status, r.code.as_str()),
                (StatusCode::BAD_REQUEST, NOT_NORMAL)
            );
            assert!(r.message.contains(&format!("{bad:?}")), "{}", r.message);
        }
        // A base prefix cannot be climbed out of.
        assert!(request_url("https://g.example/tools", "/../mcp").is_err());
    }

    #[test]
    fn forwarded_below_the_upstream_base() {
        assert_eq!(
            upstream_url("http://127.0.0.1:18900/base", "/mcp?x").unwrap(),
            "http://127.0.0.1:18900/base/mcp?x"
        );
        assert_eq!(
            upstream_url("http://127.0.0.1:18900", "/mcp").unwrap(),
            "http://127.0.0.1:18900/mcp"
        );
        for bad in ["/../../mcp", "/..", "/a/../../x"] {
            assert_eq!(
                upstream_url("http://127.0.0.1:18900/base", bad)
                    .unwrap_err()
                    .code,
                NOT_NORMAL,
                "{bad}"
            );
        }
    }

    #[test]
    fn start_up_urls_must_be_normal() {
        assert_eq!(
            base_url("--upstream", "http://127.0.0.1:9000/").unwrap(),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            base_url("--upstream", "http://127.0.0.1:9000/base").unwrap(),
            "http://127.0.0.1:9000/base"
        );
        for bad in [
            "http://127.0.0.1:9000/a/../b",
            "HTTP://127.0.0.1:9000",
            "http://127.0.0.1:9000/?q",
            "ftp://h",
            "http://u@h/",
        ] {
            assert!(base_url("--upstream", bad).is_err(), "{bad}");
        }
    }
}
