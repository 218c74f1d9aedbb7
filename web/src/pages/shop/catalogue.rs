//! `GET /shop` (filters), `GET /shop/products/{id}`, `GET /shop/plans`, `GET /shop/images/{key}`.

use std::sync::Arc;

use http::{HeaderValue, StatusCode, header};
use maud::{Markup, html};
use serde::Deserialize;

use super::assets::{self, IMMUTABLE};
use super::frame::{Nav, frame, money, page, run};
use super::subscription::subscribe_form;
use crate::api::ApiState;
use crate::auth::BrowserSession;
use crate::http::{ApiError, Reply, Request};
use crate::pages::browser::session;
use crate::pages::layout::csrf_field;
use crate::shop::{LINE_QUANTITY_MAX, Money, ProductFilter, ProductView, ShopService, SubscriptionState};

/// The URL of a product image key (`asset:<name>` for built-in assets, else an upload).
pub(crate) fn image_url(key: &str) -> String {
    match key.strip_prefix("asset:") {
        Some(name) => assets::url(name),
        None => format!("/shop/images/{key}"),
    }
}

#[derive(Deserialize)]
pub(crate) struct Filters {
    #[serde(default)]
    capacity_min: String,
    #[serde(default)]
    power_max: String,
    #[serde(default)]
    price_max: String,
}

fn number(field: &str, text: &str) -> Result<Option<u32>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| format!("{field}: a whole number"))
}

impl Filters {
    fn parse(&self, shop: &ShopService) -> Result<ProductFilter, String> {
        let price_max_minor = match self.price_max.trim() {
            "" => None,
            text => Some(Money::parse_major(text, shop.config().currency).map_err(|e| e.to_string())?.minor),
        };
        Ok(ProductFilter {
            capacity_min: number("capacity", &self.capacity_min)?,
            power_max: number("power", &self.power_max)?,
            price_max_minor,
        })
    }
}

fn card(view: &ProductView) -> Markup {
    let p = &view.product;
    let href = format!("/shop/products/{}", p.id);
    html! {
        li class="card" {
            @if let Some(image) = p.images.first() {
                img src=(image_url(image)) alt="" width="320" height="200";
            }
            h2 { a href=(href) { (p.spec.name) } }
            p { (p.spec.summary) }
            p class="price" { (money(p.spec.price)) }
            p { (p.spec.capacity_l_per_day) " L/day · " (p.spec.power_w) " W · "
                @if view.stock == 0 { span class="stock low" { "out of stock" } } @else { (view.stock) " in stock" } }
        }
    }
}

/// `GET /shop`: the units on sale, filtered by daily capacity, power and price.
pub(crate) async fn list(shop: Arc<ShopService>, request: Request<ApiState>) -> Result<Reply, ApiError> {
    let current = session(&request).await?;
    let filters: Filters = request.query()?;
    let (status, parsed) = match filters.parse(&shop) {
        Ok(f) => (StatusCode::OK, Ok(f)),
        Err(reason) => (StatusCode::BAD_REQUEST, Err(reason)),
    };
    let filter = parsed.clone().unwrap_or_default();
    let products = match run(current.as_ref(), move || shop.list_products(&filter)).await? {
        Ok(p) => p,
        Err(reply) => return Ok(reply),
    };
    let markup = html! {
        form method="get" action="/shop" class="filters" aria-label="Filter units" {
            label { "Capacity at least (L/day)" input type="number" name="capacity_min" min="0" inputmode="numeric" value=(filters.capacity_min); }
            label { "Power at most (W)" input type="number" name="power_max" min="0" inputmode="numeric" value=(filters.power_max); }
            label { "Price at most" input type="text" name="price_max" inputmode="decimal" value=(filters.price_max); }
            button type="submit" { "Filter" }
            a href="/shop" { "Clear" }
        }
        @if let Err(reason) = &parsed { (super::frame::notice(reason, "error")) }
        @if products.is_empty() { p { "No unit matches these filters." } }
        ul class="grid" { @for view in &products { (card(view)) } }
    };
    Ok(page(status, frame("Desalination units", Nav::Catalogue, current.as_ref(), markup)))
}

/// The add-to-cart form of a product page (or the sign-in link).
fn buy_form(view: &ProductView, current: Option<&BrowserSession>) -> Markup {
    let max = view.stock.min(LINE_QUANTITY_MAX);
    html! {
        @if view.product.retired { p { "This unit is no longer sold." } }
        @else if view.stock == 0 { p class="stock low" { "Out of stock." } }
        @else if let Some(session) = current {
            form method="post" action="/cart/add" class="inline" {
                (csrf_field(&session.csrf_token))
                input type="hidden" name="product" value=(view.product.id);
                input type="hidden" name="next" value="/cart";
                label { "Quantity " input type="number" name="quantity" value="1" min="1" max=(max) required; }
                button type="submit" { "Add to cart" }
            }
        } @else {
            p { a href="/login" { "Sign in" } " to buy." }
        }
    }
}

/// `GET /shop/products/{id}`: specs, price, stock, images.
pub(crate) async fn detail(shop: Arc<ShopService>, request: Request<ApiState>) -> Result<Reply, ApiError> {
    let current = session(&request).await?;
    let id = request.param("id")?.to_owned();
    let view = match run(current.as_ref(), move || shop.product(&id)).await? {
        Ok(v) => v,
        Err(reply) => return Ok(reply),
    };
    let p = &view.product;
    let markup = html! {
        div class="product" {
            div {
                @for (i, image) in p.images.iter().enumerate() {
                    img src=(image_url(image)) alt={ (p.spec.name) ", picture " (i + 1) } width="320" height="200";
                }
            }
            div {
                p { (p.spec.summary) }
                p class="price" { (money(p.spec.price)) " " small { "per unit, before tax and shipping" } }
                p { @if view.stock == 0 { "Out of stock" } @else { (view.stock) " in stock" } }
                (buy_form(&view, current.as_ref()))
                h2 { "Specifications" }
                dl class="specs" {
                    dt { "Fresh water per day" } dd { (p.spec.capacity_l_per_day) " L" }
                    dt { "Power" } dd { (p.spec.power_w) " W" }
                    dt { "Weight" } dd { (p.spec.weight_kg) " kg" }
                    dt { "Product code" } dd { code { (p.id) } }
                }
                @for paragraph in p.spec.description.split("\n\n") { p { (paragraph) } }
            }
        }
    };
    Ok(page(StatusCode::OK, frame(&p.spec.name, Nav::Catalogue, current.as_ref(), markup)))
}

/// `GET /shop/plans`: the data plans with prices and terms.
pub(crate) async fn plans(shop: Arc<ShopService>, request: Request<ApiState>) -> Result<Reply, ApiError> {
    let current = session(&request).await?;
    let caller = current.as_ref().map(|s| s.caller.clone());
    let loaded = run(current.as_ref(), move || {
        let mine = match &caller {
            Some(caller) => shop.my_subscription(caller)?,
            None => None,
        };
        Ok((shop.plan_offers()?, mine))
    })
    .await?;
    let (offers, mine) = match loaded {
        Ok(o) => o,
        Err(reply) => return Ok(reply),
    };
    // A live subscription is changed from its page, not bought again.
    let live = mine.as_ref().filter(|v| {
        matches!(v.subscription.state, SubscriptionState::Active | SubscriptionState::Incomplete)
            && (v.subscription.state == SubscriptionState::Incomplete || v.access_plan_id.is_some())
    });
    let markup = html! {
        p { "Data plans give access to the fleet's readings through the API, SQL and the dashboard. Prices include no tax." }
        @if offers.is_empty() { p { "No plans are on sale yet." } }
        @if let Some(view) = live.filter(|v| v.subscription.state == SubscriptionState::Active) {
            p class="notice" role="status" { "You subscribe to " (view.subscription.offer_name) ". "
                a href={ "/subscriptions/" (view.subscription.id) } { "Change or cancel your plan" } }
        }
        div class="plans" {
            @for offer in &offers {
                section class="card" aria-labelledby={ "plan-" (offer.id) } {
                    h2 id={ "plan-" (offer.id) } { (offer.name) }
                    p { (offer.description) }
                    p class="price" { (money(offer.monthly)) " / month" }
                    p { "or " (money(offer.annual)) " / year" }
                    dl class="specs" {
                        dt { "Buoys" } dd { (offer.buoys) }
                        dt { "History" } dd { @match offer.history_days { Some(d) => { (d) " days" }, None => "all" } }
                        dt { "Queries per day" } dd { @match offer.daily_query_quota { Some(q) => { (q) }, None => "unlimited" } }
                    }
                    p { "Monthly plans renew each month, annual plans each year; cancel any time, effective at the end of the period." }
                    @match (&current, live.filter(|v| v.subscription.state == SubscriptionState::Active)) {
                        (Some(session), None) if offer.auth_plan_id.is_some() => { (subscribe_form(offer, &session.csrf_token)) }
                        (None, _) => { p { a href="/login" { "Sign in to subscribe" } } }
                        _ => {}
                    }
                }
            }
        }
    };
    Ok(page(StatusCode::OK, frame("Data plans", Nav::Plans, current.as_ref(), markup)))
}

/// `GET /shop/images/{key}`: an uploaded product image (content-addressed, cached forever).
pub(crate) async fn image(shop: Arc<ShopService>, request: Request<ApiState>) -> Result<Reply, ApiError> {
    let key = request.param("key")?.to_owned();
    let (kind, bytes) = crate::api::blocking(move || Ok(shop.image(&key)?)).await?;
    Ok(Reply::bytes(kind.media_type(), bytes)
        .header(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE))
        .header(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'")))
}
