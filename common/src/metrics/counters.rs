//! The two kinds of counters the services keep: plain counts of expensive work, and counts
//! split by one label whose values are fixed in advance.

use prometheus_client::{
    metrics::{counter::Counter as PromCounter, family::Family},
    registry::Registry,
};

/// A monotonically increasing count, exported once registered.
#[derive(Clone, Debug, Default)]
pub struct Counter(PromCounter);

impl Counter {
    /// Adds one.
    pub fn increment(&self) {
        self.0.inc();
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.get()
    }

    /// Exports the counter as `dynagate_<name>_total`.
    pub fn register(&self, registry: &mut Registry, name: &str, help: &str) {
        registry.register(name, help, self.0.clone());
    }
}

/// A counter split by one label whose values come from a fixed list (`outcome="ok"`). Every
/// value is exported from the start, at 0, so a rate over it never misses its first count.
#[derive(Clone, Debug)]
pub struct LabeledCounter {
    label: &'static str,
    values: &'static [&'static str],
    family: Family<[(&'static str, &'static str); 1], PromCounter>,
}

impl LabeledCounter {
    /// A counter by `label`, taking the values in `values`.
    pub fn new(label: &'static str, values: &'static [&'static str]) -> Self {
        let family = Family::default();
        for value in values {
            let _ = family.get_or_create(&[(label, *value)]);
        }
        Self {
            label,
            values,
            family,
        }
    }

    /// Adds one under `value` (one of the values it was made with).
    pub fn increment(&self, value: &'static str) {
        debug_assert!(
            self.values.contains(&value),
            "{value} is not a value of {}",
            self.label
        );
        self.family.get_or_create(&[(self.label, value)]).inc();
    }

    /// The count under `value`.
    pub fn count(&self, value: &'static str) -> u64 {
        self.family
            .get(&[(self.label, value)])
            .map_or(0, |counter| counter.get())
    }

    /// The count under every value.
    pub fn get(&self) -> u64 {
        self.values.iter().map(|value| self.count(value)).sum()
    }

    /// The count under `value` as a plain [`Counter`] sharing it: what an older accessor
    /// reads (`credential_loads` is the `miss` of `credential_cache`). Not to be registered.
    pub fn counter(&self, value: &'static str) -> Counter {
        Counter(self.family.get_or_create_owned(&[(self.label, value)]))
    }

    /// Exports the counter as `dynagate_<name>_total{<label>}`.
    pub fn register(&self, registry: &mut Registry, name: &str, help: &str) {
        registry.register(name, help, self.family.clone());
    }
}
