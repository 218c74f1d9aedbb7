//! Operator pages (admin and operator roles): products (create, edit, price, stock, images,
//! retire) and orders (ship, cancel, refund; a refund needs a sign-in within the fresh-auth
//! window). Every change is audited by the shop service.

use std::sync::Arc;

use http::StatusCode;
use maud::{Markup, html};
use serde::Deserialize;

use super::catalogue::image_url;
use super::frame::{Nav, frame, id_action, is_staff, money, notice, page, redirect, refused, run};
use super::orders::date;
use crate::api::ApiState;
use crate::auth::{AuthError, BrowserSession};
use crate::http::{ApiError, Reply, Request};
use crate::pages::account::{CsrfCarrier, CsrfForm, require_session, session_form};
use crate::pages::browser::check_csrf;
use crate::pages::layout::csrf_field;
use crate::shop::{
    IMAGE_BYTES_MAX, Money, OrderState, PRODUCT_DESCRIPTION_BYTES_MAX, PRODUCT_NAME_BYTES_MAX,
    PRODUCT_SUMMARY_BYTES_MAX, ProductSpec, ProductView, ShopError, ShopService,
};

#[derive(Deserialize)]
pub(crate) struct ProductForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    capacity_l_per_day: String,
    #[serde(default)]
    power_w: String,
    #[serde(default)]
    weight_kg: String,
    #[serde(default)]
    price: String,
    #[serde(default)]
    stock: String,
}

impl CsrfCarrier for ProductForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

fn whole(field: &'static str, text: &str) -> Result<u32, ShopError> {
    text.trim().parse().map_err(|_| ShopError::invalid(field, "a whole number"))
}

impl ProductForm {
    fn spec(&self, shop: &ShopService) -> Result<ProductSpec, ShopError> {
        Ok(ProductSpec {
            name: self.name.clone(),
            summary: self.summary.clone(),
            description: self.description.replace("\r\n", "\n"),
            capacity_l_per_day: whole("capacity_l_per_day", &self.capacity_l_per_day)?,
            power_w: whole("power_w", &self.power_w)?,
            weight_kg: whole("weight_kg", &self.weight_kg)?,
            price: Money::parse_major(&self.price, shop.config().currency)?,
        })
    }
}

/// The page of a signed-in staff member, or the redirect / 403.
async fn staff(request: &Request<ApiState>) -> Result<Result<BrowserSession, Reply>, ApiError> {
    let current = match require_session(request).await? {
        Ok(s) => s,
        Err(redirect) => return Ok(Err(redirect)),
    };
    if !is_staff(&current) || current.caller.mfa_enrolment_required() {
        return Err(ApiError::Forbidden("this page needs the operator or admin role".to_owned()));
    }
    Ok(Ok(current))
}

fn product_fields(form: Option<&ProductView>) -> Markup {
    let spec = form.map(|v| &v.product.spec);
    html! {
        label { "Name" input type="text" name="name" required maxlength=(PRODUCT_NAME_BYTES_MAX) value=[spec.map(|s| s.name.as_str())]; }
        label { "Summary" input type="text" name="summary" maxlength=(PRODUCT_SUMMARY_BYTES_MAX) value=[spec.map(|s| s.summary.as_str())]; }
        label { "Description" textarea name="description" rows="5" maxlength=(PRODUCT_DESCRIPTION_BYTES_MAX) { (spec.map_or("", |s| s.description.as_str())) } }
        label { "Capacity (L/day)" input type="number" name="capacity_l_per_day" min="1" required value=[spec.map(|s| s.capacity_l_per_day)]; }
        label { "Power (W)" input type="number" name="power_w" min="0" required value=[spec.map(|s| s.power_w)]; }
        label { "Weight (kg)" input type="number" name="weight_kg" min="0" required value=[spec.map(|s| s.weight_kg)]; }
        label { "Unit price" input type="text" name="price" inputmode="decimal" required value=[spec.map(|s| s.price.major_text())]; }
    }
}

/// `GET /operator/products`: every product, and the create form.
pub(crate) async fn products(shop: Arc<ShopService>, request: Request<ApiState>) -> Result<Reply, ApiError> {
    let current = match staff(&request).await? {
        Ok(s) => s,
        Err(redirect) => return Ok(redirect),
    };
    let views = match run(Some(&current), move || shop.all_products()).await? {
        Ok(v) => v,
        Err(reply) => return Ok(reply),
    };
    let markup = html! {
        p { a href="/operator/orders" { "Orders" } }
        div class="table-wrap" {
            table {
                thead { tr { th scope="col" { "Product" } th scope="col" class="num" { "Price" } th scope="col" class="num" { "Stock" } th scope="col" { "Status" } } }
                tbody {
                    @for v in &views {
                        tr data-product=(v.product.id) {
                            td { a href={ "/operator/products/" (v.product.id) } { (v.product.spec.name) } }
                            td class="num" { (money(v.product.spec.price)) }
                            td class="num" { (v.stock) }
                            td { @if v.product.retired { "retired" } @else { "on sale" } }
                        }
                    }
                }
            }
        }
        h2 { "New product" }
        form method="post" action="/operator/products" class="stack" {
            (csrf_field(&current.csrf_token))
            label { "Product code (a-z, 0-9, -)" input type="text" name="id" required maxlength="64" pattern="[a-z0-9\\-]+"; }
            (product_fields(None))
            label { "Units in stock" input type="number" name="stock" min="0" required value="0"; }
            button type="submit" { "Create" }
        }
    };
    Ok(page(StatusCode::OK, frame("Products", Nav::Operator, Some(&current), markup)))
}

/// `POST /operator/products`: creates a product.
pub(crate) async fn create_product(
    shop: Arc<ShopService>,
    mut request: Request<ApiState>,
) -> Result<Reply, ApiError> {
    let (form, current) = match session_form::<ProductForm>(&mut request).await? {
        Ok(f) => f,
        Err(redirect) => return Ok(redirect),
    };
    let caller = current.caller.clone();
    let worker = Arc::clone(&shop);
    let result = run(Some(&current), move || {
        let spec = form.spec(&worker)?;
        let stock = whole("stock", &form.stock)?;
        worker.create_product(&caller, &form.id, spec, stock)
    })
    .await?;
    match result {
        Ok(product) => redirect(&format!("/operator/products/{}", product.id)),
        Err(reply) => Ok(reply),
    }
}

/// `GET /operator/products/{id}`: edit, stock, images, retire.
pub(crate) async fn product(shop: Arc<ShopService>, request: Request<ApiState>) -> Result<Reply, ApiError> {
    let current = match staff(&request).await? {
        Ok(s) => s,
        Err(redirect) => return Ok(redirect),
    };
    let id = request.param("id")?.to_owned();
    let view = match run(Some(&current), move || shop.product(&id)).await? {
        Ok(v) => v,
        Err(reply) => return Ok(reply),
    };
    let token = current.csrf_token.as_str();
    let base = format!("/operator/products/{}", view.product.id);
    let markup = html! {
        p { a href="/operator/products" { "All products" } " · " a href={ "/shop/products/" (view.product.id) } { "Shop page" } }
        @if view.product.retired { (notice("Retired: not listed or sold.", "")) }
        form method="post" action=(base) class="stack" aria-label="Edit product" {
            (csrf_field(token))
            (product_fields(Some(&view)))
            button type="submit" { "Save" }
        }
        h2 { "Stock" }
        form method="post" action={ (base) "/stock" } class="inline" {
            (csrf_field(token))
            label { "Units in stock " input type="number" name="stock" min="0" required value=(view.stock); }
            button type="submit" { "Set stock" }
        }
        h2 { "Images" }
        @for image in &view.product.images { img src=(image_url(image)) alt="" width="160" height="100"; }
        form method="post" action={ (base) "/images" } enctype="multipart/form-data" class="inline" {
            (csrf_field(token))
            label { "PNG, JPEG or WebP, at most " (IMAGE_BYTES_MAX / 1024 / 1024) " MiB "
                input type="file" name="image" accept="image/png,image/jpeg,image/webp" required; }
            button type="submit" { "Upload" }
        }
        @if !view.product.retired {
            h2 { "Retire" }
            form method="post" action={ (base) "/retire" } {
                (csrf_field(token))
                button type="submit" class="danger" { "Retire this product" }
            }
        }
    };
    Ok(page(StatusCode::OK, frame(&view.product.spec.name, Nav::Operator, Some(&current), markup)))
}

/// `POST /operator/products/{id}`: new terms and price.
pub(crate) async fn update_product(
    shop: Arc<ShopService>,
    mut request: Request<ApiState>,
) -> Result<Reply, ApiError> {
    let (form, current) = match session_form::<ProductForm>(&mut request).await? {
        Ok(f) => f,
        Err(redirect) => return Ok(redirect),
    };
    let id = request.param("id")?.to_owned();
    let caller = current.caller.clone();
    let worker = Arc::clone(&shop);
    let target = id.clone();
    match run(Some(&current), move || worker.update_product(&caller, &target, form.spec(&worker)?)).await? {
        Ok(_) => redirect(&format!("/operator/products/{id}")),
        Err(reply) => Ok(reply),
    }
}

/// `POST /operator/products/{id}/stock`.
pub(crate) async fn set_stock(
    shop: Arc<ShopService>,
    mut request: Request<ApiState>,
) -> Result<Reply, ApiError> {
    let (form, current) = match session_form::<ProductForm>(&mut request).await? {
        Ok(f) => f,
        Err(redirect) => return Ok(redirect),
    };
    let id = request.param("id")?.to_owned();
    let caller = current.caller.clone();
    let target = id.clone();
    match run(Some(&current), move || shop.set_stock(&caller, &target, whole("stock", &form.stock)?)).await? {
        Ok(()) => redirect(&format!("/operator/products/{id}")),
        Err(reply) => Ok(reply),
    }
}

/// `POST /operator/products/{id}/retire`.
pub(crate) async fn retire(
    shop: Arc<ShopService>,
    mut request: Request<ApiState>,
) -> Result<Reply, ApiError> {
    match id_action(&mut request, move |caller, id| shop.retire_product(caller, id)).await? {
        Ok(((), id)) => redirect(&format!("/operator/products/{id}")),
        Err(reply) => Ok(reply),
    }
}

/// Most parts read from an upload form.
const MULTIPART_PARTS_MAX: usize = 8;

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The fields of a `multipart/form-data` body: (name, bytes), at most [`MULTIPART_PARTS_MAX`].
fn multipart(content_type: &str, body: &[u8]) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
    let bad = || ApiError::InvalidInput("malformed multipart/form-data body".to_owned());
    let (kind, params) = content_type.split_once(';').ok_or_else(bad)?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return Err(ApiError::UnsupportedMediaType { expected: "multipart/form-data" });
    }
    let boundary = params
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches('"'))
        .filter(|b| !b.is_empty() && b.len() <= 70)
        .ok_or_else(bad)?;
    let delimiter = format!("--{boundary}");
    let mut rest = body.strip_prefix(delimiter.as_bytes()).ok_or_else(bad)?;
    let next_delimiter = format!("\r\n--{boundary}");
    let mut parts = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Ok(parts); // the closing delimiter
        }
        rest = rest.strip_prefix(b"\r\n").ok_or_else(bad)?;
        let head_end = find(rest, b"\r\n\r\n").ok_or_else(bad)?;
        let head = std::str::from_utf8(rest.get(..head_end).ok_or_else(bad)?).map_err(|_| bad())?;
        let name = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
            .and_then(|l| l.split(';').find_map(|p| p.trim().strip_prefix("name=")))
            .map(|n| n.trim_matches('"').to_owned())
            .ok_or_else(bad)?;
        let content = rest.get(head_end + 4..).ok_or_else(bad)?;
        let end = find(content, next_delimiter.as_bytes()).ok_or_else(bad)?;
        if parts.len() >= MULTIPART_PARTS_MAX {
            return Err(bad());
        }
        parts.push((name, content.get(..end).ok_or_else(bad)?.to_vec()));
        rest = content.get(end + next_delimiter.len()..).ok_or_else(bad)?;
    }
}

/// `POST /operator/products/{id}/images` (`multipart/form-data`: `csrf`, `image`). The image's
/// type and size are checked from its bytes by the shop.
pub(crate) async fn upload_image(
    shop: Arc<ShopService>,
    mut request: Request<ApiState>,
) -> Result<Reply, ApiError> {
    let content_type = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = request.bytes().await?;
    let fields = multipart(&content_type, &body)?;
    let current = match require_session(&request).await? {
        Ok(s) => s,
        Err(redirect) => return Ok(redirect),
    };
    let csrf =
        fields.iter().find(|(n, _)| n == "csrf").and_then(|(_, v)| std::str::from_utf8(v).ok()).unwrap_or("");
    check_csrf(&request, &current, Some(csrf))?;
    let image = fields
        .into_iter()
        .find(|(n, _)| n == "image")
        .map(|(_, v)| v)
        .ok_or_else(|| ApiError::InvalidInput("image: a file is required".to_owned()))?;
    let id = request.param("id")?.to_owned();
    let caller = current.caller.clone();
    let target = id.clone();
    match run(Some(&current), move || shop.add_image(&caller, &target, &image)).await? {
        Ok(_) => redirect(&format!("/operator/products/{id}")),
        Err(reply) => Ok(reply),
    }
}

/// `GET /operator/orders`: the newest orders with their actions.
pub(crate) async fn orders(shop: Arc<ShopService>, request: Request<ApiState>) -> Result<Reply, ApiError> {
    let current = match staff(&request).await? {
        Ok(s) => s,
        Err(redirect) => return Ok(redirect),
    };
    let caller = current.caller.clone();
    let orders = match run(Some(&current), move || shop.all_orders(&caller, None)).await? {
        Ok(o) => o,
        Err(reply) => return Ok(reply),
    };
    let token = current.csrf_token.as_str();
    let action = |id: &str, verb: &str, label: &str| {
        html! {
            form method="post" action={ "/operator/orders/" (id) "/" (verb) } class="inline" {
                (csrf_field(token))
                button type="submit" class=(if verb == "refund" { "danger" } else { "secondary" }) { (label) }
            }
        }
    };
    let markup = html! {
        p { "Refunds need a sign-in within the last 10 minutes." }
        div class="table-wrap" {
            table {
                thead { tr { th scope="col" { "Order" } th scope="col" { "Placed" } th scope="col" { "Customer" } th scope="col" { "State" } th scope="col" class="num" { "Total" } th scope="col" { "Actions" } } }
                tbody {
                    @for o in &orders {
                        tr data-order=(o.id) {
                            td { a href={ "/orders/" (o.id) } { code { (o.id.get(..8).unwrap_or(&o.id)) } } }
                            td { (date(o.created_ms)) }
                            td { (o.email) }
                            td class="state" { (o.state.as_str()) }
                            td class="num" { (money(o.totals.total)) }
                            td {
                                @match o.state {
                                    OrderState::PendingPayment => { (action(&o.id, "cancel", "Cancel")) }
                                    OrderState::Paid => { (action(&o.id, "ship", "Mark shipped")) (action(&o.id, "refund", "Refund")) }
                                    OrderState::Shipped => { (action(&o.id, "refund", "Refund")) }
                                    _ => {}
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(StatusCode::OK, frame("Orders", Nav::Operator, Some(&current), markup)))
}

/// `POST /operator/orders/{id}/{ship|cancel|refund}`.
pub(crate) async fn order_action(
    shop: Arc<ShopService>,
    mut request: Request<ApiState>,
) -> Result<Reply, ApiError> {
    let (_, current) = match session_form::<CsrfForm>(&mut request).await? {
        Ok(f) => f,
        Err(redirect) => return Ok(redirect),
    };
    let id = request.param("id")?.to_owned();
    let action = request.param("action")?.to_owned();
    let caller = current.caller.clone();
    let outcome = crate::api::blocking(move || {
        Ok(match action.as_str() {
            "ship" => shop.ship_order(&caller, &id),
            "cancel" => shop
                .require_staff(&caller, "shop.order.cancel")
                .and_then(|()| shop.cancel_order(&caller, &id)),
            "refund" => shop.refund_order(&caller, &id),
            _ => Err(ShopError::NotFound { kind: "action" }),
        })
    })
    .await?;
    match outcome {
        Ok(_) => redirect("/operator/orders"),
        Err(ShopError::Auth(AuthError::StepUpRequired { .. })) => {
            let markup = html! {
                (notice("A refund needs a recent sign-in. Sign in again, then refund.", "error"))
                p { a href="/login" { "Sign in again" } }
            };
            Ok(page(StatusCode::UNAUTHORIZED, frame("Sign in again", Nav::Operator, Some(&current), markup)))
        }
        Err(error) => refused(Some(&current), error),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::multipart;

    #[test]
    fn multipart_fields() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\ntok\r\n--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n--\r\n--XyZ--\r\n";
        let parts = multipart("multipart/form-data; boundary=XyZ", body).unwrap();
        assert_eq!(
            parts,
            vec![("csrf".into(), b"tok".to_vec()), ("image".into(), b"\x89PNG\r\n--".to_vec())]
        );
        assert!(multipart("multipart/form-data; boundary=XyZ", b"--XyZ\r\nbroken").is_err());
        assert!(multipart("text/plain; boundary=XyZ", body).is_err());
    }
}
