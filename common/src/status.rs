//! Builders for the rich gRPC errors both services return, so every client sees the same
//! shapes: BadRequest field violations, RetryInfo and ErrorInfo (google.rpc error details).

use std::{collections::HashMap, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// The `domain` of every ErrorInfo we emit.
pub const ERROR_DOMAIN: &str = "dynagate.dev";

/// One rejected field of a request, with a message fit for the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The field path, e.g. `username` or `attributes["color"]`.
    pub field: String,
    /// What is wrong and what would be right.
    pub description: String,
}

impl Violation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Most field violations sent back: the details travel in a trailer, and common HTTP/2
/// clients refuse header blocks over 16 KiB.
pub const MAX_VIOLATIONS: usize = 20;

/// INVALID_ARGUMENT carrying a BadRequest with the violations (at most [`MAX_VIOLATIONS`],
/// then a count of the rest); the message names the first.
pub fn invalid_argument(violations: &[Violation]) -> Status {
    let message = match violations {
        [] => "invalid request".to_owned(),
        [only] => format!("invalid {}: {}", only.field, only.description),
        [first, rest @ ..] => format!(
            "invalid {}: {} (and {} more)",
            first.field,
            first.description,
            rest.len()
        ),
    };
    let mut reported: Vec<_> = violations
        .iter()
        .take(MAX_VIOLATIONS)
        .map(|v| FieldViolation::new(v.field.clone(), v.description.clone()))
        .collect();
    if violations.len() > MAX_VIOLATIONS {
        reported.push(FieldViolation::new(
            "",
            format!(
                "{} more problems not listed",
                violations.len() - MAX_VIOLATIONS
            ),
        ));
    }
    let details = ErrorDetails::with_bad_request(reported);
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// A retryable status (UNAVAILABLE, RESOURCE_EXHAUSTED, ABORTED) telling the client when to retry.
pub fn retry_after(code: Code, message: impl Into<String>, delay: Duration) -> Status {
    Status::with_error_details(code, message, ErrorDetails::with_retry_info(Some(delay)))
}

/// A status with an ErrorInfo (`reason` in UPPER_SNAKE_CASE plus metadata) for clients that act
/// on the cause, such as a version conflict reporting the current version.
pub fn with_error_info(
    code: Code,
    message: impl Into<String>,
    reason: &str,
    metadata: HashMap<String, String>,
) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
    )
}

/// A status with an ErrorInfo of `reason` in `domain` and no metadata: for causes a client
/// acts on (a missing second factor).
pub fn error_info(code: Code, message: impl Into<String>, reason: &str, domain: &str) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, domain, HashMap::new()),
    )
}

/// How long clients should wait before retrying a call that failed for a passing reason (a
/// dependency down or throttling, a full queue, a lost race): the one delay every RetryInfo of
/// both services names.
pub const RETRY_DELAY: Duration = Duration::from_millis(500);

/// UNAVAILABLE with a RetryInfo: a dependency is down, slow or throttling us. The cause is
/// logged by the caller, never sent.
pub fn unavailable() -> Status {
    retry_after(
        Code::Unavailable,
        "service temporarily unavailable",
        RETRY_DELAY,
    )
}

/// The one status for every internal failure: the cause is logged by the caller, never sent.
pub fn internal() -> Status {
    Status::internal("internal error")
}

/// UNAUTHENTICATED with the one message used for every token problem, so the response
/// says nothing about which check failed.
pub fn unauthenticated() -> Status {
    Status::unauthenticated("missing, invalid or expired access token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_requests_stay_small_however_many_violations() {
        let many: Vec<_> = (0..500)
            .map(|i| Violation::new(format!("remove[{i}]"), "x".repeat(200)))
            .collect();
        let status = invalid_argument(&many);
        let details = status.get_error_details();
        let listed = &details.bad_request().unwrap().field_violations;
        assert_eq!(listed.len(), MAX_VIOLATIONS + 1);
        assert!(listed[MAX_VIOLATIONS].description.starts_with("480 more"));
        assert!(status.details().len() < 16 * 1024);
        assert!(status.message().contains("(and 499 more)"));
    }
}
