//! Server-rendered pages for people in a browser: login (with its MFA step), MFA enrolment,
//! and the account page with its sessions. Shared with the storefront.
//!
//! Layout:
//! - `layout`: the page frame and small form helpers, as `maud` templates (compiled, and every
//!   interpolated value is HTML-escaped unless wrapped in `PreEscaped`);
//! - `browser`: cookies, the CSRF checks, form bodies, page answers and their headers;
//! - `login`: `GET|POST /login`, `GET|POST /login/mfa`, `POST /logout`;
//! - `account`: `GET /account`, session revocation, `GET /account/mfa` and enrolment;
//! - `shop`: the storefront (catalogue, cart, checkout, payment, orders, invoices, operator
//!   pages), added by [`shop_routes`](crate::shop_routes) over a `ShopService`.
//!
//! Why `maud`: templates are Rust expressions checked by the compiler (a typo in a field is a
//! build error, not a blank page), escaping is the default for every `(value)`, there is no
//! template directory to ship or load at run time, and layouts are plain functions the
//! storefront can call with its own content. `askama` would give the same safety with
//! templates in separate files; at this size one language beats two.
//!
//! Auth: pages take only the session cookie, the API only bearer tokens; a page request that
//! carries both is refused (never mixed). Every state change is a `POST` with the session's
//! synchronizer token (form field `csrf` or header `X-CSRF-Token`), an `Origin` equal to this
//! host's, and no cross-site `Sec-Fetch-Site`; the login forms use a double-submit token in a
//! `__Host-` cookie (there is no session yet).

mod account;
mod browser;
mod layout;
mod login;
pub(crate) mod shop;

pub use browser::{CSRF_HEADER, LOGIN_COOKIE, MFA_COOKIE, PAGE_CSP, SESSION_COOKIE};
pub use shop::{SHOP_CSP, UPLOAD_BODY_BYTES_MAX};

use http::Method;

use crate::api::ApiState;
use crate::http::{Router, ServerError};

/// Adds the pages to `router`.
pub fn routes(router: Router<ApiState>) -> Result<Router<ApiState>, ServerError> {
    router
        .hidden_route(Method::GET, "/login", login::show_form)?
        .hidden_route(Method::POST, "/login", login::submit)?
        .hidden_route(Method::GET, "/login/mfa", login::mfa_form)?
        .hidden_route(Method::POST, "/login/mfa", login::mfa_submit)?
        .hidden_route(Method::POST, "/logout", login::logout)?
        .hidden_route(Method::GET, "/account", account::show)?
        .hidden_route(Method::POST, "/account/sessions/revoke", account::revoke)?
        .hidden_route(Method::POST, "/account/sessions/revoke-others", account::revoke_others)?
        .hidden_route(Method::GET, "/account/mfa", account::mfa_page)?
        .hidden_route(Method::POST, "/account/mfa/enrol", account::mfa_enrol)?
        .hidden_route(Method::POST, "/account/mfa/confirm", account::mfa_confirm)
}
