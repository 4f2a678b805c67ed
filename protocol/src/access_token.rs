//! The access tokens `cada-sts` issues: RFC 9068 JWT access tokens (`typ: at+jwt`), bound
//! to the enclave key by `cnf.jkt` (RFC 9449), with the principal in `sub` and the parties
//! acting for it in `act` (RFC 8693 §4.1), and what the STS verified in `cada`.
//!
//! Under an owner's contract the owner is the principal and the agent (the proof key) the
//! actor:
//!
//! ```json
//! { "iss": "https://sts.example", "sub": "did:key:z6Mk… (the owner)",
//!   "client_id": "did:key:zDn… (the agent)",
//!   "aud": "https://api.example.com/v1", "scope": "orders:read",
//!   "iat": 1790000000, "exp": 1790000300, "jti": "…",
//!   "cnf": { "jkt": "<RFC 7638 thumbprint of the enclave key>" },
//!   "act": { "sub": "did:key:zDn… (the agent)" },
//!   "cada_dch": ["<contract digest>"],
//!   "cada": { "platform": "nitro", "msr": "<hex SHA-256 of the measurements>",
//!             "att": "<b64url SHA-384 of the evidence>", "dtc": "<contract digest>" } }
//! ```
//!
//! Under a delegation chain (owner → planner → worker) the actors nest, the current one
//! outermost: `"act": {"sub": "<worker>", "act": {"sub": "<planner>"}}`, and `cada_dch`
//! lists the chain's digests root first, `cada.dtc` (the leaf) last. Without a contract,
//! `sub` is the agent and there is no `act`. Tokens of an STS from before this shape put
//! the agent in `sub` and the owner in `act.sub` and carry no `cada_dch`:
//! [`AccessTokenClaims::agent`] and [`AccessTokenClaims::owner`] read both.
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

/// Most actors one token names (the agent and up to [`MAX_ACTORS`]` - 1` delegators: a
/// chain holds at most 8 delegations after the owner's contract). A deeper `act` is not a
/// token of this STS.
pub const MAX_ACTORS: usize = 9;

/// `act` (RFC 8693 §4.1): the party acting for the principal (`sub`) — the agent holding
/// the token's key; its own `act`, when present, the party it acts for in turn (a prior
/// actor: the delegating agent), nested as deep as the delegation chain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Actor {
    /// The actor's DID (an enclave key's `did:key`).
    pub sub: String,
    /// The actor this one acts for (RFC 8693 §4.1 prior actor), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Actor>>,
}

impl Actor {
    /// The nested actors for `actors` given current first (the agent, then whom it acts
    /// for, …); `None` when empty.
    pub fn nest<S: AsRef<str>>(actors: &[S]) -> Option<Actor> {
        let mut out: Option<Actor> = None;
        for a in actors.iter().rev() {
            out = Some(Actor {
                sub: a.as_ref().to_owned(),
                act: out.map(Box::new),
            });
        }
        out
    }

    /// The actors' DIDs, this one first, then each one it acts for.
    pub fn chain(&self) -> Vec<&str> {
        let mut out = vec![self.sub.as_str()];
        let mut next = self.act.as_deref();
        while let Some(a) = next {
            out.push(a.sub.as_str());
            next = a.act.as_deref();
        }
        out
    }
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

/// A limit per window of a contract of a token's tree (`{"max": 50, "windowSeconds": 60}`,
/// the contract's own `limits` member).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TreeWindow {
    /// Most events per window.
    pub max: u64,
    /// The window, seconds.
    pub window_seconds: u64,
}

/// The behaviour limits of a contract of a token's tree (`requests`, `refusals`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TreeLimits {
    /// Most accepted calls per window, under the contract and every contract below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<TreeWindow>,
    /// Most refused calls per window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusals: Option<TreeWindow>,
}

impl TreeLimits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self.requests.is_none() && self.refusals.is_none()
    }
}

/// One contract of the delegation tree a token lies in (`cada_tree`, root first): its
/// digest and the fleet-wide limits the STS verified in it, which a verifier charges every
/// call admitted by the token to, as it charges a call made with the chain itself:
///
/// ```json
/// { "dtc": "<cada.dtc of the link>", "budget": 100, "rate": 2,
///   "limits": { "requests": { "max": 50, "windowSeconds": 60 } }, "until": 1790003600,
///   "iat": 1790000000 }
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TreeLink {
    /// The contract's digest (`cada.dtc`); equal to the `cada_dch` entry at its place.
    pub dtc: String,
    /// Most calls under it and every contract below it, for its life (fleet-wide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<u64>,
    /// Most calls per second under it and every contract below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u32>,
    /// Its behaviour limits (each counting the calls of every contract below it).
    #[serde(default, skip_serializing_if = "TreeLimits::is_empty")]
    pub limits: TreeLimits,
    /// Its `validUntil` (Unix seconds): how long its budget is remembered.
    pub until: u64,
    /// Its `iat` (Unix seconds): a verifier whose shared store lost its memory after this
    /// (plus the clock skew) no longer knows the link's count, and refuses its calls rather
    /// than give its budget again (`delegation.store_epoch`).
    pub iat: u64,
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
    /// The principal (RFC 8693 §4.1): the root owner's DID when a contract governs the
    /// token; the agent's `did:key` when none does. (Tokens of an STS from before issue 24:
    /// the agent; read [`AccessTokenClaims::agent`] and [`AccessTokenClaims::owner`].)
    pub sub: String,
    /// The OAuth client: the agent, the enclave key's `did:key`.
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
    /// Who acts for the principal: the agent (the token's key), and nested in it the
    /// delegators it acts for, the latest first (RFC 8693 §4.1). Absent without a contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    /// The digests (`cada.dtc`) of the contracts that govern the token, the root owner's
    /// first and the leaf (`cada.dtc`) last: one for an owner's contract, the whole
    /// delegation chain otherwise. Absent without a contract (and in tokens of an STS from
    /// before issue 24).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cada_dch: Vec<String>,
    /// The limits of every contract that governs the token, root first, one per `cada_dch`
    /// digest: what a verifier charges each call admitted by the token to (budgets, rates
    /// and request windows of the whole delegation tree, [`TreeLink`]). Written by the STS
    /// whenever the contract lies in a tree (a delegation chain, or an owner's contract
    /// that may delegate); absent otherwise (and in tokens of an older STS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cada_tree: Vec<TreeLink>,
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

    /// Whether the token has the shape of an STS from before issue 24: an `act` but no
    /// `cada_dch`, the agent in `sub` and the owner in `act.sub`.
    pub fn is_legacy_shape(&self) -> bool {
        self.act.is_some() && self.cada_dch.is_empty()
    }

    /// The agent: the `did:key` of the key the token is bound to (the current actor,
    /// `act.sub`; `sub` without a contract or in a token of the older shape).
    pub fn agent(&self) -> &str {
        match &self.act {
            Some(a) if !self.is_legacy_shape() => &a.sub,
            _ => &self.sub,
        }
    }

    /// The root owner whose contract governs the token (`sub`; `act.sub` in a token of the
    /// older shape); `None` without a contract.
    pub fn owner(&self) -> Option<&str> {
        match &self.act {
            None => None,
            Some(a) if self.is_legacy_shape() => Some(&a.sub),
            Some(_) => Some(&self.sub),
        }
    }

    /// The actors, the agent first and then each delegator it acts for, the latest first
    /// (empty without a contract; the agent alone in a token of the older shape).
    pub fn actors(&self) -> Vec<&str> {
        match &self.act {
            None => Vec::new(),
            Some(_) if self.is_legacy_shape() => vec![self.sub.as_str()],
            Some(a) => a.chain(),
        }
    }

    /// Who acted for whom, the principal first: the owner, each delegator from the first to
    /// the latest, then the agent (`[owner, planner, worker]`) — the order of the audit
    /// records' `actors`. Empty without a contract.
    pub fn principal_first(&self) -> Vec<&str> {
        let Some(owner) = self.owner() else {
            return Vec::new();
        };
        let mut out = vec![owner];
        if self.is_legacy_shape() {
            out.push(&self.sub);
        } else {
            out.extend(self.actors().into_iter().rev());
        }
        out
    }

    /// Checks the shape this crate's readers rely on: at most [`MAX_ACTORS`] actors and as
    /// many `cada_dch` digests, the last `cada_dch` the contract digest `cada.dtc`, one
    /// actor per contract of the chain (the agent, and one delegator per delegation).
    /// An error names what is wrong.
    pub fn check_shape(&self) -> Result<(), String> {
        if self.cada_dch.len() > MAX_ACTORS {
            return Err(format!(
                "cada_dch names {} contracts, more than {MAX_ACTORS}",
                self.cada_dch.len()
            ));
        }
        let Some(act) = &self.act else {
            return if self.cada_dch.is_empty() && self.cada_tree.is_empty() {
                Ok(())
            } else {
                Err("cada_dch or cada_tree without act".into())
            };
        };
        if self.is_legacy_shape() {
            return if act.act.is_none() && self.cada_tree.is_empty() {
                Ok(())
            } else {
                Err("nested act or cada_tree without cada_dch".into())
            };
        }
        let depth = {
            let mut n = 1usize;
            let mut next = act.act.as_deref();
            while let Some(a) = next {
                n += 1;
                if n > MAX_ACTORS {
                    return Err(format!("act nests more than {MAX_ACTORS} actors"));
                }
                next = a.act.as_deref();
            }
            n
        };
        if depth != self.cada_dch.len() {
            return Err(format!(
                "act names {depth} actors for {} contracts in cada_dch",
                self.cada_dch.len()
            ));
        }
        if self.cada_dch.last() != Some(&self.cada.dtc) {
            return Err("the last of cada_dch is not cada.dtc".into());
        }
        if !self.cada_tree.is_empty()
            && (self.cada_tree.len() != self.cada_dch.len()
                || self
                    .cada_tree
                    .iter()
                    .zip(&self.cada_dch)
                    .any(|(l, d)| l.dtc != *d))
        {
            return Err("cada_tree does not name the contracts of cada_dch, in order".into());
        }
        Ok(())
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
            act: Actor::nest(&["did:key:z"]),
            cada_dch: vec!["d".into()],
            cada_tree: vec![],
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

    fn token(sub: &str, actors: &[&str], dch: &[&str]) -> AccessTokenClaims {
        let v = serde_json::json!({
            "iss": "https://sts.example", "sub": sub, "client_id": actors.first().unwrap_or(&sub),
            "aud": "https://api.example.com/", "iat": 1, "exp": 2, "jti": "j",
            "cnf": {"jkt": "t"},
            "cada": {"platform": "sim", "msr": "m", "att": "a", "dtc": dch.last().unwrap_or(&"d")},
        });
        let mut c: AccessTokenClaims = serde_json::from_value(v).unwrap();
        c.act = Actor::nest(actors);
        c.cada_dch = dch.iter().map(|d| (*d).to_owned()).collect();
        c
    }

    /// Issue 24: RFC 8693 §4.1 — the principal in `sub`, the actors nested in `act`, the
    /// current one outermost; the exact JSON of a chain of depth 2, and what the readers
    /// make of each shape (the older one included: agent in `sub`, owner in `act.sub`).
    #[test]
    fn actors_nest_current_first_and_the_readers_know_each_shape() {
        let c = token(
            "did:key:owner",
            &["did:key:worker", "did:key:planner"],
            &["r", "l"],
        );
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v["act"],
            serde_json::json!({"sub": "did:key:worker", "act": {"sub": "did:key:planner"}})
        );
        assert_eq!(v["cada_dch"], serde_json::json!(["r", "l"]));
        assert_eq!(c.agent(), "did:key:worker");
        assert_eq!(c.owner(), Some("did:key:owner"));
        assert_eq!(c.actors(), ["did:key:worker", "did:key:planner"]);
        assert_eq!(
            c.principal_first(),
            ["did:key:owner", "did:key:planner", "did:key:worker"]
        );
        assert_eq!(c.check_shape(), Ok(()));
        // An owner's contract: one actor, one digest.
        let c = token("did:key:owner", &["did:key:agent"], &["d"]);
        assert_eq!(
            serde_json::to_value(&c).unwrap()["act"],
            serde_json::json!({"sub": "did:key:agent"})
        );
        assert_eq!(
            (c.agent(), c.owner()),
            ("did:key:agent", Some("did:key:owner"))
        );
        assert_eq!(c.check_shape(), Ok(()));
        // No contract: the agent is the principal, no act, no cada_dch.
        let c = token("did:key:agent", &[], &[]);
        let v = serde_json::to_value(&c).unwrap();
        assert!(v.get("act").is_none() && v.get("cada_dch").is_none(), "{v}");
        assert_eq!((c.agent(), c.owner()), ("did:key:agent", None));
        assert!(c.actors().is_empty() && c.principal_first().is_empty());
        assert_eq!(c.check_shape(), Ok(()));
        // The older shape: read as it was meant.
        let c = token("did:key:agent", &["did:key:owner"], &[]);
        assert!(c.is_legacy_shape());
        assert_eq!(
            (c.agent(), c.owner()),
            ("did:key:agent", Some("did:key:owner"))
        );
        assert_eq!(c.principal_first(), ["did:key:owner", "did:key:agent"]);
        assert_eq!(c.check_shape(), Ok(()));
        // Shapes no STS writes.
        for (bad, why) in [
            (token("o", &["w", "p"], &["l"]), "2 actors"),
            (token("o", &["w"], &["r", "l"]), "1 actors"),
            (token("o", &[], &["l"]), "without act"),
            (token("a", &["w", "p"], &[]), "without cada_dch"),
            (
                token("o", &["a"; MAX_ACTORS + 1], &["d"; MAX_ACTORS + 1]),
                "more than",
            ),
        ] {
            let e = bad.check_shape().unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        let mut c = token("o", &["w"], &["d"]);
        c.cada.dtc = "other".into();
        assert!(c.check_shape().unwrap_err().contains("cada.dtc"));
    }

    fn tree_link(dtc: &str, budget: Option<u64>) -> TreeLink {
        TreeLink {
            dtc: dtc.into(),
            budget,
            rate: None,
            limits: TreeLimits::default(),
            until: 9,
            iat: 1,
        }
    }

    /// Issue 24: a token under a delegation tree carries each link's limits (`cada_tree`,
    /// root first, one per `cada_dch` digest), so that a verifier charges the token's calls
    /// to every link; the exact JSON, and the shapes no STS writes.
    #[test]
    fn the_tree_names_each_link_of_cada_dch_with_its_limits() {
        let mut c = token("o", &["w", "p"], &["r", "l"]);
        c.cada_tree = vec![
            TreeLink {
                dtc: "r".into(),
                budget: Some(4),
                rate: Some(2),
                limits: TreeLimits {
                    requests: Some(TreeWindow {
                        max: 50,
                        window_seconds: 60,
                    }),
                    refusals: None,
                },
                until: 1_790_003_600,
                iat: 1_790_000_000,
            },
            tree_link("l", None),
        ];
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v["cada_tree"],
            serde_json::json!([
                {"dtc": "r", "budget": 4, "rate": 2,
                 "limits": {"requests": {"max": 50, "windowSeconds": 60}}, "until": 1_790_003_600,
                 "iat": 1_790_000_000},
                {"dtc": "l", "until": 9, "iat": 1}
            ])
        );
        assert_eq!(serde_json::from_value::<AccessTokenClaims>(v).unwrap(), c);
        assert_eq!(c.check_shape(), Ok(()));
        // Absent: not serialized (owner contracts that may not delegate, older STSs).
        let plain = token("o", &["w"], &["l"]);
        assert!(serde_json::to_value(&plain)
            .unwrap()
            .get("cada_tree")
            .is_none());
        for (tree, why) in [
            (vec![tree_link("l", None)], "cada_tree"),
            (
                vec![tree_link("l", None), tree_link("r", None)],
                "cada_tree",
            ),
            (
                vec![
                    tree_link("r", None),
                    tree_link("l", None),
                    tree_link("x", None),
                ],
                "cada_tree",
            ),
        ] {
            let mut bad = c.clone();
            bad.cada_tree = tree;
            assert!(bad.check_shape().unwrap_err().contains(why));
        }
        let mut bad = token("a", &[], &[]);
        bad.cada_tree = vec![tree_link("d", None)];
        assert!(bad.check_shape().unwrap_err().contains("cada_tree"));
    }
}
