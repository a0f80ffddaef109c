//! Structured logging and tracing. Logs: JSON lines with the request span, filtered by
//! `RUST_LOG`; each line has its innermost span (`span`) and every enclosing one (`spans`,
//! outermost first), so a line logged inside an AWS SDK call still names the `grpc` request
//! span and its `trace_id`. Spans: OpenTelemetry's, made from the same `tracing` spans by
//! `tracing-opentelemetry` and exported over OTLP when an endpoint is configured ([`Spans`];
//! the request and client spans are made in the `trace` module).
//! Text a client sent goes into a line only through [`typed`], which bounds it.

mod log_fields;
mod on_runtime;
mod queue;
mod sampler;
mod spans;

use std::borrow::Cow;

use tracing::{Metadata, Subscriber};
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{FilterExt, filter_fn},
    fmt::{self, MakeWriter},
    layer::Filter,
    prelude::*,
    registry::LookupSpan,
};

pub use log_fields::LogFields;
pub use queue::{dropped as spans_dropped, register as register_metrics};
pub use spans::{EXPORT_TIMEOUT, SHUTDOWN_TIMEOUT, Spans, TracingSettings};

/// The most characters of text a client sent that one field of a log line carries.
pub const MAX_TYPED_CHARS: usize = 64;

/// Characters kept of a longer text; the rest of the field is the marker and the length.
const KEPT_CHARS: usize = 48;

/// The target of the request and client spans (made in the `trace` module): the ones every
/// subscriber of ours turns into OpenTelemetry spans, whatever the log level.
pub const TRACE_TARGET: &str = "dynagate::trace";

/// Targets whose spans and events are never exported: the transport under the exporter's own
/// connection (exporting their spans would make spans of its own), and the audit trail, whose
/// lines (usernames, client addresses) stay in the logs.
const NOT_EXPORTED: [&str; 6] = ["h2", "hyper", "tonic", "tower", "opentelemetry", "audit"];

/// The logging and tracing of a service process; [`Telemetry::shutdown`] exports the last
/// spans.
#[derive(Debug)]
pub struct Telemetry {
    spans: Spans,
}

impl Telemetry {
    /// Exports what is still queued (at most [`SHUTDOWN_TIMEOUT`]); a failure is logged.
    pub async fn shutdown(self) {
        let spans = self.spans;
        let flushed = tokio::task::spawn_blocking(move || spans.shutdown()).await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(error = format!("{error:#}"), "spans lost at exit"),
            Err(error) => tracing::warn!(%error, "spans lost at exit"),
        }
    }
}

/// Installs the global subscriber of service `service`: JSON lines on stdout (`RUST_LOG`
/// overrides `default_filter`, e.g. `info`) and spans as `settings` say. If the exporter
/// cannot be set up (a bad endpoint or CA), logging still starts, without export, and the
/// error is returned for the caller to report.
pub fn init(
    service: &'static str,
    default_filter: &str,
    settings: &TracingSettings,
) -> anyhow::Result<Telemetry> {
    let directives = directives(default_filter);
    let (spans, error) = match Spans::new(service, settings) {
        Ok(spans) => (spans, None),
        Err(error) => (Spans::local(service), Some(error)),
    };
    // A second init (e.g. from tests) keeps the first subscriber; that is fine.
    let _ = subscriber(&directives, std::io::stdout, &spans).try_init();
    if let Some(error) = error {
        return Err(error);
    }
    if let Some(endpoint) = spans.exported_to() {
        let queue = settings.otlp_queue_spans;
        tracing::info!(endpoint, queue, "exporting spans over OTLP/gRPC");
    }
    Ok(Telemetry { spans })
}

/// `RUST_LOG` if it parses, else `default_filter`.
fn directives(default_filter: &str) -> String {
    std::env::var("RUST_LOG")
        .ok()
        .filter(|directives| EnvFilter::try_new(directives).is_ok())
        .unwrap_or_else(|| default_filter.to_owned())
}

/// The subscriber of a service: JSON lines to `writer`, filtered by `directives`, and the spans
/// of `spans`. Also what tests capture logs with (`tests::audit`), so they read the lines
/// production writes.
pub fn subscriber<W>(directives: &str, writer: W, spans: &Spans) -> impl Subscriber + Send + Sync
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let json = fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(true)
        .with_target(true)
        .fmt_fields(LogFields)
        .with_writer(writer)
        .with_filter(EnvFilter::new(directives));
    tracing_subscriber::registry()
        .with(json)
        .with(span_layer(spans, directives))
}

/// The layer that makes OpenTelemetry spans of `tracing` spans: always our request and client
/// spans ([`TRACE_TARGET`], whatever the log level, so trace ids and propagation never depend on
/// `RUST_LOG`); when exporting, also the other spans and events `directives` let through (as
/// the logs do), the transport's and the audit trail's aside.
fn span_layer<S>(spans: &Spans, directives: &str) -> impl Layer<S> + Send + Sync
where
    S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    let ours =
        filter_fn(is_trace_span).with_max_level_hint(tracing::level_filters::LevelFilter::INFO);
    let filter: Box<dyn Filter<S> + Send + Sync> = match spans.exported_to() {
        None => Box::new(ours),
        Some(_) => Box::new(ours.or(EnvFilter::new(directives).and(filter_fn(exported)))),
    };
    tracing_opentelemetry::layer()
        .with_tracer(spans.tracer())
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        // Our propagation reads each span's own context; no thread-local context to keep.
        .with_context_activation(false)
        .with_filter(filter)
}

/// Whether `metadata` is a request or client span (see [`TRACE_TARGET`]).
fn is_trace_span(metadata: &Metadata<'_>) -> bool {
    metadata.is_span() && metadata.target() == TRACE_TARGET
}

/// Whether spans and events of `metadata`'s target may be exported.
fn exported(metadata: &Metadata<'_>) -> bool {
    let target = metadata.target();
    !NOT_EXPORTED.iter().any(|prefix| {
        target
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(':') || rest.starts_with('_'))
    })
}

/// For tests: human-readable logs captured per test, only when `TEST_LOG` is set, so a
/// failing test can be rerun with its logs without drowning the passing ones. Spans give trace
/// ids as in production and are not exported.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_none() {
        return;
    }
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| {
        "debug,h2=info,hyper=info,aws_smithy_runtime=info,aws_smithy_runtime_api=info,tower=info"
            .to_owned()
    });
    let spans = Spans::local("tests");
    let text = fmt::layer()
        .with_test_writer()
        .with_filter(EnvFilter::new(&directives));
    let _ = tracing_subscriber::registry()
        .with(text)
        .with(span_layer(&spans, &directives))
        .try_init();
}

/// Text a client sent (a method path, a user agent, a key id), as a log line may carry it: up
/// to [`MAX_TYPED_CHARS`] characters as sent; longer text is cut to its first 48 characters
/// and a marker with its length (`abc…(60000 chars)`), so a client can neither fill the logs
/// nor get a whole long secret into them. Control characters become U+FFFD, so no text can
/// start a line of its own in a plain-text log.
pub fn typed(text: &str) -> Cow<'_, str> {
    let clean = |c: char| if c.is_control() { '\u{fffd}' } else { c };
    match text.chars().nth(MAX_TYPED_CHARS) {
        None if !text.chars().any(char::is_control) => Cow::Borrowed(text),
        None => Cow::Owned(text.chars().map(clean).collect()),
        Some(_) => {
            let total = text.chars().count();
            let head: String = text.chars().take(KEPT_CHARS).map(clean).collect();
            Cow::Owned(format!("{head}…({total} chars)"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_as_it_is() {
        assert!(matches!(typed("curl/8.5"), Cow::Borrowed("curl/8.5")));
        let exactly = "é".repeat(MAX_TYPED_CHARS);
        assert_eq!(typed(&exactly), exactly.as_str());
    }

    #[test]
    fn long_text_is_cut_with_a_marker_and_its_length() {
        let long = "p".repeat(60_000);
        let cut = typed(&long);
        assert_eq!(cut, format!("{}…(60000 chars)", "p".repeat(48)));
        assert!(cut.chars().count() <= MAX_TYPED_CHARS);
        let one_over = "é".repeat(MAX_TYPED_CHARS + 1);
        assert_eq!(typed(&one_over), format!("{}…(65 chars)", "é".repeat(48)));
    }

    #[test]
    fn control_characters_cannot_start_a_line() {
        assert_eq!(typed("a\nb\r"), "a\u{fffd}b\u{fffd}");
        let long = format!("{}\n", "x".repeat(100));
        assert!(!typed(&long).contains('\n'));
    }
}
