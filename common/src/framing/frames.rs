//! The gRPC framing state machine: fed a request body's bytes in whatever chunks they arrive,
//! it says as soon as they stop being what the method accepts (a broken frame, an oversized
//! message, a second message where one is the rule).

use bytes::{Buf, Bytes};
use tonic::Status;

/// gRPC's length-prefixed message header: a compression flag and a big-endian u32 length.
const HEADER_LEN: usize = 5;

/// The checks of one request body.
#[derive(Debug)]
pub(super) struct FrameCheck {
    limit: usize,
    compressed_allowed: bool,
    /// The most messages the method takes (`Some(1)` for a unary request).
    max_messages: Option<usize>,
    /// Header bytes collected so far (`have < HEADER_LEN`), or the message bytes still due.
    header: [u8; HEADER_LEN],
    have: usize,
    due: usize,
    messages: usize,
}

impl FrameCheck {
    pub(super) fn new(limit: usize, compressed_allowed: bool, max_messages: Option<usize>) -> Self {
        Self {
            limit,
            compressed_allowed,
            max_messages,
            header: [0; HEADER_LEN],
            have: 0,
            due: 0,
            messages: 0,
        }
    }

    pub(super) fn feed(&mut self, mut data: Bytes) -> Result<(), Status> {
        while data.has_remaining() {
            if self.due > 0 {
                let skip = self.due.min(data.remaining());
                data.advance(skip);
                self.due -= skip;
                continue;
            }
            if self.have == 0 && self.max_messages.is_some_and(|max| self.messages >= max) {
                // tonic would read and drop it, and answer as if it had never been sent.
                return Err(Status::invalid_argument(
                    "this method takes exactly one request message; the body carries more",
                ));
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

    pub(super) fn finish(&self) -> Result<(), Status> {
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

    fn check_with(max_messages: Option<usize>, chunks: &[&[u8]]) -> Result<(), Status> {
        let mut check = FrameCheck::new(16, false, max_messages);
        for chunk in chunks {
            check.feed(Bytes::copy_from_slice(chunk))?;
        }
        check.finish()
    }

    fn check(chunks: &[&[u8]]) -> Result<(), Status> {
        check_with(None, chunks)
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
        let mut check = FrameCheck::new(16, true, None);
        assert!(
            check
                .feed(Bytes::from_static(b"\x01\x00\x00\x00\x01a"))
                .is_ok()
        );
        assert!(check.finish().is_ok());
    }

    #[test]
    fn a_unary_request_takes_one_message_and_not_a_byte_more() {
        let one = b"\x00\x00\x00\x00\x03abc";
        assert!(check_with(Some(1), &[one]).is_ok());
        let empty_one = b"\x00\x00\x00\x00\x00";
        assert!(check_with(Some(1), &[empty_one]).is_ok());
        // A second message, whole, split, or just its first byte.
        let cases: [&[&[u8]]; 4] = [
            &[b"\x00\x00\x00\x00\x03abc\x00\x00\x00\x00\x00"],
            &[one, b"\x00\x00\x00\x00\x01z"],
            &[b"\x00\x00\x00\x00\x03ab", b"c\x00"],
            &[empty_one, b"\x00"],
        ];
        for chunks in cases {
            let status = check_with(Some(1), chunks).unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{chunks:?}");
            assert!(status.message().contains("exactly one"), "{status:?}");
        }
        // A streaming request takes any number.
        let two = b"\x00\x00\x00\x00\x03abc\x00\x00\x00\x00\x00";
        assert!(check_with(None, &[two]).is_ok());
    }
}
