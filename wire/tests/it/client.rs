//! The buoy client SDK against the real server over loopback QUIC, with a real engine in a
//! tempdir: a batch acked `stored` is in the engine; a window of many batches in flight; seq
//! reuse answered `duplicate` and stored once; rejected reasons reach the caller; a server
//! restart while the client keeps sending loses nothing and stores nothing twice; a buoy offline
//! (server down) with a spool, rebooted in the meantime, gets everything stored once the server
//! is back; a full buffer is a typed error; a pin mismatch or a wrong CA/name fails the handshake
//! for good; CA-file trust works with a CA-signed server certificate; terminal refusals (unknown
//! token, revoked device) stop reconnecting; a batch over the server's limits is refused before
//! sending; a `busy` answer is resent under the same seq until stored.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bluewave_engine::{BuoyId, Engine, EngineConfig, MetricName, ReadingBatch, Row};
use bluewave_wire::{
    AckOutcome, Client, ClientConfig, ClientError, ConnectionCloseCode, PresharedTokens, RefuseReason,
    RejectReason, ServerConfig, ServerIdentity, Trust, parse_pin,
};

use crate::common::{TestServer, test_config};

const METRICS: [&str; 2] = ["salinity_psu", "ph"];
const BASE_TS: i64 = 1_780_000_000_000_000_000;
const SECOND_NS: i64 = 1_000_000_000;

fn metrics() -> Vec<MetricName> {
    METRICS.iter().map(|n| MetricName::new(n).unwrap()).collect()
}

/// Batch number `index`: `readings` readings at distinct timestamps (one second apart, batches
/// contiguous) alternating the two metrics, values derived from the timestamp.
fn batch(index: usize, readings: usize) -> ReadingBatch {
    let first = (index * readings) as i64;
    let ts: Vec<i64> = (0..readings as i64).map(|i| BASE_TS + (first + i) * SECOND_NS).collect();
    let ids: Vec<u16> = (0..readings).map(|i| (i % 2) as u16).collect();
    let values: Vec<f64> = ts.iter().map(|t| value_at(*t)).collect();
    ReadingBatch::new(metrics(), ts, ids, values).unwrap()
}

fn value_at(ts: i64) -> f64 {
    ((ts - BASE_TS) / SECOND_NS) as f64 * 0.001 + 30.0
}

/// The exact rows the engine must hold for batches `0..batches` of `readings` readings.
fn expected_rows(buoy: &str, batches: usize, readings: usize) -> Vec<(String, String, i64, f64)> {
    let mut rows: Vec<(String, String, i64, f64)> = (0..batches)
        .flat_map(|b| {
            let batch = batch(b, readings);
            (0..readings)
                .map(|i| {
                    let ts = batch.timestamps()[i];
                    (buoy.to_owned(), METRICS[i % 2].to_owned(), ts, value_at(ts))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    rows.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
    rows
}

fn simple(rows: &[Row]) -> Vec<(String, String, i64, f64)> {
    let mut rows: Vec<_> =
        rows.iter().map(|r| (r.buoy.to_string(), r.metric.to_string(), r.ts, r.value)).collect();
    rows.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
    rows
}

fn pinned(server: &TestServer) -> Trust {
    Trust::Pinned(vec![parse_pin(&server.pin_sha256).unwrap()])
}

/// A client config for `token` against `addr`, with fast reconnects for tests.
fn config_for(addr: SocketAddr, trust: Trust, token: &str) -> ClientConfig {
    let mut config = ClientConfig::new(addr, "localhost", trust, token, metrics());
    config.backoff_initial_ms = 20;
    config.backoff_max_ms = 200;
    config.connect_timeout_ms = 2_000;
    config
}

fn client_config(server: &TestServer, token: &str) -> ClientConfig {
    config_for(server.addr, pinned(server), token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sent_batch_is_stored_and_visible_in_the_engine() {
    let server = TestServer::start().await;
    let token = server.add_device("buoy-1");
    let client = Client::connect(client_config(&server, &token)).await.unwrap();
    let limits = client.wait_connected().await.unwrap();
    assert_eq!(limits.buoy, BuoyId::new("buoy-1").unwrap());
    assert_eq!(limits.batch_readings_max, 65_536);

    let report = client.send(&batch(0, 10)).await.unwrap().await.unwrap();
    assert_eq!(report.outcome, AckOutcome::Stored);
    assert_eq!(report.batch_seq, 1);
    assert_eq!(report.sends, 1);
    assert_eq!(simple(&server.readings("buoy-1")), expected_rows("buoy-1", 1, 10));
    let stats = client.stats();
    assert_eq!(
        (stats.batches_sent, stats.acked_stored, stats.readings_acked, stats.connections),
        (1, 1, 10, 1)
    );
    assert_eq!(client.close().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_of_many_batches_in_flight_is_stored_once_each() {
    let server = TestServer::start().await;
    let token = server.add_device("buoy-w");
    let mut config = client_config(&server, &token);
    config.window = 16;
    let client = Client::connect(config).await.unwrap();
    let mut acks = Vec::new();
    for b in 0..200 {
        acks.push(client.send(&batch(b, 10)).await.unwrap());
    }
    let mut seqs = BTreeSet::new();
    for ack in acks {
        let report = ack.await.unwrap();
        assert_eq!(report.outcome, AckOutcome::Stored);
        seqs.insert(report.batch_seq);
    }
    assert_eq!(seqs, (1..=200).collect());
    assert_eq!(simple(&server.readings("buoy-w")), expected_rows("buoy-w", 200, 10));
    assert_eq!(client.stats().acked_stored, 200);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_seq_is_answered_duplicate_and_stored_once() {
    let server = TestServer::start().await;
    let token = server.add_device("buoy-d");
    let client = Client::connect(client_config(&server, &token)).await.unwrap();
    let first = client.send_with_seq(5, &batch(0, 4)).await.unwrap().await.unwrap();
    assert_eq!(first.outcome, AckOutcome::Stored);
    // Same seq, different readings: a client bug the protocol answers `duplicate` (dropped).
    let second = client.send_with_seq(5, &batch(1, 4)).await.unwrap().await.unwrap();
    assert_eq!(second.outcome, AckOutcome::Duplicate);
    client.close().await;
    // A new connection (a rebooted buoy without spool) resending seq 5 gets `duplicate` too.
    let client = Client::connect(client_config(&server, &token)).await.unwrap();
    let third = client.send_with_seq(5, &batch(0, 4)).await.unwrap().await.unwrap();
    assert_eq!(third.outcome, AckOutcome::Duplicate);
    assert_eq!(simple(&server.readings("buoy-d")), expected_rows("buoy-d", 1, 4));
    assert_eq!(client.stats().acked_duplicate, 1);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_reason_reaches_the_caller() {
    let server = TestServer::start().await;
    let token = server.add_device("buoy-r");
    let client = Client::connect(client_config(&server, &token)).await.unwrap();
    let high = client.send_with_seq(10_000, &batch(0, 2)).await.unwrap().await.unwrap();
    assert_eq!(high.outcome, AckOutcome::Stored);
    let stale = client.send_with_seq(1, &batch(1, 2)).await.unwrap().await.unwrap();
    assert_eq!(stale.outcome, AckOutcome::Rejected(RejectReason::StaleSequence));
    assert_eq!(client.stats().acked_rejected, 1);
    assert_eq!(simple(&server.readings("buoy-r")), expected_rows("buoy-r", 1, 2));
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_while_sending_loses_nothing_and_stores_nothing_twice() {
    let mut server = TestServer::start().await;
    let token = server.add_device("buoy-x");
    let mut config = client_config(&server, &token);
    config.window = 8;
    let client = Arc::new(Client::connect(config).await.unwrap());
    client.wait_connected().await.unwrap();
    let sender = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut acks = Vec::new();
            for b in 0..300 {
                acks.push(client.send(&batch(b, 20)).await.unwrap());
                if b % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            acks
        })
    };
    // Restart twice while the sender runs: the connection drops with batches in flight.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        server.restart().await;
    }
    let acks = sender.await.unwrap();
    for ack in acks {
        let report = ack.await.unwrap();
        assert!(matches!(report.outcome, AckOutcome::Stored | AckOutcome::Duplicate), "{report:?}");
    }
    let stats = client.stats();
    assert!(stats.connections >= 2, "expected a reconnect: {stats:?}");
    assert_eq!(stats.acked_stored + stats.acked_duplicate, 300);
    // Every reading exactly once, with its value: nothing lost, nothing doubled.
    assert_eq!(simple(&server.readings("buoy-x")), expected_rows("buoy-x", 300, 20));
    Arc::into_inner(client).unwrap().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_with_a_spool_and_a_reboot_then_everything_is_stored_once() {
    let mut server = TestServer::start().await;
    let token = server.add_device("buoy-s");
    let spool = tempfile::tempdir().unwrap();
    let mut config = client_config(&server, &token);
    config.spool_dir = Some(spool.path().to_path_buf());
    config.close_timeout_ms = 300;

    let client = Client::connect(config.clone()).await.unwrap();
    for b in 0..5 {
        assert_eq!(client.send(&batch(b, 10)).await.unwrap().await.unwrap().outcome, AckOutcome::Stored);
    }
    // The link goes away; the buoy keeps measuring, then reboots before the link is back.
    server.stop().await;
    let mut pending = Vec::new();
    for b in 5..25 {
        pending.push(client.send(&batch(b, 10)).await.unwrap());
    }
    assert_eq!(client.close().await, 20);
    for ack in pending {
        assert!(matches!(ack.await, Err(ClientError::Closed)));
    }
    let on_disk = std::fs::read_dir(spool.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_str().unwrap().ends_with(".bwb"))
        .count();
    assert_eq!(on_disk, 20);

    // Rebooted: a new client on the same spool resends the 20 by itself; new batches continue.
    server.restart().await;
    let client = Client::connect(config).await.unwrap();
    assert_eq!(client.unacked(), 20);
    let mut acks = Vec::new();
    for b in 25..30 {
        acks.push(client.send(&batch(b, 10)).await.unwrap());
    }
    let seqs: Vec<u64> = acks.iter().map(|a| a.batch_seq()).collect();
    assert!(seqs[0] > 25, "seqs continue above the spooled ones: {seqs:?}");
    for ack in acks {
        assert_eq!(ack.await.unwrap().outcome, AckOutcome::Stored);
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        while client.unacked() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(client.stats().acked_stored, 25);
    assert_eq!(simple(&server.readings("buoy-s")), expected_rows("buoy-s", 30, 10));
    client.close().await;
    let left = std::fs::read_dir(spool.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect::<Vec<_>>();
    assert_eq!(left.len(), 1, "only the seq lease remains: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_offline_buffer_is_a_typed_error() {
    // Nothing answers on this port: every batch stays unacked.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let mut config = config_for(addr, Trust::Pinned(vec![[7; 32]]), "token-0123456789abcdef");
    config.buffer_batches_max = 2;
    config.window = 1;
    config.close_timeout_ms = 50;
    let client = Client::connect(config).await.unwrap();
    let _a = client.try_send(&batch(0, 5)).await.unwrap();
    let _b = client.try_send(&batch(1, 5)).await.unwrap();
    match client.try_send(&batch(2, 5)).await {
        Err(ClientError::BufferFull { batches: 2, batches_max: 2, .. }) => {}
        other => panic!("expected BufferFull, got {other:?}"),
    }
    // `send` waits for room instead.
    let waiting = tokio::time::timeout(Duration::from_millis(100), client.send(&batch(2, 5))).await;
    assert!(waiting.is_err(), "send must wait while the buffer is full");
    assert_eq!(client.close().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_mismatch_fails_the_handshake_for_good() {
    let server = TestServer::start().await;
    let token = server.add_device("buoy-p");
    let mut wrong = parse_pin(&server.pin_sha256).unwrap();
    wrong[0] ^= 1;
    let client = Client::connect(config_for(server.addr, Trust::Pinned(vec![wrong]), &token)).await.unwrap();
    match client.wait_connected().await {
        // The error names the presented certificate's hash so an operator can compare pins.
        Err(ClientError::Tls(message)) => {
            assert!(message.contains("PinMismatch") && message.contains(&server.pin_sha256), "{message}")
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(client.stats().reconnects, 0, "never retried");
    assert!(matches!(client.send(&batch(0, 1)).await, Err(ClientError::Tls(_))));
    // Two pins (a rotation), one of them right: accepted.
    let right = parse_pin(&server.pin_sha256).unwrap();
    let client =
        Client::connect(config_for(server.addr, Trust::Pinned(vec![wrong, right]), &token)).await.unwrap();
    assert_eq!(client.send(&batch(0, 1)).await.unwrap().await.unwrap().outcome, AckOutcome::Stored);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_file_trust_verifies_a_ca_signed_server_certificate_and_its_name() {
    let dir = tempfile::tempdir().unwrap();
    // A CA and a leaf for "localhost" signed by it.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "BlueWave test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let ca_path = dir.path().join("ca.pem");
    let cert_path = dir.path().join("server.pem");
    let key_path = dir.path().join("server.key");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    std::fs::write(&cert_path, leaf.pem()).unwrap();
    std::fs::write(&key_path, leaf_key.serialize_pem()).unwrap();

    let identity = ServerIdentity::from_pem_files(&cert_path, &key_path).unwrap();
    let engine = Engine::open(EngineConfig::new(dir.path().join("data"))).unwrap();
    let buoy = BuoyId::new("buoy-ca").unwrap();
    engine.register_buoy(bluewave_engine::BuoyInfo::new(&buoy)).unwrap();
    let tokens = Arc::new(PresharedTokens::new());
    tokens.insert(buoy, "token-buoy-ca-0123456789abcdef");
    let handle = bluewave_wire::start(test_config(), &identity, engine.clone(), tokens).await.unwrap();
    let addr = handle.local_addr();

    let trust = Trust::CaFile(ca_path.clone());
    let client =
        Client::connect(config_for(addr, trust.clone(), "token-buoy-ca-0123456789abcdef")).await.unwrap();
    assert_eq!(client.send(&batch(0, 3)).await.unwrap().await.unwrap().outcome, AckOutcome::Stored);
    client.close().await;

    // The same CA, but the name the client connects to is not in the certificate.
    let mut wrong_name = config_for(addr, trust, "token-buoy-ca-0123456789abcdef");
    wrong_name.server_name = "buoys.example.org".into();
    let client = Client::connect(wrong_name).await.unwrap();
    assert!(matches!(client.wait_connected().await, Err(ClientError::Tls(_))));
    // A CA file that did not sign the server's certificate.
    let other_ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let other_path = dir.path().join("other.pem");
    std::fs::write(&other_path, other_ca.cert.pem()).unwrap();
    let client =
        Client::connect(config_for(addr, Trust::CaFile(other_path), "token-buoy-ca-0123456789abcdef"))
            .await
            .unwrap();
    assert!(matches!(client.wait_connected().await, Err(ClientError::Tls(_))));
    handle.shutdown().await;
    engine.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_refusals_fail_pending_batches_and_stop_reconnecting() {
    let server = TestServer::start().await;
    // An unknown token: REFUSED with retry_after 0.
    let client = Client::connect(client_config(&server, "not-a-known-token-0123456789")).await.unwrap();
    let pending = client.send(&batch(0, 2)).await.unwrap();
    match pending.await {
        Err(ClientError::Refused { reason: RefuseReason::TokenBadSignature, .. }) => {}
        other => panic!("expected a terminal refusal, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(client.stats().reconnects, 0);
    assert!(matches!(client.send(&batch(1, 2)).await, Err(ClientError::Refused { .. })));

    // A device revoked while connected: close DEVICE_REVOKED, no reconnect.
    let token = server.add_device("buoy-v");
    let client = Client::connect(client_config(&server, &token)).await.unwrap();
    assert_eq!(client.send(&batch(0, 2)).await.unwrap().await.unwrap().outcome, AckOutcome::Stored);
    assert_eq!(server.revoke("buoy-v"), 1);
    let failed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match client.send(&batch(1, 2)).await {
                Err(e) => return e,
                Ok(ack) => {
                    let _ = ack.await;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    match failed {
        ClientError::ServerClosed { code, .. } => assert_eq!(code, ConnectionCloseCode::DeviceRevoked as u64),
        other => panic!("expected DEVICE_REVOKED, got {other:?}"),
    }
    assert_eq!(client.stats().reconnects, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_servers_limits_is_refused_before_sending() {
    let mut config = test_config();
    config.batch_readings_max = 10;
    let server = TestServer::start_with(config).await;
    let token = server.add_device("buoy-l");
    let client = Client::connect(client_config(&server, &token)).await.unwrap();
    assert_eq!(client.wait_connected().await.unwrap().batch_readings_max, 10);
    match client.send(&batch(0, 11)).await {
        Err(ClientError::BatchTooLarge { readings: 11, readings_max: 10, .. }) => {}
        other => panic!("expected BatchTooLarge, got {other:?}"),
    }
    assert_eq!(client.send(&batch(0, 10)).await.unwrap().await.unwrap().outcome, AckOutcome::Stored);
    assert_eq!(client.stats().batches_sent, 1);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_answer_is_resent_with_the_same_seq_until_stored() {
    // An engine buffer bound far below one batch: the second batch is answered busy (the
    // server does not wait for room: `busy_wait_ms` 0) until a flush frees the buffer.
    let config = ServerConfig { busy_wait_ms: 0, ..test_config() };
    let server = TestServer::start_with_engine(config, |engine| {
        engine.flush_buffer_bytes = 1;
        engine.buffer_bytes_max = 2;
        engine.flush_interval_ms = 3_600_000;
    })
    .await;
    let token = server.add_device("buoy-b");
    let client = Client::connect(client_config(&server, &token)).await.unwrap();
    assert_eq!(client.send(&batch(0, 6)).await.unwrap().await.unwrap().outcome, AckOutcome::Stored);
    let second = client.send(&batch(1, 6)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while client.stats().busy_answers == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    let engine = server.engine().clone();
    tokio::task::spawn_blocking(move || engine.flush().unwrap()).await.unwrap();
    let report = second.await.unwrap();
    assert_eq!((report.batch_seq, report.outcome), (2, AckOutcome::Stored));
    assert!(report.sends >= 2, "{report:?}");
    assert_eq!(client.stats().resends, u64::from(report.sends - 1));
    assert_eq!(simple(&server.readings("buoy-b")), expected_rows("buoy-b", 2, 6));
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_one_client_of_a_shared_endpoint_leaves_the_others_connected() {
    let server = TestServer::start().await;
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let (first_token, second_token) = (server.add_device("buoy-s1"), server.add_device("buoy-s2"));
    let first = Client::connect_on(endpoint.clone(), client_config(&server, &first_token)).await.unwrap();
    let second = Client::connect_on(endpoint.clone(), client_config(&server, &second_token)).await.unwrap();
    first.wait_connected().await.unwrap();
    second.wait_connected().await.unwrap();
    assert_eq!(first.send(&batch(0, 10)).await.unwrap().await.unwrap().outcome, AckOutcome::Stored);
    assert_eq!(first.close().await, 0);
    // The second client's connection and the shared socket are still up: its batch is stored
    // on the same connection, without reconnecting.
    let ack = second.send(&batch(1, 10)).await.unwrap();
    let report = tokio::time::timeout(Duration::from_secs(20), ack)
        .await
        .expect("the second client was cut off with the first")
        .unwrap();
    assert_eq!(report.outcome, AckOutcome::Stored);
    assert_eq!(second.stats().connections, 1);
    let batch_one: Vec<_> =
        expected_rows("buoy-s2", 2, 10).into_iter().filter(|r| r.2 >= BASE_TS + 10 * SECOND_NS).collect();
    assert_eq!(batch_one.len(), 10);
    assert_eq!(simple(&server.readings("buoy-s2")), batch_one);
    drop(second);
    // A third client can still use the endpoint after another was dropped.
    let third = Client::connect_on(endpoint, client_config(&server, &first_token)).await.unwrap();
    third.wait_connected().await.unwrap();
    assert_eq!(third.close().await, 0);
}
