//! Placeholders: what an agent started by `cada-parent run` holds where its SDK insists on a
//! token string (`GITHUB_TOKEN=cada:github`), and the one rule the local secrets endpoint
//! applies to them before a request goes to the enclave.
//!
//! A placeholder is `cada:` followed by a secret name (`[a-z0-9][a-z0-9_-]{0,63}`, the name
//! ending at the first other character). It is recognised in any letter case (`CADA:Stripe`:
//! secret names are lower case, so that is unambiguous) and through encodings, decoded
//! repeatedly until nothing changes (at most [`MAX_DECODE_ROUNDS`] rounds, each linear in the
//! input, which the endpoint bounds): percent-encoding (`cada%253Astripe`), JSON `\uXXXX`
//! escapes (`cada\u003astripe`) and quoted-printable (`cada=3Astripe`, soft line breaks),
//! also mixed (adversary22 finding 6). It is not a credential: the enclave injects the
//! real one by the secret's owner-signed usage, whatever the agent sent. So the endpoint
//!
//! * refuses a request to secret `S` that carries the placeholder of any other secret —
//!   in a header (also inside `Basic` credentials and percent-encoded), the path or query
//!   (raw or percent-decoded) or the body (raw or percent-decoded) — with
//!   [`PLACEHOLDER_ELSEWHERE`]: the agent mixed up its configuration, or something tries to
//!   make one secret's handle travel to another secret's upstream;
//! * removes every header that carries `cada:S` (typically `Authorization: Bearer cada:S`),
//!   so that the upstream never receives the placeholder where the credential goes. A
//!   placeholder of `S` in the path, query or body is left as it is (the enclave injects
//!   headers only).
//!
//! A body that quotes another secret's placeholder as text is refused too: placeholders are
//! configuration, not content.
//!
//! The matcher itself is [`cada_secrets::placeholder`], shared with the enclave, which
//! applies the same rule to whatever reaches it.
use axum::http::{HeaderMap, HeaderName};
use cada_secrets::placeholder::{all_names, header_names, other};
pub use cada_secrets::placeholder::{placeholder, MAX_DECODE_ROUNDS, PREFIX};

use crate::ParentError;

/// The stable code of the refusal.
pub const PLACEHOLDER_ELSEWHERE: &str = cada_secrets::placeholder::PLACEHOLDER_ELSEWHERE;

fn refusal(secret: &str, other: &[u8], place: &str) -> ParentError {
    ParentError::Refused {
        code: PLACEHOLDER_ELSEWHERE,
        message: format!(
            "the request to secret {secret} carries the placeholder {PREFIX}{} in its {place}; \
             a placeholder stands for its own secret only: send requests for {} to its own \
             path (/{}/...) and check the agent's .env.cada",
            String::from_utf8_lossy(other),
            String::from_utf8_lossy(other),
            String::from_utf8_lossy(other),
        ),
    }
}

/// Applies the placeholder rule to a request for `secret` (see the module doc): refuses it
/// with [`PLACEHOLDER_ELSEWHERE`] when it carries another secret's placeholder, else removes
/// the headers that carry `secret`'s own and returns how many it removed.
pub fn check_and_strip(
    secret: &str,
    headers: &mut HeaderMap,
    path_and_query: &str,
    body: &[u8],
) -> Result<usize, ParentError> {
    let mut strip: Vec<HeaderName> = Vec::new();
    for (name, value) in headers.iter() {
        let found = header_names(value.as_bytes());
        if let Some(o) = other(secret, &found) {
            return Err(refusal(secret, o, &format!("{name} header")));
        }
        if !found.is_empty() && !strip.contains(name) {
            strip.push(name.clone());
        }
    }
    let found = all_names(path_and_query.as_bytes());
    if let Some(o) = other(secret, &found) {
        return Err(refusal(secret, o, "path or query"));
    }
    let found = all_names(body);
    if let Some(o) = other(secret, &found) {
        return Err(refusal(secret, o, "body"));
    }
    let mut removed = 0;
    for name in strip {
        removed += headers.get_all(&name).iter().count();
        headers.remove(&name);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use base64::Engine as _;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn code(e: &ParentError) -> &'static str {
        match e {
            ParentError::Refused { code, .. } => code,
            _ => "other",
        }
    }

    #[test]
    fn the_own_placeholder_header_is_stripped_and_others_kept() {
        let mut h = headers(&[
            ("authorization", "Bearer cada:github"),
            ("x-api-key", "cada:github"),
            ("accept", "application/json"),
        ]);
        let n = check_and_strip("github", &mut h, "/repos/acme/app?state=open", b"{}").unwrap();
        assert_eq!(n, 2);
        assert!(h.get("authorization").is_none() && h.get("x-api-key").is_none());
        assert_eq!(h.get("accept").unwrap(), "application/json");
    }

    #[test]
    fn basic_and_percent_encoded_own_placeholders_are_stripped() {
        let basic = base64::engine::general_purpose::STANDARD.encode("x-access-token:cada:github");
        let mut h = headers(&[
            ("authorization", &format!("Basic {basic}")),
            ("cookie", "t=cada%3Agithub"),
        ]);
        assert_eq!(check_and_strip("github", &mut h, "/", b"").unwrap(), 2);
        assert!(h.is_empty());
    }

    #[test]
    fn another_secrets_placeholder_is_refused_wherever_it_is() {
        let basic = base64::engine::general_purpose::STANDARD.encode("user:cada:stripe");
        type Case<'a> = (Vec<(&'a str, String)>, &'a str, &'a [u8], &'a str);
        let cases: Vec<Case> = vec![
            (
                vec![("authorization", "Bearer cada:stripe".into())],
                "/x",
                b"",
                "authorization header",
            ),
            (
                vec![("authorization", format!("Basic {basic}"))],
                "/x",
                b"",
                "authorization header",
            ),
            (
                vec![("x-token", "cada%3astripe".into())],
                "/x",
                b"",
                "x-token header",
            ),
            (vec![], "/x?key=cada:stripe", b"", "path or query"),
            (vec![], "/x?key=cada%3Astripe", b"", "path or query"),
            (vec![], "/cada:stripe/x", b"", "path or query"),
            (vec![], "/x", br#"{"api_key":"cada:stripe"}"#, "body"),
            (vec![], "/x", b"api_key=cada%3Astripe", "body"),
            // The own placeholder beside another one does not excuse it.
            (
                vec![("authorization", "Bearer cada:github cada:github2".into())],
                "/x",
                b"",
                "authorization header",
            ),
        ];
        for (hs, target, body, place) in cases {
            let pairs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let mut h = headers(&pairs);
            let before = h.clone();
            let e = check_and_strip("github", &mut h, target, body).unwrap_err();
            assert_eq!(code(&e), PLACEHOLDER_ELSEWHERE, "{target}");
            assert!(e.to_string().contains(place), "{e}");
            assert!(e.to_string().contains(PLACEHOLDER_ELSEWHERE), "{e}");
            assert_eq!(h, before, "nothing stripped on refusal");
        }
    }

    #[test]
    fn requests_without_placeholders_pass_unchanged() {
        let mut h = headers(&[("accept", "*/*"), ("authorization", "Basic !!notbase64")]);
        let before = h.clone();
        assert_eq!(
            check_and_strip(
                "github",
                &mut h,
                "/repos/acme/app/issues?q=cada",
                b"cada: plain text"
            )
            .unwrap(),
            0
        );
        assert_eq!(h, before);
        // The own placeholder in the query or body is left there.
        let mut h = HeaderMap::new();
        assert_eq!(
            check_and_strip("github", &mut h, "/x?t=cada:github", b"cada:github").unwrap(),
            0
        );
    }

    /// Random bytes in headers, targets and bodies: an answer each time, never a panic.
    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let alphabet = b"cada:%3A%3aBasic Y2FkYTpnaXRodWI= github stripe-x_0\xff\x80/?=&";
        for _ in 0..20_000 {
            let mut next = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                alphabet[usize::try_from(x % alphabet.len() as u64).unwrap()]
            };
            let body: Vec<u8> = (0..48).map(|_| next()).collect();
            let target: String = (0..32).map(|_| char::from(next() & 0x7f)).collect();
            let value: Vec<u8> = (0..32)
                .map(|_| next())
                .filter(u8::is_ascii_graphic)
                .collect();
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(&value) {
                h.insert("authorization", v);
            }
            let _ = check_and_strip("github", &mut h, &target, &body);
        }
    }

    /// Finding 6: other letter cases and encodings of another secret's placeholder.
    #[test]
    fn other_spellings_of_another_placeholder_are_refused() {
        type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a [u8]);
        let cases: Vec<Case> = vec![
            (vec![("x-key", "CADA:stripe")], "/x", b""),
            (vec![("x-key", "Cada:Stripe")], "/x", b""),
            (vec![("x-key", "cada%253Astripe")], "/x", b""),
            (vec![("x-key", "cada%25253astripe")], "/x", b""),
            (vec![("x-key", "cada\\u003Astripe")], "/x", b""),
            (vec![("cookie", "a=1; key=cada:stripe")], "/x", b""),
            (vec![], "/x?k=cada%253Astripe", b""),
            (vec![], "/x?k=CADA%3ASTRIPE", b""),
            (vec![], "/x", br#"{"key":"cada\u003astripe"}"#),
            (vec![], "/x", br#"{"key":"\u0063ada\u003A\u0073tripe"}"#),
            (vec![], "/x", b"--XX\r\n\r\ncada=3Astripe\r\n--XX--"),
            (vec![], "/x", b"cada=3Ast=\r\nripe"),
            (vec![], "/x", b"cada%3D3Astripe"),
            (vec![], "/x", b"k=cada%3Astripe&b=cafe"),
        ];
        for (hs, target, body) in cases {
            let mut h = headers(&hs);
            let e = check_and_strip("github", &mut h, target, body).unwrap_err();
            assert_eq!(code(&e), PLACEHOLDER_ELSEWHERE, "{hs:?} {target} {body:?}");
        }
        // The own placeholder in another spelling is stripped from headers.
        let mut h = headers(&[("authorization", "Bearer CADA:GitHub"), ("accept", "*/*")]);
        assert_eq!(check_and_strip("github", &mut h, "/", b"").unwrap(), 1);
        // Nesting deeper than MAX_DECODE_ROUNDS is not looked into (bounded work).
        let mut deep = String::from("cada:stripe");
        for _ in 0..=MAX_DECODE_ROUNDS {
            deep = deep.replace('%', "%25").replace(':', "%3A");
        }
        assert!(check_and_strip("github", &mut HeaderMap::new(), "/", deep.as_bytes()).is_ok());
    }
}
