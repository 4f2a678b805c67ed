//! Who allowed this key to do what: the owner the enclave is locked to and the trust
//! contracts that owner installed. Nothing here does I/O or reads the clock; the signer
//! passes the time and holds the state under its lock.
use std::collections::BTreeMap;

use cada_contract::{
    Contract, ContractError, Denied, OwnerLock, RequestView, StatusList, TrustedOwners,
    VerifiedContract, VerifiedStatusList,
};
use cada_protocol::mcp::McpCall;
use cada_protocol::url::HttpUrl;
use cada_protocol::wire::ContractSummary;

use crate::EnclaveError;

/// Most contracts installed at once (one per audience is the common case).
pub const MAX_CONTRACTS: usize = 32;

/// Default bound on a status list's age (from its own `validFrom`): past it, proofs under a
/// contract with a status entry are refused until the host installs a fresher list.
pub const DEFAULT_STATUS_MAX_AGE_SECS: u64 = 3600;

/// One installed contract with its counters.
struct Installed {
    contract: VerifiedContract,
    status: Option<VerifiedStatusList>,
    used: u64,
    bucket_second: u64,
    bucket_used: u32,
}

/// The owner and its contracts. `None` owner: not locked, boot flags alone decide.
pub(crate) struct Authority {
    owner: Option<(String, TrustedOwners)>,
    pinned: Option<String>,
    contracts: Vec<Installed>,
    status_max_age_secs: u64,
}

/// A refusal with its stable code.
fn denied(e: &ContractError) -> EnclaveError {
    EnclaveError::ContractDenied {
        code: e.code(),
        message: e.to_string(),
    }
}

impl Authority {
    /// Unlocked, or locked at boot to `pinned` (an owner fixed in the measured image).
    pub(crate) fn new(
        pinned: Option<String>,
        status_max_age_secs: u64,
    ) -> Result<Self, EnclaveError> {
        let owner = match &pinned {
            Some(did) => Some((
                did.clone(),
                TrustedOwners::from_did_key(did).map_err(|e| {
                    EnclaveError::BadRequest(format!("--owner must be a did:key: {e}"))
                })?,
            )),
            None => None,
        };
        Ok(Authority {
            owner,
            pinned,
            contracts: Vec::new(),
            status_max_age_secs,
        })
    }

    /// The owner's DID, once locked.
    pub(crate) fn owner(&self) -> Option<&str> {
        self.owner.as_ref().map(|(d, _)| d.as_str())
    }

    /// Locks to the owner of `lock` (once; a second lock, even by the same owner, is
    /// refused so that the binding never changes owner while the key lives).
    pub(crate) fn lock(
        &mut self,
        lock: &str,
        enclave_did: &str,
        now: u64,
    ) -> Result<String, EnclaveError> {
        if let Some((owner, _)) = &self.owner {
            return Err(EnclaveError::ContractDenied {
                code: "contract.lock",
                message: format!(
                    "owner lock refused: this enclave is already locked to {owner}{}; an owner \
                     lock holds for the key's life",
                    if self.pinned.is_some() {
                        " (by its image)"
                    } else {
                        ""
                    }
                ),
            });
        }
        let v = OwnerLock::verify(lock, enclave_did, self.pinned.as_deref(), now)
            .map_err(|e| denied(&e))?;
        let owner = v.owner().to_owned();
        self.owner = Some((owner.clone(), v.owners().clone()));
        Ok(owner)
    }

    /// Verifies and installs a contract (and its status list): owner, signature, subject
    /// (`key_did` or `measurements`), validity, status. Re-installing a contract replaces
    /// its status list and keeps its counters.
    pub(crate) fn install(
        &mut self,
        compact: &str,
        status_list: Option<&str>,
        key_did: &str,
        measurements: &BTreeMap<String, String>,
        now: u64,
    ) -> Result<ContractSummary, EnclaveError> {
        let Some((_, owners)) = &self.owner else {
            return Err(EnclaveError::ContractDenied {
                code: "contract.lock",
                message: "this enclave is not locked to an owner: install an owner lock first \
                          (cada-owner lock, then cada-parent owner lock)"
                    .into(),
            });
        };
        let c = Contract::verify(compact, owners, now).map_err(|e| denied(&e))?;
        c.check_subject(key_did, measurements)
            .map_err(|e| denied(&e))?;
        let status = match (c.status_entry(), status_list) {
            (None, _) => None,
            (Some(entry), None) => {
                return Err(EnclaveError::ContractDenied {
                    code: "contract.status_stale",
                    message: format!(
                        "the contract has a status entry in {}: install it with that status \
                         list (revocation fails closed)",
                        entry.list
                    ),
                })
            }
            (Some(_), Some(list)) => {
                let list = StatusList::verify(list, owners, now).map_err(|e| denied(&e))?;
                if let Err(e) =
                    c.check_status(&list, list.valid_from(), now, self.status_max_age_secs)
                {
                    if matches!(e, ContractError::Revoked { .. }) {
                        // An authentic list of the owner revokes it: an installed copy goes.
                        self.contracts.retain(|i| i.contract.digest() != c.digest());
                    }
                    return Err(denied(&e));
                }
                Some(list)
            }
        };
        let summary;
        if let Some(i) = self
            .contracts
            .iter_mut()
            .find(|i| i.contract.digest() == c.digest())
        {
            i.status = status;
            summary = summarize(i);
        } else {
            if self.contracts.len() >= MAX_CONTRACTS {
                // Expired contracts make room first.
                self.contracts
                    .retain(|i| i.contract.check_time(now).is_ok());
            }
            if self.contracts.len() >= MAX_CONTRACTS {
                return Err(EnclaveError::ContractDenied {
                    code: "contract.too_many",
                    message: format!(
                        "{MAX_CONTRACTS} live contracts are installed; let one expire first"
                    ),
                });
            }
            let i = Installed {
                contract: c,
                status,
                used: 0,
                bucket_second: 0,
                bucket_used: 0,
            };
            summary = summarize(&i);
            self.contracts.insert(0, i);
        }
        Ok(summary)
    }

    /// The contract that authorizes this request, counted against its budget and rate:
    /// the most recently installed live contract that permits it. `Ok(None)`: not locked.
    /// When none does, the refusal of the most recent contract whose audience matches (or,
    /// when no audience matches, of the most recent contract) is returned.
    pub(crate) fn authorize(
        &mut self,
        method: &str,
        url: &HttpUrl,
        ctx: &BTreeMap<String, String>,
        calls: &[McpCall],
        now: u64,
    ) -> Result<Option<String>, EnclaveError> {
        if self.owner.is_none() {
            return Ok(None);
        }
        // One view per MCP call the request makes (each tool, resource and prompt must be
        // granted), or one without.
        let views: Vec<RequestView<'_>> = if calls.is_empty() {
            vec![RequestView {
                method,
                url,
                ctx,
                scopes: &[],
                call: None,
            }]
        } else {
            calls
                .iter()
                .map(|c| RequestView {
                    method,
                    url,
                    ctx,
                    scopes: &[],
                    call: Some(c),
                })
                .collect()
        };
        let req = &views[0];
        let max_age = self.status_max_age_secs;
        let mut first_err: Option<ContractError> = None;
        // Contracts for other audiences are passed over without building a refusal (the
        // audience test is a prefix comparison); only those whose audience matches are
        // asked for a full verdict.
        for i in &mut self.contracts {
            if !i.contract.audiences().iter().any(|a| a.matches(url)) {
                continue;
            }
            let verdict = views
                .iter()
                .try_for_each(|v| i.contract.permits(v, now))
                .and_then(|()| match &i.status {
                    Some(list) => i
                        .contract
                        .check_status(list, list.valid_from(), now, max_age),
                    None => Ok(()),
                })
                .and_then(|()| counters(i, now));
            match verdict {
                Ok(()) => {
                    i.used += 1;
                    return Ok(Some(i.contract.digest().to_owned()));
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        // None for this audience: the most recent contract's refusal names the rule.
        let err = match (first_err, self.contracts.first()) {
            (Some(e), _) => e,
            (None, Some(i)) => match i.contract.permits(req, now) {
                Err(e) => e,
                Ok(()) => ContractError::not_permitted(Denied::Audience, "no contract matched"),
            },
            (None, None) => {
                return Err(EnclaveError::ContractDenied {
                    code: "contract.none",
                    message: "no trust contract is installed: the owner's contract must be \
                              installed (cada-parent contract install) before the enclave \
                              signs"
                        .into(),
                })
            }
        };
        Err(denied(&err))
    }

    /// The installed contracts, most recent first.
    pub(crate) fn summaries(&self) -> Vec<ContractSummary> {
        self.contracts.iter().map(summarize).collect()
    }
}

/// Budget and rate of one contract (checked, then counted by the caller on success).
fn counters(i: &mut Installed, now: u64) -> Result<(), ContractError> {
    if let Some(b) = i.contract.budget() {
        if i.used >= b {
            return Err(ContractError::not_permitted(
                Denied::Budget,
                format!("its budget of {b} proofs is spent"),
            ));
        }
    }
    if let Some(r) = i.contract.rate_per_second() {
        if i.bucket_second != now {
            i.bucket_second = now;
            i.bucket_used = 0;
        }
        if i.bucket_used >= r {
            return Err(ContractError::not_permitted(
                Denied::Rate,
                format!("its rate of {r} proofs per second is reached"),
            ));
        }
        i.bucket_used += 1;
    }
    Ok(())
}

fn summarize(i: &Installed) -> ContractSummary {
    ContractSummary {
        digest: i.contract.digest().to_owned(),
        id: i.contract.id().to_owned(),
        name: i.contract.name().map(str::to_owned),
        audiences: i
            .contract
            .audiences()
            .iter()
            .map(|a| a.as_str().to_owned())
            .collect(),
        valid_until: i.contract.valid_until(),
        used: i.used,
    }
}
