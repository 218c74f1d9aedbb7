//! The shop's records (stored as JSON in `shop.redb`, see `store`) and their limits.

use serde::{Deserialize, Serialize};

use super::billing::{BillingInterval, Proration};
use super::error::{ShopError, ShopResult};
use super::money::Money;
use super::state::OrderState;
use super::subs_state::SubscriptionState;

/// Longest product id (`[a-z0-9-]`), bytes.
pub const PRODUCT_ID_BYTES_MAX: usize = 64;
/// Longest product name, bytes.
pub const PRODUCT_NAME_BYTES_MAX: usize = 120;
/// Longest product summary, bytes.
pub const PRODUCT_SUMMARY_BYTES_MAX: usize = 300;
/// Longest product description, bytes.
pub const PRODUCT_DESCRIPTION_BYTES_MAX: usize = 4_000;
/// Most products in the catalogue (retired ones included).
pub const PRODUCTS_MAX: u64 = 10_000;
/// Most units of one product in stock.
pub const STOCK_MAX: u32 = 1_000_000;
/// Most images of one product.
pub const IMAGES_PER_PRODUCT_MAX: usize = 8;
/// Largest uploaded image, bytes (checked before decoding anything).
pub const IMAGE_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Most lines in a cart.
pub const CART_LINES_MAX: usize = 20;
/// Most units of one product on a cart line (these are industrial units, not socks).
pub const LINE_QUANTITY_MAX: u32 = 50;
/// Most orders waiting for payment per account: stock is reserved at checkout, so an account
/// cannot hold more than this many reservations at once.
pub const PENDING_ORDERS_PER_USER_MAX: usize = 10;
/// Seconds an order waits for its payment before the shop ticker cancels it and releases its
/// stock (24 h). A payment that succeeds after that is recorded `paid_but_order_not_payable`
/// for an operator to refund.
pub const ORDER_PAYMENT_TTL_S: i64 = 24 * 3_600;
/// Most unpaid orders one ticker run cancels (the rest wait for the next run).
pub const ORDER_EXPIRY_BATCH_MAX: usize = 500;
/// Most orders one listing shows (newest first).
pub const ORDERS_PAGE_MAX: usize = 100;
/// Address field limits, bytes: name, street lines, city, postal code (country is 2 letters).
pub const ADDRESS_NAME_BYTES_MAX: usize = 100;
/// Longest street line, bytes.
pub const ADDRESS_LINE_BYTES_MAX: usize = 100;
/// Longest city, bytes.
pub const ADDRESS_CITY_BYTES_MAX: usize = 64;
/// Longest postal code, bytes.
pub const ADDRESS_POSTAL_BYTES_MAX: usize = 16;

/// A text field: trimmed, 1..=max bytes (0 allowed when `optional`), no control characters.
pub(crate) fn text_field(field: &'static str, value: &str, max: usize, optional: bool) -> ShopResult<String> {
    let value = value.trim();
    if value.is_empty() && !optional {
        return Err(ShopError::invalid(field, "required"));
    }
    if value.len() > max {
        return Err(ShopError::invalid(field, format!("at most {max} bytes")));
    }
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\r') {
        return Err(ShopError::invalid(field, "no control characters"));
    }
    Ok(value.to_owned())
}

/// Checks a product id: 1–64 bytes of `[a-z0-9-]`.
pub fn check_product_id(id: &str) -> ShopResult<()> {
    if id.is_empty()
        || id.len() > PRODUCT_ID_BYTES_MAX
        || !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(ShopError::invalid("product id", "1-64 characters of a-z, 0-9 and -"));
    }
    Ok(())
}

/// A desalination unit for sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Id, `[a-z0-9-]`, also the URL slug.
    pub id: String,
    /// Terms an operator edits.
    #[serde(flatten)]
    pub spec: ProductSpec,
    /// Image keys (see [`image_url`](crate::shop::image_url)), at most [`IMAGES_PER_PRODUCT_MAX`].
    pub images: Vec<String>,
    /// Retired products are not listed or sold; orders keep their copies.
    pub retired: bool,
    /// Creation time, ms.
    pub created_ms: u64,
    /// Last change, ms.
    pub updated_ms: u64,
}

/// What an operator fills in for a product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductSpec {
    /// Display name.
    pub name: String,
    /// One line for the list.
    pub summary: String,
    /// The detail page's text (plain text; paragraphs by blank lines).
    pub description: String,
    /// Fresh water made per day, litres.
    pub capacity_l_per_day: u32,
    /// Electrical power drawn, watts.
    pub power_w: u32,
    /// Mass, kilograms.
    pub weight_kg: u32,
    /// Unit price (the shop's currency).
    pub price: Money,
}

impl ProductSpec {
    /// Trims and checks every field.
    pub fn validated(self) -> ShopResult<Self> {
        if self.price.minor <= 0 {
            return Err(ShopError::invalid("price", "must be positive"));
        }
        if self.capacity_l_per_day == 0 || self.capacity_l_per_day > 100_000_000 {
            return Err(ShopError::invalid("capacity_l_per_day", "1-100000000"));
        }
        if self.power_w > 100_000_000 || self.weight_kg > 1_000_000 {
            return Err(ShopError::invalid("power_w", "power at most 100 MW, weight at most 1000 t"));
        }
        Ok(Self {
            name: text_field("name", &self.name, PRODUCT_NAME_BYTES_MAX, false)?,
            summary: text_field("summary", &self.summary, PRODUCT_SUMMARY_BYTES_MAX, true)?,
            description: text_field("description", &self.description, PRODUCT_DESCRIPTION_BYTES_MAX, true)?,
            ..self
        })
    }
}

/// One line of a cart: a product and how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    /// The product.
    pub product_id: String,
    /// Units, 1..=[`LINE_QUANTITY_MAX`].
    pub quantity: u32,
}

/// An account's cart (kept across logout and login: it belongs to the account, not the session).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    /// At most [`CART_LINES_MAX`] lines, one per product.
    pub lines: Vec<CartLine>,
    /// Last change, ms.
    pub updated_ms: u64,
}

/// A shipping address (every field checked against its limit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// Recipient.
    pub name: String,
    /// Street and number.
    pub line1: String,
    /// More (optional).
    pub line2: String,
    /// City.
    pub city: String,
    /// Postal code.
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 country code (upper case).
    pub country: String,
}

impl Address {
    /// Trims and checks every field.
    pub fn validated(self) -> ShopResult<Self> {
        let country = self.country.trim().to_ascii_uppercase();
        if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ShopError::invalid("country", "a two-letter ISO 3166 code"));
        }
        Ok(Self {
            name: text_field("name", &self.name, ADDRESS_NAME_BYTES_MAX, false)?,
            line1: text_field("line1", &self.line1, ADDRESS_LINE_BYTES_MAX, false)?,
            line2: text_field("line2", &self.line2, ADDRESS_LINE_BYTES_MAX, true)?,
            city: text_field("city", &self.city, ADDRESS_CITY_BYTES_MAX, false)?,
            postal_code: text_field("postal_code", &self.postal_code, ADDRESS_POSTAL_BYTES_MAX, false)?,
            country,
        })
    }
}

/// A line of an order: the product's name and price copied at checkout (a later price change
/// or retirement does not change the order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The product.
    pub product_id: String,
    /// Its name at checkout.
    pub name: String,
    /// Its unit price at checkout.
    pub unit_price: Money,
    /// Units.
    pub quantity: u32,
    /// `unit_price × quantity`.
    pub total: Money,
}

/// The money of an order: lines, shipping, tax, total (all in one currency).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Sum of the lines.
    pub subtotal: Money,
    /// Shipping.
    pub shipping: Money,
    /// Tax rate, basis points (2000 = 20 %).
    pub tax_bps: u32,
    /// Tax on subtotal + shipping.
    pub tax: Money,
    /// What the customer pays.
    pub total: Money,
}

/// An order (its lines are in the `order_lines` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Random id (32 hex chars).
    pub id: String,
    /// The buyer's account.
    pub user_id: String,
    /// The buyer's email at checkout.
    pub email: String,
    /// Where it is in its life.
    pub state: OrderState,
    /// Money.
    pub totals: Totals,
    /// Where to ship.
    pub address: Address,
    /// How many lines.
    pub line_count: u32,
    /// The provider payment of the latest payment attempt.
    pub payment_id: Option<String>,
    /// Invoice number, assigned in the transaction that marks it paid.
    pub invoice_number: Option<u64>,
    /// Checkout time, ms.
    pub created_ms: u64,
    /// Every state change: (ms, state).
    pub history: Vec<(u64, OrderState)>,
}

/// An invoice: a frozen copy of a paid order's money, numbered without gaps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    /// 1, 2, 3, … (no gaps: assigned in the same transaction that marks the order paid).
    pub number: u64,
    /// The order.
    pub order_id: String,
    /// The buyer.
    pub user_id: String,
    /// The buyer's email.
    pub email: String,
    /// Issue time, ms.
    pub issued_ms: u64,
    /// Lines as ordered.
    pub lines: Vec<OrderLine>,
    /// Money.
    pub totals: Totals,
    /// Billing / shipping address.
    pub address: Address,
}

/// Where a provider payment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Created, the customer has not paid yet.
    Open,
    /// The card issuer asks the customer to authenticate.
    RequiresAction,
    /// Paid (final).
    Succeeded,
    /// Declined (the order stays unpaid; a new attempt makes a new payment).
    Failed,
}

/// A payment attempt at the provider, as the shop knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The provider's id.
    pub id: String,
    /// The order.
    pub order_id: String,
    /// The payer.
    pub user_id: String,
    /// The amount asked (the order's total at the time).
    pub amount: Money,
    /// Status from the verified events applied so far.
    pub status: PaymentStatus,
    /// `created` of the latest event applied (events older than it cannot move the status back).
    pub last_event_created_s: i64,
    /// Creation time, ms.
    pub created_ms: u64,
}

/// A verified webhook event as recorded (idempotency: one record per event id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentEventRecord {
    /// The provider's event id.
    pub id: String,
    /// `payment.succeeded`, `payment.failed`, `payment.requires_action`.
    pub kind: String,
    /// The payment.
    pub payment_id: String,
    /// The event's own time (s).
    pub created_s: i64,
    /// When we received it, ms.
    pub received_ms: u64,
    /// What applying it did (`paid`, `failed`, `ignored_stale`, …).
    pub outcome: String,
}

/// A subscription plan as sold (prices and terms); its data access is the auth plan it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanOffer {
    /// Id (`[a-z0-9-]`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// What it gives, in words.
    pub description: String,
    /// Price per month.
    pub monthly: Money,
    /// Price per year.
    pub annual: Money,
    /// Which buoys, in words.
    pub buoys: String,
    /// Days of history; `None` = all.
    pub history_days: Option<u32>,
    /// Queries per day; `None` = unlimited.
    pub daily_query_quota: Option<u32>,
    /// The auth plan (`accounts.redb`) whose access an active subscription gives. `None` in
    /// offers stored before subscriptions were sold (format 1): such an offer is not for sale
    /// until `bluewave shop seed-demo` (or an operator) links it.
    #[serde(default)]
    pub auth_plan_id: Option<String>,
}

/// Most subscriptions stored (every state, all accounts).
pub const SUBSCRIPTIONS_MAX: u64 = 1_000_000;
/// Most history entries kept per subscription (the first and the latest).
pub const SUBSCRIPTION_HISTORY_MAX: usize = 200;
/// Most charges of one subscription (first payment, upgrades, renewals; a year of monthly
/// renewals and a few upgrades fit many times over).
pub const CHARGES_PER_SUBSCRIPTION_MAX: usize = 1_000;
/// Seconds a new subscription waits for its first payment before the ticker expires it.
pub const SUBSCRIPTION_PAYMENT_TTL_S: i64 = 24 * 3_600;
/// How long before the period end the renewal of the next period can be paid: 7 days.
pub const RENEWAL_WINDOW_S: i64 = 7 * 86_400;
/// Seconds between two runs of the subscription ticker (expiries, period ends, roll-overs).
/// Access does not wait for it: it is computed from the subscription and the clock at every
/// query; the ticker only records the state changes (and audits them).
pub const SUBSCRIPTION_TICK_S: u64 = 10;
/// Most subscriptions one ticker run changes (the rest wait for the next run).
pub const SUBSCRIPTION_TICK_BATCH_MAX: usize = 500;
/// Prefix of subscription charge ids (`sc_<32 hex>`), which a payment carries where an order's
/// payment carries the order id.
pub const SUBSCRIPTION_CHARGE_PREFIX: &str = "sc_";

/// A change the customer scheduled for the period end (a downgrade or an interval switch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledChange {
    /// The offer from the next period on.
    pub offer_id: String,
    /// The interval from the next period on.
    pub interval: BillingInterval,
}

/// The next period, paid ahead (a renewal charge that succeeded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaidPeriod {
    /// The offer of that period.
    pub offer_id: String,
    /// Its auth plan.
    pub auth_plan_id: String,
    /// Its interval.
    pub interval: BillingInterval,
    /// Its price (per period, before tax).
    pub price: Money,
    /// Start, unix s (the current period's end).
    pub start_s: i64,
    /// End, unix s.
    pub end_s: i64,
}

/// A data subscription (see `subs_state` for its life, `subscriptions` for the rules).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Random id (32 hex chars).
    pub id: String,
    /// The subscriber.
    pub user_id: String,
    /// The subscriber's email at the start.
    pub email: String,
    /// Where it is in its life.
    pub state: SubscriptionState,
    /// The offer of the current period.
    pub offer_id: String,
    /// Its display name (copied).
    pub offer_name: String,
    /// The auth plan whose access it gives.
    pub auth_plan_id: String,
    /// Billing interval of the current period.
    pub interval: BillingInterval,
    /// Price per period (before tax), copied from the offer when bought or changed.
    pub price: Money,
    /// Start of the current period, unix s (shop clock); the first payment's time until then.
    pub period_start_s: i64,
    /// End of the current period, unix s: access ends here unless the next period is paid.
    pub period_end_s: i64,
    /// `true`: renew at period end; `false`: cancel at period end (access kept until then).
    pub renew: bool,
    /// A downgrade or interval switch taking effect at period end.
    pub scheduled_change: Option<ScheduledChange>,
    /// The next period, when its renewal is paid.
    pub next_period: Option<PaidPeriod>,
    /// The open charge (first payment, upgrade or renewal) waiting for its payment, if any.
    pub open_charge: Option<String>,
    /// Every charge made for it, oldest first (at most [`CHARGES_PER_SUBSCRIPTION_MAX`]).
    pub charges: Vec<String>,
    /// Creation time, unix s.
    pub created_s: i64,
    /// When the first payment made it active (unix s); from then on the subscription decides
    /// the account's plan.
    #[serde(default)]
    pub activated_s: Option<i64>,
    /// State changes and notable steps: (unix s, state, what happened); the first entry and
    /// the latest [`SUBSCRIPTION_HISTORY_MAX`]` - 1`.
    pub history: Vec<(i64, SubscriptionState, String)>,
}

/// What a subscription charge pays for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeKind {
    /// The first period.
    First,
    /// The rest of the current period on a bigger plan (prorated).
    Upgrade,
    /// The next period.
    Renewal,
}

/// Where a charge is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeStatus {
    /// Waiting for a verified payment event.
    Open,
    /// Paid; an invoice number is assigned.
    Paid,
    /// Replaced or no longer payable (a later payment is recorded for an operator to refund).
    Void,
}

/// One amount a subscriber is asked to pay, with what it buys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionCharge {
    /// `sc_<32 hex>`.
    pub id: String,
    /// The subscription.
    pub subscription_id: String,
    /// The payer.
    pub user_id: String,
    /// What it pays for.
    pub kind: ChargeKind,
    /// The offer it buys.
    pub offer_id: String,
    /// That offer's name (copied; the invoice line).
    pub offer_name: String,
    /// Its auth plan.
    pub auth_plan_id: String,
    /// The interval it buys.
    pub interval: BillingInterval,
    /// The offer's price per period (before tax).
    pub price: Money,
    /// The period it covers: start, unix s.
    pub period_start_s: i64,
    /// The period it covers: end, unix s.
    pub period_end_s: i64,
    /// The proration of an upgrade.
    pub proration: Option<Proration>,
    /// Money asked (subtotal, tax, total; no shipping).
    pub totals: Totals,
    /// The provider payment.
    pub payment_id: Option<String>,
    /// Where it is.
    pub status: ChargeStatus,
    /// Invoice number, assigned in the transaction that marks it paid.
    pub invoice_number: Option<u64>,
    /// Creation time, unix s.
    pub created_s: i64,
}
