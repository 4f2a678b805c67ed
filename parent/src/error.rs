//! The one error type of the parent crate.
use cada_protocol::wire::ErrorCode;

/// What can go wrong in the relay.
#[derive(Debug, thiserror::Error)]
pub enum ParentError {
    /// The enclave cannot be reached (not started, restarting, wrong endpoint).
    #[error("enclave unavailable: {0}")]
    EnclaveUnavailable(String),
    /// The enclave did not answer in time.
    #[error("the enclave did not answer within the timeout")]
    Timeout,
    /// The enclave answered with an error.
    #[error("enclave refused ({code:?}): {message}")]
    Enclave {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// A frame or body could not be encoded or decoded.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Too many requests are queued.
    #[error("overloaded: too many requests in flight")]
    Overloaded,
    /// Local I/O.
    #[error("{0}")]
    Io(String),
    /// A setting that cannot be used (the daemon refuses to start).
    #[error("{0}")]
    Config(String),
    /// The STS refused the token exchange (its OAuth error and description, which starts
    /// with the rule's code).
    #[error("the STS refused the token exchange: {error}: {description}")]
    Sts {
        /// The OAuth `error`.
        error: String,
        /// Its `error_description`.
        description: String,
    },
    /// A request refused by a local rule before it reaches the enclave (e.g.
    /// `secret.placeholder_elsewhere`); the message says what to fix.
    #[error("{code}: {message}")]
    Refused {
        /// Stable rule code.
        code: &'static str,
        /// What failed and how to fix it.
        message: String,
    },
    /// The STS could not be reached or answered nonsense.
    #[error("STS unavailable: {0}")]
    StsUnavailable(String),
}
