//! TransactWriteItems: read what every op's item holds (one consistent BatchGetItem of the
//! bookkeeping), judge the caller's conditions against it (`transact_plan`), then apply every
//! op in one TransactWriteItems call conditional on each item being still as read. When an item
//! changed in between, DynamoDB cancels the transaction (ConditionalCheckFailed) and the whole
//! thing starts over from the read, at most [`PUT_ATTEMPTS`] times: optimistic concurrency, so
//! of concurrent transactions on one version exactly one wins.

use std::{collections::HashMap, time::Duration};

use aws_sdk_dynamodb::{
    operation::transact_write_items::TransactWriteItemsError,
    types::{KeysAndAttributes, TransactWriteItem},
};
use aws_smithy_runtime_api::client::{orchestrator::HttpResponse, result::SdkError};

use super::{
    ItemStore, UserDb, key_of, now_millis,
    put::PUT_ATTEMPTS,
    transact_plan::{self, Snapshot, TransactOp},
};
use crate::{
    backoff::Backoff,
    convert::{ATTRIBUTES_MAP, EXPIRES_AT},
    error::DataError,
};

/// The first wait before asking again for unprocessed keys, and the longest.
const FIRST_RETRY: Duration = Duration::from_millis(20);
const LONGEST_RETRY: Duration = Duration::from_secs(1);

/// A validated TransactWriteItems.
#[derive(Clone, Debug)]
pub struct Transaction {
    /// The ops, on distinct keys.
    pub ops: Vec<TransactOp>,
    /// The caller's ClientRequestToken, if any.
    pub token: Option<String>,
}

/// How one TransactWriteItems call ended, when it did not fail outright.
enum Sent {
    /// Applied.
    Done,
    /// An item changed since it was read: read again.
    Changed,
}

impl ItemStore {
    /// Applies `transaction` all or nothing; each op's version after it.
    pub async fn transact(
        &self,
        db: &UserDb,
        owner: &str,
        transaction: &Transaction,
    ) -> Result<Vec<u64>, DataError> {
        let keys: Vec<&str> = transaction.ops.iter().map(TransactOp::key).collect();
        for _ in 0..PUT_ATTEMPTS {
            let found = self.snapshots(db, owner, &keys).await?;
            let plan =
                transact_plan::plan(&self.table, owner, &transaction.ops, &found, now_millis())?;
            let token = transaction.token.as_deref();
            if let Sent::Done = self.send_transaction(db, plan.items, token).await? {
                return Ok(plan.versions);
            }
        }
        Err(DataError::Contention)
    }

    /// The bookkeeping and layout of the items of `keys` (distinct, at most 100), by key: a
    /// strongly consistent BatchGetItem, asked again for what DynamoDB leaves unprocessed.
    async fn snapshots(
        &self,
        db: &UserDb,
        owner: &str,
        keys: &[&str],
    ) -> Result<HashMap<String, Snapshot>, DataError> {
        let mut pending = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(keys.iter().map(|key| key_of(owner, key)).collect()))
                .consistent_read(true)
                .projection_expression("#k, #v, #c, #e, #m")
                .set_expression_attribute_names(Some(HashMap::from(
                    [("#k", "key"), ("#v", "version"), ("#c", "created_at")]
                        .map(|(p, name)| (p.to_owned(), name.to_owned())),
                )))
                .expression_attribute_names("#e", EXPIRES_AT)
                .expression_attribute_names("#m", ATTRIBUTES_MAP)
                .build()
                .map_err(|error| DataError::Internal(anyhow::anyhow!("snapshot keys: {error}")))?,
        );
        let (mut found, mut backoff) = (HashMap::new(), Backoff::new(FIRST_RETRY, LONGEST_RETRY));
        while let Some(keys) = pending.take() {
            let output = (self.metrics.dynamodb_calls)
                .send(
                    "BatchGetItem",
                    db.reads()
                        .batch_get_item()
                        .request_items(&self.table, keys)
                        .send(),
                )
                .await
                .map_err(|e| DataError::aws("BatchGetItem", e))?;
            for raw in (output.responses.unwrap_or_default())
                .remove(&self.table)
                .unwrap_or_default()
            {
                if let Some(key) = raw.get("key").and_then(|key| key.as_s().ok()) {
                    found.insert(key.clone(), Snapshot::of(&raw));
                }
            }
            pending = (output.unprocessed_keys.unwrap_or_default())
                .remove(&self.table)
                .filter(|left| !left.keys().is_empty());
            if pending.is_some() {
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
        Ok(found)
    }

    /// One TransactWriteItems call, sent once (see [`UserDb::writes`]).
    async fn send_transaction(
        &self,
        db: &UserDb,
        items: Vec<TransactWriteItem>,
        token: Option<&str>,
    ) -> Result<Sent, DataError> {
        let result = (self.metrics.dynamodb_calls)
            .send(
                "TransactWriteItems",
                db.writes()
                    .transact_write_items()
                    .set_transact_items(Some(items))
                    .set_client_request_token(token.map(str::to_owned))
                    .send(),
            )
            .await;
        match result {
            Ok(_) => Ok(Sent::Done),
            Err(error) => cancelled(error),
        }
    }
}

/// What a refused transaction means, by its cancellation reasons (one per op, `None` for the
/// ops that were fine): a concurrent transaction is contention (ABORTED), a failed condition
/// an item that changed since it was read (read again), throttling passing.
fn cancelled(error: SdkError<TransactWriteItemsError, HttpResponse>) -> Result<Sent, DataError> {
    let codes: Vec<String> = match error.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
            (cancelled.cancellation_reasons().iter())
                .filter_map(|reason| reason.code().map(str::to_owned))
                .filter(|code| code != "None")
                .collect()
        }
        Some(TransactWriteItemsError::TransactionInProgressException(_)) => {
            return Err(DataError::Contention);
        }
        Some(TransactWriteItemsError::IdempotentParameterMismatchException(_)) => {
            return Err(DataError::ClientTokenReused);
        }
        _ => return Err(DataError::aws("TransactWriteItems", error)),
    };
    let has = |code: &str| codes.iter().any(|found| found == code);
    if has("TransactionConflict") {
        Err(DataError::Contention)
    } else if has("ConditionalCheckFailed") {
        Ok(Sent::Changed)
    } else if has("ThrottlingError") || has("ProvisionedThroughputExceeded") {
        Err(DataError::Throttled(format!(
            "TransactWriteItems: {codes:?}"
        )))
    } else if has("ValidationError") || has("ItemCollectionSizeLimitExceeded") {
        Err(DataError::Refused(format!("TransactWriteItems: {codes:?}")))
    } else {
        Err(DataError::Unavailable(format!(
            "TransactWriteItems: {codes:?}"
        )))
    }
}
