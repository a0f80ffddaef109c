//! The lockout's settings: every number a flag with an environment fallback.

use std::time::Duration;

use anyhow::bail;

use super::rules::Rules;

/// How failed logins lock a username (flattened into the service's settings).
#[derive(clap::Args, Clone, Debug)]
pub struct LockoutSettings {
    /// DynamoDB table of failed-login counts per username (partition key `username_hash`;
    /// enable TTL on `ttl`).
    #[arg(
        long = "attempts-table",
        env = "DYNAGATE_ATTEMPTS_TABLE",
        default_value = "dynagate-login-attempts"
    )]
    pub attempts_table: String,

    /// Failed logins (or wrong old passwords, or wrong second factors) of one username after
    /// which it is locked; the lock lasts --lockout-first-secs, doubling with each further
    /// failure. Known and unknown usernames alike. 0 turns the lockout off.
    #[arg(long = "lockout-threshold", env = "DYNAGATE_LOCKOUT_THRESHOLD", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub threshold: u32,

    /// Seconds of the first lock, at the threshold-th failure; each further failure doubles it.
    #[arg(long = "lockout-first-secs", env = "DYNAGATE_LOCKOUT_FIRST_SECS", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub first_secs: u64,

    /// Longest lock, in seconds.
    #[arg(long = "lockout-max-secs", env = "DYNAGATE_LOCKOUT_MAX_SECS", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub max_secs: u64,

    /// Seconds without a counted attempt (and past any lock) after which a username's count
    /// starts again. A successful login resets it at once.
    #[arg(long = "lockout-quiet-secs", env = "DYNAGATE_LOCKOUT_QUIET_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=2_592_000))]
    pub quiet_secs: u64,
}

impl LockoutSettings {
    /// The rules these settings describe; `None` when the lockout is off.
    pub fn rules(&self) -> anyhow::Result<Option<Rules>> {
        if self.threshold == 0 {
            return Ok(None);
        }
        if self.max_secs < self.first_secs {
            bail!(
                "--lockout-max-secs {} is below --lockout-first-secs {}",
                self.max_secs,
                self.first_secs
            );
        }
        Ok(Some(Rules {
            threshold: self.threshold,
            first_lock: Duration::from_secs(self.first_secs),
            max_lock: Duration::from_secs(self.max_secs),
            quiet: Duration::from_secs(self.quiet_secs),
        }))
    }
}
