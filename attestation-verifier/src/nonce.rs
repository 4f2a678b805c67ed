//! Stateless DPoP nonces (RFC 9449 §8): `base64url(issued_at ‖ HMAC-SHA256(key, issued_at)[..16])`.
//! Any instance holding the same key accepts them (`--nonce-key-file` for a fleet).
use aws_lc_rs::hmac;
use cada_protocol::b64;

/// Issues and checks nonces.
pub struct NonceIssuer {
    key: hmac::Key,
}

impl NonceIssuer {
    /// From a secret of at least 32 bytes.
    pub fn new(secret: &[u8]) -> Self {
        NonceIssuer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// A random key (single instance).
    pub fn random() -> Self {
        let mut k = [0u8; 32];
        let _ = aws_lc_rs::rand::fill(&mut k);
        Self::new(&k)
    }

    /// A nonce issued at `now_secs`.
    pub fn issue(&self, now_secs: u64) -> String {
        let ts = now_secs.to_be_bytes();
        let tag = hmac::sign(&self.key, &ts);
        let mut raw = ts.to_vec();
        raw.extend_from_slice(&tag.as_ref()[..16]);
        b64::encode(raw)
    }

    /// Whether `nonce` was issued by this key within `ttl_secs` before `now_secs`.
    pub fn check(&self, nonce: &str, now_secs: u64, ttl_secs: u64) -> bool {
        self.issued_at(nonce.as_bytes()).is_some_and(|issued| {
            issued <= now_secs + 5 && now_secs.saturating_sub(issued) <= ttl_secs
        })
    }

    /// When a nonce of this key was issued (seconds), or `None` if this key did not issue
    /// it. Takes the nonce as text (base64url) or as its 24 raw bytes — the form an
    /// enclave's evidence carries when an agent asked for evidence with this nonce.
    pub fn issued_at(&self, nonce: &[u8]) -> Option<u64> {
        let decoded;
        let raw: &[u8] = if nonce.len() == NONCE_LEN {
            nonce
        } else {
            let text = std::str::from_utf8(nonce).ok()?;
            decoded = b64::decode("nonce", text, 64).ok()?;
            &decoded
        };
        if raw.len() != NONCE_LEN {
            return None;
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&raw[..8]);
        let tag = hmac::sign(&self.key, &ts);
        // Constant-time comparison of the truncated tag.
        let same = raw[8..]
            .iter()
            .zip(&tag.as_ref()[..16])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        same.then(|| u64::from_be_bytes(ts))
    }
}

/// Length of a nonce's raw bytes: issue time (8) and truncated HMAC tag (16).
pub const NONCE_LEN: usize = 24;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_check_expire_and_forge() {
        let n = NonceIssuer::new(&[1u8; 32]);
        let t = n.issue(1000);
        assert!(n.check(&t, 1000, 60));
        assert!(n.check(&t, 1060, 60));
        assert!(!n.check(&t, 1061, 60));
        assert!(!NonceIssuer::new(&[2u8; 32]).check(&t, 1000, 60));
        let mut raw = b64::decode("n", &t, 64).unwrap();
        raw[7] ^= 1;
        assert!(!n.check(&b64::encode(raw), 1000, 60));
        assert!(!n.check("garbage!", 1000, 60));
        let raw = b64::decode("n", &t, 64).unwrap();
        assert_eq!(n.issued_at(&raw), Some(1000));
        assert_eq!(n.issued_at(t.as_bytes()), Some(1000));
        assert_eq!(NonceIssuer::new(&[2u8; 32]).issued_at(&raw), None);
    }
}
