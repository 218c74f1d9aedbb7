//! Findings of the first security review of accounts (MFA, sessions), over real HTTPS with a
//! manual auth clock: sessions opened before MFA enrolment end at its confirmation; one login
//! challenge gives at most one session however many requests race on it; guessing codes on
//! `disable` and `step-up` runs into the login backoff (429).

use std::collections::BTreeSet;

use bluewave_web::{AuthClock, AuthConfig, Role, Secret, StatusCode, base32_decode, totp_code};
use serde_json::{Value, json};

use crate::api::{ADMIN, Answer, Api, PASSWORD, assert_error, fast_config};

const REVOKED: &str = "token refused: token revoked";
const OPERATOR: &str = "operator@example.org";
/// A manual clock 10 s into a 30-second TOTP step.
const T_START_S: u64 = 1_800_000_010;

fn mfa_config(clock: &AuthClock) -> AuthConfig {
    AuthConfig {
        clock: clock.clone(),
        mfa_required_roles: BTreeSet::from([Role::Operator]),
        ..fast_config(10_000)
    }
}

fn access(pair: &Value) -> String {
    pair["access_token"].as_str().unwrap().to_owned()
}

/// The audit entries of `action`, as (outcome, details), in log order.
fn audit_entries(api: &Api, action: &str) -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(api.auth.audit_log().path()).unwrap();
    text.lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|entry| entry["action"] == action)
        .map(|entry| (entry["outcome"].as_str().unwrap().to_owned(), entry["details"].clone()))
        .collect()
}

/// Enrols the operator through `session` and returns (secret, confirmation answer).
async fn enrol(api: &Api, session: &str, at_s: u64) -> (Vec<u8>, Value) {
    let enrol = api.post("/api/auth/mfa/enrol", Some(session), json!({})).await;
    assert_eq!(enrol.status, StatusCode::OK, "{:?}", enrol.body);
    let secret = base32_decode(enrol.json()["secret"].as_str().unwrap()).unwrap();
    let code = totp_code(&secret, at_s).unwrap();
    let confirmed = api.post("/api/auth/mfa/confirm", Some(session), json!({ "code": code })).await;
    assert_eq!(confirmed.status, StatusCode::OK, "{:?}", confirmed.body);
    (secret, confirmed.json())
}

async fn refresh(api: &Api, pair: &Value) -> Answer {
    api.post("/api/auth/refresh", None, json!({ "refresh_token": pair["refresh_token"] })).await
}

#[tokio::test]
async fn sessions_opened_before_mfa_enrolment_end_at_its_confirmation() {
    let clock = AuthClock::manual(T_START_S);
    let api = Api::start_with(mfa_config(&clock)).await;

    // Someone with the operator's password logs in before the owner enrols; the owner logs in.
    let intruder = api.login(OPERATOR).await;
    let owner = api.login(OPERATOR).await;
    let (_, confirmed) = enrol(&api, &access(&owner), T_START_S).await;
    assert_eq!(confirmed["backup_codes"].as_array().unwrap().len(), 10);
    assert_eq!(confirmed["expires_in"], 900);

    // The intruder's access token and refresh token are dead.
    let refused = api.get("/api/buoys", &access(&intruder)).await;
    assert_error(&refused, StatusCode::UNAUTHORIZED, "unauthorized", REVOKED);
    let refused = refresh(&api, &intruder).await;
    assert_error(&refused, StatusCode::UNAUTHORIZED, "unauthorized", "refresh token invalid");

    // The owner's pre-enrolment access token ended too; the one from the confirmation works, and
    // so does the session's refresh token.
    let refused = api.get("/api/buoys", &access(&owner)).await;
    assert_error(&refused, StatusCode::UNAUTHORIZED, "unauthorized", REVOKED);
    assert_eq!(api.get("/api/buoys", &access(&confirmed)).await.status, StatusCode::OK);
    let rotated = refresh(&api, &owner).await;
    assert_eq!(rotated.status, StatusCode::OK, "{:?}", rotated.body);
    assert_eq!(api.get("/api/buoys", &access(&rotated.json())).await.status, StatusCode::OK);

    let enrolled = audit_entries(&api, "mfa.enrol");
    assert_eq!(enrolled.len(), 1, "{enrolled:?}");
    assert_eq!(enrolled[0].0, "ok");
    assert_eq!(enrolled[0].1, json!({ "backup_codes": 10, "sessions_revoked": 1 }));
    // The admin's sessions are not touched.
    assert_eq!(api.get("/api/buoys", &api.token(ADMIN).await).await.status, StatusCode::OK);
}

/// Logs the operator in with the password: the MFA challenge.
async fn challenge(api: &Api) -> String {
    let answer = api.post("/api/auth/token", None, json!({ "email": OPERATOR, "password": PASSWORD })).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    answer.json()["mfa_challenge"].as_str().unwrap().to_owned()
}

async fn answer(api: &Api, challenge: &str, code: &str) -> Answer {
    api.post("/api/auth/mfa", None, json!({ "challenge": challenge, "code": code })).await
}

#[tokio::test]
async fn one_challenge_answered_in_parallel_gives_one_session() {
    let clock = AuthClock::manual(T_START_S);
    let api = Api::start_with(mfa_config(&clock)).await;
    let (_, confirmed) = enrol(&api, &api.token(OPERATOR).await, T_START_S).await;
    let backup: Vec<String> = confirmed["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();

    // Different valid backup codes race on one challenge (3, 3, 2 of them): each round exactly
    // one request gets a session; the others find the challenge taken (their codes stay unused).
    let mut unused = backup.as_slice();
    for round in 0..3 {
        let challenge = challenge(&api).await;
        let (racing, rest) = unused.split_at(if round < 2 { 3 } else { 2 });
        unused = rest;
        let answers =
            futures_util::future::join_all(racing.iter().map(|code| answer(&api, &challenge, code))).await;
        let winners: Vec<&Answer> = answers.iter().filter(|a| a.status == StatusCode::OK).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {:?}",
            answers.iter().map(|a| a.status).collect::<Vec<_>>()
        );
        for loser in answers.iter().filter(|a| a.status != StatusCode::OK) {
            assert_error(
                loser,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "MFA challenge invalid or expired; sign in again",
            );
        }
        let again = answer(&api, &challenge, &unused[0]).await;
        assert_error(
            &again,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "MFA challenge invalid or expired; sign in again",
        );
    }
    let session = access(&answer(&api, &challenge(&api).await, &unused[0]).await.json());
    let caller = api.auth.verify_access_token(&session).unwrap();
    // Four rounds spent four codes; the losers' codes were never checked.
    assert_eq!(api.auth.backup_codes_left(&caller).unwrap(), 6);
    assert_eq!(audit_entries(&api, "mfa.backup_code_used").len(), 4);
}

/// Wrong codes on `path` (disable or step-up) as the freshly enrolled operator: five are
/// refused as wrong, then the account's backoff answers 429 (it doubles with every further
/// attempt, so it is reached whatever the pace of the requests). MFA stays on.
async fn guess_until_limited(path: &str) {
    let clock = AuthClock::manual(T_START_S);
    let api = Api::start_with(mfa_config(&clock)).await;
    let (_, confirmed) = enrol(&api, &api.token(OPERATOR).await, T_START_S).await;
    let session = access(&confirmed);
    for _ in 0..5 {
        let wrong = api.post(path, Some(&session), json!({ "code": "999999" })).await;
        assert_error(&wrong, StatusCode::UNAUTHORIZED, "unauthorized", "MFA code invalid");
    }
    let mut limited = None;
    for _ in 0..5 {
        let wrong = api.post(path, Some(&session), json!({ "code": "999999" })).await;
        if wrong.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(wrong);
            break;
        }
        assert_error(&wrong, StatusCode::UNAUTHORIZED, "unauthorized", "MFA code invalid");
    }
    let limited = limited.expect("no 429 after ten wrong codes");
    assert_eq!(limited.json()["error"], "rate_limited");
    assert!(limited.header("retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(api.auth.backup_codes_left(&api.auth.verify_access_token(&session).unwrap()).unwrap(), 10);
}

#[tokio::test]
async fn guessing_the_code_to_disable_mfa_runs_into_the_backoff() {
    guess_until_limited("/api/auth/mfa/disable").await;
}

#[tokio::test]
async fn guessing_step_up_codes_runs_into_the_backoff() {
    guess_until_limited("/api/auth/mfa/step-up").await;
}

#[tokio::test]
async fn a_challenge_from_before_a_password_change_is_refused() {
    let clock = AuthClock::manual(T_START_S);
    let api = Api::start_with(mfa_config(&clock)).await;
    let (secret, confirmed) = enrol(&api, &api.token(OPERATOR).await, T_START_S).await;
    let caller = api.auth.verify_access_token(&access(&confirmed)).unwrap();

    // Password step done, then the password changes: the right code no longer opens a session.
    let pending = challenge(&api).await;
    let new_password = Secret::new("another-long-password");
    api.auth.change_password(&caller, &Secret::new(PASSWORD), &new_password, true, None).unwrap();
    let late = answer(&api, &pending, &totp_code(&secret, T_START_S + 30).unwrap()).await;
    assert_error(
        &late,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "MFA challenge invalid or expired; sign in again",
    );
    let login = api.post("/api/auth/token", None, json!({ "email": OPERATOR, "password": PASSWORD })).await;
    assert_error(&login, StatusCode::UNAUTHORIZED, "unauthorized", "invalid email or password");
}

#[tokio::test]
async fn one_account_holds_at_most_three_challenges() {
    let clock = AuthClock::manual(T_START_S);
    let api = Api::start_with(mfa_config(&clock)).await;
    let (secret, _) = enrol(&api, &api.token(OPERATOR).await, T_START_S).await;
    let mut challenges = Vec::new();
    for _ in 0..4 {
        challenges.push(challenge(&api).await);
    }
    // The fourth login ended the oldest challenge; the three newest still work.
    let oldest = answer(&api, &challenges[0], &totp_code(&secret, T_START_S + 30).unwrap()).await;
    assert_error(
        &oldest,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "MFA challenge invalid or expired; sign in again",
    );
    let newest = answer(&api, &challenges[3], &totp_code(&secret, T_START_S + 30).unwrap()).await;
    assert_eq!(newest.status, StatusCode::OK, "{:?}", newest.body);
}
