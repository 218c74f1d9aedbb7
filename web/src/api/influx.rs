//! InfluxDB-compatible writes: `POST /api/v2/write` and `POST /write` (v1) take line protocol
//! (parsed by `line_protocol`) into the engine's ingest path, so Telegraf and the InfluxDB client
//! libraries write to BlueWave unchanged.
//!
//! Mapping: the `buoy_id` tag names the buoy; each numeric field is a metric (its key must be a
//! metric name, `[a-z0-9_]`, 1–64 chars); the measurement and the other tags are not stored; the
//! timestamp is read in `precision` (default ns), the server's time when absent. Quality flags
//! are set by the engine, as for QUIC and JSON ingest.
//!
//! Answers: 204 once every line is durable (the engine's WAL fsync); 400 `invalid_line_protocol`
//! with per-line reasons (`lines`: line number and reason) after storing the good lines, or nothing with
//! `?atomic=true`; 401/403 for credentials; 413 past [`LINE_PROTOCOL_BODY_BYTES_MAX`]; 415 for a
//! `Content-Encoding` other than `identity` (gzip is not supported yet); 503 with `Retry-After`
//! when the engine pushes back. Writes are not sequenced: a retried body is stored again, last
//! write wins per `(buoy_id, metric, ts)`, so a retry leaves the same rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bluewave_engine::{BuoyId, MetricName, ReadingBatchBuilder, TIMESTAMP_MAX, TIMESTAMP_MIN};
use serde::{Deserialize, Serialize};

use crate::api::line_protocol::{LineError, Point, Precision, parse_body};
use crate::api::{ApiState, blocking};
use crate::audit::AuditEvent;
use crate::auth::Permission;
use crate::http::{ApiError, Reply, Request};
use crate::{HeaderValue, StatusCode, header};

/// Body limit of the line-protocol routes: 16 MiB, room for 100,000 lines of about 160 bytes
/// (the line limits of `line_protocol` apply after reading).
pub const LINE_PROTOCOL_BODY_BYTES_MAX: u64 = 16 << 20;

/// Most per-line reasons one 400 answer lists; the count of refused lines is always exact.
pub const LINE_ERRORS_LISTED_MAX: usize = 100;

/// The tag that names the buoy.
pub const BUOY_TAG: &str = "buoy_id";

/// Query string of `POST /api/v2/write`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct V2Params {
    /// Accepted and ignored (BlueWave has one organisation).
    #[allow(dead_code)]
    org: Option<String>,
    /// Accepted and ignored (all readings go to the `readings` table).
    #[allow(dead_code)]
    bucket: Option<String>,
    /// `ns` (default), `us`, `ms` or `s`.
    precision: Option<String>,
    /// `true`: store nothing when any line is refused.
    atomic: Option<bool>,
}

/// Query string of `POST /write` (InfluxDB 1.x).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct V1Params {
    /// Accepted and ignored (all readings go to the `readings` table).
    #[allow(dead_code)]
    db: Option<String>,
    /// `n`/`ns` (default), `u`/`us`, `ms` or `s`.
    precision: Option<String>,
    /// User name: accepted and ignored (the token in `p` says who writes).
    #[allow(dead_code)]
    u: Option<String>,
    /// An access or device token (as InfluxDB 1.x clients send the password).
    p: Option<String>,
    /// `true`: store nothing when any line is refused.
    atomic: Option<bool>,
}

/// One refused line of a 400 answer.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct LineRefusal {
    /// The line's number in the body, from 1.
    line: usize,
    /// Why it was refused.
    error: String,
}

/// The 400 answer of a write with refused lines (InfluxDB's `code` and `message`, plus the lines).
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct WriteRefusal {
    /// Always `invalid_line_protocol` (the API's stable error code).
    error: &'static str,
    /// Always `invalid` (InfluxDB's code).
    code: &'static str,
    /// A summary naming the first refused line.
    message: String,
    /// Lines stored (0 with `atomic=true`).
    stored_lines: usize,
    /// Lines refused.
    refused_lines: usize,
    /// The first [`LINE_ERRORS_LISTED_MAX`] refused lines, in body order.
    lines: Vec<LineRefusal>,
}

/// Who writes: a device (its own buoy only) or a user with `telemetry:write`.
enum Writer {
    Device(String),
    User(String),
}

fn writer(state: &ApiState, token: &str) -> Result<Writer, ApiError> {
    if let Ok(buoy) = state.auth.verify_device_token(token) {
        return Ok(Writer::Device(buoy));
    }
    let caller = crate::http::Authenticator::authenticate(state, token)?;
    state.auth.authorize(&caller, Permission::TelemetryWrite)?;
    Ok(Writer::User(caller.user_id().to_string()))
}

/// `Authorization: Token <t>` or `Bearer <t>`; for v1 also `Basic` (the password is the token).
fn header_token(request: &Request<ApiState>, basic: bool) -> Result<Option<String>, ApiError> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || ApiError::Unauthorized("malformed Authorization header".to_owned());
    let text = value.to_str().map_err(|_| malformed())?;
    let (scheme, rest) = text.split_once(' ').ok_or_else(malformed)?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Some(rest.to_owned()));
    }
    if basic && scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD.decode(rest).map_err(|_| malformed())?;
        let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
        let (_, password) = decoded.split_once(':').ok_or_else(malformed)?;
        return Ok(Some(password.to_owned()));
    }
    Err(ApiError::Unauthorized("expected a Token, Bearer or Basic credential".to_owned()))
}

fn precision(text: Option<&str>) -> Result<Precision, ApiError> {
    match text {
        None => Ok(Precision::Nanoseconds),
        Some(text) => Precision::parse(text).ok_or_else(|| {
            ApiError::InvalidQuery(format!("unknown precision {text:?}; expected ns, us, ms or s"))
        }),
    }
}

/// Writes line protocol, InfluxDB 2.x style.
#[utoipa::path(post, path = "/api/v2/write", params(V2Params), tag = "telemetry",
    security(("bearer" = [])),
    request_body(content = String, content_type = "text/plain", description = "InfluxDB line protocol"),
    responses((status = 204, description = "Every line durable"),
        (status = 400, description = "Refused lines (the others stored unless atomic=true)", body = WriteRefusal),
        (status = 401, description = "No valid token"),
        (status = 403, description = "Missing telemetry:write, or a device writing another buoy"),
        (status = 413, description = "Body above 16 MiB"),
        (status = 415, description = "Content-Encoding other than identity"),
        (status = 503, description = "Engine busy; see Retry-After")))]
pub(crate) async fn write_v2(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let params: V2Params = request.query()?;
    let token = header_token(&request, false)?
        .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Token header".to_owned()))?;
    write(request, &token, precision(params.precision.as_deref())?, params.atomic.unwrap_or(false)).await
}

/// Writes line protocol, InfluxDB 1.x style.
#[utoipa::path(post, path = "/write", params(V1Params), tag = "telemetry",
    request_body(content = String, content_type = "text/plain", description = "InfluxDB line protocol"),
    responses((status = 204, description = "Every line durable"),
        (status = 400, description = "Refused lines (the others stored unless atomic=true)", body = WriteRefusal),
        (status = 401, description = "No valid token"),
        (status = 403, description = "Missing telemetry:write, or a device writing another buoy"),
        (status = 413, description = "Body above 16 MiB"),
        (status = 415, description = "Content-Encoding other than identity"),
        (status = 503, description = "Engine busy; see Retry-After")))]
pub(crate) async fn write_v1(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let params: V1Params = request.query()?;
    let token = match (params.p, header_token(&request, true)?) {
        (Some(password), _) => password,
        (None, Some(token)) => token,
        (None, None) => {
            return Err(ApiError::Unauthorized("missing credentials (p= or Authorization)".to_owned()));
        }
    };
    write(request, &token, precision(params.precision.as_deref())?, params.atomic.unwrap_or(false)).await
}

async fn write(
    mut request: Request<ApiState>,
    token: &str,
    precision: Precision,
    atomic: bool,
) -> Result<Reply, ApiError> {
    let state = request.state().clone();
    let writer = writer(&state, token)?;
    if let Some(encoding) = request.headers().get(header::CONTENT_ENCODING)
        && !encoding.as_bytes().eq_ignore_ascii_case(b"identity")
    {
        return Err(ApiError::UnsupportedMediaType {
            expected: "an identity Content-Encoding (gzip is not supported)",
        });
    }
    let body = request.bytes().await?;
    let outcomes = parse_body(&body, precision).map_err(|error| ApiError::InvalidInput(error.to_string()))?;
    let now_ns = now_ns();
    let registry = state.engine.buoys();

    let mut refused: Vec<(usize, String)> = Vec::new();
    // Readings per buoy, in body order; `stored_lines` counts the lines they came from.
    let mut per_buoy: BTreeMap<String, Vec<Reading>> = BTreeMap::new();
    let mut good_lines = 0_usize;
    for outcome in outcomes {
        let readings = outcome
            .result
            .map_err(|error: LineError| Refusal::Line(error.to_string()))
            .and_then(|point| readings_of(&point, now_ns, &writer, &registry));
        match readings {
            Ok((buoy, readings)) => {
                good_lines += 1;
                per_buoy.entry(buoy).or_default().extend(readings);
            }
            Err(Refusal::Line(reason)) => refused.push((outcome.line_number, reason)),
            Err(Refusal::Forbidden(reason)) => return Err(ApiError::Forbidden(reason)),
        }
    }
    if atomic && !refused.is_empty() {
        return Ok(refusal(refused, 0));
    }
    let mut tickets = Vec::new();
    let readings_total: usize = per_buoy.values().map(Vec::len).sum();
    for (buoy, readings) in &per_buoy {
        let buoy_id = BuoyId::new(buoy).map_err(|error| ApiError::InvalidInput(error.to_string()))?;
        for chunk in readings.chunks(bluewave_engine::BATCH_READINGS_MAX) {
            let mut builder = ReadingBatchBuilder::with_capacity(chunk.len());
            for (metric, ts, value) in chunk {
                if builder.push(metric, *ts, *value).is_err() {
                    // More metrics than one batch may name: send what is built, start again.
                    let full =
                        std::mem::replace(&mut builder, ReadingBatchBuilder::with_capacity(chunk.len()));
                    tickets.push(submit(&state, &buoy_id, full)?);
                    builder
                        .push(metric, *ts, *value)
                        .map_err(|error| ApiError::InvalidInput(error.to_string()))?;
                }
            }
            tickets.push(submit(&state, &buoy_id, builder)?);
        }
    }
    for ticket in tickets {
        ticket.await?;
    }
    if !per_buoy.is_empty() {
        let auth = Arc::clone(&state.auth);
        let actor = match &writer {
            Writer::Device(buoy) => format!("device:{buoy}"),
            Writer::User(user) => format!("user:{user}"),
        };
        let buoys: Vec<String> = per_buoy.keys().cloned().collect();
        blocking(move || {
            let event = AuditEvent::new(actor, "telemetry.line_protocol", "telemetry", "ok").with_details(
                serde_json::json!({ "buoys": buoys, "lines": good_lines, "readings": readings_total }),
            );
            auth.audit_log().append(event).map(drop).map_err(ApiError::internal)
        })
        .await?;
    }
    if refused.is_empty() {
        return Ok(Reply::empty().status(StatusCode::NO_CONTENT));
    }
    Ok(refusal(refused, good_lines))
}

fn submit(
    state: &ApiState,
    buoy: &BuoyId,
    builder: ReadingBatchBuilder,
) -> Result<bluewave_engine::IngestTicket, ApiError> {
    let batch = builder.finish().map_err(|error| ApiError::InvalidInput(error.to_string()))?;
    Ok(state.engine.write_unsequenced(buoy, batch)?)
}

/// One reading of a line: metric, timestamp (ns), value.
type Reading = (MetricName, i64, f64);

enum Refusal {
    /// This line alone is refused (400 with its reason).
    Line(String),
    /// The whole request is refused (403): a device naming another buoy.
    Forbidden(String),
}

impl From<String> for Refusal {
    fn from(reason: String) -> Self {
        Self::Line(reason)
    }
}

/// The buoy and readings of one parsed line, checked as the QUIC path checks them.
fn readings_of(
    point: &Point,
    now_ns: i64,
    writer: &Writer,
    registry: &[bluewave_engine::BuoyInfo],
) -> Result<(String, Vec<Reading>), Refusal> {
    let buoy = point.tag(BUOY_TAG).ok_or_else(|| format!("missing the {BUOY_TAG} tag"))?;
    let buoy_id = BuoyId::new(buoy).map_err(|error| format!("{BUOY_TAG} {buoy:?}: {error}"))?;
    if let Writer::Device(own) = writer
        && own != buoy_id.as_str()
    {
        return Err(Refusal::Forbidden(format!("a device token may write only its own buoy ({own})")));
    }
    match registry.iter().find(|info| &*info.id == buoy_id.as_str()) {
        None => return Err(format!("unknown buoy {buoy:?}").into()),
        Some(info) if info.status == "retired" => return Err(format!("buoy {buoy:?} is retired").into()),
        Some(_) => {}
    }
    let ts = point.timestamp_ns.unwrap_or(now_ns);
    if !(TIMESTAMP_MIN..=TIMESTAMP_MAX).contains(&ts) {
        return Err(format!("timestamp {ts} ns is outside the storable range").into());
    }
    let mut readings = Vec::with_capacity(point.fields.len());
    for (key, value) in &point.fields {
        let metric = MetricName::new(key).map_err(|error| format!("field {key:?}: {error}"))?;
        readings.push((metric, ts, *value));
    }
    Ok((buoy_id.as_str().to_owned(), readings))
}

fn refusal(refused: Vec<(usize, String)>, stored_lines: usize) -> Reply {
    let refused_lines = refused.len();
    let message = match refused.first() {
        Some((line, reason)) => format!("{refused_lines} line(s) refused; first at line {line}: {reason}"),
        None => String::new(),
    };
    let lines = refused
        .into_iter()
        .take(LINE_ERRORS_LISTED_MAX)
        .map(|(line, error)| LineRefusal { line, error })
        .collect();
    let body = WriteRefusal {
        error: "invalid_line_protocol",
        code: "invalid",
        message,
        stored_lines,
        refused_lines,
        lines,
    };
    match Reply::json(&body) {
        Ok(reply) => reply.status(StatusCode::BAD_REQUEST),
        Err(_) => Reply::empty()
            .status(StatusCode::BAD_REQUEST)
            .header(header::CONTENT_TYPE, HeaderValue::from_static("text/plain")),
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX))
}
