//! The TOTP flows of a signed-in user: enrol, confirm, disable. The second-factor rules live in
//! `mfa`; here the caller's session gives the username, DisableTotp's guesses are counted by the login
//! lockout (a stolen access token must not buy unlimited code guesses), and each outcome is
//! audited.

use common::tokens::Principal;
use secrecy::SecretString;

use super::{Accounts, SignedIn};
use crate::{
    audit::{Event, Outcome, Record},
    client::ClientInfo,
    error::AuthError,
    mfa::{Enrolment, SecondFactor},
};

impl Accounts {
    /// A new pending TOTP secret for the caller (EnrollTotp).
    pub async fn enroll_totp(
        &self,
        caller: &SignedIn,
        client: &ClientInfo,
    ) -> Result<Enrolment, AuthError> {
        let (principal, username) = (&caller.principal, caller.username()?);
        let enrolment = self.mfa.enroll(&principal.user_id, username).await?;
        audit(
            Event::MfaEnrolled,
            Outcome::Succeeded,
            principal,
            username,
            client,
        );
        Ok(enrolment)
    }

    /// Turns the caller's TOTP on with a current code; returns the recovery codes
    /// (ConfirmTotp).
    pub async fn confirm_totp(
        &self,
        caller: &SignedIn,
        code: SecretString,
        client: &ClientInfo,
    ) -> Result<Vec<SecretString>, AuthError> {
        let (principal, username) = (&caller.principal, caller.username()?);
        let confirmed = self.mfa.confirm(&principal.user_id, username, &code).await;
        let outcome = match &confirmed {
            Ok(_) => Outcome::Succeeded,
            Err(AuthError::InvalidArgument(_)) => Outcome::Failed,
            Err(_) => return confirmed,
        };
        audit(Event::MfaConfirmed, outcome, principal, username, client);
        confirmed
    }

    /// Turns the caller's TOTP off with a code or a recovery code (DisableTotp). The attempt
    /// counts toward the username's lockout like a login, and only success clears it.
    pub async fn disable_totp(
        &self,
        caller: &SignedIn,
        factor: SecondFactor,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let (principal, username) = (&caller.principal, caller.username()?);
        let user = self
            .mfa
            .ready_to_disable(&principal.user_id, username, &factor)
            .await?;
        let attempt = match self.lockout.begin(username, client).await {
            Ok(attempt) => attempt,
            Err(error) => {
                if matches!(error, AuthError::Locked { .. }) {
                    audit(
                        Event::MfaDisabled,
                        Outcome::Refused,
                        principal,
                        username,
                        client,
                    );
                }
                return Err(error);
            }
        };
        match self.mfa.disable(&user, &factor).await {
            Ok(used_recovery_code) => {
                attempt.succeeded().await;
                if used_recovery_code {
                    audit(
                        Event::RecoveryCodeUsed,
                        Outcome::Succeeded,
                        principal,
                        username,
                        client,
                    );
                }
                audit(
                    Event::MfaDisabled,
                    Outcome::Succeeded,
                    principal,
                    username,
                    client,
                );
                Ok(())
            }
            Err(error) => {
                if matches!(error, AuthError::InvalidCode) {
                    audit(
                        Event::MfaDisabled,
                        Outcome::Failed,
                        principal,
                        username,
                        client,
                    );
                }
                Err(error)
            }
        }
    }
}

/// One audit line about the caller's own account.
fn audit(
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
