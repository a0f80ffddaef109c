//! Counters of the expensive things the service does, readable in-process (tests, and
//! later a Prometheus endpoint): they prove work happened without timing anything.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by every part of one service instance.
#[derive(Debug, Default)]
pub struct Metrics {
    /// argon2id hashes computed (registrations, rehashes).
    pub password_hashes: AtomicU64,
    /// argon2id verifications computed (logins, including unknown users).
    pub password_verifications: AtomicU64,
    /// STS AssumeRole calls made (GetCredentials cache misses).
    pub assume_role_calls: AtomicU64,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn increment(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
