//! What the dashboard shows: buoys, metrics and a time range from the query string, checked
//! against the caller's plan, and the bucket width that follows the range.
//!
//! Query string: `buoy=<id>` (repeated, at most [`BUOYS_SELECTED_MAX`]), `metric=<name>`
//! (repeated, at most [`METRICS_SELECTED_MAX`]), and either `range=1h|6h|24h|7d|30d` ending now,
//! or `start=` and `end=` (integer ns or RFC 3339, the API's time forms). Ids are parsed into the
//! engine's [`BuoyId`] / [`MetricName`] newtypes here, once.

use bluewave_engine::{BuoyId, MetricName};

use crate::http::ApiError;

/// Most buoys one dashboard view may chart (each adds a line per metric chart and its rows
/// to the data table).
pub const BUOYS_SELECTED_MAX: usize = 4;
/// Most metrics one dashboard view may chart (one chart each).
pub const METRICS_SELECTED_MAX: usize = 8;
/// Most buckets a chart aims for; the width is the smallest of [`BUCKET_WIDTHS_S`] that keeps
/// the bucket count at or below it (so a preset range gives 288–365 buckets).
pub const BUCKETS_TARGET_MAX: i64 = 400;
/// Longest time range one view may cover: 366 days.
pub const RANGE_S_MAX: i64 = 366 * 86_400;
/// Most `key=value` pairs read from a dashboard query string.
pub const QUERY_PAIRS_MAX: usize = 32;
/// Bucket widths, seconds: round numbers that divide a day (or a week), so buckets align
/// with clock times.
pub const BUCKET_WIDTHS_S: [i64; 20] = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1_800, 3_600, 7_200, 10_800, 21_600, 43_200, 86_400,
    172_800, 604_800,
];
/// The time range presets (`range=`), with their length in seconds.
pub const RANGE_PRESETS: [(&str, i64); 5] =
    [("1h", 3_600), ("6h", 6 * 3_600), ("24h", 86_400), ("7d", 7 * 86_400), ("30d", 30 * 86_400)];
/// The preset used when the query string names no range.
pub const RANGE_DEFAULT: &str = "24h";

const NS_PER_S: i64 = 1_000_000_000;

// The widest bucket must cover the longest range within the target.
const _: () = assert!(RANGE_S_MAX / BUCKET_WIDTHS_S[BUCKET_WIDTHS_S.len() - 1] <= BUCKETS_TARGET_MAX);

/// A parsed, validated dashboard request (before the plan check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Selection {
    /// Buoys asked for, in the order given, without duplicates.
    pub buoys: Vec<BuoyId>,
    /// Metrics asked for, in the order given, without duplicates.
    pub metrics: Vec<MetricName>,
    /// Start of the range, ns since the epoch (inclusive); never negative.
    pub start_ns: i64,
    /// End of the range, ns (exclusive); `start_ns < end_ns`.
    pub end_ns: i64,
    /// The preset the range came from, if any (shown selected in the form).
    pub preset: Option<&'static str>,
}

impl Selection {
    /// Parses the query string `pairs` at `now_ns`.
    pub(crate) fn parse(pairs: &[(String, String)], now_ns: i64) -> Result<Self, ApiError> {
        if pairs.len() > QUERY_PAIRS_MAX {
            return Err(ApiError::InvalidInput(format!("at most {QUERY_PAIRS_MAX} query parameters")));
        }
        let mut buoys: Vec<BuoyId> = Vec::new();
        let mut metrics: Vec<MetricName> = Vec::new();
        let (mut range, mut start, mut end) = (None, None, None);
        for (key, value) in pairs {
            match key.as_str() {
                "buoy" => {
                    let id = BuoyId::new(value).map_err(|e| ApiError::InvalidInput(e.to_string()))?;
                    if !buoys.contains(&id) {
                        buoys.push(id);
                    }
                }
                "metric" => {
                    let name = MetricName::new(value).map_err(|e| ApiError::InvalidInput(e.to_string()))?;
                    if !metrics.contains(&name) {
                        metrics.push(name);
                    }
                }
                "range" if !value.is_empty() => range = Some(value.as_str()),
                "start" if !value.is_empty() => start = Some(crate::api::parse_time(value, "start")?),
                "end" if !value.is_empty() => end = Some(crate::api::parse_time(value, "end")?),
                "range" | "start" | "end" => {}
                other => return Err(ApiError::InvalidInput(format!("unknown parameter {other:?}"))),
            }
        }
        if buoys.len() > BUOYS_SELECTED_MAX {
            return Err(ApiError::InvalidInput(format!("at most {BUOYS_SELECTED_MAX} buoys")));
        }
        if metrics.len() > METRICS_SELECTED_MAX {
            return Err(ApiError::InvalidInput(format!("at most {METRICS_SELECTED_MAX} metrics")));
        }
        let (start_ns, end_ns, preset) = match (start, end) {
            (Some(start), Some(end)) => (start, end, None),
            (None, None) => {
                let name = range.unwrap_or(RANGE_DEFAULT);
                let (preset, seconds) =
                    RANGE_PRESETS.iter().find(|(preset, _)| *preset == name).copied().ok_or_else(|| {
                        ApiError::InvalidInput("range: one of 1h, 6h, 24h, 7d, 30d".to_owned())
                    })?;
                (now_ns.saturating_sub(seconds * NS_PER_S), now_ns, Some(preset))
            }
            _ => return Err(ApiError::InvalidInput("give both start and end, or neither".to_owned())),
        };
        if start_ns < 0 || end_ns <= start_ns {
            return Err(ApiError::InvalidInput(
                "the range must start after 1970 and before its end".to_owned(),
            ));
        }
        if end_ns - start_ns > RANGE_S_MAX * NS_PER_S {
            return Err(ApiError::InvalidInput("the range may span at most 366 days".to_owned()));
        }
        Ok(Self { buoys, metrics, start_ns, end_ns, preset })
    }

    /// The bucket width of the range, ns.
    pub(crate) fn bucket_ns(&self) -> i64 {
        bucket_width_s(self.end_ns - self.start_ns) * NS_PER_S
    }

    /// The query string of this selection (for the CSV link and the live stream), with the
    /// range as explicit `start`/`end` so every link shows the same rows.
    pub(crate) fn query_string(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        pairs.extend(self.buoys.iter().map(|b| ("buoy", b.as_str().to_owned())));
        pairs.extend(self.metrics.iter().map(|m| ("metric", m.as_str().to_owned())));
        pairs.push(("start", self.start_ns.to_string()));
        pairs.push(("end", self.end_ns.to_string()));
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    }
}

/// The smallest of [`BUCKET_WIDTHS_S`] that gives at most [`BUCKETS_TARGET_MAX`] buckets over
/// `span_ns` (the widest for longer spans, which [`RANGE_S_MAX`] rules out).
pub(crate) fn bucket_width_s(span_ns: i64) -> i64 {
    let ceil_div = |a: i64, b: i64| (a + b - 1) / b;
    let span_s = ceil_div(span_ns.max(0), NS_PER_S);
    BUCKET_WIDTHS_S
        .iter()
        .copied()
        .find(|width| ceil_div(span_s, *width) <= BUCKETS_TARGET_MAX)
        .unwrap_or(BUCKET_WIDTHS_S[BUCKET_WIDTHS_S.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn presets_give_200_to_400_buckets() {
        let widths: Vec<(i64, i64)> = RANGE_PRESETS
            .iter()
            .map(|(_, s)| (bucket_width_s(s * NS_PER_S), s / bucket_width_s(s * NS_PER_S)))
            .collect();
        assert_eq!(widths, vec![(10, 360), (60, 360), (300, 288), (1_800, 336), (7_200, 360)]);
        assert_eq!(bucket_width_s(RANGE_S_MAX * NS_PER_S), 86_400);
        assert_eq!(bucket_width_s(NS_PER_S), 1);
    }

    #[test]
    fn parses_and_refuses() {
        let now = 10_000 * 86_400 * NS_PER_S;
        let s = Selection::parse(&pairs(&[("buoy", "b-1"), ("buoy", "b-1"), ("metric", "ph")]), now).unwrap();
        assert_eq!(s.buoys.len(), 1);
        assert_eq!((s.end_ns - s.start_ns, s.preset), (86_400 * NS_PER_S, Some("24h")));
        let explicit = Selection::parse(
            &pairs(&[("start", "2025-12-31T00:00:00Z"), ("end", "1767225600000000000")]),
            now,
        )
        .unwrap();
        assert_eq!(
            (explicit.start_ns, explicit.end_ns, explicit.preset),
            (1_767_139_200 * NS_PER_S, 1_767_225_600 * NS_PER_S, None)
        );
        assert_eq!(explicit.bucket_ns(), 300 * NS_PER_S);
        for bad in [
            vec![("buoy", "a'b")],
            vec![("metric", "Ph")],
            vec![("range", "2y")],
            vec![("start", "5")],
            vec![("start", "5"), ("end", "5")],
            vec![("start", "0"), ("end", "40000000000000000")],
            vec![("sql", "1")],
            vec![("buoy", "a"), ("buoy", "b"), ("buoy", "c"), ("buoy", "d"), ("buoy", "e")],
        ] {
            assert!(matches!(Selection::parse(&pairs(&bad), now), Err(ApiError::InvalidInput(_))), "{bad:?}");
        }
    }

    #[test]
    fn the_query_string_round_trips() {
        let s =
            Selection::parse(&pairs(&[("buoy", "b.1"), ("metric", "ph"), ("range", "1h")]), 7_200 * NS_PER_S)
                .unwrap();
        let back: Vec<(String, String)> = serde_urlencoded::from_str(&s.query_string()).unwrap();
        let again = Selection::parse(&back, 0).unwrap();
        assert_eq!(
            (again.buoys, again.metrics, again.start_ns, again.end_ns),
            (s.buoys, s.metrics, s.start_ns, s.end_ns)
        );
    }
}
