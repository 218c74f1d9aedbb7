//! The adapter that hands `web::auth`'s device tokens to `wire`: a HELLO's JWT is verified by
//! [`AuthService::verify_device_token`] and its refusal mapped to the protocol's REFUSED reason
//! (wire/PROTOCOL.md §3.4). `wire` never sees JWT; `web` never sees QUIC.

use std::sync::Arc;

use bluewave_engine::BuoyId;
use bluewave_web::{AuthService, DeviceRefusal};
use bluewave_wire::{DeviceAuthenticator, Refusal};

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

impl DeviceAuthenticator for JwtDevices {
    fn authenticate(&self, token: &str) -> Result<BuoyId, Refusal> {
        let buoy = self.auth.verify_device_token(token).map_err(refusal_of)?;
        // verify_device_token already checked the id's shape; a failure here is a malformed token.
        BuoyId::new(&buoy).map_err(|_| Refusal::TokenMalformed("token subject is not a buoy id".to_owned()))
    }
}
