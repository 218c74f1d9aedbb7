//! Cursor paging: a large range read page by page (files and buffer mixed, rewrites in
//! between) returns every row exactly once, in key order; cursors are opaque, URL-safe and
//! damaged ones are refused.

use bluewave_query::{AccessPolicy, Cursor, Error, TelemetryFilter};
use futures::StreamExt;

use crate::common::{SEC, T0, fixture, model, rows};

#[test]
fn paging_returns_every_row_once() {
    let f = fixture(&["buoy-a", "buoy-b", "buoy-c"]);
    let mut seq = 0;
    for b in ["buoy-a", "buoy-b", "buoy-c"] {
        for part in 0..2i64 {
            let batch: Vec<_> = (0..1_500)
                .map(|i| {
                    (if i % 2 == 0 { "ph" } else { "water_temp_c" }, T0 + (part * 1_500 + i) * SEC, i as f64)
                })
                .collect();
            seq += 1;
            f.ingest(b, seq, &batch);
        }
        f.engine.flush().unwrap();
    }
    // Rewrites and late data left in the buffer, overlapping the files.
    seq += 1;
    f.ingest("buoy-b", seq, &[("ph", T0 + 10 * SEC, -1.0), ("ph", T0 - 5 * SEC, -2.0)]);
    let expected = model(&f.engine);
    assert_eq!(expected.len(), 9_001);

    let policy = AccessPolicy::unrestricted();
    let mut filter = TelemetryFilter { limit: Some(700), ..TelemetryFilter::default() };
    let mut got = Vec::new();
    let mut pages = 0;
    loop {
        let (batches, cursor) = f
            .service
            .block_on(async {
                let mut s = f.service.read(&filter, &policy).await.unwrap();
                let mut out = Vec::new();
                while let Some(b) = s.next().await {
                    out.push(b.unwrap());
                }
                (out, s.next_cursor())
            })
            .unwrap();
        pages += 1;
        got.extend(rows(&batches));
        let Some(cursor) = cursor else { break };
        let token = cursor.encode();
        assert!(token.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'), "{token}");
        filter.cursor = Some(Cursor::decode(&token).unwrap());
    }
    assert_eq!(pages, 13);
    assert_eq!(got, expected);
}

#[test]
fn damaged_cursors_are_refused() {
    let c = Cursor::decode(&Cursor::decode("AQAAAAAAAAAABmJ1b3ktYXBo").unwrap().encode()).unwrap();
    assert_eq!(c.encode(), "AQAAAAAAAAAABmJ1b3ktYXBo");
    for bad in ["", "A", "!!!!", "AQAAAAAAAAAABmJ1b3kt", "AgAAAAAAAAAABmJ1b3ktYXBo", &"A".repeat(400)] {
        assert!(matches!(Cursor::decode(bad), Err(Error::InvalidFilter(_))), "{bad:?}");
    }
}
