//! One replica's view of the revocation feed: every revocation still relevant (some access
//! token of its session may still be valid), once per session, in a log that WatchRevocations
//! streams read through a shared [`Snapshot`], and a signal when it grows.
//!
//! Memory is bounded by the revocations made per access-token lifetime: an entry leaves the
//! log when its `not_after` passes (pruned at every poll), whatever happens to the table.
//! Streams cost a cursor each, not a copy: announcing a revocation builds the next snapshot
//! from the last one (one small block copied), and a new stream takes the current snapshot
//! without the log's lock.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use common::clock::{Clock, unix_millis};
use tokio::{sync::watch, time::Instant};

use super::{
    Revocation,
    snapshot::{BLOCK, Entry, Snapshot},
};

/// The revocations this replica knows of, and who is listening.
#[derive(Debug)]
pub struct Hub {
    log: Mutex<Log>,
    /// The log as streams read it; every stream holds a receiver.
    published: watch::Sender<Arc<Snapshot>>,
    /// Names this run of the replica in resume tokens: positions in another run's log mean
    /// nothing here.
    incarnation: u64,
    clock: Arc<dyn Clock>,
    freshness: Duration,
    /// True once the first full load is done.
    loaded: watch::Sender<bool>,
    /// When the last successful read of the table began.
    last_read: watch::Sender<Option<Instant>>,
    /// True once the server shuts down: every stream ends.
    closed: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Log {
    /// The latest entry of each session.
    by_session: HashMap<String, Arc<Entry>>,
    /// The same entries by `(not_after, seq)`, so pruning touches only what expired.
    by_expiry: BTreeMap<(i64, u64), Arc<Entry>>,
    snapshot: Arc<Snapshot>,
    last_seq: u64,
}

impl Log {
    /// Appends `revocation` as the latest entry of its session.
    fn append(&mut self, revocation: Revocation) {
        self.last_seq += 1;
        let entry = Arc::new(Entry {
            seq: self.last_seq,
            revocation,
        });
        let session = entry.revocation.session_id.clone();
        if let Some(older) = self.by_session.insert(session, Arc::clone(&entry)) {
            self.by_expiry
                .remove(&(older.revocation.not_after, older.seq));
        }
        self.by_expiry
            .insert((entry.revocation.not_after, entry.seq), Arc::clone(&entry));
        self.snapshot = Arc::new(self.snapshot.with(entry));
    }

    /// Forgets the sessions whose `not_after` passed at `now`; returns how many.
    fn prune(&mut self, now: i64) -> usize {
        let mut pruned = 0;
        while let Some(entry) = self.by_expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let entry = entry.remove();
            self.by_session.remove(&entry.revocation.session_id);
            pruned += 1;
        }
        pruned
    }

    /// The snapshot without expired blocks; rebuilt from the live entries alone when
    /// superseded or expired entries pinned in live blocks outnumber them.
    fn compact(&mut self, now: i64) -> bool {
        let live = self.by_session.len();
        if self.snapshot.held() > 2 * live + 2 * BLOCK {
            let mut entries: Vec<_> = self.by_session.values().cloned().collect();
            entries.sort_unstable_by_key(|entry| entry.seq);
            self.snapshot = Arc::new(Snapshot::of(entries));
            return true;
        }
        match self.snapshot.without_expired(now) {
            Some(smaller) => {
                self.snapshot = Arc::new(smaller);
                true
            }
            None => false,
        }
    }
}

/// A watcher's start: the log as it is, and the signal of every later change.
#[derive(Debug)]
pub struct Subscription {
    /// The log at subscription time.
    pub snapshot: Arc<Snapshot>,
    /// Holds each later snapshot; while it lives the stream counts as a subscriber.
    pub updates: watch::Receiver<Arc<Snapshot>>,
}

impl Hub {
    /// An empty hub, not loaded yet; its view counts as current for `freshness` after each
    /// successful read.
    pub fn new(clock: Arc<dyn Clock>, freshness: Duration) -> Self {
        let snapshot = Arc::<Snapshot>::default();
        Self {
            log: Mutex::new(Log {
                snapshot: Arc::clone(&snapshot),
                ..Log::default()
            }),
            published: watch::Sender::new(snapshot),
            incarnation: rand::random(),
            clock,
            freshness,
            loaded: watch::Sender::new(false),
            last_read: watch::Sender::new(None),
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

    /// Now in Unix seconds, what `not_after` is compared with.
    pub fn now_secs(&self) -> i64 {
        self.clock.now().unix_timestamp()
    }

    /// This run's name in resume tokens.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Adds a revocation unless it expired or its session is already known with a `not_after`
    /// at least as late; what it adds goes to every watcher (a known session whose `not_after`
    /// grew too). True only for a session this hub did not know yet.
    pub fn add(&self, revocation: Revocation) -> bool {
        if revocation.not_after <= self.now_secs() {
            return false;
        }
        let mut log = self.log();
        let known = log
            .by_session
            .get(&revocation.session_id)
            .map(|entry| entry.revocation.not_after);
        if known.is_some_and(|not_after| revocation.not_after <= not_after) {
            return false;
        }
        log.append(revocation);
        // Published under the lock, so streams see snapshots in log order.
        self.published.send_replace(Arc::clone(&log.snapshot));
        known.is_none()
    }

    /// True if the log holds `session_id`: its session has ended, whatever the sessions table
    /// says. One hash lookup.
    pub fn is_revoked(&self, session_id: &str) -> bool {
        self.log().by_session.contains_key(session_id)
    }

    /// Forgets revocations whose `not_after` has passed; returns how many.
    pub fn prune(&self) -> usize {
        let now = self.now_secs();
        let mut log = self.log();
        let pruned = log.prune(now);
        if log.compact(now) {
            self.published.send_replace(Arc::clone(&log.snapshot));
        }
        pruned
    }

    /// Revocations held (one per session).
    pub fn len(&self) -> usize {
        self.log().by_session.len()
    }

    /// True when no revocation is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Open subscriptions (one per WatchRevocations stream).
    pub fn subscribers(&self) -> usize {
        self.published.receiver_count()
    }

    /// Holders of the current snapshot: the hub's own two, and each stream that took it.
    /// Streams share it; none copies it.
    pub fn snapshot_refs(&self) -> usize {
        Arc::strong_count(&self.published.borrow())
    }

    /// The log as it is and every later change, without taking the log's lock.
    pub fn subscribe(&self) -> Subscription {
        let mut updates = self.published.subscribe();
        let snapshot = Arc::clone(&updates.borrow_and_update());
        Subscription { snapshot, updates }
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

    /// Records a successful read of the table that began at `started`: everything written
    /// before then is in the log.
    pub fn mark_read(&self, started: Instant) {
        self.last_read.send_if_modified(|last| {
            let later = last.is_none_or(|last| started > last);
            if later {
                *last = Some(started);
            }
            later
        });
    }

    /// How long ago the last successful read of the table began, on this process's monotonic
    /// clock; `None` before the first.
    pub fn view_age(&self) -> Option<Duration> {
        self.last_read.borrow().map(|at| at.elapsed())
    }

    /// True while the last successful read is recent: only then do streams send heartbeats
    /// and new streams start.
    pub fn is_current(&self) -> bool {
        self.view_age().is_some_and(|age| age <= self.freshness)
    }

    /// Waits until the first load is done and the view is current.
    pub async fn wait_current(&self) {
        self.wait_loaded().await;
        let mut last_read = self.last_read.subscribe();
        let freshness = self.freshness;
        // The sender lives as long as `self`, so this cannot fail while we wait.
        let _ = last_read
            .wait_for(|at| at.is_some_and(|at| at.elapsed() <= freshness))
            .await;
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

    fn sessions(snapshot: &Snapshot) -> Vec<&str> {
        snapshot
            .after(0)
            .map(|entry| entry.revocation.session_id.as_str())
            .collect()
    }

    #[test]
    fn ten_thousand_revocations_expire_out_of_the_log_and_the_snapshot() {
        let (clock, hub) = hub();
        for n in 0..10_000 {
            assert!(hub.add(revocation(n, START + 900 + i64::try_from(n / 100).unwrap())));
        }
        assert_eq!(hub.len(), 10_000);
        assert_eq!(hub.subscribe().snapshot.held(), 10_000);
        clock.advance(Duration::from_secs(900));
        assert_eq!(hub.prune(), 100, "only those expiring at exactly 900 s");
        clock.advance(Duration::from_secs(50));
        assert_eq!(hub.prune(), 5_000);
        assert!(
            hub.subscribe().snapshot.held() <= 5_000 + BLOCK,
            "expired blocks leave the snapshot"
        );
        clock.advance(Duration::from_secs(50));
        assert_eq!(hub.prune(), 4_900);
        assert!(hub.is_empty());
        assert_eq!(hub.subscribe().snapshot.after(0).count(), 0);
    }

    #[test]
    fn a_session_is_held_once_with_its_latest_expiry() {
        let (clock, hub) = hub();
        assert!(hub.add(revocation(1, START + 10)));
        assert!(!hub.add(revocation(1, START + 20)), "known: not new");
        assert!(!hub.add(revocation(1, START + 5)));
        assert_eq!(hub.len(), 1);
        let replay = hub.subscribe().snapshot;
        let expiries: Vec<i64> = replay.after(0).map(|e| e.revocation.not_after).collect();
        assert_eq!(
            expiries,
            [START + 10, START + 20],
            "the later expiry goes out too"
        );
        clock.advance(Duration::from_secs(10));
        assert_eq!(hub.prune(), 0, "the later expiry counts");
        assert!(hub.is_revoked("session-1"));
        clock.advance(Duration::from_secs(10));
        assert_eq!(hub.prune(), 1);
        assert!(!hub.is_revoked("session-1"));
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
        assert!(!hub.is_revoked("session-1"));
    }

    #[test]
    fn superseded_and_expired_entries_do_not_pile_up_in_the_snapshot() {
        let (clock, hub) = hub();
        // One session extended again and again, beside one long-lived revocation per block.
        for n in 0..5_000 {
            hub.add(revocation(0, START + 10 + i64::try_from(n).unwrap()));
            if n % 64 == 0 {
                hub.add(revocation(n + 1, START + 100_000));
            }
        }
        hub.prune();
        let held = hub.subscribe().snapshot.held();
        assert!(
            held <= 2 * hub.len() + 2 * BLOCK,
            "{held} held for {}",
            hub.len()
        );
        clock.advance(Duration::from_secs(20_000));
        hub.prune();
        assert_eq!(hub.len(), 79);
        assert!(hub.subscribe().snapshot.held() <= 2 * 79 + 2 * BLOCK);
    }

    #[tokio::test]
    async fn a_subscriber_gets_the_log_then_each_new_snapshot_without_copies() {
        let (_, hub) = hub();
        hub.add(revocation(2, START + 60));
        hub.add(revocation(1, START + 60));
        let Subscription {
            snapshot,
            mut updates,
        } = hub.subscribe();
        assert_eq!(sessions(&snapshot), ["session-2", "session-1"], "log order");
        assert_eq!(hub.snapshot_refs(), 3, "the hub's two and this stream's");
        hub.add(revocation(1, START + 60));
        assert!(
            !updates.has_changed().unwrap(),
            "a known session changes nothing"
        );
        hub.add(revocation(3, START + 60));
        updates.changed().await.unwrap();
        let next = Arc::clone(&updates.borrow_and_update());
        let new: Vec<_> = next.after(snapshot.last_seq()).collect();
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].revocation.session_id, "session-3");
        assert_eq!(hub.subscribers(), 1);
        drop((snapshot, next, updates));
        assert_eq!(hub.subscribers(), 0);
        assert_eq!(hub.snapshot_refs(), 2);
    }

    #[tokio::test]
    async fn the_view_is_current_only_after_a_recent_read() {
        let (_, hub) = hub();
        assert!(!hub.is_current());
        assert_eq!(hub.view_age(), None);
        hub.mark_read(Instant::now() - Duration::from_secs(6));
        assert!(!hub.is_current(), "a read that began too long ago");
        hub.mark_read(Instant::now() - Duration::from_secs(10));
        assert!(
            hub.view_age().unwrap() < Duration::from_secs(10),
            "an older read never replaces a newer one"
        );
        hub.mark_loaded();
        let waiting = tokio::time::timeout(Duration::from_millis(50), hub.wait_current()).await;
        assert!(waiting.is_err(), "not current yet");
        hub.mark_read(Instant::now());
        assert!(hub.is_current());
        tokio::time::timeout(Duration::from_secs(5), hub.wait_current())
            .await
            .expect("current now");
    }
}
