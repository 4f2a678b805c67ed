//! The owner lock: an owner-signed statement "enclave key K is mine", which an enclave
//! accepts once. From then on the enclave's key binding names the owner, its evidence says
//! so, and it accepts contracts from that owner only.
//!
//! Format: a compact JWS, `typ: cada-lock+jwt`, `kid` = the owner key's DID URL, payload
//! `{"iss": <owner did:key>, "sub": <enclave key did:key>, "iat": n, "exp": n}` (seconds).
//! The owner must be a `did:key`: an enclave cannot resolve `did:web`, and a DID document
//! handed in by the (untrusted) host could carry any key.
use serde::{Deserialize, Serialize};

use crate::error::clip;
use crate::jose::{self, Doc};
use crate::{ContractError, OwnerKey, TrustedOwners, UnixSeconds};

/// The JOSE `typ` of an owner lock.
pub const LOCK_TYP: &str = "cada-lock+jwt";
/// Largest owner lock accepted, bytes.
pub const MAX_LOCK_LEN: usize = 4096;
/// Longest validity of a lock (`exp - iat`): a lock is for installing now, not a standing
/// credential a host could keep and replay later.
pub const MAX_LOCK_LIFETIME_SECS: u64 = 3600;
/// How far ahead of the enclave's clock a lock's `iat` may be.
pub const LOCK_FUTURE_TOLERANCE_SECS: u64 = 60;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LockClaims {
    iss: String,
    sub: String,
    iat: UnixSeconds,
    exp: UnixSeconds,
}

/// Issuing and verifying owner locks.
#[derive(Debug)]
pub struct OwnerLock;

/// A lock that verified for this enclave.
#[derive(Debug, Clone)]
pub struct VerifiedLock {
    owner: String,
    owners: TrustedOwners,
}

impl VerifiedLock {
    /// The owner's DID (`did:key:…`).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The owner's keys, ready to verify its contracts and status lists.
    pub fn owners(&self) -> &TrustedOwners {
        &self.owners
    }
}

impl OwnerLock {
    /// A lock of the enclave key `enclave_did` to `key`'s owner, valid for `lifetime_secs`
    /// (1..=[`MAX_LOCK_LIFETIME_SECS`]) from `now`.
    pub fn issue(
        key: &OwnerKey,
        enclave_did: &str,
        now: UnixSeconds,
        lifetime_secs: u64,
    ) -> Result<String, ContractError> {
        if !key.did().starts_with("did:key:") {
            return Err(ContractError::Lock {
                detail: format!(
                    "the owner {} is not a did:key; an enclave can only be locked to a did:key \
                     owner (it cannot resolve did:web)",
                    clip(key.did())
                ),
            });
        }
        if !(1..=MAX_LOCK_LIFETIME_SECS).contains(&lifetime_secs) {
            return Err(ContractError::Lock {
                detail: format!("lifetime must be 1..={MAX_LOCK_LIFETIME_SECS} s"),
            });
        }
        crate::did::PublicKey::from_did_key(enclave_did).map_err(|e| ContractError::Lock {
            detail: format!("the enclave key must be a did:key: {e}"),
        })?;
        let claims = LockClaims {
            iss: key.did().to_owned(),
            sub: enclave_did.to_owned(),
            iat: now,
            exp: now.saturating_add(lifetime_secs),
        };
        let payload = serde_json::to_vec(&claims).map_err(|e| ContractError::Key(e.to_string()))?;
        jose::sign_as(Doc::Lock, key, &payload)
    }

    /// Verifies `compact` as a lock of `enclave_did` at `now`. With `pinned` (an owner fixed
    /// at boot, in the measured image), the lock must come from that owner.
    pub fn verify(
        compact: &str,
        enclave_did: &str,
        pinned: Option<&str>,
        now: UnixSeconds,
    ) -> Result<VerifiedLock, ContractError> {
        let lock_err = |detail: String| ContractError::Lock { detail };
        // The issuer is read before the signature check only to find its key: a did:key
        // is its own key, and the signature below must verify under it.
        let (header, _) =
            jose::decode_unverified(compact, MAX_LOCK_LEN).map_err(|e| lock_err(e.to_string()))?;
        let kid = header
            .get("kid")
            .and_then(|k| k.as_str())
            .ok_or_else(|| lock_err("the header has no kid".into()))?;
        let did = kid.split('#').next().unwrap_or_default();
        if let Some(p) = pinned {
            if did != p {
                return Err(lock_err(format!(
                    "it is signed by {}, but this enclave's image pins the owner {}",
                    clip(did),
                    clip(p)
                )));
            }
        }
        if !did.starts_with("did:key:") {
            return Err(lock_err(format!(
                "the owner {} is not a did:key; an enclave can only be locked to a did:key owner",
                clip(did)
            )));
        }
        let owners = TrustedOwners::from_did_key(did).map_err(|e| lock_err(e.to_string()))?;
        let v = jose::verify(Doc::Lock, compact, MAX_LOCK_LEN, &owners)?;
        let claims: LockClaims = serde_json::from_slice(&v.payload)
            .map_err(|e| lock_err(format!("malformed payload: {e}")))?;
        if claims.iss != v.owner {
            return Err(lock_err(format!(
                "iss {} is not the signing owner {}",
                clip(&claims.iss),
                clip(&v.owner)
            )));
        }
        if claims.sub != enclave_did {
            return Err(lock_err(format!(
                "it locks the enclave key {}, not this one ({})",
                clip(&claims.sub),
                clip(enclave_did)
            )));
        }
        if claims.exp <= claims.iat || claims.exp - claims.iat > MAX_LOCK_LIFETIME_SECS {
            return Err(lock_err(format!(
                "its lifetime must be 1..={MAX_LOCK_LIFETIME_SECS} s"
            )));
        }
        if claims.iat > now.saturating_add(LOCK_FUTURE_TOLERANCE_SECS) {
            return Err(lock_err(format!(
                "it is issued at {}, in the future (now {now})",
                claims.iat
            )));
        }
        if now >= claims.exp {
            return Err(lock_err(format!(
                "it expired at {} (now {now}); issue a new one with cada-owner lock",
                claims.exp
            )));
        }
        Ok(VerifiedLock {
            owner: v.owner,
            owners,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OwnerAlg;

    const NOW: u64 = 1_800_000_000;

    fn enclave_did() -> String {
        OwnerKey::generate(OwnerAlg::Ed25519)
            .unwrap()
            .did()
            .to_owned()
    }

    #[test]
    fn a_lock_verifies_for_its_enclave_only() {
        for alg in [OwnerAlg::Ed25519, OwnerAlg::Es256] {
            let owner = OwnerKey::generate(alg).unwrap();
            let me = enclave_did();
            let lock = OwnerLock::issue(&owner, &me, NOW, 600).unwrap();
            let v = OwnerLock::verify(&lock, &me, None, NOW + 1).unwrap();
            assert_eq!(v.owner(), owner.did());
            assert!(v.owners().is_trusted(owner.did()));
            assert!(OwnerLock::verify(&lock, &me, Some(owner.did()), NOW).is_ok());

            let other = enclave_did();
            let e = OwnerLock::verify(&lock, &other, None, NOW).unwrap_err();
            assert_eq!(e.code(), "contract.lock");
            assert!(e.to_string().contains("not this one"), "{e}");
        }
    }

    #[test]
    fn refusals_name_what_failed() {
        let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let me = enclave_did();
        let lock = OwnerLock::issue(&owner, &me, NOW, 600).unwrap();
        let msg = |r: Result<VerifiedLock, ContractError>| r.unwrap_err().to_string();
        assert!(msg(OwnerLock::verify(&lock, &me, None, NOW + 600)).contains("expired"));
        assert!(msg(OwnerLock::verify(&lock, &me, None, NOW - 61)).contains("future"));
        let other = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        assert!(msg(OwnerLock::verify(&lock, &me, Some(other.did()), NOW)).contains("pins"));
        // A payload swapped under the original signature.
        let mut parts: Vec<&str> = lock.split('.').collect();
        let forged = cada_protocol::b64::encode(
            serde_json::to_vec(&LockClaims {
                iss: owner.did().into(),
                sub: enclave_did(),
                iat: NOW,
                exp: NOW + 600,
            })
            .unwrap(),
        );
        parts[1] = &forged;
        let e = OwnerLock::verify(&parts.join("."), &me, None, NOW).unwrap_err();
        assert!(e.to_string().contains("signature"), "{e}");
        // A contract is not a lock, and a lock is not a contract.
        assert!(msg(OwnerLock::verify("a.b.c", &me, None, NOW)).contains("owner lock"));
        let c = crate::Contract::verify(
            &lock,
            &TrustedOwners::from_did_key(owner.did()).unwrap(),
            NOW,
        )
        .unwrap_err();
        assert_eq!(c.code(), "contract.malformed");
        assert!(OwnerLock::issue(&owner, &me, NOW, MAX_LOCK_LIFETIME_SECS + 1).is_err());
        assert!(OwnerLock::issue(&owner, "did:web:example.com", NOW, 60).is_err());
        let mut web = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        web.use_did_web("did:web:owner.example").unwrap();
        assert!(OwnerLock::issue(&web, &me, NOW, 60)
            .unwrap_err()
            .to_string()
            .contains("did:key"));
    }
}
