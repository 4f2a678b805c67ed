//! The signer: the enclave as a policy point. It refuses what the owner did not delegate,
//! counts every signature in a hash chain whose head and sequence number ride in each token,
//! and signs CB-PoP proofs with the key that never leaves it.
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest::{self, SHA256};
use cada_protocol::b64;
use cada_protocol::envelope::EvidenceEnvelope;
use cada_protocol::token::{self, CadaClaim, PopClaims, PopHeader, MAX_LIFETIME_SECS};
use cada_protocol::url::{HttpUrl, UrlPrefix};
use cada_protocol::wire::{DescribeResponse, SignPopRequest, SignPopResponse};
use cada_protocol::ProtocolError;

use crate::key::SigningKey;
use crate::platform::Platform;
use crate::EnclaveError;

/// What the owner delegated to this signer.
#[derive(Debug, Clone)]
pub struct DelegationPolicy {
    /// URL prefixes proofs may be made for (origin equality, then path prefix on segment
    /// boundaries, see [`UrlPrefix::matches`]); empty: any. Each must be https, or http
    /// with a loopback host (see [`check_prefix`]).
    pub url_prefixes: Vec<UrlPrefix>,
    /// Methods proofs may be made for; empty: any.
    pub methods: Vec<String>,
    /// Most signatures over the signer's life; `None`: unlimited.
    pub budget: Option<u64>,
    /// Most signatures per second (token bucket of one second); `None`: unlimited.
    pub rate_per_sec: Option<u32>,
    /// When the delegation ends (seconds since the epoch); `None`: never.
    pub expires_at: Option<u64>,
    /// Lifetime of each proof, seconds (1..=30).
    pub lifetime_secs: u64,
}

impl Default for DelegationPolicy {
    fn default() -> Self {
        DelegationPolicy {
            url_prefixes: vec![],
            methods: vec![],
            budget: None,
            rate_per_sec: None,
            expires_at: None,
            lifetime_secs: MAX_LIFETIME_SECS,
        }
    }
}

struct ChainState {
    seq: u64,
    head: [u8; 32],
    att: String,
    envelope: Vec<u8>,
    bucket_start: Instant,
    bucket_used: u32,
}

/// The signer.
pub struct Signer {
    key: SigningKey,
    binding: Vec<u8>,
    platform: Box<dyn Platform>,
    policy: DelegationPolicy,
    state: Mutex<ChainState>,
    header_b64: String,
}

/// RFC 7230 token characters (an HTTP method is a token).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The scheme rule for what the signer signs: https, or http only for loopback hosts
/// (a local development server), never anything that crosses a network in clear.
fn scheme_allowed(url: &HttpUrl) -> bool {
    url.scheme() == "https" || url.has_loopback_host()
}

/// Checks `htu`: an absolute URL already in normal form (no userinfo, no fragment; scheme
/// and host lower case, no default port, no dot segments, percent-encoding normal), https
/// or http for loopback hosts only. A query is allowed and dropped (RFC 9449 §4.2). Nothing
/// is normalised silently: a URL not in normal form is refused with the form to use.
pub fn check_htu(htu: &str) -> Result<HttpUrl, EnclaveError> {
    let url = HttpUrl::parse_canonical(htu).map_err(|e| match e {
        ProtocolError::Url(u) => EnclaveError::Htu(u),
        other => EnclaveError::BadRequest(format!("htu: {other}")),
    })?;
    if !scheme_allowed(&url) {
        return Err(EnclaveError::BadRequest(
            "htu must be https (http only for loopback hosts)".into(),
        ));
    }
    Ok(url)
}

/// Parses one delegated URL prefix (the `--allow-url-prefix` flag): normal form, no
/// query, no userinfo or fragment, and https (http only for loopback hosts, since the
/// signer never signs other http URLs). The error names the normal form to use.
pub fn check_prefix(prefix: &str) -> Result<UrlPrefix, String> {
    let p = UrlPrefix::parse(prefix).map_err(|e| match e {
        ProtocolError::Url(u) => u.to_string(),
        other => other.to_string(),
    })?;
    if !scheme_allowed(p.url()) {
        return Err(format!(
            "{prefix:?} is http for a host that is not loopback; the signer only signs https \
             URLs there (use https://{}…)",
            &p.as_str()["http://".len()..]
        ));
    }
    Ok(p)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl Signer {
    /// Creates the signer and its first evidence (for a random nonce), whose digest proofs
    /// carry as `cada.att` until new evidence is requested.
    pub fn new(
        key: SigningKey,
        platform: Box<dyn Platform>,
        policy: DelegationPolicy,
    ) -> Result<Self, EnclaveError> {
        if policy.lifetime_secs == 0 || policy.lifetime_secs > MAX_LIFETIME_SECS {
            return Err(EnclaveError::BadRequest(format!(
                "proof lifetime must be 1..={MAX_LIFETIME_SECS} s"
            )));
        }
        if let Some(p) = policy
            .url_prefixes
            .iter()
            .find(|p| !scheme_allowed(p.url()))
        {
            return Err(EnclaveError::BadRequest(format!(
                "URL prefix {p} can never match: http is signed only for loopback hosts"
            )));
        }
        let binding = key.binding().to_cbor();
        let mut nonce = [0u8; 32];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| EnclaveError::Crypto("random nonce"))?;
        let env = platform.attest(&binding, &nonce)?;
        let header = PopHeader {
            typ: token::TYP.into(),
            alg: key.alg().as_str().into(),
            jwk: key.jwk().clone(),
        };
        let header_b64 =
            b64::encode(serde_json::to_vec(&header).map_err(|_| EnclaveError::Crypto("header"))?);
        Ok(Signer {
            binding,
            platform,
            policy,
            state: Mutex::new(ChainState {
                seq: 0,
                head: [0u8; 32],
                att: env.att_digest(),
                envelope: env.to_cbor(),
                bucket_start: Instant::now(),
                bucket_used: 0,
            }),
            header_b64,
            key,
        })
    }

    /// The signing key's public side.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// `describe`.
    pub fn describe(&self) -> Result<DescribeResponse, EnclaveError> {
        let seq = self.state.lock().map(|s| s.seq).unwrap_or(0);
        Ok(DescribeResponse {
            platform: self.platform.name().into(),
            did: self.key.did().into(),
            jkt: self.key.jkt().into(),
            jwk: serde_json::to_string(self.key.jwk()).map_err(|_| EnclaveError::Crypto("jwk"))?,
            measurements: self.platform.measurements()?,
            seq,
        })
    }

    /// `attest`: fresh evidence for `nonce`, which becomes the evidence later proofs name.
    /// An empty nonce returns the current evidence without making new evidence.
    pub fn attest(&self, nonce: &[u8]) -> Result<EvidenceEnvelope, EnclaveError> {
        if nonce.is_empty() {
            let st = self
                .state
                .lock()
                .map_err(|_| EnclaveError::Crypto("state lock"))?;
            return EvidenceEnvelope::from_cbor(&st.envelope)
                .map_err(|e| EnclaveError::BadRequest(e.to_string()));
        }
        if nonce.len() > 512 {
            return Err(EnclaveError::BadRequest(
                "nonce is limited to 512 bytes".into(),
            ));
        }
        let env = self.platform.attest(&self.binding, nonce)?;
        let mut st = self
            .state
            .lock()
            .map_err(|_| EnclaveError::Crypto("state lock"))?;
        st.att = env.att_digest();
        st.envelope = env.to_cbor();
        Ok(env)
    }

    fn authorize(&self, htm: &str, htu: &HttpUrl) -> Result<(), EnclaveError> {
        let p = &self.policy;
        if !p.methods.is_empty() && !p.methods.iter().any(|m| m == htm) {
            return Err(EnclaveError::PolicyDenied(format!(
                "method {htm} is not delegated"
            )));
        }
        if !p.url_prefixes.is_empty() && !p.url_prefixes.iter().any(|pre| pre.matches(htu)) {
            return Err(EnclaveError::PolicyDenied(format!(
                "{htu} is outside the delegated URL prefixes"
            )));
        }
        if let Some(exp) = p.expires_at {
            if now_secs() >= exp {
                return Err(EnclaveError::PolicyDenied(
                    "the delegation has expired".into(),
                ));
            }
        }
        Ok(())
    }

    /// `sign_pop`: a CB-PoP for one request.
    pub fn sign_pop(&self, req: &SignPopRequest) -> Result<SignPopResponse, EnclaveError> {
        if !is_token(&req.htm) {
            return Err(EnclaveError::BadRequest(format!(
                "method {:?} is not an HTTP token",
                req.htm
            )));
        }
        let htu = check_htu(&req.htu)?;
        self.authorize(&req.htm, &htu)?;
        if req.ctx.len() > 16 || req.ctx.iter().any(|(k, v)| k.len() > 64 || v.len() > 256) {
            return Err(EnclaveError::BadRequest(
                "ctx is limited to 16 entries of 64-byte names and 256-byte values".into(),
            ));
        }
        if req.nonce.as_ref().is_some_and(|n| n.len() > 256) {
            return Err(EnclaveError::BadRequest(
                "nonce is limited to 256 bytes".into(),
            ));
        }
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).map_err(|_| EnclaveError::Crypto("random jti"))?;
        let jti = b64::encode(jti);
        let iat = now_secs();
        let (seq, chain, att) = {
            let mut st = self
                .state
                .lock()
                .map_err(|_| EnclaveError::Crypto("state lock"))?;
            if let Some(budget) = self.policy.budget {
                if st.seq >= budget {
                    return Err(EnclaveError::PolicyDenied(format!(
                        "the budget of {budget} signatures is spent"
                    )));
                }
            }
            if let Some(rate) = self.policy.rate_per_sec {
                if st.bucket_start.elapsed() >= Duration::from_secs(1) {
                    st.bucket_start = Instant::now();
                    st.bucket_used = 0;
                }
                if st.bucket_used >= rate {
                    return Err(EnclaveError::PolicyDenied(format!(
                        "rate limit of {rate} signatures/s reached"
                    )));
                }
                st.bucket_used += 1;
            }
            st.seq += 1;
            // head_n = SHA-256(head_{n-1} ‖ seq ‖ jti ‖ htm ‖ htu ‖ iat): an auditor holding
            // the proofs recomputes the chain and sees every gap or reordering.
            let mut ctx = digest::Context::new(&SHA256);
            ctx.update(&st.head);
            ctx.update(&st.seq.to_be_bytes());
            for part in [jti.as_bytes(), req.htm.as_bytes(), htu.as_str().as_bytes()] {
                ctx.update(&len_prefix(part));
                ctx.update(part);
            }
            ctx.update(&iat.to_be_bytes());
            st.head.copy_from_slice(ctx.finish().as_ref());
            (st.seq, b64::encode(st.head), st.att.clone())
        };
        let claims = PopClaims {
            jti,
            htm: req.htm.clone(),
            htu: htu.as_str().to_owned(),
            iat,
            exp: iat + self.policy.lifetime_secs,
            ath: req.access_token.as_deref().map(token::access_token_hash),
            nonce: req.nonce.clone(),
            cada: CadaClaim {
                att: att.clone(),
                ctx: req.ctx.clone(),
                seq,
                chain,
            },
        };
        let claims_json =
            serde_json::to_vec(&claims).map_err(|_| EnclaveError::Crypto("claims"))?;
        let mut jws = String::with_capacity(self.header_b64.len() + claims_json.len() * 2 + 128);
        jws.push_str(&self.header_b64);
        jws.push('.');
        jws.push_str(&b64::encode(claims_json));
        let sig = self.key.sign(jws.as_bytes())?;
        jws.push('.');
        jws.push_str(&b64::encode(sig));
        Ok(SignPopResponse { dpop: jws, att })
    }

    /// Measurements of the platform.
    pub fn measurements(&self) -> Result<BTreeMap<String, String>, EnclaveError> {
        self.platform.measurements()
    }
}

/// The 4-byte big-endian length that precedes each part in the signature hash chain.
#[expect(
    clippy::cast_possible_truncation,
    reason = "parts come from one wire frame, at most MAX_FRAME_LEN (far below 4 GiB) bytes"
)]
fn len_prefix(part: &[u8]) -> [u8; 4] {
    (part.len() as u32).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cada_protocol::url::UrlError;

    #[test]
    fn htu_and_method_rules() {
        assert_eq!(
            check_htu("https://api.example/x?q=1").unwrap().as_str(),
            "https://api.example/x"
        );
        assert!(check_htu("http://127.0.0.1:8080/x").is_ok());
        assert!(check_htu("http://localhost/x").is_ok());
        assert!(check_htu("http://[::1]:3000/").is_ok());
        assert!(matches!(
            check_htu("http://api.example/x"),
            Err(EnclaveError::BadRequest(_))
        ));
        assert!(matches!(
            check_htu("http://localhost.evil.net/x"),
            Err(EnclaveError::BadRequest(_))
        ));
        assert!(matches!(
            check_htu("/relative"),
            Err(EnclaveError::Htu(UrlError::NotAbsolute(_)))
        ));
        assert!(matches!(
            check_htu("ftp://api.example/"),
            Err(EnclaveError::Htu(UrlError::Scheme(_)))
        ));
        assert!(is_token("GET") && is_token("M-SEARCH"));
        assert!(!is_token("GET /") && !is_token("") && !is_token("G\nET"));
    }

    #[test]
    fn htu_must_be_canonical_not_silently_normalised() {
        let code = |u: &str| match check_htu(u) {
            Err(EnclaveError::Htu(e)) => e.code(),
            other => panic!("{u}: {other:?}"),
        };
        assert_eq!(code("https://api.example.com@evil.net/x"), "url.userinfo");
        assert_eq!(code("https://user:pw@api.example.com/x"), "url.userinfo");
        assert_eq!(code("https://api.example.com/x#frag"), "url.fragment");
        for (bad, normal) in [
            ("https://API.Example.com/x", "https://api.example.com/x"),
            ("HTTPS://api.example.com/x", "https://api.example.com/x"),
            ("https://api.example.com:443/x", "https://api.example.com/x"),
            ("http://localhost:80/x", "http://localhost/x"),
            (
                "https://api.example.com/v1/../admin",
                "https://api.example.com/admin",
            ),
            ("https://api.example.com", "https://api.example.com/"),
            ("https://api.example.com/%7Ea", "https://api.example.com/~a"),
        ] {
            match check_htu(bad) {
                Err(EnclaveError::Htu(UrlError::NotNormal { normal: n, .. })) => {
                    assert_eq!(n, normal, "{bad}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn prefixes_are_checked_at_boot() {
        assert_eq!(
            check_prefix("https://api.example.com").unwrap().as_str(),
            "https://api.example.com/"
        );
        assert!(check_prefix("http://127.0.0.1:8080/v1").is_ok());
        let e = check_prefix("https://API.example.com/v1").unwrap_err();
        assert!(e.contains("\"https://api.example.com/v1\""), "{e}");
        let e = check_prefix("https://api.example.com:443").unwrap_err();
        assert!(e.contains("use \"https://api.example.com/\""), "{e}");
        assert!(check_prefix("http://api.example.com/")
            .unwrap_err()
            .contains("https://api.example.com/"));
        assert!(check_prefix("https://api.example.com/v1?x=1").is_err());
        assert!(check_prefix("https://u@api.example.com/").is_err());
        assert!(check_prefix("api.example.com").is_err());
        // A policy built in code is held to the same rule.
        let policy = DelegationPolicy {
            url_prefixes: vec![UrlPrefix::parse("http://api.example.com/").unwrap()],
            ..DelegationPolicy::default()
        };
        let key = SigningKey::generate(cada_protocol::jwk::SigAlg::EdDSA).unwrap();
        let sim = crate::platform::sim::Sim::new(None).unwrap();
        assert!(matches!(
            Signer::new(key, Box::new(sim), policy),
            Err(EnclaveError::BadRequest(_))
        ));
    }
}
