//! BatchGetItems: one BatchGetItem per 100 keys. Keys DynamoDB leaves unprocessed (throttling,
//! its 16 MB answer limit) are asked for again after a jittered backoff, for as long as the
//! caller's deadline allows; the deadline then ends the call with UNAVAILABLE and RetryInfo
//! (see `service`), so an unprocessed key is never reported missing.

use std::{collections::HashMap, time::Duration};

use aws_sdk_dynamodb::{Client, types::KeysAndAttributes};

use super::{ItemStore, Projection, StoredItem, decode, expiry, expressions, key_of};
use crate::{backoff::Backoff, convert::EXPIRES_AT, error::DataError};

/// DynamoDB's limit on the keys of one BatchGetItem.
pub const MAX_BATCH_GET_KEYS: usize = 100;

/// The first wait before asking again for unprocessed keys, and the longest.
const FIRST_RETRY: Duration = Duration::from_millis(20);
const LONGEST_RETRY: Duration = Duration::from_secs(1);

impl ItemStore {
    /// Reads the items of `keys` (distinct), with the client attributes `projection` selects,
    /// by key; a key without a live item is not in the map. Runs until every key is processed:
    /// the caller bounds it with its deadline.
    pub async fn batch_get(
        &self,
        db: &Client,
        owner: &str,
        keys: &[String],
        consistent: bool,
        projection: &Projection,
    ) -> Result<HashMap<String, StoredItem>, DataError> {
        let mut found = HashMap::new();
        for chunk in keys.chunks(MAX_BATCH_GET_KEYS) {
            let mut pending = keys_and_attributes(owner, chunk, consistent, projection)?;
            let mut backoff = Backoff::new(FIRST_RETRY, LONGEST_RETRY);
            while let Some(unprocessed) = self.batch_get_once(db, pending, &mut found).await? {
                tokio::time::sleep(backoff.next_delay()).await;
                pending = unprocessed;
            }
        }
        Ok(found)
    }

    /// One BatchGetItem of `pending`, its live items added to `found`; what DynamoDB left
    /// unprocessed, if anything.
    async fn batch_get_once(
        &self,
        db: &Client,
        pending: KeysAndAttributes,
        found: &mut HashMap<String, StoredItem>,
    ) -> Result<Option<KeysAndAttributes>, DataError> {
        let output = self
            .metrics
            .dynamodb_calls
            .send(
                "BatchGetItem",
                db.batch_get_item()
                    .request_items(&self.table, pending)
                    .send(),
            )
            .await
            .map_err(|e| DataError::aws("BatchGetItem", e))?;
        let now_s = expiry::now_seconds();
        let mut responses = output.responses.unwrap_or_default();
        for raw in responses.remove(&self.table).unwrap_or_default() {
            if !expiry::expired(raw.get(EXPIRES_AT), now_s) {
                let item = decode::item(&raw)?;
                found.insert(item.key.clone(), item);
            }
        }
        let mut unprocessed = output.unprocessed_keys.unwrap_or_default();
        Ok(unprocessed
            .remove(&self.table)
            .filter(|left| !left.keys().is_empty()))
    }
}

/// The BatchGetItem request of `keys` in `owner`'s partition. The projection names the expiry
/// too, so expired items can be left out.
fn keys_and_attributes(
    owner: &str,
    keys: &[String],
    consistent: bool,
    projection: &Projection,
) -> Result<KeysAndAttributes, DataError> {
    let mut request = KeysAndAttributes::builder()
        .set_keys(Some(keys.iter().map(|key| key_of(owner, key)).collect()))
        .consistent_read(consistent);
    if let Projection::Only(attributes) = projection {
        let projection = expressions::projection(attributes).within_limit("attributes_to_get")?;
        request = request
            .projection_expression(projection.text)
            .set_expression_attribute_names(Some(projection.names));
    }
    request
        .build()
        .map_err(|error| DataError::Internal(anyhow::anyhow!("BatchGetItem keys: {error}")))
}
