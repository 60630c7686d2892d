//! Calendar arithmetic for UTC timestamps, shared by every crate that prints a time (no date library needed
//! for these few conversions).

/// Milliseconds per day.
pub const MS_PER_DAY: i64 = 86_400_000;

/// The proleptic Gregorian `(year, month, day)` of `days` since 1970-01-01 (H. Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

/// `ms` since the Unix epoch as RFC 3339 UTC with milliseconds, e.g. `2026-01-05T00:00:00.000Z`.
pub fn format_utc_ms(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(MS_PER_DAY), ms.rem_euclid(MS_PER_DAY));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(format_utc_ms(1_767_571_200_000), "2026-01-05T00:00:00.000Z");
        assert_eq!(
            format_utc_ms(951_782_400_000 + 3_723_004),
            "2000-02-29T01:02:03.004Z"
        );
        assert_eq!(format_utc_ms(-1), "1969-12-31T23:59:59.999Z");
    }
}
