//! Reading stored items back: the client's attributes and the service's bookkeeping.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use time::OffsetDateTime;

use super::StoredItem;
use crate::{convert, error::DataError};

/// The version and creation time (Unix milliseconds) of a stored item.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    pub version: u64,
    pub created_at: i128,
}

/// Something we wrote is malformed: an internal error.
pub fn stored_error(what: &str) -> DataError {
    DataError::Internal(anyhow::anyhow!("stored item has {what}"))
}

/// A number attribute of a stored item.
pub fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Result<i128, DataError> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| stored_error(&format!("no valid {name}")))
}

/// Reads a stored item; anything malformed is an internal error (we wrote it).
pub fn parse_item(item: &HashMap<String, AttributeValue>) -> Result<StoredItem, DataError> {
    let key = item
        .get("key")
        .and_then(|k| k.as_s().ok())
        .ok_or_else(|| stored_error("no key"))?;
    let millis = |name: &str| -> Result<OffsetDateTime, DataError> {
        OffsetDateTime::from_unix_timestamp_nanos(number(item, name)? * 1_000_000)
            .map_err(|_| stored_error(&format!("{name} out of range")))
    };
    Ok(StoredItem {
        key: key.clone(),
        attributes: convert::attributes_from_dynamo(item).map_err(|e| stored_error(&e))?,
        version: u64::try_from(number(item, "version")?)
            .map_err(|_| stored_error("a negative version"))?,
        created_at: millis("created_at")?,
        updated_at: millis("updated_at")?,
    })
}
