#!/usr/bin/env python3
"""Q1-Q6 side by side: BlueWave through `POST /api/query` against DuckDB on the same files.

BlueWave runs as `bluewave serve` on a data dir (started and stopped by this script, on free
loopback ports, with a throwaway admin whose password comes from the environment); DuckDB runs
in this process with `--duckdb-threads` threads over the Parquet files of the same data dir.
Both answer the query definitions of `benches/benches/query.rs` (Q1-Q6, written in each
system's dialect below) `--runs` times after one warm-up run each; the script prints the
median wall time of each, the ratio, and the row counts of both answers (they must agree).

BlueWave is timed end to end over HTTPS (request, planning, execution, JSON answer read in
full); DuckDB is timed from `execute` to the last row fetched. The DuckDB side reads every
Parquet file under `parquet/readings/`, so the data dir must hold no overlapping generations
(ingest in time order, or let compaction fold them first): DuckDB applies no last-write-wins.
BlueWave is timed first, once the server's compaction figures in `/metrics` stop changing; DuckDB
is timed after the server has stopped, on the files at rest (the background compactor would
otherwise replace files under DuckDB's feet).

Setup (DuckDB from PyPI, in a venv under the cargo target dir):

    python3 -m venv target/bench-venv
    target/bench-venv/bin/pip install duckdb
    cargo build --profile bench --bin bluewave
    target/bench-venv/bin/python benches/duckdb_side_by_side.py \\
        --bluewave target/release/bluewave --data-dir /tmp/bw-bench --generate-buoys 1000 --generate-hours 3.5

`--generate-*` fills an empty data dir with `bluewave ingest-demo` (the marine workload, relaxed
durability) first. Figures are only worth recording from a release build on an otherwise idle
machine; see BENCHMARKS.md.
"""

import argparse
import hashlib
import http.client
import json
import os
import secrets
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

# `bluewave_engine::workload::DEFAULT_START_TS`: 2026-06-01T00:00:00Z.
DEFAULT_START_NS = 1_780_272_000 * 1_000_000_000
MINUTE_NS = 60 * 1_000_000_000
# How long `serve` may take to print its listening lines (a debug build replaying a WAL).
READY_TIMEOUT_S = 180
# How long one BlueWave answer may take before the script gives up on it.
REQUEST_TIMEOUT_S = 600
# How long `serve` may take to stop after SIGTERM (it flushes on the way out).
STOP_TIMEOUT_S = 120
# How long the server's background compaction may take to settle before timing starts.
SETTLE_TIMEOUT_S = 900


def queries(buoy, start_ns):
    """(name, BlueWave SQL, DuckDB SQL) of Q1-Q6 (`benches/benches/query.rs`)."""

    def bw_ts(ns):
        return f"to_timestamp_nanos({ns})"

    def duck_ts(ns):
        t = datetime.fromtimestamp(ns // 1_000_000_000, tz=timezone.utc)
        return f"TIMESTAMPTZ '{t:%Y-%m-%d %H:%M:%S}+00'"

    q2 = (start_ns + 60 * MINUTE_NS, start_ns + 70 * MINUTE_NS)
    day = (start_ns, start_ns + 1_440 * MINUTE_NS)
    return [
        (
            "Q1 last value per buoy",
            "SELECT buoy_id, last_value(value ORDER BY ts) FROM readings "
            "WHERE metric = 'salinity_psu' GROUP BY buoy_id",
            "SELECT buoy_id, arg_max(value, ts) FROM readings "
            "WHERE metric = 'salinity_psu' GROUP BY buoy_id",
        ),
        (
            "Q2 one series, 10 min",
            f"SELECT ts, value FROM readings WHERE buoy_id = '{buoy}' AND metric = 'ph' "
            f"AND ts >= {bw_ts(q2[0])} AND ts < {bw_ts(q2[1])}",
            f"SELECT ts, value FROM readings WHERE buoy_id = '{buoy}' AND metric = 'ph' "
            f"AND ts >= {duck_ts(q2[0])} AND ts < {duck_ts(q2[1])}",
        ),
        (
            "Q3 one buoy, 1-min means, day",
            "SELECT date_bin(INTERVAL '1 minute', ts) AS m, metric, avg(value) FROM readings "
            f"WHERE buoy_id = '{buoy}' AND ts >= {bw_ts(day[0])} AND ts < {bw_ts(day[1])} GROUP BY 1, 2",
            "SELECT time_bucket(INTERVAL '1 minute', ts) AS m, metric, avg(value) FROM readings "
            f"WHERE buoy_id = '{buoy}' AND ts >= {duck_ts(day[0])} AND ts < {duck_ts(day[1])} GROUP BY 1, 2",
        ),
        (
            "Q4 fleet salinity 1-min means",
            "SELECT date_bin(INTERVAL '1 minute', ts) AS m, avg(value) FROM readings "
            f"WHERE metric = 'salinity_psu' AND ts >= {bw_ts(day[0])} AND ts < {bw_ts(day[1])} GROUP BY 1",
            "SELECT time_bucket(INTERVAL '1 minute', ts) AS m, avg(value) FROM readings "
            f"WHERE metric = 'salinity_psu' AND ts >= {duck_ts(day[0])} AND ts < {duck_ts(day[1])} GROUP BY 1",
        ),
        (
            "Q5 count and mean per metric",
            "SELECT metric, count(*), avg(value) FROM readings GROUP BY metric",
            "SELECT metric, count(*), avg(value) FROM readings GROUP BY metric",
        ),
        (
            "Q6 top 10 buoys by max pollutant",
            "SELECT buoy_id, max(value) AS m FROM readings WHERE metric = 'pollutant_ppb' "
            "GROUP BY buoy_id ORDER BY m DESC LIMIT 10",
            "SELECT buoy_id, max(value) AS m FROM readings WHERE metric = 'pollutant_ppb' "
            "GROUP BY buoy_id ORDER BY m DESC LIMIT 10",
        ),
    ]


def free_port(kind):
    """A free loopback port (bound, read, released)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`bluewave serve` on `data_dir`, stopped on exit."""

    def __init__(self, binary, data_dir):
        self.password = secrets.token_hex(24)
        self.config = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
        # A throwaway admin signs in with its password alone.
        self.config.write("[auth]\nmfa_required_roles = []\n")
        self.config.close()
        self.log = open(os.path.join(os.path.dirname(os.path.abspath(data_dir)), "bench-serve.log"), "w")
        env = dict(os.environ, BLUEWAVE_ADMIN_PASSWORD=self.password)
        https = f"127.0.0.1:{free_port(socket.SOCK_STREAM)}"
        quic = f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
        self.child = subprocess.Popen(
            [binary, "--data-dir", data_dir, "serve", "--quic-listen", quic, "--https-listen", https,
             "--config", self.config.name, "--admin-email", "admin@localhost"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log, env=env, text=True,
        )
        self.address, self.pin = self._wait_ready()

    def _wait_ready(self):
        lines = []
        ready = threading.Event()

        def read():
            for line in self.child.stdout:
                lines.append(line.strip())
                if any(l.startswith("certificate SHA-256 pin:") for l in lines):
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(READY_TIMEOUT_S):
            raise RuntimeError(f"serve printed no pin within {READY_TIMEOUT_S} s: {lines}")
        address = pin = None
        for line in lines:
            if line.startswith("HTTPS API listening on https://"):
                address = line.split("https://", 1)[1].split()[0]
            if line.startswith("certificate SHA-256 pin:"):
                pin = line.split(":", 1)[1].strip()
        if address is None or pin is None:
            raise RuntimeError(f"serve exited or printed no address: {lines}")
        return address, pin

    def connection(self):
        """An HTTPS connection whose certificate is checked against the printed pin."""
        host, port = self.address.rsplit(":", 1)
        context = ssl.create_default_context()
        # The self-signed certificate is checked by its pin below, not by a CA.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=REQUEST_TIMEOUT_S)
        conn.connect()
        der = conn.sock.getpeercert(binary_form=True)
        if hashlib.sha256(der).hexdigest() != self.pin:
            raise RuntimeError("the server's certificate does not match its printed pin")
        return conn

    def stop(self):
        if self.child.poll() is None:
            self.child.terminate()
            try:
                self.child.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait()
        os.unlink(self.config.name)
        self.log.close()


def call(conn, method, path, body, token=None):
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=json.dumps(body), headers=headers)
    answer = conn.getresponse()
    return answer.status, answer.read()


def wait_settled(conn):
    """Waits until the server's compaction figures in `/metrics` (compactions run, generations
    and bytes waiting) stay unchanged for five polls a second apart: DuckDB reads the files of
    the moment, and a compaction that replaced them meanwhile would make it fail (or read a
    generation twice). A partition the policy leaves uncompacted does not delay the start.
    Returns the seconds waited."""
    names = ("bluewave_engine_compactions_total ", "bluewave_engine_compaction_generations_total ",
             "bluewave_engine_compaction_bytes_waiting ")
    began, last, same = time.monotonic(), None, 0
    while time.monotonic() - began < SETTLE_TIMEOUT_S:
        conn.request("GET", "/metrics")
        answer = conn.getresponse()
        text = answer.read().decode("utf-8", "replace")
        now = tuple(line for line in text.splitlines() if line.startswith(names))
        same = same + 1 if now == last else 0
        last = now
        if same >= 5:
            return time.monotonic() - began
        time.sleep(1)
    raise RuntimeError(f"compaction did not settle within {SETTLE_TIMEOUT_S} s")


def login(conn, password):
    for _ in range(10):
        status, body = call(conn, "POST", "/api/auth/token", {"email": "admin@localhost", "password": password})
        if status == 200:
            return json.loads(body)["access_token"]
        if status != 429:
            raise RuntimeError(f"login: {status} {body[:200]!r}")
        time.sleep(1)
    raise RuntimeError("login: still rate limited")


def time_bluewave(conn, token, sql, runs):
    """(median seconds, rows) of `sql` through `POST /api/query`."""
    times, rows = [], None
    for i in range(runs + 1):
        began = time.perf_counter()
        status, body = call(conn, "POST", "/api/query", {"sql": sql}, token)
        elapsed = time.perf_counter() - began
        if status != 200:
            raise RuntimeError(f"{sql}: {status} {body[:300]!r}")
        rows = len(json.loads(body))
        if i > 0:  # the first run warms caches
            times.append(elapsed)
    return statistics.median(times), rows


def time_duckdb(con, sql, runs):
    times, rows = [], None
    for i in range(runs + 1):
        began = time.perf_counter()
        rows = len(con.execute(sql).fetchall())
        elapsed = time.perf_counter() - began
        if i > 0:
            times.append(elapsed)
    return statistics.median(times), rows


def duckdb_connection(data_dir, threads):
    import duckdb  # from PyPI; see the module docs

    con = duckdb.connect()
    con.execute(f"SET threads = {int(threads)}")
    con.execute("SET TimeZone = 'UTC'")
    files = os.path.join(os.path.abspath(data_dir), "parquet", "readings", "*", "*", "*.parquet")
    # Files of one partition may store `value` at different decimal scales (one file per value
    # encoding): read by name and as DOUBLE, as BlueWave's `readings` does.
    quoted = "'" + files.replace("'", "''") + "'"
    con.execute(
        "CREATE VIEW readings AS SELECT buoy_id, metric, CAST(ts AS TIMESTAMPTZ) AS ts, "
        f"CAST(value AS DOUBLE) AS value, quality FROM read_parquet({quoted}, union_by_name = true, "
        "hive_partitioning = false)"
    )
    return con, duckdb.__version__


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bluewave", required=True, help="the bluewave binary")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--generate-buoys", type=int, help="fill an empty data dir with ingest-demo first")
    parser.add_argument("--generate-hours", type=float, default=3.5)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--duckdb-threads", type=int, default=2)
    parser.add_argument("--buoy", default="buoy-0000", help="the buoy of Q2 and Q3")
    parser.add_argument("--start-ns", type=int, default=DEFAULT_START_NS, help="start of the data (Q2-Q4)")
    args = parser.parse_args()

    if args.generate_buoys and not os.path.isdir(os.path.join(args.data_dir, "parquet")):
        subprocess.run(
            [args.bluewave, "--data-dir", args.data_dir, "ingest-demo", "--buoys", str(args.generate_buoys),
             "--hours", str(args.generate_hours), "--durability", "relaxed"],
            check=True,
        )
    # BlueWave first, then DuckDB on the files at rest once the server has stopped: its
    # background compactor may replace files at any time while it runs, and DuckDB reads the
    # files of the moment (it would fail on a replaced file, or read a generation twice).
    server = Server(args.bluewave, args.data_dir)
    bluewave_times = []
    try:
        conn = server.connection()
        settled_s = wait_settled(conn)
        token = login(conn, server.password)
        for name, bw_sql, _ in queries(args.buoy, args.start_ns):
            bluewave_times.append(time_bluewave(conn, token, bw_sql, args.runs))
        conn.close()
    finally:
        server.stop()
    con, duckdb_version = duckdb_connection(args.data_dir, args.duckdb_threads)
    print(f"BlueWave {args.bluewave} on {args.data_dir} (compaction settled after {settled_s:.0f} s); "
          f"DuckDB {duckdb_version} with {args.duckdb_threads} threads on the files after the server "
          f"stopped; medians of {args.runs} runs after one warm-up")
    print()
    print("| query | BlueWave | DuckDB on the same files | DuckDB / BlueWave | rows (BlueWave, DuckDB) |")
    print("|---|---|---|---|---|")
    mismatched = []
    for (name, _, duck_sql), (bw, bw_rows) in zip(queries(args.buoy, args.start_ns), bluewave_times):
        duck, duck_rows = time_duckdb(con, duck_sql, args.runs)
        print(f"| {name} | {bw * 1e3:.1f} ms | {duck * 1e3:.1f} ms | {duck / bw:.2f}x | {bw_rows}, {duck_rows} |")
        sys.stdout.flush()
        if bw_rows != duck_rows:
            mismatched.append(name)
    if mismatched:
        print(f"row counts differ for: {', '.join(mismatched)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
