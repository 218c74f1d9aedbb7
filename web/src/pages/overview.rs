//! `GET /account/overview`: the account dashboard, one place that links everything an
//! account holder manages on this server (profile and sessions, MFA, tokens, usage, the
//! metrics dashboard) with a one-line state of each that this module can read without the
//! shop; the subscription's state is shown, unlinked.
//!
//! Only routes this router serves are linked. The accounts branch adds `/account/password`,
//! the shop branch `/orders`, `/account/subscription`, `/invoices` and `/plans`: link them
//! here when they are merged.

use std::sync::Arc;

use http::StatusCode;
use maud::html;

use super::browser::{html, see_other, session};
use super::layout::page;
use crate::api::{ApiState, blocking};
use crate::auth::{ApiTokenInfo, BuoyScope, Role};
use crate::http::{ApiError, Reply, Request};

/// `GET /account/overview`.
pub(crate) async fn show(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let Some(current) = session(&request).await? else { return Ok(see_other("/login")) };
    if current.caller.mfa_enrolment_required() {
        return Ok(see_other("/account/mfa"));
    }
    let auth = Arc::clone(&request.state().auth);
    let caller = current.caller.clone();
    let (mfa_on, grant, tokens, usage) = blocking(move || {
        let mfa_on = auth.mfa_enabled(&caller)?;
        let grant = auth.policy_grant(&caller)?;
        let tokens = auth.list_api_tokens(&caller)?.into_iter().filter(ApiTokenInfo::is_live).count();
        let usage = auth.query_usage(&caller)?;
        Ok((mfa_on, grant, tokens, usage))
    })
    .await?;
    let caller = &current.caller;
    let reads_data = matches!(caller.role(), Role::Customer | Role::Analyst);
    let plan_text = match (&grant.plan_id, &grant.buoys) {
        (_, BuoyScope::All) => "Every buoy.".to_owned(),
        (None, _) => "No data plan.".to_owned(),
        (Some(_), BuoyScope::List(ids)) => format!("A data plan covering {} buoys.", ids.len()),
    };
    let markup = html! {
        p { "Signed in as " strong { (caller.email()) } " (" (caller.role().to_string()) ")." }
        nav aria-label="Your account" {
            ul class="overview" {
                li { a href="/account" { "Profile and sessions" } " — where you are signed in, and signing out elsewhere." }
                li { a href="/account/mfa" { "Two-step sign-in" } " — " @if mfa_on { "on." } @else { "off." } }
                li { "Subscription — " (plan_text) }
                @if reads_data {
                    li { a href="/account/tokens" { "API tokens" } " — " (tokens) " active." }
                    li { a href="/account/usage" { "Query usage" } " — "
                        @match usage.quota { Some(q) => { (usage.used) " of " (q) " today." } None => { "no daily limit." } } }
                    li { a href="/dashboard" { "Metrics dashboard" } " — charts and live readings of your plan's buoys." }
                }
            }
        }
    };
    Ok(html(StatusCode::OK, page("Your account", markup)))
}
