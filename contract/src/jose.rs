//! Credentials secured as JWTs per VC-JOSE-COSE: `typ: vc+jwt`, `cty: vc`, `kid` = the DID
//! URL of the owner key, payload = the credential (with the JWT registered claims that
//! mirror it). Splitting and the signature check are cada-protocol's [`jws`] module.
use cada_protocol::jwk::SigAlg;
use cada_protocol::jws;
use cada_protocol::ProtocolError;
use serde::{Deserialize, Serialize};

use crate::error::clip;
use crate::{ContractError, OwnerKey, TrustedOwners};

/// The JOSE `typ` of a credential secured as a JWT.
pub const TYP: &str = "vc+jwt";
/// The JOSE `cty` of a credential secured as a JWT.
pub const CTY: &str = "vc";

/// Which document a failure is about: the codes differ.
#[derive(Clone, Copy)]
pub(crate) enum Doc {
    Contract,
    StatusList,
    Lock,
    Reinstate,
}

impl Doc {
    fn name(self) -> &'static str {
        match self {
            Doc::Contract => "trust contract",
            Doc::StatusList => "status list",
            Doc::Lock => "owner lock",
            Doc::Reinstate => "reinstatement",
        }
    }

    /// The JOSE `typ` this document must carry.
    fn typ(self) -> &'static str {
        match self {
            Doc::Contract | Doc::StatusList => TYP,
            Doc::Lock => crate::lock::LOCK_TYP,
            Doc::Reinstate => crate::reinstate::REINSTATE_TYP,
        }
    }

    /// The JOSE `cty` it carries (credentials only).
    fn cty(self) -> Option<&'static str> {
        match self {
            Doc::Contract | Doc::StatusList => Some(CTY),
            Doc::Lock | Doc::Reinstate => None,
        }
    }

    pub(crate) fn malformed(self, what: &'static str, detail: impl Into<String>) -> ContractError {
        match self {
            Doc::Contract => ContractError::malformed(what, detail),
            Doc::StatusList => ContractError::StatusMalformed {
                detail: format!("{what}: {}", detail.into()),
            },
            Doc::Lock => ContractError::Lock {
                detail: format!("malformed {what}: {}", detail.into()),
            },
            Doc::Reinstate => ContractError::Reinstate {
                detail: format!("malformed {what}: {}", detail.into()),
            },
        }
    }

    fn too_large(self, len: usize, max: usize) -> ContractError {
        match self {
            Doc::Contract => ContractError::TooLarge {
                what: "trust contract",
                len,
                max,
            },
            Doc::StatusList => ContractError::StatusMalformed {
                detail: format!("{len} bytes, more than the limit of {max}"),
            },
            Doc::Lock | Doc::Reinstate => ContractError::TooLarge {
                what: self.name(),
                len,
                max,
            },
        }
    }

    fn untrusted(self, detail: String) -> ContractError {
        match self {
            Doc::Contract => ContractError::UntrustedOwner { detail },
            Doc::StatusList => ContractError::StatusForged { detail },
            Doc::Lock => ContractError::Lock { detail },
            Doc::Reinstate => ContractError::Reinstate { detail },
        }
    }

    fn bad_signature(self, kid: &str) -> ContractError {
        match self {
            Doc::Contract => ContractError::Signature { kid: clip(kid) },
            Doc::StatusList => ContractError::StatusForged {
                detail: format!("its signature does not verify under {}", clip(kid)),
            },
            Doc::Lock => ContractError::Lock {
                detail: format!("its signature does not verify under {}", clip(kid)),
            },
            Doc::Reinstate => ContractError::Reinstate {
                detail: format!("its signature does not verify under {}", clip(kid)),
            },
        }
    }
}

/// The protected header as written.
#[derive(Serialize)]
struct HeaderOut<'a> {
    alg: &'a str,
    typ: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cty: Option<&'a str>,
    kid: &'a str,
}

/// The protected header as received. Unknown members are ignored (RFC 7515 §4), `crit`
/// refuses the JWS, a repeated member refuses it.
#[derive(Deserialize)]
struct HeaderIn {
    alg: String,
    typ: String,
    #[serde(default)]
    cty: Option<String>,
    kid: String,
    #[serde(default, deserialize_with = "present")]
    crit: Option<serde_json::Value>,
}

/// `Some(value)` for a member that is present, whatever its value (so `null` counts).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// Signs `payload` (the credential JSON) as a `vc+jwt` with the owner key.
pub(crate) fn sign(key: &OwnerKey, payload: &[u8]) -> Result<String, ContractError> {
    sign_as(Doc::Contract, key, payload)
}

/// Signs `payload` with the owner key under the `typ` (and `cty`) of `doc`.
pub(crate) fn sign_as(doc: Doc, key: &OwnerKey, payload: &[u8]) -> Result<String, ContractError> {
    let header = HeaderOut {
        alg: key.alg().jose().as_str(),
        typ: doc.typ(),
        cty: doc.cty(),
        kid: key.kid(),
    };
    let header = serde_json::to_vec(&header).map_err(|e| ContractError::Key(e.to_string()))?;
    let mut out = jws::signing_input(&header, payload);
    let sig = key.sign(out.as_bytes())?;
    out.push('.');
    out.push_str(&cada_protocol::b64::encode(sig));
    Ok(out)
}

/// A `vc+jwt` whose signature verified under a trusted owner key.
pub(crate) struct Verified {
    /// The owner DID the key belongs to.
    pub owner: String,
    /// The key's DID URL.
    pub kid: String,
    /// The payload bytes (not yet parsed).
    pub payload: Vec<u8>,
}

fn protocol(doc: Doc, e: ProtocolError) -> ContractError {
    match e {
        ProtocolError::TooLarge { len, max, .. } => doc.too_large(len, max),
        other => doc.malformed("JWS", other.to_string()),
    }
}

/// Splits, checks the header, finds the key `kid` names among the trusted owners and
/// verifies the signature. The payload is parsed only after this succeeds.
pub(crate) fn verify(
    doc: Doc,
    compact: &str,
    max_len: usize,
    owners: &TrustedOwners,
) -> Result<Verified, ContractError> {
    let parts = jws::split_compact(doc.name(), compact, max_len).map_err(|e| protocol(doc, e))?;
    let header: HeaderIn = serde_json::from_slice(&parts.header)
        .map_err(|e| doc.malformed("header", e.to_string()))?;
    jws::refuse_crit(header.crit.as_ref()).map_err(|e| doc.malformed("header", e.to_string()))?;
    if header.typ != doc.typ() {
        return Err(doc.malformed(
            "header",
            format!("typ is {:?}, it must be {:?}", clip(&header.typ), doc.typ()),
        ));
    }
    if let Some(cty) = &header.cty {
        if Some(cty.as_str()) != doc.cty() {
            return Err(doc.malformed("header", format!("cty {:?} is not allowed here", clip(cty))));
        }
    }
    let alg = SigAlg::parse(&header.alg).map_err(|e| doc.malformed("header", e.to_string()))?;
    let Some((owner, key)) = owners.key(&header.kid) else {
        let did = header.kid.split('#').next().unwrap_or("");
        let detail = if owners.is_trusted(did) {
            format!(
                "the key {} is not among the trusted keys of owner {}",
                clip(&header.kid),
                clip(did)
            )
        } else {
            format!(
                "{} is signed by {}, which is not a trusted owner (trusted: {})",
                doc.name(),
                clip(did),
                owners.dids().join(", ")
            )
        };
        return Err(doc.untrusted(detail));
    };
    if alg.curve() != key.alg().curve() {
        return Err(doc.malformed(
            "header",
            format!(
                "alg {} cannot be used with the {} key {}",
                alg.as_str(),
                key.alg().curve(),
                clip(&header.kid)
            ),
        ));
    }
    if !jws::verify_signature(
        alg,
        key.raw(),
        parts.signing_input.as_bytes(),
        &parts.signature,
    ) {
        return Err(doc.bad_signature(&header.kid));
    }
    Ok(Verified {
        owner: owner.to_owned(),
        kid: header.kid,
        payload: parts.payload,
    })
}

/// The header and payload of a `vc+jwt`, decoded but not verified (for `inspect`).
pub fn decode_unverified(
    compact: &str,
    max_len: usize,
) -> Result<(serde_json::Value, serde_json::Value), ContractError> {
    let parts =
        jws::split_compact("JWS", compact, max_len).map_err(|e| protocol(Doc::Contract, e))?;
    let h = serde_json::from_slice(&parts.header)
        .map_err(|e| ContractError::malformed("header", e.to_string()))?;
    let p = serde_json::from_slice(&parts.payload)
        .map_err(|e| ContractError::malformed("payload", e.to_string()))?;
    Ok((h, p))
}
