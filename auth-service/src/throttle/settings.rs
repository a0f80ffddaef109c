//! The per-address throttle's flags: the budget of calls that cost a password hash, the budget
//! of refused refresh tokens, and the memory both live in.

/// The per-address throttle's settings.
#[derive(clap::Args, Clone, Debug)]
pub struct ThrottleSettings {
    /// Login and Register calls per second one end-user address may make, sustained (the rate
    /// its token bucket refills at). 0 turns this throttle off.
    #[arg(long, env = "DYNAGATE_THROTTLE_PER_SECOND", default_value_t = 20)]
    pub throttle_per_second: u32,

    /// Login and Register calls one address may make at once before the rate applies (the
    /// bucket's size). 0 turns this throttle off.
    #[arg(long, env = "DYNAGATE_THROTTLE_BURST", default_value_t = 100)]
    pub throttle_burst: u32,

    /// Refused Refresh and Logout calls (a forged, unknown, reused or malformed refresh
    /// token: UNAUTHENTICATED) per second one end-user address may cause, sustained. Once its
    /// budget is spent, the address's Refresh and Logout calls are RESOURCE_EXHAUSTED before
    /// any read. A call holds a token while it runs and gives it back if it succeeds: honest
    /// rotations never draw in the end. 0 turns this throttle off.
    #[arg(
        long,
        env = "DYNAGATE_THROTTLE_FAILURES_PER_SECOND",
        default_value_t = 10
    )]
    pub throttle_failures_per_second: u32,

    /// Refused Refresh and Logout calls one address may cause at once before
    /// --throttle-failures-per-second applies; also the most Refresh and Logout calls of one
    /// address that run at once. 0 turns this throttle off.
    #[arg(long, env = "DYNAGATE_THROTTLE_FAILURES_BURST", default_value_t = 50)]
    pub throttle_failures_burst: u32,

    /// Addresses whose buckets are kept at most (≈ 400 bytes each, both budgets together, so
    /// ≈ 8 MiB at the default); beyond it the least used are forgotten and start again with
    /// full buckets. Bounds memory under churn; the addresses that call most are the ones kept.
    #[arg(long, env = "DYNAGATE_THROTTLE_MAX_ADDRESSES", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub throttle_max_addresses: u64,

    /// IPv6 addresses are throttled by network of this prefix length: one end user commonly
    /// holds a whole /64, and would otherwise get a fresh bucket per address.
    #[arg(long, env = "DYNAGATE_THROTTLE_IPV6_PREFIX", default_value_t = 64,
          value_parser = clap::value_parser!(u8).range(32..=128))]
    pub throttle_ipv6_prefix: u8,
}
