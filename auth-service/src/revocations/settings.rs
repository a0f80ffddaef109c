//! The revocation feed's settings: every number a flag with an environment fallback.

use std::time::Duration;

use anyhow::bail;

/// How the revocation feed is stored, polled and streamed (flattened into the service's
/// settings).
#[derive(clap::Args, Clone, Debug)]
pub struct RevocationSettings {
    /// DynamoDB table of ended sessions by time (partition key `bucket`, sort key `sk`;
    /// enable TTL on `ttl`).
    #[arg(
        long = "revocations-table",
        env = "DYNAGATE_REVOCATIONS_TABLE",
        default_value = "dynagate-revocations"
    )]
    pub table: String,

    /// Milliseconds between reads of the revocations table: how soon this replica learns of
    /// other replicas' revocations. Each poll costs one Query per minute bucket it spans
    /// (usually one or two).
    #[arg(long = "revocation-poll-ms", env = "DYNAGATE_REVOCATION_POLL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub poll_ms: u64,

    /// Milliseconds between empty messages on a quiet WatchRevocations stream, sent only while
    /// this replica's last successful poll is recent.
    #[arg(long = "revocation-heartbeat-ms", env = "DYNAGATE_REVOCATION_HEARTBEAT_MS",
          default_value_t = 2000, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub heartbeat_ms: u64,

    /// Milliseconds each poll (and each resumed watch) looks back before where it left off,
    /// so a revocation written late or by a replica whose clock runs behind is still seen.
    /// Must exceed the AWS operation timeout (a write can commit that long after it started)
    /// plus the clock skew between replicas.
    #[arg(long = "revocation-lookback-ms", env = "DYNAGATE_REVOCATION_LOOKBACK_MS",
          default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub lookback_ms: u64,

    /// WatchRevocations streams this replica serves at most; beyond it a new one gets
    /// RESOURCE_EXHAUSTED with RetryInfo. Each costs a cursor into the shared log plus one
    /// message in flight (a few KiB), whatever the log holds.
    #[arg(long = "max-revocation-watchers", env = "DYNAGATE_MAX_REVOCATION_WATCHERS",
          default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_watchers: u32,

    /// Milliseconds a WatchRevocations stream may wait for its reader to take a message (a
    /// heartbeat goes out every --revocation-heartbeat-ms, so a reader that stops reading
    /// always has one waiting); then the stream ends with UNAVAILABLE and frees its slot.
    #[arg(long = "watch-send-timeout-ms", env = "DYNAGATE_WATCH_SEND_TIMEOUT_MS",
          default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub send_timeout_ms: u64,
}

impl RevocationSettings {
    /// The intervals, checked against the AWS operation timeout.
    pub fn timing(&self, aws_operation_timeout: Duration) -> anyhow::Result<Timing> {
        let lookback = Duration::from_millis(self.lookback_ms);
        if lookback <= aws_operation_timeout {
            bail!(
                "--revocation-lookback-ms {} must exceed the AWS operation timeout ({} ms): a \
                 revocation can commit that long after its time",
                self.lookback_ms,
                aws_operation_timeout.as_millis()
            );
        }
        Ok(Timing {
            poll: Duration::from_millis(self.poll_ms),
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            lookback,
            send_timeout: Duration::from_millis(self.send_timeout_ms),
        })
    }
}

/// The feed's intervals.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Between polls.
    pub poll: Duration,
    /// Between heartbeats on a quiet stream.
    pub heartbeat: Duration,
    /// How far before its last read each poll starts again.
    pub lookback: Duration,
    /// How long a stream waits for its reader to take a message before it ends.
    pub send_timeout: Duration,
}

impl Timing {
    /// How old the last successful poll may be for this replica's view to count as current
    /// (heartbeats flow only while it is): a few missed polls are tolerated, a dead table is
    /// not.
    pub fn freshness(&self) -> Duration {
        self.poll * 5
    }
}
