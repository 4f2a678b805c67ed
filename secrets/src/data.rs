//! Data a service encrypts to an agent's attested key (`cada-verify seal`), opened inside
//! the enclave under a contract's `opens` grant (`cada-parent open`).
//!
//! The envelope is an HPKE-4 `COSE_Encrypt0` (draft-ietf-cose-hpke-23) whose
//! `external_aad` is the deterministic CBOR map
//! `{ "v": 1, "jkt": <signing-key thumbprint>, "typ": "cada-sealed-data",
//!    "hpke": <HPKE public key>, "label": <label> }`: it opens only in the enclave whose two
//! keys the service verified, and only under the label it was sealed for. The envelope does
//! not carry the context; both sides compute it.
use ciborium::Value;
use zeroize::Zeroizing;

use crate::cose::{self, Encrypt0};
use crate::hpke::HpkeKeyPair;
use crate::sealed::SealTarget;
use crate::SecretsError;

/// Largest data envelope.
pub const MAX_DATA_ENVELOPE_LEN: usize = 256 * 1024;
/// Largest plaintext a service may seal.
pub const MAX_DATA_LEN: usize = 200 * 1024;
/// The context's `typ`.
pub const SEALED_DATA_TYP: &str = "cada-sealed-data";

/// Whether `label` is a label: `[a-z0-9][a-z0-9_-]{0,63}`, like a secret name.
pub fn valid_label(label: &str) -> bool {
    crate::usage::valid_name(label)
}

fn check_label(label: &str) -> Result<(), SecretsError> {
    if valid_label(label) {
        Ok(())
    } else {
        Err(SecretsError::UsageInvalid {
            field: "label",
            reason: "a label is 1–64 characters of a-z, 0-9, '_' and '-'".into(),
        })
    }
}

/// The external_aad of a data envelope for `label` to `to`.
pub fn data_context(to: &SealTarget, label: &str) -> Vec<u8> {
    let t = |s: &str| Value::Text(s.to_owned());
    cose::encode(&Value::Map(vec![
        (t("v"), Value::Integer(1.into())),
        (t("jkt"), t(&to.jkt)),
        (t("typ"), t(SEALED_DATA_TYP)),
        (t("hpke"), Value::Bytes(to.hpke.as_bytes().to_vec())),
        (t("label"), t(label)),
    ]))
}

/// Encrypts `data` to the enclave `to` for `label`.
pub fn seal_data(to: &SealTarget, label: &str, data: &[u8]) -> Result<Vec<u8>, SecretsError> {
    check_label(label)?;
    if data.len() > MAX_DATA_LEN {
        return Err(SecretsError::TooLarge {
            what: "data",
            len: data.len(),
            max: MAX_DATA_LEN,
        });
    }
    cose::seal_encrypt0(&to.hpke, data, &data_context(to, label), b"")
}

/// Opens a data envelope inside the enclave for `label` (the caller has checked the
/// contract's grant). Another enclave's envelope is `secret.sealed_for_other_enclave`
/// (by `kid`) or `secret.tampered`; another label is `secret.tampered`.
pub fn open_data(
    keys: &HpkeKeyPair,
    jkt: &str,
    label: &str,
    envelope: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
    check_label(label)?;
    let e = Encrypt0::decode(envelope, MAX_DATA_ENVELOPE_LEN)?;
    let me = SealTarget {
        hpke: keys.public(),
        jkt: jkt.to_owned(),
    };
    e.open(keys, &data_context(&me, label), b"")
}
