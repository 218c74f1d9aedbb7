//! The QUIC ingest server on loopback, over a real engine in a tempdir, driven by a raw quinn
//! client that sends exact bytes. Proves: a batch round trip is durable and visible in the
//! engine; concurrent buoys; duplicate, rejected and refused answers with their exact codes;
//! deadlines; malformed frames reset with their codes and repeated violations close the
//! connection; the stream limit makes extra streams wait; revocation, graceful shutdown and
//! restart on the same data dir.

use bluewave_engine::{MetricName, ReadingBatch};
use std::time::Duration;

use bluewave_wire::{
    Ack, AckStatus, ConnectionCloseCode, HEADER_BYTES, MAGIC, PresharedTokens, RefuseReason, RejectReason,
    ServerConfig, ServerIdentity, StreamErrorCode, TokenFileError, VERSION, encode_batch,
};

use crate::common::{
    HelloAnswer, StreamEnd, TestServer, closed_with, dictionary, read_answer, send_hello, send_raw,
    test_config, token_for,
};

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

/// A frame header with any type byte and declared payload length.
fn header(frame_type: u8, payload_len: u32) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.push(VERSION);
    out.push(frame_type);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&payload_len.to_le_bytes());
    out
}

fn refused(answer: HelloAnswer) -> (RefuseReason, u32) {
    match answer {
        HelloAnswer::Refused(r) => (r.reason, r.retry_after_ms),
        other => panic!("expected REFUSED, got {other:?}"),
    }
}

const HELLO_REFUSED: Option<u64> = Some(ConnectionCloseCode::HelloRefused as u64);

fn reset(code: StreamErrorCode) -> StreamEnd {
    StreamEnd::Reset(code as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_buoys_concurrently_each_batch_stored_once() {
    const BUOYS: usize = 16;
    const BATCHES: u64 = 4;
    let server = TestServer::start().await;
    let client = server.raw_client();
    let mut tasks = Vec::new();
    for b in 0..BUOYS {
        let buoy = format!("buoy-{b}");
        let token = server.add_device(&buoy);
        let connection = client.session(&token, NAMES).await;
        tasks.push(tokio::spawn(async move {
            // Every batch of the buoy in flight at once, each on its own stream.
            let sends = (1..=BATCHES).map(|seq| {
                let connection = connection.clone();
                async move { send_raw(&connection, &batch_frame_at(seq, 50)).await }
            });
            futures_join_all(sends).await
        }));
    }
    for task in tasks {
        let answers = task.await.unwrap();
        let seqs: Vec<StreamEnd> = (1..=BATCHES).map(|seq| ack(seq, AckStatus::Stored)).collect();
        assert_eq!(answers, seqs);
    }
    let all: Vec<ReadingBatch> = (1..=BATCHES).map(|seq| batch_at(seq, 50)).collect();
    for b in 0..BUOYS {
        assert_eq!(stored_rows(&server, &format!("buoy-{b}")), expected_rows(&all));
    }
    let metrics = server.handle().metrics();
    assert_eq!(metrics.connections_accepted, BUOYS as u64);
    assert_eq!(metrics.acks_stored, BUOYS as u64 * BATCHES);
    assert_eq!(metrics.readings_received, BUOYS as u64 * BATCHES * 50);
}

/// Runs futures concurrently and returns their outputs in order.
async fn futures_join_all<F: std::future::Future<Output = T> + Send + 'static, T: Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<T> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// `batch(n)` shifted so batch `seq` holds its own timestamps.
fn batch_at(seq: u64, n: usize) -> ReadingBatch {
    let b = batch(n);
    let shift = seq as i64 * 1_000_000_000_000;
    let ts = b.timestamps().iter().map(|t| t + shift).collect();
    ReadingBatch::new(b.metric_names().to_vec(), ts, b.metric_ids().to_vec(), b.values().to_vec()).unwrap()
}

fn batch_frame_at(seq: u64, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    encode_batch(seq, &batch_at(seq, n), &dictionary(NAMES), &mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resent_batch_is_answered_duplicate_and_stored_once() {
    let server = TestServer::start().await;
    let connection = server.raw_client().session(&server.add_device("buoy-1"), NAMES).await;
    assert_eq!(send_raw(&connection, &batch_frame(7, 12)).await, ack(7, AckStatus::Stored));
    assert_eq!(send_raw(&connection, &batch_frame(7, 12)).await, ack(7, AckStatus::Duplicate));
    // A second connection of the same buoy shares its sequence space.
    let again = server.raw_client().session(&token_for("buoy-1"), NAMES).await;
    assert_eq!(send_raw(&again, &batch_frame(7, 12)).await, ack(7, AckStatus::Duplicate));
    assert_eq!(stored_rows(&server, "buoy-1"), expected_rows(&[batch(12)]));
    let metrics = server.handle().metrics();
    assert_eq!((metrics.acks_stored, metrics.acks_duplicate), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_content_is_rejected_with_its_reason() {
    let config = bluewave_wire::ServerConfig { batch_readings_max: 5, ..test_config() };
    let server = TestServer::start_with(config).await;
    let token = server.add_device("buoy-1");
    // The HELLO names two metrics; the frames below use id 2 (the third of NAMES).
    let short = server.raw_client().session(&token, &NAMES[..2]).await;
    assert_eq!(
        send_raw(&short, &batch_frame(1, 3)).await,
        ack(1, AckStatus::Rejected(RejectReason::UnknownMetricId))
    );

    let connection = server.raw_client().session(&token, NAMES).await;
    let mut nan = batch_frame(2, 3);
    let last = nan.len() - 8;
    nan[last..].copy_from_slice(&f64::NAN.to_le_bytes());
    assert_eq!(send_raw(&connection, &nan).await, ack(2, AckStatus::Rejected(RejectReason::NonFiniteValue)));
    let mut inf = batch_frame(3, 3);
    let last = inf.len() - 8;
    inf[last..].copy_from_slice(&f64::NEG_INFINITY.to_le_bytes());
    assert_eq!(send_raw(&connection, &inf).await, ack(3, AckStatus::Rejected(RejectReason::NonFiniteValue)));

    assert_eq!(
        send_raw(&connection, &batch_frame(4, 6)).await,
        ack(4, AckStatus::Rejected(RejectReason::TooManyReadings))
    );

    let mut empty = header(0x04, 20);
    empty.extend_from_slice(&5u64.to_le_bytes());
    empty.extend_from_slice(&0u32.to_le_bytes());
    empty.extend_from_slice(&T0.to_le_bytes());
    assert_eq!(send_raw(&connection, &empty).await, ack(5, AckStatus::Rejected(RejectReason::EmptyBatch)));

    let mut far = batch_frame(6, 1);
    far[HEADER_BYTES + 12..HEADER_BYTES + 20].copy_from_slice(&i64::MAX.to_le_bytes());
    assert_eq!(
        send_raw(&connection, &far).await,
        ack(6, AckStatus::Rejected(RejectReason::TimestampOutOfRange))
    );

    assert_eq!(send_raw(&connection, &batch_frame(5_000, 2)).await, ack(5_000, AckStatus::Stored));
    assert_eq!(
        send_raw(&connection, &batch_frame(1, 2)).await,
        ack(1, AckStatus::Rejected(RejectReason::StaleSequence))
    );
    // Only the one good batch is stored; a rejected answer is not a violation.
    assert_eq!(stored_rows(&server, "buoy-1"), expected_rows(&[batch(2)]));
    let metrics = server.handle().metrics();
    assert_eq!((metrics.acks_rejected, metrics.acks_stored), (7, 1));
    assert_eq!(metrics.resets_by_code, [0; 6]);
}

/// A server whose engine buffer bound is far below one batch, and a session whose first batch
/// is stored and fills it: the next ingest finds the buffer full until a flush (the flusher's
/// next tick, within 100 ms) frees it.
async fn session_with_a_full_buffer(busy_wait_ms: u64) -> (TestServer, quinn::Connection) {
    let config = ServerConfig { busy_wait_ms, ..test_config() };
    let server = TestServer::start_with_engine(config, |engine| {
        engine.flush_buffer_bytes = 1;
        engine.buffer_bytes_max = 2;
        engine.flush_interval_ms = 3_600_000;
    })
    .await;
    let connection = server.raw_client().session(&server.add_device("buoy-1"), NAMES).await;
    assert_eq!(send_raw(&connection, &batch_frame_at(1, 3)).await, ack(1, AckStatus::Stored));
    assert!(server.engine().buffer_full());
    (server, connection)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_busy_is_answered_busy_with_retry_after() {
    // `busy_wait_ms` 0: no waiting for the flush.
    let (server, connection) = session_with_a_full_buffer(0).await;
    let StreamEnd::Ack(Ack { batch_seq: 2, status: AckStatus::Busy { retry_after_ms } }) =
        send_raw(&connection, &batch_frame_at(2, 3)).await
    else {
        panic!("expected busy");
    };
    assert!(retry_after_ms > 0);
    assert_eq!(server.handle().metrics().acks_busy, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_finds_the_buffer_full_waits_for_a_flush_instead_of_busy() {
    let (server, connection) = session_with_a_full_buffer(60_000).await;
    // The second batch waits for the flush and is stored, where `busy_wait_ms` 0 answers busy.
    assert_eq!(send_raw(&connection, &batch_frame_at(2, 3)).await, ack(2, AckStatus::Stored));
    assert!(server.engine().metrics().flushes >= 1);
    assert_eq!(stored_rows(&server, "buoy-1"), expected_rows(&[batch_at(1, 3), batch_at(2, 3)]));
    let metrics = server.handle().metrics();
    assert_eq!((metrics.acks_stored, metrics.acks_busy), (2, 0));
}

/// A server whose engine keeps its compaction debt (no background compactor; ingest slows at 2
/// generations in a partition and is refused at 3), and a session whose buoy has three batches
/// stored through the engine, each flushed into the same partition: the debt is at the busy
/// bound.
async fn session_with_compaction_debt(busy_wait_ms: u64) -> (TestServer, quinn::Connection) {
    let config = ServerConfig { busy_wait_ms, ..test_config() };
    let server = TestServer::start_with_engine(config, |engine| {
        engine.compaction_background = false;
        engine.compaction_debt_slowdown_generations = 2;
        engine.compaction_debt_busy_generations = 3;
    })
    .await;
    let connection = server.raw_client().session(&server.add_device("buoy-1"), NAMES).await;
    let engine = server.engine().clone();
    tokio::task::spawn_blocking(move || {
        let buoy = bluewave_engine::BuoyId::new("buoy-1").unwrap();
        for seq in 1..=3 {
            engine.ingest(&buoy, seq, batch(3)).unwrap().wait().unwrap();
            engine.flush().unwrap();
        }
    })
    .await
    .unwrap();
    assert_eq!(server.engine().metrics().compaction_generations_max, 3);
    assert!(server.engine().ingest_throttled());
    (server, connection)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_debt_at_its_bound_is_answered_busy_with_the_debts_retry_delay() {
    // `busy_wait_ms` 0: no waiting for the compactor.
    let (server, connection) = session_with_compaction_debt(0).await;
    assert_eq!(
        send_raw(&connection, &batch_frame(4, 3)).await,
        ack(4, AckStatus::Busy { retry_after_ms: 1_000 })
    );
    assert_eq!(server.engine().metrics().batches_refused_compaction_debt, 1);
    let engine = server.engine().clone();
    assert_eq!(tokio::task::spawn_blocking(move || engine.compact()).await.unwrap().unwrap(), 1);
    assert_eq!(send_raw(&connection, &batch_frame(4, 3)).await, ack(4, AckStatus::Stored));
    assert_eq!(stored_rows(&server, "buoy-1"), expected_rows(&[batch(3)]));
    let metrics = server.handle().metrics();
    assert_eq!((metrics.acks_stored, metrics.acks_busy), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_held_back_by_compaction_debt_waits_for_the_compactor_instead_of_busy() {
    let (server, connection) = session_with_compaction_debt(60_000).await;
    // The batch waits on the engine's room (the debt is past the slowdown bound) and is stored
    // once a compaction brings the debt down, where `busy_wait_ms` 0 answers busy.
    let sent = tokio::spawn(async move { send_raw(&connection, &batch_frame(4, 3)).await });
    // Gives the batch time to reach the server first (not an assertion: either order stores it).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let engine = server.engine().clone();
    assert_eq!(tokio::task::spawn_blocking(move || engine.compact()).await.unwrap().unwrap(), 1);
    assert_eq!(sent.await.unwrap(), ack(4, AckStatus::Stored));
    assert_eq!(server.engine().metrics().batches_refused_compaction_debt, 0);
    let metrics = server.handle().metrics();
    assert_eq!((metrics.acks_stored, metrics.acks_busy), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_refusals_carry_their_reason_and_close_hello_refused() {
    let server = TestServer::start().await;
    server.add_device("buoy-1");
    server.add_token("ghost", &token_for("ghost")); // a token, but the buoy is not registered
    let client = server.raw_client();

    let (connection, answer) = client.hello("", NAMES).await;
    assert_eq!(refused(answer), (RefuseReason::TokenMissing, 0));
    assert_eq!(closed_with(&connection).await, HELLO_REFUSED);

    let (connection, answer) = client.hello("not-a-token-anyone-issued", NAMES).await;
    assert_eq!(refused(answer), (RefuseReason::TokenBadSignature, 0));
    assert_eq!(closed_with(&connection).await, HELLO_REFUSED);

    let (connection, answer) = client.hello(&token_for("ghost"), NAMES).await;
    assert_eq!(refused(answer), (RefuseReason::BuoyNotRegistered, 0));
    assert_eq!(closed_with(&connection).await, HELLO_REFUSED);

    // A dictionary naming "ph" twice (MetricDictionary refuses to build one, so by hand).
    let token = token_for("buoy-1");
    let mut payload = (token.len() as u16).to_le_bytes().to_vec();
    payload.extend_from_slice(token.as_bytes());
    payload.extend_from_slice(&2u16.to_le_bytes());
    payload.extend_from_slice(b"\x02ph\x02ph");
    let mut frame = header(0x01, payload.len() as u32);
    frame.extend_from_slice(&payload);
    let connection = client.connect().await;
    assert_eq!(refused(send_hello(&connection, &frame).await), (RefuseReason::BadDictionary, 0));
    assert_eq!(closed_with(&connection).await, HELLO_REFUSED);

    let metrics = server.handle().metrics();
    for reason in [
        RefuseReason::TokenMissing,
        RefuseReason::TokenBadSignature,
        RefuseReason::BuoyNotRegistered,
        RefuseReason::BadDictionary,
    ] {
        assert_eq!(metrics.refused(reason), 1, "{reason:?}");
    }
    assert_eq!(metrics.connections_accepted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_device_is_disconnected_and_refused() {
    let server = TestServer::start().await;
    let token = server.add_device("buoy-1");
    let other = server.raw_client().session(&server.add_device("buoy-2"), NAMES).await;
    let connection = server.raw_client().session(&token, NAMES).await;
    assert_eq!(send_raw(&connection, &batch_frame(1, 3)).await, ack(1, AckStatus::Stored));

    assert_eq!(server.revoke("buoy-1"), 1);
    assert_eq!(closed_with(&connection).await, Some(ConnectionCloseCode::DeviceRevoked as u64));
    let (again, answer) = server.raw_client().hello(&token, NAMES).await;
    assert_eq!(refused(answer), (RefuseReason::DeviceRevoked, 0));
    assert_eq!(closed_with(&again).await, HELLO_REFUSED);
    // Other buoys are not affected.
    assert_eq!(send_raw(&other, &batch_frame(1, 3)).await, ack(1, AckStatus::Stored));
    assert_eq!(server.handle().metrics().closed_device_revoked, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_above_the_limit_are_refused_busy() {
    let config = bluewave_wire::ServerConfig { connections_max: 1, ..test_config() };
    let server = TestServer::start_with(config).await;
    let token = server.add_device("buoy-1");
    let first = server.raw_client().session(&token, NAMES).await;
    let (second, answer) = server.raw_client().hello(&token, NAMES).await;
    assert_eq!(refused(answer), (RefuseReason::ServerBusy, 1_000));
    assert_eq!(closed_with(&second).await, HELLO_REFUSED);
    // Once the first connection is gone, a new one is accepted.
    first.close(0u32.into(), b"bye");
    tokio::time::timeout(Duration::from_secs(5), async {
        while server.handle().metrics().connections_open > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    server.raw_client().session(&token, NAMES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_never_sent_closes_hello_timeout() {
    let server = TestServer::start().await; // hello_deadline_ms = 1,000
    let connection = server.raw_client().connect().await;
    assert_eq!(closed_with(&connection).await, Some(ConnectionCloseCode::HelloTimeout as u64));
    // Half a HELLO is no better.
    let connection = server.raw_client().connect().await;
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    send.write_all(&crate::common::hello_frame("abc", NAMES)[..10]).await.unwrap();
    assert_eq!(closed_with(&connection).await, Some(ConnectionCloseCode::HelloTimeout as u64));
    assert_eq!(server.handle().metrics().closed_hello_timeout, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_before_hello_is_a_protocol_violation() {
    let server = TestServer::start().await;
    server.add_device("buoy-1");
    let connection = server.raw_client().connect().await;
    // The stream is reset and the connection closed at once; either may reach the client first.
    let end = send_raw(&connection, &batch_frame(1, 3)).await;
    let violation = StreamEnd::Closed(Some(ConnectionCloseCode::ProtocolViolation as u64));
    assert!(end == reset(StreamErrorCode::UnexpectedFrame) || end == violation, "{end:?}");
    assert_eq!(closed_with(&connection).await, Some(ConnectionCloseCode::ProtocolViolation as u64));
    assert!(server.readings("buoy-1").is_empty());

    // A second stream opened before ACCEPTED, too.
    let connection = server.raw_client().connect().await;
    let (mut hello_send, _hello_recv) = connection.open_bi().await.unwrap();
    hello_send.write_all(&header(0x01, 100)).await.unwrap(); // HELLO not complete yet
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    send.write_all(&batch_frame(1, 3)).await.unwrap();
    send.finish().unwrap();
    assert_eq!(closed_with(&connection).await, Some(ConnectionCloseCode::ProtocolViolation as u64));

    // A malformed HELLO (token byte outside the alphabet).
    let connection = server.raw_client().connect().await;
    let mut frame = crate::common::hello_frame(&token_for("buoy-1"), NAMES);
    frame[HEADER_BYTES + 2] = b' ';
    let (mut send, recv) = connection.open_bi().await.unwrap();
    send.write_all(&frame).await.unwrap();
    send.finish().unwrap();
    let end = read_answer(recv).await;
    assert!(end == reset(StreamErrorCode::MalformedFrame) || end == violation, "{end:?}");
    assert_eq!(closed_with(&connection).await, Some(ConnectionCloseCode::ProtocolViolation as u64));
    assert_eq!(server.handle().metrics().closed_protocol_violation, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_reset_their_stream_only() {
    let server = TestServer::start().await;
    let connection = server.raw_client().session(&server.add_device("buoy-1"), NAMES).await;

    // A header claiming 4 GiB: refused from the 12 header bytes; the stream stays open on the
    // client's side (no FIN), so the answer cannot have waited for the payload.
    let (mut send, recv) = connection.open_bi().await.unwrap();
    send.write_all(&header(0x04, u32::MAX)).await.unwrap();
    assert_eq!(read_answer(recv).await, reset(StreamErrorCode::FrameTooLarge));

    // Truncated: the header announces the whole frame, the stream ends after 20 bytes of it.
    let whole = batch_frame(1, 3);
    assert_eq!(
        send_raw(&connection, &whole[..HEADER_BYTES + 20]).await,
        reset(StreamErrorCode::MalformedFrame)
    );

    // The connection still works.
    assert_eq!(send_raw(&connection, &batch_frame(2, 3)).await, ack(2, AckStatus::Stored));
    assert_eq!(server.handle().metrics().resets(StreamErrorCode::FrameTooLarge), 1);
    assert_eq!(server.handle().metrics().resets(StreamErrorCode::MalformedFrame), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_the_frame_and_wrong_types_are_reset() {
    let config = bluewave_wire::ServerConfig { violations_max: 10, ..test_config() };
    let server = TestServer::start_with(config).await;
    let connection = server.raw_client().session(&server.add_device("buoy-1"), NAMES).await;

    let mut trailing = batch_frame(1, 3);
    trailing.push(0);
    assert_eq!(send_raw(&connection, &trailing).await, reset(StreamErrorCode::MalformedFrame));

    // Unknown frame type 0x09, and a known type not allowed on a batch stream (ACK).
    assert_eq!(send_raw(&connection, &header(0x09, 0)).await, reset(StreamErrorCode::UnexpectedFrame));
    let mut ack_frame = Vec::new();
    Ack { batch_seq: 1, status: AckStatus::Stored }.encode(&mut ack_frame);
    assert_eq!(send_raw(&connection, &ack_frame).await, reset(StreamErrorCode::UnexpectedFrame));

    // Bad magic and a version this server does not speak.
    let mut bad_magic = batch_frame(1, 3);
    bad_magic[0] = b'X';
    assert_eq!(send_raw(&connection, &bad_magic).await, reset(StreamErrorCode::MalformedFrame));
    let mut version_2 = batch_frame(1, 3);
    version_2[4] = 2;
    assert_eq!(send_raw(&connection, &version_2).await, reset(StreamErrorCode::UnsupportedVersion));

    // None of it was stored; the connection still works.
    assert!(server.readings("buoy-1").is_empty());
    assert_eq!(send_raw(&connection, &batch_frame(1, 3)).await, ack(1, AckStatus::Stored));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_violations_close_the_connection() {
    let server = TestServer::start().await; // violations_max = 3
    let connection = server.raw_client().session(&server.add_device("buoy-1"), NAMES).await;
    for _ in 0..3 {
        assert_eq!(send_raw(&connection, &header(0x09, 0)).await, reset(StreamErrorCode::UnexpectedFrame));
    }
    // The fourth closes the connection.
    let end = send_raw(&connection, &header(0x09, 0)).await;
    assert!(
        end == reset(StreamErrorCode::UnexpectedFrame)
            || end == StreamEnd::Closed(Some(ConnectionCloseCode::TooManyViolations as u64)),
        "{end:?}"
    );
    assert_eq!(closed_with(&connection).await, Some(ConnectionCloseCode::TooManyViolations as u64));
    assert_eq!(server.handle().metrics().closed_too_many_violations, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_without_fin_is_reset_stream_timeout() {
    let server = TestServer::start().await; // stream_deadline_ms = 1,000
    let connection = server.raw_client().session(&server.add_device("buoy-1"), NAMES).await;
    let (mut send, recv) = connection.open_bi().await.unwrap();
    send.write_all(&batch_frame(1, 3)).await.unwrap(); // whole frame, but no FIN
    assert_eq!(read_answer(recv).await, reset(StreamErrorCode::StreamTimeout));
    // A timeout is not a violation and the batch was not stored.
    assert!(server.readings("buoy-1").is_empty());
    assert_eq!(send_raw(&connection, &batch_frame(1, 3)).await, ack(1, AckStatus::Stored));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_above_the_limit_wait_for_flow_control() {
    let config = bluewave_wire::ServerConfig { streams_per_connection_max: 2, ..test_config() };
    let server = TestServer::start_with(config).await;
    let connection = server.raw_client().session(&server.add_device("buoy-1"), NAMES).await;
    // Two batch streams open and unfinished use up the limit.
    let first = batch_frame(1, 3);
    let mut open = Vec::new();
    for _ in 0..2 {
        let (mut send, recv) = connection.open_bi().await.unwrap();
        send.write_all(&first[..HEADER_BYTES]).await.unwrap();
        open.push((send, recv));
    }
    // A third cannot even be opened: QUIC MAX_STREAMS holds it back (no error, it waits).
    let third = tokio::time::timeout(Duration::from_millis(300), connection.open_bi()).await;
    assert!(third.is_err(), "third stream opened above the limit");
    // Finishing the first two frees the credit.
    for (seq, (mut send, recv)) in (1u64..).zip(open) {
        let frame = batch_frame_at(seq, 3);
        // Every frame starts with the same header for equal reading counts.
        assert_eq!(frame[..HEADER_BYTES], first[..HEADER_BYTES]);
        send.write_all(&frame[HEADER_BYTES..]).await.unwrap();
        send.finish().unwrap();
        assert_eq!(read_answer(recv).await, ack(seq, AckStatus::Stored));
    }
    let third_frame = batch_frame_at(3, 3);
    let third = tokio::time::timeout(Duration::from_secs(5), send_raw(&connection, &third_frame));
    assert_eq!(third.await.unwrap(), ack(3, AckStatus::Stored));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_in_flight_batches_then_goes_away() {
    let mut server = TestServer::start().await; // drain_deadline_ms = 2,000
    let token = server.add_device("buoy-1");
    let connection = server.raw_client().session(&token, NAMES).await;
    // A batch in flight: header sent, the rest not yet.
    let frame = batch_frame(1, 3);
    let (mut send, recv) = connection.open_bi().await.unwrap();
    send.write_all(&frame[..HEADER_BYTES]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let handle = server.handle().clone();
    let shutdown = tokio::spawn(async move { handle.shutdown().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // During the drain a new HELLO is refused SHUTTING_DOWN.
    let (refused_connection, answer) = server.raw_client().hello(&token, NAMES).await;
    assert_eq!(refused(answer), (RefuseReason::ShuttingDown, 5_000));
    assert_eq!(closed_with(&refused_connection).await, HELLO_REFUSED);
    // The in-flight batch completes and is answered.
    send.write_all(&frame[HEADER_BYTES..]).await.unwrap();
    send.finish().unwrap();
    assert_eq!(read_answer(recv).await, ack(1, AckStatus::Stored));
    assert_eq!(closed_with(&connection).await, Some(ConnectionCloseCode::GoingAway as u64));
    let report = shutdown.await.unwrap();
    assert!(report.drained);
    assert_eq!(report.tasks_aborted, 0);
    assert_eq!(stored_rows(&server, "buoy-1"), expected_rows(&[batch(3)]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_the_same_data_dir_answers_a_resent_batch_duplicate() {
    let mut server = TestServer::start().await;
    let token = server.add_device("buoy-1");
    let connection = server.raw_client().session(&token, NAMES).await;
    assert_eq!(send_raw(&connection, &batch_frame(1, 20)).await, ack(1, AckStatus::Stored));
    let addr = server.addr;

    server.restart().await;
    assert_eq!(server.addr, addr);
    assert_eq!(closed_with(&connection).await, Some(ConnectionCloseCode::GoingAway as u64));
    let connection = server.raw_client().session(&token, NAMES).await;
    assert_eq!(send_raw(&connection, &batch_frame(1, 20)).await, ack(1, AckStatus::Duplicate));
    assert_eq!(send_raw(&connection, &batch_frame_at(2, 20)).await, ack(2, AckStatus::Stored));
    assert_eq!(stored_rows(&server, "buoy-1"), expected_rows(&[batch(20), batch_at(2, 20)]));
}

#[test]
fn generated_identity_is_kept_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let tls_dir = dir.path().join("tls");
    let (first, generated) = ServerIdentity::load_or_generate(&tls_dir).unwrap();
    assert!(generated);
    let (second, generated) = ServerIdentity::load_or_generate(&tls_dir).unwrap();
    assert!(!generated);
    assert_eq!(first.pin_sha256(), second.pin_sha256());
    assert_eq!(first.pin_sha256().len(), 64);
    assert_eq!(first.cert_chain, second.cert_chain);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tls_dir.join("key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A key without its certificate is reported, never silently replaced.
    std::fs::remove_file(tls_dir.join("cert.pem")).unwrap();
    assert!(matches!(
        ServerIdentity::load_or_generate(&tls_dir),
        Err(bluewave_wire::TlsError::HalfIdentity { .. })
    ));
}

#[test]
fn token_file_parses_reloads_and_names_bad_lines() {
    use bluewave_engine::BuoyId;
    use bluewave_wire::{DeviceAuthenticator, Refusal};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device-tokens.txt");
    std::fs::write(&path, "# fleet A\n\nbuoy-1 aaaaaaaaaaaaaaaaaaaa\nbuoy-2\tbbbbbbbbbbbbbbbbbbbb\n")
        .unwrap();
    let tokens = PresharedTokens::load(&path).unwrap();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens.authenticate("aaaaaaaaaaaaaaaaaaaa").unwrap().as_str(), "buoy-1");
    assert_eq!(tokens.authenticate("bbbbbbbbbbbbbbbbbbbb").unwrap().as_str(), "buoy-2");
    assert_eq!(tokens.authenticate("aaaaaaaaaaaaaaaaaaab"), Err(Refusal::TokenBadSignature));
    assert_eq!(tokens.authenticate(""), Err(Refusal::TokenMissing));

    tokens.revoke(&BuoyId::new("buoy-1").unwrap());
    assert_eq!(tokens.authenticate("aaaaaaaaaaaaaaaaaaaa"), Err(Refusal::DeviceRevoked("buoy-1".into())));
    bluewave_wire::append_tokens(&path, &[(BuoyId::new("buoy-3").unwrap(), "cccccccccccccccccccc".into())])
        .unwrap();
    assert_eq!(tokens.reload().unwrap(), 3);
    assert_eq!(tokens.authenticate("cccccccccccccccccccc").unwrap().as_str(), "buoy-3");
    // Revocation survives the reload.
    assert_eq!(tokens.authenticate("aaaaaaaaaaaaaaaaaaaa"), Err(Refusal::DeviceRevoked("buoy-1".into())));

    let line = |text: &str| match PresharedTokens::parse(text) {
        Err(TokenFileError::Parse { line, .. }) => line,
        other => panic!("expected a parse error, got {other:?}"),
    };
    assert_eq!(line("buoy-1 aaaaaaaaaaaaaaaaaaaa\nbuoy-2\n"), 2);
    assert_eq!(line("# c\nbad/id aaaaaaaaaaaaaaaaaaaa\n"), 2);
    assert_eq!(line("buoy-1 short\n"), 1);
    assert_eq!(line("buoy-1 aaaaaaaaaaaaaaaaaaaa extra\n"), 1);
    assert!(matches!(
        PresharedTokens::parse("a aaaaaaaaaaaaaaaaaaaa\nb aaaaaaaaaaaaaaaaaaaa\n"),
        Err(TokenFileError::DuplicateToken { line: 2, first_line: 1 })
    ));
    // A failed reload keeps the table.
    std::fs::write(&path, "broken\n").unwrap();
    assert!(tokens.reload().is_err());
    assert_eq!(tokens.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_validation_and_the_hard_connection_cap() {
    // Threshold 0: every attempt from an unvalidated address is sent a Retry first; quinn's
    // client answers it transparently and the connection proceeds.
    let config = bluewave_wire::ServerConfig {
        retry_handshakes_threshold: 0,
        connections_max: 1,
        incoming_max: 1,
        ..test_config()
    };
    let server = TestServer::start_with(config).await;
    let token = server.add_device("buoy-1");
    let client = server.raw_client();
    let connection = client.session(&token, NAMES).await;
    assert_eq!(send_raw(&connection, &batch_frame(1, 3)).await, ack(1, AckStatus::Stored));
    assert_eq!(server.handle().metrics().incoming_retried, 1);
    // At the hard cap (one open connection) a new attempt is refused before any handshake.
    let refused = client.try_connect().await;
    assert!(matches!(refused, Err(quinn::ConnectionError::ConnectionClosed(_))), "{refused:?}");
    assert_eq!(server.handle().metrics().incoming_refused, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_waiting_for_hello_count_against_the_hard_cap() {
    let config = bluewave_wire::ServerConfig { connections_max: 1, incoming_max: 1, ..test_config() };
    let server = TestServer::start_with(config).await;
    let client = server.raw_client();
    // Handshake done, no HELLO yet: the connection is pending and fills the cap.
    let silent = client.connect().await;
    let refused = client.try_connect().await;
    assert!(matches!(refused, Err(quinn::ConnectionError::ConnectionClosed(_))), "{refused:?}");
    // Once the HELLO deadline closes it, the slot is free again.
    assert_eq!(closed_with(&silent).await, Some(ConnectionCloseCode::HelloTimeout as u64));
    let token = server.add_device("buoy-1");
    client.session(&token, NAMES).await;
    assert_eq!(server.handle().metrics().incoming_refused, 1);
}

/// The real file system, except that `sync_data` fails once `fail_syncs` is set: the WAL
/// writer then stops (an fsync error is never retried and acknowledged).
#[derive(Debug, Default)]
struct FailingSyncs {
    fail_syncs: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

struct FailingFile {
    inner: Box<dyn bluewave_engine::StorageFile>,
    fail_syncs: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl bluewave_engine::StorageFile for FailingFile {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(buf)
    }

    fn sync_data(&mut self) -> std::io::Result<()> {
        if self.fail_syncs.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::other("injected fsync failure"));
        }
        self.inner.sync_data()
    }
}

impl bluewave_engine::Storage for FailingSyncs {
    fn create_dir_all(&self, path: &std::path::Path) -> std::io::Result<()> {
        bluewave_engine::FsStorage.create_dir_all(path)
    }
    fn list_dir(&self, path: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
        bluewave_engine::FsStorage.list_dir(path)
    }
    fn read(&self, path: &std::path::Path) -> std::io::Result<Vec<u8>> {
        bluewave_engine::FsStorage.read(path)
    }
    fn create(&self, path: &std::path::Path) -> std::io::Result<Box<dyn bluewave_engine::StorageFile>> {
        let inner = bluewave_engine::FsStorage.create(path)?;
        Ok(Box::new(FailingFile { inner, fail_syncs: self.fail_syncs.clone() }))
    }
    fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
        bluewave_engine::FsStorage.rename(from, to)
    }
    fn remove_file(&self, path: &std::path::Path) -> std::io::Result<()> {
        bluewave_engine::FsStorage.remove_file(path)
    }
    fn remove_dir(&self, path: &std::path::Path) -> std::io::Result<()> {
        bluewave_engine::FsStorage.remove_dir(path)
    }
    fn sync_dir(&self, path: &std::path::Path) -> std::io::Result<()> {
        bluewave_engine::FsStorage.sync_dir(path)
    }
    fn exists(&self, path: &std::path::Path) -> bool {
        bluewave_engine::FsStorage.exists(path)
    }
    fn is_dir(&self, path: &std::path::Path) -> bool {
        bluewave_engine::FsStorage.is_dir(path)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_fault_resets_cancelled_and_closes_internal_error() {
    let storage = FailingSyncs::default();
    let fail_syncs = storage.fail_syncs.clone();
    let server = TestServer::start_with_storage(test_config(), |_| {}, std::sync::Arc::new(storage)).await;
    let connection = server.raw_client().session(&server.add_device("buoy-1"), NAMES).await;
    assert_eq!(send_raw(&connection, &batch_frame(1, 3)).await, ack(1, AckStatus::Stored));
    fail_syncs.store(true, std::sync::atomic::Ordering::SeqCst);
    // The batch is not acknowledged: its stream is reset CANCELLED (resend later) and the
    // connection closed INTERNAL_ERROR; either may reach the client first.
    let end = send_raw(&connection, &batch_frame(2, 3)).await;
    let internal = StreamEnd::Closed(Some(ConnectionCloseCode::InternalError as u64));
    assert!(end == reset(StreamErrorCode::Cancelled) || end == internal, "{end:?}");
    assert_eq!(closed_with(&connection).await, Some(ConnectionCloseCode::InternalError as u64));
    assert_eq!(server.handle().metrics().closed_internal_error, 1);
    assert_eq!(server.handle().metrics().acks_stored, 1);
}
