//! Criterion benchmark of the whole ingest path over loopback QUIC: buoy SDK clients → quinn
//! server → durable engine (strict fsync, tempdir) → ACK, in one process on this machine.
//!
//! - `wire_loopback/buoys/{1,100,1000}`: that many connections (one `Client` each, own UDP
//!   socket); one iteration sends `max(64, buoys)` batches of 1,000 marine readings spread evenly
//!   over the buoys and waits for every ACK. Throughput in readings (acked durable readings/s).
//!
//! Setup (engine, server, handshakes, batch generation) is outside the timed loop. Batches are
//! generated once per buoy and resent under new sequence numbers, so the engine stores the same
//! keys again (last write wins); the encode of each batch is inside the loop, as on a buoy.
//! Client and server share the process and its 2 cores here; the CPU split between them is
//! measured with `bluewave serve` + `bluewave buoy simulate` (BENCHMARKS.md, *Wire loopback*).
//! Issue 2 target: ≥ 3 M readings/s sustained.
//!
//! Run: `cargo bench -p bluewave-benches --bench wire_loopback` (release profile).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bluewave_engine::workload::{Workload, WorkloadConfig};
use bluewave_engine::{BuoyInfo, Engine, EngineConfig, ReadingBatch};
use bluewave_wire::{
    AckOutcome, Client, ClientConfig, PresharedTokens, ServerConfig, ServerHandle, ServerIdentity, Trust,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Readings per batch (the batch size).
const BATCH_READINGS: usize = 1_000;
/// Fewest batches per timed iteration.
const BATCHES_PER_ITERATION_MIN: usize = 64;
/// Fleet sizes benchmarked.
const FLEETS: [usize; 3] = [1, 100, 1_000];

/// A running server over a durable engine, with connected clients.
struct Rig {
    _dir: tempfile::TempDir,
    engine: Engine,
    server: ServerHandle,
    clients: Vec<Arc<Client>>,
    batches: Vec<ReadingBatch>,
}

fn fail<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

async fn rig(buoys: usize) -> Result<Rig, String> {
    let dir = tempfile::tempdir().map_err(fail("tempdir"))?;
    let engine = Engine::open(EngineConfig::new(dir.path().join("data"))).map_err(fail("engine"))?;
    let workload =
        Workload::new(WorkloadConfig { buoys, ..WorkloadConfig::default() }).map_err(fail("workload"))?;
    let tokens = Arc::new(PresharedTokens::new());
    for (i, id) in workload.buoy_ids().iter().enumerate() {
        engine.register_buoy(BuoyInfo::new(id)).map_err(fail("register"))?;
        tokens.insert(id.clone(), &format!("bench-token-{i:06}-0123456789abcdef"));
    }
    let identity = ServerIdentity::generate().map_err(fail("identity"))?;
    let pin = identity.pin_sha256_bytes();
    let config = ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        connections_max: FLEETS[2] + 10,
        ..ServerConfig::default()
    };
    let server =
        bluewave_wire::start(config, &identity, engine.clone(), tokens).await.map_err(fail("server"))?;
    let addr = server.local_addr();
    let mut clients = Vec::with_capacity(buoys);
    let mut batches = Vec::with_capacity(buoys);
    for i in 0..buoys {
        let token = format!("bench-token-{i:06}-0123456789abcdef");
        let config = ClientConfig::new(
            addr,
            "localhost",
            Trust::Pinned(vec![pin]),
            token,
            workload.metric_names().to_vec(),
        );
        let client = Client::connect(config).await.map_err(fail("client"))?;
        client.wait_connected().await.map_err(fail("connect"))?;
        clients.push(Arc::new(client));
        batches.push(workload.batch_of_readings(i, 0, BATCH_READINGS).map_err(fail("batch"))?);
    }
    Ok(Rig { _dir: dir, engine, server, clients, batches })
}

/// Sends `per_buoy` batches from every client at once and waits for every ACK.
async fn round(rig: &Rig, per_buoy: usize) -> Result<(), String> {
    let mut tasks = Vec::with_capacity(rig.clients.len());
    for (client, batch) in rig.clients.iter().zip(&rig.batches) {
        let client = client.clone();
        let batch = batch.clone();
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::with_capacity(per_buoy);
            for _ in 0..per_buoy {
                acks.push(client.send(&batch).await.map_err(fail("send"))?);
            }
            for ack in acks {
                let report = ack.await.map_err(fail("ack"))?;
                if report.outcome != AckOutcome::Stored {
                    return Err(format!("unexpected outcome {:?}", report.outcome));
                }
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(fail("task"))??;
    }
    Ok(())
}

fn loopback(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let mut group = c.benchmark_group("wire_loopback");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.warm_up_time(Duration::from_secs(2));
    for buoys in FLEETS {
        let rig = runtime.block_on(rig(buoys)).unwrap_or_else(|e| panic!("setup of {buoys} buoys: {e}"));
        let per_buoy = BATCHES_PER_ITERATION_MIN.div_ceil(buoys);
        let readings = (per_buoy * buoys * BATCH_READINGS) as u64;
        group.throughput(Throughput::Elements(readings));
        group.bench_with_input(BenchmarkId::new("buoys", buoys), &buoys, |b, _| {
            b.iter_custom(|iterations| {
                runtime.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iterations {
                        round(&rig, per_buoy).await.unwrap_or_else(|e| panic!("{e}"));
                    }
                    started.elapsed()
                })
            });
        });
        runtime.block_on(async {
            for client in rig.clients {
                if let Some(client) = Arc::into_inner(client) {
                    client.close().await;
                }
            }
            rig.server.shutdown().await;
        });
        rig.engine.shutdown().unwrap_or_else(|e| panic!("engine shutdown: {e}"));
    }
    group.finish();
}

criterion_group!(benches, loopback);
criterion_main!(benches);
