//! `cada-pipeline`: the decision pipeline every CADA server shares (`cada-verify serve`,
//! `cada-gate`): the library's one decision ([`cada_attestation_verifier::Verifier`]) with
//! what a server adds around it — the attested-key cache metrics, fleet-wide behaviour
//! limits and suspensions of trust contracts ([`fleet`]), the shared replay store
//! ([`replay`], rule 14), owners' reinstatements, the status-list and JWKS refreshers, and
//! the audit record of each decision ([`OfDecision`]) in the one hash-chained log
//! (`cada-audit`). No HTTP: each server maps [`Decision`]s and [`PipelineError`]s to its
//! own answers.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod fleet;
pub mod replay;
pub mod store;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use cada_attestation_verifier::calls::check_unread_calls;
use cada_attestation_verifier::decide::{Decision, Refusal, Request};
use cada_attestation_verifier::evidence::AttestedKey;
use cada_attestation_verifier::nonce::NonceIssuer;
use cada_attestation_verifier::{Policy, UnixTime, Verifier, VerifierOptions, VerifyError};
use cada_audit::{AuditLog, AuditRecord};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::fleet::Fleet;
use crate::replay::Replay;

/// A policy and the verifier built from it (swapped whole on reload).
pub struct Engine {
    /// The verifier: policy, trust stores, attested-key cache.
    pub verifier: Verifier,
}

impl Engine {
    /// Builds the verifier for `policy`; `insecure_emulator` accepts QEMU's unsigned documents.
    pub fn new(policy: Policy, insecure_emulator: bool) -> Self {
        Engine {
            verifier: Verifier::new(policy, VerifierOptions { insecure_emulator }),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        self.verifier.policy()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReqLabels {
    endpoint: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    endpoint: &'static str,
    decision: &'static str,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

struct Metrics {
    registry: Registry,
    requests: Family<ReqLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    stages: Family<StageLabels, Histogram>,
    key_cache: Family<ResultLabels, Counter>,
    /// Policy reloads by result.
    pub reloads: Family<ResultLabels, Counter>,
    /// 1 while the policy lets URLs without an audience accept any measurement.
    any_measurement: Gauge,
    /// Status-list fetches by result.
    status_fetches: Family<ResultLabels, Counter>,
    /// Contracts suspended by a behaviour limit, by limit; and reinstated.
    suspensions: Family<ResultLabels, Counter>,
    /// Records of unauthenticated requests, written or dropped (counted).
    unauthenticated: Family<ResultLabels, Counter>,
    /// The listener's connection counters.
    conn: cada_net::ConnStats,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<ReqLabels, Counter>::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        let stages = Family::<StageLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_01, 2.0, 18))
        });
        let key_cache = Family::<ResultLabels, Counter>::default();
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "cada_verify_requests",
            "HTTP requests by endpoint and status",
            requests.clone(),
        );
        registry.register(
            "cada_verify_decisions",
            "decisions by endpoint, decision and reason",
            decisions.clone(),
        );
        registry.register(
            "cada_verify_stage_seconds",
            "time per verification stage",
            stages.clone(),
        );
        registry.register(
            "cada_verify_key_cache",
            "proofs whose key was already attested (hit), needed evidence sent with them (evidence), or was unknown (miss)",
            key_cache.clone(),
        );
        registry.register(
            "cada_verify_policy_reloads",
            "policy reloads by result",
            reloads.clone(),
        );
        let any_measurement = Gauge::default();
        registry.register(
            "cada_verify_allow_any_measurement",
            "1 while --allow-any-measurement is in force: URLs that no audience covers accept \
             ANY enclave image (accepts it admits count as decisions with reason any_measurement)",
            any_measurement.clone(),
        );
        let status_fetches = Family::<ResultLabels, Counter>::default();
        registry.register(
            "cada_verify_status_list_fetches",
            "owners' status-list fetches by result (ok, or why not: unreachable, tls, redirect, \
             http_status, too_large, malformed, timeout, or a refusal code; a list that stays \
             unfetched past [contracts] status_max_staleness_secs refuses its contracts)",
            status_fetches.clone(),
        );
        let suspensions = Family::<ResultLabels, Counter>::default();
        registry.register(
            "cada_verify_contract_suspensions",
            "trust contracts suspended fleet-wide by a behaviour limit (result=requests or \
             refusals) or reinstated by their owner (result=reinstated)",
            suspensions.clone(),
        );
        let unauthenticated = Family::<ResultLabels, Counter>::default();
        registry.register(
            "cada_verify_audit_unauthenticated",
            "audit records of unauthenticated requests: written (short), or dropped and \
             counted in the log's audit.dropped records (per-client rate, per-second cap)",
            unauthenticated.clone(),
        );
        let conn = cada_net::ConnStats::default();
        conn.register(&mut registry, "cada_verify");
        Metrics {
            registry,
            any_measurement,
            status_fetches,
            suspensions,
            unauthenticated,
            conn,
            requests,
            decisions,
            stages,
            key_cache,
            reloads,
        }
    }

    fn stage(&self, stage: &'static str, since: Instant) {
        self.stages
            .get_or_create(&StageLabels { stage })
            .observe(since.elapsed().as_secs_f64());
    }
}

/// Server limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body.
    pub max_body: usize,
    /// Requests verified at once; more are answered 503.
    pub max_concurrency: usize,
    /// Requests per second per client address (0: unlimited).
    pub rate_per_client: u32,
}

/// Shared server state.
pub struct AppState {
    /// Current engine.
    pub engine: ArcSwap<Engine>,
    replay: Replay,
    audit: AuditLog,
    nonces: NonceIssuer,
    metrics: Metrics,
    limits: Limits,
    insecure_emulator: bool,
    in_flight: Semaphore,
    buckets: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    fleet: Fleet,
}

impl AppState {
    /// Assembles the state.
    pub fn new(
        policy: Policy,
        replay: Replay,
        audit: AuditLog,
        nonces: NonceIssuer,
        limits: Limits,
        insecure_emulator: bool,
        fleet: Fleet,
    ) -> Arc<Self> {
        let mut metrics = Metrics::new();
        // The shared store's metrics (cada_store_*) beside the pipeline's: the replay store
        // and the fleet share one store.
        replay.store().register_metrics(&mut metrics.registry);
        // Spans exported, dropped, failed (cada_audit_otlp_spans_total), with --otlp-endpoint.
        audit.register_metrics(&mut metrics.registry);
        metrics
            .any_measurement
            .set(i64::from(policy.allow_any_measurement));
        Arc::new(AppState {
            engine: ArcSwap::from_pointee(Engine::new(policy, insecure_emulator)),
            insecure_emulator,
            replay,
            audit,
            nonces,
            metrics,
            in_flight: Semaphore::new(limits.max_concurrency),
            limits,
            buckets: Mutex::new(HashMap::new()),
            fleet,
        })
    }

    /// Replaces the policy (and with it the key cache: keys must be re-admitted under it).
    /// The status lists held are kept, so that a reload neither forgets a revocation nor
    /// lets an older list in again.
    pub fn swap_policy(&self, policy: Policy) {
        self.metrics
            .any_measurement
            .set(i64::from(policy.allow_any_measurement));
        let next = Engine::new(policy, self.insecure_emulator);
        next.verifier
            .keep_status_lists_from(&self.engine.load().verifier);
        self.engine.store(Arc::new(next));
        self.metrics
            .reloads
            .get_or_create(&ResultLabels { result: "ok" })
            .inc();
    }

    /// The connection counters the listener updates (registered in `/metrics`).
    pub fn conn_stats(&self) -> cada_net::ConnStats {
        self.metrics.conn.clone()
    }

    /// Counts a failed reload.
    pub fn reload_failed(&self) {
        self.metrics
            .reloads
            .get_or_create(&ResultLabels { result: "error" })
            .inc();
    }

    /// Admits one request from `ip`: a place among the requests verified at once (held
    /// until the permit is dropped) and the per-client rate.
    pub fn try_admit(&self, ip: IpAddr) -> Result<SemaphorePermit<'_>, Busy> {
        let Ok(permit) = self.in_flight.try_acquire() else {
            return Err(Busy::Overloaded);
        };
        if !self.rate_ok(ip) {
            return Err(Busy::RateLimited);
        }
        Ok(permit)
    }

    /// The largest request body of [`Limits`].
    pub fn max_body(&self) -> usize {
        self.limits.max_body
    }

    /// Whether the replay store answers (readiness).
    pub async fn ready(&self) -> Result<(), String> {
        self.replay.ready().await
    }

    /// The nonce issuer of this server (`--nonce-key-file`).
    pub fn nonces(&self) -> &NonceIssuer {
        &self.nonces
    }

    /// The audit log itself, for records whose append is not timed as a stage.
    pub fn audit_log(&self) -> &AuditLog {
        &self.audit
    }

    /// Observes the time since `since` in the `stage` histogram.
    pub fn observe_stage(&self, stage: &'static str, since: Instant) {
        self.metrics.stage(stage, since);
    }

    fn rate_ok(&self, ip: IpAddr) -> bool {
        let limit = self.limits.rate_per_client;
        if limit == 0 {
            return true;
        }
        let Ok(mut b) = self.buckets.lock() else {
            return false;
        };
        if b.len() > 100_000 {
            b.retain(|_, (t, _)| t.elapsed().as_secs() < 1);
        }
        let e = b.entry(ip).or_insert((Instant::now(), 0));
        if e.0.elapsed().as_secs() >= 1 {
            *e = (Instant::now(), 0);
        }
        e.1 += 1;
        e.1 <= limit
    }
}

/// Why a request was not admitted ([`AppState::try_admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Too many requests are being verified at once (answer 503).
    Overloaded,
    /// The client exceeded its rate (answer 429).
    RateLimited,
}

impl AppState {
    /// Rules 1–14 for one request, with everything a server adds around the library's
    /// decision: the attested-key cache metrics, rule 6 for a caller that did not read the
    /// body's calls ([`cada_attestation_verifier::calls::check_unread_calls`]: where calls
    /// are governed, `pop.calls_required` unless the caller parsed the body, or knows its
    /// digest and the proof names the calls), fleet suspension of the contract (after
    /// rule 13), the shared replay store (rule 14: the proof's `jti`, then each single-use
    /// grant the calls used, [`AppState::consume_single_use`]), and the fleet's request and
    /// refusal counters. A refusal with [`Refusal::is_unavailable`] means the replay store could
    /// not be reached (answer 503: nothing is accepted then). The caller audits the decision
    /// ([`AppState::audit`]).
    pub async fn decide(&self, engine: &Engine, req: &Request<'_>, now: UnixTime) -> Decision {
        let t = Instant::now();
        let evaluated = engine.verifier.evaluate(req, now, Some(&self.nonces));
        self.metrics.stage(
            if req.evidence.is_some() {
                "pop_with_evidence"
            } else {
                "pop"
            },
            t,
        );
        let cache_result = match (&evaluated, req.evidence.is_some()) {
            (_, true) => "evidence",
            (Err(r), false) if matches!(r.error, VerifyError::EvidenceRequired { .. }) => "miss",
            _ => "hit",
        };
        self.metrics
            .key_cache
            .get_or_create(&ResultLabels {
                result: cache_result,
            })
            .inc();
        // Rule 6 for a caller that did not read the body's calls (forward auth, a resource
        // server that sent only the body's digest, or nothing): where a contract or token
        // governs calls, the proof must name them, or a body calling any tool would pass.
        let evaluated = evaluated.and_then(|pending| {
            check_unread_calls(req.body, pending.accepted()).map_err(Refusal::from)?;
            Ok(pending)
        });
        // A contract the fleet suspended refuses (after rule 13, before the replay store).
        let evaluated = match evaluated {
            Ok(pending) => match (
                pending.accepted().contract.clone(),
                pending.accepted().token.as_ref(),
            ) {
                (Some(info), _) => match fleet_suspended(self, &info).await {
                    Ok(()) => Ok(pending),
                    Err(r) => Err(r),
                },
                // A token names its contract (cada.dtc) but not its limits: one store read tells
                // whether the fleet suspended it since the token was issued.
                (None, Some(t)) => match token_contract_suspended(self, t).await {
                    Ok(()) => Ok(pending),
                    Err(r) => Err(r),
                },
                (None, None) => Ok(pending),
            },
            Err(r) => Err(r),
        };
        // Rule 14, the replay store, last: only proofs that passed everything consume their jti.
        let decision = match evaluated {
            Err(r) => Decision::Refuse(r),
            Ok(pending) => {
                let t = Instant::now();
                let inserted = self
                    .replay
                    .insert_new(pending.replay_key(), pending.remember_until(), now)
                    .await;
                self.metrics.stage("replay", t);
                let skew = engine.policy().token.skew_secs;
                // The epoch of the replay key's own slot, as the claim just read it.
                let epoch = self.replay.epoch_of_jti(pending.replay_key());
                match pending.finish(inserted) {
                    Decision::Accept(a) if issued_before_epoch(a.claims.iat, epoch, skew) => {
                        Decision::Refuse(store_epoch_refusal(&a, epoch.unwrap_or(0), skew))
                    }
                    // An accepted proof counts against its contract's requests-per-window limit;
                    // the one that crosses it is refused and suspends the contract fleet-wide.
                    Decision::Accept(a) => match &a.contract {
                        Some(info) if !info.chain.is_empty() => {
                            match tree_store_epoch(self, info, skew).await {
                                Ok(()) => match fleet_charge_tree(self, info, now).await {
                                    Ok(()) => self.consume_single_use(a, now).await,
                                    Err(r) => Decision::Refuse(r),
                                },
                                Err(r) => Decision::Refuse(r),
                            }
                        }
                        Some(info) => match fleet_count_request(self, info, now).await {
                            Ok(()) => self.consume_single_use(a, now).await,
                            Err(r) => Decision::Refuse(r),
                        },
                        // A token minted under a delegation tree carries every link's limits
                        // (`cada_tree`): its calls are charged to the tree as the chain's are.
                        // After a loss of the store's memory, a link issued before it is
                        // refused as under the chain (`delegation.store_epoch`).
                        None => match a.token.as_ref().and_then(token_tree_info) {
                            Some(info) => match tree_store_epoch(self, &info, skew).await {
                                Ok(()) => match fleet_charge_tree(self, &info, now).await {
                                    Ok(()) => self.consume_single_use(a, now).await,
                                    Err(r) => Decision::Refuse(r),
                                },
                                Err(r) => Decision::Refuse(r),
                            },
                            None => self.consume_single_use(a, now).await,
                        },
                    },
                    refused => refused,
                }
            }
        };
        if let Some(r) = decision.refusal() {
            fleet_count_refusal(self, r, req.dpop, now).await;
        }
        decision
    }

    /// Rule 14, continued: for each call of the accepted request that only single-use
    /// grants admit ([`cada_attestation_verifier::decide::Accepted::single_use`]), the first
    /// of its choices not used before in the fleet (nor taken by an earlier call) is
    /// consumed in the shared store (`SET NX` of its `cada:grant:…` key until the grant
    /// ends, plus the clock skew) — for every such call or none: a call whose choices were
    /// all used refuses `grant.used`, a store failure refuses as unavailable (503), and
    /// either way what the request took is given back
    /// ([`cada_attestation_verifier::grants::consume_all`], whose rule this is; its
    /// residual race: a concurrent request may be refused for a grant given back a moment
    /// later, never admitted twice). Consumed here, before anything is forwarded: the grant
    /// is used up even if the upstream then fails (at most once; the agent asks again).
    async fn consume_single_use(
        &self,
        a: Box<cada_attestation_verifier::decide::Accepted>,
        now: UnixTime,
    ) -> Decision {
        let mut taken: Vec<(String, replay::GrantClaim)> = Vec::new();
        let mut refusal = None;
        // After a slot of the shared store lost its memory, a grant of that slot given
        // before the new epoch may have been used already: it is not used
        // (grant.store_epoch). Checked before the claim (an epoch known) and after it (the
        // claim reads the slot's sentinel: an epoch another instance found).
        let mut epoch = None;
        let token_iat = a.token.as_ref().map_or(0, |t| t.iat);
        'calls: for call in &a.single_use {
            let mut before_epoch = 0;
            for u in &call.choices {
                let key = u.store_key();
                if taken.iter().any(|(k, _)| *k == key) {
                    continue;
                }
                let issued = if u.issued == 0 { token_iat } else { u.issued };
                let before = |e: Option<u64>| e.is_some_and(|e| issued.saturating_mul(1000) < e);
                let slot_epoch = self.replay.epoch_of_grant(&key);
                if before(slot_epoch) {
                    epoch = slot_epoch;
                    before_epoch += 1;
                    continue;
                }
                let t = Instant::now();
                let claimed = self
                    .replay
                    .claim_grant(&key, UnixTime::from_secs(u.until), now)
                    .await;
                self.metrics.stage("grant", t);
                match claimed {
                    Ok(Some(c)) => {
                        let slot_epoch = self.replay.epoch_of_grant(&key);
                        if before(slot_epoch) {
                            // Left used (it may have been used before the loss): fails closed.
                            drop(c);
                            epoch = slot_epoch;
                            before_epoch += 1;
                            continue;
                        }
                        taken.push((key, c));
                        continue 'calls;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        refusal = Some(Refusal::from(VerifyError::ReplayStoreUnavailable(e)));
                        break 'calls;
                    }
                }
            }
            refusal = Some(if before_epoch == call.choices.len() {
                store_epoch_grant_refusal(call, epoch.unwrap_or(0))
            } else {
                Refusal::grant_used(call, a.contract.as_ref())
            });
            break;
        }
        let Some(r) = refusal else {
            return Decision::Accept(a);
        };
        // All or nothing: what this refused request took is given back; a give-back the
        // store does not answer leaves that grant used (fails closed).
        while let Some((key, c)) = taken.pop() {
            if let Err(e) = self.replay.release_grant(c).await {
                tracing::warn!(
                    key = %key,
                    error = %e,
                    "a single-use grant taken by a refused request could not be given back; it stays used"
                );
            }
        }
        Decision::Refuse(r)
    }

    /// Appends one record to the hash-chained audit log (an error: the log is unavailable,
    /// and the caller must not act on the decision).
    pub async fn audit(&self, record: AuditRecord) -> Result<(), String> {
        let t = Instant::now();
        let r = self.audit.append(record).await.map(|_| ());
        self.metrics.stage("audit", t);
        r.map_err(|e| e.to_string())
    }

    /// Appends the record of `decision` about a request from `peer`: an authenticated
    /// decision ([`authenticated`]) always, in full; any other as the short record of an
    /// unauthenticated request, within the log's flood limits
    /// ([`AppState::audit_unauthenticated`]). An error: the log is unavailable, and the
    /// caller must not act on the decision.
    pub async fn audit_decision(
        &self,
        peer: IpAddr,
        decision: &Decision,
        record: AuditRecord,
    ) -> Result<(), String> {
        if authenticated(decision) {
            self.audit(record).await
        } else {
            self.audit_unauthenticated(peer, record).await
        }
    }

    /// Appends the record of a request refused without an authenticated decision (no
    /// proof, malformed, too large, or refused by rules 1–7 or as a replay) from `peer`: short, at most
    /// the log's per-client rate and per-second cap, the rest counted in its
    /// `audit.dropped` records (`cada_verify_audit_unauthenticated{result}` counts both).
    pub async fn audit_unauthenticated(
        &self,
        peer: IpAddr,
        record: AuditRecord,
    ) -> Result<(), String> {
        let t = Instant::now();
        let r = self
            .audit
            .append_unauthenticated(record, peer, UnixTime::now().as_millis())
            .await;
        self.metrics.stage("audit", t);
        let result = match r? {
            cada_audit::Limited::Written => "written",
            cada_audit::Limited::Dropped => "dropped",
        };
        self.metrics
            .unauthenticated
            .get_or_create(&ResultLabels { result })
            .inc();
        Ok(())
    }

    /// The registry of this pipeline's metrics (`cada_verify_*`), for a binary that serves
    /// them with its own.
    pub fn registry(&self) -> &Registry {
        &self.metrics.registry
    }

    /// A fresh DPoP nonce (RFC 9449 §8) of this server's nonce key.
    pub fn issue_nonce(&self, now: UnixTime) -> String {
        self.nonces.issue(now.as_secs())
    }

    /// Counts a decision of `endpoint` (`cada_verify_decisions`).
    pub fn count_decision(&self, endpoint: &'static str, decision: &'static str, reason: &str) {
        self.metrics
            .decisions
            .get_or_create(&DecisionLabels {
                endpoint,
                decision,
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts an answer of `endpoint` with HTTP `status` (`cada_verify_requests`).
    pub fn count_request(&self, endpoint: &'static str, status: u16) {
        self.metrics
            .requests
            .get_or_create(&ReqLabels { endpoint, status })
            .inc();
    }
}
/// The `jti` of an unverified proof, for the audit record of a rejection.
pub fn peek_jti(dpop: &str) -> Option<String> {
    cada_protocol::token::parse_compact(dpop)
        .ok()
        .map(|p| p.claims.jti.chars().take(128).collect())
}
/// The DPoP nonce key of a fleet (`--nonce-key-file`): the file's bytes, at least 32.
/// Every binary that issues or checks nonces reads it here, so one file gives one key.
pub fn read_nonce_key(path: Option<&std::path::Path>) -> Result<Option<NonceIssuer>, String> {
    let Some(p) = path else {
        return Ok(None);
    };
    let k = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
    if k.len() < 32 {
        return Err(format!(
            "{}: the nonce key needs at least 32 bytes",
            p.display()
        ));
    }
    Ok(Some(NonceIssuer::new(&k)))
}
/// Keeps the owners' status lists fresh: every `every`, one [`refresh_round`] on the
/// current policy's verifier, counted in `cada_verify_status_list_fetches`. A list that
/// cannot be fetched ages until `[contracts] status_max_staleness_secs`, then its contracts
/// are refused (fail closed).
pub async fn refresh_status_lists(
    st: Arc<AppState>,
    fetcher: cada_net::fetch::Fetcher,
    extra: Vec<String>,
    every: std::time::Duration,
) {
    loop {
        let engine = st.engine.load();
        refresh_round(&engine.verifier, &fetcher, &extra, |result| {
            st.metrics
                .status_fetches
                .get_or_create(&ResultLabels { result })
                .inc();
        })
        .await;
        refresh_jwks(&engine.verifier, &fetcher).await;
        tokio::time::sleep(every).await;
    }
}

/// Fetches the JWKS of each policy `[[issuer]]` that names a `jwks_uri` (10 s each) and
/// hands it to `verifier`; a failure is logged and keeps the keys held, which are used until
/// the issuer's `jwks_max_stale_secs` after the last fetch that succeeded, then refused
/// (`token.jwks_stale`).
pub async fn refresh_jwks(
    verifier: &cada_attestation_verifier::Verifier,
    fetcher: &cada_net::fetch::Fetcher,
) {
    for (issuer, uri) in verifier.wanted_jwks() {
        let fetched = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            fetcher.get(
                &uri,
                cada_attestation_verifier::access_token::MAX_JWKS_LEN,
                "JWKS",
            ),
        )
        .await;
        let result = match fetched {
            Err(_) => Err("timeout".to_owned()),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(body)) => verifier
                .install_jwks_at(&issuer, &body, UnixTime::now())
                .map(|_| ()),
        };
        if let Err(e) = result {
            tracing::warn!(%issuer, %uri, error = %e, "JWKS fetch failed; keeping the keys held");
        }
    }
}

/// Fetches (with `fetcher`: HTTPS, or plain HTTP to loopback; 10 s each) each status list
/// that a verified contract names, and each of `extra`, and hands it to `verifier`, which
/// checks its signature, that it is the list of the URL fetched and no older than the one
/// held (`contract.status_rollback`: the held list keeps its fetch time and goes stale),
/// and keeps it with its fetch time. `counted` gets each fetch's
/// result: `ok`, or why not (a fetch failure's label, `timeout`, or the refusal code).
pub async fn refresh_round(
    verifier: &cada_attestation_verifier::Verifier,
    fetcher: &cada_net::fetch::Fetcher,
    extra: &[String],
    mut counted: impl FnMut(&'static str),
) {
    let mut urls = verifier.wanted_status_lists();
    for u in extra {
        if !urls.contains(u) {
            urls.push(u.clone());
        }
    }
    for url in urls {
        let fetched = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            fetcher.get(&url, cada_contract::MAX_STATUS_LIST_LEN, "status list"),
        )
        .await;
        let result = match fetched {
            Err(_) => Err("timeout"),
            Ok(Err(e)) => {
                tracing::warn!(%url, error = %e, "status list fetch failed");
                Err(e.failure.label())
            }
            Ok(Ok(body)) => {
                let now = UnixTime::now();
                let text = String::from_utf8_lossy(&body);
                match verifier.install_fetched_status_list(&url, text.trim(), now.as_secs(), now) {
                    Ok(_) => Ok(()),
                    Err(r) => {
                        tracing::warn!(%url, error = %r, "status list refused");
                        Err(r.code())
                    }
                }
            }
        };
        counted(match result {
            Ok(()) => "ok",
            Err(why) => why,
        });
    }
}

/// Refuses a token whose contract the fleet suspended after the token was issued — under a
/// delegation chain, any link of it (`cada_dch`, root first): a suspended link refuses every
/// call below it, by token as by proof. The token does not carry the links' limits, so
/// every link is read (one store read per link, at most [`MAX_ACTORS`] of them).
///
/// [`MAX_ACTORS`]: cada_protocol::access_token::MAX_ACTORS
async fn token_contract_suspended(
    st: &AppState,
    t: &cada_protocol::access_token::AccessTokenClaims,
) -> Result<(), Refusal> {
    let links = token_links(t);
    let chain = links.len() > 1;
    for (depth, digest) in links.into_iter().enumerate() {
        let Some(record) = st
            .fleet
            .suspended(digest)
            .await
            .map_err(fleet_unavailable)?
        else {
            continue;
        };
        let s = Suspension::read(&record);
        return Err(Refusal::behaviour(
            cada_attestation_verifier::decide::ContractRef {
                digest: t.cada.dtc.clone(),
                owner: t.owner().unwrap_or_default().to_owned(),
                limits: Default::default(),
                chain: Vec::new(),
            },
            format!(
                "the token's contract{} is suspended fleet-wide (suspension {}); its owner \
                 lifts it with cada-owner reinstate --suspension {}",
                if chain {
                    format!(" ({digest}, link {depth} of its delegation chain)")
                } else {
                    String::new()
                },
                s.id,
                s.id
            ),
        ));
    }
    Ok(())
}

/// The tree a token's calls are charged to: its `cada_tree` (root first, the limits the STS
/// verified in each link) as the [`ContractInfo`] of a chain, so that
/// [`fleet_charge_tree`] charges a call admitted by the token to every link — budget, rate
/// and request window — exactly as a call made with the chain (`delegation.budget`,
/// `delegation.rate`, suspension). `None` for a token without a tree (an owner's contract
/// that may not delegate, tokens of an older STS). The verifier checked that the tree names
/// the contracts of `cada_dch` in order (`token.malformed` otherwise).
///
/// [`ContractInfo`]: cada_attestation_verifier::decide::ContractInfo
pub fn token_tree_info(
    t: &cada_protocol::access_token::AccessTokenClaims,
) -> Option<cada_attestation_verifier::decide::ContractInfo> {
    use cada_attestation_verifier::decide::{ContractInfo, LinkInfo};
    if t.cada_tree.is_empty() {
        return None;
    }
    let window = |w: Option<cada_protocol::access_token::TreeWindow>| {
        w.map(|w| cada_contract::WindowLimit {
            max: w.max,
            window_seconds: w.window_seconds,
        })
    };
    let chain: Vec<LinkInfo> = t
        .cada_tree
        .iter()
        .take(cada_protocol::access_token::MAX_ACTORS)
        .enumerate()
        .map(|(depth, l)| LinkInfo {
            digest: l.dtc.clone(),
            issuer: String::new(),
            subject: String::new(),
            depth,
            budget: l.budget,
            rate_per_second: l.rate,
            limits: cada_contract::BehaviourLimits {
                requests: window(l.limits.requests),
                refusals: window(l.limits.refusals),
            },
            valid_until: l.until,
            iat: l.iat,
        })
        .collect();
    let leaf = chain.last()?;
    Some(ContractInfo {
        owner: t.owner().unwrap_or_default().to_owned(),
        id: String::new(),
        digest: leaf.digest.clone(),
        scopes: Vec::new(),
        tools: Vec::new(),
        resources: Vec::new(),
        prompts: Vec::new(),
        required_ctx: Vec::new(),
        remaining_secs: 0,
        limits: leaf.limits,
        authorization_details: Vec::new(),
        chain,
    })
}

/// The contracts a token's suspension is read for: every link of its chain (`cada_dch`,
/// root first), or its contract alone (`cada.dtc`, tokens of an older STS), at most
/// [`cada_protocol::access_token::MAX_ACTORS`].
fn token_links(t: &cada_protocol::access_token::AccessTokenClaims) -> Vec<&str> {
    let mut links: Vec<&str> = t
        .cada_dch
        .iter()
        .take(cada_protocol::access_token::MAX_ACTORS)
        .map(String::as_str)
        .collect();
    if !links.contains(&t.cada.dtc.as_str()) {
        links.push(&t.cada.dtc);
    }
    links
}

fn contract_ref(
    info: &cada_attestation_verifier::decide::ContractInfo,
) -> cada_attestation_verifier::decide::ContractRef {
    cada_attestation_verifier::decide::ContractRef {
        digest: info.digest.clone(),
        owner: info.owner.clone(),
        limits: info.limits,
        chain: info.chain.clone(),
    }
}

fn fleet_unavailable(e: String) -> Refusal {
    VerifyError::ReplayStoreUnavailable(format!("fleet store: {e}")).into()
}

/// Whether a proof issued at `iat` (Unix s) may have been accepted before the store lost
/// its memory at `epoch` (Unix ms): a proof is accepted up to the clock skew before its
/// `iat`, so any proof whose `iat` is earlier than the epoch start plus the skew.
fn issued_before_epoch(iat: u64, epoch: Option<u64>, skew_secs: u64) -> bool {
    epoch.is_some_and(|e| {
        iat.saturating_mul(1000) < e.saturating_add(skew_secs.saturating_mul(1000))
    })
}

/// The refusal of a proof issued before the store's epoch (`pop.store_epoch`, rule 14): the
/// shared store lost its memory (its epoch sentinel was gone), so it cannot tell whether
/// this proof was accepted before.
fn store_epoch_refusal(
    a: &cada_attestation_verifier::decide::Accepted,
    epoch_ms: u64,
    skew_secs: u64,
) -> Refusal {
    VerifyError::Contract {
        code: "pop.store_epoch",
        detail: format!(
            "the shared replay store lost its memory (restart without persistence, FLUSHALL \
             or failover to an empty node) at {epoch_ms} ms since the Unix epoch; a proof \
             issued before that plus the clock skew ({skew_secs} s) may have been accepted \
             already and is refused: sign a new proof (iat {} s is too early)",
            a.claims.iat
        ),
    }
    .into()
}

/// Refuses (`delegation.store_epoch`) a call charged to a link with a budget that was
/// issued before the shared store lost the memory of its tree's slot: the calls charged to
/// that budget before the loss are forgotten, so the budget would silently start again
/// from zero (every link's, with `n` siblings up to `n` times over). Such a tree is refused
/// until its issuer gives a new delegation (or the owner a new contract) issued after the
/// loss. A link's issue time is its [`LinkInfo::iat`], verified with the chain by rule 13
/// and cached with it, so a request deciding on the chain the verifier cached (the
/// contract is sent once) knows it as one that carries the chain (review delegation-3
/// finding 2); a token's links carry theirs in `cada_tree`. A link whose issue time is
/// unknown (0) is taken as issued before (fails closed).
///
/// [`LinkInfo::iat`]: cada_attestation_verifier::decide::LinkInfo::iat
/// Rates and behaviour windows lost with the store start again, as for a contract alone.
async fn tree_store_epoch(
    st: &AppState,
    info: &cada_attestation_verifier::decide::ContractInfo,
    skew_secs: u64,
) -> Result<(), Refusal> {
    let Some(root) = info.chain.first() else {
        return Ok(());
    };
    if info.chain.iter().all(|l| l.budget.is_none()) {
        return Ok(());
    }
    let Some(epoch) = st
        .fleet
        .tree_epoch(&root.digest)
        .await
        .map_err(fleet_unavailable)?
    else {
        return Ok(());
    };
    for l in info.chain.iter().filter(|l| l.budget.is_some()) {
        let iat = l.iat;
        if issued_before_epoch(iat, Some(epoch), skew_secs) {
            return Err(Refusal::from(VerifyError::Contract {
                code: "delegation.store_epoch",
                detail: format!(
                    "the shared store lost the count of the budget of link {} of the chain \
                     ({}) when it lost its memory (restart without persistence, FLUSHALL or \
                     failover to an empty node) at {epoch} ms since the Unix epoch; that link \
                     was issued before (iat {iat} s, clock skew {skew_secs} s), so its calls \
                     so far are unknown and its budget is not given again: ask its issuer for a \
                     new delegation (or the owner for a new contract)",
                    l.depth, l.digest
                ),
            })
            .with_contract(contract_ref(info)));
        }
    }
    Ok(())
}

/// The issue time (`iat`) of each contract of a chain text (`C0~D1~…`, or a contract
/// alone), by digest; empty when there is none or it does not parse (the caller then
/// fails closed). Read without checking signatures: rule 13 verified this very text.
pub fn link_issue_times(chain_text: Option<&str>) -> Vec<(String, u64)> {
    let Some(parts) = chain_text.and_then(|t| cada_contract::split_chain(t.trim()).ok()) else {
        return Vec::new();
    };
    parts
        .iter()
        .filter_map(|p| {
            let (_, payload) =
                cada_contract::decode_unverified(p, cada_contract::MAX_CHAIN_LEN).ok()?;
            Some((cada_contract::digest_of(p), payload.get("iat")?.as_u64()?))
        })
        .collect()
}

/// The refusal of a call whose single-use grants were all given before the store's epoch
/// (`grant.store_epoch`, rule 14): the shared store lost its memory, so it cannot tell
/// whether they were used.
fn store_epoch_grant_refusal(
    call: &cada_attestation_verifier::grants::GrantChoice,
    epoch_ms: u64,
) -> Refusal {
    VerifyError::Contract {
        code: "grant.store_epoch",
        detail: format!(
            "the single-use grant{} {} for {:?} {} given before the shared store lost its \
             memory (restart without persistence, FLUSHALL or failover to an empty node, at \
             {epoch_ms} ms since the Unix epoch), so the store cannot tell whether {} used: \
             ask the owner for a new grant",
            if call.choices.len() == 1 { "" } else { "s" },
            call.choices
                .iter()
                .map(|u| u.identifier.chars().take(80).collect::<String>())
                .collect::<Vec<_>>()
                .join(", "),
            call.tool.chars().take(80).collect::<String>(),
            if call.choices.len() == 1 {
                "was"
            } else {
                "were"
            },
            if call.choices.len() == 1 {
                "it was"
            } else {
                "they were"
            },
        ),
    }
    .into()
}

/// Refuses a proof whose contract the fleet suspended (a store failure refuses: 503).
async fn fleet_suspended(
    st: &AppState,
    info: &cada_attestation_verifier::decide::ContractInfo,
) -> Result<(), Refusal> {
    // Under a delegation chain, a suspended link (its limits count every call below it)
    // refuses every call below it.
    let chain = info.chain.len() > 1;
    match st
        .fleet
        .suspended_in(info)
        .await
        .map_err(fleet_unavailable)?
    {
        None => Ok(()),
        Some((digest, depth, record)) => {
            let s = Suspension::read(&record);
            Err(Refusal::behaviour(
                contract_ref(info),
                format!(
                    "the contract{} is suspended fleet-wide (suspension {}: {}); its owner lifts \
                     it with cada-owner reinstate --suspension {}",
                    if chain {
                        format!(" of link {depth} of the delegation chain ({digest})")
                    } else {
                        String::new()
                    },
                    s.id,
                    s.reason,
                    s.id
                ),
            ))
        }
    }
}

/// The links of `chain` as the fleet charges them, with their `kind` limit.
fn tree_links(
    chain: &[cada_attestation_verifier::decide::LinkInfo],
    kind: fleet::Count,
) -> Vec<fleet::Link<'_>> {
    chain
        .iter()
        .map(|l| fleet::Link {
            digest: &l.digest,
            budget: l.budget,
            rate: l.rate_per_second,
            window: match kind {
                fleet::Count::Requests => l.limits.requests,
                fleet::Count::Refusals => l.limits.refusals,
            },
            until: l.valid_until,
        })
        .collect()
}

/// Charges an accepted call under a delegation tree (or under an owner contract that may
/// delegate) to every link: budget and rate (`delegation.budget`, `delegation.rate`: then
/// nothing is charged), and each link's requests window, a link that crosses it being
/// suspended fleet-wide (every call below it refused).
async fn fleet_charge_tree(
    st: &AppState,
    info: &cada_attestation_verifier::decide::ContractInfo,
    now: UnixTime,
) -> Result<(), Refusal> {
    let Some(root) = info.chain.first() else {
        return Ok(());
    };
    let links = tree_links(&info.chain, fleet::Count::Requests);
    let charged = st
        .fleet
        .charge(fleet::Count::Requests, &root.digest, &links, now.as_secs())
        .await
        .map_err(fleet_unavailable)?;
    let over = |code: &'static str, link: usize, what: String| {
        let l = &info.chain[link.min(info.chain.len() - 1)];
        Refusal::from(VerifyError::Contract {
            code,
            detail: format!(
                "link {} of the chain ({}) {what}, counted fleet-wide over every call under it \
                 and the contracts below it: ask its issuer for more, or wait",
                l.depth, l.digest
            ),
        })
        .with_contract(contract_ref(info))
    };
    match charged {
        fleet::Charged::OverBudget { link, used } => Err(over(
            "delegation.budget",
            link,
            format!(
                "has used its budget ({used} of {} calls)",
                info.chain[link.min(info.chain.len() - 1)]
                    .budget
                    .unwrap_or(0)
            ),
        )),
        fleet::Charged::OverRate { link, used } => Err(over(
            "delegation.rate",
            link,
            format!(
                "had {used} calls in this second, its rate of {} per second",
                info.chain[link.min(info.chain.len() - 1)]
                    .rate_per_second
                    .unwrap_or(0)
            ),
        )),
        fleet::Charged::Counted(counts) => {
            for (l, n) in info.chain.iter().zip(counts) {
                let Some(limit) = l.limits.requests else {
                    continue;
                };
                if n > limit.max {
                    let why = format!(
                        "{n} requests in a {} s window under link {} of a delegation chain \
                         and below it, more than its limit of {}",
                        limit.window_seconds, l.depth, limit.max
                    );
                    suspend_in(
                        st,
                        &l.digest,
                        &info.owner,
                        &why,
                        "requests",
                        Some(&root.digest),
                    )
                    .await;
                    return Err(Refusal::behaviour(
                        contract_ref(info),
                        format!("the contract is now suspended fleet-wide: {why}"),
                    ));
                }
            }
            Ok(())
        }
    }
}

/// Counts an accepted proof against its contract's requests-per-window limit; the one that
/// crosses it is refused and suspends the contract for every instance.
async fn fleet_count_request(
    st: &AppState,
    info: &cada_attestation_verifier::decide::ContractInfo,
    now: UnixTime,
) -> Result<(), Refusal> {
    let Some(limit) = info.limits.requests else {
        return Ok(());
    };
    let n = st
        .fleet
        .count(fleet::Count::Requests, &info.digest, limit, now.as_secs())
        .await
        .map_err(fleet_unavailable)?;
    if n > limit.max {
        let why = format!(
            "{n} requests in a {} s window, more than its limit of {}",
            limit.window_seconds, limit.max
        );
        suspend(st, &info.digest, &info.owner, &why, "requests").await;
        return Err(Refusal::behaviour(
            contract_ref(info),
            format!("the contract is now suspended fleet-wide: {why}"),
        ));
    }
    Ok(())
}

/// Whether a refusal with `code` counts in the refusal windows of the contracts it names.
/// Not those that tell nothing of the agent's behaviour: a suspension's own refusals
/// (`contract.not_permitted.behaviour`); a delegation tree's flow control
/// (`delegation.budget`, `delegation.rate`: a budget or rate shared with siblings, which
/// an honest agent cannot see used up; under an owner contract alone the enclave refuses
/// such a signature before any request is made); and the shared store's loss of memory
/// (`pop.store_epoch`, `grant.store_epoch`, `delegation.store_epoch`). Else a tree's own
/// limits, or a store restart, would suspend the owner's contract fleet-wide. Nor a replay
/// (`pop.replay`, review delegation-1 finding 3): the proof was decided before (its request
/// counted then), and anyone who received it — any server the agent called — can send it
/// again, so counting replays let that party suspend the agent's contract and, under a
/// chain, every link above it: the whole tree.
fn counts_as_misbehaviour(code: &str) -> bool {
    !matches!(
        code,
        "contract.not_permitted.behaviour"
            | "pop.replay"
            | "delegation.budget"
            | "delegation.rate"
            | "delegation.store_epoch"
            | "pop.store_epoch"
            | "grant.store_epoch"
    )
}

/// How long a proof whose refusal was counted is remembered ([`first_refusal_of`]): longer
/// than any proof stays fresh (after that it is refused `pop.not_fresh`, which names no
/// contract and counts nowhere).
const REFUSAL_COUNTED_SECS: u64 = 3600;

/// Whether this is the first counted refusal of the proof `dpop` (review delegation-1
/// finding 3): a proof refused under a contract does not spend its `jti` (only accepted
/// proofs do), so whoever holds it — the server it was sent to — could send it again and
/// again, each refusal counted in every link's refusal window. One proof the agent's enclave
/// signed counts at most once. Keyed by a domain-separated SHA-256 of the proof's signing
/// input (header and payload, which its signature fixes: a re-encoded signature, e.g. an
/// ECDSA `s` flipped, names the same proof) in the replay store, shared by the fleet. A
/// store that cannot answer counts the refusal (as before).
async fn first_refusal_of(st: &AppState, dpop: &str, now: UnixTime) -> bool {
    let signed = dpop.rsplit_once('.').map_or(dpop, |(s, _)| s);
    let mut m = b"cada-refusal-counted-v1\0".to_vec();
    m.extend_from_slice(signed.as_bytes());
    let key = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &m);
    let until = UnixTime::from_secs(now.as_secs().saturating_add(REFUSAL_COUNTED_SECS));
    st.replay
        .insert_new(key.as_ref(), until, now)
        .await
        .unwrap_or(true)
}

/// Counts a refusal of a proof (`dpop`) that named a contract against its
/// refusals-per-window limit (and every link's, under a chain): once per proof.
async fn fleet_count_refusal(st: &AppState, r: &Refusal, dpop: &str, now: UnixTime) {
    let Some(c) = r.contract() else { return };
    if !counts_as_misbehaviour(r.code()) {
        return;
    }
    if !first_refusal_of(st, dpop, now).await {
        return;
    }
    if let Some(root) = c.chain.first() {
        let links = tree_links(&c.chain, fleet::Count::Refusals);
        if links.iter().all(|l| l.window.is_none()) {
            return;
        }
        match st
            .fleet
            .charge(fleet::Count::Refusals, &root.digest, &links, now.as_secs())
            .await
        {
            Ok(fleet::Charged::Counted(counts)) => {
                for (l, n) in c.chain.iter().zip(counts) {
                    let Some(limit) = l.limits.refusals else {
                        continue;
                    };
                    if n > limit.max {
                        let why = format!(
                            "{n} refusals in a {} s window under link {} of a delegation chain \
                             and below it, more than its limit of {} (last: {})",
                            limit.window_seconds,
                            l.depth,
                            limit.max,
                            r.code()
                        );
                        suspend_in(
                            st,
                            &l.digest,
                            &c.owner,
                            &why,
                            "refusals",
                            Some(&root.digest),
                        )
                        .await;
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "fleet store unavailable: a refusal was not counted");
            }
        }
        return;
    }
    let Some(limit) = c.limits.refusals else {
        return;
    };
    match st
        .fleet
        .count(fleet::Count::Refusals, &c.digest, limit, now.as_secs())
        .await
    {
        Ok(n) if n > limit.max => {
            let why = format!(
                "{n} refusals in a {} s window, more than its limit of {} (last: {})",
                limit.window_seconds,
                limit.max,
                r.code()
            );
            suspend(st, &c.digest, &c.owner, &why, "refusals").await;
        }
        Ok(_) => {}
        // The outage itself is logged once by the store layer, not per refusal.
        Err(e) => tracing::debug!(error = %e, "fleet store unavailable: a refusal was not counted"),
    }
}

async fn suspend(st: &AppState, dtc: &str, owner: &str, why: &str, limit: &'static str) {
    suspend_in(st, dtc, owner, why, limit, None).await;
}

/// [`suspend`] of a link of the delegation tree of `root`: the record names the root, so
/// that a reinstatement also forgets the link's counters (kept in the root's slot).
async fn suspend_in(
    st: &AppState,
    dtc: &str,
    owner: &str,
    why: &str,
    limit: &'static str,
    root: Option<&str>,
) {
    let mut id = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut id).is_err() {
        tracing::error!("no random generator: suspension not recorded");
        return;
    }
    let id = hex::encode(id);
    let since = UnixTime::now().as_secs();
    let mut record = json!({"owner": owner, "reason": why, "id": id, "since": since});
    if let Some(root) = root.filter(|r| *r != dtc) {
        record["root"] = json!(root);
    }
    let record = record.to_string();
    match st.fleet.suspend(dtc, &record).await {
        // Suspended already: that suspension, and its id, stay in force.
        Ok(false) => {}
        Ok(true) => {
            tracing::warn!(
                contract = dtc,
                owner,
                reason = why,
                suspension = %id,
                "contract suspended fleet-wide"
            );
            st.metrics
                .suspensions
                .get_or_create(&ResultLabels { result: limit })
                .inc();
            let rec = AuditRecord {
                time: UnixTime::now().to_string(),
                kind: "contract",
                url: Some(format!("cada:contract:{dtc}")),
                decision: "suspend",
                reason: Some(
                    format!("suspension {id}: {why}")
                        .chars()
                        .take(512)
                        .collect(),
                ),
                contract: Some(dtc.to_owned()),
                ..AuditRecord::default()
            };
            if let Err(e) = st.audit.append(rec).await {
                tracing::error!(error = %e, "audit append failed for a suspension");
            }
        }
        Err(e) => tracing::error!(error = %e, "fleet store unavailable: suspension not recorded"),
    }
}

/// SHA-256 (hex) over the sorted measurements of an attested key, as audit records carry it.
pub fn measurement_digest(key: &AttestedKey) -> String {
    cada_protocol::access_token::measurement_digest(&key.measurements)
}

/// The audit record of a decision: [`AuditRecord`] is `cada-audit`'s, which knows no
/// decisions; this pipeline fills one from a [`Decision`].
pub trait OfDecision {
    /// The record of one decision about a proof for `method url`: who (key, DID, platform,
    /// measurement digest), which contract or token, accepted or the rule that refused.
    fn of_decision(
        kind: &'static str,
        now: UnixTime,
        decision: &Decision,
        method: &str,
        url: &str,
        dpop: &str,
    ) -> Self;
}

impl OfDecision for AuditRecord {
    fn of_decision(
        kind: &'static str,
        now: UnixTime,
        decision: &Decision,
        method: &str,
        url: &str,
        dpop: &str,
    ) -> Self {
        let accepted = decision.accepted();
        let key = accepted.map(|a| &a.key);
        // Chain of custody: the accepted proof's task and traceparent; for a refusal, the
        // proof's as it claims them (already checked to be in their strict form at decode).
        let peeked;
        let cada = match accepted {
            Some(a) => Some(&a.claims.cada),
            None => {
                peeked = cada_protocol::token::parse_compact(dpop).ok();
                peeked.as_ref().map(|p| &p.claims.cada)
            }
        };
        AuditRecord {
            time: now.to_string(),
            kind,
            jti: accepted
                .map(|a| a.claims.jti.clone())
                .or_else(|| peek_jti(dpop)),
            jkt: key.map(|k| k.jkt.clone()),
            did: key.map(|k| k.did.clone()),
            platform: key.map(|k| k.platform.to_string()),
            measurement_digest: accepted.map(|a| match &a.token {
                Some(t) => t.cada.msr.clone(),
                None => cada_protocol::access_token::measurement_digest(&a.key.measurements),
            }),
            method: Some(method.chars().take(32).collect()),
            url: Some(url.chars().take(2048).collect()),
            decision: if accepted.is_some() {
                "accept"
            } else {
                "reject"
            },
            reason: decision.refusal().map(|r| r.code().to_string()),
            contract: accepted
                .and_then(|a| {
                    a.contract
                        .as_ref()
                        .map(|c| c.digest.clone())
                        .or_else(|| a.token.as_ref().map(|t| t.cada.dtc.clone()))
                })
                .or_else(|| {
                    decision
                        .refusal()
                        .and_then(|r| r.contract().map(|c| c.digest.clone()))
                }),
            token: accepted.and_then(|a| a.token.as_ref().map(|t| t.jti.clone())),
            task: cada.and_then(|c| c.task.clone()),
            tp: cada.and_then(|c| c.tp.clone()),
            actors: accepted.map(actors).unwrap_or_default(),
            dch: cada.map(|c| c.dch.clone()).unwrap_or_default(),
            ..AuditRecord::default()
        }
    }
}

/// Who acted for whom in an accepted request, principal first: the owner, each delegator
/// of the chain that governs it, then the proof key's DID — from the access token when one
/// admitted the request (its `sub` and nested `act`). Empty without a contract.
pub fn actors(a: &cada_attestation_verifier::decide::Accepted) -> Vec<String> {
    let Some(c) = a.contract.as_ref() else {
        return a.token.as_ref().map_or_else(Vec::new, |t| {
            t.principal_first().into_iter().map(str::to_owned).collect()
        });
    };
    let mut out: Vec<String> = if c.chain.is_empty() {
        vec![c.owner.clone()]
    } else {
        c.chain.iter().map(|l| l.issuer.clone()).collect()
    };
    if out.last() != Some(&a.key.did) {
        out.push(a.key.did.clone());
    }
    out
}

/// The one error of this crate: why an owner's reinstatement was not applied. Each has a
/// stable [`PipelineError::code`].
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The reinstatement does not verify (signature, owner, lifetime): `contract.reinstate`.
    #[error("{0}")]
    Reinstatement(cada_contract::ContractError),
    /// The contract it names is not suspended.
    #[error("contract {0} is not suspended")]
    NotSuspended(String),
    /// Signed by another owner than the suspended contract's.
    #[error("the contract's owner is {owner}, the reinstatement is signed by {signer}")]
    WrongOwner {
        /// The suspended contract's owner.
        owner: String,
        /// Who signed the reinstatement.
        signer: String,
    },
    /// The fleet store cannot be reached (nothing is changed then).
    #[error("{0}")]
    StoreUnavailable(String),
    /// This reinstatement (its `jti`) was applied already: each lifts one suspension once.
    #[error(
        "this reinstatement was applied already (jti {0}); sign a new one for the current \
         suspension with cada-owner reinstate --suspension ID"
    )]
    Replayed(String),
    /// The reinstatement names another suspension than the one in force.
    #[error(
        "the reinstatement lifts suspension {named}, but the contract's suspension now is \
         {current}: sign one with cada-owner reinstate --suspension {current}"
    )]
    OtherSuspension {
        /// The suspension it names.
        named: String,
        /// The suspension in force.
        current: String,
    },
}

impl PipelineError {
    /// The stable code of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            PipelineError::Reinstatement(e) => e.code(),
            PipelineError::NotSuspended(_) => "contract.not_suspended",
            PipelineError::WrongOwner { .. } => "contract.reinstate",
            PipelineError::StoreUnavailable(_) => "fleet-store-unavailable",
            PipelineError::Replayed(_) => "contract.reinstate.replayed",
            PipelineError::OtherSuspension { .. } => "contract.reinstate.other_suspension",
        }
    }
}

impl AppState {
    /// The suspension of contract `dtc` in force, if any (`GET
    /// /v1/contracts/{dtc}/suspension`: what an owner names in a reinstatement).
    pub async fn suspension(&self, dtc: &str) -> Result<Option<Suspension>, PipelineError> {
        let held = self
            .fleet
            .suspended(dtc)
            .await
            .map_err(PipelineError::StoreUnavailable)?;
        Ok(held.as_deref().map(Suspension::read))
    }

    /// Applies an owner's signed reinstatement (`POST /v1/contracts/reinstate`): lifts the
    /// suspension of the contract it names for every instance of the fleet, once. It must
    /// name the suspension in force (a reinstatement of an earlier one does not lift a
    /// later one), and its `jti` is consumed in the shared store (a replay is refused).
    /// Returns the verified reinstatement.
    pub async fn reinstate(
        &self,
        compact: &str,
        now: UnixTime,
    ) -> Result<cada_contract::VerifiedReinstatement, PipelineError> {
        let engine = self.engine.load();
        let owners = engine.policy().all_owners();
        let v = cada_contract::Reinstatement::verify(compact, &owners, now.as_secs())
            .map_err(PipelineError::Reinstatement)?;
        let used = format!("cada-reinstate:{}", v.jti);
        let replayed = self
            .replay
            .contains(used.as_bytes(), now)
            .await
            .map_err(PipelineError::StoreUnavailable)?;
        if replayed {
            return Err(PipelineError::Replayed(v.jti));
        }
        let Some(current) = self.suspension(&v.dtc).await? else {
            return Err(PipelineError::NotSuspended(v.dtc));
        };
        if current.owner != v.owner {
            return Err(PipelineError::WrongOwner {
                owner: current.owner,
                signer: v.owner,
            });
        }
        if current.id != v.suspension {
            return Err(PipelineError::OtherSuspension {
                named: v.suspension,
                current: current.id,
            });
        }
        // Consumed before the suspension is lifted: two copies racing lift it once.
        let fresh = self
            .replay
            .insert_new(used.as_bytes(), UnixTime::from_secs(v.exp), now)
            .await
            .map_err(PipelineError::StoreUnavailable)?;
        if !fresh {
            return Err(PipelineError::Replayed(v.jti));
        }
        self.fleet
            .reinstate(&v.dtc)
            .await
            .map_err(PipelineError::StoreUnavailable)?;
        self.metrics
            .suspensions
            .get_or_create(&ResultLabels {
                result: "reinstated",
            })
            .inc();
        tracing::warn!(contract = %v.dtc, owner = %v.owner, "contract reinstated by its owner");
        Ok(v)
    }
}

/// Whether a decision is authenticated: accepted, or refused by rule 8 or later (but not
/// as a replay) — after the proof's signature verified under a key that evidence or an
/// access token attests, and the proof was found made for this very request, fresh.
/// Its record is always written in full. Refusals by rules 1–5 (request URL, a malformed
/// proof, a bad signature, evidence that does not verify, a key nobody attested) cost an
/// attacker nothing to produce; nor do those by rule 6 (a proof for another method, URL,
/// body or calls), rule 7 (not fresh) or rule 14 (a replay): whoever saw one proof and its
/// evidence once — a server it was made for, a log — sends it again at will, to any URL,
/// long after it expired. Their records are short and rate-limited.
pub fn authenticated(decision: &Decision) -> bool {
    decision.refusal().is_none_or(authenticated_refusal)
}

/// Whether a refusal is of an authenticated request ([`authenticated`]): rule 8 or later,
/// not a replay.
pub fn authenticated_refusal(r: &Refusal) -> bool {
    r.rule() >= 8 && r.code() != "pop.replay"
}

/// A contract's suspension as the fleet store holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Suspension {
    /// Its id: what a reinstatement names (`cada-owner reinstate --suspension`).
    pub id: String,
    /// The contract's owner, who alone may lift it.
    pub owner: String,
    /// Why (the behaviour limit crossed).
    pub reason: String,
    /// When (Unix seconds; 0 if not recorded).
    pub since: u64,
}

impl Suspension {
    /// Reads a stored record. A record from before suspensions had ids gets the first 32
    /// hex digits of its SHA-256 as its id, so that it can be lifted all the same.
    pub fn read(record: &str) -> Suspension {
        let v: serde_json::Value = serde_json::from_str(record).unwrap_or_default();
        let text = |k: &str| v[k].as_str().map(str::to_owned);
        Suspension {
            id: text("id").unwrap_or_else(|| {
                let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, record.as_bytes());
                hex::encode(&d.as_ref()[..16])
            }),
            owner: text("owner").unwrap_or_default(),
            reason: text("reason").unwrap_or_else(|| record.chars().take(256).collect()),
            since: v["since"].as_u64().unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cada_attestation_verifier::decide::ContractRef;

    /// A pipeline on memory stores with small limits, its audit log in `dir`.
    fn memory_state(policy: Policy, dir: &std::path::Path) -> std::sync::Arc<AppState> {
        AppState::new(
            policy,
            crate::replay::Replay::from_option(
                "memory",
                100,
                std::time::Duration::from_millis(300),
            )
            .unwrap(),
            AuditLog::open(dir, 1024 * 1024).unwrap(),
            NonceIssuer::random(),
            Limits {
                max_body: 1024,
                max_concurrency: 4,
                rate_per_client: 0,
            },
            false,
            Fleet::from_option("memory", std::time::Duration::from_millis(300)).unwrap(),
        )
    }

    #[test]
    fn proofs_issued_before_the_epoch_plus_the_skew_are_refused() {
        // Epoch at 1000.5 s, skew 10 s: a proof of iat 1010 may have been accepted before
        // the loss (up to the skew before its iat), one of iat 1011 may not.
        let e = Some(1_000_500);
        assert!(issued_before_epoch(1_000, e, 10));
        assert!(issued_before_epoch(1_010, e, 10));
        assert!(!issued_before_epoch(1_011, e, 10));
        assert!(!issued_before_epoch(0, None, 10));
        assert_eq!(
            Refusal::from(VerifyError::Contract {
                code: "pop.store_epoch",
                detail: String::new()
            })
            .rule(),
            14
        );
    }

    #[test]
    fn only_refusals_before_an_attested_signature_are_unauthenticated() {
        let refused = |e: VerifyError| Decision::Refuse(Refusal::from(e));
        // Rules 1-5: anyone can send these at no cost.
        assert!(!authenticated(&refused(VerifyError::PopSignature)));
        // A proof seen once, sent again: to another URL or method, stale, or replayed as
        // it was (found by the adversarial review: a captured proof wrote full records,
        // 2.3 KB each, without limit, to any URL of the verifier, long after it expired).
        for e in [
            VerifyError::UrlMismatch {
                claimed: "https://a.example/x".into(),
                actual: "https://a.example/y".into(),
            },
            VerifyError::NotFresh("old".into()),
            VerifyError::Replay { jti: "j".into() },
        ] {
            assert!(!authenticated(&refused(e)));
        }
        // Rule 14's store failure and rule 13: an attested key signed a fresh proof for
        // this request.
        assert!(authenticated(&refused(
            VerifyError::ReplayStoreUnavailable("down".into())
        )));
        let behaviour = Refusal::behaviour(
            ContractRef {
                digest: "d".into(),
                owner: "did:key:z".into(),
                limits: Default::default(),
                chain: Vec::new(),
            },
            "suspended",
        );
        assert!(authenticated(&Decision::Refuse(behaviour)));
    }

    fn token(dch: &[&str], dtc: &str) -> cada_protocol::access_token::AccessTokenClaims {
        let mut t: cada_protocol::access_token::AccessTokenClaims =
            serde_json::from_value(serde_json::json!({
                "iss": "https://sts.example", "sub": "did:key:zOwner", "client_id": "did:key:zW",
                "aud": "https://api.example.com/", "iat": 1, "exp": 2, "jti": "j",
                "cnf": {"jkt": "t"},
                "cada": {"platform": "sim", "msr": "m", "att": "a", "dtc": dtc},
            }))
            .unwrap();
        t.cada_dch = dch.iter().map(|d| (*d).to_owned()).collect();
        t
    }

    /// Issue 24: a token under a delegation chain is refused once the fleet suspended any
    /// link of it (before, only its leaf, `cada.dtc`, was read: a worker's token outlived the
    /// suspension of the planner's contract above it by up to five minutes).
    #[test]
    fn a_token_is_refused_when_any_link_of_its_chain_is_suspended() {
        assert_eq!(token_links(&token(&["r", "m", "l"], "l")), ["r", "m", "l"]);
        assert_eq!(token_links(&token(&[], "l")), ["l"]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("cada-pipeline-susp-{}", std::process::id()));
        rt.block_on(async {
            let policy = Policy::from_toml("", std::path::Path::new("."), "test").unwrap();
            let st = memory_state(policy, &dir);
            let chain = token(&["root", "mid", "leaf"], "leaf");
            assert!(token_contract_suspended(&st, &chain).await.is_ok());
            assert!(st
                .fleet
                .suspend("root", "{\"reason\":\"r\"}")
                .await
                .unwrap());
            let r = token_contract_suspended(&st, &chain).await.unwrap_err();
            assert_eq!(r.code(), "contract.not_permitted.behaviour");
            assert!(r.to_string().contains("link 0"), "{r}");
            // A token of another chain, or of the same owner's other contract: not refused.
            assert!(
                token_contract_suspended(&st, &token(&["other", "leaf2"], "leaf2"))
                    .await
                    .is_ok()
            );
        });
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Issue 24: a request admitted by a token names who acted for whom from the token
    /// (owner, delegators first to latest, agent); before, its audit record named nobody.
    #[test]
    fn a_token_names_the_actors_of_its_requests() {
        let mut t = token(&["r", "l"], "l");
        t.act = cada_protocol::access_token::Actor::nest(&["did:key:zW", "did:key:zP"]);
        let accepted = cada_attestation_verifier::decide::Accepted {
            key: AttestedKey {
                jkt: "t".into(),
                did: "did:key:zW".into(),
                hpke: None,
                owner: Some("did:key:zOwner".into()),
                platform: cada_protocol::envelope::Platform::Sim,
                measurements: std::collections::BTreeMap::new(),
                module_id: String::new(),
                att: "a".into(),
                expires: UnixTime::from_secs(10),
                emulated: false,
            },
            claims: cada_protocol::token::PopClaims {
                jti: "j".into(),
                htm: "GET".into(),
                htu: "https://api.example.com/x".into(),
                iat: 1,
                exp: 2,
                ath: None,
                nonce: None,
                cada: cada_protocol::token::CadaClaim::default(),
            },
            admission: cada_attestation_verifier::decide::Admission::Token {
                issuer: "https://sts.example".into(),
            },
            contract: None,
            token: Some(t),
            single_use: vec![],
        };
        assert_eq!(
            actors(&accepted),
            ["did:key:zOwner", "did:key:zP", "did:key:zW"]
        );
        let mut none = accepted;
        none.token = None;
        assert!(actors(&none).is_empty());
    }

    #[test]
    fn a_suspension_from_before_ids_gets_a_stable_id() {
        let new = Suspension::read(r#"{"owner":"o","reason":"r","id":"abc","since":5}"#);
        assert_eq!((new.id.as_str(), new.since), ("abc", 5));
        let old = r#"{"owner":"o","reason":"r"}"#;
        assert_eq!(Suspension::read(old).id, Suspension::read(old).id);
        assert_eq!(Suspension::read(old).id.len(), 32);
        assert_eq!(Suspension::read(old).owner, "o");
    }

    /// Issue 24: a token minted under a delegation tree (`cada_tree`) is read as the chain
    /// [`fleet_charge_tree`] charges (every link's budget, rate, windows and end, root
    /// first; the e2e test `delegation_refusals::sibling_tokens_cannot_add_up_past_their_parent_across_two_gates`
    /// charges it through two gates). A token without a tree is charged to nothing.
    #[test]
    fn a_tokens_tree_is_the_chain_it_is_charged_to() {
        use cada_protocol::access_token::{TreeLimits, TreeLink, TreeWindow};
        let mut t = token(&["p", "a"], "a");
        t.act = cada_protocol::access_token::Actor::nest(&["did:key:zW", "did:key:zP"]);
        assert!(token_tree_info(&t).is_none());
        t.cada_tree = vec![
            TreeLink {
                dtc: "p".into(),
                budget: Some(3),
                rate: Some(7),
                limits: TreeLimits {
                    requests: Some(TreeWindow {
                        max: 9,
                        window_seconds: 60,
                    }),
                    refusals: None,
                },
                until: 5_000,
                iat: 1,
            },
            TreeLink {
                dtc: "a".into(),
                budget: None,
                rate: None,
                limits: TreeLimits::default(),
                until: 4_000,
                iat: 2,
            },
        ];
        let info = token_tree_info(&t).unwrap();
        assert_eq!(info.digest, "a");
        assert_eq!(info.owner, "did:key:zOwner");
        let root = &info.chain[0];
        assert_eq!(
            (
                root.digest.as_str(),
                root.depth,
                root.budget,
                root.rate_per_second,
                root.valid_until
            ),
            ("p", 0, Some(3), Some(7), 5_000)
        );
        assert_eq!(
            root.limits.requests.map(|w| (w.max, w.window_seconds)),
            Some((9, 60))
        );
        assert_eq!((info.chain[1].depth, info.chain[1].budget), (1, None));
        assert_eq!((info.chain[0].iat, info.chain[1].iat), (1, 2));
    }

    /// Issue 24: a call under a chain is charged to every link; sibling delegations are
    /// refused past their parent's budget (`delegation.budget`) and rate
    /// (`delegation.rate`), and a link that crosses its requests limit is suspended, which
    /// refuses every call below it.
    #[test]
    fn chain_calls_are_charged_to_every_link_of_the_tree() {
        use cada_attestation_verifier::decide::{ContractInfo, LinkInfo};
        use cada_contract::{BehaviourLimits, WindowLimit};
        let link = |d: &str, depth: usize, budget, rate, requests: Option<u64>| LinkInfo {
            digest: d.into(),
            issuer: "did:key:zI".into(),
            subject: "did:key:zS".into(),
            depth,
            budget,
            rate_per_second: rate,
            limits: BehaviourLimits {
                requests: requests.map(|max| WindowLimit {
                    max,
                    window_seconds: 3600,
                }),
                refusals: None,
            },
            valid_until: UnixTime::now().as_secs() + 600,
            iat: UnixTime::now().as_secs(),
        };
        let info = |chain: Vec<LinkInfo>| ContractInfo {
            owner: "did:key:zOwner".into(),
            id: "urn:uuid:x".into(),
            digest: chain.last().unwrap().digest.clone(),
            scopes: vec![],
            tools: vec![],
            resources: vec![],
            prompts: vec![],
            required_ctx: vec![],
            remaining_secs: 600,
            limits: chain.last().unwrap().limits,
            authorization_details: vec![],
            chain,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("cada-pipeline-tree-{}", std::process::id()));
        rt.block_on(async {
            let policy = Policy::from_toml("", std::path::Path::new("."), "test").unwrap();
            let st = memory_state(policy, &dir);
            let now = UnixTime::now();
            // Budget: the parent allows 3 calls, each sibling 5 of its own.
            let a = info(vec![
                link("p", 0, Some(3), None, None),
                link("a", 1, Some(5), None, None),
            ]);
            let b = info(vec![
                link("p", 0, Some(3), None, None),
                link("b", 1, Some(5), None, None),
            ]);
            for x in [&a, &b, &a] {
                fleet_charge_tree(&st, x, now).await.unwrap();
            }
            let r = fleet_charge_tree(&st, &b, now).await.unwrap_err();
            assert_eq!(r.code(), "delegation.budget", "{r}");
            assert!(r.to_string().contains("link 0"), "{r}");
            assert_eq!(r.contract().map(|c| c.chain.len()), Some(2));
            // Rate: one per second for the parent, over both siblings.
            let c = info(vec![
                link("q", 0, None, Some(1), None),
                link("c", 1, None, None, None),
            ]);
            let d = info(vec![
                link("q", 0, None, Some(1), None),
                link("d", 1, None, None, None),
            ]);
            fleet_charge_tree(&st, &c, now).await.unwrap();
            let r = fleet_charge_tree(&st, &d, now).await.unwrap_err();
            assert_eq!(r.code(), "delegation.rate", "{r}");
            // Behaviour: the middle link allows 2 requests per window, counting the calls
            // below it; the third suspends it, and then every call below it is refused.
            let e = info(vec![
                link("r", 0, None, None, None),
                link("m", 1, None, None, Some(2)),
                link("e", 2, None, None, None),
            ]);
            for _ in 0..2 {
                fleet_charge_tree(&st, &e, now).await.unwrap();
            }
            let r = fleet_charge_tree(&st, &e, now).await.unwrap_err();
            assert_eq!(r.code(), "contract.not_permitted.behaviour", "{r}");
            let r = fleet_suspended(&st, &e).await.unwrap_err();
            assert!(r.to_string().contains("link 1"), "{r}");
            // The root, used directly (a chain of one), is not under the suspended link.
            assert!(
                fleet_suspended(&st, &info(vec![link("r", 0, None, None, None)]))
                    .await
                    .is_ok()
            );
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}
