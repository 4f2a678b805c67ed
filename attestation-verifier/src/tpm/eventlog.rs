//! The TCG event log in the crypto-agile format (TCG PC Client Platform Firmware Profile,
//! §10): a `TCG_PCR_EVENT` header in the SHA-1 format whose event is the
//! `TCG_EfiSpecIDEvent` ("Spec ID Event03", the digest sizes of every bank), then
//! `TCG_PCR_EVENT2` records with one digest per bank. Bounded: the log size, the number of
//! events, each event's size and the number of banks; and replayed into PCR values so that
//! a verifier can compare them with a quote.
use std::collections::BTreeMap;

use super::structs::{alg, digest_len, Reader, TpmParseError};

/// Largest log parsed (the evidence format's limit).
pub const MAX_LOG_LEN: usize = cada_protocol::tpm::MAX_EVENT_LOG_LEN;
/// Most events in a log.
pub const MAX_EVENTS: usize = 4096;
/// Largest event data: the whole log's limit (a UEFI `db` variable event with its
/// certificates is 24 KiB in a real log: keylime's `binary_bios_measurements`).
pub const MAX_EVENT_DATA: usize = MAX_LOG_LEN;
/// Most banks the Spec ID event may declare.
pub const MAX_LOG_BANKS: u32 = 8;
/// Highest PCR index an event may extend.
pub const MAX_PCR_INDEX: u32 = 23;

/// `EV_NO_ACTION`: informational, never extended.
pub const EV_NO_ACTION: u32 = 0x0000_0003;

const SPEC_ID: &[u8; 16] = b"Spec ID Event03\0";
const STARTUP_LOCALITY: &[u8; 16] = b"StartupLocality\0";

/// One event of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// PCR index.
    pub pcr: u32,
    /// Event type.
    pub event_type: u32,
    /// Digest per bank (hash algorithm → digest).
    pub digests: Vec<(u16, Vec<u8>)>,
    /// Event data.
    pub data: Vec<u8>,
}

/// A parsed event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    /// Banks the Spec ID event declares, with digest sizes.
    pub banks: Vec<(u16, u16)>,
    /// Locality the platform started in (from a `StartupLocality` event; 0 if none).
    pub startup_locality: u8,
    /// The `TCG_PCR_EVENT2` records.
    pub events: Vec<Event>,
}

/// Whether [`EventLog::replay`] can replay bank `hash` (SHA-1, SHA-256, SHA-384, SHA-512).
pub fn can_replay(hash: u16) -> bool {
    matches!(hash, alg::SHA1 | alg::SHA256 | alg::SHA384 | alg::SHA512)
}

impl EventLog {
    /// Replays the log: the PCR values of bank `hash` that it produces, for every PCR it
    /// extends (PCR 0 starts at the startup locality, the others at zero). Empty for a bank
    /// it cannot replay ([`can_replay`]). [`parse_event_log`] guarantees every event a digest
    /// of every declared bank.
    pub fn replay(&self, hash: u16) -> BTreeMap<u32, Vec<u8>> {
        let d = match hash {
            alg::SHA1 => &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            alg::SHA256 => &aws_lc_rs::digest::SHA256,
            alg::SHA384 => &aws_lc_rs::digest::SHA384,
            alg::SHA512 => &aws_lc_rs::digest::SHA512,
            _ => return BTreeMap::new(),
        };
        let len = d.output_len();
        let mut pcrs: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for e in &self.events {
            if e.event_type == EV_NO_ACTION {
                continue;
            }
            let Some((_, digest)) = e.digests.iter().find(|(h, _)| *h == hash) else {
                continue;
            };
            let cur = pcrs.entry(e.pcr).or_insert_with(|| {
                let mut v = vec![0u8; len];
                if e.pcr == 0 {
                    if let Some(last) = v.last_mut() {
                        *last = self.startup_locality;
                    }
                }
                v
            });
            let mut ctx = aws_lc_rs::digest::Context::new(d);
            ctx.update(cur);
            ctx.update(digest);
            *cur = ctx.finish().as_ref().to_vec();
        }
        pcrs
    }
}

/// Parses a crypto-agile TCG event log.
pub fn parse_event_log(b: &[u8]) -> Result<EventLog, TpmParseError> {
    const W: &str = "TCG event log";
    if b.len() > MAX_LOG_LEN {
        return Err(TpmParseError {
            what: W,
            detail: format!("{} bytes is over the limit of {MAX_LOG_LEN}", b.len()),
        });
    }
    let mut r = LeReader(Reader::new(W, b));
    // TCG_PCR_EVENT (SHA-1 format) carrying the Spec ID event.
    let pcr = r.u32("header.pcrIndex")?;
    let ty = r.u32("header.eventType")?;
    r.0.take(20, "header.digest")?;
    let size = r.u32("header.eventSize")?;
    if pcr != 0 || ty != EV_NO_ACTION {
        return Err(r
            .0
            .err("the first event is not the EV_NO_ACTION Spec ID event: not a crypto-agile log"));
    }
    let data =
        r.0.take(bounded(&r.0, size, "header.eventSize")?, "header.event")?;
    let banks = spec_id(data)?;
    let mut log = EventLog {
        banks,
        startup_locality: 0,
        events: Vec::new(),
    };
    while r.0.remaining() > 0 {
        if log.events.len() >= MAX_EVENTS {
            return Err(r.0.err(format!("more than {MAX_EVENTS} events")));
        }
        let pcr = r.u32("event.pcrIndex")?;
        if pcr > MAX_PCR_INDEX {
            return Err(r
                .0
                .err(format!("event.pcrIndex {pcr} is over {MAX_PCR_INDEX}")));
        }
        let event_type = r.u32("event.eventType")?;
        let count = r.u32("event.digests.count")?;
        if count > MAX_LOG_BANKS {
            return Err(r.0.err(format!(
                "event.digests.count {count} is over {MAX_LOG_BANKS}"
            )));
        }
        let mut digests: Vec<(u16, Vec<u8>)> = Vec::new();
        for _ in 0..count {
            let hash = r.u16("event.digests.hashAlg")?;
            let Some((_, size)) = log.banks.iter().find(|(h, _)| *h == hash) else {
                return Err(r.0.err(format!(
                    "event digest of alg 0x{hash:04x}, which the Spec ID event does not declare"
                )));
            };
            if digests.iter().any(|(h, _)| *h == hash) {
                return Err(r.0.err(format!(
                    "event {} (PCR {pcr}) carries two digests of alg 0x{hash:04x}",
                    log.events.len()
                )));
            }
            digests.push((hash, r.0.take(usize::from(*size), "event.digest")?.to_vec()));
        }
        // A TPM extends every active bank: an event without a digest for a bank the Spec ID
        // event declares cannot have happened as logged (and would replay differently per
        // bank).
        if let Some((missing, _)) = log
            .banks
            .iter()
            .find(|(b, _)| !digests.iter().any(|(h, _)| h == b))
        {
            return Err(r.0.err(format!(
                "event {} (PCR {pcr}) has no digest of alg 0x{missing:04x}, which the Spec ID event declares: a TPM extends every declared bank",
                log.events.len()
            )));
        }
        let size = r.u32("event.eventSize")?;
        let data =
            r.0.take(bounded(&r.0, size, "event.eventSize")?, "event.event")?
                .to_vec();
        if event_type == EV_NO_ACTION
            && pcr == 0
            && data.len() == 17
            && data[..16] == *STARTUP_LOCALITY
        {
            log.startup_locality = data[16];
        }
        log.events.push(Event {
            pcr,
            event_type,
            digests,
            data,
        });
    }
    Ok(log)
}

fn bounded(r: &Reader<'_>, size: u32, field: &str) -> Result<usize, TpmParseError> {
    match usize::try_from(size) {
        Ok(n) if n <= MAX_EVENT_DATA => Ok(n),
        _ => Err(r.err(format!(
            "{field} {size} is over the limit of {MAX_EVENT_DATA}"
        ))),
    }
}

/// The event log is little-endian (UEFI), unlike TPM structures.
struct LeReader<'a>(Reader<'a>);

impl LeReader<'_> {
    fn u32(&mut self, field: &str) -> Result<u32, TpmParseError> {
        let b = self.0.take(4, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u16(&mut self, field: &str) -> Result<u16, TpmParseError> {
        let b = self.0.take(2, field)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
}

/// `TCG_EfiSpecIDEventStruct`: the banks and digest sizes.
fn spec_id(data: &[u8]) -> Result<Vec<(u16, u16)>, TpmParseError> {
    let mut r = LeReader(Reader::new("TCG Spec ID event", data));
    if r.0.take(16, "signature")? != SPEC_ID {
        return Err(r.0.err("signature is not \"Spec ID Event03\""));
    }
    r.u32("platformClass")?;
    r.0.take(4, "specVersion, errata, uintnSize")?;
    let n = r.u32("numberOfAlgorithms")?;
    if n == 0 || n > MAX_LOG_BANKS {
        return Err(r
            .0
            .err(format!("numberOfAlgorithms {n} is not 1..={MAX_LOG_BANKS}")));
    }
    let mut banks: Vec<(u16, u16)> = Vec::new();
    for _ in 0..n {
        let id = r.u16("digestSizes.algorithmId")?;
        let size = r.u16("digestSizes.digestSize")?;
        if let Some(want) = digest_len(id) {
            if usize::from(size) != want {
                return Err(r.0.err(format!(
                    "digest size {size} for alg 0x{id:04x}, which has {want}"
                )));
            }
        } else if size == 0 || size > 64 {
            return Err(r.0.err(format!("digest size {size} for alg 0x{id:04x}")));
        }
        if banks.iter().any(|(h, _)| *h == id) {
            return Err(r.0.err(format!("alg 0x{id:04x} is declared twice")));
        }
        banks.push((id, size));
    }
    let vendor = r.0.u8("vendorInfoSize")?;
    r.0.take(usize::from(vendor), "vendorInfo")?;
    r.0.finish()?;
    Ok(banks)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A log with a Spec ID event for SHA-256, a StartupLocality of 3 and `events`
    /// (pcr, digest) of type 0x80000008.
    pub(crate) fn make_log(events: &[(u32, [u8; 32])]) -> Vec<u8> {
        let mut spec = SPEC_ID.to_vec();
        spec.extend_from_slice(&0u32.to_le_bytes());
        spec.extend_from_slice(&[0, 2, 0, 2]);
        spec.extend_from_slice(&1u32.to_le_bytes());
        spec.extend_from_slice(&alg::SHA256.to_le_bytes());
        spec.extend_from_slice(&32u16.to_le_bytes());
        spec.push(0);
        let mut out = Vec::new();
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        out.extend_from_slice(&[0; 20]);
        out.extend_from_slice(&u32::try_from(spec.len()).unwrap().to_le_bytes());
        out.extend_from_slice(&spec);
        let mut ev = |pcr: u32, ty: u32, d: &[u8; 32], data: &[u8]| {
            out.extend_from_slice(&pcr.to_le_bytes());
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
            out.extend_from_slice(&alg::SHA256.to_le_bytes());
            out.extend_from_slice(d);
            out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
            out.extend_from_slice(data);
        };
        let mut loc = STARTUP_LOCALITY.to_vec();
        loc.push(3);
        ev(0, EV_NO_ACTION, &[0; 32], &loc);
        for (pcr, d) in events {
            ev(*pcr, 0x8000_0008, d, b"data");
        }
        out
    }

    #[test]
    fn replays_with_startup_locality() {
        let log = parse_event_log(&make_log(&[(0, [1; 32]), (7, [2; 32])])).unwrap();
        assert_eq!(log.startup_locality, 3);
        let pcrs = log.replay(alg::SHA256);
        let mut init = [0u8; 32];
        init[31] = 3;
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(&init);
        ctx.update(&[1; 32]);
        assert_eq!(pcrs[&0], ctx.finish().as_ref());
        assert!(pcrs.contains_key(&7) && !pcrs.contains_key(&1));
    }

    #[test]
    fn an_event_with_two_digests_of_one_bank_or_none_is_refused() {
        let base = make_log(&[]);
        let ev = |digests: &[[u8; 32]]| {
            let mut b = base.clone();
            b.extend_from_slice(&4u32.to_le_bytes());
            b.extend_from_slice(&0x8000_0008u32.to_le_bytes());
            b.extend_from_slice(&u32::try_from(digests.len()).unwrap().to_le_bytes());
            for d in digests {
                b.extend_from_slice(&alg::SHA256.to_le_bytes());
                b.extend_from_slice(d);
            }
            b.extend_from_slice(&0u32.to_le_bytes());
            parse_event_log(&b)
        };
        assert!(ev(&[[1; 32]]).is_ok());
        let two = ev(&[[1; 32], [2; 32]]).unwrap_err();
        assert!(two.detail.contains("two digests"), "{two}");
        let none = ev(&[]).unwrap_err();
        assert!(none.detail.contains("no digest of alg 0x000b"), "{none}");
    }

    #[test]
    fn every_truncation_is_refused_and_limits_hold() {
        let b = make_log(&[(4, [9; 32])]);
        assert!(parse_event_log(&b).is_ok());
        // Cutting inside an event is an error; cutting between events is a shorter log
        // (after the header, after the StartupLocality event).
        let ok = (0..b.len())
            .filter(|n| parse_event_log(&b[..*n]).is_ok())
            .count();
        assert_eq!(ok, 2);
        let mut huge = b.clone();
        let at = huge.len() - 8;
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_event_log(&huge).is_err());
        assert!(parse_event_log(&vec![0; MAX_LOG_LEN + 1]).is_err());
    }
}
