//! Parent ↔ enclave frames (`cada_protocol::wire`): the length header, request and response
//! payloads, and every operation body; and the key binding CBOR
//! (`cada_protocol::binding::KeyBinding::from_cbor`).
//!
//! Input: a frame as it arrives on the stream (4-byte big-endian length, then CBOR). The
//! payload is also decoded as a key binding. Oracles: a decoded message re-encodes into a
//! frame that decodes to the same value; a decoded binding re-encodes to a binding that
//! decodes to itself.
#![no_main]

use cada_protocol::binding::KeyBinding;
use cada_protocol::wire::{self, AttestRequest, Request, Response, SignPopRequest};
use libfuzzer_sys::fuzz_target;

fn round_trip<T>(msg: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    // Values with NaN floats are not equal to themselves: compare the encodings instead.
    let Ok(frame) = wire::encode_frame(msg) else {
        return;
    };
    let back: T = wire::decode_payload(&frame[4..]).expect("an encoded frame decodes");
    let again = wire::encode_frame(&back).expect("a decoded frame encodes");
    assert_eq!(frame, again, "frame round trip changed {msg:?}");
}

fuzz_target!(
    init: {
        cada_fuzz::write_seeds_if_asked("wire_frame");
    },
    |data: &[u8]| {
        let Some((header, payload)) = data.split_first_chunk::<4>() else {
            return;
        };
        if let Ok(len) = wire::frame_len(*header) {
            assert!(len <= wire::MAX_FRAME_LEN);
        }
        if let Ok(req) = wire::decode_payload::<Request>(payload) {
            round_trip(&req);
            if let Ok(b) = wire::body::<AttestRequest>(&req.body) {
                round_trip(&b);
            }
            if let Ok(b) = wire::body::<SignPopRequest>(&req.body) {
                round_trip(&b);
            }
        }
        if let Ok(resp) = wire::decode_payload::<Response>(payload) {
            round_trip(&resp);
            if let Some(ok) = &resp.ok {
                let _ = wire::body::<wire::AttestResponse>(ok);
                let _ = wire::body::<wire::SignPopResponse>(ok);
                let _ = wire::body::<wire::DescribeResponse>(ok);
            }
        }
        if let Ok(b) = KeyBinding::from_cbor(payload) {
            let again = KeyBinding::from_cbor(&b.to_cbor()).expect("a re-encoded binding decodes");
            assert_eq!(again, b);
        }
    }
);
