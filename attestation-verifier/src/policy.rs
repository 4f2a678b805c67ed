//! The verifier policy: one TOML file, validated on load, holding everything [`crate::decide`]
//! needs — trust roots per platform, evidence and SEV-SNP rules, token freshness, context
//! rules and the measurements allowed per audience.
//!
//! ```toml
//! [roots]                        # added beside the pinned roots, never replacing them
//! nitro = ["sim-root.pem"]       # extra roots for Nitro-format evidence (e.g. the `sim` CA)
//! sev_snp = ["sim-snp-ark.pem"]  # extra ARKs for SEV-SNP evidence (e.g. the `sim-snp` CA)
//!
//! [evidence]
//! allow_debug = false
//! max_age_secs = 3600            # evidence is relied on for at most this long
//!
//! [tpm]                          # TPM 2.0 (platform `tpm`)
//! roots = ["swtpm-ca.pem"]       # EK roots beside the pinned manufacturers' (tests: swtpm)
//! ak_roots = ["enroll-ca.pem"]   # enrollment CAs: AK certificates naming the EK
//! ak_roots_without_ek = []       # CAs that vouch for the TPM alone (clouds' vTPM CAs)
//! freshness = "verifier_nonce"   # or "first_seen", as for SEV-SNP
//! session_keys = true            # accept short-lived session keys the TPM key certified
//! max_session_secs = 900         # … valid for at most this long
//! require_key_policy = false     # true: the key must sign only under PolicyPCR over the quoted PCRs
//!
//! [snp]                          # AMD SEV-SNP guests
//! freshness = "verifier_nonce"   # or "first_seen" (see SnpFreshness)
//! min_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }
//! max_vmpl = 0
//! allow_smt = true
//! allow_migration_agent = false
//! require_single_socket = false
//!
//! [token]
//! skew_secs = 10
//! require_nonce = false          # demand server-issued DPoP nonces (RFC 9449 §8)
//! nonce_ttl_secs = 120
//! require_body_digest = false    # proofs must carry cada.bd, the SHA-256 of the body
//!
//! [context]
//! required = ["task"]
//! allowed = { model = ["m-2026-10"] }
//!
//! [[audience]]                   # the most specific matching prefix applies
//! prefix = "https://api.example.com/v1"   # origin, then path prefix on segment boundaries
//! measurements = [               # any one set matches: several during a roll-out
//!   { PCR0 = "f4d4…", PCR1 = "bcdf…", PCR2 = "d8f1…" },   # a Nitro image
//!   { MEASUREMENT = "7a1e…841f" },                         # an SEV-SNP image
//!   { TPM_PCR0 = "…", TPM_PCR7 = "…" },                    # a TPM's boot (SHA-256 bank)
//! ]
//! owners = ["did:key:z6Mk…"]     # optional: proofs here need a live trust contract of one
//!                                # of these owners, matching the owner in the evidence
//! owner_keys = [{ did = "did:web:owner.example", kid = "did:web:owner.example#k1",
//!                 jwk = { kty = "OKP", crv = "Ed25519", x = "…" } }]   # an owner pinned by key
//! owner_documents = ["owner-did.json"]   # an owner pinned by its (fetched) DID document
//! max_delegation_depth = 2       # delegation chains (docs/delegation.md): at most this many
//!                                # delegations below the owner's contract (default 0: refused)
//! delegator_measurements = [{ PCR0 = "f4d4…" }]   # sets every delegator's evidence must meet
//!                                # (default: this audience's `measurements`)
//! max_delegation_lifetime_secs = 3600   # a link valid longer after its iat is refused
//! delegation_evidence_skew_secs = 300   # a Nitro delegator's document time vs the link's iat
//!
//! [contracts]
//! status_max_staleness_secs = 300   # a status list older than this fails closed
//!
//! [[issuer]]                     # optional: a cada-sts whose access tokens (RFC 9068,
//! issuer = "https://sts.example.com"   # typ at+jwt) attest the key instead of evidence
//! jwks = "sts-jwks.json"         # its /jwks, pinned in a file; and/or
//! jwks_uri = "https://sts.example.com/jwks"   # fetched (and refetched) by `serve`
//! jwks_max_stale_secs = 300      # keys fetched longer ago than this are not used (default)
//! ```
//!
//! A policy with no `[[audience]]` trusts no image: binaries refuse to start with it unless
//! the operator says `--allow-any-measurement` ([`Policy::allow_any_measurement`]).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cada_protocol::url::{HttpUrl, UrlPrefix};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::chain::{TrustAnchor, TrustStore};
use crate::nitro::NitroPolicy;
use crate::pop::ContextPolicy;
use crate::snp::{MinTcb, SnpPolicy};

/// A policy file that cannot be used, with the place and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct PolicyError {
    /// The file (or "built-in default").
    pub source_name: String,
    /// 1-based line of the offending value, when known.
    pub line: Option<usize>,
    /// What is wrong and what to write instead.
    pub message: String,
}

/// Largest policy file read.
pub const MAX_POLICY_BYTES: usize = 1024 * 1024;
/// Most audiences, measurement sets per audience, and entries per set.
const MAX_ITEMS: usize = 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    extra_roots: Option<Spanned<toml::Value>>,
    #[serde(default)]
    roots: RootsFile,
    #[serde(default)]
    evidence: EvidenceFile,
    #[serde(default)]
    snp: SnpFile,
    #[serde(default)]
    tpm: TpmFile,
    #[serde(default)]
    token: TokenFile,
    #[serde(default)]
    context: ContextFile,
    #[serde(default)]
    audience: Vec<AudienceFile>,
    #[serde(default)]
    contracts: ContractsFile,
    #[serde(default)]
    issuer: Vec<IssuerFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuerFile {
    issuer: Spanned<String>,
    #[serde(default)]
    jwks: Option<Spanned<PathBuf>>,
    #[serde(default)]
    jwks_uri: Option<Spanned<String>>,
    #[serde(default)]
    jwks_max_stale_secs: Option<Spanned<u64>>,
}

/// Default bound on the age of keys fetched from an issuer's `jwks_uri`
/// ([`TokenIssuer::jwks_max_stale_secs`]).
pub const DEFAULT_JWKS_MAX_STALE_SECS: u64 = 300;

/// An STS whose access tokens this verifier accepts (policy `[[issuer]]`).
#[derive(Debug, Clone, Serialize)]
pub struct TokenIssuer {
    /// Its issuer identifier (`iss`).
    pub issuer: String,
    /// Where `serve` fetches its JWKS, if anywhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// How long keys fetched from `jwks_uri` are used after the last fetch that succeeded
    /// (seconds; default [`DEFAULT_JWKS_MAX_STALE_SECS`]). Past it, a token signed by a
    /// fetched key is refused (`token.jwks_stale`) until a fetch succeeds again: an issuer
    /// that rotated a key out cannot be kept trusting it by blocking the fetch. Keys pinned
    /// with `jwks` never go stale.
    pub jwks_max_stale_secs: u64,
    /// The keys pinned in the policy (`jwks`), by `kid`.
    #[serde(skip)]
    pub keys: Vec<crate::access_token::IssuerKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ContractsFile {
    status_max_staleness_secs: u64,
}

impl Default for ContractsFile {
    fn default() -> Self {
        ContractsFile {
            status_max_staleness_secs: 300,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RootsFile {
    #[serde(default)]
    nitro: Vec<Spanned<PathBuf>>,
    #[serde(default)]
    sev_snp: Vec<Spanned<PathBuf>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct EvidenceFile {
    allow_debug: bool,
    max_age_secs: Spanned<u64>,
}

impl Default for EvidenceFile {
    fn default() -> Self {
        EvidenceFile {
            allow_debug: false,
            max_age_secs: Spanned::new(0..0, DEFAULT_EVIDENCE_MAX_AGE_SECS),
        }
    }
}

/// How long verified evidence is relied on unless the policy says otherwise.
pub const DEFAULT_EVIDENCE_MAX_AGE_SECS: u64 = 3 * 3600;

/// How a verifier knows SEV-SNP or TPM evidence is recent: neither an SNP report nor a
/// TPMS_ATTEST carries wall-clock time. (`[snp] freshness`, `[tpm] freshness`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnpFreshness {
    /// The evidence nonce must be a DPoP nonce this verifier (or its fleet, sharing the nonce
    /// key) issued; the evidence expires `evidence.max_age_secs` after that nonce was issued.
    VerifierNonce,
    /// Any nonce; the evidence expires `evidence.max_age_secs` after this verifier first saw
    /// it (remembered in memory: a restarted verifier forgets). Weaker; for agents that
    /// cannot ask for fresh evidence.
    FirstSeen,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SnpFile {
    freshness: SnpFreshness,
    min_tcb: MinTcb,
    max_vmpl: u32,
    allow_smt: bool,
    allow_migration_agent: bool,
    require_single_socket: bool,
    measurements: Option<Spanned<toml::Value>>,
}

impl Default for SnpFile {
    fn default() -> Self {
        SnpFile {
            freshness: SnpFreshness::VerifierNonce,
            min_tcb: MinTcb::default(),
            max_vmpl: 0,
            allow_smt: true,
            allow_migration_agent: false,
            require_single_socket: false,
            measurements: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TpmFile {
    roots: Vec<Spanned<PathBuf>>,
    ak_roots: Vec<Spanned<PathBuf>>,
    ak_roots_without_ek: Vec<Spanned<PathBuf>>,
    freshness: SnpFreshness,
    session_keys: bool,
    max_session_secs: Spanned<u64>,
    require_key_policy: bool,
}

impl Default for TpmFile {
    fn default() -> Self {
        TpmFile {
            roots: Vec::new(),
            ak_roots: Vec::new(),
            ak_roots_without_ek: Vec::new(),
            freshness: SnpFreshness::VerifierNonce,
            session_keys: true,
            max_session_secs: Spanned::new(0..0, crate::tpm::DEFAULT_MAX_SESSION_SECS),
            require_key_policy: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TokenFile {
    skew_secs: Spanned<u64>,
    require_nonce: bool,
    nonce_ttl_secs: Spanned<u64>,
    require_body_digest: bool,
}

impl Default for TokenFile {
    fn default() -> Self {
        TokenFile {
            skew_secs: Spanned::new(0..0, 10),
            require_nonce: false,
            nonce_ttl_secs: Spanned::new(0..0, 120),
            require_body_digest: false,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextFile {
    #[serde(default)]
    required: Vec<String>,
    #[serde(default)]
    allowed: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AudienceFile {
    prefix: Spanned<String>,
    #[serde(alias = "pcr_sets")]
    measurements: Spanned<Vec<BTreeMap<String, Spanned<String>>>>,
    #[serde(default)]
    owners: Vec<Spanned<String>>,
    #[serde(default)]
    owner_keys: Vec<Spanned<OwnerKeyFile>>,
    #[serde(default)]
    owner_documents: Vec<Spanned<PathBuf>>,
    #[serde(default)]
    checks_arguments: bool,
    #[serde(default)]
    max_delegation_depth: Option<Spanned<u64>>,
    #[serde(default)]
    delegator_measurements: Option<Spanned<Vec<SetFile>>>,
    #[serde(default)]
    max_delegation_lifetime_secs: Option<Spanned<u64>>,
    #[serde(default)]
    delegation_evidence_skew_secs: Option<Spanned<u64>>,
}

/// Default `max_delegation_lifetime_secs` of an audience ([`DelegationRules::max_lifetime_secs`]).
pub const DEFAULT_MAX_DELEGATION_LIFETIME_SECS: u64 = 3600;
/// Default `delegation_evidence_skew_secs` of an audience ([`DelegationRules::evidence_skew_secs`]).
pub const DEFAULT_DELEGATION_EVIDENCE_SKEW_SECS: u64 = 300;
/// Largest `max_delegation_depth` (the chain format's limit, `MAX_CHAIN_LINKS`).
pub const MAX_DELEGATION_DEPTH: usize = 8;

/// How an audience treats delegation chains (`[[audience]]` keys; docs/delegation.md,
/// "What a verifier checks").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DelegationRules {
    /// `max_delegation_depth`: most delegations below the owner's contract (default 0:
    /// a delegated chain is refused `delegation.depth`; delegation is opt-in per audience).
    #[serde(rename = "max_delegation_depth")]
    pub max_depth: usize,
    /// `delegator_measurements`: the measurement sets every delegator's evidence must meet
    /// (any one); `None`: the audience's own `measurements` apply to every delegator.
    /// A delegator whose measurements match none is refused `delegation.delegator_image`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delegator_measurements: Option<Vec<MeasurementSet>>,
    /// `max_delegation_lifetime_secs`: a link valid longer than this after its `iat` is
    /// refused `delegation.stale` (default 3600). SEV-SNP and TPM evidence carries no time:
    /// a delegator's report is trusted, as of the link's `iat`, for at most this long.
    #[serde(rename = "max_delegation_lifetime_secs")]
    pub max_lifetime_secs: u64,
    /// `delegation_evidence_skew_secs`: how far a Nitro delegator's document timestamp may
    /// lie from the link's `iat` (default 300); else `delegation.stale`.
    #[serde(rename = "delegation_evidence_skew_secs")]
    pub evidence_skew_secs: u64,
}

impl Default for DelegationRules {
    fn default() -> Self {
        DelegationRules {
            max_depth: 0,
            delegator_measurements: None,
            max_lifetime_secs: DEFAULT_MAX_DELEGATION_LIFETIME_SECS,
            evidence_skew_secs: DEFAULT_DELEGATION_EVIDENCE_SKEW_SECS,
        }
    }
}

/// One measurement set as written: name → hex, with places.
type SetFile = BTreeMap<String, Spanned<String>>;

/// `owner_keys = [{ did, kid, jwk }]`: an owner pinned by one key (e.g. a did:web owner).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnerKeyFile {
    did: String,
    kid: String,
    jwk: cada_protocol::jwk::Jwk,
}

/// One allowed image: measurement name (`PCR0`…`PCR31`, `MEASUREMENT`, `HOST_DATA`) →
/// lower-case hex. A measurement the evidence does not report counts as all zeros.
pub use cada_protocol::measurements::MeasurementSet;
use cada_protocol::measurements::{first_mismatch, platform_of};

/// `[[audience]]`: the images allowed to call URLs under `prefix`.
#[derive(Debug, Clone)]
pub struct Audience {
    /// Origin and path prefix.
    pub prefix: UrlPrefix,
    /// Allowed measurement sets; any one must match.
    pub measurements: Vec<MeasurementSet>,
    /// Owners whose trust contracts authorize proofs here (`owners = [did:key…]`). When
    /// set, a proof must name a live contract of one of them (rule 13 of
    /// [`crate::decide`]); when `None`, attestation and measurements alone decide.
    pub owners: Option<cada_contract::TrustedOwners>,
    /// `checks_arguments = true`: a CADA gate (or a resource server deciding with the body,
    /// through `cada-verify`) sits in front of this audience and checks the arguments of
    /// every call against the one-transaction grant that covers it, and consumes
    /// single-use grants in the fleet's shared store. Only then does an STS mint a token
    /// carrying an argument-limited or single-use authorization detail for a resource here
    /// (else `grant.arguments_unchecked` / `grant.single_use_unchecked`): a stock resource
    /// server reading the token would check neither. Default `false`.
    pub checks_arguments: bool,
    /// How delegation chains are treated here (`max_delegation_depth`,
    /// `delegator_measurements`, `max_delegation_lifetime_secs`,
    /// `delegation_evidence_skew_secs`).
    pub delegation: DelegationRules,
}

impl Audience {
    /// Whether a delegator's `measurements` are allowed here (rule 13 for a delegation
    /// chain): any set of `delegator_measurements`, or of the audience's own `measurements`
    /// when the policy names none. `Err` says why the closest set failed.
    pub fn check_delegator(
        &self,
        measurements: &BTreeMap<String, String>,
    ) -> Result<usize, String> {
        let (sets, key) = match &self.delegation.delegator_measurements {
            Some(s) => (s, "delegator_measurements"),
            None => (&self.measurements, "measurements"),
        };
        let mut first = None;
        for (i, set) in sets.iter().enumerate() {
            match set_mismatch(set, measurements) {
                None => return Ok(i),
                Some(d) => {
                    first.get_or_insert(d);
                }
            }
        }
        Err(format!(
            "the delegator's measurements match none of the {} sets of {key} for {} (set 0: {})",
            sets.len(),
            self.prefix,
            first.unwrap_or_default()
        ))
    }
}

/// `[contracts]`: how trust contracts are checked.
#[derive(Debug, Clone, Serialize)]
pub struct ContractRules {
    /// A status list fetched longer ago than this no longer proves a contract live.
    pub status_max_staleness_secs: u64,
}

/// Freshness rules for proofs.
#[derive(Debug, Clone, Serialize)]
pub struct TokenRules {
    /// Clock skew allowed for `iat`/`exp`, seconds.
    pub skew_secs: u64,
    /// Require a server-issued DPoP nonce.
    pub require_nonce: bool,
    /// Lifetime of issued nonces, seconds.
    pub nonce_ttl_secs: u64,
    /// Require proofs bound to the request body (`cada.bd`, rule 6): a caller that does not
    /// give the body then gets every proof refused.
    pub require_body_digest: bool,
}

/// A checked, ready-to-use policy.
#[derive(Clone)]
pub struct Policy {
    /// Where it came from (for messages).
    pub source: String,
    /// Roots for Nitro-format evidence: the pinned AWS root plus `[roots] nitro`.
    pub nitro_roots: TrustStore,
    /// Extra roots for SEV-SNP evidence (`[roots] sev_snp`); AMD's are pinned in the verifier.
    pub snp_roots: TrustStore,
    /// Nitro evidence rules.
    pub nitro: NitroPolicy,
    /// SEV-SNP evidence rules.
    pub snp: SnpPolicy,
    /// How SEV-SNP evidence is known to be recent.
    pub snp_freshness: SnpFreshness,
    /// Roots for TPM evidence: the pinned manufacturers' and clouds' plus `[tpm] roots`,
    /// `ak_roots`, `ak_roots_without_ek`.
    pub tpm_roots: crate::tpm::TpmRoots,
    /// TPM evidence rules (`[tpm]`).
    pub tpm: crate::tpm::TpmPolicy,
    /// How TPM evidence is known to be recent.
    pub tpm_freshness: SnpFreshness,
    /// How long verified evidence is relied on, milliseconds.
    pub evidence_max_age_ms: u64,
    /// Proof freshness and nonces.
    pub token: TokenRules,
    /// `cada.ctx` rules.
    pub context: ContextPolicy,
    /// Audiences, most specific first.
    pub audiences: Vec<Audience>,
    /// Trust-contract rules.
    pub contracts: ContractRules,
    /// STSs whose access tokens attest keys instead of evidence.
    pub issuers: Vec<TokenIssuer>,
    /// Operator override: URLs no audience covers accept any measurement. Never set by
    /// the file; only by `--allow-any-measurement`.
    pub allow_any_measurement: bool,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe().to_string())
    }
}

/// Which rule of the policy decided about a request's measurements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeasurementVerdict {
    /// The measurements match set `set` of the audience `prefix`.
    Allowed {
        /// The audience.
        prefix: String,
        /// Index of the matching set.
        set: usize,
    },
    /// No audience covers the URL, and the operator allowed any measurement.
    AnyAllowed,
    /// No audience covers the URL.
    NoAudience,
    /// An audience covers the URL but none of its sets matches.
    NotAllowed {
        /// The audience.
        prefix: String,
        /// Why the closest set failed.
        detail: String,
    },
}

fn line_of(text: &str, span: std::ops::Range<usize>) -> Option<usize> {
    if span.start == 0 && span.end == 0 {
        return None;
    }
    text.get(..span.start)
        .map(|t| t.bytes().filter(|b| *b == b'\n').count() + 1)
}

struct Ctx<'a> {
    text: &'a str,
    source: &'a str,
}

impl Ctx<'_> {
    fn err(&self, span: Option<std::ops::Range<usize>>, message: impl Into<String>) -> PolicyError {
        PolicyError {
            source_name: self.source.to_owned(),
            line: span.and_then(|s| line_of(self.text, s)),
            message: message.into(),
        }
    }
}

impl Policy {
    /// The built-in default: pinned roots only, debug refused, default freshness, and no
    /// audience — so it trusts no image until [`Policy::allow_any_measurement`] is set.
    pub fn builtin() -> Self {
        match Self::from_toml("", Path::new("."), "built-in default") {
            Ok(p) => p,
            // The empty document always parses; keep a safe value regardless.
            Err(_) => Policy {
                source: "built-in default".into(),
                nitro_roots: crate::roots::nitro_store(),
                snp_roots: TrustStore::empty(),
                nitro: NitroPolicy::default(),
                snp: SnpPolicy {
                    max_vmpl: Some(0),
                    ..SnpPolicy::default()
                },
                snp_freshness: SnpFreshness::VerifierNonce,
                tpm_roots: crate::tpm::TpmRoots::pinned(),
                tpm: crate::tpm::TpmPolicy::default(),
                tpm_freshness: SnpFreshness::VerifierNonce,
                evidence_max_age_ms: DEFAULT_EVIDENCE_MAX_AGE_SECS * 1000,
                token: TokenRules {
                    skew_secs: 10,
                    require_nonce: false,
                    nonce_ttl_secs: 120,
                    require_body_digest: false,
                },
                context: ContextPolicy::default(),
                audiences: vec![],
                contracts: ContractRules {
                    status_max_staleness_secs: 300,
                },
                issuers: vec![],
                allow_any_measurement: false,
            },
        }
    }

    /// Reads and checks a policy file; root paths are relative to its directory.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let source = path.display().to_string();
        let fail = |message: String| PolicyError {
            source_name: source.clone(),
            line: None,
            message,
        };
        let bytes = read_bounded(path, MAX_POLICY_BYTES).map_err(fail)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| fail("cannot read: the file is not UTF-8 text".into()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, base, &source)
    }

    /// Parses and checks policy text; root paths are relative to `base`.
    pub fn from_toml(text: &str, base: &Path, source: &str) -> Result<Self, PolicyError> {
        let cx = Ctx { text, source };
        if text.len() > MAX_POLICY_BYTES {
            return Err(cx.err(None, "the policy is larger than 1 MiB"));
        }
        let file: File = toml::from_str(text).map_err(|e| {
            cx.err(
                e.span(),
                e.message().to_owned() + " (see `cada-verify policy check --help` for the format)",
            )
        })?;
        if let Some(v) = &file.extra_roots {
            return Err(cx.err(
                Some(v.span()),
                "`extra_roots` was replaced by per-platform roots: write `[roots]` with \
                 `nitro = [...]` (Nitro and sim evidence) and/or `sev_snp = [...]` (SEV-SNP \
                 and sim-snp evidence)",
            ));
        }
        if let Some(v) = &file.snp.measurements {
            return Err(cx.err(
                Some(v.span()),
                "`[snp] measurements` was replaced by per-audience sets: write \
                 `{ MEASUREMENT = \"…\" }` in an `[[audience]]`'s `measurements`",
            ));
        }
        let mut nitro_roots = crate::roots::nitro_store();
        for r in &file.roots.nitro {
            nitro_roots.add(read_root(&cx, base, r)?);
        }
        let mut snp_roots = TrustStore::empty();
        for r in &file.roots.sev_snp {
            snp_roots.add(read_root(&cx, base, r)?);
        }
        let mut tpm_roots = crate::tpm::TpmRoots::pinned();
        for (list, kind) in [
            (&file.tpm.roots, 0),
            (&file.tpm.ak_roots, 1),
            (&file.tpm.ak_roots_without_ek, 2),
        ] {
            for r in list {
                let (name, der) = read_root_der(&cx, base, r)?;
                let added = match kind {
                    0 => tpm_roots.add_ek_root(&name, &der),
                    1 => tpm_roots.add_ak_root(&name, &der, false),
                    _ => tpm_roots.add_ak_root(&name, &der, true),
                };
                added.map_err(|e| cx.err(Some(r.span()), format!("root {name}: {e}")))?;
            }
        }
        let max_session = *file.tpm.max_session_secs.get_ref();
        if max_session == 0 || max_session > cada_protocol::tpm::MAX_SESSION_SECS {
            return Err(cx.err(
                Some(file.tpm.max_session_secs.span()),
                format!(
                    "tpm.max_session_secs must be 1..={} (a day)",
                    cada_protocol::tpm::MAX_SESSION_SECS
                ),
            ));
        }
        let max_age = *file.evidence.max_age_secs.get_ref();
        if max_age == 0 || max_age > 7 * 24 * 3600 {
            return Err(cx.err(
                Some(file.evidence.max_age_secs.span()),
                "evidence.max_age_secs must be 1..=604800 (one week)",
            ));
        }
        let skew = *file.token.skew_secs.get_ref();
        if skew > 300 {
            return Err(cx.err(
                Some(file.token.skew_secs.span()),
                "token.skew_secs above 300 s defeats freshness",
            ));
        }
        let ttl = *file.token.nonce_ttl_secs.get_ref();
        if ttl == 0 || ttl > 3600 {
            return Err(cx.err(
                Some(file.token.nonce_ttl_secs.span()),
                "token.nonce_ttl_secs must be 1..=3600",
            ));
        }
        for k in file
            .context
            .required
            .iter()
            .chain(file.context.allowed.keys())
        {
            if k.is_empty() || k.len() > 64 {
                return Err(cx.err(None, format!("context key {k:?} must be 1..=64 characters")));
            }
        }
        for (k, v) in &file.context.allowed {
            if v.is_empty() {
                return Err(cx.err(
                    None,
                    format!("context.allowed.{k} is empty: it would refuse every value; remove the key to allow any"),
                ));
            }
        }
        if file.audience.len() > MAX_ITEMS {
            return Err(cx.err(None, format!("more than {MAX_ITEMS} audiences")));
        }
        let mut audiences = Vec::with_capacity(file.audience.len());
        for a in &file.audience {
            let prefix = UrlPrefix::parse(a.prefix.get_ref())
                .map_err(|e| cx.err(Some(a.prefix.span()), format!("audience prefix: {e}")))?;
            if audiences.iter().any(|x: &Audience| x.prefix == prefix) {
                return Err(cx.err(
                    Some(a.prefix.span()),
                    format!("audience {prefix} appears twice; merge its measurement sets"),
                ));
            }
            let sets = a.measurements.get_ref();
            if sets.is_empty() {
                return Err(cx.err(
                    Some(a.measurements.span()),
                    format!("audience {prefix} allows no measurement set, so it would refuse everything; list at least one"),
                ));
            }
            if sets.len() > MAX_ITEMS {
                return Err(cx.err(Some(a.measurements.span()), "too many measurement sets"));
            }
            let out = measurement_sets(&cx, sets, a.measurements.span())?;
            let delegation = delegation_rules(&cx, a, &prefix)?;
            let owners = if a.owners.is_empty()
                && a.owner_keys.is_empty()
                && a.owner_documents.is_empty()
            {
                None
            } else {
                let count = a.owners.len() + a.owner_keys.len() + a.owner_documents.len();
                if count > cada_contract::MAX_TRUSTED_KEYS {
                    return Err(cx.err(Some(a.prefix.span()), "too many owners"));
                }
                let mut t = cada_contract::TrustedOwners::new();
                for o in &a.owners {
                    t.add_did_key(o.get_ref()).map_err(|e| {
                        cx.err(
                            Some(o.span()),
                            format!("owner {:?}: {e} (owners are did:key DIDs from `cada-owner keygen`; pin other DIDs with owner_keys or owner_documents)", o.get_ref()),
                        )
                    })?;
                }
                for k in &a.owner_keys {
                    let v = k.get_ref();
                    t.add_jwk(&v.did, &v.kid, &v.jwk).map_err(|e| {
                        cx.err(Some(k.span()), format!("owner key {:?}: {e}", v.kid))
                    })?;
                }
                for doc in &a.owner_documents {
                    let path = if doc.get_ref().is_absolute() {
                        doc.get_ref().clone()
                    } else {
                        base.join(doc.get_ref())
                    };
                    let raw =
                        read_bounded(&path, cada_contract::MAX_DID_DOCUMENT_LEN).map_err(|e| {
                            cx.err(
                                Some(doc.span()),
                                format!("owner document {}: {e}", path.display()),
                            )
                        })?;
                    t.add_did_document(&raw).map_err(|e| {
                        cx.err(
                            Some(doc.span()),
                            format!("owner document {}: {e}", path.display()),
                        )
                    })?;
                }
                Some(t)
            };
            audiences.push(Audience {
                prefix,
                measurements: out,
                owners,
                checks_arguments: a.checks_arguments,
                delegation,
            });
        }
        audiences.sort_by_key(|a| std::cmp::Reverse(a.prefix.specificity()));
        let mut issuers: Vec<TokenIssuer> = Vec::new();
        for i in &file.issuer {
            let span = Some(i.issuer.span());
            let name = i.issuer.get_ref().trim_end_matches('/').to_owned();
            HttpUrl::parse_canonical(&format!("{name}/token")).map_err(|e| {
                cx.err(
                    span.clone(),
                    format!("issuer {name:?}: {e} (the STS's issuer URL)"),
                )
            })?;
            if issuers.iter().any(|o| o.issuer == name) || issuers.len() >= 16 {
                return Err(cx.err(
                    span,
                    format!("issuer {name:?}: listed twice, or more than 16 issuers"),
                ));
            }
            if i.jwks.is_none() && i.jwks_uri.is_none() {
                return Err(cx.err(
                    span,
                    format!("issuer {name:?}: give its keys, `jwks = \"file\"` (the STS's /jwks) and/or `jwks_uri`"),
                ));
            }
            let mut keys = Vec::new();
            if let Some(f) = &i.jwks {
                let path = if f.get_ref().is_absolute() {
                    f.get_ref().clone()
                } else {
                    base.join(f.get_ref())
                };
                let raw = read_bounded(&path, crate::access_token::MAX_JWKS_LEN)
                    .map_err(|e| cx.err(Some(f.span()), format!("jwks {}: {e}", path.display())))?;
                keys = crate::access_token::parse_jwks(&raw)
                    .map_err(|e| cx.err(Some(f.span()), format!("jwks {}: {e}", path.display())))?;
            }
            if let Some(u) = &i.jwks_uri {
                HttpUrl::parse_canonical(u.get_ref())
                    .map_err(|e| cx.err(Some(u.span()), format!("jwks_uri: {e}")))?;
            }
            let jwks_max_stale_secs = match &i.jwks_max_stale_secs {
                None => DEFAULT_JWKS_MAX_STALE_SECS,
                Some(m) if i.jwks_uri.is_none() => {
                    return Err(cx.err(
                        Some(m.span()),
                        format!(
                            "issuer {name:?}: jwks_max_stale_secs bounds keys fetched from \
                             jwks_uri, and this issuer has none"
                        ),
                    ))
                }
                Some(m) if *m.get_ref() == 0 || *m.get_ref() > 86_400 => {
                    return Err(cx.err(
                        Some(m.span()),
                        format!(
                            "issuer {name:?}: jwks_max_stale_secs must be 1 to 86400 seconds \
                             (a day); the default is {DEFAULT_JWKS_MAX_STALE_SECS}"
                        ),
                    ))
                }
                Some(m) => *m.get_ref(),
            };
            issuers.push(TokenIssuer {
                issuer: name,
                jwks_uri: i.jwks_uri.as_ref().map(|u| u.get_ref().clone()),
                jwks_max_stale_secs,
                keys,
            });
        }
        let max_age_ms = max_age.saturating_mul(1000);
        let nitro = NitroPolicy {
            allow_debug: file.evidence.allow_debug,
            max_age_ms: Some(max_age_ms),
            max_future_skew_ms: skew.saturating_mul(1000),
            ..NitroPolicy::default()
        };
        let snp = SnpPolicy {
            allow_debug: file.evidence.allow_debug,
            min_tcb: file.snp.min_tcb.clone(),
            max_vmpl: Some(file.snp.max_vmpl),
            allow_smt: file.snp.allow_smt,
            allow_migration_agent: file.snp.allow_migration_agent,
            require_single_socket: file.snp.require_single_socket,
            ..SnpPolicy::default()
        };
        Ok(Policy {
            source: source.into(),
            nitro_roots,
            snp_roots,
            nitro,
            snp,
            snp_freshness: file.snp.freshness,
            tpm_roots,
            tpm: crate::tpm::TpmPolicy {
                allow_session_keys: file.tpm.session_keys,
                max_session_secs: max_session,
                require_key_policy: file.tpm.require_key_policy,
            },
            tpm_freshness: file.tpm.freshness,
            evidence_max_age_ms: max_age_ms,
            token: TokenRules {
                skew_secs: skew,
                require_nonce: file.token.require_nonce,
                nonce_ttl_secs: ttl,
                require_body_digest: file.token.require_body_digest,
            },
            context: ContextPolicy {
                required: file.context.required,
                allowed_values: file.context.allowed,
            },
            audiences,
            contracts: ContractRules {
                status_max_staleness_secs: file.contracts.status_max_staleness_secs,
            },
            issuers,
            allow_any_measurement: false,
        })
    }

    /// Whether this policy can run: it names at least one audience, or the operator
    /// allowed any measurement. A verifier that trusts every image by default is not one.
    pub fn check_startable(&self) -> Result<(), PolicyError> {
        if self.audiences.is_empty() && !self.allow_any_measurement {
            return Err(PolicyError {
                source_name: self.source.clone(),
                line: None,
                message: "the policy allows no image: add an [[audience]] with the measurements \
                          of the images you trust (`cada-verify pcrs` prints an EIF's), or pass \
                          --allow-any-measurement for development"
                    .into(),
            });
        }
        Ok(())
    }

    /// Every owner any audience trusts (status lists and reinstatements are checked
    /// against them; each is then matched to its contract's owner).
    pub fn all_owners(&self) -> cada_contract::TrustedOwners {
        let mut all = cada_contract::TrustedOwners::new();
        for o in self.audiences.iter().filter_map(|a| a.owners.as_ref()) {
            // The same kid with two keys in two audiences: the first wins here; each
            // audience still checks its own owners in rule 13.
            let _ = all.extend_from(o);
        }
        all
    }

    /// An audience strictly narrower than `prefix` (under it, more specific), if any: a
    /// token for `prefix` would also cover that audience's URLs, whose own rules it was
    /// never checked against.
    pub fn narrower_audience(&self, prefix: &UrlPrefix) -> Option<&Audience> {
        self.audiences.iter().find(|a| {
            a.prefix.specificity() > prefix.specificity()
                && HttpUrl::parse_normalized(a.prefix.as_str()).is_ok_and(|u| prefix.matches(&u))
        })
    }

    /// The audience that governs `url` (the most specific matching prefix).
    pub fn audience_for(&self, url: &HttpUrl) -> Option<&Audience> {
        self.audiences.iter().find(|a| a.prefix.matches(url))
    }

    /// Decides whether `measurements` may call `url`.
    pub fn check_measurements(
        &self,
        url: &HttpUrl,
        measurements: &BTreeMap<String, String>,
    ) -> MeasurementVerdict {
        let Some(aud) = self.audience_for(url) else {
            return if self.allow_any_measurement {
                MeasurementVerdict::AnyAllowed
            } else {
                MeasurementVerdict::NoAudience
            };
        };
        let mut detail = String::new();
        for (i, set) in aud.measurements.iter().enumerate() {
            match set_mismatch(set, measurements) {
                None => {
                    return MeasurementVerdict::Allowed {
                        prefix: aud.prefix.to_string(),
                        set: i,
                    }
                }
                Some(d) if detail.is_empty() => detail = d,
                Some(_) => {}
            }
        }
        MeasurementVerdict::NotAllowed {
            prefix: aud.prefix.to_string(),
            detail: format!(
                "measurements match none of the {} sets allowed for {} (set 0: {detail})",
                aud.measurements.len(),
                aud.prefix
            ),
        }
    }

    /// A summary of the effective policy, for `cada-verify policy check`.
    pub fn describe(&self) -> serde_json::Value {
        let roots = |s: &TrustStore| {
            s.anchors()
                .iter()
                .map(|a| serde_json::json!({"name": a.name, "sha256": a.fingerprint_hex()}))
                .collect::<Vec<_>>()
        };
        serde_json::json!({
            "source": self.source,
            "roots": {
                "nitro": roots(&self.nitro_roots),
                "sev_snp_extra": roots(&self.snp_roots),
                "sev_snp_pinned": "AMD ARKs of Milan, Genoa and Turin",
                "tpm": self.tpm_roots.describe(),
            },
            "tpm": {
                "freshness": self.tpm_freshness,
                "session_keys": self.tpm.allow_session_keys,
                "max_session_secs": self.tpm.max_session_secs,
                "require_key_policy": self.tpm.require_key_policy,
            },
            "evidence": {
                "allow_debug": self.nitro.allow_debug,
                "max_age_secs": self.evidence_max_age_ms / 1000,
            },
            "snp": {
                "freshness": self.snp_freshness,
                "min_tcb": self.snp.min_tcb,
                "max_vmpl": self.snp.max_vmpl,
                "allow_smt": self.snp.allow_smt,
                "allow_migration_agent": self.snp.allow_migration_agent,
                "require_single_socket": self.snp.require_single_socket,
            },
            "token": self.token,
            "context": {
                "required": self.context.required,
                "allowed": self.context.allowed_values,
            },
            "audiences": self.audiences.iter().map(|a| serde_json::json!({
                "prefix": a.prefix.to_string(),
                "measurements": a.measurements,
                "owners": a.owners.as_ref().map(|o| o.dids()),
                "delegation": a.delegation,
            })).collect::<Vec<_>>(),
            "contracts": self.contracts,
            "issuers": self.issuers,
            "allow_any_measurement": self.allow_any_measurement,
        })
    }
}

/// Checks the measurement sets of one audience key (`measurements`,
/// `delegator_measurements`): each non-empty, of one platform, its values hex of the
/// right length.
fn measurement_sets(
    cx: &Ctx<'_>,
    sets: &[BTreeMap<String, Spanned<String>>],
    span: std::ops::Range<usize>,
) -> Result<Vec<MeasurementSet>, PolicyError> {
    let mut out = Vec::with_capacity(sets.len());
    for set in sets {
        if set.is_empty() {
            return Err(cx.err(
                Some(span.clone()),
                "an empty measurement set `{}` would match every image; name at least PCR0 or MEASUREMENT",
            ));
        }
        let mut platform = None;
        let mut checked = MeasurementSet::new();
        for (k, v) in set {
            let Some(p) = platform_of(k) else {
                return Err(cx.err(
                    Some(v.span()),
                    format!("{k:?} is not a measurement name: use PCR0..PCR31 (Nitro), MEASUREMENT / HOST_DATA (SEV-SNP) or TPM_PCR0..TPM_PCR23 (TPM, SHA-256 bank)"),
                ));
            };
            if platform.is_some_and(|q| q != p) {
                return Err(cx.err(
                    Some(v.span()),
                    "a measurement set mixes measurements of different platforms (Nitro PCRs, SEV-SNP, TPM PCRs); write one set per image",
                ));
            }
            platform = Some(p);
            let want = cada_protocol::measurements::value_len(k);
            match hex::decode(v.get_ref()) {
                Ok(b) if b.len() == want => {
                    checked.insert(k.clone(), hex::encode(b));
                }
                _ => {
                    return Err(cx.err(
                        Some(v.span()),
                        format!("{k} = {:?} is not {want} bytes of hex", v.get_ref()),
                    ))
                }
            }
        }
        if platform == Some("sev-snp") && !checked.contains_key("MEASUREMENT") {
            return Err(cx.err(
                Some(span.clone()),
                "an SEV-SNP set must name MEASUREMENT (HOST_DATA alone says nothing about the image)",
            ));
        }
        out.push(checked);
    }
    Ok(out)
}

/// The delegation keys of one `[[audience]]` ([`DelegationRules`]).
fn delegation_rules(
    cx: &Ctx<'_>,
    a: &AudienceFile,
    prefix: &UrlPrefix,
) -> Result<DelegationRules, PolicyError> {
    let mut rules = DelegationRules::default();
    if let Some(d) = &a.max_delegation_depth {
        let depth = usize::try_from(*d.get_ref()).unwrap_or(usize::MAX);
        if depth > MAX_DELEGATION_DEPTH {
            return Err(cx.err(
                Some(d.span()),
                format!(
                    "audience {prefix}: max_delegation_depth must be 0..={MAX_DELEGATION_DEPTH} \
                     (0, the default, refuses delegated chains)"
                ),
            ));
        }
        rules.max_depth = depth;
    }
    if let Some(m) = &a.delegator_measurements {
        if m.get_ref().is_empty() || m.get_ref().len() > MAX_ITEMS {
            return Err(cx.err(
                Some(m.span()),
                format!(
                    "audience {prefix}: delegator_measurements lists no set (it would refuse \
                     every delegator) or too many; remove the key to apply the audience's own \
                     measurements to delegators"
                ),
            ));
        }
        rules.delegator_measurements = Some(measurement_sets(cx, m.get_ref(), m.span())?);
    }
    if let Some(l) = &a.max_delegation_lifetime_secs {
        if *l.get_ref() == 0 || *l.get_ref() > 7 * 24 * 3600 {
            return Err(cx.err(
                Some(l.span()),
                format!(
                    "audience {prefix}: max_delegation_lifetime_secs must be 1..=604800 (one \
                     week); the default is {DEFAULT_MAX_DELEGATION_LIFETIME_SECS}"
                ),
            ));
        }
        rules.max_lifetime_secs = *l.get_ref();
    }
    if let Some(k) = &a.delegation_evidence_skew_secs {
        if *k.get_ref() > 3600 {
            return Err(cx.err(
                Some(k.span()),
                format!(
                    "audience {prefix}: delegation_evidence_skew_secs must be 0..=3600; the \
                     default is {DEFAULT_DELEGATION_EVIDENCE_SKEW_SECS}"
                ),
            ));
        }
        rules.evidence_skew_secs = *k.get_ref();
    }
    let keyed = rules.max_depth > 0
        || a.delegator_measurements.is_some()
        || a.max_delegation_lifetime_secs.is_some()
        || a.delegation_evidence_skew_secs.is_some();
    if keyed && a.owners.is_empty() && a.owner_keys.is_empty() && a.owner_documents.is_empty() {
        return Err(cx.err(
            Some(a.prefix.span()),
            format!(
                "audience {prefix}: delegation keys apply to owners' contracts; this audience \
                 names no owners"
            ),
        ));
    }
    Ok(rules)
}

/// `None` when every named measurement matches, else what differs first.
fn set_mismatch(set: &MeasurementSet, got: &BTreeMap<String, String>) -> Option<String> {
    first_mismatch(set, got).map(|(k, want, have)| format!("{k} is {have}, {want} is required"))
}

/// Largest root certificate file read.
const MAX_ROOT_BYTES: usize = 64 * 1024;

/// Reads a regular file of at most `max` bytes. The size is checked while reading, not only
/// from the metadata: `/dev/zero`, `/proc` files and FIFOs report a length of 0.
fn read_bounded(path: &Path, max: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("cannot read: not a regular file".into());
    }
    let too_large = || format!("larger than the {max}-byte limit");
    if meta.len() > max as u64 {
        return Err(too_large());
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut out = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("cannot read: {e}"))?;
    if out.len() > max {
        return Err(too_large());
    }
    Ok(out)
}

/// Reads a root certificate file (PEM or DER): its name (the path) and DER.
fn read_root_der(
    cx: &Ctx<'_>,
    base: &Path,
    r: &Spanned<PathBuf>,
) -> Result<(String, Vec<u8>), PolicyError> {
    let path = if r.get_ref().is_absolute() {
        r.get_ref().clone()
    } else {
        base.join(r.get_ref())
    };
    let span = Some(r.span());
    let raw = read_bounded(&path, MAX_ROOT_BYTES)
        .map_err(|e| cx.err(span.clone(), format!("root {}: {e}", path.display())))?;
    let der = crate::x509::certs_from_pem_or_der(&raw)
        .and_then(|c| c.into_iter().next())
        .ok_or_else(|| {
            cx.err(
                span,
                format!("root {}: not a PEM or DER certificate", path.display()),
            )
        })?;
    Ok((path.display().to_string(), der))
}

fn read_root(cx: &Ctx<'_>, base: &Path, r: &Spanned<PathBuf>) -> Result<TrustAnchor, PolicyError> {
    let path = if r.get_ref().is_absolute() {
        r.get_ref().clone()
    } else {
        base.join(r.get_ref())
    };
    let span = Some(r.span());
    let raw = read_bounded(&path, MAX_ROOT_BYTES)
        .map_err(|e| cx.err(span.clone(), format!("root {}: {e}", path.display())))?;
    let der = crate::x509::certs_from_pem_or_der(&raw)
        .and_then(|c| c.into_iter().next())
        .ok_or_else(|| {
            cx.err(
                span.clone(),
                format!("root {}: not a PEM or DER certificate", path.display()),
            )
        })?;
    TrustAnchor::from_der(path.display().to_string(), &der)
        .map_err(|e| cx.err(span, format!("root {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::from_toml(text, Path::new("."), "test.toml")
    }

    fn url(s: &str) -> HttpUrl {
        HttpUrl::parse_normalized(s).unwrap()
    }

    #[test]
    fn audiences_most_specific_prefix_and_rollout_sets() {
        let a = "aa".repeat(48);
        let b = "bb".repeat(48);
        let p = parse(&format!(
            r#"
            [[audience]]
            prefix = "https://api.example.com/"
            measurements = [ {{ PCR0 = "{a}" }}, {{ PCR0 = "{b}" }}, {{ MEASUREMENT = "{a}" }} ]
            [[audience]]
            prefix = "https://api.example.com/admin"
            measurements = [ {{ PCR0 = "{b}" }} ]
            "#
        ))
        .unwrap();
        let m = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        let ok = |u: &str, k: &str, v: &str| {
            matches!(
                p.check_measurements(&url(u), &m(k, v)),
                MeasurementVerdict::Allowed { .. }
            )
        };
        assert!(ok("https://api.example.com/x", "PCR0", &a));
        assert!(ok("https://api.example.com/x", "PCR0", &b));
        assert!(ok("https://api.example.com/x", "MEASUREMENT", &a));
        assert!(!ok("https://api.example.com/x", "MEASUREMENT", &b));
        assert!(!ok("https://api.example.com/admin/x", "PCR0", &a));
        assert!(ok("https://api.example.com/admin/x", "PCR0", &b));
        // /administrator is not under /admin: the broader audience applies.
        assert!(ok("https://api.example.com/administrator", "PCR0", &a));
        assert_eq!(
            p.check_measurements(&url("https://other.example/"), &m("PCR0", &a)),
            MeasurementVerdict::NoAudience
        );
        assert_eq!(
            p.check_measurements(&url("https://api.example.com.evil.net/"), &m("PCR0", &a)),
            MeasurementVerdict::NoAudience
        );
        // A PCR the evidence omits counts as zero.
        let zero = "00".repeat(48);
        let p0 = parse(&format!(
            "[[audience]]\nprefix = \"https://h.example\"\nmeasurements = [{{ PCR0 = \"{a}\", PCR8 = \"{zero}\" }}]"
        ))
        .unwrap();
        assert!(matches!(
            p0.check_measurements(&url("https://h.example/"), &m("PCR0", &a)),
            MeasurementVerdict::Allowed { .. }
        ));
    }

    #[test]
    fn documented_snp_measurement_form_loads() {
        let m = "7a".repeat(48);
        let p = parse(&format!(
            "[[audience]]\nprefix = \"https://h.example/\"\npcr_sets = [{{ MEASUREMENT = \"{m}\" }}]"
        ))
        .unwrap();
        assert_eq!(p.audiences[0].measurements[0]["MEASUREMENT"], m);
    }

    #[test]
    fn no_audience_refuses_to_start_unless_allowed() {
        let mut p = parse("").unwrap();
        let e = p.check_startable().unwrap_err();
        assert!(e.message.contains("--allow-any-measurement"), "{e}");
        assert_eq!(
            p.check_measurements(&url("https://h.example/"), &BTreeMap::new()),
            MeasurementVerdict::NoAudience
        );
        p.allow_any_measurement = true;
        assert!(p.check_startable().is_ok());
        assert_eq!(
            p.check_measurements(&url("https://h.example/"), &BTreeMap::new()),
            MeasurementVerdict::AnyAllowed
        );
        assert!(Policy::builtin().check_startable().is_err());
    }

    #[test]
    fn defaults_fail_closed() {
        let p = parse("").unwrap();
        assert_eq!(p.snp.max_vmpl, Some(0));
        assert!(!p.nitro.allow_debug && !p.snp.allow_debug);
        assert_eq!(p.snp_freshness, SnpFreshness::VerifierNonce);
        assert_eq!(p.nitro_roots.anchors().len(), 1);
        assert!(p.snp_roots.anchors().is_empty());
    }

    #[test]
    fn bad_files_name_the_line_and_the_fix() {
        let h = "aa".repeat(48);
        for (text, want, line) in [
            ("[token]\nskew_secs = 9999", "skew", Some(2)),
            ("[token]\nnonce_ttl_secs = 0", "nonce_ttl", Some(2)),
            ("[evidence]\nmax_age_secs = 0", "max_age", Some(2)),
            (
                "[[audience]]\nprefix = \"ftp://x/\"\nmeasurements = [{PCR0 = \"00\"}]",
                "not http",
                Some(2),
            ),
            (
                "[[audience]]\nprefix = \"https://x/\"\nmeasurements = [{PCR0 = \"00\"}]",
                "48 bytes",
                Some(3),
            ),
            (
                "[[audience]]\nprefix = \"https://x/\"\nmeasurements = [{PCR0 = \"zz\"}]",
                "48 bytes",
                Some(3),
            ),
            (
                "[[audience]]\nprefix = \"https://x/\"\n\nmeasurements = [{PCR99 = \"00\"}]",
                "PCR0..PCR31",
                Some(4),
            ),
            (
                "[[audience]]\nprefix = \"https://x/\"\nmeasurements = []",
                "no measurement set",
                Some(3),
            ),
            (
                "[[audience]]\nprefix = \"https://x/\"\nmeasurements = [{}]",
                "empty measurement set",
                Some(3),
            ),
            (
                "[[audience]]\nprefix = \"https://u@x/\"\nmeasurements = [{PCR0 = \"00\"}]",
                "userinfo",
                Some(2),
            ),
            (
                "[[audience]]\nprefix = \"https://X/\"\nmeasurements = [{PCR0 = \"00\"}]",
                "normal form",
                Some(2),
            ),
            ("unknown_key = 1", "unknown field", Some(1)),
            ("extra_roots = [\"a.pem\"]", "[roots]", Some(1)),
            ("[snp]\nmeasurements = []", "per-audience", Some(2)),
            ("[snp]\nfreshness = \"never\"", "unknown variant", Some(2)),
            (
                "[roots]\nnitro = [\"/nonexistent.pem\"]",
                "nonexistent",
                Some(2),
            ),
            ("[context]\nallowed = { model = [] }", "empty", None),
        ] {
            let err = parse(text).err().unwrap();
            assert!(err.to_string().contains(want), "{text}: {err}");
            assert_eq!(err.line, line, "{text}: {err}");
        }
        let mixed = format!(
            "[[audience]]\nprefix = \"https://x/\"\nmeasurements = [{{PCR0 = \"{h}\", MEASUREMENT = \"{h}\"}}]"
        );
        assert!(parse(&mixed).unwrap_err().message.contains("mixes"));
        let host_only = format!(
            "[[audience]]\nprefix = \"https://x/\"\nmeasurements = [{{HOST_DATA = \"{}\"}}]",
            "00".repeat(32)
        );
        assert!(parse(&host_only)
            .unwrap_err()
            .message
            .contains("must name MEASUREMENT"));
        let twice = format!(
            "[[audience]]\nprefix = \"https://x/\"\nmeasurements = [{{PCR0 = \"{h}\"}}]\n[[audience]]\nprefix = \"https://x\"\nmeasurements = [{{PCR0 = \"{h}\"}}]"
        );
        assert!(parse(&twice).unwrap_err().message.contains("twice"));
    }

    /// Found by the `policy_toml` fuzz target: `[roots] nitro = ["/dev/zero"]` read without
    /// end (the 64 KiB check looked only at the reported length, 0) until out of memory.
    /// `Policy::load` of a device had the same flaw.
    #[cfg(unix)]
    #[test]
    fn roots_and_policy_files_that_are_not_regular_files_are_refused() {
        for dev in ["/dev/zero", "/dev/urandom"] {
            let err = parse(&format!("[roots]\nnitro = [\"{dev}\"]")).unwrap_err();
            assert!(err.message.contains("not a regular file"), "{err}");
            assert_eq!(err.line, Some(2));
            let err = parse(&format!("[roots]\nsev_snp = [\"{dev}\"]")).unwrap_err();
            assert!(err.message.contains("not a regular file"), "{err}");
            let err = Policy::load(Path::new(dev)).unwrap_err();
            assert!(err.message.contains("not a regular file"), "{err}");
        }
        let dir = std::env::temp_dir().join(format!("cada-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big.pem");
        std::fs::write(&big, vec![b'A'; MAX_ROOT_BYTES + 1]).unwrap();
        let err = parse(&format!(
            "[roots]\nnitro = [{:?}]",
            big.display().to_string()
        ))
        .unwrap_err();
        assert!(err.message.contains("limit"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn owners_by_did_key_jwk_or_document() {
        let aud = |extra: &str| {
            format!(
                "[[audience]]\nprefix = \"https://api.example.com/\"\nmeasurements = [{{ PCR0 = \"{}\" }}]\n{extra}",
                "ab".repeat(48)
            )
        };
        let a = cada_contract::OwnerKey::generate(cada_contract::OwnerAlg::Ed25519).unwrap();
        let mut web = cada_contract::OwnerKey::generate(cada_contract::OwnerAlg::Es256).unwrap();
        web.use_did_web("did:web:owner.example").unwrap();
        let jwk = web.public_key().jwk();
        let p = parse(&aud(&format!(
            "owners = [\"{}\"]\nowner_keys = [{{ did = \"did:web:owner.example\", kid = \"{}\", jwk = {{ kty = \"{}\", crv = \"{}\", x = \"{}\", y = \"{}\" }} }}]\n",
            a.did(),
            web.kid(),
            jwk.kty,
            jwk.crv,
            jwk.x,
            jwk.y.clone().unwrap_or_default()
        )))
        .unwrap();
        let owners = p.audiences[0].owners.as_ref().unwrap();
        assert!(owners.is_trusted(a.did()) && owners.is_trusted("did:web:owner.example"));
        assert!(p.all_owners().is_trusted("did:web:owner.example"));
        // A pinned DID document, relative to the policy's directory.
        let dir = std::env::temp_dir().join(format!("cada-owners-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("did.json"), web.did_document().to_string()).unwrap();
        let p = Policy::from_toml(&aud("owner_documents = [\"did.json\"]\n"), &dir, "t").unwrap();
        assert!(p.audiences[0]
            .owners
            .as_ref()
            .unwrap()
            .is_trusted("did:web:owner.example"));
        // Refusals name the line.
        let e = parse(&aud("owners = [\"did:web:owner.example\"]\n")).unwrap_err();
        assert!(e.message.contains("owner_keys or owner_documents"), "{e}");
        assert_eq!(e.line, Some(4));
        let e = Policy::from_toml(&aud("owner_documents = [\"missing.json\"]\n"), &dir, "t")
            .unwrap_err();
        assert!(e.message.contains("missing.json"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        // No owners: no contract rule for the audience.
        assert!(parse(&aud("")).unwrap().audiences[0].owners.is_none());
    }

    /// Issue 24: the delegation keys of an audience, their defaults (depth 0: opt-in) and
    /// their refusals.
    #[test]
    fn delegation_keys_load_with_safe_defaults() {
        let o = cada_contract::OwnerKey::generate(cada_contract::OwnerAlg::Ed25519).unwrap();
        let pcr = "ab".repeat(48);
        let aud = |extra: &str| {
            format!(
                "[[audience]]\nprefix = \"https://api.example.com/\"\nmeasurements = [{{ PCR0 = \"{pcr}\" }}]\nowners = [\"{}\"]\n{extra}",
                o.did()
            )
        };
        let p = parse(&aud("")).unwrap();
        assert_eq!(p.audiences[0].delegation, DelegationRules::default());
        assert_eq!(p.audiences[0].delegation.max_depth, 0);
        assert_eq!(p.audiences[0].delegation.max_lifetime_secs, 3600);
        assert_eq!(p.audiences[0].delegation.evidence_skew_secs, 300);
        let other = "cd".repeat(48);
        let p = parse(&aud(&format!(
            "max_delegation_depth = 2\ndelegator_measurements = [{{ PCR0 = \"{other}\" }}]\nmax_delegation_lifetime_secs = 600\ndelegation_evidence_skew_secs = 30"
        )))
        .unwrap();
        let d = &p.audiences[0].delegation;
        assert_eq!(
            (d.max_depth, d.max_lifetime_secs, d.evidence_skew_secs),
            (2, 600, 30)
        );
        let m = |v: &str| BTreeMap::from([("PCR0".to_string(), v.to_string())]);
        assert_eq!(p.audiences[0].check_delegator(&m(&other)), Ok(0));
        assert!(p.audiences[0].check_delegator(&m(&pcr)).is_err());
        // Without delegator_measurements, the audience's own sets apply to delegators.
        let p = parse(&aud("max_delegation_depth = 1")).unwrap();
        assert_eq!(p.audiences[0].check_delegator(&m(&pcr)), Ok(0));
        assert!(p.describe()["audiences"][0]["delegation"]["max_delegation_depth"] == 1);
        for (extra, want) in [
            ("max_delegation_depth = 9", "0..=8"),
            ("delegator_measurements = []", "lists no set"),
            ("max_delegation_lifetime_secs = 0", "1..=604800"),
            ("delegation_evidence_skew_secs = 4000", "0..=3600"),
        ] {
            let e = parse(&aud(extra)).unwrap_err();
            assert!(e.message.contains(want), "{extra}: {e}");
            assert_eq!(e.line, Some(5), "{extra}: {e}");
        }
        // Delegation keys on an audience without owners say nothing: refused.
        let e = parse(&format!(
            "[[audience]]\nprefix = \"https://x.example/\"\nmeasurements = [{{ PCR0 = \"{pcr}\" }}]\nmax_delegation_depth = 1"
        ))
        .unwrap_err();
        assert!(e.message.contains("names no owners"), "{e}");
    }

    #[test]
    fn snp_rules_load() {
        let p = parse("[snp]\nmin_tcb = { microcode = 115 }\nmax_vmpl = 2\nallow_smt = false\nfreshness = \"first_seen\"").unwrap();
        assert_eq!(p.snp.min_tcb.microcode, Some(115));
        assert!(!p.snp.allow_smt);
        assert_eq!(p.snp.max_vmpl, Some(2));
        assert_eq!(p.snp_freshness, SnpFreshness::FirstSeen);
    }
}
