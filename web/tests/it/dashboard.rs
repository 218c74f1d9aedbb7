//! The metrics dashboard over real HTTPS with a real engine and query service: the page of a
//! plan holder parsed as HTML (exact buckets: min, mean and max of a known dataset; only the
//! plan's buoys in the picker, the chart and the positions table), a buoy outside the plan
//! answered 404 on the page, the CSV export and the live stream alike, the page of a
//! customer without a plan, the CSV export's formula neutralisation, the hashed static script
//! and its cache headers, and the live stream: a reading acked after the stream opened
//! arrives as an event (content asserted), another buoy's never does, the stream ends when its
//! session ends, and the per-account stream limit answers 429; a dense series keeps
//! streaming beside a sparse one; an open stream does not keep its session alive; the
//! latest values look back a bounded window only.

use std::sync::Arc;
use std::time::Duration;

use bluewave_web::{
    ASSET_CACHE_CONTROL, BuoyScope, DASHBOARD_CSP, LIVE_STREAMS_PER_ACCOUNT_MAX, Method, PlanSpec, StatusCode,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use scraper::{Html, Selector};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::api::{ADMIN, Answer, Api, PASSWORD, T0};

const ORIGIN: (&str, &str) = ("origin", "https://localhost");
const SECOND: i64 = 1_000_000_000;
/// The customer of these tests, given a plan of `buoy-a` and `-cmd`.
const CUSTOMER: &str = "customer@example.org";

fn doc(answer: &Answer) -> Html {
    Html::parse_document(&String::from_utf8_lossy(&answer.body))
}

fn texts(html: &Html, css: &str) -> Vec<String> {
    html.select(&Selector::parse(css).unwrap())
        .map(|e| e.text().collect::<String>().trim().to_owned())
        .collect()
}

fn attrs(html: &Html, css: &str, name: &str) -> Vec<String> {
    html.select(&Selector::parse(css).unwrap())
        .filter_map(|e| e.value().attr(name).map(str::to_owned))
        .collect()
}

/// Signs `email` in through the login form; the session cookie header value.
pub(crate) async fn browser_session(api: &Api, email: &str) -> String {
    let form = api.request(Method::GET, "/login", None, &[], None).await;
    let token = form
        .headers
        .get_all("set-cookie")
        .iter()
        .find_map(|v| {
            v.to_str()
                .unwrap()
                .strip_prefix("__Host-bluewave-login=")
                .map(|rest| rest.split(';').next().unwrap().to_owned())
        })
        .unwrap();
    let cookie = format!("__Host-bluewave-login={token}");
    let body = format!("csrf={token}&email={}&password={PASSWORD}", email.replace('@', "%40"));
    let answer = api.form("/login", &[("cookie", &cookie), ORIGIN], &body).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{:?}", answer.body);
    let session = answer
        .headers
        .get_all("set-cookie")
        .iter()
        .find_map(|v| {
            v.to_str()
                .unwrap()
                .strip_prefix("__Host-bluewave-session=")
                .map(|rest| rest.split(';').next().unwrap().to_owned())
        })
        .unwrap();
    format!("__Host-bluewave-session={session}")
}

pub(crate) async fn page(api: &Api, path: &str, cookie: &str) -> Answer {
    api.request(Method::GET, path, None, &[("cookie", cookie)], None).await
}

/// Registers `buoy-a` (with a position), `buoy-b` and `-cmd`, gives the customer a plan of
/// `buoy-a` and `-cmd` (daily quota `quota`), and stores the known dataset.
pub(crate) async fn setup(api: &Api, quota: Option<u32>) {
    let admin = api.token(ADMIN).await;
    for (id, lat, lng) in [
        ("buoy-a", json!(43.25), json!(-8.5)),
        ("buoy-b", json!(1.0), json!(2.0)),
        ("-cmd", json!(null), json!(null)),
    ] {
        let body =
            json!({ "id": id, "name": format!("Buoy {id}"), "lat": lat, "lng": lng, "status": "active" });
        assert_eq!(api.post("/api/buoys", Some(&admin), body).await.status, StatusCode::CREATED);
    }
    let admin_caller = api.auth.verify_access_token(&admin).unwrap();
    let spec = PlanSpec {
        name: "a and cmd".into(),
        buoys: BuoyScope::List(vec!["buoy-a".into(), "-cmd".into()]),
        history_days: None,
        daily_query_quota: quota,
        row_limit: None,
    };
    let plan = api.auth.create_plan(&admin_caller, spec).unwrap();
    let customer = api.auth.list_users(&admin_caller, None, 100).unwrap();
    let customer = customer.iter().find(|u| u.email == CUSTOMER).unwrap();
    api.auth.assign_plan(&admin_caller, &customer.id, Some(&plan.id)).unwrap();
    let operator = api.token("operator@example.org").await;
    for (seq, (buoy, readings)) in [
        (
            "buoy-a",
            json!([
                { "metric": "salinity_psu", "ts": T0 + SECOND, "value": 1.0 },
                { "metric": "salinity_psu", "ts": T0 + 2 * SECOND, "value": 2.0 },
                { "metric": "salinity_psu", "ts": T0 + 9 * SECOND, "value": 6.0 },
                { "metric": "salinity_psu", "ts": T0 + 10 * SECOND, "value": 10.0 },
                { "metric": "ph", "ts": T0 + 5 * SECOND, "value": 8.0 },
            ]),
        ),
        ("buoy-b", json!([{ "metric": "salinity_psu", "ts": T0 + SECOND, "value": 100.0 }])),
        ("-cmd", json!([{ "metric": "salinity_psu", "ts": T0 + 3 * SECOND, "value": -1.5 }])),
    ]
    .into_iter()
    .enumerate()
    {
        let body = json!({ "buoy_id": buoy, "batch_seq": seq, "readings": readings });
        let answer = api.post("/api/telemetry", Some(&operator), body).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    }
}

fn range() -> String {
    format!("start={T0}&end={}", T0 + 3_600 * SECOND)
}

#[tokio::test]
async fn the_dashboard_charts_exact_buckets_of_the_plans_buoys_only() {
    let api = Api::start().await;
    setup(&api, None).await;
    let cookie = browser_session(&api, CUSTOMER).await;
    let answer =
        page(&api, &format!("/dashboard?buoy=buoy-a&metric=salinity_psu&{}", range()), &cookie).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.header("content-security-policy"), DASHBOARD_CSP);
    assert_eq!(answer.header("content-type"), "text/html; charset=utf-8");
    let html = doc(&answer);
    // One hour: 10 s buckets. The first holds 1, 2 and 6; the second 10.
    assert_eq!(texts(&html, "#bucket-seconds"), ["10"]);
    let rows: Vec<Vec<String>> = html
        .select(&Selector::parse("table.buckets tbody tr").unwrap())
        .map(|tr| tr.select(&Selector::parse("td").unwrap()).map(|td| td.text().collect()).collect())
        .collect();
    assert_eq!(
        rows,
        [
            ["buoy-a", "2026-01-01T00:00:00.000000000Z", "1", "3", "6", "3"],
            ["buoy-a", "2026-01-01T00:00:10.000000000Z", "10", "10", "10", "1"],
        ]
    );
    // The chart: an accessible SVG with one series of one run (band + mean line + live line).
    assert_eq!(attrs(&html, "svg.chart", "role"), ["img"]);
    assert_eq!(texts(&html, "svg.chart title"), ["salinity_psu"]);
    assert!(
        texts(&html, "svg.chart desc")[0]
            .starts_with("Minimum, mean and maximum of salinity_psu per 10 s bucket")
    );
    assert_eq!(attrs(&html, "svg.chart g.series", "data-buoy"), ["buoy-a"]);
    assert_eq!(html.select(&Selector::parse("svg.chart polyline.mean").unwrap()).count(), 1);
    // The picker and the positions table list the plan's buoys only (sorted by id).
    assert_eq!(attrs(&html, "input[name=buoy]", "value"), ["-cmd", "buoy-a"]);
    assert_eq!(attrs(&html, "input[name=buoy][checked]", "value"), ["-cmd", "buoy-a"][1..]);
    assert_eq!(attrs(&html, "input[name=metric]", "value"), ["ph", "salinity_psu"]);
    assert_eq!(attrs(&html, "table.positions tbody tr", "data-buoy"), ["-cmd", "buoy-a"]);
    let position: Vec<String> =
        texts(&html, "table.positions tr[data-buoy=buoy-a] td").into_iter().take(5).collect();
    assert_eq!(position, ["buoy-a", "Buoy buoy-a", "43.25", "-8.5", "active"]);
    assert_eq!(
        attrs(&html, "li[data-latest]", "data-latest"),
        ["-cmd/salinity_psu", "buoy-a/ph", "buoy-a/salinity_psu"]
    );
    assert_eq!(texts(&html, "li[data-latest=\"buoy-a/salinity_psu\"] .value"), ["10"]);
    assert!(!String::from_utf8_lossy(&answer.body).contains("buoy-b"));
    // The one script is the hashed static file; nothing inline.
    let scripts = attrs(&html, "script", "src");
    assert_eq!(scripts.len(), 1);
    assert_eq!(texts(&html, "script"), [""]);
    let asset = api.request(Method::GET, &scripts[0], None, &[], None).await;
    assert_eq!(asset.status, StatusCode::OK);
    assert_eq!(asset.header("content-type"), "text/javascript; charset=utf-8");
    assert_eq!(asset.header("cache-control"), ASSET_CACHE_CONTROL);
    assert!(String::from_utf8_lossy(&asset.body).contains("EventSource"));
    let stale = api.request(Method::GET, "/assets/dashboard-0000000000000000.js", None, &[], None).await;
    assert_eq!(stale.status, StatusCode::NOT_FOUND);

    // No selection: the first buoy over the last 24 h, and the first metric with a reading in
    // it (none here: the dataset is months old, so no metric is picked and none is listed).
    let default = page(&api, "/dashboard", &cookie).await;
    assert_eq!(default.status, StatusCode::OK);
    let html = doc(&default);
    assert_eq!(attrs(&html, "input[name=buoy][checked]", "value"), ["-cmd"]);
    assert_eq!(attrs(&html, "input[name=metric]", "value"), Vec::<String>::new());
    assert!(attrs(&html, "li[data-latest]", "data-latest").is_empty());
    assert_eq!(texts(&html, "#bucket-seconds"), ["300"]);
    // The latest values look back LATEST_WINDOW_S from the range's end, never the whole
    // history: a range a day after the data shows none, but keeps the picked metric.
    let later = format!("start={}&end={}", T0 + 86_400 * SECOND, T0 + 2 * 86_400 * SECOND);
    let html = doc(&page(&api, &format!("/dashboard?buoy=buoy-a&metric=ph&{later}"), &cookie).await);
    assert!(attrs(&html, "li[data-latest]", "data-latest").is_empty());
    assert_eq!(attrs(&html, "input[name=metric][checked]", "value"), ["ph"]);
    // No session: to the login page.
    let anonymous = api.request(Method::GET, "/dashboard", None, &[], None).await;
    assert_eq!((anonymous.status, anonymous.header("location")), (StatusCode::SEE_OTHER, "/login"));
}

#[tokio::test]
async fn buoys_outside_the_plan_are_not_found_on_the_page_the_export_and_the_stream() {
    let api = Api::start().await;
    setup(&api, None).await;
    let cookie = browser_session(&api, CUSTOMER).await;
    for buoy in ["buoy-b", "buoy-z"] {
        for path in ["/dashboard", "/dashboard/export.csv", "/dashboard/live"] {
            let answer =
                page(&api, &format!("{path}?buoy={buoy}&metric=salinity_psu&{}", range()), &cookie).await;
            assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path} {buoy}");
            assert_eq!(answer.json(), json!({ "error": "not_found", "message": "no such buoy" }));
        }
    }
    // Mixed with an allowed buoy: refused all the same.
    let mixed =
        page(&api, &format!("/dashboard?buoy=buoy-a&buoy=buoy-b&metric=salinity_psu&{}", range()), &cookie)
            .await;
    assert_eq!(mixed.status, StatusCode::NOT_FOUND);
    // Bad input is a typed 400.
    let bad = page(&api, "/dashboard?buoy=a%27b", &cookie).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json()["error"], "invalid_input");

    // The analyst's plan covers buoy-a only: -cmd is not found for them.
    let analyst = browser_session(&api, "analyst@example.org").await;
    let other = page(&api, &format!("/dashboard?buoy=-cmd&metric=salinity_psu&{}", range()), &analyst).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);

    // A customer without a plan: a page that says so.
    let admin = api.token(ADMIN).await;
    let body = json!({ "email": "plain@example.org", "password": PASSWORD, "role": "customer" });
    assert_eq!(api.post("/api/rbac/users", Some(&admin), body).await.status, StatusCode::CREATED);
    let plain = browser_session(&api, "plain@example.org").await;
    let none = page(&api, "/dashboard", &plain).await;
    assert_eq!(none.status, StatusCode::OK);
    let html = doc(&none);
    assert_eq!(texts(&html, "main p")[0], "Your account has no data plan, so there is nothing to chart yet.");
    assert!(html.select(&Selector::parse("svg, table").unwrap()).next().is_none());
    let live = page(&api, &format!("/dashboard/live?buoy=buoy-a&metric=ph&{}", range()), &plain).await;
    assert_eq!(live.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_csv_export_has_the_charted_buckets_with_formula_cells_neutralised() {
    let api = Api::start().await;
    setup(&api, None).await;
    let cookie = browser_session(&api, CUSTOMER).await;
    let path = format!("/dashboard/export.csv?buoy=-cmd&buoy=buoy-a&metric=salinity_psu&{}", range());
    let answer = page(&api, &path, &cookie).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.header("content-type"), "text/csv; charset=utf-8");
    assert_eq!(answer.header("content-disposition"), "attachment; filename=\"bluewave-dashboard.csv\"");
    assert_eq!(
        String::from_utf8_lossy(&answer.body),
        "buoy_id,metric,bucket_start,min,mean,max,count\n\
         \"'-cmd\",salinity_psu,2026-01-01T00:00:00Z,-1.5,-1.5,-1.5,1\n\
         buoy-a,salinity_psu,2026-01-01T00:00:00Z,1.0,3.0,6.0,3\n\
         buoy-a,salinity_psu,2026-01-01T00:00:10Z,10.0,10.0,10.0,1\n"
    );
    // The page links the export of exactly its selection.
    let shown =
        page(&api, &format!("/dashboard?buoy=-cmd&buoy=buoy-a&metric=salinity_psu&{}", range()), &cookie)
            .await;
    let link = attrs(&doc(&shown), "a[download]", "href");
    assert_eq!(
        link,
        [format!("/dashboard/export.csv?buoy=-cmd&buoy=buoy-a&metric=salinity_psu&{}", range())]
    );
}

/// A live stream: the response head and its body, read frame by frame.
pub(crate) struct Stream {
    pub(crate) status: StatusCode,
    pub(crate) headers: hyper::HeaderMap,
    body: hyper::body::Incoming,
    pub(crate) text: String,
}

impl Stream {
    pub(crate) async fn open(api: &Api, path: &str, cookie: &str) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(api.cert.clone()).unwrap();
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpStream::connect(api.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::builder()
            .uri(path)
            .header("host", "localhost")
            .header("cookie", cookie)
            .header("accept", "text/event-stream")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let (head, body) = response.into_parts();
        Self { status: head.status, headers: head.headers, body, text: String::new() }
    }

    /// Reads until the text so far contains `needle` (or the stream ends); generous bound.
    pub(crate) async fn until(&mut self, needle: &str) -> bool {
        let read = async {
            while !self.text.contains(needle) {
                match self.body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            self.text.push_str(&String::from_utf8_lossy(&data));
                        }
                    }
                    _ => return false,
                }
            }
            true
        };
        tokio::time::timeout(Duration::from_secs(30), read).await.unwrap_or(false)
    }

    /// The data of every `reading` event so far, flattened.
    pub(crate) fn readings(&self) -> Vec<Value> {
        self.text
            .split("\n\n")
            .filter_map(|event| event.strip_prefix("event: reading\ndata: "))
            .flat_map(|data| serde_json::from_str::<Vec<Value>>(data).unwrap())
            .collect()
    }
}

fn now_ns() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
        .unwrap()
}

#[tokio::test]
async fn the_live_stream_sends_readings_acked_after_it_opened_and_ends_with_its_session() {
    let api = Api::start().await;
    setup(&api, None).await;
    let cookie = browser_session(&api, CUSTOMER).await;
    let path = "/dashboard/live?buoy=buoy-a&metric=salinity_psu";
    let mut stream = Stream::open(&api, path, &cookie).await;
    assert_eq!(stream.status, StatusCode::OK);
    assert_eq!(stream.headers.get("content-type").unwrap(), "text/event-stream");
    assert!(stream.until(": connected\n\n").await);
    // Acked (the JSON ingest answers after the WAL fsync) after the stream opened.
    let operator = api.token("operator@example.org").await;
    let ts = now_ns();
    for (buoy, seq, metric, value) in [
        ("buoy-b", 10, "salinity_psu", 99.0),
        ("buoy-a", 11, "ph", 7.0),
        ("buoy-a", 12, "salinity_psu", 42.5),
    ] {
        let body = json!({ "buoy_id": buoy, "batch_seq": seq, "readings": [{ "metric": metric, "ts": ts, "value": value }] });
        assert_eq!(api.post("/api/telemetry", Some(&operator), body).await.status, StatusCode::OK);
    }
    // The whole event (its data line and the blank line that ends it).
    assert!(stream.until("\"value\":42.5}]\n\n").await, "{}", stream.text);
    assert_eq!(
        stream.readings(),
        [json!({ "buoy": "buoy-a", "metric": "salinity_psu", "ts": ts, "value": 42.5 })]
    );
    // The readings before the stream opened are not sent again; the unselected metric never.
    assert!(!stream.text.contains("buoy-b") && !stream.text.contains("\"ph\""));
    // Selecting the other buoy (outside the plan) opens no stream: the exact refusal.
    let both = page(&api, "/dashboard/live?buoy=buoy-a&buoy=buoy-b&metric=salinity_psu", &cookie).await;
    assert_eq!(
        (both.status, both.json()),
        (StatusCode::NOT_FOUND, json!({ "error": "not_found", "message": "no such buoy" }))
    );

    // The account's stream limit: this one and three more are allowed, the next is refused.
    let mut others = Vec::new();
    for _ in 1..LIVE_STREAMS_PER_ACCOUNT_MAX {
        let mut other = Stream::open(&api, path, &cookie).await;
        assert_eq!(other.status, StatusCode::OK);
        assert!(other.until(": connected").await);
        others.push(other);
    }
    let refused = page(&api, path, &cookie).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        (refused.json()["error"].clone(), refused.header("retry-after")),
        (json!("rate_limited"), "10")
    );
    drop(others);

    // Signing out ends the stream with its reason.
    let token =
        attrs(&doc(&page(&api, "/account", &cookie).await), "form input[name=csrf]", "value")[0].clone();
    let out = api.form("/logout", &[("cookie", &cookie), ORIGIN], &format!("csrf={token}")).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(stream.until("event: end\ndata: session\n\n").await, "{}", stream.text);
}

#[tokio::test]
async fn the_live_stream_ends_when_the_plan_stops_covering_its_buoys() {
    let api = Api::start().await;
    setup(&api, None).await;
    let cookie = browser_session(&api, CUSTOMER).await;
    let mut stream = Stream::open(&api, "/dashboard/live?buoy=buoy-a&metric=ph", &cookie).await;
    assert_eq!(stream.status, StatusCode::OK);
    assert!(stream.until(": connected\n\n").await);
    let admin = api.auth.verify_access_token(&api.token(ADMIN).await).unwrap();
    let users = api.auth.list_users(&admin, None, 100).unwrap();
    let customer = users.iter().find(|u| u.email == CUSTOMER).unwrap();
    api.auth.assign_plan(&admin, &customer.id, None).unwrap();
    assert!(stream.until("event: end\ndata: plan\n\n").await, "{}", stream.text);
    // And the page says there is no plan now.
    let html = doc(&page(&api, "/dashboard", &cookie).await);
    assert_eq!(texts(&html, "main p")[0], "Your account has no data plan, so there is nothing to chart yet.");
}

#[tokio::test]
async fn a_dense_series_keeps_streaming_beside_a_sparse_one() {
    use bluewave_web::LIVE_ROWS_PER_POLL_MAX;
    let api = Api::start().await;
    setup(&api, None).await;
    let cookie = browser_session(&api, CUSTOMER).await;
    let operator = api.token("operator@example.org").await;
    // More dense readings inside the lookback than one poll reads, all before the stream opens
    // (so all already "sent"); the sparse series (`ph`) has nothing in the lookback.
    let now = now_ns();
    let dense = LIVE_ROWS_PER_POLL_MAX + 100;
    let step = 100 * SECOND / i64::try_from(dense).unwrap();
    let readings: Vec<Value> = (0..dense)
        .map(|i| json!({ "metric": "salinity_psu", "ts": now - 120 * SECOND + i64::try_from(i).unwrap() * step, "value": 1.0 }))
        .collect();
    let body = json!({ "buoy_id": "buoy-a", "batch_seq": 20, "readings": readings });
    assert_eq!(api.post("/api/telemetry", Some(&operator), body).await.status, StatusCode::OK);
    let mut stream =
        Stream::open(&api, "/dashboard/live?buoy=buoy-a&metric=salinity_psu&metric=ph", &cookie).await;
    assert_eq!(stream.status, StatusCode::OK);
    assert!(stream.until(": connected\n\n").await);
    let ts = now_ns();
    let body = json!({ "buoy_id": "buoy-a", "batch_seq": 21, "readings": [{ "metric": "salinity_psu", "ts": ts, "value": 77.0 }] });
    assert_eq!(api.post("/api/telemetry", Some(&operator), body).await.status, StatusCode::OK);
    assert!(stream.until("\"value\":77.0}]\n\n").await, "{}", stream.text);
    assert_eq!(
        stream.readings(),
        [json!({ "buoy": "buoy-a", "metric": "salinity_psu", "ts": ts, "value": 77.0 })]
    );
}

#[tokio::test]
async fn an_open_stream_does_not_keep_its_session_alive() {
    use bluewave_web::{AuthClock, LIVE_POLL_MS};
    let clock = AuthClock::manual(crate::auth_fixtures::now_s());
    let config = bluewave_web::AuthConfig { clock: clock.clone(), ..crate::api::fast_config(10_000) };
    let idle_s = config.browser_idle_s;
    let api = Api::start_with(config).await;
    setup(&api, None).await;
    let cookie = browser_session(&api, CUSTOMER).await;
    let mut stream = Stream::open(&api, "/dashboard/live?buoy=buoy-a&metric=ph", &cookie).await;
    assert_eq!(stream.status, StatusCode::OK);
    assert!(stream.until(": connected\n\n").await);
    // Past the idle deadline in steps, the stream polling (re-checking the session) between
    // them: a touching re-check would keep the session alive; this one does not.
    let step_s = idle_s / 2 + 61;
    for _ in 0..3 {
        clock.advance_s(step_s);
        tokio::time::sleep(Duration::from_millis(4 * LIVE_POLL_MS)).await;
    }
    assert!(stream.until("event: end\ndata: session\n\n").await, "{}", stream.text);
    // The session is over for pages too.
    let after = page(&api, "/dashboard", &cookie).await;
    assert_eq!((after.status, after.header("location")), (StatusCode::SEE_OTHER, "/login"));
}
