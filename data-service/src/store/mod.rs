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

mod decode;
mod expressions;
mod put;

use std::{collections::HashMap, sync::Arc};

use aws_sdk_dynamodb::{
    Client,
    types::{AttributeValue, BillingMode, KeyType, ReturnValue},
};
use common::{
    aws,
    dynamo::{key_element, string_attribute},
    proto::data::v1::Value,
};
use time::OffsetDateTime;

use crate::{error::DataError, metrics::Metrics, requests::Query};
use decode::{Stamp, number, parse_item, stored_error};

pub use put::PUT_ATTEMPTS;

/// An item as stored, with the client's attributes already converted back.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredItem {
    /// The client's key.
    pub key: String,
    /// The client's attributes.
    pub attributes: HashMap<String, Value>,
    /// Version, from 1.
    pub version: u64,
    /// First write.
    pub created_at: OffsetDateTime,
    /// Last write.
    pub updated_at: OffsetDateTime,
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

fn now_millis() -> i128 {
    OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000
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

    /// Reads an item; `attributes` limits the client attributes returned (all when empty).
    pub async fn get(
        &self,
        db: &Client,
        owner: &str,
        key: &str,
        consistent: bool,
        attributes: &[String],
    ) -> Result<Option<StoredItem>, DataError> {
        let mut request = db
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_of(owner, key)))
            .consistent_read(consistent);
        if !attributes.is_empty() {
            let projection = expressions::projection(attributes);
            request = request
                .projection_expression(projection.text)
                .set_expression_attribute_names(Some(projection.names));
        }
        self.metrics.dynamodb_calls.increment();
        let output = request
            .send()
            .await
            .map_err(|e| DataError::aws("GetItem", e))?;
        output.item.map(|item| parse_item(&item)).transpose()
    }

    /// Sets and removes attributes of an existing item.
    pub async fn update(
        &self,
        db: &Client,
        owner: &str,
        key: &str,
        set: HashMap<String, AttributeValue>,
        remove: &[String],
        expected: Option<u64>,
    ) -> Result<StoredItem, DataError> {
        let expression = expressions::update(set, remove, now_millis());
        let mut values = expression.values;
        let mut condition = "attribute_exists(#k)".to_owned();
        if let Some(expected) = expected {
            condition.push_str(" AND #v = :expected");
            values.insert(":expected".to_owned(), n(expected));
        }
        self.metrics.dynamodb_calls.increment();
        let result = db
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_of(owner, key)))
            .update_expression(expression.text)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(expression.names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => parse_item(&output.attributes.unwrap_or_default()),
            Err(error) if aws::is_condition_failed(&error) => {
                Err(self.conflict(db, owner, key).await)
            }
            Err(error) => Err(DataError::aws("UpdateItem", error)),
        }
    }

    /// Deletes an item and returns it as it was.
    pub async fn delete(
        &self,
        db: &Client,
        owner: &str,
        key: &str,
        expected: Option<u64>,
    ) -> Result<StoredItem, DataError> {
        let mut request = db
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_of(owner, key)))
            .expression_attribute_names("#k", "key")
            .return_values(ReturnValue::AllOld);
        request = match expected {
            None => request.condition_expression("attribute_exists(#k)"),
            Some(expected) => request
                .condition_expression("attribute_exists(#k) AND #v = :expected")
                .expression_attribute_names("#v", "version")
                .expression_attribute_values(":expected", n(expected)),
        };
        self.metrics.dynamodb_calls.increment();
        match request.send().await {
            Ok(output) => parse_item(&output.attributes.unwrap_or_default()),
            Err(error) if aws::is_condition_failed(&error) => {
                Err(self.conflict(db, owner, key).await)
            }
            Err(error) => Err(DataError::aws("DeleteItem", error)),
        }
    }

    /// One page of the owner's items selected by `query`.
    pub async fn query(&self, db: &Client, owner: &str, query: &Query) -> Result<Page, DataError> {
        let condition = expressions::key_condition(owner, &query.range);
        self.metrics.dynamodb_calls.increment();
        let output = db
            .query()
            .table_name(&self.table)
            .key_condition_expression(condition.text)
            .set_expression_attribute_names(Some(condition.names))
            .set_expression_attribute_values(Some(condition.values))
            .limit(query.limit)
            .scan_index_forward(!query.descending)
            .consistent_read(query.consistent)
            .set_exclusive_start_key(query.after.as_ref().map(|key| key_of(owner, key)))
            .send()
            .await
            .map_err(|e| DataError::aws("Query", e))?;
        let items = output
            .items
            .unwrap_or_default()
            .iter()
            .map(parse_item)
            .collect::<Result<_, _>>()?;
        let last_key = output
            .last_evaluated_key
            .and_then(|key| key.get("key").and_then(|k| k.as_s().ok().cloned()));
        Ok(Page { items, last_key })
    }

    /// The error for a failed condition: NOT_FOUND when the item is gone, else the mismatch.
    async fn conflict(&self, db: &Client, owner: &str, key: &str) -> DataError {
        match self.current_version(db, owner, key).await {
            Ok(0) => DataError::NotFound,
            Ok(current) => DataError::VersionMismatch { current },
            Err(error) => error,
        }
    }

    /// The item's current version, 0 when absent.
    async fn current_version(&self, db: &Client, owner: &str, key: &str) -> Result<u64, DataError> {
        Ok(self
            .stamp(db, owner, key)
            .await?
            .map_or(0, |stamp| stamp.version))
    }

    /// The item's version and creation time only (a strongly consistent read projecting two
    /// numbers), for writes that must know them without reading and converting the item.
    async fn stamp(&self, db: &Client, owner: &str, key: &str) -> Result<Option<Stamp>, DataError> {
        self.metrics.dynamodb_calls.increment();
        let output = db
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_of(owner, key)))
            .consistent_read(true)
            .projection_expression("#v, #c")
            .expression_attribute_names("#v", "version")
            .expression_attribute_names("#c", "created_at")
            .send()
            .await
            .map_err(|e| DataError::aws("GetItem", e))?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        let version = number(&item, "version")?;
        Ok(Some(Stamp {
            version: u64::try_from(version).map_err(|_| stored_error("a negative version"))?,
            created_at: number(&item, "created_at")?,
        }))
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
