//! Resource limits: runaway queries end with a timeout error while ingest keeps acking; a
//! query over its memory pool ends with a memory error; the row cap and the concurrency cap
//! give typed errors.

use std::time::Duration;

use bluewave_query::{AccessPolicy, Error, QueryConfig};

use crate::common::{SEC, T0, fixture, fixture_with};

fn bounded(timeout_ms: u64) -> AccessPolicy {
    AccessPolicy { timeout: Duration::from_millis(timeout_ms), ..AccessPolicy::unrestricted() }
}

#[test]
fn runaway_queries_time_out_while_ingest_continues() {
    let f = fixture(&["buoy-a"]);
    let rows: Vec<_> = (0..2_000).map(|i| ("ph", T0 + i * SEC, 8.0)).collect();
    f.ingest("buoy-a", 1, &rows);
    f.engine.flush().unwrap();
    let policy = bounded(1_500);
    std::thread::scope(|scope| {
        let ingest = scope.spawn(|| {
            // Ingest keeps acking while the queries run.
            for seq in 2..40u64 {
                let ts = T0 + 10_000 * SEC + seq as i64 * SEC;
                f.ingest("buoy-a", seq, &[("ph", ts, 8.1)]);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        for q in [
            "SELECT count(*) FROM generate_series(1, 1000000000000)",
            "SELECT count(*) FROM readings a CROSS JOIN readings b CROSS JOIN readings c",
        ] {
            match f.sql(q, &policy) {
                Err(e @ Error::Timeout { timeout_ms: 1_500 }) => {
                    assert!(e.is_user_error());
                    assert!(e.to_string().contains("timed out"), "{e}");
                }
                other => panic!("{q}: {other:?}"),
            }
        }
        ingest.join().unwrap();
    });
    let total = f.sql_count("SELECT count(*) FROM readings", &AccessPolicy::unrestricted()).unwrap();
    assert_eq!(total, 2_000 + 38);
}

#[test]
fn memory_limit_ends_the_query() {
    let f = fixture(&["buoy-a"]);
    let rows: Vec<_> = (0..50_000).map(|i| ("ph", T0 + i * SEC, (i % 977) as f64)).collect();
    f.ingest("buoy-a", 1, &rows);
    f.engine.flush().unwrap();
    let policy = AccessPolicy { memory_max_bytes: 1 << 20, ..AccessPolicy::unrestricted() };
    let q = "SELECT ts, value, buoy_id, metric FROM readings ORDER BY value, ts DESC";
    match f.sql(q, &policy) {
        Err(e @ Error::MemoryLimit { memory_max_bytes: 1_048_576, .. }) => {
            assert!(e.is_user_error());
            assert!(e.to_string().contains("memory limit"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // The same query fits a larger pool.
    let wide = AccessPolicy { memory_max_bytes: 256 << 20, ..AccessPolicy::unrestricted() };
    assert_eq!(f.sql(q, &wide).unwrap().iter().map(|b| b.num_rows()).sum::<usize>(), 50_000);
}

#[test]
fn row_cap_and_concurrency_cap_are_typed_errors() {
    let config = QueryConfig { queries_max: 1, ..QueryConfig::default() };
    let f = fixture_with(&["buoy-a"], config);
    let rows: Vec<_> = (0..100).map(|i| ("ph", T0 + i * SEC, 8.0)).collect();
    f.ingest("buoy-a", 1, &rows);
    let capped = AccessPolicy { rows_max: 10, ..AccessPolicy::unrestricted() };
    assert!(matches!(f.sql("SELECT * FROM readings", &capped), Err(Error::RowLimit { rows_max: 10 })));
    assert_eq!(f.sql("SELECT * FROM readings LIMIT 10", &capped).unwrap()[0].num_rows(), 10);

    let slow = bounded(60_000);
    f.service
        .block_on(async {
            let running =
                f.service.sql("SELECT count(*) FROM generate_series(1, 1000000000000)", &slow).await;
            let second = f.service.sql("SELECT 1", &slow).await;
            assert!(matches!(second, Err(Error::Busy { queries_max: 1 })), "{second:?}");
            drop(running); // cancels the first query and frees its slot
        })
        .unwrap();
}
