//! A fixed enclave HPKE key (a test key, not a secret) and time for the `sealed_envelope`
//! target, so that seeds sealed by one process open in another. The owner is
//! [`crate::contract_setup::owner`].
use std::sync::OnceLock;

use cada_secrets::{HpkeKeyPair, SealTarget, SecretKind, SecretUsage};

/// Time of the target and of the seeds (2026-11-28T00:00:00Z).
pub const SEAL_AT: u64 = 1_795_824_000;

/// The fixed enclave's signing-key thumbprint.
pub const JKT: &str = "fuzz-enclave-jkt";

/// The fixed enclave's HPKE key pair.
pub fn enclave() -> &'static HpkeKeyPair {
    static K: OnceLock<HpkeKeyPair> = OnceLock::new();
    K.get_or_init(|| HpkeKeyPair::from_private_bytes(&[0x5a; 32]).expect("32 bytes"))
}

/// The fixed enclave as the owner seals to it.
pub fn target() -> SealTarget {
    SealTarget {
        hpke: enclave().public(),
        jkt: JKT.into(),
    }
}

/// A usage for the seeds.
pub fn usage(kind: SecretKind) -> SecretUsage {
    SecretUsage {
        name: "github".into(),
        upstream: "https://api.github.com".into(),
        path_prefix: "/repos/acme/".into(),
        header: "authorization".into(),
        format: "Bearer {}".into(),
        cas: vec![],
        expires_at: SEAL_AT + 3600,
        credential_endpoints: vec!["/repos/acme/tokens".into()],
        kind,
    }
}
