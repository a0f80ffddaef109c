//! The users table: one item per username.
//!
//! | attribute       | type | meaning                                        |
//! |-----------------|------|------------------------------------------------|
//! | `username`      | S    | partition key, folded to lower case            |
//! | `user_id`       | S    | stable opaque id (UUID), the tokens' `sub`     |
//! | `password_hash` | S    | argon2id PHC string                            |
//! | `created_at`    | N    | Unix seconds                                   |
//! | `updated_at`    | N    | Unix seconds of the last password-hash change  |

use aws_sdk_dynamodb::{
    Client,
    types::{AttributeValue, BillingMode, KeyType},
};

use common::dynamo::{key_element, string_attribute};

use crate::error::AuthError;

/// A stored user.
#[derive(Clone, Debug)]
pub struct User {
    /// The user's id.
    pub user_id: String,
    /// The argon2id PHC string.
    pub password_hash: String,
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
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("username", AttributeValue::S(username.to_owned()))
            .item("user_id", AttributeValue::S(user_id.to_owned()))
            .item("password_hash", AttributeValue::S(password_hash.to_owned()))
            .item("created_at", AttributeValue::N(now.to_string()))
            .item("updated_at", AttributeValue::N(now.to_string()))
            .condition_expression("attribute_not_exists(username)")
            .send()
            .await;
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
        let Some(item) = output.item else {
            return Ok(None);
        };
        let text = |name: &str| match item.get(name) {
            Some(AttributeValue::S(value)) => Ok(value.clone()),
            _ => Err(AuthError::Internal(anyhow::anyhow!(
                "user item {username:?} lacks string attribute {name}"
            ))),
        };
        Ok(Some(User {
            user_id: text("user_id")?,
            password_hash: text("password_hash")?,
        }))
    }

    /// Replaces the password hash, only if it is still `old_hash` (a concurrent password
    /// change wins). Returns whether the hash was replaced.
    pub async fn replace_hash(
        &self,
        username: &str,
        old_hash: &str,
        new_hash: &str,
        now: i64,
    ) -> Result<bool, AuthError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("username", AttributeValue::S(username.to_owned()))
            .update_expression("SET password_hash = :new, updated_at = :now")
            .condition_expression("password_hash = :old")
            .expression_attribute_values(":new", AttributeValue::S(new_hash.to_owned()))
            .expression_attribute_values(":old", AttributeValue::S(old_hash.to_owned()))
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(error) => Err(AuthError::aws("update password hash", error)),
        }
    }

    /// Creates the users table if it does not exist (local stacks; production uses IaC).
    pub async fn create_table(&self) -> Result<(), String> {
        let request = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(string_attribute("username")?)
            .key_schema(key_element("username", KeyType::Hash)?);
        common::dynamo::ensure_table(&self.client, request).await
    }
}
