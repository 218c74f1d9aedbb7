//! Typed reads for the REST API: [`TelemetryFilter`] becomes DataFusion expressions (never SQL
//! text), and [`Cursor`] pages through large ranges by keyset on `(buoy_id, metric, ts)`.

use bluewave_engine::columns::{COLUMN_BUOY_ID, COLUMN_METRIC, COLUMN_QUALITY, COLUMN_TS};
use bluewave_engine::{BuoyId, MetricName, Quality};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::utils::conjunction;
use datafusion::prelude::{Expr, col, lit};

use crate::error::{Error, Result};
use crate::policy::{AccessPolicy, BuoyScope, QueryConfig};
use crate::table::TS_TZ;

/// A filtered read of `readings`. `None` fields do not restrict.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TelemetryFilter {
    /// One buoy.
    pub buoy_id: Option<String>,
    /// One metric.
    pub metric: Option<String>,
    /// Inclusive start, ns since the epoch.
    pub start: Option<i64>,
    /// Exclusive end, ns since the epoch.
    pub end: Option<i64>,
    /// Only these quality flags.
    pub quality: Option<Vec<Quality>>,
    /// Rows per page (default [`QueryConfig::read_limit_default`], at most
    /// [`QueryConfig::read_limit_max`] and the policy's `rows_max`).
    pub limit: Option<usize>,
    /// Continue after this cursor (from [`crate::ResultStream::next_cursor`]).
    pub cursor: Option<Cursor>,
}

fn ts_lit(t: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(Some(t), Some(TS_TZ.into())))
}

impl TelemetryFilter {
    pub(crate) fn page_limit(&self, config: &QueryConfig) -> Result<usize> {
        let limit = self.limit.unwrap_or(config.read_limit_default);
        if limit == 0 {
            return Err(Error::InvalidFilter("limit must be positive".into()));
        }
        if limit > config.read_limit_max {
            return Err(Error::InvalidFilter(format!(
                "limit {limit} exceeds the maximum {}",
                config.read_limit_max
            )));
        }
        Ok(limit)
    }

    /// The filter as one predicate (None when it restricts nothing). Checks ids and ranges,
    /// and refuses a buoy outside the policy (the row filter would hide it anyway; the refusal
    /// tells the caller why the answer is empty without saying whether the buoy exists).
    pub(crate) fn to_expr(&self, policy: &AccessPolicy) -> Result<Option<Expr>> {
        let mut terms = Vec::new();
        if let Some(b) = &self.buoy_id {
            let id = BuoyId::new(b).map_err(|e| Error::InvalidFilter(e.to_string()))?;
            if let BuoyScope::Only(set) = &policy.buoys
                && !set.contains(id.as_str())
            {
                return Err(Error::PolicyDenied(format!("buoy {} is not in your access scope", id.as_str())));
            }
            terms.push(col(COLUMN_BUOY_ID).eq(lit(id.as_str())));
        }
        if let Some(m) = &self.metric {
            let metric = MetricName::new(m).map_err(|e| Error::InvalidFilter(e.to_string()))?;
            terms.push(col(COLUMN_METRIC).eq(lit(metric.as_str())));
        }
        if let (Some(s), Some(e)) = (self.start, self.end)
            && e < s
        {
            return Err(Error::InvalidFilter(format!("end {e} is before start {s}")));
        }
        if let Some(s) = self.start {
            terms.push(col(COLUMN_TS).gt_eq(ts_lit(s)));
        }
        if let Some(e) = self.end {
            terms.push(col(COLUMN_TS).lt(ts_lit(e)));
        }
        if let Some(q) = &self.quality {
            if q.is_empty() {
                return Err(Error::InvalidFilter("quality list is empty".into()));
            }
            terms.push(col(COLUMN_QUALITY).in_list(q.iter().map(|q| lit(*q as u8)).collect(), false));
        }
        if let Some(c) = &self.cursor {
            // Strictly after (buoy, metric, ts) in key order.
            let (b, m, t) = (lit(c.buoy.as_str()), lit(c.metric.as_str()), ts_lit(c.ts));
            let after = col(COLUMN_BUOY_ID).gt(b.clone()).or(col(COLUMN_BUOY_ID).eq(b).and(
                col(COLUMN_METRIC).gt(m.clone()).or(col(COLUMN_METRIC).eq(m).and(col(COLUMN_TS).gt(t))),
            ));
            terms.push(after);
        }
        Ok(conjunction(terms))
    }
}

/// Where the previous page ended: an opaque, URL-safe token (`[A-Za-z0-9_-]`).
///
/// Layout before encoding (little-endian): `version u8 = 1 | ts i64 | buoy_len u8 | buoy |
/// metric`, then base64url without padding. It names a key the caller already received, so it
/// reveals nothing; a forged one only moves the start of the caller's own policy-bound scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    buoy: String,
    metric: String,
    ts: i64,
}

/// Cursor layout version.
const CURSOR_VERSION: u8 = 1;
/// Longest accepted token (64-byte names at most: 1 + 8 + 1 + 64 + 64 bytes, base64url).
pub const CURSOR_CHARS_MAX: usize = 256;
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

impl Cursor {
    pub(crate) fn new(buoy: &str, metric: &str, ts: i64) -> Self {
        Self { buoy: buoy.to_owned(), metric: metric.to_owned(), ts }
    }

    /// The token.
    pub fn encode(&self) -> String {
        let mut raw = vec![CURSOR_VERSION];
        raw.extend_from_slice(&self.ts.to_le_bytes());
        raw.push(self.buoy.len() as u8);
        raw.extend_from_slice(self.buoy.as_bytes());
        raw.extend_from_slice(self.metric.as_bytes());
        let mut out = String::with_capacity(raw.len() * 4 / 3 + 3);
        for chunk in raw.chunks(3) {
            let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out
    }

    /// Parses a token; [`Error::InvalidFilter`] when it is not one of ours.
    pub fn decode(token: &str) -> Result<Self> {
        let bad = || Error::InvalidFilter("malformed cursor".into());
        if token.len() > CURSOR_CHARS_MAX || token.len() % 4 == 1 {
            return Err(bad());
        }
        let mut raw = Vec::with_capacity(token.len() * 3 / 4);
        for chunk in token.as_bytes().chunks(4) {
            let mut n = 0u32;
            for (i, c) in chunk.iter().enumerate() {
                let v = ALPHABET.iter().position(|a| a == c).ok_or_else(bad)? as u32;
                n |= v << (18 - 6 * i);
            }
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            raw.extend_from_slice(&bytes[..chunk.len() - 1]);
        }
        let (&version, rest) = raw.split_first().ok_or_else(bad)?;
        if version != CURSOR_VERSION || rest.len() < 9 {
            return Err(bad());
        }
        let (ts, rest) = rest.split_at(8);
        let ts = i64::from_le_bytes(ts.try_into().map_err(|_| bad())?);
        let (&buoy_len, rest) = rest.split_first().ok_or_else(bad)?;
        let buoy_len = usize::from(buoy_len);
        if rest.len() < buoy_len {
            return Err(bad());
        }
        let (buoy, metric) = rest.split_at(buoy_len);
        let buoy = std::str::from_utf8(buoy).map_err(|_| bad())?;
        let metric = std::str::from_utf8(metric).map_err(|_| bad())?;
        BuoyId::new(buoy).map_err(|_| bad())?;
        MetricName::new(metric).map_err(|_| bad())?;
        Ok(Self::new(buoy, metric, ts))
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.encode())
    }
}
