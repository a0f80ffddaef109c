//! Counters of the expensive things the auth-service does.

use common::metrics::Counter;

/// Counters shared by every part of one service instance.
#[derive(Debug, Default)]
pub struct Metrics {
    /// argon2id hashes computed (registrations, rehashes).
    pub password_hashes: Counter,
    /// argon2id verifications computed (logins, including unknown users).
    pub password_verifications: Counter,
    /// STS AssumeRole calls made (GetCredentials cache misses).
    pub assume_role_calls: Counter,
}
