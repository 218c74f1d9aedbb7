//! The adapter that hands `web::auth`'s device tokens to `wire`: a HELLO's JWT is verified by
//! [`AuthService::verify_device_token`] and its refusal mapped to the protocol's REFUSED reason
//! (wire/PROTOCOL.md §3.4). `wire` never sees JWT; `web` never sees QUIC.

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;
use bluewave_engine::BuoyId;
use bluewave_web::{AuditEvent, AuthService, DeviceRefusal};
use bluewave_wire::{DeviceAuthenticator, REFUSALS_AUDIT_WINDOW_MS, Refusal, RefusalAudit, RefuseReason};

/// Device tokens issued through the API (`POST /api/buoys/{id}/device-tokens`).
pub struct JwtDevices {
    auth: Arc<AuthService>,
}

impl JwtDevices {
    /// Verifies HELLO tokens against `auth`'s keys and revocation list.
    pub fn new(auth: Arc<AuthService>) -> Self {
        Self { auth }
    }
}

/// The REFUSED reason of an auth refusal. A token the server could not check (store fault)
/// becomes `SERVER_BUSY`: the buoy retries later, nothing is let through.
pub fn refusal_of(refusal: DeviceRefusal) -> Refusal {
    match refusal {
        DeviceRefusal::TokenMissing => Refusal::TokenMissing,
        DeviceRefusal::TokenMalformed => Refusal::TokenMalformed("not a well-formed device JWT".to_owned()),
        DeviceRefusal::TokenBadSignature => Refusal::TokenBadSignature,
        DeviceRefusal::TokenExpired => Refusal::TokenExpired,
        DeviceRefusal::TokenWrongType => Refusal::TokenWrongType,
        DeviceRefusal::DeviceRevoked => Refusal::DeviceRevoked("of this token".to_owned()),
        DeviceRefusal::ServerUnavailable => Refusal::Unavailable,
    }
}

/// The `sub` of a JWT whose signature was already verified (`DEVICE_REVOKED` comes only after
/// the signature, issuer, audience, expiry and type checks), so the server can tell a revoked
/// device of a registered buoy from one whose buoy is not registered (PROTOCOL.md §3.4).
fn verified_subject(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&json).ok()?;
    claims.get("sub")?.as_str().map(str::to_owned)
}

impl DeviceAuthenticator for JwtDevices {
    fn authenticate(&self, token: &str) -> Result<BuoyId, Refusal> {
        let buoy = self.auth.verify_device_token(token).map_err(|refusal| match refusal {
            DeviceRefusal::DeviceRevoked => match verified_subject(token) {
                Some(sub) => Refusal::DeviceRevoked(sub),
                None => refusal_of(refusal),
            },
            other => refusal_of(other),
        })?;
        // verify_device_token already checked the id's shape; a failure here is a malformed token.
        BuoyId::new(&buoy).map_err(|_| Refusal::TokenMalformed("token subject is not a buoy id".to_owned()))
    }
}

/// Writes an audit entry for an address that keeps being refused at HELLO (`wire`'s
/// [`RefusalAudit`], handed to the QUIC server by `serve`): actor `ip:<addr>`, action
/// `device.hello_refused_repeatedly`, outcome `denied`, with the count and the last reason.
pub struct AuditRefusals {
    auth: Arc<AuthService>,
}

impl AuditRefusals {
    /// Audits into `auth`'s audit log.
    pub fn new(auth: Arc<AuthService>) -> Self {
        Self { auth }
    }
}

impl RefusalAudit for AuditRefusals {
    fn repeated_refusals(&self, peer: IpAddr, refusals: u32, reason: RefuseReason) {
        let event = AuditEvent::new(format!("ip:{peer}"), "device.hello_refused_repeatedly", "-", "denied")
            .with_details(serde_json::json!({
                "refusals": refusals,
                "window_ms": REFUSALS_AUDIT_WINDOW_MS,
                "last_reason": reason.name(),
            }));
        if let Err(error) = self.auth.audit_log().append(event) {
            tracing::error!(%peer, %error, "could not audit repeated HELLO refusals");
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::verified_subject;

    #[test]
    fn the_subject_is_read_from_the_payload_part_only() {
        let encode = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        let token =
            format!("{}.{}.sig", encode(r#"{"alg":"EdDSA"}"#), encode(r#"{"sub":"buoy-7","typ":"device"}"#));
        assert_eq!(verified_subject(&token).as_deref(), Some("buoy-7"));
        assert_eq!(verified_subject("no-dots"), None);
        assert_eq!(verified_subject(&format!("h.{}.s", encode(r#"{"sub":7}"#))), None);
        assert_eq!(verified_subject("h.!!!.s"), None);
    }
}
