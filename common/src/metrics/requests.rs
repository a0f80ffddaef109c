//! The per-request gRPC metrics: a counter by service, method and status code, and a latency
//! histogram by service and method, labelled only with the server's own methods.

use std::{collections::HashMap, sync::Arc, time::Instant};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter as PromCounter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

/// Labels of one gRPC method: always one of the server's own methods (see [`MethodNames`]).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct MethodLabels {
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
    pub(super) fn labels(&self, path: &str) -> MethodLabels {
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

    pub(super) fn record(&self, labels: MethodLabels, code: &'static str, started: Instant) {
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
pub(super) fn code_name(code: tonic::Code) -> &'static str {
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
