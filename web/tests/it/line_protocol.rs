//! The InfluxDB line-protocol parser as a codec: generated lines with hostile characters (spaces,
//! commas, `=`, quotes, backslashes, `#`, non-ASCII) in every escaped position encode and parse
//! back to themselves, whole bodies keep their line numbers, and arbitrary bytes never panic.

use bluewave_web::line_protocol::{
    FieldValue, LINE_BYTES_MAX, LINES_PER_BODY_MAX, Line, LineError, Precision, parse_body, parse_line,
};
use proptest::prelude::*;

/// Names built from characters that need escaping, plus ordinary ones.
fn hostile_name() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just(' '),
            Just(','),
            Just('='),
            Just('"'),
            Just('\\'),
            Just('#'),
            Just('é'),
            Just('海'),
            proptest::char::range('a', 'z'),
            proptest::char::range('0', '9'),
        ],
        1..12,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn field_value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |value| value.is_finite()).prop_map(FieldValue::Float),
        any::<i64>().prop_map(FieldValue::Integer),
        any::<u64>().prop_map(FieldValue::Unsigned),
        any::<bool>().prop_map(FieldValue::Boolean),
        hostile_name().prop_map(FieldValue::String),
        Just(FieldValue::String(String::new())),
    ]
}

fn line() -> impl Strategy<Value = Line> {
    (
        // A measurement starting with `#` would be a comment line.
        (proptest::char::range('a', 'z'), proptest::option::of(hostile_name()))
            .prop_map(|(first, rest)| format!("{first}{}", rest.unwrap_or_default())),
        proptest::collection::btree_map(hostile_name(), hostile_name(), 0..5),
        proptest::collection::btree_map(hostile_name(), field_value(), 1..5),
        proptest::option::of(any::<i64>()),
    )
        .prop_map(|(measurement, tags, fields, timestamp)| Line {
            measurement,
            tags: tags.into_iter().collect(),
            fields: fields.into_iter().collect(),
            timestamp,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn encoded_lines_parse_back(line in line()) {
        let mut text = String::new();
        line.encode(&mut text);
        prop_assert_eq!(parse_line(&text), Ok(line));
    }

    #[test]
    fn bodies_keep_line_numbers_and_numeric_values(lines in proptest::collection::vec(line(), 1..20)) {
        let mut body = String::from("# written by the property test\n");
        for line in &lines {
            line.encode(&mut body);
            body.push_str("\n\n");
        }
        let outcomes = parse_body(body.as_bytes(), Precision::Nanoseconds).unwrap();
        prop_assert_eq!(outcomes.len(), lines.len());
        for (index, (outcome, line)) in outcomes.iter().zip(&lines).enumerate() {
            // Line 1 is the comment; each generated line is followed by a blank one.
            prop_assert_eq!(outcome.line_number, 2 + 2 * index);
            let non_numeric = line.fields.iter().find(|(_, value)| value.as_f64().is_none());
            match (&outcome.result, non_numeric) {
                (Err(LineError::NonNumericField { key, kind }), Some((bad_key, bad_value))) => {
                    prop_assert_eq!(key, bad_key);
                    prop_assert_eq!(*kind, bad_value.kind());
                }
                (Ok(point), None) => {
                    prop_assert_eq!(&point.measurement, &line.measurement);
                    prop_assert_eq!(&point.tags, &line.tags);
                    let expected: Vec<(String, f64)> = line
                        .fields
                        .iter()
                        .map(|(key, value)| (key.clone(), value.as_f64().unwrap()))
                        .collect();
                    prop_assert_eq!(&point.fields, &expected);
                    prop_assert_eq!(point.timestamp_ns, line.timestamp);
                }
                (other, _) => prop_assert!(false, "unexpected outcome {other:?} for {line:?}"),
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_body(&body, Precision::Milliseconds);
    }

    #[test]
    fn line_protocol_alphabet_never_panics(
        text in proptest::collection::vec(
            prop_oneof![
                Just(' '), Just(','), Just('='), Just('"'), Just('\\'), Just('#'), Just('\n'),
                Just('\t'), Just('\r'), Just('i'), Just('u'), Just('t'), Just('e'), Just('.'),
                Just('-'), Just('é'), proptest::char::range('0', '9'),
            ],
            0..128,
        ).prop_map(|chars| chars.into_iter().collect::<String>()),
        precision in prop_oneof![
            Just(Precision::Nanoseconds), Just(Precision::Microseconds),
            Just(Precision::Milliseconds), Just(Precision::Seconds),
        ],
    ) {
        let _ = parse_body(text.as_bytes(), precision);
    }
}

#[test]
fn escapes_follow_influxdb() {
    let line = parse_line(r#"a\ b\,c=d,t\ k\=x=v\,1\=2\ 3 f\,k\=y="say \"hi\" \\ \n" 7"#).unwrap();
    assert_eq!(line.measurement, "a b,c=d");
    assert_eq!(line.tags, vec![("t k=x".to_owned(), "v,1=2 3".to_owned())]);
    // `\n` in a string is not an escape: the backslash stays.
    assert_eq!(line.fields, vec![("f,k=y".to_owned(), FieldValue::String(r#"say "hi" \ \n"#.to_owned()))]);
    assert_eq!(line.timestamp, Some(7));
}

#[test]
fn refusals_name_the_problem() {
    let cases: &[(&str, LineError)] = &[
        ("m", LineError::MissingFields),
        (",t=1 f=1", LineError::MissingMeasurement),
        ("m,t f=1", LineError::TagWithoutValue { key: "t".into() }),
        ("m,t= f=1", LineError::EmptyTagValue { key: "t".into() }),
        ("m,=v f=1", LineError::EmptyTagKey),
        ("m,t=1,t=2 f=1", LineError::DuplicateTag { key: "t".into() }),
        ("m f", LineError::FieldWithoutValue { key: "f".into() }),
        ("m =1", LineError::EmptyFieldKey),
        ("m f=1,", LineError::EmptyFieldKey),
        ("m f=inf", LineError::InvalidFieldValue { key: "f".into(), value: "inf".into() }),
        ("m f=1e999", LineError::NonFiniteField { key: "f".into() }),
        ("m f=1.5i", LineError::InvalidFieldValue { key: "f".into(), value: "1.5i".into() }),
        ("m f=-1u", LineError::InvalidFieldValue { key: "f".into(), value: "-1u".into() }),
        ("m f=\"open", LineError::UnterminatedString { key: "f".into() }),
        ("m f=\"x\"y", LineError::Unexpected { found: 'y', after: "a field value" }),
        ("m f=1 12x", LineError::InvalidTimestamp { text: "12x".into() }),
        ("m f=1 12 13", LineError::Unexpected { found: '1', after: "the timestamp" }),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_line(text).as_ref().err(), Some(expected), "{text}");
    }
}

#[test]
fn body_limits_are_enforced() {
    let long = format!("m f=1 {}", "1".repeat(LINE_BYTES_MAX));
    let mut bytes = format!("m f=1\n{long}\n\u{0}").into_bytes();
    bytes.extend_from_slice(b"\n\xffm f=1");
    let outcomes = parse_body(&bytes, Precision::Nanoseconds).unwrap();
    assert!(outcomes[0].result.is_ok());
    assert_eq!(outcomes[1].line_number, 2);
    assert_eq!(
        outcomes[1].result,
        Err(LineError::LineTooLong { bytes: LINE_BYTES_MAX + 6, max: LINE_BYTES_MAX })
    );
    assert_eq!(outcomes[3].line_number, 4);
    assert_eq!(outcomes[3].result, Err(LineError::NotUtf8));

    let too_many = "\n".repeat(LINES_PER_BODY_MAX);
    assert!(parse_body(too_many.as_bytes(), Precision::Nanoseconds).is_err());
    let just_enough = "\n".repeat(LINES_PER_BODY_MAX - 1);
    assert_eq!(parse_body(just_enough.as_bytes(), Precision::Nanoseconds), Ok(Vec::new()));
}

#[test]
fn precision_scales_and_bounds_timestamps() {
    for (name, precision, expected) in [
        ("ns", Precision::Nanoseconds, 5),
        ("us", Precision::Microseconds, 5_000),
        ("ms", Precision::Milliseconds, 5_000_000),
        ("s", Precision::Seconds, 5_000_000_000),
    ] {
        assert_eq!(Precision::parse(name), Some(precision));
        let outcomes = parse_body(b"m f=1i 5", precision).unwrap();
        assert_eq!(outcomes[0].result.as_ref().unwrap().timestamp_ns, Some(expected));
    }
    assert_eq!(Precision::parse("h"), None);
    let outcomes =
        parse_body(b"m f=1u -9223372036854775808\nm f=1 9223372036854775807", Precision::Microseconds)
            .unwrap();
    assert!(matches!(outcomes[0].result, Err(LineError::TimestampOutOfRange { .. })));
    assert!(matches!(outcomes[1].result, Err(LineError::TimestampOutOfRange { .. })));
}
