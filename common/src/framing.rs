//! Checks every request before tonic reads it, so a client that sends something which is not
//! a gRPC request gets a status naming its mistake:
//! - a content type that is not `application/grpc…` is refused with HTTP 415, as the gRPC
//!   spec asks (an HTTP client must not read a gRPC error as a success);
//! - broken framing (a compression flag without an encoding, a truncated frame, no message at
//!   all) or a second message in a unary request is INVALID_ARGUMENT;
//! - a message over the size limit is RESOURCE_EXHAUSTED (gRPC's convention; tonic would say
//!   INTERNAL and OUT_OF_RANGE);
//! - a body that is not complete within the body timeout is DEADLINE_EXCEEDED, so a stream
//!   whose body never ends (and which set no `grpc-timeout`) cannot hold the server's memory.
//!
//! Well-formed requests pass through untouched, chunk by chunk.

mod frames;

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::future::{Either, Ready, ready};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;
use tonic::Status;
use tower::{Layer, Service};

use self::frames::FrameCheck;
use crate::methods::ServedMethods;

/// Largest request message accepted, in bytes (tonic's default decoding limit). An item is at
/// most 400 KB, so even a maximal PutItem with its protobuf overhead fits well within it.
pub const MAX_REQUEST_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// What every request is checked against.
#[derive(Clone, Debug)]
pub struct FramingLayer {
    limit: usize,
    body_timeout: Duration,
    methods: ServedMethods,
}

impl FramingLayer {
    /// Refuses messages over `limit` bytes, bodies not complete within `body_timeout`, and a
    /// second message to any of `methods` whose request is not a stream.
    pub fn new(limit: usize, body_timeout: Duration, methods: ServedMethods) -> Self {
        Self {
            limit,
            body_timeout,
            methods,
        }
    }
}

impl<S> Layer<S> for FramingLayer {
    type Service = Framing<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Framing {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`FramingLayer`] builds.
#[derive(Clone, Debug)]
pub struct Framing<S> {
    inner: S,
    layer: FramingLayer,
}

type Response = http::Response<tonic::body::Body>;

impl<S, B> Service<http::Request<B>> for Framing<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = Response>,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if !is_grpc(request.headers().get(http::header::CONTENT_TYPE)) {
            return Either::Left(ready(Ok(unsupported_media_type())));
        }
        // A named encoding other than identity is tonic's to judge (we accept none, so it
        // answers UNIMPLEMENTED); without one, every message must be uncompressed.
        let compressed_allowed = request
            .headers()
            .get("grpc-encoding")
            .is_some_and(|encoding| encoding != "identity");
        // Unknown paths are answered UNIMPLEMENTED without a look at the body.
        let max_messages = match self.layer.methods.get(request.uri().path()) {
            Some(method) if !method.client_streaming => Some(1),
            _ => None,
        };
        let check = FrameCheck::new(self.layer.limit, compressed_allowed, max_messages);
        let timeout = self.layer.body_timeout;
        Either::Right(self.inner.call(request.map(|body| {
            tonic::body::Body::new(CheckedBody {
                inner: body,
                check,
                deadline: Some(Box::pin(tokio::time::sleep(timeout))),
                timeout,
                failed: false,
            })
        })))
    }
}

/// Whether `content_type` is gRPC's: `application/grpc`, alone or with a `+codec` suffix or
/// parameters (media types compare case-insensitively).
fn is_grpc(content_type: Option<&http::HeaderValue>) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    let Some(value) = content_type.map(http::HeaderValue::as_bytes) else {
        return false;
    };
    value.len() >= GRPC.len()
        && value[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(value.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// HTTP 415, as the gRPC spec asks for a request that is not gRPC, with a gRPC status for
/// gRPC clients that sent a wrong content type.
fn unsupported_media_type() -> Response {
    let status = Status::invalid_argument("the content-type is not application/grpc");
    let mut response: Response = status.into_http();
    *response.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
    response
}

/// A request body that fails with a [`Status`] as soon as its bytes stop being what the method
/// accepts, or when it is not complete by its deadline.
#[derive(Debug)]
pub struct CheckedBody<B> {
    inner: B,
    check: FrameCheck,
    /// Dropped once the body is complete: a stream's later life is not bounded here.
    deadline: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
    failed: bool,
}

impl<B> CheckedBody<B> {
    fn fail(&mut self, status: Status) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.failed = true;
        self.deadline = None;
        Poll::Ready(Some(Err(Box::new(status))))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<B> Body for CheckedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        // Checked first, so a client trickling bytes cannot keep the body going either.
        if let Some(deadline) = &mut this.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            let status = Status::deadline_exceeded(format!(
                "the request body was not complete within {} ms",
                this.timeout.as_millis()
            ));
            return this.fail(status);
        }
        let polled = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(polled) => polled,
        };
        let verdict = match &polled {
            Some(Ok(frame)) => frame
                .data_ref()
                .map_or(Ok(()), |data| this.check.feed(data.clone())),
            Some(Err(_)) => Ok(()),
            None => {
                this.deadline = None;
                this.check.finish()
            }
        };
        match verdict {
            Ok(()) => Poll::Ready(polled.map(|result| result.map_err(Into::into))),
            Err(status) => this.fail(status),
        }
    }

    /// Never claims the end before it was polled: an empty body must still be checked.
    fn is_end_stream(&self) -> bool {
        self.failed
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use http_body_util::{BodyExt, StreamBody};
    use tokio::time::Instant;
    use tonic::Code;

    /// When a body's deadline passes.
    fn deadline_of<B>(body: &CheckedBody<B>) -> Option<Instant> {
        body.deadline.as_ref().map(|sleep| sleep.deadline())
    }

    fn content_type(value: &str) -> bool {
        is_grpc(Some(&http::HeaderValue::from_str(value).unwrap()))
    }

    #[test]
    fn only_grpc_content_types_pass() {
        for accepted in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC",
            "application/grpc;charset=utf-8",
        ] {
            assert!(content_type(accepted), "{accepted}");
        }
        for refused in [
            "text/plain",
            "application/grpcx",
            "application/json",
            "application/grp",
            "",
        ] {
            assert!(!content_type(refused), "{refused}");
        }
        assert!(!is_grpc(None));
    }

    #[test]
    fn the_refusal_is_http_415_with_a_grpc_status() {
        let response = unsupported_media_type();
        assert_eq!(response.status(), http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::InvalidArgument);
    }

    /// A body that sends `first` and then nothing, ever.
    fn never_ending(
        first: &'static [u8],
        timeout: Duration,
    ) -> CheckedBody<impl Body<Data = Bytes, Error = std::convert::Infallible> + Unpin> {
        let frames = futures::stream::iter([Ok(Frame::data(Bytes::from_static(first)))])
            .chain(futures::stream::pending());
        CheckedBody {
            inner: StreamBody::new(Box::pin(frames)),
            check: FrameCheck::new(16, false, Some(1)),
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            timeout,
            failed: false,
        }
    }

    #[tokio::test]
    async fn a_body_that_never_ends_fails_at_its_deadline() {
        let started = Instant::now();
        let mut body = never_ending(b"\x00\x00\x00\x00\x05ab", Duration::from_millis(50));
        let deadline = deadline_of(&body).unwrap();
        assert!(deadline >= started + Duration::from_millis(50));

        let first = body.frame().await.unwrap().unwrap();
        assert!(first.is_data());
        // Generous: only a body that never fails would reach it.
        let next = tokio::time::timeout(Duration::from_secs(30), body.frame()).await;
        let error = next
            .expect("the deadline ends the body")
            .unwrap()
            .unwrap_err();

        let status = Status::from_error(error);
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert!(status.message().contains("50 ms"), "{status:?}");
        assert!(Instant::now() >= deadline);
        assert!(body.frame().await.is_none(), "over after the failure");
    }

    #[tokio::test]
    async fn a_complete_body_drops_its_deadline() {
        let frames = futures::stream::iter([Ok::<_, std::convert::Infallible>(Frame::data(
            Bytes::from_static(b"\x00\x00\x00\x00\x01a"),
        ))]);
        let mut body = CheckedBody {
            inner: StreamBody::new(frames),
            check: FrameCheck::new(16, false, Some(1)),
            deadline: Some(Box::pin(tokio::time::sleep(Duration::from_secs(1)))),
            timeout: Duration::from_secs(1),
            failed: false,
        };
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.is_none());
        assert_eq!(deadline_of(&body), None);
    }
}
