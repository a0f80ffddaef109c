//! The sizes of the in-memory caches beside their bounds, read at each scrape.

use prometheus_client::registry::Registry;

/// How many entries one cache holds now.
type EntryCount = Box<dyn Fn() -> u64 + Send + Sync>;

/// The sizes of a service's in-memory caches, read at each scrape, beside the bounds they were
/// built with: `dynagate_cache_entries{cache}` and `dynagate_cache_capacity{cache}` (absent for
/// a cache bounded by time alone). What a soak compares to prove no cache outgrows its bound.
#[derive(Default)]
pub struct CacheSizes(Vec<(&'static str, Option<u64>, EntryCount)>);

impl std::fmt::Debug for CacheSizes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, capacity, _)| (name, capacity)))
            .finish()
    }
}

impl CacheSizes {
    /// Adds the cache `name`, bounded by `capacity` entries (`None`: by time only), whose
    /// entry count `entries` reads (moka's counts are approximate and trail recent inserts).
    pub fn with(
        mut self,
        name: &'static str,
        capacity: Option<u64>,
        entries: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Self {
        self.0.push((name, capacity, Box::new(entries)));
        self
    }

    /// Exports the sizes into `registry`, read afresh at every scrape.
    pub fn register(self, registry: &mut Registry) {
        registry.register_collector(Box::new(self));
    }
}

impl prometheus_client::collector::Collector for CacheSizes {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::{
            encoding::EncodeMetric,
            metrics::{MetricType, gauge::ConstGauge},
        };
        let mut entries = encoder.encode_descriptor(
            "cache_entries",
            "Entries held now by each in-memory cache (approximate)",
            None,
            MetricType::Gauge,
        )?;
        for (name, _, count) in &self.0 {
            let labels = [("cache", *name)];
            let count = i64::try_from(count()).unwrap_or(i64::MAX);
            ConstGauge::new(count).encode(entries.encode_family(&labels)?)?;
        }
        let mut capacities = encoder.encode_descriptor(
            "cache_capacity",
            "The most entries each in-memory cache keeps (its configured bound)",
            None,
            MetricType::Gauge,
        )?;
        for (name, capacity, _) in &self.0 {
            if let Some(capacity) = capacity {
                let labels = [("cache", *name)];
                let capacity = i64::try_from(*capacity).unwrap_or(i64::MAX);
                ConstGauge::new(capacity).encode(capacities.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
