//! Which sessions are live, and ending them: every way a session ends comes to
//! [`Families::revoke`], which announces the ending on the revocation feed and then marks the
//! session's item. Public ending methods run detached from their caller (`common::detached`)
//! from their first read on, so a caller that goes away cannot leave an ending half-done. And
//! the revocation log is the truth: a session in it is not live, whatever its item says
//! ([`Families::is_live`]).

use std::time::Duration;

use common::detached;
use futures::{StreamExt, TryStreamExt};
use time::OffsetDateTime;

use super::Families;
use crate::{
    error::AuthError,
    revocations::Repair,
    sessions::{ListedSession, LiveSession, RevokeReason, Session},
};

/// Revocations sent at once by LogoutAll and the session cap.
const REVOKE_CONCURRENCY: usize = 8;
/// Live sessions listed beyond the cap: logins racing the cap's enforcement (or a cap not
/// applied because DynamoDB failed) may leave a few more for a moment.
const LIST_MARGIN: usize = 10;
/// The least time a revoked session's item is kept, so it can still be reported (and, later,
/// fanned out as a revocation) while its access tokens live.
const REVOKED_RETENTION: Duration = Duration::from_secs(86_400);

impl Families {
    /// True if `session` (`session_id` of `user_id`, as read from the table) may be used: active
    /// there and absent from the revocation log. One found live in the table but in the log
    /// has ended all the same (its mark never landed): it is refused and its repair queued.
    pub fn is_live(&self, user_id: &str, session_id: &str, session: &Session) -> bool {
        session.is_active(self.now()) && !self.ended_in_log(user_id, session_id)
    }

    /// True if the log says `session_id`, unmarked in the table, has ended; queues its repair.
    pub(super) fn ended_in_log(&self, user_id: &str, session_id: &str) -> bool {
        let ended = self.revocations.is_revoked(session_id);
        if ended {
            // A mark still in flight, or one that never landed (its replica died).
            tracing::info!(%user_id, %session_id, "session ended in the revocation log, not yet in the table: refused, repair queued");
            self.revocations.repairs().schedule_now(user_id, session_id);
        }
        ended
    }

    /// Ends the oldest live sessions beyond the cap (by creation time, then session id). Every
    /// login lists after creating its own session, and all order alike, so concurrent logins
    /// converge on the newest `max_per_user`.
    pub(super) async fn enforce_cap(
        &self,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<(), AuthError> {
        let mut live = self.live_sessions(user_id, now).await?;
        if live.len() <= self.policy.max_per_user {
            return Ok(());
        }
        live.sort_unstable_by(|a, b| b.cmp(a));
        let beyond: Vec<String> = live
            .split_off(self.policy.max_per_user)
            .into_iter()
            .map(|session| session.session_id)
            .collect();
        let ended = self
            .revoke_all(user_id, beyond, RevokeReason::SessionLimit, now)
            .await?;
        tracing::info!(%user_id, sessions_ended = ended, "session cap reached: oldest ended");
        Ok(())
    }

    /// The user's sessions live in the table (neither marked ended nor expired at `now`) and
    /// absent from the revocation log, in no order.
    async fn live_sessions(
        &self,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<LiveSession>, AuthError> {
        let mut live = self.store.live_sessions(user_id, now).await?;
        live.retain(|session| !self.ended_in_log(user_id, &session.session_id));
        Ok(live)
    }

    /// Ends every live session of `user_id`; returns how many this call ended. Detached.
    pub async fn end_all(&self, user_id: &str) -> Result<usize, AuthError> {
        let (families, user_id) = (self.clone(), user_id.to_owned());
        detached::run(async move {
            let now = families.now();
            let live = families.live_sessions(&user_id, now).await?;
            let ids = live.into_iter().map(|session| session.session_id).collect();
            families
                .revoke_all(&user_id, ids, RevokeReason::LogoutAll, now)
                .await
        })
        .await
    }

    /// Ends every live session of `user_id` but `keep` (a password change ends the others,
    /// not the caller's); returns how many this call ended. Detached.
    pub async fn end_others(&self, user_id: &str, keep: &str) -> Result<usize, AuthError> {
        let (families, user_id, keep) = (self.clone(), user_id.to_owned(), keep.to_owned());
        detached::run(async move {
            let now = families.now();
            let live = families.live_sessions(&user_id, now).await?;
            let ids = live
                .into_iter()
                .map(|session| session.session_id)
                .filter(|session_id| *session_id != keep)
                .collect();
            families
                .revoke_all(&user_id, ids, RevokeReason::PasswordChanged, now)
                .await
        })
        .await
    }

    /// The user's live sessions, newest first: at most the cap and a small margin. Sessions
    /// the revocation log has ended are left out, marked or not.
    pub async fn list(&self, user_id: &str) -> Result<Vec<ListedSession>, AuthError> {
        let limit = self.policy.max_per_user.saturating_add(LIST_MARGIN);
        let mut listed = self.store.list_live(user_id, self.now(), limit).await?;
        listed.retain(|session| !self.ended_in_log(user_id, &session.session_id));
        Ok(listed)
    }

    /// Ends one session of `user_id` for `reason`; false if it had already ended. The caller
    /// must know the session is `user_id`'s: its revocation is announced by session id alone,
    /// before the session item is looked at. Detached.
    pub async fn end(
        &self,
        user_id: &str,
        session_id: &str,
        reason: RevokeReason,
    ) -> Result<bool, AuthError> {
        let (families, user_id, session_id) =
            (self.clone(), user_id.to_owned(), session_id.to_owned());
        detached::run(async move {
            let now = families.now();
            families.revoke(&user_id, &session_id, reason, now).await
        })
        .await
    }

    async fn revoke_all(
        &self,
        user_id: &str,
        session_ids: Vec<String>,
        reason: RevokeReason,
        now: OffsetDateTime,
    ) -> Result<usize, AuthError> {
        let revoked: Vec<bool> = futures::stream::iter(session_ids)
            .map(|session_id| async move { self.revoke(user_id, &session_id, reason, now).await })
            .buffer_unordered(REVOKE_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(revoked.into_iter().filter(|&r| r).count())
    }

    /// Every way a session ends comes here, inside a detached flow. The revocation is
    /// announced first, and from then on the session has ended: every reader checks the log.
    /// Marking the item is the table catching up; if it fails, the replica's repairer marks it
    /// (and only if the repair queue is full does the caller get the error, to retry).
    pub(super) async fn revoke(
        &self,
        user_id: &str,
        session_id: &str,
        reason: RevokeReason,
        now: OffsetDateTime,
    ) -> Result<bool, AuthError> {
        let revocation = self
            .revocations
            .announce(user_id, session_id, reason)
            .await?;
        #[cfg(all(feature = "failpoints", debug_assertions))]
        crate::failpoints::after_announce().await;
        let marked = self
            .store
            .revoke(
                user_id,
                session_id,
                Some(reason),
                now,
                self.delete_after(now),
            )
            .await;
        match marked {
            Ok(ended) => Ok(ended),
            Err(error) => {
                let repair = Repair {
                    user_id: user_id.to_owned(),
                    session_id: session_id.to_owned(),
                    reason: Some(reason),
                };
                if !self
                    .revocations
                    .repairs()
                    .schedule(repair, revocation.revoked_at_ms)
                {
                    return Err(error);
                }
                tracing::warn!(%user_id, %session_id, %error, "ended session not marked: repair queued");
                Ok(true)
            }
        }
    }

    /// When DynamoDB TTL may delete the item of a session ended at `now` (Unix seconds).
    pub(super) fn delete_after(&self, now: OffsetDateTime) -> i64 {
        let retention = REVOKED_RETENTION.max(self.policy.access_lifetime);
        (now + retention).unix_timestamp()
    }
}
