//! TPM attestation structures: `TPMS_ATTEST` (`tpm::structs::parse_attest`), `TPMT_SIGNATURE`
//! (`parse_signature`, `ecdsa_signature_from_der`) and a quote's verification
//! (`tpm::verify_quote`) under the real libtpms AK of fixture L01.
//!
//! Input: one mode byte, then bytes. Mode 0: the bytes are a TPMS_ATTEST, verified as a
//! quote with L01's signature and PCRs; mode 1: a TPMT_SIGNATURE (then a DER ECDSA
//! signature); mode 2: a length byte, a TPMS_ATTEST of that length, then the
//! TPMT_SIGNATURE over it. Oracles: a parsed TPMS_ATTEST carries
//! TPM_GENERATED_VALUE and a certify or quote type; only L01's own message verifies under
//! L01's AK; a parsed signature's scheme has a hash of known size.
#![no_main]

use std::sync::OnceLock;

use cada_attestation_verifier::tpm::structs::{
    digest_len, parse_attest, parse_signature, ST_ATTEST_CERTIFY, ST_ATTEST_QUOTE,
};
use cada_attestation_verifier::tpm::{
    ecdsa_signature_from_der, public_key_from_spki, verify_quote, PublicKey, Signature,
};
use libfuzzer_sys::fuzz_target;

struct L01 {
    ak: PublicKey,
    msg: Vec<u8>,
    sig: Signature,
    pcrs: Vec<Vec<u8>>,
}

fn l01() -> Option<&'static L01> {
    static C: OnceLock<Option<L01>> = OnceLock::new();
    C.get_or_init(|| {
        let f = cada_fuzz::fixture;
        Some(L01 {
            ak: public_key_from_spki(&f("tpm/libtpms/L01_ak.spki.der")?).ok()?,
            msg: f("tpm/libtpms/L01_quote.msg")?,
            sig: parse_signature(&f("tpm/libtpms/L01_quote.sig")?).ok()?,
            pcrs: f("tpm/libtpms/L01_pcrs.bin")?
                .chunks(32)
                .map(<[u8]>::to_vec)
                .collect(),
        })
    })
    .as_ref()
}

fn check_attest(b: &[u8]) {
    if let Ok(a) = parse_attest(b) {
        assert!(a.kind == ST_ATTEST_CERTIFY || a.kind == ST_ATTEST_QUOTE);
        assert_eq!(&b[..4], &[0xff, 0x54, 0x43, 0x47], "magic");
    }
}

fn check_sig(s: &Signature) {
    assert!(digest_len(s.scheme().hash).is_some());
}

fuzz_target!(
    init: {
        cada_fuzz::write_seeds_if_asked("tpm_attest");
    },
    |data: &[u8]| {
        let Some((&mode, rest)) = data.split_first() else {
            return;
        };
        match mode % 3 {
            0 => {
                check_attest(rest);
                if let Some(f) = l01() {
                    if verify_quote(rest, &f.sig, &f.ak, &f.pcrs, None).is_ok() {
                        assert_eq!(rest, f.msg.as_slice(), "another message verified");
                    }
                }
            }
            1 => {
                if let Ok(s) = parse_signature(rest) {
                    check_sig(&s);
                }
                if let Ok(s) = ecdsa_signature_from_der(rest, 0x000b) {
                    check_sig(&s);
                }
            }
            _ => {
                let Some((&len, body)) = rest.split_first() else {
                    return;
                };
                let (attest, sig) = body.split_at(usize::from(len).min(body.len()));
                check_attest(attest);
                if let (Some(f), Ok(s)) = (l01(), parse_signature(sig)) {
                    check_sig(&s);
                    if verify_quote(attest, &s, &f.ak, &f.pcrs, None).is_ok() {
                        assert_eq!(attest, f.msg.as_slice(), "another message verified");
                    }
                }
            }
        }
    }
);
