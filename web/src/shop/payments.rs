//! Payments: the [`PaymentProvider`] boundary, the built-in [`TestModeProvider`] (a simulated
//! hosted payment page with test cards), and the webhook that alone marks orders paid.
//!
//! Webhook (Stripe's scheme): the provider `POST`s a JSON event with the header
//! `Stripe-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`. The shop
//! accepts it only when some `v1` matches (constant-time, `ring::hmac::verify`) and `t` is
//! within [`WEBHOOK_TOLERANCE_S`] of now. Event ids are recorded in the transaction that
//! applies the event, so a replayed or retried event changes nothing (answered `duplicate`).
//! Events may arrive out of order: `payment.succeeded` is final for its payment, and a
//! `failed` / `requires_action` event older than the last one applied is recorded and ignored.
//!
//! Event body: `{"id": "evt_…", "type": "payment.succeeded" | "payment.failed" |
//! "payment.requires_action", "created": <unix s>, "data": {"payment_id", "order_id",
//! "amount" (minor units), "currency"}}`. Other types are acknowledged and ignored.
//! `order_id` is the provider's reference of what is paid: an order id, or a subscription
//! charge id (`sc_…`, see `subscriptions`), whose success activates, upgrades or renews the
//! subscription in the same transaction (with its invoice number).
//!
//! No card data is stored or logged: the test page reads the number, picks the outcome, and
//! drops it; events carry none.

use redb::{ReadableDatabase, ReadableTable};
use ring::hmac;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::SignatureRefusal;
use super::store::{self, INVOICES, META, META_NEXT_INVOICE, ORDER_LINES, ORDERS, PAYMENT_EVENTS, PAYMENTS};
use super::{
    AuditEvent, Caller, Currency, Invoice, Money, Order, OrderEvent, OrderState, Payment, PaymentEventRecord,
    PaymentStatus, SUBSCRIPTION_CHARGE_PREFIX, ShopError, ShopResult, ShopService, actor, now_ms, now_s,
    random_hex,
};

/// The signature header (HTTP header names are case-insensitive).
pub const SIGNATURE_HEADER: &str = "stripe-signature";
/// Most seconds between an event's signature time and now (either way): 5 minutes.
pub const WEBHOOK_TOLERANCE_S: i64 = 300;
/// Largest webhook body read, bytes.
pub const EVENT_BYTES_MAX: usize = 64 * 1024;
/// Longest event or payment id, bytes.
const ID_BYTES_MAX: usize = 128;
/// Most `v1=` signatures looked at in one header (providers send one per live secret).
const SIGNATURES_MAX: usize = 8;

/// Test card that pays.
pub const TEST_CARD_SUCCESS: &str = "4242 4242 4242 4242";
/// Test card that is declined.
pub const TEST_CARD_DECLINE: &str = "4000 0000 0000 0002";
/// Test card whose issuer asks the customer to authenticate (then approve or fail).
pub const TEST_CARD_AUTHENTICATE: &str = "4000 0025 0000 3155";

/// Where a customer is sent to pay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostedPayment {
    /// The provider's payment id.
    pub id: String,
    /// The hosted payment page (a path on this server in test mode).
    pub url: String,
}

/// A payment service: makes hosted payments and refunds them. Its answers about money arrive
/// later as signed webhook events ([`ShopService::receive_webhook`]).
pub trait PaymentProvider: Send + Sync + std::fmt::Debug {
    /// Short name (`test` for the built-in one).
    fn name(&self) -> &'static str;
    /// Starts a hosted payment of `amount` for `order_id`.
    fn create_payment(&self, order_id: &str, amount: Money) -> ShopResult<HostedPayment>;
    /// Refunds a succeeded payment in full.
    fn refund(&self, payment_id: &str, amount: Money) -> ShopResult<()>;
}

/// The built-in test-mode provider: the hosted page is `/pay/test/<id>` on this server, and
/// the test cards decide the outcome (see [`TestCard`]). Refunds always succeed.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestModeProvider;

impl PaymentProvider for TestModeProvider {
    fn name(&self) -> &'static str {
        "test"
    }

    fn create_payment(&self, _order_id: &str, _amount: Money) -> ShopResult<HostedPayment> {
        let id = format!("pay_test_{}", random_hex()?);
        Ok(HostedPayment { url: format!("/pay/test/{id}"), id })
    }

    fn refund(&self, _payment_id: &str, _amount: Money) -> ShopResult<()> {
        Ok(())
    }
}

/// The documented test cards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestCard {
    /// [`TEST_CARD_SUCCESS`]: paid.
    Success,
    /// [`TEST_CARD_DECLINE`]: declined.
    Decline,
    /// [`TEST_CARD_AUTHENTICATE`]: authentication required, then approved or failed.
    Authenticate,
}

impl TestCard {
    /// The test card of a typed number (spaces ignored); `None` for any other number.
    pub fn classify(number: &str) -> Option<Self> {
        let digits: String = number.chars().filter(|c| !c.is_whitespace()).collect();
        let same = |card: &str| digits == card.replace(' ', "");
        if same(TEST_CARD_SUCCESS) {
            Some(Self::Success)
        } else if same(TEST_CARD_DECLINE) {
            Some(Self::Decline)
        } else if same(TEST_CARD_AUTHENTICATE) {
            Some(Self::Authenticate)
        } else {
            None
        }
    }
}

/// A webhook event as sent by the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentEvent {
    /// Event id (idempotency key).
    pub id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the provider made it, unix s.
    pub created: i64,
    /// The payment it is about.
    pub data: PaymentEventData,
}

/// The payment an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentEventData {
    /// Provider payment id.
    pub payment_id: String,
    /// Our order id.
    pub order_id: String,
    /// Amount, minor units.
    pub amount: i64,
    /// ISO-4217 code.
    pub currency: Currency,
}

/// What the webhook did with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// Applied now; the outcome word (`paid`, `failed`, `requires_action`, `ignored_stale`, …).
    Applied(String),
    /// Seen before (same event id): nothing changed.
    Duplicate,
}

/// The `Stripe-Signature` value of `body` signed at `t` with `secret`.
pub fn sign_payload(secret: &[u8], t: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut context = hmac::Context::with_key(&key);
    context.update(t.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    format!("t={t},v1={}", crate::audit::hex(context.sign().as_ref()))
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect()
}

/// Checks a `Stripe-Signature` header against `body` at `now_s`.
pub(crate) fn verify_signature(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now_s: i64,
) -> Result<(), SignatureRefusal> {
    let header = header.ok_or(SignatureRefusal::Missing)?;
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = Some(value.parse::<i64>().map_err(|_| SignatureRefusal::Malformed)?),
            Some(("v1", value)) if signatures.len() < SIGNATURES_MAX => {
                signatures.push(hex_decode(value).ok_or(SignatureRefusal::Malformed)?);
            }
            _ => {} // other schemes (v0, …) are ignored, as Stripe's libraries do
        }
    }
    let t = t.ok_or(SignatureRefusal::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureRefusal::Malformed);
    }
    if now_s.saturating_sub(t).abs() > WEBHOOK_TOLERANCE_S {
        return Err(SignatureRefusal::OutsideTolerance);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut signed = Vec::with_capacity(body.len() + 24);
    signed.extend_from_slice(t.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    if signatures.iter().any(|sig| hmac::verify(&key, &signed, sig).is_ok()) {
        Ok(())
    } else {
        Err(SignatureRefusal::Mismatch)
    }
}

impl ShopService {
    /// Starts paying an unpaid order of the caller: a new provider payment of the order's total.
    pub fn start_payment(&self, caller: &Caller, order_id: &str) -> ShopResult<HostedPayment> {
        let detail = self.order(caller, order_id)?;
        if detail.order.user_id != caller.user_id() {
            return Err(ShopError::NotFound { kind: "order" });
        }
        if detail.order.state != OrderState::PendingPayment {
            return Err(OrderState::next(detail.order.state, OrderEvent::PaymentSucceeded)
                .err()
                .map_or(ShopError::invalid("order", "not waiting for payment"), ShopError::from));
        }
        let amount = detail.order.totals.total;
        let hosted = self.inner.provider.create_payment(order_id, amount)?;
        let payment = Payment {
            id: hosted.id.clone(),
            order_id: order_id.to_owned(),
            user_id: caller.user_id().to_owned(),
            amount,
            status: PaymentStatus::Open,
            last_event_created_s: 0,
            created_ms: now_ms(),
        };
        let txn = self.inner.db.begin_write()?;
        {
            let mut orders = txn.open_table(ORDERS)?;
            let mut order: Order =
                store::get(&orders, "orders", order_id)?.ok_or(ShopError::NotFound { kind: "order" })?;
            order.payment_id = Some(hosted.id.clone());
            store::put(&mut orders, order_id, &order)?;
            store::put(&mut txn.open_table(PAYMENTS)?, &hosted.id, &payment)?;
        }
        txn.commit()?;
        self.audit(
            AuditEvent::new(actor(caller), "shop.payment.start", format!("order:{order_id}"), "ok")
                .with_details(json!({ "payment": hosted.id, "amount_minor": amount.minor, "provider": self.inner.provider.name() })),
        )?;
        Ok(hosted)
    }

    /// A payment of the caller (404 for anyone else's).
    pub fn payment(&self, caller: &Caller, payment_id: &str) -> ShopResult<Payment> {
        let txn = self.inner.db.begin_read()?;
        store::get::<Payment>(&txn.open_table(PAYMENTS)?, "payments", payment_id)?
            .filter(|p| p.user_id == caller.user_id())
            .ok_or(ShopError::NotFound { kind: "payment" })
    }

    /// The test-mode provider's side of its hosted page: the typed card picks the event it
    /// sends (signed, through [`ShopService::receive_webhook`], as a real provider's would
    /// arrive). The number is not kept. Unknown numbers are refused (400).
    pub fn test_card_payment(
        &self,
        caller: &Caller,
        payment_id: &str,
        card_number: &str,
    ) -> ShopResult<TestCard> {
        if self.inner.provider.name() != TestModeProvider.name() {
            return Err(ShopError::NotFound { kind: "payment" });
        }
        let card = TestCard::classify(card_number)
            .ok_or_else(|| ShopError::invalid("card", "test mode: use one of the documented test cards"))?;
        let payment = self.payment(caller, payment_id)?;
        let kind = match card {
            TestCard::Success => "payment.succeeded",
            TestCard::Decline => "payment.failed",
            TestCard::Authenticate => "payment.requires_action",
        };
        self.send_test_event(&payment, kind)?;
        Ok(card)
    }

    /// The test page's authentication step: approve (paid) or fail.
    pub fn test_authenticate(&self, caller: &Caller, payment_id: &str, approve: bool) -> ShopResult<()> {
        if self.inner.provider.name() != TestModeProvider.name() {
            return Err(ShopError::NotFound { kind: "payment" });
        }
        let payment = self.payment(caller, payment_id)?;
        if payment.status != PaymentStatus::RequiresAction {
            return Err(ShopError::invalid("payment", "no authentication pending"));
        }
        self.send_test_event(&payment, if approve { "payment.succeeded" } else { "payment.failed" })?;
        Ok(())
    }

    fn send_test_event(&self, payment: &Payment, kind: &str) -> ShopResult<WebhookOutcome> {
        let event = PaymentEvent {
            id: format!("evt_test_{}", random_hex()?),
            kind: kind.to_owned(),
            created: now_s(),
            data: PaymentEventData {
                payment_id: payment.id.clone(),
                order_id: payment.order_id.clone(),
                amount: payment.amount.minor,
                currency: payment.amount.currency,
            },
        };
        let body = serde_json::to_vec(&event).map_err(|e| ShopError::InvalidEvent(e.to_string()))?;
        let header = sign_payload(&self.inner.webhook_secret, now_s(), &body);
        self.receive_webhook(Some(&header), &body)
    }

    /// The webhook: verifies the signature (see the module doc), then applies the event once.
    pub fn receive_webhook(&self, signature: Option<&str>, body: &[u8]) -> ShopResult<WebhookOutcome> {
        if body.len() > EVENT_BYTES_MAX {
            return Err(ShopError::LimitReached { what: "webhook body bytes", max: EVENT_BYTES_MAX as u64 });
        }
        verify_signature(&self.inner.webhook_secret, signature, body, now_s())?;
        let event: PaymentEvent =
            serde_json::from_slice(body).map_err(|e| ShopError::InvalidEvent(e.to_string()))?;
        if event.id.is_empty() || event.id.len() > ID_BYTES_MAX || event.data.payment_id.len() > ID_BYTES_MAX
        {
            return Err(ShopError::InvalidEvent("id: 1-128 bytes".into()));
        }
        let txn = self.inner.db.begin_write()?;
        let outcome;
        let mut paid_invoice = None;
        {
            let mut events = txn.open_table(PAYMENT_EVENTS)?;
            if events.get(event.id.as_str())?.is_some() {
                return Ok(WebhookOutcome::Duplicate);
            }
            outcome = match event.kind.as_str() {
                "payment.succeeded" | "payment.failed" | "payment.requires_action" => {
                    let mut payments = txn.open_table(PAYMENTS)?;
                    let mut payment: Payment = store::get(&payments, "payments", &event.data.payment_id)?
                        .ok_or_else(|| ShopError::InvalidEvent("unknown payment".into()))?;
                    if payment.order_id != event.data.order_id
                        || payment.amount.minor != event.data.amount
                        || payment.amount.currency != event.data.currency
                    {
                        return Err(ShopError::InvalidEvent(
                            "order, amount or currency differ from the payment".into(),
                        ));
                    }
                    let outcome = if payment.status == PaymentStatus::Succeeded {
                        if event.kind == "payment.succeeded" {
                            "already_paid"
                        } else {
                            "ignored_after_success"
                        }
                    } else if event.kind == "payment.succeeded"
                        && payment.order_id.starts_with(SUBSCRIPTION_CHARGE_PREFIX)
                    {
                        payment.status = PaymentStatus::Succeeded;
                        let (outcome, invoice) = self.subscription_charge_paid(&txn, &payment.order_id)?;
                        paid_invoice = invoice;
                        outcome
                    } else if event.kind == "payment.succeeded" {
                        payment.status = PaymentStatus::Succeeded;
                        let mut orders = txn.open_table(ORDERS)?;
                        let mut order: Order = store::get(&orders, "orders", &payment.order_id)?
                            .ok_or(ShopError::NotFound { kind: "order" })?;
                        match order.state.next(OrderEvent::PaymentSucceeded) {
                            Ok(paid) => {
                                // The invoice number is taken in this transaction: a number is
                                // used exactly when an order becomes paid (no gaps).
                                let mut meta = txn.open_table(META)?;
                                let number = meta.get(META_NEXT_INVOICE)?.map_or(1, |v| v.value());
                                meta.insert(META_NEXT_INVOICE, number + 1)?;
                                let now = now_ms();
                                order.state = paid;
                                order.history.push((now, paid));
                                order.invoice_number = Some(number);
                                order.payment_id = Some(payment.id.clone());
                                let lines =
                                    super::orders::read_lines(&txn.open_table(ORDER_LINES)?, &order.id)?;
                                let invoice = Invoice {
                                    number,
                                    order_id: order.id.clone(),
                                    user_id: order.user_id.clone(),
                                    email: order.email.clone(),
                                    issued_ms: now,
                                    lines,
                                    totals: order.totals,
                                    address: order.address.clone(),
                                };
                                let bytes = serde_json::to_vec(&invoice).map_err(|e| ShopError::Corrupt {
                                    table: "encode",
                                    reason: e.to_string(),
                                })?;
                                txn.open_table(INVOICES)?.insert(number, bytes.as_slice())?;
                                store::put(&mut orders, &order.id, &order)?;
                                paid_invoice = Some(number);
                                "paid"
                            }
                            // Paid after the customer cancelled: recorded for an operator to refund.
                            Err(_) => "paid_but_order_not_payable",
                        }
                    } else if event.created < payment.last_event_created_s {
                        "ignored_stale"
                    } else if event.kind == "payment.failed" {
                        payment.status = PaymentStatus::Failed;
                        "failed"
                    } else {
                        payment.status = PaymentStatus::RequiresAction;
                        "requires_action"
                    };
                    payment.last_event_created_s = payment.last_event_created_s.max(event.created);
                    store::put(&mut payments, &payment.id, &payment)?;
                    outcome
                }
                _ => "ignored_type",
            };
            let record = PaymentEventRecord {
                id: event.id.clone(),
                kind: event.kind.clone(),
                payment_id: event.data.payment_id.clone(),
                created_s: event.created,
                received_ms: now_ms(),
                outcome: outcome.to_owned(),
            };
            store::put(&mut events, &event.id, &record)?;
        }
        txn.commit()?;
        let result = if outcome.starts_with("paid_but_") { "error" } else { "ok" };
        self.audit(
            AuditEvent::new(
                "payments",
                "shop.payment.event",
                if event.data.order_id.starts_with(SUBSCRIPTION_CHARGE_PREFIX) {
                    format!("charge:{}", event.data.order_id)
                } else {
                    format!("order:{}", event.data.order_id)
                },
                result,
            )
            .with_details(json!({ "event": event.id, "type": event.kind, "payment": event.data.payment_id,
                    "outcome": outcome, "invoice": paid_invoice })),
        )?;
        Ok(WebhookOutcome::Applied(outcome.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_within_tolerance_only() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let body = br#"{"id":"evt_1"}"#;
        let header = sign_payload(secret, 1_000, body);
        assert_eq!(verify_signature(secret, Some(&header), body, 1_000), Ok(()));
        assert_eq!(verify_signature(secret, Some(&header), body, 1_300), Ok(()));
        assert_eq!(
            verify_signature(secret, Some(&header), body, 1_301),
            Err(SignatureRefusal::OutsideTolerance)
        );
        assert_eq!(
            verify_signature(secret, Some(&header), body, 699),
            Err(SignatureRefusal::OutsideTolerance)
        );
        assert_eq!(verify_signature(secret, Some(&header), b"{}", 1_000), Err(SignatureRefusal::Mismatch));
        assert_eq!(verify_signature(b"other", Some(&header), body, 1_000), Err(SignatureRefusal::Mismatch));
        assert_eq!(verify_signature(secret, None, body, 1_000), Err(SignatureRefusal::Missing));
        for bad in ["", "t=1000", "v1=00", "t=x,v1=00", "t=1000,v1=zz"] {
            assert_eq!(
                verify_signature(secret, Some(bad), body, 1_000),
                Err(SignatureRefusal::Malformed),
                "{bad}"
            );
        }
        // A second v1 (a rotated secret) is tried too; a v0 is ignored.
        let (_, good) = header.split_once(",v1=").unwrap_or_default();
        let two = format!("t=1000,v0=ab,v1={},v1={good}", "00".repeat(32));
        assert_eq!(verify_signature(secret, Some(&two), body, 1_000), Ok(()));
    }

    #[test]
    fn test_cards() {
        assert_eq!(TestCard::classify("4242424242424242"), Some(TestCard::Success));
        assert_eq!(TestCard::classify(TEST_CARD_DECLINE), Some(TestCard::Decline));
        assert_eq!(TestCard::classify(" 4000 0025 0000 3155 "), Some(TestCard::Authenticate));
        assert_eq!(TestCard::classify("4111111111111111"), None);
    }
}
