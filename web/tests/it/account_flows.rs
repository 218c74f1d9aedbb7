//! Accounts for people over real HTTPS, with the mail read back from the outbox
//! (`<data-dir>/outbox/*.eml`) as a person would read it:
//!
//! - sign-up refuses a common password and a short one; a taken email gets the same `202` as a
//!   new one (its owner gets a notice, no second account);
//! - an unverified account signs in but the data API answers `403 email_unverified`;
//!   `/api/auth/me` carries the `email_verified` fact; the verification link works once and
//!   for 30 minutes (manual auth clock), a new one replaces the old;
//! - a password reset (same `202` for an unknown address, no mail) ends every API session,
//!   access token and browser session of the account; its link works once; tokens never
//!   reach the audit log;
//! - an email change mails the new address and switches only when its link is followed;
//! - a password change needs the current password and fresh authentication, and ends the
//!   other sessions only when asked;
//! - an admin ends every session of an account (audited); a lower role cannot;
//! - the pages: sign-up, the link pages, password change with the browser step-up form;
//! - a session (refresh family) ends at its absolute lifetime, however often it rotates.

use std::path::Path;
use std::time::Duration;

use bluewave_web::{AuthClock, AuthConfig, Method, StatusCode};
use scraper::{Html, Selector};
use serde_json::{Value, json};

use crate::api::{ADMIN, Answer, Api, PASSWORD, fast_config};
use crate::auth_fixtures::now_s;

const CUSTOMER: &str = "customer@example.org";
const NEW_PASSWORD: &str = "a-brand-new-password-2026";
const ORIGIN: (&str, &str) = ("origin", "https://localhost");

/// One mail of the outbox.
#[derive(Debug)]
pub(crate) struct Sent {
    pub(crate) to: String,
    pub(crate) subject: String,
    pub(crate) text: String,
}

impl Sent {
    /// The token of the link to `path` in the mail.
    pub(crate) fn token(&self, path: &str) -> String {
        let marker = format!("{path}?token=");
        let line = self
            .text
            .lines()
            .find(|l| l.contains(&marker))
            .unwrap_or_else(|| panic!("no {path} link: {self:?}"));
        let token = line.split_once(&marker).unwrap().1.trim().to_owned();
        assert_eq!(token.len(), 43, "{line}");
        token
    }
}

/// Every mail of the outbox under `data_dir`, oldest first.
pub(crate) fn outbox(data_dir: &Path) -> Vec<Sent> {
    let dir = data_dir.join("outbox");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                // A message being written has a temp name (`.<name>.tmp`) until its rename.
                .filter(|path| !path.file_name().unwrap().to_string_lossy().starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .into_iter()
        .map(|path| {
            assert_eq!(path.extension().unwrap(), "eml", "only whole messages: {path:?}");
            let raw = std::fs::read_to_string(&path).unwrap();
            let (head, text) = raw.split_once("\r\n\r\n").unwrap();
            let header = |name: &str| {
                head.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).unwrap_or_default().to_owned()
            };
            Sent { to: header("To"), subject: header("Subject"), text: text.replace("\r\n", "\n") }
        })
        .collect()
}

/// Waits (bounded) until the outbox holds `count` mails; then returns them.
pub(crate) async fn wait_for_mails(data_dir: &Path, count: usize) -> Vec<Sent> {
    for _ in 0..500 {
        let mails = outbox(data_dir);
        if mails.len() >= count {
            return mails;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the outbox never held {count} mails: {:?}", outbox(data_dir));
}

fn manual() -> (AuthConfig, AuthClock) {
    let clock = AuthClock::manual(now_s());
    (AuthConfig { clock: clock.clone(), ..fast_config(10_000) }, clock)
}

async fn register(api: &Api, email: &str, password: &str) -> Answer {
    api.post("/api/auth/register", None, json!({ "email": email, "password": password })).await
}

async fn login_as(api: &Api, email: &str, password: &str) -> Answer {
    api.post("/api/auth/token", None, json!({ "email": email, "password": password })).await
}

fn assert_error(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "{:?}", answer.body);
    assert_eq!(answer.json()["error"], code, "{:?}", answer.body);
}

fn audit_lines(api: &Api) -> Vec<Value> {
    std::fs::read_to_string(api.auth.audit_log().path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn audited(api: &Api, action: &str, outcome: &str) -> usize {
    audit_lines(api).iter().filter(|e| e["action"] == action && e["outcome"] == outcome).count()
}

#[tokio::test]
async fn sign_up_refuses_common_and_short_passwords_and_answers_a_taken_email_like_a_new_one() {
    let api = Api::start().await;
    let common = register(&api, "new@example.org", "1qaz2wsx3edc").await;
    assert_eq!(common.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        common.json(),
        json!({ "error": "invalid_input", "message": "password rejected: one of the 10,000 most common passwords" })
    );
    let short = register(&api, "new@example.org", "short").await;
    assert_eq!(short.json()["message"], "password rejected: shorter than 12 characters");
    assert!(outbox(api.dir()).is_empty(), "no mail for a refused sign-up");

    let fresh = register(&api, "New@Example.org", PASSWORD).await;
    assert_eq!(fresh.status, StatusCode::ACCEPTED);
    assert_eq!(fresh.json(), json!({ "status": "mail_sent" }));
    let taken = register(&api, CUSTOMER, "another-password-for-this").await;
    assert_eq!((taken.status, taken.json()), (fresh.status, fresh.json()), "a taken email answers the same");

    let mails = outbox(api.dir());
    assert_eq!(mails.len(), 2);
    assert_eq!(
        (mails[0].to.as_str(), mails[0].subject.as_str()),
        ("new@example.org", "Verify your BlueWave address")
    );
    mails[0].token("/verify");
    assert_eq!(mails[1].to, CUSTOMER);
    assert_eq!(mails[1].subject, "Someone tried to sign up with your address");
    assert!(!mails[1].text.contains("token="), "the notice carries no link of the account");
    // The existing account is untouched: its password still works, the offered one does not.
    assert_eq!(login_as(&api, CUSTOMER, PASSWORD).await.status, StatusCode::OK);
    assert_error(
        &login_as(&api, CUSTOMER, "another-password-for-this").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_eq!(audited(&api, "users.register", "ok"), 1);
    assert_eq!(audited(&api, "users.register", "denied"), 1);
}

#[tokio::test]
async fn an_unverified_account_signs_in_but_cannot_query_until_its_single_use_link_is_followed() {
    let api = Api::start().await;
    assert_eq!(register(&api, "reader@example.org", PASSWORD).await.status, StatusCode::ACCEPTED);
    let token = api.token("reader@example.org").await;
    let me = api.get("/api/auth/me", &token).await.json();
    assert_eq!((me["role"].clone(), me["email_verified"].clone()), (json!("customer"), json!(false)));
    assert_error(
        &api.get("/api/telemetry?buoy_id=buoy-a", &token).await,
        StatusCode::FORBIDDEN,
        "email_unverified",
    );
    let sql = api.post("/api/query", Some(&token), json!({ "sql": "SELECT 1" })).await;
    assert_error(&sql, StatusCode::FORBIDDEN, "email_unverified");

    let link = outbox(api.dir())[0].token("/verify");
    let followed = api.post("/api/auth/verify", None, json!({ "token": link })).await;
    assert_eq!(followed.status, StatusCode::NO_CONTENT, "{:?}", followed.body);
    let again = api.post("/api/auth/verify", None, json!({ "token": link })).await;
    assert_eq!(
        again.json(),
        json!({ "error": "link_invalid", "message": "this link is invalid, used or expired" })
    );
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    // The same access token: verification applies at once.
    assert_eq!(api.get("/api/auth/me", &token).await.json()["email_verified"], true);
    // Now the plan answers (this customer has none: no buoy is theirs), not the verification.
    assert_error(&api.get("/api/telemetry?buoy_id=buoy-a", &token).await, StatusCode::NOT_FOUND, "not_found");
    // A customer has no SQL: now the role answers, not the verification.
    assert_error(
        &api.post("/api/query", Some(&token), json!({ "sql": "SELECT 1" })).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_eq!(audited(&api, "users.email_verify", "ok"), 1);
    let audit = std::fs::read_to_string(api.auth.audit_log().path()).unwrap();
    assert!(!audit.contains(&link), "a link token never reaches the audit log");
}

#[tokio::test]
async fn a_verification_link_works_for_30_minutes_and_a_new_one_replaces_it() {
    let (config, clock) = manual();
    let api = Api::start_with(config).await;
    for email in ["late@example.org", "ontime@example.org"] {
        assert_eq!(register(&api, email, PASSWORD).await.status, StatusCode::ACCEPTED);
    }
    let mails = outbox(api.dir());
    let (late, on_time) = (mails[0].token("/verify"), mails[1].token("/verify"));
    clock.advance_s(bluewave_web::ONE_TIME_LINK_TTL_S);
    let answer = api.post("/api/auth/verify", None, json!({ "token": on_time })).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "at exactly 30 minutes the link still works");
    clock.advance_s(1);
    assert_error(
        &api.post("/api/auth/verify", None, json!({ "token": late })).await,
        StatusCode::BAD_REQUEST,
        "link_invalid",
    );

    // The late account asks for a new link: the old one stays dead, the new one works once.
    let token = api.token("late@example.org").await;
    let resent = api.request(Method::POST, "/api/auth/verify/resend", Some(&token), &[], None).await;
    assert_eq!(resent.status, StatusCode::ACCEPTED);
    let second = wait_for_mails(api.dir(), 3).await[2].token("/verify");
    let third_request = api.request(Method::POST, "/api/auth/verify/resend", Some(&token), &[], None).await;
    assert_eq!(third_request.status, StatusCode::ACCEPTED);
    let third = wait_for_mails(api.dir(), 4).await[3].token("/verify");
    assert_error(
        &api.post("/api/auth/verify", None, json!({ "token": second })).await,
        StatusCode::BAD_REQUEST,
        "link_invalid",
    );
    assert_eq!(
        api.post("/api/auth/verify", None, json!({ "token": third })).await.status,
        StatusCode::NO_CONTENT
    );
    let verified = api.request(Method::POST, "/api/auth/verify/resend", Some(&token), &[], None).await;
    assert_error(&verified, StatusCode::BAD_REQUEST, "invalid_input");
}

/// A browser session of `email` through the login form.
pub(crate) async fn browser_session(api: &Api, email: &str, password: &str) -> String {
    let form = api.request(Method::GET, "/login", None, &[], None).await;
    let login_cookie = cookie_of(&form, "__Host-bluewave-login").unwrap();
    let cookie = format!("__Host-bluewave-login={login_cookie}");
    let body = format!("csrf={login_cookie}&email={}&password={password}", email.replace('@', "%40"));
    let answer = api.form("/login", &[("cookie", &cookie), ORIGIN], &body).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{:?}", answer.body);
    cookie_of(&answer, "__Host-bluewave-session").unwrap()
}

pub(crate) fn cookie_of(answer: &Answer, name: &str) -> Option<String> {
    answer.headers.get_all("set-cookie").iter().find_map(|v| {
        let text = v.to_str().unwrap();
        let pair = text.split(';').next().unwrap();
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| value.to_owned())
    })
}

async fn page(api: &Api, path: &str, session: &str) -> Answer {
    let cookie = format!("__Host-bluewave-session={session}");
    api.request(Method::GET, path, None, &[("cookie", &cookie)], None).await
}

fn doc(answer: &Answer) -> Html {
    Html::parse_document(&String::from_utf8_lossy(&answer.body))
}

fn count(html: &Html, css: &str) -> usize {
    html.select(&Selector::parse(css).unwrap()).count()
}

fn attr(html: &Html, css: &str, name: &str) -> String {
    html.select(&Selector::parse(css).unwrap())
        .next()
        .unwrap_or_else(|| panic!("{css}"))
        .value()
        .attr(name)
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_password_reset_ends_every_session_and_refresh_family_and_its_link_works_once() {
    let api = Api::start().await;
    let pair = api.login(CUSTOMER).await;
    let access = pair["access_token"].as_str().unwrap().to_owned();
    let refresh = pair["refresh_token"].as_str().unwrap().to_owned();
    let browser = browser_session(&api, CUSTOMER, PASSWORD).await;
    assert_eq!(page(&api, "/account", &browser).await.status, StatusCode::OK);

    let unknown =
        api.post("/api/auth/password-reset/request", None, json!({ "email": "nobody@example.org" })).await;
    let known = api.post("/api/auth/password-reset/request", None, json!({ "email": CUSTOMER })).await;
    assert_eq!((unknown.status, unknown.json()), (StatusCode::ACCEPTED, json!({ "status": "mail_sent" })));
    assert_eq!((known.status, known.json()), (unknown.status, unknown.json()), "the same answer for both");
    let mails = wait_for_mails(api.dir(), 1).await;
    assert_eq!(mails.len(), 1, "an unknown address gets no mail");
    assert_eq!((mails[0].to.as_str(), mails[0].subject.as_str()), (CUSTOMER, "Reset your BlueWave password"));
    let link = mails[0].token("/reset");

    let weak = api
        .post("/api/auth/password-reset", None, json!({ "token": link, "password": "1qaz2wsx3edc" }))
        .await;
    assert_error(&weak, StatusCode::BAD_REQUEST, "invalid_input");
    let done =
        api.post("/api/auth/password-reset", None, json!({ "token": link, "password": NEW_PASSWORD })).await;
    assert_eq!(
        done.status,
        StatusCode::NO_CONTENT,
        "a refused password did not spend the link: {:?}",
        done.body
    );
    let again = api
        .post(
            "/api/auth/password-reset",
            None,
            json!({ "token": link, "password": "yet-another-password-9" }),
        )
        .await;
    assert_error(&again, StatusCode::BAD_REQUEST, "link_invalid");

    assert_error(&api.get("/api/auth/me", &access).await, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_error(
        &api.post("/api/auth/refresh", None, json!({ "refresh_token": refresh })).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let ended = page(&api, "/account", &browser).await;
    assert_eq!(
        (ended.status, ended.header("location")),
        (StatusCode::SEE_OTHER, "/login"),
        "the browser session ended"
    );
    assert_error(&login_as(&api, CUSTOMER, PASSWORD).await, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(login_as(&api, CUSTOMER, NEW_PASSWORD).await.status, StatusCode::OK);
    let reset = audit_lines(&api).into_iter().find(|e| e["action"] == "users.password_reset").unwrap();
    assert_eq!(reset["details"], json!({ "sessions_revoked": 1, "browser_sessions_ended": 1 }));
    let audit = std::fs::read_to_string(api.auth.audit_log().path()).unwrap();
    assert!(!audit.contains(&link), "a link token never reaches the audit log");
}

#[tokio::test]
async fn an_email_change_mails_the_new_address_and_switches_only_when_its_link_is_followed() {
    let (config, clock) = manual();
    let api = Api::start_with(config).await;
    let token = api.token(CUSTOMER).await;
    let asked = api.post("/api/auth/email", Some(&token), json!({ "new_email": "moved@example.org" })).await;
    assert_eq!(asked.status, StatusCode::ACCEPTED, "{:?}", asked.body);
    let mails = outbox(api.dir());
    assert_eq!(
        (mails[0].to.as_str(), mails[0].subject.as_str()),
        ("moved@example.org", "Confirm your new BlueWave address")
    );
    let link = mails[0].token("/email/confirm");
    // Nothing switched yet.
    assert_eq!(api.get("/api/auth/me", &token).await.json()["email"], CUSTOMER);
    assert_eq!(login_as(&api, CUSTOMER, PASSWORD).await.status, StatusCode::OK);
    assert_error(
        &login_as(&api, "moved@example.org", PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );

    assert_eq!(
        api.post("/api/auth/email/confirm", None, json!({ "token": link })).await.status,
        StatusCode::NO_CONTENT
    );
    assert_error(
        &api.post("/api/auth/email/confirm", None, json!({ "token": link })).await,
        StatusCode::BAD_REQUEST,
        "link_invalid",
    );
    assert_eq!(api.get("/api/auth/me", &token).await.json()["email"], "moved@example.org");
    assert_eq!(login_as(&api, "moved@example.org", PASSWORD).await.status, StatusCode::OK);
    assert_error(&login_as(&api, CUSTOMER, PASSWORD).await, StatusCode::UNAUTHORIZED, "unauthorized");
    let notice = &outbox(api.dir())[1];
    assert_eq!(
        (notice.to.as_str(), notice.subject.as_str()),
        (CUSTOMER, "BlueWave: your sign-in address changed")
    );
    let change = audit_lines(&api).into_iter().find(|e| e["action"] == "users.email_change").unwrap();
    assert_eq!(
        (change["details"]["from"].clone(), change["details"]["to"].clone()),
        (json!(CUSTOMER), json!("moved@example.org"))
    );

    // An address another account has: the same answer, a notice to it, no link.
    let taken = api.post("/api/auth/email", Some(&token), json!({ "new_email": ADMIN })).await;
    assert_eq!(taken.status, StatusCode::ACCEPTED);
    let notice = &outbox(api.dir())[2];
    assert_eq!((notice.to.as_str(), notice.subject.as_str()), (ADMIN, "BlueWave: address already in use"));
    // A stale login cannot ask.
    clock.advance_s(601);
    let stale = api.post("/api/auth/email", Some(&token), json!({ "new_email": "again@example.org" })).await;
    assert_error(&stale, StatusCode::UNAUTHORIZED, "step_up_required");
}

#[tokio::test]
async fn a_password_change_needs_the_current_password_and_fresh_auth_and_ends_other_sessions_on_request() {
    let (config, clock) = manual();
    let api = Api::start_with(config).await;
    let mine = api.token(CUSTOMER).await;
    let other = api.login(CUSTOMER).await;
    let other_access = other["access_token"].as_str().unwrap().to_owned();
    let browser = browser_session(&api, CUSTOMER, PASSWORD).await;

    let wrong = json!({ "current_password": "not-the-password", "new_password": NEW_PASSWORD, "end_other_sessions": true });
    assert_error(
        &api.post("/api/auth/password", Some(&mine), wrong).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let common = json!({ "current_password": PASSWORD, "new_password": "1qaz2wsx3edc" });
    assert_error(
        &api.post("/api/auth/password", Some(&mine), common).await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    );

    // Without the box: every session goes on.
    let keep = json!({ "current_password": PASSWORD, "new_password": NEW_PASSWORD });
    let kept = api.post("/api/auth/password", Some(&mine), keep).await;
    assert_eq!((kept.status, kept.json()), (StatusCode::OK, json!({ "sessions_ended": 0 })));
    assert_eq!(api.get("/api/auth/me", &other_access).await.status, StatusCode::OK);
    assert_eq!(page(&api, "/account", &browser).await.status, StatusCode::OK);

    // With it: the other API session and the browser session end; this one goes on.
    let end =
        json!({ "current_password": NEW_PASSWORD, "new_password": PASSWORD, "end_other_sessions": true });
    let ended = api.post("/api/auth/password", Some(&mine), end).await;
    assert_eq!((ended.status, ended.json()), (StatusCode::OK, json!({ "sessions_ended": 2 })));
    assert_eq!(api.get("/api/auth/me", &mine).await.status, StatusCode::OK);
    assert_error(&api.get("/api/auth/me", &other_access).await, StatusCode::UNAUTHORIZED, "unauthorized");
    let refresh = json!({ "refresh_token": other["refresh_token"] });
    assert_error(
        &api.post("/api/auth/refresh", None, refresh).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_eq!(page(&api, "/account", &browser).await.header("location"), "/login");
    assert_eq!(audited(&api, "users.change_password", "ok"), 2);
    assert_eq!(audited(&api, "users.change_password", "denied"), 1);

    clock.advance_s(601);
    let stale = json!({ "current_password": PASSWORD, "new_password": NEW_PASSWORD });
    assert_error(
        &api.post("/api/auth/password", Some(&mine), stale).await,
        StatusCode::UNAUTHORIZED,
        "step_up_required",
    );
}

#[tokio::test]
async fn an_admin_ends_every_session_of_an_account_and_a_lower_role_cannot() {
    let api = Api::start().await;
    let customer = api.login(CUSTOMER).await;
    let access = customer["access_token"].as_str().unwrap().to_owned();
    let browser = browser_session(&api, CUSTOMER, PASSWORD).await;
    let id = api.get("/api/auth/me", &access).await.json()["user_id"].as_str().unwrap().to_owned();
    let path = format!("/api/rbac/users/{id}/sessions");

    let analyst = api.token("analyst@example.org").await;
    let refused = api.request(Method::DELETE, &path, Some(&analyst), &[], None).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(api.get("/api/auth/me", &access).await.status, StatusCode::OK);

    let admin = api.token(ADMIN).await;
    let done = api.request(Method::DELETE, &path, Some(&admin), &[], None).await;
    assert_eq!((done.status, done.json()), (StatusCode::OK, json!({ "sessions_ended": 2 })));
    assert_error(&api.get("/api/auth/me", &access).await, StatusCode::UNAUTHORIZED, "unauthorized");
    let refresh = json!({ "refresh_token": customer["refresh_token"] });
    assert_error(
        &api.post("/api/auth/refresh", None, refresh).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_eq!(page(&api, "/account", &browser).await.header("location"), "/login");
    let unknown =
        api.request(Method::DELETE, "/api/rbac/users/nobody/sessions", Some(&admin), &[], None).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "not_found");
    let entry = audit_lines(&api)
        .into_iter()
        .find(|e| e["action"] == "auth.sessions_end_all" && e["outcome"] == "ok")
        .unwrap();
    assert_eq!(entry["target"], format!("user:{id}"));
    assert_eq!(entry["details"], json!({ "sessions_revoked": 1, "browser_sessions_ended": 1 }));
    assert_eq!(audited(&api, "auth.sessions_end_all", "denied"), 1);
}

#[tokio::test]
async fn the_pages_sign_up_follow_links_and_step_up_before_a_password_change() {
    let (config, clock) = manual();
    let api = Api::start_with(config).await;
    // GET /signup: the form and its double-submit token.
    let form = api.request(Method::GET, "/signup", None, &[], None).await;
    assert_eq!(form.status, StatusCode::OK);
    let login_token = cookie_of(&form, "__Host-bluewave-login").unwrap();
    let html = doc(&form);
    assert_eq!(count(&html, "form[method=post][action=\"/signup\"]"), 1);
    assert_eq!(attr(&html, "form input[type=hidden][name=csrf]", "value"), login_token);
    assert_eq!(
        count(&html, "input[name=email][type=email]") + count(&html, "input[name=password][type=password]"),
        2
    );
    let cookie = format!("__Host-bluewave-login={login_token}");
    let body = format!("csrf={login_token}&email=page%40example.org&password={PASSWORD}");
    let signed_up = api.form("/signup", &[("cookie", &cookie), ORIGIN], &body).await;
    assert_eq!(signed_up.status, StatusCode::OK);
    assert_eq!(count(&doc(&signed_up), "h1"), 1);
    let refused =
        api.form("/signup", &[("cookie", &cookie), ORIGIN], &body.replace(PASSWORD, "1qaz2wsx3edc")).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(count(&doc(&refused), "p[role=alert]"), 1);

    // The link opens a page whose form posts the token; the GET changed nothing.
    let link = outbox(api.dir())[0].token("/verify");
    let opened =
        api.request(Method::GET, &format!("/verify?token={link}"), None, &[("cookie", &cookie)], None).await;
    assert_eq!(opened.status, StatusCode::OK);
    let html = doc(&opened);
    assert_eq!(attr(&html, "form[action=\"/verify\"] input[name=token]", "value"), link);
    assert_eq!(attr(&html, "form[action=\"/verify\"] input[name=csrf]", "value"), login_token);
    let session = browser_session(&api, "page@example.org", PASSWORD).await;
    let account = doc(&page(&api, "/account", &session).await);
    assert_eq!(count(&account, "[data-fact=email-unverified]"), 1, "the page says the address is unverified");
    let verified = api
        .form("/verify", &[("cookie", &cookie), ORIGIN], &format!("csrf={login_token}&token={link}"))
        .await;
    assert_eq!(verified.status, StatusCode::OK);
    let account = doc(&page(&api, "/account", &session).await);
    assert_eq!(count(&account, "[data-fact=email-unverified]"), 0);

    // Password change page: current, new, the box; a stale session gets the step-up form.
    let password_page = page(&api, "/account/password", &session).await;
    let html = doc(&password_page);
    let csrf = attr(&html, "form[action=\"/account/password\"] input[name=csrf]", "value");
    assert_eq!(count(&html, "input[type=checkbox][name=end_others]"), 1);
    clock.advance_s(601);
    let session_cookie = format!("__Host-bluewave-session={session}");
    let change = format!("csrf={csrf}&current_password={PASSWORD}&new_password={NEW_PASSWORD}");
    let stale = api.form("/account/password", &[("cookie", &session_cookie), ORIGIN], &change).await;
    assert_eq!(stale.status, StatusCode::UNAUTHORIZED);
    let html = doc(&stale);
    assert_eq!(
        attr(&html, "form[action=\"/account/reauth\"] input[name=return_to]", "value"),
        "/account/password"
    );
    assert_eq!(count(&html, "form[action=\"/account/reauth\"] input[name=password][type=password]"), 1);
    assert_eq!(
        count(&html, "form[action=\"/account/reauth\"] input[name=code]"),
        0,
        "no MFA on this account"
    );
    let wrong = format!("csrf={csrf}&password=not-the-password&return_to=/account/password");
    let again = api.form("/account/reauth", &[("cookie", &session_cookie), ORIGIN], &wrong).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    let reauth = format!("csrf={csrf}&password={PASSWORD}&return_to=%2Faccount%2Fpassword");
    let fresh = api.form("/account/reauth", &[("cookie", &session_cookie), ORIGIN], &reauth).await;
    assert_eq!((fresh.status, fresh.header("location")), (StatusCode::SEE_OTHER, "/account/password"));
    let changed = api.form("/account/password", &[("cookie", &session_cookie), ORIGIN], &change).await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    assert_eq!(login_as(&api, "page@example.org", NEW_PASSWORD).await.status, StatusCode::OK);
    // An open redirect is not on offer: an unknown return page goes to /account.
    clock.advance_s(601);
    let elsewhere = format!("csrf={csrf}&password={NEW_PASSWORD}&return_to=https%3A%2F%2Fevil.example");
    let back = api.form("/account/reauth", &[("cookie", &session_cookie), ORIGIN], &elsewhere).await;
    assert_eq!((back.status, back.header("location")), (StatusCode::SEE_OTHER, "/account"));
}

#[tokio::test]
async fn a_session_ends_at_its_absolute_lifetime_however_often_it_rotates() {
    let api = Api::start_with(AuthConfig { refresh_absolute_s: 2, ..fast_config(10_000) }).await;
    let pair = api.login(CUSTOMER).await;
    assert_eq!(pair["refresh_expires_in"], 2, "capped by the absolute lifetime, not the 7-day TTL");
    let rotated =
        api.post("/api/auth/refresh", None, json!({ "refresh_token": pair["refresh_token"] })).await;
    assert_eq!(rotated.status, StatusCode::OK);
    assert!(rotated.json()["refresh_expires_in"].as_u64().unwrap() <= 2, "a rotation does not extend it");
    // Past the absolute lifetime (whole seconds): the rotated token is refused.
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let late = api
        .post("/api/auth/refresh", None, json!({ "refresh_token": rotated.json()["refresh_token"] }))
        .await;
    assert_error(&late, StatusCode::UNAUTHORIZED, "unauthorized");
    let refused = audit_lines(&api)
        .into_iter()
        .filter(|e| e["action"] == "auth.refresh" && e["outcome"] == "denied")
        .count();
    assert_eq!(refused, 1);
}
