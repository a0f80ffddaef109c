//! The login-attempts table: one item per username as typed (known or not), keyed by a hash
//! of it, holding the lockout [`State`]. Every write is conditional on the revision read, so
//! racing attempts serialise instead of overwriting each other's counts.
//!
//! | attribute         | type | meaning                                                    |
//! |-------------------|------|------------------------------------------------------------|
//! | `username_hash`   | S    | partition key: SHA-256 (hex) of the folded username typed  |
//! | `count`           | N    | attempts counted since the last reset                      |
//! | `last_at`         | N    | Unix milliseconds of the last counted attempt              |
//! | `locked_until`    | N    | Unix milliseconds; absent when not locked                  |
//! | `rev`             | S    | random per write: the condition of the next one            |
//! | `ttl`             | N    | Unix seconds, for DynamoDB TTL: the end of the quiet period |
//!
//! An attempt that can start no lock (the usual one: nothing stored, or a few failures still
//! counting) is counted in one conditional UpdateItem whose condition is [`Clear`]'s bounds,
//! and it writes a new `rev` like any write, so a reader that saw the item before it fails its
//! own condition. Any other attempt reads, decides, and writes conditionally on the `rev`
//! read; DynamoDB hands back the item that failed the one-write condition
//! (`ReturnValuesOnConditionCheckFailure`), which saves that read (dynalite does not).
//!
//! The key is a hash so that what a client types (of any length, or a password typed into the
//! username field) is neither stored nor able to make the item large.

use std::fmt::Write;

use aws_sdk_dynamodb::{
    Client, operation::update_item::UpdateItemError, types::ReturnValuesOnConditionCheckFailure,
};
use common::dynamo::attrs::{self, Item, number, string};
use sha2::{Digest, Sha256};

use super::rules::{Clear, State};
use crate::error::{AuthError, conditional};

const KEY: &str = "username_hash";

/// A stored state and the revision that wrote it.
#[derive(Clone, Debug)]
pub struct Stored {
    /// The lockout state.
    pub state: State,
    /// The condition of the next write.
    pub rev: String,
}

/// What the one-write count did.
#[derive(Debug)]
pub enum Quick {
    /// The attempt is counted.
    Counted,
    /// Not counted: the stored state is beyond the bounds. `Some`: the item as it was
    /// (DynamoDB returns it); `None`: not returned, to be read.
    Declined(Option<Stored>),
}

/// Reads and writes the login-attempts table.
#[derive(Clone, Debug)]
pub struct AttemptsTable {
    client: Client,
    table: String,
}

/// The item key of a folded username.
pub fn key_of(folded_username: &str) -> String {
    let digest = Sha256::digest(folded_username.as_bytes());
    digest
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

impl AttemptsTable {
    /// A store over `table`.
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }

    /// The table's name (for the health probe).
    pub fn name(&self) -> &str {
        &self.table
    }

    /// The state under `key`, strongly consistent so the last write is seen.
    pub async fn get(&self, key: &str) -> Result<Option<Stored>, AuthError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY, string(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| AuthError::aws("get login attempts", error))?;
        output.item.map(|item| parse(&item)).transpose()
    }

    /// Writes `state` with a new revision `rev`, only if the item is still as read (`read`
    /// none: still absent). Returns false when another attempt wrote first.
    pub async fn put(
        &self,
        key: &str,
        state: &State,
        rev: &str,
        ttl: i64,
        read: Option<&str>,
    ) -> Result<bool, AuthError> {
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(KEY, string(key))
            .item("count", number(state.count))
            .item("last_at", number(state.last_at_ms))
            .item("rev", string(rev))
            .item("ttl", number(ttl));
        if let Some(until) = state.locked_until_ms {
            request = request.item("locked_until", number(until));
        }
        request = match read {
            None => request
                .condition_expression("attribute_not_exists(#key)")
                .expression_attribute_names("#key", KEY),
            Some(read) => request
                .condition_expression("#rev = :read")
                .expression_attribute_names("#rev", "rev")
                .expression_attribute_values(":read", string(read)),
        };
        conditional("count login attempt", request.send().await)
    }

    /// Counts one attempt at `now_ms` under `key` in one write, with the new revision `rev`
    /// and `ttl`, if nothing is stored or the stored state is within `clear`.
    pub async fn count_clear(
        &self,
        key: &str,
        now_ms: i64,
        clear: Clear,
        rev: &str,
        ttl: i64,
    ) -> Result<Quick, AuthError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY, string(key))
            .update_expression("ADD #count :one SET #last = :now, #rev = :rev, #ttl = :ttl")
            .condition_expression(
                "attribute_not_exists(#key) OR (attribute_not_exists(#locked) \
                 AND #count < :below AND #last > :after)",
            )
            .expression_attribute_names("#key", KEY)
            .expression_attribute_names("#count", "count")
            .expression_attribute_names("#last", "last_at")
            .expression_attribute_names("#rev", "rev")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_names("#locked", "locked_until")
            .expression_attribute_values(":one", number(1))
            .expression_attribute_values(":now", number(now_ms))
            .expression_attribute_values(":rev", string(rev))
            .expression_attribute_values(":ttl", number(ttl))
            .expression_attribute_values(":below", number(clear.below))
            .expression_attribute_values(":after", number(clear.counting_after_ms))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let error = match result {
            Ok(_) => return Ok(Quick::Counted),
            Err(error) => error,
        };
        match error.as_service_error() {
            Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                failed.item().map(parse).transpose().map(Quick::Declined)
            }
            _ => Err(AuthError::aws("count login attempt", error)),
        }
    }

    /// Forgets the attempts under `key` (a success).
    pub async fn delete(&self, key: &str) -> Result<(), AuthError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(KEY, string(key))
            .send()
            .await
            .map_err(|error| AuthError::aws("reset login attempts", error))?;
        Ok(())
    }

    /// Creates the table if it does not exist (local stacks; production uses IaC, with TTL
    /// enabled on `ttl`).
    pub async fn create_table(&self) -> Result<(), String> {
        common::dynamo::ensure_string_keyed_table(&self.client, &self.table, KEY, None).await
    }
}

fn parse(item: &Item) -> Result<Stored, AuthError> {
    let malformed =
        |name: &str| AuthError::Internal(anyhow::anyhow!("login-attempts item: bad {name}"));
    let integer = |name: &str| attrs::get_number::<i64>(item, name).map_err(|_| malformed(name));
    let count = integer("count")?.ok_or_else(|| malformed("count"))?;
    let Some(rev) = attrs::get_string(item, "rev").ok().flatten() else {
        return Err(malformed("rev"));
    };
    Ok(Stored {
        state: State {
            count: u32::try_from(count).map_err(|_| malformed("count"))?,
            last_at_ms: integer("last_at")?.ok_or_else(|| malformed("last_at"))?,
            locked_until_ms: integer("locked_until")?,
        },
        rev: rev.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_length_hashes_of_the_name() {
        assert_eq!(
            key_of("alice"),
            "2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90"
        );
        assert_eq!(key_of(&"x".repeat(10_000)).len(), 64);
    }
}
