//! Per-partner rate limiting with GCRA (the generic cell rate algorithm): one atomic
//! "theoretical arrival time" per partner, no lock on the hot path.
//!
//! Limits are per process: with N replicas a partner may reach N times its rate; the
//! partners file states per-replica figures.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::partners::RateLimit;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The limiter of one partner.
#[derive(Debug)]
pub struct Gcra {
    /// Nanoseconds since `epoch()` at which the next request would be exactly on schedule.
    theoretical_arrival: AtomicU64,
    /// Nanoseconds between requests at the sustained rate.
    emission_interval: u64,
    /// How far ahead of schedule requests may run (the burst).
    tolerance: u64,
}

impl Gcra {
    /// A limiter for `limit`.
    pub fn new(limit: RateLimit) -> Self {
        let emission_interval = (1e9 / limit.per_second).max(1.0) as u64;
        Self {
            theoretical_arrival: AtomicU64::new(0),
            emission_interval,
            tolerance: emission_interval.saturating_mul(u64::from(limit.burst.saturating_sub(1))),
        }
    }

    /// Continues the state of a limiter this one replaces.
    pub fn inherit(&self, previous: &Gcra) {
        self.theoretical_arrival.store(previous.theoretical_arrival.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Admits one request now, or says how long to wait.
    pub fn check(&self) -> Result<(), Duration> {
        self.check_at(epoch().elapsed().as_nanos() as u64)
    }

    fn check_at(&self, now: u64) -> Result<(), Duration> {
        let mut current = self.theoretical_arrival.load(Ordering::Relaxed);
        loop {
            let tat = current.max(now);
            if tat > now + self.tolerance {
                return Err(Duration::from_nanos(tat - self.tolerance - now));
            }
            match self.theoretical_arrival.compare_exchange_weak(
                current,
                tat + self.emission_interval,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_admitted_then_the_sustained_rate() {
        let limiter = Gcra::new(RateLimit { per_second: 10.0, burst: 5 });
        let start = 1_000_000_000;
        for _ in 0..5 {
            assert!(limiter.check_at(start).is_ok());
        }
        let wait = limiter.check_at(start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        assert!(limiter.check_at(start + 100_000_000).is_ok());
        assert!(limiter.check_at(start + 100_000_000).is_err());
    }

    #[test]
    fn an_idle_partner_gets_its_whole_burst_back() {
        let limiter = Gcra::new(RateLimit { per_second: 1.0, burst: 3 });
        for _ in 0..3 {
            assert!(limiter.check_at(0).is_ok());
        }
        assert!(limiter.check_at(0).is_err());
        for _ in 0..3 {
            assert!(limiter.check_at(10_000_000_000).is_ok());
        }
    }
}
