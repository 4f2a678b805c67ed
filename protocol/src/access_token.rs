//! The access tokens `cada-sts` issues: RFC 9068 JWT access tokens (`typ: at+jwt`), bound
//! to the enclave key by `cnf.jkt` (RFC 9449), with the owner as the actor (RFC 8693 §4.1)
//! and what the STS verified in `cada`.
//!
//! ```json
//! { "iss": "https://sts.example", "sub": "did:key:zDn…", "client_id": "did:key:zDn…",
//!   "aud": "https://api.example.com/v1", "scope": "orders:read",
//!   "iat": 1790000000, "exp": 1790000300, "jti": "…",
//!   "cnf": { "jkt": "<RFC 7638 thumbprint of the enclave key>" },
//!   "act": { "sub": "did:key:z6Mk… (the owner)" },
//!   "cada": { "platform": "nitro", "msr": "<hex SHA-256 of the measurements>",
//!             "att": "<b64url SHA-384 of the evidence>", "dtc": "<contract digest>" } }
//! ```
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The JOSE `typ` of an access token (RFC 9068 §2.1).
pub const TYP: &str = "at+jwt";
/// The RFC 8693 token type of an issued access token.
pub const TOKEN_TYPE_URI: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The RFC 8693 grant type of a token exchange.
pub const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The token type of a CADA trust contract presented as the subject token.
pub const TOKEN_TYPE_CONTRACT: &str = "urn:cada:params:oauth:token-type:trust-contract";
/// Longest access token lifetime the STS issues (5 minutes).
pub const MAX_LIFETIME_SECS: u64 = 300;
/// Largest access token accepted (compact JWS bytes).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// `cnf` (RFC 7800 / RFC 9449 §6): the key the token is bound to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Confirmation {
    /// RFC 7638 SHA-256 thumbprint of the enclave key.
    pub jkt: String,
}

/// `act` (RFC 8693 §4.1): who acts — the owner whose contract allowed the token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Actor {
    /// The owner's DID.
    pub sub: String,
}

/// What the STS verified before issuing the token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CadaAt {
    /// The evidence's platform (`nitro`, `sev-snp`, `sim`, `sim-snp`).
    pub platform: String,
    /// Hex SHA-256 of the measurements ([`measurement_digest`]).
    pub msr: String,
    /// base64url SHA-384 of the evidence document (`cada.att` of the key's proofs).
    pub att: String,
    /// The digest of the trust contract that allowed the token (`cada.dtc`).
    pub dtc: String,
    /// The MCP tools that contract grants: a resource server checks each `tools/call` of a
    /// request made with the token against them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// The MCP resource URI prefixes that contract grants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// The MCP prompts that contract grants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<String>,
    /// The `ctx` keys that contract requires of every proof (its `requiredCtx`): a resource
    /// server refuses a request under the token whose proof lacks one
    /// (`contract.not_permitted.ctx`), as it would without a token. Absent (tokens of an
    /// older STS): none required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_ctx: Vec<String>,
    /// The contract's `validUntil` (Unix seconds), written when the token carries
    /// `authorization_details`: a verifier that consumes a single-use detail under the token
    /// remembers the use that long, so that the same grant presented later with its
    /// contract (which outlives the token) is still found used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtc_exp: Option<u64>,
}

/// RFC 9396 `authorization_details` (§9.1: the claim of a JWT access token), kept as the
/// exact JSON text the STS wrote: verifiers read it with the contract's exact reader
/// (`cada_contract::AuthorizationDetail`), so that a numeric bound is never rounded through
/// `f64` on the way. Two values are equal when their texts are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawDetails(pub Box<serde_json::value::RawValue>);

impl RawDetails {
    /// The JSON text (an array of details).
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for RawDetails {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Eq for RawDetails {}

/// The claims of a CADA access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessTokenClaims {
    /// The STS's issuer identifier.
    pub iss: String,
    /// The agent: the enclave key's `did:key`.
    pub sub: String,
    /// The OAuth client: the same agent DID.
    pub client_id: String,
    /// The resource (RFC 8707) the token is for.
    pub aud: String,
    /// Space-separated scopes; absent when none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// Issued at (seconds).
    pub iat: u64,
    /// Expires (seconds).
    pub exp: u64,
    /// Unique id.
    pub jti: String,
    /// Key binding.
    pub cnf: Confirmation,
    /// The owner.
    pub act: Actor,
    /// What the STS verified.
    pub cada: CadaAt,
    /// The one-transaction grants (RFC 9396) the token was asked for, exactly: a CADA gate
    /// checks each `tools/call` under the token against the detail that covers it, its
    /// arguments included, and consumes single-use details fleet-wide. Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<RawDetails>,
}

impl AccessTokenClaims {
    /// The scopes, one per entry.
    pub fn scopes(&self) -> Vec<String> {
        self.scope.split_whitespace().map(str::to_owned).collect()
    }
}

/// Hex SHA-256 over the measurements as `name=value\n` lines in name order: one short
/// value that names an image, the same in every CADA audit log and access token.
pub fn measurement_digest(measurements: &BTreeMap<String, String>) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for (name, value) in measurements {
        ctx.update(name.as_bytes());
        ctx.update(b"=");
        ctx.update(value.as_bytes());
        ctx.update(b"\n");
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurement_digest_names_values_and_names() {
        let m = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        let a = measurement_digest(&m(&[("PCR0", "ab"), ("PCR1", "cd")]));
        assert_eq!(a, measurement_digest(&m(&[("PCR1", "cd"), ("PCR0", "ab")])));
        assert_ne!(a, measurement_digest(&m(&[("PCR0", "ab"), ("PCR1", "ce")])));
        assert_ne!(a, measurement_digest(&m(&[("PCR0", "ab"), ("PCR2", "cd")])));
        // SHA-256("PCR0=ab\nPCR1=cd\n")
        assert_eq!(
            a,
            "b3d6f22e22a984b28bd7c744933d07e662a5ec88fb3279f810a74b98644f0f14"
        );
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn claims_round_trip_and_an_empty_scope_is_omitted() {
        let c = AccessTokenClaims {
            iss: "https://sts.example".into(),
            sub: "did:key:z".into(),
            client_id: "did:key:z".into(),
            aud: "https://api.example.com/v1".into(),
            scope: String::new(),
            iat: 1,
            exp: 2,
            jti: "j".into(),
            cnf: Confirmation { jkt: "t".into() },
            act: Actor {
                sub: "did:key:o".into(),
            },
            cada: CadaAt {
                platform: "sim".into(),
                msr: "m".into(),
                att: "a".into(),
                dtc: "d".into(),
                tools: vec![],
                resources: vec![],
                prompts: vec![],
                required_ctx: vec!["task".into()],
                dtc_exp: None,
            },
            authorization_details: None,
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["cada"]["required_ctx"], serde_json::json!(["task"]));
        assert!(v.get("scope").is_none());
        let back: AccessTokenClaims = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
        assert!(back.scopes().is_empty());
    }
}
