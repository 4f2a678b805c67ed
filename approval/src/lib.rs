//! The owner's approval service (`cada-owner serve`): step-up requests filed by enclaves
//! locked to this owner (`stepup`), the owner's passkey-protected approval page (`web`), and
//! the one-transaction grants an approval signs with the owner key. `docs/approval.md`.
#![forbid(unsafe_code)]

pub mod stepup;
pub mod web;
