//! Real AWS Nitro attestation documents from `$CADA_FIXTURES`: every one verifies at its own
//! timestamp and reports the fields the fixtures index records; every class of tampering
//! is rejected with its own error. Tests are generated over all fixtures.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)] // test code: casts of generated values, no outside bytes
mod common;
mod nitro_encode;

use std::collections::BTreeMap;

use cada_attestation_verifier::chain::{ChainCache, TrustAnchor};
use cada_attestation_verifier::cose;
use cada_attestation_verifier::nitro::{NitroPolicy, NitroVerifier};
use cada_attestation_verifier::{roots, UnixTime, VerifyError};
use common::{iso_to_ms, nitro_docs};

fn lenient() -> NitroPolicy {
    NitroPolicy {
        allow_debug: true,
        ..NitroPolicy::default()
    }
}

fn at(meta: &serde_json::Value) -> UnixTime {
    UnixTime::from_millis(meta["timestamp_ms"].as_u64().expect("timestamp_ms"))
}

fn opt_hex(v: &Option<Vec<u8>>) -> Option<String> {
    v.as_ref().map(hex::encode)
}

#[test]
fn every_fixture_verifies_at_its_timestamp_with_the_indexed_fields() {
    let verifier = NitroVerifier::default();
    for (meta, bytes) in nitro_docs() {
        let name = meta["file"].as_str().unwrap();
        let v = verifier
            .verify(&bytes, &lenient(), at(&meta))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let d = &v.document;
        assert_eq!(d.module_id, meta["module_id"].as_str().unwrap(), "{name}");
        assert_eq!(
            d.timestamp.as_millis(),
            meta["timestamp_ms"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            d.pcrs.len() as u64,
            meta["num_pcrs"].as_u64().unwrap(),
            "{name}"
        );
        let nonzero: BTreeMap<String, String> = d
            .pcrs
            .iter()
            .filter(|(_, v)| v.iter().any(|b| *b != 0))
            .map(|(k, v)| (k.to_string(), hex::encode(v)))
            .collect();
        let want: BTreeMap<String, String> = meta["pcrs_nonzero_hex"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        assert_eq!(nonzero, want, "{name}: PCRs");
        assert_eq!(
            hex::encode(&d.pcrs[&0]),
            meta["PCR0"].as_str().unwrap(),
            "{name}"
        );
        let null_keys: Vec<&str> = meta["null_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        for (key, got) in [
            ("public_key", &d.public_key),
            ("user_data", &d.user_data),
            ("nonce", &d.nonce),
        ] {
            let expect = if null_keys.contains(&key) {
                None
            } else {
                meta[key].as_str().map(str::to_owned)
            };
            assert_eq!(opt_hex(got), expect, "{name}: {key}");
        }
        assert_eq!(
            d.cabundle.len() as u64,
            meta["cabundle_len"].as_u64().unwrap()
        );
        assert_eq!(v.root_fingerprint, roots::AWS_NITRO_ROOT_G1_SHA256);
        assert_eq!(
            v.debug,
            meta["PCR0"].as_str().unwrap().chars().all(|c| c == '0'),
            "{name}: debug"
        );
        assert!(!v.emulated);
        assert_eq!(
            v.valid_until.as_millis(),
            iso_to_ms(meta["chain_valid_until"].as_str().unwrap()),
            "{name}: valid_until"
        );
    }
}

#[test]
fn one_second_outside_the_leaf_validity_is_rejected() {
    let verifier = NitroVerifier::default();
    for (meta, bytes) in nitro_docs() {
        let name = meta["file"].as_str().unwrap();
        let leaf = meta["cabundle_len"].as_u64().unwrap() as usize;
        let nb = iso_to_ms(meta["leaf_notBefore"].as_str().unwrap());
        let na = iso_to_ms(meta["leaf_notAfter"].as_str().unwrap());
        // Exactly at the edges the leaf is valid (the document timestamp lies within).
        let mut p = lenient();
        p.max_future_skew_ms = u64::MAX;
        assert!(
            verifier
                .verify(&bytes, &p, UnixTime::from_millis(na))
                .is_ok(),
            "{name} at notAfter"
        );
        match verifier.verify(&bytes, &p, UnixTime::from_millis(nb - 1000)) {
            Err(VerifyError::CertificateNotYetValid { index, .. }) => {
                assert_eq!(index, leaf, "{name}");
            }
            other => panic!("{name}: notBefore-1s gave {other:?}"),
        }
        match verifier.verify(&bytes, &p, UnixTime::from_millis(na + 1000)) {
            Err(VerifyError::CertificateExpired { index, .. }) => assert_eq!(index, leaf, "{name}"),
            other => panic!("{name}: notAfter+1s gave {other:?}"),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("sub-slice present")
}

#[test]
fn every_single_flipped_byte_is_rejected_with_the_error_of_its_region() {
    let verifier = NitroVerifier::default();
    for (meta, bytes) in nitro_docs() {
        let name = meta["file"].as_str().unwrap();
        let t = at(&meta);
        let sign1 = cose::decode(&bytes, 1 << 16).unwrap();
        let doc = verifier.verify(&bytes, &lenient(), t).unwrap().document;
        let payload_at = find(&bytes, &sign1.payload);
        let sig_at = bytes.len() - 96;
        let mut regions: Vec<(&str, std::ops::Range<usize>)> =
            vec![("signature", sig_at..bytes.len())];
        for (i, c) in doc.cabundle.iter().enumerate() {
            let s = find(&bytes, c);
            regions.push((if i == 0 { "root" } else { "cabundle" }, s..s + c.len()));
        }
        let leaf_at = find(&bytes, &doc.certificate);
        regions.push(("leaf", leaf_at..leaf_at + doc.certificate.len()));
        regions.push(("payload", payload_at..payload_at + sign1.payload.len()));
        let mut seen = BTreeMap::<&str, usize>::new();
        for (region, range) in regions {
            for pos in range {
                if region == "payload" && (payload_at..bytes.len()).contains(&pos) {
                    // certificates inside the payload were covered by their own region
                    let inside_cert = doc
                        .cabundle
                        .iter()
                        .chain(std::iter::once(&doc.certificate))
                        .any(|c| {
                            let s = find(&bytes, c);
                            (s..s + c.len()).contains(&pos)
                        });
                    if inside_cert {
                        continue;
                    }
                }
                let mut m = bytes.clone();
                m[pos] ^= 0x01;
                let Err(err) = verifier.verify(&m, &lenient(), t) else {
                    panic!("{name}: flipping byte {pos} ({region}) was accepted")
                };
                let code = err.code();
                let ok = match region {
                    "signature" => matches!(err, VerifyError::DocumentSignature),
                    "root" => matches!(err, VerifyError::UntrustedRoot { .. }),
                    "cabundle" | "leaf" => code.starts_with("chain."),
                    _ => {
                        code.starts_with("doc.")
                            || code == "cose.signature"
                            || code.starts_with("chain.")
                    }
                };
                assert!(ok, "{name}: byte {pos} in {region} gave {code}: {err}");
                *seen.entry(region).or_default() += 1;
            }
        }
        assert!(
            seen["payload"] > 1000 && seen["signature"] == 96,
            "{name}: {seen:?}"
        );
    }
}

#[test]
fn flips_in_cached_intermediates_are_still_caught() {
    let verifier = NitroVerifier::default();
    let (meta, bytes) = nitro_docs().remove(2);
    verifier.verify(&bytes, &lenient(), at(&meta)).unwrap();
    assert_eq!(
        verifier.cache().len(),
        3,
        "regional, zonal and instance CAs are cached"
    );
    let doc = verifier
        .verify(&bytes, &lenient(), at(&meta))
        .unwrap()
        .document;
    let s = find(&bytes, &doc.cabundle[2]);
    let mut m = bytes.clone();
    m[s + doc.cabundle[2].len() - 10] ^= 0x80;
    let err = verifier.verify(&m, &lenient(), at(&meta)).unwrap_err();
    assert_eq!(err, VerifyError::CertificateSignature { index: 2 });
}

#[test]
fn cached_chain_still_expires() {
    let verifier = NitroVerifier::default();
    for (meta, bytes) in nitro_docs() {
        verifier.verify(&bytes, &lenient(), at(&meta)).unwrap();
        // The zonal CA lives about 5 days; ten days later the cached prefix must not help.
        let later = UnixTime::from_millis(at(&meta).as_millis() + 10 * 86_400_000);
        let mut p = lenient();
        p.max_future_skew_ms = 0;
        let err = verifier.verify(&bytes, &p, later).unwrap_err();
        assert!(
            matches!(err, VerifyError::CertificateExpired { .. }),
            "{err:?}"
        );
    }
}

fn resign_with_protected(bytes: &[u8], protected: &[u8]) -> Vec<u8> {
    let s = cose::decode(bytes, 1 << 16).unwrap();
    cose::encode_sign1(protected, &s.payload, &s.signature)
}

#[test]
fn alg_header_must_be_es384() {
    let verifier = NitroVerifier::default();
    for (meta, bytes) in nitro_docs() {
        let es256 = resign_with_protected(&bytes, &[0xa1, 0x01, 0x26]);
        assert_eq!(
            verifier.verify(&es256, &lenient(), at(&meta)).unwrap_err(),
            VerifyError::UnsupportedAlgorithm("-7".into())
        );
        for protected in [&[0xa0][..], &[][..]] {
            let none = resign_with_protected(&bytes, protected);
            assert_eq!(
                verifier.verify(&none, &lenient(), at(&meta)).unwrap_err(),
                VerifyError::MissingAlgorithm
            );
        }
        let text = resign_with_protected(&bytes, &[0xa1, 0x01, 0x64, b'n', b'o', b'n', b'e']);
        assert!(matches!(
            verifier.verify(&text, &lenient(), at(&meta)).unwrap_err(),
            VerifyError::UnsupportedAlgorithm(_)
        ));
        // {1: -35, 2: [1]}: crit is refused
        let crit = resign_with_protected(&bytes, &[0xa2, 0x01, 0x38, 0x22, 0x02, 0x81, 0x01]);
        assert_eq!(
            verifier.verify(&crit, &lenient(), at(&meta)).unwrap_err(),
            VerifyError::CriticalHeader
        );
        // The emulator's unsigned alg is refused unless emulator mode is on.
        let unsigned = resign_with_protected(&bytes, &[0xa1, 0x01, 0x20]);
        assert_eq!(
            verifier
                .verify(&unsigned, &lenient(), at(&meta))
                .unwrap_err(),
            VerifyError::UnsignedEmulatorDocument
        );
    }
}

#[test]
fn tagged_documents_verify_too() {
    let verifier = NitroVerifier::default();
    for (meta, bytes) in nitro_docs() {
        let mut tagged = vec![0xd2];
        tagged.extend_from_slice(&bytes);
        verifier.verify(&tagged, &lenient(), at(&meta)).unwrap();
    }
}

#[test]
fn policy_pcr_nonce_debug_and_age() {
    let verifier = NitroVerifier::default();
    for (meta, bytes) in nitro_docs() {
        let name = meta["file"].as_str().unwrap();
        let doc = verifier
            .verify(&bytes, &lenient(), at(&meta))
            .unwrap()
            .document;
        // the right PCR set passes; one wrong byte in any PCR fails
        let right: BTreeMap<u8, Vec<u8>> = doc
            .pcrs
            .iter()
            .filter(|(i, _)| **i <= 8)
            .map(|(i, v)| (*i, v.clone()))
            .collect();
        let mut p = lenient();
        p.pcr_sets = vec![right.clone()];
        verifier.verify(&bytes, &p, at(&meta)).unwrap();
        for idx in right.keys() {
            let mut wrong = right.clone();
            wrong.get_mut(idx).unwrap()[47] ^= 1;
            p.pcr_sets = vec![wrong.clone()];
            assert!(
                matches!(
                    verifier.verify(&bytes, &p, at(&meta)),
                    Err(VerifyError::PcrMismatch(_))
                ),
                "{name}"
            );
            // during a roll-out, either of two sets is accepted
            p.pcr_sets = vec![wrong, right.clone()];
            verifier.verify(&bytes, &p, at(&meta)).unwrap();
        }
        let mut p = lenient();
        p.expected_nonce = Some(b"not the nonce".to_vec());
        assert!(
            matches!(
                verifier.verify(&bytes, &p, at(&meta)),
                Err(VerifyError::NonceMismatch { .. })
            ),
            "{name}"
        );
        if let Some(n) = &doc.nonce {
            p.expected_nonce = Some(n.clone());
            verifier.verify(&bytes, &p, at(&meta)).unwrap();
        }
        let strict = NitroPolicy::default();
        let res = verifier.verify(&bytes, &strict, at(&meta));
        if doc.is_debug() {
            assert_eq!(res.unwrap_err(), VerifyError::DebugMode, "{name}");
        } else {
            res.unwrap();
        }
        let mut p = lenient();
        p.max_age_ms = Some(1000);
        let later = UnixTime::from_millis(at(&meta).as_millis() + 1001);
        assert!(matches!(
            verifier.verify(&bytes, &p, later),
            Err(VerifyError::DocumentTooOld { .. })
        ));
        let earlier = UnixTime::from_millis(at(&meta).as_millis() - 1);
        assert!(matches!(
            verifier.verify(&bytes, &lenient(), earlier),
            Err(VerifyError::DocumentFromFuture { ahead_ms: 1 })
        ));
    }
}

#[test]
fn report_mode_lists_every_failure() {
    let verifier = NitroVerifier::default();
    let (meta, bytes) = nitro_docs().remove(0); // N01: debug
    let policy = NitroPolicy {
        pcr_sets: vec![BTreeMap::from([(0u8, vec![1u8; 48])])],
        expected_nonce: Some(vec![9]),
        ..NitroPolicy::default()
    };
    let late = UnixTime::from_millis(at(&meta).as_millis() + 4 * 3_600_000);
    let report = verifier.report(&bytes, &policy, late);
    let codes: Vec<&str> = report
        .failures
        .iter()
        .map(cada_attestation_verifier::VerifyError::code)
        .collect();
    for want in [
        "chain.expired",
        "policy.debug",
        "policy.pcr",
        "policy.nonce",
    ] {
        assert!(codes.contains(&want), "{codes:?} lacks {want}");
    }
    assert!(report.document.is_some());
    let clean = verifier.report(&bytes, &lenient(), at(&meta));
    assert!(clean.failures.is_empty(), "{:?}", clean.failures);
}

#[test]
fn truncation_at_every_length_is_a_typed_error() {
    let verifier = NitroVerifier::default().with_cache(ChainCache::new(0));
    for (meta, bytes) in nitro_docs() {
        for len in 0..bytes.len() {
            let err = verifier
                .verify(&bytes[..len], &lenient(), at(&meta))
                .unwrap_err();
            assert!(matches!(err, VerifyError::Cose(_)), "len {len}: {err:?}");
        }
    }
}

#[test]
fn garbage_deep_nesting_and_duplicates() {
    let verifier = NitroVerifier::default();
    let t = UnixTime::from_secs(1_700_000_000);
    let huge = vec![0x5au8; 16 * 1024 * 1024];
    assert!(matches!(
        verifier.verify(&huge, &lenient(), t),
        Err(VerifyError::TooLarge { .. })
    ));
    // pseudo-random garbage of every small size
    let mut x = 0x9e3779b97f4a7c15u64;
    for len in 0..2048 {
        let g: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(verifier.verify(&g, &lenient(), t).is_err());
    }
    let mut deep = vec![0x81u8; 10_000];
    deep.push(0);
    assert!(matches!(
        verifier.verify(&deep, &lenient(), t),
        Err(VerifyError::Cose(_))
    ));
    let deep_payload = cose::encode_sign1(&nitro_encode::PROTECTED_ES384, &deep, &[0u8; 96]);
    assert!(matches!(
        verifier.verify(&deep_payload, &lenient(), t),
        Err(VerifyError::Payload(_))
    ));

    for (meta, bytes) in nitro_docs() {
        let s = cose::decode(&bytes, 1 << 16).unwrap();
        assert_eq!(s.payload[0], 0xa9, "definite map of 9");
        let mut payload = s.payload.clone();
        payload[0] = 0xaa;
        payload.extend_from_slice(&[0x65, b'n', b'o', b'n', b'c', b'e', 0xf6]);
        let dup = cose::encode_sign1(&nitro_encode::PROTECTED_ES384, &payload, &s.signature);
        assert_eq!(
            verifier.verify(&dup, &lenient(), at(&meta)).unwrap_err(),
            VerifyError::DuplicateKey("Text(\"nonce\")".into())
        );
        // NitroTPM documents are not enclave documents
        let mut tpm = s.payload.clone();
        tpm[0] = 0xaa;
        tpm.extend_from_slice(&[0x6d]);
        tpm.extend_from_slice(b"nitrotpm_pcrs");
        tpm.push(0xa0);
        let tpm = cose::encode_sign1(&nitro_encode::PROTECTED_ES384, &tpm, &s.signature);
        assert_eq!(
            verifier.verify(&tpm, &lenient(), at(&meta)).unwrap_err(),
            VerifyError::NotAnEnclaveDocument
        );
    }
}

#[test]
fn indefinite_length_payload_map_verifies_over_bytes_as_received() {
    // Re-encode a document with an indefinite-length map, signed by a self-made chain that
    // the verifier is told to trust: the signature covers exactly those bytes.
    let chain = SelfMadeChain::new();
    let (meta, bytes) = nitro_docs().remove(2);
    let real = NitroVerifier::default()
        .verify(&bytes, &lenient(), at(&meta))
        .unwrap()
        .document;
    let mut doc = real.clone();
    doc.cabundle = vec![chain.root_der.clone(), chain.ca_der.clone()];
    doc.certificate = chain.leaf_der.clone();
    let definite = nitro_encode::encode_payload(&doc);
    let mut indefinite = vec![0xbf];
    indefinite.extend_from_slice(&definite[1..]);
    indefinite.push(0xff);
    let signed = nitro_encode::sign_es384(&indefinite, &chain.leaf_key);
    let mut store = roots::nitro_store();
    store.add(TrustAnchor::from_der("self-made", &chain.root_der).unwrap());
    let trusting = NitroVerifier::new(store);
    let t = UnixTime::from_secs(chain.now_secs);
    let mut p = lenient();
    p.max_future_skew_ms = u64::MAX;
    let v = trusting.verify(&signed, &p, t).unwrap();
    assert_eq!(v.document.pcrs, real.pcrs);
    // The pinned-only verifier refuses the same document: the root is self-made.
    assert!(matches!(
        NitroVerifier::default().verify(&signed, &p, t),
        Err(VerifyError::UntrustedRoot { .. })
    ));
}

#[test]
fn a_chain_ending_in_a_self_made_root_is_untrusted() {
    let chain = SelfMadeChain::new();
    for (meta, bytes) in nitro_docs() {
        let real = NitroVerifier::default()
            .verify(&bytes, &lenient(), at(&meta))
            .unwrap()
            .document;
        let mut doc = real.clone();
        // Keep AWS's intermediates but put a self-made root in front: untrusted root.
        doc.cabundle[0] = chain.root_der.clone();
        let forged = nitro_encode::sign_es384(&nitro_encode::encode_payload(&doc), &chain.leaf_key);
        assert!(matches!(
            NitroVerifier::default().verify(&forged, &lenient(), at(&meta)),
            Err(VerifyError::UntrustedRoot { .. })
        ));
        // A fully self-made chain whose root carries AWS's exact subject name: untrusted too.
        doc.cabundle = vec![chain.root_der.clone(), chain.ca_der.clone()];
        doc.certificate = chain.leaf_der.clone();
        let forged = nitro_encode::sign_es384(&nitro_encode::encode_payload(&doc), &chain.leaf_key);
        assert!(matches!(
            NitroVerifier::default().verify(&forged, &lenient(), at(&meta)),
            Err(VerifyError::UntrustedRoot { .. })
        ));
    }
}

/// root → CA → leaf, all P-384, valid from an hour ago for a day.
struct SelfMadeChain {
    root_der: Vec<u8>,
    ca_der: Vec<u8>,
    leaf_der: Vec<u8>,
    leaf_key: aws_lc_rs::signature::EcdsaKeyPair,
    now_secs: u64,
}

impl SelfMadeChain {
    fn new() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
            PKCS_ECDSA_P384_SHA384,
        };
        let now = time::OffsetDateTime::now_utc();
        let params = |cn: &str, ca: bool| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.not_before = now - time::Duration::hours(1);
            p.not_after = now + time::Duration::days(1);
            if ca {
                p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
            } else {
                p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            }
            p
        };
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let root_params = params("aws.nitro-enclaves", true);
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::from_params(&root_params, &root_key);
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let ca_params = params("ca", true);
        let ca = ca_params.signed_by(&ca_key, &root_issuer).unwrap();
        let ca_issuer = Issuer::from_params(&ca_params, &ca_key);
        let leaf_kp = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let leaf = params("leaf", false)
            .signed_by(&leaf_kp, &ca_issuer)
            .unwrap();
        let leaf_key = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            &leaf_kp.serialize_der(),
        )
        .unwrap();
        SelfMadeChain {
            root_der: root.der().to_vec(),
            ca_der: ca.der().to_vec(),
            leaf_der: leaf.der().to_vec(),
            leaf_key,
            now_secs: now.unix_timestamp() as u64,
        }
    }
}
