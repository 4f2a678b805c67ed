//! `TPMT_PUBLIC` (`tpm::structs::parse_public`), the attribute rules of attestation and
//! certified keys (`tpm::check_ak`, `tpm::check_certified_key`), the certified key's JWK
//! (`tpm::key_jwk`) and SubjectPublicKeyInfo keys (`tpm::public_key_from_spki`).
//!
//! Input: the bytes of a TPMT_PUBLIC (also tried as an SPKI). Oracles: a parsed object's
//! name is nameAlg ‖ H(bytes) of the hash's length; a key accepted as a certified key is an
//! ECC P-256 signing key with fixedTPM, fixedParent and sensitiveDataOrigin set and
//! restricted clear, whose JWK has the P-256 shape; an accepted AK is restricted and signs.
#![no_main]

use cada_attestation_verifier::tpm::structs::{digest_len, parse_public, PublicKey};
use cada_attestation_verifier::tpm::{
    check_ak, check_certified_key, key_jwk, public_key_from_spki,
};
use cada_protocol::tpm::{attrs, AK_ATTRS_REQUIRED, KEY_ATTRS_REQUIRED};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        cada_fuzz::write_seeds_if_asked("tpm_public");
    },
    |data: &[u8]| {
        let _ = public_key_from_spki(data);
        let Ok(p) = parse_public(data) else {
            return;
        };
        if let Some(name) = p.name(data) {
            assert_eq!(Some(name.len() - 2), digest_len(p.name_alg));
        }
        if check_certified_key(&p).is_ok() {
            assert_eq!(p.attributes & KEY_ATTRS_REQUIRED, KEY_ATTRS_REQUIRED);
            assert_eq!(p.attributes & attrs::RESTRICTED, 0);
            assert!(matches!(p.key, PublicKey::Ecc { curve: 0x0003, .. }));
            let jwk = key_jwk(&p).expect("an accepted key has a JWK");
            assert_eq!(jwk.crv, "P-256");
        }
        if check_ak(&p).is_ok() {
            assert_eq!(p.attributes & AK_ATTRS_REQUIRED, AK_ATTRS_REQUIRED);
        }
    }
);
