//! The browser pages over real HTTPS, read as HTML (`scraper`): the login form and its
//! double-submit token, session cookies (`__Host-`, Secure, HttpOnly, SameSite=Lax, Path=/),
//! the strict headers of every page, session fixation (a new id at login, the old cookie dead
//! after login and after logout), CSRF refusals (no token, another session's token, a foreign
//! Origin, a cross-site Sec-Fetch-Site), idle and absolute timeouts on a manual clock, the
//! bearer/cookie mix refused, and MFA in the browser (enrolment with an inline SVG QR code,
//! the session id rotated at the privilege change, the MFA step of a later login).

use std::collections::BTreeSet;

use bluewave_web::{AuthClock, AuthConfig, PAGE_CSP, Role, StatusCode, base32_decode, totp_code};
use scraper::{Html, Selector};

use crate::api::{ADMIN, Answer, Api, PASSWORD, fast_config};
use crate::auth_fixtures::now_s;

const ORIGIN: (&str, &str) = ("origin", "https://localhost");

fn doc(answer: &Answer) -> Html {
    Html::parse_document(&String::from_utf8_lossy(&answer.body))
}

fn select<'a>(html: &'a Html, css: &str) -> Vec<scraper::ElementRef<'a>> {
    html.select(&Selector::parse(css).unwrap()).collect()
}

/// The value of cookie `name` set by `answer`, and its attributes.
fn set_cookie(answer: &Answer, name: &str) -> Option<(String, String)> {
    answer.headers.get_all("set-cookie").iter().find_map(|v| {
        let text = v.to_str().unwrap();
        let (pair, attributes) = text.split_once("; ").unwrap_or((text, ""));
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| (value.to_owned(), attributes.to_owned()))
    })
}

fn cookie_header(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
}

/// The page headers every HTML answer must carry.
fn assert_page_headers(answer: &Answer) {
    assert_eq!(answer.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(answer.header("content-security-policy"), PAGE_CSP);
    assert!(PAGE_CSP.contains("frame-ancestors 'none'") && !PAGE_CSP.contains("unsafe-inline"));
    assert_eq!(answer.header("strict-transport-security"), "max-age=63072000; includeSubDomains");
    assert_eq!(answer.header("x-content-type-options"), "nosniff");
    assert_eq!(answer.header("referrer-policy"), "no-referrer");
    assert_eq!(answer.header("x-frame-options"), "DENY");
    assert_eq!(answer.header("cache-control"), "no-store");
    assert!(select(&doc(answer), "script").is_empty(), "no script on a page");
}

/// GET /login: the login cookie (double-submit token) as the form carries it.
async fn login_form(api: &Api) -> String {
    let answer = api.request(bluewave_web::Method::GET, "/login", None, &[], None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_page_headers(&answer);
    let (token, attributes) = set_cookie(&answer, "__Host-bluewave-login").unwrap();
    assert_eq!(attributes, "Path=/; Secure; HttpOnly; SameSite=Lax");
    let html = doc(&answer);
    let form = select(&html, "form[method=post][action=\"/login\"]");
    assert_eq!(form.len(), 1);
    let csrf = select(&html, "form input[type=hidden][name=csrf]");
    assert_eq!(csrf[0].value().attr("value"), Some(token.as_str()));
    assert_eq!(select(&html, "input[name=email][type=email]").len(), 1);
    assert_eq!(select(&html, "input[name=password][type=password]").len(), 1);
    token
}

/// Logs in through the form; the session cookie.
async fn browser_login(api: &Api, email: &str, extra_cookies: &[(&str, &str)]) -> String {
    let token = login_form(api).await;
    let mut cookies = vec![("__Host-bluewave-login", token.as_str())];
    cookies.extend_from_slice(extra_cookies);
    let cookie = cookie_header(&cookies);
    let body = format!("csrf={token}&email={}&password={PASSWORD}", email.replace('@', "%40"));
    let answer = api.form("/login", &[("cookie", &cookie), ORIGIN], &body).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{:?}", answer.body);
    assert_eq!(answer.header("location"), "/account");
    let (session, attributes) = set_cookie(&answer, "__Host-bluewave-session").unwrap();
    assert_eq!(attributes, "Path=/; Secure; HttpOnly; SameSite=Lax");
    assert_eq!(session.len(), 43);
    session
}

async fn get_page(api: &Api, path: &str, session: &str) -> Answer {
    let cookie = format!("__Host-bluewave-session={session}");
    api.request(bluewave_web::Method::GET, path, None, &[("cookie", &cookie)], None).await
}

/// The account page's CSRF token (from its forms).
async fn account_token(api: &Api, session: &str) -> String {
    let answer = get_page(api, "/account", session).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_page_headers(&answer);
    let html = doc(&answer);
    let tokens: BTreeSet<String> = select(&html, "form input[name=csrf]")
        .iter()
        .map(|e| e.value().attr("value").unwrap().to_owned())
        .collect();
    assert_eq!(tokens.len(), 1, "one token per session: {tokens:?}");
    tokens.into_iter().next().unwrap()
}

fn is_login_redirect(answer: &Answer) -> bool {
    answer.status == StatusCode::SEE_OTHER && answer.header("location") == "/login"
}

#[tokio::test]
async fn login_sessions_fixation_logout_and_headers() {
    let api = Api::start().await;
    let first = browser_login(&api, ADMIN, &[]).await;
    let token = account_token(&api, &first).await;
    let page = get_page(&api, "/account", &first).await;
    let html = doc(&page);
    assert_eq!(select(&html, "h1")[0].text().collect::<String>(), "Your account");
    // This browser session (no revoke button on itself) and the fixture's API login.
    assert_eq!(select(&html, "tr[data-session]").len(), 2);
    assert!(html.root_element().text().any(|t| t == "this session"));
    assert_eq!(select(&html, "form input[name=kind][value=browser]").len(), 0);
    assert_eq!(select(&html, "form input[name=kind][value=api]").len(), 1);
    for action in ["/account/sessions/revoke-others", "/logout"] {
        let forms = select(&html, &format!("form[method=post][action=\"{action}\"]"));
        assert_eq!(forms.len(), 1, "{action}");
    }
    assert_eq!(token.len(), 43);

    // Login with the old session cookie: a new id, and the old one is dead.
    let second = browser_login(&api, ADMIN, &[("__Host-bluewave-session", &first)]).await;
    assert_ne!(second, first);
    assert!(is_login_redirect(&get_page(&api, "/account", &first).await));
    let token = account_token(&api, &second).await;

    // An API login shows as an API session with its own revoke form.
    let _api_login = api.login(ADMIN).await;
    let html = doc(&get_page(&api, "/account", &second).await);
    assert_eq!(select(&html, "form input[name=kind][value=api]").len(), 2);

    // Logout deletes the session: the cookie is cleared and dead.
    let cookie = format!("__Host-bluewave-session={second}");
    let out = api.form("/logout", &[("cookie", &cookie), ORIGIN], &format!("csrf={token}")).await;
    assert!(is_login_redirect(&out));
    let (value, attributes) = set_cookie(&out, "__Host-bluewave-session").unwrap();
    assert_eq!(
        (value.as_str(), attributes.as_str()),
        ("", "Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0")
    );
    assert!(is_login_redirect(&get_page(&api, "/account", &second).await));

    // No state change on GET: the POST-only routes answer 405 to GET.
    for path in ["/logout", "/account/sessions/revoke-others", "/account/mfa/enrol"] {
        let answer = get_page(&api, path, &second).await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
    }
}

#[tokio::test]
async fn csrf_is_refused_without_token_with_another_sessions_token_foreign_origin_or_cross_site() {
    let api = Api::start().await;
    let mine = browser_login(&api, ADMIN, &[]).await;
    let my_token = account_token(&api, &mine).await;
    let theirs = browser_login(&api, "customer@example.org", &[]).await;
    let their_token = account_token(&api, &theirs).await;
    let cookie = format!("__Host-bluewave-session={mine}");
    let path = "/account/sessions/revoke-others";
    let refused = |answer: &Answer| {
        answer.status == StatusCode::FORBIDDEN
            && answer.json() == serde_json::json!({ "error": "forbidden", "message": "CSRF check failed" })
    };
    let no_token = api.form(path, &[("cookie", &cookie), ORIGIN], "").await;
    assert!(refused(&no_token), "no token: {:?}", no_token.body);
    let other = api.form(path, &[("cookie", &cookie), ORIGIN], &format!("csrf={their_token}")).await;
    assert!(refused(&other), "another session's token");
    let foreign = api
        .form(path, &[("cookie", &cookie), ("origin", "https://evil.example")], &format!("csrf={my_token}"))
        .await;
    assert!(refused(&foreign), "foreign origin");
    let cross = api
        .form(
            path,
            &[("cookie", &cookie), ORIGIN, ("sec-fetch-site", "cross-site")],
            &format!("csrf={my_token}"),
        )
        .await;
    assert!(refused(&cross), "cross-site fetch");
    // The header form of the token works for fetch; the right token passes.
    let empty = api.form(path, &[("cookie", &cookie), ORIGIN], "csrf=").await;
    assert!(refused(&empty), "empty token");
    let via_header = api.form(path, &[("cookie", &cookie), ORIGIN, ("x-csrf-token", &my_token)], "").await;
    assert_eq!(via_header.status, StatusCode::SEE_OTHER, "the header carries the token for fetch");
    let ok = api
        .form(
            path,
            &[("cookie", &cookie), ORIGIN, ("sec-fetch-site", "same-origin")],
            &format!("csrf={my_token}"),
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    // The login form is CSRF-protected too: no login cookie, or a mismatch, is refused.
    let login = api.form("/login", &[ORIGIN], &format!("csrf=abc&email=a%40b.c&password={PASSWORD}")).await;
    assert!(refused(&login), "login without its cookie");
    // Bearer and cookie together: refused (an endpoint takes one kind of credential).
    let bearer = api.token(ADMIN).await;
    let mixed =
        api.request(bluewave_web::Method::GET, "/account", Some(&bearer), &[("cookie", &cookie)], None).await;
    assert_eq!(mixed.status, StatusCode::BAD_REQUEST);
    // And the API ignores the cookie: no bearer, no entry.
    let cookie_only =
        api.request(bluewave_web::Method::GET, "/api/buoys", None, &[("cookie", &cookie)], None).await;
    assert_eq!(cookie_only.status, StatusCode::UNAUTHORIZED);
    let _ = theirs;
}

#[tokio::test]
async fn idle_and_absolute_timeouts_end_a_session() {
    let clock = AuthClock::manual(now_s());
    let config = AuthConfig {
        clock: clock.clone(),
        browser_idle_s: 100,
        browser_absolute_s: 150,
        ..fast_config(10_000)
    };
    let api = Api::start_with(config).await;
    let idle = browser_login(&api, ADMIN, &[]).await;
    clock.advance_s(101);
    assert!(is_login_redirect(&get_page(&api, "/account", &idle).await), "idle");
    let busy = browser_login(&api, ADMIN, &[]).await;
    clock.advance_s(90);
    assert_eq!(get_page(&api, "/account", &busy).await.status, StatusCode::OK);
    clock.advance_s(61);
    assert!(is_login_redirect(&get_page(&api, "/account", &busy).await), "absolute");
}

#[tokio::test]
async fn mfa_in_the_browser_enrol_rotates_the_session_then_login_asks_for_a_code() {
    let clock = AuthClock::manual(1_800_000_010);
    let config = AuthConfig {
        clock: clock.clone(),
        mfa_required_roles: BTreeSet::from([Role::Operator]),
        ..fast_config(10_000)
    };
    let api = Api::start_with(config).await;
    let operator = "operator@example.org";
    let session = browser_login(&api, operator, &[]).await;
    // A second browser signed in with the password alone (e.g. someone who has it).
    let other = browser_login(&api, operator, &[]).await;
    // Enrol-only: the account page leads to enrolment.
    let account = get_page(&api, "/account", &session).await;
    assert_eq!((account.status, account.header("location")), (StatusCode::SEE_OTHER, "/account/mfa"));
    let mfa = get_page(&api, "/account/mfa", &session).await;
    assert_page_headers(&mfa);
    let html = doc(&mfa);
    let token = select(&html, "form[action=\"/account/mfa/enrol\"] input[name=csrf]")[0]
        .value()
        .attr("value")
        .unwrap()
        .to_owned();
    let cookie = format!("__Host-bluewave-session={session}");
    let scan = api.form("/account/mfa/enrol", &[("cookie", &cookie), ORIGIN], &format!("csrf={token}")).await;
    assert_eq!(scan.status, StatusCode::OK, "{:?}", scan.body);
    assert_page_headers(&scan);
    let html = doc(&scan);
    assert_eq!(select(&html, "figure svg").len(), 1, "inline SVG QR code");
    let secret_text = select(&html, "figcaption code")[0].text().collect::<String>();
    let secret = base32_decode(&secret_text).unwrap();
    assert_eq!(select(&html, "form[action=\"/account/mfa/confirm\"] input[name=code]").len(), 1);
    let code = totp_code(&secret, clock.now_s()).unwrap();
    let done = api
        .form("/account/mfa/confirm", &[("cookie", &cookie), ORIGIN], &format!("csrf={token}&code={code}"))
        .await;
    assert_eq!(done.status, StatusCode::OK, "{:?}", done.body);
    let html = doc(&done);
    assert_eq!(select(&html, "ul li code").len(), 10, "ten backup codes shown once");
    // A privilege change: a new session id, the old cookie dead.
    let (rotated, _) = set_cookie(&done, "__Host-bluewave-session").unwrap();
    assert_ne!(rotated, session);
    assert!(is_login_redirect(&get_page(&api, "/account", &session).await));
    assert_eq!(get_page(&api, "/account", &rotated).await.status, StatusCode::OK);
    // Every other session was opened without MFA: the enrolment ends it.
    assert!(is_login_redirect(&get_page(&api, "/account", &other).await), "other browser session ended");

    // A later login asks for a code before any session exists.
    let login_token = login_form(&api).await;
    let login_cookie = format!("__Host-bluewave-login={login_token}");
    let body = format!("csrf={login_token}&email=operator%40example.org&password={PASSWORD}");
    let step = api.form("/login", &[("cookie", &login_cookie), ORIGIN], &body).await;
    assert_eq!((step.status, step.header("location")), (StatusCode::SEE_OTHER, "/login/mfa"));
    assert!(set_cookie(&step, "__Host-bluewave-session").is_none());
    let (challenge, attributes) = set_cookie(&step, "__Host-bluewave-mfa").unwrap();
    assert_eq!(attributes, "Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=300");
    let both = format!("{login_cookie}; __Host-bluewave-mfa={challenge}");
    let form = api.request(bluewave_web::Method::GET, "/login/mfa", None, &[("cookie", &both)], None).await;
    assert_page_headers(&form);
    assert_eq!(select(&doc(&form), "form[action=\"/login/mfa\"] input[name=code]").len(), 1);
    clock.advance_s(30);
    let code = totp_code(&secret, clock.now_s()).unwrap();
    let wrong = api
        .form("/login/mfa", &[("cookie", &both), ORIGIN], &format!("csrf={login_token}&code=000000x"))
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let ok = api
        .form("/login/mfa", &[("cookie", &both), ORIGIN], &format!("csrf={login_token}&code={code}"))
        .await;
    assert_eq!((ok.status, ok.header("location")), (StatusCode::SEE_OTHER, "/account"));
    let (session, _) = set_cookie(&ok, "__Host-bluewave-session").unwrap();
    assert_eq!(get_page(&api, "/account", &session).await.status, StatusCode::OK);
    let _ = ADMIN;
}
