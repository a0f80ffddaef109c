//! The sessions table: one item per session (refresh-token family), rotated in place by
//! conditional writes so that each refresh token works exactly once.
//!
//! | attribute        | type | meaning                                                  |
//! |------------------|------|----------------------------------------------------------|
//! | `user_id`        | S    | partition key                                            |
//! | `session_id`     | S    | sort key (UUID)                                          |
//! | `token_hash`     | B    | SHA-256 of the current refresh token's secret            |
//! | `generation`     | N    | refreshes so far                                         |
//! | `created_at`     | N    | Unix seconds                                             |
//! | `refreshed_at`   | N    | Unix seconds of the last rotation                        |
//! | `expires_at`     | N    | Unix seconds; the current refresh token is dead after it |
//! | `revoked_at`     | N    | present once the session is ended                        |
//! | `revoked_reason` | S    | `logout`, `logout_all` or `reuse_detected`               |
//! | `ttl`            | N    | for DynamoDB TTL: deleted a day after `expires_at`       |

use aws_sdk_dynamodb::{
    Client,
    primitives::Blob,
    types::{AttributeValue, BillingMode, KeyType},
};
use common::dynamo::{key_element, string_attribute};
use std::collections::HashMap;

use crate::error::{AuthError, conditional};

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeReason {
    /// The user logged out of this session.
    Logout,
    /// The user logged out of every session.
    LogoutAll,
    /// A rotated refresh token was presented again: the family may be stolen.
    ReuseDetected,
}

impl RevokeReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::LogoutAll => "logout_all",
            Self::ReuseDetected => "reuse_detected",
        }
    }
}

/// What the store knows about a session.
#[derive(Clone, Debug)]
pub struct Session {
    /// SHA-256 of the current refresh token's secret.
    pub token_hash: Vec<u8>,
    /// Unix seconds after which the current refresh token is dead.
    pub expires_at: i64,
    /// The session has been ended.
    pub revoked: bool,
}

impl Session {
    /// True while the session may be refreshed or used.
    pub fn is_active(&self, now: i64) -> bool {
        !self.revoked && now < self.expires_at
    }
}

/// Seconds kept after expiry before DynamoDB TTL may delete an item, so a late reuse of an
/// expired token still finds (and reports) its session for a while.
const TTL_GRACE_SECS: i64 = 86_400;

/// Reads and writes the sessions table.
#[derive(Clone, Debug)]
pub struct SessionStore {
    client: Client,
    table: String,
}

impl SessionStore {
    /// A store over `table`.
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }

    fn key(&self, user_id: &str, session_id: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("user_id".to_owned(), AttributeValue::S(user_id.to_owned())),
            (
                "session_id".to_owned(),
                AttributeValue::S(session_id.to_owned()),
            ),
        ])
    }

    /// Starts a session whose current refresh token hashes to `token_hash`.
    pub async fn create(
        &self,
        user_id: &str,
        session_id: &str,
        token_hash: &[u8],
        now: i64,
        expires_at: i64,
    ) -> Result<(), AuthError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.key(user_id, session_id)))
            .item("token_hash", AttributeValue::B(Blob::new(token_hash)))
            .item("generation", AttributeValue::N("0".to_owned()))
            .item("created_at", AttributeValue::N(now.to_string()))
            .item("refreshed_at", AttributeValue::N(now.to_string()))
            .item("expires_at", AttributeValue::N(expires_at.to_string()))
            .item(
                "ttl",
                AttributeValue::N((expires_at + TTL_GRACE_SECS).to_string()),
            )
            // Session ids are random UUIDs; the condition makes a collision an error, not an overwrite.
            .condition_expression("attribute_not_exists(session_id)")
            .send()
            .await
            .map_err(|error| AuthError::aws("create session", error))?;
        Ok(())
    }

    /// Reads a session, strongly consistent so a rotation just made is seen.
    pub async fn get(&self, user_id: &str, session_id: &str) -> Result<Option<Session>, AuthError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(self.key(user_id, session_id)))
            .consistent_read(true)
            .projection_expression("token_hash, expires_at, revoked_at")
            .send()
            .await
            .map_err(|error| AuthError::aws("get session", error))?;
        output.item.map(|item| parse_session(&item)).transpose()
    }

    /// Rotates the session to a new token if its current token is still `old_hash` and it is
    /// not revoked. Returns false when another refresh won the race.
    pub async fn rotate(
        &self,
        user_id: &str,
        session_id: &str,
        old_hash: &[u8],
        new_hash: &[u8],
        now: i64,
        expires_at: i64,
    ) -> Result<bool, AuthError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(user_id, session_id)))
            .update_expression(
                "SET token_hash = :new, refreshed_at = :now, expires_at = :exp, #ttl = :ttl \
                 ADD generation :one",
            )
            .condition_expression("token_hash = :old AND attribute_not_exists(revoked_at)")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":new", AttributeValue::B(Blob::new(new_hash)))
            .expression_attribute_values(":old", AttributeValue::B(Blob::new(old_hash)))
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(":exp", AttributeValue::N(expires_at.to_string()))
            .expression_attribute_values(
                ":ttl",
                AttributeValue::N((expires_at + TTL_GRACE_SECS).to_string()),
            )
            .expression_attribute_values(":one", AttributeValue::N("1".to_owned()))
            .send()
            .await;
        conditional("rotate session", result)
    }

    /// Ends a session. Returns false if it was already ended (or does not exist).
    pub async fn revoke(
        &self,
        user_id: &str,
        session_id: &str,
        reason: RevokeReason,
        now: i64,
    ) -> Result<bool, AuthError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(user_id, session_id)))
            .update_expression("SET revoked_at = :now, revoked_reason = :reason")
            .condition_expression(
                "attribute_exists(session_id) AND attribute_not_exists(revoked_at)",
            )
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(":reason", AttributeValue::S(reason.as_str().to_owned()))
            .send()
            .await;
        conditional("revoke session", result)
    }

    /// The ids of the user's sessions that are still active at `now`.
    pub async fn active_sessions(&self, user_id: &str, now: i64) -> Result<Vec<String>, AuthError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("user_id = :user")
            .expression_attribute_values(":user", AttributeValue::S(user_id.to_owned()))
            .projection_expression("session_id, token_hash, expires_at, revoked_at")
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        let mut active = Vec::new();
        while let Some(item) = pages.next().await {
            let item = item.map_err(|error| AuthError::aws("list sessions", error))?;
            if parse_session(&item)?.is_active(now)
                && let Some(AttributeValue::S(id)) = item.get("session_id")
            {
                active.push(id.clone());
            }
        }
        Ok(active)
    }

    /// Creates the sessions table if it does not exist (local stacks; production uses IaC,
    /// with TTL enabled on `ttl`).
    pub async fn create_table(&self) -> Result<(), String> {
        let request = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(string_attribute("user_id")?)
            .attribute_definitions(string_attribute("session_id")?)
            .key_schema(key_element("user_id", KeyType::Hash)?)
            .key_schema(key_element("session_id", KeyType::Range)?);
        common::dynamo::ensure_table(&self.client, request).await
    }
}

fn parse_session(item: &HashMap<String, AttributeValue>) -> Result<Session, AuthError> {
    let token_hash = match item.get("token_hash") {
        Some(AttributeValue::B(blob)) => blob.as_ref().to_vec(),
        _ => {
            return Err(AuthError::Internal(anyhow::anyhow!(
                "session item lacks token_hash"
            )));
        }
    };
    let expires_at = match item.get("expires_at") {
        Some(AttributeValue::N(n)) => n.parse().map_err(|_| {
            AuthError::Internal(anyhow::anyhow!(
                "session expires_at {n:?} is not an integer"
            ))
        })?,
        _ => {
            return Err(AuthError::Internal(anyhow::anyhow!(
                "session item lacks expires_at"
            )));
        }
    };
    Ok(Session {
        token_hash,
        expires_at,
        revoked: item.contains_key("revoked_at"),
    })
}
