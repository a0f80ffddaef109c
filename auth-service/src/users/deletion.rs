//! The deletion record: a user being deleted (DeleteAccount) is marked on its own item, in the
//! one conditional write that also makes the account unusable, and the item is deleted last,
//! so the username stays taken while anything of the account is left. Replicas find records
//! through the sparse index `deletions` and take turns on one by a lease.
//!
//! | attribute               | type | meaning                                                 |
//! |-------------------------|------|---------------------------------------------------------|
//! | `deletion_requested_at` | N    | Unix ms of the request; present = being deleted         |
//! | `deletion_queue`        | S    | `pending`: the partition key of the index `deletions`   |
//! | `deletion_settle_at`    | N    | Unix ms before which the final items pass may not run   |
//! | `deletion_lease_owner`  | S    | the replica working on it                               |
//! | `deletion_lease_until`  | N    | Unix ms; another replica may claim it after             |
//! | `deletion_items_erased` | N    | items deleted so far                                    |

use aws_sdk_dynamodb::types::AttributeValue;
use common::dynamo::attrs::{self, Item, Malformed, number, string};

use super::UserStore;
use crate::error::{AuthError, conditional};

/// The users table's sparse index of deletion records (keys only).
pub const INDEX: &str = "deletions";
/// Its partition key, and the one value it takes.
pub const QUEUE: &str = "deletion_queue";
const PENDING: &str = "pending";
/// Its sort key.
pub const REQUESTED_AT: &str = "deletion_requested_at";
/// Records read per page of the index.
const PAGE: i32 = 100;

/// A deletion under way, as stored on the user item.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeletionRecord {
    /// When it was asked for (Unix ms).
    pub requested_at: i64,
    /// The final items pass runs from then on (Unix ms).
    pub settle_at: i64,
    /// Who holds the lease, if anyone.
    pub lease_owner: Option<String>,
    /// Until when (Unix ms; 0 when none).
    pub lease_until: i64,
}

impl DeletionRecord {
    /// Read from a user item; `None` when the user is not being deleted.
    pub(super) fn from_item(item: &Item) -> Result<Option<Self>, Malformed> {
        let Some(requested_at) = attrs::get_number(item, REQUESTED_AT)? else {
            return Ok(None);
        };
        Ok(Some(Self {
            requested_at,
            settle_at: attrs::get_number(item, "deletion_settle_at")?.unwrap_or(requested_at),
            lease_owner: attrs::get_string(item, "deletion_lease_owner")?.map(str::to_owned),
            lease_until: attrs::get_number(item, "deletion_lease_until")?.unwrap_or(0),
        }))
    }
}

/// A lease asked for: by `owner`, at `now` (Unix ms), until `until`.
#[derive(Clone, Copy, Debug)]
pub struct Lease<'a> {
    /// The replica asking.
    pub owner: &'a str,
    /// Now, Unix ms.
    pub now: i64,
    /// The end of the lease, Unix ms.
    pub until: i64,
}

impl UserStore {
    /// Marks `username` (if still `user_id`'s and not already being deleted) as being deleted
    /// at `now` (Unix ms), its final pass not before `settle_at`, the lease `owner`'s until
    /// `lease_until`. Returns whether this write marked it.
    pub async fn mark_deleting(
        &self,
        username: &str,
        user_id: &str,
        settle_at: i64,
        lease: Lease<'_>,
    ) -> Result<bool, AuthError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("username", string(username))
            .update_expression(
                "SET deletion_requested_at = :now, deletion_queue = :pending, \
                 deletion_settle_at = :settle, deletion_lease_owner = :owner, \
                 deletion_lease_until = :until, deletion_items_erased = :zero",
            )
            .condition_expression(
                "user_id = :user_id AND attribute_not_exists(deletion_requested_at)",
            )
            .expression_attribute_values(":user_id", string(user_id))
            .expression_attribute_values(":now", number(lease.now))
            .expression_attribute_values(":pending", string(PENDING))
            .expression_attribute_values(":settle", number(settle_at))
            .expression_attribute_values(":owner", string(lease.owner))
            .expression_attribute_values(":until", number(lease.until))
            .expression_attribute_values(":zero", number(0));
        conditional("mark a user deleting", update.send().await)
    }

    /// Takes or renews the lease on `username`'s deletion record (still `user_id`'s) and adds
    /// `erased` to its progress: only when the lease is free, lapsed or already `lease.owner`'s.
    /// Returns whether the lease is held now.
    pub async fn claim_deletion(
        &self,
        username: &str,
        user_id: &str,
        lease: Lease<'_>,
        erased: u64,
    ) -> Result<bool, AuthError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("username", string(username))
            .update_expression(
                "SET deletion_lease_owner = :owner, deletion_lease_until = :until \
                 ADD deletion_items_erased :erased",
            )
            .condition_expression(
                "user_id = :user_id AND attribute_exists(deletion_requested_at) AND \
                 (deletion_lease_owner = :owner OR attribute_not_exists(deletion_lease_until) \
                 OR deletion_lease_until < :now)",
            )
            .expression_attribute_values(":user_id", string(user_id))
            .expression_attribute_values(":owner", string(lease.owner))
            .expression_attribute_values(":until", number(lease.until))
            .expression_attribute_values(":now", number(lease.now))
            .expression_attribute_values(":erased", number(erased));
        conditional("claim a deletion", update.send().await)
    }

    /// Deletes `username`'s item if it is still `user_id`'s deletion record: the last write of
    /// an erasure, which frees the name. Returns whether this call deleted it.
    pub async fn erase(&self, username: &str, user_id: &str) -> Result<bool, AuthError> {
        let delete = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("username", string(username))
            .condition_expression("user_id = :user_id AND attribute_exists(deletion_requested_at)")
            .expression_attribute_values(":user_id", string(user_id));
        conditional("erase a user", delete.send().await)
    }

    /// Usernames with a deletion record, oldest request first, read from the index `deletions`
    /// (eventually consistent: a record is read again from the table before any work).
    pub async fn pending_deletions(&self) -> Result<Vec<String>, AuthError> {
        let mut usernames = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(INDEX)
                .key_condition_expression("#queue = :pending")
                .expression_attribute_names("#queue", QUEUE)
                .expression_attribute_values(":pending", string(PENDING))
                .limit(PAGE)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|error| AuthError::aws("list deletion records", error))?;
            for item in output.items() {
                if let Some(AttributeValue::S(username)) = item.get("username") {
                    usernames.push(username.clone());
                }
            }
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(usernames);
            }
        }
    }
}

/// Creates the users table (partition key `username`) with the sparse keys-only index
/// `deletions` and the keys-only index `user_ids` (`users/directory.rs`), unless it exists.
pub(super) async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<(), String> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeyType, Projection,
        ProjectionType, ScalarAttributeType,
    };
    use common::dynamo::{key_element, string_attribute};
    let requested_at = AttributeDefinition::builder()
        .attribute_name(REQUESTED_AT)
        .attribute_type(ScalarAttributeType::N)
        .build()
        .map_err(|e| e.to_string())?;
    let index = GlobalSecondaryIndex::builder()
        .index_name(INDEX)
        .key_schema(key_element(QUEUE, KeyType::Hash)?)
        .key_schema(key_element(REQUESTED_AT, KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::KeysOnly)
                .build(),
        )
        .build()
        .map_err(|e| e.to_string())?;
    let request = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(string_attribute("username")?)
        .attribute_definitions(string_attribute(QUEUE)?)
        .attribute_definitions(requested_at)
        .attribute_definitions(string_attribute("user_id")?)
        .key_schema(key_element("username", KeyType::Hash)?)
        .global_secondary_indexes(index)
        .global_secondary_indexes(super::directory::by_id_index()?);
    common::dynamo::ensure_table(client, request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_item_without_a_request_time_is_no_deletion() {
        let item = Item::from([("username".to_owned(), string("alice"))]);
        assert_eq!(DeletionRecord::from_item(&item), Ok(None));
    }

    #[test]
    fn a_deletion_record_reads_back_with_defaults_for_what_is_missing() {
        let mut item = Item::from([(REQUESTED_AT.to_owned(), number(1_000))]);
        let record = DeletionRecord::from_item(&item).unwrap().unwrap();
        assert_eq!(
            record,
            DeletionRecord {
                requested_at: 1_000,
                settle_at: 1_000,
                lease_owner: None,
                lease_until: 0,
            }
        );
        item.insert("deletion_lease_until".to_owned(), string("soon"));
        assert_eq!(DeletionRecord::from_item(&item), Err(Malformed));
    }
}
