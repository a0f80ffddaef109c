//! The in-memory caches the metrics endpoint reports, each with its bound: wiring, since it
//! reads every part of the service while the counters in [`crate::metrics`] depend on none.

use common::metrics::CacheSizes;

use crate::{
    config::Settings, credentials::UserClients, keys::KeyStore, revocations::Revocations,
    token_cache::REFUSED_CAPACITY,
};

/// The in-memory caches and their bounds, for the metrics endpoint. Revocations are bounded by
/// time (each is dropped when the last token it refuses would have expired).
pub fn cache_sizes(
    settings: &Settings,
    keys: &KeyStore,
    clients: &UserClients,
    revocations: &Revocations,
) -> CacheSizes {
    let (tokens, refusals, clients, index, users, revoked) = (
        keys.clone(),
        keys.clone(),
        clients.clone(),
        revocations.clone(),
        revocations.clone(),
        revocations.clone(),
    );
    let token_capacity = Some(settings.token_cache_capacity);
    CacheSizes::default()
        .with("verified_tokens", token_capacity, move || {
            tokens.tokens().len().0
        })
        .with("refused_tokens", Some(REFUSED_CAPACITY), move || {
            refusals.tokens().len().1
        })
        .with(
            "user_clients",
            Some(settings.credentials_cache_capacity),
            move || clients.cached(),
        )
        .with("tracked_sessions", token_capacity, move || {
            index.index_len().0
        })
        .with("tracked_users", token_capacity, move || users.index_len().1)
        .with("revoked_sessions", None, move || revoked.len())
}
