//! Step-up: a bearer call that changes how the user logs in (enrolling a second factor today,
//! any such call tomorrow) proves the current password again, so a stolen access token alone
//! cannot take the account. The password is checked exactly like a login's: counted by the
//! username's lockout before any work, verified on the argon2 pool, the same uniform failure
//! when wrong, and only a right password clears the count. ChangePassword follows the same
//! rule with its `old_password`; DisableTotp proves the factor it removes instead; DeleteAccount
//! proves the password and, when TOTP is on, the second factor too.

use common::tokens::Principal;
use secrecy::{ExposeSecret, SecretString};

use super::{Accounts, SignedIn};
use crate::{
    audit::{Event, Outcome, Record},
    end_user::ClientInfo,
    error::AuthError,
    mfa::SecondFactor,
    users::User,
    validation,
};

impl Accounts {
    /// Checks that `password` is the caller's current password before a call that changes how
    /// the user logs in; failures and refusals are audited as `event`. A password of impossible
    /// length is INVALID_ARGUMENT (like Login's, nothing counted: no guess is made); an empty
    /// one (not given) fails like a wrong one, counted, without spending a hash on it.
    pub(super) async fn step_up(
        &self,
        caller: &SignedIn,
        password: &SecretString,
        event: Event,
        client: &ClientInfo,
    ) -> Result<User, AuthError> {
        self.step_up_with(caller, password, None, event, client)
            .await
    }

    /// [`Accounts::step_up`], and when `factor` is given and the user has TOTP on, the second
    /// factor too, checked (and spent) like a Login's: the count is cleared only once both
    /// are right. Returns the user as read for the check. A user being deleted has no session
    /// left to act for (`SessionEnded`).
    pub(super) async fn step_up_with(
        &self,
        caller: &SignedIn,
        password: &SecretString,
        factor: Option<&SecondFactor>,
        event: Event,
        client: &ClientInfo,
    ) -> Result<User, AuthError> {
        let (principal, username) = (&caller.principal, caller.username()?);
        let given = !password.expose_secret().is_empty();
        if given {
            validation::password_length(password.expose_secret())
                .map_err(|violation| AuthError::InvalidArgument(vec![violation]))?;
        }
        let audit = |outcome| audit_account(event, outcome, principal, username, client);
        let refused = || audit(Outcome::Refused);
        let attempt = self.count_attempt(username, client, refused).await?;
        let user = self
            .users
            .find(username)
            .await?
            .filter(|user| user.user_id == principal.user_id && user.usable())
            .ok_or(AuthError::SessionEnded)?;
        let matches = given
            && self
                .hasher
                .verify(password.clone(), Some(user.password_hash.clone()))
                .await?
                .matches;
        if !matches {
            audit(Outcome::Failed);
            return Err(AuthError::InvalidCredentials);
        }
        if let Some(factor) = factor
            && let Err(error) = self.mfa.check(&user, factor, client).await
        {
            audit(Outcome::Failed);
            return Err(error);
        }
        attempt.succeeded().await;
        Ok(user)
    }
}

/// One audit line about the caller's own account.
pub(super) fn audit_account(
    event: Event,
    outcome: Outcome,
    principal: &Principal,
    username: &str,
    client: &ClientInfo,
) {
    Record::new(event, outcome, client)
        .user(&principal.user_id)
        .username(username)
        .session(&principal.session_id)
        .log();
}
