//! Bytes that are not the message: every RPC of both services answers a client-caused status
//! (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, or whatever the handler says about a message that
//! happened to decode), never INTERNAL or UNKNOWN, and keeps serving afterwards.

use common::proto::data::v1::PutItemRequest;
use prost::Message;
use tests::{
    data::TestStack,
    raw::{AUTH_RPCS, DATA_RPCS, call_raw, deeply_nested, exchange, framed},
};
use tonic::{Code, Status};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_request::MessageRequest,
};

/// Bodies no honest client sends, each with the status it must get.
fn hostile_bodies() -> Vec<(&'static str, Vec<u8>, Code)> {
    let mut oversized = vec![0];
    oversized.extend_from_slice(&(64u32 << 20).to_be_bytes());
    oversized.extend_from_slice(&[0; 1024]);
    vec![
        ("empty body", Vec::new(), Code::InvalidArgument),
        ("half a header", vec![0, 0, 0], Code::InvalidArgument),
        (
            "a message cut short",
            b"\x00\x00\x00\x00\x10\x0a\x02".to_vec(),
            Code::InvalidArgument,
        ),
        (
            "compressed flag without an encoding",
            b"\x01\x00\x00\x00\x02\x08\x01".to_vec(),
            Code::InvalidArgument,
        ),
        (
            "not a compression flag",
            b"\x07\x00\x00\x00\x02\x08\x01".to_vec(),
            Code::InvalidArgument,
        ),
        (
            "unframed text",
            b"{\"username\":\"alice\"}".to_vec(),
            Code::InvalidArgument,
        ),
        ("a 64 MiB message", oversized, Code::ResourceExhausted),
        (
            "a truncated length varint",
            framed(b"\x0a\xff\xff\xff"),
            Code::InvalidArgument,
        ),
    ]
}

/// Bodies that break only messages whose field 1 is a string or a message: every request
/// here but the empty ones (LogoutAll, ListSigningKeys, GetCredentials, ListSessions), which
/// skip unknown fields.
fn bad_string_fields() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("invalid UTF-8 in field 1", framed(b"\x0a\x02\xff\xfe")),
        (
            "field 1 with a 32-bit wire type",
            framed(b"\x0d\x01\x02\x03\x04"),
        ),
    ]
}

fn assert_client_caused(status: &Status, what: &str, path: &str) {
    assert!(
        !matches!(status.code(), Code::Internal | Code::Unknown),
        "{what} to {path}: {status:?}"
    );
}

#[tokio::test]
async fn hostile_bodies_get_client_statuses_on_every_rpc() {
    let stack = TestStack::spawn().await;
    // One user for each service: some bodies decode as a LogoutAll, which ends the auth
    // user's sessions (and the revocation feed then refuses its token on the data-service).
    let auth_user = stack.user().await;
    let data_user = stack.user().await;
    let auth = stack.auth.channel().await;
    let data = stack.data.channel().await;
    let rpcs = AUTH_RPCS
        .iter()
        .map(|path| (&auth, *path, &auth_user))
        .chain(DATA_RPCS.iter().map(|path| (&data, *path, &data_user)));
    for (channel, path, user) in rpcs {
        for (what, body, code) in hostile_bodies() {
            let status = call_raw(channel, path, Some(&user.token), body).await;
            assert_eq!(status.code(), code, "{what} to {path}: {status:?}");
            assert!(
                status.message().len() < 120,
                "short messages, no decoder internals: {status:?}"
            );
        }
        for (what, body) in bad_string_fields() {
            let status = call_raw(channel, path, Some(&user.token), body).await;
            assert_client_caused(&status, what, path);
            let empty_messages = [
                "/LogoutAll",
                "/ListSigningKeys",
                "/GetCredentials",
                "/ListSessions",
            ];
            let has_string_field = !empty_messages.iter().any(|name| path.ends_with(name));
            if has_string_field {
                assert_eq!(status.code(), Code::InvalidArgument, "{what} to {path}");
            }
        }
    }
    // Both services still serve an honest client (a new one: some bodies above decoded as a
    // LogoutAll, which ended the auth user's session as it should).
    let mut honest = stack.user().await;
    assert_eq!(honest.put_text("after-the-storm", "fine").await, 1);
}

#[tokio::test]
async fn nesting_past_the_decoders_limit_is_invalid_argument() {
    let stack = TestStack::spawn().await;
    let user = stack.user().await;
    let request = PutItemRequest {
        key: "deep".into(),
        attributes: [("v".to_owned(), deeply_nested(150))].into(),
        ..Default::default()
    };
    let status = call_raw(
        &stack.data.channel().await,
        "/dynagate.data.v1.DataService/PutItem",
        Some(&user.token),
        framed(&request.encode_to_vec()),
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

#[tokio::test]
async fn random_payloads_never_get_internal_or_unknown() {
    let stack = TestStack::spawn().await;
    let user = stack.user().await;
    let auth = stack.auth.channel().await;
    let data = stack.data.channel().await;
    // Deterministic pseudo-random bytes (xorshift), so a failure can be replayed.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..40 {
        let len = usize::try_from(next() % 96).unwrap();
        let payload: Vec<u8> = (0..len).map(|_| next().to_le_bytes()[0]).collect();
        let body = if round % 2 == 0 {
            framed(&payload)
        } else {
            payload
        };
        let index = usize::try_from(next() % 12).unwrap();
        let (channel, path) = if index < AUTH_RPCS.len() {
            (&auth, AUTH_RPCS[index])
        } else {
            (&data, DATA_RPCS[index - AUTH_RPCS.len()])
        };
        let status = call_raw(channel, path, Some(&user.token), body).await;
        assert_client_caused(&status, &format!("random payload #{round}"), path);
    }
}

#[tokio::test]
async fn each_service_refuses_messages_larger_than_its_largest_valid_request() {
    let stack = TestStack::spawn().await;
    let user = stack.user().await;
    // 100 KiB: more than any auth request needs, well within what an item may take.
    let message = framed(&[0x0a; 100 * 1024]);
    let auth = call_raw(
        &stack.auth.channel().await,
        "/dynagate.auth.v1.AuthService/Login",
        None,
        message.clone(),
    )
    .await;
    assert_eq!(auth.code(), Code::ResourceExhausted, "{auth:?}");
    let data = call_raw(
        &stack.data.channel().await,
        "/dynagate.data.v1.DataService/PutItem",
        Some(&user.token),
        message,
    )
    .await;
    assert_eq!(
        data.code(),
        Code::InvalidArgument,
        "decoded, not refused: {data:?}"
    );
}

#[tokio::test]
async fn a_second_message_in_a_unary_request_is_invalid_argument_on_every_rpc() {
    let stack = TestStack::spawn().await;
    let user = stack.user().await;
    let auth = stack.auth.channel().await;
    let data = stack.data.channel().await;
    let unary_rpcs = AUTH_RPCS
        .iter()
        .map(|path| (&auth, *path))
        .chain(DATA_RPCS.iter().map(|path| (&data, *path)))
        .chain([(&auth, "/grpc.health.v1.Health/Check")])
        .chain([(&data, "/grpc.health.v1.Health/Watch")]);
    // Two empty messages (every request message decodes from no bytes): before the check,
    // the second was read and dropped, and the call answered as if it had not been sent.
    let mut two = framed(b"");
    two.extend(framed(b""));
    for (channel, path) in unary_rpcs {
        let status = call_raw(channel, path, Some(&user.token), two.clone()).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
        assert!(
            status.message().contains("exactly one"),
            "{path}: {status:?}"
        );
    }
    // The same call with one message is answered by the method.
    let keys = "/dynagate.auth.v1.AuthService/ListSigningKeys";
    let one = call_raw(&auth, keys, None, framed(b"")).await;
    assert_eq!(one.code(), Code::Ok, "{one:?}");
    // A streaming request (server reflection) takes any number of messages.
    let list = ServerReflectionRequest {
        message_request: Some(MessageRequest::ListServices(String::new())),
        ..Default::default()
    };
    let mut three = Vec::new();
    for _ in 0..3 {
        three.extend(framed(&list.encode_to_vec()));
    }
    let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    let answered = call_raw(&data, reflection, None, three).await;
    assert_eq!(answered.code(), Code::Ok, "{answered:?}");
}

#[tokio::test]
async fn a_request_that_is_not_grpc_is_refused_with_http_415() {
    let stack = TestStack::spawn().await;
    let user = stack.user().await;
    let auth = stack.auth.channel().await;
    let data = stack.data.channel().await;
    let keys = "/dynagate.auth.v1.AuthService/ListSigningKeys";
    let get = "/dynagate.data.v1.DataService/GetItem";
    for content_type in ["text/plain", "application/json", "application/grpcx", ""] {
        let header = [("content-type", http::HeaderValue::from_static(content_type))];
        for (channel, path) in [(&auth, keys), (&data, get)] {
            let (http, status) =
                exchange(channel, path, Some(&user.token), framed(b""), &header, None).await;
            assert_eq!(
                http,
                http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{content_type} {path}"
            );
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{content_type} {path}"
            );
        }
    }
    // gRPC's own content types pass.
    for content_type in ["application/grpc", "application/grpc+proto"] {
        let header = [("content-type", http::HeaderValue::from_static(content_type))];
        let (http, status) = exchange(&auth, keys, None, framed(b""), &header, None).await;
        assert_eq!(
            (http, status.code()),
            (http::StatusCode::OK, Code::Ok),
            "{content_type}"
        );
    }
}
