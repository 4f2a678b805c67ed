//! Access tokens as an alternative to evidence (rule 5 of [`crate::decide`]): an RFC 9068
//! token (`typ: at+jwt`) from an issuer the policy trusts (a `cada-sts`, which verified the
//! evidence, measurements and contract before issuing it) attests the key its `cnf.jkt`
//! names, for the resource its `aud` names, until its `exp`.
//!
//! A token is read with hard limits (size, one JWS, known `alg`, no `crit`), its signature
//! checked under the issuer's JWKS key named by `kid`, and its claims: `iss` trusted, `exp`
//! in the future and `iat` not in it (with the policy's skew), `aud` a URL prefix that
//! covers the request URL on path-segment boundaries.
use std::collections::HashMap;

use cada_protocol::access_token::{AccessTokenClaims, MAX_TOKEN_LEN, TYP};
use cada_protocol::envelope::Platform;
use cada_protocol::jwk::{Jwk, SigAlg};
use cada_protocol::jws;
use cada_protocol::url::{HttpUrl, UrlPrefix};
use serde::Deserialize;

use crate::evidence::AttestedKey;
use crate::{UnixTime, VerifyError};

/// Most keys read from one JWKS.
const MAX_KEYS: usize = 16;
/// Largest JWKS document read.
pub const MAX_JWKS_LEN: usize = 64 * 1024;

/// One verification key of an issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerKey {
    /// Its `kid`.
    pub kid: String,
    /// Its algorithm.
    pub alg: SigAlg,
    /// Raw public key (SEC1 point or Ed25519 bytes).
    pub public: Vec<u8>,
}

#[derive(Deserialize)]
struct JwksFile {
    keys: Vec<serde_json::Value>,
}

/// Reads a JWKS (`{"keys": [...]}`): EC P-256/P-384 and Ed25519 signing keys with a `kid`.
/// Keys for encryption (`use: enc`) are skipped; anything unreadable refuses the whole set.
pub fn parse_jwks(json: &[u8]) -> Result<Vec<IssuerKey>, String> {
    if json.len() > MAX_JWKS_LEN {
        return Err(format!("the JWKS is more than {MAX_JWKS_LEN} bytes"));
    }
    let f: JwksFile = serde_json::from_slice(json).map_err(|e| format!("not a JWKS: {e}"))?;
    if f.keys.len() > MAX_KEYS {
        return Err(format!("more than {MAX_KEYS} keys"));
    }
    let mut out = Vec::new();
    for k in f.keys {
        if k.get("use").and_then(|u| u.as_str()) == Some("enc") {
            continue;
        }
        let kid = k
            .get("kid")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or("a key without a kid")?
            .to_owned();
        // The public key members only; `kid`, `use`, `alg` … are JWKS metadata.
        let members: serde_json::Map<String, serde_json::Value> = ["kty", "crv", "x", "y"]
            .iter()
            .filter_map(|m| k.get(*m).map(|v| ((*m).to_owned(), v.clone())))
            .collect();
        let jwk: Jwk = serde_json::from_value(serde_json::Value::Object(members))
            .map_err(|e| format!("key {kid}: {e}"))?;
        let alg = jwk.alg().map_err(|e| format!("key {kid}: {e}"))?;
        if let Some(named) = k.get("alg").and_then(|a| a.as_str()) {
            if SigAlg::parse(named).map_err(|e| format!("key {kid}: {e}"))? != alg
                && !(alg.is_ed25519() && named == "Ed25519")
            {
                return Err(format!("key {kid}: alg {named} does not fit its curve"));
            }
        }
        let public = jwk
            .public_key_bytes()
            .map_err(|e| format!("key {kid}: {e}"))?;
        out.push(IssuerKey { kid, alg, public });
    }
    if out.is_empty() {
        return Err("the JWKS holds no signing key".into());
    }
    Ok(out)
}

fn err(code: &'static str, detail: impl Into<String>) -> VerifyError {
    VerifyError::AccessToken {
        code,
        detail: detail.into(),
    }
}

/// Whether `token` is meant for this module: a compact JWS whose header says `at+jwt`.
/// Other access tokens (opaque, or another AS's formats) keep their `ath`-only meaning.
pub fn is_jwt_access_token(token: &str) -> bool {
    let Some(h) = token.split('.').next() else {
        return false;
    };
    if token.len() > MAX_TOKEN_LEN || token.split('.').count() != 3 || h.len() > 1024 {
        return false;
    }
    cada_protocol::b64::decode("header", h, 768)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v.get("typ").and_then(|t| t.as_str()) == Some(TYP))
}

/// Where [`verify`] finds the key a token's header names.
pub trait IssuerKeys {
    /// The key `kid` of the trusted issuer `issuer`, or the refusal: `token.issuer` (not a
    /// trusted issuer), `token.unknown_key` (no such key), `token.jwks_stale` (the keys
    /// that could hold it are too old to use).
    fn key(&self, issuer: &str, kid: &str) -> Result<&IssuerKey, VerifyError>;
}

/// Keys held once and for all, by issuer (keys pinned in a file, tests).
impl IssuerKeys for HashMap<String, Vec<IssuerKey>> {
    fn key(&self, issuer: &str, kid: &str) -> Result<&IssuerKey, VerifyError> {
        let keys = self.get(issuer).ok_or_else(|| untrusted(issuer))?;
        keys.iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| unknown_key(issuer, kid))
    }
}

/// `token.issuer`: `issuer` is not a policy `[[issuer]]`.
pub(crate) fn untrusted(issuer: &str) -> VerifyError {
    err(
        "token.issuer",
        format!(
            "the token's issuer {:?} is not trusted here (policy [[issuer]])",
            clip(issuer)
        ),
    )
}

/// `token.unknown_key`: no key `kid` among those held for `issuer`.
pub(crate) fn unknown_key(issuer: &str, kid: &str) -> VerifyError {
    err(
        "token.unknown_key",
        format!(
            "{issuer} has no key {:?} in the JWKS held (rotated? the JWKS is fetched again on \
             the next refresh)",
            clip(kid)
        ),
    )
}

/// Verifies `token` against the trusted issuers' keys for a request to `url` at `now`; the
/// key it attests, to be matched against the proof's.
pub fn verify(
    token: &str,
    issuers: &impl IssuerKeys,
    url: &HttpUrl,
    now: UnixTime,
    skew_secs: u64,
) -> Result<(AccessTokenClaims, AttestedKey), VerifyError> {
    let parts = jws::split_compact("access token", token, MAX_TOKEN_LEN)
        .map_err(|e| err("token.malformed", e.to_string()))?;
    #[derive(Deserialize)]
    struct Header {
        typ: Option<String>,
        alg: String,
        kid: Option<String>,
        crit: Option<serde_json::Value>,
    }
    let h: Header = serde_json::from_slice(&parts.header)
        .map_err(|e| err("token.malformed", format!("header: {e}")))?;
    jws::refuse_crit(h.crit.as_ref()).map_err(|e| err("token.malformed", e.to_string()))?;
    if h.typ.as_deref() != Some(TYP) {
        return Err(err("token.malformed", format!("typ must be {TYP}")));
    }
    let alg = SigAlg::parse(&h.alg).map_err(|e| err("token.malformed", e.to_string()))?;
    let claims: AccessTokenClaims = serde_json::from_slice(&parts.payload)
        .map_err(|e| err("token.malformed", format!("claims: {e}")))?;
    let kid = h.kid.unwrap_or_default();
    let key = issuers.key(&claims.iss, &kid)?;
    if key.alg != alg
        || !jws::verify_signature(
            alg,
            &key.public,
            parts.signing_input.as_bytes(),
            &parts.signature,
        )
    {
        return Err(err(
            "token.signature",
            format!(
                "the signature does not verify under {}'s key {kid}",
                claims.iss
            ),
        ));
    }
    let now_s = now.as_secs();
    if claims.exp <= now_s.saturating_sub(skew_secs) {
        return Err(err(
            "token.expired",
            format!(
                "the token expired {} s ago: get a new one from {}",
                now_s - claims.exp,
                claims.iss
            ),
        ));
    }
    if claims.iat > now_s.saturating_add(skew_secs) {
        return Err(err("token.expired", "the token is issued in the future"));
    }
    let covers = UrlPrefix::parse(&claims.aud).is_ok_and(|p| p.matches(url));
    if !covers {
        return Err(err(
            "token.audience",
            format!(
                "the token is for {:?}, which does not cover {}",
                clip(&claims.aud),
                url.as_str()
            ),
        ));
    }
    let platform: Platform = serde_json::from_value(serde_json::json!(claims.cada.platform))
        .map_err(|_| err("token.malformed", "cada.platform is not a platform"))?;
    claims
        .check_shape()
        .map_err(|e| err("token.malformed", format!("act / cada_dch: {e}")))?;
    // RFC 8693 §4.1: the principal (the owner) in `sub`, the agent holding the key in
    // `act.sub` (`sub` and `act.sub` the other way round in tokens of an older STS).
    let key = AttestedKey {
        jkt: claims.cnf.jkt.clone(),
        did: claims.agent().to_owned(),
        hpke: None,
        owner: claims.owner().map(str::to_owned),
        platform,
        measurements: Default::default(),
        module_id: String::new(),
        att: claims.cada.att.clone(),
        expires: UnixTime::from_secs(claims.exp),
        emulated: false,
    };
    Ok((claims, key))
}

fn clip(s: &str) -> String {
    s.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use cada_protocol::access_token::{Actor, CadaAt, Confirmation};
    use cada_protocol::b64;

    const ISS: &str = "https://sts.example.com";

    struct Sts {
        pair: EcdsaKeyPair,
        kid: String,
    }

    impl Sts {
        fn new(kid: &str) -> Self {
            let doc = EcdsaKeyPair::generate_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &SystemRandom::new(),
            )
            .unwrap();
            Sts {
                pair: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref())
                    .unwrap(),
                kid: kid.into(),
            }
        }

        fn jwks(&self) -> Vec<u8> {
            let p = self.pair.public_key().as_ref();
            serde_json::to_vec(&serde_json::json!({"keys": [{
                "kty": "EC", "crv": "P-256", "x": b64::encode(&p[1..33]), "y": b64::encode(&p[33..]),
                "kid": self.kid, "alg": "ES256", "use": "sig",
            }]}))
            .unwrap()
        }

        fn sign(&self, header: serde_json::Value, claims: &AccessTokenClaims) -> String {
            let input = jws::signing_input(
                &serde_json::to_vec(&header).unwrap(),
                &serde_json::to_vec(claims).unwrap(),
            );
            let sig = self
                .pair
                .sign(&SystemRandom::new(), input.as_bytes())
                .unwrap();
            format!("{input}.{}", b64::encode(sig.as_ref()))
        }

        fn token(&self, claims: &AccessTokenClaims) -> String {
            self.sign(
                serde_json::json!({"alg": "ES256", "typ": TYP, "kid": self.kid}),
                claims,
            )
        }
    }

    fn claims(now: u64) -> AccessTokenClaims {
        AccessTokenClaims {
            iss: ISS.into(),
            sub: "did:key:zOwner".into(),
            client_id: "did:key:zAgent".into(),
            aud: "https://api.example.com/v1".into(),
            scope: "orders:read".into(),
            iat: now,
            exp: now + 300,
            jti: "t1".into(),
            cnf: Confirmation {
                jkt: "jkt-of-the-enclave-key".into(),
            },
            act: Actor::nest(&["did:key:zAgent"]),
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
                required_ctx: vec![],
                dtc_exp: None,
            },
            authorization_details: None,
        }
    }

    #[test]
    fn a_token_of_a_trusted_issuer_attests_its_key_and_nothing_else_does() {
        let sts = Sts::new("k1");
        let issuers: HashMap<_, _> = [(ISS.to_owned(), parse_jwks(&sts.jwks()).unwrap())].into();
        let now = UnixTime::from_secs(1_800_000_000);
        let url = HttpUrl::parse_normalized("https://api.example.com/v1/orders").unwrap();
        let c = claims(now.as_secs());
        let good = sts.token(&c);
        assert!(is_jwt_access_token(&good));
        let (got, key) = verify(&good, &issuers, &url, now, 10).unwrap();
        assert_eq!(got, c);
        assert_eq!(key.jkt, "jkt-of-the-enclave-key");
        assert_eq!(key.owner.as_deref(), Some("did:key:zOwner"));
        assert_eq!(key.did, "did:key:zAgent");
        assert_eq!(key.platform, Platform::Sim);

        let code = |t: &str, url: &HttpUrl, now: UnixTime| match verify(t, &issuers, url, now, 10) {
            Err(VerifyError::AccessToken { code, .. }) => code,
            other => panic!("{other:?}"),
        };
        // Another audience: /v10 is not under /v1.
        let v10 = HttpUrl::parse_normalized("https://api.example.com/v10").unwrap();
        assert_eq!(code(&good, &v10, now), "token.audience");
        // Expired (past the skew), and issued in the future.
        assert_eq!(
            code(&good, &url, UnixTime::from_secs(now.as_secs() + 311)),
            "token.expired"
        );
        assert_eq!(
            code(&good, &url, UnixTime::from_secs(now.as_secs() - 11)),
            "token.expired"
        );
        // Another issuer, another key, a forged signature, a changed claim.
        let mut other = c.clone();
        other.iss = "https://evil.example.com".into();
        assert_eq!(code(&sts.token(&other), &url, now), "token.issuer");
        assert_eq!(
            code(&Sts::new("k2").token(&c), &url, now),
            "token.unknown_key"
        );
        let mallory = Sts::new("k1");
        assert_eq!(code(&mallory.token(&c), &url, now), "token.signature");
        let mut parts: Vec<&str> = good.split('.').collect();
        let mut widened = c.clone();
        widened.aud = "https://api.example.com/".into();
        let payload = b64::encode(serde_json::to_vec(&widened).unwrap());
        parts[1] = &payload;
        assert_eq!(code(&parts.join("."), &url, now), "token.signature");
        // Not an access token, or one with a critical extension.
        let typ = sts.sign(
            serde_json::json!({"alg": "ES256", "typ": "dpop+jwt", "kid": "k1"}),
            &c,
        );
        assert!(!is_jwt_access_token(&typ));
        assert_eq!(code(&typ, &url, now), "token.malformed");
        let crit = sts.sign(
            serde_json::json!({"alg": "ES256", "typ": TYP, "kid": "k1", "crit": ["x"], "x": 1}),
            &c,
        );
        assert_eq!(code(&crit, &url, now), "token.malformed");
        assert_eq!(code("a.b", &url, now), "token.malformed");
        assert_eq!(
            code(&"x".repeat(MAX_TOKEN_LEN + 1), &url, now),
            "token.malformed"
        );
    }

    /// Issue 24: the token names the owner as principal (`sub`) and the agent as actor
    /// (`act.sub`); the key it attests is the agent's (the proof's `jwk` must be it), its
    /// owner the principal — also under a delegation chain (the root owner, the worker
    /// outermost) and in a token of an STS from before (agent in `sub`, owner in
    /// `act.sub`, no `cada_dch`). A shape no STS writes is refused `token.malformed`.
    #[test]
    fn the_key_a_token_attests_is_its_current_actor_and_its_owner_the_principal() {
        let sts = Sts::new("k1");
        let issuers: HashMap<_, _> = [(ISS.to_owned(), parse_jwks(&sts.jwks()).unwrap())].into();
        let now = UnixTime::from_secs(1_800_000_000);
        let url = HttpUrl::parse_normalized("https://api.example.com/v1/orders").unwrap();
        let who = |c: &AccessTokenClaims| {
            verify(&sts.token(c), &issuers, &url, now, 10).map(|(_, k)| (k.did, k.owner))
        };
        let mut chain = claims(now.as_secs());
        chain.client_id = "did:key:zWorker".into();
        chain.act = Actor::nest(&["did:key:zWorker", "did:key:zPlanner"]);
        chain.cada_dch = vec!["root".into(), "d".into()];
        assert_eq!(
            who(&chain).unwrap(),
            ("did:key:zWorker".into(), Some("did:key:zOwner".into()))
        );
        let mut legacy = claims(now.as_secs());
        legacy.sub = "did:key:zAgent".into();
        legacy.act = Actor::nest(&["did:key:zOwner"]);
        legacy.cada_dch = vec![];
        assert_eq!(
            who(&legacy).unwrap(),
            ("did:key:zAgent".into(), Some("did:key:zOwner".into()))
        );
        let mut bad = chain.clone();
        bad.cada_dch = vec!["d".into()];
        match who(&bad) {
            Err(VerifyError::AccessToken { code, .. }) => assert_eq!(code, "token.malformed"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_jwks_is_read_with_limits() {
        assert!(parse_jwks(b"{}").is_err());
        assert!(parse_jwks(br#"{"keys": []}"#).is_err());
        assert!(
            parse_jwks(br#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}"#)
                .unwrap_err()
                .contains("kid")
        );
        let sts = Sts::new("k1");
        let mut v: serde_json::Value = serde_json::from_slice(&sts.jwks()).unwrap();
        v["keys"][0]["alg"] = "ES384".into();
        assert!(parse_jwks(&serde_json::to_vec(&v).unwrap())
            .unwrap_err()
            .contains("does not fit"));
        v["keys"][0]["use"] = "enc".into();
        assert!(
            parse_jwks(&serde_json::to_vec(&v).unwrap()).is_err(),
            "no signing key left"
        );
        assert!(parse_jwks(&vec![b' '; MAX_JWKS_LEN + 1]).is_err());
    }
}
