//! The revocations table: one item per ended session, partitioned by the minute it ended, so
//! "everything revoked since t" is a Query per minute since t.
//!
//! | attribute    | type | meaning                                                          |
//! |--------------|------|------------------------------------------------------------------|
//! | `bucket`     | S    | partition key: the Unix minute of `revoked_at` (`revoked_at` ms / 60 000) |
//! | `sk`         | S    | sort key: `revoked_at` ms zero-padded to 15 digits, `#`, session id |
//! | `session_id` | S    | the ended session (the `sid` claim of its access tokens)         |
//! | `user_id`    | S    | its user (the sessions table's partition key); absent on old items |
//! | `revoked_at` | N    | Unix milliseconds                                                |
//! | `not_after`  | N    | Unix seconds; no access token of the session is valid after it   |
//! | `reason`     | S    | why it ended (the sessions table's `revoked_reason`), for a repair; absent on old items |
//! | `ttl`        | N    | Unix seconds, for DynamoDB TTL: an hour after `not_after`        |
//!
//! Writes are plain puts: ending a session twice writes two items (or the same one again),
//! and readers deduplicate by session id. Expired items are filtered on read, since real
//! DynamoDB TTL deletes them only eventually and dynalite never does.

use aws_sdk_dynamodb::Client;
use common::dynamo::attrs::{self, Item, number, string};

use super::Revocation;
use crate::{error::AuthError, sessions::RevokeReason};

/// Width of a partition: a minute of revocations.
pub const BUCKET_MS: i64 = 60_000;
/// Seconds an item is kept after its last access token expired.
const TTL_MARGIN_SECS: i64 = 3600;
/// Digits of the zero-padded time in a sort key: Unix milliseconds until the year 33658.
const SORT_TIME_DIGITS: usize = 15;
/// Longest session or user id accepted from the table (ours are 36-character UUIDs).
const MAX_SESSION_ID_LEN: usize = 128;

/// The partition holding revocations made at `revoked_at_ms`.
pub fn bucket_of(revoked_at_ms: i64) -> i64 {
    revoked_at_ms.div_euclid(BUCKET_MS)
}

/// The sort key of a revocation: ordered by time as strings are, so a range condition on it
/// selects a time range (ties broken by session id).
pub fn sort_key(revoked_at_ms: i64, session_id: &str) -> String {
    format!("{}#{session_id}", time_prefix(revoked_at_ms))
}

/// The zero-padded time every sort key at `at_ms` starts with; negative times (never
/// written) sort as 0.
fn time_prefix(at_ms: i64) -> String {
    format!("{:0width$}", at_ms.max(0), width = SORT_TIME_DIGITS)
}

/// A revocation as the table holds it: what the feed carries, and why the session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The revocation.
    pub revocation: Revocation,
    /// Why the session ended; `None` on items written before it was recorded, or with a
    /// reason this version does not know.
    pub reason: Option<RevokeReason>,
}

/// Reads and writes the revocations table.
#[derive(Clone, Debug)]
pub struct RevocationTable {
    client: Client,
    table: String,
}

impl RevocationTable {
    /// A table named `table`.
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }

    /// The table's name, for the health probe.
    pub fn name(&self) -> &str {
        &self.table
    }

    /// Records `revocation`, ended for `reason`. Idempotent: a retry writes the same item again.
    pub async fn put(
        &self,
        revocation: &Revocation,
        reason: RevokeReason,
    ) -> Result<(), AuthError> {
        let Revocation {
            session_id,
            user_id,
            revoked_at_ms,
            not_after,
        } = revocation;
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("bucket", string(bucket_of(*revoked_at_ms)))
            .item("sk", string(sort_key(*revoked_at_ms, session_id)))
            .item("session_id", string(session_id))
            .item("revoked_at", number(revoked_at_ms))
            .item("not_after", number(not_after))
            .item("ttl", number(not_after + TTL_MARGIN_SECS))
            .item("reason", string(reason.as_str()));
        if let Some(user_id) = user_id {
            put = put.item("user_id", string(user_id));
        }
        put.send()
            .await
            .map_err(|error| AuthError::aws("record revocation", error))?;
        Ok(())
    }

    /// The revocations of minute `bucket` made at `from_ms` or later and still relevant at
    /// `now_secs`, in time order. Strongly consistent, so a write acknowledged before the
    /// read began is in it.
    pub async fn read_bucket(
        &self,
        bucket: i64,
        from_ms: i64,
        now_secs: i64,
    ) -> Result<Vec<Recorded>, AuthError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#bucket = :bucket AND sk >= :from")
            .expression_attribute_names("#bucket", "bucket")
            .expression_attribute_values(":bucket", string(bucket))
            .expression_attribute_values(":from", string(time_prefix(from_ms)))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        let mut found = Vec::new();
        while let Some(item) = pages.next().await {
            let item = item.map_err(|error| AuthError::aws("read revocations", error))?;
            match parse(&item) {
                Some(recorded) if recorded.revocation.not_after > now_secs => found.push(recorded),
                Some(_) => {}
                None => tracing::warn!(
                    table = %self.table,
                    bucket,
                    "malformed revocation item skipped"
                ),
            }
        }
        Ok(found)
    }

    /// Creates the table if it does not exist (local stacks; production uses IaC, with TTL
    /// enabled on `ttl`).
    pub async fn create_table(&self) -> Result<(), String> {
        common::dynamo::ensure_string_keyed_table(&self.client, &self.table, "bucket", Some("sk"))
            .await
    }
}

/// A revocation from an item, or `None` if any attribute it needs is missing or out of shape.
fn parse(item: &Item) -> Option<Recorded> {
    let integer = |name: &str| attrs::get_number::<i64>(item, name).ok().flatten();
    let valid = |id: &str| !id.is_empty() && id.len() <= MAX_SESSION_ID_LEN;
    let session_id = attrs::get_string(item, "session_id")
        .ok()?
        .filter(|id| valid(id))?;
    let user_id = match attrs::get_string(item, "user_id").ok()? {
        Some(id) if !valid(id) => return None,
        user_id => user_id.map(str::to_owned),
    };
    let reason = attrs::get_string(item, "reason")
        .ok()
        .flatten()
        .and_then(RevokeReason::parse);
    Some(Recorded {
        revocation: Revocation {
            session_id: session_id.to_owned(),
            user_id,
            revoked_at_ms: integer("revoked_at")?,
            not_after: integer("not_after")?,
        },
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_bucket_is_a_minute() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(59_999), 0);
        assert_eq!(bucket_of(60_000), 1);
        assert_eq!(bucket_of(1_700_000_000_000), 28_333_333);
    }

    #[test]
    fn sort_keys_start_with_their_padded_time() {
        assert_eq!(sort_key(1_700_000_000_123, "s"), "001700000000123#s");
        assert_eq!(sort_key(-5, "s"), "000000000000000#s");
    }

    proptest! {
        #[test]
        fn sort_keys_order_as_their_times(
            a in 0i64..100_000_000_000_000,
            b in 0i64..100_000_000_000_000,
            sa in "[0-9a-f-]{36}",
            sb in "[0-9a-f-]{36}",
        ) {
            let (ka, kb) = (sort_key(a, &sa), sort_key(b, &sb));
            if a < b {
                prop_assert!(ka < kb);
            }
            // The range condition `sk >= prefix(t)` keeps exactly the times at or after t.
            prop_assert_eq!(ka.as_str() >= time_prefix(b).as_str(), a >= b);
        }
    }
}
