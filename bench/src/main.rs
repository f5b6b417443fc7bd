//! `medins-bench`: the project's load generator (issue 4 part 6), a binary of its own so that
//! the production `medins` binary carries none of it (issue 16).
//!
//! Every run measures the bare tonic echo server first (and again last), so each scenario is
//! reported as a ratio of the ceiling measured on the same machine, in the same minute, with the
//! same load generator. The services run as child processes of this executable (`--target
//! local`: `medins-bench service identity|insurance`, hidden, runs the code of the `identity-svc`
//! and `insurance-svc` binaries, which it links as libraries, on a fresh temp folder with SQLite
//! or on given PostgreSQL URLs), so each one's peak memory (`VmHWM`, reset per scenario) and CPU
//! time are its own; or they are services already running on this machine (`--target remote`).
//! Only 127.0.0.1 traffic. See docs/benchmarks.md.

pub mod load;
pub mod procfs;
pub mod report;
pub mod scenarios;
pub mod seed;
pub mod serve;
pub mod sms;
pub mod target;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use medins_common::config::parse_duration;
use tonic::transport::Channel;

use self::{
    load::{LoadResult, Phase, Workload, connect_channels, run_phase},
    report::{CpuUse, Report, ScenarioReport},
    scenarios::{EchoLoad, GetPersonLoad, IssueCodeLoad, Scenario, SettleLoad, VerifyCodeLoad},
    seed::{Insured, Seeder},
    target::{Keys, LocalOptions, Process, RemoteOptions, Target},
};
use serve::ServiceArgs;

/// medins-bench: throughput and latency of the medins hot paths against a bare echo server
/// measured in the same run (docs/benchmarks.md).
#[derive(clap::Parser, Debug)]
#[command(name = "medins-bench", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(flatten)]
    bench: Box<BenchArgs>,
    #[command(subcommand)]
    internal: Option<Internal>,
}

#[derive(clap::Subcommand, Debug)]
enum Internal {
    /// Internal: one service (or the echo server) as a child process of the bench.
    #[command(hide = true)]
    Service(ServiceArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = <Cli as clap::Parser>::parse();
    match cli.internal {
        Some(Internal::Service(args)) => serve::run(args).await,
        None => run(*cli.bench).await,
    }
}

/// How long a code verifies after it was issued, minus a margin: a verify-code window ends
/// before the first of its codes expires.
const CODE_USABLE_FOR: Duration = Duration::from_secs(55);

/// Where the services under test are.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// Start identity-svc and insurance-svc as child processes on a fresh temp folder.
    Local,
    /// Services already running on this machine (--identity-addr, --insurance-addr, keys).
    Remote,
}

/// Where the echo server runs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoPlacement {
    /// In the bench process, on its runtime (its CPU time counts as the bench's).
    InProcess,
    /// In a child process, like the services (its CPU time and memory are reported apart).
    Child,
}

/// Flags of `medins-bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Scenarios to run, in order (default: all). `echo` is always measured first and, when
    /// other scenarios run, again last; ratios are to the mean of the two.
    #[arg(value_enum)]
    pub scenarios: Vec<Scenario>,

    /// HTTP/2 connections from the load generator to the server under test.
    #[arg(long, default_value_t = 4)]
    pub channels: usize,

    /// Calls in flight in total (spread over the channels), each task sending its next call when
    /// the previous one is answered.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,

    /// Measured window per scenario (no call starts after it).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Warm-up per scenario before the window (not measured).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Most calls per phase (warm-up or window), whatever the time; also caps the codes and
    /// visits made for verify-code and settle.
    #[arg(long, default_value_t = 5_000_000)]
    pub max_requests: u64,

    /// Client-side deadline of every call.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Persons seeded through the API (GetPerson, IssueCode, VerifyCode and Settle go
    /// round-robin over them).
    #[arg(long, default_value_t = 256)]
    pub persons: usize,

    /// Bytes the echo scenario sends (and gets back).
    #[arg(long, default_value_t = 128)]
    pub echo_payload_bytes: usize,

    /// Where the echo server runs: in its own process by default, like the services (on this
    /// 2-CPU machine that measured a higher ceiling than an echo sharing the load generator's
    /// runtime, so ratios are the more conservative).
    #[arg(long, value_enum, default_value = "child")]
    pub echo_server: EchoPlacement,

    /// Print the report as JSON instead of tables (progress goes to standard error either way).
    #[arg(long)]
    pub json: bool,

    /// Also write the JSON report to this file.
    #[arg(long)]
    pub json_file: Option<std::path::PathBuf>,

    /// Where the services under test are.
    #[arg(long, value_enum, default_value = "local")]
    pub target: TargetKind,

    /// --target local: identity-svc database URL (default: SQLite in the temp folder); use an
    /// empty PostgreSQL database to measure PostgreSQL.
    #[arg(long)]
    pub identity_database_url: Option<String>,

    /// --target local: insurance-svc database URL (default: SQLite in the temp folder).
    #[arg(long)]
    pub insurance_database_url: Option<String>,

    /// --target local: keep the temp folder (databases, keys, service logs) after the run.
    #[arg(long)]
    pub keep_data: bool,

    /// --target local: database connections per service (default: the services' own, 16, as
    /// `medins up`). A PostgreSQL server sharing this machine's CPUs does best with about
    /// 2 x its cores + 1 connections per busy service; more only queue inside it
    /// (docs/benchmarks.md).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_pool_size: Option<u32>,

    /// --target remote: identity-svc address (127.0.0.1 only).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub identity_addr: SocketAddr,

    /// --target remote: insurance-svc address (127.0.0.1 only).
    #[arg(long, default_value = "127.0.0.1:50052")]
    pub insurance_addr: SocketAddr,

    /// --target remote: an OPS key.
    #[arg(long, env = "MEDINS_OPS_KEY", hide_env_values = true)]
    pub ops_key: Option<String>,

    /// --target remote: a BANK key.
    #[arg(long, env = "MEDINS_BANK_KEY", hide_env_values = true)]
    pub bank_key: Option<String>,

    /// --target remote: a HOSPITAL key.
    #[arg(long, env = "MEDINS_HOSPITAL_KEY", hide_env_values = true)]
    pub hospital_key: Option<String>,

    /// --target remote: a FACE_PROVIDER key.
    #[arg(long, env = "MEDINS_FACE_PROVIDER_KEY", hide_env_values = true)]
    pub face_provider_key: Option<String>,

    /// --target remote: receive identity-svc's SMS webhook here (start identity-svc with
    /// `--sms-webhook-url http://ADDR/sms`); needed to seed persons with a voucher.
    #[arg(long)]
    pub sms_webhook_listen: Option<SocketAddr>,

    /// Everything over TLS: the echo server and, with --target local, both services (and their
    /// calls to each other) serve TLS with a development CA made in the temp folder. Handshakes
    /// happen when the connections open, before warm-up, so the windows measure TLS records,
    /// not handshakes.
    #[arg(long)]
    pub tls: bool,

    /// --target remote with --tls: the CA certificate (PEM) that issued the services'
    /// certificates (`medins up --tls` makes data/tls/ca.pem).
    #[arg(long, default_value = "data/tls/ca.pem")]
    pub tls_ca_file: std::path::PathBuf,

    /// --target remote: identity-svc's pid, for its peak memory and CPU time.
    #[arg(long)]
    pub identity_pid: Option<u32>,

    /// --target remote: insurance-svc's pid.
    #[arg(long)]
    pub insurance_pid: Option<u32>,
}

impl BenchArgs {
    fn check(&self) -> anyhow::Result<()> {
        if self.concurrency == 0 || self.channels == 0 {
            bail!("--concurrency and --channels must be at least 1");
        }
        if self.channels > self.concurrency {
            bail!("--channels ({}) cannot exceed --concurrency ({})", self.channels, self.concurrency);
        }
        if self.duration.is_zero() || self.max_requests == 0 {
            bail!("--duration and --max-requests must be positive");
        }
        if self.duration > Duration::from_secs(600) || self.warmup > Duration::from_secs(600) {
            bail!("--duration and --warmup are at most 10m");
        }
        if self.scenarios.iter().any(|s| *s != Scenario::Echo) && self.persons == 0 {
            bail!("--persons must be at least 1");
        }
        if self.scenarios.contains(&Scenario::VerifyCode) && self.duration >= CODE_USABLE_FOR {
            bail!(
                "verify-code measures codes issued before the window: --duration must be under 55s (codes live 60 s)"
            );
        }
        Ok(())
    }

    /// The scenarios to run after the first echo.
    fn plan(&self) -> Vec<Scenario> {
        let chosen: Vec<Scenario> = if self.scenarios.is_empty() {
            vec![Scenario::GetPerson, Scenario::IssueCode, Scenario::VerifyCode, Scenario::Settle]
        } else {
            self.scenarios.clone()
        };
        let mut plan = Vec::new();
        for scenario in chosen {
            if scenario != Scenario::Echo && !plan.contains(&scenario) {
                plan.push(scenario);
            }
        }
        plan
    }

    fn remote_keys(&self) -> anyhow::Result<Keys> {
        let need = |key: &Option<String>, flag: &str| {
            key.clone().with_context(|| format!("--target remote needs {flag} (or its MEDINS_*_KEY variable)"))
        };
        Ok(Keys {
            ops: need(&self.ops_key, "--ops-key")?,
            bank: need(&self.bank_key, "--bank-key")?,
            hospital: need(&self.hospital_key, "--hospital-key")?,
            face_provider: need(&self.face_provider_key, "--face-provider-key")?,
        })
    }
}

/// The echo server of this run.
struct EchoServer {
    addr: SocketAddr,
    process: Option<Process>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    child: Option<std::process::Child>,
}

impl EchoServer {
    async fn start(
        placement: EchoPlacement,
        tls: Option<&medins_common::tls::dev::DevTlsDir>,
    ) -> anyhow::Result<EchoServer> {
        let tls_files = tls.map(|files| (files.server_cert(), files.server_key()));
        match placement {
            EchoPlacement::InProcess => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let addr = listener.local_addr()?;
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let tls = tls_files.map(|(cert, key)| medins_common::tls::ServerTlsOptions::new(cert, key));
                tokio::spawn(serve::serve_echo(listener, tls, async move {
                    let _ = stopped.await;
                }));
                Ok(EchoServer { addr, process: None, stop: Some(stop), child: None })
            }
            EchoPlacement::Child => {
                let addr = target::free_port()?;
                let mut args = vec!["service".to_owned(), "echo".into(), addr.to_string()];
                if let Some((cert, key)) = &tls_files {
                    args.extend([cert.display().to_string(), key.display().to_string()]);
                }
                let child = std::process::Command::new(std::env::current_exe()?)
                    .args(&args)
                    .stdin(std::process::Stdio::piped())
                    .spawn()
                    .context("starting the echo server")?;
                let process = Some(Process { pid: child.id() });
                let started = Instant::now();
                while tokio::net::TcpStream::connect(addr).await.is_err() {
                    if started.elapsed() > Duration::from_secs(10) {
                        bail!("the echo server did not listen within 10 s");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(EchoServer { addr, process, stop: None, child: Some(child) })
            }
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Processes whose CPU time and peak memory a scenario reports.
#[derive(Clone, Copy)]
struct Watched {
    identity: Option<Process>,
    insurance: Option<Process>,
    echo: Option<Process>,
}

struct Snapshot {
    at: Instant,
    bench: Option<Duration>,
    identity: Option<Duration>,
    insurance: Option<Duration>,
    echo: Option<Duration>,
    postgres: Duration,
    machine_busy: Option<Duration>,
    rss_reset: bool,
}

impl Watched {
    fn snapshot(&self, reset_peaks: bool) -> Snapshot {
        let mut rss_reset = true;
        if reset_peaks {
            for process in [self.identity, self.insurance, self.echo].into_iter().flatten() {
                rss_reset &= procfs::reset_peak_rss(process.pid);
            }
        }
        let cpu = |process: Option<Process>| process.and_then(|p| procfs::cpu_time(p.pid));
        Snapshot {
            at: Instant::now(),
            bench: procfs::cpu_time(std::process::id()),
            identity: cpu(self.identity),
            insurance: cpu(self.insurance),
            echo: cpu(self.echo),
            postgres: procfs::cpu_time_named("postgres"),
            machine_busy: procfs::machine_cpu().map(|(busy, _)| busy),
            rss_reset,
        }
    }

    fn cpu_between(&self, before: &Snapshot, after: &Snapshot) -> CpuUse {
        let wall = (after.at - before.at).as_secs_f64().max(1e-9);
        let cores = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64() / wall),
            _ => None,
        };
        let bench = cores(before.bench, after.bench);
        let identity = cores(before.identity, after.identity);
        let insurance = cores(before.insurance, after.insurance);
        let echo = cores(before.echo, after.echo);
        let postgres = cores(Some(before.postgres), Some(after.postgres)).filter(|cores| *cores > 0.0);
        let machine = cores(before.machine_busy, after.machine_busy);
        let ours = [bench, identity, insurance, echo, postgres].into_iter().flatten().sum::<f64>();
        CpuUse { bench, identity, insurance, echo, postgres, machine, others: machine.map(|m| (m - ours).max(0.0)) }
    }
}

/// Runs the bench.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    args.check()?;
    let plan = args.plan();
    let machine = procfs::Machine::read();
    let rustc_at_start = procfs::rustc_processes();
    if rustc_at_start > 0 {
        eprintln!("warning: {rustc_at_start} rustc process(es) running: other builds share the CPUs with this run");
    }
    // One development CA for the run: the echo server's certificate and a local stack's.
    let tls_dir = if args.tls { Some(tempfile::Builder::new().prefix("medins-bench-tls-").tempdir()?) } else { None };
    let tls = match &tls_dir {
        Some(dir) => {
            let files = medins_common::tls::dev::DevTlsDir { root: dir.path().to_owned() };
            files.ensure(&[])?;
            Some(files)
        }
        None => None,
    };
    let echo_tls = tls.as_ref().map(|files| load::client_tls(&files.ca_cert())).transpose()?;
    let echo = EchoServer::start(args.echo_server, tls.as_ref()).await?;
    let target = if plan.is_empty() {
        None
    } else {
        eprintln!("starting the target ({:?})", args.target);
        Some(Arc::new(match args.target {
            TargetKind::Local => {
                Target::local(LocalOptions {
                    identity_database_url: args.identity_database_url.clone(),
                    insurance_database_url: args.insurance_database_url.clone(),
                    keep_data: args.keep_data,
                    db_pool_size: args.db_pool_size,
                    tls: tls.clone(),
                })
                .await?
            }
            TargetKind::Remote => {
                Target::remote(RemoteOptions {
                    identity_addr: args.identity_addr,
                    insurance_addr: args.insurance_addr,
                    keys: args.remote_keys()?,
                    sms_webhook_listen: args.sms_webhook_listen,
                    identity_pid: args.identity_pid,
                    insurance_pid: args.insurance_pid,
                    tls_ca_file: args.tls.then(|| args.tls_ca_file.clone()),
                })
                .await?
            }
        }))
    };
    let watched = Watched {
        identity: target.as_ref().and_then(|t| t.identity_process),
        insurance: target.as_ref().and_then(|t| t.insurance_process),
        echo: echo.process,
    };
    let runner =
        Runner { args: &args, watched, echo_tls, target_tls: target.as_ref().and_then(|t| t.client_tls.clone()) };

    // Seed before anything is measured.
    let mut seeder = None;
    let mut registered = Vec::new();
    let mut insured: Vec<Insured> = Vec::new();
    if let Some(target) = &target {
        let s = Arc::new(Seeder::new(target)?);
        let started = Instant::now();
        eprintln!("seeding {} persons through the API", args.persons);
        registered = s.register(args.persons).await.context("seeding: registering persons")?;
        if plan.iter().any(|s| s.needs_insured()) {
            insured = s.insure(target, &registered).await.context("seeding: real name, link, voucher")?;
        }
        eprintln!("  seeded in {:.1} s", started.elapsed().as_secs_f64());
        seeder = Some(s);
    }

    let mut results = vec![runner.echo(&echo).await?];
    for scenario in &plan {
        let (target, seeder) = (target.as_ref().expect("a target"), seeder.as_ref().expect("a seeder"));
        let result = match scenario {
            Scenario::Echo => unreachable!("echo is measured apart"),
            Scenario::GetPerson => {
                let workload = Arc::new(GetPersonLoad {
                    person_ids: registered.iter().map(|p| p.person_id.clone()).collect(),
                    ops: seeder.ops().clone(),
                });
                runner.steady(*scenario, target.identity_addr, runner.target_tls.as_ref(), workload).await?
            }
            Scenario::IssueCode => {
                seeder.refresh_tokens(&mut insured).await?;
                let workload = Arc::new(IssueCodeLoad { persons: insured.clone(), bank: seeder.bank().clone() });
                runner.steady(*scenario, target.insurance_addr, runner.target_tls.as_ref(), workload).await?
            }
            Scenario::VerifyCode => {
                seeder.refresh_tokens(&mut insured).await?;
                runner.verify_code(target.insurance_addr, seeder, Arc::new(insured.clone())).await?
            }
            Scenario::Settle | Scenario::SettleItems | Scenario::PreSettle => {
                seeder.refresh_tokens(&mut insured).await?;
                runner.settle(*scenario, target.insurance_addr, seeder, Arc::new(insured.clone())).await?
            }
        };
        results.push(result);
    }
    if !plan.is_empty() {
        let mut again = runner.echo(&echo).await?;
        again.name = "echo (again)".into();
        results.push(again);
    }

    let report = Report::new(
        machine,
        &args,
        target.as_ref().map(|t| t.backend.clone()),
        results,
        rustc_at_start,
        procfs::rustc_processes(),
    );
    if let Some(path) = &args.json_file {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    drop(target);
    drop(echo);
    drop(tls_dir);
    Ok(())
}

/// Runs scenarios with the run's flags.
struct Runner<'a> {
    args: &'a BenchArgs,
    watched: Watched,
    /// TLS to the echo server (`--tls`).
    echo_tls: Option<tonic::transport::ClientTlsConfig>,
    /// TLS to the services (`--tls`).
    target_tls: Option<tonic::transport::ClientTlsConfig>,
}

impl Runner<'_> {
    fn phase(&self, duration: Duration) -> Phase {
        Phase { concurrency: self.args.concurrency, duration, max_requests: self.args.max_requests }
    }

    async fn channels(
        &self,
        addr: SocketAddr,
        tls: Option<&tonic::transport::ClientTlsConfig>,
    ) -> anyhow::Result<Vec<Channel>> {
        connect_channels(addr, self.args.channels, self.args.request_timeout, tls).await
    }

    /// Warm-up, then the measured window with resource accounting.
    async fn window<W: Workload>(
        &self,
        scenario: &str,
        channels: &[Channel],
        workload: Arc<W>,
        duration: Duration,
        warmup: Option<&LoadResult>,
        note: Option<String>,
    ) -> anyhow::Result<ScenarioReport> {
        eprintln!("  {scenario}: measuring for {:.1} s", duration.as_secs_f64());
        let before = self.watched.snapshot(true);
        let result = run_phase(workload, channels, self.phase(duration)).await;
        let after = self.watched.snapshot(false);
        let cpu = self.watched.cpu_between(&before, &after);
        let peak =
            |process: Option<Process>| process.and_then(|p| procfs::peak_rss_kib(p.pid)).map(|kib| kib as f64 / 1024.0);
        let mut notes: Vec<String> = note.into_iter().collect();
        if !before.rss_reset {
            notes.push("peak RSS is since process start (clear_refs not allowed)".into());
        }
        if result.stopped_by_count && result.elapsed + Duration::from_millis(200) < duration {
            notes.push(format!(
                "ran out of prepared items (or --max-requests) after {:.1} s",
                result.elapsed.as_secs_f64()
            ));
        }
        eprintln!(
            "  {scenario}: {:.0} ok/s, p99 {:.2} ms, {} error(s)",
            result.ok_per_second(),
            result.quantile_ms(0.99),
            result.error_count()
        );
        Ok(ScenarioReport::new(
            scenario,
            &result,
            warmup.map(LoadResult::ok_per_second),
            cpu,
            [peak(self.watched.identity), peak(self.watched.insurance), peak(self.watched.echo)],
            notes,
        ))
    }

    async fn warm<W: Workload>(&self, scenario: &str, channels: &[Channel], workload: Arc<W>) -> Option<LoadResult> {
        if self.args.warmup.is_zero() {
            return None;
        }
        eprintln!("  {scenario}: warming up for {:.1} s", self.args.warmup.as_secs_f64());
        Some(run_phase(workload, channels, self.phase(self.args.warmup)).await)
    }

    async fn echo(&self, echo: &EchoServer) -> anyhow::Result<ScenarioReport> {
        let workload = Arc::new(EchoLoad { payload: vec![0x5a; self.args.echo_payload_bytes] });
        let channels = self.channels(echo.addr, self.echo_tls.as_ref()).await?;
        let warm = self.warm("echo", &channels, workload.clone()).await;
        self.window("echo", &channels, workload, self.args.duration, warm.as_ref(), None).await
    }

    /// A scenario whose calls can repeat (no one-use items).
    async fn steady<W: Workload>(
        &self,
        scenario: Scenario,
        addr: SocketAddr,
        tls: Option<&tonic::transport::ClientTlsConfig>,
        workload: Arc<W>,
    ) -> anyhow::Result<ScenarioReport> {
        let channels = self.channels(addr, tls).await?;
        let warm = self.warm(scenario.name(), &channels, workload.clone()).await;
        self.window(scenario.name(), &channels, workload, self.args.duration, warm.as_ref(), None).await
    }

    /// One-use items for the window: the warm-up's rate times the window, and half as many
    /// again, within --max-requests (the window ends early, and says so, if they run out).
    fn items_for_window(&self, warm: Option<&LoadResult>, duration: Duration) -> usize {
        let rate = warm.map(LoadResult::ok_per_second).unwrap_or(2_000.0).max(100.0);
        let wanted = (rate * duration.as_secs_f64() * 1.5) as u64 + 4 * self.args.concurrency as u64;
        wanted.min(self.args.max_requests) as usize
    }

    fn warm_items(&self) -> usize {
        5_000.min(self.args.max_requests) as usize
    }

    async fn verify_code(
        &self,
        addr: SocketAddr,
        seeder: &Arc<Seeder>,
        persons: Arc<Vec<Insured>>,
    ) -> anyhow::Result<ScenarioReport> {
        let name = Scenario::VerifyCode.name();
        let channels = self.channels(addr, self.target_tls.as_ref()).await?;
        let warm = if self.args.warmup.is_zero() {
            None
        } else {
            let codes = scenarios::issue_codes(seeder, &persons, self.warm_items()).await?;
            self.warm(name, &channels, Arc::new(VerifyCodeLoad { codes, hospital: seeder.hospital().clone() })).await
        };
        let count = self.items_for_window(warm.as_ref(), self.args.duration);
        eprintln!("  {name}: issuing {count} fresh codes for the window");
        let issued_at = Instant::now();
        let codes = scenarios::issue_codes(seeder, &persons, count).await?;
        let left = CODE_USABLE_FOR.saturating_sub(issued_at.elapsed());
        let mut note = format!("{count} codes issued in {:.1} s before the window", issued_at.elapsed().as_secs_f64());
        let duration = if left < self.args.duration {
            note.push_str(&format!("; window shortened to {:.1} s so no code expires in it", left.as_secs_f64()));
            left
        } else {
            self.args.duration
        };
        let note = Some(note);
        let workload = Arc::new(VerifyCodeLoad { codes, hospital: seeder.hospital().clone() });
        self.window(name, &channels, workload, duration, warm.as_ref(), note).await
    }

    async fn settle(
        &self,
        scenario: Scenario,
        addr: SocketAddr,
        seeder: &Arc<Seeder>,
        persons: Arc<Vec<Insured>>,
    ) -> anyhow::Result<ScenarioReport> {
        let name = scenario.name();
        let kind = match scenario {
            Scenario::SettleItems => scenarios::SettleKind::Items,
            Scenario::PreSettle => scenarios::SettleKind::PreSettle,
            _ => scenarios::SettleKind::Bare,
        };
        let channels = self.channels(addr, self.target_tls.as_ref()).await?;
        let warm = if self.args.warmup.is_zero() {
            None
        } else {
            let visits = scenarios::open_visits(seeder, &persons, self.warm_items()).await?;
            self.warm(name, &channels, Arc::new(SettleLoad { visits, hospital: seeder.hospital().clone(), kind })).await
        };
        let count = self.items_for_window(warm.as_ref(), self.args.duration);
        eprintln!("  {name}: opening {count} visits for the window (IssueCode + VerifyCode)");
        let started = Instant::now();
        let visits = scenarios::open_visits(seeder, &persons, count).await?;
        let note = format!("{count} visits opened in {:.1} s before the window", started.elapsed().as_secs_f64());
        let workload = Arc::new(SettleLoad { visits, hospital: seeder.hospital().clone(), kind });
        self.window(name, &channels, workload, self.args.duration, warm.as_ref(), Some(note)).await
    }
}
