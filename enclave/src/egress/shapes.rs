//! Whether an answer carries a credential of its own (adversary22 finding 9): endpoints that
//! mint credentials — token rotation, deploy tokens, ephemeral keys, API keys, OAuth
//! exchanges — would hand the agent a standing credential the owner never sealed. Such an
//! answer is refused (`secret.credential_in_answer`) unless the owner marked the path in the
//! usage's `credential_endpoints`.
//!
//! [`credential_shape`] looks for
//!
//! * JSON fields named like credentials — `access_token`, `refresh_token`, `id_token`,
//!   `client_secret`, `private_key`, `secret`, `api_key`, `token` (compared without case and
//!   without `_`/`-`, so `accessToken` and `api-key` count) — whose string value is at least
//!   [`MIN_FIELD_VALUE`] characters;
//! * well-known token formats anywhere: GitHub (`ghp_`, `gho_`, `ghs_`, `ghu_`, `ghr_`,
//!   `github_pat_`), GitLab (`glpat-`, `gldt-`), Stripe (`sk_`/`rk_`/`ek_` + `live_`/`test_`),
//!   Slack (`xoxa-`, `xoxb-`, `xoxp-`, `xoxr-`), AWS access key ids (`AKIA`/`ASIA` + 16),
//!   JWTs (`eyJ….eyJ….`) and PEM private keys.
//!
//! It is a heuristic: a credential in another shape (a GraphQL mutation's answer with its own
//! field names, a bare random string) passes. Grants are the first defence.
use std::sync::OnceLock;

use aho_corasick::AhoCorasick;

/// Shortest string value of a credential-named JSON field that counts as a credential.
pub const MIN_FIELD_VALUE: usize = 16;

/// JSON field names (lower case, without `_` and `-`) whose values are credentials.
const FIELDS: [&str; 8] = [
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "clientsecret",
    "privatekey",
    "secret",
    "apikey",
    "token",
];

/// Token formats: the prefix, the bytes the rest is made of, and its least length.
struct Format {
    prefix: &'static str,
    name: &'static str,
    tail: fn(u8) -> bool,
    min_tail: usize,
}

fn alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}
fn alnum_us(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}
fn alnum_dash(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}
fn upper_digit(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit()
}
fn any(_: u8) -> bool {
    true
}

const FORMATS: [Format; 23] = {
    const fn f(
        prefix: &'static str,
        name: &'static str,
        tail: fn(u8) -> bool,
        min: usize,
    ) -> Format {
        Format {
            prefix,
            name,
            tail,
            min_tail: min,
        }
    }
    [
        f("ghp_", "GitHub token", alnum, 20),
        f("gho_", "GitHub token", alnum, 20),
        f("ghs_", "GitHub token", alnum, 20),
        f("ghu_", "GitHub token", alnum, 20),
        f("ghr_", "GitHub token", alnum, 20),
        f("github_pat_", "GitHub token", alnum_us, 20),
        f("glpat-", "GitLab token", alnum_dash, 20),
        f("gldt-", "GitLab token", alnum_dash, 20),
        f("sk_live_", "Stripe key", alnum, 16),
        f("sk_test_", "Stripe key", alnum, 16),
        f("rk_live_", "Stripe key", alnum, 16),
        f("rk_test_", "Stripe key", alnum, 16),
        f("ek_live_", "Stripe key", alnum, 16),
        f("ek_test_", "Stripe key", alnum, 16),
        f("xoxa-", "Slack token", alnum_dash, 10),
        f("xoxb-", "Slack token", alnum_dash, 10),
        f("xoxp-", "Slack token", alnum_dash, 10),
        f("xoxr-", "Slack token", alnum_dash, 10),
        f("AKIA", "AWS access key id", upper_digit, 16),
        f("ASIA", "AWS access key id", upper_digit, 16),
        f("eyJ", "JWT", alnum_dash, 10),
        f("-----BEGIN ", "PEM private key", any, 0),
        f("-----BEGIN\t", "PEM private key", any, 0),
    ]
};

fn prefixes() -> Option<&'static AhoCorasick> {
    static AC: OnceLock<Option<AhoCorasick>> = OnceLock::new();
    AC.get_or_init(|| AhoCorasick::new(FORMATS.iter().map(|f| f.prefix)).ok())
        .as_ref()
}

/// What credential `text` (an answer body or header value) carries, named by its kind or
/// field, never quoting it; `None` if it looks like none.
pub fn credential_shape(text: &[u8]) -> Option<String> {
    if let Some(field) = json_field(text) {
        return Some(format!("a JSON field {field:?} holding a credential"));
    }
    format(text).map(|name| format!("a {name}"))
}

fn format(text: &[u8]) -> Option<&'static str> {
    let ac = prefixes()?;
    for m in ac.find_overlapping_iter(text) {
        let f = FORMATS.get(m.pattern().as_usize())?;
        let (start, end) = (m.start(), m.end());
        // A token starts at a boundary (`xghp_…` is not a GitHub token).
        if start > 0 && alnum_dash(text[start - 1]) && !f.prefix.starts_with('-') {
            continue;
        }
        let tail = text[end..].iter().take_while(|c| (f.tail)(**c)).count();
        let ok = match f.name {
            "AWS access key id" => tail == 16,
            "JWT" => jwt(&text[start..]),
            "PEM private key" => {
                let line = &text[end..text.len().min(end + 64)];
                line.windows(16).any(|w| w == b"PRIVATE KEY-----")
            }
            _ => tail >= f.min_tail,
        };
        if ok {
            return Some(f.name);
        }
    }
    None
}

/// `eyJ<≥10>.eyJ<≥10>.` (a JWS or JWE compact serialization whose header and payload are JSON).
fn jwt(t: &[u8]) -> bool {
    let seg = |t: &[u8]| -> Option<usize> {
        if !t.starts_with(b"eyJ") {
            return None;
        }
        let n = t.iter().take_while(|c| alnum_dash(**c)).count();
        (n >= 13 && t.get(n) == Some(&b'.')).then_some(n + 1)
    };
    seg(t).is_some_and(|n| seg(&t[n..]).is_some())
}

/// The first `"name": "value"` pair whose name is in [`FIELDS`] and whose value has at least
/// [`MIN_FIELD_VALUE`] characters. A linear scan of JSON-looking text, string by string.
fn json_field(b: &[u8]) -> Option<&'static str> {
    // The end (exclusive, after the closing quote) of the string starting at `at` (a quote).
    let string_end = |at: usize| -> Option<usize> {
        let mut i = at + 1;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'"' => return Some(i + 1),
                _ => i += 1,
            }
        }
        None
    };
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut i = 0;
    while let Some(off) = b.get(i..)?.iter().position(|c| *c == b'"') {
        let start = i + off;
        let end = string_end(start)?;
        let after = skip_ws(end);
        if b.get(after) != Some(&b':') {
            i = end;
            continue;
        }
        let v = skip_ws(after + 1);
        if b.get(v) != Some(&b'"') {
            i = v;
            continue;
        }
        let v_end = string_end(v)?;
        let key = &b[start + 1..end - 1];
        if key.len() <= 32 && v_end - v - 2 >= MIN_FIELD_VALUE {
            let norm: Vec<u8> = key
                .iter()
                .filter(|c| **c != b'_' && **c != b'-')
                .map(u8::to_ascii_lowercase)
                .collect();
            if let Some(f) = FIELDS.iter().find(|f| f.as_bytes() == norm.as_slice()) {
                return Some(f);
            }
        }
        i = v_end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_credentials_are_recognised() {
        for t in [
            r#"{"id":1,"token":"glpat-0123456789abcdefghij"}"#,
            r#"{"id":2,"username":"d","token":"gldt-0123456789abcdefgh"}"#,
            r#"{"id":"ephkey_1","secret":"ek_live_0123456789abcdef"}"#,
            r#"{"sid":"SK1","secret":"twsk_0123456789abcdef"}"#,
            r#"{"access_token":"doorkeeper-0123456789","token_type":"Bearer"}"#,
            r#"{"ok":true, "accessToken" : "xoxb-1-2-abcdefghij"}"#,
            r#"{"Client-Secret":"0123456789abcdefgh"}"#,
            "key ghp_0123456789abcdefghijABCDEFGHIJ012345 here",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
            "AKIAIOSFODNN7EXAMPLE",
            "x eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3In0.sig",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIE",
            "-----BEGIN PRIVATE KEY-----",
            "xoxp-0123456789-abc",
        ] {
            assert!(credential_shape(t.as_bytes()).is_some(), "{t}");
        }
    }

    #[test]
    fn ordinary_answers_pass() {
        for t in [
            r#"{"id":1,"title":"token rotation","body":"see ghp_ docs","next_page_token":"0123456789abcdefghij"}"#,
            r#"{"token":"short"}"#,
            r#"{"secret":false,"api_key":null,"token_type":"Bearer"}"#,
            r#"{"a":"\"token\":\"0123456789abcdefghij"}"#,
            "AKIAIOSFODNN7EXAMPLEX and xAKIAIOSFODNN7EXAMPLE",
            "-----BEGIN PUBLIC KEY-----\nMIIB",
            "eyJhbGciOi.notjwt",
            "sk_live_short",
            "unterminated \"token\": \"abc",
            "",
        ] {
            assert_eq!(credential_shape(t.as_bytes()), None, "{t}");
        }
    }
}
