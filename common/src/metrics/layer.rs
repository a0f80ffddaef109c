//! The tower layer that counts and times every gRPC call into [`RequestMetrics`], reading the
//! status from the headers of a trailers-only response or from the trailers at the end of the
//! body, and counting a body dropped before any status as CANCELLED.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};

use super::requests::{MethodLabels, MethodNames, RequestMetrics, code_name};

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
