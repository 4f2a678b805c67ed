//! Placeholders (`cada:<name>`): what an agent holds where its SDK insists on a token string,
//! and the one matcher that finds them in a request, shared by the parent's local secrets
//! endpoint and the enclave (adversary22b finding R2-3: the enclave's own check used an older,
//! narrower matching, so any caller of the daemon socket got past it). No I/O.
//!
//! A placeholder is `cada:` followed by a secret name (`[a-z0-9][a-z0-9_-]{0,63}`, the name
//! ending at the first other character). It is recognised in any letter case (`CADA:Stripe`:
//! secret names are lower case, so that is unambiguous) and through encodings, decoded
//! repeatedly until nothing changes (at most [`MAX_DECODE_ROUNDS`] rounds, each linear in the
//! input, which the callers bound): percent-encoding (`cada%253Astripe`), JSON `\uXXXX`
//! escapes (`cada\u003astripe`) and quoted-printable (`cada=3Astripe`, soft line breaks),
//! also mixed (adversary22 finding 6). In a header value, `Basic` credentials are decoded
//! and searched too ([`header_names`]).
use base64::Engine as _;

/// The stable code of the refusal of a request that carries another secret's placeholder.
pub const PLACEHOLDER_ELSEWHERE: &str = "secret.placeholder_elsewhere";
/// What every placeholder starts with.
pub const PREFIX: &str = "cada:";
/// Longest secret name.
const MAX_NAME: usize = 64;
/// Largest `Basic` credentials decoded (bytes of base64).
const MAX_BASIC: usize = 8 * 1024;
/// Most decoding rounds of one value (a fourth level of nested encoding is not looked into;
/// the enclave's URL rules refuse `%25` in paths anyway).
pub const MAX_DECODE_ROUNDS: usize = 4;

/// The placeholder of secret `name` (`cada:<name>`).
pub fn placeholder(name: &str) -> String {
    format!("{PREFIX}{name}")
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
}

/// Every placeholder name in `bytes` as written (lower case only), in order (a name is cut at
/// 64 bytes).
pub fn names(bytes: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    let p = PREFIX.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i + p.len() <= bytes.len() {
            let at = i;
            i += 1;
            if !bytes[at..].starts_with(p) {
                continue;
            }
            let start = at + p.len();
            let &first = bytes.get(start)?;
            if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
                continue;
            }
            let len = bytes[start..]
                .iter()
                .take_while(|b| is_name_byte(**b))
                .count();
            i = start + len;
            return Some(&bytes[start..start + len.min(MAX_NAME)]);
        }
        None
    })
}

/// `%XX` decoded (and `+` kept); an invalid escape stays as it is. `None` when there is no
/// `%` (nothing to decode).
pub fn percent_decoded(bytes: &[u8]) -> Option<Vec<u8>> {
    if !bytes.contains(&b'%') {
        return None;
    }
    let hex = |b: u8| {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    Some(out)
}

/// One round of decoding: `%XX` and JSON `\uXXXX` (as UTF-8), or with `qp` quoted-printable
/// `=XX` and soft line breaks (`=` CRLF / LF) instead (kept apart: `key=cafe` is no escape
/// in a form body). `None` when there is nothing to decode.
fn decode_round(bytes: &[u8], qp: bool) -> Option<Vec<u8>> {
    let esc = |b: &u8| {
        if qp {
            *b == b'='
        } else {
            matches!(b, b'%' | b'\\')
        }
    };
    if !bytes.iter().any(esc) {
        return None;
    }
    let hex = |b: Option<&u8>| {
        b.and_then(|b| char::from(*b).to_digit(16))
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if (b == b'%' && !qp) || (b == b'=' && qp) {
            if let (Some(h), Some(l)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        if b == b'=' && qp {
            if bytes.get(i + 1..i + 3) == Some(b"\r\n") {
                i += 3;
                continue;
            }
            if bytes.get(i + 1) == Some(&b'\n') {
                i += 2;
                continue;
            }
        }
        if b == b'\\' && !qp && matches!(bytes.get(i + 1), Some(b'u' | b'U')) {
            let code = (2..6).try_fold(0u32, |acc, k| {
                hex(bytes.get(i + k)).map(|d| acc * 16 + u32::from(d))
            });
            if let Some(c) = code.and_then(char::from_u32) {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                i += 6;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    Some(out)
}

/// Every placeholder name in `bytes` in any letter case and encoding (see the module doc),
/// lower-cased, in order of discovery: the value, then up to [`MAX_DECODE_ROUNDS`] rounds of
/// percent and JSON decoding, each form also read as quoted-printable. Use it for a URL
/// (path and query) or a body.
pub fn all_names(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut found: Vec<Vec<u8>> = Vec::new();
    let mut add = |form: &[u8]| {
        for n in names(form) {
            if !found.iter().any(|f| f == n) {
                found.push(n.to_vec());
            }
        }
    };
    let mut form = bytes.to_ascii_lowercase();
    for round in 0..=MAX_DECODE_ROUNDS {
        add(&form);
        if let Some(q) = decode_round(&form, true) {
            add(&q.to_ascii_lowercase());
        }
        if round == MAX_DECODE_ROUNDS {
            break;
        }
        match decode_round(&form, false) {
            Some(next) if next != form => form = next.to_ascii_lowercase(),
            _ => break,
        }
    }
    found
}

/// The decoded credentials of a `Basic` authorization value, if it is one.
fn basic_credentials(value: &[u8]) -> Option<Vec<u8>> {
    if !value.get(..6)?.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let b64 = value.get(6..)?.trim_ascii();
    if b64.len() > MAX_BASIC {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64))
        .ok()
}

/// The placeholder names in a header value: the value itself and, for `Basic`, its decoded
/// credentials (each in every spelling, [`all_names`]).
pub fn header_names(value: &[u8]) -> Vec<Vec<u8>> {
    let mut found = all_names(value);
    let basic = basic_credentials(value).or_else(|| {
        // `Basic` with a percent-encoded or upper-case scheme: decode once and look again.
        percent_decoded(value).and_then(|d| basic_credentials(&d))
    });
    if let Some(creds) = basic {
        found.extend(all_names(&creds));
    }
    found
}

/// The first name in `found` that is not `secret`'s: the placeholder a request for `secret`
/// must not carry.
pub fn other<'a>(secret: &str, found: &'a [Vec<u8>]) -> Option<&'a [u8]> {
    found
        .iter()
        .map(Vec::as_slice)
        .find(|n| *n != secret.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_found_on_boundaries() {
        let found: Vec<&[u8]> =
            names(b"Bearer cada:github, cada:stripe-2x; cada:; cada:Up cada:_x").collect();
        assert_eq!(found, vec![&b"github"[..], &b"stripe-2x"[..]]);
        assert_eq!(names(b"cada:").count(), 0);
        let long = format!("cada:{}", "a".repeat(100));
        assert_eq!(names(long.as_bytes()).next().unwrap().len(), 64);
        assert_eq!(placeholder("github"), "cada:github");
    }

    #[test]
    fn every_spelling_is_found_and_lower_cased() {
        for s in [
            &b"CADA:Stripe"[..],
            b"cada%253Astripe",
            b"cada\\u003Astripe",
            b"cada=3Ast=\r\nripe",
            b"cada%3D3Astripe",
        ] {
            assert_eq!(all_names(s), vec![b"stripe".to_vec()], "{s:?}");
        }
        let basic = base64::engine::general_purpose::STANDARD.encode("u:cada:stripe");
        assert_eq!(
            other("github", &header_names(format!("Basic {basic}").as_bytes())),
            Some(&b"stripe"[..])
        );
        assert_eq!(other("github", &all_names(b"cada:github")), None);
        assert!(all_names(b"cada: plain text").is_empty());
    }

    #[test]
    fn percent_decoding_keeps_bad_escapes() {
        assert_eq!(percent_decoded(b"a%3ab%zz%4"), Some(b"a:b%zz%4".to_vec()));
        assert_eq!(percent_decoded(b"plain"), None);
    }
}
