//! The owner's approval page: passkey (WebAuthn) sign-in, sessions, CSRF, safe rendering.
//!
//! The page reads and answers step-up requests through the [`Requests`] trait, which
//! `crate::stepup::Service` implements. `docs/approval.md` (the page).

mod requests;

pub use requests::{
    DecideError, Decision, DecisionOutcome, RefusalView, RequestStatus, RequestView, Requests,
    MAX_MINUTES,
};
pub mod error;
pub mod render;
pub mod webauthn;

pub use error::WebError;
