//! The account flows behind the API: register, login, refresh, logout. Handlers in
//! `service.rs` only translate messages; every decision is made here.

mod step_up;
mod totp;

use std::sync::Arc;

use common::{clock::Clock, detached};
use secrecy::SecretString;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    audit::{AuditKey, Event, Outcome, Record},
    end_user::ClientInfo,
    erasure::Erasure,
    error::AuthError,
    family::{Families, Issued},
    lockout::{Attempt, Lockout},
    mfa::Mfa,
    password::PasswordHasher,
    recovery::Recovery,
    refresh_token::RefreshToken,
    revocations::Revocations,
    sessions::SessionStore,
    tokens::{AccessToken, TokenIssuer},
    users::{EpochOwner, UserStore},
    validation::{self, PasswordRules},
};

mod deletion;
mod login;
mod password_change;
mod password_reset;
mod session_list;
mod signed_in;
mod vending;
pub use deletion::AccountDeletion;
pub use login::LoginAttempt;
pub use password_change::PasswordChange;
pub use password_reset::PasswordReset;
pub use signed_in::SignedIn;

/// The tokens of a started or continued session.
#[derive(Debug)]
pub struct SessionTokens {
    /// The user the session belongs to.
    pub user_id: String,
    /// The session.
    pub session_id: String,
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
    lockout: Lockout,
    mfa: Mfa,
    clock: Arc<dyn Clock>,
    password_rules: PasswordRules,
    audit_key: AuditKey,
    erasure: Erasure,
    recovery: Recovery,
}

/// The parts [`Accounts`] is made of.
#[derive(Debug)]
pub struct Parts {
    /// The users table.
    pub users: UserStore,
    /// Sessions under the refresh-token policy.
    pub families: Families,
    /// Password hashing.
    pub hasher: PasswordHasher,
    /// Access tokens.
    pub tokens: TokenIssuer,
    /// Brute-force lockout.
    pub lockout: Lockout,
    /// Second factors.
    pub mfa: Mfa,
    /// Where time-dependent rules read the time.
    pub clock: Arc<dyn Clock>,
    /// What a new password must be (`validation::new_password`).
    pub password_rules: PasswordRules,
    /// Hashes names as typed for the audit log.
    pub audit_key: AuditKey,
    /// Account erasure (DeleteAccount).
    pub erasure: Erasure,
    /// Recovery tokens (CreateRecoveryToken, ResetPassword).
    pub recovery: Recovery,
}

impl Accounts {
    /// Accounts over these parts.
    pub fn new(parts: Parts) -> Self {
        Self {
            users: parts.users,
            families: parts.families,
            hasher: parts.hasher,
            tokens: parts.tokens,
            lockout: parts.lockout,
            mfa: parts.mfa,
            clock: parts.clock,
            password_rules: parts.password_rules,
            audit_key: parts.audit_key,
            erasure: parts.erasure,
            recovery: parts.recovery,
        }
    }

    /// The clock time-dependent rules read.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The token issuer (for publishing keys and verifying bearer tokens).
    pub fn tokens(&self) -> &TokenIssuer {
        &self.tokens
    }

    /// The users table (the admin service's view of accounts).
    pub fn users(&self) -> &UserStore {
        &self.users
    }

    /// Sessions under the refresh-token policy (the admin service ends them).
    pub fn families(&self) -> &Families {
        &self.families
    }

    /// The brute-force lockout (the admin service reads and clears it).
    pub fn lockout(&self) -> &Lockout {
        &self.lockout
    }

    /// Account erasure (the admin service's DeleteUser).
    pub fn erasure(&self) -> &Erasure {
        &self.erasure
    }

    /// The session store.
    pub fn sessions(&self) -> &SessionStore {
        self.families.store()
    }

    /// The revocation feed (WatchRevocations).
    pub fn revocations(&self) -> &Revocations {
        self.families.revocations()
    }

    /// Registers a user and returns the new user id. A refusal the client caused (a broken
    /// rule, a name taken) is audited with the name's hash, and with the name itself only when
    /// it is taken (an account's).
    pub async fn register(
        &self,
        typed: &str,
        password: SecretString,
        client: &ClientInfo,
    ) -> Result<String, AuthError> {
        let folded = typed.to_lowercase();
        let refused = |error: AuthError| {
            let hash = self.audit_key.username_hash(&folded);
            let record = Record::new(Event::Register, Outcome::Failed, client).username_hash(&hash);
            match &error {
                // Taken: a valid name (so folded as stored), and an account's.
                AuthError::UsernameTaken => record.username(&folded).log(),
                AuthError::InvalidArgument(_) => record.log(),
                _ => {}
            }
            error
        };
        let username = validation::registration(typed, &password, &self.password_rules)
            .await
            .map_err(refused)?;
        let password_hash = self.hasher.hash(password).await?;
        let user_id = Uuid::new_v4().to_string();
        self.users
            .create(
                &username,
                &user_id,
                &password_hash,
                self.clock.now().unix_timestamp(),
            )
            .await
            .map_err(refused)?;
        Record::new(Event::Register, Outcome::Succeeded, client)
            .user(&user_id)
            .username(&username)
            .log();
        Ok(user_id)
    }

    /// Counts an attempt against `username`'s lockout; `refused` runs (to audit it) when the
    /// name is locked and the attempt is refused unchecked.
    async fn count_attempt(
        &self,
        username: &str,
        client: &ClientInfo,
        refused: impl FnOnce(),
    ) -> Result<Attempt, AuthError> {
        self.lockout
            .begin(username, client)
            .await
            .inspect_err(|error| {
                if matches!(error, AuthError::Locked { .. }) {
                    refused();
                }
            })
    }

    /// Trades a refresh token for new tokens. Within the retry grace the token rotated out
    /// last gets the same successor again; any other token the session once had revokes it
    /// (it leaked, or a client is confused: both call for a new login). A secret the session
    /// never had is refused and revokes nothing. Reuse is audited as `client`'s.
    pub async fn refresh(
        &self,
        presented: &str,
        client: &ClientInfo,
    ) -> Result<SessionTokens, AuthError> {
        let token = RefreshToken::decode(presented).ok_or(AuthError::InvalidRefreshToken)?;
        let issued = self.families.refresh(token, client).await?;
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
            session_id,
            refresh_token: issued.token.encode(),
            refresh_expires_at: issued.expires_at,
        })
    }

    /// Ends the session a refresh token belongs to: with its current token, or the previous
    /// one within the retry grace. A retried logout succeeds.
    pub async fn logout(&self, presented: &str, client: &ClientInfo) -> Result<(), AuthError> {
        let token = RefreshToken::decode(presented).ok_or(AuthError::InvalidRefreshToken)?;
        self.families.logout(token, client).await
    }

    /// Ends every active session of the caller; returns how many were ended. Detached: it
    /// runs (and is audited) to its end whatever the caller does.
    pub async fn logout_all(
        &self,
        caller: &SignedIn,
        client: &ClientInfo,
    ) -> Result<u32, AuthError> {
        let (families, principal, client) = (
            self.families.clone(),
            caller.principal.clone(),
            client.clone(),
        );
        let username = caller.username.clone();
        detached::run(async move {
            let user_id = principal.user_id.as_str();
            // The user's credentials may be a thief's too: every replica vends new ones from now.
            let owner = EpochOwner {
                username: username.as_deref(),
                user_id,
            };
            let ended = families
                .epochs()
                .around(owner, families.end_all(user_id))
                .await?;
            let count = u32::try_from(ended).unwrap_or(u32::MAX);
            tracing::info!(%user_id, sessions_revoked = count, "logged out everywhere");
            Record::new(Event::LogoutAll, Outcome::Succeeded, &client)
                .user(user_id)
                .session(&principal.session_id)
                .log();
            Ok(count)
        })
        .await
    }
}
