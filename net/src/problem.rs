//! RFC 9457 problem documents, the one error shape every CADA HTTP server answers with:
//! `{type: "urn:cada:problem:<code>", title, status, detail, code, …}` as
//! `application/problem+json`, with `Retry-After: 1` on 429 and 503.
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Prefix of every problem `type`.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:cada:problem:";

/// An error answer.
#[derive(Debug, Clone)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code; the `type` is `urn:cada:problem:<code>`.
    pub code: String,
    /// What happened and what to fix.
    pub detail: String,
    /// Further members of the document (e.g. `active: false` for introspection clients).
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// A `WWW-Authenticate` challenge to send with it.
    pub challenge: Option<HeaderValue>,
}

impl Problem {
    /// A problem answer.
    pub fn new(status: StatusCode, code: impl Into<String>, detail: impl Into<String>) -> Self {
        Problem {
            status,
            code: code.into(),
            detail: detail.into(),
            extra: serde_json::Map::new(),
            challenge: None,
        }
    }

    /// Adds a member to the document.
    pub fn with(mut self, key: &str, value: serde_json::Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }

    /// The document as JSON.
    pub fn body(&self) -> serde_json::Value {
        let mut doc = serde_json::Map::new();
        doc.insert(
            "type".into(),
            format!("{PROBLEM_TYPE_PREFIX}{}", self.code).into(),
        );
        doc.insert(
            "title".into(),
            self.status.canonical_reason().unwrap_or("Error").into(),
        );
        doc.insert("status".into(), self.status.as_u16().into());
        doc.insert("detail".into(), self.detail.clone().into());
        doc.insert("code".into(), self.code.clone().into());
        for (k, v) in &self.extra {
            doc.insert(k.clone(), v.clone());
        }
        serde_json::Value::Object(doc)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut r = (self.status, self.body().to_string()).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(c) = self.challenge {
            h.insert(header::WWW_AUTHENTICATE, c);
        }
        r
    }
}

/// `Ok` when the request says `Content-Type: application/json` (parameters allowed), else
/// the 415 problem.
pub fn require_json(headers: &HeaderMap) -> Result<(), Problem> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "send Content-Type: application/json",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_headers_and_extras() {
        let p = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "too busy")
            .with("active", false.into());
        let body = p.body();
        assert_eq!(body["type"], "urn:cada:problem:overloaded");
        assert_eq!(body["status"], 503);
        assert_eq!(body["code"], "overloaded");
        assert_eq!(body["active"], false);
        let r = p.into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }

    #[test]
    fn content_type_check() {
        let mut h = HeaderMap::new();
        assert_eq!(
            require_json(&h).unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert!(require_json(&h).is_ok());
    }
}
