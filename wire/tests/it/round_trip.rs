//! Every frame type decodes back to what was encoded, for arbitrary valid values.

use bluewave_engine::{BATCH_READINGS_MAX, BuoyId, ReadingBatch, TIMESTAMP_MAX, TIMESTAMP_MIN};
use bluewave_wire::{
    Accepted, Ack, AckStatus, BATCH_PAYLOAD_BYTES_MAX, FRAME_BYTES_MAX, FrameHeader, HEADER_BYTES, Hello,
    MetricDictionary, RefuseReason, Refused, RejectReason, decode_batch, encode_batch,
};
use proptest::prelude::*;

use crate::support::{dictionary, dictionary_and_batch, names};

fn refuse_reason() -> impl Strategy<Value = RefuseReason> {
    (1u16..=10).prop_map(|v| RefuseReason::from_u16(v).unwrap())
}

fn ack_status() -> impl Strategy<Value = AckStatus> {
    prop_oneof![
        Just(AckStatus::Stored),
        Just(AckStatus::Duplicate),
        (1u16..=8).prop_map(|v| AckStatus::Rejected(RejectReason::from_u16(v).unwrap())),
        any::<u32>().prop_map(|retry_after_ms| AckStatus::Busy { retry_after_ms }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn batches_round_trip((dictionary, batch) in dictionary_and_batch(), batch_seq in any::<u64>()) {
        let mut frame = Vec::new();
        encode_batch(batch_seq, &batch, &dictionary, &mut frame).unwrap();
        let header = FrameHeader::decode(&frame).unwrap();
        prop_assert_eq!(header.frame_len(), frame.len());
        let decoded = decode_batch(&frame, &dictionary).unwrap();
        prop_assert_eq!(decoded.batch_seq, batch_seq);
        prop_assert_eq!(decoded.batch, batch);
    }

    #[test]
    fn hellos_round_trip(token in "[!-~]{0,300}", dictionary in dictionary()) {
        let hello = Hello { token, dictionary };
        let mut frame = Vec::new();
        hello.encode(&mut frame).unwrap();
        prop_assert_eq!(Hello::decode(&frame).unwrap(), hello);
    }

    #[test]
    fn accepteds_round_trip(
        buoy in "[A-Za-z0-9_.-]{1,64}",
        frame_bytes_max in 41u32..=u32::try_from(FRAME_BYTES_MAX).unwrap(),
        batch_readings_max in 1u32..=u32::try_from(BATCH_READINGS_MAX).unwrap(),
    ) {
        let accepted = Accepted { buoy: BuoyId::new(&buoy).unwrap(), frame_bytes_max, batch_readings_max };
        let mut frame = Vec::new();
        accepted.encode(&mut frame).unwrap();
        prop_assert_eq!(Accepted::decode(&frame).unwrap(), accepted);
    }

    #[test]
    fn refuseds_round_trip(reason in refuse_reason(), retry_after_ms in any::<u32>(), message in "\\PC{0,120}") {
        let refused = Refused { reason, retry_after_ms, message };
        let mut frame = Vec::new();
        refused.encode(&mut frame).unwrap();
        prop_assert_eq!(Refused::decode(&frame).unwrap(), refused);
    }

    #[test]
    fn acks_round_trip(batch_seq in any::<u64>(), status in ack_status()) {
        let ack = Ack { batch_seq, status };
        let mut frame = Vec::new();
        ack.encode(&mut frame);
        prop_assert_eq!(frame.len(), HEADER_BYTES + bluewave_wire::ACK_PAYLOAD_BYTES);
        prop_assert_eq!(Ack::decode(&frame).unwrap(), ack);
    }
}

/// The largest legal batch with the worst-case timestamp deltas (the full range, alternating)
/// fits the declared BATCH limit and round-trips.
#[test]
fn the_worst_case_batch_fits_the_frame_limit() {
    let dictionary = MetricDictionary::new(names(&["ph"])).unwrap();
    let n = BATCH_READINGS_MAX;
    let timestamps = (0..n).map(|i| if i % 2 == 0 { TIMESTAMP_MIN } else { TIMESTAMP_MAX }).collect();
    let batch =
        ReadingBatch::new(dictionary.names().to_vec(), timestamps, vec![0; n], vec![f64::MAX; n]).unwrap();
    let mut frame = Vec::new();
    encode_batch(u64::MAX, &batch, &dictionary, &mut frame).unwrap();
    assert_eq!(frame.len(), FRAME_BYTES_MAX);
    assert_eq!(frame.len(), HEADER_BYTES + BATCH_PAYLOAD_BYTES_MAX);
    assert_eq!(decode_batch(&frame, &dictionary).unwrap().batch, batch);
}

/// Marine-like data (8 metrics sampled together every second) stays within 11 bytes a reading.
#[test]
fn marine_batches_take_at_most_eleven_bytes_a_reading() {
    let metric_names = names(&[
        "salinity_psu",
        "ph",
        "water_temp_c",
        "turbidity_ntu",
        "nitrate_mg_l",
        "dissolved_oxygen_mg_l",
        "battery_v",
        "pollutant_ppb",
    ]);
    let dictionary = MetricDictionary::new(metric_names.clone()).unwrap();
    let (mut timestamps, mut ids, mut values) = (Vec::new(), Vec::new(), Vec::new());
    for second in 0..125i64 {
        for metric in 0..8u16 {
            timestamps.push(1_700_000_000_000_000_000 + second * 1_000_000_000);
            ids.push(metric);
            values.push(35.0 + f64::from(metric) * 0.125);
        }
    }
    let batch = ReadingBatch::new(metric_names, timestamps, ids, values).unwrap();
    let mut frame = Vec::new();
    encode_batch(1, &batch, &dictionary, &mut frame).unwrap();
    let bytes_per_reading = frame.len() as f64 / 1_000.0;
    println!("{bytes_per_reading} bytes per marine reading");
    assert!(bytes_per_reading <= 11.0, "{bytes_per_reading} bytes per reading");
}

/// PROTOCOL.md §3.5: decoders accept over-long varints (up to 10 bytes). A delta written in
/// two bytes instead of one decodes to the same batch; re-encoding gives the shortest form.
/// (Found by the `frames` fuzz target, whose oracle assumed byte identity.)
#[test]
fn an_over_long_varint_decodes_to_the_same_batch() {
    let dictionary = MetricDictionary::new(names(&["ph"])).unwrap();
    let batch = ReadingBatch::new(names(&["ph"]), vec![1_000, 1_001], vec![0, 0], vec![8.1, 8.2]).unwrap();
    let mut frame = Vec::new();
    encode_batch(7, &batch, &dictionary, &mut frame).unwrap();
    // The first (only) delta sits right after the header and the 20 fixed bytes: +1 ns,
    // zigzag 2, one byte 0x02. Rewrite it as 0x82 0x00 and grow the payload length by one.
    let at = HEADER_BYTES + 20;
    assert_eq!(frame[at], 0x02);
    let mut long = frame[..at].to_vec();
    long.extend_from_slice(&[0x82, 0x00]);
    long.extend_from_slice(&frame[at + 1..]);
    let payload = u32::from_le_bytes(long[8..12].try_into().unwrap()) + 1;
    long[8..12].copy_from_slice(&payload.to_le_bytes());
    let decoded = decode_batch(&long, &dictionary).unwrap();
    assert_eq!((decoded.batch_seq, &decoded.batch), (7, &batch));
    let mut again = Vec::new();
    encode_batch(7, &decoded.batch, &dictionary, &mut again).unwrap();
    assert_eq!(again, frame);
}
