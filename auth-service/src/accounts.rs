//! The account flows behind the API: register, login, refresh, logout. Handlers in
//! `service.rs` only translate messages; every decision is made here.

use std::time::Duration;

use anyhow::Context;
use common::tokens::Principal;
use futures::{StreamExt, TryStreamExt};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    error::AuthError,
    password::PasswordHasher,
    refresh_token::RefreshToken,
    sessions::{RevokeReason, Session, SessionStore},
    tokens::{AccessToken, TokenIssuer},
    users::UserStore,
    validation,
};

/// Revocations LogoutAll sends at once.
const REVOKE_CONCURRENCY: usize = 8;

/// The tokens of a started or continued session.
#[derive(Debug)]
pub struct SessionTokens {
    /// The user the session belongs to.
    pub user_id: String,
    /// A new access token.
    pub access: AccessToken,
    /// The session's next refresh token.
    pub refresh_token: SecretString,
    /// When that refresh token expires unless used.
    pub refresh_expires_at: OffsetDateTime,
}

/// Users, sessions and tokens, wired together.
#[derive(Clone, Debug)]
pub struct Accounts {
    users: UserStore,
    sessions: SessionStore,
    hasher: PasswordHasher,
    tokens: TokenIssuer,
    refresh_lifetime: Duration,
}

impl Accounts {
    /// Accounts over these stores.
    pub fn new(
        users: UserStore,
        sessions: SessionStore,
        hasher: PasswordHasher,
        tokens: TokenIssuer,
        refresh_lifetime: Duration,
    ) -> Self {
        Self {
            users,
            sessions,
            hasher,
            tokens,
            refresh_lifetime,
        }
    }

    /// The token issuer (for publishing keys and verifying bearer tokens).
    pub fn tokens(&self) -> &TokenIssuer {
        &self.tokens
    }

    /// The session store.
    pub fn sessions(&self) -> &SessionStore {
        &self.sessions
    }

    /// Registers a user and returns the new user id.
    pub async fn register(
        &self,
        username: &str,
        password: SecretString,
    ) -> Result<String, AuthError> {
        let username = validation::registration(username, password.expose_secret())
            .map_err(AuthError::InvalidArgument)?;
        let password_hash = self.hasher.hash(password).await?;
        let user_id = Uuid::new_v4().to_string();
        self.users
            .create(&username, &user_id, &password_hash, now_unix())
            .await?;
        tracing::info!(%user_id, "user registered");
        Ok(user_id)
    }

    /// Checks credentials and starts a session. Unknown users and wrong passwords cost the
    /// same argon2 work and fail with the same error.
    pub async fn login(
        &self,
        username: &str,
        password: SecretString,
    ) -> Result<SessionTokens, AuthError> {
        validation::password_length(password.expose_secret())
            .map_err(|violation| AuthError::InvalidArgument(vec![violation]))?;
        // A malformed username cannot exist: verify against the dummy hash like any unknown user.
        let username = validation::username(username).ok();
        let user = match &username {
            Some(username) => self.users.find(username).await?,
            None => None,
        };
        let stored_hash = user.as_ref().map(|u| u.password_hash.clone());
        let verified = self.hasher.verify(password.clone(), stored_hash).await?;
        let (Some(user), Some(username), true) = (user, username, verified.matches) else {
            return Err(AuthError::InvalidCredentials);
        };
        if verified.needs_rehash {
            self.rehash(&username, &user.password_hash, password).await;
        }
        self.start_session(&user.user_id).await
    }

    /// Stores the password again at the configured cost. Failure only delays the upgrade to
    /// the next login, so it is logged and not returned.
    async fn rehash(&self, username: &str, old_hash: &str, password: SecretString) {
        let outcome = match self.hasher.hash(password).await {
            Ok(new_hash) => self
                .users
                .replace_hash(username, old_hash, &new_hash, now_unix())
                .await
                .map(|_| ()),
            Err(error) => Err(error),
        };
        match outcome {
            Ok(()) => tracing::info!("password rehashed at the configured cost"),
            Err(error) => {
                tracing::warn!(%error, "password rehash failed; will retry at next login")
            }
        }
    }

    async fn start_session(&self, user_id: &str) -> Result<SessionTokens, AuthError> {
        let user_uuid = Uuid::parse_str(user_id)
            .with_context(|| format!("stored user id {user_id:?} is not a UUID"))?;
        let refresh = RefreshToken::generate(user_uuid, Uuid::new_v4());
        let session_id = refresh.session_id.to_string();
        let now = OffsetDateTime::now_utc();
        let refresh_expires_at = now + self.refresh_lifetime;
        self.sessions
            .create(
                user_id,
                &session_id,
                &refresh.secret_hash(),
                now.unix_timestamp(),
                refresh_expires_at.unix_timestamp(),
            )
            .await?;
        tracing::info!(%user_id, %session_id, "session started");
        Ok(SessionTokens {
            user_id: user_id.to_owned(),
            access: self.tokens.issue(user_id, &session_id)?,
            refresh_token: refresh.encode(),
            refresh_expires_at,
        })
    }

    /// Trades a refresh token for new tokens. A token that was already rotated revokes its
    /// whole session: either it leaked, or a client is confused, and both call for a new login.
    pub async fn refresh(&self, presented: &str) -> Result<SessionTokens, AuthError> {
        let current = self.current_session(presented).await?;
        let (user_id, session_id) = (&current.user_id, &current.session_id);
        if !current.session.is_active(now_unix()) {
            return Err(AuthError::InvalidRefreshToken);
        }
        let next = RefreshToken::generate(current.token.user_id, current.token.session_id);
        let now = OffsetDateTime::now_utc();
        let refresh_expires_at = now + self.refresh_lifetime;
        let rotated = self
            .sessions
            .rotate(
                user_id,
                session_id,
                &current.token.secret_hash(),
                &next.secret_hash(),
                now.unix_timestamp(),
                refresh_expires_at.unix_timestamp(),
            )
            .await?;
        if !rotated {
            // A concurrent refresh with the same token won; this one loses without revoking,
            // since the race itself is not evidence of theft.
            tracing::info!(%user_id, %session_id, "concurrent refresh lost the race");
            return Err(AuthError::InvalidRefreshToken);
        }
        Ok(SessionTokens {
            access: self.tokens.issue(user_id, session_id)?,
            user_id: current.user_id,
            refresh_token: next.encode(),
            refresh_expires_at,
        })
    }

    /// Ends the session a refresh token belongs to. Ending an already ended session with its
    /// last token succeeds, so a retried logout is harmless.
    pub async fn logout(&self, presented: &str) -> Result<(), AuthError> {
        let current = self.current_session(presented).await?;
        let (user_id, session_id) = (&current.user_id, &current.session_id);
        if current.session.is_active(now_unix()) {
            self.sessions
                .revoke(user_id, session_id, RevokeReason::Logout, now_unix())
                .await?;
        }
        tracing::info!(%user_id, %session_id, "logged out");
        Ok(())
    }

    /// Ends every active session of the caller; returns how many were ended.
    pub async fn logout_all(&self, principal: &Principal) -> Result<u32, AuthError> {
        let now = now_unix();
        let user_id = principal.user_id.as_str();
        let active = self.sessions.active_sessions(user_id, now).await?;
        let revoked: Vec<bool> = futures::stream::iter(active)
            .map(|session_id| async move {
                self.sessions
                    .revoke(user_id, &session_id, RevokeReason::LogoutAll, now)
                    .await
            })
            .buffer_unordered(REVOKE_CONCURRENCY)
            .try_collect()
            .await?;
        let count = u32::try_from(revoked.into_iter().filter(|&r| r).count()).unwrap_or(u32::MAX);
        tracing::info!(%user_id, sessions_revoked = count, "logged out everywhere");
        Ok(count)
    }

    /// Verifies a bearer access token issued by us.
    pub fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        Ok(self.tokens.verify(token)?)
    }

    /// Fails unless the principal's session is still active: a logged-out user's access
    /// token, though unexpired, must not buy fresh AWS credentials.
    pub async fn ensure_session_active(&self, principal: &Principal) -> Result<(), AuthError> {
        let session = self
            .sessions
            .get(&principal.user_id, &principal.session_id)
            .await?;
        match session {
            Some(session) if session.is_active(now_unix()) => Ok(()),
            _ => Err(AuthError::SessionEnded),
        }
    }

    /// Finds the session a refresh token is the current token of, active or not. Presenting
    /// an old token of a session revokes it (reuse detection).
    async fn current_session(&self, presented: &str) -> Result<CurrentSession, AuthError> {
        let token = RefreshToken::decode(presented).ok_or(AuthError::InvalidRefreshToken)?;
        let (user_id, session_id) = (token.user_id.to_string(), token.session_id.to_string());
        let session = self
            .sessions
            .get(&user_id, &session_id)
            .await?
            .ok_or(AuthError::InvalidRefreshToken)?;
        if !bool::from(token.secret_hash().ct_eq(&session.token_hash)) {
            if !session.revoked {
                self.sessions
                    .revoke(
                        &user_id,
                        &session_id,
                        RevokeReason::ReuseDetected,
                        now_unix(),
                    )
                    .await?;
                tracing::warn!(%user_id, %session_id, "refresh token reuse detected: session revoked");
            }
            return Err(AuthError::InvalidRefreshToken);
        }
        Ok(CurrentSession {
            token,
            user_id,
            session_id,
            session,
        })
    }
}

/// A refresh token that is the current token of its session.
struct CurrentSession {
    token: RefreshToken,
    user_id: String,
    session_id: String,
    session: Session,
}

/// Now, in Unix seconds.
pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}
