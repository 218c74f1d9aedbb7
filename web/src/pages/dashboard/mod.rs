//! The environmental metrics dashboard of a signed-in customer (or analyst) with a plan:
//! `GET /dashboard` (pick buoys, metrics and a range; charts of min, mean and max per bucket,
//! a data table under each chart, the buoys' positions with their latest values),
//! `GET /dashboard/export.csv` (the charted buckets as CSV) and `GET /dashboard/live` (new
//! readings as Server-Sent Events).
//!
//! Layout:
//! - `selection`: the query string → [`selection::Selection`], the bucket width;
//! - `series`: the statements, run through [`bluewave_query::QueryService`] under the
//!   caller's [`AccessPolicy`] (the API's policy path: `ApiState::policy`);
//! - `chart`: the SVG charts (server-rendered; the live script only appends points);
//! - `live`: the SSE stream and its connection limits.
//!
//! Access: only buoys the plan covers are listed; naming another answers 404 `no such buoy`,
//! exactly as the API does, on the page, the export and the stream. A caller without a plan
//! gets a page saying so. Each page view, export and stream opening counts one query against
//! the plan's daily quota (a used-up quota gets a page saying so, status 429). A page view
//! runs two bounded statements (the buckets of the selection, and the latest values within
//! [`LATEST_WINDOW_S`] of the range's end) for its one unit; a stream's opening is its one unit
//! for at most [`LIVE_STREAM_LIFETIME_S`], after which the browser reconnects and pays again.

mod chart;
mod live;
mod selection;
mod series;

pub use live::{
    LIVE_KEEPALIVE_S, LIVE_LOOKBACK_S, LIVE_POLL_MS, LIVE_STREAM_LIFETIME_S, LIVE_STREAMS_MAX,
    LIVE_STREAMS_PER_ACCOUNT_MAX,
};
pub use selection::{BUCKETS_TARGET_MAX, BUOYS_SELECTED_MAX, METRICS_SELECTED_MAX, RANGE_S_MAX};
pub use series::{LATEST_WINDOW_S, LIVE_ROWS_PER_POLL_MAX};

pub(crate) use live::stream as live;

use std::collections::BTreeSet;

use bluewave_engine::{BuoyId, BuoyInfo, MetricName};
use bluewave_query::{AccessPolicy, BuoyScope, Format, encode};
use futures_util::StreamExt as _;
use http::{HeaderValue, StatusCode, header};
use maud::{Markup, html};

use super::browser::{html, see_other, session};
use super::layout::{notice, page};
use crate::api::{ApiState, format_time};
use crate::auth::{BrowserSession, Permission};
use crate::http::{ApiError, Reply, Request};
use selection::{RANGE_PRESETS, Selection};
use series::{Latest, Series};

/// Content-Security-Policy of the dashboard: the page CSP plus this origin's scripts (the
/// static live script; never inline) and `EventSource` connections to this origin.
pub const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
    form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A chart of a range that ends now runs its time axis past the end by the range over this
/// (a fifth), where the live script appends new readings.
pub const LIVE_HEADROOM_DIVISOR: i64 = 5;

/// What a dashboard request may see, once its session, plan and selection are checked.
pub(crate) struct Access {
    pub session: BrowserSession,
    pub policy: AccessPolicy,
    /// Registered buoys the plan covers, sorted by id.
    pub buoys: Vec<BuoyInfo>,
    pub selection: Selection,
}

/// Why a dashboard request gets a page instead of data.
pub(crate) enum Refusal {
    /// No live session: the redirect to `/login` (or to MFA enrolment).
    Redirect(Reply),
    /// The caller's plan grants no buoy.
    NoPlan,
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// True when the policy grants no buoy at all (no plan, or a plan of nothing).
fn grants_nothing(policy: &AccessPolicy) -> bool {
    matches!(&policy.buoys, BuoyScope::Only(set) if set.is_empty())
}

/// Why a cross-site request for a dashboard route is refused.
pub const CROSS_SITE_REFUSAL: &str =
    "the dashboard, its export and its live stream open only from this site (Sec-Fetch-Site)";

/// The page, the export and the stream spend quota on a GET, which a session cookie
/// (`SameSite=Lax`) would carry on another site's top-level navigation: a request whose
/// `Sec-Fetch-Site` is present and neither `same-origin` nor `none` (typed URL, bookmark) is
/// refused, 403 [`CROSS_SITE_REFUSAL`], before anything is counted. Browsers without the
/// header send none and are served.
fn same_site(request: &Request<ApiState>) -> Result<(), ApiError> {
    match request.headers().get("sec-fetch-site").map(http::HeaderValue::as_bytes) {
        None | Some(b"same-origin" | b"none") => Ok(()),
        Some(_) => Err(ApiError::Forbidden(CROSS_SITE_REFUSAL.to_owned())),
    }
}

/// The shared checks of the page, the export and the stream: the request's origin (same site), session, permission, selection,
/// plan, and every selected buoy inside the plan (404 `no such buoy` otherwise).
pub(crate) async fn access(request: &Request<ApiState>) -> Result<Result<Access, Refusal>, ApiError> {
    same_site(request)?;
    let Some(current) = session(request).await? else {
        return Ok(Err(Refusal::Redirect(see_other("/login"))));
    };
    if current.caller.mfa_enrolment_required() {
        return Ok(Err(Refusal::Redirect(see_other("/account/mfa"))));
    }
    let state = request.state();
    state.auth.authorize(&current.caller, Permission::TelemetryRead)?;
    let pairs: Vec<(String, String)> = request.query()?;
    let selection = Selection::parse(&pairs, now_ns())?;
    let policy = state.policy(&current.caller).await?;
    if grants_nothing(&policy) {
        return Ok(Err(Refusal::NoPlan));
    }
    let mut buoys: Vec<BuoyInfo> =
        state.engine.buoys().into_iter().filter(|buoy| policy.buoys.allows(&buoy.id)).collect();
    buoys.sort_by(|a, b| a.id.cmp(&b.id));
    if selection.buoys.iter().any(|wanted| !buoys.iter().any(|b| &*b.id == wanted.as_str())) {
        return Err(ApiError::NotFound("no such buoy".to_owned()));
    }
    Ok(Ok(Access { session: current, policy, buoys, selection }))
}

/// The page of a caller whose plan grants nothing.
fn no_plan_page() -> Reply {
    let markup = html! {
        p { "Your account has no data plan, so there is nothing to chart yet." }
        // The shop branch adds `/plans`: link "See the plans" there once it is merged.
        p { "A data subscription gives access to a set of buoys." }
        p { a href="/account" { "Back to your account" } }
    };
    html(StatusCode::OK, page("Metrics dashboard", markup))
}

/// The page of a caller whose daily quota is used up.
fn quota_page(retry_after_s: u64) -> Reply {
    let markup = html! {
        (notice(Some("Your plan's daily query quota is used up.")))
        p { "It renews at 00:00 UTC, in " (retry_after_s / 60) " minutes. " a href="/account/usage" { "See your usage" } "." }
    };
    html(StatusCode::TOO_MANY_REQUESTS, page("Metrics dashboard", markup))
}

/// Counts one query against the caller's quota; `Ok(Some(page))` when it is used up.
async fn count(state: &ApiState, access: &Access) -> Result<Option<Reply>, ApiError> {
    match state.count_query(&access.session.caller).await {
        Ok(()) => Ok(None),
        Err(ApiError::TooManyRequests { retry_after_s }) => Ok(Some(quota_page(retry_after_s))),
        Err(other) => Err(other),
    }
}

/// `GET /dashboard`.
pub(crate) async fn show(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let mut access = match access(&request).await? {
        Ok(access) => access,
        Err(Refusal::Redirect(reply)) => return Ok(reply),
        Err(Refusal::NoPlan) => return Ok(no_plan_page()),
    };
    let state = request.state().clone();
    if let Some(page) = count(&state, &access).await? {
        return Ok(page);
    }
    let latest = series::latest(&state.query, &access.selection, &access.policy).await?;
    // The metrics with a latest value, and those already picked.
    let mut metrics: BTreeSet<String> = latest.iter().map(|l| l.metric.clone()).collect();
    metrics.extend(access.selection.metrics.iter().map(|m| m.as_str().to_owned()));
    // Nothing picked yet: the first buoy and the first metric with data.
    if access.selection.buoys.is_empty()
        && let Some(first) = access.buoys.first().and_then(|b| BuoyId::new(&b.id).ok())
    {
        access.selection.buoys.push(first);
    }
    if access.selection.metrics.is_empty()
        && let Some(first) = metrics.iter().next().and_then(|m| MetricName::new(m).ok())
    {
        access.selection.metrics.push(first);
    }
    let series = series::buckets(&state.query, &access.selection, &access.policy).await?;
    let markup = dashboard(&access, &metrics, &latest, &series);
    Ok(html(StatusCode::OK, page("Metrics dashboard", markup))
        .header(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DASHBOARD_CSP)))
}

fn dashboard(access: &Access, metrics: &BTreeSet<String>, latest: &[Latest], series: &[Series]) -> Markup {
    let selection = &access.selection;
    let selected_buoys: Vec<String> = selection.buoys.iter().map(|b| b.as_str().to_owned()).collect();
    let bucket_ns = selection.bucket_ns();
    let query = selection.query_string();
    // A range that ends now leaves room on the time axis for the live points.
    let axis_end_ns = match selection.preset {
        Some(_) => selection.end_ns + (selection.end_ns - selection.start_ns) / LIVE_HEADROOM_DIVISOR,
        None => selection.end_ns,
    };
    html! {
        form method="get" action="/dashboard" class="picker" {
            fieldset {
                legend { "Buoys (at most " (BUOYS_SELECTED_MAX) ")" }
                @for buoy in &access.buoys {
                    label { input type="checkbox" name="buoy" value=(&*buoy.id)
                        checked[selection.buoys.iter().any(|b| b.as_str() == &*buoy.id)]; " " (&*buoy.id) } " "
                }
            }
            fieldset {
                legend { "Metrics (at most " (METRICS_SELECTED_MAX) ")" }
                @for metric in metrics {
                    label { input type="checkbox" name="metric" value=(metric)
                        checked[selection.metrics.iter().any(|m| m.as_str() == metric)]; " " (metric) } " "
                }
            }
            p {
                label { "Time range " select name="range" {
                    @for (name, _) in RANGE_PRESETS {
                        option value=(name) selected[selection.preset == Some(name)] { "last " (name) }
                    }
                } }
                " "
                label { "or from " input type="text" name="start" placeholder="2026-01-01T00:00:00Z"
                    value=[selection.preset.is_none().then(|| format_time(selection.start_ns))]; }
                " "
                label { "to " input type="text" name="end" placeholder="2026-01-02T00:00:00Z"
                    value=[selection.preset.is_none().then(|| format_time(selection.end_ns))]; }
                " "
                button type="submit" { "Show" }
            }
        }
        p {
            "From " time datetime=(format_time(selection.start_ns)) { (format_time(selection.start_ns)) }
            " to " time datetime=(format_time(selection.end_ns)) { (format_time(selection.end_ns)) }
            ", buckets of " span id="bucket-seconds" { (bucket_ns / 1_000_000_000) } " s. "
            a href={"/dashboard/export.csv?" (query)} download="bluewave-dashboard.csv" { "Download these buckets as CSV" }
        }
        p id="live-status" role="status" aria-live="polite" data-src={"/dashboard/live?" (query)} {
            "Live updates start when scripts are allowed."
        }
        @for metric in &selection.metrics {
            @let of_metric: Vec<&Series> = series.iter().filter(|s| s.metric == metric.as_str()).collect();
            section class="metric" data-metric=(metric.as_str()) {
                h2 { (metric.as_str()) }
                @if of_metric.is_empty() { p { "No readings of " (metric.as_str()) " in this range." } }
                (chart::chart(metric.as_str(), &selected_buoys, &of_metric, (selection.start_ns, selection.end_ns, axis_end_ns), bucket_ns))
                details {
                    summary { "Data table of " (metric.as_str()) }
                    table class="buckets" data-metric=(metric.as_str()) {
                        caption { "Minimum, mean and maximum of " (metric.as_str()) " per bucket" }
                        thead { tr { th scope="col" { "Buoy" } th scope="col" { "Bucket start" } th scope="col" { "Min" }
                            th scope="col" { "Mean" } th scope="col" { "Max" } th scope="col" { "Readings" } } }
                        tbody {
                            @for s in &of_metric { @for b in &s.buckets {
                                tr data-buoy=(s.buoy) data-start-ns=(b.start_ns) {
                                    td { (s.buoy) } td { (format_time(b.start_ns)) } td { (b.min) } td { (b.mean) }
                                    td { (b.max) } td { (b.count) }
                                }
                            } }
                        }
                    }
                }
            }
        }
        h2 { "Buoys and latest values" }
        table class="positions" {
            caption { "Positions from the buoy registry, and each metric's newest reading in the last "
                (LATEST_WINDOW_S / 3_600) " h of the shown range" }
            thead { tr { th scope="col" { "Buoy" } th scope="col" { "Name" } th scope="col" { "Latitude" }
                th scope="col" { "Longitude" } th scope="col" { "Status" } th scope="col" { "Latest values" } } }
            tbody {
                @for buoy in &access.buoys {
                    tr data-buoy=(&*buoy.id) {
                        td { (&*buoy.id) } td { (buoy.name) }
                        td { @if let Some(lat) = buoy.latitude { (lat) } @else { "unknown" } }
                        td { @if let Some(lng) = buoy.longitude { (lng) } @else { "unknown" } }
                        td { (buoy.status) }
                        td { ul {
                            @for l in latest.iter().filter(|l| *l.buoy == *buoy.id) {
                                li data-latest={(l.buoy) "/" (l.metric)} {
                                    (l.metric) ": " span class="value" { (l.value) } " at "
                                    time class="ts" datetime=(format_time(l.ts_ns)) { (format_time(l.ts_ns)) }
                                }
                            }
                        } }
                    }
                }
            }
        }
        script src=(super::assets::dashboard_script_path()) defer {}
    }
}

/// `GET /dashboard/export.csv`: the buckets the page charts for the same query string, as
/// CSV (`buoy_id,metric,bucket_start,min,mean,max,count`), text cells neutralised against
/// formulas by the query layer's CSV writer.
pub(crate) async fn export_csv(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let access = match access(&request).await? {
        Ok(access) => access,
        Err(Refusal::Redirect(reply)) => return Ok(reply),
        Err(Refusal::NoPlan) => return Ok(no_plan_page()),
    };
    if access.selection.buoys.is_empty() || access.selection.metrics.is_empty() {
        return Err(ApiError::InvalidInput("name at least one buoy and one metric".to_owned()));
    }
    let state = request.state().clone();
    if let Some(page) = count(&state, &access).await? {
        return Ok(page);
    }
    let results = state.query.sql(&series::bucket_sql(&access.selection), &access.policy).await?;
    let mut chunks = encode(results, Format::Csv);
    let first = match chunks.next().await {
        None => bytes::Bytes::new(),
        Some(first) => first?,
    };
    // As `/api/query`: after the first chunk an error is written as the error record.
    let rest = chunks.take_while(|chunk| std::future::ready(chunk.is_ok()));
    let body = futures_util::stream::iter([Ok(first)]).chain(rest);
    Ok(Reply::stream(Format::Csv.content_type(), body).header(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"bluewave-dashboard.csv\""),
    ))
}
