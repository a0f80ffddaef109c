//! The wiring around OpenTelemetry's propagator: what a call continues, what it starts, what
//! it sends on.

use opentelemetry::trace::{SpanId, TraceContextExt, TraceFlags, TraceId};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::*;
use crate::telemetry::{Spans, subscriber};

const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// `f` with the subscriber a service installs (no export).
fn traced<T>(f: impl FnOnce() -> T) -> T {
    let spans = Spans::local("test");
    tracing::subscriber::with_default(subscriber("info", std::io::sink, &spans), f)
}

fn headers(traceparent: Option<&str>) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    if let Some(traceparent) = traceparent {
        headers.insert(TRACEPARENT, traceparent.parse().unwrap());
    }
    headers
}

/// The trace id, span id and flags of the request span a call with `traceparent` gets.
fn continued(traceparent: Option<&str>) -> (TraceId, SpanId, TraceFlags) {
    traced(|| {
        let (span, trace_id) = request_span("/a.v1.A/B", &headers(traceparent));
        let context = span.context();
        let own = context.span().span_context().clone();
        assert_eq!(trace_id, Some(own.trace_id()), "the id the header returns");
        (own.trace_id(), own.span_id(), own.trace_flags())
    })
}

#[test]
fn a_valid_traceparent_is_continued_under_a_span_of_our_own() {
    let (trace_id, span_id, flags) = continued(Some(VALID));
    assert_eq!(trace_id.to_string(), TRACE_ID);
    assert_ne!(span_id.to_string(), "00f067aa0ba902b7");
    assert!(flags.is_sampled(), "the caller sampled it");
}

#[test]
fn a_caller_that_did_not_sample_is_followed() {
    let unsampled = VALID.replace("-01", "-00");
    let (trace_id, _, flags) = continued(Some(&unsampled));
    assert_eq!(trace_id.to_string(), TRACE_ID);
    assert!(!flags.is_sampled());
}

#[test]
fn a_missing_or_malformed_traceparent_starts_a_sampled_trace_of_its_own() {
    let mut seen = Vec::new();
    for bad in [
        None,
        Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
        Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"),
        Some("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01"),
        Some("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        Some(&format!("{VALID}-extra")),
        Some("not a traceparent at all"),
    ] {
        let (trace_id, _, flags) = continued(bad);
        assert_ne!(trace_id, TraceId::INVALID, "{bad:?}");
        assert_ne!(trace_id.to_string(), TRACE_ID, "{bad:?}");
        assert!(flags.is_sampled(), "{bad:?}: a new trace is sampled");
        assert!(!seen.contains(&trace_id), "{bad:?}: a trace of its own");
        seen.push(trace_id);
    }
}

/// The `tracestate` an outgoing call sends from a request that came with [`VALID`] and
/// `tracestate`; asserts the request continued [`VALID`]'s trace.
fn passed_on_tracestate(tracestate: &str) -> Option<String> {
    traced(|| {
        let mut incoming = headers(Some(VALID));
        incoming.insert("tracestate", tracestate.parse().unwrap());
        let (span, trace_id) = request_span("/a.v1.A/B", &incoming);
        assert_eq!(
            trace_id.unwrap().to_string(),
            TRACE_ID,
            "the traceparent counts"
        );
        let client = span.in_scope(|| client_span("b.v1.B/C"));
        let mut request = tonic::Request::new(());
        inject(&client, &mut request);
        let sent = request.metadata().get("tracestate");
        sent.map(|value| value.to_str().unwrap().to_owned())
    })
}

#[test]
fn a_tracestate_is_passed_on_up_to_its_bound_and_dropped_past_it() {
    let short = "vendor=abc,other=def";
    assert_eq!(passed_on_tracestate(short).as_deref(), Some(short));
    // Two members (a value is at most 256 characters): 512 characters, then 513.
    let members = |second: usize| format!("a={},b={}", "x".repeat(254), "y".repeat(second));
    let at_bound = members(253);
    assert_eq!(at_bound.len(), MAX_TRACESTATE_BYTES);
    assert_eq!(passed_on_tracestate(&at_bound), Some(at_bound));
    let over = members(254);
    assert_eq!(passed_on_tracestate(&over), None);
}

#[test]
fn a_later_version_is_read_as_far_as_version_00_goes() {
    // W3C Trace Context: a parser meeting a higher version reads the version 00 fields and
    // ignores what follows.
    let later = format!("{}-what-comes-later", VALID.replacen("00", "01", 1));
    let (trace_id, _, _) = continued(Some(&later));
    assert_eq!(trace_id.to_string(), TRACE_ID);
}

#[test]
fn an_outgoing_call_names_its_client_span_as_the_parent() {
    let (request_span_id, sent) = traced(|| {
        let (span, _) = request_span("/a.v1.A/B", &headers(Some(VALID)));
        let request_span_id = span.context().span().span_context().span_id();
        let client = span.in_scope(|| client_span("b.v1.B/C"));
        let client_span_id = client.context().span().span_context().span_id();
        let mut request = tonic::Request::new(());
        inject(&client, &mut request);
        let sent = request
            .metadata()
            .get(TRACEPARENT)
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(sent, format!("00-{TRACE_ID}-{client_span_id}-01"));
        (request_span_id, sent.to_owned())
    });
    assert!(!sent.contains(&request_span_id.to_string()));
}

#[test]
fn without_an_opentelemetry_layer_there_is_no_trace_and_nothing_is_sent() {
    let (span, trace_id) = request_span("/a.v1.A/B", &headers(Some(VALID)));
    assert_eq!(trace_id, None);
    let mut request = tonic::Request::new(());
    inject(&span, &mut request);
    assert!(request.metadata().get(TRACEPARENT).is_none());
}

#[tokio::test]
async fn the_response_carries_the_trace_id() {
    let service = tower::service_fn(|_: http::Request<()>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(()))
    });
    let mut service = tower::Layer::layer(&TraceContextLayer, service);
    let mut request = http::Request::new(());
    *request.headers_mut() = headers(Some(VALID));
    let spans = Spans::local("test");
    let _guard = tracing::subscriber::set_default(subscriber("info", std::io::sink, &spans));
    let response = tower::Service::call(&mut service, request).await.unwrap();
    assert_eq!(response.headers()[TRACE_ID_HEADER], TRACE_ID);
}
