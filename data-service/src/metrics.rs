//! Counters of the work the data-service does, exported as Prometheus metrics (see
//! [`Metrics::register`]) and read in-process by tests.

use common::metrics::Counter;
use prometheus_client::registry::Registry;

/// Counters shared by every part of one service instance.
#[derive(Debug, Default)]
pub struct Metrics {
    /// DynamoDB requests sent with user credentials.
    pub dynamodb_calls: Counter,
    /// GetCredentials calls made to the auth-service (credential cache misses).
    pub credential_loads: Counter,
    /// Cached user clients dropped because the user's last session known here ended (the
    /// revocation feed's clean-up).
    pub clients_released: Counter,
    /// Full token verifications (signature checks); cache hits do not count.
    pub token_verifications: Counter,
    /// ListSigningKeys calls made to the auth-service.
    pub key_refreshes: Counter,
    /// Tokens found already verified in the cache of verdicts (no signature check).
    pub token_cache_hits: Counter,
    /// Session revocations applied from the auth-services' feed.
    pub revocations_applied: Counter,
}

impl Metrics {
    /// Exports every counter into `registry` (names under the `dynagate_` prefix).
    pub fn register(&self, registry: &mut Registry) {
        let counters = [
            (
                &self.dynamodb_calls,
                "dynamodb_calls",
                "DynamoDB requests sent with user credentials",
            ),
            (
                &self.credential_loads,
                "credential_loads",
                "GetCredentials calls to the auth-service (credential cache misses)",
            ),
            (
                &self.clients_released,
                "clients_released",
                "Cached user clients dropped because the user's last session ended",
            ),
            (
                &self.token_verifications,
                "token_verifications",
                "Full token verifications (signature checks); cache hits not counted",
            ),
            (
                &self.key_refreshes,
                "key_refreshes",
                "ListSigningKeys calls to the auth-service",
            ),
            (
                &self.token_cache_hits,
                "token_cache_hits",
                "Tokens found already verified in the cache (no signature check)",
            ),
            (
                &self.revocations_applied,
                "revocations_applied",
                "Session revocations applied from the auth-services' feed",
            ),
        ];
        for (counter, name, help) in counters {
            counter.register(registry, name, help);
        }
    }
}
