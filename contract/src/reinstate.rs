//! Reinstatement: the owner's signed word that a contract suspended by the verifiers'
//! behaviour limits may be used again.
//!
//! Format: a compact JWS, `typ: cada-reinstate+jwt`, `kid` = the owner key's DID URL,
//! payload `{"iss": <owner DID>, "dtc": <the contract's digest>, "sid": <the suspension's
//! id>, "jti": <unique id>, "iat": n, "exp": n}` with a lifetime of at most one hour,
//! verified under the same trusted owners as contracts.
//!
//! A reinstatement lifts one suspension, once: it names the suspension (`sid`, which the
//! verifiers give in their refusals and at `GET /v1/contracts/{dtc}/suspension`), so it
//! cannot lift a later suspension of the same contract, and its `jti` is consumed in the
//! fleet's shared store when it is applied, so it cannot be applied twice.
use serde::{Deserialize, Serialize};

use crate::error::clip;
use crate::jose::{self, Doc};
use crate::{ContractError, OwnerKey, TrustedOwners, UnixSeconds};

/// The JOSE `typ` of a reinstatement.
pub const REINSTATE_TYP: &str = "cada-reinstate+jwt";
/// Largest reinstatement accepted, bytes.
pub const MAX_REINSTATE_LEN: usize = 4096;
/// Longest lifetime of a reinstatement (`exp - iat`).
pub const MAX_REINSTATE_LIFETIME_SECS: u64 = 3600;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Claims {
    iss: String,
    dtc: String,
    sid: String,
    jti: String,
    iat: UnixSeconds,
    exp: UnixSeconds,
}

/// Longest suspension id or `jti` accepted, bytes.
pub const MAX_REINSTATE_ID_LEN: usize = 128;

/// Issuing and verifying reinstatements.
#[derive(Debug)]
pub struct Reinstatement;

/// A reinstatement whose signature verified under a trusted owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedReinstatement {
    /// The owner who signed it.
    pub owner: String,
    /// The contract it reinstates (`cada.dtc`).
    pub dtc: String,
    /// The suspension it lifts (the id the verifiers gave it).
    pub suspension: String,
    /// Its unique id: consumed when it is applied.
    pub jti: String,
    /// When it stops being valid: the store keeps its `jti` until then.
    pub exp: UnixSeconds,
}

impl Reinstatement {
    /// A reinstatement lifting suspension `suspension` of the contract whose digest is
    /// `dtc`, valid for `lifetime_secs` (1..=[`MAX_REINSTATE_LIFETIME_SECS`]) from `now`,
    /// with a fresh random `jti`.
    pub fn issue(
        key: &OwnerKey,
        dtc: &str,
        suspension: &str,
        now: UnixSeconds,
        lifetime_secs: u64,
    ) -> Result<String, ContractError> {
        if !(1..=MAX_REINSTATE_LIFETIME_SECS).contains(&lifetime_secs) {
            return Err(ContractError::Reinstate {
                detail: format!("lifetime must be 1..={MAX_REINSTATE_LIFETIME_SECS} s"),
            });
        }
        if suspension.is_empty() || suspension.len() > MAX_REINSTATE_ID_LEN {
            return Err(ContractError::Reinstate {
                detail: format!(
                    "the suspension id must be 1..={MAX_REINSTATE_ID_LEN} bytes: copy it from \
                     the verifier's refusal or GET /v1/contracts/{{dtc}}/suspension"
                ),
            });
        }
        let mut id = [0u8; 16];
        aws_lc_rs::rand::fill(&mut id)
            .map_err(|_| ContractError::Key("random generator".into()))?;
        let claims = Claims {
            iss: key.did().to_owned(),
            dtc: dtc.to_owned(),
            sid: suspension.to_owned(),
            jti: cada_protocol::b64::encode(id),
            iat: now,
            exp: now.saturating_add(lifetime_secs),
        };
        let payload = serde_json::to_vec(&claims).map_err(|e| ContractError::Key(e.to_string()))?;
        jose::sign_as(Doc::Reinstate, key, &payload)
    }

    /// Verifies `compact` under `owners` at `now`.
    pub fn verify(
        compact: &str,
        owners: &TrustedOwners,
        now: UnixSeconds,
    ) -> Result<VerifiedReinstatement, ContractError> {
        let bad = |detail: String| ContractError::Reinstate { detail };
        let v = jose::verify(Doc::Reinstate, compact, MAX_REINSTATE_LEN, owners)?;
        let c: Claims = serde_json::from_slice(&v.payload)
            .map_err(|e| bad(format!("malformed payload: {e}")))?;
        if c.iss != v.owner {
            return Err(bad(format!(
                "iss {} is not the signing owner {}",
                clip(&c.iss),
                clip(&v.owner)
            )));
        }
        if c.exp <= c.iat || c.exp - c.iat > MAX_REINSTATE_LIFETIME_SECS {
            return Err(bad(format!(
                "its lifetime must be 1..={MAX_REINSTATE_LIFETIME_SECS} s"
            )));
        }
        for (name, v) in [("sid", &c.sid), ("jti", &c.jti)] {
            if v.is_empty() || v.len() > MAX_REINSTATE_ID_LEN {
                return Err(bad(format!(
                    "its {name} must be 1..={MAX_REINSTATE_ID_LEN} bytes"
                )));
            }
        }
        if c.iat > now.saturating_add(60) || now >= c.exp {
            return Err(bad(format!(
                "it is valid from {} until {} (now {now})",
                c.iat, c.exp
            )));
        }
        Ok(VerifiedReinstatement {
            owner: v.owner,
            dtc: c.dtc,
            suspension: c.sid,
            jti: c.jti,
            exp: c.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OwnerAlg;

    #[test]
    fn only_a_trusted_owner_reinstates_and_only_for_a_while() {
        let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let owners = TrustedOwners::from_did_key(owner.did()).unwrap();
        let r = Reinstatement::issue(&owner, "abc", "s1", 1_000, 600).unwrap();
        let v = Reinstatement::verify(&r, &owners, 1_001).unwrap();
        assert_eq!(
            (v.owner.as_str(), v.dtc.as_str(), v.suspension.as_str()),
            (owner.did(), "abc", "s1")
        );
        assert_eq!(v.exp, 1_600);
        // Each one is unique.
        let again = Reinstatement::issue(&owner, "abc", "s1", 1_000, 600).unwrap();
        assert_ne!(
            Reinstatement::verify(&again, &owners, 1_001).unwrap().jti,
            v.jti
        );
        assert!(Reinstatement::issue(&owner, "abc", "", 1_000, 600).is_err());
        let e = Reinstatement::verify(&r, &owners, 1_600).unwrap_err();
        assert_eq!(e.code(), "contract.reinstate");
        let other = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let r2 = Reinstatement::issue(&other, "abc", "s1", 1_000, 600).unwrap();
        let e = Reinstatement::verify(&r2, &owners, 1_001).unwrap_err();
        assert_eq!(e.code(), "contract.reinstate");
        assert!(e.to_string().contains("not a trusted owner"), "{e}");
        // A lock is not a reinstatement.
        let lock = crate::OwnerLock::issue(&owner, owner.did(), 1_000, 60).unwrap();
        assert_eq!(
            Reinstatement::verify(&lock, &owners, 1_001)
                .unwrap_err()
                .code(),
            "contract.reinstate"
        );
    }
}
