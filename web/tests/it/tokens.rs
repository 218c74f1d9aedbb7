//! Personal API tokens, daily query usage and the account overview over real HTTPS: a token
//! is shown once, works as a bearer token on the API under the owner's plan, shows its last
//! use, and is refused at once after revocation; another account's token id is 404; issuing
//! needs a fresh sign-in (manual auth clock) and a data-reading role; usage counts are exact
//! (page views, exports, stream openings and API reads each count one; the quota's end gets
//! the typed 429 and a page that says so; another site's navigation counts nothing and gets
//! a 403). A token is refused on session and account management (403), after its owner's
//! password change, disable or move to staff, and after its expiry on the auth clock (then
//! not counted active); its uses reach the store only through the flush; a failed audit
//! write leaves no token.

use bluewave_web::{AuthClock, Method, StatusCode};
use scraper::{Html, Selector};
use serde_json::json;

use crate::api::{ADMIN, Answer, Api, fast_config};
use crate::auth_fixtures::now_s;
use crate::dashboard::{Stream, browser_session, page, setup};

const ORIGIN: (&str, &str) = ("origin", "https://localhost");
const CUSTOMER: &str = "customer@example.org";

fn doc(answer: &Answer) -> Html {
    Html::parse_document(&String::from_utf8_lossy(&answer.body))
}

fn texts(html: &Html, css: &str) -> Vec<String> {
    html.select(&Selector::parse(css).unwrap())
        .map(|e| e.text().collect::<String>().trim().to_owned())
        .collect()
}

fn attrs(html: &Html, css: &str, name: &str) -> Vec<String> {
    html.select(&Selector::parse(css).unwrap())
        .filter_map(|e| e.value().attr(name).map(str::to_owned))
        .collect()
}

async fn csrf(api: &Api, cookie: &str) -> String {
    let answer = page(api, "/account/tokens", cookie).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    attrs(&doc(&answer), "form input[name=csrf]", "value")[0].clone()
}

async fn issue(api: &Api, cookie: &str, name: &str) -> Answer {
    let token = csrf(api, cookie).await;
    api.form(
        "/account/tokens",
        &[("cookie", cookie), ORIGIN],
        &format!("csrf={token}&name={name}&ttl_days=90"),
    )
    .await
}

#[tokio::test]
async fn a_token_is_shown_once_reads_under_the_plan_and_is_refused_at_once_when_revoked() {
    let api = Api::start().await;
    setup(&api, None).await;
    let cookie = browser_session(&api, CUSTOMER).await;
    let issued = issue(&api, &cookie, "nightly+export").await;
    assert_eq!(issued.status, StatusCode::OK, "{:?}", issued.body);
    let token = texts(&doc(&issued), "#new-token")[0].clone();
    assert!(token.starts_with("bwp_") && token.len() == 4 + 32 + 1 + 43, "{token}");

    // Listed by name, never shown again.
    let list = page(&api, "/account/tokens", &cookie).await;
    assert!(!String::from_utf8_lossy(&list.body).contains(&token));
    let html = doc(&list);
    let ids = attrs(&html, "tr[data-token]", "data-token");
    assert_eq!(ids.len(), 1);
    let cells = texts(&html, "tr[data-token] td");
    assert_eq!(
        (cells[0].as_str(), cells[2].as_str(), cells[4].as_str()),
        ("nightly export", "never", "active")
    );

    // A bearer token for scripts, under the owner's plan.
    let read = api.get("/api/telemetry?buoy_id=buoy-a&metric=salinity_psu", &token).await;
    assert_eq!(read.status, StatusCode::OK, "{:?}", read.body);
    let values: Vec<f64> =
        read.json()["rows"].as_array().unwrap().iter().map(|r| r["value"].as_f64().unwrap()).collect();
    assert_eq!(values, [1.0, 2.0, 6.0, 10.0]);
    let outside = api.get("/api/telemetry?buoy_id=buoy-b", &token).await;
    assert_eq!(
        (outside.status, outside.json()),
        (StatusCode::NOT_FOUND, json!({ "error": "not_found", "message": "no such buoy" }))
    );
    // A token is not a credential for pages (bearer on a page is refused).
    let with_bearer = api.request(Method::GET, "/account/tokens", Some(&token), &[], None).await;
    assert_eq!(with_bearer.status, StatusCode::BAD_REQUEST);
    let cells = texts(&doc(&page(&api, "/account/tokens", &cookie).await), "tr[data-token] td");
    assert_ne!(cells[2], "never");

    // A forged secret for the live token's id is refused (the real one still works).
    let forged = format!("{}_{}", &token[..4 + 32], "A".repeat(43));
    let refused = api.get("/api/telemetry?buoy_id=buoy-a", &forged).await;
    assert_eq!(
        (refused.status, refused.json()["error"].clone()),
        (StatusCode::UNAUTHORIZED, json!("unauthorized"))
    );
    assert_eq!(api.get("/api/telemetry?buoy_id=buoy-a", &token).await.status, StatusCode::OK);
    // A personal token reads data, never manages sessions or accounts.
    let account_routes = [
        (Method::GET, "/api/auth/sessions".to_owned()),
        (Method::DELETE, "/api/auth/sessions/anything".to_owned()),
        (Method::POST, "/api/auth/logout-all".to_owned()),
        (Method::GET, "/api/rbac/users".to_owned()),
        (Method::GET, "/api/rbac/plans".to_owned()),
    ];
    for (method, path) in account_routes {
        let answer = api.request(method.clone(), &path, Some(&token), &[], None).await;
        assert_eq!(
            (answer.status, answer.json()),
            (
                StatusCode::FORBIDDEN,
                json!({ "error": "forbidden", "message": bluewave_web::PERSONAL_TOKEN_REFUSAL })
            ),
            "{method} {path}"
        );
    }
    assert_eq!(api.get("/api/usage", &token).await.status, StatusCode::OK);

    // Another account cannot revoke it (404), the owner can; the next use is refused.
    let analyst = browser_session(&api, "analyst@example.org").await;
    let analyst_csrf = csrf(&api, &analyst).await;
    let foreign = api
        .form(
            "/account/tokens/revoke",
            &[("cookie", &analyst), ORIGIN],
            &format!("csrf={analyst_csrf}&id={}", ids[0]),
        )
        .await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/api/telemetry?buoy_id=buoy-a", &token).await.status, StatusCode::OK);
    let own_csrf = csrf(&api, &cookie).await;
    let revoked = api
        .form(
            "/account/tokens/revoke",
            &[("cookie", &cookie), ORIGIN],
            &format!("csrf={own_csrf}&id={}", ids[0]),
        )
        .await;
    assert_eq!((revoked.status, revoked.header("location")), (StatusCode::SEE_OTHER, "/account/tokens"));
    let refused = api.get("/api/telemetry?buoy_id=buoy-a", &token).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{:?}", refused.body);
    assert_eq!(refused.json()["error"], "unauthorized");
    let cells = texts(&doc(&page(&api, "/account/tokens", &cookie).await), "tr[data-token] td");
    assert_eq!(cells[4], "revoked");
    // Garbage is refused the same way.
    assert_eq!(api.get("/api/telemetry", "bwp_nonsense").await.status, StatusCode::UNAUTHORIZED);
    // Without the CSRF token: refused.
    let no_csrf = api.form("/account/tokens", &[("cookie", &cookie), ORIGIN], "name=x&ttl_days=90").await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    // Staff hold no personal tokens.
    let admin = browser_session(&api, ADMIN).await;
    let staff = issue(&api, &admin, "ops").await;
    assert_eq!(
        (staff.status, staff.json()),
        (
            StatusCode::FORBIDDEN,
            json!({ "error": "forbidden", "message": "permission api_tokens:issue required" })
        )
    );
}

#[tokio::test]
async fn issuing_a_token_needs_a_fresh_sign_in() {
    let clock = AuthClock::manual(now_s());
    let api = Api::start_with(bluewave_web::AuthConfig { clock: clock.clone(), ..fast_config(10_000) }).await;
    setup(&api, None).await;
    let cookie = browser_session(&api, CUSTOMER).await;
    clock.advance_s(601);
    let stale = issue(&api, &cookie, "late").await;
    assert_eq!(stale.status, StatusCode::FORBIDDEN);
    assert_eq!(
        texts(&doc(&stale), "[role=alert]"),
        ["Issuing a token needs a recent sign-in. Sign in again, then issue it."]
    );
    assert!(
        attrs(&doc(&page(&api, "/account/tokens", &cookie).await), "tr[data-token]", "data-token").is_empty()
    );
    let fresh = browser_session(&api, CUSTOMER).await;
    assert_eq!(issue(&api, &fresh, "now").await.status, StatusCode::OK);
}

async fn usage(api: &Api, token: &str) -> serde_json::Value {
    let answer = api.get("/api/usage", token).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    answer.json()
}

#[tokio::test]
async fn usage_counts_each_query_exactly_and_the_quota_ends_with_a_page() {
    let api = Api::start().await;
    setup(&api, Some(4)).await;
    let cookie = browser_session(&api, CUSTOMER).await;
    let issued = issue(&api, &cookie, "usage").await;
    let token = texts(&doc(&issued), "#new-token")[0].clone();
    let first = usage(&api, &token).await;
    assert_eq!(
        (first["used"].clone(), first["quota"].clone(), first["remaining"].clone()),
        (json!(0), json!(4), json!(4))
    );
    assert_eq!(first["history"].as_array().unwrap().len(), 7);
    let range = format!("start={}&end={}", crate::api::T0, crate::api::T0 + 3_600_000_000_000);
    // Another site's navigation (a Lax cookie rides along) spends nothing: 403 with the reason.
    for path in ["/dashboard", "/dashboard/export.csv", "/dashboard/live"] {
        for site in ["cross-site", "same-site"] {
            let answer = api
                .request(
                    Method::GET,
                    &format!("{path}?buoy=buoy-a&metric=ph&{range}"),
                    None,
                    &[("cookie", &cookie), ("sec-fetch-site", site)],
                    None,
                )
                .await;
            assert_eq!(
                (answer.status, answer.json()),
                (
                    StatusCode::FORBIDDEN,
                    json!({ "error": "forbidden", "message": bluewave_web::CROSS_SITE_REFUSAL })
                ),
                "{path} {site}"
            );
        }
    }
    assert_eq!(usage(&api, &token).await["used"], 0);
    // 1: a page view (same-origin); 2: a CSV export (typed URL); 3: a live stream's opening
    // (no Sec-Fetch-Site); 4: an API read.
    for (path, site) in [("/dashboard", "same-origin"), ("/dashboard/export.csv", "none")] {
        let answer = api
            .request(
                Method::GET,
                &format!("{path}?buoy=buoy-a&metric=ph&{range}"),
                None,
                &[("cookie", &cookie), ("sec-fetch-site", site)],
                None,
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
    }
    let mut stream = Stream::open(&api, "/dashboard/live?buoy=buoy-a&metric=ph", &cookie).await;
    assert_eq!(stream.status, StatusCode::OK);
    assert!(stream.until(": connected").await);
    assert_eq!(api.get("/api/telemetry?buoy_id=buoy-a", &token).await.status, StatusCode::OK);
    let used = usage(&api, &token).await;
    assert_eq!((used["used"].clone(), used["remaining"].clone()), (json!(4), json!(0)));
    assert_eq!(used["history"].as_array().unwrap().last().unwrap()["used"], 4);
    // The fifth: a typed 429 on the API, a page on the dashboard; neither is counted.
    let api_refused = api.get("/api/telemetry?buoy_id=buoy-a", &token).await;
    assert_eq!(
        (api_refused.status, api_refused.json()["error"].clone()),
        (StatusCode::TOO_MANY_REQUESTS, json!("rate_limited"))
    );
    let page_refused = page(&api, &format!("/dashboard?buoy=buoy-a&metric=ph&{range}"), &cookie).await;
    assert_eq!(page_refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(texts(&doc(&page_refused), "[role=alert]"), ["Your plan's daily query quota is used up."]);
    let shown = doc(&page(&api, "/account/usage", &cookie).await);
    assert_eq!(
        (texts(&shown, "#used"), texts(&shown, "#quota"), texts(&shown, "#remaining")),
        (vec!["4".to_owned()], vec!["4".to_owned()], vec!["0".to_owned()])
    );
    assert_eq!(usage(&api, &token).await["used"], 4);
}

#[tokio::test]
async fn the_account_overview_links_every_part_of_the_account() {
    let api = Api::start().await;
    setup(&api, Some(10)).await;
    let cookie = browser_session(&api, CUSTOMER).await;
    let answer = page(&api, "/account/overview", &cookie).await;
    assert_eq!(answer.status, StatusCode::OK);
    let html = doc(&answer);
    assert_eq!(
        attrs(&html, "nav ul.overview a", "href"),
        ["/account", "/account/mfa", "/account/tokens", "/account/usage", "/dashboard"]
    );
    // Every link is a route this server answers (no 404 behind the overview).
    for href in attrs(&html, "nav ul.overview a", "href") {
        assert_eq!(page(&api, &href, &cookie).await.status, StatusCode::OK, "{href}");
    }
    let items = texts(&html, "nav ul.overview li");
    assert!(items.contains(&"Subscription — A data plan covering 2 buoys.".to_owned()), "{items:?}");
    assert!(items.contains(&"Query usage — 0 of 10 today.".to_owned()), "{items:?}");
    // Staff see no data-reader links.
    let admin = browser_session(&api, ADMIN).await;
    let staff = doc(&page(&api, "/account/overview", &admin).await);
    assert_eq!(attrs(&staff, "nav ul.overview a", "href"), ["/account", "/account/mfa"]);
}

#[test]
fn an_accounts_dead_token_records_are_pruned_at_the_cap_and_its_live_tokens_are_capped() {
    use bluewave_web::{API_TOKEN_RECORDS_PER_USER_MAX, API_TOKENS_PER_USER_MAX, AuthError, Role};
    let fixture = crate::auth_fixtures::Fixture::new();
    let (caller, _) = fixture.user("scripts@example.org", Role::Customer);
    let auth = &fixture.auth;
    for i in 0..API_TOKEN_RECORDS_PER_USER_MAX + 5 {
        let issued = auth.issue_api_token(&caller, &format!("t{i}"), 30).unwrap();
        auth.revoke_api_token(&caller, &issued.info.id).unwrap();
    }
    let kept = auth.list_api_tokens(&caller).unwrap();
    assert_eq!(kept.len(), API_TOKEN_RECORDS_PER_USER_MAX);
    let newest = format!("t{}", API_TOKEN_RECORDS_PER_USER_MAX + 4);
    assert!(kept.iter().any(|t| t.name == newest), "the newest record stays");
    let live: Vec<String> = (0..API_TOKENS_PER_USER_MAX)
        .map(|i| auth.issue_api_token(&caller, &format!("live{i}"), 90).unwrap().info.id)
        .collect();
    assert!(matches!(auth.issue_api_token(&caller, "one more", 90), Err(AuthError::LimitReached { .. })));
    let listed = auth.list_api_tokens(&caller).unwrap();
    assert_eq!(listed.len(), API_TOKEN_RECORDS_PER_USER_MAX);
    assert!(live.iter().all(|id| listed.iter().any(|t| &t.id == id && t.revoked_ms.is_none())));
    // A revoked token's verification and another account's revocation.
    let (other, _) = fixture.user("other@example.org", Role::Analyst);
    assert!(matches!(auth.revoke_api_token(&other, &live[0]), Err(AuthError::NotFound { .. })));
}

#[test]
fn a_tokens_use_is_noted_in_memory_and_written_only_by_the_flush() {
    use crate::auth_fixtures::{Fixture, no_mfa};
    use bluewave_web::Role;
    let fixture = Fixture::new();
    let (caller, _) = fixture.user("scripts@example.org", Role::Customer);
    let issued = fixture.auth.issue_api_token(&caller, "t", 30).unwrap();
    let id = issued.info.id.clone();
    fixture.auth.verify_api_token(issued.token.expose()).unwrap();
    // The owner's list shows the use at once (from memory)…
    let listed = fixture.auth.list_api_tokens(&caller).unwrap();
    assert!(listed[0].last_used_ms.is_some());
    // …but the request path wrote nothing: a reopened store has no use recorded.
    let fixture = fixture.reopen(no_mfa());
    let listed = fixture.auth.list_api_tokens(&caller).unwrap();
    assert_eq!((listed[0].id.as_str(), listed[0].last_used_ms), (id.as_str(), None));
    // A flush writes the noted uses in one transaction; they survive a reopen.
    fixture.auth.verify_api_token(issued.token.expose()).unwrap();
    assert!(fixture.auth.api_token_uses_due());
    assert!(!fixture.auth.api_token_uses_due(), "handed out once until the flush ends");
    assert_eq!(fixture.auth.flush_api_token_uses().unwrap(), 1);
    assert_eq!(fixture.auth.flush_api_token_uses().unwrap(), 0);
    let fixture = fixture.reopen(no_mfa());
    assert!(fixture.auth.list_api_tokens(&caller).unwrap()[0].last_used_ms.is_some());
}

#[test]
fn a_token_is_refused_after_its_owners_password_change_disable_or_move_to_staff() {
    use crate::auth_fixtures::{Fixture, USER_PASSWORD};
    use bluewave_web::{AuthError, Role, Secret, TokenRefusal, UserStatus};
    let fixture = Fixture::new();
    let auth = &fixture.auth;
    let admin = fixture.admin();
    let mut tokens = Vec::new();
    for email in ["password@example.org", "disabled@example.org", "staff@example.org"] {
        let (caller, _) = fixture.user(email, Role::Customer);
        let issued = auth.issue_api_token(&caller, "t", 30).unwrap();
        assert!(auth.verify_api_token(issued.token.expose()).is_ok());
        tokens.push((caller, issued.token));
    }
    auth.change_password(
        &tokens[0].0,
        &Secret::new(USER_PASSWORD),
        &Secret::new("another-password-long-enough"),
        // Ending the other sessions ends the account's personal tokens too.
        true,
        None,
    )
    .unwrap();
    auth.set_user_status(&admin, tokens[1].0.user_id(), UserStatus::Disabled).unwrap();
    auth.set_user_role(&admin, tokens[2].0.user_id(), Role::Operator).unwrap();
    for (caller, token) in &tokens {
        assert!(
            matches!(auth.verify_api_token(token.expose()), Err(AuthError::Token(TokenRefusal::Revoked))),
            "{}",
            caller.email()
        );
    }
}

#[tokio::test]
async fn an_expired_token_is_not_counted_active_and_is_refused() {
    let clock = AuthClock::manual(now_s());
    let api = Api::start_with(bluewave_web::AuthConfig { clock: clock.clone(), ..fast_config(10_000) }).await;
    setup(&api, None).await;
    let cookie = browser_session(&api, CUSTOMER).await;
    let issued = issue(&api, &cookie, "short").await;
    let token = texts(&doc(&issued), "#new-token")[0].clone();
    let overview = doc(&page(&api, "/account/overview", &cookie).await);
    assert!(texts(&overview, "nav ul.overview li").contains(&"API tokens — 1 active.".to_owned()));
    // Past its 90 days on the auth clock.
    clock.advance_s(91 * 86_400);
    let refused = api.get("/api/telemetry?buoy_id=buoy-a", &token).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{:?}", refused.body);
    let cookie = browser_session(&api, CUSTOMER).await;
    let overview = doc(&page(&api, "/account/overview", &cookie).await);
    let items = texts(&overview, "nav ul.overview li");
    assert!(items.contains(&"API tokens — 0 active.".to_owned()), "{items:?}");
    let cells = texts(&doc(&page(&api, "/account/tokens", &cookie).await), "tr[data-token] td");
    assert_eq!(cells[4], "expired");
}

#[test]
fn a_failed_audit_write_leaves_no_token() {
    use crate::auth_fixtures::{Fixture, no_mfa};
    use bluewave_web::{AuthError, Role};
    let fixture = Fixture::new();
    let (caller, _) = fixture.user("scripts@example.org", Role::Customer);
    // A complete but corrupt line in the middle of the audit log blocks every append.
    let path = fixture.dir.path().join("audit").join(bluewave_web::AUDIT_FILE_NAME);
    let mut lines: Vec<String> = std::fs::read_to_string(&path).unwrap().lines().map(str::to_owned).collect();
    assert!(lines.len() >= 2);
    lines[0] = "{not json".into();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let fixture = fixture.reopen(no_mfa());
    assert!(matches!(fixture.auth.issue_api_token(&caller, "unaudited", 30), Err(AuthError::Audit(_))));
    assert!(
        fixture.auth.list_api_tokens(&caller).unwrap().is_empty(),
        "no token the audit log does not show"
    );
}
