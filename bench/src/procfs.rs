//! What `/proc` says about the machine and the measured processes: peak resident memory
//! (`VmHWM`, which `clear_refs` resets so each scenario gets its own peak), CPU time, and the
//! machine's busy time (to see load from outside the benchmark).

use std::time::Duration;

/// Clock ticks per second of `/proc/*/stat` (USER_HZ, 100 on every Linux architecture medins
/// runs on).
const TICKS_PER_SECOND: f64 = 100.0;

/// The machine, as `docs/benchmarks.md` records it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    /// Online CPUs.
    pub cpus: usize,
    /// `model name` of the first CPU.
    pub cpu_model: String,
    /// Physical memory in MiB.
    pub memory_mib: u64,
    /// Kernel release.
    pub kernel: String,
}

impl Machine {
    /// Reads `/proc`.
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name").and_then(|rest| rest.split_once(':')))
            .map(|(_, model)| model.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let memory_kib =
            std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| field_kib(&text, "MemTotal:")).unwrap_or(0);
        Machine {
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu_model,
            memory_mib: memory_kib / 1024,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
        }
    }
}

fn field_kib(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())?
        .parse()
        .ok()
}

/// Peak resident set of a process since it started or since [`reset_peak_rss`], in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    field_kib(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?, "VmHWM:")
}

/// Resets the peak resident set of a process to its current one (Linux `clear_refs` value 5);
/// false when the kernel or permissions do not allow it (the peak is then since start).
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// User + system CPU time a process has used.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) / TICKS_PER_SECOND))
}

/// Busy and total CPU time of the whole machine (all CPUs), from `/proc/stat`.
pub fn machine_cpu() -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let values: Vec<f64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let total: f64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0.0) + values.get(4).copied().unwrap_or(0.0);
    Some((
        Duration::from_secs_f64((total - idle) / TICKS_PER_SECOND),
        Duration::from_secs_f64(total / TICKS_PER_SECOND),
    ))
}

/// Total CPU time of every process named `name` (e.g. `postgres`: the server and its backends,
/// on the same machine as the services). Processes that start or end within a window make this
/// approximate.
pub fn cpu_time_named(name: &str) -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Duration::ZERO };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().and_then(|pid| pid.parse::<u32>().ok()))
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == name))
        .filter_map(cpu_time)
        .sum()
}

/// `rustc` processes running now (other builds on the machine distort the figures).
pub fn rustc_processes() -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    entries
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter(|entry| {
            std::fs::read_to_string(entry.path().join("comm")).map(|comm| comm.trim() == "rustc").unwrap_or(false)
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_peak_rss_and_cpu_time() {
        let pid = std::process::id();
        assert!(peak_rss_kib(pid).unwrap() > 0);
        assert!(cpu_time(pid).is_some());
        let (busy, total) = machine_cpu().unwrap();
        assert!(busy <= total);
        assert!(Machine::read().cpus >= 1);
    }
}
