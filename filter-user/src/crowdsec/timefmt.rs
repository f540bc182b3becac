//! Time as the LAPI writes it: Go's `time.Duration` text (`59m59.07s`) in the decision stream,
//! and RFC 3339 UTC (`2026-11-30T04:50:25Z`) in alerts and login replies, without a date
//! crate (civil-date arithmetic after H. Hinnant).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses Go's `time.Duration` text (`59m59.07s`, `3h59m59.07s`, `1.5s`, `500ms`, `2h`, `0s`,
/// `0`; units `h`, `m`, `s`, `ms`, `us`, `µs`, `μs`, `ns`; fractions on any unit). Returns
/// `None` for negative durations (the countdown of a deletion) and for text that is not a
/// duration or exceeds `u64` nanoseconds; callers treat both as zero time left.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let text = text.strip_prefix('+').unwrap_or(text);
    if text.starts_with('-') || text.is_empty() {
        return None;
    }
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
            return None;
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        // Digits past the 18th are below a nanosecond even for hours.
        let fraction = &fraction[..fraction.len().min(18)];
        let fraction_ns = if fraction.is_empty() {
            0
        } else {
            let scale = 10u128.pow(u32::try_from(fraction.len()).ok()?);
            fraction.parse::<u128>().ok()? * unit_ns / scale
        };
        total_ns = total_ns.checked_add(whole.checked_mul(unit_ns)?.checked_add(fraction_ns)?)?;
        rest = after;
    }
    Some(Duration::from_nanos(u64::try_from(total_ns).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both are in range by construction: day 1..=31, month 1..=12.
    (year, day_u32(month), day_u32(day))
}

/// A small non-negative count as `u32` (0 if out of range, which the callers rule out).
fn day_u32(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

/// `at` as RFC 3339 UTC with whole seconds and `Z`, e.g. `2026-11-30T00:53:20Z`; times before
/// 1970 are written as 1970-01-01T00:00:00Z.
pub fn format_rfc3339(at: SystemTime) -> String {
    let seconds = at
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0);
    let seconds = i64::try_from(seconds).unwrap_or(i64::MAX / 2);
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let of_day = seconds.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Seconds since 1970 of an RFC 3339 time (`2026-11-30T05:00:00Z`, with optional fractional
/// seconds, dropped, and a `Z` or `±hh:mm` offset); `None` if it is not one.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let bytes = text.trim().as_bytes();
    let number = |from: usize, len: usize| -> Option<i64> {
        let digits = bytes.get(from..from + len)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    let at = |index: usize, expected: &[u8]| bytes.get(index).is_some_and(|b| expected.contains(b));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt ") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let (year, month, day) = (number(0, 4)?, number(5, 2)?, number(8, 2)?);
    let (hour, minute, second) = (number(11, 2)?, number(14, 2)?, number(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut index = 19;
    if at(index, b".") {
        index += 1;
        let digits = bytes[index..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 {
            return None;
        }
        index += digits;
    }
    let offset_seconds = match bytes.get(index)? {
        b'Z' | b'z' if index + 1 == bytes.len() => 0,
        sign @ (b'+' | b'-') if index + 6 == bytes.len() && at(index + 3, b":") => {
            let (hours, minutes) = (number(index + 1, 2)?, number(index + 4, 2)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    let month = u32::try_from(month).ok()?;
    let day = u32::try_from(day).ok()?;
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let ms = Duration::from_millis;
        let cases: &[(&str, Duration)] = &[
            ("59m59.07s", ms(3_599_070)),
            ("3h59m59.07s", ms(14_399_070)),
            ("1.5s", ms(1_500)),
            ("500ms", ms(500)),
            ("2h", Duration::from_secs(7_200)),
            ("0s", Duration::ZERO),
            ("0", Duration::ZERO),
            ("+5s", Duration::from_secs(5)),
            ("600s", Duration::from_secs(600)),
            ("1.000000001s", Duration::from_nanos(1_000_000_001)),
            ("2.5us", Duration::from_nanos(2_500)),
            ("3µs", Duration::from_nanos(3_000)),
            ("3μs", Duration::from_nanos(3_000)),
            ("7ns", Duration::from_nanos(7)),
            (".5m", Duration::from_secs(30)),
            ("1.h", Duration::from_secs(3_600)),
            ("1h1m1s1ms1us1ns", Duration::from_nanos(3_661_001_001_001)),
            (
                "0.1234567891234567891234h",
                Duration::from_nanos(444_444_440_844),
            ),
            (
                "2562047h47m16.854775807s",
                Duration::from_nanos(i64::MAX as u64),
            ),
        ];
        for &(text, expected) in cases {
            assert_eq!(parse_go_duration(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn refuses_negative_and_broken_go_durations() {
        for text in [
            "-1h2m3s",
            "-0.5s",
            "",
            "1",
            "s",
            "1x",
            "1.2.3s",
            ".s",
            "1h-2m",
            "1 h",
            "h1",
            "99999999999999999999999h",
        ] {
            assert_eq!(parse_go_duration(text), None, "{text:?}");
        }
    }

    #[test]
    fn formats_rfc3339_utc() {
        let cases: &[(u64, &str)] = &[
            (0, "1970-01-01T00:00:00Z"),
            (1_796_000_000, "2026-11-30T00:53:20Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (4_102_444_799, "2099-12-31T23:59:59Z"),
            (1_709_251_199, "2024-02-29T23:59:59Z"),
        ];
        for &(seconds, text) in cases {
            let at = UNIX_EPOCH + Duration::from_secs(seconds);
            assert_eq!(format_rfc3339(at), text, "{seconds}");
            assert_eq!(parse_rfc3339(text), i64::try_from(seconds).ok(), "{text}");
        }
        assert_eq!(
            format_rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn round_trips_every_day_for_four_centuries() {
        for days in (-719_468..300_000).step_by(7) {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(
                days_from_civil(year, month, day),
                days,
                "{year}-{month}-{day}"
            );
        }
    }

    #[test]
    fn parses_rfc3339_with_fractions_and_offsets() {
        let cases: &[(&str, Option<i64>)] = &[
            ("2026-11-30T05:00:00Z", Some(1_796_014_800)),
            ("2026-11-30T05:00:00.123456789Z", Some(1_796_014_800)),
            ("2026-11-30T06:00:00+01:00", Some(1_796_014_800)),
            ("2026-11-30T00:30:00-04:30", Some(1_796_014_800)),
            ("2026-11-30 05:00:00Z", Some(1_796_014_800)),
            ("2026-11-30T05:00:00", None),
            ("2026-13-30T05:00:00Z", None),
            ("2026-11-30T24:00:00Z", None),
            ("2026-11-30T05:00:00.Z", None),
            ("2026-11-30T05:00:00Zjunk", None),
            ("2026-11-30T05:00:00+0100", None),
            ("", None),
        ];
        for &(text, expected) in cases {
            assert_eq!(parse_rfc3339(text), expected, "{text}");
        }
    }
}
