//! Device tokens for buoys: issue, verify, list, revoke.

use super::*;

impl AuthService {
    /// Verifies a buoy's device token; returns the buoy id it is bound to. Refusals carry the
    /// wire protocol's REFUSED codes ([`DeviceRefusal::code`]). Whether the buoy is registered
    /// is the server's check, after this one.
    pub fn verify_device_token(&self, token: &str) -> Result<String, DeviceRefusal> {
        let config = &self.inner.config;
        let expect = Expect {
            typ: TYP_DEVICE,
            iss: &config.issuer,
            aud: &config.device_audience,
            key_use: KeyUse::Device,
        };
        let claims = {
            let keys = self.inner.keys.read().map_err(|_| DeviceRefusal::ServerUnavailable)?;
            token::verify(&keys, &self.inner.grace, token, &expect, now_s())?
        };
        if bluewave_engine::BuoyId::new(&claims.sub).is_err() {
            return Err(DeviceRefusal::TokenMalformed);
        }
        let record = self.device_record(&claims.jti).map_err(|e| {
            tracing::error!(error = %e, "device token lookup failed");
            DeviceRefusal::ServerUnavailable
        })?;
        match record {
            Some(r) if r.revoked_ms.is_none() && r.buoy_id == claims.sub => Ok(claims.sub),
            _ => Err(DeviceRefusal::DeviceRevoked),
        }
    }

    pub(super) fn device_record(&self, jti: &str) -> AuthResult<Option<DeviceRecord>> {
        if !keys::kid_well_formed(jti) {
            return Ok(None);
        }
        let txn = self.inner.db.begin_read()?;
        store::get(&txn.open_table(DEVICE_TOKENS)?, "device_tokens", jti)
    }

    /// Issues a device token for `buoy_id`, valid `ttl_s` (default and maximum: the configured
    /// device lifetime). Needs `devices:manage`.
    pub fn issue_device_token(
        &self,
        caller: &Caller,
        buoy_id: &str,
        ttl_s: Option<u64>,
    ) -> AuthResult<IssuedDeviceToken> {
        self.require(caller, Permission::DevicesManage, "devices.issue")?;
        self.require_fresh(caller)?;
        let buoy = bluewave_engine::BuoyId::new(buoy_id)
            .map_err(|e| AuthError::InvalidInput { field: "buoy_id", reason: e.to_string() })?;
        let max = self.inner.config.device_ttl_s;
        let ttl_s = ttl_s.unwrap_or(max);
        if !(DEVICE_TTL_S_MIN..=max).contains(&ttl_s) {
            return Err(AuthError::InvalidInput {
                field: "ttl_s",
                reason: format!("{DEVICE_TTL_S_MIN}-{max}"),
            });
        }
        let now = now_s();
        let jti = random_id()?;
        let record = DeviceRecord {
            buoy_id: buoy.as_str().to_owned(),
            issued_s: now,
            expires_s: now + ttl_s,
            issued_by: caller.actor(),
            revoked_ms: None,
        };
        let config = &self.inner.config;
        let claims = TokenClaims {
            iss: config.issuer.clone(),
            aud: config.device_audience.clone(),
            sub: record.buoy_id.clone(),
            typ: TYP_DEVICE.into(),
            exp: record.expires_s,
            iat: now,
            nbf: now,
            jti: jti.clone(),
            role: Some(Role::Device.to_string()),
            plan: None,
            iat_ms: None,
            sid: None,
            auth_time: None,
        };
        let token = {
            let keys = self.inner.keys.read().map_err(|_| AuthError::Poisoned)?;
            token::sign(&keys, &claims)?
        };
        let txn = self.inner.db.begin_write()?;
        {
            let mut table = txn.open_table(DEVICE_TOKENS)?;
            if table.len()? >= DEVICE_TOKENS_MAX {
                return Err(AuthError::LimitReached { what: "device tokens", max: DEVICE_TOKENS_MAX });
            }
            store::put(&mut table, &jti, &record)?;
        }
        txn.commit()?;
        self.audit(
            AuditEvent::new(caller.actor(), "devices.issue", format!("device:{jti}"), "ok")
                .with_details(json!({ "buoy": record.buoy_id, "expires_s": record.expires_s })),
        )?;
        Ok(IssuedDeviceToken { token: Secret::new(token), info: device_info(jti, record) })
    }

    /// Device tokens on record (optionally of one buoy). Needs `devices:manage`.
    pub fn list_device_tokens(
        &self,
        caller: &Caller,
        buoy_id: Option<&str>,
    ) -> AuthResult<Vec<DeviceTokenInfo>> {
        self.authorize(caller, Permission::DevicesManage)?;
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(DEVICE_TOKENS)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            let record: DeviceRecord = store::decode("device_tokens", k.value(), v.value())?;
            if buoy_id.is_none_or(|b| b == record.buoy_id) {
                out.push(device_info(k.value().to_owned(), record));
            }
        }
        Ok(out)
    }

    /// Revokes a device token by `jti`: the buoy's next connection is refused with
    /// `DEVICE_REVOKED`. Needs `devices:manage`.
    pub fn revoke_device_token(&self, caller: &Caller, jti: &str) -> AuthResult<()> {
        self.require(caller, Permission::DevicesManage, "devices.revoke")?;
        if !keys::kid_well_formed(jti) {
            return Err(AuthError::NotFound { kind: "device token" });
        }
        let txn = self.inner.db.begin_write()?;
        let buoy;
        {
            let mut table = txn.open_table(DEVICE_TOKENS)?;
            let mut record: DeviceRecord = store::get(&table, "device_tokens", jti)?
                .ok_or(AuthError::NotFound { kind: "device token" })?;
            if record.revoked_ms.is_some() {
                return Ok(());
            }
            record.revoked_ms = Some(now_ms());
            buoy = record.buoy_id.clone();
            store::put(&mut table, jti, &record)?;
        }
        txn.commit()?;
        self.audit(
            AuditEvent::new(caller.actor(), "devices.revoke", format!("device:{jti}"), "ok")
                .with_details(json!({ "buoy": buoy })),
        )
    }
}

fn device_info(jti: String, r: DeviceRecord) -> DeviceTokenInfo {
    DeviceTokenInfo {
        jti,
        buoy_id: r.buoy_id,
        issued_s: r.issued_s,
        expires_s: r.expires_s,
        issued_by: r.issued_by,
        revoked_ms: r.revoked_ms,
    }
}
