//! W3C trace context, through OpenTelemetry: one trace follows a request through both
//! services, in their logs and in their exported spans (see [`crate::telemetry`]).
//!
//! **Incoming.** [`TraceContextLayer`] (installed by `server::serve`, so on both services)
//! makes each call's `grpc` span, a server span named after the method
//! (`dynagate.data.v1.DataService/GetItem`), continuing the caller's trace when its
//! `traceparent` (and `tracestate`) header is one OpenTelemetry's `TraceContextPropagator`
//! accepts; anything else starts a new trace: a bad header never fails the call. The span
//! records its `trace_id`, so every JSON line logged inside the request carries
//! `"span":{"trace_id":…}`, and the response carries it back in the `x-trace-id` header.
//!
//! **Outgoing.** A call made for a request runs in a [`client_span`] (a child of the request's
//! span, wherever the work runs: spawned work is instrumented with the request's span), and
//! [`inject`] adds that span's `traceparent` to the call, so the auth-service's span of it is a
//! child of the data-service's. Background work (key refresher, revocation watcher, health
//! probe) runs in no request span: its calls start traces of their own.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{TraceContextExt, TraceId},
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tower_http::{
    classify::{GrpcErrorsAsFailures, GrpcFailureClass, SharedClassifier},
    trace::{
        DefaultOnBodyChunk, DefaultOnEos, DefaultOnFailure, DefaultOnResponse, MakeSpan, OnFailure,
        TraceLayer,
    },
};
use tracing::{Level, Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry::{TRACE_TARGET, typed};

/// The header that carries the context between services.
pub const TRACEPARENT: &str = "traceparent";
/// The response header that tells a client the trace id of its call.
pub const TRACE_ID_HEADER: &str = "x-trace-id";
/// The longest `tracestate` a call's span keeps and passes on, the 512 characters W3C Trace
/// Context asks every hop to carry at least; a longer one is dropped whole (the `traceparent`
/// still counts), so an anonymous caller cannot make each span it causes, queued for the
/// collector and sent to the auth-service, carry kilobytes of its text.
pub const MAX_TRACESTATE_BYTES: usize = 512;
/// gRPC codes that mark a server span as failed (OpenTelemetry's semantic conventions): the
/// server's fault, not the caller's (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
/// UNAVAILABLE, DATA_LOSS).
const SERVER_ERRORS: [i32; 6] = [2, 4, 12, 13, 14, 15];

/// The `grpc` span of an incoming call to `path` with `headers`, and its trace id (`None`
/// when no OpenTelemetry layer is installed, as in tests that capture no logs).
pub fn request_span(path: &str, headers: &http::HeaderMap) -> (Span, Option<TraceId>) {
    let method = typed(path);
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        "grpc",
        // Any path a client sends gets here, known method or not.
        method = %method,
        trace_id = Empty,
        user_id = Empty,
        otel.name = method.strip_prefix('/').unwrap_or(&method),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.grpc.status_code = Empty,
        otel.status_code = Empty,
    );
    if headers.contains_key(TRACEPARENT) {
        let caller = TraceContextPropagator::new()
            .extract_with_context(&opentelemetry::Context::new(), &Headers(headers));
        // An invalid traceparent is no parent: left out, the span starts a trace of its own
        // (set, it would count as an unsampled parent and the new trace would not be sampled).
        if caller.span().span_context().is_valid() {
            let _ = span.set_parent(caller);
        }
    }
    let trace_id = span.context().span().span_context().trace_id();
    let trace_id = (trace_id != TraceId::INVALID).then_some(trace_id);
    if let Some(trace_id) = trace_id {
        span.record("trace_id", tracing::field::display(trace_id));
    }
    (span, trace_id)
}

/// The span of a call this service makes to `method` (`package.Service/Method`) of another:
/// a child of the current span, so of the request it is made for, if any.
pub fn client_span(method: &'static str) -> Span {
    tracing::info_span!(
        target: TRACE_TARGET,
        "grpc_client",
        otel.name = method,
        otel.kind = "client",
        rpc.system = "grpc",
    )
}

/// Adds `span`'s context (`traceparent`, and `tracestate` if any) to an outgoing call, so
/// the callee's span is its child; adds nothing when `span` has no trace.
pub fn inject<T>(span: &Span, request: &mut tonic::Request<T>) {
    let context = span.context();
    TraceContextPropagator::new()
        .inject_context(&context, &mut OutgoingMetadata(request.metadata_mut()));
}

/// A request's headers, as the propagator reads them.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let value = self.0.get(key)?.to_str().ok()?;
        let too_long = key == "tracestate" && value.len() > MAX_TRACESTATE_BYTES;
        (!too_long).then_some(value)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// An outgoing call's metadata, as the propagator writes it.
struct OutgoingMetadata<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for OutgoingMetadata<'_> {
    /// Sets `key`, unless `value` is empty (the propagator's `tracestate` of a trace without
    /// one).
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        let key = key.parse::<tonic::metadata::MetadataKey<_>>();
        if let (Ok(key), Ok(value)) = (key, value.parse()) {
            self.0.insert(key, value);
        }
    }
}

/// tower-http's `TraceLayer` for gRPC, as the servers run it: in the span
/// [`TraceContextLayer`] made (so it goes inside that layer), logging the response and the end
/// of the stream at debug level, and recording a failure's code on the span ([`RecordFailure`]).
pub type CallTraceLayer = TraceLayer<
    SharedClassifier<GrpcErrorsAsFailures>,
    CurrentSpan,
    (),
    DefaultOnResponse,
    DefaultOnBodyChunk,
    DefaultOnEos,
    RecordFailure,
>;

/// The [`CallTraceLayer`] of a server.
pub fn call_layer() -> CallTraceLayer {
    TraceLayer::new_for_grpc()
        .make_span_with(CurrentSpan)
        .on_request(())
        .on_response(DefaultOnResponse::new().level(Level::DEBUG))
        .on_eos(DefaultOnEos::new().level(Level::DEBUG))
        // Failures are logged where they happen, at the level they deserve (see status.rs);
        // here the code only goes on the span.
        .on_failure(RecordFailure::default())
}

/// Makes no span of its own: a call's span is the one [`TraceContextLayer`] entered.
#[derive(Clone, Copy, Debug, Default)]
pub struct CurrentSpan;

impl<B> MakeSpan<B> for CurrentSpan {
    fn make_span(&mut self, _: &http::Request<B>) -> Span {
        Span::current()
    }
}

/// What happens when a call fails: its gRPC code goes on its span (`rpc.grpc.status_code`,
/// and an error status when the fault is the server's), then the debug line tower-http logs.
#[derive(Clone, Debug)]
pub struct RecordFailure(DefaultOnFailure);

impl Default for RecordFailure {
    fn default() -> Self {
        Self(DefaultOnFailure::new().level(Level::DEBUG))
    }
}

impl OnFailure<GrpcFailureClass> for RecordFailure {
    fn on_failure(&mut self, failure: GrpcFailureClass, latency: Duration, span: &Span) {
        match &failure {
            GrpcFailureClass::Code(code) => {
                span.record("rpc.grpc.status_code", code.get());
                if SERVER_ERRORS.contains(&code.get()) {
                    span.record("otel.status_code", "error");
                }
            }
            GrpcFailureClass::Error(_) => {
                span.record("otel.status_code", "error");
            }
        }
        self.0.on_failure(failure, latency, span);
    }
}

/// Runs every call in its [`request_span`] and answers with the `x-trace-id` header. Put it
/// outside tower-http's `TraceLayer`, whose span is then this one (`Span::current()`).
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceContextLayer;

impl<S> tower::Layer<S> for TraceContextLayer {
    type Service = TraceContextService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceContextService { inner }
    }
}

/// The service [`TraceContextLayer`] makes.
#[derive(Clone, Debug)]
pub struct TraceContextService<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for TraceContextService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (span, trace_id) = request_span(request.uri().path(), request.headers());
        let header = trace_id.and_then(|id| http::HeaderValue::try_from(id.to_string()).ok());
        let response = span.in_scope(|| self.inner.call(request));
        Box::pin(async move {
            let mut response = response.await?;
            if let Some(header) = header {
                response.headers_mut().insert(TRACE_ID_HEADER, header);
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests;
