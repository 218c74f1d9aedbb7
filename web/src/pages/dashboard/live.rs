//! `GET /dashboard/live`: new readings of the chosen buoys and metrics as Server-Sent Events.
//!
//! Source of new readings: the engine publishes no notification of acked batches, so each
//! stream polls, every [`LIVE_POLL_MS`], the readings newer than what it has sent, through the
//! query service under the caller's policy (the same path as every other read; an acked
//! reading is visible to queries at once, so it is sent within one poll of its ack).
//! A poll reads at most [`LIVE_ROWS_PER_POLL_MAX`] rows and only the last [`LIVE_LOOKBACK_S`]
//! seconds of timestamps: a reading whose timestamp is older than that when it arrives (a
//! buoy catching up after an outage) is not pushed; the next page load charts it.
//!
//! Events: `event: reading` with `data: [{"buoy","metric","ts","value"}, …]` (one event per
//! poll with rows, oldest first); `event: end` with the reason (`session`, `plan`, `error`)
//! before the server closes the stream; a `: keep-alive` comment after [`LIVE_KEEPALIVE_S`]
//! without events. Each poll re-checks the session (an ended, expired or revoked session ends
//! the stream; the re-check is not activity, so an open tab does not keep the session alive:
//! the stream ends at the idle deadline counted from the last real request) and the plan (a
//! buoy leaving the plan ends the stream).
//!
//! Lifetime: a stream lasts at most [`LIVE_STREAM_LIFETIME_S`]; the browser then reconnects
//! and the new stream counts one query against the quota (so an open tab is charged once an
//! hour, not once for ever).
//!
//! Limits: [`LIVE_STREAMS_PER_ACCOUNT_MAX`] per account and [`LIVE_STREAMS_MAX`] in the
//! process; past either, `429 rate_limited` with `Retry-After: LIVE_RETRY_AFTER_S`. A
//! stream's events wait in a queue of [`LIVE_QUEUE_EVENTS`]; a client that does not read
//! stalls its own poller only.
//!
//! Shutdown: handlers get no shutdown signal from the HTTP framework, so an open stream keeps
//! its connection through the graceful drain until `shutdown_drain_timeout_ms` cuts it; the
//! browser's `EventSource` then reconnects (every 2 s, the stream's `retry:`) to the next
//! server, which sends only readings acked after the new stream opened.

use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use bluewave_engine::{BuoyId, MetricName};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};

use super::series::{self, LIVE_ROWS_PER_POLL_MAX, LiveReading};
use super::{Access, Refusal, access, grants_nothing, now_ns};
use crate::api::ApiState;
use crate::http::{ApiError, Reply, Request};
use crate::pages::browser::{SESSION_COOKIE, cookie};

/// Poll period of a live stream, ms.
pub const LIVE_POLL_MS: u64 = 500;
/// Seconds without an event after which a stream sends a keep-alive comment.
pub const LIVE_KEEPALIVE_S: u64 = 15;
/// How far back (s, from each poll) a stream looks for new timestamps.
pub const LIVE_LOOKBACK_S: i64 = 300;
/// Most live streams one account may hold open.
pub const LIVE_STREAMS_PER_ACCOUNT_MAX: usize = 4;
/// Most live streams open in the process (each polls the query service twice a second).
pub const LIVE_STREAMS_MAX: usize = 64;
/// Events queued between a stream's poller and its client.
pub const LIVE_QUEUE_EVENTS: usize = 8;
/// `Retry-After` of a refused stream, s.
pub const LIVE_RETRY_AFTER_S: u64 = 10;
/// Longest life of one stream, s: then the server closes it (after a `: reconnect` comment,
/// without an `end` event), the browser's `EventSource` reconnects after its `retry:` delay,
/// and the new stream's opening counts one query against the quota again (a stream's polls
/// are not counted one by one).
pub const LIVE_STREAM_LIFETIME_S: u64 = 3_600;

const NS_PER_S: i64 = 1_000_000_000;

/// Open streams per account id. Process-wide: one server runs per process; the count of an
/// account is written by [`Slot::take`] and by the slot's drop (the stream's end), and an
/// account's entry is removed when its count returns to zero.
static OPEN: LazyLock<Mutex<HashMap<String, usize>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// A held place among the open streams; freed on drop.
struct Slot {
    user_id: String,
}

impl Slot {
    fn take(user_id: &str) -> Result<Self, ApiError> {
        let mut open = OPEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let total: usize = open.values().sum();
        let mine = open.get(user_id).copied().unwrap_or(0);
        if total >= LIVE_STREAMS_MAX || mine >= LIVE_STREAMS_PER_ACCOUNT_MAX {
            return Err(ApiError::TooManyRequests { retry_after_s: LIVE_RETRY_AFTER_S });
        }
        open.insert(user_id.to_owned(), mine + 1);
        Ok(Self { user_id: user_id.to_owned() })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = OPEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.user_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.user_id);
            }
        }
    }
}

/// One SSE event.
fn event(name: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// `GET /dashboard/live`.
pub(crate) async fn stream(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let Access { session, buoys: _, selection, policy } = match access(&request).await? {
        Ok(access) => access,
        Err(Refusal::Redirect(_)) => return Err(ApiError::Unauthorized("sign in first".to_owned())),
        Err(Refusal::NoPlan) => return Err(ApiError::Forbidden("your account has no data plan".to_owned())),
    };
    if selection.buoys.is_empty() || selection.metrics.is_empty() {
        return Err(ApiError::InvalidInput("name at least one buoy and one metric".to_owned()));
    }
    let cookie = cookie(&request, SESSION_COOKIE).map(str::to_owned).unwrap_or_default();
    let slot = Slot::take(session.caller.user_id())?;
    let state = request.state().clone();
    state.count_query(&session.caller).await?;
    // Where each (buoy, metric) stands now: only later readings are sent.
    let opened_ns = now_ns();
    let mut cursors: BTreeMap<(String, String), i64> = BTreeMap::new();
    for b in &selection.buoys {
        for m in &selection.metrics {
            cursors.insert(
                (b.as_str().to_owned(), m.as_str().to_owned()),
                opened_ns - LIVE_LOOKBACK_S * NS_PER_S,
            );
        }
    }
    let since_ns = opened_ns - LIVE_LOOKBACK_S * NS_PER_S;
    for (buoy, metric, ts) in
        series::newest(&state.query, &selection.buoys, &selection.metrics, since_ns, &policy).await?
    {
        if let Some(cursor) = cursors.get_mut(&(buoy, metric)) {
            *cursor = (*cursor).max(ts);
        }
    }
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(LIVE_QUEUE_EVENTS);
    let poller =
        Poller { state, cookie, buoys: selection.buoys, metrics: selection.metrics, cursors, _slot: slot };
    tokio::spawn(poller.run(sender));
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), receiver))
    });
    Ok(Reply::stream("text/event-stream", body)
        .status(StatusCode::OK)
        .header(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"))
        .header(header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
}

/// The task behind one stream: polls, re-checks, sends; ends when the client goes away.
struct Poller {
    state: ApiState,
    /// The session cookie the stream was opened with (re-checked every poll).
    cookie: String,
    buoys: Vec<BuoyId>,
    metrics: Vec<MetricName>,
    /// Newest timestamp sent (or seen at opening) per (buoy, metric).
    cursors: BTreeMap<(String, String), i64>,
    _slot: Slot,
}

impl Poller {
    async fn run(mut self, sender: tokio::sync::mpsc::Sender<Bytes>) {
        if sender.send(Bytes::from_static(b"retry: 2000\n: connected\n\n")).await.is_err() {
            return;
        }
        let mut ticker = tokio::time::interval(Duration::from_millis(LIVE_POLL_MS));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut quiet_ticks: u64 = 0;
        let keepalive_ticks = LIVE_KEEPALIVE_S * 1_000 / LIVE_POLL_MS;
        let ends_at = tokio::time::Instant::now() + Duration::from_secs(LIVE_STREAM_LIFETIME_S);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = sender.closed() => return,
                () = tokio::time::sleep_until(ends_at) => {
                    let _ = sender.send(Bytes::from_static(b": reconnect\n\n")).await;
                    return;
                }
            }
            let chunk = match self.poll().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => {
                    quiet_ticks += 1;
                    if quiet_ticks < keepalive_ticks {
                        continue;
                    }
                    Bytes::from_static(b": keep-alive\n\n")
                }
                Err(end) => {
                    let _ = sender.send(event("end", end)).await;
                    return;
                }
            };
            quiet_ticks = 0;
            if sender.send(chunk).await.is_err() {
                return;
            }
        }
    }

    /// One poll: the checks, then the new rows as one event (`None`: nothing new).
    async fn poll(&mut self) -> Result<Option<Bytes>, &'static str> {
        let auth = std::sync::Arc::clone(&self.state.auth);
        let cookie = self.cookie.clone();
        // Not activity: the session ends at its idle deadline from the last real request.
        let current = crate::api::blocking(move || Ok(auth.peek_browser_session(&cookie).ok())).await;
        let Ok(Some(current)) = current else { return Err("session") };
        let Ok(policy) = self.state.policy(&current.caller).await else { return Err("error") };
        if grants_nothing(&policy) || self.buoys.iter().any(|b| !policy.buoys.allows(b.as_str())) {
            return Err("plan");
        }
        let floor = now_ns() - LIVE_LOOKBACK_S * NS_PER_S;
        // Each series from its own cursor (never below the lookback floor).
        let mut after: Vec<(&BuoyId, &MetricName, i64)> = Vec::new();
        for buoy in &self.buoys {
            for metric in &self.metrics {
                let key = (buoy.as_str().to_owned(), metric.as_str().to_owned());
                let cursor = self.cursors.get(&key).copied().unwrap_or(floor);
                after.push((buoy, metric, cursor.max(floor)));
            }
        }
        let rows = match series::newer(&self.state.query, &after, &policy).await {
            Ok(rows) => rows,
            // Too many queries running: try again at the next tick.
            Err(ApiError::Unavailable { .. }) => return Ok(None),
            Err(error) => {
                tracing::info!(%error, "live dashboard poll failed; ending the stream");
                return Err("error");
            }
        };
        debug_assert!(rows.len() <= LIVE_ROWS_PER_POLL_MAX);
        let mut fresh: Vec<LiveReading> = Vec::new();
        for row in rows {
            let Some(cursor) = self.cursors.get_mut(&(row.buoy.clone(), row.metric.clone())) else {
                continue;
            };
            if row.ts > *cursor {
                *cursor = row.ts;
                fresh.push(row);
            }
        }
        if fresh.is_empty() {
            return Ok(None);
        }
        let data = serde_json::to_string(&fresh).map_err(|_| "error")?;
        Ok(Some(event("reading", &data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_for(user: &str) -> usize {
        OPEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(user).copied().unwrap_or(0)
    }

    #[test]
    fn slots_are_limited_per_account_and_in_all_and_freed_on_drop() {
        // The only test of this binary that takes slots: the process-wide counts start at zero.
        let mine: Vec<Slot> = (0..LIVE_STREAMS_PER_ACCOUNT_MAX).map(|_| Slot::take("a").unwrap()).collect();
        assert!(matches!(
            Slot::take("a"),
            Err(ApiError::TooManyRequests { retry_after_s: LIVE_RETRY_AFTER_S })
        ));
        let others: Vec<Slot> = (LIVE_STREAMS_PER_ACCOUNT_MAX..LIVE_STREAMS_MAX)
            .map(|i| Slot::take(&format!("user-{i}")).unwrap())
            .collect();
        assert!(matches!(Slot::take("b"), Err(ApiError::TooManyRequests { .. })));
        drop(others);
        assert_eq!(open_for("a"), LIVE_STREAMS_PER_ACCOUNT_MAX);
        let b = Slot::take("b").unwrap();
        drop(mine);
        assert_eq!(open_for("a"), 0);
        assert!(!OPEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains_key("a"));
        drop(b);
    }
}
