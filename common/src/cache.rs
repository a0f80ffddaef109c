//! A cache of expiring values (temporary credentials, clients built from them) whose misses
//! are loaded once, however many callers miss at the same time, and whose loads survive the
//! callers: a load runs on its own task, so a caller that gives up (its deadline passed, the
//! client reset the stream) neither cancels the load others wait for nor starts a second one.
//! Invalidating a key also disowns a load running for it: what that load returns answers the
//! callers already waiting for it but is not cached, so the next caller loads afresh.
//! Whether a value may still be handed out is asked of an injected [`Clock`] (the wall clock
//! unless a test moves a manual one) at every read, so tests move time instead of sleeping.

use std::{
    collections::HashMap,
    fmt,
    hash::Hash,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use moka::{Expiry, future::Cache};

use crate::clock::{Clock, SystemClock};

/// A value that stops being usable at some point in time.
pub trait Expiring {
    /// When the value stops working.
    fn expires_at(&self) -> SystemTime;
}

impl<T: Expiring> Expiring for Arc<T> {
    fn expires_at(&self) -> SystemTime {
        T::expires_at(self)
    }
}

/// Expires each entry `margin` before its value does, so every value handed out still has at
/// least `margin` to live.
#[derive(Clone, Copy, Debug)]
pub struct UntilMargin(pub Duration);

impl UntilMargin {
    /// How long a value may still be handed out, seen from `now`.
    pub fn usable_for(&self, value: &impl Expiring, now: SystemTime) -> Duration {
        value
            .expires_at()
            .duration_since(now)
            .unwrap_or_default()
            .saturating_sub(self.0)
    }
}

/// [`UntilMargin`] seen from a [`Clock`]: what every read asks, and when moka drops an entry
/// (which only frees its slot: a read never hands out what the clock says is past its margin,
/// whatever moka's own timer thinks).
#[derive(Clone, Debug)]
struct ByClock {
    margin: UntilMargin,
    clock: Arc<dyn Clock>,
}

impl ByClock {
    /// How long `value` may still be handed out, now.
    fn usable_for(&self, value: &impl Expiring) -> Duration {
        self.margin.usable_for(value, self.clock.now().into())
    }
}

impl<K, V: Expiring> Expiry<K, V> for ByClock {
    fn expire_after_create(&self, _key: &K, value: &V, _now: Instant) -> Option<Duration> {
        Some(self.usable_for(value))
    }

    /// A value loaded over one the clock called past its margin lives as long as it itself
    /// may, not for what was left of the value it replaces (moka's default).
    fn expire_after_update(
        &self,
        _key: &K,
        value: &V,
        _now: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.usable_for(value))
    }
}

/// The load task ended without a result: it panicked, or the runtime is shutting down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the load task ended without a result")]
pub struct LoadAborted;

type InFlight<V, E> = Shared<BoxFuture<'static, Result<V, E>>>;

/// A load running for a key, numbered so that it can tell whether it is still the key's load
/// when it ends (an invalidation disowns it).
struct Running<V, E> {
    id: u64,
    load: InFlight<V, E>,
}

/// Expiring values by key, loaded at most once at a time per key.
pub struct LoadingCache<K, V, E> {
    cache: Cache<K, V>,
    loads: Arc<Mutex<HashMap<K, Running<V, E>>>>,
    next_load: Arc<AtomicU64>,
    /// Invalidations so far, of any key: what a [`LoadingCache::load_now`] checks.
    invalidations: Arc<AtomicU64>,
    expiry: ByClock,
}

impl<K, V, E> Clone for LoadingCache<K, V, E> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            loads: Arc::clone(&self.loads),
            next_load: Arc::clone(&self.next_load),
            invalidations: Arc::clone(&self.invalidations),
            expiry: self.expiry.clone(),
        }
    }
}

impl<K, V, E> fmt::Debug for LoadingCache<K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadingCache")
            .field("entries", &self.cache.entry_count())
            .field("margin", &self.expiry.margin.0)
            .finish_non_exhaustive()
    }
}

impl<K, V, E> LoadingCache<K, V, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Expiring + Clone + Send + Sync + 'static,
    E: From<LoadAborted> + Clone + Send + Sync + 'static,
{
    /// At most `capacity` entries, each dropped `margin` before its value expires by the
    /// wall clock.
    pub fn new(capacity: u64, margin: Duration) -> Self {
        Self::with_clock(capacity, margin, Arc::new(SystemClock))
    }

    /// [`LoadingCache::new`] with the time read from `clock`: tests move time instead of
    /// waiting for entries to expire.
    pub fn with_clock(capacity: u64, margin: Duration, clock: Arc<dyn Clock>) -> Self {
        let expiry = ByClock {
            margin: UntilMargin(margin),
            clock,
        };
        Self {
            cache: Cache::builder()
                .max_capacity(capacity)
                .expire_after(expiry.clone())
                .build(),
            loads: Arc::default(),
            next_load: Arc::default(),
            invalidations: Arc::default(),
            expiry,
        }
    }

    /// The cached value, if it still has more than the margin to live by the clock.
    pub async fn get(&self, key: &K) -> Option<V> {
        let value = self.cache.get(key).await?;
        // moka expires entries on its own timer; the clock decides what may be handed out.
        (!self.expiry.usable_for(&value).is_zero()).then_some(value)
    }

    /// The cached value, or the result of the load running for `key`, starting `load` on its
    /// own task when none runs. A successful load is cached before anyone sees it; a failed
    /// one answers everyone who waited for it and is not cached.
    pub async fn get_or_load<F>(&self, key: &K, load: F) -> Result<V, E>
    where
        F: Future<Output = Result<V, E>> + Send + 'static,
    {
        if let Some(value) = self.get(key).await {
            return Ok(value);
        }
        self.join_or_start(key, load).await
    }

    /// Runs `load` now, without joining a running load (for a caller that must not share
    /// another caller's failure), caching its value on success unless an invalidation (of any
    /// key: this path is rare) happened meanwhile.
    pub async fn load_now<F>(&self, key: &K, load: F) -> Result<V, E>
    where
        F: Future<Output = Result<V, E>> + Send + 'static,
    {
        let invalidations = || self.invalidations.load(Ordering::Acquire);
        let before = invalidations();
        let value = load.await?;
        if invalidations() == before && self.insert(key, &value).await && invalidations() != before
        {
            self.cache.invalidate(key).await;
        }
        Ok(value)
    }

    /// Forgets a key's value (e.g. credentials the service called expired, or a user whose
    /// credentials must be fetched again), and disowns a load running for it: its result still
    /// answers the callers waiting for it, but it is not cached, and the next caller starts a
    /// new load. A load that was caching its value just as this ran takes it out again, so a
    /// value loaded before the invalidation is never kept (a caller may meet it in between).
    pub async fn invalidate(&self, key: &K) {
        self.invalidations.fetch_add(1, Ordering::AcqRel);
        self.lock_loads().remove(key);
        self.cache.invalidate(key).await;
    }

    /// Entries cached now (approximate, as moka counts).
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Caches `value` unless it is already within its margin; returns whether it did.
    async fn insert(&self, key: &K, value: &V) -> bool {
        // A value that is already within its margin would be expired on arrival; callers
        // still get it (it works), but it is not worth a cache slot.
        let worth_it = !self.expiry.usable_for(value).is_zero();
        if worth_it {
            self.cache.insert(key.clone(), value.clone()).await;
        }
        worth_it
    }

    fn lock_loads(&self) -> std::sync::MutexGuard<'_, HashMap<K, Running<V, E>>> {
        self.loads.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True while load `id` is still `key`'s (not disowned by an invalidation).
    fn owns(&self, key: &K, id: u64) -> bool {
        self.lock_loads()
            .get(key)
            .is_some_and(|running| running.id == id)
    }

    /// Unregisters load `id` if it is still `key`'s; false if an invalidation disowned it.
    fn finish(&self, key: &K, id: u64) -> bool {
        let mut loads = self.lock_loads();
        let owned = loads.get(key).is_some_and(|running| running.id == id);
        if owned {
            loads.remove(key);
        }
        owned
    }

    fn join_or_start<F>(&self, key: &K, load: F) -> InFlight<V, E>
    where
        F: Future<Output = Result<V, E>> + Send + 'static,
    {
        let mut loads = self.lock_loads();
        if let Some(running) = loads.get(key) {
            return running.load.clone();
        }
        let this = self.clone();
        let owned_key = key.clone();
        let id = self.next_load.fetch_add(1, Ordering::Relaxed);
        // The task takes the lock to unregister itself, which it cannot get before the
        // registration below is done: no window where a finished load is still joinable
        // without its value cached, or cached without being unregistered.
        let task = tokio::spawn(async move {
            let result = load.await;
            let mut cached = false;
            if let Ok(value) = &result
                && this.owns(&owned_key, id)
            {
                cached = this.insert(&owned_key, value).await;
            }
            if !this.finish(&owned_key, id) && cached {
                // Invalidated while the value went in: it predates the invalidation.
                this.cache.invalidate(&owned_key).await;
            }
            result
        });
        let running = async move { task.await.unwrap_or_else(|_| Err(E::from(LoadAborted))) }
            .boxed()
            .shared();
        loads.insert(
            key.clone(),
            Running {
                id,
                load: running.clone(),
            },
        );
        running
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Clone, Debug, PartialEq)]
    struct Ticket {
        id: usize,
        expires_at: SystemTime,
    }

    impl Expiring for Ticket {
        fn expires_at(&self) -> SystemTime {
            self.expires_at
        }
    }

    #[derive(Clone, Debug, PartialEq)]
    enum Failure {
        Refused,
        Aborted,
    }

    impl From<LoadAborted> for Failure {
        fn from(_: LoadAborted) -> Self {
            Self::Aborted
        }
    }

    fn cache() -> LoadingCache<&'static str, Ticket, Failure> {
        LoadingCache::new(100, Duration::from_secs(60))
    }

    /// A load that counts itself and waits for `release` before answering.
    fn load(
        calls: &Arc<AtomicUsize>,
        release: &Arc<tokio::sync::Notify>,
        outcome: Result<(), Failure>,
    ) -> impl Future<Output = Result<Ticket, Failure>> + Send + 'static {
        let (calls, release) = (Arc::clone(calls), Arc::clone(release));
        async move {
            let id = calls.fetch_add(1, Ordering::SeqCst);
            release.notified().await;
            outcome.map(|()| Ticket {
                id,
                expires_at: SystemTime::now() + Duration::from_secs(3600),
            })
        }
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_load_and_later_calls_hit_the_cache() {
        let (cache, calls) = (cache(), Arc::new(AtomicUsize::new(0)));
        let release = Arc::new(tokio::sync::Notify::new());
        let waiters: Vec<_> = (0..20)
            .map(|_| {
                let (cache, load) = (cache.clone(), load(&calls, &release, Ok(())));
                tokio::spawn(async move { cache.get_or_load(&"alice", load).await })
            })
            .collect();
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        release.notify_waiters();
        for waiter in waiters {
            assert_eq!(waiter.await.unwrap().unwrap().id, 0);
        }
        let again = cache.get_or_load(&"alice", load(&calls, &release, Ok(())));
        assert_eq!(again.await.unwrap().id, 0);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_load_survives_the_caller_that_started_it() {
        let (cache, calls) = (cache(), Arc::new(AtomicUsize::new(0)));
        let release = Arc::new(tokio::sync::Notify::new());
        let first = cache.get_or_load(&"alice", load(&calls, &release, Ok(())));
        let gave_up = tokio::time::timeout(Duration::from_millis(10), first).await;
        assert!(
            gave_up.is_err(),
            "the first caller gives up while the load waits"
        );
        let second = tokio::spawn({
            let (cache, load) = (cache.clone(), load(&calls, &release, Ok(())));
            async move { cache.get_or_load(&"alice", load).await }
        });
        tokio::task::yield_now().await;
        release.notify_waiters();
        assert_eq!(second.await.unwrap().unwrap().id, 0);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "no second load");
    }

    #[tokio::test]
    async fn failures_answer_the_waiters_and_are_not_cached() {
        let (cache, calls) = (cache(), Arc::new(AtomicUsize::new(0)));
        let release = Arc::new(tokio::sync::Notify::new());
        let failing = tokio::spawn({
            let (cache, load) = (cache.clone(), load(&calls, &release, Err(Failure::Refused)));
            async move { cache.get_or_load(&"alice", load).await }
        });
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        release.notify_waiters();
        assert_eq!(failing.await.unwrap(), Err(Failure::Refused));
        let retried = tokio::spawn({
            let (cache, load) = (cache.clone(), load(&calls, &release, Ok(())));
            async move { cache.get_or_load(&"alice", load).await }
        });
        while calls.load(Ordering::SeqCst) == 1 {
            tokio::task::yield_now().await;
        }
        release.notify_waiters();
        assert_eq!(retried.await.unwrap().unwrap().id, 1);
    }

    #[tokio::test]
    async fn an_invalidation_disowns_the_running_load_and_the_next_caller_loads_afresh() {
        let (cache, calls) = (cache(), Arc::new(AtomicUsize::new(0)));
        let release = Arc::new(tokio::sync::Notify::new());
        let waiting = tokio::spawn({
            let (cache, load) = (cache.clone(), load(&calls, &release, Ok(())));
            async move { cache.get_or_load(&"alice", load).await }
        });
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        cache.invalidate(&"alice").await;
        release.notify_waiters();
        assert_eq!(
            waiting.await.unwrap().unwrap().id,
            0,
            "its waiter is answered"
        );
        assert_eq!(cache.get(&"alice").await, None, "but it is not cached");
        let fresh = tokio::spawn({
            let (cache, load) = (cache.clone(), load(&calls, &release, Ok(())));
            async move { cache.get_or_load(&"alice", load).await }
        });
        while calls.load(Ordering::SeqCst) == 1 {
            tokio::task::yield_now().await;
        }
        release.notify_waiters();
        assert_eq!(fresh.await.unwrap().unwrap().id, 1);
        assert_eq!(cache.get(&"alice").await.map(|t| t.id), Some(1));
    }

    #[tokio::test]
    async fn a_load_now_across_an_invalidation_is_not_cached() {
        let (cache, calls) = (cache(), Arc::new(AtomicUsize::new(0)));
        let release = Arc::new(tokio::sync::Notify::new());
        let loading = tokio::spawn({
            let (cache, load) = (cache.clone(), load(&calls, &release, Ok(())));
            async move { cache.load_now(&"alice", load).await }
        });
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        cache.invalidate(&"bob").await;
        release.notify_waiters();
        assert_eq!(loading.await.unwrap().unwrap().id, 0);
        assert_eq!(cache.get(&"alice").await, None);
    }

    #[tokio::test]
    async fn an_entry_expires_at_its_margin_by_the_clock_not_by_waiting() {
        let start = time::OffsetDateTime::now_utc();
        let clock = Arc::new(ManualClock::new(start));
        let cache: LoadingCache<&'static str, Ticket, Failure> =
            LoadingCache::with_clock(100, Duration::from_secs(60), clock.clone());
        let ticket = move |id, lives| Ticket {
            id,
            expires_at: (start + Duration::from_secs(lives)).into(),
        };
        let first = cache.get_or_load(&"alice", async move { Ok(ticket(0, 120)) });
        assert_eq!(first.await.unwrap().id, 0);

        clock.advance(Duration::from_secs(59));
        let cached = cache.get_or_load(&"alice", async move { Ok(ticket(1, 300)) });
        assert_eq!(cached.await.unwrap().id, 0, "a minute and a second left");
        clock.advance(Duration::from_secs(2));
        assert_eq!(cache.get(&"alice").await, None, "inside the margin");
        let reloaded = cache.get_or_load(&"alice", async move { Ok(ticket(2, 300)) });
        assert_eq!(reloaded.await.unwrap().id, 2, "loaded afresh");
        assert_eq!(
            cache.get(&"alice").await.map(|t| t.id),
            Some(2),
            "and cached"
        );
    }

    #[tokio::test]
    async fn values_within_their_margin_are_handed_out_but_not_cached() {
        let cache = cache();
        let short = Ticket {
            id: 7,
            expires_at: SystemTime::now() + Duration::from_secs(30),
        };
        let value = cache.load_now(&"alice", async move { Ok(short) }).await;
        assert_eq!(value.unwrap().id, 7);
        assert_eq!(cache.get(&"alice").await, None);
    }
}
