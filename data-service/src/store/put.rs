//! PutItem: one UpdateItem that replaces the attribute map, bumps the version and keeps the
//! creation time under the put's condition. Only when that condition fails does the put read
//! the stored version, to tell the client's failed condition from an item it can still replace
//! (older layout, malformed version, or expired: then absent to the client, and replaced as a
//! new item at version 1) with a whole-item PutItem conditional on what it read.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use common::aws;

use super::{
    ItemStore, Precondition, Put, StoredItem, UserDb,
    conflict::{expect_version, refusal},
    decode::{self, Stamp},
    expiry, expressions, key_of, n, now_millis, updates,
};
use crate::{
    convert::{ATTRIBUTES_MAP, EXPIRES_AT},
    error::DataError,
};

/// Attempts of a put before reporting contention.
pub const PUT_ATTEMPTS: usize = 5;

/// What a put does after its one call failed its condition, judged by what is stored.
enum Next {
    /// Replace what was found (None: nothing) with a whole-item PutItem.
    Replace(Option<Stamp>),
    /// Try the one call again: what stood in the way is gone.
    Retry,
}

impl ItemStore {
    /// Writes a whole item under its precondition: one call, unless what is stored is in the
    /// way (see the module docs). An unconditional put replaces a malformed item (version 1);
    /// a conditional one refuses it (MALFORMED_ITEM), since its condition cannot be judged.
    pub async fn put(&self, db: &UserDb, owner: &str, put: Put) -> Result<StoredItem, DataError> {
        if put.precondition == Precondition::Version(u64::MAX) {
            // No successor version exists: judge the request by what is stored.
            return Err(self.conflict(db, owner, &put.key, true).await);
        }
        for _ in 0..PUT_ATTEMPTS {
            if let Some(item) = self.put_once(db, owner, &put).await? {
                return Ok(item);
            }
            let stored = self.stamp(db, owner, &put.key).await?;
            let live = (stored.clone()).filter(|stamp| !stamp.expired(expiry::now_seconds()));
            let decision = match next(live, put.precondition)? {
                // Expired: absent to the client, replaced as a new item.
                Next::Retry if stored.is_some() => Next::Replace(None),
                decision => decision,
            };
            if let Next::Replace(found) = decision
                && let Some(item) =
                    (self.put_at(db, owner, &put, found.as_ref(), stored.as_ref())).await?
            {
                return Ok(item);
            }
        }
        Err(DataError::Contention)
    }

    /// The one-call put. `Ok(None)` when its condition failed.
    async fn put_once(
        &self,
        db: &UserDb,
        owner: &str,
        put: &Put,
    ) -> Result<Option<StoredItem>, DataError> {
        let expression = updates::put(put, now_millis());
        let result = self
            .send_update(db, owner, &put.key, expression, ReturnValue::UpdatedNew)
            .await;
        match result {
            Ok(output) => {
                let mut stored = output.attributes.unwrap_or_default();
                stored.extend(key_of(owner, &put.key));
                decode::written(&stored, "written").map(Some)
            }
            Err(error) if aws::condition_failed(&error) => Ok(None),
            Err(error) => Err(DataError::aws("UpdateItem", error)),
        }
    }

    /// Puts the whole item as the successor of what was `found` (or as new), conditional on
    /// what was `stored` (`found`, or an expired item) still being stored. `Ok(None)` when it
    /// was not.
    async fn put_at(
        &self,
        db: &UserDb,
        owner: &str,
        put: &Put,
        found: Option<&Stamp>,
        stored: Option<&Stamp>,
    ) -> Result<Option<StoredItem>, DataError> {
        let item = whole_item(owner, put, found, now_millis());
        let written = decode::item(&item)?;
        let condition = expressions::replace_condition(stored);
        let result = self
            .metrics
            .dynamodb_calls
            .send(
                "PutItem",
                db.writes()
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .set_condition_expression(condition.condition)
                    .set_expression_attribute_names(Some(condition.names))
                    .set_expression_attribute_values(
                        (!condition.values.is_empty()).then_some(condition.values),
                    )
                    .send(),
            )
            .await;
        match result {
            Ok(_) => Ok(Some(written)),
            Err(error) if aws::condition_failed(&error) => Ok(None),
            Err(error) => Err(DataError::aws("PutItem", error)),
        }
    }
}

/// The item a whole-item put writes at `now` as the successor of what was `found` (or as new).
pub(super) fn whole_item(
    owner: &str,
    put: &Put,
    found: Option<&Stamp>,
    now: i64,
) -> HashMap<String, AttributeValue> {
    let (version, created_at) = match found {
        None => (1, now),
        Some(stamp) => (
            stamp.next_version().unwrap_or(1),
            stamp.created_at().unwrap_or(now),
        ),
    };
    let mut item = key_of(owner, &put.key);
    item.insert(
        ATTRIBUTES_MAP.to_owned(),
        AttributeValue::M(put.attributes.clone()),
    );
    item.insert("version".to_owned(), n(version));
    item.insert("created_at".to_owned(), n(created_at));
    item.insert("updated_at".to_owned(), n(now));
    if let Some(expires_at) = put.expires_at {
        item.insert(EXPIRES_AT.to_owned(), n(expires_at));
    }
    item
}

/// What a put under `precondition` does after its one call failed and `found` is stored: the
/// client's condition failed (an error), or the item is one the put may replace, or nothing is
/// in the way any more.
fn next(found: Option<Stamp>, precondition: Precondition) -> Result<Next, DataError> {
    match (precondition, found) {
        // The item vanished since the one call: try it again.
        (Precondition::None | Precondition::IfAbsent | Precondition::Version(0), None) => {
            Ok(Next::Retry)
        }
        (Precondition::IfAbsent, Some(stamp)) => Err(refusal(&stamp, true)),
        (Precondition::Version(expected), found) => {
            expect_version(found.as_ref(), expected)?;
            // The version is as expected: the layout was in the way (or a writer got in
            // between, which the conditional replacement finds out).
            Ok(Next::Replace(found))
        }
        // Older layout or malformed version: replace it, conditional on what was read.
        (Precondition::None, found) => Ok(Next::Replace(found)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(version: &str) -> Option<Stamp> {
        Some(Stamp::of(&HashMap::from([(
            "version".to_owned(),
            n(version),
        )])))
    }

    #[test]
    fn after_a_failed_call_the_clients_condition_is_judged_by_what_is_stored() {
        assert!(matches!(next(None, Precondition::None), Ok(Next::Retry)));
        assert!(matches!(
            next(None, Precondition::IfAbsent),
            Ok(Next::Retry)
        ));
        assert!(matches!(
            next(stamp("2"), Precondition::IfAbsent),
            Err(DataError::VersionMismatch { current: 2 })
        ));
        assert!(matches!(
            next(None, Precondition::Version(2)),
            Err(DataError::VersionMismatch { current: 0 })
        ));
        assert!(matches!(
            next(stamp("3"), Precondition::Version(2)),
            Err(DataError::VersionMismatch { current: 3 })
        ));
        assert!(matches!(
            next(stamp("2"), Precondition::Version(2)),
            Ok(Next::Replace(Some(_)))
        ));
        assert!(matches!(
            next(stamp("1.5"), Precondition::Version(1)),
            Err(DataError::MalformedItem)
        ));
        assert!(matches!(
            next(stamp("1.5"), Precondition::None),
            Ok(Next::Replace(Some(_)))
        ));
    }
}
