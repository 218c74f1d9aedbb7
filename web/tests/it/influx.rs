//! InfluxDB-compatible writes over real HTTPS into a real engine: `POST /api/v2/write` (Token
//! header) and `POST /write` (v1, `p=` and Basic) answer 204 once durable and the rows read back
//! exactly; refused lines come back by number with the good lines stored (or none with
//! `atomic=true`); a device token writes only its own buoy; 401, 413 and 415 as documented; gzip
//! bodies (and inflation past the limit); `Idempotency-Key` replays; the measurement as the buoy.

use base64::Engine as _;
use bluewave_web::{Method, StatusCode};
use bytes::Bytes;
use serde_json::{Value, json};

use std::io::Write as _;

use bluewave_query::QueryConfig;
use bluewave_web::{BuoySource, LineProtocolConfig};

use crate::api::{Answer, Api, T0, fast_config};

async fn write(
    api: &Api,
    path: &str,
    authorization: Option<&str>,
    extra: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(value) = authorization {
        headers.push(("authorization", value));
    }
    let (head, body) =
        api.send(Method::POST, path, None, &headers, Some("text/plain"), Bytes::from(body.to_owned())).await;
    Answer { status: head.status, headers: head.headers, body: body.unwrap_or_default() }
}

async fn write_bytes(api: &Api, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
    let (head, body) =
        api.send(Method::POST, path, None, headers, Some("text/plain"), Bytes::from(body)).await;
    Answer { status: head.status, headers: head.headers, body: body.unwrap_or_default() }
}

/// `(ts, value)` of the `ph` rows of `buoy` (the fixture's seed writes salinity only).
async fn ph_rows(api: &Api, token: &str, buoy: &str) -> Vec<(i64, f64)> {
    rows(api, token, buoy).await.into_iter().filter(|row| row.0 == "ph").map(|row| (row.1, row.2)).collect()
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(body).unwrap();
    encoder.finish().unwrap()
}

/// `(metric, ts, value, quality)` of every row of `buoy`, read back through `GET /api/telemetry`.
async fn rows(api: &Api, token: &str, buoy: &str) -> Vec<(String, i64, f64, u64)> {
    let answer = api.get(&format!("/api/telemetry?buoy_id={buoy}"), token).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    answer.json()["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["metric"].as_str().unwrap().to_owned(),
                row["ts"].as_i64().unwrap(),
                row["value"].as_f64().unwrap(),
                row["quality"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn v2_writes_are_durable_and_read_back_exactly() {
    let api = Api::start().await;
    api.seed().await;
    let operator = api.token("operator@example.org").await;
    let t_s = T0 / 1_000_000_000;
    let body = format!(
        "# salinity and pH\nocean,buoy_id=buoy-a,site=north\\ bay ph=8.1,water_temp_c=12i {t_s}\n\n\
         ocean,buoy_id=buoy-a ph=8.2,battery_v=13u {}\n",
        t_s + 60
    );
    let answer = write(
        &api,
        "/api/v2/write?org=o&bucket=b&precision=s",
        Some(&format!("Token {operator}")),
        &[],
        &body,
    )
    .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{:?}", answer.body);
    assert!(answer.body.is_empty());
    let minute = 60_000_000_000;
    let mut read = rows(&api, &operator, "buoy-a").await;
    read.sort_by(|a, b| (a.0.as_str(), a.1).cmp(&(b.0.as_str(), b.1)));
    assert_eq!(
        read,
        vec![
            ("battery_v".to_owned(), T0 + minute, 13.0, 0),
            ("ph".to_owned(), T0, 8.1, 0),
            ("ph".to_owned(), T0 + minute, 8.2, 0),
            ("salinity_psu".to_owned(), T0, 35.0, 0),
            ("salinity_psu".to_owned(), T0 + 1_000_000_000, 35.5, 0),
            ("water_temp_c".to_owned(), T0, 12.0, 0),
        ]
    );
}

#[tokio::test]
async fn refused_lines_are_numbered_and_good_lines_stored_unless_atomic() {
    let api = Api::start().await;
    api.seed().await;
    let operator = api.token("operator@example.org").await;
    let auth = format!("Token {operator}");
    let body = format!(
        "m,buoy_id=buoy-b ph=7.5 {T0}\nm ph=7.6 {T0}\nm,buoy_id=buoy-b note=\"hi\" {T0}\n\
         m,buoy_id=buoy-z ph=7.7 {T0}\nm,buoy_id=buoy-b Bad-Metric=1 {T0}\nm,buoy_id=buoy-b ph=7.8 {}",
        T0 + 5
    );
    let atomic = write(&api, "/api/v2/write?atomic=true", Some(&auth), &[], &body).await;
    assert_eq!(atomic.status, StatusCode::BAD_REQUEST);
    let atomic = atomic.json();
    assert_eq!(atomic["stored_lines"], 0);
    assert_eq!(atomic["refused_lines"], 4);
    assert_eq!(rows(&api, &operator, "buoy-b").await.len(), 2, "atomic: nothing stored");

    let answer = write(&api, "/api/v2/write", Some(&auth), &[], &body).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let answer = answer.json();
    assert_eq!(answer["code"], "invalid");
    assert_eq!(answer["error"], "invalid_line_protocol");
    assert_eq!(answer["stored_lines"], 2);
    let lines: Vec<(u64, String)> = answer["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| (line["line"].as_u64().unwrap(), line["error"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(lines.iter().map(|(number, _)| *number).collect::<Vec<_>>(), vec![2, 3, 4, 5]);
    assert_eq!(lines[0].1, "missing the buoy_id tag");
    assert_eq!(
        lines[1].1,
        "field \"note\" is a string; only numeric fields (float, integer, unsigned) are stored"
    );
    assert_eq!(lines[2].1, "unknown buoy \"buoy-z\"");
    assert!(lines[3].1.starts_with("field \"Bad-Metric\""), "{}", lines[3].1);
    let ph: Vec<(i64, f64)> = rows(&api, &operator, "buoy-b")
        .await
        .into_iter()
        .filter(|row| row.0 == "ph")
        .map(|row| (row.1, row.2))
        .collect();
    assert_eq!(ph, vec![(T0, 7.5), (T0 + 5, 7.8)]);
}

#[tokio::test]
async fn v1_credentials_device_scope_and_refusals() {
    let api = Api::start().await;
    api.seed().await;
    let operator = api.token("operator@example.org").await;
    let issued = api.post("/api/buoys/buoy-a/device-tokens", Some(&operator), json!({})).await;
    let device = issued.json()["token"].as_str().unwrap().to_owned();

    // v1 with the token as the password, in `p=` and in Basic.
    let by_query = write(
        &api,
        &format!("/write?db=x&u=buoy&p={device}&precision=ms"),
        None,
        &[],
        "m,buoy_id=buoy-a ph=8 1767225600000",
    )
    .await;
    assert_eq!(by_query.status, StatusCode::NO_CONTENT, "{:?}", by_query.body);
    let basic =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("buoy:{device}")));
    let by_basic =
        write(&api, "/write?precision=u", Some(&basic), &[], "m,buoy_id=buoy-a ph=8.5 1767225600000001")
            .await;
    assert_eq!(by_basic.status, StatusCode::NO_CONTENT, "{:?}", by_basic.body);
    let ph: Vec<(i64, f64)> = rows(&api, &operator, "buoy-a")
        .await
        .into_iter()
        .filter(|row| row.0 == "ph")
        .map(|row| (row.1, row.2))
        .collect();
    assert_eq!(ph, vec![(T0, 8.0), (T0 + 1_000, 8.5)]);

    // A device writes only its own buoy: nothing of the body is stored.
    let other = write(
        &api,
        "/api/v2/write",
        Some(&format!("Token {device}")),
        &[],
        &format!("m,buoy_id=buoy-a ph=9 {T0}\nm,buoy_id=buoy-b ph=9 {T0}"),
    )
    .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    assert_eq!(other.json()["message"], Value::from("a device token may write only its own buoy (buoy-a)"));
    assert!(rows(&api, &operator, "buoy-a").await.iter().all(|row| row.2 != 9.0));

    // No credentials, a bad token, a customer without telemetry:write.
    assert_eq!(
        write(&api, "/api/v2/write", None, &[], "m,buoy_id=buoy-a ph=1").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        write(&api, "/api/v2/write", Some("Token nope"), &[], "m,buoy_id=buoy-a ph=1").await.status,
        StatusCode::UNAUTHORIZED
    );
    let customer = api.token("customer@example.org").await;
    assert_eq!(
        write(&api, "/api/v2/write", Some(&format!("Token {customer}")), &[], "m,buoy_id=buoy-a ph=1")
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // An encoding other than gzip is refused with 415; an unknown precision with 400; an
    // oversized body with 413.
    let auth = format!("Token {operator}");
    let brotli = write(&api, "/api/v2/write", Some(&auth), &[("content-encoding", "br")], "m ph=1").await;
    assert_eq!(brotli.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(brotli.json()["error"], Value::from("unsupported_media_type"));
    let precision = write(&api, "/api/v2/write?precision=h", Some(&auth), &[], "m ph=1").await;
    assert_eq!(precision.status, StatusCode::BAD_REQUEST);
    let limit = usize::try_from(bluewave_web::LINE_PROTOCOL_BODY_BYTES_MAX).unwrap();
    let huge = "#".repeat(limit + 1);
    let too_large = write(&api, "/api/v2/write", Some(&auth), &[], &huge).await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn gzip_bodies_are_decoded_within_the_body_limit() {
    let api = Api::start().await;
    api.seed().await;
    let operator = api.token("operator@example.org").await;
    let auth = format!("Token {operator}");
    let headers = [("authorization", auth.as_str()), ("content-encoding", "gzip")];
    // Two gzip members, as a sender that compresses per chunk writes them.
    let mut body = gzip(format!("m,buoy_id=buoy-a ph=8.1 {T0}\n").as_bytes());
    body.extend(gzip(format!("m,buoy_id=buoy-a ph=8.2 {}\n", T0 + 1).as_bytes()));
    let answer = write_bytes(&api, "/api/v2/write", &headers, body).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{:?}", answer.body);
    assert_eq!(ph_rows(&api, &operator, "buoy-a").await, vec![(T0, 8.1), (T0 + 1, 8.2)]);

    // Not gzip at all: 400 with the reason, nothing stored.
    let garbage = write_bytes(&api, "/api/v2/write", &headers, b"m,buoy_id=buoy-a ph=1".to_vec()).await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
    assert!(garbage.json()["message"].as_str().unwrap().starts_with("the gzip body does not decode"));
    // A gzip body truncated inside its deflate stream: 400, not a partial write.
    let whole = gzip(format!("m,buoy_id=buoy-a ph=7 {}\n", T0 + 2).repeat(50).as_bytes());
    let cut = write_bytes(&api, "/api/v2/write", &headers, whole[..whole.len() / 2].to_vec()).await;
    assert_eq!(cut.status, StatusCode::BAD_REQUEST, "{:?}", cut.body);
    // 40 KiB of gzip that inflates past the 16 MiB limit: 413, like a plain body of that size.
    let limit = usize::try_from(bluewave_web::LINE_PROTOCOL_BODY_BYTES_MAX).unwrap();
    let bomb = gzip("#".repeat(limit + 1).as_bytes());
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    let too_large = write_bytes(&api, "/api/v2/write", &headers, bomb).await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(ph_rows(&api, &operator, "buoy-a").await.len(), 2);
}

#[tokio::test]
async fn an_idempotency_key_writes_a_body_once_and_replays_its_answer() {
    let api = Api::start().await;
    api.seed().await;
    let operator = api.token("operator@example.org").await;
    let auth = format!("Token {operator}");
    // No timestamp: the server's time. A plain retry of such a line writes a second row.
    let body = "m,buoy_id=buoy-a ph=8.4\nm,buoy_id=buoy-a Bad=1\n";
    let keyed = [("authorization", auth.as_str()), ("idempotency-key", "batch-0001")];
    let first = write_bytes(&api, "/api/v2/write", &keyed, body.as_bytes().to_vec()).await;
    assert_eq!(first.status, StatusCode::BAD_REQUEST, "{:?}", first.body);
    assert_eq!(first.json()["stored_lines"], Value::from(1));
    assert_eq!(first.header("idempotent-replayed"), "");
    let retry = write_bytes(&api, "/api/v2/write", &keyed, body.as_bytes().to_vec()).await;
    assert_eq!(retry.status, StatusCode::BAD_REQUEST);
    assert_eq!(retry.header("idempotent-replayed"), "true");
    assert_eq!(retry.json(), first.json());
    // The retry wrote nothing: one row.
    assert_eq!(ph_rows(&api, &operator, "buoy-a").await.len(), 1);

    // The same key with another body: 422, nothing written.
    let other = write_bytes(&api, "/api/v2/write", &keyed, b"m,buoy_id=buoy-a ph=9".to_vec()).await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.json()["error"], Value::from("idempotency_key_reused"));
    // The same key and body read another way (precision, atomic) is another request: 422.
    let atomic = write_bytes(&api, "/api/v2/write?atomic=true", &keyed, body.as_bytes().to_vec()).await;
    assert_eq!(atomic.status, StatusCode::UNPROCESSABLE_ENTITY);
    // The same key compressed: the key is for the decoded body, so it is the same request.
    let gzipped =
        [("authorization", auth.as_str()), ("idempotency-key", "batch-0001"), ("content-encoding", "gzip")];
    let same = write_bytes(&api, "/api/v2/write", &gzipped, gzip(body.as_bytes())).await;
    assert_eq!(same.header("idempotent-replayed"), "true");
    // A key is the writer's own: v1 with the same key and another writer is a new request.
    let issued = api.post("/api/buoys/buoy-a/device-tokens", Some(&operator), json!({})).await;
    let device = issued.json()["token"].as_str().unwrap().to_owned();
    let device_auth = format!("Token {device}");
    let by_device = [("authorization", device_auth.as_str()), ("idempotency-key", "batch-0001")];
    let fresh = write_bytes(&api, "/write", &by_device, b"m,buoy_id=buoy-a ph=8.6".to_vec()).await;
    assert_eq!(fresh.status, StatusCode::NO_CONTENT, "{:?}", fresh.body);
    assert_eq!(fresh.header("idempotent-replayed"), "");
    assert_eq!(ph_rows(&api, &operator, "buoy-a").await.len(), 2);
    // Keys are 1–255 visible ASCII characters.
    for bad in ["", "with space", &"k".repeat(256)] {
        let headers = [("authorization", auth.as_str()), ("idempotency-key", bad)];
        let refused = write_bytes(&api, "/api/v2/write", &headers, b"m,buoy_id=buoy-a ph=1".to_vec()).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{bad:?}");
    }
    assert_eq!(ph_rows(&api, &operator, "buoy-a").await.len(), 2);
}

#[tokio::test]
async fn a_refusal_quotes_at_most_200_characters_of_the_line() {
    let api = Api::start().await;
    api.seed().await;
    let operator = api.token("operator@example.org").await;
    let long = "b".repeat(60_000);
    let body = format!("m,buoy_id={long} ph=1 {T0}\n");
    let answer = write(&api, "/api/v2/write", Some(&format!("Token {operator}")), &[], &body).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let reason = answer.json()["lines"][0]["error"].as_str().unwrap().to_owned();
    assert_eq!(reason.chars().count(), bluewave_web::LINE_REASON_CHARS_MAX + 1);
    assert!(reason.starts_with("buoy \"bbb") && reason.ends_with('…'), "{reason}");
    assert!(answer.body.len() < 1_024, "{}", answer.body.len());
}

#[tokio::test]
async fn the_measurement_names_the_buoy_when_configured() {
    let config = LineProtocolConfig { buoy_from: BuoySource::Measurement, ..LineProtocolConfig::default() };
    let api = Api::start_with_all(fast_config(10_000), QueryConfig::default(), config).await;
    api.seed().await;
    let operator = api.token("operator@example.org").await;
    let auth = format!("Token {operator}");
    let body = format!("buoy-a,buoy_id=buoy-b,site=north ph=8.3 {T0}\nbuoy-zz ph=1 {T0}\n");
    let answer = write(&api, "/api/v2/write", Some(&auth), &[], &body).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{:?}", answer.body);
    assert_eq!(answer.json()["lines"][0]["line"], Value::from(2));
    assert_eq!(answer.json()["lines"][0]["error"], Value::from("unknown buoy \"buoy-zz\""));
    assert_eq!(ph_rows(&api, &operator, "buoy-a").await, vec![(T0, 8.3)]);
    assert!(ph_rows(&api, &operator, "buoy-b").await.is_empty());
}
