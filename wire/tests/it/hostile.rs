//! Hostile input: truncations, oversized lengths, bad fields and random bytes. Each gives its
//! typed error and wire disposition; nothing panics.

use bluewave_engine::{InputError, ReadingBatch, TIMESTAMP_MAX};
use bluewave_wire::{
    Accepted, Ack, AckStatus, BATCH_PAYLOAD_BYTES_MAX, Disposition, Error, FrameHeader, FrameType,
    HEADER_BYTES, Hello, MetricDictionary, RefuseReason, Refused, RejectReason, StreamErrorCode,
    decode_batch, encode_batch,
};
use proptest::prelude::*;

use crate::support::{dictionary_and_batch, names};

fn dictionary() -> MetricDictionary {
    MetricDictionary::new(names(&["salinity_psu", "ph"])).unwrap()
}

/// One valid frame of every type.
fn valid_frames() -> Vec<(FrameType, Vec<u8>)> {
    let mut hello = Vec::new();
    Hello { token: "eyJhbGciOiJFZERTQSJ9.e30.c2ln".into(), dictionary: dictionary() }
        .encode(&mut hello)
        .unwrap();
    let mut accepted = Vec::new();
    Accepted {
        buoy: bluewave_engine::BuoyId::new("buoy-7").unwrap(),
        frame_bytes_max: 65_536,
        batch_readings_max: 4_096,
    }
    .encode(&mut accepted)
    .unwrap();
    let mut refused = Vec::new();
    Refused { reason: RefuseReason::TokenExpired, retry_after_ms: 0, message: "token expired".into() }
        .encode(&mut refused)
        .unwrap();
    let mut batch = Vec::new();
    let readings = ReadingBatch::new(
        dictionary().names().to_vec(),
        vec![10, -3_000_000_000, TIMESTAMP_MAX],
        vec![0, 1, 0],
        vec![35.1, 8.1, -0.5],
    )
    .unwrap();
    encode_batch(42, &readings, &dictionary(), &mut batch).unwrap();
    let mut ack = Vec::new();
    Ack { batch_seq: 42, status: AckStatus::Busy { retry_after_ms: 250 } }.encode(&mut ack);
    vec![
        (FrameType::Hello, hello),
        (FrameType::Accepted, accepted),
        (FrameType::Refused, refused),
        (FrameType::Batch, batch),
        (FrameType::Ack, ack),
    ]
}

/// Runs the decoder of `frame_type` and forgets the frame, keeping the error.
fn decode_as(frame_type: FrameType, bytes: &[u8]) -> Result<(), Error> {
    match frame_type {
        FrameType::Hello => Hello::decode(bytes).map(drop),
        FrameType::Accepted => Accepted::decode(bytes).map(drop),
        FrameType::Refused => Refused::decode(bytes).map(drop),
        FrameType::Batch => decode_batch(bytes, &dictionary()).map(drop),
        FrameType::Ack => Ack::decode(bytes).map(drop),
    }
}

fn decode_with_every_decoder(bytes: &[u8]) {
    let _ = FrameHeader::decode(bytes);
    for frame_type in
        [FrameType::Hello, FrameType::Accepted, FrameType::Refused, FrameType::Batch, FrameType::Ack]
    {
        let _ = decode_as(frame_type, bytes);
    }
}

/// A header of `frame_type` declaring `payload_len` bytes.
fn header(frame_type: FrameType, payload_len: u32) -> Vec<u8> {
    let mut bytes = b"BWAV".to_vec();
    bytes.extend_from_slice(&[1, frame_type as u8, 0, 0]);
    bytes.extend_from_slice(&payload_len.to_le_bytes());
    bytes
}

/// A BATCH frame around `payload`.
fn batch_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = header(FrameType::Batch, u32::try_from(payload.len()).unwrap());
    frame.extend_from_slice(payload);
    frame
}

#[test]
fn every_truncation_of_every_frame_is_a_truncated_error() {
    for (frame_type, frame) in valid_frames() {
        decode_as(frame_type, &frame).unwrap();
        for len in 0..frame.len() {
            let err = decode_as(frame_type, &frame[..len]).unwrap_err();
            assert!(matches!(err, Error::Truncated { .. }), "{frame_type:?} cut to {len}: {err:?}");
            assert_eq!(err.disposition(), Disposition::ResetStream(StreamErrorCode::MalformedFrame));
        }
    }
}

#[test]
fn a_byte_after_the_frame_is_trailing() {
    for (frame_type, mut frame) in valid_frames() {
        frame.push(0);
        assert_eq!(decode_as(frame_type, &frame), Err(Error::TrailingBytes { extra: 1 }));
    }
}

#[test]
fn a_payload_longer_than_its_content_is_trailing() {
    // One extra byte inside the declared payload, after the value column.
    let mut batch = valid_frames()[3].1.clone();
    batch.push(0xaa);
    let payload_len = u32::try_from(batch.len() - HEADER_BYTES).unwrap();
    batch[8..12].copy_from_slice(&payload_len.to_le_bytes());
    assert_eq!(decode_batch(&batch, &dictionary()), Err(Error::TrailingBytes { extra: 1 }));
}

#[test]
fn an_oversized_length_is_refused_from_the_header_alone() {
    // Only the 12 header bytes are present: the decoder must refuse on the length field before
    // it wants (or allocates) the 4 GiB payload.
    for frame_type in
        [FrameType::Hello, FrameType::Accepted, FrameType::Refused, FrameType::Batch, FrameType::Ack]
    {
        let limit = frame_type.payload_bytes_max();
        for payload_len in [u32::try_from(limit + 1).unwrap(), u32::MAX] {
            let bytes = header(frame_type, payload_len);
            let expected = Error::FrameTooLarge { frame_type, payload_len, payload_bytes_max: limit };
            assert_eq!(FrameHeader::decode(&bytes), Err(expected.clone()));
            assert_eq!(decode_as(frame_type, &bytes), Err(expected.clone()));
            assert_eq!(expected.disposition(), Disposition::ResetStream(StreamErrorCode::FrameTooLarge));
        }
        let at_limit = FrameHeader::decode(&header(frame_type, u32::try_from(limit).unwrap())).unwrap();
        assert_eq!(at_limit.frame_len(), HEADER_BYTES + limit);
    }
    assert_eq!(FrameType::Batch.payload_bytes_max(), BATCH_PAYLOAD_BYTES_MAX);
}

#[test]
fn bad_headers_have_their_own_errors() {
    let good = header(FrameType::Ack, 16);
    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    assert_eq!(FrameHeader::decode(&bad_magic), Err(Error::BadMagic(*b"XWAV")));
    let mut version_2 = good.clone();
    version_2[4] = 2;
    let err = FrameHeader::decode(&version_2).unwrap_err();
    assert_eq!(err, Error::UnsupportedVersion(2));
    assert_eq!(err.disposition(), Disposition::ResetStream(StreamErrorCode::UnsupportedVersion));
    let mut unknown_type = good.clone();
    unknown_type[5] = 0x7f;
    let err = FrameHeader::decode(&unknown_type).unwrap_err();
    assert_eq!(err, Error::UnknownFrameType(0x7f));
    assert_eq!(err.disposition(), Disposition::ResetStream(StreamErrorCode::UnexpectedFrame));
    let mut reserved = good.clone();
    reserved[6] = 1;
    assert!(matches!(FrameHeader::decode(&reserved), Err(Error::ReservedNotZero { .. })));
    // An ACK where a BATCH is expected.
    let (_, ack) = valid_frames().pop().unwrap();
    assert_eq!(
        decode_batch(&ack, &dictionary()),
        Err(Error::UnexpectedFrameType { expected: FrameType::Batch, found: FrameType::Ack })
    );
}

/// A BATCH payload: seq 1, `count`, base timestamp, then `rest`.
fn batch_payload(count: u32, base_ts: i64, rest: &[u8]) -> Vec<u8> {
    let mut payload = 1u64.to_le_bytes().to_vec();
    payload.extend_from_slice(&count.to_le_bytes());
    payload.extend_from_slice(&base_ts.to_le_bytes());
    payload.extend_from_slice(rest);
    payload
}

#[test]
fn reading_counts_are_checked_before_allocating() {
    let zero = batch_frame(&batch_payload(0, 0, &[]));
    assert_eq!(decode_batch(&zero, &dictionary()), Err(Error::Invalid(InputError::EmptyBatch)));
    let huge = batch_frame(&batch_payload(u32::MAX, 0, &[0; 9]));
    let err = decode_batch(&huge, &dictionary()).unwrap_err();
    assert!(matches!(err, Error::Invalid(InputError::BatchTooLarge { .. })), "{err:?}");
    assert_eq!(err.disposition(), Disposition::Reject(RejectReason::TooManyReadings));
    // 60,000 readings claimed, 9 bytes sent: refused by arithmetic, not by running out mid-way.
    let short = batch_frame(&batch_payload(60_000, 0, &[0; 9]));
    assert!(matches!(decode_batch(&short, &dictionary()), Err(Error::Truncated { .. })));
}

#[test]
fn varints_above_64_bits_overflow() {
    let mut eleven = vec![0xff; 10];
    eleven.push(0x00);
    let mut rest = vec![0x00];
    rest.extend_from_slice(&eleven);
    rest.extend_from_slice(&[0; 2 * 9 + 20]);
    let frame = batch_frame(&batch_payload(2, 0, &rest[1..]));
    assert_eq!(decode_batch(&frame, &dictionary()), Err(Error::VarintOverflow { index: 1 }));

    let mut tenth_too_big = vec![0x80; 9];
    tenth_too_big.push(0x02);
    tenth_too_big.extend_from_slice(&[0; 2 * 9]);
    let frame = batch_frame(&batch_payload(2, 0, &tenth_too_big));
    let err = decode_batch(&frame, &dictionary()).unwrap_err();
    assert_eq!(err, Error::VarintOverflow { index: 1 });
    assert_eq!(err.disposition(), Disposition::ResetStream(StreamErrorCode::MalformedFrame));
}

#[test]
fn timestamps_leaving_the_range_overflow() {
    // Base at the top of the range, then +1 ns (zigzag 2).
    let mut rest = vec![0x02];
    rest.extend_from_slice(&[0; 2 * 9]);
    let frame = batch_frame(&batch_payload(2, TIMESTAMP_MAX, &rest));
    let err = decode_batch(&frame, &dictionary()).unwrap_err();
    assert_eq!(err, Error::TimestampOverflow { index: 1, ts: TIMESTAMP_MAX + 1 });
    assert_eq!(err.disposition(), Disposition::Reject(RejectReason::TimestampOutOfRange));

    let frame = batch_frame(&batch_payload(1, i64::MIN, &[0; 9]));
    assert_eq!(decode_batch(&frame, &dictionary()), Err(Error::TimestampOverflow { index: 0, ts: i64::MIN }));
}

#[test]
fn metric_ids_outside_the_dictionary_are_unknown() {
    let mut rest = vec![0x00, 0x00, 0x02];
    rest.extend_from_slice(&[0; 16]);
    let frame = batch_frame(&batch_payload(2, 0, &rest));
    let err = decode_batch(&frame, &dictionary()).unwrap_err();
    assert_eq!(err, Error::UnknownMetricId { index: 1, id: 2 });
    assert_eq!(err.disposition(), Disposition::Reject(RejectReason::UnknownMetricId));
}

#[test]
fn non_finite_values_are_rejected_by_the_engine_rules() {
    let mut rest = vec![0x00];
    rest.extend_from_slice(&f64::NAN.to_le_bytes());
    let frame = batch_frame(&batch_payload(1, 0, &rest));
    let err = decode_batch(&frame, &dictionary()).unwrap_err();
    assert_eq!(err, Error::Invalid(InputError::NonFiniteValue { index: 0 }));
    assert_eq!(err.disposition(), Disposition::Reject(RejectReason::NonFiniteValue));
}

#[test]
fn hello_content_errors_are_typed() {
    // Duplicate metric name.
    let mut payload = 0u16.to_le_bytes().to_vec();
    payload.extend_from_slice(&2u16.to_le_bytes());
    payload.extend_from_slice(b"\x02ph\x02ph");
    let mut frame = header(FrameType::Hello, u32::try_from(payload.len()).unwrap());
    frame.extend_from_slice(&payload);
    assert_eq!(Hello::decode(&frame), Err(Error::Invalid(InputError::DuplicateMetricName("ph".into()))));
    // A token with a space.
    let mut payload = 3u16.to_le_bytes().to_vec();
    payload.extend_from_slice(b"a b");
    payload.extend_from_slice(&1u16.to_le_bytes());
    payload.extend_from_slice(b"\x02ph");
    let mut frame = header(FrameType::Hello, u32::try_from(payload.len()).unwrap());
    frame.extend_from_slice(&payload);
    assert_eq!(Hello::decode(&frame), Err(Error::InvalidToken));
    // An empty dictionary.
    let mut payload = 0u16.to_le_bytes().to_vec();
    payload.extend_from_slice(&0u16.to_le_bytes());
    let mut frame = header(FrameType::Hello, 4);
    frame.extend_from_slice(&payload);
    assert_eq!(Hello::decode(&frame), Err(Error::Invalid(InputError::BadMetricDictionary { names: 0 })));
}

#[test]
fn ack_fields_that_must_be_zero_are_checked() {
    let (_, mut ack) = valid_frames().pop().unwrap();
    // Busy with a reason code set.
    ack[HEADER_BYTES + 10] = 1;
    assert!(matches!(Ack::decode(&ack), Err(Error::ReservedNotZero { .. })));
    ack[HEADER_BYTES + 10] = 0;
    ack[HEADER_BYTES + 8] = 9;
    assert!(matches!(Ack::decode(&ack), Err(Error::UnknownCode { .. })));
}

#[test]
fn encoding_a_metric_missing_from_the_dictionary_fails_cleanly() {
    let batch = ReadingBatch::new(names(&["nitrate_mg_l"]), vec![1], vec![0], vec![1.0]).unwrap();
    let mut out = vec![0xee];
    assert_eq!(
        encode_batch(1, &batch, &dictionary(), &mut out),
        Err(Error::MetricNotInDictionary("nitrate_mg_l".into()))
    );
    assert_eq!(out, [0xee]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_048, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_with_every_decoder(&bytes);
    }

    /// Random payloads behind a valid header reach the payload parsers.
    #[test]
    fn random_payloads_never_panic(type_byte in 1u8..=5, payload in prop::collection::vec(any::<u8>(), 0..512)) {
        let frame_type = FrameType::from_u8(type_byte).unwrap();
        let mut frame = header(frame_type, u32::try_from(payload.len()).unwrap());
        frame.extend_from_slice(&payload);
        let _ = decode_as(frame_type, &frame);
    }

    /// Any single corrupted byte of a valid batch decodes or fails with a typed error.
    #[test]
    fn corrupted_batches_never_panic(
        (dictionary, batch) in dictionary_and_batch(),
        position in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut frame = Vec::new();
        encode_batch(3, &batch, &dictionary, &mut frame).unwrap();
        let at = position.index(frame.len());
        frame[at] = byte;
        let _ = decode_batch(&frame, &dictionary);
    }
}

#[test]
fn a_rejected_batch_still_names_its_sequence() {
    let mut rest = vec![0x00];
    rest.extend_from_slice(&f64::INFINITY.to_le_bytes());
    let frame = batch_frame(&batch_payload(1, 0, &rest));
    assert!(matches!(decode_batch(&frame, &dictionary()).unwrap_err().disposition(), Disposition::Reject(_)));
    assert_eq!(bluewave_wire::peek_batch_seq(&frame), Some(1));
    assert_eq!(bluewave_wire::peek_batch_seq(&frame[..15]), None);
    assert_eq!(bluewave_wire::peek_batch_seq(&valid_frames()[4].1), None);
}
