//! The items table, always in the caller's partition: every request here names `owner` from
//! the verified principal, and runs with a client holding that user's own credentials.
//!
//! # Layout
//!
//! | attribute     | type | meaning                                                  |
//! |---------------|------|----------------------------------------------------------|
//! | `owner`       | S    | partition key: the user id                                |
//! | `key`         | S    | sort key: the client's key, 1..=1024 bytes UTF-8          |
//! | `version`     | N    | 1 on creation, +1 on every write                          |
//! | `created_at`  | N    | Unix milliseconds of the first write                     |
//! | `updated_at`  | N    | Unix milliseconds of the last write                      |
//! | `expires_at`  | N    | Unix seconds: the expiry (the table's TTL attribute)      |
//! | `$attributes` | M    | the client's attributes, one map entry each              |
//!
//! Every write is **one DynamoDB call**, an UpdateItem whose expression bumps `version`
//! (`if_not_exists(version, 0) + 1`), keeps `created_at` (`if_not_exists`) and stamps
//! `updated_at`, under the write's condition. A PutItem replaces every client attribute in that
//! call by setting `$attributes` as a whole; with the attributes at the top level it would have
//! to remove names it only learns by reading the item first. Costs of the map, all small: its
//! name and 3 bytes per item plus a byte per attribute (counted by `convert::item_size`), one
//! level of DynamoDB's 32 levels of nesting (client values nest at most 30 deep), and a
//! projection names two paths per attribute (`$attributes.x` and, for the older layout, `x`).
//! Users reading the table directly with their own credentials find their attributes in the map.
//!
//! Items of the older layout, with the client attributes at the top level (written before the
//! map, or directly by their owner), stay readable and writable:
//!
//! - **Reads** take the client attributes from the top level (every name but the reserved ones)
//!   and from `$attributes` (when it is a map), the map winning a name both hold. The service
//!   never leaves attributes at the top level of an item that has the map.
//! - **A PutItem** on such an item fails its one-call condition (which requires the map, or no
//!   item), reads the item's version and creation time and replaces the whole item in the map
//!   layout with a PutItem conditional on that version: three calls, once per item.
//! - **An UpdateItem** on such an item fails its one-call condition likewise, reads the version
//!   and applies the same changes at the top level, on the condition that the item still has no
//!   map: three calls, and the item keeps its layout until a PutItem moves it.
//! - **A DeleteItem** does not depend on the layout: one call.
//! - An item that has the map **and** top-level attributes (only a direct write makes one) reads
//!   as their union; a PutItem replaces the map and leaves the top-level attributes alone.
//!
//! # Expiry
//!
//! A write may set `expires_at` (Unix seconds, the table's TTL attribute). From that second on
//! the item is absent to every read (GetItem, QueryItems filter it out) and to the conditions
//! of writes: an `if_absent` or unconditional PutItem replaces it as a new item (version 1,
//! a new `created_at`) with the whole-item PutItem above, conditional on the expired item
//! still being stored (three calls, once); UpdateItem and DeleteItem find NOT_FOUND. DynamoDB's
//! TTL deletes it later (dynalite never does). See `expiry` for how expiry is judged.
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
//!   version. A valid `created_at` is kept (a malformed one is kept as stored by the one-call
//!   path, which only asks whether it exists, and then reads as unset). **An unconditional
//!   DeleteItem** deletes it and returns it with the read defaults.
//! - **An unconditional UpdateItem** starts a missing version at 1; a version that is not a
//!   number from 1 to u64::MAX - 1 is MALFORMED_ITEM (a fraction in that range cannot be told
//!   apart by a DynamoDB condition: it is incremented and still read as 0).

mod batch_get;
mod batch_write;
mod clients;
mod conflict;
mod decode;
mod delete;
mod expiry;
mod export;
mod expressions;
mod operations;
mod put;
mod query;
mod transact;
mod transact_plan;
mod update;
mod updates;

use std::{collections::HashMap, sync::Arc};

use aws_sdk_dynamodb::{
    Client,
    error::SdkError,
    operation::update_item::{UpdateItemError, UpdateItemOutput},
    types::{AttributeValue, BillingMode, KeyType, ReturnValue},
};
use common::{
    dynamo::{
        attrs::{number as n, string as s},
        key_element, string_attribute,
    },
    proto::{
        data::v1::{Item, Value},
        timestamp,
    },
};
use time::OffsetDateTime;

use crate::{convert::EXPIRES_AT, error::DataError, metrics::Metrics};

pub use batch_get::MAX_BATCH_GET_KEYS;
pub use batch_write::{BatchEntry, MAX_BATCH_WRITES};
pub use clients::UserDb;
pub use export::EXPORT_PAGE_ITEMS;
pub use expressions::MAX_EXPRESSION_BYTES;
pub use operations::{KeyRange, Precondition, Projection, Put, Query, Update};
pub use put::PUT_ATTEMPTS;
pub use query::Page;
pub use transact::Transaction;
pub use transact_plan::{MAX_TRANSACT_OPS, TransactOp};

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
    /// When the item expires, when stored as whole seconds (see `expiry`).
    pub expires_at: Option<OffsetDateTime>,
}

impl StoredItem {
    /// The item as the API returns it.
    pub fn into_proto(self) -> Item {
        Item {
            key: self.key,
            attributes: self.attributes,
            version: self.version,
            created_at: self.created_at.map(timestamp),
            updated_at: self.updated_at.map(timestamp),
            expires_at: self.expires_at.map(timestamp),
        }
    }
}

/// Item operations on one table.
#[derive(Clone, Debug)]
pub struct ItemStore {
    table: String,
    metrics: Arc<Metrics>,
}

fn key_of(owner: &str, key: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([("owner".to_owned(), s(owner)), ("key".to_owned(), s(key))])
}

fn now_millis() -> i64 {
    common::clock::now_millis()
}

impl ItemStore {
    /// One UpdateItem of `expression` on `owner`'s `key`: sent once (see [`UserDb::writes`]),
    /// counted, answering `returned`.
    async fn send_update(
        &self,
        db: &UserDb,
        owner: &str,
        key: &str,
        expression: expressions::Expression,
        returned: ReturnValue,
    ) -> Result<UpdateItemOutput, SdkError<UpdateItemError>> {
        self.metrics
            .dynamodb_calls
            .send(
                "UpdateItem",
                db.writes()
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(key_of(owner, key)))
                    .update_expression(expression.text)
                    .set_condition_expression(expression.condition)
                    .set_expression_attribute_names(Some(expression.names))
                    .set_expression_attribute_values(Some(expression.values))
                    .return_values(returned)
                    .send(),
            )
            .await
    }

    /// Operations on `table`.
    pub fn new(table: String, metrics: Arc<Metrics>) -> Self {
        Self { table, metrics }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Reads an item, with the client attributes `projection` selects: one GetItem. An expired
    /// item is absent.
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
        let now_s = expiry::now_seconds();
        (output.item.as_ref())
            .filter(|raw| !expiry::expired(raw.get(EXPIRES_AT), now_s))
            .map(decode::item)
            .transpose()
    }

    /// Creates the items table if it does not exist (local stacks; production uses IaC), with
    /// `expires_at` as its TTL attribute where the backend has TTL.
    pub async fn create_table(&self, db: &Client) -> Result<(), String> {
        let request = db
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(string_attribute("owner")?)
            .attribute_definitions(string_attribute("key")?)
            .key_schema(key_element("owner", KeyType::Hash)?)
            .key_schema(key_element("key", KeyType::Range)?);
        common::dynamo::ensure_table(db, request).await?;
        common::dynamo::enable_ttl(db, &self.table, EXPIRES_AT).await
    }
}
