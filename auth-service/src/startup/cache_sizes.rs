//! The in-memory caches the metrics endpoint reports, read from the parts that hold them.

use std::sync::Arc;

use common::metrics::CacheSizes;

use crate::{
    config::Settings, credentials::CredentialVendor, revocations::Hub, throttle::AddressLimiter,
};

/// The in-memory caches and their bounds, for the metrics endpoint. The revocation log is
/// bounded by time (an entry leaves when the last token it refuses would have expired).
pub(super) fn cache_sizes(
    settings: &Settings,
    vendor: Option<&CredentialVendor>,
    limiter: &AddressLimiter,
    hub: &Arc<Hub>,
) -> CacheSizes {
    let (limiter, log, watched) = (limiter.clone(), Arc::clone(hub), Arc::clone(hub));
    let mut sizes = CacheSizes::default()
        .with(
            "throttled_addresses",
            Some(settings.throttle.throttle_max_addresses),
            move || limiter.tracked(),
        )
        .with("revocation_log", None, move || {
            u64::try_from(log.len()).unwrap_or(u64::MAX)
        })
        .with(
            "revocation_watchers",
            Some(u64::from(settings.revocations.max_watchers)),
            move || u64::try_from(watched.subscribers()).unwrap_or(u64::MAX),
        );
    if let Some(vendor) = vendor.cloned() {
        let capacity = Some(vendor.config().cache_capacity);
        sizes = sizes.with("credentials", capacity, move || vendor.cached());
    }
    sizes
}
