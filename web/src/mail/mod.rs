//! Outgoing mail: one small [`Mailer`] trait and its two transports, chosen in the config file.
//!
//! - [`OutboxMailer`] (the embedded default): one RFC 5322 `.eml` file per message in
//!   `<data-dir>/outbox/` (or a configured directory). Each file is written to a temp name,
//!   fsynced, then renamed into place, so a reader never sees half a message. The files hold
//!   one-time links: the directory is `0700` and the files `0600`.
//! - [`SmtpMailer`]: SMTP through `lettre`, with STARTTLS (port 587) or implicit TLS (465),
//!   over rustls only (Mozilla roots), with a bounded timeout.
//!
//! The auth module sends verification, password-reset and email-change links through it; the
//! storefront can send order mails through [`AuthService::mailer`](crate::AuthService::mailer).
//! Messages are plain text in 7-bit ASCII where possible, so a link stays one greppable line.
//!
//! Sending is blocking (file I/O with fsync, or an SMTP dialogue): call it from a blocking pool.

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lettre::Transport as _;
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox, Message};
use lettre::transport::smtp::SmtpTransport;
use lettre::transport::smtp::authentication::Credentials;

/// Directory name of the outbox under the data dir.
pub const OUTBOX_DIR_NAME: &str = "outbox";
/// Most `.eml` files the outbox holds; a send beyond it is refused ([`MailError::OutboxFull`])
/// rather than filling the disk. Whoever reads the outbox deletes what they delivered.
pub const OUTBOX_FILES_MAX: usize = 100_000;
/// Longest subject, bytes.
pub const MAIL_SUBJECT_BYTES_MAX: usize = 256;
/// Longest text body, bytes.
pub const MAIL_BODY_BYTES_MAX: usize = 64 * 1024;
/// Longest line of a 7-bit body, bytes without the CRLF (RFC 5322 §2.1.1).
pub const SEVEN_BIT_LINE_BYTES_MAX: usize = 998;
/// Longest wait of one SMTP command (connect, each reply), ms.
pub const SMTP_TIMEOUT_MS: u64 = 10_000;
/// Default SMTP port of STARTTLS submission.
pub const SMTP_STARTTLS_PORT: u16 = 587;
/// Default SMTP port of implicit TLS submission.
pub const SMTP_TLS_PORT: u16 = 465;

/// Why a mail was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// A sender or recipient address that mail cannot carry.
    #[error("invalid mail address {address:?}: {source}")]
    Address {
        /// The address as given.
        address: String,
        /// The parser's reason.
        #[source]
        source: lettre::address::AddressError,
    },
    /// A subject or body over its limit.
    #[error("mail {what} longer than {max} bytes")]
    TooLong {
        /// `subject` or `body`.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// The message could not be built (a header lettre refused).
    #[error("mail not built: {0}")]
    Build(#[source] lettre::error::Error),
    /// Writing the outbox failed.
    #[error("outbox {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The outbox holds [`OUTBOX_FILES_MAX`] messages already.
    #[error("outbox full ({max} messages)")]
    OutboxFull {
        /// The limit.
        max: usize,
    },
    /// The SMTP server refused or could not be reached.
    #[error("SMTP: {0}")]
    Smtp(#[source] lettre::transport::smtp::Error),
}

/// One plain-text message.
#[derive(Clone, PartialEq, Eq)]
pub struct Mail {
    /// Recipient address.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
}

impl fmt::Debug for Mail {
    /// The body may hold a one-time link: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mail").field("to", &self.to).field("subject", &self.subject).finish_non_exhaustive()
    }
}

/// Something that delivers mail (blocking).
pub trait Mailer: Send + Sync + fmt::Debug {
    /// Sends `mail` from the configured sender.
    fn send(&self, mail: &Mail) -> Result<(), MailError>;
}

/// SMTP transport security.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (required, never skipped).
    Starttls,
    /// TLS from the first byte.
    Tls,
}

/// Settings of the SMTP transport.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    /// Server host name (also the TLS server name).
    pub host: String,
    /// Port; `None`: 587 with STARTTLS, 465 with TLS.
    pub port: Option<u16>,
    /// STARTTLS or implicit TLS.
    pub security: SmtpSecurity,
    /// Login name, if the server wants one.
    pub username: Option<String>,
    /// Password of `username` (never printed).
    pub password: Option<String>,
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Which transport carries mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailTransport {
    /// `.eml` files in a directory: `None` is `<data-dir>/outbox`.
    Outbox {
        /// The directory, if not the default.
        dir: Option<PathBuf>,
    },
    /// SMTP.
    Smtp(SmtpSettings),
}

/// Mail settings (`[mail]` in the config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailConfig {
    /// The `From` address.
    pub from: String,
    /// The transport.
    pub transport: MailTransport,
    /// The server's public origin that links in mails start with (no trailing slash), e.g.
    /// `https://bluewave.example.org`.
    pub link_base_url: String,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            from: "BlueWave <bluewave@localhost>".into(),
            transport: MailTransport::Outbox { dir: None },
            link_base_url: "https://127.0.0.1:8443".into(),
        }
    }
}

impl MailConfig {
    /// The outbox directory of this config under `data_dir`, when the transport is the outbox.
    pub fn outbox_dir(&self, data_dir: &Path) -> Option<PathBuf> {
        match &self.transport {
            MailTransport::Outbox { dir } => {
                Some(dir.clone().unwrap_or_else(|| data_dir.join(OUTBOX_DIR_NAME)))
            }
            MailTransport::Smtp(_) => None,
        }
    }
}

/// Opens the transport of `config` (creating the outbox directory under `data_dir`).
pub fn open_mailer(config: &MailConfig, data_dir: &Path) -> Result<Arc<dyn Mailer>, MailError> {
    let from = parse_mailbox(&config.from)?;
    match &config.transport {
        MailTransport::Outbox { .. } => {
            let dir = config.outbox_dir(data_dir).unwrap_or_else(|| data_dir.join(OUTBOX_DIR_NAME));
            Ok(Arc::new(OutboxMailer::open(dir, from)?))
        }
        MailTransport::Smtp(settings) => Ok(Arc::new(SmtpMailer::new(settings, from)?)),
    }
}

fn parse_mailbox(address: &str) -> Result<Mailbox, MailError> {
    address.parse().map_err(|source| MailError::Address { address: address.to_owned(), source })
}

/// The body as 7-bit text (CRLF line ends) when it is ASCII without NUL and every line fits
/// [`SEVEN_BIT_LINE_BYTES_MAX`] (RFC 5322 §2.1.1, RFC 2045 §2.7). lettre's own choice wraps at
/// 76 columns (quoted-printable), which would split a link across lines.
fn seven_bit(text: &str) -> Option<Body> {
    let fits = text.is_ascii()
        && !text.contains('\0')
        && !text.contains('\r')
        && text.lines().all(|line| line.len() <= SEVEN_BIT_LINE_BYTES_MAX);
    fits.then(|| {
        Body::dangerous_pre_encoded(
            text.replace('\n', "\r\n").into_bytes(),
            ContentTransferEncoding::SevenBit,
        )
    })
}

/// Builds the RFC 5322 message: 7-bit text when the body allows it (links stay on one line),
/// else lettre's choice (quoted-printable or base64).
fn build(from: &Mailbox, mail: &Mail) -> Result<Message, MailError> {
    if mail.subject.len() > MAIL_SUBJECT_BYTES_MAX {
        return Err(MailError::TooLong { what: "subject", max: MAIL_SUBJECT_BYTES_MAX });
    }
    if mail.text.len() > MAIL_BODY_BYTES_MAX {
        return Err(MailError::TooLong { what: "body", max: MAIL_BODY_BYTES_MAX });
    }
    let body = seven_bit(&mail.text).unwrap_or_else(|| Body::new(mail.text.clone()));
    Message::builder()
        .from(from.clone())
        .to(parse_mailbox(&mail.to)?)
        .subject(mail.subject.clone())
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(MailError::Build)
}

/// The outbox transport: one `.eml` file per message.
#[derive(Debug)]
pub struct OutboxMailer {
    dir: PathBuf,
    from: Mailbox,
}

impl OutboxMailer {
    /// Opens (creating, mode 0700) the outbox directory `dir`.
    pub fn open(dir: PathBuf, from: Mailbox) -> Result<Self, MailError> {
        let io = |op, source| MailError::Io { op, path: dir.clone(), source };
        std::fs::create_dir_all(&dir).map_err(|e| io("create", e))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| io("chmod", e))?;
        Ok(Self { dir, from })
    }

    /// The directory the messages are written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Mailer for OutboxMailer {
    fn send(&self, mail: &Mail) -> Result<(), MailError> {
        let message = build(&self.from, mail)?;
        let io = |op, path: &Path, source| MailError::Io { op, path: path.to_path_buf(), source };
        let count = std::fs::read_dir(&self.dir)
            .map_err(|e| io("list", &self.dir, e))?
            .take(OUTBOX_FILES_MAX)
            .count();
        if count >= OUTBOX_FILES_MAX {
            return Err(MailError::OutboxFull { max: OUTBOX_FILES_MAX });
        }
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let mut unique = [0u8; 8];
        getrandom::fill(&mut unique).map_err(|e| io("random name", &self.dir, std::io::Error::other(e)))?;
        let name = format!("{now_ms:015}-{}.eml", crate::audit::hex(&unique));
        let temp = self.dir.join(format!(".{name}.tmp"));
        let path = self.dir.join(&name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| io("create", &temp, e))?;
        let written = file.write_all(&message.formatted()).and_then(|()| file.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(io("write", &temp, e));
        }
        drop(file);
        std::fs::rename(&temp, &path).map_err(|e| io("rename", &path, e))?;
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| io("sync", &self.dir, e))?;
        tracing::info!(outbox = %self.dir.display(), file = %name, "mail written to the outbox");
        Ok(())
    }
}

/// The SMTP transport (blocking; TLS by rustls).
pub struct SmtpMailer {
    transport: SmtpTransport,
    from: Mailbox,
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpMailer").field("from", &self.from).finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// A transport to `settings.host` (no connection is made before the first send).
    pub fn new(settings: &SmtpSettings, from: Mailbox) -> Result<Self, MailError> {
        let (builder, default_port) = match settings.security {
            SmtpSecurity::Starttls => {
                (SmtpTransport::starttls_relay(&settings.host).map_err(MailError::Smtp)?, SMTP_STARTTLS_PORT)
            }
            SmtpSecurity::Tls => {
                (SmtpTransport::relay(&settings.host).map_err(MailError::Smtp)?, SMTP_TLS_PORT)
            }
        };
        let mut builder = builder
            .port(settings.port.unwrap_or(default_port))
            .timeout(Some(Duration::from_millis(SMTP_TIMEOUT_MS)));
        if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Self { transport: builder.build(), from })
    }
}

impl Mailer for SmtpMailer {
    fn send(&self, mail: &Mail) -> Result<(), MailError> {
        let message = build(&self.from, mail)?;
        self.transport.send(&message).map_err(MailError::Smtp)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn the_outbox_writes_one_whole_private_eml_per_message_and_keeps_links_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let config = MailConfig::default();
        let mailer = open_mailer(&config, dir.path()).unwrap();
        let link = format!("https://127.0.0.1:8443/verify?token={}", "A".repeat(43));
        mailer
            .send(&Mail {
                to: "a@example.org".into(),
                subject: "Hello".into(),
                text: format!("Open:\n{link}\n"),
            })
            .unwrap();
        let outbox = dir.path().join(OUTBOX_DIR_NAME);
        let files: Vec<_> = std::fs::read_dir(&outbox).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1, "no temp file left behind");
        assert_eq!(files[0].extension().unwrap(), "eml");
        assert_eq!(std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&outbox).unwrap().permissions().mode() & 0o777, 0o700);
        let text = std::fs::read_to_string(&files[0]).unwrap();
        assert!(text.contains("To: a@example.org\r\n"), "{text}");
        assert!(text.contains("Subject: Hello\r\n"), "{text}");
        assert!(text.contains("Content-Transfer-Encoding: 7bit\r\n"), "{text}");
        assert!(text.contains(&link), "{text}");
        let refused =
            mailer.send(&Mail { to: "not an address".into(), subject: "x".into(), text: "y".into() });
        assert!(matches!(refused, Err(MailError::Address { .. })), "{refused:?}");
        let long =
            mailer.send(&Mail { to: "a@example.org".into(), subject: "x".repeat(257), text: String::new() });
        assert!(matches!(long, Err(MailError::TooLong { what: "subject", max: 256 })), "{long:?}");
    }
}
