//! Compact JWS (RFC 7515 §7.1) in general: splitting with size limits, the `crit` rule,
//! the signing input, and signature verification with aws-lc-rs.
//!
//! [`crate::token`] uses this for CB-PoP proofs; trust contracts and status lists (crate
//! `cada-contract`) use it for `vc+jwt` credentials. Neither the enclave nor the contract
//! code links the verifier library, so the one JWS signature check lives here.
use aws_lc_rs::signature;

use crate::jwk::SigAlg;
use crate::{b64, ProtocolError};

/// Largest JWS signature accepted (an ES384 signature is 96 bytes).
pub const MAX_SIGNATURE_LEN: usize = 512;

/// A compact JWS split into its three parts, each base64url-decoded.
#[derive(Debug, Clone)]
pub struct CompactJws<'a> {
    /// `header.payload` as received: what the signature covers.
    pub signing_input: &'a str,
    /// The decoded protected header (JSON bytes, not yet parsed).
    pub header: Vec<u8>,
    /// The decoded payload.
    pub payload: Vec<u8>,
    /// The decoded signature.
    pub signature: Vec<u8>,
}

/// Splits a compact JWS of at most `max_len` bytes into header, payload and signature,
/// decoding each. `what` names the object in errors (e.g. `"DPoP proof"`). It parses no
/// JSON and verifies nothing.
pub fn split_compact<'a>(
    what: &'static str,
    token: &'a str,
    max_len: usize,
) -> Result<CompactJws<'a>, ProtocolError> {
    if token.len() > max_len {
        return Err(ProtocolError::TooLarge {
            what,
            len: token.len(),
            max: max_len,
        });
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ProtocolError::invalid(
            what,
            "a compact JWS has exactly three parts",
        ));
    };
    Ok(CompactJws {
        signing_input: &token[..h.len() + 1 + p.len()],
        header: b64::decode(header_name(what), h, max_len)?,
        payload: b64::decode(payload_name(what), p, max_len)?,
        signature: b64::decode(signature_name(what), s, MAX_SIGNATURE_LEN)?,
    })
}

// Field names for errors, as static strings (the error type holds `&'static str`).
fn header_name(what: &'static str) -> &'static str {
    match what {
        "DPoP proof" => "DPoP header",
        "trust contract" => "trust contract header",
        "status list" => "status list header",
        _ => "JWS header",
    }
}
fn payload_name(what: &'static str) -> &'static str {
    match what {
        "DPoP proof" => "DPoP claims",
        "trust contract" => "trust contract payload",
        "status list" => "status list payload",
        _ => "JWS payload",
    }
}
fn signature_name(what: &'static str) -> &'static str {
    match what {
        "DPoP proof" => "DPoP signature",
        "trust contract" => "trust contract signature",
        "status list" => "status list signature",
        _ => "JWS signature",
    }
}

/// Refuses a header that carries `crit` (RFC 7515 §4.1.11): it names extensions the
/// recipient must understand, and CADA understands none. `crit` is the member's value
/// when present (even `null`).
pub fn refuse_crit(crit: Option<&serde_json::Value>) -> Result<(), ProtocolError> {
    let Some(crit) = crit else { return Ok(()) };
    let names = match crit {
        serde_json::Value::Array(a) => a
            .iter()
            .take(16)
            .filter_map(|v| v.as_str().map(|s| s.chars().take(64).collect()))
            .collect(),
        _ => Vec::new(),
    };
    Err(ProtocolError::CriticalHeader { names })
}

/// `base64url(header).base64url(payload)`: the bytes a JWS signature covers.
pub fn signing_input(header_json: &[u8], payload: &[u8]) -> String {
    let mut s = b64::encode(header_json);
    s.push('.');
    s.push_str(&b64::encode(payload));
    s
}

/// Verifies a JWS signature: `public_key` is the raw Ed25519 key or a SEC1 EC point
/// (uncompressed or compressed), `sig` the JWS signature bytes (ECDSA as fixed-length
/// `r ‖ s`, RFC 7518 §3.4).
pub fn verify_signature(alg: SigAlg, public_key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    let alg: &'static dyn signature::VerificationAlgorithm = match alg {
        // One signature under two JOSE names: RFC 8037 `EdDSA`, RFC 9864 `Ed25519`.
        SigAlg::EdDSA | SigAlg::Ed25519 => &signature::ED25519,
        SigAlg::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
        SigAlg::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
    };
    signature::UnparsedPublicKey::new(alg, public_key)
        .verify(msg, sig)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};

    #[test]
    fn split_limits_and_shape() {
        let t = format!(
            "{}.{}.{}",
            b64::encode("{}"),
            b64::encode("x"),
            b64::encode([1u8; 64])
        );
        let p = split_compact("JWS", &t, 1024).unwrap();
        assert_eq!(p.header, b"{}");
        assert_eq!(p.payload, b"x");
        assert_eq!(p.signature.len(), 64);
        assert_eq!(p.signing_input, &t[..t.rfind('.').unwrap()]);
        assert_eq!(
            split_compact("JWS", &t, 10).unwrap_err().code(),
            "too_large"
        );
        assert_eq!(
            split_compact("JWS", "a.b", 64).unwrap_err().code(),
            "invalid"
        );
        assert_eq!(
            split_compact("JWS", "a.b.c.d", 64).unwrap_err().code(),
            "invalid"
        );
        assert_eq!(
            split_compact("JWS", "a.b+.c", 64).unwrap_err().code(),
            "base64"
        );
        let long_sig = format!("e30.eA.{}", b64::encode([0u8; MAX_SIGNATURE_LEN + 3]));
        assert_eq!(
            split_compact("JWS", &long_sig, 4096).unwrap_err().code(),
            "too_large"
        );
    }

    #[test]
    fn crit_and_signatures() {
        assert!(refuse_crit(None).is_ok());
        assert_eq!(
            refuse_crit(Some(&serde_json::json!(null)))
                .unwrap_err()
                .code(),
            "jws.crit"
        );
        let kp = Ed25519KeyPair::from_seed_unchecked(&[9u8; 32]).unwrap();
        let input = signing_input(b"{}", b"payload");
        let sig = kp.sign(input.as_bytes());
        let pk = kp.public_key().as_ref();
        assert!(verify_signature(
            SigAlg::EdDSA,
            pk,
            input.as_bytes(),
            sig.as_ref()
        ));
        assert!(verify_signature(
            SigAlg::Ed25519,
            pk,
            input.as_bytes(),
            sig.as_ref()
        ));
        assert!(!verify_signature(SigAlg::EdDSA, pk, b"other", sig.as_ref()));
        assert!(!verify_signature(
            SigAlg::ES256,
            pk,
            input.as_bytes(),
            sig.as_ref()
        ));
    }
}
