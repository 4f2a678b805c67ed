//! Who allowed this key to do what: the owner the enclave is locked to and the trust
//! contracts that owner installed. Nothing here does I/O or reads the clock; the signer
//! passes the time and holds the state under its lock.
use std::collections::{BTreeMap, BTreeSet};

use cada_contract::{
    AuthorizationDetail, Contract, ContractError, Denied, Draft, OwnerLock, RequestView,
    StatusEntry, StatusList, Succession, TrustedOwners, VerifiedChain, VerifiedContract,
    VerifiedStatusList,
};
use cada_protocol::mcp::McpCall;
use cada_protocol::url::{HttpUrl, UrlPrefix};
use cada_protocol::wire::{ContractSummary, DelegateRequest, TokenExchange};

use crate::EnclaveError;

/// Most contracts installed at once (one per audience is the common case).
pub const MAX_CONTRACTS: usize = 32;

/// Default bound on a status list's age (from its own `validFrom`): past it, proofs under a
/// contract with a status entry are refused until the host installs a fresher list.
pub const DEFAULT_STATUS_MAX_AGE_SECS: u64 = 3600;

/// Most status-list URLs whose newest list is remembered for the key's life. An owner
/// names one list per contract; a contract naming a list beyond this many is refused
/// (`contract.too_many`) rather than forgetting a list, which would let an older one back.
pub const MAX_STATUS_LISTS: usize = 64;

/// Most counters remembered for contracts a status list took out (so that re-installing
/// one, should a newer list ever clear its bit, does not start its budget afresh). Those of
/// expired contracts go first (an expired contract cannot be installed again).
const MAX_RETIRED: usize = 1024;

/// Most single-use grant identifiers remembered as used (with the end of their contract's
/// validity). Those of expired contracts go first; when all are live, a further single-use
/// proof is refused (`contract.not_permitted.budget`) rather than forgetting a use.
pub const MAX_USED_GRANTS: usize = 4096;

/// Most status-list index blocks this key remembers giving to delegations (an index, or a
/// delegatee's own `statusRange`), so that none is given twice; beyond it a delegation is
/// refused (`delegation.status`) rather than risking a reuse.
pub const MAX_STATUS_GRANTS: usize = 4096;

/// The `statusRange` width a delegatee that may delegate further gets when the request
/// names none (less when the parent's range has no such block free).
pub const DEFAULT_SUB_RANGE: u64 = 256;

/// Longest default lifetime of a delegation whose request names no end: one hour (the
/// verifiers' default cap on a link's lifetime), and never past its parent's end.
pub const DEFAULT_DELEGATION_SECS: u64 = 3600;

/// How far before the delegation's `iat` its `validFrom` is set (never before the
/// parent's): a verifier whose clock is up to this much behind still finds it valid.
pub const DELEGATION_SKEW_SECS: u64 = 60;

/// One installed contract with its counters. Its status list, if any, is the newest held
/// for the URL its status entry names ([`Authority::lists`]).
struct Installed {
    /// The contract proofs are signed under: an owner contract, or a delegated leaf.
    contract: VerifiedContract,
    /// Its chain (issue 24): the root alone for an owner contract; for a delegated leaf
    /// every link, each of whose status entries is checked as the leaf's own.
    chain: VerifiedChain,
    /// The text as installed (`root~…~leaf` for a delegation): what a delegation from
    /// it extends.
    text: String,
    used: u64,
    bucket_second: u64,
    bucket_used: u32,
}

/// The counters of a contract a status list took out, kept until it expires.
struct Retired {
    used: u64,
    valid_until: u64,
    /// Its issuer and credential `id`: another text of the same contract is refused
    /// (`contract.duplicate_id`), so it cannot start these counters afresh.
    issuer: String,
    id: String,
}

/// The owner and its contracts. `None` owner: not locked, boot flags alone decide.
pub(crate) struct Authority {
    owner: Option<(String, TrustedOwners)>,
    pinned: Option<String>,
    contracts: Vec<Installed>,
    /// The newest status list seen per URL (by `validFrom`), for the key's life: an older
    /// one is never taken again (`contract.status_rollback`), so a revocation, once seen,
    /// holds however the host replays what it installed before.
    lists: BTreeMap<String, VerifiedStatusList>,
    /// Counters of contracts taken out by a revocation, by digest.
    retired: BTreeMap<String, Retired>,
    status_max_age_secs: u64,
    /// Identifiers of single-use authorization details a proof was signed under → the end
    /// of their contract's validity (after which nothing can use them).
    used_grants: BTreeMap<String, u64>,
    /// Authority events for the signer to chain (`grant.used`), drained by
    /// [`Authority::take_events`] under the same lock.
    pending: Vec<(&'static str, String)>,
    /// Status-list index blocks `[start, end)` given to delegations, per list URL (issue
    /// 24): never given again while the key lives.
    status_grants: BTreeMap<String, Vec<[u64; 2]>>,
}

/// A refusal with its stable code.
fn denied(e: &ContractError) -> EnclaveError {
    EnclaveError::ContractDenied {
        code: e.code(),
        message: e.to_string(),
    }
}

/// How a message names the contract at `depth` of a chain of `links` delegations.
fn link_name(depth: usize, links: usize) -> String {
    match (depth, links) {
        (_, 0) => "the contract".into(),
        (0, _) => "the chain's root (the owner's contract)".into(),
        (d, n) if d == n => format!("the chain's leaf (delegation at depth {d})"),
        (d, _) => format!("the chain's delegation at depth {d}"),
    }
}

/// A refusal of the contract at `depth` of a chain, its message naming the link.
fn denied_link(e: &ContractError, depth: usize, links: usize) -> EnclaveError {
    if links == 0 {
        return denied(e);
    }
    EnclaveError::ContractDenied {
        code: e.code(),
        message: format!("{}: {e}", link_name(depth, links)),
    }
}

/// A delegation chain `root~…~leaf` verified for this enclave, locked to `owner`: its root
/// must be a contract of that owner (`delegation.owner` otherwise, before any other rule,
/// so that a chain spliced onto another owner's root says so), then
/// [`cada_contract::verify_chain`] under `owners` at `now` (links, attenuation, depth,
/// status ranges, time). The delegators' evidence is the verifiers' to check.
fn verify_own_chain(
    text: &str,
    owner: &str,
    owners: &TrustedOwners,
    now: u64,
) -> Result<VerifiedChain, EnclaveError> {
    let parts = cada_contract::split_chain(text).map_err(|e| denied(&e))?;
    let root_issuer = parts
        .first()
        .and_then(|r| Contract::decode_unverified(r).ok())
        .and_then(|(_, p)| p.get("issuer").and_then(|i| i.as_str()).map(str::to_owned));
    if let Some(issuer) = root_issuer.filter(|i| i != owner) {
        return Err(EnclaveError::ContractDenied {
            code: "delegation.owner",
            message: format!(
                "the chain's root is a contract of {}, but this enclave is locked to {owner}: \
                 a delegation is accepted only below a contract of the enclave's own owner",
                issuer.chars().take(200).collect::<String>()
            ),
        });
    }
    cada_contract::verify_chain(&parts, owners, now).map_err(|e| denied(&e))
}

/// Whether every status entry of `chain` (the leaf's and each link's above it) is clear in
/// the newest list held for its URL, and that list fresh: a revoked link revokes every
/// contract below it.
fn chain_status(
    chain: &VerifiedChain,
    lists: &BTreeMap<String, VerifiedStatusList>,
    now: u64,
    max_age: u64,
) -> Result<(), ContractError> {
    for link in chain.contracts() {
        if let Some(entry) = link.status_entry() {
            match lists.get(&entry.list) {
                Some(list) => link.check_status(list, list.valid_from(), now, max_age)?,
                None => {
                    return Err(ContractError::StatusStale {
                        detail: format!("no status list from {} is held", entry.list),
                    })
                }
            }
        }
    }
    Ok(())
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
            lists: BTreeMap::new(),
            retired: BTreeMap::new(),
            status_max_age_secs,
            used_grants: BTreeMap::new(),
            pending: Vec::new(),
            status_grants: BTreeMap::new(),
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
    /// (`key_did` or `measurements`), validity, status. A status list is taken only when it
    /// is the newest seen for its URL ([`VerifiedStatusList::succeeds`]): an older one is
    /// refused (`contract.status_rollback`); a newer one replaces the held one for every
    /// contract naming that URL, and is kept even when it revokes the contract installed
    /// with it. Without a list, the one held for the contract's URL is used. Re-installing a
    /// contract keeps its counters, also after a revocation took it out.
    ///
    /// Issue 24: `compact` may be a delegation chain `root~…~leaf`. It is verified with
    /// [`cada_contract::verify_chain`] under the owner this enclave is locked to (a root of
    /// another owner: `delegation.owner`), its leaf must name this key (`contract.subject`),
    /// and every link's status entry is checked like a contract's own, against the lists
    /// given (`status_list` and `more_lists`) or held. The leaf is installed; a revocation
    /// of any link takes it out.
    pub(crate) fn install(
        &mut self,
        compact: &str,
        status_list: Option<&str>,
        more_lists: &[String],
        key_did: &str,
        measurements: &BTreeMap<String, String>,
        now: u64,
    ) -> Result<ContractSummary, EnclaveError> {
        let Some((owner, owners)) = &self.owner else {
            return Err(EnclaveError::ContractDenied {
                code: "contract.lock",
                message: "this enclave is not locked to an owner: install an owner lock first \
                          (cada-owner lock, then cada-parent owner lock)"
                    .into(),
            });
        };
        let chain = if compact.contains('~') {
            verify_own_chain(compact, owner, owners, now)?
        } else {
            VerifiedChain {
                root: Contract::verify(compact, owners, now).map_err(|e| denied(&e))?,
                links: Vec::new(),
            }
        };
        let c = chain.leaf().clone();
        c.check_subject(key_did, measurements)
            .map_err(|e| denied(&e))?;
        let owners = owners.clone();
        let texts = status_list
            .into_iter()
            .chain(more_lists.iter().map(String::as_str));
        for text in texts {
            let list = StatusList::verify(text, &owners, now).map_err(|e| denied(&e))?;
            let named = chain
                .contracts()
                .any(|l| l.status_entry().is_some_and(|e| e.list == list.id()));
            if named && list.issuer() == c.owner() {
                self.remember(list)?;
            } else {
                // Not a list of this contract (or chain): the leaf's own check names the
                // rule.
                let e = c
                    .check_status(&list, list.valid_from(), now, self.status_max_age_secs)
                    .err()
                    .unwrap_or_else(|| ContractError::StatusMismatch {
                        detail: format!(
                            "no contract of the chain names the status list {}",
                            list.id()
                        ),
                    });
                return Err(denied(&e));
            }
        }
        for (depth, link) in chain.contracts().enumerate() {
            let Some(entry) = link.status_entry() else {
                continue;
            };
            let Some(held) = self.lists.get(&entry.list) else {
                return Err(EnclaveError::ContractDenied {
                    code: "contract.status_stale",
                    message: format!(
                        "{} has a status entry in {}: install it with that status list \
                         (revocation fails closed)",
                        link_name(depth, chain.depth()),
                        entry.list
                    ),
                });
            };
            if let Err(e) =
                link.check_status(held, held.valid_from(), now, self.status_max_age_secs)
            {
                if matches!(e, ContractError::Revoked { .. }) {
                    // An authentic list of the owner revokes it (or a link above it): an
                    // installed copy goes, its counters stay.
                    self.retire(c.digest(), now);
                }
                return Err(denied_link(&e, depth, chain.depth()));
            }
        }
        self.refuse_duplicate_id(&c)?;
        let summary;
        if let Some(i) = self
            .contracts
            .iter_mut()
            .find(|i| i.contract.digest() == c.digest())
        {
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
            let used = self.retired.remove(c.digest()).map_or(0, |r| r.used);
            let i = Installed {
                contract: c,
                chain,
                text: compact.to_owned(),
                used,
                bucket_second: 0,
                bucket_used: 0,
            };
            summary = summarize(&i);
            self.contracts.insert(0, i);
        }
        Ok(summary)
    }

    /// Refuses `c` when a contract of the same issuer and credential `id` is installed (or
    /// was taken out by a revocation) under another digest (finding 4 of
    /// docs/reviews/delegation-3.md): counters are kept by digest, so another text of the
    /// same contract — e.g. the other spelling of an ECDSA signature, should a verifier
    /// ever accept one — must not count afresh. An issuer gives each credential its own
    /// `id`; the same `id` with other content is no contract to sign under either.
    fn refuse_duplicate_id(&self, c: &VerifiedContract) -> Result<(), EnclaveError> {
        let same = |issuer: &str, id: &str| issuer == c.issuer() && id == c.id();
        let installed = self.contracts.iter().find(|i| {
            same(i.contract.issuer(), i.contract.id()) && i.contract.digest() != c.digest()
        });
        let retired = self
            .retired
            .iter()
            .find(|(d, r)| same(&r.issuer, &r.id) && d.as_str() != c.digest());
        let held = installed
            .map(|i| i.contract.digest())
            .or(retired.map(|(d, _)| d.as_str()));
        match held {
            None => Ok(()),
            Some(held) => Err(EnclaveError::ContractDenied {
                code: "contract.duplicate_id",
                message: format!(
                    "a contract with id {} from {} is already installed with digest {held} \
                     (this text has digest {}): one contract, one text, so its counters \
                     cannot start afresh; install the contract as issued, or have the issuer \
                     issue a new one with a new id",
                    c.id().chars().take(128).collect::<String>(),
                    c.issuer().chars().take(200).collect::<String>(),
                    c.digest()
                ),
            }),
        }
    }

    /// Keeps `list` as the newest of its URL, unless an equal or newer one is held.
    fn remember(&mut self, list: VerifiedStatusList) -> Result<(), EnclaveError> {
        match self.lists.get(list.id()) {
            Some(held) => match list.succeeds(held).map_err(|e| denied(&e))? {
                Succession::Same => return Ok(()),
                Succession::Newer => {}
            },
            None if self.lists.len() >= MAX_STATUS_LISTS => {
                return Err(EnclaveError::ContractDenied {
                    code: "contract.too_many",
                    message: format!(
                        "status lists of {MAX_STATUS_LISTS} URLs are held for this key's life \
                         (so that none can be rolled back); this one, {}, is one too many",
                        list.id()
                    ),
                });
            }
            None => {}
        }
        self.lists.insert(list.id().to_owned(), list);
        Ok(())
    }

    /// Takes out the installed copy of contract `digest`, keeping its counters.
    fn retire(&mut self, digest: &str, now: u64) {
        let Some(pos) = self
            .contracts
            .iter()
            .position(|i| i.contract.digest() == digest)
        else {
            return;
        };
        let i = self.contracts.remove(pos);
        if self.retired.len() >= MAX_RETIRED {
            self.retired.retain(|_, r| r.valid_until > now);
        }
        if self.retired.len() >= MAX_RETIRED {
            // Still full of live contracts: the one that ends first goes.
            if let Some(first) = self
                .retired
                .iter()
                .min_by_key(|(_, r)| r.valid_until)
                .map(|(d, _)| d.clone())
            {
                self.retired.remove(&first);
            }
        }
        self.retired.insert(
            digest.to_owned(),
            Retired {
                used: i.used,
                valid_until: i.contract.valid_until(),
                issuer: i.contract.issuer().to_owned(),
                id: i.contract.id().to_owned(),
            },
        );
    }

    /// The contract that authorizes this request, counted against its budget and rate:
    /// the most recently installed live contract that permits it — and, for a proof to an
    /// STS token endpoint (`exchange`), also permits the token it will be exchanged for
    /// (resource and scopes), so that with several contracts the proof never names one the
    /// STS must refuse. `Ok(None)`: not locked. When none does, the refusal of the most
    /// recent contract whose audience matches (or, when no audience matches, of the most
    /// recent contract) is returned.
    ///
    /// Issue 23: a contract covers a `tools/call` also through an authorization detail
    /// whose locations cover the URL (a one-transaction grant has no audiences). A call a
    /// detail authorizes (the `tools` list does not grant the tool) under single-use
    /// details only takes one unused such detail, which is then used for the key's life
    /// (`grant.used` chained; none left: refused `grant.used`). A request to the step-up
    /// endpoints of a live contract's `stepUp` (no MCP calls, no exchange) is signed under
    /// that contract without any other grant, and counts against nothing.
    ///
    /// An exchange that asks for `authorization_details` (a token for exactly one
    /// transaction) is decided by the details instead of the audiences
    /// ([`Self::authorize_details_exchange`]).
    pub(crate) fn authorize(
        &mut self,
        method: &str,
        url: &HttpUrl,
        ctx: &BTreeMap<String, String>,
        calls: &[McpCall],
        exchange: Option<&TokenExchange>,
        now: u64,
    ) -> Result<Option<String>, EnclaveError> {
        if self.owner.is_none() {
            return Ok(None);
        }
        let exchange = exchange.map(check_exchange).transpose()?;
        if let Some(x) = exchange.as_ref().filter(|x| !x.details.is_empty()) {
            return self
                .authorize_details_exchange(method, ctx, calls, x, now)
                .map(Some);
        }
        if calls.is_empty() && exchange.is_none() {
            if let Some(d) = self.step_up_contract(method, url, now) {
                return Ok(Some(d));
            }
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
        let lists = &self.lists;
        let mut first_err: Option<ContractError> = None;
        // For a token-endpoint proof, the refusal of a contract that does not cover the
        // token's resource names the rule only when no contract covers it.
        let mut resource_err: Option<ContractError> = None;
        // Contracts for other audiences are passed over without building a refusal (the
        // audience test is a prefix comparison); only those whose audience matches are
        // asked for a full verdict.
        let used_grants = &self.used_grants;
        for i in &mut self.contracts {
            let by_detail = calls
                .iter()
                .filter_map(McpCall::tool)
                .any(|t| i.contract.details_for(url, t).next().is_some());
            if !by_detail && !i.contract.audiences().iter().any(|a| a.matches(url)) {
                continue;
            }
            let mut single_use: Vec<String> = Vec::new();
            let verdict = views
                .iter()
                .try_for_each(|v| i.contract.permits(v, now))
                .and_then(|()| match &exchange {
                    Some(x) => i.contract.permits_token(&x.resource, x.scopes, ctx, now),
                    None => Ok(()),
                })
                .and_then(|()| chain_status(&i.chain, lists, now, max_age))
                .and_then(|()| {
                    single_use = single_use_picks(&i.contract, url, calls, used_grants)?;
                    if !single_use.is_empty()
                        && used_grants.len() + single_use.len() > MAX_USED_GRANTS
                        && used_grants.values().all(|until| *until > now)
                    {
                        return Err(ContractError::not_permitted(
                            Denied::Budget,
                            format!(
                                "{MAX_USED_GRANTS} single-use grants are remembered as used \
                                 and all still live; wait for one to expire"
                            ),
                        ));
                    }
                    Ok(())
                })
                .and_then(|()| counters(i, now));
            match verdict {
                Ok(()) => {
                    i.used += 1;
                    let digest = i.contract.digest().to_owned();
                    if !single_use.is_empty() {
                        let until = i.contract.valid_until();
                        if self.used_grants.len() + single_use.len() > MAX_USED_GRANTS {
                            self.used_grants.retain(|_, u| *u > now);
                        }
                        for id in single_use {
                            self.pending.push(("grant.used", format!("{id} {digest}")));
                            self.used_grants.insert(id, until);
                        }
                    }
                    return Ok(Some(digest));
                }
                Err(e) => {
                    let covers_resource = exchange.as_ref().is_none_or(|x| {
                        i.contract
                            .audiences()
                            .iter()
                            .any(|a| a.matches(&x.resource))
                    });
                    if covers_resource {
                        first_err.get_or_insert(e);
                    } else {
                        resource_err.get_or_insert(e);
                    }
                }
            }
        }
        // None for this audience: the most recent contract's refusal names the rule.
        let err = match (first_err.or(resource_err), self.contracts.first()) {
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

    /// A token-endpoint proof for an exchange that asks for one-transaction grants (issue
    /// 23): signed under the most recently installed contract that holds, for each asked
    /// detail, one of its own that the asked one lies within
    /// ([`AuthorizationDetail::is_within`]: same tool, locations under its locations,
    /// arguments at least as tight, single use kept with the same identifier), with every
    /// asked location under the token's resource — otherwise `grant.not_within`. The
    /// contract is live (time, status), the proof carries its `requiredCtx` keys, scopes
    /// asked beside the details are granted by it ([`VerifiedContract::permits_token`]),
    /// and its budget and rate count the proof. The contract's audiences need not cover the
    /// token endpoint: a one-transaction grant has none, and the token it yields is at most
    /// the asked details, which the STS checks against the same contract again.
    ///
    /// Single use: the exchange does **not** take a single-use detail. The proof that uses
    /// it is the request proof the agent then signs under the token (its `tools/call` is
    /// covered by the same detail, so [`single_use_picks`] takes it there), and the gate
    /// consumes it fleet-wide under the same identifier. Taking it here would leave the
    /// enclave refusing the very call the token was obtained for. A detail this key already
    /// used is refused here (`grant.used`): its token could serve nothing.
    fn authorize_details_exchange(
        &mut self,
        method: &str,
        ctx: &BTreeMap<String, String>,
        calls: &[McpCall],
        x: &Exchange<'_>,
        now: u64,
    ) -> Result<String, EnclaveError> {
        if method != "POST" || !calls.is_empty() {
            return Err(EnclaveError::BadRequest(
                "exchange: a token-endpoint proof asking for authorization_details is a POST \
                 without MCP calls (RFC 8693)"
                    .into(),
            ));
        }
        let under = UrlPrefix::parse(x.resource.as_str())
            .map_err(|e| EnclaveError::BadRequest(format!("exchange: the resource: {e}")))?;
        // Refusals of a contract whose details cover the ask (time, status, used, budget…)
        // name the rule better than those of contracts that do not.
        let mut covering_err: Option<ContractError> = None;
        let mut other_err: Option<ContractError> = None;
        for idx in 0..self.contracts.len() {
            let verdict = {
                let c = &self.contracts[idx].contract;
                if c.authorization_details().is_empty() {
                    continue;
                }
                if let Err(e) = details_within(c, &under, &x.details) {
                    other_err.get_or_insert(e);
                    continue;
                }
                details_exchange_rules(c, x, ctx, &self.used_grants, now)
                    .and_then(|()| self.status_ok(&self.contracts[idx].chain, now))
            };
            match verdict.and_then(|()| counters(&mut self.contracts[idx], now)) {
                Ok(()) => {
                    let i = &mut self.contracts[idx];
                    i.used += 1;
                    return Ok(i.contract.digest().to_owned());
                }
                Err(e) => {
                    covering_err.get_or_insert(e);
                }
            }
        }
        let err = match covering_err.or(other_err) {
            Some(e) => e,
            None if self.contracts.is_empty() => {
                return Err(EnclaveError::ContractDenied {
                    code: "contract.none",
                    message: "no trust contract is installed: the owner's grant must be \
                              installed (cada-parent contract install) before the enclave \
                              signs"
                        .into(),
                })
            }
            None => ContractError::Grant {
                code: "grant.not_within",
                detail: "no installed contract carries authorization_details: a token for one \
                         transaction needs the owner's grant of it (cada-owner grant \
                         --authorization-details)"
                    .into(),
            },
        };
        Err(denied(&err))
    }

    /// The most recent live contract (time, status) whose `stepUp` names the approval
    /// service `(method, url)` is a step-up request to.
    fn step_up_contract(&self, method: &str, url: &HttpUrl, now: u64) -> Option<String> {
        self.contracts
            .iter()
            .find(|i| {
                i.contract.permits_step_up(method, url, now).is_ok()
                    && self.status_ok(&i.chain, now).is_ok()
            })
            .map(|i| i.contract.digest().to_owned())
    }

    /// Whether the status lists of the contract (and, for a delegated leaf, of every link
    /// above it) are held, fresh and clear.
    fn status_ok(&self, chain: &VerifiedChain, now: u64) -> Result<(), ContractError> {
        chain_status(chain, &self.lists, now, self.status_max_age_secs)
    }

    /// Authority events waiting to be chained (`grant.used`), oldest first.
    pub(crate) fn take_events(&mut self) -> Vec<(&'static str, String)> {
        std::mem::take(&mut self.pending)
    }

    /// Whether the single-use grant `identifier` was used by a proof of this key.
    #[cfg(test)]
    pub(crate) fn grant_used(&self, identifier: &str) -> bool {
        self.used_grants.contains_key(identifier)
    }

    /// The contract that lets the enclave use the sealed secret `name` for `method` on
    /// `url` (counted against its budget and rate like a proof): the most recently installed
    /// live contract whose `grants.secrets` permit it, whose status list (if it names one) is
    /// fresh and clear. A locked enclave is required: an unlocked one has no contract, so no
    /// secret is ever used (`secret.not_granted`). When none permits, the refusal of the most
    /// recent contract that names the secret (else of the most recent contract) is returned:
    /// `secret.*` codes for the grant itself, `contract.*` for time, status, budget, rate.
    pub(crate) fn authorize_secret(
        &mut self,
        name: &str,
        method: &str,
        url: &HttpUrl,
        now: u64,
    ) -> Result<String, EnclaveError> {
        if self.owner.is_none() {
            return Err(EnclaveError::secret(
                "secret.not_granted",
                "this enclave is not locked to an owner, so no trust contract grants a secret",
            ));
        }
        if self.contracts.is_empty() {
            return Err(EnclaveError::ContractDenied {
                code: "contract.none",
                message: "no trust contract is installed: the owner's contract granting the \
                          secret must be installed (cada-parent contract install)"
                    .into(),
            });
        }
        let max_age = self.status_max_age_secs;
        let lists = &self.lists;
        let mut named_err: Option<ContractError> = None;
        let mut other_err: Option<ContractError> = None;
        for i in &mut self.contracts {
            let names_it = i.contract.secrets().any(|g| g.name == name);
            let verdict = i
                .contract
                .permits_secret(name, method, url, now)
                .and_then(|()| chain_status(&i.chain, lists, now, max_age))
                .and_then(|()| counters(i, now));
            match verdict {
                Ok(()) => {
                    i.used += 1;
                    return Ok(i.contract.digest().to_owned());
                }
                Err(e) if names_it => {
                    named_err.get_or_insert(e);
                }
                Err(e) => {
                    other_err.get_or_insert(e);
                }
            }
        }
        let e = named_err.or(other_err).unwrap_or_else(|| {
            ContractError::not_permitted(Denied::Audience, "no contract matched")
        });
        Err(match e {
            ContractError::SecretDenied { code, .. } => EnclaveError::secret(code, e.to_string()),
            other => denied(&other),
        })
    }

    /// The contract that lets the enclave open data sealed for `label` at `now`, with its
    /// budget for the label: the most recently installed live contract whose `grants.opens`
    /// names it and whose status list (if it names one) is fresh and clear. The caller
    /// counts the opens (`crate::secrets::SecretStore::count_open`). An unlocked enclave
    /// has no contract, so it opens nothing.
    pub(crate) fn open_grant(&self, label: &str, now: u64) -> Result<(String, u64), EnclaveError> {
        if self.owner().is_none() {
            return Err(EnclaveError::secret(
                "secret.open_not_granted",
                "this enclave is not locked to an owner, so no trust contract grants an open",
            ));
        }
        let mut first: Option<ContractError> = None;
        for i in &self.contracts {
            let verdict = i
                .contract
                .permits_open(label, now)
                .and_then(|budget| self.status_ok(&i.chain, now).map(|()| budget));
            match verdict {
                Ok(budget) => return Ok((i.contract.digest().to_owned(), budget)),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        Err(match first {
            Some(ContractError::SecretDenied { code, detail }) => EnclaveError::secret(
                code,
                format!("the trust contracts do not grant it: {detail}"),
            ),
            Some(e) => denied(&e),
            None => EnclaveError::ContractDenied {
                code: "contract.none",
                message: "no trust contract is installed: install the owner's contract that \
                          grants the open (cada-parent contract install)"
                    .into(),
            },
        })
    }

    /// The installed contracts, most recent first.
    pub(crate) fn summaries(&self) -> Vec<ContractSummary> {
        self.contracts.iter().map(summarize).collect()
    }

    /// A proof's `cada.dch` under the installed contract `digest`: the digests of the links
    /// above it, root first (empty for an owner contract).
    pub(crate) fn chain_digests(&self, digest: &str) -> Vec<String> {
        self.contracts
            .iter()
            .find(|i| i.contract.digest() == digest)
            .map(|i| {
                i.chain
                    .ancestor_digests()
                    .into_iter()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Issue 24: the draft of a delegation for `req` by this enclave (`issuer`, its
    /// did:key) at `now`, checked and with its status index taken; the text of the parent's
    /// chain it extends. The parent is the installed contract `req.parent`, live (time, and
    /// every status entry of its chain); the grant is the parent's narrowed by `req.grant`
    /// ([`cada_contract::narrow_grant`]), valid from `now` (at most
    /// [`DELEGATION_SKEW_SECS`] earlier, never before the parent) until `req.valid_until`
    /// (0: the parent's end, at most [`DEFAULT_DELEGATION_SECS`] away); its status entry is
    /// `req.status_index` or the next index of the parent's `delegation.statusRange` this
    /// key has not given, and a delegatee that may delegate further gets a free block of
    /// the range when it names none. [`Draft::check`] then applies every rule a verifier
    /// of the chain applies — attenuation in every dimension (`delegation.wider.*`), depth
    /// (`delegation.depth`), status range (`delegation.status`) —, so nothing wider is ever
    /// signed. The index (and block) taken are never given again, even if signing fails.
    pub(crate) fn delegation_draft(
        &mut self,
        req: &DelegateRequest,
        issuer: &str,
        now: u64,
    ) -> Result<(Draft, String), EnclaveError> {
        if self.owner.is_none() {
            return Err(EnclaveError::ContractDenied {
                code: "contract.lock",
                message: "this enclave is not locked to an owner, so it holds no contract to \
                          delegate from"
                    .into(),
            });
        }
        if req.grant.len() > DelegateRequest::MAX_GRANT_LEN {
            return Err(EnclaveError::BadRequest(format!(
                "grant is limited to {} bytes",
                DelegateRequest::MAX_GRANT_LEN
            )));
        }
        if let Err(e) = cada_contract::PublicKey::from_did_key(&req.subject) {
            return Err(EnclaveError::ContractDenied {
                code: "delegation.subject",
                message: format!(
                    "a delegation is to one enclave key, named by its did:key (the `did` of the \
                     delegatee's GET /v1/identity): {e}"
                ),
            });
        }
        if let Some(t) = &req.task {
            cada_protocol::trace::check_task(t)
                .map_err(|e| EnclaveError::BadRequest(format!("{}: {e}", e.code())))?;
        }
        let Some(i) = self
            .contracts
            .iter()
            .find(|i| i.contract.digest() == req.parent)
        else {
            return Err(EnclaveError::ContractDenied {
                code: "contract.none",
                message: format!(
                    "no installed contract has digest {}: delegate from one `cada-parent \
                     contract list` shows",
                    req.parent.chars().take(64).collect::<String>()
                ),
            });
        };
        let parent = &i.contract;
        parent.check_time(now).map_err(|e| denied(&e))?;
        self.status_ok(&i.chain, now).map_err(|e| denied(&e))?;
        let Some(rules) = parent.delegation_rules().cloned() else {
            return Err(EnclaveError::ContractDenied {
                code: "delegation.not_allowed",
                message: "the parent contract does not let its subject delegate (it has no \
                          delegation member): the owner grants that with `cada-owner grant \
                          --max-depth`"
                    .into(),
            });
        };
        let valid_until = match req.valid_until {
            0 => parent
                .valid_until()
                .min(now.saturating_add(DEFAULT_DELEGATION_SECS)),
            t => t,
        };
        let valid_from = now
            .saturating_sub(DELEGATION_SKEW_SECS)
            .max(parent.valid_from());
        let taken = self
            .status_grants
            .get(&rules.status_list)
            .cloned()
            .unwrap_or_default();
        // A range the request gives its delegatee is not where its own index goes.
        let mut busy = taken.clone();
        busy.extend(requested_range(&req.grant));
        let index = match req.status_index {
            Some(n) => {
                if taken.iter().any(|[a, b]| *a <= n && n < *b) {
                    return Err(EnclaveError::ContractDenied {
                        code: "delegation.status",
                        message: format!(
                            "status index {n} of {} was given before by this enclave (to a \
                             delegation or a delegatee's range): an index is never reused; \
                             omit it to take the next free one",
                            rules.status_list
                        ),
                    });
                }
                n
            }
            None => free_block(&rules.status_range, &busy, 1, 1).ok_or_else(|| {
                EnclaveError::ContractDenied {
                    code: "delegation.status",
                    message: format!(
                        "every index of the parent's delegation range [{}, {}) of {} was \
                         given: the owner must grant a wider range",
                        rules.status_range[0], rules.status_range[1], rules.status_list
                    ),
                }
            })?[0],
        };
        let grant_json = fill_delegation_rules(&req.grant, &rules, &taken, index)?;
        let mut grant =
            cada_contract::narrow_grant(parent, &req.subject, &grant_json, valid_from, valid_until)
                .map_err(|e| denied(&e))?;
        grant.status = Some(StatusEntry::new(&rules.status_list, index).map_err(|e| denied(&e))?);
        let mut draft = Draft::under(&i.chain, grant, issuer, now).map_err(|e| denied(&e))?;
        draft.iat = now;
        draft.check(&i.chain).map_err(|e| denied(&e))?;
        if let Some(own) = &draft.grant.delegation {
            if taken
                .iter()
                .any(|[a, b]| own.status_range[0] < *b && *a < own.status_range[1])
            {
                return Err(EnclaveError::ContractDenied {
                    code: "delegation.status",
                    message: format!(
                        "the delegatee's statusRange [{}, {}) overlaps indexes this enclave \
                         gave before: pick a range outside them, or omit it",
                        own.status_range[0], own.status_range[1]
                    ),
                });
            }
        }
        let text = i.text.clone();
        let mut blocks = vec![[index, index.saturating_add(1)]];
        if let Some(own) = &draft.grant.delegation {
            blocks.push(own.status_range);
        }
        let held: usize = self.status_grants.values().map(Vec::len).sum();
        if held + blocks.len() > MAX_STATUS_GRANTS {
            return Err(EnclaveError::ContractDenied {
                code: "delegation.status",
                message: format!(
                    "this enclave remembers {MAX_STATUS_GRANTS} status indexes it gave (so \
                     that none is reused) and has no room for more: restart it with a new \
                     key"
                ),
            });
        }
        self.status_grants
            .entry(rules.status_list.clone())
            .or_default()
            .extend(blocks);
        Ok((draft, text))
    }

    /// Verifies a chain this enclave just signed as any verifier without evidence would
    /// ([`cada_contract::verify_chain`] under the locked owner), before it leaves the
    /// enclave.
    pub(crate) fn check_signed_chain(&self, text: &str, now: u64) -> Result<(), EnclaveError> {
        let Some((owner, owners)) = &self.owner else {
            return Err(EnclaveError::Crypto("delegation without owner"));
        };
        verify_own_chain(text, owner, owners, now).map(|_| ())
    }
}

/// The first block of `len` indexes of `range` (half-open) that overlaps none of `taken`,
/// or, when there is none, the widest free block of at least `min` indexes.
fn free_block(range: &[u64; 2], taken: &[[u64; 2]], len: u64, min: u64) -> Option<[u64; 2]> {
    let mut taken: Vec<[u64; 2]> = taken
        .iter()
        .filter(|[a, b]| *a < range[1] && range[0] < *b)
        .copied()
        .collect();
    taken.sort_unstable();
    let mut gaps = Vec::new();
    let mut at = range[0];
    for [a, b] in taken {
        if a > at {
            gaps.push([at, a]);
        }
        at = at.max(b);
    }
    if at < range[1] {
        gaps.push([at, range[1]]);
    }
    if let Some([a, _]) = gaps.iter().find(|[a, b]| b - a >= len) {
        return Some([*a, a + len]);
    }
    gaps.into_iter()
        .filter(|[a, b]| b - a >= min)
        .max_by_key(|[a, b]| b - a)
}

/// The `delegation.statusRange` a request's narrowing names, if it names one.
fn requested_range(grant: &str) -> Option<[u64; 2]> {
    let v: serde_json::Value = serde_json::from_str(grant).ok()?;
    let r = v.get("delegation")?.get("statusRange")?.as_array()?;
    match r.as_slice() {
        [a, b] => Some([a.as_u64()?, b.as_u64()?]),
        _ => None,
    }
}

/// The request's narrowing with its `delegation` member completed: `statusList` the
/// parent's, and, when it names no `statusRange`, a free block of the parent's range
/// (at most [`DEFAULT_SUB_RANGE`] indexes, none given before, not `index`).
fn fill_delegation_rules(
    grant: &str,
    parent: &cada_contract::DelegationRules,
    taken: &[[u64; 2]],
    index: u64,
) -> Result<String, EnclaveError> {
    let bad = |d: String| EnclaveError::ContractDenied {
        code: "delegation.malformed",
        message: format!("the delegation request: {d}"),
    };
    let mut v: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(grant) {
        Ok(serde_json::Value::Object(m)) => m,
        Ok(_) => return Err(bad("a JSON object is expected".into())),
        Err(e) => return Err(bad(format!("a JSON object is expected: {e}"))),
    };
    let Some(serde_json::Value::Object(d)) = v.get_mut("delegation") else {
        return Ok(grant.to_owned());
    };
    d.entry("statusList")
        .or_insert_with(|| parent.status_list.clone().into());
    if !d.contains_key("statusRange") {
        let mut busy = taken.to_vec();
        busy.push([index, index.saturating_add(1)]);
        let [a, b] =
            free_block(&parent.status_range, &busy, DEFAULT_SUB_RANGE, 1).ok_or_else(|| {
                EnclaveError::ContractDenied {
                    code: "delegation.status",
                    message: format!(
                        "no index of the parent's delegation range [{}, {}) is left for the \
                     delegatee's own delegations",
                        parent.status_range[0], parent.status_range[1]
                    ),
                }
            })?;
        d.insert("statusRange".into(), serde_json::json!([a, b]));
    }
    serde_json::to_string(&v).map_err(|e| bad(e.to_string()))
}

/// A token exchange, checked ([`check_exchange`]).
struct Exchange<'a> {
    /// The token's resource (`aud`).
    resource: HttpUrl,
    /// The scopes asked for.
    scopes: &'a [String],
    /// The one-transaction grants asked for (empty: a token of the contract's authority).
    details: Vec<AuthorizationDetail>,
}

/// The resource, scopes and details of a token-endpoint proof, checked: the resource an
/// absolute URL in normal form without query or fragment (what the STS takes as the
/// token's `aud`), the scopes RFC 6749 scope tokens, bounded; `authorization_details` at
/// most [`TokenExchange::MAX_AUTHORIZATION_DETAILS_LEN`] bytes, an array of 1 to
/// `MAX_DETAILS` details read by the contract's exact reader, each with its own
/// `identifier` (as the STS reads them).
fn check_exchange(x: &TokenExchange) -> Result<Exchange<'_>, EnclaveError> {
    let bad = |m: String| EnclaveError::BadRequest(format!("exchange: {m}"));
    if x.resource.contains(['?', '#']) {
        return Err(bad(format!(
            "the resource {:?} must carry no query or fragment (RFC 8707)",
            x.resource.chars().take(200).collect::<String>()
        )));
    }
    let resource =
        HttpUrl::parse_canonical(&x.resource).map_err(|e| bad(format!("the resource: {e}")))?;
    if x.scopes.len() > TokenExchange::MAX_SCOPES
        || x.scopes.iter().any(|s| {
            s.is_empty()
                || s.len() > TokenExchange::MAX_SCOPE_LEN
                || !s
                    .bytes()
                    .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
        })
    {
        return Err(bad(format!(
            "at most {} scopes of 1 to {} printable characters (no space, quote or backslash)",
            TokenExchange::MAX_SCOPES,
            TokenExchange::MAX_SCOPE_LEN
        )));
    }
    let details = match x.authorization_details.as_deref() {
        None => Vec::new(),
        Some(text) => {
            if text.len() > TokenExchange::MAX_AUTHORIZATION_DETAILS_LEN {
                return Err(bad(format!(
                    "authorization_details is {} bytes, more than {}",
                    text.len(),
                    TokenExchange::MAX_AUTHORIZATION_DETAILS_LEN
                )));
            }
            let details = AuthorizationDetail::parse_draft_list(text)
                .map_err(|e| bad(format!("authorization_details: {e}")))?;
            let mut seen = BTreeSet::new();
            for d in &details {
                if d.identifier.is_empty() {
                    return Err(bad(
                        "authorization_details: each detail asked for names its identifier".into(),
                    ));
                }
                if !seen.insert(d.identifier.as_str()) {
                    return Err(bad(
                        "authorization_details names one identifier twice".into()
                    ));
                }
            }
            details
        }
    };
    Ok(Exchange {
        resource,
        scopes: &x.scopes,
        details,
    })
}

/// Whether each asked detail lies within one of `c`'s and is located under the token's
/// resource `under` (`grant.not_within`, the STS's rule).
fn details_within(
    c: &VerifiedContract,
    under: &UrlPrefix,
    asked: &[AuthorizationDetail],
) -> Result<(), ContractError> {
    for d in asked {
        if !c.authorization_details().iter().any(|w| d.is_within(w)) {
            return Err(ContractError::Grant {
                code: "grant.not_within",
                detail: format!(
                    "the grant asked for, {:?} ({}), is within none of the contract's: ask \
                     for the contract's own details or narrower ones",
                    clip(&d.tool),
                    clip(&d.identifier)
                ),
            });
        }
        if let Some(l) = d
            .locations
            .iter()
            .find(|l| !UrlPrefix::parse(l).is_ok_and(|p| under.matches(p.url())))
        {
            return Err(ContractError::Grant {
                code: "grant.not_within",
                detail: format!(
                    "the grant asked for, {:?}, names the location {}, which is not under the \
                     token's resource {}",
                    clip(&d.tool),
                    clip(l),
                    under.as_str()
                ),
            });
        }
    }
    Ok(())
}

/// The other rules of a details exchange under `c` (whose details cover the ask): time,
/// scopes asked beside the details, required `ctx` keys, and no single-use detail this key
/// used already (`grant.used`).
fn details_exchange_rules(
    c: &VerifiedContract,
    x: &Exchange<'_>,
    ctx: &BTreeMap<String, String>,
    used: &BTreeMap<String, u64>,
    now: u64,
) -> Result<(), ContractError> {
    c.check_time(now)?;
    if !x.scopes.is_empty() {
        c.permits_token(&x.resource, x.scopes, ctx, now)?;
    }
    if let Some(k) = c.required_ctx().iter().find(|k| !ctx.contains_key(*k)) {
        return Err(ContractError::not_permitted(
            Denied::Ctx,
            format!("the proof must carry ctx key {k:?}"),
        ));
    }
    if let Some(d) = x
        .details
        .iter()
        .find(|d| d.single_use && used.contains_key(&d.identifier))
    {
        return Err(ContractError::Grant {
            code: "grant.used",
            detail: format!(
                "the single-use grant for {:?} ({}) was used already: a token for it would \
                 serve nothing; ask the owner again",
                clip(&d.tool),
                clip(&d.identifier)
            ),
        });
    }
    Ok(())
}

/// At most 200 characters of `s`, for messages.
fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

/// The single-use details a request takes: for each `tools/call` the `tools` list does not
/// grant, the covering details of `c` (tool and location); a reusable one among them takes
/// nothing; otherwise the first not yet used (by an earlier proof or an earlier call of
/// this request) is taken, and none left refuses `grant.used`.
fn single_use_picks(
    c: &VerifiedContract,
    url: &HttpUrl,
    calls: &[McpCall],
    used: &BTreeMap<String, u64>,
) -> Result<Vec<String>, ContractError> {
    let mut picks: Vec<String> = Vec::new();
    for tool in calls.iter().filter_map(McpCall::tool) {
        if c.grants_tool(tool) {
            continue;
        }
        let covering: Vec<_> = c.details_for(url, tool).collect();
        if covering.is_empty() || covering.iter().any(|d| !d.single_use) {
            continue;
        }
        let taken: BTreeSet<&str> = picks.iter().map(String::as_str).collect();
        match covering
            .iter()
            .find(|d| !used.contains_key(&d.identifier) && !taken.contains(d.identifier.as_str()))
        {
            Some(d) => picks.push(d.identifier.clone()),
            None => {
                return Err(ContractError::Grant {
                    code: "grant.used",
                    detail: format!(
                        "the single-use grant for {tool:?} ({}) was used already: ask the owner \
                         again",
                        covering
                            .iter()
                            .map(|d| d.identifier.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })
            }
        }
    }
    Ok(picks)
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
        chain: i
            .chain
            .ancestor_digests()
            .into_iter()
            .map(str::to_owned)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cada_contract::{Grant, OwnerAlg, OwnerKey, StatusEntry, Subject};

    const NOW: u64 = 1_750_000_000;
    const LIST: &str = "https://owner.example/status/1";

    struct Fixture {
        owner: OwnerKey,
        agent: String,
        authority: Authority,
    }

    fn locked() -> Fixture {
        locked_as(OwnerAlg::Ed25519)
    }

    fn locked_as(alg: OwnerAlg) -> Fixture {
        let owner = OwnerKey::generate(alg).unwrap();
        let agent = OwnerKey::generate(OwnerAlg::Ed25519)
            .unwrap()
            .did()
            .to_owned();
        let mut authority = Authority::new(None, DEFAULT_STATUS_MAX_AGE_SECS).unwrap();
        let lock = OwnerLock::issue(&owner, &agent, NOW, 300).unwrap();
        authority.lock(&lock, &agent, NOW).unwrap();
        Fixture {
            owner,
            agent,
            authority,
        }
    }

    impl Fixture {
        fn contract(&self, index: u64, budget: u64) -> String {
            let mut g = Grant::new(
                Subject::Key(self.agent.clone()),
                vec!["https://api.example.com/".into()],
                vec!["GET".into()],
                NOW - 60,
                NOW + 3600,
            );
            g.budget = Some(budget);
            g.status = Some(StatusEntry::new(LIST, index).unwrap());
            g.issue(&self.owner, NOW - 60).unwrap()
        }

        fn list(&self, revoked: &[u64], valid_from: u64) -> String {
            let mut l = StatusList::new(LIST, 0).unwrap();
            for i in revoked {
                l.revoke(*i).unwrap();
            }
            l.issue(&self.owner, valid_from, None).unwrap()
        }

        fn install(&mut self, c: &str, list: Option<&str>) -> Result<u64, &'static str> {
            self.authority
                .install(c, list, &[], &self.agent, &BTreeMap::new(), NOW)
                .map(|s| s.used)
                .map_err(|e| match e {
                    EnclaveError::ContractDenied { code, .. } => code,
                    other => panic!("{other}"),
                })
        }

        fn sign(&mut self) -> Result<String, &'static str> {
            let url = HttpUrl::parse_canonical("https://api.example.com/x").unwrap();
            self.authority
                .authorize("GET", &url, &BTreeMap::new(), &[], None, NOW)
                .map(Option::unwrap)
                .map_err(|e| match e {
                    EnclaveError::ContractDenied { code, .. } => code,
                    other => panic!("{other}"),
                })
        }
    }

    /// Finding 4 of docs/reviews/delegation-3.md: another text of a contract already
    /// installed (same issuer and id, another digest: here the ES256 owner's second
    /// signature over the same header and payload; the other ECDSA spelling is the same
    /// case) was installed afresh with `used: 0` and signed its budget again. Now refused
    /// `contract.duplicate_id`, also once a revocation took the first text out.
    #[test]
    fn another_text_of_an_installed_contract_does_not_count_afresh() {
        let mut f = locked_as(OwnerAlg::Es256);
        let c = f.contract(3, 2);
        let (input, _) = c.rsplit_once('.').unwrap();
        let sig = f.owner.sign_bytes(input.as_bytes()).unwrap();
        let c2 = format!("{input}.{}", cada_protocol::b64::encode(sig));
        assert_ne!(c, c2, "ECDSA signs with a fresh nonce");
        let list = f.list(&[], NOW - 20);
        assert_eq!(f.install(&c, Some(&list)), Ok(0));
        assert_eq!(f.sign(), Ok(digest_of(&c)));
        assert_eq!(f.sign(), Ok(digest_of(&c)));
        assert_eq!(f.sign(), Err("contract.not_permitted.budget"));
        assert_eq!(f.install(&c2, None), Err("contract.duplicate_id"));
        assert_eq!(f.sign(), Err("contract.not_permitted.budget"));
        // The same text again is the same contract, with its counters.
        assert_eq!(f.install(&c, None), Ok(2));
        // Taken out by a revocation, then cleared by a newer list: the other text still
        // cannot start the counters afresh; the first comes back with them.
        let revoking = f.list(&[3], NOW - 10);
        assert_eq!(f.install(&c, Some(&revoking)), Err("contract.revoked"));
        let cleared = f.list(&[], NOW - 5);
        assert_eq!(f.install(&c2, Some(&cleared)), Err("contract.duplicate_id"));
        assert_eq!(f.sign(), Err("contract.none"));
        assert_eq!(f.install(&c, None), Ok(2));
        assert_eq!(f.sign(), Err("contract.not_permitted.budget"));
    }

    /// Issue 21, item 9: after the revoking list, the host re-installs the contract with
    /// the older, unrevoked list. Before: installed afresh, signing again with its budget
    /// reset. Now: `contract.status_rollback`, and no proof is signed.
    #[test]
    fn a_revocation_once_seen_is_never_rolled_back_and_counters_survive() {
        let mut f = locked();
        let c = f.contract(3, 4);
        let unrevoked = f.list(&[], NOW - 20);
        let revoking = f.list(&[3], NOW - 10);
        assert_eq!(f.install(&c, Some(&unrevoked)), Ok(0));
        f.sign().unwrap();
        f.sign().unwrap();
        assert_eq!(f.install(&c, Some(&revoking)), Err("contract.revoked"));
        assert_eq!(f.sign(), Err("contract.none"));
        // The replay of the older list, with and without the contract.
        assert_eq!(
            f.install(&c, Some(&unrevoked)),
            Err("contract.status_rollback")
        );
        assert_eq!(f.sign(), Err("contract.none"));
        // Without a list, the newest held one decides.
        assert_eq!(f.install(&c, None), Err("contract.revoked"));
        // A second contract on the same list is checked against the newest list too, and
        // cannot bring the older one back either.
        let c2 = f.contract(4, 100);
        assert_eq!(
            f.install(&c2, Some(&unrevoked)),
            Err("contract.status_rollback")
        );
        assert_eq!(f.install(&c2, None), Ok(0));
        let d2 = f.sign().unwrap();
        assert_eq!(d2, digest_of(&c2));
        // Should the owner publish a newer list without the bit, the contract comes back
        // with the two proofs it had already made counted: 2 more of its budget of 4.
        let cleared = f.list(&[], NOW - 5);
        assert_eq!(f.install(&c, Some(&cleared)), Ok(2));
        assert_eq!(f.sign().unwrap(), digest_of(&c));
        assert_eq!(f.sign().unwrap(), digest_of(&c));
        // Spent: the next proof falls to the other contract.
        assert_eq!(f.sign().unwrap(), d2);
        // Re-installing a live contract keeps its counters (and the list held).
        assert_eq!(f.install(&c, None), Ok(4));
        assert_eq!(f.install(&c, Some(&cleared)), Ok(4));
    }

    /// A list the owner issued in the same second as the held one may add revocations, never
    /// clear one.
    #[test]
    fn a_same_second_list_may_add_revocations_only() {
        let mut f = locked();
        let c = f.contract(3, 100);
        let first = f.list(&[9], NOW - 10);
        assert_eq!(f.install(&c, Some(&first)), Ok(0));
        let clears = f.list(&[], NOW - 10);
        assert_eq!(
            f.install(&c, Some(&clears)),
            Err("contract.status_rollback")
        );
        let adds = f.list(&[9, 3], NOW - 10);
        assert_eq!(f.install(&c, Some(&adds)), Err("contract.revoked"));
        assert_eq!(f.sign(), Err("contract.none"));
    }

    fn digest_of(c: &str) -> String {
        cada_contract::digest_of(c)
    }

    const MCP: &str = "https://mcp.example.com/mcp";

    fn detail(tool: &str, id: &str, single_use: bool) -> cada_contract::AuthorizationDetail {
        let mut d = cada_contract::AuthorizationDetail::parse_draft(
            &serde_json::json!({
                "type": "mcp_tool_call",
                "locations": [MCP],
                "tool": tool,
                "arguments": {"amount": {"max": 500}},
                "single_use": single_use
            })
            .to_string(),
        )
        .unwrap();
        d.identifier = id.into();
        d
    }

    impl Fixture {
        /// A one-transaction grant: only `details`, `minutes` long from NOW - 60.
        fn grant_contract(&self, details: Vec<cada_contract::AuthorizationDetail>) -> String {
            let mut g = Grant::new(
                Subject::Key(self.agent.clone()),
                vec![],
                vec!["POST".into()],
                NOW - 60,
                NOW + 240,
            );
            g.authorization_details = details;
            g.issue(&self.owner, NOW - 60).unwrap()
        }

        /// The agent's standing contract: the MCP server, tool `search` only.
        fn standing(&self, step_up: Option<&str>) -> String {
            let mut g = Grant::new(
                Subject::Key(self.agent.clone()),
                vec!["https://mcp.example.com/".into()],
                vec!["POST".into()],
                NOW - 60,
                NOW + 3600,
            );
            g.tools = vec!["search".into()];
            g.step_up = step_up.map(Into::into);
            g.issue(&self.owner, NOW - 60).unwrap()
        }

        fn call(&mut self, tools: &[&str], now: u64) -> Result<String, &'static str> {
            let calls: Vec<McpCall> = tools
                .iter()
                .map(|t| McpCall {
                    method: "tools/call".into(),
                    target: Some((*t).into()),
                })
                .collect();
            self.request("POST", MCP, &calls, now)
        }

        fn request(
            &mut self,
            method: &str,
            url: &str,
            calls: &[McpCall],
            now: u64,
        ) -> Result<String, &'static str> {
            let url = HttpUrl::parse_canonical(url).unwrap();
            self.authority
                .authorize(method, &url, &BTreeMap::new(), calls, None, now)
                .map(Option::unwrap)
                .map_err(|e| match e {
                    EnclaveError::ContractDenied { code, .. } => code,
                    other => panic!("{other}"),
                })
        }
    }

    /// Issue 23: a contract whose only authority is a detail signs a `tools/call` of its
    /// tool at its location — once, when single use — and nothing else.
    #[test]
    fn a_single_use_grant_signs_one_proof_then_is_used() {
        let mut f = locked();
        let standing = f.standing(None);
        assert_eq!(f.install(&standing, None), Ok(0));
        assert_eq!(
            f.call(&["transfer"], NOW),
            Err("contract.not_permitted.tool")
        );
        let grant = f.grant_contract(vec![detail("transfer", "urn:uuid:g1", true)]);
        assert_eq!(f.install(&grant, None), Ok(0));
        assert!(f.authority.take_events().is_empty());
        assert_eq!(f.call(&["transfer"], NOW), Ok(digest_of(&grant)));
        assert!(f.authority.grant_used("urn:uuid:g1"));
        assert_eq!(
            f.authority.take_events(),
            vec![("grant.used", format!("urn:uuid:g1 {}", digest_of(&grant)))]
        );
        // Used: the grant contract names the rule (it is the most recent that covers it).
        assert_eq!(f.call(&["transfer"], NOW), Err("grant.used"));
        assert!(f.authority.take_events().is_empty());
        // Re-installing the same grant, or another contract carrying the same identifier,
        // does not give the use back.
        assert_eq!(f.install(&grant, None), Ok(1));
        assert_eq!(f.call(&["transfer"], NOW), Err("grant.used"));
        let again = f.grant_contract(vec![detail("transfer", "urn:uuid:g1", true)]);
        assert_eq!(f.install(&again, None), Ok(0));
        assert_eq!(f.call(&["transfer"], NOW), Err("grant.used"));
        // The standing contract still signs what it grants.
        assert_eq!(f.call(&["search"], NOW), Ok(digest_of(&standing)));
    }

    #[test]
    fn a_grant_covers_its_tool_location_and_minutes_only() {
        let mut f = locked();
        let grant = f.grant_contract(vec![detail("transfer", "urn:uuid:g2", false)]);
        assert_eq!(f.install(&grant, None), Ok(0));
        // Reusable: as often as its minutes last, counted on the contract.
        assert_eq!(f.call(&["transfer"], NOW), Ok(digest_of(&grant)));
        assert_eq!(f.call(&["transfer"], NOW), Ok(digest_of(&grant)));
        assert!(f.authority.take_events().is_empty());
        assert_eq!(f.call(&["transfer"], NOW + 240), Err("contract.expired"));
        assert_eq!(f.call(&["refund"], NOW), Err("grant.tool"));
        assert_eq!(f.call(&[], NOW), Err("grant.tool"));
        let c = [McpCall {
            method: "tools/call".into(),
            target: Some("transfer".into()),
        }];
        // Another path, another server, another method.
        assert_eq!(
            f.request("POST", "https://mcp.example.com/mcpx", &c, NOW),
            Err("grant.tool")
        );
        assert_eq!(
            f.request("POST", "https://evil.example.com/mcp", &c, NOW),
            Err("grant.tool")
        );
        assert_eq!(
            f.request("GET", MCP, &c, NOW),
            Err("contract.not_permitted.method")
        );
    }

    #[test]
    fn each_single_use_detail_signs_once_and_a_batch_cannot_double_spend() {
        let mut f = locked();
        let grant = f.grant_contract(vec![
            detail("transfer", "urn:uuid:a", true),
            detail("transfer", "urn:uuid:b", true),
        ]);
        assert_eq!(f.install(&grant, None), Ok(0));
        // Three calls in one body, two details: refused whole, nothing taken.
        assert_eq!(
            f.call(&["transfer", "transfer", "transfer"], NOW),
            Err("grant.used")
        );
        assert!(!f.authority.grant_used("urn:uuid:a"));
        assert!(f.authority.take_events().is_empty());
        // Two calls in one body take both.
        assert_eq!(
            f.call(&["transfer", "transfer"], NOW),
            Ok(digest_of(&grant))
        );
        assert_eq!(f.authority.take_events().len(), 2);
        assert_eq!(f.call(&["transfer"], NOW), Err("grant.used"));
        // A reusable detail beside a single-use one takes nothing.
        let mixed = f.grant_contract(vec![
            detail("transfer", "urn:uuid:c", true),
            detail("transfer", "urn:uuid:d", false),
        ]);
        assert_eq!(f.install(&mixed, None), Ok(0));
        for _ in 0..3 {
            assert_eq!(f.call(&["transfer"], NOW), Ok(digest_of(&mixed)));
        }
        assert!(!f.authority.grant_used("urn:uuid:c"));
    }

    #[test]
    fn used_grants_are_remembered_up_to_the_cap_then_refused_not_forgotten() {
        let mut f = locked();
        for i in 0..MAX_USED_GRANTS {
            f.authority
                .used_grants
                .insert(format!("urn:x:{i}"), NOW + 3600);
        }
        let grant = f.grant_contract(vec![detail("transfer", "urn:uuid:late", true)]);
        assert_eq!(f.install(&grant, None), Ok(0));
        assert_eq!(
            f.call(&["transfer"], NOW),
            Err("contract.not_permitted.budget")
        );
        // Once some have expired they make room.
        f.authority.used_grants.insert("urn:x:0".into(), NOW - 1);
        assert_eq!(f.call(&["transfer"], NOW), Ok(digest_of(&grant)));
        assert!(!f.authority.grant_used("urn:x:0"));
        assert!(f.authority.grant_used("urn:uuid:late"));
    }

    /// Issue 23: the enclave signs proofs for the two step-up endpoints of a live
    /// contract's `stepUp`, without any other grant, and nothing else there.
    #[test]
    fn step_up_requests_are_signed_under_the_contract_naming_the_service() {
        let mut f = locked();
        let su = "http://localhost:8470";
        assert_eq!(
            f.request("POST", "http://localhost:8470/v1/step-up", &[], NOW),
            Err("contract.none")
        );
        let c = f.standing(Some(su));
        assert_eq!(f.install(&c, None), Ok(0));
        assert_eq!(
            f.request("POST", "http://localhost:8470/v1/step-up", &[], NOW),
            Ok(digest_of(&c))
        );
        assert_eq!(
            f.request("GET", "http://localhost:8470/v1/step-up/Zm9vYmFy", &[], NOW),
            Ok(digest_of(&c))
        );
        // Nothing else on that origin, no MCP call, not after the contract's time.
        for (m, u) in [
            ("POST", "http://localhost:8470/v1/step-up/x"),
            ("GET", "http://localhost:8470/v1/step-up"),
            ("POST", "http://localhost:8470/r/x"),
            ("POST", "http://localhost:8471/v1/step-up"),
        ] {
            assert_eq!(
                f.request(m, u, &[], NOW),
                Err("contract.not_permitted.audience"),
                "{m} {u}"
            );
        }
        let call = [McpCall {
            method: "tools/call".into(),
            target: Some("search".into()),
        }];
        assert_eq!(
            f.request("POST", "http://localhost:8470/v1/step-up", &call, NOW),
            Err("contract.not_permitted.audience")
        );
        assert_eq!(
            f.request("POST", "http://localhost:8470/v1/step-up", &[], NOW + 3600),
            Err("contract.expired")
        );
        // Step-up proofs count against nothing.
        assert_eq!(f.install(&c, None), Ok(0));
    }

    #[test]
    fn a_revoked_contract_names_no_step_up_service() {
        let mut f = locked();
        let mut g = Grant::new(
            Subject::Key(f.agent.clone()),
            vec!["https://api.example.com/".into()],
            vec!["GET".into()],
            NOW - 60,
            NOW + 3600,
        );
        g.step_up = Some("http://localhost:8470".into());
        g.status = Some(StatusEntry::new(LIST, 7).unwrap());
        let c = g.issue(&f.owner, NOW - 60).unwrap();
        let clear = f.list(&[], NOW - 20);
        assert_eq!(f.install(&c, Some(&clear)), Ok(0));
        assert_eq!(
            f.request("POST", "http://localhost:8470/v1/step-up", &[], NOW),
            Ok(digest_of(&c))
        );
        let revoking = f.list(&[7], NOW - 10);
        assert_eq!(f.install(&c, Some(&revoking)), Err("contract.revoked"));
        assert_eq!(
            f.request("POST", "http://localhost:8470/v1/step-up", &[], NOW),
            Err("contract.none")
        );
    }

    /// Issue 21 (left open before): with several contracts, the proof for the STS token
    /// endpoint was signed under the most recent one covering the STS, whatever resource
    /// the token was for, and the STS refused the exchange. With `exchange`, the contract
    /// must also grant the token.
    #[test]
    fn a_token_endpoint_proof_is_signed_under_a_contract_that_grants_the_token() {
        let mut f = locked();
        let sts = "https://sts.example.com";
        let contract = |f: &Fixture, api: &str, scopes: &[&str]| {
            let mut g = Grant::new(
                Subject::Key(f.agent.clone()),
                vec![sts.into(), api.into()],
                vec!["POST".into()],
                NOW - 60,
                NOW + 3600,
            );
            g.scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
            g.issue(&f.owner, NOW - 60).unwrap()
        };
        let a = contract(&f, "https://a.example.com/", &["read"]);
        let b = contract(&f, "https://b.example.com/", &["write"]);
        assert_eq!(f.install(&a, None), Ok(0));
        assert_eq!(f.install(&b, None), Ok(0));
        let token_url = HttpUrl::parse_canonical(&format!("{sts}/token")).unwrap();
        let mut sign = |resource: &str, scopes: &[&str]| {
            let x = TokenExchange {
                resource: resource.into(),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                authorization_details: None,
            };
            f.authority
                .authorize("POST", &token_url, &BTreeMap::new(), &[], Some(&x), NOW)
                .map(Option::unwrap)
                .map_err(|e| match e {
                    EnclaveError::ContractDenied { code, .. } => code,
                    EnclaveError::BadRequest(_) => "bad_request",
                    other => panic!("{other}"),
                })
        };
        // b is the most recent, but the token is for a's API: a signs.
        assert_eq!(sign("https://a.example.com/", &[]), Ok(digest_of(&a)));
        assert_eq!(
            sign("https://a.example.com/v1", &["read"]),
            Ok(digest_of(&a))
        );
        assert_eq!(
            sign("https://b.example.com/", &["write"]),
            Ok(digest_of(&b))
        );
        // A scope only the other contract grants, a resource neither covers: refused.
        assert_eq!(
            sign("https://a.example.com/", &["write"]),
            Err("contract.not_permitted.scope")
        );
        assert_eq!(
            sign("https://c.example.com/", &[]),
            Err("contract.not_permitted.audience")
        );
        // The resource as the STS takes it: normal form, no query; scopes bounded.
        for (resource, scopes) in [
            ("https://a.example.com/?q=1", vec![]),
            ("https://A.example.com/", vec![]),
            ("https://a.example.com/", vec!["re ad"]),
            ("https://a.example.com/", vec![""]),
        ] {
            assert_eq!(
                sign(resource, &scopes),
                Err("bad_request"),
                "{resource} {scopes:?}"
            );
        }
        // Without `exchange` (an older daemon), the most recent contract covering the
        // token endpoint signs, as before.
        let url = token_url.clone();
        let d = f
            .authority
            .authorize("POST", &url, &BTreeMap::new(), &[], None, NOW)
            .unwrap();
        assert_eq!(d, Some(digest_of(&b)));
    }

    /// The exchange of `asked` (details JSON text) for a token for `resource` at `now`.
    fn exchange_details(
        f: &mut Fixture,
        resource: &str,
        scopes: &[&str],
        asked: &str,
        calls: &[McpCall],
        now: u64,
    ) -> Result<String, &'static str> {
        let token_url = HttpUrl::parse_canonical("https://sts.example.com/token").unwrap();
        let x = TokenExchange {
            resource: resource.into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            authorization_details: Some(asked.into()),
        };
        f.authority
            .authorize("POST", &token_url, &BTreeMap::new(), calls, Some(&x), now)
            .map(Option::unwrap)
            .map_err(|e| match e {
                EnclaveError::ContractDenied { code, .. } => code,
                EnclaveError::BadRequest(_) => "bad_request",
                other => panic!("{other}"),
            })
    }

    /// `detail(tool, id, single_use)` as asked: `max` instead of 500, at `location`.
    fn asked(tool: &str, id: &str, single_use: bool, max: u64, location: &str) -> String {
        let mut d = detail(tool, id, single_use);
        d.locations = vec![location.into()];
        format!(
            "[{}]",
            d.to_json_text()
                .replace("\"max\":500", &format!("\"max\":{max}"))
        )
    }

    /// Issue 23, the gap left open: a bare one-transaction grant (no audiences, so not the
    /// STS's either) could not sign the proof of the token exchange that asks for exactly
    /// its transaction. Now the details decide: within one of the grant's, under the
    /// resource; and the exchange does not use the single-use detail, the call does.
    #[test]
    fn a_bare_grant_signs_the_exchange_for_its_own_transaction_and_nothing_wider() {
        let mut f = locked();
        let grant = f.grant_contract(vec![detail("transfer", "urn:uuid:x1", true)]);
        assert_eq!(f.install(&grant, None), Ok(0));
        let resource = "https://mcp.example.com/";
        let narrower = asked("transfer", "urn:uuid:x1", true, 100, MCP);
        let ok = |f: &mut Fixture, a: &str| exchange_details(f, resource, &[], a, &[], NOW);
        assert_eq!(ok(&mut f, &narrower), Ok(digest_of(&grant)));
        // The grant's own detail, and the resource as the location, are within too.
        let own = format!(
            "[{}]",
            detail("transfer", "urn:uuid:x1", true).to_json_text()
        );
        assert_eq!(ok(&mut f, &own), Ok(digest_of(&grant)));
        assert_eq!(
            ok(&mut f, &asked("transfer", "urn:uuid:x1", true, 500, MCP)),
            Ok(digest_of(&grant))
        );
        // Not the use: nothing taken, nothing chained; the exchange counts as a proof.
        assert!(!f.authority.grant_used("urn:uuid:x1"));
        assert!(f.authority.take_events().is_empty());
        assert_eq!(f.authority.summaries()[0].used, 3);
        // Wider than the grant: a higher bound, another tool, a location outside it, the
        // single use dropped or under another identifier, an argument it does not list.
        for wider in [
            asked("transfer", "urn:uuid:x1", true, 1000, MCP),
            asked("refund", "urn:uuid:x1", true, 100, MCP),
            asked(
                "transfer",
                "urn:uuid:x1",
                true,
                100,
                "https://mcp.example.com/",
            ),
            asked(
                "transfer",
                "urn:uuid:x1",
                true,
                100,
                "https://evil.example.com/mcp",
            ),
            asked("transfer", "urn:uuid:x1", false, 100, MCP),
            asked("transfer", "urn:uuid:other", true, 100, MCP),
            narrower.replace(
                "\"additional_arguments\":false",
                "\"additional_arguments\":true",
            ),
            narrower.replace("\"arguments\":{", "\"arguments\":{\"cc\":{\"eq\":\"eve\"},"),
        ] {
            assert_eq!(ok(&mut f, &wider), Err("grant.not_within"), "{wider}");
        }
        // Within the grant but not under the token's resource.
        assert_eq!(
            exchange_details(
                &mut f,
                "https://mcp.example.com/other",
                &[],
                &narrower,
                &[],
                NOW
            ),
            Err("grant.not_within")
        );
        // Scopes beside the details are the contract's audiences' to grant: a bare grant
        // has none.
        assert_eq!(
            exchange_details(&mut f, resource, &["read"], &narrower, &[], NOW),
            Err("contract.not_permitted.audience")
        );
        // Past its minutes.
        assert_eq!(
            exchange_details(&mut f, resource, &[], &narrower, &[], NOW + 240),
            Err("contract.expired")
        );
        // The call the token was for is signed once (the single use taken there), and then
        // neither a second call nor a token for it.
        assert_eq!(f.call(&["transfer"], NOW), Ok(digest_of(&grant)));
        assert!(f.authority.grant_used("urn:uuid:x1"));
        assert_eq!(ok(&mut f, &narrower), Err("grant.used"));
        assert_eq!(f.call(&["transfer"], NOW), Err("grant.used"));
    }

    /// The ask is read as the STS reads it, and the proof is a bare POST.
    #[test]
    fn a_details_exchange_is_read_strictly() {
        let mut f = locked();
        let grant = f.grant_contract(vec![detail("transfer", "urn:uuid:x2", false)]);
        assert_eq!(f.install(&grant, None), Ok(0));
        let resource = "https://mcp.example.com/";
        let good = asked("transfer", "urn:uuid:x2", false, 100, MCP);
        let one = good
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let huge = format!(
            "[{}]",
            one.replace(
                "transfer",
                &"t".repeat(TokenExchange::MAX_AUTHORIZATION_DETAILS_LEN)
            )
        );
        for bad in [
            "not json".to_owned(),
            "[]".to_owned(),
            one.clone(),
            format!("[{one},{one}]"),
            good.replace(",\"identifier\":\"urn:uuid:x2\"", ""),
            good.replace("mcp_tool_call", "payment"),
            good.replace("\"max\"", "\"maximum\""),
            huge,
        ] {
            assert_eq!(
                exchange_details(&mut f, resource, &[], &bad, &[], NOW),
                Err("bad_request"),
                "{bad}"
            );
        }
        let call = [McpCall {
            method: "tools/call".into(),
            target: Some("transfer".into()),
        }];
        assert_eq!(
            exchange_details(&mut f, resource, &[], &good, &call, NOW),
            Err("bad_request")
        );
        let token_url = HttpUrl::parse_canonical("https://sts.example.com/token").unwrap();
        let x = TokenExchange {
            resource: resource.into(),
            scopes: vec![],
            authorization_details: Some(good.clone()),
        };
        assert!(matches!(
            f.authority
                .authorize("GET", &token_url, &BTreeMap::new(), &[], Some(&x), NOW),
            Err(EnclaveError::BadRequest(_))
        ));
        assert_eq!(
            exchange_details(&mut f, resource, &[], &good, &[], NOW),
            Ok(digest_of(&grant))
        );
        // Under a reusable detail the identifier is kept too: a single-use (or reusable)
        // ask under another one would spend another grant of the owner at the gate
        // (review grants-1, finding 4).
        for foreign in [
            asked("transfer", "urn:uuid:victim", true, 100, MCP),
            asked("transfer", "urn:uuid:victim", false, 100, MCP),
        ] {
            assert_eq!(
                exchange_details(&mut f, resource, &[], &foreign, &[], NOW),
                Err("grant.not_within"),
                "{foreign}"
            );
        }
        assert_eq!(
            exchange_details(
                &mut f,
                resource,
                &[],
                &asked("transfer", "urn:uuid:x2", true, 100, MCP),
                &[],
                NOW
            ),
            Ok(digest_of(&grant))
        );
    }

    /// Which contract signs, and which refusal names the rule, with several installed.
    #[test]
    fn a_details_exchange_picks_the_contract_whose_details_cover_it() {
        let mut f = locked();
        let resource = "https://mcp.example.com/";
        // Only a standing contract (no details): nothing to exchange a transaction under.
        let standing = f.standing(None);
        assert_eq!(f.install(&standing, None), Ok(0));
        let ask_a = asked("transfer", "urn:uuid:a", true, 100, MCP);
        assert_eq!(
            exchange_details(&mut f, resource, &[], &ask_a, &[], NOW),
            Err("grant.not_within")
        );
        let a = f.grant_contract(vec![detail("transfer", "urn:uuid:a", true)]);
        let b = f.grant_contract(vec![detail("transfer", "urn:uuid:b", true)]);
        assert_eq!(f.install(&a, None), Ok(0));
        assert_eq!(f.install(&b, None), Ok(0));
        // b is the most recent, but only a holds the asked detail.
        assert_eq!(
            exchange_details(&mut f, resource, &[], &ask_a, &[], NOW),
            Ok(digest_of(&a))
        );
        // Used: the refusal of the contract that covers the ask names the rule, not the
        // more recent one that does not.
        f.authority
            .used_grants
            .insert("urn:uuid:a".into(), NOW + 240);
        assert_eq!(
            exchange_details(&mut f, resource, &[], &ask_a, &[], NOW),
            Err("grant.used")
        );
        // Not locked: boot flags alone, as for any proof.
        let mut unlocked = Authority::new(None, DEFAULT_STATUS_MAX_AGE_SECS).unwrap();
        let token_url = HttpUrl::parse_canonical("https://sts.example.com/token").unwrap();
        let x = TokenExchange {
            resource: resource.into(),
            scopes: vec![],
            authorization_details: Some(ask_a),
        };
        assert_eq!(
            unlocked
                .authorize("POST", &token_url, &BTreeMap::new(), &[], Some(&x), NOW)
                .unwrap(),
            None
        );
    }
}
