//! `GET /account/usage`: today's query count against the plan's daily quota, and the last
//! days (the same numbers as `GET /api/usage`).

use std::sync::Arc;

use http::StatusCode;
use maud::html;

use super::browser::{html, see_other, session};
use super::layout::page;
use crate::api::{ApiState, blocking, format_time};
use crate::http::{ApiError, Reply, Request};

const NS_PER_DAY: i64 = 86_400 * 1_000_000_000;

/// The UTC date of a day number (`YYYY-MM-DD`).
pub(crate) fn day_text(day: u64) -> String {
    let ns = i64::try_from(day).unwrap_or(0).saturating_mul(NS_PER_DAY);
    format_time(ns).chars().take(10).collect()
}

/// `GET /account/usage`.
pub(crate) async fn show(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let Some(current) = session(&request).await? else { return Ok(see_other("/login")) };
    if current.caller.mfa_enrolment_required() {
        return Ok(see_other("/account/mfa"));
    }
    let auth = Arc::clone(&request.state().auth);
    let usage = blocking(move || Ok(auth.query_usage(&current.caller)?)).await?;
    let markup = html! {
        @match usage.quota {
            Some(quota) => {
                p { "Today (" (day_text(usage.day)) ", UTC) you have run " strong id="used" { (usage.used) }
                    " of " strong id="quota" { (quota) } " queries; " span id="remaining" { (usage.remaining.unwrap_or(0)) }
                    " left. The count starts again in " (usage.resets_in_s / 60) " minutes." }
                meter min="0" max=(quota) value=(usage.used) aria-label="Queries used today" { (usage.used) " of " (quota) }
            }
            None => p { "Your plan has no daily query limit (or you have no plan), so queries are not counted." }
        }
        p { "Each API query or read, dashboard view, CSV export and live-stream opening counts as one query." }
        table class="usage" {
            caption { "Queries per day, last " (usage.history.len()) " days" }
            thead { tr { th scope="col" { "Day (UTC)" } th scope="col" { "Queries" } } }
            tbody { @for d in &usage.history { tr { td { (day_text(d.day)) } td { (d.used) } } } }
        }
        p { a href="/account/overview" { "Back to your account" } }
    };
    Ok(html(StatusCode::OK, page("Query usage", markup)))
}
