//! Prometheus metrics: the counters of expensive work (hashes, STS calls, DynamoDB calls,
//! signature checks), the per-request gRPC counter and latency histogram, and the HTTP endpoint
//! that serves them as Prometheus text. The same counters are read in-process by tests and
//! benchmarks to prove what happened without timing anything: one source of truth.

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter as PromCounter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};
use tokio::{net::TcpListener, task::JoinSet};
use tower::{Layer, Service};

/// The prefix of every Dynagate metric name.
pub const PREFIX: &str = "dynagate";

/// A monotonically increasing count, exported once registered.
#[derive(Clone, Debug, Default)]
pub struct Counter(PromCounter);

impl Counter {
    /// Adds one.
    pub fn increment(&self) {
        self.0.inc();
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

/// Labels of one gRPC method: always one of the server's own methods (see [`MethodNames`]).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    service: &'static str,
    method: &'static str,
}

/// The labels of every call to a path the server does not answer.
const UNKNOWN_METHOD: MethodLabels = MethodLabels {
    service: "unknown",
    method: "unknown",
};

/// Labels of one gRPC method and the status it answered.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    service: &'static str,
    method: &'static str,
    code: &'static str,
}

/// The methods a server answers, by request path: the only `service` and `method` label
/// values its calls can get. Any other path (a client can send whatever it likes, before any
/// authentication) is counted under `service="unknown",method="unknown"`, so nothing a client
/// sends creates a series.
#[derive(Clone, Debug, Default)]
pub struct MethodNames(Arc<HashMap<&'static str, MethodLabels>>);

impl MethodNames {
    /// The labels of a call to `path`.
    fn labels(&self, path: &str) -> MethodLabels {
        self.0.get(path).copied().unwrap_or(UNKNOWN_METHOD)
    }
}

impl FromIterator<(&'static str, &'static str, &'static str)> for MethodNames {
    /// From `(path, service, method)` triples (`/pkg.Service/Method`, `pkg.Service`, `Method`).
    fn from_iter<I: IntoIterator<Item = (&'static str, &'static str, &'static str)>>(
        methods: I,
    ) -> Self {
        let methods = methods
            .into_iter()
            .map(|(path, service, method)| (path, MethodLabels { service, method }))
            .collect();
        Self(Arc::new(methods))
    }
}

/// Latency buckets from 0.5 ms to about 16 s, doubling.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// gRPC requests by method and status code, and their latency.
#[derive(Clone, Debug)]
pub struct RequestMetrics {
    requests: Family<CodeLabels, PromCounter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
}

impl Default for RequestMetrics {
    /// Exports the series of calls to unknown paths from the start, at 0: the first such call
    /// then changes a number, not the size of the page.
    fn default() -> Self {
        let metrics = Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        };
        let _ = metrics.latency.get_or_create(&UNKNOWN_METHOD);
        let _ = metrics
            .requests
            .get_or_create(&UNKNOWN_METHOD.with_code(code_name(tonic::Code::Unimplemented)));
        metrics
    }
}

impl RequestMetrics {
    /// Exports `dynagate_grpc_requests_total{service,method,code}` and
    /// `dynagate_grpc_request_duration_seconds{service,method}`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "grpc_requests",
            "gRPC calls answered, by service, method and status code",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "grpc_request_duration",
            "Time from a call's headers to its status, by service and method",
            Unit::Seconds,
            self.latency.clone(),
        );
    }

    fn record(&self, labels: MethodLabels, code: &'static str, started: Instant) {
        self.latency
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        self.requests.get_or_create(&labels.with_code(code)).inc();
    }
}

impl MethodLabels {
    fn with_code(self, code: &'static str) -> CodeLabels {
        CodeLabels {
            service: self.service,
            method: self.method,
            code,
        }
    }
}

/// The canonical name of a gRPC status code, as in the gRPC spec (`OK`, `NOT_FOUND`).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The status in a `grpc-status` header or trailer, if there is one.
fn status_in(headers: &http::HeaderMap) -> Option<&'static str> {
    headers
        .get("grpc-status")
        .map(|value| code_name(tonic::Code::from_bytes(value.as_bytes())))
}

/// Counts every call and times it, in [`RequestMetrics`].
#[derive(Clone, Debug)]
pub struct RequestMetricsLayer {
    metrics: RequestMetrics,
    methods: MethodNames,
}

impl RequestMetricsLayer {
    /// Records into `metrics`, labelling calls by `methods` (others as unknown).
    pub fn new(metrics: RequestMetrics, methods: MethodNames) -> Self {
        Self { metrics, methods }
    }
}

impl<S> Layer<S> for RequestMetricsLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metered {
            inner,
            metrics: self.metrics.clone(),
            methods: self.methods.clone(),
        }
    }
}

/// The service [`RequestMetricsLayer`] builds.
#[derive(Clone, Debug)]
pub struct Metered<S> {
    inner: S,
    metrics: RequestMetrics,
    methods: MethodNames,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, ReqBody> Service<http::Request<ReqBody>> for Metered<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<B>>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let labels = self.methods.labels(request.uri().path());
        let metrics = self.metrics.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let mut recorder = Some(Recorder {
                metrics,
                labels,
                started,
            });
            // Trailers-only responses (every error tonic answers) carry the status in the
            // headers; others in the trailers at the end of the body.
            if let Some(code) = status_in(response.headers())
                && let Some(recorder) = recorder.take()
            {
                recorder.record(code);
            }
            Ok(response.map(|body| {
                tonic::body::Body::new(MeteredBody {
                    inner: tonic::body::Body::new(body),
                    recorder,
                })
            }))
        })
    }
}

/// What is recorded once a call's status is known.
#[derive(Debug)]
struct Recorder {
    metrics: RequestMetrics,
    labels: MethodLabels,
    started: Instant,
}

impl Recorder {
    fn record(self, code: &'static str) {
        self.metrics.record(self.labels, code, self.started);
    }
}

/// A response body that records the call when its trailers pass (or, if it is dropped before
/// any status, as CANCELLED: the client went away).
#[derive(Debug)]
struct MeteredBody {
    inner: tonic::body::Body,
    recorder: Option<Recorder>,
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_in)
                    && let Some(recorder) = self.recorder.take()
                {
                    recorder.record(code);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(recorder) = self.recorder.take() {
                    recorder.record(code_name(tonic::Code::Internal));
                }
            }
            Poll::Ready(None) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        if let Some(recorder) = self.recorder.take() {
            recorder.record(code_name(tonic::Code::Cancelled));
        }
    }
}

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

/// The registry's metrics in Prometheus (OpenMetrics) text.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

/// The content type of [`encode`]'s text.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` from `registry` on `listener` (HTTP/1.1) until the task is aborted;
/// open scrapes end with it.
pub async fn serve_metrics(listener: TcpListener, registry: Arc<Registry>) {
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "metrics listener cannot accept");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let registry = Arc::clone(&registry);
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&request, &registry);
                async move { Ok::<_, Infallible>(response) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(%error, "metrics connection ended");
            }
        });
    }
}

fn respond<B>(request: &http::Request<B>, registry: &Registry) -> http::Response<String> {
    let reply = |status: http::StatusCode, content_type: &str, body: String| {
        let mut response = http::Response::new(body);
        *response.status_mut() = status;
        if let Ok(value) = http::HeaderValue::from_str(content_type) {
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, value);
        }
        response
    };
    if request.uri().path() != "/metrics" {
        return reply(
            http::StatusCode::NOT_FOUND,
            "text/plain",
            "not found: metrics are at /metrics\n".to_owned(),
        );
    }
    if request.method() != http::Method::GET && request.method() != http::Method::HEAD {
        return reply(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET /metrics\n".to_owned(),
        );
    }
    match encode(registry) {
        Ok(text) => reply(http::StatusCode::OK, CONTENT_TYPE, text),
        Err(error) => {
            tracing::error!(%error, "cannot encode the metrics");
            reply(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                "cannot encode the metrics\n".to_owned(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
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
}
