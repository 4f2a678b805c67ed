//! Parent ↔ enclave frames: a u32 big-endian length, then one CBOR map.
//!
//! Requests are `{id, op, body}`; responses `{id, ok}` or `{id, err: {code, message}}`.
//! Ids let several requests be in flight on one connection; responses may come out of order.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{cbor, ProtocolError};

/// Hard maximum of one frame's payload.
pub const MAX_FRAME_LEN: usize = 1024 * 1024;

/// Operation names.
pub mod ops {
    /// Identity, platform and measurements.
    pub const DESCRIBE: &str = "describe";
    /// Fresh evidence for a caller nonce.
    pub const ATTEST: &str = "attest";
    /// A CB-PoP for one request.
    pub const SIGN_POP: &str = "sign_pop";
    /// Lock the enclave to an owner (once), with an owner-signed lock.
    pub const LOCK_OWNER: &str = "lock_owner";
    /// Install an owner-signed trust contract (with its status list, if it has one).
    pub const INSTALL_CONTRACT: &str = "install_contract";
    /// The installed contracts.
    pub const CONTRACTS: &str = "contracts";
    /// One HTTPS call the enclave makes itself with a sealed secret ([`crate::egress`]).
    pub const SECRET_CALL: &str = "secret_call";
    /// Install an owner-sealed secret ([`crate::sealed`]).
    pub const SECRET_INSTALL: &str = "secret_install";
    /// Open data a service encrypted to the enclave, under a contract's grant ([`crate::sealed`]).
    pub const OPEN: &str = "open";
    /// Sign a delegated contract for another enclave's key, within an installed contract
    /// (issue 24, [`super::DelegateRequest`]).
    pub const DELEGATE: &str = "delegate";
}

/// Error codes the enclave answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not a well-formed request.
    Malformed,
    /// The frame exceeded [`MAX_FRAME_LEN`].
    TooLarge,
    /// The `op` is not known.
    UnknownOp,
    /// The body does not fit the operation.
    BadRequest,
    /// The enclave's delegation policy refused to sign.
    PolicyDenied,
    /// The platform (NSM, SEV firmware) failed.
    Platform,
    /// The enclave is overloaded; retry later.
    Busy,
    /// A trust contract or owner lock was refused, or no live contract permits the request;
    /// the message starts with the rule's stable code (`contract.*`).
    ContractDenied,
    /// A secret call was refused (not granted, outside the sealed usage, TLS to the
    /// upstream failed, …); the message starts with the stable code (`secret.*`, see
    /// [`crate::egress::codes`]).
    SecretDenied,
}

/// A request frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Caller-chosen id, echoed in the response.
    pub id: u64,
    /// Operation name, see [`ops`].
    pub op: String,
    /// Operation body.
    pub body: ciborium::Value,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// What to fix, for people.
    pub message: String,
}

/// A response frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The request's id (0 when the request was too broken to have one).
    pub id: u64,
    /// Present on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<ciborium::Value>,
    /// Present on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err: Option<WireError>,
}

/// `attest` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestRequest {
    /// Caller nonce (at most 512 bytes, Nitro's limit).
    #[serde(with = "serde_bytes")]
    pub nonce: Vec<u8>,
}

/// `attest` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestResponse {
    /// CBOR evidence envelope.
    #[serde(with = "serde_bytes")]
    pub envelope: Vec<u8>,
}

/// `sign_pop` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignPopRequest {
    /// HTTP method.
    pub htm: String,
    /// Absolute target URL.
    pub htu: String,
    /// Access token the request carries (the enclave hashes it into `ath`).
    #[serde(default)]
    pub access_token: Option<String>,
    /// Server-provided DPoP nonce.
    #[serde(default)]
    pub nonce: Option<String>,
    /// Context digests.
    #[serde(default)]
    pub ctx: BTreeMap<String, String>,
    /// base64url SHA-256 of the request body, to bind the proof to it (`cada.bd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bd: Option<String>,
    /// The MCP calls of that body; each `tools/call` must be granted by the contract that
    /// authorizes the proof (`cada.mcp`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp: Vec<crate::mcp::McpCall>,
    /// Set when the proof is for an STS token endpoint (`htu`): the token it will be
    /// exchanged for. A locked enclave then signs it only under a contract that permits
    /// both this request and a token for that resource with those scopes, so the proof
    /// names (`cada.dtc`) a contract the STS can grant the token under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<TokenExchange>,
    /// The task the request is part of (`cada.task`; checked by the enclave with
    /// [`crate::trace::check_task`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The W3C traceparent of the request (`cada.tp`; checked by the enclave with
    /// [`crate::trace::TraceParent::parse`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// What a token-endpoint proof will be exchanged for (RFC 8693 with RFC 8707 `resource`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenExchange {
    /// The resource the token is asked for: an absolute URL in normal form, no query.
    pub resource: String,
    /// The scopes asked for (empty: all the contract grants). At most
    /// [`TokenExchange::MAX_SCOPES`], each at most [`TokenExchange::MAX_SCOPE_LEN`] bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// The RFC 9396 `authorization_details` the exchange asks for (issue 23), exactly the
    /// JSON text sent to the STS: an array of one-transaction grants, at most
    /// [`TokenExchange::MAX_AUTHORIZATION_DETAILS_LEN`] bytes. A locked enclave then signs
    /// the proof only under a contract each of whose asked details lies within one of its
    /// own (`AuthorizationDetail::is_within`), located under `resource`; the contract's
    /// audiences need not cover the STS (a one-transaction grant has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<String>,
}

impl TokenExchange {
    /// Most scopes in one exchange.
    pub const MAX_SCOPES: usize = 32;
    /// Longest scope.
    pub const MAX_SCOPE_LEN: usize = 128;
    /// Longest `authorization_details` text (the STS's own limit).
    pub const MAX_AUTHORIZATION_DETAILS_LEN: usize = 16 * 1024;
}

/// `sign_pop` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignPopResponse {
    /// The compact JWS.
    pub dpop: String,
    /// `cada.att` of the proof: digest of the evidence that binds the key.
    pub att: String,
    /// `cada.dtc` of the proof: the contract that authorized it, once locked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtc: Option<String>,
}

/// `describe` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeResponse {
    /// Platform name.
    pub platform: String,
    /// `did:key` of the signing key.
    pub did: String,
    /// RFC 7638 thumbprint of the signing key.
    pub jkt: String,
    /// Public JWK of the signing key.
    pub jwk: String,
    /// Measurements, name (e.g. `PCR0`) → lowercase hex.
    pub measurements: BTreeMap<String, String>,
    /// Signatures made so far.
    pub seq: u64,
    /// The enclave's HPKE public key (base64url of 32 X25519 bytes, suite `HPKE-4`), also in
    /// the key binding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpke: Option<String>,
    /// Whether this platform keeps keys in host memory (`sim`, `sim-snp`): whoever runs the
    /// host can read every secret, so secrets are refused unless `dev_secrets`.
    #[serde(default)]
    pub keys_in_host_memory: bool,
    /// Whether the enclave was started with `--dev-secrets` (development only): it accepts
    /// secrets although its keys live in host memory.
    #[serde(default)]
    pub dev_secrets: bool,
}

/// `lock_owner` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockOwnerRequest {
    /// The owner-signed lock (compact JWS, `typ: cada-lock+jwt`).
    pub lock: String,
}

/// `lock_owner` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockOwnerResponse {
    /// The owner's DID, now in the key binding.
    pub owner: String,
    /// New evidence whose binding names the owner (CBOR envelope).
    #[serde(with = "serde_bytes")]
    pub envelope: Vec<u8>,
}

/// `install_contract` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallContractRequest {
    /// The compact trust contract (`typ: vc+jwt`).
    pub contract: String,
    /// The owner-signed status list the contract names, when it has a status entry.
    #[serde(default)]
    pub status_list: Option<String>,
    /// More owner-signed status lists, for a delegation chain (`contract` = `root~…~leaf`)
    /// whose links name other lists than `status_list` (issue 24). Each link's entry is
    /// checked against the newest list held for its URL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status_lists: Vec<String>,
}

/// `delegate` body (issue 24): sign, with the enclave's own key, a delegated contract for
/// the key `subject` that is within the installed contract `parent` in every dimension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegateRequest {
    /// `cada.dtc` of an installed, live contract of this enclave (an owner contract or a
    /// delegated leaf) whose `delegation` rules allow delegating.
    pub parent: String,
    /// The delegatee's `did:key` (the worker enclave's signing key).
    pub subject: String,
    /// JSON text: the narrowing, a `credentialSubject`-like object (docs/delegation.md);
    /// a member left out is the parent's.
    pub grant: String,
    /// End of the delegation's validity, seconds since the epoch (at most the parent's).
    pub valid_until: u64,
    /// The delegation's index in the owner's status list; `None`: the next free index of
    /// the parent's `delegation.statusRange`. An index this enclave gave before is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_index: Option<u64>,
    /// The task the delegation is for (chained with the `delegate` event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}

impl DelegateRequest {
    /// Longest `grant` text.
    pub const MAX_GRANT_LEN: usize = 32 * 1024;
}

/// `delegate` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegateResponse {
    /// The whole chain, compacts joined by `~`, root first, the new delegation last: what
    /// the delegatee installs and sends as `CADA-Contract`.
    pub chain: String,
    /// `cada.dtc` of the new delegation.
    pub digest: String,
    /// Its index in the owner's status list.
    pub status_index: u64,
}

/// One installed contract (`install_contract` and `contracts` answers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractSummary {
    /// `cada.dtc` of proofs it authorizes.
    pub digest: String,
    /// The credential id.
    pub id: String,
    /// Its name, if the owner gave one.
    #[serde(default)]
    pub name: Option<String>,
    /// Audience URL prefixes.
    pub audiences: Vec<String>,
    /// End of validity, seconds since the epoch.
    pub valid_until: u64,
    /// Proofs signed under it so far.
    pub used: u64,
    /// For a delegation (issue 24): the digests of the links above it, root first (what
    /// its proofs carry as `cada.dch`); empty for an owner contract.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
}

/// `contracts` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractsResponse {
    /// The owner the enclave is locked to, if any.
    #[serde(default)]
    pub owner: Option<String>,
    /// Installed contracts, most recent first.
    pub contracts: Vec<ContractSummary>,
    /// The latest authority events in the signature hash chain (lock, installs, refusals),
    /// oldest first, at most 64.
    #[serde(default)]
    pub events: Vec<ChainEvent>,
}

/// An authority event in the enclave's signature hash chain. Its entry is
/// `head = SHA-256(prev ‖ seq ‖ len‖"cada-event" ‖ len‖kind ‖ len‖detail ‖ at)`, next to
/// the proofs' `SHA-256(prev ‖ seq ‖ len‖jti ‖ len‖htm ‖ len‖htu ‖ iat)` (lengths 4-byte
/// big-endian, numbers 8-byte big-endian).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainEvent {
    /// Position in the chain (shared with proofs' `cada.seq`).
    pub seq: u64,
    /// `lock`, `install`, `revoke`, `refusal`, `grant.used`, `sign_failed` or `delegate`
    /// (others, e.g. of sealed secrets, may follow).
    pub kind: String,
    /// The owner DID (lock), the contract digest (install, revoke: an owner's list revoked
    /// it), `code method url` (refusal to sign), `code install digest` (refused install) or
    /// `identifier digest` (a proof took the single-use grant `identifier` of that
    /// contract), or `seq jti` (a device key, e.g. a TPM, refused to sign the proof chained
    /// at `seq`), or `digest subject parent [task]` (a delegation this enclave signed).
    pub detail: String,
    /// Seconds since the epoch.
    pub at: u64,
    /// base64url chain head after this entry.
    pub head: String,
}

/// Encodes one frame: 4-byte big-endian length, then the CBOR of `msg`.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtocolError> {
    let mut out = vec![0u8; 4];
    ciborium::ser::into_writer(msg, &mut out).map_err(|e| ProtocolError::Cbor {
        what: "frame",
        detail: e.to_string(),
    })?;
    let len = out.len() - 4;
    let prefix = u32::try_from(len)
        .ok()
        .filter(|_| len <= MAX_FRAME_LEN)
        .ok_or(ProtocolError::TooLarge {
            what: "frame",
            len,
            max: MAX_FRAME_LEN,
        })?;
    out[..4].copy_from_slice(&prefix.to_be_bytes());
    Ok(out)
}

/// Reads the length from a frame header, refusing lengths over [`MAX_FRAME_LEN`].
pub fn frame_len(header: [u8; 4]) -> Result<usize, ProtocolError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_LEN {
        return Err(ProtocolError::TooLarge {
            what: "frame",
            len,
            max: MAX_FRAME_LEN,
        });
    }
    Ok(len)
}

/// Decodes a frame payload (without its length prefix) into a message.
pub fn decode_payload<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, ProtocolError> {
    cbor::decode("frame", payload, MAX_FRAME_LEN)
}

/// Converts a body value into an operation's typed body.
pub fn body<T: serde::de::DeserializeOwned>(value: &ciborium::Value) -> Result<T, ProtocolError> {
    value
        .deserialized()
        .map_err(|e| ProtocolError::invalid("request body", e.to_string()))
}

/// Converts a typed answer into a body value.
pub fn to_value<T: Serialize>(msg: &T) -> Result<ciborium::Value, ProtocolError> {
    ciborium::Value::serialized(msg).map_err(|e| ProtocolError::Cbor {
        what: "response body",
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_limits() {
        let req = Request {
            id: 7,
            op: ops::ATTEST.into(),
            body: to_value(&AttestRequest { nonce: vec![1, 2] }).unwrap(),
        };
        let f = encode_frame(&req).unwrap();
        let len = frame_len(f[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, f.len() - 4);
        let back: Request = decode_payload(&f[4..]).unwrap();
        assert_eq!(back, req);
        let b: AttestRequest = body(&back.body).unwrap();
        assert_eq!(b.nonce, vec![1, 2]);
        assert!(frame_len([0xff; 4]).is_err());
        assert!(decode_payload::<Request>(&[0xa0]).is_err());
    }

    /// Issue 23: an exchange carries the details it asks for as their exact text; without
    /// them the body is what an older enclave reads.
    #[test]
    fn an_exchange_carries_its_authorization_details_text_exactly() {
        let text = r#"[{"type":"mcp_tool_call","amount":1.50}]"#;
        let x = TokenExchange {
            resource: "https://mcp.example/".into(),
            scopes: vec![],
            authorization_details: Some(text.into()),
        };
        let back: TokenExchange = body(&to_value(&x).unwrap()).unwrap();
        assert_eq!(back.authorization_details.as_deref(), Some(text));
        let plain = TokenExchange {
            authorization_details: None,
            ..x
        };
        let v = to_value(&plain).unwrap();
        assert_eq!(v.as_map().map(Vec::len), Some(1));
        assert_eq!(body::<TokenExchange>(&v).unwrap(), plain);
    }
}
