//! Bounded, deterministic mutation fuzzing of every parser of outside bytes (coverage-guided
//! fuzzers need a nightly toolchain this project does not assume). Each parser gets a few
//! thousand mutants of real inputs — bit flips, byte insertions and deletions, splices,
//! truncations and length-field lies — and must return, never panic; mutated evidence must
//! never verify. (The EIF parser moved to `cada-image`, whose tests mutate images the same
//! way.)
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)] // test code: casts of generated values, no outside bytes
mod common;

use cada_attestation_verifier::nitro::{AttestationDocument, NitroPolicy, NitroVerifier};
use cada_attestation_verifier::snp::{SnpPolicy, SnpVerifier};
use cada_attestation_verifier::{cose, UnixTime};
use cada_protocol::binding::KeyBinding;
use cada_protocol::envelope::{EvidenceEnvelope, Platform};
use cada_protocol::{token, wire};

/// xorshift64*: reproducible, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut m = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = m.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                m[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                m[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                m.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                m.remove(i);
            }
            4 if len > 1 => {
                // splice: copy a run from one place to another
                let a = rng.below(len);
                let b = rng.below(len);
                let n = rng.below((len - a.max(b)).min(64) + 1);
                let run = m[a..a + n].to_vec();
                m[b..b + n].copy_from_slice(&run);
            }
            5 if len > 0 => m.truncate(rng.below(len)),
            // a CBOR length lie: turn a byte into a huge-length header
            _ if len > 0 => {
                let i = rng.below(len);
                m[i] = [0x5b, 0x7b, 0x9b, 0xbb][rng.below(4)];
            }
            _ => m.push(rng.next() as u8),
        }
    }
    m
}

const ROUNDS: usize = 12_000;

#[test]
fn nitro_documents_and_payloads() {
    let v = NitroVerifier::default();
    let lenient = NitroPolicy {
        allow_debug: true,
        ..NitroPolicy::default()
    };
    let mut rng = Rng(0x5eed_0001);
    for (meta, bytes) in common::nitro_docs() {
        let at = UnixTime::from_millis(meta["timestamp_ms"].as_u64().unwrap());
        let payload = cose::decode(&bytes, 1 << 16).unwrap().payload;
        for _ in 0..ROUNDS / 6 {
            let m = mutate(&mut rng, &bytes);
            if m != bytes {
                assert!(
                    v.verify(&m, &lenient, at).is_err(),
                    "a mutated document verified"
                );
            }
            let _ = v.report(&m, &lenient, at);
            let _ = AttestationDocument::from_payload(&mutate(&mut rng, &payload));
        }
    }
}

#[test]
fn snp_reports_and_certificates() {
    let idx = common::index();
    let v = SnpVerifier::default();
    let at = UnixTime::parse_rfc3339("2025-06-01T00:00:00Z").unwrap();
    let mut rng = Rng(0x5eed_0002);
    for meta in idx["snp_reports"].as_array().unwrap() {
        let report = common::read(meta["file"].as_str().unwrap());
        let mut certs = common::certs(meta["cert"].as_str().unwrap());
        let vcek = certs.remove(0);
        for _ in 0..ROUNDS / 8 {
            let r = mutate(&mut rng, &report);
            if r != report {
                assert!(
                    v.verify(&r, &vcek, &certs, &SnpPolicy::default(), at)
                        .is_err(),
                    "a mutated report verified"
                );
            }
            let c = mutate(&mut rng, &vcek);
            let _ = v.verify(&report, &c, &certs, &SnpPolicy::default(), at);
        }
    }
}

#[test]
fn tokens_envelopes_frames_and_bindings() {
    let mut rng = Rng(0x5eed_0003);
    let binding = KeyBinding {
        v: 1,
        jkt: "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I".into(),
        did: "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp".into(),
        hpke: None,
        owner: None,
    }
    .to_cbor();
    let env = EvidenceEnvelope {
        platform: Platform::Nitro,
        document: common::nitro_docs().remove(0).1,
        certs: vec![serde_bytes::ByteBuf::from(vec![0x30; 40])],
        binding: binding.clone(),
        nonce: vec![7; 32],
    }
    .to_cbor();
    let frame = wire::encode_frame(&wire::Request {
        id: 9,
        op: "sign_pop".into(),
        body: wire::to_value(&wire::SignPopRequest {
            htm: "GET".into(),
            htu: "https://a.example/x".into(),
            access_token: Some("t".into()),
            nonce: None,
            ctx: Default::default(),
            bd: None,
            mcp: vec![],
            exchange: None,
            task: None,
            traceparent: None,
        })
        .unwrap(),
    })
    .unwrap();
    let jws = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVkRFNBIiwiandrIjp7Imt0eSI6Ik9LUCIsImNydiI6IkVkMjU1MTkiLCJ4IjoiMTFxWUFZS3hDcmZWU183VHlXUUhPZzdoY3ZQYXBpTWxyd0lhYVBjSFVSbyJ9fQ.eyJqdGkiOiJqIiwiaHRtIjoiR0VUIiwiaHR1IjoiaHR0cHM6Ly9hLmV4YW1wbGUveCIsImlhdCI6MTAsImV4cCI6NDAsImNhZGEiOnsiYXR0IjoiIiwic2VxIjowLCJjaGFpbiI6IiJ9fQ.AAAA";
    for _ in 0..ROUNDS {
        let _ = KeyBinding::from_cbor(&mutate(&mut rng, &binding));
        let _ = EvidenceEnvelope::from_cbor(&mutate(&mut rng, &env));
        let f = mutate(&mut rng, &frame);
        if f.len() >= 4 {
            if let Ok(len) = wire::frame_len([f[0], f[1], f[2], f[3]]) {
                let _ = wire::decode_payload::<wire::Request>(&f[4..(4 + len).min(f.len())]);
            }
        }
        let t = mutate(&mut rng, jws.as_bytes());
        if let Ok(t) = std::str::from_utf8(&t) {
            let _ = token::parse_compact(t);
        }
    }
}
