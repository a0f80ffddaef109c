//! The auth-service's public keys, held in memory: refreshed in the background, and on
//! demand when a token names a kid we do not know (rate-limited, so forged kids cannot turn
//! us into an amplifier against the auth-service). Tokens already verified are remembered
//! until they expire, so the hot path skips the signature check.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use common::{
    proto::auth::v1::{ListSigningKeysRequest, auth_service_client::AuthServiceClient},
    tokens::{Principal, VerifyingKeys},
};
use moka::{Expiry, sync::Cache};
use time::OffsetDateTime;
use tokio::sync::Mutex;
use tonic::transport::Channel;

use crate::metrics::Metrics;

/// Keys and verified tokens; cheap to clone.
#[derive(Clone)]
pub struct KeyStore {
    inner: Arc<Inner>,
}

struct Inner {
    keys: ArcSwap<VerifyingKeys>,
    verified: Cache<String, Principal>,
    auth: AuthServiceClient<Channel>,
    timeout: Duration,
    /// When the last refresh for an unknown kid ran; the lock also makes concurrent
    /// requests with the same new kid wait for one refresh instead of each starting one.
    last_on_demand: Mutex<Option<Instant>>,
    min_on_demand_interval: Duration,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("keys", &self.inner.keys.load())
            .field("verified_tokens", &self.inner.verified.entry_count())
            .finish_non_exhaustive()
    }
}

/// Forgets a verified token when it expires.
struct UntilExpiry;

impl Expiry<String, Principal> for UntilExpiry {
    fn expire_after_create(
        &self,
        _token: &String,
        principal: &Principal,
        _now: Instant,
    ) -> Option<Duration> {
        let left = principal.expires_at - OffsetDateTime::now_utc();
        Some(Duration::try_from(left).unwrap_or_default())
    }
}

/// Settings of a [`KeyStore`].
#[derive(Clone, Copy, Debug)]
pub struct KeyStoreConfig {
    /// Verified tokens remembered at most.
    pub token_cache_capacity: u64,
    /// Timeout of one ListSigningKeys call.
    pub timeout: Duration,
    /// Least time between two refreshes caused by unknown kids.
    pub min_on_demand_interval: Duration,
}

impl KeyStore {
    /// An empty store that fetches keys from `auth`; call [`KeyStore::refresh`] or spawn the
    /// refresher before expecting any token to verify.
    pub fn new(
        auth: AuthServiceClient<Channel>,
        config: KeyStoreConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                keys: ArcSwap::from_pointee(VerifyingKeys::default()),
                verified: Cache::builder()
                    .max_capacity(config.token_cache_capacity)
                    .expire_after(UntilExpiry)
                    .build(),
                auth,
                timeout: config.timeout,
                last_on_demand: Mutex::new(None),
                min_on_demand_interval: config.min_on_demand_interval,
                metrics,
            }),
        }
    }

    /// The keys as of now.
    pub fn current(&self) -> Arc<VerifyingKeys> {
        self.inner.keys.load_full()
    }

    /// True when a key with this kid is known.
    pub fn knows(&self, kid: &str) -> bool {
        self.inner.keys.load().get(kid).is_some()
    }

    /// The principal of a token verified earlier and not yet expired.
    pub fn verified(&self, token: &str) -> Option<Principal> {
        self.inner.verified.get(token)
    }

    /// True for a token verified earlier and not yet expired (no clone of its principal).
    pub fn is_verified(&self, token: &str) -> bool {
        self.inner.verified.contains_key(token)
    }

    /// Remembers a token that just passed verification.
    pub fn remember(&self, token: &str, principal: Principal) {
        self.inner.verified.insert(token.to_owned(), principal);
    }

    /// Fetches the published keys and installs them.
    pub async fn refresh(&self) -> Result<(), String> {
        self.inner.metrics.key_refreshes.increment();
        let mut request = tonic::Request::new(ListSigningKeysRequest {});
        request.set_timeout(self.inner.timeout);
        let listed = self
            .inner
            .auth
            .clone()
            .list_signing_keys(request)
            .await
            .map_err(|status| format!("ListSigningKeys: {} {}", status.code(), status.message()))?
            .into_inner();
        let mut keys = VerifyingKeys::default();
        for key in listed.keys {
            keys.insert_paserk(&key.kid, &key.public_key)
                .map_err(|e| format!("ListSigningKeys returned a bad key: {e}"))?;
        }
        self.install(keys);
        Ok(())
    }

    /// Replaces the keys. If a key disappeared (withdrawn), every remembered token is
    /// forgotten, so none signed by it is accepted again.
    pub fn install(&self, keys: VerifyingKeys) {
        let removed = self.current().kids().any(|kid| keys.get(kid).is_none());
        let added = keys.kids().any(|kid| !self.knows(kid));
        self.inner.keys.store(Arc::new(keys));
        if removed {
            tracing::warn!("a signing key was withdrawn: forgetting every verified token");
            self.inner.verified.invalidate_all();
        }
        if added || removed {
            tracing::info!(keys = self.current().len(), "signing keys updated");
        }
    }

    /// Refreshes because a token names `kid`, unless another request just did (then it waits
    /// for that refresh) or the last on-demand refresh is too recent.
    pub async fn refresh_for_unknown(&self, kid: &str) {
        let mut last = self.inner.last_on_demand.lock().await;
        if self.knows(kid) {
            return;
        }
        if last.is_some_and(|at| at.elapsed() < self.inner.min_on_demand_interval) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(error) = self.refresh().await {
            tracing::warn!(%error, "refreshing signing keys for an unknown kid failed");
        }
    }

    /// Refreshes every `interval` (and at once). Failures are retried after 1 s, doubling up
    /// to `interval`, and logged once per outage rather than once per attempt.
    pub fn spawn_refresher(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut backoff: Option<Duration> = None;
            loop {
                let wait = match (store.refresh().await, backoff) {
                    (Ok(()), failing) => {
                        if failing.is_some() {
                            tracing::info!("signing keys refreshed again");
                        }
                        backoff = None;
                        interval
                    }
                    (Err(error), None) => {
                        tracing::warn!(%error, "refreshing signing keys failed; retrying with backoff");
                        backoff = Some(Duration::from_secs(1).min(interval));
                        Duration::from_secs(1).min(interval)
                    }
                    (Err(_), Some(last)) => {
                        let next = (last * 2).min(interval);
                        backoff = Some(next);
                        next
                    }
                };
                tokio::time::sleep(wait).await;
            }
        })
    }
}
