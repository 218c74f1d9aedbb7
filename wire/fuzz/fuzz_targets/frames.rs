//! Fuzzes every frame decoder of `bluewave/1` with bytes as a hostile client could send them.
//! No input may panic; a frame that decodes must re-encode to exactly the bytes it came from
//! (the codec has one encoding per value), so decoder and encoder agree.
//!
//! Input layout: `selector u8 | frame bytes`. The selector picks the decoder; BATCH frames are
//! decoded against a fixed three-metric HELLO dictionary.

#![no_main]

use bluewave_engine::MetricName;
use bluewave_wire::{
    Accepted, Ack, FrameHeader, Hello, MetricDictionary, Refused, decode_batch, encode_batch,
};
use libfuzzer_sys::fuzz_target;

fn dictionary() -> Option<MetricDictionary> {
    let names = ["salinity_psu", "ph", "water_temp_c"]
        .iter()
        .map(|n| MetricName::new(n).ok())
        .collect::<Option<Vec<_>>>()?;
    MetricDictionary::new(names).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, frame)) = data.split_first() else { return };
    let _ = FrameHeader::decode(frame);
    let mut out = Vec::new();
    match selector % 5 {
        0 => {
            if let Ok(hello) = Hello::decode(frame) {
                assert!(hello.encode(&mut out).is_ok());
                assert_eq!(out, frame, "HELLO re-encodes differently");
            }
        }
        1 => {
            if let Ok(accepted) = Accepted::decode(frame) {
                assert!(accepted.encode(&mut out).is_ok());
                assert_eq!(out, frame, "ACCEPTED re-encodes differently");
            }
        }
        2 => {
            if let Ok(refused) = Refused::decode(frame) {
                assert!(refused.encode(&mut out).is_ok());
                assert_eq!(out, frame, "REFUSED re-encodes differently");
            }
        }
        3 => {
            if let Ok(ack) = Ack::decode(frame) {
                ack.encode(&mut out);
                assert_eq!(out, frame, "ACK re-encodes differently");
            }
        }
        _ => {
            let Some(dictionary) = dictionary() else { return };
            if let Ok(decoded) = decode_batch(frame, &dictionary) {
                assert!(encode_batch(decoded.batch_seq, &decoded.batch, &dictionary, &mut out).is_ok());
                // Decoders accept over-long varints (PROTOCOL.md §3.5) and encoders write the
                // shortest form, so the bytes may shrink; the batch itself must survive exactly.
                assert!(out.len() <= frame.len(), "BATCH re-encodes longer");
                let again = decode_batch(&out, &dictionary);
                assert!(
                    again
                        .as_ref()
                        .is_ok_and(|a| a.batch_seq == decoded.batch_seq && a.batch == decoded.batch),
                    "BATCH does not survive a re-encode: {again:?}"
                );
                if out.len() == frame.len() {
                    assert_eq!(out, frame, "BATCH re-encodes differently");
                }
            }
        }
    }
});
