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
use cada_protocol::wire::{DescribeResponse, SignPopRequest, SignPopResponse};

use crate::key::SigningKey;
use crate::platform::Platform;
use crate::EnclaveError;

/// What the owner delegated to this signer.
#[derive(Debug, Clone)]
pub struct DelegationPolicy {
    /// URL prefixes (after normalisation) proofs may be made for; empty: any.
    pub url_prefixes: Vec<String>,
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

/// Checks `htu`: absolute https, or http only for loopback hosts. Returns it normalised.
pub fn check_htu(htu: &str) -> Result<String, EnclaveError> {
    let url = url::Url::parse(htu)
        .map_err(|e| EnclaveError::BadRequest(format!("htu is not an absolute URL: {e}")))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => {}
        "http" if loopback => {}
        "http" => {
            return Err(EnclaveError::BadRequest(
                "htu must be https (http only for loopback hosts)".into(),
            ))
        }
        other => {
            return Err(EnclaveError::BadRequest(format!(
                "htu scheme {other:?} is not https"
            )))
        }
    }
    let mut url = url;
    url.set_query(None);
    url.set_fragment(None);
    Ok(url.to_string())
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
            jwk: serde_json::to_string(self.key.jwk()).unwrap_or_default(),
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

    fn authorize(&self, htm: &str, htu: &str) -> Result<(), EnclaveError> {
        let p = &self.policy;
        if !p.methods.is_empty() && !p.methods.iter().any(|m| m == htm) {
            return Err(EnclaveError::PolicyDenied(format!(
                "method {htm} is not delegated"
            )));
        }
        if !p.url_prefixes.is_empty()
            && !p
                .url_prefixes
                .iter()
                .any(|pre| htu.starts_with(pre.as_str()))
        {
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
            for part in [jti.as_bytes(), req.htm.as_bytes(), htu.as_bytes()] {
                ctx.update(&(part.len() as u32).to_be_bytes());
                ctx.update(part);
            }
            ctx.update(&iat.to_be_bytes());
            st.head.copy_from_slice(ctx.finish().as_ref());
            (st.seq, b64::encode(st.head), st.att.clone())
        };
        let claims = PopClaims {
            jti,
            htm: req.htm.clone(),
            htu,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htu_and_method_rules() {
        assert!(check_htu("https://api.example/x?q=1").is_ok());
        assert!(check_htu("http://127.0.0.1:8080/x").is_ok());
        assert!(check_htu("http://localhost/x").is_ok());
        assert!(check_htu("http://api.example/x").is_err());
        assert!(check_htu("/relative").is_err());
        assert!(check_htu("ftp://api.example/").is_err());
        assert!(is_token("GET") && is_token("M-SEARCH"));
        assert!(!is_token("GET /") && !is_token("") && !is_token("G\nET"));
    }
}
