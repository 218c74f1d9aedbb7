//! InfluxDB line protocol: the text format Telegraf and every InfluxDB client library write.
//!
//! ```text
//! measurement[,tag_key=tag_value...] field_key=field_value[,field_key=field_value...] [timestamp]
//! ```
//!
//! Escaping (as InfluxDB documents it):
//! - measurement: `\,` and `\ ` (and `\=`, `\\`) stand for the character;
//! - tag keys, tag values, field keys: `\,`, `\=`, `\ ` and `\\` stand for the character;
//! - string field values (between double quotes): `\"` and `\\`;
//! - a backslash before any other character is a literal backslash.
//!
//! Field values: floats (`1`, `-1.5`, `2e3`), integers (`12i`), unsigned integers (`12u`),
//! booleans (`t`, `true`, `F`, `FALSE`, ...) and strings (`"text"`). NaN and infinities are refused.
//! [`parse_line`] reads every kind; [`parse_body`] keeps only lines whose fields are all numeric,
//! since every BlueWave reading is an f64, and answers the other lines with a reason.
//!
//! Sections are separated by spaces (one or more). Blank lines and lines whose first non-blank
//! character is `#` are skipped; blanks (spaces, tabs, a `\r` before the `\n`) at either end of a
//! line are ignored. The parser never panics and never
//! indexes text by position: it walks characters.

use std::fmt::Write as _;

/// Longest line (bytes, without its `\n`) a body may hold: 64 KiB. Longer lines are refused on
/// their own with [`LineError::LineTooLong`] (InfluxDB's default is also 64 KiB).
pub const LINE_BYTES_MAX: usize = 64 * 1024;

/// Most lines (of any kind, blank and comment lines included) one body may hold: 100,000. A body
/// with more is refused whole with [`BodyError::TooManyLines`].
pub const LINES_PER_BODY_MAX: usize = 100_000;

/// Most tags one line may carry: 64.
pub const TAGS_PER_LINE_MAX: usize = 64;

/// Most fields one line may carry: 256.
pub const FIELDS_PER_LINE_MAX: usize = 256;

/// The unit of a line's timestamp, from the `precision` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Nanoseconds (`ns`, v1 `n`): the default.
    Nanoseconds,
    /// Microseconds (`us`, v1 `u`).
    Microseconds,
    /// Milliseconds (`ms`).
    Milliseconds,
    /// Seconds (`s`).
    Seconds,
}

impl Precision {
    /// Reads a `precision` parameter: `ns`, `us`, `ms`, `s` (v2), or v1's `n` and `u`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ns" | "n" => Some(Self::Nanoseconds),
            "us" | "u" => Some(Self::Microseconds),
            "ms" => Some(Self::Milliseconds),
            "s" => Some(Self::Seconds),
            _ => None,
        }
    }

    /// Nanoseconds in one unit.
    pub fn nanos_per_unit(self) -> i64 {
        match self {
            Self::Nanoseconds => 1,
            Self::Microseconds => 1_000,
            Self::Milliseconds => 1_000_000,
            Self::Seconds => 1_000_000_000,
        }
    }

    /// The parameter text (`ns`, `us`, `ms`, `s`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nanoseconds => "ns",
            Self::Microseconds => "us",
            Self::Milliseconds => "ms",
            Self::Seconds => "s",
        }
    }
}

/// A field's value as written.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// A float (`1.5`, `2`, `-3e2`); always finite.
    Float(f64),
    /// A signed integer (`12i`).
    Integer(i64),
    /// An unsigned integer (`12u`).
    Unsigned(u64),
    /// A boolean (`t`, `true`, `F`, ...).
    Boolean(bool),
    /// A string (`"text"`), unescaped.
    String(String),
}

impl FieldValue {
    /// The value as an f64 when it is numeric (integers beyond 2^53 round to the nearest f64).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Float(value) => Some(*value),
            #[allow(clippy::cast_precision_loss)] // documented: readings are f64
            Self::Integer(value) => Some(*value as f64),
            #[allow(clippy::cast_precision_loss)]
            Self::Unsigned(value) => Some(*value as f64),
            Self::Boolean(_) | Self::String(_) => None,
        }
    }

    /// The kind's name, for error reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Float(_) => "float",
            Self::Integer(_) => "integer",
            Self::Unsigned(_) => "unsigned",
            Self::Boolean(_) => "boolean",
            Self::String(_) => "string",
        }
    }
}

/// One parsed line (every field kind kept), as [`parse_line`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// The measurement, unescaped; never empty.
    pub measurement: String,
    /// Tags in written order, unescaped; keys unique, keys and values never empty.
    pub tags: Vec<(String, String)>,
    /// Fields in written order, unescaped keys; at least one.
    pub fields: Vec<(String, FieldValue)>,
    /// The timestamp in the request's precision units, when the line has one.
    pub timestamp: Option<i64>,
}

impl Line {
    /// The value of tag `key`, if present.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.iter().find(|(name, _)| name == key).map(|(_, value)| value.as_str())
    }

    /// Appends this line in line protocol (escaped, without a trailing `\n`) to `out`. Floats are
    /// written in Rust's shortest round-trip form, so `parse_line(encode(line)) == line`.
    pub fn encode(&self, out: &mut String) {
        escape_into(out, &self.measurement, &[',', ' ', '\\']);
        for (key, value) in &self.tags {
            out.push(',');
            escape_into(out, key, &[',', '=', ' ', '\\']);
            out.push('=');
            escape_into(out, value, &[',', '=', ' ', '\\']);
        }
        out.push(' ');
        for (index, (key, value)) in self.fields.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            escape_into(out, key, &[',', '=', ' ', '\\']);
            out.push('=');
            // Writing into a String cannot fail.
            let _ = match value {
                FieldValue::Float(number) => write!(out, "{number:?}"),
                FieldValue::Integer(number) => write!(out, "{number}i"),
                FieldValue::Unsigned(number) => write!(out, "{number}u"),
                FieldValue::Boolean(flag) => write!(out, "{flag}"),
                FieldValue::String(text) => {
                    out.push('"');
                    escape_into(out, text, &['"', '\\']);
                    out.push('"');
                    Ok(())
                }
            };
        }
        if let Some(timestamp) = self.timestamp {
            let _ = write!(out, " {timestamp}");
        }
    }
}

fn escape_into(out: &mut String, text: &str, special: &[char]) {
    for character in text.chars() {
        if special.contains(&character) {
            out.push('\\');
        }
        out.push(character);
    }
}

/// A line whose fields are all numeric, with its timestamp in nanoseconds: what [`parse_body`]
/// hands to ingest.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The measurement, unescaped.
    pub measurement: String,
    /// Tags in written order, unescaped.
    pub tags: Vec<(String, String)>,
    /// Field keys and their values as f64 (all finite).
    pub fields: Vec<(String, f64)>,
    /// Nanoseconds since the Unix epoch, when the line had a timestamp (the server's time is used
    /// otherwise).
    pub timestamp_ns: Option<i64>,
}

impl Point {
    /// The value of tag `key`, if present.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.iter().find(|(name, _)| name == key).map(|(_, value)| value.as_str())
    }
}

/// One data line of a body and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct LineOutcome {
    /// The line's number in the body, counting from 1 (blank and comment lines count).
    pub line_number: usize,
    /// The point, or why the line was refused.
    pub result: Result<Point, LineError>,
}

/// Why one line was refused. Each is the client's mistake, reported per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The line is longer than [`LINE_BYTES_MAX`].
    #[error("line is {bytes} bytes, more than the limit of {max}")]
    LineTooLong {
        /// The line's length in bytes.
        bytes: usize,
        /// [`LINE_BYTES_MAX`].
        max: usize,
    },
    /// The line is not valid UTF-8.
    #[error("line is not valid UTF-8")]
    NotUtf8,
    /// The measurement is empty.
    #[error("missing measurement")]
    MissingMeasurement,
    /// A tag has no `=` after its key.
    #[error("tag key {key:?} has no '=value'")]
    TagWithoutValue {
        /// The tag key.
        key: String,
    },
    /// A tag key is empty.
    #[error("empty tag key")]
    EmptyTagKey,
    /// A tag value is empty.
    #[error("tag {key:?} has an empty value")]
    EmptyTagValue {
        /// The tag key.
        key: String,
    },
    /// A tag key appears twice.
    #[error("tag {key:?} appears twice")]
    DuplicateTag {
        /// The tag key.
        key: String,
    },
    /// More tags than [`TAGS_PER_LINE_MAX`].
    #[error("more than {max} tags")]
    TooManyTags {
        /// [`TAGS_PER_LINE_MAX`].
        max: usize,
    },
    /// No field set after the measurement and tags.
    #[error("missing fields")]
    MissingFields,
    /// A field key is empty.
    #[error("empty field key")]
    EmptyFieldKey,
    /// A field has no `=` after its key.
    #[error("field key {key:?} has no '=value'")]
    FieldWithoutValue {
        /// The field key.
        key: String,
    },
    /// More fields than [`FIELDS_PER_LINE_MAX`].
    #[error("more than {max} fields")]
    TooManyFields {
        /// [`FIELDS_PER_LINE_MAX`].
        max: usize,
    },
    /// A field value is not a number, boolean or quoted string.
    #[error("field {key:?} has an invalid value {value:?}")]
    InvalidFieldValue {
        /// The field key.
        key: String,
        /// The value text as written (cut to 64 characters).
        value: String,
    },
    /// A float field is NaN or infinite.
    #[error("field {key:?} is not a finite number")]
    NonFiniteField {
        /// The field key.
        key: String,
    },
    /// A string field has no closing quote.
    #[error("field {key:?} has an unterminated string")]
    UnterminatedString {
        /// The field key.
        key: String,
    },
    /// A field is a boolean or a string: BlueWave stores numbers only.
    #[error("field {key:?} is a {kind}; only numeric fields (float, integer, unsigned) are stored")]
    NonNumericField {
        /// The field key.
        key: String,
        /// `boolean` or `string`.
        kind: &'static str,
    },
    /// The timestamp is not an integer.
    #[error("invalid timestamp {text:?}")]
    InvalidTimestamp {
        /// The timestamp text (cut to 64 characters).
        text: String,
    },
    /// The timestamp in nanoseconds does not fit an i64 (beyond the years 1677–2262).
    #[error("timestamp {timestamp} in {precision} is out of range")]
    TimestampOutOfRange {
        /// The timestamp as written.
        timestamp: i64,
        /// The precision it was read in.
        precision: &'static str,
    },
    /// Characters after the timestamp, or a malformed separator.
    #[error("unexpected {found:?} after {after}")]
    Unexpected {
        /// The character found.
        found: char,
        /// What was read before it.
        after: &'static str,
    },
}

/// Why a whole body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// More lines than [`LINES_PER_BODY_MAX`].
    #[error("body has more than {max} lines")]
    TooManyLines {
        /// [`LINES_PER_BODY_MAX`].
        max: usize,
    },
}

/// Parses a body: one [`LineOutcome`] per data line (blank and comment lines skipped), in order.
/// Lines are separated by `\n`; a line may fail alone (too long, not UTF-8, bad syntax,
/// non-numeric field, timestamp out of range) without touching the others.
pub fn parse_body(body: &[u8], precision: Precision) -> Result<Vec<LineOutcome>, BodyError> {
    let line_count = body.split(|byte| *byte == b'\n').count();
    if line_count > LINES_PER_BODY_MAX {
        return Err(BodyError::TooManyLines { max: LINES_PER_BODY_MAX });
    }
    let mut outcomes = Vec::new();
    for (index, raw) in body.split(|byte| *byte == b'\n').enumerate() {
        let line_number = index.saturating_add(1);
        let result = if raw.len() > LINE_BYTES_MAX {
            Err(LineError::LineTooLong { bytes: raw.len(), max: LINE_BYTES_MAX })
        } else {
            match std::str::from_utf8(raw) {
                Err(_) => Err(LineError::NotUtf8),
                Ok(text) => {
                    let text = text.trim_matches(is_blank);
                    if text.is_empty() || text.starts_with('#') {
                        continue;
                    }
                    parse_line(text).and_then(|line| to_point(line, precision))
                }
            }
        };
        outcomes.push(LineOutcome { line_number, result });
    }
    Ok(outcomes)
}

fn is_blank(character: char) -> bool {
    matches!(character, ' ' | '\t' | '\r')
}

/// Keeps a line whose fields are all numeric, its timestamp scaled to nanoseconds.
fn to_point(line: Line, precision: Precision) -> Result<Point, LineError> {
    let mut fields = Vec::with_capacity(line.fields.len());
    for (key, value) in line.fields {
        match value.as_f64() {
            Some(number) => fields.push((key, number)),
            None => return Err(LineError::NonNumericField { key, kind: value.kind() }),
        }
    }
    let timestamp_ns = match line.timestamp {
        None => None,
        Some(timestamp) => Some(
            timestamp
                .checked_mul(precision.nanos_per_unit())
                .ok_or(LineError::TimestampOutOfRange { timestamp, precision: precision.as_str() })?,
        ),
    };
    Ok(Point { measurement: line.measurement, tags: line.tags, fields, timestamp_ns })
}

/// A character walker over one line.
struct Cursor<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
}

impl Cursor<'_> {
    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    /// Skips the spaces that separate a line's sections; true if there was at least one.
    fn skip_spaces(&mut self) -> bool {
        let mut skipped = false;
        while self.peek() == Some(' ') {
            self.chars.next();
            skipped = true;
        }
        skipped
    }

    /// Reads an escaped name up to (not including) an unescaped character of `stops`;
    /// `\` + a character of `escapable` stands for that character, any other `\` for itself.
    fn name(&mut self, stops: &[char], escapable: &[char]) -> String {
        let mut out = String::new();
        while let Some(character) = self.peek() {
            if character == '\\' {
                self.chars.next();
                match self.peek() {
                    Some(next) if escapable.contains(&next) => {
                        self.chars.next();
                        out.push(next);
                    }
                    _ => out.push('\\'),
                }
            } else if stops.contains(&character) || character == ' ' {
                break;
            } else {
                self.chars.next();
                out.push(character);
            }
        }
        out
    }

    /// Reads an unquoted token up to a `,`, a space or the end.
    fn token(&mut self) -> String {
        let mut out = String::new();
        while let Some(character) = self.peek() {
            if character == ',' || character == ' ' {
                break;
            }
            self.chars.next();
            out.push(character);
        }
        out
    }
}

const NAME_ESCAPES: &[char] = &[',', '=', ' ', '\\'];

/// Parses one line (without its `\n`; leading and trailing blanks allowed) of any field kinds.
/// The timestamp is returned as written, in the caller's precision units.
pub fn parse_line(text: &str) -> Result<Line, LineError> {
    let mut cursor = Cursor { chars: text.trim_matches(is_blank).chars().peekable() };
    let measurement = cursor.name(&[','], NAME_ESCAPES);
    if measurement.is_empty() {
        return Err(LineError::MissingMeasurement);
    }
    let mut tags: Vec<(String, String)> = Vec::new();
    while cursor.peek() == Some(',') {
        cursor.chars.next();
        if tags.len() >= TAGS_PER_LINE_MAX {
            return Err(LineError::TooManyTags { max: TAGS_PER_LINE_MAX });
        }
        let key = cursor.name(&[',', '='], NAME_ESCAPES);
        if key.is_empty() {
            return Err(LineError::EmptyTagKey);
        }
        if cursor.peek() != Some('=') {
            return Err(LineError::TagWithoutValue { key });
        }
        cursor.chars.next();
        let value = cursor.name(&[','], NAME_ESCAPES);
        if value.is_empty() {
            return Err(LineError::EmptyTagValue { key });
        }
        if tags.iter().any(|(existing, _)| *existing == key) {
            return Err(LineError::DuplicateTag { key });
        }
        tags.push((key, value));
    }
    if !cursor.skip_spaces() || cursor.peek().is_none() {
        return Err(LineError::MissingFields);
    }
    let mut fields = Vec::new();
    loop {
        if fields.len() >= FIELDS_PER_LINE_MAX {
            return Err(LineError::TooManyFields { max: FIELDS_PER_LINE_MAX });
        }
        let key = cursor.name(&[',', '='], NAME_ESCAPES);
        if key.is_empty() {
            return Err(LineError::EmptyFieldKey);
        }
        if cursor.peek() != Some('=') {
            return Err(LineError::FieldWithoutValue { key });
        }
        cursor.chars.next();
        let value = field_value(&mut cursor, &key)?;
        fields.push((key, value));
        match cursor.peek() {
            Some(',') => {
                cursor.chars.next();
            }
            Some(' ') => break,
            None => break,
            Some(found) => return Err(LineError::Unexpected { found, after: "a field value" }),
        }
    }
    cursor.skip_spaces();
    let timestamp = match cursor.peek() {
        None => None,
        Some(_) => {
            let text = cursor.token();
            let timestamp =
                text.parse::<i64>().map_err(|_| LineError::InvalidTimestamp { text: cut(&text) })?;
            cursor.skip_spaces();
            if let Some(found) = cursor.peek() {
                return Err(LineError::Unexpected { found, after: "the timestamp" });
            }
            Some(timestamp)
        }
    };
    Ok(Line { measurement, tags, fields, timestamp })
}

fn field_value(cursor: &mut Cursor<'_>, key: &str) -> Result<FieldValue, LineError> {
    if cursor.peek() == Some('"') {
        cursor.chars.next();
        let mut out = String::new();
        loop {
            match cursor.chars.next() {
                None => return Err(LineError::UnterminatedString { key: key.to_owned() }),
                Some('"') => return Ok(FieldValue::String(out)),
                Some('\\') => match cursor.peek() {
                    Some(next @ ('"' | '\\')) => {
                        cursor.chars.next();
                        out.push(next);
                    }
                    _ => out.push('\\'),
                },
                Some(character) => out.push(character),
            }
        }
    }
    let text = cursor.token();
    let invalid = || LineError::InvalidFieldValue { key: key.to_owned(), value: cut(&text) };
    match text.as_str() {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(FieldValue::Boolean(true)),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(FieldValue::Boolean(false)),
        _ => {}
    }
    if let Some(digits) = text.strip_suffix('i') {
        return digits.parse::<i64>().map(FieldValue::Integer).map_err(|_| invalid());
    }
    if let Some(digits) = text.strip_suffix('u') {
        return digits.parse::<u64>().map(FieldValue::Unsigned).map_err(|_| invalid());
    }
    // Only the characters of a decimal float: `parse::<f64>` alone would also take "inf", "NaN".
    if text.is_empty()
        || !text.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
    {
        return Err(invalid());
    }
    let number = text.parse::<f64>().map_err(|_| invalid())?;
    if !number.is_finite() {
        return Err(LineError::NonFiniteField { key: key.to_owned() });
    }
    Ok(FieldValue::Float(number))
}

/// At most 64 characters of `text`, for error reasons.
fn cut(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_line_with_every_field_kind() {
        let line = parse_line(r#"ocean\ obs,buoy_id=B\,1,site=a\=b t=1.5,n=-3i,u=7u,b=true,s="q\"\\x" 42"#);
        assert_eq!(
            line,
            Ok(Line {
                measurement: "ocean obs".into(),
                tags: vec![("buoy_id".into(), "B,1".into()), ("site".into(), "a=b".into())],
                fields: vec![
                    ("t".into(), FieldValue::Float(1.5)),
                    ("n".into(), FieldValue::Integer(-3)),
                    ("u".into(), FieldValue::Unsigned(7)),
                    ("b".into(), FieldValue::Boolean(true)),
                    ("s".into(), FieldValue::String("q\"\\x".into())),
                ],
                timestamp: Some(42),
            })
        );
    }

    #[test]
    fn body_reports_lines_by_number() {
        let body =
            b"# comment\n\nm,buoy_id=b1 ph=8.1 5\nm,buoy_id=b1 s=\"x\"\nm ph=NaN\r\nm ph=1 99999999999999999";
        let outcomes = parse_body(body, Precision::Seconds).unwrap();
        let numbers: Vec<usize> = outcomes.iter().map(|outcome| outcome.line_number).collect();
        assert_eq!(numbers, vec![3, 4, 5, 6]);
        assert_eq!(outcomes[0].result.as_ref().map(|point| point.timestamp_ns), Ok(Some(5_000_000_000)));
        assert_eq!(outcomes[1].result, Err(LineError::NonNumericField { key: "s".into(), kind: "string" }));
        assert_eq!(
            outcomes[2].result,
            Err(LineError::InvalidFieldValue { key: "ph".into(), value: "NaN".into() })
        );
        assert_eq!(
            outcomes[3].result,
            Err(LineError::TimestampOutOfRange { timestamp: 99_999_999_999_999_999, precision: "s" })
        );
    }
}
