//! Orders, invoices, the test provider's hosted payment page, and the payment webhook.

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
    EVENT_BYTES_MAX, OrderDetail, OrderState, PaymentStatus, SIGNATURE_HEADER, SUBSCRIPTION_CHARGE_PREFIX,
    ShopService, TEST_CARD_AUTHENTICATE, TEST_CARD_DECLINE, TEST_CARD_SUCCESS, TestCard, WebhookOutcome,
};

/// Where a payment of `reference` returns to: an order's confirmation, or a subscription
/// charge's (`sc_…`).
fn paid_return(reference: &str) -> String {
    if reference.starts_with(SUBSCRIPTION_CHARGE_PREFIX) {
        format!("/subscription-charges/{reference}")
    } else {
        format!("/orders/{reference}/confirmation")
    }
}

/// The page of what `reference` pays for.
fn back_link(reference: &str) -> (String, &'static str) {
    if reference.starts_with(SUBSCRIPTION_CHARGE_PREFIX) {
        (format!("/subscription-charges/{reference}"), "Back to the subscription payment")
    } else {
        (format!("/orders/{reference}"), "Back to the order")
    }
}

#[derive(Deserialize)]
pub(crate) struct CardForm {
    #[serde(default)]
    csrf: String,
    /// Read once to pick the test outcome; never stored or logged.
    #[serde(default)]
    card_number: String,
}

impl CsrfCarrier for CardForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(Deserialize)]
pub(crate) struct DecisionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
}

impl CsrfCarrier for DecisionForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

fn state_label(state: OrderState) -> &'static str {
    match state {
        OrderState::Cart => "in cart",
        OrderState::PendingPayment => "waiting for payment",
        OrderState::Paid => "paid",
        OrderState::Shipped => "shipped",
        OrderState::Cancelled => "cancelled",
        OrderState::Refunded => "refunded",
    }
}

/// The lines and money of an order.
pub(crate) fn order_table(detail: &OrderDetail) -> Markup {
    html! {
        div class="table-wrap" {
            table {
                thead { tr { th scope="col" { "Unit" } th scope="col" class="num" { "Price" } th scope="col" class="num" { "Quantity" } th scope="col" class="num" { "Line total" } } }
                tbody { @for line in &detail.lines { tr { td { (line.name) } td class="num" { (money(line.unit_price)) } td class="num" { (line.quantity) } td class="num" { (money(line.total)) } } } }
                tfoot { (totals_rows(&detail.order.totals)) }
            }
        }
    }
}

/// Date (UTC) of a ms timestamp: `YYYY-MM-DD`.
pub(crate) fn date(ms: u64) -> String {
    let days = i64::try_from(ms / 86_400_000).unwrap_or(0);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// `GET /orders`: the caller's orders, newest first.
pub(crate) async fn list(shop: Arc<ShopService>, request: Request<ApiState>) -> Result<Reply, ApiError> {
    let current = match require_session(&request).await? {
        Ok(s) => s,
        Err(redirect) => return Ok(redirect),
    };
    let caller = current.caller.clone();
    let orders = match run(Some(&current), move || shop.my_orders(&caller)).await? {
        Ok(o) => o,
        Err(reply) => return Ok(reply),
    };
    let markup = html! {
        @if orders.is_empty() { p { "No orders yet." } }
        @else {
            div class="table-wrap" {
                table {
                    thead { tr { th scope="col" { "Order" } th scope="col" { "Placed" } th scope="col" { "State" } th scope="col" class="num" { "Total" } th scope="col" { "Invoice" } } }
                    tbody {
                        @for order in &orders {
                            tr data-order=(order.id) {
                                td { a href={ "/orders/" (order.id) } { code { (order.id.get(..8).unwrap_or(&order.id)) } } }
                                td { (date(order.created_ms)) }
                                td class="state" { (state_label(order.state)) }
                                td class="num" { (money(order.totals.total)) }
                                td { @if let Some(n) = order.invoice_number { a href={ "/invoices/" (n) } { "No. " (n) } } }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(StatusCode::OK, frame("Your orders", Nav::Orders, Some(&current), markup)))
}

async fn load(
    shop: Arc<ShopService>,
    current: &BrowserSession,
    id: String,
) -> Result<Result<OrderDetail, Reply>, ApiError> {
    let caller = current.caller.clone();
    run(Some(current), move || shop.order(&caller, &id)).await
}

fn order_markup(detail: &OrderDetail, session: &BrowserSession) -> Markup {
    let order = &detail.order;
    let token = session.csrf_token.as_str();
    html! {
        p { "State: " span class="state" data-state=(order.state.as_str()) { (state_label(order.state)) } }
        (order_table(detail))
        h2 { "Shipping to" }
        address { (order.address.name) br; (order.address.line1) br;
            @if !order.address.line2.is_empty() { (order.address.line2) br; }
            (order.address.postal_code) " " (order.address.city) br; (order.address.country) }
        @if order.state == OrderState::PendingPayment && order.user_id == session.caller.user_id() {
            (button_form(&format!("/orders/{}/pay", order.id), "Pay now", token, &[]))
            form method="post" action={ "/orders/" (order.id) "/cancel" } {
                (csrf_field(token))
                button type="submit" class="secondary" { "Cancel order" }
            }
        }
        @if let Some(n) = order.invoice_number { p { a href={ "/invoices/" (n) } { "Invoice No. " (n) } } }
    }
}

/// `GET /orders/{id}`: the caller's order (another customer's answers 404).
pub(crate) async fn detail(shop: Arc<ShopService>, request: Request<ApiState>) -> Result<Reply, ApiError> {
    let current = match require_session(&request).await? {
        Ok(s) => s,
        Err(redirect) => return Ok(redirect),
    };
    let detail = match load(shop, &current, request.param("id")?.to_owned()).await? {
        Ok(d) => d,
        Err(reply) => return Ok(reply),
    };
    let title = format!("Order {}", detail.order.id.get(..8).unwrap_or(&detail.order.id));
    Ok(page(StatusCode::OK, frame(&title, Nav::Orders, Some(&current), order_markup(&detail, &current))))
}

/// `GET /orders/{id}/confirmation`: where the payment page returns to.
pub(crate) async fn confirmation(
    shop: Arc<ShopService>,
    request: Request<ApiState>,
) -> Result<Reply, ApiError> {
    let current = match require_session(&request).await? {
        Ok(s) => s,
        Err(redirect) => return Ok(redirect),
    };
    let detail = match load(shop, &current, request.param("id")?.to_owned()).await? {
        Ok(d) => d,
        Err(reply) => return Ok(reply),
    };
    let paid = matches!(detail.order.state, OrderState::Paid | OrderState::Shipped);
    let markup = html! {
        @if paid {
            (notice("Thank you: your payment is confirmed and your order is paid.", "ok"))
        } @else {
            (notice("Your order is not paid yet. If you just paid, the confirmation from the payment provider may still be on its way: reload this page.", ""))
        }
        (order_markup(&detail, &current))
    };
    let title = if paid { "Order confirmed" } else { "Order received" };
    Ok(page(StatusCode::OK, frame(title, Nav::Orders, Some(&current), markup)))
}

/// `POST /orders/{id}/pay`: a new payment at the provider; off to its hosted page.
pub(crate) async fn pay(shop: Arc<ShopService>, mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    match id_action(&mut request, move |caller, id| shop.start_payment(caller, id)).await? {
        Ok((hosted, _)) => redirect(&hosted.url),
        Err(reply) => Ok(reply),
    }
}

/// `POST /orders/{id}/cancel`: cancels an unpaid order.
pub(crate) async fn cancel(
    shop: Arc<ShopService>,
    mut request: Request<ApiState>,
) -> Result<Reply, ApiError> {
    match id_action(&mut request, move |caller, id| shop.cancel_order(caller, id)).await? {
        Ok((order, _)) => redirect(&format!("/orders/{}", order.id)),
        Err(reply) => Ok(reply),
    }
}

/// `GET /invoices/{number}`: a print-friendly invoice (the owner's, or any for staff).
pub(crate) async fn invoice(shop: Arc<ShopService>, request: Request<ApiState>) -> Result<Reply, ApiError> {
    let current = match require_session(&request).await? {
        Ok(s) => s,
        Err(redirect) => return Ok(redirect),
    };
    let Ok(number) = request.param("number")?.parse::<u64>() else {
        return super::frame::refused(Some(&current), crate::shop::ShopError::NotFound { kind: "invoice" });
    };
    let caller = current.caller.clone();
    let invoice = match run(Some(&current), move || shop.invoice(&caller, number)).await? {
        Ok(i) => i,
        Err(reply) => return Ok(reply),
    };
    let detail = OrderDetail {
        order: crate::shop::Order {
            id: invoice.order_id.clone(),
            user_id: invoice.user_id.clone(),
            email: invoice.email.clone(),
            state: OrderState::Paid,
            totals: invoice.totals,
            address: invoice.address.clone(),
            line_count: 0,
            payment_id: None,
            invoice_number: Some(invoice.number),
            created_ms: invoice.issued_ms,
            history: Vec::new(),
        },
        lines: invoice.lines.clone(),
    };
    let markup = html! {
        article class="invoice" {
            dl class="specs" {
                dt { "Invoice number" } dd { (invoice.number) }
                dt { "Date" } dd { (date(invoice.issued_ms)) }
                @if invoice.order_id.starts_with(SUBSCRIPTION_CHARGE_PREFIX) {
                    dt { "Subscription charge" } dd { code { (invoice.order_id) } }
                } @else {
                    dt { "Order" } dd { code { (invoice.order_id) } }
                }
                dt { "Seller" } dd { "BlueWave Marine Systems" }
                @if invoice.address.line1.is_empty() {
                    dt { "Bill to" } dd { (invoice.email) }
                } @else {
                    dt { "Bill to" } dd { (invoice.address.name) ", " (invoice.address.line1) ", "
                        @if !invoice.address.line2.is_empty() { (invoice.address.line2) ", " }
                        (invoice.address.postal_code) " " (invoice.address.city) ", " (invoice.address.country)
                        br; (invoice.email) }
                }
            }
            (order_table(&detail))
            p class="no-print" { "Print this page or save it as PDF from your browser's print dialog." }
        }
    };
    let title = format!("Invoice {}", invoice.number);
    Ok(page(StatusCode::OK, frame(&title, Nav::Orders, Some(&current), markup)))
}

fn test_cards_help() -> Markup {
    html! {
        details class="testcards" {
            summary { "Test cards" }
            ul {
                li { code { (TEST_CARD_SUCCESS) } " pays" }
                li { code { (TEST_CARD_DECLINE) } " is declined" }
                li { code { (TEST_CARD_AUTHENTICATE) } " asks you to authenticate" }
            }
        }
    }
}

/// `GET /pay/test/{id}`: the test provider's hosted page (card number, amount).
pub(crate) async fn test_page(shop: Arc<ShopService>, request: Request<ApiState>) -> Result<Reply, ApiError> {
    let current = match require_session(&request).await? {
        Ok(s) => s,
        Err(redirect) => return Ok(redirect),
    };
    let id = request.param("id")?.to_owned();
    let caller = current.caller.clone();
    let payment = match run(Some(&current), move || shop.payment(&caller, &id)).await? {
        Ok(p) => p,
        Err(reply) => return Ok(reply),
    };
    if payment.status == PaymentStatus::Succeeded {
        return redirect(&paid_return(&payment.order_id));
    }
    let (back, back_label) = back_link(&payment.order_id);
    let markup = html! {
        p { strong { "Test mode." } " No real payment is made and no card data is kept." }
        p { "Amount: " strong { (money(payment.amount)) } }
        @if payment.status == PaymentStatus::Failed { (notice("The card was declined. Try another card.", "error")) }
        form method="post" action={ "/pay/test/" (payment.id) } class="stack" {
            (csrf_field(&current.csrf_token))
            label { "Card number" input type="text" name="card_number" inputmode="numeric" autocomplete="off" maxlength="23" required; }
            button type="submit" { "Pay " (money(payment.amount)) }
        }
        (test_cards_help())
        p { a href=(back) { (back_label) } }
    };
    Ok(page(StatusCode::OK, frame("Payment", Nav::None, Some(&current), markup)))
}

/// `POST /pay/test/{id}`: the card picks the outcome; success returns to the confirmation page.
pub(crate) async fn test_submit(
    shop: Arc<ShopService>,
    mut request: Request<ApiState>,
) -> Result<Reply, ApiError> {
    let (form, current) = match session_form::<CardForm>(&mut request).await? {
        Ok(f) => f,
        Err(redirect) => return Ok(redirect),
    };
    let id = request.param("id")?.to_owned();
    let caller = current.caller.clone();
    let card = form.card_number;
    let worker = Arc::clone(&shop);
    let pay_id = id.clone();
    let outcome = match run(Some(&current), move || worker.test_card_payment(&caller, &pay_id, &card)).await?
    {
        Ok(c) => c,
        Err(reply) => return Ok(reply),
    };
    let caller = current.caller.clone();
    let payment = match run(Some(&current), move || shop.payment(&caller, &id)).await? {
        Ok(p) => p,
        Err(reply) => return Ok(reply),
    };
    match outcome {
        TestCard::Success => redirect(&paid_return(&payment.order_id)),
        TestCard::Decline => {
            let (back, back_label) = back_link(&payment.order_id);
            let markup = html! {
                (notice("Your card was declined. Nothing was charged.", "error"))
                p { a href={ "/pay/test/" (payment.id) } { "Try another card" } " · " a href=(back) { (back_label) } }
            };
            Ok(page(
                StatusCode::PAYMENT_REQUIRED,
                frame("Payment declined", Nav::None, Some(&current), markup),
            ))
        }
        TestCard::Authenticate => {
            let markup = html! {
                p { "Your bank asks you to confirm this payment of " strong { (money(payment.amount)) } "." }
                form method="post" action={ "/pay/test/" (payment.id) "/authenticate" } class="inline" {
                    (csrf_field(&current.csrf_token))
                    button type="submit" name="decision" value="approve" { "Approve" }
                    button type="submit" name="decision" value="fail" class="danger" { "Fail authentication" }
                }
            };
            Ok(page(StatusCode::OK, frame("Confirm the payment", Nav::None, Some(&current), markup)))
        }
    }
}

/// `POST /pay/test/{id}/authenticate`: `decision=approve|fail`.
pub(crate) async fn test_authenticate(
    shop: Arc<ShopService>,
    mut request: Request<ApiState>,
) -> Result<Reply, ApiError> {
    let (form, current) = match session_form::<DecisionForm>(&mut request).await? {
        Ok(f) => f,
        Err(redirect) => return Ok(redirect),
    };
    let approve = match form.decision.as_str() {
        "approve" => true,
        "fail" => false,
        _ => return Err(ApiError::InvalidInput("decision: approve or fail".to_owned())),
    };
    let id = request.param("id")?.to_owned();
    let caller = current.caller.clone();
    let worker = Arc::clone(&shop);
    let pay_id = id.clone();
    if let Err(reply) =
        run(Some(&current), move || worker.test_authenticate(&caller, &pay_id, approve)).await?
    {
        return Ok(reply);
    }
    let caller = current.caller.clone();
    let payment = match run(Some(&current), move || shop.payment(&caller, &id)).await? {
        Ok(p) => p,
        Err(reply) => return Ok(reply),
    };
    if approve {
        redirect(&paid_return(&payment.order_id))
    } else {
        redirect(&format!("/pay/test/{}", payment.id))
    }
}

/// `POST /shop/webhooks/payments`: the provider's signed events (see `shop::payments`).
/// Answers `{"received": true, "outcome": …}`; a bad signature or event is 400.
pub(crate) async fn webhook(
    shop: Arc<ShopService>,
    mut request: Request<ApiState>,
) -> Result<Reply, ApiError> {
    let body = request.bytes().await?;
    if body.len() > EVENT_BYTES_MAX {
        return Err(ApiError::PayloadTooLarge { limit_bytes: EVENT_BYTES_MAX as u64 });
    }
    let signature = request.headers().get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let outcome =
        crate::api::blocking(move || Ok(shop.receive_webhook(signature.as_deref(), &body)?)).await?;
    let outcome = match outcome {
        WebhookOutcome::Applied(word) => word,
        WebhookOutcome::Duplicate => "duplicate".to_owned(),
    };
    Reply::json(&serde_json::json!({ "received": true, "outcome": outcome }))
}
