//! The fields of a span as the JSON log lines show them: its own fields, without the
//! OpenTelemetry attributes it also carries for the exported span (dotted names such as
//! `otel.name`, `otel.kind` or `rpc.system`; no log field of ours has a dot), so the lines
//! read as they did before spans were exported.

use std::fmt;

use tracing_subscriber::{
    field::{RecordFields, Visit, VisitOutput},
    fmt::{
        FormatFields, FormattedFields,
        format::{JsonVisitor, Writer},
    },
};

/// A span's fields as one JSON object, dotted names left out.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogFields;

impl<'writer> FormatFields<'writer> for LogFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = Undotted(JsonVisitor::new(&mut writer));
        fields.record(&mut visitor);
        visitor.0.finish()
    }

    /// Appends the fields recorded later (`user_id`, `trace_id`) to the object in place, rather
    /// than parsing and writing it again as tracing-subscriber's own JSON fields do.
    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut added = String::new();
        self.format_fields(Writer::new(&mut added), fields)?;
        let current = &mut current.fields;
        if added == "{}" {
            return Ok(());
        }
        if current.is_empty() || current == "{}" {
            *current = added;
            return Ok(());
        }
        // Both are JSON objects: `{"a":1}` + `{"b":2}` is `{"a":1,"b":2}`.
        current.pop();
        current.push(',');
        current.push_str(&added[1..]);
        Ok(())
    }
}

/// A visitor that passes on every field but the dotted ones.
struct Undotted<V>(V);

impl<V: Visit> Undotted<V> {
    fn wanted(field: &tracing::field::Field) -> bool {
        !field.name().contains('.')
    }
}

impl<V: Visit> Visit for Undotted<V> {
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        if Self::wanted(field) {
            self.0.record_f64(field, value);
        }
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        if Self::wanted(field) {
            self.0.record_i64(field, value);
        }
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if Self::wanted(field) {
            self.0.record_u64(field, value);
        }
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        if Self::wanted(field) {
            self.0.record_bool(field, value);
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if Self::wanted(field) {
            self.0.record_str(field, value);
        }
    }

    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        if Self::wanted(field) {
            self.0.record_error(field, value);
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if Self::wanted(field) {
            self.0.record_debug(field, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::Value;
    use tracing_subscriber::{fmt::MakeWriter, prelude::*};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    /// The one line logged inside a span with OpenTelemetry attributes and a field recorded
    /// after it was created.
    fn logged_line() -> Value {
        let buffer = Buffer::default();
        let json = tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .fmt_fields(LogFields)
            .with_writer(buffer.clone());
        let subscriber = tracing_subscriber::registry().with(json);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "grpc",
                method = "/a.v1.A/B",
                user_id = tracing::field::Empty,
                otel.name = "a.v1.A/B",
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.grpc.status_code = tracing::field::Empty,
            );
            span.record("user_id", "u-1");
            span.record("rpc.grpc.status_code", 5);
            span.in_scope(|| tracing::info!(answer = 42, "inside"));
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        serde_json::from_str(text.trim()).unwrap()
    }

    #[test]
    fn opentelemetry_attributes_stay_out_of_the_log_line() {
        let line = logged_line();
        let expected = serde_json::json!({"method": "/a.v1.A/B", "user_id": "u-1", "name": "grpc"});
        assert_eq!(line["span"], expected);
        assert_eq!(line["spans"][0], expected);
        assert_eq!(line["fields"]["answer"], 42, "event fields are untouched");
    }
}
