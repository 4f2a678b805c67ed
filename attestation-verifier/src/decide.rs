//! One decision for every binary: is this request, with this proof (and perhaps this
//! evidence), allowed at this time under this [`Policy`]?
//!
//! [`Verifier::decide`] applies the rules in this fixed order and stops at the first that
//! refuses; each refusal carries the stable code of its rule ([`Refusal::code`]):
//!
//! | # | rule | codes |
//! |---|------|-------|
//! | 1 | the request URL is an absolute http(s) URL whose path keeps the strict-path rules of [`cada_protocol::url`] (no dot segments, encoded separators, dots or `%`, path parameters, empty segments, raw non-ASCII …) and is already in normal form, since the path is forwarded as received | `request.url`, `request.url_not_normal` |
//! | 2 | the proof is a well-formed CB-PoP (size, `typ`, `alg`, no `crit`, claims) | `protocol`, `input.too_large` |
//! | 3 | its signature verifies under its `jwk` | `pop.signature` |
//! | 4 | evidence sent with it verifies (chain, platform, rules, freshness) and binds this key | `chain.*`, `cose.*`, `doc.*`, `snp.*`, `tpm.*`, `policy.*`, `evidence.*`, `binding`, `pop.binding_mismatch` |
//! | 5 | the key is attested by the evidence the proof names (`cada.att`) — or, when an access token (`typ at+jwt`) of a policy `[[issuer]]` comes with the proof, by that token: signature under the issuer's JWKS, not expired, `aud` covering the URL, `cnf.jkt` = the proof key; rules 11–13 are then the issuer's, applied when it issued the token | `pop.evidence_required`, `pop.unknown_evidence`, `binding`, `token.*` |
//! | 6 | `htm` and `htu` are this request's; `cada.bd` is the SHA-256 of its body (required where the policy says `require_body_digest`), and `cada.mcp` the MCP calls of that body; where calls are governed and the caller did not read them, the proof names them ([`crate::calls`], applied by servers to what this decision accepts) | `pop.htm`, `pop.htu`, `pop.body`, `pop.mcp`, `pop.calls_required` |
//! | 7 | `iat`/`exp` are fresh (milliseconds, with the policy's skew); `jti` is sane | `pop.not_fresh` |
//! | 8 | `ath` matches the access token sent | `pop.ath` |
//! | 9 | `cada.ctx` satisfies the context rules | `pop.ctx` |
//! | 10 | the server nonce, when the policy requires one | `pop.nonce` |
//! | 11 | an audience covers the URL | `policy.audience` |
//! | 12 | the key's measurements are allowed for that audience | `policy.measurements` |
//! | 13 | where the audience names owners: the proof's `cada.dtc` names a contract (sent in `CADA-Contract` or cached by digest) of a trusted owner, who is the owner in the evidence, for this key or image, valid now, not revoked by a fresh status list, permitting this request and every MCP tool it calls (with an access token: the token's `cada.tools`); a delegation chain (`C0~D1~…`, [`crate::delegation`]): every link verified and attenuated, each delegator's evidence verified as of its link's `iat`, binding its key and the link's nonce, of the root owner, fresh, of an image the audience accepts for delegators, the chain no deeper than `max_delegation_depth`, `cada.dch` the digests above the leaf, every link's status checked; then each `tools/call` that only a one-transaction grant (RFC 9396 authorization detail, of the contract or the token) grants meets that detail's argument limits, read from the body ([`RequestBody::tool_arguments`]); where the arguments are unknown, only a detail without limits grants it | `contract.*`, `delegation.*`, `token.tool`, `grant.tool`, `grant.arguments.*`, `grant.arguments_unchecked` |
//! | 14 | the `jti` was not seen before (replay store, last so that refused proofs do not consume ids); then each call that only single-use grants admit finds one of them not used before, anywhere the store is shared ([`crate::grants::GrantChoice`]: the first unused one consumed at acceptance, for all calls or none, and kept even if the upstream then fails) | `pop.replay`, `grant.used`, `pop.replay_store_unavailable` |
//!
//! Callers with an asynchronous replay store use [`Verifier::evaluate`] (rules 1–13), then
//! store the [`Pending::replay_key`] themselves, call [`Pending::finish`] and consume
//! [`Accepted::single_use`] all or nothing ([`crate::grants::consume_all`], rule 14;
//! [`Refusal::grant_used`] when a call finds its choices used).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cada_contract::{
    BehaviourLimits, Contract, RequestView, StatusList, VerifiedContract, VerifiedStatusList,
};
use cada_protocol::envelope::{EvidenceEnvelope, Platform};
use cada_protocol::mcp::McpCall;
use cada_protocol::token::PopClaims;
use cada_protocol::url::{HttpUrl, UrlPrefix};
use serde::Serialize;

use crate::evidence::{AttestedKey, EvidenceVerifier};
use crate::grants::{GrantChoice, NotConsumed, ToolArguments};
use crate::nitro::NitroVerifier;
use crate::nonce::NonceIssuer;
use crate::policy::{MeasurementVerdict, Policy, SnpFreshness};
use crate::pop::{replay_key, PopConfig, PopRequest, PopVerifier};
use crate::replay::ReplayStore;
use crate::snp::SnpVerifier;
use crate::{UnixTime, VerifyError};

/// The request a proof came with.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Full request URL as the resource server sees it.
    pub url: &'a str,
    /// The `DPoP` header (compact JWS).
    pub dpop: &'a str,
    /// The access token sent with the request, if any (then `ath` must match).
    pub access_token: Option<&'a str>,
    /// Evidence sent with the request (`CADA-Evidence`), if any.
    pub evidence: Option<&'a EvidenceEnvelope>,
    /// The trust contract sent with the request (`CADA-Contract`, compact `vc+jwt`), if
    /// any; sent once per server, then found by its digest.
    pub contract: Option<&'a str>,
    /// What the caller knows of the request's body (a gate knows it all; an endpoint asked
    /// about a proof may know nothing): checked against `cada.bd` and `cada.mcp` (rule 6),
    /// and its MCP tools against the contract (rule 13).
    pub body: Option<&'a RequestBody>,
}

/// The body of a request, as the caller of [`Verifier::decide`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBody {
    /// base64url SHA-256 of the body bytes ([`cada_protocol::mcp::body_digest`]).
    pub digest: String,
    /// The MCP calls the body makes ([`cada_protocol::mcp::parse_body`]), when the caller
    /// parsed it (`Some(vec![])`: a body that calls nothing); `None`: not known, and then
    /// the calls the proof names stand in for them at rule 13.
    pub calls: Option<Vec<McpCall>>,
    /// The arguments of each `tools/call` of the body
    /// ([`crate::grants::tool_arguments`]), when the caller read them: rule 13 checks them
    /// against the one-transaction grant (authorization detail) that covers each call.
    /// `None`: not known, and a call that only an argument-limited detail grants is
    /// refused (`grant.arguments_unchecked`).
    pub tool_arguments: Option<Vec<ToolArguments>>,
}

/// What a token exchange (RFC 8693, at an STS) asks for: a token for `resource` with
/// `scopes`. The proof is for the token endpoint; the audience, measurement and contract
/// rules (11–13) are applied to the resource instead.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    /// The RFC 8707 `resource`: an absolute URL the token will be for.
    pub resource: &'a str,
    /// The scopes asked for (each must be granted by the contract).
    pub scopes: &'a [String],
    /// The one-transaction grants asked for (RFC 9396 `authorization_details`; empty:
    /// none): each must lie within a detail of the contract
    /// ([`cada_contract::AuthorizationDetail::is_within`]) and its locations under the
    /// resource, and one that limits arguments or is single use is refused where the
    /// policy audience of the resource does not say `checks_arguments`
    /// (`grant.arguments_unchecked`).
    pub authorization_details: &'a [cada_contract::AuthorizationDetail],
}

/// What rule 13 checks the contract permits.
#[derive(Clone, Copy)]
enum Permit<'a> {
    /// This request, with this method, making these MCP calls.
    Request(&'a str, &'a [&'a McpCall]),
    /// A token for the URL with these scopes and one-transaction grants.
    Token(&'a [String], &'a [cada_contract::AuthorizationDetail]),
}

/// Which rule admitted a request's measurements.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Admission {
    /// Set `set` of audience `audience` matched.
    Audience {
        /// The audience prefix.
        audience: String,
        /// Index of the matching measurement set.
        set: usize,
    },
    /// No audience covers the URL and the operator passed `--allow-any-measurement`.
    AnyMeasurement,
    /// An access token of a trusted issuer attested the key for a resource covering the
    /// URL: the issuer applied the audience, measurement and contract rules when it issued
    /// the token.
    Token {
        /// The issuer.
        issuer: String,
    },
}

impl std::fmt::Display for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Admission::Audience { audience, set } => {
                write!(f, "audience {audience}, measurement set {set}")
            }
            Admission::AnyMeasurement => f.write_str("--allow-any-measurement (no audience)"),
            Admission::Token { issuer } => write!(f, "an access token of {issuer}"),
        }
    }
}

/// An accepted request: who signed it, under which evidence, and which rule admitted it.
#[derive(Debug, Clone, Serialize)]
pub struct Accepted {
    /// The attested key.
    pub key: AttestedKey,
    /// The proof's claims.
    pub claims: PopClaims,
    /// The measurement rule that admitted it.
    pub admission: Admission,
    /// The trust contract that authorized it, where the audience requires one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contract: Option<ContractInfo>,
    /// The access token that attested the key, when one did (rule 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<cada_protocol::access_token::AccessTokenClaims>,
    /// The single-use one-transaction grants its calls may use (rule 13), per call that
    /// only single-use details admit: one of each call's choices is consumed in the replay
    /// store at acceptance, for all calls or none (rule 14,
    /// [`crate::grants::consume_all`]; [`Refusal::grant_used`] when a call finds all of its
    /// choices used).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub single_use: Vec<GrantChoice>,
}

/// What an accepted request's contract says (rule 13).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ContractInfo {
    /// The owner who signed it.
    pub owner: String,
    /// Its credential id.
    pub id: String,
    /// `cada.dtc`.
    pub digest: String,
    /// Scopes it grants.
    pub scopes: Vec<String>,
    /// MCP tools it grants.
    pub tools: Vec<String>,
    /// MCP resource URI prefixes it grants.
    pub resources: Vec<String>,
    /// MCP prompts it grants.
    pub prompts: Vec<String>,
    /// The `ctx` keys it requires of every proof (`requiredCtx`).
    pub required_ctx: Vec<String>,
    /// Seconds of validity left.
    pub remaining_secs: u64,
    /// Behaviour limits the fleet enforces together (counted by the caller's shared store).
    pub limits: BehaviourLimits,
    /// Its one-transaction grants (RFC 9396 `authorization_details`; empty: none): what an
    /// STS narrows a token to.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "details_json")]
    pub authorization_details: Vec<cada_contract::AuthorizationDetail>,
    /// The delegation chain that governs the request, ROOT FIRST (the owner's contract,
    /// then each delegation down to the leaf, whose digest is [`ContractInfo::digest`]);
    /// empty when an owner's contract governs it directly. Fleet counters are charged to
    /// every link; a token names the actors of the chain.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<LinkInfo>,
}

/// One link of the delegation chain that governs an accepted request ([`ContractInfo::chain`]).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LinkInfo {
    /// Its `cada.dtc`.
    pub digest: String,
    /// Who signed it: the owner's DID for the root, the delegator enclave's `did:key` below.
    pub issuer: String,
    /// Its subject's DID (a `did:key`; for a root contract made for measurements, empty).
    pub subject: String,
    /// Its depth: 0 for the owner's contract, 1 for its delegation, …
    pub depth: usize,
    /// Most signatures under it and every contract below it (fleet-wide), if limited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<u64>,
    /// Most signatures per second under it and every contract below it, if limited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per_second: Option<u32>,
    /// Its behaviour limits, counting the calls of every contract below it too.
    pub limits: BehaviourLimits,
    /// When it ends (Unix seconds).
    pub valid_until: u64,
    /// When it was issued (its verified `iat`, Unix seconds; 0: unknown). Kept with the
    /// chain a verifier caches, so that a request deciding on the cached chain (the
    /// contract is sent once) still knows each link's issue time (the tree store epoch,
    /// review delegation-3 finding 2).
    pub iat: u64,
}

fn details_json<S: serde::Serializer>(
    d: &[cada_contract::AuthorizationDetail],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(d.len()))?;
    for x in d {
        seq.serialize_element(&x.to_json())?;
    }
    seq.end()
}

/// The contract a refused proof named, once found: what a fleet counts refusals against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractRef {
    /// `cada.dtc`.
    pub digest: String,
    /// Its owner.
    pub owner: String,
    /// Its behaviour limits.
    pub limits: BehaviourLimits,
    /// The delegation chain it lies in, root first ([`ContractInfo::chain`]): a refusal
    /// counts against the behaviour limits of every link. Empty: the contract alone.
    pub chain: Vec<LinkInfo>,
}

/// The rules of [`Verifier::decide`], in order: what each checks and its refusal codes.
pub const RULES: &[(&str, &str)] = &[
    (
        "the request URL is an absolute http(s) URL whose path is strict and in normal form",
        "request.url, request.url_not_normal",
    ),
    (
        "the proof is a well-formed CB-PoP",
        "protocol, input.too_large",
    ),
    ("its signature verifies under its jwk", "pop.signature"),
    (
        "evidence sent with it verifies, is fresh and binds this key",
        "chain.*, cose.*, doc.*, snp.*, policy.*, evidence.*, binding, pop.binding_mismatch",
    ),
    (
        "the key is attested by the evidence the proof names, or by an access token of a trusted issuer",
        "pop.evidence_required, pop.unknown_evidence, binding, token.*",
    ),
    (
        "htm and htu are this request's, cada.bd its body and cada.mcp the body's MCP calls",
        "pop.htm, pop.htu, pop.bad_url, pop.body, pop.mcp, pop.calls_required",
    ),
    ("iat/exp are fresh and jti is sane", "pop.not_fresh"),
    ("ath matches the access token", "pop.ath"),
    ("cada.ctx satisfies the context rules", "pop.ctx"),
    ("the server nonce, when required", "pop.nonce"),
    ("an audience covers the URL", "policy.audience"),
    (
        "the measurements are allowed for that audience",
        "policy.measurements",
    ),
    (
        "where the audience names owners, a live contract of the evidence's owner permits it and its MCP tools (a delegation chain: every link verified, its delegators attested at each link's iat, no deeper than the policy allows, cada.dch naming it, no link revoked); a call granted only by a one-transaction grant meets its argument limits (read from the body; unknown arguments refuse)",
        "contract.*, delegation.*, token.tool, grant.tool, grant.arguments.*, grant.arguments_unchecked",
    ),
    (
        "the jti was not seen before; a single-use grant was not used before anywhere in the fleet",
        "pop.replay, grant.used, pop.replay_store_unavailable",
    ),
];

/// A refused request: the rule that refused it and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What failed.
    pub error: VerifyError,
    /// Whether it failed while verifying evidence sent with the proof (rule 4).
    in_evidence: bool,
    /// The contract the proof named, when rule 13 had found it (or rule 14 refused a
    /// contract-bound proof): refusals count against its behaviour limits.
    contract: Option<Box<ContractRef>>,
}

impl Refusal {
    /// The 1-based number of the rule in [`RULES`] that refused.
    pub fn rule(&self) -> usize {
        if self.in_evidence {
            return 4;
        }
        match self.code() {
            "request.url" | "request.url_not_normal" => 1,
            "pop.signature" => 3,
            "pop.binding_mismatch" => 4,
            "pop.evidence_required" | "pop.unknown_evidence" | "binding" => 5,
            "token.tool" => 13,
            c if c.starts_with("token.") => 5,
            "pop.htm" | "pop.htu" | "pop.bad_url" | "pop.body" | "pop.mcp"
            | "pop.calls_required" => 6,
            "pop.not_fresh" => 7,
            "pop.ath" => 8,
            "pop.ctx" => 9,
            "pop.nonce" => 10,
            "policy.audience" => 11,
            "policy.measurements" => 12,
            c if c.starts_with("contract.") || c.starts_with("delegation.") => 13,
            "pop.replay"
            | "pop.replay_store_unavailable"
            | "grant.used"
            | "pop.store_epoch"
            | "grant.store_epoch" => 14,
            c if c.starts_with("grant.") => 13,
            _ => 2,
        }
    }

    /// This refusal, of a request under `contract` (a fleet counts it against the
    /// contract's behaviour limits, and those of every link of its chain).
    #[must_use]
    pub fn with_contract(mut self, contract: ContractRef) -> Self {
        self.contract = Some(Box::new(contract));
        self
    }

    /// The contract the refused proof named, when it was found (see [`ContractRef`]).
    pub fn contract(&self) -> Option<&ContractRef> {
        self.contract.as_deref()
    }

    /// A refusal of a contract-bound proof that a fleet's behaviour limits refuse
    /// (`contract.not_permitted.behaviour`), e.g. because the contract is suspended.
    pub fn behaviour(contract: ContractRef, detail: impl Into<String>) -> Self {
        Refusal {
            error: VerifyError::Contract {
                code: "contract.not_permitted.behaviour",
                detail: detail.into(),
            },
            in_evidence: false,
            contract: Some(Box::new(contract)),
        }
    }

    /// The refusal of a request one of whose calls finds every single-use grant that
    /// admits it (`used`) consumed before, anywhere in the fleet (`grant.used`, rule 14;
    /// nothing of the request is consumed); `contract` the accepted request's, counted
    /// against its behaviour limits.
    pub fn grant_used(used: &GrantChoice, contract: Option<&ContractInfo>) -> Self {
        Refusal {
            error: VerifyError::Contract {
                code: "grant.used",
                detail: format!(
                    "the single-use grant{} {} for {:?} {} used already (a grant is used up \
                     when a request under it is accepted, even if the server then fails; \
                     this refused request used none): ask the owner for a new grant",
                    if used.choices.len() == 1 { "" } else { "s" },
                    crate::grants::list_ids(&used.choices),
                    truncate(&used.tool),
                    if used.choices.len() == 1 {
                        "was"
                    } else {
                        "were all"
                    },
                ),
            },
            in_evidence: false,
            contract: contract.map(|c| {
                Box::new(ContractRef {
                    digest: c.digest.clone(),
                    owner: c.owner.clone(),
                    limits: c.limits,
                    chain: c.chain.clone(),
                })
            }),
        }
    }

    /// The stable code of the rule (e.g. `pop.replay`, `policy.measurements`).
    pub fn code(&self) -> &'static str {
        self.error.code()
    }

    /// Whether the request itself is malformed (HTTP 400) rather than refused (401/403).
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self.error,
            VerifyError::RequestUrl(_)
                | VerifyError::RequestUrlNotNormal { .. }
                | VerifyError::PlatformMismatch { .. }
        )
    }

    /// Whether the verifier could not decide (store outage: HTTP 503, fail closed).
    pub fn is_unavailable(&self) -> bool {
        matches!(self.error, VerifyError::ReplayStoreUnavailable(_))
    }

    /// The RFC 9449 `error` a resource server should put in `WWW-Authenticate: DPoP`.
    pub fn dpop_error(&self) -> &'static str {
        match self.error {
            VerifyError::EvidenceRequired { .. } | VerifyError::UnknownEvidence { .. } => {
                "use_attestation"
            }
            VerifyError::PopNonce(_) => "use_dpop_nonce",
            _ if matches!(
                self.code(),
                "token.tool"
                    | "contract.not_permitted.tool"
                    | "contract.not_permitted.resource"
                    | "contract.not_permitted.prompt"
                    | "grant.tool"
                    | "grant.used"
            ) || (self.code().starts_with("grant.arguments.")) =>
            {
                "insufficient_scope"
            }
            // Not a matter of a wider grant: the arguments must be read where they are
            // checked (a gate in proxy mode, a verifier given the body).
            _ if self.code() == "grant.arguments_unchecked" => "invalid_request",
            VerifyError::AccessToken { .. } => "invalid_token",
            VerifyError::NoAudience(_) | VerifyError::MeasurementsNotAllowed(_) => {
                "insufficient_measurements"
            }
            _ => "invalid_dpop_proof",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.code(), self.error)
    }
}

impl From<VerifyError> for Refusal {
    fn from(error: VerifyError) -> Self {
        Refusal {
            error,
            in_evidence: false,
            contract: None,
        }
    }
}

/// The outcome of [`Verifier::decide`].
#[derive(Debug, Clone)]
pub enum Decision {
    /// Every rule passed.
    Accept(Box<Accepted>),
    /// One rule refused.
    Refuse(Refusal),
}

impl Decision {
    /// The accepted request, if any.
    pub fn accepted(&self) -> Option<&Accepted> {
        match self {
            Decision::Accept(a) => Some(a),
            Decision::Refuse(_) => None,
        }
    }

    /// The refusal, if any.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Decision::Accept(_) => None,
            Decision::Refuse(r) => Some(r),
        }
    }
}

/// A request that passed rules 1–13 and waits for its replay check.
#[derive(Debug)]
pub struct Pending {
    accepted: Accepted,
    replay_key: Vec<u8>,
    remember_until: UnixTime,
}

impl Pending {
    /// The key to insert into the replay store.
    pub fn replay_key(&self) -> &[u8] {
        &self.replay_key
    }

    /// Until when the store must remember it (one second past the last instant at which
    /// the proof could be accepted).
    pub fn remember_until(&self) -> UnixTime {
        self.remember_until
    }

    /// What will be accepted if the replay check passes.
    pub fn accepted(&self) -> &Accepted {
        &self.accepted
    }

    /// Completes the decision with the store's answer to "was this key new?".
    pub fn finish(self, inserted: Result<bool, String>) -> Decision {
        match inserted {
            Ok(true) => Decision::Accept(Box::new(self.accepted)),
            Ok(false) => {
                let mut r: Refusal = VerifyError::Replay {
                    jti: self.accepted.claims.jti,
                }
                .into();
                r.contract = self.accepted.contract.map(|c| {
                    Box::new(ContractRef {
                        digest: c.digest,
                        owner: c.owner,
                        limits: c.limits,
                        chain: c.chain,
                    })
                });
                Decision::Refuse(r)
            }
            Err(e) => Decision::Refuse(VerifyError::ReplayStoreUnavailable(e).into()),
        }
    }
}

/// Stores a decision may consult.
#[derive(Clone, Copy)]
pub struct Stores<'a> {
    /// Seen `jti`s (memory or shared).
    pub replay: &'a dyn ReplayStore,
    /// The issuer of this verifier's (fleet's) nonces: DPoP nonces and SEV-SNP evidence
    /// nonces. Without it, rules that need a nonce refuse.
    pub nonces: Option<&'a NonceIssuer>,
}

/// Options that are the operator's, not the policy file's.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifierOptions {
    /// INSECURE, emulator tests only: accept QEMU's unsigned Nitro documents.
    pub insecure_emulator: bool,
}

/// Most SEV-SNP reports and TPM evidence whose first sighting is remembered
/// ([`SnpFreshness::FirstSeen`]).
const MAX_FIRST_SEEN: usize = 100_000;
/// Most verified contracts cached by digest.
const MAX_CONTRACTS: usize = 10_000;
/// Most status lists held.
const MAX_STATUS_LISTS: usize = 1_000;

/// A policy and the state built from it: trust stores, the attested-key cache, the
/// verified-contract cache and the status lists.
pub struct Verifier {
    policy: Policy,
    pop: PopVerifier,
    first_seen: Mutex<HashMap<String, UnixTime>>,
    contracts: Mutex<HashMap<String, Arc<VerifiedContract>>>,
    /// Verified delegation chains by their leaf's digest ([`crate::delegation`]).
    chains: Mutex<HashMap<String, Vec<crate::delegation::Cached>>>,
    status_lists: Mutex<HashMap<String, (Arc<VerifiedStatusList>, u64)>>,
    /// Status lists that verified contracts name: what a refresher should fetch.
    wanted: Mutex<std::collections::BTreeSet<String>>,
    /// The trusted issuers' keys (pinned in the policy, and fetched), by issuer.
    jwks: Mutex<Arc<HashMap<String, HeldJwks>>>,
}

/// The keys of one policy `[[issuer]]`: those pinned in the policy, and those last fetched
/// from its `jwks_uri`, used only while that fetch is at most `max_stale` seconds old.
#[derive(Clone)]
struct HeldJwks {
    pinned: Vec<crate::access_token::IssuerKey>,
    fetched: Vec<crate::access_token::IssuerKey>,
    fetched_at: Option<u64>,
    uri: Option<String>,
    max_stale: u64,
}

/// The keys held, as usable at `now`.
struct JwksAt<'a> {
    held: &'a HashMap<String, HeldJwks>,
    now: u64,
}

impl crate::access_token::IssuerKeys for JwksAt<'_> {
    fn key(&self, issuer: &str, kid: &str) -> Result<&crate::access_token::IssuerKey, VerifyError> {
        let h = self
            .held
            .get(issuer)
            .ok_or_else(|| crate::access_token::untrusted(issuer))?;
        if let Some(k) = h.pinned.iter().find(|k| k.kid == kid) {
            return Ok(k);
        }
        if let Some(uri) = &h.uri {
            let age = h.fetched_at.map(|t| self.now.saturating_sub(t));
            if age.is_none_or(|a| a > h.max_stale) {
                return Err(VerifyError::AccessToken {
                    code: "token.jwks_stale",
                    detail: format!(
                        "{issuer}'s keys from {uri} {}, so none of them is used (fails closed, \
                         [[issuer]] jwks_max_stale_secs = {}): this server must fetch {uri} \
                         again",
                        match age {
                            Some(a) => format!("were last fetched {a} s ago"),
                            None => "were never fetched".to_owned(),
                        },
                        h.max_stale
                    ),
                });
            }
        }
        h.fetched
            .iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| crate::access_token::unknown_key(issuer, kid))
    }
}

fn contract_err(code: &'static str, detail: impl Into<String>) -> Refusal {
    VerifyError::Contract {
        code,
        detail: detail.into(),
    }
    .into()
}

fn from_contract(e: &cada_contract::ContractError) -> Refusal {
    match e {
        // Its Display repeats the code, which the refusal shows already.
        cada_contract::ContractError::Grant { code, detail } => contract_err(code, detail.clone()),
        e => contract_err(e.code(), e.to_string()),
    }
}

impl Verifier {
    /// Builds the one verifier for `policy`: every binary goes through here.
    pub fn new(policy: Policy, options: VerifierOptions) -> Self {
        let mut nitro = NitroVerifier::new(policy.nitro_roots.clone());
        if options.insecure_emulator {
            nitro = nitro.insecure_accept_emulator_documents();
        }
        let snp = SnpVerifier::new(policy.snp_roots.clone());
        let config = PopConfig {
            skew_secs: policy.token.skew_secs,
            evidence_policy: policy.nitro.clone(),
            snp_policy: policy.snp.clone(),
            evidence_max_age_ms: Some(policy.evidence_max_age_ms),
            context: policy.context.clone(),
            ..PopConfig::default()
        };
        let pinned_jwks = policy
            .issuers
            .iter()
            .map(|i| {
                (
                    i.issuer.clone(),
                    HeldJwks {
                        pinned: i.keys.clone(),
                        fetched: Vec::new(),
                        fetched_at: None,
                        uri: i.jwks_uri.clone(),
                        max_stale: i.jwks_max_stale_secs,
                    },
                )
            })
            .collect();
        Verifier {
            pop: PopVerifier::new(
                EvidenceVerifier::new(nitro, snp).with_tpm(crate::tpm::TpmVerifier::new(
                    policy.tpm_roots.clone(),
                    policy.tpm.clone(),
                )),
                config,
            ),
            policy,
            first_seen: Mutex::new(HashMap::new()),
            contracts: Mutex::new(HashMap::new()),
            chains: Mutex::new(HashMap::new()),
            status_lists: Mutex::new(HashMap::new()),
            wanted: Mutex::new(std::collections::BTreeSet::new()),
            jwks: Mutex::new(Arc::new(pinned_jwks)),
        }
    }

    /// The status-list URLs that contracts seen so far name (at most 1,000): what a
    /// refresher fetches and hands to [`Verifier::install_status_list`].
    pub fn wanted_status_lists(&self) -> Vec<String> {
        self.wanted
            .lock()
            .map(|w| w.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// When the status list of `url` was fetched (seconds), if one is held.
    pub fn status_list_fetched_at(&self, url: &str) -> Option<u64> {
        self.status_lists
            .lock()
            .ok()
            .and_then(|m| m.get(url).map(|(_, t)| *t))
    }

    /// Takes a status list (compact `vc+jwt`) fetched at `fetched_at` (seconds): it must
    /// verify under the key of an owner some audience trusts, and succeed the list held for
    /// its URL ([`VerifiedStatusList::succeeds`]): the same list again counts as fetched
    /// now; a newer one replaces it; an older one, or one of the same `validFrom` that
    /// clears a revocation, is refused (`contract.status_rollback`) and the held list keeps
    /// its fetch time, so that it goes stale (and its contracts fail closed) unless the
    /// newest list is fetched again. Returns the list's URL.
    pub fn install_status_list(
        &self,
        compact: &str,
        fetched_at: u64,
        now: UnixTime,
    ) -> Result<String, Refusal> {
        self.take_status_list(compact, None, fetched_at, now)
    }

    /// [`Verifier::install_status_list`] for a list fetched from `url`: a list whose `id` is
    /// another URL is refused (`contract.status_mismatch`), so that what one URL serves
    /// never stands in for another's list.
    pub fn install_fetched_status_list(
        &self,
        url: &str,
        compact: &str,
        fetched_at: u64,
        now: UnixTime,
    ) -> Result<String, Refusal> {
        self.take_status_list(compact, Some(url), fetched_at, now)
    }

    fn take_status_list(
        &self,
        compact: &str,
        from: Option<&str>,
        fetched_at: u64,
        now: UnixTime,
    ) -> Result<String, Refusal> {
        let all = self.policy.all_owners();
        let list =
            StatusList::verify(compact, &all, now.as_secs()).map_err(|e| from_contract(&e))?;
        let url = list.id().to_owned();
        if let Some(from) = from.filter(|f| *f != url) {
            return Err(contract_err(
                "contract.status_mismatch",
                format!("{from} served the status list of {url}"),
            ));
        }
        let mut lists = self
            .status_lists
            .lock()
            .map_err(|_| contract_err("contract.status_stale", "status lists unavailable"))?;
        let list = match lists.get(&url) {
            Some((held, _)) => match list.succeeds(held).map_err(|e| from_contract(&e))? {
                cada_contract::Succession::Same => Arc::clone(held),
                cada_contract::Succession::Newer => Arc::new(list),
            },
            None if lists.len() >= MAX_STATUS_LISTS => {
                return Err(contract_err(
                    "contract.status_stale",
                    format!("more than {MAX_STATUS_LISTS} status lists held"),
                ));
            }
            None => Arc::new(list),
        };
        lists.insert(url.clone(), (list, fetched_at));
        Ok(url)
    }

    /// Takes over the status lists `previous` holds (a verifier built for an earlier
    /// policy, replaced on reload), with their fetch times, so that a reload neither
    /// forgets a revocation nor lets an older list in again. Lists of owners the new policy
    /// does not trust are left behind.
    pub fn keep_status_lists_from(&self, previous: &Verifier) {
        let all = self.policy.all_owners();
        let (Ok(old), Ok(mut lists)) = (previous.status_lists.lock(), self.status_lists.lock())
        else {
            return;
        };
        for (url, (list, at)) in old.iter() {
            if lists.len() >= MAX_STATUS_LISTS {
                break;
            }
            if all.is_trusted(list.issuer()) {
                lists.entry(url.clone()).or_insert((Arc::clone(list), *at));
            }
        }
    }

    /// The policy's issuers whose JWKS is fetched: (issuer, `jwks_uri`).
    pub fn wanted_jwks(&self) -> Vec<(String, String)> {
        self.policy
            .issuers
            .iter()
            .filter_map(|i| i.jwks_uri.clone().map(|u| (i.issuer.clone(), u)))
            .collect()
    }

    /// Takes a JWKS of `issuer` (a policy `[[issuer]]`) fetched at `now`: its keys replace
    /// the fetched ones, beside those pinned in the policy (which win on a shared `kid`),
    /// and are used until `now` + the issuer's `jwks_max_stale_secs` unless fetched again.
    /// A JWKS that does not parse changes nothing (the held keys keep ageing). Returns how
    /// many keys the issuer has now.
    pub fn install_jwks_at(
        &self,
        issuer: &str,
        json: &[u8],
        now: UnixTime,
    ) -> Result<usize, String> {
        if !self.policy.issuers.iter().any(|i| i.issuer == issuer) {
            return Err(format!("{issuer} is not a policy [[issuer]]"));
        }
        let keys = crate::access_token::parse_jwks(json)?;
        let mut held = self
            .jwks
            .lock()
            .map_err(|_| "JWKS lock poisoned".to_string())?;
        let mut next = (**held).clone();
        let Some(h) = next.get_mut(issuer) else {
            return Err(format!("{issuer} is not a policy [[issuer]]"));
        };
        h.fetched = keys;
        h.fetched_at = Some(now.as_secs());
        let n = h.pinned.len() + h.fetched.len();
        *held = Arc::new(next);
        Ok(n)
    }

    /// [`Verifier::install_jwks_at`] the current time.
    pub fn install_jwks(&self, issuer: &str, json: &[u8]) -> Result<usize, String> {
        self.install_jwks_at(issuer, json, UnixTime::now())
    }

    /// When the JWKS of `issuer` was last fetched (seconds), if ever.
    pub fn jwks_fetched_at(&self, issuer: &str) -> Option<u64> {
        self.jwks
            .lock()
            .ok()
            .and_then(|m| m.get(issuer).and_then(|h| h.fetched_at))
    }

    /// Rule 13: where the audience covering `url` names owners, the proof's contract, and
    /// the single-use grants the request's calls use (`args`: the arguments of its
    /// `tools/call`s, when known).
    #[expect(
        clippy::too_many_arguments,
        reason = "one rule's inputs; a struct for them would be built at its one call"
    )]
    fn check_contract(
        &self,
        url: &HttpUrl,
        req: &Request<'_>,
        permit: Permit<'_>,
        args: Option<&[ToolArguments]>,
        key: &AttestedKey,
        claims: &PopClaims,
        now: UnixTime,
    ) -> Result<Option<(ContractInfo, Vec<GrantChoice>)>, Refusal> {
        let Some(aud) = self.policy.audience_for(url) else {
            return Ok(None);
        };
        let Some(owners) = &aud.owners else {
            return Ok(None);
        };
        let now_s = now.as_secs();
        let Some(dtc) = claims.cada.dtc.as_deref() else {
            return Err(contract_err(
                "contract.missing",
                format!(
                    "{} needs a trust contract of {}; the proof names none (cada.dtc): lock the \
                     enclave to its owner and install the owner's contract",
                    aud.prefix,
                    owners.dids().join(", ")
                ),
            ));
        };
        let Some(owner) = key.owner.as_deref() else {
            return Err(contract_err(
                "contract.owner_mismatch",
                "the evidence names no owner: this enclave is not locked to an owner",
            ));
        };
        if !owners.is_trusted(owner) {
            return Err(contract_err(
                "contract.untrusted_owner",
                format!(
                    "the enclave is locked to {owner}, which is not an owner trusted for {} \
                     (trusted: {})",
                    aud.prefix,
                    owners.dids().join(", ")
                ),
            ));
        }
        // A contract (or a delegation chain `C0~D1~…~Dn`, root first) sent with the request
        // must end in the one the proof names, cached or not.
        if let Some(text) = req.contract {
            let leaf = text.rsplit('~').next().unwrap_or(text);
            let got = cada_contract::digest_of(leaf);
            if got != dtc {
                return Err(contract_err(
                    "contract.dtc_mismatch",
                    format!(
                        "the proof names contract {dtc}, the CADA-Contract header carries {got}{}",
                        if text.contains('~') {
                            " (the last link of its chain)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        }
        // A chain verified before, for this audience (each audience has its own delegation
        // rules), or for another one (checked again for this one from the chain it holds).
        let (chain_here, chain_elsewhere) = self
            .chains
            .lock()
            .ok()
            .and_then(|m| {
                m.get(dtc).map(|v| {
                    (
                        v.iter()
                            .find(|c| c.audience == aud.prefix.as_str())
                            .cloned(),
                        v.first().map(|c| c.chain.clone()),
                    )
                })
            })
            .unwrap_or((None, None));
        // A contract sent with the request must be exactly the cached chain (every link,
        // not only the leaf the proof names), else it is decided as a verifier that has
        // not seen the chain decides it.
        let (chain_here, chain_elsewhere) = match req.contract {
            Some(text)
                if chain_elsewhere.as_ref().is_some_and(|c| {
                    !text
                        .split('~')
                        .map(cada_contract::digest_of)
                        .eq(c.digests().into_iter().map(str::to_owned))
                }) =>
            {
                (None, None)
            }
            _ => (chain_here, chain_elsewhere),
        };
        let fresh = match (chain_here, chain_elsewhere) {
            (Some(c), _) => Ok(Some(c)),
            (None, Some(verified)) => crate::delegation::check_verified(
                &self.pop,
                aud,
                verified,
                self.policy.token.skew_secs,
                now,
            )
            .map(|c| Some(Arc::new(c))),
            (None, None) => match req.contract.filter(|t| t.contains('~')) {
                Some(text) => crate::delegation::check(
                    &self.pop,
                    aud,
                    owners,
                    text,
                    self.policy.token.skew_secs,
                    now,
                )
                .map(|c| Some(Arc::new(c))),
                None => Ok(None),
            },
        };
        let chained = match fresh? {
            Some(c) => {
                if let Ok(mut m) = self.chains.lock() {
                    if !m.contains_key(dtc) && m.len() >= MAX_CONTRACTS {
                        m.retain(|_, v| v.iter().any(|c| c.leaf().check_time(now_s).is_ok()));
                    }
                    if m.contains_key(dtc) || m.len() < MAX_CONTRACTS {
                        let v = m.entry(dtc.to_owned()).or_default();
                        if !v.iter().any(|x| x.audience == c.audience) {
                            if v.len() >= crate::delegation::MAX_AUDIENCES_PER_CHAIN {
                                v.remove(0);
                            }
                            v.push(Arc::clone(&c));
                        }
                    }
                }
                Some(c)
            }
            None if !claims.cada.dch.is_empty() && req.contract.is_none() => {
                return Err(contract_err(
                    "contract.required",
                    format!(
                        "this server does not know the delegation chain of contract {dtc}: \
                         send it once in the CADA-Contract header (root~…~leaf)"
                    ),
                ))
            }
            None => None,
        };
        let single = match (
            &chained,
            self.contracts.lock().ok().and_then(|m| m.get(dtc).cloned()),
            req.contract,
        ) {
            (Some(_), _, _) => None,
            (None, Some(c), _) => Some(c),
            (None, None, Some(compact)) => {
                let c = Arc::new(
                    Contract::verify(compact, owners, now_s).map_err(|e| from_contract(&e))?,
                );
                if let Ok(mut m) = self.contracts.lock() {
                    if m.len() >= MAX_CONTRACTS {
                        m.retain(|_, c| c.check_time(now_s).is_ok());
                    }
                    if m.len() < MAX_CONTRACTS {
                        m.insert(dtc.to_owned(), c.clone());
                    }
                }
                Some(c)
            }
            (None, None, None) => {
                return Err(contract_err(
                    "contract.required",
                    format!(
                        "this server does not know contract {dtc}: send it once in the \
                         CADA-Contract header"
                    ),
                ))
            }
        };
        // Every contract of the chain, root first (the one contract alone, when not
        // delegated); the leaf permits the request.
        let contracts: Vec<&VerifiedContract> = match (&chained, &single) {
            (Some(c), _) => c.chain.contracts().collect(),
            (None, Some(c)) => vec![c.as_ref()],
            (None, None) => Vec::new(),
        };
        let Some(&contract) = contracts.last() else {
            return Err(contract_err("contract.required", "no contract"));
        };
        // The links the fleet charges: a delegated chain's, or an owner contract's own when
        // it may delegate (its calls and its delegations' share its budget and rate).
        let links: Vec<LinkInfo> = match &chained {
            Some(c) => c.links.clone(),
            None if contract.delegation_rules().is_some() => {
                vec![crate::delegation::link_info(contract, 0)]
            }
            None => Vec::new(),
        };
        if contract.owner() != owner {
            return Err(contract_err(
                "contract.owner_mismatch",
                format!(
                    "the contract is signed by {}, the enclave is locked to {owner}",
                    contract.owner()
                ),
            ));
        }
        if !owners.is_trusted(contract.owner()) {
            return Err(contract_err(
                "contract.untrusted_owner",
                format!(
                    "{} is not an owner trusted for {}",
                    contract.owner(),
                    aud.prefix
                ),
            ));
        }
        let found = |e: &cada_contract::ContractError| {
            let mut r = from_contract(e);
            r.contract = Some(Box::new(ContractRef {
                digest: contract.digest().to_owned(),
                owner: contract.owner().to_owned(),
                limits: *contract.limits(),
                chain: links.clone(),
            }));
            r
        };
        let found_err = |e: VerifyError| {
            let mut r = Refusal::from(e);
            r.contract = Some(Box::new(ContractRef {
                digest: contract.digest().to_owned(),
                owner: contract.owner().to_owned(),
                limits: *contract.limits(),
                chain: links.clone(),
            }));
            r
        };
        contract
            .check_subject(&key.did, &key.measurements)
            .map_err(|e| found(&e))?;
        // The proof names the chain above its contract (`cada.dch`, root first), exactly.
        let above: Vec<&str> = contracts[..contracts.len() - 1]
            .iter()
            .map(|c| c.digest())
            .collect();
        if claims
            .cada
            .dch
            .iter()
            .map(String::as_str)
            .ne(above.iter().copied())
        {
            return Err(found_err(crate::delegation::refuse(
                "delegation.link",
                format!(
                    "the proof names the chain [{}] above its contract, the contract's chain is \
                     [{}]: sign proofs under the chain installed in the enclave",
                    claims.cada.dch.join(", "),
                    above.join(", ")
                ),
            )));
        }
        // Every link live now, and not revoked by a fresh status list (revoking a link
        // revokes every contract below it). Every link's list is wanted by the refresher,
        // also while an earlier one is not held yet.
        if let Ok(mut w) = self.wanted.lock() {
            for entry in contracts.iter().filter_map(|c| c.status_entry()) {
                if w.len() < MAX_STATUS_LISTS && !w.contains(&entry.list) {
                    w.insert(entry.list.clone());
                }
            }
        }
        for (depth, c) in contracts.iter().enumerate() {
            let at_depth = |e: &cada_contract::ContractError| {
                let mut r = found(e);
                if contracts.len() > 1 {
                    if let VerifyError::Contract { detail, .. } = &mut r.error {
                        *detail = format!("link {depth} of the chain ({}): {detail}", c.digest());
                    }
                }
                r
            };
            if contracts.len() > 1 {
                c.check_time(now_s).map_err(|e| at_depth(&e))?;
            }
            let Some(entry) = c.status_entry() else {
                continue;
            };
            let held = self
                .status_lists
                .lock()
                .ok()
                .and_then(|m| m.get(&entry.list).cloned());
            let Some((list, fetched_at)) = held else {
                return Err(contract_err(
                    "contract.status_stale",
                    format!(
                        "no status list from {} is held, so revocation cannot be checked (fails \
                         closed)",
                        entry.list
                    ),
                ));
            };
            c.check_status(
                &list,
                fetched_at,
                now_s,
                self.policy.contracts.status_max_staleness_secs,
            )
            .map_err(|e| at_depth(&e))?;
        }
        match permit {
            Permit::Request(method, []) => contract.permits(
                &RequestView {
                    method,
                    url,
                    ctx: &claims.cada.ctx,
                    scopes: &[],
                    call: None,
                },
                now_s,
            ),
            Permit::Request(method, calls) => calls.iter().try_for_each(|c| {
                contract.permits(
                    &RequestView {
                        method,
                        url,
                        ctx: &claims.cada.ctx,
                        scopes: &[],
                        call: Some(c),
                    },
                    now_s,
                )
            }),
            Permit::Token(scopes, []) => {
                contract.permits_token(url, scopes, &claims.cada.ctx, now_s)
            }
            Permit::Token(scopes, wanted) => crate::grants::permits_token_details(
                contract,
                url,
                scopes,
                wanted,
                aud.checks_arguments,
                &claims.cada.ctx,
                now_s,
            ),
        }
        .map_err(|e| found(&e))?;
        // 13 (continued): a call granted only by a one-transaction grant meets its
        // argument limits; the single-use grants used are consumed at rule 14.
        let single_use = match permit {
            Permit::Request(_, calls) => crate::grants::check_contract_calls(
                contract,
                url,
                calls,
                args,
                // Remembered past the grant's end by the clock skew, so that a gate whose
                // clock lags still finds it used (review grants-1, I6).
                contract
                    .valid_until()
                    .saturating_add(self.policy.token.skew_secs),
            )
            .map_err(|e| found(&e))?,
            Permit::Token(..) => Vec::new(),
        };
        Ok(Some((
            ContractInfo {
                owner: contract.owner().to_owned(),
                id: contract.id().to_owned(),
                digest: contract.digest().to_owned(),
                scopes: contract.scopes().to_vec(),
                tools: contract.tools().to_vec(),
                resources: contract.resources().to_vec(),
                prompts: contract.prompts().to_vec(),
                required_ctx: contract.required_ctx().to_vec(),
                remaining_secs: contract.remaining(now_s),
                limits: *contract.limits(),
                authorization_details: contract.authorization_details().to_vec(),
                chain: links,
            },
            single_use,
        )))
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Number of attested keys remembered.
    pub fn known_keys(&self) -> usize {
        self.pop.known_keys()
    }

    /// Verifies evidence (optionally for a verifier-chosen `nonce`), applies the freshness
    /// rules of its platform, and remembers the key it binds.
    pub fn admit_evidence(
        &self,
        env: &EvidenceEnvelope,
        nonce: Option<&[u8]>,
        now: UnixTime,
        nonces: Option<&NonceIssuer>,
    ) -> Result<AttestedKey, Refusal> {
        let in_evidence = |error| Refusal {
            error,
            in_evidence: true,
            contract: None,
        };
        let mut key = self
            .pop
            .verify_evidence(env, nonce, now)
            .map_err(in_evidence)?;
        self.bound_age(env, &mut key, now, nonces)
            .map_err(in_evidence)?;
        self.pop.remember(&key, now);
        Ok(key)
    }

    /// SEV-SNP reports and TPM attestations carry no time: bound their age by a verifier
    /// nonce or by when this verifier first saw them (`[snp] freshness`, `[tpm] freshness`).
    fn bound_age(
        &self,
        env: &EvidenceEnvelope,
        key: &mut AttestedKey,
        now: UnixTime,
        nonces: Option<&NonceIssuer>,
    ) -> Result<(), VerifyError> {
        let (freshness, what) = match env.platform {
            Platform::SevSnp | Platform::SimSnp => (self.policy.snp_freshness, "SEV-SNP"),
            Platform::Tpm => (self.policy.tpm_freshness, "TPM"),
            Platform::Nitro | Platform::Sim => return Ok(()),
        };
        let max_age = self.policy.evidence_max_age_ms;
        let since = match freshness {
            SnpFreshness::VerifierNonce => {
                let issued = nonces
                    .and_then(|n| n.issued_at(&env.nonce))
                    .ok_or_else(|| {
                        VerifyError::EvidenceNotFresh(format!(
                            "{what} evidence must carry a nonce this verifier issued (GET \
                             /v1/nonce, then ask the enclave for evidence with it)"
                        ))
                    })?;
                UnixTime::from_secs(issued)
            }
            SnpFreshness::FirstSeen => {
                let mut seen = self.first_seen.lock().map_err(|_| {
                    VerifyError::EvidenceNotFresh("first-seen table unavailable".into())
                })?;
                if seen.len() >= MAX_FIRST_SEEN {
                    seen.retain(|_, t| t.as_millis().saturating_add(max_age) >= now.as_millis());
                }
                if seen.len() >= MAX_FIRST_SEEN {
                    return Err(VerifyError::EvidenceNotFresh(format!(
                        "too many {what} reports in flight to track their age"
                    )));
                }
                *seen.entry(key.att.clone()).or_insert(now)
            }
        };
        let until = UnixTime::from_millis(since.as_millis().saturating_add(max_age));
        if until < now {
            return Err(VerifyError::EvidenceNotFresh(format!(
                "the {what} evidence is older than evidence.max_age_secs ({} s)",
                max_age / 1000
            )));
        }
        key.expires = key.expires.min(until);
        Ok(())
    }

    /// Rules 1–13 (everything but the replay store).
    pub fn evaluate(
        &self,
        req: &Request<'_>,
        now: UnixTime,
        nonces: Option<&NonceIssuer>,
    ) -> Result<Pending, Refusal> {
        self.evaluate_for(req, None, now, nonces)
    }

    /// Rules 1–13 for a token exchange at an STS: rules 1–10 check the proof against the
    /// token-endpoint request `req`, rules 11–13 check `exchange.resource` — the audience
    /// covering it, the measurements allowed there, and the contract (`req.contract`, the
    /// RFC 8693 subject token, or one cached by the digest the proof names), which must
    /// grant the resource and every scope asked for. Unlike a request, an exchange always
    /// needs a contract: an audience that names no owners is refused
    /// (`contract.untrusted_owner`). Rule 14 as for any request ([`Pending::finish`]).
    pub fn evaluate_exchange(
        &self,
        req: &Request<'_>,
        exchange: &Exchange<'_>,
        now: UnixTime,
        nonces: Option<&NonceIssuer>,
    ) -> Result<Pending, Refusal> {
        self.evaluate_for(req, Some(exchange), now, nonces)
    }

    fn evaluate_for(
        &self,
        req: &Request<'_>,
        exchange: Option<&Exchange<'_>>,
        now: UnixTime,
        nonces: Option<&NonceIssuer>,
    ) -> Result<Pending, Refusal> {
        // 1. The request URL: its path exactly as the server will route it.
        let url = request_url(req.url)?;
        // 2–9. The proof, its key and its evidence.
        let pop_req = PopRequest {
            method: req.method,
            url: url.as_str(),
            access_token: req.access_token,
            expected_nonce: None,
            evidence: req.evidence,
        };
        // 5. An access token of a trusted issuer may attest the key instead of evidence.
        let token = match req.access_token {
            Some(at)
                if exchange.is_none()
                    && !self.policy.issuers.is_empty()
                    && crate::access_token::is_jwt_access_token(at) =>
            {
                let jwks = self
                    .jwks
                    .lock()
                    .map(|j| Arc::clone(&j))
                    .map_err(|_| VerifyError::Binding("JWKS lock poisoned".into()))?;
                Some(crate::access_token::verify(
                    at,
                    &JwksAt {
                        held: &jwks,
                        now: now.as_secs(),
                    },
                    &url,
                    now,
                    self.policy.token.skew_secs,
                )?)
            }
            _ => None,
        };
        let evidence_failed = std::cell::Cell::new(false);
        let admit = |env: &EvidenceEnvelope| {
            self.admit_evidence(env, None, now, nonces).map_err(|r| {
                evidence_failed.set(true);
                r.error
            })
        };
        let checked = match &token {
            Some((_, key)) => self.pop.check_with_token_key(req.dpop, &pop_req, now, key),
            None => self.pop.check_with(req.dpop, &pop_req, now, &admit),
        };
        let (pop, remember_until) = checked.map_err(|error| Refusal {
            error,
            in_evidence: evidence_failed.get(),
            contract: None,
        })?;
        // 6 (continued). The body and its MCP calls.
        check_body(req.body, &pop.claims, self.policy.token.require_body_digest)?;
        // The MCP calls the request makes: the body's, else those the proof names. Those
        // that name a tool, resource or prompt need a grant (rule 13); every one, naming
        // something or not, is put to the contract, since a contract whose authority is
        // only its one-transaction grants permits nothing but its covered tools/calls —
        // also beside one in a batch (review grants-1, finding 7).
        let calls: Vec<&McpCall> = match req.body.and_then(|b| b.calls.as_ref()) {
            Some(calls) => calls.iter().collect(),
            None => pop.claims.cada.mcp.iter().collect(),
        };
        // The arguments of the body's tools/calls, when the caller read them with the calls.
        let args: Option<&[ToolArguments]> = req
            .body
            .filter(|b| b.calls.is_some())
            .and_then(|b| b.tool_arguments.as_deref());
        // 10. Server nonce.
        if self.policy.token.require_nonce {
            let ok = match (pop.claims.nonce.as_deref(), nonces) {
                (Some(n), Some(issuer)) => {
                    issuer.check(n, now.as_secs(), self.policy.token.nonce_ttl_secs)
                }
                _ => false,
            };
            if !ok {
                return Err(VerifyError::PopNonce(
                    "is missing, expired or not issued by this server",
                )
                .into());
            }
        }
        // 11–13 were the issuer's, for the resource the token names — unless the URL lies
        // under an audience of this policy narrower than that resource, whose rules the
        // issuer never applied.
        if let Some((claims, _)) = token {
            // 13, for a token: its one-transaction grants (RFC 9396), read exactly.
            let details = match &claims.authorization_details {
                None => Vec::new(),
                Some(raw) => {
                    crate::grants::token_details(raw).map_err(|e| VerifyError::AccessToken {
                        code: "token.malformed",
                        detail: format!("the token's {e}"),
                    })?
                }
            };
            // 13, for a token whose authority is only its one-transaction grants (what an
            // STS mints for exactly some transactions, asked without scopes: no scope, no
            // tools, resources or prompts): like a grant-only contract, it permits its
            // covered tools/calls and nothing else — no call naming nothing beside them
            // (one naming a tool, resource or prompt is token.tool's below), no request
            // without one (review grants-1, finding 7).
            let details_only = !details.is_empty()
                && claims.scope.trim().is_empty()
                && claims.cada.tools.is_empty()
                && claims.cada.resources.is_empty()
                && claims.cada.prompts.is_empty();
            if details_only {
                let other = calls.iter().find(|c| c.target.is_none());
                if other.is_some() || calls.is_empty() {
                    return Err(contract_err(
                        "grant.tool",
                        format!(
                            "the token carries only one-transaction grants (for {}); {} is \
                             not a tools/call they cover: make it with a token or contract \
                             that grants it",
                            details
                                .iter()
                                .take(8)
                                .map(|d| truncate(&d.tool))
                                .collect::<Vec<_>>()
                                .join(", "),
                            match other {
                                Some(c) => format!("the call {:?}", truncate(&c.method)),
                                None => format!("{} {}", req.method, url.as_str()),
                            }
                        ),
                    ));
                }
            }
            // 13, for a token: the contract's tools, resources and prompts travel in it.
            if let Some(c) = calls.iter().find(|c| {
                !token_grants(&claims.cada, c) && !crate::grants::covers(&details, &url, c)
            }) {
                return Err(VerifyError::AccessToken {
                    code: "token.tool",
                    detail: format!(
                        "{} {:?} is not granted by the token's contract (tools: {}; resources: {}; prompts: {})",
                        c.method,
                        truncate(c.target.as_deref().unwrap_or("")),
                        claims.cada.tools.join(", "),
                        claims.cada.resources.join(", "),
                        claims.cada.prompts.join(", ")
                    ),
                }
                .into());
            }
            // 13, for a token: so do the ctx keys the contract requires of every proof;
            // the STS checked them on the exchange proof only.
            if let Some(k) = claims
                .cada
                .required_ctx
                .iter()
                .find(|k| !pop.claims.cada.ctx.contains_key(*k))
            {
                return Err(contract_err(
                    "contract.not_permitted.ctx",
                    format!(
                        "the token's contract requires ctx key {:?} of every proof (required: \
                         {}); this proof does not carry it",
                        truncate(k),
                        claims.cada.required_ctx.join(", ")
                    ),
                ));
            }
            // 13, for a token: a call only a detail grants meets its argument limits.
            let single_use = crate::grants::check_token_calls(
                &details,
                &claims.cada.tools,
                &url,
                &calls,
                args,
                claims.owner().unwrap_or_default(),
                // Remembered as long as anything carrying the grant is accepted: the token
                // until exp + skew, its grant until dtc_exp (review grants-1, finding 2).
                claims
                    .cada
                    .dtc_exp
                    .unwrap_or(0)
                    .max(claims.exp)
                    .saturating_add(self.policy.token.skew_secs),
            )
            .map_err(|e| from_contract(&e))?;
            if let Some(a) = self.policy.audience_for(&url) {
                let aud_specificity = UrlPrefix::parse(&claims.aud).map_or(0, |p| p.specificity());
                if a.prefix.specificity() > aud_specificity {
                    return Err(VerifyError::AccessToken {
                        code: "token.audience",
                        detail: format!(
                            "{} lies under the audience {}, narrower than the token's {}: ask \
                             the issuer for a token for {}",
                            url.as_str(),
                            a.prefix,
                            claims.aud,
                            a.prefix
                        ),
                    }
                    .into());
                }
            }
            return Ok(Pending {
                replay_key: replay_key(&pop.key.jkt, &pop.claims.jti),
                remember_until,
                accepted: Accepted {
                    key: pop.key,
                    claims: pop.claims,
                    admission: Admission::Token {
                        issuer: claims.iss.clone(),
                    },
                    contract: None,
                    token: Some(claims),
                    single_use,
                },
            });
        }
        // 11–13 apply to the request's URL, or to the resource a token is asked for.
        let (target, permit) = match exchange {
            None => (url, Permit::Request(req.method, &calls)),
            Some(x) => {
                // The resource becomes the token's `aud`: in normal form, without query
                // (RFC 8707 §2: a query would be dropped from the audience, not matched), and
                // no wider than an audience with rules of its own.
                if x.resource.contains('?') {
                    return Err(VerifyError::RequestUrl(format!(
                        "resource {}: [url.query] a resource carries no query (RFC 8707 §2); \
                         name the URL without it",
                        truncate(x.resource)
                    ))
                    .into());
                }
                let resource =
                    HttpUrl::parse_canonical(x.resource).map_err(|e| unusable_resource(&e))?;
                let prefix =
                    UrlPrefix::parse(resource.as_str()).map_err(|e| unusable_resource(&e))?;
                if let Some(a) = self.policy.narrower_audience(&prefix) {
                    return Err(VerifyError::AccessToken {
                        code: "token.resource",
                        detail: format!(
                            "a token for {} would also cover the audience {}, which has rules \
                             of its own: ask for a token for a resource under one audience",
                            resource.as_str(),
                            a.prefix
                        ),
                    }
                    .into());
                }
                (resource, Permit::Token(x.scopes, x.authorization_details))
            }
        };
        // 11–12. Audience and measurements.
        let admission = self.admission(&target, &pop.key)?;
        // 13. The owner's contract, where the audience requires one (always, for a token).
        let checked =
            self.check_contract(&target, req, permit, args, &pop.key, &pop.claims, now)?;
        let (contract, single_use) = match checked {
            Some((c, u)) => (Some(c), u),
            None => (None, Vec::new()),
        };
        if exchange.is_some() && contract.is_none() {
            return Err(contract_err(
                "contract.untrusted_owner",
                format!(
                    "no owner is trusted for {}: tokens are issued only under an owner's \
                     contract, so the audience covering the resource must list owners",
                    target.as_str()
                ),
            ));
        }
        Ok(Pending {
            replay_key: replay_key(&pop.key.jkt, &pop.claims.jti),
            remember_until,
            accepted: Accepted {
                key: pop.key,
                claims: pop.claims,
                admission,
                contract,
                token: None,
                single_use,
            },
        })
    }

    /// Rules 1, 11 and 12 alone, for evidence presented without a proof
    /// (`cada-verify evidence --audience`): is `url` an absolute URL, does an audience cover
    /// it, and are `key`'s measurements allowed there?
    pub fn check_audience(&self, url: &str, key: &AttestedKey) -> Result<Admission, Refusal> {
        let url = HttpUrl::parse_normalized(url)
            .map_err(|e| VerifyError::RequestUrl(format!("{}: {e}", truncate(url))))?;
        self.admission(&url, key)
    }

    /// Rules 11–12: the audience that covers `url` and its measurement sets.
    fn admission(&self, url: &HttpUrl, key: &AttestedKey) -> Result<Admission, Refusal> {
        match self.policy.check_measurements(url, &key.measurements) {
            MeasurementVerdict::Allowed { prefix, set } => Ok(Admission::Audience {
                audience: prefix,
                set,
            }),
            MeasurementVerdict::AnyAllowed => Ok(Admission::AnyMeasurement),
            MeasurementVerdict::NoAudience => Err(VerifyError::NoAudience(url.to_string()).into()),
            MeasurementVerdict::NotAllowed { detail, .. } => {
                Err(VerifyError::MeasurementsNotAllowed(detail).into())
            }
        }
    }

    /// Every rule, in the documented order, with a synchronous replay store.
    pub fn decide(&self, req: &Request<'_>, now: UnixTime, stores: Stores<'_>) -> Decision {
        match self.evaluate(req, now, stores.nonces) {
            Err(r) => Decision::Refuse(r),
            Ok(p) => {
                let inserted = stores
                    .replay
                    .insert_new(p.replay_key(), p.remember_until(), now);
                match p.finish(inserted) {
                    Decision::Accept(a) => consume_single_use(a, stores.replay, now),
                    refused => refused,
                }
            }
        }
    }
}

/// Rule 14, continued: consumes one single-use grant per call of `a` that only such
/// grants admit, in `store` ([`crate::grants::consume_all`]: the first choice not used
/// before; all of the request's or none, what was taken given back on a refusal); a call
/// whose choices were all used refuses (`grant.used`), a store failure refuses as
/// unavailable.
fn consume_single_use(a: Box<Accepted>, store: &dyn ReplayStore, now: UnixTime) -> Decision {
    let consumed = crate::grants::consume_all(
        &a.single_use,
        |u| {
            store
                .insert_new(u.store_key().as_bytes(), UnixTime::from_secs(u.until), now)
                .map(|fresh| fresh.then_some(()))
        },
        |u, ()| {
            // Not given back: the grant stays used (fails closed).
            let _ = store.remove(u.store_key().as_bytes());
        },
    );
    match consumed {
        Ok(()) => Decision::Accept(a),
        Err(NotConsumed::Used(call)) => {
            Decision::Refuse(Refusal::grant_used(&call, a.contract.as_ref()))
        }
        Err(NotConsumed::Store(e)) => {
            Decision::Refuse(VerifyError::ReplayStoreUnavailable(e).into())
        }
    }
}

/// Whether an access token's `cada` claim grants one MCP call (rule 13 for tokens): the
/// contract's table ([`McpCall::grant_needed`]) and resource matcher.
fn token_grants(at: &cada_protocol::access_token::CadaAt, c: &McpCall) -> bool {
    use cada_protocol::mcp::GrantNeeded;
    use cada_protocol::resource_uri::{granted, template_granted};
    match c.grant_needed() {
        GrantNeeded::Nothing => true,
        GrantNeeded::Tool(t) => at.tools.iter().any(|g| g == t),
        GrantNeeded::Prompt(p) => at.prompts.iter().any(|g| g == p),
        GrantNeeded::Resource(r) => granted(&at.resources, r),
        GrantNeeded::ResourceTemplate(t) => template_granted(&at.resources, t),
        GrantNeeded::Unknown => false,
    }
}

/// Rule 6, continued: `cada.bd` against the body's digest and `cada.mcp` against its calls.
/// Without a body (the caller does not know it), only `require_body_digest` is checked.
fn check_body(
    body: Option<&RequestBody>,
    claims: &PopClaims,
    require: bool,
) -> Result<(), VerifyError> {
    match (body, claims.cada.bd.as_deref()) {
        (Some(b), Some(bd)) if b.digest != bd => {
            return Err(VerifyError::PopBody(
                "the proof was made for another body (cada.bd differs from the SHA-256 of the \
                 body received)"
                    .into(),
            ))
        }
        (Some(_), Some(_)) => {}
        (None, _) if require => {
            return Err(VerifyError::PopBody(
                "the policy requires proofs bound to the body, but the caller did not give the \
                 body's digest"
                    .into(),
            ))
        }
        (Some(_), None) if require => {
            return Err(VerifyError::PopBody(
                "the policy requires proofs bound to the body: the proof has no cada.bd (send \
                 the body's digest when asking for the proof)"
                    .into(),
            ))
        }
        _ => {}
    }
    if let (Some(calls), false) = (
        body.and_then(|b| b.calls.as_ref()),
        claims.cada.mcp.is_empty(),
    ) {
        if *calls != claims.cada.mcp {
            let show = |c: &[McpCall]| {
                c.iter()
                    .take(4)
                    .map(|c| match &c.target {
                        Some(t) => format!("{} {}", c.method, truncate(t)),
                        None => c.method.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(VerifyError::PopMcp(format!(
                "the proof was signed for [{}], the body calls [{}]",
                show(&claims.cada.mcp),
                show(calls)
            )));
        }
    }
    Ok(())
}

/// Rule 1: the request URL, its path strict and already in normal form
/// ([`HttpUrl::parse_request`]); its origin may be spelled in any case, its query is not
/// matched.
fn request_url(url: &str) -> Result<HttpUrl, VerifyError> {
    HttpUrl::parse_request(url).map_err(|e| match e {
        cada_protocol::ProtocolError::Url(u) if u.normal_form().is_some() => {
            VerifyError::RequestUrlNotNormal {
                url: truncate(url.split_once('?').map_or(url, |(a, _)| a)),
                normal: u.normal_form().unwrap_or_default().to_owned(),
            }
        }
        e => VerifyError::RequestUrl(format!("{}: [{}] {e}", truncate(url), e.code())),
    })
}

/// `token.resource`: the resource of an exchange is not usable as a token's `aud`; the
/// message names its normal form when it has one (`https://host` → `https://host/`: a
/// whole origin is written with its `/` on the wire).
fn unusable_resource(e: &cada_protocol::ProtocolError) -> VerifyError {
    VerifyError::AccessToken {
        code: "token.resource",
        detail: format!(
            "the resource cannot be a token's audience: {e}; a resource is an absolute \
             http(s) URL in normal form without query, e.g. https://api.example.com/v1, or \
             https://api.example.com/ for a whole origin"
        ),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(url: &str) -> &'static str {
        match request_url(url) {
            Ok(_) => "ok",
            Err(e) => e.code(),
        }
    }

    /// Issue 21 item 1: a request path that is not exactly its normal form is refused at
    /// rule 1, naming the normal form (before, `/admin/../mcp` was decided as `/mcp`).
    #[test]
    fn rule_1_refuses_a_path_that_is_not_its_normal_form() {
        let base = "http://127.0.0.1:18407";
        for p in [
            "/admin/../mcp",
            "/../../mcp",
            "/./mcp",
            "/%6Dcp",
            "/a%c3%a9",
        ] {
            assert_eq!(code(&format!("{base}{p}")), "request.url_not_normal", "{p}");
        }
        match request_url(&format!("{base}/admin/../mcp?x=1")) {
            Err(e @ VerifyError::RequestUrlNotNormal { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("\"http://127.0.0.1:18407/mcp\""), "{msg}");
                assert!(!msg.contains("x=1"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        // Spellings without a normal form are refused as unusable, naming the URL rule.
        for (p, rule) in [
            ("/admin/%2e%2e/mcp", "url.encoded_dot"),
            ("/pub/..%2Fsecret.txt", "url.encoded_slash"),
            ("/pub/..%5Csecret.txt", "url.encoded_slash"),
            ("/pub/%252e%252e/x", "url.double_encoding"),
            ("/pub/%00", "url.encoded_control"),
            ("/pub/..;/x", "url.path_parameter"),
            ("/pub//x", "url.empty_segment"),
            ("/pub/%C0%AE%C0%AE/x", "url.bad_utf8"),
            ("/pub/%EF%BC%8F", "url.lookalike"),
            ("/pub/%3F", "url.encoded_delimiter"),
            ("/pub/%", "url.bad_percent"),
            ("/pub/..%20/x", "url.dot_segment"),
        ] {
            let url = format!("{base}{p}");
            assert_eq!(code(&url), "request.url", "{p}");
            let msg = request_url(&url).unwrap_err().to_string();
            assert!(msg.contains(&format!("[{rule}]")), "{p}: {msg}");
        }
        assert_eq!(code(&format!("{base}\\mcp")), "request.url");
        // The origin may be spelled in any case and with its default port; the query is
        // not matched.
        assert_eq!(code("HTTP://127.0.0.1:80/mcp?a=/../b%2F"), "ok");
        let r: Refusal = VerifyError::RequestUrlNotNormal {
            url: String::new(),
            normal: String::new(),
        }
        .into();
        assert_eq!((r.rule(), r.is_bad_request()), (1, true));
        assert!(RULES[0].1.contains("request.url_not_normal"));
    }

    /// Rule 13 for access tokens: the contract's grant table and resource matcher, not a
    /// raw string prefix (issue 21 items 3 and 4).
    #[test]
    fn token_grants_use_the_contract_table_and_matcher() {
        let at: cada_protocol::access_token::CadaAt = serde_json::from_value(serde_json::json!({
            "platform": "sim", "msr": "", "att": "", "dtc": "",
            "tools": ["echo"], "resources": ["file:///srv/public/"], "prompts": ["summarize"]
        }))
        .unwrap();
        let ok = |m: &str, t: Option<&str>| {
            token_grants(
                &at,
                &McpCall {
                    method: m.into(),
                    target: t.map(Into::into),
                },
            )
        };
        assert!(ok("resources/read", Some("file:///srv/public/a.txt")));
        assert!(!ok(
            "resources/read",
            Some("file:///srv/public/../secret/key")
        ));
        assert!(!ok(
            "resources/read",
            Some("file:///srv/public/%2e%2e/%2e%2e/etc/shadow")
        ));
        assert!(!ok("resources/read", Some("file:///srv/publicity")));
        assert!(ok("subscriptions/listen", Some("file:///srv/public/a")));
        assert!(!ok("subscriptions/listen", Some("file:///etc/passwd")));
        assert!(ok("subscriptions/listen", None));
        assert!(ok("completion/complete", Some("ref/prompt summarize")));
        assert!(!ok("completion/complete", Some("ref/prompt jailbreak")));
        assert!(ok(
            "completion/complete",
            Some("ref/resource file:///srv/public/{path}")
        ));
        assert!(!ok(
            "completion/complete",
            Some("ref/resource file:///{path}")
        ));
        assert!(!ok("completion/complete", Some("ref/tool echo")));
        assert!(!ok("tools/list", Some("echo")));
        assert!(ok("tools/list", None));
        assert!(ok("tools/call", Some("echo")));
    }
}
