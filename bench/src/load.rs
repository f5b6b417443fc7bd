//! The load engine: `concurrency` tasks spread over `channels` HTTP/2 connections, each sending
//! one request after another (closed loop), until the phase's time is up or its request budget is
//! spent, whichever comes first. Latencies of successful calls go into an HDR histogram
//! (microseconds, 3 significant digits); failures are counted by gRPC code.

use std::{
    collections::BTreeMap,
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use tonic::{
    Status,
    transport::{Channel, ClientTlsConfig, Endpoint},
};

/// Highest latency the histograms track (longer calls are clamped to it): 60 s.
const HISTOGRAM_MAX_MICROS: u64 = 60_000_000;

/// One kind of call, as the load engine drives it.
pub trait Workload: Send + Sync + 'static {
    /// The per-task client (a generated tonic client over a channel).
    type Client: Send + 'static;

    /// A client over `channel`.
    fn client(&self, channel: Channel) -> Self::Client;

    /// How many calls this workload can make at most (one-use items such as codes and visits);
    /// `None`: unbounded.
    fn items(&self) -> Option<u64> {
        None
    }

    /// Call number `n` (0-based, unique within the phase).
    fn call<'a>(&'a self, client: &'a mut Self::Client, n: u64)
    -> impl Future<Output = Result<(), Status>> + Send + 'a;
}

/// Bounds of one phase (warm-up or measured window).
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    /// Tasks in flight.
    pub concurrency: usize,
    /// No call starts after this much time.
    pub duration: Duration,
    /// No more than this many calls start.
    pub max_requests: u64,
}

/// What a phase measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Successful calls.
    pub ok: u64,
    /// Failed calls by gRPC code name (`UNAVAILABLE`, ...).
    pub errors: BTreeMap<String, u64>,
    /// One message per failing code, to tell what went wrong.
    pub error_samples: BTreeMap<String, String>,
    /// From the start of the first call to the end of the last one.
    pub elapsed: Duration,
    /// Latencies of successful calls, in microseconds.
    pub histogram: Histogram<u64>,
    /// The phase ended because its one-use items (or its request budget) ran out before its time.
    pub stopped_by_count: bool,
}

impl LoadResult {
    /// Failed calls.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Successful calls per second.
    pub fn ok_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 { self.ok as f64 / seconds } else { 0.0 }
    }

    /// A latency quantile (0..=1) in milliseconds; 0 when nothing succeeded.
    pub fn quantile_ms(&self, quantile: f64) -> f64 {
        if self.histogram.is_empty() { 0.0 } else { self.histogram.value_at_quantile(quantile) as f64 / 1000.0 }
    }

    /// The longest successful call in milliseconds.
    pub fn max_ms(&self) -> f64 {
        if self.histogram.is_empty() { 0.0 } else { self.histogram.max() as f64 / 1000.0 }
    }

    /// The mean successful call in milliseconds.
    pub fn mean_ms(&self) -> f64 {
        if self.histogram.is_empty() { 0.0 } else { self.histogram.mean() / 1000.0 }
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3).expect("valid histogram bounds")
}

/// `channels` HTTP/2 connections to `addr` (each connected now, so they are distinct), with a
/// client-side deadline on every call.
/// With `tls`, the connections are TLS and their handshakes happen here, before any measured
/// phase.
pub async fn connect_channels(
    addr: SocketAddr,
    channels: usize,
    timeout: Duration,
    tls: Option<&ClientTlsConfig>,
) -> anyhow::Result<Vec<Channel>> {
    let mut connected = Vec::with_capacity(channels);
    for _ in 0..channels.max(1) {
        let channel = endpoint(addr, tls)?
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("connecting to {addr}: {e}"))?;
        connected.push(channel);
    }
    Ok(connected)
}

/// An endpoint for a server of this machine: `https://` with `tls`, else `http://`.
pub fn endpoint(addr: SocketAddr, tls: Option<&ClientTlsConfig>) -> anyhow::Result<Endpoint> {
    Ok(match tls {
        Some(tls) => Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls.clone())?,
        None => Endpoint::from_shared(format!("http://{addr}"))?,
    })
}

/// Client TLS trusting the CA certificate in `ca_file` (PEM).
pub fn client_tls(ca_file: &std::path::Path) -> anyhow::Result<ClientTlsConfig> {
    medins_common::tls::PeerTls { ca_file: Some(ca_file.to_owned()), ..Default::default() }.client_tls_config()
}

/// Runs one phase of `workload` over `channels` (task `i` uses channel `i % channels.len()`).
pub async fn run_phase<W: Workload>(workload: Arc<W>, channels: &[Channel], phase: Phase) -> LoadResult {
    assert!(!channels.is_empty(), "at least one channel");
    let limit = workload.items().map_or(phase.max_requests, |items| items.min(phase.max_requests));
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + phase.duration;
    let mut tasks = Vec::with_capacity(phase.concurrency);
    for task in 0..phase.concurrency.max(1) {
        let mut client = workload.client(channels[task % channels.len()].clone());
        let (workload, next) = (workload.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut histogram = new_histogram();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut samples: BTreeMap<String, String> = BTreeMap::new();
            let mut last_end = Instant::now();
            let mut by_count = false;
            loop {
                if Instant::now() >= deadline {
                    break;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= limit {
                    by_count = true;
                    break;
                }
                let began = Instant::now();
                let outcome = workload.call(&mut client, n).await;
                last_end = Instant::now();
                match outcome {
                    Ok(()) => {
                        let micros = (last_end - began).as_micros().clamp(1, u128::from(HISTOGRAM_MAX_MICROS));
                        histogram.saturating_record(micros as u64);
                    }
                    Err(status) => {
                        let name = medins_common::audit::outcome_name(status.code()).to_owned();
                        *errors.entry(name.clone()).or_default() += 1;
                        samples.entry(name).or_insert_with(|| status.message().chars().take(200).collect());
                    }
                }
            }
            (histogram, errors, samples, last_end, by_count)
        }));
    }
    let mut result = LoadResult {
        ok: 0,
        errors: BTreeMap::new(),
        error_samples: BTreeMap::new(),
        elapsed: Duration::ZERO,
        histogram: new_histogram(),
        stopped_by_count: false,
    };
    let mut end = start;
    for task in tasks {
        let (histogram, errors, samples, last_end, by_count) = task.await.expect("load task");
        result.histogram.add(&histogram).expect("histograms of the same bounds");
        for (code, count) in errors {
            *result.errors.entry(code).or_default() += count;
        }
        for (code, sample) in samples {
            result.error_samples.entry(code).or_insert(sample);
        }
        end = end.max(last_end);
        result.stopped_by_count |= by_count;
    }
    result.ok = result.histogram.len();
    result.elapsed = end.saturating_duration_since(start);
    result
}

/// Runs `call(i)` for every `i` in `0..count` with `concurrency` tasks; the results in order.
/// Stops at the first error (calls in flight finish) and returns it.
pub async fn for_each_concurrent<T, F, Fut>(count: usize, concurrency: usize, call: F) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.clamp(1, count.max(1)) {
        let (call, next, failed) = (call.clone(), next.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            while !failed.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= count {
                    break;
                }
                match call(i).await {
                    Ok(value) => done.push((i, value)),
                    Err(error) => {
                        failed.store(true, Ordering::Relaxed);
                        return Err(error);
                    }
                }
            }
            Ok(done)
        }));
    }
    let mut slots: Vec<Option<T>> = (0..count).map(|_| None).collect();
    let mut first_error = None;
    for task in tasks {
        match task.await? {
            Ok(done) => {
                for (i, value) in done {
                    slots[i] = Some(value);
                }
            }
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    Ok(slots.into_iter().map(|slot| slot.expect("every index was done")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting {
        items: Option<u64>,
        fail_every: u64,
    }

    impl Workload for Counting {
        type Client = ();

        fn client(&self, _channel: Channel) -> Self::Client {}

        fn items(&self) -> Option<u64> {
            self.items
        }

        async fn call(&self, _client: &mut (), n: u64) -> Result<(), Status> {
            tokio::time::sleep(Duration::from_micros(200)).await;
            if self.fail_every > 0 && n.is_multiple_of(self.fail_every) {
                Err(Status::unavailable("down"))
            } else {
                Ok(())
            }
        }
    }

    fn lazy_channel() -> Channel {
        Endpoint::from_static("http://127.0.0.1:9").connect_lazy()
    }

    #[tokio::test]
    async fn a_phase_stops_at_its_request_budget() {
        let phase = Phase { concurrency: 8, duration: Duration::from_secs(30), max_requests: 100 };
        let result = run_phase(Arc::new(Counting { items: None, fail_every: 10 }), &[lazy_channel()], phase).await;
        assert_eq!(result.ok + result.error_count(), 100);
        assert_eq!(result.errors.get("UNAVAILABLE"), Some(&10));
        assert_eq!(result.error_samples.get("UNAVAILABLE").map(String::as_str), Some("down"));
        assert!(result.stopped_by_count);
    }

    #[tokio::test]
    async fn a_phase_stops_when_its_items_run_out_and_when_its_time_is_up() {
        let phase = Phase { concurrency: 4, duration: Duration::from_secs(30), max_requests: u64::MAX };
        let result = run_phase(Arc::new(Counting { items: Some(37), fail_every: 0 }), &[lazy_channel()], phase).await;
        assert_eq!(result.ok, 37);
        let phase = Phase { concurrency: 4, duration: Duration::from_millis(100), max_requests: u64::MAX };
        let result = run_phase(Arc::new(Counting { items: None, fail_every: 0 }), &[lazy_channel()], phase).await;
        assert!(!result.stopped_by_count && result.ok > 0);
        assert!(result.elapsed < Duration::from_secs(2), "{:?}", result.elapsed);
    }

    #[tokio::test]
    async fn for_each_concurrent_keeps_order_and_reports_the_first_error() {
        let values = for_each_concurrent(50, 7, |i| async move { Ok(i * 2) }).await.unwrap();
        assert_eq!(values, (0..50).map(|i| i * 2).collect::<Vec<_>>());
        let error =
            for_each_concurrent(50, 7, |i| async move { if i == 13 { anyhow::bail!("thirteen") } else { Ok(i) } })
                .await
                .unwrap_err();
        assert_eq!(error.to_string(), "thirteen");
    }
}
