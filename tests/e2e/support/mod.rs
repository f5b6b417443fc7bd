//! The end-to-end harness: both services in-process on 127.0.0.1:0 over real gRPC, on a fresh
//! SQLite folder, or on fresh PostgreSQL databases when `MEDINS_TEST_POSTGRES_URL` is set.
//!
//! Every log line the suite writes, and every span it exports, is scanned for the personal data
//! tests seeded (see [`sensitive`]); a stack refuses to shut down cleanly if any leaked.

pub mod cards;
pub mod documents;
pub mod family;
pub mod privacy;
pub mod replicas;
pub mod settlement;
pub mod sms;
pub mod unmasking;
pub mod vouchers;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{Datelike, NaiveDate};
use identity_svc::IdentityService;
use insurance_svc::InsuranceService;
use medins_common::{
    auth::{PartnerKind, PartnersFile, RateLimit},
    clock::ManualClock,
    config::CommonArgs,
    crypto::DataKeys,
    db::Db,
    telemetry::inject_context,
    token::TokenKeyRing,
};
use medins_proto::{
    identity::v1::person_service_client::PersonServiceClient,
    insurance::v1::account_service_client::AccountServiceClient,
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tonic::{
    Request, Status,
    metadata::AsciiMetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

/// API keys of the partners every stack has, one per kind.
#[derive(Clone, Debug)]
pub struct Keys {
    pub ops: String,
    pub bank: String,
    pub mini_program: String,
    pub hospital: String,
    pub pharmacy: String,
    pub face_provider: String,
    pub employer: String,
    pub service: String,
    /// identity-svc's SERVICE key at insurance-svc (its outbox delivers with it).
    pub identity_service: String,
}

/// Adds the API key, an optional idempotency key, and the current trace context.
#[derive(Clone)]
pub struct CallerInterceptor {
    authorization: Option<AsciiMetadataValue>,
}

impl Interceptor for CallerInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.authorization {
            request.metadata_mut().insert("authorization", value.clone());
        }
        inject_context(request.metadata_mut());
        Ok(request)
    }
}

pub type Intercepted = InterceptedService<Channel, CallerInterceptor>;

/// Options of a stack.
#[derive(Clone, Debug)]
pub struct StackOptions {
    /// How often the database probe behind health runs.
    pub health_check_interval: Duration,
    /// NOT_SERVING time before the listener closes at shutdown.
    pub shutdown_grace: Duration,
    /// One more partner (id, kind with its default scopes, rate limit); its key is
    /// [`Stack::extra_key`].
    pub extra_partner: Option<(String, PartnerKind, RateLimit)>,
    /// Start insurance-svc with the stack. When false it is built (migrated) and its address is
    /// bound but nobody answers there (calls hang until their deadline) until
    /// [`Stack::start_insurance`].
    pub start_insurance: bool,
    /// identity-svc's outbox call deadline (its lease is 4 times this).
    pub outbox_timeout: Duration,
    /// identity-svc's identity authority; default: the development stand-in reading
    /// [`Stack::deny_list`].
    pub identity_authority: Option<Arc<dyn identity_svc::authority::IdentityAuthority>>,
    /// Serve both services over TLS with mutual TLS offered ([`StackTls`]), the services calling
    /// each other over it.
    pub tls: bool,
    /// identity-svc sends SMS codes through this webhook (URL, CA file it trusts) instead of
    /// into [`Stack::sms`].
    pub sms_webhook: Option<(String, PathBuf)>,
}

/// The TLS material of a stack started with [`StackOptions::tls`]: a development CA, the
/// servers' certificate (files watched by both servers) and the services' client certificates.
pub struct StackTls {
    pub ca: medins_common::tls::dev::DevCa,
    pub ca_file: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl StackTls {
    fn create(dir: &std::path::Path) -> StackTls {
        let ca = medins_common::tls::dev::DevCa::generate().expect("dev CA");
        let tls = StackTls {
            ca_file: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            ca,
        };
        std::fs::write(&tls.ca_file, tls.ca.cert_pem()).expect("write CA");
        tls.issue_server().write(&tls.server_cert, &tls.server_key).expect("write server certificate");
        for service in ["insurance-svc", "identity-svc"] {
            let (cert, key) = Self::client_files(dir, service);
            tls.ca.issue_client(service).expect("client certificate").write(&cert, &key).expect("write");
        }
        tls
    }

    /// A new server certificate for 127.0.0.1 and localhost from the stack's CA.
    pub fn issue_server(&self) -> medins_common::tls::dev::Issued {
        self.ca.issue_server(&["localhost".into(), "127.0.0.1".into()]).expect("server certificate")
    }

    fn client_files(dir: &std::path::Path, id: &str) -> (PathBuf, PathBuf) {
        (dir.join(format!("{id}-client.pem")), dir.join(format!("{id}-client-key.pem")))
    }

    fn configure(&self, common: &mut CommonArgs, service: &str) {
        let dir = self.ca_file.parent().expect("folder");
        common.tls_cert_file = Some(self.server_cert.clone());
        common.tls_key_file = Some(self.server_key.clone());
        common.tls_client_ca_file = Some(self.ca_file.clone());
        common.tls_reload_interval = Duration::from_millis(50);
        common.peer_ca_file = Some(self.ca_file.clone());
        let (cert, key) = Self::client_files(dir, service);
        common.peer_cert_file = Some(cert);
        common.peer_key_file = Some(key);
    }
}

/// A TLS channel to a local server trusting `ca_pem`, presenting `identity` (certificate and
/// key PEM) when given.
pub fn tls_channel(addr: std::net::SocketAddr, ca_pem: &str, identity: Option<(&str, &str)>) -> Channel {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some((cert, key)) = identity {
        config = config.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(config)
        .expect("tls config")
        .connect_lazy()
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            health_check_interval: Duration::from_millis(100),
            shutdown_grace: Duration::from_millis(50),
            extra_partner: None,
            start_insurance: true,
            outbox_timeout: Duration::from_millis(500),
            identity_authority: None,
            tls: false,
            sms_webhook: None,
        }
    }
}

/// Both services, running.
pub struct Stack {
    pub identity_addr: std::net::SocketAddr,
    pub insurance_addr: std::net::SocketAddr,
    pub keys: Keys,
    /// The key of `StackOptions::extra_partner`, if one was asked for.
    pub extra_key: Option<String>,
    pub clock: ManualClock,
    pub identity_db: Db,
    pub insurance_db: Db,
    pub partners_file: PathBuf,
    /// identity-svc's person-token key file (rotate it to test key rotation).
    pub token_keys_file: PathBuf,
    pub identity_partners: medins_common::auth::Partners,
    pub insurance_partners: medins_common::auth::Partners,
    pub databases: TestDatabases,
    /// Codes identity-svc sent: `stack.sms.last_code(phone)`.
    pub sms: sms::SmsInbox,
    /// Deny list of the development identity authority (one ID number per line; absent: empty).
    pub deny_list: PathBuf,
    /// TLS material, when the stack serves TLS.
    pub tls: Option<StackTls>,
    identity_dependencies: identity_svc::Dependencies,
    identity_stop: watch::Sender<bool>,
    insurance_stop: watch::Sender<bool>,
    identity_task: Option<JoinHandle<anyhow::Result<()>>>,
    insurance_task: Option<JoinHandle<anyhow::Result<()>>>,
    /// identity-svc's configuration, to start it again on the same database.
    identity_config: identity_svc::Config,
    /// insurance-svc's configuration, to start more replicas on the same database.
    insurance_config: insurance_svc::Config,
    /// insurance-svc built on its bound listener but not started (`StackOptions::start_insurance`).
    unstarted_insurance: Option<(InsuranceService, TcpListener)>,
    _dir: tempfile::TempDir,
}

/// Where a stack's data lives.
pub enum TestDatabases {
    Sqlite { identity: PathBuf, insurance: PathBuf },
    Postgres { admin_url: String, identity: String, insurance: String },
}

impl TestDatabases {
    fn create(dir: &std::path::Path) -> TestDatabases {
        match std::env::var("MEDINS_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty()) {
            None => TestDatabases::Sqlite { identity: dir.join("identity.db"), insurance: dir.join("insurance.db") },
            Some(admin_url) => {
                use diesel::{Connection, RunQueryDsl};
                let mut admin =
                    diesel::PgConnection::establish(&admin_url).expect("connect to MEDINS_TEST_POSTGRES_URL");
                static NEXT: AtomicU64 = AtomicU64::new(0);
                let stem = format!("medins_t{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
                let (identity, insurance) = (format!("{stem}_identity"), format!("{stem}_insurance"));
                for name in [&identity, &insurance] {
                    diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut admin).expect("create database");
                }
                TestDatabases::Postgres { admin_url, identity, insurance }
            }
        }
    }

    fn urls(&self) -> (String, String) {
        match self {
            TestDatabases::Sqlite { identity, insurance } => {
                (format!("sqlite://{}", identity.display()), format!("sqlite://{}", insurance.display()))
            }
            TestDatabases::Postgres { admin_url, identity, insurance } => {
                (database_url(admin_url, identity), database_url(admin_url, insurance))
            }
        }
    }

    /// Makes the identity database unreachable: drops the PostgreSQL database (closing its
    /// connections) or deletes the SQLite file.
    pub fn break_identity_database(&self) {
        match self {
            TestDatabases::Sqlite { identity, .. } => std::fs::remove_file(identity).expect("remove sqlite file"),
            TestDatabases::Postgres { admin_url, identity, .. } => drop_database(admin_url, identity),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, TestDatabases::Postgres { .. })
    }
}

/// `database` on the server of `admin_url`, with its query (sslmode, sslrootcert) kept.
fn database_url(admin_url: &str, database: &str) -> String {
    medins_common::db::DatabaseUrl::parse(admin_url)
        .and_then(|url| url.with_database(database))
        .expect("MEDINS_TEST_POSTGRES_URL is a postgres:// URL")
        .expose()
}

fn drop_database(admin_url: &str, name: &str) {
    use diesel::{Connection, RunQueryDsl};
    if let Ok(mut admin) = diesel::PgConnection::establish(admin_url) {
        let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin);
    }
}

impl Drop for TestDatabases {
    fn drop(&mut self) {
        if let TestDatabases::Postgres { admin_url, identity, insurance } = self {
            drop_database(admin_url, identity);
            drop_database(admin_url, insurance);
        }
    }
}

fn add(file: &mut PartnersFile, id: &str, kind: PartnerKind) -> String {
    file.add_partner(id, id, kind, None, RateLimit { per_second: 100_000.0, burst: 100_000 }, "2026-11-23T00:00:00Z")
        .expect("add partner")
        .expose()
        .to_owned()
}

impl Stack {
    /// Starts both services with default options.
    pub async fn start() -> Stack {
        Self::start_with(StackOptions::default()).await
    }

    /// Starts both services.
    pub async fn start_with(options: StackOptions) -> Stack {
        privacy::install();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut file = PartnersFile::default();
        let keys = Keys {
            ops: add(&mut file, "ops", PartnerKind::Ops),
            bank: add(&mut file, "bank", PartnerKind::Bank),
            mini_program: add(&mut file, "mini-program", PartnerKind::MiniProgram),
            hospital: add(&mut file, "hospital", PartnerKind::Hospital),
            pharmacy: add(&mut file, "pharmacy", PartnerKind::Pharmacy),
            face_provider: add(&mut file, "face-provider", PartnerKind::FaceProvider),
            employer: add(&mut file, "employer", PartnerKind::Employer),
            service: add(&mut file, "insurance-svc", PartnerKind::Service),
            identity_service: add(&mut file, "identity-svc", PartnerKind::Service),
        };
        // The stack's employer speaks for these codes (docs/architecture.md#trust-model);
        // "OTHER-CO" is nobody's here.
        file.set_employer_codes("employer", ["ACME-01", "BULK-1"].map(str::to_owned).into()).expect("employer codes");
        let extra_key = options.extra_partner.as_ref().map(|(id, kind, rate_limit)| {
            file.add_partner(id, id, *kind, None, *rate_limit, "2026-11-23T00:00:00Z")
                .expect("add extra partner")
                .expose()
                .to_owned()
        });
        let partners_file = dir.path().join("partners.toml");
        file.save(&partners_file).expect("save partners");
        let keys_file = dir.path().join("data-keys.toml");
        DataKeys::generate().save_new(&keys_file).expect("save data keys");
        // insurance-svc has keys of its own, as `medins up` gives it.
        let insurance_keys_file = dir.path().join("insurance-data-keys.toml");
        DataKeys::generate().save_new(&insurance_keys_file).expect("save insurance data keys");
        let token_keys_file = dir.path().join("person-token-keys.toml");
        TokenKeyRing::generate(chrono::Utc::now()).save_new(&token_keys_file).expect("save person-token keys");

        // Both services seal their audit logs with keys outside the databases, as `medins up`.
        let audit_keys_file = dir.path().join("audit-keys.toml");
        medins_common::audit::AuditKeys::generate_ring().save_new(&audit_keys_file).expect("save audit keys");

        let databases = TestDatabases::create(dir.path());
        let (identity_url, insurance_url) = databases.urls();
        let clock = ManualClock::new(chrono::Utc::now());
        let sms = sms::SmsInbox::default();
        let deny_list = dir.path().join("deny-list.txt");
        let identity_dependencies = identity_svc::Dependencies {
            clock: Arc::new(clock.clone()),
            sms_sender: options.sms_webhook.is_none().then(|| Arc::new(sms.sender.clone()) as _),
            identity_authority: Some(options.identity_authority.clone().unwrap_or_else(|| {
                Arc::new(identity_svc::authority::DevIdentityAuthority::new(Some(deny_list.clone())))
            })),
        };

        let tls = options.tls.then(|| StackTls::create(dir.path()));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let common = |url: String, service: &str| {
            let mut common = CommonArgs::new(url, partners_file.clone());
            if let Some(tls) = &tls {
                tls.configure(&mut common, service);
            }
            common.health_check_interval = options.health_check_interval;
            common.shutdown_grace = options.shutdown_grace;
            common.drain_timeout = Duration::from_secs(5);
            common.db_timeout = Duration::from_secs(2);
            common.audit_keys_file = Some(audit_keys_file.clone());
            // Tests seal when they choose (a second writer's `checkpoint_now`), and at shutdown.
            common.audit_checkpoint_interval = Duration::from_secs(3600);
            common
        };

        let identity_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let insurance_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let identity_addr = identity_listener.local_addr().unwrap();
        let insurance_addr = insurance_listener.local_addr().unwrap();

        let identity_config = {
            let mut config = identity_svc::Config::new(common(identity_url, "identity-svc"), Some(keys_file))
                .with_token_keys_file(token_keys_file.clone());
            // Rotations in tests are picked up within a few ticks.
            config.tokens.token_keys_check_interval = Duration::from_millis(50);
            face_and_outbox_settings(&mut config, insurance_addr, &keys, &options);
            config.outbox.insurance_url = Some(format!("{scheme}://{insurance_addr}"));
            if let Some((url, ca_file)) = &options.sms_webhook {
                config.verification.sms_webhook_url = Some(url.clone());
                config.common.webhook_ca_file = Some(ca_file.clone());
            }
            config
        };
        let identity = IdentityService::build(identity_config.clone(), identity_dependencies.clone())
            .await
            .expect("build identity-svc");
        let insurance_config = vouchers::insurance_config(
            insurance_svc::Config::new(
                common(insurance_url, "insurance-svc"),
                format!("{scheme}://{identity_addr}"),
                keys.service.clone(),
            )
            .with_data_keys_file(insurance_keys_file)
            .with_document_store(documents::store_url(dir.path())),
            dir.path(),
        );
        let insurance = InsuranceService::build(
            insurance_config.clone(),
            insurance_svc::Dependencies { clock: Arc::new(clock.clone()) },
        )
        .await
        .expect("build insurance-svc");

        let identity_db = identity.db().clone();
        let insurance_db = insurance.db().clone();
        let identity_partners = identity.partners().clone();
        let insurance_partners = insurance.partners().clone();
        let (identity_stop, identity_rx) = watch::channel(false);
        let (insurance_stop, insurance_rx) = watch::channel(false);
        let identity_task = tokio::spawn(identity.serve(identity_listener, stopped(identity_rx)));
        let (insurance_task, unstarted_insurance) = if options.start_insurance {
            (Some(tokio::spawn(insurance.serve(insurance_listener, stopped(insurance_rx)))), None)
        } else {
            (None, Some((insurance, insurance_listener)))
        };

        let stack = Stack {
            identity_addr,
            insurance_addr,
            keys,
            extra_key,
            clock,
            identity_db,
            insurance_db,
            partners_file,
            token_keys_file,
            identity_partners,
            insurance_partners,
            databases,
            sms,
            deny_list,
            tls,
            identity_dependencies,
            identity_stop,
            insurance_stop,
            identity_task: Some(identity_task),
            insurance_task,
            identity_config,
            insurance_config,
            unstarted_insurance,
            _dir: dir,
        };
        stack.wait_until_serving().await;
        stack
    }

    async fn wait_until_serving(&self) {
        let identity = self.identity_task.is_some().then_some(self.identity_addr);
        let insurance = self.insurance_task.is_some().then_some(self.insurance_addr);
        for addr in [identity, insurance].into_iter().flatten() {
            let mut health = tonic_health::pb::health_client::HealthClient::new(self.channel_to(addr));
            for attempt in 0.. {
                let status = health
                    .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
                    .await
                    .map(|r| r.into_inner().status)
                    .ok();
                if status == Some(tonic_health::pb::health_check_response::ServingStatus::Serving as i32) {
                    break;
                }
                assert!(attempt < 200, "service at {addr} never became SERVING");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// identity-svc's configuration and dependencies, to build another one (tests of start-up
    /// checks).
    pub fn identity_setup(&self) -> (identity_svc::Config, identity_svc::Dependencies) {
        (self.identity_config.clone(), self.identity_dependencies.clone())
    }

    /// insurance-svc's configuration.
    pub fn insurance_setup(&self) -> insurance_svc::Config {
        self.insurance_config.clone()
    }

    /// A channel to identity-svc.
    pub fn identity_channel(&self) -> Channel {
        self.channel_to(self.identity_addr)
    }

    /// A channel to insurance-svc.
    pub fn insurance_channel(&self) -> Channel {
        self.channel_to(self.insurance_addr)
    }

    /// A channel to a server of this stack: TLS without a client certificate when the stack
    /// serves TLS.
    pub fn channel_to(&self, addr: std::net::SocketAddr) -> Channel {
        match &self.tls {
            Some(tls) => tls_channel(addr, tls.ca.cert_pem(), None),
            None => channel(addr),
        }
    }

    /// identity-svc persons, as the partner holding `key` (None: no key at all).
    pub fn persons(&self, key: Option<&str>) -> PersonServiceClient<Intercepted> {
        PersonServiceClient::with_interceptor(self.identity_channel(), interceptor(key))
    }

    /// identity-svc SMS codes, as the partner holding `key`.
    pub fn sms_codes(
        &self,
        key: Option<&str>,
    ) -> medins_proto::identity::v1::sms_service_client::SmsServiceClient<Intercepted> {
        medins_proto::identity::v1::sms_service_client::SmsServiceClient::with_interceptor(
            self.identity_channel(),
            interceptor(key),
        )
    }

    /// identity-svc partner links, as the partner holding `key`.
    pub fn links(
        &self,
        key: Option<&str>,
    ) -> medins_proto::identity::v1::partner_link_service_client::PartnerLinkServiceClient<Intercepted> {
        medins_proto::identity::v1::partner_link_service_client::PartnerLinkServiceClient::with_interceptor(
            self.identity_channel(),
            interceptor(key),
        )
    }

    /// identity-svc person tokens, as the partner holding `key`.
    pub fn person_tokens(
        &self,
        key: Option<&str>,
    ) -> medins_proto::identity::v1::person_token_service_client::PersonTokenServiceClient<Intercepted> {
        medins_proto::identity::v1::person_token_service_client::PersonTokenServiceClient::with_interceptor(
            self.identity_channel(),
            interceptor(key),
        )
    }

    /// identity-svc access history, as the partner holding `key`.
    pub fn access_history(
        &self,
        key: Option<&str>,
    ) -> medins_proto::identity::v1::access_history_service_client::AccessHistoryServiceClient<Intercepted> {
        medins_proto::identity::v1::access_history_service_client::AccessHistoryServiceClient::with_interceptor(
            self.identity_channel(),
            interceptor(key),
        )
    }

    /// insurance-svc accounts, as the partner holding `key`.
    pub fn accounts(&self, key: Option<&str>) -> AccountServiceClient<Intercepted> {
        AccountServiceClient::with_interceptor(self.insurance_channel(), interceptor(key))
    }

    /// Asks identity-svc to stop (NOT_SERVING, grace, drain) without waiting.
    pub fn begin_identity_shutdown(&self) {
        let _ = self.identity_stop.send(true);
    }

    /// Waits at most `within` for identity-svc to stop (after [`Stack::begin_identity_shutdown`]);
    /// true if it stopped cleanly in time.
    pub async fn wait_for_identity_to_stop(&mut self, within: Duration) -> bool {
        let Some(task) = self.identity_task.as_mut() else { return true };
        match tokio::time::timeout(within, task).await {
            Ok(result) => {
                self.identity_task = None;
                matches!(result, Ok(Ok(())))
            }
            Err(_) => false,
        }
    }

    /// Stops both services and checks that no personal data reached logs or spans.
    pub async fn shutdown(mut self) {
        let _ = self.identity_stop.send(true);
        let _ = self.insurance_stop.send(true);
        for task in [self.identity_task.take(), self.insurance_task.take()].into_iter().flatten() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server stops within the drain bound")
                .expect("server task")
                .expect("server result");
        }
        privacy::assert_no_leaks();
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// A lazily connected channel to a local server.
pub fn channel(addr: std::net::SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}")).expect("endpoint").connect_lazy()
}

pub fn interceptor(key: Option<&str>) -> CallerInterceptor {
    CallerInterceptor { authorization: key.map(|k| format!("Bearer {k}").parse().expect("ascii key")) }
}

/// A request with an idempotency key.
pub fn with_idempotency_key<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("idempotency-key", key.parse().expect("ascii key"));
    request
}

/// A request carrying a person token (`x-person-token`).
pub fn with_person_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("x-person-token", token.parse().expect("ascii token"));
    request
}

/// The `ErrorInfo.reason` of a status ("" if none).
pub fn reason(status: &Status) -> String {
    medins_common::error::status_reason(status).unwrap_or_default()
}

/// The `BadRequest` field names of a status.
pub fn bad_fields(status: &Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// A fresh person: name, valid ID number and phone, registered as sensitive (they must never
/// appear in logs).
#[derive(Clone, Debug)]
pub struct SeedPerson {
    pub name: String,
    pub id_number: String,
    pub phone: String,
}

static SEQUENCE: AtomicU64 = AtomicU64::new(1);

/// A valid ID number for someone born on `birth` (unique within the run).
pub fn id_number_born(birth: NaiveDate) -> String {
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed) + u64::from(std::process::id()) * 7;
    // Region and sequence vary so numbers stay unique across tests of one run.
    let region = 110101 + (n / 1000 % 50) as u32;
    let sequence = n % 1000;
    let first17 = format!("{region:06}{:04}{:02}{:02}{sequence:03}", birth.year(), birth.month(), birth.day());
    let id = format!("{first17}{}", identity_svc::domain::id_number::check_character(&first17));
    privacy::sensitive(&id);
    id
}

impl SeedPerson {
    /// A person born on `birth`.
    pub fn born(birth: NaiveDate) -> SeedPerson {
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        const SURNAMES: [&str; 8] = ["赵", "钱", "孙", "李", "周", "吴", "郑", "王"];
        const GIVEN: [&str; 8] = ["伟", "芳", "娜", "敏", "静", "磊", "洋", "艳"];
        let name =
            format!("{}{}{}", SURNAMES[(n % 8) as usize], GIVEN[(n / 8 % 8) as usize], GIVEN[(n / 64 % 8) as usize]);
        let phone = format!("139{:08}", (n * 7919 + u64::from(std::process::id())) % 100_000_000);
        let person = SeedPerson { name, id_number: id_number_born(birth), phone };
        privacy::sensitive(&person.name);
        privacy::sensitive(&person.phone);
        person
    }

    /// An adult born in 1985.
    pub fn adult() -> SeedPerson {
        let n = SEQUENCE.load(Ordering::Relaxed);
        SeedPerson::born(NaiveDate::from_ymd_opt(1985, 1 + (n % 12) as u32, 1 + (n % 28) as u32).unwrap())
    }
}

impl Stack {
    /// The stack's data folder (households file, keys).
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Today in China Standard Time by the stack's clock.
    pub fn clock_today(&self) -> NaiveDate {
        use medins_common::clock::Clock;
        self.clock.today()
    }

    /// Rows in an identity-svc table.
    pub async fn count_identity_rows(&self, table: &'static str) -> i64 {
        count_rows(&self.identity_db, table).await
    }

    /// Rows in an insurance-svc table.
    pub async fn count_insurance_rows(&self, table: &'static str) -> i64 {
        count_rows(&self.insurance_db, table).await
    }
}

async fn count_rows(db: &Db, table: &'static str) -> i64 {
    use diesel::{QueryableByName, RunQueryDsl};
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        count: i64,
    }
    db.run(move |conn| {
        diesel::sql_query(format!("SELECT COUNT(*) AS count FROM {table}"))
            .get_result::<Count>(conn)
            .map(|c| c.count)
            .map_err(medins_common::db::DbError::from)
    })
    .await
    .expect("count rows")
}

/// Face sessions and the outbox, with test timings: the sweeper and watch polls every 50 ms,
/// delivery to this stack's insurance-svc with retries from 20 ms capped at 200 ms.
fn face_and_outbox_settings(
    config: &mut identity_svc::Config,
    insurance_addr: std::net::SocketAddr,
    keys: &Keys,
    options: &StackOptions,
) {
    config.face.face_sweep_interval = Duration::from_millis(50);
    config.face.face_watch_poll_interval = Duration::from_millis(50);
    config.outbox.insurance_url = Some(format!("http://{insurance_addr}"));
    config.outbox.insurance_api_key = Some(keys.identity_service.clone());
    config.outbox.outbox_timeout = options.outbox_timeout;
    config.outbox.outbox_lease = options.outbox_timeout * 4;
    config.outbox.outbox_backoff_base = Duration::from_millis(20);
    config.outbox.outbox_backoff_cap = Duration::from_millis(200);
    config.outbox.outbox_poll_interval = Duration::from_millis(50);
}

/// Starting services late, and killing and restarting identity-svc (outbox tests).
impl Stack {
    /// identity-svc face sessions, as the partner holding `key`.
    pub fn faces(
        &self,
        key: Option<&str>,
    ) -> medins_proto::identity::v1::face_verification_service_client::FaceVerificationServiceClient<Intercepted> {
        medins_proto::identity::v1::face_verification_service_client::FaceVerificationServiceClient::with_interceptor(
            self.identity_channel(),
            interceptor(key),
        )
    }

    /// insurance-svc's event receiver, as the partner holding `key`.
    pub fn identity_events(
        &self,
        key: Option<&str>,
    ) -> medins_proto::insurance::v1::identity_event_service_client::IdentityEventServiceClient<Intercepted> {
        medins_proto::insurance::v1::identity_event_service_client::IdentityEventServiceClient::with_interceptor(
            self.insurance_channel(),
            interceptor(key),
        )
    }

    /// Starts insurance-svc on its pre-bound address (after `start_insurance: false`).
    pub async fn start_insurance(&mut self) {
        let (insurance, listener) = self.unstarted_insurance.take().expect("insurance-svc was started already");
        let (stop, rx) = watch::channel(false);
        self.insurance_stop = stop;
        self.insurance_task = Some(tokio::spawn(insurance.serve(listener, stopped(rx))));
        self.wait_until_serving().await;
    }

    /// Kills identity-svc at once, as a crash would: its server, expiry sweeper and outbox
    /// worker stop wherever they are (no drain).
    pub async fn kill_identity(&mut self) {
        let task = self.identity_task.take().expect("identity-svc is running");
        task.abort();
        let _ = task.await;
    }

    /// Starts a new identity-svc on the same database and address (after
    /// [`Stack::kill_identity`]).
    pub async fn restart_identity(&mut self) {
        assert!(self.identity_task.is_none(), "identity-svc is still running");
        let mut listener = None;
        for _ in 0..100 {
            match TcpListener::bind(self.identity_addr).await {
                Ok(bound) => {
                    listener = Some(bound);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let listener = listener.expect("identity-svc's address can be bound again");
        let identity = IdentityService::build(self.identity_config.clone(), self.identity_dependencies.clone())
            .await
            .expect("build identity-svc again");
        let (stop, rx) = watch::channel(false);
        self.identity_stop = stop;
        self.identity_task = Some(tokio::spawn(identity.serve(listener, stopped(rx))));
        self.wait_until_serving().await;
    }
}

/// The audit logs (tests/e2e/audit.rs).
impl Stack {
    /// The audit key file both services seal their logs with.
    pub fn audit_keys_file(&self) -> PathBuf {
        self.identity_config.common.audit_keys_file.clone().expect("tests give the services an audit key file")
    }

    /// The audit keys.
    pub fn audit_keys(&self) -> medins_common::audit::AuditKeys {
        medins_common::audit::AuditKeys::load(&self.audit_keys_file()).expect("audit keys")
    }

    /// A second audit writer on a service's database, standing for another replica.
    pub fn audit_replica(&self, service: &'static str) -> medins_common::audit::AuditStore {
        let db = if service == "identity-svc" { &self.identity_db } else { &self.insurance_db };
        medins_common::audit::AuditStore::new(db.clone(), Arc::new(self.clock.clone()), service, self.audit_keys())
    }
}
