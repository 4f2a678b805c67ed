//! How the gate says no. Every refusal is:
//!
//! * an HTTP status: 400 malformed request, 401 the proof, its evidence or token (with
//!   `WWW-Authenticate: DPoP resource_metadata="…", error="…"`), 403 an MCP tool the
//!   contract does not grant, or a one-transaction grant that does not cover the call, its
//!   arguments, or was used already (`error="insufficient_scope"`, `scope="…"`: the fix is
//!   a new grant), an argument-limited grant where the arguments cannot be read
//!   (`grant.arguments_unchecked`, `error="invalid_request"`: send the call through the
//!   gate in proxy mode) or measurements not allowed here, 413 body too large, 415 not
//!   JSON, 502/504 upstream, 503 a store down;
//! * a JSON-RPC error for each request of the body (so an MCP client shows it as the call's
//!   error), whose message starts with the rule's stable code and number, e.g.
//!   `[contract.not_permitted.tool] rule 13: MCP tool "delete_all" is not granted (echo)`,
//!   and whose `data` holds `{code, rule, status}`.
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cada_attestation_verifier::decide::Refusal;
use cada_attestation_verifier::VerifyError;
use cada_protocol::mcp::Body;
use serde_json::{json, Value};

/// Signature algorithms the gate accepts in proofs (`algs`, RFC 9449 §7.1).
pub const ALGS: &str = "EdDSA ES256 ES384";

/// One refusal, before it becomes an answer.
#[derive(Debug, Clone)]
pub struct Refused {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code of the rule (`pop.replay`, `contract.not_permitted.tool` …).
    pub code: String,
    /// Its number in the library's rule table (0 for the gate's own checks: body size,
    /// JSON-RPC, upstream).
    pub rule: usize,
    /// What failed and how to fix it.
    pub message: String,
    /// The RFC 6750 / 9449 `error` of the challenge, for 401 and 403 answers.
    pub challenge: Option<&'static str>,
    /// The scope a 403 `insufficient_scope` names.
    pub scope: Option<String>,
}

impl Refused {
    /// A refusal of the gate's own (not a rule of the library's decision).
    pub fn gate(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Refused {
            status,
            code: code.to_owned(),
            rule: 0,
            message: message.into(),
            challenge: None,
            scope: None,
        }
    }

    /// The refusal of the library's decision, with the status and challenge it maps to;
    /// `wanted` (`tool:NAME`, `resource:URI`, `prompt:NAME`) becomes the `scope` of an
    /// `insufficient_scope` challenge.
    pub fn of(r: &Refusal, wanted: &[String]) -> Self {
        let challenge = r.dpop_error();
        let status = if r.is_unavailable() {
            StatusCode::SERVICE_UNAVAILABLE
        } else if r.is_bad_request() {
            StatusCode::BAD_REQUEST
        } else if challenge == "insufficient_scope"
            || r.code() == "grant.arguments_unchecked"
            || matches!(
                r.error,
                VerifyError::NoAudience(_) | VerifyError::MeasurementsNotAllowed(_)
            )
        {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        };
        let scope = (challenge == "insufficient_scope").then(|| wanted.join(" "));
        Refused {
            status,
            code: r.code().to_owned(),
            rule: r.rule(),
            message: r.error.to_string(),
            challenge: matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
                .then_some(challenge),
            scope,
        }
    }

    /// The one-line message of JSON-RPC errors and logs.
    pub fn line(&self) -> String {
        if self.rule == 0 {
            format!("[{}] {}", self.code, self.message)
        } else {
            format!("[{}] rule {}: {}", self.code, self.rule, self.message)
        }
    }

    /// The answer: status, challenge (pointing at `resource_metadata`), and one JSON-RPC
    /// error per request of `body` (one with `id: null` when there is none to answer).
    pub fn answer(&self, body: Option<&Body>, resource_metadata: &str) -> Response {
        let error = json!({
            "code": jsonrpc_code(self.status),
            "message": self.line(),
            "data": {"code": self.code, "rule": self.rule, "status": self.status.as_u16()},
        });
        let one = |id: Value| json!({"jsonrpc": "2.0", "id": id, "error": error});
        let ids: Vec<Value> = body
            .map(|b| {
                b.messages
                    .iter()
                    .filter(|m| m.call.is_some())
                    .filter_map(|m| m.id.as_ref())
                    .map(|id| serde_json::from_str(id.get()).unwrap_or(Value::Null))
                    .collect()
            })
            .unwrap_or_default();
        let doc = match (body.is_some_and(|b| b.batch), ids.is_empty()) {
            (true, false) => Value::Array(ids.into_iter().map(one).collect()),
            (false, false) => one(ids.into_iter().next().unwrap_or(Value::Null)),
            (_, true) => one(Value::Null),
        };
        let mut resp = (self.status, axum::Json(doc)).into_response();
        if let Some(err) = self.challenge {
            let mut c = format!(
                "DPoP resource_metadata=\"{}\", error=\"{err}\", error_description=\"{}\", algs=\"{ALGS}\"",
                quoted(resource_metadata),
                quoted(&self.line())
            );
            if let Some(scope) = &self.scope {
                c.push_str(&format!(", scope=\"{}\"", quoted(scope)));
            }
            if let Ok(v) = HeaderValue::from_str(&c) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        resp
    }
}

/// A request without any proof: 401 with a bare challenge (RFC 6750 §3: no `error` when no
/// credentials were sent) naming the metadata, and a JSON-RPC error saying what to send.
pub fn no_proof(body: Option<&Body>, resource_metadata: &str) -> Response {
    let r = Refused {
        status: StatusCode::UNAUTHORIZED,
        code: "pop.missing".into(),
        rule: 2,
        message: "this MCP server admits attested agents only: send a CB-PoP in the DPoP \
                  header (and the evidence in CADA-Evidence), e.g. through cada-parent proxy"
            .into(),
        challenge: None,
        scope: None,
    };
    let mut resp = r.answer(body, resource_metadata);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "DPoP resource_metadata=\"{}\", algs=\"{ALGS}\"",
        quoted(resource_metadata)
    )) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

fn jsonrpc_code(status: StatusCode) -> i64 {
    match status.as_u16() {
        400 | 413 | 415 => -32600,
        401 => -32001,
        403 => -32003,
        _ => -32000,
    }
}

/// A quoted-string's content: printable ASCII without `"` or `\`, at most 300 characters.
fn quoted(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .map(|c| if c == '"' || c == '\\' { '\'' } else { c })
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn json_of(r: Response) -> Value {
        let b = r.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&b).unwrap()
    }

    #[tokio::test]
    async fn one_error_per_request_of_a_batch_and_the_challenge() {
        let body = cada_protocol::mcp::parse_body(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},
                 {"jsonrpc":"2.0","method":"notifications/initialized"},
                 {"jsonrpc":"2.0","id":"x","method":"tools/list"}]"#,
        )
        .unwrap();
        let mut r = Refused::gate(StatusCode::FORBIDDEN, "contract.not_permitted.tool", "no");
        r.rule = 13;
        r.challenge = Some("insufficient_scope");
        r.scope = Some("tool:a".into());
        let resp = r.answer(
            Some(&body),
            "https://g.example/.well-known/oauth-protected-resource/mcp",
        );
        assert_eq!(resp.status(), 403);
        let c = resp.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(c.starts_with("DPoP resource_metadata=\"https://g.example/.well-known/oauth-protected-resource/mcp\""), "{c}");
        assert!(
            c.contains("error=\"insufficient_scope\"") && c.contains("scope=\"tool:a\""),
            "{c}"
        );
        let doc = json_of(resp).await;
        let arr = doc.as_array().unwrap();
        assert_eq!(arr.len(), 2);
        assert_eq!(arr[0]["id"], 1);
        assert_eq!(arr[1]["id"], "x");
        assert_eq!(arr[0]["error"]["code"], -32003);
        assert_eq!(
            arr[0]["error"]["message"],
            "[contract.not_permitted.tool] rule 13: no"
        );
        assert_eq!(arr[0]["error"]["data"]["rule"], 13);
    }

    /// Issue 23: a one-transaction grant that does not cover the call, its arguments, or
    /// was used is a 403 `insufficient_scope` (the fix is a new grant) naming the tool and
    /// the rule; an argument-limited grant where nobody reads the arguments is a 403 that
    /// asks for another path, not for a grant.
    #[tokio::test]
    async fn grant_refusals_are_403_naming_their_rule() {
        let of = |code: &'static str| {
            Refused::of(
                &Refusal::from(VerifyError::Contract {
                    code,
                    detail: "d".into(),
                }),
                &["tool:transfer".to_owned()],
            )
        };
        for (code, rule) in [
            ("grant.tool", 13),
            ("grant.arguments.max", 13),
            ("grant.arguments.eq", 13),
            ("grant.arguments.one_of", 13),
            ("grant.arguments.prefix", 13),
            ("grant.arguments.unlisted", 13),
            ("grant.used", 14),
        ] {
            let r = of(code);
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{code}");
            assert_eq!(r.challenge, Some("insufficient_scope"), "{code}");
            assert_eq!(r.scope.as_deref(), Some("tool:transfer"), "{code}");
            assert_eq!(r.rule, rule, "{code}");
            let doc = json_of(r.answer(None, "m")).await;
            assert_eq!(doc["error"]["data"]["code"], code);
            assert_eq!(doc["error"]["data"]["rule"], rule);
            assert_eq!(doc["error"]["code"], -32003);
        }
        let r = of("grant.arguments_unchecked");
        assert_eq!(
            (r.status, r.challenge, r.scope, r.rule),
            (StatusCode::FORBIDDEN, Some("invalid_request"), None, 13)
        );
    }

    #[tokio::test]
    async fn no_body_or_only_notifications_get_a_null_id() {
        let r = no_proof(None, "m");
        assert_eq!(r.status(), 401);
        let c = r.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(!c.contains("error="), "{c}");
        let doc = json_of(r).await;
        assert_eq!(doc["id"], Value::Null);
        assert!(doc["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("[pop.missing] rule 2:"));
    }
}
