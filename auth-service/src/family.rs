//! Refresh-token families: what a presented refresh token means for its session (current,
//! a retry of the previous one, proven reuse, or unknown) and the flows that act on it —
//! start, refresh, logout, and the per-user session cap.
//!
//! The policy: the current token rotates. Within the retry grace, the token rotated out last
//! gets the same successor again (HMAC of it and the stored nonce), so a lost response can be
//! retried and concurrent refreshes all agree. Any other token the session once had — the
//! previous one after the grace, or an older one — is reuse and ends the session. A secret the
//! session never had revokes nothing: its user and session ids are public.
//!
//! Ending is final once asked for. Every public method that may end a session runs as a task
//! of its own ([`common::detached`]) from its first read on, so a caller that goes away
//! (deadline, cancel, reset) cannot stop it between announcing an ending and marking the
//! session; the caller is answered once it is done. And the revocation log is the truth: a
//! session in it is ended for every reader here ([`Families::is_live`]) even if its item was
//! never marked, and the replica's repairer ([`repair`]) marks it. Which sessions are live and
//! how they end is in `ending.rs`.

use std::{sync::Arc, time::Duration};

use common::{clock::Clock, detached};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    audit::{Event, Outcome, Record},
    end_user::ClientInfo,
    error::AuthError,
    refresh_token::{RefreshToken, RotationNonce},
    revocations::Revocations,
    sessions::{NewSession, RevokeReason, Session, SessionStore},
    users::{CredentialsEpochs, EpochOwner},
};

mod ending;
pub mod repair;
mod standing;
pub use standing::{Standing, standing};

/// Reads of a session one refresh makes at most. A lost race needs two: the rotation fails
/// only because another one landed, and the second read finds the token as the previous one.
const REFRESH_ATTEMPTS: usize = 3;

/// How sessions behave; from the settings.
#[derive(Clone, Debug)]
pub struct SessionPolicy {
    /// A refresh token's lifetime (sliding: each refresh starts it again).
    pub refresh_lifetime: Duration,
    /// How long the token rotated out last still gets the same successor.
    pub retry_grace: Duration,
    /// Live sessions a user may have.
    pub max_per_user: usize,
    /// Access-token lifetime: a revoked session's item outlives its access tokens.
    pub access_lifetime: Duration,
}

/// A session's refresh token, freshly issued or handed out again.
pub struct Issued {
    /// The token for the client.
    pub token: RefreshToken,
    /// When it expires unless used.
    pub expires_at: OffsetDateTime,
}

/// The sessions table under the family policy.
#[derive(Clone, Debug)]
pub struct Families {
    store: SessionStore,
    policy: SessionPolicy,
    revocations: Revocations,
    epochs: CredentialsEpochs,
    clock: Arc<dyn Clock>,
}

impl Families {
    /// Families kept in `store`, behaving as `policy` says; every session they end is
    /// announced on `revocations`, and the flows that end sessions after a compromise bump
    /// the user's credentials epoch in `epochs`. Time is read from `clock`.
    pub fn new(
        store: SessionStore,
        policy: SessionPolicy,
        revocations: Revocations,
        epochs: CredentialsEpochs,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            policy,
            revocations,
            epochs,
            clock,
        }
    }

    /// The users' credentials epochs.
    pub fn epochs(&self) -> &CredentialsEpochs {
        &self.epochs
    }

    fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// The session store.
    pub fn store(&self) -> &SessionStore {
        &self.store
    }

    /// The revocation feed.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// Starts a session for `user_id` (`username`), logged in by `client`, then ends the
    /// user's oldest sessions beyond the cap; detached from the caller.
    pub async fn start(
        &self,
        user_id: Uuid,
        username: &str,
        client: &ClientInfo,
    ) -> Result<Issued, AuthError> {
        let (families, username, client) = (self.clone(), username.to_owned(), client.clone());
        detached::run(async move { families.start_here(user_id, &username, &client).await }).await
    }

    async fn start_here(
        &self,
        user_id: Uuid,
        username: &str,
        client: &ClientInfo,
    ) -> Result<Issued, AuthError> {
        let token = RefreshToken::generate(user_id, Uuid::new_v4());
        let now = self.now();
        let expires_at = self.expiry(now)?;
        let (user_id, session_id) = (user_id.to_string(), token.session_id.to_string());
        let session = NewSession {
            user_id: &user_id,
            username,
            session_id: &session_id,
            token_hash: &token.secret_hash(),
            client,
        };
        self.store
            .create(session, now, expires_at.unix_timestamp())
            .await?;
        tracing::info!(%user_id, %session_id, "session started");
        // The session exists; if the cap cannot be applied now, the next login applies it.
        if let Err(error) = self.enforce_cap(&user_id, now).await {
            tracing::warn!(%user_id, %error, "session cap not applied");
        }
        Ok(Issued { token, expires_at })
    }

    /// When a refresh token issued at `now` expires: whole seconds, as stored and reported
    /// again on a retry.
    fn expiry(&self, now: OffsetDateTime) -> Result<OffsetDateTime, AuthError> {
        let expires_at = now + self.policy.refresh_lifetime;
        Ok(expires_at
            .replace_nanosecond(0)
            .map_err(|e| anyhow::anyhow!("truncating an expiry: {e}"))?)
    }

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
    async fn reused(
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

    /// Ends the session a refresh token belongs to. The current token, or the previous one
    /// within the grace (its refresh's response may have been lost), logs out — again and
    /// again, so a retried logout is harmless. Other tokens are treated as Refresh treats them.
    /// Audited as `client`'s. Detached.
    pub async fn logout(
        &self,
        presented: RefreshToken,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let (families, client) = (self.clone(), client.clone());
        detached::run(async move { families.logout_here(&presented, &client).await }).await
    }

    async fn logout_here(
        &self,
        presented: &RefreshToken,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let (user_id, session_id) = ids(presented);
        let session = self
            .store
            .get(&user_id, &session_id)
            .await?
            .ok_or(AuthError::InvalidRefreshToken)?;
        let now = self.now();
        let active = self.is_live(&user_id, &session_id, &session);
        match standing(
            &session,
            &presented.secret_hash(),
            now,
            self.policy.retry_grace,
        ) {
            Standing::Current | Standing::RetryOfPrevious => {
                if active {
                    self.revoke(&user_id, &session_id, RevokeReason::Logout, now)
                        .await?;
                }
                tracing::info!(%user_id, %session_id, "logged out");
                let mut record = Record::new(Event::Logout, Outcome::Succeeded, client)
                    .user(&user_id)
                    .session(&session_id);
                if let Some(username) = &session.username {
                    record = record.username(username);
                }
                record.log();
                Ok(())
            }
            Standing::Reused if active => Err(self.reused(&session, presented, now, client).await),
            Standing::Reused => Err(AuthError::InvalidRefreshToken),
            Standing::Unknown => Err(unknown(&user_id, &session_id)),
        }
    }
}

fn ids(token: &RefreshToken) -> (String, String) {
    (token.user_id.to_string(), token.session_id.to_string())
}

fn unknown(user_id: &str, session_id: &str) -> AuthError {
    tracing::info!(%user_id, %session_id, "refresh token unknown to its session: refused, nothing revoked");
    AuthError::InvalidRefreshToken
}
