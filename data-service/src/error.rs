//! The data-service's errors and the one place they become gRPC statuses.

use std::collections::HashMap;

use aws_smithy_runtime_api::client::{orchestrator::HttpResponse, result::SdkError};
use common::{
    aws::{self, AwsFailure, Modeled},
    status::{self, Violation},
    tokens::TokenError,
};
use tonic::{Code, Status};

mod writes;

pub use writes::{BatchReport, Outcome};

/// ErrorInfo reason of a failed `if_absent` / `expected_version` condition.
pub const VERSION_MISMATCH: &str = "VERSION_MISMATCH";

/// ErrorInfo reason of a conditional write against an item whose stored version the service
/// did not write (the owner wrote the item directly), so the condition cannot be judged.
pub const MALFORMED_ITEM: &str = "MALFORMED_ITEM";

/// ErrorInfo reason of a transaction refused because conditions of its ops failed.
pub const TRANSACTION_CONDITION_FAILED: &str = "TRANSACTION_CONDITION_FAILED";

/// ErrorInfo reason of a transaction whose client_token DynamoDB saw with another request.
pub const CLIENT_TOKEN_REUSED: &str = "CLIENT_TOKEN_REUSED";

/// ErrorInfo reason of a batch not every entry of which was written.
pub const BATCH_INCOMPLETE: &str = "BATCH_INCOMPLETE";

/// Everything that can go wrong in a data-service call.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The request breaks a rule; nothing was sent to DynamoDB.
    #[error("invalid request: {0:?}")]
    InvalidArgument(Vec<Violation>),
    /// Missing, invalid or expired access token, or a session the auth-service refused.
    #[error("unauthenticated: {0}")]
    Unauthenticated(#[from] TokenError),
    /// No such item.
    #[error("item not found")]
    NotFound,
    /// `if_absent` or `expected_version` did not hold; `current` is 0 for an absent item.
    #[error("version mismatch: current version {current}")]
    VersionMismatch {
        /// The item's version now.
        current: u64,
    },
    /// A conditional write met an item whose stored version the service did not write.
    #[error("the stored item's version is malformed")]
    MalformedItem,
    /// A stored item holds something the API cannot carry; the message names the item.
    #[error("unreadable item: {0}")]
    DataLoss(String),
    /// The DynamoDB behind the service does not know the operation (an emulator without
    /// it); the cause is logged, the client told the operation is unavailable here.
    #[error("DynamoDB does not support the operation: {0}")]
    Unsupported(String),
    /// DynamoDB refused the request as invalid (a ValidationException) although it passed our
    /// checks: the client's request (e.g. a key range DynamoDB orders differently) or, if it
    /// keeps happening, a bug of ours. Its cause is logged, never returned.
    #[error("DynamoDB refused the request as invalid: {0}")]
    Refused(String),
    /// An unconditional write kept losing races with other writers: retry.
    #[error("too much write contention on the item")]
    Contention,
    /// DynamoDB called the user's temporary credentials expired: drop them and retry.
    #[error("user credentials expired: {0}")]
    CredentialsExpired(String),
    /// DynamoDB refused the user's credentials for this request.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A dependency is unreachable or too slow for the deadline: retry later.
    #[error("dependency unavailable: {0}")]
    Unavailable(String),
    /// DynamoDB throttled the request, so it did nothing: retry later.
    #[error("throttled: {0}")]
    Throttled(String),
    /// Conditions of a transaction's ops failed (by op index); nothing was written.
    #[error("transaction conditions failed: {0:?}")]
    TransactionFailed(Vec<(usize, DataError)>),
    /// DynamoDB saw the transaction's client_token with another request within 10 minutes.
    #[error("client token reused")]
    ClientTokenReused,
    /// Not every entry of a batch was written.
    #[error("batch incomplete: {0:?}")]
    BatchIncomplete(BatchReport),
    /// No auth-service has confirmed the revocation feed recently enough, so a token may be
    /// of an ended session: refused until the feed is back.
    #[error("the revocation feed is stale")]
    RevocationsStale,
    /// The caller already runs as many exports as one user may (or the process as many as it
    /// serves at once): retry when one ends.
    #[error("too many exports at once: {0}")]
    TooManyExports(&'static str),
    /// A streaming call ran past the caller's deadline.
    #[error("the call's deadline passed")]
    DeadlineExceeded,
    /// A bug or misconfiguration; its cause is logged, never returned.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl DataError {
    /// One invalid field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![Violation::new(field, description)])
    }

    /// Maps an AWS SDK error no caller handled specifically.
    pub fn aws<E>(context: &str, error: SdkError<E, HttpResponse>) -> Self
    where
        E: Modeled + std::error::Error + Send + Sync + 'static,
    {
        let description = format!("{context}: {}", aws::describe(&error));
        match aws::classify(&error) {
            AwsFailure::Unavailable => Self::Unavailable(description),
            AwsFailure::Throttled => Self::Throttled(description),
            AwsFailure::InvalidRequest => Self::Refused(description),
            AwsFailure::Unsupported => Self::Unsupported(description),
            AwsFailure::CredentialsExpired => Self::CredentialsExpired(description),
            AwsFailure::AccessDenied => Self::PermissionDenied(description),
            // The request ran, and what came back (stored items, which are untrusted) is
            // beyond what the SDK reads, such as an item nested deeper than DynamoDB allows,
            // which emulators store.
            AwsFailure::UnreadableAnswer => {
                tracing::warn!(cause = %description, "DynamoDB's answer could not be read");
                Self::DataLoss(
                    "DynamoDB carried out the request, but its answer could not be read: a \
                     stored item in it is malformed (nested deeper than DynamoDB allows?)"
                        .to_owned(),
                )
            }
            // Conditions are judged by the store where it asks for them; one left over here
            // is a bug.
            AwsFailure::ConditionFailed | AwsFailure::Other => {
                Self::Internal(anyhow::anyhow!(description))
            }
        }
    }
}

impl From<DataError> for Status {
    fn from(error: DataError) -> Self {
        match error {
            DataError::InvalidArgument(violations) => {
                tracing::info!(?violations, "invalid argument");
                status::invalid_argument(&violations)
            }
            DataError::Unauthenticated(reason) => {
                tracing::info!(%reason, "unauthenticated");
                status::unauthenticated()
            }
            DataError::NotFound => Status::not_found("item not found"),
            DataError::VersionMismatch { current } => {
                tracing::info!(current, "version mismatch");
                status::with_error_info(
                    Code::FailedPrecondition,
                    format!("version mismatch: the item is at version {current}"),
                    VERSION_MISMATCH,
                    HashMap::from([("current_version".to_owned(), current.to_string())]),
                )
            }
            DataError::MalformedItem => {
                tracing::info!("conditional write on an item with a malformed version");
                status::with_error_info(
                    Code::FailedPrecondition,
                    "the stored item's version was not written by this service, so the \
                     condition cannot be checked; replace the item with an unconditional \
                     PutItem or delete it",
                    MALFORMED_ITEM,
                    HashMap::new(),
                )
            }
            DataError::DataLoss(message) => {
                tracing::warn!(%message, "stored item cannot be served");
                Status::data_loss(message)
            }
            DataError::Unsupported(cause) => {
                tracing::warn!(%cause, "DynamoDB does not support an operation");
                Status::unimplemented(
                    "the DynamoDB behind this service does not support this operation",
                )
            }
            DataError::Refused(cause) => {
                tracing::warn!(%cause, "DynamoDB refused a request as invalid");
                Status::invalid_argument(
                    "DynamoDB refused the request as invalid (an update that would grow the \
                     item past 400 KB or add, append or delete to an attribute of another \
                     type, or a key range it orders differently); nothing was changed",
                )
            }
            DataError::Contention => {
                tracing::info!("write contention");
                status::retry_after(
                    Code::Aborted,
                    "the item changed concurrently; retry",
                    status::RETRY_DELAY,
                )
            }
            DataError::CredentialsExpired(cause) => {
                tracing::warn!(%cause, "user credentials expired before their cache margin");
                status::unavailable()
            }
            DataError::PermissionDenied(cause) => {
                // Should never happen: our requests stay in the caller's partition. If it
                // does, it is worth a loud log line, and the client learns nothing more.
                tracing::error!(%cause, "DynamoDB denied a request made with user credentials");
                Status::permission_denied("permission denied")
            }
            DataError::Unavailable(cause) => {
                tracing::warn!(%cause, "dependency unavailable");
                status::unavailable()
            }
            DataError::Throttled(cause) => {
                tracing::warn!(%cause, "DynamoDB throttled a request");
                status::unavailable()
            }
            DataError::TransactionFailed(failed) => {
                tracing::info!(?failed, "transaction conditions failed");
                writes::transaction_failed(&failed)
            }
            DataError::ClientTokenReused => {
                tracing::info!("transaction client token reused");
                status::with_error_info(
                    Code::FailedPrecondition,
                    "DynamoDB saw this client_token with another request in the last 10 \
                     minutes (a retry whose items changed since, e.g. because the first \
                     attempt was applied): read the items, and use a new token",
                    CLIENT_TOKEN_REUSED,
                    HashMap::new(),
                )
            }
            DataError::BatchIncomplete(report) => writes::batch_incomplete(report),
            DataError::RevocationsStale => {
                // The watcher logs the outage once; a line per refused call would flood.
                tracing::debug!("revocation feed stale: refusing to trust tokens");
                status::unavailable()
            }
            DataError::TooManyExports(whose) => {
                tracing::info!(whose, "export refused: too many running");
                status::retry_after(
                    Code::ResourceExhausted,
                    format!("too many exports running at once ({whose}); retry when one ends"),
                    status::RETRY_DELAY,
                )
            }
            DataError::DeadlineExceeded => Status::deadline_exceeded("the deadline passed"),
            DataError::Internal(cause) => {
                tracing::error!(cause = format!("{cause:#}"), "internal error");
                status::internal()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    #[test]
    fn every_error_becomes_the_status_clients_expect() {
        let cases = [
            (DataError::invalid("key", "empty"), Code::InvalidArgument),
            (
                DataError::Unauthenticated(TokenError::Rejected),
                Code::Unauthenticated,
            ),
            (DataError::NotFound, Code::NotFound),
            (
                DataError::VersionMismatch { current: 4 },
                Code::FailedPrecondition,
            ),
            (DataError::Contention, Code::Aborted),
            (DataError::MalformedItem, Code::FailedPrecondition),
            (DataError::DataLoss("item \"k\"".into()), Code::DataLoss),
            (
                DataError::Unsupported("secret cause".into()),
                Code::Unimplemented,
            ),
            (
                DataError::Refused("secret cause".into()),
                Code::InvalidArgument,
            ),
            (DataError::CredentialsExpired("x".into()), Code::Unavailable),
            (
                DataError::PermissionDenied("x".into()),
                Code::PermissionDenied,
            ),
            (DataError::Unavailable("x".into()), Code::Unavailable),
            (DataError::Throttled("x".into()), Code::Unavailable),
            (
                DataError::TransactionFailed(vec![(2, DataError::NotFound)]),
                Code::FailedPrecondition,
            ),
            (DataError::ClientTokenReused, Code::FailedPrecondition),
            (
                DataError::BatchIncomplete(BatchReport {
                    entries: vec![("puts[0]".into(), Outcome::Unknown)],
                }),
                Code::Unavailable,
            ),
            (DataError::RevocationsStale, Code::Unavailable),
            (
                DataError::TooManyExports("this user"),
                Code::ResourceExhausted,
            ),
            (DataError::DeadlineExceeded, Code::DeadlineExceeded),
            (
                DataError::Internal(anyhow::anyhow!("secret cause")),
                Code::Internal,
            ),
        ];
        for (error, code) in cases {
            let name = format!("{error:?}");
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{name}");
            assert!(
                !status.message().contains("secret cause"),
                "internal causes stay inside"
            );
        }
    }

    #[test]
    fn retryable_errors_say_when_and_conflicts_say_the_version() {
        for error in [
            DataError::Unavailable("x".into()),
            DataError::RevocationsStale,
            DataError::Contention,
            DataError::TooManyExports("this user"),
        ] {
            let status = Status::from(error);
            assert!(
                status.get_error_details().retry_info().is_some(),
                "{status:?}"
            );
        }
        let failed = DataError::TransactionFailed(vec![
            (1, DataError::VersionMismatch { current: 3 }),
            (4, DataError::MalformedItem),
        ]);
        let status = Status::from(failed);
        let details = status.get_error_details();
        let info = details.error_info().expect("ErrorInfo");
        assert_eq!(info.reason, TRANSACTION_CONDITION_FAILED);
        assert_eq!(info.metadata["failed_ops"], "1,4");
        assert_eq!(info.metadata["op_1"], "VERSION_MISMATCH current_version=3");
        assert_eq!(info.metadata["op_4"], MALFORMED_ITEM);
        let status = Status::from(DataError::VersionMismatch { current: 7 });
        let details = status.get_error_details();
        let info = details.error_info().expect("ErrorInfo");
        assert_eq!(info.reason, VERSION_MISMATCH);
        assert_eq!(info.metadata["current_version"], "7");
        let status = Status::from(DataError::MalformedItem);
        let details = status.get_error_details();
        assert_eq!(
            details.error_info().expect("ErrorInfo").reason,
            MALFORMED_ITEM
        );
        assert!(
            status
                .message()
                .contains("unconditional PutItem or delete it")
        );
    }

    fn answer(status: u16) -> HttpResponse {
        let status = status.try_into().expect("valid status");
        HttpResponse::new(status, aws_smithy_types::body::SdkBody::empty())
    }

    #[test]
    fn a_success_answer_that_cannot_be_parsed_is_data_loss() {
        use aws_sdk_dynamodb::operation::get_item::GetItemError;
        use aws_smithy_types::error::ErrorMetadata;
        let unparsed = || GetItemError::generic(ErrorMetadata::builder().build());
        let error = DataError::aws("GetItem", SdkError::service_error(unparsed(), answer(200)));
        assert!(matches!(error, DataError::DataLoss(_)), "{error:?}");
        // A 5xx without a code is the service failing, not us: retry later.
        let error = DataError::aws("GetItem", SdkError::service_error(unparsed(), answer(500)));
        assert!(matches!(error, DataError::Unavailable(_)), "{error:?}");
    }

    #[test]
    fn a_validation_exception_is_refused_not_internal() {
        use aws_sdk_dynamodb::operation::query::QueryError;
        use aws_smithy_types::error::ErrorMetadata;
        let metadata = ErrorMetadata::builder()
            .code("ValidationException")
            .message("Invalid KeyConditionExpression: The BETWEEN operator requires ...")
            .build();
        let error = SdkError::service_error(QueryError::generic(metadata), answer(400));
        let error = DataError::aws("Query", error);
        assert!(matches!(error, DataError::Refused(_)), "{error:?}");
        let status = Status::from(error);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            !status.message().contains("BETWEEN"),
            "{}",
            status.message()
        );
    }
}
