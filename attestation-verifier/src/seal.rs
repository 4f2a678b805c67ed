//! Sealing to an attested enclave: the evidence is verified and its measurements decided
//! by the same [`Verifier`] and policy as every proof, and only then is anything encrypted
//! to the HPKE key its binding carries. `cada-owner seal` seals secrets through
//! [`attested_target`]; services (`cada-verify seal`) encrypt data with
//! [`seal_data_to_agent`].
use cada_protocol::envelope::{EvidenceEnvelope, Platform};
use cada_secrets::{HpkePublicKey, SealTarget, SecretsError};

use crate::{AttestedKey, UnixTime, Verifier};

/// Whether `key` comes from a platform whose keys live in host memory (`sim`, `sim-snp`)
/// or from an emulator: whoever runs that host can read whatever is sealed to it.
pub fn keys_in_host_memory(key: &AttestedKey) -> bool {
    matches!(key.platform, Platform::Sim | Platform::SimSnp) || key.emulated
}

/// Verifies `env` at `now` (rule 4 of the decision: signature chain to a root of the
/// policy, freshness, binding) and decides its measurements for `audience` (rules 11–12:
/// the `[[audience]]` covering that URL names the accepted measurement sets), then returns
/// the enclave's HPKE key and signing-key thumbprint to seal to.
///
/// Refusals: `secret.measurement` (evidence or measurements refused; the message names the
/// verifier's code), `secret.sim_platform` (a host-memory platform without
/// `allow_dev_platform`), `secret.unknown` (the binding carries no HPKE key).
/// `nonce`: the nonce the caller asked the enclave to put in this evidence, if it did.
pub fn attested_target(
    verifier: &Verifier,
    env: &EvidenceEnvelope,
    nonce: Option<&[u8]>,
    audience: &str,
    now: UnixTime,
    allow_dev_platform: bool,
) -> Result<(AttestedKey, SealTarget), SecretsError> {
    let key = verifier
        .admit_evidence(env, nonce, now, None)
        .map_err(|r| SecretsError::Measurement(format!("{}: {}", r.code(), r.error)))?;
    verifier.check_audience(audience, &key).map_err(|r| {
        SecretsError::Measurement(format!(
            "{}: the policy does not accept this enclave for {audience}: {}",
            r.code(),
            r.error
        ))
    })?;
    if keys_in_host_memory(&key) && !allow_dev_platform {
        return Err(SecretsError::SimPlatform(format!(
            "the evidence is from {}{}, whose keys live in host memory: refused unless you say \
             this is development (--allow-dev-platform)",
            key.platform,
            if key.emulated { " (emulated)" } else { "" }
        )));
    }
    let Some(hpke) = key.hpke.as_deref() else {
        return Err(SecretsError::Unknown(
            "the evidence binds no HPKE key (an enclave from before sealed secrets)".into(),
        ));
    };
    let target = SealTarget {
        hpke: HpkePublicKey::from_b64(hpke)?,
        jkt: key.jkt.clone(),
    };
    Ok((key, target))
}

/// [`attested_target`], then [`cada_secrets::data::seal_data`]: `data` encrypted for
/// `label` to the attested enclave; it opens only inside that enclave, under a contract of
/// its owner that grants `label`.
pub fn seal_data_to_agent(
    verifier: &Verifier,
    env: &EvidenceEnvelope,
    audience: &str,
    label: &str,
    data: &[u8],
    now: UnixTime,
    allow_dev_platform: bool,
) -> Result<(AttestedKey, Vec<u8>), SecretsError> {
    let (key, target) = attested_target(verifier, env, None, audience, now, allow_dev_platform)?;
    let envelope = cada_secrets::data::seal_data(&target, label, data)?;
    Ok((key, envelope))
}
