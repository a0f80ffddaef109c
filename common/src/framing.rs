//! Checks the gRPC framing of every request body before tonic reads it, so a client that sends
//! bytes which are not a gRPC message gets a status naming its mistake: INVALID_ARGUMENT for
//! broken framing (a compression flag without an encoding, a truncated frame, no message at
//! all) and RESOURCE_EXHAUSTED for a message over the size limit (gRPC's convention; tonic would
//! say INTERNAL and OUT_OF_RANGE). Well-formed requests pass through untouched, chunk by chunk.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use tonic::Status;
use tower::{Layer, Service};

/// Largest request message accepted, in bytes (tonic's default decoding limit). An item is at
/// most 400 KB, so even a maximal PutItem with its protobuf overhead fits well within it.
pub const MAX_REQUEST_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// gRPC's length-prefixed message header: a compression flag and a big-endian u32 length.
const HEADER_LEN: usize = 5;

/// Wraps every request body in a [`CheckedBody`].
#[derive(Clone, Copy, Debug)]
pub struct FramingLayer {
    limit: usize,
}

impl FramingLayer {
    /// Refuses messages over `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for FramingLayer {
    type Service = Framing<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Framing {
            inner,
            limit: self.limit,
        }
    }
}

/// The service [`FramingLayer`] builds.
#[derive(Clone, Debug)]
pub struct Framing<S> {
    inner: S,
    limit: usize,
}

impl<S, B> Service<http::Request<B>> for Framing<S>
where
    S: Service<http::Request<tonic::body::Body>>,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // A named encoding other than identity is tonic's to judge (we accept none, so it
        // answers UNIMPLEMENTED); without one, every message must be uncompressed.
        let compressed_allowed = request
            .headers()
            .get("grpc-encoding")
            .is_some_and(|encoding| encoding != "identity");
        let limit = self.limit;
        self.inner.call(request.map(|body| {
            tonic::body::Body::new(CheckedBody {
                inner: body,
                check: FrameCheck::new(limit, compressed_allowed),
            })
        }))
    }
}

/// A request body that fails with a [`Status`] as soon as its bytes stop being gRPC frames.
#[derive(Debug)]
pub struct CheckedBody<B> {
    inner: B,
    check: FrameCheck,
}

impl<B> Body for CheckedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.check.failed {
            return Poll::Ready(None);
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
            None => this.check.finish(),
        };
        match verdict {
            Ok(()) => Poll::Ready(polled.map(|result| result.map_err(Into::into))),
            Err(status) => {
                this.check.failed = true;
                Poll::Ready(Some(Err(Box::new(status))))
            }
        }
    }

    /// Never claims the end before it was polled: an empty body must still be checked.
    fn is_end_stream(&self) -> bool {
        self.check.failed
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The framing state machine, fed the body's bytes in whatever chunks they arrive.
#[derive(Debug)]
struct FrameCheck {
    limit: usize,
    compressed_allowed: bool,
    /// Header bytes collected so far (`pending < HEADER_LEN`), or the message bytes still due.
    header: [u8; HEADER_LEN],
    have: usize,
    due: usize,
    messages: usize,
    failed: bool,
}

impl FrameCheck {
    fn new(limit: usize, compressed_allowed: bool) -> Self {
        Self {
            limit,
            compressed_allowed,
            header: [0; HEADER_LEN],
            have: 0,
            due: 0,
            messages: 0,
            failed: false,
        }
    }

    fn feed(&mut self, mut data: Bytes) -> Result<(), Status> {
        while data.has_remaining() {
            if self.due > 0 {
                let skip = self.due.min(data.remaining());
                data.advance(skip);
                self.due -= skip;
                continue;
            }
            self.header[self.have] = data.get_u8();
            self.have += 1;
            if self.have == HEADER_LEN {
                self.have = 0;
                self.messages += 1;
                self.due = self.message_len()?;
            }
        }
        Ok(())
    }

    /// Checks a complete header and returns the length of the message it announces.
    fn message_len(&self) -> Result<usize, Status> {
        match self.header[0] {
            0 => {}
            1 if self.compressed_allowed => {}
            1 => {
                return Err(Status::invalid_argument(
                    "a compressed message without a grpc-encoding header",
                ));
            }
            _ => {
                return Err(Status::invalid_argument(
                    "not a gRPC message: invalid compression flag",
                ));
            }
        }
        let mut length = [0; 4];
        length.copy_from_slice(&self.header[1..]);
        let len = usize::try_from(u32::from_be_bytes(length)).unwrap_or(usize::MAX);
        if len > self.limit {
            return Err(Status::resource_exhausted(format!(
                "the message is {len} bytes; at most {} are accepted",
                self.limit
            )));
        }
        Ok(len)
    }

    fn finish(&self) -> Result<(), Status> {
        if self.have > 0 || self.due > 0 {
            Err(Status::invalid_argument(
                "truncated gRPC message: the body ended inside a message",
            ))
        } else if self.messages == 0 {
            Err(Status::invalid_argument("the request carries no message"))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn check(chunks: &[&[u8]]) -> Result<(), Status> {
        let mut check = FrameCheck::new(16, false);
        for chunk in chunks {
            check.feed(Bytes::copy_from_slice(chunk))?;
        }
        check.finish()
    }

    #[test]
    fn well_framed_messages_pass_in_any_chunking() {
        let body = b"\x00\x00\x00\x00\x03abc\x00\x00\x00\x00\x00";
        assert!(check(&[body]).is_ok());
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert!(check(&bytes).is_ok());
        assert!(check(&[&body[..2], &body[2..7], &body[7..]]).is_ok());
    }

    #[test]
    fn broken_framing_is_the_clients_mistake() {
        let cases: [&[&[u8]]; 5] = [
            &[],                          // no message at all
            &[b"\x00\x00\x00"],           // half a header
            &[b"\x00\x00\x00\x00\x05ab"], // a message cut short
            &[b"\x01\x00\x00\x00\x01a"],  // compressed, without an encoding
            &[b"\x07\x00\x00\x00\x01a"],  // not a flag at all
        ];
        for chunks in cases {
            let status = check(chunks).unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{chunks:?}");
        }
    }

    #[test]
    fn oversized_messages_are_resource_exhausted_before_their_bytes_arrive() {
        let status = check(&[b"\x00\x00\x00\x00\x11"]).unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(check(&[b"\x00\x00\x00\x00\x10", &[0; 16]]).is_ok());
    }

    #[test]
    fn a_named_encoding_allows_the_compressed_flag() {
        let mut check = FrameCheck::new(16, true);
        assert!(
            check
                .feed(Bytes::from_static(b"\x01\x00\x00\x00\x01a"))
                .is_ok()
        );
        assert!(check.finish().is_ok());
    }
}
