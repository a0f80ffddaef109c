//! What operators see of account erasures (`dynagate_account_erasures_*`): no caller can ask
//! after DeleteAccount has answered, since its token no longer works.

use std::sync::atomic::AtomicI64;

use common::metrics::Counter;
use prometheus_client::{metrics::gauge::Gauge, registry::Registry};

/// Counts of account erasures on this replica.
#[derive(Debug, Default)]
pub struct ErasureMetrics {
    /// Deletion records written by DeleteAccount.
    pub started: Counter,
    /// Records claimed by a sweep: a crashed or parked erasure taken up.
    pub resumed: Counter,
    /// Erasures finished: usernames freed.
    pub completed: Counter,
    /// Passes stopped by an error (the record stays; the next sweep retries).
    pub failed: Counter,
    /// Items deleted from users' partitions of the items table.
    pub items_deleted: Counter,
    /// Deletion records the last sweep saw.
    pub pending: Gauge<i64, AtomicI64>,
}

impl ErasureMetrics {
    /// Exports them as `dynagate_account_erasures_*`.
    pub fn register(&self, registry: &mut Registry) {
        let counters = [
            (
                &self.started,
                "account_erasures_started",
                "Account deletion records written by DeleteAccount",
            ),
            (
                &self.resumed,
                "account_erasures_resumed",
                "Account erasures claimed by a sweep (crashed or parked ones taken up)",
            ),
            (
                &self.completed,
                "account_erasures_completed",
                "Account erasures finished (usernames freed)",
            ),
            (
                &self.failed,
                "account_erasures_failed",
                "Account erasure passes stopped by an error (retried by the next sweep)",
            ),
            (
                &self.items_deleted,
                "account_erasures_items_deleted",
                "Items deleted from erased users' partitions",
            ),
        ];
        for (counter, name, help) in counters {
            counter.register(registry, name, help);
        }
        registry.register(
            "account_erasures_pending",
            "Account deletion records the last sweep saw",
            self.pending.clone(),
        );
    }
}
