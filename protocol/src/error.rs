//! The one error type of this crate.

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
}

impl ProtocolError {
    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            detail: detail.into(),
        }
    }
}
