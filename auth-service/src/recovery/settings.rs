//! The recovery tokens' settings: a flag with an environment fallback.

use std::time::Duration;

/// How long recovery tokens last (flattened into the service's settings).
#[derive(clap::Args, Clone, Debug)]
pub struct RecoverySettings {
    /// Seconds a recovery token (CreateRecoveryToken on the admin service; ResetPassword
    /// redeems it) stays valid. A newer token for the same user replaces it at once.
    #[arg(long = "recovery-token-ttl-secs", env = "DYNAGATE_RECOVERY_TOKEN_TTL_SECS",
          default_value_t = 900, value_parser = clap::value_parser!(u64).range(60..=86_400))]
    pub token_ttl_secs: u64,
}

impl RecoverySettings {
    /// A token's lifetime.
    pub fn token_ttl(&self) -> Duration {
        Duration::from_secs(self.token_ttl_secs)
    }
}
