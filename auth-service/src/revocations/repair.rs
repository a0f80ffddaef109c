//! Repairs: sessions whose ending is in the revocation log but whose item in the sessions
//! table may never have been marked ended (the replica that announced it was killed between
//! the two writes, or the mark failed). The log is the truth; a repair makes the table agree.
//!
//! What is queued: every revocation this replica learns from the table and did not make
//! itself ([`super::poller`]), its own revocations whose mark failed, and sessions a reader
//! found live in the table yet in the log. A repair falls due once its revocation is older
//! than the delay ([`repair_delay`]: a mark still in flight elsewhere lands first), is taken
//! by the replica's repairer (`family::repair`), which marks the session if it is not, and
//! is retried with backoff until it succeeds. While queued, a session counts as revoked
//! ([`Repairs::is_pending`]), even after its revocation's `not_after`, when the hub has
//! forgotten it.
//!
//! The queue holds at most [`REPAIR_QUEUE_CAPACITY`] sessions; beyond, new repairs are
//! dropped and counted (`dropped`): every other replica queues the same revocation, and a
//! reader that meets the session queues it again.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use common::{
    clock::{Clock, duration_millis, unix_millis},
    metrics::LabeledCounter,
};

use crate::sessions::RevokeReason;

/// Sessions waiting for (or under) repair, at most: about 300 bytes each, so ≈ 3 MB when full.
pub const REPAIR_QUEUE_CAPACITY: usize = 10_000;
/// The first retry of a failed repair waits this long; each further one twice as long …
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// … up to this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What a repair can come to, the label values of `dynagate_session_repairs_total`.
pub use crate::metrics::SESSION_REPAIR_OUTCOMES as OUTCOMES;

/// How long after its revocation a session is checked: the revocation lookback (which
/// exceeds the AWS operation timeout plus the clock skew between replicas) plus one more AWS
/// operation timeout, so the announcing replica's own mark (at most one operation after its
/// announcement, itself at most one operation) has landed or failed. At most a quarter of
/// `relevance` (how long a revocation is kept), so retries have most of it.
pub fn repair_delay(
    lookback: Duration,
    aws_operation_timeout: Duration,
    relevance: Duration,
) -> Duration {
    (lookback + aws_operation_timeout).min(relevance / 4)
}

/// One session to mark ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repair {
    /// Its user: where its item is.
    pub user_id: String,
    /// The session.
    pub session_id: String,
    /// Why it ended, if known (recorded with the mark).
    pub reason: Option<RevokeReason>,
}

/// Whether a repair joined the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queued {
    /// It is new.
    Added,
    /// Its session was already queued (the earlier due time stands).
    Known,
    /// The queue is full: dropped.
    Full,
}

#[derive(Debug)]
struct Entry {
    repair: Repair,
    /// When it falls due (Unix ms); `None` while the repairer has it.
    due_ms: Option<i64>,
    failures: u32,
}

/// The queue itself, by session and by due time; no clock, no I/O.
#[derive(Debug)]
pub struct RepairQueue {
    capacity: usize,
    entries: HashMap<String, Entry>,
    /// `(due_ms, session_id)` of the entries waiting.
    waiting: BTreeSet<(i64, String)>,
}

impl RepairQueue {
    /// An empty queue holding at most `capacity` sessions.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: HashMap::new(),
            waiting: BTreeSet::new(),
        }
    }

    /// Queues `repair` to fall due at `due_ms`. A known session keeps its place (and learns
    /// the reason, if it had none).
    pub fn push(&mut self, repair: Repair, due_ms: i64) -> Queued {
        if let Some(known) = self.entries.get_mut(&repair.session_id) {
            known.repair.reason = known.repair.reason.or(repair.reason);
            return Queued::Known;
        }
        if self.entries.len() >= self.capacity {
            return Queued::Full;
        }
        self.waiting.insert((due_ms, repair.session_id.clone()));
        let session_id = repair.session_id.clone();
        let entry = Entry {
            repair,
            due_ms: Some(due_ms),
            failures: 0,
        };
        self.entries.insert(session_id, entry);
        Queued::Added
    }

    /// Up to `limit` repairs due at `now_ms`, earliest first; they stay queued (and count as
    /// pending) until [`Self::done`] or [`Self::failed`].
    pub fn take_due(&mut self, now_ms: i64, limit: usize) -> Vec<Repair> {
        let mut taken = Vec::new();
        while taken.len() < limit {
            let Some((due_ms, _)) = self.waiting.first() else {
                break;
            };
            if *due_ms > now_ms {
                break;
            }
            let Some((_, session_id)) = self.waiting.pop_first() else {
                break;
            };
            if let Some(entry) = self.entries.get_mut(&session_id) {
                entry.due_ms = None;
                taken.push(entry.repair.clone());
            }
        }
        taken
    }

    /// The session is marked (or needs no mark): it leaves the queue.
    pub fn done(&mut self, session_id: &str) {
        if let Some(Entry {
            due_ms: Some(due_ms),
            ..
        }) = self.entries.remove(session_id)
        {
            self.waiting.remove(&(due_ms, session_id.to_owned()));
        }
    }

    /// The repair of `session_id` failed at `now_ms`: it falls due again after a backoff
    /// (returned) that doubles with each failure.
    pub fn failed(&mut self, session_id: &str, now_ms: i64) -> Option<Duration> {
        let entry = self.entries.get_mut(session_id)?;
        entry.failures = entry.failures.saturating_add(1);
        let backoff = backoff(entry.failures);
        let due_ms = now_ms.saturating_add(duration_millis(backoff));
        if let Some(old) = entry.due_ms.replace(due_ms) {
            self.waiting.remove(&(old, session_id.to_owned()));
        }
        self.waiting.insert((due_ms, session_id.to_owned()));
        Some(backoff)
    }

    /// True while `session_id` is queued or under repair.
    pub fn contains(&self, session_id: &str) -> bool {
        self.entries.contains_key(session_id)
    }

    /// Sessions queued or under repair.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The wait before retry number `failures` (1 for the first): doubling, capped.
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

/// One replica's repair queue, shared by the poller, the readers and the repairer.
#[derive(Debug)]
pub struct Repairs {
    queue: Mutex<RepairQueue>,
    clock: Arc<dyn Clock>,
    delay: Duration,
    outcomes: LabeledCounter,
}

impl Repairs {
    /// A queue of at most `capacity` whose repairs fall due `delay` after their revocation,
    /// time read from `clock`, outcomes counted in `outcomes` (labelled with [`OUTCOMES`]).
    pub fn new(
        capacity: usize,
        delay: Duration,
        clock: Arc<dyn Clock>,
        outcomes: LabeledCounter,
    ) -> Self {
        Self {
            queue: Mutex::new(RepairQueue::new(capacity)),
            clock,
            delay,
            outcomes,
        }
    }

    fn queue(&self) -> MutexGuard<'_, RepairQueue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> i64 {
        unix_millis(self.clock.now())
    }

    /// How long after a revocation its session is checked.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Queues `repair` of a revocation made at `revoked_at_ms`; false if the queue is full
    /// (counted as `dropped`).
    pub fn schedule(&self, repair: Repair, revoked_at_ms: i64) -> bool {
        let delay_ms = duration_millis(self.delay);
        let queued = self
            .queue()
            .push(repair, revoked_at_ms.saturating_add(delay_ms));
        if queued == Queued::Full {
            self.outcomes.increment("dropped");
            return false;
        }
        true
    }

    /// Queues a repair of `session_id` of `user_id`, found live in the table but revoked in
    /// the log: due one delay from now (its revocation's time is not at hand; the session is
    /// refused meanwhile anyway).
    pub fn schedule_now(&self, user_id: &str, session_id: &str) {
        let repair = Repair {
            user_id: user_id.to_owned(),
            session_id: session_id.to_owned(),
            reason: None,
        };
        self.schedule(repair, self.now_ms());
    }

    /// True while `session_id` is queued or under repair: its session has ended.
    pub fn is_pending(&self, session_id: &str) -> bool {
        self.queue().contains(session_id)
    }

    /// Sessions queued or under repair.
    pub fn len(&self) -> usize {
        self.queue().len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue().is_empty()
    }

    /// Up to `limit` repairs due now, for the repairer.
    pub fn take_due(&self, limit: usize) -> Vec<Repair> {
        let now_ms = self.now_ms();
        self.queue().take_due(now_ms, limit)
    }

    /// The repair of `session_id` is over: `marked` says whether it wrote the mark.
    pub fn done(&self, session_id: &str, marked: bool) {
        self.queue().done(session_id);
        self.outcomes
            .increment(if marked { "marked" } else { "already_ended" });
    }

    /// The repair of `session_id` failed; returns the backoff before it is tried again.
    pub fn failed(&self, session_id: &str) -> Option<Duration> {
        self.outcomes.increment("failed");
        let now_ms = self.now_ms();
        self.queue().failed(session_id, now_ms)
    }
}

#[cfg(test)]
mod tests;
