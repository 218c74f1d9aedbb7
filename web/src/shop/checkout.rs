//! Carts (one per account, kept across logout and login) and checkout.
//!
//! Checkout is one redb write transaction: it reads the cart, checks and decrements the stock
//! of every line, copies names and prices into the order's lines, writes the order and empties
//! the cart. redb runs one write transaction at a time, so two checkouts of the last unit cannot
//! both see it: the second finds the stock the first left and is refused (`OutOfStock`).

use redb::{ReadableDatabase, ReadableTable};
use serde_json::json;

use super::model::{
    CART_LINES_MAX, LINE_QUANTITY_MAX, ORDER_PAYMENT_TTL_S, PENDING_ORDERS_PER_USER_MAX, STOCK_MAX,
};
use super::store::{self, CARTS, ORDER_DUE, ORDER_LINES, ORDERS, PRODUCTS, STOCK, USER_ORDERS};
use super::{
    Address, AuditEvent, Caller, Cart, CartLine, Money, Order, OrderEvent, OrderLine, OrderState, Product,
    ShopError, ShopResult, ShopService, Totals, actor, now_ms, random_hex,
};

/// A cart line with its product as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartItem {
    /// The product (current name and price).
    pub product: Product,
    /// Units wanted.
    pub quantity: u32,
    /// Units in stock now.
    pub stock: u32,
    /// Current price × quantity.
    pub line_total: Money,
}

/// A cart as shown: its lines with current prices and the money of checking out now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartView {
    /// Lines whose product is still on sale.
    pub items: Vec<CartItem>,
    /// Money if checked out now.
    pub totals: Totals,
}

impl ShopService {
    /// Subtotal, shipping (per unit), tax on both, total.
    pub(crate) fn totals(&self, subtotal: Money, units: u32) -> ShopResult<Totals> {
        let config = &self.inner.config;
        let shipping = Money::new(config.shipping_per_unit_minor, config.currency)?.times(units)?;
        let tax = subtotal.plus(shipping)?.basis_points(config.tax_bps)?;
        Ok(Totals {
            subtotal,
            shipping,
            tax_bps: config.tax_bps,
            tax,
            total: subtotal.plus(shipping)?.plus(tax)?,
        })
    }

    /// The caller's cart with current prices.
    pub fn cart(&self, caller: &Caller) -> ShopResult<CartView> {
        let txn = self.inner.db.begin_read()?;
        let cart: Cart = store::get(&txn.open_table(CARTS)?, "carts", caller.user_id())?.unwrap_or_default();
        let products = txn.open_table(PRODUCTS)?;
        let stock = txn.open_table(STOCK)?;
        let currency = self.inner.config.currency;
        let mut items = Vec::new();
        let (mut subtotal, mut units) = (Money::zero(currency), 0u32);
        for line in cart.lines {
            let Some(product) = store::get::<Product>(&products, "products", &line.product_id)? else {
                continue;
            };
            if product.retired {
                continue;
            }
            let available = stock
                .get(line.product_id.as_str())?
                .map_or(0, |v| u32::try_from(v.value()).unwrap_or(STOCK_MAX));
            let line_total = product.spec.price.times(line.quantity)?;
            subtotal = subtotal.plus(line_total)?;
            units = units.saturating_add(line.quantity);
            items.push(CartItem { product, quantity: line.quantity, stock: available, line_total });
        }
        Ok(CartView { totals: self.totals(subtotal, units)?, items })
    }

    /// Adds `quantity` units of a product to the caller's cart.
    pub fn cart_add(&self, caller: &Caller, product_id: &str, quantity: u32) -> ShopResult<()> {
        self.change_cart(caller, product_id, |current| current.saturating_add(quantity))
    }

    /// Sets the quantity of a product in the caller's cart (0 removes the line).
    pub fn cart_set(&self, caller: &Caller, product_id: &str, quantity: u32) -> ShopResult<()> {
        self.change_cart(caller, product_id, |_| quantity)
    }

    /// The cart change: the product must be on sale, the quantity within
    /// [`LINE_QUANTITY_MAX`] and the stock, the cart within [`CART_LINES_MAX`] lines.
    fn change_cart(
        &self,
        caller: &Caller,
        product_id: &str,
        quantity: impl FnOnce(u32) -> u32,
    ) -> ShopResult<()> {
        let txn = self.inner.db.begin_write()?;
        {
            let mut carts = txn.open_table(CARTS)?;
            let mut cart: Cart = store::get(&carts, "carts", caller.user_id())?.unwrap_or_default();
            let current = cart.lines.iter().find(|l| l.product_id == product_id).map_or(0, |l| l.quantity);
            let wanted = quantity(current);
            if wanted == 0 {
                cart.lines.retain(|l| l.product_id != product_id);
            } else {
                let product: Product =
                    store::get::<Product>(&txn.open_table(PRODUCTS)?, "products", product_id)?
                        .filter(|p| !p.retired)
                        .ok_or(ShopError::NotFound { kind: "product" })?;
                if wanted > LINE_QUANTITY_MAX {
                    return Err(ShopError::invalid("quantity", format!("1-{LINE_QUANTITY_MAX} per line")));
                }
                let available = txn
                    .open_table(STOCK)?
                    .get(product_id)?
                    .map_or(0, |v| u32::try_from(v.value()).unwrap_or(STOCK_MAX));
                if wanted > available {
                    return Err(ShopError::OutOfStock { product_id: product.id, available });
                }
                let lines_now = cart.lines.len();
                match cart.lines.iter_mut().find(|l| l.product_id == product_id) {
                    Some(line) => line.quantity = wanted,
                    None if lines_now >= CART_LINES_MAX => {
                        return Err(ShopError::LimitReached {
                            what: "cart lines",
                            max: CART_LINES_MAX as u64,
                        });
                    }
                    None => cart.lines.push(CartLine { product_id: product.id, quantity: wanted }),
                }
            }
            cart.updated_ms = now_ms();
            store::put(&mut carts, caller.user_id(), &cart)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Checks out the caller's cart to `address`: an order `pending_payment` with the stock
    /// taken and the prices copied, in one transaction (see the module doc). Audited.
    pub fn checkout(&self, caller: &Caller, address: Address) -> ShopResult<Order> {
        // An account that signed itself up buys only once its email address is verified.
        if !caller.email_verified() {
            return Err(ShopError::Forbidden(
                "verify your email address before buying: follow the link we mailed you, or ask for a new one on your account page",
            ));
        }
        let address = address.validated()?;
        let order_id = random_hex()?;
        let now = now_ms();
        let txn = self.inner.db.begin_write()?;
        let order;
        {
            let mut carts = txn.open_table(CARTS)?;
            let cart: Cart = store::get(&carts, "carts", caller.user_id())?.unwrap_or_default();
            if cart.lines.is_empty() {
                return Err(ShopError::EmptyCart);
            }
            let mut orders = txn.open_table(ORDERS)?;
            let mut index = txn.open_table(USER_ORDERS)?;
            let prefix = format!("{}/", caller.user_id());
            let end = format!("{}0", caller.user_id()); // '0' sorts right after '/'
            let mut pending = 0usize;
            for item in index.range(prefix.as_str()..end.as_str())? {
                let (key, _) = item?;
                let Some(rest) = key.value().strip_prefix(&prefix) else { break };
                let id = rest.rsplit('/').next().unwrap_or_default();
                if store::get::<Order>(&orders, "orders", id)?
                    .is_some_and(|o| o.state == OrderState::PendingPayment)
                {
                    pending += 1;
                }
            }
            if pending >= PENDING_ORDERS_PER_USER_MAX {
                return Err(ShopError::LimitReached {
                    what: "orders waiting for payment",
                    max: PENDING_ORDERS_PER_USER_MAX as u64,
                });
            }
            let products = txn.open_table(PRODUCTS)?;
            let mut stock = txn.open_table(STOCK)?;
            let mut lines = Vec::with_capacity(cart.lines.len());
            let currency = self.inner.config.currency;
            let (mut subtotal, mut units) = (Money::zero(currency), 0u32);
            for line in &cart.lines {
                let product: Product = store::get::<Product>(&products, "products", &line.product_id)?
                    .filter(|p| !p.retired)
                    .ok_or(ShopError::NotFound { kind: "product" })?;
                let available = stock.get(line.product_id.as_str())?.map_or(0, |v| v.value());
                if u64::from(line.quantity) > available {
                    return Err(ShopError::OutOfStock {
                        product_id: product.id,
                        available: u32::try_from(available).unwrap_or(STOCK_MAX),
                    });
                }
                stock.insert(line.product_id.as_str(), available - u64::from(line.quantity))?;
                let total = product.spec.price.times(line.quantity)?;
                subtotal = subtotal.plus(total)?;
                units = units.saturating_add(line.quantity);
                lines.push(OrderLine {
                    product_id: product.id,
                    name: product.spec.name,
                    unit_price: product.spec.price,
                    quantity: line.quantity,
                    total,
                });
            }
            let state = OrderState::Cart.next(OrderEvent::Checkout)?;
            order = Order {
                id: order_id.clone(),
                user_id: caller.user_id().to_owned(),
                email: caller.email().to_owned(),
                state,
                totals: self.totals(subtotal, units)?,
                address,
                line_count: u32::try_from(lines.len()).unwrap_or(u32::MAX),
                payment_id: None,
                invoice_number: None,
                created_ms: now,
                history: vec![(now, state)],
            };
            let mut order_lines = txn.open_table(ORDER_LINES)?;
            for (number, line) in lines.iter().enumerate() {
                store::put(&mut order_lines, &format!("{order_id}/{number:04}"), line)?;
            }
            store::put(&mut orders, &order_id, &order)?;
            store::put(&mut index, &format!("{}/{now:020}/{order_id}", caller.user_id()), &())?;
            // Unpaid after ORDER_PAYMENT_TTL_S (shop clock): the ticker cancels it.
            let expires_s = self.now_s().saturating_add(ORDER_PAYMENT_TTL_S);
            txn.open_table(ORDER_DUE)?
                .insert(store::order_due_key(expires_s, &order_id).as_str(), [].as_slice())?;
            carts.remove(caller.user_id())?;
        }
        txn.commit()?;
        self.audit(
            AuditEvent::new(actor(caller), "shop.order.checkout", format!("order:{order_id}"), "ok")
                .with_details(json!({
                    "total_minor": order.totals.total.minor, "currency": order.totals.total.currency.code(),
                    "lines": order.line_count,
                })),
        )?;
        Ok(order)
    }
}
