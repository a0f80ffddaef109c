//! Refresh: a presented token's standing in its session decides — the current one rotates,
//! the previous one within the grace gets the same successor again, proven reuse ends the
//! session, and an unknown secret is refused (see the module docs of `family`).

use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use common::{clock::unix_millis, detached};

use super::{Families, Issued, REFRESH_ATTEMPTS, Standing, ids, standing, unknown};
use crate::{
    audit::{Event, Outcome, Record},
    end_user::ClientInfo,
    error::AuthError,
    refresh_token::{RefreshToken, RotationNonce, SecretHash},
    sessions::{RevokeReason, Rotated, Rotation, Session},
    users::EpochOwner,
};

/// One rotation attempt's outcome.
enum Attempt {
    /// Written: the successor.
    Rotated(Issued),
    /// Refused; the session as the refusal found it, when the backend said.
    Refused(Option<Session>),
}

impl Families {
    /// Trades a refresh token for the session's next one (see the module docs for the policy).
    /// Proven reuse is audited as `client`'s. Detached: reuse ends the session.
    pub async fn refresh(
        &self,
        presented: RefreshToken,
        client: &ClientInfo,
    ) -> Result<Issued, AuthError> {
        let (families, client) = (self.clone(), client.clone());
        detached::run(async move { families.refresh_here(&presented, &client).await }).await
    }

    async fn refresh_here(
        &self,
        presented: &RefreshToken,
        client: &ClientInfo,
    ) -> Result<Issued, AuthError> {
        let (user_id, session_id) = ids(presented);
        // The revocation log is the truth (see `is_live`): an ended session is not written to.
        if self.ended_in_log(&user_id, &session_id) {
            return Err(AuthError::InvalidRefreshToken);
        }
        let presented_hash = presented.secret_hash();
        // The token says where the session stands if it is current: rotate from there at once.
        let mut from = presented.generation();
        for attempt in 0..REFRESH_ATTEMPTS {
            let now = self.now();
            let session = match self.rotate(presented, presented_hash, from, now).await? {
                Attempt::Rotated(issued) => return Ok(issued),
                Attempt::Refused(found) => self.refused_session(presented, found).await?,
            };
            match standing(&session, &presented_hash, now, self.policy.retry_grace) {
                // Still current, so the generation was wrong: a token of an earlier release
                // (see `refresh_token`). Rotate from the one stored.
                Standing::Current => {
                    tracing::debug!(%user_id, %session_id, "token generation stale: rotating from the stored one");
                    from = session.generation;
                }
                // Another refresh with this token won (or the response to ours was lost): the
                // winner's successor again.
                Standing::RetryOfPrevious => return self.successor_again(presented, &session),
                // Our token was current when this call began and fell behind while it raced:
                // a slow request, not evidence of theft.
                Standing::Reused if attempt > 0 => {
                    tracing::info!(%user_id, %session_id, "refresh overtaken by later rotations");
                    return Err(AuthError::InvalidRefreshToken);
                }
                Standing::Reused => {
                    return Err(self.reused(&session, presented, now, client).await);
                }
                Standing::Unknown => return Err(unknown(&user_id, &session_id)),
            }
        }
        Err(AuthError::Unavailable(format!(
            "refresh of session {session_id} kept losing races"
        )))
    }

    /// The session as a refused rotation `found` it, or as read where the backend returned
    /// nothing with the refusal; only if it is live (see [`Self::is_live`]).
    async fn refused_session(
        &self,
        presented: &RefreshToken,
        found: Option<Session>,
    ) -> Result<Session, AuthError> {
        let (user_id, session_id) = ids(presented);
        let session = match found {
            Some(session) => Some(session),
            None => self.store.get(&user_id, &session_id).await?,
        };
        session
            .filter(|session| self.is_live(&user_id, &session_id, session))
            .ok_or(AuthError::InvalidRefreshToken)
    }

    /// Rotates the session from `presented` (hash `from_hash`), taken to be current at
    /// generation `from`, to its successor in one conditional write.
    async fn rotate(
        &self,
        presented: &RefreshToken,
        from_hash: SecretHash,
        from: u64,
        now: OffsetDateTime,
    ) -> Result<Attempt, AuthError> {
        let nonce = RotationNonce::random();
        let next_generation = from
            .checked_add(1)
            .ok_or_else(|| anyhow::anyhow!("session generation {from} cannot grow"))?;
        let next = presented.successor(&nonce, next_generation)?;
        let expires_at = self.expiry(now)?;
        let rotation = Rotation {
            from_hash,
            from_generation: from,
            to_hash: next.secret_hash(),
            nonce,
            at_ms: unix_millis(now),
            expires_at: expires_at.unix_timestamp(),
        };
        let (user_id, session_id) = ids(presented);
        Ok(
            match self.store.rotate(&user_id, &session_id, &rotation).await? {
                Rotated::Done => Attempt::Rotated(Issued {
                    token: next,
                    expires_at,
                }),
                Rotated::Refused(found) => Attempt::Refused(found),
            },
        )
    }

    /// The successor the last rotation made from `presented`, derived again.
    fn successor_again(
        &self,
        presented: &RefreshToken,
        session: &Session,
    ) -> Result<Issued, AuthError> {
        let nonce = session
            .nonce
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("rotated session has no nonce"))?;
        let derives =
            |token: &RefreshToken| bool::from(token.secret_hash().ct_eq(&session.token_hash));
        let mut successor = presented.successor(nonce, session.generation)?;
        if !derives(&successor) {
            // A rotation written by an earlier release, within the grace of an upgrade.
            successor = presented.earlier_successor(nonce, session.generation)?;
        }
        if !derives(&successor) {
            return Err(anyhow::anyhow!("session nonce does not derive its current token").into());
        }
        let expires_at = OffsetDateTime::from_unix_timestamp(session.expires_at)
            .map_err(|e| anyhow::anyhow!("session expires_at out of range: {e}"))?;
        let (user_id, session_id) = ids(presented);
        tracing::info!(%user_id, %session_id, "previous refresh token within the grace: same successor again");
        Ok(Issued {
            token: successor,
            expires_at,
        })
    }

    /// Ends a session on proven reuse; the caller is refused either way.
    pub(super) async fn reused(
        &self,
        session: &Session,
        presented: &RefreshToken,
        now: OffsetDateTime,
        client: &ClientInfo,
    ) -> AuthError {
        let (user_id, session_id) = ids(presented);
        // A reused token leaked: so may the user's credentials have. New ones from now.
        let owner = EpochOwner {
            username: session.username.as_deref(),
            user_id: &user_id,
        };
        let ending = self.revoke(&user_id, &session_id, RevokeReason::ReuseDetected, now);
        let revoked = self.epochs.around(owner, ending).await;
        let mut record = Record::new(Event::RefreshReuse, Outcome::Failed, client)
            .user(&user_id)
            .session(&session_id);
        if let Some(username) = &session.username {
            record = record.username(username);
        }
        record.log();
        match revoked {
            Ok(_) => {
                tracing::warn!(%user_id, %session_id, "refresh token reuse detected: session revoked");
                AuthError::InvalidRefreshToken
            }
            Err(error) => error,
        }
    }
}
