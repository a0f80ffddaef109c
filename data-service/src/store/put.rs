//! PutItem's read-modify-write loop: read the stored version, write its successor on the
//! condition that it is still the stored one, and read again when another writer got in first.

use std::collections::HashMap;

use aws_sdk_dynamodb::{Client, types::AttributeValue};
use common::aws;

use super::{
    ItemStore, Precondition, StoredItem,
    decode::{Stamp, parse_item},
    key_of, n, now_millis,
};
use crate::error::DataError;

/// Attempts of an unconditional put before reporting contention.
pub const PUT_ATTEMPTS: usize = 5;

impl ItemStore {
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
}
