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
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use cada_net::fetch::Fetcher;
use cada_protocol::access_token::{GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_CONTRACT};
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

/// What a held token is for: (the enclave key's RFC 7638 thumbprint, resource, scope).
type HeldFor = (String, String, String);

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
    pub async fn sign(
        &self,
        st: &AppState,
        resource: &str,
        scope: &str,
        mut req: SignPopRequest,
    ) -> Result<(SignPopResponse, Token), ParentError> {
        for _ in 0..2 {
            let t = self.token(st, resource, scope, &req.ctx).await?;
            req.access_token = Some(t.value.clone());
            let signed: SignPopResponse = st.client.call(ops::SIGN_POP, &req).await?;
            if self.key_of(&signed)? == t.jkt {
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
            m.retain(|(k, _, _), _| *k == jkt);
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
        let now = now_secs();
        let current = self.key.lock().ok().and_then(|k| k.clone());
        if let Some(k) = current {
            let key = (k.jkt.clone(), resource.to_owned(), scope.to_owned());
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
        let t = tokio::time::timeout(EXCHANGE_TIMEOUT, self.exchange(st, resource, scope, ctx))
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
                    (t.jkt.clone(), resource.to_owned(), scope.to_owned()),
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
        ctx: &BTreeMap<String, String>,
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
                        // one that covers the token endpoint.
                        exchange: Some(TokenExchange {
                            resource: resource.to_owned(),
                            scopes: scope.split_whitespace().map(str::to_owned).collect(),
                            authorization_details: None,
                        }),
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
