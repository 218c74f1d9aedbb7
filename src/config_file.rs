//! `bluewave serve --config FILE`: a TOML file for every limit and setting that has no flag.
//!
//! Flags name what an operator changes per run (addresses, certificate, durability, first
//! admin); the file holds the rest, by component: `[engine]`, `[quic]`, `[https]`, `[query]`,
//! `[auth]`, `[line_protocol]`. Every key is optional (absent = the documented default) and an unknown key or
//! section is an error that names it, so a typo never silently falls back to a default. Each
//! component still validates its own settings when it starts. Example:
//!
//! ```toml
//! [engine]
//! buffer_bytes_max = 536870912
//! flush_interval_ms = 30000
//!
//! [https]
//! body_bytes_max = 1048576
//!
//! [query]
//! queries_max = 8
//! timeout_ms = 30000
//!
//! [query.plan_timeout_ms]   # per subscription plan id
//! "3f2a…" = 300000
//!
//! [auth]
//! access_ttl_s = 600
//!
//! [line_protocol]
//! buoy_from = "measurement"       # or "tag" (default): which part of a line names the buoy
//! idempotency_key_ttl_s = 86400
//! [mail]                    # default: .eml files in <data-dir>/outbox
//! transport = "smtp"
//! from = "BlueWave <noreply@example.org>"
//! link_base_url = "https://bluewave.example.org"
//! smtp_host = "smtp.example.org"
//! smtp_security = "starttls"   # or "tls"
//! smtp_username = "bluewave"
//! smtp_password_env = "BLUEWAVE_SMTP_PASSWORD"
//! ```
//!
//! Where the file is: `--config FILE`, else `<data-dir>/bluewave.toml` when it exists
//! ([`ConfigFile::for_data_dir`]). `serve` and the offline commands (`users ...`, `keys rotate`)
//! find it the same way, so they run with the same `[auth]` settings.

use std::path::Path;

use bluewave_engine::{EngineConfig, Retention, parse_retention};
use bluewave_query::QueryConfig;
use bluewave_web::{AuthConfig, BuoySource, HttpConfig, LineProtocolConfig};
use bluewave_wire::ServerConfig;
use serde::Deserialize;

/// The config file `serve` and the offline commands read when no `--config` is given, in the
/// data dir.
pub const DEFAULT_CONFIG_FILE_NAME: &str = "bluewave.toml";

/// Largest config file read (it is a few hundred bytes in practice).
pub const CONFIG_FILE_BYTES_MAX: u64 = 64 * 1024;

/// Why the config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is above [`CONFIG_FILE_BYTES_MAX`].
    #[error("config file {path} is {bytes} bytes, above the limit of {CONFIG_FILE_BYTES_MAX}")]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        bytes: u64,
    },
    /// A `[mail]` setting that cannot work (an unknown transport, SMTP without a host, a
    /// password variable that is not set).
    #[error("config file [mail]: {0}")]
    Mail(String),
    /// Not TOML, or a key that does not exist, or a value of the wrong type.
    #[error("config file {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// The parser's message (names the key and line).
        message: String,
    },
}

macro_rules! section {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident: $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: Option<$ty>,)*
        }
    };
}

/// Copies every key that is present onto the component's config.
macro_rules! apply {
    ($section:expr, $target:expr, [$($field:ident),* $(,)?]) => {
        $(if let Some(value) = $section.$field.clone() {
            $target.$field = value;
        })*
    };
}

section!(
    /// `[engine]`: see `EngineConfig` (engine/src/config.rs) for each key's meaning and default.
    EngineSection {
        lanes: usize,
        queue_depth: usize,
        queue_bytes_max: usize,
        group_bytes_max: usize,
        wal_segment_bytes: u64,
        flush_buffer_bytes: usize,
        buffer_bytes_max: usize,
        flush_interval_ms: u64,
        flush_threads: usize,
        flush_nice: i32,
        compaction_files_min: usize,
        compaction_rows_max: usize,
        compaction_background: bool,
        compaction_nice: i32,
        compaction_debt_slowdown_generations: usize,
        compaction_debt_busy_generations: usize,
        memory_bytes_max: usize,
        rollups: bool,
        retention: RetentionSection,
    }
);

/// `[engine.retention]`: how long readings are kept, `default = "90d"` for every metric and
/// per metric under `[engine.retention.metrics]` (`ph = "30d"`, `battery_v = "forever"`).
/// Durations are a whole number and a unit `s`, `m`, `h`, `d` or `w`, or `"forever"`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// Retention of every metric without its own (absent: keep forever).
    pub default: Option<String>,
    /// Per metric name.
    #[serde(default)]
    pub metrics: std::collections::BTreeMap<String, String>,
}

impl RetentionSection {
    /// The engine's [`Retention`], or a message naming the key whose value is refused.
    pub fn policy(&self) -> Result<Retention, String> {
        let mut policy = Retention::default();
        if let Some(text) = &self.default {
            policy.default = parse_retention(text).map_err(|e| format!("engine.retention.default: {e}"))?;
        }
        for (metric, text) in &self.metrics {
            let d = parse_retention(text).map_err(|e| format!("engine.retention.metrics.{metric}: {e}"))?;
            policy.metrics.insert(metric.clone(), d);
        }
        policy.validate().map_err(|e| format!("engine.retention: {e}"))?;
        Ok(policy)
    }
}

section!(
    /// `[quic]`: see `ServerConfig` (wire/src/server.rs and wire/PROTOCOL.md).
    QuicSection {
        handshake_timeout_ms: u64,
        hello_deadline_ms: u64,
        stream_deadline_ms: u64,
        idle_timeout_ms: u64,
        incoming_max: usize,
        retry_handshakes_threshold: usize,
        streams_per_connection_max: u32,
        stream_receive_window_bytes: u32,
        connection_receive_window_bytes: u32,
        frame_bytes_max: u32,
        batch_readings_max: u32,
        violations_max: u32,
        busy_retry_after_ms: u32,
        busy_wait_ms: u64,
        busy_wait_bytes_max: usize,
        shutdown_retry_after_ms: u32,
        drain_deadline_ms: u64,
        udp_buffer_bytes: usize,
    }
);

section!(
    /// `[https]`: see `HttpConfig` (web/src/http/config.rs).
    HttpsSection {
        connections_max: usize,
        tls_handshake_timeout_ms: u64,
        header_read_timeout_ms: u64,
        idle_timeout_ms: u64,
        h2_keep_alive_interval_ms: u64,
        request_timeout_ms: u64,
        body_bytes_max: u64,
        headers_max: usize,
        header_bytes_max: usize,
        h2_streams_max: u32,
        metrics_token_file: std::path::PathBuf,
        metrics_loopback_open: bool,
    }
);

section!(
    /// `[query]`: see `QueryConfig` (query/README.md, limits table).
    QuerySection {
        worker_threads: usize,
        queries_max: usize,
        batch_rows: usize,
        target_partitions: usize,
        result_queue_batches: usize,
        sql_bytes_max: usize,
        read_limit_default: usize,
        read_limit_max: usize,
        timeout_ms: u64,
        plan_timeout_ms: std::collections::BTreeMap<String, u64>,
        stall_timeout_ms: u64,
        memory_max_bytes: usize,
        table_function_rows_max: u64,
        rollups: bool,
    }
);

section!(
    /// `[auth]`: see `AuthConfig` (web/src/auth/service/mod.rs); lifetimes are capped there.
    AuthSection {
        issuer: String,
        access_ttl_s: u64,
        refresh_ttl_s: u64,
        refresh_absolute_s: u64,
        device_ttl_s: u64,
        fresh_auth_s: u64,
        mfa_required_roles: std::collections::BTreeSet<bluewave_web::Role>,
        browser_idle_s: u64,
        browser_absolute_s: u64,
    }
);

section!(
    /// `[line_protocol]`: the InfluxDB write routes (web/src/api/influx.rs, idempotency.rs).
    LineProtocolSection {
        buoy_from: BuoyFrom,
        idempotency_key_ttl_s: u64,
        idempotency_keys_max: u64,
        idempotency_keys_per_writer_max: u64,
    }
);

/// `[line_protocol] buoy_from`: `"tag"` (the `buoy_id` tag, default) or `"measurement"`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuoyFrom {
    /// The `buoy_id` tag.
    Tag,
    /// The measurement.
    Measurement,
}

section!(
    /// `[mail]`: see `MailConfig` (web/src/mail/mod.rs). `transport` is `outbox` (default) or
    /// `smtp`; the SMTP password is read from the environment variable `smtp_password_env`
    /// names, never from the file.
    MailSection {
        transport: String,
        from: String,
        link_base_url: String,
        outbox_dir: std::path::PathBuf,
        smtp_host: String,
        smtp_port: u16,
        smtp_security: bluewave_web::SmtpSecurity,
        smtp_username: String,
        smtp_password_env: String,
    }
);

/// The parsed file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[engine]`.
    #[serde(default)]
    pub engine: EngineSection,
    /// `[quic]`.
    #[serde(default)]
    pub quic: QuicSection,
    /// `[https]`.
    #[serde(default)]
    pub https: HttpsSection,
    /// `[query]`.
    #[serde(default)]
    pub query: QuerySection,
    /// `[auth]`.
    #[serde(default)]
    pub auth: AuthSection,
    /// `[line_protocol]`.
    #[serde(default)]
    pub line_protocol: LineProtocolSection,
    /// `[engine.retention]` checked and parsed (by [`Self::parse`]).
    #[serde(skip)]
    pub retention: Option<Retention>,
    /// `[mail]`.
    #[serde(default)]
    pub mail: MailSection,
}

impl ConfigFile {
    /// Reads and parses `path` (bounded by [`CONFIG_FILE_BYTES_MAX`]).
    pub fn load(path: &Path) -> Result<Self, ConfigFileError> {
        let shown = path.display().to_string();
        let read = |source| ConfigFileError::Read { path: shown.clone(), source };
        let bytes = std::fs::metadata(path).map_err(read)?.len();
        if bytes > CONFIG_FILE_BYTES_MAX {
            return Err(ConfigFileError::TooLarge { path: shown, bytes });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Self::parse(&text).map_err(|message| ConfigFileError::Invalid { path: shown, message })
    }

    /// The file of `explicit` (`--config`), else `<data_dir>/bluewave.toml` if it exists, else
    /// the defaults: the one rule of `serve` and of the offline commands.
    pub fn for_data_dir(data_dir: &Path, explicit: Option<&Path>) -> Result<Self, ConfigFileError> {
        match explicit {
            Some(path) => Self::load(path),
            None => {
                let path = data_dir.join(DEFAULT_CONFIG_FILE_NAME);
                if path.exists() { Self::load(&path) } else { Ok(Self::default()) }
            }
        }
    }

    /// The auth settings of this file (defaults for the keys it lacks), mail included.
    pub fn auth_config(&self) -> Result<AuthConfig, ConfigFileError> {
        let mut auth = AuthConfig::default();
        self.apply_auth(&mut auth);
        self.apply_mail(&mut auth.mail)?;
        Ok(auth)
    }

    /// Sets the `[mail]` keys that are present.
    pub fn apply_mail(&self, c: &mut bluewave_web::MailConfig) -> Result<(), ConfigFileError> {
        use bluewave_web::{MailTransport, SmtpSecurity, SmtpSettings};
        let m = &self.mail;
        if let Some(from) = &m.from {
            c.from = from.clone();
        }
        if let Some(base) = &m.link_base_url {
            c.link_base_url = base.trim_end_matches('/').to_owned();
        }
        match m.transport.as_deref() {
            None | Some("outbox") => {
                if m.outbox_dir.is_some() {
                    c.transport = MailTransport::Outbox { dir: m.outbox_dir.clone() };
                }
            }
            Some("smtp") => {
                let host = m
                    .smtp_host
                    .clone()
                    .ok_or_else(|| ConfigFileError::Mail("smtp needs smtp_host".into()))?;
                let password = match &m.smtp_password_env {
                    Some(var) => Some(std::env::var(var).map_err(|_| {
                        ConfigFileError::Mail(format!("smtp_password_env: variable {var} is not set"))
                    })?),
                    None => None,
                };
                c.transport = MailTransport::Smtp(SmtpSettings {
                    host,
                    port: m.smtp_port,
                    security: m.smtp_security.unwrap_or(SmtpSecurity::Starttls),
                    username: m.smtp_username.clone(),
                    password,
                });
            }
            Some(other) => {
                return Err(ConfigFileError::Mail(format!("transport {other:?}: want outbox or smtp")));
            }
        }
        Ok(())
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut file: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        file.retention = file.engine.retention.as_ref().map(RetentionSection::policy).transpose()?;
        Ok(file)
    }

    /// Sets the `[engine]` keys that are present.
    pub fn apply_engine(&self, c: &mut EngineConfig) {
        apply!(
            self.engine,
            c,
            [
                lanes,
                queue_depth,
                queue_bytes_max,
                group_bytes_max,
                wal_segment_bytes,
                flush_buffer_bytes,
                buffer_bytes_max,
                flush_interval_ms,
                flush_threads,
                flush_nice,
                compaction_files_min,
                compaction_rows_max,
                compaction_background,
                compaction_nice,
                compaction_debt_slowdown_generations,
                compaction_debt_busy_generations,
                memory_bytes_max,
                rollups,
            ]
        );
        if let Some(retention) = &self.retention {
            c.retention = retention.clone();
        }
    }

    /// Sets the `[quic]` keys that are present.
    pub fn apply_quic(&self, c: &mut ServerConfig) {
        apply!(
            self.quic,
            c,
            [
                handshake_timeout_ms,
                hello_deadline_ms,
                stream_deadline_ms,
                idle_timeout_ms,
                incoming_max,
                retry_handshakes_threshold,
                streams_per_connection_max,
                stream_receive_window_bytes,
                connection_receive_window_bytes,
                frame_bytes_max,
                batch_readings_max,
                violations_max,
                busy_retry_after_ms,
                busy_wait_ms,
                busy_wait_bytes_max,
                shutdown_retry_after_ms,
                drain_deadline_ms,
                udp_buffer_bytes,
            ]
        );
    }

    /// Sets the `[https]` keys that are present.
    pub fn apply_https(&self, c: &mut HttpConfig) {
        apply!(
            self.https,
            c,
            [
                connections_max,
                tls_handshake_timeout_ms,
                header_read_timeout_ms,
                idle_timeout_ms,
                h2_keep_alive_interval_ms,
                request_timeout_ms,
                body_bytes_max,
                headers_max,
                header_bytes_max,
                h2_streams_max,
            ]
        );
    }

    /// Reads `[https] metrics_token_file` (if set) into `c`: the scrape token non-loopback
    /// clients must send to `GET /metrics`. The file holds the token alone (at least 32 visible
    /// ASCII characters) and must not be readable by other users.
    pub fn apply_metrics_token(&self, c: &mut HttpConfig) -> Result<(), ConfigFileError> {
        if let Some(open) = self.https.metrics_loopback_open {
            c.metrics_loopback_open = open;
        }
        let Some(path) = &self.https.metrics_token_file else { return Ok(()) };
        let shown = path.display().to_string();
        let invalid = |message: String| ConfigFileError::Invalid { path: shown.clone(), message };
        let metadata = std::fs::metadata(path)
            .map_err(|source| ConfigFileError::Read { path: shown.clone(), source })?;
        if metadata.len() > 1024 {
            return Err(invalid("metrics_token_file is above 1 KiB; it holds the token alone".to_owned()));
        }
        use std::os::unix::fs::PermissionsExt as _;
        if metadata.permissions().mode() & 0o077 != 0 {
            return Err(invalid(
                "metrics_token_file must not be readable by group or others (chmod 600)".to_owned(),
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigFileError::Read { path: shown.clone(), source })?;
        c.set_metrics_token(&text)
            .map_err(|_| invalid("the metrics token must be at least 32 visible ASCII characters".to_owned()))
    }

    /// Sets the `[query]` keys that are present.
    pub fn apply_query(&self, c: &mut QueryConfig) {
        apply!(
            self.query,
            c,
            [
                worker_threads,
                queries_max,
                batch_rows,
                target_partitions,
                result_queue_batches,
                sql_bytes_max,
                read_limit_default,
                read_limit_max,
                timeout_ms,
                plan_timeout_ms,
                stall_timeout_ms,
                memory_max_bytes,
                table_function_rows_max,
                rollups,
            ]
        );
    }

    /// Sets the `[auth]` keys that are present.
    pub fn apply_auth(&self, c: &mut AuthConfig) {
        apply!(
            self.auth,
            c,
            [
                issuer,
                access_ttl_s,
                refresh_ttl_s,
                refresh_absolute_s,
                device_ttl_s,
                fresh_auth_s,
                mfa_required_roles,
                browser_idle_s,
                browser_absolute_s
            ]
        );
    }
}

impl ConfigFile {
    /// Sets the `[line_protocol]` keys that are present.
    pub fn apply_line_protocol(&self, c: &mut LineProtocolConfig) {
        let section = &self.line_protocol;
        if let Some(from) = section.buoy_from {
            c.buoy_from = match from {
                BuoyFrom::Tag => BuoySource::Tag,
                BuoyFrom::Measurement => BuoySource::Measurement,
            };
        }
        if let Some(ttl_s) = section.idempotency_key_ttl_s {
            c.idempotency.ttl_s = ttl_s;
        }
        if let Some(keys_max) = section.idempotency_keys_max {
            c.idempotency.keys_max = keys_max;
        }
        if let Some(per_writer) = section.idempotency_keys_per_writer_max {
            c.idempotency.keys_per_writer_max = per_writer;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_keys_of_accounts_for_people_parse() {
        let file =
            ConfigFile::parse("[auth]\nfresh_auth_s = 300\nmfa_required_roles = [\"admin\"]\n").unwrap();
        let mut auth = AuthConfig::default();
        file.apply_auth(&mut auth);
        assert_eq!(auth.fresh_auth_s, 300);
        assert_eq!(auth.mfa_required_roles, [bluewave_web::Role::Admin].into());
        let off = ConfigFile::parse("[auth]\nmfa_required_roles = []\n").unwrap();
        let mut auth = AuthConfig::default();
        off.apply_auth(&mut auth);
        assert!(auth.mfa_required_roles.is_empty());
        assert!(ConfigFile::parse("[auth]\nmfa_required_roles = [\"root\"]\n").is_err());
    }

    #[test]
    fn mail_defaults_to_the_outbox_and_smtp_needs_a_host_and_takes_its_password_from_the_environment() {
        use bluewave_web::{MailTransport, SmtpSecurity};
        let auth = ConfigFile::parse("").unwrap().auth_config().unwrap();
        assert_eq!(auth.mail.transport, MailTransport::Outbox { dir: None });
        let smtp = ConfigFile::parse(
            "[mail]\ntransport = \"smtp\"\nsmtp_host = \"mail.example.org\"\nsmtp_security = \"tls\"\n\
             link_base_url = \"https://bw.example.org/\"\n",
        )
        .unwrap()
        .auth_config()
        .unwrap();
        let MailTransport::Smtp(settings) = &smtp.mail.transport else { panic!("{:?}", smtp.mail) };
        assert_eq!(
            (settings.host.as_str(), settings.security, settings.port),
            ("mail.example.org", SmtpSecurity::Tls, None)
        );
        assert_eq!(smtp.mail.link_base_url, "https://bw.example.org");
        let no_host = ConfigFile::parse("[mail]\ntransport = \"smtp\"\n").unwrap().auth_config().unwrap_err();
        assert!(no_host.to_string().contains("smtp_host"), "{no_host}");
        let unset = ConfigFile::parse(
            "[mail]\ntransport = \"smtp\"\nsmtp_host = \"h\"\nsmtp_password_env = \"BLUEWAVE_TEST_UNSET_VARIABLE\"\n",
        )
        .unwrap()
        .auth_config()
        .unwrap_err();
        assert!(unset.to_string().contains("BLUEWAVE_TEST_UNSET_VARIABLE"), "{unset}");
        assert!(ConfigFile::parse("[mail]\ntransport = \"pigeon\"\n").unwrap().auth_config().is_err());
    }

    #[test]
    fn the_data_dirs_config_file_is_read_when_no_flag_names_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            ConfigFile::for_data_dir(dir.path(), None).unwrap().auth_config().unwrap().access_ttl_s,
            AuthConfig::default().access_ttl_s
        );
        std::fs::write(dir.path().join(DEFAULT_CONFIG_FILE_NAME), "[auth]\naccess_ttl_s = 300\n").unwrap();
        assert_eq!(
            ConfigFile::for_data_dir(dir.path(), None).unwrap().auth_config().unwrap().access_ttl_s,
            300
        );
        let other = dir.path().join("other.toml");
        std::fs::write(&other, "[auth]\naccess_ttl_s = 120\n").unwrap();
        assert_eq!(
            ConfigFile::for_data_dir(dir.path(), Some(&other)).unwrap().auth_config().unwrap().access_ttl_s,
            120
        );
    }

    #[test]
    fn keys_that_are_present_override_defaults_and_the_rest_stay() {
        let file = ConfigFile::parse(
            "[engine]\nflush_interval_ms = 30000\n[https]\nbody_bytes_max = 1024\n\
             [query]\nqueries_max = 3\n[auth]\naccess_ttl_s = 600\n[quic]\nhello_deadline_ms = 1500\n",
        )
        .unwrap();
        let mut engine = EngineConfig::new("d");
        file.apply_engine(&mut engine);
        assert_eq!(engine.flush_interval_ms, 30_000);
        assert_eq!(engine.buffer_bytes_max, EngineConfig::new("d").buffer_bytes_max);
        let mut http = HttpConfig::default();
        file.apply_https(&mut http);
        assert_eq!(http.body_bytes_max, 1024);
        assert_eq!(http.headers_max, HttpConfig::default().headers_max);
        let mut query = QueryConfig::default();
        file.apply_query(&mut query);
        assert_eq!(query.queries_max, 3);
        assert_eq!(query.timeout_ms, QueryConfig::default().timeout_ms);
        let mut auth = AuthConfig::default();
        file.apply_auth(&mut auth);
        assert_eq!(auth.access_ttl_s, 600);
        assert_eq!(auth.refresh_ttl_s, AuthConfig::default().refresh_ttl_s);
        let mut quic = ServerConfig::default();
        file.apply_quic(&mut quic);
        assert_eq!(quic.hello_deadline_ms, 1_500);
    }

    #[test]
    fn retention_is_read_globally_and_per_metric_and_bad_values_are_refused_by_key() {
        let file = ConfigFile::parse(
            "[engine.retention]\ndefault = \"90d\"\n[engine.retention.metrics]\nph = \"30d\"\n\
             battery_v = \"forever\"\n",
        )
        .unwrap();
        let mut engine = EngineConfig::new("d");
        file.apply_engine(&mut engine);
        engine.validate().unwrap();
        let day = std::time::Duration::from_secs(86_400);
        assert_eq!(engine.retention.default, Some(day * 90));
        assert_eq!(engine.retention.of("ph"), Some(day * 30));
        assert_eq!(engine.retention.of("battery_v"), None);
        assert_eq!(engine.retention.to_string(), "default 90d, battery_v forever, ph 30d");
        assert_eq!(EngineConfig::new("d").retention, Retention::default());
        for (text, key) in [
            ("[engine.retention]\ndefault = \"90\"\n", "engine.retention.default: \"90\": no unit"),
            ("[engine.retention]\ndefault = \"3 months\"\n", "engine.retention.default"),
            (
                "[engine.retention.metrics]\nph = \"0d\"\n",
                "engine.retention.metrics.ph: \"0d\": must be between",
            ),
            ("[engine.retention.metrics]\n\"Bad Name\" = \"1d\"\n", "Bad Name"),
            ("[engine.retention]\nkeep = \"1d\"\n", "unknown field `keep`"),
        ] {
            let e = ConfigFile::parse(text).err().unwrap_or_else(|| panic!("{text:?} accepted"));
            assert!(e.contains(key), "{text:?}: {e}");
        }
    }

    #[test]
    fn query_budgets_and_plan_overrides_are_read() {
        let file = ConfigFile::parse(
            "[query]\ntimeout_ms = 2000\nstall_timeout_ms = 1000\nmemory_max_bytes = 4194304\n\
             table_function_rows_max = 500\n[query.plan_timeout_ms]\nabc = 9000\n",
        )
        .unwrap();
        let mut query = QueryConfig::default();
        file.apply_query(&mut query);
        query.validate().unwrap();
        assert_eq!(query.timeout_for(None), std::time::Duration::from_millis(2_000));
        assert_eq!(query.timeout_for(Some("abc")), std::time::Duration::from_millis(9_000));
        assert_eq!(query.timeout_for(Some("other")), std::time::Duration::from_millis(2_000));
        assert_eq!(query.timeout_max(), std::time::Duration::from_millis(9_000));
        assert_eq!(
            (query.stall_timeout_ms, query.memory_max_bytes, query.table_function_rows_max),
            (1_000, 4 << 20, 500)
        );
    }

    #[test]
    fn typos_and_wrong_types_are_errors_that_name_the_key() {
        let typo = ConfigFile::parse("[engine]\nflush_intervall_ms = 5\n").unwrap_err();
        assert!(typo.contains("flush_intervall_ms"), "{typo}");
        let section = ConfigFile::parse("[engin]\nlanes = 2\n").unwrap_err();
        assert!(section.contains("engin"), "{section}");
        let wrong = ConfigFile::parse("[query]\nqueries_max = \"many\"\n").unwrap_err();
        assert!(wrong.contains("queries_max") || wrong.contains("invalid type"), "{wrong}");
        let negative = ConfigFile::parse("[https]\nbody_bytes_max = -1\n").unwrap_err();
        assert!(negative.contains("body_bytes_max") || negative.contains("invalid value"), "{negative}");
        assert!(ConfigFile::parse("").is_ok());
    }

    #[test]
    fn the_metrics_token_file_must_be_private_and_long() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.token");
        let file =
            ConfigFile::parse(&format!("[https]\nmetrics_token_file = {:?}\n", path.display().to_string()))
                .unwrap();
        let mut http = HttpConfig::default();
        // Missing file: a read error naming it.
        assert!(matches!(file.apply_metrics_token(&mut http), Err(ConfigFileError::Read { .. })));
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = file.apply_metrics_token(&mut http).unwrap_err().to_string();
        assert!(error.contains("chmod 600"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        file.apply_metrics_token(&mut http).unwrap();
        assert!(http.metrics_token_sha256.is_some());
        std::fs::write(&path, "too-short").unwrap();
        let error = file.apply_metrics_token(&mut http).unwrap_err().to_string();
        assert!(error.contains("at least 32"), "{error}");
        // No key: nothing changes.
        let mut untouched = HttpConfig::default();
        ConfigFile::parse("").unwrap().apply_metrics_token(&mut untouched).unwrap();
        assert_eq!(untouched.metrics_token_sha256, None);
    }
}
