//! The signer: the enclave as a policy point. It refuses what the owner did not delegate,
//! counts every signature in a hash chain whose head and sequence number ride in each token,
//! and signs CB-PoP proofs with the key that never leaves it.
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest::{self, SHA256};
use cada_protocol::b64;
use cada_protocol::envelope::EvidenceEnvelope;
use cada_protocol::token::{self, CadaClaim, PopClaims, PopHeader, MAX_LIFETIME_SECS};
use cada_protocol::url::{HttpUrl, UrlPrefix};
use cada_protocol::wire::{
    ChainEvent, ContractSummary, ContractsResponse, DelegateRequest, DelegateResponse,
    DescribeResponse, LockOwnerResponse, SignPopRequest, SignPopResponse,
};
use cada_protocol::ProtocolError;

use crate::authority::{Authority, DEFAULT_STATUS_MAX_AGE_SECS};
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
    /// The owner fixed in the measured image (`did:key`): the enclave is locked to it from
    /// boot. `None`: the first valid owner lock locks it, once.
    pub owner: Option<String>,
    /// Oldest status list (by its `validFrom`) under which a contract with a status entry
    /// still authorizes proofs.
    pub status_max_age_secs: u64,
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
            owner: None,
            status_max_age_secs: DEFAULT_STATUS_MAX_AGE_SECS,
        }
    }
}

/// Authority events kept for `contracts` answers.
const MAX_EVENTS: usize = 64;

struct ChainState {
    /// Entries in the hash chain (proofs and authority events).
    seq: u64,
    /// Proofs signed (what the boot budget counts).
    signatures: u64,
    head: [u8; 32],
    binding: Vec<u8>,
    authority: Authority,
    events: VecDeque<ChainEvent>,
    att: String,
    envelope: Vec<u8>,
    bucket_start: Instant,
    bucket_used: u32,
}

/// The signer.
pub struct Signer {
    key: SigningKey,
    platform: Box<dyn Platform>,
    policy: DelegationPolicy,
    state: Mutex<ChainState>,
    header_b64: String,
    /// The HPKE key (RFC 9180, suite `HPKE-4`), generated beside the signing key and bound in
    /// the same key binding; no operation exports it.
    hpke: cada_secrets::HpkeKeyPair,
    /// Sealed secrets the locked owner installed.
    secrets: crate::secrets::SecretStore,
    /// `--dev-secrets`: secrets are accepted although the platform keeps keys in host memory.
    dev_secrets: std::sync::atomic::AtomicBool,
    /// The egress client of secret calls (`--egress`), set once at start.
    egress: std::sync::OnceLock<std::sync::Arc<crate::egress::Egress>>,
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
        let authority = Authority::new(policy.owner.clone(), policy.status_max_age_secs)?;
        let hpke = cada_secrets::HpkeKeyPair::generate();
        let mut kb = key.binding();
        kb.hpke = Some(hpke.public().as_bytes().to_vec());
        kb.owner = authority.owner().map(str::to_owned);
        let binding = kb.to_cbor();
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
            platform,
            policy,
            state: Mutex::new(ChainState {
                seq: 0,
                signatures: 0,
                head: [0u8; 32],
                binding,
                authority,
                events: VecDeque::new(),
                att: env.att_digest(),
                envelope: env.to_cbor(),
                bucket_start: Instant::now(),
                bucket_used: 0,
            }),
            header_b64,
            key,
            hpke,
            secrets: crate::secrets::SecretStore::default(),
            dev_secrets: std::sync::atomic::AtomicBool::new(false),
            egress: std::sync::OnceLock::new(),
        })
    }

    /// The signing key's public side.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Sets the egress client of secret calls (once; a second call is ignored).
    pub fn set_egress(&self, egress: std::sync::Arc<crate::egress::Egress>) {
        let _ = self.egress.set(egress);
    }

    /// The egress client of secret calls, when the enclave has one.
    pub fn egress(&self) -> Option<&std::sync::Arc<crate::egress::Egress>> {
        self.egress.get()
    }

    /// The platform's name (`nitro`, `sev-snp`, `sim`, `sim-snp`).
    pub fn platform_name(&self) -> &'static str {
        self.platform.name()
    }

    /// The contract that lets the enclave use secret `name` for `method` on `url` now
    /// (counted). The caller chains the refusal (see [`crate::egress::Egress::call`]).
    pub(crate) fn authorize_secret(
        &self,
        name: &str,
        method: &str,
        url: &HttpUrl,
        now: u64,
    ) -> Result<String, EnclaveError> {
        self.lock_state()?
            .authority
            .authorize_secret(name, method, url, now)
    }

    /// Appends an authority event (`kind`, `detail`) to the hash chain; its sequence number
    /// and the new head (base64url).
    pub(crate) fn chain_event(
        &self,
        kind: &str,
        detail: &str,
    ) -> Result<(u64, String), EnclaveError> {
        let now = now_secs();
        let mut st = self.lock_state()?;
        st.event(kind, detail, now);
        Ok((st.seq, b64::encode(st.head)))
    }

    /// The HPKE key pair (its public half is in the key binding and in `describe`).
    pub fn hpke(&self) -> &cada_secrets::HpkeKeyPair {
        &self.hpke
    }

    /// The sealed secrets installed in this enclave.
    pub fn secrets(&self) -> &crate::secrets::SecretStore {
        &self.secrets
    }

    /// DEVELOPMENT ONLY (`--dev-secrets`): accept secrets although the platform keeps its
    /// keys in host memory. `describe` says so.
    pub fn allow_dev_secrets(&self) {
        self.dev_secrets
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether `--dev-secrets` was given.
    pub fn dev_secrets(&self) -> bool {
        self.dev_secrets.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the platform keeps keys in host memory (`sim`, `sim-snp`; and `tpm`, whose
    /// proof key is in the TPM but whose HPKE key, and so every secret opened with it, is in
    /// this process's memory): whoever runs the host reads them, so no secret is safe there.
    pub fn keys_in_host_memory(&self) -> bool {
        matches!(self.platform.name(), "sim" | "sim-snp" | "tpm")
    }

    /// `secret_install`: verifies and opens an owner-sealed bundle (see
    /// [`cada_secrets::open_bundle`]) and keeps the secret in the store; chains
    /// `secret_install` with the name and the ciphertext digest (never the value), or a
    /// `refusal` with the code.
    pub fn install_secret(
        &self,
        bundle: &[u8],
    ) -> Result<cada_protocol::sealed::SecretInstallResponse, EnclaveError> {
        crate::secrets::install(self, bundle, now_secs())
    }

    /// `open`: opens data a service sealed to this enclave for a label a live contract
    /// grants, within the grant's budget; chains each open (label, envelope digest, contract).
    pub fn open_data(
        &self,
        req: &cada_protocol::sealed::OpenRequest,
    ) -> Result<cada_protocol::sealed::OpenResponse, EnclaveError> {
        crate::secrets::open(self, req, now_secs())
    }

    /// The owner the enclave is locked to.
    pub(crate) fn locked_owner(&self) -> Result<Option<String>, EnclaveError> {
        Ok(self.lock_state()?.authority.owner().map(str::to_owned))
    }

    /// The contract granting an open of `label` and its budget.
    pub(crate) fn open_grant(&self, label: &str, now: u64) -> Result<(String, u64), EnclaveError> {
        self.lock_state()?.authority.open_grant(label, now)
    }

    /// Appends an authority event; its sequence number.
    pub(crate) fn secret_event(
        &self,
        kind: &str,
        detail: &str,
        now: u64,
    ) -> Result<u64, EnclaveError> {
        let mut st = self.lock_state()?;
        st.event(kind, detail, now);
        Ok(st.seq)
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
            hpke: Some(self.hpke.public().to_b64()),
            keys_in_host_memory: self.keys_in_host_memory(),
            dev_secrets: self.dev_secrets(),
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
        let binding = self.lock_state()?.binding.clone();
        let env = self.platform.attest(&binding, nonce)?;
        let mut st = self.lock_state()?;
        if st.binding != binding {
            // Locked to an owner meanwhile: this evidence no longer describes the key.
            return Err(EnclaveError::BadRequest(
                "the enclave was locked to an owner during this request; ask again".into(),
            ));
        }
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

    /// The boot flags bound delegations as they bound proofs: no delegation once the boot
    /// delegation expired, and a delegation's methods and audiences within the delegated
    /// methods and URL prefixes (so a worker never signs, under this enclave's delegation,
    /// what this enclave itself would refuse).
    fn authorize_delegation(&self, grant: &cada_contract::Grant) -> Result<(), EnclaveError> {
        let p = &self.policy;
        if p.expires_at.is_some_and(|exp| now_secs() >= exp) {
            return Err(EnclaveError::PolicyDenied(
                "the delegation has expired".into(),
            ));
        }
        if !p.methods.is_empty() {
            if let Some(m) = grant.methods.iter().find(|m| !p.methods.contains(m)) {
                return Err(EnclaveError::PolicyDenied(format!(
                    "method {m} is not delegated to this enclave, so it cannot delegate it"
                )));
            }
        }
        if !p.url_prefixes.is_empty() {
            for a in &grant.audiences {
                let within = UrlPrefix::parse(a)
                    .is_ok_and(|a| p.url_prefixes.iter().any(|pre| a.is_within(pre)));
                if !within {
                    return Err(EnclaveError::PolicyDenied(format!(
                        "audience {a} is outside the URL prefixes delegated to this enclave, so \
                         it cannot delegate it"
                    )));
                }
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
        if req.bd.as_deref().is_some_and(|d| {
            d.len() != 43 || b64::decode("bd", d, 32).map_or(true, |b| b.len() != 32)
        }) {
            return Err(EnclaveError::BadRequest(
                "bd must be the base64url SHA-256 of the body (43 characters)".into(),
            ));
        }
        cada_protocol::mcp::check_calls(&req.mcp)
            .map_err(|e| EnclaveError::BadRequest(e.to_string()))?;
        cada_protocol::trace::check_pair(req.task.as_deref(), req.traceparent.as_deref())
            .map_err(|e| EnclaveError::BadRequest(format!("{}: {e}", e.code())))?;
        if req
            .exchange
            .as_ref()
            .is_some_and(|x| x.authorization_details.is_some())
            && (req.bd.is_some() || req.access_token.is_some())
        {
            // Signed by the details alone, not by an audience covering the URL: the proof
            // is bound to nothing a resource could read as a request of its own.
            return Err(EnclaveError::BadRequest(
                "exchange: a token-endpoint proof asking for authorization_details binds no \
                 body and carries no access token"
                    .into(),
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
        let (seq, chain, att, dtc, dch) = {
            let mut st = self
                .state
                .lock()
                .map_err(|_| EnclaveError::Crypto("state lock"))?;
            if let Some(budget) = self.policy.budget {
                if st.signatures >= budget {
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
            let dtc = match st.authority.authorize(
                &req.htm,
                &htu,
                &req.ctx,
                &req.mcp,
                req.exchange.as_ref(),
                iat,
            ) {
                Ok(d) => {
                    // Single-use grants this proof takes (`grant.used`), chained before it.
                    for (kind, detail) in st.authority.take_events() {
                        st.event(kind, &detail, iat);
                    }
                    d
                }
                Err(e) => {
                    if let EnclaveError::ContractDenied { code, .. } = &e {
                        let mut detail = format!("{code} {} {}", req.htm, htu.as_str());
                        for c in req.mcp.iter().filter(|c| c.target.is_some()) {
                            detail.push(' ');
                            detail.push_str(&c.method);
                            detail.push('=');
                            detail.push_str(c.target.as_deref().unwrap_or(""));
                        }
                        st.event("refusal", &detail, iat);
                    }
                    return Err(e);
                }
            };
            st.signatures += 1;
            st.seq += 1;
            // head_n = SHA-256(head_{n-1} ‖ seq ‖ jti ‖ htm ‖ htu ‖ iat [‖ bd ‖ mcp]): an
            // auditor holding the proofs recomputes the chain and sees every gap or
            // reordering. A proof bound to a body adds `cada.bd` and the JSON of `cada.mcp`
            // (each length-prefixed), so the chain records which tools were called.
            let mut ctx = digest::Context::new(&SHA256);
            ctx.update(&st.head);
            ctx.update(&st.seq.to_be_bytes());
            for part in [jti.as_bytes(), req.htm.as_bytes(), htu.as_str().as_bytes()] {
                ctx.update(&len_prefix(part));
                ctx.update(part);
            }
            ctx.update(&iat.to_be_bytes());
            if req.bd.is_some() || !req.mcp.is_empty() {
                let mcp = serde_json::to_vec(&req.mcp).map_err(|_| EnclaveError::Crypto("mcp"))?;
                for part in [req.bd.as_deref().unwrap_or("").as_bytes(), &mcp] {
                    ctx.update(&len_prefix(part));
                    ctx.update(part);
                }
            }
            st.head.copy_from_slice(ctx.finish().as_ref());
            // Under a delegated leaf, the proof names the links above it (`cada.dch`).
            let dch = dtc
                .as_deref()
                .map(|d| st.authority.chain_digests(d))
                .unwrap_or_default();
            (st.seq, b64::encode(st.head), st.att.clone(), dtc, dch)
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
                dtc: dtc.clone(),
                bd: req.bd.clone(),
                mcp: req.mcp.clone(),
                dch,
                task: req.task.clone(),
                tp: req.traceparent.clone(),
            },
        };
        let claims_json =
            serde_json::to_vec(&claims).map_err(|_| EnclaveError::Crypto("claims"))?;
        let mut jws = String::with_capacity(self.header_b64.len() + claims_json.len() * 2 + 128);
        jws.push_str(&self.header_b64);
        jws.push('.');
        jws.push_str(&b64::encode(claims_json));
        let sig = match self.key.sign(jws.as_bytes()) {
            Ok(sig) => sig,
            Err(e) => {
                // A device key (a TPM) can refuse after the proof was chained (its PCRs
                // changed, the TPM is gone): chain the failure, so that an auditor holding the
                // proofs sees why this sequence number has none.
                if let Ok(mut st) = self.state.lock() {
                    st.event("sign_failed", &format!("{seq} {}", claims.jti), iat);
                }
                return Err(e);
            }
        };
        jws.push('.');
        jws.push_str(&b64::encode(sig));
        Ok(SignPopResponse {
            dpop: jws,
            att,
            dtc,
        })
    }

    fn lock_state(&self) -> Result<std::sync::MutexGuard<'_, ChainState>, EnclaveError> {
        self.state
            .lock()
            .map_err(|_| EnclaveError::Crypto("state lock"))
    }

    /// `lock_owner`: locks the enclave to the owner of an owner-signed lock (once), then
    /// makes new evidence whose binding names that owner; later proofs name it.
    pub fn lock_owner(&self, lock: &str) -> Result<LockOwnerResponse, EnclaveError> {
        let now = now_secs();
        let mut st = self.lock_state()?;
        let owner = st.authority.lock(lock, self.key.did(), now)?;
        let mut kb = self.key.binding();
        kb.hpke = Some(self.hpke.public().as_bytes().to_vec());
        kb.owner = Some(owner.clone());
        st.binding = kb.to_cbor();
        let mut nonce = [0u8; 32];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| EnclaveError::Crypto("random nonce"))?;
        // The state stays locked while the platform attests, so no proof is signed under
        // the old evidence once the owner is set.
        let env = self.platform.attest(&st.binding, &nonce)?;
        st.att = env.att_digest();
        st.envelope = env.to_cbor();
        st.event("lock", &owner, now);
        Ok(LockOwnerResponse {
            owner,
            envelope: st.envelope.clone(),
        })
    }

    /// `install_contract`: verifies an owner's trust contract (owner, signature, subject,
    /// validity, status) and installs it.
    pub fn install_contract(
        &self,
        contract: &str,
        status_list: Option<&str>,
    ) -> Result<ContractSummary, EnclaveError> {
        self.install_contracts(contract, status_list, &[])
    }

    /// `install_contract` of a contract or a delegation chain `root~…~leaf` (issue 24) with
    /// the status lists its links name (`status_list` and `more_lists`): the chain must
    /// reach the owner this enclave is locked to and its leaf name this key
    /// ([`crate::authority`]); the leaf is installed and chained as `install`.
    pub fn install_contracts(
        &self,
        contract: &str,
        status_list: Option<&str>,
        more_lists: &[String],
    ) -> Result<ContractSummary, EnclaveError> {
        let now = now_secs();
        let measurements = self.platform.measurements()?;
        let mut st = self.lock_state()?;
        match st.authority.install(
            contract,
            status_list,
            more_lists,
            self.key.did(),
            &measurements,
            now,
        ) {
            Ok(summary) => {
                st.event("install", &summary.digest, now);
                Ok(summary)
            }
            Err(e) => {
                if let EnclaveError::ContractDenied { code, .. } = &e {
                    // A chain's leaf: what would have been installed.
                    let digest =
                        cada_contract::digest_of(contract.rsplit('~').next().unwrap_or_default());
                    if *code == "contract.revoked" {
                        // The owner's own list revokes it (an installed copy is gone).
                        st.event("revoke", &digest, now);
                    } else {
                        st.event("refusal", &format!("{code} install {digest}"), now);
                    }
                }
                Err(e)
            }
        }
    }

    /// `delegate` (issue 24): signs, with this enclave's key, a delegated contract for the
    /// key `req.subject` within the installed contract `req.parent`, and answers the whole
    /// chain. The authority checks the parent is live, builds the narrowed draft, takes its
    /// status index and applies every rule of a chain ([`cada_contract::Draft::check`]):
    /// anything wider than the parent is refused with its `delegation.wider.*` code and
    /// chained as a `refusal`. Then the platform attests this key bound to the draft
    /// ([`cada_contract::evidence_nonce`]: parent, subject, id, iat), the evidence goes into
    /// the draft, the key signs it, the new chain is verified once more as a verifier
    /// would, and a `delegate` event (`digest subject parent [task]`) is chained.
    pub fn delegate(&self, req: &DelegateRequest) -> Result<DelegateResponse, EnclaveError> {
        let now = now_secs();
        let (draft, parent_text, binding) = {
            let mut st = self.lock_state()?;
            match st.authority.delegation_draft(req, self.key.did(), now) {
                Ok((d, t)) => (d, t, st.binding.clone()),
                Err(e) => {
                    if let EnclaveError::ContractDenied { code, .. } = &e {
                        let detail = format!(
                            "{code} delegate {} {}",
                            req.parent.chars().take(64).collect::<String>(),
                            req.subject.chars().take(200).collect::<String>()
                        );
                        st.event("refusal", &detail, now);
                    }
                    return Err(e);
                }
            }
        };
        if let Err(e) = self.authorize_delegation(&draft.grant) {
            if let Ok(mut st) = self.state.lock() {
                st.event("refusal", &format!("policy delegate {}", req.subject), now);
            }
            return Err(e);
        }
        let contract_err = |e: cada_contract::ContractError| EnclaveError::ContractDenied {
            code: e.code(),
            message: e.to_string(),
        };
        let nonce = draft.evidence_nonce().map_err(contract_err)?;
        // Without optional bulk (a TPM's event log): it must fit the delegation.
        let env = self.platform.attest_for_delegation(&binding, &nonce)?;
        let payload = draft.payload_bytes(&env.to_cbor()).map_err(contract_err)?;
        let kid = cada_contract::PublicKey::from_did_key(self.key.did())
            .map_err(contract_err)?
            .did_key_url();
        let input = draft
            .signing_input(&payload, self.key.alg(), &kid)
            .map_err(contract_err)?;
        let sig = self.key.sign(input.as_bytes())?;
        let compact = draft
            .assemble(&payload, self.key.alg(), &kid, &sig)
            .map_err(contract_err)?;
        let digest = cada_contract::digest_of(&compact);
        let chain = format!("{parent_text}~{compact}");
        let mut st = self.lock_state()?;
        st.authority.check_signed_chain(&chain, now)?;
        let index = draft.grant.status.as_ref().map_or(0, |s| s.index);
        let mut detail = format!("{digest} {} {}", req.subject, draft.parent);
        if let Some(t) = &req.task {
            detail.push(' ');
            detail.push_str(t);
        }
        st.event("delegate", &detail, now);
        Ok(DelegateResponse {
            chain,
            digest,
            status_index: index,
        })
    }

    /// `contracts`: the owner, the installed contracts and the latest authority events.
    pub fn contracts(&self) -> Result<ContractsResponse, EnclaveError> {
        let st = self.lock_state()?;
        Ok(ContractsResponse {
            owner: st.authority.owner().map(str::to_owned),
            contracts: st.authority.summaries(),
            events: st.events.iter().cloned().collect(),
        })
    }

    /// Measurements of the platform.
    pub fn measurements(&self) -> Result<BTreeMap<String, String>, EnclaveError> {
        self.platform.measurements()
    }
}

impl ChainState {
    /// Appends an authority event to the hash chain (see [`ChainEvent`]).
    fn event(&mut self, kind: &str, detail: &str, at: u64) {
        self.seq += 1;
        let mut ctx = digest::Context::new(&SHA256);
        ctx.update(&self.head);
        ctx.update(&self.seq.to_be_bytes());
        for part in [b"cada-event".as_slice(), kind.as_bytes(), detail.as_bytes()] {
            ctx.update(&len_prefix(part));
            ctx.update(part);
        }
        ctx.update(&at.to_be_bytes());
        self.head.copy_from_slice(ctx.finish().as_ref());
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(ChainEvent {
            seq: self.seq,
            kind: kind.to_owned(),
            detail: detail.to_owned(),
            at,
            head: b64::encode(self.head),
        });
        tracing::info!(seq = self.seq, kind, detail, "authority event");
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
            // Dot segments are refused with their own code; the message still names the
            // normal form.
            match check_htu(bad) {
                Err(EnclaveError::Htu(e)) if e.normal_form().is_some() => {
                    assert_eq!(e.normal_form(), Some(normal), "{bad}");
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

    /// A device key (a TPM) whose signing fails, as a PCR-bound TPM key does once the
    /// machine's PCRs changed.
    struct RefusingDevice;

    impl crate::key::DeviceKey for RefusingDevice {
        fn sign(&self, _: &[u8]) -> Result<Vec<u8>, EnclaveError> {
            Err(EnclaveError::Platform {
                platform: "tpm",
                detail: "TPM2_Sign under PolicyPCR: policy failure".into(),
            })
        }
    }

    #[test]
    fn a_device_key_that_refuses_leaves_the_reason_in_the_chain() {
        let sw = SigningKey::generate(cada_protocol::jwk::SigAlg::ES256).unwrap();
        let key = SigningKey::from_device(
            cada_protocol::jwk::SigAlg::ES256,
            sw.jwk().clone(),
            Box::new(RefusingDevice),
        )
        .unwrap();
        let sim = crate::platform::sim::Sim::new(None).unwrap();
        let s = Signer::new(key, Box::new(sim), DelegationPolicy::default()).unwrap();
        let req: SignPopRequest = serde_json::from_value(serde_json::json!({
            "htm": "GET", "htu": "https://api.example.com/x"
        }))
        .unwrap();
        assert!(matches!(
            s.sign_pop(&req),
            Err(EnclaveError::Platform {
                platform: "tpm",
                ..
            })
        ));
        // Sequence number 1 went to the proof that was not signed; the chain says why.
        let events = s.contracts().unwrap().events;
        let failed = events.iter().find(|e| e.kind == "sign_failed").unwrap();
        assert_eq!(failed.seq, 2);
        assert!(failed.detail.starts_with("1 "), "{}", failed.detail);
    }
}

#[cfg(test)]
mod authority_tests {
    use super::*;
    use cada_contract::{Grant, OwnerAlg, OwnerKey, OwnerLock, StatusEntry, StatusList, Subject};
    use cada_protocol::binding::KeyBinding;
    use cada_protocol::envelope::EvidenceEnvelope;

    fn signer(policy: DelegationPolicy) -> Signer {
        let key = SigningKey::generate(cada_protocol::jwk::SigAlg::EdDSA).unwrap();
        let sim = crate::platform::sim::Sim::new(None).unwrap();
        Signer::new(key, Box::new(sim), policy).unwrap()
    }

    fn req(htu: &str) -> SignPopRequest {
        SignPopRequest {
            htm: "GET".into(),
            htu: htu.into(),
            access_token: None,
            nonce: None,
            ctx: BTreeMap::new(),
            bd: None,
            mcp: vec![],
            exchange: None,
            task: None,
            traceparent: None,
        }
    }

    fn code(r: Result<impl std::fmt::Debug, EnclaveError>) -> &'static str {
        match r {
            Err(EnclaveError::ContractDenied { code, .. }) => code,
            other => panic!("expected a contract refusal, got {other:?}"),
        }
    }

    fn grant(s: &Signer, audience: &str) -> Grant {
        let now = now_secs();
        Grant::new(
            Subject::Key(s.key().did().into()),
            vec![audience.into()],
            vec!["GET".into()],
            now - 10,
            now + 600,
        )
    }

    fn locked(s: &Signer) -> OwnerKey {
        let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let lock = OwnerLock::issue(&owner, s.key().did(), now_secs(), 300).unwrap();
        s.lock_owner(&lock).unwrap();
        owner
    }

    fn binding_of(env: &[u8]) -> KeyBinding {
        let env = EvidenceEnvelope::from_cbor(env).unwrap();
        KeyBinding::from_cbor(&env.binding).unwrap()
    }

    #[test]
    fn unlocked_signers_sign_on_boot_flags_alone() {
        let s = signer(DelegationPolicy::default());
        let r = s.sign_pop(&req("https://api.example.com/x")).unwrap();
        assert_eq!(r.dtc, None);
        assert_eq!(s.contracts().unwrap().owner, None);
        let e = s
            .install_contract(
                &grant(&s, "https://api.example.com/")
                    .issue(&locked_key(), now_secs())
                    .unwrap(),
                None,
            )
            .unwrap_err();
        assert!(e.to_string().contains("not locked"), "{e}");
    }

    fn locked_key() -> OwnerKey {
        OwnerKey::generate(OwnerAlg::Ed25519).unwrap()
    }

    #[test]
    fn a_lock_changes_the_binding_and_new_evidence_names_the_owner() {
        let s = signer(DelegationPolicy::default());
        let before = s.attest(&[]).unwrap();
        assert_eq!(KeyBinding::from_cbor(&before.binding).unwrap().owner, None);
        let owner = OwnerKey::generate(OwnerAlg::Es256).unwrap();
        let lock = OwnerLock::issue(&owner, s.key().did(), now_secs(), 300).unwrap();
        let r = s.lock_owner(&lock).unwrap();
        assert_eq!(r.owner, owner.did());
        assert_eq!(binding_of(&r.envelope).owner.as_deref(), Some(owner.did()));
        // Evidence made later, for a verifier's nonce, says the same.
        let fresh = s.attest(b"verifier nonce").unwrap();
        assert_eq!(
            KeyBinding::from_cbor(&fresh.binding)
                .unwrap()
                .owner
                .as_deref(),
            Some(owner.did())
        );
        // Locked once: neither the same owner nor another may lock again.
        assert_eq!(code(s.lock_owner(&lock)), "contract.lock");
        let other = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let lock2 = OwnerLock::issue(&other, s.key().did(), now_secs(), 300).unwrap();
        assert_eq!(code(s.lock_owner(&lock2)), "contract.lock");
        // Locked and no contract: nothing is signed.
        assert_eq!(
            code(s.sign_pop(&req("https://api.example.com/x"))),
            "contract.none"
        );
        let events = s.contracts().unwrap().events;
        assert_eq!(events[0].kind, "lock");
        assert_eq!(events[0].detail, owner.did());
        assert!(events
            .iter()
            .any(|e| e.kind == "refusal" && e.detail.starts_with("contract.none")));
    }

    #[test]
    fn a_lock_for_another_enclave_or_against_the_pinned_owner_is_refused() {
        let a = signer(DelegationPolicy::default());
        let b = signer(DelegationPolicy::default());
        let owner = locked_key();
        let lock_for_b = OwnerLock::issue(&owner, b.key().did(), now_secs(), 300).unwrap();
        assert_eq!(code(a.lock_owner(&lock_for_b)), "contract.lock");
        let pinned = locked_key();
        let p = signer(DelegationPolicy {
            owner: Some(pinned.did().into()),
            ..DelegationPolicy::default()
        });
        // Locked from boot: the first evidence already names the owner.
        assert_eq!(
            KeyBinding::from_cbor(&p.attest(&[]).unwrap().binding)
                .unwrap()
                .owner
                .as_deref(),
            Some(pinned.did())
        );
        let lock = OwnerLock::issue(&owner, p.key().did(), now_secs(), 300).unwrap();
        assert_eq!(code(p.lock_owner(&lock)), "contract.lock");
    }

    #[test]
    fn proofs_are_signed_only_inside_a_live_contract_and_name_it() {
        let s = signer(DelegationPolicy::default());
        let owner = locked(&s);
        let c = grant(&s, "https://api.example.com/v1")
            .issue(&owner, now_secs())
            .unwrap();
        let summary = s.install_contract(&c, None).unwrap();
        assert_eq!(summary.digest, cada_contract::digest_of(&c));
        let r = s
            .sign_pop(&req("https://api.example.com/v1/items"))
            .unwrap();
        assert_eq!(r.dtc.as_deref(), Some(summary.digest.as_str()));
        let claims: serde_json::Value = serde_json::from_slice(
            &b64::decode("claims", r.dpop.split('.').nth(1).unwrap(), 4096).unwrap(),
        )
        .unwrap();
        assert_eq!(claims["cada"]["dtc"], summary.digest.as_str());
        // The prefix tricks and other requests outside the contract.
        for (htu, want) in [
            (
                "https://api.example.com.evil.net/v1/x",
                "contract.not_permitted.audience",
            ),
            (
                "https://api.example.com/v10",
                "contract.not_permitted.audience",
            ),
            (
                "https://api.example.com/admin",
                "contract.not_permitted.audience",
            ),
        ] {
            assert_eq!(code(s.sign_pop(&req(htu))), want, "{htu}");
        }
        assert!(matches!(
            s.sign_pop(&req("https://api.example.com@evil.net/v1/x")),
            Err(EnclaveError::Htu(_))
        ));
        let mut post = req("https://api.example.com/v1/items");
        post.htm = "POST".into();
        assert_eq!(code(s.sign_pop(&post)), "contract.not_permitted.method");
        // The contract is intersected with the boot flags, never widened by it.
        let narrow = signer(DelegationPolicy {
            url_prefixes: vec![UrlPrefix::parse("https://api.example.com/v1/read").unwrap()],
            ..DelegationPolicy::default()
        });
        let o2 = locked(&narrow);
        narrow
            .install_contract(
                &grant(&narrow, "https://api.example.com/v1")
                    .issue(&o2, now_secs())
                    .unwrap(),
                None,
            )
            .unwrap();
        assert!(narrow
            .sign_pop(&req("https://api.example.com/v1/read/x"))
            .is_ok());
        assert!(matches!(
            narrow.sign_pop(&req("https://api.example.com/v1/write")),
            Err(EnclaveError::PolicyDenied(_))
        ));
        let info = s.contracts().unwrap();
        assert_eq!(info.contracts[0].used, 1);
        assert!(info
            .events
            .iter()
            .any(|e| e.kind == "install" && e.detail == summary.digest));
    }

    /// Issue 21 item 2: under a contract (and boot flags) granting GET below
    /// `http://127.0.0.1:18408/pub`, the enclave signed `/pub/..%2Fsecret.txt`, which
    /// Python's `http.server` serves from outside `/pub`. Every confusing spelling is now
    /// refused before the contract is even asked.
    #[test]
    fn no_proof_for_a_path_that_leaves_the_granted_prefix() {
        let pub_prefix = "http://127.0.0.1:18408/pub";
        // Granted by a contract …
        let by_contract = signer(DelegationPolicy::default());
        let owner = locked(&by_contract);
        let c = grant(&by_contract, pub_prefix)
            .issue(&owner, now_secs())
            .unwrap();
        by_contract.install_contract(&c, None).unwrap();
        assert_eq!(
            code(by_contract.sign_pop(&req("http://127.0.0.1:18408/secret.txt"))),
            "contract.not_permitted.audience"
        );
        // … or by the boot flags alone.
        let by_flags = signer(DelegationPolicy {
            url_prefixes: vec![UrlPrefix::parse(pub_prefix).unwrap()],
            ..DelegationPolicy::default()
        });
        assert!(matches!(
            by_flags.sign_pop(&req("http://127.0.0.1:18408/secret.txt")),
            Err(EnclaveError::PolicyDenied(_))
        ));
        for s in [&by_contract, &by_flags] {
            assert!(s.sign_pop(&req(&format!("{pub_prefix}/a.txt"))).is_ok());
            for (path, want) in [
                ("/pub/..%2Fsecret.txt", "url.encoded_slash"),
                ("/pub/..%2fsecret.txt", "url.encoded_slash"),
                ("/pub/..%5Csecret.txt", "url.encoded_slash"),
                ("/pub/%2e%2e/secret.txt", "url.encoded_dot"),
                ("/pub/%252e%252e/secret.txt", "url.double_encoding"),
                ("/pub/..;/secret.txt", "url.path_parameter"),
                ("/pub/%C0%AE%C0%AE/secret.txt", "url.bad_utf8"),
                ("/pub/../secret.txt", "url.dot_segment"),
                ("/pub//secret.txt", "url.empty_segment"),
            ] {
                match s.sign_pop(&req(&format!("http://127.0.0.1:18408{path}"))) {
                    Err(EnclaveError::Htu(e)) => assert_eq!(e.code(), want, "{path}"),
                    other => panic!("{path}: signed or refused otherwise: {other:?}"),
                }
            }
        }
        assert_eq!(by_contract.contracts().unwrap().contracts[0].used, 1);
    }

    #[test]
    fn contracts_from_others_for_others_or_out_of_time_are_refused_at_install() {
        let s = signer(DelegationPolicy::default());
        let owner = locked(&s);
        let stranger = locked_key();
        let now = now_secs();
        let c = grant(&s, "https://api.example.com/")
            .issue(&stranger, now)
            .unwrap();
        assert_eq!(
            code(s.install_contract(&c, None)),
            "contract.untrusted_owner"
        );
        let other = signer(DelegationPolicy::default());
        let c = grant(&other, "https://api.example.com/")
            .issue(&owner, now)
            .unwrap();
        assert_eq!(code(s.install_contract(&c, None)), "contract.subject");
        let mut g = grant(&s, "https://api.example.com/");
        g.valid_from = now - 100;
        g.valid_until = now - 1;
        assert_eq!(
            code(s.install_contract(&g.issue(&owner, now).unwrap(), None)),
            "contract.expired"
        );
        g.valid_from = now + 100;
        g.valid_until = now + 200;
        assert_eq!(
            code(s.install_contract(&g.issue(&owner, now).unwrap(), None)),
            "contract.not_yet_valid"
        );
        // A contract for this image (by measurement set) is accepted without naming the key.
        let m = s.measurements().unwrap();
        let set: BTreeMap<String, String> = [("PCR0".to_string(), m["PCR0"].clone())]
            .into_iter()
            .collect();
        let mut g = grant(&s, "https://api.example.com/");
        g.subject = Subject::Measurements(vec![set]);
        assert!(s
            .install_contract(&g.issue(&owner, now).unwrap(), None)
            .is_ok());
        // Every refusal entered the hash chain.
        let refusals = s
            .contracts()
            .unwrap()
            .events
            .iter()
            .filter(|e| e.kind == "refusal")
            .count();
        assert_eq!(refusals, 4);
    }

    #[test]
    fn revocation_reaches_the_enclave_through_a_fresher_status_list() {
        let s = signer(DelegationPolicy::default());
        let owner = locked(&s);
        let now = now_secs();
        let url = "https://owner.example/status/1";
        let mut list = StatusList::new(url, 131_072).unwrap();
        let mut g = grant(&s, "https://api.example.com/");
        g.status = Some(StatusEntry::new(url, 7).unwrap());
        let c = g.issue(&owner, now).unwrap();
        assert_eq!(code(s.install_contract(&c, None)), "contract.status_stale");
        s.install_contract(&c, Some(&list.issue(&owner, now, None).unwrap()))
            .unwrap();
        assert!(s.sign_pop(&req("https://api.example.com/x")).is_ok());
        // A list signed by someone else is refused; the installed one stays.
        let forged = list.issue(&locked_key(), now, None).unwrap();
        assert_eq!(
            code(s.install_contract(&c, Some(&forged))),
            "contract.status_forged"
        );
        assert!(s.sign_pop(&req("https://api.example.com/x")).is_ok());
        list.revoke(7).unwrap();
        let revoked = list.issue(&owner, now, None).unwrap();
        assert_eq!(
            code(s.install_contract(&c, Some(&revoked))),
            "contract.revoked"
        );
        // The revoked contract is gone: nothing is signed under it any more, and the
        // revocation is in the chain.
        assert_eq!(
            code(s.sign_pop(&req("https://api.example.com/x"))),
            "contract.none"
        );
        let after = s.contracts().unwrap();
        assert!(after.contracts.is_empty());
        let digest = cada_contract::digest_of(&c);
        assert!(after
            .events
            .iter()
            .any(|e| e.kind == "revoke" && e.detail == digest));
        // A list older than the bound stops the contract (fail closed).
        let strict = signer(DelegationPolicy {
            status_max_age_secs: 0,
            ..DelegationPolicy::default()
        });
        let o = locked(&strict);
        let mut g = grant(&strict, "https://api.example.com/");
        g.status = Some(StatusEntry::new(url, 1).unwrap());
        let fresh = StatusList::new(url, 131_072)
            .unwrap()
            .issue(&o, now - 5, None)
            .unwrap();
        assert_eq!(
            code(strict.install_contract(&g.issue(&o, now).unwrap(), Some(&fresh))),
            "contract.status_stale"
        );
    }

    #[test]
    fn a_contract_budget_is_counted_per_contract() {
        let s = signer(DelegationPolicy::default());
        let owner = locked(&s);
        let mut g = grant(&s, "https://api.example.com/");
        g.budget = Some(2);
        s.install_contract(&g.issue(&owner, now_secs()).unwrap(), None)
            .unwrap();
        assert!(s.sign_pop(&req("https://api.example.com/a")).is_ok());
        assert!(s.sign_pop(&req("https://api.example.com/b")).is_ok());
        assert_eq!(
            code(s.sign_pop(&req("https://api.example.com/c"))),
            "contract.not_permitted.budget"
        );
    }

    /// Issue 23: a proof under a single-use grant chains `grant.used` (identifier and
    /// contract) before the proof; the second call is refused and the refusal chained.
    #[test]
    fn a_single_use_grant_is_chained_as_used() {
        let s = signer(DelegationPolicy::default());
        let owner = locked(&s);
        let now = now_secs();
        let mut g = Grant::new(
            Subject::Key(s.key().did().into()),
            vec![],
            vec!["POST".into()],
            now - 10,
            now + 300,
        );
        let mut d = cada_contract::AuthorizationDetail::parse_draft(
            r#"{"type":"mcp_tool_call","locations":["https://mcp.example.com/mcp"],"tool":"transfer","single_use":true}"#,
        )
        .unwrap();
        d.identifier = "urn:uuid:chained".into();
        g.authorization_details = vec![d];
        let c = g.issue(&owner, now).unwrap();
        let digest = s.install_contract(&c, None).unwrap().digest;
        let mut r = req("https://mcp.example.com/mcp");
        r.htm = "POST".into();
        r.mcp = vec![cada_protocol::mcp::McpCall {
            method: "tools/call".into(),
            target: Some("transfer".into()),
        }];
        let signed = s.sign_pop(&r).unwrap();
        assert_eq!(signed.dtc.as_deref(), Some(digest.as_str()));
        let events = s.contracts().unwrap().events;
        let used = events.iter().find(|e| e.kind == "grant.used").unwrap();
        assert_eq!(used.detail, format!("urn:uuid:chained {digest}"));
        assert_eq!(code(s.sign_pop(&r)), "grant.used");
        let events = s.contracts().unwrap().events;
        assert!(events
            .iter()
            .any(|e| e.kind == "refusal" && e.detail.starts_with("grant.used POST")));
        assert_eq!(events.iter().filter(|e| e.kind == "grant.used").count(), 1);
    }

    /// Issue 23: under a bare grant the token-endpoint proof asking for exactly its
    /// transaction is signed (bound to no body, carrying no token), the call under the
    /// token then takes the single use, and a second call is refused.
    #[test]
    fn a_bare_grant_signs_its_token_exchange_then_the_call_once() {
        let s = signer(DelegationPolicy::default());
        let owner = locked(&s);
        let now = now_secs();
        let mut g = Grant::new(
            Subject::Key(s.key().did().into()),
            vec![],
            vec!["POST".into()],
            now - 10,
            now + 300,
        );
        let mut d = cada_contract::AuthorizationDetail::parse_draft(
            r#"{"type":"mcp_tool_call","locations":["https://mcp.example.com/mcp"],"tool":"transfer","single_use":true}"#,
        )
        .unwrap();
        d.identifier = "urn:uuid:tx".into();
        let asked = format!("[{}]", d.to_json_text());
        g.authorization_details = vec![d];
        let c = g.issue(&owner, now).unwrap();
        let digest = s.install_contract(&c, None).unwrap().digest;
        let mut x = req("https://sts.example.com/token");
        x.htm = "POST".into();
        x.exchange = Some(cada_protocol::wire::TokenExchange {
            resource: "https://mcp.example.com/".into(),
            scopes: vec![],
            authorization_details: Some(asked),
        });
        for (bd, at) in [
            (Some(b64::encode([7u8; 32])), None),
            (None, Some("t".into())),
        ] {
            let mut y = x.clone();
            y.bd = bd;
            y.access_token = at;
            assert!(matches!(s.sign_pop(&y), Err(EnclaveError::BadRequest(_))));
        }
        let signed = s.sign_pop(&x).unwrap();
        assert_eq!(signed.dtc.as_deref(), Some(digest.as_str()));
        let events = s.contracts().unwrap().events;
        assert!(!events.iter().any(|e| e.kind == "grant.used"));
        let mut call = req("https://mcp.example.com/mcp");
        call.htm = "POST".into();
        call.access_token = Some("the-token".into());
        call.mcp = vec![cada_protocol::mcp::McpCall {
            method: "tools/call".into(),
            target: Some("transfer".into()),
        }];
        assert_eq!(s.sign_pop(&call).unwrap().dtc, Some(digest));
        assert_eq!(code(s.sign_pop(&call)), "grant.used");
        assert_eq!(code(s.sign_pop(&x)), "grant.used");
    }
}
