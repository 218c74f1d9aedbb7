//! The security suite, organised by attack vector. Every case is a real HTTPS request to a real
//! server (real `AuthService`, `QueryService` and `Engine` in a tempdir) with an exact expected
//! status and JSON `error` code (and message where the message is part of the contract):
//!
//! - `token_forgery_*`: alg none, another key, HS256 keyed with the public key, flipped
//!   signature bits, expired, `exp` as a string, wrong `aud`/`iss`/`typ`, refresh token as an
//!   access token, device token as a user token, hostile `kid`s;
//! - `refresh_*`: reuse revokes the whole family; two concurrent refreshes, one winner;
//! - `brute_force_*`: per-IP and per-account login limits answer 429 with `Retry-After`;
//! - `function_level_*`: one table of every endpoint × every role (admin, operator, analyst,
//!   customer, device, anonymous) driven by one loop; the table must cover exactly the
//!   OpenAPI document's operations, so a new endpoint without a row fails;
//! - `object_level_*`: an analyst against buoys outside their plan (reading by id, buoy,
//!   telemetry, SQL), user A against user B's account and sessions;
//! - `sql_abuse_*`: DDL, DML, `COPY`, `SET`, several statements, file and URL tables,
//!   `information_schema`;
//! - `malformed_*`: oversized bodies (413), malformed JSON (400), wrong content type,
//!   path traversal in ids;
//! - `mfa_*`: "password OK, MFA pending" grants nothing (no token; the challenge is no bearer or
//!   refresh token), invented challenges, oversized codes, TOTP replay, backup-code reuse, code
//!   guessing (the fifth wrong code ends the challenge);
//! - `enrol_only_*`: a role that requires MFA without it reaches nothing but enrolment; a
//!   logged-out session's access token stops at once; a stale token cannot re-role, disable,
//!   mint device tokens or delete telemetry (step-up);
//! - `csrf_*`: every state-changing page refuses a missing token, another session's token, a
//!   foreign or `null` Origin and a cross-site `Sec-Fetch-Site`; login CSRF; session fixation
//!   (a planted id never survives a login, logout kills the cookie); a session cookie is no API
//!   credential and a page takes no bearer beside it;
//! - `csrf_signed_out_*`: the sign-up and one-time-link forms refuse a missing login cookie, a
//!   token that is not the cookie's, a foreign Origin and a cross-site `Sec-Fetch-Site`;
//! - `account_links_*`: forged, oversized, replayed and wrong-purpose link tokens; a link of
//!   another purpose is not spent; sign-up answers a taken email exactly like a new one; an
//!   unverified account reaches no data (`email_unverified`).
//!
//! Each check goes through [`Checks`], which counts it; run with `--nocapture` to see the
//! count per test (the issue asks for well over the original system's 34).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bluewave_web::{
    AuthClock, AuthConfig, LOGIN_COOKIE, Method, SESSION_COOKIE, StatusCode, base32_decode, totp_code,
};
use serde_json::{Value, json};

use crate::api::{ADMIN, Answer, Api, PASSWORD, T0, fast_config};
use crate::auth_fixtures::{GenuineToken, b64, now_s, parts, sign_raw};
use crate::forgery::hmac_sha256::sign_hs256;

/// Checks made by the whole suite so far (each test also prints its own count).
static TOTAL: AtomicUsize = AtomicUsize::new(0);

/// Counts every check of one test.
struct Checks {
    name: &'static str,
    count: usize,
}

impl Checks {
    fn new(name: &'static str) -> Self {
        Self { name, count: 0 }
    }

    /// The exact status, and for an error the exact `error` code.
    fn status(&mut self, what: &str, answer: &Answer, status: StatusCode, code: Option<&str>) {
        assert_eq!(answer.status, status, "{what}: body {:?}", answer.body);
        if let Some(code) = code {
            assert_eq!(answer.json()["error"], code, "{what}");
        }
        self.count += 1;
    }

    /// The exact status and the exact `{error, message}` body.
    fn error(&mut self, what: &str, answer: &Answer, status: StatusCode, code: &str, message: &str) {
        assert_eq!(answer.status, status, "{what}: body {:?}", answer.body);
        assert_eq!(answer.json(), json!({ "error": code, "message": message }), "{what}");
        self.count += 1;
    }

    fn that(&mut self, what: &str, holds: bool) {
        assert!(holds, "{what}");
        self.count += 1;
    }
}

impl Drop for Checks {
    fn drop(&mut self) {
        let total = TOTAL.fetch_add(self.count, Ordering::SeqCst) + self.count;
        eprintln!("security::{}: {} checks (suite so far: {total})", self.name, self.count);
    }
}

/// The code of an error status in this API.
fn code_of(status: StatusCode) -> Option<&'static str> {
    match status.as_u16() {
        400 => Some("invalid_json"),
        401 => Some("unauthorized"),
        403 => Some("forbidden"),
        404 => Some("not_found"),
        409 => Some("conflict"),
        _ => None,
    }
}

// ----- token forgery ------------------------------------------------------------------------

/// A genuine admin token of `api`, ready to be forged.
async fn forge(api: &Api) -> GenuineToken {
    GenuineToken::new(api.token(ADMIN).await, api.auth.keys_dir())
}

#[tokio::test]
async fn token_forgery_every_variant_is_refused_with_its_reason() {
    let mut checks = Checks::new("token_forgery");
    let api = Api::start().await;
    let forge = forge(&api).await;
    // Control: the genuine token and a faithful re-signing of it are accepted, so every refusal
    // below is due to the one thing changed.
    checks.status("genuine", &api.get("/api/buoys", &forge.genuine).await, StatusCode::OK, None);
    let copy = sign_raw(&forge.key, &forge.header, &forge.payload);
    checks.status("re-signed copy", &api.get("/api/buoys", &copy).await, StatusCode::OK, None);

    let payload_b64 = b64(forge.payload.to_string().as_bytes());
    let mut none_header = forge.header.clone();
    none_header["alg"] = json!("none");
    let alg_none = format!("{}.{payload_b64}.", b64(none_header.to_string().as_bytes()));
    let attacker = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let other_key = sign_raw(&attacker, &forge.header, &forge.payload);
    let mut hs_header = forge.header.clone();
    hs_header["alg"] = json!("HS256");
    let message = format!("{}.{payload_b64}", b64(hs_header.to_string().as_bytes()));
    let public = forge.key.verifying_key().to_bytes();
    let hs256 = format!("{message}.{}", b64(&sign_hs256(&public, message.as_bytes())));
    let (signed, signature) = forge.genuine.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    let flipped = |bit: usize| {
        let mut sig = signature.clone();
        sig[bit / 8] ^= 1 << (bit % 8);
        format!("{signed}.{}", b64(&sig))
    };
    let now = now_s();
    let refresh_token = api.login(ADMIN).await["refresh_token"].as_str().unwrap().to_owned();
    let admin = api.auth.verify_access_token(&forge.genuine).unwrap();
    let device = api.auth.issue_device_token(&admin, "buoy-a", None).unwrap();

    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", alg_none, "token algorithm not allowed"),
        (
            "alg None, no kid",
            format!("{}.{payload_b64}.", b64(br#"{"alg":"None"}"#)),
            "token algorithm not allowed",
        ),
        ("another Ed25519 key", other_key, "token signature invalid"),
        ("HS256 keyed with the public key", hs256, "token algorithm not allowed"),
        ("signature bit 0 flipped", flipped(0), "token signature invalid"),
        ("signature bit 255 flipped", flipped(255), "token signature invalid"),
        ("signature bit 511 flipped", flipped(511), "token signature invalid"),
        ("signature removed", format!("{signed}."), "token signature invalid"),
        (
            "payload changed, signature kept",
            {
                let mut payload = forge.payload.clone();
                payload["role"] = json!("admin ");
                format!(
                    "{}.{}.{}",
                    b64(forge.header.to_string().as_bytes()),
                    b64(payload.to_string().as_bytes()),
                    b64(&signature)
                )
            },
            "token signature invalid",
        ),
        ("expired an hour ago", forge.with_claim("exp", json!(now - 3_600)), "token expired"),
        ("exp as a string", forge.with_claim("exp", json!((now + 600).to_string())), "token malformed"),
        ("nbf in the future", forge.with_claim("nbf", json!(now + 3_600)), "token not yet valid"),
        ("wrong aud", forge.with_claim("aud", json!("someone-else")), "token audience wrong"),
        ("wrong iss", forge.with_claim("iss", json!("https://evil.example")), "token issuer wrong"),
        ("typ device on an access token", forge.with_claim("typ", json!("device")), "token type wrong"),
        ("refresh token as access token", refresh_token, "token malformed"),
        ("device token as user token", device.token.expose().to_owned(), "token type wrong"),
        ("kid ../../etc/passwd", forge.with_header("kid", json!("../../etc/passwd")), "token key id unknown"),
        ("kid of another length", forge.with_header("kid", json!("0123")), "token key id unknown"),
        (
            "kid absent",
            {
                let mut header = forge.header.clone();
                header.as_object_mut().unwrap().remove("kid");
                sign_raw(&forge.key, &header, &forge.payload)
            },
            "token key id unknown",
        ),
        ("kid as a number", forge.with_header("kid", json!(7)), "token malformed"),
        ("two segments", forge.genuine.rsplit_once('.').unwrap().0.to_owned(), "token malformed"),
        ("8 KiB of padding", format!("{}{}", forge.genuine, "A".repeat(8_192)), "token malformed"),
    ];
    for (what, token, reason) in &cases {
        let answer = api.get("/api/buoys", token).await;
        checks.error(
            what,
            &answer,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            &format!("token refused: {reason}"),
        );
    }
    // A role claim in the token is never trusted: the store's role decides.
    let analyst = api.token("analyst@example.org").await;
    let (header, mut payload) = parts(&analyst);
    payload["role"] = json!("admin");
    let promoted = sign_raw(&forge.key, &header, &payload);
    let answer = api.get("/api/rbac/users", &promoted).await;
    checks.error(
        "role claim raised to admin",
        &answer,
        StatusCode::FORBIDDEN,
        "forbidden",
        "permission users:manage required",
    );
}

// ----- refresh reuse and races --------------------------------------------------------------

#[tokio::test]
async fn refresh_reuse_revokes_the_family_and_concurrent_refreshes_have_one_winner() {
    let mut checks = Checks::new("refresh");
    let api = Api::start().await;
    let first = api.login(ADMIN).await;
    let spend = |token: &Value| json!({ "refresh_token": token });
    let second = api.post("/api/auth/refresh", None, spend(&first["refresh_token"])).await;
    checks.status("first refresh", &second, StatusCode::OK, None);
    let second = second.json();
    let reused = api.post("/api/auth/refresh", None, spend(&first["refresh_token"])).await;
    checks.error(
        "reuse of a spent token",
        &reused,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "refresh token reused; session revoked",
    );
    let heir = api.post("/api/auth/refresh", None, spend(&second["refresh_token"])).await;
    checks.status(
        "the family's live token after reuse",
        &heir,
        StatusCode::UNAUTHORIZED,
        Some("unauthorized"),
    );

    // Two refreshes of one token at once: exactly one wins, whatever the interleaving.
    for round in 0..3 {
        let pair = api.login(ADMIN).await;
        let body = spend(&pair["refresh_token"]);
        let (a, b) = tokio::join!(
            api.post("/api/auth/refresh", None, body.clone()),
            api.post("/api/auth/refresh", None, body.clone())
        );
        let mut statuses = [a.status.as_u16(), b.status.as_u16()];
        statuses.sort_unstable();
        checks.that(&format!("round {round}: one winner, one 401 ({statuses:?})"), statuses == [200, 401]);
    }
}

// ----- brute force --------------------------------------------------------------------------

#[tokio::test]
async fn brute_force_per_ip_limit_answers_429_with_retry_after() {
    let mut checks = Checks::new("brute_force_ip");
    let api = Api::start_with(fast_config(3)).await;
    let wrong = json!({ "email": ADMIN, "password": "wrong-password-123" });
    for attempt in 0..3 {
        let answer = api.post("/api/auth/token", None, wrong.clone()).await;
        checks.error(
            &format!("attempt {attempt}"),
            &answer,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid email or password",
        );
    }
    // The limit holds for the right password too: the attacker learns nothing from it.
    for body in [wrong, json!({ "email": ADMIN, "password": PASSWORD })] {
        let answer = api.post("/api/auth/token", None, body).await;
        checks.status("over the per-IP limit", &answer, StatusCode::TOO_MANY_REQUESTS, Some("rate_limited"));
        let retry_after: u64 = answer.header("retry-after").parse().unwrap();
        checks.that("Retry-After within the minute", (1..=60).contains(&retry_after));
    }
}

#[tokio::test]
async fn brute_force_per_account_backoff_answers_429() {
    let mut checks = Checks::new("brute_force_account");
    let api = Api::start().await;
    let wrong = json!({ "email": ADMIN, "password": "wrong-password-123" });
    for attempt in 0..bluewave_web::ACCOUNT_FAILURES_FREE {
        let answer = api.post("/api/auth/token", None, wrong.clone()).await;
        checks.status(
            &format!("free attempt {attempt}"),
            &answer,
            StatusCode::UNAUTHORIZED,
            Some("unauthorized"),
        );
    }
    let answer = api.post("/api/auth/token", None, wrong).await;
    checks.status("after the free attempts", &answer, StatusCode::TOO_MANY_REQUESTS, Some("rate_limited"));
    checks.that("Retry-After present", answer.header("retry-after").parse::<u64>().is_ok_and(|s| s >= 1));
    // Another account from the same client is not locked by it.
    let other = json!({ "email": "analyst@example.org", "password": PASSWORD });
    checks.status("another account", &api.post("/api/auth/token", None, other).await, StatusCode::OK, None);
}

// ----- function level -----------------------------------------------------------------------

/// Callers of the function-level table, in column order.
const ROLES: [&str; 6] = ["admin", "operator", "analyst", "customer", "device", "anonymous"];

/// One endpoint: the OpenAPI operation it stands for, the request sent, and the status each
/// role gets.
struct Row {
    method: Method,
    template: &'static str,
    path: String,
    body: Option<Value>,
    expect: [u16; 6],
    /// The `error` code of a 400 when it is not `invalid_json`.
    code_400: Option<&'static str>,
}

impl Row {
    fn with_400(mut self, code: &'static str) -> Self {
        self.code_400 = Some(code);
        self
    }
}

fn row(
    method: Method,
    template: &'static str,
    path: impl Into<String>,
    body: Option<Value>,
    expect: [u16; 6],
) -> Row {
    Row { method, template, path: path.into(), body, expect, code_400: None }
}

#[tokio::test]
async fn function_level_every_endpoint_times_every_role() {
    let mut checks = Checks::new("function_level");
    let api = Api::start().await;
    api.seed().await;
    let admin = api.token(ADMIN).await;
    // A spare account for the user-management rows, and a third buoy to retire.
    let created = api
        .post(
            "/api/rbac/users",
            Some(&admin),
            json!({ "email": "spare@example.org", "password": PASSWORD, "role": "customer" }),
        )
        .await;
    checks.status("spare account", &created, StatusCode::CREATED, None);
    let spare = created.json()["id"].as_str().unwrap().to_owned();
    let buoy_c = json!({ "id": "buoy-c", "name": "c", "lat": null, "lng": null, "status": "active" });
    checks.status("buoy-c", &api.post("/api/buoys", Some(&admin), buoy_c).await, StatusCode::CREATED, None);
    let reading = api.get("/api/telemetry?buoy_id=buoy-a", &admin).await.json()["rows"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let missing_reading = URL_SAFE_NO_PAD.encode(format!("buoy-a/salinity_psu/{}", T0 + 7));
    let admin_caller = api.auth.verify_access_token(&admin).unwrap();
    let device =
        api.auth.issue_device_token(&admin_caller, "buoy-a", None).unwrap().token.expose().to_owned();
    let customer_token = api.token("customer@example.org").await;
    let customer_id = api.auth.verify_access_token(&customer_token).unwrap().user_id().to_owned();
    let tokens = [
        Some(admin.clone()),
        Some(api.token("operator@example.org").await),
        Some(api.token("analyst@example.org").await),
        Some(customer_token),
        Some(device),
        None,
    ];

    use Method as M;
    let batch = json!({ "buoy_id": "buoy-a", "batch_seq": 100, "readings": [
        { "metric": "ph", "ts": "2026-01-01T00:00:05Z", "value": 8.1 }] });
    let buoy_a = json!({ "name": "A", "lat": 1.0, "lng": 2.0, "status": "active" });
    let empty_range = json!({ "buoy_id": "buoy-b", "start": T0 + 100_000_000_000_i64,
        "end": "2026-01-01T00:03:20Z" });
    let plan = json!({ "name": "p", "buoys": ["buoy-a"], "history_days": 30,
        "daily_query_quota": null, "row_limit": null });
    let table = vec![
        row(
            M::POST,
            "/api/auth/token",
            "/api/auth/token",
            Some(json!({ "email": "x@example.org" })),
            [400, 400, 400, 400, 400, 400],
        ),
        row(
            M::POST,
            "/api/auth/refresh",
            "/api/auth/refresh",
            Some(json!({ "refresh_token": "bogus" })),
            [401, 401, 401, 401, 401, 401],
        ),
        row(
            M::POST,
            "/api/auth/logout",
            "/api/auth/logout",
            Some(json!({ "refresh_token": "bogus" })),
            [401, 401, 401, 401, 401, 401],
        ),
        row(
            M::POST,
            "/api/auth/mfa",
            "/api/auth/mfa",
            Some(json!({ "challenge": "bogus", "code": "123456" })),
            [401, 401, 401, 401, 401, 401],
        ),
        row(M::POST, "/api/auth/mfa/enrol", "/api/auth/mfa/enrol", None, [200, 200, 200, 200, 401, 401]),
        row(
            M::POST,
            "/api/auth/mfa/confirm",
            "/api/auth/mfa/confirm",
            Some(json!({ "code": "not-a-code" })),
            [401, 401, 401, 401, 401, 401],
        ),
        row(
            M::POST,
            "/api/auth/mfa/step-up",
            "/api/auth/mfa/step-up",
            Some(json!({ "code": "not-a-code" })),
            [401, 401, 401, 401, 401, 401],
        ),
        row(
            M::POST,
            "/api/auth/mfa/disable",
            "/api/auth/mfa/disable",
            Some(json!({ "code": "not-a-code" })),
            [401, 401, 401, 401, 401, 401],
        ),
        row(M::GET, "/api/auth/sessions", "/api/auth/sessions", None, [200, 200, 200, 200, 401, 401]),
        row(
            M::DELETE,
            "/api/auth/sessions/{id}",
            "/api/auth/sessions/0123456789abcdef0123456789abcdef",
            None,
            [404, 404, 404, 404, 401, 401],
        ),
        row(M::GET, "/api/telemetry", "/api/telemetry?buoy_id=buoy-a", None, [200, 200, 200, 404, 401, 401]),
        row(M::POST, "/api/telemetry", "/api/telemetry", Some(batch), [200, 200, 403, 403, 401, 401]),
        // A JSON body is not line protocol: writers get its per-line refusal.
        row(M::POST, "/api/v2/write", "/api/v2/write", Some(json!({})), [400, 400, 403, 403, 400, 401]),
        row(M::POST, "/write", "/write?db=x", Some(json!({})), [400, 400, 403, 403, 400, 401]),
        row(
            M::GET,
            "/api/telemetry/{id}",
            format!("/api/telemetry/{reading}"),
            None,
            [200, 200, 200, 404, 401, 401],
        ),
        row(
            M::DELETE,
            "/api/telemetry/{id}",
            format!("/api/telemetry/{missing_reading}"),
            None,
            [404, 404, 403, 403, 401, 401],
        ),
        row(
            M::PUT,
            "/api/telemetry/{id}",
            format!("/api/telemetry/{missing_reading}"),
            Some(json!({ "value": 1.5 })),
            [404, 404, 403, 403, 401, 401],
        ),
        row(
            M::POST,
            "/api/telemetry/delete",
            "/api/telemetry/delete",
            Some(empty_range),
            [204, 204, 403, 403, 401, 401],
        ),
        row(
            M::POST,
            "/api/query",
            "/api/query",
            Some(json!({ "sql": "SELECT 1 AS one" })),
            [200, 200, 200, 403, 401, 401],
        ),
        row(M::GET, "/api/buoys", "/api/buoys", None, [200, 200, 200, 200, 401, 401]),
        row(
            M::POST,
            "/api/buoys",
            "/api/buoys",
            Some(json!({ "id": "buoy-a", "name": "a", "lat": null, "lng": null, "status": "active" })),
            [409, 409, 403, 403, 401, 401],
        ),
        row(M::GET, "/api/buoys/{id}", "/api/buoys/buoy-a", None, [200, 200, 200, 404, 401, 401]),
        row(M::PUT, "/api/buoys/{id}", "/api/buoys/buoy-a", Some(buoy_a), [200, 200, 403, 403, 401, 401]),
        row(M::DELETE, "/api/buoys/{id}", "/api/buoys/buoy-c", None, [204, 204, 403, 403, 401, 401]),
        row(
            M::POST,
            "/api/buoys/{id}/device-tokens",
            "/api/buoys/buoy-a/device-tokens",
            Some(json!({})),
            [201, 201, 403, 403, 401, 401],
        ),
        row(
            M::GET,
            "/api/buoys/{id}/device-tokens",
            "/api/buoys/buoy-a/device-tokens",
            None,
            [200, 200, 403, 403, 401, 401],
        ),
        row(
            M::DELETE,
            "/api/device-tokens/{jti}",
            "/api/device-tokens/0123456789abcdef0123456789abcdef",
            None,
            [404, 404, 403, 403, 401, 401],
        ),
        row(M::GET, "/api/rbac/roles", "/api/rbac/roles", None, [200, 403, 403, 403, 401, 401]),
        row(M::GET, "/api/rbac/users", "/api/rbac/users", None, [200, 403, 403, 403, 401, 401]),
        row(
            M::POST,
            "/api/rbac/users",
            "/api/rbac/users",
            Some(json!({ "email": "new@example.org", "password": PASSWORD, "role": "customer" })),
            [201, 403, 403, 403, 401, 401],
        ),
        row(
            M::GET,
            "/api/rbac/users/{id}",
            format!("/api/rbac/users/{customer_id}"),
            None,
            [200, 404, 404, 200, 401, 401],
        ),
        row(
            M::PUT,
            "/api/rbac/users/{id}/role",
            format!("/api/rbac/users/{spare}/role"),
            Some(json!({ "role": "analyst" })),
            [200, 403, 403, 403, 401, 401],
        ),
        row(
            M::PUT,
            "/api/rbac/users/{id}/status",
            format!("/api/rbac/users/{spare}/status"),
            Some(json!({ "status": "active" })),
            [200, 403, 403, 403, 401, 401],
        ),
        row(
            M::PUT,
            "/api/rbac/users/{id}/plan",
            format!("/api/rbac/users/{spare}/plan"),
            Some(json!({ "plan_id": null })),
            [204, 403, 403, 403, 401, 401],
        ),
        row(M::GET, "/api/rbac/plans", "/api/rbac/plans", None, [200, 200, 200, 200, 401, 401]),
        row(M::POST, "/api/rbac/plans", "/api/rbac/plans", Some(plan), [201, 403, 403, 403, 401, 401]),
        row(M::GET, "/api/usage", "/api/usage", None, [200, 200, 200, 200, 401, 401]),
        row(
            M::GET,
            "/api/rbac/audit-log",
            "/api/rbac/audit-log?limit=5",
            None,
            [200, 403, 403, 403, 401, 401],
        ),
        // Accounts for people: sign-up and the one-time links take no bearer; the rest do.
        row(
            M::POST,
            "/api/auth/register",
            "/api/auth/register",
            Some(json!({ "email": "x@example.org" })),
            [400, 400, 400, 400, 400, 400],
        ),
        row(M::POST, "/api/auth/verify", "/api/auth/verify", Some(json!({})), [400, 400, 400, 400, 400, 400]),
        row(
            M::POST,
            "/api/auth/verify/resend",
            "/api/auth/verify/resend",
            None,
            [400, 400, 400, 400, 401, 401],
        )
        .with_400("invalid_input"),
        row(
            M::POST,
            "/api/auth/password-reset/request",
            "/api/auth/password-reset/request",
            Some(json!({})),
            [400, 400, 400, 400, 400, 400],
        ),
        row(
            M::POST,
            "/api/auth/password-reset",
            "/api/auth/password-reset",
            Some(json!({ "token": "x" })),
            [400, 400, 400, 400, 400, 400],
        ),
        row(M::POST, "/api/auth/email", "/api/auth/email", Some(json!({})), [400, 400, 400, 400, 401, 401]),
        row(
            M::POST,
            "/api/auth/email/confirm",
            "/api/auth/email/confirm",
            Some(json!({})),
            [400, 400, 400, 400, 400, 400],
        ),
        row(
            M::POST,
            "/api/auth/password",
            "/api/auth/password",
            Some(json!({})),
            [400, 400, 400, 400, 401, 401],
        ),
        row(M::GET, "/api/auth/me", "/api/auth/me", None, [200, 200, 200, 200, 401, 401]),
        row(
            M::DELETE,
            "/api/rbac/users/{id}/sessions",
            format!("/api/rbac/users/{spare}/sessions"),
            None,
            [200, 403, 403, 403, 401, 401],
        ),
        row(M::GET, "/api/openapi.json", "/api/openapi.json", None, [200, 200, 200, 200, 200, 200]),
        row(M::GET, "/api/docs", "/api/docs", None, [200, 200, 200, 200, 200, 200]),
        row(M::GET, "/healthz", "/healthz", None, [200, 200, 200, 200, 200, 200]),
        row(M::GET, "/metrics", "/metrics", None, [200, 200, 200, 200, 200, 200]),
        // Last: it ends the sessions and access tokens of everyone it succeeds for.
        row(M::POST, "/api/auth/logout-all", "/api/auth/logout-all", None, [204, 204, 204, 204, 401, 401]),
    ];

    // The table covers exactly the operations of the OpenAPI document.
    let doc = api.request(Method::GET, "/api/openapi.json", None, &[], None).await.json();
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object().unwrap().keys().map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    let tabled: BTreeSet<(String, String)> =
        table.iter().map(|row| (row.method.to_string(), row.template.to_owned())).collect();
    assert_eq!(tabled.len(), table.len(), "one row per operation");
    checks.that(
        &format!(
            "table == OpenAPI operations; undocumented rows: {:?}; operations without a row: {:?}",
            tabled.difference(&documented).collect::<Vec<_>>(),
            documented.difference(&tabled).collect::<Vec<_>>()
        ),
        tabled == documented,
    );

    for row in &table {
        for ((role, token), expected) in ROLES.iter().zip(&tokens).zip(row.expect) {
            let answer =
                api.request(row.method.clone(), &row.path, token.as_deref(), &[], row.body.clone()).await;
            let expected = StatusCode::from_u16(expected).unwrap();
            let what = format!("{role} {} {}", row.method, row.path);
            let code = if row.template.ends_with("write") && expected == StatusCode::BAD_REQUEST {
                Some("invalid_line_protocol")
            } else if let (Some(code), StatusCode::BAD_REQUEST) = (row.code_400, expected) {
                Some(code)
            } else {
                code_of(expected)
            };
            checks.status(&what, &answer, expected, code);
        }
    }
}

// ----- object level -------------------------------------------------------------------------

#[tokio::test]
async fn object_level_analyst_never_learns_of_buoys_outside_the_plan() {
    let mut checks = Checks::new("object_level_buoys");
    let api = Api::start().await;
    api.seed().await;
    let operator = api.token("operator@example.org").await;
    let analyst = api.token("analyst@example.org").await;
    let rows = api.get("/api/telemetry?buoy_id=buoy-b", &operator).await.json()["rows"].clone();
    let foreign = rows[0]["id"].as_str().unwrap().to_owned();
    let own = api.get("/api/telemetry?buoy_id=buoy-a", &analyst).await.json()["rows"][0].clone();

    checks.status(
        "own reading by id",
        &api.get(&format!("/api/telemetry/{}", own["id"].as_str().unwrap()), &analyst).await,
        StatusCode::OK,
        None,
    );
    let answer = api.get(&format!("/api/telemetry/{foreign}"), &analyst).await;
    checks.error("foreign reading by id", &answer, StatusCode::NOT_FOUND, "not_found", "no such reading");
    let unknown = URL_SAFE_NO_PAD.encode(format!("buoy-z/salinity_psu/{T0}"));
    let answer = api.get(&format!("/api/telemetry/{unknown}"), &analyst).await;
    checks.error(
        "unknown buoy's reading: same answer",
        &answer,
        StatusCode::NOT_FOUND,
        "not_found",
        "no such reading",
    );
    let answer = api.get("/api/buoys/buoy-b", &analyst).await;
    checks.error("foreign buoy", &answer, StatusCode::NOT_FOUND, "not_found", "no such buoy");
    let answer = api.get("/api/buoys/buoy-z", &analyst).await;
    checks.error("unknown buoy: same answer", &answer, StatusCode::NOT_FOUND, "not_found", "no such buoy");
    let answer = api.get("/api/telemetry?buoy_id=buoy-b", &analyst).await;
    checks.error("foreign telemetry", &answer, StatusCode::NOT_FOUND, "not_found", "no such buoy");
    let listed = api.get("/api/buoys", &analyst).await.json();
    checks.that(
        "buoy list holds only the plan's buoy",
        listed.as_array().unwrap().iter().map(|b| b["id"].clone()).collect::<Vec<_>>() == [json!("buoy-a")],
    );
    for (what, sql) in [
        ("WHERE on a foreign buoy", "SELECT * FROM readings WHERE buoy_id = 'buoy-b'"),
        ("count of everything", "SELECT buoy_id FROM readings WHERE buoy_id <> 'buoy-a'"),
        ("buoys table", "SELECT id FROM buoys WHERE id = 'buoy-b'"),
    ] {
        let answer = api.post("/api/query", Some(&analyst), json!({ "sql": sql })).await;
        checks.status(what, &answer, StatusCode::OK, None);
        checks.that(&format!("{what}: no rows"), answer.json() == json!([]));
    }
    let answer =
        api.post("/api/query", Some(&analyst), json!({ "sql": "SELECT count(*) AS n FROM readings" })).await;
    checks.that("count covers the plan only", answer.json() == json!([{ "n": 2 }]));
    // An operator deleting by id works on any buoy; the reading is then gone for everyone.
    let answer =
        api.request(Method::DELETE, &format!("/api/telemetry/{foreign}"), Some(&operator), &[], None).await;
    checks.status("operator deletes a reading", &answer, StatusCode::NO_CONTENT, None);
    let answer = api.get(&format!("/api/telemetry/{foreign}"), &operator).await;
    checks.error("deleted reading", &answer, StatusCode::NOT_FOUND, "not_found", "no such reading");
}

#[tokio::test]
async fn object_level_user_a_cannot_reach_user_b_account_or_sessions() {
    let mut checks = Checks::new("object_level_users");
    let api = Api::start().await;
    let customer = api.login("customer@example.org").await;
    let customer_token = customer["access_token"].as_str().unwrap();
    let customer_id = api.auth.verify_access_token(customer_token).unwrap().user_id().to_owned();
    let analyst = api.token("analyst@example.org").await;
    let sessions = api.get("/api/auth/sessions", customer_token).await.json();
    let session = sessions[0]["session_id"].as_str().unwrap().to_owned();
    checks.that("one session listed", sessions.as_array().unwrap().len() == 1);

    let answer = api.get(&format!("/api/rbac/users/{customer_id}"), &analyst).await;
    checks.error("another account", &answer, StatusCode::NOT_FOUND, "not_found", "no such user");
    let answer = api.get(&format!("/api/rbac/users/{customer_id}"), customer_token).await;
    checks.status("own account", &answer, StatusCode::OK, None);
    checks.that("own account shows no hash", answer.json().get("password_hash").is_none());
    let analyst_sessions = api.get("/api/auth/sessions", &analyst).await.json();
    checks.that(
        "sessions list only the caller's",
        !analyst_sessions.as_array().unwrap().iter().any(|s| s["session_id"] == session.as_str()),
    );
    let path = format!("/api/auth/sessions/{session}");
    let answer = api.request(Method::DELETE, &path, Some(&analyst), &[], None).await;
    checks.error("another user's session", &answer, StatusCode::NOT_FOUND, "not_found", "no such session");
    let refreshed =
        api.post("/api/auth/refresh", None, json!({ "refresh_token": customer["refresh_token"] })).await;
    checks.status("the session survived", &refreshed, StatusCode::OK, None);
    // Nobody grants a role above their own, nor touches an account above their own.
    let operator_token = api.token("operator@example.org").await;
    let admin_token = api.token(ADMIN).await;
    let admin_id = api.auth.verify_access_token(&admin_token).unwrap().user_id().to_owned();
    api.auth
        .set_role_permissions(
            &api.auth.verify_access_token(&admin_token).unwrap(),
            bluewave_web::Role::Operator,
            bluewave_web::Role::Operator
                .default_permissions()
                .into_iter()
                .chain([bluewave_web::Permission::UsersManage])
                .collect(),
        )
        .unwrap();
    let up = api
        .request(
            Method::PUT,
            &format!("/api/rbac/users/{customer_id}/role"),
            Some(&operator_token),
            &[],
            Some(json!({ "role": "admin" })),
        )
        .await;
    checks.error(
        "operator grants admin",
        &up,
        StatusCode::FORBIDDEN,
        "forbidden",
        "cannot assign or manage role admin (above your own)",
    );
    let down = api
        .request(
            Method::PUT,
            &format!("/api/rbac/users/{admin_id}/status"),
            Some(&operator_token),
            &[],
            Some(json!({ "status": "disabled" })),
        )
        .await;
    checks.error(
        "operator disables an admin",
        &down,
        StatusCode::FORBIDDEN,
        "forbidden",
        "cannot assign or manage role admin (above your own)",
    );
    let create = api
        .post(
            "/api/rbac/users",
            Some(&operator_token),
            json!({ "email": "boss@example.org", "password": PASSWORD, "role": "admin" }),
        )
        .await;
    checks.error(
        "operator creates an admin",
        &create,
        StatusCode::FORBIDDEN,
        "forbidden",
        "cannot assign or manage role admin (above your own)",
    );
    let fine = api
        .request(
            Method::PUT,
            &format!("/api/rbac/users/{customer_id}/role"),
            Some(&operator_token),
            &[],
            Some(json!({ "role": "analyst" })),
        )
        .await;
    checks.status("operator grants analyst", &fine, StatusCode::OK, None);
    // The role change ended the customer's access tokens at once.
    let stale = api.get("/api/buoys", customer_token).await;
    checks.error(
        "token after a role change",
        &stale,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "token refused: token revoked",
    );
}

// ----- SQL abuse ----------------------------------------------------------------------------

#[tokio::test]
async fn sql_abuse_is_refused_before_it_runs() {
    let mut checks = Checks::new("sql_abuse");
    let api = Api::start().await;
    api.seed().await;
    let analyst = api.token("analyst@example.org").await;
    for sql in [
        "DROP TABLE readings",
        "CREATE TABLE stolen AS SELECT * FROM readings",
        "CREATE VIEW v AS SELECT 1",
        "CREATE EXTERNAL TABLE pw (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'",
        "INSERT INTO readings VALUES ('buoy-b', 'ph', 0, 1.0, 0)",
        "DELETE FROM readings",
        "UPDATE readings SET value = 0",
        "COPY readings TO '/tmp/stolen.parquet'",
        "COPY (SELECT 1) TO '/tmp/x.csv' STORED AS CSV",
        "SET datafusion.execution.batch_size = 1",
        "SELECT 1; SELECT 2",
        "SELECT 1; DROP TABLE readings",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM 'file:///etc/passwd'",
        "SELECT * FROM 'https://example.org/x.parquet'",
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM information_schema.df_settings",
        "SHOW ALL",
        "SELECT * FROM read_parquet('/etc/passwd')",
        "",
    ] {
        let answer = api.post("/api/query", Some(&analyst), json!({ "sql": sql })).await;
        checks.status(sql, &answer, StatusCode::BAD_REQUEST, Some("invalid_input"));
    }
}

// ----- malformed requests -------------------------------------------------------------------

#[tokio::test]
async fn malformed_bodies_sizes_types_and_paths_are_refused() {
    let mut checks = Checks::new("malformed");
    let api = Api::start().await;
    api.seed().await;
    let operator = api.token("operator@example.org").await;

    // Oversized: the default 1 MiB limit, and the ingest route's own 4 MiB limit.
    let big = vec![b' '; 1024 * 1024 + 1];
    let answer = api.request_bytes(Method::POST, "/api/auth/token", None, "application/json", big).await;
    checks.status(
        "login body above 1 MiB",
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        Some("payload_too_large"),
    );
    let answer = api
        .request_bytes(Method::POST, "/api/query", Some(&operator), "application/json", vec![b' '; 2 << 20])
        .await;
    checks.status(
        "query body above 1 MiB",
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        Some("payload_too_large"),
    );
    let huge = vec![b' '; (4 << 20) + 1];
    let answer =
        api.request_bytes(Method::POST, "/api/telemetry", Some(&operator), "application/json", huge).await;
    checks.status(
        "ingest body above 4 MiB",
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        Some("payload_too_large"),
    );

    // Malformed JSON.
    for (what, body) in [
        ("truncated", &b"{\"email\":"[..]),
        ("not JSON", b"email=admin"),
        ("wrong type", br#"{"email": 1, "password": "x"}"#),
        ("unknown field", br#"{"email": "a@b.c", "password": "x", "role": "admin"}"#),
        ("array", b"[]"),
        ("empty", b""),
    ] {
        let answer =
            api.request_bytes(Method::POST, "/api/auth/token", None, "application/json", body.to_vec()).await;
        checks.status(what, &answer, StatusCode::BAD_REQUEST, Some("invalid_json"));
    }
    let nan =
        br#"{"buoy_id": "buoy-a", "batch_seq": 50, "readings": [{"metric": "ph", "ts": 1, "value": NaN}]}"#;
    let answer = api
        .request_bytes(Method::POST, "/api/telemetry", Some(&operator), "application/json", nan.to_vec())
        .await;
    checks.status("NaN value", &answer, StatusCode::BAD_REQUEST, Some("invalid_json"));
    let bad_time = json!({ "buoy_id": "buoy-a", "batch_seq": 51, "readings": [{ "metric": "ph", "ts": "yesterday", "value": 1.0 }] });
    let answer = api.post("/api/telemetry", Some(&operator), bad_time).await;
    checks.status("ts neither ns nor RFC 3339", &answer, StatusCode::BAD_REQUEST, Some("invalid_input"));
    let answer = api.get("/api/telemetry?start=2026-13-01T00:00:00Z", &operator).await;
    checks.status("start not a date", &answer, StatusCode::BAD_REQUEST, Some("invalid_input"));
    let answer = api.get("/api/telemetry?limit=-1", &operator).await;
    checks.status("negative limit", &answer, StatusCode::BAD_REQUEST, Some("invalid_query"));
    let answer = api
        .request_bytes(
            Method::POST,
            "/api/auth/token",
            None,
            "text/plain",
            br#"{"email": "a@b.c", "password": "x"}"#.to_vec(),
        )
        .await;
    checks.status(
        "text/plain body",
        &answer,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Some("unsupported_media_type"),
    );

    // Path traversal and hostile ids.
    for (what, path, status, code) in [
        ("dot-dot segment", "/api/buoys/../rbac/roles", 400, "invalid_path"),
        ("encoded dot-dot", "/api/buoys/%2e%2e", 400, "invalid_path"),
        ("encoded slash", "/api/telemetry/..%2F..%2Fkeys", 400, "invalid_path"),
        ("NUL byte", "/api/buoys/buoy-a%00", 400, "invalid_path"),
        ("double slash", "/api//buoys", 400, "invalid_path"),
        ("unknown buoy id", "/api/buoys/..buoy", 404, "not_found"),
        (
            "reading id of a traversal",
            &format!("/api/telemetry/{}", URL_SAFE_NO_PAD.encode("../../etc/passwd")),
            400,
            "invalid_input",
        ),
        ("reading id not base64", "/api/telemetry/not.an.id", 400, "invalid_input"),
        ("overlong reading id", &format!("/api/telemetry/{}", "A".repeat(300)), 400, "invalid_input"),
        ("device token id of a traversal", "/api/device-tokens/..keys..", 404, "not_found"),
    ] {
        let method = if what.starts_with("device") { Method::DELETE } else { Method::GET };
        let answer = api.request(method, path, Some(&operator), &[], None).await;
        checks.status(what, &answer, StatusCode::from_u16(status).unwrap(), Some(code));
    }
}

// ----- accounts for people: MFA, revocation, step-up ----------------------------------------

/// A server whose operators must have MFA, on a manual auth clock; the operator enrolled.
/// Returns the API, the clock, the operator's TOTP secret and backup codes.
async fn mfa_server() -> (Api, AuthClock, Vec<u8>, Vec<String>) {
    let clock = AuthClock::manual(1_800_000_010);
    let config = AuthConfig {
        clock: clock.clone(),
        mfa_required_roles: BTreeSet::from([bluewave_web::Role::Operator]),
        ..fast_config(10_000)
    };
    let api = Api::start_with(config).await;
    let token = api.token("operator@example.org").await;
    let enrol = api.post("/api/auth/mfa/enrol", Some(&token), json!({})).await.json();
    let secret = base32_decode(enrol["secret"].as_str().unwrap()).unwrap();
    let code = totp_code(&secret, clock.now_s()).unwrap();
    let confirmed = api.post("/api/auth/mfa/confirm", Some(&token), json!({ "code": code })).await.json();
    let backup = confirmed["backup_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned());
    (api, clock, secret, backup.collect())
}

async fn challenge(api: &Api, email: &str) -> String {
    let answer = api.post("/api/auth/token", None, json!({ "email": email, "password": PASSWORD })).await;
    answer.json()["mfa_challenge"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn mfa_pending_grants_nothing_and_codes_resist_replay_and_guessing() {
    let mut checks = Checks::new("mfa");
    let (api, clock, secret, backup) = mfa_server().await;
    let operator = "operator@example.org";

    // "Password OK, MFA pending" gives no token, and the challenge is no bearer credential.
    let answer = api.post("/api/auth/token", None, json!({ "email": operator, "password": PASSWORD })).await;
    checks.that("no access token before MFA", answer.json().get("access_token").is_none());
    checks.that("no refresh token before MFA", answer.json().get("refresh_token").is_none());
    let pending = answer.json()["mfa_challenge"].as_str().unwrap().to_owned();
    let as_bearer = api.get("/api/buoys", &pending).await;
    checks.error(
        "challenge as bearer",
        &as_bearer,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "token refused: token malformed",
    );
    let as_refresh = api.post("/api/auth/refresh", None, json!({ "refresh_token": pending })).await;
    checks.error(
        "challenge as refresh token",
        &as_refresh,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "refresh token invalid",
    );
    let forged =
        api.post("/api/auth/mfa", None, json!({ "challenge": "x".repeat(43), "code": "123456" })).await;
    checks.error(
        "invented challenge",
        &forged,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "MFA challenge invalid or expired; sign in again",
    );
    let huge =
        api.post("/api/auth/mfa", None, json!({ "challenge": pending, "code": "1".repeat(10_000) })).await;
    checks.error("oversized code", &huge, StatusCode::UNAUTHORIZED, "unauthorized", "MFA code invalid");

    // A used TOTP code is refused within its window; a used backup code forever.
    let later = clock.now_s() + 90;
    clock.set_s(later);
    let code = totp_code(&secret, later).unwrap();
    let first = api.post("/api/auth/mfa", None, json!({ "challenge": pending, "code": code })).await;
    checks.status("right code", &first, StatusCode::OK, None);
    let again = challenge(&api, operator).await;
    let replay = api.post("/api/auth/mfa", None, json!({ "challenge": again, "code": code })).await;
    checks.error("TOTP replay", &replay, StatusCode::UNAUTHORIZED, "unauthorized", "MFA code invalid");
    let used = api.post("/api/auth/mfa", None, json!({ "challenge": again, "code": backup[0] })).await;
    checks.status("backup code", &used, StatusCode::OK, None);
    let again = challenge(&api, operator).await;
    let reused = api.post("/api/auth/mfa", None, json!({ "challenge": again, "code": backup[0] })).await;
    checks.error("backup code reuse", &reused, StatusCode::UNAUTHORIZED, "unauthorized", "MFA code invalid");

    // Guessing: the fifth wrong code ends the challenge; the right code cannot revive it.
    for i in 1..5 {
        let wrong =
            api.post("/api/auth/mfa", None, json!({ "challenge": again, "code": format!("00000{i}") })).await;
        checks.error("wrong code", &wrong, StatusCode::UNAUTHORIZED, "unauthorized", "MFA code invalid");
    }
    let right = totp_code(&secret, later + 30).unwrap();
    let dead = api.post("/api/auth/mfa", None, json!({ "challenge": again, "code": right })).await;
    checks.error(
        "challenge after five wrong codes",
        &dead,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "MFA challenge invalid or expired; sign in again",
    );
}

#[tokio::test]
async fn enrol_only_tokens_revoked_sessions_and_stale_auth_are_refused() {
    let mut checks = Checks::new("accounts");
    let clock = AuthClock::manual(1_800_000_010);
    let config = AuthConfig {
        clock: clock.clone(),
        mfa_required_roles: BTreeSet::from([bluewave_web::Role::Operator]),
        ..fast_config(10_000)
    };
    let api = Api::start_with(config).await;

    // A role that requires MFA, not enrolled: every endpoint but enrolment answers 403.
    let enrol_only = api.token("operator@example.org").await;
    let message = "MFA enrolment required: POST /api/auth/mfa/enrol, then /api/auth/mfa/confirm";
    for (method, path) in [
        (Method::GET, "/api/buoys"),
        (Method::GET, "/api/telemetry?buoy_id=buoy-a"),
        (Method::GET, "/api/auth/sessions"),
        (Method::POST, "/api/auth/logout-all"),
        (Method::POST, "/api/auth/mfa/step-up"),
    ] {
        let body = (method == Method::POST).then(|| json!({ "code": "123456" }));
        let answer = api.request(method, path, Some(&enrol_only), &[], body).await;
        checks.error(path, &answer, StatusCode::FORBIDDEN, "forbidden", message);
    }

    // A session's access token stops the moment the session ends.
    let admin = api.login(ADMIN).await;
    let access = admin["access_token"].as_str().unwrap().to_owned();
    checks.status("live session", &api.get("/api/buoys", &access).await, StatusCode::OK, None);
    let logout = api.post("/api/auth/logout", None, json!({ "refresh_token": admin["refresh_token"] })).await;
    checks.status("logout", &logout, StatusCode::NO_CONTENT, None);
    let after = api.get("/api/buoys", &access).await;
    checks.error(
        "token of a logged-out session",
        &after,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "token refused: token revoked",
    );

    // A stolen, older token of a live session cannot re-role, disable, mint or delete.
    let admin = api.token(ADMIN).await;
    let buoy = json!({ "id": "buoy-a", "name": "a", "lat": null, "lng": null, "status": "active" });
    checks.status("buoy-a", &api.post("/api/buoys", Some(&admin), buoy).await, StatusCode::CREATED, None);
    clock.advance_s(601);
    let users = api.get("/api/rbac/users", &admin).await.json();
    let customer = users.as_array().unwrap().iter().find(|u| u["email"] == "customer@example.org").unwrap();
    let id = customer["id"].as_str().unwrap();
    for (method, path, body) in [
        (Method::PUT, format!("/api/rbac/users/{id}/role"), json!({ "role": "admin" })),
        (Method::PUT, format!("/api/rbac/users/{id}/status"), json!({ "status": "disabled" })),
        (Method::POST, "/api/buoys/buoy-a/device-tokens".to_owned(), json!({})),
        (
            Method::POST,
            "/api/telemetry/delete".to_owned(),
            json!({ "buoy_id": "buoy-a", "start": 0, "end": 1 }),
        ),
    ] {
        let answer = api.request(method, &path, Some(&admin), &[], Some(body)).await;
        checks.status(&path, &answer, StatusCode::UNAUTHORIZED, None);
        checks.that("step-up code", answer.json()["error"] == "step_up_required");
    }
}

// ----- browser sessions: CSRF and fixation -----------------------------------------------------

/// A CSRF case: what it is, the request headers, the form body.
type CsrfCase<'a> = (&'a str, Vec<(&'a str, &'a str)>, String);

/// The `Set-Cookie` value of `name` in `answer`.
fn cookie_value(answer: &Answer, name: &str) -> Option<String> {
    answer.headers.get_all("set-cookie").iter().find_map(|v| {
        let text = v.to_str().ok()?;
        let pair = text.split(';').next()?;
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| value.to_owned())
    })
}

/// A browser login through the form; the session cookie value.
async fn page_login(api: &Api, email: &str, extra_cookie: Option<&str>) -> String {
    let form = api.request(Method::GET, "/login", None, &[], None).await;
    let token = cookie_value(&form, LOGIN_COOKIE).unwrap();
    let mut cookie = format!("{LOGIN_COOKIE}={token}");
    if let Some(extra) = extra_cookie {
        cookie.push_str(&format!("; {SESSION_COOKIE}={extra}"));
    }
    let body = format!("csrf={token}&email={}&password={PASSWORD}", email.replace('@', "%40"));
    let answer = api.form("/login", &[("cookie", &cookie), ("origin", "https://localhost")], &body).await;
    cookie_value(&answer, SESSION_COOKIE).unwrap()
}

/// The session's CSRF token, read from the account page's forms.
async fn page_token(api: &Api, session: &str) -> String {
    let cookie = format!("{SESSION_COOKIE}={session}");
    let page = api.request(Method::GET, "/account", None, &[("cookie", &cookie)], None).await;
    let text = String::from_utf8_lossy(&page.body).into_owned();
    let start = text.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    text[start..start + 43].to_owned()
}

#[tokio::test]
async fn csrf_and_session_fixation_are_refused_on_every_state_changing_page() {
    let mut checks = Checks::new("csrf");
    let api = Api::start().await;
    let mine = page_login(&api, ADMIN, None).await;
    let token = page_token(&api, &mine).await;
    let theirs = page_login(&api, "customer@example.org", None).await;
    let their_token = page_token(&api, &theirs).await;
    let cookie = format!("{SESSION_COOKIE}={mine}");
    let origin = ("origin", "https://localhost");
    for path in [
        "/account/sessions/revoke-others",
        "/account/sessions/revoke",
        "/account/mfa/enrol",
        "/account/password",
        "/account/email",
        "/account/reauth",
        "/account/verify/resend",
        "/logout",
    ] {
        let cases: [CsrfCase<'_>; 5] = [
            ("no token", vec![("cookie", &cookie), origin], "kind=api&id=x".to_owned()),
            (
                "another session's token",
                vec![("cookie", &cookie), origin],
                format!("csrf={their_token}&kind=api&id=x"),
            ),
            (
                "foreign Origin",
                vec![("cookie", &cookie), ("origin", "https://evil.example")],
                format!("csrf={token}"),
            ),
            ("null Origin", vec![("cookie", &cookie), ("origin", "null")], format!("csrf={token}")),
            (
                "cross-site Sec-Fetch-Site",
                vec![("cookie", &cookie), origin, ("sec-fetch-site", "cross-site")],
                format!("csrf={token}"),
            ),
        ];
        for (what, headers, body) in cases {
            let answer = api.form(path, &headers, &body).await;
            checks.error(
                &format!("{path}: {what}"),
                &answer,
                StatusCode::FORBIDDEN,
                "forbidden",
                "CSRF check failed",
            );
        }
    }
    // Login CSRF: no login cookie, or a token that is not the cookie's.
    let body = format!("csrf=forged&email=admin%40example.org&password={PASSWORD}");
    let answer = api.form("/login", &[origin], &body).await;
    checks.error(
        "login without its cookie",
        &answer,
        StatusCode::FORBIDDEN,
        "forbidden",
        "CSRF check failed",
    );
    let answer = api.form("/login", &[("cookie", &format!("{LOGIN_COOKIE}={token}")), origin], &body).await;
    checks.error("login token mismatch", &answer, StatusCode::FORBIDDEN, "forbidden", "CSRF check failed");

    // Fixation: a planted (or old) session id never survives a login; logout kills the cookie.
    let planted = page_login(&api, ADMIN, Some(&mine)).await;
    checks.that("a new id at login", planted != mine);
    let old = api.request(Method::GET, "/account", None, &[("cookie", &cookie)], None).await;
    checks.that(
        "the old id is dead",
        old.status == StatusCode::SEE_OTHER && old.header("location") == "/login",
    );
    let planted_cookie = format!("{SESSION_COOKIE}={planted}");
    let planted_token = page_token(&api, &planted).await;
    let out =
        api.form("/logout", &[("cookie", &planted_cookie), origin], &format!("csrf={planted_token}")).await;
    checks.status("logout", &out, StatusCode::SEE_OTHER, None);
    let after = api.request(Method::GET, "/account", None, &[("cookie", &planted_cookie)], None).await;
    checks.that(
        "dead after logout",
        after.status == StatusCode::SEE_OTHER && after.header("location") == "/login",
    );
    // A session cookie is no API credential, and a page takes no bearer beside it.
    let api_call = api
        .request(Method::GET, "/api/buoys", None, &[("cookie", &format!("{SESSION_COOKIE}={theirs}"))], None)
        .await;
    checks.status("cookie on the API", &api_call, StatusCode::UNAUTHORIZED, Some("unauthorized"));
    let bearer = api.token(ADMIN).await;
    let mixed = api
        .request(
            Method::GET,
            "/account",
            Some(&bearer),
            &[("cookie", &format!("{SESSION_COOKIE}={theirs}"))],
            None,
        )
        .await;
    checks.status("bearer and cookie mixed", &mixed, StatusCode::BAD_REQUEST, Some("invalid_input"));
}

#[tokio::test]
async fn csrf_signed_out_account_forms_refuse_forged_requests() {
    let mut checks = Checks::new("csrf_signed_out");
    let api = Api::start().await;
    let form = api.request(Method::GET, "/signup", None, &[], None).await;
    let token = cookie_value(&form, LOGIN_COOKIE).unwrap();
    let cookie = format!("{LOGIN_COOKIE}={token}");
    let origin = ("origin", "https://localhost");
    let fields = "email=a%40example.org&password=a-long-enough-password&token=t";
    for path in ["/signup", "/verify", "/reset-request", "/reset", "/email/confirm"] {
        let cases: [CsrfCase<'_>; 5] = [
            ("no login cookie", vec![origin], format!("csrf={token}&{fields}")),
            ("no token", vec![("cookie", &cookie), origin], fields.to_owned()),
            (
                "a token that is not the cookie's",
                vec![("cookie", &cookie), origin],
                format!("csrf=forged&{fields}"),
            ),
            (
                "foreign Origin",
                vec![("cookie", &cookie), ("origin", "https://evil.example")],
                format!("csrf={token}&{fields}"),
            ),
            (
                "cross-site Sec-Fetch-Site",
                vec![("cookie", &cookie), origin, ("sec-fetch-site", "cross-site")],
                format!("csrf={token}&{fields}"),
            ),
        ];
        for (what, headers, body) in cases {
            let answer = api.form(path, &headers, &body).await;
            checks.error(
                &format!("{path}: {what}"),
                &answer,
                StatusCode::FORBIDDEN,
                "forbidden",
                "CSRF check failed",
            );
        }
    }
    checks.that("nothing was mailed", crate::account_flows::outbox(api.dir()).is_empty());
}

#[tokio::test]
async fn account_links_resist_forgery_replay_and_misuse_and_sign_up_does_not_enumerate() {
    let mut checks = Checks::new("account_links");
    let api = Api::start().await;
    let new = api
        .post("/api/auth/register", None, json!({ "email": "fresh@example.org", "password": PASSWORD }))
        .await;
    let taken = api
        .post("/api/auth/register", None, json!({ "email": "customer@example.org", "password": PASSWORD }))
        .await;
    checks.status("sign-up", &new, StatusCode::ACCEPTED, None);
    checks.that(
        "a taken email: the same status and body",
        taken.status == new.status && taken.body == new.body,
    );
    let link = crate::account_flows::outbox(api.dir())[0].token("/verify");

    let unverified = api.token("fresh@example.org").await;
    let query = api.post("/api/query", Some(&unverified), json!({ "sql": "SELECT 1" })).await;
    let message = "verify your email first: follow the link we sent, or ask for a new one";
    checks.error("unverified: SQL", &query, StatusCode::FORBIDDEN, "email_unverified", message);
    let read = api.get("/api/telemetry?buoy_id=buoy-a", &unverified).await;
    checks.error("unverified: telemetry", &read, StatusCode::FORBIDDEN, "email_unverified", message);
    checks.that(
        "me says unverified",
        api.get("/api/auth/me", &unverified).await.json()["email_verified"] == false,
    );

    let invalid = "this link is invalid, used or expired";
    let long = "A".repeat(200);
    for (what, token) in [("forged", "A".repeat(43)), ("oversized", long), ("empty", String::new())] {
        let answer = api.post("/api/auth/verify", None, json!({ "token": token })).await;
        checks.error(&format!("{what} token"), &answer, StatusCode::BAD_REQUEST, "link_invalid", invalid);
    }
    // A verification link is no reset link nor email-change link, and is not spent by the try.
    let reset = api
        .post("/api/auth/password-reset", None, json!({ "token": link, "password": "a-new-long-password-1" }))
        .await;
    checks.error("verify link as a reset link", &reset, StatusCode::BAD_REQUEST, "link_invalid", invalid);
    let change = api.post("/api/auth/email/confirm", None, json!({ "token": link })).await;
    checks.error(
        "verify link as an email-change link",
        &change,
        StatusCode::BAD_REQUEST,
        "link_invalid",
        invalid,
    );
    checks.status(
        "login still has the old password",
        &api.post("/api/auth/token", None, json!({ "email": "fresh@example.org", "password": PASSWORD }))
            .await,
        StatusCode::OK,
        None,
    );
    let used = api.post("/api/auth/verify", None, json!({ "token": link })).await;
    checks.status("the link itself still works once", &used, StatusCode::NO_CONTENT, None);
    let replay = api.post("/api/auth/verify", None, json!({ "token": link })).await;
    checks.error("replayed", &replay, StatusCode::BAD_REQUEST, "link_invalid", invalid);
    checks.that(
        "me says verified",
        api.get("/api/auth/me", &unverified).await.json()["email_verified"] == true,
    );
    let audit = std::fs::read_to_string(api.auth.audit_log().path()).unwrap();
    checks.that("no link token in the audit log", !audit.contains(&link));
}
