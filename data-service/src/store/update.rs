//! UpdateItem: one UpdateItem call on an item in the map layout. When its condition fails, the
//! stored version says whether the client's condition failed; if it held, the item is of the
//! other layout (or a writer got in between) and the same changes go to the other layout.

use aws_sdk_dynamodb::types::ReturnValue;
use common::aws;

use super::{
    ItemStore, StoredItem, Update, UserDb,
    conflict::{growable, refusal},
    decode, expiry, now_millis,
    put::PUT_ATTEMPTS,
    updates::{self, Layout},
};
use crate::error::DataError;

impl ItemStore {
    /// Changes attributes of an existing, live item (at version `update.expected`): one call
    /// for an item in the map layout, three for one of the older layout. An expired item is
    /// NOT_FOUND.
    pub async fn update(
        &self,
        db: &UserDb,
        owner: &str,
        update: Update,
    ) -> Result<StoredItem, DataError> {
        if let Some(0 | u64::MAX) = update.expected {
            // No item can be updated from these: judge the request by what is stored.
            return Err(self.conflict(db, owner, &update.key, true).await);
        }
        let mut layout = Layout::Map;
        for _ in 0..PUT_ATTEMPTS {
            if let Some(item) = self.update_once(db, owner, &update, layout).await? {
                return Ok(item);
            }
            let stamp = self.stamp(db, owner, &update.key).await?;
            let Some(stamp) = stamp.filter(|stamp| !stamp.expired(expiry::now_seconds())) else {
                return Err(DataError::NotFound);
            };
            match update.expected {
                Some(expected) if stamp.version() != Some(expected) => {
                    return Err(refusal(&stamp, true));
                }
                Some(_) => {}
                None => growable(&stamp)?,
            }
            // The client's condition holds: the item is of the other layout (or changed in
            // between, and the next attempt finds out).
            layout = layout.other();
        }
        Err(DataError::Contention)
    }

    /// One UpdateItem of `update` on an item of `layout`. `Ok(None)` when its condition failed.
    async fn update_once(
        &self,
        db: &UserDb,
        owner: &str,
        update: &Update,
        layout: Layout,
    ) -> Result<Option<StoredItem>, DataError> {
        let expression =
            updates::update(update, now_millis(), layout).within_limit(update.largest_field())?;
        let result = self
            .send_update(db, owner, &update.key, expression, ReturnValue::AllNew)
            .await;
        match result {
            Ok(output) => {
                decode::written(&output.attributes.unwrap_or_default(), "updated").map(Some)
            }
            Err(error) if aws::condition_failed(&error) => Ok(None),
            // DynamoDB may refuse the arithmetic on a version of the wrong type outright.
            Err(error) if aws::classify(&error) == aws::AwsFailure::InvalidRequest => {
                match self.stamp(db, owner, &update.key).await? {
                    Some(stamp) if stamp.version().is_none() && stamp.raw_version().is_some() => {
                        Err(DataError::MalformedItem)
                    }
                    _ => Err(DataError::aws("UpdateItem", error)),
                }
            }
            Err(error) => Err(DataError::aws("UpdateItem", error)),
        }
    }
}
