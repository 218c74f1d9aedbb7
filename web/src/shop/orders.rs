//! Order history, cancel, ship, refund, invoices. Object-level authorization: a customer sees
//! only their own orders and invoices; any other id answers exactly as a missing one (404).

use redb::{ReadableDatabase, ReadableTable};
use serde_json::json;

use super::model::{ORDER_EXPIRY_BATCH_MAX, ORDERS_PAGE_MAX, OrderLine};
use super::store::{self, INVOICES, ORDER_DUE, ORDER_LINES, ORDERS, STOCK, USER_ORDERS};
use super::{
    AuditEvent, Caller, Invoice, Order, OrderEvent, OrderState, Role, ShopError, ShopResult, ShopService,
    actor, now_ms,
};

/// An order with its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderDetail {
    /// The order.
    pub order: Order,
    /// Its lines, as ordered.
    pub lines: Vec<OrderLine>,
}

fn is_staff(caller: &Caller) -> bool {
    caller.role().rank() >= Role::Operator.rank() && !caller.mfa_enrolment_required()
}

pub(crate) fn read_lines(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    order_id: &str,
) -> ShopResult<Vec<OrderLine>> {
    let prefix = format!("{order_id}/");
    let mut lines = Vec::new();
    for item in table.range(prefix.as_str()..)? {
        let (key, value) = item?;
        if !key.value().starts_with(&prefix) {
            break;
        }
        lines.push(store::decode("order_lines", value.value())?);
    }
    Ok(lines)
}

impl ShopService {
    /// The caller's orders, newest first (at most [`ORDERS_PAGE_MAX`]).
    pub fn my_orders(&self, caller: &Caller) -> ShopResult<Vec<Order>> {
        let txn = self.inner.db.begin_read()?;
        let index = txn.open_table(USER_ORDERS)?;
        let orders = txn.open_table(ORDERS)?;
        let prefix = format!("{}/", caller.user_id());
        let end = format!("{}0", caller.user_id()); // '0' sorts right after '/'
        let mut out = Vec::new();
        for item in index.range(prefix.as_str()..end.as_str())?.rev().take(ORDERS_PAGE_MAX) {
            let (key, _) = item?;
            let Some(rest) = key.value().strip_prefix(&prefix) else { continue };
            let id = rest.rsplit('/').next().unwrap_or_default();
            if let Some(order) = store::get::<Order>(&orders, "orders", id)? {
                out.push(order);
            }
        }
        Ok(out)
    }

    /// Every order, newest first (at most [`ORDERS_PAGE_MAX`], optionally one state). Staff only.
    pub fn all_orders(&self, caller: &Caller, state: Option<OrderState>) -> ShopResult<Vec<Order>> {
        self.require_staff(caller, "shop.orders.list")?;
        let txn = self.inner.db.begin_read()?;
        let mut out = Vec::new();
        for item in txn.open_table(ORDERS)?.iter()? {
            let (_, value) = item?;
            let order: Order = store::decode("orders", value.value())?;
            if state.is_none_or(|s| s == order.state) {
                out.push(order);
            }
        }
        out.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.id.cmp(&b.id)));
        out.truncate(ORDERS_PAGE_MAX);
        Ok(out)
    }

    /// One order with its lines: the owner's, or any for staff; otherwise 404.
    pub fn order(&self, caller: &Caller, id: &str) -> ShopResult<OrderDetail> {
        let txn = self.inner.db.begin_read()?;
        let order: Order = store::get::<Order>(&txn.open_table(ORDERS)?, "orders", id)?
            .filter(|o| o.user_id == caller.user_id() || is_staff(caller))
            .ok_or(ShopError::NotFound { kind: "order" })?;
        let lines = read_lines(&txn.open_table(ORDER_LINES)?, id)?;
        Ok(OrderDetail { order, lines })
    }

    /// An invoice: the owner's, or any for staff; otherwise 404.
    pub fn invoice(&self, caller: &Caller, number: u64) -> ShopResult<Invoice> {
        let txn = self.inner.db.begin_read()?;
        let invoice = match txn.open_table(INVOICES)?.get(number)? {
            Some(v) => store::decode::<Invoice>("invoices", v.value())?,
            None => return Err(ShopError::NotFound { kind: "invoice" }),
        };
        if invoice.user_id != caller.user_id() && !is_staff(caller) {
            return Err(ShopError::NotFound { kind: "invoice" });
        }
        Ok(invoice)
    }

    /// Cancels an unpaid order (its owner, or staff): the stock comes back. Audited.
    pub fn cancel_order(&self, caller: &Caller, id: &str) -> ShopResult<Order> {
        let order = self.transition(caller, id, OrderEvent::Cancel, false)?;
        self.audit(AuditEvent::new(actor(caller), "shop.order.cancel", format!("order:{id}"), "ok"))?;
        Ok(order)
    }

    /// Marks a paid order shipped. Staff only; audited.
    pub fn ship_order(&self, caller: &Caller, id: &str) -> ShopResult<Order> {
        self.require_staff(caller, "shop.order.ship")?;
        let order = self.transition(caller, id, OrderEvent::Ship, true)?;
        self.audit(AuditEvent::new(actor(caller), "shop.order.ship", format!("order:{id}"), "ok"))?;
        Ok(order)
    }

    /// Refunds a paid or shipped order through the payment provider. Staff only, with a fresh
    /// authentication (money leaves); a paid order not yet shipped gets its stock back. Audited.
    pub fn refund_order(&self, caller: &Caller, id: &str) -> ShopResult<Order> {
        self.require_staff(caller, "shop.order.refund")?;
        self.inner.auth.require_fresh(caller)?;
        let detail = self.order(caller, id)?;
        // Refuse before asking the provider when the machine would refuse anyway.
        detail.order.state.next(OrderEvent::Refund)?;
        let payment_id = detail.order.payment_id.clone().ok_or(ShopError::NotFound { kind: "payment" })?;
        self.inner.provider.refund(&payment_id, detail.order.totals.total)?;
        let order = self.transition(caller, id, OrderEvent::Refund, true)?;
        self.audit(
            AuditEvent::new(actor(caller), "shop.order.refund", format!("order:{id}"), "ok").with_details(
                json!({
                    "amount_minor": order.totals.total.minor, "currency": order.totals.total.currency.code(),
                    "payment": payment_id,
                }),
            ),
        )?;
        Ok(order)
    }

    /// Cancels the orders still waiting for payment [`ORDER_PAYMENT_TTL_S`](super::ORDER_PAYMENT_TTL_S)
    /// after checkout (shop clock) and puts their stock back, at most
    /// [`ORDER_EXPIRY_BATCH_MAX`] a run, in one transaction; each is audited
    /// (`shop.order.expire`, actor `shop`). Run by the shop ticker. How many were cancelled.
    pub fn expire_unpaid_orders(&self) -> ShopResult<usize> {
        let now = self.now_s();
        let mut expired = Vec::new();
        let txn = self.inner.db.begin_write()?;
        {
            let mut due = txn.open_table(ORDER_DUE)?;
            let end = format!("{:020}/~", now.max(0));
            let mut keys = Vec::new();
            for item in due.range(..end.as_str())?.take(ORDER_EXPIRY_BATCH_MAX) {
                let (key, _) = item?;
                keys.push(key.value().to_owned());
            }
            let mut orders = txn.open_table(ORDERS)?;
            let mut stock = txn.open_table(STOCK)?;
            let lines_table = txn.open_table(ORDER_LINES)?;
            for key in keys {
                due.remove(key.as_str())?;
                let Some((_, id)) = key.split_once('/') else { continue };
                let Some(mut order) = store::get::<Order>(&orders, "orders", id)? else { continue };
                // Paid or cancelled meanwhile: nothing to do (the entry is just dropped).
                let Ok(to) = order.state.next(OrderEvent::Cancel) else { continue };
                for line in read_lines(&lines_table, id)? {
                    let units = stock.get(line.product_id.as_str())?.map_or(0, |v| v.value());
                    stock.insert(line.product_id.as_str(), units.saturating_add(u64::from(line.quantity)))?;
                }
                order.state = to;
                order.history.push((now_ms(), to));
                store::put(&mut orders, id, &order)?;
                expired.push((id.to_owned(), order.user_id.clone()));
            }
        }
        txn.commit()?;
        for (id, user_id) in &expired {
            self.audit(
                AuditEvent::new("shop", "shop.order.expire", format!("order:{id}"), "ok")
                    .with_details(json!({ "user": user_id, "reason": "unpaid", "at_s": now })),
            )?;
        }
        Ok(expired.len())
    }

    /// One step of the state machine on a stored order, in one transaction; stock returns on
    /// cancel and on the refund of an unshipped order.
    fn transition(&self, caller: &Caller, id: &str, event: OrderEvent, staff: bool) -> ShopResult<Order> {
        let txn = self.inner.db.begin_write()?;
        let order;
        {
            let mut orders = txn.open_table(ORDERS)?;
            let mut current: Order = store::get::<Order>(&orders, "orders", id)?
                .filter(|o| o.user_id == caller.user_id() || is_staff(caller))
                .ok_or(ShopError::NotFound { kind: "order" })?;
            if staff && !is_staff(caller) {
                return Err(ShopError::Forbidden("this needs the operator or admin role"));
            }
            let from = current.state;
            let to = from.next(event)?;
            if matches!(
                (from, to),
                (OrderState::PendingPayment, OrderState::Cancelled)
                    | (OrderState::Paid, OrderState::Refunded)
            ) {
                let mut stock = txn.open_table(STOCK)?;
                for line in read_lines(&txn.open_table(ORDER_LINES)?, id)? {
                    let units = stock.get(line.product_id.as_str())?.map_or(0, |v| v.value());
                    stock.insert(line.product_id.as_str(), units.saturating_add(u64::from(line.quantity)))?;
                }
            }
            current.state = to;
            current.history.push((now_ms(), to));
            store::put(&mut orders, id, &current)?;
            order = current;
        }
        txn.commit()?;
        Ok(order)
    }
}
