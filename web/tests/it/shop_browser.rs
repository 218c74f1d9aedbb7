//! The storefront in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`) driven over WebDriver by `fantoccini`, against the storefront on real
//! HTTPS on loopback (self-signed certificate: `--ignore-certificate-errors`). A customer
//! created through the service signs in, browses, adds a unit to the cart, checks out, pays on
//! the test provider's page with the success card, and sees the order paid and its invoice.
//! Screenshots of the main pages go to `<target tmp dir>/screenshots/` (the README shows the
//! committed copies in `docs/screenshots/`).
//!
//! A second visitor signs up, verifies the address through the link of the mail outbox,
//! subscribes to the Coastal plan on the plans page with the success card, sees the
//! subscription active, and watches the dashboard chart of a Coastal buoy grow as the buoy SDK
//! sends readings over QUIC to the wire server on the same engine.
//!
//! Skipped, with a printed reason, only when Chromium or chromedriver is missing AND
//! `BLUEWAVE_BROWSER_TESTS` is not `1`; `.ci/run` installs both and sets it, so CI never skips.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

use crate::account_flows::wait_for_mails;
use crate::shop_site::{ADMIN, PASSWORD, Site};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How many 100 ms polls chromedriver gets to listen.
const DRIVER_START_POLLS: u32 = 300;

/// chromedriver, ended when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_driver() -> (Driver, u16) {
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Driver(child);
    for _ in 0..DRIVER_START_POLLS {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (driver, port);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("chromedriver did not listen on {port}");
}

async fn browser(port: u16, profile: &Path, spki_sha256: &str) -> Client {
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--ignore-certificate-errors",
        // The server's self-signed certificate, trusted by its key: pages are a secure
        // context, so `__Host-` cookies are kept.
        &format!("--ignore-certificate-errors-spki-list={spki_sha256}"),
        "--window-size=1280,1000",
        &format!("--user-data-dir={}", profile.display()),
    ];
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".into(), json!({ "binary": CHROMIUM, "args": args }));
    ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap()
}

async fn screenshot(client: &Client, dir: &Path, name: &str) {
    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn fill(client: &Client, css: &str, text: &str) {
    client.find(Locator::Css(css)).await.unwrap().send_keys(text).await.unwrap();
}

async fn click(client: &Client, css: &str) {
    client.find(Locator::Css(css)).await.unwrap().click().await.unwrap();
}

async fn path(client: &Client) -> String {
    client.current_url().await.unwrap().path().to_owned()
}

/// Most 100 ms polls for a navigation to land (a loaded machine can be slow to navigate).
const NAVIGATION_POLLS: u32 = 600;

/// The path once the browser has navigated to one starting with `prefix` (a click returns
/// when the navigation starts, not when it ends).
async fn arrived(client: &Client, prefix: &str) -> String {
    for _ in 0..NAVIGATION_POLLS {
        let now = path(client).await;
        if now.starts_with(prefix) && client.find(Locator::Css("main h1")).await.is_ok() {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "never arrived at {prefix}; at {}: {}",
        path(client).await,
        client.source().await.unwrap_or_default()
    );
}

/// False (with the printed reason) when the browser suite is to be skipped.
fn browser_available() -> bool {
    let installed = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    let required = std::env::var("BLUEWAVE_BROWSER_TESTS").is_ok_and(|v| v == "1");
    if !installed && !required {
        println!(
            "SKIPPED shop_browser: {CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver, or set BLUEWAVE_BROWSER_TESTS=1 to make this a failure)"
        );
        return false;
    }
    assert!(installed, "BLUEWAVE_BROWSER_TESTS=1 but {CHROMIUM} or {CHROMEDRIVER} is missing");
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_buys_a_unit_in_chromium() {
    if !browser_available() {
        return;
    }
    let shots: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let site = Site::start().await;
    let base = format!("https://localhost:{}", site.addr.port());
    let profile = tempfile::tempdir().unwrap();
    let (_driver, port) = tokio::task::spawn_blocking(start_driver).await.unwrap();
    let client = browser(port, profile.path(), &site.spki_sha256).await;

    client.goto(&format!("{base}/login")).await.unwrap();
    fill(&client, "input[name=email]", "alice@example.org").await;
    fill(&client, "input[name=password]", PASSWORD).await;
    click(&client, "form[action='/login'] button[type=submit]").await;
    assert_eq!(arrived(&client, "/account").await, "/account");

    client.goto(&format!("{base}/shop")).await.unwrap();
    assert_eq!(client.find_all(Locator::Css("li.card")).await.unwrap().len(), 3);
    // The stylesheet loaded (computed style from shop.css, not the browser default).
    let header = client.find(Locator::Css("header.site")).await.unwrap();
    assert_eq!(header.css_value("display").await.unwrap(), "flex");
    screenshot(&client, &shots, "catalogue").await;

    client.find(Locator::LinkText("SunPure S5 solar")).await.unwrap().click().await.unwrap();
    assert_eq!(arrived(&client, "/shop/products/").await, "/shop/products/sunpure-s5");
    screenshot(&client, &shots, "product").await;
    click(&client, "form[action='/cart/add'] button[type=submit]").await;
    assert_eq!(arrived(&client, "/cart").await, "/cart");
    assert_eq!(client.find_all(Locator::Css("tr[data-product=sunpure-s5]")).await.unwrap().len(), 1);
    screenshot(&client, &shots, "cart").await;

    client.find(Locator::LinkText("Check out")).await.unwrap().click().await.unwrap();
    assert_eq!(arrived(&client, "/checkout").await, "/checkout");
    fill(&client, "input[name=name]", "Alice Marin").await;
    fill(&client, "input[name=line1]", "2 Quai de la Douane").await;
    fill(&client, "input[name=city]", "Brest").await;
    fill(&client, "input[name=postal_code]", "29200").await;
    fill(&client, "input[name=country]", "FR").await;
    screenshot(&client, &shots, "checkout").await;
    click(&client, "form[action='/checkout'] button[type=submit]").await;
    let order_path = arrived(&client, "/orders/").await;
    let state = client.find(Locator::Css("[data-state]")).await.unwrap();
    assert_eq!(state.attr("data-state").await.unwrap().as_deref(), Some("pending_payment"));

    click(&client, "form[action$='/pay'] button[type=submit]").await;
    arrived(&client, "/pay/test/").await;
    fill(&client, "input[name=card_number]", "4242 4242 4242 4242").await;
    screenshot(&client, &shots, "payment").await;
    click(&client, "form[action^='/pay/test/'] button[type=submit]").await;
    assert_eq!(
        arrived(&client, &format!("{order_path}/confirmation")).await,
        format!("{order_path}/confirmation")
    );
    let state = client.find(Locator::Css("[data-state]")).await.unwrap();
    assert_eq!(state.attr("data-state").await.unwrap().as_deref(), Some("paid"));
    assert_eq!(client.find(Locator::Css("h1")).await.unwrap().text().await.unwrap(), "Order confirmed");
    screenshot(&client, &shots, "confirmation").await;

    client.goto(&format!("{base}/orders")).await.unwrap();
    screenshot(&client, &shots, "orders").await;
    client.find(Locator::LinkText("No. 1")).await.unwrap().click().await.unwrap();
    assert_eq!(arrived(&client, "/invoices/").await, "/invoices/1");
    screenshot(&client, &shots, "invoice").await;
    client.goto(&format!("{base}/shop/plans")).await.unwrap();
    screenshot(&client, &shots, "plans").await;
    client.close().await.unwrap();
    println!("screenshots in {}", shots.display());
}

/// An API request with a bearer token (JSON body), answered status.
async fn api_post(site: &Site, path: &str, email: &str, body: serde_json::Value) -> bluewave_web::StatusCode {
    let pair = site.auth.login(email, &bluewave_web::Secret::new(PASSWORD), [10, 9, 9, 6].into()).unwrap();
    let bearer = format!("Bearer {}", pair.access_token.expose());
    let page = site
        .send(
            bluewave_web::Method::POST,
            path,
            &[("authorization", &bearer)],
            Some("application/json"),
            body.to_string().into_bytes(),
        )
        .await;
    page.status
}

/// The `points` of the live polyline of the first chart (empty until a live reading arrives).
async fn live_points(client: &Client) -> String {
    match client.find(Locator::Css("polyline.live")).await {
        Ok(line) => line.attr("points").await.unwrap().unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_signs_up_verifies_subscribes_and_watches_the_chart_move_in_chromium() {
    if !browser_available() {
        return;
    }
    let shots: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let site = Site::start().await;
    let base = format!("https://localhost:{}", site.addr.port());
    // A Coastal buoy (its readings come over QUIC below).
    let buoy =
        json!({ "id": "coastal-01", "name": "Coastal 01", "lat": 48.38, "lng": -4.49, "status": "active" });
    assert_eq!(api_post(&site, "/api/buoys", ADMIN, buoy).await, bluewave_web::StatusCode::CREATED);
    let now_ns = || {
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
            .unwrap()
    };
    let profile = tempfile::tempdir().unwrap();
    let (_driver, port) = tokio::task::spawn_blocking(start_driver).await.unwrap();
    let client = browser(port, profile.path(), &site.spki_sha256).await;

    // Sign up; the verification link arrives in the outbox.
    client.goto(&format!("{base}/signup")).await.unwrap();
    fill(&client, "input[name=email]", "carol@example.org").await;
    fill(&client, "input[name=password]", PASSWORD).await;
    screenshot(&client, &shots, "signup").await;
    click(&client, "form[action='/signup'] button[type=submit]").await;
    let mails = wait_for_mails(site.dir.path(), 1).await;
    assert_eq!(mails[0].to, "carol@example.org");
    client.goto(&format!("{base}/verify?token={}", mails[0].token("/verify"))).await.unwrap();
    arrived(&client, "/verify").await;
    click(&client, "form[action='/verify'] button[type=submit]").await;
    for _ in 0..NAVIGATION_POLLS {
        if site
            .auth
            .login("carol@example.org", &bluewave_web::Secret::new(PASSWORD), [10, 9, 9, 5].into())
            .ok()
            .and_then(|pair| site.auth.verify_access_token(pair.access_token.expose()).ok())
            .is_some_and(|caller| caller.email_verified())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    client.goto(&format!("{base}/login")).await.unwrap();
    fill(&client, "input[name=email]", "carol@example.org").await;
    fill(&client, "input[name=password]", PASSWORD).await;
    click(&client, "form[action='/login'] button[type=submit]").await;
    assert_eq!(arrived(&client, "/account").await, "/account");

    // Subscribe to Coastal, billed monthly, with the success card.
    client.goto(&format!("{base}/shop/plans")).await.unwrap();
    screenshot(&client, &shots, "subscribe").await;
    click(&client, "section[aria-labelledby=plan-coastal] form[action='/subscriptions'] button[type=submit]")
        .await;
    arrived(&client, "/pay/test/").await;
    fill(&client, "input[name=card_number]", "4242 4242 4242 4242").await;
    click(&client, "form[action^='/pay/test/'] button[type=submit]").await;
    arrived(&client, "/subscription-charges/").await;
    assert_eq!(
        client.find(Locator::Css("h1")).await.unwrap().text().await.unwrap(),
        "Subscription payment confirmed"
    );
    client.find(Locator::LinkText("Your subscription")).await.unwrap().click().await.unwrap();
    arrived(&client, "/subscriptions/").await;
    assert_eq!(client.find(Locator::Css("dd.plan")).await.unwrap().text().await.unwrap(), "Coastal");
    assert_eq!(client.find(Locator::Css("dd.access")).await.unwrap().text().await.unwrap(), "yes");
    screenshot(&client, &shots, "subscription").await;

    // The dashboard of the plan's buoy: the chart grows as the buoy's readings are acked,
    // sent over QUIC by the buoy SDK to the wire server on the same engine.
    let tokens = Arc::new(bluewave_wire::PresharedTokens::new());
    let device_token = "browser-test-device-token-coastal-01";
    tokens.insert(bluewave_engine::BuoyId::new("coastal-01").unwrap(), device_token);
    let identity = bluewave_wire::ServerIdentity::generate().unwrap();
    let quic_config = bluewave_wire::ServerConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        ..bluewave_wire::ServerConfig::default()
    };
    let quic = bluewave_wire::start(quic_config, &identity, site.engine.clone(), tokens).await.unwrap();
    let trust = bluewave_wire::Trust::Pinned(vec![bluewave_wire::parse_pin(&identity.pin_sha256()).unwrap()]);
    let metrics = vec![bluewave_engine::MetricName::new("salinity_psu").unwrap()];
    let buoy_config = bluewave_wire::ClientConfig::new(
        quic.local_addr(),
        "localhost",
        trust,
        device_token,
        metrics.clone(),
    );
    let buoy = bluewave_wire::Client::connect(buoy_config).await.unwrap();
    let reading = |ts: i64, value: f64| {
        bluewave_engine::ReadingBatch::new(metrics.clone(), vec![ts], vec![0], vec![value]).unwrap()
    };
    // A first reading a minute ago, charted when the page loads.
    buoy.send(&reading(now_ns() - 60_000_000_000, 35.1)).await.unwrap().await.unwrap();
    client.goto(&format!("{base}/dashboard?buoy=coastal-01&metric=salinity_psu&range=1h")).await.unwrap();
    arrived(&client, "/dashboard").await;
    assert_eq!(live_points(&client).await, "", "no live point before the new readings");
    // One reading every 100 ms until the live line has three points (bounded).
    let mut moved = false;
    for seq in 1..=NAVIGATION_POLLS {
        let value = 35.1 + f64::from(seq % 10) / 10.0;
        buoy.send(&reading(now_ns(), value)).await.unwrap().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A few live points make a line.
        if live_points(&client).await.split_whitespace().count() >= 3 {
            moved = true;
            break;
        }
    }
    assert!(moved, "the live chart never moved: {}", client.source().await.unwrap_or_default());
    screenshot(&client, &shots, "dashboard").await;
    client.close().await.unwrap();
}
