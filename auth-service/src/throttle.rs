//! Throttling by end-user address, two token buckets per address (GCRA, from the `governor`
//! crate). Login and Register draw from the *calls* budget, so one address cannot spend the
//! password-hashing pool on guesses or sign-ups, while a busy backend relaying many end users
//! is not slowed down. Refresh and Logout draw from the *failures* budget, and in the end only
//! when they fail: each presented token costs a strongly consistent read, so one address must
//! not forge them by the hundred per second, yet honest rotations are never counted. A call
//! holds a token while it runs and gives it back when it succeeds ([`FailureCharge`]), so a
//! spent address is refused before any read, however many of its calls run at once.
//!
//! The buckets live in a bounded cache (`moka`): at most `--throttle-max-addresses` addresses
//! are kept, both budgets of one address in one entry, and an address idle long enough to
//! have full buckets again is forgotten, so memory stays bounded however many addresses an
//! attacker churns through. A forgotten address starts with full buckets, which is all a new
//! address gets anyway: an attacker with many addresses gains nothing from evicting its own
//! buckets that it did not already have.

mod buckets;
mod failures;
mod settings;

use std::{fmt, net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

use common::{clock::Clock, metrics::Counter};
use governor::{Quota, RateLimiter, middleware::NoOpMiddleware};

use self::buckets::{Buckets, Budget, Cache, WallClock, bucket_key};
pub use self::{failures::FailureCharge, settings::ThrottleSettings};
use crate::{
    audit::{Event, Outcome, Record},
    end_user::ClientInfo,
    error::AuthError,
};

/// How long an untouched bucket is kept at least, even when it refills sooner: forgetting is
/// for memory under churn, not for precision.
const MIN_IDLE_KEPT: Duration = Duration::from_secs(60);

/// The per-address budgets; cheap to clone.
#[derive(Clone, Default)]
pub struct AddressLimiter {
    inner: Option<Arc<Limiter>>,
    /// Login and Register calls refused because their address's bucket was empty.
    refused: Counter,
    /// Refresh and Logout calls refused, unread, because their address's failures were spent.
    refused_failures: Counter,
}

/// A refused call: audited, counted in `refused`, told when to come back.
fn refuse(
    limiter: &Limiter,
    client: &ClientInfo,
    refused: &Counter,
    not_until: &governor::NotUntil<Duration>,
) -> AuthError {
    Record::new(Event::RateLimited, Outcome::Refused, client).log();
    refused.increment();
    AuthError::RateLimited {
        retry_after: not_until.wait_time_from(governor::clock::Clock::now(&limiter.clock)),
    }
}

type Budgeted = RateLimiter<IpAddr, Buckets, WallClock, NoOpMiddleware<Duration>>;

struct Limiter {
    /// Login and Register; `None` when that budget is off.
    calls: Option<Budgeted>,
    /// Refused Refresh and Logout; `None` when that budget is off.
    failures: Option<Budgeted>,
    /// How often the failures budget gains a token: what a token given back is worth.
    failure_interval: Option<Duration>,
    /// The cache both budgets' buckets live in, for counting them.
    cache: Cache,
    clock: WallClock,
    ipv6_prefix: u8,
}

impl fmt::Debug for AddressLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddressLimiter")
            .field("enabled", &self.inner.is_some())
            .field("tracked", &self.tracked())
            .finish()
    }
}

/// A quota of `rate` per second and `burst` at once, and how long an idle bucket takes to be
/// full again; `None` when either is 0 (that budget is off).
fn quota(rate: u32, burst: u32) -> Option<(Quota, Duration)> {
    let (rate, burst) = (NonZeroU32::new(rate)?, NonZeroU32::new(burst)?);
    let refill = Duration::from_secs_f64(f64::from(burst.get()) / f64::from(rate.get()));
    Some((Quota::per_second(rate).allow_burst(burst), refill))
}

impl AddressLimiter {
    /// A limiter that never refuses.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// A limiter as `settings` say (a budget whose rate or burst is 0 is off), reading time
    /// from `clock` so tests can refill buckets without sleeping.
    pub fn new(settings: &ThrottleSettings, clock: Arc<dyn Clock>) -> Self {
        let calls = quota(settings.throttle_per_second, settings.throttle_burst);
        let failures = quota(
            settings.throttle_failures_per_second,
            settings.throttle_failures_burst,
        );
        // An idle bucket is full again after burst / rate; only then is forgetting it exact.
        let Some(refill) = [&calls, &failures]
            .into_iter()
            .filter_map(|budget| budget.as_ref().map(|(_, refill)| *refill))
            .max()
        else {
            return Self::disabled();
        };
        let cache = moka::sync::Cache::builder()
            .max_capacity(settings.throttle_max_addresses)
            .time_to_idle(refill.max(MIN_IDLE_KEPT))
            .build();
        let clock = WallClock(clock);
        let limiter = |budget, quota: Option<(Quota, Duration)>| {
            quota.map(|(quota, _)| {
                RateLimiter::new(quota, Buckets::new(cache.clone(), budget), clock.clone())
            })
        };
        Self {
            inner: Some(Arc::new(Limiter {
                failure_interval: failures
                    .as_ref()
                    .map(|(quota, _)| quota.replenish_interval()),
                calls: limiter(Budget::Calls, calls),
                failures: limiter(Budget::Failures, failures),
                cache: cache.clone(),
                clock: clock.clone(),
                ipv6_prefix: settings.throttle_ipv6_prefix,
            })),
            ..Self::default()
        }
    }

    /// Counts refused Login and Register calls in `refused` (the service's metric).
    pub fn counting(mut self, refused: Counter) -> Self {
        self.refused = refused;
        self
    }

    /// Counts Refresh and Logout calls refused unread in `refused` (the service's metric).
    pub fn counting_failures(mut self, refused: Counter) -> Self {
        self.refused_failures = refused;
        self
    }

    /// Takes one token for `client`'s address (Login, Register); `AuthError::RateLimited`
    /// (and an audit line) when its bucket is empty. A call without a known address (no TCP
    /// peer) is let through: a shared bucket for all of them would let one caller lock out
    /// every other.
    pub fn check(&self, client: &ClientInfo) -> Result<(), AuthError> {
        let Some((limiter, addr)) = self.bucket(client) else {
            return Ok(());
        };
        let Some(calls) = &limiter.calls else {
            return Ok(());
        };
        calls
            .check_key(&addr)
            .map_err(|not_until| refuse(limiter, client, &self.refused, &not_until))
    }

    /// Takes a token of `client`'s failures budget for a Refresh or Logout call before any of
    /// its work, else `AuthError::RateLimited` (and an audit line). The call keeps it as its
    /// charge unless [`FailureCharge::settle`] finds it succeeded.
    pub fn check_failures(&self, client: &ClientInfo) -> Result<FailureCharge, AuthError> {
        let Some((limiter, addr)) = self.bucket(client) else {
            return Ok(FailureCharge::none());
        };
        let Some(failures) = &limiter.failures else {
            return Ok(FailureCharge::none());
        };
        failures
            .check_key(&addr)
            .map_err(|not_until| refuse(limiter, client, &self.refused_failures, &not_until))?;
        Ok(FailureCharge::held(Arc::clone(limiter), addr))
    }

    /// The limiter and the bucket of `client`'s address, when throttling is on and the
    /// address known.
    fn bucket(&self, client: &ClientInfo) -> Option<(&Arc<Limiter>, IpAddr)> {
        let limiter = self.inner.as_ref()?;
        Some((limiter, bucket_key(client.addr?, limiter.ipv6_prefix)))
    }

    /// How many addresses have buckets right now (after pending evictions are applied).
    pub fn tracked(&self) -> u64 {
        self.inner.as_ref().map_or(0, |limiter| {
            limiter.cache.run_pending_tasks();
            limiter.cache.entry_count()
        })
    }
}

#[cfg(test)]
mod tests;
