//! Revocation: W3C Bitstring Status List v1.0. A contract's `credentialStatus` is a
//! `BitstringStatusListEntry` (list URL + index, purpose `revocation`); the list is a
//! `BitstringStatusListCredential` signed by the same owner, also a `vc+jwt`, whose
//! `encodedList` is multibase base64url (`u…`) of the GZIP of the bitstring. Index 0 is
//! the most significant bit of the first byte; a set bit means revoked.
use std::io::{Read, Write};

use aws_lc_rs::digest::{digest, SHA256};
use cada_protocol::b64;
use cada_protocol::url::HttpUrl;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};

use crate::contract::VC_CONTEXT;
use crate::error::clip;
use crate::jose::{self, Doc};
use crate::time::{self as t, UnixSeconds};
use crate::{ContractError, OwnerKey, TrustedOwners};

/// The `type` of a contract's `credentialStatus`.
pub const STATUS_ENTRY_TYPE: &str = "BitstringStatusListEntry";
/// The credential type of a status list (beside `VerifiableCredential`).
pub const STATUS_LIST_CREDENTIAL_TYPE: &str = "BitstringStatusListCredential";
/// The `type` of a status list's `credentialSubject`.
pub const STATUS_LIST_TYPE: &str = "BitstringStatusList";
/// The only status purpose CADA uses.
pub const STATUS_PURPOSE: &str = "revocation";
/// Smallest bitstring: 16 KiB (131,072 entries), as the specification requires for
/// group privacy.
pub const MIN_BITSTRING_BYTES: usize = 16 * 1024;
/// Largest bitstring accepted: 1 MiB (8,388,608 entries). Decompression stops here, so a
/// GZIP bomb costs at most this much memory.
pub const MAX_BITSTRING_BYTES: usize = 1024 * 1024;
/// Largest compact status list accepted.
pub const MAX_STATUS_LIST_LEN: usize = 2 * 1024 * 1024;
/// How far a list's `validFrom` may lie ahead of the checker's clock (clocks differ; a
/// list from a few seconds ahead is no less the owner's word).
pub const FUTURE_TOLERANCE_SECS: u64 = 60;

/// Where a contract's revocation bit lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusEntry {
    /// The status list credential's URL (its `id`, where it is published).
    pub list: String,
    /// The contract's index in it.
    pub index: u64,
}

/// `credentialStatus` as written and read.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct StatusEntryJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    status_purpose: String,
    status_list_index: String,
    status_list_credential: String,
}

/// Checks a status list URL: an absolute https URL (http only to a loopback host) in
/// normal form, without query.
fn check_list_url(url: &str, bad: impl Fn(String) -> ContractError) -> Result<(), ContractError> {
    let u = HttpUrl::parse_canonical(url).map_err(|e| bad(format!("{:?}: {e}", clip(url))))?;
    if u.as_str() != url {
        return Err(bad(format!("{:?} must not carry a query", clip(url))));
    }
    if !(u.scheme() == "https" || u.has_loopback_host()) {
        return Err(bad(format!(
            "{:?} must be https (http only to a loopback host)",
            clip(url)
        )));
    }
    Ok(())
}

impl StatusEntry {
    /// An entry at `index` of the list published at `list`.
    pub fn new(list: &str, index: u64) -> Result<Self, ContractError> {
        check_list_url(list, |d| ContractError::malformed("credentialStatus", d))?;
        if index >= (MAX_BITSTRING_BYTES as u64) * 8 {
            return Err(ContractError::malformed(
                "credentialStatus",
                format!("index {index} is beyond the largest list ({MAX_BITSTRING_BYTES} bytes)"),
            ));
        }
        Ok(StatusEntry {
            list: list.to_owned(),
            index,
        })
    }

    pub(crate) fn to_json(&self) -> StatusEntryJson {
        StatusEntryJson {
            id: Some(format!("{}#{}", self.list, self.index)),
            kind: STATUS_ENTRY_TYPE.into(),
            status_purpose: STATUS_PURPOSE.into(),
            status_list_index: self.index.to_string(),
            status_list_credential: self.list.clone(),
        }
    }

    pub(crate) fn from_json(j: &StatusEntryJson) -> Result<Self, ContractError> {
        let m = |d: String| ContractError::malformed("credentialStatus", d);
        if j.kind != STATUS_ENTRY_TYPE {
            return Err(m(format!("type must be {STATUS_ENTRY_TYPE}")));
        }
        if j.status_purpose != STATUS_PURPOSE {
            return Err(m(format!(
                "statusPurpose {:?} is not supported (only {STATUS_PURPOSE:?})",
                clip(&j.status_purpose)
            )));
        }
        let i = &j.status_list_index;
        if i.is_empty()
            || i.len() > 10
            || !i.bytes().all(|b| b.is_ascii_digit())
            || (i.len() > 1 && i.starts_with('0'))
        {
            return Err(m(format!(
                "statusListIndex {:?} must be a decimal integer string",
                clip(i)
            )));
        }
        let index: u64 = i.parse().map_err(|_| m("statusListIndex".into()))?;
        if j.id.as_ref().is_some_and(|id| id.len() > 4200) {
            return Err(m("id too long".into()));
        }
        StatusEntry::new(&j.status_list_credential, index)
    }
}

/// A status list being built or updated by its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusList {
    id: String,
    bits: Vec<u8>,
}

/// The status list credential as written and read.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListPayload {
    #[serde(rename = "@context")]
    context: Vec<String>,
    id: String,
    #[serde(rename = "type")]
    types: Vec<String>,
    issuer: String,
    #[serde(rename = "validFrom")]
    valid_from: String,
    #[serde(
        rename = "validUntil",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    valid_until: Option<String>,
    #[serde(rename = "credentialSubject")]
    subject: ListSubject,
    iss: String,
    jti: String,
    iat: u64,
    nbf: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ListSubject {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    status_purpose: String,
    encoded_list: String,
}

fn bit(bits: &[u8], index: u64) -> Option<bool> {
    let byte = usize::try_from(index / 8).ok()?;
    bits.get(byte).map(|b| b & (0x80 >> (index % 8)) != 0)
}

impl StatusList {
    /// An empty (nothing revoked) list to be published at `url`, with room for at least
    /// `entries` contracts (at least 131,072: the specification's 16 KiB minimum).
    pub fn new(url: &str, entries: u64) -> Result<Self, ContractError> {
        check_list_url(url, |d| ContractError::malformed("status list id", d))?;
        let bytes = usize::try_from(entries.div_ceil(8))
            .unwrap_or(usize::MAX)
            .max(MIN_BITSTRING_BYTES);
        if bytes > MAX_BITSTRING_BYTES {
            return Err(ContractError::malformed(
                "status list",
                format!("at most {} entries", MAX_BITSTRING_BYTES * 8),
            ));
        }
        Ok(StatusList {
            id: url.to_owned(),
            bits: vec![0; bytes],
        })
    }

    /// The list a verified status list credential carries, to update and re-issue.
    pub fn from_verified(v: &VerifiedStatusList) -> Self {
        StatusList {
            id: v.id.clone(),
            bits: v.bits.clone(),
        }
    }

    /// The URL the list is published at (its credential `id`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How many entries the list holds.
    pub fn entries(&self) -> u64 {
        self.bits.len() as u64 * 8
    }

    /// Sets the revocation bit at `index` (revocation is final).
    pub fn revoke(&mut self, index: u64) -> Result<(), ContractError> {
        let entries = self.entries();
        let byte = usize::try_from(index / 8)
            .ok()
            .and_then(|i| self.bits.get_mut(i))
            .ok_or_else(|| ContractError::StatusMismatch {
                detail: format!("index {index} is beyond the list's {entries} entries"),
            })?;
        *byte |= 0x80 >> (index % 8);
        Ok(())
    }

    /// Whether the bit at `index` is set.
    pub fn is_revoked(&self, index: u64) -> Result<bool, ContractError> {
        bit(&self.bits, index).ok_or_else(|| ContractError::StatusMismatch {
            detail: format!(
                "index {index} is beyond the list's {} entries",
                self.entries()
            ),
        })
    }

    /// Signs the list with the owner key: a compact `vc+jwt` valid from `now` (and until
    /// `valid_until`, if given; verifiers refuse it after that).
    pub fn issue(
        &self,
        key: &OwnerKey,
        now: UnixSeconds,
        valid_until: Option<UnixSeconds>,
    ) -> Result<String, ContractError> {
        if valid_until.is_some_and(|u| u <= now) {
            return Err(ContractError::malformed(
                "status list",
                "validUntil must be after now",
            ));
        }
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        gz.write_all(&self.bits)
            .and_then(|()| gz.flush())
            .map_err(|e| ContractError::malformed("status list", e.to_string()))?;
        let compressed = gz
            .finish()
            .map_err(|e| ContractError::malformed("status list", e.to_string()))?;
        let payload = ListPayload {
            context: vec![VC_CONTEXT.into()],
            id: self.id.clone(),
            types: vec![
                "VerifiableCredential".into(),
                STATUS_LIST_CREDENTIAL_TYPE.into(),
            ],
            issuer: key.did().into(),
            valid_from: t::format(now),
            valid_until: valid_until.map(t::format),
            subject: ListSubject {
                id: format!("{}#list", self.id),
                kind: STATUS_LIST_TYPE.into(),
                status_purpose: STATUS_PURPOSE.into(),
                encoded_list: format!("u{}", b64::encode(compressed)),
            },
            iss: key.did().into(),
            jti: self.id.clone(),
            iat: now,
            nbf: now,
            exp: valid_until,
        };
        let bytes = serde_json::to_vec(&payload)
            .map_err(|e| ContractError::malformed("status list", e.to_string()))?;
        if bytes.len() > MAX_STATUS_LIST_LEN / 2 {
            return Err(ContractError::malformed(
                "status list",
                "the encoded list is too large to publish",
            ));
        }
        check_list(&bytes, key.did())?;
        jose::sign(key, &bytes)
    }

    /// Verifies a compact status list: signature under a trusted owner key, every field,
    /// bounded decompression, and that it is valid at `now` (its `validFrom` at most
    /// [`FUTURE_TOLERANCE_SECS`] ahead, its `validUntil`, if any, not passed). Whether it is
    /// the list a contract names, by that contract's owner, and fresh enough is
    /// [`crate::VerifiedContract::check_status`].
    pub fn verify(
        compact: &str,
        owners: &TrustedOwners,
        now: UnixSeconds,
    ) -> Result<VerifiedStatusList, ContractError> {
        let v = jose::verify(Doc::StatusList, compact, MAX_STATUS_LIST_LEN, owners)?;
        let mut list = check_list(&v.payload, &v.owner)?;
        list.digest = b64::encode(digest(&SHA256, compact.as_bytes()));
        if list.valid_from > now.saturating_add(FUTURE_TOLERANCE_SECS) {
            return Err(ContractError::StatusStale {
                detail: format!(
                    "the list is valid only from {} (now {now})",
                    list.valid_from
                ),
            });
        }
        list.check_fresh(list.valid_from.min(now), now, u64::MAX)?;
        Ok(list)
    }
}

/// Parses and checks a status list payload signed by a key of `owner`.
fn check_list(bytes: &[u8], owner: &str) -> Result<VerifiedStatusList, ContractError> {
    let bad = |d: String| ContractError::StatusMalformed { detail: d };
    let p: ListPayload =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("credential: {e}")))?;
    if p.context.first().map(String::as_str) != Some(VC_CONTEXT) || p.context.len() > 8 {
        return Err(bad(format!("the first @context must be {VC_CONTEXT}")));
    }
    if p.types.len() > 8
        || !p.types.iter().any(|t| t == "VerifiableCredential")
        || !p.types.iter().any(|t| t == STATUS_LIST_CREDENTIAL_TYPE)
    {
        return Err(bad(format!(
            "type must be [\"VerifiableCredential\", \"{STATUS_LIST_CREDENTIAL_TYPE}\"]"
        )));
    }
    check_list_url(&p.id, |d| bad(format!("id: {d}")))?;
    if p.jti != p.id {
        return Err(bad("jti must equal the credential id".into()));
    }
    if p.issuer != owner || p.iss != owner {
        return Err(ContractError::StatusForged {
            detail: format!(
                "it names issuer {} but is signed by a key of {}",
                clip(&p.issuer),
                clip(owner)
            ),
        });
    }
    let valid_from =
        t::parse(&p.valid_from).ok_or_else(|| bad("validFrom is not RFC 3339".into()))?;
    let valid_until = match &p.valid_until {
        None => None,
        Some(s) => Some(t::parse(s).ok_or_else(|| bad("validUntil is not RFC 3339".into()))?),
    };
    if p.nbf != valid_from || p.exp != valid_until {
        return Err(bad("nbf and exp must equal validFrom and validUntil".into()));
    }
    if valid_until.is_some_and(|u| u <= valid_from) {
        return Err(bad("validUntil must be after validFrom".into()));
    }
    let s = p.subject;
    if s.kind != STATUS_LIST_TYPE {
        return Err(bad(format!(
            "credentialSubject.type must be {STATUS_LIST_TYPE}"
        )));
    }
    if s.status_purpose != STATUS_PURPOSE {
        return Err(ContractError::StatusMismatch {
            detail: format!(
                "statusPurpose is {:?}, contracts are revoked through {STATUS_PURPOSE:?}",
                clip(&s.status_purpose)
            ),
        });
    }
    if s.id.len() > 4200 {
        return Err(bad("credentialSubject.id too long".into()));
    }
    let bits = decode_list(&s.encoded_list)?;
    Ok(VerifiedStatusList {
        id: p.id,
        issuer: owner.to_owned(),
        valid_from,
        valid_until,
        bits,
        digest: String::new(),
    })
}

/// `u` + base64url(GZIP(bitstring)) → bitstring, decompressing at most
/// [`MAX_BITSTRING_BYTES`] + 1 bytes.
fn decode_list(encoded: &str) -> Result<Vec<u8>, ContractError> {
    let bad = |d: String| ContractError::StatusMalformed { detail: d };
    let Some(text) = encoded.strip_prefix('u') else {
        return Err(bad(
            "encodedList must be multibase base64url (starting with u)".into(),
        ));
    };
    let gz = b64::decode("encodedList", text, MAX_STATUS_LIST_LEN)
        .map_err(|e| bad(format!("encodedList: {e}")))?;
    let mut bits = Vec::with_capacity(MIN_BITSTRING_BYTES);
    GzDecoder::new(gz.as_slice())
        .take(MAX_BITSTRING_BYTES as u64 + 1)
        .read_to_end(&mut bits)
        .map_err(|e| bad(format!("encodedList is not GZIP: {e}")))?;
    if bits.len() > MAX_BITSTRING_BYTES {
        return Err(bad(format!(
            "the bitstring is larger than {MAX_BITSTRING_BYTES} bytes"
        )));
    }
    if bits.len() < MIN_BITSTRING_BYTES {
        return Err(bad(format!(
            "the bitstring is {} bytes, less than the {MIN_BITSTRING_BYTES}-byte minimum",
            bits.len()
        )));
    }
    Ok(bits)
}

/// How a status list relates to the newest one held for its URL
/// ([`VerifiedStatusList::succeeds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Succession {
    /// The very list held (same digest): keep it; it was seen again.
    Same,
    /// A newer list: it replaces the one held.
    Newer,
}

/// A status list whose signature, fields and bitstring were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedStatusList {
    id: String,
    issuer: String,
    valid_from: UnixSeconds,
    valid_until: Option<UnixSeconds>,
    bits: Vec<u8>,
    digest: String,
}

impl VerifiedStatusList {
    /// The list's URL (credential `id`).
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The owner DID that signed it.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
    /// When the owner issued it (`validFrom`).
    pub fn valid_from(&self) -> UnixSeconds {
        self.valid_from
    }
    /// Its `validUntil`, if any.
    pub fn valid_until(&self) -> Option<UnixSeconds> {
        self.valid_until
    }
    /// How many entries it holds.
    pub fn entries(&self) -> u64 {
        self.bits.len() as u64 * 8
    }
    /// How many entries are revoked.
    pub fn revoked_count(&self) -> u64 {
        self.bits.iter().map(|b| u64::from(b.count_ones())).sum()
    }
    /// base64url SHA-256 of the compact list (for logs and caches).
    pub fn digest(&self) -> &str {
        &self.digest
    }
    /// Whether the bit at `index` is set; an index beyond the list is refused.
    pub fn is_revoked(&self, index: u64) -> Result<bool, ContractError> {
        bit(&self.bits, index).ok_or_else(|| ContractError::StatusMismatch {
            detail: format!(
                "index {index} is beyond the list's {} entries",
                self.entries()
            ),
        })
    }
    /// Whether this list may take the place of `held`, the newest list seen so far for the
    /// same URL: the one rule every holder of status lists applies (the enclave for its
    /// key's life, verifiers per process), so that an older list can never undo a
    /// revocation.
    ///
    /// - the same credential (same digest): [`Succession::Same`];
    /// - a later `validFrom`: [`Succession::Newer`];
    /// - an earlier `validFrom`: refused, `contract.status_rollback`;
    /// - the same `validFrom` (two lists issued within one second): [`Succession::Newer`]
    ///   when this list keeps every revocation of `held` (revocation is final, so the later
    ///   of the two revokes at least as much), else refused, `contract.status_rollback`.
    ///
    /// A list for another URL is `contract.status_mismatch`.
    pub fn succeeds(&self, held: &VerifiedStatusList) -> Result<Succession, ContractError> {
        if self.id != held.id {
            return Err(ContractError::StatusMismatch {
                detail: format!(
                    "the list held is {}, this one is {}",
                    clip(&held.id),
                    clip(&self.id)
                ),
            });
        }
        if self.digest == held.digest {
            return Ok(Succession::Same);
        }
        if self.valid_from > held.valid_from {
            return Ok(Succession::Newer);
        }
        if self.valid_from < held.valid_from {
            return Err(ContractError::StatusRollback {
                detail: format!(
                    "a list of {} valid from {} was seen; this one is valid from {}, older",
                    clip(&self.id),
                    held.valid_from,
                    self.valid_from
                ),
            });
        }
        let cleared = held.bits.iter().enumerate().find_map(|(i, &h)| {
            let kept = self.bits.get(i).copied().unwrap_or(0);
            let lost = h & !kept;
            (lost != 0).then(|| i as u64 * 8 + u64::from(lost.leading_zeros()))
        });
        match cleared {
            None => Ok(Succession::Newer),
            Some(index) => Err(ContractError::StatusRollback {
                detail: format!(
                    "a different list of {} with the same validFrom ({}) was seen, and it \
                     revokes index {index}, which this one does not",
                    clip(&self.id),
                    self.valid_from
                ),
            }),
        }
    }

    /// Refuses the list when `now` is past its `validUntil`, or when more than
    /// `max_staleness_secs` passed since `observed_at`.
    pub fn check_fresh(
        &self,
        observed_at: UnixSeconds,
        now: UnixSeconds,
        max_staleness_secs: u64,
    ) -> Result<(), ContractError> {
        if let Some(u) = self.valid_until {
            if now >= u {
                return Err(ContractError::StatusStale {
                    detail: format!("the list expired at {u} (now {now})"),
                });
            }
        }
        let age = now.saturating_sub(observed_at);
        if age > max_staleness_secs {
            return Err(ContractError::StatusStale {
                detail: format!("the list is {age} s old, more than {max_staleness_secs} s"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_msb_first_and_bounded() {
        let mut l = StatusList::new("https://owner.example/status/1", 10).unwrap();
        assert_eq!(l.entries(), (MIN_BITSTRING_BYTES * 8) as u64);
        l.revoke(0).unwrap();
        l.revoke(9).unwrap();
        assert_eq!(l.bits[0], 0x80);
        assert_eq!(l.bits[1], 0x40);
        assert!(l.is_revoked(9).unwrap());
        assert!(!l.is_revoked(8).unwrap());
        assert_eq!(
            l.revoke(l.entries()).unwrap_err().code(),
            "contract.status_mismatch"
        );
        assert!(StatusList::new(
            "https://owner.example/s",
            (MAX_BITSTRING_BYTES * 8 + 1) as u64
        )
        .is_err());
        assert!(StatusList::new("http://owner.example/s", 1).is_err());
        assert!(StatusList::new("http://127.0.0.1:8080/s", 1).is_ok());
        assert!(StatusList::new("https://owner.example/s?x=1", 1).is_err());
    }

    #[test]
    fn decoding_refuses_bombs_small_lists_and_bad_encodings() {
        let enc = |data: &[u8]| {
            let mut gz = GzEncoder::new(Vec::new(), Compression::best());
            gz.write_all(data).unwrap();
            format!("u{}", b64::encode(gz.finish().unwrap()))
        };
        assert_eq!(
            decode_list(&enc(&vec![0u8; MIN_BITSTRING_BYTES]))
                .unwrap()
                .len(),
            MIN_BITSTRING_BYTES
        );
        // 64 MiB of zeros compress to ~64 KiB: decompression stops at the limit.
        let bomb = enc(&vec![0u8; 64 * 1024 * 1024]);
        assert!(bomb.len() < 200_000);
        let e = decode_list(&bomb).unwrap_err();
        assert_eq!(e.code(), "contract.status_malformed");
        assert!(e.to_string().contains("larger than"), "{e}");
        assert!(decode_list(&enc(&[0u8; 100]))
            .unwrap_err()
            .to_string()
            .contains("minimum"));
        assert!(decode_list(&enc(&vec![0u8; MIN_BITSTRING_BYTES])[1..]).is_err());
        assert!(decode_list("uAAAA").is_err());
        assert!(decode_list("u!!").is_err());
    }
}
