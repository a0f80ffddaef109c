//! The erasure's settings: a flag with an environment fallback.

use std::time::Duration;

/// How replicas carry account erasures on (flattened into the service's settings).
#[derive(clap::Args, Clone, Debug)]
pub struct ErasureSettings {
    /// Seconds between this replica's sweeps for account erasures to carry on: one whose
    /// replica died midway (its lease lapsed), or one that waited for the user's temporary
    /// credentials to expire before its last pass (docs/security.md, "Leaving").
    #[arg(long = "erasure-sweep-secs", env = "DYNAGATE_ERASURE_SWEEP_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub sweep_secs: u64,
}

impl ErasureSettings {
    /// The time between sweeps.
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_secs(self.sweep_secs)
    }
}
