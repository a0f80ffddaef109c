//! W3C trace context across both services, read from their own JSON log lines captured in
//! this process: a data-service request's trace id is in its lines and in the auth-service's
//! lines for the GetCredentials call it caused; a missing or malformed `traceparent` starts a
//! new trace and never fails the call. The spans themselves, exported to a collector, are
//! checked in `otlp.rs`.

use common::{
    proto::{auth::v1::LoginRequest, data::v1::PutItemRequest},
    trace::{TRACE_ID_HEADER, TRACEPARENT},
};
use serde_json::Value;
use tests::{
    audit::{AuditLog, request_span},
    data::{SignedIn, TestStack, string},
};
use tonic::Request;

const DATA_PUT: &str = "/dynagate.data.v1.DataService/PutItem";
const AUTH_GET_CREDENTIALS: &str = "/dynagate.auth.v1.AuthService/GetCredentials";

/// A PutItem by a user with no credentials cached yet, with `traceparent` if given; returns
/// the trace id the data-service answered with.
async fn first_put(user: &mut SignedIn, traceparent: Option<&str>) -> String {
    let mut request = user.request(PutItemRequest {
        key: "traced".into(),
        attributes: [("text".to_owned(), string("hello"))].into(),
        ..Default::default()
    });
    if let Some(traceparent) = traceparent {
        request
            .metadata_mut()
            .insert(TRACEPARENT, traceparent.parse().unwrap());
    }
    let response = user.client.put_item(request).await.expect("PutItem");
    let trace_id = response
        .metadata()
        .get(TRACE_ID_HEADER)
        .expect("x-trace-id");
    trace_id.to_str().unwrap().to_owned()
}

/// The `grpc` span methods of the lines in `lines`.
fn methods(lines: &[Value]) -> Vec<&str> {
    lines
        .iter()
        .filter_map(|line| request_span(line)?["method"].as_str())
        .collect()
}

fn is_trace_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id != "0".repeat(32)
}

/// Every line logged inside a request carries a well-formed trace id.
fn assert_every_request_line_has_a_trace_id(log: &AuditLog) {
    for line in log.lines() {
        if let Some(span) = request_span(&line) {
            let id = span["trace_id"].as_str().unwrap_or_default();
            assert!(is_trace_id(id), "no trace id in {line}");
        }
    }
}

#[tokio::test]
async fn a_given_trace_id_is_followed_from_the_data_service_into_the_auth_service() {
    let log = AuditLog::capture();
    let stack = TestStack::spawn().await;
    let mut alice = stack.user().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");

    let answered = first_put(&mut alice, Some(&traceparent)).await;

    assert_eq!(answered, trace_id);
    let lines = log.of_trace(trace_id);
    let methods = methods(&lines);
    assert!(
        methods.contains(&DATA_PUT),
        "data-service lines: {lines:#?}"
    );
    assert!(
        methods.contains(&AUTH_GET_CREDENTIALS),
        "auth-service lines of the credential load: {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line["fields"]["message"] == "assumed role for user"),
        "the AssumeRole the auth-service ran on its own task for this request: {lines:#?}"
    );
    assert!(
        methods
            .iter()
            .all(|method| [DATA_PUT, AUTH_GET_CREDENTIALS].contains(method)),
        "only this request's lines: {methods:?}"
    );
    assert_every_request_line_has_a_trace_id(&log);
}

#[tokio::test]
async fn a_request_without_traceparent_gets_a_new_trace_shared_with_its_credential_load() {
    let log = AuditLog::capture();
    let stack = TestStack::spawn().await;
    let (mut alice, mut bob) = (stack.user().await, stack.user().await);

    let first = first_put(&mut alice, None).await;
    let second = first_put(&mut bob, None).await;

    assert!(is_trace_id(&first), "{first}");
    assert_ne!(first, second, "each request its own trace");
    for trace_id in [&first, &second] {
        let lines = log.of_trace(trace_id);
        let methods = methods(&lines);
        assert!(methods.contains(&DATA_PUT), "{lines:#?}");
        assert!(methods.contains(&AUTH_GET_CREDENTIALS), "{lines:#?}");
    }
    assert_every_request_line_has_a_trace_id(&log);
}

#[tokio::test]
async fn a_malformed_traceparent_is_ignored_and_the_call_succeeds_in_a_new_trace() {
    let log = AuditLog::capture();
    let stack = TestStack::spawn().await;
    let zero_trace = "00000000000000000000000000000000";
    for (round, bad) in [
        format!("00-{zero_trace}-00f067aa0ba902b7-01"),
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01".to_owned(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7".to_owned(),
        "not a traceparent at all".to_owned(),
    ]
    .iter()
    .enumerate()
    {
        let mut user = stack.user().await;
        let answered = first_put(&mut user, Some(bad)).await;
        assert!(is_trace_id(&answered), "round {round}: {answered}");
        assert!(
            !bad.to_lowercase().contains(&answered),
            "round {round}: a new trace, not {bad}"
        );
        let methods = methods(&log.of_trace(&answered)).join(" ");
        assert!(methods.contains(AUTH_GET_CREDENTIALS), "round {round}");
    }
    assert!(log.of_trace(zero_trace).is_empty());
}

#[tokio::test]
async fn a_later_version_of_traceparent_is_continued_as_the_spec_says() {
    // W3C Trace Context: a parser meeting a version above 00 (ff aside) reads the version 00
    // fields and ignores what follows; the hand-written parser we had refused it.
    let log = AuditLog::capture();
    let stack = TestStack::spawn().await;
    let mut alice = stack.user().await;
    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4736";
    let later = format!("01-{trace_id}-00f067aa0ba902b7-01-what-version-01-adds");

    let answered = first_put(&mut alice, Some(&later)).await;

    assert_eq!(answered, trace_id);
    let methods = methods(&log.of_trace(trace_id)).join(" ");
    assert!(methods.contains(AUTH_GET_CREDENTIALS), "{methods}");
}

#[tokio::test]
async fn audit_lines_carry_the_trace_id_of_their_request() {
    let log = AuditLog::capture();
    let stack = TestStack::spawn().await;
    let alice = stack.user().await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let mut request = Request::new(LoginRequest {
        username: alice.user.username.clone(),
        password: alice.user.password.clone(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        TRACEPARENT,
        format!("00-{trace_id}-b7ad6b7169203331-00")
            .parse()
            .unwrap(),
    );

    stack
        .auth
        .client()
        .await
        .login(request)
        .await
        .expect("Login");

    let audited: Vec<_> = log
        .of_trace(trace_id)
        .into_iter()
        .filter(|line| line["target"] == auth_service::audit::TARGET)
        .collect();
    assert_eq!(audited.len(), 1, "{audited:#?}");
    assert_eq!(audited[0]["fields"]["event"], "login");
    assert_eq!(
        audited[0]["fields"]["username"],
        alice.user.username.to_lowercase()
    );
}
