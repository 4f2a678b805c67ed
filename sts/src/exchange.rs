//! The token exchange itself, apart from HTTP: reading the RFC 8693 form, and minting the
//! RFC 9068 access token once the one decision accepted the exchange.
use cada_attestation_verifier::decide::{Accepted, ContractInfo};
use cada_attestation_verifier::UnixTime;
use cada_contract::AuthorizationDetail;
use cada_protocol::access_token::{
    measurement_digest, AccessTokenClaims, Actor, CadaAt, Confirmation, RawDetails, TreeLimits,
    TreeLink, TreeWindow, GRANT_TYPE_TOKEN_EXCHANGE, MAX_ACTORS, MAX_LIFETIME_SECS,
    TOKEN_TYPE_CONTRACT, TOKEN_TYPE_URI, TYP,
};
use cada_protocol::{b64, jws};

use crate::keys::KeySet;
use crate::oauth::OAuthError;

/// The subject token types accepted for a trust contract: CADA's own, or the generic JWT
/// type (a contract is a JWT).
pub const SUBJECT_TOKEN_TYPES: &[&str] =
    &[TOKEN_TYPE_CONTRACT, "urn:ietf:params:oauth:token-type:jwt"];

/// Most scopes one token may carry.
const MAX_SCOPES: usize = 64;
/// Longest scope token.
const MAX_SCOPE_LEN: usize = 128;

/// A token request, read from its form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The RFC 8707 resource.
    pub resource: String,
    /// The scopes asked for (empty: all the contract grants).
    pub scopes: Vec<String>,
    /// The trust contract (compact `vc+jwt`).
    pub subject_token: String,
    /// The one-transaction grants asked for (RFC 9396 `authorization_details`; empty:
    /// none): the token carries exactly these, and no other tool, resource or prompt.
    pub authorization_details: Vec<AuthorizationDetail>,
}

/// Largest `authorization_details` form value (the contract's own limit).
pub const MAX_AUTHORIZATION_DETAILS_LEN: usize = 16 * 1024;

/// Reads an `application/x-www-form-urlencoded` token request: `grant_type` must be the
/// token exchange, `subject_token` a trust contract of a [`SUBJECT_TOKEN_TYPES`] type,
/// exactly one `resource`; `scope` optional; `authorization_details` optional (RFC 9396
/// §6.1: a JSON array of `mcp_tool_call` details, each with its `identifier`, at most
/// [`MAX_AUTHORIZATION_DETAILS_LEN`] bytes; a malformed one is `invalid_authorization_details`);
/// `requested_token_type`, when given, the access token type. Each parameter at most once
/// (RFC 6749 §3.2); `actor_token` and `audience` are refused as not supported, rather than
/// ignored.
pub fn parse_form(body: &[u8]) -> Result<TokenRequest, OAuthError> {
    let mut grant_type = None;
    let mut subject_token = None;
    let mut subject_token_type = None;
    let mut resource = None;
    let mut scope = None;
    let mut requested = None;
    let mut details = None;
    for (k, v) in url::form_urlencoded::parse(body) {
        let slot = match k.as_ref() {
            "grant_type" => &mut grant_type,
            "subject_token" => &mut subject_token,
            "subject_token_type" => &mut subject_token_type,
            "resource" => {
                if resource.is_some() {
                    return Err(OAuthError::bad(
                        "invalid_target",
                        "request.resource",
                        "one resource per token: send a separate request for each resource",
                    ));
                }
                &mut resource
            }
            "scope" => &mut scope,
            "requested_token_type" => &mut requested,
            "authorization_details" => &mut details,
            "actor_token" | "actor_token_type" | "audience" => {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {k} is not supported by this STS: name the resource with \
                     `resource`, the scopes with `scope` and one-transaction grants with \
                     `authorization_details`"
                )))
            }
            // RFC 6749 §3.2: unknown parameters are ignored (client_id, for instance).
            _ => continue,
        };
        if slot.is_some() {
            return Err(OAuthError::invalid_request(format!(
                "parameter {k} appears more than once"
            )));
        }
        *slot = Some(v.into_owned());
    }
    match grant_type.as_deref() {
        Some(GRANT_TYPE_TOKEN_EXCHANGE) => {}
        Some(other) => {
            return Err(OAuthError::bad(
                "unsupported_grant_type",
                "request.grant_type",
                format!(
                    "grant_type {:?} is not supported: use {GRANT_TYPE_TOKEN_EXCHANGE}",
                    clip(other)
                ),
            ))
        }
        None => return Err(OAuthError::invalid_request("grant_type is missing")),
    }
    let subject_token = subject_token.ok_or_else(|| {
        OAuthError::invalid_request(
            "subject_token is missing: send the owner's trust contract (the vc+jwt from \
             cada-owner grant)",
        )
    })?;
    match subject_token_type.as_deref() {
        Some(t) if SUBJECT_TOKEN_TYPES.contains(&t) => {}
        Some(t) => {
            return Err(OAuthError::invalid_request(format!(
                "subject_token_type {:?} is not accepted: use {TOKEN_TYPE_CONTRACT}",
                clip(t)
            )))
        }
        None => {
            return Err(OAuthError::invalid_request(format!(
                "subject_token_type is missing: use {TOKEN_TYPE_CONTRACT}"
            )))
        }
    }
    if let Some(t) = requested.as_deref() {
        if t != TOKEN_TYPE_URI {
            return Err(OAuthError::invalid_request(format!(
                "requested_token_type {:?} is not issued: this STS issues {TOKEN_TYPE_URI}",
                clip(t)
            )));
        }
    }
    let resource = resource.ok_or_else(|| {
        OAuthError::bad(
            "invalid_target",
            "request.resource",
            "resource is missing: name the absolute URL the token is for (RFC 8707)",
        )
    })?;
    // RFC 8707 §2: the resource "MUST NOT include a query component" (nor a fragment). The
    // token's `aud` is the resource as written, and the audience rules drop a query, so a
    // query would be carried in the token but never matched.
    if resource.contains(['?', '#']) {
        return Err(OAuthError::bad(
            "invalid_target",
            "request.resource",
            format!(
                "resource {:?} carries a query or fragment, which a resource must not (RFC \
                 8707 §2): name the URL without it",
                clip(&resource)
            ),
        ));
    }
    let scopes = parse_scope(scope.as_deref().unwrap_or(""))?;
    let authorization_details = match details.as_deref() {
        None => Vec::new(),
        Some(text) => parse_details(text)?,
    };
    Ok(TokenRequest {
        resource,
        scopes,
        subject_token,
        authorization_details,
    })
}

/// Reads the `authorization_details` parameter: a non-empty JSON array of at most
/// [`cada_contract::details::MAX_DETAILS`] details, each read by the contract's own exact
/// reader with its `identifier` (RFC 9396 §5: `invalid_authorization_details`).
fn parse_details(text: &str) -> Result<Vec<AuthorizationDetail>, OAuthError> {
    let bad = |detail: String| {
        OAuthError::bad(
            "invalid_authorization_details",
            "request.authorization_details",
            detail,
        )
    };
    if text.len() > MAX_AUTHORIZATION_DETAILS_LEN {
        return Err(bad(format!(
            "authorization_details is {} bytes, more than {MAX_AUTHORIZATION_DETAILS_LEN}",
            text.len()
        )));
    }
    let items: Vec<&serde_json::value::RawValue> = serde_json::from_str(text).map_err(|e| {
        bad(format!(
            "authorization_details must be a JSON array of details (RFC 9396): {e}"
        ))
    })?;
    if items.is_empty() || items.len() > cada_contract::details::MAX_DETAILS {
        return Err(bad(format!(
            "authorization_details holds 1 to {} details, not {}",
            cada_contract::details::MAX_DETAILS,
            items.len()
        )));
    }
    let mut out: Vec<AuthorizationDetail> = Vec::with_capacity(items.len());
    for i in items {
        let d = AuthorizationDetail::parse(i.get()).map_err(|e| {
            OAuthError::bad(
                "invalid_authorization_details",
                e.code(),
                format!("authorization_details: {e}"),
            )
        })?;
        if out.iter().any(|o| o.identifier == d.identifier) {
            return Err(bad(format!(
                "authorization_details names the identifier {:?} twice",
                clip(&d.identifier)
            )));
        }
        out.push(d);
    }
    Ok(out)
}

/// Splits a `scope` value (RFC 6749 §3.3), refusing bad characters, duplicates and excess.
fn parse_scope(scope: &str) -> Result<Vec<String>, OAuthError> {
    let mut out: Vec<String> = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        let ok = s.len() <= MAX_SCOPE_LEN
            && s.bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if !ok {
            return Err(OAuthError::bad(
                "invalid_scope",
                "request.scope",
                format!("{:?} is not a scope token (RFC 6749 §3.3)", clip(s)),
            ));
        }
        if !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
        if out.len() > MAX_SCOPES {
            return Err(OAuthError::bad(
                "invalid_scope",
                "request.scope",
                format!("more than {MAX_SCOPES} scopes"),
            ));
        }
    }
    Ok(out)
}

/// Who a token names (RFC 8693 §4.1): the principal (`sub`), the actors (`act`, the
/// current one outermost) and the contracts that govern it (`cada_dch`, root first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parties {
    /// `sub`: the root owner's DID under a contract, else the agent's `did:key`.
    pub sub: String,
    /// `act`: the agent, acting for each delegator of the chain in turn (latest first);
    /// `None` without a contract.
    pub act: Option<Actor>,
    /// `cada_dch`: the chain's digests, the owner's contract first and the leaf last (one
    /// for an owner's contract; empty without a contract).
    pub dch: Vec<String>,
}

/// The parties of a token for the key `agent_did` (the proof key's `did:key`, which the
/// decision bound to the leaf contract's subject) under `contract`:
/// - no contract: `sub` = the agent, no `act`, no `cada_dch`;
/// - an owner's contract: `sub` = the owner, `act` = `{"sub": agent}`, `cada_dch` =
///   `[digest]`;
/// - a delegation chain (owner → planner → worker): `sub` = the root owner, `act` =
///   `{"sub": worker, "act": {"sub": planner}}` — the delegators are the issuers of the
///   delegations (root's child first in [`ContractInfo::chain`]), nested below the agent
///   from the latest to the first —, `cada_dch` = the chain's digests root..leaf.
///
/// A chain whose leaf is not the contract, or longer than a token may name
/// ([`MAX_ACTORS`]), is refused (`sts.chain`): the decision never returns one.
pub fn parties(agent_did: &str, contract: Option<&ContractInfo>) -> Result<Parties, OAuthError> {
    let Some(c) = contract else {
        return Ok(Parties {
            sub: agent_did.to_owned(),
            act: None,
            dch: Vec::new(),
        });
    };
    if c.chain.is_empty() {
        return Ok(Parties {
            sub: c.owner.clone(),
            act: Actor::nest(&[agent_did]),
            dch: vec![c.digest.clone()],
        });
    }
    let inconsistent = |what: &str| OAuthError {
        status: 500,
        error: "server_error",
        description: format!("[sts.chain] the verified chain {what}"),
    };
    if c.chain.len() > MAX_ACTORS {
        return Err(inconsistent("is longer than a token may name"));
    }
    if c.chain.last().map(|l| &l.digest) != Some(&c.digest) {
        return Err(inconsistent("does not end at the contract"));
    }
    if c.chain.iter().enumerate().any(|(i, l)| l.depth != i) {
        return Err(inconsistent("is out of order"));
    }
    let mut actors: Vec<&str> = Vec::with_capacity(c.chain.len());
    actors.push(agent_did);
    actors.extend(c.chain.iter().skip(1).rev().map(|l| l.issuer.as_str()));
    Ok(Parties {
        sub: c.owner.clone(),
        act: Actor::nest(&actors),
        dch: c.chain.iter().map(|l| l.digest.clone()).collect(),
    })
}

/// The limits of every contract of the tree the token lies in (`cada_tree`, root first, one
/// per `cada_dch` digest), as the decision verified them: each link's budget, rate, behaviour
/// limits and end. A verifier charges every call admitted by the token to each of them, as
/// it charges a call made with the chain itself (docs/sts.md). Empty when the contract is
/// in no tree (an owner's contract that may not delegate: its limits are not charged for
/// token calls).
///
/// Each link's `iat` is read from `chain` (the exchange's subject token, which the decision
/// verified); a link not found there gets 0, so a verifier whose store lost its memory
/// refuses its calls (fails closed).
pub fn tree(contract: &ContractInfo, chain: &str) -> Vec<TreeLink> {
    let issued = cada_pipeline::link_issue_times(Some(chain));
    let window = |w: Option<cada_contract::WindowLimit>| {
        w.map(|w| TreeWindow {
            max: w.max,
            window_seconds: w.window_seconds,
        })
    };
    contract
        .chain
        .iter()
        .map(|l| TreeLink {
            dtc: l.digest.clone(),
            budget: l.budget,
            rate: l.rate_per_second,
            limits: TreeLimits {
                requests: window(l.limits.requests),
                refusals: window(l.limits.refusals),
            },
            until: l.valid_until,
            iat: issued
                .iter()
                .find(|(d, _)| *d == l.digest)
                .map_or(0, |(_, iat)| *iat),
        })
        .collect()
}

/// The STS's identity and signing keys: mints tokens and checks its own.
#[derive(Debug)]
pub struct Minter {
    /// The issuer identifier (`iss`, and the base of the endpoints).
    pub issuer: String,
    /// Token lifetime (at most [`MAX_LIFETIME_SECS`]).
    pub ttl_secs: u64,
    /// Signing keys.
    pub keys: KeySet,
}

impl Minter {
    /// The token endpoint URL: the `htu` of token-endpoint proofs.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer.trim_end_matches('/'))
    }

    /// Mints the access token for an accepted exchange: `scopes` asked for (all the
    /// contract grants when empty), `exp` = the earliest of now + TTL, the contract's end
    /// and the evidence's end. A request with `authorization_details` (checked by the
    /// decision: within the contract's, under the resource) gets a token for exactly those
    /// transactions: its `authorization_details` claim holds them, its `cada.tools`,
    /// `cada.resources` and `cada.prompts` are empty, its `scope` only the scopes asked
    /// for, and `cada.dtc_exp` names the contract's end (how long a gate remembers a
    /// single-use one). The STS does not consume single-use details: the gate that admits
    /// the call does, under the same key as for the contract itself, so the grant is used
    /// once whichever way it is presented.
    pub fn mint(
        &self,
        accepted: &Accepted,
        req: &TokenRequest,
        now: UnixTime,
    ) -> Result<(String, AccessTokenClaims), OAuthError> {
        let Some(contract) = &accepted.contract else {
            return Err(OAuthError::bad(
                "invalid_grant",
                "contract.missing",
                "no contract was checked for this exchange",
            ));
        };
        let now_s = now.as_secs();
        let exp = (now_s + self.ttl_secs.min(MAX_LIFETIME_SECS))
            .min(now_s + contract.remaining_secs)
            .min(accepted.key.expires.as_secs());
        if exp <= now_s {
            return Err(OAuthError::bad(
                "invalid_grant",
                "token.lifetime",
                "the contract or the evidence ends now: no token can outlive them (renew the \
                 evidence or ask the owner for a new contract)",
            ));
        }
        let transactional = !req.authorization_details.is_empty();
        let scopes = if req.scopes.is_empty() && !transactional {
            contract.scopes.clone()
        } else {
            req.scopes.clone()
        };
        let details = if transactional {
            let text = format!(
                "[{}]",
                req.authorization_details
                    .iter()
                    .map(AuthorizationDetail::to_json_text)
                    .collect::<Vec<_>>()
                    .join(",")
            );
            Some(RawDetails(
                serde_json::value::RawValue::from_string(text).map_err(|e| OAuthError {
                    status: 500,
                    error: "server_error",
                    description: format!("[sts.details] {e}"),
                })?,
            ))
        } else {
            None
        };
        let granted = |v: &Vec<String>| if transactional { Vec::new() } else { v.clone() };
        let parties = parties(&accepted.key.did, Some(contract))?;
        let claims = AccessTokenClaims {
            iss: self.issuer.clone(),
            sub: parties.sub,
            client_id: accepted.key.did.clone(),
            aud: req.resource.clone(),
            scope: scopes.join(" "),
            iat: now_s,
            exp,
            jti: random_id(),
            cnf: Confirmation {
                jkt: accepted.key.jkt.clone(),
            },
            act: parties.act,
            cada_dch: parties.dch,
            cada_tree: tree(contract, &req.subject_token),
            cada: CadaAt {
                platform: accepted.key.platform.to_string(),
                msr: measurement_digest(&accepted.key.measurements),
                att: accepted.key.att.clone(),
                dtc: contract.digest.clone(),
                tools: granted(&contract.tools),
                resources: granted(&contract.resources),
                prompts: granted(&contract.prompts),
                required_ctx: contract.required_ctx.clone(),
                dtc_exp: transactional.then(|| now_s.saturating_add(contract.remaining_secs)),
            },
            authorization_details: details,
        };
        let token = self
            .keys
            .active()
            .sign_jwt(TYP, &claims)
            .map_err(|e| OAuthError {
                status: 500,
                error: "server_error",
                description: format!("[sts.sign] {e}"),
            })?;
        if token.len() > cada_protocol::access_token::MAX_TOKEN_LEN {
            return Err(OAuthError::bad(
                "invalid_scope",
                "token.too_large",
                format!(
                    "the token would be {} bytes, more than resource servers accept ({}): ask \
                     for fewer scopes",
                    token.len(),
                    cada_protocol::access_token::MAX_TOKEN_LEN
                ),
            ));
        }
        Ok((token, claims))
    }

    /// Reads one of this STS's own tokens: signature by one of its keys, `typ`, `iss`.
    /// Expiry is the caller's (introspection reports an expired token as inactive).
    pub fn read_own(&self, token: &str) -> Result<AccessTokenClaims, String> {
        if token.len() > cada_protocol::access_token::MAX_TOKEN_LEN {
            return Err("token too large".into());
        }
        let parts = jws::split_compact(
            "access token",
            token,
            cada_protocol::access_token::MAX_TOKEN_LEN,
        )
        .map_err(|e| e.to_string())?;
        let header: serde_json::Value =
            serde_json::from_slice(&parts.header).map_err(|e| format!("header: {e}"))?;
        if header["typ"] != TYP || header["alg"] != "ES256" {
            return Err("not an access token of this STS (typ at+jwt, alg ES256)".into());
        }
        let kid = header["kid"].as_str().ok_or("no kid")?;
        let key = self
            .keys
            .by_kid(kid)
            .ok_or("signed by a key this STS does not hold")?;
        if !key.verify(parts.signing_input.as_bytes(), &parts.signature) {
            return Err("bad signature".into());
        }
        let claims: AccessTokenClaims =
            serde_json::from_slice(&parts.payload).map_err(|e| format!("claims: {e}"))?;
        if claims.iss != self.issuer {
            return Err("issued by another STS".into());
        }
        Ok(claims)
    }
}

/// 128 random bits, base64url.
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    // aws-lc-rs's system RNG does not fail on supported platforms; an all-zero id would
    // only make this token's revocation collide, never grant anything.
    let _ = aws_lc_rs::rand::fill(&mut b);
    b64::encode(b)
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
            .into_bytes()
    }

    type Pairs = Vec<(&'static str, &'static str)>;

    fn good() -> Pairs {
        vec![
            ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
            ("subject_token", "a.b.c"),
            ("subject_token_type", TOKEN_TYPE_CONTRACT),
            ("resource", "https://api.example.com/v1"),
            ("scope", "orders:read  orders:write orders:read"),
        ]
    }

    #[test]
    fn a_token_exchange_form_is_read() {
        let r = parse_form(&form(&good())).unwrap();
        assert_eq!(r.resource, "https://api.example.com/v1");
        assert_eq!(r.scopes, ["orders:read", "orders:write"]);
        assert_eq!(r.subject_token, "a.b.c");
        let mut g = good();
        g.retain(|(k, _)| *k != "scope");
        g.push(("client_id", "ignored"));
        assert!(parse_form(&form(&g)).unwrap().scopes.is_empty());
    }

    const DETAIL: &str = r#"{"type":"mcp_tool_call","locations":["https://api.example.com/v1/mcp"],"tool":"transfer","arguments":{"amount":{"max":500},"currency":{"eq":"USD"}},"single_use":true,"identifier":"urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"}"#;

    /// Issue 23: `authorization_details` is read (RFC 9396 §6.1) by the contract's exact
    /// reader, not refused as unsupported any more; malformed ones are
    /// `invalid_authorization_details` naming the rule.
    #[test]
    fn authorization_details_are_read_exactly_or_refused() {
        let list = format!("[{DETAIL}]");
        let mut g = good();
        g.push(("authorization_details", &list));
        let r = parse_form(&form(&g)).unwrap();
        assert_eq!(r.authorization_details.len(), 1);
        let d = &r.authorization_details[0];
        assert_eq!((d.tool.as_str(), d.single_use), ("transfer", true));
        assert!(d.has_argument_limits());
        let twice = format!("[{DETAIL},{DETAIL}]");
        let no_id = DETAIL.replace(
            r#","identifier":"urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66""#,
            "",
        );
        let unknown_kind = DETAIL.replace(r#"{"max":500}"#, r#"{"regex":".*"}"#);
        let dup_member =
            DETAIL.replace(r#""tool":"transfer","#, r#""tool":"transfer","tool":"x","#);
        let huge = format!("[{}]", vec![DETAIL; 200].join(","));
        for (bad, code) in [
            ("{}", "request.authorization_details"),
            ("[]", "request.authorization_details"),
            ("not json", "request.authorization_details"),
            (twice.as_str(), "request.authorization_details"),
            (huge.as_str(), "request.authorization_details"),
            (&format!("[{no_id}]"), "contract.malformed"),
            (&format!("[{unknown_kind}]"), "contract.schema"),
            (&format!("[{dup_member}]"), "contract.malformed"),
        ] {
            let mut g = good();
            g.push(("authorization_details", bad));
            let e = parse_form(&form(&g)).unwrap_err();
            assert_eq!(
                (e.error, e.code()),
                ("invalid_authorization_details", code),
                "{bad}: {e:?}"
            );
        }
        let mut g = good();
        g.push(("authorization_details", &list));
        g.push(("authorization_details", &list));
        assert_eq!(parse_form(&form(&g)).unwrap_err().error, "invalid_request");
    }

    fn accepted(details: Vec<AuthorizationDetail>) -> Accepted {
        use cada_attestation_verifier::decide::{Admission, ContractInfo};
        Accepted {
            key: cada_attestation_verifier::AttestedKey {
                jkt: "jkt".into(),
                did: "did:key:zAgent".into(),
                hpke: None,
                owner: Some("did:key:zOwner".into()),
                platform: cada_protocol::envelope::Platform::Sim,
                measurements: std::collections::BTreeMap::new(),
                module_id: String::new(),
                att: "att".into(),
                expires: UnixTime::from_secs(10_000),
                emulated: false,
            },
            claims: cada_protocol::token::PopClaims {
                jti: "j".into(),
                htm: "POST".into(),
                htu: "https://sts.example/token".into(),
                iat: 1,
                exp: 2,
                ath: None,
                nonce: None,
                cada: cada_protocol::token::CadaClaim::default(),
            },
            admission: Admission::AnyMeasurement,
            contract: Some(ContractInfo {
                owner: "did:key:zOwner".into(),
                id: "urn:uuid:c".into(),
                digest: "dtc".into(),
                scopes: vec!["orders:read".into()],
                tools: vec!["echo".into()],
                resources: vec!["file:///srv/".into()],
                prompts: vec!["p".into()],
                required_ctx: vec![],
                remaining_secs: 600,
                limits: cada_contract::BehaviourLimits::default(),
                authorization_details: details,
                chain: vec![],
            }),
            token: None,
            single_use: vec![],
        }
    }

    /// Issue 23: a token asked for with `authorization_details` is for exactly those
    /// transactions: the claim holds them (exact text), and nothing else of the contract's
    /// authority (no tools, resources, prompts; only the scopes asked for); `exp` stays
    /// within the contract and `cada.dtc_exp` names its end. Without them, as before.
    #[test]
    fn a_transactional_token_carries_exactly_the_details_asked_for() {
        let (key, _) = crate::keys::SigningKey::generate().unwrap();
        let minter = Minter {
            issuer: "https://sts.example".into(),
            ttl_secs: 300,
            keys: KeySet::new(key, vec![]),
        };
        let exact = DETAIL.replace("500", "500.0000000000000000001");
        let d = AuthorizationDetail::parse(&exact).unwrap();
        let now = UnixTime::from_secs(1_000);
        let req = |details: Vec<AuthorizationDetail>| TokenRequest {
            resource: "https://api.example.com/v1".into(),
            scopes: vec![],
            subject_token: "c".into(),
            authorization_details: details,
        };
        let a = accepted(vec![d.clone()]);
        let (token, claims) = minter.mint(&a, &req(vec![d.clone()]), now).unwrap();
        assert!(claims.cada.tools.is_empty() && claims.cada.resources.is_empty());
        assert!(claims.cada.prompts.is_empty() && claims.scope.is_empty());
        assert_eq!(claims.cada.dtc_exp, Some(1_600));
        assert!(claims.exp <= 1_300);
        let raw = claims
            .authorization_details
            .as_ref()
            .unwrap()
            .get()
            .to_owned();
        assert_eq!(raw, format!("[{}]", d.to_json_text()));
        assert!(raw.contains("500.0000000000000000001"), "{raw}");
        // The signed token holds the same text.
        let back = minter.read_own(&token).unwrap();
        assert_eq!(back.authorization_details, claims.authorization_details);
        let p: serde_json::Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(p[0]["tool"], "transfer");
        assert_eq!(p[0]["single_use"], true);
        // A plain exchange of the same contract: the contract's grants, no details.
        let (_, plain) = minter.mint(&a, &req(vec![]), now).unwrap();
        assert!(plain.authorization_details.is_none() && plain.cada.dtc_exp.is_none());
        assert_eq!(plain.cada.tools, ["echo"]);
        assert_eq!(plain.scope, "orders:read");
    }

    fn link(
        depth: usize,
        issuer: &str,
        subject: &str,
    ) -> cada_attestation_verifier::decide::LinkInfo {
        cada_attestation_verifier::decide::LinkInfo {
            digest: format!("dtc{depth}"),
            issuer: issuer.into(),
            subject: subject.into(),
            depth,
            budget: None,
            rate_per_second: None,
            limits: cada_contract::BehaviourLimits::default(),
            valid_until: 10_000,
            iat: 1,
        }
    }

    fn minter() -> Minter {
        let (key, _) = crate::keys::SigningKey::generate().unwrap();
        Minter {
            issuer: "https://sts.example".into(),
            ttl_secs: 300,
            keys: KeySet::new(key, vec![]),
        }
    }

    fn plain_request() -> TokenRequest {
        TokenRequest {
            resource: "https://api.example.com/v1".into(),
            scopes: vec![],
            subject_token: "c".into(),
            authorization_details: vec![],
        }
    }

    /// Issue 24 (RFC 8693 §4.1): under an owner's contract the owner is the principal
    /// (`sub`) and the agent the actor (`act.sub`); before, the token said the reverse
    /// (`sub` = agent, `act.sub` = owner). `client_id` and `cnf.jkt` stay the agent's.
    #[test]
    fn an_owner_contract_token_names_the_owner_as_principal_and_the_agent_as_actor() {
        let m = minter();
        let (token, claims) = m
            .mint(
                &accepted(vec![]),
                &plain_request(),
                UnixTime::from_secs(1_000),
            )
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(
            &b64::decode("t", token.split('.').nth(1).unwrap(), 8192).unwrap(),
        )
        .unwrap();
        assert_eq!(v["sub"], "did:key:zOwner");
        assert_eq!(v["act"], serde_json::json!({"sub": "did:key:zAgent"}));
        assert_eq!(v["client_id"], "did:key:zAgent");
        assert_eq!(v["cnf"], serde_json::json!({"jkt": "jkt"}));
        assert_eq!(v["cada_dch"], serde_json::json!(["dtc"]));
        assert_eq!(v["cada"]["dtc"], "dtc");
        assert_eq!(
            (claims.agent(), claims.owner()),
            ("did:key:zAgent", Some("did:key:zOwner"))
        );
        assert_eq!(claims.check_shape(), Ok(()));
        assert_eq!(m.read_own(&token).unwrap(), claims);
    }

    /// Issue 24: a token minted under a delegation chain carries every link's limits
    /// (`cada_tree`, root first) — budget, rate, behaviour windows and end — so that a
    /// verifier charges the token's calls to the whole tree; before, the token named the
    /// links (`cada_dch`) but not their limits, and its calls were charged to none.
    #[test]
    fn a_delegated_token_carries_the_limits_of_every_link() {
        let m = minter();
        let now = UnixTime::from_secs(1_000);
        let mut a = accepted(vec![]);
        let c = a.contract.as_mut().unwrap();
        c.digest = "dtc1".into();
        let mut root = link(0, "did:key:zOwner", "did:key:zPlanner");
        root.budget = Some(4);
        root.rate_per_second = Some(2);
        root.limits.requests = Some(cada_contract::WindowLimit {
            max: 50,
            window_seconds: 60,
        });
        let mut leaf = link(1, "did:key:zPlanner", "did:key:zWorker");
        leaf.budget = Some(3);
        leaf.valid_until = 9_000;
        c.chain = vec![root, leaf];
        let (_, claims) = m.mint(&a, &plain_request(), now).unwrap();
        assert_eq!(
            serde_json::to_value(&claims.cada_tree).unwrap(),
            serde_json::json!([
                {"dtc": "dtc0", "budget": 4, "rate": 2,
                 "limits": {"requests": {"max": 50, "windowSeconds": 60}}, "until": 10_000,
                 "iat": 0},
                {"dtc": "dtc1", "budget": 3, "until": 9_000, "iat": 0}
            ])
        );
        assert_eq!(claims.check_shape(), Ok(()));
        // An owner's contract alone (no tree): no cada_tree.
        let (_, plain) = m.mint(&accepted(vec![]), &plain_request(), now).unwrap();
        assert!(plain.cada_tree.is_empty());
    }

    /// Issue 24: a worker's token under owner → planner → worker names the owner as
    /// principal and nests the actors, current first: `{"sub": worker, "act": {"sub":
    /// planner}}`; `cada_dch` lists the chain root..leaf; `cnf.jkt` stays the worker's.
    /// And one level deeper (owner → planner → sub-planner → worker).
    #[test]
    fn a_delegated_token_nests_the_actors_and_lists_the_chain() {
        let m = minter();
        let now = UnixTime::from_secs(1_000);
        let mut a = accepted(vec![]);
        a.key.did = "did:key:zWorker".into();
        a.key.jkt = "worker-jkt".into();
        let c = a.contract.as_mut().unwrap();
        c.digest = "dtc1".into();
        c.chain = vec![
            link(0, "did:key:zOwner", "did:key:zPlanner"),
            link(1, "did:key:zPlanner", "did:key:zWorker"),
        ];
        let (token, claims) = m.mint(&a, &plain_request(), now).unwrap();
        let v: serde_json::Value = serde_json::from_slice(
            &b64::decode("t", token.split('.').nth(1).unwrap(), 8192).unwrap(),
        )
        .unwrap();
        assert_eq!(v["sub"], "did:key:zOwner");
        assert_eq!(
            v["act"],
            serde_json::json!({"sub": "did:key:zWorker", "act": {"sub": "did:key:zPlanner"}})
        );
        assert_eq!(v["cada_dch"], serde_json::json!(["dtc0", "dtc1"]));
        assert_eq!(v["cada"]["dtc"], "dtc1");
        assert_eq!(v["cnf"]["jkt"], "worker-jkt");
        assert_eq!(v["client_id"], "did:key:zWorker");
        assert_eq!(claims.check_shape(), Ok(()));

        let c = a.contract.as_mut().unwrap();
        c.digest = "dtc2".into();
        c.chain = vec![
            link(0, "did:key:zOwner", "did:key:zPlanner"),
            link(1, "did:key:zPlanner", "did:key:zSub"),
            link(2, "did:key:zSub", "did:key:zWorker"),
        ];
        let (_, claims) = m.mint(&a, &plain_request(), now).unwrap();
        assert_eq!(
            serde_json::to_value(&claims.act).unwrap(),
            serde_json::json!({"sub": "did:key:zWorker",
                "act": {"sub": "did:key:zSub", "act": {"sub": "did:key:zPlanner"}}})
        );
        assert_eq!(claims.cada_dch, ["dtc0", "dtc1", "dtc2"]);
        assert_eq!(
            claims.actors(),
            ["did:key:zWorker", "did:key:zSub", "did:key:zPlanner"]
        );
        assert_eq!(claims.check_shape(), Ok(()));

        // No limits in the chain: each link is named with its end alone.
        assert_eq!(
            v["cada_tree"],
            serde_json::json!([{"dtc": "dtc0", "until": 10_000, "iat": 0},
                {"dtc": "dtc1", "until": 10_000, "iat": 0}])
        );

        // A chain that does not end at the contract, or out of order, is never minted.
        let c = a.contract.as_mut().unwrap();
        c.digest = "other".into();
        assert_eq!(
            m.mint(&a, &plain_request(), now).unwrap_err().code(),
            "sts.chain"
        );
        let c = a.contract.as_mut().unwrap();
        c.digest = "dtc2".into();
        c.chain.swap(0, 1);
        assert_eq!(
            m.mint(&a, &plain_request(), now).unwrap_err().code(),
            "sts.chain"
        );
    }

    /// Without a contract the agent is the principal: `sub` = its `did:key`, no `act`, no
    /// `cada_dch` (the STS itself mints no such token: an audience without owners gets
    /// none, `contract.missing`).
    #[test]
    fn without_a_contract_the_agent_is_the_principal_and_nobody_acts() {
        let p = parties("did:key:zAgent", None).unwrap();
        assert_eq!(
            p,
            Parties {
                sub: "did:key:zAgent".into(),
                act: None,
                dch: vec![]
            }
        );
        let mut a = accepted(vec![]);
        a.contract = None;
        let e = minter()
            .mint(&a, &plain_request(), UnixTime::from_secs(1_000))
            .unwrap_err();
        assert_eq!(e.code(), "contract.missing");
    }

    #[test]
    fn bad_forms_are_refused_with_their_error() {
        let err = |edit: &dyn Fn(&mut Pairs)| {
            let mut g = good();
            edit(&mut g);
            parse_form(&form(&g)).unwrap_err()
        };
        assert_eq!(
            err(&|g| g[0].1 = "client_credentials").error,
            "unsupported_grant_type"
        );
        assert_eq!(
            err(&|g| {
                g.remove(0);
            })
            .error,
            "invalid_request"
        );
        assert_eq!(
            err(&|g| {
                g.remove(1);
            })
            .error,
            "invalid_request"
        );
        assert_eq!(err(&|g| g[2].1 = "urn:x").error, "invalid_request");
        assert_eq!(
            err(&|g| {
                g.remove(3);
            })
            .error,
            "invalid_target"
        );
        assert_eq!(
            err(&|g| g.push(("resource", "https://other.example/"))).error,
            "invalid_target"
        );
        assert_eq!(err(&|g| g.push(("scope", "x"))).error, "invalid_request");
        // Issue 21 item 11: a resource with a query (or fragment) is refused, not turned
        // into an `aud` with a query.
        for r in [
            "http://127.0.0.1:9400/?q=1",
            "https://api.example.com/v1?",
            "https://api.example.com/v1#x",
        ] {
            let e = err(&|g| g[3].1 = r);
            assert_eq!(
                (e.error, e.code()),
                ("invalid_target", "request.resource"),
                "{r}"
            );
            assert!(e.description.contains("RFC 8707"), "{e:?}");
        }
        assert_eq!(err(&|g| g[4].1 = "bad\"scope").error, "invalid_scope");
        assert_eq!(
            err(&|g| g.push(("actor_token", "t"))).error,
            "invalid_request"
        );
        assert_eq!(err(&|g| g.push(("audience", "x"))).error, "invalid_request");
        assert_eq!(
            err(&|g| g.push((
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:id_token"
            )))
            .error,
            "invalid_request"
        );
    }
}
