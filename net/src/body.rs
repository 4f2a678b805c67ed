//! Body wrappers: a request body with a whole-body deadline, and a response body that tells
//! the connection's clock when the answer is done.
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, Response, StatusCode};
use http_body::{Frame, SizeHint};
use tokio::time::Instant;

use crate::conn::RequestGuard;
use crate::deadline::Deadline;

/// The error a body yields once its deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the body deadline")]
pub(crate) struct BodyTimeout;

/// A request body that fails with [`BodyTimeout`] once `deadline` passes before its end,
/// and records that in `expired` (the connection then answers 408). A body that is waited
/// for is woken by the process's deadline sweeper ([`crate::deadline`]), at most
/// [`crate::deadline::GRANULARITY`] after the deadline, instead of a tokio timer armed for
/// every request.
pub(crate) struct DeadlineBody<B> {
    inner: B,
    deadline: Deadline,
    expired: Arc<AtomicBool>,
}

impl<B> DeadlineBody<B> {
    pub(crate) fn new(inner: B, deadline: Instant, expired: Arc<AtomicBool>) -> Self {
        DeadlineBody {
            inner,
            deadline: Deadline::at(deadline.into_std()),
            expired,
        }
    }

    fn expire(&mut self) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        self.expired.store(true, Ordering::Release);
        Poll::Ready(Some(Err(BodyTimeout.into())))
    }
}

impl<B> http_body::Body for DeadlineBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.expired.load(Ordering::Acquire) {
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        // Checked on every frame, not only when waiting: a body trickled one byte at a time
        // is always "ready" and would otherwise never see its deadline.
        if std::time::Instant::now() >= this.deadline.instant() {
            return this.expire();
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(f) => Poll::Ready(f.map(|r| r.map_err(Into::into))),
            Poll::Pending => {
                if this.deadline.poll_elapsed(cx).is_ready() {
                    this.expire()
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that holds the request's guard until hyper has taken its last frame
/// (or dropped it), so the connection's idle clock starts when the answer is done.
pub(crate) struct GuardBody {
    pub(crate) inner: Body,
    pub(crate) _guard: RequestGuard,
}

impl http_body::Body for GuardBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `408` problem JSON for a body that missed its deadline; the connection is closed after
/// it (the rest of the body may still be on its way).
pub(crate) fn body_timeout_response(limit: Duration) -> Response<Body> {
    let mut r = axum::response::IntoResponse::into_response(crate::Problem::new(
        StatusCode::REQUEST_TIMEOUT,
        "body-timeout",
        format!(
            "the request body did not arrive within {} ms; send it at once",
            limit.as_millis()
        ),
    ));
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}
