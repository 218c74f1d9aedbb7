//! Arrow ⇄ Postgres: the column types of a result, rows in text or binary format, and the
//! values of `$n` parameters.
//!
//! | Arrow | Postgres |
//! |---|---|
//! | `Timestamp(_, Some(tz))` | `timestamptz` (microseconds; nanoseconds are truncated) |
//! | `Timestamp(_, None)` | `timestamp` |
//! | `Float64` / `Float32` | `float8` / `float4` |
//! | `Int8`, `Int16`, `UInt8` (quality) | `int2` |
//! | `Int32`, `UInt16` | `int4` |
//! | `Int64`, `UInt32`, `UInt64` (counts) | `int8` (a `UInt64` past `i64::MAX` is an error) |
//! | `Boolean` | `bool` |
//! | strings, dictionaries and anything else | `text` (Arrow's display form) |

use std::sync::Arc;

use bluewave_query::datafusion::arrow::array::{
    Array, AsArray, BooleanArray, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array,
    RecordBatch, StringArray, TimestampMicrosecondArray,
};
use bluewave_query::datafusion::arrow::compute::{CastOptions, cast_with_options};
use bluewave_query::datafusion::arrow::datatypes::{DataType, Schema, TimeUnit};
use bluewave_query::datafusion::arrow::util::display::FormatOptions;
use bluewave_query::datafusion::common::ScalarValue;
use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use pgwire::api::Type;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;

use crate::error::{error, sqlstate};

/// The Postgres type a column of `data_type` is sent as.
pub(crate) fn pg_type(data_type: &DataType) -> Type {
    match data_type {
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Float64 => Type::FLOAT8,
        DataType::Float32 | DataType::Float16 => Type::FLOAT4,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => Type::INT8,
        DataType::Boolean => Type::BOOL,
        _ => Type::TEXT,
    }
}

/// The format of result column `index` under the client's Bind formats (none: text; one: all
/// columns; else one per column, a missing one text).
fn format_for(formats: Option<&Format>, index: usize) -> FieldFormat {
    match formats {
        None | Some(Format::UnifiedText) => FieldFormat::Text,
        Some(Format::UnifiedBinary) => FieldFormat::Binary,
        Some(Format::Individual(codes)) => match codes.as_slice() {
            [] => FieldFormat::Text,
            [one] => FieldFormat::from(*one),
            many => many.get(index).map_or(FieldFormat::Text, |code| FieldFormat::from(*code)),
        },
    }
}

/// The row description of `schema`.
pub(crate) fn fields(schema: &Schema, formats: Option<&Format>) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(index, field)| {
            FieldInfo::new(
                field.name().clone(),
                None,
                None,
                pg_type(field.data_type()),
                format_for(formats, index),
            )
        })
        .collect()
}

/// One result column, cast to the Arrow type its Postgres type is encoded from.
enum Column {
    Text(StringArray),
    Bool(BooleanArray),
    Int2(Int16Array),
    Int4(Int32Array),
    Int8(Int64Array),
    Float4(Float32Array),
    Float8(Float64Array),
    TimestampTz(TimestampMicrosecondArray),
    Timestamp(TimestampMicrosecondArray),
}

fn column(array: &dyn Array, pg: &Type) -> PgWireResult<Column> {
    let options = CastOptions { safe: false, format_options: FormatOptions::default() };
    let target = match *pg {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        _ => DataType::Utf8,
    };
    let cast = cast_with_options(array, &target, &options).map_err(|e| {
        error(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("a {} column cannot be sent as {pg}: {e}", array.data_type()),
        )
    })?;
    Ok(match *pg {
        Type::BOOL => Column::Bool(cast.as_boolean().clone()),
        Type::INT2 => Column::Int2(cast.as_primitive().clone()),
        Type::INT4 => Column::Int4(cast.as_primitive().clone()),
        Type::INT8 => Column::Int8(cast.as_primitive().clone()),
        Type::FLOAT4 => Column::Float4(cast.as_primitive().clone()),
        Type::FLOAT8 => Column::Float8(cast.as_primitive().clone()),
        Type::TIMESTAMPTZ => Column::TimestampTz(cast.as_primitive().clone()),
        Type::TIMESTAMP => Column::Timestamp(cast.as_primitive().clone()),
        _ => Column::Text(cast.as_string::<i32>().clone()),
    })
}

fn value<'a, A: Array, T>(array: &'a A, row: usize, get: impl FnOnce(&'a A, usize) -> T) -> Option<T> {
    array.is_valid(row).then(|| get(array, row))
}

fn timestamp(micros: i64) -> PgWireResult<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| error(sqlstate::PROGRAM_LIMIT, format!("timestamp {micros} µs is out of range")))
}

/// The rows of `batch`, encoded per `fields` (their types and formats).
pub(crate) fn encode_batch(batch: &RecordBatch, fields: &Arc<Vec<FieldInfo>>) -> PgWireResult<Vec<DataRow>> {
    let columns = batch
        .columns()
        .iter()
        .zip(fields.iter())
        .map(|(array, field)| column(array.as_ref(), field.datatype()))
        .collect::<PgWireResult<Vec<_>>>()?;
    let mut encoder = DataRowEncoder::new(Arc::clone(fields));
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        for column in &columns {
            match column {
                Column::Text(a) => encoder.encode_field(&value(a, row, |a, i| a.value(i)))?,
                Column::Bool(a) => encoder.encode_field(&value(a, row, |a, i| a.value(i)))?,
                Column::Int2(a) => encoder.encode_field(&value(a, row, |a, i| a.value(i)))?,
                Column::Int4(a) => encoder.encode_field(&value(a, row, |a, i| a.value(i)))?,
                Column::Int8(a) => encoder.encode_field(&value(a, row, |a, i| a.value(i)))?,
                Column::Float4(a) => encoder.encode_field(&value(a, row, |a, i| a.value(i)))?,
                Column::Float8(a) => encoder.encode_field(&value(a, row, |a, i| a.value(i)))?,
                Column::TimestampTz(a) => {
                    let ts = value(a, row, |a, i| a.value(i)).map(timestamp).transpose()?;
                    encoder.encode_field(&ts)?;
                }
                Column::Timestamp(a) => {
                    let ts = value(a, row, |a, i| a.value(i)).map(timestamp).transpose()?;
                    encoder.encode_field(&ts.map(|t| t.naive_utc()))?;
                }
            }
        }
        rows.push(encoder.take_row());
    }
    Ok(rows)
}

/// The Postgres type a `$n` of `data_type` (as the plan infers it) is described as; `text`
/// when the plan leaves it open.
pub(crate) fn param_type(data_type: Option<&DataType>) -> Type {
    data_type.map_or(Type::TEXT, pg_type)
}

fn bad_param(index: usize, e: impl std::fmt::Display) -> PgWireError {
    error(sqlstate::INVALID_PARAMETER, format!("parameter ${}: {e}", index + 1))
}

/// The value of parameter `index` of `portal`, sent as `pg`, as the plan's `expected` type.
pub(crate) fn param<S: Clone>(
    portal: &Portal<S>,
    index: usize,
    pg: &Type,
    expected: Option<&DataType>,
) -> PgWireResult<ScalarValue> {
    let scalar = match *pg {
        Type::BOOL => ScalarValue::Boolean(portal.parameter::<bool>(index, pg)?),
        Type::INT2 => ScalarValue::Int16(portal.parameter::<i16>(index, pg)?),
        Type::INT4 => ScalarValue::Int32(portal.parameter::<i32>(index, pg)?),
        Type::INT8 => ScalarValue::Int64(portal.parameter::<i64>(index, pg)?),
        Type::FLOAT4 => ScalarValue::Float32(portal.parameter::<f32>(index, pg)?),
        Type::FLOAT8 => ScalarValue::Float64(portal.parameter::<f64>(index, pg)?),
        Type::TIMESTAMPTZ => {
            let ts = portal.parameter::<DateTime<FixedOffset>>(index, pg)?;
            let nanos = ts
                .map(|t| t.timestamp_nanos_opt().ok_or_else(|| bad_param(index, "out of range")))
                .transpose()?;
            ScalarValue::TimestampNanosecond(nanos, Some("UTC".into()))
        }
        Type::TIMESTAMP => {
            let ts = portal.parameter::<NaiveDateTime>(index, pg)?;
            let nanos = ts
                .map(|t| t.and_utc().timestamp_nanos_opt().ok_or_else(|| bad_param(index, "out of range")))
                .transpose()?;
            ScalarValue::TimestampNanosecond(nanos, None)
        }
        Type::TEXT | Type::VARCHAR | Type::UNKNOWN | Type::BPCHAR | Type::NAME => {
            ScalarValue::Utf8(portal.parameter::<String>(index, pg)?)
        }
        _ => {
            return Err(bad_param(
                index,
                format!("type {pg} is not supported (use text, int2/4/8, float4/8, bool, timestamptz)"),
            ));
        }
    };
    match expected {
        Some(expected) if scalar.data_type() != *expected => {
            scalar.cast_to(expected).map_err(|e| bad_param(index, e))
        }
        _ => Ok(scalar),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_columns_map_to_the_documented_types() {
        assert_eq!(
            pg_type(&DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))),
            Type::TIMESTAMPTZ
        );
        assert_eq!(pg_type(&DataType::Float64), Type::FLOAT8);
        assert_eq!(pg_type(&DataType::UInt8), Type::INT2);
        assert_eq!(pg_type(&DataType::Int64), Type::INT8);
        assert_eq!(pg_type(&DataType::Utf8View), Type::TEXT);
        assert_eq!(
            pg_type(&DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))),
            Type::TEXT
        );
    }

    #[test]
    fn formats_follow_bind_rules() {
        let one = Format::Individual(vec![1]);
        assert_eq!(format_for(Some(&one), 3), FieldFormat::Binary);
        let two = Format::Individual(vec![1, 0]);
        assert_eq!(format_for(Some(&two), 1), FieldFormat::Text);
        assert_eq!(format_for(Some(&two), 5), FieldFormat::Text);
        assert_eq!(format_for(None, 0), FieldFormat::Text);
    }
}
