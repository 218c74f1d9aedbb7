//! Data subscriptions: `POST /subscriptions` (subscribe from the plans page), `GET
//! /subscription` (the caller's latest), `GET /subscriptions/{id}` (plan, period, renewal
//! toggle, change form, charges and invoices), `GET|POST /subscriptions/{id}/change` (the
//! prorated quote shown before paying, then the change), `POST /subscriptions/{id}/renewal`
//! (`renew=on|off`), `POST /subscriptions/{id}/renew` (pay the next period),
//! `GET /subscription-charges/{id}` (where the payment page returns) and `POST
//! /subscription-charges/{id}/pay`. Another customer's subscription or charge answers 404.

use std::sync::Arc;

use http::StatusCode;
use maud::{Markup, html};
use serde::Deserialize;

use super::cart::totals_rows;
use super::frame::{Nav, frame, id_action, money, notice, page, redirect, run};
use crate::api::ApiState;
use crate::auth::BrowserSession;
use crate::http::{ApiError, Reply, Request};
use crate::pages::account::{CsrfCarrier, require_session, session_form};
use crate::pages::layout::{button_form, csrf_field};
use crate::shop::{
    BillingInterval, ChangeOutcome, ChangeQuote, ChargeKind, ChargeStatus, PlanOffer, ShopError, ShopService,
    SubscriptionCharge, SubscriptionState, SubscriptionView, format_time,
};

#[derive(Deserialize)]
pub(crate) struct PlanForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    offer: String,
    #[serde(default)]
    interval: String,
}

impl CsrfCarrier for PlanForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(Deserialize)]
pub(crate) struct PlanQuery {
    #[serde(default)]
    offer: String,
    #[serde(default)]
    interval: String,
}

#[derive(Deserialize)]
pub(crate) struct RenewalForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    renew: String,
}

impl CsrfCarrier for RenewalForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

fn interval(text: &str) -> Result<BillingInterval, ShopError> {
    BillingInterval::parse(text)
        .ok_or_else(|| ShopError::InvalidInput { field: "interval", reason: "monthly or annual".to_owned() })
}

fn state_label(state: SubscriptionState) -> &'static str {
    match state {
        SubscriptionState::Incomplete => "waiting for the first payment",
        SubscriptionState::Active => "active",
        SubscriptionState::Cancelled => "cancelled",
        SubscriptionState::Lapsed => "lapsed (not renewed)",
        SubscriptionState::Expired => "expired (never paid)",
    }
}

fn kind_label(kind: ChargeKind) -> &'static str {
    match kind {
        ChargeKind::First => "first period",
        ChargeKind::Upgrade => "upgrade (prorated)",
        ChargeKind::Renewal => "renewal",
    }
}

fn status_label(status: ChargeStatus) -> &'static str {
    match status {
        ChargeStatus::Open => "waiting for payment",
        ChargeStatus::Paid => "paid",
        ChargeStatus::Void => "void",
    }
}

/// The subscribe form of one offer on the plans page (an interval choice and a button).
pub(crate) fn subscribe_form(offer: &PlanOffer, token: &str) -> Markup {
    html! {
        form method="post" action="/subscriptions" class="stack" {
            (csrf_field(token))
            input type="hidden" name="offer" value=(offer.id);
            fieldset {
                legend { "Billing" }
                label { input type="radio" name="interval" value="monthly" checked; " Monthly, " (money(offer.monthly)) }
                label { input type="radio" name="interval" value="annual"; " Annual, " (money(offer.annual)) }
            }
            button type="submit" { "Subscribe to " (offer.name) }
        }
    }
}

/// `POST /subscriptions`: starts a subscription; off to the hosted payment page.
pub(crate) async fn subscribe(
    shop: Arc<ShopService>,
    mut request: Request<ApiState>,
) -> Result<Reply, ApiError> {
    let (form, current) = match session_form::<PlanForm>(&mut request).await? {
        Ok(f) => f,
        Err(redirect) => return Ok(redirect),
    };
    let caller = current.caller.clone();
    let outcome = run(Some(&current), move || {
        let interval = interval(&form.interval)?;
        shop.subscribe(&caller, &form.offer, interval)
    })
    .await?;
    match outcome {
        Ok((_, hosted)) => redirect(&hosted.url),
        Err(reply) => Ok(reply),
    }
}

/// `GET /subscription`: the caller's latest subscription, or the way to the plans.
pub(crate) async fn mine(shop: Arc<ShopService>, request: Request<ApiState>) -> Result<Reply, ApiError> {
    let current = match require_session(&request).await? {
        Ok(s) => s,
        Err(redirect) => return Ok(redirect),
    };
    let caller = current.caller.clone();
    let view = match run(Some(&current), move || shop.my_subscription(&caller)).await? {
        Ok(v) => v,
        Err(reply) => return Ok(reply),
    };
    match view {
        Some(view) => redirect(&format!("/subscriptions/{}", view.subscription.id)),
        None => {
            let markup = html! {
                p { "You have no data subscription yet." }
                p { a href="/shop/plans" { "See the data plans" } }
            };
            Ok(page(StatusCode::OK, frame("Your subscription", Nav::Subscription, Some(&current), markup)))
        }
    }
}

fn charges_table(charges: &[SubscriptionCharge], token: &str) -> Markup {
    html! {
        div class="table-wrap" {
            table {
                caption { "Charges and invoices" }
                thead { tr { th scope="col" { "Date" } th scope="col" { "For" } th scope="col" { "Period" } th scope="col" class="num" { "Total" } th scope="col" { "State" } th scope="col" { "Invoice" } } }
                tbody {
                    @for charge in charges {
                        tr data-charge=(charge.id) {
                            td { (format_time(charge.created_s)) }
                            td { (charge.offer_name) ", " (charge.interval.as_str()) ", " (kind_label(charge.kind)) }
                            td { (format_time(charge.period_start_s)) " to " (format_time(charge.period_end_s)) }
                            td class="num" { (money(charge.totals.total)) }
                            td class="state" { (status_label(charge.status)) }
                            td {
                                @if let Some(n) = charge.invoice_number { a href={ "/invoices/" (n) } { "No. " (n) } }
                                @else if charge.status == ChargeStatus::Open {
                                    (button_form(&format!("/subscription-charges/{}/pay", charge.id), "Pay", token, &[]))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn subscription_markup(view: &SubscriptionView, offers: &[PlanOffer], session: &BrowserSession) -> Markup {
    let s = &view.subscription;
    let token = session.csrf_token.as_str();
    let active = s.state == SubscriptionState::Active;
    html! {
        dl class="specs" {
            dt { "Plan" } dd class="plan" { (s.offer_name) }
            dt { "Billing" } dd { (s.interval.as_str()) ", " (money(s.price)) " per period before tax" }
            dt { "State" } dd { span class="state" data-state=(s.state.as_str()) { (state_label(s.state)) } }
            @if s.state != SubscriptionState::Incomplete {
                dt { "Current period" } dd class="period" { (format_time(s.period_start_s)) " to " (format_time(s.period_end_s)) }
            }
            dt { "Data access" } dd class="access" { @if view.access_plan_id.is_some() { "yes" } @else { "none" } }
            @if active {
                dt { "At period end" } dd class="renewal" {
                    @if s.next_period.is_some() { "the next period is paid" }
                    @else if s.renew { "renews" } @else { "ends (cancelled); access until then" }
                }
            }
            @if let Some(change) = &s.scheduled_change {
                dt { "Scheduled change" } dd { (change.offer_id) ", " (change.interval.as_str()) " from " (format_time(s.period_end_s)) }
            }
        }
        @if active {
            @if s.next_period.is_none() {
                form method="post" action={ "/subscriptions/" (s.id) "/renewal" } {
                    (csrf_field(token))
                    @if s.renew {
                        input type="hidden" name="renew" value="off";
                        button type="submit" class="secondary" { "Cancel at period end" }
                    } @else {
                        input type="hidden" name="renew" value="on";
                        button type="submit" { "Renew at period end" }
                    }
                }
            }
            @if view.renewal_payable {
                (button_form(&format!("/subscriptions/{}/renew", s.id), "Pay the next period now", token, &[]))
            }
            h2 { "Change plan" }
            p { "A bigger plan at the same billing interval applies as soon as its prorated price is paid; any other change applies at the end of the current period. You see the amount before paying." }
            form method="get" action={ "/subscriptions/" (s.id) "/change" } class="stack" {
                label { "Plan"
                    select name="offer" {
                        @for offer in offers { option value=(offer.id) selected[offer.id == s.offer_id] { (offer.name) " (" (money(offer.monthly)) " / month, " (money(offer.annual)) " / year)" } }
                    }
                }
                label { "Billing"
                    select name="interval" {
                        option value="monthly" selected[s.interval == BillingInterval::Monthly] { "Monthly" }
                        option value="annual" selected[s.interval == BillingInterval::Annual] { "Annual" }
                    }
                }
                button type="submit" { "See the price" }
            }
        }
        @if s.state.is_final() {
            p { a href="/shop/plans" { "Subscribe again" } }
        }
        (charges_table(&view.charges, token))
    }
}

/// `GET /subscriptions/{id}`.
pub(crate) async fn detail(shop: Arc<ShopService>, request: Request<ApiState>) -> Result<Reply, ApiError> {
    let current = match require_session(&request).await? {
        Ok(s) => s,
        Err(redirect) => return Ok(redirect),
    };
    let id = request.param("id")?.to_owned();
    let caller = current.caller.clone();
    let loaded =
        run(Some(&current), move || Ok((shop.subscription(&caller, &id)?, shop.plan_offers()?))).await?;
    let (view, offers) = match loaded {
        Ok(v) => v,
        Err(reply) => return Ok(reply),
    };
    let markup = subscription_markup(&view, &offers, &current);
    Ok(page(StatusCode::OK, frame("Your subscription", Nav::Subscription, Some(&current), markup)))
}

/// `GET /subscriptions/{id}/change?offer=…&interval=…`: the price of the change, before paying.
pub(crate) async fn change_form(
    shop: Arc<ShopService>,
    request: Request<ApiState>,
) -> Result<Reply, ApiError> {
    let current = match require_session(&request).await? {
        Ok(s) => s,
        Err(redirect) => return Ok(redirect),
    };
    let query: PlanQuery = request.query()?;
    let id = request.param("id")?.to_owned();
    let caller = current.caller.clone();
    let (offer_id, interval_text) = (query.offer.clone(), query.interval.clone());
    let worker_id = id.clone();
    let quote = run(Some(&current), move || {
        let interval = interval(&interval_text)?;
        shop.change_quote(&caller, &worker_id, &offer_id, interval)
    })
    .await?;
    let quote = match quote {
        Ok(q) => q,
        Err(reply) => return Ok(reply),
    };
    let token = current.csrf_token.as_str();
    let fields = [("offer", query.offer.as_str()), ("interval", query.interval.as_str())];
    let markup = html! {
        @match &quote {
            ChangeQuote::Upgrade { proration, totals } => {
                p { "An upgrade: it applies as soon as this amount is paid; the period end stays." }
                div class="table-wrap" {
                    table class="quote" {
                        tbody {
                            tr { th scope="row" { "Credit for the unused part of the current plan" } td class="num credit" { "-" (money(crate::shop::Money { minor: proration.credit_minor, currency: totals.subtotal.currency })) } }
                            tr { th scope="row" { "The new plan for the rest of the period" } td class="num cost" { (money(crate::shop::Money { minor: proration.cost_minor, currency: totals.subtotal.currency })) } }
                        }
                        tfoot { (totals_rows(totals)) }
                    }
                }
                p class="due" { "Due now: " strong { (money(totals.total)) } }
                (button_form(&format!("/subscriptions/{id}/change"), "Pay and upgrade", token, &fields))
            }
            ChangeQuote::AtPeriodEnd { effective_s, price } => {
                p class="due" { "This change applies at the end of the current period, " (format_time(*effective_s)) ". Nothing is due now; the renewal will cost " (money(*price)) " before tax." }
                (button_form(&format!("/subscriptions/{id}/change"), "Schedule the change", token, &fields))
            }
        }
        p { a href={ "/subscriptions/" (id) } { "Back to the subscription" } }
    };
    Ok(page(StatusCode::OK, frame("Change plan", Nav::Subscription, Some(&current), markup)))
}

/// `POST /subscriptions/{id}/change`: an upgrade goes to the payment page; a scheduled change
/// back to the subscription.
pub(crate) async fn change(
    shop: Arc<ShopService>,
    mut request: Request<ApiState>,
) -> Result<Reply, ApiError> {
    let (form, current) = match session_form::<PlanForm>(&mut request).await? {
        Ok(f) => f,
        Err(redirect) => return Ok(redirect),
    };
    let id = request.param("id")?.to_owned();
    let caller = current.caller.clone();
    let worker_id = id.clone();
    let outcome = run(Some(&current), move || {
        let interval = interval(&form.interval)?;
        shop.change_plan(&caller, &worker_id, &form.offer, interval)
    })
    .await?;
    match outcome {
        Ok(ChangeOutcome::Pay(hosted)) => redirect(&hosted.url),
        Ok(ChangeOutcome::Scheduled(_)) => redirect(&format!("/subscriptions/{id}")),
        Err(reply) => Ok(reply),
    }
}

/// `POST /subscriptions/{id}/renewal`: `renew=on` (renew at period end) or `off` (cancel at
/// period end).
pub(crate) async fn renewal(
    shop: Arc<ShopService>,
    mut request: Request<ApiState>,
) -> Result<Reply, ApiError> {
    let (form, current) = match session_form::<RenewalForm>(&mut request).await? {
        Ok(f) => f,
        Err(redirect) => return Ok(redirect),
    };
    let renew = match form.renew.as_str() {
        "on" => true,
        "off" => false,
        _ => return Err(ApiError::InvalidInput("renew: on or off".to_owned())),
    };
    let id = request.param("id")?.to_owned();
    let caller = current.caller.clone();
    let worker_id = id.clone();
    match run(Some(&current), move || shop.set_renewal(&caller, &worker_id, renew)).await? {
        Ok(_) => redirect(&format!("/subscriptions/{id}")),
        Err(reply) => Ok(reply),
    }
}

/// `POST /subscriptions/{id}/renew`: pays the next period (renewal window only).
pub(crate) async fn renew(shop: Arc<ShopService>, mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    match id_action(&mut request, move |caller, id| shop.start_renewal(caller, id)).await? {
        Ok((hosted, _)) => redirect(&hosted.url),
        Err(reply) => Ok(reply),
    }
}

/// `POST /subscription-charges/{id}/pay`: a new payment of an open charge.
pub(crate) async fn pay_charge(
    shop: Arc<ShopService>,
    mut request: Request<ApiState>,
) -> Result<Reply, ApiError> {
    match id_action(&mut request, move |caller, id| shop.pay_charge(caller, id)).await? {
        Ok((hosted, _)) => redirect(&hosted.url),
        Err(reply) => Ok(reply),
    }
}

/// `GET /subscription-charges/{id}`: the confirmation the payment page returns to.
pub(crate) async fn charge(shop: Arc<ShopService>, request: Request<ApiState>) -> Result<Reply, ApiError> {
    let current = match require_session(&request).await? {
        Ok(s) => s,
        Err(redirect) => return Ok(redirect),
    };
    let id = request.param("id")?.to_owned();
    let caller = current.caller.clone();
    let charge = match run(Some(&current), move || shop.subscription_charge(&caller, &id)).await? {
        Ok(c) => c,
        Err(reply) => return Ok(reply),
    };
    let paid = charge.status == ChargeStatus::Paid;
    let markup = html! {
        @if paid {
            (notice("Thank you: your payment is confirmed.", "ok"))
            p { (charge.offer_name) ", " (charge.interval.as_str()) ": " (kind_label(charge.kind)) ", " (format_time(charge.period_start_s)) " to " (format_time(charge.period_end_s)) "." }
            @if let Some(n) = charge.invoice_number { p { a href={ "/invoices/" (n) } { "Invoice No. " (n) } } }
        } @else {
            (notice("This payment is not confirmed yet. If you just paid, the confirmation from the payment provider may still be on its way: reload this page.", ""))
        }
        p { a href={ "/subscriptions/" (charge.subscription_id) } { "Your subscription" } }
    };
    let title = if paid { "Subscription payment confirmed" } else { "Subscription payment" };
    Ok(page(StatusCode::OK, frame(title, Nav::Subscription, Some(&current), markup)))
}
