//! Who is asking: the CADA proof of a step-up request or poll, decided by the verifier
//! pipeline (`cada_pipeline::AppState::decide`, rules 1–14 under `--policy`, whose audience
//! is this service's public URL), then locked to this owner.
//!
//! Step by step, each refusal with its code:
//! 1. one `DPoP` header (`pop.missing` 401 without), no `Authorization` (an access token
//!    does not show the enclave's owner lock: `stepup.evidence`), at most one
//!    `CADA-Evidence` that decodes (`stepup.evidence`);
//! 2. a body is bound: the proof's `cada.bd` must be present and equal the SHA-256 of the
//!    body (`pop.body`), and a `Content-Digest` header, when sent, must agree (`pop.body`);
//! 3. the decision (signature, evidence, key binding, `htm`/`htu`, freshness, nonce,
//!    audience and measurements, replay): evidence failures and a key never attested become
//!    `stepup.evidence` (the verifier's code in `rule_code`), `pop.replay` becomes
//!    `stepup.replay`, the rest keep the verifier's code;
//! 4. the attested key's binding names this owner (`owner` in the key binding, written
//!    when the owner locked the enclave): else `stepup.not_owner` (403).
use std::net::IpAddr;

use axum::http::HeaderMap;
use cada_attestation_verifier::decide::{Decision, Refusal, Request, RequestBody};
use cada_attestation_verifier::{UnixTime, VerifyError};
use cada_audit::AuditRecord;
use cada_pipeline::{AppState, OfDecision};
use cada_protocol::envelope::EvidenceEnvelope;
use cada_protocol::mcp;
use cada_protocol::stepup::codes;

use super::error::StepUpError;
use super::store::Filer;

/// A verified proof: the enclave key and the proof's id.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The enclave key.
    pub filer: Filer,
    /// The proof's `jti`.
    pub jti: String,
}

/// The single value of header `name` (two values refuse: a proxy could check one and
/// pass the other).
pub(crate) fn single<'h>(
    headers: &'h HeaderMap,
    name: &str,
) -> Result<Option<&'h str>, StepUpError> {
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => v.to_str().map(Some).map_err(|_| {
            StepUpError::refused(
                400,
                "request.header",
                format!("the {name} header is not ASCII"),
            )
        }),
        (Some(_), Some(_)) => Err(StepUpError::refused(
            400,
            "request.header",
            format!("send one {name} header, not several"),
        )),
    }
}

/// Decides the proof of `method url` (the URL under this service's public URL) with
/// `body`, and checks the owner lock. The decision's audit record (kind `kind`) is
/// appended — in full for an authenticated decision, short and rate-limited otherwise —
/// before anything is answered; an audit failure refuses (`audit.unavailable`).
#[allow(clippy::too_many_arguments)]
pub async fn verify(
    pipeline: &AppState,
    owner_did: &str,
    kind: &'static str,
    method: &str,
    url: &str,
    headers: &HeaderMap,
    body: &[u8],
    peer: IpAddr,
    now: UnixTime,
) -> Result<Verified, StepUpError> {
    let early = |code: &str| AuditRecord {
        time: now.to_string(),
        kind,
        method: Some(method.to_owned()),
        url: Some(url.chars().take(2048).collect()),
        decision: "reject",
        reason: Some(code.to_owned()),
        ..AuditRecord::default()
    };
    let refuse_early = |e: StepUpError| async move {
        // Unauthenticated: short, within the client's rate (never blocks the answer).
        let _ = pipeline.audit_unauthenticated(peer, early(e.code())).await;
        Err(e)
    };
    let dpop = match single(headers, "dpop") {
        Ok(Some(d)) => d,
        Ok(None) => {
            return refuse_early(StepUpError::refused(
                401,
                "pop.missing",
                "send a CADA proof in the DPoP header (the enclave signs it for this URL and \
                 method), with CADA-Evidence",
            ))
            .await
        }
        Err(e) => return refuse_early(e).await,
    };
    if headers.contains_key("authorization") {
        return refuse_early(StepUpError::refused(
            401,
            codes::EVIDENCE,
            "step-up requests are proven with the enclave's evidence (CADA-Evidence), not an \
             access token: the evidence shows the owner the enclave is locked to",
        ))
        .await;
    }
    let evidence = match single(headers, "cada-evidence") {
        Ok(None) => None,
        Ok(Some(text)) => match EvidenceEnvelope::from_header(text) {
            Ok(e) => Some(e),
            Err(e) => {
                return refuse_early(StepUpError::refused(
                    401,
                    codes::EVIDENCE,
                    format!("CADA-Evidence does not decode: {e}"),
                ))
                .await
            }
        },
        Err(e) => return refuse_early(e).await,
    };
    let digest = mcp::body_digest(body);
    let content_digest = match single(headers, "content-digest") {
        Ok(v) => v,
        Err(e) => return refuse_early(e).await,
    };
    if let Some(cd) = content_digest {
        match mcp::content_digest_sha256(cd) {
            Ok(Some(d)) if d == digest => {}
            Ok(_) | Err(_) => {
                return refuse_early(StepUpError::refused(
                    400,
                    "pop.body",
                    "Content-Digest is not the sha-256 of this body",
                ))
                .await
            }
        }
    }
    // A request's body must be bound: a proof without cada.bd could carry any body.
    let bd = cada_protocol::token::parse_compact(dpop)
        .ok()
        .and_then(|p| p.claims.cada.bd);
    if method == "POST" && bd.is_none() {
        return refuse_early(StepUpError::refused(
            401,
            "pop.body",
            "the proof does not bind the body: sign it with the body's digest (cada.bd, \
             Content-Digest)",
        ))
        .await;
    }
    let engine = pipeline.engine.load();
    let req_body = RequestBody {
        digest,
        calls: Some(Vec::new()),
        tool_arguments: Some(Vec::new()),
    };
    let decision = pipeline
        .decide(
            &engine,
            &Request {
                method,
                url,
                dpop,
                access_token: None,
                evidence: evidence.as_ref(),
                contract: None,
                body: Some(&req_body),
            },
            now,
        )
        .await;
    let mut record = AuditRecord::of_decision(kind, now, &decision, method, url, dpop);
    let outcome = match &decision {
        Decision::Refuse(r) => Err(map_refusal(r, pipeline, &engine, now)),
        Decision::Accept(a) if a.token.is_some() => Err(StepUpError::refused(
            401,
            codes::EVIDENCE,
            "the key was attested by an access token, which does not show the enclave's \
             owner lock: send CADA-Evidence",
        )),
        Decision::Accept(a) if a.key.owner.as_deref() != Some(owner_did) => {
            Err(StepUpError::refused(
                403,
                codes::NOT_OWNER,
                format!(
                    "the enclave is locked to {}, not to this service's owner {owner_did}: only \
                     enclaves locked to this owner may ask it for grants",
                    a.key.owner.as_deref().unwrap_or("no owner")
                ),
            ))
        }
        Decision::Accept(a) => Ok(Verified {
            filer: Filer {
                jkt: a.key.jkt.clone(),
                did: a.key.did.clone(),
                platform: a.key.platform.to_string(),
                measurements: a.key.measurements.clone(),
                measurement_digest: cada_pipeline::measurement_digest(&a.key),
                emulated: a.key.emulated,
            },
            jti: a.claims.jti.clone(),
        }),
    };
    if let Err(e) = &outcome {
        record.decision = "reject";
        record.reason = Some(e.code().to_owned());
    }
    if let Err(e) = pipeline.audit_decision(peer, &decision, record).await {
        tracing::error!(error = %e, "audit log unavailable: the step-up request is refused");
        return Err(StepUpError::refused(
            503,
            "audit.unavailable",
            "the audit log cannot be written, so nothing is filed or answered; retry later",
        ));
    }
    outcome
}

/// The answer to a refused decision.
fn map_refusal(
    r: &Refusal,
    pipeline: &AppState,
    engine: &cada_pipeline::Engine,
    now: UnixTime,
) -> StepUpError {
    let verifier_code = r.code();
    let evidence = r.rule() == 4
        || matches!(
            r.error,
            VerifyError::EvidenceRequired { .. } | VerifyError::UnknownEvidence { .. }
        )
        || verifier_code == "binding";
    let (status, code) = if r.is_unavailable() {
        (503, verifier_code)
    } else if evidence {
        (401, codes::EVIDENCE)
    } else if matches!(r.error, VerifyError::Replay { .. }) {
        (401, codes::REPLAY)
    } else if r.is_bad_request() {
        (400, verifier_code)
    } else if matches!(
        r.error,
        VerifyError::NoAudience(_) | VerifyError::MeasurementsNotAllowed(_)
    ) {
        (403, verifier_code)
    } else {
        (401, verifier_code)
    };
    let message = match code {
        codes::EVIDENCE => format!(
            "[{verifier_code}] {}: send CADA-Evidence with the proof (evidence of an enclave \
             locked to this owner)",
            r.error
        ),
        codes::REPLAY => format!(
            "[{verifier_code}] {}: every request and poll needs a fresh proof",
            r.error
        ),
        _ => format!("[{verifier_code}] rule {}: {}", r.rule(), r.error),
    };
    let nonce = (engine.policy().token.require_nonce || verifier_code == "pop.nonce")
        .then(|| pipeline.issue_nonce(now));
    StepUpError::Refused {
        status,
        code: code.to_owned(),
        message,
        rule_code: (code != verifier_code).then(|| verifier_code.to_owned()),
        retry_after: (status == 503).then_some(1),
        dpop_nonce: nonce,
    }
}
