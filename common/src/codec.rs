//! The protobuf codec of every generated Dynagate client and server: prost's own, except that a
//! message that does not decode is the sender's fault (INVALID_ARGUMENT with a short message),
//! not an INTERNAL error carrying the decoder's text.

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, Codec as TonicCodec, DecodeBuf, Decoder as TonicDecoder},
};
use tonic_prost::{ProstCodec, ProstEncoder};

/// What a peer is told when its message does not decode. Short on purpose: the decoder's
/// own text names field numbers and wire types, which helps nobody but a fuzzer.
pub const UNDECODABLE: &str = "the message is not valid protobuf for this method";

/// `tonic_prost::ProstCodec` with [`Decoder`] instead of prost's decoder; `common/build.rs`
/// makes the generated stubs use it.
#[derive(Debug, Clone)]
pub struct Codec<T, U> {
    inner: ProstCodec<T, U>,
}

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self {
            inner: ProstCodec::default(),
        }
    }
}

impl<T, U> TonicCodec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = Decoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.inner.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decoder(PhantomData)
    }
}

/// Decodes `U`; a decode failure (bad UTF-8 in a string, a truncated varint, a wrong wire
/// type, nesting past prost's recursion limit) is INVALID_ARGUMENT.
#[derive(Debug, Clone, Default)]
pub struct Decoder<U>(PhantomData<U>);

impl<U: Message + Default> TonicDecoder for Decoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|error| {
            // The client's mistake, so `info`; the request span names the method.
            tracing::info!(%error, "undecodable message refused");
            Status::invalid_argument(UNDECODABLE)
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::auth::v1::RegisterRequest;
    use http_body_util::Full;
    use tonic::{Code, codec::Streaming};

    /// Decodes one gRPC-framed message the way a server does.
    async fn decode(message: &[u8]) -> Result<Option<RegisterRequest>, Status> {
        let mut framed = vec![0];
        framed.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
        framed.extend_from_slice(message);
        let decoder = Codec::<RegisterRequest, RegisterRequest>::default().decoder();
        let body = Full::new(bytes::Bytes::from(framed));
        Streaming::new_request(decoder, body, None, None)
            .message()
            .await
    }

    #[tokio::test]
    async fn valid_messages_decode() {
        let message = RegisterRequest {
            username: "alice".into(),
            password: "correct horse".into(),
        };
        let decoded = decode(&message.encode_to_vec()).await.unwrap();
        assert_eq!(decoded, Some(message));
    }

    #[tokio::test]
    async fn undecodable_messages_are_invalid_arguments_with_a_short_message() {
        let cases: [&[u8]; 3] = [
            b"\x0a\x02\xff\xfe", // field 1 (string) holding invalid UTF-8
            b"\x0a\xff\xff\xff", // a truncated length varint
            b"\x0d\x01\x02\x03", // field 1 with the 32-bit wire type
        ];
        for bytes in cases {
            let status = decode(bytes).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{bytes:?}");
            assert_eq!(status.message(), UNDECODABLE);
        }
    }
}
