//! The sessions table: one item per session (refresh-token family), rotated in place by
//! conditional writes so that concurrent refreshes can never fork a family.
//!
//! | attribute        | type | meaning                                                       |
//! |------------------|------|---------------------------------------------------------------|
//! | `user_id`        | S    | partition key                                                 |
//! | `session_id`     | S    | sort key (UUID)                                               |
//! | `token_hash`     | B    | SHA-256 of the current refresh token's secret                 |
//! | `previous_hash`  | B    | SHA-256 of the secret rotated out last (from the 1st rotation) |
//! | `nonce`          | B    | 32 random bytes drawn by the last rotation (from the 1st)     |
//! | `r0` … `r32`     | B    | the ring: SHA-256 of the secret of generation n once rotated out, in `r{n mod 33}` (the previous one and the 32 before it) |
//! | `retired`        | L    | of B: older secrets' hashes as earlier releases kept them (at most 32; no longer written) |
//! | `generation`     | N    | rotations so far                                              |
//! | `created_at`     | N    | Unix milliseconds                                             |
//! | `rotated_at`     | N    | Unix milliseconds of the last rotation (`created_at` before)  |
//! | `expires_at`     | N    | Unix seconds; the current refresh token is dead after it      |
//! | `revoked_at`     | N    | Unix milliseconds; present once the session is ended          |
//! | `revoked_reason` | S    | `logout`, `logout_all`, `reuse_detected`, `session_limit`, `password_changed` or `revoke_session`; absent when a repair marked the session without knowing why it ended |
//! | `username`       | S    | the folded username the session was started for              |
//! | `client_addr`    | S    | the end user's address at Login (`end_user.rs`'s rule)        |
//! | `user_agent`     | S    | Login's `user-agent`, at most 256 chars; absent if none sent  |
//! | `ttl`            | N    | Unix seconds, for DynamoDB TTL: see below                     |
//!
//! `ttl` is a day after `expires_at` while the session lives, so a late reuse still finds it;
//! revoking shortens it to a day after the revocation (at least one access-token lifetime), so
//! revoked sessions do not pile up in the user's partition.
//! Event times are in milliseconds (sessions started within one second still order by age,
//! and the retry grace is measured precisely); deadlines are in seconds, as TTL requires.
//! `client_addr` and `user_agent` are what the caller claimed (and the trusted-proxy rule
//! allowed), shown back to the user by ListSessions; sessions started before they were recorded
//! lack them and list them as empty.
//! No secret is stored: the current secret is HMAC(previous secret, nonce ‖ generation) (and
//! the generation), which only the holder of the previous token can compute.
//!
//! A rotation is one conditional UpdateItem and reads nothing first: the presented token
//! carries its generation, so the write knows which ring slot the rotated-out hash takes
//! (overwriting the one 33 rotations older) and is conditioned on exactly that hash and
//! generation. When it is refused, the item as it was comes back with the refusal
//! (`ReturnValuesOnConditionCheckFailure`), which tells a retry within the grace from reuse.

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    Client,
    operation::update_item::UpdateItemError,
    types::{AttributeValue, BillingMode, KeyType, ReturnValuesOnConditionCheckFailure},
};
use common::dynamo::{
    attrs::{blob, number, string},
    key_element, string_attribute,
};
use time::OffsetDateTime;

use crate::{
    end_user::ClientInfo,
    error::{AuthError, conditional},
    refresh_token::SecretHash,
};

mod listing;
mod record;
use common::clock::unix_millis;
use record::parse_session;
pub use record::{
    ListedSession, LiveSession, RETIRED_KEPT, RING_SLOTS, RevokeReason, Rotation, Session,
};

/// A session about to start.
#[derive(Clone, Copy, Debug)]
pub struct NewSession<'a> {
    /// The user.
    pub user_id: &'a str,
    /// The folded username it is started for.
    pub username: &'a str,
    /// The new session's id.
    pub session_id: &'a str,
    /// SHA-256 of its first refresh token's secret.
    pub token_hash: &'a SecretHash,
    /// Who logged in: the address and user agent recorded.
    pub client: &'a ClientInfo,
}

/// What became of a rotation.
#[derive(Debug)]
pub enum Rotated {
    /// Written: the successor is the session's current token.
    Done,
    /// Its condition failed; the session as the refusal found it, when the backend said.
    Refused(Option<Session>),
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
            ("user_id".to_owned(), string(user_id)),
            ("session_id".to_owned(), string(session_id)),
        ])
    }

    /// Starts `session`, its refresh token expiring at `expires_at` (Unix seconds).
    pub async fn create(
        &self,
        session: NewSession<'_>,
        now: OffsetDateTime,
        expires_at: i64,
    ) -> Result<(), AuthError> {
        let now_ms = unix_millis(now);
        let mut item = self.key(session.user_id, session.session_id);
        if let Some(addr) = session.client.addr {
            item.insert("client_addr".to_owned(), string(addr));
        }
        if let Some(agent) = &session.client.user_agent {
            item.insert("user_agent".to_owned(), string(agent));
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .item("username", string(session.username))
            .item("token_hash", blob(session.token_hash))
            .item("generation", number(0))
            .item("created_at", number(now_ms))
            .item("rotated_at", number(now_ms))
            .item("expires_at", number(expires_at))
            .item("ttl", number(expires_at + TTL_GRACE_SECS))
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
            .send()
            .await
            .map_err(|error| AuthError::aws("get session", error))?;
        output.item.map(|item| parse_session(&item)).transpose()
    }

    /// Writes `rotation` in one conditional UpdateItem: the session must still be at its
    /// starting point (hash and generation), not ended and not expired. The hash rotated out
    /// becomes the previous one and takes its slot in the ring of retired hashes, so nothing
    /// needs reading first. Refused, the session as the refusal found it comes back when the
    /// backend returns it (DynamoDB does, with `ReturnValuesOnConditionCheckFailure`; dynalite
    /// does not), so the caller can tell a retry from reuse without another read.
    pub async fn rotate(
        &self,
        user_id: &str,
        session_id: &str,
        rotation: &Rotation,
    ) -> Result<Rotated, AuthError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(user_id, session_id)))
            .update_expression(
                "SET token_hash = :new, previous_hash = :old, nonce = :nonce, #slot = :old, \
                 generation = :next, rotated_at = :at, expires_at = :exp, #ttl = :ttl",
            )
            .condition_expression(
                "token_hash = :old AND generation = :from AND attribute_not_exists(revoked_at) \
                 AND expires_at > :now",
            )
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_names("#slot", record::ring_slot(rotation.from_generation))
            .expression_attribute_values(":new", blob(&rotation.to_hash))
            .expression_attribute_values(":old", blob(&rotation.from_hash))
            .expression_attribute_values(":nonce", blob(rotation.nonce.as_bytes()))
            .expression_attribute_values(":from", number(rotation.from_generation))
            .expression_attribute_values(":next", number(rotation.from_generation + 1))
            .expression_attribute_values(":at", number(rotation.at_ms))
            .expression_attribute_values(":now", number(rotation.at_ms.div_euclid(1000)))
            .expression_attribute_values(":exp", number(rotation.expires_at))
            .expression_attribute_values(":ttl", number(rotation.expires_at + TTL_GRACE_SECS))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Rotated::Done),
            Err(error) => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(refusal)) => {
                    let found = refusal.item().map(parse_session).transpose()?;
                    Ok(Rotated::Refused(found))
                }
                _ => Err(AuthError::aws("rotate session", error)),
            },
        }
    }

    /// Ends a session, letting DynamoDB TTL remove it at `delete_after` (Unix seconds) so
    /// revoked sessions do not pile up in the user's partition. `reason` is recorded when
    /// known (a repair may not know it). Returns false if it was already ended (or does not
    /// exist).
    pub async fn revoke(
        &self,
        user_id: &str,
        session_id: &str,
        reason: Option<RevokeReason>,
        now: OffsetDateTime,
        delete_after: i64,
    ) -> Result<bool, AuthError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(user_id, session_id)))
            .condition_expression(
                "attribute_exists(session_id) AND attribute_not_exists(revoked_at)",
            )
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":now", number(unix_millis(now)))
            .expression_attribute_values(":ttl", number(delete_after));
        update = match reason {
            Some(reason) => update
                .update_expression("SET revoked_at = :now, revoked_reason = :reason, #ttl = :ttl")
                .expression_attribute_values(":reason", string(reason.as_str())),
            None => update.update_expression("SET revoked_at = :now, #ttl = :ttl"),
        };
        conditional("revoke session", update.send().await)
    }

    /// True if the session's item exists and is not marked ended: what a repair must mark.
    /// Strongly consistent, so a mark that has landed is seen.
    pub async fn is_unmarked(&self, user_id: &str, session_id: &str) -> Result<bool, AuthError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(self.key(user_id, session_id)))
            .projection_expression("session_id, revoked_at")
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| AuthError::aws("check session mark", error))?;
        Ok(output
            .item
            .is_some_and(|item| !item.contains_key("revoked_at")))
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
