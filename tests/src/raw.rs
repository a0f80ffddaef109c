//! gRPC calls made by hand: any bytes as the request body of any RPC, so tests can send what
//! no generated client would (not a message, a mutated message, a broken frame) and read the
//! status the server answers with.

use std::time::Duration;

use bytes::Bytes;
use common::proto::data::v1::{ListValue, Value, value::Kind};
use http_body_util::{BodyExt, Full};
use tonic::{Status, transport::Channel};
use tower::ServiceExt;

/// Every RPC of the auth-service.
pub const AUTH_RPCS: [&str; 15] = [
    "/dynagate.auth.v1.AuthService/Register",
    "/dynagate.auth.v1.AuthService/Login",
    "/dynagate.auth.v1.AuthService/Refresh",
    "/dynagate.auth.v1.AuthService/Logout",
    "/dynagate.auth.v1.AuthService/LogoutAll",
    "/dynagate.auth.v1.AuthService/ListSigningKeys",
    "/dynagate.auth.v1.AuthService/GetCredentials",
    "/dynagate.auth.v1.AuthService/ChangePassword",
    "/dynagate.auth.v1.AuthService/EnrollTotp",
    "/dynagate.auth.v1.AuthService/ConfirmTotp",
    "/dynagate.auth.v1.AuthService/DisableTotp",
    "/dynagate.auth.v1.AuthService/ListSessions",
    "/dynagate.auth.v1.AuthService/RevokeSession",
    "/dynagate.auth.v1.AuthService/ResetPassword",
    // Server-streaming: a request that does not decode ends it before any message.
    "/dynagate.auth.v1.AuthService/WatchRevocations",
];

/// Every RPC of the data-service.
pub const DATA_RPCS: [&str; 5] = [
    "/dynagate.data.v1.DataService/GetItem",
    "/dynagate.data.v1.DataService/PutItem",
    "/dynagate.data.v1.DataService/UpdateItem",
    "/dynagate.data.v1.DataService/DeleteItem",
    "/dynagate.data.v1.DataService/QueryItems",
];

/// One message in gRPC's length-prefixed framing (uncompressed).
pub fn framed(message: &[u8]) -> Vec<u8> {
    let length = u32::try_from(message.len()).expect("a message under 4 GiB");
    let mut out = vec![0];
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// The message of the first uncompressed frame in `body`, if it holds a whole one: what the
/// server decodes from a unary request.
pub fn first_message(body: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = body.split_first()?;
    let length = usize::try_from(u32::from_be_bytes(rest.get(..4)?.try_into().ok()?)).ok()?;
    (flag == 0).then_some(())?;
    rest.get(4..4 + length)
}

/// Sends `body` as the whole request body of a unary call to `path`, and returns the gRPC
/// status the server answered with (from the headers of a trailers-only answer, or the
/// trailers).
pub async fn call_raw(channel: &Channel, path: &str, token: Option<&str>, body: Vec<u8>) -> Status {
    call_raw_within(channel, path, token, body, &[], None).await
}

/// [`call_raw`] with `headers` added (or replacing the defaults), for a streaming RPC too: a
/// call whose stream is still open after `open_for` (it was accepted and now waits for
/// events) is ended there and answers OK.
pub async fn call_raw_within(
    channel: &Channel,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
    headers: &[(&'static str, http::HeaderValue)],
    open_for: Option<Duration>,
) -> Status {
    exchange(channel, path, token, body, headers, open_for)
        .await
        .1
}

/// [`call_raw_within`], with the HTTP status of the answer too (a gRPC answer is 200 whatever
/// its gRPC status; a server refuses a request that is not gRPC with another).
pub async fn exchange(
    channel: &Channel,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
    headers: &[(&'static str, http::HeaderValue)],
    open_for: Option<Duration>,
) -> (http::StatusCode, Status) {
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://dynagate{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(defaults) = request.headers_mut() {
        for (name, value) in headers {
            defaults.insert(*name, value.clone());
        }
    }
    let request = request
        .body(tonic::body::Body::new(Full::new(Bytes::from(body))))
        .expect("a valid request");
    let response = match channel.clone().oneshot(request).await {
        Ok(response) => response,
        // The channel enforces a `grpc-timeout` header itself, as a generated client would.
        Err(error) if client_deadline(&error) => {
            return (http::StatusCode::OK, Status::cancelled("client deadline"));
        }
        Err(error) => panic!("HTTP/2 call to {path}: {error}"),
    };
    let http_status = response.status();
    if let Some(status) = Status::from_header_map(response.headers()) {
        return (http_status, status);
    }
    let collect = response.into_body().collect();
    let collected = match open_for {
        None => collect.await,
        Some(limit) => match tokio::time::timeout(limit, collect).await {
            Ok(collected) => collected,
            Err(_) => return (http_status, Status::ok("stream still open")),
        },
    };
    let collected = collected.unwrap_or_else(|e| panic!("response body of {path}: {e}"));
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status = Status::from_header_map(&trailers)
        .unwrap_or_else(|| panic!("a grpc-status trailer from {path}"));
    (http_status, status)
}

fn client_deadline(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// A request path no server answers, as a client could invent it: `/x<random>/yyy…` (one in
/// ten a few thousand characters long), with percent-escapes of arbitrary bytes (`%FF%C3`…)
/// among URI-safe characters; one in four is a real service with a made-up method.
pub fn made_up_path(rng: &mut impl rand::Rng) -> String {
    let len = if rng.random_ratio(1, 10) {
        rng.random_range(1000..3000)
    } else {
        rng.random_range(1..40)
    };
    if rng.random_ratio(1, 4) {
        format!("/dynagate.auth.v1.AuthService/{}", path_segment(rng, len))
    } else {
        let tail = "y".repeat(rng.random_range(1..64));
        format!("/x{}/{tail}", path_segment(rng, len))
    }
}

/// `len` random URI-safe characters or percent-escaped bytes.
fn path_segment(rng: &mut impl rand::Rng, len: usize) -> String {
    const SAFE: &[u8] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@";
    (0..len)
        .map(|_| {
            if rng.random_ratio(1, 6) {
                format!("%{:02X}", rng.random::<u8>())
            } else {
                char::from(SAFE[rng.random_range(0..SAFE.len())]).to_string()
            }
        })
        .collect()
}

/// A Value nested `depth` lists deep (prost's recursion limit is 100).
pub fn deeply_nested(depth: usize) -> Value {
    (0..depth).fold(Value { kind: None }, |inner, _| Value {
        kind: Some(Kind::ListValue(ListValue {
            values: vec![inner],
        })),
    })
}
