//! Trust contracts: what an owner allows an enclave key (or any enclave running a given
//! image) to do, until when — a W3C Verifiable Credential (Data Model 2.0) secured as a
//! `vc+jwt`. `docs/contracts.md` describes every field.
use std::collections::{BTreeMap, BTreeSet};

use aws_lc_rs::digest::{digest, SHA256};
use cada_protocol::b64;
use cada_protocol::mcp::{GrantNeeded, McpCall};
use cada_protocol::resource_uri::{ResourcePrefix, ResourceUri};
use cada_protocol::url::{HttpUrl, UrlPrefix};
use serde::de::{Error as _, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::delegation::{self as dl, DelegationClaim, DelegationClaimJson, DelegationRules};
use crate::details::{self, AuthorizationDetail, CallArguments};

use crate::did::PublicKey;
use crate::error::clip;
use crate::jose::{self, Doc};
use crate::status::{StatusEntry, VerifiedStatusList};
use crate::time::{self as t, UnixSeconds};
use crate::{ContractError, Denied, OwnerKey, TrustedOwners};

/// Largest compact contract accepted.
pub const MAX_CONTRACT_LEN: usize = 16 * 1024;
/// Most audiences in one contract.
pub const MAX_AUDIENCES: usize = 64;
/// Most methods in one contract.
pub const MAX_METHODS: usize = 16;
/// Most scopes, tools or required `ctx` keys in one contract (each).
pub const MAX_NAMES: usize = 64;
/// Most measurement sets in one contract.
pub const MAX_MEASUREMENT_SETS: usize = 16;
/// Longest behaviour-limit window: 30 days.
pub const MAX_WINDOW_SECS: u64 = 30 * 24 * 3600;
/// Most secret grants (`grants.secrets`) in one contract.
pub const MAX_SECRET_GRANTS: usize = 32;
/// The contract schema [`Grant::issue`] writes (`"cadaSchema": 2`); a contract without the
/// member is schema 1 and may not carry `secrets`, `opens`, `authorization_details` or
/// `stepUp`.
pub const CONTRACT_SCHEMA: u8 = 2;

/// The base context of every VC Data Model 2.0 credential.
pub const VC_CONTEXT: &str = "https://www.w3.org/ns/credentials/v2";
/// The credential type of a trust contract (beside `VerifiableCredential`).
pub const CONTRACT_TYPE: &str = "CadaTrustContract";

/// One allowed image: measurement name (`PCR0`…`PCR31` for Nitro, `MEASUREMENT` and
/// `HOST_DATA` for SEV-SNP, as in the verifier's policy) → lower-case hex. A measurement
/// the evidence does not report counts as all zeros.
pub use cada_protocol::measurements::MeasurementSet;
use cada_protocol::measurements::{first_mismatch, platform_of};

/// Whom a contract is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// One enclave key, by its `did:key`.
    Key(String),
    /// Any enclave whose evidence meets one of these measurement sets (an owner can grant
    /// "any enclave running image X" before it boots).
    Measurements(Vec<MeasurementSet>),
}

/// How much the enclave and the verifiers record about requests under the contract.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditLevel {
    /// Installs, revocations and refusals only.
    Minimal,
    /// Also every signature (method, URL, contract) — the default.
    #[default]
    Standard,
    /// Also each request's `ctx` values.
    Full,
}

impl AuditLevel {
    /// The name used in contracts and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditLevel::Minimal => "minimal",
            AuditLevel::Standard => "standard",
            AuditLevel::Full => "full",
        }
    }
}

/// At most `max` events per `window_seconds` (a sliding or fixed window, as the enforcer
/// documents).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WindowLimit {
    /// Most events per window (≥ 1).
    pub max: u64,
    /// The window, seconds (1 ..= 30 days).
    pub window_seconds: u64,
}

/// Behaviour limits that every verifier instance enforces together; crossing one suspends
/// the contract fleet-wide until the owner reinstates it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BehaviourLimits {
    /// Most requests (accepted proofs) per window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<WindowLimit>,
    /// Most refused requests per window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusals: Option<WindowLimit>,
}

impl BehaviourLimits {
    fn is_empty(&self) -> bool {
        self.requests.is_none() && self.refusals.is_none()
    }
}

/// One sealed secret the enclave may use for the agent (`credentialSubject.secrets[]`):
/// the secret's name (as sealed, see `cada-secrets`), a URL prefix (origin and path prefix,
/// https, normal form, matched on segment boundaries under the strict-path rules of
/// [`cada_protocol::url`]) and the methods. The enclave adds the secret only to requests
/// that lie under both this prefix and the sealed usage's own origin and path prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretGrant {
    /// The secret's name: `[a-z0-9][a-z0-9_-]{0,63}`.
    pub name: String,
    /// The URL prefix, e.g. `https://api.github.com/repos/acme/`.
    pub prefix: String,
    /// HTTP methods (upper case), at least one.
    pub methods: Vec<String>,
}

/// Data the enclave may open for the agent (`credentialSubject.opens[]`): envelopes a
/// service sealed to the enclave's HPKE key for `label` (`cada-verify seal`), at most
/// `budget` opens under this contract (counted in the enclave, each one chained).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenGrant {
    /// The label: `[a-z0-9][a-z0-9_-]{0,63}`.
    pub label: String,
    /// Most opens of this label under the contract (≥ 1).
    pub budget: u64,
}

/// Most open grants (`grants.opens`) in one contract.
pub const MAX_OPEN_GRANTS: usize = 16;

/// A secret grant with its prefix parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SecretRule {
    grant: SecretGrant,
    prefix: UrlPrefix,
}

/// Whether `name` is a secret name: `[a-z0-9][a-z0-9_-]{0,63}` (the sealed usage's rule).
pub fn is_secret_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-'))
}

/// What an owner grants; [`Grant::issue`] signs it into a contract. Everything is checked
/// at issue time by the same code that checks it at verification time, so a grant that
/// would not verify cannot be issued.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Whom the contract is for.
    pub subject: Subject,
    /// URL prefixes (origin + path prefix, normal form, matched on segment boundaries);
    /// https, or http to a loopback host. At least one, unless the contract grants secrets.
    pub audiences: Vec<String>,
    /// HTTP methods (upper case). At least one.
    pub methods: Vec<String>,
    /// OAuth scopes the agent may use (empty: none).
    pub scopes: Vec<String>,
    /// MCP tools the agent may call (empty: none).
    pub tools: Vec<String>,
    /// MCP resources the agent may read or subscribe to (empty: none): hierarchical URI
    /// prefixes matched on segment boundaries (`file:///srv/public/`) or opaque URIs matched
    /// exactly (`urn:…`), each in normal form under the strict rules of
    /// [`cada_protocol::resource_uri`].
    pub resources: Vec<String>,
    /// MCP prompts the agent may get (empty: none).
    pub prompts: Vec<String>,
    /// Sealed secrets the enclave may use for the agent (empty: none).
    pub secrets: Vec<SecretGrant>,
    /// Data labels the enclave may open for the agent, each with a budget (empty: none).
    pub opens: Vec<OpenGrant>,
    /// `ctx` keys every proof must carry.
    pub required_ctx: Vec<String>,
    /// Most signatures under this contract.
    pub budget: Option<u64>,
    /// Most signatures per second.
    pub rate_per_second: Option<u32>,
    /// Audit level.
    pub audit: AuditLevel,
    /// Behaviour limits.
    pub limits: BehaviourLimits,
    /// Start of validity, seconds since the epoch.
    pub valid_from: UnixSeconds,
    /// End of validity (exclusive), seconds since the epoch.
    pub valid_until: UnixSeconds,
    /// Where its revocation bit lives (`None`: it can only expire).
    pub status: Option<StatusEntry>,
    /// A name for people (shown by `inspect` and in answers).
    pub name: Option<String>,
    /// One-transaction grants (RFC 9396 `authorization_details`, empty: none). A contract
    /// whose only authority is these has no `tools` and may have no audiences.
    pub authorization_details: Vec<AuthorizationDetail>,
    /// The owner's approval service (`stepUp`): its base URL, https or http to a loopback
    /// host. The enclave signs proofs for its two step-up endpoints under this contract.
    pub step_up: Option<String>,
    /// Whether and how its subject may delegate (`credentialSubject.delegation`, schema 2;
    /// `None`: it may not). See [`crate::delegation`].
    pub delegation: Option<DelegationRules>,
}

impl Grant {
    /// A grant of `methods` on `audiences` to `subject` from `valid_from` until
    /// `valid_until`, with no scopes, tools, required ctx, limits or status entry.
    pub fn new(
        subject: Subject,
        audiences: Vec<String>,
        methods: Vec<String>,
        valid_from: UnixSeconds,
        valid_until: UnixSeconds,
    ) -> Self {
        Grant {
            subject,
            audiences,
            methods,
            scopes: vec![],
            tools: vec![],
            resources: vec![],
            prompts: vec![],
            secrets: vec![],
            opens: vec![],
            required_ctx: vec![],
            budget: None,
            rate_per_second: None,
            audit: AuditLevel::Standard,
            limits: BehaviourLimits::default(),
            valid_from,
            valid_until,
            status: None,
            name: None,
            authorization_details: vec![],
            step_up: None,
            delegation: None,
        }
    }

    /// The grant a verified contract was issued from (subject, every member, window and
    /// status entry, as written): the starting point of a narrower delegation.
    pub fn from_verified(c: &VerifiedContract) -> Self {
        Grant {
            subject: c.subject.clone(),
            audiences: c.audiences.iter().map(|a| a.as_str().to_owned()).collect(),
            methods: c.methods.clone(),
            scopes: c.scopes.clone(),
            tools: c.tools.clone(),
            resources: c.resources.clone(),
            prompts: c.prompts.clone(),
            secrets: c.secrets.iter().map(|r| r.grant.clone()).collect(),
            opens: c.opens.clone(),
            required_ctx: c.required_ctx.clone(),
            budget: c.budget,
            rate_per_second: c.rate_per_second,
            audit: c.audit,
            limits: c.limits,
            valid_from: c.valid_from,
            valid_until: c.valid_until,
            status: c.status.clone(),
            name: c.name.clone(),
            authorization_details: c.details.clone(),
            step_up: c.step_up.as_ref().map(|u| u.as_str().to_owned()),
            delegation: c.delegation_rules.clone(),
        }
    }

    /// Signs the grant with the owner key: the compact `vc+jwt`. `now` becomes `iat`.
    pub fn issue(&self, key: &OwnerKey, now: UnixSeconds) -> Result<String, ContractError> {
        let id = new_urn_uuid()?;
        let payload = self.payload(key.did(), id, now, None)?;
        let bytes = serde_json::to_vec(&payload)
            .map_err(|e| ContractError::malformed("payload", e.to_string()))?;
        // The same checks a verifier makes.
        check(&bytes, key.did(), false)?;
        jose::sign(key, &bytes)
    }

    /// The credential of this grant, issued by `issuer` (an owner's DID, or for a
    /// delegation the delegator's `did:key`) with credential id `id` at `iat`; `delegation`
    /// makes it a delegated contract (type `CadaDelegation`, member `cadaDelegation`).
    pub(crate) fn payload(
        &self,
        issuer: &str,
        id: String,
        iat: UnixSeconds,
        delegation: Option<DelegationClaimJson>,
    ) -> Result<Payload, ContractError> {
        let (sub, subject_id, measurements) = match &self.subject {
            Subject::Key(did) => (Some(did.clone()), Some(did.clone()), None),
            Subject::Measurements(sets) => (
                None,
                None,
                Some(
                    sets.iter()
                        .map(|s| {
                            NoDupMap(
                                s.iter()
                                    .map(|(k, v)| (k.clone(), v.to_ascii_lowercase()))
                                    .collect(),
                            )
                        })
                        .collect(),
                ),
            ),
        };
        let authorization_details = self
            .authorization_details
            .iter()
            .map(|d| {
                RawValue::from_string(d.to_json_text()).map_err(|e| {
                    ContractError::malformed(
                        "credentialSubject.authorization_details",
                        e.to_string(),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut types = vec!["VerifiableCredential".into(), CONTRACT_TYPE.into()];
        if delegation.is_some() {
            types.push(dl::DELEGATION_TYPE.into());
        }
        Ok(Payload {
            context: vec![VC_CONTEXT.into()],
            schema: Some(serde_json::Value::from(CONTRACT_SCHEMA)),
            id: id.clone(),
            types,
            issuer: issuer.into(),
            name: self.name.clone(),
            valid_from: t::format(self.valid_from),
            valid_until: t::format(self.valid_until),
            subject: SubjectJson {
                id: subject_id,
                measurements,
                audiences: self.audiences.clone(),
                methods: self.methods.clone(),
                scopes: self.scopes.clone(),
                tools: self.tools.clone(),
                resources: self.resources.clone(),
                prompts: self.prompts.clone(),
                secrets: self.secrets.clone(),
                opens: self.opens.clone(),
                required_ctx: self.required_ctx.clone(),
                budget: self.budget,
                rate_per_second: self.rate_per_second,
                audit: self.audit,
                limits: (!self.limits.is_empty()).then_some(self.limits),
                authorization_details,
                step_up: self.step_up.clone(),
                delegation: self.delegation.clone(),
            },
            status: self.status.as_ref().map(StatusEntry::to_json),
            delegation,
            iss: issuer.into(),
            sub,
            jti: id,
            iat,
            nbf: self.valid_from,
            exp: self.valid_until,
        })
    }
}

/// A fresh `urn:uuid:` (version 4) from the system random generator: contract ids and
/// the identifiers of authorization details.
pub fn new_urn_uuid() -> Result<String, ContractError> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| ContractError::Key("random generator".into()))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// A measurement set as a JSON object whose repeated names are refused (a plain map
/// would keep the last, and two readers could disagree about which).
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
struct NoDupMap(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for NoDupMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NoDupMap;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of measurement names to hex")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<NoDupMap, A::Error> {
                let mut m = BTreeMap::new();
                while let Some((k, v)) = a.next_entry::<String, String>()? {
                    if m.len() >= 40 {
                        return Err(A::Error::custom("more than 40 measurements in a set"));
                    }
                    if m.contains_key(&k) {
                        return Err(A::Error::custom(format!(
                            "measurement {} appears twice in a set",
                            clip(&k)
                        )));
                    }
                    m.insert(k, v);
                }
                Ok(NoDupMap(m))
            }
        }
        d.deserialize_map(V)
    }
}

/// A member that is present, whatever its value (`null` included: not read as absent).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// The credential (JWS payload) as written and read.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Payload {
    #[serde(rename = "@context")]
    context: Vec<String>,
    /// Absent: schema 1. Read as any JSON value so that a wrong one is `contract.schema`.
    #[serde(
        rename = "cadaSchema",
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    schema: Option<serde_json::Value>,
    id: String,
    #[serde(rename = "type")]
    types: Vec<String>,
    issuer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(rename = "validFrom")]
    valid_from: String,
    #[serde(rename = "validUntil")]
    valid_until: String,
    #[serde(rename = "credentialSubject")]
    subject: SubjectJson,
    #[serde(
        rename = "credentialStatus",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    status: Option<crate::status::StatusEntryJson>,
    /// Only in a delegated contract.
    #[serde(
        rename = "cadaDelegation",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    delegation: Option<DelegationClaimJson>,
    iss: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    jti: String,
    iat: u64,
    nbf: u64,
    exp: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SubjectJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    measurements: Option<Vec<NoDupMap>>,
    audiences: Vec<String>,
    methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tools: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    prompts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    secrets: Vec<SecretGrant>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    opens: Vec<OpenGrant>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    required_ctx: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    budget: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate_per_second: Option<u32>,
    #[serde(default)]
    audit: AuditLevel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limits: Option<BehaviourLimits>,
    /// RFC 9396's own member name (snake case), kept as text so that numbers stay exact.
    #[serde(
        rename = "authorization_details",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    authorization_details: Vec<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    step_up: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delegation: Option<DelegationRules>,
}

/// Verification of compact contracts.
#[derive(Debug)]
pub struct Contract;

impl Contract {
    /// Verifies a compact contract: size, `vc+jwt` header, the signature under a key of a
    /// trusted owner (found by `kid`, never by anything the contract carries), every field,
    /// and that `now` lies in `[validFrom, validUntil)`. The subject, the status and the
    /// request are checked by [`VerifiedContract`]'s methods.
    pub fn verify(
        compact: &str,
        owners: &TrustedOwners,
        now: UnixSeconds,
    ) -> Result<VerifiedContract, ContractError> {
        let v = jose::verify(Doc::Contract, compact, MAX_CONTRACT_LEN, owners)?;
        let mut c = check(&v.payload, &v.owner, false)?;
        c.kid = v.kid;
        c.digest = digest_of(compact);
        c.check_time(now)?;
        Ok(c)
    }

    /// The header and credential of a compact contract, decoded without verification
    /// (for display).
    pub fn decode_unverified(
        compact: &str,
    ) -> Result<(serde_json::Value, serde_json::Value), ContractError> {
        jose::decode_unverified(compact, MAX_CONTRACT_LEN)
    }
}

/// `cada.dtc`: base64url SHA-256 of the compact contract's bytes.
pub fn digest_of(compact: &str) -> String {
    b64::encode(digest(&SHA256, compact.as_bytes()))
}

/// The request a contract is asked about.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// HTTP method, as sent (methods are case-sensitive).
    pub method: &'a str,
    /// The target URL.
    pub url: &'a HttpUrl,
    /// The proof's `ctx` (only the keys matter here).
    pub ctx: &'a BTreeMap<String, String>,
    /// Scopes the request uses (e.g. the access token's); each must be granted.
    pub scopes: &'a [String],
    /// The MCP call the request makes, if any: what it names must be granted
    /// ([`McpCall::grant_needed`]: tools, prompts, resources, completions of either).
    pub call: Option<&'a McpCall>,
}

/// A contract whose signature, owner, fields and validity window were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedContract {
    id: String,
    digest: String,
    owner: String,
    kid: String,
    name: Option<String>,
    subject: Subject,
    audiences: Vec<UrlPrefix>,
    methods: Vec<String>,
    scopes: Vec<String>,
    tools: Vec<String>,
    resources: Vec<String>,
    /// `resources`, parsed.
    resource_grants: Vec<ResourcePrefix>,
    prompts: Vec<String>,
    /// `secrets`, with their prefixes parsed.
    secrets: Vec<SecretRule>,
    /// `opens`.
    opens: Vec<OpenGrant>,
    required_ctx: Vec<String>,
    budget: Option<u64>,
    rate_per_second: Option<u32>,
    audit: AuditLevel,
    limits: BehaviourLimits,
    issued_at: UnixSeconds,
    valid_from: UnixSeconds,
    valid_until: UnixSeconds,
    status: Option<StatusEntry>,
    /// 1 or 2.
    schema: u8,
    /// `authorization_details`.
    details: Vec<AuthorizationDetail>,
    /// Each detail's locations, parsed (same order as `details`).
    detail_locations: Vec<Vec<UrlPrefix>>,
    /// `stepUp`, parsed.
    step_up: Option<UrlPrefix>,
    /// The signer: the owner, or a delegation's delegator (`iss`).
    issuer: String,
    /// `credentialSubject.delegation`.
    delegation_rules: Option<DelegationRules>,
    /// `cadaDelegation` (delegated contracts only).
    delegation: Option<DelegationClaim>,
}

impl VerifiedContract {
    /// `cada.dtc`: base64url SHA-256 of the compact contract, as proofs name it.
    pub fn digest(&self) -> &str {
        &self.digest
    }
    /// Whether and how its subject may delegate (`credentialSubject.delegation`); `None`:
    /// it may not (`delegation.not_allowed`).
    pub fn delegation_rules(&self) -> Option<&DelegationRules> {
        self.delegation_rules.as_ref()
    }
    /// The delegation claim (`cadaDelegation`) of a delegated contract; `None` for an owner
    /// contract.
    pub fn delegation(&self) -> Option<&DelegationClaim> {
        self.delegation.as_ref()
    }
    /// Who signed it: the owner DID for an owner contract, the delegator enclave's
    /// `did:key` for a delegated contract (whose [`Self::owner`] is the chain's root owner).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
    pub(crate) fn resource_prefixes(&self) -> &[ResourcePrefix] {
        &self.resource_grants
    }
    pub(crate) fn secret_rules(&self) -> impl Iterator<Item = (&SecretGrant, &UrlPrefix)> {
        self.secrets.iter().map(|r| (&r.grant, &r.prefix))
    }
    pub(crate) fn details_with_locations(
        &self,
    ) -> impl Iterator<Item = (&AuthorizationDetail, &[UrlPrefix])> {
        self.details
            .iter()
            .zip(self.detail_locations.iter().map(Vec::as_slice))
    }
    pub(crate) fn set_chain_context(&mut self, digest: String, kid: String, owner: String) {
        self.digest = digest;
        self.kid = kid;
        self.owner = owner;
    }
    /// The credential `id` (`urn:uuid:…`).
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The owner DID: the issuer of an owner contract; for a delegated contract verified
    /// in its chain, the chain's root owner (whose status list holds every link's bit).
    pub fn owner(&self) -> &str {
        &self.owner
    }
    /// The DID URL of the owner key that signed.
    pub fn kid(&self) -> &str {
        &self.kid
    }
    /// The name for people, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    /// Whom the contract is for.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }
    /// Audiences, most specific first.
    pub fn audiences(&self) -> &[UrlPrefix] {
        &self.audiences
    }
    /// Methods.
    pub fn methods(&self) -> &[String] {
        &self.methods
    }
    /// Granted scopes.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }
    /// Granted MCP tools.
    pub fn tools(&self) -> &[String] {
        &self.tools
    }

    /// Granted MCP resources (hierarchical prefixes or exact opaque URIs, see
    /// [`cada_protocol::resource_uri`]).
    pub fn resources(&self) -> &[String] {
        &self.resources
    }

    /// Granted MCP prompts.
    pub fn prompts(&self) -> &[String] {
        &self.prompts
    }
    /// Granted data labels (`grants.opens`).
    pub fn opens(&self) -> &[OpenGrant] {
        &self.opens
    }

    /// The budget of the grant that lets the enclave open data sealed for `label` at
    /// `now`: validity window, then a grant naming the label (`secret.open_not_granted`).
    /// The caller counts the opens against the budget, and checks revocation.
    pub fn permits_open(&self, label: &str, now: UnixSeconds) -> Result<u64, ContractError> {
        self.check_time(now)?;
        self.opens
            .iter()
            .find(|g| g.label == label)
            .map(|g| g.budget)
            .ok_or_else(|| ContractError::SecretDenied {
                code: "secret.open_not_granted",
                detail: format!(
                    "opening data labelled {:?} is not granted ({})",
                    clip(label),
                    if self.opens.is_empty() {
                        "no label is granted".to_owned()
                    } else {
                        self.opens
                            .iter()
                            .map(|g| g.label.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            })
    }

    /// Granted sealed secrets (`grants.secrets`), as written.
    pub fn secrets(&self) -> impl Iterator<Item = &SecretGrant> {
        self.secrets.iter().map(|r| &r.grant)
    }

    /// Whether the contract lets the enclave use the secret `name` for `method` on `url`
    /// at `now`: validity window, then a grant naming the secret (`secret.not_granted`),
    /// one of those whose prefix covers `url` — same origin, path on a segment boundary
    /// (`secret.path`) — and lists the method (`secret.method`). `url` is already parsed
    /// under the strict-path rules, so a path trick is refused before this with its
    /// `url.*` code. Revocation, budget and rate are the caller's (as for [`Self::permits`]).
    pub fn permits_secret(
        &self,
        name: &str,
        method: &str,
        url: &HttpUrl,
        now: UnixSeconds,
    ) -> Result<(), ContractError> {
        self.check_time(now)?;
        let named: Vec<&SecretRule> = self
            .secrets
            .iter()
            .filter(|r| r.grant.name == name)
            .collect();
        if named.is_empty() {
            return Err(ContractError::SecretDenied {
                code: "secret.not_granted",
                detail: format!(
                    "the secret {:?} is not granted ({})",
                    clip(name),
                    if self.secrets.is_empty() {
                        "no secret is granted".to_owned()
                    } else {
                        self.secrets
                            .iter()
                            .map(|r| r.grant.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            });
        }
        let under: Vec<&&SecretRule> = named.iter().filter(|r| r.prefix.matches(url)).collect();
        if under.is_empty() {
            return Err(ContractError::SecretDenied {
                code: "secret.path",
                detail: format!(
                    "{} is under none of the prefixes granted for {:?} ({})",
                    clip(url.as_str()),
                    clip(name),
                    named
                        .iter()
                        .map(|r| r.prefix.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        if under
            .iter()
            .any(|r| r.grant.methods.iter().any(|m| m == method))
        {
            return Ok(());
        }
        Err(ContractError::SecretDenied {
            code: "secret.method",
            detail: format!(
                "method {} is not granted for {:?} under {} ({})",
                clip(method),
                clip(name),
                under[0].prefix.as_str(),
                under[0].grant.methods.join(", ")
            ),
        })
    }
    /// `ctx` keys every proof must carry.
    pub fn required_ctx(&self) -> &[String] {
        &self.required_ctx
    }
    /// Most signatures under the contract (the enclave counts).
    pub fn budget(&self) -> Option<u64> {
        self.budget
    }
    /// Most signatures per second (the enclave counts).
    pub fn rate_per_second(&self) -> Option<u32> {
        self.rate_per_second
    }
    /// Audit level.
    pub fn audit(&self) -> AuditLevel {
        self.audit
    }
    /// Behaviour limits (the verifiers count, together).
    pub fn limits(&self) -> &BehaviourLimits {
        &self.limits
    }
    /// `iat`.
    pub fn issued_at(&self) -> UnixSeconds {
        self.issued_at
    }
    /// `validFrom`.
    pub fn valid_from(&self) -> UnixSeconds {
        self.valid_from
    }
    /// `validUntil` (exclusive).
    pub fn valid_until(&self) -> UnixSeconds {
        self.valid_until
    }
    /// Seconds of validity left at `now` (0 once expired).
    pub fn remaining(&self, now: UnixSeconds) -> u64 {
        self.valid_until.saturating_sub(now)
    }
    /// Where the revocation bit lives, if the contract can be revoked.
    pub fn status_entry(&self) -> Option<&StatusEntry> {
        self.status.as_ref()
    }

    /// The contract schema: 1 (no `cadaSchema` member) or 2.
    pub fn schema(&self) -> u8 {
        self.schema
    }

    /// The one-transaction grants (RFC 9396 `authorization_details`), as written.
    pub fn authorization_details(&self) -> &[AuthorizationDetail] {
        &self.details
    }

    /// The owner's approval service (`stepUp`), if the contract names one.
    pub fn step_up(&self) -> Option<&UrlPrefix> {
        self.step_up.as_ref()
    }

    /// Whether `(method, url)` is a request to the contract's approval service that the
    /// enclave signs without any other grant: `POST {stepUp}/v1/step-up` or `GET
    /// {stepUp}/v1/step-up/{id}`, at `now` within the validity window. Revocation is the
    /// caller's (as for [`Self::permits`]).
    pub fn permits_step_up(
        &self,
        method: &str,
        url: &HttpUrl,
        now: UnixSeconds,
    ) -> Result<(), ContractError> {
        self.check_time(now)?;
        match &self.step_up {
            Some(base) if details::is_step_up_request(base, method, url) => Ok(()),
            Some(base) => Err(ContractError::not_permitted(
                Denied::Audience,
                format!(
                    "{} {} is not a step-up request to {base} (POST {{stepUp}}/v1/step-up or \
                     GET {{stepUp}}/v1/step-up/{{id}})",
                    clip(method),
                    clip(url.as_str())
                ),
            )),
            None => Err(ContractError::not_permitted(
                Denied::Audience,
                "the contract names no approval service (stepUp)",
            )),
        }
    }

    /// The details that cover a `tools/call` of `tool` at `url` (tool and location; the
    /// enclave's view), in contract order.
    pub fn details_for<'a, 'b>(
        &'a self,
        url: &'b HttpUrl,
        tool: &'b str,
    ) -> impl Iterator<Item = &'a AuthorizationDetail> + 'b
    where
        'a: 'b,
    {
        self.details
            .iter()
            .zip(&self.detail_locations)
            .filter(move |(d, locs)| d.tool == tool && locs.iter().any(|l| l.matches(url)))
            .map(|(d, _)| d)
    }

    /// Whether the `tools` list grants `tool` (without argument limits).
    pub fn grants_tool(&self, tool: &str) -> bool {
        self.tools.iter().any(|t| t == tool)
    }

    /// Every detail that admits a `tools/call` of `tool` at `url`
    /// ([`details::admitting`]: with `args`, those whose argument limits they meet; without,
    /// those without limits), in contract order; `Ok` empty when the `tools` list grants
    /// the tool (no argument limits, nothing to consume). Refused as
    /// [`Self::check_tool_arguments`] / [`Self::check_tool_without_arguments`] are. The
    /// gate uses a reusable detail among them if there is one, else consumes the first
    /// single-use one not used yet.
    pub fn details_admitting(
        &self,
        url: &HttpUrl,
        tool: &str,
        args: Option<&CallArguments>,
    ) -> Result<Vec<&AuthorizationDetail>, ContractError> {
        if self.grants_tool(tool) {
            return Ok(Vec::new());
        }
        let covering: Vec<&AuthorizationDetail> = self.details_for(url, tool).collect();
        if covering.is_empty() {
            return Err(self.tool_refusal(url, tool));
        }
        details::admitting(&covering, tool, args)
    }

    /// The check of one `tools/call` whose arguments are held: `Ok(None)` when the `tools`
    /// list grants the tool (no argument limits); else the first detail covering `tool` at
    /// `url` whose argument constraints `args` meet ([`Self::details_admitting`] gives them
    /// all). Refused with the first covering detail's `grant.*` code, or
    /// `contract.not_permitted.tool` when nothing covers the tool there.
    pub fn check_tool_arguments(
        &self,
        url: &HttpUrl,
        tool: &str,
        args: &CallArguments,
    ) -> Result<Option<&AuthorizationDetail>, ContractError> {
        self.details_admitting(url, tool, Some(args))
            .map(|d| d.first().copied())
    }

    /// The check of one `tools/call` by a verifier that does not hold its arguments
    /// (forward auth without the body, a proof checked without its body): `Ok(None)` when
    /// the `tools` list grants the tool; `Ok(Some(d))` for the first covering detail without
    /// argument limits; `grant.arguments_unchecked` when every covering detail limits
    /// arguments; `contract.not_permitted.tool` when nothing covers the tool there.
    pub fn check_tool_without_arguments(
        &self,
        url: &HttpUrl,
        tool: &str,
    ) -> Result<Option<&AuthorizationDetail>, ContractError> {
        self.details_admitting(url, tool, None)
            .map(|d| d.first().copied())
    }

    fn tool_refusal(&self, url: &HttpUrl, tool: &str) -> ContractError {
        if self.tools.is_empty() && !self.details.is_empty() {
            return details::grant(
                "grant.tool",
                format!(
                    "this grant covers {}, not {:?} at {}",
                    self.details
                        .iter()
                        .map(|d| format!("{} at {}", d.tool, d.locations.join(" ")))
                        .collect::<Vec<_>>()
                        .join("; "),
                    clip(tool),
                    clip(url.as_str())
                ),
            );
        }
        ContractError::not_permitted(
            Denied::Tool,
            format!(
                "MCP tool {:?} is not granted ({})",
                clip(tool),
                list(&self.tools)
            ),
        )
    }

    /// Whether `now` lies in `[validFrom, validUntil)`; a cached contract is checked again
    /// at every use.
    pub fn check_time(&self, now: UnixSeconds) -> Result<(), ContractError> {
        if now < self.valid_from {
            return Err(ContractError::NotYetValid {
                valid_from: self.valid_from,
                now,
            });
        }
        if now >= self.valid_until {
            return Err(ContractError::Expired {
                valid_until: self.valid_until,
                now,
            });
        }
        Ok(())
    }

    /// Whether the contract is for this enclave: its key's `did:key`, or its verified
    /// measurements (name → hex) meet one of the contract's sets.
    pub fn check_subject(
        &self,
        key_did: &str,
        measurements: &BTreeMap<String, String>,
    ) -> Result<(), ContractError> {
        match &self.subject {
            Subject::Key(did) if did == key_did => Ok(()),
            Subject::Key(did) => Err(ContractError::Subject {
                detail: format!("it is for the key {}, not {}", clip(did), clip(key_did)),
            }),
            Subject::Measurements(sets) => {
                let mut first = None;
                for set in sets {
                    match set_mismatch(set, measurements) {
                        None => return Ok(()),
                        Some(d) => {
                            first.get_or_insert(d);
                        }
                    }
                }
                Err(ContractError::Subject {
                    detail: format!(
                        "the measurements meet none of its {} sets (set 0: {})",
                        sets.len(),
                        first.unwrap_or_default()
                    ),
                })
            }
        }
    }

    /// Whether the contract permits `req` at `now`: validity window, then audience
    /// (origin equality, then path prefix on segment boundaries), method, MCP tool,
    /// scopes, required `ctx` keys — the first failing rule refuses. Budget, rate and
    /// behaviour limits are counted by the caller ([`ContractError::not_permitted`]).
    ///
    /// A `tools/call` of a tool the `tools` list does not grant is permitted by an
    /// authorization detail covering the tool at the URL ([`Self::details_for`]), even
    /// where no audience covers the URL (a one-transaction grant's locations are its
    /// audiences); its arguments are the gate's to check ([`Self::check_tool_arguments`]).
    pub fn permits(&self, req: &RequestView<'_>, now: UnixSeconds) -> Result<(), ContractError> {
        self.check_time(now)?;
        let by_detail = req
            .call
            .and_then(McpCall::tool)
            .is_some_and(|t| !self.grants_tool(t) && self.details_for(req.url, t).next().is_some());
        if !by_detail {
            if self.audiences.is_empty() && !self.details.is_empty() {
                // A one-transaction grant: its authority is its details only.
                // Every other JSON-RPC call is refused too, also beside a covered call in a
                // batch: initialize, ping, tools/list, notifications and the rest are made
                // under the agent's standing contract (review grants-1, finding 7).
                return Err(match (req.call, req.call.and_then(McpCall::tool)) {
                    (_, Some(t)) => self.tool_refusal(req.url, t),
                    (Some(c), None) => details::grant(
                        "grant.tool",
                        format!(
                            "this grant covers only tools/call of its tools; the call {:?} at \
                             {} is not one: make it under a standing contract",
                            clip(&c.method),
                            clip(req.url.as_str())
                        ),
                    ),
                    (None, None) => details::grant(
                        "grant.tool",
                        format!(
                            "this grant covers only tools/call of its tools; {} {} is not one",
                            clip(req.method),
                            clip(req.url.as_str())
                        ),
                    ),
                });
            }
            self.check_audience(req.url)?;
        }
        if !self.methods.iter().any(|m| m == req.method) {
            return Err(ContractError::not_permitted(
                Denied::Method,
                format!(
                    "method {} is not among {}",
                    clip(req.method),
                    self.methods.join(", ")
                ),
            ));
        }
        if let Some(call) = req.call {
            if !by_detail {
                self.check_call(call)?;
            }
        }
        self.check_scopes(req.scopes)?;
        self.check_ctx(req.ctx)
    }

    /// Whether the contract lets its agent obtain an access token for `resource` with
    /// `scopes` (an RFC 8693 token exchange): validity, audience, scopes and required `ctx`
    /// keys of the exchange proof. Not the method: a token names no method, and the enclave
    /// checks the method of every request proof it signs under the token.
    pub fn permits_token(
        &self,
        resource: &HttpUrl,
        scopes: &[String],
        ctx: &BTreeMap<String, String>,
        now: UnixSeconds,
    ) -> Result<(), ContractError> {
        self.check_time(now)?;
        self.check_audience(resource)?;
        self.check_scopes(scopes)?;
        self.check_ctx(ctx)
    }

    /// Whether the contract grants one MCP call: the tool, prompt or resource it names
    /// ([`McpCall::grant_needed`], the one table of which methods need a grant). A call that
    /// names something no rule knows is refused; a resource URI the strict rules refuse is
    /// granted by nothing.
    pub fn check_call(&self, call: &McpCall) -> Result<(), ContractError> {
        let refuse = |denied: Denied, what: &str, target: &str, granted: &[String]| {
            Err(ContractError::not_permitted(
                denied,
                format!(
                    "{what} {:?} is not granted ({})",
                    clip(target),
                    list(granted)
                ),
            ))
        };
        match call.grant_needed() {
            GrantNeeded::Nothing => Ok(()),
            GrantNeeded::Tool(t) if self.tools.iter().any(|g| g == t) => Ok(()),
            GrantNeeded::Tool(t) => refuse(Denied::Tool, "MCP tool", t, &self.tools),
            GrantNeeded::Prompt(p) if self.prompts.iter().any(|g| g == p) => Ok(()),
            GrantNeeded::Prompt(p) => refuse(Denied::Prompt, "MCP prompt", p, &self.prompts),
            GrantNeeded::Resource(r) => {
                // Matched on segment boundaries under the strict rules, never as a raw
                // string prefix.
                let uri = ResourceUri::parse(r).map_err(|e| {
                    ContractError::not_permitted(
                        Denied::Resource,
                        format!("MCP resource {:?} is refused [{}]: {e}", clip(r), e.code()),
                    )
                })?;
                if self.resource_grants.iter().any(|g| g.matches(&uri)) {
                    return Ok(());
                }
                refuse(Denied::Resource, "MCP resource", r, &self.resources)
            }
            GrantNeeded::ResourceTemplate(t) => {
                if self.resource_grants.iter().any(|g| g.matches_template(t)) {
                    return Ok(());
                }
                refuse(
                    Denied::Resource,
                    "completion for the MCP resource template",
                    t,
                    &self.resources,
                )
            }
            GrantNeeded::Unknown => Err(ContractError::not_permitted(
                Denied::Resource,
                format!(
                    "{} names {:?}, which no grant rule covers: refused",
                    clip(&call.method),
                    clip(call.target.as_deref().unwrap_or(""))
                ),
            )),
        }
    }

    fn check_audience(&self, url: &HttpUrl) -> Result<(), ContractError> {
        if self.audiences.iter().any(|a| a.matches(url)) {
            return Ok(());
        }
        Err(ContractError::not_permitted(
            Denied::Audience,
            format!(
                "{} is under none of its audiences ({})",
                clip(url.as_str()),
                self.audiences
                    .iter()
                    .map(UrlPrefix::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))
    }

    fn check_scopes(&self, scopes: &[String]) -> Result<(), ContractError> {
        match scopes.iter().find(|s| !self.scopes.contains(s)) {
            None => Ok(()),
            Some(s) => Err(ContractError::not_permitted(
                Denied::Scope,
                format!(
                    "scope {:?} is not granted ({})",
                    clip(s),
                    list(&self.scopes)
                ),
            )),
        }
    }

    fn check_ctx(&self, ctx: &BTreeMap<String, String>) -> Result<(), ContractError> {
        match self.required_ctx.iter().find(|k| !ctx.contains_key(*k)) {
            None => Ok(()),
            Some(k) => Err(ContractError::not_permitted(
                Denied::Ctx,
                format!("the proof must carry ctx key {k:?}"),
            )),
        }
    }

    /// Whether `list` says the contract is live: `list` must be the status list the
    /// contract names, signed by the contract's owner, with `now - observed_at` at most
    /// `max_staleness_secs` (a verifier passes when it fetched the list; an enclave, which
    /// cannot trust the host's clock or timing, passes the list's own `validFrom`), and the
    /// contract's bit must be clear. A contract without a status entry passes.
    pub fn check_status(
        &self,
        list: &VerifiedStatusList,
        observed_at: UnixSeconds,
        now: UnixSeconds,
        max_staleness_secs: u64,
    ) -> Result<(), ContractError> {
        let Some(entry) = &self.status else {
            return Ok(());
        };
        if list.id() != entry.list {
            return Err(ContractError::StatusMismatch {
                detail: format!(
                    "the contract's status list is {}, this one is {}",
                    clip(&entry.list),
                    clip(list.id())
                ),
            });
        }
        if list.issuer() != self.owner {
            return Err(ContractError::StatusForged {
                detail: format!(
                    "it is signed by {}, the contract's owner is {}",
                    clip(list.issuer()),
                    clip(&self.owner)
                ),
            });
        }
        list.check_fresh(observed_at, now, max_staleness_secs)?;
        if list.is_revoked(entry.index)? {
            return Err(ContractError::Revoked {
                list: entry.list.clone(),
                index: entry.index,
            });
        }
        Ok(())
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none granted".into()
    } else {
        v.join(", ")
    }
}

fn set_mismatch(set: &MeasurementSet, got: &BTreeMap<String, String>) -> Option<String> {
    first_mismatch(set, got)
        .map(|(k, want, have)| format!("{k} is {}, {want} is required", clip(&have)))
}

/// Checks one measurement set (same rules as the verifier's policy file).
pub fn check_measurement_set(set: &MeasurementSet) -> Result<(), ContractError> {
    let bad = |d: String| ContractError::malformed("credentialSubject.measurements", d);
    if set.is_empty() {
        return Err(bad(
            "an empty set would match every image; name at least PCR0 or MEASUREMENT".into(),
        ));
    }
    let mut platform = None;
    for (k, v) in set {
        let Some(p) = platform_of(k) else {
            return Err(bad(format!(
                "{:?} is not a measurement name: use PCR0..PCR31 (Nitro), MEASUREMENT / HOST_DATA (SEV-SNP) or TPM_PCR0..TPM_PCR23 (TPM)",
                clip(k)
            )));
        };
        if platform.is_some_and(|q| q != p) {
            return Err(bad(
                "a set mixes measurements of different platforms; write one set per image".into(),
            ));
        }
        platform = Some(p);
        let want = cada_protocol::measurements::value_len(k);
        let ok = v.len() == 2 * want
            && v.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return Err(bad(format!(
                "{k} must be {want} bytes of lower-case hex ({} characters)",
                2 * want
            )));
        }
    }
    if platform == Some("sev-snp") && !set.contains_key("MEASUREMENT") {
        return Err(bad(
            "an SEV-SNP set must name MEASUREMENT (HOST_DATA alone says nothing about the image)"
                .into(),
        ));
    }
    Ok(())
}

fn names(
    field: &'static str,
    v: &[String],
    min: usize,
    max: usize,
    max_len: usize,
    ok: impl Fn(u8) -> bool,
    rule: &str,
) -> Result<(), ContractError> {
    let bad = |d: String| ContractError::malformed(field, d);
    if v.len() < min {
        return Err(bad(format!("at least {min} required")));
    }
    if v.len() > max {
        return Err(bad(format!("at most {max} allowed, {} given", v.len())));
    }
    let mut seen = BTreeSet::new();
    for s in v {
        if s.is_empty() || s.len() > max_len || !s.bytes().all(&ok) {
            return Err(bad(format!(
                "{:?}: each must be 1 to {max_len} characters of {rule}",
                clip(s)
            )));
        }
        if !seen.insert(s) {
            return Err(bad(format!("{:?} appears twice", clip(s))));
        }
    }
    Ok(())
}

/// Checks `credentialSubject.opens`: at most [`MAX_OPEN_GRANTS`], each a label (the
/// secret-name rule) with a budget ≥ 1; no label twice.
fn check_open_grants(grants: &[OpenGrant]) -> Result<(), ContractError> {
    let bad = |d: String| ContractError::malformed("credentialSubject.opens", d);
    if grants.len() > MAX_OPEN_GRANTS {
        return Err(bad(format!(
            "at most {MAX_OPEN_GRANTS} open grants, {} given",
            grants.len()
        )));
    }
    for (i, g) in grants.iter().enumerate() {
        if !is_secret_name(&g.label) {
            return Err(bad(format!(
                "{:?}: a label is 1 to 64 of a-z 0-9 _ - starting with a letter or digit",
                clip(&g.label)
            )));
        }
        if g.budget == 0 {
            return Err(bad(format!("{}: a budget of 0 allows nothing", g.label)));
        }
        if grants[..i].iter().any(|o| o.label == g.label) {
            return Err(bad(format!("{} appears twice", g.label)));
        }
    }
    Ok(())
}

/// Checks `credentialSubject.secrets`: at most [`MAX_SECRET_GRANTS`], each a secret name,
/// an https prefix the strict-path matcher accepts (refused when written, naming its
/// `url.*` rule) and 1 to [`MAX_METHODS`] upper-case methods; no grant twice.
fn check_secret_grants(grants: &[SecretGrant]) -> Result<Vec<SecretRule>, ContractError> {
    let bad = |d: String| ContractError::malformed("credentialSubject.secrets", d);
    if grants.len() > MAX_SECRET_GRANTS {
        return Err(bad(format!(
            "at most {MAX_SECRET_GRANTS} secret grants, {} given",
            grants.len()
        )));
    }
    let mut out: Vec<SecretRule> = Vec::with_capacity(grants.len());
    for g in grants {
        if !is_secret_name(&g.name) {
            return Err(bad(format!(
                "{:?}: a secret name is 1 to 64 of a-z 0-9 _ - starting with a letter or digit",
                clip(&g.name)
            )));
        }
        let prefix = UrlPrefix::parse(&g.prefix).map_err(|e| {
            bad(format!(
                "{}: the prefix {:?} [{}]: {e}",
                g.name,
                clip(&g.prefix),
                e.code()
            ))
        })?;
        if prefix.url().scheme() != "https" {
            return Err(bad(format!(
                "{}: the prefix {prefix} must be https: a secret never crosses a network in clear",
                g.name
            )));
        }
        names(
            "credentialSubject.secrets",
            &g.methods,
            1,
            MAX_METHODS,
            32,
            |b| b.is_ascii_uppercase() || b == b'-',
            "upper-case letters (GET, POST, …)",
        )?;
        if out
            .iter()
            .any(|r| r.grant.name == g.name && r.prefix == prefix)
        {
            return Err(bad(format!("{} on {prefix} appears twice", g.name)));
        }
        out.push(SecretRule {
            grant: g.clone(),
            prefix,
        });
    }
    Ok(out)
}

/// Parses and checks a contract payload; `owner` is the DID whose key signed it (for a
/// delegation, `delegated`, the delegator's `did:key`: the result's `owner` is that DID
/// until the chain sets the root owner).
pub(crate) fn check(
    bytes: &[u8],
    owner: &str,
    delegated: bool,
) -> Result<VerifiedContract, ContractError> {
    let p: Payload = serde_json::from_slice(bytes)
        .map_err(|e| ContractError::malformed("credential", e.to_string()))?;
    fn m(what: &'static str, detail: impl Into<String>) -> ContractError {
        ContractError::malformed(what, detail)
    }
    let schema = match &p.schema {
        None => 1,
        Some(v) if v.as_u64() == Some(u64::from(CONTRACT_SCHEMA)) => CONTRACT_SCHEMA,
        Some(v) => {
            return Err(ContractError::Schema {
                detail: format!(
                    "cadaSchema {} is unknown: this verifier knows schemas 1 (no cadaSchema \
                     member) and 2; upgrade it to read newer contracts",
                    clip(&v.to_string())
                ),
            })
        }
    };
    if delegated && schema != CONTRACT_SCHEMA {
        return Err(ContractError::delegation(
            "delegation.malformed",
            "a delegated contract is schema 2 (\"cadaSchema\": 2)",
        ));
    }
    if p.context.first().map(String::as_str) != Some(VC_CONTEXT) || p.context.len() > 8 {
        return Err(m(
            "@context",
            format!("the first context must be {VC_CONTEXT}"),
        ));
    }
    if p.types.len() > 8
        || !p.types.iter().any(|t| t == "VerifiableCredential")
        || !p.types.iter().any(|t| t == CONTRACT_TYPE)
    {
        return Err(m(
            "type",
            format!("a trust contract has type [\"VerifiableCredential\", \"{CONTRACT_TYPE}\"]"),
        ));
    }
    let typed_delegation = p.types.iter().any(|t| t == dl::DELEGATION_TYPE);
    let claim = match (delegated, typed_delegation, &p.delegation) {
        (false, false, None) => None,
        (true, true, Some(j)) => Some(DelegationClaim::from_json(j)?),
        (false, _, _) => {
            return Err(ContractError::delegation(
                "delegation.malformed",
                "this is a delegated contract (type CadaDelegation, cadaDelegation): present \
                 it as the last link of its chain, root~…~delegation, never on its own",
            ))
        }
        (true, _, _) => {
            return Err(ContractError::delegation(
                "delegation.malformed",
                format!(
                    "a link after the root must be a delegated contract: type \
                     [\"VerifiableCredential\", \"{CONTRACT_TYPE}\", \"{}\"] and a \
                     cadaDelegation member",
                    dl::DELEGATION_TYPE
                ),
            ))
        }
    };
    if p.id.is_empty() || p.id.len() > 256 || !p.id.contains(':') {
        return Err(m("id", "the credential id must be a URI (urn:uuid:…)"));
    }
    if p.jti != p.id {
        return Err(m("jti", "jti must equal the credential id"));
    }
    if delegated && (p.issuer != owner || p.iss != owner) {
        return Err(ContractError::delegation(
            "delegation.issuer",
            format!(
                "the delegation names issuer {} but is signed by {} (its kid): issuer and iss \
                 must be the delegator's did:key",
                clip(&p.issuer),
                clip(owner)
            ),
        ));
    }
    if p.issuer != owner || p.iss != owner {
        return Err(ContractError::UntrustedOwner {
            detail: format!(
                "the contract names issuer {} but is signed by a key of {}",
                clip(&p.issuer),
                clip(owner)
            ),
        });
    }
    if p.name.as_ref().is_some_and(|n| n.len() > 256) {
        return Err(m("name", "at most 256 bytes"));
    }
    let valid_from = t::parse(&p.valid_from).ok_or_else(|| {
        m(
            "validFrom",
            "must be an RFC 3339 date-time with a time zone",
        )
    })?;
    let valid_until = t::parse(&p.valid_until).ok_or_else(|| {
        m(
            "validUntil",
            "must be an RFC 3339 date-time with a time zone",
        )
    })?;
    if p.nbf != valid_from || p.exp != valid_until {
        return Err(m(
            "nbf/exp",
            "nbf and exp must equal validFrom and validUntil",
        ));
    }
    if valid_until <= valid_from {
        return Err(m("validUntil", "validUntil must be after validFrom"));
    }
    let s = p.subject;
    if schema < 2 {
        let v2 = [
            ("secrets", !s.secrets.is_empty()),
            ("opens", !s.opens.is_empty()),
            ("authorization_details", !s.authorization_details.is_empty()),
            ("stepUp", s.step_up.is_some()),
            ("delegation", s.delegation.is_some()),
        ];
        if let Some((member, _)) = v2.iter().find(|(_, present)| *present) {
            return Err(ContractError::Schema {
                detail: format!(
                    "credentialSubject.{member} needs \"cadaSchema\": 2 in the contract; a \
                     contract without it is schema 1 and cannot carry it (issue it again with \
                     a current cada-owner)"
                ),
            });
        }
    }
    let subject = match (s.id, s.measurements) {
        (Some(did), None) => {
            PublicKey::from_did_key(&did).map_err(|e| {
                m(
                    "credentialSubject.id",
                    format!("the subject must be an enclave key's did:key: {e}"),
                )
            })?;
            if p.sub.as_deref() != Some(did.as_str()) {
                return Err(m("sub", "sub must equal credentialSubject.id"));
            }
            Subject::Key(did)
        }
        (None, Some(sets)) => {
            if sets.is_empty() || sets.len() > MAX_MEASUREMENT_SETS {
                return Err(m(
                    "credentialSubject.measurements",
                    format!("1 to {MAX_MEASUREMENT_SETS} sets"),
                ));
            }
            if p.sub.is_some() {
                return Err(m("sub", "a contract for measurements has no sub"));
            }
            let sets: Vec<MeasurementSet> = sets.into_iter().map(|s| s.0).collect();
            for set in &sets {
                check_measurement_set(set)?;
            }
            Subject::Measurements(sets)
        }
        _ => {
            return Err(m(
                "credentialSubject",
                "name exactly one of id (an enclave key's did:key) or measurements",
            ))
        }
    };
    if s.authorization_details.len() > details::MAX_DETAILS {
        return Err(m(
            "credentialSubject.authorization_details",
            format!(
                "at most {} details, not {}",
                details::MAX_DETAILS,
                s.authorization_details.len()
            ),
        ));
    }
    let auth_details = s
        .authorization_details
        .iter()
        .map(|r| AuthorizationDetail::parse(r.get()))
        .collect::<Result<Vec<_>, _>>()?;
    details::check_details(&auth_details)?;
    let detail_locations = auth_details
        .iter()
        .map(|d| {
            d.locations
                .iter()
                .map(|l| {
                    UrlPrefix::parse(l).map_err(|e| {
                        m(
                            "credentialSubject.authorization_details",
                            format!("{:?}: {e}", clip(l)),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let step_up = match &s.step_up {
        None => None,
        Some(u) => {
            let bad = |d: String| m("credentialSubject.stepUp", d);
            let prefix = UrlPrefix::parse(u)
                .map_err(|e| bad(format!("{:?} [{}]: {e}", clip(u), e.code())))?;
            if !(prefix.url().scheme() == "https" || prefix.url().has_loopback_host()) {
                return Err(bad(format!(
                    "{prefix} must be https (http only to localhost or a loopback address)"
                )));
            }
            Some(prefix)
        }
    };
    if (s.audiences.is_empty()
        && s.secrets.is_empty()
        && s.opens.is_empty()
        && auth_details.is_empty()
        && step_up.is_none())
        || s.audiences.len() > MAX_AUDIENCES
    {
        return Err(m(
            "credentialSubject.audiences",
            format!(
                "1 to {MAX_AUDIENCES} URL prefixes (none only in a contract that grants secrets, \
                 opens or authorization_details, or names stepUp)"
            ),
        ));
    }
    let mut audiences = Vec::with_capacity(s.audiences.len());
    for a in &s.audiences {
        let prefix = UrlPrefix::parse(a)
            .map_err(|e| m("credentialSubject.audiences", format!("{:?}: {e}", clip(a))))?;
        let u = prefix.url();
        if !(u.scheme() == "https" || u.has_loopback_host()) {
            return Err(m(
                "credentialSubject.audiences",
                format!("{prefix} must be https (http only to a loopback host)"),
            ));
        }
        if audiences.contains(&prefix) {
            return Err(m(
                "credentialSubject.audiences",
                format!("{prefix} appears twice"),
            ));
        }
        audiences.push(prefix);
    }
    audiences.sort_by_key(|a| std::cmp::Reverse(a.specificity()));
    names(
        "credentialSubject.methods",
        &s.methods,
        1,
        MAX_METHODS,
        32,
        |b| b.is_ascii_uppercase() || b == b'-',
        "upper-case letters (GET, POST, …)",
    )?;
    names(
        "credentialSubject.scopes",
        &s.scopes,
        0,
        MAX_NAMES,
        128,
        // RFC 6749 §3.3 scope-token.
        |b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b),
        "OAuth scope characters (no spaces, quotes or backslashes)",
    )?;
    names(
        "credentialSubject.tools",
        &s.tools,
        0,
        MAX_NAMES,
        128,
        |b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'),
        "letters, digits, _ - . /",
    )?;
    names(
        "credentialSubject.resources",
        &s.resources,
        0,
        MAX_NAMES,
        2048,
        |b| b.is_ascii_graphic(),
        "URI characters (printable ASCII, no spaces)",
    )?;
    // The same parser that matches requests: a grant the matcher would refuse (dot
    // segments, encoded separators, not in normal form …) is refused when written.
    let resource_grants = s
        .resources
        .iter()
        .map(|r| {
            ResourcePrefix::parse(r).map_err(|e| {
                m(
                    "credentialSubject.resources",
                    format!("{:?} [{}]: {e}", clip(r), e.code()),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    names(
        "credentialSubject.prompts",
        &s.prompts,
        0,
        MAX_NAMES,
        128,
        |b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'),
        "letters, digits, _ - . /",
    )?;
    names(
        "credentialSubject.requiredCtx",
        &s.required_ctx,
        0,
        MAX_NAMES,
        64,
        |b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'),
        "letters, digits, _ - .",
    )?;
    let secrets = check_secret_grants(&s.secrets)?;
    check_open_grants(&s.opens)?;
    if s.budget == Some(0) {
        return Err(m(
            "credentialSubject.budget",
            "a budget of 0 allows nothing; omit it or give ≥ 1",
        ));
    }
    if s.rate_per_second == Some(0) {
        return Err(m(
            "credentialSubject.ratePerSecond",
            "a rate of 0 allows nothing; omit it or give ≥ 1",
        ));
    }
    let limits = s.limits.unwrap_or_default();
    for l in [limits.requests, limits.refusals].into_iter().flatten() {
        if l.max == 0 || l.window_seconds == 0 || l.window_seconds > MAX_WINDOW_SECS {
            return Err(m(
                "credentialSubject.limits",
                format!("max ≥ 1 and windowSeconds 1 ..= {MAX_WINDOW_SECS}"),
            ));
        }
    }
    let status = match p.status {
        None => None,
        Some(j) => Some(StatusEntry::from_json(&j)?),
    };
    if let Some(rules) = &s.delegation {
        rules.check(status.as_ref())?;
    }
    Ok(VerifiedContract {
        id: p.id,
        digest: String::new(),
        owner: owner.to_owned(),
        kid: String::new(),
        name: p.name,
        subject,
        audiences,
        methods: s.methods,
        scopes: s.scopes,
        tools: s.tools,
        resources: s.resources,
        resource_grants,
        prompts: s.prompts,
        secrets,
        opens: s.opens,
        required_ctx: s.required_ctx,
        budget: s.budget,
        rate_per_second: s.rate_per_second,
        audit: s.audit,
        limits,
        issued_at: p.iat,
        valid_from,
        valid_until,
        status,
        schema,
        details: auth_details,
        detail_locations,
        step_up,
        issuer: owner.to_owned(),
        delegation_rules: s.delegation,
        delegation: claim,
    })
}
