//! The users table: one item per username.
//!
//! | attribute           | type | meaning                                            |
//! |---------------------|------|----------------------------------------------------|
//! | `username`          | S    | partition key, folded to lower case                |
//! | `user_id`           | S    | stable opaque id (UUID), the tokens' `sub`         |
//! | `password_hash`     | S    | argon2id PHC string                                |
//! | `created_at`        | N    | Unix seconds                                       |
//! | `updated_at`        | N    | Unix seconds of the last password-hash change      |
//! | `password_version`  | N    | password changes so far (absent: 0), not rehashes  |
//! | `credentials_epoch` | N    | bumped by LogoutAll, ChangePassword, token reuse   |
//! | `disabled_at`       | N    | Unix seconds of DisableUser; absent while enabled  |
//!
//! The TOTP attributes are described in `users/totp.rs`; the credentials epoch (absent: 0;
//! part of the credential cache's key) in `users/epoch.rs`; the deletion record and the
//! sparse index `deletions` in `users/deletion.rs`; the outstanding recovery token in
//! `users/recovery_token.rs`; the count of logins and the session cap's record, which a login
//! writes once its session is started, in `users/logins.rs`.

mod deletion;
mod directory;
mod epoch;
mod logins;
mod recovery_token;
mod totp;

pub use deletion::{DeletionRecord, Lease};
pub use directory::BY_ID;
pub use epoch::{CredentialsEpochs, EpochOwner};
pub use logins::{CapRecord, Confirmed, LoginCheck};
pub use recovery_token::{FactorAtReset, Redemption, StoredRecovery};
pub use totp::{Proof, StoredTotp};

use aws_sdk_dynamodb::{Client, types::AttributeValue};
use common::dynamo::attrs;

use crate::error::{AuthError, conditional};

/// A stored user.
#[derive(Clone, Debug)]
pub struct User {
    /// The folded username, the item's key.
    pub username: String,
    /// The user's id.
    pub user_id: String,
    /// The argon2id PHC string.
    pub password_hash: String,
    /// Password changes so far. A login's session is kept only if it is still the same once
    /// the session is written (`users/logins.rs`); rehashing leaves it alone.
    pub password_version: u64,
    /// The second factor, if the user enrolled one.
    pub totp: StoredTotp,
    /// The deletion under way, if any: the account cannot be used while it is set.
    pub deletion: Option<DeletionRecord>,
    /// When it was registered (Unix seconds; 0 if the item lacks it).
    pub created_at: i64,
    /// When an admin disabled it (Unix seconds), if disabled: it cannot be used meanwhile.
    pub disabled_at: Option<i64>,
    /// The outstanding recovery token, if any (ResetPassword).
    pub recovery: Option<StoredRecovery>,
}

impl User {
    /// Whether the account may be used: neither being deleted nor disabled. Every check of
    /// an account's standing (login, step-up, credentials, a login's re-check) asks this.
    pub fn usable(&self) -> bool {
        self.deletion.is_none() && self.disabled_at.is_none()
    }
}

/// Reads and writes the users table.
#[derive(Clone, Debug)]
pub struct UserStore {
    client: Client,
    table: String,
}

impl UserStore {
    /// A store over `table`.
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }

    /// Creates a user; fails with `UsernameTaken` if the username exists, atomically, so two
    /// concurrent registrations cannot both win. The SDK resends a put whose answer was lost
    /// (timeout, dropped connection) even when it had landed; the resend then fails its
    /// condition on our own item, which the fresh `user_id` identifies, and that is success.
    pub async fn create(
        &self,
        username: &str,
        user_id: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<(), AuthError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("username", AttributeValue::S(username.to_owned()))
            .item("user_id", AttributeValue::S(user_id.to_owned()))
            .item("password_hash", AttributeValue::S(password_hash.to_owned()))
            .item("created_at", AttributeValue::N(now.to_string()))
            .item("updated_at", AttributeValue::N(now.to_string()))
            .condition_expression("attribute_not_exists(username)");
        for (name, value) in logins::fresh() {
            put = put.item(name, value);
        }
        let result = put.send().await;
        match result {
            Ok(_) => Ok(()),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                match self.find(username).await? {
                    Some(user) if user.user_id == user_id => {
                        tracing::info!("a resent put found the account it had created");
                        Ok(())
                    }
                    _ => Err(AuthError::UsernameTaken),
                }
            }
            Err(error) => Err(AuthError::aws("create user", error)),
        }
    }

    /// The user with this (folded) username, if any.
    pub async fn find(&self, username: &str) -> Result<Option<User>, AuthError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("username", AttributeValue::S(username.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| AuthError::aws("get user", error))?;
        output.item.map(|item| parse(username, &item)).transpose()
    }

    /// Replaces the password hash at a new cost (same password), only if it is still
    /// `old_hash` (a concurrent password change wins). Returns whether the hash was replaced.
    pub async fn replace_hash(
        &self,
        username: &str,
        old_hash: &str,
        new_hash: &str,
        now: i64,
    ) -> Result<bool, AuthError> {
        self.write_hash(username, old_hash, new_hash, now, false)
            .await
    }

    /// Stores a new password's hash, only if the hash is still `old_hash`, so of concurrent
    /// changes exactly one lands; counts it in `password_version`. Returns whether it landed.
    pub async fn change_password(
        &self,
        username: &str,
        old_hash: &str,
        new_hash: &str,
        now: i64,
    ) -> Result<bool, AuthError> {
        self.write_hash(username, old_hash, new_hash, now, true)
            .await
    }

    async fn write_hash(
        &self,
        username: &str,
        old_hash: &str,
        new_hash: &str,
        now: i64,
        new_password: bool,
    ) -> Result<bool, AuthError> {
        // Only a new password counts as a change; a rehash keeps the same one.
        let expression = if new_password {
            "SET password_hash = :new, updated_at = :now ADD password_version :one"
        } else {
            "SET password_hash = :new, updated_at = :now"
        };
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("username", AttributeValue::S(username.to_owned()))
            .update_expression(expression)
            .condition_expression("password_hash = :old")
            .expression_attribute_values(":new", AttributeValue::S(new_hash.to_owned()))
            .expression_attribute_values(":old", AttributeValue::S(old_hash.to_owned()))
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()));
        if new_password {
            update = update.expression_attribute_values(":one", AttributeValue::N("1".to_owned()));
        }
        conditional("update password hash", update.send().await)
    }

    /// Creates the users table, with its index of deletion records, if it does not exist
    /// (local stacks; production uses IaC).
    pub async fn create_table(&self) -> Result<(), String> {
        deletion::create_table(&self.client, &self.table).await
    }
}

/// The user item of `username`, read.
fn parse(username: &str, item: &attrs::Item) -> Result<User, AuthError> {
    let malformed = |what: &str| {
        AuthError::Internal(anyhow::anyhow!(
            "user item {username:?} has a malformed {what}"
        ))
    };
    let text = |name: &str| match attrs::get_string(item, name) {
        Ok(Some(value)) => Ok(value.to_owned()),
        _ => Err(AuthError::Internal(anyhow::anyhow!(
            "user item {username:?} lacks string attribute {name}"
        ))),
    };
    let number = |name: &str| attrs::get_number::<i64>(item, name).map_err(|_| malformed(name));
    let password_version = attrs::get_number(item, "password_version")
        .map_err(|_| malformed("password_version"))?
        .unwrap_or(0);
    let totp = StoredTotp::from_item(item).map_err(|problem| {
        AuthError::Internal(anyhow::anyhow!("user item {username:?}: {problem}"))
    })?;
    let deletion = DeletionRecord::from_item(item).map_err(|_| malformed("deletion record"))?;
    let recovery = StoredRecovery::from_item(item).map_err(|_| malformed("recovery token"))?;
    Ok(User {
        username: username.to_owned(),
        user_id: text("user_id")?,
        password_hash: text("password_hash")?,
        password_version,
        totp,
        deletion,
        created_at: number("created_at")?.unwrap_or(0),
        disabled_at: number(directory::DISABLED_AT)?,
        recovery,
    })
}
