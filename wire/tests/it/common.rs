//! Test harness shared by the server and client tests: a real `Engine` in a tempdir and the real
//! QUIC server on `127.0.0.1:0` with a freshly generated self-signed certificate; device tokens
//! added and revoked through `PresharedTokens`; stop and restart on the same data dir and port.
//! Also a raw quinn client (`RawClient`) that sends exact bytes, for tests of the server.

#![allow(dead_code)] // shared by the server and client tests; each uses a part

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bluewave_engine::{
    BuoyId, BuoyInfo, Engine, EngineConfig, FsStorage, MetricName, ReadFilter, Row, Storage,
};
use bluewave_wire::{
    ALPN, Accepted, Ack, FrameType, HEADER_BYTES, Hello, MetricDictionary, PresharedTokens, ReadFrameError,
    Refused, ServerConfig, ServerHandle, ServerIdentity, ShutdownReport, read_frame,
};
use quinn::VarInt;
use rustls_pki_types::CertificateDer;

/// Short deadlines so timeout tests are fast; every other limit at its default.
pub fn test_config() -> ServerConfig {
    ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        handshake_timeout_ms: 2_000,
        hello_deadline_ms: 1_000,
        stream_deadline_ms: 1_000,
        idle_timeout_ms: 10_000,
        drain_deadline_ms: 2_000,
        ..ServerConfig::default()
    }
}

/// A deterministic device token for `buoy` (≥ 16 visible ASCII bytes).
pub fn token_for(buoy: &str) -> String {
    format!("test-token-{buoy}-0123456789abcdef")
}

/// A running server over a real engine in a tempdir.
pub struct TestServer {
    /// Where the engine's data dir lives; removed on drop.
    dir: tempfile::TempDir,
    /// The server's bound address (stable across `restart`).
    pub addr: SocketAddr,
    /// The server's self-signed end-entity certificate.
    pub cert_der: CertificateDer<'static>,
    /// SHA-256 of `cert_der`, lowercase hex (the pin).
    pub pin_sha256: String,
    /// The authenticator the server uses; survives `restart`.
    pub tokens: Arc<PresharedTokens>,
    identity: ServerIdentity,
    config: ServerConfig,
    engine: Option<Engine>,
    handle: Option<ServerHandle>,
    engine_tweak: EngineTweak,
    storage: Arc<dyn Storage>,
}

/// Changes applied to the engine's config at every (re)start.
type EngineTweak = Arc<dyn Fn(&mut EngineConfig) + Send + Sync>;

impl TestServer {
    /// Starts with [`test_config`].
    pub async fn start() -> Self {
        Self::start_with(test_config()).await
    }

    /// Starts with `config` (its `listen` should be `127.0.0.1:0`).
    pub async fn start_with(config: ServerConfig) -> Self {
        Self::start_with_engine(config, |_| {}).await
    }

    /// Starts with `config` and an engine config changed by `tweak` (also on restart).
    pub async fn start_with_engine(
        config: ServerConfig,
        tweak: impl Fn(&mut EngineConfig) + Send + Sync + 'static,
    ) -> Self {
        Self::start_with_storage(config, tweak, Arc::new(FsStorage)).await
    }

    /// Starts with `config`, a tweaked engine config and the engine on `storage` (a
    /// fault-injecting file system for tests of engine faults).
    pub async fn start_with_storage(
        config: ServerConfig,
        tweak: impl Fn(&mut EngineConfig) + Send + Sync + 'static,
        storage: Arc<dyn Storage>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let identity = ServerIdentity::generate().unwrap();
        let cert_der = identity.end_entity().unwrap().clone();
        let pin_sha256 = identity.pin_sha256();
        let mut server = Self {
            dir,
            addr: config.listen,
            cert_der,
            pin_sha256,
            tokens: Arc::new(PresharedTokens::new()),
            identity,
            config,
            engine: None,
            handle: None,
            engine_tweak: Arc::new(tweak),
            storage,
        };
        server.launch().await;
        server
    }

    async fn launch(&mut self) {
        let mut engine_config = EngineConfig::new(self.data_dir());
        (self.engine_tweak)(&mut engine_config);
        let engine = Engine::open_with_storage(engine_config, self.storage.clone()).unwrap();
        let mut config = self.config.clone();
        config.listen = self.addr;
        // A restart rebinds the same port; the previous socket may take a moment to close.
        let mut attempts = 0;
        let handle = loop {
            match bluewave_wire::start(config.clone(), &self.identity, engine.clone(), self.tokens.clone())
                .await
            {
                Ok(handle) => break handle,
                Err(e) if attempts < 50 => {
                    attempts += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("server start: {e}"),
            }
        };
        self.addr = handle.local_addr();
        self.engine = Some(engine);
        self.handle = Some(handle);
    }

    /// The engine's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The tempdir holding the data dir (for extra files, e.g. a tokens file).
    pub fn temp_path(&self) -> &Path {
        self.dir.path()
    }

    /// The running engine.
    pub fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("server is stopped")
    }

    /// The running server's handle.
    pub fn handle(&self) -> &ServerHandle {
        self.handle.as_ref().expect("server is stopped")
    }

    /// Registers `buoy` in the engine and gives it the token [`token_for`]; returns the token.
    pub fn add_device(&self, buoy: &str) -> String {
        self.register_buoy(buoy);
        let token = token_for(buoy);
        self.add_token(buoy, &token);
        token
    }

    /// Registers `buoy` in the engine only.
    pub fn register_buoy(&self, buoy: &str) {
        self.engine().register_buoy(BuoyInfo::new(&BuoyId::new(buoy).unwrap())).unwrap();
    }

    /// Gives `buoy` the token `token` (without registering it in the engine).
    pub fn add_token(&self, buoy: &str, token: &str) {
        self.tokens.insert(BuoyId::new(buoy).unwrap(), token);
    }

    /// Revokes `buoy`'s tokens and closes its open connections (`DEVICE_REVOKED`); returns the
    /// number of connections closed.
    pub fn revoke(&self, buoy: &str) -> usize {
        let id = BuoyId::new(buoy).unwrap();
        self.tokens.revoke(&id);
        self.handle().disconnect_buoy(&id)
    }

    /// Every reading of `buoy` visible in the engine (buffer and files), in key order.
    pub fn readings(&self, buoy: &str) -> Vec<Row> {
        let engine = self.engine();
        let filter = ReadFilter { buoys: Some(vec![buoy.to_owned()]), ..ReadFilter::default() };
        engine.snapshot().read(engine.storage().as_ref(), &filter).unwrap()
    }

    /// Graceful stop: server shutdown, then engine flush and shutdown (as the binary does).
    pub async fn stop(&mut self) -> ShutdownReport {
        let handle = self.handle.take().expect("server is stopped");
        let report = handle.shutdown().await;
        drop(handle);
        if let Some(engine) = self.engine.take() {
            tokio::task::spawn_blocking(move || {
                engine.flush().unwrap();
                engine.shutdown().unwrap();
            })
            .await
            .unwrap();
        }
        report
    }

    /// Stops (if running) and starts again on the same data dir, port, identity and tokens.
    pub async fn restart(&mut self) {
        if self.handle.is_some() {
            self.stop().await;
        }
        self.launch().await;
    }

    /// A raw client that trusts this server's certificate.
    pub fn raw_client(&self) -> RawClient {
        RawClient::new(self.addr, &self.cert_der)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            let _ = engine.shutdown();
        }
    }
}

/// Metric names as a HELLO dictionary.
pub fn dictionary(names: &[&str]) -> MetricDictionary {
    MetricDictionary::new(names.iter().map(|n| MetricName::new(n).unwrap()).collect()).unwrap()
}

/// The encoded HELLO frame for `token` and `names`.
pub fn hello_frame(token: &str, names: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    Hello { token: token.to_owned(), dictionary: dictionary(names) }.encode(&mut out).unwrap();
    out
}

/// A quinn client endpoint speaking `bluewave/1` that trusts one certificate.
pub struct RawClient {
    endpoint: quinn::Endpoint,
    server: SocketAddr,
}

/// The server's answer to a HELLO.
#[derive(Debug)]
pub enum HelloAnswer {
    Accepted(Accepted),
    Refused(Refused),
}

/// What happened to one stream: an answer frame, a reset, or the connection closed.
#[derive(Debug, PartialEq)]
pub enum StreamEnd {
    /// A whole ACK.
    Ack(Ack),
    /// The server reset the stream with this code.
    Reset(u64),
    /// The connection closed with this application code (None: closed otherwise).
    Closed(Option<u64>),
}

impl RawClient {
    pub fn new(server: SocketAddr, cert: &CertificateDer<'static>) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.max_idle_timeout(Some(Duration::from_secs(10).try_into().unwrap()));
        config.transport_config(Arc::new(transport));
        let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        endpoint.set_default_client_config(config);
        Self { endpoint, server }
    }

    /// A QUIC connection (handshake done, nothing sent).
    pub async fn connect(&self) -> quinn::Connection {
        self.try_connect().await.unwrap()
    }

    /// A QUIC connection attempt, with its error if the server refused it.
    pub async fn try_connect(&self) -> Result<quinn::Connection, quinn::ConnectionError> {
        self.endpoint.connect(self.server, "localhost").unwrap().await
    }

    /// Connects and sends HELLO on stream 0; returns the connection and the answer.
    pub async fn hello(&self, token: &str, names: &[&str]) -> (quinn::Connection, HelloAnswer) {
        let connection = self.connect().await;
        let answer = send_hello(&connection, &hello_frame(token, names)).await;
        (connection, answer)
    }

    /// Connects and completes HELLO; panics unless ACCEPTED.
    pub async fn session(&self, token: &str, names: &[&str]) -> quinn::Connection {
        match self.hello(token, names).await {
            (connection, HelloAnswer::Accepted(_)) => connection,
            (_, other) => panic!("HELLO not accepted: {other:?}"),
        }
    }
}

/// Sends `frame` (a HELLO, or anything) on a new stream and reads ACCEPTED or REFUSED.
pub async fn send_hello(connection: &quinn::Connection, frame: &[u8]) -> HelloAnswer {
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(frame).await.unwrap();
    send.finish().unwrap();
    let mut header = [0u8; HEADER_BYTES];
    recv.read_exact(&mut header).await.unwrap();
    let header_decoded = bluewave_wire::FrameHeader::decode(&header).unwrap();
    let mut rest = vec![0u8; header_decoded.payload_len as usize];
    recv.read_exact(&mut rest).await.unwrap();
    let mut whole = header.to_vec();
    whole.extend_from_slice(&rest);
    match header_decoded.frame_type {
        FrameType::Accepted => HelloAnswer::Accepted(Accepted::decode(&whole).unwrap()),
        FrameType::Refused => HelloAnswer::Refused(Refused::decode(&whole).unwrap()),
        other => panic!("unexpected answer {other:?}"),
    }
}

/// Opens a stream, writes `bytes`, finishes, and reads how the stream ends.
pub async fn send_raw(connection: &quinn::Connection, bytes: &[u8]) -> StreamEnd {
    let (mut send, recv) = match connection.open_bi().await {
        Ok(streams) => streams,
        Err(e) => return StreamEnd::Closed(close_code(&e)),
    };
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    read_answer(recv).await
}

/// Reads an ACK (or a reset, or the close) from a batch stream's receive side.
pub async fn read_answer(mut recv: quinn::RecvStream) -> StreamEnd {
    match read_frame(&mut recv, FrameType::Ack, HEADER_BYTES + bluewave_wire::ACK_PAYLOAD_BYTES).await {
        Ok(frame) => StreamEnd::Ack(Ack::decode(&frame).unwrap()),
        Err(ReadFrameError::Reset(code)) => StreamEnd::Reset(code),
        Err(ReadFrameError::ConnectionLost(e)) => StreamEnd::Closed(close_code(&e)),
        Err(e) => panic!("unexpected stream end: {e}"),
    }
}

/// The application close code of a connection error, if it was an application close.
pub fn close_code(e: &quinn::ConnectionError) -> Option<u64> {
    match e {
        quinn::ConnectionError::ApplicationClosed(close) => Some(close.error_code.into_inner()),
        _ => None,
    }
}

/// Waits (bounded) for the connection to close and returns its application close code.
pub async fn closed_with(connection: &quinn::Connection) -> Option<u64> {
    let e = tokio::time::timeout(Duration::from_secs(5), connection.closed())
        .await
        .expect("connection not closed");
    close_code(&e)
}

/// A client's own stream reset code helper.
pub fn code(n: u32) -> VarInt {
    VarInt::from_u32(n)
}
