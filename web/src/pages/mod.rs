//! Server-rendered pages for people in a browser: login (with its MFA step), MFA enrolment,
//! and the account page with its sessions. Shared with the storefront.
//!
//! Layout:
//! - `layout`: the page frame and small form helpers, as `maud` templates (compiled, and every
//!   interpolated value is HTML-escaped unless wrapped in `PreEscaped`);
//! - `browser`: cookies, the CSRF checks, form bodies, page answers and their headers;
//! - `login`: `GET|POST /login`, `GET|POST /login/mfa`, `POST /logout`;
//! - `account`: `GET /account`, session revocation, `GET /account/mfa` and enrolment;
//! - `dashboard`: the metrics dashboard (`/dashboard`, its CSV export and live stream);
//! - `assets`: static files embedded in the binary under content-hashed names;
//! - `tokens`: personal API tokens (`/account/tokens`); `usage`: `/account/usage`;
//! - `overview`: `/account/overview`, the account dashboard linking all of the above.
//! - `signup`: signed-out account flows — `/signup`, and the pages of the mailed one-time links
//!   (`/verify`, `/reset-request`, `/reset`, `/email/confirm`);
//! - `settings`: signed-in changes — `/account/password`, `/account/email`, a new
//!   verification link, and the browser step-up form (`/account/reauth`).
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
mod settings;
pub(crate) mod shop;
mod signup;

// The customer's data side (issue 20): the metrics dashboard, its live stream and the static
// assets it loads.
mod assets;
mod dashboard;
mod overview;
mod tokens;
mod usage;

pub use assets::ASSET_CACHE_CONTROL;
pub use browser::{CSRF_HEADER, LOGIN_COOKIE, MFA_COOKIE, PAGE_CSP, SESSION_COOKIE};
pub use dashboard::{
    BUCKETS_TARGET_MAX, BUOYS_SELECTED_MAX, CROSS_SITE_REFUSAL, DASHBOARD_CSP, LATEST_WINDOW_S,
    LIVE_HEADROOM_DIVISOR, LIVE_KEEPALIVE_S, LIVE_LOOKBACK_S, LIVE_POLL_MS, LIVE_ROWS_PER_POLL_MAX,
    LIVE_STREAM_LIFETIME_S, LIVE_STREAMS_MAX, LIVE_STREAMS_PER_ACCOUNT_MAX, METRICS_SELECTED_MAX,
    RANGE_S_MAX,
};
pub use settings::REAUTH_RETURN_PAGES;
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
        .and_then(data_routes)
        .and_then(account_flow_routes)
}

/// The customer's data pages: dashboard, CSV export, live stream, static assets.
fn data_routes(router: Router<ApiState>) -> Result<Router<ApiState>, ServerError> {
    router
        .hidden_route(Method::GET, "/dashboard", dashboard::show)?
        .hidden_route(Method::GET, "/dashboard/export.csv", dashboard::export_csv)?
        .hidden_route(Method::GET, "/dashboard/live", dashboard::live)?
        .hidden_route(Method::GET, "/assets/{name}", assets::serve)?
        .hidden_route(Method::GET, "/account/tokens", tokens::show)?
        .hidden_route(Method::POST, "/account/tokens", tokens::issue)?
        .hidden_route(Method::POST, "/account/tokens/revoke", tokens::revoke)?
        .hidden_route(Method::GET, "/account/usage", usage::show)?
        .hidden_route(Method::GET, "/account/overview", overview::show)
}

/// The pages of sign-up, the one-time links, and the signed-in account settings.
fn account_flow_routes(router: Router<ApiState>) -> Result<Router<ApiState>, ServerError> {
    router
        .hidden_route(Method::GET, "/signup", signup::signup_page)?
        .hidden_route(Method::POST, "/signup", signup::signup_submit)?
        .hidden_route(Method::GET, "/verify", signup::verify_page)?
        .hidden_route(Method::POST, "/verify", signup::verify_submit)?
        .hidden_route(Method::GET, "/reset-request", signup::reset_request_page)?
        .hidden_route(Method::POST, "/reset-request", signup::reset_request_submit)?
        .hidden_route(Method::GET, "/reset", signup::reset_page)?
        .hidden_route(Method::POST, "/reset", signup::reset_submit)?
        .hidden_route(Method::GET, "/email/confirm", signup::email_confirm_page)?
        .hidden_route(Method::POST, "/email/confirm", signup::email_confirm_submit)?
        .hidden_route(Method::GET, "/account/password", settings::password_page)?
        .hidden_route(Method::POST, "/account/password", settings::password_submit)?
        .hidden_route(Method::GET, "/account/email", settings::email_page)?
        .hidden_route(Method::POST, "/account/email", settings::email_submit)?
        .hidden_route(Method::POST, "/account/reauth", settings::reauth_submit)?
        .hidden_route(Method::POST, "/account/verify/resend", settings::resend_submit)
}
