//! Named measurement sets, as the verifier's policy and the owner's trust contracts both
//! write them: `PCR0`..`PCR31` (Nitro), `MEASUREMENT` / `HOST_DATA` (SEV-SNP) or
//! `TPM_PCR0`..`TPM_PCR23` (TPM 2.0, SHA-256 bank), each a hex value, all of which must
//! match.
use std::collections::BTreeMap;

/// One allowed set: measurement name → hex value.
pub type MeasurementSet = BTreeMap<String, String>;

/// The platform a measurement name belongs to (`"nitro"`, `"sev-snp"` or `"tpm"`), or
/// `None` for a name that is none of `PCR0`..`PCR31`, `MEASUREMENT`, `HOST_DATA`,
/// `TPM_PCR0`..`TPM_PCR23`.
pub fn platform_of(name: &str) -> Option<&'static str> {
    if name == "MEASUREMENT" || name == "HOST_DATA" {
        return Some("sev-snp");
    }
    let (idx, platform, max) = match name.strip_prefix("TPM_PCR") {
        Some(i) => (i, "tpm", 24),
        None => (name.strip_prefix("PCR")?, "nitro", 32),
    };
    if idx.is_empty() || idx.len() > 2 || (idx.len() == 2 && idx.starts_with('0')) {
        return None;
    }
    idx.parse::<u8>()
        .ok()
        .filter(|i| *i < max)
        .map(|_| platform)
}

/// Length in bytes of the value of a measurement name: 48 for Nitro PCRs (SHA-384) and the
/// SNP launch measurement, 32 for `HOST_DATA` and TPM PCRs (SHA-256 bank).
pub fn value_len(name: &str) -> usize {
    if name == "HOST_DATA" || name.starts_with("TPM_PCR") {
        32
    } else {
        48
    }
}

/// The first measurement of `set` that `got` does not match (hex compared without case), as
/// its name, the required value and the value found. A Nitro or SEV-SNP measurement `got`
/// lacks reads as zeros (those documents report every register); a TPM PCR `got` lacks was
/// not quoted, so its value is unknown and never matches. `None` when the whole set matches.
pub fn first_mismatch<'a>(
    set: &'a MeasurementSet,
    got: &BTreeMap<String, String>,
) -> Option<(&'a str, &'a str, String)> {
    set.iter().find_map(|(name, want)| {
        let have = match got.get(name) {
            Some(v) => v.clone(),
            None if name.starts_with("TPM_PCR") => "(not quoted)".to_owned(),
            None => "0".repeat(want.len()),
        };
        (!have.eq_ignore_ascii_case(want)).then_some((name.as_str(), want.as_str(), have))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_mismatches() {
        assert_eq!(platform_of("PCR0"), Some("nitro"));
        assert_eq!(platform_of("PCR31"), Some("nitro"));
        assert_eq!(platform_of("HOST_DATA"), Some("sev-snp"));
        assert_eq!(platform_of("TPM_PCR0"), Some("tpm"));
        assert_eq!(platform_of("TPM_PCR23"), Some("tpm"));
        assert_eq!(value_len("TPM_PCR7"), 32);
        assert_eq!(value_len("PCR7"), 48);
        for bad in [
            "PCR32",
            "PCR01",
            "PCR",
            "pcr0",
            "MEASURE",
            "TPM_PCR24",
            "TPM_PCR07",
            "TPM_PCR",
        ] {
            assert_eq!(platform_of(bad), None, "{bad}");
        }
        let set =
            MeasurementSet::from([("PCR0".into(), "AB".into()), ("PCR8".into(), "00".into())]);
        let got = BTreeMap::from([("PCR0".to_string(), "ab".to_string())]);
        assert_eq!(
            first_mismatch(&set, &got),
            None,
            "case-insensitive, absent reads as zeros"
        );
        let got = BTreeMap::from([("PCR0".to_string(), "ac".to_string())]);
        assert_eq!(
            first_mismatch(&set, &got),
            Some(("PCR0", "AB", "ac".to_string()))
        );
        // A TPM PCR the quote did not select never matches, even a required zero value.
        let tpm = MeasurementSet::from([("TPM_PCR8".into(), "00".repeat(32))]);
        assert_eq!(
            first_mismatch(&tpm, &BTreeMap::new()),
            Some((
                "TPM_PCR8",
                "00".repeat(32).as_str(),
                "(not quoted)".to_string()
            ))
        );
        let got = BTreeMap::from([("TPM_PCR8".to_string(), "00".repeat(32))]);
        assert_eq!(first_mismatch(&tpm, &got), None);
    }
}
