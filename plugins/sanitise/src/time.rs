//! Ages (`90 days`) and timestamps as dumps write them, for
//! `delete_older_than`. A sanitiser has no clock: "now" is the run's
//! `started-at`.

/// Parses an age: one or more `<number> <unit>` pairs (`90 days`,
/// `1 week 2 days`, `36h`). Units: seconds (`s`, `sec`, `second(s)`),
/// minutes (`m`, `min`, `minute(s)`), hours (`h`, `hr`, `hour(s)`), days
/// (`d`, `day(s)`), weeks (`w`, `week(s)`), months (30 days) and years
/// (365 days). Returns seconds.
pub fn parse_age(text: &str) -> Result<i64, String> {
    let bad =
        || format!("age {text:?} is not a duration like \"90 days\", \"12 hours\" or \"2 weeks\"");
    let mut total: i64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start_matches([' ', ',']);
        let secs = match unit.to_ascii_lowercase().as_str() {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3_600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 7 * 86_400,
            "month" | "months" => 30 * 86_400,
            "y" | "year" | "years" => 365 * 86_400,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(secs)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

/// Parses a timestamp as PostgreSQL, MySQL or SQLite dumps write it:
/// `2024-05-01`, `2024-05-01 04:00:00`, `2024-05-01T04:00:00.123Z`,
/// `2024-05-01 04:00:00+00`, `…+05:30`, `…-0800`; no zone means UTC.
/// `infinity` / `-infinity` (PostgreSQL) and MySQL's zero date
/// (`0000-00-00…`, older than anything) are understood, as is a plain
/// integer (Unix seconds). Returns Unix seconds, or None when the text is
/// not a timestamp.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let s = text.trim();
    match s {
        "infinity" | "+infinity" => return Some(i64::MAX),
        "-infinity" => return Some(i64::MIN),
        _ => {}
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.len() <= 12 {
        return s.parse().ok();
    }
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year: i64 = num(&b[0..4])?;
    let month: i64 = num(&b[5..7])?;
    let day: i64 = num(&b[8..10])?;
    if month == 0 || day == 0 {
        // MySQL's zero date.
        return Some(i64::MIN);
    }
    if !(1..=12).contains(&month) || day > 31 {
        return None;
    }
    let mut secs = days_from_civil(year, month, day) * 86_400;
    let mut rest = &b[10..];
    if rest.is_empty() {
        return Some(secs);
    }
    if rest[0] != b' ' && rest[0] != b'T' && rest[0] != b't' {
        return None;
    }
    rest = &rest[1..];
    if rest.len() < 5 || rest[2] != b':' {
        return None;
    }
    let hour: i64 = num(&rest[0..2])?;
    let minute: i64 = num(&rest[3..5])?;
    rest = &rest[5..];
    let mut second = 0;
    if rest.first() == Some(&b':') {
        if rest.len() < 3 {
            return None;
        }
        second = num(&rest[1..3])?;
        rest = &rest[3..];
    }
    if hour > 24 || minute > 59 || second > 60 {
        return None;
    }
    if rest.first() == Some(&b'.') || rest.first() == Some(&b',') {
        let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        rest = &rest[1 + digits..];
    }
    secs += hour * 3_600 + minute * 60 + second;
    // Optional space before the zone (some dumps write `04:00:00 +00:00`).
    if rest.first() == Some(&b' ') {
        rest = &rest[1..];
    }
    match rest {
        [] | b"Z" | b"z" | b"UTC" => Some(secs),
        [sign @ (b'+' | b'-'), zone @ ..] => {
            let (zh, zm) = match zone {
                [h1, h2] => (num(&[*h1, *h2])?, 0),
                [h1, h2, m1, m2] => (num(&[*h1, *h2])?, num(&[*m1, *m2])?),
                [h1, h2, b':', m1, m2] => (num(&[*h1, *h2])?, num(&[*m1, *m2])?),
                _ => return None,
            };
            let offset = zh * 3_600 + zm * 60;
            // Local time = UTC + offset, so UTC = local - offset.
            Some(if *sign == b'+' {
                secs - offset
            } else {
                secs + offset
            })
        }
        _ => None,
    }
}

fn num(digits: &[u8]) -> Option<i64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(parse_age("90 days"), Ok(90 * 86_400));
        assert_eq!(parse_age("1 day"), Ok(86_400));
        assert_eq!(parse_age("36h"), Ok(36 * 3_600));
        assert_eq!(parse_age("1 week 2 days"), Ok(9 * 86_400));
        assert_eq!(parse_age("2 Weeks, 3 hours"), Ok(14 * 86_400 + 3 * 3_600));
        assert_eq!(parse_age("1 year"), Ok(365 * 86_400));
        assert!(parse_age("").is_err());
        assert!(parse_age("days").is_err());
        assert!(parse_age("90 fortnights").is_err());
        assert!(parse_age("99999999999999999999 days").is_err());
    }

    #[test]
    fn timestamps_in_every_dump_style() {
        let t = 1_714_536_000; // 2024-05-01 04:00:00 UTC
        assert_eq!(parse_timestamp("2024-05-01 04:00:00+00"), Some(t));
        assert_eq!(parse_timestamp("2024-05-01T04:00:00Z"), Some(t));
        assert_eq!(parse_timestamp("2024-05-01 04:00:00"), Some(t));
        assert_eq!(parse_timestamp("2024-05-01 04:00"), Some(t));
        assert_eq!(parse_timestamp("2024-05-01 04:00:00.123456+00"), Some(t));
        assert_eq!(parse_timestamp("2024-05-01 06:00:00+02"), Some(t));
        assert_eq!(parse_timestamp("2024-05-01 09:30:00+05:30"), Some(t));
        assert_eq!(parse_timestamp("2024-04-30 20:00:00-0800"), Some(t));
        assert_eq!(parse_timestamp("2024-05-01"), Some(t - 4 * 3_600));
        assert_eq!(parse_timestamp("1970-01-01"), Some(0));
        assert_eq!(parse_timestamp("2000-03-01"), Some(951_868_800));
        assert_eq!(parse_timestamp("1714536000"), Some(t));
        assert_eq!(parse_timestamp("infinity"), Some(i64::MAX));
        assert_eq!(parse_timestamp("-infinity"), Some(i64::MIN));
        assert_eq!(parse_timestamp("0000-00-00 00:00:00"), Some(i64::MIN));
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(parse_timestamp("2024-13-01"), None);
        assert_eq!(parse_timestamp("2024-05-01 04:00:00 PST"), None);
        assert_eq!(parse_timestamp("2024-05-01x"), None);
    }
}
