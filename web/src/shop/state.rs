//! The order state machine. Every change of an order's state goes through [`OrderState::next`];
//! a step the table below does not list is refused with [`IllegalTransition`].
//!
//! ```text
//!   cart ──checkout──▶ pending_payment ──payment_succeeded──▶ paid ──ship──▶ shipped
//!                           │                                  │               │
//!                         cancel                             refund          refund
//!                           ▼                                  ▼               ▼
//!                       cancelled                           refunded ◀─────────┘
//! ```
//!
//! `cancelled` and `refunded` are final. A payment that fails leaves the order
//! `pending_payment` (the customer may pay again or cancel).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// Lines in a cart (no order record exists in this state; it names the machine's start).
    Cart,
    /// Ordered, stock reserved, waiting for a verified payment event.
    PendingPayment,
    /// Paid (through a verified payment event); an invoice number is assigned.
    Paid,
    /// Handed to the carrier.
    Shipped,
    /// Cancelled before payment; the stock is back.
    Cancelled,
    /// Paid, then refunded.
    Refunded,
}

/// What can happen to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderEvent {
    /// The customer checks out the cart.
    Checkout,
    /// A verified payment event says the payment succeeded.
    PaymentSucceeded,
    /// The customer or an operator cancels an unpaid order.
    Cancel,
    /// An operator ships a paid order.
    Ship,
    /// An operator refunds a paid or shipped order.
    Refund,
}

/// A step the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an order that is {from} cannot {event}")]
pub struct IllegalTransition {
    /// The order's state.
    pub from: OrderState,
    /// What was tried.
    pub event: OrderEvent,
}

impl OrderState {
    /// The state after `event`, or the refusal.
    pub fn next(self, event: OrderEvent) -> Result<OrderState, IllegalTransition> {
        use OrderEvent as E;
        use OrderState as S;
        match (self, event) {
            (S::Cart, E::Checkout) => Ok(S::PendingPayment),
            (S::PendingPayment, E::PaymentSucceeded) => Ok(S::Paid),
            (S::PendingPayment, E::Cancel) => Ok(S::Cancelled),
            (S::Paid, E::Ship) => Ok(S::Shipped),
            (S::Paid | S::Shipped, E::Refund) => Ok(S::Refunded),
            (from, event) => Err(IllegalTransition { from, event }),
        }
    }

    /// The name as stored and shown (`pending_payment`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cart => "cart",
            Self::PendingPayment => "pending_payment",
            Self::Paid => "paid",
            Self::Shipped => "shipped",
            Self::Cancelled => "cancelled",
            Self::Refunded => "refunded",
        }
    }

    /// Every state.
    pub const ALL: [OrderState; 6] =
        [Self::Cart, Self::PendingPayment, Self::Paid, Self::Shipped, Self::Cancelled, Self::Refunded];
}

impl fmt::Display for OrderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl OrderEvent {
    /// Every event.
    pub const ALL: [OrderEvent; 5] =
        [Self::Checkout, Self::PaymentSucceeded, Self::Cancel, Self::Ship, Self::Refund];
}

impl fmt::Display for OrderEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Checkout => "check out",
            Self::PaymentSucceeded => "be paid",
            Self::Cancel => "be cancelled",
            Self::Ship => "be shipped",
            Self::Refund => "be refunded",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole table: exactly these five steps are legal, every other pair is refused.
    #[test]
    fn exactly_the_documented_transitions() {
        use OrderEvent as E;
        use OrderState as S;
        let legal = [
            (S::Cart, E::Checkout, S::PendingPayment),
            (S::PendingPayment, E::PaymentSucceeded, S::Paid),
            (S::PendingPayment, E::Cancel, S::Cancelled),
            (S::Paid, E::Ship, S::Shipped),
            (S::Paid, E::Refund, S::Refunded),
            (S::Shipped, E::Refund, S::Refunded),
        ];
        for from in S::ALL {
            for event in E::ALL {
                let expected = legal.iter().find(|(f, e, _)| *f == from && *e == event).map(|(_, _, to)| *to);
                match expected {
                    Some(to) => assert_eq!(from.next(event), Ok(to)),
                    None => assert_eq!(from.next(event), Err(IllegalTransition { from, event })),
                }
            }
        }
        assert_eq!(
            S::Shipped.next(E::Cancel).map_err(|e| e.to_string()),
            Err("an order that is shipped cannot be cancelled".to_owned())
        );
    }
}
