//! Prometheus metrics: the counters of expensive work (hashes, STS calls, DynamoDB calls,
//! signature checks), the per-request gRPC counter and latency histogram, and the HTTP endpoint
//! that serves them as Prometheus text. The same counters are read in-process by tests and
//! benchmarks to prove what happened without timing anything: one source of truth.

mod cache_sizes;
mod counters;
mod endpoint;
mod layer;
mod requests;

use prometheus_client::registry::Registry;

pub use cache_sizes::CacheSizes;
pub use counters::{Counter, LabeledCounter};
pub use endpoint::serve_metrics;
pub use layer::{Metered, RequestMetricsLayer};
pub use requests::{MethodNames, RequestMetrics, latency_histogram};

/// The prefix of every Dynagate metric name.
pub const PREFIX: &str = "dynagate";

/// The registry's metrics in Prometheus (OpenMetrics) text.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

#[cfg(test)]
mod tests;
