//! The index of the tokens this replica verified: which user each session belongs to, and
//! which of its tokens were verified here, learned from those tokens (not the auth-service's
//! sessions table, which the data-service never reads). A revocation names a session (and,
//! from current auth-services, its user), yet ending it should evict its tokens and, when the
//! revocation does not name the user and the user has no other session this replica knows
//! of, the user's cached DynamoDB client. Bounded every way (sessions, users, sessions per
//! user, tokens per session) and forgotten when the tokens expire. Best effort: it never
//! decides who is refused (the revoked set does); a miss costs at most a credential reload or
//! a cache slot held until expiry.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use common::{
    clock::{Clock, unix_millis},
    tokens::Principal,
};
use moka::{Expiry, sync::Cache};

/// Sessions remembered per user: the auth-service allows 50 live ones by default. Beyond it
/// the soonest to expire is forgotten.
pub const MAX_SESSIONS_PER_USER: usize = 64;

/// Tokens remembered per session for eviction; older ones stay in the token cache until they
/// expire (refused all the same, by the revoked set).
pub const MAX_TOKENS_PER_SESSION: usize = 4;

/// What ending a session released.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ended {
    /// The session's tokens this replica verified (to evict from the token cache).
    pub tokens: Vec<Arc<str>>,
    /// The user whose cached DynamoDB client to drop. The index names the user when no other
    /// session of theirs is known here; [`super::Revocations::revoke`] names the user of every
    /// revocation that says whose it is.
    pub client_of: Option<Arc<str>>,
}

#[derive(Clone, Debug)]
struct Owner {
    user: Arc<str>,
    expires_at_ms: i64,
}

#[derive(Debug, Default)]
struct Known {
    expires_at_ms: i64,
    tokens: Vec<Arc<str>>,
}

#[derive(Debug, Default)]
struct UserSessions {
    sessions: HashMap<String, Known>,
    /// Removed from the index: a tracker holding it must start a new one.
    closed: bool,
}

#[derive(Debug, Default)]
struct UserEntry {
    /// Expiry of the user's latest-expiring session, Unix milliseconds.
    latest_ms: AtomicI64,
    sessions: Mutex<UserSessions>,
}

/// Forgets an entry when its latest token expires (on the service clock).
struct UntilLatest {
    clock: Arc<dyn Clock>,
}

impl UntilLatest {
    fn until(&self, expires_at_ms: i64) -> Duration {
        let left = expires_at_ms.saturating_sub(unix_millis(self.clock.now()));
        Duration::from_millis(u64::try_from(left).unwrap_or(0))
    }
}

impl Expiry<String, Owner> for UntilLatest {
    fn expire_after_create(&self, _: &String, owner: &Owner, _: Instant) -> Option<Duration> {
        Some(self.until(owner.expires_at_ms))
    }
    fn expire_after_update(
        &self,
        _: &String,
        owner: &Owner,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.until(owner.expires_at_ms))
    }
}

impl Expiry<Arc<str>, Arc<UserEntry>> for UntilLatest {
    fn expire_after_create(
        &self,
        _: &Arc<str>,
        user: &Arc<UserEntry>,
        _: Instant,
    ) -> Option<Duration> {
        Some(self.until(user.latest_ms.load(Ordering::Acquire)))
    }
    fn expire_after_update(
        &self,
        _: &Arc<str>,
        user: &Arc<UserEntry>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.until(user.latest_ms.load(Ordering::Acquire)))
    }
}

/// The session → user index of verified tokens, and each user's known sessions.
pub struct TokenIndex {
    owners: Cache<String, Owner>,
    users: Cache<Arc<str>, Arc<UserEntry>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for TokenIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIndex")
            .field("sessions", &self.owners.entry_count())
            .field("users", &self.users.entry_count())
            .finish()
    }
}

impl TokenIndex {
    /// At most `capacity` sessions and `capacity` users, expiring on `clock`.
    pub fn new(capacity: u64, clock: Arc<dyn Clock>) -> Self {
        let until_latest = || UntilLatest {
            clock: Arc::clone(&clock),
        };
        Self {
            owners: Cache::builder()
                .max_capacity(capacity)
                .expire_after(until_latest())
                .build(),
            users: Cache::builder()
                .max_capacity(capacity)
                .expire_after(until_latest())
                .build(),
            clock,
        }
    }

    /// Remembers a token just verified for `principal` (the slow path: once per token).
    pub fn track(&self, principal: &Principal, token: Arc<str>) {
        let expires_at_ms = unix_millis(principal.expires_at);
        let user: Arc<str> = Arc::from(principal.user_id.as_str());
        let sid = &principal.session_id;
        let known_until = self.owners.get(sid).map_or(i64::MIN, |o| o.expires_at_ms);
        let owner = Owner {
            user: Arc::clone(&user),
            expires_at_ms: expires_at_ms.max(known_until),
        };
        self.owners.insert(sid.clone(), owner);
        loop {
            let entry = self.users.get_with(Arc::clone(&user), Arc::default);
            let mut sessions = entry
                .sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if sessions.closed {
                continue;
            }
            let now = unix_millis(self.clock.now());
            sessions
                .sessions
                .retain(|_, known| known.expires_at_ms > now);
            let known = sessions.sessions.entry(sid.clone()).or_default();
            known.expires_at_ms = known.expires_at_ms.max(expires_at_ms);
            if known.tokens.len() == MAX_TOKENS_PER_SESSION {
                known.tokens.remove(0);
            }
            known.tokens.push(token);
            if sessions.sessions.len() > MAX_SESSIONS_PER_USER {
                forget_soonest_but(&mut sessions.sessions, sid);
            }
            let before = entry.latest_ms.fetch_max(expires_at_ms, Ordering::AcqRel);
            drop(sessions);
            if before < expires_at_ms {
                // Re-inserting makes the cache read the later expiry.
                self.users.insert(user, entry);
            }
            return;
        }
    }

    /// Ends a session: what it released.
    pub fn end(&self, session_id: &str) -> Ended {
        let Some(owner) = self.owners.remove(session_id) else {
            return Ended::default();
        };
        let Some(entry) = self.users.get(&owner.user) else {
            // The user's entry was evicted: no session of theirs is known here.
            return Ended {
                tokens: Vec::new(),
                client_of: Some(owner.user),
            };
        };
        let mut sessions = entry
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let known = sessions.sessions.remove(session_id).unwrap_or_default();
        let now = unix_millis(self.clock.now());
        sessions
            .sessions
            .retain(|_, known| known.expires_at_ms > now);
        let last = sessions.sessions.is_empty();
        if last {
            sessions.closed = true;
            self.users.invalidate(&owner.user);
        }
        Ended {
            tokens: known.tokens,
            client_of: last.then_some(owner.user),
        }
    }

    /// Sessions and users held (approximate, as moka counts).
    pub fn len(&self) -> (u64, u64) {
        self.owners.run_pending_tasks();
        self.users.run_pending_tasks();
        (self.owners.entry_count(), self.users.entry_count())
    }
}

fn forget_soonest_but(sessions: &mut HashMap<String, Known>, keep: &str) {
    let soonest = sessions
        .iter()
        .filter(|(sid, _)| sid.as_str() != keep)
        .min_by_key(|(_, known)| known.expires_at_ms)
        .map(|(sid, _)| sid.clone());
    if let Some(sid) = soonest {
        sessions.remove(&sid);
    }
}

#[cfg(test)]
mod tests {
    use common::clock::{ManualClock, SystemClock};
    use time::OffsetDateTime;

    use super::*;

    fn principal(user: &str, session: &str) -> Principal {
        Principal {
            user_id: user.into(),
            session_id: session.into(),
            token_id: "t".into(),
            expires_at: OffsetDateTime::now_utc() + time::Duration::minutes(15),
        }
    }

    fn token(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    #[test]
    fn ending_the_last_known_session_releases_the_user_and_its_tokens() {
        let index = TokenIndex::new(100, Arc::new(SystemClock));
        index.track(&principal("alice", "s1"), token("a1"));
        index.track(&principal("alice", "s1"), token("a2"));
        index.track(&principal("alice", "s2"), token("b1"));
        let first = index.end("s1");
        assert_eq!(first.tokens, vec![token("a1"), token("a2")]);
        assert_eq!(first.client_of, None, "s2 is still live");
        let second = index.end("s2");
        assert_eq!(second.tokens, vec![token("b1")]);
        assert_eq!(second.client_of.as_deref(), Some("alice"));
        assert_eq!(index.end("s2"), Ended::default(), "a duplicate is harmless");
        assert_eq!(index.end("unknown"), Ended::default());
    }

    #[test]
    fn a_session_tracked_again_after_its_user_was_released_starts_over() {
        let index = TokenIndex::new(100, Arc::new(SystemClock));
        index.track(&principal("bob", "s1"), token("x"));
        index.end("s1");
        index.track(&principal("bob", "s2"), token("y"));
        let ended = index.end("s2");
        assert_eq!(ended.tokens, vec![token("y")]);
        assert_eq!(ended.client_of.as_deref(), Some("bob"));
    }

    #[test]
    fn sessions_expired_on_the_service_clock_do_not_count_as_live() {
        let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
        let index = TokenIndex::new(100, clock.clone());
        let mut old = principal("carol", "old");
        old.expires_at = clock.now() + time::Duration::minutes(1);
        index.track(&old, token("o"));
        index.track(&principal("carol", "new"), token("n"));

        clock.advance(std::time::Duration::from_secs(61));
        let ended = index.end("new");

        assert_eq!(ended.client_of.as_deref(), Some("carol"), "old has expired");
    }

    #[test]
    fn the_index_is_bounded_every_way() {
        let index = TokenIndex::new(100, Arc::new(SystemClock));
        for i in 0..10_000 {
            index.track(&principal(&format!("u{i}"), &format!("s{i}")), token("t"));
        }
        let (sessions, users) = index.len();
        assert!(
            sessions <= 100 && users <= 100,
            "{sessions} sessions, {users} users"
        );

        let index = TokenIndex::new(10_000, Arc::new(SystemClock));
        for i in 0..1000 {
            for t in 0..10 {
                index.track(
                    &principal("dave", &format!("s{i}")),
                    token(&format!("t{t}")),
                );
            }
        }
        let entry = index.users.get("dave").expect("dave is known");
        let sessions = entry.sessions.lock().unwrap();
        assert_eq!(sessions.sessions.len(), MAX_SESSIONS_PER_USER);
        assert!(
            sessions
                .sessions
                .values()
                .all(|known| known.tokens.len() == MAX_TOKENS_PER_SESSION)
        );
    }
}
