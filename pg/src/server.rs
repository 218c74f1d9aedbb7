//! The listener: one task per connection, a connection limit, the TLS acceptor, and the idle
//! and authentication deadlines of every session.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bluewave_query::QueryService;
use bluewave_web::{AuthService, TlsIdentity, password_checks_max};
use pgwire::api::{ConnectionManager, RandomPidSecretKeyGenerator};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::error::{Error, Result};
use crate::session::{Session, SessionHandlers};

/// Default address of `--pg-listen`: loopback, one above PostgreSQL's 5432.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:5433";

/// Default of [`PgConfig::connections_max`].
pub const CONNECTIONS_MAX_DEFAULT: usize = 64;

/// Default of [`PgConfig::idle_timeout_ms`]: ten minutes without a message from the client
/// and no query running.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 600_000;

/// A connection that has not authenticated this long after it was accepted is closed (TLS
/// handshake, startup and password included).
pub const AUTH_TIMEOUT_MS: u64 = 30_000;

/// Connections past [`PgConfig::connections_max`] still get their `53300` error (after TLS
/// and the startup message, as PostgreSQL does) while at most this many are being refused at
/// once; beyond that, a new connection is closed at accept.
pub const REFUSALS_IN_FLIGHT_MAX: usize = 16;

/// Settings of the Postgres front.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// TCP address to listen on.
    pub listen: SocketAddr,
    /// Open sessions at once (authenticated or not; cancel requests count while they last).
    /// A connection past it is answered `FATAL 53300 too many connections`.
    pub connections_max: usize,
    /// A session with no message from its client and no query running for this long is closed.
    pub idle_timeout_ms: u64,
}

impl Default for PgConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5433)),
            connections_max: CONNECTIONS_MAX_DEFAULT,
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
        }
    }
}

impl PgConfig {
    /// Refuses zero limits.
    pub fn validate(&self) -> Result<()> {
        if self.connections_max == 0 {
            return Err(Error::InvalidConfig("connections_max must be at least 1".into()));
        }
        if self.idle_timeout_ms == 0 {
            return Err(Error::InvalidConfig("idle_timeout_ms must be at least 1".into()));
        }
        Ok(())
    }
}

/// What every session of one server shares. Created by [`PgServer::bind`], lives as long as the
/// server and its last session.
pub(crate) struct Shared {
    /// Accounts, tokens, RBAC, plans, quotas, audit.
    pub(crate) auth: Arc<AuthService>,
    /// The query service shared with the HTTPS API.
    pub(crate) query: Arc<QueryService>,
    /// The settings, fixed at bind.
    pub(crate) config: PgConfig,
    /// Cancel handles of the authenticated sessions by (pid, secret key); each session's
    /// entry is removed when the session ends.
    pub(crate) connections: Arc<ConnectionManager>,
    /// Process ids and cancel secret keys of the sessions (ids count up from one counter).
    pub(crate) pids: Arc<RandomPidSecretKeyGenerator>,
    /// Password checks (argon2id) running at once: as many as the HTTPS login allows, so a
    /// flood of Postgres logins cannot take every core.
    pub(crate) password_checks: Semaphore,
}

/// A bound Postgres listener; [`PgServer::serve`] runs it.
pub struct PgServer {
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer").field("listen", &self.listener.local_addr().ok()).finish_non_exhaustive()
    }
}

impl PgServer {
    /// Binds `config.listen` with the server's TLS identity (the one HTTPS and QUIC use).
    pub async fn bind(
        config: PgConfig,
        identity: TlsIdentity,
        auth: Arc<AuthService>,
        query: Arc<QueryService>,
    ) -> Result<Self> {
        config.validate()?;
        let tls =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(Error::Tls)?
                .with_no_client_auth()
                .with_single_cert(identity.cert_chain, identity.key)
                .map_err(Error::Tls)?;
        let listener = TcpListener::bind(config.listen).await.map_err(Error::Io)?;
        let shared = Arc::new(Shared {
            auth,
            query,
            config,
            connections: Arc::new(ConnectionManager::new()),
            pids: Arc::new(RandomPidSecretKeyGenerator::default()),
            password_checks: Semaphore::new(password_checks_max()),
        });
        Ok(Self { listener, tls: tokio_rustls::TlsAcceptor::from(Arc::new(tls)), shared })
    }

    /// The bound address (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(Error::Io)
    }

    /// Accepts connections until `shutdown` completes; then closes every open session.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let slots = Arc::new(Semaphore::new(self.shared.config.connections_max));
        let refusals = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT_MAX));
        // Dropping the sender (end of serve) ends every session task.
        let (stop_tx, stop_rx) = watch::channel(());
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    // Out of descriptors and similar: wait a little instead of spinning.
                    Err(error) => {
                        tracing::warn!(%error, "Postgres front: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let (permit, over_limit) = match Arc::clone(&slots).try_acquire_owned() {
                Ok(permit) => (permit, false),
                Err(_) => match Arc::clone(&refusals).try_acquire_owned() {
                    Ok(permit) => (permit, true),
                    Err(_) => {
                        tracing::warn!(%peer, "Postgres front: connection closed at accept (limit and refusals full)");
                        continue;
                    }
                },
            };
            let session = Arc::new(Session::new(Arc::clone(&self.shared), peer, over_limit));
            let tls = self.tls.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let handlers = SessionHandlers(Arc::clone(&session));
                tokio::select! {
                    served = pgwire::tokio::process_socket(tcp, Some(tls), handlers) => {
                        if let Err(error) = served {
                            tracing::debug!(%peer, %error, "Postgres session ended with an I/O error");
                        }
                    }
                    reason = session.deadline() => tracing::info!(%peer, reason, "Postgres session closed"),
                    _ = stop.changed() => {}
                }
            });
        }
        drop(stop_tx);
        Ok(())
    }
}
