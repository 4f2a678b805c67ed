//! The HTTP face of the STS: the token endpoint, RFC 8414 metadata, the JWKS, RFC 7662
//! introspection, RFC 7009 revocation, metrics. Every decision is the library's
//! ([`Verifier::evaluate_exchange`]); this module only reads HTTP and writes OAuth answers.
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cada_attestation_verifier::decide::{Decision, Exchange, Refusal, Request};
use cada_attestation_verifier::nonce::NonceIssuer;
use cada_attestation_verifier::{UnixTime, Verifier};
use cada_audit::{AuditLog, AuditRecord};
use cada_pipeline::fleet::Fleet;
use cada_pipeline::replay::Replay;
use cada_protocol::access_token::{GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_URI};
use cada_protocol::envelope::EvidenceEnvelope;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::json;
use zeroize::Zeroizing;

use crate::exchange::{parse_form, Minter, TokenRequest};
use crate::oauth::{from_refusal, OAuthError};

/// Largest request body: 64 KiB beside the largest delegation chain the format accepts
/// (`subject_token` may be one: `MAX_CHAIN_LEN`, 256 KiB; review delegation-1, finding 2).
pub const MAX_BODY: usize = 64 * 1024 + cada_contract::delegation::MAX_CHAIN_LEN;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

/// The STS's counters.
struct Metrics {
    registry: Registry,
    exchanges: Family<ResultLabels, Counter>,
    introspections: Family<ResultLabels, Counter>,
    revocations: Counter,
    status_fetches: Family<ResultLabels, Counter>,
    conn: cada_net::ConnStats,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let exchanges = Family::<ResultLabels, Counter>::default();
        registry.register(
            "cada_sts_exchanges",
            "token exchanges by result: issued, or the rule code that refused",
            exchanges.clone(),
        );
        let introspections = Family::<ResultLabels, Counter>::default();
        registry.register(
            "cada_sts_introspections",
            "introspection requests by result (active, inactive, unauthorized)",
            introspections.clone(),
        );
        let revocations = Counter::default();
        registry.register(
            "cada_sts_revocations",
            "tokens revoked through /revoke",
            revocations.clone(),
        );
        let status_fetches = Family::<ResultLabels, Counter>::default();
        registry.register(
            "cada_sts_status_list_fetches",
            "owners' status-list fetches by result (ok, or why not)",
            status_fetches.clone(),
        );
        let conn = cada_net::ConnStats::default();
        conn.register(&mut registry, "cada_sts");
        Metrics {
            registry,
            exchanges,
            introspections,
            revocations,
            status_fetches,
            conn,
        }
    }
}

/// Everything a request handler needs.
pub struct StsState {
    verifier: Verifier,
    minter: Minter,
    replay: Replay,
    fleet: Fleet,
    nonces: NonceIssuer,
    audit: AuditLog,
    /// The bearer secret of `/introspect` and `/revoke`; without it they refuse everyone.
    admin_secret: Option<Zeroizing<String>>,
    metrics: Metrics,
}

impl StsState {
    /// The state of one STS.
    pub fn new(
        verifier: Verifier,
        minter: Minter,
        replay: Replay,
        fleet: Fleet,
        nonces: NonceIssuer,
        audit: AuditLog,
        admin_secret: Option<Zeroizing<String>>,
    ) -> Arc<Self> {
        let mut metrics = Metrics::new();
        // The shared store's metrics (cada_store_*) beside the STS's own.
        replay.store().register_metrics(&mut metrics.registry);
        // Spans exported, dropped, failed (cada_audit_otlp_spans_total), with --otlp-endpoint.
        audit.register_metrics(&mut metrics.registry);
        Arc::new(StsState {
            verifier,
            minter,
            replay,
            fleet,
            nonces,
            audit,
            admin_secret,
            metrics,
        })
    }

    /// The connection counters the listener updates.
    pub fn conn_stats(&self) -> cada_net::ConnStats {
        self.metrics.conn.clone()
    }

    /// The issuer identifier.
    pub fn issuer(&self) -> &str {
        &self.minter.issuer
    }

    /// One round of status-list fetches (the lists the contracts seen name, and `extra`),
    /// counted in `cada_sts_status_list_fetches`.
    pub async fn refresh_status_lists(&self, fetcher: &cada_net::fetch::Fetcher, extra: &[String]) {
        cada_pipeline::refresh_round(&self.verifier, fetcher, extra, |result| {
            self.metrics
                .status_fetches
                .get_or_create(&ResultLabels {
                    result: result.to_owned(),
                })
                .inc();
        })
        .await;
    }
}

/// The router.
pub fn router(st: Arc<StsState>) -> Router {
    Router::new()
        .route("/token", post(token))
        .route("/introspect", post(introspect))
        .route("/revoke", post(revoke))
        .route("/jwks", get(jwks))
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            oauth_answer(
                &OAuthError {
                    status: 404,
                    error: "invalid_request",
                    description: "[request.path] no such endpoint: see \
                                  /.well-known/oauth-authorization-server"
                        .into(),
                },
                None,
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(st)
}

/// An OAuth error answer, with a fresh `DPoP-Nonce` when one is given.
fn oauth_answer(e: &OAuthError, nonce: Option<String>) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = (status, Json(e.body())).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if e.status == 401 {
        // RFC 6749 §5.2: a 401 names the scheme the client should authenticate with.
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("DPoP error=\"invalid_client\""),
        );
    }
    if let Some(n) = nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
        h.insert("dpop-nonce", n);
    }
    resp
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, OAuthError> {
    let mut all = headers.get_all(name).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(OAuthError::invalid_request(format!(
            "the {name} header appears more than once"
        )));
    }
    first
        .map(|v| {
            v.to_str().map_err(|_| {
                OAuthError::invalid_request(format!("the {name} header is not visible ASCII"))
            })
        })
        .transpose()
}

/// The token endpoint's answer (RFC 8693 §2.2.1), with the granted `authorization_details`
/// (RFC 9396 §7) as the exact JSON text the token carries.
#[derive(serde::Serialize)]
struct TokenAnswer {
    access_token: String,
    issued_token_type: &'static str,
    token_type: &'static str,
    expires_in: u64,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorization_details: Option<cada_protocol::access_token::RawDetails>,
}

/// What one exchange produced, for the audit log and metrics.
struct Outcome {
    answer: Result<TokenAnswer, OAuthError>,
    record: AuditRecord,
    /// Issued, or refused after the proof's signature verified under an attested key and
    /// it was found fresh and made for this request, not replayed
    /// ([`cada_pipeline::authenticated_refusal`]): always audited in full. Else a short record within the client's rate.
    authenticated: bool,
}

async fn token(
    State(st): State<Arc<StsState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = UnixTime::now();
    let nonce = st
        .verifier
        .policy()
        .token
        .require_nonce
        .then(|| st.nonces.issue(now.as_secs()));
    let outcome = exchange(&st, &headers, &body, now).await;
    let result = match &outcome.answer {
        Ok(_) => "issued".to_owned(),
        Err(e) => e.code().to_owned(),
    };
    st.metrics
        .exchanges
        .get_or_create(&ResultLabels { result })
        .inc();
    // Fail closed: a token that is not in the audit log is not handed out.
    let audited = if outcome.authenticated {
        st.audit.append(outcome.record).await
    } else {
        st.audit
            .append_unauthenticated(outcome.record, peer.ip(), now.as_millis())
            .await
            .map(|_| ())
    };
    if let Err(e) = audited {
        tracing::error!(error = %e, "audit append failed: refusing the exchange");
        return oauth_answer(
            &OAuthError {
                status: 503,
                error: "temporarily_unavailable",
                description: format!("[audit.unavailable] the audit log cannot be written: {e}"),
            },
            nonce,
        );
    }
    match outcome.answer {
        Ok(v) => {
            let mut resp = (StatusCode::OK, Json(v)).into_response();
            let h = resp.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if let Some(n) = nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
                h.insert("dpop-nonce", n);
            }
            resp
        }
        Err(e) => {
            tracing::info!(error = e.error, description = %e.description, "exchange refused");
            oauth_answer(&e, nonce)
        }
    }
}

/// Reads, decides and mints one exchange.
async fn exchange(st: &StsState, headers: &HeaderMap, body: &[u8], now: UnixTime) -> Outcome {
    let mut record = AuditRecord {
        time: now.to_string(),
        kind: "token",
        method: Some("POST".into()),
        decision: "reject",
        ..AuditRecord::default()
    };
    let mut authenticated = false;
    let answer = async {
        let ct = header_str(headers, "content-type")?.unwrap_or("");
        if !ct.split(';').next().is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        }) {
            return Err(OAuthError::invalid_request(
                "the token request must be application/x-www-form-urlencoded",
            ));
        }
        let req: TokenRequest = parse_form(body)?;
        record.url = Some(req.resource.chars().take(2048).collect());
        let dpop = header_str(headers, "dpop")?.ok_or_else(|| {
            OAuthError::bad(
                "invalid_dpop_proof",
                "pop.missing",
                format!(
                    "the DPoP header is missing: sign a proof for POST {}",
                    st.minter.token_endpoint()
                ),
            )
        })?;
        // Chain of custody: the proof's task and traceparent, as it claims them (checked at
        // decode); `describe` adds who acted for whom once it is accepted.
        if let Ok(p) = cada_protocol::token::parse_compact(dpop) {
            record.task = p.claims.cada.task;
            record.tp = p.claims.cada.tp;
            record.dch = p.claims.cada.dch;
        }
        let evidence = header_str(headers, "cada-evidence")?
            .map(EvidenceEnvelope::from_header)
            .transpose()
            .map_err(|e| {
                OAuthError::bad(
                    "invalid_client",
                    "evidence.decode",
                    format!("CADA-Evidence: {e}"),
                )
            })?;
        let endpoint = st.minter.token_endpoint();
        let request = Request {
            method: "POST",
            url: &endpoint,
            dpop,
            access_token: None,
            evidence: evidence.as_ref(),
            contract: Some(&req.subject_token),
            body: None,
        };
        let ex = Exchange {
            resource: &req.resource,
            scopes: &req.scopes,
            authorization_details: &req.authorization_details,
        };
        let pending = st
            .verifier
            .evaluate_exchange(&request, &ex, now, Some(&st.nonces))
            .map_err(|r| {
                authenticated = cada_pipeline::authenticated_refusal(&r);
                refused(&mut record, &r)
            })?;
        authenticated = true;
        // A contract the fleet suspended gets no token — under a chain, any suspended link
        // (it refuses every call below it).
        if let Some(info) = &pending.accepted().contract {
            refuse_suspended(&st.fleet, info).await?;
        }
        let inserted = st
            .replay
            .insert_new(pending.replay_key(), pending.remember_until(), now)
            .await;
        let accepted = match pending.finish(inserted) {
            Decision::Accept(a) => a,
            Decision::Refuse(r) => return Err(refused(&mut record, &r)),
        };
        describe(&mut record, &accepted);
        let (token, claims) = st.minter.mint(&accepted, &req, now)?;
        record.decision = "accept";
        record.token = Some(claims.jti.clone());
        Ok(TokenAnswer {
            access_token: token,
            issued_token_type: TOKEN_TYPE_URI,
            token_type: "DPoP",
            expires_in: claims.exp.saturating_sub(now.as_secs()),
            scope: claims.scope,
            authorization_details: claims.authorization_details,
        })
    }
    .await;
    if let Err(e) = &answer {
        record.reason = Some(e.code().to_owned());
    }
    Outcome {
        answer,
        record,
        authenticated,
    }
}

/// Refuses an exchange under a contract the fleet suspended: the contract itself, or under
/// a delegation chain any link of it ([`Fleet::suspended_in`]) — a suspended planner's
/// contract refuses its worker's token as it refuses the worker's proofs
/// (`contract.not_permitted.behaviour`, `invalid_grant`). A store failure refuses
/// (`temporarily_unavailable`).
pub async fn refuse_suspended(
    fleet: &Fleet,
    info: &cada_attestation_verifier::decide::ContractInfo,
) -> Result<(), OAuthError> {
    match fleet.suspended_in(info).await {
        Ok(None) => Ok(()),
        Ok(Some((digest, depth, _))) => Err(OAuthError::bad(
            "invalid_grant",
            "contract.not_permitted.behaviour",
            if info.chain.len() > 1 {
                format!(
                    "link {depth} of the delegation chain ({digest}) is suspended fleet-wide; \
                     the owner lifts it with cada-owner reinstate"
                )
            } else {
                "the contract is suspended fleet-wide; its owner lifts it with cada-owner \
                 reinstate"
                    .to_owned()
            },
        )),
        Err(e) => Err(from_refusal(&Refusal::from(
            cada_attestation_verifier::VerifyError::ReplayStoreUnavailable(e),
        ))),
    }
}

fn describe(record: &mut AuditRecord, a: &cada_attestation_verifier::decide::Accepted) {
    record.jti = Some(a.claims.jti.clone());
    record.jkt = Some(a.key.jkt.clone());
    record.did = Some(a.key.did.clone());
    record.platform = Some(a.key.platform.to_string());
    record.measurement_digest = Some(cada_protocol::access_token::measurement_digest(
        &a.key.measurements,
    ));
    record.contract = a.contract.as_ref().map(|c| c.digest.clone());
    record.task.clone_from(&a.claims.cada.task);
    record.tp.clone_from(&a.claims.cada.tp);
    record.dch.clone_from(&a.claims.cada.dch);
    record.actors = cada_pipeline::actors(a);
}

fn refused(record: &mut AuditRecord, r: &Refusal) -> OAuthError {
    record.contract = r.contract().map(|c| c.digest.clone());
    from_refusal(r)
}

/// `Authorization: Bearer <admin secret>`, compared in constant time.
fn admin(st: &StsState, headers: &HeaderMap) -> Result<(), OAuthError> {
    let unauthorized = |why: &str| OAuthError {
        status: 401,
        error: "invalid_client",
        description: format!("[request.auth] {why}"),
    };
    let Some(secret) = &st.admin_secret else {
        return Err(unauthorized(
            "introspection and revocation are off: start cada-sts with --admin-secret-file",
        ));
    };
    let got = header_str(headers, "authorization")?
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("send Authorization: Bearer <the admin secret>"))?;
    aws_lc_rs::constant_time::verify_slices_are_equal(got.as_bytes(), secret.as_bytes())
        .map_err(|_| unauthorized("the admin secret does not match"))
}

fn form_token(body: &[u8]) -> Result<String, OAuthError> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| OAuthError::invalid_request("the token parameter is missing"))
}

/// Key of a revoked token id in the shared store.
fn revoked_key(jti: &str) -> Vec<u8> {
    [b"cada-sts-revoked:".as_slice(), jti.as_bytes()].concat()
}

async fn introspect(State(st): State<Arc<StsState>>, headers: HeaderMap, body: Bytes) -> Response {
    let count = |r: &str| {
        st.metrics
            .introspections
            .get_or_create(&ResultLabels {
                result: r.to_owned(),
            })
            .inc();
    };
    if let Err(e) = admin(&st, &headers) {
        count("unauthorized");
        return oauth_answer(&e, None);
    }
    let token = match form_token(&body) {
        Ok(t) => t,
        Err(e) => return oauth_answer(&e, None),
    };
    let now = UnixTime::now().as_secs();
    let inactive = || Json(json!({"active": false})).into_response();
    let Ok(claims) = st.minter.read_own(&token) else {
        count("inactive");
        return inactive();
    };
    if claims.exp <= now {
        count("inactive");
        return inactive();
    }
    match st
        .replay
        .contains(&revoked_key(&claims.jti), UnixTime::now())
        .await
    {
        Ok(false) => {}
        Ok(true) => {
            count("inactive");
            return inactive();
        }
        Err(e) => {
            return oauth_answer(
                &OAuthError {
                    status: 503,
                    error: "temporarily_unavailable",
                    description: format!("[sts.store] revocations cannot be read: {e}"),
                },
                None,
            )
        }
    }
    count("active");
    let mut v = serde_json::to_value(&claims).unwrap_or_else(|_| json!({}));
    v["active"] = json!(true);
    v["token_type"] = json!("DPoP");
    Json(v).into_response()
}

async fn revoke(State(st): State<Arc<StsState>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = admin(&st, &headers) {
        return oauth_answer(&e, None);
    }
    let token = match form_token(&body) {
        Ok(t) => t,
        Err(e) => return oauth_answer(&e, None),
    };
    let now = UnixTime::now();
    // RFC 7009 §2.2: a token that is not ours or already dead is answered 200 as well.
    if let Ok(claims) = st.minter.read_own(&token) {
        if claims.exp > now.as_secs() {
            let until = UnixTime::from_secs(claims.exp.saturating_add(1));
            if let Err(e) = st
                .replay
                .insert_new(&revoked_key(&claims.jti), until, now)
                .await
            {
                return oauth_answer(
                    &OAuthError {
                        status: 503,
                        error: "temporarily_unavailable",
                        description: format!("[sts.store] the revocation was not stored: {e}"),
                    },
                    None,
                );
            }
            st.metrics.revocations.inc();
            let rec = AuditRecord {
                time: now.to_string(),
                kind: "token",
                decision: "revoke",
                did: Some(claims.agent().to_owned()),
                jkt: Some(claims.cnf.jkt.clone()),
                url: Some(claims.aud.clone()),
                contract: Some(claims.cada.dtc.clone()),
                token: Some(claims.jti.clone()),
                ..AuditRecord::default()
            };
            if let Err(e) = st.audit.append(rec).await {
                tracing::error!(error = %e, "audit append failed for a revocation");
            }
        }
    }
    StatusCode::OK.into_response()
}

async fn jwks(State(st): State<Arc<StsState>>) -> Response {
    let mut resp = Json(st.minter.keys.jwks()).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

async fn metadata(State(st): State<Arc<StsState>>) -> Response {
    let base = st.minter.issuer.trim_end_matches('/');
    Json(json!({
        "issuer": st.minter.issuer,
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "introspection_endpoint": format!("{base}/introspect"),
        "revocation_endpoint": format!("{base}/revoke"),
        "grant_types_supported": [GRANT_TYPE_TOKEN_EXCHANGE],
        "token_endpoint_auth_methods_supported": ["none"],
        "dpop_signing_alg_values_supported": ["ES256", "ES384", "EdDSA", "Ed25519"],
        "cada_evidence_header": "CADA-Evidence",
        "cada_subject_token_types_supported": crate::exchange::SUBJECT_TOKEN_TYPES,
        "cada_dpop_nonce_required": st.verifier.policy().token.require_nonce,
    }))
    .into_response()
}

async fn ready(State(st): State<Arc<StsState>>) -> Response {
    match st.replay.ready().await {
        Ok(()) => "ready\n".into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response(),
    }
}

async fn metrics(State(st): State<Arc<StsState>>) -> Response {
    cada_net::metrics_response(&st.metrics.registry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cada_attestation_verifier::decide::{ContractInfo, LinkInfo};

    fn link(depth: usize, limited: bool) -> LinkInfo {
        let mut limits = cada_contract::BehaviourLimits::default();
        if limited {
            limits.requests = Some(cada_contract::WindowLimit {
                max: 5,
                window_seconds: 60,
            });
        }
        LinkInfo {
            digest: format!("dtc{depth}"),
            issuer: "did:key:zI".into(),
            subject: "did:key:zS".into(),
            depth,
            budget: None,
            rate_per_second: None,
            limits,
            valid_until: 10_000,
            iat: 1,
        }
    }

    fn info(
        digest: &str,
        limits: cada_contract::BehaviourLimits,
        chain: Vec<LinkInfo>,
    ) -> ContractInfo {
        ContractInfo {
            owner: "did:key:zOwner".into(),
            id: "urn:uuid:x".into(),
            digest: digest.into(),
            scopes: vec![],
            tools: vec![],
            resources: vec![],
            prompts: vec![],
            required_ctx: vec![],
            remaining_secs: 600,
            limits,
            authorization_details: vec![],
            chain,
        }
    }

    /// Issue 24: the STS refuses a token under a chain when ANY link is suspended — a
    /// planner's contract that crossed its requests limit stops its worker's exchanges, as
    /// it stops the worker's proofs at every verifier. Before, only the leaf (`cada.dtc`)
    /// was read, and only when the leaf itself had behaviour limits: the worker kept
    /// getting tokens under a suspended planner.
    #[test]
    fn an_exchange_under_a_chain_with_a_suspended_link_is_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = cada_pipeline::store::Store::open(
                "memory",
                &cada_pipeline::store::StoreOptions::default(),
            )
            .unwrap();
            let fleet = Fleet::new(&store);
            let chain = info(
                "dtc2",
                cada_contract::BehaviourLimits::default(),
                vec![link(0, false), link(1, true), link(2, false)],
            );
            assert!(refuse_suspended(&fleet, &chain).await.is_ok());
            assert!(fleet.suspend("dtc1", "requests").await.unwrap());
            let e = refuse_suspended(&fleet, &chain).await.unwrap_err();
            assert_eq!(e.code(), "contract.not_permitted.behaviour");
            assert_eq!(e.error, "invalid_grant");
            assert!(e.description.contains("link 1"), "{}", e.description);
            // Another chain of the same owner is not refused.
            let other = info(
                "x1",
                cada_contract::BehaviourLimits::default(),
                vec![
                    LinkInfo {
                        digest: "x0".into(),
                        ..link(0, true)
                    },
                    LinkInfo {
                        digest: "x1".into(),
                        ..link(1, true)
                    },
                ],
            );
            assert!(refuse_suspended(&fleet, &other).await.is_ok());
            // A contract alone, suspended: refused as before.
            let alone = info("c", link(0, true).limits, vec![]);
            assert!(fleet.suspend("c", "requests").await.unwrap());
            assert!(refuse_suspended(&fleet, &alone).await.is_err());
        });
    }
}
