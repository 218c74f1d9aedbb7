//! Times at the API edge: integer ns since the Unix epoch, or RFC 3339 text
//! (`2026-01-01T00:00:00Z`, `2026-01-01T01:00:00.5+01:00`), both UTC instants; answers carry
//! both (`ts` in ns, `time` in RFC 3339 UTC with nanoseconds).
//!
//! Written out here (civil-date arithmetic, no calendar crate) because the API needs exactly
//! RFC 3339's grammar and no lenient date guessing.

use serde::Deserialize;

use crate::http::ApiError;

/// Longest time text accepted, bytes (`YYYY-MM-DDTHH:MM:SS.nnnnnnnnn+HH:MM` is 35).
pub const TIME_TEXT_BYTES_MAX: usize = 64;

const NS_PER_SECOND: i128 = 1_000_000_000;

/// A time as a client may send it in JSON: ns since the epoch, or RFC 3339 text.
#[derive(Deserialize, utoipa::ToSchema, Clone, Debug)]
#[serde(untagged)]
pub(crate) enum TimeInput {
    /// Nanoseconds since the Unix epoch (UTC).
    Ns(i64),
    /// RFC 3339 text, e.g. `2026-01-01T00:00:00Z`.
    Text(String),
}

impl TimeInput {
    /// The instant in ns since the epoch; `field` names the input in the error.
    pub(crate) fn to_ns(&self, field: &str) -> Result<i64, ApiError> {
        match self {
            Self::Ns(ns) => Ok(*ns),
            Self::Text(text) => parse_rfc3339(text).ok_or_else(|| invalid(field)),
        }
    }
}

fn invalid(field: &str) -> ApiError {
    ApiError::InvalidInput(format!(
        "{field}: expected integer ns since the Unix epoch or RFC 3339 text (2026-01-01T00:00:00Z)"
    ))
}

/// A query-string time (`start=`, `end=`): an integer is ns since the epoch, anything else must
/// be RFC 3339.
pub(crate) fn parse_param(text: &str, field: &str) -> Result<i64, ApiError> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return text.parse::<i64>().map_err(|_| invalid(field));
    }
    parse_rfc3339(text).ok_or_else(|| invalid(field))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses RFC 3339 (`date-time`: `T` or `t` or a space between date and time, `Z`/`z` or a
/// numeric offset, up to 9 fraction digits; leap seconds refused). `None` when malformed or
/// outside the i64 ns range.
pub(crate) fn parse_rfc3339(text: &str) -> Option<i64> {
    if text.len() > TIME_TEXT_BYTES_MAX || !text.is_ascii() {
        return None;
    }
    let bytes = text.as_bytes();
    let number = |from: usize, len: usize| -> Option<i64> {
        let part = bytes.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let sep = |at: usize, allowed: &[u8]| bytes.get(at).is_some_and(|byte| allowed.contains(byte));
    let (year, month, day) = (number(0, 4)?, number(5, 2)?, number(8, 2)?);
    let (hour, minute, second) = (number(11, 2)?, number(14, 2)?, number(17, 2)?);
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut at = 19;
    let mut fraction_ns: i64 = 0;
    if sep(at, b".") {
        at += 1;
        let digits =
            bytes.get(at..).unwrap_or_default().iter().take_while(|byte| byte.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        fraction_ns = number(at, digits)? * 10_i64.pow(9 - u32::try_from(digits).ok()?);
        at += digits;
    }
    let offset_s = match bytes.get(at..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), ..] if bytes.len() == at + 6 && sep(at + 3, b":") => {
            let (offset_hour, offset_minute) = (number(at + 1, 2)?, number(at + 4, 2)?);
            if offset_hour > 23 || offset_minute > 59 {
                return None;
            }
            let magnitude = offset_hour * 3_600 + offset_minute * 60;
            if *sign == b'+' { magnitude } else { -magnitude }
        }
        _ => return None,
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second - offset_s;
    i64::try_from(i128::from(seconds) * NS_PER_SECOND + i128::from(fraction_ns)).ok()
}

/// RFC 3339 UTC text of `ns` with all nine fraction digits: `2026-01-01T00:00:00.000000000Z`.
pub(crate) fn format_rfc3339(ns: i64) -> String {
    let seconds = ns.div_euclid(1_000_000_000);
    let fraction = ns.rem_euclid(1_000_000_000);
    let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{fraction:09}Z",
        second_of_day / 3_600,
        second_of_day % 3_600 / 60,
        second_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// 2026-01-01T00:00:00Z in ns.
    const T0: i64 = 1_767_225_600_000_000_000;

    #[test]
    fn known_instants() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-01-01T00:00:00Z"), Some(T0));
        assert_eq!(parse_rfc3339("2026-01-01T01:00:00.5+01:00"), Some(T0 + 500_000_000));
        assert_eq!(parse_rfc3339("2025-12-31t19:00:00.000000001-05:00"), Some(T0 + 1));
        assert_eq!(parse_rfc3339("2024-02-29 12:00:00z"), Some(1_709_208_000_000_000_000));
        assert_eq!(format_rfc3339(T0 + 1), "2026-01-01T00:00:00.000000001Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn malformed_text_is_refused() {
        for text in [
            "",
            "2026-01-01",
            "2026-01-01T00:00:00",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T23:59:60Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00.1234567890Z",
            "2026-01-01T00:00:00+0100",
            "2026-01-01T00:00:00+24:00",
            "2026-01-01T00:00:00Z ",
            "+2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00\u{e9}",
            "3000-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(text), None, "{text:?}");
        }
        assert!(parse_param("12x", "start").is_err());
        assert_eq!(parse_param("-5", "start").unwrap(), -5);
        assert_eq!(parse_param("2026-01-01T00:00:00Z", "start").unwrap(), T0);
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(ns in any::<i64>()) {
            prop_assert_eq!(parse_rfc3339(&format_rfc3339(ns)), Some(ns));
        }
    }
}
