//! One replica's view of the revocation feed: every revocation still relevant (some access
//! token of its session may still be valid), once per session, and a broadcast of each new
//! one to the open WatchRevocations streams.
//!
//! Memory is bounded by the revocations made per access-token lifetime: an entry leaves the
//! log when its `not_after` passes (pruned at every poll), whatever happens to the table.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use common::clock::{Clock, unix_millis};
use tokio::{
    sync::{broadcast, watch},
    time::Instant,
};

use super::Revocation;

/// New revocations a watcher may fall behind by before its stream is ended (it resumes with
/// `since`). A LogoutAll sends one per session, at most `--max-sessions-per-user`.
pub const BROADCAST_CAPACITY: usize = 8192;

/// The revocations this replica knows of, and who is listening.
#[derive(Debug)]
pub struct Hub {
    log: Mutex<Log>,
    sender: broadcast::Sender<Revocation>,
    clock: Arc<dyn Clock>,
    freshness: Duration,
    /// True once the first full load from the table is done.
    loaded: watch::Sender<bool>,
    /// When the poller last read the table successfully.
    last_read: Mutex<Option<Instant>>,
    /// True once the server shuts down: every stream ends.
    closed: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Log {
    by_session: HashMap<String, Revocation>,
    /// `(not_after, session_id)`, so pruning touches only what expired.
    by_expiry: BTreeSet<(i64, String)>,
}

/// A watcher's start: what to replay, and the new revocations from that moment on.
#[derive(Debug)]
pub struct Subscription {
    /// Relevant revocations at subscription time, by `revoked_at`.
    pub replay: Vec<Revocation>,
    /// Every revocation added after the snapshot.
    pub updates: broadcast::Receiver<Revocation>,
}

impl Hub {
    /// An empty hub, not loaded yet; its view counts as current for `freshness` after each
    /// successful read.
    pub fn new(clock: Arc<dyn Clock>, freshness: Duration) -> Self {
        Self {
            log: Mutex::default(),
            sender: broadcast::channel(BROADCAST_CAPACITY).0,
            clock,
            freshness,
            loaded: watch::Sender::new(false),
            last_read: Mutex::new(None),
            closed: watch::Sender::new(false),
        }
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Now, as the feed's rules read it.
    pub fn now_ms(&self) -> i64 {
        unix_millis(self.clock.now())
    }

    /// Adds a revocation unless it expired or its session is already known (then only its
    /// `not_after` may grow); a new one goes to every watcher. True if it was new.
    pub fn add(&self, revocation: Revocation) -> bool {
        if revocation.not_after <= self.clock.now().unix_timestamp() {
            return false;
        }
        let mut log = self.log();
        if let Some(known) = log.by_session.get_mut(&revocation.session_id) {
            if revocation.not_after > known.not_after {
                let old = (known.not_after, revocation.session_id.clone());
                known.not_after = revocation.not_after;
                log.by_expiry.remove(&old);
                log.by_expiry
                    .insert((revocation.not_after, revocation.session_id));
            }
            return false;
        }
        log.by_expiry
            .insert((revocation.not_after, revocation.session_id.clone()));
        log.by_session
            .insert(revocation.session_id.clone(), revocation.clone());
        // Sent under the lock, so a subscriber's snapshot and its updates never leave a gap.
        // No receiver is not an error: nobody is watching.
        let _ = self.sender.send(revocation);
        true
    }

    /// True if the log holds `session_id`: its session has ended, whatever the sessions table
    /// says. One hash lookup.
    pub fn is_revoked(&self, session_id: &str) -> bool {
        self.log().by_session.contains_key(session_id)
    }

    /// Forgets revocations whose `not_after` has passed; returns how many.
    pub fn prune(&self) -> usize {
        let now = self.clock.now().unix_timestamp();
        let mut log = self.log();
        let mut pruned = 0;
        while let Some((not_after, _)) = log.by_expiry.first() {
            if *not_after > now {
                break;
            }
            if let Some((_, session_id)) = log.by_expiry.pop_first() {
                log.by_session.remove(&session_id);
                pruned += 1;
            }
        }
        pruned
    }

    /// Revocations held.
    pub fn len(&self) -> usize {
        self.log().by_session.len()
    }

    /// True when no revocation is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Open subscriptions (one per WatchRevocations stream).
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }

    /// Subscribes and snapshots atomically: the relevant revocations made at `from_ms` or
    /// later (all with `None`), then every later addition.
    pub fn subscribe(&self, from_ms: Option<i64>) -> Subscription {
        let now = self.clock.now().unix_timestamp();
        let log = self.log();
        let updates = self.sender.subscribe();
        let mut replay: Vec<Revocation> = log
            .by_session
            .values()
            .filter(|r| r.not_after > now && from_ms.is_none_or(|from| r.revoked_at_ms >= from))
            .cloned()
            .collect();
        drop(log);
        replay.sort_unstable_by(|a, b| {
            (a.revoked_at_ms, &a.session_id).cmp(&(b.revoked_at_ms, &b.session_id))
        });
        Subscription { replay, updates }
    }

    /// Records that the first full load is done.
    pub fn mark_loaded(&self) {
        self.loaded.send_replace(true);
    }

    /// Waits until the first full load is done.
    pub async fn wait_loaded(&self) {
        let mut loaded = self.loaded.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we wait.
        let _ = loaded.wait_for(|loaded| *loaded).await;
    }

    /// True once the first full load is done.
    pub fn is_loaded(&self) -> bool {
        *self.loaded.borrow()
    }

    /// Records a successful read of the table.
    pub fn mark_read(&self) {
        *self
            .last_read
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// True while the last successful read is recent: only then do streams send heartbeats.
    pub fn is_current(&self) -> bool {
        self.last_read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() <= self.freshness)
    }

    /// Ends every stream (graceful shutdown: watchers move to another replica).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Resolves when [`Hub::close`] is called.
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use common::clock::ManualClock;
    use time::OffsetDateTime;

    use super::*;

    const START: i64 = 1_700_000_000;

    fn hub() -> (Arc<ManualClock>, Hub) {
        let clock = Arc::new(ManualClock::new(
            OffsetDateTime::from_unix_timestamp(START).unwrap(),
        ));
        let hub = Hub::new(clock.clone(), Duration::from_secs(5));
        (clock, hub)
    }

    fn revocation(n: usize, not_after: i64) -> Revocation {
        Revocation {
            session_id: format!("session-{n}"),
            user_id: Some(format!("user-{n}")),
            revoked_at_ms: START * 1000 + i64::try_from(n).unwrap(),
            not_after,
        }
    }

    #[test]
    fn ten_thousand_revocations_expire_out_of_the_log() {
        let (clock, hub) = hub();
        for n in 0..10_000 {
            assert!(hub.add(revocation(n, START + 900 + i64::try_from(n % 100).unwrap())));
        }
        assert_eq!(hub.len(), 10_000);
        clock.advance(Duration::from_secs(900));
        assert_eq!(hub.prune(), 100, "only those expiring at exactly 900 s");
        clock.advance(Duration::from_secs(100));
        assert_eq!(hub.prune(), 9_900);
        assert!(hub.is_empty());
        assert!(hub.subscribe(None).replay.is_empty());
    }

    #[test]
    fn a_session_is_held_once_with_its_latest_expiry() {
        let (clock, hub) = hub();
        assert!(hub.add(revocation(1, START + 10)));
        assert!(!hub.add(revocation(1, START + 20)));
        assert!(!hub.add(revocation(1, START + 5)));
        assert_eq!(hub.len(), 1);
        clock.advance(Duration::from_secs(10));
        assert_eq!(hub.prune(), 0, "the later expiry counts");
        clock.advance(Duration::from_secs(10));
        assert_eq!(hub.prune(), 1);
    }

    #[test]
    fn a_session_is_revoked_while_its_revocation_is_held() {
        let (clock, hub) = hub();
        assert!(!hub.is_revoked("session-1"));
        hub.add(revocation(1, START + 10));
        assert!(hub.is_revoked("session-1"));
        assert!(!hub.is_revoked("session-2"));
        clock.advance(Duration::from_secs(10));
        hub.prune();
        assert!(!hub.is_revoked("session-1"), "forgotten past not_after");
    }

    #[test]
    fn expired_revocations_are_not_added() {
        let (_, hub) = hub();
        assert!(!hub.add(revocation(1, START)));
        assert!(hub.is_empty());
    }

    #[tokio::test]
    async fn a_subscriber_gets_the_snapshot_then_only_new_revocations() {
        let (_, hub) = hub();
        hub.add(revocation(2, START + 60));
        hub.add(revocation(1, START + 60));
        let mut subscription = hub.subscribe(Some(START * 1000 + 2));
        let replayed: Vec<_> = subscription.replay.iter().map(|r| &r.session_id).collect();
        assert_eq!(replayed, ["session-2"], "from_ms filters by revoked_at");
        hub.add(revocation(1, START + 60));
        hub.add(revocation(3, START + 60));
        let next = subscription.updates.recv().await.unwrap();
        assert_eq!(
            next.session_id, "session-3",
            "a known session is not sent again"
        );
        assert_eq!(hub.subscribers(), 1);
        drop(subscription);
        assert_eq!(hub.subscribers(), 0);
    }

    #[test]
    fn the_view_is_current_only_after_a_recent_read() {
        let (_, hub) = hub();
        assert!(!hub.is_current());
        hub.mark_read();
        assert!(hub.is_current());
    }
}
