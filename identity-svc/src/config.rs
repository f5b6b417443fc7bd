//! Configuration of identity-svc (flags and environment; `identity-svc --help`).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use medins_common::config::{CommonArgs, parse_duration};

/// identity-svc: who a person is.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "identity-svc",
    version,
    about = "medins identity-svc: persons, SMS codes, real name, tokens, face sessions"
)]
pub struct Config {
    /// Address to listen on (use 0.0.0.0:50051 to accept remote connections).
    #[arg(long, env = "MEDINS_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Settings shared with insurance-svc.
    #[command(flatten)]
    pub common: CommonArgs,

    /// Personal-data key file (TOML: versioned AES-256 data keys and a separate blind-index key).
    /// The environment variable MEDINS_DATA_KEYS, holding the file's text, takes precedence.
    #[arg(long, env = "MEDINS_DATA_KEYS_FILE")]
    pub data_keys_file: Option<PathBuf>,

    /// Face verification sessions.
    #[command(flatten)]
    pub face: FaceArgs,

    /// Delivery of face outcomes to insurance-svc (the outbox).
    #[command(flatten)]
    pub outbox: OutboxArgs,

    /// Person-token signing keys.
    #[command(flatten)]
    pub tokens: TokenArgs,

    /// Development mode, never for production: without --sms-webhook-url, SMS codes are
    /// written to the log (masked phone, plain code) instead of sent; without
    /// --identity-authority-url, real names are checked by a local stand-in (ID checksum and
    /// deny list only). Without --dev, both URLs are required.
    #[arg(long, env = "MEDINS_DEV")]
    pub dev: bool,

    /// SMS delivery and the identity authority.
    #[command(flatten)]
    pub verification: VerificationArgs,
}

impl Config {
    /// A configuration with defaults (embedding, tests).
    pub fn new(common: CommonArgs, data_keys_file: Option<PathBuf>) -> Self {
        Self {
            listen: ([127, 0, 0, 1], 50051).into(),
            common,
            data_keys_file,
            face: FaceArgs::default(),
            outbox: OutboxArgs::default(),
            tokens: TokenArgs::default(),
            dev: false,
            verification: VerificationArgs::default(),
        }
    }
}

/// Person-token signing keys (docs/architecture.md#who-may-call-what).
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct TokenArgs {
    /// Person-token key file (TOML, mode 0600: Ed25519 signing keys with ids, creation and
    /// retirement times), created by `medins up` and rotated with `medins keys rotate`.
    /// Required. The file is re-read whenever it changes on disk (no signal needed).
    #[arg(long, env = "MEDINS_TOKEN_KEYS_FILE")]
    pub token_keys_file: Option<PathBuf>,

    /// How often the person-token key file is checked for changes.
    #[arg(long, env = "MEDINS_TOKEN_KEYS_CHECK_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub token_keys_check_interval: Duration,
}

impl Default for TokenArgs {
    fn default() -> Self {
        Self { token_keys_file: None, token_keys_check_interval: Duration::from_secs(2) }
    }
}

impl Config {
    /// The same configuration with a person-token key file.
    pub fn with_token_keys_file(mut self, path: PathBuf) -> Self {
        self.tokens.token_keys_file = Some(path);
        self
    }
}

fn parse_threshold(text: &str) -> Result<f64, String> {
    let value: f64 = text.trim().parse().map_err(|_| format!("{text:?}: expected a number from 0 to 1"))?;
    crate::domain::face::Threshold::new(value)
        .map(|t| t.value())
        .ok_or_else(|| format!("{text:?}: must be from 0 to 1"))
}

/// Face verification settings.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct FaceArgs {
    /// Similarity (0-1) a submission must reach, with liveness, to pass; compared exactly on the
    /// value the provider sends.
    #[arg(long, env = "MEDINS_FACE_THRESHOLD", default_value = "0.80", value_parser = parse_threshold)]
    pub face_threshold: f64,

    /// How often the sweeper looks for PENDING sessions past their expiry and expires them (so
    /// expiry is recorded, and reported to insurance-svc, even if nobody asks).
    #[arg(long, env = "MEDINS_FACE_SWEEP_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub face_sweep_interval: Duration,

    /// How often a WatchFaceVerification stream re-reads its session from the database, to see
    /// changes made through another replica (changes through this one are pushed at once).
    #[arg(long, env = "MEDINS_FACE_WATCH_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub face_watch_poll_interval: Duration,
}

impl Default for FaceArgs {
    fn default() -> Self {
        Self {
            face_threshold: crate::domain::face::DEFAULT_THRESHOLD,
            face_sweep_interval: Duration::from_secs(5),
            face_watch_poll_interval: Duration::from_secs(1),
        }
    }
}

/// Outbox delivery settings: FaceVerificationCompleted events to insurance-svc.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct OutboxArgs {
    /// insurance-svc base URL (e.g. http://127.0.0.1:50052). Unset: outcomes are kept in the
    /// outbox but not delivered until a process with it set runs.
    #[arg(long, env = "MEDINS_INSURANCE_URL")]
    pub insurance_url: Option<String>,

    /// API key of identity-svc's SERVICE partner entry at insurance-svc.
    #[arg(long, env = "MEDINS_INSURANCE_API_KEY", hide_env_values = true)]
    pub insurance_api_key: Option<String>,

    /// Deadline of each delivery call.
    #[arg(long, env = "MEDINS_OUTBOX_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub outbox_timeout: Duration,

    /// First retry delay after a failed delivery; doubles per attempt (with jitter) up to the cap.
    #[arg(long, env = "MEDINS_OUTBOX_BACKOFF_BASE", default_value = "1s", value_parser = parse_duration)]
    pub outbox_backoff_base: Duration,

    /// Longest retry delay.
    #[arg(long, env = "MEDINS_OUTBOX_BACKOFF_CAP", default_value = "5m", value_parser = parse_duration)]
    pub outbox_backoff_cap: Duration,

    /// How long a worker holds the events it is delivering before another replica may take
    /// them over; must exceed the delivery timeout.
    #[arg(long, env = "MEDINS_OUTBOX_LEASE", default_value = "30s", value_parser = parse_duration)]
    pub outbox_lease: Duration,

    /// How often an idle worker looks for due events (events written by this process wake it
    /// at once).
    #[arg(long, env = "MEDINS_OUTBOX_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub outbox_poll_interval: Duration,

    /// Events claimed per round (delivered concurrently, one per session).
    #[arg(long, env = "MEDINS_OUTBOX_BATCH", default_value_t = 32)]
    pub outbox_batch: u32,
}

impl Default for OutboxArgs {
    fn default() -> Self {
        Self {
            insurance_url: None,
            insurance_api_key: None,
            outbox_timeout: Duration::from_secs(5),
            outbox_backoff_base: Duration::from_secs(1),
            outbox_backoff_cap: Duration::from_secs(300),
            outbox_lease: Duration::from_secs(30),
            outbox_poll_interval: Duration::from_secs(1),
            outbox_batch: 32,
        }
    }
}

#[cfg(test)]
mod face_config_tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn flag_defaults_match_the_embedding_defaults() {
        let parsed =
            Config::parse_from(["identity-svc", "--database-url", "sqlite://x.db", "--partners-file", "p.toml"]);
        assert_eq!(parsed.face, FaceArgs::default());
        assert_eq!(parsed.outbox, OutboxArgs::default());
    }

    #[test]
    fn the_threshold_must_lie_in_0_to_1() {
        assert_eq!(parse_threshold("0.8"), Ok(0.8));
        assert!(parse_threshold("1.01").is_err());
        assert!(parse_threshold("NaN").is_err());
        assert!(parse_threshold("x").is_err());
    }
}

/// Where SMS codes go and who confirms real names (webhooks: `https://`, trusted through the
/// system store or --webhook-ca-file; `http://` only on loopback, docs/tls.md).
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct VerificationArgs {
    /// SMS gateway webhook: POST of JSON {"phone", "code", "message", "purpose"}; any 2xx means
    /// accepted. Required unless --dev.
    #[arg(long, env = "MEDINS_SMS_WEBHOOK_URL")]
    pub sms_webhook_url: Option<String>,

    /// With --dev and no SMS webhook: also append each code (`<masked phone> <purpose> <code>`)
    /// to this file, for scripts. Ignored without --dev.
    #[arg(long, env = "MEDINS_DEV_SMS_FILE")]
    pub dev_sms_file: Option<std::path::PathBuf>,

    /// Bearer token sent to the SMS webhook.
    #[arg(long, env = "MEDINS_SMS_WEBHOOK_TOKEN", hide_env_values = true)]
    pub sms_webhook_token: Option<medins_common::webhook::BearerToken>,

    /// Identity authority webhook: POST of JSON {"name", "id_number"}, answering
    /// {"result": "MATCH" | "MISMATCH" | "DENY"}. Required unless --dev.
    #[arg(long, env = "MEDINS_IDENTITY_AUTHORITY_URL")]
    pub identity_authority_url: Option<String>,

    /// Bearer token sent to the identity authority webhook.
    #[arg(long, env = "MEDINS_IDENTITY_AUTHORITY_TOKEN", hide_env_values = true)]
    pub identity_authority_token: Option<medins_common::webhook::BearerToken>,

    /// Deny list of the development identity authority (--dev without
    /// --identity-authority-url): one ID number, or its SHA-256 in hex, per line; read at every
    /// check; a missing file is an empty list.
    #[arg(long, env = "MEDINS_DENY_LIST_FILE")]
    pub deny_list_file: Option<PathBuf>,

    /// Limit of one webhook attempt (connect, send, read the answer).
    #[arg(long, env = "MEDINS_WEBHOOK_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub webhook_timeout: Duration,

    /// Attempts per webhook call (timeouts, connection errors and 5xx are retried with backoff).
    #[arg(long, env = "MEDINS_WEBHOOK_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub webhook_attempts: u32,
}

impl Default for VerificationArgs {
    fn default() -> Self {
        Self {
            sms_webhook_url: None,
            sms_webhook_token: None,
            dev_sms_file: None,
            identity_authority_url: None,
            identity_authority_token: None,
            deny_list_file: None,
            webhook_timeout: Duration::from_secs(3),
            webhook_attempts: 3,
        }
    }
}

impl VerificationArgs {
    /// Timeouts and retries of both webhooks.
    pub fn webhook_options(&self) -> medins_common::webhook::WebhookOptions {
        medins_common::webhook::WebhookOptions {
            attempt_timeout: self.webhook_timeout,
            max_attempts: self.webhook_attempts,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod verification_config_tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn flag_defaults_match_the_embedding_defaults_and_tokens_stay_hidden() {
        let base = ["identity-svc", "--database-url", "sqlite://x.db", "--partners-file", "p.toml"];
        let parsed = Config::parse_from(base);
        assert_eq!(parsed.verification, VerificationArgs::default());
        assert!(!parsed.dev);
        let parsed = Config::parse_from(base.into_iter().chain([
            "--dev",
            "--sms-webhook-url",
            "http://sms:8080/send",
            "--sms-webhook-token",
            "s3cret",
        ]));
        assert!(parsed.dev);
        assert_eq!(parsed.verification.sms_webhook_token.as_ref().map(|t| t.expose()), Some("s3cret"));
        assert!(!format!("{parsed:?}").contains("s3cret"));
    }
}
