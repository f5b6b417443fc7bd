//! The report: tables for people, JSON for machines, and the targets checked against the
//! figures of this run.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use super::{BenchArgs, EchoPlacement, TargetKind, load::LoadResult, procfs::Machine};

/// CPU used during a window, in cores (1.0 = one CPU busy all the time).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuUse {
    /// The bench process (load generator; and the echo server when it runs in-process).
    pub bench: Option<f64>,
    /// identity-svc's process.
    pub identity: Option<f64>,
    /// insurance-svc's process.
    pub insurance: Option<f64>,
    /// The echo server's process (`--echo-server child`).
    pub echo: Option<f64>,
    /// Every `postgres` process on the machine (the database server of a PostgreSQL run).
    pub postgres: Option<f64>,
    /// The whole machine.
    pub machine: Option<f64>,
    /// The machine less the processes above (other builds and tests, the kernel's share not
    /// charged to a process).
    pub others: Option<f64>,
}

/// Latency quantiles of successful calls, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Longest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// Peak resident memory during the window, MiB.
#[derive(Debug, Clone, Serialize)]
pub struct PeakRss {
    /// identity-svc.
    pub identity: Option<f64>,
    /// insurance-svc.
    pub insurance: Option<f64>,
    /// The echo server in its own process.
    pub echo: Option<f64>,
}

/// One scenario's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// Scenario name.
    pub name: String,
    /// Successful calls in the window.
    pub ok: u64,
    /// Failed calls by gRPC code.
    pub errors: BTreeMap<String, u64>,
    /// A message per failing code.
    pub error_samples: BTreeMap<String, String>,
    /// Window length, seconds (first call sent to last answer).
    pub elapsed_seconds: f64,
    /// Successful calls per second.
    pub ok_per_second: f64,
    /// ok_per_second / echo's (mean of the run's echo windows).
    pub ratio_to_echo: Option<f64>,
    /// Latency of successful calls.
    pub latency_ms: Latency,
    /// Rate during the warm-up.
    pub warmup_ok_per_second: Option<f64>,
    /// CPU use during the window.
    pub cpu_cores: CpuUse,
    /// Peak memory during the window.
    pub peak_rss_mib: PeakRss,
    /// How the window went (items prepared, shortened windows...).
    pub notes: Vec<String>,
}

impl ScenarioReport {
    /// From a window's result.
    pub fn new(
        name: &str,
        result: &LoadResult,
        warmup_ok_per_second: Option<f64>,
        cpu_cores: CpuUse,
        [identity, insurance, echo]: [Option<f64>; 3],
        notes: Vec<String>,
    ) -> ScenarioReport {
        ScenarioReport {
            name: name.to_owned(),
            ok: result.ok,
            errors: result.errors.clone(),
            error_samples: result.error_samples.clone(),
            elapsed_seconds: result.elapsed.as_secs_f64(),
            ok_per_second: result.ok_per_second(),
            ratio_to_echo: None,
            latency_ms: Latency {
                p50: result.quantile_ms(0.50),
                p99: result.quantile_ms(0.99),
                p999: result.quantile_ms(0.999),
                max: result.max_ms(),
                mean: result.mean_ms(),
            },
            warmup_ok_per_second,
            cpu_cores,
            peak_rss_mib: PeakRss { identity, insurance, echo },
            notes,
        }
    }
}

/// A target of issue 4 checked against this run.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    /// What is checked.
    pub what: String,
    /// Measured.
    pub value: f64,
    /// The limit.
    pub limit: String,
    /// Met or not.
    pub met: bool,
}

/// How the run was made.
#[derive(Debug, Clone, Serialize)]
pub struct RunSettings {
    /// `local` or `remote`.
    pub target: String,
    /// Database backend of the services.
    pub backend: Option<String>,
    /// Calls in flight.
    pub concurrency: usize,
    /// HTTP/2 connections.
    pub channels: usize,
    /// Window per scenario, seconds.
    pub duration_seconds: f64,
    /// Warm-up per scenario, seconds.
    pub warmup_seconds: f64,
    /// Call budget per phase.
    pub max_requests: u64,
    /// Seeded persons.
    pub persons: usize,
    /// Database connections per service when the bench set them (else the services' default).
    pub db_pool_size: Option<u32>,
    /// Echo payload.
    pub echo_payload_bytes: usize,
    /// Where the echo server ran.
    pub echo_server: String,
    /// `rustc` processes at the start and at the end (other builds on the machine).
    pub rustc_processes: [usize; 2],
    /// medins version.
    pub version: String,
    /// `TLS` (every connection of the load generator, the echo server and the services'
    /// calls to each other; handshakes before the windows) or `plaintext`.
    pub transport: String,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The machine.
    pub machine: Machine,
    /// Settings.
    pub settings: RunSettings,
    /// Mean of the echo windows, calls per second.
    pub echo_ok_per_second: f64,
    /// Scenarios in the order run (echo first and last).
    pub scenarios: Vec<ScenarioReport>,
    /// Issue 4's targets for this backend.
    pub targets: Vec<TargetCheck>,
}

impl Report {
    /// Computes ratios and target checks.
    pub fn new(
        machine: Machine,
        args: &BenchArgs,
        backend: Option<String>,
        mut scenarios: Vec<ScenarioReport>,
        rustc_at_start: usize,
        rustc_at_end: usize,
    ) -> Report {
        let echoes: Vec<f64> =
            scenarios.iter().filter(|s| s.name.starts_with("echo")).map(|s| s.ok_per_second).collect();
        let echo = echoes.iter().sum::<f64>() / echoes.len().max(1) as f64;
        for scenario in &mut scenarios {
            if echo > 0.0 {
                scenario.ratio_to_echo = Some(scenario.ok_per_second / echo);
            }
        }
        let targets = targets(backend.as_deref(), &scenarios);
        Report {
            machine,
            settings: RunSettings {
                target: match args.target {
                    TargetKind::Local => "local".into(),
                    TargetKind::Remote => "remote".into(),
                },
                backend,
                concurrency: args.concurrency,
                channels: args.channels,
                duration_seconds: args.duration.as_secs_f64(),
                warmup_seconds: args.warmup.as_secs_f64(),
                max_requests: args.max_requests,
                persons: args.persons,
                db_pool_size: args.db_pool_size,
                echo_payload_bytes: args.echo_payload_bytes,
                echo_server: match args.echo_server {
                    EchoPlacement::InProcess => "in-process".into(),
                    EchoPlacement::Child => "child".into(),
                },
                rustc_processes: [rustc_at_start, rustc_at_end],
                version: env!("CARGO_PKG_VERSION").into(),
                transport: if args.tls { "TLS".into() } else { "plaintext".into() },
            },
            echo_ok_per_second: echo,
            scenarios,
            targets,
        }
    }

    /// The human-readable tables.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let s = &self.settings;
        let _ = writeln!(
            out,
            "\nmedins-bench {}: target {} ({}{}), {}, {} in flight over {} connection(s), {:.0} s window after {:.0} s warm-up",
            s.version,
            s.target,
            s.backend.as_deref().unwrap_or("echo only"),
            s.db_pool_size.map(|size| format!(", {size} database connections per service")).unwrap_or_default(),
            s.transport,
            s.concurrency,
            s.channels,
            s.duration_seconds,
            s.warmup_seconds
        );
        let _ = writeln!(
            out,
            "machine: {} CPUs, {}, {} MiB RAM, Linux {}; rustc processes at start/end: {}/{}",
            self.machine.cpus,
            self.machine.cpu_model,
            self.machine.memory_mib,
            self.machine.kernel,
            s.rustc_processes[0],
            s.rustc_processes[1]
        );
        let _ = writeln!(
            out,
            "\n{:<14} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>9} {:>7}",
            "scenario", "ok/s", "% echo", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "ok", "errors"
        );
        for r in &self.scenarios {
            let _ = writeln!(
                out,
                "{:<14} {:>9.0} {:>8} {:>8.2} {:>8.2} {:>9.2} {:>8.1} {:>9} {:>7}",
                r.name,
                r.ok_per_second,
                r.ratio_to_echo.map(|x| format!("{:.1}", x * 100.0)).unwrap_or_else(|| "-".into()),
                r.latency_ms.p50,
                r.latency_ms.p99,
                r.latency_ms.p999,
                r.latency_ms.max,
                r.ok,
                r.errors.values().sum::<u64>()
            );
        }
        let _ = writeln!(
            out,
            "\nCPU during the window (cores; {} CPUs) and peak RSS during the window (MiB)",
            self.machine.cpus
        );
        let _ = writeln!(
            out,
            "{:<14} {:>6} {:>9} {:>10} {:>6} {:>9} {:>8} {:>7} {:>13} {:>14}",
            "scenario",
            "bench",
            "identity",
            "insurance",
            "echo",
            "postgres",
            "machine",
            "others",
            "RSS identity",
            "RSS insurance"
        );
        let num = |value: Option<f64>, digits: usize| match value {
            Some(v) => format!("{v:.digits$}"),
            None => "-".into(),
        };
        for r in &self.scenarios {
            let c = &r.cpu_cores;
            let _ = writeln!(
                out,
                "{:<14} {:>6} {:>9} {:>10} {:>6} {:>9} {:>8} {:>7} {:>13} {:>14}",
                r.name,
                num(c.bench, 2),
                num(c.identity, 2),
                num(c.insurance, 2),
                num(c.echo, 2),
                num(c.postgres, 2),
                num(c.machine, 2),
                num(c.others, 2),
                num(r.peak_rss_mib.identity, 1),
                num(r.peak_rss_mib.insurance, 1)
            );
        }
        let mut details = String::new();
        for r in &self.scenarios {
            for (code, count) in &r.errors {
                let sample = r.error_samples.get(code).map(String::as_str).unwrap_or("");
                let _ = writeln!(details, "  {}: {count} x {code} (e.g. \"{sample}\")", r.name);
            }
            for note in &r.notes {
                let _ = writeln!(details, "  {}: {note}", r.name);
            }
        }
        if !details.is_empty() {
            let _ = writeln!(out, "\nnotes\n{details}");
        }
        if !self.targets.is_empty() {
            let _ = writeln!(out, "\ntargets (issue 4)");
            for t in &self.targets {
                let _ = writeln!(
                    out,
                    "  {:<44} {:>9.2}  limit {:<10} {}",
                    t.what,
                    t.value,
                    t.limit,
                    if t.met { "met" } else { "MISSED" }
                );
            }
        }
        out
    }
}

fn targets(backend: Option<&str>, scenarios: &[ScenarioReport]) -> Vec<TargetCheck> {
    let mut checks = Vec::new();
    let find = |name: &str| scenarios.iter().find(|s| s.name == name);
    let ratio_floor: &[(&str, f64)] = match backend {
        Some("SQLite") => &[("issue-code", 0.25), ("verify-code", 0.10)],
        Some("PostgreSQL") => &[("verify-code", 0.08)],
        _ => &[],
    };
    for (name, floor) in ratio_floor {
        if let Some(ratio) = find(name).and_then(|s| s.ratio_to_echo) {
            checks.push(TargetCheck {
                what: format!("{name} % of echo"),
                value: ratio * 100.0,
                limit: format!(">= {:.0}", floor * 100.0),
                met: ratio >= *floor,
            });
        }
    }
    for scenario in scenarios.iter().filter(|s| !s.name.starts_with("echo")) {
        checks.push(TargetCheck {
            what: format!("{} p99 ms", scenario.name),
            value: scenario.latency_ms.p99,
            limit: "<= 20".into(),
            met: scenario.latency_ms.p99 <= 20.0 && scenario.ok > 0,
        });
    }
    for (service, peak) in [
        ("identity-svc", scenarios.iter().filter_map(|s| s.peak_rss_mib.identity).fold(None, max)),
        ("insurance-svc", scenarios.iter().filter_map(|s| s.peak_rss_mib.insurance).fold(None, max)),
    ] {
        if let Some(peak) = peak {
            checks.push(TargetCheck {
                what: format!("{service} peak RSS MiB"),
                value: peak,
                limit: "<= 100".into(),
                met: peak <= 100.0,
            });
        }
    }
    checks
}

fn max(acc: Option<f64>, value: f64) -> Option<f64> {
    Some(acc.map_or(value, |a| a.max(value)))
}
