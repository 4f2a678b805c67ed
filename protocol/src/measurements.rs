//! Named measurement sets, as the verifier's policy and the owner's trust contracts both
//! write them: `PCR0`..`PCR31` (Nitro) or `MEASUREMENT` / `HOST_DATA` (SEV-SNP), each a hex
//! value, all of which must match.
use std::collections::BTreeMap;

/// One allowed set: measurement name → hex value.
pub type MeasurementSet = BTreeMap<String, String>;

/// The platform a measurement name belongs to (`"nitro"` or `"sev-snp"`), or `None` for a
/// name that is none of `PCR0`..`PCR31`, `MEASUREMENT`, `HOST_DATA`.
pub fn platform_of(name: &str) -> Option<&'static str> {
    if name == "MEASUREMENT" || name == "HOST_DATA" {
        return Some("sev-snp");
    }
    let idx = name.strip_prefix("PCR")?;
    if idx.is_empty() || idx.len() > 2 || (idx.len() == 2 && idx.starts_with('0')) {
        return None;
    }
    idx.parse::<u8>().ok().filter(|i| *i < 32).map(|_| "nitro")
}

/// The first measurement of `set` that `got` does not match (hex compared without case; a
/// measurement `got` lacks reads as zeros): its name, the required value and the value
/// found. `None` when the whole set matches.
pub fn first_mismatch<'a>(
    set: &'a MeasurementSet,
    got: &BTreeMap<String, String>,
) -> Option<(&'a str, &'a str, String)> {
    set.iter().find_map(|(name, want)| {
        let have = got
            .get(name)
            .cloned()
            .unwrap_or_else(|| "0".repeat(want.len()));
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
        for bad in ["PCR32", "PCR01", "PCR", "pcr0", "MEASURE"] {
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
    }
}
