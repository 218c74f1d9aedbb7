//! `GET /api/telemetry` (filtered, paged reads under the caller's plan) and `POST
//! /api/telemetry` (JSON batch ingest for tools without QUIC: the engine's path, answered once
//! durable).

use std::sync::Arc;

use bluewave_engine::{BuoyId, MetricName, Quality, ReadingBatchBuilder};
use bluewave_query::datafusion::arrow::array::{
    Array, Float64Array, RecordBatch, StringArray, TimestampNanosecondArray, UInt8Array,
};
use bluewave_query::{Cursor, TelemetryFilter};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use crate::api::{ApiState, blocking};
use crate::audit::AuditEvent;
use crate::auth::Permission;
use crate::http::{ApiError, Reply, Request};

/// Body limit of `POST /api/telemetry`: 4 MiB, room for about 50 000 readings of JSON (the
/// engine's own batch limit applies after parsing).
pub const TELEMETRY_BODY_BYTES_MAX: u64 = 4 << 20;

/// Query string of `GET /api/telemetry`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReadParams {
    /// One buoy.
    buoy_id: Option<String>,
    /// One metric.
    metric: Option<String>,
    /// Inclusive start, ns since the Unix epoch (UTC).
    start: Option<i64>,
    /// Exclusive end, ns since the Unix epoch (UTC).
    end: Option<i64>,
    /// Comma-separated quality flags: `good`, `out_of_range`, `suspect` (or 0, 1, 2).
    quality: Option<String>,
    /// Rows per page (default 10 000, at most 1 000 000 and the plan's row limit).
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// One reading.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct ReadingRow {
    /// Buoy id.
    buoy_id: String,
    /// Metric name.
    metric: String,
    /// Timestamp, ns since the Unix epoch (UTC).
    ts: i64,
    /// Value.
    value: f64,
    /// 0 good, 1 out of range, 2 suspect.
    quality: u8,
}

/// A page of readings.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ReadAnswer {
    /// Rows in `(buoy_id, metric, ts)` order.
    rows: Vec<ReadingRow>,
    /// Pass as `cursor` to get the next page; `null` when there is none.
    next_cursor: Option<String>,
}

fn parse_quality(text: &str) -> Result<Vec<Quality>, ApiError> {
    text.split(',')
        .map(|part| match part.trim() {
            "good" | "0" => Ok(Quality::Good),
            "out_of_range" | "1" => Ok(Quality::OutOfRange),
            "suspect" | "2" => Ok(Quality::Suspect),
            other => Err(ApiError::InvalidInput(format!(
                "unknown quality {other:?}; expected good, out_of_range or suspect"
            ))),
        })
        .collect()
}

fn rows_of(batch: &RecordBatch, out: &mut Vec<ReadingRow>) -> Result<(), ApiError> {
    fn column<'b, T: 'static>(batch: &'b RecordBatch, name: &str) -> Result<&'b T, ApiError> {
        batch
            .column_by_name(name)
            .and_then(|column| column.as_any().downcast_ref::<T>())
            .ok_or_else(|| ApiError::internal(format!("readings column `{name}` missing or mistyped")))
    }
    let buoys = column::<StringArray>(batch, "buoy_id")?;
    let metrics = column::<StringArray>(batch, "metric")?;
    let times = column::<TimestampNanosecondArray>(batch, "ts")?;
    let values = column::<Float64Array>(batch, "value")?;
    let qualities = column::<UInt8Array>(batch, "quality")?;
    for row in 0..batch.num_rows() {
        out.push(ReadingRow {
            buoy_id: buoys.value(row).to_owned(),
            metric: metrics.value(row).to_owned(),
            ts: times.value(row),
            value: values.value(row),
            quality: qualities.value(row),
        });
    }
    Ok(())
}

/// Reads readings under the caller's plan: a buoy outside it answers 404, as an unknown one.
#[utoipa::path(get, path = "/api/telemetry", params(ReadParams), tag = "telemetry", security(("bearer" = [])),
    responses((status = 200, description = "A page of readings", body = ReadAnswer),
        (status = 400, description = "Invalid filter"),
        (status = 401, description = "No valid access token"),
        (status = 403, description = "Missing telemetry:read"),
        (status = 404, description = "No such buoy (or outside the caller's plan)"),
        (status = 429, description = "Daily query quota used up")))]
pub(crate) async fn read(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = request.caller()?;
    let params: ReadParams = request.query()?;
    let state = request.state();
    state.auth.authorize(&caller, Permission::TelemetryRead)?;
    let filter = TelemetryFilter {
        buoy_id: params.buoy_id,
        metric: params.metric,
        start: params.start,
        end: params.end,
        quality: params.quality.as_deref().map(parse_quality).transpose()?,
        limit: params.limit,
        cursor: params.cursor.as_deref().map(Cursor::decode).transpose()?,
    };
    let policy = state.policy(&caller).await?;
    // No plan, no buoys: nothing to read (and a named buoy is 404, as for any other caller).
    if matches!(&policy.buoys, bluewave_query::BuoyScope::Only(buoys) if buoys.is_empty()) {
        if filter.buoy_id.is_some() {
            return Err(ApiError::NotFound("no such buoy".to_owned()));
        }
        return Reply::json(&ReadAnswer { rows: Vec::new(), next_cursor: None });
    }
    state.count_query(&caller).await?;
    let mut results = state.query.read(&filter, &policy).await?;
    let mut rows = Vec::new();
    while let Some(batch) = results.next().await {
        rows_of(&batch?, &mut rows)?;
    }
    let next_cursor = results.next_cursor().map(|cursor| cursor.encode());
    Reply::json(&ReadAnswer { rows, next_cursor })
}

/// One reading of a JSON batch.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct IngestReading {
    /// Metric name (`[a-z0-9_]`, 1-64 chars).
    metric: String,
    /// Timestamp, ns since the Unix epoch (UTC).
    ts: i64,
    /// Value (finite).
    value: f64,
}

/// A JSON batch for `POST /api/telemetry`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct IngestBody {
    /// A registered buoy.
    buoy_id: String,
    /// Per-buoy batch sequence number: a retry with the same number is stored once.
    batch_seq: u64,
    /// The readings.
    readings: Vec<IngestReading>,
}

/// What happened to an ingested batch.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct IngestAnswer {
    /// `stored` (durable now) or `duplicate` (this `batch_seq` was stored before).
    outcome: &'static str,
    /// Readings in the batch.
    readings: usize,
}

/// Ingests a JSON batch; answers once it is durable.
#[utoipa::path(post, path = "/api/telemetry", request_body = IngestBody, tag = "telemetry",
    security(("bearer" = [])),
    responses((status = 200, description = "Durable (stored or duplicate)", body = IngestAnswer),
        (status = 400, description = "Invalid batch (unknown buoy, bad metric, NaN, ...)"),
        (status = 403, description = "Missing telemetry:write"),
        (status = 413, description = "Body above 4 MiB"),
        (status = 503, description = "Engine busy; see Retry-After")))]
pub(crate) async fn ingest(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = request.caller()?;
    let state = request.state().clone();
    state.auth.authorize(&caller, Permission::TelemetryWrite)?;
    let body: IngestBody = request.json().await?;
    let buoy = BuoyId::new(&body.buoy_id).map_err(|error| ApiError::InvalidInput(error.to_string()))?;
    let mut builder = ReadingBatchBuilder::with_capacity(body.readings.len());
    for reading in &body.readings {
        let metric =
            MetricName::new(&reading.metric).map_err(|error| ApiError::InvalidInput(error.to_string()))?;
        builder
            .push(&metric, reading.ts, reading.value)
            .map_err(|error| ApiError::InvalidInput(error.to_string()))?;
    }
    let batch = builder.finish().map_err(|error| ApiError::InvalidInput(error.to_string()))?;
    let readings = batch.len();
    let outcome = state.engine.ingest(&buoy, body.batch_seq, batch)?.await?;
    let outcome = match outcome {
        bluewave_engine::IngestOutcome::Stored { .. } => "stored",
        bluewave_engine::IngestOutcome::Duplicate => "duplicate",
    };
    let auth = Arc::clone(&state.auth);
    let actor = format!("user:{}", caller.user_id());
    blocking(move || {
        let event = AuditEvent::new(actor, "telemetry.ingest", format!("buoy:{buoy}"), "ok").with_details(
            serde_json::json!({ "batch_seq": body.batch_seq, "readings": readings, "outcome": outcome }),
        );
        auth.audit_log().append(event).map(drop).map_err(ApiError::internal)
    })
    .await?;
    Reply::json(&IngestAnswer { outcome, readings })
}
