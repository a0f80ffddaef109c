//! Recovery through the trusted caller: CreateRecoveryToken (the admin listener) issues a
//! one-time token (`recovery`), ResetPassword redeems it. A reset applies every password rule,
//! is counted by the lockout of the token's username, needs the second factor when TOTP is on
//! (unless the token was issued to reset it), and ends every session. docs/security.md
//! ("Recovery") is the reference.

use common::{detached, status::Violation};
use secrecy::{ExposeSecret, SecretString};

use super::Accounts;
use crate::{
    audit::{Event, Outcome, Record},
    end_user::ClientInfo,
    error::AuthError,
    lockout::Attempt,
    mfa::SecondFactor,
    recovery::{self, Issued, RecoveryToken},
    users::{EpochOwner, FactorAtReset, Redemption, User},
    validation::{self, PasswordRules},
};

/// A ResetPassword as the client asked for it.
#[derive(Debug)]
pub struct PasswordReset {
    /// The recovery token the backend delivered.
    pub recovery_token: SecretString,
    /// The new password.
    pub new_password: SecretString,
    /// A TOTP or recovery code, needed when TOTP is on.
    pub second_factor: SecondFactor,
    /// Who is asking.
    pub client: ClientInfo,
}

impl Accounts {
    /// Issues a recovery token for the account named `typed` (CreateRecoveryToken), audited
    /// as asked by the admin with certificate subject `admin` from `client`. The same answer
    /// whether or not the account exists; only the audit line tells them apart.
    pub async fn create_recovery_token(
        &self,
        typed: &str,
        reset_second_factor: bool,
        admin: &str,
        client: &ClientInfo,
    ) -> Result<Issued, AuthError> {
        let issued = self.recovery.issue(typed, reset_second_factor).await?;
        let event = Event::RecoveryTokenIssued;
        if issued.stored {
            let record = Record::new(event, Outcome::Succeeded, client).admin(admin);
            record.username(&issued.username).log();
        } else {
            let hash = self.audit_key.username_hash(&issued.username);
            let record = Record::new(event, Outcome::Failed, client).admin(admin);
            record.username_hash(&hash).log();
        }
        tracing::info!(reset_second_factor, expires_at = %issued.expires_at, "recovery token issued");
        Ok(issued)
    }

    /// Sets a new password with a recovery token (ResetPassword) and ends every session of
    /// the user. Once the token and the second factor are proved, the work runs to its end
    /// whatever the caller does; the token is spent in the same write that stores the new
    /// password, so of racing resets exactly one lands.
    pub async fn reset_password(&self, reset: PasswordReset) -> Result<(), AuthError> {
        let PasswordReset {
            recovery_token,
            new_password,
            second_factor,
            client,
        } = reset;
        let failed = |username_hash: Option<&str>, outcome| {
            let record = Record::new(Event::PasswordReset, outcome, &client);
            match username_hash {
                Some(hash) => record.username_hash(hash).log(),
                None => record.log(),
            }
        };
        let token = recovery::decode(recovery_token.expose_secret())
            .inspect_err(|_| failed(None, Outcome::Failed))?;
        let username = token.username.clone();
        check_new_password(&username, &new_password, &self.password_rules).await?;
        // The token names its user, so this is the lockout a Login of that name counts: a
        // sprayer of tokens can lock a name no more than a sprayer of passwords can.
        let hash = self.audit_key.username_hash(&username);
        let refused = || failed(Some(&hash), Outcome::Refused);
        let attempt = self.count_attempt(&username, &client, refused).await?;
        let (user, resets_factor) = self.token_holder(&token, &hash, &client).await?;
        let checked = Checked {
            token_hash: token.stored_hash(),
            resets_factor,
            user,
            attempt,
        };
        let audit = |outcome| audit_user(Event::PasswordReset, outcome, &checked.user, &client);
        self.prove_factor(&checked, &second_factor, &client)
            .await
            .inspect_err(|_| audit(Outcome::Failed))?;
        let accounts = self.clone();
        detached::run(async move { accounts.finish_reset(checked, new_password, client).await })
            .await
    }

    /// The account `token` names, and whether its token resets the second factor, if the
    /// token is its outstanding one; else the uniform refusal, audited like a failed Login
    /// (the name itself only once it is known to be an account's; else its `hash`).
    async fn token_holder(
        &self,
        token: &RecoveryToken,
        hash: &str,
        client: &ClientInfo,
    ) -> Result<(User, bool), AuthError> {
        let user = self.users.find(&token.username).await?;
        let Some(user) = user.filter(User::usable) else {
            let record = Record::new(Event::PasswordReset, Outcome::Failed, client);
            record.username_hash(hash).log();
            return Err(AuthError::InvalidRecoveryToken);
        };
        match self.recovery.redeemable(&user, token) {
            Some(stored) => {
                let resets_factor = stored.resets_second_factor;
                Ok((user, resets_factor))
            }
            None => {
                audit_user(Event::PasswordReset, Outcome::Failed, &user, client);
                Err(AuthError::InvalidRecoveryToken)
            }
        }
    }

    /// Checks the second factor unless the token resets it: a code or recovery code when TOTP
    /// is on (spent like a Login's). A wrong one stays counted by the lockout.
    async fn prove_factor(
        &self,
        checked: &Checked,
        factor: &SecondFactor,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        if checked.resets_factor {
            return Ok(());
        }
        match self.mfa.check(&checked.user, factor, client).await {
            Err(AuthError::InvalidCredentials) => Err(AuthError::InvalidCode),
            other => other,
        }
    }

    /// Hashes the new password, spends the token with it in one write, then ends every
    /// session between two bumps of the credentials epoch (LogoutAll's path). Detached.
    async fn finish_reset(
        self,
        checked: Checked,
        new_password: SecretString,
        client: ClientInfo,
    ) -> Result<(), AuthError> {
        let user = &checked.user;
        let new_hash = self.hasher.hash(new_password).await?;
        let factor = match (&user.totp.active, checked.resets_factor) {
            (_, true) => FactorAtReset::TurnedOff,
            (Some(active), false) => FactorAtReset::Proved(active),
            (None, false) => FactorAtReset::Off,
        };
        let redemption = Redemption {
            username: &user.username,
            user_id: &user.user_id,
            token_hash: &checked.token_hash,
            now: self.recovery.now_secs(),
            new_hash: &new_hash,
            factor,
        };
        let audit = |event, outcome| audit_user(event, outcome, user, &client);
        if !self.users.redeem_recovery_token(&redemption).await? {
            audit(Event::PasswordReset, Outcome::Failed);
            return Err(AuthError::InvalidRecoveryToken);
        }
        checked.attempt.succeeded().await;
        if factor == FactorAtReset::TurnedOff && user.totp.active.is_some() {
            audit(Event::SecondFactorReset, Outcome::Succeeded);
        }
        let owner = EpochOwner {
            username: Some(&user.username),
            user_id: &user.user_id,
        };
        let ending = self.families.end_all(&user.user_id);
        let ended = self.families.epochs().around(owner, ending).await?;
        tracing::info!(user_id = %user.user_id, sessions_revoked = ended, "password reset");
        audit(Event::PasswordReset, Outcome::Succeeded);
        Ok(())
    }
}

/// A reset whose token was proved: what the write needs.
struct Checked {
    token_hash: String,
    resets_factor: bool,
    user: User,
    attempt: Attempt,
}

fn audit_user(event: Event, outcome: Outcome, user: &User, client: &ClientInfo) {
    Record::new(event, outcome, client)
        .user(&user.user_id)
        .username(&user.username)
        .log();
}

/// Every rule a new password must pass, for the token's user, reported under
/// `new_password`. Checked before anything is counted or read: a weak password spends nothing.
async fn check_new_password(
    username: &str,
    password: &SecretString,
    rules: &PasswordRules,
) -> Result<(), AuthError> {
    match validation::new_password(password, username, rules).await {
        Err(AuthError::InvalidArgument(violations)) => Err(AuthError::InvalidArgument(
            violations
                .into_iter()
                .map(|violation| Violation::new("new_password", violation.description))
                .collect(),
        )),
        other => other,
    }
}
