//! The counters and cache sizes as a scrape reads them: what is exported is what is counted.

use std::sync::Arc;

use super::*;

#[test]
fn a_counter_reads_what_it_exports() {
    let mut registry = Registry::with_prefix(PREFIX);
    let counter = Counter::default();
    counter.register(&mut registry, "things", "Things done");
    counter.increment();
    counter.increment();
    assert_eq!(counter.get(), 2);
    let text = encode(&registry).unwrap();
    assert!(text.contains("# TYPE dynagate_things counter\n"), "{text}");
    assert!(text.contains("\ndynagate_things_total 2\n"), "{text}");
}

#[test]
fn a_labeled_counter_exports_every_value_and_sums_them() {
    let mut registry = Registry::with_prefix(PREFIX);
    let counter = LabeledCounter::new("result", &["hit", "miss"]);
    counter.register(&mut registry, "lookups", "Lookups");
    counter.increment("hit");
    counter.increment("hit");
    counter.counter("miss").increment();
    assert_eq!((counter.count("hit"), counter.count("miss")), (2, 1));
    assert_eq!(counter.get(), 3);
    let text = encode(&registry).unwrap();
    assert!(
        text.contains("dynagate_lookups_total{result=\"hit\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("dynagate_lookups_total{result=\"miss\"} 1\n"),
        "{text}"
    );
}

#[test]
fn cache_sizes_are_read_at_each_scrape() {
    let mut registry = Registry::with_prefix(PREFIX);
    let count = Arc::new(std::sync::atomic::AtomicU64::new(3));
    let read = Arc::clone(&count);
    CacheSizes::default()
        .with("tokens", Some(10), move || {
            read.load(std::sync::atomic::Ordering::Relaxed)
        })
        .with("revoked", None, || 0)
        .register(&mut registry);
    let text = encode(&registry).unwrap();
    assert!(
        text.contains("dynagate_cache_entries{cache=\"tokens\"} 3\n"),
        "{text}"
    );
    assert!(
        text.contains("dynagate_cache_capacity{cache=\"tokens\"} 10\n"),
        "{text}"
    );
    assert!(!text.contains("dynagate_cache_capacity{cache=\"revoked\"}"));
    count.store(7, std::sync::atomic::Ordering::Relaxed);
    let text = encode(&registry).unwrap();
    assert!(text.contains("dynagate_cache_entries{cache=\"tokens\"} 7\n"));
}
