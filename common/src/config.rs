//! Configuration shared by both services: flags with environment fallbacks (clap), so
//! `--help` documents every setting and containers configure through the environment.

use std::{path::PathBuf, time::Duration};

use crate::{
    db::PoolOptions,
    idempotency::IdempotencyOptions,
    peer::PeerTransport,
    server::ServerOptions,
    tls::{ClientAuth, PeerTls, ServerTlsOptions},
    webhook::WebhookOptions,
};

/// Parses durations such as `250ms`, `10s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().map_err(|_| format!("{text:?}: expected a number and a unit, e.g. 10s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        "h" => Ok(Duration::from_secs(value * 3600)),
        _ => Err(format!("{text:?}: unit must be ms, s, m or h")),
    }
}

/// Settings every medins server has.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// Database URL: `sqlite://path/to/file.db` or `postgres://user:password@host:port/db`.
    #[arg(long, env = "MEDINS_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Partners file (TOML): who may call, with which scopes; reloaded on SIGHUP.
    #[arg(long, env = "MEDINS_PARTNERS_FILE")]
    pub partners_file: PathBuf,

    /// Do not run pending database migrations at start.
    #[arg(long, env = "MEDINS_NO_MIGRATE")]
    pub no_migrate: bool,

    /// Maximum database connections in the pool.
    #[arg(long, env = "MEDINS_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,

    /// How long a call waits for a database connection before failing UNAVAILABLE.
    #[arg(long, env = "MEDINS_DB_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub db_timeout: Duration,

    /// Per-RPC server timeout.
    #[arg(long, env = "MEDINS_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Largest inbound or outbound message in bytes.
    #[arg(long, env = "MEDINS_MAX_MESSAGE_BYTES", default_value_t = crate::server::DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// HTTP/2 streams per connection.
    #[arg(long, env = "MEDINS_MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    pub max_concurrent_streams: u32,

    /// In-flight requests per connection before load shedding (RESOURCE_EXHAUSTED).
    #[arg(long, env = "MEDINS_CONCURRENCY_LIMIT", default_value_t = 256)]
    pub concurrency_limit: usize,

    /// How often the database probe behind the health status runs.
    #[arg(long, env = "MEDINS_HEALTH_CHECK_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub health_check_interval: Duration,

    /// On SIGTERM: how long NOT_SERVING is shown before the listener closes.
    #[arg(long, env = "MEDINS_SHUTDOWN_GRACE", default_value = "2s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// On SIGTERM: how long in-flight calls may take to finish after the listener closes.
    #[arg(long, env = "MEDINS_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// How long a successful outcome is kept for idempotent retries.
    #[arg(long, env = "MEDINS_IDEMPOTENCY_RETENTION", default_value = "24h", value_parser = parse_duration)]
    pub idempotency_retention: Duration,

    /// Audit key file (TOML, mode 0600: Ed25519 keys with ids that sign audit checkpoints and
    /// key the per-row MACs; README "Audit trail"), created by `medins up`, rotated with
    /// `medins keys rotate-audit`. Required. Keep it outside the database and its backups.
    #[arg(long, env = "MEDINS_AUDIT_KEYS_FILE")]
    pub audit_keys_file: Option<PathBuf>,

    /// How often each audit partition that grew is sealed by a signed checkpoint (also at
    /// graceful shutdown).
    #[arg(long, env = "MEDINS_AUDIT_CHECKPOINT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub audit_checkpoint_interval: Duration,

    /// TLS certificate chain (PEM, leaf first) this server presents; with --tls-key-file. The
    /// files are re-read when they change (a file that does not load is logged and the previous
    /// certificate stays). Without them the server speaks plaintext, which it does only on a
    /// loopback address unless --insecure-plaintext (docs/tls.md).
    #[arg(long, env = "MEDINS_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert-file.
    #[arg(long, env = "MEDINS_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,

    /// CA certificates (PEM) whose client certificates this server accepts (mutual TLS). Partners
    /// whose entry pins a client certificate must present it; see --tls-client-auth.
    #[arg(long, env = "MEDINS_TLS_CLIENT_CA_FILE", requires = "tls_cert_file")]
    pub tls_client_ca_file: Option<PathBuf>,

    /// With --tls-client-ca-file: `optional` (a certificate is checked when presented; only
    /// pinned partners must present one) or `required` (every connection presents one).
    #[arg(long, env = "MEDINS_TLS_CLIENT_AUTH", value_enum, default_value = "optional")]
    pub tls_client_auth: ClientAuth,

    /// How often the TLS files are checked for changes.
    #[arg(long, env = "MEDINS_TLS_RELOAD_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,

    /// Allow plaintext where TLS is otherwise required: serving on a non-loopback address
    /// without a certificate, calling the other service or a webhook at a non-loopback
    /// `http://` URL. Only behind something that encrypts (a TLS-terminating proxy, a mesh).
    #[arg(long, env = "MEDINS_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,

    /// CA certificates (PEM) that issued the other medins service's certificate (its `https://`
    /// URL); default: the system trust store.
    #[arg(long, env = "MEDINS_PEER_CA_FILE")]
    pub peer_ca_file: Option<PathBuf>,

    /// Client certificate (PEM) this service presents to the other one (when it asks: mutual
    /// TLS); with --peer-key-file.
    #[arg(long, env = "MEDINS_PEER_CERT_FILE", requires = "peer_key_file")]
    pub peer_cert_file: Option<PathBuf>,

    /// Private key (PEM) of --peer-cert-file.
    #[arg(long, env = "MEDINS_PEER_KEY_FILE", requires = "peer_cert_file")]
    pub peer_key_file: Option<PathBuf>,

    /// CA certificates (PEM) trusted for `https://` webhooks (SMS gateway, identity and
    /// relationship authorities); default: the system trust store.
    #[arg(long, env = "MEDINS_WEBHOOK_CA_FILE")]
    pub webhook_ca_file: Option<PathBuf>,
}

impl CommonArgs {
    /// Defaults for everything but the database URL and partners file (embedding, tests).
    pub fn new(database_url: impl Into<String>, partners_file: impl Into<PathBuf>) -> Self {
        let defaults = ServerOptions::default();
        Self {
            database_url: database_url.into(),
            partners_file: partners_file.into(),
            no_migrate: false,
            db_pool_size: 16,
            db_timeout: Duration::from_secs(5),
            request_timeout: defaults.request_timeout,
            max_message_bytes: defaults.max_message_bytes,
            max_concurrent_streams: defaults.max_concurrent_streams,
            concurrency_limit: defaults.concurrency_limit_per_connection,
            health_check_interval: defaults.health_check_interval,
            shutdown_grace: defaults.shutdown_grace,
            drain_timeout: defaults.drain_timeout,
            idempotency_retention: IdempotencyOptions::default().retention,
            audit_keys_file: None,
            audit_checkpoint_interval: Duration::from_secs(5),
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            tls_client_auth: ClientAuth::Optional,
            tls_reload_interval: Duration::from_secs(5),
            insecure_plaintext: false,
            peer_ca_file: None,
            peer_cert_file: None,
            peer_key_file: None,
            webhook_ca_file: None,
        }
    }

    /// The server's TLS settings, if it has a certificate.
    pub fn server_tls(&self) -> Option<ServerTlsOptions> {
        let (cert, key) = (self.tls_cert_file.as_ref()?, self.tls_key_file.as_ref()?);
        let mut tls = ServerTlsOptions::new(cert, key);
        if let Some(ca) = &self.tls_client_ca_file {
            tls = tls.with_client_ca(ca, self.tls_client_auth);
        }
        tls.reload_interval = self.tls_reload_interval;
        Some(tls)
    }

    /// How this service reaches the other one.
    pub fn peer_transport(&self) -> PeerTransport {
        PeerTransport {
            tls: PeerTls {
                ca_file: self.peer_ca_file.clone(),
                cert_file: self.peer_cert_file.clone(),
                key_file: self.peer_key_file.clone(),
            },
            insecure_plaintext: self.insecure_plaintext,
        }
    }

    /// `options` with this service's webhook trust settings.
    pub fn webhook_options(&self, options: WebhookOptions) -> WebhookOptions {
        WebhookOptions { ca_file: self.webhook_ca_file.clone(), insecure_plaintext: self.insecure_plaintext, ..options }
    }

    /// The server limits.
    pub fn server_options(&self) -> ServerOptions {
        ServerOptions {
            max_message_bytes: self.max_message_bytes,
            request_timeout: self.request_timeout,
            max_concurrent_streams: self.max_concurrent_streams,
            concurrency_limit_per_connection: self.concurrency_limit,
            health_check_interval: self.health_check_interval,
            shutdown_grace: self.shutdown_grace,
            drain_timeout: self.drain_timeout,
            tls: self.server_tls(),
            insecure_plaintext: self.insecure_plaintext,
            ..ServerOptions::default()
        }
    }

    /// The pool settings.
    pub fn pool_options(&self) -> PoolOptions {
        PoolOptions { max_size: self.db_pool_size, connection_timeout: self.db_timeout }
    }

    /// The audit keys (required: whoever writes the database must not be able to re-seal it).
    pub fn audit_keys(&self) -> anyhow::Result<crate::audit::AuditKeys> {
        use anyhow::Context;
        let path = self
            .audit_keys_file
            .as_deref()
            .context("audit keys: set --audit-keys-file (MEDINS_AUDIT_KEYS_FILE); `medins up` creates one")?;
        crate::audit::AuditKeys::load(path).with_context(|| format!("loading the audit key file {}", path.display()))
    }

    /// The idempotency settings.
    pub fn idempotency_options(&self) -> IdempotencyOptions {
        IdempotencyOptions { retention: self.idempotency_retention, ..IdempotencyOptions::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("10d").is_err());
    }
}
