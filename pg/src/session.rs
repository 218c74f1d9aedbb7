//! One connection: its deadlines, its caller once authenticated, and the startup handler that
//! gets it there (TLS check, connection limit, cleartext password inside TLS).

use std::fmt::Debug;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bluewave_query::AccessPolicy;
use bluewave_web::{AuthError, AuthService, Caller, Permission, Secret, query_policy};
use futures::Sink;
use pgwire::api::auth::cleartext::CleartextPasswordAuth;
use pgwire::api::auth::mechanism::AuthMechanismFactory;
use pgwire::api::auth::{
    AuthDriver, AuthOutcome, AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
    protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::{ClientInfo, NoopHandler, PgWireServerHandlers};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::time::Instant;

use crate::error::{fatal, from_auth, login_refusal, sqlstate};
use crate::query::Queries;
use crate::server::{AUTH_TIMEOUT_MS, Shared};

/// The server version reported in `ParameterStatus` (clients parse the leading number).
const SERVER_VERSION: &str = concat!("16.0 (BlueWave ", env!("CARGO_PKG_VERSION"), ")");

/// One client connection. Owned by its connection task (through the handlers); dropped when
/// the connection ends, which logs out the session a password login opened.
pub(crate) struct Session {
    pub(crate) shared: Arc<Shared>,
    peer: SocketAddr,
    /// Accepted past `connections_max`: the startup is answered `53300` and the connection ends.
    over_limit: bool,
    /// When the connection was accepted.
    accepted: Instant,
    /// Milliseconds after `accepted` of the last message handled (written by every handler).
    last_active_ms: AtomicU64,
    /// Queries of this session between admission and their first batch (or error).
    running: AtomicUsize,
    /// The authenticated account; set once by the password step.
    caller: OnceLock<Caller>,
    /// The refresh token of the API session a password login opened; logged out on drop.
    refresh: Arc<Mutex<Option<Secret>>>,
    driver: AuthDriver<DefaultServerParameterProvider, Caller>,
}

impl Session {
    pub(crate) fn new(shared: Arc<Shared>, peer: SocketAddr, over_limit: bool) -> Self {
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = SERVER_VERSION.to_owned();
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = true;
        parameters.time_zone = "UTC".to_owned();
        let driver = AuthDriver::new(parameters)
            .with_pid_secret_key_generator(Arc::clone(&shared.pids) as _)
            .with_connection_manager(Arc::clone(&shared.connections));
        Self {
            shared,
            peer,
            over_limit,
            accepted: Instant::now(),
            last_active_ms: AtomicU64::new(0),
            running: AtomicUsize::new(0),
            caller: OnceLock::new(),
            refresh: Arc::new(Mutex::new(None)),
            driver,
        }
    }

    /// Notes a message from the client (the idle clock restarts).
    pub(crate) fn touch(&self) {
        let now = u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(now, Ordering::Relaxed);
    }

    /// Marks a query running until the guard drops (the idle clock does not run meanwhile).
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        self.touch();
        self.running.fetch_add(1, Ordering::Relaxed);
        Busy(Arc::clone(self))
    }

    /// Completes when the session must be closed: not authenticated within
    /// [`AUTH_TIMEOUT_MS`], or idle for the configured timeout. Returns the reason.
    pub(crate) async fn deadline(&self) -> &'static str {
        let idle = Duration::from_millis(self.shared.config.idle_timeout_ms);
        let auth = Duration::from_millis(AUTH_TIMEOUT_MS);
        loop {
            let now = self.accepted.elapsed();
            let wake = if self.caller.get().is_none() {
                if now >= auth {
                    return "not authenticated in time";
                }
                auth - now
            } else {
                let last = Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed));
                let quiet = now.saturating_sub(last);
                if self.running.load(Ordering::Relaxed) > 0 {
                    idle
                } else if quiet >= idle {
                    return "idle timeout";
                } else {
                    idle - quiet
                }
            };
            // Re-checked at least every second while authenticating (the caller may arrive).
            tokio::time::sleep(wake.min(Duration::from_secs(1)).max(Duration::from_millis(10))).await;
        }
    }

    /// The caller's query policy after the `query:sql` check; `count` also spends one query of
    /// the daily quota (Execute and simple queries; not Parse/Describe).
    pub(crate) async fn policy(&self, count: bool) -> PgWireResult<AccessPolicy> {
        let Some(caller) = self.caller.get().cloned() else {
            return Err(fatal(sqlstate::INVALID_AUTHORIZATION, "not authenticated"));
        };
        let auth = Arc::clone(&self.shared.auth);
        let query = Arc::clone(&self.shared.query);
        let granted = tokio::task::spawn_blocking(move || {
            auth.authorize(&caller, Permission::QuerySql)?;
            let policy = query_policy(&auth, &query, &caller)?;
            if count {
                auth.record_query(&caller)?;
            }
            Ok::<_, AuthError>(policy)
        })
        .await
        .map_err(|join| crate::error::error(sqlstate::INTERNAL, format!("policy task: {join}")))?;
        granted.map_err(|e| from_auth(&e))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let refresh = self.refresh.lock().ok().and_then(|mut slot| slot.take());
        let (Some(refresh), Ok(runtime)) = (refresh, tokio::runtime::Handle::try_current()) else { return };
        let auth = Arc::clone(&self.shared.auth);
        let ip = self.peer.ip();
        runtime.spawn_blocking(move || {
            if let Err(error) = auth.logout(refresh.expose(), ip) {
                tracing::debug!(%error, "Postgres session: logout of its API session failed");
            }
        });
    }
}

/// A running query of a session (see [`Session::busy`]).
pub(crate) struct Busy(Arc<Session>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// The handlers pgwire runs one connection with.
pub(crate) struct SessionHandlers(pub(crate) Arc<Session>);

impl PgWireServerHandlers for SessionHandlers {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        Arc::new(Queries::new(Arc::clone(&self.0)))
    }

    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        Arc::new(Queries::new(Arc::clone(&self.0)))
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(Startup(Arc::clone(&self.0)))
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::new(pgwire::api::cancel::DefaultCancelHandler::new(Arc::clone(&self.0.shared.connections)))
    }

    fn error_handler(&self) -> Arc<impl pgwire::api::ErrorHandler> {
        Arc::new(NoopHandler)
    }
}

/// Startup: refuses past the connection limit and without TLS, then asks for the password.
struct Startup(Arc<Session>);

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = &self.0;
        session.touch();
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if session.over_limit {
                    return Err(fatal(
                        sqlstate::TOO_MANY_CONNECTIONS,
                        format!(
                            "too many connections: the server allows {} Postgres sessions",
                            session.shared.config.connections_max
                        ),
                    ));
                }
                if !client.is_secure() {
                    // Before any password is asked for: it would cross in cleartext.
                    return Err(fatal(
                        sqlstate::INVALID_AUTHORIZATION,
                        "TLS required: connect with sslmode=require (the password is sent inside TLS)",
                    ));
                }
                let source = Passwords {
                    auth: Arc::clone(&session.shared.auth),
                    shared: Arc::clone(&session.shared),
                    ip: session.peer.ip(),
                    refresh: Arc::clone(&session.refresh),
                };
                let mechanism = CleartextPasswordAuth::new(Arc::new(source)).create();
                session.driver.begin_authentication(client, mechanism).await?;
                Ok(())
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                match session.driver.advance_authentication(client, message).await? {
                    AuthOutcome::InProgress => Ok(()),
                    AuthOutcome::Authenticated { identity, final_message } => {
                        let Some(caller) = identity else {
                            return Err(fatal(sqlstate::INVALID_PASSWORD, "password authentication failed"));
                        };
                        tracing::info!(peer = %session.peer, user = %caller.user_id(), "Postgres session authenticated");
                        let _ = session.caller.set(caller);
                        session.driver.complete_authentication(client, final_message).await
                    }
                }
            }
            _ => Ok(()),
        }
    }
}

/// Checks the password of a startup: the account's password through `AuthService::login`, or
/// an access token (JWT) of the account named as the user.
struct Passwords {
    auth: Arc<AuthService>,
    shared: Arc<Shared>,
    ip: IpAddr,
    refresh: Arc<Mutex<Option<Secret>>>,
}

impl Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords").field("ip", &self.ip).finish_non_exhaustive()
    }
}

/// An access token: three base64url parts, the header of a JSON object (`eyJ` is `{"`).
fn looks_like_jwt(password: &str) -> bool {
    password.starts_with("eyJ") && password.split('.').count() == 3
}

fn check_password(
    auth: &AuthService,
    user: &str,
    password: &str,
    ip: IpAddr,
) -> Result<(Caller, Option<Secret>), AuthError> {
    if looks_like_jwt(password) {
        let caller = auth.verify_access_token(password)?;
        if !caller.email().eq_ignore_ascii_case(user.trim()) {
            return Err(AuthError::InvalidCredentials);
        }
        if caller.mfa_enrolment_required() {
            return Err(AuthError::MfaEnrolmentRequired);
        }
        return Ok((caller, None));
    }
    let pair = auth.login(user, &Secret::new(password), ip)?;
    let caller = auth.verify_access_token(pair.access_token.expose())?;
    if caller.mfa_enrolment_required() {
        let _ = auth.logout(pair.refresh_token.expose(), ip);
        return Err(AuthError::MfaEnrolmentRequired);
    }
    Ok((caller, Some(pair.refresh_token)))
}

#[async_trait]
impl AuthSource<Caller> for Passwords {
    async fn get_password(&self, _login: &LoginInfo) -> PgWireResult<Password> {
        // Only `verify_password` is used: no password is ever read back.
        Err(fatal(sqlstate::INVALID_PASSWORD, "password authentication failed"))
    }

    async fn verify_password(&self, login: &LoginInfo, presented: &[u8]) -> PgWireResult<Option<Caller>> {
        let user = login.user().unwrap_or_default().to_owned();
        let Ok(password) = std::str::from_utf8(presented).map(str::to_owned) else {
            return Err(fatal(sqlstate::INVALID_PASSWORD, "password authentication failed"));
        };
        let _slot = self
            .shared
            .password_checks
            .acquire()
            .await
            .map_err(|_| fatal(sqlstate::INTERNAL, "the server is stopping"))?;
        let auth = Arc::clone(&self.auth);
        let ip = self.ip;
        let checked = tokio::task::spawn_blocking(move || check_password(&auth, &user, &password, ip))
            .await
            .map_err(|join| fatal(sqlstate::INTERNAL, format!("password check task: {join}")))?;
        match checked {
            Ok((caller, refresh)) => {
                if let Ok(mut slot) = self.refresh.lock() {
                    *slot = refresh;
                }
                Ok(Some(caller))
            }
            Err(e) => Err(login_refusal(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shape_is_recognised() {
        assert!(looks_like_jwt("eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1In0.c2ln"));
        assert!(!looks_like_jwt("correct horse battery staple"));
        assert!(!looks_like_jwt("eyJ.only-two"));
    }
}
