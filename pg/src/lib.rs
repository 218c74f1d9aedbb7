//! The Postgres wire protocol front of BlueWave: `psql`, psycopg, DBeaver, Grafana's
//! PostgreSQL data source and any libpq or pure-protocol client run read-only SQL through the
//! same [`QueryService`](bluewave_query::QueryService), access policy, quota and limits as
//! `POST /api/query`.
//!
//! The protocol codec is the `pgwire` crate; this crate supplies what BlueWave decides:
//! - **TLS only.** Every session must start with `SSLRequest` (`sslmode=require`); a plaintext
//!   startup is refused with SQLSTATE `28000` before any password is asked for, so a password
//!   never crosses a plaintext connection (loopback included).
//! - **Authentication:** `AuthenticationCleartextPassword` inside TLS. The password is the
//!   account's password (through `AuthService::login`: its rate limits, lockout and audit) or an
//!   API access token (JWT) of the account named as the user. SCRAM-SHA-256 is not offered:
//!   accounts keep argon2id hashes, from which no SCRAM verifier can be derived.
//! - **Queries:** simple and extended protocol (`$1` placeholders bound as typed values), text
//!   and binary results (`timestamptz`, `float8`, `text`, `int2`, `int4`, `int8`, `bool`).
//! - **Limits:** [`PgConfig::connections_max`] (`53300` past it), an idle timeout, an
//!   authentication deadline; `CancelRequest` cancels the running query (`57014`).
//!
//! Layout:
//! - `server`: listener, connection limit, TLS acceptor, idle and authentication deadlines.
//! - `session`: one connection's state; startup and password authentication.
//! - `query`: the simple and extended query handlers over the query service.
//! - `types`: Arrow ⇄ Postgres types: result columns, row encoding, parameter decoding.
//! - `error`: the crate's error type and the SQLSTATE of every refusal.

mod error;
mod query;
mod server;
mod session;
mod types;

pub use error::{Error, Result};
pub use server::{
    AUTH_TIMEOUT_MS, CONNECTIONS_MAX_DEFAULT, IDLE_TIMEOUT_MS_DEFAULT, LISTEN_DEFAULT, PgConfig, PgServer,
    REFUSALS_IN_FLIGHT_MAX,
};
