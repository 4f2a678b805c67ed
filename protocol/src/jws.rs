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

/// The order `n` of P-256 (big-endian).
const P256_N: [u8; 32] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
];

/// The order `n` of P-384 (big-endian).
const P384_N: [u8; 48] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xC7, 0x63, 0x4D, 0x81, 0xF4, 0x37, 0x2D, 0xDF,
    0x58, 0x1A, 0x0D, 0xB2, 0x48, 0xB0, 0xA7, 0x7A, 0xEC, 0xEC, 0x19, 0x6A, 0xCC, 0xC5, 0x29, 0x73,
];

/// The curve order of an ECDSA `alg` (`None` for EdDSA).
fn ecdsa_order(alg: SigAlg) -> Option<&'static [u8]> {
    match alg {
        SigAlg::ES256 => Some(&P256_N),
        SigAlg::ES384 => Some(&P384_N),
        SigAlg::EdDSA | SigAlg::Ed25519 => None,
    }
}

/// `n − s` for big-endian numbers of the same length with `s ≤ n`; `None` when `s > n`.
fn order_minus(n: &[u8], s: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0u8; n.len()];
    let mut borrow = 0u16;
    for i in (0..n.len()).rev() {
        let sub = u16::from(s[i]) + borrow;
        let (v, b) = match u16::from(n[i]).checked_sub(sub) {
            Some(v) => (v, 0),
            None => (u16::from(n[i]) + 256 - sub, 1),
        };
        out[i] = u8::try_from(v).ok()?;
        borrow = b;
    }
    (borrow == 0).then_some(out)
}

/// Whether a JWS signature of `alg` is an ECDSA signature (fixed-length `r ‖ s`) in its
/// high-s form, `s > n/2`. Each ECDSA signature has two valid spellings, `(r, s)` and
/// `(r, n − s)`; an object identified by the hash of its text (a trust contract's
/// `cada.dtc`) must have one, so CADA signs and accepts only the low-s one (`s ≤ n/2`).
/// `false` for EdDSA (one spelling already) and for a signature of the wrong length
/// (which does not verify anyway); `true` for `s ≥ n`.
pub fn ecdsa_high_s(alg: SigAlg, sig: &[u8]) -> bool {
    let Some(n) = ecdsa_order(alg) else {
        return false;
    };
    if sig.len() != 2 * n.len() {
        return false;
    }
    let s = &sig[n.len()..];
    match order_minus(n, s) {
        // Equal lengths, big-endian: byte order is numeric order. s > n − s ⇔ s > n/2.
        Some(rest) => s > rest.as_slice(),
        None => true,
    }
}

/// Puts an ECDSA JWS signature of `alg` (fixed-length `r ‖ s`) in its low-s form: `s`
/// becomes `n − s` when `s > n/2` (the same signature, its one spelling CADA accepts, see
/// [`ecdsa_high_s`]). Leaves EdDSA signatures and signatures of another length alone.
pub fn ecdsa_low_s(alg: SigAlg, sig: &mut [u8]) {
    let Some(n) = ecdsa_order(alg) else { return };
    if sig.len() != 2 * n.len() || !ecdsa_high_s(alg, sig) {
        return;
    }
    if let Some(low) = order_minus(n, &sig[n.len()..]) {
        sig[n.len()..].copy_from_slice(&low);
    }
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

    /// Finding 4 of docs/reviews/delegation-3.md: each ECDSA signature has a second valid
    /// spelling (`s` → `n − s`); `ecdsa_low_s` gives the one CADA accepts, `ecdsa_high_s`
    /// finds the other, on both curves, and both spellings still verify cryptographically.
    #[test]
    fn ecdsa_signatures_have_one_low_s_spelling() {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::signature::{
            EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING,
        };
        let rng = SystemRandom::new();
        for (alg, signing, n) in [
            (SigAlg::ES256, &ECDSA_P256_SHA256_FIXED_SIGNING, &P256_N[..]),
            (SigAlg::ES384, &ECDSA_P384_SHA384_FIXED_SIGNING, &P384_N[..]),
        ] {
            let k = EcdsaKeyPair::generate(signing).unwrap();
            let (mut high, mut low) = (0, 0);
            for i in 0..64u8 {
                let msg = [i; 9];
                let sig = k.sign(&rng, &msg).unwrap().as_ref().to_vec();
                let mut norm = sig.clone();
                ecdsa_low_s(alg, &mut norm);
                assert!(!ecdsa_high_s(alg, &norm));
                assert!(verify_signature(alg, k.public_key().as_ref(), &msg, &norm));
                if ecdsa_high_s(alg, &sig) {
                    high += 1;
                    assert_ne!(norm, sig);
                    assert_eq!(norm[..n.len()], sig[..n.len()], "r is kept");
                } else {
                    low += 1;
                    assert_eq!(norm, sig);
                    // The other spelling verifies too: it is what must be refused.
                    let mut other = sig.clone();
                    let flipped = order_minus(n, &sig[n.len()..]).unwrap();
                    other[n.len()..].copy_from_slice(&flipped);
                    assert!(verify_signature(alg, k.public_key().as_ref(), &msg, &other));
                    assert!(ecdsa_high_s(alg, &other));
                }
            }
            assert!(high > 0 && low > 0, "{high} high, {low} low of 64");
            // The boundary: s = (n − 1)/2 is low, one more is high; s ≥ n is refused.
            let half = {
                let mut h = n.to_vec();
                let mut carry = 0u8;
                for b in &mut h {
                    let next = *b & 1;
                    *b = (*b >> 1) | (carry << 7);
                    carry = next;
                }
                h
            };
            let mut sig = vec![1u8; n.len()];
            sig.extend_from_slice(&half);
            assert!(!ecdsa_high_s(alg, &sig));
            *sig.last_mut().unwrap() += 1;
            assert!(ecdsa_high_s(alg, &sig));
            let mut at_n = vec![1u8; n.len()];
            at_n.extend_from_slice(n);
            assert!(ecdsa_high_s(alg, &at_n));
            let mut over = vec![1u8; n.len()];
            over.extend_from_slice(&vec![0xFF; n.len()]);
            assert!(ecdsa_high_s(alg, &over));
        }
        // EdDSA and wrong lengths are not ECDSA spellings.
        let mut ed = vec![0xFFu8; 64];
        assert!(!ecdsa_high_s(SigAlg::EdDSA, &ed));
        ecdsa_low_s(SigAlg::EdDSA, &mut ed);
        assert_eq!(ed, vec![0xFFu8; 64]);
        assert!(!ecdsa_high_s(SigAlg::ES256, &[0xFF; 63]));
    }
}
