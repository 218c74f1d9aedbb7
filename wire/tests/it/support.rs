//! Shared strategies and helpers.

use bluewave_engine::{MetricName, ReadingBatch, TIMESTAMP_MAX, TIMESTAMP_MIN};
use bluewave_wire::MetricDictionary;
use proptest::prelude::*;

/// Parses `"42 57 ..."` (whitespace ignored) into bytes.
pub fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
    digits.chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap()).collect()
}

pub fn names(list: &[&str]) -> Vec<MetricName> {
    list.iter().map(|n| MetricName::new(n).unwrap()).collect()
}

/// 1–40 distinct valid metric names (sometimes the full 256).
pub fn dictionary() -> impl Strategy<Value = MetricDictionary> {
    prop_oneof![
        9 => prop::collection::btree_set("[a-z0-9_]{1,64}", 1..40),
        1 => Just((0..256).map(|i| format!("metric_{i}")).collect()),
    ]
    .prop_map(|set| MetricDictionary::new(set.iter().map(|n| MetricName::new(n).unwrap()).collect()).unwrap())
}

/// A timestamp in range, biased towards the edges and towards small steps.
fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(TIMESTAMP_MIN),
        Just(TIMESTAMP_MAX),
        Just(0i64),
        TIMESTAMP_MIN..=TIMESTAMP_MAX,
        (1_600_000_000_000_000_000i64..1_900_000_000_000_000_000i64),
    ]
}

/// Any finite f64 (NaN and infinities are refused by the engine).
fn finite_value() -> impl Strategy<Value = f64> {
    any::<f64>().prop_map(|v| if v.is_finite() { v } else { -0.0 })
}

/// A dictionary and a valid batch over it (non-monotonic timestamps, the range edges, repeats).
pub fn dictionary_and_batch() -> impl Strategy<Value = (MetricDictionary, ReadingBatch)> {
    (dictionary(), 1usize..300).prop_flat_map(|(dictionary, len)| {
        let metrics = dictionary.len();
        let timestamps = prop_oneof![
            prop::collection::vec(timestamp(), len),
            // A realistic series: a start and small signed steps, clamped into range.
            (timestamp(), prop::collection::vec(-5_000_000_000i64..5_000_000_000, len)).prop_map(
                |(start, steps)| {
                    let mut ts = start;
                    steps
                        .into_iter()
                        .map(|step| {
                            ts = ts.saturating_add(step).clamp(TIMESTAMP_MIN, TIMESTAMP_MAX);
                            ts
                        })
                        .collect()
                }
            ),
        ];
        let ids = prop::collection::vec(0..u16::try_from(metrics).unwrap(), len);
        let values = prop::collection::vec(finite_value(), len);
        (Just(dictionary), timestamps, ids, values).prop_map(|(dictionary, timestamps, ids, values)| {
            let batch = ReadingBatch::new(dictionary.names().to_vec(), timestamps, ids, values).unwrap();
            (dictionary, batch)
        })
    })
}
