//! PutItem's read-modify-write loop: read the stored version, write its successor on the
//! condition that what was read is still stored, and read again when another writer got in
//! first.

use std::collections::HashMap;

use aws_sdk_dynamodb::{Client, types::AttributeValue};
use common::aws;

use super::{
    ItemStore, Precondition, StoredItem, decode, decode::Stamp, expressions, key_of, n, now_millis,
    sent_once,
};
use crate::error::DataError;

/// Attempts of an unconditional put before reporting contention.
pub const PUT_ATTEMPTS: usize = 5;

impl ItemStore {
    /// Writes a whole item under `precondition`. The read before the write keeps a valid
    /// `created_at` and computes the next version; the conditional write makes the pair atomic.
    /// An unconditional put replaces a malformed item (version 1); a conditional one refuses
    /// it (MALFORMED_ITEM), since its condition cannot be judged.
    pub async fn put(
        &self,
        db: &Client,
        owner: &str,
        key: &str,
        attributes: HashMap<String, AttributeValue>,
        precondition: Precondition,
    ) -> Result<StoredItem, DataError> {
        for _ in 0..PUT_ATTEMPTS {
            let found = match precondition {
                Precondition::IfAbsent => None,
                Precondition::None | Precondition::Version(_) => self.stamp(db, owner, key).await?,
            };
            if let Precondition::Version(expected) = precondition {
                expect_version(found.as_ref(), expected)?;
            }
            if let Some(item) = self
                .put_at(db, owner, key, attributes.clone(), found.as_ref())
                .await?
            {
                return Ok(item);
            }
            // Another writer got in between. A plain put reads again and retries; a conditional
            // one reports what it ran into (unless the item vanished again meanwhile).
            if precondition != Precondition::None {
                match self.stamp(db, owner, key).await? {
                    None if precondition == Precondition::IfAbsent => {}
                    None => return Err(DataError::VersionMismatch { current: 0 }),
                    Some(stamp) => return Err(refusal(&stamp, true)),
                }
            }
        }
        Err(DataError::Contention)
    }

    /// Puts the item as the successor of what was `found` (or as new), conditional on that
    /// still being stored. `Ok(None)` when it was not.
    async fn put_at(
        &self,
        db: &Client,
        owner: &str,
        key: &str,
        attributes: HashMap<String, AttributeValue>,
        found: Option<&Stamp>,
    ) -> Result<Option<StoredItem>, DataError> {
        let now = now_millis();
        let (version, created_at) = match found {
            None => (1, now),
            Some(stamp) => (
                stamp.next_version().unwrap_or(1),
                stamp.created_at().unwrap_or(now),
            ),
        };
        let mut item = attributes;
        item.extend(key_of(owner, key));
        item.insert("version".to_owned(), n(version));
        item.insert("created_at".to_owned(), n(created_at));
        item.insert("updated_at".to_owned(), n(now));
        let stored = decode::item(&item)?;
        let condition = expressions::replace_condition(found);
        let result = self
            .metrics
            .dynamodb_calls
            .send(
                "PutItem",
                db.put_item()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .set_condition_expression(condition.condition)
                    .set_expression_attribute_names(Some(condition.names))
                    .set_expression_attribute_values(
                        (!condition.values.is_empty()).then_some(condition.values),
                    )
                    .customize()
                    .config_override(sent_once())
                    .send(),
            )
            .await;
        match result {
            Ok(_) => Ok(Some(stored)),
            Err(error) if aws::condition_failed(&error) => Ok(None),
            Err(error) => Err(DataError::aws("PutItem", error)),
        }
    }
}

/// Checks `expected_version` against what was found (absent items are at version 0).
fn expect_version(found: Option<&Stamp>, expected: u64) -> Result<(), DataError> {
    match found {
        None if expected == 0 => Ok(()),
        None => Err(DataError::VersionMismatch { current: 0 }),
        Some(stamp) => match stamp.version() {
            Some(current) if current == expected && stamp.next_version().is_some() => Ok(()),
            _ => Err(refusal(stamp, true)),
        },
    }
}

/// Why a conditional write cannot go ahead on the item `stamp` describes: a version the
/// service could not have written (or, for a write that bumps it, one that cannot grow) is
/// MALFORMED_ITEM, any other is the version the client did not expect.
pub fn refusal(stamp: &Stamp, bumps: bool) -> DataError {
    let current = stamp.version();
    match current {
        Some(u64::MAX) if bumps => DataError::MalformedItem,
        Some(current) => DataError::VersionMismatch { current },
        None => DataError::MalformedItem,
    }
}
