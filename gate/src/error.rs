//! The gate's one error type (start-up and configuration; request refusals are answers,
//! see [`crate::refusal`]).

/// What stops the gate from starting.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// A flag or file is unusable; the message says which and how to fix it.
    #[error("{0}")]
    Usage(String),
}
