//! Identity and sessions through the public `AuthService` API on a real store: login answers
//! (and their sameness for unknown users), rehash on parameter change, token claims, refresh
//! rotation and reuse detection (including a thread race), logout and logout-all, disabled
//! accounts, brute-force limits, RBAC escalation rules, device tokens, plans, key files and
//! rotation, and that no secret reaches Debug output or the audit log.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Barrier};

use bluewave_web::{
    AuthConfig, AuthError, BuoyScope, DeviceRefusal, FirstAdmin, NewUser, PasswordParams, Permission,
    PlanSpec, Role, Secret, TokenRefusal, UserStatus,
};

use crate::auth_fixtures::{ADMIN_EMAIL, ADMIN_PASSWORD, Fixture, USER_PASSWORD, ip, no_mfa, now_s, parts};

fn token_refusal<T: std::fmt::Debug>(r: Result<T, AuthError>) -> TokenRefusal {
    match r {
        Err(AuthError::Token(t)) => t,
        other => panic!("expected a token refusal, got {other:?}"),
    }
}

#[test]
fn login_ok_wrong_password_and_unknown_user() {
    let fx = Fixture::new();
    let pair = fx.auth.login("  Admin@Example.ORG ", &Secret::new(ADMIN_PASSWORD), ip(1)).unwrap();
    assert_eq!(pair.access_expires_in_s, 900);
    assert_eq!(pair.refresh_expires_in_s, 7 * 24 * 3600);
    let wrong = fx.auth.login(ADMIN_EMAIL, &Secret::new("not-the-password!!"), ip(2));
    let unknown = fx.auth.login("nobody@example.org", &Secret::new(ADMIN_PASSWORD), ip(3));
    let garbage = fx.auth.login("not an email", &Secret::new(ADMIN_PASSWORD), ip(4));
    let huge = fx.auth.login(ADMIN_EMAIL, &Secret::new("x".repeat(5_000)), ip(5));
    for r in [&wrong, &unknown, &garbage, &huge] {
        assert!(matches!(r, Err(AuthError::InvalidCredentials)), "{r:?}");
    }
    // Same message for every case: nothing tells which accounts exist.
    let texts: BTreeSet<String> =
        [wrong, unknown, garbage].into_iter().map(|r| r.unwrap_err().to_string()).collect();
    assert_eq!(texts.len(), 1);
    let audit = fx.audit_text();
    assert!(audit.contains(r#""reason":"unknown account""#));
    assert!(audit.contains(r#""reason":"wrong password""#));
}

#[test]
fn access_token_round_trip_has_the_documented_claims() {
    let fx = Fixture::new();
    let pair = fx.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (header, claims) = parts(pair.access_token.expose());
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"].as_str().unwrap().len(), 32);
    assert_eq!(claims["iss"], "bluewave");
    assert_eq!(claims["aud"], "bluewave-api");
    assert_eq!(claims["typ"], "access");
    assert_eq!(claims["role"], "admin");
    assert_eq!(claims["sub"].as_str().unwrap(), pair.user_id);
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 900);
    assert_eq!(claims["jti"].as_str().unwrap().len(), 32);
    assert!(claims["iat"].as_u64().unwrap().abs_diff(now_s()) <= 2);
    let caller = fx.caller(&pair);
    assert_eq!(caller.email(), ADMIN_EMAIL);
    assert_eq!(caller.role(), Role::Admin);
    assert_eq!(caller.user_id(), pair.user_id);
    assert_eq!(caller.token_id(), claims["jti"].as_str().unwrap());
    // Two logins, two different tokens.
    assert_ne!(fx.login(ADMIN_EMAIL, ADMIN_PASSWORD).access_token, pair.access_token);
}

#[test]
fn password_is_rehashed_when_parameters_change() {
    let weak = PasswordParams { memory_kib: 8_192, iterations: 1, parallelism: 1 };
    let fx = Fixture::with_config(AuthConfig { password_params: weak, ..no_mfa() });
    drop(fx.login(ADMIN_EMAIL, ADMIN_PASSWORD));
    assert!(!fx.audit_text().contains("auth.password_rehash"));
    let fx = fx.reopen(no_mfa());
    fx.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    let audit = fx.audit_text();
    assert_eq!(audit.matches("auth.password_rehash").count(), 1);
    assert!(audit.contains(r#""from":[8192,1,1],"to":[19456,2,1]"#), "{audit}");
    // Second login with the new hash: no further rehash, and the password still works.
    fx.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    assert_eq!(fx.audit_text().matches("auth.password_rehash").count(), 1);
}

#[test]
fn password_rules_are_enforced() {
    let fx = Fixture::new();
    let admin = fx.admin();
    let create = |email: &str, pw: &str| {
        fx.auth.create_user(
            &admin,
            NewUser { email: email.into(), password: Secret::new(pw), role: Role::Analyst, plan_id: None },
        )
    };
    assert!(matches!(create("a@example.org", "short-pw"), Err(AuthError::WeakPassword(_))));
    assert!(matches!(
        create("long.address@example.org", "Long.Address@example.org"),
        Err(AuthError::WeakPassword(_))
    ));
    assert!(matches!(
        create("not-an-email", USER_PASSWORD),
        Err(AuthError::InvalidInput { field: "email", .. })
    ));
    create("a@example.org", "twelve chars").unwrap();
    assert!(matches!(create("A@example.org", USER_PASSWORD), Err(AuthError::EmailTaken)));
}

#[test]
fn refresh_rotates_and_reuse_revokes_the_family() {
    let fx = Fixture::new();
    let first = fx.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    let second = fx.auth.refresh(first.refresh_token.expose(), ip(1)).unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(second.session_id, first.session_id);
    fx.caller(&second);
    let third = fx.auth.refresh(second.refresh_token.expose(), ip(1)).unwrap();
    // An old token comes back: reuse. The whole family dies, including the newest token.
    assert!(matches!(fx.auth.refresh(first.refresh_token.expose(), ip(9)), Err(AuthError::RefreshReused)));
    assert!(matches!(fx.auth.refresh(third.refresh_token.expose(), ip(1)), Err(AuthError::RefreshInvalid)));
    assert!(matches!(fx.auth.refresh("no-such-token", ip(1)), Err(AuthError::RefreshInvalid)));
    assert!(matches!(fx.auth.refresh("", ip(1)), Err(AuthError::RefreshInvalid)));
    assert!(fx.audit_text().contains("auth.refresh_reuse"));
    // Other sessions of the account are untouched.
    let other = fx.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    fx.auth.refresh(other.refresh_token.expose(), ip(1)).unwrap();
}

#[test]
fn concurrent_refresh_with_one_token_has_exactly_one_winner() {
    let fx = Fixture::new();
    let pair = fx.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                let auth = fx.auth.clone();
                let token = pair.refresh_token.expose().to_owned();
                s.spawn(move || {
                    barrier.wait();
                    auth.refresh(&token, ip(1))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners = results.iter().filter(|r| r.is_ok()).count();
    let reused = results.iter().filter(|r| matches!(r, Err(AuthError::RefreshReused))).count();
    let invalid = results.iter().filter(|r| matches!(r, Err(AuthError::RefreshInvalid))).count();
    assert_eq!(winners, 1, "{results:?}");
    // The first loser detects reuse and revokes the family; later ones find it revoked.
    assert_eq!(reused, 1, "{results:?}");
    assert_eq!(invalid, threads - 2);
}

#[test]
fn logout_ends_one_session_and_logout_all_every_token() {
    let fx = Fixture::new();
    let a = fx.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    let b = fx.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    let caller = fx.caller(&a);
    assert_eq!(fx.auth.list_sessions(&caller, caller.user_id()).unwrap().len(), 2);
    fx.auth.logout(a.refresh_token.expose(), ip(1)).unwrap();
    assert!(matches!(fx.auth.refresh(a.refresh_token.expose(), ip(1)), Err(AuthError::RefreshInvalid)));
    assert_eq!(fx.auth.list_sessions(&caller, caller.user_id()).unwrap().len(), 1);
    // The logged-out session's access token stops at once (revocation set); the other lives.
    assert_eq!(token_refusal(fx.auth.verify_access_token(a.access_token.expose())), TokenRefusal::Revoked);
    let caller = fx.caller(&b);
    fx.auth.logout_all(&caller).unwrap();
    assert_eq!(token_refusal(fx.auth.verify_access_token(a.access_token.expose())), TokenRefusal::Revoked);
    assert_eq!(token_refusal(fx.auth.verify_access_token(b.access_token.expose())), TokenRefusal::Revoked);
    assert!(matches!(fx.auth.refresh(b.refresh_token.expose(), ip(1)), Err(AuthError::RefreshInvalid)));
    // A login right after works at once (its token is not older than the stamp).
    let fresh = fx.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    let again = fx.caller(&fresh);
    assert_eq!(fx.auth.list_sessions(&again, again.user_id()).unwrap().len(), 1);
}

#[test]
fn sessions_can_be_revoked_by_owner_and_admin_only() {
    let fx = Fixture::new();
    let (analyst, pair) = fx.user("ana@example.org", Role::Analyst);
    let (other, _) = fx.user("other@example.org", Role::Analyst);
    assert!(matches!(fx.auth.list_sessions(&other, analyst.user_id()), Err(AuthError::Forbidden { .. })));
    assert!(matches!(fx.auth.revoke_session(&other, &pair.session_id), Err(AuthError::Forbidden { .. })));
    let admin = fx.admin();
    let sessions = fx.auth.list_sessions(&admin, analyst.user_id()).unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].session_id, pair.session_id);
    assert_eq!(sessions[0].login_ip, "10.0.0.1");
    fx.auth.revoke_session(&admin, &pair.session_id).unwrap();
    assert!(matches!(fx.auth.refresh(pair.refresh_token.expose(), ip(1)), Err(AuthError::RefreshInvalid)));
    assert!(matches!(fx.auth.revoke_session(&admin, "nope"), Err(AuthError::NotFound { kind: "session" })));
}

#[test]
fn disabled_user_is_refused_everywhere() {
    let fx = Fixture::new();
    let (analyst, pair) = fx.user("ana@example.org", Role::Analyst);
    let admin = fx.admin();
    fx.auth.set_user_status(&admin, analyst.user_id(), UserStatus::Disabled).unwrap();
    assert_eq!(
        token_refusal(fx.auth.verify_access_token(pair.access_token.expose())),
        TokenRefusal::AccountDisabled
    );
    assert!(matches!(fx.auth.refresh(pair.refresh_token.expose(), ip(1)), Err(AuthError::RefreshInvalid)));
    assert!(matches!(
        fx.auth.login("ana@example.org", &Secret::new(USER_PASSWORD), ip(2)),
        Err(AuthError::InvalidCredentials)
    ));
    fx.auth.set_user_status(&admin, analyst.user_id(), UserStatus::Active).unwrap();
    // Re-enabled: old tokens stay dead (older than the stamp), a new login works.
    assert_eq!(token_refusal(fx.auth.verify_access_token(pair.access_token.expose())), TokenRefusal::Revoked);
    fx.login("ana@example.org", USER_PASSWORD);
    // Nobody disables themselves or the last admin.
    assert!(matches!(
        fx.auth.set_user_status(&admin, admin.user_id(), UserStatus::Disabled),
        Err(AuthError::InvalidInput { .. })
    ));
}

#[test]
fn login_rate_is_limited_per_ip() {
    let fx = Fixture::new();
    let wrong = Secret::new("wrong-password-123");
    // Different accounts each time, so only the per-IP limit can trigger.
    for i in 0..10 {
        let r = fx.auth.login(&format!("u{i}@example.org"), &wrong, ip(50));
        assert!(matches!(r, Err(AuthError::InvalidCredentials)), "attempt {i}: {r:?}");
    }
    match fx.auth.login(ADMIN_EMAIL, &Secret::new(ADMIN_PASSWORD), ip(50)) {
        Err(AuthError::RateLimited { retry_after_secs }) => assert!((1..=60).contains(&retry_after_secs)),
        other => panic!("expected RateLimited, got {other:?}"),
    }
    // Another client is not affected.
    fx.auth.login(ADMIN_EMAIL, &Secret::new(ADMIN_PASSWORD), ip(51)).unwrap();
}

#[test]
fn account_backs_off_after_repeated_failures() {
    let fx = Fixture::new();
    fx.user("ana@example.org", Role::Analyst);
    let wrong = Secret::new("wrong-password-123");
    // Five failures from five IPs (so the per-IP limit stays out of play).
    for i in 0..5 {
        assert!(matches!(
            fx.auth.login(ADMIN_EMAIL, &wrong, ip(100 + i)),
            Err(AuthError::InvalidCredentials)
        ));
    }
    // Even the right password is refused during the backoff, without revealing it was right.
    match fx.auth.login(ADMIN_EMAIL, &Secret::new(ADMIN_PASSWORD), ip(120)) {
        Err(AuthError::RateLimited { retry_after_secs }) => assert_eq!(retry_after_secs, 1),
        other => panic!("expected RateLimited, got {other:?}"),
    }
    // Another account is fine; after the backoff the owner gets in and the counter resets.
    fx.auth.login("ana@example.org", &Secret::new(USER_PASSWORD), ip(120)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    fx.auth.login(ADMIN_EMAIL, &Secret::new(ADMIN_PASSWORD), ip(121)).unwrap();
    assert!(matches!(fx.auth.login(ADMIN_EMAIL, &wrong, ip(122)), Err(AuthError::InvalidCredentials)));
}

#[test]
fn nobody_grants_a_role_above_their_own() {
    let fx = Fixture::new();
    let admin = fx.admin();
    let (operator, _) = fx.user("op@example.org", Role::Operator);
    let (analyst, _) = fx.user("ana@example.org", Role::Analyst);
    // Operators cannot manage users by default.
    let new = |email: &str, role| NewUser {
        email: email.into(),
        password: Secret::new(USER_PASSWORD),
        role,
        plan_id: None,
    };
    assert!(matches!(
        fx.auth.create_user(&operator, new("x@example.org", Role::Customer)),
        Err(AuthError::Forbidden { .. })
    ));
    // Give operators users:manage: they may now manage up to their own rank, not above.
    let mut perms = fx.auth.role_permissions().unwrap()[&Role::Operator].clone();
    perms.insert(Permission::UsersManage);
    fx.auth.set_role_permissions(&admin, Role::Operator, perms).unwrap();
    fx.auth.create_user(&operator, new("c@example.org", Role::Customer)).unwrap();
    fx.auth.create_user(&operator, new("o2@example.org", Role::Operator)).unwrap();
    assert!(matches!(
        fx.auth.create_user(&operator, new("a2@example.org", Role::Admin)),
        Err(AuthError::RoleEscalation { role }) if role == "admin"
    ));
    assert!(matches!(
        fx.auth.set_user_role(&operator, analyst.user_id(), Role::Admin),
        Err(AuthError::RoleEscalation { .. })
    ));
    assert!(matches!(
        fx.auth.set_user_role(&operator, operator.user_id(), Role::Admin),
        Err(AuthError::RoleEscalation { .. })
    ));
    assert!(matches!(
        fx.auth.set_user_role(&operator, admin.user_id(), Role::Customer),
        Err(AuthError::RoleEscalation { .. })
    ));
    assert!(matches!(
        fx.auth.set_user_role(&admin, analyst.user_id(), Role::Device),
        Err(AuthError::InvalidInput { .. })
    ));
    // Within rank it works, and the change applies to the next verification.
    fx.auth.set_user_role(&operator, analyst.user_id(), Role::Customer).unwrap();
    assert_eq!(fx.auth.get_user(&admin, analyst.user_id()).unwrap().role, Role::Customer);
    // Operators cannot edit the RBAC table; admins cannot drop their own rbac:manage.
    assert!(matches!(
        fx.auth.set_role_permissions(&operator, Role::Customer, BTreeSet::new()),
        Err(AuthError::Forbidden { .. })
    ));
    assert!(matches!(
        fx.auth.set_role_permissions(&admin, Role::Admin, BTreeSet::from([Permission::UsersManage])),
        Err(AuthError::InvalidInput { .. })
    ));
    // The last admin cannot be demoted.
    assert!(matches!(
        fx.auth.set_user_role(&admin, admin.user_id(), Role::Operator),
        Err(AuthError::InvalidInput { .. })
    ));
    assert!(fx.audit_text().contains(r#""outcome":"denied""#));
}

#[test]
fn authorize_follows_the_editable_table() {
    let fx = Fixture::new();
    let admin = fx.admin();
    let (customer, _) = fx.user("c@example.org", Role::Customer);
    assert!(fx.auth.authorize(&customer, Permission::TelemetryRead).is_ok());
    assert!(matches!(
        fx.auth.authorize(&customer, Permission::QuerySql),
        Err(AuthError::Forbidden { permission }) if permission == "query:sql"
    ));
    let mut perms = fx.auth.role_permissions().unwrap()[&Role::Customer].clone();
    perms.insert(Permission::QuerySql);
    fx.auth.set_role_permissions(&admin, Role::Customer, perms.clone()).unwrap();
    assert!(fx.auth.authorize(&customer, Permission::QuerySql).is_ok());
    // The table survives a restart.
    let fx = fx.reopen(no_mfa());
    assert_eq!(fx.auth.role_permissions().unwrap()[&Role::Customer], perms);
    for p in Permission::ALL {
        assert_eq!(p.as_str().parse::<Permission>().unwrap(), *p);
    }
    assert!("telemetry:explode".parse::<Permission>().is_err());
}

#[test]
fn device_tokens_are_issued_listed_and_revoked() {
    let fx = Fixture::new();
    let (operator, _) = fx.user("op@example.org", Role::Operator);
    let (analyst, _) = fx.user("ana@example.org", Role::Analyst);
    assert!(matches!(fx.auth.issue_device_token(&analyst, "buoy-1", None), Err(AuthError::Forbidden { .. })));
    assert!(matches!(
        fx.auth.issue_device_token(&operator, "bad/id", None),
        Err(AuthError::InvalidInput { .. })
    ));
    assert!(matches!(
        fx.auth.issue_device_token(&operator, "buoy-1", Some(1)),
        Err(AuthError::InvalidInput { .. })
    ));
    let a = fx.auth.issue_device_token(&operator, "buoy-1", None).unwrap();
    let b = fx.auth.issue_device_token(&operator, "buoy-2", Some(3_600)).unwrap();
    assert_eq!(a.info.expires_s - a.info.issued_s, 365 * 24 * 3600);
    assert_eq!(b.info.expires_s - b.info.issued_s, 3_600);
    assert_eq!(fx.auth.verify_device_token(a.token.expose()).as_deref(), Ok("buoy-1"));
    assert_eq!(fx.auth.list_device_tokens(&operator, None).unwrap().len(), 2);
    assert_eq!(fx.auth.list_device_tokens(&operator, Some("buoy-2")).unwrap(), vec![b.info.clone()]);
    fx.auth.revoke_device_token(&operator, &a.info.jti).unwrap();
    assert_eq!(fx.auth.verify_device_token(a.token.expose()), Err(DeviceRefusal::DeviceRevoked));
    assert_eq!(fx.auth.verify_device_token(b.token.expose()).as_deref(), Ok("buoy-2"));
    assert!(matches!(fx.auth.revoke_device_token(&operator, "../x"), Err(AuthError::NotFound { .. })));
    let audit = fx.audit_text();
    assert!(audit.contains("devices.issue") && audit.contains("devices.revoke"));
}

#[test]
fn plans_become_policy_grants_and_quotas() {
    let fx = Fixture::new();
    let admin = fx.admin();
    let (analyst, _) = fx.user("ana@example.org", Role::Analyst);
    let (operator, _) = fx.user("op@example.org", Role::Operator);
    // No plan: nothing.
    let none = fx.auth.policy_grant(&analyst).unwrap();
    assert_eq!(none.buoys, BuoyScope::List(vec![]));
    assert_eq!(none.max_rows, Some(0));
    let plan = fx
        .auth
        .create_plan(
            &admin,
            PlanSpec {
                name: " Research ".into(),
                buoys: BuoyScope::List(vec!["b-2".into(), "b-1".into(), "b-2".into()]),
                history_days: Some(30),
                daily_query_quota: Some(2),
                row_limit: Some(10_000),
            },
        )
        .unwrap();
    assert_eq!(plan.spec.name, "Research");
    assert_eq!(plan.spec.buoys, BuoyScope::List(vec!["b-1".into(), "b-2".into()]));
    assert!(matches!(fx.auth.create_plan(&operator, plan.spec.clone()), Err(AuthError::Forbidden { .. })));
    let bad = PlanSpec { buoys: BuoyScope::List(vec!["no spaces".into()]), ..plan.spec.clone() };
    assert!(matches!(fx.auth.create_plan(&admin, bad), Err(AuthError::InvalidInput { field: "buoys", .. })));
    assert!(matches!(
        fx.auth.assign_plan(&admin, analyst.user_id(), Some("missing")),
        Err(AuthError::NotFound { .. })
    ));
    fx.auth.assign_plan(&admin, analyst.user_id(), Some(&plan.id)).unwrap();
    // The caller object is a snapshot: verify again to see the plan.
    let analyst = fx.caller(&fx.login("ana@example.org", USER_PASSWORD));
    let grant = fx.auth.policy_grant(&analyst).unwrap();
    assert_eq!(grant.buoys, BuoyScope::List(vec!["b-1".into(), "b-2".into()]));
    assert_eq!(grant.max_rows, Some(10_000));
    assert_eq!(grant.daily_query_quota, Some(2));
    assert_eq!(grant.plan_id.as_deref(), Some(plan.id.as_str()));
    let earliest_s = grant.earliest_ts_ns.unwrap() / 1_000_000_000;
    assert!((earliest_s - (now_s() as i64 - 30 * 86_400)).abs() <= 2);
    fx.auth.record_query(&analyst).unwrap();
    fx.auth.record_query(&analyst).unwrap();
    assert!(matches!(fx.auth.record_query(&analyst), Err(AuthError::QuotaExceeded { quota: 2 })));
    // Staff see everything and are not counted.
    assert_eq!(fx.auth.policy_grant(&operator).unwrap().buoys, BuoyScope::All);
    for _ in 0..3 {
        fx.auth.record_query(&operator).unwrap();
    }
    assert_eq!(fx.auth.list_plans(&analyst).unwrap().len(), 1);
}

#[test]
fn first_admin_bootstrap_generates_a_password_once() {
    let dir = tempfile::tempdir().unwrap();
    let auth = bluewave_web::AuthService::open(dir.path(), AuthConfig::default()).unwrap();
    let FirstAdmin::Created { email, generated_password: Some(password), .. } =
        auth.ensure_first_admin("Root@Example.org", None).unwrap()
    else {
        panic!("expected a created admin with a generated password");
    };
    assert_eq!(email, "root@example.org");
    assert!(password.expose().len() >= 24);
    assert!(matches!(auth.ensure_first_admin("x@example.org", None).unwrap(), FirstAdmin::AlreadyPresent));
    let pair = auth.login(&email, &password, ip(1)).unwrap();
    assert_eq!(auth.verify_access_token(pair.access_token.expose()).unwrap().role(), Role::Admin);
    let audit = std::fs::read_to_string(auth.audit_log().path()).unwrap();
    assert!(audit.contains("users.bootstrap_admin"));
    assert!(!audit.contains(password.expose()), "generated password must not be recorded");
    // A given password must pass the rules.
    let dir2 = tempfile::tempdir().unwrap();
    let auth2 = bluewave_web::AuthService::open(dir2.path(), AuthConfig::default()).unwrap();
    assert!(matches!(
        auth2.ensure_first_admin("a@b.c", Some(Secret::new("short"))),
        Err(AuthError::WeakPassword(_))
    ));
}

#[test]
fn keys_are_private_files_that_survive_restart_and_rotate() {
    let fx = Fixture::new();
    let keys_dir = fx.auth.keys_dir().to_path_buf();
    assert_eq!(std::fs::metadata(&keys_dir).unwrap().permissions().mode() & 0o777, 0o700);
    let files: Vec<_> = std::fs::read_dir(&keys_dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1);
    assert_eq!(std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777, 0o600);
    let pair = fx.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    let old_kid = parts(pair.access_token.expose()).0["kid"].as_str().unwrap().to_owned();
    // Restart: same key, old tokens still valid.
    let fx = fx.reopen(no_mfa());
    let admin = fx.caller(&pair);
    let (analyst, _) = fx.user("ana@example.org", Role::Analyst);
    assert!(matches!(fx.auth.rotate_signing_key(&analyst), Err(AuthError::Forbidden { .. })));
    let new_kid = fx.auth.rotate_signing_key(&admin).unwrap();
    assert_ne!(new_kid, old_kid);
    // Tokens of the retired key still verify within their lifetime; new tokens use the new key.
    fx.caller(&pair);
    let fresh = fx.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    assert_eq!(parts(fresh.access_token.expose()).0["kid"], new_kid.as_str());
    let fx = fx.reopen(no_mfa());
    fx.caller(&pair);
    fx.caller(&fresh);
    assert_eq!(std::fs::read_dir(&keys_dir).unwrap().count(), 2);
    assert!(fx.audit_text().contains("keys.rotate"));
}

#[test]
fn retired_key_keeps_verifying_device_tokens_within_their_lifetime() {
    // (That a retired key stops verifying after its grace is a unit test in `keys.rs`: the
    // shortest real grace is too long to wait out here.)
    let config = AuthConfig { device_ttl_s: 60, ..no_mfa() };
    let fx = Fixture::with_config(config);
    let admin = fx.admin();
    let device = fx.auth.issue_device_token(&admin, "buoy-1", None).unwrap();
    fx.auth.rotate_signing_key(&admin).unwrap();
    assert_eq!(fx.auth.verify_device_token(device.token.expose()).as_deref(), Ok("buoy-1"));
    assert!(matches!(
        fx.auth.issue_device_token(&admin, "buoy-1", Some(61)),
        Err(AuthError::InvalidInput { .. })
    ));
}

#[test]
fn secrets_never_reach_debug_output_or_the_audit_log() {
    let fx = Fixture::new();
    let pair = fx.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    let refreshed = fx.auth.refresh(pair.refresh_token.expose(), ip(1)).unwrap();
    let admin = fx.caller(&refreshed);
    let device = fx.auth.issue_device_token(&admin, "buoy-1", None).unwrap();
    let debug = format!("{pair:?} {refreshed:?} {device:?} {:?}", Secret::new(ADMIN_PASSWORD));
    for secret in [
        pair.access_token.expose(),
        pair.refresh_token.expose(),
        refreshed.refresh_token.expose(),
        device.token.expose(),
        ADMIN_PASSWORD,
    ] {
        assert!(!debug.contains(secret), "Debug output leaks a secret");
    }
    assert!(debug.contains("[redacted]"));
    assert_eq!(Secret::new("x").to_string(), "[redacted]");
    let _ = fx.auth.login(ADMIN_EMAIL, &Secret::new("a-wrong-password-typed"), ip(2));
    let audit = fx.audit_text();
    for secret in [
        pair.access_token.expose(),
        pair.refresh_token.expose(),
        refreshed.refresh_token.expose(),
        device.token.expose(),
        ADMIN_PASSWORD,
        "a-wrong-password-typed",
    ] {
        assert!(!audit.contains(secret), "audit log leaks a secret");
    }
    // Key material is not in the store's Debug either.
    assert!(!format!("{:?}", fx.auth).contains("PRIVATE"));
}

#[test]
fn state_changes_are_audited_and_paged_for_auditors_only() {
    let fx = Fixture::new();
    let admin = fx.admin();
    let (analyst, _) = fx.user("ana@example.org", Role::Analyst);
    assert!(matches!(fx.auth.audit_page(&analyst, None, 10), Err(AuthError::Forbidden { .. })));
    let page = fx.auth.audit_page(&admin, None, 3).unwrap();
    assert_eq!(page.entries.len(), 3);
    let actions: Vec<&str> = page.entries.iter().map(|e| e.action.as_str()).collect();
    // Newest first: the analyst's login, its creation, the admin's second login.
    assert_eq!(actions, ["auth.login", "users.create", "auth.login"]);
    assert_eq!(page.entries[1].actor, format!("user:{}", admin.user_id()));
    assert_eq!(page.entries[1].target, format!("user:{}", analyst.user_id()));
    assert!(matches!(fx.auth.audit_log().verify().unwrap(), bluewave_web::VerifyReport::Intact { .. }));
}

#[test]
fn stray_key_files_are_removed_and_ipv6_is_limited_per_64() {
    let fx = Fixture::new();
    let keys_dir = fx.auth.keys_dir().to_path_buf();
    // A key file that was written but never recorded (crash), and a temp file.
    std::fs::write(keys_dir.join(format!("{}.ed25519", "ab".repeat(16))), b"x").unwrap();
    std::fs::write(keys_dir.join("half.ed25519.tmp"), b"x").unwrap();
    std::fs::write(keys_dir.join("README"), b"kept").unwrap();
    let fx = fx.reopen(no_mfa());
    let mut names: Vec<String> = std::fs::read_dir(&keys_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"README".to_owned()));
    assert!(!names.iter().any(|n| n.starts_with("abab") || n.ends_with(".tmp")), "{names:?}");
    // Ten attempts spread over one /64 use up that /64's budget.
    let wrong = Secret::new("wrong-password-123");
    for i in 0..10u16 {
        let addr = std::net::IpAddr::from([0x2001, 0xdb8, 0, 1, i, i, i, i]);
        assert!(matches!(
            fx.auth.login(&format!("u{i}@example.org"), &wrong, addr),
            Err(AuthError::InvalidCredentials)
        ));
    }
    let same_64 = std::net::IpAddr::from([0x2001, 0xdb8, 0, 1, 0xffff, 0, 0, 1]);
    assert!(matches!(
        fx.auth.login(ADMIN_EMAIL, &Secret::new(ADMIN_PASSWORD), same_64),
        Err(AuthError::RateLimited { .. })
    ));
    let other_64 = std::net::IpAddr::from([0x2001, 0xdb8, 0, 2, 0, 0, 0, 1]);
    fx.auth.login(ADMIN_EMAIL, &Secret::new(ADMIN_PASSWORD), other_64).unwrap();
}

#[test]
fn forbidden_state_changes_are_audited_and_unknown_refresh_tokens_are_not() {
    let fx = Fixture::new();
    let (customer, _) = fx.user("c@example.org", Role::Customer);
    let before = fx.auth.audit_log().len().unwrap();
    for _ in 0..5 {
        assert!(matches!(fx.auth.refresh("never-issued-token", ip(7)), Err(AuthError::RefreshInvalid)));
    }
    assert_eq!(fx.auth.audit_log().len().unwrap(), before);
    assert!(matches!(
        fx.auth.issue_device_token(&customer, "buoy-1", None),
        Err(AuthError::Forbidden { .. })
    ));
    let admin = fx.admin();
    let last = fx.auth.audit_page(&admin, None, 2).unwrap();
    let denied = &last.entries[1];
    assert_eq!((denied.action.as_str(), denied.outcome.as_str()), ("devices.issue", "denied"));
    assert_eq!(denied.actor, format!("user:{}", customer.user_id()));
}

#[test]
fn expired_refresh_tokens_are_refused_and_purged() {
    let fx = Fixture::with_config(AuthConfig { refresh_ttl_s: 1, ..no_mfa() });
    let pair = fx.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    assert!(matches!(fx.auth.refresh(pair.refresh_token.expose(), ip(1)), Err(AuthError::RefreshInvalid)));
    // The family and its token are deleted; nothing live is touched.
    assert_eq!(fx.auth.purge_expired().unwrap(), 2);
    assert_eq!(fx.auth.purge_expired().unwrap(), 0);
    assert!(fx.audit_text().contains("auth.purge"));
}

#[test]
fn sessions_per_account_are_bounded_by_ending_the_least_recently_used() {
    let fx = Fixture::new();
    let first = fx.auth.login(ADMIN_EMAIL, &Secret::new(ADMIN_PASSWORD), ip(0)).unwrap();
    let mut last = None;
    for i in 1..=bluewave_web::SESSIONS_PER_USER_MAX {
        last = Some(fx.auth.login(ADMIN_EMAIL, &Secret::new(ADMIN_PASSWORD), ip(i as u8)).unwrap());
    }
    // The evicted session's access token stops at once.
    assert_eq!(
        token_refusal(fx.auth.verify_access_token(first.access_token.expose())),
        TokenRefusal::Revoked
    );
    let admin = fx.caller(&last.unwrap());
    let sessions = fx.auth.list_sessions(&admin, admin.user_id()).unwrap();
    assert_eq!(sessions.len(), bluewave_web::SESSIONS_PER_USER_MAX);
    assert!(sessions.iter().all(|s| s.session_id != first.session_id));
    assert!(matches!(fx.auth.refresh(first.refresh_token.expose(), ip(0)), Err(AuthError::RefreshInvalid)));
}

#[test]
fn store_and_audit_files_are_private() {
    let fx = Fixture::new();
    for path in [fx.dir.path().join("accounts.redb"), fx.auth.audit_log().path().to_path_buf()] {
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            path.display()
        );
    }
}

#[test]
fn hostile_login_input_gets_the_ordinary_answer() {
    let fx = Fixture::new();
    // 254 four-byte characters (over 1 KiB), newlines, NULs: the same refusal, never a fault.
    for (i, email) in ["😀".repeat(254), "a@b\nforged log line".into(), "\0@\0".into(), "x".repeat(100_000)]
        .iter()
        .enumerate()
    {
        let r = fx.auth.login(email, &Secret::new("whatever-password"), ip(60 + i as u8));
        assert!(matches!(r, Err(AuthError::InvalidCredentials)), "{r:?}");
    }
    assert!(matches!(fx.auth.audit_log().verify().unwrap(), bluewave_web::VerifyReport::Intact { .. }));
}

#[test]
fn unsafe_configs_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let open = |config: AuthConfig| bluewave_web::AuthService::open(dir.path(), config);
    for config in [
        AuthConfig { access_ttl_s: 0, ..no_mfa() },
        AuthConfig { access_ttl_s: 86_400, ..no_mfa() },
        AuthConfig { device_ttl_s: 10, ..no_mfa() },
        AuthConfig { device_audience: "bluewave-api".into(), ..no_mfa() },
        AuthConfig { issuer: String::new(), ..no_mfa() },
    ] {
        assert!(matches!(open(config), Err(AuthError::InvalidInput { .. })));
    }
    open(AuthConfig::default()).unwrap();
}

#[test]
fn revoked_sessions_stay_refused_across_a_restart() {
    let fx = Fixture::new();
    let a = fx.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    let b = fx.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    let admin = fx.caller(&b);
    assert_eq!(admin.session_id(), Some(b.session_id.as_str()));
    fx.auth.revoke_session(&admin, &a.session_id).unwrap();
    let fx = fx.reopen(no_mfa());
    // Loaded from the store at open: the revoked session's token is refused, the other is not.
    assert_eq!(token_refusal(fx.auth.verify_access_token(a.access_token.expose())), TokenRefusal::Revoked);
    assert_eq!(fx.caller(&b).session_id(), Some(b.session_id.as_str()));
    let audit = fx.audit_text();
    assert!(audit.contains(&format!("\"session:{}\"", a.session_id)), "{audit}");
}
