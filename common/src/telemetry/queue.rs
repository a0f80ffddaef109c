//! The bound on spans waiting for the collector. The SDK's batch processor already refuses
//! spans past its queue size, but keeps the count to itself; this wrapper admits a span only
//! while fewer than the bound wait (the same bound the processor is built with), so the
//! processor's own queue never overflows, and counts every span it turns away, and every span
//! of a batch the collector did not take, in `dynagate_trace_spans_dropped_total`.
//!
//! A span counts as waiting from its end until its batch is handed to the exporter, so at most
//! `bound` spans wait, plus one batch being sent: what a dead or hanging collector can hold.

use std::{
    sync::{
        Arc, LazyLock,
        atomic::{AtomicI64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use opentelemetry::Context;
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{SpanData, SpanExporter, SpanProcessor},
};
use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Why spans were lost: turned away at a full queue, or in a batch the collector refused or
/// never answered.
const REASONS: [&str; 2] = ["queue_full", "export_failed"];

type Dropped = Family<[(&'static str, &'static str); 1], Counter>;

/// Spans lost, by reason, in every exporting pipeline of the process; every reason exported
/// from the start, at 0.
static DROPPED: LazyLock<Dropped> = LazyLock::new(|| {
    let family = Dropped::default();
    for reason in REASONS {
        let _ = family.get_or_create(&[("reason", reason)]);
    }
    family
});

/// Spans waiting now, in every exporting pipeline of the process.
static QUEUED: LazyLock<Gauge<i64, AtomicI64>> = LazyLock::new(Gauge::default);

/// Exports the span queue's figures: `dynagate_trace_spans_dropped_total{reason}` and
/// `dynagate_trace_spans_queued` (both zero when nothing is exported).
pub fn register(registry: &mut Registry) {
    registry.register(
        "trace_spans_dropped",
        "Spans not exported: turned away at a full queue (queue_full), or in a batch the \
         collector refused or did not answer in time (export_failed)",
        DROPPED.clone(),
    );
    registry.register(
        "trace_spans_queued",
        "Spans waiting to be sent to the OTLP collector",
        QUEUED.clone(),
    );
}

/// The spans dropped so far for `reason` (`queue_full` or `export_failed`).
pub fn dropped(reason: &'static str) -> u64 {
    DROPPED.get_or_create(&[("reason", reason)]).get()
}

fn count_dropped(reason: &'static str, spans: usize) {
    let spans = u64::try_from(spans).unwrap_or(u64::MAX);
    DROPPED.get_or_create(&[("reason", reason)]).inc_by(spans);
}

/// How many spans wait, shared by the processor (which admits them) and the exporter (which
/// takes them out).
#[derive(Debug)]
pub struct Queue {
    bound: usize,
    waiting: AtomicUsize,
}

impl Queue {
    /// A queue of at most `bound` spans.
    pub fn new(bound: usize) -> Arc<Self> {
        Arc::new(Self {
            bound,
            waiting: AtomicUsize::new(0),
        })
    }

    /// Takes a place, or counts a drop and returns false when every place is taken.
    fn admit(&self) -> bool {
        let admitted = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |waiting| {
                (waiting < self.bound).then_some(waiting + 1)
            })
            .is_ok();
        if admitted {
            QUEUED.inc();
        } else {
            count_dropped("queue_full", 1);
        }
        admitted
    }

    /// Frees the places of `spans` spans that left the queue.
    fn leave(&self, spans: usize) {
        self.waiting.fetch_sub(spans, Ordering::AcqRel);
        QUEUED.dec_by(i64::try_from(spans).unwrap_or(i64::MAX));
    }
}

/// A span processor that passes on a span only while its queue has room.
#[derive(Debug)]
pub struct Bounded<P> {
    inner: P,
    queue: Arc<Queue>,
}

impl<P> Bounded<P> {
    /// `inner` (built with a queue of `queue.bound` spans), admitting through `queue`.
    pub fn new(inner: P, queue: Arc<Queue>) -> Self {
        Self { inner, queue }
    }
}

impl<P: SpanProcessor> SpanProcessor for Bounded<P> {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.queue.admit() {
            self.inner.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// An exporter that frees the queue places of each batch it is given and counts the spans of
/// a batch that fails.
#[derive(Debug)]
pub struct Dequeuing<E> {
    inner: E,
    queue: Arc<Queue>,
}

impl<E> Dequeuing<E> {
    /// `inner`, freeing places in `queue`.
    pub fn new(inner: E, queue: Arc<Queue>) -> Self {
        Self { inner, queue }
    }
}

impl<E: SpanExporter> SpanExporter for Dequeuing<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        self.queue.leave(spans);
        let result = self.inner.export(batch).await;
        if result.is_err() {
            count_dropped("export_failed", spans);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::{
        error::OTelSdkError,
        trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider},
    };
    use tokio::sync::watch;

    use super::*;

    /// A collector that takes no batch until the gate opens, then refuses every one.
    #[derive(Debug)]
    struct GatedCollector {
        gate: watch::Receiver<bool>,
        batches: Arc<AtomicUsize>,
    }

    impl SpanExporter for GatedCollector {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            self.batches.fetch_add(1, Ordering::SeqCst);
            let mut gate = self.gate.clone();
            let _ = gate.wait_for(|open| *open).await;
            Err(OTelSdkError::InternalFailure("refused".into()))
        }
    }

    #[test]
    fn a_collector_that_never_answers_holds_at_most_the_bound_and_the_rest_is_counted() {
        const BOUND: usize = 8;
        const SPANS: usize = 1000;
        let (open, gate) = watch::channel(false);
        let batches = Arc::new(AtomicUsize::new(0));
        let collector = GatedCollector {
            gate,
            batches: Arc::clone(&batches),
        };
        let queue = Queue::new(BOUND);
        let config = BatchConfigBuilder::default()
            .with_max_queue_size(BOUND)
            .build();
        let batch = BatchSpanProcessor::new(Dequeuing::new(collector, queue.clone()), config);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Bounded::new(batch, queue.clone()))
            .build();
        let (full_before, failed_before) = (dropped("queue_full"), dropped("export_failed"));

        let tracer = provider.tracer("test");
        for _ in 0..SPANS {
            tracer.start("call").end();
            assert!(queue.waiting.load(Ordering::SeqCst) <= BOUND);
        }

        // Every span not turned away is waiting or in the one batch handed to the collector.
        let turned_away = usize::try_from(dropped("queue_full") - full_before).unwrap();
        let waiting = queue.waiting.load(Ordering::SeqCst);
        assert!(
            turned_away >= SPANS - 2 * BOUND,
            "{turned_away} turned away"
        );
        assert!(
            batches.load(Ordering::SeqCst) <= 1,
            "one export at a time, held"
        );
        assert!(waiting <= BOUND);

        // Once the collector answers (refusing), what it was given is counted as failed.
        open.send_replace(true);
        let _ = provider.shutdown();
        let failed = usize::try_from(dropped("export_failed") - failed_before).unwrap();
        assert_eq!(
            turned_away + failed + queue.waiting.load(Ordering::SeqCst),
            SPANS,
            "every span is exported, counted or still waiting"
        );
    }
}
