//! The TOTP flows of a signed-in user: enrol, confirm, disable. The second-factor rules live in
//! `mfa`; here the caller's session gives the username, EnrollTotp needs the password again
//! (step-up: a stolen access token must not be able to enrol its own factor and lock the owner
//! out), DisableTotp's guesses are counted by the login lockout (nor buy unlimited code
//! guesses), and each outcome is audited.

use secrecy::SecretString;
use tracing::Instrument;

use super::{Accounts, SignedIn, step_up::audit_account as audit};
use crate::{
    audit::{Event, Outcome},
    end_user::ClientInfo,
    error::AuthError,
    mfa::{Enrolment, SecondFactor},
};

impl Accounts {
    /// A new pending TOTP secret for the caller (EnrollTotp), once `password` proves the
    /// caller is the user and not just a holder of their access token ([`Accounts::step_up`]).
    /// Nothing about the user's TOTP is read or written before that.
    pub async fn enroll_totp(
        &self,
        caller: &SignedIn,
        password: SecretString,
        client: &ClientInfo,
    ) -> Result<Enrolment, AuthError> {
        self.mfa.ensure_configured()?;
        self.step_up(caller, &password, Event::MfaEnrolled, client)
            .await?;
        // From here the enrolment runs to its end even if the caller goes away: a pending
        // secret is never written without its audit line.
        let (accounts, caller, client) = (self.clone(), caller.clone(), client.clone());
        let enrol = async move {
            let (principal, username) = (&caller.principal, caller.username()?);
            let enrolment = accounts.mfa.enroll(&principal.user_id, username).await?;
            audit(
                Event::MfaEnrolled,
                Outcome::Succeeded,
                principal,
                username,
                &client,
            );
            Ok(enrolment)
        };
        tokio::spawn(enrol.instrument(tracing::Span::current()))
            .await
            .map_err(|error| anyhow::anyhow!("TOTP enrolment task: {error}"))?
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
        let audit = |event, outcome| audit(event, outcome, principal, username, client);
        let refused = || audit(Event::MfaDisabled, Outcome::Refused);
        let attempt = self.count_attempt(username, client, refused).await?;
        match self.mfa.disable(&user, &factor).await {
            Ok(used_recovery_code) => {
                attempt.succeeded().await;
                if used_recovery_code {
                    audit(Event::RecoveryCodeUsed, Outcome::Succeeded);
                }
                audit(Event::MfaDisabled, Outcome::Succeeded);
                Ok(())
            }
            Err(error) => {
                if matches!(error, AuthError::InvalidCode) {
                    audit(Event::MfaDisabled, Outcome::Failed);
                }
                Err(error)
            }
        }
    }
}
