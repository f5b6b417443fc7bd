//! `medins`: runs the whole stack (`medins up`), manages partner keys and migrations.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use medins_common::{
    audit::AuditKeys,
    auth::{CareSite, HospitalLevel, PartnerKind, PartnersFile, RateLimit},
    config::CommonArgs,
    crypto::DataKeys,
    db::Db,
    keyring::SigningKeyRing,
    token::TokenKeyRing,
};
use tokio::net::TcpListener;

/// medins: the online side of the national medical insurance platform.
#[derive(Parser, Debug)]
#[command(name = "medins", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs identity-svc and insurance-svc in one process, with SQLite, dev keys and a partners
    /// file under the data folder (created on first run, with keys printed once).
    Up(UpArgs),
    /// Manages partners and their API keys in a partners file.
    Partner {
        #[command(subcommand)]
        command: PartnerCommand,
    },
    /// Runs pending migrations of both databases, then exits.
    Migrate {
        /// identity-svc database URL.
        #[arg(
            long,
            env = "MEDINS_IDENTITY_DATABASE_URL",
            hide_env_values = true,
            default_value = "sqlite://data/identity.db"
        )]
        identity_database_url: String,
        /// insurance-svc database URL.
        #[arg(
            long,
            env = "MEDINS_INSURANCE_DATABASE_URL",
            hide_env_values = true,
            default_value = "sqlite://data/insurance.db"
        )]
        insurance_database_url: String,
    },
    /// Manages signing keys: identity-svc's person-token keys, insurance-svc's payment-code keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Checks and exports both services' audit logs (README "Audit trail").
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Payment codes for demos.
    Code {
        #[command(subcommand)]
        command: CodeCommand,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Makes a new person-token signing key current and retires the current one. The retired key
    /// stays listed (GetPublicKeys) until its last token has expired, 15 minutes, and is pruned at
    /// a later rotation. Running servers re-read the file within seconds (no restart, no signal).
    Rotate {
        /// Person-token key file.
        #[arg(long, env = "MEDINS_TOKEN_KEYS_FILE", default_value = "data/keys/person-token-keys.toml")]
        token_keys_file: PathBuf,
    },
    /// Makes a new payment-code signing key current and retires the current one. The retired key
    /// stays listed (GetCodeKeys) until its last code has expired (65 s: 60 s lifetime + 5 s
    /// skew). Running insurance-svc replicas re-read the file within seconds.
    RotateCodes {
        /// Payment-code key file.
        #[arg(long, env = "MEDINS_CODE_KEYS_FILE", default_value = "data/keys/code-signing-keys.toml")]
        code_keys_file: PathBuf,
    },
    /// Makes a new audit key current (new rows and checkpoints are sealed with it) and retires
    /// the current one, which stays in the file for verification. Running servers re-read the
    /// file at their next checkpoint.
    RotateAudit {
        /// Audit key file.
        #[arg(long, env = "MEDINS_AUDIT_KEYS_FILE", default_value = "data/keys/audit-keys.toml")]
        audit_keys_file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum CodeCommand {
    /// Prints a payment code (from IssueCode) as a QR symbol in the terminal, for a phone or a
    /// counter scanner to read.
    Show {
        /// The code text (`MI1...`); read from standard input when absent.
        #[arg(long)]
        code: Option<String>,
    },
}

/// The databases and key file the audit commands read.
#[derive(clap::Args, Debug)]
struct AuditSources {
    /// identity-svc database URL.
    #[arg(
        long,
        env = "MEDINS_IDENTITY_DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://data/identity.db"
    )]
    identity_database_url: String,
    /// insurance-svc database URL.
    #[arg(
        long,
        env = "MEDINS_INSURANCE_DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://data/insurance.db"
    )]
    insurance_database_url: String,
    /// Audit key file (every key that sealed the logs; retired keys are kept in it).
    #[arg(long, env = "MEDINS_AUDIT_KEYS_FILE", default_value = "data/keys/audit-keys.toml")]
    audit_keys_file: PathBuf,
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Checks every partition of both services' audit logs against the row MACs and the signed
    /// checkpoints; prints a summary per service, or the first changed, deleted or inserted row
    /// of each damaged partition and exits with status 1.
    Verify(AuditSources),
    /// Writes every signed checkpoint of both services, with the public keys, as JSON
    /// (format `medins-audit-checkpoints/v1`, README "Audit trail") for an outside witness.
    ExportCheckpoints {
        #[command(flatten)]
        sources: AuditSources,
        /// File to write; standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// For a witness: checks that a newer export is a consistent continuation of an older one
    /// (signatures, consistency proofs, nothing the older one showed removed or changed).
    /// Needs no database and no private key.
    CheckConsistency {
        /// The export the witness kept.
        older: PathBuf,
        /// The newer export.
        newer: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct UpArgs {
    /// Folder for databases, keys and the partners file.
    #[arg(long, env = "MEDINS_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// identity-svc listen address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    identity_listen: SocketAddr,
    /// insurance-svc listen address.
    #[arg(long, default_value = "127.0.0.1:50052")]
    insurance_listen: SocketAddr,
    /// identity-svc database URL (default: SQLite in the data folder).
    #[arg(long, env = "MEDINS_IDENTITY_DATABASE_URL", hide_env_values = true)]
    identity_database_url: Option<String>,
    /// insurance-svc database URL (default: SQLite in the data folder).
    #[arg(long, env = "MEDINS_INSURANCE_DATABASE_URL", hide_env_values = true)]
    insurance_database_url: Option<String>,
    /// Serve both services over TLS with a development CA and certificates under
    /// `<data folder>/tls/` (made on first use, reused while valid); the services call each
    /// other over TLS too, each presenting its own client certificate.
    #[arg(long)]
    tls: bool,
    /// Without --tls: allow listening on a non-loopback address in plaintext.
    #[arg(long)]
    insecure_plaintext: bool,
}

#[derive(Subcommand, Debug)]
enum PartnerCommand {
    /// Adds a partner with a new API key, printed once.
    Create {
        /// Partner id (letters, digits, '-', '_').
        #[arg(long)]
        id: String,
        /// Kind: BANK, MINI_PROGRAM, CITY_APP, HOSPITAL, PHARMACY, FACE_PROVIDER, EMPLOYER, OPS, SERVICE.
        #[arg(long)]
        kind: PartnerKind,
        /// Display name (defaults to the id).
        #[arg(long)]
        name: Option<String>,
        /// Scopes, comma-separated (defaults to the kind's).
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
        /// Sustained requests per second.
        #[arg(long, default_value_t = RateLimit::default().per_second)]
        rate: f64,
        /// Burst above the sustained rate.
        #[arg(long, default_value_t = RateLimit::default().burst)]
        burst: u32,
        /// The FACE_PROVIDER partner (id) that decides the face sessions this partner starts
        /// without naming a provider.
        #[arg(long)]
        face_provider: Option<String>,
        /// SMS codes this partner may have sent per China-time day (default: by kind; 5000 for
        /// BANK, MINI_PROGRAM and CITY_APP, 1000 for OPS, 100 for the others).
        #[arg(long)]
        sms_daily_quota: Option<u32>,
        /// An employer code an EMPLOYER partner speaks for (repeatable): it opens EMPLOYEE
        /// accounts, credits contributions, applies for cards and reads ledgers only for these.
        #[arg(long = "employer-code")]
        employer_codes: Vec<String>,
        /// Binds the partner's keys to the client certificate in this PEM file (its public key's
        /// SHA-256): the keys are then accepted only over mutual TLS presenting a certificate with
        /// that key (docs/tls.md).
        #[arg(long)]
        pin_client_cert: Option<PathBuf>,
        /// Binds the partner's keys to client certificates carrying this name (subject common
        /// name, DNS or URI name), issued by the servers' client CA; with --pin-client-cert both
        /// must match.
        #[arg(long)]
        pin_client_subject: Option<String>,
        /// A HOSPITAL's or PHARMACY's six-digit region code, where its care is given (decides
        /// cross-region care and the catalogue its bills are priced in); with --hospital-level.
        /// Without both, its care settles as care in each patient's insured region, UNGRADED.
        #[arg(long, requires = "hospital_level")]
        region_code: Option<String>,
        /// Its grade: LEVEL_1, LEVEL_2, LEVEL_3 or UNGRADED for a HOSPITAL, PHARMACY for a
        /// PHARMACY; with --region-code.
        #[arg(long, requires = "region_code")]
        hospital_level: Option<HospitalLevel>,
        /// Partners file.
        #[arg(long, env = "MEDINS_PARTNERS_FILE", default_value = "data/partners.toml")]
        partners_file: PathBuf,
    },
    /// Sets the employer codes an existing EMPLOYER partner speaks for (replacing its list; none
    /// given: it speaks for no employer), then asks a running `medins up` to reload.
    EmployerCodes {
        /// Partner id.
        id: String,
        /// An employer code (repeatable).
        #[arg(long = "employer-code")]
        employer_codes: Vec<String>,
        /// Partners file.
        #[arg(long, env = "MEDINS_PARTNERS_FILE", default_value = "data/partners.toml")]
        partners_file: PathBuf,
    },
    /// Lists partners (key hints only; keys are never stored).
    List {
        /// Partners file.
        #[arg(long, env = "MEDINS_PARTNERS_FILE", default_value = "data/partners.toml")]
        partners_file: PathBuf,
    },
    /// Revokes every key of a partner, then asks a running `medins up` to reload.
    Revoke {
        /// Partner id.
        id: String,
        /// Partners file.
        #[arg(long, env = "MEDINS_PARTNERS_FILE", default_value = "data/partners.toml")]
        partners_file: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Up(args) => up(args).await,
        Command::Partner { command } => partner(command),
        Command::Keys { command } => keys(command),
        Command::Audit { command } => audit(command).await,
        Command::Code { command: CodeCommand::Show { code } } => show_code(code),
        Command::Migrate { identity_database_url, insurance_database_url } => {
            let _telemetry = medins_common::telemetry::init("medins")?;
            for (name, url, migrations) in [
                ("identity", identity_database_url, identity_svc::store::MIGRATIONS),
                ("insurance", insurance_database_url, insurance_svc::store::MIGRATIONS),
            ] {
                let db = Db::connect(&url, &Default::default())?;
                let applied = db.migrate(migrations).await.with_context(|| format!("{name} migrations"))?;
                println!("{name}: {applied} migration(s) applied");
            }
            Ok(())
        }
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The partner every `medins up` creates for insurance-svc's calls to identity-svc.
const SERVICE_PARTNER_ID: &str = "insurance-svc";

/// The partner every `medins up` creates for identity-svc's outbox calls to insurance-svc.
const IDENTITY_SERVICE_PARTNER_ID: &str = "identity-svc";

/// Demo partners created by the first `medins up`: one per kind, plus ops.
const DEMO_PARTNERS: &[(&str, PartnerKind)] = &[
    ("ops", PartnerKind::Ops),
    ("demo-bank", PartnerKind::Bank),
    ("demo-mini-program", PartnerKind::MiniProgram),
    ("demo-city-app", PartnerKind::CityApp),
    ("demo-hospital", PartnerKind::Hospital),
    ("demo-pharmacy", PartnerKind::Pharmacy),
    ("demo-face-provider", PartnerKind::FaceProvider),
    ("demo-employer", PartnerKind::Employer),
    ("demo-terminal", PartnerKind::Terminal),
];

/// Where the demo hospital and pharmacy give care (README walkthrough): the pharmacy in the
/// walkthrough person's own district of Beijing, the hospital a level-3 hospital in Shanghai,
/// where the person files cross-region care.
fn demo_care_site(kind: PartnerKind) -> Option<(&'static str, HospitalLevel)> {
    match kind {
        PartnerKind::Pharmacy => Some(("110105", HospitalLevel::Pharmacy)),
        PartnerKind::Hospital => Some(("310104", HospitalLevel::Level3)),
        _ => None,
    }
}

/// The employer code the demo employer speaks for.
const DEMO_EMPLOYER_CODE: &str = "DEMO-EMPLOYER-01";

/// Files of a data folder.
struct DataDir {
    root: PathBuf,
}

impl DataDir {
    fn partners(&self) -> PathBuf {
        self.root.join("partners.toml")
    }
    fn data_keys(&self) -> PathBuf {
        self.root.join("keys").join("identity-data-keys.toml")
    }
    /// insurance-svc's own personal-data keys (card mailing addresses): a leak of one service's
    /// keys does not open the other's data.
    fn insurance_data_keys(&self) -> PathBuf {
        self.root.join("keys").join("insurance-data-keys.toml")
    }
    fn code_keys(&self) -> PathBuf {
        self.root.join("keys").join("code-signing-keys.toml")
    }
    fn audit_keys(&self) -> PathBuf {
        self.root.join("keys").join("audit-keys.toml")
    }
    fn token_keys(&self) -> PathBuf {
        self.root.join("keys").join("person-token-keys.toml")
    }
    fn service_key(&self) -> PathBuf {
        self.root.join("keys").join("insurance-svc.api-key")
    }
    fn identity_service_key(&self) -> PathBuf {
        self.root.join("keys").join("identity-svc.api-key")
    }
    fn dev_keys_env(&self) -> PathBuf {
        self.root.join("dev-keys.env")
    }
    fn pid_file(&self) -> PathBuf {
        self.root.join("medins.pid")
    }
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// Creates what a first run needs; returns whether anything was created.
fn prepare_data_dir(dir: &DataDir) -> anyhow::Result<bool> {
    std::fs::create_dir_all(&dir.root).with_context(|| format!("creating {}", dir.root.display()))?;
    let mut created = false;
    if !dir.data_keys().exists() {
        std::fs::create_dir_all(dir.data_keys().parent().expect("has parent"))?;
        DataKeys::generate().save_new(&dir.data_keys())?;
        println!("generated development personal-data keys: {} (keep secret; never commit)", dir.data_keys().display());
        created = true;
    }
    // Also added to data folders made before insurance-svc encrypted anything.
    if !dir.insurance_data_keys().exists() {
        std::fs::create_dir_all(dir.insurance_data_keys().parent().expect("has parent"))?;
        DataKeys::generate().save_new(&dir.insurance_data_keys())?;
        println!(
            "generated development personal-data keys: {} (keep secret; never commit)",
            dir.insurance_data_keys().display()
        );
        created = true;
    }
    if !dir.token_keys().exists() {
        std::fs::create_dir_all(dir.token_keys().parent().expect("has parent"))?;
        TokenKeyRing::generate(chrono::Utc::now()).save_new(&dir.token_keys())?;
        println!("generated person-token signing keys: {} (keep secret; never commit)", dir.token_keys().display());
        created = true;
    }
    if !dir.audit_keys().exists() {
        std::fs::create_dir_all(dir.audit_keys().parent().expect("has parent"))?;
        AuditKeys::generate_ring().save_new(&dir.audit_keys())?;
        println!(
            "generated audit keys: {} (keep secret, outside database backups; never commit)",
            dir.audit_keys().display()
        );
        created = true;
    }
    if !dir.code_keys().exists() {
        std::fs::create_dir_all(dir.code_keys().parent().expect("has parent"))?;
        SigningKeyRing::generate(insurance_svc::domain::code::CODE_KEY_RING, chrono::Utc::now())
            .save_new(&dir.code_keys())?;
        println!("generated payment-code signing keys: {} (keep secret; never commit)", dir.code_keys().display());
        created = true;
    }
    if !dir.partners().exists() {
        let mut file = PartnersFile::default();
        let now = now_rfc3339();
        let service_key = file
            .add_partner(
                SERVICE_PARTNER_ID,
                "insurance-svc calling identity-svc",
                PartnerKind::Service,
                None,
                RateLimit { per_second: 5000.0, burst: 10000 },
                &now,
            )
            .map_err(anyhow::Error::msg)?;
        write_private(&dir.service_key(), service_key.expose())?;
        let mut env_lines = String::from("# medins dev API keys, shown once by the first `medins up`. Keep secret.\n");
        println!(
            "\nfirst run: created {} with these API keys (shown once; also in {}):",
            dir.partners().display(),
            dir.dev_keys_env().display()
        );
        for (id, kind) in DEMO_PARTNERS {
            let key = file.add_partner(id, id, *kind, None, RateLimit::default(), &now).map_err(anyhow::Error::msg)?;
            if *kind == PartnerKind::Employer {
                // The walkthrough's employer (README) speaks for this one code.
                file.set_employer_codes(id, BTreeSet::from([DEMO_EMPLOYER_CODE.to_owned()]))
                    .map_err(anyhow::Error::msg)?;
            }
            if let Some((region_code, level)) = demo_care_site(*kind) {
                let site = CareSite { region_code: region_code.to_owned(), level };
                file.set_care_site(id, Some(site)).map_err(anyhow::Error::msg)?;
            }
            let variable = format!("MEDINS_{}_KEY", id.trim_start_matches("demo-").replace('-', "_").to_uppercase());
            println!("  {id:<20} {:<13} {}", kind.as_str(), key.expose());
            env_lines.push_str(&format!("export {variable}={}\n", key.expose()));
        }
        println!();
        file.save(&dir.partners())?;
        write_private(&dir.dev_keys_env(), &env_lines)?;
        created = true;
    }
    // identity-svc's SERVICE key at insurance-svc, for the face-outcome outbox; also added to
    // data folders made before the outbox existed.
    if !dir.identity_service_key().exists() {
        let mut file = PartnersFile::load(&dir.partners())?;
        if file.partners.iter().any(|p| p.id == IDENTITY_SERVICE_PARTNER_ID) {
            println!(
                "warning: partner {IDENTITY_SERVICE_PARTNER_ID} exists but {} is missing: face outcomes will not be \
                 delivered to insurance-svc (remove the partner from {} to get a new key)",
                dir.identity_service_key().display(),
                dir.partners().display()
            );
        } else {
            let key = file
                .add_partner(
                    IDENTITY_SERVICE_PARTNER_ID,
                    "identity-svc calling insurance-svc",
                    PartnerKind::Service,
                    None,
                    RateLimit { per_second: 5000.0, burst: 10000 },
                    &now_rfc3339(),
                )
                .map_err(anyhow::Error::msg)?;
            write_private(&dir.identity_service_key(), key.expose())?;
            file.save(&dir.partners())?;
            created = true;
        }
    }
    Ok(created)
}

/// `medins up --tls`: the development CA, the servers' certificate and each service's client
/// certificate under `<data folder>/tls/` (made or renewed as needed; reused while valid).
fn prepare_dev_tls(dir: &DataDir) -> anyhow::Result<medins_common::tls::dev::DevTlsDir> {
    let tls = medins_common::tls::dev::DevTlsDir { root: dir.root.join("tls") };
    let written = tls.ensure(&[SERVICE_PARTNER_ID, IDENTITY_SERVICE_PARTNER_ID])?;
    for path in &written {
        println!("generated development TLS file {} (never commit the keys beside it)", path.display());
    }
    Ok(tls)
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let _telemetry = medins_common::telemetry::init("medins")?;
    let dir = DataDir { root: args.data_dir.clone() };
    prepare_data_dir(&dir)?;
    let service_key = std::fs::read_to_string(dir.service_key())
        .with_context(|| format!("reading {}", dir.service_key().display()))?
        .trim()
        .to_owned();

    let identity_url =
        args.identity_database_url.unwrap_or_else(|| format!("sqlite://{}", dir.root.join("identity.db").display()));
    let insurance_url =
        args.insurance_database_url.unwrap_or_else(|| format!("sqlite://{}", dir.root.join("insurance.db").display()));

    let identity_listener =
        TcpListener::bind(args.identity_listen).await.with_context(|| format!("binding {}", args.identity_listen))?;
    let insurance_listener =
        TcpListener::bind(args.insurance_listen).await.with_context(|| format!("binding {}", args.insurance_listen))?;
    let identity_addr = identity_listener.local_addr()?;
    let insurance_addr = insurance_listener.local_addr()?;

    let tls = if args.tls { Some(prepare_dev_tls(&dir)?) } else { None };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let common = |url: String, service: &str| {
        let mut common = CommonArgs::new(url, dir.partners());
        common.audit_keys_file = Some(dir.audit_keys());
        common.insecure_plaintext = args.insecure_plaintext;
        if let Some(tls) = &tls {
            // Mutual TLS is offered (optional): partners pinned to a certificate of the dev CA
            // must present it; the services present theirs to each other.
            common.tls_cert_file = Some(tls.server_cert());
            common.tls_key_file = Some(tls.server_key());
            common.tls_client_ca_file = Some(tls.ca_cert());
            common.peer_ca_file = Some(tls.ca_cert());
            common.peer_cert_file = Some(tls.client_cert(service));
            common.peer_key_file = Some(tls.client_key(service));
        }
        common
    };
    let mut identity_config =
        identity_svc::Config::new(common(identity_url, IDENTITY_SERVICE_PARTNER_ID), Some(dir.data_keys()))
            .with_token_keys_file(dir.token_keys());
    // identity-svc's outbox delivers face outcomes to the insurance-svc bound here.
    if let Ok(key) = std::fs::read_to_string(dir.identity_service_key()) {
        identity_config.outbox.insurance_url = Some(format!("{scheme}://{insurance_addr}"));
        identity_config.outbox.insurance_api_key = Some(key.trim().to_owned());
    }
    // A local stack: SMS codes are logged (not sent) and real names are checked by the
    // development stand-in with the deny list in the data folder.
    identity_config.dev = true;
    identity_config.verification.deny_list_file = Some(dir.root.join("deny-list.txt"));
    identity_config.verification.dev_sms_file = Some(dir.root.join("dev-sms.log"));
    let insurance_config = insurance_svc::Config::new(
        common(insurance_url, SERVICE_PARTNER_ID),
        format!("{scheme}://{identity_addr}"),
        service_key,
    )
    .with_code_keys_file(dir.code_keys())
    .with_data_keys_file(dir.insurance_data_keys())
    .with_document_store(dir.root.join("documents").display().to_string());
    let identity = identity_svc::IdentityService::build(identity_config, Default::default()).await?;
    let insurance = insurance_svc::InsuranceService::build(insurance_config, Default::default()).await?;
    identity.partners().reload_on_sighup()?;
    insurance.partners().reload_on_sighup()?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let identity_task = tokio::spawn(identity.serve(identity_listener, wait(stop_rx.clone())));
    let insurance_task = tokio::spawn(insurance.serve(insurance_listener, wait(stop_rx)));

    std::fs::write(dir.pid_file(), std::process::id().to_string())?;
    println!("identity-svc   listening on {identity_addr}");
    println!("insurance-svc  listening on {insurance_addr}");
    println!("data folder    {}", dir.root.display());
    if let Some(tls) = &tls {
        let ca = tls.ca_cert();
        println!("TLS            both services (development CA {}; mutual TLS offered)", ca.display());
        println!("  grpcurl -cacert {} localhost:{} list", ca.display(), identity_addr.port());
        println!(
            "  grpcurl -cacert {} -H \"authorization: Bearer $MEDINS_HOSPITAL_KEY\" localhost:{} \\\n    \
             medins.identity.v1.PersonTokenService/GetPublicKeys",
            ca.display(),
            identity_addr.port()
        );
        println!("  grpcurl -cacert {} localhost:{} list", ca.display(), insurance_addr.port());
    }
    println!(
        "dev mode       SMS codes are logged, not sent; real names checked against {} (not a real authority)",
        dir.root.join("deny-list.txt").display()
    );
    // Listening before "ready" is printed: whoever reads that line may stop us at once.
    let shutdown = medins_common::server::shutdown_signal();
    println!(
        "ready in {} ms (Ctrl-C to stop; `kill -HUP {}` reloads the partners file)",
        started.elapsed().as_millis(),
        std::process::id()
    );

    shutdown.await;
    let _ = stop_tx.send(true);
    let (identity_result, insurance_result) = tokio::join!(identity_task, insurance_task);
    let _ = std::fs::remove_file(dir.pid_file());
    identity_result??;
    insurance_result??;
    Ok(())
}

fn partner(command: PartnerCommand) -> anyhow::Result<()> {
    match command {
        PartnerCommand::Create {
            id,
            kind,
            name,
            scopes,
            rate,
            burst,
            face_provider,
            sms_daily_quota,
            employer_codes,
            pin_client_cert,
            pin_client_subject,
            region_code,
            hospital_level,
            partners_file,
        } => {
            let pin = client_certificate_pin(pin_client_cert.as_deref(), pin_client_subject)?;
            let mut file =
                if partners_file.exists() { PartnersFile::load(&partners_file)? } else { PartnersFile::default() };
            let scopes = scopes.map(|list| list.into_iter().map(|s| s.trim().to_owned()).collect::<BTreeSet<_>>());
            let key = file
                .add_partner(
                    &id,
                    name.as_deref().unwrap_or(&id),
                    kind,
                    scopes,
                    RateLimit { per_second: rate, burst },
                    &now_rfc3339(),
                )
                .map_err(anyhow::Error::msg)?;
            file.set_face_provider(&id, face_provider.as_deref()).map_err(anyhow::Error::msg)?;
            file.set_sms_daily_quota(&id, sms_daily_quota).map_err(anyhow::Error::msg)?;
            file.set_employer_codes(&id, employer_codes.into_iter().collect()).map_err(anyhow::Error::msg)?;
            let site = region_code.zip(hospital_level).map(|(region_code, level)| CareSite { region_code, level });
            file.set_care_site(&id, site).map_err(anyhow::Error::msg)?;
            let pinned = pin.is_some();
            file.set_client_certificate(&id, pin).map_err(anyhow::Error::msg)?;
            file.save(&partners_file)?;
            println!("created partner {id} ({kind}); its API key, shown only now:\n{}", key.expose());
            if pinned {
                println!("its keys are accepted only over mutual TLS with its pinned client certificate");
            }
            signal_reload(&partners_file);
            Ok(())
        }
        PartnerCommand::List { partners_file } => {
            let file = PartnersFile::load(&partners_file)?;
            println!("{:<22} {:<14} {:<6} {:<10} SCOPES", "ID", "KIND", "KEYS", "RATE/S");
            for partner in &file.partners {
                let live = partner.keys.iter().filter(|k| k.revoked_at.is_none()).count();
                println!(
                    "{:<22} {:<14} {:<6} {:<10} {}",
                    partner.id,
                    partner.kind.as_str(),
                    format!("{live}/{}", partner.keys.len()),
                    partner.rate_limit.per_second,
                    partner.scopes.iter().cloned().collect::<Vec<_>>().join(",")
                );
            }
            Ok(())
        }
        PartnerCommand::EmployerCodes { id, employer_codes, partners_file } => {
            let mut file = PartnersFile::load(&partners_file)?;
            let codes: BTreeSet<String> = employer_codes.into_iter().collect();
            file.set_employer_codes(&id, codes.clone()).map_err(anyhow::Error::msg)?;
            file.save(&partners_file)?;
            println!("{id} speaks for employer codes: {}", codes.into_iter().collect::<Vec<_>>().join(","));
            signal_reload(&partners_file);
            Ok(())
        }
        PartnerCommand::Revoke { id, partners_file } => {
            let mut file = PartnersFile::load(&partners_file)?;
            let revoked = file.revoke_partner(&id, &now_rfc3339()).map_err(anyhow::Error::msg)?;
            if revoked == 0 {
                bail!("partner {id} has no live key");
            }
            file.save(&partners_file)?;
            println!("revoked {revoked} key(s) of {id}");
            signal_reload(&partners_file);
            Ok(())
        }
    }
}

/// The pin of `medins partner create --pin-client-cert/--pin-client-subject`, if asked for.
fn client_certificate_pin(
    cert_file: Option<&Path>,
    subject: Option<String>,
) -> anyhow::Result<Option<medins_common::auth::CertificatePin>> {
    if cert_file.is_none() && subject.is_none() {
        return Ok(None);
    }
    let spki_sha256 = match cert_file {
        Some(path) => Some(hex::encode(medins_common::tls::ClientCertificate::from_pem_file(path)?.spki_sha256)),
        None => None,
    };
    Ok(Some(medins_common::auth::CertificatePin { spki_sha256, subject }))
}

/// Sends SIGHUP to a `medins up` running on the same data folder, so the change applies now.
fn signal_reload(partners_file: &Path) {
    let pid_file = partners_file.with_file_name("medins.pid");
    let Ok(pid) = std::fs::read_to_string(&pid_file) else {
        println!("no running `medins up` found; servers pick the change up at start or on SIGHUP");
        return;
    };
    let pid = pid.trim();
    match std::process::Command::new("kill").args(["-HUP", pid]).status() {
        Ok(status) if status.success() => println!("asked the running medins (pid {pid}) to reload"),
        _ => println!("could not signal pid {pid}; send SIGHUP to the servers to apply the change"),
    }
}

fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::RotateCodes { code_keys_file } => {
            let mut ring = SigningKeyRing::load(insurance_svc::domain::code::CODE_KEY_RING, &code_keys_file)?;
            let now = chrono::Utc::now();
            let retired = ring.current_kid().to_owned();
            let current = ring.rotate(now);
            ring.save(&code_keys_file)?;
            println!("payment-code signing key is now {current}; {retired} retired (listed until its codes expire)");
            let listed: Vec<String> = ring.listed_keys(now).into_iter().map(|key| key.kid).collect();
            println!("listed keys: {}", listed.join(", "));
            println!("running servers pick the new key up within seconds (they watch {})", code_keys_file.display());
            Ok(())
        }
        KeysCommand::RotateAudit { audit_keys_file } => {
            let mut ring = SigningKeyRing::load(medins_common::audit::keys::AUDIT_KEY_RING, &audit_keys_file)?;
            let retired = ring.current_kid().to_owned();
            let current = ring.rotate(chrono::Utc::now());
            ring.save(&audit_keys_file)?;
            println!("audit key is now {current}; {retired} retired (kept to verify what it sealed)");
            Ok(())
        }
        KeysCommand::Rotate { token_keys_file } => {
            let mut ring = TokenKeyRing::load(&token_keys_file)?;
            let now = chrono::Utc::now();
            let retired = ring.current_kid().to_owned();
            let current = ring.rotate(now);
            ring.save(&token_keys_file)?;
            println!("person-token signing key is now {current}; {retired} retired (listed until its tokens expire)");
            let listed: Vec<String> = ring.listed_keys(now).into_iter().map(|key| key.kid).collect();
            println!("listed keys: {}", listed.join(", "));
            println!("running servers pick the new key up within seconds (they watch {})", token_keys_file.display());
            Ok(())
        }
    }
}

async fn audit(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify(sources) => {
            let (keys, dbs) = open_audit_sources(&sources)?;
            let mut damaged = false;
            for (service, db) in dbs {
                let report = medins_common::audit::verify_log(&db, service, &keys)
                    .await
                    .with_context(|| format!("reading {service}'s audit log"))?;
                print!("{}", audit_report_text(service, &report));
                damaged |= !report.faults.is_empty();
            }
            if damaged {
                std::process::exit(1);
            }
            Ok(())
        }
        AuditCommand::ExportCheckpoints { sources, out } => {
            let (keys, dbs) = open_audit_sources(&sources)?;
            let mut checkpoints = Vec::new();
            for (service, db) in dbs {
                checkpoints.extend(medins_common::audit::load_checkpoints(&db, service).await?);
            }
            let export = medins_common::audit::witness::CheckpointExport {
                format: medins_common::audit::witness::EXPORT_FORMAT.to_owned(),
                exported_at: now_rfc3339(),
                keys: keys.public_keys(),
                checkpoints,
            };
            let text = serde_json::to_string_pretty(&export)? + "\n";
            match out {
                Some(path) => {
                    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote {} checkpoints to {}", export.checkpoints.len(), path.display());
                }
                None => print!("{text}"),
            }
            Ok(())
        }
        AuditCommand::CheckConsistency { older, newer } => {
            let read = |path: &Path| -> anyhow::Result<medins_common::audit::witness::CheckpointExport> {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                serde_json::from_str(&text).with_context(|| format!("{} is not a checkpoint export", path.display()))
            };
            match medins_common::audit::witness::check_consistency(&read(&older)?, &read(&newer)?) {
                Ok(summary) => {
                    println!(
                        "consistent: {} partitions, {} checkpoints, {} new since the older export{}",
                        summary.partitions,
                        summary.checkpoints,
                        summary.new_checkpoints,
                        if summary.new_keys.is_empty() {
                            String::new()
                        } else {
                            format!("; new keys: {}", summary.new_keys.join(", "))
                        }
                    );
                    Ok(())
                }
                Err(problem) => {
                    println!("NOT consistent: {problem}");
                    std::process::exit(1);
                }
            }
        }
    }
}

/// The audit key file and both databases, refusing a missing SQLite file (opening it would
/// create an empty database that verifies).
fn open_audit_sources(
    sources: &AuditSources,
) -> anyhow::Result<(medins_common::audit::AuditKeys, Vec<(&'static str, Db)>)> {
    let keys = AuditKeys::load(&sources.audit_keys_file)
        .with_context(|| format!("loading the audit key file {}", sources.audit_keys_file.display()))?;
    let mut dbs = Vec::new();
    for (service, url) in
        [("identity-svc", &sources.identity_database_url), ("insurance-svc", &sources.insurance_database_url)]
    {
        if let medins_common::db::DatabaseUrl::Sqlite(path) = medins_common::db::DatabaseUrl::parse(url)?
            && !path.exists()
        {
            bail!("no {service} database at {}", path.display());
        }
        dbs.push((service, Db::connect(url, &Default::default())?));
    }
    Ok((keys, dbs))
}

/// What `medins audit verify` prints for one service.
pub fn audit_report_text(service: &str, report: &medins_common::audit::LogReport) -> String {
    let mut text = format!(
        "{service}: {} rows in {} partitions, {} checkpoints, {} rows not yet checkpointed (MAC-sealed): {}\n",
        report.rows,
        report.partitions,
        report.checkpoints,
        report.unsealed_rows,
        if report.faults.is_empty() { "intact" } else { "DAMAGED" }
    );
    for fault in &report.faults {
        text.push_str(&format!("{service}: {fault}\n"));
    }
    text
}

/// `medins code show`: a code as a terminal QR symbol.
fn show_code(code: Option<String>) -> anyhow::Result<()> {
    let text = match code {
        Some(code) => code,
        None => {
            let mut input = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)?;
            input
        }
    };
    let text = text.trim();
    if !text.starts_with(insurance_svc::domain::code::CODE_PREFIX)
        || text.len() != insurance_svc::domain::code::CODE_TEXT_LEN
    {
        bail!(
            "not a medins payment code (expected {} characters starting with MI1)",
            insurance_svc::domain::code::CODE_TEXT_LEN
        );
    }
    let symbol =
        insurance_svc::domain::qr::qr_terminal(text).map_err(|e| anyhow::anyhow!("cannot render the code: {e:?}"))?;
    println!("{symbol}");
    Ok(())
}
