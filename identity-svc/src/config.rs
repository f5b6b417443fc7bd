//! Configuration of identity-svc (flags and environment; `identity-svc --help`).

use std::{net::SocketAddr, path::PathBuf};

use medins_common::config::CommonArgs;

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
}

impl Config {
    /// A configuration with defaults (embedding, tests).
    pub fn new(common: CommonArgs, data_keys_file: Option<PathBuf>) -> Self {
        Self { listen: ([127, 0, 0, 1], 50051).into(), common, data_keys_file }
    }
}
