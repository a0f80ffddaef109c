//! The poller: one per replica, it reads the revocations table about once a second so the
//! hub learns of other replicas' revocations, and prunes what expired.

use std::{sync::Arc, time::Duration};

use common::{clock::duration_millis, server::BackgroundTask};

use super::{
    hub::Hub,
    repair::{Repair, Repairs},
    settings::Timing,
    table::{BUCKET_MS, Recorded, RevocationTable, bucket_of},
};
use crate::error::AuthError;

/// Reads `table` into `hub` every `timing.poll`, queueing a repair of each revocation new to
/// the hub (one this replica did not make) in `repairs`. The first read loads every bucket that can
/// hold a revocation still relevant (made within `relevance`) and then marks the hub loaded;
/// each later one reads from `timing.lookback` before the previous successful read began. A
/// failed read is retried at the next tick from the same point, so nothing is skipped.
pub fn spawn(
    table: RevocationTable,
    hub: Arc<Hub>,
    repairs: Arc<Repairs>,
    timing: Timing,
    relevance: Duration,
) -> BackgroundTask {
    let handle = tokio::spawn(async move {
        let relevance_ms = duration_millis(relevance);
        let lookback_ms = duration_millis(timing.lookback);
        let mut ticker = tokio::time::interval(timing.poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_from: Option<i64> = None;
        let mut failing = false;
        loop {
            ticker.tick().await;
            let began = tokio::time::Instant::now();
            let started = hub.now_ms();
            // Never further back than a revocation can matter, however long reads failed.
            let horizon = started - relevance_ms;
            let from = next_from.map_or(horizon, |from| from.max(horizon));
            match read_since(&table, &hub, &repairs, from, started + lookback_ms).await {
                Ok(added) => {
                    hub.mark_read(began);
                    if !hub.is_loaded() {
                        hub.mark_loaded();
                        tracing::info!(revocations = hub.len(), "revocations loaded");
                    } else if added > 0 {
                        tracing::debug!(added, "revocations learned from the table");
                    }
                    if failing {
                        tracing::info!("revocations table readable again");
                        failing = false;
                    }
                    next_from = Some(started - lookback_ms);
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, "revocations table unreadable: heartbeats stop");
                        failing = true;
                    }
                }
            }
            hub.prune();
        }
    });
    BackgroundTask::from(handle)
}

/// Adds to `hub` every relevant revocation made from `from_ms` on, reading each minute bucket
/// up to `until_ms` (ahead of now, for writers whose clocks run ahead); returns how many were
/// new. Each new one is queued for repair in `repairs`.
async fn read_since(
    table: &RevocationTable,
    hub: &Hub,
    repairs: &Repairs,
    from_ms: i64,
    until_ms: i64,
) -> Result<usize, AuthError> {
    let now_secs = hub.now_ms().div_euclid(1000);
    let mut added = 0;
    for bucket in bucket_of(from_ms)..=bucket_of(until_ms) {
        // Whole earlier buckets are read from their start; only the first is cut at from_ms.
        let bucket_from = from_ms.max(bucket * BUCKET_MS);
        for recorded in table.read_bucket(bucket, bucket_from, now_secs).await? {
            added += usize::from(learn(hub, repairs, recorded));
        }
    }
    Ok(added)
}

/// Adds `recorded` to `hub`; if it is new there (not this replica's own, which it marks
/// itself), queues the repair of its session. True if it was new.
fn learn(hub: &Hub, repairs: &Repairs, recorded: Recorded) -> bool {
    let Recorded { revocation, reason } = recorded;
    // Items written before user ids were recorded cannot say where their session is.
    let repair = revocation.user_id.clone().map(|user_id| Repair {
        user_id,
        session_id: revocation.session_id.clone(),
        reason,
    });
    let revoked_at_ms = revocation.revoked_at_ms;
    let new = hub.add(revocation);
    if let (true, Some(repair)) = (new, repair) {
        repairs.schedule(repair, revoked_at_ms);
    }
    new
}
