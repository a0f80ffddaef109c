//! Where the per-address buckets live: one bounded `moka` cache entry per address holding both
//! of its GCRA states (the calls budget and the failures budget), so one bound covers both.
//! A token taken can be given back ([`Buckets::give_back`]): a Refresh or Logout holds one
//! while it runs and returns it when it succeeds.

use std::{
    convert::Infallible,
    net::IpAddr,
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use common::clock::Clock;
use governor::{
    nanos::Nanos,
    state::{InMemoryState, NotKeyed, StateStore},
};
use ipnet::Ipv6Net;

/// The two budgets of one address.
#[derive(Debug, Default)]
pub struct AddressState {
    calls: InMemoryState,
    failures: InMemoryState,
}

/// Which budget a limiter draws from.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    /// Login and Register calls.
    Calls,
    /// Refused Refresh and Logout calls.
    Failures,
}

/// The cache every budget's buckets live in.
pub type Cache = moka::sync::Cache<IpAddr, Arc<AddressState>>;

/// One budget's view of the cache, as governor's keyed state (keyed by [`bucket_key`]).
pub struct Buckets {
    cache: Cache,
    budget: Budget,
}

impl Buckets {
    /// The `budget` buckets in `cache`.
    pub fn new(cache: Cache, budget: Budget) -> Self {
        Self { cache, budget }
    }

    fn state<'a>(&self, entry: &'a AddressState) -> &'a InMemoryState {
        match self.budget {
            Budget::Calls => &entry.calls,
            Budget::Failures => &entry.failures,
        }
    }

    /// Returns one token taken from `addr`'s bucket, whose tokens come every `interval`: the
    /// GCRA's theoretical arrival time moves back by one interval. A bucket that has refilled
    /// meanwhile stays merely full (the next take starts from now), and a forgotten one is
    /// not made again.
    pub fn give_back(&self, addr: IpAddr, interval: Duration) {
        let Some(entry) = self.cache.get(&addr) else {
            return;
        };
        let interval = Nanos::from(interval);
        let _ = self
            .state(&entry)
            .measure_and_replace(&NotKeyed::NonKey, |arrival| {
                let earlier = arrival.map_or(Nanos::new(0), |tat| tat.saturating_sub(interval));
                Ok::<_, Infallible>(((), earlier))
            });
    }
}

impl StateStore for Buckets {
    type Key = IpAddr;

    fn measure_and_replace<T, F, E>(&self, addr: &IpAddr, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        // Two first calls of one address race to insert: moka's get_with lets one win.
        let entry = self.cache.get_with(*addr, Arc::default);
        self.state(&entry).measure_and_replace(&NotKeyed::NonKey, f)
    }
}

/// The bucket an address draws from: IPv4 addresses (also when written IPv4-mapped) on their
/// own, IPv6 addresses by network of `ipv6_prefix` bits.
pub fn bucket_key(addr: IpAddr, ipv6_prefix: u8) -> IpAddr {
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

/// Our injectable clock as governor's: time since the Unix epoch (zero before it, which
/// only a broken clock reports).
#[derive(Clone, Debug)]
pub struct WallClock(pub Arc<dyn Clock>);

impl governor::clock::Clock for WallClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        let now: std::time::SystemTime = self.0.now().into();
        now.duration_since(UNIX_EPOCH).unwrap_or_default()
    }
}
