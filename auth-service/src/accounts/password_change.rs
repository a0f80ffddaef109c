//! ChangePassword: the caller proves the old password (counted by the lockout like a login),
//! the new one passes every rule, its hash replaces the old one only if that is still the
//! stored one, and every other session of the user ends. A login that checked the old password
//! while a change ran keeps no session: its check on the user item, once its session is
//! written, finds the new `password_version` (`users/logins.rs`).

use common::{detached, status::Violation, tokens::Principal};
use secrecy::{ExposeSecret, SecretString};

use super::{Accounts, SignedIn};
use crate::{
    audit::{Event, Outcome, Record},
    end_user::ClientInfo,
    error::AuthError,
    users::EpochOwner,
    validation,
    validation::PasswordRules,
};

/// A password change as the client asked for it.
#[derive(Debug)]
pub struct PasswordChange {
    /// The current password.
    pub old_password: SecretString,
    /// The new password.
    pub new_password: SecretString,
    /// Who is asking.
    pub client: ClientInfo,
}

impl Accounts {
    /// Changes the password of the principal's user, whose session must be active, and ends
    /// every other session of the user; returns how many. Of concurrent changes exactly one
    /// lands; the others fail with FAILED_PRECONDITION.
    pub async fn change_password(
        &self,
        caller: &SignedIn,
        change: PasswordChange,
    ) -> Result<u32, AuthError> {
        let PasswordChange {
            old_password,
            new_password,
            client,
        } = change;
        let (principal, username) = (&caller.principal, caller.username()?.to_owned());
        check(
            &username,
            &old_password,
            &new_password,
            &self.password_rules,
        )
        .await?;
        let audit = |outcome| audit_change(outcome, &client, principal, &username);
        let refused = || audit(Outcome::Refused);
        let attempt = self.count_attempt(&username, &client, refused).await?;
        let user = self
            .users
            .find(&username)
            .await?
            .filter(|user| user.user_id == principal.user_id)
            .ok_or(AuthError::SessionEnded)?;
        let stored = Some(user.password_hash.clone());
        if !self.hasher.verify(old_password, stored).await?.matches {
            audit(Outcome::Failed);
            return Err(AuthError::InvalidCredentials);
        }
        attempt.succeeded().await;
        // From here the change runs to its end even if the caller goes away (deadline, reset):
        // a new hash stored without the sweep would leave every other session alive.
        let (accounts, principal) = (self.clone(), principal.clone());
        let old_hash = user.password_hash;
        let change = async move {
            let ended = accounts
                .replace_password(&principal, &username, &old_hash, new_password)
                .await?;
            audit_change(Outcome::Succeeded, &client, &principal, &username);
            Ok(ended)
        };
        detached::run(change).await
    }

    /// Stores the new password's hash if the old one is still stored, then ends every other
    /// session of the user; returns how many.
    async fn replace_password(
        &self,
        principal: &Principal,
        username: &str,
        old_hash: &str,
        new_password: SecretString,
    ) -> Result<u32, AuthError> {
        let new_hash = self.hasher.hash(new_password).await?;
        let now = self.clock.now().unix_timestamp();
        let landed = self
            .users
            .change_password(username, old_hash, &new_hash, now)
            .await?;
        if !landed {
            return Err(AuthError::FailedPrecondition(
                "the password was changed by another request meanwhile".to_owned(),
            ));
        }
        // The old password may be a thief's: every replica vends the user new credentials.
        let owner = EpochOwner {
            username: Some(username),
            user_id: &principal.user_id,
        };
        let ending = self
            .families
            .end_others(&principal.user_id, &principal.session_id);
        let ended = self.families.epochs().around(owner, ending).await?;
        Ok(u32::try_from(ended).unwrap_or(u32::MAX))
    }
}

fn audit_change(outcome: Outcome, client: &ClientInfo, principal: &Principal, username: &str) {
    Record::new(Event::PasswordChanged, outcome, client)
        .user(&principal.user_id)
        .username(username)
        .session(&principal.session_id)
        .log();
}

/// Every violation of the request at once: an old password of impossible length, and the
/// new-password rules (reported under `new_password`), checked with the user's own name so the
/// rules about the username apply too.
async fn check(
    username: &str,
    old: &SecretString,
    new: &SecretString,
    rules: &PasswordRules,
) -> Result<(), AuthError> {
    let old = validation::password_length(old.expose_secret())
        .err()
        .map(|violation| Violation::new("old_password", violation.description));
    let new = match validation::new_password(new, username, rules).await {
        Ok(()) => Vec::new(),
        Err(AuthError::InvalidArgument(violations)) => violations
            .into_iter()
            .map(|violation| Violation::new("new_password", violation.description))
            .collect(),
        // Shed (RESOURCE_EXHAUSTED) or failed: not a verdict on the password.
        Err(other) => return Err(other),
    };
    let violations: Vec<_> = old.into_iter().chain(new).collect();
    if violations.is_empty() {
        Ok(())
    } else {
        Err(AuthError::InvalidArgument(violations))
    }
}
