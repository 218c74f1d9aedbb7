//! The shop's core through `ShopService` on a real `shop.redb` (and a real `AuthService`):
//! the oversell race (50 concurrent checkouts of the last 10 units sell exactly 10), prices
//! copied at checkout, cancel returning stock, illegal transitions refused with the typed
//! error, the signed webhook (idempotent on event id, out-of-order events, amounts checked),
//! invoice numbers without gaps, refunds behind the fresh-auth gate, and the store's format
//! version.

use std::sync::Arc;

use bluewave_web::shop_api::{
    Address, Currency, IllegalTransition, Money, OrderEvent, OrderState, ProductSpec, SHOP_FILE_NAME,
    ShopConfig, ShopError, ShopService, SignatureRefusal, WebhookOutcome, sign_payload,
};
use bluewave_web::{AuthClock, AuthConfig, Caller, LoginLimits, PasswordParams, Role, Secret};
use serde_json::json;

use crate::auth_fixtures::Fixture;

pub(crate) fn fast_auth() -> AuthConfig {
    AuthConfig {
        password_params: PasswordParams { memory_kib: 1_024, iterations: 1, parallelism: 1 },
        login_limits: LoginLimits { per_ip_per_minute: 100_000, ..LoginLimits::default() },
        mfa_required_roles: std::collections::BTreeSet::new(),
        ..AuthConfig::default()
    }
}

pub(crate) fn spec(name: &str, price_minor: i64) -> ProductSpec {
    ProductSpec {
        name: name.into(),
        summary: "summary".into(),
        description: "description".into(),
        capacity_l_per_day: 2_000,
        power_w: 900,
        weight_kg: 180,
        price: Money::new(price_minor, Currency::Eur).unwrap(),
    }
}

pub(crate) fn address() -> Address {
    Address {
        name: "Ada Lovelace".into(),
        line1: "1 Harbour Road".into(),
        line2: String::new(),
        city: "Brest".into(),
        postal_code: "29200".into(),
        country: "fr".into(),
    }
}

struct Shop {
    fixture: Fixture,
    shop: ShopService,
    staff: Caller,
}

fn shop() -> Shop {
    let fixture = Fixture::with_config(fast_auth());
    let auth = Arc::new(fixture.auth.clone());
    let shop = ShopService::open(fixture.dir.path(), ShopConfig::default(), auth).unwrap();
    let staff = fixture.user("operator@example.org", Role::Operator).0;
    Shop { fixture, shop, staff }
}

/// A signed event body for the webhook.
fn event(
    shop: &ShopService,
    id: &str,
    kind: &str,
    created: i64,
    payment: &str,
    order: &str,
    amount: i64,
) -> (String, Vec<u8>) {
    let body = serde_json::to_vec(&json!({ "id": id, "type": kind, "created": created,
        "data": { "payment_id": payment, "order_id": order, "amount": amount, "currency": "EUR" } }))
    .unwrap();
    (sign_payload(shop.webhook_secret(), now(), &body), body)
}

fn now() -> i64 {
    crate::auth_fixtures::now_s() as i64
}

#[test]
fn fifty_concurrent_checkouts_of_the_last_ten_units_sell_exactly_ten() {
    let s = shop();
    s.shop.create_product(&s.staff, "last-ten", spec("Last ten", 100_000), 10).unwrap();
    let buyers: Vec<Caller> =
        (0..50).map(|i| s.fixture.user(&format!("buyer{i}@example.org"), Role::Customer).0).collect();
    for buyer in &buyers {
        s.shop.cart_add(buyer, "last-ten", 1).unwrap();
    }
    let results: Vec<Result<_, ShopError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = buyers
            .iter()
            .map(|buyer| {
                let shop = s.shop.clone();
                scope.spawn(move || shop.checkout(buyer, address()))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let sold = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(ShopError::OutOfStock { product_id, available: 0 }) if product_id == "last-ten"))
        .count();
    assert_eq!((sold, refused), (10, 40));
    assert_eq!(s.shop.product("last-ten").unwrap().stock, 0);
    let orders = s.shop.all_orders(&s.staff, Some(OrderState::PendingPayment)).unwrap();
    assert_eq!(orders.len(), 10);
    assert!(orders.iter().all(|o| o.line_count == 1 && o.totals.subtotal.minor == 100_000));
}

#[test]
fn a_self_registered_account_buys_only_after_verifying_its_email() {
    let s = shop();
    s.shop.create_product(&s.staff, "unit", spec("Unit", 10_000), 5).unwrap();
    s.fixture
        .auth
        .register("new@example.org", &Secret::new("a-long-enough-passphrase-9"), [10, 1, 1, 1].into())
        .unwrap();
    let pair = s.fixture.login("new@example.org", "a-long-enough-passphrase-9");
    let unverified = s.fixture.caller(&pair);
    assert!(!unverified.email_verified());
    s.shop.cart_add(&unverified, "unit", 1).unwrap();
    match s.shop.checkout(&unverified, address()) {
        Err(ShopError::Forbidden(reason)) => {
            assert!(reason.starts_with("verify your email address"), "{reason}")
        }
        other => panic!("an unverified account bought: {other:?}"),
    }
    // Nothing was taken: the stock and the cart are as they were.
    assert_eq!(s.shop.product("unit").unwrap().stock, 5);
    assert_eq!(s.shop.cart(&unverified).unwrap().items.len(), 1);
}

#[test]
fn checkout_copies_prices_cancel_returns_stock_and_illegal_steps_are_refused() {
    let s = shop();
    let (buyer, _) = s.fixture.user("buyer@example.org", Role::Customer);
    s.shop.create_product(&s.staff, "unit", spec("Unit", 123_456), 5).unwrap();
    assert!(matches!(s.shop.checkout(&buyer, address()), Err(ShopError::EmptyCart)));
    s.shop.cart_add(&buyer, "unit", 2).unwrap();
    assert!(matches!(s.shop.cart_add(&buyer, "unit", 4), Err(ShopError::OutOfStock { available: 5, .. })));
    let order = s.shop.checkout(&buyer, address()).unwrap();
    assert_eq!(order.state, OrderState::PendingPayment);
    assert_eq!(order.address.country, "FR");
    // 2 × 1,234.56 + 2 × 150.00 shipping = 2,769.12; 20 % tax = 553.82 (553.824 rounded).
    let t = order.totals;
    assert_eq!(
        (t.subtotal.minor, t.shipping.minor, t.tax.minor, t.total.minor),
        (246_912, 30_000, 55_382, 332_294)
    );
    assert!(s.shop.cart(&buyer).unwrap().items.is_empty(), "the cart is emptied");
    assert_eq!(s.shop.product("unit").unwrap().stock, 3);
    // A later price change does not touch the order's copy.
    s.shop.update_product(&s.staff, "unit", spec("Unit renamed", 999_999)).unwrap();
    let detail = s.shop.order(&buyer, &order.id).unwrap();
    assert_eq!((detail.lines[0].name.as_str(), detail.lines[0].unit_price.minor), ("Unit", 123_456));
    // Another customer cannot see or cancel it: the same 404 as a missing order.
    let (other, _) = s.fixture.user("other@example.org", Role::Customer);
    assert!(matches!(s.shop.order(&other, &order.id), Err(ShopError::NotFound { kind: "order" })));
    assert!(matches!(s.shop.cancel_order(&other, &order.id), Err(ShopError::NotFound { kind: "order" })));
    // Not paid: cannot ship; a customer cannot ship at all.
    assert!(matches!(
        s.shop.ship_order(&s.staff, &order.id),
        Err(ShopError::Transition(IllegalTransition {
            from: OrderState::PendingPayment,
            event: OrderEvent::Ship
        }))
    ));
    assert!(matches!(s.shop.ship_order(&buyer, &order.id), Err(ShopError::Forbidden(_))));
    let cancelled = s.shop.cancel_order(&buyer, &order.id).unwrap();
    assert_eq!(cancelled.state, OrderState::Cancelled);
    assert_eq!(s.shop.product("unit").unwrap().stock, 5, "stock back");
    assert!(matches!(
        s.shop.cancel_order(&buyer, &order.id),
        Err(ShopError::Transition(IllegalTransition {
            from: OrderState::Cancelled,
            event: OrderEvent::Cancel
        }))
    ));
    assert!(matches!(s.shop.start_payment(&buyer, &order.id), Err(ShopError::Transition(_))));
    let audit = s.fixture.audit_text();
    for action in ["shop.product.create", "shop.order.checkout", "shop.product.update", "shop.order.cancel"] {
        assert!(audit.contains(action), "{action}");
    }
}

#[test]
fn webhook_pays_once_in_order_of_truth_and_numbers_invoices_without_gaps() {
    let s = shop();
    let (buyer, _) = s.fixture.user("buyer@example.org", Role::Customer);
    s.shop.create_product(&s.staff, "unit", spec("Unit", 10_000), 10).unwrap();
    let mut paid = Vec::new();
    for round in 0..3 {
        s.shop.cart_add(&buyer, "unit", 1).unwrap();
        let order = s.shop.checkout(&buyer, address()).unwrap();
        let pay = s.shop.start_payment(&buyer, &order.id).unwrap();
        let amount = order.totals.total.minor;
        let t = now();
        // Out of order: the success (t) arrives after nothing, then a stale failure (t - 10).
        let (sig, body) =
            event(&s.shop, &format!("evt_ok_{round}"), "payment.succeeded", t, &pay.id, &order.id, amount);
        assert_eq!(
            s.shop.receive_webhook(Some(&sig), &body).unwrap(),
            WebhookOutcome::Applied("paid".into())
        );
        // Replay of the same event id: nothing changes.
        assert_eq!(s.shop.receive_webhook(Some(&sig), &body).unwrap(), WebhookOutcome::Duplicate);
        let (sig, body) = event(
            &s.shop,
            &format!("evt_late_{round}"),
            "payment.failed",
            t - 10,
            &pay.id,
            &order.id,
            amount,
        );
        assert_eq!(
            s.shop.receive_webhook(Some(&sig), &body).unwrap(),
            WebhookOutcome::Applied("ignored_after_success".into())
        );
        let detail = s.shop.order(&buyer, &order.id).unwrap();
        assert_eq!(detail.order.state, OrderState::Paid);
        paid.push(detail.order.invoice_number.unwrap());
    }
    assert_eq!(paid, vec![1, 2, 3], "invoice numbers without gaps");
    let invoice = s.shop.invoice(&buyer, 2).unwrap();
    assert_eq!(invoice.lines.len(), 1);
    let (other, _) = s.fixture.user("other@example.org", Role::Customer);
    assert!(matches!(s.shop.invoice(&other, 2), Err(ShopError::NotFound { kind: "invoice" })));

    // A failure, then (later) a success: paid. An older requires_action after the failure is stale.
    s.shop.cart_add(&buyer, "unit", 1).unwrap();
    let order = s.shop.checkout(&buyer, address()).unwrap();
    let pay = s.shop.start_payment(&buyer, &order.id).unwrap();
    let amount = order.totals.total.minor;
    let t = now();
    let (sig, body) = event(&s.shop, "evt_f", "payment.failed", t - 5, &pay.id, &order.id, amount);
    assert_eq!(s.shop.receive_webhook(Some(&sig), &body).unwrap(), WebhookOutcome::Applied("failed".into()));
    let (sig, body) = event(&s.shop, "evt_ra", "payment.requires_action", t - 9, &pay.id, &order.id, amount);
    assert_eq!(
        s.shop.receive_webhook(Some(&sig), &body).unwrap(),
        WebhookOutcome::Applied("ignored_stale".into())
    );
    assert_eq!(s.shop.order(&buyer, &order.id).unwrap().order.state, OrderState::PendingPayment);
    // A wrong amount is refused (400) and not recorded: the right event with a new id applies.
    let (sig, body) = event(&s.shop, "evt_x", "payment.succeeded", t, &pay.id, &order.id, amount - 1);
    assert!(matches!(s.shop.receive_webhook(Some(&sig), &body), Err(ShopError::InvalidEvent(_))));
    let (sig, body) = event(&s.shop, "evt_s", "payment.succeeded", t, &pay.id, &order.id, amount);
    assert_eq!(s.shop.receive_webhook(Some(&sig), &body).unwrap(), WebhookOutcome::Applied("paid".into()));
    assert_eq!(s.shop.order(&buyer, &order.id).unwrap().order.invoice_number, Some(4));

    // Signatures: tampered body, old timestamp, missing header.
    let (sig, mut body) = event(&s.shop, "evt_t", "payment.succeeded", t, &pay.id, &order.id, amount);
    body.push(b' ');
    assert!(matches!(
        s.shop.receive_webhook(Some(&sig), &body),
        Err(ShopError::Signature(SignatureRefusal::Mismatch))
    ));
    let old = sign_payload(s.shop.webhook_secret(), t - 301, &body);
    assert!(matches!(
        s.shop.receive_webhook(Some(&old), &body),
        Err(ShopError::Signature(SignatureRefusal::OutsideTolerance))
    ));
    assert!(matches!(
        s.shop.receive_webhook(None, &body),
        Err(ShopError::Signature(SignatureRefusal::Missing))
    ));

    // Ship, then refund (fresh login: allowed); the refund of a shipped order keeps the stock.
    let stock = s.shop.product("unit").unwrap().stock;
    assert_eq!(s.shop.ship_order(&s.staff, &order.id).unwrap().state, OrderState::Shipped);
    assert_eq!(s.shop.refund_order(&s.staff, &order.id).unwrap().state, OrderState::Refunded);
    assert_eq!(s.shop.product("unit").unwrap().stock, stock);
}

#[test]
fn refunds_need_a_fresh_authentication() {
    let clock = AuthClock::manual(crate::auth_fixtures::now_s());
    let fixture = Fixture::with_config(AuthConfig { clock: clock.clone(), ..fast_auth() });
    let shop =
        ShopService::open(fixture.dir.path(), ShopConfig::default(), Arc::new(fixture.auth.clone())).unwrap();
    let staff = fixture.user("operator@example.org", Role::Operator).0;
    let (buyer, _) = fixture.user("buyer@example.org", Role::Customer);
    shop.create_product(&staff, "unit", spec("Unit", 10_000), 1).unwrap();
    shop.cart_add(&buyer, "unit", 1).unwrap();
    let order = shop.checkout(&buyer, address()).unwrap();
    let pay = shop.start_payment(&buyer, &order.id).unwrap();
    let (sig, body) =
        event(&shop, "evt_1", "payment.succeeded", now(), &pay.id, &order.id, order.totals.total.minor);
    shop.receive_webhook(Some(&sig), &body).unwrap();
    clock.advance_s(601);
    assert!(matches!(
        shop.refund_order(&staff, &order.id),
        Err(ShopError::Auth(bluewave_web::AuthError::StepUpRequired { .. }))
    ));
    assert_eq!(shop.order(&staff, &order.id).unwrap().order.state, OrderState::Paid);
    assert_eq!(shop.product("unit").unwrap().stock, 0);
}

#[test]
fn the_store_has_a_format_version_and_survives_reopening() {
    let s = shop();
    s.shop.create_product(&s.staff, "unit", spec("Unit", 10_000), 3).unwrap();
    let dir = s.fixture.dir.path().to_path_buf();
    let secret = s.shop.webhook_secret().to_vec();
    drop(s.shop);
    let again = ShopService::open(&dir, ShopConfig::default(), Arc::new(s.fixture.auth.clone())).unwrap();
    assert_eq!(again.product("unit").unwrap().stock, 3);
    assert_eq!(again.webhook_secret(), secret.as_slice(), "the webhook secret is kept");
    drop(again);
    // A file of another format version is refused at open.
    let db = redb::Database::create(dir.join(SHOP_FILE_NAME)).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(redb::TableDefinition::<&str, u64>::new("meta"))
        .unwrap()
        .insert("format_version", 99)
        .unwrap();
    txn.commit().unwrap();
    drop(db);
    assert!(matches!(
        ShopService::open(&dir, ShopConfig::default(), Arc::new(s.fixture.auth.clone())),
        Err(ShopError::FormatVersion { found: 99, supported: bluewave_web::shop_api::SHOP_FORMAT_VERSION })
    ));
}
