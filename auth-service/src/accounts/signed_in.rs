//! Who calls a bearer RPC: an access token of ours whose session is still live.

use common::tokens::Principal;

use super::Accounts;
use crate::error::AuthError;

impl Accounts {
    /// The caller of a bearer call: `token` must be an access token of ours whose session is
    /// still live (neither ended nor expired, in the table or in the revocation log). Every
    /// bearer RPC passes this one check, so an access token outliving its session buys nothing
    /// here; it fails like a bad token.
    pub async fn signed_in(&self, token: &str) -> Result<SignedIn, AuthError> {
        let principal = self.tokens.verify(token)?;
        let (user_id, session_id) = (&principal.user_id, &principal.session_id);
        let session = self.sessions().get(user_id, session_id).await?;
        match session {
            Some(session) if self.families.is_live(user_id, session_id, &session) => Ok(SignedIn {
                principal,
                username: session.username,
            }),
            _ => Err(AuthError::SessionEnded),
        }
    }
}

/// The caller of a bearer call, its session checked live by [`Accounts::signed_in`].
#[derive(Clone, Debug)]
pub struct SignedIn {
    /// The access token's claims.
    pub principal: Principal,
    pub(super) username: Option<String>,
}

impl SignedIn {
    /// The folded username the caller's session was started for: how calls that act on the
    /// user's own record (password, second factor) find it. Sessions started before usernames
    /// were recorded have none and cannot make those calls.
    pub fn username(&self) -> Result<&str, AuthError> {
        self.username.as_deref().ok_or(AuthError::SessionEnded)
    }
}
