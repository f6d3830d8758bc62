//! Process configuration: defaults, overridden by the YAML file, overridden
//! by command-line flags. Validated before use (and before a reload swaps it).
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}:{line}:{column}: {message}")]
    Parse { file: String, line: u64, column: u64, message: String },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the app connects. Loopback unless told otherwise.
    pub listen: SocketAddr,
    pub backend: String,
    pub admin: SocketAddr,
    /// A rules YAML file or a folder of them.
    pub rules: PathBuf,
    pub backend_tls: TlsConfig,
    /// TLS offered to clients (thaw terminates it); off without it.
    pub client_tls: Option<ClientTlsConfig>,
    /// Whether thaw offers the compressed protocol to apps.
    pub client_compression: ClientCompression,
    /// When thaw's leg to the server is compressed.
    pub backend_compression: BackendCompression,
    /// zlib level thaw compresses with, on either leg (1 fastest, 9 smallest).
    pub compression_level: u32,
    pub log: LogConfig,
    /// SIGTERM: how long open transactions may run before connections are closed.
    pub shutdown_grace_secs: u64,
    /// Largest packet thaw accepts from either side (the server enforces its own limit too).
    pub max_packet_bytes: usize,
    pub connect_timeout_ms: u64,
    pub limits: LimitsConfig,
    /// From thaw's greeting until the client's HandshakeResponse (MariaDB's
    /// `connect_timeout`): a silent or half-sent client is closed then.
    pub client_handshake_timeout_ms: u64,
    /// From the backend TCP connect until its greeting.
    pub backend_greeting_timeout_ms: u64,
    /// From the client's HandshakeResponse until the server's OK or ERR.
    pub auth_timeout_ms: u64,
    /// The TLS handshake with the backend.
    pub tls_handshake_timeout_ms: u64,
    /// TCP keepalive idle time on both legs, in seconds; 0 turns it off.
    pub tcp_keepalive_secs: u64,
    /// Client connections open at once; one more is answered with ERR 1040.
    pub max_connections: usize,
    /// Admin HTTP connections served at once; more wait in the accept queue.
    pub admin_max_connections: usize,
    /// `/readyz` reuses one backend check for this long (single-flight).
    pub readiness_interval_ms: u64,
    pub retry: RetryConfig,
    /// Credentials for the readiness probe's mysql_async ping; without them
    /// readiness checks TCP plus a server greeting.
    pub probe: Option<ProbeConfig>,
    /// Every rule in shadow mode (`thaw run --shadow`): statements go as the
    /// app sent them; what enforce mode would do is logged and counted.
    pub shadow: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:3307".parse().unwrap(),
            backend: "127.0.0.1:3306".into(),
            admin: "127.0.0.1:9105".parse().unwrap(),
            rules: PathBuf::from("rules"),
            backend_tls: TlsConfig::default(),
            client_tls: None,
            client_compression: ClientCompression::default(),
            backend_compression: BackendCompression::default(),
            compression_level: crate::wire::compress::DEFAULT_LEVEL,
            log: LogConfig::default(),
            shutdown_grace_secs: 30,
            max_packet_bytes: 1 << 30,
            connect_timeout_ms: 5000,
            limits: LimitsConfig::default(),
            client_handshake_timeout_ms: 8000,
            backend_greeting_timeout_ms: 10_000,
            auth_timeout_ms: 10_000,
            tls_handshake_timeout_ms: 10_000,
            tcp_keepalive_secs: 0,
            max_connections: 1000,
            admin_max_connections: 32,
            readiness_interval_ms: 1000,
            retry: RetryConfig::default(),
            probe: None,
            shadow: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    #[default]
    Disabled,
    /// Use TLS when the server offers it.
    Preferred,
    /// Refuse the connection when the server does not offer TLS.
    Required,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub mode: TlsMode,
    /// PEM bundle of CAs trusted for the server certificate. Without it the
    /// certificate is not verified (encryption only), like `--ssl` in the mysql CLI.
    pub ca_file: Option<PathBuf>,
    /// Check that the certificate names the backend host (or `server_name`).
    /// Unset: on when `ca_file` is given; `false` is the explicit opt-out.
    pub verify_identity: Option<bool>,
    pub server_name: Option<String>,
}

/// The compressed protocol toward apps. thaw speaks it itself, whatever
/// the backend leg does.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientCompression {
    /// Not offered; a client that asks anyway is refused at login.
    Off,
    /// Offered in the greeting; a client that asks gets a compressed leg.
    #[default]
    Allowed,
}

/// The compressed protocol on thaw's leg to the server (worth it for a
/// remote database), decided at each login.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum BackendCompression {
    Off,
    /// Compressed when the app's leg is (as it would be direct), if the server offers it.
    #[default]
    AsClient,
    /// Compressed whenever the server offers it, whatever the app does.
    Preferred,
    /// Compressed always; a server that does not offer it is refused (1043).
    Required,
}

/// thaw's certificate toward the app: it advertises TLS in the greeting it
/// relays and terminates the TLS a client asks for.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsConfig {
    /// Whether the host name is checked: by default whenever a CA is given.
    pub fn verifies_identity(&self) -> bool {
        self.verify_identity.unwrap_or(self.ca_file.is_some())
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `thaw=debug`. `THAW_LOG` overrides it.
    pub level: String,
    /// Replace literals in logged statements with `?`.
    pub redact_literals: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".into(), redact_literals: true }
    }
}

/// How much client data thaw holds in memory. Packets over a budget are not
/// refused: they are streamed to the server frame by frame, unplanned.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest packet a client may send before it has logged in (its
    /// handshake response and auth packets).
    pub handshake_max_bytes: usize,
    /// Per connection: the largest client packet thaw buffers (and plans).
    pub connection_buffer_bytes: usize,
    /// All connections together: buffered client packets over 64 KiB.
    pub global_buffer_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { handshake_max_bytes: 64 << 10, connection_buffer_bytes: 1 << 20, global_buffer_bytes: 32 << 20 }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub enabled: bool,
    /// Error codes retried at statement level (when only the statement was rolled back).
    pub errors: Vec<u16>,
    /// Re-sends after the first failure.
    pub attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    /// Total time a statement may spend waiting between retries.
    pub budget_ms: u64,
    /// Replay a recorded transaction after 1213 (and 1205 when innodb_rollback_on_timeout=ON).
    pub replay: bool,
    /// Bytes of commands recorded per transaction; past it, no replay.
    pub replay_max_bytes: usize,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            errors: vec![1205],
            attempts: 3,
            backoff_base_ms: 20,
            backoff_cap_ms: 500,
            budget_ms: 10_000,
            replay: true,
            replay_max_bytes: 1 << 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    pub user: String,
    #[serde(default)]
    pub password: String,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        Self::parse(&text, &file)
    }

    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let cfg: Config = serde_saphyr::from_str(text).map_err(|e| {
            let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
            ConfigError::Parse { file: file.into(), line, column, message: first_line(&e.to_string()) }
        })?;
        cfg.validate().map_err(|message| ConfigError::Invalid { file: file.into(), message })?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.max_packet_bytes < 1024 {
            return Err("max_packet_bytes must be at least 1024".into());
        }
        let l = &self.limits;
        if l.handshake_max_bytes < 1024 || l.handshake_max_bytes > self.max_packet_bytes {
            return Err("limits.handshake_max_bytes must be between 1024 and max_packet_bytes".into());
        }
        if l.connection_buffer_bytes < 1024 || l.connection_buffer_bytes > l.global_buffer_bytes {
            return Err("limits.connection_buffer_bytes must be at least 1024 and at most limits.global_buffer_bytes".into());
        }
        for (key, ms) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("client_handshake_timeout_ms", self.client_handshake_timeout_ms),
            ("backend_greeting_timeout_ms", self.backend_greeting_timeout_ms),
            ("auth_timeout_ms", self.auth_timeout_ms),
            ("tls_handshake_timeout_ms", self.tls_handshake_timeout_ms),
        ] {
            if ms < 100 {
                return Err(format!("{key} must be at least 100"));
            }
        }
        if self.max_connections == 0 || self.admin_max_connections == 0 {
            return Err("max_connections and admin_max_connections must be at least 1".into());
        }
        if self.readiness_interval_ms < 100 {
            return Err("readiness_interval_ms must be at least 100".into());
        }
        if self.retry.attempts > 100 {
            return Err("retry.attempts above 100 is not sensible".into());
        }
        if self.retry.backoff_base_ms > self.retry.backoff_cap_ms {
            return Err("retry.backoff_base_ms exceeds retry.backoff_cap_ms".into());
        }
        if !(1..=9).contains(&self.compression_level) {
            return Err("compression_level must be between 1 and 9".into());
        }
        if self.backend_tls.verify_identity == Some(true) && self.backend_tls.ca_file.is_none() {
            return Err("backend_tls.verify_identity needs backend_tls.ca_file".into());
        }
        Ok(())
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_defaults() {
        assert_eq!(Config::parse("", "c.yaml").unwrap(), Config::default());
    }

    #[test]
    fn fields_override_defaults() {
        let c = Config::parse("listen: 0.0.0.0:4000\nbackend_tls:\n  mode: required\nretry:\n  attempts: 5\n", "c.yaml").unwrap();
        assert_eq!(c.listen.port(), 4000);
        assert_eq!(c.backend_tls.mode, TlsMode::Required);
        assert_eq!(c.retry.attempts, 5);
        assert_eq!(c.retry.errors, vec![1205]);
    }

    #[test]
    fn unknown_field_names_file_line_and_column() {
        let err = Config::parse("listen: 127.0.0.1:3307\nretry:\n  atempts: 5\n", "thaw.yaml").unwrap_err().to_string();
        assert!(err.starts_with("thaw.yaml:3:3: "), "{err}");
        assert!(err.contains("atempts"), "{err}");
    }

    #[test]
    fn limits_have_defaults_and_are_checked() {
        let c = Config::parse("limits:\n  connection_buffer_bytes: 4096\n", "c.yaml").unwrap();
        assert_eq!(c.limits.connection_buffer_bytes, 4096);
        assert_eq!(c.limits.handshake_max_bytes, 65536);
        assert_eq!(c.limits.global_buffer_bytes, 32 << 20);
        let err = Config::parse("limits:\n  connection_buffer_bytes: 64000000\n", "c.yaml").unwrap_err();
        assert!(err.to_string().contains("global_buffer_bytes"), "{err}");
        let err = Config::parse("limits:\n  handshake_max_bytes: 10\n", "c.yaml").unwrap_err();
        assert!(err.to_string().contains("handshake_max_bytes"), "{err}");
    }

    #[test]
    fn admission_keys_parse_and_are_validated() {
        let c = Config::parse("max_connections: 5\nclient_handshake_timeout_ms: 1500\ntcp_keepalive_secs: 30\n", "c.yaml").unwrap();
        assert_eq!((c.max_connections, c.client_handshake_timeout_ms, c.tcp_keepalive_secs), (5, 1500, 30));
        assert_eq!(c.auth_timeout_ms, 10_000, "phase deadlines default near MariaDB's connect_timeout");
        let err = Config::parse("auth_timeout_ms: 0\n", "c.yaml").unwrap_err().to_string();
        assert!(err.contains("auth_timeout_ms"), "{err}");
        assert!(Config::parse("max_connections: 0\n", "c.yaml").is_err());
        assert!(Config::parse("readiness_interval_ms: 5\n", "c.yaml").is_err());
    }

    #[test]
    fn a_ca_file_turns_host_name_verification_on_unless_opted_out() {
        let c = Config::parse("backend_tls:\n  mode: required\n  ca_file: /ca.pem\n", "c.yaml").unwrap();
        assert!(c.backend_tls.verifies_identity());
        let c = Config::parse("backend_tls:\n  mode: required\n  ca_file: /ca.pem\n  verify_identity: false\n", "c.yaml").unwrap();
        assert!(!c.backend_tls.verifies_identity());
        let c = Config::parse("backend_tls:\n  mode: required\n", "c.yaml").unwrap();
        assert!(!c.backend_tls.verifies_identity(), "no CA: encryption only");
        let err = Config::parse("backend_tls:\n  mode: required\n  verify_identity: true\n", "c.yaml").unwrap_err();
        assert!(err.to_string().contains("ca_file"), "{err}");
    }

    #[test]
    fn client_tls_needs_cert_and_key() {
        assert_eq!(Config::default().client_tls, None);
        let c = Config::parse("client_tls:\n  cert: /c.pem\n  key: /k.pem\n", "c.yaml").unwrap();
        let t = c.client_tls.unwrap();
        assert_eq!((t.cert.to_str(), t.key.to_str()), (Some("/c.pem"), Some("/k.pem")));
        let err = Config::parse("client_tls:\n  cert: /c.pem\n", "c.yaml").unwrap_err().to_string();
        assert!(err.contains("key"), "{err}");
    }

    #[test]
    fn compression_keys_default_parse_and_are_validated() {
        let d = Config::default();
        assert_eq!(
            (d.client_compression, d.backend_compression, d.compression_level),
            (ClientCompression::Allowed, BackendCompression::AsClient, 6)
        );
        let c = Config::parse("client_compression: off\nbackend_compression: required\ncompression_level: 1\n", "c.yaml").unwrap();
        assert_eq!(
            (c.client_compression, c.backend_compression, c.compression_level),
            (ClientCompression::Off, BackendCompression::Required, 1)
        );
        assert_eq!(Config::parse("backend_compression: preferred\n", "c.yaml").unwrap().backend_compression, BackendCompression::Preferred);
        let err = Config::parse("backend_compression: zstd\n", "c.yaml").unwrap_err().to_string();
        assert!(err.starts_with("c.yaml:1:"), "{err}");
        let err = Config::parse("compression_level: 0\n", "c.yaml").unwrap_err().to_string();
        assert!(err.contains("compression_level"), "{err}");
        assert!(Config::parse("compression_level: 10\n", "c.yaml").is_err());
    }

    #[test]
    fn semantic_errors_are_reported() {
        let err = Config::parse("retry:\n  backoff_base_ms: 900\n  backoff_cap_ms: 10\n", "t.yaml").unwrap_err();
        assert!(err.to_string().contains("backoff_base_ms"));
    }
}
