//! DeleteItem: one call whatever the layout, returning the item as it was.

use aws_sdk_dynamodb::types::ReturnValue;
use common::aws;

use super::{ItemStore, StoredItem, UserDb, decode, expiry, expressions, key_of};
use crate::error::DataError;

impl ItemStore {
    /// Deletes a live item (at version `expected`) and returns it as it was; an expired one is
    /// NOT_FOUND (and left to the table's TTL).
    pub async fn delete(
        &self,
        db: &UserDb,
        owner: &str,
        key: &str,
        expected: Option<u64>,
    ) -> Result<StoredItem, DataError> {
        if expected == Some(0) {
            // No stored item is at version 0 for the service: judge by what is stored.
            return Err(self.conflict(db, owner, key, false).await);
        }
        let condition = expressions::delete_condition(expected, expiry::now_seconds());
        let result = self
            .metrics
            .dynamodb_calls
            .send(
                "DeleteItem",
                db.writes()
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(key_of(owner, key)))
                    .set_condition_expression(condition.condition)
                    .set_expression_attribute_names(Some(condition.names))
                    .set_expression_attribute_values(Some(condition.values))
                    .return_values(ReturnValue::AllOld)
                    .send(),
            )
            .await;
        match result {
            Ok(output) => decode::written(&output.attributes.unwrap_or_default(), "deleted"),
            Err(error) if aws::condition_failed(&error) => {
                Err(self.conflict(db, owner, key, false).await)
            }
            Err(error) => Err(DataError::aws("DeleteItem", error)),
        }
    }
}
