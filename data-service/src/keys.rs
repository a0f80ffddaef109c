//! The auth-service's public keys, held in memory: refreshed in the background, and on
//! demand when a token names a kid we do not know (rate-limited, so forged kids cannot turn
//! us into an amplifier against the auth-service). Each refresh asks every `--auth-url`
//! replica, and a key is trusted while any of them has listed it recently ([`Sightings`]), so
//! replicas that are mid-rotation or unreachable cannot make a key flap. Every change of the
//! keys starts a new generation, so the token cache can tell what was verified before a
//! withdrawal.

mod sightings;

use std::{
    sync::{Arc, PoisonError},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use common::{
    proto::auth::v1::{ListSigningKeysRequest, auth_service_client::AuthServiceClient},
    tokens::VerifyingKeys,
};
use futures::{StreamExt, stream::FuturesUnordered};
use tokio::sync::Mutex;
use tonic::transport::Channel;

pub use self::sightings::Sightings;
use crate::{
    auth_channel::AuthChannel,
    backoff::Backoff,
    metrics::Metrics,
    token_cache::{REFUSED_CAPACITY, TokenCache},
};

/// The keys as published at one point, numbered so verdicts can name what they relied on.
#[derive(Debug, Default)]
pub struct KeySet {
    /// Grows by one whenever the set changes.
    pub generation: u64,
    /// The keys.
    pub keys: VerifyingKeys,
}

/// Keys and verified tokens; cheap to clone.
#[derive(Clone)]
pub struct KeyStore {
    inner: Arc<Inner>,
}

struct Inner {
    keys: ArcSwap<KeySet>,
    /// Serialises installs, so generations are stored in order.
    installing: std::sync::Mutex<()>,
    /// When each key was last listed by some replica; held while the trusted set is derived
    /// from it and installed, so listings are applied in order.
    sightings: std::sync::Mutex<Sightings>,
    tokens: TokenCache,
    /// Every auth replica (its URL, for logs), asked one by one.
    replicas: Vec<(String, AuthServiceClient<Channel>)>,
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
            .field("tokens", &self.inner.tokens)
            .finish_non_exhaustive()
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
    /// How long a key no replica lists any more is still trusted (`--key-withdrawal-grace-secs`).
    pub withdrawal_grace: Duration,
}

impl KeyStore {
    /// An empty store that fetches keys from every replica of `auth`; call
    /// [`KeyStore::refresh`] or spawn the refresher before expecting any token to verify.
    pub fn new(auth: &AuthChannel, config: KeyStoreConfig, metrics: Arc<Metrics>) -> Self {
        let replicas = auth
            .members()
            .into_iter()
            .map(|(url, channel)| (url, AuthServiceClient::new(channel)))
            .collect();
        Self {
            inner: Arc::new(Inner {
                keys: ArcSwap::from_pointee(KeySet::default()),
                installing: std::sync::Mutex::new(()),
                sightings: std::sync::Mutex::new(Sightings::new(config.withdrawal_grace)),
                tokens: TokenCache::new(config.token_cache_capacity, REFUSED_CAPACITY),
                replicas,
                timeout: config.timeout,
                last_on_demand: Mutex::new(None),
                min_on_demand_interval: config.min_on_demand_interval,
                metrics,
            }),
        }
    }

    /// The keys as of now.
    pub fn current(&self) -> Arc<KeySet> {
        self.inner.keys.load_full()
    }

    /// True when a key with this kid is known.
    pub fn knows(&self, kid: &str) -> bool {
        self.inner.keys.load().keys.get(kid).is_some()
    }

    /// The verdicts on tokens checked with these keys.
    pub fn tokens(&self) -> &TokenCache {
        &self.inner.tokens
    }

    /// Asks every replica for its published keys and installs what they say, listing by
    /// listing; fails only when no replica answered.
    pub async fn refresh(&self) -> Result<(), String> {
        self.refresh_until(None).await
    }

    /// [`KeyStore::refresh`], done as soon as `kid` (when given) is known: a request waiting
    /// for it does not wait for the slowest replica.
    async fn refresh_until(&self, kid: Option<&str>) -> Result<(), String> {
        let mut listings: FuturesUnordered<_> = self
            .inner
            .replicas
            .iter()
            .map(|(url, client)| async move { (url, self.list(client.clone()).await) })
            .collect();
        let (mut answered, mut failure) = (false, None);
        while let Some((url, listed)) = listings.next().await {
            match listed {
                Ok(keys) => {
                    answered = true;
                    self.apply(&keys);
                    if kid.is_some_and(|kid| self.knows(kid)) {
                        return Ok(());
                    }
                }
                Err(error) => {
                    tracing::debug!(auth_url = %url, %error, "no signing keys from this replica");
                    failure = Some(format!("{url}: {error}"));
                }
            }
        }
        match (answered, failure) {
            (false, Some(error)) => Err(error),
            _ => Ok(()),
        }
    }

    /// One replica's published keys.
    async fn list(&self, mut client: AuthServiceClient<Channel>) -> Result<VerifyingKeys, String> {
        self.inner.metrics.key_refreshes.increment();
        let mut request = tonic::Request::new(ListSigningKeysRequest {});
        request.set_timeout(self.inner.timeout);
        // Continues the trace of the request whose unknown kid caused this refresh, if any.
        common::trace::inject(&mut request);
        let listed = tokio::time::timeout(self.inner.timeout, client.list_signing_keys(request))
            .await
            .map_err(|_| format!("ListSigningKeys: no answer within {:?}", self.inner.timeout))?
            .map_err(|status| format!("ListSigningKeys: {} {}", status.code(), status.message()))?
            .into_inner();
        let mut keys = VerifyingKeys::default();
        for key in listed.keys {
            keys.insert_paserk(&key.kid, &key.public_key)
                .map_err(|e| format!("ListSigningKeys returned a bad key: {e}"))?;
        }
        Ok(keys)
    }

    /// Records one replica's listing and installs the keys trusted after it.
    fn apply(&self, listed: &VerifyingKeys) {
        let mut sightings = self
            .inner
            .sightings
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        sightings.record(listed, now);
        self.install(sightings.trusted(now));
    }

    /// Replaces the keys when they changed, as a new generation. If a key disappeared
    /// (withdrawn: no replica has listed it for the grace), no token verified with an earlier
    /// generation is trusted again, so none signed by it is accepted, even one whose check was
    /// running during the change.
    pub fn install(&self, keys: VerifyingKeys) {
        let _installing = self
            .inner
            .installing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.current();
        let removed = current.keys.kids().any(|kid| keys.get(kid).is_none());
        let added = keys.kids().any(|kid| current.keys.get(kid).is_none());
        if !added && !removed {
            return;
        }
        let generation = current.generation + 1;
        let count = keys.len();
        self.inner.keys.store(Arc::new(KeySet { generation, keys }));
        if removed {
            tracing::warn!("a signing key was withdrawn: forgetting every verified token");
            self.inner.tokens.withdraw_before(generation);
        }
        tracing::info!(keys = count, generation, "signing keys updated");
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
        if let Err(error) = self.refresh_until(Some(kid)).await {
            tracing::warn!(%error, "refreshing signing keys for an unknown kid failed");
        }
    }

    /// Refreshes every `interval` (and at once). Failures are retried with [`Backoff`] from
    /// 1 s up to `interval`, and logged once per outage rather than once per attempt.
    pub fn spawn_refresher(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_secs(1), interval);
            let mut failing = false;
            loop {
                let wait = match store.refresh().await {
                    Ok(()) => {
                        if failing {
                            tracing::info!("signing keys refreshed again");
                        }
                        failing = false;
                        backoff.reset();
                        interval
                    }
                    Err(error) => {
                        if !failing {
                            tracing::warn!(%error, "refreshing signing keys failed; retrying with backoff");
                        }
                        failing = true;
                        backoff.next_delay()
                    }
                };
                tokio::time::sleep(wait).await;
            }
        })
    }
}
