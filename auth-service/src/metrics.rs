//! Counters of the expensive things the auth-service does, exported as Prometheus metrics
//! (see [`Metrics::register`]) and read in-process by tests.

use std::sync::atomic::{AtomicI64, Ordering};

use common::metrics::{Counter, LabeledCounter};
use prometheus_client::{metrics::gauge::Gauge as PromGauge, registry::Registry};

mod dynamodb_calls;
pub use dynamodb_calls::{DYNAMODB_OPERATIONS, counted};

/// What a session repair can come to (`revocations::repair`), the label values of
/// `dynagate_session_repairs_total`.
pub const SESSION_REPAIR_OUTCOMES: &[&str] = &["marked", "already_ended", "failed", "dropped"];

/// Counters shared by every part of one service instance.
#[derive(Debug)]
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
    /// STS AssumeRole calls made (GetCredentials cache misses), by outcome: `ok`, `error`.
    pub assume_role_calls: LabeledCounter,
    /// Usernames locked after too many failed attempts.
    pub lockouts: Counter,
    /// Attempts refused unchecked because their username was locked.
    pub lockout_refusals: Counter,
    /// Login and Register calls refused by the per-address throttle.
    pub rate_limited: Counter,
    /// Refresh and Logout calls refused unread: their address's failures budget was spent.
    pub token_failures_throttled: Counter,
    /// Repairs of sessions ended in the revocation log, by outcome (`revocations::repair`):
    /// `marked` (the session was unmarked: this repair marked it), `already_ended` (nothing to
    /// do), `failed` (an attempt failed; it is retried), `dropped` (the queue was full).
    pub session_repairs: LabeledCounter,
    /// Reloads of the signing keys file (SIGHUP, or its content changed), by outcome:
    /// `applied` (its keys are the ring now), `refused` (it did not parse; the ring is kept).
    pub signing_key_reloads: LabeledCounter,
    /// DynamoDB operations sent, by operation ([`DYNAMODB_OPERATIONS`]; the SDK's retries of
    /// one operation not counted again): what a Login or a Refresh costs in round trips.
    pub dynamodb_calls: LabeledCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            password_hashes: Counter::default(),
            password_verifications: Counter::default(),
            password_verifications_padded: Counter::default(),
            hash_jobs_running: Gauge::default(),
            hash_jobs_queued: Gauge::default(),
            hash_jobs_rejected: Counter::default(),
            hash_jobs_skipped: Counter::default(),
            assume_role_calls: LabeledCounter::new("outcome", &["ok", "error"]),
            lockouts: Counter::default(),
            lockout_refusals: Counter::default(),
            rate_limited: Counter::default(),
            token_failures_throttled: Counter::default(),
            session_repairs: LabeledCounter::new("outcome", SESSION_REPAIR_OUTCOMES),
            signing_key_reloads: LabeledCounter::new("outcome", &["applied", "refused"]),
            dynamodb_calls: LabeledCounter::new("operation", DYNAMODB_OPERATIONS),
        }
    }
}

impl Metrics {
    /// Exports every counter into `registry` (names under the `dynagate_` prefix).
    pub fn register(&self, registry: &mut Registry) {
        for (counter, name, help) in self
            .hashing_counters()
            .into_iter()
            .chain(self.refusal_counters())
        {
            counter.register(registry, name, help);
        }
        self.assume_role_calls.register(
            registry,
            "sts_assume_role_calls",
            "STS AssumeRole calls made (GetCredentials cache misses), by outcome",
        );
        self.session_repairs.register(
            registry,
            "session_repairs",
            "Repairs of sessions ended in the revocation log but not in the sessions table, by outcome",
        );
        self.signing_key_reloads.register(
            registry,
            "signing_key_reloads",
            "Reloads of the signing keys file, by outcome: applied, or refused (the file did not parse)",
        );
        self.dynamodb_calls.register(
            registry,
            "dynamodb_calls",
            "DynamoDB operations sent, by operation (the SDK's retries of one not counted again)",
        );
        self.hash_jobs_running.register(
            registry,
            "password_jobs_running",
            "Hashing jobs computing now (and the most ever at once, _peak)",
        );
        self.hash_jobs_queued.register(
            registry,
            "password_jobs_queued",
            "Hashing jobs waiting for a worker (and the most ever waiting, _peak)",
        );
    }

    /// The password hashing counters, with their exported names and help.
    fn hashing_counters(&self) -> [(&Counter, &'static str, &'static str); 5] {
        [
            (
                &self.password_hashes,
                "password_hashes",
                "argon2id hashes computed",
            ),
            (
                &self.password_verifications,
                "password_verifications",
                "argon2id verifications computed (logins, including unknown users)",
            ),
            (
                &self.password_verifications_padded,
                "password_verifications_padded",
                "Verifications of an older, cheaper hash padded to the current cost",
            ),
            (
                &self.hash_jobs_rejected,
                "password_jobs_rejected",
                "Hashing jobs refused because the queue was full",
            ),
            (
                &self.hash_jobs_skipped,
                "password_jobs_skipped",
                "Queued hashing jobs dropped because their caller had gone",
            ),
        ]
    }

    /// The counters of calls refused before their work, with their exported names and help.
    fn refusal_counters(&self) -> [(&Counter, &'static str, &'static str); 4] {
        [
            (
                &self.lockouts,
                "lockouts",
                "Usernames locked after too many failed attempts",
            ),
            (
                &self.lockout_refusals,
                "lockout_refusals",
                "Attempts refused unchecked because their username was locked",
            ),
            (
                &self.rate_limited,
                "rate_limited",
                "Login and Register calls refused by the per-address throttle",
            ),
            (
                &self.token_failures_throttled,
                "token_failures_throttled",
                "Refresh and Logout calls refused unread: their address's failures budget was spent",
            ),
        ]
    }

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
    now: PromGauge<i64, AtomicI64>,
    peak: PromGauge<i64, AtomicI64>,
}

impl Gauge {
    /// Exports the level as `dynagate_<name>` and the peak as `dynagate_<name>_peak`.
    pub fn register(&self, registry: &mut Registry, name: &str, help: &str) {
        registry.register(name, help, self.now.clone());
        registry.register(format!("{name}_peak"), help, self.peak.clone());
    }

    /// Adds one. The peak is taken from the atomic increment itself, so it is exact.
    pub fn increment(&self) {
        let now = self.now.inner().fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.inner().fetch_max(now, Ordering::Relaxed);
    }

    /// Adds one where the source itself knows the level (a channel's length): the peak takes
    /// that, since counts kept on both sides of a channel may briefly lag each other.
    pub fn increment_to(&self, level: u64) {
        self.now.inner().fetch_add(1, Ordering::Relaxed);
        self.peak
            .inner()
            .fetch_max(i64::try_from(level).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Removes one.
    pub fn decrement(&self) {
        self.now.inner().fetch_sub(1, Ordering::Relaxed);
    }

    /// The level now.
    pub fn get(&self) -> u64 {
        u64::try_from(self.now.get()).unwrap_or(0)
    }

    /// The highest level so far.
    pub fn peak(&self) -> u64 {
        u64::try_from(self.peak.get()).unwrap_or(0)
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
