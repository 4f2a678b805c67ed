//! CADA trust contracts: who allowed an enclave key to do what, until when — and how they
//! take it back.
//!
//! * [`OwnerKey`] — the owner's Ed25519 (default) or ES256 key, its `did:key` or `did:web`,
//!   its key file.
//! * [`Grant`] → [`Grant::issue`] — a contract: a W3C Verifiable Credential (Data Model
//!   2.0) secured as a JWT per VC-JOSE-COSE (`typ: vc+jwt`, `cty: vc`, `kid` = the owner
//!   key's DID URL), whose subject is an enclave key's `did:key` or a measurement set.
//! * [`Contract::verify`] → [`VerifiedContract`] — signature under a [`TrustedOwners`] key,
//!   fields, validity window; then [`VerifiedContract::check_subject`],
//!   [`VerifiedContract::check_status`] and [`VerifiedContract::permits`].
//! * [`details`] — one-transaction grants: RFC 9396 `authorization_details` of type
//!   `mcp_tool_call` ([`AuthorizationDetail`], argument constraints read exactly by the
//!   crate's own bounded JSON reader, [`CallArguments`]), and `stepUp`; both need contract
//!   schema 2 (`"cadaSchema": 2`, [`CONTRACT_SCHEMA`]).
//! * [`delegation`] — delegated contracts: an enclave signs, for another enclave's key, a
//!   subset of its own contract ([`check_within`]); chains `root~D1~…` verify with
//!   [`verify_chain`].
//! * [`OwnerLock`] — the owner's one-time claim on an enclave key (`typ: cada-lock+jwt`).
//! * [`StatusList`] — revocation by W3C Bitstring Status List, signed by the same owner.
//! * [`did`] — `did:key` encode/decode for Ed25519, P-256 and P-384; `did:web` URLs and
//!   documents.
//!
//! No I/O and no clock: every time is a parameter ([`UnixSeconds`]). Every input has a hard
//! size limit, and every refusal is a [`ContractError`] with a stable code.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod contract;
pub mod delegation;
pub mod details;
pub mod did;
mod error;
mod jose;
mod key;
mod lock;
mod owners;
mod reinstate;
mod status;
pub mod time;

pub use contract::{
    check_measurement_set, digest_of, is_secret_name, new_urn_uuid, AuditLevel, BehaviourLimits,
    Contract, Grant, MeasurementSet, OpenGrant, RequestView, SecretGrant, Subject,
    VerifiedContract, WindowLimit, CONTRACT_SCHEMA, CONTRACT_TYPE, MAX_AUDIENCES, MAX_CONTRACT_LEN,
    MAX_MEASUREMENT_SETS, MAX_METHODS, MAX_NAMES, MAX_OPEN_GRANTS, MAX_SECRET_GRANTS,
    MAX_WINDOW_SECS, VC_CONTEXT,
};
pub use delegation::{
    check_within, evidence_nonce, narrow_grant, split_chain, verify_chain, DelegationClaim,
    DelegationRules, Draft, VerifiedChain, VerifiedLink, MAX_CHAIN_LEN, MAX_CHAIN_LINKS,
    MAX_DELEGATION_LEN,
};
pub use details::{
    is_step_up_request, ArgConstraint, ArgValue, AuthorizationDetail, CallArguments, JsonNumber,
    GRANT_CODES,
};
pub use did::PublicKey;
pub use error::{ContractError, Denied};
pub use jose::{decode_unverified, CTY, TYP};
pub use key::{OwnerAlg, OwnerKey, MAX_KEY_FILE_LEN};
pub use lock::{
    OwnerLock, VerifiedLock, LOCK_FUTURE_TOLERANCE_SECS, LOCK_TYP, MAX_LOCK_LEN,
    MAX_LOCK_LIFETIME_SECS,
};
pub use owners::{TrustedOwners, MAX_DID_DOCUMENT_LEN, MAX_TRUSTED_KEYS};
pub use reinstate::{
    Reinstatement, VerifiedReinstatement, MAX_REINSTATE_ID_LEN, MAX_REINSTATE_LEN,
    MAX_REINSTATE_LIFETIME_SECS, REINSTATE_TYP,
};
pub use status::{
    StatusEntry, StatusList, Succession, VerifiedStatusList, FUTURE_TOLERANCE_SECS,
    MAX_BITSTRING_BYTES, MAX_STATUS_LIST_LEN, MIN_BITSTRING_BYTES, STATUS_ENTRY_TYPE,
    STATUS_LIST_CREDENTIAL_TYPE, STATUS_LIST_TYPE, STATUS_PURPOSE,
};
pub use time::UnixSeconds;
