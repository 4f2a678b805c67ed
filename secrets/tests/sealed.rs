//! The sealed bundle end to end in one process: the owner seals, the enclave side opens,
//! and every change, substitution and malformation is refused with its code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cada_contract::{OwnerAlg, OwnerKey};
use cada_secrets::cose::{Encrypt0, Sign1};
use cada_secrets::data::{open_data, seal_data};
use cada_secrets::{
    inspect_bundle, open_bundle, seal_bundle, HpkeKeyPair, Recipient, SealTarget, SecretKind,
    SecretUsage,
};
use ciborium::Value;

const NOW: u64 = 1_800_000_000;
const VALUE: &[u8] = b"ghp_s3cr3t-value-0123456789";

fn usage() -> SecretUsage {
    SecretUsage {
        name: "github".into(),
        upstream: "https://api.github.com".into(),
        path_prefix: "/repos/acme/".into(),
        header: "authorization".into(),
        format: "Bearer {}".into(),
        cas: vec![],
        expires_at: NOW + 3600,
        credential_endpoints: vec![],
        kind: SecretKind::Static,
    }
}

struct Enclave {
    keys: HpkeKeyPair,
    jkt: String,
}

impl Enclave {
    fn new() -> Self {
        Enclave {
            keys: HpkeKeyPair::generate(),
            jkt: "enclave-jkt-1".into(),
        }
    }
    fn target(&self) -> SealTarget {
        SealTarget {
            hpke: self.keys.public(),
            jkt: self.jkt.clone(),
        }
    }
    fn open(&self, owner: &str, bundle: &[u8], now: u64) -> Result<Vec<u8>, String> {
        open_bundle(
            bundle,
            &Recipient {
                keys: &self.keys,
                jkt: &self.jkt,
                owner: Some(owner),
            },
            now,
        )
        .map(|s| s.value.to_vec())
        .map_err(|e| e.code().to_owned())
    }
}

fn enc(v: &Value) -> Vec<u8> {
    let mut out = vec![];
    ciborium::ser::into_writer(v, &mut out).unwrap();
    out
}

#[test]
fn round_trip_for_both_owner_algorithms() {
    for alg in [OwnerAlg::Ed25519, OwnerAlg::Es256] {
        let owner = OwnerKey::generate(alg).unwrap();
        let e = Enclave::new();
        let b = seal_bundle(&owner, &e.target(), &usage(), VALUE, NOW).unwrap();
        let opened = open_bundle(
            &b.bytes,
            &Recipient {
                keys: &e.keys,
                jkt: &e.jkt,
                owner: Some(owner.did()),
            },
            NOW + 10,
        )
        .unwrap();
        assert_eq!(opened.value.as_slice(), VALUE);
        assert_eq!(opened.usage, usage());
        assert_eq!(opened.digest, b.digest);
        assert_eq!(opened.owner, owner.did());
        assert!(!format!("{opened:?}").contains("s3cr3t"));
        let info = inspect_bundle(&b.bytes).unwrap();
        assert_eq!(info.name, "github");
        assert_eq!(info.hpke, e.keys.public());
        // The value appears nowhere in the bundle in clear.
        assert!(!b.bytes.windows(VALUE.len()).any(|w| w == VALUE));
    }
}

#[test]
fn another_enclave_another_owner_expired_and_unlocked_are_refused() {
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let e = Enclave::new();
    let b = seal_bundle(&owner, &e.target(), &usage(), VALUE, NOW).unwrap();
    // Another enclave (another HPKE key, same jkt claimed) and the same HPKE key under
    // another signing key.
    let other = Enclave::new();
    assert_eq!(
        other.open(owner.did(), &b.bytes, NOW).unwrap_err(),
        "secret.sealed_for_other_enclave"
    );
    let same_hpke_other_jkt = Recipient {
        keys: &e.keys,
        jkt: "another-jkt",
        owner: Some(owner.did()),
    };
    assert_eq!(
        open_bundle(&b.bytes, &same_hpke_other_jkt, NOW)
            .unwrap_err()
            .code(),
        "secret.sealed_for_other_enclave"
    );
    // Another owner signed it.
    let mallory = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let mb = seal_bundle(&mallory, &e.target(), &usage(), b"evil", NOW).unwrap();
    assert_eq!(
        e.open(owner.did(), &mb.bytes, NOW).unwrap_err(),
        "secret.other_owner"
    );
    // Mallory's bundle relabelled as the owner's (kid rewritten): the signature fails.
    let mut s = Sign1::decode(&mb.bytes, 1 << 20).unwrap();
    let protected = enc(&Value::Map(vec![
        (Value::Integer(1.into()), Value::Integer((-8).into())),
        (
            Value::Integer(4.into()),
            Value::Bytes(owner.kid().as_bytes().to_vec()),
        ),
    ]));
    s.protected = protected.clone();
    let forged = enc(&Value::Tag(
        18,
        Box::new(Value::Array(vec![
            Value::Bytes(protected),
            Value::Map(vec![]),
            Value::Bytes(s.payload.clone()),
            Value::Bytes(s.signature.clone()),
        ])),
    ));
    assert_eq!(
        e.open(owner.did(), &forged, NOW).unwrap_err(),
        "secret.tampered"
    );
    // Expired at the enclave's clock; sealed in the far future.
    assert_eq!(
        e.open(owner.did(), &b.bytes, NOW + 3600).unwrap_err(),
        "secret.expired"
    );
    assert_eq!(
        e.open(owner.did(), &b.bytes, NOW - 1000).unwrap_err(),
        "secret.expired"
    );
    // Not locked: nothing is accepted.
    let unlocked = Recipient {
        keys: &e.keys,
        jkt: &e.jkt,
        owner: None,
    };
    assert_eq!(
        open_bundle(&b.bytes, &unlocked, NOW).unwrap_err().code(),
        "secret.other_owner"
    );
    // The owner refuses to seal an expired usage.
    let mut u = usage();
    u.expires_at = NOW;
    assert_eq!(
        seal_bundle(&owner, &e.target(), &u, VALUE, NOW)
            .unwrap_err()
            .code(),
        "secret.expired"
    );
}

#[test]
fn every_flipped_byte_is_refused() {
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let e = Enclave::new();
    let b = seal_bundle(&owner, &e.target(), &usage(), VALUE, NOW).unwrap();
    let s = Sign1::decode(&b.bytes, 1 << 20).unwrap();
    // Where each part sits in the bundle, to name the code a flip there must give.
    let find = |needle: &[u8]| {
        b.bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
    };
    let sig_at = find(&s.signature);
    let payload_at = find(&s.payload);
    let ct_at = find(b"ct") + 2;
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..b.bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut m = b.bytes.clone();
            m[i] ^= bit;
            let code = e
                .open(owner.did(), &m, NOW)
                .expect_err("a flipped byte opened");
            if i >= payload_at && i < payload_at + s.payload.len() {
                // The ciphertext, the context (name, usage, keys, owner): the signature.
                assert_eq!(code, "secret.tampered", "flip in payload byte {i}");
            }
            if i >= sig_at {
                assert_eq!(code, "secret.tampered", "flip in signature byte {i}");
            }
            *codes.entry(code).or_default() += 1;
        }
    }
    // Flips in the ciphertext, the context (usage, name, keys) and the signature are
    // caught by the signature before the payload is read; the others break the structure
    // or name another signer.
    assert!(codes.contains_key("secret.tampered"), "{codes:?}");
    assert!(
        codes.keys().all(|c| [
            "secret.tampered",
            "secret.malformed",
            "secret.other_owner",
            "secret.unknown",
            "secret.too_large"
        ]
        .contains(&c.as_str())),
        "{codes:?}"
    );
    assert!(payload_at < ct_at && ct_at < sig_at);
}

#[test]
fn truncation_at_every_length_and_oversize_and_deep_cbor() {
    let owner = OwnerKey::generate(OwnerAlg::Es256).unwrap();
    let e = Enclave::new();
    let b = seal_bundle(&owner, &e.target(), &usage(), VALUE, NOW).unwrap();
    for n in 0..b.bytes.len() {
        let code = e.open(owner.did(), &b.bytes[..n], NOW).unwrap_err();
        assert_eq!(code, "secret.malformed", "truncated at {n}");
    }
    let mut big = b.bytes.clone();
    big.resize(cada_secrets::MAX_BUNDLE_LEN + 1, 0);
    assert_eq!(
        e.open(owner.did(), &big, NOW).unwrap_err(),
        "secret.too_large"
    );
    let mut trailing = b.bytes.clone();
    trailing.push(0);
    assert_eq!(
        e.open(owner.did(), &trailing, NOW).unwrap_err(),
        "secret.malformed"
    );
    // 10,000 nested arrays, and a 4 GiB byte-string length claim.
    let deep: Vec<u8> = std::iter::repeat_n(0x81u8, 10_000).chain([0x00]).collect();
    assert_eq!(
        e.open(owner.did(), &deep, NOW).unwrap_err(),
        "secret.malformed"
    );
    let claim = [0x5a, 0xff, 0xff, 0xff, 0xff, 0x00];
    assert_eq!(
        e.open(owner.did(), &claim, NOW).unwrap_err(),
        "secret.malformed"
    );
    assert!(Encrypt0::decode(&deep, 1 << 20).is_err());
}

/// The owner signs two bundles; the host swaps their ciphertexts and — even were it able to
/// re-sign — the AEAD refuses: the ciphertext is bound to its own context (name, usage,
/// keys, owner), not only by the signature.
#[test]
fn a_ciphertext_does_not_open_under_another_context() {
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let e = Enclave::new();
    let a = seal_bundle(&owner, &e.target(), &usage(), VALUE, NOW).unwrap();
    let mut other_usage = usage();
    other_usage.upstream = "https://evil.example".into();
    let b = seal_bundle(&owner, &e.target(), &other_usage, b"x", NOW).unwrap();
    let payload_of = |bytes: &[u8]| {
        let s = Sign1::decode(bytes, 1 << 20).unwrap();
        let Value::Map(m) = ciborium::de::from_reader::<Value, _>(s.payload.as_slice()).unwrap()
        else {
            panic!()
        };
        m
    };
    let pa = payload_of(&a.bytes);
    let pb = payload_of(&b.bytes);
    // a's ciphertext (the real token) in b's context (the evil upstream), re-signed by the
    // owner key as a host cannot: still refused by the AEAD.
    let swapped = enc(&Value::Map(vec![
        (Value::Text("ct".into()), pa[0].1.clone()),
        (Value::Text("ctx".into()), pb[1].1.clone()),
    ]));
    let resigned = Sign1::sign(-8, owner.kid(), &swapped, |m| {
        Ok(owner.sign_bytes(m).unwrap())
    })
    .unwrap();
    assert_eq!(
        e.open(owner.did(), &resigned, NOW).unwrap_err(),
        "secret.tampered"
    );
}

#[test]
fn data_envelopes_open_only_for_their_enclave_and_label() {
    let e = Enclave::new();
    let env = seal_data(&e.target(), "report", b"payload").unwrap();
    assert_eq!(
        open_data(&e.keys, &e.jkt, "report", &env)
            .unwrap()
            .as_slice(),
        b"payload"
    );
    assert_eq!(
        open_data(&e.keys, &e.jkt, "other", &env)
            .unwrap_err()
            .code(),
        "secret.tampered"
    );
    assert_eq!(
        open_data(&e.keys, "other-jkt", "report", &env)
            .unwrap_err()
            .code(),
        "secret.tampered"
    );
    let other = Enclave::new();
    assert_eq!(
        open_data(&other.keys, &e.jkt, "report", &env)
            .unwrap_err()
            .code(),
        "secret.sealed_for_other_enclave"
    );
    assert_eq!(
        seal_data(&e.target(), "Bad Label", b"x")
            .unwrap_err()
            .code(),
        "secret.usage_invalid"
    );
    for n in 0..env.len() {
        assert!(open_data(&e.keys, &e.jkt, "report", &env[..n]).is_err());
    }
}
