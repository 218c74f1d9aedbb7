//! Data subscriptions: purchase, plan changes, renewal or cancellation at period end, the
//! ticker, and the plan source that makes an active subscription the account's plan.
//!
//! **Life** (state machine in `subs_state`): [`ShopService::subscribe`] makes an `incomplete`
//! subscription and its first charge; only the verified `payment.succeeded` event of that
//! charge's payment makes it `active` (in the webhook's transaction, with its invoice number).
//! The period runs from that payment for one calendar month or year (`billing`).
//!
//! **Period end.** With renewal on, the customer pays the next period during the last
//! [`RENEWAL_WINDOW_S`] of the current one ([`ShopService::start_renewal`]; the test-mode
//! provider has no saved cards, so a renewal is a hosted payment like any other — a provider
//! with saved cards would pay it off-session through the same webhook). A paid next period
//! starts at the period end; an unpaid one ends the subscription `lapsed` at the period end.
//! With renewal off ([`ShopService::set_renewal`]) it ends `cancelled` at the period end;
//! access lasts until then.
//!
//! A subscription has at most one open charge: starting another (an upgrade, a renewal)
//! voids the earlier one.
//!
//! **Changes** ([`ShopService::change_quote`], [`ShopService::change_plan`]): a move to an
//! offer with a higher price at the same interval is an upgrade: it applies as soon as its
//! prorated charge is paid (rule and worked example in `billing`), keeping the period end.
//! Every other change (a cheaper offer, or another interval) is scheduled for the period end
//! and priced by the renewal charge.
//!
//! **Access** ([`effective_plan`]): the subscription's plan applies while it is `active` and
//! the shop clock is before the period end (or inside a paid next period). `ShopService::open`
//! registers the shop as the auth service's [`PlanSource`], asked at every policy resolution:
//! access starts with the commit of the paying event and ends at the period end, with no
//! cache between. The ticker ([`ShopService::run_subscription_tick`], every
//! [`SUBSCRIPTION_TICK_S`], at most [`SUBSCRIPTION_TICK_BATCH_MAX`] changes a run) records
//! the ends, roll-overs and expiries as states and audits each; access never waits for it.
//!
//! An account whose latest subscription was never activated keeps its assigned plan (an
//! operator's assignment); once a subscription has been active, the subscription decides.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, WriteTransaction};
use serde_json::json;

use super::billing::{BillingInterval, Proration, add_months, format_time, proration};
use super::model::{
    CHARGES_PER_SUBSCRIPTION_MAX, ChargeKind, ChargeStatus, PaidPeriod, RENEWAL_WINDOW_S,
    SUBSCRIPTION_CHARGE_PREFIX, SUBSCRIPTION_HISTORY_MAX, SUBSCRIPTION_PAYMENT_TTL_S,
    SUBSCRIPTION_TICK_BATCH_MAX, SUBSCRIPTIONS_MAX, ScheduledChange, Subscription, SubscriptionCharge,
};
use super::store::{
    self, INVOICES, META, META_NEXT_INVOICE, PAYMENTS, PLAN_OFFERS, SUBSCRIPTION_CHARGES, SUBSCRIPTION_DUE,
    SUBSCRIPTIONS, USER_SUBSCRIPTIONS,
};
use super::subs_state::{SubscriptionEvent, SubscriptionState};
use super::{
    Address, AuditEvent, Caller, HostedPayment, Inner, Invoice, Money, OrderLine, Payment, PaymentStatus,
    PlanOffer, Role, ShopError, ShopResult, ShopService, Totals, actor, now_ms, random_hex,
};
use crate::auth::{PlanDecision, PlanSource};

/// A subscription with its charges, as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionView {
    /// The subscription, with the period ends up to now applied (what the ticker will record).
    pub subscription: Subscription,
    /// Its charges, newest first.
    pub charges: Vec<SubscriptionCharge>,
    /// The auth plan it gives now (`None`: no access).
    pub access_plan_id: Option<String>,
    /// When the renewal of the next period can be paid now: from when (unix s).
    pub renewal_payable: bool,
}

/// What a plan change costs and when it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeQuote {
    /// An upgrade: applies when this prorated amount is paid.
    Upgrade {
        /// The parts of the price.
        proration: Proration,
        /// What the customer pays (tax included).
        totals: Totals,
    },
    /// Applies at the period end (this unix s); the renewal charge is priced by the new offer.
    AtPeriodEnd {
        /// When.
        effective_s: i64,
        /// The new price per period, before tax.
        price: Money,
    },
}

/// What [`ShopService::change_plan`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeOutcome {
    /// Scheduled for the period end.
    Scheduled(Box<Subscription>),
    /// An upgrade charge was made: pay it here.
    Pay(HostedPayment),
}

/// What a ticker run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Subscriptions looked at.
    pub examined: usize,
    /// Subscriptions whose state or period changed.
    pub changed: usize,
}

/// The auth plan `subscription` gives at `now_s`, if any.
pub fn effective_plan(subscription: &Subscription, now_s: i64) -> Option<&str> {
    if subscription.state != SubscriptionState::Active {
        return None;
    }
    if now_s < subscription.period_end_s {
        return Some(&subscription.auth_plan_id);
    }
    match &subscription.next_period {
        Some(next) if now_s >= next.start_s && now_s < next.end_s => Some(&next.auth_plan_id),
        _ => None,
    }
}

/// Appends to the subscription's history, keeping the first entry and the latest
/// [`SUBSCRIPTION_HISTORY_MAX`]` - 1` (a customer toggling renewal cannot grow the record).
fn record(subscription: &mut Subscription, at_s: i64, state: SubscriptionState, note: &str) {
    subscription.history.push((at_s, state, note.to_owned()));
    if subscription.history.len() > SUBSCRIPTION_HISTORY_MAX {
        subscription.history.remove(1);
    }
}

/// When the ticker must next look at `subscription` (`None`: never again).
fn due_s(subscription: &Subscription) -> Option<i64> {
    match subscription.state {
        SubscriptionState::Incomplete => {
            Some(subscription.created_s.saturating_add(SUBSCRIPTION_PAYMENT_TTL_S))
        }
        SubscriptionState::Active => Some(subscription.period_end_s),
        _ => None,
    }
}

fn due_key(at_s: i64, id: &str) -> String {
    format!("{:020}/{id}", at_s.max(0))
}

/// Applies the period ends and expiries due at `now_s`; the notes of what happened.
fn settle(subscription: &mut Subscription, now_s: i64) -> Vec<&'static str> {
    use SubscriptionEvent as E;
    let mut notes = Vec::new();
    // Each round moves a period on or ends the subscription: bounded by the paid periods.
    for _ in 0..4 {
        let event = match subscription.state {
            SubscriptionState::Incomplete
                if now_s >= subscription.created_s.saturating_add(SUBSCRIPTION_PAYMENT_TTL_S) =>
            {
                E::Expire
            }
            SubscriptionState::Active if now_s >= subscription.period_end_s => {
                if subscription.next_period.is_some() {
                    E::RollOver
                } else if subscription.renew {
                    E::PeriodEndUnpaid
                } else {
                    E::PeriodEndCancelled
                }
            }
            _ => break,
        };
        let Ok(to) = subscription.state.next(event) else { break };
        let at_s = match event {
            E::Expire => subscription.created_s.saturating_add(SUBSCRIPTION_PAYMENT_TTL_S),
            _ => subscription.period_end_s,
        };
        if event == E::RollOver
            && let Some(next) = subscription.next_period.take()
        {
            subscription.offer_id = next.offer_id;
            subscription.auth_plan_id = next.auth_plan_id;
            subscription.interval = next.interval;
            subscription.price = next.price;
            subscription.period_start_s = next.start_s;
            subscription.period_end_s = next.end_s;
            subscription.scheduled_change = None;
        }
        if to.is_final() {
            subscription.open_charge = None;
        }
        subscription.state = to;
        let note = match event {
            E::Expire => "expired_unpaid",
            E::RollOver => "renewed_next_period",
            E::PeriodEndUnpaid => "lapsed_unpaid",
            _ => "cancelled_at_period_end",
        };
        record(subscription, at_s, to, note);
        notes.push(note);
    }
    notes
}

impl PlanSource for Inner {
    fn plan_of(&self, user_id: &str) -> Result<PlanDecision, String> {
        let read = || -> ShopResult<PlanDecision> {
            let txn = self.db.begin_read()?;
            let Some(id) = txn.open_table(USER_SUBSCRIPTIONS)?.get(user_id)?.map(|v| v.value().to_vec())
            else {
                return Ok(PlanDecision::NotDecided);
            };
            let id = String::from_utf8(id)
                .map_err(|e| ShopError::Corrupt { table: "user_subscriptions", reason: e.to_string() })?;
            let Some(subscription) =
                store::get::<Subscription>(&txn.open_table(SUBSCRIPTIONS)?, "subscriptions", &id)?
            else {
                return Ok(PlanDecision::NotDecided);
            };
            if subscription.activated_s.is_none() {
                return Ok(PlanDecision::NotDecided);
            }
            let now_s = i64::try_from(self.config.clock.now_s()).unwrap_or(i64::MAX);
            Ok(PlanDecision::Decided(effective_plan(&subscription, now_s).map(str::to_owned)))
        };
        read().map_err(|e| e.to_string())
    }
}

fn is_staff(caller: &Caller) -> bool {
    caller.role().rank() >= Role::Operator.rank() && !caller.mfa_enrolment_required()
}

impl ShopService {
    /// Seconds since the epoch on the shop clock (`ShopConfig::clock`).
    pub fn now_s(&self) -> i64 {
        i64::try_from(self.inner.config.clock.now_s()).unwrap_or(i64::MAX)
    }

    fn charge_totals(&self, subtotal: Money) -> ShopResult<Totals> {
        let tax_bps = self.inner.config.tax_bps;
        let tax = subtotal.basis_points(tax_bps)?;
        Ok(Totals {
            subtotal,
            shipping: Money::zero(subtotal.currency),
            tax_bps,
            tax,
            total: subtotal.plus(tax)?,
        })
    }

    fn offer_for_sale(&self, offer_id: &str) -> ShopResult<(PlanOffer, String)> {
        let txn = self.inner.db.begin_read()?;
        let offer: PlanOffer = store::get(&txn.open_table(PLAN_OFFERS)?, "plan_offers", offer_id)?
            .ok_or(ShopError::NotFound { kind: "plan" })?;
        let plan_id = offer
            .auth_plan_id
            .clone()
            .ok_or_else(|| ShopError::invalid("plan", "this plan is not for sale yet"))?;
        Ok((offer, plan_id))
    }

    fn offer_price(offer: &PlanOffer, interval: BillingInterval) -> Money {
        match interval {
            BillingInterval::Monthly => offer.monthly,
            BillingInterval::Annual => offer.annual,
        }
    }

    /// Starts a subscription to `offer_id` billed `interval`: an `incomplete` subscription, its
    /// first charge and a provider payment (pay it at the returned page). An unpaid earlier
    /// start of the caller is expired; an active subscription is changed instead (409).
    pub fn subscribe(
        &self,
        caller: &Caller,
        offer_id: &str,
        interval: BillingInterval,
    ) -> ShopResult<(Subscription, HostedPayment)> {
        if !caller.email_verified() {
            return Err(ShopError::Forbidden(
                "verify your email address before subscribing: follow the link we mailed you, or ask for a new one on your account page",
            ));
        }
        let (offer, auth_plan_id) = self.offer_for_sale(offer_id)?;
        let price = Self::offer_price(&offer, interval);
        let now = self.now_s();
        let subscription_id = random_hex()?;
        let charge_id = format!("{SUBSCRIPTION_CHARGE_PREFIX}{}", random_hex()?);
        let totals = self.charge_totals(price)?;
        let hosted = self.inner.provider.create_payment(&charge_id, totals.total)?;
        let charge = SubscriptionCharge {
            id: charge_id.clone(),
            subscription_id: subscription_id.clone(),
            user_id: caller.user_id().to_owned(),
            kind: ChargeKind::First,
            offer_id: offer.id.clone(),
            offer_name: offer.name.clone(),
            auth_plan_id: auth_plan_id.clone(),
            interval,
            price,
            period_start_s: now,
            period_end_s: add_months(now, interval.months()),
            proration: None,
            totals,
            payment_id: Some(hosted.id.clone()),
            status: ChargeStatus::Open,
            invoice_number: None,
            created_s: now,
        };
        let subscription = Subscription {
            id: subscription_id.clone(),
            user_id: caller.user_id().to_owned(),
            email: caller.email().to_owned(),
            state: SubscriptionState::Incomplete,
            offer_id: offer.id.clone(),
            offer_name: offer.name.clone(),
            auth_plan_id,
            interval,
            price,
            period_start_s: now,
            period_end_s: charge.period_end_s,
            renew: true,
            scheduled_change: None,
            next_period: None,
            open_charge: Some(charge_id.clone()),
            charges: vec![charge_id.clone()],
            created_s: now,
            activated_s: None,
            history: vec![(now, SubscriptionState::Incomplete, "started".to_owned())],
        };
        let mut replaced = None;
        let txn = self.inner.db.begin_write()?;
        {
            let mut subscriptions = txn.open_table(SUBSCRIPTIONS)?;
            if subscriptions.len()? >= SUBSCRIPTIONS_MAX {
                return Err(ShopError::LimitReached { what: "subscriptions", max: SUBSCRIPTIONS_MAX });
            }
            let mut charges = txn.open_table(SUBSCRIPTION_CHARGES)?;
            let mut due = txn.open_table(SUBSCRIPTION_DUE)?;
            if let Some(mut current) = latest(&txn, &subscriptions, caller.user_id())? {
                let before = due_s(&current);
                settle(&mut current, now);
                if current.state == SubscriptionState::Active {
                    return Err(ShopError::invalid(
                        "subscription",
                        "you already have an active subscription: change its plan instead",
                    ));
                }
                if current.state == SubscriptionState::Incomplete {
                    current.state = current.state.next(SubscriptionEvent::Expire)?;
                    let state = current.state;
                    record(&mut current, now, state, "replaced_by_new_start");
                    current.open_charge = None;
                    replaced = Some(current.id.clone());
                }
                void_open_charges(&mut charges, &current)?;
                write(&mut subscriptions, &mut due, &current, before)?;
            }
            store::put(&mut charges, &charge.id, &charge)?;
            write(&mut subscriptions, &mut due, &subscription, None)?;
            txn.open_table(USER_SUBSCRIPTIONS)?.insert(caller.user_id(), subscription_id.as_bytes())?;
            self.record_payment(&txn, &hosted, &charge)?;
        }
        txn.commit()?;
        self.audit(
            AuditEvent::new(
                actor(caller),
                "shop.subscription.start",
                format!("subscription:{subscription_id}"),
                "ok",
            )
            .with_details(json!({ "offer": offer.id, "interval": interval.as_str(), "charge": charge.id,
                    "amount_minor": charge.totals.total.minor, "payment": hosted.id, "replaced": replaced })),
        )?;
        Ok((subscription, hosted))
    }

    fn record_payment(
        &self,
        txn: &WriteTransaction,
        hosted: &HostedPayment,
        charge: &SubscriptionCharge,
    ) -> ShopResult<()> {
        let payment = Payment {
            id: hosted.id.clone(),
            order_id: charge.id.clone(),
            user_id: charge.user_id.clone(),
            amount: charge.totals.total,
            status: PaymentStatus::Open,
            last_event_created_s: 0,
            created_ms: now_ms(),
        };
        store::put(&mut txn.open_table(PAYMENTS)?, &hosted.id, &payment)
    }

    /// The caller's latest subscription, if any (period ends up to now applied).
    pub fn my_subscription(&self, caller: &Caller) -> ShopResult<Option<SubscriptionView>> {
        let txn = self.inner.db.begin_read()?;
        let id = match txn.open_table(USER_SUBSCRIPTIONS)?.get(caller.user_id())? {
            Some(v) => String::from_utf8_lossy(v.value()).into_owned(),
            None => return Ok(None),
        };
        drop(txn);
        self.subscription(caller, &id).map(Some)
    }

    /// A subscription of the caller (staff see any; anyone else's answers 404).
    pub fn subscription(&self, caller: &Caller, id: &str) -> ShopResult<SubscriptionView> {
        let txn = self.inner.db.begin_read()?;
        let mut subscription: Subscription =
            store::get::<Subscription>(&txn.open_table(SUBSCRIPTIONS)?, "subscriptions", id)?
                .filter(|s| s.user_id == caller.user_id() || is_staff(caller))
                .ok_or(ShopError::NotFound { kind: "subscription" })?;
        let now = self.now_s();
        settle(&mut subscription, now);
        let table = txn.open_table(SUBSCRIPTION_CHARGES)?;
        let mut charges = Vec::with_capacity(subscription.charges.len());
        for charge_id in subscription.charges.iter().rev() {
            if let Some(charge) = store::get::<SubscriptionCharge>(&table, "subscription_charges", charge_id)?
            {
                charges.push(charge);
            }
        }
        let access_plan_id = effective_plan(&subscription, now).map(str::to_owned);
        let renewal_payable = subscription.state == SubscriptionState::Active
            && subscription.renew
            && subscription.next_period.is_none()
            && now >= subscription.period_end_s.saturating_sub(RENEWAL_WINDOW_S);
        Ok(SubscriptionView { subscription, charges, access_plan_id, renewal_payable })
    }

    /// A subscription as stored: the ticker's record, without the period ends not recorded
    /// yet (for operators' tools and tests; no caller check).
    pub fn subscription_record(&self, id: &str) -> ShopResult<Option<Subscription>> {
        let txn = self.inner.db.begin_read()?;
        store::get(&txn.open_table(SUBSCRIPTIONS)?, "subscriptions", id)
    }

    /// The format version of the open `shop.redb`.
    pub fn format_version(&self) -> ShopResult<u64> {
        let txn = self.inner.db.begin_read()?;
        let version = txn.open_table(META)?.get(super::store::META_FORMAT_VERSION)?.map(|v| v.value());
        version.ok_or(ShopError::Corrupt { table: "meta", reason: "no format version".into() })
    }

    /// A charge of the caller (staff see any; anyone else's answers 404).
    pub fn subscription_charge(&self, caller: &Caller, charge_id: &str) -> ShopResult<SubscriptionCharge> {
        let txn = self.inner.db.begin_read()?;
        store::get::<SubscriptionCharge>(
            &txn.open_table(SUBSCRIPTION_CHARGES)?,
            "subscription_charges",
            charge_id,
        )?
        .filter(|c| c.user_id == caller.user_id() || is_staff(caller))
        .ok_or(ShopError::NotFound { kind: "charge" })
    }

    /// The owner's subscription for a change (404 for anyone else, staff included: they do
    /// not buy for customers), with the period ends up to now applied.
    fn owned(&self, caller: &Caller, id: &str) -> ShopResult<Subscription> {
        let txn = self.inner.db.begin_read()?;
        let mut subscription =
            store::get::<Subscription>(&txn.open_table(SUBSCRIPTIONS)?, "subscriptions", id)?
                .filter(|s| s.user_id == caller.user_id())
                .ok_or(ShopError::NotFound { kind: "subscription" })?;
        settle(&mut subscription, self.now_s());
        Ok(subscription)
    }

    /// What moving subscription `id` to `offer_id` billed `interval` would cost, and when it
    /// would apply (see the module doc). Shown before the customer pays.
    pub fn change_quote(
        &self,
        caller: &Caller,
        id: &str,
        offer_id: &str,
        interval: BillingInterval,
    ) -> ShopResult<ChangeQuote> {
        let subscription = self.owned(caller, id)?;
        subscription.state.next(SubscriptionEvent::ScheduleChange)?;
        let (offer, _) = self.offer_for_sale(offer_id)?;
        let price = Self::offer_price(&offer, interval);
        if offer.id == subscription.offer_id && interval == subscription.interval {
            return Err(ShopError::invalid("plan", "that is your current plan"));
        }
        if subscription.next_period.is_some() {
            return Err(ShopError::invalid(
                "plan",
                "the next period is already paid: change the plan once it has begun",
            ));
        }
        if interval == subscription.interval && price.minor > subscription.price.minor {
            let proration = proration(
                subscription.price.minor,
                price.minor,
                subscription.period_start_s,
                subscription.period_end_s,
                self.now_s(),
            );
            if proration.due_minor <= 0 {
                return Err(ShopError::invalid(
                    "plan",
                    "the period is about to end: the change would cost nothing now; renew on the new plan instead",
                ));
            }
            let totals = self.charge_totals(Money::new(proration.due_minor, price.currency)?)?;
            return Ok(ChangeQuote::Upgrade { proration, totals });
        }
        Ok(ChangeQuote::AtPeriodEnd { effective_s: subscription.period_end_s, price })
    }

    /// Moves subscription `id` to `offer_id` billed `interval`: an upgrade makes a prorated
    /// charge (the plan changes when it is paid); anything else is scheduled for the period end.
    pub fn change_plan(
        &self,
        caller: &Caller,
        id: &str,
        offer_id: &str,
        interval: BillingInterval,
    ) -> ShopResult<ChangeOutcome> {
        let quote = self.change_quote(caller, id, offer_id, interval)?;
        let (offer, auth_plan_id) = self.offer_for_sale(offer_id)?;
        match quote {
            ChangeQuote::AtPeriodEnd { effective_s, price } => {
                let subscription = self.update(caller, id, SubscriptionEvent::ScheduleChange, |s, _| {
                    let change = ScheduledChange { offer_id: offer.id.clone(), interval };
                    let back_to_current = offer.id == s.offer_id && interval == s.interval;
                    s.scheduled_change = (!back_to_current).then_some(change);
                    Ok("change_scheduled")
                })?;
                self.audit(
                    AuditEvent::new(
                        actor(caller),
                        "shop.subscription.schedule_change",
                        format!("subscription:{id}"),
                        "ok",
                    )
                    .with_details(json!({ "offer": offer.id, "interval": interval.as_str(),
                            "effective_s": effective_s, "price_minor": price.minor })),
                )?;
                Ok(ChangeOutcome::Scheduled(Box::new(subscription)))
            }
            ChangeQuote::Upgrade { proration, totals } => {
                let subscription = self.owned(caller, id)?;
                let charge = SubscriptionCharge {
                    id: format!("{SUBSCRIPTION_CHARGE_PREFIX}{}", random_hex()?),
                    subscription_id: id.to_owned(),
                    user_id: caller.user_id().to_owned(),
                    kind: ChargeKind::Upgrade,
                    offer_id: offer.id.clone(),
                    offer_name: offer.name.clone(),
                    auth_plan_id,
                    interval,
                    price: Self::offer_price(&offer, interval),
                    period_start_s: self.now_s(),
                    period_end_s: subscription.period_end_s,
                    proration: Some(proration),
                    totals,
                    payment_id: None,
                    status: ChargeStatus::Open,
                    invoice_number: None,
                    created_s: self.now_s(),
                };
                let hosted =
                    self.open_charge(caller, id, SubscriptionEvent::StartCharge, charge, "upgrade_charge")?;
                Ok(ChangeOutcome::Pay(hosted))
            }
        }
    }

    /// Pays the next period ahead (during the last [`RENEWAL_WINDOW_S`] of the current one,
    /// renewal on): a renewal charge at the price of the offer the next period will have (a
    /// scheduled change applies here).
    pub fn start_renewal(&self, caller: &Caller, id: &str) -> ShopResult<HostedPayment> {
        let subscription = self.owned(caller, id)?;
        subscription.state.next(SubscriptionEvent::StartCharge)?;
        if !subscription.renew {
            return Err(ShopError::invalid(
                "renewal",
                "renewal is off: this subscription ends at its period end",
            ));
        }
        if subscription.next_period.is_some() {
            return Err(ShopError::invalid("renewal", "the next period is already paid"));
        }
        let now = self.now_s();
        if now < subscription.period_end_s.saturating_sub(RENEWAL_WINDOW_S) {
            return Err(ShopError::invalid(
                "renewal",
                format!(
                    "the renewal can be paid from {}",
                    format_time(subscription.period_end_s - RENEWAL_WINDOW_S)
                ),
            ));
        }
        let (offer_id, interval) = match &subscription.scheduled_change {
            Some(change) => (change.offer_id.clone(), change.interval),
            None => (subscription.offer_id.clone(), subscription.interval),
        };
        let (offer, auth_plan_id) = self.offer_for_sale(&offer_id)?;
        let price = Self::offer_price(&offer, interval);
        let charge = SubscriptionCharge {
            id: format!("{SUBSCRIPTION_CHARGE_PREFIX}{}", random_hex()?),
            subscription_id: id.to_owned(),
            user_id: caller.user_id().to_owned(),
            kind: ChargeKind::Renewal,
            offer_id: offer.id.clone(),
            offer_name: offer.name.clone(),
            auth_plan_id,
            interval,
            price,
            period_start_s: subscription.period_end_s,
            period_end_s: add_months(subscription.period_end_s, interval.months()),
            proration: None,
            totals: self.charge_totals(price)?,
            payment_id: None,
            status: ChargeStatus::Open,
            invoice_number: None,
            created_s: now,
        };
        self.open_charge(caller, id, SubscriptionEvent::StartCharge, charge, "renewal_charge")
    }

    /// Pays an open charge of the caller again (a new provider payment; the earlier one was
    /// declined or abandoned).
    pub fn pay_charge(&self, caller: &Caller, charge_id: &str) -> ShopResult<HostedPayment> {
        let mut charge = self.subscription_charge(caller, charge_id)?;
        if charge.user_id != caller.user_id() || charge.status != ChargeStatus::Open {
            return Err(ShopError::invalid("charge", "this charge is not waiting for payment"));
        }
        let hosted = self.inner.provider.create_payment(&charge.id, charge.totals.total)?;
        let txn = self.inner.db.begin_write()?;
        {
            charge.payment_id = Some(hosted.id.clone());
            store::put(&mut txn.open_table(SUBSCRIPTION_CHARGES)?, &charge.id, &charge)?;
            self.record_payment(&txn, &hosted, &charge)?;
        }
        txn.commit()?;
        self.audit(
            AuditEvent::new(actor(caller), "shop.subscription.pay", format!("subscription:{}", charge.subscription_id), "ok")
                .with_details(json!({ "charge": charge.id, "payment": hosted.id, "amount_minor": charge.totals.total.minor })),
        )?;
        Ok(hosted)
    }

    /// Makes `charge` the subscription's open charge (voiding an earlier open one) with a new
    /// provider payment. Audited as `action`.
    fn open_charge(
        &self,
        caller: &Caller,
        id: &str,
        event: SubscriptionEvent,
        mut charge: SubscriptionCharge,
        action: &'static str,
    ) -> ShopResult<HostedPayment> {
        let hosted = self.inner.provider.create_payment(&charge.id, charge.totals.total)?;
        charge.payment_id = Some(hosted.id.clone());
        let charge_for_txn = charge.clone();
        self.update(caller, id, event, |s, txn| {
            if s.charges.len() >= CHARGES_PER_SUBSCRIPTION_MAX {
                return Err(ShopError::LimitReached {
                    what: "charges per subscription",
                    max: CHARGES_PER_SUBSCRIPTION_MAX as u64,
                });
            }
            let mut charges = txn.open_table(SUBSCRIPTION_CHARGES)?;
            void_open_charges(&mut charges, s)?;
            store::put(&mut charges, &charge_for_txn.id, &charge_for_txn)?;
            s.open_charge = Some(charge_for_txn.id.clone());
            s.charges.push(charge_for_txn.id.clone());
            self.record_payment(txn, &hosted, &charge_for_txn)?;
            Ok(action)
        })?;
        self.audit(
            AuditEvent::new(actor(caller), &format!("shop.subscription.{action}"), format!("subscription:{id}"), "ok")
                .with_details(json!({ "charge": charge.id, "offer": charge.offer_id, "interval": charge.interval.as_str(),
                    "amount_minor": charge.totals.total.minor, "payment": hosted.id, "proration": charge.proration })),
        )?;
        Ok(hosted)
    }

    /// Turns renewal at period end on (`true`) or off (`false`: the subscription ends
    /// `cancelled` at its period end and keeps its access until then). Audited.
    pub fn set_renewal(&self, caller: &Caller, id: &str, renew: bool) -> ShopResult<Subscription> {
        let subscription = self.update(caller, id, SubscriptionEvent::SetRenewal, |s, txn| {
            if !renew && s.next_period.is_some() {
                return Err(ShopError::invalid(
                    "renewal",
                    "the next period is already paid: cancel once it has begun",
                ));
            }
            s.renew = renew;
            if !renew {
                // A renewal charge still open is no longer wanted.
                void_open_charges(&mut txn.open_table(SUBSCRIPTION_CHARGES)?, s)?;
                s.open_charge = None;
            }
            Ok(if renew { "renewal_on" } else { "cancel_at_period_end" })
        })?;
        self.audit(
            AuditEvent::new(actor(caller), "shop.subscription.renewal", format!("subscription:{id}"), "ok")
                .with_details(json!({ "renew": renew, "period_end_s": subscription.period_end_s })),
        )?;
        Ok(subscription)
    }

    /// One owner's step on a stored subscription in one transaction: the period ends up to now
    /// are applied, `event` is checked against the state machine, then `change` runs.
    fn update(
        &self,
        caller: &Caller,
        id: &str,
        event: SubscriptionEvent,
        change: impl FnOnce(&mut Subscription, &WriteTransaction) -> ShopResult<&'static str>,
    ) -> ShopResult<Subscription> {
        let now = self.now_s();
        let txn = self.inner.db.begin_write()?;
        let subscription;
        {
            let mut subscriptions = txn.open_table(SUBSCRIPTIONS)?;
            let mut current = store::get::<Subscription>(&subscriptions, "subscriptions", id)?
                .filter(|s| s.user_id == caller.user_id())
                .ok_or(ShopError::NotFound { kind: "subscription" })?;
            let before = due_s(&current);
            settle(&mut current, now);
            let to = current.state.next(event)?;
            let note = change(&mut current, &txn)?;
            current.state = to;
            record(&mut current, now, to, note);
            let mut due = txn.open_table(SUBSCRIPTION_DUE)?;
            write(&mut subscriptions, &mut due, &current, before)?;
            subscription = current;
        }
        txn.commit()?;
        Ok(subscription)
    }

    /// Applies a succeeded payment of a subscription charge inside the webhook's transaction:
    /// activation, upgrade or renewal, with the invoice number taken in that transaction. The
    /// outcome word and the invoice number. A charge no longer payable (replaced, or its
    /// subscription ended) is recorded `paid_but_subscription_not_payable` for an operator to
    /// refund.
    pub(crate) fn subscription_charge_paid(
        &self,
        txn: &WriteTransaction,
        charge_id: &str,
    ) -> ShopResult<(&'static str, Option<u64>)> {
        let now = self.now_s();
        let mut charges = txn.open_table(SUBSCRIPTION_CHARGES)?;
        let mut charge: SubscriptionCharge = store::get(&charges, "subscription_charges", charge_id)?
            .ok_or_else(|| ShopError::InvalidEvent("unknown subscription charge".into()))?;
        let mut subscriptions = txn.open_table(SUBSCRIPTIONS)?;
        let mut subscription: Subscription =
            store::get(&subscriptions, "subscriptions", &charge.subscription_id)?
                .ok_or(ShopError::NotFound { kind: "subscription" })?;
        let before = due_s(&subscription);
        settle(&mut subscription, now);
        let open =
            charge.status == ChargeStatus::Open && subscription.open_charge.as_deref() == Some(charge_id);
        let applied = if !open {
            None
        } else {
            match charge.kind {
                ChargeKind::First => {
                    subscription.state.next(SubscriptionEvent::FirstPayment).ok().map(|to| {
                        subscription.state = to;
                        subscription.activated_s = Some(now);
                        subscription.period_start_s = now;
                        subscription.period_end_s = add_months(now, charge.interval.months());
                        charge.period_start_s = subscription.period_start_s;
                        charge.period_end_s = subscription.period_end_s;
                        "subscription_activated"
                    })
                }
                ChargeKind::Upgrade => subscription
                    .state
                    .next(SubscriptionEvent::UpgradePaid)
                    .ok()
                    .filter(|_| {
                        now < subscription.period_end_s && charge.period_end_s == subscription.period_end_s
                    })
                    .map(|to| {
                        subscription.state = to;
                        subscription.offer_id = charge.offer_id.clone();
                        subscription.offer_name = charge.offer_name.clone();
                        subscription.auth_plan_id = charge.auth_plan_id.clone();
                        subscription.price = charge.price;
                        subscription.scheduled_change = None;
                        "subscription_upgraded"
                    }),
                ChargeKind::Renewal => subscription
                    .state
                    .next(SubscriptionEvent::RenewalPaid)
                    .ok()
                    .filter(|_| {
                        now < subscription.period_end_s
                            && charge.period_start_s == subscription.period_end_s
                            && subscription.next_period.is_none()
                    })
                    .map(|to| {
                        subscription.state = to;
                        subscription.next_period = Some(PaidPeriod {
                            offer_id: charge.offer_id.clone(),
                            auth_plan_id: charge.auth_plan_id.clone(),
                            interval: charge.interval,
                            price: charge.price,
                            start_s: charge.period_start_s,
                            end_s: charge.period_end_s,
                        });
                        subscription.scheduled_change = None;
                        "subscription_renewed"
                    }),
            }
        };
        let Some(outcome) = applied else {
            charge.status = ChargeStatus::Void;
            store::put(&mut charges, &charge.id, &charge)?;
            let mut due = txn.open_table(SUBSCRIPTION_DUE)?;
            write(&mut subscriptions, &mut due, &subscription, before)?;
            return Ok(("paid_but_subscription_not_payable", None));
        };
        // The invoice number is taken in this transaction: numbers stay gapless across orders
        // and subscriptions.
        let mut meta = txn.open_table(META)?;
        let number = meta.get(META_NEXT_INVOICE)?.map_or(1, |v| v.value());
        meta.insert(META_NEXT_INVOICE, number + 1)?;
        let what = match charge.kind {
            ChargeKind::First | ChargeKind::Renewal => "",
            ChargeKind::Upgrade => " (prorated upgrade)",
        };
        let name = format!(
            "{} data plan, {}, {} to {}{what}",
            charge.offer_name,
            charge.interval.as_str(),
            format_time(charge.period_start_s),
            format_time(charge.period_end_s)
        );
        let invoice = Invoice {
            number,
            order_id: charge.id.clone(),
            user_id: charge.user_id.clone(),
            email: subscription.email.clone(),
            issued_ms: now_ms(),
            lines: vec![OrderLine {
                product_id: charge.offer_id.clone(),
                name,
                unit_price: charge.totals.subtotal,
                quantity: 1,
                total: charge.totals.subtotal,
            }],
            totals: charge.totals,
            address: Address {
                name: subscription.email.clone(),
                line1: String::new(),
                line2: String::new(),
                city: String::new(),
                postal_code: String::new(),
                country: String::new(),
            },
        };
        let bytes = serde_json::to_vec(&invoice)
            .map_err(|e| ShopError::Corrupt { table: "encode", reason: e.to_string() })?;
        txn.open_table(INVOICES)?.insert(number, bytes.as_slice())?;
        charge.status = ChargeStatus::Paid;
        charge.invoice_number = Some(number);
        store::put(&mut charges, &charge.id, &charge)?;
        subscription.open_charge = None;
        let state = subscription.state;
        record(&mut subscription, now, state, outcome);
        let mut due = txn.open_table(SUBSCRIPTION_DUE)?;
        write(&mut subscriptions, &mut due, &subscription, before)?;
        Ok((outcome, Some(number)))
    }

    /// One run of the subscription ticker: records the expiries, period ends and roll-overs due
    /// on the shop clock, at most [`SUBSCRIPTION_TICK_BATCH_MAX`] subscriptions (the rest wait
    /// for the next run). Each change is audited as actor `subscriptions`. Access does not
    /// depend on it (see the module doc).
    pub fn run_subscription_tick(&self) -> ShopResult<TickReport> {
        let now = self.now_s();
        let mut report = TickReport::default();
        let mut audits = Vec::new();
        let txn = self.inner.db.begin_write()?;
        {
            let mut due = txn.open_table(SUBSCRIPTION_DUE)?;
            let end = format!("{:020}/~", now.max(0));
            let mut keys = Vec::new();
            for item in due.range(..end.as_str())?.take(SUBSCRIPTION_TICK_BATCH_MAX) {
                let (key, _) = item?;
                keys.push(key.value().to_owned());
            }
            let mut subscriptions = txn.open_table(SUBSCRIPTIONS)?;
            let mut charges = txn.open_table(SUBSCRIPTION_CHARGES)?;
            for key in keys {
                due.remove(key.as_str())?;
                report.examined += 1;
                let Some((_, id)) = key.split_once('/') else { continue };
                let Some(mut subscription) = store::get::<Subscription>(&subscriptions, "subscriptions", id)?
                else {
                    continue;
                };
                let open = subscription.open_charge.clone();
                let notes = settle(&mut subscription, now);
                if notes.is_empty() {
                    if let Some(at) = due_s(&subscription) {
                        due.insert(due_key(at, id).as_str(), [].as_slice())?;
                    }
                    continue;
                }
                if subscription.state.is_final()
                    && let Some(charge_id) = open
                    && let Some(mut charge) =
                        store::get::<SubscriptionCharge>(&charges, "subscription_charges", &charge_id)?
                    && charge.status == ChargeStatus::Open
                {
                    charge.status = ChargeStatus::Void;
                    store::put(&mut charges, &charge_id, &charge)?;
                }
                store::put(&mut subscriptions, id, &subscription)?;
                if let Some(at) = due_s(&subscription) {
                    due.insert(due_key(at, id).as_str(), [].as_slice())?;
                }
                report.changed += 1;
                audits.push((id.to_owned(), subscription.user_id.clone(), subscription.state, notes));
            }
        }
        txn.commit()?;
        for (id, user_id, state, notes) in audits {
            self.audit(
                AuditEvent::new(
                    "subscriptions",
                    &format!("shop.subscription.{state}"),
                    format!("subscription:{id}"),
                    "ok",
                )
                .with_details(json!({ "user": user_id, "steps": notes, "at_s": now })),
            )?;
        }
        Ok(report)
    }

    /// The shop ticker: runs [`ShopService::run_subscription_tick`] and
    /// [`ShopService::expire_unpaid_orders`] every `every` ([`SUBSCRIPTION_TICK_S`] in
    /// `bluewave serve`) on the blocking pool until the returned handle is aborted (or the runtime ends); a failed run
    /// is logged and retried at the next tick.
    pub fn spawn_subscription_ticker(
        self: std::sync::Arc<Self>,
        every: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let shop = std::sync::Arc::clone(&self);
                let run = move || {
                    shop.run_subscription_tick()?;
                    shop.expire_unpaid_orders()
                };
                match tokio::task::spawn_blocking(run).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => tracing::warn!(%error, "shop ticker run failed"),
                    Err(error) => tracing::warn!(%error, "shop ticker run panicked"),
                }
            }
        })
    }
}

/// The latest subscription of `user_id`.
fn latest(
    txn: &WriteTransaction,
    subscriptions: &Table<'_, &'static str, &'static [u8]>,
    user_id: &str,
) -> ShopResult<Option<Subscription>> {
    let id = match txn.open_table(USER_SUBSCRIPTIONS)?.get(user_id)? {
        Some(v) => String::from_utf8_lossy(v.value()).into_owned(),
        None => return Ok(None),
    };
    store::get(subscriptions, "subscriptions", &id)
}

/// Voids the subscription's open charge, if any (a later payment of it is refunded by hand).
fn void_open_charges(
    charges: &mut Table<'_, &'static str, &'static [u8]>,
    subscription: &Subscription,
) -> ShopResult<()> {
    if let Some(id) = &subscription.open_charge
        && let Some(mut charge) = store::get::<SubscriptionCharge>(charges, "subscription_charges", id)?
        && charge.status == ChargeStatus::Open
    {
        charge.status = ChargeStatus::Void;
        store::put(charges, id, &charge)?;
    }
    Ok(())
}

/// Writes `subscription` and moves its ticker entry from `before` to its new due time.
fn write(
    subscriptions: &mut Table<'_, &'static str, &'static [u8]>,
    due: &mut Table<'_, &'static str, &'static [u8]>,
    subscription: &Subscription,
    before: Option<i64>,
) -> ShopResult<()> {
    if let Some(at) = before {
        due.remove(due_key(at, &subscription.id).as_str())?;
    }
    if let Some(at) = due_s(subscription) {
        due.insert(due_key(at, &subscription.id).as_str(), [].as_slice())?;
    }
    store::put(subscriptions, &subscription.id, subscription)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shop::Currency;

    fn active(period_start_s: i64, period_end_s: i64) -> Subscription {
        let eur = |minor| Money { minor, currency: Currency::Eur };
        Subscription {
            id: "s".into(),
            user_id: "u".into(),
            email: "u@example.org".into(),
            state: SubscriptionState::Active,
            offer_id: "coastal".into(),
            offer_name: "Coastal".into(),
            auth_plan_id: "plan-coastal".into(),
            interval: BillingInterval::Monthly,
            price: eur(4_900),
            period_start_s,
            period_end_s,
            renew: true,
            scheduled_change: None,
            next_period: None,
            open_charge: None,
            charges: Vec::new(),
            created_s: period_start_s,
            activated_s: Some(period_start_s),
            history: Vec::new(),
        }
    }

    /// Access up to (not at) the period end; a paid next period carries it on and rolls over
    /// (with its plan); past that, with renewal on and nothing paid, the subscription lapses.
    #[test]
    fn period_ends_roll_over_then_lapse() {
        let mut s = active(0, 100);
        assert_eq!(effective_plan(&s, 99), Some("plan-coastal"));
        assert_eq!(effective_plan(&s, 100), None);
        s.next_period = Some(PaidPeriod {
            offer_id: "research".into(),
            auth_plan_id: "plan-research".into(),
            interval: BillingInterval::Monthly,
            price: Money { minor: 19_900, currency: Currency::Eur },
            start_s: 100,
            end_s: 200,
        });
        assert_eq!(effective_plan(&s, 150), Some("plan-research"));
        assert_eq!(settle(&mut s, 99), Vec::<&str>::new());
        assert_eq!(settle(&mut s, 250), vec!["renewed_next_period", "lapsed_unpaid"]);
        assert_eq!(
            (s.state, s.offer_id.as_str(), s.period_end_s),
            (SubscriptionState::Lapsed, "research", 200)
        );
        assert_eq!(s.history.last().map(|h| h.0), Some(200), "recorded at the period end, not at the run");
        assert_eq!(due_s(&s), None);

        let mut cancelled = active(0, 100);
        cancelled.renew = false;
        assert_eq!(settle(&mut cancelled, 100), vec!["cancelled_at_period_end"]);
        assert_eq!(cancelled.state, SubscriptionState::Cancelled);
    }

    #[test]
    fn history_keeps_the_first_entry_and_the_latest() {
        let mut s = active(0, 100);
        for i in 0..1_000 {
            record(
                &mut s,
                i,
                SubscriptionState::Active,
                if i % 2 == 0 { "renewal_on" } else { "cancel_at_period_end" },
            );
        }
        assert_eq!(s.history.len(), SUBSCRIPTION_HISTORY_MAX);
        assert_eq!(s.history[0].0, 0);
        assert_eq!(s.history[1].0, 1_000 - (SUBSCRIPTION_HISTORY_MAX as i64 - 1));
        assert_eq!(s.history.last().map(|h| h.0), Some(999));
    }
}
