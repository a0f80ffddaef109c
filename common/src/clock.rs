//! Time as the services store it: Unix seconds and milliseconds of the one wall clock, with
//! saturating and checked conversions so no stored or hostile value can overflow; and a
//! [`Clock`] that logic whose rules depend on time (lockouts, one-time codes, cache expiry)
//! reads, so tests can move time instead of sleeping.

use std::{
    fmt,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use time::OffsetDateTime;

/// Where time-dependent rules read the time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now.
    fn now(&self) -> OffsetDateTime;
}

/// The system's wall clock: what services run with.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that moves only when told to: for tests of time-dependent rules.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<OffsetDateTime>,
}

impl ManualClock {
    /// A clock standing at `at`.
    pub fn new(at: OffsetDateTime) -> Self {
        Self {
            now: Mutex::new(at),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
    }

    /// Sets the clock to `at`.
    pub fn set(&self, at: OffsetDateTime) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Now, in Unix seconds.
pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Now, in Unix milliseconds.
pub fn now_millis() -> i64 {
    unix_millis(OffsetDateTime::now_utc())
}

/// `t` in Unix milliseconds (saturating far outside any date we store).
pub fn unix_millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(if t.year() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// The point in time `millis` Unix milliseconds name, if `time` can represent it.
pub fn from_unix_millis(millis: i64) -> Option<OffsetDateTime> {
    let nanos = i128::from(millis).checked_mul(1_000_000)?;
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let start = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_secs(30));
        assert_eq!(clock.now(), start + Duration::from_secs(30));
        clock.set(start);
        assert_eq!(clock.now(), start);
    }

    #[test]
    fn milliseconds_round_trip() {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let t = t + time::Duration::milliseconds(123);
        assert_eq!(unix_millis(t), 1_700_000_000_123);
        assert_eq!(from_unix_millis(1_700_000_000_123), Some(t));
    }

    #[test]
    fn values_no_date_can_hold_are_refused_not_overflowed() {
        assert_eq!(from_unix_millis(i64::MAX), None);
        assert_eq!(from_unix_millis(i64::MIN), None);
    }
}
