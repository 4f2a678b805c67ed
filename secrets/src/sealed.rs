//! The sealed secret bundle: what `cada-owner seal` writes and the enclave installs.
//!
//! ```text
//! bundle  = COSE_Sign1 (tag 18) by the owner's key, kid = the owner's DID URL
//!   payload = { "ct": bstr COSE_Encrypt0, "ctx": bstr context }
//! context = deterministic CBOR map
//!   { "v": 1, "iat": uint, "jkt": enclave signing-key thumbprint, "typ": "cada-sealed-secret",
//!     "hpke": enclave HPKE public key (32 bytes), "name": text, "owner": owner DID,
//!     "usage": SecretUsage }
//! ct      = HPKE-4 COSE_Encrypt0 of the secret value, external_aad = the context bytes
//! ```
//!
//! The context is covered twice: by the AEAD (as `external_aad`, so the ciphertext opens
//! only with exactly this name, usage, enclave and owner) and by the owner's signature (with
//! the ciphertext). The host can neither pair the ciphertext with another usage, nor replay
//! the bundle to another enclave, nor sign it in the owner's place.
use aws_lc_rs::digest::{digest, SHA256};
use cada_contract::{OwnerAlg, OwnerKey, PublicKey};
use cada_protocol::b64;
use cada_protocol::jwk::SigAlg;
use ciborium::Value;
use zeroize::Zeroizing;

use crate::cose::{self, malformed, Encrypt0, Sign1};
use crate::hpke::{HpkeKeyPair, HpkePublicKey};
use crate::{SecretUsage, SecretsError};

/// Largest bundle accepted.
pub const MAX_BUNDLE_LEN: usize = 128 * 1024;
/// Largest secret value.
pub const MAX_VALUE_LEN: usize = 16 * 1024;
/// The context's `typ`.
pub const SEALED_SECRET_TYP: &str = "cada-sealed-secret";
/// How far in the future a bundle's `iat` may lie (clock skew between owner and enclave).
pub const IAT_FUTURE_TOLERANCE_SECS: u64 = 300;

/// The enclave a secret is sealed to, as the owner read it from verified evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealTarget {
    /// The enclave's HPKE public key (from the key binding).
    pub hpke: HpkePublicKey,
    /// The RFC 7638 thumbprint of the enclave's signing key (from the key binding).
    pub jkt: String,
}

/// A sealed bundle with its ciphertext digest.
#[derive(Debug, Clone)]
pub struct SealedBundle {
    /// The bundle bytes (a tagged `COSE_Sign1`).
    pub bytes: Vec<u8>,
    /// base64url SHA-256 of the `COSE_Encrypt0` (the digest the enclave chains).
    pub digest: String,
}

/// The enclave opening a bundle: its keys and the owner it is locked to.
pub struct Recipient<'a> {
    /// The enclave's HPKE key pair.
    pub keys: &'a HpkeKeyPair,
    /// The enclave's signing-key thumbprint.
    pub jkt: &'a str,
    /// The owner the enclave is locked to (its `did:key`); `None`: not locked, and no
    /// bundle is accepted.
    pub owner: Option<&'a str>,
}

/// An opened, verified secret.
pub struct OpenedSecret {
    /// The owner-signed usage.
    pub usage: SecretUsage,
    /// The value (wiped when dropped).
    pub value: Zeroizing<Vec<u8>>,
    /// base64url SHA-256 of the `COSE_Encrypt0`.
    pub digest: String,
    /// The owner's DID.
    pub owner: String,
    /// When the owner sealed it (unix seconds).
    pub iat: u64,
}

impl std::fmt::Debug for OpenedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints the value.
        write!(f, "OpenedSecret({}, {})", self.usage.name, self.digest)
    }
}

/// What a bundle says about itself, read without a key (for `cada-parent secret install`
/// and `cada-owner` output). Nothing here is verified.
#[derive(Debug, Clone)]
pub struct BundleInfo {
    /// The secret's name.
    pub name: String,
    /// The owner DID the context names.
    pub owner: String,
    /// The HPKE key it is sealed to.
    pub hpke: HpkePublicKey,
    /// The signing-key thumbprint it is sealed to.
    pub jkt: String,
    /// The usage.
    pub usage: SecretUsage,
    /// When it was sealed.
    pub iat: u64,
    /// base64url SHA-256 of the `COSE_Encrypt0`.
    pub digest: String,
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

/// The deterministic context bytes (RFC 8949 §4.2.1 key order).
fn context_bytes(
    to: &SealTarget,
    usage: &SecretUsage,
    owner: &str,
    iat: u64,
) -> Result<Vec<u8>, SecretsError> {
    let usage_value = Value::serialized(usage).map_err(|e| malformed("usage", e.to_string()))?;
    Ok(cose::encode(&Value::Map(vec![
        (text("v"), Value::Integer(1.into())),
        (text("iat"), Value::Integer(iat.into())),
        (text("jkt"), text(&to.jkt)),
        (text("typ"), text(SEALED_SECRET_TYP)),
        (text("hpke"), Value::Bytes(to.hpke.as_bytes().to_vec())),
        (text("name"), text(&usage.name)),
        (text("owner"), text(owner)),
        (text("usage"), usage_value),
    ])))
}

fn digest_b64(bytes: &[u8]) -> String {
    b64::encode(digest(&SHA256, bytes))
}

/// Seals `value` for the enclave `to` under `usage`, signed by `owner` (its `did:key`;
/// the enclave compares it with the owner it is locked to).
pub fn seal_bundle(
    owner: &OwnerKey,
    to: &SealTarget,
    usage: &SecretUsage,
    value: &[u8],
    now: u64,
) -> Result<SealedBundle, SecretsError> {
    usage.validate()?;
    if value.is_empty() || value.len() > MAX_VALUE_LEN {
        return Err(SecretsError::TooLarge {
            what: "secret value (1 byte at least)",
            len: value.len(),
            max: MAX_VALUE_LEN,
        });
    }
    if usage.expired_at(now) {
        return Err(SecretsError::Expired(format!(
            "the usage expires at {}, which is not in the future",
            usage.expires_at
        )));
    }
    let did = owner.public_key().did_key();
    let kid = owner.public_key().did_key_url();
    let ctx = context_bytes(to, usage, &did, now)?;
    let ct = cose::seal_encrypt0(&to.hpke, value, &ctx, b"")?;
    let digest = digest_b64(&ct);
    let payload = cose::encode(&Value::Map(vec![
        (text("ct"), Value::Bytes(ct)),
        (text("ctx"), Value::Bytes(ctx)),
    ]));
    let alg = match owner.alg() {
        OwnerAlg::Ed25519 => cose::COSE_ALG_EDDSA,
        OwnerAlg::Es256 => cose::COSE_ALG_ES256,
    };
    let bytes = Sign1::sign(alg, &kid, &payload, |m| {
        owner
            .sign_bytes(m)
            .map_err(|e| SecretsError::Key(e.to_string()))
    })?;
    Ok(SealedBundle { bytes, digest })
}

struct Parsed {
    ct: Vec<u8>,
    ctx: Vec<u8>,
    info: BundleInfo,
}

fn parse(bundle: &[u8]) -> Result<Parsed, SecretsError> {
    parse_payload(Sign1::decode(bundle, MAX_BUNDLE_LEN)?)
}

/// The payload of a decoded bundle: read only after its signature was checked, where it
/// matters (`open_bundle`, `inspect_signed_bundle`).
fn parse_payload(sign1: Sign1) -> Result<Parsed, SecretsError> {
    let Value::Map(p) = cose::decode("bundle payload", &sign1.payload, MAX_BUNDLE_LEN)? else {
        return Err(malformed("bundle payload", "not a map"));
    };
    if p.len() != 2 {
        return Err(malformed("bundle payload", "exactly ct and ctx"));
    }
    let get_bytes = |m: &[(Value, Value)], k: &'static str| match cada_protocol::cbor::map_get(m, k)
    {
        Some(Value::Bytes(b)) => Ok(b.clone()),
        _ => Err(malformed("bundle payload", format!("{k} is a byte string"))),
    };
    let ct = get_bytes(&p, "ct")?;
    let ctx = get_bytes(&p, "ctx")?;
    let Value::Map(c) = cose::decode("context", &ctx, MAX_BUNDLE_LEN)? else {
        return Err(malformed("context", "not a map"));
    };
    if c.len() != 8 {
        return Err(malformed(
            "context",
            "exactly v, iat, jkt, typ, hpke, name, owner, usage",
        ));
    }
    let get = |k: &str| cada_protocol::cbor::map_get(&c, k);
    let uint = |k: &'static str| match get(k) {
        Some(Value::Integer(i)) => u64::try_from(*i).map_err(|_| malformed("context", k)),
        _ => Err(malformed("context", format!("{k} is an unsigned integer"))),
    };
    let txt = |k: &'static str| match get(k) {
        Some(Value::Text(t)) if t.len() <= 512 => Ok(t.clone()),
        _ => Err(malformed(
            "context",
            format!("{k} is text of at most 512 bytes"),
        )),
    };
    if uint("v")? != 1 {
        return Err(SecretsError::Unknown("context version (v) is not 1".into()));
    }
    if txt("typ")? != SEALED_SECRET_TYP {
        return Err(malformed(
            "context",
            format!("typ is not {SEALED_SECRET_TYP}"),
        ));
    }
    let hpke = match get("hpke") {
        Some(Value::Bytes(b)) => HpkePublicKey::from_bytes(b)?,
        _ => return Err(malformed("context", "hpke is a byte string")),
    };
    let usage: SecretUsage = match get("usage") {
        Some(u @ Value::Map(_)) => u
            .deserialized()
            .map_err(|e| malformed("usage", e.to_string()))?,
        _ => return Err(malformed("context", "usage is a map")),
    };
    let info = BundleInfo {
        name: txt("name")?,
        owner: txt("owner")?,
        hpke,
        jkt: txt("jkt")?,
        usage,
        iat: uint("iat")?,
        digest: digest_b64(&ct),
    };
    Ok(Parsed { ct, ctx, info })
}

/// Reads what a bundle says about itself without verifying anything.
pub fn inspect_bundle(bundle: &[u8]) -> Result<BundleInfo, SecretsError> {
    parse(bundle).map(|p| p.info)
}

/// Reads a bundle and checks that `owner` (a `did:key`) signed it: for re-sealing the same
/// name and usage to a new enclave (`cada-owner seal --like`). The ciphertext is not
/// opened (it is sealed to the old enclave's key, which nobody holds any more).
pub fn inspect_signed_bundle(bundle: &[u8], owner: &str) -> Result<BundleInfo, SecretsError> {
    let sign1 = Sign1::decode(bundle, MAX_BUNDLE_LEN)?;
    check_signature(&sign1, owner)?;
    let p = parse_payload(sign1)?;
    if p.info.owner != owner {
        return Err(SecretsError::OtherOwner(format!(
            "the bundle names owner {}, not {owner}",
            p.info.owner
        )));
    }
    Ok(p.info)
}

fn check_signature(sign1: &Sign1, owner: &str) -> Result<(), SecretsError> {
    let signer = sign1.kid.split('#').next().unwrap_or("");
    if signer != owner {
        return Err(SecretsError::OtherOwner(format!(
            "the bundle is signed by {signer}, but this enclave is locked to {owner}"
        )));
    }
    let key = PublicKey::from_did_key(signer)
        .map_err(|e| SecretsError::OtherOwner(format!("the signer is not a did:key owner: {e}")))?;
    let alg_ok = match key.alg() {
        SigAlg::EdDSA | SigAlg::Ed25519 => {
            matches!(sign1.alg, cose::COSE_ALG_EDDSA | cose::COSE_ALG_ED25519)
        }
        SigAlg::ES256 => sign1.alg == cose::COSE_ALG_ES256,
        SigAlg::ES384 => false,
    };
    if !alg_ok
        || !cada_protocol::jws::verify_signature(
            key.alg(),
            key.raw(),
            &sign1.to_be_signed(),
            &sign1.signature,
        )
    {
        return Err(SecretsError::Tampered(
            "the owner's signature over the bundle does not verify".into(),
        ));
    }
    Ok(())
}

/// Verifies and opens a bundle inside the enclave, in this order: the COSE_Sign1's shape and
/// limits (`secret.too_large`, `secret.malformed`); the signer is the locked owner
/// (`secret.other_owner`); the owner's signature (`secret.tampered`) — only then is the
/// signed payload read (`secret.malformed`, `secret.unknown`); the context names the
/// same owner (`secret.other_owner`), this enclave's HPKE key and signing key
/// (`secret.sealed_for_other_enclave`); the usage (`secret.usage_invalid`) and its expiry
/// at `now` (`secret.expired`); the HPKE open with the context as AAD (`secret.tampered`).
pub fn open_bundle(
    bundle: &[u8],
    me: &Recipient<'_>,
    now: u64,
) -> Result<OpenedSecret, SecretsError> {
    let sign1 = Sign1::decode(bundle, MAX_BUNDLE_LEN)?;
    let Some(locked) = me.owner else {
        return Err(SecretsError::OtherOwner(
            "this enclave is not locked to an owner; lock it (cada-owner lock) before \
             installing secrets"
                .into(),
        ));
    };
    check_signature(&sign1, locked)?;
    let p = parse_payload(sign1)?;
    if p.info.owner != locked {
        return Err(SecretsError::OtherOwner(format!(
            "the bundle names owner {}, but this enclave is locked to {locked}",
            p.info.owner
        )));
    }
    if p.info.hpke != me.keys.public() || p.info.jkt != me.jkt {
        return Err(SecretsError::SealedForOtherEnclave(format!(
            "sealed to HPKE key {} / signing key {}, this enclave has {} / {}; re-seal to this \
             enclave's evidence (cada-owner seal)",
            p.info.hpke.to_b64(),
            p.info.jkt,
            me.keys.public().to_b64(),
            me.jkt
        )));
    }
    p.info.usage.validate()?;
    if p.info.usage.name != p.info.name {
        return Err(SecretsError::UsageInvalid {
            field: "name",
            reason: "the usage names another secret than the bundle".into(),
        });
    }
    if p.info.usage.expired_at(now) {
        return Err(SecretsError::Expired(format!(
            "secret {} expired at {}",
            p.info.name, p.info.usage.expires_at
        )));
    }
    if p.info.iat > now.saturating_add(IAT_FUTURE_TOLERANCE_SECS) {
        return Err(SecretsError::Expired(format!(
            "the bundle was sealed at {}, in the future of this enclave's clock ({now})",
            p.info.iat
        )));
    }
    let e = Encrypt0::decode(&p.ct, MAX_BUNDLE_LEN)?;
    let value = e.open(me.keys, &p.ctx, b"")?;
    Ok(OpenedSecret {
        usage: p.info.usage,
        value,
        digest: p.info.digest,
        owner: p.info.owner,
        iat: p.info.iat,
    })
}
