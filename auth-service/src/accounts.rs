//! The account flows behind the API: register, login, refresh, logout. Handlers in
//! `service.rs` only translate messages; every decision is made here.

use anyhow::Context;
use common::tokens::Principal;
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    error::AuthError,
    family::{Families, Issued},
    password::PasswordHasher,
    refresh_token::RefreshToken,
    sessions::SessionStore,
    tokens::{AccessToken, TokenIssuer},
    users::UserStore,
    validation,
};

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
    families: Families,
    hasher: PasswordHasher,
    tokens: TokenIssuer,
}

impl Accounts {
    /// Accounts over these stores.
    pub fn new(
        users: UserStore,
        families: Families,
        hasher: PasswordHasher,
        tokens: TokenIssuer,
    ) -> Self {
        Self {
            users,
            families,
            hasher,
            tokens,
        }
    }

    /// The token issuer (for publishing keys and verifying bearer tokens).
    pub fn tokens(&self) -> &TokenIssuer {
        &self.tokens
    }

    /// The session store.
    pub fn sessions(&self) -> &SessionStore {
        self.families.store()
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
            .create(
                &username,
                &user_id,
                &password_hash,
                common::clock::now_unix(),
            )
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
                .replace_hash(username, old_hash, &new_hash, common::clock::now_unix())
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
        let issued = self.families.start(user_uuid).await?;
        self.session_tokens(issued)
    }

    /// Trades a refresh token for new tokens. Within the retry grace the token rotated out
    /// last gets the same successor again; any other token the session once had revokes it
    /// (it leaked, or a client is confused: both call for a new login). A secret the session
    /// never had is refused and revokes nothing.
    pub async fn refresh(&self, presented: &str) -> Result<SessionTokens, AuthError> {
        let token = RefreshToken::decode(presented).ok_or(AuthError::InvalidRefreshToken)?;
        let issued = self.families.refresh(&token).await?;
        self.session_tokens(issued)
    }

    /// A fresh access token to go with a session's refresh token.
    fn session_tokens(&self, issued: Issued) -> Result<SessionTokens, AuthError> {
        let (user_id, session_id) = (
            issued.token.user_id.to_string(),
            issued.token.session_id.to_string(),
        );
        Ok(SessionTokens {
            access: self.tokens.issue(&user_id, &session_id)?,
            user_id,
            refresh_token: issued.token.encode(),
            refresh_expires_at: issued.expires_at,
        })
    }

    /// Ends the session a refresh token belongs to: with its current token, or the previous
    /// one within the retry grace. A retried logout succeeds.
    pub async fn logout(&self, presented: &str) -> Result<(), AuthError> {
        let token = RefreshToken::decode(presented).ok_or(AuthError::InvalidRefreshToken)?;
        self.families.logout(&token).await
    }

    /// Ends every active session of the caller; returns how many were ended.
    pub async fn logout_all(&self, principal: &Principal) -> Result<u32, AuthError> {
        let user_id = principal.user_id.as_str();
        let ended = self.families.end_all(user_id).await?;
        let count = u32::try_from(ended).unwrap_or(u32::MAX);
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
            .sessions()
            .get(&principal.user_id, &principal.session_id)
            .await?;
        match session {
            Some(session) if session.is_active(OffsetDateTime::now_utc()) => Ok(()),
            _ => Err(AuthError::SessionEnded),
        }
    }
}
