//! DID resolution for `cada-verify did resolve`: `did:key` offline, `did:web` over HTTP.
//!
//! * `did:key` (Ed25519, P-256, P-384): the document is computed from the DID alone, as the
//!   did:key method specifies — one `Multikey` verification method used for
//!   `authentication` and `assertionMethod` (built by [`cada_contract::PublicKey`]).
//! * `did:web`: the document is fetched from the URL the did:web method maps the DID to
//!   ([`cada_contract::did::did_web_url`]) with one GET: at most [`MAX_DOCUMENT_LEN`] bytes,
//!   within a timeout, redirects refused (a 3xx answer is a refusal, never followed). The
//!   document must be JSON whose `id` equals the DID, and must list at least one
//!   `assertionMethod` key CADA can read (`Multikey` or `JsonWebKey`; Ed25519, P-256,
//!   P-384) — what an owner's document needs to sign contracts.
//!
//! Transport: HTTPS, as the did:web method requires ([`cada_net::fetch`]): the server's
//! certificate must chain to the fetcher's roots (the built-in Mozilla set, or the CAs given
//! with `--fetch-ca`) and name the DID's host; a failed handshake is `did.tls`.
use std::time::Duration;

use cada_net::fetch::{Failure, Fetcher};

use cada_contract::did::{did_web_url, MAX_DID_LEN};
use cada_contract::{PublicKey, TrustedOwners};

use crate::ServiceError;

/// Largest did:web document accepted (the same bound as `cada-contract`'s).
pub const MAX_DOCUMENT_LEN: usize = cada_contract::MAX_DID_DOCUMENT_LEN;

/// Default time allowed for a whole did:web fetch (connect, answer, body).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A resolved DID: its document and where it came from.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The DID document.
    pub document: serde_json::Value,
    /// `key` or `web`.
    pub method: &'static str,
    /// The URL a did:web document was fetched from (`None` for did:key).
    pub url: Option<String>,
}

fn refused(code: &'static str, detail: impl Into<String>) -> ServiceError {
    ServiceError::DidRefused {
        code,
        detail: detail.into(),
    }
}

fn unresolved(code: &'static str, detail: impl Into<String>) -> ServiceError {
    ServiceError::DidUnresolved {
        code,
        detail: detail.into(),
    }
}

/// At most 64 characters of outside text, for messages.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Resolves a `did:key` offline.
pub fn resolve_did_key(did: &str) -> Result<serde_json::Value, ServiceError> {
    let key = PublicKey::from_did_key(did).map_err(|e| {
        refused(
            "did.malformed",
            format!("{:?} is not a did:key this verifier reads: {e}", clip(did)),
        )
    })?;
    Ok(key.did_key_document())
}

/// Resolves `did:key` offline or `did:web` over HTTPS with `fetcher` within `timeout`.
pub async fn resolve(
    did: &str,
    fetcher: &Fetcher,
    timeout: Duration,
) -> Result<Resolved, ServiceError> {
    if did.len() > MAX_DID_LEN {
        return Err(refused(
            "did.malformed",
            format!("the DID is {} bytes, more than {MAX_DID_LEN}", did.len()),
        ));
    }
    if did.starts_with("did:key:") {
        return Ok(Resolved {
            document: resolve_did_key(did)?,
            method: "key",
            url: None,
        });
    }
    if !did.starts_with("did:web:") {
        let method = did
            .strip_prefix("did:")
            .and_then(|r| r.split(':').next())
            .filter(|m| !m.is_empty());
        return Err(refused(
            "did.malformed",
            match method {
                Some(m) => format!(
                    "DID method {:?} is not supported (did:key and did:web are)",
                    clip(m)
                ),
                None => format!(
                    "{:?} is not a DID (did:key:z… or did:web:host[:path…])",
                    clip(did)
                ),
            },
        ));
    }
    let url = did_web_url(did).map_err(|e| refused("did.malformed", e.to_string()))?;
    let body = match tokio::time::timeout(timeout, fetch(fetcher, &url)).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(unresolved(
                "did.timeout",
                format!("{url} did not answer within {} ms", timeout.as_millis()),
            ))
        }
    };
    let document = check_document(did, &body)?;
    Ok(Resolved {
        document,
        method: "web",
        url: Some(url),
    })
}

/// Checks a fetched did:web document: JSON of at most [`MAX_DOCUMENT_LEN`] bytes, an object
/// whose `id` is `did`, listing an `assertionMethod` key CADA can read.
pub fn check_document(did: &str, body: &[u8]) -> Result<serde_json::Value, ServiceError> {
    if body.len() > MAX_DOCUMENT_LEN {
        return Err(refused(
            "did.too_large",
            format!(
                "the DID document is {} bytes, more than {MAX_DOCUMENT_LEN}",
                body.len()
            ),
        ));
    }
    let doc: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| refused("did.document", format!("the answer is not JSON: {e}")))?;
    let id = doc.get("id").and_then(serde_json::Value::as_str);
    match id {
        Some(id) if id == did => {}
        Some(id) => {
            return Err(refused(
                "did.id_mismatch",
                format!(
                    "the document's id is {:?}, not the DID resolved ({:?}): a server may only publish its own DID",
                    clip(id),
                    clip(did)
                ),
            ))
        }
        None => {
            return Err(refused(
                "did.document",
                "the answer is not a DID document (no string `id`)",
            ))
        }
    }
    TrustedOwners::new()
        .add_did_document(body)
        .map_err(|e| refused("did.document", e.to_string()))?;
    Ok(doc)
}

/// The `did.*` code of a fetch failure.
fn did_code(f: Failure) -> &'static str {
    match f {
        Failure::Malformed => "did.malformed",
        Failure::Unreachable => "did.unreachable",
        Failure::Tls => "did.tls",
        Failure::Redirect => "did.redirect",
        Failure::HttpStatus => "did.http_status",
        Failure::TooLarge => "did.too_large",
    }
}

/// One GET of `url` for a did:web document, its failures under `did.*` codes.
async fn fetch(fetcher: &Fetcher, url: &str) -> Result<Vec<u8>, ServiceError> {
    fetcher
        .get(url, MAX_DOCUMENT_LEN, "document")
        .await
        .map_err(|e| {
            let code = did_code(e.failure);
            if e.failure.is_unresolved() {
                unresolved(code, e.detail)
            } else {
                refused(code, e.detail)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_must_name_the_did_and_a_readable_key() {
        let key =
            PublicKey::from_did_key("did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp")
                .unwrap();
        let did = "did:web:127.0.0.1%3A9:o";
        let doc = key.did_web_document(did).unwrap();
        let bytes = serde_json::to_vec(&doc).unwrap();
        assert_eq!(check_document(did, &bytes).unwrap(), doc);
        let code = |d: &str, b: &[u8]| check_document(d, b).unwrap_err().did_code();
        assert_eq!(
            code("did:web:127.0.0.1%3A9:x", &bytes),
            Some("did.id_mismatch")
        );
        assert_eq!(code(did, b"[1"), Some("did.document"));
        assert_eq!(code(did, br#"{"id": 5}"#), Some("did.document"));
        let no_keys = serde_json::to_vec(&serde_json::json!({"id": did})).unwrap();
        assert_eq!(code(did, &no_keys), Some("did.document"));
        assert_eq!(
            code(did, &vec![b' '; MAX_DOCUMENT_LEN + 1]),
            Some("did.too_large")
        );
    }
}
