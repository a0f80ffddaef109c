//! The items table, always in the caller's partition: every request here names `owner` from
//! the verified principal, and runs with a client holding that user's own credentials.
//!
//! | attribute    | type | meaning                                            |
//! |--------------|------|----------------------------------------------------|
//! | `owner`      | S    | partition key: the user id                          |
//! | `key`        | S    | sort key: the client's key, 1..=1024 bytes UTF-8    |
//! | `version`    | N    | 1 on creation, +1 on every write                    |
//! | `created_at` | N    | Unix milliseconds of the first write               |
//! | `updated_at` | N    | Unix milliseconds of the last write                |
//! | anything else|      | the client's attributes                            |
//!
//! # Stored items are untrusted
//!
//! The credentials GetCredentials hands out let a user write anything into their own partition
//! without this service, so what is stored may break every rule above. The policy:
//!
//! - **Reads** (GetItem, QueryItems, and the item a write returns) serve such items: `version`
//!   is 0 unless it is a plain integer in 1..=u64::MAX (the service writes versions from 1, so
//!   0 means "not versioned by the service"); `created_at` / `updated_at` are left unset unless
//!   they are integer milliseconds a protobuf `Timestamp` can hold. An attribute of a type the
//!   API cannot carry (one the SDK does not know) makes the item DATA_LOSS, naming its key; an
//!   answer the SDK cannot parse at all (an item nested past DynamoDB's 32 levels, which
//!   emulators store) is DATA_LOSS too (see `DataError::aws`).
//! - **Conditional writes** (`if_absent` or `expected_version`) against an item with a
//!   malformed version are FAILED_PRECONDITION with reason MALFORMED_ITEM: replace the item
//!   with an unconditional PutItem or delete it.
//! - **An unconditional PutItem** replaces such an item atomically at version 1 (a valid
//!   version `v` becomes `v + 1`, and u64::MAX, which cannot grow, starts over at 1), on the
//!   condition that the version read is still stored, so concurrent fixers never share a
//!   version. A valid `created_at` is kept. **An unconditional DeleteItem** deletes it and
//!   returns it with the read defaults.
//! - **An unconditional UpdateItem** starts a missing version at 1; a version that is not a
//!   number from 1 to u64::MAX - 1 is MALFORMED_ITEM (a fraction in that range cannot be told
//!   apart by a DynamoDB condition: it is incremented and still read as 0).

mod decode;
mod expressions;
mod put;

use std::{collections::HashMap, sync::Arc};

use aws_sdk_dynamodb::{
    Client,
    config::retry::RetryConfig,
    types::{AttributeValue, BillingMode, KeyType, ReturnValue},
};
use common::{
    aws,
    dynamo::{key_element, string_attribute},
    proto::data::v1::Value,
};
use time::OffsetDateTime;

use crate::{
    error::DataError,
    metrics::Metrics,
    requests::{Query, Update},
};
use decode::Stamp;

pub use expressions::MAX_EXPRESSION_BYTES;
pub use put::PUT_ATTEMPTS;

/// An item as stored, with the client's attributes converted back and the bookkeeping read
/// with the defaults of the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredItem {
    /// The client's key.
    pub key: String,
    /// The client's attributes.
    pub attributes: HashMap<String, Value>,
    /// Version, from 1; 0 when the stored one is not a version the service writes.
    pub version: u64,
    /// First write, when stored validly.
    pub created_at: Option<OffsetDateTime>,
    /// Last write, when stored validly.
    pub updated_at: Option<OffsetDateTime>,
}

/// The condition of a put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Create or replace.
    None,
    /// Only create.
    IfAbsent,
    /// Only replace this version.
    Version(u64),
}

/// Which client attributes a read returns (the bookkeeping ones always come back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Projection {
    /// Every attribute.
    All,
    /// Only these client attributes, possibly none.
    Only(Vec<String>),
}

/// Which keys a query selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRange {
    /// Every key.
    All,
    /// Keys starting with the prefix.
    Prefix(String),
    /// Keys from `start` to `end`, both inclusive, either open.
    Between {
        /// Smallest key, inclusive.
        start: Option<String>,
        /// Largest key, inclusive.
        end: Option<String>,
    },
}

/// One page of a query.
#[derive(Clone, Debug)]
pub struct Page {
    /// The items, in the requested order.
    pub items: Vec<StoredItem>,
    /// The last key evaluated, when DynamoDB says there may be more.
    pub last_key: Option<String>,
}

/// Item operations on one table.
#[derive(Clone, Debug)]
pub struct ItemStore {
    table: String,
    metrics: Arc<Metrics>,
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn key_of(owner: &str, key: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([("owner".to_owned(), s(owner)), ("key".to_owned(), s(key))])
}

fn now_millis() -> i64 {
    common::clock::now_millis()
}

/// Writes go out once, without the SDK's retries. A retry resends a request whose answer was
/// lost although it may have landed; every write here is conditional on the version it read,
/// so the resent one fails its own condition, and then an unconditional put would write the
/// item again (applied twice, a version skipped) and a versioned write would be refused
/// because of itself. A lost answer is UNAVAILABLE instead: the client reads and decides.
/// Reads keep their retries.
fn sent_once() -> aws_sdk_dynamodb::config::Builder {
    aws_sdk_dynamodb::config::Builder::new().retry_config(RetryConfig::disabled())
}

impl ItemStore {
    /// Operations on `table`.
    pub fn new(table: String, metrics: Arc<Metrics>) -> Self {
        Self { table, metrics }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Reads an item, with the client attributes `projection` selects.
    pub async fn get(
        &self,
        db: &Client,
        owner: &str,
        key: &str,
        consistent: bool,
        projection: &Projection,
    ) -> Result<Option<StoredItem>, DataError> {
        let mut request = db
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_of(owner, key)))
            .consistent_read(consistent);
        if let Projection::Only(attributes) = projection {
            let projection =
                expressions::projection(attributes).within_limit("attributes_to_get")?;
            request = request
                .projection_expression(projection.text)
                .set_expression_attribute_names(Some(projection.names));
        }
        let output = self
            .metrics
            .dynamodb_calls
            .send("GetItem", request.send())
            .await
            .map_err(|e| DataError::aws("GetItem", e))?;
        output.item.as_ref().map(decode::item).transpose()
    }

    /// Sets and removes attributes of an existing item (at version `expected`).
    pub async fn update(
        &self,
        db: &Client,
        owner: &str,
        key: &str,
        update: Update,
        expected: Option<u64>,
    ) -> Result<StoredItem, DataError> {
        if let Some(0 | u64::MAX) = expected {
            // No item can be updated from these: judge the request by what is stored.
            return Err(self.conflict(db, owner, key, true).await);
        }
        let field = if update.set.is_empty() {
            "remove"
        } else {
            "set"
        };
        let expression = expressions::update(update.set, &update.remove, now_millis(), expected)
            .within_limit(field)?;
        let result = self
            .metrics
            .dynamodb_calls
            .send(
                "UpdateItem",
                db.update_item()
                    .table_name(&self.table)
                    .set_key(Some(key_of(owner, key)))
                    .update_expression(expression.text)
                    .set_condition_expression(expression.condition)
                    .set_expression_attribute_names(Some(expression.names))
                    .set_expression_attribute_values(Some(expression.values))
                    .return_values(ReturnValue::AllNew)
                    .customize()
                    .config_override(sent_once())
                    .send(),
            )
            .await;
        match result {
            Ok(output) => decode::written(&output.attributes.unwrap_or_default(), "updated"),
            Err(error) if aws::condition_failed(&error) => {
                match self.conflict(db, owner, key, true).await {
                    // An unconditional update found a malformed version that is valid now:
                    // someone repaired the item meanwhile.
                    DataError::VersionMismatch { .. } if expected.is_none() => {
                        Err(DataError::Contention)
                    }
                    refusal => Err(refusal),
                }
            }
            // DynamoDB may refuse the arithmetic on a version of the wrong type outright.
            Err(error) if aws::classify(&error) == aws::AwsFailure::InvalidRequest => {
                match self.stamp(db, owner, key).await? {
                    Some(stamp) if stamp.version().is_none() => Err(DataError::MalformedItem),
                    _ => Err(DataError::aws("UpdateItem", error)),
                }
            }
            Err(error) => Err(DataError::aws("UpdateItem", error)),
        }
    }

    /// Deletes an item (at version `expected`) and returns it as it was.
    pub async fn delete(
        &self,
        db: &Client,
        owner: &str,
        key: &str,
        expected: Option<u64>,
    ) -> Result<StoredItem, DataError> {
        if expected == Some(0) {
            // No stored item is at version 0 for the service: judge by what is stored.
            return Err(self.conflict(db, owner, key, false).await);
        }
        let condition = expressions::delete_condition(expected);
        let result = self
            .metrics
            .dynamodb_calls
            .send(
                "DeleteItem",
                db.delete_item()
                    .table_name(&self.table)
                    .set_key(Some(key_of(owner, key)))
                    .set_condition_expression(condition.condition)
                    .set_expression_attribute_names(Some(condition.names))
                    .set_expression_attribute_values(
                        (!condition.values.is_empty()).then_some(condition.values),
                    )
                    .return_values(ReturnValue::AllOld)
                    .customize()
                    .config_override(sent_once())
                    .send(),
            )
            .await;
        match result {
            Ok(output) => decode::written(&output.attributes.unwrap_or_default(), "deleted"),
            Err(error) if aws::condition_failed(&error) => {
                Err(self.conflict(db, owner, key, false).await)
            }
            Err(error) => Err(DataError::aws("DeleteItem", error)),
        }
    }

    /// One page of the owner's items selected by `query`.
    pub async fn query(&self, db: &Client, owner: &str, query: &Query) -> Result<Page, DataError> {
        // A fixed handful of placeholders whatever the request: never near the 4 KB limit.
        let condition = expressions::key_condition(owner, &query.range);
        let output = self
            .metrics
            .dynamodb_calls
            .send(
                "Query",
                db.query()
                    .table_name(&self.table)
                    .key_condition_expression(condition.text)
                    .set_expression_attribute_names(Some(condition.names))
                    .set_expression_attribute_values(Some(condition.values))
                    .limit(query.limit)
                    .scan_index_forward(!query.descending)
                    .consistent_read(query.consistent)
                    .set_exclusive_start_key(query.after.as_ref().map(|key| key_of(owner, key)))
                    .send(),
            )
            .await
            .map_err(|e| DataError::aws("Query", e))?;
        let items = output
            .items
            .unwrap_or_default()
            .iter()
            .map(decode::item)
            .collect::<Result<_, _>>()?;
        let last_key = output
            .last_evaluated_key
            .and_then(|key| key.get("key").and_then(|k| k.as_s().ok().cloned()));
        Ok(Page { items, last_key })
    }

    /// The error for a failed condition, judged by what is stored now: NOT_FOUND when the item
    /// is gone, MALFORMED_ITEM for a version the write cannot work with (`bumps`: the write
    /// would increment it), else the version the client did not expect.
    async fn conflict(&self, db: &Client, owner: &str, key: &str, bumps: bool) -> DataError {
        match self.stamp(db, owner, key).await {
            Ok(None) => DataError::NotFound,
            Ok(Some(stamp)) => put::refusal(&stamp, bumps),
            Err(error) => error,
        }
    }

    /// The item's version and creation time only (a strongly consistent read projecting them
    /// and the key, which every item has, so an item without either still reads as present),
    /// for writes that must know them without reading and converting the item.
    async fn stamp(&self, db: &Client, owner: &str, key: &str) -> Result<Option<Stamp>, DataError> {
        let output = self
            .metrics
            .dynamodb_calls
            .send(
                "GetItem",
                db.get_item()
                    .table_name(&self.table)
                    .set_key(Some(key_of(owner, key)))
                    .consistent_read(true)
                    .projection_expression("#k, #v, #c")
                    .expression_attribute_names("#k", "key")
                    .expression_attribute_names("#v", "version")
                    .expression_attribute_names("#c", "created_at")
                    .send(),
            )
            .await
            .map_err(|e| DataError::aws("GetItem", e))?;
        Ok(output.item.as_ref().map(Stamp::of))
    }

    /// Creates the items table if it does not exist (local stacks; production uses IaC).
    pub async fn create_table(&self, db: &Client) -> Result<(), String> {
        let request = db
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(string_attribute("owner")?)
            .attribute_definitions(string_attribute("key")?)
            .key_schema(key_element("owner", KeyType::Hash)?)
            .key_schema(key_element("key", KeyType::Range)?);
        common::dynamo::ensure_table(db, request).await
    }
}
