//! The crypto-agile TCG event log (`tpm::eventlog::parse_event_log`) and its replay.
//!
//! Input: the log bytes. Oracles: a parsed log has at most `MAX_EVENTS` events, each
//! digest the size its bank declares, PCR indices in range; the replay of every declared
//! bank yields digests of that bank's size, for PCRs the log extends, and a prefix of the
//! input that parses never has more events than the whole.
#![no_main]

use cada_attestation_verifier::tpm::eventlog::{parse_event_log, MAX_EVENTS, MAX_PCR_INDEX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        cada_fuzz::write_seeds_if_asked("tpm_eventlog");
    },
    |data: &[u8]| {
        let Ok(log) = parse_event_log(data) else {
            return;
        };
        assert!(log.events.len() <= MAX_EVENTS);
        for e in &log.events {
            assert!(e.pcr <= MAX_PCR_INDEX);
            for (h, d) in &e.digests {
                let size = log.banks.iter().find(|(b, _)| b == h).map(|(_, s)| *s);
                assert_eq!(size.map(usize::from), Some(d.len()));
            }
        }
        for (hash, size) in &log.banks {
            for v in log.replay(*hash).values() {
                assert_eq!(v.len(), usize::from(*size));
            }
        }
        if let Ok(shorter) = parse_event_log(&data[..data.len() / 2]) {
            assert!(shorter.events.len() <= log.events.len());
        }
    }
);
