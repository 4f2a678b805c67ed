//! Step-up consent on the agent's side (issue 23): when a call is refused for want of a
//! grant, `cada-parent proxy` files a step-up request with the owner's approval service
//! (through the daemon, which has the enclave sign it) and answers the MCP client with a
//! URL-mode elicitation in the protocol version the client speaks; when the client calls
//! again after the owner approved, the one-transaction grant is installed in the enclave
//! and the call goes through. `docs/stepup.md` is the user's side of this module.
//!
//! # What the MCP specification says (read 2026, sources below)
//!
//! Sources: the specification repository `modelcontextprotocol/modelcontextprotocol` at
//! commit `b0f60ba5` — `schema/2025-11-25/schema.ts`, `schema/2026-07-28/schema.ts`,
//! `docs/specification/2025-11-25/client/elicitation.mdx`,
//! `docs/specification/2026-07-28/client/elicitation.mdx`,
//! `docs/specification/2026-07-28/basic/patterns/mrtr.mdx` (SEP-2322, "multi round-trip
//! requests"), SEP-1036 (URL-mode elicitation); the official SDKs PyPI `mcp` 2.3.0
//! (`mcp/shared/exceptions.py`, `mcp/client/_input_required.py`, `mcp/client/session.py`)
//! and npm `@modelcontextprotocol/sdk` 1.32.2 (`dist/esm/types.js`).
//!
//! **2025-11-25.** A client that supports URL mode says so in `initialize`:
//! `params.capabilities.elicitation.url` is an object (`{"elicitation": {"form": {},
//! "url": {}}}`; `ClientCapabilities.elicitation?: { form?: object; url?: object }`).
//! A server that cannot go on until the user visited a URL answers the request with
//! `URLElicitationRequiredError` (`URL_ELICITATION_REQUIRED = -32042`, in the range
//! JSON-RPC leaves to implementations), whose `data.elicitations` lists
//! `ElicitRequestURLParams`, each `{mode: "url", elicitationId, url, message}`; `data` may
//! carry other members (`[key: string]: unknown`). The specification's example:
//!
//! ```json
//! {"jsonrpc": "2.0", "id": 2, "error": {"code": -32042,
//!   "message": "This request requires more information.",
//!   "data": {"elicitations": [{"mode": "url",
//!     "elicitationId": "550e8400-e29b-41d4-a716-446655440000",
//!     "url": "https://mcp.example.com/connect?elicitationId=550e8400-…",
//!     "message": "Authorization is required to access your Example Co files."}]}}}
//! ```
//!
//! The client shows the URL, opens it only with the user's consent, and retries the
//! original request (a new JSON-RPC id, the same method and params). The server MAY send
//! `{"jsonrpc": "2.0", "method": "notifications/elicitation/complete", "params":
//! {"elicitationId": "…"}}` when the out-of-band interaction ended; clients MAY retry on it
//! and SHOULD keep a manual retry. The negotiated version travels on every later HTTP
//! request in the `MCP-Protocol-Version` header; the session in `Mcp-Session-Id`.
//!
//! **2026-07-28.** There is no `initialize` any more (`server/discover` instead) and no
//! HTTP session: every request carries `params._meta` with
//! `"io.modelcontextprotocol/protocolVersion"` and
//! `"io.modelcontextprotocol/clientCapabilities"` ("Capabilities are declared per-request
//! … Servers MUST NOT infer capabilities from prior requests"). `-32042` is retired: "Codes
//! defined by earlier protocol versions remain reserved and are never reused: … `-32042`
//! (URL elicitation required, 2025-11-25 only)". A server that needs input answers
//! `tools/call` with a *result* of type `InputRequiredResult`:
//! `{resultType: "input_required", inputRequests?: {KEY: {method: "elicitation/create",
//! params: ElicitRequestURLParams}}, requestState?: string}` (at least one of the two), and
//! `ElicitRequestURLParams` is `{mode: "url", message, url}` — no `elicitationId` (the
//! `requestState` ties the retry to the request). The client fulfils each input request
//! (for URL mode: asks the user, opens the URL, answers `{"action": "accept"}` — or
//! `"decline"` / `"cancel"`) and retries the original request with a new id carrying
//! `params.inputResponses: {KEY: ElicitResult}` and `params.requestState` echoed byte for
//! byte. A server MUST treat `requestState` as attacker-controlled and MAY answer
//! `InputRequiredResult` again until it has what it needs. `notifications/elicitation/
//! complete` has no place there (a 2026-07-28 server has no back channel outside a
//! request's own answer).
//!
//! **The SDKs.** PyPI `mcp` 2.3.0 speaks both: `Client(mode="legacy")` does the
//! 2025-11-25 handshake, `mode="2026-07-28"` pins the new version. With an
//! `elicitation_callback` it declares `elicitation: {form: {}, url: {}}`; a `-32042` error
//! surfaces as `MCPError` (`UrlElicitationRequiredError.from_error` reads it), while an
//! `InputRequiredResult` is driven by the client itself (`_input_required.py`: the
//! callback runs per input request, then the call is retried, at most 10 rounds). npm
//! `@modelcontextprotocol/sdk` 1.32.2 speaks 2025-11-25 at most (`LATEST_PROTOCOL_VERSION`)
//! and throws `UrlElicitationRequiredError` (`ErrorCode.UrlElicitationRequired`, -32042);
//! its 2026-07-28 successor is the split package `@modelcontextprotocol/client` 2.x (2.4.0:
//! `versionNegotiation: {mode: {pin: "2026-07-28"}}`, `input_required` fulfilled through the
//! `elicitation/create` handler, `inputRequired.autoFulfill` on by default).
//!
//! # What the proxy answers
//!
//! Per request, from the client's own declarations ([`ClientProfile::of`]): the
//! `_meta` of a 2026-07-28 request, else the session's `initialize` (by `Mcp-Session-Id`;
//! for servers without sessions by connection, else the latest sessionless client's) with
//! the `MCP-Protocol-Version` header:
//!
//! * 2026-07-28 (or later) with `elicitation.url`: [`Shape::InputRequired`] —
//!   `{"resultType": "input_required", "inputRequests": {"cada-step-up": {"method":
//!   "elicitation/create", "params": {"mode": "url", "message", "url"}}},
//!   "requestState": "cada-step-up:<local id>"}`;
//! * 2025-11-25 (or later, before 2026-07-28) with `elicitation.url`:
//!   [`Shape::UrlElicitationRequired`] — error `-32042` with `data.elicitations[{mode:
//!   "url", elicitationId, url, message}]` (the elicitation id is the approval service's
//!   request id) and the CADA members below;
//! * anything else: [`Shape::Plain`] — error `-32000` (the proxy's code for its own
//!   refusals) whose message starts `[stepup.required]` and names the URL.
//!
//! Errors carry `data: {"code": <rule>, "url", "elicitationId", "refusal": {"code", "by"},
//! "expires_at", "by": "cada-parent proxy"}`. The exact documents are built by
//! [`elicitation_answer`] and [`error_answer`]; `docs/stepup.md` shows them.
//!
//! `notifications/elicitation/complete` is not sent: in `ask` mode the proxy learns of an
//! approval only when the client calls again (it polls then, once), and injecting into the
//! client's standalone SSE stream, which belongs to the upstream, would mean parsing and
//! re-framing someone else's event stream. Clients keep their manual retry (the
//! specification's SHOULD); `--step-up wait=DURATION` is the mode that needs no retry.
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use aws_lc_rs::digest::{digest, SHA256};
use axum::http::HeaderMap;
use cada_protocol::b64;
use serde_json::{json, Map, Value};

pub mod daemon;
pub(crate) mod flow;
#[cfg(test)]
mod flow_tests;
pub mod pending;

pub use pending::{Pending, PendingKey, PendingStore, SessionInfo, Sessions};

/// `URLElicitationRequiredError` (2025-11-25 only).
pub const URL_ELICITATION_REQUIRED: i64 = -32042;
/// The JSON-RPC code of the proxy's own errors (implementation-defined range).
pub const PROXY_ERROR: i64 = -32000;
/// The first protocol version with URL-mode elicitation (and `-32042`).
pub const URL_ELICITATION_VERSION: &str = "2025-11-25";
/// The first protocol version that answers with `InputRequiredResult` instead.
pub const INPUT_REQUIRED_VERSION: &str = "2026-07-28";
/// The key of the proxy's elicitation in `inputRequests` / `inputResponses`.
pub const INPUT_KEY: &str = "cada-step-up";
/// The prefix of the `requestState` the proxy hands out (followed by a random local id).
pub const STATE_PREFIX: &str = "cada-step-up:";
/// The SSE comment that keeps a held answer alive in `wait` mode.
pub const KEEPALIVE: &[u8] = b": cada step-up pending\n\n";
/// How often [`KEEPALIVE`] is written.
pub const KEEPALIVE_EVERY: Duration = Duration::from_secs(10);
/// Longest `wait=DURATION`.
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);
/// Longest gap between two polls the proxy keeps, whatever the service asks.
pub const MAX_INTERVAL: Duration = Duration::from_secs(60);

/// The proxy's own step-up codes (the approval service's are
/// [`cada_protocol::stepup::codes`]).
pub mod codes {
    pub use cada_protocol::stepup::codes::{DENIED, EXPIRED};
    /// The call needs the owner's approval: open the URL, then call again.
    pub const REQUIRED: &str = "stepup.required";
    /// The user declined (or cancelled) opening the approval page (2026-07-28
    /// `inputResponses`).
    pub const DECLINED: &str = "stepup.declined";
    /// The step-up request could not be filed or polled (approval service unreachable,
    /// refused, or the daemon failed); the message says why.
    pub const UNAVAILABLE: &str = "stepup.unavailable";
}

/// `--step-up`: what the proxy does with a refusal that names a missing grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Pass the refusal on, as before step-up existed.
    Off,
    /// File a step-up request and answer the client with a URL elicitation; the client
    /// calls again after approval (the default).
    Ask,
    /// File, then hold the call up to this long while polling (CIBA poll mode), keeping an
    /// SSE answer alive, and finish it once approved.
    Wait(Duration),
}

impl Mode {
    /// Whether refusals are put to the owner at all.
    pub fn active(self) -> bool {
        self != Mode::Off
    }
}

impl FromStr for Mode {
    type Err = String;
    /// `off`, `ask` or `wait=DURATION` (`90s`, `5m`, `1h`, `500ms`; a bare number is
    /// seconds), at most 24 h.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => return Ok(Mode::Off),
            "ask" => return Ok(Mode::Ask),
            _ => {}
        }
        let Some(d) = s.strip_prefix("wait=") else {
            return Err(format!(
                "--step-up {s:?}: expected off, ask or wait=DURATION (e.g. wait=5m)"
            ));
        };
        let d = parse_duration(d).ok_or_else(|| {
            format!("--step-up {s:?}: DURATION is a number with ms, s, m or h, e.g. wait=90s")
        })?;
        if d.is_zero() || d > MAX_WAIT {
            return Err(format!(
                "--step-up {s:?}: DURATION must be more than 0 and at most 24h"
            ));
        }
        Ok(Mode::Wait(d))
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Off => f.write_str("off"),
            Mode::Ask => f.write_str("ask"),
            Mode::Wait(d) => write!(f, "wait={}ms", d.as_millis()),
        }
    }
}

fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    if n.is_empty() || n.len() > 9 {
        return None;
    }
    let n: u64 = n.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n * 60)),
        "h" => Some(Duration::from_secs(n * 3600)),
        _ => None,
    }
}

/// The proxy's step-up state: its mode, what clients declared, the pending requests.
pub struct StepUp {
    mode: Mode,
    /// How often a held SSE answer gets [`KEEPALIVE`] ([`KEEPALIVE_EVERY`]).
    pub(crate) keepalive: Duration,
    /// What each session's (or connection's) `initialize` declared.
    pub sessions: Sessions,
    /// Requests filed and not yet ended.
    pub pending: PendingStore,
    /// The poll under way per request id (calls held for one request share it).
    pub(crate) polls: pending::Polls<flow::Polling>,
}

impl StepUp {
    /// Step-up in `mode`.
    pub fn new(mode: Mode) -> Self {
        StepUp {
            mode,
            keepalive: KEEPALIVE_EVERY,
            sessions: Sessions::default(),
            pending: PendingStore::default(),
            polls: pending::Polls::default(),
        }
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether refusals are put to the owner.
    pub fn active(&self) -> bool {
        self.mode.active()
    }
}

/// How a client is told that the owner must approve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// 2025-11-25 with URL elicitation: error `-32042`.
    UrlElicitationRequired,
    /// 2026-07-28 with URL elicitation: an `InputRequiredResult`.
    InputRequired,
    /// No URL elicitation declared: a plain JSON-RPC error naming the URL.
    Plain,
}

/// What a client declared about itself, for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientProfile {
    /// The protocol version it speaks, if known.
    pub version: Option<String>,
    /// Whether it declared `capabilities.elicitation.url`.
    pub url_elicitation: bool,
}

impl ClientProfile {
    /// The profile of `call`: its own `_meta` when it carries a protocol version
    /// (2026-07-28: capabilities are per request and MUST NOT be inferred from earlier
    /// ones), else the `MCP-Protocol-Version` header and the session's `initialize`.
    pub fn of(call: &ToolCall, headers: &HeaderMap, session: Option<&SessionInfo>) -> Self {
        if let Some(version) = &call.meta_version {
            return ClientProfile {
                version: Some(version.clone()),
                url_elicitation: call.meta_url_elicitation,
            };
        }
        let header = headers
            .get("mcp-protocol-version")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        ClientProfile {
            version: header.or_else(|| session.and_then(|s| s.version.clone())),
            url_elicitation: session.is_some_and(|s| s.url_elicitation),
        }
    }

    /// The answer this client understands.
    pub fn shape(&self) -> Shape {
        let Some(v) = self.version.as_deref() else {
            return Shape::Plain;
        };
        if !self.url_elicitation || !is_date(v) {
            return Shape::Plain;
        }
        if v >= INPUT_REQUIRED_VERSION {
            Shape::InputRequired
        } else if v >= URL_ELICITATION_VERSION {
            Shape::UrlElicitationRequired
        } else {
            Shape::Plain
        }
    }
}

/// `YYYY-MM-DD`, the form of every protocol version (compared as strings).
fn is_date(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

/// The one `tools/call` request of a body (not a batch), read for step-up.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// Its JSON-RPC id (never null).
    pub id: Value,
    /// The tool.
    pub tool: String,
    /// `params.arguments` (empty when absent).
    pub arguments: Map<String, Value>,
    /// `params.requestState` (2026-07-28 retries).
    pub request_state: Option<String>,
    /// The `action` of `params.inputResponses["cada-step-up"]`, when present.
    pub input_action: Option<String>,
    /// `params._meta["io.modelcontextprotocol/protocolVersion"]`.
    pub meta_version: Option<String>,
    /// Whether `params._meta["io.modelcontextprotocol/clientCapabilities"]` declares
    /// `elicitation.url`.
    pub meta_url_elicitation: bool,
}

/// `_meta` members of 2026-07-28 requests.
const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

impl ToolCall {
    /// The tool call of `bytes`, when the body is exactly one `tools/call` request with
    /// an id and a string name; `None` otherwise (batches, notifications, other methods:
    /// step-up leaves them alone). The body is at most the proxy's limit already.
    pub fn parse(bytes: &[u8]) -> Option<ToolCall> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        let m = v.as_object()?;
        if m.get("method")?.as_str()? != "tools/call" {
            return None;
        }
        let id = m.get("id").filter(|i| !i.is_null())?.clone();
        let params = m.get("params")?.as_object()?;
        let tool = params.get("name")?.as_str()?.to_owned();
        let arguments = match params.get("arguments") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(a)) => a.clone(),
            Some(_) => return None,
        };
        let request_state = params
            .get("requestState")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let input_action = params
            .get("inputResponses")
            .and_then(|r| r.get(INPUT_KEY))
            .and_then(|r| r.get("action"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let meta = params.get("_meta");
        let meta_version = meta
            .and_then(|m| m.get(META_VERSION))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let meta_url_elicitation = meta
            .and_then(|m| m.get(META_CAPABILITIES))
            .and_then(|c| c.get("elicitation"))
            .and_then(|e| e.get("url"))
            .is_some_and(Value::is_object);
        Some(ToolCall {
            id,
            tool,
            arguments,
            request_state,
            input_action,
            meta_version,
            meta_url_elicitation,
        })
    }

    /// The local id in a `requestState` this proxy handed out.
    pub fn our_state(&self) -> Option<&str> {
        self.request_state.as_deref()?.strip_prefix(STATE_PREFIX)
    }

    /// Whether the user declined or cancelled the proxy's elicitation (2026-07-28).
    pub fn declined(&self) -> bool {
        matches!(self.input_action.as_deref(), Some("decline" | "cancel"))
    }

    /// The digest of the arguments ([`arguments_digest`]).
    pub fn arguments_digest(&self) -> String {
        arguments_digest(&self.arguments)
    }
}

/// `bytes` without the proxy's own `params.requestState` and
/// `params.inputResponses["cada-step-up"]` (the upstream never asked for them: a server
/// MUST treat a `requestState` it did not issue as attacker-controlled, and may refuse
/// it). `None` when there is nothing of the proxy's to remove. Other input responses stay.
pub fn strip_own_input(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(bytes).ok()?;
    let params = v.get_mut("params")?.as_object_mut()?;
    let ours = params
        .get("requestState")
        .and_then(Value::as_str)
        .is_some_and(|s| s.starts_with(STATE_PREFIX));
    let mut changed = false;
    if ours {
        params.remove("requestState");
        changed = true;
    }
    if let Some(Value::Object(r)) = params.get_mut("inputResponses") {
        changed |= r.remove(INPUT_KEY).is_some();
        if r.is_empty() {
            params.remove("inputResponses");
        }
    }
    if !changed {
        return None;
    }
    serde_json::to_vec(&v).ok()
}

/// The base64url SHA-256 of the arguments in a canonical form (object members sorted by
/// name at every level, no whitespace, strings and numbers as serde_json writes them): the
/// same call sent twice, whatever its member order, has the same digest.
pub fn arguments_digest(args: &Map<String, Value>) -> String {
    let mut out = String::new();
    canonical_object(args, &mut out);
    b64::encode(digest(&SHA256, out.as_bytes()))
}

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => canonical_object(m, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn canonical_object(m: &Map<String, Value>, out: &mut String) {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    out.push('{');
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(k.clone()).to_string());
        out.push(':');
        if let Some(v) = m.get(k) {
            canonical(v, out);
        }
    }
    out.push('}');
}

/// Whether a refusal code names a missing grant, which the owner can give: the enclave's
/// or the gate's `contract.not_permitted.tool`, the gate's `insufficient_scope`, and the
/// `grant.*` codes — except `grant.arguments_unchecked`, which no approval fixes (nobody on
/// the path checks arguments).
pub fn names_missing_grant(code: &str) -> bool {
    code == "contract.not_permitted.tool"
        || code == "insufficient_scope"
        || (code.starts_with("grant.") && code != "grant.arguments_unchecked")
}

/// A filed step-up request, as the client is told about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elicitation {
    /// The approval service's request id (the 2025-11-25 `elicitationId`).
    pub id: String,
    /// The owner's page for it.
    pub url: String,
    /// The `requestState` (2026-07-28): [`STATE_PREFIX`] and the proxy's local id.
    pub state: String,
    /// The refused tool.
    pub tool: String,
    /// The refusal's code.
    pub refusal: String,
    /// Who refused (`enclave`, `gate`).
    pub by: String,
    /// When the request expires (Unix seconds).
    pub expires_at: u64,
}

impl Elicitation {
    /// The sentence the client shows its user.
    pub fn message(&self) -> String {
        let tool: String = self.tool.chars().take(64).collect();
        format!(
            "The owner must approve the call of tool {tool:?} (refused by the {}: {}). \
             Open the approval page, then call again.",
            self.by, self.refusal
        )
    }

    /// The `data` members every step-up answer carries.
    fn data(&self, code: &str) -> Map<String, Value> {
        let mut d = Map::new();
        d.insert("code".into(), json!(code));
        d.insert("url".into(), json!(self.url));
        d.insert("elicitationId".into(), json!(self.id));
        d.insert(
            "refusal".into(),
            json!({"code": self.refusal, "by": self.by}),
        );
        d.insert("expires_at".into(), json!(self.expires_at));
        d.insert("by".into(), json!("cada-parent proxy"));
        d
    }
}

/// The whole JSON-RPC answer to request `id` telling the client to have the owner approve,
/// in `shape`.
pub fn elicitation_answer(shape: Shape, id: &Value, e: &Elicitation) -> Value {
    match shape {
        Shape::UrlElicitationRequired => {
            let mut data = e.data(codes::REQUIRED);
            data.insert(
                "elicitations".into(),
                json!([{"mode": "url", "elicitationId": e.id, "url": e.url,
                        "message": e.message()}]),
            );
            json!({"jsonrpc": "2.0", "id": id, "error": {
                "code": URL_ELICITATION_REQUIRED,
                "message": format!("[{}] {} The approval page: {}", codes::REQUIRED,
                    e.message(), e.url),
                "data": data}})
        }
        Shape::InputRequired => json!({"jsonrpc": "2.0", "id": id, "result": {
            "resultType": "input_required",
            "inputRequests": {INPUT_KEY: {"method": "elicitation/create", "params": {
                "mode": "url", "message": e.message(), "url": e.url}}},
            "requestState": e.state}}),
        Shape::Plain => {
            let message = format!(
                "[{}] {} The approval page: {}",
                codes::REQUIRED,
                e.message(),
                e.url
            );
            json!({"jsonrpc": "2.0", "id": id, "error": {
                "code": PROXY_ERROR, "message": message,
                "data": e.data(codes::REQUIRED)}})
        }
    }
}

/// A JSON-RPC error answering request `id` with the rule `code` (`[code] message`), `data`
/// holding `code`, `by` and `extra`.
pub fn error_answer(id: &Value, code: &str, message: &str, extra: Map<String, Value>) -> Value {
    let mut data = extra;
    data.insert("code".into(), json!(code));
    data.insert("by".into(), json!("cada-parent proxy"));
    json!({"jsonrpc": "2.0", "id": id, "error": {
        "code": PROXY_ERROR, "message": format!("[{code}] {message}"), "data": data}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn e() -> Elicitation {
        Elicitation {
            id: "AAAAAAAAAAAAAAAAAAAAAA".into(),
            url: "http://localhost:8470/r/AAAAAAAAAAAAAAAAAAAAAA".into(),
            state: "cada-step-up:local".into(),
            tool: "transfer".into(),
            refusal: "contract.not_permitted.tool".into(),
            by: "enclave".into(),
            expires_at: 1_800_000_000,
        }
    }

    fn profile(version: Option<&str>, url: bool) -> ClientProfile {
        ClientProfile {
            version: version.map(str::to_owned),
            url_elicitation: url,
        }
    }

    #[test]
    fn each_version_gets_its_shape() {
        assert_eq!(
            profile(Some("2025-11-25"), true).shape(),
            Shape::UrlElicitationRequired
        );
        assert_eq!(
            profile(Some("2026-07-28"), true).shape(),
            Shape::InputRequired
        );
        // Later versions keep the newest shape known.
        assert_eq!(
            profile(Some("2027-01-01"), true).shape(),
            Shape::InputRequired
        );
        // No URL elicitation declared, an older version, or no version at all: plain.
        for p in [
            profile(Some("2025-11-25"), false),
            profile(Some("2026-07-28"), false),
            profile(Some("2025-06-18"), true),
            profile(None, true),
            profile(Some("draft"), true),
        ] {
            assert_eq!(p.shape(), Shape::Plain, "{p:?}");
        }
    }

    #[test]
    fn the_2025_11_25_answer_is_url_elicitation_required() {
        let a = elicitation_answer(Shape::UrlElicitationRequired, &json!(7), &e());
        assert_eq!(a["id"], 7);
        assert_eq!(a["error"]["code"], -32042);
        let el = &a["error"]["data"]["elicitations"];
        assert_eq!(el.as_array().unwrap().len(), 1);
        assert_eq!(el[0]["mode"], "url");
        assert_eq!(el[0]["elicitationId"], "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(el[0]["url"], e().url);
        assert!(el[0]["message"].as_str().unwrap().contains("transfer"));
        assert_eq!(a["error"]["data"]["code"], "stepup.required");
        assert_eq!(
            a["error"]["data"]["refusal"]["code"],
            "contract.not_permitted.tool"
        );
        assert!(a.get("result").is_none());
    }

    #[test]
    fn the_2026_07_28_answer_is_an_input_required_result() {
        let a = elicitation_answer(Shape::InputRequired, &json!("r-1"), &e());
        assert_eq!(a["id"], "r-1");
        assert!(a.get("error").is_none());
        let r = &a["result"];
        assert_eq!(r["resultType"], "input_required");
        assert_eq!(r["requestState"], "cada-step-up:local");
        let req = &r["inputRequests"]["cada-step-up"];
        assert_eq!(req["method"], "elicitation/create");
        assert_eq!(req["params"]["mode"], "url");
        assert_eq!(req["params"]["url"], e().url);
        // 2026-07-28's ElicitRequestURLParams has no elicitationId.
        assert_eq!(
            req["params"].as_object().unwrap().len(),
            3,
            "{}",
            req["params"]
        );
    }

    #[test]
    fn the_plain_answer_names_the_url_and_the_rule() {
        let a = elicitation_answer(Shape::Plain, &json!(1), &e());
        assert_eq!(a["error"]["code"], -32000);
        let m = a["error"]["message"].as_str().unwrap();
        assert!(m.starts_with("[stepup.required]"), "{m}");
        assert!(m.contains(&e().url), "{m}");
        assert_eq!(a["error"]["data"]["url"], e().url);
        assert_eq!(a["error"]["data"]["code"], "stepup.required");
        assert!(a["error"]["data"].get("elicitations").is_none());
    }

    #[test]
    fn errors_name_their_rule() {
        let a = error_answer(&json!(3), codes::DENIED, "the owner denied it", Map::new());
        assert_eq!(a["error"]["code"], -32000);
        assert_eq!(a["error"]["data"]["code"], "stepup.denied");
        assert!(a["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("[stepup.denied] "));
    }

    #[test]
    fn tool_calls_are_read_with_their_declarations() {
        let body = br#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{
            "name":"transfer","arguments":{"to":"alice","amount":500},
            "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",
                     "io.modelcontextprotocol/clientCapabilities":{"elicitation":{"url":{}}}},
            "requestState":"cada-step-up:xyz",
            "inputResponses":{"cada-step-up":{"action":"accept"},"other":{"action":"accept"}}}}"#;
        let c = ToolCall::parse(body).unwrap();
        assert_eq!(c.tool, "transfer");
        assert_eq!(c.id, json!(5));
        assert_eq!(c.our_state(), Some("xyz"));
        assert!(!c.declined());
        let p = ClientProfile::of(&c, &HeaderMap::new(), None);
        assert_eq!(p.shape(), Shape::InputRequired);

        // The proxy's own members go, the rest stays.
        let stripped = strip_own_input(body).unwrap();
        let v: Value = serde_json::from_slice(&stripped).unwrap();
        assert!(v["params"].get("requestState").is_none());
        assert!(v["params"]["inputResponses"].get("cada-step-up").is_none());
        assert_eq!(v["params"]["inputResponses"]["other"]["action"], "accept");
        assert_eq!(v["params"]["arguments"]["amount"], 500);
        assert!(strip_own_input(&stripped).is_none());

        // Not ours: left alone.
        let foreign = br#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{
            "name":"t","requestState":"server-state"}}"#;
        assert!(strip_own_input(foreign).is_none());

        // Not a single tool call with an id: no step-up.
        for b in [
            &br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"t"}}"#[..],
            br#"{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"t"}}"#,
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}]"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":[1]}}"#,
        ] {
            assert!(ToolCall::parse(b).is_none(), "{}", String::from_utf8_lossy(b));
        }

        let declined = br#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{
            "name":"t","inputResponses":{"cada-step-up":{"action":"decline"}}}}"#;
        assert!(ToolCall::parse(declined).unwrap().declined());
    }

    #[test]
    fn a_2025_session_is_known_by_header_and_initialize() {
        let c = ToolCall::parse(
            br#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"t"}}"#,
        )
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "mcp-protocol-version",
            HeaderValue::from_static("2025-11-25"),
        );
        let s = SessionInfo {
            version: Some("2025-11-25".into()),
            url_elicitation: true,
        };
        assert_eq!(
            ClientProfile::of(&c, &h, Some(&s)).shape(),
            Shape::UrlElicitationRequired
        );
        // Without the session's initialize, capabilities are unknown: plain.
        assert_eq!(ClientProfile::of(&c, &h, None).shape(), Shape::Plain);
    }

    #[test]
    fn argument_digests_ignore_member_order_only() {
        let a: Map<String, Value> =
            serde_json::from_str(r#"{"b":{"y":1,"x":[1,"2"]},"a":"é"}"#).unwrap();
        let b: Map<String, Value> =
            serde_json::from_str(r#"{"a":"é","b":{"x":[1,"2"],"y":1}}"#).unwrap();
        let c: Map<String, Value> =
            serde_json::from_str(r#"{"a":"é","b":{"x":["2",1],"y":1}}"#).unwrap();
        assert_eq!(arguments_digest(&a), arguments_digest(&b));
        assert_ne!(arguments_digest(&a), arguments_digest(&c));
        assert_ne!(arguments_digest(&a), arguments_digest(&Map::new()));
    }

    #[test]
    fn only_missing_grants_are_put_to_the_owner() {
        for c in [
            "contract.not_permitted.tool",
            "insufficient_scope",
            "grant.tool",
            "grant.used",
            "grant.arguments.max",
        ] {
            assert!(names_missing_grant(c), "{c}");
        }
        for c in [
            "grant.arguments_unchecked",
            "contract.revoked",
            "contract.expired",
            "pop.replay",
            "contract.not_permitted.resource",
        ] {
            assert!(!names_missing_grant(c), "{c}");
        }
    }

    #[test]
    fn modes_parse() {
        assert_eq!("off".parse::<Mode>().unwrap(), Mode::Off);
        assert_eq!("ask".parse::<Mode>().unwrap(), Mode::Ask);
        assert_eq!(
            "wait=90s".parse::<Mode>().unwrap(),
            Mode::Wait(Duration::from_secs(90))
        );
        assert_eq!(
            "wait=5m".parse::<Mode>().unwrap(),
            Mode::Wait(Duration::from_secs(300))
        );
        assert_eq!(
            "wait=30".parse::<Mode>().unwrap(),
            Mode::Wait(Duration::from_secs(30))
        );
        assert_eq!(
            "wait=1500ms".parse::<Mode>().unwrap(),
            Mode::Wait(Duration::from_millis(1500))
        );
        for bad in [
            "", "on", "wait", "wait=", "wait=0", "wait=25h", "wait=5d", "wait=-1",
        ] {
            assert!(bad.parse::<Mode>().is_err(), "{bad}");
        }
        assert!(!Mode::Off.active() && Mode::Ask.active());
    }
}
