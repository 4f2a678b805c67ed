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
//! forward another. For the same reason [`headers`] holds what the request's headers may
//! say about the body (`Content-Type`, `Content-Encoding`, `Mcp-Param-*`).
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{b64, ProtocolError};

pub mod headers;

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
    /// What it names, for the methods that name something a contract grants (the table in
    /// [`McpCall::grant_needed`]): the tool (`tools/call`), the prompt (`prompts/get`), the
    /// resource URI (`resources/read`, `resources/subscribe`, `resources/unsubscribe`, one
    /// of the `resourceSubscriptions` of `subscriptions/listen`), or for
    /// `completion/complete` its reference as `ref/prompt <name>` or
    /// `ref/resource <uri template>`; absent for other methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// What an MCP call needs a grant for ([`McpCall::grant_needed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantNeeded<'a> {
    /// Nothing: the method names no tool, prompt or resource.
    Nothing,
    /// This tool.
    Tool(&'a str),
    /// This prompt.
    Prompt(&'a str),
    /// This resource URI.
    Resource(&'a str),
    /// Completions for this resource template (RFC 6570): granted when the template's
    /// literal part is ([`crate::resource_uri::ResourcePrefix::matches_template`]).
    ResourceTemplate(&'a str),
    /// The call names something no rule here knows how to check (a target on a method
    /// outside the table, or a `completion/complete` reference of another type): refused.
    Unknown,
}

/// Methods whose calls name a resource URI.
pub const RESOURCE_METHODS: &[&str] = &[
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "subscriptions/listen",
];

impl McpCall {
    /// What the call needs a grant for, one table for the contract (enclave and verifiers)
    /// and for access tokens (`docs/gate.md`, "Which MCP methods need a grant"):
    ///
    /// | method | grant |
    /// |---|---|
    /// | `tools/call` | the tool `params.name` |
    /// | `prompts/get` | the prompt `params.name` |
    /// | `resources/read`, `resources/subscribe`, `resources/unsubscribe` (2025-11-25) | the resource `params.uri` |
    /// | `subscriptions/listen` (2026-07-28) | each URI of `params.notifications.resourceSubscriptions` (one call each) |
    /// | `completion/complete` | `ref/prompt`: the prompt `params.ref.name`; `ref/resource`: the template `params.ref.uri` |
    /// | any other method | none |
    ///
    /// A call with a target on a method outside the table, or a `completion/complete`
    /// target of another shape, is [`GrantNeeded::Unknown`] (refused).
    pub fn grant_needed(&self) -> GrantNeeded<'_> {
        let Some(t) = self.target.as_deref() else {
            return GrantNeeded::Nothing;
        };
        match self.method.as_str() {
            "tools/call" => GrantNeeded::Tool(t),
            "prompts/get" => GrantNeeded::Prompt(t),
            m if RESOURCE_METHODS.contains(&m) => GrantNeeded::Resource(t),
            "completion/complete" => match t.split_once(' ') {
                Some(("ref/prompt", name)) => GrantNeeded::Prompt(name),
                Some(("ref/resource", uri)) => GrantNeeded::ResourceTemplate(uri),
                _ => GrantNeeded::Unknown,
            },
            _ => GrantNeeded::Unknown,
        }
    }

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
    /// Further calls of the same message, for a method that names several things (each
    /// resource of a `subscriptions/listen` after the first); usually empty.
    pub more_calls: Vec<McpCall>,
    /// base64url SHA-256 of the `params.arguments` JSON text of a `tools/call` /
    /// `prompts/get`, for the audit log (arguments are not logged themselves).
    pub arguments_digest: Option<String>,
    /// The `params.arguments` JSON text of a `tools/call` / `prompts/get` as sent, for a
    /// gate that checks a one-transaction grant's argument constraints
    /// (`cada_contract::CallArguments::parse`, which refuses a member name repeated at any
    /// depth — this reader does not look inside).
    pub arguments: Option<Box<RawValue>>,
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
            .flat_map(|m| m.call.iter().chain(&m.more_calls))
            .cloned()
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
    /// `completion/complete`.
    #[serde(borrow, default, rename = "ref")]
    reference: Option<&'a RawValue>,
    /// `subscriptions/listen`.
    #[serde(borrow, default)]
    notifications: Option<&'a RawValue>,
}

/// `params.ref` of `completion/complete`.
#[derive(Deserialize)]
struct RawRef {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uri: Option<String>,
}

/// `params.notifications` of `subscriptions/listen`.
#[derive(Deserialize)]
struct RawFilter {
    #[serde(default, rename = "resourceSubscriptions")]
    resource_subscriptions: Option<Vec<String>>,
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
        limit_calls(Body {
            batch: true,
            messages,
        })
    } else {
        limit_calls(Body {
            batch: false,
            messages: vec![message(bytes)?],
        })
    }
}

/// A message may make several calls (`subscriptions/listen`): at most [`MAX_CALLS`] in all.
fn limit_calls(body: Body) -> Result<Body, ProtocolError> {
    let n: usize = body
        .messages
        .iter()
        .map(|m| usize::from(m.call.is_some()) + m.more_calls.len())
        .sum();
    if n > MAX_CALLS {
        return Err(ProtocolError::invalid(
            "JSON-RPC body",
            format!("at most {MAX_CALLS} calls (each resource subscription counts), not {n}"),
        ));
    }
    Ok(body)
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
            more_calls: Vec::new(),
            arguments_digest: None,
            arguments: None,
        });
    };
    let mut arguments = None;
    let (targets, arguments_digest) = match method.as_str() {
        "tools/call"
        | "prompts/get"
        | "resources/read"
        | "resources/subscribe"
        | "resources/unsubscribe" => {
            let p = params_of(&method, raw.params)?;
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
            arguments = p.arguments.map(RawValue::to_owned);
            (
                vec![Some(target)],
                p.arguments.map(|a| body_digest(a.get().as_bytes())),
            )
        }
        "completion/complete" => {
            let p = params_of(&method, raw.params)?;
            let r = p.reference.ok_or_else(|| {
                ProtocolError::invalid("JSON-RPC message", "completion/complete needs params.ref")
            })?;
            object("completion/complete params.ref", r.get().as_bytes())?;
            let r: RawRef = serde_json::from_str(r.get()).map_err(json_err("params.ref"))?;
            let target = match (r.kind.as_str(), r.name, r.uri) {
                ("ref/prompt", Some(name), _) => format!("ref/prompt {name}"),
                ("ref/resource", _, Some(uri)) => format!("ref/resource {uri}"),
                (kind, ..) => {
                    return Err(ProtocolError::invalid(
                        "JSON-RPC message",
                        format!(
                            "completion/complete: params.ref must be a ref/prompt with a name \
                             or a ref/resource with a uri, not {:?}",
                            kind.chars().take(32).collect::<String>()
                        ),
                    ))
                }
            };
            (vec![Some(target)], None)
        }
        "subscriptions/listen" => {
            let uris = match raw.params {
                None => None,
                Some(params) => {
                    let p = params_of(&method, Some(params))?;
                    match p.notifications {
                        None => None,
                        Some(n) => {
                            object(
                                "subscriptions/listen params.notifications",
                                n.get().as_bytes(),
                            )?;
                            let f: RawFilter = serde_json::from_str(n.get())
                                .map_err(json_err("params.notifications"))?;
                            f.resource_subscriptions
                        }
                    }
                }
            };
            match uris {
                Some(u) if !u.is_empty() => {
                    if u.len() > MAX_CALLS {
                        return Err(ProtocolError::invalid(
                            "JSON-RPC message",
                            format!(
                                "at most {MAX_CALLS} resource subscriptions, not {}",
                                u.len()
                            ),
                        ));
                    }
                    (u.into_iter().map(Some).collect(), None)
                }
                _ => (vec![None], None),
            }
        }
        _ => (vec![None], None),
    };
    let mut calls = targets.into_iter().map(|target| McpCall {
        method: method.clone(),
        target,
    });
    let call = calls.next().ok_or_else(|| {
        ProtocolError::invalid("JSON-RPC message", "a request makes at least one call")
    })?;
    let more_calls: Vec<McpCall> = calls.collect();
    call.check()?;
    more_calls.iter().try_for_each(McpCall::check)?;
    Ok(Message {
        id: raw.id,
        call: Some(call),
        more_calls,
        arguments_digest,
        arguments,
    })
}

/// The `params` object of a method that needs one.
fn params_of<'a>(
    method: &str,
    params: Option<&'a RawValue>,
) -> Result<RawParams<'a>, ProtocolError> {
    let params = params.ok_or_else(|| {
        ProtocolError::invalid("JSON-RPC message", format!("{method} needs params"))
    })?;
    object("JSON-RPC params", params.get().as_bytes())?;
    serde_json::from_str(params.get()).map_err(json_err("JSON-RPC params"))
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
    fn keeps_the_arguments_text_as_sent() {
        // Repeated members inside the arguments are kept as sent: a grant checker reads
        // them with cada_contract::CallArguments::parse, which refuses them.
        let b = parse_body(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay","arguments":{"amount":1, "amount":900}}}"#,
        )
        .unwrap();
        assert_eq!(
            b.messages[0].arguments.as_deref().map(RawValue::get),
            Some(r#"{"amount":1, "amount":900}"#)
        );
        let b = parse_body(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        assert!(b.messages[0].arguments.is_none());
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

    /// Issue 21 (suspected item): `completion/complete` names a prompt or a resource
    /// template, and 2026-07-28's `subscriptions/listen` names resources; before, both were
    /// calls that named nothing, so no contract rule applied to them.
    #[test]
    fn completion_and_listen_name_what_they_touch() {
        let calls = |b: &str| parse_body(b.as_bytes()).unwrap().calls();
        let c = calls(
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"summarize"},"argument":{"name":"x","value":"a"}}}"#,
        );
        assert_eq!(
            c,
            [call("completion/complete", Some("ref/prompt summarize"))]
        );
        assert_eq!(c[0].grant_needed(), GrantNeeded::Prompt("summarize"));
        let c = calls(
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"file:///srv/{path}"},"argument":{"name":"path","value":"a"}}}"#,
        );
        assert_eq!(
            c[0].grant_needed(),
            GrantNeeded::ResourceTemplate("file:///srv/{path}")
        );
        let c = calls(
            r#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true,"resourceSubscriptions":["file:///a","file:///b"]}}}"#,
        );
        assert_eq!(
            c,
            [
                call("subscriptions/listen", Some("file:///a")),
                call("subscriptions/listen", Some("file:///b")),
            ]
        );
        assert_eq!(c[1].grant_needed(), GrantNeeded::Resource("file:///b"));
        let c = calls(
            r#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true}}}"#,
        );
        assert_eq!(c, [call("subscriptions/listen", None)]);
        assert_eq!(c[0].grant_needed(), GrantNeeded::Nothing);
        for (m, t, want) in [
            ("tools/call", "echo", GrantNeeded::Tool("echo")),
            ("prompts/get", "p", GrantNeeded::Prompt("p")),
            (
                "resources/read",
                "file:///x",
                GrantNeeded::Resource("file:///x"),
            ),
            (
                "resources/subscribe",
                "file:///x",
                GrantNeeded::Resource("file:///x"),
            ),
            (
                "resources/unsubscribe",
                "file:///x",
                GrantNeeded::Resource("file:///x"),
            ),
            ("completion/complete", "ref/other x", GrantNeeded::Unknown),
            ("completion/complete", "summarize", GrantNeeded::Unknown),
            ("tools/list", "x", GrantNeeded::Unknown),
        ] {
            assert_eq!(call(m, Some(t)).grant_needed(), want, "{m} {t}");
        }
        for m in [
            "tools/list",
            "initialize",
            "ping",
            "server/discover",
            "tasks/get",
        ] {
            assert_eq!(call(m, None).grant_needed(), GrantNeeded::Nothing);
        }
        // Malformed references are refused rather than guessed at.
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"argument":{}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","name":"x"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/tool","name":"x"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":["ref/prompt","x"]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"a","name":"b"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":"file:///a"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":[["file:///a"]]}}"#,
        ] {
            assert!(parse_body(body.as_bytes()).is_err(), "{body}");
        }
        // Each subscription counts as a call.
        let many = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{{"notifications":{{"resourceSubscriptions":[{}]}}}}}}"#,
            vec![r#""file:///a""#; MAX_CALLS + 1].join(",")
        );
        assert!(parse_body(many.as_bytes()).is_err());
        let batch = format!(
            "[{}, {}]",
            r#"{"jsonrpc":"2.0","id":0,"method":"ping"}"#,
            many.replace(&format!(",{}", r#""file:///a""#), "")
                .replacen(
                    r#""file:///a""#,
                    &vec![r#""file:///a""#; MAX_CALLS].join(","),
                    1
                )
        );
        assert!(parse_body(batch.as_bytes()).is_err());
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
