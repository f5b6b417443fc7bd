//! Heavy work off the async runtime (docs/architecture.md#documents-are-identity-documents; issue
//! 14 item 4): image decoding, PDF parsing and rendering, and QR PNG encoding run on tokio's
//! blocking threads, at most [`HeavyPool::workers`] at a time, and only once the memory they
//! are estimated to need fits a process-wide budget.
//!
//! The estimate comes from the file's header before anything is decoded (width x height x bytes
//! per pixel for images, a multiple of the size for PDFs). Work estimated beyond the whole
//! budget can never run: the caller refuses it (INVALID_ARGUMENT / IMAGE_TOO_LARGE) without
//! decoding a byte. Work within it waits for its share (within the request's timeout), so eight
//! concurrent 130 KB PNGs that would each take 128 MiB do not take a gigabyte, and the async
//! workers stay free for unrelated calls (GetPublicKeys, VerifyCode).

use std::sync::Arc;

use medins_common::{ApiError, ApiResult};
use tokio::sync::Semaphore;

/// The default memory budget of heavy work, in bytes (128 MiB): one 4096 x 4096 8-bit RGBA
/// image fits with its flattened copy; a 16-bit one does not.
pub const DEFAULT_BUDGET_BYTES: u64 = 128 * 1024 * 1024;

/// The default number of heavy jobs at once (the async runtime keeps the other cores).
pub const DEFAULT_WORKERS: usize = 2;

/// The budget is counted in KiB permits (a u32 of KiB covers 4 TiB).
const UNIT: u64 = 1024;

/// A bounded pool for CPU- and memory-heavy jobs.
#[derive(Debug, Clone)]
pub struct HeavyPool {
    memory: Arc<Semaphore>,
    workers: Arc<Semaphore>,
    budget_bytes: u64,
    worker_count: usize,
}

/// Why a job could not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeavyRefusal {
    /// The job's estimate exceeds the whole budget: it can never run.
    OverBudget {
        /// The estimate, in bytes.
        needed: u64,
        /// The budget, in bytes.
        budget: u64,
    },
}

impl HeavyPool {
    /// A pool of `workers` jobs at once within `budget_bytes` of estimated memory.
    pub fn new(budget_bytes: u64, workers: usize) -> Self {
        let permits = usize::try_from((budget_bytes / UNIT).min(u64::from(u32::MAX))).unwrap_or(usize::MAX);
        Self {
            memory: Arc::new(Semaphore::new(permits)),
            workers: Arc::new(Semaphore::new(workers.max(1))),
            budget_bytes,
            worker_count: workers.max(1),
        }
    }

    /// The memory budget, in bytes.
    pub fn budget_bytes(&self) -> u64 {
        self.budget_bytes
    }

    /// How many jobs run at once.
    pub fn workers(&self) -> usize {
        self.worker_count
    }

    /// Whether a job estimated at `needed` bytes could ever run.
    pub fn admits(&self, needed: u64) -> Result<(), HeavyRefusal> {
        if needed > self.budget_bytes {
            return Err(HeavyRefusal::OverBudget { needed, budget: self.budget_bytes });
        }
        Ok(())
    }

    /// Runs `job` on a blocking thread once `needed` bytes of the budget and a worker are free.
    /// A job over the whole budget is refused at once (the caller turns that into its answer);
    /// a panicking job is INTERNAL (a parser bug must not take the process down).
    pub async fn run<T, F>(&self, needed: u64, job: F) -> ApiResult<Result<T, HeavyRefusal>>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        if let Err(refusal) = self.admits(needed) {
            return Ok(Err(refusal));
        }
        let kib = u32::try_from(needed.div_ceil(UNIT).max(1)).map_err(ApiError::internal)?;
        let memory = self.memory.clone().acquire_many_owned(kib).await.map_err(ApiError::internal)?;
        let worker = self.workers.clone().acquire_owned().await.map_err(ApiError::internal)?;
        let result = tokio::task::spawn_blocking(move || {
            let result = job();
            drop(worker);
            drop(memory);
            result
        })
        .await
        .map_err(|error| ApiError::internal(format_args!("heavy job failed: {error}")))?;
        Ok(Ok(result))
    }
}

impl Default for HeavyPool {
    fn default() -> Self {
        Self::new(DEFAULT_BUDGET_BYTES, DEFAULT_WORKERS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_over_the_budget_never_runs_and_jobs_within_it_take_turns() {
        let pool = HeavyPool::new(10 * 1024, 1);
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let refused =
            pool.run(10 * 1024 + 1, move || flag.store(true, std::sync::atomic::Ordering::SeqCst)).await.unwrap();
        assert_eq!(refused, Err(HeavyRefusal::OverBudget { needed: 10 * 1024 + 1, budget: 10 * 1024 }));
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));

        // Two jobs of 6 KiB in a 10 KiB budget run one after the other, never together.
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let big = HeavyPool::new(10 * 1024, 4);
        let jobs = (0..4).map(|_| {
            let (running, most, pool) = (running.clone(), most.clone(), big.clone());
            async move {
                pool.run(6 * 1024, move || {
                    let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                })
                .await
                .unwrap()
                .unwrap()
            }
        });
        futures::future::join_all(jobs).await;
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_internal_error() {
        let pool = HeavyPool::default();
        let error = pool.run(1, || panic!("parser bug")).await.map(|_: Result<(), _>| ()).unwrap_err();
        assert_eq!(error.code(), tonic::Code::Internal);
        // The pool is still usable: the permits were released.
        assert_eq!(pool.run(DEFAULT_BUDGET_BYTES, || 7).await.unwrap(), Ok(7));
    }
}
