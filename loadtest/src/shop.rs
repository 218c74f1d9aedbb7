//! The `shop` run: people in browsers. Three phases against a server whose shop holds the
//! demo catalogue (`bluewave shop seed-demo`) and whose buoys were seeded with data:
//!
//! 1. `login`: browser sign-ins (`GET /login`, `POST /login` until the session cookie) by
//!    [`ShopConfig::login_workers`] closed-loop workers for [`ShopConfig::login_duration`],
//!    each sign-in from its own loopback source address (the server's per-address login limit
//!    is not what is measured).
//! 2. `login_mfa`: the same for accounts with TOTP, answering `POST /login/mfa` with the code
//!    of a step the account has not used yet (the server refuses a replayed step, so each of
//!    the [`ShopConfig::mfa_users`] accounts signs in at most about once per 30 s step; a
//!    worker that finds every account used waits for the next step and the wait is counted).
//! 3. `sessions`: [`ShopConfig::sessions`] signed-in browsers, each on its own keep-alive
//!    connection, each in a closed loop of a weighted mix of page views and a checkout with a
//!    think time between answers (exponential, mean [`ShopConfig::think_ms`]); latency is
//!    from the request to the last byte of the answer.
//!
//! Setup (not measured): a plan over every buoy, the accounts (customers on that plan) through
//! `POST /api/rbac/users`, MFA enrolment through `POST /api/auth/mfa/enrol|confirm`, and stock
//! raised through the operator pages so checkouts never run out.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::analysts::QueryData;
use crate::browser::Browser;
use crate::error::{Error, Result};
use crate::https::{ApiClient, LOGIN_RETRIES_MAX, RETRY_AFTER_S_MAX, status_text};
use crate::latency::LatencyRecorder;
use crate::report::QueryFigures;
use crate::rng::SeededRng;
use crate::target::ApiAccess;

/// Most concurrent sessions of the `sessions` phase.
pub const SESSIONS_MAX: usize = 5_000;
/// Most MFA accounts enrolled.
pub const MFA_USERS_MAX: usize = 10_000;
/// Most sign-in workers.
pub const LOGIN_WORKERS_MAX: usize = 256;
/// Concurrent requests of the setup (account creation, enrolment, first sign-ins).
const SETUP_CONCURRENCY: usize = 4;
/// Password of every account the run creates (12+ characters, not a common one).
const PASSWORD: &str = "loadtest-shop-Passw0rd";
/// The demo catalogue's product ids (`bluewave shop seed-demo`).
pub const DEMO_PRODUCTS: [&str; 3] = ["aquabuoy-c200", "tidewell-x20", "sunpure-s5"];
/// Stock set on every demo product before the run (checkouts must not sell out).
const STOCK: &str = "1000000";
/// Length of a TOTP step, s (the server's `TOTP_STEP_S`).
const TOTP_STEP_S: u64 = 30;
/// The dashboard's range: a day of data time from the workload's start.
const DASHBOARD_RANGE_NS: i64 = 86_400_000_000_000;
/// Metrics on one dashboard view (the server's `METRICS_SELECTED_MAX`).
const DASHBOARD_METRICS_MAX: usize = 8;
/// Longest think time drawn, as a multiple of the mean (keeps the exponential bounded).
const THINK_TAIL_FACTOR: f64 = 8.0;

/// One operation of the `sessions` phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShopOp {
    /// `GET /shop`.
    Catalogue,
    /// `GET /shop/products/{id}`.
    Product,
    /// `GET /account`.
    Account,
    /// `GET /dashboard` for one buoy, 8 metrics, a day.
    Dashboard,
    /// `POST /cart/add` then `POST /checkout` (an order awaiting payment), then the order is
    /// cancelled (not timed).
    Checkout,
}

impl ShopOp {
    const ALL: [ShopOp; 5] = [Self::Catalogue, Self::Product, Self::Account, Self::Dashboard, Self::Checkout];

    /// Its name in the mix and the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::Catalogue => "catalogue",
            Self::Product => "product",
            Self::Account => "account",
            Self::Dashboard => "dashboard",
            Self::Checkout => "checkout",
        }
    }
}

/// The default mix of the `sessions` phase.
pub const SHOP_MIX_DEFAULT: &str = "catalogue=4,product=4,account=2,dashboard=1,checkout=1";

/// Weighted operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShopMix {
    weights: Vec<(ShopOp, u32)>,
    total: u32,
}

impl ShopMix {
    /// Parses `name=weight,...` (names of [`ShopOp`]; weights 0-1000, at least one above 0).
    pub fn parse(text: &str) -> Result<Self> {
        let mut weights = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| Error::Config(format!("shop mix: {part:?} is not name=weight")))?;
            let op = ShopOp::ALL
                .into_iter()
                .find(|op| op.name() == name.trim())
                .ok_or_else(|| Error::Config(format!("shop mix: unknown operation {name:?}")))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .ok()
                .filter(|w| *w <= 1_000)
                .ok_or_else(|| Error::Config(format!("shop mix: weight of {name} must be 0-1000")))?;
            if weights.iter().any(|(o, _)| *o == op) {
                return Err(Error::Config(format!("shop mix: {name} given twice")));
            }
            weights.push((op, weight));
        }
        let total = weights.iter().map(|(_, w)| w).sum();
        if total == 0 {
            return Err(Error::Config("shop mix: at least one weight must be above 0".into()));
        }
        Ok(Self { weights, total })
    }

    fn pick(&self, rng: &mut SeededRng) -> ShopOp {
        let mut roll = rng.below(u64::from(self.total)) as u32;
        for (op, weight) in &self.weights {
            if roll < *weight {
                return *op;
            }
            roll -= weight;
        }
        self.weights.last().map_or(ShopOp::Catalogue, |(op, _)| *op)
    }

    fn ops(&self) -> impl Iterator<Item = ShopOp> + '_ {
        self.weights.iter().filter(|(_, w)| *w > 0).map(|(op, _)| *op)
    }
}

/// The knobs of a `shop` run.
#[derive(Clone, Debug, PartialEq)]
pub struct ShopConfig {
    /// Signed-in browsers of the `sessions` phase (also the accounts of the `login` phase).
    pub sessions: usize,
    /// Mean think time between a session's answer and its next request, ms (0 = none).
    pub think_ms: u64,
    /// Closed-loop workers of the two sign-in phases.
    pub login_workers: usize,
    /// Length of each sign-in phase.
    pub login_duration: Duration,
    /// Accounts with TOTP for the `login_mfa` phase (0 skips it).
    pub mfa_users: usize,
    /// The `sessions` phase's measured period.
    pub duration: Duration,
    /// Its warm-up.
    pub warmup: Duration,
    /// The `sessions` mix.
    pub mix: ShopMix,
    /// Seed of the choices and think times.
    pub seed: u64,
}

impl ShopConfig {
    /// Checks the knobs.
    pub fn validate(&self) -> Result<()> {
        if self.sessions == 0 || self.sessions > SESSIONS_MAX {
            return Err(Error::Config(format!("sessions must be 1..={SESSIONS_MAX}")));
        }
        if self.mfa_users > MFA_USERS_MAX {
            return Err(Error::Config(format!("mfa users must be at most {MFA_USERS_MAX}")));
        }
        if self.login_workers == 0 || self.login_workers > LOGIN_WORKERS_MAX {
            return Err(Error::Config(format!("login workers must be 1..={LOGIN_WORKERS_MAX}")));
        }
        if self.duration.is_zero() || self.login_duration.is_zero() {
            return Err(Error::Config("durations must be above 0".into()));
        }
        Ok(())
    }
}

/// What the run did besides its per-operation figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShopFigures {
    /// Signed-in browsers of the `sessions` phase.
    pub sessions: u64,
    /// Mean think time, ms.
    pub think_ms: u64,
    /// Sign-in workers.
    pub login_workers: u64,
    /// Accounts with TOTP.
    pub mfa_users: u64,
    /// Seconds of setup (accounts, enrolment, stock, first sign-ins).
    pub setup_s: f64,
    /// Times an MFA sign-in worker found every account's next step used and waited.
    pub mfa_step_waits: u64,
    /// Requests per second of the `sessions` phase (a checkout counts two).
    pub session_requests_per_s: f64,
}

/// The outcome: figures per operation (`login`, `login_mfa`, then the mix's) and errors.
#[derive(Debug, Default)]
pub struct ShopRun {
    /// Per operation.
    pub figures: Vec<QueryFigures>,
    /// Failures by operation and reason.
    pub errors: BTreeMap<String, u64>,
    /// The rest.
    pub shop: ShopFigures,
}

#[derive(Default)]
struct Tally {
    completed: u64,
    failed: u64,
    latency: LatencyRecorder,
}

impl Tally {
    fn figures(&self, name: &str, seconds: f64) -> QueryFigures {
        QueryFigures {
            name: name.to_owned(),
            completed: self.completed,
            failed: self.failed,
            queries_per_s: self.completed as f64 / seconds,
            latency: self.latency.summary(),
        }
    }

    fn merge(&mut self, other: &Tally) {
        self.completed += other.completed;
        self.failed += other.failed;
        self.latency.merge(&other.latency);
    }
}

/// Hands out loopback source addresses `127.1.0.1`, `127.1.0.2`, ... (one per sign-in).
#[derive(Default)]
struct SourceAddresses(AtomicU64);

impl SourceAddresses {
    fn next(&self) -> IpAddr {
        let n = self.0.fetch_add(1, Ordering::Relaxed) % (1 << 22);
        let n = u32::try_from(n).unwrap_or(0) + 1;
        IpAddr::V4(Ipv4Addr::new(127, 64 + (n >> 16) as u8, (n >> 8) as u8, n as u8))
    }
}

fn email(index: usize) -> String {
    format!("shop-{index:06}@loadtest.example")
}

fn note_error(errors: &mut BTreeMap<String, u64>, what: &str, error: &Error) {
    let text: String = error.to_string().chars().take(160).collect();
    *errors.entry(format!("{what}: {text}")).or_default() += 1;
}

fn unix_now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn totp_code(secret_base32: &str, time_s: u64) -> Result<String> {
    let secret = totp_rs::Secret::try_from_base32(secret_base32)
        .map_err(|e| Error::api("TOTP secret", format!("{e:?}")))?;
    let totp = totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(TOTP_STEP_S)
        .with_secret(secret)
        .build()
        .map_err(|e| Error::api("TOTP parameters", e))?;
    Ok(totp.generate(time_s).to_string())
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

#[derive(Deserialize)]
struct Enrolment {
    secret: String,
}

async fn expect_json<T: for<'de> Deserialize<'de>>(
    client: &mut ApiClient,
    path: &str,
    body: serde_json::Value,
    expected: &[StatusCode],
) -> Result<(StatusCode, Option<T>)> {
    let mut answer = client.call(Method::POST, path, Some(body.to_string()), None).await?;
    for _ in 0..LOGIN_RETRIES_MAX {
        if answer.status != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        let wait = answer.retry_after_s.unwrap_or(1).clamp(1, RETRY_AFTER_S_MAX);
        tokio::time::sleep(Duration::from_secs(wait)).await;
        answer = client.call(Method::POST, path, Some(body.to_string()), None).await?;
    }
    if !expected.contains(&answer.status) {
        return Err(Error::api(path.to_owned(), status_text(&answer)));
    }
    let parsed = serde_json::from_slice(&answer.body).ok();
    Ok((answer.status, parsed))
}

/// The accounts: `count` customers on a plan over every buoy (an existing one is kept).
async fn create_accounts(
    api: &ApiAccess,
    addresses: &SourceAddresses,
    first: usize,
    count: usize,
) -> Result<()> {
    let mut admin = api.client(Some(addresses.next())).await?;
    let plan = serde_json::json!({ "name": "loadtest shop", "buoys": null, "history_days": null,
        "daily_query_quota": null, "row_limit": null });
    let (_, created) =
        expect_json::<Created>(&mut admin, "/api/rbac/plans", plan, &[StatusCode::CREATED]).await?;
    let plan_id = created.ok_or_else(|| Error::api("/api/rbac/plans", "no id in the answer"))?.id;
    let next = Arc::new(AtomicU64::new(first as u64));
    let end = (first + count) as u64;
    let mut tasks = Vec::new();
    for _ in 0..SETUP_CONCURRENCY {
        let (api, next, plan_id) = (api.clone(), Arc::clone(&next), plan_id.clone());
        let ip = addresses.next();
        tasks.push(tokio::spawn(async move {
            let mut admin = api.client(Some(ip)).await?;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= end {
                    return Ok::<_, Error>(());
                }
                let body = serde_json::json!({ "email": email(index as usize), "password": PASSWORD,
                    "role": "customer", "plan_id": plan_id });
                expect_json::<serde_json::Value>(
                    &mut admin,
                    "/api/rbac/users",
                    body,
                    &[StatusCode::CREATED, StatusCode::CONFLICT],
                )
                .await?;
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|e| Error::Internal(format!("account task: {e}")))??;
    }
    Ok(())
}

/// Turns TOTP on for accounts `first..first + count`; their secrets and last used steps.
async fn enrol_mfa(
    api: &ApiAccess,
    addresses: &Arc<SourceAddresses>,
    first: usize,
    count: usize,
) -> Result<Vec<MfaAccount>> {
    let next = Arc::new(AtomicU64::new(first as u64));
    let end = (first + count) as u64;
    let mut tasks = Vec::new();
    for _ in 0..SETUP_CONCURRENCY {
        let (target, next, addresses) = (api.target.clone(), Arc::clone(&next), Arc::clone(addresses));
        tasks.push(tokio::spawn(async move {
            let mut enrolled = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= end {
                    return Ok::<_, Error>(enrolled);
                }
                let mut client = ApiClient::new(target.clone(), Some(addresses.next()));
                client.login(&email(index as usize), PASSWORD).await?;
                let (_, enrolment) = expect_json::<Enrolment>(
                    &mut client,
                    "/api/auth/mfa/enrol",
                    serde_json::json!({}),
                    &[StatusCode::OK],
                )
                .await?;
                let secret = enrolment.ok_or_else(|| Error::api("/api/auth/mfa/enrol", "no secret"))?.secret;
                let now = unix_now_s();
                let code = totp_code(&secret, now)?;
                expect_json::<serde_json::Value>(
                    &mut client,
                    "/api/auth/mfa/confirm",
                    serde_json::json!({ "code": code }),
                    &[StatusCode::OK],
                )
                .await?;
                enrolled.push(MfaAccount { index: index as usize, secret, last_step: now / TOTP_STEP_S });
            }
        }));
    }
    let mut all = Vec::with_capacity(count);
    for task in tasks {
        all.extend(task.await.map_err(|e| Error::Internal(format!("enrolment task: {e}")))??);
    }
    all.sort_by_key(|a| a.last_step);
    Ok(all)
}

/// An account with TOTP: its secret and the last step it used (the server refuses that step
/// and earlier ones).
#[derive(Clone)]
struct MfaAccount {
    index: usize,
    secret: String,
    last_step: u64,
}

/// Raises every demo product's stock through the operator pages (as the first admin).
async fn raise_stock(api: &ApiAccess, addresses: &SourceAddresses) -> Result<()> {
    let mut admin = Browser::new(api.target.clone(), Some(addresses.next()));
    admin.sign_in(&api.email, &api.password, None).await?;
    for id in DEMO_PRODUCTS {
        let path = format!("/operator/products/{id}");
        admin.page(&path).await?;
        admin.post_redirect(&format!("{path}/stock"), &[("stock", STOCK)]).await?;
    }
    Ok(())
}

/// Runs sign-ins with `workers` workers until `duration` has passed; `sign_in(index, ip)`
/// signs one account in.
async fn login_phase<F, Fut>(
    workers: usize,
    duration: Duration,
    sign_in: F,
) -> Result<(Tally, BTreeMap<String, u64>)>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let sign_in = sign_in.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut errors = BTreeMap::new();
            while Instant::now() < deadline {
                let started = Instant::now();
                match sign_in().await {
                    Ok(()) => {
                        tally.completed += 1;
                        tally.latency.record(started.elapsed());
                    }
                    Err(e) => {
                        tally.failed += 1;
                        note_error(&mut errors, "login", &e);
                    }
                }
            }
            (tally, errors)
        }));
    }
    let mut total = Tally::default();
    let mut errors = BTreeMap::new();
    for task in tasks {
        let (tally, errs) = task.await.map_err(|e| Error::Internal(format!("login task: {e}")))?;
        total.merge(&tally);
        for (k, v) in errs {
            *errors.entry(k).or_default() += v;
        }
    }
    Ok((total, errors))
}

/// Takes the MFA account that can sign in soonest and the step of its code, or the time to
/// wait when every account has used the steps the server accepts now (T and T+1).
async fn next_mfa_account(
    queue: &Mutex<VecDeque<MfaAccount>>,
) -> std::result::Result<(MfaAccount, u64), Duration> {
    let now = unix_now_s();
    let current = now / TOTP_STEP_S;
    let mut queue = queue.lock().await;
    let Some(front) = queue.pop_front() else { return Err(Duration::from_secs(1)) };
    let step = (front.last_step + 1).max(current);
    if step > current + 1 {
        queue.push_front(front);
        let wait_s = (current + 1) * TOTP_STEP_S - now;
        return Err(Duration::from_secs(wait_s.max(1)));
    }
    queue.push_back(MfaAccount { last_step: step, ..front.clone() });
    Ok((front, step))
}

/// `shop`: setup, then the two sign-in phases and the `sessions` phase.
pub async fn run_shop(config: &ShopConfig, api: &ApiAccess, data: Arc<QueryData>) -> Result<ShopRun> {
    config.validate()?;
    let setup_started = Instant::now();
    let addresses = Arc::new(SourceAddresses::default());
    create_accounts(api, &addresses, 0, config.sessions + config.mfa_users).await?;
    let mfa_accounts = enrol_mfa(api, &addresses, config.sessions, config.mfa_users).await?;
    raise_stock(api, &addresses).await?;
    let mut run = ShopRun::default();
    run.shop.sessions = config.sessions as u64;
    run.shop.think_ms = config.think_ms;
    run.shop.login_workers = config.login_workers as u64;
    run.shop.mfa_users = config.mfa_users as u64;

    // Phase 1: password sign-ins.
    let login_seconds = config.login_duration.as_secs_f64();
    let next_account = Arc::new(AtomicU64::new(0));
    let sessions = config.sessions as u64;
    let sign_in = {
        let (target, addresses) = (api.target.clone(), Arc::clone(&addresses));
        move || {
            let (target, addresses, next_account) =
                (target.clone(), Arc::clone(&addresses), Arc::clone(&next_account));
            async move {
                let index = next_account.fetch_add(1, Ordering::Relaxed) % sessions;
                let mut browser = Browser::new(target, Some(addresses.next()));
                browser.sign_in(&email(index as usize), PASSWORD, None).await
            }
        }
    };
    let (tally, errors) = login_phase(config.login_workers, config.login_duration, sign_in).await?;
    run.figures.push(tally.figures("login", login_seconds));
    run.errors.extend(errors);

    // Phase 2: sign-ins with TOTP.
    if !mfa_accounts.is_empty() {
        let queue = Arc::new(Mutex::new(VecDeque::from(mfa_accounts)));
        let waits = Arc::new(AtomicU64::new(0));
        let sign_in = {
            let (target, addresses, waits) = (api.target.clone(), Arc::clone(&addresses), Arc::clone(&waits));
            move || {
                let (target, addresses, queue, waits) =
                    (target.clone(), Arc::clone(&addresses), Arc::clone(&queue), Arc::clone(&waits));
                async move {
                    let (account, step) = loop {
                        match next_mfa_account(&queue).await {
                            Ok(found) => break found,
                            Err(wait) => {
                                waits.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(wait).await;
                            }
                        }
                    };
                    let code = totp_code(&account.secret, step * TOTP_STEP_S)?;
                    let mut browser = Browser::new(target, Some(addresses.next()));
                    browser.sign_in(&email(account.index), PASSWORD, Some(&code)).await
                }
            }
        };
        let (tally, errors) = login_phase(config.login_workers, config.login_duration, sign_in).await?;
        run.figures.push(tally.figures("login_mfa", login_seconds));
        run.errors.extend(errors);
        run.shop.mfa_step_waits = waits.load(Ordering::Relaxed);
    }

    // Phase 3: signed-in sessions browsing and buying.
    let mut browsers = Vec::with_capacity(config.sessions);
    {
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..SETUP_CONCURRENCY.max(config.login_workers) {
            let (target, addresses, next) = (api.target.clone(), Arc::clone(&addresses), Arc::clone(&next));
            let end = sessions;
            tasks.push(tokio::spawn(async move {
                let mut signed_in = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= end {
                        return Ok::<_, Error>(signed_in);
                    }
                    let mut browser = Browser::new(target.clone(), Some(addresses.next()));
                    browser.sign_in(&email(index as usize), PASSWORD, None).await?;
                    browser.page("/cart").await?;
                    signed_in.push(browser);
                }
            }));
        }
        for task in tasks {
            browsers.extend(task.await.map_err(|e| Error::Internal(format!("sign-in task: {e}")))??);
        }
    }
    run.shop.setup_s =
        setup_started.elapsed().as_secs_f64() - login_seconds * if run.figures.len() > 1 { 2.0 } else { 1.0 };
    let dashboard_path = dashboard_path(&data);
    let start = Instant::now();
    let measure_start = start + config.warmup;
    let deadline = measure_start + config.duration;
    let requests = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(browsers.len());
    for (n, mut browser) in browsers.into_iter().enumerate() {
        let mix = config.mix.clone();
        let (dashboard_path, requests) = (dashboard_path.clone(), Arc::clone(&requests));
        let mut rng = SeededRng::new(config.seed ^ (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let think_ms = config.think_ms;
        tasks.push(tokio::spawn(async move {
            let mut tallies: BTreeMap<ShopOp, Tally> = BTreeMap::new();
            let mut errors = BTreeMap::new();
            // Spread the sessions' first requests over one think time.
            if think_ms > 0 {
                tokio::time::sleep(Duration::from_millis(rng.below(think_ms))).await;
            }
            while Instant::now() < deadline {
                let op = mix.pick(&mut rng);
                let started = Instant::now();
                let outcome = session_op(&mut browser, op, &dashboard_path, &mut rng).await;
                let tally = tallies.entry(op).or_default();
                match outcome {
                    Ok((sent, finished)) => {
                        if started >= measure_start && finished <= deadline {
                            requests.fetch_add(sent, Ordering::Relaxed);
                            tally.completed += 1;
                            tally.latency.record(finished - started);
                        }
                    }
                    Err(e) => {
                        tally.failed += 1;
                        note_error(&mut errors, op.name(), &e);
                    }
                }
                if think_ms > 0 {
                    tokio::time::sleep(think_time(&mut rng, think_ms)).await;
                }
            }
            (tallies, errors)
        }));
    }
    let mut merged: BTreeMap<ShopOp, Tally> = BTreeMap::new();
    for task in tasks {
        let (tallies, errors) = task.await.map_err(|e| Error::Internal(format!("session task: {e}")))?;
        for (op, tally) in tallies {
            merged.entry(op).or_default().merge(&tally);
        }
        for (k, v) in errors {
            *run.errors.entry(k).or_default() += v;
        }
    }
    let seconds = config.duration.as_secs_f64();
    let mut pages = Tally::default();
    for op in config.mix.ops() {
        let tally = merged.remove(&op).unwrap_or_default();
        if op != ShopOp::Checkout {
            pages.merge(&tally);
        }
        run.figures.push(tally.figures(op.name(), seconds));
    }
    run.figures.push(pages.figures("all_pages", seconds));
    run.shop.session_requests_per_s = requests.load(Ordering::Relaxed) as f64 / seconds;
    Ok(run)
}

/// Exponential think time with mean `mean_ms`, at most [`THINK_TAIL_FACTOR`] times the mean.
fn think_time(rng: &mut SeededRng, mean_ms: u64) -> Duration {
    let uniform = (rng.below(1 << 52) as f64 + 0.5) / (1u64 << 52) as f64;
    let factor = (-uniform.ln()).min(THINK_TAIL_FACTOR);
    Duration::from_secs_f64(mean_ms as f64 * factor / 1_000.0)
}

/// The dashboard of the first buoy: up to 8 metrics over a day of data time.
fn dashboard_path(data: &QueryData) -> String {
    let buoy = data.buoy_ids.first().map_or("lt-000000", String::as_str);
    let start = data.workload.config().start_ts;
    let mut path = format!("/dashboard?buoy={buoy}");
    for metric in data.workload.metric_names().iter().take(DASHBOARD_METRICS_MAX) {
        path.push_str("&metric=");
        path.push_str(metric.as_str());
    }
    path.push_str(&format!("&start={start}&end={}", start + DASHBOARD_RANGE_NS));
    path
}

/// One operation: the requests of its timed part and when that part ended. A checkout's
/// timed part is the cart line and the order; the order is then cancelled (untimed), which
/// releases its stock and keeps the account under the shop's limit of unpaid orders.
async fn session_op(
    browser: &mut Browser,
    op: ShopOp,
    dashboard_path: &str,
    rng: &mut SeededRng,
) -> Result<(u64, Instant)> {
    let product = DEMO_PRODUCTS[rng.below(DEMO_PRODUCTS.len() as u64) as usize % DEMO_PRODUCTS.len()];
    let path = match op {
        ShopOp::Catalogue => "/shop".to_owned(),
        ShopOp::Product => format!("/shop/products/{product}"),
        ShopOp::Account => "/account".to_owned(),
        ShopOp::Dashboard => dashboard_path.to_owned(),
        ShopOp::Checkout => {
            browser
                .post_redirect("/cart/add", &[("product", product), ("quantity", "1"), ("next", "/cart")])
                .await?;
            let order = browser
                .post_redirect(
                    "/checkout",
                    &[
                        ("name", "Load Test"),
                        ("line1", "1 Quay"),
                        ("line2", ""),
                        ("city", "Brest"),
                        ("postal_code", "29200"),
                        ("country", "FR"),
                    ],
                )
                .await?;
            let finished = Instant::now();
            if !order.starts_with("/orders/") {
                return Err(Error::api("/checkout", format!("redirected to {order}")));
            }
            browser.post_redirect(&format!("{order}/cancel"), &[]).await?;
            return Ok((2, finished));
        }
    };
    browser.page(&path).await?;
    Ok((1, Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_parses_and_refuses_what_it_cannot_run() {
        let mix = ShopMix::parse(SHOP_MIX_DEFAULT).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mix.total, 12);
        assert_eq!(mix.ops().count(), 5);
        assert!(ShopMix::parse("catalogue=0").is_err());
        assert!(ShopMix::parse("basket=1").is_err());
        assert!(ShopMix::parse("catalogue=1,catalogue=2").is_err());
        assert!(ShopMix::parse("catalogue").is_err());
    }

    #[test]
    fn source_addresses_are_distinct_loopback_addresses() {
        let addresses = SourceAddresses::default();
        let a = addresses.next();
        let b = addresses.next();
        assert_ne!(a, b);
        assert!(a.is_loopback() && b.is_loopback());
    }

    #[test]
    fn think_times_are_bounded() {
        let mut rng = SeededRng::new(7);
        for _ in 0..10_000 {
            let t = think_time(&mut rng, 100);
            assert!(t <= Duration::from_millis(800));
        }
    }

    #[test]
    fn totp_codes_follow_rfc_6238() {
        // RFC 6238 appendix B, SHA-1, T = 59 s: 94287082 (8 digits); the last 6 digits.
        let text = totp_rs::Secret::from(b"12345678901234567890".to_vec()).to_base32();
        assert_eq!(totp_code(&text, 59).unwrap_or_default(), "287082");
    }
}
