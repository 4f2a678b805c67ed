//! The one error type of this crate.
use crate::url::UrlError;

/// Everything that can go wrong while decoding or encoding a CADA format.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// Input longer than the format allows.
    #[error("{what} is {len} bytes, more than the limit of {max} bytes")]
    TooLarge {
        /// Which structure.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes that are not well-formed CBOR within the nesting limit.
    #[error("malformed CBOR in {what}: {detail}")]
    Cbor {
        /// Which structure.
        what: &'static str,
        /// What the decoder said.
        detail: String,
    },
    /// A CBOR map repeats a key.
    #[error("{what} repeats the map key {key}")]
    DuplicateKey {
        /// Which structure.
        what: &'static str,
        /// The key, printed.
        key: String,
    },
    /// Well-formed but the wrong shape (missing field, wrong type, bad value).
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// Which structure.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// Base64url that does not decode.
    #[error("{what} is not valid unpadded base64url")]
    Base64 {
        /// Which field.
        what: &'static str,
    },
    /// JSON that does not parse into the expected shape.
    #[error("invalid JSON in {what}: {detail}")]
    Json {
        /// Which structure.
        what: &'static str,
        /// What the parser said.
        detail: String,
    },
    /// A JWS header with `crit` (RFC 7515 §4.1.11): it names extensions the recipient must
    /// understand, and CADA understands none, so the JWS is refused.
    #[error(
        "the JWS header marks {names:?} critical (crit); no JWS extension is understood here, \
         so the proof is refused (RFC 7515 §4.1.11)"
    )]
    CriticalHeader {
        /// The names listed in `crit` (empty when `crit` is not a list of strings).
        names: Vec<String>,
    },
    /// The JWS `alg` is not the algorithm of the key in `jwk`.
    #[error("alg {alg:?} cannot be used with a {kty}/{crv} key (the header's jwk)")]
    AlgKeyMismatch {
        /// The header's `alg`.
        alg: String,
        /// The key's `kty`.
        kty: String,
        /// The key's `crv`.
        crv: String,
    },
    /// A URL or URL prefix that CADA does not match (see [`crate::url`]).
    #[error("URL: {0}")]
    Url(#[from] UrlError),
    /// A task identifier or traceparent not in its strict form ([`crate::trace`]):
    /// `trace.task` or `trace.traceparent`.
    #[error("{0}")]
    Trace(#[from] crate::trace::TraceError),
    /// An HTTP header that would make a server read a JSON-RPC body otherwise than CADA
    /// checked it ([`crate::mcp::headers`]): its own stable code (`mcp.content_type`,
    /// `mcp.content_encoding`, `mcp.param_header`).
    #[error("{detail}")]
    Header {
        /// The stable code.
        code: &'static str,
        /// What is wrong and what to send instead.
        detail: String,
    },
}

impl ProtocolError {
    /// A stable short code for logs, metrics and JSON answers.
    pub fn code(&self) -> &'static str {
        match self {
            ProtocolError::TooLarge { .. } => "too_large",
            ProtocolError::Cbor { .. } => "cbor",
            ProtocolError::DuplicateKey { .. } => "duplicate_key",
            ProtocolError::Invalid { .. } => "invalid",
            ProtocolError::Base64 { .. } => "base64",
            ProtocolError::Json { .. } => "json",
            ProtocolError::CriticalHeader { .. } => "jws.crit",
            ProtocolError::AlgKeyMismatch { .. } => "jws.alg_key_mismatch",
            ProtocolError::Url(e) => e.code(),
            ProtocolError::Trace(e) => e.code(),
            ProtocolError::Header { code, .. } => code,
        }
    }

    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            detail: detail.into(),
        }
    }
}
