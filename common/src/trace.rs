//! W3C trace context: one trace id follows a request through both services' logs.
//!
//! **Incoming.** [`TraceContextLayer`] (installed by `server::serve`, so on both services) reads
//! the `traceparent` header (version `00` only: `00-<32 hex trace id>-<16 hex parent id>-<2 hex
//! flags>`, lowercase). A missing, malformed or all-zero one is ignored and a new trace is
//! started with a random 128-bit id: a bad header never fails the call. The context goes into
//! the request's extensions, where the `grpc` span (see `server.rs`) records its `trace_id`, so
//! every JSON line logged inside the request carries `"span":{"trace_id":…}`. The response
//! carries it back in the `x-trace-id` header.
//!
//! **Outgoing.** The layer also runs the request inside a tokio task-local holding the context.
//! Code that calls another service while handling a request calls [`inject`] on the outgoing
//! request: it adds a `traceparent` with the same trace id and a new span id. A task-local
//! (rather than a tower layer on the client channel) keeps the channel types as they are, and
//! needs nothing but the two places that build auth-service requests.
//!
//! **Other tasks.** A task-local does not cross `tokio::spawn`. Work a request hands to another
//! task wraps its future in [`bind`], which carries the context and the request's span along.
//! The data-service's single-flight credential load is such work: a load shared by several
//! requests carries the trace of the request that started it; the others wait under their own
//! trace ids. Background work (key refresher, revocation watcher) has no request, sends no
//! `traceparent`, and the auth-service starts a trace of its own for it.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use futures::future::Either;
use tracing::Instrument;

/// The header that carries the context between services.
pub const TRACEPARENT: &str = "traceparent";
/// The response header that tells a client the trace id of its call.
pub const TRACE_ID_HEADER: &str = "x-trace-id";

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// Where a request sits in a trace: the trace id it shares with every hop, this hop's span id,
/// and the caller's flags (passed on unchanged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
    flags: u8,
}

impl TraceContext {
    /// A new trace, with random non-zero ids and no flags set.
    pub fn new_root() -> Self {
        Self {
            trace_id: nonzero(rand::random),
            span_id: nonzero(rand::random),
            flags: 0,
        }
    }

    /// The context a call continues from its caller's `traceparent`: the caller's trace id and
    /// flags, a span id of its own. `None` when the header is not a valid version 00 one.
    pub fn continue_from(traceparent: &str) -> Option<Self> {
        let parent = parse_traceparent(traceparent)?;
        Some(parent.child())
    }

    /// The context of an incoming request: continued from its `traceparent`, or a new trace.
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        headers
            .get(TRACEPARENT)
            .and_then(|value| value.to_str().ok())
            .and_then(Self::continue_from)
            .unwrap_or_else(Self::new_root)
    }

    /// The same trace and flags under a new span id: what an outgoing call sends.
    pub fn child(&self) -> Self {
        Self {
            span_id: nonzero(rand::random),
            ..*self
        }
    }

    /// The context of the request this task is handling, if it is handling one.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|context| *context).ok()
    }

    /// The trace id as 32 lowercase hex digits: what the logs carry.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// This hop's span id as 16 lowercase hex digits.
    pub fn span_id(&self) -> String {
        format!("{:016x}", self.span_id)
    }
}

/// The `traceparent` value naming this context as the parent.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

fn nonzero<T: Default + PartialEq>(random: impl Fn() -> T) -> T {
    loop {
        let value = random();
        if value != T::default() {
            return value;
        }
    }
}

/// Parses a version 00 `traceparent` exactly: 55 characters, lowercase hex, non-zero ids.
/// Other versions are refused too: we cannot know what a later version's fields mean.
pub fn parse_traceparent(value: &str) -> Option<TraceContext> {
    let mut parts = value.split('-');
    let (version, trace_id, span_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || version != "00" {
        return None;
    }
    let trace_id = u128::from_str_radix(lower_hex(trace_id, 32)?, 16).ok()?;
    let span_id = u64::from_str_radix(lower_hex(span_id, 16)?, 16).ok()?;
    let flags = u8::from_str_radix(lower_hex(flags, 2)?, 16).ok()?;
    (trace_id != 0 && span_id != 0).then_some(TraceContext {
        trace_id,
        span_id,
        flags,
    })
}

/// `field` if it is exactly `len` lowercase hex digits (`from_str_radix` alone would take
/// uppercase and a leading `+`).
fn lower_hex(field: &str, len: usize) -> Option<&str> {
    let valid = field.len() == len
        && field
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    valid.then_some(field)
}

/// Adds a `traceparent` continuing the current request's trace to an outgoing call; does
/// nothing outside a request.
pub fn inject<T>(request: &mut tonic::Request<T>) {
    let Some(context) = TraceContext::current() else {
        return;
    };
    if let Ok(value) = context.child().to_string().parse() {
        request.metadata_mut().insert(TRACEPARENT, value);
    }
}

/// `future` bound to the current request's trace and span, to be run on another task.
pub fn bind<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let span = tracing::Span::current();
    match TraceContext::current() {
        Some(context) => Either::Left(CURRENT.scope(context, future).instrument(span)),
        None => Either::Right(future.instrument(span)),
    }
}

/// Gives every request a [`TraceContext`]: in its extensions, in a task-local while it runs,
/// and in the `x-trace-id` response header.
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

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let context = TraceContext::from_headers(request.headers());
        request.extensions_mut().insert(context);
        let response = CURRENT.scope(context, self.inner.call(request));
        Box::pin(async move {
            let mut response = response.await?;
            if let Ok(value) = context.trace_id().parse() {
                response.headers_mut().insert(TRACE_ID_HEADER, value);
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_span_id() {
        let parent = parse_traceparent(VALID).unwrap();
        assert_eq!(parent.to_string(), VALID);
        let context = TraceContext::continue_from(VALID).unwrap();
        assert_eq!(context.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(context.span_id(), "00f067aa0ba902b7");
        assert!(context.to_string().ends_with("-01"), "flags kept");
    }

    #[test]
    fn other_versions_are_refused() {
        for version in ["01", "ff", "0", "000"] {
            let value = VALID.replacen("00", version, 1);
            assert_eq!(parse_traceparent(&value), None, "{value}");
        }
        let longer = format!("{}-extra", VALID.replacen("00", "01", 1));
        assert_eq!(parse_traceparent(&longer), None);
    }

    #[test]
    fn anything_but_lowercase_hex_is_refused() {
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-+0f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba9é2b-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn all_zero_ids_are_refused() {
        let zero_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let zero_span = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
        assert_eq!(parse_traceparent(zero_trace), None);
        assert_eq!(parse_traceparent(zero_span), None);
    }

    #[test]
    fn wrong_lengths_are_refused() {
        for bad in [
            "",
            "00",
            &VALID[..54],
            format!("{VALID}0").as_str(),
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            format!("{VALID}-").as_str(),
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_request_without_a_valid_traceparent_starts_a_new_trace() {
        let mut headers = http::HeaderMap::new();
        let first = TraceContext::from_headers(&headers);
        let second = TraceContext::from_headers(&headers);
        assert_ne!(first.trace_id(), second.trace_id());
        assert_eq!(parse_traceparent(&first.to_string()), Some(first));
        headers.insert(TRACEPARENT, "00-garbage".parse().unwrap());
        assert_ne!(
            TraceContext::from_headers(&headers).trace_id(),
            first.trace_id()
        );
    }

    #[tokio::test]
    async fn inject_continues_the_current_trace_and_bind_carries_it_to_another_task() {
        let mut outside = tonic::Request::new(());
        inject(&mut outside);
        assert!(outside.metadata().get(TRACEPARENT).is_none());

        let context = TraceContext::new_root();
        let sent = CURRENT
            .scope(context, async {
                tokio::spawn(bind(async {
                    let mut request = tonic::Request::new(());
                    inject(&mut request);
                    request.metadata().get(TRACEPARENT).cloned()
                }))
                .await
                .unwrap()
            })
            .await
            .unwrap();
        let sent = parse_traceparent(sent.to_str().unwrap()).unwrap();
        assert_eq!(sent.trace_id(), context.trace_id());
        assert_ne!(sent.span_id(), context.span_id());
    }
}
