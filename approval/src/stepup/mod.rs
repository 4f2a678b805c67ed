//! Step-up requests: the API enclaves call, the pending-request store, grant minting.
//! `docs/approval.md#api`; the wire types are [`cada_protocol::stepup`].
//!
//! # The API enclaves call ([`router`])
//!
//! * `POST /v1/step-up` — a [`StepUpRequest`] body (≤ 16 KiB) with a CADA proof bound to it
//!   ([`verify`]): 201 [`StepUpCreated`] (the same answer, the same id, when this enclave
//!   key already has an identical call pending), or problem JSON with a stable code —
//!   among them 429 `stepup.rate_limited` and 403 `stepup.denied` with `Retry-After` (the
//!   owner denied the same call within the cool-off, [`Limits::denial_cooloff_ms`]).
//! * `GET /v1/step-up/{id}` — a fresh proof of the filing key: 200 [`StepUpStatus`].
//!
//! # The API the page uses ([`Service`])
//!
//! One [`Service`] (`Arc<Service>`) is the state of `cada-owner serve`; the page
//! (`crate::web`) gets it as `Arc<dyn crate::web::Requests>` (implemented here) or uses
//! the methods below directly:
//!
//! * [`Service::pending`] / [`Service::recent`] — requests waiting for the owner / every
//!   request held (ended ones for an hour), newest first, as
//!   [`crate::web::RequestView`]: id, agent DID, platform, measurement (PCR0 or SNP
//!   MEASUREMENT; [`Service::entry`] has them all), contract digest and — when the agent
//!   sent a copy that verifies under this owner's key — its summary (name, audiences,
//!   tools, validity …), audience, method, tool, arguments (JSON, as the agent sent them),
//!   refusal (code, by, server, message), want, created/expires (Unix seconds), status;
//! * [`Service::get`] — one request by id;
//! * [`Service::decide`] (async) or the trait's synchronous `decide(id, decision, who)` —
//!   [`Decision::ApproveOnce`] signs a single-use grant for exactly this call, valid
//!   5 minutes; [`Decision::ApproveMinutes`]`(n)` the same tool within the same argument
//!   limits, not single use, valid n minutes (1..=1440); [`Decision::Deny`]. `who` (e.g.
//!   `passkey:<credential id>`) goes to the audit log. Errors carry stable codes:
//!   `stepup.unknown`, `stepup.decided`, `stepup.expired`, `stepup.minutes`,
//!   `stepup.grant`, `audit.unavailable`.
//! * [`Service::owner_did`], [`Service::public_url`], [`Service::registry`] (Prometheus).
//!
//! Every filing, refusal, decision, grant hand-out and expiry is a record of the
//! hash-chained audit log (`cada-audit`, through the verifier pipeline's log): kinds
//! `stepup.proof` (the proof's decision), `stepup.request`, `stepup.answer`,
//! `stepup.delivered`, `stepup.expired`; the arguments only as a digest.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cada_attestation_verifier::UnixTime;
use cada_audit::{AuditRecord, RpcRecord};
use cada_contract::{Contract, OwnerKey, TrustedOwners};
use cada_pipeline::AppState;
use cada_protocol::stepup::{
    codes, page_path, poll_path, StepUpCreated, StepUpRequest, StepUpStatus, Want, STEP_UP_PATH,
};
use cada_protocol::url::UrlPrefix;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};

pub use crate::web::{Decision, DecisionOutcome, RequestStatus, RequestView};

mod error;
pub mod grant;
mod http;
pub mod store;
pub mod verify;
pub mod webhook;

pub use error::StepUpError;
pub use grant::{Revocation, MAX_MINUTES, ONCE_SECS};
pub use http::router;
pub use store::{Entry, Filer, Limits, State, DEFAULT_DENIAL_COOLOFF_MS};
pub use webhook::Webhook;

/// The clock the service reads (injected: tests move it by hand).
pub type Clock = Arc<dyn Fn() -> UnixTime + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(UnixTime::now)
}

/// Contract summaries kept by (digest, enclave key) for later requests of the same key
/// naming the same contract.
const MAX_CONTRACTS: usize = 256;

/// What the service is started with.
#[derive(Debug)]
pub struct Config {
    /// The service's public URL (what `stepUp` in contracts names, and the audience of the
    /// policy): https, or http to `localhost`/loopback; a path is allowed (behind a proxy
    /// that strips it).
    pub public_url: String,
    /// Store limits (per-key pending and hourly, TTL, poll interval).
    pub limits: Limits,
    /// How grants are revoked.
    pub revocation: Revocation,
    /// Where new requests are announced.
    pub webhook: Option<Webhook>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
}

/// The service's own metrics (`cada_approval_*`).
struct Metrics {
    registry: Registry,
    events: Family<EventLabels, Counter>,
    pending: Gauge,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "cada_approval_stepup_events",
            "step-up events: filed, refused, rate_limited, approved_once, approved_minutes, \
             denied, denied_refiled (a filing of a call denied within the cool-off, refused), \
             expired, delivered (a grant handed to its agent), webhook_ok, \
             webhook_failed",
            events.clone(),
        );
        let pending = Gauge::default();
        registry.register(
            "cada_approval_stepup_pending",
            "step-up requests waiting for the owner",
            pending.clone(),
        );
        Metrics {
            registry,
            events,
            pending,
        }
    }

    fn count(&self, event: &'static str) {
        self.events.get_or_create(&EventLabels { event }).inc();
    }
}

/// The approval service's state: owner key, verifier pipeline, store, webhook, metrics.
pub struct Service {
    key: OwnerKey,
    trust: TrustedOwners,
    public: String,
    pipeline: Arc<AppState>,
    store: Mutex<store::Store>,
    revocation: Revocation,
    webhook: Option<Webhook>,
    /// Contract summaries by (digest, enclave key thumbprint): a summary is shown only
    /// beside requests of a key the contract was verified for (review stepup-1, finding 3).
    contracts: Mutex<HashMap<(String, String), Value>>,
    metrics: Metrics,
    clock: Clock,
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("owner", &self.key.did())
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// The public URL in normal form without a trailing slash (`https://owner.example`,
/// `http://localhost:8470`, `https://owner.example/approval`).
pub fn public_base(url: &str) -> Result<String, StepUpError> {
    let p = UrlPrefix::parse(url).map_err(|e| {
        StepUpError::Config(format!(
            "--public-url {url:?}: {e} (an origin and optional path in normal form, without query)"
        ))
    })?;
    let u = p.url();
    if u.scheme() != "https" && !u.has_loopback_host() {
        return Err(StepUpError::Config(format!(
            "--public-url {url:?}: https, or http to localhost or a loopback address only"
        )));
    }
    Ok(p.as_str().trim_end_matches('/').to_owned())
}

impl Service {
    /// The service for `key` (the owner), deciding proofs with `pipeline` (its policy's
    /// audience must cover the public URL and name no owners: the service checks the owner
    /// lock itself). Must be called inside a tokio runtime (multi-threaded for the
    /// synchronous [`crate::web::Requests::decide`]).
    pub fn new(
        config: Config,
        key: OwnerKey,
        pipeline: Arc<AppState>,
        clock: Clock,
    ) -> Result<Arc<Self>, StepUpError> {
        let public = public_base(&config.public_url)?;
        check_policy(&pipeline, &format!("{public}{STEP_UP_PATH}"))?;
        let mut trust = TrustedOwners::new();
        trust
            .add_jwk(key.did(), key.kid(), &key.public_key().jwk())
            .map_err(|e| StepUpError::Config(format!("the owner key: {e}")))?;
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            StepUpError::Config("the step-up service must be started in a tokio runtime".into())
        })?;
        Ok(Arc::new(Service {
            key,
            trust,
            public,
            pipeline,
            store: Mutex::new(store::Store::new(config.limits)),
            revocation: config.revocation,
            webhook: config.webhook,
            contracts: Mutex::new(HashMap::new()),
            metrics: Metrics::new(),
            clock,
            handle,
        }))
    }

    /// The owner's DID.
    pub fn owner_did(&self) -> &str {
        self.key.did()
    }

    /// The public URL (normal form, no trailing slash).
    pub fn public_url(&self) -> &str {
        &self.public
    }

    /// The verifier pipeline (policy, replay store, audit log).
    pub fn pipeline(&self) -> &Arc<AppState> {
        &self.pipeline
    }

    /// This service's metrics (`cada_approval_*`; the pipeline's are separate).
    pub fn registry(&self) -> &Registry {
        &self.metrics.registry
    }

    fn now(&self) -> UnixTime {
        (self.clock)()
    }

    /// Runs `f` on the store after expiring what is due; the expired requests are audited
    /// and counted afterwards.
    async fn with_store<T>(&self, f: impl FnOnce(&mut store::Store, u64) -> T) -> T {
        let now = self.now();
        let (expired, out, pending) = {
            let mut s = match self.store.lock() {
                Ok(s) => s,
                Err(p) => p.into_inner(),
            };
            let expired = s.expire(now.as_millis());
            let out = f(&mut s, now.as_millis());
            (expired, out, s.pending_count())
        };
        self.metrics
            .pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        for e in expired {
            self.metrics.count("expired");
            let rec = self.record(&e, "stepup.expired", "expire", now);
            if let Err(err) = self.pipeline.audit(rec).await {
                tracing::error!(error = %err, id = %e.id, "audit log unavailable for an expiry");
            }
            tracing::info!(id = %e.id, agent = %e.filer.did, "step-up request expired");
        }
        out
    }

    /// Expires what is due and forgets what ended an hour ago (the sweeper's round).
    pub async fn sweep(&self) {
        self.with_store(store::Store::forget).await;
    }

    /// Sweeps every second, forever (spawn it).
    pub async fn run_sweeper(self: Arc<Self>) {
        let mut t = tokio::time::interval(Duration::from_secs(1));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            t.tick().await;
            self.sweep().await;
        }
    }

    /// The audit record about request `e`.
    fn record(
        &self,
        e: &Entry,
        kind: &'static str,
        decision: &'static str,
        now: UnixTime,
    ) -> AuditRecord {
        let call = &e.request.request;
        let args = serde_json::to_vec(&call.arguments).unwrap_or_default();
        AuditRecord {
            time: now.to_string(),
            kind,
            jkt: Some(e.filer.jkt.clone()),
            did: Some(e.filer.did.clone()),
            platform: Some(e.filer.platform.clone()),
            measurement_digest: Some(e.filer.measurement_digest.clone()),
            method: Some(call.method.clone()),
            url: Some(format!("cada:stepup:{}", e.id)),
            decision,
            contract: Some(e.request.contract.clone()),
            rpc: vec![RpcRecord {
                method: "tools/call".into(),
                target: Some(call.tool.chars().take(256).collect()),
                arguments: Some(cada_protocol::mcp::body_digest(&args)),
            }],
            ..AuditRecord::default()
        }
    }

    /// What the service knows of contract `digest`: the copy sent now (`CADA-Contract`),
    /// verified under this owner's key and for this enclave key, or one seen before **for
    /// this same key** — never a summary verified for another enclave that merely shares
    /// the digest the filer names.
    fn contract_summary(
        &self,
        digest: &str,
        sent: Option<&str>,
        filer: &Filer,
        now: UnixTime,
    ) -> Option<Value> {
        let mut cache = match self.contracts.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        if let Some(text) = sent {
            match Contract::verify(text.trim(), &self.trust, now.as_secs()) {
                Ok(c)
                    if c.digest() == digest
                        && c.check_subject(&filer.did, &filer.measurements).is_ok() =>
                {
                    let summary = json!({
                        "name": c.name(),
                        "id": c.id(),
                        "digest": c.digest(),
                        "owner": c.owner(),
                        "schema": c.schema(),
                        "valid_from": c.valid_from(),
                        "valid_until": c.valid_until(),
                        "audiences": c.audiences().iter().map(UrlPrefix::as_str).collect::<Vec<_>>(),
                        "methods": c.methods(),
                        "tools": c.tools(),
                        "resources": c.resources(),
                        "prompts": c.prompts(),
                        "scopes": c.scopes(),
                        "authorization_details": c.authorization_details().len(),
                        "step_up": c.step_up().map(UrlPrefix::as_str),
                    });
                    if cache.len() >= MAX_CONTRACTS {
                        cache.clear();
                    }
                    cache.insert((digest.to_owned(), filer.jkt.clone()), summary);
                }
                Ok(_) => tracing::info!(
                    digest,
                    "the contract sent with a step-up request is another one, or for another key"
                ),
                Err(e) => tracing::info!(
                    digest,
                    code = e.code(),
                    "the contract sent with a step-up request does not verify under the owner key"
                ),
            }
        }
        cache.get(&(digest.to_owned(), filer.jkt.clone())).cloned()
    }

    /// Files a verified request (the HTTP handler's second half): the answer, and whether
    /// it is new.
    pub(crate) async fn file(
        &self,
        filer: Filer,
        request: StepUpRequest,
        contract: Option<&str>,
    ) -> Result<(StepUpCreated, bool), StepUpError> {
        check_server(&request)?;
        let now = self.now();
        let summary = self.contract_summary(&request.contract, contract, &filer, now);
        let id = new_id()?;
        let filed = self
            .with_store(|s, now_ms| s.file(id, filer.clone(), request.clone(), summary, now_ms))
            .await;
        let (entry, new) = match filed {
            Ok(x) => x,
            Err(refused) => {
                let (event, status, message, retry_after) = match refused {
                    store::FileRefused::RateLimited(l) => {
                        ("rate_limited", 429, l.message, l.retry_after_secs)
                    }
                    store::FileRefused::Denied(d) => {
                        ("denied_refiled", 403, d.message, d.retry_after_secs)
                    }
                };
                self.metrics.count(event);
                let code = if status == 403 {
                    codes::DENIED
                } else {
                    codes::RATE_LIMITED
                };
                let probe = Entry {
                    id: "-".into(),
                    filer,
                    request,
                    contract: None,
                    created_ms: now.as_millis(),
                    expires_ms: now.as_millis(),
                    state: State::Pending,
                    interval_ms: 0,
                    last_poll_ms: None,
                    delivered: false,
                };
                let mut rec = self.record(&probe, "stepup.request", "reject", now);
                rec.url = Some(format!("{}{STEP_UP_PATH}", self.public));
                rec.reason = Some(code.into());
                self.audit(rec).await?;
                return Err(StepUpError::Refused {
                    status,
                    code: code.into(),
                    message,
                    rule_code: None,
                    retry_after: Some(retry_after),
                    dpop_nonce: None,
                });
            }
        };
        let created = StepUpCreated {
            id: entry.id.clone(),
            url: format!("{}{}", self.public, page_path(&entry.id)),
            poll: format!("{}{}", self.public, poll_path(&entry.id)),
            expires_at: entry.expires_ms / 1000,
            interval: entry.interval_ms.div_ceil(1000),
        };
        if !new {
            return Ok((created, false));
        }
        let mut rec = self.record(&entry, "stepup.request", "filed", now);
        rec.reason = Some(
            format!(
                "want {}; refused {} by {} at {}",
                match entry.request.want {
                    Want::Once => "once",
                    Want::Minutes => "minutes",
                },
                entry.request.refusal.code,
                entry.request.refusal.by.as_str(),
                entry.request.refusal.server
            )
            .chars()
            .take(512)
            .collect(),
        );
        if let Err(e) = self.audit(rec).await {
            // Not on the record: not filed.
            self.with_store(|s, _| s.withdraw(&entry.id)).await;
            return Err(e);
        }
        self.metrics.count("filed");
        tracing::info!(id = %entry.id, agent = %entry.filer.did, "step-up request filed");
        if let Some(w) = &self.webhook {
            let w = w.clone();
            let notice = webhook::Notice {
                id: entry.id.clone(),
                url: created.url.clone(),
                agent: entry.filer.did.clone(),
                tool: webhook::notice_tool(&entry.request.request.tool),
            };
            let events = self.metrics.events.clone();
            tokio::spawn(async move {
                let event = match w.send(&notice).await {
                    Ok(_) => "webhook_ok",
                    Err(e) => {
                        tracing::warn!(error = %e, id = %notice.id, "the webhook failed");
                        "webhook_failed"
                    }
                };
                events.get_or_create(&EventLabels { event }).inc();
            });
        }
        Ok((created, true))
    }

    /// A poll of `id` by the verified key `filer`.
    pub(crate) async fn poll(&self, id: &str, filer: &Filer) -> Result<StepUpStatus, StepUpError> {
        let now = self.now();
        let polled = self
            .with_store(|s, now_ms| {
                let r = s.poll(id, &filer.jkt, now_ms);
                (r, s.get(id).cloned())
            })
            .await;
        let (result, entry) = polled;
        let result = match result {
            Ok(r) => r,
            Err(refused) => {
                let code = refused.code();
                let mut rec = AuditRecord {
                    time: now.to_string(),
                    kind: "stepup.poll",
                    jkt: Some(filer.jkt.clone()),
                    did: Some(filer.did.clone()),
                    method: Some("GET".into()),
                    url: Some(format!("cada:stepup:{}", clip(id))),
                    decision: "reject",
                    ..AuditRecord::default()
                };
                rec.reason = Some(code.into());
                self.audit(rec).await?;
                return Err(match refused {
                    store::PollRefused::Unknown => StepUpError::Unknown(clip(id)),
                    store::PollRefused::OtherKey => StepUpError::refused(
                        403,
                        codes::OTHER_KEY,
                        "this request was filed by another enclave key: only the key that \
                         filed it may poll it",
                    ),
                });
            }
        };
        Ok(match result {
            store::Poll::Pending {
                slow_down,
                interval_ms,
            } => StepUpStatus {
                status: cada_protocol::stepup::Status::Pending,
                grant: None,
                code: slow_down.then(|| codes::SLOW_DOWN.to_owned()),
                message: slow_down.then(|| {
                    format!(
                        "polled faster than the interval: wait {} seconds between polls",
                        interval_ms.div_ceil(1000)
                    )
                }),
                interval: slow_down.then(|| interval_ms.div_ceil(1000)),
            },
            store::Poll::Approved {
                grant,
                digest,
                first,
            } => {
                if first {
                    if let Some(e) = &entry {
                        let mut rec = self.record(e, "stepup.delivered", "deliver", now);
                        rec.contract = Some(digest);
                        // Not handed out unless on the record: the next poll tries again.
                        if let Err(err) = self.pipeline.audit(rec).await {
                            tracing::error!(error = %err, "audit log unavailable for a delivery");
                            self.with_store(|s, _| s.undeliver(id)).await;
                            return Err(StepUpError::Audit(err));
                        }
                    }
                    self.metrics.count("delivered");
                }
                StepUpStatus {
                    status: cada_protocol::stepup::Status::Approved,
                    grant: Some(grant),
                    code: None,
                    message: Some("approved: install the grant and retry the call".into()),
                    interval: None,
                }
            }
            store::Poll::Denied => StepUpStatus {
                status: cada_protocol::stepup::Status::Denied,
                grant: None,
                code: Some(codes::DENIED.into()),
                message: Some("the owner denied this request".into()),
                interval: None,
            },
            store::Poll::Expired => StepUpStatus {
                status: cada_protocol::stepup::Status::Expired,
                grant: None,
                code: Some(codes::EXPIRED.into()),
                message: Some(
                    "nobody answered this request in time; ask again if the call is still needed"
                        .into(),
                ),
                interval: None,
            },
        })
    }

    async fn audit(&self, rec: AuditRecord) -> Result<(), StepUpError> {
        self.pipeline.audit(rec).await.map_err(|e| {
            tracing::error!(error = %e, "audit log unavailable");
            StepUpError::Audit(e)
        })
    }

    /// One request as held (all measurements, the filer, the state).
    pub fn entry(&self, id: &str) -> Option<Entry> {
        let s = match self.store.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        s.get(id).cloned()
    }

    fn views(&self, pending_only: bool) -> Vec<RequestView> {
        let now = self.now().as_millis();
        let s = match self.store.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        s.all()
            .into_iter()
            .filter(|e| {
                !pending_only
                    || (e.state.status() == cada_protocol::stepup::Status::Pending
                        && e.expires_ms > now)
            })
            .map(|e| view(e, now))
            .collect()
    }

    /// Requests waiting for the owner, newest first.
    pub fn pending(&self) -> Vec<RequestView> {
        self.views(true)
    }

    /// Every request held (ended ones for an hour after), newest first.
    pub fn recent(&self) -> Vec<RequestView> {
        self.views(false)
    }

    /// One request.
    pub fn get(&self, id: &str) -> Option<RequestView> {
        let now = self.now().as_millis();
        let s = match self.store.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        s.get(id).map(|e| view(e, now))
    }

    /// Applies the owner's decision: signs the grant on approval, writes the audit record
    /// (before anything changes: a decision that cannot be recorded is not taken), then
    /// answers the agent's next poll.
    pub async fn decide(
        &self,
        id: &str,
        decision: Decision,
        who: &str,
    ) -> Result<DecisionOutcome, StepUpError> {
        let minutes = match decision {
            Decision::ApproveMinutes(n) if !(1..=MAX_MINUTES).contains(&n) => {
                return Err(StepUpError::Minutes(n))
            }
            Decision::ApproveMinutes(n) => Some(n),
            Decision::ApproveOnce | Decision::Deny => None,
        };
        let begun = self
            .with_store(|s, now_ms| s.begin_decision(id, now_ms))
            .await;
        let entry = begun.map_err(|r| match r {
            store::DecisionRefused::Unknown => StepUpError::Unknown(clip(id)),
            store::DecisionRefused::Decided(what) => StepUpError::Decided(what),
            store::DecisionRefused::Expired => StepUpError::Expired,
        })?;
        let now = self.now();
        let who: String = who.chars().take(256).collect();
        let applied = self.apply(&entry, decision, minutes, &who, now).await;
        match applied {
            Ok((state, outcome)) => {
                self.with_store(|s, _| s.end_decision(id, Some(state)))
                    .await;
                Ok(outcome)
            }
            Err(e) => {
                self.with_store(|s, _| s.end_decision(id, None)).await;
                Err(e)
            }
        }
    }

    async fn apply(
        &self,
        e: &Entry,
        decision: Decision,
        minutes: Option<u32>,
        who: &str,
        now: UnixTime,
    ) -> Result<(State, DecisionOutcome), StepUpError> {
        if decision == Decision::Deny {
            let mut rec = self.record(e, "stepup.answer", "deny", now);
            rec.reason = Some(format!("denied by {who}"));
            self.audit(rec).await?;
            self.metrics.count("denied");
            tracing::info!(id = %e.id, by = who, "step-up request denied");
            return Ok((
                State::Denied {
                    by: who.to_owned(),
                    at_ms: now.as_millis(),
                },
                DecisionOutcome {
                    status: RequestStatus::Denied,
                    message: "denied: the agent is told stepup.denied".into(),
                },
            ));
        }
        let minted = grant::mint(
            &self.key,
            &self.revocation,
            &e.id,
            &e.filer.did,
            &e.request,
            minutes,
            now.as_secs(),
        )?;
        let (kind, event) = match minutes {
            None => ("approve_once", "approved_once"),
            Some(_) => ("approve_minutes", "approved_minutes"),
        };
        let mut rec = self.record(e, "stepup.answer", kind, now);
        rec.reason = Some(match minutes {
            None => format!(
                "approved once by {who}; grant {}, single-use detail {}",
                minted.id, minted.identifier
            ),
            Some(n) => format!(
                "approved for {n} minutes by {who}; grant {}, detail {}",
                minted.id, minted.identifier
            ),
        });
        // `contract`: the grant signed, not the contract the agent worked under.
        rec.contract = Some(minted.digest.clone());
        self.audit(rec).await?;
        self.metrics.count(event);
        tracing::info!(id = %e.id, by = who, grant = %minted.digest, "step-up request approved");
        let until = cada_contract::time::format(minted.valid_until);
        Ok((
            State::Approved {
                grant: minted.jwt,
                digest: minted.digest,
                valid_until: minted.valid_until,
                minutes,
                by: who.to_owned(),
                at_ms: now.as_millis(),
            },
            DecisionOutcome {
                status: RequestStatus::Approved,
                message: match minutes {
                    None => format!(
                        "approved once: grant {} for this call only, valid until {until}",
                        minted.id
                    ),
                    Some(n) => format!(
                        "approved for {n} minutes: grant {}, valid until {until}",
                        minted.id
                    ),
                },
            },
        ))
    }
}

impl crate::web::Requests for Service {
    fn pending(&self) -> Vec<RequestView> {
        Service::pending(self)
    }

    fn get(&self, id: &str) -> Option<RequestView> {
        Service::get(self, id)
    }

    fn decide(
        &self,
        id: &str,
        decision: Decision,
        who: &str,
    ) -> Result<DecisionOutcome, crate::web::DecideError> {
        // On a thread of its own, so that this works from a blocking thread, a worker of the
        // multi-threaded runtime or any other thread alike.
        let handle = self.handle.clone();
        let r = std::thread::scope(|scope| {
            scope
                .spawn(|| handle.block_on(Service::decide(self, id, decision, who)))
                .join()
        });
        match r {
            Ok(r) => r.map_err(|e| crate::web::DecideError {
                code: e.code().to_owned(),
                message: e.message(),
            }),
            Err(_) => Err(crate::web::DecideError {
                code: "stepup.grant".into(),
                message: "the decision failed unexpectedly; nothing was changed".into(),
            }),
        }
    }

    fn page_event(
        &self,
        event: &crate::web::PageEvent,
        peer: Option<std::net::IpAddr>,
    ) -> Result<(), crate::web::RecordError> {
        let (rec, authenticated) = self.page_record(event);
        let pipeline = Arc::clone(&self.pipeline);
        let handle = self.handle.clone();
        // As `decide`: on a thread of its own, whatever thread the page calls from.
        let r = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    handle.block_on(async {
                        if authenticated {
                            pipeline.audit(rec).await
                        } else {
                            // Anyone can cause these: short records within the log's
                            // per-client and per-interval flood limits.
                            let ip = peer
                                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
                            pipeline.audit_unauthenticated(ip, rec).await
                        }
                    })
                })
                .join()
        });
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(crate::web::RecordError(format!("the audit log: {e}"))),
            Err(_) => Err(crate::web::RecordError(
                "the audit record could not be written".into(),
            )),
        }
    }
}

impl Service {
    /// The audit record of a page event, and whether it is authenticated (written in full)
    /// or could come from anyone (a wrong code, a signature that does not verify: short
    /// and flood-limited). Kinds `passkey.register`, `passkey.signin`, `passkey.signout`,
    /// `passkey.code`, `passkey.refused`; `url` is `cada:passkey:<credential id>`.
    fn page_record(&self, event: &crate::web::PageEvent) -> (AuditRecord, bool) {
        use crate::web::PageEvent;
        let passkey = |c: &str| Some(format!("cada:passkey:{}", clip_n(c, 1400)));
        let (kind, decision, url, reason, authenticated) = match event {
            PageEvent::Registered { credential, first } => (
                "passkey.register",
                "register",
                passkey(credential),
                if *first {
                    "the first passkey, with the start-up registration code".to_owned()
                } else {
                    "another passkey, by a signed-in session with a fresh registration code"
                        .to_owned()
                },
                true,
            ),
            PageEvent::SignedIn { credential } => (
                "passkey.signin",
                "accept",
                passkey(credential),
                "signed in to the approval page".to_owned(),
                true,
            ),
            PageEvent::SignedOut { credential } => (
                "passkey.signout",
                "signout",
                passkey(credential),
                "signed out".to_owned(),
                true,
            ),
            PageEvent::CodeIssued { credential } => (
                "passkey.code",
                "issue",
                passkey(credential),
                "a fresh registration code, asked for by this passkey's session".to_owned(),
                true,
            ),
            PageEvent::Refused { code, credential } => (
                "passkey.refused",
                "reject",
                credential.as_deref().and_then(passkey),
                (*code).to_owned(),
                // A counter that went back needs the passkey's valid signature.
                *code == "webauthn.sign_count",
            ),
        };
        let rec = AuditRecord {
            time: self.now().to_string(),
            kind,
            url,
            decision,
            reason: Some(reason),
            ..AuditRecord::default()
        };
        (rec, authenticated)
    }
}

/// The page's view of entry `e` at `now_ms`.
fn view(e: &Entry, now_ms: u64) -> RequestView {
    let m = &e.filer.measurements;
    let measurement = m
        .get("PCR0")
        .or_else(|| m.get("MEASUREMENT"))
        .or_else(|| m.values().next())
        .cloned()
        .unwrap_or_default();
    let call = &e.request.request;
    let status = match e.state.status() {
        cada_protocol::stepup::Status::Pending if e.expires_ms <= now_ms => RequestStatus::Expired,
        cada_protocol::stepup::Status::Pending => RequestStatus::Pending,
        cada_protocol::stepup::Status::Approved => RequestStatus::Approved,
        cada_protocol::stepup::Status::Denied => RequestStatus::Denied,
        cada_protocol::stepup::Status::Expired => RequestStatus::Expired,
    };
    RequestView {
        id: e.id.clone(),
        agent_did: e.filer.did.clone(),
        platform: e.filer.platform.clone(),
        measurement,
        contract: e.request.contract.clone(),
        contract_summary: e.contract.clone(),
        audience: call.audience.clone(),
        method: call.method.clone(),
        tool: call.tool.clone(),
        arguments: Value::Object(call.arguments.clone()),
        refusal: crate::web::RefusalView {
            code: e.request.refusal.code.clone(),
            by: e.request.refusal.by.as_str().to_owned(),
            server: e.request.refusal.server.clone(),
            message: e.request.refusal.message.clone(),
        },
        want: match e.request.want {
            Want::Once => "once".into(),
            Want::Minutes => "minutes".into(),
        },
        created_at: e.created_ms / 1000,
        expires_at: e.expires_ms / 1000,
        status,
    }
}

/// The refused call's `audience` must be the refusing `server` (review stepup-1, finding 2):
/// the grant is for the audience, and the page shows both, so a filing that names one
/// server as the refuser and asks for another is refused `stepup.invalid` rather than shown
/// to the owner. The enclave refuses at the audience it would sign for, a gate (or the
/// server) answers at the URL called; only an STS refuses elsewhere (at its token endpoint,
/// for the call's audience).
fn check_server(r: &StepUpRequest) -> Result<(), StepUpError> {
    if r.refusal.by == cada_protocol::stepup::RefusedBy::Sts
        || r.request.audience == r.refusal.server
    {
        return Ok(());
    }
    Err(StepUpError::refused(
        400,
        codes::INVALID,
        format!(
            "the step-up request: refusal.server {:?} is not request.audience {:?}: file the \
             refusal of the server that was called, at its URL",
            r.refusal.server.chars().take(256).collect::<String>(),
            r.request.audience.chars().take(256).collect::<String>()
        ),
    ))
}

/// A fresh request id: 128 random bits, unpadded base64url.
fn new_id() -> Result<String, StepUpError> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b)
        .map_err(|_| StepUpError::Grant("the random generator failed".into()))?;
    Ok(cada_protocol::b64::encode(b))
}

fn clip(s: &str) -> String {
    clip_n(s, 64)
}

fn clip_n(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// The policy must cover the step-up URL with an audience that names no owners (the
/// verifier's rule 13 would then demand a contract permitting the step-up URL itself;
/// the service checks the owner lock in the evidence instead).
fn check_policy(pipeline: &AppState, step_up_url: &str) -> Result<(), StepUpError> {
    let engine = pipeline.engine.load();
    let policy = engine.policy();
    let url = cada_protocol::url::HttpUrl::parse_canonical(step_up_url)
        .map_err(|e| StepUpError::Config(format!("{step_up_url}: {e}")))?;
    let best = policy
        .audiences
        .iter()
        .filter(|a| a.prefix.matches(&url))
        .max_by_key(|a| a.prefix.specificity());
    match best {
        Some(a) if a.owners.is_some() => Err(StepUpError::Config(format!(
            "--policy: the audience {} covering {step_up_url} names owners; list only the \
             measurements of the images that may ask (the service checks itself that the \
             enclave is locked to this owner)",
            a.prefix
        ))),
        Some(_) => Ok(()),
        None if policy.allow_any_measurement => Ok(()),
        None => Err(StepUpError::Config(format!(
            "--policy: no [[audience]] covers {step_up_url}: add one with prefix = \"{}\" and \
             the measurements of the images that may ask",
            step_up_url.trim_end_matches(STEP_UP_PATH)
        ))),
    }
}

#[cfg(test)]
mod tests;
