//! `validFrom` / `validUntil`: XML Schema `dateTimeStamp` (RFC 3339 with a time zone),
//! converted to and from seconds since the epoch. Nothing here reads the clock.
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Seconds since the Unix epoch, the unit of every time this crate takes.
pub type UnixSeconds = u64;

/// Latest time accepted (year 9999), so every time fits RFC 3339.
pub const MAX_TIME: UnixSeconds = 253_402_300_799;

/// RFC 3339 in UTC, whole seconds (`2025-01-01T00:00:00Z`).
pub fn format(t: UnixSeconds) -> String {
    i64::try_from(t.min(MAX_TIME))
        .ok()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|d| d.format(&Rfc3339).ok())
        .unwrap_or_else(|| "9999-12-31T23:59:59Z".into())
}

/// Parses an RFC 3339 date-time with a time zone; fractions of a second are dropped.
/// `None` for anything else, or a time before the epoch or after [`MAX_TIME`].
pub fn parse(s: &str) -> Option<UnixSeconds> {
    if s.len() > 64 {
        return None;
    }
    let d = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    u64::try_from(d.unix_timestamp())
        .ok()
        .filter(|t| *t <= MAX_TIME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        assert_eq!(format(0), "1970-01-01T00:00:00Z");
        assert_eq!(format(1_735_689_600), "2025-01-01T00:00:00Z");
        assert_eq!(parse("2025-01-01T00:00:00Z"), Some(1_735_689_600));
        assert_eq!(parse("2025-01-01T01:00:00.9+01:00"), Some(1_735_689_600));
        assert_eq!(parse("2025-01-01"), None);
        assert_eq!(parse("1969-12-31T23:59:59Z"), None);
        assert_eq!(parse(&"9".repeat(65)), None);
    }
}
