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

    /// A signature that verifies, refused for its high-s spelling (`s > n/2`).
    fn high_s(self, alg: SigAlg, kid: &str) -> ContractError {
        let detail = format!(
            "its {} signature under {} is in its high-s form (s > n/2), which is refused: an \
             ECDSA signature has two valid spellings and only the low-s one (s ≤ n/2) is \
             accepted; re-sign it with cada-owner, which writes low-s",
            alg.as_str(),
            clip(kid)
        );
        match self {
            Doc::Contract => ContractError::SignatureHighS {
                alg: alg.as_str(),
                kid: clip(kid),
            },
            Doc::StatusList => ContractError::StatusForged { detail },
            Doc::Lock => ContractError::Lock { detail },
            Doc::Reinstate => ContractError::Reinstate { detail },
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
    // One spelling per signed content (finding 4 of docs/reviews/delegation-3.md): the
    // digest of the compact identifies a contract everywhere.
    if jws::ecdsa_high_s(alg, &parts.signature) {
        return Err(doc.high_s(alg, &header.kid));
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

/// The protected header of a delegated contract: `vc+jwt`, `cty: vc`, the delegator key's
/// `alg` and `kid` (`did:key:z…#z…`).
pub(crate) fn delegation_header(alg: SigAlg, kid: &str) -> Result<Vec<u8>, ContractError> {
    serde_json::to_vec(&HeaderOut {
        alg: alg.as_str(),
        typ: TYP,
        cty: Some(CTY),
        kid,
    })
    .map_err(|e| ContractError::delegation("delegation.malformed", e.to_string()))
}

/// A delegated contract whose signature verified under the `did:key` its `kid` names.
pub(crate) struct KeyVerified {
    /// The signer's `did:key`.
    pub did: String,
    /// The signer's key.
    pub key: crate::PublicKey,
    /// The header's `kid`.
    pub kid: String,
    /// The payload bytes (not yet parsed).
    pub payload: Vec<u8>,
}

/// Splits a delegated contract, checks its header (`vc+jwt`, `cty: vc`, no `crit`, `kid`
/// = `did:key:z…#z…` with the same key in both places) and verifies the signature under
/// the key that `did:key` names — never a key the payload carries.
pub(crate) fn verify_did_key(compact: &str, max_len: usize) -> Result<KeyVerified, ContractError> {
    let bad = |d: String| ContractError::delegation("delegation.malformed", d);
    let parts =
        jws::split_compact("delegated contract", compact, max_len).map_err(|e| match e {
            ProtocolError::TooLarge { len, max, .. } => ContractError::delegation(
                "delegation.too_large",
                format!("a delegated contract is {len} bytes, more than the limit of {max}"),
            ),
            other => bad(other.to_string()),
        })?;
    let header: HeaderIn =
        serde_json::from_slice(&parts.header).map_err(|e| bad(format!("header: {e}")))?;
    jws::refuse_crit(header.crit.as_ref()).map_err(|e| bad(format!("header: {e}")))?;
    if header.typ != TYP || header.cty.as_deref().is_some_and(|c| c != CTY) {
        return Err(bad(format!(
            "header: typ must be {TYP:?} (and cty, if present, {CTY:?})"
        )));
    }
    let alg = SigAlg::parse(&header.alg).map_err(|e| bad(format!("header: {e}")))?;
    let (did, fragment) = header.kid.split_once('#').ok_or_else(|| {
        bad(format!(
            "header: kid {:?} must be the delegator's did:key URL (did:key:z…#z…)",
            clip(&header.kid)
        ))
    })?;
    let key = crate::PublicKey::from_did_key(did).map_err(|e| {
        ContractError::delegation(
            "delegation.issuer",
            format!(
                "the kid {:?} does not name an enclave key's did:key: {e}",
                clip(&header.kid)
            ),
        )
    })?;
    if fragment != key.multibase() {
        return Err(bad(format!(
            "header: kid {:?} must be did:key:z…#z… with the same key after the #",
            clip(&header.kid)
        )));
    }
    if alg.curve() != key.alg().curve() {
        return Err(bad(format!(
            "header: alg {} cannot be used with the {} key {}",
            alg.as_str(),
            key.alg().curve(),
            clip(did)
        )));
    }
    if !jws::verify_signature(
        alg,
        key.raw(),
        parts.signing_input.as_bytes(),
        &parts.signature,
    ) {
        return Err(ContractError::delegation(
            "delegation.signature",
            format!(
                "the delegated contract's signature does not verify under {}: it was altered \
                 or signed by another key",
                clip(did)
            ),
        ));
    }
    if jws::ecdsa_high_s(alg, &parts.signature) {
        return Err(ContractError::delegation(
            "delegation.signature",
            format!(
                "the delegated contract's {} signature under {} is in its high-s form \
                 (s > n/2), which is refused: an ECDSA signature has two valid spellings and \
                 a delegation is identified by the digest of its text, so only the low-s one \
                 (s ≤ n/2) is accepted; the delegating enclave must normalize s",
                alg.as_str(),
                clip(did)
            ),
        ));
    }
    Ok(KeyVerified {
        did: did.to_owned(),
        key,
        kid: header.kid,
        payload: parts.payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        Contract, Grant, OwnerAlg, OwnerLock, PublicKey, Reinstatement, StatusList, Subject,
    };
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING,
    };
    use cada_protocol::b64;

    const NOW: u64 = 1_750_000_000;

    /// The curve orders, big-endian, written out here so the test does not trust the
    /// library's own constants.
    const P256_N: &str = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";
    const P384_N: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf\
                          581a0db248b0a77aecec196accc52973";

    /// `compact` with its ECDSA signature's `s` replaced by `n − s`: the other valid
    /// spelling of the same signature (what the reviewer's `high_s` builds).
    fn other_spelling(compact: &str) -> String {
        let (input, sig) = compact.rsplit_once('.').unwrap();
        let mut sig = b64::decode("sig", sig, 512).unwrap();
        let n = if sig.len() == 64 { P256_N } else { P384_N };
        let n: Vec<u8> = (0..n.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&n[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!(sig.len(), 2 * n.len());
        let half = n.len();
        let mut borrow = 0i16;
        for i in (0..half).rev() {
            let mut v = i16::from(n[i]) - i16::from(sig[half + i]) - borrow;
            borrow = i16::from(v < 0);
            if v < 0 {
                v += 256;
            }
            sig[half + i] = u8::try_from(v).unwrap();
        }
        format!("{input}.{}", b64::encode(&sig))
    }

    fn contract(owner: &OwnerKey) -> String {
        let mut g = Grant::new(
            Subject::Key(OwnerKey::generate(OwnerAlg::Ed25519).unwrap().did().into()),
            vec!["https://api.example.com/".into()],
            vec!["GET".into()],
            NOW - 60,
            NOW + 3600,
        );
        g.budget = Some(2);
        g.issue(owner, NOW - 60).unwrap()
    }

    /// Finding 4 of docs/reviews/delegation-3.md: the other ECDSA spelling of an ES256
    /// owner's contract verified, as another contract (another `cada.dtc`, so fresh fleet
    /// counters and no suspension). Now every owner-signed document (contract, status list,
    /// lock, reinstatement) is accepted in its low-s spelling only, which `cada-owner`
    /// always writes.
    #[test]
    fn the_high_s_spelling_of_an_owner_signature_is_refused() {
        let owner = OwnerKey::generate(OwnerAlg::Es256).unwrap();
        let trusted = TrustedOwners::from_did_key(owner.did()).unwrap();
        for _ in 0..16 {
            let c = contract(&owner);
            let sig = b64::decode("sig", c.rsplit_once('.').unwrap().1, 512).unwrap();
            assert!(
                !jws::ecdsa_high_s(SigAlg::ES256, &sig),
                "cada-owner writes low-s"
            );
            let v = Contract::verify(&c, &trusted, NOW).unwrap();
            let high = other_spelling(&c);
            assert_ne!(digest_of_text(&c), digest_of_text(&high));
            let e = Contract::verify(&high, &trusted, NOW).unwrap_err();
            assert_eq!(e.code(), "contract.signature", "{e}");
            assert!(e.to_string().contains("high-s"), "{e}");
            assert!(e.to_string().contains(v.kid()), "{e}");
        }
        let list = StatusList::new("https://owner.example/status/1", 0)
            .unwrap()
            .issue(&owner, NOW - 10, None)
            .unwrap();
        StatusList::verify(&list, &trusted, NOW).unwrap();
        let e = StatusList::verify(&other_spelling(&list), &trusted, NOW).unwrap_err();
        assert_eq!(e.code(), "contract.status_forged", "{e}");
        assert!(e.to_string().contains("high-s"), "{e}");

        let enclave = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let lock = OwnerLock::issue(&owner, enclave.did(), NOW, 300).unwrap();
        OwnerLock::verify(&lock, enclave.did(), None, NOW).unwrap();
        let e = OwnerLock::verify(&other_spelling(&lock), enclave.did(), None, NOW).unwrap_err();
        assert_eq!(e.code(), "contract.lock", "{e}");
        assert!(e.to_string().contains("high-s"), "{e}");

        let r = Reinstatement::issue(&owner, "dtc", "sid", NOW, 60).unwrap();
        Reinstatement::verify(&r, &trusted, NOW).unwrap();
        let e = Reinstatement::verify(&other_spelling(&r), &trusted, NOW).unwrap_err();
        assert_eq!(e.code(), "contract.reinstate", "{e}");
        assert!(e.to_string().contains("high-s"), "{e}");
    }

    fn digest_of_text(c: &str) -> String {
        crate::digest_of(c)
    }

    /// Finding 4, delegations: an enclave's ES256 (TPM) or ES384 delegation has one
    /// spelling too. `Draft::assemble` writes low-s; the other spelling is refused
    /// `delegation.signature`.
    #[test]
    fn the_high_s_spelling_of_a_delegation_signature_is_refused() {
        let rng = SystemRandom::new();
        for (alg, signing) in [
            (SigAlg::ES256, &ECDSA_P256_SHA256_FIXED_SIGNING),
            (SigAlg::ES384, &ECDSA_P384_SHA384_FIXED_SIGNING),
        ] {
            let k = EcdsaKeyPair::generate(signing).unwrap();
            let public = PublicKey::ec(alg, k.public_key().as_ref()).unwrap();
            let header = delegation_header(alg, &public.did_key_url()).unwrap();
            for i in 0..16u8 {
                let input = jws::signing_input(&header, &[b'{', b'}', i]);
                let mut sig = k.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec();
                jws::ecdsa_low_s(alg, &mut sig);
                let low = format!("{input}.{}", b64::encode(&sig));
                assert!(verify_did_key(&low, 4096).is_ok());
                let e = verify_did_key(&other_spelling(&low), 4096).err().unwrap();
                assert_eq!(e.code(), "delegation.signature", "{e}");
                assert!(e.to_string().contains("high-s"), "{e}");
            }
        }
    }

    /// The reviewer's note on finding 4: base64url is decoded strictly, so a signature has
    /// no second spelling in its encoding either — no padding, no non-zero trailing bits,
    /// no standard-alphabet characters, no whitespace.
    #[test]
    fn a_signature_has_one_base64url_spelling() {
        for alg in [OwnerAlg::Ed25519, OwnerAlg::Es256] {
            let owner = OwnerKey::generate(alg).unwrap();
            let trusted = TrustedOwners::from_did_key(owner.did()).unwrap();
            let c = contract(&owner);
            Contract::verify(&c, &trusted, NOW).unwrap();
            let (input, sig) = c.rsplit_once('.').unwrap();
            // 64 bytes are 86 characters: the last one carries 4 unused bits.
            assert_eq!(sig.len(), 86);
            let last = sig.chars().last().unwrap();
            let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let pos = alphabet.find(last).unwrap();
            assert_eq!(pos & 0b1111, 0, "a canonical encoder leaves them zero");
            for bits in 1..16 {
                let other = alphabet.chars().nth(pos | bits).unwrap();
                let respelled = format!("{input}.{}{other}", &sig[..85]);
                let e = Contract::verify(&respelled, &trusted, NOW).unwrap_err();
                assert_eq!(e.code(), "contract.malformed", "{respelled}: {e}");
            }
            for respelled in [
                format!("{c}=="),
                format!("{c} "),
                format!("{input}.{}", sig.replace('-', "+").replace('_', "/")),
            ] {
                if respelled == c {
                    continue;
                }
                assert!(Contract::verify(&respelled, &trusted, NOW).is_err());
            }
            // The header and payload segments are decoded the same way.
            let (h, rest) = c.split_once('.').unwrap();
            let respelled = format!("{h}=.{rest}");
            assert!(Contract::verify(&respelled, &trusted, NOW).is_err());
        }
    }
}
