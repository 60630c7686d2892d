//! Calendar arithmetic for the timestamps the datasets use (no time zones: all are UTC).

const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn number<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} {s:?} is not a number"));
    }
    s.parse()
        .map_err(|_| format!("{what} {s:?} is out of range"))
}

/// `YYYY-MM-DD` as midnight UTC in ms since the epoch.
pub(crate) fn parse_date_ms(s: &str) -> Result<i64, String> {
    let mut parts = s.trim().splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("date {s:?} is not YYYY-MM-DD"));
    };
    let year: i64 = number(y, "year")?;
    let month: u32 = number(m, "month")?;
    let day: u32 = number(d, "day")?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(format!("date {s:?} does not exist"));
    }
    Ok(days_from_civil(year, month, day) * MS_PER_DAY)
}

/// `YYYY-MM-DD HH:MM:SS`, optionally with a `T` separator and a ` UTC` or `Z` suffix, in ms.
pub(crate) fn parse_datetime_ms(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let s = s
        .strip_suffix(" UTC")
        .or_else(|| s.strip_suffix('Z'))
        .unwrap_or(s);
    let (date, time) = s
        .split_once([' ', 'T'])
        .ok_or_else(|| format!("timestamp {s:?} has no time of day"))?;
    let mut hms = time.splitn(3, ':');
    let (Some(h), Some(m), Some(sec)) = (hms.next(), hms.next(), hms.next()) else {
        return Err(format!("time {time:?} is not HH:MM:SS"));
    };
    let h: i64 = number(h, "hour")?;
    let m: i64 = number(m, "minute")?;
    let sec: i64 = number(sec, "second")?;
    if h > 23 || m > 59 || sec > 60 {
        return Err(format!("time {time:?} does not exist"));
    }
    Ok(parse_date_ms(date)? + ((h * 60 + m) * 60 + sec) * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(parse_date_ms("2016-05-09").unwrap(), 1_462_752_000_000);
        assert_eq!(
            parse_datetime_ms("2019-10-01 00:00:01 UTC").unwrap(),
            1_569_888_001_000
        );
        assert_eq!(
            parse_datetime_ms("2000-02-29T23:59:59Z").unwrap(),
            951_868_799_000
        );
    }

    #[test]
    fn impossible_dates_are_errors() {
        for bad in [
            "2019-02-29",
            "2019-13-01",
            "2019-00-10",
            "19-1",
            "2019-1x-01",
            "",
        ] {
            assert!(parse_date_ms(bad).is_err(), "{bad}");
        }
        for bad in [
            "2019-10-01",
            "2019-10-01 24:00:00",
            "2019-10-01 10:61:00 UTC",
        ] {
            assert!(parse_datetime_ms(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        /// Consecutive calendar days are consecutive day numbers, across months and leap years.
        #[test]
        fn day_numbers_are_consecutive(year in 1600i64..2400, month in 1u32..=12) {
            let len = days_in_month(year, month);
            let first = days_from_civil(year, month, 1);
            prop_assert_eq!(days_from_civil(year, month, len), first + i64::from(len) - 1);
            let (ny, nm) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
            prop_assert_eq!(days_from_civil(ny, nm, 1), first + i64::from(len));
        }
    }
}
