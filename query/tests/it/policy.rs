//! Policy escapes: a caller limited to buoy A and the last 7 days never sees, counts or learns
//! of other buoys' rows or older rows, through UNION, subqueries, CTEs, joins with `buoys`,
//! information_schema, EXPLAIN / EXPLAIN ANALYZE, aggregates or typed reads.

use bluewave_query::{AccessPolicy, Error, TelemetryFilter};

use crate::common::{DAY, Fixture, SEC, T0, fixture, strings};

const NOW: i64 = T0 + 30 * DAY;

/// A: 10 recent + 10 old rows; B: 10 recent rows (half flushed, half buffered).
fn setup() -> (Fixture, AccessPolicy) {
    let f = fixture(&["buoy-a", "buoy-b"]);
    let recent: Vec<_> = (0..10).map(|i| ("ph", NOW - DAY + i * SEC, 8.0 + i as f64 / 100.0)).collect();
    let old: Vec<_> = (0..10).map(|i| ("ph", NOW - 20 * DAY + i * SEC, 7.0)).collect();
    f.ingest("buoy-a", 1, &recent);
    f.ingest("buoy-a", 2, &old);
    f.ingest("buoy-b", 1, &recent[..5]);
    f.engine.flush().unwrap();
    f.ingest("buoy-b", 2, &recent[5..]);
    let policy = AccessPolicy::restricted(["buoy-a"], Some(NOW - 7 * DAY));
    (f, policy)
}

#[test]
fn every_query_shape_stays_inside_the_policy() {
    let (f, p) = setup();
    let count = |q: &str| f.sql_count(q, &p).unwrap();
    assert_eq!(count("SELECT count(*) FROM readings"), 10);
    assert_eq!(count("SELECT count(*) FROM readings WHERE buoy_id = 'buoy-b'"), 0);
    assert_eq!(
        count("SELECT count(*) FROM readings WHERE ts < to_timestamp_nanos(0) + INTERVAL '100000 days'"),
        10
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM (SELECT buoy_id FROM readings UNION ALL SELECT buoy_id FROM readings WHERE buoy_id <> 'buoy-a')"
        ),
        10
    );
    assert_eq!(
        count("SELECT count(*) FROM (SELECT * FROM (SELECT * FROM readings) r WHERE r.buoy_id = 'buoy-b')"),
        0
    );
    assert_eq!(
        count(&format!(
            "WITH old AS (SELECT * FROM readings WHERE ts < to_timestamp_nanos({})) SELECT count(*) FROM old",
            NOW - 7 * DAY
        )),
        0
    );
    assert_eq!(count("SELECT count(*) FROM readings a JOIN readings b ON a.ts = b.ts"), 10);
    assert_eq!(count("SELECT count(*) FROM readings WHERE buoy_id IN (SELECT id FROM buoys)"), 10);
    assert_eq!(count("SELECT count(*) FROM buoys"), 1);
    assert_eq!(
        count("SELECT count(*) FROM buoys b LEFT JOIN readings r ON r.buoy_id = b.id WHERE b.id = 'buoy-b'"),
        0
    );
    assert_eq!(count("SELECT count(DISTINCT buoy_id) FROM readings"), 1);
    assert_eq!(strings(&f.sql("SELECT id FROM buoys", &p).unwrap()), vec!["buoy-a"]);
    assert_eq!(strings(&f.sql("SELECT DISTINCT buoy_id FROM readings", &p).unwrap()), vec!["buoy-a"]);
    // Side channels through aggregates: the oldest visible row is inside the window.
    let min = f.sql_count("SELECT CAST(min(ts) AS BIGINT) FROM readings", &p).unwrap();
    assert!(min >= NOW - 7 * DAY, "min(ts) {min} reveals older rows");
    // A buoy outside the scope looks exactly like one that does not exist.
    let outside = f.sql_rows("SELECT * FROM readings WHERE buoy_id = 'buoy-b'", &p).unwrap();
    let missing = f.sql_rows("SELECT * FROM readings WHERE buoy_id = 'buoy-zzz'", &p).unwrap();
    assert!(outside.is_empty() && missing.is_empty());
}

#[test]
fn information_schema_and_catalog_tables_are_absent() {
    let (f, p) = setup();
    for q in [
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM information_schema.columns",
        "SELECT * FROM datafusion.public.readings",
        "SELECT * FROM 'catalog.redb'",
        "SELECT * FROM '/etc/passwd'",
    ] {
        match f.sql(q, &p) {
            Err(Error::InvalidSql(_)) => {}
            other => panic!("{q}: {other:?}"),
        }
    }
}

#[test]
fn explain_shows_only_policy_restricted_scans() {
    let (f, p) = setup();
    // Asking for a buoy outside the scope plans an empty scan: no file is even selected.
    let batches = f.sql("EXPLAIN SELECT * FROM readings WHERE buoy_id = 'buoy-b'", &p).unwrap();
    let text =
        bluewave_query::datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
    assert!(
        text.contains("files_selected=0, files_pruned=0, files_merged=0, buoys_merged=0, buffer_chunks=0"),
        "{text}"
    );
    let batches = f.sql("EXPLAIN SELECT * FROM readings", &p).unwrap();
    let text = format!(
        "{}",
        bluewave_query::datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap()
    );
    assert!(text.contains("ReadingsScanExec: policy=[buoys=1 granted"), "{text}");
    assert!(!text.contains("buoy-b"), "{text}");
    let analyzed = f.sql("EXPLAIN ANALYZE SELECT * FROM readings", &p).unwrap();
    let text = format!(
        "{}",
        bluewave_query::datafusion::arrow::util::pretty::pretty_format_batches(&analyzed).unwrap()
    );
    assert!(text.contains("ReadingsScanExec"), "{text}");
    assert!(text.contains("output_rows=10"), "{text}");
    assert!(!text.contains("buoy-b"), "{text}");
    // A count answered from catalog statistics counts only the caller's rows too.
    let analyzed = f.sql("EXPLAIN ANALYZE SELECT count(*) FROM readings", &p).unwrap();
    let text = format!(
        "{}",
        bluewave_query::datafusion::arrow::util::pretty::pretty_format_batches(&analyzed).unwrap()
    );
    assert!(text.contains("CatalogAggregateExec"), "{text}");
    // The file holds both buoys: the caller's buoy's series statistics answer for it.
    assert!(text.contains("files_from_statistics=1, files_scanned=0, rows_from_statistics=10"), "{text}");
    assert!(!text.contains("buoy-b"), "{text}");
}

#[test]
fn typed_reads_respect_the_policy() {
    let (f, p) = setup();
    let read = |filter: TelemetryFilter| {
        f.service.block_on(async { f.service.read(&filter, &p).await?.collect_batches().await }).unwrap()
    };
    let all = crate::common::rows(&read(TelemetryFilter::default()).unwrap());
    assert_eq!(all.len(), 10);
    assert!(all.iter().all(|r| r.0 == "buoy-a" && r.2 >= NOW - 7 * DAY));
    let older = read(TelemetryFilter { start: Some(0), ..TelemetryFilter::default() }).unwrap();
    assert_eq!(crate::common::rows(&older).len(), 10);
    match read(TelemetryFilter { buoy_id: Some("buoy-b".into()), ..TelemetryFilter::default() }) {
        Err(e @ Error::PolicyDenied(_)) => assert!(e.is_user_error()),
        other => panic!("{other:?}"),
    }
    // Unknown buoys are denied the same way: no existence oracle.
    assert!(matches!(
        read(TelemetryFilter { buoy_id: Some("buoy-zzz".into()), ..TelemetryFilter::default() }),
        Err(Error::PolicyDenied(_))
    ));
}
