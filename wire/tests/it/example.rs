//! The worked example of PROTOCOL.md ("Worked example: a BATCH frame"), byte for byte.

use bluewave_engine::ReadingBatch;
use bluewave_wire::{Ack, AckStatus, FrameHeader, FrameType, MetricDictionary, decode_batch, encode_batch};

use crate::support::{hex, names};

/// Copied from PROTOCOL.md.
const EXAMPLE_HEX: &str = "
    42 57 41 56 01 04 00 00 35 00 00 00
    07 00 00 00 00 00 00 00
    03 00 00 00
    00 00 2a 36 fe 9c 97 17
    00
    80 a8 d6 b9 07
    00 01 00
    c7 4b 37 89 41 90 41 40
    56 0e 2d b2 9d 2f 20 40
    54 e3 a5 9b c4 90 41 40
";

const BASE_TS: i64 = 1_700_000_000_000_000_000;

fn example_dictionary() -> MetricDictionary {
    MetricDictionary::new(names(&["salinity_psu", "ph"])).unwrap()
}

#[test]
fn the_documented_batch_decodes_byte_exactly() {
    let frame = hex(EXAMPLE_HEX);
    assert_eq!(frame.len(), 65);
    let header = FrameHeader::decode(&frame).unwrap();
    assert_eq!(header, FrameHeader { frame_type: FrameType::Batch, payload_len: 53 });

    let decoded = decode_batch(&frame, &example_dictionary()).unwrap();
    assert_eq!(decoded.batch_seq, 7);
    let batch = decoded.batch;
    assert_eq!(batch.timestamps(), &[BASE_TS, BASE_TS, BASE_TS + 1_000_000_000]);
    assert_eq!(batch.metric_ids(), &[0, 1, 0]);
    assert_eq!(batch.values(), &[35.127, 8.093, 35.131]);
    let metric_of_row: Vec<&str> =
        batch.metric_ids().iter().map(|&id| batch.metric_names()[usize::from(id)].as_str()).collect();
    assert_eq!(metric_of_row, ["salinity_psu", "ph", "salinity_psu"]);
}

#[test]
fn the_documented_batch_is_what_the_encoder_writes() {
    let batch = ReadingBatch::new(
        names(&["salinity_psu", "ph"]),
        vec![BASE_TS, BASE_TS, BASE_TS + 1_000_000_000],
        vec![0, 1, 0],
        vec![35.127, 8.093, 35.131],
    )
    .unwrap();
    let mut frame = Vec::new();
    encode_batch(7, &batch, &example_dictionary(), &mut frame).unwrap();
    assert_eq!(frame, hex(EXAMPLE_HEX));
}

#[test]
fn a_batch_using_another_dictionary_order_is_remapped_to_wire_ids() {
    // The batch's own dictionary lists "ph" first; the wire ids follow the HELLO dictionary.
    let batch = ReadingBatch::new(
        names(&["ph", "salinity_psu"]),
        vec![BASE_TS, BASE_TS, BASE_TS + 1_000_000_000],
        vec![1, 0, 1],
        vec![35.127, 8.093, 35.131],
    )
    .unwrap();
    let mut frame = Vec::new();
    encode_batch(7, &batch, &example_dictionary(), &mut frame).unwrap();
    assert_eq!(frame, hex(EXAMPLE_HEX));
}

#[test]
fn the_documented_ack_is_what_the_encoder_writes() {
    let mut frame = Vec::new();
    Ack { batch_seq: 7, status: AckStatus::Stored }.encode(&mut frame);
    assert_eq!(
        frame,
        hex("42 57 41 56 01 05 00 00 10 00 00 00  07 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00")
    );
}

/// The limits table of PROTOCOL.md section 5.
#[test]
fn the_documented_limits_are_the_constants() {
    use bluewave_wire as w;
    assert_eq!(w::HEADER_BYTES, 12);
    assert_eq!(w::TOKEN_BYTES_MAX, 8_192);
    assert_eq!(w::METRIC_NAME_BYTES_MAX, 64);
    assert_eq!(w::BUOY_ID_BYTES_MAX, 64);
    assert_eq!(w::DICTIONARY_METRICS_MAX, 256);
    assert_eq!(w::REFUSED_MESSAGE_BYTES_MAX, 512);
    assert_eq!(w::BATCH_READINGS_MAX_WIRE, 65_536);
    assert_eq!(w::VARINT_BYTES_MAX, 10);
    assert_eq!(w::HELLO_PAYLOAD_BYTES_MAX, 24_836);
    assert_eq!(w::ACCEPTED_PAYLOAD_BYTES_MAX, 73);
    assert_eq!(w::REFUSED_PAYLOAD_BYTES_MAX, 520);
    assert_eq!(w::BATCH_PAYLOAD_BYTES_MAX, 1_245_194);
    assert_eq!(w::ACK_PAYLOAD_BYTES, 16);
    assert_eq!(w::FRAME_BYTES_MAX, 1_245_206);
    assert_eq!(w::ALPN, b"bluewave/1");
    assert_eq!(w::MAGIC, *b"BWAV");
}

/// The codes of PROTOCOL.md section 6 and the ACK/REFUSED tables.
#[test]
fn the_documented_codes_are_the_enums() {
    use bluewave_wire::{ConnectionCloseCode as C, RefuseReason, RejectReason, StreamErrorCode as S};
    assert_eq!(
        [
            S::FrameTooLarge,
            S::MalformedFrame,
            S::UnsupportedVersion,
            S::UnexpectedFrame,
            S::StreamTimeout,
            S::Cancelled
        ]
        .map(|c| c as u32),
        [0x101, 0x102, 0x103, 0x104, 0x105, 0x106]
    );
    assert_eq!(
        [
            C::NoError,
            C::GoingAway,
            C::InternalError,
            C::HelloTimeout,
            C::HelloRefused,
            C::ProtocolViolation,
            C::DeviceRevoked,
            C::TooManyViolations
        ]
        .map(|c| c as u32),
        [0x00, 0x01, 0x02, 0x10, 0x11, 0x12, 0x13, 0x14]
    );
    for code in 1..=10 {
        assert_eq!(RefuseReason::from_u16(code).map(|r| r as u16), Some(code));
    }
    for code in 1..=8 {
        assert_eq!(RejectReason::from_u16(code).map(|r| r as u16), Some(code));
    }
    assert_eq!(RefuseReason::from_u16(11), None);
    assert_eq!(RejectReason::from_u16(0), None);
}
