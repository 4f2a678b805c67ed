//! The approval page's refusals, each with a stable code.

/// Why the approval page refused something. [`WebError::code`] is the stable code a refusal
/// page and the log name; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The `--public-url` cannot be a WebAuthn origin.
    #[error("web.public_url: {0}")]
    PublicUrl(String),
    /// The request's Host is not the public URL's.
    #[error("web.host: this page is served as {expected}; the request named host {got:?}. Open the page at its public URL")]
    Host {
        /// host[:port] of the public URL.
        expected: String,
        /// What the request said.
        got: String,
    },
    /// No session, or an expired one.
    #[error("web.session: {0}")]
    Session(String),
    /// A POST that may come from another site.
    #[error("web.csrf: {0}")]
    Csrf(String),
    /// The one-time registration code is wrong, used, expired or missing.
    #[error("web.code: {0}")]
    Code(String),
    /// A request body or field the page does not accept.
    #[error("web.request: {0}")]
    Request(String),
    /// Too many pending ceremonies or sessions.
    #[error("web.busy: {0}")]
    Busy(String),
    /// No such page or request.
    #[error("web.not_found: {0}")]
    NotFound(String),
    /// clientDataJSON is malformed or too large.
    #[error("webauthn.client_data: {0}")]
    ClientData(String),
    /// clientDataJSON's `type` is not the ceremony's.
    #[error("webauthn.type: expected {expected}, got {got:?}")]
    Type {
        /// `webauthn.create` or `webauthn.get`.
        expected: &'static str,
        /// What the browser said.
        got: String,
    },
    /// The challenge is unknown, used or expired.
    #[error("webauthn.challenge: {0}")]
    Challenge(String),
    /// clientDataJSON's origin is not the public URL's origin.
    #[error("webauthn.origin: the browser signed for {got:?}, this page is {expected}")]
    Origin {
        /// The public origin.
        expected: String,
        /// What the browser said.
        got: String,
    },
    /// The ceremony ran in a cross-origin frame.
    #[error("webauthn.cross_origin: the passkey was used from a frame of another site")]
    CrossOrigin,
    /// rpIdHash is not SHA-256 of the rp id.
    #[error("webauthn.rp_id: the authenticator signed for another relying party than {0}")]
    RpId(String),
    /// The UP flag is not set.
    #[error("webauthn.user_present: the authenticator did not confirm a user was present")]
    UserPresent,
    /// The UV flag is not set.
    #[error("webauthn.user_verified: the authenticator did not verify the user (PIN or biometric); this page requires it")]
    UserVerified,
    /// authenticatorData is malformed.
    #[error("webauthn.auth_data: {0}")]
    AuthData(String),
    /// The attestation object is malformed.
    #[error("webauthn.attestation: {0}")]
    Attestation(String),
    /// The credential public key is malformed or of an algorithm the page does not take.
    #[error("webauthn.key: {0}")]
    Key(String),
    /// The assertion's signature does not verify.
    #[error("webauthn.signature: the passkey's signature does not verify")]
    Signature,
    /// signCount did not increase: a cloned authenticator.
    #[error("webauthn.sign_count: the passkey's signature counter went from {stored} to {got}; the passkey may have been cloned, sign-in refused")]
    SignCount {
        /// The counter the page stored.
        stored: u32,
        /// What the authenticator said.
        got: u32,
    },
    /// The credential id is not registered.
    #[error("webauthn.unknown_credential: this passkey is not registered here")]
    UnknownCredential,
    /// The credential id is already registered.
    #[error("webauthn.duplicate_credential: this passkey is already registered")]
    DuplicateCredential,
    /// The credential file cannot be read or written.
    #[error("webauthn.store: {0}")]
    Store(String),
    /// The service's audit log cannot record a passkey event (a registration, a sign-in,
    /// a fresh code): the event does not take effect.
    #[error(
        "audit.unavailable: {0}; nothing was changed, try again when the audit log can be written"
    )]
    Audit(String),
}

impl WebError {
    /// The stable code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::PublicUrl(_) => "web.public_url",
            Self::Host { .. } => "web.host",
            Self::Session(_) => "web.session",
            Self::Csrf(_) => "web.csrf",
            Self::Code(_) => "web.code",
            Self::Request(_) => "web.request",
            Self::Busy(_) => "web.busy",
            Self::NotFound(_) => "web.not_found",
            Self::ClientData(_) => "webauthn.client_data",
            Self::Type { .. } => "webauthn.type",
            Self::Challenge(_) => "webauthn.challenge",
            Self::Origin { .. } => "webauthn.origin",
            Self::CrossOrigin => "webauthn.cross_origin",
            Self::RpId(_) => "webauthn.rp_id",
            Self::UserPresent => "webauthn.user_present",
            Self::UserVerified => "webauthn.user_verified",
            Self::AuthData(_) => "webauthn.auth_data",
            Self::Attestation(_) => "webauthn.attestation",
            Self::Key(_) => "webauthn.key",
            Self::Signature => "webauthn.signature",
            Self::SignCount { .. } => "webauthn.sign_count",
            Self::UnknownCredential => "webauthn.unknown_credential",
            Self::DuplicateCredential => "webauthn.duplicate_credential",
            Self::Store(_) => "webauthn.store",
            Self::Audit(_) => "audit.unavailable",
        }
    }

    /// The HTTP status a refusal is answered with.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::PublicUrl(_) | Self::Store(_) => 500,
            Self::Host { .. } => 421,
            Self::Session(_) => 401,
            Self::Csrf(_) => 403,
            Self::Busy(_) | Self::Audit(_) => 503,
            Self::NotFound(_) => 404,
            Self::Code(_)
            | Self::Request(_)
            | Self::ClientData(_)
            | Self::Type { .. }
            | Self::Challenge(_)
            | Self::Origin { .. }
            | Self::CrossOrigin
            | Self::RpId(_)
            | Self::UserPresent
            | Self::UserVerified
            | Self::AuthData(_)
            | Self::Attestation(_)
            | Self::Key(_)
            | Self::Signature
            | Self::SignCount { .. }
            | Self::UnknownCredential
            | Self::DuplicateCredential => 400,
        }
    }
}
