//! The policy options every deciding subcommand shares (`serve`, `pop`, `evidence`,
//! `policy explain`), and `cada-verify policy check | explain`.
use std::path::PathBuf;

use cada_attestation_verifier::chain::TrustAnchor;
use cada_attestation_verifier::decide::{Decision, Request, Stores, RULES};
use cada_attestation_verifier::nonce::NonceIssuer;
use cada_attestation_verifier::replay::MemoryReplayStore;
use cada_attestation_verifier::{Policy, Verifier, VerifierOptions};
use cada_protocol::envelope::EvidenceEnvelope;
use clap::Args;

use super::{arg_value, parse_time, read_cert, UsageError};

/// Where the policy comes from, and the operator's overrides.
#[derive(Args, Clone, Debug)]
pub struct PolicyArgs {
    /// Policy file (TOML): roots per platform, evidence, SEV-SNP, token and context rules,
    /// and the measurements allowed per audience. `cada-verify policy check --help` shows
    /// the format. Without it: the built-in policy, which trusts no image.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Accept ANY enclave image for URLs that no [[audience]] covers. For development only:
    /// without audiences a verifier proves nothing about which code holds the key. Logged
    /// and counted loudly.
    #[arg(long)]
    pub allow_any_measurement: bool,
    /// Add a root (PEM or DER) for Nitro-format evidence beside the pinned AWS root, e.g.
    /// the `sim` root from `cada-enclave --export-root` (same as `[roots] nitro`).
    #[arg(long = "trust-root", value_name = "FILE")]
    pub trust_roots: Vec<String>,
    /// Add an ARK (PEM or DER) for SEV-SNP evidence beside AMD's pinned ARKs, e.g. the
    /// `sim-snp` root (same as `[roots] sev_snp`).
    #[arg(long = "snp-root", value_name = "FILE")]
    pub snp_roots: Vec<String>,
}

impl PolicyArgs {
    /// Loads the policy, applies the overrides, and refuses a policy that trusts no image
    /// unless `--allow-any-measurement` was given.
    pub fn load(&self) -> Result<Policy, UsageError> {
        let p = self.load_unchecked()?;
        p.check_startable().map_err(|e| UsageError(e.to_string()))?;
        if p.allow_any_measurement {
            tracing::warn!(
                "--allow-any-measurement: URLs that no audience covers accept ANY enclave image"
            );
            eprintln!(
                "WARNING: --allow-any-measurement: URLs that no [[audience]] covers accept ANY \
                 enclave image. Never use this in production."
            );
        }
        Ok(p)
    }

    /// Loads the policy and applies the overrides, without the startability check.
    pub fn load_unchecked(&self) -> Result<Policy, UsageError> {
        let mut p = match &self.policy {
            Some(path) => Policy::load(path).map_err(|e| UsageError(e.to_string()))?,
            None => Policy::builtin(),
        };
        for path in &self.trust_roots {
            p.nitro_roots.add(anchor(path)?);
        }
        for path in &self.snp_roots {
            p.snp_roots.add(anchor(path)?);
        }
        p.allow_any_measurement = self.allow_any_measurement;
        Ok(p)
    }
}

/// Reads a root certificate file (PEM or DER) as a trust anchor named by its path.
pub fn anchor(path: &str) -> Result<TrustAnchor, UsageError> {
    let der = read_cert(path)?;
    TrustAnchor::from_der(path.to_owned(), &der).map_err(|e| UsageError(format!("{path}: {e}")))
}

/// Arguments of `cada-verify policy check`.
#[derive(Args)]
pub struct PolicyCheckArgs {
    /// The policy file.
    pub file: PathBuf,
    /// Check it as `serve --allow-any-measurement` would load it.
    #[arg(long)]
    pub allow_any_measurement: bool,
}

/// Validates a policy file and prints the effective policy (JSON).
pub fn check(a: PolicyCheckArgs) -> Result<bool, UsageError> {
    let mut p = match Policy::load(&a.file) {
        Ok(p) => p,
        Err(e) => {
            println!("INVALID {e}");
            return Ok(false);
        }
    };
    p.allow_any_measurement = a.allow_any_measurement;
    if let Err(e) = p.check_startable() {
        println!("INVALID {e}");
        return Ok(false);
    }
    println!("OK {}", a.file.display());
    super::print_json(&p.describe());
    Ok(true)
}

/// Arguments of `cada-verify policy explain`: a request, and the policy to judge it by.
#[derive(Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// HTTP method of the request.
    #[arg(long)]
    pub method: String,
    /// Full URL of the request.
    #[arg(long)]
    pub url: String,
    /// The `DPoP` header value; `@FILE` reads it from a file.
    #[arg(long)]
    pub dpop: String,
    /// The `CADA-Evidence` header value; `@FILE` reads it from a file.
    #[arg(long)]
    pub evidence: Option<String>,
    /// The `CADA-Contract` header value; `@FILE` reads it from a file.
    #[arg(long)]
    pub contract: Option<String>,
    /// The access token sent with the request.
    #[arg(long)]
    pub access_token: Option<String>,
    /// Decision time (RFC 3339 or `now`).
    #[arg(long, default_value = "now")]
    pub at: String,
    /// File holding the nonce key of the verifier that issued the nonces (32+ bytes).
    #[arg(long)]
    pub nonce_key_file: Option<PathBuf>,
}

/// Runs the decision once and shows each rule in order: passed, the one that decided, and
/// the ones not reached.
pub fn explain(a: ExplainArgs) -> Result<bool, UsageError> {
    let policy = a.policy.load_unchecked()?;
    let at = parse_time(&a.at)?;
    let evidence = match a.evidence.as_deref().map(arg_value).transpose()? {
        Some(text) => Some(
            EvidenceEnvelope::from_header(&text)
                .map_err(|e| UsageError(format!("--evidence does not decode: {e}")))?,
        ),
        None => None,
    };
    let nonces = read_nonce_key(a.nonce_key_file.as_ref())?;
    let dpop = arg_value(&a.dpop)?;
    let contract = a.contract.as_deref().map(arg_value).transpose()?;
    println!("policy: {}", policy.source);
    // The audience's delegation rules (rule 13 for a delegation chain).
    if let Some(aud) = cada_protocol::url::HttpUrl::parse_normalized(&a.url)
        .ok()
        .and_then(|u| policy.audience_for(&u).cloned())
    {
        let d = &aud.delegation;
        println!(
            "audience {}: max_delegation_depth = {}{}, max_delegation_lifetime_secs = {}, \
             delegation_evidence_skew_secs = {}, delegator_measurements = {}",
            aud.prefix,
            d.max_depth,
            if d.max_depth == 0 {
                " (delegated chains refused)"
            } else {
                ""
            },
            d.max_lifetime_secs,
            d.evidence_skew_secs,
            d.delegator_measurements.as_ref().map_or_else(
                || "the audience's measurements".to_owned(),
                |m| format!("{} set(s)", m.len())
            )
        );
    }
    let verifier = Verifier::new(policy, VerifierOptions::default());
    let replay = MemoryReplayStore::new(16);
    let decision = verifier.decide(
        &Request {
            method: &a.method,
            url: &a.url,
            dpop: &dpop,
            access_token: a.access_token.as_deref(),
            evidence: evidence.as_ref(),
            contract: contract.as_deref().map(str::trim),
            body: None,
        },
        at,
        Stores {
            replay: &replay,
            nonces: nonces.as_ref(),
        },
    );
    let decided_at = decision
        .refusal()
        .map(cada_attestation_verifier::Refusal::rule);
    for (i, (name, _codes)) in RULES.iter().enumerate() {
        let n = i + 1;
        let mark = match decided_at {
            Some(d) if d == n => "REFUSED",
            Some(d) if d < n => "not reached",
            _ => "passed",
        };
        println!("{n:>2}. {name:<62} {mark}");
    }
    match decision {
        Decision::Accept(acc) => {
            println!("ACCEPTED by {}", acc.admission);
            Ok(true)
        }
        Decision::Refuse(r) => {
            println!("REFUSED by rule {}: {r}", r.rule());
            Ok(false)
        }
    }
}

/// Reads a nonce key file (32+ bytes).
pub fn read_nonce_key(path: Option<&PathBuf>) -> Result<Option<NonceIssuer>, UsageError> {
    cada_pipeline::read_nonce_key(path.map(PathBuf::as_path)).map_err(UsageError)
}
