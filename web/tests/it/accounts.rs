//! Accounts for people, over real HTTPS with a manual auth clock: access tokens carry their
//! session (`sid`) and `auth_time`, and stop at once when the session ends (logout, revoke,
//! refresh reuse; across a restart too); sensitive actions need a login or MFA code within the
//! last 10 minutes and answer 401 `step_up_required` with a hint otherwise.

use std::collections::BTreeSet;

use bluewave_web::{
    AuthClock, AuthConfig, Method, Role, StatusCode, TOTP_SECRET_BYTES, base32_decode, totp_code,
};
use serde_json::{Value, json};

use crate::api::{ADMIN, Answer, Api, PASSWORD, assert_error, fast_config};
use crate::auth_fixtures::{now_s, parts};

const REVOKED: &str = "token refused: token revoked";

fn sid(access: &str) -> String {
    parts(access).1["sid"].as_str().unwrap().to_owned()
}

fn access(pair: &Value) -> String {
    pair["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_revoked_session_stops_its_access_token_at_once() {
    let clock = AuthClock::manual(now_s());
    let api = Api::start_with(AuthConfig { clock: clock.clone(), ..fast_config(10_000) }).await;

    // The token names its session and when its holder logged in.
    let first = api.login(ADMIN).await;
    let (_, claims) = parts(&access(&first));
    assert_eq!(claims["auth_time"], clock.now_s());
    assert_eq!(claims["sid"].as_str().unwrap().len(), 32);

    // Logout: that session's access token is refused on the next request.
    assert_eq!(api.get("/api/buoys", &access(&first)).await.status, StatusCode::OK);
    let out = api.post("/api/auth/logout", None, json!({ "refresh_token": first["refresh_token"] })).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert_error(
        &api.get("/api/buoys", &access(&first)).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        REVOKED,
    );

    // Revoking one session of two: only its token stops.
    let a = api.login(ADMIN).await;
    let b = api.login(ADMIN).await;
    let path = format!("/api/auth/sessions/{}", sid(&access(&b)));
    let revoked = api.request(Method::DELETE, &path, Some(&access(&a)), &[], None).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert_error(
        &api.get("/api/buoys", &access(&b)).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        REVOKED,
    );
    assert_eq!(api.get("/api/buoys", &access(&a)).await.status, StatusCode::OK);

    // Refresh-token reuse revokes the family: the access token of the rotated pair stops too.
    let rotated = api.post("/api/auth/refresh", None, json!({ "refresh_token": a["refresh_token"] })).await;
    let rotated = rotated.json();
    assert_eq!(sid(&access(&rotated)), sid(&access(&a)));
    assert_eq!(api.get("/api/buoys", &access(&rotated)).await.status, StatusCode::OK);
    let reuse = api.post("/api/auth/refresh", None, json!({ "refresh_token": a["refresh_token"] })).await;
    assert_eq!(reuse.status, StatusCode::UNAUTHORIZED);
    assert_error(
        &api.get("/api/buoys", &access(&rotated)).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        REVOKED,
    );
}

#[tokio::test]
async fn sensitive_actions_need_fresh_auth_and_answer_a_step_up_hint() {
    let clock = AuthClock::manual(now_s());
    let api = Api::start_with(AuthConfig { clock: clock.clone(), ..fast_config(10_000) }).await;
    api.seed().await;
    let admin = api.token(ADMIN).await;
    let users = api.get("/api/rbac/users", &admin).await.json();
    let customer = users.as_array().unwrap().iter().find(|u| u["email"] == "customer@example.org").unwrap();
    let role_path = format!("/api/rbac/users/{}/role", customer["id"].as_str().unwrap());

    // 10 minutes after the login: still fresh.
    clock.advance_s(600);
    let answer =
        api.request(Method::PUT, &role_path, Some(&admin), &[], Some(json!({ "role": "analyst" }))).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);

    // One second later: every sensitive action answers the step-up hint; reads still work.
    clock.advance_s(1);
    let stale: [(Method, String, Option<Value>); 5] = [
        (Method::PUT, role_path.clone(), Some(json!({ "role": "customer" }))),
        (Method::PUT, role_path.replace("/role", "/status"), Some(json!({ "status": "disabled" }))),
        (Method::POST, "/api/buoys/buoy-a/device-tokens".into(), Some(json!({}))),
        (
            Method::POST,
            "/api/telemetry/delete".into(),
            Some(json!({ "buoy_id": "buoy-a", "start": 0, "end": 1 })),
        ),
        (Method::DELETE, "/api/telemetry/does-not-matter".into(), None),
    ];
    for (method, path, body) in stale {
        let answer = api.request(method.clone(), &path, Some(&admin), &[], body).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {path}: {:?}", answer.body);
        assert_eq!(
            answer.json(),
            json!({
                "error": "step_up_required",
                "message": "this action needs a fresh authentication: sign in again or confirm with an MFA code",
                "step_up": { "max_age_s": 600, "endpoints": ["/api/auth/token", "/api/auth/mfa/step-up"] },
            }),
            "{method} {path}"
        );
        assert_eq!(
            answer.header("www-authenticate"),
            "Bearer error=\"insufficient_user_authentication\", \
             error_description=\"fresh authentication required\", max_age=600",
        );
    }
    assert_eq!(api.get("/api/buoys", &admin).await.status, StatusCode::OK);

    // A new login is fresh again.
    let admin = api.token(ADMIN).await;
    let answer =
        api.request(Method::PUT, &role_path, Some(&admin), &[], Some(json!({ "role": "customer" }))).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
}

/// A manual clock 10 s into a 30-second TOTP step.
const T_START_S: u64 = 1_800_000_010;

fn mfa_config(clock: &AuthClock) -> AuthConfig {
    // Operators must have MFA; the admin that sets the fixture up keeps a password alone.
    AuthConfig {
        clock: clock.clone(),
        mfa_required_roles: BTreeSet::from([Role::Operator]),
        ..fast_config(10_000)
    }
}

/// The TOTP code of `secret` at `at_s`.
fn code_at(secret: &[u8], at_s: u64) -> String {
    totp_code(secret, at_s).unwrap()
}

async fn mfa_login(api: &Api, email: &str) -> String {
    let answer = api.post("/api/auth/token", None, json!({ "email": email, "password": PASSWORD })).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let body = answer.json();
    assert_eq!(body["mfa_required"], true, "{body}");
    assert_eq!(body["expires_in"], 300);
    assert!(body.get("access_token").is_none(), "{body}");
    body["mfa_challenge"].as_str().unwrap().to_owned()
}

async fn answer_challenge(api: &Api, challenge: &str, code: &str) -> Answer {
    api.post("/api/auth/mfa", None, json!({ "challenge": challenge, "code": code })).await
}

#[tokio::test]
async fn mfa_enrolment_totp_window_replay_backup_codes_and_step_up() {
    let clock = AuthClock::manual(T_START_S);
    let api = Api::start_with(mfa_config(&clock)).await;
    let admin = api.token(ADMIN).await;
    let buoy = json!({ "id": "buoy-a", "name": "a", "lat": null, "lng": null, "status": "active" });
    assert_eq!(api.post("/api/buoys", Some(&admin), buoy).await.status, StatusCode::CREATED);
    let operator = "operator@example.org";

    // A role that requires MFA, without it: the token opens nothing but enrolment.
    let first = api.token(operator).await;
    assert_error(
        &api.get("/api/buoys", &first).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        "MFA enrolment required: POST /api/auth/mfa/enrol, then /api/auth/mfa/confirm",
    );
    let enrol = api.post("/api/auth/mfa/enrol", Some(&first), json!({})).await;
    assert_eq!(enrol.status, StatusCode::OK, "{:?}", enrol.body);
    let enrol = enrol.json();
    let secret_text = enrol["secret"].as_str().unwrap();
    let secret = base32_decode(secret_text).unwrap();
    assert_eq!(secret.len(), TOTP_SECRET_BYTES);
    assert_eq!(
        enrol["otpauth_url"],
        format!(
            "otpauth://totp/bluewave:operator%40example.org?secret={secret_text}&issuer=bluewave\
             &algorithm=SHA1&digits=6&period=30"
        )
    );
    let svg = enrol["qr_svg"].as_str().unwrap();
    assert!(svg.starts_with("<?xml") && svg.contains("<svg") && svg.ends_with("</svg>"), "{svg}");
    // The secret is sealed at rest: its bytes are not in the accounts store.
    let store = std::fs::read(api.dir().join("accounts.redb")).unwrap();
    assert!(!store.windows(secret.len()).any(|w| w == secret.as_slice()));
    assert!(!String::from_utf8_lossy(&store).contains(secret_text));

    let wrong = api.post("/api/auth/mfa/confirm", Some(&first), json!({ "code": "000000x" })).await;
    assert_error(&wrong, StatusCode::UNAUTHORIZED, "unauthorized", "MFA code invalid");
    let confirmed =
        api.post("/api/auth/mfa/confirm", Some(&first), json!({ "code": code_at(&secret, T_START_S) })).await;
    assert_eq!(confirmed.status, StatusCode::OK, "{:?}", confirmed.body);
    let backup: Vec<String> = confirmed.json()["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(backup.len(), 10);
    assert!(backup.iter().all(|c| c.len() == 11 && c.as_bytes()[5] == b'-'), "{backup:?}");
    // Enrolled: the pre-enrolment token ended; the one from the confirmation opens the API.
    assert_error(&api.get("/api/buoys", &first).await, StatusCode::UNAUTHORIZED, "unauthorized", REVOKED);
    let first = confirmed.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(api.get("/api/buoys", &first).await.status, StatusCode::OK);
    let again = api.post("/api/auth/mfa/enrol", Some(&first), json!({})).await;
    assert_error(&again, StatusCode::CONFLICT, "conflict", "MFA is already enabled");

    // RFC 6238 window at T (ten steps later): T-2 and T+2 refused, T-1, T, T+1 accepted once.
    let t = T_START_S + 10 * 30;
    clock.set_s(t);
    let challenge = mfa_login(&api, operator).await;
    for refused in [t - 60, t + 60] {
        let answer = answer_challenge(&api, &challenge, &code_at(&secret, refused)).await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized", "MFA code invalid");
    }
    let tokens = answer_challenge(&api, &challenge, &code_at(&secret, t - 30)).await;
    assert_eq!(tokens.status, StatusCode::OK, "{:?}", tokens.body);
    assert_eq!(tokens.json()["token_type"], "Bearer");
    // The challenge was spent by its right code.
    let spent = answer_challenge(&api, &challenge, &code_at(&secret, t)).await;
    assert_error(
        &spent,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "MFA challenge invalid or expired; sign in again",
    );
    let challenge = mfa_login(&api, operator).await;
    let replay = answer_challenge(&api, &challenge, &code_at(&secret, t - 30)).await;
    assert_error(&replay, StatusCode::UNAUTHORIZED, "unauthorized", "MFA code invalid");
    assert_eq!(answer_challenge(&api, &challenge, &code_at(&secret, t)).await.status, StatusCode::OK);
    let challenge = mfa_login(&api, operator).await;
    let replay = answer_challenge(&api, &challenge, &code_at(&secret, t)).await;
    assert_error(&replay, StatusCode::UNAUTHORIZED, "unauthorized", "MFA code invalid");
    let last = answer_challenge(&api, &challenge, &code_at(&secret, t + 30)).await;
    assert_eq!(last.status, StatusCode::OK);
    let session = access(&last.json());

    // Backup codes: each works once.
    let challenge = mfa_login(&api, operator).await;
    assert_eq!(answer_challenge(&api, &challenge, &backup[0]).await.status, StatusCode::OK);
    let challenge = mfa_login(&api, operator).await;
    let reused = answer_challenge(&api, &challenge, &backup[0]).await;
    assert_error(&reused, StatusCode::UNAUTHORIZED, "unauthorized", "MFA code invalid");
    assert_eq!(answer_challenge(&api, &challenge, &backup[1].to_uppercase()).await.status, StatusCode::OK);

    // A challenge expires after 300 s.
    let operator_id = api.auth.verify_access_token(&session).unwrap().user_id().to_owned();
    let challenge = mfa_login(&api, operator).await;
    clock.advance_s(301);
    let late = answer_challenge(&api, &challenge, &code_at(&secret, clock.now_s())).await;
    assert_error(
        &late,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "MFA challenge invalid or expired; sign in again",
    );

    // Step-up: a stale session confirms with a code and gets a fresh access token.
    clock.advance_s(400);
    let issue = api.post("/api/buoys/buoy-a/device-tokens", Some(&session), json!({})).await;
    assert_eq!(issue.json()["error"], "step_up_required");
    let step_up = api
        .post("/api/auth/mfa/step-up", Some(&session), json!({ "code": code_at(&secret, clock.now_s()) }))
        .await;
    assert_eq!(step_up.status, StatusCode::OK, "{:?}", step_up.body);
    let fresh = access(&step_up.json());
    assert_eq!(sid(&fresh), sid(&session));
    assert_eq!(parts(&fresh).1["auth_time"], clock.now_s());
    let issue = api.post("/api/buoys/buoy-a/device-tokens", Some(&fresh), json!({})).await;
    assert_eq!(issue.status, StatusCode::CREATED, "{:?}", issue.body);

    // Five wrong codes end the challenge (and count as failed logins: the backoff applies);
    // the right code after them is refused.
    let challenge = mfa_login(&api, operator).await;
    for _ in 0..5 {
        let answer = answer_challenge(&api, &challenge, "999999x").await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized", "MFA code invalid");
    }
    let ended = answer_challenge(&api, &challenge, &code_at(&secret, clock.now_s() + 30)).await;
    assert_error(
        &ended,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "MFA challenge invalid or expired; sign in again",
    );

    // Each action has a successful entry of the operator (denied entries of it do not count).
    let audit = std::fs::read_to_string(api.auth.audit_log().path()).unwrap();
    let entries: Vec<Value> = audit.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let actor = format!("user:{operator_id}");
    for action in ["mfa.enrol", "auth.mfa", "mfa.backup_code_used", "auth.step_up"] {
        let ok =
            entries.iter().filter(|e| e["action"] == action && e["outcome"] == "ok" && e["actor"] == *actor);
        assert!(ok.count() >= 1, "{action}");
    }
    let enrolled: Vec<&Value> = entries.iter().filter(|e| e["action"] == "mfa.enrol").collect();
    assert_eq!(enrolled.iter().map(|e| e["outcome"].as_str().unwrap()).collect::<Vec<_>>(), ["denied", "ok"]);
}

#[test]
fn admins_and_operators_must_have_mfa_by_default() {
    assert_eq!(AuthConfig::default().mfa_required_roles, BTreeSet::from([Role::Admin, Role::Operator]));
}
