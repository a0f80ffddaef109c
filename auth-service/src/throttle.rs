//! Throttling of Login and Register by end-user address: a token bucket per address (GCRA,
//! from the `governor` crate), so one address cannot spend the password-hashing pool on
//! guesses or sign-ups, while a busy backend relaying many end users is not slowed down.
//!
//! The buckets live in a bounded cache (`moka`): at most `--throttle-max-addresses` are kept,
//! and an address idle long enough to have a full bucket again is forgotten, so memory stays
//! bounded however many addresses an attacker churns through. A forgotten address starts with
//! a full bucket, which is all a new address gets anyway: an attacker with many addresses
//! gains nothing from evicting its own buckets that it did not already have.

use std::{
    fmt,
    net::IpAddr,
    num::NonZeroU32,
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use common::{clock::Clock, metrics::Counter};
use governor::{
    Quota, RateLimiter,
    middleware::NoOpMiddleware,
    nanos::Nanos,
    state::{InMemoryState, NotKeyed, StateStore},
};
use ipnet::Ipv6Net;

use crate::{
    audit::{Event, Outcome, Record},
    client::ClientInfo,
    error::AuthError,
};

/// How long an untouched bucket is kept at least, even when it refills sooner: forgetting is
/// for memory under churn, not for precision.
const MIN_IDLE_KEPT: Duration = Duration::from_secs(60);

/// The per-address throttle's settings.
#[derive(clap::Args, Clone, Debug)]
pub struct ThrottleSettings {
    /// Login and Register calls per second one end-user address may make, sustained (the rate
    /// its token bucket refills at). 0 turns throttling off.
    #[arg(long, env = "DYNAGATE_THROTTLE_PER_SECOND", default_value_t = 20)]
    pub throttle_per_second: u32,

    /// Login and Register calls one address may make at once before the rate applies (the
    /// bucket's size). 0 turns throttling off.
    #[arg(long, env = "DYNAGATE_THROTTLE_BURST", default_value_t = 100)]
    pub throttle_burst: u32,

    /// Addresses whose buckets are kept at most (≈ 380 bytes each, so ≈ 7.5 MiB at the
    /// default); beyond it the least used are forgotten and start again with a full bucket.
    /// Bounds memory under churn; the addresses that call most are the ones kept.
    #[arg(long, env = "DYNAGATE_THROTTLE_MAX_ADDRESSES", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub throttle_max_addresses: u64,

    /// IPv6 addresses are throttled by network of this prefix length: one end user commonly
    /// holds a whole /64, and would otherwise get a fresh bucket per address.
    #[arg(long, env = "DYNAGATE_THROTTLE_IPV6_PREFIX", default_value_t = 64,
          value_parser = clap::value_parser!(u8).range(32..=128))]
    pub throttle_ipv6_prefix: u8,
}

/// A per-address token bucket for the calls that cost a password hash; cheap to clone.
#[derive(Clone, Default)]
pub struct AddressLimiter {
    inner: Option<Arc<Limiter>>,
    /// Calls refused because their address's bucket was empty.
    refused: Counter,
}

struct Limiter {
    buckets: RateLimiter<IpAddr, Buckets, WallClock, NoOpMiddleware<Duration>>,
    /// The same cache the limiter's buckets live in, for counting them.
    cache: moka::sync::Cache<IpAddr, Arc<InMemoryState>>,
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

impl AddressLimiter {
    /// A limiter that never refuses.
    pub fn disabled() -> Self {
        Self {
            inner: None,
            refused: Counter::default(),
        }
    }

    /// A limiter as `settings` say (disabled when the rate or the burst is 0), reading time
    /// from `clock` so tests can refill buckets without sleeping.
    pub fn new(settings: &ThrottleSettings, clock: Arc<dyn Clock>) -> Self {
        let (Some(rate), Some(burst)) = (
            NonZeroU32::new(settings.throttle_per_second),
            NonZeroU32::new(settings.throttle_burst),
        ) else {
            return Self::disabled();
        };
        let quota = Quota::per_second(rate).allow_burst(burst);
        // An idle bucket is full again after burst / rate; only then is forgetting it exact.
        let refill = Duration::from_secs_f64(f64::from(burst.get()) / f64::from(rate.get()));
        let cache = moka::sync::Cache::builder()
            .max_capacity(settings.throttle_max_addresses)
            .time_to_idle(refill.max(MIN_IDLE_KEPT))
            .build();
        let clock = WallClock(clock);
        Self {
            inner: Some(Arc::new(Limiter {
                buckets: RateLimiter::new(quota, Buckets(cache.clone()), clock.clone()),
                cache,
                clock,
                ipv6_prefix: settings.throttle_ipv6_prefix,
            })),
            refused: Counter::default(),
        }
    }

    /// Counts refused calls in `refused` (the service's metric).
    pub fn counting(mut self, refused: Counter) -> Self {
        self.refused = refused;
        self
    }

    /// Takes one token for `client`'s address; `AuthError::RateLimited` (and an audit line)
    /// when its bucket is empty. A call without a known address (no TCP peer) is let through:
    /// a shared bucket for all of them would let one caller lock out every other.
    pub fn check(&self, client: &ClientInfo) -> Result<(), AuthError> {
        let (Some(limiter), Some(addr)) = (&self.inner, client.addr) else {
            return Ok(());
        };
        let key = bucket_key(addr, limiter.ipv6_prefix);
        limiter.buckets.check_key(&key).map_err(|not_until| {
            Record::new(Event::RateLimited, Outcome::Refused, client).log();
            self.refused.increment();
            AuthError::RateLimited {
                retry_after: not_until.wait_time_from(governor::clock::Clock::now(&limiter.clock)),
            }
        })
    }

    /// How many addresses have a bucket right now (after pending evictions are applied).
    pub fn tracked(&self) -> u64 {
        self.inner.as_ref().map_or(0, |limiter| {
            limiter.cache.run_pending_tasks();
            limiter.cache.entry_count()
        })
    }
}

/// The bucket an address draws from: IPv4 addresses (also when written IPv4-mapped) on their
/// own, IPv6 addresses by network of `ipv6_prefix` bits.
fn bucket_key(addr: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                Ipv6Net::new(v6, ipv6_prefix).map_or(addr, |network| IpAddr::V6(network.network()))
            }
        },
    }
}

/// The buckets, bounded in number: governor's keyed state kept in a moka cache, one atomic
/// GCRA state per address.
struct Buckets(moka::sync::Cache<IpAddr, Arc<InMemoryState>>);

impl StateStore for Buckets {
    type Key = IpAddr;

    fn measure_and_replace<T, F, E>(&self, key: &IpAddr, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        // Two first calls of one address race to insert: moka's get_with lets one win.
        let state = self.0.get_with(*key, Arc::default);
        state.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

/// Our injectable clock as governor's: time since the Unix epoch (zero before it, which
/// only a broken clock reports).
#[derive(Clone, Debug)]
struct WallClock(Arc<dyn Clock>);

impl governor::clock::Clock for WallClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        let now: std::time::SystemTime = self.0.now().into();
        now.duration_since(UNIX_EPOCH).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use common::clock::ManualClock;
    use time::OffsetDateTime;

    use super::*;

    fn settings(per_second: u32, burst: u32, max_addresses: u64) -> ThrottleSettings {
        ThrottleSettings {
            throttle_per_second: per_second,
            throttle_burst: burst,
            throttle_max_addresses: max_addresses,
            throttle_ipv6_prefix: 64,
        }
    }

    fn client(addr: &str) -> ClientInfo {
        ClientInfo {
            addr: Some(addr.parse().unwrap()),
            user_agent: None,
        }
    }

    fn clock() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(
            OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
        ))
    }

    fn retry_after(result: Result<(), AuthError>) -> Duration {
        match result {
            Err(AuthError::RateLimited { retry_after }) => retry_after,
            other => panic!("expected RateLimited, got {other:?}"),
        }
    }

    #[test]
    fn a_burst_passes_then_the_rate_applies() {
        let clock = clock();
        let limiter = AddressLimiter::new(&settings(2, 3, 100), clock.clone());
        let alice = client("203.0.113.7");
        for _ in 0..3 {
            limiter.check(&alice).unwrap();
        }
        let wait = retry_after(limiter.check(&alice));
        assert_eq!(wait, Duration::from_millis(500), "one token per 1/2 s");
        clock.advance(Duration::from_millis(499));
        retry_after(limiter.check(&alice));
        clock.advance(Duration::from_millis(1));
        limiter.check(&alice).unwrap();
        retry_after(limiter.check(&alice));
    }

    #[test]
    fn addresses_have_their_own_buckets() {
        let limiter = AddressLimiter::new(&settings(1, 1, 100), clock());
        limiter.check(&client("203.0.113.7")).unwrap();
        retry_after(limiter.check(&client("203.0.113.7")));
        limiter.check(&client("203.0.113.8")).unwrap();
        limiter.check(&client("2001:db8::1")).unwrap();
    }

    #[test]
    fn ipv6_addresses_share_their_network_and_mapped_ipv4_its_address() {
        let limiter = AddressLimiter::new(&settings(1, 1, 100), clock());
        limiter.check(&client("2001:db8:1:2::1")).unwrap();
        retry_after(limiter.check(&client("2001:db8:1:2:ffff::9")));
        limiter.check(&client("2001:db8:1:3::1")).unwrap();
        limiter.check(&client("198.51.100.1")).unwrap();
        retry_after(limiter.check(&client("::ffff:198.51.100.1")));
    }

    #[test]
    fn a_zero_rate_or_burst_disables_it() {
        for (rate, burst) in [(0, 100), (20, 0)] {
            let limiter = AddressLimiter::new(&settings(rate, burst, 100), clock());
            for _ in 0..1000 {
                limiter.check(&client("203.0.113.7")).unwrap();
            }
            assert_eq!(limiter.tracked(), 0);
        }
    }

    #[test]
    fn calls_without_an_address_are_not_counted() {
        let limiter = AddressLimiter::new(&settings(1, 1, 100), clock());
        for _ in 0..10 {
            limiter.check(&ClientInfo::default()).unwrap();
        }
    }

    fn nth_address(n: u32) -> ClientInfo {
        ClientInfo {
            addr: Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))),
            user_agent: None,
        }
    }

    #[test]
    fn a_busy_address_stays_throttled_while_rare_ones_churn_through() {
        let cap = 1_000;
        let limiter = AddressLimiter::new(&settings(1, 5, cap), clock());
        let busy = client("203.0.113.7");
        for _ in 0..5 {
            limiter.check(&busy).unwrap();
        }
        // Ten times the cap of one-off addresses, the busy one calling now and then (2%).
        for n in 0..10 * u32::try_from(cap).unwrap() {
            limiter.check(&nth_address(n)).unwrap();
            if n % 50 == 0 {
                retry_after(limiter.check(&busy));
            }
        }
        assert!(limiter.tracked() <= cap);
        retry_after(limiter.check(&busy));
    }

    #[test]
    fn memory_stays_bounded_under_address_churn() {
        let cap = 1_000;
        let limiter = AddressLimiter::new(&settings(20, 100, cap), clock());
        for n in 0..100_000 {
            limiter.check(&nth_address(n)).unwrap();
        }
        let tracked = limiter.tracked();
        assert!(tracked <= cap, "{tracked} buckets kept, cap {cap}");
        assert!(tracked > 0);
    }
}
