//! The statuses of the many-item writes: a transaction whose conditions failed (every failed op
//! named) and a batch not every entry of which was written (every entry's fate named, from its
//! [`BatchReport`]).

use std::collections::HashMap;

use common::status::{ERROR_DOMAIN, RETRY_DELAY, with_error_info};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{BATCH_INCOMPLETE, DataError, TRANSACTION_CONDITION_FAILED, VERSION_MISMATCH};

/// FAILED_PRECONDITION naming every failed op: metadata `failed_ops` (their indexes,
/// comma-separated) and `op_<i>` for each (VERSION_MISMATCH with the current version, NOT_FOUND,
/// or MALFORMED_ITEM).
pub fn transaction_failed(failed: &[(usize, DataError)]) -> Status {
    let indexes: Vec<String> = failed.iter().map(|(i, _)| i.to_string()).collect();
    let mut metadata = HashMap::from([("failed_ops".to_owned(), indexes.join(","))]);
    for (i, error) in failed {
        let why = match error {
            DataError::VersionMismatch { current } => {
                format!("{VERSION_MISMATCH} current_version={current}")
            }
            DataError::NotFound => "NOT_FOUND".to_owned(),
            DataError::MalformedItem => super::MALFORMED_ITEM.to_owned(),
            _ => "FAILED".to_owned(),
        };
        metadata.insert(format!("op_{i}"), why);
    }
    with_error_info(
        Code::FailedPrecondition,
        format!(
            "the conditions of ops {} failed; nothing was written",
            indexes.join(", ")
        ),
        TRANSACTION_CONDITION_FAILED,
        metadata,
    )
}

/// The status of a batch not fully written: the first entry's own failure, or UNAVAILABLE
/// (with RetryInfo) when entries were only throttled, cut off by the deadline or lost; an
/// ErrorInfo names every entry as `written`, `not_written` (failed or never done) or `unknown`.
pub fn batch_incomplete(mut report: BatchReport) -> Status {
    let mut metadata = HashMap::from([
        ("written", report.names(|o| matches!(o, Outcome::Written))),
        (
            "not_written",
            report.names(|o| matches!(o, Outcome::NotWritten | Outcome::Failed(_))),
        ),
        ("unknown", report.names(|o| matches!(o, Outcome::Unknown))),
        ("failed", report.names(|o| matches!(o, Outcome::Failed(_)))),
    ]);
    metadata.retain(|_, names| !names.is_empty());
    let metadata: HashMap<String, String> = metadata
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let (code, message) = match report.first_failure() {
        Some(error) => {
            let status = Status::from(error);
            let message = format!("the batch was not fully written: {}", status.message());
            (status.code(), message)
        }
        None => {
            tracing::info!(?metadata, "batch incomplete at its deadline");
            (
                Code::Unavailable,
                "the batch was not fully written (throttled, lost or out of time): see the \
                 ErrorInfo for which entries were written; retry the rest"
                    .to_owned(),
            )
        }
    };
    let mut details = ErrorDetails::with_error_info(BATCH_INCOMPLETE, ERROR_DOMAIN, metadata);
    if matches!(code, Code::Unavailable | Code::Aborted) {
        details.set_retry_info(Some(RETRY_DELAY));
    }
    Status::with_error_details(code, message, details)
}

/// What became of one entry.
#[derive(Debug)]
pub enum Outcome {
    /// It is stored.
    Written,
    /// Not written: refused for a passing reason until the deadline, or never started.
    NotWritten,
    /// Maybe written: its answer was lost, or it was in flight at the deadline.
    Unknown,
    /// Not written: refused for a reason of its own.
    Failed(DataError),
}

/// The fate of every entry of a batch, named as the request names them, in request order.
#[derive(Debug)]
pub struct BatchReport {
    /// Each entry's name and outcome.
    pub entries: Vec<(String, Outcome)>,
}

impl BatchReport {
    /// Whether every entry is written.
    pub fn complete(&self) -> bool {
        (self.entries.iter()).all(|(_, outcome)| matches!(outcome, Outcome::Written))
    }

    /// The names of the entries whose outcome `pick` selects, comma-separated.
    pub fn names(&self, pick: impl Fn(&Outcome) -> bool) -> String {
        (self.entries.iter())
            .filter(|(_, outcome)| pick(outcome))
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether DynamoDB called the user's credentials expired for an entry (the caller must
    /// then drop them, as for any call).
    pub fn credentials_expired(&self) -> bool {
        (self.entries.iter()).any(|(_, outcome)| {
            matches!(outcome, Outcome::Failed(DataError::CredentialsExpired(_)))
        })
    }

    /// The first entry's own failure, if any failed for a reason of its own.
    pub fn first_failure(&mut self) -> Option<DataError> {
        self.entries.iter_mut().find_map(|(_, outcome)| {
            match std::mem::replace(outcome, Outcome::NotWritten) {
                Outcome::Failed(error) => Some(error),
                other => {
                    *outcome = other;
                    None
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(outcomes: Vec<Outcome>) -> BatchReport {
        let names = ["puts[0]", "puts[1]", "deletes[0]", "deletes[1]"];
        BatchReport {
            entries: names.into_iter().map(str::to_owned).zip(outcomes).collect(),
        }
    }

    #[test]
    fn an_incomplete_batch_names_every_entrys_fate() {
        let mixed = report(vec![
            Outcome::Written,
            Outcome::Failed(DataError::CredentialsExpired("x".into())),
            Outcome::Unknown,
            Outcome::NotWritten,
        ]);
        assert!(!mixed.complete());
        assert!(mixed.credentials_expired());
        let status = batch_incomplete(mixed);
        assert_eq!(status.code(), Code::Unavailable);
        let details = status.get_error_details();
        assert!(details.retry_info().is_some());
        let info = details.error_info().expect("ErrorInfo");
        assert_eq!(info.reason, BATCH_INCOMPLETE);
        assert_eq!(info.metadata["written"], "puts[0]");
        assert_eq!(info.metadata["not_written"], "puts[1],deletes[1]");
        assert_eq!(info.metadata["failed"], "puts[1]");
        assert_eq!(info.metadata["unknown"], "deletes[0]");

        let refused = report(vec![
            Outcome::Written,
            Outcome::Failed(DataError::PermissionDenied("x".into())),
        ]);
        let status = batch_incomplete(refused);
        assert_eq!(status.code(), Code::PermissionDenied);
        assert!(status.get_error_details().retry_info().is_none());
    }
}
