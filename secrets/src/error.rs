//! The one error type of this crate: every refusal with a stable [`SecretsError::code`].

/// Everything that can refuse a secret's usage, a sealed bundle or a sealed envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    /// A usage field breaks its rule (`secret.usage_invalid`).
    #[error("secret.usage_invalid: {field}: {reason}")]
    UsageInvalid {
        /// The field (`name`, `upstream`, `path_prefix`, …).
        field: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// An input longer than its hard limit (`secret.too_large`).
    #[error("secret.too_large: {what} is {len} bytes, more than the limit of {max} bytes")]
    TooLarge {
        /// Which input.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a well-formed bundle or envelope (`secret.malformed`): CBOR shape, a header, a
    /// field's type.
    #[error("secret.malformed: {what}: {detail}")]
    Malformed {
        /// Which part.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The bundle was sealed for another enclave: its recipient HPKE key or signing-key
    /// thumbprint is not this enclave's (`secret.sealed_for_other_enclave`). Re-seal to this
    /// enclave's evidence.
    #[error("secret.sealed_for_other_enclave: {0}")]
    SealedForOtherEnclave(String),
    /// The bundle is signed by, or names, an owner other than the enclave's locked owner
    /// (`secret.other_owner`).
    #[error("secret.other_owner: {0}")]
    OtherOwner(String),
    /// A signature, the AEAD tag or a digest does not verify: the bundle was changed after the
    /// owner sealed it (`secret.tampered`).
    #[error("secret.tampered: {0}")]
    Tampered(String),
    /// The evidence's measurements are not accepted by the owner's policy, or the evidence
    /// does not verify (`secret.measurement`).
    #[error("secret.measurement: {0}")]
    Measurement(String),
    /// The platform keeps its keys in host memory (`sim`), and no development flag allows
    /// secrets there (`secret.sim_platform`).
    #[error("secret.sim_platform: {0}")]
    SimPlatform(String),
    /// The secret's usage or the bundle has expired (`secret.expired`).
    #[error("secret.expired: {0}")]
    Expired(String),
    /// No such secret, or an algorithm or version this build does not know
    /// (`secret.unknown`).
    #[error("secret.unknown: {0}")]
    Unknown(String),
    /// An older bundle for a secret installed from a newer one (`secret.replayed`).
    #[error("secret.replayed: {0}")]
    Replayed(String),
    /// A contract's open budget for a label is spent (`secret.open_budget`).
    #[error("secret.open_budget: {0}")]
    OpenBudget(String),
    /// A key could not be made or read (`secret.key`).
    #[error("secret.key: {0}")]
    Key(String),
}

impl SecretsError {
    /// The stable code of this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            SecretsError::UsageInvalid { .. } => "secret.usage_invalid",
            SecretsError::TooLarge { .. } => "secret.too_large",
            SecretsError::Malformed { .. } => "secret.malformed",
            SecretsError::SealedForOtherEnclave(_) => "secret.sealed_for_other_enclave",
            SecretsError::OtherOwner(_) => "secret.other_owner",
            SecretsError::Tampered(_) => "secret.tampered",
            SecretsError::Measurement(_) => "secret.measurement",
            SecretsError::SimPlatform(_) => "secret.sim_platform",
            SecretsError::Expired(_) => "secret.expired",
            SecretsError::Unknown(_) => "secret.unknown",
            SecretsError::Replayed(_) => "secret.replayed",
            SecretsError::OpenBudget(_) => "secret.open_budget",
            SecretsError::Key(_) => "secret.key",
        }
    }
}
