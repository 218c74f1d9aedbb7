//! The storefront's page frame, replies, redirects and error pages.

use http::{HeaderValue, StatusCode, header};
use maud::{DOCTYPE, Markup, html};

use super::assets;
use crate::api::ApiState;
use crate::auth::{BrowserSession, Caller, Role};
use crate::http::{ApiError, Reply, Request};
use crate::pages::account::{CsrfForm, session_form};
use crate::pages::layout::csrf_field;
use crate::shop::{Money, ShopError, ShopResult};

/// Content-Security-Policy of the shop pages: this origin's stylesheet and images, no script,
/// forms post only here, never framed.
pub const SHOP_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// Longest `next` path accepted.
const NEXT_BYTES_MAX: usize = 512;

/// Which navigation entry is the current page.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Catalogue,
    Plans,
    Cart,
    Orders,
    Subscription,
    Operator,
    None,
}

/// True for staff (operator pages in the navigation).
pub(crate) fn is_staff(session: &BrowserSession) -> bool {
    session.caller.role().rank() >= Role::Operator.rank()
}

/// A whole shop page.
pub(crate) fn frame(title: &str, nav: Nav, session: Option<&BrowserSession>, content: Markup) -> Markup {
    let link = |target: Nav, href: &str, label: &str| {
        html! { li { a href=(href) aria-current=[(nav == target).then_some("page")] { (label) } } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · BlueWave shop" }
                link rel="stylesheet" href=(assets::url("shop.css"));
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="site" {
                    a class="brand" href="/shop" { "BlueWave" }
                    nav aria-label="Shop" {
                        ul {
                            (link(Nav::Catalogue, "/shop", "Units"))
                            (link(Nav::Plans, "/shop/plans", "Data plans"))
                            @if let Some(session) = session {
                                (link(Nav::Cart, "/cart", "Cart"))
                                (link(Nav::Orders, "/orders", "Orders"))
                                (link(Nav::Subscription, "/subscription", "Subscription"))
                                @if is_staff(session) { (link(Nav::Operator, "/operator/products", "Operator")) }
                                li { a href="/account" { "Account" } }
                                li {
                                    form method="post" action="/logout" class="inline" {
                                        (csrf_field(&session.csrf_token))
                                        button type="submit" class="secondary" { "Sign out" }
                                    }
                                }
                            } @else {
                                li { a href="/login" { "Sign in" } }
                            }
                        }
                    }
                }
                main id="main" { h1 { (title) } (content) }
            }
        }
    }
}

/// An HTML answer with the shop CSP.
pub(crate) fn page(status: StatusCode, markup: Markup) -> Reply {
    Reply::bytes("text/html; charset=utf-8", markup.into_string())
        .status(status)
        .header(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(SHOP_CSP))
}

/// `303 See Other` to a path of this site.
pub(crate) fn redirect(location: &str) -> Result<Reply, ApiError> {
    let value = HeaderValue::from_str(location).map_err(ApiError::internal)?;
    Ok(Reply::empty().status(StatusCode::SEE_OTHER).header(header::LOCATION, value))
}

/// `next` if it is a path of this site (`/…`, not `//…` or `/\…`, no scheme, no control
/// characters, at most 512 bytes); else `None` (the caller's default applies).
pub(crate) fn safe_next(next: &str) -> Option<&str> {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && next.len() <= NEXT_BYTES_MAX
        && !next.contains('\\')
        && next.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(next)
}

/// A notice paragraph.
pub(crate) fn notice(text: &str, kind: &str) -> Markup {
    html! { p class={ "notice " (kind) } role=(if kind == "error" { "alert" } else { "status" }) { (text) } }
}

/// Money as shown.
pub(crate) fn money(amount: Money) -> String {
    amount.to_string()
}

/// The page of a shop step refused for the customer's input or the order's state (4xx with
/// the reason); faults stay errors (500, logged).
pub(crate) fn refused(session: Option<&BrowserSession>, error: ShopError) -> Result<Reply, ApiError> {
    let api = ApiError::from(error);
    let status = api.status();
    if status.is_server_error() || status == StatusCode::UNAUTHORIZED {
        return Err(api);
    }
    let title = if status == StatusCode::NOT_FOUND { "Not found" } else { "That did not work" };
    let markup = html! {
        (notice(&api.to_string(), "error"))
        p { a href="/shop" { "Back to the catalogue" } " · " a href="/cart" { "Your cart" } }
    };
    Ok(page(status, frame(title, Nav::None, session, markup)))
}

/// A signed-in `POST` whose form holds only the CSRF token, on the object named by the path's
/// `{id}`: checks the session and the token, then runs `work(caller, id)` like [`run`].
/// `Ok(Err(reply))` is the sign-in redirect or the refusal page; `Ok(Ok((value, id)))` the
/// outcome and the id.
pub(crate) async fn id_action<T: Send + 'static>(
    request: &mut Request<ApiState>,
    work: impl FnOnce(&Caller, &str) -> ShopResult<T> + Send + 'static,
) -> Result<Result<(T, String), Reply>, ApiError> {
    let (_, current) = match session_form::<CsrfForm>(request).await? {
        Ok(f) => f,
        Err(redirect) => return Ok(Err(redirect)),
    };
    let id = request.param("id")?.to_owned();
    let (caller, target) = (current.caller.clone(), id.clone());
    Ok(run(Some(&current), move || work(&caller, &target)).await?.map(|value| (value, id)))
}

/// Runs a blocking shop call: its value, or the refusal page.
pub(crate) async fn run<T: Send + 'static>(
    session: Option<&BrowserSession>,
    work: impl FnOnce() -> ShopResult<T> + Send + 'static,
) -> Result<Result<T, Reply>, ApiError> {
    match crate::api::blocking(move || Ok(work())).await? {
        Ok(value) => Ok(Ok(value)),
        Err(error) => refused(session, error).map(Err),
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_stays_on_this_site() {
        for good in ["/shop", "/orders/abc?x=1", "/"] {
            assert_eq!(safe_next(good), Some(good));
        }
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/\\evil.example",
            "javascript:alert(1)",
            "",
            "shop",
            "/a b",
            "/\u{7f}",
        ] {
            assert_eq!(safe_next(bad), None, "{bad}");
        }
    }
}
