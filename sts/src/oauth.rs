//! OAuth error answers (RFC 6749 §5.2, RFC 8693 §2.2.2, RFC 8707 §2, RFC 9449 §5, §8) and
//! how a refusal of the one decision maps onto them. Every description starts with the
//! `[code]` of the rule that refused, so a developer can look the rule up.
use cada_attestation_verifier::decide::Refusal;

/// An OAuth error: HTTP status, `error`, and a description a developer can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// HTTP status (400, 401 or 503).
    pub status: u16,
    /// The RFC 6749 / 8707 / 9449 `error` value.
    pub error: &'static str,
    /// `[rule code] what happened, and what to do`.
    pub description: String,
}

impl OAuthError {
    /// A 400 answer.
    pub fn bad(error: &'static str, code: &str, detail: impl std::fmt::Display) -> Self {
        OAuthError {
            status: 400,
            error,
            description: format!("[{code}] {detail}"),
        }
    }

    /// `invalid_request` for a malformed token request.
    pub fn invalid_request(detail: impl std::fmt::Display) -> Self {
        Self::bad("invalid_request", "request", detail)
    }

    /// The rule code at the start of the description.
    pub fn code(&self) -> &str {
        self.description
            .strip_prefix('[')
            .and_then(|d| d.split_once(']'))
            .map_or("", |(c, _)| c)
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": self.error, "error_description": self.description})
    }
}

/// The OAuth error for a refusal of a token exchange:
///
/// | refusal | error |
/// |---|---|
/// | the server nonce (rule 10) | `use_dpop_nonce` (with a fresh `DPoP-Nonce`) |
/// | the proof (rules 2, 3, 6–9) or a replay (14) | `invalid_dpop_proof` |
/// | evidence, key binding, measurements (rules 4, 5, 12) | `invalid_client` (401): the agent is not an attested, allowed image |
/// | no audience covers the resource, a bad resource, one wider than an audience under it, or the contract's audiences do not cover it | `invalid_target` |
/// | a scope the contract does not grant | `invalid_scope` |
/// | `authorization_details` not within the contract's, outside the resource, or limiting arguments (or single use) where no CADA gate checks them (`grant.*`) | `invalid_authorization_details` (RFC 9396 §5) |
/// | any other contract rule (missing, untrusted owner, expired, revoked, suspended …) | `invalid_grant` |
/// | the replay store is down | `temporarily_unavailable` (503) |
pub fn from_refusal(r: &Refusal) -> OAuthError {
    let code = r.code();
    let (status, error) = if r.is_unavailable() {
        (503, "temporarily_unavailable")
    } else {
        match r.rule() {
            10 => (400, "use_dpop_nonce"),
            _ if code == "token.resource" => (400, "invalid_target"),
            4 | 5 | 12 => (401, "invalid_client"),
            1 | 11 => (400, "invalid_target"),
            13 if code == "contract.not_permitted.scope" => (400, "invalid_scope"),
            13 if code == "contract.not_permitted.audience" => (400, "invalid_target"),
            13 if code.starts_with("grant.") => (400, "invalid_authorization_details"),
            13 => (400, "invalid_grant"),
            _ => (400, "invalid_dpop_proof"),
        }
    };
    OAuthError {
        status,
        error,
        description: r.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cada_attestation_verifier::VerifyError;

    #[test]
    fn refusals_map_to_the_oauth_error_of_their_rule() {
        let r = |e: VerifyError| from_refusal(&Refusal::from(e));
        let contract = |code| VerifyError::Contract {
            code,
            detail: "x".into(),
        };
        assert_eq!(
            r(contract("contract.not_permitted.scope")).error,
            "invalid_scope"
        );
        assert_eq!(
            r(contract("contract.not_permitted.audience")).error,
            "invalid_target"
        );
        for c in [
            "contract.revoked",
            "contract.expired",
            "contract.untrusted_owner",
        ] {
            let e = r(contract(c));
            assert_eq!((e.status, e.error), (400, "invalid_grant"), "{c}");
            assert_eq!(e.code(), c);
        }
        for c in ["grant.not_within", "grant.arguments_unchecked"] {
            let e = r(contract(c));
            assert_eq!((e.status, e.error), (400, "invalid_authorization_details"));
            assert_eq!(e.code(), c);
        }
        assert_eq!(r(VerifyError::PopNonce("missing")).error, "use_dpop_nonce");
        let e = r(VerifyError::MeasurementsNotAllowed("no".into()));
        assert_eq!((e.status, e.error), (401, "invalid_client"));
        assert_eq!(
            r(VerifyError::NoAudience("u".into())).error,
            "invalid_target"
        );
        assert_eq!(
            r(VerifyError::Replay { jti: "j".into() }).error,
            "invalid_dpop_proof"
        );
        let e = r(VerifyError::ReplayStoreUnavailable("down".into()));
        assert_eq!((e.status, e.error), (503, "temporarily_unavailable"));
    }
}
