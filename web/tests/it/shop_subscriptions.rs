//! Data subscriptions over real HTTPS (real auth, engine, query service, `shop.redb` and the
//! shop's ticker; the shop clock is a manual one the tests move): a customer without a plan
//! reads nothing, subscribes through the plans page and the test-mode payment page, and reads
//! the plan's buoys (REST and SQL) as soon as the payment is confirmed; the period end without
//! a renewal payment ends the access and the ticker records `lapsed`; cancel at period end
//! keeps the access until the period end, then ends it; a renewal paid in the window carries
//! the access into the next period with its own invoice (numbers gapless with orders); an
//! upgrade's prorated amount is exact (the worked example of `shop::billing`) and shown before
//! paying, a downgrade waits for the period end; webhook replay and out-of-order events of a
//! subscription payment; another customer's subscription, charge and invoice answer 404; a
//! format-1 `shop.redb` is migrated and a newer one refused. And an unpaid order expires after
//! `ORDER_PAYMENT_TTL_S` on the shop clock, its stock released by the ticker.

use std::time::Duration;

use bluewave_web::shop_api::{
    BillingInterval, DEMO_COASTAL_BUOYS, ORDER_PAYMENT_TTL_S, SHOP_FILE_NAME, SHOP_FORMAT_VERSION,
    ShopConfig, ShopError, ShopService, SubscriptionState, add_months, sign_payload, utc_midnight,
};
use bluewave_web::{BuoyScope, Method, NewUser, Role, Secret, StatusCode};
use serde_json::{Value, json};

use crate::shop_pages::assert_shop_page;
use crate::shop_site::{ADMIN, Browser, OPERATOR, PASSWORD, Page, Site};

const ALICE: &str = "alice@example.org";
const BOB: &str = "bob@example.org";
const ANALYST: &str = "ana@example.org";
const COASTAL_BUOY: &str = "coastal-01";
const OTHER_BUOY: &str = "open-ocean-9";
/// How long a test waits for the ticker's record of a state (the access bound of issue 20).
const TICKER_WAIT_MAX: Duration = Duration::from_secs(60);

fn token(site: &Site, email: &str) -> String {
    let pair = site.auth.login(email, &Secret::new(PASSWORD), [10, 9, 9, 7].into()).unwrap();
    pair.access_token.expose().to_owned()
}

async fn api(site: &Site, method: Method, path: &str, bearer: &str, body: Option<Value>) -> Page {
    let auth = format!("Bearer {bearer}");
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    site.send(method, path, &[("authorization", &auth)], Some("application/json"), bytes).await
}

/// Two buoys with one recent reading each: one the Coastal plan covers, one it does not.
async fn seed_readings(site: &Site) {
    let admin = token(site, ADMIN);
    for id in [COASTAL_BUOY, OTHER_BUOY] {
        let body = json!({ "id": id, "name": id, "lat": 43.0, "lng": -8.0, "status": "active" });
        let answer = api(site, Method::POST, "/api/buoys", &admin, Some(body)).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text());
    }
    let operator = token(site, OPERATOR);
    let now_ns =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
            .unwrap();
    for (seq, buoy) in [COASTAL_BUOY, OTHER_BUOY].into_iter().enumerate() {
        let body = json!({ "buoy_id": buoy, "batch_seq": seq,
            "readings": [{ "metric": "salinity_psu", "ts": now_ns - 600_000_000_000, "value": 35.0 }] });
        let answer = api(site, Method::POST, "/api/telemetry", &operator, Some(body)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }
}

/// The buoys `email` reads now through SQL (`SELECT DISTINCT buoy_id`), or the refusal's status.
async fn sql_buoys(site: &Site, email: &str) -> Result<Vec<String>, StatusCode> {
    let sql = json!({ "sql": "SELECT DISTINCT buoy_id FROM readings ORDER BY buoy_id" });
    let answer = api(site, Method::POST, "/api/query", &token(site, email), Some(sql)).await;
    if answer.status != StatusCode::OK {
        return Err(answer.status);
    }
    let rows: Vec<Value> = serde_json::from_slice(&answer.body).unwrap();
    Ok(rows.iter().map(|r| r["buoy_id"].as_str().unwrap().to_owned()).collect())
}

/// The buoys of `email`'s rows through REST (`GET /api/telemetry`, every row).
async fn visible(site: &Site, email: &str) -> Vec<String> {
    let answer = api(site, Method::GET, "/api/telemetry", &token(site, email), None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let body: Value = serde_json::from_slice(&answer.body).unwrap();
    let mut ids: Vec<String> =
        body["rows"].as_array().unwrap().iter().map(|r| r["buoy_id"].as_str().unwrap().to_owned()).collect();
    ids.dedup();
    ids
}

fn location(page: &Page) -> String {
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.text());
    page.header("location").to_owned()
}

/// Pays the hosted test payment at `payment_path` with the success card; the page it returns to.
async fn pay(browser: &mut Browser<'_>, payment_path: &str) -> String {
    assert!(payment_path.starts_with("/pay/test/"), "{payment_path}");
    let form = browser.get(payment_path).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.text());
    let csrf = form.attr("input[name=csrf]", "value");
    let paid =
        browser.post_raw(payment_path, &[("csrf", &csrf), ("card_number", "4242 4242 4242 4242")]).await;
    location(&paid)
}

/// Subscribes through the plans page's form and pays; the subscription id and charge id.
async fn subscribe(browser: &mut Browser<'_>, offer: &str, interval: &str) -> (String, String) {
    let plans = browser.get("/shop/plans").await;
    assert_eq!(plans.status, StatusCode::OK);
    assert_eq!(plans.count(&format!("form[action='/subscriptions'] input[name=offer][value={offer}]")), 1);
    let started = browser.post("/subscriptions", &[("offer", offer), ("interval", interval)]).await;
    let back = pay(browser, &location(&started)).await;
    let charge_id = back.strip_prefix("/subscription-charges/").unwrap().to_owned();
    let confirmation = browser.get(&back).await;
    assert_eq!(confirmation.status, StatusCode::OK);
    assert_eq!(confirmation.first_text("h1"), "Subscription payment confirmed");
    let link = confirmation.attr("a[href^='/subscriptions/']", "href");
    (link.strip_prefix("/subscriptions/").unwrap().to_owned(), charge_id)
}

fn state_of(site: &Site, email: &str, id: &str) -> SubscriptionState {
    site.shop.subscription(&site.caller(email), id).unwrap().subscription.state
}

/// Waits (at most [`TICKER_WAIT_MAX`]) until the background ticker has recorded `state`.
async fn ticker_records(site: &Site, email: &str, id: &str, state: SubscriptionState) {
    let deadline = tokio::time::Instant::now() + TICKER_WAIT_MAX;
    loop {
        let stored = site.shop.subscription_record(id).unwrap().map(|s| s.state);
        if stored == Some(state) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ticker never recorded {state} for {email}: {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn activation_grants_the_plans_buoys_and_a_lapse_ends_them() {
    let site = Site::start().await;
    seed_readings(&site).await;
    // No plan: nothing to read.
    assert_eq!(visible(&site, ALICE).await, Vec::<String>::new());

    // A caller verified before the purchase and kept, as a Postgres session keeps its caller
    // from its login: its policy (`policy_grant`, the path of `query_policy`) follows too.
    let held = site.caller(ALICE);
    assert_eq!(site.auth.policy_grant(&held).unwrap().buoys, BuoyScope::List(Vec::new()));
    let mut alice = Browser::login(&site, ALICE).await;
    let none = alice.get("/subscription").await;
    assert_shop_page(&none, StatusCode::OK);
    assert_eq!(none.first_text("main p"), "You have no data subscription yet.");
    let (id, charge) = subscribe(&mut alice, "coastal", "monthly").await;
    assert_shop_page(&alice.get(&format!("/subscription-charges/{charge}")).await, StatusCode::OK);
    let coastal_scope = BuoyScope::List(DEMO_COASTAL_BUOYS.iter().map(|b| (*b).to_owned()).collect());
    assert_eq!(site.auth.policy_grant(&held).unwrap().buoys, coastal_scope);
    // Access applies with the commit of the paying event: the first query after the
    // confirmation page already sees the plan (well within 5 s).
    let coastal = vec![COASTAL_BUOY.to_owned()];
    assert_eq!(visible(&site, ALICE).await, coastal);
    // `/api/auth/me` names the plan in force: the subscription's.
    let plan = site.auth.policy_grant(&held).unwrap().plan_id;
    assert!(plan.is_some());
    let me = api(&site, Method::GET, "/api/auth/me", &token(&site, ALICE), None).await;
    let me: Value = serde_json::from_slice(&me.body).unwrap();
    assert_eq!(me["plan_id"].as_str(), plan.as_deref());
    // The dashboard offers the plan's buoys only.
    let dashboard = alice.get("/dashboard").await;
    assert_eq!(dashboard.status, StatusCode::OK);
    assert!(dashboard.text().contains(COASTAL_BUOY) && !dashboard.text().contains(OTHER_BUOY));

    let page = alice.get(&format!("/subscriptions/{id}")).await;
    // Like every shop page: the CSP, no script, parsed without errors, every control labelled.
    assert_shop_page(&page, StatusCode::OK);
    assert_shop_page(
        &alice.get(&format!("/subscriptions/{id}/change?offer=research&interval=monthly")).await,
        StatusCode::OK,
    );
    assert_shop_page(&alice.get("/shop/plans").await, StatusCode::OK);
    assert_eq!(page.first_text("dd.plan"), "Coastal");
    assert_eq!(page.first_text("dd.access"), "yes");
    assert_eq!(page.first_text("dd.renewal"), "renews");
    assert_eq!(page.count("tr[data-charge] a[href^='/invoices/']"), 1);
    let view = site.shop.subscription(&site.caller(ALICE), &id).unwrap();
    let start = view.subscription.period_start_s;
    assert_eq!(view.subscription.period_end_s, add_months(start, 1));

    // One second before the period end: still readable; at the end, without a renewal
    // payment: nothing, at once (access is computed from the clock at every query).
    site.clock.set_s(u64::try_from(view.subscription.period_end_s - 1).unwrap());
    assert_eq!(visible(&site, ALICE).await, coastal);
    site.clock.set_s(u64::try_from(view.subscription.period_end_s).unwrap());
    assert_eq!(visible(&site, ALICE).await, Vec::<String>::new());
    assert_eq!(site.auth.policy_grant(&held).unwrap().buoys, BuoyScope::List(Vec::new()));
    ticker_records(&site, ALICE, &id, SubscriptionState::Lapsed).await;
    assert_eq!(state_of(&site, ALICE, &id), SubscriptionState::Lapsed);
    let page = alice.get(&format!("/subscriptions/{id}")).await;
    assert_eq!(page.first_text("span.state"), "lapsed (not renewed)");
    assert_eq!(page.first_text("dd.access"), "none");
    // The ticker's change is audited.
    let audit = std::fs::read_to_string(site.dir.path().join("audit").join(bluewave_web::AUDIT_FILE_NAME))
        .unwrap_or_default();
    assert!(audit.contains("shop.subscription.lapsed") && audit.contains("lapsed_unpaid"), "{audit}");
}

#[tokio::test]
async fn cancel_at_period_end_keeps_access_until_the_period_ends() {
    let site = Site::start().await;
    seed_readings(&site).await;
    let mut alice = Browser::login(&site, ALICE).await;
    let (id, _) = subscribe(&mut alice, "coastal", "annual").await;
    let cancelled = alice.post(&format!("/subscriptions/{id}/renewal"), &[("renew", "off")]).await;
    assert_eq!(location(&cancelled), format!("/subscriptions/{id}"));
    let page = alice.get(&format!("/subscriptions/{id}")).await;
    assert_eq!(page.first_text("dd.renewal"), "ends (cancelled); access until then");
    let view = site.shop.subscription(&site.caller(ALICE), &id).unwrap();
    assert_eq!(view.subscription.period_end_s, add_months(view.subscription.period_start_s, 12));
    // Turning renewal back off twice is fine; a renewal payment is refused while it is off.
    assert_eq!(alice.post(&format!("/subscriptions/{id}/renew"), &[]).await.status, StatusCode::BAD_REQUEST);

    site.clock.set_s(u64::try_from(view.subscription.period_end_s - 1).unwrap());
    assert_eq!(visible(&site, ALICE).await, [COASTAL_BUOY]);
    site.clock.set_s(u64::try_from(view.subscription.period_end_s).unwrap());
    assert_eq!(visible(&site, ALICE).await, Vec::<String>::new());
    ticker_records(&site, ALICE, &id, SubscriptionState::Cancelled).await;
    // A final state refuses every change with the state machine's reason (409).
    let refused = alice.post(&format!("/subscriptions/{id}/renewal"), &[("renew", "on")]).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(refused.text().contains("a subscription that is cancelled cannot change its renewal"));
    // A new subscription may start after it.
    let plans = alice.get("/shop/plans").await;
    assert_eq!(plans.count("form[action='/subscriptions']"), 3);
}

#[tokio::test]
async fn a_renewal_paid_in_the_window_carries_access_into_the_next_period_with_its_invoice() {
    let site = Site::start().await;
    seed_readings(&site).await;
    let mut alice = Browser::login(&site, ALICE).await;
    let (id, first_charge) = subscribe(&mut alice, "coastal", "monthly").await;
    let first = site.shop.subscription_charge(&site.caller(ALICE), &first_charge).unwrap();
    let view = site.shop.subscription(&site.caller(ALICE), &id).unwrap();
    let end = view.subscription.period_end_s;
    // Before the window: refused with the date it opens.
    let early = alice.post(&format!("/subscriptions/{id}/renew"), &[]).await;
    assert_eq!(early.status, StatusCode::BAD_REQUEST);
    assert!(early.text().contains("the renewal can be paid from"));
    site.clock.set_s(u64::try_from(end - 3 * 86_400).unwrap());
    let page = alice.get(&format!("/subscriptions/{id}")).await;
    assert_eq!(page.count(&format!("form[action='/subscriptions/{id}/renew']")), 1);
    let started = alice.post(&format!("/subscriptions/{id}/renew"), &[]).await;
    let back = pay(&mut alice, &location(&started)).await;
    let renewal_id = back.strip_prefix("/subscription-charges/").unwrap();
    let renewal = site.shop.subscription_charge(&site.caller(ALICE), renewal_id).unwrap();
    assert_eq!((renewal.period_start_s, renewal.period_end_s), (end, add_months(end, 1)));
    assert_eq!(renewal.totals.total.minor, 5_880, "EUR 49.00 + 20 % tax");
    assert_eq!(renewal.invoice_number, Some(first.invoice_number.unwrap() + 1), "gapless");
    assert_eq!(
        alice.get(&format!("/subscriptions/{id}")).await.first_text("dd.renewal"),
        "the next period is paid"
    );

    site.clock.set_s(u64::try_from(end + 10).unwrap());
    assert_eq!(visible(&site, ALICE).await, [COASTAL_BUOY]);
    let deadline = tokio::time::Instant::now() + TICKER_WAIT_MAX;
    loop {
        let stored = site.shop.subscription_record(&id).unwrap().map(|s| (s.period_start_s, s.period_end_s));
        if stored == Some((end, add_months(end, 1))) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not rolled over: {stored:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The renewal's invoice is the customer's, as an HTML page.
    let invoice = alice.get(&format!("/invoices/{}", renewal.invoice_number.unwrap())).await;
    assert_eq!(invoice.status, StatusCode::OK);
    assert!(invoice.text().contains("Coastal data plan, monthly"));
    assert!(invoice.text().contains("EUR 58.80"));
}

#[tokio::test]
async fn an_upgrade_is_prorated_exactly_and_a_downgrade_waits_for_the_period_end() {
    let site = Site::start().await;
    seed_readings(&site).await;
    // The worked example of `shop::billing`: a period from 2027-04-01 (30 days).
    let april = utc_midnight(2027, 4, 1);
    site.clock.set_s(u64::try_from(april).unwrap());
    let mut alice = Browser::login(&site, ALICE).await;
    let (id, _) = subscribe(&mut alice, "coastal", "monthly").await;
    let page = alice.get(&format!("/subscriptions/{id}")).await;
    assert_eq!(page.first_text("dd.period"), "2027-04-01 00:00 UTC to 2027-05-01 00:00 UTC");

    site.clock.set_s(u64::try_from(utc_midnight(2027, 4, 21)).unwrap());
    let quote = alice.get(&format!("/subscriptions/{id}/change?offer=research&interval=monthly")).await;
    assert_eq!(quote.status, StatusCode::OK, "{}", quote.text());
    assert_eq!(quote.first_text("td.credit"), "-EUR 16.33");
    assert_eq!(quote.first_text("td.cost"), "EUR 66.33");
    assert_eq!(quote.first_text("p.due strong"), "EUR 60.00");
    let csrf = quote.attr("input[name=csrf]", "value");
    let change = alice
        .post_raw(
            &format!("/subscriptions/{id}/change"),
            &[("csrf", &csrf), ("offer", "research"), ("interval", "monthly")],
        )
        .await;
    let payment_path = location(&change);
    let hosted = alice.get(&payment_path).await;
    assert!(hosted.text().contains("EUR 60.00"), "{}", hosted.text());
    // Not paid yet: still the Coastal plan.
    assert_eq!(visible(&site, ALICE).await, [COASTAL_BUOY]);
    let back = pay(&mut alice, &payment_path).await;
    let charge = site
        .shop
        .subscription_charge(&site.caller(ALICE), back.strip_prefix("/subscription-charges/").unwrap())
        .unwrap();
    let proration = charge.proration.unwrap();
    assert_eq!((proration.credit_minor, proration.cost_minor, proration.due_minor), (1_633, 6_633, 5_000));
    assert_eq!(
        (charge.totals.subtotal.minor, charge.totals.tax.minor, charge.totals.total.minor),
        (5_000, 1_000, 6_000)
    );
    // Research covers every buoy, from the payment on; the period end stays.
    assert_eq!(visible(&site, ALICE).await, [COASTAL_BUOY, OTHER_BUOY]);
    let page = alice.get(&format!("/subscriptions/{id}")).await;
    assert_eq!(page.first_text("dd.plan"), "Research");
    assert_eq!(page.first_text("dd.period"), "2027-04-01 00:00 UTC to 2027-05-01 00:00 UTC");

    // A downgrade: nothing due, applies at the period end (the renewal is priced by it).
    let quote = alice.get(&format!("/subscriptions/{id}/change?offer=coastal&interval=monthly")).await;
    assert!(
        quote.first_text("p.due").contains("applies at the end of the current period, 2027-05-01 00:00 UTC")
    );
    assert_eq!(quote.count("td.credit"), 0);
    let scheduled = alice
        .post(&format!("/subscriptions/{id}/change"), &[("offer", "coastal"), ("interval", "monthly")])
        .await;
    assert_eq!(location(&scheduled), format!("/subscriptions/{id}"));
    assert_eq!(visible(&site, ALICE).await.len(), 2, "still Research until the period end");
    site.clock.set_s(u64::try_from(utc_midnight(2027, 4, 28)).unwrap());
    let started = alice.post(&format!("/subscriptions/{id}/renew"), &[]).await;
    let back = pay(&mut alice, &location(&started)).await;
    let renewal = site
        .shop
        .subscription_charge(&site.caller(ALICE), back.strip_prefix("/subscription-charges/").unwrap())
        .unwrap();
    assert_eq!((renewal.offer_id.as_str(), renewal.totals.total.minor), ("coastal", 5_880));
    site.clock.set_s(u64::try_from(utc_midnight(2027, 5, 1)).unwrap());
    assert_eq!(visible(&site, ALICE).await, [COASTAL_BUOY], "the downgrade applied");

    // The same plan again, or a plan not on sale: refused with the reason.
    let same = alice.get(&format!("/subscriptions/{id}/change?offer=coastal&interval=monthly")).await;
    assert_eq!(same.status, StatusCode::BAD_REQUEST);
    assert!(same.text().contains("that is your current plan"));
    let bad = alice.get(&format!("/subscriptions/{id}/change?offer=coastal&interval=weekly")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

fn event(id: &str, kind: &str, created: i64, payment: &bluewave_web::shop_api::Payment) -> Vec<u8> {
    serde_json::to_vec(&json!({ "id": id, "type": kind, "created": created, "data": {
        "payment_id": payment.id, "order_id": payment.order_id, "amount": payment.amount.minor,
        "currency": payment.amount.currency.code() } }))
    .unwrap()
}

async fn deliver(site: &Site, body: &[u8]) -> Page {
    let now =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs())
            .unwrap();
    let header = sign_payload(site.shop.webhook_secret(), now, body);
    site.send(
        Method::POST,
        "/shop/webhooks/payments",
        &[("stripe-signature", &header)],
        Some("application/json"),
        body.to_vec(),
    )
    .await
}

#[tokio::test]
async fn subscription_webhooks_are_idempotent_and_order_independent() {
    let site = Site::start().await;
    seed_readings(&site).await;
    // An analyst subscribes here: analysts also run SQL (customers' role has REST and pages).
    let admin = site.caller(ADMIN);
    let new = NewUser {
        email: ANALYST.into(),
        password: Secret::new(PASSWORD),
        role: Role::Analyst,
        plan_id: None,
    };
    site.auth.create_user(&admin, new).unwrap();
    // No plan: a quota of nothing (429).
    assert_eq!(sql_buoys(&site, ANALYST).await, Err(StatusCode::TOO_MANY_REQUESTS));
    let alice = site.caller(ANALYST);
    let (subscription, hosted) = site.shop.subscribe(&alice, "coastal", BillingInterval::Monthly).unwrap();
    let payment = site.shop.payment(&alice, &hosted.id).unwrap();
    assert!(payment.order_id.starts_with("sc_"));

    // A failure event made later than the success arrives first; then the success, its replay,
    // a second success event, and a stale failure.
    let outcome = |page: Page| serde_json::from_slice::<Value>(&page.body).unwrap()["outcome"].clone();
    assert_eq!(
        outcome(deliver(&site, &event("evt_f2", "payment.requires_action", 200, &payment)).await),
        "requires_action"
    );
    assert_eq!(visible(&site, ANALYST).await, Vec::<String>::new(), "not active before the success");
    assert_eq!(
        outcome(deliver(&site, &event("evt_ok", "payment.succeeded", 100, &payment)).await),
        "subscription_activated"
    );
    assert_eq!(
        outcome(deliver(&site, &event("evt_ok", "payment.succeeded", 100, &payment)).await),
        "duplicate"
    );
    assert_eq!(
        outcome(deliver(&site, &event("evt_ok2", "payment.succeeded", 101, &payment)).await),
        "already_paid"
    );
    assert_eq!(
        outcome(deliver(&site, &event("evt_f1", "payment.failed", 50, &payment)).await),
        "ignored_after_success"
    );
    let view = site.shop.subscription(&alice, &subscription.id).unwrap();
    assert_eq!(view.subscription.state, SubscriptionState::Active);
    assert_eq!(view.charges.len(), 1);
    assert_eq!(view.charges[0].invoice_number, Some(1), "one invoice, once");
    assert_eq!(visible(&site, ANALYST).await, [COASTAL_BUOY]);
    assert_eq!(sql_buoys(&site, ANALYST).await, Ok(vec![COASTAL_BUOY.to_owned()]));
    // A bad signature changes nothing.
    let body = event("evt_forged", "payment.succeeded", 300, &payment);
    let forged = site
        .send(
            Method::POST,
            "/shop/webhooks/payments",
            &[("stripe-signature", "t=1,v1=00")],
            Some("application/json"),
            body,
        )
        .await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST);

    // Bob starts twice: the first start is replaced; its late payment activates nothing and
    // is recorded for a refund.
    let bob = site.caller(BOB);
    let (first, first_hosted) = site.shop.subscribe(&bob, "research", BillingInterval::Annual).unwrap();
    let (second, _) = site.shop.subscribe(&bob, "coastal", BillingInterval::Monthly).unwrap();
    assert_eq!(
        site.shop.subscription(&bob, &first.id).unwrap().subscription.state,
        SubscriptionState::Expired
    );
    let late = site.shop.payment(&bob, &first_hosted.id).unwrap();
    assert_eq!(
        outcome(deliver(&site, &event("evt_late", "payment.succeeded", 400, &late)).await),
        "paid_but_subscription_not_payable"
    );
    assert_eq!(visible(&site, BOB).await, Vec::<String>::new());
    assert_eq!(
        site.shop.subscription(&bob, &second.id).unwrap().subscription.state,
        SubscriptionState::Incomplete
    );
    // An unpaid start expires after its payment window (the ticker records it).
    site.clock.advance_s(24 * 3_600);
    ticker_records(&site, BOB, &second.id, SubscriptionState::Expired).await;
}

#[tokio::test]
async fn another_customers_subscription_charge_and_invoice_are_not_found() {
    let site = Site::start().await;
    let mut alice = Browser::login(&site, ALICE).await;
    let (id, charge) = subscribe(&mut alice, "coastal", "monthly").await;
    let invoice =
        site.shop.subscription_charge(&site.caller(ALICE), &charge).unwrap().invoice_number.unwrap();
    let mut bob = Browser::login(&site, BOB).await;
    for path in [
        format!("/subscriptions/{id}"),
        format!("/subscriptions/{id}/change?offer=research&interval=monthly"),
        format!("/subscription-charges/{charge}"),
        format!("/invoices/{invoice}"),
    ] {
        assert_eq!(bob.get(&path).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    for (path, fields) in [
        (format!("/subscriptions/{id}/renewal"), vec![("renew", "off")]),
        (format!("/subscriptions/{id}/renew"), vec![]),
        (format!("/subscriptions/{id}/change"), vec![("offer", "research"), ("interval", "monthly")]),
        (format!("/subscription-charges/{charge}/pay"), vec![]),
    ] {
        assert_eq!(bob.post(&path, &fields).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    // A form without the CSRF token is refused before anything changes.
    let forged = bob.post_raw(&format!("/subscriptions/{id}/renewal"), &[("renew", "off")]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(site.shop.subscription(&site.caller(ALICE), &id).unwrap().subscription.renew);
    // Bob's own page has no subscription.
    assert_eq!(bob.get("/subscription").await.first_text("main p"), "You have no data subscription yet.");
}

#[test]
fn a_format_1_store_is_migrated_and_a_newer_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let auth = std::sync::Arc::new(
        bluewave_web::AuthService::open(dir.path(), crate::shop_store::fast_auth()).unwrap(),
    );
    let set_version = |version: u64| {
        let db = redb::Database::create(dir.path().join(SHOP_FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<&str, u64>::new("meta"))
            .unwrap()
            .insert("format_version", version)
            .unwrap();
        txn.commit().unwrap();
    };
    drop(ShopService::open(dir.path(), ShopConfig::default(), std::sync::Arc::clone(&auth)).unwrap());
    set_version(1);
    let shop = ShopService::open(dir.path(), ShopConfig::default(), std::sync::Arc::clone(&auth)).unwrap();
    assert_eq!(shop.format_version().unwrap(), SHOP_FORMAT_VERSION);
    drop(shop);
    set_version(SHOP_FORMAT_VERSION + 1);
    match ShopService::open(dir.path(), ShopConfig::default(), auth) {
        Err(ShopError::FormatVersion { found, supported }) => {
            assert_eq!((found, supported), (SHOP_FORMAT_VERSION + 1, SHOP_FORMAT_VERSION));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_unpaid_order_expires_after_its_limit_and_releases_its_stock() {
    let site = Site::start().await;
    let alice = site.caller(ALICE);
    assert_eq!(site.shop.product("tidewell-x20").unwrap().stock, 4);
    site.shop.cart_add(&alice, "tidewell-x20", 3).unwrap();
    let order = site.shop.checkout(&alice, crate::shop_store::address()).unwrap();
    assert_eq!(site.shop.product("tidewell-x20").unwrap().stock, 1);
    // One second before the limit: still waiting (a run now cancels nothing).
    site.clock.advance_s(u64::try_from(ORDER_PAYMENT_TTL_S - 1).unwrap());
    assert_eq!(site.shop.expire_unpaid_orders().unwrap(), 0);
    assert_eq!(site.order_state(&order.id), "pending_payment");
    site.clock.advance_s(1);
    let deadline = tokio::time::Instant::now() + TICKER_WAIT_MAX;
    while site.order_state(&order.id) != "cancelled" {
        assert!(tokio::time::Instant::now() < deadline, "the ticker never expired the order");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(site.shop.product("tidewell-x20").unwrap().stock, 4, "stock released");
    // Paying it now is refused by the state machine.
    let refused = site.shop.start_payment(&alice, &order.id).unwrap_err();
    assert_eq!(refused.to_string(), "an order that is cancelled cannot be paid");
    let audit =
        std::fs::read_to_string(site.dir.path().join("audit").join(bluewave_web::AUDIT_FILE_NAME)).unwrap();
    assert_eq!(audit.matches("\"action\":\"shop.order.expire\"").count(), 1);
}
