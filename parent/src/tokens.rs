//! Just-in-time access tokens from a `cada-sts` (RFC 8693 token exchange), for agents that
//! ask `POST /v1/pop` with a `resource`: the daemon has the enclave sign a proof for the
//! STS's token endpoint, sends it with the evidence and the owner's contract the proof
//! names, and keeps the token **in memory only**, per (enclave key, resource, scope), until
//! shortly before it expires. Nothing is written to disk; a restart simply exchanges again.
//!
//! A token is bound to the key that signed the exchange's proof (`cnf.jkt`). When the
//! enclave restarts it has a new key, and a token held for the old one is useless: every
//! proof signed with a token is checked to come from the token's key, and when it does not
//! the tokens of the old key are dropped, a new one is exchanged and the proof signed again
//! ([`Sts::sign`]), so the first call after a restart already succeeds.
//!
//! **One-transaction tokens** (issue 23). When the `tools/call`s of the request a token is
//! fetched for are granted by no standing contract of this daemon's (its `tools` at the
//! URL) but by the RFC 9396 `authorization_details` of an installed grant, the daemon asks
//! the STS for exactly that: the covering detail of the most recently installed grant
//! that covers every such call (a reusable detail first, else a single-use one this daemon
//! has not seen used), its locations narrowed to those covering the request URL and lying
//! under the resource (an STS rule), its arguments, single use and identifier unchanged.
//! The enclave signs the exchange proof only under a contract whose details cover the ask,
//! and the STS mints a token carrying exactly it. Tokens are held per (key, resource,
//! scope, details asked), so a token for one transaction never serves another. An agent
//! may also name the details itself (`authorization_details` of `POST /v1/pop`), e.g. a
//! narrower bound than the grant's; the enclave and the STS refuse anything wider
//! (`grant.not_within`).
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use cada_contract::{AuthorizationDetail, Contract, TrustedOwners, VerifiedContract};
use cada_net::fetch::Fetcher;
use cada_protocol::access_token::{GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_CONTRACT};
use cada_protocol::mcp::McpCall;
use cada_protocol::url::{HttpUrl, UrlPrefix};
use cada_protocol::wire::{ops, SignPopRequest, SignPopResponse, TokenExchange};
use cada_protocol::ProtocolError;
use zeroize::Zeroizing;

use crate::api::AppState;
use crate::error::ParentError;

/// Most (key, resource, scope) tokens held at once.
const MAX_HELD: usize = 256;
/// Largest STS answer read.
const MAX_ANSWER: usize = 64 * 1024;
/// The longest one exchange may take (both attempts): the agent's request waits for it.
const EXCHANGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// A token is exchanged again this long before it expires (or at half its life if that
/// is shorter), so that a request never leaves with a token about to die.
const REFRESH_MARGIN_SECS: u64 = 60;

/// Most contracts read for choosing details (the enclave holds at most 32).
const MAX_CONTRACTS: usize = 32;
/// Most single-use identifiers remembered as used by a signed call.
const MAX_SPENT: usize = 1024;

/// What a held token is for: (the enclave key's RFC 7638 thumbprint, resource, scope, the
/// `authorization_details` text asked for, empty when none).
type HeldFor = (String, String, String, String);

/// The one-transaction grants a token is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetailsAsk {
    /// The `authorization_details` JSON text sent to the enclave and the STS.
    pub text: String,
    /// The identifiers of its single-use details (remembered as used once a call under the
    /// token is signed).
    pub single_use: Vec<String>,
}

impl DetailsAsk {
    /// An ask an agent wrote itself: sent as it is (the enclave and the STS read it); its
    /// single-use identifiers, where it reads.
    pub fn explicit(text: &str) -> Self {
        let single_use = AuthorizationDetail::parse_draft_list(text)
            .map(|v| {
                v.into_iter()
                    .filter(|d| d.single_use)
                    .map(|d| d.identifier)
                    .collect()
            })
            .unwrap_or_default();
        DetailsAsk {
            text: text.to_owned(),
            single_use,
        }
    }
}

/// A token held for one (key, resource, scope).
struct Held {
    token: Zeroizing<String>,
    issued: u64,
    exp: u64,
    scope: String,
}

/// An access token ready to send.
#[derive(Debug, Clone)]
pub struct Token {
    /// The token (`Authorization: DPoP <value>`).
    pub value: String,
    /// When it expires (seconds since the epoch).
    pub exp: u64,
    /// The scopes it carries.
    pub scope: String,
    /// The RFC 7638 thumbprint of the enclave key it is bound to (`cnf.jkt`).
    pub jkt: String,
}

/// The enclave key behind the latest proof: its evidence digest (`cada.att`) and its
/// thumbprint. The digest is compared first, so the proof's header is parsed only when the
/// evidence changed (a restart, or an owner lock).
#[derive(Clone)]
struct KeySeen {
    att: String,
    jkt: String,
}

/// The STS this daemon exchanges with, and the tokens it holds.
pub struct Sts {
    issuer: String,
    fetcher: Fetcher,
    held: Mutex<HashMap<HeldFor, Held>>,
    /// The enclave key of the latest proof signed for this daemon.
    key: Mutex<Option<KeySeen>>,
    /// The last DPoP nonce the STS handed out (RFC 9449 §8).
    nonce: Mutex<Option<String>>,
    /// Contracts installed through this daemon, oldest first, read to choose the details
    /// of one-transaction tokens ([`Sts::details_for`]); the enclave and the STS decide.
    contracts: Mutex<Vec<VerifiedContract>>,
    /// Single-use identifiers a call signed under a token used (oldest first, bounded).
    spent: Mutex<VecDeque<String>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn clip(s: &str) -> String {
    s.chars().take(512).collect()
}

impl Sts {
    /// The STS whose issuer identifier is `issuer` (its token endpoint is `issuer/token`).
    pub fn new(issuer: &str, fetcher: Fetcher) -> Self {
        Sts {
            issuer: issuer.trim_end_matches('/').to_owned(),
            fetcher,
            held: Mutex::new(HashMap::new()),
            key: Mutex::new(None),
            nonce: Mutex::new(None),
            contracts: Mutex::new(Vec::new()),
            spent: Mutex::new(VecDeque::new()),
        }
    }

    /// Notes a contract the enclave accepted (`compact`, as installed), to choose the
    /// details of one-transaction tokens from. It is read with the owner key its issuer
    /// names (a `did:key`; the enclave checked it against the owner it is locked to); one
    /// that does not read is not noted, and its calls get tokens of the contracts'
    /// audiences as before. Re-noting a contract keeps its place, as the enclave does.
    pub fn note_contract(&self, compact: &str) {
        let Some(c) = read_contract(compact, now_secs()) else {
            return;
        };
        let Ok(mut v) = self.contracts.lock() else {
            return;
        };
        if v.iter().any(|x| x.digest() == c.digest()) {
            return;
        }
        if v.len() >= MAX_CONTRACTS {
            let now = now_secs();
            v.retain(|x| x.check_time(now).is_ok());
        }
        if v.len() >= MAX_CONTRACTS {
            v.remove(0);
        }
        v.push(c);
    }

    /// The details to ask for a token for a request to `htu` making `calls` (for
    /// `resource`): `None` when no `tools/call` is among them, or a standing contract grants
    /// one of its tools at `htu` (its token serves it), or no installed grant covers them
    /// all. Otherwise the most recently installed contract whose details cover every
    /// `tools/call` gives, per call, a reusable covering detail, else a single-use one not
    /// used (by a signed call of this daemon, or an earlier call of this request; when
    /// only used ones remain, one of those, which the enclave refuses `grant.used`); each
    /// asked as it is but with its locations narrowed to those covering `htu`, each taken
    /// under `resource` (the resource itself when the location is wider).
    pub fn details_for(
        &self,
        htu: &str,
        calls: &[McpCall],
        resource: &str,
        now: u64,
    ) -> Option<DetailsAsk> {
        let tools: Vec<&str> = calls.iter().filter_map(McpCall::tool).collect();
        if tools.is_empty() {
            return None;
        }
        let url = HttpUrl::parse_canonical(htu).ok()?;
        let under = UrlPrefix::parse(resource).ok()?;
        let contracts = self.contracts.lock().ok()?;
        let spent = self.spent.lock().ok()?;
        let live: Vec<&VerifiedContract> = contracts
            .iter()
            .rev()
            .filter(|c| c.check_time(now).is_ok())
            .collect();
        let standing = |t: &str| {
            live.iter()
                .any(|c| c.grants_tool(t) && c.audiences().iter().any(|a| a.matches(&url)))
        };
        if tools.iter().any(|t| standing(t)) {
            return None;
        }
        // Unused single-use details first; when only used ones cover the calls, one of
        // them, so that the enclave names the rule (grant.used) rather than nothing
        // covering the exchange.
        for fresh in [true, false] {
            'contracts: for c in &live {
                let mut picked: Vec<&AuthorizationDetail> = Vec::new();
                for t in &tools {
                    let covering: Vec<&AuthorizationDetail> = c.details_for(&url, t).collect();
                    let taken = |d: &AuthorizationDetail| {
                        picked.iter().any(|p| p.identifier == d.identifier)
                    };
                    let pick = covering.iter().find(|d| !d.single_use).or_else(|| {
                        covering
                            .iter()
                            .filter(|d| !taken(d))
                            .find(|d| !fresh || !spent.contains(&d.identifier))
                    });
                    match pick {
                        Some(d) if !taken(d) => picked.push(d),
                        Some(_) => {}
                        None => continue 'contracts,
                    }
                }
                let asked: Vec<AuthorizationDetail> =
                    picked.iter().map(|d| narrow(d, &url, &under)).collect();
                return Some(DetailsAsk {
                    text: format!(
                        "[{}]",
                        asked
                            .iter()
                            .map(AuthorizationDetail::to_json_text)
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                    single_use: asked
                        .iter()
                        .filter(|d| d.single_use)
                        .map(|d| d.identifier.clone())
                        .collect(),
                });
            }
        }
        None
    }

    /// Remembers the single-use identifiers of `ask` as used (a call under its token was
    /// signed: the enclave took them).
    fn note_spent(&self, ask: &DetailsAsk) {
        if let Ok(mut s) = self.spent.lock() {
            for id in &ask.single_use {
                if !s.contains(id) {
                    if s.len() >= MAX_SPENT {
                        s.pop_front();
                    }
                    s.push_back(id.clone());
                }
            }
        }
    }

    /// The token endpoint.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// Signs `req` with a live token for `resource` and `scope` (its `access_token` is set
    /// here): the proof and the token it carries, made by the same enclave key. When the
    /// enclave's key changed since the token was obtained (a restart), the old key's tokens
    /// are dropped, a new one is exchanged and the proof signed again.
    ///
    /// The token asks for `details` when given (the agent's own ask), else for the details
    /// of the grant that alone covers the request's `tools/call`s ([`Sts::details_for`]),
    /// else for the contract's authority as before.
    pub async fn sign(
        &self,
        st: &AppState,
        resource: &str,
        scope: &str,
        details: Option<DetailsAsk>,
        mut req: SignPopRequest,
    ) -> Result<(SignPopResponse, Token), ParentError> {
        let details =
            details.or_else(|| self.details_for(&req.htu, &req.mcp, resource, now_secs()));
        for _ in 0..2 {
            let t = self
                .token_for_task(
                    st,
                    resource,
                    scope,
                    details.as_ref(),
                    &req.ctx,
                    (req.task.as_deref(), req.traceparent.as_deref()),
                )
                .await?;
            req.access_token = Some(t.value.clone());
            let signed: SignPopResponse = st.client.call(ops::SIGN_POP, &req).await?;
            if self.key_of(&signed)? == t.jkt {
                if let Some(d) = &details {
                    self.note_spent(d);
                }
                return Ok((signed, t));
            }
            // `key_of` dropped the old key's tokens: the next round exchanges anew.
        }
        Err(ParentError::Protocol(
            "the enclave's key changed twice while signing one request; retry".into(),
        ))
    }

    /// The thumbprint of the key that signed `signed`; when it is not the key seen last,
    /// the tokens held for other keys are dropped.
    fn key_of(&self, signed: &SignPopResponse) -> Result<String, ParentError> {
        let seen = self.key.lock().ok().and_then(|k| k.clone());
        if let Some(k) = seen.as_ref().filter(|k| k.att == signed.att) {
            return Ok(k.jkt.clone());
        }
        let jkt = cada_protocol::token::parse_compact(&signed.dpop)
            .map_err(|e: ProtocolError| {
                ParentError::Protocol(format!("the enclave's proof does not parse: {e}"))
            })?
            .header
            .jwk
            .thumbprint();
        if seen.as_ref().is_some_and(|k| k.jkt != jkt) {
            tracing::info!(
                key = %jkt,
                "the enclave's signing key changed (a restart?): access tokens bound to the \
                 old key dropped, new ones are exchanged"
            );
        }
        if let Ok(mut k) = self.key.lock() {
            *k = Some(KeySeen {
                att: signed.att.clone(),
                jkt: jkt.clone(),
            });
        }
        if let Ok(mut m) = self.held.lock() {
            m.retain(|(k, _, _, _), _| *k == jkt);
        }
        Ok(jkt)
    }

    /// A live token for `resource` with `scope` (space-separated; empty: what the contract
    /// grants), bound to the enclave key seen last: the one held, or a new exchange whose
    /// proof carries `ctx` (the request's: a contract's `requiredCtx` applies to the exchange
    /// proof too; the token then carries it for every later request). Use [`Sts::sign`] to
    /// sign with it: only that checks the proof's key is the token's.
    pub async fn token(
        &self,
        st: &AppState,
        resource: &str,
        scope: &str,
        ctx: &BTreeMap<String, String>,
    ) -> Result<Token, ParentError> {
        self.token_for(st, resource, scope, None, ctx).await
    }

    /// [`Sts::token`] asking for `details` too: a token of exactly those one-transaction
    /// grants, held apart from every other.
    pub async fn token_for(
        &self,
        st: &AppState,
        resource: &str,
        scope: &str,
        details: Option<&DetailsAsk>,
        ctx: &BTreeMap<String, String>,
    ) -> Result<Token, ParentError> {
        self.token_for_task(st, resource, scope, details, ctx, (None, None))
            .await
    }

    /// [`Sts::token_for`] for a request of a task: a new exchange's proof carries the
    /// request's task and traceparent (`custody`), so the STS's record joins the task's
    /// trace (a token held already was exchanged for an earlier request).
    pub async fn token_for_task(
        &self,
        st: &AppState,
        resource: &str,
        scope: &str,
        details: Option<&DetailsAsk>,
        ctx: &BTreeMap<String, String>,
        custody: (Option<&str>, Option<&str>),
    ) -> Result<Token, ParentError> {
        let now = now_secs();
        let asked = details.map_or("", |d| d.text.as_str());
        let current = self.key.lock().ok().and_then(|k| k.clone());
        if let Some(k) = current {
            let key = (
                k.jkt.clone(),
                resource.to_owned(),
                scope.to_owned(),
                asked.to_owned(),
            );
            if let Some(h) = self.held.lock().ok().and_then(|m| {
                m.get(&key).and_then(|h| {
                    let margin = REFRESH_MARGIN_SECS.min(h.exp.saturating_sub(h.issued) / 2);
                    (now + margin < h.exp).then(|| Token {
                        value: h.token.to_string(),
                        exp: h.exp,
                        scope: h.scope.clone(),
                        jkt: k.jkt.clone(),
                    })
                })
            }) {
                return Ok(h);
            }
        }
        let t = tokio::time::timeout(
            EXCHANGE_TIMEOUT,
            self.exchange(st, resource, scope, details, ctx, custody),
        )
        .await
        .map_err(|_| {
            ParentError::StsUnavailable(format!(
                "{} did not answer within {} s",
                self.token_endpoint(),
                EXCHANGE_TIMEOUT.as_secs()
            ))
        })??;
        if let Ok(mut m) = self.held.lock() {
            if m.len() >= MAX_HELD {
                m.retain(|_, h| h.exp > now);
            }
            if m.len() < MAX_HELD {
                m.insert(
                    (
                        t.jkt.clone(),
                        resource.to_owned(),
                        scope.to_owned(),
                        asked.to_owned(),
                    ),
                    Held {
                        token: Zeroizing::new(t.value.clone()),
                        issued: now,
                        exp: t.exp,
                        scope: t.scope.clone(),
                    },
                );
            }
        }
        Ok(t)
    }

    /// One exchange (retried once when the STS asks for a DPoP nonce).
    async fn exchange(
        &self,
        st: &AppState,
        resource: &str,
        scope: &str,
        details: Option<&DetailsAsk>,
        ctx: &BTreeMap<String, String>,
        custody: (Option<&str>, Option<&str>),
    ) -> Result<Token, ParentError> {
        let mut nonce = self.nonce.lock().ok().and_then(|n| n.clone());
        for attempt in 0..2 {
            let signed: SignPopResponse = st
                .client
                .call(
                    ops::SIGN_POP,
                    &SignPopRequest {
                        htm: "POST".into(),
                        htu: self.token_endpoint(),
                        access_token: None,
                        nonce: nonce.clone(),
                        ctx: ctx.clone(),
                        bd: None,
                        mcp: vec![],
                        // The enclave picks a contract that grants this token, not just
                        // one that covers the token endpoint (with details: one whose
                        // details cover them).
                        exchange: Some(TokenExchange {
                            resource: resource.to_owned(),
                            scopes: scope.split_whitespace().map(str::to_owned).collect(),
                            authorization_details: details.map(|d| d.text.clone()),
                        }),
                        task: custody.0.map(str::to_owned),
                        traceparent: custody.1.map(str::to_owned),
                    },
                )
                .await?;
            let jkt = self.key_of(&signed)?;
            let evidence = crate::api::evidence_for(st, &signed.att).await?;
            let contract = signed
                .dtc
                .as_deref()
                .and_then(|d| st.contract(d))
                .ok_or_else(|| ParentError::Sts {
                    error: "invalid_request".into(),
                    description: format!(
                        "the enclave signed under contract {}, which this daemon did not \
                         install: install the owner's contract with `cada-parent contract \
                         install` (a token needs the contract as its subject token)",
                        signed
                            .dtc
                            .as_deref()
                            .unwrap_or("(none: is the enclave locked?)")
                    ),
                })?;
            let form = {
                let mut f = url::form_urlencoded::Serializer::new(String::new());
                f.append_pair("grant_type", GRANT_TYPE_TOKEN_EXCHANGE)
                    .append_pair("subject_token", &contract)
                    .append_pair("subject_token_type", TOKEN_TYPE_CONTRACT)
                    .append_pair("resource", resource);
                if !scope.is_empty() {
                    f.append_pair("scope", scope);
                }
                if let Some(d) = details {
                    f.append_pair("authorization_details", &d.text);
                }
                f.finish()
            };
            let answer = self
                .fetcher
                .post_form(
                    &self.token_endpoint(),
                    form,
                    &[("dpop", &signed.dpop), ("cada-evidence", &evidence)],
                    MAX_ANSWER,
                )
                .await
                .map_err(|e| ParentError::StsUnavailable(e.to_string()))?;
            if let Some(n) = answer
                .headers
                .get("dpop-nonce")
                .and_then(|v| v.to_str().ok())
            {
                if let Ok(mut held) = self.nonce.lock() {
                    *held = Some(n.to_owned());
                }
                nonce = Some(n.to_owned());
            }
            let body: serde_json::Value =
                serde_json::from_slice(&answer.body).unwrap_or(serde_json::Value::Null);
            if answer.status == 200 {
                let value = body["access_token"].as_str().unwrap_or_default();
                let expires_in = body["expires_in"]
                    .as_u64()
                    .unwrap_or(0)
                    .min(cada_protocol::access_token::MAX_LIFETIME_SECS);
                if value.is_empty() || expires_in == 0 || body["token_type"] != "DPoP" {
                    return Err(ParentError::StsUnavailable(format!(
                        "{} answered 200 without a DPoP access token",
                        self.token_endpoint()
                    )));
                }
                return Ok(Token {
                    value: value.to_owned(),
                    exp: now_secs().saturating_add(expires_in),
                    scope: body["scope"].as_str().unwrap_or_default().to_owned(),
                    jkt,
                });
            }
            let error = body["error"].as_str().unwrap_or("").to_owned();
            if error == "use_dpop_nonce" && attempt == 0 && nonce.is_some() {
                continue;
            }
            if error.is_empty() {
                return Err(ParentError::StsUnavailable(format!(
                    "{} answered {}",
                    self.token_endpoint(),
                    answer.status
                )));
            }
            return Err(ParentError::Sts {
                error: clip(&error),
                description: clip(body["error_description"].as_str().unwrap_or_default()),
            });
        }
        Err(ParentError::StsUnavailable(
            "the STS kept asking for a new DPoP nonce".into(),
        ))
    }
}

/// `compact` read with the owner key its issuer names (a `did:key`), at `now`; a delegation
/// chain `root~…~leaf` (issue 24) is read at its leaf, the chain verified under the root's
/// issuer (the enclave checked it against the owner it is locked to).
fn read_contract(compact: &str, now: u64) -> Option<VerifiedContract> {
    if compact.contains('~') {
        let parts = cada_contract::split_chain(compact).ok()?;
        let (_, payload) = Contract::decode_unverified(parts.first()?).ok()?;
        let owners = TrustedOwners::from_did_key(payload.get("issuer")?.as_str()?).ok()?;
        return cada_contract::verify_chain(&parts, &owners, now)
            .ok()
            .map(|c| c.leaf().clone());
    }
    let (_, payload) = Contract::decode_unverified(compact).ok()?;
    let issuer = payload.get("issuer")?.as_str()?;
    let owners = TrustedOwners::from_did_key(issuer).ok()?;
    Contract::verify(compact, &owners, now).ok()
}

/// `d` with its locations narrowed to those covering `url`, each taken under `under` (the
/// location itself when it lies under it, `under` when the location is wider); `d` as it
/// is when none remains (the enclave and the STS then name the rule).
fn narrow(d: &AuthorizationDetail, url: &HttpUrl, under: &UrlPrefix) -> AuthorizationDetail {
    let mut locations: Vec<String> = Vec::new();
    for p in d.locations.iter().filter_map(|l| UrlPrefix::parse(l).ok()) {
        if !p.matches(url) {
            continue;
        }
        let l = if under.matches(p.url()) {
            p.as_str()
        } else if p.matches(under.url()) {
            under.as_str()
        } else {
            continue;
        };
        if !locations.iter().any(|x| x == l) {
            locations.push(l.to_owned());
        }
    }
    let mut out = d.clone();
    if !locations.is_empty() {
        out.locations = locations;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cada_contract::{Grant, OwnerAlg, OwnerKey, Subject};

    const GATE: &str = "http://127.0.0.1:8080/mcp";
    const AGENT: &str = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK";

    fn sts() -> Sts {
        Sts::new("http://127.0.0.1:9/", Fetcher::mozilla().unwrap())
    }

    fn now() -> u64 {
        now_secs()
    }

    fn call(tool: &str) -> McpCall {
        McpCall {
            method: "tools/call".into(),
            target: Some(tool.into()),
        }
    }

    /// A grant of `details` (a JSON array) only, for ten minutes.
    fn grant(owner: &OwnerKey, details: &str) -> String {
        let mut g = Grant::new(
            Subject::Key(AGENT.into()),
            vec![],
            vec!["POST".into()],
            now() - 5,
            now() + 600,
        );
        g.authorization_details = AuthorizationDetail::parse_draft_list(details).unwrap();
        for (i, d) in g.authorization_details.iter_mut().enumerate() {
            if d.identifier.is_empty() {
                d.identifier = format!("urn:uuid:{}-{i}", cada_contract::digest_of(details));
            }
        }
        g.issue(owner, now() - 5).unwrap()
    }

    fn transfer(locations: &str, single_use: bool, id: &str) -> String {
        format!(
            r#"[{{"type":"mcp_tool_call","locations":{locations},"tool":"transfer",
                "arguments":{{"amount":{{"max":500}}}},"single_use":{single_use},
                "identifier":"{id}"}}]"#
        )
    }

    fn asked(a: &DetailsAsk) -> Vec<AuthorizationDetail> {
        AuthorizationDetail::parse_draft_list(&a.text).unwrap()
    }

    /// Issue 23: the daemon never asked the STS for authorization_details, so a call that
    /// only a one-transaction grant covers got a token of the contracts' audiences, which
    /// cannot carry it. Now it asks for exactly the covering detail, narrowed to the
    /// resource.
    #[test]
    fn a_call_only_a_grant_covers_asks_for_exactly_its_detail() {
        let s = sts();
        let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let g = grant(
            &owner,
            &transfer(
                r#"["http://127.0.0.1:8080/","http://127.0.0.1:9090/"]"#,
                true,
                "urn:uuid:t1",
            ),
        );
        s.note_contract(&g);
        let a = s
            .details_for(GATE, &[call("transfer")], GATE, now())
            .unwrap();
        let d = asked(&a);
        assert_eq!(d.len(), 1);
        // The location that covers the URL, taken under the resource; the rest as granted.
        assert_eq!(d[0].locations, vec![GATE.to_owned()]);
        assert_eq!(d[0].identifier, "urn:uuid:t1");
        assert!(d[0].single_use);
        assert_eq!(a.single_use, vec!["urn:uuid:t1".to_owned()]);
        let granted = &AuthorizationDetail::parse_draft_list(&transfer(
            r#"["http://127.0.0.1:8080/"]"#,
            true,
            "urn:uuid:t1",
        ))
        .unwrap()[0];
        assert!(d[0].is_within(granted));
        // A location under the resource stays as it is.
        let a = s
            .details_for(GATE, &[call("transfer")], "http://127.0.0.1:8080/", now())
            .unwrap();
        assert_eq!(
            asked(&a)[0].locations,
            vec!["http://127.0.0.1:8080/".to_owned()]
        );
        // Nothing to ask: no tools/call, another tool, another server, past its minutes.
        let list = McpCall {
            method: "tools/list".into(),
            target: None,
        };
        assert_eq!(s.details_for(GATE, &[list], GATE, now()), None);
        assert_eq!(s.details_for(GATE, &[call("refund")], GATE, now()), None);
        let elsewhere = "http://127.0.0.1:7070/mcp";
        assert_eq!(
            s.details_for(elsewhere, &[call("transfer")], elsewhere, now()),
            None
        );
        assert_eq!(
            s.details_for(GATE, &[call("transfer")], GATE, now() + 600),
            None
        );
        // Used by a signed call: asked only when nothing else covers the call (the enclave
        // then refuses it grant.used, naming the rule); a second grant is asked first.
        s.note_spent(&a);
        let again = s
            .details_for(GATE, &[call("transfer")], GATE, now())
            .unwrap();
        assert_eq!(asked(&again)[0].identifier, "urn:uuid:t1");
        let g2 = grant(
            &owner,
            &transfer(r#"["http://127.0.0.1:8080/mcp"]"#, true, "urn:uuid:t2"),
        );
        s.note_contract(&g2);
        let a = s
            .details_for(GATE, &[call("transfer")], GATE, now())
            .unwrap();
        assert_eq!(asked(&a)[0].identifier, "urn:uuid:t2");
    }

    /// Issue 24: a worker's daemon installs a delegation chain; the one-transaction details
    /// it asks the STS for come from the chain's leaf (before, a chain was not read, so a
    /// call only the delegated grant covers got no details).
    #[test]
    fn a_delegation_chain_is_read_at_its_leaf() {
        use cada_contract::{DelegationRules, Draft, PublicKey, StatusEntry};
        let s = sts();
        let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let planner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let list = "https://owner.example/status/1";
        let mut g = Grant::new(
            Subject::Key(planner.did().into()),
            vec![],
            vec!["POST".into()],
            now() - 5,
            now() + 600,
        );
        g.authorization_details = AuthorizationDetail::parse_draft_list(&transfer(
            r#"["http://127.0.0.1:8080/"]"#,
            false,
            "urn:uuid:d1",
        ))
        .unwrap();
        g.delegation = Some(DelegationRules {
            max_depth: 1,
            status_list: list.into(),
            status_range: [10, 20],
        });
        let root = g.issue(&owner, now() - 5).unwrap();
        let owners = TrustedOwners::from_did_key(owner.did()).unwrap();
        let c0 = cada_contract::verify_chain(&[root.as_str()], &owners, now()).unwrap();
        let mut child =
            cada_contract::narrow_grant(c0.leaf(), AGENT, "{}", now() - 5, now() + 300).unwrap();
        child.status = Some(StatusEntry::new(list, 10).unwrap());
        let draft = Draft::under(&c0, child, planner.did(), now()).unwrap();
        draft.check(&c0).unwrap();
        // Evidence is the verifiers' to check: one byte stands for it here.
        let payload = draft.payload_bytes(&[1]).unwrap();
        let alg = cada_protocol::jwk::SigAlg::EdDSA;
        let kid = PublicKey::from_did_key(planner.did())
            .unwrap()
            .did_key_url();
        let input = draft.signing_input(&payload, alg, &kid).unwrap();
        let sig = planner.sign_bytes(input.as_bytes()).unwrap();
        let leaf = draft.assemble(&payload, alg, &kid, &sig).unwrap();
        // Not a chain the library verifies: not noted.
        s.note_contract(&format!("{root}~{root}"));
        assert!(s.contracts.lock().unwrap().is_empty());
        s.note_contract(&format!("{root}~{leaf}"));
        assert_eq!(
            s.contracts.lock().unwrap()[0].digest(),
            cada_contract::digest_of(&leaf)
        );
        let a = s
            .details_for(GATE, &[call("transfer")], GATE, now())
            .unwrap();
        assert_eq!(asked(&a)[0].identifier, "urn:uuid:d1");
    }

    #[test]
    fn a_standing_grant_of_the_tool_or_a_batch_picks_as_the_enclave_does() {
        let s = sts();
        let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        // Two single-use details in one grant, then a reusable one in a newer grant.
        let two = format!(
            "[{},{}]",
            transfer(r#"["http://127.0.0.1:8080/"]"#, true, "urn:uuid:a").trim_matches(['[', ']']),
            transfer(r#"["http://127.0.0.1:8080/"]"#, true, "urn:uuid:b").trim_matches(['[', ']'])
        );
        s.note_contract(&grant(&owner, &two));
        let batch = [call("transfer"), call("transfer")];
        let a = s.details_for(GATE, &batch, GATE, now()).unwrap();
        let ids: Vec<String> = asked(&a).into_iter().map(|d| d.identifier).collect();
        assert_eq!(ids, vec!["urn:uuid:a".to_owned(), "urn:uuid:b".to_owned()]);
        assert_eq!(
            s.details_for(GATE, &vec![call("transfer"); 3], GATE, now()),
            None
        );
        let reusable = grant(
            &owner,
            &transfer(r#"["http://127.0.0.1:8080/"]"#, false, "urn:uuid:r"),
        );
        s.note_contract(&reusable);
        let a = s.details_for(GATE, &batch, GATE, now()).unwrap();
        assert_eq!(asked(&a).len(), 1);
        assert!(a.single_use.is_empty());
        // A standing contract granting the tool at the URL: its own token serves the call.
        let mut g = Grant::new(
            Subject::Key(AGENT.into()),
            vec!["http://127.0.0.1:8080/".into()],
            vec!["POST".into()],
            now() - 5,
            now() + 600,
        );
        g.tools = vec!["transfer".into()];
        s.note_contract(&g.issue(&owner, now() - 5).unwrap());
        assert_eq!(s.details_for(GATE, &batch, GATE, now()), None);
        // Junk is not noted.
        s.note_contract("not.a.contract");
        assert_eq!(s.contracts.lock().unwrap().len(), 3);
    }

    #[test]
    fn an_agents_own_ask_is_sent_as_written() {
        let text = transfer(r#"["http://127.0.0.1:8080/mcp"]"#, true, "urn:uuid:own");
        let a = DetailsAsk::explicit(&text);
        assert_eq!(a.text, text);
        assert_eq!(a.single_use, vec!["urn:uuid:own".to_owned()]);
        assert!(DetailsAsk::explicit("[junk").single_use.is_empty());
    }
}
