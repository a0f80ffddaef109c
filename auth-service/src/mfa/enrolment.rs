//! Turning TOTP on and off: enrol a secret (pending), confirm it with a code (on, with recovery
//! codes), disable it with a code or a recovery code. Each step is one conditional write on the
//! user item, so concurrent calls cannot leave a half-made state.

use secrecy::{ExposeSecret, SecretString};

use common::status::Violation;

use super::{Factor, Mfa, SecondFactor, recovery, totp::TotpSecret};
use crate::{error::AuthError, users::User};

/// A new, not yet active, TOTP secret.
#[derive(Debug)]
pub struct Enrolment {
    /// The secret in base32.
    pub secret: SecretString,
    /// Its `otpauth://` URI (it carries the secret).
    pub otpauth_uri: SecretString,
}

impl Mfa {
    /// Issues a new pending secret for the user, replacing an unconfirmed one.
    /// FAILED_PRECONDITION when TOTP is already on.
    pub async fn enroll(&self, user_id: &str, username: &str) -> Result<Enrolment, AuthError> {
        let sealer = self.sealer()?;
        let user = self.user(user_id, username).await?;
        if user.totp.active.is_some() {
            return Err(already_on());
        }
        let secret = TotpSecret::generate();
        let sealed = sealer.seal(user_id, &secret)?;
        // Turned on meanwhile by a confirmation of an earlier enrolment: that one stands.
        if !self.users.set_pending_totp(username, &sealed).await? {
            return Err(already_on());
        }
        Ok(Enrolment {
            secret: secret.base32(),
            otpauth_uri: secret.otpauth_uri(username),
        })
    }

    /// Turns TOTP on with a current code of the pending secret and returns the new recovery
    /// codes. The code's step counts as used, so it cannot also log in.
    pub async fn confirm(
        &self,
        user_id: &str,
        username: &str,
        code: &SecretString,
    ) -> Result<Vec<SecretString>, AuthError> {
        let sealer = self.sealer()?;
        let user = self.user(user_id, username).await?;
        if user.totp.active.is_some() {
            return Err(already_on());
        }
        let Some(pending) = &user.totp.pending else {
            return Err(AuthError::FailedPrecondition(
                "no TOTP enrolment to confirm: call EnrollTotp first".to_owned(),
            ));
        };
        let secret = sealer.open(user_id, pending)?;
        let Some(step) = secret.matching_step(code.expose_secret(), self.clock.now(), 0) else {
            return Err(AuthError::InvalidArgument(vec![Violation::new(
                "code",
                "is not the current code of the enrolled secret (check the device's clock)",
            )]));
        };
        let fresh = recovery::generate(user_id);
        let activated = self
            .users
            .activate_totp(username, pending, step, &fresh.hashes)
            .await?;
        if !activated {
            return Err(AuthError::FailedPrecondition(
                "the TOTP enrolment was replaced or confirmed meanwhile".to_owned(),
            ));
        }
        Ok(fresh.codes)
    }

    /// The user, checked for DisableTotp before an attempt is counted: one factor given, and
    /// TOTP on.
    pub async fn ready_to_disable(
        &self,
        user_id: &str,
        username: &str,
        factor: &SecondFactor,
    ) -> Result<User, AuthError> {
        self.sealer()?;
        if factor.given()?.is_none() {
            return Err(AuthError::InvalidArgument(vec![Violation::new(
                "code",
                "send a TOTP code or a recovery code",
            )]));
        }
        let user = self.user(user_id, username).await?;
        if user.totp.active.is_none() {
            return Err(not_on());
        }
        Ok(user)
    }

    /// Turns TOTP off for `user` (from [`Mfa::ready_to_disable`]), spending the code or
    /// recovery code given; `InvalidCode` when it is wrong or already used. Returns whether
    /// a recovery code was spent.
    pub async fn disable(&self, user: &User, factor: &SecondFactor) -> Result<bool, AuthError> {
        let Some(factor) = factor.given()? else {
            return Err(AuthError::InvalidCode);
        };
        let Some(active) = &user.totp.active else {
            return Err(not_on());
        };
        let Some(proof) = self.prove(user, active, factor)? else {
            return Err(AuthError::InvalidCode);
        };
        if !self
            .users
            .remove_totp(&user.username, active, &proof)
            .await?
        {
            return Err(AuthError::InvalidCode);
        }
        Ok(matches!(factor, Factor::RecoveryCode(_)))
    }

    /// The caller's user item, which must still be the one the session was started for.
    async fn user(&self, user_id: &str, username: &str) -> Result<User, AuthError> {
        match self.users.find(username).await? {
            Some(user) if user.user_id == user_id => Ok(user),
            _ => Err(AuthError::SessionEnded),
        }
    }
}

fn not_on() -> AuthError {
    AuthError::FailedPrecondition("TOTP is not on".to_owned())
}

fn already_on() -> AuthError {
    AuthError::FailedPrecondition(
        "TOTP is already on: disable it before enrolling again".to_owned(),
    )
}
