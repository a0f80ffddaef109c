//! BatchWriteItems: up to 25 unconditional puts and deletes, each one PutItem or DeleteItem of
//! this store (so each stays versioned, keeps `created_at` and handles stored items of any
//! layout, as those do), sent concurrently, at most [`CONCURRENCY`] at a time. DynamoDB's
//! BatchWriteItem cannot update or condition an item, so it cannot keep a version.
//!
//! The batch is not atomic; each entry is. An entry refused for a passing reason (throttled,
//! or a put that kept losing races) is written again after a jittered backoff while the
//! deadline allows; an entry whose answer was lost, or still in flight at the deadline, is
//! *unknown* (it may have landed); every other error is the entry's own failure. The caller
//! learns each entry's fate from `error::BatchReport`.

use std::time::Duration;

use futures::{StreamExt, stream};
use tokio::time::Instant;

use super::{ItemStore, Precondition, Put, UserDb};
use crate::{
    backoff::Backoff,
    error::{BatchReport, DataError, Outcome},
};

/// Most entries (puts and deletes together) of one batch, as DynamoDB's BatchWriteItem.
pub const MAX_BATCH_WRITES: usize = 25;

/// Most entries written at once: enough to overlap round trips, few enough that one batch
/// does not take every connection of the user's client.
pub const CONCURRENCY: usize = 8;

/// The first wait before writing a throttled entry again, and the longest.
const FIRST_RETRY: Duration = Duration::from_millis(20);
const LONGEST_RETRY: Duration = Duration::from_secs(1);

/// One write of a batch.
#[derive(Clone, Debug)]
pub enum BatchEntry {
    /// An unconditional put (its precondition is ignored).
    Put(Put),
    /// Delete this key if it holds a live item.
    Delete(String),
}

impl BatchEntry {
    /// How the request names this entry: `puts[i]` or `deletes[j]`.
    pub fn name(&self, index: usize) -> String {
        match self {
            Self::Put(_) => format!("puts[{index}]"),
            Self::Delete(_) => format!("deletes[{index}]"),
        }
    }
}

impl ItemStore {
    /// Writes `entries` (distinct keys; `names` says how the request names each) concurrently,
    /// until every entry is settled or `deadline` passes.
    pub async fn batch_write(
        &self,
        db: &UserDb,
        owner: &str,
        entries: Vec<(String, BatchEntry)>,
        deadline: Instant,
    ) -> BatchReport {
        let written = stream::iter(entries)
            .map(|(name, entry)| async move {
                let outcome = self.write_entry(db, owner, &entry, deadline).await;
                (name, outcome)
            })
            .buffered(CONCURRENCY)
            .collect()
            .await;
        BatchReport { entries: written }
    }

    /// Writes one entry, again after a backoff while it is refused for a passing reason.
    async fn write_entry(
        &self,
        db: &UserDb,
        owner: &str,
        entry: &BatchEntry,
        deadline: Instant,
    ) -> Outcome {
        let mut backoff = Backoff::new(FIRST_RETRY, LONGEST_RETRY);
        loop {
            if Instant::now() >= deadline {
                return Outcome::NotWritten;
            }
            let attempt = tokio::time::timeout_at(deadline, self.write_one(db, owner, entry));
            match attempt.await {
                Err(_elapsed) => return Outcome::Unknown,
                Ok(Ok(())) => return Outcome::Written,
                Ok(Err(DataError::Throttled(cause))) => {
                    tracing::debug!(%cause, "batch entry throttled: writing it again");
                }
                Ok(Err(DataError::Contention)) => {}
                Ok(Err(DataError::Unavailable(cause) | DataError::DataLoss(cause))) => {
                    tracing::warn!(%cause, "batch entry's answer lost: it may be written");
                    return Outcome::Unknown;
                }
                Ok(Err(error)) => return Outcome::Failed(error),
            }
            let wake = Instant::now() + backoff.next_delay();
            if wake >= deadline {
                return Outcome::NotWritten;
            }
            tokio::time::sleep_until(wake).await;
        }
    }

    /// One put or delete of the batch: a delete of an absent or expired item has nothing to
    /// do, and succeeds.
    async fn write_one(
        &self,
        db: &UserDb,
        owner: &str,
        entry: &BatchEntry,
    ) -> Result<(), DataError> {
        match entry {
            BatchEntry::Put(put) => {
                let put = Put {
                    precondition: Precondition::None,
                    ..put.clone()
                };
                self.put(db, owner, put).await.map(drop)
            }
            BatchEntry::Delete(key) => match self.delete(db, owner, key, None).await {
                Ok(_) | Err(DataError::NotFound) => Ok(()),
                Err(error) => Err(error),
            },
        }
    }
}
