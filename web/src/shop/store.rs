//! `shop.redb`: tables, codecs and the format version.
//!
//! Every value is a JSON document unless noted; keys are text. Created on first run (all tables,
//! format version, webhook secret) by [`open`].
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `format_version`, `next_invoice_number` | u64 |
//! | `secrets` | `webhook_secret` | 32 random bytes (raw) |
//! | `products` | product id | [`Product`](super::Product) |
//! | `stock` | product id | units available (u64) |
//! | `images` | `<sha256 hex>.<png\|jpg\|webp>` | the image bytes (raw) |
//! | `carts` | user id | [`Cart`](super::Cart) |
//! | `orders` | order id | [`Order`](super::Order) |
//! | `order_lines` | `<order id>/<line number, 4 digits>` | [`OrderLine`](super::OrderLine) |
//! | `user_orders` | `<user id>/<checkout ms, 20 digits>/<order id>` | `null` (index, newest last) |
//! | `invoices` | invoice number (u64) | [`Invoice`](super::Invoice) |
//! | `payments` | provider payment id | [`Payment`](super::Payment) |
//! | `payment_events` | provider event id | [`PaymentEventRecord`](super::PaymentEventRecord) |
//! | `plan_offers` | offer id | [`PlanOffer`](super::PlanOffer) |
//! | `subscriptions` | subscription id | [`Subscription`](super::Subscription) |
//! | `user_subscriptions` | user id | the id of the account's latest subscription (UTF-8) |
//! | `subscription_charges` | charge id (`sc_…`) | [`SubscriptionCharge`](super::SubscriptionCharge) |
//! | `order_due` | `<unix s, 20 digits>/<order id>` | empty (when an unpaid order expires; dropped by the ticker once looked at) |
//! | `subscription_due` | `<unix s, 20 digits>/<subscription id>` | empty (the ticker's queue: when a subscription next needs a look) |
//!
//! **Format versions.** 1: orders only (`subscriptions` existed, empty and unused, keyed by
//! user id). 2: subscriptions and unpaid-order expiry (the tables above). A version-1 file is migrated in place at
//! open, in one transaction: its `subscriptions` table must be empty (it never held data; a
//! non-empty one is refused as corrupt), the new tables are created, every order waiting for
//! payment gets its expiry ([`ORDER_PAYMENT_TTL_S`](super::ORDER_PAYMENT_TTL_S) from the
//! migration) and the version becomes 2.
//! Plan offers of version 1 lack `auth_plan_id` and read as not for sale until linked. A file
//! of a newer version is refused ([`ShopError::FormatVersion`]).

use std::path::Path;

use redb::{Database, ReadableTable, ReadableTableMetadata, Table, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{ShopError, ShopResult};

/// Table of text keys and JSON (or raw) values.
pub(crate) type BytesTable = TableDefinition<'static, &'static str, &'static [u8]>;

pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const SECRETS: BytesTable = TableDefinition::new("secrets");
pub(crate) const PRODUCTS: BytesTable = TableDefinition::new("products");
pub(crate) const STOCK: TableDefinition<&str, u64> = TableDefinition::new("stock");
pub(crate) const IMAGES: BytesTable = TableDefinition::new("images");
pub(crate) const CARTS: BytesTable = TableDefinition::new("carts");
pub(crate) const ORDERS: BytesTable = TableDefinition::new("orders");
pub(crate) const ORDER_LINES: BytesTable = TableDefinition::new("order_lines");
pub(crate) const USER_ORDERS: BytesTable = TableDefinition::new("user_orders");
pub(crate) const INVOICES: TableDefinition<u64, &[u8]> = TableDefinition::new("invoices");
pub(crate) const PAYMENTS: BytesTable = TableDefinition::new("payments");
pub(crate) const PAYMENT_EVENTS: BytesTable = TableDefinition::new("payment_events");
pub(crate) const PLAN_OFFERS: BytesTable = TableDefinition::new("plan_offers");
pub(crate) const SUBSCRIPTIONS: BytesTable = TableDefinition::new("subscriptions");
pub(crate) const USER_SUBSCRIPTIONS: BytesTable = TableDefinition::new("user_subscriptions");
pub(crate) const SUBSCRIPTION_CHARGES: BytesTable = TableDefinition::new("subscription_charges");
pub(crate) const SUBSCRIPTION_DUE: BytesTable = TableDefinition::new("subscription_due");
pub(crate) const ORDER_DUE: BytesTable = TableDefinition::new("order_due");

/// The `order_due` key of order `id` expiring at `at_s`.
pub(crate) fn order_due_key(at_s: i64, id: &str) -> String {
    format!("{:020}/{id}", at_s.max(0))
}

/// File name of the shop store in the data dir.
pub const SHOP_FILE_NAME: &str = "shop.redb";
/// Version of this layout.
pub const SHOP_FORMAT_VERSION: u64 = 2;
/// The version before subscriptions, migrated at open.
const FORMAT_VERSION_ORDERS_ONLY: u64 = 1;
pub(crate) const META_FORMAT_VERSION: &str = "format_version";
pub(crate) const META_NEXT_INVOICE: &str = "next_invoice_number";
const WEBHOOK_SECRET: &str = "webhook_secret";
/// Bytes of the webhook signing secret.
pub const WEBHOOK_SECRET_BYTES: usize = 32;

/// Opens (creating on first run) `<data_dir>/shop.redb`; the database and the webhook secret.
pub(crate) fn open(data_dir: &Path, now_s: i64) -> ShopResult<(Database, Vec<u8>)> {
    std::fs::create_dir_all(data_dir).map_err(ShopError::Io)?;
    let path = data_dir.join(SHOP_FILE_NAME);
    let db = Database::create(&path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        // Addresses and the webhook secret: readable by the service user only.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(ShopError::Io)?;
    }
    let txn = db.begin_write()?;
    let secret;
    {
        let mut meta = txn.open_table(META)?;
        let version = meta.get(META_FORMAT_VERSION)?.map(|v| v.value());
        match version {
            None => {
                meta.insert(META_FORMAT_VERSION, SHOP_FORMAT_VERSION)?;
                meta.insert(META_NEXT_INVOICE, 1)?;
            }
            Some(SHOP_FORMAT_VERSION) => {}
            Some(FORMAT_VERSION_ORDERS_ONLY) => {
                if !txn.open_table(SUBSCRIPTIONS)?.is_empty()? {
                    return Err(ShopError::Corrupt {
                        table: "subscriptions",
                        reason: "format 1 never wrote this table, yet it holds records".into(),
                    });
                }
                let mut due = txn.open_table(ORDER_DUE)?;
                for item in txn.open_table(ORDERS)?.iter()? {
                    let (key, value) = item?;
                    let order: super::Order = decode("orders", value.value())?;
                    if order.state == super::OrderState::PendingPayment {
                        let at = now_s.saturating_add(super::ORDER_PAYMENT_TTL_S);
                        due.insert(order_due_key(at, key.value()).as_str(), [].as_slice())?;
                    }
                }
                meta.insert(META_FORMAT_VERSION, SHOP_FORMAT_VERSION)?;
            }
            Some(found) => {
                return Err(ShopError::FormatVersion { found, supported: SHOP_FORMAT_VERSION });
            }
        }
        for def in [
            PRODUCTS,
            IMAGES,
            CARTS,
            ORDERS,
            ORDER_LINES,
            USER_ORDERS,
            PAYMENTS,
            PAYMENT_EVENTS,
            PLAN_OFFERS,
            SUBSCRIPTIONS,
            USER_SUBSCRIPTIONS,
            SUBSCRIPTION_CHARGES,
            SUBSCRIPTION_DUE,
            ORDER_DUE,
        ] {
            txn.open_table(def)?;
        }
        txn.open_table(STOCK)?;
        txn.open_table(INVOICES)?;
        let mut secrets = txn.open_table(SECRETS)?;
        let stored = secrets.get(WEBHOOK_SECRET)?.map(|v| v.value().to_vec());
        secret = match stored {
            Some(bytes) if bytes.len() == WEBHOOK_SECRET_BYTES => bytes,
            Some(_) => {
                return Err(ShopError::Corrupt { table: "secrets", reason: "webhook secret length".into() });
            }
            None => {
                let mut bytes = vec![0u8; WEBHOOK_SECRET_BYTES];
                getrandom::fill(&mut bytes)
                    .map_err(|e| ShopError::Io(std::io::Error::other(e.to_string())))?;
                secrets.insert(WEBHOOK_SECRET, bytes.as_slice())?;
                bytes
            }
        };
    }
    txn.commit()?;
    Ok((db, secret))
}

/// Reads and decodes one JSON record.
pub(crate) fn get<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &'static str,
    key: &str,
) -> ShopResult<Option<T>> {
    match table.get(key)? {
        None => Ok(None),
        Some(value) => decode(name, value.value()).map(Some),
    }
}

/// Decodes one JSON record of table `name`.
pub(crate) fn decode<T: DeserializeOwned>(name: &'static str, bytes: &[u8]) -> ShopResult<T> {
    serde_json::from_slice(bytes).map_err(|e| ShopError::Corrupt { table: name, reason: e.to_string() })
}

/// Encodes and writes one JSON record.
pub(crate) fn put<T: Serialize>(
    table: &mut Table<'_, &'static str, &'static [u8]>,
    key: &str,
    value: &T,
) -> ShopResult<()> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| ShopError::Corrupt { table: "encode", reason: e.to_string() })?;
    table.insert(key, bytes.as_slice())?;
    Ok(())
}
