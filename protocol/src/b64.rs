//! Unpadded base64url, the encoding of every binary field in JOSE and in CADA headers.
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::ProtocolError;

/// Encodes bytes as unpadded base64url.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes unpadded base64url, refusing inputs longer than `max_decoded` bytes once decoded.
pub fn decode(
    what: &'static str,
    text: &str,
    max_decoded: usize,
) -> Result<Vec<u8>, ProtocolError> {
    // 4 characters carry 3 bytes; check before allocating.
    let len = text.len().saturating_mul(3) / 4;
    if len > max_decoded {
        return Err(ProtocolError::TooLarge {
            what,
            len,
            max: max_decoded,
        });
    }
    URL_SAFE_NO_PAD
        .decode(text.as_bytes())
        .map_err(|_| ProtocolError::Base64 { what })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_limits() {
        let enc = encode(b"\xff\xfe cada");
        assert!(!enc.contains('='));
        assert_eq!(decode("t", &enc, 64).unwrap(), b"\xff\xfe cada");
        assert!(matches!(
            decode("t", &enc, 2),
            Err(ProtocolError::TooLarge { .. })
        ));
        assert_eq!(
            decode("t", "a+b/", 64),
            Err(ProtocolError::Base64 { what: "t" })
        );
    }
}
