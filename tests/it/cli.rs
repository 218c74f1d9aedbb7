//! Offline account commands of the `bluewave` binary against a real data dir: `users reset-mfa`
//! removes an enrolled account's MFA and ends its sessions (audited as `cli`); `keys rotate`
//! makes a new signing key current and keeps the old one for verification, audited as `cli`;
//! against a server that holds the accounts store it stops without changing anything;
//! `inspect --config` shows the retention settings and the last retention pass; `shop
//! seed-demo` loads the example catalogue once.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn bluewave(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bluewave"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn key_files(data_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".ed25519"))
        .collect();
    names.sort();
    names
}

#[test]
fn keys_rotate_makes_a_new_current_key_and_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let first = bluewave(dir.path(), &["keys", "rotate"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let stdout = String::from_utf8_lossy(&first.stdout);
    let kid = stdout.split_whitespace().nth(3).unwrap().to_owned();
    assert!(stdout.starts_with("new signing key "), "{stdout}");
    // The first key (made at open) and the new current one.
    let keys = key_files(dir.path());
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.contains(&format!("{kid}.ed25519")), "{keys:?}");

    let second = bluewave(dir.path(), &["keys", "rotate"]);
    assert!(second.status.success());
    assert_eq!(key_files(dir.path()).len(), 3);

    let audit = std::fs::read_to_string(dir.path().join("audit").join("audit.jsonl")).unwrap();
    let rotations: Vec<&str> = audit.lines().filter(|l| l.contains("\"keys.rotate\"")).collect();
    assert_eq!(rotations.len(), 2, "{audit}");
    assert!(rotations.iter().all(|l| l.contains("\"actor\":\"cli\"")), "{audit}");
    assert!(rotations[0].contains(&format!("\"key:{kid}\"")), "{}", rotations[0]);

    // While another process holds the accounts store (a running server), nothing changes.
    let held = bluewave_web::AuthService::open(dir.path(), bluewave_web::AuthConfig::default()).unwrap();
    let refused = bluewave(dir.path(), &["keys", "rotate"]);
    assert!(!refused.status.success());
    assert_eq!(key_files(dir.path()).len(), 3);
    drop(held);
}

#[test]
fn users_reset_mfa_removes_mfa_ends_sessions_and_is_audited() {
    use bluewave_web::{
        AuthClock, AuthConfig, AuthError, AuthService, LoginOutcome, NewUser, Role, Secret, TokenRefusal,
    };

    let dir = tempfile::tempdir().unwrap();
    let email = "ops@example.org";
    let password = "an-operator-password-long-enough";
    let clock = AuthClock::manual(1_800_000_010);
    let config =
        AuthConfig { clock: clock.clone(), mfa_required_roles: Default::default(), ..AuthConfig::default() };
    let pair = {
        let auth = AuthService::open(dir.path(), config.clone()).unwrap();
        auth.ensure_first_admin("admin@example.org", Some(Secret::new("an-admin-password-long-enough")))
            .unwrap();
        let admin_pair = auth
            .login("admin@example.org", &Secret::new("an-admin-password-long-enough"), [10, 0, 0, 1].into())
            .unwrap();
        let admin = auth.verify_access_token(admin_pair.access_token.expose()).unwrap();
        let new = NewUser {
            email: email.into(),
            password: Secret::new(password),
            role: Role::Operator,
            plan_id: None,
        };
        auth.create_user(&admin, new).unwrap();
        let pair = auth.login(email, &Secret::new(password), [10, 0, 0, 2].into()).unwrap();
        let caller = auth.verify_access_token(pair.access_token.expose()).unwrap();
        let enrolment = auth.begin_mfa_enrolment(&caller).unwrap();
        let secret = bluewave_web::base32_decode(enrolment.secret_base32.expose()).unwrap();
        let code = bluewave_web::totp_code(&secret, clock.now_s()).unwrap();
        auth.confirm_mfa_enrolment(&caller, &code).unwrap();
        // The enrolment ended the session's access token; its refresh token gives a live one.
        let pair = auth.refresh(pair.refresh_token.expose(), [10, 0, 0, 2].into()).unwrap();
        auth.verify_access_token(pair.access_token.expose()).unwrap();
        assert!(matches!(
            auth.login_start(email, &Secret::new(password), [10, 0, 0, 2].into()).unwrap(),
            LoginOutcome::MfaRequired { .. }
        ));
        pair
    };

    let unknown = bluewave(dir.path(), &["users", "reset-mfa", "nobody@example.org"]);
    assert!(!unknown.status.success());
    assert_eq!(String::from_utf8_lossy(&unknown.stderr).lines().last(), Some("bluewave: user not found"));
    let reset = bluewave(dir.path(), &["users", "reset-mfa", email]);
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));

    let auth = AuthService::open(dir.path(), config).unwrap();
    // MFA is off (a password login gives tokens again) and the old session has ended.
    assert!(matches!(
        auth.login_start(email, &Secret::new(password), [10, 0, 0, 2].into()).unwrap(),
        LoginOutcome::Tokens(_)
    ));
    assert!(matches!(
        auth.verify_access_token(pair.access_token.expose()),
        Err(AuthError::Token(TokenRefusal::Revoked))
    ));
    assert!(matches!(
        auth.refresh(pair.refresh_token.expose(), [10, 0, 0, 2].into()),
        Err(AuthError::RefreshInvalid)
    ));
    let audit = std::fs::read_to_string(dir.path().join("audit").join("audit.jsonl")).unwrap();
    let resets: Vec<&str> = audit.lines().filter(|l| l.contains("\"mfa.reset\"")).collect();
    assert_eq!(resets.len(), 1, "{audit}");
    assert!(resets[0].contains("\"actor\":\"cli\"") && resets[0].contains(email), "{}", resets[0]);
}

/// `inspect --config` shows the retention the server's config file sets (and refuses a bad
/// value naming its key); without a pass that removed anything it says so.
#[test]
fn inspect_shows_the_configured_retention_and_the_last_pass() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bluewave.toml");
    std::fs::write(
        &config,
        "[engine.retention]\ndefault = \"90d\"\n[engine.retention.metrics]\nph = \"30d\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let shown = bluewave(&data, &["inspect", "--config", config.to_str().unwrap()]);
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    let stdout = String::from_utf8_lossy(&shown.stdout);
    assert!(stdout.contains("retention: default 90d, ph 30d\n"), "{stdout}");
    assert!(stdout.contains("last retention pass: none has removed anything\n"), "{stdout}");
    std::fs::write(&config, "[engine.retention]\ndefault = \"90 days\"\n").unwrap();
    let refused = bluewave(&data, &["inspect", "--config", config.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("engine.retention.default"));
}

/// Review 1, finding 10: the offline commands read the server's config file the way `serve`
/// does (`--config`, else `<data-dir>/bluewave.toml`), instead of default settings.
#[test]
fn offline_commands_read_the_data_dirs_config_file_like_serve() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bluewave.toml"), "[auth]\naccess_ttl_s = 600\nrefresh_ttll_s = 5\n")
        .unwrap();
    for args in [&["keys", "rotate"][..], &["users", "reset-mfa", "nobody@example.org"][..]] {
        let out = bluewave(dir.path(), args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("bluewave.toml") && stderr.contains("refresh_ttll_s"), "{args:?}: {stderr}");
    }
    assert!(!dir.path().join("accounts.redb").exists(), "nothing opened with the wrong settings");
    // A file the flag names wins over the data dir's.
    let other = dir.path().join("other.toml");
    std::fs::write(&other, "[auth]\naccess_ttl_s = 600\n").unwrap();
    let out = bluewave(dir.path(), &["keys", "rotate", "--config", other.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `shop seed-demo` loads the example catalogue once: a second run adds nothing, and the
/// shop store exists only after it (or `serve`) ran.
#[test]
fn shop_seed_demo_loads_the_example_catalogue_once() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!dir.path().join("shop.redb").exists());
    let first = bluewave(dir.path(), &["shop", "seed-demo"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert_eq!(
        String::from_utf8_lossy(&first.stdout),
        "shop demo loaded: 3 products and 3 plan offers added\n"
    );
    let again = bluewave(dir.path(), &["shop", "seed-demo"]);
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        "shop demo loaded: 0 products and 0 plan offers added\n"
    );
    assert!(dir.path().join("shop.redb").exists());
    let audit = std::fs::read_to_string(dir.path().join("audit/audit.jsonl")).unwrap();
    assert_eq!(audit.matches("\"action\":\"shop.seed_demo\"").count(), 2);
}
