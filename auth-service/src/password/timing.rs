//! Login time that does not depend on the cost a user's hash was stored at. Unknown users are
//! verified against a hash at the current cost; a user whose hash is older and cheaper would
//! answer sooner, telling an attacker the account exists. So a verification cheaper than the
//! current cost is padded, on its worker, up to the measured time of a current-cost one.
//!
//! Limits: the padding equalises elapsed time and worker occupancy, not CPU use (a sleeping
//! worker leaves its core to others, which a co-located observer could in principle notice);
//! the target is a moving average, so one padded login can differ from one unknown-user
//! login by the jitter of a single hash; and a hash *dearer* than the current cost cannot be
//! made faster — it stays distinguishable until that user logs in and is rehashed.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// Weight of each new measurement in the moving average (1/8: steady, but follows load).
const NEW_SAMPLE_WEIGHT: u128 = 8;

/// A moving average of how long one current-cost argon2 computation takes on a worker.
#[derive(Debug, Default)]
pub struct CostClock {
    /// Nanoseconds; 0 until the first measurement.
    average_nanos: AtomicU64,
}

impl CostClock {
    /// Adds the duration of one computation at the current cost. Concurrent updates may
    /// lose a sample, which an average does not mind.
    pub fn record(&self, took: Duration) {
        let sample = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let average = self.average_nanos.load(Ordering::Relaxed);
        let next = if average == 0 {
            sample
        } else {
            let weighted = (u128::from(average) * (NEW_SAMPLE_WEIGHT - 1) + u128::from(sample))
                / NEW_SAMPLE_WEIGHT;
            u64::try_from(weighted).unwrap_or(u64::MAX)
        };
        self.average_nanos.store(next, Ordering::Relaxed);
    }

    /// The current estimate (zero before anything was measured).
    pub fn estimate(&self) -> Duration {
        Duration::from_nanos(self.average_nanos.load(Ordering::Relaxed))
    }

    /// Replaces the estimate, so tests need not depend on how fast this machine hashes.
    #[cfg(test)]
    pub fn set(&self, estimate: Duration) {
        let nanos = u64::try_from(estimate.as_nanos()).unwrap_or(u64::MAX);
        self.average_nanos.store(nanos, Ordering::Relaxed);
    }

    /// How long a computation that took `took` at another cost must still wait to look like
    /// one at the current cost: nothing if it already took as long.
    pub fn padding(&self, took: Duration) -> Duration {
        self.estimate().saturating_sub(took)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_first_measurement_is_the_estimate_and_later_ones_move_it_slowly() {
        let clock = CostClock::default();
        assert_eq!(clock.estimate(), Duration::ZERO);
        clock.record(16 * MS);
        assert_eq!(clock.estimate(), 16 * MS);
        clock.record(24 * MS);
        assert_eq!(clock.estimate(), 17 * MS);
    }

    #[test]
    fn a_cheaper_verification_is_padded_up_to_the_estimate_and_a_dearer_one_not_at_all() {
        let clock = CostClock::default();
        clock.record(18 * MS);
        assert_eq!(clock.padding(5 * MS), 13 * MS);
        assert_eq!(clock.padding(18 * MS), Duration::ZERO);
        assert_eq!(clock.padding(40 * MS), Duration::ZERO);
    }

    #[test]
    fn nothing_is_padded_before_anything_was_measured() {
        assert_eq!(CostClock::default().padding(5 * MS), Duration::ZERO);
    }
}
