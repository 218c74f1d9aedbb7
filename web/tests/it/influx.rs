//! InfluxDB-compatible writes over real HTTPS into a real engine: `POST /api/v2/write` (Token
//! header) and `POST /write` (v1, `p=` and Basic) answer 204 once durable and the rows read back
//! exactly; refused lines come back by number with the good lines stored (or none with
//! `atomic=true`); a device token writes only its own buoy; 401, 413 and 415 as documented.

use base64::Engine as _;
use bluewave_web::{Method, StatusCode};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::api::{Answer, Api, T0};

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
    // gzip is refused with 415; an unknown precision with 400; an oversized body with 413.
    let auth = format!("Token {operator}");
    let gzip = write(&api, "/api/v2/write", Some(&auth), &[("content-encoding", "gzip")], "m ph=1").await;
    assert_eq!(gzip.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let precision = write(&api, "/api/v2/write?precision=h", Some(&auth), &[], "m ph=1").await;
    assert_eq!(precision.status, StatusCode::BAD_REQUEST);
    let limit = usize::try_from(bluewave_web::LINE_PROTOCOL_BODY_BYTES_MAX).unwrap();
    let huge = "#".repeat(limit + 1);
    let too_large = write(&api, "/api/v2/write", Some(&auth), &[], &huge).await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
}
