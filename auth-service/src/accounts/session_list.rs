//! ListSessions and RevokeSession: a signed-in user's own sessions, listed and ended one by
//! one. A session is found under the caller's own user id, so another user's session is
//! simply absent: NOT_FOUND, like an unknown id, never telling the two apart.

use common::{detached, status::Violation};
use uuid::Uuid;

use super::{Accounts, SignedIn};
use crate::{
    audit::{Event, Outcome, Record},
    end_user::ClientInfo,
    error::AuthError,
    family::Families,
    sessions::{ListedSession, RevokeReason},
};

impl Accounts {
    /// The caller's live sessions, newest first (ListSessions).
    pub async fn list_sessions(&self, caller: &SignedIn) -> Result<Vec<ListedSession>, AuthError> {
        self.families.list(&caller.principal.user_id).await
    }

    /// Ends the caller's session `session_id` (RevokeSession), which may be the caller's own.
    /// An already ended session of the caller succeeds again; only the call that ended it is
    /// audited as `Succeeded`. Detached from its first read on: it runs (and is audited) to
    /// its end whatever the caller does.
    pub async fn revoke_session(
        &self,
        caller: &SignedIn,
        session_id: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let session_id = Uuid::parse_str(session_id)
            .map_err(|_| {
                AuthError::InvalidArgument(vec![Violation::new(
                    "session_id",
                    "must be a session id (a UUID) from ListSessions",
                )])
            })?
            .to_string();
        let (families, caller, client) = (self.families.clone(), caller.clone(), client.clone());
        detached::run(async move { revoke_own(&families, &caller, &session_id, &client).await })
            .await
    }
}

/// RevokeSession once its request is checked.
async fn revoke_own(
    families: &Families,
    caller: &SignedIn,
    session_id: &str,
    client: &ClientInfo,
) -> Result<(), AuthError> {
    let user_id = caller.principal.user_id.as_str();
    let audit = |outcome| {
        let mut record = Record::new(Event::SessionRevoked, outcome, client)
            .user(user_id)
            .session(session_id);
        if let Ok(username) = caller.username() {
            record = record.username(username);
        }
        record.log();
    };
    // Looked up under the caller's own id before anything is announced: the revocation
    // feed names sessions only, so announcing another user's session id would end that
    // session on every data-service while this call answers NOT_FOUND.
    if families.store().get(user_id, session_id).await?.is_none() {
        audit(Outcome::Failed);
        return Err(AuthError::SessionNotFound);
    }
    let ended = families
        .end(user_id, session_id, RevokeReason::RevokeSession)
        .await?;
    if ended {
        tracing::info!(%user_id, %session_id, "session revoked by its user");
        audit(Outcome::Succeeded);
        return Ok(());
    }
    // Ended before (a retry, a race).
    tracing::debug!(%user_id, %session_id, "session already ended");
    Ok(())
}
