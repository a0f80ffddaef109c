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
//! how they end is in `ending.rs`; the refresh flow in `refresh.rs`.

use std::{sync::Arc, time::Duration};

use common::{clock::Clock, detached};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    audit::{Event, Outcome, Record},
    end_user::ClientInfo,
    error::AuthError,
    refresh_token::RefreshToken,
    revocations::Revocations,
    sessions::{NewSession, RevokeReason, SessionStore},
    users::CredentialsEpochs,
};

mod ending;
mod refresh;
pub mod repair;
mod standing;
pub use standing::{Standing, standing};

/// Rotation writes one refresh makes at most. An honest rotation takes one; a token of an
/// earlier release two (its generation reads wrong: the refusal tells the stored one); a lost
/// race ends at the refusal, which finds the token as the previous one.
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
