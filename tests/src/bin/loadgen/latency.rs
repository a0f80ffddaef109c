//! The latency of a cheap RPC (ListSigningKeys: no DynamoDB, no hashing), called one at a
//! time on its own connection, paced so that the probe itself is a light load: quiet, and
//! while a login flood runs, to see what the flood does to the service's other callers.

use std::time::{Duration, Instant};

use common::proto::auth::v1::{ListSigningKeysRequest, auth_service_client::AuthServiceClient};
use tokio::time::MissedTickBehavior;
use tonic::transport::Channel;

/// One call every this often (or back to back when calls take longer).
const PACE: Duration = Duration::from_millis(2);

/// The latencies of one probe, sorted.
pub struct Latencies {
    sorted: Vec<Duration>,
    /// Calls that failed (not in the latencies).
    pub failed: u64,
}

impl Latencies {
    /// The latency `p` (0..=1) of the calls were at most.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = (p * (self.sorted.len() - 1) as f64).round() as usize;
        self.sorted[rank.min(self.sorted.len() - 1)]
    }

    /// Calls measured.
    pub fn count(&self) -> usize {
        self.sorted.len()
    }

    /// `p50 … µs, p99 … µs, max … µs (n calls)`.
    pub fn describe(&self) -> String {
        format!(
            "p50 {} µs, p99 {} µs, max {} µs ({} calls, {} failed)",
            self.percentile(0.5).as_micros(),
            self.percentile(0.99).as_micros(),
            self.percentile(1.0).as_micros(),
            self.count(),
            self.failed
        )
    }
}

/// Calls ListSigningKeys every [`PACE`] on `channel` for `duration`.
pub async fn probe(channel: Channel, duration: Duration) -> Latencies {
    let mut client = AuthServiceClient::new(channel);
    let until = Instant::now() + duration;
    let mut ticks = tokio::time::interval(PACE);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut sorted, mut failed) = (Vec::new(), 0);
    while Instant::now() < until {
        ticks.tick().await;
        let start = Instant::now();
        match client.list_signing_keys(ListSigningKeysRequest {}).await {
            Ok(_) => sorted.push(start.elapsed()),
            Err(_) => failed += 1,
        }
    }
    sorted.sort_unstable();
    Latencies { sorted, failed }
}

/// `during / quiet` as `2.3×`.
pub fn ratio(during: Duration, quiet: Duration) -> String {
    format!(
        "{:.2}×",
        during.as_secs_f64() / quiet.as_secs_f64().max(1e-9)
    )
}
