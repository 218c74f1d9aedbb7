//! Read-only SQL: every statement that could change state, touch files or settings, or batch
//! several statements is refused with a typed error before planning.

use bluewave_query::{AccessPolicy, Error};

use crate::common::fixture;

#[test]
fn every_non_query_statement_is_refused() {
    let f = fixture(&["buoy-a"]);
    let p = AccessPolicy::unrestricted();
    for q in [
        "CREATE TABLE t (a INT)",
        "CREATE TABLE t AS SELECT * FROM readings",
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/tmp'",
        "CREATE VIEW v AS SELECT * FROM readings",
        "CREATE SCHEMA s",
        "CREATE FUNCTION f() RETURNS INT RETURN 1",
        "DROP TABLE readings",
        "DROP VIEW v",
        "INSERT INTO readings VALUES ('a', 'b', now(), 1.0, 0)",
        "UPDATE readings SET value = 0",
        "DELETE FROM readings",
        "TRUNCATE readings",
        "COPY readings TO '/tmp/out.parquet'",
        "COPY (SELECT 1) TO '/tmp/out.csv'",
        "SET datafusion.execution.batch_size = 1",
        "RESET datafusion.execution.batch_size",
        "SHOW TABLES",
        "SHOW ALL",
        "DESCRIBE readings",
        "PREPARE p AS SELECT 1",
        "EXECUTE p",
        "BEGIN",
        "COMMIT",
        "EXPLAIN CREATE TABLE t (a INT)",
        "EXPLAIN COPY (SELECT 1) TO '/tmp/x.csv'",
        "SELECT 1; SELECT 2",
        "SELECT 1; DROP TABLE readings",
    ] {
        match f.sql(q, &p) {
            Err(e @ Error::Refused(_)) => assert!(e.is_user_error()),
            other => panic!("{q}: expected a refusal, got {other:?}"),
        }
    }
}

#[test]
fn select_into_and_garbage_are_user_errors() {
    let f = fixture(&["buoy-a"]);
    let p = AccessPolicy::unrestricted();
    for q in ["SELECT * INTO t2 FROM readings", "SELEC 1", "", "SELECT nope FROM readings"] {
        match f.sql(q, &p) {
            Err(e) => assert!(e.is_user_error(), "{q}: {e:?}"),
            Ok(_) => panic!("{q} ran"),
        }
    }
    // Queries, CTEs, VALUES and EXPLAIN are fine.
    for q in ["SELECT 1", "WITH x AS (SELECT 1) SELECT * FROM x", "VALUES (1)", "EXPLAIN SELECT 1"] {
        f.sql(q, &p).unwrap_or_else(|e| panic!("{q}: {e}"));
    }
}
