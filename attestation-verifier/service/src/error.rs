//! The one error type of the service crate (CLI usage and server setup).
/// What can go wrong outside verification itself.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The policy file is missing, unreadable or invalid.
    #[error("policy: {0}")]
    Policy(String),
    /// The audit log cannot be opened, written or read.
    #[error("audit log: {0}")]
    Audit(String),
    /// A usage or I/O problem of the CLI.
    #[error("{0}")]
    Usage(String),
    /// A DID that does not resolve to a valid DID document: malformed, or its did:web
    /// server answered with something refused (`code` is stable, `did.*`).
    #[error("[{code}] {detail}")]
    DidRefused {
        /// Stable code: `did.malformed`, `did.http_status`, `did.redirect`,
        /// `did.too_large`, `did.document`, `did.id_mismatch`.
        code: &'static str,
        /// What is wrong and what to fix.
        detail: String,
    },
    /// A did:web DID whose document could not be fetched at all (`code` is stable:
    /// `did.unreachable`, `did.timeout`, `did.tls`).
    #[error("[{code}] {detail}")]
    DidUnresolved {
        /// Stable code.
        code: &'static str,
        /// What happened.
        detail: String,
    },
}

impl ServiceError {
    /// The stable code of a DID error (`did.*`), or `None` for the other variants.
    pub fn did_code(&self) -> Option<&'static str> {
        match self {
            ServiceError::DidRefused { code, .. } | ServiceError::DidUnresolved { code, .. } => {
                Some(code)
            }
            ServiceError::Policy(_) | ServiceError::Audit(_) | ServiceError::Usage(_) => None,
        }
    }
}
