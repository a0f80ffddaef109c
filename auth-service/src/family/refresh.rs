//! Refresh: a presented token's standing in its session decides — the current one rotates,
//! the previous one within the grace gets the same successor again, proven reuse ends the
//! session, and an unknown secret is refused (see the module docs of `family`).

use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use common::detached;

use super::{Families, Issued, REFRESH_ATTEMPTS, Standing, ids, standing, unknown};
use crate::{
    audit::{Event, Outcome, Record},
    end_user::ClientInfo,
    error::AuthError,
    refresh_token::{RefreshToken, RotationNonce},
    sessions::{RevokeReason, Session},
    users::EpochOwner,
};

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
        let presented_hash = presented.secret_hash();
        for attempt in 0..REFRESH_ATTEMPTS {
            let session = self.active_session(presented).await?;
            let now = self.now();
            match standing(&session, &presented_hash, now, self.policy.retry_grace) {
                Standing::Current => {
                    if let Some(issued) = self.rotate(presented, &session, now).await? {
                        return Ok(issued);
                    }
                    // Another refresh with this token won; the next read finds it as the
                    // previous token and derives the winner's successor.
                    tracing::debug!(%user_id, %session_id, "concurrent refresh lost the race");
                }
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

    /// The session a token names, if it is live (see [`Self::is_live`]).
    async fn active_session(&self, token: &RefreshToken) -> Result<Session, AuthError> {
        let (user_id, session_id) = ids(token);
        match self.store.get(&user_id, &session_id).await? {
            Some(session) if self.is_live(&user_id, &session_id, &session) => Ok(session),
            _ => Err(AuthError::InvalidRefreshToken),
        }
    }

    /// Rotates `session` from `presented` to its successor; `None` if another write won.
    async fn rotate(
        &self,
        presented: &RefreshToken,
        session: &Session,
        now: OffsetDateTime,
    ) -> Result<Option<Issued>, AuthError> {
        let nonce = RotationNonce::random();
        let next = presented.successor(&nonce, session.generation + 1)?;
        let expires_at = self.expiry(now)?;
        let rotation =
            session.rotation(next.secret_hash(), nonce, now, expires_at.unix_timestamp());
        let (user_id, session_id) = ids(presented);
        let rotated = self.store.rotate(&user_id, &session_id, &rotation).await?;
        Ok(rotated.then_some(Issued {
            token: next,
            expires_at,
        }))
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
        let successor = presented.successor(nonce, session.generation)?;
        if !bool::from(successor.secret_hash().ct_eq(&session.token_hash)) {
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
