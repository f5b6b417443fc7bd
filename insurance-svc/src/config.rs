//! Configuration of insurance-svc (flags and environment; `insurance-svc --help`).

use std::{net::SocketAddr, time::Duration};

use medins_common::config::{CommonArgs, parse_duration};

use crate::clients::identity::IdentityClientOptions;

/// insurance-svc: what a person may do with their insurance.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "insurance-svc",
    version,
    about = "medins insurance-svc: accounts, vouchers, codes, settlement, family, cards"
)]
pub struct Config {
    /// Address to listen on (use 0.0.0.0:50052 to accept remote connections).
    #[arg(long, env = "MEDINS_LISTEN", default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,

    /// Settings shared with identity-svc.
    #[command(flatten)]
    pub common: CommonArgs,

    /// identity-svc base URL.
    #[arg(long, env = "MEDINS_IDENTITY_URL", default_value = "http://127.0.0.1:50051")]
    pub identity_url: String,

    /// API key of insurance-svc's SERVICE partner entry at identity-svc.
    #[arg(long, env = "MEDINS_IDENTITY_API_KEY", hide_env_values = true)]
    pub identity_api_key: String,

    /// Deadline of each call to identity-svc.
    #[arg(long, env = "MEDINS_IDENTITY_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub identity_timeout: Duration,

    /// Attempts per call to identity-svc while it answers UNAVAILABLE.
    #[arg(long, env = "MEDINS_IDENTITY_ATTEMPTS", default_value_t = 3)]
    pub identity_attempts: u32,
}

impl Config {
    /// A configuration with defaults (embedding, tests).
    pub fn new(common: CommonArgs, identity_url: impl Into<String>, identity_api_key: impl Into<String>) -> Self {
        Self {
            listen: ([127, 0, 0, 1], 50052).into(),
            common,
            identity_url: identity_url.into(),
            identity_api_key: identity_api_key.into(),
            identity_timeout: Duration::from_secs(3),
            identity_attempts: 3,
        }
    }

    /// How to reach identity-svc.
    pub fn identity_client_options(&self) -> IdentityClientOptions {
        IdentityClientOptions {
            url: self.identity_url.clone(),
            api_key: self.identity_api_key.clone(),
            timeout: self.identity_timeout,
            attempts: self.identity_attempts,
        }
    }
}
