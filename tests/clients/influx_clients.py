"""Writes line protocol into `bluewave serve` through the InfluxDB client libraries, exactly as
a user's script would: `influxdb-client` (InfluxDB 2.x API, plain and gzip) with a user's access
token, and `influxdb` (1.x API, Basic credentials) with a buoy's device token. Run by the Rust
test `clients::influxdb_client_libraries_write_and_the_rows_read_back_exactly`, which reads the
rows back and checks them; this script checks the answers the clients see.

Arguments: PORT CA_CERT_PEM USER_TOKEN DEVICE_TOKEN T0_NS
"""

import json
import sys

from influxdb import InfluxDBClient as V1Client
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

SECOND_NS = 1_000_000_000


def main() -> None:
    port, ca, user_token, device_token, t0 = sys.argv[1:6]
    port, t0 = int(port), int(t0)
    url = f"https://localhost:{port}"

    # 2.x API, plain body: tags with an escaped space, a float and an integer field.
    with InfluxDBClient(url=url, token=user_token, org="bluewave", ssl_ca_cert=ca) as client:
        write = client.write_api(write_options=SYNCHRONOUS)
        point = (
            Point("ocean")
            .tag("buoy_id", "buoy-1")
            .tag("site", "north bay")
            .field("ph", 8.1)
            .field("water_temp_c", 12)
            .time(t0, WritePrecision.NS)
        )
        write.write(bucket="readings", record=point)
        # A refused line: the client raises with our 400 and its line-numbered reasons.
        try:
            write.write(bucket="readings", record="ocean,buoy_id=buoy-1 Bad=1", write_precision=WritePrecision.S)
        except ApiException as error:
            assert error.status == 400, error.status
            body = json.loads(error.body)
            assert body["code"] == "invalid", body
            assert body["refused_lines"] == 1 and body["lines"][0]["line"] == 1, body
        else:
            raise AssertionError("a line with an invalid metric name was accepted")

    # 2.x API with gzip bodies, in seconds precision.
    with InfluxDBClient(url=url, token=user_token, org="bluewave", ssl_ca_cert=ca, enable_gzip=True) as client:
        write = client.write_api(write_options=SYNCHRONOUS)
        lines = [f"ocean,buoy_id=buoy-1 ph=8.2 {t0 // SECOND_NS + 1}", f"ocean,buoy_id=buoy-1 ph=8.25 {t0 // SECOND_NS + 2}"]
        write.write(bucket="readings", record=lines, write_precision=WritePrecision.S)

    # 1.x API: the device token as the password (Basic), nanosecond timestamps, gzip on.
    v1 = V1Client(
        host="localhost",
        port=port,
        username="buoy-1",
        password=device_token,
        database="readings",
        ssl=True,
        verify_ssl=ca,
        gzip=True,
    )
    points = [{"measurement": "ocean", "tags": {"buoy_id": "buoy-1"}, "time": t0 + 3 * SECOND_NS, "fields": {"ph": 8.3}}]
    assert v1.write_points(points, time_precision="n") is True
    # The device may not write another buoy: 403 reaches the client as an error.
    try:
        v1.write_points([{"measurement": "ocean", "tags": {"buoy_id": "buoy-2"}, "time": t0, "fields": {"ph": 1.0}}], time_precision="n")
    except Exception as error:  # influxdb raises InfluxDBClientError with the status code
        assert getattr(error, "code", None) == 403, repr(error)
    else:
        raise AssertionError("a device wrote another buoy")
    v1.close()
    print("influx clients ok")


if __name__ == "__main__":
    main()
