//! The two endpoints enclaves call: `POST /v1/step-up` and `GET /v1/step-up/{id}`.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use cada_protocol::stepup::{
    codes, is_request_id, parse_error_code, StepUpRequest, MAX_REQUEST_BODY, STEP_UP_PATH,
};

use super::error::StepUpError;
use super::{verify, Service};

/// The router of the step-up API (state: the service).
pub fn router(svc: Arc<Service>) -> Router {
    Router::new()
        .route(STEP_UP_PATH, post(file))
        .route(&format!("{STEP_UP_PATH}/{{id}}"), get(poll))
        .with_state(svc)
}

fn peer(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |c| c.0.ip())
}

/// `POST /v1/step-up`.
async fn file(State(svc): State<Arc<Service>>, req: Request) -> Response {
    match file_inner(&svc, req).await {
        // 201 also for a repeat of a pending identical call (its id): the plan's one
        // success status, so agents need not tell the two apart.
        Ok((created, _new)) => {
            let mut r = (StatusCode::CREATED, axum::Json(&created)).into_response();
            if let Ok(v) = HeaderValue::from_str(&created.poll) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => {
            if !matches!(e.code(), codes::RATE_LIMITED) {
                svc.metrics.count("refused");
            }
            e.into_response()
        }
    }
}

async fn file_inner(
    svc: &Service,
    req: Request,
) -> Result<(cada_protocol::stepup::StepUpCreated, bool), StepUpError> {
    let ip = peer(&req);
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_REQUEST_BODY)
        .await
        .map_err(|_| {
            StepUpError::refused(
                413,
                codes::TOO_LARGE,
                format!("a step-up request body is at most {MAX_REQUEST_BODY} bytes"),
            )
        })?;
    let url = format!("{}{}", svc.public, parts.uri.path());
    let now = svc.now();
    let who = verify::verify(
        &svc.pipeline,
        svc.owner_did(),
        "stepup.proof",
        "POST",
        &url,
        &parts.headers,
        &bytes,
        ip,
        now,
    )
    .await?;
    let request = StepUpRequest::parse(&bytes).map_err(|e| {
        let code = parse_error_code(&e);
        StepUpError::refused(
            if code == codes::TOO_LARGE { 413 } else { 400 },
            code,
            format!("the step-up request: {e}"),
        )
    })?;
    let contract = verify::single(&parts.headers, "cada-contract")?;
    svc.file(who.filer, request, contract).await
}

/// `GET /v1/step-up/{id}`.
async fn poll(State(svc): State<Arc<Service>>, req: Request) -> Response {
    match poll_inner(&svc, req).await {
        Ok(status) => {
            let mut r = axum::Json(&status).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => {
            svc.metrics.count("refused");
            e.into_response()
        }
    }
}

async fn poll_inner(
    svc: &Service,
    req: Request,
) -> Result<cada_protocol::stepup::StepUpStatus, StepUpError> {
    let ip = peer(&req);
    let path = req.uri().path().to_owned();
    let id = path
        .strip_prefix(STEP_UP_PATH)
        .and_then(|p| p.strip_prefix('/'))
        .unwrap_or_default()
        .to_owned();
    let url = format!("{}{path}", svc.public);
    let now = svc.now();
    let who = verify::verify(
        &svc.pipeline,
        svc.owner_did(),
        "stepup.proof",
        "GET",
        &url,
        req.headers(),
        b"",
        ip,
        now,
    )
    .await?;
    if !is_request_id(&id) {
        return Err(StepUpError::Unknown(id.chars().take(64).collect()));
    }
    svc.poll(&id, &who.filer).await
}
