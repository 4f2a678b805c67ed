//! Bounded CBOR decoding.
//!
//! [`decode_value`] is the only way CADA turns outside bytes into a CBOR value: it refuses
//! input above a size limit before reading, bounds nesting depth, rejects trailing bytes and
//! rejects maps that repeat a key (RFC 8949 §5.6 leaves duplicates to the application; a
//! verifier must not let two readers see two different values).
use ciborium::Value;

use crate::ProtocolError;

/// Nesting depth that every CADA structure stays far below.
pub const MAX_DEPTH: usize = 16;

/// Decodes exactly one CBOR data item from `bytes`.
pub fn decode_value(
    what: &'static str,
    bytes: &[u8],
    max_len: usize,
) -> Result<Value, ProtocolError> {
    if bytes.len() > max_len {
        return Err(ProtocolError::TooLarge {
            what,
            len: bytes.len(),
            max: max_len,
        });
    }
    let mut reader = bytes;
    let value: Value = ciborium::de::from_reader_with_recursion_limit(&mut reader, MAX_DEPTH)
        .map_err(|e| ProtocolError::Cbor {
            what,
            detail: e.to_string(),
        })?;
    if !reader.is_empty() {
        return Err(ProtocolError::Cbor {
            what,
            detail: format!("{} trailing bytes after the data item", reader.len()),
        });
    }
    check_no_duplicate_keys(what, &value)?;
    Ok(value)
}

/// Fails if any map inside `value` repeats a key.
pub fn check_no_duplicate_keys(what: &'static str, value: &Value) -> Result<(), ProtocolError> {
    match value {
        Value::Map(entries) => {
            // Maps in CADA formats are small (< 64 entries): a quadratic scan allocates nothing.
            for (i, (k, v)) in entries.iter().enumerate() {
                if entries[..i].iter().any(|(prev, _)| prev == k) {
                    return Err(ProtocolError::DuplicateKey {
                        what,
                        key: format!("{k:?}"),
                    });
                }
                check_no_duplicate_keys(what, v)?;
            }
            Ok(())
        }
        Value::Array(items) => items
            .iter()
            .try_for_each(|v| check_no_duplicate_keys(what, v)),
        Value::Tag(_, inner) => check_no_duplicate_keys(what, inner),
        _ => Ok(()),
    }
}

/// Encodes a serializable value as CBOR.
pub fn encode<T: serde::Serialize>(
    what: &'static str,
    value: &T,
) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).map_err(|e| ProtocolError::Cbor {
        what,
        detail: e.to_string(),
    })?;
    Ok(out)
}

/// Decodes bounded CBOR into a typed value (through [`decode_value`], so with every limit).
pub fn decode<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
    max_len: usize,
) -> Result<T, ProtocolError> {
    let value = decode_value(what, bytes, max_len)?;
    value
        .deserialized()
        .map_err(|e| ProtocolError::invalid(what, e.to_string()))
}

/// Looks up a text key in a CBOR map.
pub fn map_get<'a>(entries: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    entries
        .iter()
        .find(|(k, _)| matches!(k, Value::Text(t) if t == key))
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_deep_nesting_without_overflow() {
        let mut deep = vec![0x81u8; 10_000];
        deep.push(0x00);
        let err = decode_value("t", &deep, 1 << 20).unwrap_err();
        assert!(matches!(err, ProtocolError::Cbor { .. }), "{err:?}");
    }

    #[test]
    fn rejects_duplicate_keys_trailing_bytes_and_size() {
        // {"a": 1, "a": 2}
        let dup = [0xa2, 0x61, b'a', 0x01, 0x61, b'a', 0x02];
        assert!(matches!(
            decode_value("t", &dup, 64),
            Err(ProtocolError::DuplicateKey { .. })
        ));
        assert!(matches!(
            decode_value("t", &[0x01, 0x02], 64),
            Err(ProtocolError::Cbor { .. })
        ));
        assert!(matches!(
            decode_value("t", &[0u8; 65], 64),
            Err(ProtocolError::TooLarge { .. })
        ));
    }

    #[test]
    fn lying_length_does_not_allocate_it() {
        // a byte string that claims 2^62 bytes
        let lie = [0x5b, 0x40, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(
            decode_value("t", &lie, 64),
            Err(ProtocolError::Cbor { .. })
        ));
    }
}
