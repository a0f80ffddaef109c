//! Whether this replica's view of revocations can be trusted now: it is, while some auth-service
//! replica whose replay completed was heard from (a revocation or a heartbeat) within the
//! maximum staleness, *counting from when that replica last read the revocations table*: a
//! message says how old the replica's view is (`view_age`), and it counts as news from that
//! long before it arrived. So a replica that can no longer read DynamoDB keeps no verifier
//! fresh, however often the verifier reconnects to it. Before the first completed replay
//! nothing can be trusted.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use common::clock::{Clock, unix_millis};
use tokio::sync::Notify;

/// `last_heard` before anything was heard.
const NEVER: i64 = i64::MIN;

/// The freshness of the revocation feed, read on every request (one clock read and one atomic
/// load).
#[derive(Debug)]
pub struct Freshness {
    clock: Arc<dyn Clock>,
    /// `None`: the feed is off and tokens are trusted until they expire.
    max_staleness_ms: Option<i64>,
    /// Unix milliseconds (this service's clock) of the latest read of the revocations table a
    /// message past its stream's replay vouched for.
    last_heard: AtomicI64,
    /// Woken when the feed turns fresh, so health can follow at once.
    turned_fresh: Arc<Notify>,
}

impl Freshness {
    /// A feed that must be heard from every `max_staleness`; zero turns it off.
    pub fn new(max_staleness: Duration, clock: Arc<dyn Clock>) -> Self {
        let max_staleness_ms = (!max_staleness.is_zero())
            .then(|| i64::try_from(max_staleness.as_millis()).unwrap_or(i64::MAX));
        Self {
            clock,
            max_staleness_ms,
            last_heard: AtomicI64::new(NEVER),
            turned_fresh: Arc::default(),
        }
    }

    /// True when the feed is on (a maximum staleness is set).
    pub fn is_on(&self) -> bool {
        self.max_staleness_ms.is_some()
    }

    /// True when tokens may be trusted: the feed is off, or was heard from recently enough.
    pub fn is_fresh(&self) -> bool {
        match self.max_staleness_ms {
            None => true,
            Some(max) => self.fresh_at(self.now(), max),
        }
    }

    /// A stream whose replay completed delivered a message (revocations or a heartbeat) from
    /// a replica whose view of the table is `view_age` old.
    pub fn heard(&self, view_age: Duration) {
        let now = self.now();
        let age = i64::try_from(view_age.as_millis()).unwrap_or(i64::MAX);
        let read_at = now.saturating_sub(age);
        let before = self.last_heard.fetch_max(read_at, Ordering::AcqRel);
        if let Some(max) = self.max_staleness_ms
            && !self.fresh_at_heard(before, now, max)
            && self.fresh_at_heard(read_at, now, max)
        {
            tracing::info!("revocation feed current again: trusting tokens");
            self.turned_fresh.notify_one();
        }
    }

    /// Woken (one stored permit) whenever the feed turns fresh after being stale.
    pub fn turned_fresh(&self) -> Arc<Notify> {
        Arc::clone(&self.turned_fresh)
    }

    fn fresh_at(&self, now: i64, max: i64) -> bool {
        self.fresh_at_heard(self.last_heard.load(Ordering::Acquire), now, max)
    }

    fn fresh_at_heard(&self, heard: i64, now: i64, max: i64) -> bool {
        heard != NEVER && now.saturating_sub(heard) <= max
    }

    fn now(&self) -> i64 {
        unix_millis(self.clock.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::clock::ManualClock;
    use time::OffsetDateTime;

    fn freshness(max_staleness: Duration) -> (Freshness, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
        (Freshness::new(max_staleness, clock.clone()), clock)
    }

    #[test]
    fn nothing_is_trusted_before_the_first_completed_replay() {
        let (feed, _) = freshness(Duration::from_secs(30));
        assert!(feed.is_on());
        assert!(!feed.is_fresh());
        feed.heard(Duration::ZERO);
        assert!(feed.is_fresh());
    }

    #[test]
    fn the_feed_goes_stale_after_the_maximum_and_recovers_when_heard() {
        let (feed, clock) = freshness(Duration::from_secs(30));
        feed.heard(Duration::ZERO);
        clock.advance(Duration::from_secs(30));
        assert!(feed.is_fresh(), "exactly the maximum is still fresh");
        clock.advance(Duration::from_millis(1));
        assert!(!feed.is_fresh());
        feed.heard(Duration::ZERO);
        assert!(feed.is_fresh());
    }

    #[test]
    fn a_clock_stepping_back_never_makes_the_feed_look_older() {
        let (feed, clock) = freshness(Duration::from_secs(30));
        feed.heard(Duration::ZERO);
        let later = clock.now();
        clock.set(later - Duration::from_secs(60));
        feed.heard(Duration::ZERO);
        clock.set(later + Duration::from_secs(20));
        assert!(feed.is_fresh(), "the later hearing counts");
    }

    #[test]
    fn zero_turns_the_feed_off_and_tokens_are_trusted() {
        let (feed, clock) = freshness(Duration::ZERO);
        assert!(!feed.is_on());
        assert!(feed.is_fresh());
        clock.advance(Duration::from_secs(3600));
        assert!(feed.is_fresh());
    }

    #[test]
    fn news_counts_from_when_the_replica_last_read_the_table() {
        let (feed, clock) = freshness(Duration::from_secs(30));
        feed.heard(Duration::from_secs(31));
        assert!(
            !feed.is_fresh(),
            "a replica that has not read for 31 s keeps nobody fresh"
        );
        feed.heard(Duration::from_secs(20));
        assert!(feed.is_fresh());
        clock.advance(Duration::from_secs(10));
        assert!(feed.is_fresh(), "30 s after the replica's read");
        clock.advance(Duration::from_millis(1));
        assert!(!feed.is_fresh());
        for _ in 0..10 {
            // Reconnecting to a stale replica again and again changes nothing.
            clock.advance(Duration::from_secs(6));
            feed.heard(Duration::from_secs(31));
        }
        assert!(!feed.is_fresh());
        feed.heard(Duration::from_millis(300));
        assert!(feed.is_fresh());
    }

    #[tokio::test]
    async fn turning_fresh_wakes_health_once() {
        let (feed, clock) = freshness(Duration::from_secs(5));
        let woken = feed.turned_fresh();
        feed.heard(Duration::ZERO);
        tokio::time::timeout(Duration::from_secs(1), woken.notified())
            .await
            .expect("woken when the first replay completes");
        feed.heard(Duration::ZERO);
        let again = tokio::time::timeout(Duration::from_millis(20), woken.notified()).await;
        assert!(again.is_err(), "a heartbeat while fresh wakes nobody");
        clock.advance(Duration::from_secs(6));
        feed.heard(Duration::ZERO);
        tokio::time::timeout(Duration::from_secs(1), woken.notified())
            .await
            .expect("woken on recovery");
    }
}
