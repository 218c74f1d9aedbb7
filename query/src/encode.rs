//! Streaming encoders: a [`ResultStream`] becomes a stream of [`Bytes`] chunks, one per
//! batch (Parquet: one per flushed row group), so memory stays bounded by a batch (Parquet:
//! by [`PARQUET_ROW_GROUP_BYTES_MAX`]) whatever the result size.

use std::fmt::Write as _;
use std::pin::Pin;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::json::{ArrayWriter, WriterBuilder};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use futures::{Stream, StreamExt};

use crate::error::{Error, Result};
use crate::service::ResultStream;

/// Buffered Parquet bytes before a row group is flushed to the output: 8 MiB.
pub const PARQUET_ROW_GROUP_BYTES_MAX: usize = 8 << 20;
/// Rows per Parquet row group at most.
pub const PARQUET_ROW_GROUP_ROWS_MAX: usize = 128 * 1024;

/// An output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A JSON array of row objects (`[{"buoy_id":"…",…},…]`); timestamps as RFC 3339 text.
    Json,
    /// CSV with a header row; timestamps as RFC 3339 text; text cells that a spreadsheet
    /// would run as a formula are neutralised (`'` in front, quoted: see `csv_safe`).
    Csv,
    /// Arrow IPC stream format.
    ArrowIpc,
    /// A Parquet file (zstd).
    Parquet,
}

impl Format {
    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Csv => "text/csv; charset=utf-8",
            Self::ArrowIpc => "application/vnd.apache.arrow.stream",
            Self::Parquet => "application/vnd.apache.parquet",
        }
    }

    /// Parses `json`, `csv`, `arrow` and `parquet`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "json" => Ok(Self::Json),
            "csv" => Ok(Self::Csv),
            "arrow" | "arrow-ipc" | "ipc" => Ok(Self::ArrowIpc),
            "parquet" => Ok(Self::Parquet),
            other => {
                Err(Error::InvalidFilter(format!("unknown format {other:?} (json, csv, arrow, parquet)")))
            }
        }
    }
}

fn encode_error(e: impl std::fmt::Display) -> Error {
    Error::Encode(e.to_string())
}

enum Encoder {
    Json { writer: ArrayWriter<Vec<u8>>, empty: bool },
    Csv { header: bool },
    Ipc(StreamWriter<Vec<u8>>),
    Parquet(ArrowWriter<Vec<u8>>),
}

impl Encoder {
    fn new(format: Format, schema: &SchemaRef) -> Result<Self> {
        Ok(match format {
            Format::Json => Encoder::Json {
                writer: WriterBuilder::new().with_explicit_nulls(true).build(Vec::new()),
                empty: true,
            },
            Format::Csv => Encoder::Csv { header: true },
            Format::ArrowIpc => {
                Encoder::Ipc(StreamWriter::try_new(Vec::new(), schema).map_err(encode_error)?)
            }
            Format::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .set_max_row_group_row_count(Some(PARQUET_ROW_GROUP_ROWS_MAX))
                    .build();
                Encoder::Parquet(
                    ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props)).map_err(encode_error)?,
                )
            }
        })
    }

    /// Encodes one batch; returns the bytes ready to send (may be empty).
    fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>> {
        match self {
            Encoder::Json { writer, empty } => {
                writer.write(batch).map_err(encode_error)?;
                *empty = false;
                Ok(std::mem::take(writer.get_mut()))
            }
            Encoder::Csv { header } => {
                let mut out = if *header { crate::csv_safe::header(batch) } else { Vec::new() };
                *header = false;
                out.extend(crate::csv_safe::rows(batch).map_err(encode_error)?);
                Ok(out)
            }
            Encoder::Ipc(writer) => {
                writer.write(batch).map_err(encode_error)?;
                writer.flush().map_err(encode_error)?;
                Ok(std::mem::take(writer.get_mut()))
            }
            Encoder::Parquet(writer) => {
                writer.write(batch).map_err(encode_error)?;
                if writer.in_progress_size() > PARQUET_ROW_GROUP_BYTES_MAX {
                    writer.flush().map_err(encode_error)?;
                }
                Ok(std::mem::take(writer.inner_mut()))
            }
        }
    }

    /// Ends the output; returns the last bytes.
    fn finish(&mut self, schema: &SchemaRef) -> Result<Vec<u8>> {
        match self {
            Encoder::Json { writer, empty } => {
                writer.finish().map_err(encode_error)?;
                let mut out = std::mem::take(writer.get_mut());
                if *empty {
                    out = b"[]".to_vec();
                }
                Ok(out)
            }
            Encoder::Csv { header } => {
                // An empty result still gets its header line.
                if *header {
                    return Ok(crate::csv_safe::header(&RecordBatch::new_empty(schema.clone())));
                }
                Ok(Vec::new())
            }
            Encoder::Ipc(writer) => {
                writer.finish().map_err(encode_error)?;
                Ok(std::mem::take(writer.get_mut()))
            }
            Encoder::Parquet(writer) => {
                writer.finish().map_err(encode_error)?;
                Ok(std::mem::take(writer.inner_mut()))
            }
        }
    }
}

/// A result encoded as a stream of byte chunks (what an HTTP body or a file writer consumes).
/// An error item means the output is incomplete and must not be presented as a whole result;
/// when bytes were already given out, the chunk before it is the [`error_record`].
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// What starts the error record that ends an incomplete output (after a newline).
pub const ERROR_RECORD_PREFIX: &str = "#BLUEWAVE-ERROR ";

/// The record that ends an output whose query failed after some of it was sent:
/// `\n#BLUEWAVE-ERROR {"error":"<code>","message":"<text>"}\n`, the same JSON object as an
/// HTTP error body, with [`Error::code`]. Internal faults say only `internal error`. In every
/// format it makes the output unreadable as a whole (JSON: an unterminated array and then text;
/// CSV: a last line no data row can start with, since a cell holding `"` is quoted; Arrow IPC:
/// no end-of-stream marker and bytes that are no IPC message; Parquet: no footer), so a failed
/// result is never taken for a complete one, and a client finds the reason in its last line.
pub fn error_record(error: &Error) -> Vec<u8> {
    let message = if error.is_user_error() { error.to_string() } else { "internal error".to_owned() };
    let mut out = format!("\n{ERROR_RECORD_PREFIX}{{\"error\":\"{}\",\"message\":\"", error.code());
    for c in message.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push_str("\"}\n");
    out.into_bytes()
}

/// Where [`encode`] is in its output.
struct EncodeState {
    results: ResultStream,
    encoder: Option<Encoder>,
    /// Bytes were given out: a failure from now on is told by the error record.
    started: bool,
    /// The error to give after its error record.
    failed: Option<Error>,
    finished: bool,
}

/// Encodes `results` in `format`, batch by batch.
pub fn encode(results: ResultStream, format: Format) -> ByteStream {
    let schema = results.schema();
    let state = EncodeState { results, encoder: None, started: false, failed: None, finished: false };
    let stream = futures::stream::unfold(state, move |mut state| {
        let schema = schema.clone();
        async move {
            if let Some(error) = state.failed.take() {
                state.finished = true;
                return Some((Err(error), state));
            }
            if state.finished {
                return None;
            }
            let outcome = next_chunk(&mut state, format, &schema).await;
            match outcome {
                Ok(Some(bytes)) => {
                    state.started = true;
                    Some((Ok(bytes), state))
                }
                Ok(None) => None,
                Err(error) if state.started => {
                    let record = Bytes::from(error_record(&error));
                    state.failed = Some(error);
                    Some((Ok(record), state))
                }
                Err(error) => {
                    state.finished = true;
                    Some((Err(error), state))
                }
            }
        }
    });
    Box::pin(stream)
}

/// The next non-empty chunk, `None` after the last.
async fn next_chunk(state: &mut EncodeState, format: Format, schema: &SchemaRef) -> Result<Option<Bytes>> {
    if state.finished {
        return Ok(None);
    }
    let encoder = match state.encoder.as_mut() {
        Some(encoder) => encoder,
        None => state.encoder.insert(Encoder::new(format, schema)?),
    };
    loop {
        match state.results.next().await {
            Some(Ok(batch)) => {
                let bytes = encoder.batch(&batch)?;
                if !bytes.is_empty() {
                    return Ok(Some(Bytes::from(bytes)));
                }
            }
            Some(Err(error)) => return Err(error),
            None => {
                state.finished = true;
                return encoder.finish(schema).map(|last| Some(Bytes::from(last)));
            }
        }
    }
}
