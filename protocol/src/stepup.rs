//! Step-up requests (issue 23): what an enclave's agent sends to its owner's approval service
//! (`cada-owner serve`) when a server refused a call that no installed contract grants, and
//! what the service answers. `docs/approval.md#api`.
//!
//! * `POST {stepUp}/v1/step-up` ([`STEP_UP_PATH`]) with a CADA proof: the `DPoP` header is
//!   a CB-PoP the enclave signed for exactly that URL and method, `CADA-Evidence` carries
//!   the evidence envelope, and the body's digest is bound (`Content-Digest`, the proof's
//!   `cada.bd`). The body is a [`StepUpRequest`] (≤ [`MAX_REQUEST_BODY`] bytes), read with
//!   [`StepUpRequest::parse`]. Answer 201: [`StepUpCreated`] (with `Location` = `poll`) —
//!   the same answer (the same id) when this enclave key already has a pending request for
//!   the identical call and want, so that a retry does not ask the owner twice.
//! * `GET {stepUp}/v1/step-up/{id}` ([`poll_path`]) with a fresh proof from the same enclave
//!   key (evidence as for any CADA proof). Answer 200: [`StepUpStatus`]. Polling faster than
//!   the `interval` gets `{"status":"pending","code":"slow_down"}` (CIBA poll mode,
//!   OpenID CIBA §11); an approved grant is handed out to the filing key only.
//! * The owner's page for one request is `{stepUp}/r/{id}` ([`page_path`]).
//!
//! Refusals are RFC 9457 problem JSON whose `code` is one of [`codes`] (or a verifier code
//! passed through, e.g. `pop.replay`).
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::url::{HttpUrl, MAX_URL_LEN};
use crate::ProtocolError;

/// The path of the filing endpoint, below the `stepUp` base URL.
pub const STEP_UP_PATH: &str = "/v1/step-up";
/// Largest step-up request body (16 KiB).
pub const MAX_REQUEST_BODY: usize = 16 * 1024;
/// Largest answer body a client reads (a status with a compact grant is well below it).
pub const MAX_ANSWER_BODY: usize = 32 * 1024;
/// Most top-level arguments of the refused call (the contract's limit of constrained
/// arguments per authorization detail).
pub const MAX_ARGUMENTS: usize = 32;
/// Longest string anywhere in the arguments (the contract's limit for constraint strings).
pub const MAX_ARGUMENT_STRING: usize = 1024;
/// Deepest nesting of an argument value (objects and arrays).
pub const MAX_ARGUMENT_DEPTH: usize = 8;
/// Longest tool name (as in [`crate::mcp::MAX_TARGET_LEN`]'s rules, tighter).
pub const MAX_TOOL_LEN: usize = 256;
/// Longest refusal code.
pub const MAX_CODE_LEN: usize = 128;
/// Longest refusal message.
pub const MAX_MESSAGE_LEN: usize = 2048;
/// Longest contract digest.
pub const MAX_DIGEST_LEN: usize = 128;
/// Length of a request id: 128 random bits as unpadded base64url.
pub const ID_LEN: usize = 22;
/// The poll interval the service asks for, in seconds, unless it says otherwise.
pub const DEFAULT_INTERVAL_SECS: u64 = 2;

/// The stable codes of step-up answers and refusals.
pub mod codes {
    /// The evidence does not lock the proof's key to this service's owner (another owner's
    /// enclave, or an enclave locked to no owner). 403.
    pub const NOT_OWNER: &str = "stepup.not_owner";
    /// No evidence with the proof, or evidence that does not verify (the verifier's own
    /// code is in the message). 401.
    pub const EVIDENCE: &str = "stepup.evidence";
    /// The proof (its `jti`) was already used. 401.
    pub const REPLAY: &str = "stepup.replay";
    /// Too many requests from this enclave key: at most 5 pending and 30 per hour. 429 with
    /// `Retry-After`.
    pub const RATE_LIMITED: &str = "stepup.rate_limited";
    /// The body is larger than [`super::MAX_REQUEST_BODY`] or a field exceeds its limit. 413.
    pub const TOO_LARGE: &str = "stepup.too_large";
    /// The body is not a step-up request (malformed JSON, a missing or unknown member, a
    /// URL that is not in normal form…). 400.
    pub const INVALID: &str = "stepup.invalid";
    /// No request with this id (never filed, or forgotten after it ended). 404.
    pub const UNKNOWN: &str = "stepup.unknown";
    /// The request was filed by another enclave key: only the filing key may poll it. 403.
    pub const OTHER_KEY: &str = "stepup.other_key";
    /// The owner denied the request (in a 200 status answer); also a filing of the same
    /// call within the service's cool-off after a denial (403 with `Retry-After`).
    pub const DENIED: &str = "stepup.denied";
    /// Nobody answered the request before it expired (in a 200 status answer).
    pub const EXPIRED: &str = "stepup.expired";
    /// Polled faster than the interval: wait `interval` seconds longer (CIBA `slow_down`;
    /// in a 200 status answer with status `pending`).
    pub const SLOW_DOWN: &str = "slow_down";
}

/// Which component refused the call the agent asks to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefusedBy {
    /// The enclave refused to sign (e.g. `contract.not_permitted.tool`).
    Enclave,
    /// A CADA gate refused the proof (e.g. 403 `insufficient_scope`, `grant.*`), as a filer
    /// that verified it is a gate's refusal reports it.
    Gate,
    /// A `cada-sts` refused the exchange.
    Sts,
    /// Reported in the answer of the server at `refusal.server` (a CADA gate in front of
    /// the MCP server, or the MCP server itself: both answer at that URL and nothing in the
    /// answer is signed), so not verified by CADA: its code and message are the server's
    /// claim. What `cada-parent proxy` files for an upstream's 401/403.
    Server,
}

impl RefusedBy {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusedBy::Enclave => "enclave",
            RefusedBy::Gate => "gate",
            RefusedBy::Sts => "sts",
            RefusedBy::Server => "server",
        }
    }
}

/// What the agent asks for: one call, or the same tool for some minutes (the owner decides
/// the minutes and may grant less than asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Want {
    /// This one call with exactly these arguments.
    Once,
    /// The same tool within the same argument limits, for some minutes.
    Minutes,
}

/// The call the agent was refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedCall {
    /// The URL of the MCP server (the refused request's audience, normal form).
    pub audience: String,
    /// The HTTP method of the refused request (`POST` for MCP).
    pub method: String,
    /// The tool (`tools/call` `params.name`).
    pub tool: String,
    /// The call's arguments (`params.arguments`), exactly as the agent sent them.
    #[serde(default, deserialize_with = "unique_map")]
    pub arguments: Map<String, Value>,
}

/// Who refused the call, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    /// The refusal's stable code (`contract.not_permitted.tool`, `insufficient_scope`…).
    pub code: String,
    /// Which component refused.
    pub by: RefusedBy,
    /// The server that refused (its URL; for the enclave, the audience it refused to sign).
    pub server: String,
    /// The refusal's message, as received (shown to the owner, escaped).
    #[serde(default)]
    pub message: String,
}

/// The body of `POST {stepUp}/v1/step-up`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepUpRequest {
    /// The digest (`cada.dtc`) of the contract the agent worked under.
    pub contract: String,
    /// The refused call.
    pub request: RequestedCall,
    /// Who refused it and why.
    pub refusal: Refusal,
    /// One call or some minutes.
    pub want: Want,
}

/// The 201 answer to a filed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepUpCreated {
    /// The request's id (128 random bits, unpadded base64url).
    pub id: String,
    /// The owner's page for this request (`{stepUp}/r/{id}`): the URL the agent shows its
    /// user (URL-mode elicitation).
    pub url: String,
    /// Where to poll (`{stepUp}/v1/step-up/{id}`).
    pub poll: String,
    /// When the request expires (Unix seconds).
    pub expires_at: u64,
    /// The minimum number of seconds between two polls.
    pub interval: u64,
}

/// The state of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Not yet answered.
    Pending,
    /// Approved: the answer carries the grant.
    Approved,
    /// Denied by the owner ([`codes::DENIED`]).
    Denied,
    /// Expired unanswered ([`codes::EXPIRED`]).
    Expired,
}

impl Status {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Expired => "expired",
        }
    }
}

/// The 200 answer to a poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepUpStatus {
    /// The request's state.
    pub status: Status,
    /// With `approved`: the one-transaction grant, a compact `vc+jwt` contract signed by
    /// the owner key, to install in the enclave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// [`codes::DENIED`], [`codes::EXPIRED`] or [`codes::SLOW_DOWN`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// What happened, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// With `slow_down`: the interval to keep from now on, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u64>,
}

/// The poll path of request `id` (`/v1/step-up/{id}`).
pub fn poll_path(id: &str) -> String {
    format!("{STEP_UP_PATH}/{id}")
}

/// The owner's page of request `id` (`/r/{id}`).
pub fn page_path(id: &str) -> String {
    format!("/r/{id}")
}

/// Whether `id` has the shape of a request id (22 base64url characters), so that nothing
/// else is looked up or echoed.
pub fn is_request_id(id: &str) -> bool {
    id.len() == ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl StepUpRequest {
    /// Reads a request body within the limits of this module: ≤ [`MAX_REQUEST_BODY`] bytes,
    /// no unknown or duplicate members, `audience` and `server` URLs in normal form,
    /// a token `method`, a tool name of printable characters, ≤ [`MAX_ARGUMENTS`] arguments
    /// whose strings are ≤ [`MAX_ARGUMENT_STRING`] bytes and whose values nest at most
    /// [`MAX_ARGUMENT_DEPTH`] deep. [`ProtocolError::TooLarge`] for a size limit
    /// (`stepup.too_large`), other errors for a malformed body (`stepup.invalid`).
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtocolError> {
        if bytes.len() > MAX_REQUEST_BODY {
            return Err(ProtocolError::TooLarge {
                what: "step-up request",
                len: bytes.len(),
                max: MAX_REQUEST_BODY,
            });
        }
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ProtocolError::invalid(
                "step-up request",
                "the body must be a JSON object",
            ));
        }
        let req: StepUpRequest =
            serde_json::from_slice(bytes).map_err(|e| ProtocolError::Json {
                what: "step-up request",
                detail: e.to_string(),
            })?;
        req.check()?;
        Ok(req)
    }

    /// Checks the limits and shapes [`StepUpRequest::parse`] checks (for a request built in
    /// code before it is sent).
    pub fn check(&self) -> Result<(), ProtocolError> {
        too_long("contract", &self.contract, MAX_DIGEST_LEN)?;
        if self.contract.is_empty()
            || !self
                .contract
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b':')
        {
            return Err(ProtocolError::invalid(
                "step-up contract",
                "the contract digest must be the cada.dtc value (base64url)",
            ));
        }
        let r = &self.request;
        too_long("request.audience", &r.audience, MAX_URL_LEN)?;
        HttpUrl::parse_canonical(&r.audience)?;
        if r.method.is_empty()
            || r.method.len() > 16
            || !r.method.bytes().all(|b| b.is_ascii_uppercase())
        {
            return Err(ProtocolError::invalid(
                "step-up request.method",
                "the method must be an upper-case HTTP method such as POST",
            ));
        }
        too_long("request.tool", &r.tool, MAX_TOOL_LEN)?;
        if r.tool.is_empty() || r.tool.chars().any(char::is_control) {
            return Err(ProtocolError::invalid(
                "step-up request.tool",
                "the tool name must be non-empty, without control characters",
            ));
        }
        if r.arguments.len() > MAX_ARGUMENTS {
            return Err(ProtocolError::TooLarge {
                what: "step-up request.arguments (count)",
                len: r.arguments.len(),
                max: MAX_ARGUMENTS,
            });
        }
        for (name, value) in &r.arguments {
            too_long("argument name", name, MAX_ARGUMENT_STRING)?;
            check_value(value, 0)?;
        }
        let f = &self.refusal;
        too_long("refusal.code", &f.code, MAX_CODE_LEN)?;
        if f.code.is_empty()
            || !f
                .code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(ProtocolError::invalid(
                "step-up refusal.code",
                "the code must be a stable code such as contract.not_permitted.tool",
            ));
        }
        too_long("refusal.server", &f.server, MAX_URL_LEN)?;
        HttpUrl::parse_canonical(&f.server)?;
        too_long("refusal.message", &f.message, MAX_MESSAGE_LEN)?;
        Ok(())
    }
}

fn too_long(what: &'static str, s: &str, max: usize) -> Result<(), ProtocolError> {
    if s.len() > max {
        return Err(ProtocolError::TooLarge {
            what,
            len: s.len(),
            max,
        });
    }
    Ok(())
}

fn check_value(v: &Value, depth: usize) -> Result<(), ProtocolError> {
    if depth > MAX_ARGUMENT_DEPTH {
        return Err(ProtocolError::invalid(
            "step-up request.arguments",
            format!("values nest deeper than {MAX_ARGUMENT_DEPTH}"),
        ));
    }
    match v {
        Value::String(s) => too_long("argument string", s, MAX_ARGUMENT_STRING),
        Value::Array(a) => a.iter().try_for_each(|x| check_value(x, depth + 1)),
        Value::Object(o) => o.iter().try_for_each(|(k, x)| {
            too_long("argument string", k, MAX_ARGUMENT_STRING)?;
            check_value(x, depth + 1)
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

/// A JSON object read into a map, refusing a repeated member: a checker and a server that
/// kept different copies of `amount` would approve one and execute the other.
fn unique_map<'de, D: Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Map<String, Value>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object of arguments without repeated names")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = Map::new();
            while let Some((k, v)) = m.next_entry::<String, Value>()? {
                if out.len() >= MAX_ARGUMENTS {
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX_ARGUMENTS} arguments"
                    )));
                }
                if out.contains_key(&k) {
                    return Err(serde::de::Error::custom(format!(
                        "the argument {:?} appears twice",
                        k.chars().take(64).collect::<String>()
                    )));
                }
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    d.deserialize_map(V)
}

/// The step-up code for a [`StepUpRequest::parse`] error: `stepup.too_large` or
/// `stepup.invalid`.
pub fn parse_error_code(e: &ProtocolError) -> &'static str {
    match e {
        ProtocolError::TooLarge { .. } => codes::TOO_LARGE,
        _ => codes::INVALID,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Value {
        serde_json::json!({
            "contract": "abcDEF_-123",
            "request": {"audience": "https://mcp.example/mcp", "method": "POST",
                        "tool": "transfer", "arguments": {"amount": 500, "to": "alice"}},
            "refusal": {"code": "contract.not_permitted.tool", "by": "enclave",
                        "server": "https://mcp.example/mcp", "message": "not granted"},
            "want": "once"
        })
    }

    fn parse(v: &Value) -> Result<StepUpRequest, ProtocolError> {
        StepUpRequest::parse(&serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn parses_the_documented_body() {
        let r = parse(&body()).unwrap();
        assert_eq!(r.request.tool, "transfer");
        assert_eq!(r.request.arguments["amount"], 500);
        assert_eq!(r.refusal.by, RefusedBy::Enclave);
        assert_eq!(r.want, Want::Once);
        // Round trip.
        let again = parse(&serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(again, r);
        // An upstream's own claim is filed as such.
        let mut b = body();
        b["refusal"]["by"] = "server".into();
        assert_eq!(parse(&b).unwrap().refusal.by, RefusedBy::Server);
        assert_eq!(RefusedBy::Server.as_str(), "server");
    }

    #[test]
    fn refuses_oversize_bodies_and_fields() {
        let big = vec![b' '; MAX_REQUEST_BODY + 1];
        let e = StepUpRequest::parse(&big).unwrap_err();
        assert_eq!(parse_error_code(&e), codes::TOO_LARGE);

        let mut b = body();
        b["request"]["arguments"]["memo"] = Value::String("x".repeat(MAX_ARGUMENT_STRING + 1));
        assert_eq!(parse_error_code(&parse(&b).unwrap_err()), codes::TOO_LARGE);

        let mut b = body();
        b["refusal"]["message"] = Value::String("m".repeat(MAX_MESSAGE_LEN + 1));
        assert_eq!(parse_error_code(&parse(&b).unwrap_err()), codes::TOO_LARGE);

        let mut b = body();
        let many: Map<String, Value> = (0..=MAX_ARGUMENTS)
            .map(|i| (format!("a{i}"), Value::from(i)))
            .collect();
        b["request"]["arguments"] = Value::Object(many);
        assert!(parse(&b).is_err());
    }

    #[test]
    fn refuses_malformed_bodies() {
        for (path, v) in [
            ("/want", Value::from("forever")),
            ("/refusal/by", Value::from("someone")),
            ("/request/audience", Value::from("https://MCP.example/mcp")),
            (
                "/request/audience",
                Value::from("https://mcp.example/a/../b"),
            ),
            ("/refusal/server", Value::from("not a url")),
            ("/request/method", Value::from("post")),
            ("/request/tool", Value::from("")),
            ("/request/tool", Value::from("a\u{7}b")),
            ("/refusal/code", Value::from("<script>")),
            ("/contract", Value::from("")),
            ("/request/arguments", Value::from("not an object")),
        ] {
            let mut b = body();
            *b.pointer_mut(path).unwrap() = v;
            let e = parse(&b).unwrap_err();
            assert_eq!(parse_error_code(&e), codes::INVALID, "{path}: {e}");
        }
        let mut b = body();
        b["extra"] = Value::from(1);
        assert!(parse(&b).is_err(), "unknown members are refused");
        assert!(StepUpRequest::parse(b"[]").is_err());
        assert!(StepUpRequest::parse(b"{").is_err());
        assert!(StepUpRequest::parse(b"").is_err());
    }

    #[test]
    fn refuses_repeated_arguments_and_deep_values() {
        let text = serde_json::to_string(&body())
            .unwrap()
            .replace(r#""amount":500"#, r#""amount":1,"amount":500"#);
        let e = StepUpRequest::parse(text.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("appears twice"), "{e}");

        let mut b = body();
        let mut deep = Value::from(1);
        for _ in 0..=MAX_ARGUMENT_DEPTH {
            deep = Value::Array(vec![deep]);
        }
        b["request"]["arguments"]["x"] = deep;
        assert_eq!(parse_error_code(&parse(&b).unwrap_err()), codes::INVALID);
        // Nesting far beyond serde_json's recursion limit: an error, no stack overflow.
        let nested = format!("{}{}", "[".repeat(7000), "]".repeat(7000));
        let text = serde_json::to_string(&body())
            .unwrap()
            .replace("500", &nested);
        assert!(StepUpRequest::parse(text.as_bytes()).is_err());
    }

    #[test]
    fn ids_and_paths() {
        assert!(is_request_id("AAAAAAAAAAAAAAAAAAAAAA"));
        assert!(!is_request_id("AAAAAAAAAAAAAAAAAAAAA"));
        assert!(!is_request_id("AAAAAAAAAAAAAAAAAAAAA/"));
        assert_eq!(poll_path("x"), "/v1/step-up/x");
        assert_eq!(page_path("x"), "/r/x");
    }

    #[test]
    fn status_answers_serialize_compactly() {
        let s = StepUpStatus {
            status: Status::Pending,
            grant: None,
            code: Some(codes::SLOW_DOWN.into()),
            message: None,
            interval: Some(4),
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"status":"pending","code":"slow_down","interval":4}"#
        );
        let back: StepUpStatus = serde_json::from_str(r#"{"status":"denied"}"#).unwrap();
        assert_eq!(back.status, Status::Denied);
    }
}
