//! The Enclave Image File parser and PCR computation (`eif::pcrs`).
//!
//! Input: an EIF. Oracle: an image that parses has PCR0–2 (and PCR8 when signed) of 96 hex
//! digits.
#![no_main]

use cada_image::eif;
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        cada_fuzz::write_seeds_if_asked("eif");
    },
    |data: &[u8]| {
        if let Ok(p) = eif::pcrs(data) {
            for v in [&p.pcr0, &p.pcr1, &p.pcr2].into_iter().chain(p.pcr8.as_ref()) {
                assert_eq!(v.len(), 96);
            }
        }
    }
);
