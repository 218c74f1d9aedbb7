//! Signing keys: loading at open (expired ones removed, the first one generated) and rotation.

use super::*;

impl AuthService {
    /// Loads the key list, deletes keys past their grace, and generates the first key.
    pub(super) fn load_keys(&self) -> AuthResult<()> {
        let now = now_s();
        let dir = &self.inner.keys_dir;
        let mut loaded = Vec::new();
        let mut expired = Vec::new();
        {
            let txn = self.inner.db.begin_read()?;
            let table = txn.open_table(SIGNING_KEYS)?;
            for item in table.iter()? {
                let (k, v) = item?;
                let record: KeyRecord = store::decode("signing_keys", k.value(), v.value())?;
                let aged_out =
                    record.retired_s.is_some_and(|r| now > r.saturating_add(self.inner.grace.max_s()));
                if aged_out {
                    expired.push(k.value().to_owned());
                } else {
                    loaded.push(keys::load(dir, k.value(), record)?);
                }
            }
        }
        if !expired.is_empty() {
            let txn = self.inner.db.begin_write()?;
            {
                let mut table = txn.open_table(SIGNING_KEYS)?;
                for kid in &expired {
                    table.remove(kid.as_str())?;
                }
            }
            txn.commit()?;
            for kid in &expired {
                keys::delete(dir, kid)?;
            }
            self.audit(
                AuditEvent::new("system", "keys.expired_removed", "-", "ok")
                    .with_details(json!({ "kids": expired })),
            )?;
        }
        let mut set = KeySet { keys: loaded };
        if set.active().is_none() {
            let key = keys::generate(dir, now)?;
            let txn = self.inner.db.begin_write()?;
            store::put(&mut txn.open_table(SIGNING_KEYS)?, &key.kid, &key.record)?;
            txn.commit()?;
            self.audit(AuditEvent::new("system", "keys.generate", format!("key:{}", key.kid), "ok"))?;
            set.keys.push(key);
        }
        let known: Vec<&str> = set.keys.iter().map(|k| k.kid.as_str()).collect();
        keys::remove_stray_files(dir, &known)?;
        *self.inner.keys.write().map_err(|_| AuthError::Poisoned)? = set;
        Ok(())
    }

    /// Creates a new signing key and retires the current one (it keeps verifying for the token
    /// lifetimes). Needs `rbac:manage`. Returns the new key id.
    pub fn rotate_signing_key(&self, caller: &Caller) -> AuthResult<String> {
        self.require(caller, Permission::RbacManage, "keys.rotate")?;
        self.require_fresh(caller)?;
        self.rotate_key(&caller.actor())
    }

    /// Key rotation from the server's own command line (`bluewave keys rotate`, run with the
    /// server stopped: a running server reads its key set at start). Audited as `cli`.
    pub fn rotate_signing_key_offline(&self) -> AuthResult<String> {
        self.rotate_key("cli")
    }

    fn rotate_key(&self, actor: &str) -> AuthResult<String> {
        let now = now_s();
        let mut set = self.inner.keys.write().map_err(|_| AuthError::Poisoned)?;
        let grace = self.inner.grace.max_s();
        let live = set.keys.iter().filter(|k| k.record.retired_s.is_none_or(|r| now <= r + grace)).count();
        if live >= SIGNING_KEYS_MAX {
            return Err(AuthError::LimitReached { what: "signing keys", max: SIGNING_KEYS_MAX as u64 });
        }
        let key = keys::generate(&self.inner.keys_dir, now)?;
        let txn = self.inner.db.begin_write()?;
        let mut retired = Vec::new();
        {
            let mut table = txn.open_table(SIGNING_KEYS)?;
            for old in set.keys.iter_mut().filter(|k| k.record.retired_s.is_none()) {
                old.record.retired_s = Some(now);
                store::put(&mut table, &old.kid, &old.record)?;
                retired.push(old.kid.clone());
            }
            store::put(&mut table, &key.kid, &key.record)?;
        }
        txn.commit()?;
        let kid = key.kid.clone();
        set.keys.push(key);
        drop(set);
        self.audit(
            AuditEvent::new(actor, "keys.rotate", format!("key:{kid}"), "ok")
                .with_details(json!({ "retired": retired })),
        )?;
        Ok(kid)
    }
}
