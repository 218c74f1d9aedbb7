//! The storefront's pages: catalogue, product pages, plans, cart, checkout, the test-mode
//! hosted payment page, orders, invoices, the payment webhook, operator pages, and the static
//! assets they use.
//!
//! Layout:
//! - `frame`: the page frame (skip link, navigation, stylesheet), replies, redirects, the
//!   HTML error page of a refused shop step, `next` checking;
//! - `assets`: CSS and images embedded in the binary, served under content-hashed names with
//!   `Cache-Control: public, max-age=31536000, immutable`;
//! - `catalogue`: `GET /shop` (filters), `/shop/products/{id}`, `/shop/plans`, `/shop/images/{key}`;
//! - `cart`: `GET /cart`, `POST /cart/add|update|remove`, `GET|POST /checkout`;
//! - `orders`: `GET /orders`, `/orders/{id}`, `/orders/{id}/confirmation`, `POST
//!   /orders/{id}/pay|cancel`, `GET /invoices/{number}`, the test provider's hosted page
//!   `/pay/test/{id}`, and `POST /shop/webhooks/payments`;
//! - `subscription`: `POST /subscriptions`, `GET /subscription`, `/subscriptions/{id}`,
//!   `GET|POST /subscriptions/{id}/change`, `POST /subscriptions/{id}/renewal|renew`,
//!   `GET /subscription-charges/{id}`, `POST /subscription-charges/{id}/pay`;
//! - `operator`: `/operator/products…` and `/operator/orders…` (admin and operator).
//!
//! Handlers get the [`ShopService`] through the closure that registers them (the API state
//! stays as it is). Pages use the session cookie and CSRF rules of the account pages
//! (`session_form`); the CSP allows this origin's stylesheet and images and nothing else: no
//! script on any shop page.

mod assets;
mod cart;
mod catalogue;
mod frame;
mod operator;
mod orders;
mod subscription;

use std::future::Future;
use std::sync::Arc;

use http::Method;

pub use frame::SHOP_CSP;

use crate::api::ApiState;
use crate::http::{ApiError, Reply, Request, RouteOptions, Router, ServerError};
use crate::shop::ShopService;

/// Longest upload form body (one image plus the form's other fields): 3 MiB.
pub const UPLOAD_BODY_BYTES_MAX: u64 = 3 * 1024 * 1024;

/// A handler that also gets the shop.
fn with<F, Fut>(
    shop: &Arc<ShopService>,
    handler: F,
) -> impl Fn(Request<ApiState>) -> Fut + Send + Sync + 'static
where
    F: Fn(Arc<ShopService>, Request<ApiState>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Reply, ApiError>> + Send + 'static,
{
    let shop = Arc::clone(shop);
    move |request| handler(Arc::clone(&shop), request)
}

/// Adds the storefront's pages, assets and webhook to `router`.
pub fn routes(router: Router<ApiState>, shop: Arc<ShopService>) -> Result<Router<ApiState>, ServerError> {
    let s = &shop;
    router
        .hidden_route(Method::GET, "/static/{file}", assets::serve)?
        .hidden_route(Method::GET, "/shop", with(s, catalogue::list))?
        .hidden_route(Method::GET, "/shop/products/{id}", with(s, catalogue::detail))?
        .hidden_route(Method::GET, "/shop/plans", with(s, catalogue::plans))?
        .hidden_route(Method::GET, "/shop/images/{key}", with(s, catalogue::image))?
        .hidden_route(Method::GET, "/cart", with(s, cart::show))?
        .hidden_route(Method::POST, "/cart/add", with(s, cart::add))?
        .hidden_route(Method::POST, "/cart/update", with(s, cart::update))?
        .hidden_route(Method::POST, "/cart/remove", with(s, cart::remove))?
        .hidden_route(Method::GET, "/checkout", with(s, cart::checkout_form))?
        .hidden_route(Method::POST, "/checkout", with(s, cart::checkout))?
        .hidden_route(Method::GET, "/orders", with(s, orders::list))?
        .hidden_route(Method::GET, "/orders/{id}", with(s, orders::detail))?
        .hidden_route(Method::GET, "/orders/{id}/confirmation", with(s, orders::confirmation))?
        .hidden_route(Method::POST, "/orders/{id}/pay", with(s, orders::pay))?
        .hidden_route(Method::POST, "/orders/{id}/cancel", with(s, orders::cancel))?
        .hidden_route(Method::GET, "/invoices/{number}", with(s, orders::invoice))?
        .hidden_route(Method::GET, "/pay/test/{id}", with(s, orders::test_page))?
        .hidden_route(Method::POST, "/pay/test/{id}", with(s, orders::test_submit))?
        .hidden_route(Method::POST, "/pay/test/{id}/authenticate", with(s, orders::test_authenticate))?
        .hidden_route(Method::POST, "/shop/webhooks/payments", with(s, orders::webhook))?
        .hidden_route(Method::GET, "/operator/products", with(s, operator::products))?
        .hidden_route(Method::POST, "/operator/products", with(s, operator::create_product))?
        .hidden_route(Method::GET, "/operator/products/{id}", with(s, operator::product))?
        .hidden_route(Method::POST, "/operator/products/{id}", with(s, operator::update_product))?
        .hidden_route(Method::POST, "/operator/products/{id}/stock", with(s, operator::set_stock))?
        .hidden_route(Method::POST, "/operator/products/{id}/retire", with(s, operator::retire))?
        .hidden_route_with(
            Method::POST,
            "/operator/products/{id}/images",
            RouteOptions { body_bytes_max: Some(UPLOAD_BODY_BYTES_MAX), request_timeout_ms: None },
            with(s, operator::upload_image),
        )?
        .hidden_route(Method::POST, "/subscriptions", with(s, subscription::subscribe))?
        .hidden_route(Method::GET, "/subscription", with(s, subscription::mine))?
        .hidden_route(Method::GET, "/subscriptions/{id}", with(s, subscription::detail))?
        .hidden_route(Method::GET, "/subscriptions/{id}/change", with(s, subscription::change_form))?
        .hidden_route(Method::POST, "/subscriptions/{id}/change", with(s, subscription::change))?
        .hidden_route(Method::POST, "/subscriptions/{id}/renewal", with(s, subscription::renewal))?
        .hidden_route(Method::POST, "/subscriptions/{id}/renew", with(s, subscription::renew))?
        .hidden_route(Method::GET, "/subscription-charges/{id}", with(s, subscription::charge))?
        .hidden_route(Method::POST, "/subscription-charges/{id}/pay", with(s, subscription::pay_charge))?
        .hidden_route(Method::GET, "/operator/orders", with(s, operator::orders))?
        .hidden_route(Method::POST, "/operator/orders/{id}/{action}", with(s, operator::order_action))
}
