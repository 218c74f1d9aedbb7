//! `GET /cart`, `POST /cart/add|update|remove`, `GET|POST /checkout`.

use std::sync::Arc;

use http::StatusCode;
use maud::{Markup, html};
use serde::Deserialize;

use super::frame::{Nav, frame, money, notice, page, redirect, run, safe_next};
use crate::api::ApiState;
use crate::auth::BrowserSession;
use crate::http::{ApiError, Reply, Request};
use crate::pages::account::{CsrfCarrier, require_session, session_form};
use crate::pages::layout::csrf_field;
use crate::shop::{
    ADDRESS_CITY_BYTES_MAX, ADDRESS_LINE_BYTES_MAX, ADDRESS_NAME_BYTES_MAX, ADDRESS_POSTAL_BYTES_MAX,
    Address, CartView, LINE_QUANTITY_MAX, ShopService, Totals,
};

#[derive(Deserialize)]
pub(crate) struct LineForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    product: String,
    #[serde(default)]
    quantity: String,
    #[serde(default)]
    next: String,
}

impl CsrfCarrier for LineForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(Deserialize)]
pub(crate) struct AddressForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    line1: String,
    #[serde(default)]
    line2: String,
    #[serde(default)]
    city: String,
    #[serde(default)]
    postal_code: String,
    #[serde(default)]
    country: String,
}

impl CsrfCarrier for AddressForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

fn quantity(text: &str) -> Result<u32, ApiError> {
    text.trim()
        .parse::<u32>()
        .map_err(|_| ApiError::InvalidInput(format!("quantity: a whole number 0-{LINE_QUANTITY_MAX}")))
}

/// The money table of a cart or an order.
pub(crate) fn totals_rows(totals: &Totals) -> Markup {
    html! {
        tr { th scope="row" colspan="3" { "Subtotal" } td class="num" { (money(totals.subtotal)) } }
        tr { th scope="row" colspan="3" { "Shipping" } td class="num" { (money(totals.shipping)) } }
        tr { th scope="row" colspan="3" { "Tax (" (totals.tax_bps / 100) "." (format!("{:02}", totals.tax_bps % 100)) " %)" } td class="num" { (money(totals.tax)) } }
        tr { th scope="row" colspan="3" { "Total" } td class="num" { strong { (money(totals.total)) } } }
    }
}

fn cart_table(cart: &CartView, session: &BrowserSession) -> Markup {
    html! {
        div class="table-wrap" {
            table {
                caption class="skip" { "Cart lines" }
                thead { tr { th scope="col" { "Unit" } th scope="col" class="num" { "Price" } th scope="col" { "Quantity" } th scope="col" class="num" { "Line total" } } }
                tbody {
                    @for item in &cart.items {
                        tr data-product=(item.product.id) {
                            td { a href={ "/shop/products/" (item.product.id) } { (item.product.spec.name) }
                                 @if item.quantity > item.stock { br; span class="stock low" { "only " (item.stock) " in stock" } } }
                            td class="num" { (money(item.product.spec.price)) }
                            td {
                                form method="post" action="/cart/update" class="inline" {
                                    (csrf_field(&session.csrf_token))
                                    input type="hidden" name="product" value=(item.product.id);
                                    label { span class="skip" { "Quantity of " (item.product.spec.name) }
                                        input type="number" name="quantity" value=(item.quantity) min="0" max=(LINE_QUANTITY_MAX) required; }
                                    button type="submit" class="secondary" { "Update" }
                                }
                                form method="post" action="/cart/remove" class="inline" {
                                    (csrf_field(&session.csrf_token))
                                    input type="hidden" name="product" value=(item.product.id);
                                    button type="submit" class="secondary" aria-label={ "Remove " (item.product.spec.name) } { "Remove" }
                                }
                            }
                            td class="num" { (money(item.line_total)) }
                        }
                    }
                }
                tfoot { (totals_rows(&cart.totals)) }
            }
        }
    }
}

/// `GET /cart`.
pub(crate) async fn show(shop: Arc<ShopService>, request: Request<ApiState>) -> Result<Reply, ApiError> {
    let current = match require_session(&request).await? {
        Ok(s) => s,
        Err(redirect) => return Ok(redirect),
    };
    let caller = current.caller.clone();
    let cart = match run(Some(&current), move || shop.cart(&caller)).await? {
        Ok(c) => c,
        Err(reply) => return Ok(reply),
    };
    let markup = html! {
        @if cart.items.is_empty() {
            p { "Your cart is empty. " a href="/shop" { "Browse the units" } "." }
        } @else {
            (cart_table(&cart, &current))
            p { a class="button" href="/checkout" { "Check out" } }
        }
    };
    Ok(page(StatusCode::OK, frame("Your cart", Nav::Cart, Some(&current), markup)))
}

/// `POST /cart/add`: `product`, `quantity`, optional `next` (a path of this site; anything
/// else is ignored and the cart is shown).
pub(crate) async fn add(shop: Arc<ShopService>, mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let (form, current) = match session_form::<LineForm>(&mut request).await? {
        Ok(f) => f,
        Err(redirect) => return Ok(redirect),
    };
    let units = quantity(&form.quantity)?;
    if units == 0 {
        return Err(ApiError::InvalidInput(format!("quantity: 1-{LINE_QUANTITY_MAX}")));
    }
    let caller = current.caller.clone();
    let product = form.product.clone();
    if let Err(reply) = run(Some(&current), move || shop.cart_add(&caller, &product, units)).await? {
        return Ok(reply);
    }
    redirect(safe_next(&form.next).unwrap_or("/cart"))
}

/// `POST /cart/update`: sets a line's quantity (0 removes it).
pub(crate) async fn update(
    shop: Arc<ShopService>,
    mut request: Request<ApiState>,
) -> Result<Reply, ApiError> {
    let (form, current) = match session_form::<LineForm>(&mut request).await? {
        Ok(f) => f,
        Err(redirect) => return Ok(redirect),
    };
    let units = quantity(&form.quantity)?;
    let caller = current.caller.clone();
    if let Err(reply) = run(Some(&current), move || shop.cart_set(&caller, &form.product, units)).await? {
        return Ok(reply);
    }
    redirect("/cart")
}

/// `POST /cart/remove`.
pub(crate) async fn remove(
    shop: Arc<ShopService>,
    mut request: Request<ApiState>,
) -> Result<Reply, ApiError> {
    let (form, current) = match session_form::<LineForm>(&mut request).await? {
        Ok(f) => f,
        Err(redirect) => return Ok(redirect),
    };
    let caller = current.caller.clone();
    if let Err(reply) = run(Some(&current), move || shop.cart_set(&caller, &form.product, 0)).await? {
        return Ok(reply);
    }
    redirect("/cart")
}

fn address_form(session: &BrowserSession, values: &AddressForm) -> Markup {
    let field = |name: &str, label: &str, value: &str, max: usize, required: bool, autocomplete: &str| {
        html! {
            label { (label) @if !required { " (optional)" }
                input type="text" name=(name) value=(value) maxlength=(max) required[required] autocomplete=(autocomplete); }
        }
    };
    html! {
        form method="post" action="/checkout" class="stack" aria-label="Shipping address" {
            (csrf_field(&session.csrf_token))
            (field("name", "Full name", &values.name, ADDRESS_NAME_BYTES_MAX, true, "name"))
            (field("line1", "Street and number", &values.line1, ADDRESS_LINE_BYTES_MAX, true, "address-line1"))
            (field("line2", "Address line 2", &values.line2, ADDRESS_LINE_BYTES_MAX, false, "address-line2"))
            (field("city", "City", &values.city, ADDRESS_CITY_BYTES_MAX, true, "address-level2"))
            (field("postal_code", "Postal code", &values.postal_code, ADDRESS_POSTAL_BYTES_MAX, true, "postal-code"))
            (field("country", "Country code (2 letters, e.g. FR)", &values.country, 2, true, "country"))
            button type="submit" { "Place order" }
            p { small { "You pay on the next page. Your units are reserved until you pay or cancel." } }
        }
    }
}

fn empty_address() -> AddressForm {
    AddressForm {
        csrf: String::new(),
        name: String::new(),
        line1: String::new(),
        line2: String::new(),
        city: String::new(),
        postal_code: String::new(),
        country: String::new(),
    }
}

fn checkout_page(
    cart: &CartView,
    session: &BrowserSession,
    values: &AddressForm,
    message: Option<&str>,
) -> Markup {
    html! {
        @if let Some(message) = message { (notice(message, "error")) }
        h2 { "Order summary" }
        div class="table-wrap" {
            table {
                thead { tr { th scope="col" { "Unit" } th scope="col" class="num" { "Price" } th scope="col" class="num" { "Quantity" } th scope="col" class="num" { "Line total" } } }
                tbody { @for item in &cart.items { tr { td { (item.product.spec.name) } td class="num" { (money(item.product.spec.price)) } td class="num" { (item.quantity) } td class="num" { (money(item.line_total)) } } } }
                tfoot { (totals_rows(&cart.totals)) }
            }
        }
        h2 { "Shipping address" }
        (address_form(session, values))
    }
}

/// `GET /checkout`: the order summary (tax and shipping lines) and the address form.
pub(crate) async fn checkout_form(
    shop: Arc<ShopService>,
    request: Request<ApiState>,
) -> Result<Reply, ApiError> {
    let current = match require_session(&request).await? {
        Ok(s) => s,
        Err(redirect) => return Ok(redirect),
    };
    let caller = current.caller.clone();
    let cart = match run(Some(&current), move || shop.cart(&caller)).await? {
        Ok(c) => c,
        Err(reply) => return Ok(reply),
    };
    if cart.items.is_empty() {
        return redirect("/cart");
    }
    let markup = checkout_page(&cart, &current, &empty_address(), None);
    Ok(page(StatusCode::OK, frame("Checkout", Nav::Cart, Some(&current), markup)))
}

/// `POST /checkout`: places the order (stock taken now) and shows it, with its pay button.
pub(crate) async fn checkout(
    shop: Arc<ShopService>,
    mut request: Request<ApiState>,
) -> Result<Reply, ApiError> {
    let (form, current) = match session_form::<AddressForm>(&mut request).await? {
        Ok(f) => f,
        Err(redirect) => return Ok(redirect),
    };
    let address = Address {
        name: form.name.clone(),
        line1: form.line1.clone(),
        line2: form.line2.clone(),
        city: form.city.clone(),
        postal_code: form.postal_code.clone(),
        country: form.country.clone(),
    };
    let caller = current.caller.clone();
    let worker = Arc::clone(&shop);
    let outcome = crate::api::blocking(move || Ok(worker.checkout(&caller, address))).await?;
    match outcome {
        Ok(order) => redirect(&format!("/orders/{}", order.id)),
        // A bad address: the form again, filled in, with the reason.
        Err(error @ crate::shop::ShopError::InvalidInput { .. }) => {
            let caller = current.caller.clone();
            let cart = match run(Some(&current), move || shop.cart(&caller)).await? {
                Ok(c) => c,
                Err(reply) => return Ok(reply),
            };
            let markup = checkout_page(&cart, &current, &form, Some(&error.to_string()));
            Ok(page(StatusCode::BAD_REQUEST, frame("Checkout", Nav::Cart, Some(&current), markup)))
        }
        Err(error) => super::frame::refused(Some(&current), error),
    }
}
