//! The one place that reads the wall clock. Everything else is given a `Clock`, so tests and
//! simulations set the time.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, Utc};

/// Japan Standard Time. Japan has no daylight saving time, so a fixed offset is exact.
pub fn jst() -> FixedOffset {
    FixedOffset::east_opt(9 * 3600).expect("valid offset")
}

/// The moment `time` o'clock on `day` in Asia/Tokyo.
pub fn in_tokyo(day: NaiveDate, time: NaiveTime) -> DateTime<FixedOffset> {
    day.and_time(time)
        .and_local_timezone(jst())
        .single()
        .expect("a fixed offset maps every local time to one instant")
}

/// The instant `d` after `t` (saturating far in the future): leases, retry times, quiet-hour
/// releases. Calendar days are `calendar`'s.
pub fn after(t: DateTime<FixedOffset>, d: Duration) -> DateTime<FixedOffset> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC.fixed_offset())
}

/// The instant `d` before `t` (saturating far in the past): token ages, expired leases.
pub fn before(t: DateTime<FixedOffset>, d: Duration) -> DateTime<FixedOffset> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC.fixed_offset())
}

/// How long from `now` until `then`; `None` when `then` is not later.
pub fn until(now: DateTime<FixedOffset>, then: DateTime<FixedOffset>) -> Option<Duration> {
    then.signed_duration_since(now)
        .to_std()
        .ok()
        .filter(|d| !d.is_zero())
}

pub trait Clock: Send + Sync {
    /// Now, in Asia/Tokyo.
    fn now(&self) -> DateTime<FixedOffset>;

    /// Today's date in Asia/Tokyo.
    fn today(&self) -> NaiveDate {
        self.now().date_naive()
    }
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<FixedOffset> {
        Utc::now().with_timezone(&jst())
    }
}

/// A clock that stays where it is put.
#[derive(Debug)]
pub struct FixedClock(Mutex<DateTime<FixedOffset>>);

impl FixedClock {
    pub fn new(at: DateTime<FixedOffset>) -> Self {
        Self(Mutex::new(at))
    }

    /// Noon (JST) on `day`.
    pub fn at_noon(day: NaiveDate) -> Self {
        Self::new(in_tokyo(
            day,
            NaiveTime::from_hms_opt(12, 0, 0).expect("noon"),
        ))
    }

    pub fn set(&self, at: DateTime<FixedOffset>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    /// Moves the clock `d` forward.
    pub fn advance(&self, d: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t = after(*t, d);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<FixedOffset> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
