//! Configuration of insurance-svc (flags and environment; `insurance-svc --help`).

use std::{net::SocketAddr, time::Duration};

use medins_common::config::{CommonArgs, parse_duration};

use medins_common::peer::PeerOptions;

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

    /// Settlement policy (TOML): deductible, reimbursement ratio (basis points) and annual cap
    /// in cents for every scheme x category, e.g. `[EMPLOYEE.OUTPATIENT]` with
    /// `deductible_cents`, `reimbursement_ratio_bp`, `annual_cap_cents`, and `[FAMILY_AID]`
    /// listing, per scheme, the relationships its individual accounts may pay for (e.g.
    /// `EMPLOYEE = ["SPOUSE", "PARENT", "CHILD"]`, `RESIDENT = []`). Checked at start. Default:
    /// the built-in policy (`insurance_svc::domain::settlement::DEFAULT_POLICY_TOML`).
    #[arg(long, env = "MEDINS_POLICY_FILE")]
    pub policy_file: Option<std::path::PathBuf>,

    /// The catalogue folder: `national.toml` and one `<region code>.toml` per region that
    /// publishes its own items (TOML: `version = "..."` and `[[items]]` with `code`, `name`,
    /// `kind` DRUG|TREATMENT|CONSUMABLE, `class` A|B|C, `unit`, optional `price_cap_cents`).
    /// Checked at start. Default: the built-in sample (`insurance_svc::domain::catalog`).
    #[arg(long, env = "MEDINS_CATALOG_DIR")]
    pub catalog_dir: Option<std::path::PathBuf>,

    /// Payment-code signing key file (TOML, mode 0600: Ed25519 keys `ck-...` with creation and
    /// retirement times), created by `medins up` and rotated with `medins keys rotate-codes`.
    /// Every replica must read the same file. Re-read whenever it changes (no signal needed).
    #[arg(long, env = "MEDINS_CODE_KEYS_FILE", required = true)]
    pub code_keys_file: Option<std::path::PathBuf>,

    /// Personal-data key file (TOML: versioned AES-256 data keys and a separate blind-index key;
    /// the format of identity-svc's, but insurance-svc's own keys), encrypting card mailing
    /// addresses at rest and wrapping each document's own key. `medins up` creates `data/keys/insurance-data-keys.toml`. The
    /// environment variable MEDINS_DATA_KEYS, holding the file's text, takes precedence.
    #[arg(long, env = "MEDINS_DATA_KEYS_FILE")]
    pub data_keys_file: Option<std::path::PathBuf>,

    /// Where document bytes are kept (metadata is in the database): `file:///absolute/folder`
    /// (created if missing; `medins up` uses `<data folder>/documents`) or `s3://bucket[/prefix]`
    /// for an S3-compatible store (needs the `s3` build feature; endpoint and credentials from
    /// AWS_ENDPOINT, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP).
    /// Every replica must use the same store.
    #[arg(long, env = "MEDINS_DOCUMENT_STORE", required = true)]
    pub document_store: Option<String>,

    /// How often the code key file is checked for changes.
    #[arg(long, env = "MEDINS_CODE_KEYS_CHECK_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub code_keys_check_interval: Duration,

    /// How often identity-svc's person-token public keys are fetched (GetPublicKeys).
    #[arg(long, env = "MEDINS_PERSON_TOKEN_KEYS_REFRESH", default_value = "60s", value_parser = parse_duration)]
    pub person_token_keys_refresh: Duration,

    /// The relationship-verification authority (household registration check) that proves a
    /// family binding of a member under 16 before it becomes ACTIVE: a JSON webhook (README
    /// "Family bindings"). Unset: the development stand-in, which confirms only the households
    /// in `--relationship-households-file`; every other such binding waits for an operator's
    /// review.
    #[arg(long, env = "MEDINS_RELATIONSHIP_AUTHORITY_URL")]
    pub relationship_authority_url: Option<String>,

    /// Bearer token for the relationship authority webhook.
    #[arg(long, env = "MEDINS_RELATIONSHIP_AUTHORITY_TOKEN", hide_env_values = true)]
    pub relationship_authority_token: Option<medins_common::webhook::BearerToken>,

    /// Timeout of each attempt to reach the relationship authority.
    #[arg(long, env = "MEDINS_RELATIONSHIP_AUTHORITY_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub relationship_authority_timeout: Duration,

    /// Development only, without `--relationship-authority-url`: a text file of households the
    /// stand-in confirms, one `OWNER_ID_NUMBER MEMBER_ID_NUMBER RELATIONSHIP` per line.
    #[arg(long, env = "MEDINS_RELATIONSHIP_HOUSEHOLDS_FILE")]
    pub relationship_households_file: Option<std::path::PathBuf>,

    /// How long an operator has to review a family binding the authority could not confirm;
    /// afterwards it expires (and frees the owner's place).
    #[arg(long, env = "MEDINS_FAMILY_REVIEW_PERIOD", default_value = "168h", value_parser = parse_duration)]
    pub family_review_period: Duration,

    /// How often bindings past their review deadline are expired.
    #[arg(long, env = "MEDINS_FAMILY_REVIEW_SWEEP_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub family_review_sweep_interval: Duration,

    /// A token signed with an unknown key triggers a fetch of the keys, at most once per this.
    #[arg(long, env = "MEDINS_PERSON_TOKEN_KEYS_MIN_REFRESH", default_value = "3s", value_parser = parse_duration)]
    pub person_token_keys_min_refresh: Duration,

    /// Memory budget, in MiB, of image decoding, PDF parsing and rendering (estimated from each
    /// file's header before decoding; an image estimated beyond it is refused IMAGE_TOO_LARGE).
    #[arg(long, env = "MEDINS_DECODE_BUDGET_MIB", default_value_t = 128, value_parser = clap::value_parser!(u64).range(16..=4096))]
    pub decode_budget_mib: u64,
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
            policy_file: None,
            catalog_dir: None,
            code_keys_file: None,
            data_keys_file: None,
            document_store: None,
            code_keys_check_interval: Duration::from_secs(2),
            person_token_keys_refresh: Duration::from_secs(60),
            person_token_keys_min_refresh: Duration::from_secs(3),
            decode_budget_mib: crate::heavy::DEFAULT_BUDGET_BYTES / (1024 * 1024),
            relationship_authority_url: None,
            relationship_authority_token: None,
            relationship_authority_timeout: Duration::from_secs(3),
            relationship_households_file: None,
            family_review_period: Duration::from_secs(7 * 24 * 3600),
            family_review_sweep_interval: Duration::from_secs(60),
        }
    }

    /// The decoding budget in bytes.
    pub fn decode_budget_bytes(&self) -> u64 {
        self.decode_budget_mib * 1024 * 1024
    }

    /// The same configuration with a code key file.
    pub fn with_code_keys_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.code_keys_file = Some(path.into());
        self
    }

    /// The same configuration with a personal-data key file.
    pub fn with_data_keys_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.data_keys_file = Some(path.into());
        self
    }

    /// The same configuration with a document store (`file:///folder`, `s3://bucket`).
    pub fn with_document_store(mut self, url: impl Into<String>) -> Self {
        self.document_store = Some(url.into());
        self
    }

    /// The settlement policy table: the `--policy-file`, or the built-in one.
    pub fn policy_table(
        &self,
    ) -> Result<crate::domain::settlement::PolicyTable, crate::domain::settlement::PolicyError> {
        match &self.policy_file {
            Some(path) => crate::domain::settlement::PolicyTable::load(path),
            None => Ok(crate::domain::settlement::PolicyTable::builtin()),
        }
    }

    /// The catalogue: the `--catalog-dir`, or the built-in one.
    pub fn catalog(&self) -> Result<crate::domain::catalog::Catalog, crate::domain::catalog::CatalogError> {
        match &self.catalog_dir {
            Some(dir) => crate::domain::catalog::Catalog::load_dir(dir),
            None => Ok(crate::domain::catalog::Catalog::builtin()),
        }
    }

    /// How to reach identity-svc.
    pub fn identity_client_options(&self) -> IdentityClientOptions {
        IdentityClientOptions {
            peer: PeerOptions {
                url: self.identity_url.clone(),
                api_key: self.identity_api_key.clone(),
                timeout: self.identity_timeout,
                transport: self.common.peer_transport(),
            },
            attempts: self.identity_attempts,
        }
    }
}
