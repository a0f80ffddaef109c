//! The credentials epoch: `credentials_epoch` (N; absent means 0) on the user item, bumped at
//! every event after which the user's temporary AWS credentials may be in a thief's hands —
//! LogoutAll, ChangePassword, a reused refresh token. GetCredentials reads it (strongly
//! consistent) and puts it in the credential cache's key, so after a bump every auth-service
//! replica vends the user *new* credentials: a per-replica cache alone could not see another
//! replica's event.
//!
//! A flow that ends sessions after a compromise runs between two bumps
//! ([`CredentialsEpochs::around`]): the first, before anything ends, so a flow cut short (or a
//! replica that dies) has already moved the user on; the second, once the sessions are ended,
//! because a session being ended may fetch credentials in between (a thief racing the owner's
//! LogoutAll) — and those must never be handed to a later session. GetCredentials reads the epoch and only then checks the
//! caller's session once more, so whoever reads the final epoch finds an ended session ended.

use std::future::Future;

use aws_sdk_dynamodb::types::AttributeValue;

use super::UserStore;
use crate::error::{AuthError, conditional};

/// The attribute on the user item.
const ATTRIBUTE: &str = "credentials_epoch";

impl UserStore {
    /// Adds one to the user's credentials epoch, atomically; false when `username` is no
    /// longer `user_id`'s (or gone), which nothing then needs.
    pub async fn bump_credentials_epoch(
        &self,
        username: &str,
        user_id: &str,
    ) -> Result<bool, AuthError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("username", AttributeValue::S(username.to_owned()))
            .update_expression("ADD #epoch :one")
            // Never create an item for a name, nor bump another user's.
            .condition_expression("user_id = :user_id")
            .expression_attribute_names("#epoch", ATTRIBUTE)
            .expression_attribute_values(":one", AttributeValue::N("1".to_owned()))
            .expression_attribute_values(":user_id", AttributeValue::S(user_id.to_owned()));
        conditional("bump credentials epoch", update.send().await)
    }

    /// The user's credentials epoch, read strongly consistent; `None` when `username` is not
    /// (or no longer) `user_id`'s, is disabled, or is being deleted: an erasure waits out only credentials
    /// vended before its record was written (`erasure`).
    pub async fn credentials_epoch(
        &self,
        username: &str,
        user_id: &str,
    ) -> Result<Option<u64>, AuthError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("username", AttributeValue::S(username.to_owned()))
            .projection_expression("user_id, #epoch, #deleting, #disabled")
            .expression_attribute_names("#epoch", ATTRIBUTE)
            .expression_attribute_names("#deleting", super::deletion::REQUESTED_AT)
            .expression_attribute_names("#disabled", super::directory::DISABLED_AT)
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| AuthError::aws("get credentials epoch", error))?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        let theirs = matches!(item.get("user_id"), Some(AttributeValue::S(id)) if id == user_id);
        let unusable = item.contains_key(super::deletion::REQUESTED_AT)
            || item.contains_key(super::directory::DISABLED_AT);
        if !theirs || unusable {
            return Ok(None);
        }
        let epoch = match item.get(ATTRIBUTE) {
            None => Some(0),
            Some(AttributeValue::N(n)) => n.parse().ok(),
            Some(_) => None,
        };
        epoch.map(Some).ok_or_else(|| {
            AuthError::Internal(anyhow::anyhow!(
                "user item {username:?} has a malformed {ATTRIBUTE}"
            ))
        })
    }
}

/// The bumps, for the flows that end sessions after a compromise. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CredentialsEpochs {
    users: UserStore,
}

/// Whose epoch a flow bumps: the user, by the username the session was started for.
#[derive(Clone, Copy, Debug)]
pub struct EpochOwner<'a> {
    /// The folded username; `None` for a session started before usernames were recorded,
    /// whose user item cannot be found (such sessions are vended credentials of their own).
    pub username: Option<&'a str>,
    /// The user id the username must still belong to.
    pub user_id: &'a str,
}

impl CredentialsEpochs {
    /// Bumps in the users table of `users`.
    pub fn new(users: UserStore) -> Self {
        Self { users }
    }

    /// Runs `ending` (a flow that ends sessions of `owner`) between two bumps of the owner's
    /// epoch (see the module docs). The first bump failing does not stop the sessions from
    /// ending (that matters more, and the second bump covers it); the second failing is the
    /// flow's error, so the caller retries, and a retry bumps again.
    pub async fn around<T>(
        &self,
        owner: EpochOwner<'_>,
        ending: impl Future<Output = Result<T, AuthError>>,
    ) -> Result<T, AuthError> {
        if let Err(error) = self.bump(owner).await {
            tracing::warn!(
                user_id = owner.user_id,
                %error,
                "credentials epoch not bumped before ending sessions; bumping after"
            );
        }
        let value = ending.await?;
        self.bump(owner).await?;
        Ok(value)
    }

    async fn bump(&self, owner: EpochOwner<'_>) -> Result<(), AuthError> {
        let EpochOwner { username, user_id } = owner;
        let Some(username) = username else {
            tracing::warn!(
                user_id,
                "a session without a recorded username: the credentials epoch cannot be found"
            );
            return Ok(());
        };
        if !self.users.bump_credentials_epoch(username, user_id).await? {
            tracing::warn!(
                user_id,
                "no user item for the session's username: no epoch to bump"
            );
        }
        Ok(())
    }
}
