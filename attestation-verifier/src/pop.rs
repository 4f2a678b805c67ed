//! CB-PoP verification (DESIGN.md "CB-PoP token"): signature under the header `jwk`, key
//! bound by verified evidence (cached by thumbprint until the evidence expires), `htm`/`htu`
//! against the request, freshness, `jti` replay, `ath`, `nonce` and `ctx` constraints.
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use cada_protocol::envelope::EvidenceEnvelope;
use cada_protocol::token::{self, PopClaims, MAX_LIFETIME_SECS};
use serde::Serialize;

use crate::evidence::{AttestedKey, EvidencePolicy, EvidenceVerifier};
use crate::nitro::NitroPolicy;
use crate::replay::ReplayStore;
use crate::signature::verify_jws as verify_signature;
use crate::snp::SnpPolicy;
use crate::{UnixTime, VerifyError};

/// Constraints on `cada.ctx`.
#[derive(Debug, Clone, Default)]
pub struct ContextPolicy {
    /// Keys every proof must carry.
    pub required: Vec<String>,
    /// Keys whose value must be one of the listed values.
    pub allowed_values: BTreeMap<String, Vec<String>>,
}

/// Verifier configuration.
#[derive(Debug, Clone)]
pub struct PopConfig {
    /// Allowed clock skew between signer and verifier, seconds.
    pub skew_secs: u64,
    /// Policy Nitro (and sim) evidence must satisfy.
    pub evidence_policy: NitroPolicy,
    /// Policy SEV-SNP (and sim-snp) evidence must satisfy.
    pub snp_policy: SnpPolicy,
    /// How long verified evidence is relied on (default three hours).
    pub evidence_max_age_ms: Option<u64>,
    /// `cada.ctx` constraints.
    pub context: ContextPolicy,
    /// Most keys remembered at once.
    pub max_keys: usize,
}

impl Default for PopConfig {
    fn default() -> Self {
        PopConfig {
            skew_secs: 10,
            evidence_policy: NitroPolicy::default(),
            snp_policy: SnpPolicy::default(),
            evidence_max_age_ms: None,
            context: ContextPolicy::default(),
            max_keys: 100_000,
        }
    }
}

/// The request a proof is presented with.
#[derive(Debug, Clone, Default)]
pub struct PopRequest<'a> {
    /// HTTP method of the request.
    pub method: &'a str,
    /// Full request URL.
    pub url: &'a str,
    /// The access token the request carries (then `ath` is required).
    pub access_token: Option<&'a str>,
    /// The nonce this server demands (then the proof must carry it).
    pub expected_nonce: Option<&'a str>,
    /// Evidence sent with the request (`CADA-Evidence`).
    pub evidence: Option<&'a EvidenceEnvelope>,
}

/// A proof that passed every check.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedPop {
    /// The attested key that signed it.
    pub key: AttestedKey,
    /// Its claims.
    pub claims: PopClaims,
}

/// Verified evidence for one key, by the evidence digest that proofs name in `cada.att`.
/// Each proof is checked against exactly the evidence it names.
#[derive(Default)]
struct KnownKey {
    /// att → (what that evidence attests, whether its did:key was checked against the key).
    evidence: HashMap<String, (AttestedKey, bool)>,
}

/// How long past its last acceptable instant a proof's `jti` is remembered.
pub const REPLAY_MARGIN_MS: u64 = 1000;

/// Evidence documents remembered per key (an enclave makes new evidence per verifier nonce).
const MAX_EVIDENCE_PER_KEY: usize = 16;

impl KnownKey {
    fn live(&self, now: UnixTime) -> bool {
        self.evidence.values().any(|(k, _)| k.expires >= now)
    }
}

/// Verifies proofs, remembering attested keys by thumbprint.
pub struct PopVerifier {
    evidence: EvidenceVerifier,
    config: PopConfig,
    keys: Mutex<HashMap<String, KnownKey>>,
}

/// Normalises an absolute http(s) URL for comparison (RFC 9449 §4.3, RFC 3986 §6) with the
/// one URL type of the project ([`cada_protocol::url::HttpUrl`]): scheme and host
/// lower-cased, default port dropped, percent-encoding normalised; query and fragment
/// removed; userinfo, dot segments and the other strict-path refusals of
/// [`cada_protocol::url`] refused.
pub fn normalize_htu(u: &str) -> Result<String, VerifyError> {
    let without_fragment = u.split_once('#').map_or(u, |(a, _)| a);
    cada_protocol::url::HttpUrl::parse_normalized(without_fragment)
        .map(|url| url.as_str().to_owned())
        .map_err(|_| VerifyError::BadUrl(u.chars().take(200).collect()))
}

impl PopVerifier {
    /// A verifier using `evidence` to check `CADA-Evidence`.
    pub fn new(evidence: EvidenceVerifier, config: PopConfig) -> Self {
        PopVerifier {
            evidence,
            config,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PopConfig {
        &self.config
    }

    /// The evidence verifier (for evidence judged at another time than a proof's, e.g. a
    /// delegator's at its delegation's `iat`).
    pub fn evidence(&self) -> &EvidenceVerifier {
        &self.evidence
    }

    /// Verifies evidence and remembers the key it binds until the evidence expires.
    pub fn admit_evidence(
        &self,
        env: &EvidenceEnvelope,
        now: UnixTime,
    ) -> Result<AttestedKey, VerifyError> {
        self.admit_evidence_for_nonce(env, None, now)
    }

    /// Like [`Self::admit_evidence`], additionally requiring the evidence to carry `nonce`
    /// (a verifier-chosen challenge, for freshness).
    pub fn admit_evidence_for_nonce(
        &self,
        env: &EvidenceEnvelope,
        nonce: Option<&[u8]>,
        now: UnixTime,
    ) -> Result<AttestedKey, VerifyError> {
        let key = self.verify_evidence(env, nonce, now)?;
        self.remember(&key, now);
        Ok(key)
    }

    /// Verifies evidence under this verifier's policy without remembering its key.
    pub fn verify_evidence(
        &self,
        env: &EvidenceEnvelope,
        nonce: Option<&[u8]>,
        now: UnixTime,
    ) -> Result<AttestedKey, VerifyError> {
        let mut policy = EvidencePolicy {
            nitro: self.config.evidence_policy.clone(),
            snp: self.config.snp_policy.clone(),
            max_age_ms: self.config.evidence_max_age_ms,
        };
        if let Some(n) = nonce {
            // A verifier-chosen challenge: Nitro carries it as the nonce; SNP binds
            // SHA-512(binding ‖ nonce) in report_data, which verify_with checks against the
            // envelope's nonce — so the envelope's nonce must be this one.
            policy.nitro.expected_nonce = Some(n.to_vec());
            if env.nonce != n {
                return Err(VerifyError::NonceMismatch {
                    expected: hex::encode(n),
                    found: hex::encode(&env.nonce),
                });
            }
        }
        self.evidence.verify_with(env, &policy, now)
    }

    /// Remembers a verified key until its evidence expires (bounded: when the cache is
    /// full of live keys, new keys are verified but not remembered).
    pub fn remember(&self, key: &AttestedKey, now: UnixTime) {
        if key.expires < now {
            return;
        }
        if let Ok(mut keys) = self.keys.lock() {
            if keys.len() >= self.config.max_keys {
                keys.retain(|_, k| k.live(now));
            }
            if keys.len() < self.config.max_keys || keys.contains_key(&key.jkt) {
                let entry = keys.entry(key.jkt.clone()).or_default();
                if entry.evidence.len() >= MAX_EVIDENCE_PER_KEY {
                    entry.evidence.retain(|_, (k, _)| k.expires >= now);
                }
                if entry.evidence.len() >= MAX_EVIDENCE_PER_KEY {
                    if let Some(oldest) = entry
                        .evidence
                        .iter()
                        .min_by_key(|(_, (k, _))| k.expires)
                        .map(|(a, _)| a.clone())
                    {
                        entry.evidence.remove(&oldest);
                    }
                }
                entry
                    .evidence
                    .entry(key.att.clone())
                    .or_insert_with(|| (key.clone(), false));
            }
        }
    }

    /// Number of keys remembered.
    pub fn known_keys(&self) -> usize {
        self.keys.lock().map(|k| k.len()).unwrap_or(0)
    }

    /// Verifies a compact proof for `req` at `now`, recording its `jti` in `replay`.
    pub fn verify(
        &self,
        dpop: &str,
        req: &PopRequest<'_>,
        replay: &dyn ReplayStore,
        now: UnixTime,
    ) -> Result<VerifiedPop, VerifyError> {
        let (pop, key_expires) = self.check(dpop, req, now)?;
        self.record(&pop, key_expires, replay, now)?;
        Ok(pop)
    }

    /// Every check except the replay store (for callers whose store is asynchronous).
    /// Returns the verified proof and the time until which its `jti` must be remembered.
    pub fn check(
        &self,
        dpop: &str,
        req: &PopRequest<'_>,
        now: UnixTime,
    ) -> Result<(VerifiedPop, UnixTime), VerifyError> {
        self.check_with(dpop, req, now, &|env| self.admit_evidence(env, now))
    }

    /// [`Self::check`] with the caller's way of admitting evidence sent with the proof
    /// (the decision adds freshness rules of its own there).
    pub fn check_with(
        &self,
        dpop: &str,
        req: &PopRequest<'_>,
        now: UnixTime,
        admit: &dyn Fn(&EvidenceEnvelope) -> Result<AttestedKey, VerifyError>,
    ) -> Result<(VerifiedPop, UnixTime), VerifyError> {
        self.check_inner(dpop, req, now, KeySource::Evidence(admit))
    }

    /// [`Self::check`] for a proof whose key an access token attests (`key`, from
    /// [`crate::access_token::verify`]): the proof's key must be the token's `cnf.jkt`
    /// (and its did:key the token's `sub`); evidence is neither needed nor looked at.
    pub fn check_with_token_key(
        &self,
        dpop: &str,
        req: &PopRequest<'_>,
        now: UnixTime,
        key: &AttestedKey,
    ) -> Result<(VerifiedPop, UnixTime), VerifyError> {
        self.check_inner(dpop, req, now, KeySource::Token(key))
    }

    fn check_inner(
        &self,
        dpop: &str,
        req: &PopRequest<'_>,
        now: UnixTime,
        source: KeySource<'_>,
    ) -> Result<(VerifiedPop, UnixTime), VerifyError> {
        let parsed = token::parse_compact(dpop)?;
        let public_key = parsed.header.jwk.public_key_bytes()?;
        if !verify_signature(
            parsed.alg,
            &public_key,
            parsed.signing_input.as_bytes(),
            &parsed.signature,
        ) {
            return Err(VerifyError::PopSignature);
        }
        let jkt = parsed.header.jwk.thumbprint();
        let admit = match source {
            KeySource::Evidence(admit) => admit,
            KeySource::Token(key) => {
                if key.jkt != jkt || parsed.header.jwk.did_key()? != key.did {
                    return Err(VerifyError::AccessToken {
                        code: "token.binding",
                        detail: format!(
                            "the access token is bound to key {} (cnf.jkt), the proof is \
                             signed by {jkt}: a token works only with its own key",
                            key.jkt
                        ),
                    });
                }
                return self.check_claims(&parsed, req, now, key.clone());
            }
        };
        if let Some(env) = req.evidence {
            let bound = admit(env)?;
            if bound.jkt != jkt {
                return Err(VerifyError::BindingMismatch {
                    bound: bound.jkt,
                    presented: jkt,
                });
            }
        }
        let att = &parsed.claims.cada.att;
        let (key, did_checked) = {
            let keys = self
                .keys
                .lock()
                .map_err(|_| VerifyError::Binding("key cache poisoned".into()))?;
            match keys.get(&jkt) {
                Some(k) => match k.evidence.get(att) {
                    Some((e, checked)) if e.expires >= now => (e.clone(), *checked),
                    _ if k.live(now) => {
                        return Err(VerifyError::UnknownEvidence { att: att.clone() })
                    }
                    _ => return Err(VerifyError::EvidenceRequired { jkt }),
                },
                None => return Err(VerifyError::EvidenceRequired { jkt }),
            }
        };
        // The binding names the key twice (jkt and did:key): the jkt matched above; the
        // did:key is checked once per binding, not on every proof.
        if !did_checked {
            if parsed.header.jwk.did_key()? != key.did {
                return Err(VerifyError::Binding(
                    "the bound did:key is not the proof key's".into(),
                ));
            }
            if let Ok(mut keys) = self.keys.lock() {
                if let Some((_, checked)) = keys.get_mut(&jkt).and_then(|k| k.evidence.get_mut(att))
                {
                    *checked = true;
                }
            }
        }
        self.check_claims(&parsed, req, now, key)
    }

    /// Rules 6–9 on a proof whose key is known: method, URL, freshness, `ath`, nonce, ctx.
    fn check_claims(
        &self,
        parsed: &token::ParsedPop<'_>,
        req: &PopRequest<'_>,
        now: UnixTime,
        key: AttestedKey,
    ) -> Result<(VerifiedPop, UnixTime), VerifyError> {
        let c = &parsed.claims;
        if c.htm != req.method {
            return Err(VerifyError::MethodMismatch {
                claimed: c.htm.clone(),
                actual: req.method.to_owned(),
            });
        }
        let (claimed, actual) = (normalize_htu(&c.htu)?, normalize_htu(req.url)?);
        if claimed != actual {
            return Err(VerifyError::UrlMismatch { claimed, actual });
        }
        // One resolution end to end: milliseconds. A proof is acceptable while
        // now <= (exp + skew) s and is remembered (replay) past that point.
        let skew_ms = self.config.skew_secs.saturating_mul(1000);
        let now_ms = now.as_millis();
        if c.exp <= c.iat || c.exp - c.iat > MAX_LIFETIME_SECS {
            return Err(VerifyError::NotFresh(format!(
                "exp - iat must be 1..={MAX_LIFETIME_SECS} s, is {}",
                i128::from(c.exp) - i128::from(c.iat)
            )));
        }
        let iat_ms = c.iat.saturating_mul(1000);
        let last_ms = c.exp.saturating_mul(1000).saturating_add(skew_ms);
        if iat_ms > now_ms.saturating_add(skew_ms) {
            return Err(VerifyError::NotFresh(format!(
                "iat is {} ms in the future (allowed skew {} s)",
                iat_ms - now_ms,
                self.config.skew_secs
            )));
        }
        if now_ms > last_ms {
            return Err(VerifyError::NotFresh(format!(
                "expired {} ms ago (exp plus {} s of skew)",
                now_ms - last_ms,
                self.config.skew_secs
            )));
        }
        if c.jti.is_empty() || c.jti.len() > 128 {
            return Err(VerifyError::NotFresh(
                "jti must be 1..=128 characters".into(),
            ));
        }
        match (req.access_token, &c.ath) {
            (Some(at), Some(ath)) if *ath == token::access_token_hash(at) => {}
            (Some(_), Some(_)) => {
                return Err(VerifyError::AccessTokenHash(
                    "does not match the access token",
                ))
            }
            (Some(_), None) => {
                return Err(VerifyError::AccessTokenHash(
                    "is missing but an access token was sent",
                ))
            }
            (None, _) => {}
        }
        if let Some(n) = req.expected_nonce {
            match &c.nonce {
                Some(got) if got == n => {}
                Some(_) => {
                    return Err(VerifyError::PopNonce(
                        "does not match the nonce this server issued",
                    ))
                }
                None => return Err(VerifyError::PopNonce("is required by this server")),
            }
        }
        let ctx = &self.config.context;
        for k in &ctx.required {
            if !c.cada.ctx.contains_key(k) {
                return Err(VerifyError::Context(format!("ctx.{k} is required")));
            }
        }
        for (k, allowed) in &ctx.allowed_values {
            if let Some(v) = c.cada.ctx.get(k) {
                if !allowed.contains(v) {
                    return Err(VerifyError::Context(format!(
                        "ctx.{k} = {v:?} is not allowed"
                    )));
                }
            }
        }
        // Remembered one second past the last acceptable instant, so that a store that
        // rounds its expiry down (Redis TTLs) still covers the whole window.
        let remember_until = UnixTime::from_millis(last_ms.saturating_add(REPLAY_MARGIN_MS));
        Ok((
            VerifiedPop {
                key,
                claims: parsed.claims.clone(),
            },
            remember_until,
        ))
    }

    /// Records the proof's `jti` (per key) in `replay`; fails on a replay or a store outage.
    pub fn record(
        &self,
        pop: &VerifiedPop,
        remember_until: UnixTime,
        replay: &dyn ReplayStore,
        now: UnixTime,
    ) -> Result<(), VerifyError> {
        let key = replay_key(&pop.key.jkt, &pop.claims.jti);
        match replay.insert_new(&key, remember_until, now) {
            Ok(true) => Ok(()),
            Ok(false) => Err(VerifyError::Replay {
                jti: pop.claims.jti.clone(),
            }),
            Err(e) => Err(VerifyError::ReplayStoreUnavailable(e)),
        }
    }
}

/// Where the key of a proof is attested.
enum KeySource<'a> {
    /// Evidence sent with the proof (admitted by the callback), or remembered.
    Evidence(&'a dyn Fn(&EvidenceEnvelope) -> Result<AttestedKey, VerifyError>),
    /// An access token of a trusted issuer.
    Token(&'a AttestedKey),
}

/// The replay-store key of a proof: its key's thumbprint and its jti.
pub fn replay_key(jkt: &str, jti: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(jkt.len() + jti.len() + 1);
    k.extend_from_slice(jkt.as_bytes());
    k.push(b' ');
    k.extend_from_slice(jti.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htu_normalisation() {
        let n = |s| normalize_htu(s).unwrap();
        assert_eq!(
            n("HTTPS://Server.Example:443/b?x=1#f"),
            "https://server.example/b"
        );
        // Dot segments are refused, never resolved (issue 21: `/a/../b` was `/b`).
        assert!(normalize_htu("https://server.example/a/../b").is_err());
        assert_eq!(
            n("https://server.example/%7Euser"),
            n("https://server.example/~user")
        );
        assert_ne!(n("https://server.example/a"), n("https://server.example/A"));
        assert_ne!(
            n("https://server.example:8443/a"),
            n("https://server.example/a")
        );
        assert!(normalize_htu("ftp://x/").is_err());
        assert!(normalize_htu("/relative").is_err());
    }
}
