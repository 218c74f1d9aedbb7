//! Accounts for people, over real HTTPS with a manual auth clock: access tokens carry their
//! session (`sid`) and `auth_time`, and stop at once when the session ends (logout, revoke,
//! refresh reuse; across a restart too); sensitive actions need a login or MFA code within the
//! last 10 minutes and answer 401 `step_up_required` with a hint otherwise.

use bluewave_web::{AuthClock, AuthConfig, Method, StatusCode};
use serde_json::{Value, json};

use crate::api::{ADMIN, Api, assert_error, fast_config};
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
                "step_up": { "max_age_s": 600, "endpoints": ["/api/auth/token"] },
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
