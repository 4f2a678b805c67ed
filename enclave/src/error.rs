//! The one error type of the enclave crate.
use cada_protocol::wire::ErrorCode;

/// What can go wrong inside the signer.
#[derive(Debug, thiserror::Error)]
pub enum EnclaveError {
    /// Key generation or signing failed in the crypto library.
    #[error("cryptographic failure: {0}")]
    Crypto(&'static str),
    /// The platform (NSM, software CA) failed.
    #[error("platform {platform}: {detail}")]
    Platform {
        /// Platform name.
        platform: &'static str,
        /// What failed.
        detail: String,
    },
    /// The request is not acceptable (bad URL, bad method, bad body).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The request's URL (`htu`) is refused as given: not absolute http(s), userinfo, a
    /// fragment, or not in normal form (the signer signs exactly what it is given).
    #[error("htu: {0}")]
    Htu(cada_protocol::url::UrlError),
    /// The owner's delegation policy forbids this signature.
    #[error("policy denied: {0}")]
    PolicyDenied(String),
    /// An owner lock or trust contract was refused, or no live contract permits the
    /// request.
    #[error("{code}: {message}")]
    ContractDenied {
        /// Stable rule code (`contract.*`).
        code: &'static str,
        /// What failed and how to fix it.
        message: String,
    },
    /// A secret call was refused or failed (`secret.*`, see
    /// [`cada_protocol::egress::codes`]); the message never holds the secret.
    #[error("{code}: {message}")]
    Secret {
        /// Stable rule code (`secret.*`).
        code: &'static str,
        /// What failed and how to fix it.
        message: String,
    },
    /// Local I/O (state dir, sockets).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl EnclaveError {
    /// The wire error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            EnclaveError::BadRequest(_) | EnclaveError::Htu(_) => ErrorCode::BadRequest,
            EnclaveError::PolicyDenied(_) => ErrorCode::PolicyDenied,
            EnclaveError::ContractDenied { .. } => ErrorCode::ContractDenied,
            EnclaveError::Secret { .. } => ErrorCode::SecretDenied,
            EnclaveError::Crypto(_) | EnclaveError::Platform { .. } | EnclaveError::Io { .. } => {
                ErrorCode::Platform
            }
        }
    }

    /// A secret-call refusal with its stable code.
    pub fn secret(code: &'static str, message: impl Into<String>) -> Self {
        EnclaveError::Secret {
            code,
            message: message.into(),
        }
    }

    /// The stable code of a refusal (`contract.*`, `secret.*`), if this is one.
    pub fn rule_code(&self) -> Option<&'static str> {
        match self {
            EnclaveError::ContractDenied { code, .. } | EnclaveError::Secret { code, .. } => {
                Some(code)
            }
            _ => None,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        EnclaveError::Io {
            context: context.into(),
            source,
        }
    }
}
