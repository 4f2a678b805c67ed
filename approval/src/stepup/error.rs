//! The errors of the step-up half: a refused step-up request or poll (an HTTP answer with a
//! stable code) and a decision or start-up the service will not take.
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cada_net::problem::Problem;
use cada_protocol::stepup::codes;

/// Everything the step-up service refuses, each with a stable [`StepUpError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepUpError {
    /// A request or poll refused (HTTP answer): status, stable code, message.
    #[error("{code}: {message}")]
    Refused {
        /// HTTP status of the answer.
        status: u16,
        /// Stable code (`stepup.*`, or the verifier's own code such as `pop.htu`).
        code: String,
        /// What failed and what to do.
        message: String,
        /// The verifier's code behind a `stepup.*` code (`pop.evidence_required` behind
        /// `stepup.evidence` …), when there is one.
        rule_code: Option<String>,
        /// `Retry-After` seconds (429, 503).
        retry_after: Option<u64>,
        /// A DPoP nonce to retry with (a policy requiring nonces).
        dpop_nonce: Option<String>,
    },
    /// No request with this id (`stepup.unknown`).
    #[error("stepup.unknown: no step-up request {0:?} (never filed, or forgotten an hour after it ended)")]
    Unknown(String),
    /// The request was already answered, or is being answered (`stepup.decided`).
    #[error("stepup.decided: the request is already {0}; nothing was changed")]
    Decided(&'static str),
    /// The request expired before the decision (`stepup.expired`).
    #[error("stepup.expired: the request expired unanswered; the agent has to ask again")]
    Expired,
    /// Minutes outside 1..=1440 (`stepup.minutes`).
    #[error("stepup.minutes: {0} minutes is outside 1..=1440 (at most 24 hours)")]
    Minutes(u32),
    /// The grant could not be made or signed (`stepup.grant`).
    #[error("stepup.grant: {0}")]
    Grant(String),
    /// The audit log cannot be written: nothing was decided (`audit.unavailable`).
    #[error("audit.unavailable: the audit log cannot be written ({0}); nothing was decided, retry later")]
    Audit(String),
    /// A start-up setting the service refuses (`stepup.config`).
    #[error("stepup.config: {0}")]
    Config(String),
}

impl StepUpError {
    /// The stable code.
    pub fn code(&self) -> &str {
        match self {
            StepUpError::Refused { code, .. } => code,
            StepUpError::Unknown(_) => codes::UNKNOWN,
            StepUpError::Decided(_) => "stepup.decided",
            StepUpError::Expired => codes::EXPIRED,
            StepUpError::Minutes(_) => "stepup.minutes",
            StepUpError::Grant(_) => "stepup.grant",
            StepUpError::Audit(_) => "audit.unavailable",
            StepUpError::Config(_) => "stepup.config",
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        let n = match self {
            StepUpError::Refused { status, .. } => *status,
            StepUpError::Unknown(_) => 404,
            StepUpError::Decided(_) => 409,
            StepUpError::Expired => 410,
            StepUpError::Minutes(_) | StepUpError::Config(_) => 400,
            StepUpError::Grant(_) => 500,
            StepUpError::Audit(_) => 503,
        };
        StatusCode::from_u16(n).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// A refusal with `status`, `code` and `message`.
    pub fn refused(status: u16, code: &str, message: impl Into<String>) -> Self {
        StepUpError::Refused {
            status,
            code: code.to_owned(),
            message: message.into(),
            rule_code: None,
            retry_after: None,
            dpop_nonce: None,
        }
    }

    /// The message without the code.
    pub fn message(&self) -> String {
        match self {
            StepUpError::Refused { message, .. } => message.clone(),
            other => {
                let s = other.to_string();
                s.split_once(": ").map_or(s.clone(), |(_, m)| m.to_owned())
            }
        }
    }
}

impl IntoResponse for StepUpError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut p = Problem::new(status, self.code(), self.message());
        let (mut retry, mut nonce) = (None, None);
        if let StepUpError::Refused {
            rule_code,
            retry_after,
            dpop_nonce,
            ..
        } = &self
        {
            if let Some(r) = rule_code {
                p = p.with("rule_code", r.clone().into());
            }
            retry = *retry_after;
            nonce.clone_from(dpop_nonce);
        }
        if status == StatusCode::UNAUTHORIZED {
            let err = match self.code() {
                codes::EVIDENCE => "use_attestation",
                "pop.nonce" => "use_dpop_nonce",
                _ => "invalid_dpop_proof",
            };
            p.challenge =
                HeaderValue::from_str(&format!("DPoP error=\"{err}\", algs=\"EdDSA ES256 ES384\""))
                    .ok();
        }
        let mut r = p.into_response();
        if let Some(s) = retry {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        if let Some(n) = nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
            r.headers_mut().insert("dpop-nonce", n);
        }
        r
    }
}
