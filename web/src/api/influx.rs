//! InfluxDB-compatible writes: `POST /api/v2/write` and `POST /write` (v1) take line protocol
//! (parsed by `line_protocol`) into the engine's ingest path, so Telegraf and the InfluxDB client
//! libraries write to BlueWave unchanged.
//!
//! Mapping: the `buoy_id` tag names the buoy (or the measurement, with `[line_protocol]
//! buoy_from = "measurement"`); each numeric field is a metric (its key must be a metric name,
//! `[a-z0-9_]`, 1–64 chars); the other tags (and the measurement, by default) are not stored; the
//! timestamp is read in `precision` (default ns), the server's time when absent. Quality flags
//! are set by the engine, as for QUIC and JSON ingest.
//!
//! Bodies may be gzip-compressed (`Content-Encoding: gzip`); the decoded body has the same limit
//! as a plain one ([`LINE_PROTOCOL_BODY_BYTES_MAX`], 413 past it).
//!
//! Answers: 204 once every line is durable (the engine's WAL fsync); 400 `invalid_line_protocol`
//! with per-line reasons (`lines`: line number and reason) after storing the good lines, or nothing with
//! `?atomic=true`; 401/403 for credentials; 413 past the body limit; 415 for a `Content-Encoding`
//! other than `gzip` or `identity`; 503 with `Retry-After` when the engine pushes back.
//!
//! Retries: with an `Idempotency-Key` header a body is written once and a retry gets the first
//! answer again (see `idempotency`); 409 while the first attempt runs, 422 for the same key with
//! another body. Without a key a retried body is stored again: last write wins per
//! `(buoy_id, metric, ts)`, so a retry of lines with timestamps leaves the same rows, and lines
//! without one get the retry's server time.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bluewave_engine::{BuoyId, MetricName, ReadingBatchBuilder, TIMESTAMP_MAX, TIMESTAMP_MIN};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::api::idempotency::{
    Claim, IDEMPOTENCY_KEY_HEADER, IDEMPOTENT_REPLAYED_HEADER, IdempotencyLimits, IngestKeys, StoredAnswer,
    validate_key,
};
use crate::api::line_protocol::{LineError, Point, Precision, parse_body};
use crate::api::{ApiState, blocking};
use crate::audit::AuditEvent;
use crate::auth::Permission;
use crate::http::{ApiError, Reply, Request};
use crate::{HeaderName, HeaderValue, StatusCode, header};

/// Body limit of the line-protocol routes: 16 MiB, room for 100,000 lines of about 160 bytes
/// (the line limits of `line_protocol` apply after reading).
pub const LINE_PROTOCOL_BODY_BYTES_MAX: u64 = 16 << 20;

/// Most per-line reasons one 400 answer lists; the count of refused lines is always exact.
pub const LINE_ERRORS_LISTED_MAX: usize = 100;

/// Longest reason given for one refused line, characters: reasons quote the line's text (a key,
/// a value, a buoy id), which may be 64 KiB long; longer reasons are cut and end with `…`, so a
/// 400 answer stays under about 25 KiB whatever the body held.
pub const LINE_REASON_CHARS_MAX: usize = 200;

/// The tag that names the buoy.
pub const BUOY_TAG: &str = "buoy_id";

/// Where a line names its buoy (`[line_protocol] buoy_from`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BuoySource {
    /// The `buoy_id` tag (default).
    #[default]
    Tag,
    /// The measurement (`buoy-17,site=north salinity=35.1`), for senders that cannot add tags.
    Measurement,
}

impl BuoySource {
    /// Parses `tag` or `measurement`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "tag" => Some(Self::Tag),
            "measurement" => Some(Self::Measurement),
            _ => None,
        }
    }
}

/// Settings of the line-protocol routes, from the config file's `[line_protocol]` section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineProtocolConfig {
    /// Where a line names its buoy.
    pub buoy_from: BuoySource,
    /// Limits of the idempotency keys.
    pub idempotency: IdempotencyLimits,
}

/// What the line-protocol routes share: the settings and the idempotency key store. One per
/// server, built at start and never changed.
#[derive(Debug)]
pub struct LineProtocol {
    /// Where a line names its buoy.
    pub buoy_source: BuoySource,
    /// Keys of idempotent writes (`<data-dir>/idempotency.redb`).
    pub keys: Arc<IngestKeys>,
}

impl LineProtocol {
    /// Opens the key store under `data_dir`.
    pub fn open(
        data_dir: &std::path::Path,
        config: LineProtocolConfig,
    ) -> Result<Self, super::IdempotencyError> {
        Ok(Self {
            buoy_source: config.buoy_from,
            keys: Arc::new(IngestKeys::open(data_dir, config.idempotency)?),
        })
    }
}

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

impl Writer {
    /// The audit actor, also the scope of idempotency keys.
    fn scope(&self) -> String {
        match self {
            Self::Device(buoy) => format!("device:{buoy}"),
            Self::User(user) => format!("user:{user}"),
        }
    }
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
#[utoipa::path(post, path = "/api/v2/write", params(V2Params,
        ("Idempotency-Key" = Option<String>, Header, description = "1–255 visible ASCII characters: the body is written once and retries get the first answer")),
    tag = "telemetry",
    security(("bearer" = [])),
    request_body(content = String, content_type = "text/plain", description = "InfluxDB line protocol"),
    responses((status = 204, description = "Every line durable"),
        (status = 400, description = "Refused lines (the others stored unless atomic=true)", body = WriteRefusal),
        (status = 401, description = "No valid token"),
        (status = 403, description = "Missing telemetry:write, or a device writing another buoy"),
        (status = 413, description = "Body (or gzip-decoded body) above 16 MiB"),
        (status = 409, description = "A request with this Idempotency-Key is still running"),
        (status = 415, description = "Content-Encoding other than gzip or identity"),
        (status = 422, description = "This Idempotency-Key was used with another body"),
        (status = 503, description = "Engine busy; see Retry-After")))]
pub(crate) async fn write_v2(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let params: V2Params = request.query()?;
    let token = header_token(&request, false)?
        .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Token header".to_owned()))?;
    write(request, &token, precision(params.precision.as_deref())?, params.atomic.unwrap_or(false)).await
}

/// Writes line protocol, InfluxDB 1.x style.
#[utoipa::path(post, path = "/write", params(V1Params,
        ("Idempotency-Key" = Option<String>, Header, description = "1–255 visible ASCII characters: the body is written once and retries get the first answer")),
    tag = "telemetry",
    request_body(content = String, content_type = "text/plain", description = "InfluxDB line protocol"),
    responses((status = 204, description = "Every line durable"),
        (status = 400, description = "Refused lines (the others stored unless atomic=true)", body = WriteRefusal),
        (status = 401, description = "No valid token"),
        (status = 403, description = "Missing telemetry:write, or a device writing another buoy"),
        (status = 413, description = "Body (or gzip-decoded body) above 16 MiB"),
        (status = 409, description = "A request with this Idempotency-Key is still running"),
        (status = 415, description = "Content-Encoding other than gzip or identity"),
        (status = 422, description = "This Idempotency-Key was used with another body"),
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
    let gzip = match request.headers().get(header::CONTENT_ENCODING) {
        None => false,
        Some(encoding) if encoding.as_bytes().eq_ignore_ascii_case(b"identity") => false,
        Some(encoding)
            if encoding.as_bytes().eq_ignore_ascii_case(b"gzip")
                || encoding.as_bytes().eq_ignore_ascii_case(b"x-gzip") =>
        {
            true
        }
        Some(_) => {
            return Err(ApiError::UnsupportedMediaType {
                expected: "a Content-Encoding of gzip or identity",
            });
        }
    };
    let key = match request.headers().get(IDEMPOTENCY_KEY_HEADER) {
        Some(value) => Some(validate_key(value.as_bytes())?.to_owned()),
        None => None,
    };
    let body = request.bytes().await?;
    let body = if gzip { blocking(move || gunzip(&body)).await? } else { body };
    let Some(key) = key else {
        return Ok(write_body(&state, &writer, &body, precision, atomic, now_ns()).await?.into_reply());
    };
    // With a key: claim it (durably) before writing, then record the answer.
    let keys = Arc::clone(&state.line_protocol.keys);
    let scope = writer.scope();
    // The request's meaning: the decoded body and the parameters that change how it is read.
    let mut hasher = Sha256::new();
    hasher.update(format!("{precision:?}\n{atomic}\n").as_bytes());
    hasher.update(&body);
    let digest: [u8; 32] = hasher.finalize().into();
    let claim = blocking(move || Ok(keys.claim(&scope, &key, &digest, now_ns(), now_ms())?)).await?;
    let (now_ns, guard) = match claim {
        Claim::Replay(answer) => return Ok(replay(answer)),
        Claim::Write { now_ns, guard } => (now_ns, guard),
    };
    let written = write_body(&state, &writer, &body, precision, atomic, now_ns).await?;
    let answer =
        StoredAnswer { status: written.status.as_u16(), body: written.json.clone().unwrap_or_default() };
    let keys = Arc::clone(&state.line_protocol.keys);
    blocking(move || Ok(keys.complete(&guard, answer)?)).await?;
    Ok(written.into_reply())
}

/// Decodes a gzip body (several members allowed), refusing more than
/// [`LINE_PROTOCOL_BODY_BYTES_MAX`] decoded bytes (413), so a small body cannot inflate without
/// bound.
fn gunzip(body: &[u8]) -> Result<bytes::Bytes, ApiError> {
    use std::io::Read as _;
    let limit_bytes = LINE_PROTOCOL_BODY_BYTES_MAX;
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(1 << 20));
    flate2::read::MultiGzDecoder::new(body)
        .take(limit_bytes.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|error| ApiError::InvalidInput(format!("the gzip body does not decode: {error}")))?;
    if out.len() as u64 > limit_bytes {
        return Err(ApiError::PayloadTooLarge { limit_bytes });
    }
    Ok(out.into())
}

/// The answer of a write, kept as status and JSON so it can be stored for an idempotent replay.
struct Written {
    status: StatusCode,
    json: Option<String>,
}

impl Written {
    fn into_reply(self) -> Reply {
        match self.json {
            None => Reply::empty().status(self.status),
            Some(json) => Reply::bytes("application/json", json.into_bytes()).status(self.status),
        }
    }
}

fn replay(answer: StoredAnswer) -> Reply {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::NO_CONTENT);
    let written = Written { status, json: (!answer.body.is_empty()).then_some(answer.body) };
    written
        .into_reply()
        .header(HeaderName::from_static(IDEMPOTENT_REPLAYED_HEADER), HeaderValue::from_static("true"))
}

async fn write_body(
    state: &ApiState,
    writer: &Writer,
    body: &[u8],
    precision: Precision,
    atomic: bool,
    now_ns: i64,
) -> Result<Written, ApiError> {
    let outcomes = parse_body(body, precision).map_err(|error| ApiError::InvalidInput(error.to_string()))?;
    let registry = state.engine.buoys();
    let buoy_source = state.line_protocol.buoy_source;

    let mut refused: Vec<(usize, String)> = Vec::new();
    // Readings per buoy, in body order; `stored_lines` counts the lines they came from.
    let mut per_buoy: BTreeMap<String, Vec<Reading>> = BTreeMap::new();
    let mut good_lines = 0_usize;
    for outcome in outcomes {
        let readings = outcome
            .result
            .map_err(|error: LineError| Refusal::Line(error.to_string()))
            .and_then(|point| readings_of(&point, buoy_source, now_ns, writer, &registry));
        match readings {
            Ok((buoy, readings)) => {
                good_lines += 1;
                per_buoy.entry(buoy).or_default().extend(readings);
            }
            Err(Refusal::Line(reason)) => refused.push((outcome.line_number, clipped(reason))),
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
                    tickets.push(submit(state, &buoy_id, full)?);
                    builder
                        .push(metric, *ts, *value)
                        .map_err(|error| ApiError::InvalidInput(error.to_string()))?;
                }
            }
            tickets.push(submit(state, &buoy_id, builder)?);
        }
    }
    for ticket in tickets {
        ticket.await?;
    }
    if !per_buoy.is_empty() {
        let auth = Arc::clone(&state.auth);
        let actor = writer.scope();
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
        return Ok(Written { status: StatusCode::NO_CONTENT, json: None });
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
    buoy_source: BuoySource,
    now_ns: i64,
    writer: &Writer,
    // Every registered buoy, sorted by id (as `Engine::buoys` answers).
    registry: &[bluewave_engine::BuoyInfo],
) -> Result<(String, Vec<Reading>), Refusal> {
    let buoy = match buoy_source {
        BuoySource::Tag => point.tag(BUOY_TAG).ok_or_else(|| format!("missing the {BUOY_TAG} tag"))?,
        BuoySource::Measurement => point.measurement.as_str(),
    };
    let buoy_id = BuoyId::new(buoy).map_err(|error| format!("buoy {buoy:?}: {error}"))?;
    if let Writer::Device(own) = writer
        && own != buoy_id.as_str()
    {
        return Err(Refusal::Forbidden(format!("a device token may write only its own buoy ({own})")));
    }
    // `Engine::buoys` answers sorted by id: a binary search, not a scan of the fleet per line.
    let found =
        registry.binary_search_by(|info| (*info.id).cmp(buoy_id.as_str())).ok().and_then(|i| registry.get(i));
    match found {
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

/// `reason` cut to [`LINE_REASON_CHARS_MAX`] characters.
fn clipped(mut reason: String) -> String {
    if let Some((cut, _)) = reason.char_indices().nth(LINE_REASON_CHARS_MAX) {
        reason.truncate(cut);
        reason.push('…');
    }
    reason
}

fn refusal(refused: Vec<(usize, String)>, stored_lines: usize) -> Written {
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
    // Serializing strings and integers cannot fail; fall back to the bare status all the same.
    Written { status: StatusCode::BAD_REQUEST, json: serde_json::to_string(&body).ok() }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX))
}
