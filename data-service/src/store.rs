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

use crate::{convert, error::DataError, metrics::Metrics};

/// Attempts of an unconditional put before reporting contention.
const PUT_ATTEMPTS: usize = 5;
/// Names used in every expression (`key` and others are DynamoDB reserved words).
const NAMES: [(&str, &str); 5] = [
    ("#o", "owner"),
    ("#k", "key"),
    ("#v", "version"),
    ("#c", "created_at"),
    ("#u", "updated_at"),
];

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

fn names() -> HashMap<String, String> {
    NAMES
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
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
            let mut projection = "#k, #v, #c, #u".to_owned();
            let mut expression_names = names();
            expression_names.remove("#o");
            for (i, name) in attributes.iter().enumerate() {
                projection.push_str(&format!(", #p{i}"));
                expression_names.insert(format!("#p{i}"), name.clone());
            }
            request = request
                .projection_expression(projection)
                .set_expression_attribute_names(Some(expression_names));
        }
        self.metrics.dynamodb_calls.increment();
        let output = request
            .send()
            .await
            .map_err(|e| DataError::aws("GetItem", e))?;
        output.item.map(|item| parse_item(&item)).transpose()
    }

    /// Writes a whole item under `precondition`. The read before the write keeps
    /// `created_at` and computes the next version; the conditional write makes the pair atomic.
    pub async fn put(
        &self,
        db: &Client,
        owner: &str,
        key: &str,
        attributes: HashMap<String, AttributeValue>,
        precondition: Precondition,
    ) -> Result<StoredItem, DataError> {
        for _ in 0..PUT_ATTEMPTS {
            let current = match precondition {
                Precondition::IfAbsent => None,
                Precondition::None | Precondition::Version(_) => self.stamp(db, owner, key).await?,
            };
            if let Precondition::Version(expected) = precondition {
                let version = current.as_ref().map_or(0, |stamp| stamp.version);
                if version != expected {
                    return Err(DataError::VersionMismatch { current: version });
                }
            }
            if let Some(item) = self
                .put_at(db, owner, key, attributes.clone(), current.as_ref())
                .await?
            {
                return Ok(item);
            }
            // Another writer got in between. A plain put reads again and retries; a conditional
            // one reports the version it ran into (unless the item vanished again meanwhile).
            if precondition != Precondition::None {
                let version = self.current_version(db, owner, key).await?;
                if version != 0 || matches!(precondition, Precondition::Version(_)) {
                    return Err(DataError::VersionMismatch { current: version });
                }
            }
        }
        Err(DataError::Contention)
    }

    /// Puts the item as the successor of `current` (or as new), conditional on `current`
    /// still being the stored version. `Ok(None)` when it was not.
    async fn put_at(
        &self,
        db: &Client,
        owner: &str,
        key: &str,
        attributes: HashMap<String, AttributeValue>,
        current: Option<&Stamp>,
    ) -> Result<Option<StoredItem>, DataError> {
        let now = now_millis();
        let (version, created_at) = current.map_or((1, now), |c| (c.version + 1, c.created_at));
        let mut item = attributes;
        item.extend(key_of(owner, key));
        item.insert("version".to_owned(), n(version));
        item.insert("created_at".to_owned(), n(created_at));
        item.insert("updated_at".to_owned(), n(now));
        let stored = parse_item(&item)?;
        let request = db.put_item().table_name(&self.table).set_item(Some(item));
        let request = match current {
            None => request
                .condition_expression("attribute_not_exists(#k)")
                .expression_attribute_names("#k", "key"),
            Some(current) => request
                .condition_expression("#v = :current")
                .expression_attribute_names("#v", "version")
                .expression_attribute_values(":current", n(current.version)),
        };
        self.metrics.dynamodb_calls.increment();
        match request.send().await {
            Ok(_) => Ok(Some(stored)),
            Err(error) if aws::is_condition_failed(&error) => Ok(None),
            Err(error) => Err(DataError::aws("PutItem", error)),
        }
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
        let mut names = names();
        names.remove("#o");
        names.remove("#c");
        let mut values = HashMap::from([
            (":one".to_owned(), n(1)),
            (":now".to_owned(), n(now_millis())),
        ]);
        let mut sets = vec!["#v = #v + :one".to_owned(), "#u = :now".to_owned()];
        for (i, (name, value)) in set.into_iter().enumerate() {
            names.insert(format!("#s{i}"), name);
            values.insert(format!(":s{i}"), value);
            sets.push(format!("#s{i} = :s{i}"));
        }
        let mut expression = format!("SET {}", sets.join(", "));
        if !remove.is_empty() {
            let removes: Vec<String> = (0..remove.len()).map(|i| format!("#r{i}")).collect();
            names.extend(
                remove
                    .iter()
                    .enumerate()
                    .map(|(i, name)| (format!("#r{i}"), name.clone())),
            );
            expression.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
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
            .update_expression(expression)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
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

    /// One page of the owner's items in `range`, resuming after `after`.
    #[allow(clippy::too_many_arguments)]
    pub async fn query(
        &self,
        db: &Client,
        owner: &str,
        range: &KeyRange,
        limit: i32,
        descending: bool,
        after: Option<String>,
        consistent: bool,
    ) -> Result<Page, DataError> {
        let mut names = HashMap::from([("#o".to_owned(), "owner".to_owned())]);
        let mut values = HashMap::from([(":o".to_owned(), s(owner))]);
        let mut condition = "#o = :o".to_owned();
        let mut bound = |clause: &str, entries: &[(&str, &str)]| {
            names.insert("#k".to_owned(), "key".to_owned());
            condition.push_str(" AND ");
            condition.push_str(clause);
            for (name, value) in entries {
                values.insert((*name).to_owned(), s(value));
            }
        };
        match range {
            KeyRange::All => {}
            KeyRange::Prefix(prefix) => bound("begins_with(#k, :p)", &[(":p", prefix)]),
            KeyRange::Between {
                start: Some(start),
                end: Some(end),
            } => {
                bound("#k BETWEEN :s AND :e", &[(":s", start), (":e", end)]);
            }
            KeyRange::Between {
                start: Some(start),
                end: None,
            } => bound("#k >= :s", &[(":s", start)]),
            KeyRange::Between {
                start: None,
                end: Some(end),
            } => bound("#k <= :e", &[(":e", end)]),
            KeyRange::Between {
                start: None,
                end: None,
            } => {}
        }
        self.metrics.dynamodb_calls.increment();
        let output = db
            .query()
            .table_name(&self.table)
            .key_condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .limit(limit)
            .scan_index_forward(!descending)
            .consistent_read(consistent)
            .set_exclusive_start_key(after.map(|key| key_of(owner, &key)))
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

/// The version and creation time (Unix milliseconds) of a stored item.
#[derive(Clone, Copy, Debug)]
struct Stamp {
    version: u64,
    created_at: i128,
}

/// Something we wrote is malformed: an internal error.
fn stored_error(what: &str) -> DataError {
    DataError::Internal(anyhow::anyhow!("stored item has {what}"))
}

/// A number attribute of a stored item.
fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Result<i128, DataError> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| stored_error(&format!("no valid {name}")))
}

/// Reads a stored item; anything malformed is an internal error (we wrote it).
fn parse_item(item: &HashMap<String, AttributeValue>) -> Result<StoredItem, DataError> {
    let key = item
        .get("key")
        .and_then(|k| k.as_s().ok())
        .ok_or_else(|| stored_error("no key"))?;
    let millis = |name: &str| -> Result<OffsetDateTime, DataError> {
        OffsetDateTime::from_unix_timestamp_nanos(number(item, name)? * 1_000_000)
            .map_err(|_| stored_error(&format!("{name} out of range")))
    };
    Ok(StoredItem {
        key: key.clone(),
        attributes: convert::attributes_from_dynamo(item).map_err(|e| stored_error(&e))?,
        version: u64::try_from(number(item, "version")?)
            .map_err(|_| stored_error("a negative version"))?,
        created_at: millis("created_at")?,
        updated_at: millis("updated_at")?,
    })
}
