//! Runaway queries over real HTTPS (issue #23 §1): a `count(*)` over a 10¹² series and a cross
//! join of two million-row series end with `query_timeout` (503 JSON) at the configured budget;
//! a query silent for its stall limit ends `query_stalled`; a table function asking for more
//! rows than allowed is refused `table_function_limit` before it runs; a failure after the
//! first chunk ends each format with the documented error record; and while two runaway
//! queries run, another user's query and JSON ingest are answered. The timeouts counted in the
//! service's metrics (`bluewave_query_timed_out_total`) include every one of them.

use bluewave_query::QueryConfig;
use bluewave_web::{Method, StatusCode};
use serde_json::json;

use crate::api::{ADMIN, Answer, Api, T0, assert_error, fast_config};

const SERIES_COUNT: &str = "SELECT count(*) AS n FROM generate_series(1, 1000000000000)";
const CROSS_JOIN: &str = "SELECT count(*) AS n FROM generate_series(1, 1000000) a \
                          CROSS JOIN generate_series(1, 1000000) b WHERE a.value <> b.value";

/// Served-query limits for these tests: the given budget and stall limit, and a table-function
/// cap high enough that the 10¹² series runs (the cap has its own test).
fn limits(timeout_ms: u64, stall_timeout_ms: u64) -> QueryConfig {
    QueryConfig { timeout_ms, stall_timeout_ms, table_function_rows_max: 1 << 50, ..QueryConfig::default() }
}

async fn sql(api: &Api, token: &str, accept: &str, text: &str) -> Answer {
    api.request(Method::POST, "/api/query", Some(token), &[("accept", accept)], Some(json!({ "sql": text })))
        .await
}

/// Waits until the service has counted `n` timed-out queries (a plan stops at its next yield
/// point, just after the caller got its answer).
async fn timed_out_reaches(api: &Api, n: u64) {
    while api.query.metrics().timed_out < n {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn series_count_and_cross_join_end_with_query_timeout() {
    let api = Api::start_with_query(fast_config(10_000), limits(1_500, 60_000)).await;
    let admin = api.token(ADMIN).await;
    let timeout = "query timed out after 1500 ms and was cancelled";
    for query in [SERIES_COUNT, CROSS_JOIN] {
        let answer = sql(&api, &admin, "application/json", query).await;
        assert_error(&answer, StatusCode::SERVICE_UNAVAILABLE, "query_timeout", timeout);
        assert_eq!(answer.header("retry-after"), "", "the same query would run as long again");
    }
    timed_out_reaches(&api, 2).await;
    assert_eq!(api.query.metrics().timed_out, 2);
}

#[tokio::test]
async fn a_query_silent_for_its_stall_limit_ends_query_stalled() {
    let api = Api::start_with_query(fast_config(10_000), limits(60_000, 1_000)).await;
    let admin = api.token(ADMIN).await;
    let answer = sql(&api, &admin, "text/csv", SERIES_COUNT).await;
    assert_error(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "query_stalled",
        "query produced nothing for 1000 ms and was cancelled",
    );
    timed_out_reaches(&api, 1).await;
}

#[tokio::test]
async fn table_functions_over_their_row_cap_are_refused_before_running() {
    let config = QueryConfig { table_function_rows_max: 1_000, ..QueryConfig::default() };
    let api = Api::start_with_query(fast_config(10_000), config).await;
    let admin = api.token(ADMIN).await;
    let fits =
        sql(&api, &admin, "application/json", "SELECT count(*) AS n FROM generate_series(1, 1000)").await;
    assert_eq!(fits.json(), json!([{ "n": 1000 }]));
    for (function, query) in [
        ("generate_series", "SELECT count(*) AS n FROM generate_series(1, 1001)"),
        ("range", "SELECT * FROM range(0, 10000000000, 2)"),
        (
            "generate_series",
            "SELECT * FROM generate_series(TIMESTAMP '2026-01-01T00:00:00Z', \
             TIMESTAMP '2026-01-02T00:00:00Z', INTERVAL '1 minute')",
        ),
    ] {
        let answer = sql(&api, &admin, "application/json", query).await;
        let message = format!(
            "table function {function} would produce more than 1000 rows; narrow its range or raise its step"
        );
        assert_error(&answer, StatusCode::BAD_REQUEST, "table_function_limit", &message);
    }
    assert_eq!(api.query.metrics().timed_out, 0);
}

#[tokio::test]
async fn a_failure_after_the_first_chunk_ends_every_format_with_the_error_record() {
    let api = Api::start_with_query(fast_config(10_000), limits(1_500, 60_000)).await;
    let admin = api.token(ADMIN).await;
    // The first branch answers at once; the second runs into the budget.
    let query = format!("SELECT 7 AS n UNION ALL {SERIES_COUNT}");
    let record = "\n#BLUEWAVE-ERROR {\"error\":\"query_timeout\",\"message\":\
                  \"query timed out after 1500 ms and was cancelled\"}\n";
    let json = sql(&api, &admin, "application/json", &query).await;
    assert_eq!(json.status, StatusCode::OK);
    assert_eq!(String::from_utf8_lossy(&json.body), format!("[{{\"n\":7}}{record}"));
    assert!(serde_json::from_slice::<serde_json::Value>(&json.body).is_err());

    let csv = sql(&api, &admin, "text/csv", &query).await;
    assert_eq!(String::from_utf8_lossy(&csv.body), format!("n\n7\n{record}"));

    let arrow = sql(&api, &admin, "application/vnd.apache.arrow.stream", &query).await;
    assert_eq!(arrow.body.get(..4), Some(&[0xff, 0xff, 0xff, 0xff][..]));
    assert!(arrow.body.ends_with(record.as_bytes()));
    let before_record = arrow.body.len() - record.len();
    assert_ne!(
        arrow.body.get(before_record - 8..before_record),
        Some(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0][..])
    );

    // Parquet holds its rows until a row group is full (8 MiB) or the result ends: nothing was
    // sent, so the answer is still the error status.
    let parquet = sql(&api, &admin, "application/vnd.apache.parquet", &query).await;
    let timeout = "query timed out after 1500 ms and was cancelled";
    assert_error(&parquet, StatusCode::SERVICE_UNAVAILABLE, "query_timeout", timeout);
    timed_out_reaches(&api, 4).await;
}

#[tokio::test]
async fn other_users_queries_and_ingest_are_answered_while_two_runaway_queries_run() {
    let api = std::sync::Arc::new(Api::start_with_query(fast_config(10_000), limits(20_000, 60_000)).await);
    api.seed().await;
    let admin = api.token(ADMIN).await;
    let runaways: Vec<_> = (0..2)
        .map(|_| {
            let (api, admin) = (std::sync::Arc::clone(&api), admin.clone());
            tokio::spawn(async move { sql(&api, &admin, "application/json", CROSS_JOIN).await })
        })
        .collect();
    while api.query.metrics().started < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Another user: a query over the stored readings, and ingest.
    let analyst = api.token("analyst@example.org").await;
    let count = sql(&api, &analyst, "application/json", "SELECT count(*) AS n FROM readings").await;
    assert_eq!(count.json(), json!([{ "n": 2 }]));
    let operator = api.token("operator@example.org").await;
    let batch = json!({ "buoy_id": "buoy-a", "batch_seq": 7, "readings": [
        { "metric": "ph", "ts": T0 + 5_000_000_000i64, "value": 8.1 },
    ]});
    let stored = api.post("/api/telemetry", Some(&operator), batch).await;
    assert_eq!(stored.json(), json!({ "outcome": "stored", "readings": 1 }));
    let again = sql(&api, &analyst, "application/json", "SELECT count(*) AS n FROM readings").await;
    assert_eq!(again.json(), json!([{ "n": 3 }]));
    for runaway in runaways {
        let answer = runaway.await.unwrap();
        assert_error(
            &answer,
            StatusCode::SERVICE_UNAVAILABLE,
            "query_timeout",
            "query timed out after 20000 ms and was cancelled",
        );
    }
}
