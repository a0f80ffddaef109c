//! Brute-force lockout per username, kept in DynamoDB so it holds across replicas. Every
//! attempt (login, or the old password of a password change) reserves its place by counting
//! itself *before* any password work, with a write conditional on the state it read (or, for
//! an attempt that cannot start a lock, on bounds that make reading unnecessary); only a
//! complete success resets the count. So however many attempts race, at most `threshold`
//! passwords are checked before the name locks, and while it is locked none is.
//!
//! Attempts are counted by the folded username as typed, whether or not such a user exists,
//! so a lock (its status, its RetryInfo) says nothing about which accounts exist; for the same
//! reason its audit line carries the name's keyed hash, never the name. The price of
//! counting before checking: more than `threshold` concurrent logins of one username, even
//! with the right password, are refused for a moment (RESOURCE_EXHAUSTED with RetryInfo).

use std::{sync::Arc, time::Duration};

use common::{
    clock::{Clock, unix_millis},
    metrics::Counter,
};
use uuid::Uuid;

use crate::{
    audit::{AuditKey, Event, Outcome, Record},
    end_user::ClientInfo,
    error::AuthError,
    metrics::Metrics,
};

mod rules;
mod settings;
mod table;

pub use rules::{Clear, Decision, Rules, State};
pub use settings::LockoutSettings;
pub use table::{AttemptsTable, Quick, key_of};

/// Writes one attempt tries when other attempts for the same name keep writing first. Each
/// lost race means another attempt was counted, so the name locks long before this runs out.
const MAX_RACES: usize = 16;

/// Counts attempts per username and refuses them while locked.
#[derive(Clone, Debug, Default)]
pub struct Lockout {
    /// `None`: the lockout is off.
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    table: AttemptsTable,
    rules: Rules,
    clock: Arc<dyn Clock>,
    /// Attempts refused unchecked because their username was locked.
    refused: Counter,
    /// Locks started by a failed attempt.
    locks: Counter,
    /// Hashes the names in lock lines.
    audit_key: AuditKey,
}

impl Lockout {
    /// A lockout that never refuses.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// A lockout keeping its counts in `table` under `rules`, reading time from `clock`,
    /// counting its refusals and locks in `metrics`, naming locked names in the audit log by
    /// their hash under `audit_key`.
    pub fn new(
        table: AttemptsTable,
        rules: Rules,
        clock: Arc<dyn Clock>,
        metrics: &Metrics,
        audit_key: AuditKey,
    ) -> Self {
        Self {
            inner: Some(Arc::new(Inner {
                table,
                rules,
                clock,
                refused: metrics.lockout_refusals.clone(),
                locks: metrics.lockouts.clone(),
                audit_key,
            })),
        }
    }

    /// The attempts table, when the lockout is on (for the health probe).
    pub fn table_name(&self) -> Option<&str> {
        self.inner.as_ref().map(|inner| inner.table.name())
    }

    /// Forgets every attempt counted for `username` (folded): an erased account leaves no
    /// row behind. Nothing to do when the lockout is off.
    pub async fn forget(&self, username: &str) -> Result<(), AuthError> {
        match &self.inner {
            Some(inner) => inner.table.delete(&key_of(username)).await,
            None => Ok(()),
        }
    }

    /// What counts against `username` (folded) now: `None` when nothing does (never tried,
    /// reset by a success, lapsed after the quiet period, or the lockout is off). UnlockUser
    /// clears it with [`Lockout::forget`].
    pub async fn standing(&self, username: &str) -> Result<Option<State>, AuthError> {
        let Some(inner) = &self.inner else {
            return Ok(None);
        };
        let stored = inner.table.get(&key_of(username)).await?;
        let now_ms = unix_millis(inner.clock.now());
        let quiet_ms = common::clock::duration_millis(inner.rules.quiet);
        let counting = |state: &State| now_ms < state.quiet_from_ms().saturating_add(quiet_ms);
        Ok(stored.map(|stored| stored.state).filter(counting))
    }

    /// Counts an attempt for `username` (folded, as the client typed it, whether or not such a
    /// user exists) by `client`, before its password is checked; `AuthError::Locked` while
    /// locked. The attempt stays counted as a failure unless [`Attempt::succeeded`] is called.
    /// One write when the attempt can start no lock; otherwise a read and a conditional write,
    /// again after each lost race.
    pub async fn begin(&self, username: &str, client: &ClientInfo) -> Result<Attempt, AuthError> {
        let Some(inner) = &self.inner else {
            return Ok(Attempt { counted: None });
        };
        let key = key_of(username);
        let mut returned = match inner.count_clear(&key).await? {
            Quick::Counted => return Ok(inner.attempt(key, None, username, client)),
            Quick::Declined(returned) => returned,
        };
        for _ in 0..MAX_RACES {
            let stored = match returned.take() {
                Some(stored) => Some(stored),
                None => inner.table.get(&key).await?,
            };
            let now = unix_millis(inner.clock.now());
            let state = match inner.rules.decide(stored.as_ref().map(|s| &s.state), now) {
                Decision::Refuse(retry_after) => {
                    inner.refused.increment();
                    return Err(AuthError::Locked { retry_after });
                }
                Decision::Count(state) => state,
            };
            let rev = Uuid::new_v4().to_string();
            let ttl = inner.rules.expires_at_secs(&state);
            let read = stored.as_ref().map(|s| s.rev.as_str());
            if inner.table.put(&key, &state, &rev, ttl, read).await? {
                let locks = state.locked_until_ms.map(|until| {
                    Duration::from_millis(u64::try_from(until - now).unwrap_or_default())
                });
                return Ok(inner.attempt(key, locks, username, client));
            }
        }
        tracing::info!("attempts for one username kept racing: refused as locked");
        inner.refused.increment();
        Err(AuthError::Locked {
            retry_after: inner.rules.first_lock,
        })
    }
}

impl Inner {
    /// Counts an attempt under `key` in one write if it cannot start a lock ([`Rules::clear`]).
    async fn count_clear(&self, key: &str) -> Result<Quick, AuthError> {
        let now = unix_millis(self.clock.now());
        let Some(clear) = self.rules.clear(now) else {
            return Ok(Quick::Declined(None));
        };
        // The state it writes, but for the count, which the write adds to the stored one.
        let counted = State {
            count: 1,
            last_at_ms: now,
            locked_until_ms: None,
        };
        let ttl = self.rules.expires_at_secs(&counted);
        let rev = Uuid::new_v4().to_string();
        self.table.count_clear(key, now, clear, &rev, ttl).await
    }

    /// The attempt counted under `key` for `username` by `client`, which started `locks`.
    fn attempt(
        self: &Arc<Self>,
        key: String,
        locks: Option<Duration>,
        username: &str,
        client: &ClientInfo,
    ) -> Attempt {
        Attempt {
            counted: Some(Counted {
                lockout: Arc::clone(self),
                key,
                locks,
                username_hash: self.audit_key.username_hash(username),
                client: client.clone(),
            }),
        }
    }
}

/// One counted attempt: a failure unless it [`succeeded`](Attempt::succeeded). Dropped
/// without success (a wrong password or code, an error, a cancelled call), it stays counted.
#[derive(Debug)]
pub struct Attempt {
    counted: Option<Counted>,
}

#[derive(Debug)]
struct Counted {
    lockout: Arc<Inner>,
    key: String,
    /// The lock this attempt's count started, if it reached the threshold.
    locks: Option<Duration>,
    username_hash: String,
    client: ClientInfo,
}

impl Attempt {
    /// The attempt passed every check (password and second factor): forget the failures. If
    /// that write fails the count stays, which errs on the safe side; it is logged.
    pub async fn succeeded(mut self) {
        let Some(counted) = self.counted.take() else {
            return;
        };
        if let Err(error) = counted.lockout.table.delete(&counted.key).await {
            tracing::warn!(%error, "a success could not reset its username's failed attempts");
        }
    }
}

impl Drop for Attempt {
    /// A failed attempt that started a lock is audited once, whatever ended it.
    fn drop(&mut self) {
        if let Some(counted) = &self.counted
            && let Some(lock) = counted.locks
        {
            tracing::info!(?lock, "username locked after failed attempts");
            counted.lockout.locks.increment();
            Record::new(Event::Locked, Outcome::Refused, &counted.client)
                .username_hash(&counted.username_hash)
                .log();
        }
    }
}
