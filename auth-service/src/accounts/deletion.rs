//! DeleteAccount: the caller proves the password (and the second factor when TOTP is on), then
//! the deletion record is written — the account is unusable from that write on — and every
//! session ends through the final path before the call answers. The erasure itself goes on in
//! the background (`erasure`), resumed by any replica if this one dies.

use common::detached;
use secrecy::SecretString;

use super::{Accounts, SignedIn, step_up::audit_account};
use crate::{
    audit::{Event, Outcome},
    end_user::ClientInfo,
    erasure::Target,
    error::AuthError,
    mfa::SecondFactor,
};

/// A DeleteAccount as the client asked for it.
#[derive(Debug)]
pub struct AccountDeletion {
    /// The current password.
    pub password: SecretString,
    /// A TOTP or recovery code, needed when TOTP is on.
    pub second_factor: SecondFactor,
    /// Who is asking.
    pub client: ClientInfo,
}

impl Accounts {
    /// Deletes the caller's account. Nothing changes unless the proof checks out; from then on
    /// the work runs to its end whatever the caller does, and the call answers once every
    /// session has ended. A call racing another that already wrote the record answers the
    /// same way (the sessions are ended again, which ends nothing new).
    pub async fn delete_account(
        &self,
        caller: &SignedIn,
        deletion: AccountDeletion,
    ) -> Result<(), AuthError> {
        let AccountDeletion {
            password,
            second_factor,
            client,
        } = deletion;
        let event = Event::AccountDeletion;
        let user = self
            .step_up_with(caller, &password, Some(&second_factor), event, &client)
            .await?;
        let (erasure, principal) = (self.erasure.clone(), caller.principal.clone());
        let target = Target {
            username: user.username,
            user_id: user.user_id,
        };
        detached::run(async move {
            let wrote = erasure.request(&target).await?;
            let ended = erasure.end_sessions(&target).await?;
            tracing::info!(user_id = %target.user_id, wrote, sessions_ended = ended, "account deletion requested");
            let outcome = Outcome::Succeeded;
            audit_account(event, outcome, &principal, &target.username, &client);
            erasure.start(target);
            Ok(())
        })
        .await
    }
}
