//! What an HTTP request to an MCP server does, so that a proof can be bound to it:
//!
//! * the body's digest: SHA-256, sent as RFC 9530 `Content-Digest: sha-256=:<base64>:` and
//!   mirrored in the proof's `cada.bd` (base64url), so a proof moved onto another body fails;
//! * the JSON-RPC calls the body makes ([`McpCall`]: method and, for the methods that name
//!   one, the tool, resource or prompt), mirrored in the proof's `cada.mcp`, so that the
//!   enclave can check them against the owner's contract before it signs and a gate can
//!   check them against the body it forwards.
//!
//! [`parse_body`] reads a JSON-RPC message or batch with hard limits: it refuses rather than
//! guesses (duplicate members, trailing bytes, over-long names, too many messages), because a
//! gate that read a body differently from the server behind it would check one call and
//! forward another.
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{b64, ProtocolError};

/// Largest body [`parse_body`] reads.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// Most messages in one batch (and calls in one proof).
pub const MAX_CALLS: usize = 64;
/// Longest JSON-RPC method name.
pub const MAX_METHOD_LEN: usize = 128;
/// Longest tool or prompt name, or resource URI.
pub const MAX_TARGET_LEN: usize = 2048;

/// One JSON-RPC call: its method and what it acts on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpCall {
    /// The JSON-RPC method (`tools/call`, `initialize`, `notifications/initialized` …).
    pub method: String,
    /// The tool (`tools/call`), prompt (`prompts/get`) or resource URI (`resources/read`,
    /// `resources/subscribe`, `resources/unsubscribe`) it names; absent for other methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl McpCall {
    /// The tool this call invokes, if it is a `tools/call`.
    pub fn tool(&self) -> Option<&str> {
        (self.method == "tools/call")
            .then_some(self.target.as_deref())
            .flatten()
    }

    /// Checks the limits a received call must keep (lengths, no control characters).
    pub fn check(&self) -> Result<(), ProtocolError> {
        let bad =
            |s: &str, max: usize| s.is_empty() || s.len() > max || s.chars().any(char::is_control);
        if bad(&self.method, MAX_METHOD_LEN) {
            return Err(ProtocolError::invalid(
                "MCP call",
                format!("a method must be 1-{MAX_METHOD_LEN} bytes without control characters"),
            ));
        }
        if self
            .target
            .as_deref()
            .is_some_and(|t| bad(t, MAX_TARGET_LEN))
        {
            return Err(ProtocolError::invalid(
                "MCP call",
                format!("a target must be 1-{MAX_TARGET_LEN} bytes without control characters"),
            ));
        }
        Ok(())
    }
}

/// Checks a list of calls as received in a proof or a signing request.
pub fn check_calls(calls: &[McpCall]) -> Result<(), ProtocolError> {
    if calls.len() > MAX_CALLS {
        return Err(ProtocolError::invalid(
            "MCP calls",
            format!("at most {MAX_CALLS} calls, not {}", calls.len()),
        ));
    }
    calls.iter().try_for_each(McpCall::check)
}

/// One message of a body, as a gate needs it.
#[derive(Debug, Clone)]
pub struct Message {
    /// The JSON-RPC `id` as sent (absent for notifications and for a message without one).
    pub id: Option<Box<RawValue>>,
    /// The call, for a request or notification; `None` for a response (no `method`).
    pub call: Option<McpCall>,
    /// base64url SHA-256 of the `params.arguments` JSON text of a `tools/call` /
    /// `prompts/get`, for the audit log (arguments are not logged themselves).
    pub arguments_digest: Option<String>,
}

/// A parsed JSON-RPC body.
#[derive(Debug, Clone)]
pub struct Body {
    /// Whether the body was a batch (an array).
    pub batch: bool,
    /// Its messages, in order.
    pub messages: Vec<Message>,
}

impl Body {
    /// The calls the body makes, in order (responses left out): what a proof's `cada.mcp`
    /// must equal.
    pub fn calls(&self) -> Vec<McpCall> {
        self.messages
            .iter()
            .filter_map(|m| m.call.clone())
            .collect()
    }
}

#[derive(Deserialize)]
struct RawMessage<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<&'a RawValue>,
    #[serde(default)]
    id: Option<Box<RawValue>>,
    #[serde(default)]
    method: Option<String>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
    #[serde(default)]
    result: Option<IgnoredAny>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct RawParams<'a> {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uri: Option<String>,
    // Other members (`_meta`, `cursor` …) are ignored; a repeated known one is refused.
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
}

fn json_err(what: &'static str) -> impl Fn(serde_json::Error) -> ProtocolError {
    move |e| ProtocolError::Json {
        what,
        detail: e.to_string(),
    }
}

/// The base64url SHA-256 of `bytes`: the proof's `cada.bd` for a body.
pub fn body_digest(bytes: &[u8]) -> String {
    b64::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

/// The RFC 9530 `Content-Digest` header value for a body: `sha-256=:<base64>:`.
pub fn content_digest(bytes: &[u8]) -> String {
    digests(bytes).1
}

/// Both forms of a body's SHA-256 from one hash: the proof's `cada.bd` (base64url) and the
/// `Content-Digest` header value.
pub fn digests(bytes: &[u8]) -> (String, String) {
    use base64::Engine as _;
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    (
        b64::encode(d.as_ref()),
        format!(
            "sha-256=:{}:",
            base64::engine::general_purpose::STANDARD.encode(d.as_ref())
        ),
    )
}

/// The SHA-256 member of a `Content-Digest` header, as base64url (the form of `cada.bd`):
/// `Ok(None)` when the header names no `sha-256` digest (other algorithms are not used).
pub fn content_digest_sha256(header: &str) -> Result<Option<String>, ProtocolError> {
    use base64::Engine as _;
    if header.len() > 4096 {
        return Err(ProtocolError::TooLarge {
            what: "Content-Digest",
            len: header.len(),
            max: 4096,
        });
    }
    let mut found = None;
    for member in header.split(',') {
        let Some((name, value)) = member.trim().split_once('=') else {
            return Err(ProtocolError::invalid(
                "Content-Digest",
                "every member must be algorithm=:base64:",
            ));
        };
        if name.trim() != "sha-256" {
            continue;
        }
        let inner = value
            .trim()
            .strip_prefix(':')
            .and_then(|v| v.strip_suffix(':'))
            .ok_or_else(|| {
                ProtocolError::invalid("Content-Digest", "the sha-256 value must be :base64:")
            })?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(inner)
            .map_err(|_| ProtocolError::invalid("Content-Digest", "sha-256 is not base64"))?;
        if bytes.len() != 32 || found.is_some() {
            return Err(ProtocolError::invalid(
                "Content-Digest",
                "exactly one sha-256 digest of 32 bytes",
            ));
        }
        found = Some(b64::encode(bytes));
    }
    Ok(found)
}

/// Reads a JSON-RPC message or batch (MCP over HTTP) within the limits above.
pub fn parse_body(bytes: &[u8]) -> Result<Body, ProtocolError> {
    if bytes.len() > MAX_BODY {
        return Err(ProtocolError::TooLarge {
            what: "JSON-RPC body",
            len: bytes.len(),
            max: MAX_BODY,
        });
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let items: Vec<&RawValue> =
            serde_json::from_slice(bytes).map_err(json_err("JSON-RPC batch"))?;
        if items.is_empty() || items.len() > MAX_CALLS {
            return Err(ProtocolError::invalid(
                "JSON-RPC batch",
                format!("a batch holds 1-{MAX_CALLS} messages, not {}", items.len()),
            ));
        }
        let messages = items
            .into_iter()
            .map(|raw| message(raw.get().as_bytes()))
            .collect::<Result<_, _>>()?;
        Ok(Body {
            batch: true,
            messages,
        })
    } else {
        Ok(Body {
            batch: false,
            messages: vec![message(bytes)?],
        })
    }
}

/// serde reads a struct from a JSON array too; a message and its params must be objects.
fn object(what: &'static str, bytes: &[u8]) -> Result<(), ProtocolError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        _ => Err(ProtocolError::invalid(what, "must be a JSON object")),
    }
}

fn message(bytes: &[u8]) -> Result<Message, ProtocolError> {
    object("JSON-RPC message", bytes)?;
    let raw: RawMessage<'_> =
        serde_json::from_slice(bytes).map_err(json_err("JSON-RPC message"))?;
    if raw.jsonrpc.map(RawValue::get) != Some("\"2.0\"") {
        return Err(ProtocolError::invalid(
            "JSON-RPC message",
            "jsonrpc must be \"2.0\"",
        ));
    }
    // JSON-RPC 2.0: an id is a string, a number or null (echoed back in refusals).
    if let Some(id) = &raw.id {
        let ok = match id.get().as_bytes().first() {
            Some(b'"' | b'-' | b'0'..=b'9') => id.get().len() <= 256,
            _ => id.get() == "null",
        };
        if !ok {
            return Err(ProtocolError::invalid(
                "JSON-RPC message",
                "id must be a string, a number or null (at most 256 bytes)",
            ));
        }
    }
    let Some(method) = raw.method else {
        if raw.result.is_none() && raw.error.is_none() {
            return Err(ProtocolError::invalid(
                "JSON-RPC message",
                "neither a request (method) nor a response (result or error)",
            ));
        }
        return Ok(Message {
            id: raw.id,
            call: None,
            arguments_digest: None,
        });
    };
    let names_target = matches!(
        method.as_str(),
        "tools/call"
            | "prompts/get"
            | "resources/read"
            | "resources/subscribe"
            | "resources/unsubscribe"
    );
    let (target, arguments_digest) = if names_target {
        let params = raw.params.ok_or_else(|| {
            ProtocolError::invalid("JSON-RPC message", format!("{method} needs params"))
        })?;
        object("JSON-RPC params", params.get().as_bytes())?;
        let p: RawParams<'_> =
            serde_json::from_str(params.get()).map_err(json_err("JSON-RPC params"))?;
        let target = if method.starts_with("resources/") {
            p.uri
        } else {
            p.name
        };
        let Some(target) = target else {
            return Err(ProtocolError::invalid(
                "JSON-RPC message",
                format!(
                    "{method} names no {}",
                    if method.starts_with("resources/") {
                        "uri"
                    } else {
                        "name"
                    }
                ),
            ));
        };
        (
            Some(target),
            p.arguments.map(|a| body_digest(a.get().as_bytes())),
        )
    } else {
        (None, None)
    };
    let call = McpCall { method, target };
    call.check()?;
    Ok(Message {
        id: raw.id,
        call: Some(call),
        arguments_digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(m: &str, t: Option<&str>) -> McpCall {
        McpCall {
            method: m.into(),
            target: t.map(Into::into),
        }
    }

    #[test]
    fn reads_calls_of_messages_and_batches() {
        let b = parse_body(
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"},"_meta":{"progressToken":1}}}"#,
        )
        .unwrap();
        assert!(!b.batch);
        assert_eq!(b.calls(), vec![call("tools/call", Some("echo"))]);
        assert_eq!(b.messages[0].id.as_ref().unwrap().get(), "7");
        assert_eq!(
            b.messages[0].arguments_digest.as_deref(),
            Some(body_digest(br#"{"text":"hi"}"#).as_str())
        );
        assert_eq!(b.calls()[0].tool(), Some("echo"));

        let b = parse_body(
            br#" [{"jsonrpc":"2.0","method":"notifications/initialized"},
                 {"jsonrpc":"2.0","id":"a","result":{}},
                 {"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///x"}},
                 {"jsonrpc":"2.0","id":3,"method":"prompts/get","params":{"name":"p"}}]"#,
        )
        .unwrap();
        assert!(b.batch);
        assert_eq!(
            b.calls(),
            vec![
                call("notifications/initialized", None),
                call("resources/read", Some("file:///x")),
                call("prompts/get", Some("p")),
            ]
        );
        assert!(b.calls()[1].tool().is_none());
        assert!(b.messages[1].call.is_none());
    }

    #[test]
    fn refuses_what_another_parser_could_read_differently() {
        for (body, why) in [
            (&br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ok","name":"evil"}}"#[..], "duplicate name"),
            (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"x","params":{"name":"ok"}}"#, "duplicate method"),
            (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ok"}} {}"#, "trailing"),
            (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#, "no params"),
            (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}"#, "no name"),
            (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":7}}"#, "name not a string"),
            (br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, "version"),
            (br#"{"id":1,"method":"ping"}"#, "no version"),
            (br#"{"jsonrpc":"2.0","id":1}"#, "neither"),
            (br#"[]"#, "empty batch"),
            (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a\u0000b"}}"#, "control char"),
            (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\ud800"}}"#, "lone surrogate"),
            (b"\xff", "not utf-8"),
            (b"", "empty"),
            (br#"[["2.0",1,"tools/call",{"name":"echo"}]]"#, "message as an array"),
            (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["echo"]}"#, "params as an array"),
        ] {
            assert!(parse_body(body).is_err(), "{why} accepted");
        }
        let long = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{}"}}}}"#,
            "a".repeat(MAX_TARGET_LEN + 1)
        );
        assert!(parse_body(long.as_bytes()).is_err());
        let batch = format!(
            "[{}]",
            vec![r#"{"jsonrpc":"2.0","method":"ping","id":1}"#; MAX_CALLS + 1].join(",")
        );
        assert!(parse_body(batch.as_bytes()).is_err());
        assert!(parse_body(&vec![b' '; MAX_BODY + 1]).is_err());
    }

    #[test]
    fn deep_nesting_is_no_crash() {
        for depth in [200, 100_000] {
            // Arguments are opaque (only digested): any depth passes, without recursion.
            let args = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"t","arguments":{args}}}}}"#
            );
            let b = parse_body(body.as_bytes()).unwrap();
            assert_eq!(
                b.messages[0].arguments_digest,
                Some(body_digest(args.as_bytes()))
            );
            // Deep structure where a message is expected is refused.
            let batch = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            assert!(parse_body(batch.as_bytes()).is_err());
            let id = format!(r#"{{"jsonrpc":"2.0","method":"ping","id":{args}}}"#);
            assert!(parse_body(id.as_bytes()).is_err());
        }
    }

    #[test]
    fn content_digest_round_trip_and_errors() {
        let body = br#"{"a":1}"#;
        let h = content_digest(body);
        assert!(h.starts_with("sha-256=:") && h.ends_with(':'));
        assert_eq!(content_digest_sha256(&h).unwrap(), Some(body_digest(body)));
        assert_eq!(
            content_digest_sha256(&format!("sha-512=:AAAA:, {h}")).unwrap(),
            Some(body_digest(body))
        );
        assert_eq!(content_digest_sha256("sha-512=:AAAA:").unwrap(), None);
        for bad in [
            "sha-256=AAAA",
            "sha-256=:!!:",
            "sha-256=:AAAA:",
            "nonsense",
            &format!("{h},{h}"),
        ] {
            assert!(content_digest_sha256(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn call_limits() {
        assert!(check_calls(&vec![call("ping", None); MAX_CALLS]).is_ok());
        assert!(check_calls(&vec![call("ping", None); MAX_CALLS + 1]).is_err());
        assert!(call("", None).check().is_err());
        assert!(call("tools/call", Some("")).check().is_err());
        assert!(call("tools/call", Some("a\nb")).check().is_err());
    }
}
