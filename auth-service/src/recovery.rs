//! Account recovery through the trusted caller: a backend authenticated on the admin listener
//! asks for a one-time recovery token for a username and delivers it to the user out of band
//! (mail, SMS); ResetPassword redeems it (`accounts/password_reset.rs`). This module issues
//! tokens and says whether a presented one is the user's outstanding, unexpired token; the
//! token is stored only as a hash on the user item (`users/recovery_token.rs`).
//!
//! Issuing for a name that is no account (unknown, or being deleted) answers the same: a
//! token of the same shape and lifetime, built the same way, after the same one conditional
//! write — which finds no account and so stores nothing. That token never works.

mod settings;
mod token;

use std::{sync::Arc, time::Duration};

use common::{clock::Clock, status::Violation};
use secrecy::SecretString;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

pub use settings::RecoverySettings;
pub use token::RecoveryToken;

use crate::{
    error::AuthError,
    users::{StoredRecovery, User, UserStore},
    validation,
};

/// A token just issued.
#[derive(Debug)]
pub struct Issued {
    /// The folded username it is for.
    pub username: String,
    /// The token, for the backend to deliver.
    pub token: SecretString,
    /// When it stops working (whole seconds).
    pub expires_at: OffsetDateTime,
    /// Whether an account took it. For the audit log only: the caller is told nothing.
    pub stored: bool,
}

/// Issues recovery tokens and checks presented ones.
#[derive(Clone, Debug)]
pub struct Recovery {
    users: UserStore,
    clock: Arc<dyn Clock>,
    ttl: Duration,
}

impl Recovery {
    /// Tokens stored in `users`, lasting `ttl` by `clock`.
    pub fn new(users: UserStore, clock: Arc<dyn Clock>, ttl: Duration) -> Self {
        Self { users, clock, ttl }
    }

    /// A new token for the account named `typed` (folded like a login's), replacing any
    /// earlier one; with `reset_second_factor`, a reset with it turns TOTP off instead of
    /// asking for a code. The same answer whether or not the account exists. A name that
    /// breaks the username rules is INVALID_ARGUMENT: no account can have it.
    pub async fn issue(&self, typed: &str, reset_second_factor: bool) -> Result<Issued, AuthError> {
        let username = validation::username(typed)
            .map_err(|violation| AuthError::InvalidArgument(vec![violation]))?;
        let token = RecoveryToken::generate(&username);
        let expires_at = self.now_secs().saturating_add(self.ttl_secs());
        let stored = StoredRecovery {
            token_hash: token.stored_hash(),
            expires_at,
            resets_second_factor: reset_second_factor,
        };
        let stored = self.users.set_recovery_token(&username, &stored).await?;
        let expires_at = OffsetDateTime::from_unix_timestamp(expires_at)
            .map_err(|error| AuthError::Internal(anyhow::anyhow!("token expiry: {error}")))?;
        Ok(Issued {
            username,
            token: token.encode(),
            expires_at,
            stored,
        })
    }

    /// The outstanding token of `user` if `presented` is it and it has not expired; `None`
    /// for every other case alike. The hashes are compared in constant time.
    pub fn redeemable<'u>(
        &self,
        user: &'u User,
        presented: &RecoveryToken,
    ) -> Option<&'u StoredRecovery> {
        let stored = user.recovery.as_ref()?;
        let presented = presented.stored_hash();
        let same = bool::from(stored.token_hash.as_bytes().ct_eq(presented.as_bytes()));
        (same && self.now_secs() < stored.expires_at).then_some(stored)
    }

    /// Unix seconds now, by the injected clock.
    pub fn now_secs(&self) -> i64 {
        self.clock.now().unix_timestamp()
    }

    fn ttl_secs(&self) -> i64 {
        i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX)
    }
}

/// A presented token: decoded, or the uniform refusal. An empty one is a malformed request
/// (INVALID_ARGUMENT); anything else that is not one of ours is refused like a wrong one.
pub fn decode(presented: &str) -> Result<RecoveryToken, AuthError> {
    if presented.is_empty() {
        return Err(AuthError::InvalidArgument(vec![Violation::new(
            "recovery_token",
            "is required",
        )]));
    }
    RecoveryToken::decode(presented).ok_or(AuthError::InvalidRecoveryToken)
}
