//! Structured logging: JSON lines with the request span, filtered by `RUST_LOG`. Each line has
//! its innermost span (`span`) and every enclosing one (`spans`, outermost first), so a line
//! logged inside an AWS SDK call still names the `grpc` request span and its `trace_id`.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global JSON subscriber. `RUST_LOG` overrides `default_filter` (e.g. `info`).
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(true)
        .with_target(true);
    // A second init (e.g. from tests) keeps the first subscriber; that is fine.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .try_init();
}

/// For tests: human-readable logs captured per test, only when `TEST_LOG` is set, so a
/// failing test can be rerun with its logs without drowning the passing ones.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_none() {
        return;
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("debug,h2=info,hyper=info,aws_smithy_runtime=info,aws_smithy_runtime_api=info,tower=info"));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt::layer().with_test_writer())
        .try_init();
}
