//! The subscription state machine. Every change of a subscription goes through
//! [`SubscriptionState::next`]; a step the table below does not list is refused with
//! [`IllegalSubscriptionTransition`].
//!
//! ```text
//!                 first_payment                        period_end_cancelled
//!   incomplete ───────────────────▶ active ──────────────────────────────▶ cancelled
//!       │                          │  ▲  │
//!    expire (unpaid after          │  │  └──── period_end_unpaid ─────────▶ lapsed
//!    SUBSCRIPTION_PAYMENT_TTL_S,   └──┘
//!    or replaced by a new one)     upgrade_paid, renewal_paid, roll_over,
//!       ▼                          set_renewal, schedule_change
//!    expired
//! ```
//!
//! Only `active` gives access (and only before its period end). `cancelled` (the customer
//! turned renewal off and the period ended), `lapsed` (renewal on but the next period was not
//! paid by the period end) and `expired` (the first payment never came) are final: a customer
//! starts a new subscription after them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a subscription is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionState {
    /// Created; waiting for the verified event of its first payment. No access.
    Incomplete,
    /// Paid for the current period: the plan's access applies until the period end.
    Active,
    /// Renewal was off and the period ended (final).
    Cancelled,
    /// Renewal was on but the next period was not paid by the period end (final).
    Lapsed,
    /// The first payment never came (final).
    Expired,
}

/// What can happen to a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionEvent {
    /// A verified event says the first payment succeeded.
    FirstPayment,
    /// A verified event says a prorated upgrade was paid (the plan changes now).
    UpgradePaid,
    /// A verified event says the next period was paid.
    RenewalPaid,
    /// The period ended and the next one was paid: the next period begins.
    RollOver,
    /// The customer turns renewal at period end on or off.
    SetRenewal,
    /// The customer schedules a change (downgrade or interval switch) for the period end.
    ScheduleChange,
    /// The customer asks for an upgrade (a prorated charge) or to pay the renewal.
    StartCharge,
    /// The period ended with renewal off.
    PeriodEndCancelled,
    /// The period ended with renewal on but unpaid.
    PeriodEndUnpaid,
    /// The first payment did not come in time, or the customer started another subscription.
    Expire,
}

/// A step the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a subscription that is {from} cannot {event}")]
pub struct IllegalSubscriptionTransition {
    /// The subscription's state.
    pub from: SubscriptionState,
    /// What was tried.
    pub event: SubscriptionEvent,
}

impl SubscriptionState {
    /// The state after `event`, or the refusal.
    pub fn next(self, event: SubscriptionEvent) -> Result<SubscriptionState, IllegalSubscriptionTransition> {
        use SubscriptionEvent as E;
        use SubscriptionState as S;
        match (self, event) {
            (S::Incomplete, E::FirstPayment) => Ok(S::Active),
            (S::Incomplete, E::Expire) => Ok(S::Expired),
            (
                S::Active,
                E::UpgradePaid
                | E::RenewalPaid
                | E::RollOver
                | E::SetRenewal
                | E::ScheduleChange
                | E::StartCharge,
            ) => Ok(S::Active),
            (S::Active, E::PeriodEndCancelled) => Ok(S::Cancelled),
            (S::Active, E::PeriodEndUnpaid) => Ok(S::Lapsed),
            (from, event) => Err(IllegalSubscriptionTransition { from, event }),
        }
    }

    /// The name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Incomplete => "incomplete",
            Self::Active => "active",
            Self::Cancelled => "cancelled",
            Self::Lapsed => "lapsed",
            Self::Expired => "expired",
        }
    }

    /// True for the states no event leaves.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Cancelled | Self::Lapsed | Self::Expired)
    }

    /// Every state.
    pub const ALL: [SubscriptionState; 5] =
        [Self::Incomplete, Self::Active, Self::Cancelled, Self::Lapsed, Self::Expired];
}

impl fmt::Display for SubscriptionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl SubscriptionEvent {
    /// Every event.
    pub const ALL: [SubscriptionEvent; 10] = [
        Self::FirstPayment,
        Self::UpgradePaid,
        Self::RenewalPaid,
        Self::RollOver,
        Self::SetRenewal,
        Self::ScheduleChange,
        Self::StartCharge,
        Self::PeriodEndCancelled,
        Self::PeriodEndUnpaid,
        Self::Expire,
    ];
}

impl fmt::Display for SubscriptionEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::FirstPayment => "be activated by its first payment",
            Self::UpgradePaid => "take a paid upgrade",
            Self::RenewalPaid => "take a renewal payment",
            Self::RollOver => "roll over to its next period",
            Self::SetRenewal => "change its renewal",
            Self::ScheduleChange => "schedule a plan change",
            Self::StartCharge => "start a payment",
            Self::PeriodEndCancelled => "end as cancelled",
            Self::PeriodEndUnpaid => "lapse",
            Self::Expire => "expire",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole table: exactly the listed steps are legal, every other pair is refused.
    #[test]
    fn exactly_the_documented_transitions() {
        use SubscriptionEvent as E;
        use SubscriptionState as S;
        let mut legal = vec![
            (S::Incomplete, E::FirstPayment, S::Active),
            (S::Incomplete, E::Expire, S::Expired),
            (S::Active, E::PeriodEndCancelled, S::Cancelled),
            (S::Active, E::PeriodEndUnpaid, S::Lapsed),
        ];
        for event in
            [E::UpgradePaid, E::RenewalPaid, E::RollOver, E::SetRenewal, E::ScheduleChange, E::StartCharge]
        {
            legal.push((S::Active, event, S::Active));
        }
        for from in S::ALL {
            for event in E::ALL {
                let expected = legal.iter().find(|(f, e, _)| *f == from && *e == event).map(|(_, _, to)| *to);
                match expected {
                    Some(to) => assert_eq!(from.next(event), Ok(to)),
                    None => assert_eq!(from.next(event), Err(IllegalSubscriptionTransition { from, event })),
                }
            }
            if from.is_final() {
                assert!(E::ALL.iter().all(|e| from.next(*e).is_err()), "{from} is final");
            }
        }
        assert_eq!(
            S::Cancelled.next(E::SetRenewal).map_err(|e| e.to_string()),
            Err("a subscription that is cancelled cannot change its renewal".to_owned())
        );
    }
}
