//! MCP request bodies and `Content-Digest` headers (`cada_protocol::mcp`): what `cada-gate`
//! reads from every client before it decides.
//!
//! Input: a body; after the first newline, also a `Content-Digest` value. Oracles: a parsed
//! body's calls pass the limits a proof's `cada.mcp` must keep, survive a JSON round trip,
//! and a batch never holds more than the limit; a digest header that parses names a 32-byte
//! digest in base64url (43 characters).
#![no_main]

use cada_protocol::mcp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        cada_fuzz::write_seeds_if_asked("mcp_body");
    },
    |data: &[u8]| {
        if let Ok(body) = mcp::parse_body(data) {
            let calls = body.calls();
            assert!(body.messages.len() <= mcp::MAX_CALLS);
            mcp::check_calls(&calls).expect("parsed calls keep the proof's limits");
            let json = serde_json::to_vec(&calls).expect("calls serialize");
            let back: Vec<mcp::McpCall> = serde_json::from_slice(&json).expect("calls parse back");
            assert_eq!(back, calls);
            assert_eq!(body.batch, data.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'['));
        }
        if let Some(pos) = data.iter().position(|&b| b == b'\n') {
            if let Ok(text) = std::str::from_utf8(&data[pos + 1..]) {
                if let Ok(Some(d)) = mcp::content_digest_sha256(text) {
                    assert_eq!(d.len(), 43);
                }
            }
        }
        let _ = mcp::body_digest(data);
    }
);
