//! The seam between the page and the step-up store: what the page shows of a request and
//! how it hands down the owner's decision. `crate::stepup::Service` implements [`Requests`];
//! the page never sees the store, the owner key or the audit log.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Longest approval, in minutes, the page offers ("Approve for N minutes"): 8 hours, the
/// session's own absolute lifetime. The step-up service may refuse a shorter maximum.
pub const MAX_MINUTES: u32 = 480;

/// Where a step-up request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestStatus {
    /// Waiting for the owner.
    Pending,
    /// The owner approved it; a grant was signed.
    Approved,
    /// The owner denied it.
    Denied,
    /// Nobody answered in time.
    Expired,
}

impl RequestStatus {
    /// The lower-case word the wire and the page use.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
        }
    }
}

/// The refusal that made the agent ask: which rule, who applied it, where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalView {
    /// The stable refusal code, e.g. `contract.not_permitted.tool`.
    pub code: String,
    /// Who refused: `enclave`, `gate` or `sts` (agent-reported).
    pub by: String,
    /// The server the call was meant for (agent-reported).
    pub server: String,
    /// The refusal's message (agent-reported).
    pub message: String,
}

/// One step-up request as the page shows it. Everything but `id`, `agent_did`,
/// `measurement`, the times and `status` is what the agent sent, unchecked: the page escapes
/// and flags it (`render`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestView {
    /// The request's opaque id (the `{id}` of `/r/{id}`).
    pub id: String,
    /// The enclave key's DID (from the verified proof).
    pub agent_did: String,
    /// The platform of the evidence, e.g. `nitro`, `sev-snp`, `sim`.
    pub platform: String,
    /// The image measurement the evidence attests (PCR0 or the SNP measurement), hex.
    pub measurement: String,
    /// The digest of the trust contract the agent worked under (agent-reported).
    pub contract: String,
    /// What the service knows of that contract (for instance its tools and validity), if
    /// anything; shown as JSON.
    pub contract_summary: Option<serde_json::Value>,
    /// The audience URL of the refused call.
    pub audience: String,
    /// The HTTP method of the refused call.
    pub method: String,
    /// The MCP tool the agent wants to call.
    pub tool: String,
    /// The tool's arguments, as the agent sent them.
    pub arguments: serde_json::Value,
    /// The refusal that made the agent ask.
    pub refusal: RefusalView,
    /// What the agent asked for: `once` or `minutes`.
    pub want: String,
    /// When the request was filed, Unix seconds.
    pub created_at: u64,
    /// When it expires if nobody answers, Unix seconds.
    pub expires_at: u64,
    /// Where it stands.
    pub status: RequestStatus,
}

/// The owner's answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Sign a single-use grant for exactly this call.
    ApproveOnce,
    /// Sign a grant for the same tool within the same argument limits, valid this many
    /// minutes (1..=[`MAX_MINUTES`]).
    ApproveMinutes(u32),
    /// Refuse; the agent gets `stepup.denied`.
    Deny,
}

/// What came of a decision, for the result page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionOutcome {
    /// The request's status afterwards.
    pub status: RequestStatus,
    /// A sentence for the owner, e.g. "grant urn:uuid:… valid until 12:05 UTC".
    pub message: String,
}

/// A decision the service would not take (unknown request, already answered, expired,
/// minutes out of range, signing failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecideError {
    /// Stable code, e.g. `stepup.unknown`, `stepup.expired`, `stepup.decided`.
    pub code: String,
    /// What happened and what to do.
    pub message: String,
}

/// A page event the service could not record (its audit log cannot be written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RecordError(pub String);

/// Something security-relevant that happened on the page, for the service's audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageEvent {
    /// A passkey was registered (`first`: with the start-up code, no session).
    Registered {
        /// Its credential id, base64url.
        credential: String,
        /// Whether it was the first passkey.
        first: bool,
    },
    /// The owner signed in.
    SignedIn {
        /// The passkey, base64url.
        credential: String,
    },
    /// A sign-in or registration was refused after the browser's signature was read.
    Refused {
        /// The refusal code (`webauthn.sign_count` for a possible clone, …).
        code: &'static str,
        /// The passkey named, if any.
        credential: Option<String>,
    },
    /// A signed-in owner asked for a fresh registration code.
    CodeIssued {
        /// The passkey of the session that asked.
        credential: String,
    },
    /// The owner signed out.
    SignedOut {
        /// The passkey of the session.
        credential: String,
    },
}

/// The step-up store as the page uses it. Calls are synchronous and short (the page calls
/// `decide` on a blocking thread: it may sign and append to the audit log).
pub trait Requests: Send + Sync + 'static {
    /// The pending requests, newest first.
    fn pending(&self) -> Vec<RequestView>;
    /// One request by id, whatever its status; `None` if unknown.
    fn get(&self, id: &str) -> Option<RequestView>;
    /// Applies the owner's decision. `who` names the passkey that signed the owner in
    /// (`passkey:<credential id, base64url>`), for the audit log.
    ///
    /// # Errors
    /// A [`DecideError`] naming the rule when the request is unknown, no longer pending, or
    /// the decision cannot be applied.
    fn decide(
        &self,
        id: &str,
        decision: Decision,
        who: &str,
    ) -> Result<DecisionOutcome, DecideError>;

    /// Records a page event (registration, sign-in, refused ceremony, new code, sign-out)
    /// in the audit log; `peer` is the client's address when known. Called on the request's
    /// task, before the event takes effect for a registration, a sign-in and a fresh code
    /// (an error: it does not take effect, `audit.unavailable`), after it for a sign-out
    /// and a refusal (an error is only logged). Default: nothing (the page logs every
    /// event with `tracing` anyway).
    ///
    /// # Errors
    /// A [`RecordError`] when the event could not be recorded.
    fn page_event(&self, event: &PageEvent, peer: Option<IpAddr>) -> Result<(), RecordError> {
        let _ = (event, peer);
        Ok(())
    }
}
