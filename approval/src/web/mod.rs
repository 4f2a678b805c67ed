//! The owner's approval page: passkey (WebAuthn) sign-in, sessions, CSRF, safe rendering.
//!
//! The page reads and answers step-up requests through the [`Requests`] trait, which
//! `crate::stepup::Service` implements. [`Web::router`] gives its routes, to merge with the
//! step-up API's. `docs/approval.md` (the page).

pub mod credentials;
pub mod error;
mod pages;
pub mod render;
mod requests;
mod server;
pub mod state;
pub mod webauthn;

pub use error::WebError;
pub use requests::{
    DecideError, Decision, DecisionOutcome, PageEvent, RecordError, RefusalView, RequestStatus,
    RequestView, Requests, MAX_MINUTES,
};
pub use server::{Clock, CodeSink, Web, WebConfig, CSP, MAX_BODY, REFERRER_POLICY};
pub use state::RegistrationCode;

#[cfg(test)]
mod tests;
