//! The server does what PROTOCOL.md says where an independent client found them apart (issue
//! #23 §7), over real QUIC on loopback: a HELLO on a batch stream is reset `UNEXPECTED_FRAME`
//! and the connection stays usable (§2); the dedup window's edge is exactly 4,096 below the
//! highest sequence (§3.6, §7); a malformed or half-read HELLO ends stream 0 with the
//! connection's close, no reset first (§3.2, §5); dictionary name lengths 0 and 65 are
//! `BAD_DICTIONARY` (§3.2); and N = 0 is `EMPTY_BATCH` from the first 12 payload bytes (§3.5).

use bluewave_engine::{MetricName, ReadingBatch};
use bluewave_wire::{
    Ack, AckStatus, ConnectionCloseCode, HEADER_BYTES, MAGIC, RefuseReason, RejectReason, StreamErrorCode,
    VERSION, encode_batch,
};

use crate::common::{
    HelloAnswer, StreamEnd, TestServer, closed_with, dictionary, hello_frame, read_answer, send_hello,
    send_raw, token_for,
};

const NAMES: &[&str] = &["salinity_psu", "ph"];
const T0: i64 = 1_780_000_000_000_000_000;

fn batch_frame(seq: u64) -> Vec<u8> {
    let names: Vec<MetricName> = NAMES.iter().map(|m| MetricName::new(m).unwrap()).collect();
    let batch = ReadingBatch::new(names, vec![T0 + seq as i64, T0 + seq as i64], vec![0, 1], vec![35.0, 8.1])
        .unwrap();
    let mut out = Vec::new();
    encode_batch(seq, &batch, &dictionary(NAMES), &mut out).unwrap();
    out
}

fn header(frame_type: u8, payload_len: u32) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.push(VERSION);
    out.push(frame_type);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&payload_len.to_le_bytes());
    out
}

fn ack(seq: u64, status: AckStatus) -> StreamEnd {
    StreamEnd::Ack(Ack { batch_seq: seq, status })
}

/// A HELLO frame for `buoy-1` whose dictionary is `names_wire` (length-prefixed names, by hand).
fn hello_with_names(count: u16, names_wire: &[u8]) -> Vec<u8> {
    let token = token_for("buoy-1");
    let mut payload = (token.len() as u16).to_le_bytes().to_vec();
    payload.extend_from_slice(token.as_bytes());
    payload.extend_from_slice(&count.to_le_bytes());
    payload.extend_from_slice(names_wire);
    let mut frame = header(0x01, payload.len() as u32);
    frame.extend_from_slice(&payload);
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_on_a_batch_stream_is_reset_and_the_connection_stays() {
    let server = TestServer::start().await;
    let token = server.add_device("buoy-1");
    let connection = server.raw_client().session(&token, NAMES).await;
    let second_hello = send_raw(&connection, &hello_frame(&token, NAMES)).await;
    assert_eq!(second_hello, StreamEnd::Reset(StreamErrorCode::UnexpectedFrame as u64));
    assert_eq!(send_raw(&connection, &batch_frame(1)).await, ack(1, AckStatus::Stored));
    assert_eq!(server.handle().metrics().resets(StreamErrorCode::UnexpectedFrame), 1);
    assert_eq!(server.handle().metrics().closed_protocol_violation, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dedup_window_edge_is_exactly_4096_below_the_highest() {
    let server = TestServer::start().await;
    let connection = server.raw_client().session(&server.add_device("buoy-1"), NAMES).await;
    assert_eq!(send_raw(&connection, &batch_frame(5_000)).await, ack(5_000, AckStatus::Stored));
    // 4,095 below: inside the window.
    assert_eq!(send_raw(&connection, &batch_frame(905)).await, ack(905, AckStatus::Stored));
    assert_eq!(send_raw(&connection, &batch_frame(905)).await, ack(905, AckStatus::Duplicate));
    // Exactly 4,096 below, and further: stale.
    for seq in [904, 903] {
        let stale = AckStatus::Rejected(RejectReason::StaleSequence);
        assert_eq!(send_raw(&connection, &batch_frame(seq)).await, ack(seq, stale));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_or_half_read_hello_ends_stream_0_with_the_close() {
    let server = TestServer::start().await;
    server.add_device("buoy-1");
    let client = server.raw_client();

    // A token byte outside the alphabet.
    let connection = client.connect().await;
    let mut frame = hello_frame(&token_for("buoy-1"), NAMES);
    frame[HEADER_BYTES + 2] = b' ';
    let (mut send, recv) = connection.open_bi().await.unwrap();
    send.write_all(&frame).await.unwrap();
    send.finish().unwrap();
    let violation = Some(ConnectionCloseCode::ProtocolViolation as u64);
    assert_eq!(read_answer(recv).await, StreamEnd::Closed(violation));
    assert_eq!(closed_with(&connection).await, violation);

    // A name length that runs past the end of the frame: truncated, a violation too.
    let connection = client.connect().await;
    let (mut send, recv) = connection.open_bi().await.unwrap();
    send.write_all(&hello_with_names(1, b"\x09ph")).await.unwrap();
    send.finish().unwrap();
    assert_eq!(read_answer(recv).await, StreamEnd::Closed(violation));

    // Half a HELLO, then nothing: the deadline's close ends the stream.
    let connection = client.connect().await;
    let (mut send, recv) = connection.open_bi().await.unwrap();
    send.write_all(&frame[..10]).await.unwrap();
    let timeout = Some(ConnectionCloseCode::HelloTimeout as u64);
    assert_eq!(read_answer(recv).await, StreamEnd::Closed(timeout));
    let metrics = server.handle().metrics();
    assert_eq!((metrics.closed_protocol_violation, metrics.closed_hello_timeout), (2, 1));
    assert_eq!(metrics.resets_by_code, [0; 6], "no stream is reset before a close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dictionary_name_lengths_0_and_65_are_bad_dictionary() {
    let server = TestServer::start().await;
    server.add_device("buoy-1");
    let client = server.raw_client();
    let mut long = vec![65u8];
    long.extend_from_slice(&[b'a'; 65]);
    for names in [&b"\x00"[..], &long[..]] {
        let connection = client.connect().await;
        match send_hello(&connection, &hello_with_names(1, names)).await {
            HelloAnswer::Refused(refused) => assert_eq!(refused.reason, RefuseReason::BadDictionary),
            other => panic!("{other:?}"),
        }
        assert_eq!(closed_with(&connection).await, Some(ConnectionCloseCode::HelloRefused as u64));
    }
    assert_eq!(server.handle().metrics().refused(RefuseReason::BadDictionary), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_zero_readings_is_rejected_empty_from_its_first_12_bytes() {
    let server = TestServer::start().await;
    let connection = server.raw_client().session(&server.add_device("buoy-1"), NAMES).await;
    let empty = AckStatus::Rejected(RejectReason::EmptyBatch);
    let mut short = header(0x04, 12);
    short.extend_from_slice(&7u64.to_le_bytes());
    short.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(send_raw(&connection, &short).await, ack(7, empty));
    let mut full = header(0x04, 20);
    full.extend_from_slice(&8u64.to_le_bytes());
    full.extend_from_slice(&0u32.to_le_bytes());
    full.extend_from_slice(&T0.to_le_bytes());
    assert_eq!(send_raw(&connection, &full).await, ack(8, empty));
    assert!(server.readings("buoy-1").is_empty());
}
