//! What the bench measures: either a local stack it starts itself (each service in its own
//! child process of this executable, so each one's peak memory and CPU time can be read from
//! `/proc/<pid>`), or services already running on this machine.

use std::{
    io::Read as _,
    net::{SocketAddr, TcpListener as StdTcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use medins_common::{
    auth::{PartnerKind, PartnersFile, RateLimit},
    crypto::DataKeys,
    keyring::SigningKeyRing,
    token::TokenKeyRing,
};

use super::sms::SmsGateway;

/// API keys the scenarios call with.
#[derive(Debug, Clone)]
pub struct Keys {
    /// OPS: reads persons (get-person), credits the seeded accounts.
    pub ops: String,
    /// BANK: registers persons, links them, gets their tokens, issues their codes.
    pub bank: String,
    /// HOSPITAL: verifies codes and settles visits.
    pub hospital: String,
    /// FACE_PROVIDER: submits face outcomes.
    pub face_provider: String,
}

/// A measured process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Process {
    /// Its pid.
    pub pid: u32,
}

/// Services under test.
pub struct Target {
    /// identity-svc.
    pub identity_addr: SocketAddr,
    /// insurance-svc.
    pub insurance_addr: SocketAddr,
    /// Keys to call with.
    pub keys: Keys,
    /// Where identity-svc sends SMS codes, when the bench can read them.
    pub sms: Option<SmsGateway>,
    /// identity-svc's process, when known.
    pub identity_process: Option<Process>,
    /// insurance-svc's process, when known.
    pub insurance_process: Option<Process>,
    /// "SQLite", "PostgreSQL" or "existing services".
    pub backend: String,
    /// TLS to the services, when they serve it.
    pub client_tls: Option<tonic::transport::ClientTlsConfig>,
    /// Kept alive (and stopped on drop) for a local stack.
    _local: Option<LocalStack>,
}

/// Flags of `--target local`.
pub struct LocalOptions {
    /// identity-svc database URL (default: SQLite in the temp folder).
    pub identity_database_url: Option<String>,
    /// insurance-svc database URL (default: SQLite in the temp folder).
    pub insurance_database_url: Option<String>,
    /// Keep the temp folder (databases, keys, service logs) after the run.
    pub keep_data: bool,
    /// Database connections per service (default: the services' own).
    pub db_pool_size: Option<u32>,
    /// Serve TLS with this development CA's server certificate.
    pub tls: Option<medins_common::tls::dev::DevTlsDir>,
}

/// Flags of `--target remote`.
pub struct RemoteOptions {
    /// identity-svc address.
    pub identity_addr: SocketAddr,
    /// insurance-svc address.
    pub insurance_addr: SocketAddr,
    /// Keys.
    pub keys: Keys,
    /// Where to receive identity-svc's SMS webhook posts.
    pub sms_webhook_listen: Option<SocketAddr>,
    /// identity-svc's pid on this machine (for its memory and CPU figures).
    pub identity_pid: Option<u32>,
    /// insurance-svc's pid.
    pub insurance_pid: Option<u32>,
    /// The services serve TLS with certificates of this CA (PEM).
    pub tls_ca_file: Option<PathBuf>,
}

fn require_loopback(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() {
        bail!("{what} {addr}: medins-bench only sends traffic to this machine (127.0.0.1 / ::1)");
    }
    Ok(())
}

impl Target {
    /// Services already running on this machine.
    pub async fn remote(options: RemoteOptions) -> anyhow::Result<Target> {
        require_loopback(options.identity_addr, "--identity-addr")?;
        require_loopback(options.insurance_addr, "--insurance-addr")?;
        let sms = match options.sms_webhook_listen {
            Some(addr) => {
                require_loopback(addr, "--sms-webhook-listen")?;
                let gateway = SmsGateway::start(addr).await?;
                eprintln!("SMS webhook listening: start identity-svc with --sms-webhook-url {}", gateway.url());
                Some(gateway)
            }
            None => None,
        };
        Ok(Target {
            identity_addr: options.identity_addr,
            insurance_addr: options.insurance_addr,
            keys: options.keys,
            sms,
            identity_process: options.identity_pid.map(|pid| Process { pid }),
            insurance_process: options.insurance_pid.map(|pid| Process { pid }),
            backend: "existing services".into(),
            client_tls: options.tls_ca_file.as_deref().map(super::load::client_tls).transpose()?,
            _local: None,
        })
    }

    /// Starts identity-svc and insurance-svc as child processes on free 127.0.0.1 ports, on a
    /// fresh temp folder (keys, partners file, SQLite databases unless URLs are given), with SMS
    /// codes posted to a webhook of this process.
    pub async fn local(options: LocalOptions) -> anyhow::Result<Target> {
        let dir = tempfile::Builder::new().prefix("medins-bench-").tempdir().context("creating a temp folder")?;
        let root = dir.path().to_owned();
        let now = chrono::Utc::now();
        // Rate limits far above what one machine can send: the bench measures the services, not
        // the per-partner limiter's refusals.
        let unlimited = RateLimit { per_second: 1_000_000.0, burst: 1_000_000 };
        let mut partners = PartnersFile::default();
        let mut add = |id: &str, kind: PartnerKind| -> anyhow::Result<String> {
            let key = partners
                .add_partner(id, id, kind, None, unlimited, &now.to_rfc3339())
                .map_err(anyhow::Error::msg)?
                .expose()
                .to_owned();
            // Likewise the daily SMS quota: seeding sends two codes per person.
            partners.set_sms_daily_quota(id, Some(u32::MAX)).map_err(anyhow::Error::msg)?;
            Ok(key)
        };
        let keys = Keys {
            ops: add("bench-ops", PartnerKind::Ops)?,
            bank: add("bench-bank", PartnerKind::Bank)?,
            hospital: add("bench-hospital", PartnerKind::Hospital)?,
            face_provider: add("bench-face-provider", PartnerKind::FaceProvider)?,
        };
        let insurance_to_identity = add("insurance-svc", PartnerKind::Service)?;
        let identity_to_insurance = add("identity-svc", PartnerKind::Service)?;
        let partners_file = root.join("partners.toml");
        partners.save(&partners_file)?;
        let data_keys = root.join("identity-data-keys.toml");
        DataKeys::generate().save_new(&data_keys)?;
        let insurance_data_keys = root.join("insurance-data-keys.toml");
        DataKeys::generate().save_new(&insurance_data_keys)?;
        let token_keys = root.join("person-token-keys.toml");
        TokenKeyRing::generate(now).save_new(&token_keys)?;
        let audit_keys = root.join("audit-keys.toml");
        medins_common::audit::AuditKeys::generate_ring().save_new(&audit_keys)?;
        let code_keys = root.join("code-signing-keys.toml");
        SigningKeyRing::generate(insurance_svc::domain::code::CODE_KEY_RING, now).save_new(&code_keys)?;

        let sms = SmsGateway::start(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let [identity_addr, insurance_addr] = free_ports::<2>()?;
        let sqlite = |name: &str| format!("sqlite://{}", root.join(name).display());
        let identity_url = options.identity_database_url.unwrap_or_else(|| sqlite("identity.db"));
        let insurance_url = options.insurance_database_url.unwrap_or_else(|| sqlite("insurance.db"));
        let backend = match (identity_url.starts_with("postgres"), insurance_url.starts_with("postgres")) {
            (true, true) => "PostgreSQL",
            (false, false) => "SQLite",
            _ => "mixed SQLite/PostgreSQL",
        };

        let client_tls = options.tls.as_ref().map(|tls| super::load::client_tls(&tls.ca_cert())).transpose()?;
        let scheme = if options.tls.is_some() { "https" } else { "http" };
        // With TLS both serve the development certificate and trust its CA for each other.
        let with_tls = |mut service_args: Vec<String>| {
            if let Some(tls) = &options.tls {
                service_args.extend([
                    "--tls-cert-file".into(),
                    tls.server_cert().display().to_string(),
                    "--tls-key-file".into(),
                    tls.server_key().display().to_string(),
                    "--peer-ca-file".into(),
                    tls.ca_cert().display().to_string(),
                ]);
            }
            service_args
        };
        let mut stack = LocalStack {
            root: root.clone(),
            dir: Some(dir),
            keep: options.keep_data,
            children: Vec::new(),
            client_tls: client_tls.clone(),
        };
        let partners_arg = partners_file.display().to_string();
        let pool_args: Vec<String> =
            options.db_pool_size.map(|size| vec!["--db-pool-size".into(), size.to_string()]).unwrap_or_default();
        // The same settings `medins up` gives the services, but SMS codes go to our webhook.
        stack.children.push(ChildService::spawn(
            "identity-svc",
            &root,
            &with_tls(
                vec![
                    "identity".into(),
                    "--listen".into(),
                    identity_addr.to_string(),
                    "--database-url".into(),
                    identity_url,
                    "--partners-file".into(),
                    partners_arg.clone(),
                    "--audit-keys-file".into(),
                    audit_keys.display().to_string(),
                    "--data-keys-file".into(),
                    data_keys.display().to_string(),
                    "--token-keys-file".into(),
                    token_keys.display().to_string(),
                    "--dev".into(),
                    "--sms-webhook-url".into(),
                    sms.url(),
                    "--insurance-url".into(),
                    format!("{scheme}://{insurance_addr}"),
                ]
                .into_iter()
                .chain(pool_args.clone())
                .collect(),
            ),
            &[("MEDINS_INSURANCE_API_KEY", &identity_to_insurance)],
        )?);
        stack.children.push(ChildService::spawn(
            "insurance-svc",
            &root,
            &with_tls(
                vec![
                    "insurance".into(),
                    "--listen".into(),
                    insurance_addr.to_string(),
                    "--database-url".into(),
                    insurance_url,
                    "--partners-file".into(),
                    partners_arg,
                    "--audit-keys-file".into(),
                    audit_keys.display().to_string(),
                    "--identity-url".into(),
                    format!("{scheme}://{identity_addr}"),
                    "--code-keys-file".into(),
                    code_keys.display().to_string(),
                    "--data-keys-file".into(),
                    insurance_data_keys.display().to_string(),
                    "--document-store".into(),
                    root.join("documents").display().to_string(),
                ]
                .into_iter()
                .chain(pool_args)
                .collect(),
            ),
            &[("MEDINS_IDENTITY_API_KEY", &insurance_to_identity)],
        )?);
        for (index, addr) in [identity_addr, insurance_addr].into_iter().enumerate() {
            stack.wait_until_serving(index, addr).await?;
        }
        let identity_process = Some(Process { pid: stack.children[0].child.id() });
        let insurance_process = Some(Process { pid: stack.children[1].child.id() });
        eprintln!(
            "local stack ({backend}): identity-svc pid {} on {identity_addr}, insurance-svc pid {} on {insurance_addr}, \
             folder {}",
            stack.children[0].child.id(),
            stack.children[1].child.id(),
            root.display()
        );
        Ok(Target {
            identity_addr,
            insurance_addr,
            keys,
            sms: Some(sms),
            identity_process,
            insurance_process,
            backend: backend.into(),
            client_tls,
            _local: Some(stack),
        })
    }
}

/// A free 127.0.0.1 port (bound, then released for the child to bind).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let [addr] = free_ports::<1>()?;
    Ok(addr)
}

/// `N` distinct free 127.0.0.1 ports: all held until all are chosen, since a port released
/// before the next is asked for can be handed out again (both services once got the same one).
pub fn free_ports<const N: usize>() -> anyhow::Result<[SocketAddr; N]> {
    let listeners = (0..N)
        .map(|_| StdTcpListener::bind("127.0.0.1:0").context("finding a free port"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let addrs = listeners.iter().map(|listener| listener.local_addr()).collect::<Result<Vec<_>, _>>()?;
    Ok(addrs.try_into().expect("one address per listener"))
}

/// Child processes of a local stack; stopped (and the folder removed unless kept) on drop.
struct LocalStack {
    root: PathBuf,
    dir: Option<tempfile::TempDir>,
    keep: bool,
    children: Vec<ChildService>,
    client_tls: Option<tonic::transport::ClientTlsConfig>,
}

impl LocalStack {
    async fn wait_until_serving(&mut self, index: usize, addr: SocketAddr) -> anyhow::Result<()> {
        let started = Instant::now();
        let channel =
            super::load::endpoint(addr, self.client_tls.as_ref())?.timeout(Duration::from_secs(2)).connect_lazy();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        loop {
            let child = &mut self.children[index];
            if let Some(status) = child.child.try_wait()? {
                bail!("{} exited at start ({status}); its log:\n{}", child.name, child.log_tail());
            }
            let serving = health
                .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
                .await
                .map(|r| {
                    r.into_inner().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                })
                .unwrap_or(false);
            if serving {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("{} did not become SERVING within 60 s; its log:\n{}", child.name, child.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        for child in &mut self.children {
            child.stop();
        }
        if self.keep {
            if let Some(dir) = self.dir.take() {
                let _ = dir.keep();
            }
            eprintln!("kept the stack's folder (databases, keys, service logs): {}", self.root.display());
        }
    }
}

/// One service process: `medins-bench service <which> <flags>`, its log in the stack folder.
struct ChildService {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl ChildService {
    fn spawn(name: &'static str, root: &Path, args: &[String], env: &[(&str, &str)]) -> anyhow::Result<ChildService> {
        let log = root.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let exe = std::env::current_exe().context("locating the medins-bench executable")?;
        let mut command = Command::new(exe);
        command
            .arg("service")
            .args(args)
            // The child stops when this pipe closes: when the bench stops or dies.
            .stdin(Stdio::piped())
            .stdout(file.try_clone()?)
            .stderr(file);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().with_context(|| format!("starting {name}"))?;
        Ok(ChildService { name, child, log })
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Closes its stdin (graceful stop), waits a little, then kills it.
    fn stop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
