//! The dashboard's queries, run through the query service under the caller's access policy
//! (the same `AccessPolicy` the API builds; the policy is applied inside every scan of
//! `readings`, so a buoy outside the plan yields no rows whatever the text says).
//!
//! The statements are built from the selection's [`BuoyId`] / [`MetricName`] newtypes, whose
//! alphabets (`[A-Za-z0-9_.-]`, `[a-z0-9_]`) hold no quote, backslash or space, and from
//! integers: no user text reaches the SQL unparsed.
//!
//! Buckets: `bucket_start = date_bin(width, ts)` from the epoch, i.e. `(ts_ns / width_ns) *
//! width_ns` (ranges start after 1970, so no timestamp is negative), aligned to clock times;
//! widths are whole seconds (`BUCKET_WIDTHS_S`).

use bluewave_engine::{BuoyId, MetricName};
use bluewave_query::datafusion::arrow::array::{
    Array, Float64Array, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray,
};
use bluewave_query::{AccessPolicy, QueryService, ResultStream};

use super::selection::Selection;
use crate::http::ApiError;

/// Most rows the live stream reads in one poll (the rest come with the next poll).
pub const LIVE_ROWS_PER_POLL_MAX: usize = 2_000;

/// One bucket of one (buoy, metric) series.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Bucket {
    /// Start of the bucket, ns since the epoch.
    pub start_ns: i64,
    /// Smallest value in the bucket.
    pub min: f64,
    /// Arithmetic mean of the bucket's values.
    pub mean: f64,
    /// Largest value in the bucket.
    pub max: f64,
    /// Readings in the bucket.
    pub count: i64,
}

/// The buckets of one (buoy, metric), in time order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    pub buoy: String,
    pub metric: String,
    pub buckets: Vec<Bucket>,
}

/// The newest reading of one (buoy, metric).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Latest {
    pub buoy: String,
    pub metric: String,
    pub ts_ns: i64,
    pub value: f64,
}

/// One reading delivered by the live stream.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct LiveReading {
    pub buoy: String,
    pub metric: String,
    pub ts: i64,
    pub value: f64,
}

fn quoted_list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.map(|item| format!("'{item}'")).collect::<Vec<_>>().join(", ")
}

/// The bucket statement of `selection` (also the CSV export's: its columns are what the page
/// shows).
///
/// The bucket term is `date_bin` of a whole number of seconds from the epoch (the same
/// buckets as `(ts / width) * width`), the form the query layer answers from the engine's
/// minute rollups when the width is whole minutes (a day's range has 5-minute buckets).
pub(crate) fn bucket_sql(selection: &Selection) -> String {
    let width_s = selection.bucket_ns() / 1_000_000_000;
    format!(
        "SELECT buoy_id, metric, date_bin(INTERVAL '{width_s} seconds', ts) AS bucket_start, \
         min(value) AS min, avg(value) AS mean, max(value) AS max, count(value) AS count \
         FROM readings WHERE buoy_id IN ({}) AND metric IN ({}) \
         AND ts >= to_timestamp_nanos({}) AND ts < to_timestamp_nanos({}) \
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        quoted_list(selection.buoys.iter().map(BuoyId::as_str)),
        quoted_list(selection.metrics.iter().map(MetricName::as_str)),
        selection.start_ns,
        selection.end_ns,
    )
}

/// Runs `sql` under `policy` and collects its batches (the row cap of the policy applies).
async fn collect(
    query: &QueryService,
    sql: &str,
    policy: &AccessPolicy,
) -> Result<Vec<RecordBatch>, ApiError> {
    let stream: ResultStream = query.sql(sql, policy).await?;
    Ok(stream.collect_batches().await?)
}

fn column<'b, T: 'static>(batch: &'b RecordBatch, name: &str) -> Result<&'b T, ApiError> {
    batch
        .column_by_name(name)
        .and_then(|column| column.as_any().downcast_ref::<T>())
        .ok_or_else(|| ApiError::internal(format!("dashboard column `{name}` missing or mistyped")))
}

/// The series of `selection`, one per (buoy, metric) that has rows.
pub(crate) async fn buckets(
    query: &QueryService,
    selection: &Selection,
    policy: &AccessPolicy,
) -> Result<Vec<Series>, ApiError> {
    if selection.buoys.is_empty() || selection.metrics.is_empty() {
        return Ok(Vec::new());
    }
    let mut out: Vec<Series> = Vec::new();
    for batch in collect(query, &bucket_sql(selection), policy).await? {
        let buoys = column::<StringArray>(&batch, "buoy_id")?;
        let metrics = column::<StringArray>(&batch, "metric")?;
        let starts = column::<TimestampNanosecondArray>(&batch, "bucket_start")?;
        let mins = column::<Float64Array>(&batch, "min")?;
        let means = column::<Float64Array>(&batch, "mean")?;
        let maxes = column::<Float64Array>(&batch, "max")?;
        let counts = column::<Int64Array>(&batch, "count")?;
        for row in 0..batch.num_rows() {
            let (buoy, metric) = (buoys.value(row), metrics.value(row));
            let bucket = Bucket {
                start_ns: starts.value(row),
                min: mins.value(row),
                mean: means.value(row),
                max: maxes.value(row),
                count: counts.value(row),
            };
            match out.last_mut() {
                Some(series) if series.buoy == buoy && series.metric == metric => series.buckets.push(bucket),
                _ => out.push(Series {
                    buoy: buoy.to_owned(),
                    metric: metric.to_owned(),
                    buckets: vec![bucket],
                }),
            }
        }
    }
    Ok(out)
}

/// How far back (s, from the end of the shown range) the "latest values" look: a (buoy,
/// metric) without a reading in that window shows none (the scan stays bounded whatever the
/// history holds).
pub const LATEST_WINDOW_S: i64 = 86_400;
const NS_PER_S: i64 = 1_000_000_000;

/// The newest reading of every (buoy, metric) the policy lets the caller see, among those of
/// the last [`LATEST_WINDOW_S`] of `selection`'s range (a latest-row aggregate: the query
/// layer reads each buoy's newest data first).
pub(crate) async fn latest(
    query: &QueryService,
    selection: &Selection,
    policy: &AccessPolicy,
) -> Result<Vec<Latest>, ApiError> {
    let from_ns = selection.start_ns.max(selection.end_ns.saturating_sub(LATEST_WINDOW_S * NS_PER_S));
    let sql = format!(
        "SELECT buoy_id, metric, last_value(value ORDER BY ts) AS value, max(ts) AS ts \
         FROM readings WHERE ts >= to_timestamp_nanos({from_ns}) AND ts < to_timestamp_nanos({}) \
         GROUP BY buoy_id, metric ORDER BY buoy_id, metric",
        selection.end_ns
    );
    let mut out = Vec::new();
    for batch in collect(query, &sql, policy).await? {
        let buoys = column::<StringArray>(&batch, "buoy_id")?;
        let metrics = column::<StringArray>(&batch, "metric")?;
        let values = column::<Float64Array>(&batch, "value")?;
        let times = column::<TimestampNanosecondArray>(&batch, "ts")?;
        for row in 0..batch.num_rows() {
            if values.is_null(row) || times.is_null(row) {
                continue;
            }
            out.push(Latest {
                buoy: buoys.value(row).to_owned(),
                metric: metrics.value(row).to_owned(),
                ts_ns: times.value(row),
                value: values.value(row),
            });
        }
    }
    Ok(out)
}

/// The newest timestamp after `since_ns` of each (buoy, metric) of `buoys` × `metrics` that
/// has readings then (a latest-row aggregate over a bounded window, read newest data first).
pub(crate) async fn newest(
    query: &QueryService,
    buoys: &[BuoyId],
    metrics: &[MetricName],
    since_ns: i64,
    policy: &AccessPolicy,
) -> Result<Vec<(String, String, i64)>, ApiError> {
    let sql = format!(
        "SELECT buoy_id, metric, max(ts) AS ts FROM readings WHERE buoy_id IN ({}) AND metric IN ({}) \
         AND ts > to_timestamp_nanos({since_ns}) GROUP BY buoy_id, metric",
        quoted_list(buoys.iter().map(BuoyId::as_str)),
        quoted_list(metrics.iter().map(MetricName::as_str)),
    );
    let mut out = Vec::new();
    for batch in collect(query, &sql, policy).await? {
        let buoy_ids = column::<StringArray>(&batch, "buoy_id")?;
        let names = column::<StringArray>(&batch, "metric")?;
        let times = column::<TimestampNanosecondArray>(&batch, "ts")?;
        for row in 0..batch.num_rows() {
            if !times.is_null(row) {
                out.push((buoy_ids.value(row).to_owned(), names.value(row).to_owned(), times.value(row)));
            }
        }
    }
    Ok(out)
}

/// Readings newer than their own series' cursor: for each `((buoy, metric), after_ns)` of
/// `cursors`, the readings of that (buoy, metric) with `ts > after_ns`; oldest first, at most
/// [`LIVE_ROWS_PER_POLL_MAX`]. Each series is bounded by its own cursor (an OR of one
/// conjunction per series), so a dense series whose sent rows fill the cap cannot hide the new
/// rows of any series behind a sparse series' older cursor. At most `BUOYS_SELECTED_MAX ×
/// METRICS_SELECTED_MAX` conjunctions.
pub(crate) async fn newer(
    query: &QueryService,
    cursors: &[(&BuoyId, &MetricName, i64)],
    policy: &AccessPolicy,
) -> Result<Vec<LiveReading>, ApiError> {
    if cursors.is_empty() {
        return Ok(Vec::new());
    }
    let conditions = cursors
        .iter()
        .map(|(buoy, metric, after_ns)| {
            format!(
                "(buoy_id = '{}' AND metric = '{}' AND ts > to_timestamp_nanos({after_ns}))",
                buoy.as_str(),
                metric.as_str()
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ");
    let sql = format!(
        "SELECT buoy_id, metric, ts, value FROM readings WHERE {conditions} \
         ORDER BY ts, buoy_id, metric LIMIT {LIVE_ROWS_PER_POLL_MAX}",
    );
    let mut out = Vec::new();
    for batch in collect(query, &sql, policy).await? {
        let buoy_ids = column::<StringArray>(&batch, "buoy_id")?;
        let names = column::<StringArray>(&batch, "metric")?;
        let times = column::<TimestampNanosecondArray>(&batch, "ts")?;
        let values = column::<Float64Array>(&batch, "value")?;
        for row in 0..batch.num_rows() {
            out.push(LiveReading {
                buoy: buoy_ids.value(row).to_owned(),
                metric: names.value(row).to_owned(),
                ts: times.value(row),
                value: values.value(row),
            });
        }
    }
    Ok(out)
}
