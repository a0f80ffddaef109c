//! QueryItems: one Query of the caller's partition, a page at a time. Expired items are
//! filtered out by DynamoDB after it reads them (`Limit` counts the items read, so a page may
//! hold fewer items than the limit, even none, while more follow; they are read and paid for).

use aws_sdk_dynamodb::{Client, types::Select};

use super::{ItemStore, Query, StoredItem, decode, expiry, expressions, key_of};
use crate::error::DataError;

/// One page of a query.
#[derive(Clone, Debug)]
pub struct Page {
    /// The items, in the requested order.
    pub items: Vec<StoredItem>,
    /// The last key evaluated, when DynamoDB says there may be more.
    pub last_key: Option<String>,
    /// How many live items the page holds (counted, for a count-only query).
    pub count: u64,
}

impl ItemStore {
    /// One page of the owner's items selected by `query`, or of their count.
    pub async fn query(&self, db: &Client, owner: &str, query: &Query) -> Result<Page, DataError> {
        // A fixed handful of placeholders whatever the request: never near the 4 KB limit.
        let mut condition = expressions::key_condition(owner, &query.range);
        let filter = expressions::live_filter(&mut condition, expiry::now_seconds());
        let output = self
            .metrics
            .dynamodb_calls
            .send(
                "Query",
                db.query()
                    .table_name(&self.table)
                    .key_condition_expression(condition.text)
                    .filter_expression(filter)
                    .set_select(query.count_only.then_some(Select::Count))
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
        let count = u64::try_from(output.count).unwrap_or(0);
        let last_key = output
            .last_evaluated_key
            .and_then(|key| key.get("key").and_then(|k| k.as_s().ok().cloned()));
        Ok(Page {
            items,
            last_key,
            count,
        })
    }
}
