//! The one place that reads the wall clock. Everything else is given a `Clock`, so tests and
//! simulations set the time.

use std::sync::Mutex;

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
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<FixedOffset> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
