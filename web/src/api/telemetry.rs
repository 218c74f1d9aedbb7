//! `GET /api/telemetry` (filtered, paged reads under the caller's plan), `POST
//! /api/telemetry` (JSON batch ingest for tools without QUIC: the engine's path, answered once
//! durable), one reading by its opaque id (`GET|DELETE /api/telemetry/{id}`) and range deletes
//! (`POST /api/telemetry/delete`).
//!
//! A reading's id is the unpadded URL-safe base64 of `<buoy_id>/<metric>/<ts>`: neither a buoy
//! id nor a metric can hold `/`, so the key decodes unambiguously. Ids are opaque to clients;
//! a caller whose plan does not cover the buoy gets 404 for any id of it, exactly as for a
//! reading that does not exist.
//!
//! `PUT /api/telemetry/{id}` corrects a value: a new write of the same key through
//! `Engine::write_unsequenced`, outside the buoy's batch numbering (so it neither moves the
//! device's anti-replay window nor can be swallowed as a duplicate); last write wins, the engine
//! flags its quality again against the metric's physical range, and the audit entry keeps the
//! old and the new value.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bluewave_engine::{BuoyId, DeleteRange, MetricName, Quality, ReadingBatchBuilder};
use bluewave_query::datafusion::arrow::array::{
    Array, Float64Array, RecordBatch, StringArray, TimestampNanosecondArray, UInt8Array,
};
use bluewave_query::{AccessPolicy, Cursor, TelemetryFilter};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use crate::StatusCode;
use crate::api::time::{TimeInput, format_rfc3339, parse_param};
use crate::api::{ApiState, blocking};
use crate::audit::AuditEvent;
use crate::auth::Permission;
use crate::http::{ApiError, Reply, Request};

/// Body limit of `POST /api/telemetry`: 4 MiB, room for about 50 000 readings of JSON (the
/// engine's own batch limit applies after parsing).
pub const TELEMETRY_BODY_BYTES_MAX: u64 = 4 << 20;

/// Longest reading id accepted, chars: the base64 of a 64-char buoy id, a 64-char metric and
/// an i64 (about 180 chars), rounded up. Longer ids are refused before decoding.
pub const READING_ID_CHARS_MAX: usize = 256;

/// Query string of `GET /api/telemetry`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReadParams {
    /// One buoy.
    buoy_id: Option<String>,
    /// One metric.
    metric: Option<String>,
    /// Inclusive start: ns since the Unix epoch, or RFC 3339 (`2026-01-01T00:00:00Z`).
    start: Option<String>,
    /// Exclusive end: ns since the Unix epoch, or RFC 3339.
    end: Option<String>,
    /// Comma-separated quality flags: `good`, `out_of_range`, `suspect` (or 0, 1, 2).
    quality: Option<String>,
    /// Rows per page (default 10 000, at most 1 000 000 and the plan's row limit).
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// One reading.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ReadingRow {
    /// Opaque, URL-safe id of the reading's key, for `/api/telemetry/{id}`.
    id: String,
    /// Buoy id.
    buoy_id: String,
    /// Metric name.
    metric: String,
    /// Timestamp, ns since the Unix epoch (UTC).
    ts: i64,
    /// The same instant as RFC 3339 UTC text with nanoseconds.
    time: String,
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
        let (buoy_id, metric, ts) = (buoys.value(row), metrics.value(row), times.value(row));
        out.push(ReadingRow {
            id: reading_id(buoy_id, metric, ts),
            buoy_id: buoy_id.to_owned(),
            metric: metric.to_owned(),
            ts,
            time: format_rfc3339(ts),
            value: values.value(row),
            quality: qualities.value(row),
        });
    }
    Ok(())
}

/// The opaque id of the reading `(buoy, metric, ts)`.
fn reading_id(buoy: &str, metric: &str, ts: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{buoy}/{metric}/{ts}"))
}

/// The key of a reading id; 400 `invalid_input` when it is not one this server made.
fn decode_reading_id(id: &str) -> Result<(BuoyId, MetricName, i64), ApiError> {
    let invalid = || ApiError::InvalidInput("not a reading id".to_owned());
    if id.is_empty() || id.len() > READING_ID_CHARS_MAX {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(id).map_err(|_| invalid())?;
    let text = std::str::from_utf8(&bytes).map_err(|_| invalid())?;
    let mut parts = text.split('/');
    let (Some(buoy), Some(metric), Some(ts), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    let buoy = BuoyId::new(buoy).map_err(|_| invalid())?;
    let metric = MetricName::new(metric).map_err(|_| invalid())?;
    // Only the canonical decimal form, so one reading has exactly one id.
    let ts: i64 = ts.parse().map_err(|_| invalid())?;
    if reading_id(buoy.as_str(), metric.as_str(), ts) != id {
        return Err(invalid());
    }
    Ok((buoy, metric, ts))
}

/// The reading with this key if the policy shows it; `None` for "does not exist" and "not
/// yours" alike.
async fn find_reading(
    state: &ApiState,
    policy: &AccessPolicy,
    key: &(BuoyId, MetricName, i64),
) -> Result<Option<ReadingRow>, ApiError> {
    let (buoy, metric, ts) = key;
    if !policy.buoys.allows(buoy.as_str()) || ts.checked_add(1).is_none() {
        return Ok(None);
    }
    let filter = TelemetryFilter {
        buoy_id: Some(buoy.to_string()),
        metric: Some(metric.to_string()),
        start: Some(*ts),
        end: Some(ts + 1),
        quality: None,
        limit: Some(1),
        cursor: None,
    };
    let mut results = state.query.read(&filter, policy).await?;
    let mut rows = Vec::new();
    while let Some(batch) = results.next().await {
        rows_of(&batch?, &mut rows)?;
    }
    Ok(rows.pop())
}

fn no_such_reading() -> ApiError {
    ApiError::NotFound("no such reading".to_owned())
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
        start: params.start.as_deref().map(|text| parse_param(text, "start")).transpose()?,
        end: params.end.as_deref().map(|text| parse_param(text, "end")).transpose()?,
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
    /// Timestamp: ns since the Unix epoch (UTC), or RFC 3339 text.
    ts: TimeInput,
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
        (status = 409, description = "The buoy is retired"),
        (status = 413, description = "Body above 4 MiB"),
        (status = 503, description = "Engine busy; see Retry-After")))]
pub(crate) async fn ingest(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = request.caller()?;
    let state = request.state().clone();
    state.auth.authorize(&caller, Permission::TelemetryWrite)?;
    let body: IngestBody = request.json().await?;
    let buoy = BuoyId::new(&body.buoy_id).map_err(|error| ApiError::InvalidInput(error.to_string()))?;
    if state.engine.buoys().iter().any(|info| &*info.id == buoy.as_str() && info.status == "retired") {
        return Err(ApiError::Conflict(format!("buoy {buoy} is retired")));
    }
    let mut builder = ReadingBatchBuilder::with_capacity(body.readings.len());
    for reading in &body.readings {
        let metric =
            MetricName::new(&reading.metric).map_err(|error| ApiError::InvalidInput(error.to_string()))?;
        builder
            .push(&metric, reading.ts.to_ns("ts")?, reading.value)
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

/// One reading by id.
#[utoipa::path(get, path = "/api/telemetry/{id}", tag = "telemetry", security(("bearer" = [])),
    params(("id" = String, Path, description = "Reading id (the `id` of a `GET /api/telemetry` row)")),
    responses((status = 200, description = "The reading", body = ReadingRow),
        (status = 400, description = "Not a reading id"),
        (status = 401, description = "No valid access token"),
        (status = 403, description = "Missing telemetry:read"),
        (status = 404, description = "No such reading (or outside the caller's plan)"),
        (status = 429, description = "Daily query quota used up")))]
pub(crate) async fn get_one(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = request.caller()?;
    let state = request.state();
    state.auth.authorize(&caller, Permission::TelemetryRead)?;
    let key = decode_reading_id(request.param("id")?)?;
    let policy = state.policy(&caller).await?;
    if !policy.buoys.allows(key.0.as_str()) {
        return Err(no_such_reading());
    }
    state.count_query(&caller).await?;
    let row = find_reading(state, &policy, &key).await?.ok_or_else(no_such_reading)?;
    Reply::json(&row)
}

/// Deletes one reading (durable when answered; audited with the value it had).
#[utoipa::path(delete, path = "/api/telemetry/{id}", tag = "telemetry", security(("bearer" = [])),
    params(("id" = String, Path, description = "Reading id")),
    responses((status = 204, description = "Deleted"),
        (status = 400, description = "Not a reading id"),
        (status = 401, description = "No valid access token"),
        (status = 403, description = "Missing telemetry:delete"),
        (status = 404, description = "No such reading"),
        (status = 503, description = "Engine busy; see Retry-After")))]
pub(crate) async fn delete_one(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = request.caller()?;
    let state = request.state().clone();
    state.auth.authorize(&caller, Permission::TelemetryDelete)?;
    state.auth.require_fresh(&caller)?;
    let id = request.param("id")?.to_owned();
    let key = decode_reading_id(&id)?;
    let policy = state.policy(&caller).await?;
    let old = find_reading(&state, &policy, &key).await?.ok_or_else(no_such_reading)?;
    let (buoy, metric, ts) = key;
    let range = DeleteRange { buoy: buoy.clone(), metric: Some(metric.clone()), start: ts, end: ts + 1 };
    state.engine.delete(&range)?.await?;
    let details = serde_json::json!({ "buoy": buoy.as_str(), "metric": metric.as_str(), "ts": ts,
        "old_value": old.value, "old_quality": old.quality });
    audit(&state, &caller, "telemetry.delete", format!("reading:{id}"), details).await?;
    Ok(Reply::empty().status(StatusCode::NO_CONTENT))
}

/// A correction of one reading's value.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CorrectionBody {
    /// The corrected value (finite).
    value: f64,
}

/// Corrects one reading's value (durable when answered; audited with the old and new value).
#[utoipa::path(put, path = "/api/telemetry/{id}", request_body = CorrectionBody, tag = "telemetry",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Reading id")),
    responses((status = 200, description = "The corrected reading", body = ReadingRow),
        (status = 400, description = "Not a reading id, or a value that is not finite"),
        (status = 401, description = "No valid access token"),
        (status = 403, description = "Missing telemetry:delete (corrections are operators' work)"),
        (status = 404, description = "No such reading"),
        (status = 409, description = "The buoy is retired"),
        (status = 503, description = "Engine busy; see Retry-After")))]
pub(crate) async fn correct_one(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = request.caller()?;
    let state = request.state().clone();
    // Rewriting history is the same privilege as removing it.
    state.auth.authorize(&caller, Permission::TelemetryDelete)?;
    state.auth.require_fresh(&caller)?;
    let id = request.param("id")?.to_owned();
    let key = decode_reading_id(&id)?;
    let body: CorrectionBody = request.json().await?;
    let policy = state.policy(&caller).await?;
    let old = find_reading(&state, &policy, &key).await?.ok_or_else(no_such_reading)?;
    let (buoy, metric, ts) = key.clone();
    if state.engine.buoys().iter().any(|info| &*info.id == buoy.as_str() && info.status == "retired") {
        return Err(ApiError::Conflict(format!("buoy {buoy} is retired")));
    }
    let mut builder = ReadingBatchBuilder::with_capacity(1);
    builder.push(&metric, ts, body.value).map_err(|error| ApiError::InvalidInput(error.to_string()))?;
    let batch = builder.finish().map_err(|error| ApiError::InvalidInput(error.to_string()))?;
    state.engine.write_unsequenced(&buoy, batch)?.await?;
    let new = find_reading(&state, &policy, &key).await?.ok_or_else(|| {
        ApiError::internal(format!("reading {id} missing right after its correction was stored"))
    })?;
    let details = serde_json::json!({ "buoy": buoy.as_str(), "metric": metric.as_str(), "ts": ts,
        "old_value": old.value, "old_quality": old.quality, "new_value": new.value,
        "new_quality": new.quality });
    audit(&state, &caller, "telemetry.correct", format!("reading:{id}"), details).await?;
    Reply::json(&new)
}

/// A range delete: every reading of one buoy (of one metric, when given) in `[start, end)`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteBody {
    /// A registered buoy.
    buoy_id: String,
    /// One metric; all metrics when absent.
    metric: Option<String>,
    /// Inclusive start: ns since the Unix epoch, or RFC 3339.
    start: TimeInput,
    /// Exclusive end: ns since the Unix epoch, or RFC 3339 (after `start`).
    end: TimeInput,
}

/// Deletes a range of readings (operators; durable when answered; audited with the range).
#[utoipa::path(post, path = "/api/telemetry/delete", request_body = DeleteBody, tag = "telemetry",
    security(("bearer" = [])),
    responses((status = 204, description = "Deleted"),
        (status = 400, description = "Invalid range"),
        (status = 401, description = "No valid access token"),
        (status = 403, description = "Missing telemetry:delete"),
        (status = 404, description = "No such buoy"),
        (status = 503, description = "Engine busy; see Retry-After")))]
pub(crate) async fn delete_range(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = request.caller()?;
    let state = request.state().clone();
    state.auth.authorize(&caller, Permission::TelemetryDelete)?;
    state.auth.require_fresh(&caller)?;
    let body: DeleteBody = request.json().await?;
    let buoy = BuoyId::new(&body.buoy_id).map_err(|error| ApiError::InvalidInput(error.to_string()))?;
    let metric = body
        .metric
        .as_deref()
        .map(MetricName::new)
        .transpose()
        .map_err(|error| ApiError::InvalidInput(error.to_string()))?;
    let (start, end) = (body.start.to_ns("start")?, body.end.to_ns("end")?);
    if start >= end {
        return Err(ApiError::InvalidInput("start must be before end".to_owned()));
    }
    let policy = state.policy(&caller).await?;
    if !policy.buoys.allows(buoy.as_str())
        || !state.engine.buoys().iter().any(|info| &*info.id == buoy.as_str())
    {
        return Err(ApiError::NotFound("no such buoy".to_owned()));
    }
    let range = DeleteRange { buoy: buoy.clone(), metric: metric.clone(), start, end };
    state.engine.delete(&range)?.await?;
    let details = serde_json::json!({ "metric": metric.as_ref().map(MetricName::as_str),
        "start": start, "end": end });
    audit(&state, &caller, "telemetry.delete_range", format!("buoy:{buoy}"), details).await?;
    Ok(Reply::empty().status(StatusCode::NO_CONTENT))
}

/// Appends a successful state change of `caller` to the audit log.
async fn audit(
    state: &ApiState,
    caller: &crate::auth::Caller,
    action: &'static str,
    target: String,
    details: serde_json::Value,
) -> Result<(), ApiError> {
    let auth = Arc::clone(&state.auth);
    let actor = format!("user:{}", caller.user_id());
    blocking(move || {
        let event = AuditEvent::new(actor, action, target, "ok").with_details(details);
        auth.audit_log().append(event).map(drop).map_err(ApiError::internal)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_ids_round_trip_and_refuse_anything_else() {
        let id = reading_id("buoy-1", "salinity_psu", -42);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let (buoy, metric, ts) = decode_reading_id(&id).unwrap();
        assert_eq!((buoy.as_str(), metric.as_str(), ts), ("buoy-1", "salinity_psu", -42));
        let forged = [
            String::new(),
            "..".to_owned(),
            "%2e%2e".to_owned(),
            URL_SAFE_NO_PAD.encode("buoy-1/salinity_psu"),
            URL_SAFE_NO_PAD.encode("buoy-1/salinity_psu/1/2"),
            URL_SAFE_NO_PAD.encode("../../etc/passwd"),
            URL_SAFE_NO_PAD.encode("buoy-1/Salinity/1"),
            URL_SAFE_NO_PAD.encode("buoy-1/salinity_psu/+1"),
            URL_SAFE_NO_PAD.encode("buoy-1/salinity_psu/01"),
            "A".repeat(READING_ID_CHARS_MAX + 1),
        ];
        for id in forged {
            assert!(matches!(decode_reading_id(&id), Err(ApiError::InvalidInput(_))), "{id:?}");
        }
    }
}
