//! Token forgery suite: each case changes one thing of a genuine token (or builds a hostile one)
//! and asserts the exact refusal. Forged tokens are signed with the server's real key file
//! unless the case is about the key or signature, so only the attacked property differs.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bluewave_web::{AuthError, DeviceRefusal, Role, TOKEN_BYTES_MAX, TokenRefusal};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};

use crate::auth_fixtures::{ADMIN_EMAIL, ADMIN_PASSWORD, Fixture, GenuineToken, b64, now_s, parts, sign_raw};

struct Forge {
    fx: Fixture,
    token: GenuineToken,
}

impl std::ops::Deref for Forge {
    type Target = GenuineToken;

    fn deref(&self) -> &GenuineToken {
        &self.token
    }
}

impl Forge {
    fn new() -> Self {
        let fx = Fixture::new();
        let pair = fx.login(ADMIN_EMAIL, ADMIN_PASSWORD);
        let token = GenuineToken::new(pair.access_token.expose().to_owned(), fx.auth.keys_dir());
        Self { fx, token }
    }

    fn refusal(&self, token: &str) -> TokenRefusal {
        match self.fx.auth.verify_access_token(token) {
            Err(AuthError::Token(r)) => r,
            other => panic!("expected a token refusal, got {other:?}"),
        }
    }
}

#[test]
fn genuine_token_and_resigned_copy_are_accepted() {
    let f = Forge::new();
    assert!(f.fx.auth.verify_access_token(&f.genuine).is_ok());
    // The forging helper itself produces valid tokens: every refusal below is due to the change.
    let copy = sign_raw(&f.key, &f.header, &f.payload);
    assert_ne!(copy, f.genuine, "re-encoded JSON orders keys differently");
    let caller = f.fx.auth.verify_access_token(&copy).unwrap();
    assert_eq!(caller.email(), ADMIN_EMAIL);
}

#[test]
fn alg_none_is_refused() {
    let f = Forge::new();
    let mut header = f.header.clone();
    header["alg"] = json!("none");
    let token = format!("{}.{}.", b64(header.to_string().as_bytes()), b64(f.payload.to_string().as_bytes()));
    assert_eq!(f.refusal(&token), TokenRefusal::AlgorithmNotAllowed);
    let token = format!("{}.{}.", b64(br#"{"alg":"None"}"#), b64(f.payload.to_string().as_bytes()));
    assert_eq!(f.refusal(&token), TokenRefusal::AlgorithmNotAllowed);
}

#[test]
fn token_signed_with_another_key_is_refused() {
    let f = Forge::new();
    let attacker = SigningKey::from_bytes(&[7u8; 32]);
    let token = sign_raw(&attacker, &f.header, &f.payload);
    assert_eq!(f.refusal(&token), TokenRefusal::BadSignature);
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    use hmac_sha256::sign_hs256;
    let f = Forge::new();
    let public = f.key.verifying_key().to_bytes();
    let mut header = f.header.clone();
    header["alg"] = json!("HS256");
    let message = format!("{}.{}", b64(header.to_string().as_bytes()), b64(f.payload.to_string().as_bytes()));
    let token = format!("{message}.{}", b64(&sign_hs256(&public, message.as_bytes())));
    assert_eq!(f.refusal(&token), TokenRefusal::AlgorithmNotAllowed);
}

#[test]
fn flipped_signature_bit_is_refused() {
    let f = Forge::new();
    let (message, signature) = f.genuine.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
    for bit in [0usize, 100, 511] {
        let mut flipped = sig.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let token = format!("{message}.{}", b64(&flipped));
        assert_eq!(f.refusal(&token), TokenRefusal::BadSignature, "bit {bit}");
    }
    // A flipped payload bit is a bad signature too.
    let mut payload = f.payload.clone();
    payload["role"] = json!("admin ");
    let tampered = format!(
        "{}.{}.{signature}",
        b64(f.header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    );
    assert_eq!(f.refusal(&tampered), TokenRefusal::BadSignature);
    sig.truncate(10);
    assert_eq!(f.refusal(&format!("{message}.{}", b64(&sig))), TokenRefusal::BadSignature);
}

#[test]
fn expiry_and_not_before_use_a_30_second_leeway() {
    let f = Forge::new();
    let now = now_s();
    assert_eq!(f.refusal(&f.with_claim("exp", json!(now - 120))), TokenRefusal::Expired);
    assert_eq!(f.refusal(&f.with_claim("exp", json!(now - 45))), TokenRefusal::Expired);
    // Within the leeway: accepted.
    assert!(f.fx.auth.verify_access_token(&f.with_claim("exp", json!(now - 10))).is_ok());
    assert_eq!(f.refusal(&f.with_claim("nbf", json!(now + 120))), TokenRefusal::NotYetValid);
    assert!(f.fx.auth.verify_access_token(&f.with_claim("nbf", json!(now + 10))).is_ok());
}

#[test]
fn claims_of_the_wrong_json_type_are_malformed() {
    let f = Forge::new();
    let far = (now_s() + 600).to_string();
    assert_eq!(f.refusal(&f.with_claim("exp", json!(far))), TokenRefusal::Malformed);
    assert_eq!(f.refusal(&f.with_claim("nbf", json!("0"))), TokenRefusal::Malformed);
    assert_eq!(f.refusal(&f.with_claim("exp", json!(1.5e300))), TokenRefusal::Malformed);
    assert_eq!(f.refusal(&f.with_claim("aud", json!(["bluewave-api"]))), TokenRefusal::Malformed);
    let mut payload = f.payload.clone();
    payload.as_object_mut().unwrap().remove("exp");
    assert_eq!(f.refusal(&sign_raw(&f.key, &f.header, &payload)), TokenRefusal::Malformed);
}

#[test]
fn wrong_audience_issuer_and_type_are_refused() {
    let f = Forge::new();
    assert_eq!(f.refusal(&f.with_claim("aud", json!("someone-else"))), TokenRefusal::WrongAudience);
    assert_eq!(f.refusal(&f.with_claim("aud", json!("bluewave-ingest"))), TokenRefusal::WrongAudience);
    assert_eq!(f.refusal(&f.with_claim("iss", json!("evil"))), TokenRefusal::WrongIssuer);
    assert_eq!(f.refusal(&f.with_claim("typ", json!("refresh"))), TokenRefusal::WrongType);
    assert_eq!(f.refusal(&f.with_claim("typ", json!("device"))), TokenRefusal::WrongType);
}

#[test]
fn refresh_token_is_not_an_access_token() {
    let f = Forge::new();
    let pair = f.fx.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    assert_eq!(f.refusal(pair.refresh_token.expose()), TokenRefusal::Malformed);
    // And an access token is not a refresh token.
    assert!(matches!(
        f.fx.auth.refresh(pair.access_token.expose(), crate::auth_fixtures::ip(1)),
        Err(AuthError::RefreshInvalid)
    ));
}

#[test]
fn device_and_access_tokens_are_not_interchangeable() {
    let f = Forge::new();
    let admin = f.fx.caller(&f.fx.login(ADMIN_EMAIL, ADMIN_PASSWORD));
    let device = f.fx.auth.issue_device_token(&admin, "buoy-7", None).unwrap();
    assert_eq!(f.refusal(device.token.expose()), TokenRefusal::WrongType);
    assert_eq!(f.fx.auth.verify_device_token(&f.genuine), Err(DeviceRefusal::TokenWrongType));
    assert_eq!(f.fx.auth.verify_device_token(device.token.expose()).as_deref(), Ok("buoy-7"));
}

#[test]
fn hostile_key_ids_are_refused_cleanly() {
    let f = Forge::new();
    for kid in [
        json!("../../etc/passwd"),
        json!("/dev/zero"),
        json!("00000000000000000000000000000000"),
        json!("K".repeat(600)),
        json!(""),
        json!(format!("{}\u{0}", f.header["kid"].as_str().unwrap())),
        Value::Null,
    ] {
        assert_eq!(f.refusal(&f.with_header("kid", kid.clone())), TokenRefusal::UnknownKey, "kid {kid}");
    }
    let mut header = f.header.clone();
    header.as_object_mut().unwrap().remove("kid");
    assert_eq!(f.refusal(&sign_raw(&f.key, &header, &f.payload)), TokenRefusal::UnknownKey);
    // A kid so long the header exceeds its size bound is refused before any lookup.
    assert_eq!(f.refusal(&f.with_header("kid", json!("A".repeat(5_000)))), TokenRefusal::Malformed);
    // A kid of the wrong JSON type.
    assert_eq!(f.refusal(&f.with_header("kid", json!(42))), TokenRefusal::Malformed);
}

#[test]
fn garbage_is_malformed_and_empty_is_missing() {
    let f = Forge::new();
    assert_eq!(f.refusal(""), TokenRefusal::Missing);
    for garbage in ["abc", "a.b", "a.b.c.d", "!!!.???.***", "..", "eyJ.eyJ.sig"] {
        assert_eq!(f.refusal(garbage), TokenRefusal::Malformed, "{garbage}");
    }
    let huge = format!("{}.{}.{}", "A".repeat(10), "B".repeat(TOKEN_BYTES_MAX), "C");
    assert_eq!(f.refusal(&huge), TokenRefusal::Malformed);
    let not_json = format!("{}.{}.{}", b64(b"not json"), b64(b"{}"), b64(b"x"));
    assert_eq!(f.refusal(&not_json), TokenRefusal::Malformed);
}

#[test]
fn token_for_an_unknown_subject_is_refused() {
    let f = Forge::new();
    let token = f.with_claim("sub", json!("ffffffffffffffffffffffffffffffff"));
    assert_eq!(f.refusal(&token), TokenRefusal::UnknownSubject);
}

#[test]
fn role_claim_is_not_trusted() {
    // A customer's genuine token re-signed with role=admin (as if the key leaked) still yields
    // the stored role: authorization reads the account, not the claim.
    let f = Forge::new();
    let (customer, pair) = f.fx.user("cust@example.org", Role::Customer);
    let (header, mut payload) = parts(pair.access_token.expose());
    payload["role"] = json!("admin");
    let token = sign_raw(&f.key, &header, &payload);
    let caller = f.fx.auth.verify_access_token(&token).unwrap();
    assert_eq!(caller.role(), Role::Customer);
    assert_eq!(caller.user_id(), customer.user_id());
}

#[test]
fn device_token_refusals_carry_protocol_codes() {
    let f = Forge::new();
    let admin = f.fx.admin();
    let issued = f.fx.auth.issue_device_token(&admin, "buoy-1", None).unwrap();
    let token = issued.token.expose().to_owned();
    let (header, payload) = parts(&token);
    let resign = |name: &str, value: Value| {
        let mut p = payload.clone();
        p[name] = value;
        sign_raw(&f.key, &header, &p)
    };
    let auth = &f.fx.auth;
    assert_eq!(auth.verify_device_token(""), Err(DeviceRefusal::TokenMissing));
    assert_eq!(auth.verify_device_token("x.y"), Err(DeviceRefusal::TokenMalformed));
    assert_eq!(
        auth.verify_device_token(&resign("exp", json!(now_s() - 3_600))),
        Err(DeviceRefusal::TokenExpired)
    );
    assert_eq!(auth.verify_device_token(&resign("typ", json!("access"))), Err(DeviceRefusal::TokenWrongType));
    assert_eq!(
        auth.verify_device_token(&resign("aud", json!("bluewave-api"))),
        Err(DeviceRefusal::TokenBadSignature)
    );
    // Another buoy's id under the same jti: the record does not match.
    assert_eq!(auth.verify_device_token(&resign("sub", json!("buoy-2"))), Err(DeviceRefusal::DeviceRevoked));
    assert_eq!(
        auth.verify_device_token(&resign("sub", json!("bad buoy/id"))),
        Err(DeviceRefusal::TokenMalformed)
    );
    let attacker = SigningKey::from_bytes(&[9u8; 32]);
    assert_eq!(
        auth.verify_device_token(&sign_raw(&attacker, &header, &payload)),
        Err(DeviceRefusal::TokenBadSignature)
    );
    let codes: Vec<u16> = [
        DeviceRefusal::TokenMissing,
        DeviceRefusal::TokenMalformed,
        DeviceRefusal::TokenBadSignature,
        DeviceRefusal::TokenExpired,
        DeviceRefusal::TokenWrongType,
        DeviceRefusal::DeviceRevoked,
    ]
    .iter()
    .map(|r| r.code())
    .collect();
    assert_eq!(codes, [1, 2, 3, 4, 5, 6]);
    assert_eq!(auth.verify_device_token(&token).as_deref(), Ok("buoy-1"));
}

/// HMAC-SHA256 from `sha2`, enough to build the alg-confusion token.
pub(crate) mod hmac_sha256 {
    use sha2::{Digest, Sha256};

    pub fn sign_hs256(key: &[u8], message: &[u8]) -> Vec<u8> {
        let mut k = [0u8; 64];
        k[..key.len()].copy_from_slice(key);
        let mut inner = Sha256::new();
        inner.update(k.map(|b| b ^ 0x36));
        inner.update(message);
        let mut outer = Sha256::new();
        outer.update(k.map(|b| b ^ 0x5c));
        outer.update(inner.finalize());
        outer.finalize().to_vec()
    }
}
