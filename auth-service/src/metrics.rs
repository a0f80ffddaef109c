//! Counters of the expensive things the auth-service does.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use common::metrics::Counter;

/// Counters shared by every part of one service instance.
#[derive(Debug, Default)]
pub struct Metrics {
    /// argon2id hashes computed (registrations, rehashes).
    pub password_hashes: Counter,
    /// argon2id verifications computed (logins, including unknown users).
    pub password_verifications: Counter,
    /// Verifications of a stored hash cheaper than the current cost, padded to the time a
    /// current-cost one takes so they cannot be told apart from unknown users.
    pub password_verifications_padded: Counter,
    /// Hashing jobs computing right now, and the most ever at once: never above the workers.
    pub hash_jobs_running: Gauge,
    /// Hashing jobs waiting for a worker, and the most ever waiting: never above the queue.
    pub hash_jobs_queued: Gauge,
    /// Hashing jobs refused because the queue was full (RESOURCE_EXHAUSTED).
    pub hash_jobs_rejected: Counter,
    /// Queued hashing jobs dropped unstarted because their caller had gone (deadline passed,
    /// stream reset): a cancelled login costs no argon2 work once it is no longer wanted.
    pub hash_jobs_skipped: Counter,
    /// STS AssumeRole calls made (GetCredentials cache misses).
    pub assume_role_calls: Counter,
}

impl Metrics {
    /// Logs the password hashing figures in one line (at shutdown; the bench reads it).
    pub fn log_hashing_stats(&self) {
        tracing::info!(
            hashes = self.password_hashes.get(),
            verifications = self.password_verifications.get(),
            verifications_padded = self.password_verifications_padded.get(),
            peak_running = self.hash_jobs_running.peak(),
            peak_queued = self.hash_jobs_queued.peak(),
            rejected = self.hash_jobs_rejected.get(),
            skipped_cancelled = self.hash_jobs_skipped.get(),
            "password hashing stats"
        );
    }
}

/// A level that goes up and down, with the highest level it ever reached.
#[derive(Debug, Default)]
pub struct Gauge {
    /// Signed: a consumer may count its decrement before the producer counts the increment.
    now: AtomicI64,
    peak: AtomicU64,
}

impl Gauge {
    /// Adds one. The peak is taken from the atomic increment itself, so it is exact.
    pub fn increment(&self) {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak
            .fetch_max(u64::try_from(now).unwrap_or(0), Ordering::Relaxed);
    }

    /// Adds one where the source itself knows the level (a channel's length): the peak takes
    /// that, since counts kept on both sides of a channel may briefly lag each other.
    pub fn increment_to(&self, level: u64) {
        self.now.fetch_add(1, Ordering::Relaxed);
        self.peak.fetch_max(level, Ordering::Relaxed);
    }

    /// Removes one.
    pub fn decrement(&self) {
        self.now.fetch_sub(1, Ordering::Relaxed);
    }

    /// The level now.
    pub fn get(&self) -> u64 {
        u64::try_from(self.now.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// The highest level so far.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gauge_remembers_its_peak() {
        let gauge = Gauge::default();
        gauge.increment();
        gauge.increment();
        gauge.decrement();
        assert_eq!((gauge.get(), gauge.peak()), (1, 2));
        gauge.increment_to(5);
        gauge.decrement();
        gauge.decrement();
        assert_eq!((gauge.get(), gauge.peak()), (0, 5));
        gauge.decrement();
        assert_eq!(gauge.get(), 0, "a lagging count never reads below zero");
    }
}
