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
}
