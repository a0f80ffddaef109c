//! Who may be handed which temporary credentials: GetCredentials' caller, and the generation
//! of the user's credentials (their credentials epoch, `users/epoch.rs`) it gets.

use super::{Accounts, SignedIn};
use crate::{credentials::Generation, error::AuthError};

impl Accounts {
    /// The caller of GetCredentials (`token` must be of a live session, as for every bearer
    /// call) and the generation of credentials it may be handed. The epoch is read strongly
    /// consistent, and only then is the session checked live once more: a flow that ends
    /// sessions after a compromise bumps the epoch again once they are ended, so a caller that
    /// read the final epoch is found ended here, and credentials of that epoch — the ones every
    /// later session gets — never reach a session that was being ended.
    pub async fn credentials_caller(
        &self,
        token: &str,
    ) -> Result<(SignedIn, Generation), AuthError> {
        let caller = self.signed_in(token).await?;
        let principal = &caller.principal;
        let generation = match caller.username.as_deref() {
            Some(username) => self
                .users
                .credentials_epoch(username, &principal.user_id)
                .await?
                .map(Generation::Epoch)
                // The session's username is no longer its user's: nothing to vend for.
                .ok_or(AuthError::SessionEnded)?,
            None => Generation::Session(principal.session_id.clone()),
        };
        let caller = self.signed_in(token).await?;
        Ok((caller, generation))
    }
}
