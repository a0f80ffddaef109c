//! Structured logging: JSON lines with the request span, filtered by `RUST_LOG`. Each line has
//! its innermost span (`span`) and every enclosing one (`spans`, outermost first), so a line
//! logged inside an AWS SDK call still names the `grpc` request span and its `trace_id`.
//! Text a client sent goes into a line only through [`typed`], which bounds it.

use std::borrow::Cow;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// The most characters of text a client sent that one field of a log line carries.
pub const MAX_TYPED_CHARS: usize = 64;

/// Characters kept of a longer text; the rest of the field is the marker and the length.
const KEPT_CHARS: usize = 48;

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
