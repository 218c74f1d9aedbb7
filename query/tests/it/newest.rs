//! Latest-row aggregates run newest data first: `EXPLAIN` shows the rewrite for the shapes it
//! is safe for (and only those); `EXPLAIN ANALYZE` shows one round when every group has a row
//! in the newest window and widening rounds for just the buoy whose newest row lies far back; the answers
//! stay exact through a rewrite in the buffer, a delete of the newest rows, a filter that only
//! older rows pass, and a policy.

use bluewave_engine::{BuoyId, DeleteRange, MetricName};
use bluewave_query::AccessPolicy;
use bluewave_query::datafusion::arrow::util::pretty::pretty_format_batches;

use crate::common::{Fixture, HOUR, SEC, T0, fixture};

const BUOYS: [&str; 3] = ["buoy-a", "buoy-b", "buoy-c"];

const LAST_PER_BUOY: &str = "SELECT buoy_id, last_value(value ORDER BY ts) AS v FROM readings \
                             WHERE metric = 'ph' GROUP BY buoy_id ORDER BY buoy_id";

fn text(f: &Fixture, sql: &str, policy: &AccessPolicy) -> String {
    pretty_format_batches(&f.sql(sql, policy).unwrap()).unwrap().to_string()
}

/// `(buoy, last ph)` rows of [`LAST_PER_BUOY`].
fn last_ph(f: &Fixture, sql: &str, policy: &AccessPolicy) -> Vec<(String, f64)> {
    use bluewave_query::datafusion::arrow::array::AsArray;
    use bluewave_query::datafusion::arrow::datatypes::Float64Type;
    let batches = f.sql(sql, policy).unwrap();
    let names = crate::common::strings(&batches);
    let values: Vec<f64> =
        batches.iter().flat_map(|b| b.column(1).as_primitive::<Float64Type>().values().to_vec()).collect();
    names.into_iter().zip(values).collect()
}

/// The `rounds` and `older_buoys` metrics of the `NewestFirstExec` line of `EXPLAIN ANALYZE`.
fn rounds(f: &Fixture, sql: &str) -> (String, String) {
    let plan = text(f, &format!("EXPLAIN ANALYZE {sql}"), &AccessPolicy::unrestricted());
    let start = plan.find("NewestFirstExec").unwrap_or_else(|| panic!("not rewritten: {plan}"));
    let line = &plan[start..plan[start..].find('\n').map_or(plan.len(), |e| start + e)];
    let metric = |name: &str| {
        let at = line.find(&format!("{name}=")).unwrap_or_else(|| panic!("no {name} in {line}"));
        line[at..].split([',', ']']).next().unwrap().to_owned()
    };
    (metric("rounds"), metric("older_buoys"))
}

fn rewritten(f: &Fixture, sql: &str) -> bool {
    text(f, &format!("EXPLAIN {sql}"), &AccessPolicy::unrestricted()).contains("NewestFirstExec")
}

/// Buoy `b` writes ph `value + i/100` and salinity for 10 s from `start`.
fn write(f: &Fixture, b: usize, seq: u64, start: i64, value: f64) {
    let mut rows = Vec::new();
    for i in 0..10 {
        rows.push(("ph", start + i * SEC, value + i as f64 / 100.0));
        rows.push(("salinity_psu", start + i * SEC, 35.0));
    }
    f.ingest(BUOYS[b], seq, &rows);
}

#[test]
fn only_latest_row_shapes_are_rewritten() {
    let f = fixture(&BUOYS);
    write(&f, 0, 1, T0, 8.0);
    for sql in [
        LAST_PER_BUOY,
        "SELECT metric, last_value(value ORDER BY ts) FROM readings WHERE buoy_id = 'buoy-a' GROUP BY metric",
        "SELECT buoy_id, metric, max(ts), first_value(quality ORDER BY ts DESC) FROM readings GROUP BY buoy_id, metric",
        "WITH r AS (SELECT buoy_id, ts, value FROM readings WHERE value > 1) \
         SELECT buoy_id, last_value(value ORDER BY ts) FROM r GROUP BY buoy_id",
    ] {
        assert!(rewritten(&f, sql), "{sql}");
    }
    for sql in [
        // Decided by more than the newest row.
        "SELECT buoy_id, count(*) FROM readings GROUP BY buoy_id",
        "SELECT buoy_id, last_value(value ORDER BY ts), min(ts) FROM readings GROUP BY buoy_id",
        "SELECT buoy_id, last_value(value ORDER BY value) FROM readings GROUP BY buoy_id",
        "SELECT buoy_id, first_value(value ORDER BY ts) FROM readings GROUP BY buoy_id",
        "SELECT buoy_id, last_value(value ORDER BY ts) FILTER (WHERE quality = 0) FROM readings GROUP BY buoy_id",
        // No group: one row even over no input.
        "SELECT last_value(value ORDER BY ts) FROM readings",
        // Grouped by something else, or over a limit.
        "SELECT date_bin(INTERVAL '1 hour', ts), max(ts) FROM readings GROUP BY 1",
        "SELECT buoy_id, max(ts) FROM (SELECT * FROM readings LIMIT 5) GROUP BY buoy_id",
        "SELECT buoy_id, last_value(v ORDER BY ts) FROM (SELECT buoy_id, value * 2 AS v, ts FROM readings) GROUP BY buoy_id",
    ] {
        assert!(!rewritten(&f, sql), "{sql}");
    }
}

#[test]
fn a_silent_buoy_is_found_in_older_files_and_rewrites_and_deletes_are_honoured() {
    let f = fixture(&BUOYS);
    // buoy-c goes silent after the first hour; a and b keep reporting.
    write(&f, 2, 1, T0, 7.0);
    f.engine.flush().unwrap();
    for hour in 1..4i64 {
        for b in 0..2 {
            write(&f, b, hour as u64, T0 + hour * HOUR, 8.0 + hour as f64);
        }
        f.engine.flush().unwrap();
    }
    let all = AccessPolicy::unrestricted();
    assert_eq!(
        last_ph(&f, LAST_PER_BUOY, &all),
        vec![("buoy-a".into(), 11.09), ("buoy-b".into(), 11.09), ("buoy-c".into(), 7.09)]
    );
    // A correction of buoy-a's newest ph, still in the buffer, wins over the file.
    f.ingest("buoy-a", 10, &[("ph", T0 + 3 * HOUR + 9 * SEC, 6.5)]);
    // buoy-b's newest hour of ph is deleted: its answer comes from the hour before.
    let range = DeleteRange {
        buoy: BuoyId::new("buoy-b").unwrap(),
        metric: Some(MetricName::new("ph").unwrap()),
        start: T0 + 3 * HOUR,
        end: T0 + 4 * HOUR,
    };
    f.engine.delete(&range).unwrap().wait().unwrap();
    let expected = vec![("buoy-a".into(), 6.5), ("buoy-b".into(), 10.09), ("buoy-c".into(), 7.09)];
    assert_eq!(last_ph(&f, LAST_PER_BUOY, &all), expected);
    f.engine.flush().unwrap();
    assert_eq!(last_ph(&f, LAST_PER_BUOY, &all), expected);

    // A filter only older rows pass (and buoy-a's correction): buoy-b's answer is two hours
    // back.
    let below_ten = "SELECT buoy_id, last_value(value ORDER BY ts) AS v FROM readings \
                     WHERE metric = 'ph' AND value < 10 GROUP BY buoy_id ORDER BY buoy_id";
    assert_eq!(
        last_ph(&f, below_ten, &all),
        vec![("buoy-a".into(), 6.5), ("buoy-b".into(), 9.09), ("buoy-c".into(), 7.09)]
    );

    // A policy: buoy-c is outside it, and buoy-b's rows before the third hour are too old.
    let policy = AccessPolicy::restricted(["buoy-a", "buoy-b"], Some(T0 + 3 * HOUR));
    assert_eq!(last_ph(&f, LAST_PER_BUOY, &policy), vec![("buoy-a".into(), 6.5)]);
    let policy = AccessPolicy::restricted(["buoy-b", "buoy-c"], Some(T0 + 2 * HOUR));
    assert_eq!(last_ph(&f, LAST_PER_BUOY, &policy), vec![("buoy-b".into(), 10.09)]);
}

#[test]
fn rounds_widen_only_for_the_buoy_that_went_silent() {
    let fleet: Vec<String> = (0..12).map(|i| format!("buoy-{i:02}")).collect();
    let names: Vec<&str> = fleet.iter().map(String::as_str).collect();
    let f = fixture(&names);
    let ph = |f: &Fixture, buoy: &str, seq: u64, start: i64| {
        let rows: Vec<(&str, i64, f64)> = (0..10).map(|i| ("ph", start + i * SEC, 8.0)).collect();
        f.ingest(buoy, seq, &rows);
    };
    // buoy-00 reports in the first hour only; the others every hour, with clocks a few
    // seconds apart.
    ph(&f, names[0], 1, T0);
    for hour in 1..4i64 {
        for (i, buoy) in names.iter().enumerate().skip(1) {
            ph(&f, buoy, hour as u64, T0 + hour * HOUR + i as i64 * SEC);
        }
        f.engine.flush().unwrap();
    }
    let sql = "SELECT buoy_id, max(ts) FROM readings WHERE metric = 'ph' GROUP BY buoy_id";
    // Round 0 covers the last minute of the fleet's newest hour; rounds 1 and 2 (8 and 64
    // minutes before it) look for buoy-00 alone and find nothing; round 3 reads everything
    // older of buoy-00 and finds it.
    assert_eq!(rounds(&f, sql), ("rounds=4".into(), "older_buoys=3".into()));
    let answer = text(
        &f,
        &format!(
            "SELECT buoy_id, CAST(max(ts) AS BIGINT) - {T0} AS t FROM readings WHERE metric = 'ph' GROUP BY buoy_id ORDER BY buoy_id"
        ),
        &AccessPolicy::unrestricted(),
    );
    assert!(answer.contains("| buoy-00 | 9000000000 "), "{answer}");
    assert!(answer.contains(&format!("| buoy-11 | {} ", 3 * HOUR + 20 * SEC)), "{answer}");
    // Without buoy-00, one round answers.
    let list: Vec<String> = names[1..].iter().map(|b| format!("'{b}'")).collect();
    let active = format!(
        "SELECT buoy_id, max(ts) FROM readings WHERE metric = 'ph' AND buoy_id IN ({}) GROUP BY buoy_id",
        list.join(", ")
    );
    assert_eq!(rounds(&f, &active), ("rounds=1".into(), "older_buoys=0".into()));
}
