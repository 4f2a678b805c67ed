//! `cada-verify serve`: the HTTP verification endpoint, a thin adapter over the library's
//! one decision ([`cada_attestation_verifier::Verifier`]).
//!
//! Answers: `POST /v1/pop/verify` (RFC 7662-shaped), `POST /v1/evidence/verify`,
//! `GET /v1/nonce`, `/metrics`, `/healthz`, `/readyz`. Every answer that is not an
//! acceptance is an error status with an RFC 9457 problem document naming the rule
//! (`code`): 400 malformed request (JSON, evidence encoding, request URL, evidence of the
//! other platform's format); 401 a proof or evidence refused, with
//! `WWW-Authenticate: DPoP error="invalid_dpop_proof" | "use_attestation" | "use_dpop_nonce",
//! error_description="…"`; 403 the key's measurements are not allowed for the URL; 413 body
//! too large; 415 not `application/json`; 429 per-client rate exceeded; 503 overloaded,
//! replay store or audit log unavailable (nothing is accepted then: fail closed).
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cada_attestation_verifier::decide::{Admission, Decision, Refusal, Request, RequestBody};
use cada_attestation_verifier::evidence::AttestedKey;
use cada_attestation_verifier::nonce::NonceIssuer;
use cada_attestation_verifier::{Policy, UnixTime, Verifier, VerifierOptions, VerifyError};
use cada_net::Problem;
use cada_protocol::envelope::EvidenceEnvelope;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::audit::{AuditLog, AuditRecord};
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
        let conn = cada_net::ConnStats::default();
        conn.register(&mut registry, "cada_verify");
        Metrics {
            registry,
            any_measurement,
            status_fetches,
            suspensions,
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
    fleet: crate::fleet::Fleet,
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
        fleet: crate::fleet::Fleet,
    ) -> Arc<Self> {
        let metrics = Metrics::new();
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
    pub fn swap_policy(&self, policy: Policy) {
        self.metrics
            .any_measurement
            .set(i64::from(policy.allow_any_measurement));
        self.engine
            .store(Arc::new(Engine::new(policy, self.insecure_emulator)));
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

fn problem(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Response {
    Problem::new(status, code, detail).into_response()
}

/// Admission (in-flight limit, per-client rate), content type and JSON decoding shared by
/// the POST endpoints. The permit is held until the answer is built.
fn admit<'a, T: serde::de::DeserializeOwned>(
    st: &'a AppState,
    endpoint: &'static str,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(tokio::sync::SemaphorePermit<'a>, T), Problem> {
    let fail = |p: Problem| {
        st.metrics
            .requests
            .get_or_create(&ReqLabels {
                endpoint,
                status: p.status.as_u16(),
            })
            .inc();
        p
    };
    let Ok(permit) = st.in_flight.try_acquire() else {
        return Err(fail(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many verifications in flight",
        )));
    };
    if !st.rate_ok(peer.ip()) {
        return Err(fail(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "too many requests from this client",
        )));
    }
    cada_net::require_json(headers).map_err(fail)?;
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(fail(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                format!("bodies are limited to {} bytes", st.limits.max_body),
            )))
        }
        Err(e) => {
            return Err(fail(Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-body",
                e.body_text(),
            )))
        }
    };
    serde_json::from_slice(&body)
        .map(|b| (permit, b))
        .map_err(|e| {
            fail(Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed-json",
                e.to_string(),
            ))
        })
}

fn decode_evidence(text: &str) -> Result<EvidenceEnvelope, Problem> {
    EvidenceEnvelope::from_header(text).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-evidence",
            format!("evidence does not decode: {e}"),
        )
    })
}

fn measurement_digest(key: &AttestedKey) -> String {
    cada_protocol::access_token::measurement_digest(&key.measurements)
}

/// `POST /v1/pop/verify` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PopBody {
    dpop: String,
    method: String,
    url: String,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    evidence: Option<String>,
    /// The `CADA-Contract` header value (compact trust contract), once per server.
    #[serde(default)]
    contract: Option<String>,
    /// base64url SHA-256 of the request's body, to check the proof's `cada.bd` (rule 6;
    /// needed when the policy says `require_body_digest`).
    #[serde(default)]
    body_digest: Option<String>,
}

async fn pop_verify(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let endpoint = "pop";
    let (_permit, body): (_, PopBody) = match admit(&st, endpoint, peer, &headers, body) {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };
    let evidence = match body.evidence.as_deref().map(decode_evidence).transpose() {
        Ok(e) => e,
        Err(p) => return p.into_response(),
    };
    let request_body = body.body_digest.clone().map(|digest| RequestBody {
        digest,
        calls: None,
    });
    let engine = st.engine.load();
    let now = UnixTime::now();
    let req = Request {
        method: &body.method,
        url: &body.url,
        dpop: &body.dpop,
        access_token: body.access_token.as_deref(),
        evidence: evidence.as_ref(),
        contract: body.contract.as_deref(),
        body: request_body.as_ref(),
    };
    let decision = st.decide(&engine, &req, now).await;
    if let Some(r) = decision.refusal() {
        if r.is_unavailable() {
            count_decision(&st, endpoint, "error", r.code());
            tracing::error!(error = %r, "replay store unavailable: refusing every proof");
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "replay-store-unavailable",
                format!(
                    "the replay store cannot be reached, so no proof is accepted: {}",
                    r.error
                ),
            );
        }
    }
    let record = AuditRecord::of_decision(
        endpoint,
        now,
        &decision,
        &body.method,
        &body.url,
        &body.dpop,
    );
    if let Err(e) = st.audit(record).await {
        tracing::error!(error = %e, "audit log unavailable: refusing to answer");
        return problem(StatusCode::SERVICE_UNAVAILABLE, "audit-unavailable", e);
    }
    let mut resp = match &decision {
        Decision::Accept(a) => {
            let reason = match a.admission {
                Admission::Audience { .. } => "audience",
                Admission::AnyMeasurement => "any_measurement",
                Admission::Token { .. } => "token",
            };
            count_decision(&st, endpoint, "accept", reason);
            Json(json!({
                "active": true,
                "jkt": a.key.jkt, "did": a.key.did, "platform": a.key.platform,
                "measurements": a.key.measurements, "module_id": a.key.module_id,
                "iat": a.claims.iat, "exp": a.claims.exp, "jti": a.claims.jti,
                "htm": a.claims.htm, "htu": a.claims.htu, "cada": a.claims.cada,
                "emulated": a.key.emulated, "admission": a.admission,
                "owner": a.key.owner, "contract": a.contract, "token": a.token,
            }))
            .into_response()
        }
        Decision::Refuse(r) => {
            count_decision(&st, endpoint, "reject", r.code());
            refusal_response(r)
        }
    };
    count_request(&st, endpoint, resp.status().as_u16());
    if engine.policy().token.require_nonce {
        if let Ok(v) = HeaderValue::from_str(&st.nonces.issue(now.as_secs())) {
            resp.headers_mut().insert("DPoP-Nonce", v);
        }
    }
    resp
}

impl AppState {
    /// Rules 1–14 for one request, with everything a server adds around the library's
    /// decision: the attested-key cache metrics, fleet suspension of the contract (after
    /// rule 13), the shared replay store (rule 14), and the fleet's request and refusal
    /// counters. A refusal with [`Refusal::is_unavailable`] means the replay store could
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
                match pending.finish(inserted) {
                    // An accepted proof counts against its contract's requests-per-window limit;
                    // the one that crosses it is refused and suspends the contract fleet-wide.
                    Decision::Accept(a) => match &a.contract {
                        Some(info) => match fleet_count_request(self, info, now).await {
                            Ok(()) => Decision::Accept(a),
                            Err(r) => Decision::Refuse(r),
                        },
                        None => Decision::Accept(a),
                    },
                    refused => refused,
                }
            }
        };
        if let Some(r) = decision.refusal() {
            fleet_count_refusal(self, r, now).await;
        }
        decision
    }

    /// Appends one record to the hash-chained audit log (an error: the log is unavailable,
    /// and the caller must not act on the decision).
    pub async fn audit(&self, record: AuditRecord) -> Result<(), String> {
        let t = Instant::now();
        let r = self.audit.append(record).await.map(|_| ());
        self.metrics.stage("audit", t);
        r.map_err(|e| e.to_string())
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
}

fn count_decision(st: &AppState, endpoint: &'static str, decision: &'static str, reason: &str) {
    st.metrics
        .decisions
        .get_or_create(&DecisionLabels {
            endpoint,
            decision,
            reason: reason.to_owned(),
        })
        .inc();
}

fn count_request(st: &AppState, endpoint: &'static str, status: u16) {
    st.metrics
        .requests
        .get_or_create(&ReqLabels { endpoint, status })
        .inc();
}

/// The HTTP answer to a refusal: 400 for malformed requests, 403 for measurement rules,
/// 401 with a DPoP challenge for everything about the proof and its evidence. The body is
/// an RFC 9457 problem document that also carries the introspection shape
/// (`active: false`, `reasons`).
fn refusal_response(r: &Refusal) -> Response {
    let code = r.code();
    let message = r.error.to_string();
    let status = if r.is_bad_request() {
        StatusCode::BAD_REQUEST
    } else if matches!(
        r.error,
        VerifyError::NoAudience(_) | VerifyError::MeasurementsNotAllowed(_)
    ) || r.dpop_error() == "insufficient_scope"
    {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::UNAUTHORIZED
    };
    let dpop_error = (status == StatusCode::UNAUTHORIZED).then(|| r.dpop_error());
    let mut p = Problem::new(status, code, message.clone())
        .with("active", false.into())
        .with("error", dpop_error.into())
        .with("reasons", json!([{"code": code, "message": message}]));
    if let Some(err) = dpop_error {
        // error_description is a quoted-string: keep it to printable ASCII without quotes.
        let desc: String = format!("[{code}] {message}")
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .map(|c| if c == '"' || c == '\\' { '\'' } else { c })
            .take(300)
            .collect();
        p.challenge = HeaderValue::from_str(&format!(
            "DPoP error=\"{err}\", error_description=\"{desc}\", algs=\"EdDSA Ed25519 ES256 ES384\""
        ))
        .ok();
    }
    p.into_response()
}

/// The `jti` of an unverified proof, for the audit record of a rejection.
pub(crate) fn peek_jti(dpop: &str) -> Option<String> {
    cada_protocol::token::parse_compact(dpop)
        .ok()
        .map(|p| p.claims.jti.chars().take(128).collect())
}

/// `POST /v1/evidence/verify` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EvidenceBody {
    evidence: String,
    /// Hex nonce the evidence must carry.
    #[serde(default)]
    nonce: Option<String>,
}

async fn evidence_verify(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let endpoint = "evidence";
    let (_permit, body): (_, EvidenceBody) = match admit(&st, endpoint, peer, &headers, body) {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };
    let env = match decode_evidence(&body.evidence) {
        Ok(e) => e,
        Err(p) => return p.into_response(),
    };
    let Ok(nonce) = body.nonce.as_deref().map(hex::decode).transpose() else {
        return problem(
            StatusCode::BAD_REQUEST,
            "invalid-nonce",
            "nonce must be hex",
        );
    };
    let engine = st.engine.load();
    let now = UnixTime::now();
    let t = Instant::now();
    let res = engine
        .verifier
        .admit_evidence(&env, nonce.as_deref(), now, Some(&st.nonces));
    st.metrics.stage("evidence", t);
    let record = AuditRecord {
        time: now.to_string(),
        kind: endpoint,
        jkt: res.as_ref().ok().map(|k| k.jkt.clone()),
        did: res.as_ref().ok().map(|k| k.did.clone()),
        platform: Some(env.platform.to_string()),
        measurement_digest: res.as_ref().ok().map(measurement_digest),
        decision: if res.is_ok() { "accept" } else { "reject" },
        reason: res.as_ref().err().map(|r| r.code().to_string()),
        ..AuditRecord::default()
    };
    if let Err(e) = st.audit.append(record).await {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "audit-unavailable", e);
    }
    let resp = match res {
        Ok(k) => {
            count_decision(&st, endpoint, "accept", "ok");
            Json(json!({
                "valid": true, "platform": k.platform, "jkt": k.jkt, "did": k.did,
                "measurements": k.measurements, "module_id": k.module_id, "att": k.att,
                "expires": k.expires.to_string(), "emulated": k.emulated,
            }))
            .into_response()
        }
        Err(r) => {
            count_decision(&st, endpoint, "reject", r.code());
            let mut resp = refusal_response(&r);
            // Evidence is not a DPoP proof: no DPoP challenge on this endpoint.
            resp.headers_mut().remove(header::WWW_AUTHENTICATE);
            resp
        }
    };
    count_request(&st, endpoint, resp.status().as_u16());
    resp
}

async fn nonce(State(st): State<Arc<AppState>>) -> Response {
    let n = st.nonces.issue(UnixTime::now().as_secs());
    let mut r = Json(json!({ "nonce": n })).into_response();
    if let Ok(v) = HeaderValue::from_str(&n) {
        r.headers_mut().insert("DPoP-Nonce", v);
    }
    r
}

async fn ready(State(st): State<Arc<AppState>>) -> Response {
    match st.replay.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            format!("replay store: {e}"),
        ),
    }
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    cada_net::metrics_response(&st.metrics.registry)
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

/// The router.
pub fn router(st: Arc<AppState>) -> Router {
    let max_body = st.limits.max_body;
    Router::new()
        .route("/v1/pop/verify", post(pop_verify))
        .route("/v1/contracts/reinstate", post(reinstate))
        .route("/v1/evidence/verify", post(evidence_verify))
        .route("/v1/nonce", get(nonce))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "not-found", "no such endpoint") })
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(st)
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
/// hands it to `verifier`; a failure keeps the keys held and is logged.
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
            Ok(Ok(body)) => verifier.install_jwks(&issuer, &body).map(|_| ()),
        };
        if let Err(e) = result {
            tracing::warn!(%issuer, %uri, error = %e, "JWKS fetch failed; keeping the keys held");
        }
    }
}

/// Fetches (with `fetcher`: HTTPS, or plain HTTP to loopback; 10 s each) each status list
/// that a verified contract names, and each of `extra`, and hands it to `verifier`, which
/// checks its signature and keeps it with its fetch time. `counted` gets each fetch's
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
                match verifier.install_status_list(text.trim(), now.as_secs(), now) {
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

/// Refuses a token whose contract the fleet suspended after the token was issued.
async fn token_contract_suspended(
    st: &AppState,
    t: &cada_protocol::access_token::AccessTokenClaims,
) -> Result<(), Refusal> {
    match st
        .fleet
        .suspended(&t.cada.dtc)
        .await
        .map_err(fleet_unavailable)?
    {
        None => Ok(()),
        Some(_) => Err(Refusal::behaviour(
            cada_attestation_verifier::decide::ContractRef {
                digest: t.cada.dtc.clone(),
                owner: t.act.sub.clone(),
                limits: Default::default(),
            },
            "the token's contract is suspended fleet-wide; its owner lifts it with \
             cada-owner reinstate",
        )),
    }
}

fn contract_ref(
    info: &cada_attestation_verifier::decide::ContractInfo,
) -> cada_attestation_verifier::decide::ContractRef {
    cada_attestation_verifier::decide::ContractRef {
        digest: info.digest.clone(),
        owner: info.owner.clone(),
        limits: info.limits,
    }
}

fn fleet_unavailable(e: String) -> Refusal {
    VerifyError::ReplayStoreUnavailable(format!("fleet store: {e}")).into()
}

/// Refuses a proof whose contract the fleet suspended (a store failure refuses: 503).
async fn fleet_suspended(
    st: &AppState,
    info: &cada_attestation_verifier::decide::ContractInfo,
) -> Result<(), Refusal> {
    if info.limits.requests.is_none() && info.limits.refusals.is_none() {
        return Ok(());
    }
    match st
        .fleet
        .suspended(&info.digest)
        .await
        .map_err(fleet_unavailable)?
    {
        None => Ok(()),
        Some(record) => {
            let why = serde_json::from_str::<serde_json::Value>(&record)
                .ok()
                .and_then(|r| r["reason"].as_str().map(str::to_owned))
                .unwrap_or(record);
            Err(Refusal::behaviour(
                contract_ref(info),
                format!(
                    "the contract is suspended fleet-wide ({why}); its owner lifts it with cada-owner reinstate"
                ),
            ))
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
        .count(
            crate::fleet::Count::Requests,
            &info.digest,
            limit,
            now.as_secs(),
        )
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

/// Counts a refusal of a proof that named a contract against its refusals-per-window limit.
async fn fleet_count_refusal(st: &AppState, r: &Refusal, now: UnixTime) {
    let Some(c) = r.contract() else { return };
    let Some(limit) = c.limits.refusals else {
        return;
    };
    if r.code() == "contract.not_permitted.behaviour" {
        return;
    }
    match st
        .fleet
        .count(
            crate::fleet::Count::Refusals,
            &c.digest,
            limit,
            now.as_secs(),
        )
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
        Err(e) => tracing::error!(error = %e, "fleet store unavailable: a refusal was not counted"),
    }
}

async fn suspend(st: &AppState, dtc: &str, owner: &str, why: &str, limit: &'static str) {
    let record = json!({"owner": owner, "reason": why}).to_string();
    match st.fleet.suspend(dtc, &record).await {
        Ok(()) => {
            tracing::warn!(
                contract = dtc,
                owner,
                reason = why,
                "contract suspended fleet-wide"
            );
            st.metrics
                .suspensions
                .get_or_create(&ResultLabels { result: limit })
                .inc();
            let rec = AuditRecord {
                time: UnixTime::now().to_string(),
                kind: "contract",
                jti: None,
                jkt: None,
                did: None,
                platform: None,
                measurement_digest: None,
                method: None,
                url: Some(format!("cada:contract:{dtc}")),
                decision: "suspend",
                reason: Some(why.chars().take(512).collect()),
                contract: Some(dtc.to_owned()),
                token: None,
                rpc: vec![],
                upstream_status: None,
                latency_us: None,
            };
            if let Err(e) = st.audit.append(rec).await {
                tracing::error!(error = %e, "audit append failed for a suspension");
            }
        }
        Err(e) => tracing::error!(error = %e, "fleet store unavailable: suspension not recorded"),
    }
}

/// `POST /v1/contracts/reinstate` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReinstateBody {
    reinstatement: String,
}

/// `POST /v1/contracts/reinstate`: the owner's signed reinstatement lifts a suspension for
/// every instance of the fleet.
async fn reinstate(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let endpoint = "reinstate";
    let (_permit, body): (_, ReinstateBody) = match admit(&st, endpoint, peer, &headers, body) {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };
    let engine = st.engine.load();
    let owners = engine.policy().all_owners();
    let now = UnixTime::now();
    let v = match cada_contract::Reinstatement::verify(&body.reinstatement, &owners, now.as_secs())
    {
        Ok(v) => v,
        Err(e) => return problem(StatusCode::FORBIDDEN, e.code(), e.to_string()),
    };
    let held = match st.fleet.suspended(&v.dtc).await {
        Ok(h) => h,
        Err(e) => {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "fleet-store-unavailable",
                e,
            )
        }
    };
    let Some(record) = held else {
        return problem(
            StatusCode::NOT_FOUND,
            "contract.not_suspended",
            format!("contract {} is not suspended", v.dtc),
        );
    };
    let owner = serde_json::from_str::<serde_json::Value>(&record)
        .ok()
        .and_then(|r| r["owner"].as_str().map(str::to_owned));
    if owner.as_deref() != Some(v.owner.as_str()) {
        return problem(
            StatusCode::FORBIDDEN,
            "contract.reinstate",
            format!(
                "the contract's owner is {}, the reinstatement is signed by {}",
                owner.unwrap_or_default(),
                v.owner
            ),
        );
    }
    match st.fleet.reinstate(&v.dtc).await {
        Ok(_) => {
            st.metrics
                .suspensions
                .get_or_create(&ResultLabels {
                    result: "reinstated",
                })
                .inc();
            tracing::warn!(contract = %v.dtc, owner = %v.owner, "contract reinstated by its owner");
            count_decision(&st, endpoint, "accept", "reinstated");
            Json(json!({"reinstated": v.dtc, "owner": v.owner})).into_response()
        }
        Err(e) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "fleet-store-unavailable",
            e,
        ),
    }
}
