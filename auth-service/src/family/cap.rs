//! The per-user session cap: a login beyond `max_per_user` live sessions ends the oldest
//! ones. Finding out takes a Query of the user's sessions; most logins skip it, because the
//! user item bounds the number of live sessions.
//!
//! The bound. Every login writes its session, then counts itself on the user item (`logins`,
//! one atomic ADD, `users/logins.rs`), and the write answers with the item. A login that runs
//! the Query (after its own count, numbered M) records `cap_live` = L, the live sessions it
//! left, and `cap_logins` = M. Then, for the login counted as N (any later one):
//! - every session whose login was counted up to M was written before that count, so before
//!   the Query, which saw it; of those, at most L are live (sessions never come back to life);
//! - every other session whose login was counted up to N is one of the N − M counted since.
//!
//! So at most L + (N − M) sessions counted up to N are live, and when that is within the cap
//! the login skips the Query. Ending sessions in other ways (Logout, expiry, the cap of
//! another login) only lowers the true number, and a record of any past Query stays a bound:
//! the write keeps the latest one (`cap_logins` only grows). Without a record (a user
//! registered before the count, or one that does not read) the login runs the Query. A
//! record is written only when it leaves room (L below the cap): at the cap, the next login
//! must look anyway.
//!
//! Racing logins converge under the cap. The cap ends only sessions with at least
//! `max_per_user` newer live ones beside them in its listing, so it never ends one of the
//! newest `max_per_user`. And the login counted last of a burst (number N, after every other
//! login of the burst counted itself) either has a bound within the cap — every session of
//! the burst counted up to N, so at most the cap are live — or runs the Query after all of
//! them were written, sees them all and ends all but the newest.
//!
//! What the bound does not count: a session whose login never counted itself, because the
//! write failed (DynamoDB unavailable: the login fails) or the replica died between the two
//! writes. Its tokens never left the service, so no client can use it; it is counted by the
//! next Query that runs, and otherwise expires unused with its refresh lifetime.

use time::OffsetDateTime;

use super::Families;
use crate::{
    error::AuthError,
    sessions::RevokeReason,
    users::{Confirmed, LoginCheck},
};

impl Families {
    /// Applies the cap after the login `confirmed` by `check`: nothing when the user item
    /// bounds the live sessions within it; else the Query, the revocations, and the record.
    pub(super) async fn apply_cap(
        &self,
        check: &LoginCheck,
        confirmed: &Confirmed,
        now: OffsetDateTime,
    ) -> Result<(), AuthError> {
        let max = u64::try_from(self.policy.max_per_user).unwrap_or(u64::MAX);
        if confirmed.live_bound().is_some_and(|bound| bound <= max) {
            return Ok(());
        }
        let live = self.enforce_cap(check.user_id(), now).await?;
        if live < max {
            check.record_cap(live, confirmed.logins).await?;
        }
        Ok(())
    }

    /// Ends the oldest live sessions beyond the cap (by creation time, then session id), and
    /// returns how many live sessions it left. Every login lists after creating its own
    /// session, and all order alike, so concurrent logins converge on the newest
    /// `max_per_user`.
    pub(super) async fn enforce_cap(
        &self,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<u64, AuthError> {
        let mut live = self.live_sessions(user_id, now).await?;
        let kept = live.len().min(self.policy.max_per_user);
        if live.len() > self.policy.max_per_user {
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
        }
        Ok(u64::try_from(kept).unwrap_or(u64::MAX))
    }
}
