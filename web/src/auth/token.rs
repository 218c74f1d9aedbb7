//! JWT claims, signing and the signature/claim checks shared by access and device tokens.
//!
//! Order of checks (each failure is one exact [`TokenRefusal`]):
//! 1. size ≤ [`TOKEN_BYTES_MAX`], three segments, header JSON parses → else `Malformed`;
//! 2. header `alg` is exactly `EdDSA` → else `AlgorithmNotAllowed` (so `none`, `HS256` signed
//!    with our public key, `RS256`… never reach a verifier);
//! 3. header `kid` is a well-formed key id of the set, still valid for this token kind → else
//!    `UnknownKey` (a hostile `kid` is only compared with our ids, never used as a path);
//! 4. signature → `BadSignature`; claim types → `Malformed`; `exp`/`nbf` with
//!    [`LEEWAY_S`] → `Expired` / `NotYetValid` (done by `jsonwebtoken` with an EdDSA-only
//!    allowlist);
//! 5. `typ` → `WrongType`, `iss` → `WrongIssuer`, `aud` → `WrongAudience` (checked here, in this
//!    order, so an access token shown as a device token is refused as the wrong type).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use super::error::{AuthError, AuthResult, TokenRefusal};
use super::keys::{KeyGrace, KeySet, KeyUse, kid_well_formed};

/// Longest token accepted, in bytes (the wire protocol's `TOKEN_BYTES_MAX`).
pub const TOKEN_BYTES_MAX: usize = 8_192;
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_S: u64 = 30;
/// Longest header segment decoded before parsing, in bytes.
const HEADER_SEGMENT_BYTES_MAX: usize = 1_024;

/// `typ` claim of access tokens.
pub const TYP_ACCESS: &str = "access";
/// `typ` claim of device tokens.
pub const TYP_DEVICE: &str = "device";

/// Claims of our tokens, as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// Issuer (the server's configured name).
    pub iss: String,
    /// Audience: the API for access tokens, the ingest endpoint for device tokens.
    pub aud: String,
    /// Subject: user id, or buoy id for device tokens.
    pub sub: String,
    /// Kind: `access` or `device`.
    pub typ: String,
    /// Expiry, s since the epoch.
    pub exp: u64,
    /// Issue time, s since the epoch.
    pub iat: u64,
    /// Not before, s since the epoch.
    pub nbf: u64,
    /// Token id (32 hex chars).
    pub jti: String,
    /// Role (access tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Plan id (access tokens of planned accounts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Issue time in ms, compared with the account's `valid_after_ms` stamp (the seconds of
    /// `iat` are too coarse to order a token and a logout-all in the same second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat_ms: Option<u64>,
    /// Session (refresh family) of an access token: a revoked session's access tokens are
    /// refused at once (the revocation set of `AuthService`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// When the session's holder last proved who they are (password login or MFA code), s since
    /// the epoch on the auth clock; the fresh-auth gate of sensitive actions compares it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<u64>,
}

/// What a token check expects.
pub(crate) struct Expect<'a> {
    pub typ: &'a str,
    pub iss: &'a str,
    pub aud: &'a str,
    pub key_use: KeyUse,
}

/// Signs `claims` with the active key.
pub(crate) fn sign(keys: &KeySet, claims: &TokenClaims) -> AuthResult<String> {
    let key = keys.active().ok_or_else(|| AuthError::Crypto("no active signing key".into()))?;
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding)
        .map_err(|e| AuthError::Crypto(format!("sign token: {e}")))
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// Checks signature and claims; see the module doc for the order.
pub(crate) fn verify(
    keys: &KeySet,
    grace: &KeyGrace,
    token: &str,
    expect: &Expect<'_>,
    now_s: u64,
) -> Result<TokenClaims, TokenRefusal> {
    if token.is_empty() {
        return Err(TokenRefusal::Missing);
    }
    if token.len() > TOKEN_BYTES_MAX {
        return Err(TokenRefusal::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenRefusal::Malformed);
    };
    if header_b64.len() > HEADER_SEGMENT_BYTES_MAX {
        return Err(TokenRefusal::Malformed);
    }
    let header_json = URL_SAFE_NO_PAD.decode(header_b64).map_err(|_| TokenRefusal::Malformed)?;
    let header: RawHeader = serde_json::from_slice(&header_json).map_err(|_| TokenRefusal::Malformed)?;
    if header.alg != "EdDSA" {
        return Err(TokenRefusal::AlgorithmNotAllowed);
    }
    let kid = header.kid.as_deref().filter(|k| kid_well_formed(k)).ok_or(TokenRefusal::UnknownKey)?;
    let key = keys.verifier(kid, expect.key_use, now_s, grace).ok_or(TokenRefusal::UnknownKey)?;

    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.leeway = LEEWAY_S;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    // iss/aud are compared below, after typ, so the refusal names the most useful reason.
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<TokenClaims>(token, key, &validation).map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature => TokenRefusal::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm | ErrorKind::InvalidAlgorithmName => {
            TokenRefusal::AlgorithmNotAllowed
        }
        ErrorKind::ExpiredSignature => TokenRefusal::Expired,
        ErrorKind::ImmatureSignature => TokenRefusal::NotYetValid,
        ErrorKind::InvalidKeyFormat | ErrorKind::InvalidEddsaKey => TokenRefusal::UnknownKey,
        _ => TokenRefusal::Malformed,
    })?;
    let claims = data.claims;
    if claims.typ != expect.typ {
        return Err(TokenRefusal::WrongType);
    }
    if claims.iss != expect.iss {
        return Err(TokenRefusal::WrongIssuer);
    }
    if claims.aud != expect.aud {
        return Err(TokenRefusal::WrongAudience);
    }
    Ok(claims)
}
