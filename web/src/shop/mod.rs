//! The shop: desalination units, carts, orders, payments and invoices, in `<data-dir>/shop.redb`.
//!
//! Layout:
//! - `money`: [`Money`] (integer minor units) and [`Currency`] (ISO 4217);
//! - `state`: the order state machine ([`OrderState::next`], [`IllegalTransition`]);
//! - `model`: records and their limits (products, carts, addresses, orders, invoices, payments);
//! - `store`: `shop.redb` tables, the format version, JSON codecs;
//! - `catalog`: products, stock, images, plan offers, the demo catalogue;
//! - `checkout`: carts and checkout (stock taken in the transaction that creates the order);
//! - `orders`: order history, cancel, ship, refund, invoices;
//! - `payments`: the [`PaymentProvider`] trait, the built-in [`TestModeProvider`], and the
//!   Stripe-style signed webhook that alone marks orders paid;
//! - `billing`: billing intervals, calendar periods, the proration rule (worked example);
//! - `subs_state`: the subscription state machine ([`SubscriptionState::next`]);
//! - `subscriptions`: purchase, plan changes, renewal or cancellation at period end, the
//!   ticker, and the [`PlanSource`](crate::auth::PlanSource) that makes an active
//!   subscription the account's plan;
//! - `error`: [`ShopError`] and its HTTP mapping.
//!
//! Blocking: every method does redb I/O (commits fsync) and audit appends: call from a
//! blocking pool, as for `AuthService`.
//!
//! Roles: any signed-in account may buy; `admin` and `operator` manage the catalogue and
//! orders ([`ShopService::require_staff`]). Every state change is audited.

mod billing;
mod catalog;
mod checkout;
mod error;
mod model;
mod money;
mod orders;
mod payments;
mod state;
mod store;
mod subs_state;
mod subscriptions;

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::Database;

pub use billing::{BillingInterval, Proration, add_months, format_time, prorate, proration, utc_midnight};
pub use catalog::{
    DEMO_COASTAL_BUOYS, DEMO_IMAGES, ImageKind, ProductFilter, ProductView, SeedReport, sniff_image,
};
pub use checkout::{CartItem, CartView};
pub use error::{ShopError, ShopResult, SignatureRefusal};
pub use model::*;
pub use money::{AMOUNT_MINOR_MAX, Currency, Money};
pub use orders::OrderDetail;
pub use payments::{
    EVENT_BYTES_MAX, HostedPayment, PaymentEvent, PaymentProvider, SIGNATURE_HEADER, TEST_CARD_AUTHENTICATE,
    TEST_CARD_DECLINE, TEST_CARD_SUCCESS, TestCard, TestModeProvider, WEBHOOK_TOLERANCE_S, WebhookOutcome,
    sign_payload,
};
pub use state::{IllegalTransition, OrderEvent, OrderState};
pub use store::{SHOP_FILE_NAME, SHOP_FORMAT_VERSION, WEBHOOK_SECRET_BYTES};
pub use subs_state::{IllegalSubscriptionTransition, SubscriptionEvent, SubscriptionState};
pub use subscriptions::{ChangeOutcome, ChangeQuote, SubscriptionView, TickReport, effective_plan};

use crate::audit::AuditEvent;
use crate::auth::{AuthClock, AuthService, Caller, PlanSource, Role};

/// Settings of the shop.
#[derive(Debug, Clone)]
pub struct ShopConfig {
    /// The currency every price is in.
    pub currency: Currency,
    /// Tax rate on subtotal + shipping, basis points (default 2000 = 20 % VAT).
    pub tax_bps: u32,
    /// Shipping per unit, minor units (default 150.00: freight of a palletised unit).
    pub shipping_per_unit_minor: i64,
    /// The clock of subscription periods, renewals and expiries (system clock; tests use a
    /// manual one and move it).
    pub clock: AuthClock,
}

impl Default for ShopConfig {
    fn default() -> Self {
        Self {
            currency: Currency::Eur,
            tax_bps: 2_000,
            shipping_per_unit_minor: 15_000,
            clock: AuthClock::system(),
        }
    }
}

struct Inner {
    db: Database,
    config: ShopConfig,
    /// Accounts (for the audit log and plan assignment); shared with the API.
    auth: Arc<AuthService>,
    /// The HMAC key of webhook signatures (from `shop.redb`, made on first run).
    webhook_secret: Vec<u8>,
    /// Where payments go.
    provider: Arc<dyn PaymentProvider>,
}

/// The shop. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct ShopService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ShopService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShopService").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn now_s() -> i64 {
    i64::try_from(now_ms() / 1_000).unwrap_or(i64::MAX)
}

/// 32 random hex chars.
fn random_hex() -> ShopResult<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| ShopError::Io(std::io::Error::other(e.to_string())))?;
    Ok(crate::audit::hex(&bytes))
}

fn actor(caller: &Caller) -> String {
    format!("user:{}", caller.user_id())
}

impl ShopService {
    /// Opens (creating on first run) `<data_dir>/shop.redb`, with the built-in test-mode
    /// payment provider.
    pub fn open(data_dir: &Path, config: ShopConfig, auth: Arc<AuthService>) -> ShopResult<Self> {
        Self::open_with_provider(data_dir, config, auth, Arc::new(TestModeProvider))
    }

    /// [`ShopService::open`] with another payment provider.
    pub fn open_with_provider(
        data_dir: &Path,
        config: ShopConfig,
        auth: Arc<AuthService>,
        provider: Arc<dyn PaymentProvider>,
    ) -> ShopResult<Self> {
        if config.tax_bps > 10_000 || !(0..=AMOUNT_MINOR_MAX).contains(&config.shipping_per_unit_minor) {
            return Err(ShopError::invalid("config", "tax_bps <= 10000, shipping within the amount range"));
        }
        let now_s = i64::try_from(config.clock.now_s()).unwrap_or(i64::MAX);
        let (db, webhook_secret) = store::open(data_dir, now_s)?;
        let inner = Arc::new(Inner { db, config, auth, webhook_secret, provider });
        // Subscriptions decide their subscribers' plans from now on (see `subscriptions`).
        let weak: std::sync::Weak<dyn PlanSource> = Arc::downgrade(&inner) as std::sync::Weak<Inner>;
        inner.auth.set_plan_source(weak)?;
        Ok(Self { inner })
    }

    /// The settings in force.
    pub fn config(&self) -> &ShopConfig {
        &self.inner.config
    }

    /// The webhook signing secret (give it to the payment provider; tests sign with it).
    pub fn webhook_secret(&self) -> &[u8] {
        &self.inner.webhook_secret
    }

    /// The payment provider.
    pub fn provider(&self) -> &dyn PaymentProvider {
        self.inner.provider.as_ref()
    }

    /// Ok for `admin` and `operator` (catalogue and order management), else 403 (audited).
    pub fn require_staff(&self, caller: &Caller, action: &str) -> ShopResult<()> {
        if caller.mfa_enrolment_required() {
            return Err(crate::auth::AuthError::MfaEnrolmentRequired.into());
        }
        if caller.role().rank() >= Role::Operator.rank() {
            return Ok(());
        }
        self.audit(
            AuditEvent::new(actor(caller), action, "-", "denied")
                .with_details(serde_json::json!({ "reason": "forbidden", "needs": "operator or admin" })),
        )?;
        Err(ShopError::Forbidden("this needs the operator or admin role"))
    }

    fn audit(&self, event: AuditEvent) -> ShopResult<()> {
        self.inner.auth.audit_log().append(event)?;
        Ok(())
    }
}
