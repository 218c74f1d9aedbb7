//! Audit helpers (paging) and the purge of expired records.

use super::*;

impl AuthService {
    /// A page of the audit log, newest first. Needs `audit:read`.
    pub fn audit_page(
        &self,
        caller: &Caller,
        before_seq: Option<u64>,
        limit: usize,
    ) -> AuthResult<AuditPage> {
        self.authorize(caller, Permission::AuditRead)?;
        Ok(self.inner.audit.page(before_seq, limit)?)
    }

    /// Deletes ended sessions and their refresh tokens (once their tokens could no longer be
    /// presented), expired device token records, and usage counters older than a day. Run at
    /// open; the server may call it periodically. Returns the number of records removed.
    pub fn purge_expired(&self) -> AuthResult<u64> {
        let now = now_s();
        let refresh_ttl = self.inner.config.refresh_ttl_s;
        let keep_revoked_s = refresh_ttl.max(self.inner.config.access_ttl_s.saturating_add(token::LEEWAY_S));
        let today = now / 86_400;
        let txn = self.inner.db.begin_write()?;
        let mut removed = 0u64;
        {
            let mut families = txn.open_table(FAMILIES)?;
            let mut index = txn.open_table(USER_FAMILIES)?;
            let mut tokens = txn.open_table(REFRESH_TOKENS)?;
            let mut dead_families = BTreeSet::new();
            let mut dead_index = Vec::new();
            for item in families.iter()? {
                let (k, v) = item?;
                let f: FamilyRecord = store::decode("families", k.value(), v.value())?;
                // A revoked family's tokens stay until they would have expired, so reuse of one is
                // still recognised (and answered) until then; and at least until its access
                // tokens have expired, so the revocation set is rebuilt from it after a restart
                // even when refresh tokens live shorter than access tokens.
                let ended = match &f.revoked {
                    Some(r) => r.at_ms / 1_000 + keep_revoked_s < now,
                    None => f.expires_s < now,
                };
                if ended {
                    dead_families.insert(k.value().to_owned());
                    dead_index.push(store::user_family_key(&f.user_id, k.value()));
                }
            }
            let mut dead_tokens = Vec::new();
            for item in tokens.iter()? {
                let (k, v) = item?;
                let r: RefreshRecord = store::decode("refresh_tokens", k.value(), v.value())?;
                if dead_families.contains(&r.family_id) || r.expires_s < now {
                    dead_tokens.push(k.value().to_owned());
                }
            }
            for k in &dead_tokens {
                tokens.remove(k.as_str())?;
            }
            for k in &dead_families {
                families.remove(k.as_str())?;
            }
            for k in &dead_index {
                index.remove(k.as_str())?;
            }
            removed += (dead_tokens.len() + dead_families.len()) as u64;

            let mut devices = txn.open_table(DEVICE_TOKENS)?;
            let mut dead_devices = Vec::new();
            for item in devices.iter()? {
                let (k, v) = item?;
                let d: DeviceRecord = store::decode("device_tokens", k.value(), v.value())?;
                if d.expires_s.saturating_add(token::LEEWAY_S) < now {
                    dead_devices.push(k.value().to_owned());
                }
            }
            for k in &dead_devices {
                devices.remove(k.as_str())?;
            }
            removed += dead_devices.len() as u64;

            let mut usage = txn.open_table(QUERY_USAGE)?;
            let mut dead_usage = Vec::new();
            for item in usage.iter()? {
                let (k, _) = item?;
                let day = k.value().rsplit('/').next().and_then(|d| d.parse::<u64>().ok()).unwrap_or(0);
                if day + 1 < today {
                    dead_usage.push(k.value().to_owned());
                }
            }
            for k in &dead_usage {
                usage.remove(k.as_str())?;
            }
            removed += dead_usage.len() as u64;
        }
        txn.commit()?;
        removed += self.purge_expired_links()?;
        if removed > 0 {
            self.audit(
                AuditEvent::new("system", "auth.purge", "-", "ok")
                    .with_details(json!({ "records": removed })),
            )?;
        }
        Ok(removed)
    }
}
