//! The second factor: TOTP (RFC 6238) with one-time recovery codes. Checked at login after the
//! password, enrolled and removed by the user's bearer calls. A code's step and a recovery code
//! are each spent once, by a conditional write, so a replayed or raced code fails on every
//! replica; secrets are sealed at rest and never logged.

mod enrolment;
pub mod recovery;
pub mod seal;
pub mod settings;
pub mod totp;

use std::sync::Arc;

use common::{clock::Clock, status::Violation};
use secrecy::{ExposeSecret, SecretString};

pub use enrolment::Enrolment;
pub use settings::MfaSettings;

use crate::{
    audit::{Event, Outcome, Record},
    end_user::ClientInfo,
    error::AuthError,
    users::{Proof, User, UserStore},
};
use seal::Sealer;

/// What the client offered as a second factor.
#[derive(Debug, Default)]
pub struct SecondFactor {
    /// A TOTP code, if given.
    pub totp_code: Option<SecretString>,
    /// A recovery code, if given.
    pub recovery_code: Option<SecretString>,
}

impl SecondFactor {
    /// From the request's fields; empty strings mean "not given".
    pub fn new(totp_code: String, recovery_code: String) -> Self {
        let given = |code: String| (!code.is_empty()).then(|| SecretString::from(code));
        Self {
            totp_code: given(totp_code),
            recovery_code: given(recovery_code),
        }
    }

    /// The one factor given, if any; both at once is a malformed request.
    fn given(&self) -> Result<Option<Factor<'_>>, AuthError> {
        match (&self.totp_code, &self.recovery_code) {
            (None, None) => Ok(None),
            (Some(code), None) => Ok(Some(Factor::Totp(code))),
            (None, Some(code)) => Ok(Some(Factor::RecoveryCode(code))),
            (Some(_), Some(_)) => Err(AuthError::InvalidArgument(vec![Violation::new(
                "recovery_code",
                "send a TOTP code or a recovery code, not both",
            )])),
        }
    }
}

/// One second factor.
#[derive(Clone, Copy, Debug)]
enum Factor<'a> {
    Totp(&'a SecretString),
    RecoveryCode(&'a SecretString),
}

/// Checks, enrols and removes second factors.
#[derive(Clone, Debug)]
pub struct Mfa {
    users: UserStore,
    sealer: Option<Arc<Sealer>>,
    clock: Arc<dyn Clock>,
}

impl Mfa {
    /// Second factors stored in `users`, secrets sealed by `sealer` (`None`: TOTP is not
    /// configured, so nobody can enrol), time steps read from `clock`.
    pub fn new(users: UserStore, sealer: Option<Sealer>, clock: Arc<dyn Clock>) -> Self {
        Self {
            users,
            sealer: sealer.map(Arc::new),
            clock,
        }
    }

    /// Checks `factor` for `user`, whose password was right: `Ok` when the user needs no
    /// second factor or gave a valid, unspent one (which is then spent);
    /// `AuthError::MfaRequired` when it is missing; `InvalidCredentials`, like a wrong
    /// password, when it is wrong or was already used.
    pub async fn check(
        &self,
        user: &User,
        factor: &SecondFactor,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let Some(active) = &user.totp.active else {
            return Ok(());
        };
        let Some(factor) = factor.given()? else {
            return Err(AuthError::MfaRequired);
        };
        let spent = match self.prove(user, active, factor)? {
            Some(proof) => {
                let spent = self
                    .users
                    .spend_totp_proof(&user.username, active, &proof)
                    .await?;
                spent.then_some(proof)
            }
            None => None,
        };
        match spent {
            Some(Proof::RecoveryCode(_)) => {
                Record::new(Event::RecoveryCodeUsed, Outcome::Succeeded, client)
                    .user(&user.user_id)
                    .username(&user.username)
                    .log();
                Ok(())
            }
            Some(Proof::Step(_)) => Ok(()),
            None => Err(AuthError::InvalidCredentials),
        }
    }

    /// What `factor` proves against the secret in force `active`, not yet spent: `None` when
    /// it is no valid code, or a TOTP code of a step already used. A recovery code is only
    /// known to be unused when it is spent.
    fn prove(
        &self,
        user: &User,
        active: &str,
        factor: Factor<'_>,
    ) -> Result<Option<Proof>, AuthError> {
        match factor {
            Factor::Totp(code) => {
                let Some(sealer) = &self.sealer else {
                    return Err(AuthError::Internal(anyhow::anyhow!(
                        "user {} has TOTP on, but no TOTP key is configured",
                        user.user_id
                    )));
                };
                let secret = sealer.open(&user.user_id, active)?;
                let step = secret.matching_step(
                    code.expose_secret(),
                    self.clock.now(),
                    user.totp.last_step,
                );
                Ok(step.map(Proof::Step))
            }
            Factor::RecoveryCode(code) => {
                Ok(recovery::stored_form(&user.user_id, code.expose_secret())
                    .map(Proof::RecoveryCode))
            }
        }
    }

    /// `TotpDisabled` when TOTP is not configured: checked before a TOTP call counts or
    /// checks anything.
    pub fn ensure_configured(&self) -> Result<(), AuthError> {
        self.sealer().map(drop)
    }

    /// The sealer, or `TotpDisabled` when TOTP is not configured.
    fn sealer(&self) -> Result<&Sealer, AuthError> {
        self.sealer.as_deref().ok_or(AuthError::TotpDisabled)
    }
}
