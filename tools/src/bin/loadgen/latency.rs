//! Latencies and the paced probe: a cheap call made one at a time on its own connection, paced
//! so that the probe itself is a light load, quiet and while a flood runs, to see what the
//! flood does to the services' other callers.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use tokio::time::MissedTickBehavior;

/// One call every this often (or back to back when calls take longer).
pub const PACE: Duration = Duration::from_millis(2);

/// The latencies of one run, sorted.
pub struct Latencies {
    sorted: Vec<Duration>,
    /// Calls that failed (not in the latencies).
    pub failed: u64,
}

impl Latencies {
    /// Sorts `samples`.
    pub fn new(mut samples: Vec<Duration>, failed: u64) -> Self {
        samples.sort_unstable();
        Self {
            sorted: samples,
            failed,
        }
    }

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

    /// p50, p99 and max with the counts.
    pub fn summary(&self) -> Summary {
        Summary {
            calls: self.count() as u64,
            failed: self.failed,
            p50: self.percentile(0.5),
            p99: self.percentile(0.99),
            max: self.percentile(1.0),
        }
    }

    /// `p50 … µs, p99 … µs, max … µs (n calls)`.
    pub fn describe(&self) -> String {
        self.summary().describe()
    }
}

/// What a table row says of some latencies.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    /// Calls that succeeded.
    pub calls: u64,
    /// Calls that failed.
    pub failed: u64,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest.
    pub max: Duration,
}

impl Summary {
    /// `p50 … µs, p99 … µs, max … µs (n calls, f failed)`.
    pub fn describe(&self) -> String {
        format!(
            "p50 {} µs, p99 {} µs, max {} µs ({} calls, {} failed)",
            self.p50.as_micros(),
            self.p99.as_micros(),
            self.max.as_micros(),
            self.calls,
            self.failed
        )
    }
}

/// Makes `call` every [`PACE`] for `duration`; `call` answers whether it succeeded.
pub async fn probe<F, Fut>(duration: Duration, mut call: F) -> Latencies
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + duration;
    let mut ticks = tokio::time::interval(PACE);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut samples, mut failed) = (Vec::new(), 0);
    while Instant::now() < until {
        ticks.tick().await;
        let start = Instant::now();
        if call().await {
            samples.push(start.elapsed());
        } else {
            failed += 1;
        }
    }
    Latencies::new(samples, failed)
}
