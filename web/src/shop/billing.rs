//! Billing periods and proration: calendar months on UTC dates, and the integer arithmetic of
//! an upgrade's price.
//!
//! **Periods.** A monthly period ends on the same day of the next month at the same time of
//! day (UTC), an annual one on the same day of the next year; a day the target month lacks
//! becomes its last day (Jan 31 → Feb 28, or 29 in a leap year).
//!
//! **Proration rule** (an upgrade keeps the period and its end; see `subscriptions`):
//! with `P` the period's length and `r` the seconds left in it (`0 ≤ r ≤ P`), each part is
//! rounded to the nearest minor unit, halves up:
//!
//! ```text
//! credit = round(old_price × r / P)        the unused part of what was paid
//! cost   = round(new_price × r / P)        the new plan for the rest of the period
//! due    = cost − credit                   before tax; tax as on orders (basis points,
//!                                          half away from zero)
//! ```
//!
//! Worked example: Coastal monthly at EUR 49.00 → Research monthly at EUR 199.00, period
//! 2027-04-01T00:00Z → 2027-05-01T00:00Z (`P` = 30 days = 2,592,000 s), upgraded on 2027-04-21
//! at 00:00 (`r` = 10 days = 864,000 s): credit = round(4900 × 864000 / 2592000) =
//! round(1633.33) = 1633; cost = round(19900 × 864000 / 2592000) = round(6633.33) = 6633;
//! due = 6633 − 1633 = 5000 (EUR 50.00); tax at 20 % = 1000; the customer pays EUR 60.00.

use serde::{Deserialize, Serialize};

/// How often a subscription is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingInterval {
    /// One calendar month.
    Monthly,
    /// One calendar year.
    Annual,
}

impl BillingInterval {
    /// Months per period.
    pub fn months(self) -> u32 {
        match self {
            Self::Monthly => 1,
            Self::Annual => 12,
        }
    }

    /// `monthly` / `annual`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Monthly => "monthly",
            Self::Annual => "annual",
        }
    }

    /// Parses `monthly` / `annual`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "monthly" => Some(Self::Monthly),
            "annual" => Some(Self::Annual),
            _ => None,
        }
    }
}

const SECONDS_PER_DAY: i64 = 86_400;

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month 1-12, day 1-31) of a day count since 1970-01-01.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `ts_s` (unix seconds) moved `months` calendar months on, day clamped to the month's end.
pub fn add_months(ts_s: i64, months: u32) -> i64 {
    let days = ts_s.div_euclid(SECONDS_PER_DAY);
    let time_of_day = ts_s.rem_euclid(SECONDS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let index = i64::from(month - 1) + i64::from(months);
    let year = year + index.div_euclid(12);
    let month = u32::try_from(index.rem_euclid(12)).unwrap_or(0) + 1;
    let day = day.min(days_in_month(year, month));
    days_from_civil(year, month, day) * SECONDS_PER_DAY + time_of_day
}

/// `amount × part / whole`, rounded to the nearest integer, halves up (`amount ≥ 0`,
/// `0 ≤ part ≤ whole`, `whole > 0`; a `whole` of 0 gives 0).
pub fn prorate(amount_minor: i64, part_s: i64, whole_s: i64) -> i64 {
    if whole_s <= 0 {
        return 0;
    }
    let part = i128::from(part_s.clamp(0, whole_s));
    let scaled = i128::from(amount_minor) * part * 2 + i128::from(whole_s);
    i64::try_from(scaled / (2 * i128::from(whole_s))).unwrap_or(i64::MAX)
}

/// The parts of an upgrade's price (minor units, before tax): see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proration {
    /// Seconds left in the period.
    pub remaining_s: i64,
    /// The period's length, s.
    pub period_s: i64,
    /// The unused part of the current price.
    pub credit_minor: i64,
    /// The new price for the rest of the period.
    pub cost_minor: i64,
    /// `cost − credit`.
    pub due_minor: i64,
}

/// The proration of moving from `old_price` to `new_price` at `now_s` within
/// `[period_start_s, period_end_s)`.
pub fn proration(
    old_price: i64,
    new_price: i64,
    period_start_s: i64,
    period_end_s: i64,
    now_s: i64,
) -> Proration {
    let period_s = (period_end_s - period_start_s).max(0);
    let remaining_s = (period_end_s - now_s).clamp(0, period_s);
    let credit_minor = prorate(old_price, remaining_s, period_s);
    let cost_minor = prorate(new_price, remaining_s, period_s);
    Proration { remaining_s, period_s, credit_minor, cost_minor, due_minor: cost_minor - credit_minor }
}

/// `YYYY-MM-DD HH:MM UTC` of unix seconds.
pub fn format_time(ts_s: i64) -> String {
    let (year, month, day) = civil_from_days(ts_s.div_euclid(SECONDS_PER_DAY));
    let rest = ts_s.rem_euclid(SECONDS_PER_DAY);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rest / 3_600, rest % 3_600 / 60)
}

/// Unix seconds of a UTC date at midnight (tests and examples).
pub fn utc_midnight(year: i64, month: u32, day: u32) -> i64 {
    days_from_civil(year, month, day) * SECONDS_PER_DAY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_months_clamp_to_the_month_end() {
        let jan31 = utc_midnight(2027, 1, 31) + 3_600 * 5;
        assert_eq!(add_months(jan31, 1), utc_midnight(2027, 2, 28) + 3_600 * 5);
        assert_eq!(add_months(utc_midnight(2028, 1, 31), 1), utc_midnight(2028, 2, 29));
        assert_eq!(add_months(utc_midnight(2027, 12, 15), 1), utc_midnight(2028, 1, 15));
        assert_eq!(add_months(utc_midnight(2028, 2, 29), 12), utc_midnight(2029, 2, 28));
        assert_eq!(add_months(utc_midnight(2027, 4, 1), 1) - utc_midnight(2027, 4, 1), 30 * 86_400);
        assert_eq!(utc_midnight(1970, 1, 1), 0);
        assert_eq!(utc_midnight(2026, 12, 7), 1_796_601_600);
        for days in [-800_000, -1, 0, 1, 10_000, 20_794, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(format_time(utc_midnight(2027, 4, 21) + 3_661), "2027-04-21 01:01 UTC");
    }

    /// The module doc's worked example, and the rounding of halves.
    #[test]
    fn the_worked_example_and_rounding() {
        let start = utc_midnight(2027, 4, 1);
        let end = add_months(start, 1);
        let p = proration(4_900, 19_900, start, end, utc_midnight(2027, 4, 21));
        assert_eq!(
            p,
            Proration {
                remaining_s: 864_000,
                period_s: 2_592_000,
                credit_minor: 1_633,
                cost_minor: 6_633,
                due_minor: 5_000
            }
        );
        assert_eq!(prorate(1, 1, 2), 1, "a half rounds up");
        assert_eq!(prorate(3, 1, 4), 1, "0.75 rounds to 1");
        assert_eq!(prorate(1, 1, 4), 0, "0.25 rounds to 0");
        assert_eq!(prorate(5, 10, 0), 0);
        // The whole period left: the full difference; nothing left: nothing due.
        assert_eq!(proration(4_900, 19_900, start, end, start).due_minor, 15_000);
        assert_eq!(proration(4_900, 19_900, start, end, end + 5).due_minor, 0);
    }
}
