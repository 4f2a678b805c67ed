//! The one error type of this crate: every refusal with a stable [`ContractError::code`].

/// What a live contract does not permit ([`ContractError::NotPermitted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Denied {
    /// The URL is under none of the contract's audiences.
    Audience,
    /// The HTTP method is not among the contract's methods.
    Method,
    /// A scope the request needs is not granted.
    Scope,
    /// The MCP tool is not granted.
    Tool,
    /// The MCP resource is not granted.
    Resource,
    /// The MCP prompt is not granted.
    Prompt,
    /// A required `ctx` key is missing from the request.
    Ctx,
    /// The contract's signature budget is spent (counted by the caller).
    Budget,
    /// The contract's rate is exceeded (counted by the caller).
    Rate,
    /// A behaviour limit (requests or refusals per window) was crossed (counted by the
    /// caller); the contract is suspended until its owner reinstates it.
    Behaviour,
}

impl Denied {
    /// The suffix of the error code (`contract.not_permitted.<this>`).
    pub fn as_str(self) -> &'static str {
        match self {
            Denied::Audience => "audience",
            Denied::Method => "method",
            Denied::Scope => "scope",
            Denied::Tool => "tool",
            Denied::Resource => "resource",
            Denied::Prompt => "prompt",
            Denied::Ctx => "ctx",
            Denied::Budget => "budget",
            Denied::Rate => "rate",
            Denied::Behaviour => "behaviour",
        }
    }

    /// Every kind, for tests and documentation.
    pub const ALL: [Denied; 10] = [
        Denied::Audience,
        Denied::Method,
        Denied::Scope,
        Denied::Tool,
        Denied::Resource,
        Denied::Prompt,
        Denied::Ctx,
        Denied::Budget,
        Denied::Rate,
        Denied::Behaviour,
    ];
}

/// Everything that can refuse a contract, a status list, an owner key or a DID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    /// An input longer than its hard limit.
    #[error("{what} is {len} bytes, more than the limit of {max} bytes")]
    TooLarge {
        /// Which input.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a well-formed contract (JWS shape, header, JSON, a field's value).
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// Which part.
        what: &'static str,
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// The contract's signature does not verify under the owner key its `kid` names.
    #[error("the trust contract's signature does not verify under {kid}: it was altered or signed by another key")]
    Signature {
        /// The key the header names.
        kid: String,
    },
    /// The contract's ECDSA signature verifies but is spelled in its high-s form
    /// (`s > n/2`): each ECDSA signature has two spellings, and a contract is identified by
    /// the digest of its text, so only the low-s one is accepted.
    #[error("the trust contract's {alg} signature under {kid} is in its high-s form (s > n/2), which is refused: an ECDSA signature has two valid spellings and a contract is identified by the digest of its text (cada.dtc), so only the low-s one (s ≤ n/2) is accepted; have the owner re-sign it with cada-owner, which writes low-s")]
    SignatureHighS {
        /// The JOSE `alg` (`ES256` or `ES384`).
        alg: &'static str,
        /// The key the header names.
        kid: String,
    },
    /// The contract's issuer (or the key its `kid` names) is not a trusted owner.
    #[error("{detail}")]
    UntrustedOwner {
        /// Which owner or key, and what would trust it.
        detail: String,
    },
    /// `validUntil` has passed.
    #[error(
        "the trust contract expired at {valid_until} (now {now}); ask the owner for a new grant"
    )]
    Expired {
        /// End of validity, seconds since the epoch.
        valid_until: u64,
        /// The time of the check.
        now: u64,
    },
    /// `validFrom` is still ahead.
    #[error("the trust contract is valid only from {valid_from} (now {now})")]
    NotYetValid {
        /// Start of validity, seconds since the epoch.
        valid_from: u64,
        /// The time of the check.
        now: u64,
    },
    /// The contract is for another key or another image.
    #[error("the trust contract is not for this agent: {detail}")]
    Subject {
        /// What differs.
        detail: String,
    },
    /// The owner revoked the contract in its status list.
    #[error("the trust contract is revoked (index {index} of {list})")]
    Revoked {
        /// The status list URL.
        list: String,
        /// The contract's index in it.
        index: u64,
    },
    /// The status list is older than the allowed staleness, or past its `validUntil`.
    #[error("the status list is stale: {detail}; fetch a fresh one (revocation fails closed)")]
    StatusStale {
        /// Ages and bounds.
        detail: String,
    },
    /// The status list's signature fails, or it is signed by someone other than the
    /// contract's owner.
    #[error("the status list is not authentic: {detail}")]
    StatusForged {
        /// What failed.
        detail: String,
    },
    /// The status list is older than one already seen for its URL (by `validFrom`), or
    /// carries the same `validFrom` as that one but clears a revocation it holds: taking it
    /// would undo a revocation.
    #[error("the status list would roll back revocation: {detail}; install the newest list the owner published")]
    StatusRollback {
        /// Which list was seen and which was offered.
        detail: String,
    },
    /// The status list is not the one the contract names (URL, purpose, size).
    #[error("the status list does not match the contract: {detail}")]
    StatusMismatch {
        /// What differs.
        detail: String,
    },
    /// The status list credential is not well formed (JWS, JSON, GZIP, size).
    #[error("malformed status list: {detail}")]
    StatusMalformed {
        /// What is wrong.
        detail: String,
    },
    /// The contract does not permit this request.
    #[error("the trust contract does not permit this request ({}): {detail}", .what.as_str())]
    NotPermitted {
        /// Which rule refused.
        what: Denied,
        /// The value refused and what the contract allows.
        detail: String,
    },
    /// An owner lock that cannot lock this enclave (signature, subject, time, owner).
    #[error("owner lock refused: {detail}")]
    Lock {
        /// What failed and how to fix it.
        detail: String,
    },
    /// A reinstatement that cannot lift a suspension (signature, owner, time).
    #[error("reinstatement refused: {detail}")]
    Reinstate {
        /// What failed and how to fix it.
        detail: String,
    },
    /// An owner key that cannot be read or used.
    #[error("owner key: {0}")]
    Key(String),
    /// A DID or DID document that is not supported or not well formed.
    #[error("DID: {0}")]
    Did(String),
    /// The contract does not grant this use of a sealed secret (`grants.secrets`): the
    /// secret is not named, the method is not among the grant's, or the URL is outside its
    /// prefix. The code is `secret.not_granted`, `secret.method` or `secret.path`.
    #[error("{code}: the trust contract does not permit this use of a secret: {detail}")]
    SecretDenied {
        /// Stable code (`secret.not_granted` | `secret.method` | `secret.path`).
        code: &'static str,
        /// The value refused and what the contract grants.
        detail: String,
    },
    /// A one-transaction grant (`authorization_details`) does not permit this call, or was
    /// used already. The code is one of [`crate::GRANT_CODES`] (`grant.tool`,
    /// `grant.arguments.*`, `grant.arguments_unchecked`, `grant.used`, `grant.not_within`).
    #[error("{code}: {detail}")]
    Grant {
        /// Stable code (`grant.*`).
        code: &'static str,
        /// Which argument or rule, and what the grant allows (never the agent's value).
        detail: String,
    },
    /// A delegated contract or chain refused (format, linkage, attenuation, depth, status
    /// range, size, delegator checks). The code is one of [`crate::delegation::CODES`]
    /// (`delegation.wider.<dimension>`, `delegation.depth`, `delegation.link`, …).
    #[error("{code}: {detail}")]
    Delegation {
        /// Stable code (`delegation.*`).
        code: &'static str,
        /// What is refused and what to narrow or fix.
        detail: String,
    },
    /// A contract of a schema this verifier does not know, or a schema-2 member in a
    /// schema-1 contract, or an unknown authorization-detail type, member, action or
    /// constraint kind.
    #[error("contract schema: {detail}")]
    Schema {
        /// What is unknown and what this verifier knows.
        detail: String,
    },
}

impl ContractError {
    /// A stable short code for logs, metrics, audit lines and JSON answers.
    pub fn code(&self) -> &'static str {
        match self {
            ContractError::TooLarge { .. } => "contract.too_large",
            ContractError::Malformed { .. } => "contract.malformed",
            ContractError::Signature { .. } | ContractError::SignatureHighS { .. } => {
                "contract.signature"
            }
            ContractError::UntrustedOwner { .. } => "contract.untrusted_owner",
            ContractError::Expired { .. } => "contract.expired",
            ContractError::NotYetValid { .. } => "contract.not_yet_valid",
            ContractError::Subject { .. } => "contract.subject",
            ContractError::Revoked { .. } => "contract.revoked",
            ContractError::StatusStale { .. } => "contract.status_stale",
            ContractError::StatusForged { .. } => "contract.status_forged",
            ContractError::StatusRollback { .. } => "contract.status_rollback",
            ContractError::StatusMismatch { .. } => "contract.status_mismatch",
            ContractError::StatusMalformed { .. } => "contract.status_malformed",
            ContractError::NotPermitted { what, .. } => match what {
                Denied::Audience => "contract.not_permitted.audience",
                Denied::Method => "contract.not_permitted.method",
                Denied::Scope => "contract.not_permitted.scope",
                Denied::Tool => "contract.not_permitted.tool",
                Denied::Resource => "contract.not_permitted.resource",
                Denied::Prompt => "contract.not_permitted.prompt",
                Denied::Ctx => "contract.not_permitted.ctx",
                Denied::Budget => "contract.not_permitted.budget",
                Denied::Rate => "contract.not_permitted.rate",
                Denied::Behaviour => "contract.not_permitted.behaviour",
            },
            ContractError::Lock { .. } => "contract.lock",
            ContractError::Reinstate { .. } => "contract.reinstate",
            ContractError::Key(_) => "contract.key",
            ContractError::Did(_) => "contract.did",
            ContractError::SecretDenied { code, .. }
            | ContractError::Grant { code, .. }
            | ContractError::Delegation { code, .. } => code,
            ContractError::Schema { .. } => "contract.schema",
        }
    }

    /// A refusal for a rule the caller counts itself (budget, rate, behaviour limits),
    /// so that every component reports it with the same code.
    pub fn not_permitted(what: Denied, detail: impl Into<String>) -> Self {
        ContractError::NotPermitted {
            what,
            detail: detail.into(),
        }
    }

    /// A delegation refusal with its stable code (one of [`crate::delegation::CODES`]).
    pub fn delegation(code: &'static str, detail: impl Into<String>) -> Self {
        ContractError::Delegation {
            code,
            detail: detail.into(),
        }
    }

    pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        ContractError::Malformed {
            what,
            detail: detail.into(),
        }
    }
}

/// Shortens outside text for an error message.
pub(crate) fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(120).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_permitted_codes_follow_the_kind() {
        for d in Denied::ALL {
            let e = ContractError::not_permitted(d, "x");
            assert_eq!(e.code(), format!("contract.not_permitted.{}", d.as_str()));
        }
    }
}
