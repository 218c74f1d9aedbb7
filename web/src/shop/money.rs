//! Money: integer minor units of an ISO-4217 currency. Never floating point.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::{ShopError, ShopResult};

/// Largest amount the shop handles, minor units (10 billion in major units): sums of lines
/// with quantities within their limits stay far below `i64::MAX`.
pub const AMOUNT_MINOR_MAX: i64 = 1_000_000_000_000;

/// The currencies the shop prices in (ISO 4217; each has two minor digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Currency {
    /// Euro.
    #[serde(rename = "EUR")]
    Eur,
    /// US dollar.
    #[serde(rename = "USD")]
    Usd,
    /// Pound sterling.
    #[serde(rename = "GBP")]
    Gbp,
}

impl Currency {
    /// The ISO-4217 code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Eur => "EUR",
            Self::Usd => "USD",
            Self::Gbp => "GBP",
        }
    }

    /// The currency of an ISO-4217 code.
    pub fn parse(code: &str) -> ShopResult<Self> {
        match code {
            "EUR" => Ok(Self::Eur),
            "USD" => Ok(Self::Usd),
            "GBP" => Ok(Self::Gbp),
            _ => Err(ShopError::invalid("currency", "EUR, USD or GBP")),
        }
    }
}

/// An amount: integer minor units (cents) and the currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// Minor units (e.g. cents), within ±[`AMOUNT_MINOR_MAX`].
    pub minor: i64,
    /// The currency.
    pub currency: Currency,
}

impl Money {
    /// An amount, checked against [`AMOUNT_MINOR_MAX`].
    pub fn new(minor: i64, currency: Currency) -> ShopResult<Self> {
        if !(-AMOUNT_MINOR_MAX..=AMOUNT_MINOR_MAX).contains(&minor) {
            return Err(ShopError::invalid("amount", "out of range"));
        }
        Ok(Self { minor, currency })
    }

    /// Zero of `currency`.
    pub fn zero(currency: Currency) -> Self {
        Self { minor: 0, currency }
    }

    /// The sum; both in one currency (a mismatch is refused, never converted).
    pub fn plus(self, other: Money) -> ShopResult<Money> {
        if self.currency != other.currency {
            return Err(ShopError::invalid("currency", "amounts in different currencies"));
        }
        Money::new(self.minor.saturating_add(other.minor), self.currency)
    }

    /// `self × quantity`.
    pub fn times(self, quantity: u32) -> ShopResult<Money> {
        Money::new(self.minor.saturating_mul(i64::from(quantity)), self.currency)
    }

    /// `self × basis_points / 10,000`, rounded half away from zero (tax).
    pub fn basis_points(self, basis_points: u32) -> ShopResult<Money> {
        let product = i128::from(self.minor) * i128::from(basis_points);
        let rounded = (product.abs() + 5_000) / 10_000 * product.signum();
        Money::new(i64::try_from(rounded).unwrap_or(i64::MAX), self.currency)
    }

    /// Parses `"1234.50"` (a decimal in major units, at most two fraction digits).
    pub fn parse_major(text: &str, currency: Currency) -> ShopResult<Money> {
        let bad = || ShopError::invalid("price", "a decimal amount like 1234.50");
        let text = text.trim();
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        if whole.is_empty()
            || whole.len() > 12
            || fraction.len() > 2
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let whole: i64 = whole.parse().map_err(|_| bad())?;
        let cents: i64 = match fraction.len() {
            0 => 0,
            1 => fraction.parse::<i64>().map_err(|_| bad())? * 10,
            _ => fraction.parse().map_err(|_| bad())?,
        };
        Money::new(whole.saturating_mul(100).saturating_add(cents), currency)
    }

    /// `1234.50` (major units, two fraction digits, no currency).
    pub fn major_text(self) -> String {
        let sign = if self.minor < 0 { "-" } else { "" };
        let abs = self.minor.unsigned_abs();
        format!("{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl fmt::Display for Money {
    /// `EUR 1,234.50`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.minor < 0 { "-" } else { "" };
        let abs = self.minor.unsigned_abs();
        let whole = (abs / 100).to_string();
        let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
        for (i, c) in whole.chars().enumerate() {
            if i > 0 && (whole.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        write!(f, "{} {sign}{grouped}.{:02}", self.currency.code(), abs % 100)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn formats_parses_and_rounds() {
        let m = Money::new(123_456_789, Currency::Eur).unwrap();
        assert_eq!(m.to_string(), "EUR 1,234,567.89");
        assert_eq!(Money::new(-5, Currency::Usd).unwrap().to_string(), "USD -0.05");
        assert_eq!(Money::parse_major("1234.5", Currency::Eur).unwrap().minor, 123_450);
        assert_eq!(Money::parse_major("7", Currency::Eur).unwrap().minor, 700);
        for bad in ["", "1.234", "-1", "1e3", "12,00", " . "] {
            assert!(Money::parse_major(bad, Currency::Eur).is_err(), "{bad}");
        }
        // 20 % of 0.05 is 0.01 (half away from zero); of 0.02 is 0.00.
        assert_eq!(Money::new(5, Currency::Eur).unwrap().basis_points(2_000).unwrap().minor, 1);
        assert_eq!(Money::new(2, Currency::Eur).unwrap().basis_points(2_000).unwrap().minor, 0);
        assert!(m.plus(Money::zero(Currency::Usd)).is_err());
        assert!(Money::new(AMOUNT_MINOR_MAX + 1, Currency::Eur).is_err());
    }
}
