//! COSE_Sign1 + Nitro attestation documents through `NitroVerifier::verify` / `report`
//! (pinned AWS root), and the COSE and payload decoders alone.
//!
//! Two modes, by the first byte:
//! * anything but `0xff`: the input is the document. It is decoded alone, then verified at a
//!   fixed time inside N03's chain validity, by the production verifier and by the
//!   emulator-accepting one. Oracle: whatever verifies carries the protected header and
//!   payload of a real fixture (a forged payload never verifies).
//! * `0xff`: structure-aware. The rest drives edits of a real fixture's payload (fields
//!   removed, retyped, replaced; PCRs; certificates flipped or swapped; unknown and
//!   duplicate keys), protected and unprotected headers, signature and COSE tag; the
//!   document is re-encoded and verified at the fixture's own time plus an offset.
//!   Oracle: a changed protected header or payload never verifies.
#![no_main]

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use cada_attestation_verifier::chain::ChainCache;
use cada_attestation_verifier::cose;
use cada_attestation_verifier::nitro::{AttestationDocument, NitroPolicy, NitroVerifier};
use cada_attestation_verifier::UnixTime;
use cada_fuzz::{nitro_fixtures, NITRO_AT};
use ciborium::Value;
use libfuzzer_sys::fuzz_target;

fn production() -> &'static NitroVerifier {
    static V: OnceLock<NitroVerifier> = OnceLock::new();
    V.get_or_init(NitroVerifier::default)
}

fn uncached() -> &'static NitroVerifier {
    static V: OnceLock<NitroVerifier> = OnceLock::new();
    V.get_or_init(|| NitroVerifier::default().with_cache(ChainCache::new(0)))
}

fn emulator() -> &'static NitroVerifier {
    static V: OnceLock<NitroVerifier> = OnceLock::new();
    V.get_or_init(|| NitroVerifier::default().insecure_accept_emulator_documents())
}

fn lenient() -> NitroPolicy {
    NitroPolicy {
        allow_debug: true,
        ..NitroPolicy::default()
    }
}

/// The (protected, payload) pairs of the real fixtures.
fn genuine() -> &'static [(Vec<u8>, Vec<u8>)] {
    static G: OnceLock<Vec<(Vec<u8>, Vec<u8>)>> = OnceLock::new();
    G.get_or_init(|| {
        nitro_fixtures()
            .iter()
            .filter_map(|f| cose::decode(&f.bytes, usize::MAX).ok())
            .map(|s| (s.protected, s.payload))
            .collect()
    })
}

fn raw(data: &[u8]) {
    if let Ok(s) = cose::decode(data, cada_attestation_verifier::nitro::MAX_DOCUMENT_LEN) {
        let _ = s.to_be_signed();
        let _ = AttestationDocument::from_payload(&s.payload);
    }
    let policy = lenient();
    if let Ok(v) = production().verify(data, &policy, NITRO_AT) {
        assert!(!v.emulated);
        let s = cose::decode(data, usize::MAX).expect("a verified document decodes");
        assert!(
            genuine().is_empty() || genuine().contains(&(s.protected, s.payload)),
            "a document that is not a fixture verified"
        );
    }
    if data.len() % 2 == 1 {
        let _ = production().report(data, &policy, NITRO_AT);
    }
    let _ = emulator().verify(data, &policy, NITRO_AT);
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Field {
    ModuleId,
    Digest,
    Timestamp,
    Pcrs,
    Certificate,
    Cabundle,
    PublicKey,
    UserData,
    Nonce,
    NitroTpmPcrs,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::ModuleId => "module_id",
            Field::Digest => "digest",
            Field::Timestamp => "timestamp",
            Field::Pcrs => "pcrs",
            Field::Certificate => "certificate",
            Field::Cabundle => "cabundle",
            Field::PublicKey => "public_key",
            Field::UserData => "user_data",
            Field::Nonce => "nonce",
            Field::NitroTpmPcrs => "nitrotpm_pcrs",
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Edit {
    Remove(Field),
    SetBytes(Field, Vec<u8>),
    SetText(Field, String),
    SetInt(Field, i64),
    SetBig(Field, u64),
    SetNull(Field),
    SetEmptyArray(Field),
    SetPcr(u8, Vec<u8>),
    SetPcrKey(u8, i64),
    RemovePcr(u8),
    ReplaceCert(u8, Vec<u8>),
    FlipCert { which: u8, pos: u16, xor: u8 },
    TruncateCert { which: u8, len: u16 },
    DropCabundle(u8),
    SwapCerts(u8, u8),
    LeafIntoCabundle,
    UnknownKey(String),
    IntegerKey(i64),
    Duplicate(Field),
}

#[derive(Arbitrary, Debug)]
enum Protected {
    Keep,
    Alg(i64),
    AlgText(String),
    WithCrit,
    Empty,
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Signature {
    Keep,
    Truncate(u8),
    Flip(u8, u8),
    Raw(Vec<u8>),
    HighS,
}

#[derive(Arbitrary, Debug)]
struct Structured {
    fixture: u8,
    edits: Vec<Edit>,
    protected: Protected,
    unprotected: Option<(i64, i64)>,
    signature: Signature,
    tagged: bool,
    time_offset_ms: i32,
    uncached: bool,
    report: bool,
}

fn get_mut<'a>(m: &'a mut [(Value, Value)], key: &str) -> Option<&'a mut Value> {
    m.iter_mut()
        .find(|(k, _)| matches!(k, Value::Text(t) if t == key))
        .map(|(_, v)| v)
}

fn set(m: &mut Vec<(Value, Value)>, f: Field, v: Value) {
    match get_mut(m, f.name()) {
        Some(slot) => *slot = v,
        None => m.push((Value::Text(f.name().into()), v)),
    }
}

fn certs_mut(m: &mut [(Value, Value)]) -> Vec<&mut Vec<u8>> {
    let mut out = Vec::new();
    for (k, v) in m.iter_mut() {
        match (k, v) {
            (Value::Text(t), Value::Array(a)) if t == "cabundle" => {
                out.extend(a.iter_mut().filter_map(|c| match c {
                    Value::Bytes(b) => Some(b),
                    _ => None,
                }))
            }
            (Value::Text(t), Value::Bytes(b)) if t == "certificate" => out.push(b),
            _ => {}
        }
    }
    out
}

fn apply(m: &mut Vec<(Value, Value)>, e: Edit) {
    match e {
        Edit::Remove(f) => m.retain(|(k, _)| !matches!(k, Value::Text(t) if t == f.name())),
        Edit::SetBytes(f, b) => set(m, f, Value::Bytes(b)),
        Edit::SetText(f, t) => set(m, f, Value::Text(t)),
        Edit::SetInt(f, i) => set(m, f, Value::Integer(i.into())),
        Edit::SetBig(f, i) => set(m, f, Value::Integer(i.into())),
        Edit::SetNull(f) => set(m, f, Value::Null),
        Edit::SetEmptyArray(f) => set(m, f, Value::Array(vec![])),
        Edit::SetPcr(i, v) => {
            if let Some(Value::Map(p)) = get_mut(m, "pcrs") {
                match p.iter_mut().find(|(k, _)| *k == Value::Integer(i.into())) {
                    Some((_, slot)) => *slot = Value::Bytes(v),
                    None => p.push((Value::Integer(i.into()), Value::Bytes(v))),
                }
            }
        }
        Edit::SetPcrKey(i, key) => {
            if let Some(Value::Map(p)) = get_mut(m, "pcrs") {
                let n = p.len().max(1);
                if let Some((k, _)) = p.get_mut(usize::from(i) % n) {
                    *k = Value::Integer(key.into());
                }
            }
        }
        Edit::RemovePcr(i) => {
            if let Some(Value::Map(p)) = get_mut(m, "pcrs") {
                p.retain(|(k, _)| *k != Value::Integer(i.into()));
            }
        }
        Edit::ReplaceCert(w, b) => {
            let mut c = certs_mut(m);
            let n = c.len();
            if let Some(slot) = c.get_mut(usize::from(w) % n.max(1)) {
                **slot = b;
            }
        }
        Edit::FlipCert { which, pos, xor } => {
            let mut c = certs_mut(m);
            let n = c.len();
            if let Some(slot) = c.get_mut(usize::from(which) % n.max(1)) {
                let l = slot.len();
                if let Some(b) = slot.get_mut(usize::from(pos) % l.max(1)) {
                    *b ^= xor;
                }
            }
        }
        Edit::TruncateCert { which, len } => {
            let mut c = certs_mut(m);
            let n = c.len();
            if let Some(slot) = c.get_mut(usize::from(which) % n.max(1)) {
                slot.truncate(usize::from(len));
            }
        }
        Edit::DropCabundle(i) => {
            if let Some(Value::Array(a)) = get_mut(m, "cabundle") {
                let n = a.len();
                if n > 0 {
                    a.remove(usize::from(i) % n);
                }
            }
        }
        Edit::SwapCerts(a, b) => {
            if let Some(Value::Array(arr)) = get_mut(m, "cabundle") {
                let n = arr.len();
                if n > 0 {
                    arr.swap(usize::from(a) % n, usize::from(b) % n);
                }
            }
        }
        Edit::LeafIntoCabundle => {
            let leaf = get_mut(m, "certificate").cloned();
            if let (Some(leaf), Some(Value::Array(a))) = (leaf, get_mut(m, "cabundle")) {
                a.push(leaf);
            }
        }
        Edit::UnknownKey(k) => m.push((Value::Text(k), Value::Null)),
        Edit::IntegerKey(k) => m.push((Value::Integer(k.into()), Value::Null)),
        Edit::Duplicate(f) => {
            if let Some(v) = get_mut(m, f.name()).cloned() {
                m.push((Value::Text(f.name().into()), v));
            }
        }
    }
}

fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(v, &mut out).expect("encoding a Value into a Vec");
    out
}

/// P-384 group order, big-endian: `s` and `n - s` are both valid ECDSA signatures.
const P384_N: [u8; 48] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37, 0x2d, 0xdf,
    0x58, 0x1a, 0x0d, 0xb2, 0x48, 0xb0, 0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc, 0xc5, 0x29, 0x73,
];

fn negate_s(sig: &mut [u8]) {
    if sig.len() != 96 {
        return;
    }
    let s = &mut sig[48..];
    let mut borrow = 0i16;
    for i in (0..48).rev() {
        let d = i16::from(P384_N[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        s[i] = d.rem_euclid(256) as u8;
    }
}

fn structured(data: &[u8]) {
    let fixtures = nitro_fixtures();
    if fixtures.is_empty() {
        return;
    }
    let Ok(mut input) = Structured::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let fx = &fixtures[usize::from(input.fixture) % fixtures.len()];
    let orig = cose::decode(&fx.bytes, usize::MAX).expect("fixtures decode");
    let Ok(Value::Map(mut payload_map)) = ciborium::de::from_reader::<Value, _>(&orig.payload[..])
    else {
        return;
    };
    input.edits.truncate(8);
    let untouched = input.edits.is_empty()
        && matches!(input.protected, Protected::Keep)
        && input.unprotected.is_none()
        && matches!(input.signature, Signature::Keep)
        && input.time_offset_ms == 0;
    for e in std::mem::take(&mut input.edits) {
        apply(&mut payload_map, e);
    }
    let payload = encode(&Value::Map(payload_map));
    let protected = match input.protected {
        Protected::Keep => orig.protected.clone(),
        Protected::Alg(a) => encode(&Value::Map(vec![(
            Value::Integer(1.into()),
            Value::Integer(a.into()),
        )])),
        Protected::AlgText(t) => encode(&Value::Map(vec![(
            Value::Integer(1.into()),
            Value::Text(t),
        )])),
        Protected::WithCrit => encode(&Value::Map(vec![
            (Value::Integer(1.into()), Value::Integer((-35).into())),
            (
                Value::Integer(2.into()),
                Value::Array(vec![Value::Integer(1.into())]),
            ),
        ])),
        Protected::Empty => Vec::new(),
        Protected::Raw(r) => r,
    };
    let unprotected = match input.unprotected {
        None => vec![],
        Some((k, v)) => vec![(Value::Integer(k.into()), Value::Integer(v.into()))],
    };
    let mut signature = orig.signature.clone();
    match input.signature {
        Signature::Keep => {}
        Signature::Truncate(n) => signature.truncate(usize::from(n)),
        Signature::Flip(p, x) => {
            let l = signature.len();
            if let Some(b) = signature.get_mut(usize::from(p) % l.max(1)) {
                *b ^= x;
            }
        }
        Signature::Raw(r) => signature = r,
        Signature::HighS => negate_s(&mut signature),
    }
    let mut doc = Value::Array(vec![
        Value::Bytes(protected.clone()),
        Value::Map(unprotected),
        Value::Bytes(payload.clone()),
        Value::Bytes(signature),
    ]);
    if input.tagged {
        doc = Value::Tag(18, Box::new(doc));
    }
    let bytes = encode(&doc);
    let at = UnixTime::from_millis(
        fx.at
            .as_millis()
            .saturating_add_signed(i64::from(input.time_offset_ms)),
    );
    let v = if input.uncached {
        uncached()
    } else {
        production()
    };
    let policy = lenient();
    let result = v.verify(&bytes, &policy, at);
    // The harness must reach the checks after the signature: a fixture re-encoded without
    // changes (tagged or not) verifies at its own time.
    assert!(
        !untouched || result.is_ok(),
        "an unmodified fixture failed: {result:?}"
    );
    if result.is_ok() {
        assert_eq!(payload, orig.payload, "a changed payload verified");
        assert_eq!(
            protected, orig.protected,
            "a changed protected header verified"
        );
    }
    if input.report {
        let r = v.report(&bytes, &policy, at);
        assert_eq!(
            r.failures.is_empty(),
            result.is_ok(),
            "report mode and verify disagree: {:?}",
            r.failures
        );
    }
}

fuzz_target!(
    init: {
        cada_fuzz::write_seeds_if_asked("nitro_document");
    },
    |data: &[u8]| {
        match data.split_first() {
            Some((0xff, rest)) => structured(rest),
            _ => raw(data),
        }
    }
);
