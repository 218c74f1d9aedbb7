//! Encoders: each format streams batch by batch and reads back into the same Arrow data.

use std::io::Cursor as IoCursor;
use std::sync::Arc;

use bluewave_query::datafusion::arrow::array::RecordBatch;
use bluewave_query::datafusion::arrow::compute::concat_batches;
use bluewave_query::datafusion::arrow::ipc::reader::StreamReader;
use bluewave_query::datafusion::arrow::{csv, json};
use bluewave_query::datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use bluewave_query::{AccessPolicy, Format, QueryConfig, encode, readings_schema};
use futures::StreamExt;

use crate::common::{SEC, T0, fixture_with};

fn encoded(f: &crate::common::Fixture, q: &str, format: Format) -> (Vec<u8>, usize) {
    f.service
        .block_on(async {
            let rows = f.service.sql(q, &AccessPolicy::unrestricted()).await.unwrap();
            let mut chunks = encode(rows, format);
            let (mut out, mut count) = (Vec::new(), 0);
            while let Some(chunk) = chunks.next().await {
                out.extend_from_slice(&chunk.unwrap());
                count += 1;
            }
            (out, count)
        })
        .unwrap()
}

#[test]
fn every_format_round_trips() {
    // Small batches so the result spans many chunks.
    let f = fixture_with(&["buoy-a", "buoy-b"], QueryConfig { batch_rows: 100, ..QueryConfig::default() });
    for (seq, b) in ["buoy-a", "buoy-b"].iter().enumerate() {
        let rows: Vec<_> = (0..700)
            .map(|i| (if i % 2 == 0 { "ph" } else { "salinity_psu" }, T0 + i * SEC, 35.0 + i as f64 / 1000.0))
            .collect();
        f.ingest(b, seq as u64 + 1, &rows);
    }
    f.engine.flush().unwrap();
    let q = "SELECT * FROM readings ORDER BY buoy_id, metric, ts";
    let expected =
        concat_batches(&readings_schema(), &f.sql(q, &AccessPolicy::unrestricted()).unwrap()).unwrap();
    assert_eq!(expected.num_rows(), 1_400);
    let schema = readings_schema();
    for format in [Format::Json, Format::Csv, Format::ArrowIpc, Format::Parquet] {
        let (bytes, chunks) = encoded(&f, q, format);
        if format != Format::Parquet {
            assert!(chunks > 5, "{format:?} came in {chunks} chunks");
        }
        let batches: Vec<RecordBatch> = match format {
            Format::Json => {
                let text = String::from_utf8(bytes).unwrap();
                assert!(text.starts_with("[{") && text.ends_with("}]"), "{}", &text[..40]);
                // Arrow's JSON reader takes one object per value: strip the array brackets.
                let inner = text[1..text.len() - 1].replace("},{", "}\n{");
                json::ReaderBuilder::new(schema.clone())
                    .build(IoCursor::new(inner.into_bytes()))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            }
            Format::Csv => csv::ReaderBuilder::new(schema.clone())
                .with_header(true)
                .build(IoCursor::new(bytes))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap(),
            Format::ArrowIpc => {
                StreamReader::try_new(IoCursor::new(bytes), None).unwrap().collect::<Result<_, _>>().unwrap()
            }
            Format::Parquet => ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
                .unwrap()
                .build()
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap(),
        };
        let got = concat_batches(&Arc::clone(&schema), &batches).unwrap();
        assert_eq!(got, expected, "{format:?}");
    }
}

#[test]
fn empty_results_are_valid_documents() {
    let f = fixture_with(&["buoy-a"], QueryConfig::default());
    let q = "SELECT * FROM readings";
    assert_eq!(encoded(&f, q, Format::Json).0, b"[]");
    assert_eq!(
        String::from_utf8(encoded(&f, q, Format::Csv).0).unwrap(),
        "buoy_id,metric,ts,value,quality\n"
    );
    let ipc = encoded(&f, q, Format::ArrowIpc).0;
    assert_eq!(StreamReader::try_new(IoCursor::new(ipc), None).unwrap().count(), 0);
    let parquet = encoded(&f, q, Format::Parquet).0;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(parquet)).unwrap();
    assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
}
