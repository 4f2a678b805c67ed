//! Rule 13 for a delegation chain (issue 24, docs/delegation.md "What a verifier checks"):
//! what the contract crate cannot check — each delegator's attestation at the time it
//! signed — and the policy's rules for delegations.
//!
//! A chain `C0~D1~…~Dn` (root first) is first verified without attestation by
//! [`cada_contract::delegation::verify_chain`] (signatures, links, attenuation, depth
//! against every ancestor's `maxDepth`, status entries in range, time). Then, per link
//! `Di` (signed by the subject of `Di-1`):
//!
//! - its `cadaDelegation.evidence` decodes as an evidence envelope, verifies with the
//!   policy's roots AT THE LINK'S `iat` (injected time), carries the nonce
//!   [`cada_contract::delegation::evidence_nonce`] of this link, and binds the issuer's key
//!   (`delegation.evidence`);
//! - the key binding names the root owner (`delegation.owner`);
//! - freshness (`delegation.stale`): a Nitro (or `sim`) document's timestamp lies within
//!   `delegation_evidence_skew_secs` of `iat`; an SEV-SNP report or TPM quote carries no
//!   time, so it is bound to this link only by the nonce in its `report_data` /
//!   `qualifyingData` and counted as of `iat`; every link, whatever its platform, is valid
//!   for at most `max_delegation_lifetime_secs` after its `iat` (so a delegator's report is
//!   never relied on longer than that), and no link is issued in the future (beyond the
//!   policy's clock skew);
//! - the delegator's measurements meet the audience's `delegator_measurements` (or its own
//!   `measurements`), and a parent made for measurements (not a key) is met by them
//!   (`delegation.delegator_image`);
//! - the chain is no deeper than the audience's `max_delegation_depth` (`delegation.depth`).
//!
//! Verified chains are cached by the leaf's digest: a warm decision checks only each link's
//! time and status bit (and the caller's fleet counters).
use std::sync::Arc;

use cada_contract::delegation::{evidence_nonce, split_chain, verify_chain, VerifiedChain};
use cada_contract::{Subject, TrustedOwners, VerifiedContract};
use cada_protocol::envelope::{EvidenceEnvelope, Platform};

use crate::decide::LinkInfo;
use crate::evidence::{AttestedKey, EvidencePolicy};
use crate::policy::Audience;
use crate::pop::PopVerifier;
use crate::{UnixTime, VerifyError};

/// A chain that passed every check of this module for one audience.
#[derive(Debug)]
pub struct CheckedChain {
    /// The chain as the contract crate verified it.
    pub chain: VerifiedChain,
    /// Each delegator's attested key (one per link, parent first).
    pub delegators: Vec<AttestedKey>,
    /// The audience prefix whose delegation rules it met.
    pub audience: String,
    /// The links, root first, as accepted requests report them.
    pub links: Vec<LinkInfo>,
}

impl CheckedChain {
    /// The leaf contract (what permits the request).
    pub fn leaf(&self) -> &VerifiedContract {
        self.chain.leaf()
    }
}

/// A refusal of this module: a stable code and what to fix.
pub(crate) fn refuse(code: &'static str, detail: impl Into<String>) -> VerifyError {
    VerifyError::Contract {
        code,
        detail: detail.into(),
    }
}

/// The links of `chain`, root first ([`LinkInfo`]).
pub fn link_infos(chain: &VerifiedChain) -> Vec<LinkInfo> {
    chain
        .contracts()
        .enumerate()
        .map(|(depth, c)| link_info(c, depth))
        .collect()
}

/// One contract as a [`LinkInfo`] at `depth`.
pub fn link_info(c: &VerifiedContract, depth: usize) -> LinkInfo {
    LinkInfo {
        digest: c.digest().to_owned(),
        issuer: c.issuer().to_owned(),
        subject: match c.subject() {
            Subject::Key(did) => did.clone(),
            Subject::Measurements(_) => String::new(),
        },
        depth,
        budget: c.budget(),
        rate_per_second: c.rate_per_second(),
        limits: *c.limits(),
        valid_until: c.valid_until(),
        iat: c.issued_at(),
    }
}

/// Verifies the chain `text` (`C0~D1~…`, root first) for the audience `aud` at `now`: the
/// chain itself under `owners`, then every delegator's evidence and the audience's rules.
pub(crate) fn check(
    pop: &PopVerifier,
    aud: &Audience,
    owners: &TrustedOwners,
    text: &str,
    skew_secs: u64,
    now: UnixTime,
) -> Result<CheckedChain, VerifyError> {
    let compacts = split_chain(text).map_err(|e| refuse(e.code(), e.to_string()))?;
    let chain = verify_chain(&compacts, owners, now.as_secs())
        .map_err(|e| refuse(e.code(), contract_detail(&e)))?;
    check_verified(pop, aud, chain, skew_secs, now)
}

/// Every check of this module on a chain the contract crate verified (for a chain cached
/// under another audience, again for this one: each audience has its own delegation
/// rules; the delegators' evidence is in the chain).
pub(crate) fn check_verified(
    pop: &PopVerifier,
    aud: &Audience,
    chain: VerifiedChain,
    skew_secs: u64,
    now: UnixTime,
) -> Result<CheckedChain, VerifyError> {
    check_depth(aud, &chain)?;
    let mut delegators = Vec::with_capacity(chain.links.len());
    let contracts: Vec<&VerifiedContract> = chain.contracts().collect();
    for (i, link) in chain.links.iter().enumerate() {
        let depth = i + 1;
        let parent = contracts[i];
        let key = delegator(
            pop,
            aud,
            &chain,
            parent,
            &link.contract,
            depth,
            skew_secs,
            now,
        )?;
        delegators.push(key);
    }
    let links = link_infos(&chain);
    Ok(CheckedChain {
        chain,
        delegators,
        audience: aud.prefix.as_str().to_owned(),
        links,
    })
}

fn check_depth(aud: &Audience, chain: &VerifiedChain) -> Result<(), VerifyError> {
    let max = aud.delegation.max_depth;
    if chain.depth() > max {
        return Err(refuse(
            "delegation.depth",
            if max == 0 {
                format!(
                    "{} accepts no delegated contracts (policy max_delegation_depth = 0, the \
                     default): the operator opts in per audience",
                    aud.prefix
                )
            } else {
                format!(
                    "the chain holds {} delegations; {} accepts at most {max} (policy \
                     max_delegation_depth)",
                    chain.depth(),
                    aud.prefix
                )
            },
        ));
    }
    Ok(())
}

/// The delegator of `link` (depth `depth`, under `parent`): its evidence, verified as of
/// the link's `iat`, binding the link's issuer key and nonce, of the root owner, fresh,
/// and of an image the audience accepts for delegators.
#[expect(
    clippy::too_many_arguments,
    reason = "one link's inputs; a struct for them would be built at its one call"
)]
fn delegator(
    pop: &PopVerifier,
    aud: &Audience,
    chain: &VerifiedChain,
    parent: &VerifiedContract,
    link: &VerifiedContract,
    depth: usize,
    skew_secs: u64,
    now: UnixTime,
) -> Result<AttestedKey, VerifyError> {
    let at = |d: String| format!("link {depth} ({}): {d}", link.digest());
    let claim = link
        .delegation()
        .ok_or_else(|| refuse("delegation.malformed", at("no cadaDelegation".into())))?;
    let iat = link.issued_at();
    if iat > now.as_secs().saturating_add(skew_secs) {
        return Err(refuse(
            "delegation.stale",
            at(format!(
                "issued at {iat}, in the future (now {}, skew {skew_secs} s)",
                now.as_secs()
            )),
        ));
    }
    let lifetime = link.valid_until().saturating_sub(iat);
    let cap = aud.delegation.max_lifetime_secs;
    if lifetime > cap {
        return Err(refuse(
            "delegation.stale",
            at(format!(
                "valid for {lifetime} s after its iat; {} relies on a delegator's attestation \
                 for at most {cap} s (policy max_delegation_lifetime_secs): delegate for less",
                aud.prefix
            )),
        ));
    }
    let env = EvidenceEnvelope::from_cbor(&claim.evidence).map_err(|e| {
        refuse(
            "delegation.evidence",
            at(format!("the delegator's evidence does not decode: {e}")),
        )
    })?;
    let subject = match link.subject() {
        Subject::Key(did) => did.as_str(),
        Subject::Measurements(_) => {
            return Err(refuse(
                "delegation.subject",
                at("a delegation is to one enclave key".into()),
            ))
        }
    };
    let nonce = evidence_nonce(&claim.parent, subject, link.id(), iat);
    if env.nonce != nonce {
        return Err(refuse(
            "delegation.evidence",
            at(
                "the delegator's evidence does not carry this link's nonce (evidence_nonce of \
                parent, subject, id and iat): it was made for another delegation"
                    .into(),
            ),
        ));
    }
    let skew_ms = aud.delegation.evidence_skew_secs.saturating_mul(1000);
    let mut policy = EvidencePolicy {
        nitro: pop.config().evidence_policy.clone(),
        snp: pop.config().snp_policy.clone(),
        max_age_ms: pop.config().evidence_max_age_ms,
    };
    if matches!(env.platform, Platform::Nitro | Platform::Sim) {
        // The document's own time, within the skew of the link's iat either way.
        policy.nitro.max_age_ms = Some(skew_ms);
        policy.nitro.max_future_skew_ms = skew_ms;
        policy.nitro.expected_nonce = Some(nonce.to_vec());
    }
    let key = pop
        .evidence()
        .verify_with(&env, &policy, UnixTime::from_secs(iat))
        .map_err(|e| match e {
            VerifyError::DocumentTooOld { .. } | VerifyError::DocumentFromFuture { .. } => refuse(
                "delegation.stale",
                at(format!(
                    "the delegator's evidence was not made at the link's iat ({e}; allowed: \
                     {} s, policy delegation_evidence_skew_secs)",
                    aud.delegation.evidence_skew_secs
                )),
            ),
            e => refuse(
                "delegation.evidence",
                at(format!(
                    "the delegator's evidence does not verify as of the link's iat: [{}] {e}",
                    e.code()
                )),
            ),
        })?;
    if key.did != link.issuer() {
        return Err(refuse(
            "delegation.evidence",
            at(format!(
                "the delegator's evidence binds {}, but the link is signed by {}",
                key.did,
                link.issuer()
            )),
        ));
    }
    if key.owner.as_deref() != Some(chain.owner()) {
        return Err(refuse(
            "delegation.owner",
            at(format!(
                "the delegator is locked to {}, the chain's root owner is {}: a chain \
                 crosses no owners",
                key.owner.as_deref().unwrap_or("no owner"),
                chain.owner()
            )),
        ));
    }
    if let Subject::Measurements(_) = parent.subject() {
        parent
            .check_subject(&key.did, &key.measurements)
            .map_err(|e| {
                refuse(
                    "delegation.delegator_image",
                    at(format!(
                        "its parent is made for measurements the delegator does not have: {e}"
                    )),
                )
            })?;
    }
    aud.check_delegator(&key.measurements)
        .map_err(|d| refuse("delegation.delegator_image", at(d)))?;
    Ok(key)
}

/// A contract error's message without the code its Display may repeat.
fn contract_detail(e: &cada_contract::ContractError) -> String {
    match e {
        cada_contract::ContractError::Grant { detail, .. } => detail.clone(),
        e => e.to_string(),
    }
}

/// A cached chain, shared.
pub(crate) type Cached = Arc<CheckedChain>;

/// Most audiences one chain is kept verified for.
pub(crate) const MAX_AUDIENCES_PER_CHAIN: usize = 8;
