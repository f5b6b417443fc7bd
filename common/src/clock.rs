//! Time as a dependency: handlers and workers ask a `Clock`, so tests move time instead of
//! sleeping (SMS expiry, code lifetimes, monthly limits).

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, in UTC.
    fn now(&self) -> DateTime<Utc>;

    /// Now as stored: UTC without zone, truncated to the microseconds both databases keep (so a
    /// value returned after an insert equals the one read back later).
    fn stored_now(&self) -> chrono::NaiveDateTime {
        use chrono::DurationRound;
        let now = self.now().naive_utc();
        now.duration_trunc(Duration::microseconds(1)).unwrap_or(now)
    }

    /// Today's date in China Standard Time (UTC+8), the calendar that ages, birthdays and
    /// calendar months are counted in.
    fn today(&self) -> NaiveDate {
        self.now().with_timezone(&china_standard_time()).date_naive()
    }
}

/// UTC+8, the offset of China Standard Time (no daylight saving).
pub fn china_standard_time() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("valid offset")
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to; for tests.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self { now: Arc::new(Mutex::new(start)) }
    }

    /// Moves the clock forward (or back, with a negative duration).
    pub fn advance(&self, by: Duration) {
        *self.now.lock().expect("clock lock") += by;
    }

    /// Sets the clock.
    pub fn set(&self, to: DateTime<Utc>) {
        *self.now.lock().expect("clock lock") = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().expect("clock lock")
    }
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;
