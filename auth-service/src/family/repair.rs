//! The replica's repairer: one background task that marks ended the sessions the revocation
//! log has ended but the sessions table may not say so (see `revocations::repair` for what is
//! queued and when it falls due). A repair reads the session (strongly consistent) and, if it
//! is there and unmarked, marks it with a conditional write, recording the reason the
//! revocation carries. Failures come back after a backoff, however long DynamoDB is away.

use std::time::Duration;

use common::server::BackgroundTask;
use futures::StreamExt;
use tokio::time::MissedTickBehavior;

use super::Families;
use crate::{error::AuthError, revocations::Repair};

/// Repairs started per tick at most: the rate at which a replica that starts with a full
/// queue (every revocation of the last access-token lifetime is new to it) reads the
/// sessions table.
pub const REPAIRS_PER_TICK: usize = 500;
/// Repairs in flight at once.
const REPAIR_CONCURRENCY: usize = 8;

impl Families {
    /// Starts the repairer, looking for due repairs every `tick` (the revocation poll
    /// interval); it stops when the returned task is dropped.
    pub fn spawn_repairer(&self, tick: Duration) -> BackgroundTask {
        let families = self.clone();
        let handle = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(tick);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                families.repair_due().await;
            }
        });
        BackgroundTask::from(handle)
    }

    /// Runs the repairs due now, at most [`REPAIRS_PER_TICK`]; returns how many it tried.
    pub async fn repair_due(&self) -> usize {
        let repairs = self.revocations.repairs();
        let due = repairs.take_due(REPAIRS_PER_TICK);
        let tried = due.len();
        futures::stream::iter(due)
            .for_each_concurrent(REPAIR_CONCURRENCY, |repair| async move {
                match self.repair(&repair).await {
                    Ok(marked) => repairs.done(&repair.session_id, marked),
                    Err(error) => {
                        let retry_in = repairs.failed(&repair.session_id);
                        tracing::warn!(
                            user_id = %repair.user_id,
                            session_id = %repair.session_id,
                            %error,
                            ?retry_in,
                            "session repair failed"
                        );
                    }
                }
            })
            .await;
        tried
    }

    /// Marks `repair`'s session ended if it is there and unmarked; true if this wrote the mark.
    async fn repair(&self, repair: &Repair) -> Result<bool, AuthError> {
        let Repair {
            user_id,
            session_id,
            reason,
        } = repair;
        if !self.store.is_unmarked(user_id, session_id).await? {
            return Ok(false);
        }
        let now = self.now();
        let marked = self
            .store
            .revoke(user_id, session_id, *reason, now, self.delete_after(now))
            .await?;
        if marked {
            tracing::warn!(%user_id, %session_id, "session ended in the revocation log but never marked: marked by repair");
        }
        Ok(marked)
    }
}
