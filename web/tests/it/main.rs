//! Integration tests of `bluewave-web` (one test binary, modules by concern):
//!
//! - `http`: the HTTPS framework against real servers on loopback — TLS, HTTP/1.1 and HTTP/2,
//!   routing, error answers, limits, timeouts, graceful shutdown, streaming, security headers,
//!   OpenAPI and the docs page;
//! - `api`: the REST endpoints over real HTTPS with real auth, query service and engine;
//! - `csv_export`: formula cells neutralised in CSV answers, numbers kept;
//! - `dashboard`: the metrics dashboard, its CSV export, live stream and static script;
//! - `tokens`: personal API tokens, daily query usage, the account overview;
//! - `runaway`: query timeouts, stalls, table-function caps and the streamed error record over
//!   HTTPS, and other users answered while runaway queries run;
//! - `auth`: accounts, sessions, limits, RBAC, plans, device tokens through `AuthService`;
//! - `forgery`: the token forgery suite, one exact refusal per attack;
//! - `security`: the security suite over real HTTPS, by attack vector (forgery, refresh reuse
//!   and races, brute force, function- and object-level authorization, SQL abuse, malformed
//!   requests);
//! - `accounts`: accounts for people: immediate revocation of a session's access tokens, the
//!   fresh-auth gate and its step-up hint (manual auth clock);
//! - `pages`: the browser pages as HTML — forms, tokens, headers, cookies, fixation, CSRF,
//!   timeouts, MFA in the browser;
//! - `mfa_review`: the findings of the first accounts security review (sessions opened before
//!   MFA enrolment, racing and guessing MFA codes, logins racing a password change);
//! - `influx`: InfluxDB v1/v2 line-protocol writes over HTTPS — 204 when durable, rows read
//!   back, numbered refusals, atomic bodies, device scope, 401/403/413/415;
//! - `line_protocol`: the InfluxDB line-protocol parser — round trips with hostile characters,
//!   per-line errors and line numbers, limits, arbitrary bytes never panic;
//! - `account_flows`: sign-up, the mailed one-time links (verification, reset, email change)
//!   read from the outbox, the unverified account's limits, password change, an admin ending
//!   an account's sessions, and their pages with the browser step-up form;
//! - `audit`: the hash-chained audit log file: tamper detection, torn tails, paging, codec;
//! - `shop_browser`: a purchase in headless Chromium over WebDriver (`fantoccini`), with
//!   screenshots; skipped with a message only without Chromium and `BLUEWAVE_BROWSER_TESTS=1`;
//! - `shop_pages`: the storefront over real HTTPS as HTML — pages, assets, a purchase with the
//!   test cards, CSRF, `next`, object-level authorization, roles, escaping, limits, uploads,
//!   the signed webhook;
//! - `shop_site`: the storefront server and a cookie-keeping form client for those tests;
//! - `shop_store`: the shop's core on a real `shop.redb` — the oversell race, the order state
//!   machine, the signed webhook, invoice numbers, refunds behind fresh auth;
//! - `auth_fixtures`: shared set-up (real store, real keys in a tempdir).

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns are test code too

mod account_flows;
mod accounts;
mod api;
mod audit;
mod auth;
mod auth_fixtures;
mod csv_export;
mod dashboard;
mod forgery;
mod http;
mod influx;
mod line_protocol;
mod mfa_review;
mod pages;
mod runaway;
mod security;
mod shop_browser;
mod shop_pages;
mod shop_site;
mod shop_store;
mod shop_subscriptions;
mod tokens;
