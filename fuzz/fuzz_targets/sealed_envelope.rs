//! The sealed-secret parsers of `cada-secrets`: the owner-signed bundle (`open_bundle`, as
//! the enclave runs it on `secret_install`; `inspect_bundle`, as the CLIs read it), the
//! HPKE `COSE_Encrypt0` (`Encrypt0::decode` and open) and the data envelope (`open_data`, as
//! the enclave runs it on `open`).
//!
//! Input: a mode byte, then the bytes. Mode 0: a bundle opened by the fixed enclave locked
//! to the fixed owner at `SEAL_AT`; 1: a bundle inspected; 2: a COSE_Encrypt0 decoded and
//! opened; 3: a data envelope opened for label `report`.
//!
//! Oracle: nothing panics, every refusal is a typed error with a `secret.*` code; an opened
//! bundle is one the fixed owner signed for the fixed enclave (its usage validates, its owner
//! is the owner, it is not expired at `SEAL_AT`, and its digest is the digest
//! `inspect_bundle` reports for the same bytes).
#![no_main]

use cada_fuzz::sealed_setup::{enclave, JKT, SEAL_AT};
use cada_secrets::cose::Encrypt0;
use cada_secrets::{inspect_bundle, open_bundle, Recipient};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        cada_fuzz::write_seeds_if_asked("sealed_envelope");
    },
    |data: &[u8]| {
        let Some((&mode, bytes)) = data.split_first() else {
            return;
        };
        let owner = cada_fuzz::contract_setup::owner().did();
        match mode % 4 {
            0 => {
                let me = Recipient {
                    keys: enclave(),
                    jkt: JKT,
                    owner: Some(owner),
                };
                match open_bundle(bytes, &me, SEAL_AT) {
                    Ok(s) => {
                        s.usage.validate().expect("an opened usage validates");
                        assert_eq!(s.owner, owner);
                        assert!(!s.usage.expired_at(SEAL_AT));
                        let info = inspect_bundle(bytes).expect("an opened bundle inspects");
                        assert_eq!(info.digest, s.digest);
                        assert_eq!(info.hpke, enclave().public());
                    }
                    Err(e) => assert!(e.code().starts_with("secret.")),
                }
            }
            1 => {
                if let Err(e) = inspect_bundle(bytes) {
                    assert!(e.code().starts_with("secret."));
                }
            }
            2 => match Encrypt0::decode(bytes, 1 << 20) {
                Ok(e) => {
                    if let Err(err) = e.open(enclave(), b"", b"") {
                        assert!(err.code().starts_with("secret."));
                    }
                }
                Err(e) => assert!(e.code().starts_with("secret.")),
            },
            _ => {
                if let Err(e) = cada_secrets::data::open_data(enclave(), JKT, "report", bytes) {
                    assert!(e.code().starts_with("secret."));
                }
            }
        }
    }
);
