//! The per-address budgets, driven with a manual clock: bursts, rates, the two budgets apart,
//! tokens held and given back, and memory under address churn.

use std::net::Ipv4Addr;

use common::clock::ManualClock;
use time::OffsetDateTime;

use super::*;

fn settings(per_second: u32, burst: u32, max_addresses: u64) -> ThrottleSettings {
    ThrottleSettings {
        throttle_per_second: per_second,
        throttle_burst: burst,
        throttle_failures_per_second: 0,
        throttle_failures_burst: 0,
        throttle_max_addresses: max_addresses,
        throttle_ipv6_prefix: 64,
    }
}

/// Only the failures budget: `per_second` and `burst`.
fn failures(per_second: u32, burst: u32) -> ThrottleSettings {
    ThrottleSettings {
        throttle_per_second: 0,
        throttle_burst: 0,
        throttle_failures_per_second: per_second,
        throttle_failures_burst: burst,
        throttle_max_addresses: 100,
        throttle_ipv6_prefix: 64,
    }
}

fn refused() -> Result<(), AuthError> {
    Err(AuthError::InvalidRefreshToken)
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

fn retry_after<T: fmt::Debug>(result: Result<T, AuthError>) -> Duration {
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

#[test]
fn failures_are_charged_and_a_spent_address_is_refused_before_its_call() {
    let clock = clock();
    let limiter = AddressLimiter::new(&failures(2, 3), clock.clone());
    let forger = client("203.0.113.7");
    for _ in 0..3 {
        limiter.check_failures(&forger).unwrap().settle(&refused());
    }
    let wait = retry_after(limiter.check_failures(&forger));
    assert_eq!(wait, Duration::from_millis(500), "one failure per 1/2 s");
    // Refused calls take nothing: they do not push the refill further out.
    for _ in 0..100 {
        retry_after(limiter.check_failures(&forger));
    }
    clock.advance(wait);
    limiter.check_failures(&forger).unwrap().settle(&refused());
    retry_after(limiter.check_failures(&forger));
    // Another address is untouched.
    limiter
        .check_failures(&client("203.0.113.8"))
        .unwrap()
        .settle(&refused());
}

#[test]
fn successes_and_our_own_failures_never_draw() {
    let limiter = AddressLimiter::new(&failures(1, 1), clock());
    let honest = client("203.0.113.7");
    for _ in 0..1000 {
        limiter.check_failures(&honest).unwrap().settle(&Ok(()));
        let unavailable: Result<(), _> = Err(AuthError::Unavailable("down".into()));
        limiter
            .check_failures(&honest)
            .unwrap()
            .settle(&unavailable);
    }
    limiter.check_failures(&honest).unwrap().settle(&refused());
    retry_after(limiter.check_failures(&honest));
}

#[test]
fn a_call_dropped_unsettled_is_charged() {
    let limiter = AddressLimiter::new(&failures(1, 2), clock());
    let canceller = client("203.0.113.7");
    for _ in 0..2 {
        drop(limiter.check_failures(&canceller).unwrap());
    }
    retry_after(limiter.check_failures(&canceller));
}

#[test]
fn the_two_budgets_are_separate() {
    let mut both = settings(1, 2, 100);
    both.throttle_failures_per_second = 1;
    both.throttle_failures_burst = 2;
    let limiter = AddressLimiter::new(&both, clock());
    let alice = client("203.0.113.7");
    for _ in 0..2 {
        limiter.check_failures(&alice).unwrap().settle(&refused());
    }
    retry_after(limiter.check_failures(&alice));
    limiter.check(&alice).unwrap();
    limiter.check(&alice).unwrap();
    retry_after(limiter.check(&alice));
    assert_eq!(limiter.tracked(), 1, "one entry holds both budgets");
}

#[test]
fn calls_running_at_once_hold_the_budget_between_them() {
    let limiter = AddressLimiter::new(&failures(1, 3), clock());
    let busy = client("203.0.113.7");
    let running: Vec<_> = (0..3)
        .map(|_| limiter.check_failures(&busy).unwrap())
        .collect();
    retry_after(limiter.check_failures(&busy));
    // They all succeed: every token comes back.
    for charge in running {
        charge.settle(&Ok(()));
    }
    for _ in 0..3 {
        limiter.check_failures(&busy).unwrap().settle(&refused());
    }
    retry_after(limiter.check_failures(&busy));
}

#[test]
fn a_token_given_back_never_overfills_a_bucket() {
    let clock = clock();
    let limiter = AddressLimiter::new(&failures(1, 2), clock.clone());
    let alice = client("203.0.113.7");
    let held = limiter.check_failures(&alice).unwrap();
    clock.advance(Duration::from_secs(60));
    held.settle(&Ok(()));
    for _ in 0..2 {
        limiter.check_failures(&alice).unwrap().settle(&refused());
    }
    retry_after(limiter.check_failures(&alice));
}

#[test]
fn failure_buckets_stay_bounded_under_address_churn() {
    let cap = 1_000;
    let mut churn = failures(10, 50);
    churn.throttle_max_addresses = cap;
    let limiter = AddressLimiter::new(&churn, clock());
    for n in 0..100_000 {
        limiter
            .check_failures(&nth_address(n))
            .unwrap()
            .settle(&refused());
    }
    let tracked = limiter.tracked();
    assert!(tracked <= cap, "{tracked} buckets kept, cap {cap}");
}
