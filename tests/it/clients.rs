//! Real client libraries against `bluewave serve`: the Python InfluxDB clients (`influxdb-client`
//! for the 2.x API, plain and gzip; `influxdb` for 1.x with Basic credentials) write through
//! `tests/clients/influx_clients.py`, and the rows read back exactly through the API.
//!
//! The clients come from PyPI: `.ci/run` installs them into a virtualenv and sets
//! `BLUEWAVE_PYTHON` to its interpreter and `BLUEWAVE_CLIENT_TESTS=1`, so CI never skips these.
//! Elsewhere, without `BLUEWAVE_PYTHON`, the test says it is skipped and passes.

use std::path::PathBuf;
use std::process::Command;

use bluewave_wire::ServerIdentity;
use serde_json::json;

use crate::serve::{Https, OPERATOR, PASSWORD, Server, T0, runtime, seed_accounts};

/// The interpreter with the clients installed, or `None` when these tests are not asked for.
fn python() -> Option<PathBuf> {
    let required = std::env::var("BLUEWAVE_CLIENT_TESTS").is_ok_and(|v| v == "1");
    match std::env::var_os("BLUEWAVE_PYTHON") {
        Some(path) => Some(PathBuf::from(path)),
        None if required => panic!("BLUEWAVE_CLIENT_TESTS=1 but BLUEWAVE_PYTHON is not set"),
        None => {
            eprintln!(
                "skipped: set BLUEWAVE_PYTHON to a Python with influxdb-client and influxdb (see .ci/run)"
            );
            None
        }
    }
}

#[test]
fn influxdb_client_libraries_write_and_the_rows_read_back_exactly() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    seed_accounts(dir.path());
    let (identity, _) = ServerIdentity::load_or_generate(&dir.path().join("tls")).unwrap();
    let config = dir.path().join("no-mfa.toml");
    std::fs::write(&config, "[auth]\nmfa_required_roles = []\n").unwrap();
    let server =
        Server::start_with(dir.path(), None, &[std::ffi::OsStr::new("--config"), config.as_os_str()]);
    let runtime = runtime();
    let https = Https::new(server.https, &identity);
    let (operator, device) = runtime.block_on(async {
        let pair = https.login(OPERATOR, PASSWORD).await;
        let operator = pair["access_token"].as_str().unwrap().to_owned();
        for id in ["buoy-1", "buoy-2"] {
            let body = json!({ "id": id, "name": id, "lat": null, "lng": null, "status": "active" });
            let answer = https.request("POST", "/api/buoys", Some(&operator), None, Some(body)).await;
            assert_eq!(answer.status, 201, "{:?}", answer.body);
        }
        let issued = https
            .request("POST", "/api/buoys/buoy-1/device-tokens", Some(&operator), None, Some(json!({})))
            .await;
        assert_eq!(issued.status, 201, "{:?}", issued.body);
        (operator, issued.json()["token"].as_str().unwrap().to_owned())
    });

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/influx_clients.py");
    let ca = dir.path().join("tls").join(bluewave_wire::GENERATED_CERT_FILE);
    let output = Command::new(&python)
        .arg(&script)
        .arg(server.https.port().to_string())
        .arg(&ca)
        .arg(&operator)
        .arg(&device)
        .arg(T0.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the client script failed:\n{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "influx clients ok");

    let rows = runtime.block_on(async {
        let answer = https.request("GET", "/api/telemetry?buoy_id=buoy-1", Some(&operator), None, None).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        answer.json()["rows"].as_array().unwrap().clone()
    });
    let rows: Vec<(String, i64, f64)> = rows
        .iter()
        .map(|row| {
            (
                row["metric"].as_str().unwrap().to_owned(),
                row["ts"].as_i64().unwrap(),
                row["value"].as_f64().unwrap(),
            )
        })
        .collect();
    let second = 1_000_000_000;
    let mut expected = vec![
        ("ph".to_owned(), T0, 8.1),
        ("water_temp_c".to_owned(), T0, 12.0),
        ("ph".to_owned(), T0 + second, 8.2),
        ("ph".to_owned(), T0 + 2 * second, 8.25),
        ("ph".to_owned(), T0 + 3 * second, 8.3),
    ];
    let mut rows = rows;
    rows.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    expected.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    assert_eq!(rows, expected);
    let buoy_2 =
        runtime.block_on(https.request("GET", "/api/telemetry?buoy_id=buoy-2", Some(&operator), None, None));
    assert_eq!(buoy_2.json()["rows"], json!([]));
    server.stop();
}
