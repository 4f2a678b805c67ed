//! The verifier policy as a TOML file: extra trust roots, evidence rules, token rules,
//! context constraints and allowed PCR sets per audience.
//!
//! ```toml
//! extra_roots = ["/etc/cada/sim-root.pem"]   # added beside the pinned AWS root, never replacing it
//!
//! [evidence]
//! allow_debug = false
//! max_age_secs = 3600          # evidence documents older than this are refused
//!
//! [token]
//! skew_secs = 10
//! require_nonce = false        # demand server-issued DPoP nonces (RFC 9449 §8)
//! nonce_ttl_secs = 120
//!
//! [context]
//! required = ["task"]
//! allowed = { model = ["m-2026-10"] }
//!
//! [snp]                        # AMD SEV-SNP guests
//! measurements = ["7a1e…841f"] # launch measurements allowed anywhere (empty: any)
//! min_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }
//! max_vmpl = 0
//! allow_smt = true
//! allow_migration_agent = false
//!
//! [[audience]]                 # the longest matching URL prefix applies
//! prefix = "https://api.example.com/"
//! pcr_sets = [                 # any one set matches: several during a roll-out
//!   { PCR0 = "f4d4…", PCR1 = "bcdf…", PCR2 = "d8f1…" },   # a Nitro image
//!   { MEASUREMENT = "7a1e…841f" },                         # an SEV-SNP image
//! ]
//! ```
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cada_attestation_verifier::chain::{TrustAnchor, TrustStore};
use cada_attestation_verifier::nitro::NitroPolicy;
use cada_attestation_verifier::pop::{ContextPolicy, PopConfig};
use cada_attestation_verifier::roots;
use cada_attestation_verifier::snp::{MinTcb, SnpPolicy};
use serde::Deserialize;

use crate::ServiceError;

/// The policy file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Extra roots (PEM or DER files), relative to the policy file's directory.
    #[serde(default)]
    pub extra_roots: Vec<PathBuf>,
    /// Evidence rules.
    #[serde(default)]
    pub evidence: EvidenceRules,
    /// Token rules.
    #[serde(default)]
    pub token: TokenRules,
    /// `cada.ctx` constraints.
    #[serde(default)]
    pub context: ContextRules,
    /// SEV-SNP rules.
    #[serde(default)]
    pub snp: SnpRules,
    /// Allowed measurements per audience.
    #[serde(default)]
    pub audience: Vec<Audience>,
}

/// `[evidence]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceRules {
    /// Accept debug-mode enclaves.
    #[serde(default)]
    pub allow_debug: bool,
    /// Maximum age of an evidence document.
    #[serde(default = "default_max_age")]
    pub max_age_secs: u64,
}

impl Default for EvidenceRules {
    fn default() -> Self {
        EvidenceRules {
            allow_debug: false,
            max_age_secs: default_max_age(),
        }
    }
}

fn default_max_age() -> u64 {
    3 * 3600
}

/// `[token]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRules {
    /// Clock skew allowed for iat/exp, seconds.
    #[serde(default = "default_skew")]
    pub skew_secs: u64,
    /// Require a server-issued DPoP nonce.
    #[serde(default)]
    pub require_nonce: bool,
    /// Lifetime of issued nonces.
    #[serde(default = "default_nonce_ttl")]
    pub nonce_ttl_secs: u64,
}

impl Default for TokenRules {
    fn default() -> Self {
        TokenRules {
            skew_secs: default_skew(),
            require_nonce: false,
            nonce_ttl_secs: default_nonce_ttl(),
        }
    }
}

fn default_skew() -> u64 {
    10
}

fn default_nonce_ttl() -> u64 {
    120
}

/// `[context]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextRules {
    /// Keys every proof must carry.
    #[serde(default)]
    pub required: Vec<String>,
    /// Allowed values per key.
    #[serde(default)]
    pub allowed: BTreeMap<String, Vec<String>>,
}

/// `[snp]`. Absent keys take [`SnpPolicy`]'s defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnpRules {
    /// Allowed launch measurements (hex); empty: any.
    pub measurements: Vec<String>,
    /// Minimum reported TCB per component.
    pub min_tcb: MinTcb,
    /// Highest VMPL accepted.
    pub max_vmpl: Option<u32>,
    /// Accept guests that allow SMT.
    pub allow_smt: bool,
    /// Accept guests that allow a migration agent.
    pub allow_migration_agent: bool,
    /// Require the single-socket policy bit.
    pub require_single_socket: bool,
}

impl Default for SnpRules {
    fn default() -> Self {
        let p = SnpPolicy::default();
        SnpRules {
            measurements: vec![],
            min_tcb: p.min_tcb,
            max_vmpl: p.max_vmpl,
            allow_smt: p.allow_smt,
            allow_migration_agent: p.allow_migration_agent,
            require_single_socket: p.require_single_socket,
        }
    }
}

/// `[[audience]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audience {
    /// URL prefix this entry applies to.
    pub prefix: String,
    /// Allowed measurement sets (`PCR0 = "hex"`, …); any one must match.
    pub pcr_sets: Vec<BTreeMap<String, String>>,
}

/// A checked, ready-to-use policy.
#[derive(Clone)]
pub struct Policy {
    /// The file it came from (for messages).
    pub source: String,
    /// Trust store: pinned roots plus extras.
    pub trust: TrustStore,
    /// Proof verification configuration.
    pub pop: PopConfig,
    /// Token rules.
    pub token: TokenRules,
    /// Audiences, longest prefix first.
    pub audiences: Vec<Audience>,
}

fn read_root(path: &Path) -> Result<Vec<u8>, ServiceError> {
    let raw = std::fs::read(path)
        .map_err(|e| ServiceError::Policy(format!("extra root {}: {e}", path.display())))?;
    cada_attestation_verifier::x509::certs_from_pem_or_der(&raw)
        .and_then(|c| c.into_iter().next())
        .ok_or_else(|| ServiceError::Policy(format!("extra root {}: bad PEM", path.display())))
}

impl Policy {
    /// The built-in default: pinned roots only, debug refused, no PCR constraint.
    pub fn builtin() -> Self {
        Self::from_file(PolicyFile::default(), Path::new("."), "built-in default").unwrap_or_else(
            |_| Policy {
                source: "built-in default".into(),
                trust: roots::nitro_store(),
                pop: PopConfig::default(),
                token: TokenRules::default(),
                audiences: vec![],
            },
        )
    }

    /// Reads and checks a policy file.
    pub fn load(path: &Path) -> Result<Self, ServiceError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServiceError::Policy(format!("{}: {e}", path.display())))?;
        let file: PolicyFile = toml::from_str(&text)
            .map_err(|e| ServiceError::Policy(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_file(file, base, &path.display().to_string())
    }

    fn from_file(file: PolicyFile, base: &Path, source: &str) -> Result<Self, ServiceError> {
        let mut trust = roots::nitro_store();
        for r in &file.extra_roots {
            let path = if r.is_absolute() {
                r.clone()
            } else {
                base.join(r)
            };
            let der = read_root(&path)?;
            let anchor = TrustAnchor::from_der(path.display().to_string(), &der)
                .map_err(|e| ServiceError::Policy(format!("extra root {}: {e}", path.display())))?;
            trust.add(anchor);
        }
        if file.token.skew_secs > 300 {
            return Err(ServiceError::Policy(
                "token.skew_secs above 300 s defeats freshness".into(),
            ));
        }
        if file.token.nonce_ttl_secs == 0 || file.token.nonce_ttl_secs > 3600 {
            return Err(ServiceError::Policy(
                "token.nonce_ttl_secs must be 1..=3600".into(),
            ));
        }
        let mut audiences = file.audience.clone();
        for a in &audiences {
            if !(a.prefix.starts_with("https://") || a.prefix.starts_with("http://")) {
                return Err(ServiceError::Policy(format!(
                    "audience prefix {:?} is not an http(s) URL",
                    a.prefix
                )));
            }
            if a.pcr_sets.is_empty() {
                return Err(ServiceError::Policy(format!(
                    "audience {:?} has no pcr_sets",
                    a.prefix
                )));
            }
            for set in &a.pcr_sets {
                for (k, v) in set {
                    let idx = k.strip_prefix("PCR").and_then(|n| n.parse::<u8>().ok());
                    if idx.is_none_or(|i| i >= 32) {
                        return Err(ServiceError::Policy(format!("{k:?} is not PCR0..PCR31")));
                    }
                    if hex::decode(v).map(|b| b.len()) != Ok(48) {
                        return Err(ServiceError::Policy(format!(
                            "{k} = {v:?} is not 48 bytes of hex"
                        )));
                    }
                }
            }
        }
        audiences.sort_by_key(|a| std::cmp::Reverse(a.prefix.len()));
        let measurements = file
            .snp
            .measurements
            .iter()
            .map(|m| match hex::decode(m) {
                Ok(b) if b.len() == 48 => Ok(b),
                _ => Err(ServiceError::Policy(format!(
                    "snp.measurements: {m:?} is not 48 bytes of hex"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let snp_policy = SnpPolicy {
            allow_debug: file.evidence.allow_debug,
            measurements,
            min_tcb: file.snp.min_tcb.clone(),
            max_vmpl: file.snp.max_vmpl,
            allow_smt: file.snp.allow_smt,
            allow_migration_agent: file.snp.allow_migration_agent,
            require_single_socket: file.snp.require_single_socket,
            ..SnpPolicy::default()
        };
        let pop = PopConfig {
            skew_secs: file.token.skew_secs,
            evidence_policy: NitroPolicy {
                allow_debug: file.evidence.allow_debug,
                max_age_ms: Some(file.evidence.max_age_secs.saturating_mul(1000)),
                max_future_skew_ms: file.token.skew_secs.saturating_mul(1000),
                ..NitroPolicy::default()
            },
            snp_policy,
            evidence_max_age_ms: Some(file.evidence.max_age_secs.saturating_mul(1000)),
            context: ContextPolicy {
                required: file.context.required.clone(),
                allowed_values: file.context.allowed.clone(),
            },
            ..PopConfig::default()
        };
        Ok(Policy {
            source: source.into(),
            trust,
            pop,
            token: file.token,
            audiences,
        })
    }

    /// Checks measurements against the audience of `url`. `Ok(())` when no audience is
    /// configured at all (development), an error when audiences exist but none matches.
    pub fn check_measurements(
        &self,
        url: &str,
        measurements: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        if self.audiences.is_empty() {
            return Ok(());
        }
        let Some(aud) = self.audiences.iter().find(|a| url.starts_with(&a.prefix)) else {
            return Err(format!("no audience in the policy covers {url}"));
        };
        // A measurement absent from the evidence counts as all zeros (that is how the
        // enclave reports unused PCRs, and the evidence lists only non-zero ones).
        let zero = "0".repeat(96);
        let ok = aud.pcr_sets.iter().any(|set| {
            set.iter()
                .all(|(k, v)| measurements.get(k).unwrap_or(&zero).eq_ignore_ascii_case(v))
        });
        if ok {
            Ok(())
        } else {
            Err(format!(
                "measurements match none of the {} PCR sets allowed for {}",
                aud.pcr_sets.len(),
                aud.prefix
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, ServiceError> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|e| ServiceError::Policy(e.to_string()))?;
        Policy::from_file(file, Path::new("."), "test")
    }

    #[test]
    fn audiences_longest_prefix_and_rollout_sets() {
        let a = "aa".repeat(48);
        let b = "bb".repeat(48);
        let p = parse(&format!(
            r#"
            [[audience]]
            prefix = "https://api.example.com/"
            pcr_sets = [ {{ PCR0 = "{a}" }}, {{ PCR0 = "{b}" }} ]
            [[audience]]
            prefix = "https://api.example.com/admin/"
            pcr_sets = [ {{ PCR0 = "{b}" }} ]
            "#
        ))
        .unwrap();
        let m = |v: &str| BTreeMap::from([("PCR0".to_string(), v.to_string())]);
        assert!(p
            .check_measurements("https://api.example.com/x", &m(&a))
            .is_ok());
        assert!(p
            .check_measurements("https://api.example.com/x", &m(&b))
            .is_ok());
        assert!(p
            .check_measurements("https://api.example.com/admin/x", &m(&a))
            .is_err());
        assert!(p
            .check_measurements("https://other.example/", &m(&a))
            .is_err());
    }

    #[test]
    fn bad_files_say_why() {
        for (text, want) in [
            ("[token]\nskew_secs = 9999", "skew"),
            (
                "[[audience]]\nprefix = \"ftp://x\"\npcr_sets = [{PCR0 = \"00\"}]",
                "not an http",
            ),
            (
                "[[audience]]\nprefix = \"https://x/\"\npcr_sets = [{PCR0 = \"00\"}]",
                "48 bytes",
            ),
            (
                "[[audience]]\nprefix = \"https://x/\"\npcr_sets = [{PCR99 = \"00\"}]",
                "PCR0..PCR31",
            ),
            ("unknown_key = 1", "unknown field"),
            ("extra_roots = [\"/nonexistent.pem\"]", "nonexistent"),
        ] {
            let err = parse(text).err().unwrap().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
        assert!(parse("").is_ok());
        let p =
            parse("[snp]\nmin_tcb = { microcode = 115 }\nmax_vmpl = 0\nallow_smt = false").unwrap();
        assert_eq!(p.pop.snp_policy.min_tcb.microcode, Some(115));
        assert!(!p.pop.snp_policy.allow_smt);
        assert_eq!(p.pop.snp_policy.max_vmpl, Some(0));
    }
}
