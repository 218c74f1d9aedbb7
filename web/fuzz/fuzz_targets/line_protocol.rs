//! Fuzzes the InfluxDB line-protocol parser, which reads bodies straight from the network
//! (`POST /api/v2/write`, `POST /write`).
//!
//! Input layout: `precision u8 | body`. Checks:
//! - `parse_body` never panics and numbers its outcomes 1, 2, 3… in body order, skipping only
//!   blank and comment lines; every accepted point has finite fields and at most the line limits;
//! - every line `parse_line` accepts re-encodes (`Line::encode`) to text that parses back to the
//!   same line (escaping round-trips), and encoding that again gives the same text.

#![no_main]

use bluewave_web::line_protocol::{
    FIELDS_PER_LINE_MAX, FieldValue, Precision, TAGS_PER_LINE_MAX, parse_body, parse_line,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&mode, body)) = input.split_first() else { return };
    let precision = match mode % 4 {
        0 => Precision::Nanoseconds,
        1 => Precision::Microseconds,
        2 => Precision::Milliseconds,
        _ => Precision::Seconds,
    };
    if let Ok(outcomes) = parse_body(body, precision) {
        let mut previous = 0;
        for outcome in &outcomes {
            assert!(outcome.line_number > previous, "line numbers increase");
            previous = outcome.line_number;
            if let Ok(point) = &outcome.result {
                assert!(!point.measurement.is_empty());
                assert!(!point.fields.is_empty() && point.fields.len() <= FIELDS_PER_LINE_MAX);
                assert!(point.tags.len() <= TAGS_PER_LINE_MAX);
                assert!(point.fields.iter().all(|(_, value)| value.is_finite()));
            }
        }
    }
    // Line by line, through the text API and the encoder.
    let Ok(text) = std::str::from_utf8(body) else { return };
    for raw in text.split('\n') {
        let Ok(line) = parse_line(raw) else { continue };
        if let Some(FieldValue::Float(value)) = line.fields.first().map(|(_, value)| value) {
            assert!(value.is_finite());
        }
        let mut encoded = String::new();
        line.encode(&mut encoded);
        let again = parse_line(&encoded).unwrap_or_else(|error| panic!("{encoded:?} does not parse: {error}"));
        assert_eq!(again, line, "{raw:?} -> {encoded:?}");
        let mut twice = String::new();
        again.encode(&mut twice);
        assert_eq!(twice, encoded);
    }
});
