//! Counters of the work the data-service does.

use common::metrics::Counter;

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
}
