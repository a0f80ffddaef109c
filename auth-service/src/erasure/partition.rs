//! Erasing one partition of a table in pages: Query the keys (strongly consistent, keys only),
//! delete them with BatchWriteItem 25 at a time, and send again whatever DynamoDB left
//! unprocessed, with a growing pause. Deleting what is already gone is a no-op, so a page done
//! twice (two replicas, a retry after a crash) only repeats work.

use std::time::Duration;

use aws_sdk_dynamodb::{
    Client,
    types::{DeleteRequest, WriteRequest},
};
use common::dynamo::attrs::{Item, string};

use crate::error::AuthError;

/// Keys read per page.
const PAGE: i32 = 100;
/// Deletes per BatchWriteItem: DynamoDB's maximum.
const BATCH: usize = 25;
/// Sends of one batch's unprocessed deletes before the page fails (the next pass retries).
const UNPROCESSED_ATTEMPTS: u32 = 8;
/// The first pause before unprocessed deletes are sent again; doubled each time.
const FIRST_PAUSE: Duration = Duration::from_millis(50);

/// One table's partitions, keyed by `partition_key` and `sort_key`.
#[derive(Clone, Debug)]
pub struct PartitionEraser {
    client: Client,
    table: String,
    partition_key: &'static str,
    sort_key: &'static str,
}

impl PartitionEraser {
    /// An eraser of `table`'s partitions.
    pub fn new(
        client: Client,
        table: String,
        partition_key: &'static str,
        sort_key: &'static str,
    ) -> Self {
        Self {
            client,
            table,
            partition_key,
            sort_key,
        }
    }

    /// Deletes one page of the partition `value`; returns how many items it deleted and
    /// whether the partition may hold more. Call until it says no (between pages the caller
    /// renews its lease).
    pub async fn erase_page(&self, value: &str) -> Result<(u64, bool), AuthError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :value")
            .projection_expression("#pk, #sk")
            .expression_attribute_names("#pk", self.partition_key)
            .expression_attribute_names("#sk", self.sort_key)
            .expression_attribute_values(":value", string(value))
            .consistent_read(true)
            .limit(PAGE)
            .send()
            .await
            .map_err(|error| AuthError::aws("list a partition to erase", error))?;
        let more = output.last_evaluated_key.is_some();
        let keys: Vec<Item> = output
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|item| self.key_of(item))
            .collect();
        let count = u64::try_from(keys.len()).unwrap_or(u64::MAX);
        for chunk in keys.chunks(BATCH) {
            self.delete_batch(chunk).await?;
        }
        Ok((count, more))
    }

    /// Only the key attributes of a listed item (the projection asked for nothing else).
    fn key_of(&self, mut item: Item) -> Option<Item> {
        let partition = item.remove(self.partition_key)?;
        let sort = item.remove(self.sort_key)?;
        Some(Item::from([
            (self.partition_key.to_owned(), partition),
            (self.sort_key.to_owned(), sort),
        ]))
    }

    async fn delete_batch(&self, keys: &[Item]) -> Result<(), AuthError> {
        let mut requests = keys
            .iter()
            .map(|key| {
                let delete = DeleteRequest::builder()
                    .set_key(Some(key.clone()))
                    .build()
                    .map_err(|e| anyhow::anyhow!("building a delete request: {e}"))?;
                Ok(WriteRequest::builder().delete_request(delete).build())
            })
            .collect::<Result<Vec<_>, AuthError>>()?;
        let mut pause = FIRST_PAUSE;
        for _ in 0..UNPROCESSED_ATTEMPTS {
            let output = self
                .client
                .batch_write_item()
                .request_items(&self.table, requests)
                .send()
                .await
                .map_err(|error| AuthError::aws("erase a batch", error))?;
            requests = output
                .unprocessed_items
                .and_then(|mut left| left.remove(&self.table))
                .unwrap_or_default();
            if requests.is_empty() {
                return Ok(());
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
        Err(AuthError::Unavailable(format!(
            "{} deletes still unprocessed after {UNPROCESSED_ATTEMPTS} sends",
            requests.len()
        )))
    }
}
