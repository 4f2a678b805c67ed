//! Delegated contracts: an enclave working under a contract C signs, for another enclave's
//! `did:key`, a contract D that grants a subset of C in every dimension, names C by digest
//! and carries the delegator's evidence. `docs/delegation.md` describes the format.
//!
//! * [`check_within`] — the attenuation rule (`delegation.wider.<dimension>`), one function
//!   for the enclave (before it signs, and when it installs a chain) and for verifiers.
//! * [`split_chain`] / [`verify_chain`] — a chain `C0~D1~…~Dn` (root first): the root under
//!   the trusted owners, each link under the `did:key` of its issuer, linked to its parent
//!   by digest, within it, deep enough, with its status entry in its parent's range, valid
//!   at `now`. The delegators' evidence and the status-list bits are the caller's.
//! * [`Draft`] — what an enclave signs: [`Draft::payload_bytes`] with its evidence, then
//!   [`Draft::assemble`] with its own signature (this crate never holds an enclave key).
use aws_lc_rs::digest::{digest, SHA256};
use cada_protocol::b64;
use cada_protocol::jwk::SigAlg;
use serde::{Deserialize, Serialize};

use crate::contract::{check, Grant, Subject, VerifiedContract, CONTRACT_SCHEMA};
use crate::error::clip;
use crate::jose;
use crate::status::{StatusEntry, MAX_BITSTRING_BYTES};
use crate::time::UnixSeconds;
use crate::{digest_of, AuditLevel, Contract, ContractError, PublicKey, TrustedOwners};

/// Most delegations after the root in one chain.
pub const MAX_CHAIN_LINKS: usize = 8;
/// Largest compact delegated contract accepted.
pub const MAX_DELEGATION_LEN: usize = 48 * 1024;
/// Largest chain (`C0~D1~…`, separators included) accepted.
pub const MAX_CHAIN_LEN: usize = 256 * 1024;
/// Largest `maxDepth` (levels below one contract).
pub const MAX_DEPTH: u8 = 8;
/// Widest `statusRange` (half-open): 2^20 entries.
pub const MAX_STATUS_RANGE: u64 = 1 << 20;
/// Largest delegator evidence (the envelope's CBOR) in a delegated contract. It travels
/// base64url inside a base64url payload, so 24 KiB of evidence take about 43 KiB of the
/// [`MAX_DELEGATION_LEN`].
pub const MAX_EVIDENCE_LEN: usize = 24 * 1024;
/// The credential type every delegated contract carries beside `VerifiableCredential` and
/// `CadaTrustContract`.
pub const DELEGATION_TYPE: &str = "CadaDelegation";
/// The domain separator of [`evidence_nonce`].
pub const EVIDENCE_NONCE_DOMAIN: &[u8] = b"cada-delegation-v1\0";

/// Every stable code of [`ContractError::Delegation`].
pub const CODES: &[&str] = &[
    "delegation.wider.audience",
    "delegation.wider.method",
    "delegation.wider.scope",
    "delegation.wider.tool",
    "delegation.wider.resource",
    "delegation.wider.prompt",
    "delegation.wider.secret",
    "delegation.wider.open",
    "delegation.wider.ctx",
    "delegation.wider.time",
    "delegation.wider.budget",
    "delegation.wider.rate",
    "delegation.wider.limits",
    "delegation.wider.audit",
    "delegation.wider.details",
    "delegation.wider.step_up",
    "delegation.not_allowed",
    "delegation.depth",
    "delegation.link",
    "delegation.issuer",
    "delegation.signature",
    "delegation.subject",
    "delegation.cycle",
    "delegation.status",
    "delegation.owner",
    "delegation.too_large",
    "delegation.malformed",
    "delegation.evidence",
    "delegation.delegator_image",
    "delegation.stale",
    "delegation.budget",
    "delegation.rate",
];

fn err(code: &'static str, detail: impl Into<String>) -> ContractError {
    ContractError::delegation(code, detail)
}

/// `credentialSubject.delegation`: whether and how the contract's subject may delegate.
/// Absent: it may not (`delegation.not_allowed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DelegationRules {
    /// How many more levels below this contract (1 ..= [`MAX_DEPTH`]).
    pub max_depth: u8,
    /// The root owner's status list every delegation below must take its entry from.
    pub status_list: String,
    /// The indices `[start, end)` of that list its delegations may use (at most
    /// [`MAX_STATUS_RANGE`] wide); excludes the contract's own index.
    pub status_range: [u64; 2],
}

impl DelegationRules {
    /// Whether `index` lies in `[start, end)`.
    pub fn contains(&self, index: u64) -> bool {
        self.status_range[0] <= index && index < self.status_range[1]
    }

    /// Whether `inner`'s range lies inside this one.
    fn range_within(&self, inner: &DelegationRules) -> bool {
        self.status_range[0] <= inner.status_range[0]
            && inner.status_range[1] <= self.status_range[1]
    }

    /// The rules alone and with the contract's own status entry: depth 1 ..= 8, a status
    /// list URL as a `credentialStatus` takes, a non-empty range at most 2^20 wide inside
    /// the largest list, the contract's own index (on the same list) outside it.
    pub(crate) fn check(&self, own: Option<&StatusEntry>) -> Result<(), ContractError> {
        let m = |d: String| ContractError::malformed("credentialSubject.delegation", d);
        if self.max_depth == 0 || self.max_depth > MAX_DEPTH {
            return Err(m(format!(
                "maxDepth {} must be 1 ..= {MAX_DEPTH} (omit delegation to forbid delegating)",
                self.max_depth
            )));
        }
        StatusEntry::new(&self.status_list, 0).map_err(|e| m(format!("statusList: {e}")))?;
        let [start, end] = self.status_range;
        let top = (MAX_BITSTRING_BYTES as u64) * 8;
        if start >= end || end - start > MAX_STATUS_RANGE || end > top {
            return Err(m(format!(
                "statusRange [{start}, {end}) must be non-empty, at most {MAX_STATUS_RANGE} \
                 wide and end at most {top}"
            )));
        }
        if let Some(own) = own {
            if own.list == self.status_list && self.contains(own.index) {
                return Err(err(
                    "delegation.status",
                    format!(
                        "the contract's own status index {} lies in its delegation statusRange \
                         [{start}, {end}): pick a range that excludes it",
                        own.index
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `cadaDelegation`: what makes a contract a delegation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationClaim {
    /// `cada.dtc` of the parent (the previous link, or the root).
    pub parent: String,
    /// `cada.dtc` of the chain's root (the owner contract).
    pub root: String,
    /// The root owner's DID.
    pub owner: String,
    /// 1 for a child of the root, parent's depth + 1 below.
    pub depth: u8,
    /// The delegator's evidence envelope (CBOR), binding its key and [`evidence_nonce`].
    pub evidence: Vec<u8>,
}

/// `cadaDelegation` as written and read.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DelegationClaimJson {
    parent: String,
    root: String,
    owner: String,
    depth: u8,
    evidence: String,
}

/// Whether `s` is a `cada.dtc`: base64url (no padding) of 32 bytes.
fn is_digest(s: &str) -> bool {
    s.len() == 43 && b64::decode("digest", s, 64).is_ok_and(|b| b.len() == 32)
}

impl DelegationClaim {
    pub(crate) fn from_json(j: &DelegationClaimJson) -> Result<Self, ContractError> {
        let m = |d: String| err("delegation.malformed", format!("cadaDelegation: {d}"));
        if !is_digest(&j.parent) || !is_digest(&j.root) {
            return Err(m(
                "parent and root must be contract digests (base64url SHA-256, 43 characters)"
                    .into(),
            ));
        }
        if j.owner.is_empty()
            || j.owner.len() > crate::did::MAX_DID_LEN
            || !j.owner.starts_with("did:")
        {
            return Err(m(format!("owner {:?} must be a DID", clip(&j.owner))));
        }
        if j.depth == 0 || usize::from(j.depth) > MAX_CHAIN_LINKS {
            return Err(m(format!(
                "depth {} must be 1 ..= {MAX_CHAIN_LINKS}",
                j.depth
            )));
        }
        let evidence = b64::decode("evidence", &j.evidence, MAX_EVIDENCE_LEN)
            .map_err(|e| m(format!("evidence: {e}")))?;
        if evidence.is_empty() || evidence.len() > MAX_EVIDENCE_LEN {
            return Err(m(format!(
                "evidence must be 1 to {MAX_EVIDENCE_LEN} bytes (the delegator's evidence envelope)"
            )));
        }
        Ok(DelegationClaim {
            parent: j.parent.clone(),
            root: j.root.clone(),
            owner: j.owner.clone(),
            depth: j.depth,
            evidence,
        })
    }

    pub(crate) fn to_json(&self) -> DelegationClaimJson {
        DelegationClaimJson {
            parent: self.parent.clone(),
            root: self.root.clone(),
            owner: self.owner.clone(),
            depth: self.depth,
            evidence: b64::encode(&self.evidence),
        }
    }
}

/// What the delegator's evidence binds as its nonce (`Platform::attest`'s nonce): SHA-256
/// of `"cada-delegation-v1\0" ‖ parent ‖ "\0" ‖ subject ‖ "\0" ‖ id ‖ "\0" ‖ iat` (iat in
/// decimal). `parent_dtc` is the parent's digest, `subject_did` the delegatee's `did:key`,
/// `id` the delegation's `jti`, `iat` its `iat`.
pub fn evidence_nonce(parent_dtc: &str, subject_did: &str, id: &str, iat: u64) -> [u8; 32] {
    let mut m = Vec::with_capacity(
        EVIDENCE_NONCE_DOMAIN.len() + parent_dtc.len() + subject_did.len() + id.len() + 24,
    );
    m.extend_from_slice(EVIDENCE_NONCE_DOMAIN);
    for part in [parent_dtc, subject_did, id] {
        m.extend_from_slice(part.as_bytes());
        m.push(0);
    }
    m.extend_from_slice(iat.to_string().as_bytes());
    let d = digest(&SHA256, &m);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Splits a chain `C0~D1~…~Dn` (root first) into its compacts: at most [`MAX_CHAIN_LEN`]
/// bytes, at most [`MAX_CHAIN_LINKS`] delegations, each at most [`MAX_DELEGATION_LEN`],
/// none empty. A single contract (no `~`) is a chain of one.
pub fn split_chain(text: &str) -> Result<Vec<&str>, ContractError> {
    if text.len() > MAX_CHAIN_LEN {
        return Err(err(
            "delegation.too_large",
            format!(
                "the chain is {} bytes, more than the limit of {MAX_CHAIN_LEN}",
                text.len()
            ),
        ));
    }
    let parts: Vec<&str> = text.splitn(MAX_CHAIN_LINKS + 2, '~').collect();
    if parts.len() > MAX_CHAIN_LINKS + 1 {
        return Err(err(
            "delegation.too_large",
            format!("a chain holds the root and at most {MAX_CHAIN_LINKS} delegations"),
        ));
    }
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() {
            return Err(err(
                "delegation.malformed",
                format!("part {i} of the chain is empty: join compacts as root~link~link"),
            ));
        }
        if i > 0 && p.len() > MAX_DELEGATION_LEN {
            return Err(err(
                "delegation.too_large",
                format!(
                    "delegation {i} is {} bytes, more than the limit of {MAX_DELEGATION_LEN}",
                    p.len()
                ),
            ));
        }
    }
    Ok(parts)
}

/// One verified delegation of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLink {
    /// The delegated contract (its [`VerifiedContract::owner`] is the root owner, its
    /// [`VerifiedContract::issuer`] the delegator).
    pub contract: VerifiedContract,
    /// Its `cadaDelegation`.
    pub claim: DelegationClaim,
    /// The delegator's key (the `did:key` of `iss`).
    pub issuer: PublicKey,
}

/// A chain whose root verified under a trusted owner and whose every link verified under
/// its delegator's key, linked, attenuated and live at the time of the check. Built by
/// [`verify_chain`] (a hand-built one has verified nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedChain {
    /// The owner contract.
    pub root: VerifiedContract,
    /// The delegations, parent first (empty: the root alone).
    pub links: Vec<VerifiedLink>,
}

impl VerifiedChain {
    /// The contract that governs the chain's subject: the last link, or the root.
    pub fn leaf(&self) -> &VerifiedContract {
        self.links.last().map_or(&self.root, |l| &l.contract)
    }

    /// Every contract, root first.
    pub fn contracts(&self) -> impl Iterator<Item = &VerifiedContract> {
        std::iter::once(&self.root).chain(self.links.iter().map(|l| &l.contract))
    }

    /// Every digest, root first to leaf.
    pub fn digests(&self) -> Vec<&str> {
        self.contracts().map(VerifiedContract::digest).collect()
    }

    /// The digests before the leaf, root first: a proof's `cada.dch` (empty for the root
    /// alone).
    pub fn ancestor_digests(&self) -> Vec<&str> {
        let mut d = self.digests();
        d.pop();
        d
    }

    /// The number of delegations (0: the root alone).
    pub fn depth(&self) -> usize {
        self.links.len()
    }

    /// The root owner's DID.
    pub fn owner(&self) -> &str {
        self.root.owner()
    }
}

/// Verifies a chain (compacts root first, as [`split_chain`] gives them) at `now`: the
/// root as an owner contract under `owners`; then each link: size, signature under the
/// `did:key` its `kid` names, fields (the same checks as an owner contract), a delegation
/// to one key not yet in the chain (`delegation.cycle`: not its own issuer, the root's
/// subject key, nor any earlier link's issuer or subject), linked to the chain (`parent`/`root`/`owner`/`depth`, `delegation.link`),
/// issued by the previous link's subject key (`delegation.issuer`; a measurement-set
/// subject admits any issuer key here, and the verifier holds its evidence to the set),
/// within its parent ([`check_within`]), no deeper than any ancestor's `maxDepth`, its
/// status entry in its parent's list and range, valid at `now`.
///
/// Not checked here: the delegators' evidence (the verifier's), and the status-list bits
/// (the caller's, per link, with [`VerifiedContract::check_status`]).
pub fn verify_chain(
    compacts: &[&str],
    owners: &TrustedOwners,
    now: UnixSeconds,
) -> Result<VerifiedChain, ContractError> {
    let Some((root_compact, rest)) = compacts.split_first() else {
        return Err(err("delegation.malformed", "an empty chain"));
    };
    if rest.len() > MAX_CHAIN_LINKS {
        return Err(err(
            "delegation.too_large",
            format!("a chain holds the root and at most {MAX_CHAIN_LINKS} delegations"),
        ));
    }
    let total: usize = compacts.iter().map(|c| c.len() + 1).sum();
    if total > MAX_CHAIN_LEN + 1 {
        return Err(err(
            "delegation.too_large",
            format!("the chain is {total} bytes, more than the limit of {MAX_CHAIN_LEN}"),
        ));
    }
    let root = Contract::verify(root_compact, owners, now)?;
    let mut chain = VerifiedChain {
        root,
        links: Vec::with_capacity(rest.len()),
    };
    for (i, compact) in rest.iter().enumerate() {
        let depth = i + 1;
        if compact.len() > MAX_DELEGATION_LEN {
            return Err(err(
                "delegation.too_large",
                format!(
                    "delegation {depth} is {} bytes, more than the limit of {MAX_DELEGATION_LEN}",
                    compact.len()
                ),
            ));
        }
        let v = jose::verify_did_key(compact, MAX_DELEGATION_LEN)?;
        let mut contract = check(&v.payload, &v.did, true)?;
        contract.set_chain_context(digest_of(compact), v.kid, chain.owner().to_owned());
        let claim = contract
            .delegation()
            .cloned()
            .ok_or_else(|| err("delegation.malformed", "no cadaDelegation"))?;
        check_link(&chain, &contract, &claim, &v.did)?;
        contract.check_time(now)?;
        chain.links.push(VerifiedLink {
            contract,
            claim,
            issuer: v.key,
        });
    }
    Ok(chain)
}

/// Where `subject` already is a key of `chain` extended by a link that `issuer_did` signs:
/// the new link's own issuer, the root's subject key (when it is a key), or any link's issuer
/// or subject. DIDs are compared as text: a `did:key` has one canonical spelling
/// (`PublicKey::from_multibase` refuses any other), so one key is one string.
fn key_in_chain(chain: &VerifiedChain, issuer_did: &str, subject: &str) -> Option<String> {
    if subject == issuer_did {
        return Some("its own issuer (the delegator)".to_owned());
    }
    if matches!(chain.root.subject(), Subject::Key(k) if k == subject) {
        return Some("the subject of the owner's contract".to_owned());
    }
    chain.links.iter().enumerate().find_map(|(i, l)| {
        let depth = i + 1;
        if l.contract.issuer() == subject {
            Some(format!("the issuer of delegation {depth}"))
        } else if matches!(l.contract.subject(), Subject::Key(k) if k == subject) {
            Some(format!("the subject of delegation {depth}"))
        } else {
            None
        }
    })
}

/// Every rule between a new link and the chain it extends (not the signature, not `now`).
fn check_link(
    chain: &VerifiedChain,
    child: &VerifiedContract,
    claim: &DelegationClaim,
    issuer_did: &str,
) -> Result<(), ContractError> {
    let parent = chain.leaf();
    let depth = chain.depth() + 1;
    if depth > MAX_CHAIN_LINKS {
        return Err(err(
            "delegation.depth",
            format!("a chain holds at most {MAX_CHAIN_LINKS} delegations"),
        ));
    }
    if child.schema() != CONTRACT_SCHEMA {
        return Err(err(
            "delegation.malformed",
            "a delegated contract is schema 2 (\"cadaSchema\": 2)",
        ));
    }
    if claim.parent != parent.digest() {
        return Err(err(
            "delegation.link",
            format!(
                "delegation {depth} names parent {}, but the link before it is {}: the chain \
                 was reordered or spliced; send root~…~parent~delegation as issued",
                clip(&claim.parent),
                parent.digest()
            ),
        ));
    }
    if claim.root != chain.root.digest() || claim.owner != chain.owner() {
        return Err(err(
            "delegation.link",
            format!(
                "delegation {depth} names root {} of {}, but the chain's root is {} of {}",
                clip(&claim.root),
                clip(&claim.owner),
                chain.root.digest(),
                clip(chain.owner())
            ),
        ));
    }
    if usize::from(claim.depth) != depth {
        return Err(err(
            "delegation.link",
            format!(
                "delegation {depth} says it is at depth {}: its place in the chain is {depth}",
                claim.depth
            ),
        ));
    }
    let Subject::Key(subject) = child.subject() else {
        return Err(err(
            "delegation.subject",
            "a delegation is to one enclave key (credentialSubject.id = its did:key), never to \
             measurements",
        ));
    };
    if let Some(place) = key_in_chain(chain, issuer_did, subject) {
        return Err(err(
            "delegation.cycle",
            format!(
                "delegation {depth} is for {}, which is already {place}: a delegation goes to \
                 a key not yet in its chain (an enclave that delegated to itself, or back up \
                 its chain, would start again the budgets only an enclave counts — opens, \
                 secret calls, signatures); delegate to another enclave's key",
                clip(subject)
            ),
        ));
    }
    match parent.subject() {
        Subject::Key(did) if did != issuer_did => {
            return Err(err(
                "delegation.issuer",
                format!(
                    "delegation {depth} is signed by {}, but its parent is for {}: only the \
                     parent's subject may delegate under it",
                    clip(issuer_did),
                    clip(did)
                ),
            ));
        }
        _ => {}
    }
    let Some(rules) = parent.delegation_rules() else {
        return Err(err(
            "delegation.not_allowed",
            format!(
                "the parent {} grants no delegation (credentialSubject.delegation): ask its \
                 issuer for a contract that allows delegating",
                parent.digest()
            ),
        ));
    };
    for (a, ancestor) in chain.contracts().enumerate() {
        let allowed = ancestor
            .delegation_rules()
            .map_or(0, |r| usize::from(r.max_depth));
        if depth - a > allowed {
            return Err(err(
                "delegation.depth",
                format!(
                    "delegation {depth} lies {} levels below contract {a} of the chain, whose \
                     maxDepth is {allowed}: delegate from higher up, or ask for a deeper grant",
                    depth - a
                ),
            ));
        }
    }
    let Some(entry) = child.status_entry() else {
        return Err(err(
            "delegation.status",
            format!(
                "a delegation needs a credentialStatus entry in {} within [{}, {})",
                rules.status_list, rules.status_range[0], rules.status_range[1]
            ),
        ));
    };
    if entry.list != rules.status_list || !rules.contains(entry.index) {
        return Err(err(
            "delegation.status",
            format!(
                "its status entry {}#{} must lie in {} within [{}, {}) (the parent's \
                 delegation.statusRange)",
                clip(&entry.list),
                entry.index,
                rules.status_list,
                rules.status_range[0],
                rules.status_range[1]
            ),
        ));
    }
    if child.issued_at() < parent.valid_from() || child.issued_at() >= parent.valid_until() {
        return Err(err(
            "delegation.wider.time",
            format!(
                "it was issued at {}, outside its parent's validity [{}, {}): delegate while \
                 the parent is valid",
                child.issued_at(),
                parent.valid_from(),
                parent.valid_until()
            ),
        ));
    }
    check_within(parent, child)
}

fn missing<'a>(child: &'a [String], parent: &[String]) -> Vec<&'a str> {
    child
        .iter()
        .filter(|c| !parent.contains(c))
        .map(String::as_str)
        .collect()
}

fn shown(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn audit_rank(a: AuditLevel) -> u8 {
    match a {
        AuditLevel::Minimal => 0,
        AuditLevel::Standard => 1,
        AuditLevel::Full => 2,
    }
}

/// Whether `child` grants nothing `parent` does not, in every dimension; the first wider
/// dimension refuses with `delegation.wider.<dimension>` and says what to narrow. Also the
/// child's own delegation rules against the parent's (`delegation.depth`,
/// `delegation.status`). Used by the enclave before it signs and when it installs a
/// chain, and by every verifier of a chain.
pub fn check_within(
    parent: &VerifiedContract,
    child: &VerifiedContract,
) -> Result<(), ContractError> {
    // A child without audiences (a grant-only one: details, secrets, opens, stepUp) is
    // checked in those dimensions.
    for a in child.audiences() {
        if !parent.audiences().iter().any(|p| a.is_within(p)) {
            return Err(err(
                "delegation.wider.audience",
                format!(
                    "audience {a} lies under none of the parent's ({}): narrow it to a path \
                     under one of them, on a segment boundary",
                    parent
                        .audiences()
                        .iter()
                        .map(cada_protocol::url::UrlPrefix::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    let subsets: [(&'static str, &str, &[String], &[String]); 4] = [
        (
            "delegation.wider.method",
            "methods",
            child.methods(),
            parent.methods(),
        ),
        (
            "delegation.wider.scope",
            "scopes",
            child.scopes(),
            parent.scopes(),
        ),
        (
            "delegation.wider.tool",
            "tools",
            child.tools(),
            parent.tools(),
        ),
        (
            "delegation.wider.prompt",
            "prompts",
            child.prompts(),
            parent.prompts(),
        ),
    ];
    for (code, what, c, p) in subsets {
        let extra = missing(c, p);
        if !extra.is_empty() {
            return Err(err(
                code,
                format!(
                    "{what} {} are not granted to the parent ({}): drop them",
                    extra.join(", "),
                    shown(p)
                ),
            ));
        }
    }
    let parent_resources = parent.resource_prefixes();
    for (text, r) in child.resources().iter().zip(child.resource_prefixes()) {
        if !parent_resources.iter().any(|p| r.is_within(p)) {
            return Err(err(
                "delegation.wider.resource",
                format!(
                    "resource {} lies within none of the parent's ({}): narrow it below one of \
                     them on a segment boundary (opaque URIs exactly)",
                    clip(text),
                    shown(parent.resources())
                ),
            ));
        }
    }
    for s in child.secret_rules() {
        let ok = parent.secret_rules().any(|(pg, pp)| {
            pg.name == s.0.name
                && s.1.is_within(pp)
                && s.0.methods.iter().all(|m| pg.methods.contains(m))
        });
        if !ok {
            return Err(err(
                "delegation.wider.secret",
                format!(
                    "the secret {} on {} for {} is not within a parent grant of the same name \
                     (prefix within, methods among its own): narrow the prefix or methods, or \
                     drop it",
                    s.0.name,
                    s.1,
                    s.0.methods.join(", ")
                ),
            ));
        }
    }
    for o in child.opens() {
        match parent.opens().iter().find(|p| p.label == o.label) {
            Some(p) if o.budget <= p.budget => {}
            Some(p) => {
                return Err(err(
                    "delegation.wider.open",
                    format!(
                        "opens of {}: budget {} exceeds the parent's {}: lower it",
                        o.label, o.budget, p.budget
                    ),
                ))
            }
            None => {
                return Err(err(
                    "delegation.wider.open",
                    format!("the parent may not open data labelled {}: drop it", o.label),
                ))
            }
        }
    }
    let absent = missing(parent.required_ctx(), child.required_ctx());
    if !absent.is_empty() {
        return Err(err(
            "delegation.wider.ctx",
            format!(
                "the parent requires ctx keys {}: require them too",
                absent.join(", ")
            ),
        ));
    }
    if child.valid_from() < parent.valid_from() || child.valid_until() > parent.valid_until() {
        return Err(err(
            "delegation.wider.time",
            format!(
                "its validity [{}, {}) exceeds the parent's [{}, {}): start no earlier and end \
                 no later",
                child.valid_from(),
                child.valid_until(),
                parent.valid_from(),
                parent.valid_until()
            ),
        ));
    }
    if let Some(pb) = parent.budget() {
        match child.budget() {
            Some(cb) if cb <= pb => {}
            other => {
                return Err(err(
                    "delegation.wider.budget",
                    format!(
                        "budget {} exceeds the parent's {pb}: give a budget of at most {pb}",
                        other.map_or("unlimited".to_owned(), |b| b.to_string())
                    ),
                ))
            }
        }
    }
    if let Some(pr) = parent.rate_per_second() {
        match child.rate_per_second() {
            Some(cr) if cr <= pr => {}
            other => {
                return Err(err(
                    "delegation.wider.rate",
                    format!(
                        "rate {} per second exceeds the parent's {pr}: give a rate of at most {pr}",
                        other.map_or("unlimited".to_owned(), |r| r.to_string())
                    ),
                ))
            }
        }
    }
    let pl = parent.limits();
    let cl = child.limits();
    for (what, p, c) in [
        ("requests", pl.requests, cl.requests),
        ("refusals", pl.refusals, cl.refusals),
    ] {
        if let Some(p) = p {
            let ok = c.is_some_and(|c| c.max <= p.max && c.window_seconds >= p.window_seconds);
            if !ok {
                return Err(err(
                    "delegation.wider.limits",
                    format!(
                        "the parent limits {what} to {} per {} s: set limits.{what} with max ≤ {} \
                         and windowSeconds ≥ {}",
                        p.max, p.window_seconds, p.max, p.window_seconds
                    ),
                ));
            }
        }
    }
    if audit_rank(child.audit()) < audit_rank(parent.audit()) {
        return Err(err(
            "delegation.wider.audit",
            format!(
                "audit {} records less than the parent's {}: use {} or more",
                child.audit().as_str(),
                parent.audit().as_str(),
                parent.audit().as_str()
            ),
        ));
    }
    for (d, locations) in child.details_with_locations() {
        let within = parent
            .authorization_details()
            .iter()
            .any(|p| d.is_within(p));
        // A parent that grants the tool without limits permits it only under its
        // audiences: a detail for the same tool must stay there too.
        let inside_audiences = !parent.grants_tool(&d.tool)
            || locations
                .iter()
                .all(|l| parent.audiences().iter().any(|a| l.is_within(a)));
        if !within || !inside_audiences {
            return Err(err(
                "delegation.wider.details",
                format!(
                    "the authorization detail for {} at {} is within none of the parent's \
                     (same tool and identifier, locations within, arguments constrained at \
                     least as tightly, single use if the parent's is): narrow it",
                    d.tool,
                    d.locations.join(" ")
                ),
            ));
        }
    }
    if child.step_up().is_some() && child.step_up() != parent.step_up() {
        return Err(err(
            "delegation.wider.step_up",
            format!(
                "stepUp {} differs from the parent's ({}): omit it or name the same service",
                child.step_up().map_or("", |u| u.as_str()),
                parent.step_up().map_or("none", |u| u.as_str())
            ),
        ));
    }
    if let Some(cr) = child.delegation_rules() {
        let Some(pr) = parent.delegation_rules() else {
            return Err(err(
                "delegation.not_allowed",
                "the parent may not delegate, so the child may not either: drop delegation",
            ));
        };
        if cr.max_depth >= pr.max_depth {
            return Err(err(
                "delegation.depth",
                format!(
                    "maxDepth {} must be less than the parent's {}: lower it",
                    cr.max_depth, pr.max_depth
                ),
            ));
        }
        if cr.status_list != pr.status_list || !pr.range_within(cr) {
            return Err(err(
                "delegation.status",
                format!(
                    "delegation.statusList and statusRange must lie inside the parent's ({} \
                     [{}, {})): narrow the range",
                    pr.status_list, pr.status_range[0], pr.status_range[1]
                ),
            ));
        }
    }
    Ok(())
}

/// The grant of a delegation from a request (`cada-parent delegate`, the enclave's
/// `delegate` op): `json` is a JSON object with any of the `credentialSubject` members
/// (`audiences`, `methods`, `scopes`, `tools`, `resources`, `prompts`, `secrets`, `opens`,
/// `requiredCtx`, `budget`, `ratePerSecond`, `audit`, `limits`, `authorization_details`,
/// `stepUp`, `delegation`) and `name`. A member present replaces the parent's value, a
/// member `null` clears it, a member absent keeps the parent's — except `delegation` and
/// `name`, which are absent unless given. The subject is `subject_did`, the window
/// `[valid_from, valid_until)`, no status entry (the enclave allocates it). Nothing is
/// checked against the parent here: [`Draft::check`] does that.
pub fn narrow_grant(
    parent: &VerifiedContract,
    subject_did: &str,
    json: &str,
    valid_from: UnixSeconds,
    valid_until: UnixSeconds,
) -> Result<Grant, ContractError> {
    use serde::de::DeserializeOwned;
    use serde_json::value::RawValue;
    let bad = |d: String| {
        err(
            "delegation.malformed",
            format!("the delegation request: {d}"),
        )
    };
    if json.len() > MAX_DELEGATION_LEN {
        return Err(err(
            "delegation.too_large",
            format!(
                "the delegation request is {} bytes, more than {MAX_DELEGATION_LEN}",
                json.len()
            ),
        ));
    }
    let members: std::collections::BTreeMap<String, Box<RawValue>> =
        serde_json::from_str(json).map_err(|e| bad(format!("a JSON object is expected: {e}")))?;
    fn read<T: DeserializeOwned>(
        name: &str,
        raw: &RawValue,
        bad: &dyn Fn(String) -> ContractError,
    ) -> Result<Option<T>, ContractError> {
        if raw.get() == "null" {
            return Ok(None);
        }
        serde_json::from_str(raw.get())
            .map(Some)
            .map_err(|e| bad(format!("{name}: {e}")))
    }
    let mut g = Grant::from_verified(parent);
    g.subject = Subject::Key(subject_did.to_owned());
    g.valid_from = valid_from;
    g.valid_until = valid_until;
    g.status = None;
    g.name = None;
    g.delegation = None;
    for (name, raw) in &members {
        let raw: &RawValue = raw;
        match name.as_str() {
            "audiences" => g.audiences = read(name, raw, &bad)?.unwrap_or_default(),
            "methods" => g.methods = read(name, raw, &bad)?.unwrap_or_default(),
            "scopes" => g.scopes = read(name, raw, &bad)?.unwrap_or_default(),
            "tools" => g.tools = read(name, raw, &bad)?.unwrap_or_default(),
            "resources" => g.resources = read(name, raw, &bad)?.unwrap_or_default(),
            "prompts" => g.prompts = read(name, raw, &bad)?.unwrap_or_default(),
            "secrets" => g.secrets = read(name, raw, &bad)?.unwrap_or_default(),
            "opens" => g.opens = read(name, raw, &bad)?.unwrap_or_default(),
            "requiredCtx" => g.required_ctx = read(name, raw, &bad)?.unwrap_or_default(),
            "budget" => g.budget = read(name, raw, &bad)?,
            "ratePerSecond" => g.rate_per_second = read(name, raw, &bad)?,
            "audit" => g.audit = read(name, raw, &bad)?.unwrap_or_default(),
            "limits" => g.limits = read(name, raw, &bad)?.unwrap_or_default(),
            "stepUp" => g.step_up = read(name, raw, &bad)?,
            "delegation" => g.delegation = read(name, raw, &bad)?,
            "name" => g.name = read(name, raw, &bad)?,
            "authorization_details" => {
                let items: Option<Vec<Box<RawValue>>> = read(name, raw, &bad)?;
                g.authorization_details = items
                    .unwrap_or_default()
                    .iter()
                    .take(crate::details::MAX_DETAILS + 1)
                    .map(|d| crate::AuthorizationDetail::parse(d.get()))
                    .collect::<Result<_, _>>()?;
            }
            other => {
                return Err(bad(format!(
                    "{:?} is not a member a delegation can narrow (audiences, methods, scopes, \
                     tools, resources, prompts, secrets, opens, requiredCtx, budget, \
                     ratePerSecond, audit, limits, authorization_details, stepUp, delegation, \
                     name)",
                    clip(other)
                )))
            }
        }
    }
    Ok(g)
}

/// A delegated contract before the delegator's enclave signs it.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The narrowed grant: its subject is the delegatee's `did:key`; its status entry lies
    /// in the parent's `delegation.statusRange`.
    pub grant: Grant,
    /// The delegator's `did:key` (the signing enclave's).
    pub issuer: String,
    /// `cada.dtc` of the parent.
    pub parent: String,
    /// `cada.dtc` of the root.
    pub root: String,
    /// The root owner's DID.
    pub owner: String,
    /// Its depth (the parent's + 1).
    pub depth: u8,
    /// Its credential id (`urn:uuid:…`).
    pub id: String,
    /// Its `iat`.
    pub iat: UnixSeconds,
}

impl Draft {
    /// A draft of `grant` under the leaf of `chain`, signed by `issuer` (a `did:key`) at
    /// `iat`, with a fresh id. Refused at once when the leaf may not delegate
    /// (`delegation.not_allowed`) or the chain is full (`delegation.depth`); everything
    /// else is [`Self::check`]'s.
    pub fn under(
        chain: &VerifiedChain,
        grant: Grant,
        issuer: &str,
        iat: UnixSeconds,
    ) -> Result<Self, ContractError> {
        if chain.leaf().delegation_rules().is_none() {
            return Err(err(
                "delegation.not_allowed",
                format!(
                    "the parent {} grants no delegation (credentialSubject.delegation): ask its \
                     issuer for a contract that allows delegating",
                    chain.leaf().digest()
                ),
            ));
        }
        let depth = u8::try_from(chain.depth() + 1)
            .ok()
            .filter(|d| usize::from(*d) <= MAX_CHAIN_LINKS)
            .ok_or_else(|| {
                err(
                    "delegation.depth",
                    format!("a chain holds at most {MAX_CHAIN_LINKS} delegations"),
                )
            })?;
        Ok(Draft {
            grant,
            issuer: issuer.to_owned(),
            parent: chain.leaf().digest().to_owned(),
            root: chain.root.digest().to_owned(),
            owner: chain.owner().to_owned(),
            depth,
            id: crate::new_urn_uuid()?,
            iat,
        })
    }

    /// The delegatee's `did:key` (`delegation.subject` if the grant is for measurements).
    pub fn subject(&self) -> Result<&str, ContractError> {
        match &self.grant.subject {
            Subject::Key(did) => Ok(did),
            Subject::Measurements(_) => Err(err(
                "delegation.subject",
                "a delegation is to one enclave key (its did:key), never to measurements",
            )),
        }
    }

    /// The nonce the delegator's evidence must bind ([`evidence_nonce`] of this draft).
    pub fn evidence_nonce(&self) -> Result<[u8; 32], ContractError> {
        Ok(evidence_nonce(
            &self.parent,
            self.subject()?,
            &self.id,
            self.iat,
        ))
    }

    /// The credential (JWS payload bytes) with the delegator's `evidence` (its envelope's
    /// CBOR, 1 ..= [`MAX_EVIDENCE_LEN`] bytes).
    pub fn payload_bytes(&self, evidence: &[u8]) -> Result<Vec<u8>, ContractError> {
        self.subject()?;
        if evidence.is_empty() || evidence.len() > MAX_EVIDENCE_LEN {
            return Err(err(
                "delegation.malformed",
                format!(
                    "the evidence is {} bytes: 1 to {MAX_EVIDENCE_LEN} allowed",
                    evidence.len()
                ),
            ));
        }
        let claim = DelegationClaim {
            parent: self.parent.clone(),
            root: self.root.clone(),
            owner: self.owner.clone(),
            depth: self.depth,
            evidence: evidence.to_vec(),
        };
        let payload = self.grant.payload(
            &self.issuer,
            self.id.clone(),
            self.iat,
            Some(claim.to_json()),
        )?;
        serde_json::to_vec(&payload).map_err(|e| err("delegation.malformed", e.to_string()))
    }

    /// Every rule [`verify_chain`] applies to this draft as the next link of `chain` (all
    /// but the signature and the time of use): the enclave calls it before it attests and
    /// signs, and refuses anything wider. Returns the contract as it will verify.
    pub fn check(&self, chain: &VerifiedChain) -> Result<VerifiedContract, ContractError> {
        // The evidence does not take part in any rule; one byte stands for it.
        let payload = self.payload_bytes(&[0])?;
        self.check_payload(chain, &payload)
    }

    fn check_payload(
        &self,
        chain: &VerifiedChain,
        payload: &[u8],
    ) -> Result<VerifiedContract, ContractError> {
        let mut contract = check(payload, &self.issuer, true)?;
        contract.set_chain_context(String::new(), String::new(), chain.owner().to_owned());
        let claim = contract
            .delegation()
            .cloned()
            .ok_or_else(|| err("delegation.malformed", "no cadaDelegation"))?;
        check_link(chain, &contract, &claim, &self.issuer)?;
        Ok(contract)
    }

    /// The JWS signing input (`base64url(header).base64url(payload)`) the delegator signs
    /// with its key: `alg` its algorithm (EdDSA, ES256, ES384), `kid` its `did:key` URL
    /// (`did:key:z…#z…`, [`PublicKey::did_key_url`]).
    pub fn signing_input(
        &self,
        payload: &[u8],
        alg: SigAlg,
        kid: &str,
    ) -> Result<String, ContractError> {
        self.check_key(alg, kid)?;
        let header = jose::delegation_header(alg, kid)?;
        Ok(cada_protocol::jws::signing_input(&header, payload))
    }

    /// The compact delegated contract: `payload` (from [`Self::payload_bytes`]) under the
    /// header of `alg` and `kid`, with the delegator's `signature` over
    /// [`Self::signing_input`] (ECDSA as fixed-length `r ‖ s`, put in its low-s form here,
    /// the one spelling verifiers accept). The signature is verified under the issuer's key
    /// before the compact is returned.
    pub fn assemble(
        &self,
        payload: &[u8],
        alg: SigAlg,
        kid: &str,
        signature: &[u8],
    ) -> Result<String, ContractError> {
        let mut out = self.signing_input(payload, alg, kid)?;
        // The one spelling verifiers accept (low-s), whatever the signer wrote.
        let mut signature = signature.to_vec();
        cada_protocol::jws::ecdsa_low_s(alg, &mut signature);
        out.push('.');
        out.push_str(&b64::encode(&signature));
        let v = jose::verify_did_key(&out, MAX_DELEGATION_LEN)?;
        if v.did != self.issuer {
            return Err(err(
                "delegation.issuer",
                "the signing key is not the draft's issuer",
            ));
        }
        Ok(out)
    }

    fn check_key(&self, alg: SigAlg, kid: &str) -> Result<(), ContractError> {
        let key = PublicKey::from_did_key(&self.issuer).map_err(|e| {
            err(
                "delegation.issuer",
                format!("the issuer is not a did:key: {e}"),
            )
        })?;
        if kid != key.did_key_url() {
            return Err(err(
                "delegation.issuer",
                format!(
                    "kid {} must be the issuer's did:key URL {}",
                    clip(kid),
                    key.did_key_url()
                ),
            ));
        }
        if alg.curve() != key.alg().curve() {
            return Err(err(
                "delegation.malformed",
                format!(
                    "alg {} cannot be used with the issuer's {} key",
                    alg.as_str(),
                    key.alg().curve()
                ),
            ));
        }
        Ok(())
    }
}
