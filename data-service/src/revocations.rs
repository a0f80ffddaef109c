//! Ended sessions, as the auth-services' revocation feed reports them: the set of revoked
//! session ids that every request is checked against (one in-memory lookup), each kept only
//! until no access token of its session can still be valid, so memory is bounded by the
//! revocations of one access-token lifetime. [`watcher`] fills it; [`freshness`] says whether
//! it can be trusted; [`token_index`] maps a session to its user and the tokens verified
//! here, for clean-up.
//!
//! No cap on the set: evicting a revocation early would make a revoked token valid again, and
//! refusing everyone when full would let logouts take the service down. Its size follows the
//! auth-services' (throttled) logins; each entry costs about 150 bytes.

pub mod freshness;
pub mod token_index;
pub mod watcher;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use common::{
    clock::Clock,
    metrics::Counter,
    tokens::{Principal, TokenError},
};
use moka::{Expiry, sync::Cache};
use time::OffsetDateTime;

use crate::error::DataError;
pub use freshness::Freshness;
pub use token_index::{Ended, TokenIndex};

/// The longest a revocation is kept, whatever its `not_after` says: an access token lives at
/// most a day (the auth-service's upper bound on its lifetime).
pub const MAX_KEEP: Duration = Duration::from_secs(86_400);

/// Settings of [`Revocations`].
#[derive(Clone, Copy, Debug)]
pub struct RevocationsConfig {
    /// Longest the feed may go unheard before tokens stop being trusted; zero turns it off.
    pub max_staleness: Duration,
    /// Sessions (and users) the session → user index remembers at most.
    pub index_capacity: u64,
}

/// Forgets a revocation at its `not_after` (read from the service clock when inserted).
struct UntilNotAfter {
    clock: Arc<dyn Clock>,
}

impl Expiry<String, OffsetDateTime> for UntilNotAfter {
    fn expire_after_create(
        &self,
        _: &String,
        not_after: &OffsetDateTime,
        _: Instant,
    ) -> Option<Duration> {
        Some(keep_for(*not_after, self.clock.now()))
    }
    fn expire_after_update(
        &self,
        _: &String,
        not_after: &OffsetDateTime,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(keep_for(*not_after, self.clock.now()))
    }
}

fn keep_for(not_after: OffsetDateTime, now: OffsetDateTime) -> Duration {
    Duration::try_from(not_after - now)
        .unwrap_or_default()
        .min(MAX_KEEP)
}

/// The revoked sessions, the index that cleans up after them, and the feed's freshness.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct Revocations {
    inner: Arc<Inner>,
    /// Revocations applied (from the feed).
    applied: Counter,
}

struct Inner {
    /// Session id → `not_after`.
    revoked: Cache<String, OffsetDateTime>,
    /// The tokens verified here, by session and user.
    index: TokenIndex,
    freshness: Freshness,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("revoked", &self.revoked.entry_count())
            .field("index", &self.index)
            .field("freshness", &self.freshness)
            .finish()
    }
}

impl Revocations {
    /// An empty set reading time from `clock`.
    pub fn new(config: RevocationsConfig, clock: Arc<dyn Clock>) -> Self {
        let revoked = Cache::builder()
            .expire_after(UntilNotAfter {
                clock: Arc::clone(&clock),
            })
            .build();
        Self {
            inner: Arc::new(Inner {
                revoked,
                index: TokenIndex::new(config.index_capacity, Arc::clone(&clock)),
                freshness: Freshness::new(config.max_staleness, Arc::clone(&clock)),
                clock,
            }),
            applied: Counter::default(),
        }
    }

    /// Counts applied revocations in `applied` (the service's metric).
    pub fn counting(mut self, applied: Counter) -> Self {
        self.applied = applied;
        self
    }

    /// No feed: tokens are trusted until they expire (benchmarks, auth-services without it).
    pub fn off() -> Self {
        let config = RevocationsConfig {
            max_staleness: Duration::ZERO,
            index_capacity: 1,
        };
        Self::new(config, Arc::new(common::clock::SystemClock))
    }

    /// Whether a verified caller may go on: UNAVAILABLE while the feed is stale (a token may
    /// be of a session ended meanwhile), UNAUTHENTICATED for a revoked session.
    pub fn admit(&self, principal: &Principal) -> Result<(), DataError> {
        if !self.inner.freshness.is_fresh() {
            return Err(DataError::RevocationsStale);
        }
        if self.is_revoked(&principal.session_id) {
            return Err(DataError::Unauthenticated(TokenError::Rejected));
        }
        Ok(())
    }

    /// True while a session's revocation is kept.
    pub fn is_revoked(&self, session_id: &str) -> bool {
        // Every call asks, and nearly every session is not revoked: `contains_key` answers that
        // without counting as a read of the cache (no entry in its read log, no housekeeping
        // on the request path); only a held session is read for its time. The cache forgets
        // on its own schedule; the clock decides (tests move it).
        let revoked = &self.inner.revoked;
        revoked.contains_key(session_id)
            && (revoked.get(session_id)).is_some_and(|not_after| not_after > self.inner.clock.now())
    }

    /// Records a token this replica just verified, so a revocation can find its user.
    pub fn track(&self, principal: &Principal, token: Arc<str>) {
        if self.inner.freshness.is_on() && !self.is_revoked(&principal.session_id) {
            self.inner.index.track(principal, token);
        }
    }

    /// Records that a session of `user_id` (empty when the feed did not say) ended; its tokens
    /// are invalid until `not_after` at the latest. Returns what the session held here, for the
    /// caller to release: always the named user's DynamoDB client, even while other sessions
    /// of theirs live, because the session may have ended in a compromise (LogoutAll,
    /// ChangePassword, a reused refresh token), after which the auth-service vends the user
    /// new credentials and the cached ones may be a thief's too. After a plain Logout the next
    /// call costs one GetCredentials that returns the same credentials. A revocation already
    /// held (the same one from another auth replica's stream, or replayed on a reconnect)
    /// releases nothing again: the client loaded since is the user's current one. (Two copies
    /// applied at the same instant may both release it: one extra load.)
    pub fn revoke(&self, user_id: &str, session_id: &str, not_after: OffsetDateTime) -> Ended {
        self.applied.increment();
        let repeated = self.is_revoked(session_id);
        if not_after > self.inner.clock.now() {
            self.inner.revoked.insert(session_id.to_owned(), not_after);
        }
        let mut ended = self.inner.index.end(session_id);
        if !user_id.is_empty() && !repeated {
            ended.client_of = Some(Arc::from(user_id));
        }
        ended
    }

    /// Until when to keep a revocation whose `not_after` is missing or unusable: as long as
    /// any token can live, from now on the service clock.
    pub fn longest_keep(&self) -> OffsetDateTime {
        self.inner.clock.now() + MAX_KEEP
    }

    /// The feed's freshness.
    pub fn freshness(&self) -> &Freshness {
        &self.inner.freshness
    }

    /// Revocations held, after expired ones are dropped.
    pub fn len(&self) -> u64 {
        self.inner.revoked.run_pending_tasks();
        self.inner.revoked.entry_count()
    }

    /// Sessions and users the index of verified tokens holds.
    pub fn index_len(&self) -> (u64, u64) {
        self.inner.index.len()
    }

    /// True when no revocation is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::clock::ManualClock;

    fn revocations(clock: Arc<ManualClock>) -> Revocations {
        let config = RevocationsConfig {
            max_staleness: Duration::from_secs(30),
            index_capacity: 100,
        };
        Revocations::new(config, clock)
    }

    fn principal(session: &str) -> Principal {
        Principal {
            user_id: "alice".into(),
            session_id: session.into(),
            token_id: "t".into(),
            expires_at: OffsetDateTime::now_utc() + time::Duration::minutes(15),
        }
    }

    #[test]
    fn a_revoked_session_is_refused_like_any_bad_token_and_others_pass() {
        let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
        let set = revocations(clock.clone());
        set.freshness().heard(Duration::ZERO);
        set.revoke("alice", "s1", clock.now() + Duration::from_secs(900));
        let refused = set.admit(&principal("s1"));
        assert!(matches!(
            refused,
            Err(DataError::Unauthenticated(TokenError::Rejected))
        ));
        assert!(set.admit(&principal("s2")).is_ok());
    }

    #[test]
    fn a_stale_feed_refuses_everyone_until_heard_again() {
        let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
        let set = revocations(clock.clone());
        assert!(matches!(
            set.admit(&principal("s1")),
            Err(DataError::RevocationsStale)
        ));
        set.freshness().heard(Duration::ZERO);
        assert!(set.admit(&principal("s1")).is_ok());
        clock.advance(Duration::from_secs(31));
        assert!(matches!(
            set.admit(&principal("s1")),
            Err(DataError::RevocationsStale)
        ));
    }

    #[test]
    fn a_revocation_ends_with_its_last_token() {
        let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
        let set = revocations(clock.clone());
        set.revoke("alice", "s1", clock.now() + Duration::from_secs(60));
        set.revoke("alice", "gone", clock.now() - Duration::from_secs(1));
        assert!(set.is_revoked("s1"));
        assert!(!set.is_revoked("gone"), "its tokens have expired already");
        clock.advance(Duration::from_secs(61));
        assert!(!set.is_revoked("s1"));
    }

    #[test]
    fn ten_thousand_revocations_expire_out_of_the_set() {
        let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
        let set = revocations(clock);
        let not_after = OffsetDateTime::now_utc() + Duration::from_millis(300);
        for i in 0..10_000 {
            set.revoke("alice", &format!("session-{i}"), not_after);
        }
        assert_eq!(set.len(), 10_000);
        // The cache's timer wheel works in steps of about a second: poll, briefly.
        for _ in 0..50 {
            if set.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(set.is_empty(), "{} left", set.len());
    }

    #[test]
    fn a_revocation_naming_its_user_drops_the_users_client_while_other_sessions_live() {
        let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
        let set = revocations(clock.clone());
        set.freshness().heard(Duration::ZERO);
        set.track(&principal("s1"), Arc::from("t1"));
        set.track(&principal("s2"), Arc::from("t2"));
        let not_after = clock.now() + Duration::from_secs(900);

        let named = set.revoke("alice", "s1", not_after);
        let unnamed = set.revoke("", "s2", not_after);
        let unknown = set.revoke("bob", "never-seen", not_after);

        assert_eq!(named.tokens, vec![Arc::<str>::from("t1")]);
        assert_eq!(named.client_of.as_deref(), Some("alice"), "s2 still lives");
        assert_eq!(
            unnamed.client_of.as_deref(),
            Some("alice"),
            "unnamed: the index's answer, s2 was alice's last session here"
        );
        assert_eq!(unknown.client_of.as_deref(), Some("bob"));
        assert!(unknown.tokens.is_empty());
        let repeated = set.revoke("alice", "s1", not_after);
        assert_eq!(repeated, Ended::default(), "a copy releases nothing again");
    }

    #[test]
    fn an_unnamed_revocation_leaves_the_client_of_a_user_with_other_sessions() {
        let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
        let set = revocations(clock.clone());
        set.freshness().heard(Duration::ZERO);
        set.track(&principal("s1"), Arc::from("t1"));
        set.track(&principal("s2"), Arc::from("t2"));

        let ended = set.revoke("", "s1", clock.now() + Duration::from_secs(900));

        assert_eq!(ended.client_of, None);
    }

    #[test]
    fn the_feed_off_trusts_tokens_and_tracks_nothing() {
        let set = Revocations::off();
        assert!(set.admit(&principal("s1")).is_ok());
        set.track(&principal("s1"), Arc::from("token"));
        assert_eq!(set.inner.index.len(), (0, 0));
    }
}
