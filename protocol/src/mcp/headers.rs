//! What the HTTP headers of an MCP request may say about its JSON-RPC body: one rule for
//! every CADA component that reads a body before a server does (`cada-gate` as a proxy and
//! in forward auth, `cada-parent proxy` before it asks the enclave to sign, `cada-verify
//! serve` when the resource server passes the headers on).
//!
//! A checker and a server must read the same JSON from the same bytes. CADA reads a body as
//! UTF-8 (RFC 8259 §8.1: JSON exchanged between systems is UTF-8; `application/json`
//! registers no `charset` parameter), so a header that tells the server to read the bytes
//! otherwise is refused, never forwarded:
//!
//! * [`check_content_type`]: exactly one `Content-Type`, `application/json` (any case), with
//!   no parameter or only `charset=utf-8` (name and value in any case, the value quoted or
//!   not). Another charset (`utf-7`, where `+ACI-` is `"`; `utf-16`; `shift_jis` …), a
//!   second charset, any other parameter, another media type (`application/json-seq`,
//!   `text/json`) or a second header: [`CONTENT_TYPE`].
//! * [`check_content_encoding`]: no `Content-Encoding`, or exactly one saying `identity`.
//!   A compressed body would be checked as sent and read decoded: [`CONTENT_ENCODING`].
//! * [`check_param_headers`]: MCP 2026-07-28 lets a server mark tool parameters
//!   (`x-mcp-header` in the tool's `inputSchema`) whose values clients mirror into
//!   `Mcp-Param-{Name}` headers, for intermediaries that route on them. A checker without the
//!   tool's schema cannot know which parameter a header mirrors, so it ties each header to
//!   the body by name: the body must be one `tools/call` whose `arguments` hold exactly one
//!   property named `{Name}` (ASCII case-insensitive, reachable through objects only, as the
//!   specification requires of annotated parameters), a string, an integer or a boolean, and
//!   the header (decoded when it is `=?base64?…?=`) must be that value as the specification
//!   writes it. Anything else: [`PARAM_HEADER`]. Where the checker does not see the body, no
//!   `Mcp-Param-*` header passes.
//!
//! Errors are [`ProtocolError::Header`], whose code is one of the constants here and whose
//! message says what to send instead; [`http_status`] gives the status to answer with.
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::Body;
use crate::ProtocolError;

/// Stable code: the `Content-Type` of a JSON-RPC body is missing, repeated, or not exactly
/// `application/json` (optionally `; charset=utf-8`).
pub const CONTENT_TYPE: &str = "mcp.content_type";
/// Stable code: a `Content-Encoding` other than `identity`.
pub const CONTENT_ENCODING: &str = "mcp.content_encoding";
/// Stable code: an `Mcp-Param-{Name}` header that is not the body's value of that
/// parameter (or cannot be compared with it).
pub const PARAM_HEADER: &str = "mcp.param_header";

/// The one `Content-Type` CADA components send with a JSON-RPC body.
pub const JSON: &str = "application/json";

/// Prefix of the MCP 2026-07-28 custom parameter headers (lower case, as header maps hold
/// names).
pub const PARAM_PREFIX: &str = "mcp-param-";

/// Most `Mcp-Param-*` headers one request may carry.
pub const MAX_PARAM_HEADERS: usize = 32;

/// Longest `Mcp-Param-*` value read (before Base64 decoding).
pub const MAX_PARAM_VALUE: usize = 8 * 1024;

/// Largest integer an `Mcp-Param-*` header may mirror (JavaScript's safe range).
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// The HTTP status for a refusal of this module: 415 for the body's media type or coding,
/// 400 for everything else.
pub fn http_status(e: &ProtocolError) -> u16 {
    match e.code() {
        CONTENT_TYPE | CONTENT_ENCODING => 415,
        _ => 400,
    }
}

fn refuse(code: &'static str, detail: impl Into<String>) -> ProtocolError {
    ProtocolError::Header {
        code,
        detail: detail.into(),
    }
}

/// Up to 80 characters of a header value, for a message.
fn shown(v: &[u8]) -> String {
    String::from_utf8_lossy(v).chars().take(80).collect()
}

/// Optional whitespace of RFC 9110 (SP, HTAB).
fn ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// Checks the `Content-Type` headers (every value, in order) of a request whose body is
/// read as JSON-RPC: exactly one, `application/json` with no parameter or only
/// `charset=utf-8`.
pub fn check_content_type<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(), ProtocolError> {
    let values: Vec<&[u8]> = values.into_iter().take(3).collect();
    let what = "send Content-Type: application/json (the body as UTF-8 JSON)";
    let value = match values.as_slice() {
        [] => {
            return Err(refuse(
                CONTENT_TYPE,
                format!("the JSON-RPC body has no Content-Type: {what}"),
            ))
        }
        [one] => *one,
        _ => {
            return Err(refuse(
                CONTENT_TYPE,
                format!(
                    "the request carries several Content-Type headers, and a server may read \
                     another than the one checked: {what}, once"
                ),
            ))
        }
    };
    match content_type_problem(value) {
        Ok(()) => Ok(()),
        Err(why) => Err(refuse(
            CONTENT_TYPE,
            format!(
                "Content-Type {:?} is not accepted for a JSON-RPC body ({why}); a server told \
                 another charset or media type would read other JSON than the one checked: \
                 {what}, with no parameter or only charset=utf-8",
                shown(value)
            ),
        )),
    }
}

/// What is wrong with one `Content-Type` value, if anything.
fn content_type_problem(value: &[u8]) -> Result<(), String> {
    let s = std::str::from_utf8(value)
        .ok()
        .filter(|s| s.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)))
        .ok_or("it is not visible ASCII")?;
    let s = ows(s);
    let (media, params) = match s.split_once(';') {
        Some((m, p)) => (ows(m), Some(p)),
        None => (s, None),
    };
    if !media.eq_ignore_ascii_case(JSON) {
        return Err(format!("the media type {media:?} is not application/json"));
    }
    let mut charset = false;
    for p in params.into_iter().flat_map(|p| p.split(';')) {
        let p = ows(p);
        let (name, value) = p
            .split_once('=')
            .ok_or_else(|| format!("the parameter {p:?} is not name=value"))?;
        if !name.eq_ignore_ascii_case("charset") {
            return Err(format!("the parameter {name:?} is not allowed"));
        }
        if charset {
            return Err("charset is named twice".into());
        }
        charset = true;
        let value = match value.strip_prefix('"') {
            Some(q) => match q.strip_suffix('"') {
                Some(inner) if !inner.contains(['"', '\\']) => inner,
                _ => return Err(format!("the quoted charset {value:?} is malformed")),
            },
            None => value,
        };
        if !value.eq_ignore_ascii_case("utf-8") {
            return Err(format!("the charset {value:?} is not utf-8"));
        }
    }
    Ok(())
}

/// Checks the `Content-Encoding` headers (every value, in order): none, or exactly one
/// `identity`. A body in another coding would be checked as sent and read decoded.
pub fn check_content_encoding<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(), ProtocolError> {
    let values: Vec<&[u8]> = values.into_iter().take(3).collect();
    match values.as_slice() {
        [] => Ok(()),
        [one]
            if std::str::from_utf8(one).is_ok_and(|v| ows(v).eq_ignore_ascii_case("identity")) =>
        {
            Ok(())
        }
        _ => Err(refuse(
            CONTENT_ENCODING,
            format!(
                "Content-Encoding {:?} is not accepted: the body is checked as it arrives and \
                 a server would read it decoded; send the body uncompressed, without \
                 Content-Encoding",
                values
                    .iter()
                    .map(|v| shown(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// The body headers of a request, given every header as (name, value): `Content-Encoding`
/// always ([`check_content_encoding`]); `Content-Type` ([`check_content_type`]) when the
/// request has a body (`has_body`), and when it carries one even without a body.
pub fn check_body_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    has_body: bool,
) -> Result<(), ProtocolError> {
    let mut types = Vec::new();
    let mut encodings = Vec::new();
    for (n, v) in headers {
        if n.eq_ignore_ascii_case("content-type") {
            types.push(v);
        } else if n.eq_ignore_ascii_case("content-encoding") {
            encodings.push(v);
        }
    }
    check_content_encoding(encodings)?;
    if has_body || !types.is_empty() {
        check_content_type(types)?;
    }
    Ok(())
}

/// Checks the `Mcp-Param-{Name}` headers of a request (given every header as (name, value))
/// against its body, `None` when the body is not seen (then any such header is refused).
/// See the module documentation for the rule.
pub fn check_param_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    body: Option<&Body>,
) -> Result<(), ProtocolError> {
    let mut params: Vec<(&str, &[u8])> = Vec::new();
    for (n, v) in headers {
        let Some(name) = n
            .get(..PARAM_PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(PARAM_PREFIX))
            .map(|_| &n[PARAM_PREFIX.len()..])
        else {
            continue;
        };
        if params.len() == MAX_PARAM_HEADERS {
            return Err(refuse(
                PARAM_HEADER,
                format!("at most {MAX_PARAM_HEADERS} Mcp-Param-* headers"),
            ));
        }
        if name.is_empty() {
            return Err(refuse(
                PARAM_HEADER,
                "an Mcp-Param- header must name its parameter (Mcp-Param-{Name})",
            ));
        }
        if params.iter().any(|(p, _)| p.eq_ignore_ascii_case(name)) {
            return Err(refuse(
                PARAM_HEADER,
                format!(
                    "send one Mcp-Param-{name} header, not several: a server or intermediary \
                     may read another copy than the one checked"
                ),
            ));
        }
        params.push((name, v));
    }
    let Some(first) = params.first() else {
        return Ok(());
    };
    let Some(body) = body else {
        return Err(refuse(
            PARAM_HEADER,
            format!(
                "Mcp-Param-{} cannot be compared with a body this check does not see; send the \
                 request through the gate as a proxy (or without Mcp-Param-* headers)",
                first.0
            ),
        ));
    };
    let arguments = match body.messages.as_slice() {
        [m] if !body.batch
            && m.more_calls.is_empty()
            && m.call.as_ref().is_some_and(|c| c.method == "tools/call") =>
        {
            m.arguments.as_deref()
        }
        _ => {
            return Err(refuse(
                PARAM_HEADER,
                format!(
                    "Mcp-Param-{} mirrors a tool argument, but the body is not one tools/call; \
                     send Mcp-Param-* headers only with a tools/call",
                    first.0
                ),
            ))
        }
    };
    for (name, value) in params {
        let header = param_value(name, value)?;
        let mut found = Vec::new();
        if let Some(a) = arguments {
            let mut de = serde_json::Deserializer::from_str(a.get());
            Walk {
                name,
                matched: false,
                out: &mut found,
            }
            .deserialize(&mut de)
            .map_err(|e| {
                refuse(
                    PARAM_HEADER,
                    format!("the arguments cannot be read for Mcp-Param-{name}: {e}"),
                )
            })?;
        }
        let leaf = match found.as_slice() {
            [one] => one,
            [] => {
                return Err(refuse(
                    PARAM_HEADER,
                    format!(
                        "Mcp-Param-{name}: the call's arguments hold no parameter named {name:?} \
                         (ASCII case aside), so the header cannot be checked against the body; \
                         name the header after the parameter it mirrors, or leave it out"
                    ),
                ))
            }
            _ => {
                return Err(refuse(
                    PARAM_HEADER,
                    format!(
                        "Mcp-Param-{name}: the call's arguments hold several parameters named \
                         {name:?} (ASCII case aside, at any depth), so the one it mirrors is \
                         not known"
                    ),
                ))
            }
        };
        let body_value = match leaf {
            Leaf::Str(s) => s.clone(),
            Leaf::Int(i) => i.to_string(),
            Leaf::Bool(b) => b.to_string(),
            Leaf::Other => {
                return Err(refuse(
                    PARAM_HEADER,
                    format!(
                        "Mcp-Param-{name}: the parameter is not a string, an integer (within \
                         ±(2^53-1)) or a boolean, so no header may mirror it; leave it out"
                    ),
                ))
            }
        };
        if header != body_value {
            return Err(refuse(
                PARAM_HEADER,
                format!(
                    "Mcp-Param-{name} ({:?}) is not the body's value of the parameter ({:?}): \
                     a server or intermediary reading the header would act on a value that \
                     was not checked; send the body's value",
                    header.chars().take(80).collect::<String>(),
                    body_value.chars().take(80).collect::<String>()
                ),
            ));
        }
    }
    Ok(())
}

/// The value an `Mcp-Param-*` header carries: plain visible ASCII, or `=?base64?…?=` over
/// UTF-8 (MCP 2026-07-28, "Value Encoding").
fn param_value(name: &str, v: &[u8]) -> Result<String, ProtocolError> {
    if v.len() > MAX_PARAM_VALUE {
        return Err(refuse(
            PARAM_HEADER,
            format!("Mcp-Param-{name} is longer than {MAX_PARAM_VALUE} bytes"),
        ));
    }
    let Some(text) = std::str::from_utf8(v)
        .ok()
        .filter(|s| s.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)))
    else {
        return Err(refuse(
            PARAM_HEADER,
            format!(
                "Mcp-Param-{name} holds characters other than visible ASCII: encode the value \
                 as =?base64?…?="
            ),
        ));
    };
    match text
        .strip_prefix("=?base64?")
        .and_then(|t| t.strip_suffix("?="))
    {
        None => Ok(text.to_owned()),
        Some(b64) => STANDARD
            .decode(b64)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| {
                refuse(
                    PARAM_HEADER,
                    format!("Mcp-Param-{name} is not padded Base64 of UTF-8 inside =?base64?…?="),
                )
            }),
    }
}

/// A value found under the name sought.
#[derive(Debug, PartialEq)]
enum Leaf {
    Str(String),
    Int(i64),
    Bool(bool),
    /// `null`, a number that is not a safe integer, an array or an object: nothing a header
    /// mirrors.
    Other,
}

/// Reads one JSON value, recording it when its member name was the one sought
/// (`matched`), and descending into objects (never arrays: a parameter a header mirrors is
/// reached through `properties` only). Every occurrence counts, repeated members too.
struct Walk<'n, 'o> {
    name: &'n str,
    matched: bool,
    out: &'o mut Vec<Leaf>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Walk<'_, '_> {
    fn leaf(self, l: Leaf) {
        if self.matched {
            self.out.push(l);
        }
    }
}

impl<'de> Visitor<'de> for Walk<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.leaf(Leaf::Bool(v));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        let l = if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&v) {
            Leaf::Int(v)
        } else {
            Leaf::Other
        };
        self.leaf(l);
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        let l = match i64::try_from(v) {
            Ok(i) if i <= MAX_SAFE_INTEGER => Leaf::Int(i),
            _ => Leaf::Other,
        };
        self.leaf(l);
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.leaf(Leaf::Other);
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.leaf(Leaf::Str(v.to_owned()));
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.leaf(Leaf::Other);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.leaf(Leaf::Other);
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Walk { name, matched, out } = self;
        if matched {
            out.push(Leaf::Other);
        }
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            map.next_value_seed(Walk {
                name,
                matched: key.eq_ignore_ascii_case(name),
                out,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::parse_body;

    fn ct(values: &[&str]) -> Result<(), String> {
        check_content_type(values.iter().map(|v| v.as_bytes())).map_err(|e| {
            assert_eq!(e.code(), CONTENT_TYPE, "{e}");
            assert_eq!(http_status(&e), 415);
            e.to_string()
        })
    }

    #[test]
    fn content_type_is_json_with_no_parameter_or_only_charset_utf_8() {
        for ok in [
            "application/json",
            "Application/JSON",
            "APPLICATION/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=utf-8",
            "application/json ; charset=UTF-8",
            "application/json;\tcharset=utf-8",
            "application/json; charset=\"UTF-8\"",
            "application/json; Charset=\"utf-8\"",
            "application/json; CHARSET=Utf-8",
            "  application/json  ",
        ] {
            assert_eq!(ct(&[ok]), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("application/json; charset=utf-7", "\"utf-7\" is not utf-8"),
            (
                "application/json;charset=\"UTF-7\"",
                "\"UTF-7\" is not utf-8",
            ),
            ("Application/JSON; Charset=UTF7", "\"UTF7\" is not utf-8"),
            (
                "application/json; charset=utf-16",
                "\"utf-16\" is not utf-8",
            ),
            ("application/json; charset=utf-16le", "not utf-8"),
            ("application/json; charset=shift_jis", "not utf-8"),
            ("application/json; charset=utf8", "not utf-8"),
            ("application/json; charset=", "\"\" is not utf-8"),
            ("application/json; charset=\"utf-8", "malformed"),
            ("application/json; charset=\"utf\\-8\"", "malformed"),
            ("application/json; charset=\"utf-8\"x", "malformed"),
            (
                "application/json; charset=utf-8; charset=utf-8",
                "named twice",
            ),
            (
                "application/json; charset=utf-8; charset=utf-7",
                "named twice",
            ),
            ("application/json;charset=utf-8;x=y", "\"x\" is not allowed"),
            ("application/json; x=y", "\"x\" is not allowed"),
            ("application/json; charset=utf-8;", "is not name=value"),
            ("application/json;", "is not name=value"),
            ("application/json; charset", "is not name=value"),
            ("application/json; charset = utf-8", "is not allowed"),
            ("application/json-seq", "not application/json"),
            ("application/json+x", "not application/json"),
            ("application/jsonx; charset=utf-8", "not application/json"),
            ("text/json", "not application/json"),
            ("text/plain", "not application/json"),
            ("application/x-www-form-urlencoded", "not application/json"),
            ("application/json, text/plain", "not application/json"),
            ("application /json", "not application/json"),
            ("", "not application/json"),
        ] {
            let e = ct(&[bad]).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
            assert!(
                e.contains("send Content-Type: application/json"),
                "{bad}: {e}"
            );
        }
        // Missing, or two headers (even two good ones): a server may read either.
        assert!(ct(&[]).unwrap_err().contains("no Content-Type"));
        for two in [
            ["application/json", "application/json"],
            ["application/json", "application/json; charset=utf-7"],
            ["text/plain", "application/json"],
        ] {
            assert!(ct(&two).unwrap_err().contains("several"), "{two:?}");
        }
        // Bytes that are not visible ASCII.
        assert!(check_content_type([&b"application/json; charset=utf-8\xff"[..]]).is_err());
        assert!(check_content_type([&b"application/json\x00"[..]]).is_err());
    }

    #[test]
    fn content_encoding_is_absent_or_identity() {
        let ce = |v: &[&str]| check_content_encoding(v.iter().map(|v| v.as_bytes()));
        assert_eq!(ce(&[]), Ok(()));
        assert_eq!(ce(&["identity"]), Ok(()));
        assert_eq!(ce(&[" Identity "]), Ok(()));
        for bad in [
            &["gzip"][..],
            &["deflate"],
            &["br"],
            &["zstd"],
            &["gzip, identity"],
            &["identity, gzip"],
            &["identity", "identity"],
            &["identity", "gzip"],
            &[""],
            &["x-gzip"],
        ] {
            let e = ce(bad).expect_err(&format!("{bad:?}"));
            assert_eq!(e.code(), CONTENT_ENCODING);
            assert_eq!(http_status(&e), 415);
            assert!(e.to_string().contains("uncompressed"), "{e}");
        }
    }

    #[test]
    fn body_headers_need_a_content_type_only_with_a_body() {
        let h = |v: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static [u8])> {
            v.iter().map(|(n, v)| (*n, v.as_bytes())).collect()
        };
        assert_eq!(check_body_headers(h(&[]), false), Ok(()));
        assert_eq!(
            check_body_headers(h(&[]), true).unwrap_err().code(),
            CONTENT_TYPE
        );
        assert_eq!(
            check_body_headers(h(&[("Content-Type", "application/json")]), true),
            Ok(())
        );
        // Present without a body: still checked.
        assert_eq!(
            check_body_headers(
                h(&[("content-type", "application/json; charset=utf-7")]),
                false
            )
            .unwrap_err()
            .code(),
            CONTENT_TYPE
        );
        assert_eq!(
            check_body_headers(
                h(&[
                    ("content-type", "application/json"),
                    ("CONTENT-TYPE", "application/json")
                ]),
                true
            )
            .unwrap_err()
            .code(),
            CONTENT_TYPE
        );
        assert_eq!(
            check_body_headers(
                h(&[
                    ("content-type", "application/json"),
                    ("content-encoding", "gzip")
                ]),
                true
            )
            .unwrap_err()
            .code(),
            CONTENT_ENCODING
        );
        assert_eq!(
            check_body_headers(h(&[("content-encoding", "gzip")]), false)
                .unwrap_err()
                .code(),
            CONTENT_ENCODING
        );
    }

    fn params(headers: &[(&str, &str)], body: Option<&str>) -> Result<(), String> {
        let b = body.map(|b| parse_body(b.as_bytes()).unwrap());
        check_param_headers(headers.iter().map(|(n, v)| (*n, v.as_bytes())), b.as_ref()).map_err(
            |e| {
                assert_eq!(e.code(), PARAM_HEADER, "{e}");
                assert_eq!(http_status(&e), 400);
                e.to_string()
            },
        )
    }

    fn call(arguments: &str) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"execute_sql","arguments":{arguments}}}}}"#
        )
    }

    #[test]
    fn param_headers_must_be_the_bodys_values() {
        let body = call(
            r#"{"region":"us-west1","query":"SELECT 1","n":42,"neg":-7,"flag":true,"opts":{"tenant":"acme"},"greeting":"Hello, 世界","pad":" padded "}"#,
        );
        let b = Some(body.as_str());
        // None sent: nothing to check, with or without a body.
        assert_eq!(params(&[], b), Ok(()));
        assert_eq!(params(&[("mcp-name", "x")], None), Ok(()));
        for ok in [
            ("mcp-param-region", "us-west1"),
            ("Mcp-Param-Region", "us-west1"),
            ("mcp-param-REGION", "us-west1"),
            ("mcp-param-n", "42"),
            ("mcp-param-neg", "-7"),
            ("mcp-param-flag", "true"),
            ("mcp-param-tenant", "acme"),
            ("mcp-param-greeting", "=?base64?SGVsbG8sIOS4lueVjA==?="),
            ("mcp-param-pad", "=?base64?IHBhZGRlZCA=?="),
            ("mcp-param-region", "=?base64?dXMtd2VzdDE=?="),
        ] {
            assert_eq!(params(&[ok], b), Ok(()), "{ok:?}");
        }
        assert_eq!(
            params(
                &[("mcp-param-region", "us-west1"), ("mcp-param-n", "42")],
                b
            ),
            Ok(())
        );
        for (bad, why) in [
            (("mcp-param-region", "eu-west1"), "is not the body's value"),
            (("mcp-param-region", "US-WEST1"), "is not the body's value"),
            (("mcp-param-region", "us-west1 "), "is not the body's value"),
            (("mcp-param-n", "042"), "is not the body's value"),
            (("mcp-param-n", "42.0"), "is not the body's value"),
            (("mcp-param-n", "+42"), "is not the body's value"),
            (("mcp-param-flag", "True"), "is not the body's value"),
            (("mcp-param-flag", "1"), "is not the body's value"),
            (("mcp-param-greeting", "Hello, 世界"), "visible ASCII"),
            (("mcp-param-pad", "padded"), "is not the body's value"),
            (
                ("mcp-param-region", "=?base64?dXMtd2VzdDE?="),
                "padded Base64",
            ),
            (
                ("mcp-param-region", "=?base64?dXMt!!!d2VzdDE=?="),
                "padded Base64",
            ),
            (("mcp-param-region", "=?base64?/w==?="), "padded Base64"),
            (
                ("mcp-param-region", "=?BASE64?dXMtd2VzdDE=?="),
                "is not the body's value",
            ),
            (("mcp-param-opts", "acme"), "not a string, an integer"),
            (("mcp-param-missing", "x"), "no parameter named"),
            (("mcp-param-", "x"), "must name its parameter"),
        ] {
            let e = params(&[bad], b).expect_err(&format!("{bad:?}"));
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        // Twice, in any case.
        let e = params(
            &[
                ("mcp-param-region", "us-west1"),
                ("Mcp-Param-Region", "us-west1"),
            ],
            b,
        )
        .unwrap_err();
        assert!(e.contains("not several"), "{e}");
        // A name found twice (repeated member, case variants, nested) is ambiguous.
        for args in [
            r#"{"region":"us","region":"us"}"#,
            r#"{"region":"us","Region":"us"}"#,
            r#"{"region":"us","inner":{"region":"us"}}"#,
        ] {
            let body = call(args);
            let e = params(&[("mcp-param-region", "us")], Some(&body)).unwrap_err();
            assert!(e.contains("several parameters"), "{args}: {e}");
        }
        // Values no header mirrors: null, floats, unsafe integers, arrays.
        for args in [
            r#"{"v":null}"#,
            r#"{"v":1.5}"#,
            r#"{"v":1e3}"#,
            r#"{"v":9007199254740992}"#,
            r#"{"v":-9007199254740992}"#,
            r#"{"v":18446744073709551616}"#,
            r#"{"v":["a"]}"#,
        ] {
            let body = call(args);
            assert!(
                params(&[("mcp-param-v", "1")], Some(&body)).is_err(),
                "{args}"
            );
        }
        let body = call(r#"{"v":9007199254740991}"#);
        assert_eq!(
            params(&[("mcp-param-v", "9007199254740991")], Some(&body)),
            Ok(())
        );
        // Inside an array: not statically reachable, not found.
        let body = call(r#"{"list":[{"region":"us"}]}"#);
        assert!(params(&[("mcp-param-region", "us")], Some(&body))
            .unwrap_err()
            .contains("no parameter named"));
        // Only with one tools/call: not another method, not a batch, not without arguments,
        // not where the body is not seen.
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p","arguments":{"region":"us"}}}"#.to_owned(),
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.to_owned(),
            format!("[{}]", call(r#"{"region":"us"}"#)),
        ] {
            let e = params(&[("mcp-param-region", "us")], Some(&body)).unwrap_err();
            assert!(e.contains("not one tools/call"), "{body}: {e}");
        }
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}"#;
        assert!(params(&[("mcp-param-region", "us")], Some(body))
            .unwrap_err()
            .contains("no parameter named"));
        assert!(params(&[("mcp-param-region", "us")], None)
            .unwrap_err()
            .contains("does not see"));
        // Bounds.
        let many: Vec<(String, &str)> = (0..=MAX_PARAM_HEADERS)
            .map(|i| (format!("mcp-param-p{i}"), "x"))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        assert!(params(&many, b).unwrap_err().contains("at most"));
        let long = "a".repeat(MAX_PARAM_VALUE + 1);
        assert!(params(&[("mcp-param-region", &long)], b)
            .unwrap_err()
            .contains("longer than"));
        // Deep arguments: refused, not a stack overflow.
        let deep = format!("{}1{}", r#"{"a":"#.repeat(2000), "}".repeat(2000));
        let mut deep_body = parse_body(call("{}").as_bytes()).unwrap();
        deep_body.messages[0].arguments =
            Some(serde_json::value::RawValue::from_string(deep).unwrap());
        let e = check_param_headers([("mcp-param-a", &b"1"[..])], Some(&deep_body)).unwrap_err();
        assert!(e.to_string().contains("cannot be read"), "{e}");
    }
}
